/* metrics_time.c: the cost of the metrics against the routing call they follow, the ratio that
 * `moesim bench --routing` hides by timing both together.
 *
 * Usage: metrics_time N REPS [router:k ...]   (default switch:1 topk:1 topk:2 topk:8 gshard:2
 * expert_choice:1, each at E = 8, 64, 256; MT_E=64 in the environment: only that E). Logits
 * are N(0, 1) from a fixed PCG seed. For each case, REPS times in turn:
 *   - route into a plan of its own, then moe_metrics_compute: the metrics by their separate
 *     pass over the logits (`sep`);
 *   - route into a plan attached to its metrics (moe_metrics_attach, as the pipeline and
 *     `moesim bench --routing` have it), then moe_metrics_compute: what a sweep runs (`att`);
 * and prints the best wall and process-CPU seconds of the route alone, of the separate metrics,
 * and of route + metrics attached, with the metrics' cost as a share of the route: sep/route,
 * and (att - route)/route.
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
    const size_t cap = (size_t)n * (size_t)(r->k > 0 ? r->k : 1) + 16;
    moe_plan *plan = moe_plan_alloc(n, E, cap), *pa = moe_plan_alloc(n, E, cap);
    moe_metrics *mt = moe_metrics_alloc(E), *ma = moe_metrics_alloc(E);
    if (!rng || !plan || !mt || !pa || !ma || moe_metrics_set_opts(mt, &o) ||
        moe_metrics_set_opts(ma, &o) || moe_metrics_attach(ma, pa, n, r->k))
        return 1;
    enum { ROUTE, SEP, ATT };
    double w[3] = {INFINITY, INFINITY, INFINITY}, cpu[3] = {INFINITY, INFINITY, INFINITY};
    for (int i = 0; i < reps; i++) {
        moe_route_in in = {n, E, L, NULL, NULL, rng, NULL, NULL, 0, NULL, NULL};
        double tw[4], u[4];
        tw[0] = clock_s(CLOCK_MONOTONIC), u[0] = clock_s(CLOCK_PROCESS_CPUTIME_ID);
        if (moe_pipeline_route_stage(r, &in, plan, NULL))
            return 1;
        tw[1] = clock_s(CLOCK_MONOTONIC), u[1] = clock_s(CLOCK_PROCESS_CPUTIME_ID);
        if (moe_metrics_compute(plan, L, 0, 0, 0, 0, mt))
            return 1;
        tw[2] = clock_s(CLOCK_MONOTONIC), u[2] = clock_s(CLOCK_PROCESS_CPUTIME_ID);
        if (moe_pipeline_route_stage(r, &in, pa, NULL) ||
            moe_metrics_compute(pa, L, 0, 0, 0, 0, ma))
            return 1;
        tw[3] = clock_s(CLOCK_MONOTONIC), u[3] = clock_s(CLOCK_PROCESS_CPUTIME_ID);
        for (int j = 0; j < 3; j++) {
            w[j] = fmin(w[j], tw[j + 1] - tw[j]);
            cpu[j] = fmin(cpu[j], u[j + 1] - u[j]);
        }
    }
    printf("%-18s E=%-4d wall ms: route %8.3f sep %8.3f att %8.3f -> sep/route %5.2f "
           "(att-route)/route %5.2f | cpu ms: route %8.3f sep %8.3f att %8.3f -> %5.2f %5.2f\n",
           spec, E, 1e3 * w[ROUTE], 1e3 * w[SEP], 1e3 * w[ATT], w[SEP] / w[ROUTE],
           (w[ATT] - w[ROUTE]) / w[ROUTE], 1e3 * cpu[ROUTE], 1e3 * cpu[SEP], 1e3 * cpu[ATT],
           cpu[SEP] / cpu[ROUTE], (cpu[ATT] - cpu[ROUTE]) / cpu[ROUTE]);
    moe_metrics_free(mt);
    moe_metrics_free(ma);
    moe_plan_free(plan);
    moe_plan_free(pa);
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
    static const char *def[] = {"switch:1", "topk:1", "topk:2",
                                "topk:8",   "gshard:2", "expert_choice:1"};
    const char **cases = argc > 3 ? (const char **)argv + 3 : def;
    const int nc = argc > 3 ? argc - 3 : (int)(sizeof def / sizeof def[0]);
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
