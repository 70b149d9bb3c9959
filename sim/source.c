/* source.c: what the token sources of source.h share: the registry look-up, parameter
 * parsing and validation against each type's table (which also drives `moesim list sources`),
 * the batch buffers, the gate matrix and the rows of recorded sources. The source types
 * themselves are in sim/sources/, one file each, listed in sim/sources/registry.c.
 *
 * PCG streams (seed, stream), so that a source is reproducible from its seed and batch b is
 * reproducible on its own (batch 3 is the same whether or not batches 0..2 were drawn):
 *   tokens of batch b        (seed, MOE_STREAM_TOKENS + 16 b): the per-token draws (a
 *                            cluster and its x row, an id, or two experts), then Gaussian x
 *                            rows where x is not drawn per token, then uniform ids
 *   fixed parameters         (seed, MOE_STREAM_SOURCE_PARAM): cluster centres, direction u
 *   Dirichlet weights        (seed, MOE_STREAM_SOURCE_PARAM + 16)
 *   embedding of token id i  (seed, MOE_STREAM_SOURCE_PARAM + 16 (i + 2))
 *   gate Wg (D,M)            (seed, MOE_STREAM_GATE_W)
 * Recorded sources (npy, trace_*) hold N rows of one layer; batch b is rows (b T + t) mod N.
 * A recorded source fixes M (moe_source_required_m): its batches have that M whatever M the
 * caller asked for, and the caller compares it with its layer.
 * Shapes: x (T,D), ids (T), logits (T,M), choices and choice_w (T,Krec), Wg (D,M) row-major.
 */
#include "source.h"
#include "huge.h"
#include "paths.h"

#include <errno.h>
#include <gsl/gsl_randist.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

/* ---- parameters ---------------------------------------------------------------------------- */

static int pindex(const moe_source_type *t, const char *key)
{
    for (int i = 0; t->params[i].key && i < MOE_SP_MAX; i++)
        if (strcmp(t->params[i].key, key) == 0)
            return i;
    return -1;
}

int moe_source_has(const moe_source *s, const char *key) { return pindex(s->type, key) >= 0; }
double moe_source_num(const moe_source *s, const char *key)
{
    return s->val[pindex(s->type, key)].num;
}
const char *moe_source_str(const moe_source *s, const char *key)
{
    return s->val[pindex(s->type, key)].str;
}
int moe_source_given(const moe_source *s, const char *key)
{
    int i = pindex(s->type, key);
    return i >= 0 && s->val[i].kv != NULL;
}

/* "<where>, key <key>" of a parameter (or of a kv) for error messages. */
static void where(const moe_source *s, const moe_kv *kv, const char *key, char *buf, size_t len)
{
    const char *sec = kv && kv->section ? kv->section : NULL;
    if (kv && kv->file && kv->line > 0)
        snprintf(buf, len, "%s:%d, key %s%s%s", kv->file, kv->line, sec ? sec : "",
                 sec ? "." : "", key);
    else if (kv && kv->file)
        snprintf(buf, len, "%s, key %s%s%s", kv->file, sec ? sec : "", sec ? "." : "", key);
    else
        snprintf(buf, len, "source %s, key %s", s->type->name, key);
}

int moe_source_fail(const moe_source *s, const char *key, const char *hint, const char *fmt, ...)
{
    char what[512], loc[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    int i = pindex(s->type, key);
    where(s, i >= 0 ? s->val[i].kv : NULL, key, loc, sizeof loc);
    return moe_fail(MOE_EINVAL, hint, "%s (%s)", what, loc);
}

static void range_text(const moe_source_param *p, char *buf, size_t len)
{
    if (p->kind == MOE_SP_ENUM)
        snprintf(buf, len, "%s", p->choices);
    else if (p->kind == MOE_SP_STR)
        snprintf(buf, len, "path");
    else if (p->hi >= MOE_SP_BIG)
        snprintf(buf, len, "%s %g", p->lo_open ? ">" : ">=", p->lo);
    else if (p->kind == MOE_SP_INT)
        snprintf(buf, len, "%.0f..%.0f", p->lo, p->hi);
    else
        snprintf(buf, len, "%s%g..%g%s", p->lo_open ? "(" : "", p->lo, p->hi,
                 p->lo_open ? "]" : "");
}

static int set_param(moe_source *s, const moe_kv *kv)
{
    char loc[256];
    where(s, kv, kv->key ? kv->key : "(null)", loc, sizeof loc);
    int i = kv->key ? pindex(s->type, kv->key) : -1;
    if (i < 0) {
        char keys[512];
        size_t o = 0;
        keys[0] = '\0';
        for (int j = 0; s->type->params[j].key && o < sizeof keys; j++)
            o += (size_t)snprintf(keys + o, sizeof keys - o, "%s%s", j ? ", " : "",
                                  s->type->params[j].key);
        char hint[600];
        snprintf(hint, sizeof hint, "parameters of source %s: %s", s->type->name, keys);
        return moe_fail(MOE_EINVAL, hint, "unknown parameter '%s' for source %s (%s)",
                        kv->key ? kv->key : "(null)", s->type->name, loc);
    }
    const moe_source_param *p = &s->type->params[i];
    const char *v = kv->value ? kv->value : "";
    char rng[256];
    range_text(p, rng, sizeof rng);
    if (p->kind == MOE_SP_NUM || p->kind == MOE_SP_INT) {
        char *end;
        errno = 0;
        double x = strtod(v, &end);
        if (end == v || *end || errno || !isfinite(x))
            return moe_fail(MOE_EINVAL, NULL, "%s = '%s' is not a number (%s)", p->key, v, loc);
        if (p->kind == MOE_SP_INT && x != floor(x))
            return moe_fail(MOE_EINVAL, NULL, "%s = '%s' is not an integer (%s)", p->key, v, loc);
        if (x < p->lo || (p->lo_open && x == p->lo) || x > p->hi)
            return moe_fail(MOE_EINVAL, NULL, "%s = %s is out of range: want %s (%s)", p->key, v,
                            rng, loc);
        s->val[i].num = x;
    } else if (p->kind == MOE_SP_ENUM) {
        size_t len = strlen(v);
        const char *c = p->choices;
        int ok = 0;
        while (*c && !ok) {
            size_t l = strcspn(c, "|");
            ok = len > 0 && l == len && strncmp(c, v, len) == 0;
            c += l + (c[l] == '|');
        }
        if (!ok)
            return moe_fail(MOE_EINVAL, NULL, "%s = '%s' is not one of %s (%s)", p->key, v, rng,
                            loc);
    } else if (!*v) {
        return moe_fail(MOE_EINVAL, NULL, "%s is empty: want a path (%s)", p->key, loc);
    }
    s->val[i].str = v;
    s->val[i].kv = kv;
    return MOE_OK;
}

/* ---- helpers ------------------------------------------------------------------------------- */

void *moe_source_calloc(size_t count, size_t size, int *rc, const char *what)
{
    if (*rc)
        return NULL;
    void *p = calloc(count ? count : 1, size);
    if (!p)
        *rc = moe_fail(MOE_ENOMEM, NULL, "out of memory (%s)", what);
    return p;
}

void moe_source_reseed(gsl_rng *r, uint64_t seed, uint64_t stream)
{
    moe_pcg32_seed(gsl_rng_state(r), seed, stream);
}

void moe_source_fill_ids_uniform(moe_source *s)
{
    for (int t = 0; t < s->n; t++)
        s->ids[t] = (int64_t)gsl_rng_uniform_int(s->rng, (unsigned long)s->vocab);
}

void moe_source_fill_x_gaussian(moe_source *s, double sigma)
{
    size_t nd = (size_t)s->n * s->d;
    for (size_t i = 0; i < nd; i++)
        s->x[i] = (float)gsl_ran_gaussian_ziggurat(s->rng, sigma);
}

/* ---- recorded rows: npy and traces ----------------------------------------------------------- */

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

moe_rec *moe_source_rec_alloc(moe_source *s)
{
    int rc = MOE_OK;
    s->ws = moe_source_calloc(1, sizeof(moe_rec), &rc, "recorded rows");
    return s->ws;
}

void moe_source_rec_ready(moe_source *s)
{
    const moe_rec *r = s->ws;
    s->k_rec = r->K;
    s->has_logits = r->logits != NULL;
    s->has_choice_w = r->choice_w != NULL;
}

void moe_source_rec_close(moe_source *s)
{
    moe_rec_clear(s->ws);
    free(s->ws);
    s->ws = NULL;
}

/* Batch b takes rows (b*T + t) mod N: batches cycle through the recorded rows. */
int moe_source_rec_batch(moe_source *s, int b)
{
    const moe_rec *r = s->ws;
    const long N = r->n;
    const int T = s->n, M = s->m, K = r->K;
    long start = (long)(((long long)(b % N) * (T % N)) % N);
    if (!r->x)
        moe_source_fill_x_gaussian(s, 1.0);
    if (!r->ids)
        moe_source_fill_ids_uniform(s);
    for (int t = 0; t < T; t++) {
        long row = (start + t) % N;
        if (r->x)
            memcpy(s->x + (size_t)t * s->d, r->x + (size_t)row * s->d,
                   (size_t)s->d * sizeof *s->x);
        if (r->ids)
            s->ids[t] = r->ids[row];
        if (r->logits)
            memcpy(s->logits + (size_t)t * M, r->logits + (size_t)row * M,
                   (size_t)M * sizeof *s->logits);
        if (r->choices)
            memcpy(s->choices + (size_t)t * K, r->choices + (size_t)row * K,
                   (size_t)K * sizeof *s->choices);
        if (r->choice_w)
            memcpy(s->choice_w + (size_t)t * K, r->choice_w + (size_t)row * K,
                   (size_t)K * sizeof *s->choice_w);
    }
    return MOE_OK;
}

/* ---- the interface of source.h ----------------------------------------------------------- */

void moe_source_close(moe_source *s)
{
    if (!s)
        return;
    free(s->x);
    free(s->ids);
    free(s->logits);
    free(s->choices);
    free(s->choice_w);
    free(s->wg);
    gsl_rng_free(s->rng);
    if (s->type->close)
        s->type->close(s);
    free(s);
}

const moe_source_type *moe_source_find(const char *name)
{
    for (int i = 0; name && moe_source_types[i]; i++)
        if (strcmp(moe_source_types[i]->name, name) == 0)
            return moe_source_types[i];
    return NULL;
}

/* Wg (D,M): N(0, 1/D) from the gate stream, or column e = direction (e mod count) of the
 * type's gate_dirs plus N(0, gate_noise^2/D), times gate_scale where the type has it. */
static int make_gate(moe_source *s)
{
    int rc = MOE_OK;
    const int D = s->d, M = s->m;
    s->wg = moe_source_calloc((size_t)D * M, sizeof *s->wg, &rc, "gate matrix");
    if (rc)
        return rc;
    gsl_rng *rg = moe_rng_alloc(s->seed, MOE_STREAM_GATE_W);
    if (!rg)
        return MOE_ENOMEM;
    int count = 0;
    const double *dir = s->type->gate_dirs ? s->type->gate_dirs(s, &count) : NULL;
    double scale = moe_source_has(s, "gate_scale") ? moe_source_num(s, "gate_scale") : 1.0;
    double noise = (dir ? moe_source_num(s, "gate_noise") : 1.0) / sqrt((double)D);
    for (int j = 0; j < D; j++)
        for (int e = 0; e < M; e++) {
            double v = dir ? dir[(size_t)(e % count) * D + j] : 0.0;
            if (noise > 0.0)
                v += gsl_ran_gaussian_ziggurat(rg, noise);
            s->wg[(size_t)j * M + e] = (float)(scale * v);
        }
    gsl_rng_free(rg);
    return MOE_OK;
}

static int unknown_source(const char *kind)
{
    char names[512];
    size_t o = 0;
    for (int i = 0; moe_source_types[i] && o < sizeof names; i++)
        o += (size_t)snprintf(names + o, sizeof names - o, "%s%s", i ? ", " : "",
                              moe_source_types[i]->name);
    return moe_fail(MOE_EINVAL, names, "unknown source '%s' (source)", kind ? kind : "(null)");
}

/* A zeroed block of bytes from moe_huge_alloc (freed with free), or NULL with *rc set. */
static void *huge_zeroed(size_t bytes, int *rc)
{
    void *p = *rc ? NULL : moe_huge_alloc(bytes);
    if (p)
        memset(p, 0, bytes);
    else if (!*rc)
        *rc = moe_fail(MOE_ENOMEM, NULL, "out of memory (token batch)");
    return p;
}

/* The batch buffers open asked for that are not there yet: x and ids always, logits, choices,
 * choice_w (allocated by the first batch, and again after moe_source_take_batch). */
static int alloc_buffers(moe_source *s)
{
    int rc = MOE_OK;
    const size_t n = (size_t)s->n;
    if (!s->x) /* (T,D): 256 MiB at 2^20 x 64, in huge pages (first touch: a fault per 2 MiB) */
        s->x = huge_zeroed(n * (size_t)s->d * sizeof *s->x, &rc);
    if (!s->ids)
        s->ids = moe_source_calloc(n, sizeof *s->ids, &rc, "token batch");
    if (s->has_logits && !s->logits)
        s->logits = moe_source_calloc(n * s->m, sizeof *s->logits, &rc, "token batch");
    if (s->k_rec > 0 && !s->choices)
        s->choices = moe_source_calloc(n * s->k_rec, sizeof *s->choices, &rc, "token batch");
    if (s->has_choice_w && !s->choice_w)
        s->choice_w = moe_source_calloc(n * s->k_rec, sizeof *s->choice_w, &rc, "token batch");
    return rc;
}

int moe_source_open(const char *kind, const moe_kv *params, int nparams, int n, int d, int m,
                    uint64_t seed, moe_source **out)
{
    *out = NULL;
    const moe_source_type *t = moe_source_find(kind);
    if (!t)
        return unknown_source(kind);
    if (n < 1 || d < 1 || m < 0 || nparams < 0)
        return moe_fail(MOE_EINVAL, NULL,
                        "source %s needs n >= 1 tokens, d >= 1, M >= 0 (n = %d, d = %d, M = %d)",
                        kind, n, d, m);
    moe_source *s = calloc(1, sizeof *s);
    if (!s)
        return moe_fail(MOE_ENOMEM, NULL, "out of memory (source %s)", kind);
    s->type = t;
    s->n = n;
    s->d = d;
    s->m = m;
    s->seed = seed;
    for (int i = 0; t->params[i].key && i < MOE_SP_MAX; i++) {
        s->val[i].num = t->params[i].def_num;
        s->val[i].str = t->params[i].def;
    }
    int rc = MOE_OK;
    for (int i = 0; i < nparams && !rc; i++)
        rc = set_param(s, &params[i]);
    if (!rc)
        s->vocab = (long)moe_source_num(s, "vocab");
    int recorded = (t->flags & MOE_SOURCE_RECORDED) != 0;
    if (!rc && !recorded && m < 1)
        rc = moe_fail(MOE_EINVAL, "give the layer's number of logit columns",
                      "source %s needs M >= 1 logit columns (M = %d)", kind, m);
    if (!rc)
        s->rng = moe_rng_alloc(seed, MOE_STREAM_TOKENS);
    if (!rc && !s->rng)
        rc = MOE_ENOMEM;
    if (!rc)
        rc = t->open(s);
    /* a recorded source fixes M: its batches have M = required_m whatever m was asked for;
     * the caller compares moe_source_required_m with its layer */
    if (!rc && s->required_m > 0)
        s->m = s->required_m;
    if (!rc && recorded && s->m < 1)
        rc = moe_fail(MOE_EINVAL, "give logits, or the layer's number of logit columns",
                      "source %s needs M >= 1 logit columns (M = %d)", kind, m);
    if (!rc)
        rc = make_gate(s);
    if (rc) {
        moe_source_close(s);
        return rc;
    }
    *out = s;
    return MOE_OK;
}

int moe_source_batch(moe_source *s, int b, moe_batch *out)
{
    if (b < 0)
        return moe_fail(MOE_EINVAL, NULL, "batch number %d is negative (source %s)", b,
                        s->type->name);
    int rc = alloc_buffers(s);
    if (rc)
        return rc;
    moe_source_reseed(s->rng, s->seed, MOE_STREAM_TOKENS + 16 * (uint64_t)b);
    if ((rc = s->type->batch(s, b)))
        return rc;
    /* every field: a source has no draws files (gumbel_u, rts_u NULL) */
    *out = (moe_batch){.n = s->n, .d = s->d, .m = s->m, .x = s->x, .ids = s->ids,
                       .logits = s->logits, .choices = s->choices, .choice_w = s->choice_w,
                       .k_rec = s->k_rec};
    return MOE_OK;
}

void moe_source_take_batch(moe_source *s, float **x, int64_t **ids)
{
    *x = s->x, *ids = s->ids;
    s->x = NULL, s->ids = NULL;
}

const float *moe_source_gate(const moe_source *s) { return s->wg; }

int moe_source_required_m(const moe_source *s) { return s->required_m; }

/* print text word-wrapped at 96 columns, every line indented by indent spaces */
static void print_wrapped(FILE *out, const char *text, int indent)
{
    const int width = 96;
    int col = 0;
    while (*text) {
        size_t w = strcspn(text, " ");
        if (col > indent && col + 1 + (int)w > width) {
            fputc('\n', out);
            col = 0;
        }
        if (col == 0)
            col = fprintf(out, "%*s", indent, "");
        else
            col += fprintf(out, " ");
        col += fprintf(out, "%.*s", (int)w, text);
        text += w;
        while (*text == ' ')
            text++;
    }
    fputc('\n', out);
}

void moe_source_list(FILE *out)
{
    fprintf(out, "Sources. Every batch has x (T,D) and token ids (T); recorded sources also\n"
                 "give affinities (T,M) every router routes on and the recorded choices\n"
                 "(T,Krec) that the replay router replays. Parameters: key, default, allowed\n"
                 "values, meaning.\n");
    for (int i = 0; moe_source_types[i]; i++) {
        const moe_source_type *k = moe_source_types[i];
        fprintf(out, "\n%s\n", k->name);
        print_wrapped(out, k->summary, 4);
        for (int j = 0; k->params[j].key; j++) {
            const moe_source_param *p = &k->params[j];
            char rng[256];
            range_text(p, rng, sizeof rng);
            fprintf(out, "    %-11s default %s; %s%s\n", p->key, p->def,
                    p->kind == MOE_SP_ENUM ? "one of " : "",
                    p->kind == MOE_SP_STR ? "a path" : rng);
            print_wrapped(out, p->help, 16);
        }
    }
    fprintf(out, "\nTrace folders are read from $MOESIM_TRACES (default %s).\n",
            moe_trace_root());
}

