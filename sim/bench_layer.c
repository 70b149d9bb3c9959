/* bench_layer.c: the timed layer points of `moesim bench` (bench.h): a configuration's batch
 * pipeline (gate, route, layer) on n tokens, its forwards timed phase by phase, the statistics
 * of the timings, and the same point padded to capacity.
 */
#include "bench.h"
#include "options.h"

#include <gsl/gsl_sort.h>
#include <gsl/gsl_statistics_double.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Sorts v (len >= 1) in place. */
bench_stat bench_stat_of(double *v, int len)
{
    bench_stat s;
    gsl_sort(v, 1, (size_t)len);
    s.median = gsl_stats_median_from_sorted_data(v, 1, (size_t)len);
    s.q1 = gsl_stats_quantile_from_sorted_data(v, 1, (size_t)len, 0.25);
    s.q3 = gsl_stats_quantile_from_sorted_data(v, 1, (size_t)len, 0.75);
    s.min = v[0];
    s.max = v[len - 1];
    return s;
}

void bench_point_free(layer_point *p)
{
    moe_pipeline_free(p->pipe);
    moe_route_opts_release(&p->o);
    memset(p, 0, sizeof *p);
}

int bench_point_alloc(const bench_cfg *cfg, const bench_weights *w, int n, int pad,
                      layer_point *p)
{
    memset(p, 0, sizeof *p);
    p->n = n;
    moe_route_opts_default(&p->o);
    char kbuf[16];
    snprintf(kbuf, sizeof kbuf, "%d", cfg->k);
    int rc;
    if ((rc = moe_route_opts_set(&p->o, "k", kbuf)) ||
        (rc = moe_route_opts_set(&p->o, "capacity_factor", BENCH_CF)) ||
        (pad && (rc = moe_route_opts_set(&p->o, "pad_to_capacity", "true"))) ||
        (rc = moe_capacity(&p->o, cfg->k, n, cfg->E, &p->C))) {
        bench_point_free(p);
        return rc;
    }
    const moe_router_type *t = moe_router_find(cfg->router);
    const moe_pipeline_cfg pc = {.rtype = t, .opts = &p->o, .T = n, .M = cfg->E,
                                 .C_max = p->C > 0 ? p->C : 1, .w = &w->ex, .wg = w->wg,
                                 .flags = MOE_PIPE_LAYER, .label = cfg->name};
    if (!t)
        rc = moe_fail(MOE_EINVAL, NULL, "router %s is not registered (bench)", cfg->router);
    else
        rc = moe_pipeline_alloc(&pc, &p->pipe);
    if (rc) {
        bench_point_free(p);
        return rc;
    }
    p->plan = moe_pipeline_plan(p->pipe);
    p->y = moe_pipeline_output(p->pipe);
    return MOE_OK;
}

/* One forward through the pipeline: t[MOE_NPHASES] gets the phase times. */
static int point_forward(layer_point *p, const bench_weights *w, const float *x, double *t)
{
    moe_batch b = {p->n, w->d, w->E, (float *)x, NULL, NULL, NULL, NULL, 0, NULL, NULL};
    moe_phase_times tm;
    int rc = moe_pipeline_run_batch(p->pipe, &b, NULL, &tm);
    if (!rc)
        moe_phase_times_array(&tm, t);
    return rc;
}

int bench_point_measure(layer_point *p, const bench_weights *w, const float *x, int repeats,
                        bench_stat *st)
{
    double t[MOE_NPHASES];
    double *v = malloc((size_t)MOE_NPHASES * (size_t)repeats * sizeof *v);
    if (!v)
        return moe_fail(MOE_ENOMEM, NULL, "out of memory (timings)");
    int rc = point_forward(p, w, x, t);
    for (int r = 0; !rc && r < repeats; r++) {
        rc = point_forward(p, w, x, t);
        for (int ph = 0; ph < MOE_NPHASES; ph++)
            v[(size_t)ph * (size_t)repeats + (size_t)r] = t[ph];
    }
    if (!rc)
        for (int ph = 0; ph < MOE_NPHASES; ph++)
            st[ph] = bench_stat_of(v + (size_t)ph * (size_t)repeats, repeats);
    free(v);
    return rc;
}

int bench_padded_measure(bench_ctx *c, const bench_cfg *cfg, const bench_weights *w,
                         const float *x, const layer_point *p, const bench_stat *unpadded,
                         bench_stat *padded)
{
    layer_point q;
    int rc = bench_point_alloc(cfg, w, p->n, 1, &q);
    if (rc)
        return rc;
    if ((rc = bench_point_measure(&q, w, x, c->a.repeats, padded)))
        goto out;
    int same = memcmp(q.y, p->y, (size_t)p->n * (size_t)c->sh->d * sizeof *q.y) == 0;
    double rows = (double)cfg->E * (double)p->C, kept = (double)p->plan->n_entries;
    printf("padded to capacity (pad_to_capacity = true: %d x C = %.0f rows, %.3fx the %.0f "
           "kept): expert phase %.2f ms = %.3fx unpadded, layer %.3fx; output %s\n", cfg->E, rows,
           rows / kept, kept, 1e3 * padded[MOE_PHASE_EXPERTS].median,
           padded[MOE_PHASE_EXPERTS].median / unpadded[MOE_PHASE_EXPERTS].median,
           padded[MOE_PHASE_TOTAL].median / unpadded[MOE_PHASE_TOTAL].median,
           same ? "bit for bit the unpadded one" : "DISAGREES with the unpadded one");
    if (!same)
        c->failures++;
out:
    bench_point_free(&q);
    return rc;
}
