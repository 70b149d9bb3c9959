/* test_routers_ec_soft.c: the expert_choice and soft_moe routers (docs/routing.md section 3) on
 * hand-worked cases. Every expected plan below is worked by hand in the comment above it.
 * Logits such as ln 3 are chosen so that softmax values are simple fractions:
 * softmax([ln 3, 0]) = (3/4, 1/4), softmax([0, 0]) = (1/2, 1/2) exactly. Also: a memo's plans
 * and the plans with the metrics observing the rows equal a plain route's, bit for bit. */
#include "check.h"
#include "moe.h"
#include "route_memo.h"
#include "../routers/par.h"
#include "route_helper.h"

#include <math.h>
#include <string.h>

/* ---- helpers ---- */

typedef struct {
    int t, e, s;
    double dw, cw;
} want_entry;

/* Compare the plan's entries, in order, with want (len); one CHECK for the whole list. */
static void check_entries(const char *what, const moe_plan *p, const want_entry *want,
                          size_t len)
{
    if (p->n_entries != len) {
        CHECK(0, "%s: %zu entries, expected %zu", what, p->n_entries, len);
        return;
    }
    int bad = 0;
    for (size_t i = 0; i < len; i++) {
        const moe_entry *en = &p->entries[i];
        const want_entry *w = &want[i];
        if (en->token != w->t || en->expert != w->e || en->slot != w->s ||
            fabs(en->dispatch_w - w->dw) > 1e-15 || fabs(en->combine_w - w->cw) > 1e-15) {
            if (!bad)
                fprintf(stderr,
                        "%s: entry %zu is (%d,%d,%d,%.17g,%.17g), expected (%d,%d,%d,%.17g,%.17g)\n",
                        what, i, en->token, en->expert, en->slot, en->dispatch_w, en->combine_w,
                        w->t, w->e, w->s, w->dw, w->cw);
            bad++;
        }
    }
    CHECK(bad == 0, "%s: %d entries differ", what, bad);
}

/* Route logits (n,m) with router `name` and options o into plan; returns the status. */
static int route(const char *name, const moe_route_opts *o, const double *logits, int n, int m,
                 moe_plan *plan)
{
    moe_router *r = NULL;
    int rc = moe_router_alloc(moe_router_find(name), o, n, m, &r);
    if (rc)
        return rc;
    moe_route_in in;
    memset(&in, 0, sizeof in);
    in.n = n;
    in.m = m;
    in.logits = logits;
    rc = moe_router_route(r, &in, plan);
    moe_router_free(r);
    return rc;
}

static void set_cf(moe_route_opts *o, long long num, long long den)
{
    o->cf_set = 1;
    o->cf_num = num;
    o->cf_den = den;
}

/* ---- expert_choice ---- */

/* Tokens (E = 2):  t0 [0,0] -> S (1/2, 1/2); t1 [ln3,0] -> (3/4, 1/4); t2 [0,0] -> (1/2, 1/2);
 * t3 [0,ln3] -> (1/4, 3/4); t4 [0,ln2] -> (1/3, 2/3) (only in the n = 5 case). */
static double ec_logits[5 * 2];

static void test_ec_basic(moe_plan *plan)
{
    /* n = 4, cf = 1: C = ceil(4*1/2) = 2.
     * expert 0 scores (1/2, 3/4, 1/2, 1/4): t1 (3/4) then t0 and t2 tie at exactly 1/2, the
     *   lower token t0 wins -> (t1 slot 0, t0 slot 1).
     * expert 1 scores (1/2, 1/4, 1/2, 3/4): t3, then t0 beats t2 -> (t3 slot 0, t0 slot 1).
     * t0 is taken by both experts, t2 by none. importance = (3/4+1/2, 3/4+1/2) = (5/4, 5/4). */
    moe_route_opts o;
    moe_route_opts_default(&o);
    set_cf(&o, 1, 1);
    CHECK_INT(route("expert_choice", &o, ec_logits, 4, 2, plan), MOE_OK);
    const want_entry want[] = {
        {1, 0, 0, 1.0, 0.75}, {0, 0, 1, 1.0, 0.5}, {3, 1, 0, 1.0, 0.75}, {0, 1, 1, 1.0, 0.5}};
    check_entries("ec n=4 cf=1", plan, want, 4);
    CHECK_INT(plan->capacity, 2);
    CHECK_INT(plan->assigned_load[0], 2);
    CHECK_INT(plan->assigned_load[1], 2);
    CHECK_NEAR(plan->importance[0], 1.25, 1e-15);
    CHECK_NEAR(plan->importance[1], 1.25, 1e-15);
    CHECK_INT(plan->n_claims, 4);
    CHECK(plan->aux_loss == 0.0, "aux_loss = %g", plan->aux_loss);
    CHECK_INT(plan->dense, 0);
    CHECK_INT(plan->k, 0);
}

static void test_ec_capacity(moe_plan *plan)
{
    moe_route_opts o;

    /* cf = 0.25, floor: C = floor(4*0.25/2) = floor(0.5) = 0: no entries, loads 0. */
    moe_route_opts_default(&o);
    set_cf(&o, 1, 4);
    o.rounding = MOE_ROUND_FLOOR;
    CHECK_INT(route("expert_choice", &o, ec_logits, 4, 2, plan), MOE_OK);
    CHECK_INT(plan->capacity, 0);
    CHECK_INT(plan->n_entries, 0);
    CHECK_INT(plan->assigned_load[0] + plan->assigned_load[1], 0);
    CHECK(plan->importance[0] == 0.0 && plan->importance[1] == 0.0, "importance not 0");

    /* cf = 0.25, ceil (default): C = ceil(0.5) = 1: each expert its top token. */
    o.rounding = MOE_ROUND_CEIL;
    CHECK_INT(route("expert_choice", &o, ec_logits, 4, 2, plan), MOE_OK);
    const want_entry one[] = {{1, 0, 0, 1.0, 0.75}, {3, 1, 0, 1.0, 0.75}};
    check_entries("ec cf=0.25 ceil", plan, one, 2);

    /* cf = 0: C = 0 */
    set_cf(&o, 0, 1);
    CHECK_INT(route("expert_choice", &o, ec_logits, 4, 2, plan), MOE_OK);
    CHECK_INT(plan->capacity, 0);
    CHECK_INT(plan->n_entries, 0);

    /* cf = 10: C = ceil(4*10/2) = 20, capped at n = 4: every expert takes every token, slots
     * by descending score, ties (t0, t2) to the lower token:
     *   expert 0: t1 (3/4), t0 (1/2), t2 (1/2), t3 (1/4)
     *   expert 1: t3 (3/4), t0 (1/2), t2 (1/2), t1 (1/4) */
    set_cf(&o, 10, 1);
    CHECK_INT(route("expert_choice", &o, ec_logits, 4, 2, plan), MOE_OK);
    const want_entry all[] = {{1, 0, 0, 1.0, 0.75}, {0, 0, 1, 1.0, 0.5},  {2, 0, 2, 1.0, 0.5},
                              {3, 0, 3, 1.0, 0.25}, {3, 1, 0, 1.0, 0.75}, {0, 1, 1, 1.0, 0.5},
                              {2, 1, 2, 1.0, 0.5},  {1, 1, 3, 1.0, 0.25}};
    check_entries("ec cf=10 capped", plan, all, 8);
    CHECK_INT(plan->capacity, 4);
    CHECK_INT(plan->assigned_load[0], 4);
    CHECK_NEAR(plan->importance[0], 2.0, 1e-15);

    /* an explicit capacity larger than n is capped too */
    moe_route_opts_default(&o);
    o.capacity = 9;
    CHECK_INT(route("expert_choice", &o, ec_logits, 4, 2, plan), MOE_OK);
    CHECK_INT(plan->capacity, 4);
    CHECK_INT(plan->n_entries, 8);
}

static void test_ec_odd_n(moe_plan *plan)
{
    /* n = 5, E = 2, cf = 1: n*cf/E = 5/2. ceil -> C = 3; round (half to even) -> C = 2.
     * expert 0 scores (1/2, 3/4, 1/2, 1/4, 1/3): t1, t0, t2 | t4, t3
     * expert 1 scores (1/2, 1/4, 1/2, 3/4, 2/3): t3, t4, t0 | t2, t1 */
    moe_route_opts o;
    moe_route_opts_default(&o);
    set_cf(&o, 1, 1);
    CHECK_INT(route("expert_choice", &o, ec_logits, 5, 2, plan), MOE_OK);
    const want_entry c3[] = {{1, 0, 0, 1.0, 0.75},      {0, 0, 1, 1.0, 0.5},
                             {2, 0, 2, 1.0, 0.5},       {3, 1, 0, 1.0, 0.75},
                             {4, 1, 1, 1.0, 2.0 / 3.0}, {0, 1, 2, 1.0, 0.5}};
    check_entries("ec n=5 ceil", plan, c3, 6);
    CHECK_INT(plan->capacity, 3);
    CHECK_NEAR(plan->importance[1], 0.75 + 2.0 / 3.0 + 0.5, 1e-15);

    o.rounding = MOE_ROUND_HALF_EVEN;
    CHECK_INT(route("expert_choice", &o, ec_logits, 5, 2, plan), MOE_OK);
    const want_entry c2[] = {{1, 0, 0, 1.0, 0.75},
                             {0, 0, 1, 1.0, 0.5},
                             {3, 1, 0, 1.0, 0.75},
                             {4, 1, 1, 1.0, 2.0 / 3.0}};
    check_entries("ec n=5 round", plan, c2, 4);
    CHECK_INT(plan->capacity, 2);
}

static void test_ec_combine(moe_plan *plan)
{
    /* E = 3, n = 2, cf = 1: C = ceil(2/3) = 1.
     * t0 [1,2,3] -> S = e^(1,2,3)/(e+e^2+e^3) = (0.09003057317038043, 0.24472847105479767,
     * 0.6652409557748218) (NumPy: x = exp([1,2,3] - 3); x / x.sum()); t1 [0,0,0] -> 1/3 each.
     * expert 0: 1/3 > 0.090 -> t1; expert 1: 1/3 > 0.245 -> t1; expert 2: 0.665 > 1/3 -> t0.
     * combine = S[t,e]: t1 is taken by 2 experts with weight 1/3 each. */
    const double L[] = {1, 2, 3, 0, 0, 0};
    moe_route_opts o;
    moe_route_opts_default(&o);
    CHECK_INT(route("expert_choice", &o, L, 2, 3, plan), MOE_OK);
    const want_entry want[] = {{1, 0, 0, 1.0, 1.0 / 3.0},
                               {1, 1, 0, 1.0, 1.0 / 3.0},
                               {0, 2, 0, 1.0, 0.6652409557748218}};
    check_entries("ec combine = S", plan, want, 3);
}

/* ---- soft_moe ---- */

static void test_soft_p1(moe_plan *plan)
{
    /* n = 2, M = E = 2, P = 1; L = [[0, 0], [ln3, 0]].
     * dispatch (softmax over tokens per column): col 0 [0, ln3] -> (1/4, 3/4); col 1 -> (1/2, 1/2)
     * combine (softmax per token): t0 -> (1/2, 1/2); t1 -> (3/4, 1/4)
     * importance: e0 = 1/2 + 3/4 = 5/4, e1 = 1/2 + 1/4 = 3/4. */
    const double L[] = {0, 0, log(3.0), 0};
    moe_route_opts o;
    moe_route_opts_default(&o);
    CHECK_INT(route("soft_moe", &o, L, 2, 2, plan), MOE_OK);
    const want_entry want[] = {
        {0, 0, 0, 0.25, 0.5}, {0, 1, 0, 0.5, 0.5}, {1, 0, 0, 0.75, 0.75}, {1, 1, 0, 0.5, 0.25}};
    check_entries("soft P=1", plan, want, 4);
    CHECK_INT(plan->dense, 1);
    CHECK_INT(plan->capacity, 1);
    CHECK_INT(plan->E, 2);
    CHECK_INT(plan->assigned_load[0], 1);
    CHECK_INT(plan->assigned_load[1], 1);
    CHECK_NEAR(plan->importance[0], 1.25, 1e-15);
    CHECK_NEAR(plan->importance[1], 0.75, 1e-15);
    CHECK_INT(plan->n_claims, 4);
    CHECK(plan->aux_loss == 0.0, "aux_loss = %g", plan->aux_loss);
}

static void test_soft_p2(moe_plan *plan)
{
    /* n = 2, P = 2, M = 4, E = 2; columns j -> (expert j/2, slot j%2).
     * L = [[0, ln3, 0, 0], [ln3, 0, 0, ln2]].
     * dispatch: j0 [0,ln3] -> (1/4, 3/4); j1 [ln3,0] -> (3/4, 1/4); j2 [0,0] -> (1/2, 1/2);
     *           j3 [0,ln2] -> (1/3, 2/3)
     * combine: t0 e^L = (1,3,1,1)/6 -> (1/6, 1/2, 1/6, 1/6);
     *          t1 e^L = (3,1,1,2)/7 -> (3/7, 1/7, 1/7, 2/7)
     * importance: e0 = 1/6 + 1/2 + 3/7 + 1/7 = 26/21; e1 = 1/6 + 1/6 + 1/7 + 2/7 = 16/21. */
    const double L[] = {0, log(3.0), 0, 0, log(3.0), 0, 0, log(2.0)};
    moe_route_opts o;
    moe_route_opts_default(&o);
    o.slots_per_expert = 2;
    CHECK_INT(route("soft_moe", &o, L, 2, 4, plan), MOE_OK);
    const want_entry want[] = {{0, 0, 0, 0.25, 1.0 / 6},       {0, 0, 1, 0.75, 0.5},
                               {0, 1, 0, 0.5, 1.0 / 6},        {0, 1, 1, 1.0 / 3, 1.0 / 6},
                               {1, 0, 0, 0.75, 3.0 / 7},       {1, 0, 1, 0.25, 1.0 / 7},
                               {1, 1, 0, 0.5, 1.0 / 7},        {1, 1, 1, 2.0 / 3, 2.0 / 7}};
    check_entries("soft P=2", plan, want, 8);
    CHECK_INT(plan->E, 2);
    CHECK_INT(plan->capacity, 2);
    CHECK_INT(plan->assigned_load[0], 2);
    CHECK_INT(plan->assigned_load[1], 2);
    CHECK_NEAR(plan->importance[0], 26.0 / 21, 1e-15);
    CHECK_NEAR(plan->importance[1], 16.0 / 21, 1e-15);

    /* num_experts given explicitly: the same plan */
    o.num_experts = 2;
    CHECK_INT(route("soft_moe", &o, L, 2, 4, plan), MOE_OK);
    check_entries("soft P=2 num_experts=2", plan, want, 8);
}

static void test_soft_sums(moe_plan *plan)
{
    /* n = 7, E = 3, P = 2, M = 6, logits 3 sin(1.7 t + 0.9 j + 0.3 t j): every dispatch column
     * sums to 1 over tokens, every combine row sums to 1 over columns, n*M = 42 entries with
     * each (token, column) once, token-major, importance summing to n = 7. */
    enum { N = 7, M = 6, P = 2 };
    double L[N * M];
    for (int t = 0; t < N; t++)
        for (int j = 0; j < M; j++)
            L[t * M + j] = 3.0 * sin(1.7 * t + 0.9 * j + 0.3 * t * j);
    moe_route_opts o;
    moe_route_opts_default(&o);
    o.slots_per_expert = P;
    CHECK_INT(route("soft_moe", &o, L, N, M, plan), MOE_OK);
    CHECK_INT(plan->n_entries, N * M);
    if (plan->n_entries != N * M)
        return;
    double colsum[M] = {0}, rowsum[N] = {0}, imp = 0.0;
    int order_bad = 0;
    for (size_t i = 0; i < plan->n_entries; i++) {
        const moe_entry *en = &plan->entries[i];
        int t = (int)i / M, j = (int)i % M;
        if (en->token != t || en->expert != j / P || en->slot != j % P)
            order_bad++;
        colsum[j] += en->dispatch_w;
        rowsum[t] += en->combine_w;
    }
    for (int e = 0; e < 3; e++)
        imp += plan->importance[e];
    CHECK(order_bad == 0, "%d entries out of token-major order", order_bad);
    const double ones[N] = {1, 1, 1, 1, 1, 1, 1};
    check_close_arrays("soft dispatch column sums", colsum, ones, M, 1e-14, 0);
    check_close_arrays("soft combine row sums", rowsum, ones, N, 1e-14, 0);
    CHECK_NEAR(imp, 7.0, 1e-13);
}

static void test_soft_errors(void)
{
    moe_route_opts o;
    moe_route_opts_default(&o);
    moe_router *r = NULL;
    const moe_router_type *t = moe_router_find("soft_moe");

    /* M = 5 is not a multiple of P = 2 */
    o.slots_per_expert = 2;
    moe_clear_error();
    CHECK_INT(moe_router_alloc(t, &o, 4, 5, &r), MOE_EINPUT);
    CHECK(r == NULL, "router allocated despite the error");
    CHECK(strstr(moe_errmsg(), "slots_per_expert") != NULL, "message: %s", moe_errmsg());

    /* num_experts * P != M */
    o.num_experts = 3;
    moe_clear_error();
    CHECK_INT(moe_router_alloc(t, &o, 4, 4, &r), MOE_EINPUT);
    CHECK(r == NULL, "router allocated despite the error");
    moe_clear_error();

    CHECK(t->flags & MOE_RF_DENSE, "soft_moe flags 0x%x lack MOE_RF_DENSE", t->flags);
    /* expert_choice checks its logits while it takes their softmax and keeps its candidate
     * lists for a route memo (test_ec_memo), nothing else */
    CHECK_INT(moe_router_find("expert_choice")->flags, MOE_RF_CHECKS_FINITE | MOE_RF_MEMO);
}

/* ---- expert_choice with a route memo ----
 * The points of a sweep that differ only in the capacity factor, as the pipeline runs them
 * (route_memo.h: begin, route, end, keep; a router of its own per point): the routes after the
 * first reuse the candidate lists the memo keeps when they were built for a capacity at least
 * theirs, else build them again. Capacity factors 1/2 (C = 94, lists for 4 C: at most 1/64
 * of a block of 12000 tokens), 1, 2, 3/4 (reused), 4 (built again: 8 times the first), 3, 1/4,
 * 1/64 (C = 3; reused), 128 (C = n, built again). Each plan (entries field by field, capacity,
 * loads, importance, claims, logsumexps) equals that of a route without a memo, bit for bit,
 * on 2 threads; 24000 tokens x 128 experts of logits uniform in [0, 6), some tied. */
/* attach: the memo's plans with their metrics attached (the rows pass, also on its reuses) */
static void test_ec_memo(int attach)
{
    enum { N = 24000, NE = 128 };
    static double lg[N * NE];
    unsigned long s = 99;
    for (int i = 0; i < N * NE; i++) {
        s = s * 6364136223846793005UL + 1442695040888963407UL;
        lg[i] = (double)(s >> 11) * 0x1p-53 * 6.0; /* continuous in [0, 6) */
    }
    for (int i = 0; i < N * NE; i += 7 * NE + 3)
        lg[i] = 2.5; /* and some ties */
    static const long long cf[][2] = {{1, 2}, {1, 1}, {2, 1}, {3, 4}, {4, 1}, {3, 1},
                                      {1, 4}, {1, 64}, {128, 1}};
    const int ncf = (int)(sizeof cf / sizeof *cf);
    moe_par_set_threads(2);
    moe_route_memo *m = moe_route_memo_alloc();
    moe_route_in in;
    memset(&in, 0, sizeof in);
    in.n = N, in.m = NE, in.logits = lg;
    int same = 0;
    for (int c = 0; c < ncf; c++) {
        moe_route_opts o;
        moe_route_opts_default(&o);
        set_cf(&o, cf[c][0], cf[c][1]);
        moe_router *r = NULL;
        moe_plan *p = moe_plan_alloc(N, NE, 16), *q = moe_plan_alloc(N, NE, 16);
        moe_metrics *mt = moe_metrics_alloc(NE);
        int rc = moe_router_alloc(moe_router_find("expert_choice"), &o, N, NE, &r) ||
                 moe_plan_reset(p, N, NE, NE) || moe_plan_reset(q, N, NE, NE) || !mt ||
                 (attach && moe_metrics_attach(mt, p, N, 1));
        if (!rc) {
            moe_route_memo_begin(m, r, &in, p, 1);
            rc = moe_router_route(r, &in, p);
            moe_route_memo_end(m, r, rc);
        }
        rc = rc || route("expert_choice", &o, lg, N, NE, q);
        const int ok = !rc && p->lse_of && (!attach || p->rows_of == lg) &&
                       route_helper_same_plan(p, q, NE);
        CHECK(ok, "expert_choice with a memo at cf %lld/%lld%s: not the plan of a route without "
                  "(%zu entries, %zu)", cf[c][0], cf[c][1], attach ? ", metrics attached" : "",
              p->n_entries, q->n_entries);
        same += ok;
        moe_route_memo_keep(m, r, p);
        moe_metrics_free(mt);
        moe_router_free(r);
        moe_plan_free(p);
        moe_plan_free(q);
    }
    CHECK_INT(moe_route_memo_get_stats(m).hits, ncf - 1);
    moe_route_memo_free(m);
    moe_par_set_threads(0);
}

/* With the plan's metrics attached (moe_metrics_attach: they observe the rows), expert_choice
 * takes its softmax rows on the claims' rows pass, with step 1's lists on its threads where
 * they fit (E = 128, 8) and beside it where they do not (E = 2: C = 1.25 n / 2): the plan of
 * a route without the metrics, bit for bit, at capacity factors from 1/64 to 4, on 1 and 2
 * threads, and the rows were the metrics' (rows_of). */
static void test_ec_rows(void)
{
    enum { N = 24000, NE = 128 };
    static double lg[N * NE];
    unsigned long s = 7;
    for (int i = 0; i < N * NE; i++) {
        s = s * 6364136223846793005UL + 1442695040888963407UL;
        lg[i] = (double)(s >> 11) * 0x1p-53 * 6.0;
    }
    for (int i = 0; i < N * NE; i += 5 * NE + 1)
        lg[i] = 2.5; /* ties */
    static const int shapes[][2] = {{N, NE}, {20001, 8}, {4096, 2}};
    static const long long cf[][2] = {{1, 64}, {5, 4}, {4, 1}};
    for (int nt = 1; nt <= 2; nt++)
        for (int sh = 0; sh < 3; sh++)
            for (int c = 0; c < 3; c++) {
                const int n = shapes[sh][0], E = shapes[sh][1];
                moe_par_set_threads(nt);
                moe_route_opts o;
                moe_route_opts_default(&o);
                set_cf(&o, cf[c][0], cf[c][1]);
                moe_plan *p = moe_plan_alloc(n, E, 16), *q = moe_plan_alloc(n, E, 16);
                moe_metrics *mt = moe_metrics_alloc(E);
                int rc = !p || !q || !mt || moe_metrics_attach(mt, p, n, 1) ||
                         route("expert_choice", &o, lg, n, E, p) ||
                         route("expert_choice", &o, lg, n, E, q);
                CHECK(!rc && p->rows_of == lg && q->rows_of == NULL &&
                          route_helper_same_plan(p, q, E),
                      "expert_choice n=%d E=%d cf %lld/%lld, %d threads: with its rows observed "
                      "not the plan without (%zu entries, %zu)",
                      n, E, cf[c][0], cf[c][1], nt, p ? p->n_entries : 0,
                      q ? q->n_entries : 0);
                moe_metrics_free(mt);
                moe_plan_free(p);
                moe_plan_free(q);
            }
    moe_par_set_threads(0);
}

int main(void)
{
    test_ec_memo(0);
    test_ec_memo(1);
    test_ec_rows();
    const double l3 = log(3.0), l2 = log(2.0);
    const double ec[] = {0, 0, l3, 0, 0, 0, 0, l3, 0, l2};
    memcpy(ec_logits, ec, sizeof ec);

    moe_plan *plan = moe_plan_alloc(64, 4, 64);
    CHECK(plan != NULL, "moe_plan_alloc");
    if (!plan)
        return check_report("test_routers_ec_soft");
    test_ec_basic(plan);
    test_ec_capacity(plan);
    test_ec_odd_n(plan);
    test_ec_combine(plan);
    test_soft_p1(plan);
    test_soft_p2(plan);
    test_soft_sums(plan);
    test_soft_errors();
    moe_plan_free(plan);
    return check_report("test_routers_ec_soft");
}
