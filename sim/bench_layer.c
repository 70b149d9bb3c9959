/* bench_layer.c: the timed layer points of `moesim bench` (bench.h): a configuration's batch
 * pipeline (gate, route, layer) on n tokens, its forwards timed phase by phase, the statistics
 * of the timings, and the same point padded to capacity.
 */
#include "bench.h"
#include "options.h"

#include <gsl/gsl_blas.h>
#include <gsl/gsl_matrix_float.h>
#include <gsl/gsl_sort.h>
#include <gsl/gsl_statistics_double.h>
#include <math.h>
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

/* ---- the reference GEMMs ---- */

/* c (m,n) = a (m,k) b (k,n) through GSL's BLAS interface (OpenBLAS). */
static int sgemm_nn(size_t m, size_t n, size_t k, const float *a, const float *b, float *c)
{
    gsl_matrix_float_const_view A = gsl_matrix_float_const_view_array(a, m, k);
    gsl_matrix_float_const_view B = gsl_matrix_float_const_view_array(b, k, n);
    gsl_matrix_float_view Cv = gsl_matrix_float_view_array(c, m, n);
    int rc = gsl_blas_sgemm(CblasNoTrans, CblasNoTrans, 1.0f, &A.matrix, &B.matrix, 0.0f,
                            &Cv.matrix);
    return rc ? moe_fail(MOE_EINVAL, NULL, "sgemm failed with GSL error %d (bench)", rc)
              : MOE_OK;
}

/* One point's reference GEMMs between rounds: its kept rows grouped per expert, the buffers,
 * the times of the rounds so far. */
typedef struct {
    size_t N, E;
    size_t *off;   /* (E+1) first row of each expert */
    float *A, *O;  /* (N,D) kept tokens grouped by expert, the outputs */
    float *H, *Hg; /* (N,F) with dense, (maxrows,F) */
    double *v;     /* (3 repeats) grouped, dense, activation */
} gemm_run;

static void gemm_run_free(gemm_run *g)
{
    free(g->off);
    free(g->A);
    free(g->O);
    free(g->H);
    free(g->Hg);
    free(g->v);
    memset(g, 0, sizeof *g);
}

static int gemm_run_alloc(const bench_weights *w, const moe_plan *plan, const float *x,
                          int repeats, int dense, gemm_run *g)
{
    size_t D = (size_t)w->d, F = (size_t)w->f, N = plan->n_entries, E = (size_t)w->E;
    memset(g, 0, sizeof *g);
    if (N == 0)
        return moe_fail(MOE_EINPUT, NULL, "the plan kept no entry (bench)");
    g->N = N, g->E = E;
    g->off = calloc(E + 1, sizeof *g->off);
    size_t *fill = calloc(E, sizeof *fill);
    g->A = malloc(N * D * sizeof *g->A);
    g->O = malloc(N * D * sizeof *g->O);
    g->v = malloc(3 * (size_t)repeats * sizeof *g->v);
    size_t maxrows = 0;
    if (g->off && fill && g->A && g->O && g->v) {
        for (size_t i = 0; i < N; i++)
            g->off[plan->entries[i].expert + 1]++;
        for (size_t e = 0; e < E; e++) {
            maxrows = g->off[e + 1] > maxrows ? g->off[e + 1] : maxrows;
            g->off[e + 1] += g->off[e];
        }
        g->Hg = malloc(maxrows * F * sizeof *g->Hg);
        g->H = dense ? malloc(N * F * sizeof *g->H) : NULL;
    }
    if (!g->off || !fill || !g->A || !g->O || !g->v || !g->Hg || (dense && !g->H)) {
        free(fill);
        gemm_run_free(g);
        return moe_fail(MOE_ENOMEM, NULL, "out of memory (reference GEMMs on %zu rows)", N);
    }
    for (size_t i = 0; i < N; i++) {
        const moe_entry *en = &plan->entries[i];
        size_t row = g->off[en->expert] + fill[en->expert]++;
        memcpy(g->A + row * D, x + (size_t)en->token * D, D * sizeof *g->A);
    }
    free(fill);
    return MOE_OK;
}

/* Round r of g (r < 0: a warm-up, not kept): the grouped pair, then with dense the dense pair
 * and the activation. */
static int gemm_run_round(const bench_weights *w, gemm_run *g, int r, int repeats)
{
    size_t D = (size_t)w->d, F = (size_t)w->f, N = g->N;
    int rc = MOE_OK;
    double t0 = moe_now();
    for (size_t e = 0; e < g->E && !rc; e++) {
        size_t rows = g->off[e + 1] - g->off[e];
        if (rows == 0)
            continue;
        rc = sgemm_nn(rows, F, D, g->A + g->off[e] * D, w->w1 + e * D * F, g->Hg);
        if (!rc)
            rc = sgemm_nn(rows, D, F, g->Hg, w->w2 + e * F * D, g->O + g->off[e] * D);
    }
    double t1 = moe_now(), t2 = t1, t3 = t1;
    if (g->H && !rc) {
        if ((rc = sgemm_nn(N, F, D, g->A, w->w1, g->H)) ||
            (rc = sgemm_nn(N, D, F, g->H, w->w2, g->O)))
            return rc;
        t2 = moe_now();
        moe_activate(MOE_ACT_GELU_TANH, g->H, N * F);
        t3 = moe_now();
    }
    if (r >= 0 && !rc) {
        g->v[r] = t1 - t0;
        g->v[repeats + r] = t2 - t1;
        g->v[2 * repeats + r] = t3 - t2;
    }
    return rc;
}

int bench_point_forward(layer_point *p, const bench_weights *w, const float *x, double *t)
{
    moe_batch b = {p->n, w->d, w->E, (float *)x, NULL, NULL, NULL, NULL, 0, NULL, NULL};
    moe_phase_times tm;
    int rc = moe_pipeline_run_batch(p->pipe, &b, NULL, &tm);
    if (!rc)
        moe_phase_times_array(&tm, t);
    return rc;
}

int bench_points_measure(layer_point *p, int np, const bench_weights *w, const float *x,
                         int repeats, int dense, bench_stat *st, gemm_ref *g, bench_stat *paired,
                         double *layer)
{
    const size_t R = (size_t)repeats, nph = MOE_NPHASES;
    double t[MOE_NPHASES];
    double *v = malloc((size_t)np * nph * R * sizeof *v), *q = malloc(R * sizeof *q);
    gemm_run *gr = calloc((size_t)np, sizeof *gr);
    int rc = v && q && gr ? MOE_OK : moe_fail(MOE_ENOMEM, NULL, "out of memory (timings)");
    /* the warm-up round: each point's first forward, which makes the plan its GEMMs take */
    for (int i = 0; i < np && !rc; i++)
        if (!(rc = bench_point_forward(&p[i], w, x, t)) && g &&
            !(rc = gemm_run_alloc(w, p[i].plan, x, repeats, dense, &gr[i])))
            rc = gemm_run_round(w, &gr[i], -1, repeats);
    for (int r = 0; r < repeats && !rc; r++)
        for (int i = 0; i < np && !rc; i++) {
            rc = bench_point_forward(&p[i], w, x, t);
            for (size_t ph = 0; ph < nph && !rc; ph++)
                v[((size_t)i * nph + ph) * R + (size_t)r] = t[ph];
            if (!rc && g)
                rc = gemm_run_round(w, &gr[i], r, repeats);
        }
    for (int i = 0; i < np && !rc; i++) {
        const double *ex = v + ((size_t)i * nph + MOE_PHASE_EXPERTS) * R;
        const double *tl = v + ((size_t)i * nph + MOE_PHASE_TOTAL) * R;
        for (size_t r = 0; layer && r < R; r++)
            layer[(size_t)i * R + r] = tl[r];
        if (g && paired) { /* before the statistics below sort the times in place */
            const double *ref = gr[i].v + (dense ? R : 0);
            for (size_t r = 0; r < R; r++)
                q[r] = ref[r] / ex[r];
            paired[i] = bench_stat_of(q, repeats);
        }
        for (size_t ph = 0; ph < nph; ph++)
            st[(size_t)i * nph + ph] = bench_stat_of(v + ((size_t)i * nph + ph) * R, repeats);
        if (!g)
            continue;
        g[i].grouped = bench_stat_of(gr[i].v, repeats);
        g[i].dense = dense ? bench_stat_of(gr[i].v + R, repeats) : bench_stat_one(NAN);
        g[i].act = dense ? bench_stat_of(gr[i].v + 2 * R, repeats) : bench_stat_one(NAN);
    }
    for (int i = 0; gr && i < np; i++)
        gemm_run_free(&gr[i]);
    free(gr);
    free(v);
    free(q);
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
    if ((rc = bench_points_measure(&q, 1, w, x, c->a.repeats, 0, padded, NULL, NULL, NULL)))
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
