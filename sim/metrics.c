/* metrics.c: the routing metrics of one plan and their JSON export (keys and order from the
 * metric table, sim/metric_table.c).
 *
 * Owns moe_metrics_alloc/_free, moe_metrics_compute (and its form with the anchor memo,
 * moe_metrics_compute_memo: anchor_memo.h) and moe_metrics_write_json (moe.h).
 * Loads and importance come from the plan's router-side statistics (assigned_load, importance,
 * n_claims, aux_loss); kept loads, drops and the experts-per-token histogram are counted from
 * the entries (on the threads: sim/metrics_count.c). Dense plans (soft_moe): kept_load[e] = distinct slots of e among the entries,
 * nothing is dropped. FLOPs are analytic (README): gate 2*T*D*M, expert useful 4*D*F per kept
 * entry (6*D*F for SwiGLU; dense plans: per filled slot), expert padded E*C*4*D*F, Soft MoE
 * dispatch and combine 2*T*M*D each. Statistics (mean, population std, max) through GSL.
 * Group-limited routing and routing groups follow docs/metrics.md; the anchor libraries'
 * losses (seq_aux_loss, load_loss_shazeer, overflow_expert1/2, importance_loss_vmoe,
 * load_loss_vmoe, balancedness) are sim/metrics_anchor.c's.
 */
#include "anchor_memo.h"
#include "metric_table.h"
#include "metrics_anchor.h"
#include "metrics_count.h"
#include "moe.h"
#include "../routers/par.h"

#include <gsl/gsl_statistics_double.h>
#include <gsl/gsl_statistics_long.h>
#include <jansson.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- allocation ---- */

moe_metrics *moe_metrics_alloc(int E)
{
    if (E <= 0) {
        moe_fail(MOE_EINVAL, NULL, "metrics need E >= 1 (E = %d)", E);
        return NULL;
    }
    moe_metrics *mt = calloc(1, sizeof *mt);
    if (!mt) {
        moe_fail(MOE_ENOMEM, NULL, "out of memory (metrics for %d experts)", E);
        return NULL;
    }
    mt->E = E;
    mt->assigned_load = calloc((size_t)E, sizeof *mt->assigned_load);
    mt->kept_load = calloc((size_t)E, sizeof *mt->kept_load);
    mt->importance = calloc((size_t)E, sizeof *mt->importance);
    mt->experts_per_token = calloc((size_t)E + 1, sizeof *mt->experts_per_token);
    mt->groups_touched = calloc((size_t)E + 1, sizeof *mt->groups_touched); /* G <= E */
    mt->groups = 1;
    if (!mt->assigned_load || !mt->kept_load || !mt->importance || !mt->experts_per_token ||
        !mt->groups_touched) {
        moe_metrics_free(mt);
        moe_fail(MOE_ENOMEM, NULL, "out of memory (metrics for %d experts)", E);
        return NULL;
    }
    mt->output_error_dense = NAN;
    mt->output_error_dropless = NAN;
    mt->z_loss = NAN;
    return mt;
}

void moe_metrics_free(moe_metrics *mt)
{
    if (!mt)
        return;
    free(mt->assigned_load);
    free(mt->kept_load);
    free(mt->importance);
    free(mt->experts_per_token);
    free(mt->groups_touched);
    moe_metrics_rows_free(mt->rows);
    moe_metrics_ents_free(mt->ents);
    free(mt);
}

/* ---- statistics ---- */

/* max/mean of v (E); 0 if the mean is 0. */
static double long_imbalance(const long *v, int E)
{
    double mean = gsl_stats_long_mean(v, 1, (size_t)E);
    return mean == 0.0 ? 0.0 : (double)gsl_stats_long_max(v, 1, (size_t)E) / mean;
}

/* population std / mean of v (E); 0 if the mean is 0. */
static double long_cv(const long *v, int E)
{
    double mean = gsl_stats_long_mean(v, 1, (size_t)E);
    return mean == 0.0 ? 0.0 : gsl_stats_long_sd_with_fixed_mean(v, 1, (size_t)E, mean) / mean;
}

/* population variance / mean^2 of v (E); 0 if the mean is 0. */
static double double_cv2(const double *v, int E)
{
    double mean = gsl_stats_mean(v, 1, (size_t)E);
    return mean == 0.0 ? 0.0
                       : gsl_stats_variance_with_fixed_mean(v, 1, (size_t)E, mean) / (mean * mean);
}

/* ---- compute ---- */

int moe_metrics_set_opts(moe_metrics *mt, const moe_route_opts *o)
{
    int G = o->groups > 0 ? o->groups : 1;
    if (G > mt->E || mt->E % G != 0)
        return moe_fail(MOE_EINVAL, "groups must divide the number of experts",
                        "%d expert groups do not divide E = %d (groups)", G, mt->E);
    if (o->group_size < 0 || o->sequence_length < 0)
        return moe_fail(MOE_EINVAL, NULL, "group_size %d and sequence_length %d must be >= 0",
                        o->group_size, o->sequence_length);
    mt->groups = G;
    mt->group_size = o->group_size;
    mt->sequence_length = o->sequence_length;
    mt->score = o->score;
    mt->pad_to_capacity = o->pad_to_capacity;
    return MOE_OK;
}

int moe_metrics_compute(const moe_plan *plan, const double *logits, int d, int f, int act,
                        int gate_computed, moe_metrics *mt)
{
    return moe_metrics_compute_memo(plan, logits, d, f, act, gate_computed, NULL, 0, mt);
}

int moe_metrics_compute_memo(const moe_plan *plan, const double *logits, int d, int f, int act,
                             int gate_computed, moe_anchor_memo *memo, unsigned long batch,
                             moe_metrics *mt)
{
    const int n = plan->n, E = plan->E, M = plan->m;
    if (E != mt->E)
        return moe_fail(MOE_EINVAL, NULL, "plan has %d experts, metrics were set up for %d", E,
                        mt->E);
    if (n <= 0 || M <= 0)
        return moe_fail(MOE_EINVAL, NULL, "plan has no tokens or columns (T = %d, M = %d)", n, M);
    if (d < 0 || f < 0)
        return moe_fail(MOE_EINVAL, NULL, "layer shape d = %d, f = %d must be >= 0 (metrics)", d,
                        f);
    /* Scratch: kept (E) counts until the entries are known to be valid; marks for distinct
     * experts per token unless the entries come in token order, one bit per (token, expert);
     * dense plans also (E,C) bytes for distinct slots. One block per call, once per routing
     * group (never in a routing loop). */
    long *kept = calloc((size_t)E, sizeof *kept);
    int ordered = 0;
    if (!kept)
        return moe_fail(MOE_ENOMEM, NULL, "out of memory (metrics of %d experts)", E);
    int counted = 0; /* entries in token order: checked, kept and counted in one pass */
    int rc = moe_metrics_scan_count(plan, mt->groups, mt->group_size, kept, mt, &counted);
    ordered = counted;
    if (!rc && !counted && !plan->dense)
        rc = moe_metrics_scan(plan, kept, &ordered);
    else if (!rc && plan->dense) /* (the marks below check the entries: one pass over them) */
        rc = plan->n_claims > 0 && (size_t)plan->n_claims < plan->n_entries
                 ? moe_fail(MOE_EINVAL, "the router produced an inconsistent plan",
                            "plan has %zu entries but only %ld claims (metrics)",
                            plan->n_entries, plan->n_claims)
                 : MOE_OK;
    const int words = (E + 63) / 64;
    size_t tw = ordered ? 0 : (size_t)n * (size_t)words;
    size_t ec = plan->dense ? (size_t)E * (size_t)plan->capacity : 0;
    uint64_t *bits = rc || !tw ? NULL : calloc(tw, sizeof *bits);
    unsigned char *slot_mark = rc || !ec ? NULL : calloc(ec, 1);
    if (!rc && ((tw && !bits) || (ec && !slot_mark)))
        rc = moe_fail(MOE_ENOMEM, NULL, "out of memory (metrics of %d tokens x %d experts)", n,
                      E);
    if (rc) {
        free(kept);
        free(bits);
        free(slot_mark);
        return rc;
    }

    /* ---- loads ---- */
    memcpy(mt->assigned_load, plan->assigned_load, (size_t)E * sizeof *mt->assigned_load);
    memcpy(mt->importance, plan->importance, (size_t)E * sizeof *mt->importance);
    memcpy(mt->kept_load, kept, (size_t)E * sizeof *mt->kept_load); /* sparse: counted */
    free(kept);
    if (!ordered) /* (dense plans never are): the marks, and a dense plan's distinct slots */
        rc = moe_metrics_mark(plan, bits, words, slot_mark, mt->kept_load);
    free(slot_mark);
    if (rc) {
        free(bits);
        return rc;
    }
    rc = counted ? MOE_OK
                 : moe_metrics_count_tokens(plan, bits, words, mt->groups, mt->group_size, mt);
    free(bits);
    if (rc)
        return rc;

    mt->n_tokens = n;
    mt->capacity = plan->capacity;
    mt->num_entries = (long)plan->n_entries;
    mt->load_imbalance = long_imbalance(mt->assigned_load, E);
    mt->kept_load_imbalance = long_imbalance(mt->kept_load, E);
    mt->load_cv = long_cv(mt->assigned_load, E);
    mt->importance_cv2 = double_cv2(mt->importance, E);

    /* ---- drops ---- */
    if (plan->dense || plan->n_claims <= 0)
        mt->assignment_drop_rate = 0.0;
    else
        mt->assignment_drop_rate =
            (double)(plan->n_claims - (long)plan->n_entries) / (double)plan->n_claims;
    mt->token_drop_rate = plan->dense ? 0.0 : (double)mt->experts_per_token[0] / n;

    /* ---- losses ---- */
    mt->aux_loss = plan->aux_loss;
    if (logits) {
        double z = 0.0;
        if (plan->lse_of == logits && plan->lse_sumsq_of == logits) /* the pass's own sum */
            z = plan->lse_sumsq;
        else if (plan->lse_of == logits) /* the router's logsumexps of these logits */
            z = moe_sum_sq(0.0, plan->lse, n);
        else if (!moe_anchor_memo_find_z(memo, logits, batch, n, M, &z) &&
                 !(rc = moe_par_sum_lse_sq(logits, n, M, &z)))
            moe_anchor_memo_put_z(memo, logits, batch, n, M, z);
        if (rc)
            return rc;
        mt->z_loss = z / n;
    } else {
        mt->z_loss = NAN;
    }

    /* ---- FLOPs ---- */
    mt->flops_gate = mt->flops_expert_useful = mt->flops_expert_padded = 0.0;
    mt->flops_soft_dispatch = mt->flops_soft_combine = 0.0;
    if (d > 0) {
        double per = (act == MOE_ACT_SWIGLU ? 6.0 : 4.0) * d * f; /* one token through FFN_e */
        if (gate_computed)
            mt->flops_gate = 2.0 * n * d * M;
        if (plan->dense) {
            long filled = 0;
            for (int e = 0; e < E; e++)
                filled += mt->kept_load[e];
            mt->flops_expert_useful = per * (double)filled;
            mt->flops_soft_dispatch = 2.0 * n * M * d;
            mt->flops_soft_combine = 2.0 * n * M * d;
        } else {
            mt->flops_expert_useful = per * (double)plan->n_entries;
        }
        mt->flops_expert_padded = (double)E * (double)plan->capacity * per;
    }
    mt->flops_expert_executed =
        mt->pad_to_capacity ? mt->flops_expert_padded : mt->flops_expert_useful;

    mt->output_error_dense = NAN;
    mt->output_error_dropless = NAN;
    return moe_metrics_anchor_memo(plan, logits, mt, memo, batch);
}

/* ---- JSON ---- */

/* A real, or null when the value is not finite (JSON has no NaN or infinity). */
static json_t *real_or_null(double v) { return isfinite(v) ? json_real(v) : json_null(); }

static json_t *long_array(const long *v, size_t len)
{
    json_t *a = json_array();
    for (size_t i = 0; a && i < len; i++)
        if (json_array_append_new(a, json_integer((json_int_t)v[i])) != 0) {
            json_decref(a);
            return NULL;
        }
    return a;
}

static json_t *real_array(const double *v, size_t len)
{
    json_t *a = json_array();
    for (size_t i = 0; a && i < len; i++)
        if (json_array_append_new(a, real_or_null(v[i])) != 0) {
            json_decref(a);
            return NULL;
        }
    return a;
}

/* The JSON value of metric m. */
static json_t *metric_json(const moe_metrics *mt, const moe_point_metric *m)
{
    const void *field = (const char *)mt + m->offset;
    size_t len = moe_metric_len(m, mt);
    switch (m->kind) {
    case MOE_METRIC_LONG:
    case MOE_METRIC_INT: return json_integer((json_int_t)moe_metric_value(mt, m));
    case MOE_METRIC_EXPERT_LONG:
    case MOE_METRIC_HISTOGRAM:
    case MOE_METRIC_GROUP_HISTOGRAM: {
        const long *v;
        memcpy(&v, field, sizeof v);
        return long_array(v, len);
    }
    case MOE_METRIC_EXPERT_DOUBLE: {
        const double *v;
        memcpy(&v, field, sizeof v);
        return real_array(v, len);
    }
    default: return real_or_null(moe_metric_value(mt, m));
    }
}

/* The metrics object: "router", then every row of the metric table at its JSON position; NULL
 * when out of memory. */
static json_t *metrics_json(const moe_metrics *mt, const char *router)
{
    json_t *o = json_object();
    if (!o)
        return NULL;
    /* json_object_set_new steals (and on failure releases) the value */
    int bad = json_object_set_new(o, "router", router ? json_string(router) : json_null()) != 0;
    for (int i = 1; i <= MOE_METRIC_NROWS && !bad; i++) {
        const moe_point_metric *m = moe_metric_in_order(i);
        json_t *v = m ? metric_json(mt, m) : NULL;
        bad = !v || json_object_set_new(o, m->name, v) != 0;
    }
    if (bad) {
        json_decref(o);
        return NULL;
    }
    return o;
}

int moe_metrics_write_json(const moe_metrics *mt, const char *router, const char *path)
{
    json_t *o = metrics_json(mt, router);
    if (!o)
        return moe_fail(MOE_ENOMEM, NULL, "out of memory building the metrics JSON (%s)", path);
    moe_outfile out;
    int rc = moe_outfile_open(&out, path, "metrics", "w");
    if (rc) {
        json_decref(o);
        return rc;
    }
    int bad = json_dumpf(o, out.f, JSON_INDENT(2) | JSON_REAL_PRECISION(17)) != 0;
    json_decref(o);
    bad |= fputc('\n', out.f) == EOF;
    return moe_outfile_commit(&out, bad);
}
