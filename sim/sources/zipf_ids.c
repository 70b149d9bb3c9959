/* zipf_ids.c: the `zipf_ids` token source: ids ~ Zipf(zipf_s) over vocab by inverse CDF (GSL
 * has no Zipf sampler), x = the id's fixed embedding row, drawn from its own PCG stream
 * (seed, MOE_STREAM_SOURCE_PARAM + 16 (id + 2)), so that repeated ids repeat exactly. */
#include "source.h"

#include <gsl/gsl_randist.h>
#include <math.h>
#include <stdlib.h>

typedef struct {
    double *cdf;   /* (vocab) */
    gsl_rng *emb;  /* embedding stream, reseeded per id */
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

/* id = the first i with cdf[i] > u, u ~ U[0,1) from the token stream */
static int zipf_batch(moe_source *s, int b)
{
    (void)b;
    const zipf_ws *z = s->ws;
    const int D = s->d;
    const double sigma = moe_source_num(s, "sigma");
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
        moe_source_reseed(z->emb, s->seed, MOE_STREAM_SOURCE_PARAM + 16 * ((uint64_t)lo + 2));
        float *x = s->x + (size_t)t * D;
        for (int j = 0; j < D; j++)
            x[j] = (float)gsl_ran_gaussian_ziggurat(z->emb, sigma);
    }
    return MOE_OK;
}

static void zipf_close(moe_source *s)
{
    zipf_ws *z = s->ws;
    if (!z)
        return;
    free(z->cdf);
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
