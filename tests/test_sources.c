/* test_sources.c: the synthetic token sources (sim/sources/) against their distributions, in
 * the GSL style: histograms of a sample against the exact pmf/pdf, a bin failing when it lies
 * more than 5 sigma (sqrt(N p (1-p))) from N p; on an outlier the sample is doubled (fresh
 * draws) instead of loosening the bound, twice at most. Also: reproducibility by seed and per
 * batch, repeated ids giving identical rows, drift, collapse, the gate matrix, the npy source
 * and parameter validation. Registry-wide (test_registry, every type of moe_source_types):
 * a documented parameter table with vocab, listed by `moesim list sources`; the same seed gives
 * identical batches and gate, batch b alone equals batch b after the others, another seed
 * other x; batch shapes; an unknown key is an error naming it and where it was written.
 *
 * Documented stream contract used here to rebuild hidden parameters (sim/source.c header):
 * centres and u from (seed, MOE_STREAM_SOURCE_PARAM) through gsl_ran_dir_nd, Dirichlet weights
 * from (seed, MOE_STREAM_SOURCE_PARAM + 16) through gsl_ran_dirichlet. */
#include "check.h"
#include "moe.h"
#include "npy.h"
#include "source.h"

#include <gsl/gsl_cdf.h>
#include <gsl/gsl_randist.h>
#include <string.h>

#define MAXB 128

/* ---- helpers ----------------------------------------------------------------------------- */

static moe_source *open_src(const char *kind, const moe_kv *kv, int nkv, int n, int d, int m,
                            uint64_t seed)
{
    moe_source *s = NULL;
    if (moe_source_open(kind, kv, nkv, n, d, m, seed, &s)) {
        fprintf(stderr, "open %s: %s\n", kind, moe_errmsg());
        moe_clear_error();
        return NULL;
    }
    return s;
}

/* Bins failing the 5-sigma test (a bin of probability 0 must be empty). */
static int bins_bad(const long *cnt, const double *p, int nb, long N, double *worst)
{
    int bad = 0;
    *worst = 0.0;
    for (int i = 0; i < nb; i++) {
        double mu = N * p[i], sd = sqrt(N * p[i] * (1.0 - p[i]));
        double dev = sd > 0 ? fabs(cnt[i] - mu) / sd : (cnt[i] != 0 ? INFINITY : 0.0);
        if (dev > *worst)
            *worst = dev;
        bad += dev > 5.0;
    }
    return bad;
}

/* A sampler fills cnt (nb bins) from a fresh sample of about N draws (attempt selects fresh
 * draws) and returns the number of draws binned. */
typedef long (*sampler)(void *ctx, long N, int attempt, long *cnt);

static void hist_check(const char *what, sampler fn, void *ctx, const double *p, int nb, long N)
{
    long cnt[MAXB];
    for (int attempt = 0; attempt < 3; attempt++, N *= 2) {
        memset(cnt, 0, sizeof cnt);
        long used = fn(ctx, N, attempt, cnt);
        double worst;
        int bad = used > 0 ? bins_bad(cnt, p, nb, used, &worst) : nb;
        if (!bad) {
            CHECK(1, "%s", what);
            return;
        }
        fprintf(stderr, "%s: %d bins beyond 5 sigma (worst %.2f) with N = %ld: doubling N\n", what,
                bad, worst, used);
    }
    CHECK(0, "%s: the histogram differs from the pmf at every sample size", what);
}

/* N(0, sigma^2) in 8 bins with edges at -3..3 sigma */
static void gauss_bins_p(double *p)
{
    static const double e[7] = {-3, -2, -1, 0, 1, 2, 3};
    double prev = 0.0;
    for (int i = 0; i < 7; i++) {
        double c = gsl_cdf_ugaussian_P(e[i]);
        p[i] = c - prev;
        prev = c;
    }
    p[7] = 1.0 - prev;
}

static int gauss_bin(double z)
{
    int b = 0;
    while (b < 7 && z >= b - 3.0)
        b++;
    return b;
}

/* argmax over e < K of x . Wg[:,e]: the cluster of a token with an aligned noiseless gate */
static int classify(const float *x, const float *wg, int D, int M, int K)
{
    int best = 0;
    double bv = -INFINITY;
    for (int e = 0; e < K && e < M; e++) {
        double v = 0.0;
        for (int j = 0; j < D; j++)
            v += (double)x[j] * wg[(size_t)j * M + e];
        if (v > bv) {
            bv = v;
            best = e;
        }
    }
    return best;
}

/* ---- samplers ---------------------------------------------------------------------------- */

typedef struct {
    const char *kind;
    const moe_kv *kv;
    int nkv, n, d, m;
    uint64_t seed;
    double scale;  /* sigma of the coordinates */
    int batch;     /* fixed batch (drift) or -1: batches 0, 1, ... */
    double radius; /* clustered residuals */
} src_ctx;

/* every coordinate of x / sigma in the 8 Gaussian bins */
static long sample_coords(void *vc, long N, int attempt, long *cnt)
{
    src_ctx *c = vc;
    moe_source *s = open_src(c->kind, c->kv, c->nkv, c->n, c->d, c->m, c->seed + attempt);
    if (!s)
        return 0;
    long used = 0;
    moe_batch bt;
    for (int b = 0; used < N; b++) {
        if (moe_source_batch(s, b, &bt))
            break;
        for (size_t i = 0; i < (size_t)bt.n * bt.d; i++)
            cnt[gauss_bin(bt.x[i] / c->scale)]++;
        used += (long)bt.n * bt.d;
    }
    moe_source_close(s);
    return used;
}

/* cluster of each token (aligned noiseless gate); for c->radius > 0 the residual coordinates
 * x - radius * centre instead, in the 8 Gaussian bins */
static long sample_clusters(void *vc, long N, int attempt, long *cnt)
{
    src_ctx *c = vc;
    int n = c->batch >= 0 ? (int)N : c->n;
    moe_source *s = open_src(c->kind, c->kv, c->nkv, n, c->d, c->m, c->seed + attempt);
    if (!s)
        return 0;
    const float *wg = moe_source_gate(s);
    long used = 0;
    moe_batch bt;
    for (int b = c->batch >= 0 ? c->batch : 0; used < N; b++) {
        if (moe_source_batch(s, b, &bt))
            break;
        for (int t = 0; t < bt.n; t++) {
            const float *x = bt.x + (size_t)t * bt.d;
            int k = classify(x, wg, bt.d, bt.m, bt.m);
            if (c->radius > 0) {
                for (int j = 0; j < bt.d; j++)
                    cnt[gauss_bin((x[j] - c->radius * wg[(size_t)j * bt.m + k]) / c->scale)]++;
                used += bt.d;
            } else {
                cnt[k]++;
                used++;
            }
        }
        if (c->batch >= 0)
            break;
    }
    moe_source_close(s);
    return used;
}

static long sample_ids(void *vc, long N, int attempt, long *cnt)
{
    src_ctx *c = vc;
    moe_source *s = open_src(c->kind, c->kv, c->nkv, c->n, c->d, c->m, c->seed + attempt);
    if (!s)
        return 0;
    long used = 0;
    moe_batch bt;
    for (int b = 0; used < N; b++) {
        if (moe_source_batch(s, b, &bt))
            break;
        for (int t = 0; t < bt.n; t++) {
            if (bt.ids[t] < 0 || bt.ids[t] >= 1000) {
                moe_source_close(s);
                return 0; /* out of range: fails every bin */
            }
            cnt[bt.ids[t] / 100]++;
        }
        used += bt.n;
    }
    moe_source_close(s);
    return used;
}

static long sample_zipf(void *vc, long N, int attempt, long *cnt)
{
    src_ctx *c = vc;
    moe_source *s = open_src(c->kind, c->kv, c->nkv, c->n, c->d, c->m, c->seed + attempt);
    if (!s)
        return 0;
    long used = 0;
    moe_batch bt;
    for (int b = 0; used < N; b++) {
        if (moe_source_batch(s, b, &bt))
            break;
        for (int t = 0; t < bt.n; t++)
            cnt[bt.ids[t]]++;
        used += bt.n;
    }
    moe_source_close(s);
    return used;
}

/* collapsed: (x.u - a) / sd in the Gaussian bins, u rebuilt from the parameter stream */
typedef struct {
    src_ctx c;
    double collapse;
} col_ctx;

static long sample_projection(void *vc, long N, int attempt, long *cnt)
{
    col_ctx *cc = vc;
    src_ctx *c = &cc->c;
    uint64_t seed = c->seed + attempt;
    moe_source *s = open_src(c->kind, c->kv, c->nkv, c->n, c->d, c->m, seed);
    if (!s)
        return 0;
    double *u = malloc((size_t)c->d * sizeof *u);
    gsl_rng *rp = moe_rng_alloc(seed, MOE_STREAM_SOURCE_PARAM);
    gsl_ran_dir_nd(rp, (size_t)c->d, u);
    gsl_rng_free(rp);
    const double a = cc->collapse * c->scale * sqrt((double)c->d);
    const double sd = sqrt(1 - cc->collapse * cc->collapse) * c->scale;
    long used = 0;
    moe_batch bt;
    for (int b = 0; used < N; b++) {
        if (moe_source_batch(s, b, &bt))
            break;
        for (int t = 0; t < bt.n; t++) {
            double dot = 0.0;
            for (int j = 0; j < bt.d; j++)
                dot += bt.x[(size_t)t * bt.d + j] * u[j];
            cnt[gauss_bin((dot - a) / sd)]++;
        }
        used += bt.n;
    }
    free(u);
    moe_source_close(s);
    return used;
}

/* ---- tests ------------------------------------------------------------------------------- */

static void test_gaussian(void)
{
    double p[8];
    gauss_bins_p(p);
    moe_kv kv[] = {{"sigma", "2.5", "t.ini", 3, NULL}, {"vocab", "1000", "t.ini", 4, NULL}};
    src_ctx c = {"gaussian", kv, 2, 500, 16, 8, 11, 2.5, -1, 0};
    hist_check("gaussian coordinates vs N(0, 2.5^2) in bins at -3..3 sigma", sample_coords, &c, p,
               8, 400000);
    /* ids uniform over 0..999: 10 bins of 100 ids, p = 0.1 each */
    double pu[10];
    for (int i = 0; i < 10; i++)
        pu[i] = 0.1;
    hist_check("gaussian: ids uniform over vocab = 1000 (10 bins)", sample_ids, &c, pu, 10, 100000);
}

/* Zipf weights w_i = (i+1)^-s / H */
static void zipf_p(double *p, int K, double s)
{
    double H = 0.0;
    for (int i = 0; i < K; i++)
        H += pow(i + 1.0, -s);
    for (int i = 0; i < K; i++)
        p[i] = pow(i + 1.0, -s) / H;
}

static void test_clustered(void)
{
    /* radius 30 with sigma 1 in D = 64: the aligned noiseless gate column e is centre e, and
     * argmax_e x . Wg[:,e] recovers the cluster (centre directions have |cos| < 0.6, so the
     * margin is > 12 while the noise along a direction is N(0, 1)). */
    enum { K = 8 };
    moe_kv kv[] = {{"radius", "30", "t.ini", 1, NULL},
                   {"gate", "aligned", "t.ini", 2, NULL},
                   {"gate_noise", "0", "t.ini", 3, NULL},
                   {"zipf_s", "1.2", "t.ini", 4, NULL}};
    double p[K];
    zipf_p(p, K, 1.2);
    src_ctx c = {"clustered", kv, 4, 1000, 64, K, 21, 1.0, -1, 0};
    hist_check("clustered: assignments vs Zipf(1.2) weights over 8 clusters", sample_clusters, &c,
               p, K, 64000);
    double pg[8];
    gauss_bins_p(pg);
    src_ctx cr = c;
    cr.radius = 30;
    hist_check("clustered: x - radius * centre vs N(0, 1) coordinates", sample_clusters, &cr, pg, 8,
               400000);

    /* the aligned gate's columns are unit vectors (noise 0, scale 1) */
    moe_source *s = open_src("clustered", kv, 4, 10, 64, K, 21);
    if (s) {
        const float *wg = moe_source_gate(s);
        double worst = 0.0;
        for (int e = 0; e < K; e++) {
            double nn = 0.0;
            for (int j = 0; j < 64; j++)
                nn += (double)wg[(size_t)j * K + e] * wg[(size_t)j * K + e];
            worst = fmax(worst, fabs(sqrt(nn) - 1.0));
        }
        CHECK(worst < 1e-6, "aligned gate columns are unit centres (worst |norm - 1| %g)", worst);
        moe_source_close(s);
    }

    /* Dirichlet weights: rebuilt from (seed, SOURCE_PARAM + 16) as sim/source.c documents */
    moe_kv kd[] = {{"radius", "30", "t.ini", 1, NULL},
                   {"gate", "aligned", "t.ini", 2, NULL},
                   {"gate_noise", "0", "t.ini", 3, NULL},
                   {"weights", "dirichlet", "t.ini", 4, NULL},
                   {"alpha", "2", "t.ini", 5, NULL}};
    src_ctx cd = {"clustered", kd, 5, 1000, 64, K, 31, 1.0, -1, 0};
    /* every attempt uses seed + attempt: the weights differ per attempt, so check attempt 0's
     * sample against attempt 0's weights, sized so that one sample suffices */
    double alpha[K], theta[K];
    for (int i = 0; i < K; i++)
        alpha[i] = 2.0;
    gsl_rng *rd = moe_rng_alloc(31, MOE_STREAM_SOURCE_PARAM + 16);
    gsl_ran_dirichlet(rd, K, alpha, theta);
    gsl_rng_free(rd);
    long cnt[MAXB] = {0};
    long used = sample_clusters(&cd, 64000, 0, cnt);
    double worst;
    int bad = bins_bad(cnt, theta, K, used, &worst);
    if (bad) { /* double the sample (same weights: same seed, more batches) */
        memset(cnt, 0, sizeof cnt);
        used = sample_clusters(&cd, 128000, 0, cnt);
        bad = bins_bad(cnt, theta, K, used, &worst);
    }
    CHECK(bad == 0, "clustered: assignments vs the Dirichlet(2) weights (worst %.2f sigma)", worst);
}

static void test_drift(void)
{
    enum { K = 6 };
    moe_kv kv[] = {{"radius", "30", "t.ini", 1, NULL},
                   {"gate", "aligned", "t.ini", 2, NULL},
                   {"gate_noise", "0", "t.ini", 3, NULL},
                   {"drift_step", "2", "t.ini", 4, NULL}};
    double w[K], p[K];
    zipf_p(w, K, 1.2);
    /* batch b: cluster (i + 2b) mod 6 gets weight w_i, i.e. p_b[c] = w[(c - 2b) mod 6] */
    for (int b = 0; b < 3; b++) {
        for (int c = 0; c < K; c++)
            p[c] = w[((c - 2 * b) % K + K) % K];
        src_ctx c = {"drift", kv, 4, 0, 32, K, 41, 1.0, b, 0};
        char what[96];
        snprintf(what, sizeof what, "drift: batch %d assignments vs the rotated Zipf weights", b);
        hist_check(what, sample_clusters, &c, p, K, 48000);
    }
    /* the most frequent cluster moves between batches: 0, then 2 */
    moe_source *s = open_src("drift", kv, 4, 3000, 32, K, 41);
    if (s) {
        int top[2];
        for (int b = 0; b < 2; b++) {
            moe_batch bt;
            long cnt[K] = {0};
            moe_source_batch(s, b, &bt);
            for (int t = 0; t < bt.n; t++)
                cnt[classify(bt.x + (size_t)t * bt.d, moe_source_gate(s), bt.d, K, K)]++;
            top[b] = 0;
            for (int c = 1; c < K; c++)
                if (cnt[c] > cnt[top[b]])
                    top[b] = c;
        }
        CHECK(top[0] == 0 && top[1] == 2, "drift: top cluster %d then %d, expected 0 then 2",
              top[0], top[1]);
        moe_source_close(s);
    }
}

/* zipf_ids with vocab V, width D, n tokens, batches 0 and 1: each row bit-equal to the draw
 * from its id's stream. */
static void zipf_rows_drawn(const moe_kv *kv0, long V, int D, int n)
{
    char vocab[32];
    snprintf(vocab, sizeof vocab, "%ld", V);
    moe_kv kv[3] = {kv0[0], kv0[1], kv0[2]};
    kv[0].value = vocab;
    moe_source *s = open_src("zipf_ids", kv, 3, n, D, 4, 51);
    float *want = malloc((size_t)D * sizeof *want);
    if (!s || !want) {
        CHECK(0, "zipf_ids vocab = %ld: open failed", V);
        moe_source_close(s), free(want);
        return;
    }
    int bad = 0;
    moe_batch bt;
    for (int b = 0; b < 2; b++) {
        CHECK_INT(moe_source_batch(s, b, &bt), MOE_OK);
        for (int t = 0; t < bt.n; t++) {
            gsl_rng *e = moe_rng_alloc(51, MOE_STREAM_SOURCE_PARAM + 16 * ((uint64_t)bt.ids[t] + 2));
            for (int j = 0; j < D; j++)
                want[j] = (float)gsl_ran_gaussian_ziggurat(e, 0.5);
            gsl_rng_free(e);
            bad += memcmp(want, bt.x + (size_t)t * D, (size_t)D * sizeof *want) != 0;
        }
    }
    CHECK(bad == 0, "zipf_ids vocab = %ld, D = %d: %d of %d rows differ from their id's draw", V,
          D, bad, 2 * n);
    moe_source_close(s);
    free(want);
}

static void test_zipf_ids(void)
{
    enum { V = 50 };
    moe_kv kv[] = {
        {"vocab", "50", "t.ini", 1, NULL}, {"zipf_s", "1.1", "t.ini", 2, NULL}, {"sigma", "0.5", "t.ini", 3, NULL}};
    double p[V];
    zipf_p(p, V, 1.1);
    src_ctx c = {"zipf_ids", kv, 3, 2000, 8, 4, 51, 0.5, -1, 0};
    hist_check("zipf_ids: ids vs the Zipf(1.1) pmf over vocab = 50", sample_zipf, &c, p, V, 200000);

    /* repeated ids repeat their row exactly, within and across batches; distinct ids differ;
     * the rows of the distinct ids are N(0, 0.5^2) coordinates */
    moe_source *s = open_src("zipf_ids", kv, 3, 2000, 8, 4, 51);
    if (!s)
        return;
    float rows[V][8];
    int seen[V] = {0}, mismatch = 0, repeats = 0;
    moe_batch bt;
    for (int b = 0; b < 2; b++) {
        moe_source_batch(s, b, &bt);
        for (int t = 0; t < bt.n; t++) {
            int64_t id = bt.ids[t];
            const float *x = bt.x + (size_t)t * 8;
            if (seen[id]) {
                repeats++;
                mismatch += memcmp(rows[id], x, sizeof rows[id]) != 0;
            } else {
                seen[id] = 1;
                memcpy(rows[id], x, sizeof rows[id]);
            }
        }
    }
    CHECK(repeats > 1000 && mismatch == 0, "repeated ids: %d repeats, %d rows differ", repeats,
          mismatch);
    int same = 0, distinct = 0;
    long cnt[8] = {0}, nco = 0;
    for (int i = 0; i < V; i++) {
        if (!seen[i])
            continue;
        distinct++;
        for (int j = 0; j < i; j++)
            same += seen[j] && memcmp(rows[i], rows[j], sizeof rows[i]) == 0;
        for (int k = 0; k < 8; k++, nco++)
            cnt[gauss_bin(rows[i][k] / 0.5)]++;
    }
    CHECK(distinct == V && same == 0, "%d distinct ids seen, %d pairs share a row", distinct, same);
    double pg[8], worst;
    gauss_bins_p(pg);
    CHECK(bins_bad(cnt, pg, 8, nco, &worst) == 0,
          "embedding coordinates vs N(0, 0.5^2) (%ld values, worst %.2f sigma)", nco, worst);
    moe_source_close(s);
    /* every row is the documented draw: D ziggurat normals of sd 0.5 from the stream (seed,
     * MOE_STREAM_SOURCE_PARAM + 16 (id + 2)), drawn here afresh for each token; vocab = 50 keeps
     * a table of the rows met so far, vocab = 300000 at D = 64 (77 MB) draws per token */
    zipf_rows_drawn(kv, 50, 8, 2000);
    zipf_rows_drawn(kv, 300000, 64, 300);
}

static void test_collapsed(void)
{
    moe_kv kv[] = {{"collapse", "0.9", "t.ini", 1, NULL}};
    double pg[8];
    gauss_bins_p(pg);
    col_ctx cc = {{"collapsed", kv, 1, 1000, 256, 8, 61, 1.0, -1, 0}, 0.9};
    hist_check("collapsed: x.u ~ N(0.9 * sqrt(256), 1 - 0.81)", sample_projection, &cc, pg, 8,
               32000);

    /* cosine to u: E[cos] = 0.90024 for D = 256, collapse 0.9 (NumPy Monte Carlo, 2e6 draws:
     * cos = (a + s z) / sqrt((a + s z)^2 + s^2 chi2_255), a = 14.4, s^2 = 0.19); its std is
     * 0.00916, so the mean of 2000 tokens has std 0.000205: allow 5 of them. The part
     * orthogonal to u has E|x_perp|^2 / 255 = 0.19 with std 0.19 sqrt(2/255) per token. */
    moe_source *s = open_src("collapsed", kv, 1, 2000, 256, 8, 61);
    if (!s)
        return;
    double u[256];
    gsl_rng *rp = moe_rng_alloc(61, MOE_STREAM_SOURCE_PARAM);
    gsl_ran_dir_nd(rp, 256, u);
    gsl_rng_free(rp);
    moe_batch bt;
    moe_source_batch(s, 0, &bt);
    double mcos = 0.0, mperp = 0.0;
    for (int t = 0; t < bt.n; t++) {
        const float *x = bt.x + (size_t)t * 256;
        double dot = 0.0, nn = 0.0;
        for (int j = 0; j < 256; j++) {
            dot += x[j] * u[j];
            nn += (double)x[j] * x[j];
        }
        mcos += dot / sqrt(nn);
        mperp += (nn - dot * dot) / 255.0;
    }
    mcos /= bt.n;
    mperp /= bt.n;
    CHECK_NEAR(mcos, 0.90024, 5 * 0.000205);
    CHECK_NEAR(mperp, 0.19, 5 * 0.19 * sqrt(2.0 / 255.0 / 2000.0));
    moe_source_close(s);
}

/* same seed: same batches; batch b alone equals batch b after 0..b-1; other seed differs */
static void test_reproducible(void)
{
    static const char *const kinds[] = {"gaussian", "clustered", "zipf_ids", "drift", "collapsed"};
    int bad_same = 0, bad_alone = 0, bad_differ = 0, bad_gate = 0;
    for (int i = 0; i < 5; i++) {
        moe_source *a = open_src(kinds[i], NULL, 0, 64, 16, 8, 7);
        moe_source *b = open_src(kinds[i], NULL, 0, 64, 16, 8, 7);
        moe_source *c = open_src(kinds[i], NULL, 0, 64, 16, 8, 8);
        if (!a || !b || !c) {
            CHECK(0, "open %s", kinds[i]);
            continue;
        }
        moe_batch ba, bb, bc;
        for (int k = 0; k < 4; k++)
            moe_source_batch(a, k, &ba); /* a: batches 0..3 */
        moe_source_batch(b, 3, &bb);     /* b: batch 3 only */
        bad_alone += memcmp(ba.x, bb.x, 64 * 16 * sizeof *ba.x) != 0 ||
                     memcmp(ba.ids, bb.ids, 64 * sizeof *ba.ids) != 0;
        moe_source_batch(a, 1, &ba);
        moe_source_batch(b, 1, &bb);
        bad_same += memcmp(ba.x, bb.x, 64 * 16 * sizeof *ba.x) != 0;
        moe_source_batch(c, 1, &bc);
        bad_differ += memcmp(ba.x, bc.x, 64 * 16 * sizeof *ba.x) == 0;
        bad_gate += memcmp(moe_source_gate(a), moe_source_gate(b), 16 * 8 * sizeof(float)) != 0;
        /* two batches of one source differ */
        moe_source_batch(b, 2, &bb);
        moe_source_batch(a, 1, &ba);
        bad_differ += memcmp(ba.x, bb.x, 64 * 16 * sizeof *ba.x) == 0;
        moe_source_close(a);
        moe_source_close(b);
        moe_source_close(c);
    }
    CHECK(bad_same == 0, "%d sources differ for the same seed", bad_same);
    CHECK(bad_alone == 0, "%d sources: batch 3 alone differs from batch 3 after 0..2", bad_alone);
    CHECK(bad_differ == 0, "%d sources repeat across seeds or batches", bad_differ);
    CHECK(bad_gate == 0, "%d gates differ for the same seed", bad_gate);
}

static void test_gate(void)
{
    /* random gate: Wg entries N(0, 1/D): sqrt(D) Wg in the Gaussian bins (64 x 64 entries) */
    moe_source *s = open_src("gaussian", NULL, 0, 4, 64, 64, 3);
    moe_kv k2[] = {{"gate_scale", "2", "t.ini", 1, NULL}};
    moe_source *s2 = open_src("gaussian", k2, 1, 4, 64, 64, 3);
    if (!s || !s2) {
        CHECK(0, "open gaussian");
        return;
    }
    const float *w = moe_source_gate(s), *w2 = moe_source_gate(s2);
    long cnt[8] = {0};
    int scaled = 0;
    for (int i = 0; i < 64 * 64; i++) {
        cnt[gauss_bin(w[i] * 8.0)]++;
        scaled += w2[i] != 2.0f * w[i];
    }
    double pg[8], worst;
    gauss_bins_p(pg);
    CHECK(bins_bad(cnt, pg, 8, 64 * 64, &worst) == 0, "random gate vs N(0, 1/D) (worst %.2f)",
          worst);
    CHECK_INT(scaled, 0); /* gate_scale = 2 doubles every entry exactly */
    moe_source_close(s);
    moe_source_close(s2);

    /* aligned gate with fewer clusters than columns: column e points at centre e mod 4 */
    moe_kv ka[] = {{"clusters", "4", "t.ini", 1, NULL},
                   {"gate", "aligned", "t.ini", 2, NULL},
                   {"gate_noise", "0", "t.ini", 3, NULL}};
    s = open_src("clustered", ka, 3, 4, 16, 8, 5);
    if (!s) {
        CHECK(0, "open clustered");
        return;
    }
    w = moe_source_gate(s);
    int diff = 0;
    for (int j = 0; j < 16; j++)
        for (int e = 4; e < 8; e++)
            diff += w[j * 8 + e] != w[j * 8 + e - 4];
    CHECK_INT(diff, 0);
    moe_source_close(s);
}

static void test_npy(void)
{
    /* logits (3,5,4) with a layer axis: value = 100 l + 10 r + c; hidden (5,2): 10 r + j;
     * ids (5): 7 r. Batches of 7 rows cycle: batch 0 rows 0..4,0,1; batch 1 starts at 7 mod 5
     * = 2: rows 2,3,4,0,1,2,3. */
    double L[3 * 5 * 4];
    float X[5 * 2];
    int64_t I[5];
    for (int l = 0; l < 3; l++)
        for (int r = 0; r < 5; r++)
            for (int c = 0; c < 4; c++)
                L[(l * 5 + r) * 4 + c] = 100 * l + 10 * r + c;
    for (int r = 0; r < 5; r++) {
        X[r * 2] = 10.0f * r;
        X[r * 2 + 1] = 10.0f * r + 1;
        I[r] = 7 * r;
    }
    int64_t I6[6] = {0, 1, 2, 3, 4, 5};
    size_t sl[3] = {3, 5, 4}, sx[2] = {5, 2}, si[1] = {5}, s6[1] = {6};
    const char *pl = "/tmp/moesim_test_sources_L.npy", *px = "/tmp/moesim_test_sources_X.npy",
               *pi = "/tmp/moesim_test_sources_I.npy", *p6 = "/tmp/moesim_test_sources_I6.npy";
    if (moe_npy_write(pl, MOE_F64, L, 3, sl) || moe_npy_write(px, MOE_F32, X, 2, sx) ||
        moe_npy_write(pi, MOE_I64, I, 1, si) || moe_npy_write(p6, MOE_I64, I6, 1, s6)) {
        CHECK(0, "write npy: %s", moe_errmsg());
        moe_clear_error();
        return;
    }
    moe_kv kv[] = {{"logits", pl, "t.ini", 1, NULL},
                   {"hidden", px, "t.ini", 2, NULL},
                   {"ids", pi, "t.ini", 3, NULL},
                   {"layer", "1", "t.ini", 4, NULL}};
    moe_source *s = open_src("npy", kv, 4, 7, 2, 0, 1);
    if (!s) {
        CHECK(0, "open npy");
        return;
    }
    CHECK_INT(moe_source_required_m(s), 4);
    int bad = 0;
    moe_batch bt;
    for (int b = 0; b < 2; b++) {
        moe_source_batch(s, b, &bt);
        for (int t = 0; t < 7; t++) {
            int r = (b * 7 + t) % 5;
            for (int c = 0; c < 4; c++)
                bad += bt.logits[t * 4 + c] != 100 + 10 * r + c;
            bad += bt.x[t * 2] != 10.0f * r || bt.x[t * 2 + 1] != 10.0f * r + 1;
            bad += bt.ids[t] != 7 * r;
        }
    }
    CHECK(bad == 0 && bt.m == 4 && bt.choices == NULL, "npy rows cycle: %d wrong values", bad);
    moe_source_close(s);

    /* errors: a layer outside the array, a width that is not d, rows that disagree, no array,
     * a missing file */
    struct {
        moe_kv kv[2];
        int nkv, d, m;
        const char *want;
    } bad_cases[] = {
        {{{"logits", pl, "t.ini", 1, NULL}, {"layer", "3", "t.ini", 9, NULL}}, 2, 2, 0, "t.ini:9, key layer"},
        {{{"hidden", px, "t.ini", 5, NULL}, {NULL, NULL, NULL, 0, NULL}}, 1, 3, 4, "t.ini:5, key hidden"},
        {{{"logits", pl, "t.ini", 1, NULL}, {"ids", p6, "t.ini", 6, NULL}}, 2, 2, 0,
         "ids has 6 rows, the other arrays 5 (t.ini:6, key ids)"},
        {{{"layer", "0", "t.ini", 1, NULL}}, 1, 2, 4, "needs at least one of logits, hidden, ids"},
        {{{"ids", "/nonexistent/ids.npy", "t.ini", 1, NULL}}, 1, 2, 4, "/nonexistent/ids.npy"},
    };
    for (size_t i = 0; i < sizeof bad_cases / sizeof *bad_cases; i++) {
        moe_source *e = NULL;
        int rc = moe_source_open("npy", bad_cases[i].kv, bad_cases[i].nkv, 7, bad_cases[i].d,
                                 bad_cases[i].m, 1, &e);
        CHECK(rc != 0 && e == NULL && strstr(moe_errmsg(), bad_cases[i].want),
              "npy case %zu: rc %d, '%s' lacks '%s'", i, rc, moe_errmsg(), bad_cases[i].want);
        moe_clear_error();
    }
    remove(pl);
    remove(px);
    remove(pi);
    remove(p6);
}

static void test_params(void)
{
    struct {
        const char *kind, *key, *value, *want;
    } cases[] = {
        {"gaussian", "sigmaa", "1",
         "unknown parameter 'sigmaa' for source gaussian (spec.ini:12, key sigmaa)"},
        {"gaussian", "sigma", "abc", "sigma = 'abc' is not a number (spec.ini:12, key sigma)"},
        {"gaussian", "sigma", "-1",
         "sigma = -1 is out of range: want > 0 (spec.ini:12, key sigma)"},
        {"gaussian", "sigma", "0", "sigma = 0 is out of range: want > 0 (spec.ini:12, key sigma)"},
        {"gaussian", "sigma", "nan", "is not a number (spec.ini:12, key sigma)"},
        {"collapsed", "collapse", "1.5",
         "collapse = 1.5 is out of range: want 0..1 (spec.ini:12, key collapse)"},
        {"clustered", "weights", "pareto",
         "weights = 'pareto' is not one of zipf|dirichlet (spec.ini:12, key weights)"},
        {"clustered", "clusters", "2.5",
         "clusters = '2.5' is not an integer (spec.ini:12, key clusters)"},
        {"clustered", "clusters", "0",
         "clusters = 0 is out of range: want 1..1048576 (spec.ini:12, key clusters)"},
        {"clustered", "gate", "", "is not one of random|aligned (spec.ini:12, key gate)"},
        {"zipf_ids", "vocab", "100000000",
         "vocab = 100000000 is out of range: want 1..16777216 (spec.ini:12, key vocab)"},
        {"drift", "drift_step", "-1",
         "drift_step = -1 is out of range: want 0..1073741824 (spec.ini:12, key drift_step)"},
        {"gaussian", "drift_step", "1", "unknown parameter 'drift_step' for source gaussian"},
        {"trace_deepseek", "max_tokens", "0",
         "max_tokens = 0 is out of range: want 1..1000000000 (spec.ini:12, key max_tokens)"},
        {"trace_mixtral_popularity", "subject", "astrology",
         "is not one of college_computer_science"},
        {"npy", "logits", "", "logits is empty: want a path (spec.ini:12, key logits)"},
        {"no_such_source", "sigma", "1", "unknown source 'no_such_source'"},
    };
    int bad = 0;
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        moe_kv kv = {cases[i].key, cases[i].value, "spec.ini", 12, NULL};
        moe_source *s = NULL;
        int rc = moe_source_open(cases[i].kind, &kv, 1, 8, 4, 4, 1, &s);
        if (rc != MOE_EINVAL || s || !strstr(moe_errmsg(), cases[i].want)) {
            bad++;
            fprintf(stderr, "param case %zu: rc %d, message '%s', expected '%s'\n", i, rc,
                    moe_errmsg(), cases[i].want);
        }
        moe_clear_error();
    }
    CHECK(bad == 0, "%d of %zu bad parameters not reported as expected", bad,
          sizeof cases / sizeof *cases);
    /* a value given on the command line is located as such */
    moe_kv kv = {"sigma", "x", "--set:2", 0, NULL};
    moe_source *s = NULL;
    moe_source_open("gaussian", &kv, 1, 8, 4, 4, 1, &s);
    CHECK(strstr(moe_errmsg(), "(--set:2, key sigma)") != NULL, "message '%s'", moe_errmsg());
    moe_clear_error();
    /* every value is validated, even one that a later value overrides */
    moe_kv two[] = {{"sigma", "-3", "a.ini", 1, NULL}, {"sigma", "2", "--set:1", 0, NULL}};
    CHECK(moe_source_open("gaussian", two, 2, 8, 4, 4, 1, &s) == MOE_EINVAL,
          "each value is validated when given");
    moe_clear_error();
    /* the later of two values wins (a --set override after the spec's value) */
    moe_kv later[] = {{"sigma", "1", "a.ini", 1, NULL}, {"sigma", "3", "--set:1", 0, NULL}};
    moe_kv only[] = {{"sigma", "3", "a.ini", 1, NULL}};
    moe_source *a = open_src("gaussian", later, 2, 8, 4, 4, 1);
    moe_source *b = open_src("gaussian", only, 1, 8, 4, 4, 1);
    if (a && b) {
        moe_batch ba, bb;
        moe_source_batch(a, 0, &ba);
        moe_source_batch(b, 0, &bb);
        CHECK(memcmp(ba.x, bb.x, 8 * 4 * sizeof *ba.x) == 0, "the later value wins");
    }
    moe_source_close(a);
    moe_source_close(b);
    CHECK(moe_source_open("gaussian", NULL, 0, 0, 4, 4, 1, &s) == MOE_EINVAL && s == NULL,
          "n = 0 refused");
    moe_clear_error();
    CHECK(moe_source_open("clustered", NULL, 0, 8, 4, 0, 1, &s) == MOE_EINVAL && s == NULL,
          "M = 0 refused for a synthetic source");
    moe_clear_error();
    moe_source_close(NULL); /* NULL-safe */
    FILE *f = tmpfile();
    if (f) {
        moe_source_list(f);
        long len = ftell(f);
        char *buf = calloc((size_t)len + 1, 1);
        rewind(f);
        size_t got = fread(buf, 1, (size_t)len, f);
        buf[got] = '\0';
        static const char *const names[] = {"gaussian",       "clustered",
                                            "zipf_ids",       "drift",
                                            "collapsed",      "npy",
                                            "trace_deepseek", "trace_mixtral",
                                            "trace_flame",    "trace_mixtral_popularity",
                                            "zipf_s",         "drift_step",
                                            "max_tokens"};
        int missing = 0;
        for (size_t i = 0; i < sizeof names / sizeof *names; i++)
            missing += strstr(buf, names[i]) == NULL;
        CHECK(missing == 0, "moe_source_list misses %d names", missing);
        free(buf);
        fclose(f);
    }
}

/* ---- the registry ------------------------------------------------------------------------ */

/* Parameters that open each source of the registry on the committed fixtures; a source without
 * an entry here fails test_registry, so a new source comes with its test configuration. */
#define TKV(k, v) {k, v, "t.ini", 1, NULL}
static const struct {
    const char *name;
    int nkv;
    moe_kv kv[2];
} reg_configs[] = {
    {"gaussian", 0, {{0}}},
    {"clustered", 0, {{0}}},
    {"zipf_ids", 0, {{0}}},
    {"drift", 0, {{0}}},
    {"collapsed", 0, {{0}}},
    {"npy", 1, {TKV("logits", "tests/fixtures/npy/f32_2x3.npy")}},
    {"trace_deepseek", 2, {TKV("path", "tests/fixtures/traces/deepseek"), TKV("layer", "1")}},
    {"trace_mixtral", 2, {TKV("path", "tests/fixtures/traces/mixtral"), TKV("layer", "0")}},
    {"trace_flame", 2, {TKV("path", "tests/fixtures/traces/flame"), TKV("layer", "2")}},
    {"trace_mixtral_popularity", 1, {TKV("path", "tests/fixtures/traces/popularity/small.json")}},
};

/* The parameter table of a type: named, documented, within MOE_SP_MAX, with vocab. */
static int reg_table_bad(const moe_source_type *t)
{
    int n = 0, bad = !t->name || !*t->name || !t->summary || !*t->summary || !t->open ||
                     !t->batch || moe_source_find(t->name) != t;
    int vocab = 0;
    for (; t->params[n].key; n++) {
        const moe_source_param *p = &t->params[n];
        bad |= !p->def || !p->help || !*p->help || (p->kind == MOE_SP_ENUM && !p->choices);
        vocab |= strcmp(p->key, "vocab") == 0;
        for (int j = 0; j < n; j++)
            bad |= strcmp(t->params[j].key, p->key) == 0;
    }
    return bad || n > MOE_SP_MAX || !vocab;
}

/* Batch b of two sources equal in every array. */
static int reg_same(const moe_batch *a, const moe_batch *b)
{
    size_t n = (size_t)a->n;
    if (a->n != b->n || a->d != b->d || a->m != b->m || a->k_rec != b->k_rec)
        return 0;
    return !memcmp(a->x, b->x, n * a->d * sizeof *a->x) &&
           !memcmp(a->ids, b->ids, n * sizeof *a->ids) &&
           (!a->logits || !memcmp(a->logits, b->logits, n * a->m * sizeof *a->logits)) &&
           (!a->choices || !memcmp(a->choices, b->choices, n * a->k_rec * sizeof *a->choices)) &&
           (!a->choice_w || !memcmp(a->choice_w, b->choice_w, n * a->k_rec * sizeof *a->choice_w));
}

/* Shapes of a batch of n = 6 tokens, d = 4, as the source announced them. */
static int reg_shape_bad(const moe_source *s, const moe_batch *bt, int m_asked, long vocab)
{
    int rm = moe_source_required_m(s), recorded = (s->type->flags & MOE_SOURCE_RECORDED) != 0;
    int bad = bt->n != 6 || bt->d != 4 || bt->m != (rm > 0 ? rm : m_asked) || !bt->x || !bt->ids;
    bad |= (bt->k_rec > 0) != (bt->choices != NULL) || (bt->choice_w && !bt->choices);
    bad |= !recorded && (bt->logits || bt->choices); /* synthetic: the gate GEMM routes */
    for (int t = 0; t < bt->n; t++)
        bad |= bt->ids[t] < 0 || bt->ids[t] >= vocab;
    return bad;
}

/* One source of the registry, opened with its test configuration. */
static void reg_check_source(const moe_source_type *t, const moe_kv *kv, int nkv)
{
    const int m = (t->flags & MOE_SOURCE_RECORDED) ? 0 : 8;
    moe_source *a = open_src(t->name, kv, nkv, 6, 4, m, 7);
    moe_source *b = open_src(t->name, kv, nkv, 6, 4, m, 7);
    moe_source *c = open_src(t->name, kv, nkv, 6, 4, m, 8);
    CHECK(a && b && c, "source %s opens with its test configuration", t->name);
    if (a && b && c) {
        moe_batch ba, bb, bc;
        int rc = moe_source_batch(a, 0, &ba) || moe_source_batch(a, 1, &ba) ||
                 moe_source_batch(a, 2, &ba) || moe_source_batch(b, 2, &bb) ||
                 moe_source_batch(c, 2, &bc);
        CHECK(rc == 0, "source %s: batches drawn", t->name);
        if (!rc) {
            CHECK(reg_same(&ba, &bb), "source %s: same seed, batch 2 alone equals batch 2 after "
                  "batches 0 and 1", t->name);
            CHECK(memcmp(ba.x, bc.x, 6 * 4 * sizeof *ba.x) != 0,
                  "source %s: seeds 7 and 8 give the same x", t->name);
            CHECK(!reg_shape_bad(a, &ba, m, a->vocab), "source %s: batch shapes", t->name);
            const int gm = ba.m;
            CHECK(!memcmp(moe_source_gate(a), moe_source_gate(b), 4 * (size_t)gm * sizeof(float)),
                  "source %s: same seed, different gate", t->name);
        }
    }
    moe_source_close(a);
    moe_source_close(b);
    moe_source_close(c);
    /* an unknown key is refused, naming it, the source and where it was written */
    moe_kv bad[3];
    for (int i = 0; i < nkv; i++)
        bad[i] = kv[i];
    bad[nkv] = (moe_kv){"no_such_key", "1", "spec.ini", 3, NULL};
    char want[256];
    snprintf(want, sizeof want,
             "unknown parameter 'no_such_key' for source %s (spec.ini:3, key no_such_key)",
             t->name);
    moe_source *s = NULL;
    int rc = moe_source_open(t->name, bad, nkv + 1, 6, 4, 8, 1, &s);
    CHECK(rc == MOE_EINVAL && !s && strstr(moe_errmsg(), want), "source %s: '%s'", t->name,
          moe_errmsg());
    moe_clear_error();
    /* a synthetic source needs M >= 1 */
    if (!(t->flags & MOE_SOURCE_RECORDED)) {
        rc = moe_source_open(t->name, kv, nkv, 6, 4, 0, 1, &s);
        CHECK(rc == MOE_EINVAL && !s, "source %s opened with M = 0", t->name);
        moe_clear_error();
    }
}

/* Registry-wide properties: every source of moe_source_types. */
static void test_registry(void)
{
    const size_t nconf = sizeof reg_configs / sizeof *reg_configs;
    int count = 0;
    char *list = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&list, &len);
    if (f) {
        moe_source_list(f);
        fclose(f);
    }
    for (int i = 0; moe_source_types[i]; i++, count++) {
        const moe_source_type *t = moe_source_types[i];
        CHECK(!reg_table_bad(t), "source %s: parameter table", t->name);
        char head[128];
        snprintf(head, sizeof head, "\n%s\n", t->name);
        int listed = list && strstr(list, head);
        for (int j = 0; listed && t->params[j].key; j++) {
            char key[64];
            snprintf(key, sizeof key, "    %s ", t->params[j].key);
            listed = strstr(list, key) != NULL;
        }
        CHECK(listed, "moesim list sources shows %s and its parameters", t->name);
        size_t c = 0;
        while (c < nconf && strcmp(reg_configs[c].name, t->name) != 0)
            c++;
        CHECK(c < nconf, "source %s has no test configuration in test_sources.c", t->name);
        if (c < nconf)
            reg_check_source(t, reg_configs[c].kv, reg_configs[c].nkv);
    }
    free(list);
    CHECK(count == (int)nconf, "registry holds %d sources, the test configures %zu", count, nconf);
    CHECK(moe_source_find("no_such_source") == NULL && moe_source_find(NULL) == NULL,
          "moe_source_find of an unknown name");
}

int main(void)
{
    moe_install_gsl_handler();
    test_gaussian();
    test_clustered();
    test_drift();
    test_zipf_ids();
    test_collapsed();
    test_reproducible();
    test_gate();
    test_npy();
    test_params();
    test_registry();
    return check_report("test_sources");
}
