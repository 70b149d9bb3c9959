/* trace_mixtral.c: the Mixtral-8x7B routing trace (speculative-moe): its JSONL reader and the
 * `trace_mixtral` token source.
 *
 * Format: one JSON record (problem, layer, token) per line, in file order, with "experts" (the
 * top-2 ids) and "gating_probs" (their renormalised gate probabilities). Some (token, layer)
 * records are missing: a layer's rows are the tokens that have a record at that layer.
 * Post-processed logs carry `token_idx`; the raw prefill+decode log carries `token_pos`,
 * 0..P-1 over the prompt and then 0 at every decode step: a decode step starts whenever the
 * layer does not increase, and its position is P + step. A folder means its *_routing.jsonl
 * files (the raw log repeats the decode tokens of HumanEval problem 0; give it as a file to
 * read it).
 */
#include "trace.h"

#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- the reader ---------------------------------------------------------------------------- */

typedef struct {
    long id, seq;
    int decode;        /* token_pos logs: past the prefill */
    long base, step;   /* decode positions: base + step */
    int prev_layer;
    long max_pos;
    long last[MOE_TRACE_MAX_LAYERS]; /* last position seen at each layer, -1 = none */
} mx_problem;

/* The problems of one file, and where the current record is. */
typedef struct {
    const char *path;
    long ln;
    mx_problem **pr;
    size_t npr, cur;
} mx_reader;

/* One record's choices: k expert ids and (has_w) their gate weights. */
typedef struct {
    long layer, pid;
    int k, has_w;
    int32_t ids[MOE_TRACE_MX_E];
    double w[MOE_TRACE_MX_E];
} mx_choice;

static int mx_int(json_t *o, const char *key, long lo, long hi, long *out)
{
    json_t *v = json_object_get(o, key);
    if (!v)
        return 1;
    if (!json_is_integer(v))
        return -1;
    json_int_t x = json_integer_value(v);
    if (x < lo || x > hi)
        return -1;
    *out = (long)x;
    return 0;
}

/* "gating_probs": one probability in [0, 1] per expert */
static int mx_weights(json_t *jg, mx_choice *c, const char *path, long ln)
{
    if (!json_is_array(jg) || (int)json_array_size(jg) != c->k)
        return moe_fail(MOE_EFORMAT, NULL,
                        "\"gating_probs\" must list one weight per expert (%d) (%s:%ld)", c->k,
                        path, ln);
    for (int j = 0; j < c->k; j++) {
        json_t *v = json_array_get(jg, (size_t)j);
        c->w[j] = json_is_number(v) ? json_number_value(v) : NAN;
        if (!(c->w[j] >= 0.0 && c->w[j] <= 1.0))
            return moe_fail(MOE_EFORMAT, NULL,
                            "gating_probs[%d] is not a probability in [0, 1] (%s:%ld)", j, path,
                            ln);
    }
    return MOE_OK;
}

/* layer, problem, experts and gating_probs of a record */
static int mx_choices(json_t *o, mx_choice *c, const char *path, long ln)
{
    c->pid = 0;
    if (mx_int(o, "layer", 0, MOE_TRACE_MAX_LAYERS - 1, &c->layer))
        return moe_fail(MOE_EFORMAT,
                        "records read {\"problem_id\": 0, \"layer\": 0, \"experts\": [6, 5], "
                        "\"gating_probs\": [0.7, 0.3], \"token_idx\": 0}",
                        "missing or bad \"layer\" (an integer 0..%d) (%s:%ld)",
                        MOE_TRACE_MAX_LAYERS - 1, path, ln);
    if (mx_int(o, "problem_id", 0, LONG_MAX, &c->pid) < 0)
        return moe_fail(MOE_EFORMAT, NULL, "bad \"problem_id\" (%s:%ld)", path, ln);
    json_t *je = json_object_get(o, "experts"), *jg = json_object_get(o, "gating_probs");
    c->k = json_is_array(je) ? (int)json_array_size(je) : 0;
    if (c->k < 1 || c->k > MOE_TRACE_MX_E)
        return moe_fail(MOE_EFORMAT, NULL,
                        "missing or bad \"experts\" (a list of 1..%d expert ids) (%s:%ld)",
                        MOE_TRACE_MX_E, path, ln);
    for (int j = 0; j < c->k; j++) {
        json_t *v = json_array_get(je, (size_t)j);
        if (!json_is_integer(v) || json_integer_value(v) < INT32_MIN ||
            json_integer_value(v) > INT32_MAX)
            return moe_fail(MOE_EFORMAT, NULL, "expert id %d is not an integer (%s:%ld)", j, path,
                            ln);
        c->ids[j] = (int32_t)json_integer_value(v);
    }
    int rc = moe_trace_check_ids(c->ids, c->k, MOE_TRACE_MX_E, path, ln);
    c->has_w = jg != NULL;
    if (!rc && jg)
        rc = mx_weights(jg, c, path, ln);
    return rc;
}

/* The state of problem pid, added at its first record. */
static int mx_problem_of(mx_reader *rd, long pid, moe_trace_state *st, mx_problem **out)
{
    if (rd->npr == 0 || rd->pr[rd->cur]->id != pid) {
        size_t i = 0;
        while (i < rd->npr && rd->pr[i]->id != pid)
            i++;
        if (i == rd->npr) {
            mx_problem **np = realloc(rd->pr, (rd->npr + 1) * sizeof *np);
            mx_problem *p = np ? malloc(sizeof *p) : NULL;
            if (np)
                rd->pr = np;
            if (!p)
                return moe_fail(MOE_ENOMEM, NULL, "out of memory (%s)", rd->path);
            p->id = pid;
            p->seq = st->seq_next++;
            p->decode = 0;
            p->base = p->step = 0;
            p->prev_layer = -1;
            p->max_pos = -1;
            for (int l = 0; l < MOE_TRACE_MAX_LAYERS; l++)
                p->last[l] = -1;
            rd->pr[rd->npr++] = p;
        }
        rd->cur = i;
    }
    *out = rd->pr[rd->cur];
    return MOE_OK;
}

/* The token position of a record: token_idx, or token_pos with the decode steps counted. */
static int mx_position(json_t *o, mx_problem *p, const mx_choice *c, const mx_reader *rd,
                       long *pos)
{
    long idx, layer = c->layer;
    int r1 = mx_int(o, "token_idx", 0, LONG_MAX / 2, &idx);
    if (r1 == 0) {
        *pos = idx;
    } else if (r1 == 1 && mx_int(o, "token_pos", 0, LONG_MAX / 2, &idx) == 0) {
        if (!p->decode && p->last[layer] >= 0 && idx <= p->last[layer]) {
            p->decode = 1; /* position did not advance: the decode steps begin */
            p->base = p->max_pos + 1;
            p->step = 0;
            p->prev_layer = (int)layer;
        } else if (p->decode) {
            if (idx != 0)
                return moe_fail(MOE_EFORMAT,
                                "after the prefill, every decode record has token_pos 0",
                                "token_pos %ld in the decode part of problem %ld (%s:%ld)", idx,
                                c->pid, rd->path, rd->ln);
            if (layer <= p->prev_layer)
                p->step++;
            p->prev_layer = (int)layer;
        }
        *pos = p->decode ? p->base + p->step : idx;
    } else {
        return moe_fail(MOE_EFORMAT, NULL,
                        "record needs an integer \"token_idx\" or \"token_pos\" (%s:%ld)",
                        rd->path, rd->ln);
    }
    if (*pos <= p->last[layer])
        return moe_fail(MOE_EFORMAT,
                        "records of one (problem, layer) come in token order, once each",
                        "duplicate or out-of-order record: problem %ld, layer %ld, token %ld "
                        "(%s:%ld)",
                        c->pid, layer, *pos, rd->path, rd->ln);
    p->last[layer] = *pos;
    if (*pos > p->max_pos)
        p->max_pos = *pos;
    return MOE_OK;
}

/* One line (a JSON record) to the sink. */
static int mx_line(mx_reader *rd, const char *text, moe_trace_state *st, moe_trace_sink sink,
                   void *ctx)
{
    json_error_t jerr;
    json_t *o = json_loads(text, 0, &jerr);
    if (!o)
        return moe_fail(MOE_EFORMAT, "one JSON object per line: is the file truncated?",
                        "not a JSON record: %s (%s:%ld)", jerr.text, rd->path, rd->ln);
    int rc = MOE_OK;
    mx_choice c;
    mx_problem *p = NULL;
    long pos = 0;
    if (!json_is_object(o))
        rc = moe_fail(MOE_EFORMAT, NULL, "record is not a JSON object (%s:%ld)", rd->path,
                      rd->ln);
    if (!rc)
        rc = mx_choices(o, &c, rd->path, rd->ln);
    if (!rc)
        rc = moe_trace_check_k(st, c.k, c.has_w, rd->path, rd->ln);
    if (!rc)
        rc = mx_problem_of(rd, c.pid, st, &p);
    if (!rc)
        rc = mx_position(o, p, &c, rd, &pos);
    json_decref(o);
    if (rc)
        return rc;
    moe_trace_rec r = {rd->path, rd->ln, (int)c.layer, p->seq, pos, MOE_TRACE_MX_E, c.k, c.ids,
                       c.has_w ? c.w : NULL, NULL, NULL};
    return sink(ctx, &r);
}

int moe_trace_read_mixtral(const char *path, moe_trace_state *st, moe_trace_sink sink, void *ctx)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return moe_fail(MOE_EIO, moe_trace_hint(), "cannot open trace: %s (%s)", strerror(errno),
                        path);
    char *line = NULL;
    size_t cap = 0;
    long rows = 0;
    int rc = MOE_OK;
    mx_reader rd = {path, 0, NULL, 0, 0};
    while (!rc && getline(&line, &cap, f) >= 0) {
        rd.ln++;
        moe_trace_chomp(line);
        const char *text = rd.ln == 1 ? moe_trace_skip_bom(line) : line;
        if (moe_trace_blank(text))
            continue;
        rows++;
        rc = mx_line(&rd, text, st, sink, ctx);
    }
    if (!rc && ferror(f))
        rc = moe_fail(MOE_EIO, NULL, "read error: %s (%s)", strerror(errno), path);
    if (!rc && rows == 0)
        rc = moe_fail(MOE_EFORMAT, NULL, "no records (%s)", path);
    for (size_t i = 0; i < rd.npr; i++)
        free(rd.pr[i]);
    free(rd.pr);
    free(line);
    fclose(f);
    return rc;
}

/* ---- the source ---------------------------------------------------------------------------- */

static const moe_source_param mixtral_params[] = {
    {"path", MOE_SP_STR, "$MOESIM_TRACES/mixtral-8x7b-instruct-fp8-specmoe", 0, 0, 0, 0, NULL,
     "a .jsonl routing log, or a folder (its *_routing.jsonl files)"},
    MOE_SP_TRACE("0", 0),
    MOE_SP_VOCAB("32000", 32000, 2147483647.0),
    MOE_SP_END,
};

static int mixtral_open(moe_source *s) { return moe_trace_source_open(s, MOE_TRACE_MIXTRAL); }

const moe_source_type moe_source_trace_mixtral = {
    .name = "trace_mixtral",
    .summary = "Mixtral-8x7B top-2 ids and gate probabilities per decoded token (M = 8); replay: "
               "choices, combine = recorded gate; affinities: log(gate) on the 2 chosen, "
               "log(1e-4) elsewhere; tokens lacking the layer are skipped; ids uniform, x "
               "Gaussian",
    .flags = MOE_SOURCE_RECORDED,
    .params = mixtral_params,
    .open = mixtral_open,
    .batch = moe_source_rec_batch,
    .close = moe_source_rec_close,
};
