/* train_bench.c: the training-step benchmark of train.h (moe_train_bench): one fp32 training
 * step (teacher targets, forward, backward, Adam update) of the reference shape, timed on the
 * monotonic clock, each step on its own; *sec_per_step is the median over the timed steps.
 * The PyTorch loop of the same model is sim/bench_torch_train.py (run by sim/bench_train.c). */
#include "train.h"

#include <gsl/gsl_randist.h>
#include <stdlib.h>

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

enum { BENCH_N = 4096, BENCH_D = 256, BENCH_F = 1024, BENCH_E = 16, BENCH_K = 2 };

int moe_train_bench(int steps, int act, double *sec_per_step, double *last_loss)
{
    moe_train_config c;
    moe_train_config_default(&c);
    c.n = BENCH_N;
    c.d = BENCH_D;
    c.f = BENCH_F;
    c.m = BENCH_E;
    c.act = act;
    c.optimizer = MOE_OPT_ADAM;
    c.lr = 1e-3;
    c.aux_weight = 1e-2;
    c.z_weight = 1e-3;
    c.teacher_experts = BENCH_E;
    c.teacher_k = BENCH_K;
    moe_route_opts o;
    moe_route_opts_default(&o);
    o.k = BENCH_K;
    moe_trainer *tr = NULL;
    int rc = moe_train_alloc(&c, moe_router_find("topk"), &o, &tr);
    if (rc)
        return rc;
    /* two batches of x ~ N(0,1), alternating */
    float *x = malloc(2 * (size_t)BENCH_N * BENCH_D * sizeof *x);
    int64_t *ids = calloc(BENCH_N, sizeof *ids);
    double *t = malloc((size_t)(steps > 0 ? steps : 1) * sizeof *t);
    gsl_rng *r = moe_rng_alloc(c.seed, MOE_STREAM_TOKENS);
    if (!x || !ids || !r || !t) {
        rc = moe_fail(MOE_ENOMEM, NULL, "out of memory (training benchmark)");
        goto done;
    }
    for (size_t i = 0; i < 2 * (size_t)BENCH_N * BENCH_D; i++)
        x[i] = (float)gsl_ran_gaussian_ziggurat(r, 1.0);
    moe_batch b = {0};
    b.n = BENCH_N;
    b.d = BENCH_D;
    b.m = BENCH_E;
    b.ids = ids;
    for (int s = 0; s <= steps && !rc; s++) { /* step 0 is the warm-up */
        b.x = x + (size_t)(s % 2) * BENCH_N * BENCH_D;
        double t0 = moe_now();
        rc = moe_train_step(tr, &b, last_loss);
        if (s > 0)
            t[s - 1] = moe_now() - t0;
    }
    if (!rc && steps > 0) {
        qsort(t, (size_t)steps, sizeof *t, cmp_double);
        *sec_per_step = steps % 2 ? t[steps / 2] : 0.5 * (t[steps / 2 - 1] + t[steps / 2]);
    } else if (!rc) {
        *sec_per_step = 0.0;
    }
done:
    free(t);
    free(x);
    free(ids);
    gsl_rng_free(r);
    moe_train_free(tr);
    return rc;
}
