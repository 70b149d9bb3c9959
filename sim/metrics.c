/* metrics.c: the routing metrics of one plan and their JSON export (keys and order from the
 * metric table, sim/metric_table.c).
 *
 * Owns moe_metrics_alloc/_free, moe_metrics_compute and moe_metrics_write_json (moe.h).
 * Loads and importance come from the plan's router-side statistics (assigned_load, importance,
 * n_claims, aux_loss); kept loads, drops and the experts-per-token histogram are counted from
 * the entries. Dense plans (soft_moe): kept_load[e] = distinct slots of e among the entries,
 * nothing is dropped. FLOPs are analytic (README): gate 2*T*D*M, expert useful 4*D*F per kept
 * entry (6*D*F for SwiGLU; dense plans: per filled slot), expert padded E*C*4*D*F, Soft MoE
 * dispatch and combine 2*T*M*D each. Statistics (mean, population std, max) through GSL.
 * Group-limited routing, routing groups and the anchor libraries' losses (seq_aux_loss,
 * load_loss_shazeer, overflow_expert1/2, importance_loss_vmoe, load_loss_vmoe, balancedness)
 * follow the formulas of docs/metrics.md, each read from the library's own function.
 */
#include "metric_table.h"
#include "moe.h"
#include "../routers/claims.h" /* moe_claims_topk */
#include "../routers/par.h"
#include "vexp.h"

#include <gsl/gsl_cdf.h>
#include <gsl/gsl_statistics_double.h>
#include <gsl/gsl_statistics_long.h>
#include <jansson.h>
#include <math.h>
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

/* Check every entry lies inside the plan's (T, E, C) so the counts below can index by it. */
static int check_entries(const moe_plan *plan)
{
    for (size_t i = 0; i < plan->n_entries; i++) {
        const moe_entry *en = &plan->entries[i];
        if (en->token < 0 || en->token >= plan->n || en->expert < 0 || en->expert >= plan->E ||
            en->slot < 0 || en->slot >= plan->capacity)
            return moe_fail(MOE_EINVAL, "the router produced an inconsistent plan",
                            "plan entry %zu (token %d, expert %d, slot %d) outside T = %d, "
                            "E = %d, C = %ld (metrics)",
                            i, en->token, en->expert, en->slot, plan->n, plan->E, plan->capacity);
    }
    if (plan->n_claims > 0 && (size_t)plan->n_claims < plan->n_entries)
        return moe_fail(MOE_EINVAL, "the router produced an inconsistent plan",
                        "plan has %zu entries but only %ld claims (metrics)", plan->n_entries,
                        plan->n_claims);
    return MOE_OK;
}

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

/* Tokens per routing group (the last group may be shorter) and per sequence. */
static int span(int len, int n) { return len > 0 && len < n ? len : n; }

enum { RUN_MAX = 16 };

/* Whether the plan's entries come in token order with at most RUN_MAX entries per token (the
 * token-choice routers' plans), so each token's experts can be read from its run of entries. */
static int entries_in_runs(const moe_plan *plan)
{
    if (plan->dense)
        return 0;
    int run = 0;
    for (size_t i = 0; i < plan->n_entries; i++) {
        run = i > 0 && plan->entries[i].token == plan->entries[i - 1].token ? run + 1 : 1;
        if (run > RUN_MAX || (i > 0 && plan->entries[i].token < plan->entries[i - 1].token))
            return 0;
    }
    return 1;
}

/* Adds v to the distinct values set[0..*len) (RUN_MAX at most); 1 if it was new. */
static int add_distinct(int *set, int *len, int v)
{
    for (int i = 0; i < *len; i++)
        if (set[i] == v)
            return 0;
    set[(*len)++] = v;
    return 1;
}

/* The distinct experts and groups of token t: from the marks (T,E) of kept (token, expert)
 * pairs, or (mark NULL) from the token's run of entries starting at *at, which it advances. */
static void token_counts(const moe_plan *plan, const unsigned char *mark, int per, int t,
                         size_t *at, int *cnt, int *touched)
{
    const int E = plan->E;
    *cnt = *touched = 0;
    if (mark) {
        const unsigned char *mk = mark + (size_t)t * E;
        for (int g = 0; g < E / per; g++) {
            int c = 0;
            for (int e = g * per; e < (g + 1) * per; e++)
                c += mk[e];
            *cnt += c;
            *touched += c > 0;
        }
        return;
    }
    int ex[RUN_MAX], gr[RUN_MAX], ng = 0;
    for (; *at < plan->n_entries && plan->entries[*at].token == t; (*at)++) {
        const int e = plan->entries[*at].expert;
        if (add_distinct(ex, cnt, e))
            add_distinct(gr, &ng, e / per);
    }
    *touched = ng;
}

/* The experts-per-token and groups-touched histograms, groups_touched_mean and the token drop
 * rates per routing group, from the marks or the runs of entries (token_counts). */
static void count_tokens(const moe_plan *plan, const unsigned char *mark, moe_metrics *mt)
{
    const int n = plan->n, E = plan->E, G = mt->groups, per = E / G;
    const int gs = span(mt->group_size, n);
    memset(mt->groups_touched, 0, ((size_t)G + 1) * sizeof *mt->groups_touched);
    long touched_sum = 0, dropped = 0;
    int in_group = 0, ngroups = 0;
    double rmin = INFINITY, rmax = -INFINITY, rsum = 0.0;
    size_t at = 0;
    for (int t = 0; t < n; t++) {
        int cnt, touched;
        token_counts(plan, mark, per, t, &at, &cnt, &touched);
        mt->experts_per_token[cnt]++;
        mt->groups_touched[touched]++;
        touched_sum += touched;
        dropped += cnt == 0;
        if (++in_group == gs || t == n - 1) { /* a routing group ends */
            double r = plan->dense ? 0.0 : (double)dropped / in_group;
            rmin = r < rmin ? r : rmin;
            rmax = r > rmax ? r : rmax;
            rsum += r;
            ngroups++;
            dropped = 0;
            in_group = 0;
        }
    }
    mt->groups_touched_mean = (double)touched_sum / n;
    mt->token_drop_rate_group_min = rmin;
    mt->token_drop_rate_group_max = rmax;
    mt->token_drop_rate_group_mean = rsum / ngroups;
}

/* t2t expert_utils.cv_squared: population variance / (mean^2 + 1e-10), the size taken as
 * len + 1e-10. */
static double t2t_cv_squared(const double *x, int len)
{
    const double eps = 1e-10, size = (double)len + eps;
    double sum = 0.0, var = 0.0;
    for (int i = 0; i < len; i++)
        sum += x[i];
    const double mean = sum / size;
    for (int i = 0; i < len; i++)
        var += (x[i] - mean) * (x[i] - mean);
    var /= size;
    return var / (mean * mean + eps);
}

/* (std / mean)^2 with the population std (jnp.std), as V-MoE computes it. */
static double vmoe_cv2(const double *x, int len)
{
    double mean = gsl_stats_mean(x, 1, (size_t)len);
    double sd = gsl_stats_sd_with_fixed_mean(x, 1, (size_t)len, mean);
    return (sd / mean) * (sd / mean);
}

/* Scratch of the anchor losses, (E) each. */
typedef struct {
    double *p, *s, *seq_cnt, *seq_p, *imp, *pv, *load, *val;
    int32_t *idx;
} anchor_ws;

/* s (E) = Megatron's scores for the auxiliary losses (compute_routing_scores_for_aux_loss):
 * softmax p, or sigmoid / sqrt(softplus) of the logits divided by their sum + 1e-20. */
static void aux_scores(int score, const double *lt, int E, double *s)
{
    double sum = 0.0;
    for (int e = 0; e < E; e++) {
        double x = lt[e];
        s[e] = score == MOE_SCORE_SIGMOID ? 1.0 / (1.0 + exp(-x))
                                         : sqrt(x > 0 ? x + log1p(exp(-x)) : log1p(exp(x)));
        sum += s[e];
    }
    for (int e = 0; e < E; e++)
        s[e] /= sum + 1e-20;
}

/* Token t's share of the noisy-gating loads: V-MoE's p[e] = 1 - Phi((thr - L[e]) / sd) with
 * thr the k-th largest noisy logit (pv), Shazeer's ProbInTopK (load; only when k < E). */
static void noisy_loads(const moe_plan *plan, int t, const double *lt, anchor_ws *w)
{
    const int E = plan->E, k = plan->k < E ? plan->k : E;
    const double sd = plan->noise_std, *h = plan->noisy_logits + (size_t)t * E;
    moe_claims_topk(h, E, k < E ? k + 1 : k, w->idx, w->val); /* the k+1 largest, descending */
    const double thr = w->val[k - 1];
    for (int e = 0; e < E; e++)
        w->pv[e] += gsl_cdf_ugaussian_Q((thr - lt[e]) / sd);
    if (k >= E)
        return;
    const double in = w->val[k], out = thr; /* (k+1)-th and k-th largest noisy logits */
    for (int e = 0; e < E; e++)
        w->load[e] += gsl_cdf_ugaussian_P((lt[e] - (h[e] > in ? in : out)) / sd);
}

/* ---- the anchor losses without gate noise, on both cores ----
 * The same values bit for bit as the serial loop of anchor_losses: p[t,e] = exp(L[t,e] -
 * lse[t]) (vexp.h gives libm's exp), each expert's sums taken in token order by one thread
 * (the threads split the experts), and the token's Megatron top-k of p found from its logits:
 * p is a non-decreasing function of L, so only the logits within a relative 1e-9 of the k-th
 * largest can reach the top-k of p or tie with it; their p are taken exactly and chosen as
 * moe_claims_topk chooses (the lower index wins a tie). */

enum { FAST_COLS = 256, FAST_CAP = 1 << 21 };

typedef struct {
    const moe_plan *plan;
    const double *L;
    int S, gs, k, nseq;
    double *imp_g;   /* (ngroups, E) importance of each routing group */
    double *seq_p;   /* (nseq, E) summed scores of each sequence */
    int32_t *cnt;    /* (nparts, nseq, E) top-k counts of each sequence, per part */
    int32_t *idx;    /* (nparts, E) scratch */
    double *val, *pc; /* (nparts, E) scratch */
    int *cand;       /* (nparts, E) scratch */
} fast_job;

/* Part i: the sums of experts [lo, hi) over all tokens, in token order; the exponentials of
 * blocks of FAST_COLS values (x - lse taken first: exp(d - 0.0) is exp(d)). */
static void fast_sums_part(void *ctx, int i, int np)
{
    fast_job *j = ctx;
    const int n = j->plan->n, E = j->plan->E;
    long lo, hi;
    moe_par_range(E, i, np, &lo, &hi);
    double p[FAST_COLS];
    for (long c0 = lo; c0 < hi; c0 += FAST_COLS) {
        const int w = hi - c0 < FAST_COLS ? (int)(hi - c0) : FAST_COLS, rows = FAST_COLS / w;
        for (int t0 = 0; t0 < n; t0 += rows) {
            const int nr = n - t0 < rows ? n - t0 : rows;
            for (int r = 0; r < nr; r++) {
                const double *restrict x = j->L + (size_t)(t0 + r) * E + c0;
                const double m = j->plan->lse[t0 + r];
                double *restrict d = p + r * w;
                for (int e = 0; e < w; e++)
                    d[e] = x[e] - m;
            }
            moe_vexp_shift(p, nr * w, 0.0, p);
            for (int r = 0; r < nr; r++) {
                const int t = t0 + r;
                double *restrict ig = j->imp_g + (size_t)(t / j->gs) * E + c0;
                double *restrict sp = j->seq_p + (size_t)(t / j->S) * E + c0;
                const double *restrict pr = p + r * w;
                for (int e = 0; e < w; e++)
                    ig[e] += pr[e];
                for (int e = 0; e < w; e++)
                    sp[e] += pr[e];
            }
        }
    }
}

/* The experts whose logits (row lt, finite lse) lie within a relative 1e-9 of the row's k-th
 * largest, in index order, into cand; returns their number. One pass: the threshold only rises,
 * so an element below the running threshold is below the final one. val (k) scratch. */
static int near_topk(const double *lt, int E, int k, double lse, double *val, int *cand)
{
    int cnt = 0, m = 0;
    double thr = -INFINITY;
    for (int e = 0; e < E; e++) {
        const double x = lt[e];
        if (!(x >= thr))
            continue;
        cand[m++] = e;
        if (cnt == k && !(x > val[k - 1]))
            continue;
        int j = cnt < k ? cnt++ : k - 1; /* insert x into the descending val */
        for (; j > 0 && val[j - 1] < x; j--)
            val[j] = val[j - 1];
        val[j] = x;
        if (cnt == k)
            thr = val[k - 1] - 1e-9 * (1.0 + fabs(val[k - 1]) + fabs(lse));
    }
    int q = 0;
    for (int i = 0; i < m; i++)
        if (lt[cand[i]] >= thr)
            cand[q++] = cand[i];
    return q;
}

/* Part i: Megatron's top-k of the softmax for tokens [lo, hi), counted per sequence. */
static void fast_topk_part(void *ctx, int i, int np)
{
    fast_job *j = ctx;
    const int n = j->plan->n, E = j->plan->E, k = j->k;
    int32_t *cnt = j->cnt + (size_t)i * j->nseq * E, *idx = j->idx + (size_t)i * E;
    double *val = j->val + (size_t)i * E, *pc = j->pc + (size_t)i * E;
    int *cand = j->cand + (size_t)i * E;
    long lo, hi;
    moe_par_range(n, i, np, &lo, &hi);
    for (long t = lo; t < hi; t++) {
        const double *lt = j->L + (size_t)t * E, lse = j->plan->lse[t];
        int m = 0;
        if (isfinite(lse)) {
            m = near_topk(lt, E, k, lse, val, cand);
            for (int q = 0; q < m; q++)
                pc[q] = exp(lt[cand[q]] - lse);
        } else { /* every p exactly */
            for (int e = 0; e < E; e++) {
                cand[m] = e;
                pc[m++] = exp(lt[e] - lse);
            }
        }
        moe_claims_topk(pc, m, k, idx, val);
        int32_t *c = cnt + (size_t)(t / j->S) * E;
        for (int q = 0; q < k; q++)
            c[cand[idx[q]]]++;
    }
}

/* seq_aux_loss and importance_loss_vmoe as anchor_losses computes them without noise and with
 * the router's logsumexps; 1 when the scratch would exceed FAST_CAP values (the caller then
 * takes the serial loop), MOE_ENOMEM when out of memory. */
static int fast_losses(const moe_plan *plan, const double *logits, int S, int gs, int k,
                       moe_metrics *mt)
{
    const int n = plan->n, E = plan->E, nseq = n / S, ngroups = (n + gs - 1) / gs;
    const int np = moe_par_parts((long)n * E, 16384);
    if ((size_t)(ngroups + nseq) * E > FAST_CAP || (size_t)np * nseq * E > FAST_CAP)
        return 1;
    fast_job j = {plan, logits, S, gs, k, nseq, NULL, NULL, NULL, NULL, NULL, NULL, NULL};
    j.imp_g = calloc((size_t)(ngroups + nseq + 2 * np) * E, sizeof *j.imp_g);
    j.cnt = calloc((size_t)np * (nseq + 1) * E, sizeof *j.cnt);
    j.cand = malloc((size_t)np * E * sizeof *j.cand);
    if (!j.imp_g || !j.cnt || !j.cand) {
        free(j.imp_g);
        free(j.cnt);
        free(j.cand);
        return moe_fail(MOE_ENOMEM, NULL, "out of memory (metrics of %d experts)", E);
    }
    j.seq_p = j.imp_g + (size_t)ngroups * E;
    j.val = j.seq_p + (size_t)nseq * E;
    j.pc = j.val + (size_t)np * E;
    j.idx = j.cnt + (size_t)np * nseq * E;
    moe_par_run(fast_sums_part, &j, moe_par_parts(E, 1));
    if (k >= 1)
        moe_par_run(fast_topk_part, &j, np);
    double seq_sum = 0.0, imp_sum = 0.0;
    for (int q = 0; k >= 1 && q < nseq; q++) { /* sum_e cost_coeff[e] * mean_s s[s,e] */
        double l = 0.0;
        for (int e = 0; e < E; e++) {
            long c = 0;
            for (int i = 0; i < np; i++)
                c += j.cnt[((size_t)i * nseq + q) * E + e];
            l += (double)c / ((double)S * k / E) * (j.seq_p[(size_t)q * E + e] / S);
        }
        seq_sum += l;
    }
    for (int g = 0; g < ngroups; g++)
        imp_sum += vmoe_cv2(j.imp_g + (size_t)g * E, E);
    mt->seq_aux_loss = k >= 1 ? seq_sum / nseq : NAN;
    mt->importance_loss_vmoe = imp_sum / ngroups;
    free(j.imp_g);
    free(j.cnt);
    free(j.cand);
    return MOE_OK;
}

/* seq_aux_loss, importance_loss_vmoe, load_loss_vmoe and load_loss_shazeer (docs/metrics.md)
 * from the logits (T,E) routed; w holds zeroed scratch. */
static int anchor_losses(const moe_plan *plan, const double *logits, moe_metrics *mt,
                         anchor_ws *w)
{
    const int n = plan->n, E = plan->E, k = plan->k < E ? plan->k : E; /* experts per token */
    const int S = span(mt->sequence_length, n), gs = span(mt->group_size, n);
    const int noisy = plan->noisy_logits && plan->noise_std > 0.0 && k >= 1;
    const int own = mt->score == MOE_SCORE_SIGMOID || mt->score == MOE_SCORE_SQRTSOFTPLUS;
    if (n % S != 0)
        return moe_fail(MOE_EINVAL, "sequence_length must divide the tokens of a batch",
                        "sequence_length %d does not divide the batch's %d tokens "
                        "(sequence_length)", S, n);
    if (!noisy && !own && plan->lse_of == logits) {
        int rc = fast_losses(plan, logits, S, gs, k, mt);
        if (rc != 1) {
            for (int e = 0; rc == MOE_OK && e < E; e++) /* t2t without noise: the claims */
                w->load[e] = (double)plan->assigned_load[e];
            mt->load_loss_vmoe = NAN;
            if (rc == MOE_OK)
                mt->load_loss_shazeer = t2t_cv_squared(w->load, E);
            return rc;
        }
    }
    double seq_sum = 0.0, imp_sum = 0.0, pv_sum = 0.0;
    int in_group = 0, ngroups = 0;
    for (int t = 0; t < n; t++) {
        const double *lt = logits + (size_t)t * E;
        const double *p = w->p; /* the softmax of the token's logits */
        if (plan->lse_of == logits) /* with the router's logsumexp */
            for (int e = 0; e < E; e++)
                w->p[e] = exp(lt[e] - plan->lse[t]);
        else
            moe_softmax(lt, E, w->p);
        const double *s = p; /* Megatron's scores: the softmax, or their own */
        if (own) {
            aux_scores(mt->score, lt, E, w->s);
            s = w->s;
        }
        if (k >= 1) { /* Megatron's top-k routing map */
            moe_claims_topk(s, E, k, w->idx, w->val);
            for (int j = 0; j < k; j++)
                w->seq_cnt[w->idx[j]] += 1.0;
        }
        for (int e = 0; e < E; e++) {
            w->seq_p[e] += s[e];
            w->imp[e] += p[e];
        }
        if (noisy)
            noisy_loads(plan, t, lt, w);
        if ((t + 1) % S == 0) { /* a sequence ends: sum_e cost_coeff[e] * mean_s s[s,e] */
            double l = 0.0;
            for (int e = 0; e < E; e++)
                l += w->seq_cnt[e] / ((double)S * k / E) * (w->seq_p[e] / S);
            seq_sum += l;
            memset(w->seq_cnt, 0, (size_t)E * sizeof *w->seq_cnt);
            memset(w->seq_p, 0, (size_t)E * sizeof *w->seq_p);
        }
        if (++in_group == gs || t == n - 1) { /* a routing group ends */
            imp_sum += vmoe_cv2(w->imp, E);
            for (int e = 0; noisy && e < E; e++)
                w->pv[e] /= in_group;
            if (noisy)
                pv_sum += vmoe_cv2(w->pv, E);
            memset(w->imp, 0, (size_t)E * sizeof *w->imp);
            memset(w->pv, 0, (size_t)E * sizeof *w->pv);
            ngroups++;
            in_group = 0;
        }
    }
    mt->seq_aux_loss = k >= 1 ? seq_sum / (n / S) : NAN;
    mt->importance_loss_vmoe = imp_sum / ngroups;
    mt->load_loss_vmoe = noisy ? pv_sum / ngroups : NAN;
    if (noisy && k < E) {
        mt->load_loss_shazeer = t2t_cv_squared(w->load, E);
    } else { /* t2t without noise: the load is the count of non-zero gates (the claims) */
        for (int e = 0; e < E; e++)
            w->load[e] = (double)plan->assigned_load[e];
        mt->load_loss_shazeer = t2t_cv_squared(w->load, E);
    }
    return MOE_OK;
}

/* The anchor libraries' metrics of a plan (docs/metrics.md). */
static int anchor_metrics(const moe_plan *plan, const double *logits, moe_metrics *mt)
{
    const int E = plan->E;
    for (int j = 0; j < 2; j++) {
        long c = plan->rank_claims[j];
        double v = c > 0 ? 100.0 * (double)(c - plan->rank_kept[j]) / (double)c : NAN;
        *(j ? &mt->overflow_expert2 : &mt->overflow_expert1) = v;
    }
    long kmax = gsl_stats_long_max(mt->kept_load, 1, (size_t)E);
    mt->balancedness = kmax > 0 ? gsl_stats_long_mean(mt->kept_load, 1, (size_t)E) / kmax : 0.0;
    mt->seq_aux_loss = mt->importance_loss_vmoe = mt->load_loss_vmoe = NAN;
    mt->load_loss_shazeer = NAN;
    if (!logits || plan->dense || plan->m != E)
        return MOE_OK;
    anchor_ws w;
    double *d = calloc((size_t)E * 8, sizeof *d);
    int32_t *ix = malloc((size_t)E * sizeof *ix);
    if (!d || !ix) {
        free(d);
        free(ix);
        return moe_fail(MOE_ENOMEM, NULL, "out of memory (metrics of %d experts)", E);
    }
    w.p = d, w.s = d + E, w.seq_cnt = d + 2 * E, w.seq_p = d + 3 * E, w.imp = d + 4 * E;
    w.pv = d + 5 * E, w.load = d + 6 * E, w.val = d + 7 * E;
    w.idx = ix;
    int rc = anchor_losses(plan, logits, mt, &w);
    free(d);
    free(ix);
    return rc;
}

int moe_metrics_compute(const moe_plan *plan, const double *logits, int d, int f, int act,
                        int gate_computed, moe_metrics *mt)
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
    int rc = check_entries(plan);
    if (rc)
        return rc;

    /* Scratch: marks (T,E) for distinct experts per token; dense plans also (E,C) for
     * distinct slots. One block per call, once per routing group (never in a routing loop). */
    const int runs = entries_in_runs(plan); /* then no marks */
    size_t te = runs ? 0 : (size_t)n * (size_t)E;
    size_t ec = plan->dense ? (size_t)E * (size_t)plan->capacity : 0;
    unsigned char *mark = calloc(te + ec + 1, 1);
    if (!mark)
        return moe_fail(MOE_ENOMEM, NULL, "out of memory (metrics of %d tokens x %d experts)", n,
                        E);
    unsigned char *slot_mark = mark + te;

    /* ---- loads ---- */
    memcpy(mt->assigned_load, plan->assigned_load, (size_t)E * sizeof *mt->assigned_load);
    memcpy(mt->importance, plan->importance, (size_t)E * sizeof *mt->importance);
    memset(mt->kept_load, 0, (size_t)E * sizeof *mt->kept_load);
    memset(mt->experts_per_token, 0, ((size_t)E + 1) * sizeof *mt->experts_per_token);
    for (size_t i = 0; i < plan->n_entries; i++) {
        const moe_entry *en = &plan->entries[i];
        if (!runs)
            mark[(size_t)en->token * E + en->expert] = 1;
        if (!plan->dense) {
            mt->kept_load[en->expert]++;
        } else {
            unsigned char *sm = &slot_mark[(size_t)en->expert * plan->capacity + en->slot];
            if (!*sm) {
                *sm = 1;
                mt->kept_load[en->expert]++;
            }
        }
    }
    count_tokens(plan, runs ? NULL : mark, mt);
    free(mark);

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
        if (plan->lse_of == logits) /* the router's logsumexps of these logits */
            for (int t = 0; t < n; t++)
                z += plan->lse[t] * plan->lse[t];
        else if ((rc = moe_par_sum_lse_sq(logits, n, M, &z)))
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
    return anchor_metrics(plan, logits, mt);
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
