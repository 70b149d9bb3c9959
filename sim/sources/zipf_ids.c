/* zipf_ids.c: the `zipf_ids` token source: ids ~ Zipf(zipf_s) over vocab by inverse CDF (GSL
 * has no Zipf sampler), x = the id's fixed embedding row, drawn from its own PCG stream
 * (seed, MOE_STREAM_SOURCE_PARAM + 16 (id + 2)), so that repeated ids repeat exactly.
 *
 * A row depends on the id alone, so each id's row is drawn once, the first time a batch meets
 * it, and copied for every later token with that id (a Zipf batch of 2^20 tokens over 32000 ids
 * draws a few thousand rows instead of 2^20): the same floats as drawing it at every token. The
 * rows are kept when the table (vocab,D) takes at most ZIPF_MEMO_BYTES; above that every token
 * draws its row. */
#include "source.h"

#include <gsl/gsl_randist.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

enum { ZIPF_MEMO_BYTES = 64 << 20 };

typedef struct {
    double *cdf;         /* (vocab) */
    gsl_rng *emb;        /* embedding stream, reseeded per id */
    float *rows;         /* (vocab,D) rows drawn so far, or NULL (no table) */
    unsigned char *have; /* (vocab) 1 where rows holds the id's row */
} zipf_ws;

static const moe_source_param zipf_params[] = {
    MOE_SP_VOCAB("32000", 32000, 16777216.0),
    {"zipf_s", MOE_SP_NUM, "1.1", 1.1, 0, 100, 0, NULL,
     "Zipf exponent: P(id = i) ~ (i+1)^-zipf_s"},
    MOE_SP_SIGMA("standard deviation of the embedding coordinates"),
    MOE_SP_GATE_SCALE,
    MOE_SP_END,
};

/* cdf[i] = sum_{j<=i} (j+1)^-s / H, the last entry set to 1. */
static int zipf_open(moe_source *s)
{
    int rc = MOE_OK;
    zipf_ws *z = moe_source_calloc(1, sizeof *z, &rc, "Zipf table");
    if (rc)
        return rc;
    s->ws = z;
    z->cdf = moe_source_calloc((size_t)s->vocab, sizeof *z->cdf, &rc, "Zipf table");
    if (rc)
        return rc;
    double zs = moe_source_num(s, "zipf_s"), acc = 0.0;
    for (long i = 0; i < s->vocab; i++) {
        acc += pow(i + 1.0, -zs);
        z->cdf[i] = acc;
    }
    for (long i = 0; i < s->vocab; i++)
        z->cdf[i] /= acc;
    z->cdf[s->vocab - 1] = 1.0;
    z->emb = moe_rng_alloc(s->seed, MOE_STREAM_SOURCE_PARAM);
    return z->emb ? MOE_OK : MOE_ENOMEM;
}

/* The embedding row of id into x (D): N(0, sigma^2) from the id's stream. */
static void zipf_row(const moe_source *s, const zipf_ws *z, long id, double sigma, float *x)
{
    moe_source_reseed(z->emb, s->seed, MOE_STREAM_SOURCE_PARAM + 16 * ((uint64_t)id + 2));
    for (int j = 0; j < s->d; j++)
        x[j] = (float)gsl_ran_gaussian_ziggurat(z->emb, sigma);
}

/* id = the first i with cdf[i] > u, u ~ U[0,1) from the token stream */
static int zipf_batch(moe_source *s, int b)
{
    (void)b;
    zipf_ws *z = s->ws;
    const int D = s->d;
    const double sigma = moe_source_num(s, "sigma");
    if (!z->have && (size_t)s->vocab * (size_t)D * sizeof(float) <= ZIPF_MEMO_BYTES) {
        z->rows = malloc((size_t)s->vocab * (size_t)D * sizeof *z->rows);
        z->have = calloc((size_t)s->vocab, 1);
        if (!z->rows || !z->have) { /* no table: every token draws its row */
            free(z->rows), free(z->have);
            z->rows = NULL, z->have = NULL;
        }
    }
    for (int t = 0; t < s->n; t++) {
        double u = gsl_rng_uniform(s->rng);
        long lo = 0, hi = s->vocab - 1;
        while (lo < hi) {
            long mid = lo + (hi - lo) / 2;
            if (z->cdf[mid] > u)
                hi = mid;
            else
                lo = mid + 1;
        }
        s->ids[t] = lo;
        float *x = s->x + (size_t)t * D;
        if (!z->have) {
            zipf_row(s, z, lo, sigma, x);
            continue;
        }
        float *row = z->rows + (size_t)lo * D;
        if (!z->have[lo])
            zipf_row(s, z, lo, sigma, row), z->have[lo] = 1;
        memcpy(x, row, (size_t)D * sizeof *x);
    }
    return MOE_OK;
}

static void zipf_close(moe_source *s)
{
    zipf_ws *z = s->ws;
    if (!z)
        return;
    free(z->cdf);
    free(z->rows);
    free(z->have);
    gsl_rng_free(z->emb);
    free(z);
    s->ws = NULL;
}

const moe_source_type moe_source_zipf_ids = {
    .name = "zipf_ids",
    .summary = "ids ~ Zipf(zipf_s) over vocab (inverse CDF), x = the id's fixed embedding row (a "
               "PCG stream per id: repeated ids repeat exactly)",
    .params = zipf_params,
    .open = zipf_open,
    .batch = zipf_batch,
    .close = zipf_close,
};
