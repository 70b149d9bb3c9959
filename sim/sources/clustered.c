/* clustered.c: the `clustered` token source, a Gaussian mixture: K centres drawn once as unit
 * directions (gsl_ran_dir_nd from (seed, MOE_STREAM_SOURCE_PARAM)) scaled to `radius`, weights
 * Zipf w_i ~ (i+1)^-zipf_s or Dirichlet(alpha) (from (seed, MOE_STREAM_SOURCE_PARAM + 16));
 * per token a cluster (gsl_ran_discrete) and its row centre + N(0, sigma^2 I); ids uniform.
 * The same code serves `drift` (drift.c), whose ranking rotates by drift_step per batch. */
#include "clustered.h"

#include <gsl/gsl_randist.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    int K;                 /* clusters */
    double *dir;           /* (K,D) unit centre directions */
    double radius, sigma;
    double *w;             /* (K) cluster weights */
    gsl_ran_discrete_t *wtab;
    long drift_step;
} clustered_ws;

static const moe_source_param clustered_params[] = {
    MOE_SP_CLUSTERS,
    MOE_SP_END,
};

/* w (K): Dirichlet(alpha, ..., alpha) drawn once. */
static int dirichlet_weights(moe_source *s, clustered_ws *c)
{
    int rc = MOE_OK;
    double *alpha = moe_source_calloc((size_t)c->K, sizeof *alpha, &rc, "Dirichlet parameters");
    gsl_rng *rd = rc ? NULL : moe_rng_alloc(s->seed, MOE_STREAM_SOURCE_PARAM + 16);
    if (!rc && !rd)
        rc = MOE_ENOMEM;
    if (!rc) {
        for (int i = 0; i < c->K; i++)
            alpha[i] = moe_source_num(s, "alpha");
        gsl_ran_dirichlet(rd, (size_t)c->K, alpha, c->w);
    }
    gsl_rng_free(rd);
    free(alpha);
    if (rc)
        return rc;
    double sum = 0.0;
    for (int i = 0; i < c->K; i++)
        sum += c->w[i];
    if (!(sum > 0.0) || !isfinite(sum))
        return moe_source_fail(s, "alpha", "use a larger alpha", "Dirichlet weights underflowed");
    return MOE_OK;
}

int moe_clustered_open(moe_source *s)
{
    int rc = MOE_OK;
    clustered_ws *c = moe_source_calloc(1, sizeof *c, &rc, "cluster state");
    if (rc)
        return rc;
    s->ws = c;
    double kk = moe_source_num(s, "clusters");
    c->K = kk < 0 ? s->m : (int)kk;
    c->radius = moe_source_num(s, "radius");
    c->sigma = moe_source_num(s, "sigma");
    c->drift_step = moe_source_has(s, "drift_step") ? (long)moe_source_num(s, "drift_step") : 0;
    c->dir = moe_source_calloc((size_t)c->K * s->d, sizeof *c->dir, &rc, "cluster centres");
    c->w = moe_source_calloc((size_t)c->K, sizeof *c->w, &rc, "cluster weights");
    if (rc)
        return rc;
    gsl_rng *rp = moe_rng_alloc(s->seed, MOE_STREAM_SOURCE_PARAM);
    if (!rp)
        return MOE_ENOMEM;
    for (int i = 0; i < c->K; i++)
        gsl_ran_dir_nd(rp, (size_t)s->d, c->dir + (size_t)i * s->d);
    gsl_rng_free(rp);
    if (strcmp(moe_source_str(s, "weights"), "dirichlet") == 0) {
        if ((rc = dirichlet_weights(s, c)))
            return rc;
    } else {
        double zs = moe_source_num(s, "zipf_s");
        for (int i = 0; i < c->K; i++)
            c->w[i] = pow(i + 1.0, -zs);
    }
    c->wtab = gsl_ran_discrete_preproc((size_t)c->K, c->w);
    if (!c->wtab)
        return moe_fail(MOE_ENOMEM, NULL, "cannot tabulate the cluster weights (source %s)",
                        s->type->name);
    return MOE_OK;
}

int moe_clustered_batch(moe_source *s, int b)
{
    const clustered_ws *c = s->ws;
    const int D = s->d, K = c->K;
    const long shift = (long)(((long long)b * (c->drift_step % K)) % K);
    for (int t = 0; t < s->n; t++) {
        long i = (long)gsl_ran_discrete(s->rng, c->wtab);
        long cl = (i + shift) % K; /* drift: cluster (i + b*drift_step) mod K gets weight w_i */
        const double *dir = c->dir + (size_t)cl * D;
        float *x = s->x + (size_t)t * D;
        for (int j = 0; j < D; j++)
            x[j] = (float)(c->radius * dir[j] + gsl_ran_gaussian_ziggurat(s->rng, c->sigma));
    }
    moe_source_fill_ids_uniform(s);
    return MOE_OK;
}

void moe_clustered_close(moe_source *s)
{
    clustered_ws *c = s->ws;
    if (!c)
        return;
    free(c->dir);
    free(c->w);
    if (c->wtab)
        gsl_ran_discrete_free(c->wtab);
    free(c);
    s->ws = NULL;
}

/* gate = aligned: the columns point along the unit centres */
const double *moe_clustered_gate_dirs(const moe_source *s, int *count)
{
    const clustered_ws *c = s->ws;
    if (strcmp(moe_source_str(s, "gate"), "aligned") != 0)
        return NULL;
    *count = c->K;
    return c->dir;
}

const moe_source_type moe_source_clustered = {
    .name = "clustered",
    .summary =
        "Gaussian mixture: centres on a sphere, weights Zipf or Dirichlet; ids uniform over vocab",
    .params = clustered_params,
    .open = moe_clustered_open,
    .batch = moe_clustered_batch,
    .close = moe_clustered_close,
    .gate_dirs = moe_clustered_gate_dirs,
};
