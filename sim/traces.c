/* traces.c: readers for the four real routing traces (trace.h; the SOURCE.md of each folder
 * under ../shared/data/traces describes them), the conversion of recorded choices into
 * affinities, and the report behind `moesim trace info`.
 *
 * Every reader turns its format into a stream of records (one token at one layer) handed to a
 * sink: the loader keeps the rows of one layer (moe_trace_load), the info report counts every
 * layer (moe_trace_info). Quirks handled here, from the SOURCE.md files:
 *   DeepSeek CSV   rows grouped by layer, token order within a layer; the 6 ids are a set (the
 *                  hook's order is an artifact); tokens may be CSV-quoted; no weights.
 *   Mixtral JSONL  records (problem, layer, token) in file order; some (token, layer) records
 *                  are missing: a layer's rows are the tokens that have a record at that layer.
 *                  Post-processed logs carry `token_idx`; the raw prefill+decode log carries
 *                  `token_pos`, 0..P-1 over the prompt and then 0 at every decode step: a
 *                  decode step starts whenever the layer does not increase, and its position is
 *                  P + step. A folder means its *_routing.jsonl files (the raw log repeats the
 *                  decode tokens of HumanEval problem 0; give it as a file to read it).
 *   FLAME csv.gz   one file per layer (layer number from the file name, `layer_id` is always 0),
 *                  64 probabilities per row of which the top 6 are non-zero (not renormalised).
 *   popularity     counts only; turned into tokens by the trace_mixtral_popularity source.
 */
#include "trace.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zlib.h>

#define DS_E 64   /* DeepSeek-V2-Lite routed experts */
#define MX_E 8    /* Mixtral-8x7B experts */
#define FLAME_MAX_E 4096
#define LINE_MAX_FLAME (1 << 16)

/* where the trace folder was looked for, and how to point moesim at it (sim/paths.c) */
#define hint_traces moe_trace_hint()

/* ---- small helpers ---------------------------------------------------------------------- */

int moe_trace_experts(int format)
{
    return (format == MOE_TRACE_MIXTRAL || format == MOE_TRACE_POPULARITY) ? MX_E : DS_E;
}

void moe_rec_clear(moe_rec *r)
{
    if (!r)
        return;
    free(r->logits);
    free(r->choices);
    free(r->choice_w);
    free(r->ids);
    free(r->x);
    memset(r, 0, sizeof *r);
}

static int is_dir(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

static int is_file(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

static int ends_with(const char *s, const char *suf)
{
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && strcmp(s + a - b, suf) == 0;
}

static const char *base_name(const char *p)
{
    const char *s = strrchr(p, '/');
    return s ? s + 1 : p;
}

/* Natural order: runs of digits compare as numbers (prompt_2 < prompt_10). */
static int natcmp(const char *a, const char *b)
{
    while (*a && *b) {
        if (isdigit((unsigned char)*a) && isdigit((unsigned char)*b)) {
            while (*a == '0' && isdigit((unsigned char)a[1]))
                a++;
            while (*b == '0' && isdigit((unsigned char)b[1]))
                b++;
            size_t la = 0, lb = 0;
            while (isdigit((unsigned char)a[la]))
                la++;
            while (isdigit((unsigned char)b[lb]))
                lb++;
            if (la != lb)
                return la < lb ? -1 : 1;
            int c = strncmp(a, b, la);
            if (c)
                return c;
            a += la;
            b += lb;
        } else {
            if (*a != *b)
                return (unsigned char)*a - (unsigned char)*b;
            a++;
            b++;
        }
    }
    return (unsigned char)*a - (unsigned char)*b;
}

static int natcmp_ptr(const void *a, const void *b)
{
    return natcmp(*(char *const *)a, *(char *const *)b);
}

/* strict integer: the whole string */
static int parse_long_str(const char *s, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end)
        return -1;
    *out = v;
    return 0;
}

static void chomp(char *s)
{
    size_t n = strlen(s);
    while (n && (s[n - 1] == '\n' || s[n - 1] == '\r'))
        s[--n] = '\0';
}

static int blank(const char *s)
{
    while (*s && isspace((unsigned char)*s))
        s++;
    return *s == '\0';
}

/* ---- file lists ---- */

typedef struct {
    char **v;
    size_t n, cap;
} strlist;

static void strlist_free(strlist *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->v[i]);
    free(l->v);
    memset(l, 0, sizeof *l);
}

static int strlist_add(strlist *l, const char *dir, const char *name)
{
    if (l->n == l->cap) {
        size_t nc = l->cap ? 2 * l->cap : 64;
        char **nv = realloc(l->v, nc * sizeof *nv);
        if (!nv)
            return moe_fail(MOE_ENOMEM, NULL, "out of memory (file list of %s)", name);
        l->v = nv;
        l->cap = nc;
    }
    size_t len = (dir ? strlen(dir) + 1 : 0) + strlen(name) + 1;
    char *s = malloc(len);
    if (!s)
        return moe_fail(MOE_ENOMEM, NULL, "out of memory (file list of %s)", name);
    snprintf(s, len, "%s%s%s", dir ? dir : "", dir ? "/" : "", name);
    l->v[l->n++] = s;
    return MOE_OK;
}

/* Regular files in dir and its direct subfolders whose names pass accept, sorted in natural
 * order of their paths. */
static int list_files(const char *dir, int (*accept)(const char *), strlist *out, int depth)
{
    DIR *d = opendir(dir);
    if (!d)
        return moe_fail(MOE_EIO, hint_traces, "cannot read folder: %s (%s)", strerror(errno),
                        dir);
    int rc = MOE_OK;
    struct dirent *de;
    size_t first = out->n;
    while (!rc && (de = readdir(d))) {
        if (de->d_name[0] == '.')
            continue;
        size_t len = strlen(dir) + strlen(de->d_name) + 2;
        char *full = malloc(len);
        if (!full) {
            rc = moe_fail(MOE_ENOMEM, NULL, "out of memory (file list of %s)", dir);
            break;
        }
        snprintf(full, len, "%s/%s", dir, de->d_name);
        if (depth > 0 && is_dir(full))
            rc = list_files(full, accept, out, depth - 1);
        else if (is_file(full) && accept(de->d_name))
            rc = strlist_add(out, dir, de->d_name);
        free(full);
    }
    closedir(d);
    if (!rc && depth > 0 && out->n > first) /* sort once, at the top */
        qsort(out->v + first, out->n - first, sizeof *out->v, natcmp_ptr);
    return rc;
}

static int accept_csv(const char *n) { return ends_with(n, ".csv"); }
static int accept_routing(const char *n) { return ends_with(n, "_routing.jsonl"); }
static int accept_flame(const char *n)
{
    return ends_with(n, ".csv.gz") || ends_with(n, ".csv");
}
static int accept_any_trace(const char *n)
{
    return ends_with(n, ".csv") || ends_with(n, ".csv.gz") || ends_with(n, ".jsonl") ||
           ends_with(n, ".json");
}

/* Layer number in a FLAME file name ("..._layer7_..."), or -1. */
static int flame_layer_of(const char *path)
{
    const char *b = base_name(path), *s = b, *hit = NULL;
    while ((s = strstr(s, "layer")) != NULL) {
        if (isdigit((unsigned char)s[5]))
            hit = s + 5;
        s += 5;
    }
    if (!hit)
        return -1;
    long v = strtol(hit, NULL, 10);
    return v >= 0 && v < MOE_TRACE_MAX_LAYERS ? (int)v : -1;
}

/* ---- records and sinks ------------------------------------------------------------------ */

typedef struct {
    const char *file;
    long line;
    int layer;
    long seq, pos;            /* sequence (prompt, problem) and token position within it */
    int E;                    /* experts of the trace */
    int k;
    const int32_t *experts;   /* (K) */
    const double *w;          /* (K) recorded gate weights, or NULL */
    const double *p;          /* (E) recorded router probabilities, or NULL */
    const char *text;         /* token text, or NULL */
} trace_rec;

enum { SINK_MORE = 0, SINK_STOP = -1 }; /* or a MOE error code > 0 */
typedef int (*trace_sink)(void *ctx, const trace_rec *r);

/* What a trace holds, shared by the readers of one load (consistency across files). */
typedef struct {
    int E;
    int K;         /* 0 until the first record */
    int has_w;     /* -1 until the first record */
    long seq_next; /* next sequence number */
    long files;
} trace_state;

static int check_k(trace_state *st, int k, int has_w, const char *file, long line)
{
    if (st->K == 0) {
        st->K = k;
        st->has_w = has_w;
        return MOE_OK;
    }
    if (k != st->K)
        return moe_fail(MOE_EFORMAT, "every record of a trace must list the same number of experts",
                        "record lists %d experts, earlier records %d (%s:%ld)", k, st->K, file,
                        line);
    if (has_w != st->has_w)
        return moe_fail(MOE_EFORMAT, NULL, "record %s gating_probs, earlier records %s (%s:%ld)",
                        has_w ? "has" : "lacks", st->has_w ? "have them" : "do not", file, line);
    return MOE_OK;
}

/* ids in 0..E-1 and distinct */
static int check_ids(const int32_t *ids, int k, int E, const char *file, long line)
{
    for (int j = 0; j < k; j++) {
        if (ids[j] < 0 || ids[j] >= E)
            return moe_fail(MOE_EFORMAT, "expert ids of this trace lie in 0..E-1",
                            "expert id %d out of range 0..%d (%s:%ld)", (int)ids[j], E - 1, file,
                            line);
        for (int i = 0; i < j; i++)
            if (ids[i] == ids[j])
                return moe_fail(MOE_EFORMAT, NULL, "expert id %d listed twice (%s:%ld)",
                                (int)ids[j], file, line);
    }
    return MOE_OK;
}

/* ---- DeepSeek-V2-Lite CSV ----------------------------------------------------------------- */

static const char ds_header[] = "Layer ID,Batch Number,Token,Activated Expert IDs";
static const char *const hint_ds_header =
    "a DeepSeek trace starts with the header Layer ID,Batch Number,Token,Activated Expert IDs";
static const char *const hint_ds_layers =
    "every layer of a prompt logs every token: is the file truncated?";

/* Split one CSV line (newline removed) into at most maxf fields, in place; RFC 4180 quoting
 * ("" inside quotes is a quote). Returns the number of fields, -1 for an unterminated quote,
 * -2 for text after a closing quote, maxf + 1 for too many fields. */
static int csv_split(char *s, char **f, int maxf)
{
    int nf = 0;
    char *r = s, *w = s;
    for (;;) {
        if (nf == maxf)
            return maxf + 1;
        f[nf++] = w;
        if (*r == '"') {
            r++;
            for (;;) {
                if (!*r)
                    return -1;
                if (*r == '"') {
                    if (r[1] == '"') {
                        *w++ = '"';
                        r += 2;
                        continue;
                    }
                    r++;
                    break;
                }
                *w++ = *r++;
            }
            if (*r && *r != ',')
                return -2;
        } else {
            while (*r && *r != ',')
                *w++ = *r++;
        }
        if (!*r) {
            *w = '\0';
            return nf;
        }
        r++; /* the comma */
        *w++ = '\0';
    }
}

/* "[8, 26, 56]" -> ids; returns k, or -1 on a syntax error, -2 for more than maxk ids. */
static int parse_id_list(const char *s, int32_t *ids, int maxk)
{
    int k = 0;
    while (isspace((unsigned char)*s))
        s++;
    if (*s++ != '[')
        return -1;
    for (;;) {
        while (isspace((unsigned char)*s))
            s++;
        if (*s == ']' && k == 0)
            return -1;
        char *end;
        errno = 0;
        long v = strtol(s, &end, 10);
        if (end == s || errno || v < INT32_MIN || v > INT32_MAX)
            return -1;
        if (k == maxk)
            return -2;
        ids[k++] = (int32_t)v;
        s = end;
        while (isspace((unsigned char)*s))
            s++;
        if (*s == ',') {
            s++;
            continue;
        }
        if (*s != ']')
            return -1;
        s++;
        while (isspace((unsigned char)*s))
            s++;
        return *s ? -1 : k;
    }
}

static int read_deepseek(const char *path, trace_state *st, trace_sink sink, void *ctx)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return moe_fail(MOE_EIO, hint_traces, "cannot open trace: %s (%s)", strerror(errno),
                        path);
    char *line = NULL;
    size_t cap = 0;
    long ln = 0, rows = 0, pos = 0, first_count = -1;
    int rc = MOE_OK, cur = -1, first_layer = -1;
    unsigned char *seen = calloc(MOE_TRACE_MAX_LAYERS, 1);
    long seq = st->seq_next++;
    if (!seen) {
        fclose(f);
        return moe_fail(MOE_ENOMEM, NULL, "out of memory (%s)", path);
    }
    if (getline(&line, &cap, f) < 0) {
        rc = moe_fail(MOE_EFORMAT, hint_ds_header, "empty file: no header (%s)", path);
        goto done;
    }
    ln = 1;
    chomp(line);
    const char *h = line;
    if ((unsigned char)h[0] == 0xEF && (unsigned char)h[1] == 0xBB && (unsigned char)h[2] == 0xBF)
        h += 3;
    if (strcmp(h, ds_header) != 0) {
        rc = moe_fail(MOE_EFORMAT, hint_ds_header, "not a DeepSeek trace: header '%.80s' (%s:1)",
                      h, path);
        goto done;
    }
    while (getline(&line, &cap, f) >= 0) {
        ln++;
        chomp(line);
        if (blank(line))
            continue;
        char *fld[4];
        int nf = csv_split(line, fld, 4);
        if (nf == -1 || nf == -2) {
            rc = moe_fail(MOE_EFORMAT, "is the file truncated?", "%s (%s:%ld)",
                          nf == -1 ? "unterminated quoted field" : "text after a closing quote",
                          path, ln);
            goto done;
        }
        if (nf != 4) {
            rc = moe_fail(MOE_EFORMAT, "columns: Layer ID,Batch Number,Token,Activated Expert IDs",
                          "expected 4 columns, found %s%d (%s:%ld)", nf > 4 ? "more than " : "",
                          nf > 4 ? 4 : nf, path, ln);
            goto done;
        }
        long layer, batch;
        if (parse_long_str(fld[0], &layer) || layer < 0 || layer >= MOE_TRACE_MAX_LAYERS) {
            rc = moe_fail(MOE_EFORMAT, NULL, "bad layer id '%.40s' (%s:%ld)", fld[0], path, ln);
            goto done;
        }
        if (parse_long_str(fld[1], &batch)) {
            rc = moe_fail(MOE_EFORMAT, NULL, "bad batch number '%.40s' (%s:%ld)", fld[1], path,
                          ln);
            goto done;
        }
        int32_t ids[DS_E];
        int k = parse_id_list(fld[3], ids, DS_E);
        if (k < 0) {
            rc = moe_fail(MOE_EFORMAT, "expert ids are written \"[8, 26, 56, 57, 60, 43]\"",
                          "bad expert id list '%.60s' (%s:%ld)", fld[3], path, ln);
            goto done;
        }
        if ((rc = check_ids(ids, k, DS_E, path, ln)) || (rc = check_k(st, k, 0, path, ln)))
            goto done;
        if (layer != cur) {
            if (cur >= 0 && first_count < 0) {
                first_count = pos; /* tokens of the file's first layer */
            } else if (cur >= 0 && pos != first_count) {
                rc = moe_fail(MOE_EFORMAT, hint_ds_layers,
                              "layer %d has %ld tokens, layer %d has %ld (%s:%ld)", cur, pos,
                              first_layer, first_count, path, ln - 1);
                goto done;
            }
            if (seen[layer]) {
                rc = moe_fail(MOE_EFORMAT, "rows are grouped by layer",
                              "rows of layer %ld are not contiguous (%s:%ld)", layer, path, ln);
                goto done;
            }
            seen[layer] = 1;
            if (first_layer < 0)
                first_layer = (int)layer;
            cur = (int)layer;
            pos = 0;
        }
        trace_rec r = {path, ln, (int)layer, seq, pos++, DS_E, k, ids, NULL, NULL, fld[2]};
        rows++;
        rc = sink(ctx, &r);
        if (rc)
            goto done;
    }
    if (ferror(f)) {
        rc = moe_fail(MOE_EIO, NULL, "read error: %s (%s)", strerror(errno), path);
        goto done;
    }
    if (rows == 0) {
        rc = moe_fail(MOE_EFORMAT, NULL, "no records after the header (%s)", path);
        goto done;
    }
    if (first_count >= 0 && pos != first_count)
        rc = moe_fail(MOE_EFORMAT, hint_ds_layers,
                      "layer %d has %ld tokens, layer %d has %ld (%s:%ld)", cur, pos, first_layer,
                      first_count, path, ln);
done:
    free(seen);
    free(line);
    fclose(f);
    return rc;
}

/* ---- Mixtral-8x7B JSONL ----------------------------------------------------------------- */

typedef struct {
    long id, seq;
    int decode;        /* token_pos logs: past the prefill */
    long base, step;   /* decode positions: base + step */
    int prev_layer;
    long max_pos;
    long last[MOE_TRACE_MAX_LAYERS]; /* last position seen at each layer, -1 = none */
} mx_problem;

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

static int read_mixtral(const char *path, trace_state *st, trace_sink sink, void *ctx)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return moe_fail(MOE_EIO, hint_traces, "cannot open trace: %s (%s)", strerror(errno),
                        path);
    char *line = NULL;
    size_t cap = 0;
    long ln = 0, rows = 0;
    int rc = MOE_OK;
    mx_problem **pr = NULL;
    size_t npr = 0, cur = 0;
    json_t *o = NULL;
    while (getline(&line, &cap, f) >= 0) {
        ln++;
        chomp(line);
        if (blank(line))
            continue;
        json_error_t jerr;
        o = json_loads(line, 0, &jerr);
        if (!o) {
            rc = moe_fail(MOE_EFORMAT, "one JSON object per line: is the file truncated?",
                          "not a JSON record: %s (%s:%ld)", jerr.text, path, ln);
            goto done;
        }
        if (!json_is_object(o)) {
            rc = moe_fail(MOE_EFORMAT, NULL, "record is not a JSON object (%s:%ld)", path, ln);
            goto done;
        }
        long layer, pid = 0, idx;
        if (mx_int(o, "layer", 0, MOE_TRACE_MAX_LAYERS - 1, &layer)) {
            rc = moe_fail(MOE_EFORMAT,
                          "records read {\"problem_id\": 0, \"layer\": 0, \"experts\": [6, 5], "
                          "\"gating_probs\": [0.7, 0.3], \"token_idx\": 0}",
                          "missing or bad \"layer\" (an integer 0..%d) (%s:%ld)",
                          MOE_TRACE_MAX_LAYERS - 1, path, ln);
            goto done;
        }
        if (mx_int(o, "problem_id", 0, LONG_MAX, &pid) < 0) {
            rc = moe_fail(MOE_EFORMAT, NULL, "bad \"problem_id\" (%s:%ld)", path, ln);
            goto done;
        }
        json_t *je = json_object_get(o, "experts"), *jg = json_object_get(o, "gating_probs");
        int k = json_is_array(je) ? (int)json_array_size(je) : 0;
        if (k < 1 || k > MX_E) {
            rc = moe_fail(MOE_EFORMAT, NULL,
                          "missing or bad \"experts\" (a list of 1..%d expert ids) (%s:%ld)", MX_E,
                          path, ln);
            goto done;
        }
        int32_t ids[MX_E];
        double w[MX_E];
        for (int j = 0; j < k; j++) {
            json_t *v = json_array_get(je, (size_t)j);
            if (!json_is_integer(v) || json_integer_value(v) < INT32_MIN ||
                json_integer_value(v) > INT32_MAX) {
                rc = moe_fail(MOE_EFORMAT, NULL, "expert id %d is not an integer (%s:%ld)", j,
                              path, ln);
                goto done;
            }
            ids[j] = (int32_t)json_integer_value(v);
        }
        if ((rc = check_ids(ids, k, MX_E, path, ln)))
            goto done;
        if (jg) {
            if (!json_is_array(jg) || (int)json_array_size(jg) != k) {
                rc = moe_fail(MOE_EFORMAT, NULL,
                              "\"gating_probs\" must list one weight per expert (%d) (%s:%ld)", k,
                              path, ln);
                goto done;
            }
            for (int j = 0; j < k; j++) {
                json_t *v = json_array_get(jg, (size_t)j);
                w[j] = json_is_number(v) ? json_number_value(v) : NAN;
                if (!(w[j] >= 0.0 && w[j] <= 1.0)) {
                    rc = moe_fail(MOE_EFORMAT, NULL,
                                  "gating_probs[%d] is not a probability in [0, 1] (%s:%ld)", j,
                                  path, ln);
                    goto done;
                }
            }
        }
        if ((rc = check_k(st, k, jg != NULL, path, ln)))
            goto done;
        /* the problem's state */
        if (npr == 0 || pr[cur]->id != pid) {
            size_t i = 0;
            while (i < npr && pr[i]->id != pid)
                i++;
            if (i == npr) {
                mx_problem **np = realloc(pr, (npr + 1) * sizeof *np);
                mx_problem *p = np ? malloc(sizeof *p) : NULL;
                if (np)
                    pr = np;
                if (!p) {
                    rc = moe_fail(MOE_ENOMEM, NULL, "out of memory (%s)", path);
                    goto done;
                }
                p->id = pid;
                p->seq = st->seq_next++;
                p->decode = 0;
                p->base = p->step = 0;
                p->prev_layer = -1;
                p->max_pos = -1;
                for (int l = 0; l < MOE_TRACE_MAX_LAYERS; l++)
                    p->last[l] = -1;
                pr[npr++] = p;
            }
            cur = i;
        }
        mx_problem *p = pr[cur];
        long pos;
        int r1 = mx_int(o, "token_idx", 0, LONG_MAX / 2, &idx);
        if (r1 == 0) {
            pos = idx;
        } else if (r1 == 1 && mx_int(o, "token_pos", 0, LONG_MAX / 2, &idx) == 0) {
            if (!p->decode && p->last[layer] >= 0 && idx <= p->last[layer]) {
                p->decode = 1; /* position did not advance: the decode steps begin */
                p->base = p->max_pos + 1;
                p->step = 0;
                p->prev_layer = (int)layer;
            } else if (p->decode) {
                if (idx != 0) {
                    rc = moe_fail(MOE_EFORMAT,
                                  "after the prefill, every decode record has token_pos 0",
                                  "token_pos %ld in the decode part of problem %ld (%s:%ld)", idx,
                                  pid, path, ln);
                    goto done;
                }
                if (layer <= p->prev_layer)
                    p->step++;
                p->prev_layer = (int)layer;
            }
            pos = p->decode ? p->base + p->step : idx;
        } else {
            rc = moe_fail(MOE_EFORMAT, NULL,
                          "record needs an integer \"token_idx\" or \"token_pos\" (%s:%ld)", path,
                          ln);
            goto done;
        }
        if (pos <= p->last[layer]) {
            rc = moe_fail(MOE_EFORMAT,
                          "records of one (problem, layer) come in token order, once each",
                          "duplicate or out-of-order record: problem %ld, layer %ld, token %ld "
                          "(%s:%ld)",
                          pid, layer, pos, path, ln);
            goto done;
        }
        p->last[layer] = pos;
        if (pos > p->max_pos)
            p->max_pos = pos;
        trace_rec r = {path, ln, (int)layer, p->seq, pos, MX_E, k, ids, jg ? w : NULL, NULL, NULL};
        rows++;
        json_decref(o);
        o = NULL;
        if ((rc = sink(ctx, &r)))
            goto done;
    }
    if (ferror(f)) {
        rc = moe_fail(MOE_EIO, NULL, "read error: %s (%s)", strerror(errno), path);
        goto done;
    }
    if (rows == 0)
        rc = moe_fail(MOE_EFORMAT, NULL, "no records (%s)", path);
done:
    json_decref(o);
    for (size_t i = 0; i < npr; i++)
        free(pr[i]);
    free(pr);
    free(line);
    fclose(f);
    return rc;
}

/* ---- FLAME-MoE csv(.gz) ------------------------------------------------------------------- */

static const char *const hint_flame_header =
    "a FLAME trace starts with the header layer_id,token_id,expert_0,...,expert_{E-1}";

/* Read one line with gzgets; 1 = line, 0 = end of file, < 0 = error (code negated). */
static int gz_line(gzFile g, char *buf, int len, const char *path, long ln)
{
    if (!gzgets(g, buf, len)) {
        int err;
        const char *m = gzerror(g, &err);
        if (err != Z_OK)
            return -moe_fail(MOE_EFORMAT, "is the file truncated?",
                             "corrupt or truncated gzip data: %s (%s:%ld)", m, path, ln);
        return 0;
    }
    size_t n = strlen(buf);
    if (n > 0 && buf[n - 1] != '\n') { /* a last line: complete, or cut by a broken stream */
        int err;
        const char *m = gzerror(g, &err);
        if (err != Z_OK)
            return -moe_fail(MOE_EFORMAT, "is the file truncated?",
                             "corrupt or truncated gzip data: %s (%s:%ld)", m, path, ln);
    }
    if (n == (size_t)len - 1 && buf[n - 1] != '\n' && !gzeof(g))
        return -moe_fail(MOE_EFORMAT, NULL, "line longer than %d bytes (%s:%ld)", len - 1, path,
                         ln);
    chomp(buf);
    return 1;
}

/* Split on commas in place (no quoting in this format). Returns the field count. */
static int split_commas(char *s, char **f, int maxf)
{
    int nf = 0;
    for (;;) {
        if (nf == maxf)
            return maxf + 1;
        f[nf++] = s;
        char *c = strchr(s, ',');
        if (!c)
            return nf;
        *c = '\0';
        s = c + 1;
    }
}

static int read_flame(const char *path, int layer, trace_state *st, trace_sink sink, void *ctx)
{
    gzFile g = gzopen(path, "rb");
    if (!g)
        return moe_fail(MOE_EIO, hint_traces, "cannot open trace: %s (%s)",
                        errno ? strerror(errno) : "gzopen failed", path);
    char *buf = malloc(LINE_MAX_FLAME);
    char **fld = malloc((FLAME_MAX_E + 3) * sizeof *fld);
    double *p = malloc(FLAME_MAX_E * sizeof *p);
    double *w = malloc(FLAME_MAX_E * sizeof *w);
    int32_t *ids = malloc(FLAME_MAX_E * sizeof *ids);
    int rc = MOE_OK, E = 0, got;
    long ln = 1, rows = 0;
    if (!buf || !fld || !p || !w || !ids) {
        rc = moe_fail(MOE_ENOMEM, NULL, "out of memory (%s)", path);
        goto done;
    }
    if ((got = gz_line(g, buf, LINE_MAX_FLAME, path, ln)) <= 0) {
        rc = got < 0 ? -got
                     : moe_fail(MOE_EFORMAT, hint_flame_header, "empty file: no header (%s)",
                                path);
        goto done;
    }
    int nf = split_commas(buf, fld, FLAME_MAX_E + 2);
    int hdr_ok = nf >= 3 && nf <= FLAME_MAX_E + 2 && !strcmp(fld[0], "layer_id") &&
                 !strcmp(fld[1], "token_id");
    for (int e = 0; hdr_ok && e < nf - 2; e++) {
        char want[32];
        snprintf(want, sizeof want, "expert_%d", e);
        hdr_ok = !strcmp(fld[e + 2], want);
    }
    if (!hdr_ok) {
        rc = moe_fail(MOE_EFORMAT, hint_flame_header, "not a FLAME trace: bad header (%s:1)", path);
        goto done;
    }
    E = nf - 2;
    if (st->E == 0)
        st->E = E;
    if (E != st->E) {
        rc = moe_fail(MOE_EFORMAT, NULL, "file has %d experts, earlier files %d (%s:1)", E, st->E,
                      path);
        goto done;
    }
    long seq = st->seq_next; /* every layer file holds the same tokens */
    while ((got = gz_line(g, buf, LINE_MAX_FLAME, path, ln + 1)) > 0) {
        ln++;
        if (blank(buf))
            continue;
        nf = split_commas(buf, fld, E + 2);
        if (nf != E + 2) {
            rc = moe_fail(MOE_EFORMAT, "columns: layer_id,token_id,expert_0,...,expert_{E-1}",
                          "expected %d columns, found %s%d (%s:%ld)", E + 2,
                          nf > E + 2 ? "more than " : "", nf > E + 2 ? E + 2 : nf, path, ln);
            goto done;
        }
        long v;
        if (parse_long_str(fld[0], &v) || parse_long_str(fld[1], &v) || v < 0) {
            rc = moe_fail(MOE_EFORMAT, NULL, "bad layer_id or token_id (%s:%ld)", path, ln);
            goto done;
        }
        int k = 0;
        for (int e = 0; e < E; e++) {
            char *end;
            p[e] = strtod(fld[e + 2], &end);
            if (end == fld[e + 2] || *end || !(p[e] >= 0.0 && p[e] <= 1.0)) {
                rc = moe_fail(MOE_EFORMAT, "scores are router probabilities in [0, 1]",
                              "bad score '%.30s' for expert %d (%s:%ld)", fld[e + 2], e, path, ln);
                goto done;
            }
            if (p[e] > 0.0) {
                /* insert by descending p, ties keep the lower expert first */
                int j = k++;
                while (j > 0 && p[ids[j - 1]] < p[e]) {
                    ids[j] = ids[j - 1];
                    j--;
                }
                ids[j] = e;
            }
        }
        if (k == 0) {
            rc = moe_fail(MOE_EFORMAT, NULL, "row has no non-zero score (%s:%ld)", path, ln);
            goto done;
        }
        if ((rc = check_k(st, k, 1, path, ln)))
            goto done;
        for (int j = 0; j < k; j++)
            w[j] = p[ids[j]];
        trace_rec r = {path, ln, layer, seq, rows++, E, k, ids, w, p, NULL};
        if ((rc = sink(ctx, &r)))
            goto done;
    }
    if (got < 0) {
        rc = -got;
        goto done;
    }
    if (rows == 0)
        rc = moe_fail(MOE_EFORMAT, NULL, "no records after the header (%s)", path);
done:
    free(buf);
    free(fld);
    free(p);
    free(w);
    free(ids);
    gzclose(g);
    return rc;
}

/* ---- Fiddler popularity JSON --------------------------------------------------------------- */

int moe_trace_popularity_read(const char *path, int *L, int *E, long **counts)
{
    *counts = NULL;
    if (!is_file(path))
        return moe_fail(MOE_EIO, hint_traces, "cannot open trace: %s (%s)",
                        is_dir(path) ? "is a folder, give one expert_popularity_*.json"
                                     : strerror(ENOENT),
                        path);
    json_error_t jerr;
    json_t *root = json_load_file(path, 0, &jerr);
    if (!root)
        return moe_fail(MOE_EFORMAT, "is the file truncated?", "not JSON: %s (%s:%d)", jerr.text,
                        path, jerr.line);
    json_t *pop = json_object_get(root, "expert_popularity");
    size_t nl = json_is_array(pop) ? json_array_size(pop) : 0;
    json_t *row0 = nl ? json_array_get(pop, 0) : NULL;
    size_t ne = json_is_array(row0) ? json_array_size(row0) : 0;
    int rc = MOE_OK;
    if (nl == 0 || nl > MOE_TRACE_MAX_LAYERS || ne == 0 || ne > FLAME_MAX_E) {
        rc = moe_fail(MOE_EFORMAT, "expected {\"expert_popularity\": [[8 counts] per layer]}",
                      "no \"expert_popularity\" layers x experts array (%s)", path);
        goto done;
    }
    long *c = malloc(nl * ne * sizeof *c);
    if (!c) {
        rc = moe_fail(MOE_ENOMEM, NULL, "out of memory (%s)", path);
        goto done;
    }
    for (size_t l = 0; l < nl; l++) {
        json_t *row = json_array_get(pop, l);
        if (!json_is_array(row) || json_array_size(row) != ne) {
            free(c);
            rc = moe_fail(MOE_EFORMAT, "every layer lists one count per expert",
                          "layer %zu of expert_popularity does not have %zu counts (%s)", l, ne,
                          path);
            goto done;
        }
        for (size_t e = 0; e < ne; e++) {
            json_t *v = json_array_get(row, e);
            if (!json_is_integer(v) || json_integer_value(v) < 0 ||
                json_integer_value(v) > LONG_MAX / 4) {
                free(c);
                rc = moe_fail(MOE_EFORMAT, NULL,
                              "count of layer %zu, expert %zu is not a non-negative integer (%s)",
                              l, e, path);
                goto done;
            }
            c[l * ne + e] = (long)json_integer_value(v);
        }
    }
    *counts = c;
    *L = (int)nl;
    *E = (int)ne;
done:
    json_decref(root);
    return rc;
}

/* ---- affinities ---------------------------------------------------------------------------- */

void moe_trace_affinity(int E, int K, const int32_t *experts, const double *w, const double *p,
                        int ranked, double *row)
{
    if (p) {
        double S = 0.0, pmin = 1.0;
        for (int j = 0; j < K; j++) {
            S += p[experts[j]];
            if (p[experts[j]] < pmin)
                pmin = p[experts[j]];
        }
        double q = E > K ? (1.0 - S) / (E - K) : 1.0;
        if (q > pmin)
            q = pmin;
        if (q < 1e-12)
            q = 1e-12;
        for (int e = 0; e < E; e++)
            row[e] = log(q);
        for (int j = 0; j < K; j++)
            row[experts[j]] = log(p[experts[j]]);
        return;
    }
    for (int e = 0; e < E; e++)
        row[e] = log(MOE_TRACE_EPS);
    for (int j = 0; j < K; j++) {
        double v = w ? w[j] : ranked ? 2.0 * (K - j) / ((double)K * (K + 1)) : 1.0 / K;
        row[experts[j]] = log(v > MOE_TRACE_EPS ? v : MOE_TRACE_EPS);
    }
}

/* ---- the loader (one layer) ---------------------------------------------------------------- */

typedef struct {
    int layer;     /* wanted layer; -1 = every record (a single FLAME file) */
    long max;
    long vocab;
    int E;
    moe_rec *rec;
    long cap;
    int lo, hi;    /* layers seen */
} load_ctx;

/* FNV-1a 64 of a token's text */
static uint64_t fnv1a(const char *s)
{
    uint64_t h = 14695981039346656037ULL; /* FNV-1a 64 offset basis */
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 1099511628211ULL;
    }
    return h;
}

static int grow(void **p, size_t count, size_t size)
{
    void *np = realloc(*p, count * size);
    if (!np)
        return moe_fail(MOE_ENOMEM, NULL, "out of memory (trace of %zu rows)", count);
    *p = np;
    return MOE_OK;
}

static int load_sink(void *vctx, const trace_rec *r)
{
    load_ctx *c = vctx;
    if (r->layer < c->lo)
        c->lo = r->layer;
    if (r->layer > c->hi)
        c->hi = r->layer;
    if (c->layer >= 0 && r->layer != c->layer)
        return SINK_MORE;
    moe_rec *rec = c->rec;
    const int K = r->k;
    if (rec->n == 0) {
        rec->K = K;
        rec->E = c->E = r->E;
    }
    const int E = c->E;
    if (rec->n == c->cap) {
        long nc = c->cap ? 2 * c->cap : 1024;
        if (nc > c->max)
            nc = c->max;
        int rc = grow((void **)&rec->choices, (size_t)nc * K, sizeof *rec->choices);
        if (!rc)
            rc = grow((void **)&rec->logits, (size_t)nc * E, sizeof *rec->logits);
        if (!rc && r->w)
            rc = grow((void **)&rec->choice_w, (size_t)nc * K, sizeof *rec->choice_w);
        if (!rc && r->text)
            rc = grow((void **)&rec->ids, (size_t)nc, sizeof *rec->ids);
        if (rc)
            return rc;
        c->cap = nc;
    }
    size_t t = (size_t)rec->n;
    memcpy(rec->choices + t * K, r->experts, (size_t)K * sizeof *r->experts);
    if (r->w && rec->choice_w)
        memcpy(rec->choice_w + t * K, r->w, (size_t)K * sizeof *r->w);
    if (r->text && rec->ids)
        rec->ids[t] = (int64_t)(fnv1a(r->text) % (uint64_t)c->vocab);
    moe_trace_affinity(E, K, r->experts, r->w, r->p, 0, rec->logits + t * E);
    rec->n++;
    return rec->n >= c->max ? SINK_STOP : SINK_MORE;
}

static int read_one(int format, const char *file, int layer, trace_state *st, trace_sink sink,
                    void *ctx)
{
    st->files++;
    switch (format) {
    case MOE_TRACE_DEEPSEEK:
        return read_deepseek(file, st, sink, ctx);
    case MOE_TRACE_MIXTRAL:
        return read_mixtral(file, st, sink, ctx);
    case MOE_TRACE_FLAME:
        return read_flame(file, layer, st, sink, ctx);
    default:
        return moe_fail(MOE_EINVAL, NULL, "trace format %d has no record reader", format);
    }
}

static const char *format_glob(int format)
{
    switch (format) {
    case MOE_TRACE_DEEPSEEK: return "*.csv";
    case MOE_TRACE_MIXTRAL: return "*_routing.jsonl";
    case MOE_TRACE_FLAME: return "*layer<L>*.csv.gz";
    default: return "*.json";
    }
}

/* The trace files of path for a format: the file itself, or the folder's matching files. */
static int trace_files(int format, const char *path, strlist *files)
{
    if (is_file(path))
        return strlist_add(files, NULL, path);
    if (!is_dir(path))
        return moe_fail(MOE_EIO, hint_traces, "trace not found: %s (%s)", strerror(ENOENT),
                        path);
    int (*acc)(const char *) = format == MOE_TRACE_DEEPSEEK  ? accept_csv
                               : format == MOE_TRACE_MIXTRAL ? accept_routing
                                                             : accept_flame;
    int rc = list_files(path, acc, files, 1);
    if (!rc && files->n == 0)
        rc = moe_fail(MOE_EFORMAT, hint_traces, "no trace files (%s) in folder (%s)",
                      format_glob(format), path);
    return rc;
}

int moe_trace_load(int format, const char *path, int layer, long max_tokens, long vocab,
                   moe_rec *rec)
{
    memset(rec, 0, sizeof *rec);
    if (format == MOE_TRACE_POPULARITY)
        return moe_fail(MOE_EINVAL, NULL, "popularity counts are not per-token rows (%s)", path);
    strlist files = {0};
    int rc = trace_files(format, path, &files);
    if (rc) {
        strlist_free(&files);
        return rc;
    }
    int single = is_file(path);
    load_ctx c = {single && format == MOE_TRACE_FLAME ? -1 : layer,
                  max_tokens > 0 ? max_tokens : LONG_MAX, vocab > 0 ? vocab : 1,
                  0, rec, 0, INT_MAX, -1};
    trace_state st = {format == MOE_TRACE_FLAME ? 0 : moe_trace_experts(format), 0, -1, 0, 0};
    for (size_t i = 0; i < files.n && !rc; i++) {
        int fl = layer;
        if (format == MOE_TRACE_FLAME) {
            fl = flame_layer_of(files.v[i]);
            if (fl < 0)
                fl = 0;
            if (fl < c.lo)
                c.lo = fl;
            if (fl > c.hi)
                c.hi = fl;
            if (!single && fl != layer)
                continue;
        }
        rc = read_one(format, files.v[i], fl, &st, load_sink, &c);
    }
    if (rc == SINK_STOP)
        rc = MOE_OK;
    if (!rc && rec->n == 0) {
        if (c.hi >= 0)
            rc = moe_fail(MOE_EINVAL, "choose one of the trace's layers",
                          "layer %d is not in the trace, which holds layers %d..%d (%s)", layer,
                          c.lo, c.hi, path);
        else
            rc = moe_fail(MOE_EFORMAT, NULL, "no records (%s)", path);
    }
    strlist_free(&files);
    if (rc) {
        moe_rec_clear(rec);
        return rc;
    }
    rec->layer_lo = c.lo;
    rec->layer_hi = c.hi;
    return MOE_OK;
}

/* ---- trace info ----------------------------------------------------------------------------- */

typedef struct {
    int E;
    long *counts;   /* (MAX_LAYERS, E) */
    long *tokens;   /* (MAX_LAYERS) records per layer */
    long *seq_max;  /* max position per sequence */
    long nseq, seq_cap;
    long records;
    int has_text;
} info_ctx;

static int info_sink(void *vctx, const trace_rec *r)
{
    info_ctx *c = vctx;
    if (!c->counts) {
        c->E = r->E;
        c->counts = calloc((size_t)MOE_TRACE_MAX_LAYERS * c->E, sizeof *c->counts);
        if (!c->counts)
            return moe_fail(MOE_ENOMEM, NULL, "out of memory (trace info)");
    }
    if (r->seq >= c->seq_cap) {
        long nc = c->seq_cap ? 2 * c->seq_cap : 256;
        while (nc <= r->seq)
            nc *= 2;
        int rc = grow((void **)&c->seq_max, (size_t)nc, sizeof *c->seq_max);
        if (rc)
            return rc;
        for (long i = c->seq_cap; i < nc; i++)
            c->seq_max[i] = -1;
        c->seq_cap = nc;
    }
    if (r->seq >= c->nseq)
        c->nseq = r->seq + 1;
    if (r->pos > c->seq_max[r->seq])
        c->seq_max[r->seq] = r->pos;
    for (int j = 0; j < r->k; j++)
        c->counts[(size_t)r->layer * c->E + r->experts[j]]++;
    c->tokens[r->layer]++;
    c->records++;
    c->has_text |= r->text != NULL;
    return SINK_MORE;
}

/* Detect the format of one file from its name and first line. */
static int detect_format(const char *file, int *format)
{
    if (ends_with(file, ".json")) {
        *format = MOE_TRACE_POPULARITY;
        return MOE_OK;
    }
    if (ends_with(file, ".jsonl")) {
        *format = MOE_TRACE_MIXTRAL;
        return MOE_OK;
    }
    gzFile g = gzopen(file, "rb");
    if (!g)
        return moe_fail(MOE_EIO, hint_traces, "cannot open trace: %s (%s)",
                        errno ? strerror(errno) : "gzopen failed", file);
    char head[128] = "";
    if (!gzgets(g, head, sizeof head))
        head[0] = '\0';
    gzclose(g);
    if (!strncmp(head, ds_header, sizeof ds_header - 1) ||
        !strncmp(head, "\xEF\xBB\xBF" "Layer ID,", 12)) {
        *format = MOE_TRACE_DEEPSEEK;
        return MOE_OK;
    }
    if (!strncmp(head, "layer_id,token_id,", 18)) {
        *format = MOE_TRACE_FLAME;
        return MOE_OK;
    }
    return moe_fail(MOE_EFORMAT,
                    "moesim reads the DeepSeek CSV, Mixtral JSONL, FLAME csv.gz and Fiddler "
                    "popularity JSON traces (see their SOURCE.md)",
                    "unknown trace format: %s (%s)", head[0] ? "unrecognised header" : "empty file",
                    file);
}

static const char *const format_desc[4] = {
    "deepseek-csv: DeepSeek-V2-Lite expert ids per token and layer, with token text",
    "mixtral-jsonl: Mixtral-8x7B expert ids and renormalised gate probabilities per token",
    "flame-csv: FLAME-MoE router probabilities per token (one file per layer)",
    "popularity-json: Mixtral-8x7B expert selection counts per layer (no per-token records)",
};
static const char *const format_source[4] = {"trace_deepseek", "trace_mixtral", "trace_flame",
                                             "trace_mixtral_popularity"};

static void print_layer_row(FILE *out, int layer, long tokens, const long *cnt, int E)
{
    long sum = 0, mx = 0, mn = LONG_MAX;
    for (int e = 0; e < E; e++) {
        sum += cnt[e];
        if (cnt[e] > mx)
            mx = cnt[e];
        if (cnt[e] < mn)
            mn = cnt[e];
    }
    double mean = (double)sum / E;
    fprintf(out, "%5d %8ld %10.4f %8ld %8ld\n", layer, tokens, mean > 0 ? mx / mean : 0.0, mn,
            mx);
}

static int info_popularity(const char *path, FILE *out)
{
    int L, E;
    long *c;
    int rc = moe_trace_popularity_read(path, &L, &E, &c);
    if (rc)
        return rc;
    long maxtok = 0;
    for (int l = 0; l < L; l++) {
        long s = 0;
        for (int e = 0; e < E; e++)
            s += c[(size_t)l * E + e];
        if (s / 2 > maxtok)
            maxtok = s / 2;
    }
    fprintf(out, "trace    %s\nformat   %s\nsource   %s\nfiles    1\n", path, format_desc[3],
            format_source[3]);
    fprintf(out, "layers   %d (0..%d)\nexperts  %d\n", L, L - 1, E);
    fprintf(out, "k        2 (Mixtral top-2; tokens = counts/2)\n");
    fprintf(out, "weights  none (counts only)\ntokens   %ld (largest layer)\n", maxtok);
    fprintf(out, "recorded load per layer (imbalance = max/mean of per-expert counts):\n");
    fprintf(out, "layer   tokens  imbalance      min      max\n");
    for (int l = 0; l < L; l++) {
        long s = 0;
        for (int e = 0; e < E; e++)
            s += c[(size_t)l * E + e];
        print_layer_row(out, l, s / 2, c + (size_t)l * E, E);
    }
    free(c);
    return MOE_OK;
}

int moe_trace_info(const char *path, FILE *out)
{
    strlist any = {0};
    int rc = MOE_OK, format = -1;
    const char *probe = path;
    if (is_dir(path)) {
        rc = list_files(path, accept_any_trace, &any, 1);
        /* prefer the per-token files of a folder */
        for (size_t i = 0; !rc && i < any.n && format < 0; i++) {
            if (ends_with(any.v[i], ".json"))
                continue;
            if (ends_with(any.v[i], ".jsonl") && !accept_routing(base_name(any.v[i])))
                continue;
            probe = any.v[i];
            rc = detect_format(probe, &format);
        }
        if (!rc && format < 0)
            rc = moe_fail(MOE_EFORMAT,
                          any.n ? "give one expert_popularity_*.json or .jsonl file" : hint_traces,
                          "no per-token trace files in folder (%s)", path);
    } else if (is_file(path)) {
        rc = detect_format(path, &format);
    } else {
        rc = moe_fail(MOE_EIO, hint_traces, "trace not found: %s (%s)", strerror(ENOENT), path);
    }
    strlist_free(&any);
    if (rc)
        return rc;
    if (format == MOE_TRACE_POPULARITY)
        return info_popularity(path, out);

    strlist files = {0};
    info_ctx c = {0};
    trace_state st = {format == MOE_TRACE_FLAME ? 0 : moe_trace_experts(format), 0, -1, 0, 0};
    if ((rc = trace_files(format, path, &files)))
        goto done;
    c.tokens = calloc(MOE_TRACE_MAX_LAYERS, sizeof *c.tokens);
    if (!c.tokens) {
        rc = moe_fail(MOE_ENOMEM, NULL, "out of memory (trace info)");
        goto done;
    }
    for (size_t i = 0; i < files.n && !rc; i++) {
        int fl = 0;
        if (format == MOE_TRACE_FLAME) {
            fl = flame_layer_of(files.v[i]);
            if (fl < 0)
                fl = 0;
        }
        rc = read_one(format, files.v[i], fl, &st, info_sink, &c);
    }
    if (rc)
        goto done;
    int E = c.E;
    int nl = 0, lo = -1, hi = -1;
    long tokens = 0, maxl = 0;
    for (int l = 0; l < MOE_TRACE_MAX_LAYERS; l++)
        if (c.tokens[l]) {
            nl++;
            if (lo < 0)
                lo = l;
            hi = l;
            if (c.tokens[l] > maxl)
                maxl = c.tokens[l];
        }
    for (long s = 0; s < c.nseq; s++)
        tokens += c.seq_max[s] + 1;
    fprintf(out, "trace    %s\nformat   %s\nsource   %s\nfiles    %ld\n", path,
            format_desc[format], format_source[format], st.files);
    fprintf(out, "layers   %d (%d..%d)\nexperts  %d\nk        %d recorded experts per token\n",
            nl, lo, hi, E, st.K);
    fprintf(out, "weights  %s\n",
            format == MOE_TRACE_FLAME ? "router softmax probabilities (not renormalised)"
            : st.has_w == 1           ? "gate probabilities of the recorded experts"
                                      : "none (expert ids only)");
    fprintf(out, "tokens   %ld (records %ld, missing (token, layer) records %ld)%s\n", tokens,
            c.records, tokens * nl - c.records, c.has_text ? ", with token text" : "");
    fprintf(out, "recorded load per layer (imbalance = max/mean of per-expert counts):\n");
    fprintf(out, "layer   tokens  imbalance      min      max\n");
    for (int l = 0; l < MOE_TRACE_MAX_LAYERS; l++)
        if (c.tokens[l])
            print_layer_row(out, l, c.tokens[l], c.counts + (size_t)l * c.E, E);
    (void)maxl;
done:
    strlist_free(&files);
    free(c.counts);
    free(c.tokens);
    free(c.seq_max);
    return rc;
}
