/* point.c: the runner of one sweep point (point.h). Owns moe_point_run, the result struct and the
 * table of scalar metrics stored per point and per batch.
 *
 * For one point: open the source; draw the expert weights from moe_rng_alloc(seed,
 * MOE_STREAM_EXPERT_W) in the order w1, b1, w2, b2 (w1 ~ N(0, 1/D), w2 ~ N(0, 1/F), biases
 * ~ N(0, 0.01^2)); allocate the one-batch pipeline once (pipeline.h: router, dropless twin,
 * layer, plans, metrics); run every batch through it with every stage on (layer, metrics,
 * output errors on min(T, error_tokens) rows, observe); average metrics and timings over the
 * batches. Random draws: gshard from (seed, MOE_STREAM_GSHARD), gate noise from (seed,
 * MOE_STREAM_NOISE). With a gate cache (moe_point_run_cached) each batch and its gate logits
 * come from the cache, computed once for all the points that share them (gate_cache.h), unless
 * the router jitters the gate's input.
 */
#include "point.h"

#include "cluster_point.h"
#include "gate_cache.h"
#include "metric_table.h"

#include <gsl/gsl_randist.h>
#include <gsl/gsl_statistics_double.h>
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

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
    r->groups_touched = calloc((size_t)E + 1, sizeof *r->groups_touched);
    r->groups = 1;
    r->batch_metric = calloc((size_t)batches * MOE_POINT_NMETRICS, sizeof *r->batch_metric);
    r->batch_time = calloc((size_t)batches * MOE_NPHASES, sizeof *r->batch_time);
    if (!r->assigned || !r->kept || !r->importance || !r->experts_per_token ||
        !r->groups_touched || !r->batch_metric || !r->batch_time)
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
    free(r->groups_touched);
    free(r->batch_metric);
    free(r->batch_time);
    free(r->train_row);
    free(r->train_loads);
    moe_cluster_result_free(r->cluster);
    free(r);
}

moe_point_result *moe_point_result_alloc_for(const moe_point *pt)
{
    moe_point_result *r = moe_point_result_alloc(pt->E, pt->batches);
    const int rows = moe_point_train_rows(pt);
    if (!r || rows == 0)
        return r;
    r->train_rows = rows;
    r->train_row = calloc((size_t)rows * MOE_TRAIN_NCOLS, sizeof *r->train_row);
    r->train_loads = calloc((size_t)rows * (size_t)pt->E, sizeof *r->train_loads);
    if (!r->train_row || !r->train_loads) {
        moe_point_result_free(r);
        moe_fail(MOE_ENOMEM, NULL, "out of memory (%d eval rows, point %s)", rows,
                 pt->config_key);
        return NULL;
    }
    return r;
}

/* ---- the runner ---- */

static void draw_normal(gsl_rng *rng, double sigma, float *v, size_t len)
{
    for (size_t i = 0; i < len; i++)
        v[i] = (float)gsl_ran_gaussian_ziggurat(rng, sigma);
}

/* What a point owns besides its pipeline: the source and the expert weights. */
typedef struct {
    moe_source *src;
    float *w1, *b1, *w2, *b2;
    float *sw; /* shared experts: w1, b1, w2, b2, wg in one block (draw_shared) */
    moe_shared sh;
    moe_experts ex;
    moe_pipeline *pipe;
} point_ws;

static void ws_free(point_ws *w)
{
    moe_pipeline_free(w->pipe);
    moe_source_close(w->src);
    free(w->w1);
    free(w->b1);
    free(w->w2);
    free(w->b2);
    free(w->sw);
}

/* Shared expert weights from (seed, MOE_STREAM_SHARED_W), a stream of their own so the routed
 * experts' weights do not depend on them: w1 (S,D,FWs), b1 (S,FWs), w2 (S,Fs,D), b2 (S,D) and,
 * with the sigmoid gate, wg (S,D), in that order, drawn as the routed experts' are. */
static int draw_shared(const moe_point *pt, point_ws *w)
{
    const size_t S = (size_t)pt->shared_S, D = (size_t)pt->d, Fs = (size_t)pt->shared_f;
    const size_t FWs = pt->act == MOE_ACT_SWIGLU ? 2 * Fs : Fs;
    const size_t n[5] = {S * D * FWs, S * FWs, S * Fs * D, S * D,
                         pt->shared_gate == MOE_SHARED_GATE_SIGMOID ? S * D : 0};
    const double sigma[5] = {1.0 / sqrt((double)D), 0.01, 1.0 / sqrt((double)Fs), 0.01,
                             1.0 / sqrt((double)D)};
    w->sw = malloc((n[0] + n[1] + n[2] + n[3] + n[4]) * sizeof *w->sw);
    gsl_rng *rng = moe_rng_alloc(pt->seed, MOE_STREAM_SHARED_W);
    if (!w->sw || !rng) {
        gsl_rng_free(rng);
        return moe_fail(MOE_ENOMEM, NULL, "out of memory (shared expert weights, point %s)",
                        pt->config_key);
    }
    const float *part[5];
    float *v = w->sw;
    for (int i = 0; i < 5; i++) {
        draw_normal(rng, sigma[i], v, n[i]);
        part[i] = v;
        v += n[i];
    }
    gsl_rng_free(rng);
    w->sh = (moe_shared){pt->shared_S, pt->shared_f, pt->shared_gate, part[0], part[1], part[2],
                         part[3], n[4] ? part[4] : NULL};
    w->ex.shared = &w->sh;
    return MOE_OK;
}

/* Expert weights from (seed, MOE_STREAM_EXPERT_W): w1, b1, w2, b2 in that order. */
static int draw_experts(const moe_point *pt, point_ws *w)
{
    const int D = pt->d, E = pt->E;
    const int fw = pt->act == MOE_ACT_SWIGLU ? 2 * pt->f : pt->f;
    gsl_rng *wrng = moe_rng_alloc(pt->seed, MOE_STREAM_EXPERT_W);
    size_t n1 = (size_t)E * D * fw, nb1 = (size_t)E * fw, n2 = (size_t)E * pt->f * D,
           nb2 = (size_t)E * D;
    w->w1 = malloc(n1 * sizeof *w->w1);
    w->b1 = malloc(nb1 * sizeof *w->b1);
    w->w2 = malloc(n2 * sizeof *w->w2);
    w->b2 = malloc(nb2 * sizeof *w->b2);
    if (!wrng || !w->w1 || !w->b1 || !w->w2 || !w->b2) {
        gsl_rng_free(wrng);
        return moe_fail(MOE_ENOMEM, NULL, "out of memory (expert weights, point %s)",
                        pt->config_key);
    }
    draw_normal(wrng, 1.0 / sqrt((double)D), w->w1, n1);
    draw_normal(wrng, 0.01, w->b1, nb1);
    draw_normal(wrng, 1.0 / sqrt((double)pt->f), w->w2, n2);
    draw_normal(wrng, 0.01, w->b2, nb2);
    gsl_rng_free(wrng);
    w->ex = (moe_experts){E, D, pt->f, pt->act, w->w1, w->b1, w->w2, w->b2, NULL};
    return MOE_OK;
}

static int point_alloc(const moe_point *pt, const moe_pipeline_ep *ep, point_ws *w)
{
    int rc = moe_source_open(pt->source, pt->params, pt->nparams, pt->tokens, pt->d, pt->m,
                             pt->seed, &w->src);
    if (rc)
        return rc;
    int rm = moe_source_required_m(w->src);
    if (rm && rm != pt->m)
        return moe_fail(MOE_EINVAL, NULL, "source %s records %d experts, the point needs %d "
                        "(distribution %s)", pt->source, rm, pt->m, pt->distribution);
    const int routing_only = pt->f == 0; /* shape f = 0: gate, route and metrics only */
    if ((!routing_only && (rc = draw_experts(pt, w))) ||
        (!routing_only && pt->shared_S > 0 && (rc = draw_shared(pt, w))))
        return rc;
    /* replay claims k_rec experts per token, fixed by the trace: ask batch 0 */
    int k_claims = 0;
    if (pt->rtype->flags & MOE_RF_NEEDS_CHOICES) {
        moe_batch b0;
        if ((rc = moe_source_batch(w->src, 0, &b0)))
            return rc;
        k_claims = b0.k_rec;
    }
    const moe_pipeline_cfg cfg = {
        .rtype = pt->rtype, .opts = &pt->opts, .T = pt->tokens, .M = pt->m,
        .k_claims = k_claims, .w = routing_only ? NULL : &w->ex, .wg = moe_source_gate(w->src), .seed = pt->seed,
        .error_rows = pt->error_tokens, .ep = ep, .source = pt->source, .label = pt->config_key,
        .flags = MOE_PIPE_METRICS | MOE_PIPE_OBSERVE |
                 (routing_only ? 0u : MOE_PIPE_LAYER | MOE_PIPE_ERRORS)};
    return moe_pipeline_alloc(&cfg, &w->pipe);
}

/* Adds batch b's metrics, loads and timings to res; the FLOPs executed to *flops. */
static void record_batch(moe_point_result *res, int b, const moe_metrics *mt,
                         const moe_phase_times *tm, double *flops)
{
    double *bm = res->batch_metric + (size_t)b * MOE_POINT_NMETRICS;
    for (int i = 0; i < MOE_POINT_NMETRICS; i++)
        bm[i] = moe_metric_value(mt, &moe_point_metrics[i]);
    moe_phase_times_array(tm, res->batch_time + (size_t)b * MOE_NPHASES);
    for (int e = 0; e < res->E; e++) {
        res->assigned[e] += (double)mt->assigned_load[e];
        res->kept[e] += (double)mt->kept_load[e];
        res->importance[e] += mt->importance[e];
    }
    for (int j = 0; j <= res->E; j++)
        res->experts_per_token[j] += mt->experts_per_token[j];
    res->groups = mt->groups;
    for (int j = 0; j <= mt->groups; j++)
        res->groups_touched[j] += mt->groups_touched[j];
    *flops += mt->flops_gate + mt->flops_expert_useful + mt->flops_soft_dispatch +
              mt->flops_soft_combine;
}

/* Means and spreads over the batches. */
static void summarise(moe_point_result *res, int T, double flops_exec)
{
    const size_t nb = (size_t)res->batches;
    for (int i = 0; i < MOE_POINT_NMETRICS; i++) {
        res->mean[i] = gsl_stats_mean(res->batch_metric + i, MOE_POINT_NMETRICS, nb);
        res->std[i] = nb > 1 ? gsl_stats_sd(res->batch_metric + i, MOE_POINT_NMETRICS, nb) : NAN;
    }
    for (int i = 0; i < MOE_NPHASES; i++) {
        res->time_mean[i] = gsl_stats_mean(res->batch_time + i, MOE_NPHASES, nb);
        res->time_std[i] = nb > 1 ? gsl_stats_sd(res->batch_time + i, MOE_NPHASES, nb) : NAN;
    }
    for (int e = 0; e < res->E; e++) {
        res->assigned[e] /= (double)nb;
        res->kept[e] /= (double)nb;
        res->importance[e] /= (double)nb;
    }
    double total = res->time_mean[MOE_PHASE_TOTAL] * (double)nb;
    res->tokens_per_s = total > 0.0 ? (double)T * (double)nb / total : NAN;
    res->gflops_per_s = total > 0.0 ? flops_exec / total * 1e-9 : NAN;
}

/* Batch b through the point's pipeline: from the source, or with its gate output from cache. */
static int run_batch(const moe_point *pt, point_ws *w, moe_gate_cache *cache, int b,
                     moe_phase_times *tm)
{
    if (!cache || pt->opts.jitter > 0.0)
        return moe_pipeline_run_source(w->pipe, w->src, b, tm);
    moe_batch bb;
    const double *logits = NULL;
    double gate_s = 0.0;
    int rc = moe_gate_cache_batch(cache, pt, w->src, b, &bb, &logits, &gate_s);
    if (rc)
        return rc;
    unsigned long serial = 0; /* the router's capacity-free work on these logits, shared */
    moe_route_memo *memo = moe_gate_cache_memo(cache, logits, &serial);
    moe_pipeline_set_memo(w->pipe, memo, serial);
    moe_pipeline_set_anchor_memo(w->pipe, moe_gate_cache_anchor_memo(cache));
    return moe_pipeline_run_gated(w->pipe, &bb, b, logits, gate_s, tm);
}

static int point_run(const moe_point *pt, volatile sig_atomic_t *stop, moe_point_result *res,
                     const moe_pipeline_ep *ep, moe_gate_cache *cache);

int moe_point_run(const moe_point *pt, volatile sig_atomic_t *stop, moe_point_result *res)
{
    return point_run(pt, stop, res, NULL, NULL);
}

int moe_point_run_cached(const moe_point *pt, volatile sig_atomic_t *stop,
                         moe_point_result *res, moe_gate_cache *cache)
{
    return point_run(pt, stop, res, NULL, cache);
}

int moe_point_run_ep(const moe_point *pt, volatile sig_atomic_t *stop, moe_point_result *res,
                     const moe_pipeline_ep *ep)
{
    return point_run(pt, stop, res, ep, NULL);
}

static int point_run(const moe_point *pt, volatile sig_atomic_t *stop, moe_point_result *res,
                     const moe_pipeline_ep *ep, moe_gate_cache *cache)
{
    if (pt->train)
        return ep ? moe_fail(MOE_EINVAL, "run training sweeps without --expert-parallel",
                             "training points run on one process, not expert-parallel "
                             "(point %s)", pt->config_key)
                  : moe_point_train_run(pt, stop, res);
    const double wall0 = moe_now();
    if (res->E != pt->E || res->batches != pt->batches)
        return moe_fail(MOE_EINVAL, NULL, "result sized for E = %d, %d batches; point has "
                        "E = %d, %d batches (moe_point_run)", res->E, res->batches, pt->E,
                        pt->batches);
    point_ws w;
    memset(&w, 0, sizeof w);
    int rc = point_alloc(pt, ep, &w);
    const int E = pt->E;
    memset(res->assigned, 0, (size_t)E * sizeof *res->assigned);
    memset(res->kept, 0, (size_t)E * sizeof *res->kept);
    memset(res->importance, 0, (size_t)E * sizeof *res->importance);
    memset(res->experts_per_token, 0, ((size_t)E + 1) * sizeof *res->experts_per_token);
    memset(res->groups_touched, 0, ((size_t)E + 1) * sizeof *res->groups_touched);
    double flops_exec = 0.0;
    moe_cluster_run *cr = NULL; /* the cluster model sees each batch's plan */
    if (!rc && pt->cluster &&
        !(cr = moe_cluster_run_alloc(pt->cluster, E, pt->d, pt->f, pt->act == MOE_ACT_SWIGLU,
                                     pt->batches)))
        rc = MOE_EINVAL;
    if (cr)
        moe_cluster_run_set_pad(cr, pt->opts.pad_to_capacity);
    for (int b = 0; !rc && b < pt->batches; b++) {
        if (stop && *stop) {
            rc = moe_fail(MOE_EINVAL, NULL, "interrupted (point %s)", pt->config_key);
            break;
        }
        moe_phase_times tm;
        if (!(rc = run_batch(pt, &w, cache, b, &tm)))
            record_batch(res, b, moe_pipeline_metrics(w.pipe), &tm, &flops_exec);
        if (!rc && cr)
            rc = moe_cluster_run_batch(cr, b, moe_pipeline_plan(w.pipe), &tm,
                                       moe_pipeline_metrics(w.pipe)->flops_expert_useful);
    }
    if (cr && !rc) {
        moe_cluster_result_free(res->cluster);
        res->cluster = moe_cluster_run_finish(cr);
    } else {
        moe_cluster_run_free(cr);
    }
    ws_free(&w);
    if (rc)
        return rc;
    summarise(res, pt->tokens, flops_exec);
    res->wall_s = moe_now() - wall0;
    return MOE_OK;
}
