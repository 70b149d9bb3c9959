/* metrics_time.c: wall seconds of moe_metrics_compute against the routing call it follows, the
 * ratio that `moesim bench --routing` hides by timing both together.
 *
 * Usage: metrics_time N REPS [router:k ...]   (default topk:2 switch:1 gshard:2
 * expert_choice:2, each at E = 8, 64, 256; MT_E=64 in the environment: only that E). Logits
 * are N(0, 1) from a fixed PCG seed. For each case: route, then metrics, alternated REPS times;
 * prints the best wall and process-CPU seconds of each and their ratios.
 * A case with "+noise" after k (topk:2+noise) routes with noise_std = 1. */
#include "moe.h"
#include "options.h"
#include "pipeline.h"
#include "../../routers/par.h"

#include <gsl/gsl_randist.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double clock_s(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int one_case(const char *spec, const double *L, int n, int E, int reps)
{
    char name[64];
    int k = 1, noise = 0;
    snprintf(name, sizeof name, "%s", spec);
    char *c = strchr(name, ':');
    if (c) {
        *c = '\0';
        k = atoi(c + 1);
        noise = strstr(c + 1, "+noise") != NULL;
    }
    const moe_router_type *t = moe_router_find(name);
    if (!t) {
        fprintf(stderr, "metrics_time: no router %s\n", name);
        return 1;
    }
    moe_route_opts o; /* capacity factor 1.25 as bench --routing */
    moe_route_opts_default(&o);
    char kv[16];
    snprintf(kv, sizeof kv, "%d", k);
    if (moe_route_opts_set(&o, "k", kv) || moe_route_opts_set(&o, "capacity_factor", "1.25") ||
        (noise && moe_route_opts_set(&o, "noise_std", "1")))
        return 1;
    moe_router *r = NULL;
    if (moe_router_alloc(t, &o, n, E, &r))
        return 1;
    gsl_rng *rng = moe_rng_alloc(1, moe_router_stream(t));
    moe_plan *plan = moe_plan_alloc(n, E, (size_t)n * (size_t)(r->k > 0 ? r->k : 1) + 16);
    moe_metrics *mt = moe_metrics_alloc(E);
    if (!rng || !plan || !mt || moe_metrics_set_opts(mt, &o))
        return 1;
    double best_r = INFINITY, best_m = INFINITY, cpu_r = INFINITY, cpu_m = INFINITY;
    for (int i = 0; i < reps; i++) {
        moe_route_in in = {n, E, L, NULL, NULL, rng, NULL, NULL, 0, NULL, NULL};
        double t0 = clock_s(CLOCK_MONOTONIC), c0 = clock_s(CLOCK_PROCESS_CPUTIME_ID);
        if (moe_pipeline_route_stage(r, &in, plan, NULL))
            return 1;
        double t1 = clock_s(CLOCK_MONOTONIC), c1 = clock_s(CLOCK_PROCESS_CPUTIME_ID);
        if (moe_metrics_compute(plan, L, 0, 0, 0, 0, mt))
            return 1;
        double t2 = clock_s(CLOCK_MONOTONIC), c2 = clock_s(CLOCK_PROCESS_CPUTIME_ID);
        best_r = fmin(best_r, t1 - t0);
        best_m = fmin(best_m, t2 - t1);
        cpu_r = fmin(cpu_r, c1 - c0);
        cpu_m = fmin(cpu_m, c2 - c1);
    }
    printf("%-18s E=%-4d wall: route %8.3f ms metrics %8.3f ms ratio %6.3f | cpu: route "
           "%8.3f ms metrics %8.3f ms ratio %6.3f\n",
           spec, E, 1e3 * best_r, 1e3 * best_m, best_m / best_r, 1e3 * cpu_r, 1e3 * cpu_m,
           cpu_m / cpu_r);
    moe_metrics_free(mt);
    moe_plan_free(plan);
    gsl_rng_free(rng);
    moe_router_free(r);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: metrics_time N REPS [router:k ...]\n");
        return 2;
    }
    const int n = atoi(argv[1]), reps = atoi(argv[2]);
    static const char *def[] = {"topk:2", "switch:1", "gshard:2", "expert_choice:2"};
    const char **cases = argc > 3 ? (const char **)argv + 3 : def;
    const int nc = argc > 3 ? argc - 3 : 4;
    static const int Es[] = {8, 64, 256};
    const int e_only = getenv("MT_E") ? atoi(getenv("MT_E")) : 0;
    gsl_rng *g = moe_rng_alloc(7, 0);
    for (int ei = 0; ei < 3; ei++) {
        const int E = Es[ei];
        if (e_only && E != e_only)
            continue;
        double *L = malloc((size_t)n * E * sizeof *L);
        if (!L || !g)
            return 1;
        for (size_t i = 0; i < (size_t)n * E; i++)
            L[i] = gsl_ran_gaussian_ziggurat(g, 1.0);
        for (int c = 0; c < nc; c++)
            if (one_case(cases[c], L, n, E, reps))
                return 1;
        free(L);
    }
    gsl_rng_free(g);
    return 0;
}
