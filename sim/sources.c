/* sources.c: the token sources of source.h behind one parameter table per source (which drives
 * validation and `moesim list sources`): the synthetic generators (gaussian, clustered,
 * zipf_ids, drift, collapsed), drawn through GSL distributions from PCG streams, the npy source
 * and the recorded-trace sources (readers and the affinity formula in traces.c, trace.h).
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
#include "npy.h"
#include "trace.h"

#include <errno.h>
#include <gsl/gsl_randist.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

/* ---- parameter tables --------------------------------------------------------------------- */

enum { P_NUM, P_INT, P_ENUM, P_STR };

typedef struct {
    const char *key;
    int type;
    const char *def;     /* default as shown by `moesim list sources` */
    double def_num;      /* numeric default; for clusters -1 = M */
    double lo, hi;       /* bounds (numbers and integers) */
    int lo_open;         /* lo itself is excluded */
    const char *choices; /* enum values "a|b" */
    const char *help;
} param_def;

#define MAXP 12
#define BIG 1e300

#define P_VOCAB(def, dn, hi)                                                                  \
    {"vocab", P_INT, def, dn, 1, hi, 0, NULL, "token ids lie in 0..vocab-1"}
#define P_SIGMA(help) {"sigma", P_NUM, "1", 1, 0, BIG, 1, NULL, help}
#define P_GATE_SCALE                                                                          \
    {"gate_scale", P_NUM, "1", 1, 0, BIG, 1, NULL, "multiplies the gate matrix Wg"}
#define P_CLUSTER_PARAMS                                                                      \
    {"clusters", P_INT, "M", -1, 1, 1 << 20, 0, NULL, "number of mixture components"},        \
    {"radius", P_NUM, "3", 3, 0, BIG, 0, NULL,                                                \
     "cluster centres lie on the sphere of this radius"},                                     \
    P_SIGMA("standard deviation of every coordinate around its centre"),                      \
    {"weights", P_ENUM, "zipf", 0, 0, 0, 0, "zipf|dirichlet",                                 \
     "cluster weights: w_i ~ (i+1)^-zipf_s, or Dirichlet(alpha) drawn once"},                  \
    {"zipf_s", P_NUM, "1.2", 1.2, 0, 100, 0, NULL, "Zipf exponent of the cluster weights"},    \
    {"alpha", P_NUM, "0.5", 0.5, 0, 1e6, 1, NULL, "Dirichlet concentration of the weights"},   \
    P_VOCAB("32000", 32000, 2147483647.0),                                                     \
    {"gate", P_ENUM, "random", 0, 0, 0, 0, "random|aligned",                                   \
     "Wg N(0, 1/D), or column e = unit centre (e mod clusters) + N(0, gate_noise^2/D)"},       \
    P_GATE_SCALE,                                                                              \
    {"gate_noise", P_NUM, "0.1", 0.1, 0, BIG, 0, NULL, "noise of the aligned gate columns"}
#define P_TRACE(layer_def, layer_dn)                                                          \
    {"layer", P_INT, layer_def, layer_dn, 0, MOE_TRACE_MAX_LAYERS - 1, 0, NULL,                \
     "model layer, numbered as the trace numbers it"},                                        \
    {"max_tokens", P_INT, "65536", 65536, 1, 1e9, 0, NULL, "read at most this many tokens"}

static const param_def gaussian_params[] = {
    P_SIGMA("standard deviation of every coordinate"),
    P_VOCAB("32000", 32000, 2147483647.0),
    P_GATE_SCALE,
    {NULL, 0, NULL, 0, 0, 0, 0, NULL, NULL},
};
static const param_def clustered_params[] = {
    P_CLUSTER_PARAMS,
    {NULL, 0, NULL, 0, 0, 0, 0, NULL, NULL},
};
static const param_def drift_params[] = {
    P_CLUSTER_PARAMS,
    {"drift_step", P_INT, "1", 1, 0, 1 << 30, 0, NULL,
     "the weight ranking rotates by this many clusters per batch"},
    {NULL, 0, NULL, 0, 0, 0, 0, NULL, NULL},
};
static const param_def zipf_params[] = {
    P_VOCAB("32000", 32000, 16777216.0),
    {"zipf_s", P_NUM, "1.1", 1.1, 0, 100, 0, NULL, "Zipf exponent: P(id = i) ~ (i+1)^-zipf_s"},
    P_SIGMA("standard deviation of the embedding coordinates"),
    P_GATE_SCALE,
    {NULL, 0, NULL, 0, 0, 0, 0, NULL, NULL},
};
static const param_def collapsed_params[] = {
    {"collapse", P_NUM, "0.9", 0.9, 0, 1, 0, NULL,
     "share of the norm along u: x = collapse*sigma*sqrt(D) u + N(0, (1-collapse^2) sigma^2 I)"},
    P_SIGMA("overall scale: E|x|^2 = D sigma^2"),
    P_VOCAB("32000", 32000, 2147483647.0),
    P_GATE_SCALE,
    {NULL, 0, NULL, 0, 0, 0, 0, NULL, NULL},
};
static const param_def npy_params[] = {
    {"logits", P_STR, "none", 0, 0, 0, 0, NULL, ".npy (N,M) or (L,N,M) float: routed as given"},
    {"hidden", P_STR, "none", 0, 0, 0, 0, NULL,
     ".npy (N,D) or (L,N,D) float: hidden states (else Gaussian rows)"},
    {"ids", P_STR, "none", 0, 0, 0, 0, NULL, ".npy (N) or (L,N) int: token ids (else uniform)"},
    {"layer", P_INT, "0", 0, 0, 1 << 20, 0, NULL, "index along a leading layer axis"},
    P_VOCAB("32000", 32000, 2147483647.0),
    P_GATE_SCALE,
    {NULL, 0, NULL, 0, 0, 0, 0, NULL, NULL},
};
static const param_def deepseek_params[] = {
    {"path", P_STR, "$MOESIM_TRACES/deepseek-v2-lite-moebeyond", 0, 0, 0, 0, NULL,
     "a prompt_*_data.csv file or a folder of them (and of subfolders)"},
    P_TRACE("1", 1),
    P_VOCAB("102400", 102400, 2147483647.0),
    {NULL, 0, NULL, 0, 0, 0, 0, NULL, NULL},
};
static const param_def mixtral_params[] = {
    {"path", P_STR, "$MOESIM_TRACES/mixtral-8x7b-instruct-fp8-specmoe", 0, 0, 0, 0, NULL,
     "a .jsonl routing log, or a folder (its *_routing.jsonl files)"},
    P_TRACE("0", 0),
    P_VOCAB("32000", 32000, 2147483647.0),
    {NULL, 0, NULL, 0, 0, 0, 0, NULL, NULL},
};
static const param_def flame_params[] = {
    {"path", P_STR, "$MOESIM_TRACES/flame-moe-290m-dynande", 0, 0, 0, 0, NULL,
     "a folder of *layer<L>*.csv.gz files, or one file (read whatever its layer)"},
    P_TRACE("2", 2),
    P_VOCAB("32000", 32000, 2147483647.0),
    {NULL, 0, NULL, 0, 0, 0, 0, NULL, NULL},
};
static const param_def popularity_params[] = {
    {"path", P_STR, "from model and subject", 0, 0, 0, 0, NULL,
     "an expert_popularity_*.json file; default $MOESIM_TRACES/mixtral-8x7b-fiddler-popularity/"
     "mixtral_8x7b_<model>/expert_popularity_<subject>.json, else the same file under "
     "experiments/data/mixtral-8x7b-popularity"},
    {"model", P_ENUM, "instruct", 0, 0, 0, 0, "instruct|original",
     "mixtral_8x7b_instruct or mixtral_8x7b_original"},
    {"subject", P_ENUM, "high_school_us_history", 0, 0, 0, 0,
     "college_computer_science|college_medicine|high_school_biology|high_school_mathematics|"
     "high_school_us_history|international_law|machine_learning",
     "MMLU subject of the counts"},
    {"layer", P_INT, "0", 0, 0, MOE_TRACE_MAX_LAYERS - 1, 0, NULL, "model layer 0..31"},
    P_VOCAB("32000", 32000, 2147483647.0),
    {NULL, 0, NULL, 0, 0, 0, 0, NULL, NULL},
};

/* ---- the source ---------------------------------------------------------------------------- */

typedef struct {
    double num;
    const char *str;   /* enum or string value (points into the caller's moe_kv or the table) */
    const moe_kv *kv;  /* where it was set; NULL = default */
} pval;

typedef struct source_kind source_kind;

struct moe_source {
    const source_kind *kind;
    int n, d, m;           /* T, D, M */
    uint64_t seed;
    pval val[MAXP];
    int required_m;
    /* batch buffers (allocated once at open) */
    float *x;              /* (T,D) */
    int64_t *ids;          /* (T) */
    double *logits;        /* (T,M) recorded sources, else NULL */
    int32_t *choices;      /* (T,Krec) */
    double *choice_w;      /* (T,Krec) */
    int k_rec;
    float *wg;             /* (D,M) */
    gsl_rng *rng;          /* token stream, reseeded per batch */
    gsl_rng *emb;          /* zipf_ids embeddings, reseeded per id */
    long vocab;
    double sigma;
    /* clustered, drift */
    int K;                 /* clusters */
    double *dir;           /* (K,D) unit centre directions */
    double radius;
    double *w;             /* (K) cluster weights */
    gsl_ran_discrete_t *wtab;
    long drift_step;
    /* zipf_ids */
    double *cdf;           /* (vocab) */
    /* collapsed */
    double *u;             /* (D) unit direction */
    double collapse;
    /* recorded: npy and traces */
    moe_rec rec;
    /* trace_mixtral_popularity */
    int pop_E;
    double *pop_w;         /* (E) counts of the layer */
    gsl_ran_discrete_t **pop_tab; /* (E+1): [0] all experts, [1+e] all but e (NULL if unused) */
};

struct source_kind {
    const char *name;
    const char *summary;
    const param_def *params;
    int (*open)(moe_source *s);
    int (*batch)(moe_source *s, int b);
};

/* ---- parameters ---------------------------------------------------------------------------- */

static int pindex(const source_kind *k, const char *key)
{
    for (int i = 0; k->params[i].key; i++)
        if (strcmp(k->params[i].key, key) == 0)
            return i;
    return -1;
}

static int has_param(const moe_source *s, const char *key) { return pindex(s->kind, key) >= 0; }
static double pnum(const moe_source *s, const char *key)
{
    return s->val[pindex(s->kind, key)].num;
}
static const char *pstr(const moe_source *s, const char *key)
{
    return s->val[pindex(s->kind, key)].str;
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
        snprintf(buf, len, "source %s, key %s", s->kind->name, key);
}

/* moe_fail(MOE_EINVAL, hint, "<what> (<where>, key <key>)") for parameter key. */
static int pfail(const moe_source *s, const char *key, const char *hint, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int pfail(const moe_source *s, const char *key, const char *hint, const char *fmt, ...)
{
    char what[512], loc[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    int i = pindex(s->kind, key);
    where(s, i >= 0 ? s->val[i].kv : NULL, key, loc, sizeof loc);
    return moe_fail(MOE_EINVAL, hint, "%s (%s)", what, loc);
}

static void range_text(const param_def *p, char *buf, size_t len)
{
    if (p->type == P_ENUM)
        snprintf(buf, len, "%s", p->choices);
    else if (p->type == P_STR)
        snprintf(buf, len, "path");
    else if (p->hi >= BIG)
        snprintf(buf, len, "%s %g", p->lo_open ? ">" : ">=", p->lo);
    else if (p->type == P_INT)
        snprintf(buf, len, "%.0f..%.0f", p->lo, p->hi);
    else
        snprintf(buf, len, "%s%g..%g%s", p->lo_open ? "(" : "", p->lo, p->hi,
                 p->lo_open ? "]" : "");
}

static int set_param(moe_source *s, const moe_kv *kv)
{
    char loc[256];
    where(s, kv, kv->key ? kv->key : "(null)", loc, sizeof loc);
    int i = kv->key ? pindex(s->kind, kv->key) : -1;
    if (i < 0) {
        char keys[512];
        size_t o = 0;
        keys[0] = '\0';
        for (int j = 0; s->kind->params[j].key && o < sizeof keys; j++)
            o += (size_t)snprintf(keys + o, sizeof keys - o, "%s%s", j ? ", " : "",
                                  s->kind->params[j].key);
        char hint[600];
        snprintf(hint, sizeof hint, "parameters of source %s: %s", s->kind->name, keys);
        return moe_fail(MOE_EINVAL, hint, "unknown parameter '%s' for source %s (%s)",
                        kv->key ? kv->key : "(null)", s->kind->name, loc);
    }
    const param_def *p = &s->kind->params[i];
    const char *v = kv->value ? kv->value : "";
    char rng[256];
    range_text(p, rng, sizeof rng);
    if (p->type == P_NUM || p->type == P_INT) {
        char *end;
        errno = 0;
        double x = strtod(v, &end);
        if (end == v || *end || errno || !isfinite(x))
            return moe_fail(MOE_EINVAL, NULL, "%s = '%s' is not a number (%s)", p->key, v, loc);
        if (p->type == P_INT && x != floor(x))
            return moe_fail(MOE_EINVAL, NULL, "%s = '%s' is not an integer (%s)", p->key, v, loc);
        if (x < p->lo || (p->lo_open && x == p->lo) || x > p->hi)
            return moe_fail(MOE_EINVAL, NULL, "%s = %s is out of range: want %s (%s)", p->key, v,
                            rng, loc);
        s->val[i].num = x;
    } else if (p->type == P_ENUM) {
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

static void *alloc_n(size_t count, size_t size, int *rc, const char *what)
{
    if (*rc)
        return NULL;
    void *p = calloc(count ? count : 1, size);
    if (!p)
        *rc = moe_fail(MOE_ENOMEM, NULL, "out of memory (%s)", what);
    return p;
}

/* Reseed a gsl_rng running PCG32 to (seed, stream) without allocating. */
static void reseed(gsl_rng *r, uint64_t seed, uint64_t stream)
{
    moe_pcg32_seed(gsl_rng_state(r), seed, stream);
}

static void fill_ids_uniform(moe_source *s)
{
    for (int t = 0; t < s->n; t++)
        s->ids[t] = (int64_t)gsl_rng_uniform_int(s->rng, (unsigned long)s->vocab);
}

static void fill_x_gaussian(moe_source *s, double sigma)
{
    size_t nd = (size_t)s->n * s->d;
    for (size_t i = 0; i < nd; i++)
        s->x[i] = (float)gsl_ran_gaussian_ziggurat(s->rng, sigma);
}

/* ---- gaussian ------------------------------------------------------------------------------ */

static int gaussian_open(moe_source *s)
{
    s->sigma = pnum(s, "sigma");
    return MOE_OK;
}

static int gaussian_batch(moe_source *s, int b)
{
    (void)b;
    fill_x_gaussian(s, s->sigma);
    fill_ids_uniform(s);
    return MOE_OK;
}

/* ---- clustered and drift ------------------------------------------------------------------- */

static int clustered_open(moe_source *s)
{
    int rc = MOE_OK;
    double kk = pnum(s, "clusters");
    s->K = kk < 0 ? s->m : (int)kk;
    s->radius = pnum(s, "radius");
    s->sigma = pnum(s, "sigma");
    s->drift_step = has_param(s, "drift_step") ? (long)pnum(s, "drift_step") : 0;
    s->dir = alloc_n((size_t)s->K * s->d, sizeof *s->dir, &rc, "cluster centres");
    s->w = alloc_n((size_t)s->K, sizeof *s->w, &rc, "cluster weights");
    if (rc)
        return rc;
    gsl_rng *rp = moe_rng_alloc(s->seed, MOE_STREAM_SOURCE_PARAM);
    if (!rp)
        return MOE_ENOMEM;
    for (int c = 0; c < s->K; c++)
        gsl_ran_dir_nd(rp, (size_t)s->d, s->dir + (size_t)c * s->d);
    gsl_rng_free(rp);
    if (strcmp(pstr(s, "weights"), "dirichlet") == 0) {
        double *alpha = alloc_n((size_t)s->K, sizeof *alpha, &rc, "Dirichlet parameters");
        gsl_rng *rd = rc ? NULL : moe_rng_alloc(s->seed, MOE_STREAM_SOURCE_PARAM + 16);
        if (!rc && !rd)
            rc = MOE_ENOMEM;
        if (!rc) {
            for (int c = 0; c < s->K; c++)
                alpha[c] = pnum(s, "alpha");
            gsl_ran_dirichlet(rd, (size_t)s->K, alpha, s->w);
        }
        gsl_rng_free(rd);
        free(alpha);
        if (rc)
            return rc;
        double sum = 0.0;
        for (int c = 0; c < s->K; c++)
            sum += s->w[c];
        if (!(sum > 0.0) || !isfinite(sum))
            return pfail(s, "alpha", "use a larger alpha", "Dirichlet weights underflowed");
    } else {
        double zs = pnum(s, "zipf_s");
        for (int c = 0; c < s->K; c++)
            s->w[c] = pow(c + 1.0, -zs);
    }
    s->wtab = gsl_ran_discrete_preproc((size_t)s->K, s->w);
    if (!s->wtab)
        return moe_fail(MOE_ENOMEM, NULL, "cannot tabulate the cluster weights (source %s)",
                        s->kind->name);
    return MOE_OK;
}

static int clustered_batch(moe_source *s, int b)
{
    const int D = s->d, K = s->K;
    const long shift = (long)(((long long)b * (s->drift_step % K)) % K);
    for (int t = 0; t < s->n; t++) {
        long i = (long)gsl_ran_discrete(s->rng, s->wtab);
        long c = (i + shift) % K; /* drift: cluster (i + b*drift_step) mod K gets weight w_i */
        const double *dir = s->dir + (size_t)c * D;
        float *x = s->x + (size_t)t * D;
        for (int j = 0; j < D; j++)
            x[j] = (float)(s->radius * dir[j] + gsl_ran_gaussian_ziggurat(s->rng, s->sigma));
    }
    fill_ids_uniform(s);
    return MOE_OK;
}

/* ---- zipf_ids ------------------------------------------------------------------------------ */

/* Zipf by inverse CDF (GSL has no Zipf sampler): cdf[i] = sum_{j<=i} (j+1)^-s / H, the last
 * entry set to 1; id = the first i with cdf[i] > u, u ~ U[0,1) from the token stream. */
static int zipf_open(moe_source *s)
{
    int rc = MOE_OK;
    s->sigma = pnum(s, "sigma");
    s->cdf = alloc_n((size_t)s->vocab, sizeof *s->cdf, &rc, "Zipf table");
    if (rc)
        return rc;
    double zs = pnum(s, "zipf_s"), acc = 0.0;
    for (long i = 0; i < s->vocab; i++) {
        acc += pow(i + 1.0, -zs);
        s->cdf[i] = acc;
    }
    for (long i = 0; i < s->vocab; i++)
        s->cdf[i] /= acc;
    s->cdf[s->vocab - 1] = 1.0;
    s->emb = moe_rng_alloc(s->seed, MOE_STREAM_SOURCE_PARAM);
    return s->emb ? MOE_OK : MOE_ENOMEM;
}

static int zipf_batch(moe_source *s, int b)
{
    (void)b;
    const int D = s->d;
    for (int t = 0; t < s->n; t++) {
        double u = gsl_rng_uniform(s->rng);
        long lo = 0, hi = s->vocab - 1; /* first i with cdf[i] > u */
        while (lo < hi) {
            long mid = lo + (hi - lo) / 2;
            if (s->cdf[mid] > u)
                hi = mid;
            else
                lo = mid + 1;
        }
        s->ids[t] = lo;
        /* the embedding row of id lo: its own stream, so repeated ids repeat exactly */
        reseed(s->emb, s->seed, MOE_STREAM_SOURCE_PARAM + 16 * ((uint64_t)lo + 2));
        float *x = s->x + (size_t)t * D;
        for (int j = 0; j < D; j++)
            x[j] = (float)gsl_ran_gaussian_ziggurat(s->emb, s->sigma);
    }
    return MOE_OK;
}

/* ---- collapsed ----------------------------------------------------------------------------- */

static int collapsed_open(moe_source *s)
{
    int rc = MOE_OK;
    s->collapse = pnum(s, "collapse");
    s->sigma = pnum(s, "sigma");
    s->u = alloc_n((size_t)s->d, sizeof *s->u, &rc, "collapse direction");
    if (rc)
        return rc;
    gsl_rng *rp = moe_rng_alloc(s->seed, MOE_STREAM_SOURCE_PARAM);
    if (!rp)
        return MOE_ENOMEM;
    gsl_ran_dir_nd(rp, (size_t)s->d, s->u);
    gsl_rng_free(rp);
    return MOE_OK;
}

/* x = a u + N(0, s^2 I) with a = collapse sigma sqrt(D), s = sqrt(1 - collapse^2) sigma:
 * E|x|^2 = D sigma^2 and cos(x, u) -> collapse as D grows. */
static int collapsed_batch(moe_source *s, int b)
{
    (void)b;
    const int D = s->d;
    const double a = s->collapse * s->sigma * sqrt((double)D);
    const double sd = sqrt(1.0 - s->collapse * s->collapse) * s->sigma;
    for (int t = 0; t < s->n; t++) {
        float *x = s->x + (size_t)t * D;
        for (int j = 0; j < D; j++)
            x[j] = (float)(a * s->u[j] + gsl_ran_gaussian_ziggurat(s->rng, sd));
    }
    fill_ids_uniform(s);
    return MOE_OK;
}

/* ---- recorded rows: npy and traces ----------------------------------------------------------- */

/* Batch b takes rows (b*T + t) mod N: batches cycle through the recorded rows. */
static int recorded_batch(moe_source *s, int b)
{
    const moe_rec *r = &s->rec;
    const long N = r->n;
    const int T = s->n, M = s->m, K = r->K;
    long start = (long)(((long long)(b % N) * (T % N)) % N);
    if (!r->x)
        fill_x_gaussian(s, 1.0);
    if (!r->ids)
        fill_ids_uniform(s);
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

/* One .npy input of the npy source: (N,W) or (L,N,W) (vectors: (N) or (L,N)); selects the
 * layer and returns the rows N and width W. */
/* "logits L.npy": names an npy source's input and its file in conversion errors */
static const char *npy_what(const moe_source *s, const char *key)
{
    static _Thread_local char buf[4200];
    snprintf(buf, sizeof buf, "%s %s", key, pstr(s, key));
    return buf;
}

static int npy_input(moe_source *s, const char *key, int vec, moe_npy *a, size_t *off,
                     long *N, long *W, int *layered)
{
    const char *path = pstr(s, key);
    int rc = moe_npy_read(path, a);
    if (rc)
        return rc;
    int base = vec ? 1 : 2;
    if (a->ndim != base && a->ndim != base + 1)
        return pfail(s, key, vec ? "token ids are (N) or (L,N)" : "arrays are (N,W) or (L,N,W)",
                     "%s has %d dimensions, want %d or %d (%s)", key, a->ndim, base, base + 1,
                     path);
    *layered = a->ndim == base + 1;
    long layer = (long)pnum(s, "layer");
    size_t L = *layered ? a->shape[0] : 1;
    if (*layered && (size_t)layer >= L)
        return pfail(s, "layer", NULL, "layer %ld is outside the %zu layers of %s", layer, L,
                     path);
    *N = (long)a->shape[*layered];
    *W = vec ? 1 : (long)a->shape[*layered + 1];
    if (*N <= 0 || *W <= 0)
        return pfail(s, key, NULL, "%s is empty (%s)", key, path);
    *off = *layered ? (size_t)layer * (size_t)*N * (size_t)*W : 0;
    return MOE_OK;
}

static int npy_open(moe_source *s)
{
    static const char *const keys[3] = {"logits", "hidden", "ids"};
    moe_npy a[3];
    memset(a, 0, sizeof a);
    long N = -1, rows[3] = {0}, W[3] = {0};
    size_t off[3] = {0};
    int rc = MOE_OK, any = 0, layered = 0;
    for (int i = 0; i < 3 && !rc; i++) {
        if (!s->val[pindex(s->kind, keys[i])].kv)
            continue;
        any = 1;
        int lay = 0;
        rc = npy_input(s, keys[i], i == 2, &a[i], &off[i], &rows[i], &W[i], &lay);
        layered |= lay;
        if (!rc && N >= 0 && rows[i] != N)
            rc = pfail(s, keys[i], "logits, hidden and ids describe the same tokens",
                       "%s has %ld rows, the other arrays %ld", keys[i], rows[i], N);
        if (!rc)
            N = rows[i];
    }
    if (!rc && !any)
        rc = moe_fail(MOE_EINVAL, "e.g. logits = L.npy",
                      "source npy needs at least one of logits, hidden, ids (source npy)");
    if (!rc && !layered && pnum(s, "layer") != 0)
        rc = pfail(s, "layer", NULL, "no array has a leading layer axis");
    moe_rec *r = &s->rec;
    r->n = N;
    if (!rc && a[0].data) { /* logits */
        double *all = NULL;
        rc = moe_npy_as_double(&a[0], npy_what(s, "logits"), &all);
        if (!rc) {
            r->E = (int)W[0];
            r->logits = malloc((size_t)N * r->E * sizeof *r->logits);
            if (!r->logits)
                rc = moe_fail(MOE_ENOMEM, NULL, "out of memory (%s)", pstr(s, "logits"));
            else
                memcpy(r->logits, all + off[0], (size_t)N * r->E * sizeof *r->logits);
            for (size_t i = 0; !rc && i < (size_t)N * r->E; i++)
                if (!isfinite(r->logits[i]))
                    rc = pfail(s, "logits", "logits must be finite",
                               "non-finite logit at row %zu, column %zu of %s", i / r->E,
                               i % r->E, pstr(s, "logits"));
        }
        free(all);
        s->required_m = r->E;
    }
    if (!rc && a[1].data) { /* hidden */
        float *all = NULL;
        if (W[1] != s->d)
            rc = pfail(s, "hidden", "set the layer shape's d to the width of the hidden states",
                       "hidden states have width %ld but the layer has d = %d (%s)", W[1], s->d,
                       pstr(s, "hidden"));
        if (!rc)
            rc = moe_npy_as_float(&a[1], npy_what(s, "hidden"), &all);
        if (!rc) {
            r->d = s->d;
            r->x = malloc((size_t)N * s->d * sizeof *r->x);
            if (!r->x)
                rc = moe_fail(MOE_ENOMEM, NULL, "out of memory (%s)", pstr(s, "hidden"));
            else
                memcpy(r->x, all + off[1], (size_t)N * s->d * sizeof *r->x);
        }
        free(all);
    }
    if (!rc && a[2].data) { /* ids */
        int64_t *all = NULL;
        rc = moe_npy_as_int64(&a[2], npy_what(s, "ids"), &all);
        if (!rc) {
            r->ids = malloc((size_t)N * sizeof *r->ids);
            if (!r->ids)
                rc = moe_fail(MOE_ENOMEM, NULL, "out of memory (%s)", pstr(s, "ids"));
            else
                memcpy(r->ids, all + off[2], (size_t)N * sizeof *r->ids);
            for (long i = 0; !rc && i < N; i++)
                if (r->ids[i] < 0)
                    rc = pfail(s, "ids", NULL, "negative token id %lld at row %ld of %s",
                               (long long)r->ids[i], i, pstr(s, "ids"));
        }
        free(all);
    }
    for (int i = 0; i < 3; i++)
        moe_npy_free(&a[i]);
    return rc;
}

/* ---- recorded traces ------------------------------------------------------------------------- */

static const char *const trace_folder[4] = {
    "deepseek-v2-lite-moebeyond", "mixtral-8x7b-instruct-fp8-specmoe", "flame-moe-290m-dynande",
    "mixtral-8x7b-fiddler-popularity"};

static int trace_open(moe_source *s, int format)
{
    char def[4096];
    const char *path = pstr(s, "path");
    if (!s->val[pindex(s->kind, "path")].kv) {
        snprintf(def, sizeof def, "%s/%s", moe_trace_root(), trace_folder[format]);
        path = def;
    }
    int rc = moe_trace_load(format, path, (int)pnum(s, "layer"), (long)pnum(s, "max_tokens"),
                            s->vocab, &s->rec);
    if (rc)
        return rc;
    s->required_m = s->rec.E;
    return MOE_OK;
}

static int deepseek_open(moe_source *s) { return trace_open(s, MOE_TRACE_DEEPSEEK); }
static int mixtral_open(moe_source *s) { return trace_open(s, MOE_TRACE_MIXTRAL); }
static int flame_open(moe_source *s) { return trace_open(s, MOE_TRACE_FLAME); }

/* Inclusion probabilities of successive sampling of 2 without replacement with weights w
 * (sum 1): pi_e = w_e + sum_{i != e} w_i w_e / (1 - w_i). */
static void successive_pi(const double *w, int E, double *pi)
{
    for (int e = 0; e < E; e++) {
        pi[e] = w[e];
        for (int i = 0; i < E; i++)
            if (i != e && w[i] < 1.0)
                pi[e] += w[i] * w[e] / (1.0 - w[i]);
    }
}

/* Weights w whose successive-sampling inclusion probabilities equal target (sum 2): the
 * fixed point of w_e <- w_e target_e / pi_e (renormalised), from w = target / 2. It converges
 * within a few dozen steps on the Fiddler counts (to 1e-13); an expert chosen by every token
 * (target 1) is only reached in the limit, so at most 1000 steps are taken. */
static void calibrate_successive(double *w, const double *target, int E)
{
    double pi[MOE_TRACE_MAX_LAYERS];
    for (int it = 0; it < 1000 && E <= MOE_TRACE_MAX_LAYERS; it++) {
        successive_pi(w, E, pi);
        double err = 0.0, sum = 0.0;
        for (int e = 0; e < E; e++)
            err = fmax(err, fabs(pi[e] - target[e]));
        if (err < 1e-13)
            break;
        for (int e = 0; e < E; e++) {
            w[e] = pi[e] > 0.0 ? w[e] * target[e] / pi[e] : 0.0;
            sum += w[e];
        }
        for (int e = 0; e < E; e++)
            w[e] /= sum;
    }
}

/* Popularity counts: the file under $MOESIM_TRACES, else the copy in experiments/data. */
static int popularity_open(moe_source *s)
{
    char buf[4096];
    const char *path = pstr(s, "path");
    if (!s->val[pindex(s->kind, "path")].kv) {
        const char *rel = "%s/mixtral_8x7b_%s/expert_popularity_%s.json";
        char tail[512];
        snprintf(tail, sizeof tail, rel, "", pstr(s, "model"), pstr(s, "subject"));
        snprintf(buf, sizeof buf, "%s/%s%s", moe_trace_root(), trace_folder[3], tail);
        FILE *f = fopen(buf, "r");
        char shipped[600];
        snprintf(shipped, sizeof shipped, "experiments/data/mixtral-8x7b-popularity%s", tail);
        if (f)
            fclose(f);
        else if (moe_data_path(shipped, buf, sizeof buf))
            return MOE_EIO;
        path = buf;
    }
    int L, E;
    long *counts;
    int rc = moe_trace_popularity_read(path, &L, &E, &counts);
    if (rc)
        return rc;
    int layer = (int)pnum(s, "layer"), nz = 0;
    if (layer >= L) {
        free(counts);
        return pfail(s, "layer", NULL, "layer %d is not in the trace, which holds layers 0..%d",
                     layer, L - 1);
    }
    s->pop_E = E;
    s->required_m = E;
    s->pop_w = malloc((size_t)E * sizeof *s->pop_w);
    s->pop_tab = calloc((size_t)E + 1, sizeof *s->pop_tab);
    if (!s->pop_w || !s->pop_tab) {
        free(counts);
        return moe_fail(MOE_ENOMEM, NULL, "out of memory (%s)", path);
    }
    double sum = 0.0;
    for (int e = 0; e < E; e++) {
        s->pop_w[e] = (double)counts[(size_t)layer * E + e];
        sum += s->pop_w[e];
        nz += s->pop_w[e] > 0;
    }
    free(counts);
    if (nz < 2)
        return pfail(s, "layer", NULL,
                     "layer %d has %d experts with non-zero counts; top-2 sampling needs 2 (%s)",
                     layer, nz, path);
    double *target = malloc((size_t)E * sizeof *target);
    if (!target)
        return moe_fail(MOE_ENOMEM, NULL, "out of memory (%s)", path);
    for (int e = 0; e < E; e++) {
        target[e] = 2.0 * s->pop_w[e] / sum; /* recorded P(token chooses e) */
        s->pop_w[e] /= sum;
    }
    calibrate_successive(s->pop_w, target, E);
    free(target);
    s->pop_tab[0] = gsl_ran_discrete_preproc((size_t)E, s->pop_w);
    rc = s->pop_tab[0] ? MOE_OK : MOE_ENOMEM;
    for (int e = 0; e < E && !rc; e++) {
        if (s->pop_w[e] <= 0)
            continue;
        double keep = s->pop_w[e];
        s->pop_w[e] = 0.0;
        s->pop_tab[1 + e] = gsl_ran_discrete_preproc((size_t)E, s->pop_w);
        s->pop_w[e] = keep;
        if (!s->pop_tab[1 + e])
            rc = MOE_ENOMEM;
    }
    if (rc)
        return moe_fail(MOE_ENOMEM, NULL, "cannot tabulate the popularity counts (%s)", path);
    s->rec.K = 2;
    return MOE_OK;
}

/* Two experts per token without replacement (successive draws: the first from all experts,
 * the second from the rest, each proportional to the calibrated weights, which make every
 * expert's chance of being chosen equal its recorded share 2 c_e / sum c, so the recorded
 * per-expert counts are reproduced in expectation); affinities by draw order. */
static int popularity_batch(moe_source *s, int b)
{
    (void)b;
    const int E = s->pop_E;
    for (int t = 0; t < s->n; t++) {
        int32_t *ch = s->choices + (size_t)t * 2;
        ch[0] = (int32_t)gsl_ran_discrete(s->rng, s->pop_tab[0]);
        ch[1] = (int32_t)gsl_ran_discrete(s->rng, s->pop_tab[1 + ch[0]]);
        moe_trace_affinity(E, 2, ch, NULL, NULL, 1, s->logits + (size_t)t * E);
    }
    fill_x_gaussian(s, 1.0);
    fill_ids_uniform(s);
    return MOE_OK;
}

/* ---- the table of sources ----------------------------------------------------------------- */

static const source_kind kinds[] = {
    {"gaussian", "x ~ N(0, sigma^2 I), isotropic; ids uniform over vocab", gaussian_params,
     gaussian_open, gaussian_batch},
    {"clustered",
     "Gaussian mixture: centres on a sphere, weights Zipf or Dirichlet; ids uniform over vocab",
     clustered_params, clustered_open, clustered_batch},
    {"zipf_ids",
     "ids ~ Zipf(zipf_s) over vocab (inverse CDF), x = the id's fixed embedding row (a PCG "
     "stream per id: repeated ids repeat exactly)",
     zipf_params, zipf_open, zipf_batch},
    {"drift",
     "clustered, but at batch b cluster (i + b*drift_step) mod clusters gets weight w_i: the "
     "weight ranking rotates by drift_step clusters per batch; ids uniform over vocab",
     drift_params, clustered_open, clustered_batch},
    {"collapsed", "tokens near one fixed unit direction u; ids uniform over vocab",
     collapsed_params, collapsed_open, collapsed_batch},
    {"npy",
     "recorded NumPy arrays; batches cycle through the rows; x Gaussian and ids uniform over "
     "vocab when not given",
     npy_params, npy_open, recorded_batch},
    {"trace_deepseek",
     "DeepSeek-V2-Lite top-6 ids per token (M = 64); replay: choices, combine 1/6; "
     "affinities: log(1/6) on the 6 chosen, log(1e-4) elsewhere; ids: FNV-1a of the token text "
     "mod vocab; x Gaussian",
     deepseek_params, deepseek_open, recorded_batch},
    {"trace_mixtral",
     "Mixtral-8x7B top-2 ids and gate probabilities per decoded token (M = 8); replay: "
     "choices, combine = recorded gate; affinities: log(gate) on the 2 chosen, log(1e-4) "
     "elsewhere; tokens lacking the layer are skipped; ids uniform, x Gaussian",
     mixtral_params, mixtral_open, recorded_batch},
    {"trace_flame",
     "FLAME-MoE-290M router probabilities per token (M = 64, top-6); replay: choices by "
     "descending p, combine = p; affinities: log p on the 6, the missing mass spread evenly "
     "over the other 58; ids uniform, x Gaussian",
     flame_params, flame_open, recorded_batch},
    {"trace_mixtral_popularity",
     "Mixtral-8x7B per-layer expert counts (M = 8): per token 2 experts sampled without "
     "replacement (seeded; successive draws with weights calibrated so that each expert is "
     "chosen with its recorded probability 2 c_e / sum c); replay combine 1/2; affinities "
     "log(2/3), log(1/3) by draw order, log(1e-4) elsewhere; falls back to "
     "experiments/data/mixtral-8x7b-popularity (Apache-2.0); ids uniform, x Gaussian",
     popularity_params, popularity_open, popularity_batch},
};
enum { NKINDS = sizeof kinds / sizeof kinds[0] };

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
    gsl_rng_free(s->emb);
    free(s->dir);
    free(s->w);
    if (s->wtab)
        gsl_ran_discrete_free(s->wtab);
    free(s->cdf);
    free(s->u);
    moe_rec_clear(&s->rec);
    free(s->pop_w);
    if (s->pop_tab)
        for (int e = 0; e <= s->pop_E; e++)
            if (s->pop_tab[e])
                gsl_ran_discrete_free(s->pop_tab[e]);
    free(s->pop_tab);
    free(s);
}

/* Wg (D,M): N(0, 1/D) from the gate stream, or aligned with the cluster centres. */
static int make_gate(moe_source *s)
{
    int rc = MOE_OK;
    const int D = s->d, M = s->m;
    s->wg = alloc_n((size_t)D * M, sizeof *s->wg, &rc, "gate matrix");
    if (rc)
        return rc;
    gsl_rng *rg = moe_rng_alloc(s->seed, MOE_STREAM_GATE_W);
    if (!rg)
        return MOE_ENOMEM;
    double scale = has_param(s, "gate_scale") ? pnum(s, "gate_scale") : 1.0;
    int aligned = has_param(s, "gate") && strcmp(pstr(s, "gate"), "aligned") == 0;
    double noise = aligned ? pnum(s, "gate_noise") / sqrt((double)D) : 1.0 / sqrt((double)D);
    for (int j = 0; j < D; j++)
        for (int e = 0; e < M; e++) {
            double v = aligned ? s->dir[(size_t)(e % s->K) * D + j] : 0.0;
            if (noise > 0.0)
                v += gsl_ran_gaussian_ziggurat(rg, noise);
            s->wg[(size_t)j * M + e] = (float)(scale * v);
        }
    gsl_rng_free(rg);
    return MOE_OK;
}

int moe_source_open(const char *kind, const moe_kv *params, int nparams, int n, int d, int m,
                    uint64_t seed, moe_source **out)
{
    *out = NULL;
    const source_kind *k = NULL;
    for (int i = 0; i < NKINDS && kind; i++)
        if (strcmp(kinds[i].name, kind) == 0)
            k = &kinds[i];
    if (!k) {
        char names[512];
        size_t o = 0;
        for (int i = 0; i < NKINDS; i++)
            o += (size_t)snprintf(names + o, sizeof names - o, "%s%s", i ? ", " : "",
                                  kinds[i].name);
        return moe_fail(MOE_EINVAL, names, "unknown source '%s' (source)", kind ? kind : "(null)");
    }
    if (n < 1 || d < 1 || m < 0 || nparams < 0)
        return moe_fail(MOE_EINVAL, NULL,
                        "source %s needs n >= 1 tokens, d >= 1, M >= 0 (n = %d, d = %d, M = %d)",
                        kind, n, d, m);
    moe_source *s = calloc(1, sizeof *s);
    if (!s)
        return moe_fail(MOE_ENOMEM, NULL, "out of memory (source %s)", kind);
    s->kind = k;
    s->n = n;
    s->d = d;
    s->m = m;
    s->seed = seed;
    for (int i = 0; k->params[i].key; i++) {
        s->val[i].num = k->params[i].def_num;
        s->val[i].str = k->params[i].def;
    }
    int rc = MOE_OK;
    for (int i = 0; i < nparams && !rc; i++)
        rc = set_param(s, &params[i]);
    if (!rc)
        s->vocab = (long)pnum(s, "vocab");
    int recorded = k->batch == recorded_batch || k->batch == popularity_batch;
    if (!rc && !recorded && m < 1)
        rc = moe_fail(MOE_EINVAL, "give the layer's number of logit columns",
                      "source %s needs M >= 1 logit columns (M = %d)", kind, m);
    if (!rc)
        s->rng = moe_rng_alloc(seed, MOE_STREAM_TOKENS);
    if (!rc && !s->rng)
        rc = MOE_ENOMEM;
    if (!rc)
        rc = k->open(s);
    /* a recorded source fixes M: its batches have M = required_m whatever m was asked for;
     * the caller compares moe_source_required_m with its layer (spec.c, point.c) */
    if (!rc && s->required_m > 0)
        s->m = s->required_m;
    if (!rc && recorded && s->m < 1)
        rc = moe_fail(MOE_EINVAL, "give logits, or the layer's number of logit columns",
                      "source %s needs M >= 1 logit columns (M = %d)", kind, m);
    if (!rc) {
        s->k_rec = s->rec.K;
        s->x = alloc_n((size_t)n * d, sizeof *s->x, &rc, "token batch");
        s->ids = alloc_n((size_t)n, sizeof *s->ids, &rc, "token batch");
        if (s->rec.logits || k->batch == popularity_batch)
            s->logits = alloc_n((size_t)n * s->m, sizeof *s->logits, &rc, "token batch");
        if (s->k_rec > 0)
            s->choices = alloc_n((size_t)n * s->k_rec, sizeof *s->choices, &rc, "token batch");
        if (s->rec.choice_w)
            s->choice_w = alloc_n((size_t)n * s->k_rec, sizeof *s->choice_w, &rc, "token batch");
    }
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
                        s->kind->name);
    reseed(s->rng, s->seed, MOE_STREAM_TOKENS + 16 * (uint64_t)b);
    int rc = s->kind->batch(s, b);
    if (rc)
        return rc;
    out->n = s->n;
    out->d = s->d;
    out->m = s->m;
    out->x = s->x;
    out->ids = s->ids;
    out->logits = s->logits;
    out->choices = s->choices;
    out->choice_w = s->choice_w;
    out->k_rec = s->k_rec;
    return MOE_OK;
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
    for (int i = 0; i < NKINDS; i++) {
        const source_kind *k = &kinds[i];
        fprintf(out, "\n%s\n", k->name);
        print_wrapped(out, k->summary, 4);
        for (int j = 0; k->params[j].key; j++) {
            const param_def *p = &k->params[j];
            char rng[256];
            range_text(p, rng, sizeof rng);
            fprintf(out, "    %-11s default %s; %s%s\n", p->key, p->def,
                    p->type == P_ENUM ? "one of " : "", p->type == P_STR ? "a path" : rng);
            print_wrapped(out, p->help, 16);
        }
    }
    fprintf(out, "\nTrace folders are read from $MOESIM_TRACES (default %s).\n",
            moe_trace_root());
}
