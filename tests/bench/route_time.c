/* route_time.c: CPU seconds of one routing call in the static build, the reference that
 * python/tests/bench_route.py compares moesim.route with. Does what `moesim route` does before
 * writing files: allocate the router, route, compute the metrics, free.
 *
 * Usage: route_time LOGITS.npy REPS ROUTER [key=value ...]
 * Prints "route_time: <fastest> <median>" in seconds of process CPU time over REPS runs. */
#include "moe.h"
#include "npy.h"
#include "options.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double cpu_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static int route_once(const moe_router_type *t, const moe_route_opts *o, const double *L, int n,
                      int m)
{
    moe_router *r = NULL;
    int rc = moe_router_alloc(t, o, n, m, &r);
    if (rc)
        return rc;
    gsl_rng *rng = (t->flags & MOE_RF_USES_RNG) ? moe_rng_alloc(0, moe_router_stream(t)) : NULL;
    size_t reserve = (t->flags & MOE_RF_DENSE) ? (size_t)n * (size_t)m : (size_t)n * (size_t)r->k;
    moe_plan *plan = moe_plan_alloc(n, r->E, reserve);
    moe_metrics *mt = moe_metrics_alloc(r->E);
    moe_route_in in = {n, m, L, NULL, NULL, rng, NULL, NULL, 0, NULL, NULL};
    if (!plan || !mt)
        rc = moe_fail(MOE_ENOMEM, NULL, "out of memory");
    else if (!(rc = moe_router_route(r, &in, plan)))
        rc = moe_metrics_compute(plan, L, 0, 0, MOE_ACT_GELU_TANH, 0, mt);
    moe_metrics_free(mt);
    moe_plan_free(plan);
    gsl_rng_free(rng);
    moe_router_free(r);
    return rc;
}

int main(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: route_time LOGITS.npy REPS ROUTER [key=value ...]\n");
        return 2;
    }
    moe_install_gsl_handler();
    moe_npy a;
    double *L = NULL;
    moe_route_opts o;
    moe_route_opts_default(&o);
    int reps = atoi(argv[2]), rc;
    const moe_router_type *t = moe_router_find(argv[3]);
    if (!t) {
        fprintf(stderr, "route_time: unknown router %s\n", argv[3]);
        return 2;
    }
    if ((rc = moe_npy_read(argv[1], &a)) || (rc = moe_npy_as_double(&a, argv[1], &L)))
        goto fail;
    for (int i = 4; i < argc; i++) {
        char *eq = strchr(argv[i], '=');
        if (!eq) {
            fprintf(stderr, "route_time: want key=value, got %s\n", argv[i]);
            return 2;
        }
        *eq = '\0';
        if ((rc = moe_route_opts_set(&o, argv[i], eq + 1)))
            goto fail;
    }
    double *ts = calloc((size_t)(reps > 0 ? reps : 1), sizeof *ts);
    if (!ts || a.ndim != 2 || reps < 1) {
        fprintf(stderr, "route_time: want 2-d logits and REPS >= 1\n");
        return 2;
    }
    int n = (int)a.shape[0], m = (int)a.shape[1];
    if ((rc = route_once(t, &o, L, n, m))) /* warm-up */
        goto fail;
    for (int i = 0; i < reps; i++) {
        double t0 = cpu_now();
        if ((rc = route_once(t, &o, L, n, m)))
            goto fail;
        ts[i] = cpu_now() - t0;
    }
    qsort(ts, (size_t)reps, sizeof *ts, cmp_double);
    printf("route_time: %.6f %.6f\n", ts[0], ts[reps / 2]);
    free(ts);
    free(L);
    moe_npy_free(&a);
    return 0;
fail:
    fprintf(stderr, "route_time: error: %s\n", moe_errmsg());
    return 1;
}
