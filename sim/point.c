/* point.c: the runner of one sweep point (point.h). Owns moe_point_run, the result struct and the
 * table of scalar metrics stored per point and per batch.
 *
 * For one point: open the source; draw the expert weights from moe_rng_alloc(seed,
 * MOE_STREAM_EXPERT_W) in the order w1, b1, w2, b2 (w1 ~ N(0, 1/D), w2 ~ N(0, 1/F), biases
 * ~ N(0, 0.01^2)); allocate router, layer, plan and metrics once; then per batch:
 *   gate     logits (T,M) = x Wg (skipped when the batch records logits)
 *   route    timed on its own
 *   layer    y (T,D) by moe_layer_forward (dispatch, experts, combine timed by the layer)
 *   metrics  moe_metrics_compute
 *   errors   output_error_dense: rel. L2 of y from the dense mixture sum_e p[t,e] FFN_e(x_t) on
 *            min(T, error_tokens) evenly spaced rows (p = softmax of the logits; dense plans:
 *            the combine weights summed per expert); output_error_dropless (routers with a
 *            dropless form): rel. L2 of y from the same router with dropless = 1 on the same
 *            batch and the same random draws (a second instance, its rng seeded identically);
 *            0 for a router that is dropless already. Neither is part of the timings.
 *   observe  stateful routers update their state from the plan (both instances)
 * Random draws: gshard from (seed, MOE_STREAM_GSHARD), gate noise from (seed, MOE_STREAM_NOISE).
 */
#include "point.h"

#include "layer.h"

#include <gsl/gsl_randist.h>
#include <gsl/gsl_statistics_double.h>
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

const char *const moe_point_phases[MOE_T_COUNT] = {"gate",    "route",   "dispatch",
                                                    "experts", "combine", "total"};

static double metric_value(const moe_metrics *mt, const moe_point_metric *m)
{
    const char *base = (const char *)mt + m->offset;
    if (m->is_long) {
        long v;
        memcpy(&v, base, sizeof v);
        return (double)v;
    }
    double v;
    memcpy(&v, base, sizeof v);
    return v;
}

/* ---- result ---- */

moe_point_result *moe_point_result_alloc(int E, int batches)
{
    if (E < 1 || batches < 1) {
        moe_fail(MOE_EINVAL, NULL, "point result needs E >= 1 and batches >= 1 (E = %d, "
                 "batches = %d)", E, batches);
        return NULL;
    }
    moe_point_result *r = calloc(1, sizeof *r);
    if (!r)
        goto nomem;
    r->E = E;
    r->batches = batches;
    r->assigned = calloc((size_t)E, sizeof *r->assigned);
    r->kept = calloc((size_t)E, sizeof *r->kept);
    r->importance = calloc((size_t)E, sizeof *r->importance);
    r->experts_per_token = calloc((size_t)E + 1, sizeof *r->experts_per_token);
    r->batch_metric = calloc((size_t)batches * MOE_POINT_NMETRICS, sizeof *r->batch_metric);
    r->batch_time = calloc((size_t)batches * MOE_T_COUNT, sizeof *r->batch_time);
    if (!r->assigned || !r->kept || !r->importance || !r->experts_per_token ||
        !r->batch_metric || !r->batch_time)
        goto nomem;
    return r;
nomem:
    moe_point_result_free(r);
    moe_fail(MOE_ENOMEM, NULL, "out of memory (point result for %d experts, %d batches)", E,
             batches);
    return NULL;
}

void moe_point_result_free(moe_point_result *r)
{
    if (!r)
        return;
    free(r->assigned);
    free(r->kept);
    free(r->importance);
    free(r->experts_per_token);
    free(r->batch_metric);
    free(r->batch_time);
    free(r);
}

/* ---- helpers ---- */

int moe_point_error_rows(int T, int error_tokens, int *rows)
{
    int nr = (error_tokens <= 0 || error_tokens > T) ? T : error_tokens;
    for (int i = 0; i < nr; i++)
        rows[i] = (int)(((long long)i * T) / nr);
    return nr;
}

static void draw_normal(gsl_rng *rng, double sigma, float *v, size_t len)
{
    for (size_t i = 0; i < len; i++)
        v[i] = (float)gsl_ran_gaussian_ziggurat(rng, sigma);
}

/* ---- the runner ---- */

typedef struct {
    moe_source *src;
    gsl_rng *wrng, *rng, *rng2;
    float *w1, *b1, *w2, *b2;
    moe_router *r, *r2;
    moe_layer *L;
    moe_plan *plan, *plan2;
    moe_metrics *mt;
    double *logits, *p;
    int *rows;
    float *y, *y2, *ysub, *ydense;
    long C_max;  /* the layer's C_max and the plan's entry capacity (expert-parallel hook) */
    size_t cap;
} point_ws;

static void ws_free(point_ws *w)
{
    moe_source_close(w->src);
    gsl_rng_free(w->wrng);
    gsl_rng_free(w->rng);
    gsl_rng_free(w->rng2);
    free(w->w1);
    free(w->b1);
    free(w->w2);
    free(w->b2);
    moe_router_free(w->r);
    moe_router_free(w->r2);
    moe_layer_free(w->L);
    moe_plan_free(w->plan);
    moe_plan_free(w->plan2);
    moe_metrics_free(w->mt);
    free(w->logits);
    free(w->p);
    free(w->rows);
    free(w->y);
    free(w->y2);
    free(w->ysub);
    free(w->ydense);
}

static int point_alloc(const moe_point *pt, point_ws *w, int *want_dropless)
{
    const int T = pt->tokens, D = pt->d, E = pt->E, M = pt->m;
    const int fw = pt->act == MOE_ACT_SWIGLU ? 2 * pt->f : pt->f;
    const unsigned flags = pt->rtype->flags;
    int rc = moe_source_open(pt->source, pt->params, pt->nparams, T, D, M, pt->seed, &w->src);
    if (rc)
        return rc;
    int rm = moe_source_required_m(w->src);
    if (rm && rm != M)
        return moe_fail(MOE_EINVAL, NULL, "source %s records %d experts, the point needs %d "
                        "(distribution %s)", pt->source, rm, M, pt->distribution);
    /* expert weights */
    w->wrng = moe_rng_alloc(pt->seed, MOE_STREAM_EXPERT_W);
    size_t n1 = (size_t)E * D * fw, nb1 = (size_t)E * fw, n2 = (size_t)E * pt->f * D,
           nb2 = (size_t)E * D;
    w->w1 = malloc(n1 * sizeof *w->w1);
    w->b1 = malloc(nb1 * sizeof *w->b1);
    w->w2 = malloc(n2 * sizeof *w->w2);
    w->b2 = malloc(nb2 * sizeof *w->b2);
    if (!w->wrng || !w->w1 || !w->b1 || !w->w2 || !w->b2)
        return moe_fail(MOE_ENOMEM, NULL, "out of memory (expert weights, point %s)",
                        pt->config_key);
    draw_normal(w->wrng, 1.0 / sqrt((double)D), w->w1, n1);
    draw_normal(w->wrng, 0.01, w->b1, nb1);
    draw_normal(w->wrng, 1.0 / sqrt((double)pt->f), w->w2, n2);
    draw_normal(w->wrng, 0.01, w->b2, nb2);
    /* routers: the point's and, where the router has one, its dropless twin */
    if ((rc = moe_router_alloc(pt->rtype, &pt->opts, T, M, &w->r)))
        return rc;
    *want_dropless = (flags & MOE_RF_HAS_DROPLESS) && !pt->opts.dropless;
    if (*want_dropless) {
        moe_route_opts o2 = pt->opts;
        o2.dropless = 1;
        if ((rc = moe_router_alloc(pt->rtype, &o2, T, M, &w->r2)))
            return rc;
    }
    if ((flags & MOE_RF_USES_RNG) || pt->opts.noise_std > 0.0) {
        uint64_t stream = moe_router_stream(pt->rtype);
        w->rng = moe_rng_alloc(pt->seed, stream);
        w->rng2 = moe_rng_alloc(pt->seed, stream);
        if (!w->rng || !w->rng2)
            return moe_fail(MOE_ENOMEM, NULL, "out of memory (rng)");
    }
    /* layer: slots for the formula's capacity, and for every token on one expert (dropless
     * plans); buffers are touched only as far as a plan fills them. */
    long C_max, C_formula = 0;
    size_t cap;
    if (flags & MOE_RF_DENSE) {
        C_max = M / E;
        cap = (size_t)T * (size_t)M;
    } else {
        /* replay claims k_rec experts per token, fixed by the trace: ask batch 0 */
        int kc = w->r->k > 0 ? w->r->k : 1;
        if (flags & MOE_RF_NEEDS_CHOICES) {
            moe_batch b0;
            if ((rc = moe_source_batch(w->src, 0, &b0)))
                return rc;
            if (b0.k_rec > kc)
                kc = b0.k_rec;
        }
        if ((rc = moe_capacity(&pt->opts, kc, T, E, &C_formula)))
            return rc;
        C_max = C_formula < T ? T : C_formula;
        size_t kept_max = (size_t)E * (size_t)(C_formula < T ? C_formula : T);
        cap = (size_t)T * (size_t)kc;
        if (kept_max > cap)
            cap = kept_max; /* expert choice: E*C entries */
    }
    w->C_max = C_max;
    w->cap = cap;
    w->L = moe_layer_alloc(T, E, C_max, D, pt->f, pt->act);
    if (!w->L)
        return moe_fail(MOE_ENOMEM, NULL, "cannot allocate the layer (T = %d, E = %d, C = %ld, "
                        "D = %d, F = %d)", T, E, C_max, D, pt->f);
    w->plan = moe_plan_alloc(T, E, cap);
    w->plan2 = *want_dropless ? moe_plan_alloc(T, E, cap) : NULL;
    w->mt = moe_metrics_alloc(E);
    w->logits = malloc((size_t)T * M * sizeof *w->logits);
    w->p = malloc((size_t)T * E * sizeof *w->p);
    w->rows = malloc((size_t)T * sizeof *w->rows);
    w->y = malloc((size_t)T * D * sizeof *w->y);
    w->y2 = *want_dropless ? malloc((size_t)T * D * sizeof *w->y2) : NULL;
    w->ysub = malloc((size_t)T * D * sizeof *w->ysub);
    w->ydense = malloc((size_t)T * D * sizeof *w->ydense);
    if (!w->plan || (*want_dropless && (!w->plan2 || !w->y2)) || !w->mt || !w->logits ||
        !w->p || !w->rows || !w->y || !w->ysub || !w->ydense)
        return moe_fail(MOE_ENOMEM, NULL, "out of memory (point workspaces, %d tokens)", T);
    return MOE_OK;
}

int moe_point_run(const moe_point *pt, volatile sig_atomic_t *stop, moe_point_result *res)
{
    return moe_point_run_ep(pt, stop, res, NULL);
}

int moe_point_run_ep(const moe_point *pt, volatile sig_atomic_t *stop, moe_point_result *res,
                     const moe_point_ep *ep)
{
    const double wall0 = moe_now();
    if (res->E != pt->E || res->batches != pt->batches)
        return moe_fail(MOE_EINVAL, NULL, "result sized for E = %d, %d batches; point has "
                        "E = %d, %d batches (moe_point_run)", res->E, res->batches, pt->E,
                        pt->batches);
    point_ws w;
    memset(&w, 0, sizeof w);
    int want_dropless = 0;
    int rc = point_alloc(pt, &w, &want_dropless);
    if (!rc && ep) /* expert parallel (sim/mpi.c) */
        rc = ep->begin(ep->ctx, pt, w.r, w.C_max, w.cap);
    if (rc) {
        ws_free(&w);
        return rc;
    }
    const int T = pt->tokens, D = pt->d, E = pt->E, M = pt->m;
    const moe_experts ex = {E, D, pt->f, pt->act, w.w1, w.b1, w.w2, w.b2};
    const float *wg = moe_source_gate(w.src);
    const int nrows = moe_point_error_rows(T, pt->error_tokens, w.rows);
    memset(res->assigned, 0, (size_t)E * sizeof *res->assigned);
    memset(res->kept, 0, (size_t)E * sizeof *res->kept);
    memset(res->importance, 0, (size_t)E * sizeof *res->importance);
    memset(res->experts_per_token, 0, ((size_t)E + 1) * sizeof *res->experts_per_token);
    double flops_exec = 0.0;

    for (int b = 0; b < pt->batches; b++) {
        if (stop && *stop) {
            rc = moe_fail(MOE_EINVAL, NULL, "interrupted (point %s)", pt->config_key);
            break;
        }
        moe_batch batch;
        if ((rc = moe_source_batch(w.src, b, &batch)))
            break;
        if (batch.n != T || batch.d != D || batch.m != M) {
            rc = moe_fail(MOE_EINVAL, NULL, "source %s gave a batch of (%d,%d,%d), expected "
                          "T = %d, D = %d, M = %d (batch %d)", pt->source, batch.n, batch.d,
                          batch.m, T, D, M, b);
            break;
        }
        double *tm = res->batch_time + (size_t)b * MOE_T_COUNT;
        memset(tm, 0, MOE_T_COUNT * sizeof *tm);
        /* gate */
        const double *logits = batch.logits;
        int gate_computed = 0;
        if (!logits) {
            double t0 = moe_now();
            if ((rc = moe_layer_gate(w.L, batch.x, T, wg, M, w.logits)))
                break;
            tm[MOE_T_GATE] = moe_now() - t0;
            logits = w.logits;
            gate_computed = 1;
        }
        /* route */
        moe_route_in in = {T, M, logits, batch.ids, NULL, w.rng, batch.choices, batch.choice_w,
                           batch.k_rec};
        double t0 = moe_now();
        if ((rc = moe_router_route(w.r, &in, w.plan)))
            break;
        tm[MOE_T_ROUTE] = moe_now() - t0;
        /* layer */
        moe_layer_timing lt = {0};
        if ((rc = ep ? ep->forward(ep->ctx, &ex, w.plan, &in, batch.x, w.y, &lt)
                     : moe_layer_forward(w.L, &ex, w.plan, batch.x, w.y, &lt)))
            break;
        tm[MOE_T_DISPATCH] = lt.dispatch;
        tm[MOE_T_EXPERTS] = lt.experts;
        tm[MOE_T_COMBINE] = lt.combine;
        tm[MOE_T_TOTAL] = tm[MOE_T_GATE] + tm[MOE_T_ROUTE] + lt.dispatch + lt.experts +
                          lt.combine;
        /* metrics */
        if ((rc = moe_metrics_compute(w.plan, logits, D, pt->f, pt->act, gate_computed, w.mt)))
            break;
        /* output error vs the dense mixture, on the subset of rows */
        moe_plan_mixture_weights(w.plan, logits, w.p);
        if ((rc = moe_layer_dense_mixture(w.L, &ex, batch.x, T, w.p, w.rows, nrows, w.ydense)))
            break;
        for (int i = 0; i < nrows; i++)
            memcpy(w.ysub + (size_t)i * D, w.y + (size_t)w.rows[i] * D, (size_t)D * sizeof *w.y);
        w.mt->output_error_dense = moe_rel_l2(w.ysub, w.ydense, (size_t)nrows * D);
        /* output error vs the dropless twin */
        if (want_dropless) {
            moe_route_in in2 = in;
            in2.rng = w.rng2;
            if ((rc = moe_router_route(w.r2, &in2, w.plan2)))
                break;
            if ((rc = moe_layer_forward(w.L, &ex, w.plan2, batch.x, w.y2, NULL)))
                break;
            w.mt->output_error_dropless = moe_rel_l2(w.y, w.y2, (size_t)T * D);
            if (pt->rtype->observe)
                pt->rtype->observe(w.r2, &in2, w.plan2);
        } else if (pt->rtype->flags & MOE_RF_HAS_DROPLESS) {
            w.mt->output_error_dropless = 0.0; /* dropless already: its own dropless form */
        }
        if (pt->rtype->observe)
            pt->rtype->observe(w.r, &in, w.plan);
        /* record */
        double *bm = res->batch_metric + (size_t)b * MOE_POINT_NMETRICS;
        for (int i = 0; i < MOE_POINT_NMETRICS; i++)
            bm[i] = metric_value(w.mt, &moe_point_metrics[i]);
        for (int e = 0; e < E; e++) {
            res->assigned[e] += (double)w.mt->assigned_load[e];
            res->kept[e] += (double)w.mt->kept_load[e];
            res->importance[e] += w.mt->importance[e];
        }
        for (int j = 0; j <= E; j++)
            res->experts_per_token[j] += w.mt->experts_per_token[j];
        flops_exec += w.mt->flops_gate + w.mt->flops_expert_useful + w.mt->flops_soft_dispatch +
                      w.mt->flops_soft_combine;
    }
    ws_free(&w);
    if (rc)
        return rc;

    /* means and spreads over batches */
    const size_t nb = (size_t)pt->batches;
    for (int i = 0; i < MOE_POINT_NMETRICS; i++) {
        res->mean[i] = gsl_stats_mean(res->batch_metric + i, MOE_POINT_NMETRICS, nb);
        res->std[i] = nb > 1 ? gsl_stats_sd(res->batch_metric + i, MOE_POINT_NMETRICS, nb) : NAN;
    }
    for (int i = 0; i < MOE_T_COUNT; i++) {
        res->time_mean[i] = gsl_stats_mean(res->batch_time + i, MOE_T_COUNT, nb);
        res->time_std[i] = nb > 1 ? gsl_stats_sd(res->batch_time + i, MOE_T_COUNT, nb) : NAN;
    }
    for (int e = 0; e < E; e++) {
        res->assigned[e] /= (double)nb;
        res->kept[e] /= (double)nb;
        res->importance[e] /= (double)nb;
    }
    double total = res->time_mean[MOE_T_TOTAL] * (double)nb;
    res->tokens_per_s = total > 0.0 ? (double)T * (double)nb / total : NAN;
    res->gflops_per_s = total > 0.0 ? flops_exec / total * 1e-9 : NAN;
    res->wall_s = moe_now() - wall0;
    return MOE_OK;
}
