/* test_routers_dense_soft.c: the dense and soft_moe routers against their previous
 * implementations (tests/dense_soft_ref.h: routers/dense.c and routers/soft_moe.c at commit
 * 150f3a2, one thread, moe_softmax per row and per gathered column, moe_plan_push per entry),
 * bit for bit, with the metrics a sweep computes from each plan:
 *   - the plans: every entry (token, expert, slot, both weights' bits), n_entries, capacity, k,
 *     dense, n_claims, assigned_load, importance (bits), on the routers' 1, 2 and 3 threads with
 *     chunks of a few rows (grain 1), for dense at E = 8, 37 (not a multiple of the vector width),
 *     64 and 256, and soft_moe at (E, P) = (8, 1), (37, 1), (16, 4), (256, 1) and (3, 5);
 *   - the metrics (every row of the metric table, bits): the current routers' plans attached to
 *     their metrics as a sweep attaches them (the rows and logsumexps they hand over) against the
 *     previous plans, which hand nothing over, so the metrics take every softmax, logsumexp and
 *     (dense) the experts-per-token marks themselves; for dense also with sequences and groups of
 *     tokens in the metrics and with Megatron's sigmoid scores (where the plan keeps no
 *     logsumexps, as before);
 *   - the metrics of a plan whose entries are reversed within each token (still in token order,
 *     so the experts per token are counted from each token's own entries, now in descending
 *     expert order) equal those of the plan in expert order;
 *   - a non-finite logit gives the error moe_logits_check_finite gives for it.
 * Logits: N(0,1) (fixed PCG seed), every third row rounded to quarters (equal probabilities),
 * every fifth a copy of an earlier row, every seventh scaled by 150 (exponents beyond the vector
 * exponential's fast range), a few exact zeros of both signs. */
#include "check.h"
#include "moe.h"
#include "metric_table.h"
#include "../routers/par.h"
#include "dense_soft_ref.h"
#include "route_helper.h"

#include <gsl/gsl_randist.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void fill(double *L, int n, int M, gsl_rng *g)
{
    for (int t = 0; t < n; t++)
        for (int j = 0; j < M; j++) {
            double x = gsl_ran_gaussian_ziggurat(g, 1.0);
            if (t % 5 == 4)
                x = L[(size_t)(t / 3) * M + j];
            else if (t % 3 == 0)
                x = round(4.0 * x) / 4.0;
            else if (t % 7 == 1)
                x *= 150.0;
            L[(size_t)t * M + j] = x;
        }
    L[0] = 0.0;
    L[(size_t)M * (n / 2) + 1] = -0.0;
}

/* 1 when every row of the metric table has the same bits in a and b */
static int same_metrics(const moe_metrics *a, const moe_metrics *b, char *which, size_t len)
{
    for (int i = 1; i <= MOE_METRIC_NROWS; i++) {
        const moe_point_metric *m = moe_metric_in_order(i);
        if (!m)
            continue;
        snprintf(which, len, "%s", m->name);
        const size_t n = moe_metric_len(m, a);
        if (n != moe_metric_len(m, b))
            return 0;
        const void *fa = (const char *)a + m->offset, *fb = (const char *)b + m->offset;
        if (m->kind == MOE_METRIC_EXPERT_LONG || m->kind == MOE_METRIC_HISTOGRAM ||
            m->kind == MOE_METRIC_GROUP_HISTOGRAM || m->kind == MOE_METRIC_EXPERT_DOUBLE) {
            const void *pa, *pb;
            memcpy(&pa, fa, sizeof pa);
            memcpy(&pb, fb, sizeof pb);
            if (memcmp(pa, pb, n * (m->kind == MOE_METRIC_EXPERT_DOUBLE ? sizeof(double)
                                                                        : sizeof(long))))
                return 0;
        } else {
            const double va = moe_metric_value(a, m), vb = moe_metric_value(b, m);
            if (memcmp(&va, &vb, sizeof va) && !(isnan(va) && isnan(vb)))
                return 0;
        }
    }
    return 1;
}

/* The same plan, bit for bit (route_helper.h), with the same k and dense flag; the current
 * routers keep logsumexps the previous ones did not, compared through the metrics. */
static int same_plan(const moe_plan *a, const moe_plan *b)
{
    moe_plan a2 = *a, b2 = *b;
    a2.lse_of = b2.lse_of = NULL;
    return a->k == b->k && a->dense == b->dense && a->E == b->E &&
           route_helper_same_plan(&a2, &b2, a->E);
}

/* The metrics of plan (fresh, not attached) with o's metric options into *out. */
static int plain_metrics(moe_plan *plan, const double *L, const moe_route_opts *o,
                         moe_metrics **out)
{
    *out = moe_metrics_alloc(plan->E);
    if (!*out)
        return MOE_ENOMEM;
    int rc = moe_metrics_set_opts(*out, o);
    return rc ? rc : moe_metrics_compute(plan, L, 0, 0, 0, 0, *out);
}

/* Each token's entries in reverse order. */
static void reverse_runs(moe_plan *plan)
{
    for (size_t a = 0; a < plan->n_entries;) {
        size_t b = a;
        while (b < plan->n_entries && plan->entries[b].token == plan->entries[a].token)
            b++;
        for (size_t i = a, j = b - 1; i < j; i++, j--) {
            moe_entry x = plan->entries[i];
            plan->entries[i] = plan->entries[j];
            plan->entries[j] = x;
        }
        a = b;
    }
}

/* One case: router name (dense or soft_moe) with options o (metric options mo) on L (n, E*P),
 * on 1, 2 and 3 threads, against the reference. */
static void one_case(const char *name, const moe_route_opts *o, const moe_route_opts *mo,
                     const double *L, int n, int E, int P)
{
    const int M = P ? E * P : E; /* P = 0: dense */
    moe_plan *ref = moe_plan_alloc(n, E, 16);
    int rc = !ref ? MOE_ENOMEM
         : P ? ref_soft_route(L, n, E, P, ref) : ref_dense_route(L, n, E, ref);
    moe_metrics *mref = NULL, *mrev = NULL;
    if (!rc)
        rc = plain_metrics(ref, L, mo, &mref);
    CHECK(rc == 0, "%s n=%d E=%d P=%d: reference: %s", name, n, E, P, moe_errmsg());
    char which[64] = "";
    for (int nt = 1; !rc && nt <= 3; nt++) {
        moe_par_set_threads(nt);
        moe_par_set_grain(1);
        moe_router *r = NULL;
        moe_plan *plan = moe_plan_alloc(n, E, 16);
        moe_metrics *mt = moe_metrics_alloc(E);
        int rr = !plan || !mt ? MOE_ENOMEM : moe_router_alloc(moe_router_find(name), o, n, M, &r);
        if (!rr)
            rr = moe_metrics_set_opts(mt, mo);
        if (!rr)
            rr = moe_metrics_attach(mt, plan, n, r->k);
        moe_route_in in = {n, M, L, NULL, NULL, NULL, NULL, NULL, 0, NULL, NULL};
        if (!rr)
            rr = moe_router_route(r, &in, plan);
        if (!rr)
            rr = moe_metrics_compute(plan, L, 0, 0, 0, 0, mt);
        CHECK(rr == 0, "%s n=%d E=%d P=%d threads %d: %s", name, n, E, P, nt, moe_errmsg());
        if (!rr) {
            CHECK(same_plan(plan, ref), "%s n=%d E=%d P=%d threads %d: plan differs from the "
                  "previous implementation's", name, n, E, P, nt);
            CHECK(same_metrics(mt, mref, which, sizeof which),
                  "%s n=%d E=%d P=%d score %d threads %d: metric %s differs from the previous "
                  "plan's", name, n, E, P, o->score, nt, which);
        }
        moe_router_free(r);
        moe_plan_free(plan);
        moe_metrics_free(mt);
    }
    moe_par_set_threads(0);
    moe_par_set_grain(0);
    if (!rc) { /* each token's experts counted from its entries in another order */
        reverse_runs(ref);
        rc = plain_metrics(ref, L, mo, &mrev);
        CHECK(rc == 0 && same_metrics(mrev, mref, which, sizeof which),
              "%s n=%d E=%d P=%d: metric %s of the plan reversed within tokens differs", name, n,
              E, P, which);
    }
    moe_metrics_free(mref);
    moe_metrics_free(mrev);
    moe_plan_free(ref);
}

static void test_against_previous(void)
{
    static const int dense_E[] = {8, 37, 64, 256};
    static const int soft_EP[][2] = {{8, 1}, {37, 1}, {16, 4}, {256, 1}, {3, 5}};
    const int n = 301;
    gsl_rng *g = moe_rng_alloc(7, MOE_STREAM_TOKENS);
    double *L = malloc((size_t)n * 256 * sizeof *L);
    if (!g || !L) {
        CHECK(0, "out of memory");
        return;
    }
    moe_route_opts o;
    moe_route_opts_default(&o);
    for (int i = 0; i < 4; i++) {
        const int E = dense_E[i];
        fill(L, n, E, g);
        one_case("dense", &o, &o, L, n, E, 0);
    }
    /* sequences of 43 tokens and routing groups of 100 (the last one shorter) in the metrics;
     * then Megatron's sigmoid scores */
    moe_route_opts mo = o;
    mo.sequence_length = 43;
    mo.group_size = 100;
    fill(L, n, 64, g);
    one_case("dense", &o, &mo, L, n, 64, 0);
    moe_route_opts os = o;
    os.score = MOE_SCORE_SIGMOID;
    one_case("dense", &os, &os, L, n, 64, 0);
    for (int i = 0; i < 5; i++) {
        const int E = soft_EP[i][0], P = soft_EP[i][1];
        moe_route_opts op = o;
        op.slots_per_expert = P;
        op.num_experts = E;
        fill(L, n, E * P, g);
        one_case("soft_moe", &op, &op, L, n, E, P);
    }
    free(L);
    gsl_rng_free(g);
}

/* A non-finite logit (NaN, then -inf): the error of moe_logits_check_finite, on 1 and 2 threads. */
static void test_nonfinite(void)
{
    const int n = 50, E = 16;
    double L[50 * 16];
    for (int i = 0; i < n * E; i++)
        L[i] = 0.01 * (i % 17);
    for (int v = 0; v < 2; v++) {
        L[33 * E + 5] = v ? -INFINITY : NAN;
        moe_clear_error();
        moe_logits_check_finite(L, n, E);
        char want[512];
        snprintf(want, sizeof want, "%s", moe_errmsg());
        for (int s = 0; s < 2; s++)
            for (int nt = 1; nt <= 2; nt++) {
                moe_par_set_threads(nt);
                moe_par_set_grain(1);
                moe_route_opts o;
                moe_route_opts_default(&o);
                moe_router *r = NULL;
                moe_plan *plan = moe_plan_alloc(n, E, 16);
                int rc = moe_router_alloc(moe_router_find(s ? "soft_moe" : "dense"), &o, n, E, &r);
                moe_route_in in = {n, E, L, NULL, NULL, NULL, NULL, NULL, 0, NULL, NULL};
                moe_clear_error();
                if (!rc)
                    rc = moe_router_route(r, &in, plan);
                CHECK(rc == MOE_EINPUT && strcmp(moe_errmsg(), want) == 0,
                      "%s threads %d: rc %d, error '%s', expected '%s'", s ? "soft_moe" : "dense",
                      nt, rc, moe_errmsg(), want);
                moe_router_free(r);
                moe_plan_free(plan);
            }
    }
    moe_par_set_threads(0);
    moe_par_set_grain(0);
}

int main(void)
{
    test_against_previous();
    test_nonfinite();
    return check_report("test_routers_dense_soft");
}
