/* collapsed.c: the `collapsed` token source: tokens near one fixed unit direction u (drawn once
 * from (seed, MOE_STREAM_SOURCE_PARAM)), x = a u + N(0, s^2 I) with a = collapse sigma sqrt(D)
 * and s = sqrt(1 - collapse^2) sigma, so E|x|^2 = D sigma^2 and cos(x, u) -> collapse as D
 * grows; ids uniform over vocab. */
#include "source.h"

#include <gsl/gsl_randist.h>
#include <math.h>
#include <stdlib.h>

static const moe_source_param collapsed_params[] = {
    {"collapse", MOE_SP_NUM, "0.9", 0.9, 0, 1, 0, NULL,
     "share of the norm along u: x = collapse*sigma*sqrt(D) u + N(0, (1-collapse^2) sigma^2 I)"},
    MOE_SP_SIGMA("overall scale: E|x|^2 = D sigma^2"),
    MOE_SP_VOCAB("32000", 32000, 2147483647.0),
    MOE_SP_GATE_SCALE,
    MOE_SP_END,
};

static int collapsed_open(moe_source *s)
{
    int rc = MOE_OK;
    double *u = moe_source_calloc((size_t)s->d, sizeof *u, &rc, "collapse direction"); /* (D) */
    if (rc)
        return rc;
    s->ws = u;
    gsl_rng *rp = moe_rng_alloc(s->seed, MOE_STREAM_SOURCE_PARAM);
    if (!rp)
        return MOE_ENOMEM;
    gsl_ran_dir_nd(rp, (size_t)s->d, u);
    gsl_rng_free(rp);
    return MOE_OK;
}

static int collapsed_batch(moe_source *s, int b)
{
    (void)b;
    const int D = s->d;
    const double *u = s->ws;
    const double collapse = moe_source_num(s, "collapse"), sigma = moe_source_num(s, "sigma");
    const double a = collapse * sigma * sqrt((double)D);
    const double sd = sqrt(1.0 - collapse * collapse) * sigma;
    for (int t = 0; t < s->n; t++) {
        float *x = s->x + (size_t)t * D;
        for (int j = 0; j < D; j++)
            x[j] = (float)(a * u[j] + gsl_ran_gaussian_ziggurat(s->rng, sd));
    }
    moe_source_fill_ids_uniform(s);
    return MOE_OK;
}

static void collapsed_close(moe_source *s) { free(s->ws); }

const moe_source_type moe_source_collapsed = {
    .name = "collapsed",
    .summary = "tokens near one fixed unit direction u; ids uniform over vocab",
    .params = collapsed_params,
    .open = collapsed_open,
    .batch = collapsed_batch,
    .close = collapsed_close,
};
