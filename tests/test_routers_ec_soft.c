/* test_routers_ec_soft.c: the expert_choice and soft_moe routers (docs/routing.md section 3) on
 * hand-worked cases. Every expected plan below is worked by hand in the comment above it.
 * Logits such as ln 3 are chosen so that softmax values are simple fractions:
 * softmax([ln 3, 0]) = (3/4, 1/4), softmax([0, 0]) = (1/2, 1/2) exactly.
 * Then expert_choice on larger random cases against its previous implementation
 * (tests/ec_heap_ref.h: per-expert heaps, one thread), bit for bit, on 1, 2 and 3 threads, and
 * the candidate selection and sort of routers/colselect.h against qsort. */
#include "check.h"
#include "moe.h"
#include "../routers/colselect.h"
#include "ec_heap_ref.h"
#include "route_helper.h"

#include <gsl/gsl_randist.h>
#include <math.h>
#include <stdlib.h>
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

/* ---- expert_choice against its previous implementation ---- */

enum { ECR_N = 5003, ECR_EMAX = 64 };

/* Logits (n,E): quarters of N(0, 1) (scores tie within a column), and every third token a copy
 * of an earlier token's row (whole rows tie, as repeated token ids give through the gate). */
static void ecr_fill(double *L, int n, int E, gsl_rng *g)
{
    for (int t = 0; t < n; t++)
        for (int e = 0; e < E; e++)
            L[(size_t)t * E + e] =
                t % 3 == 2 ? L[(size_t)(t / 7) * E + e]
                           : round(4.0 * gsl_ran_gaussian_ziggurat(g, 1.0)) / 4.0;
}

/* E in {8, 37, 64} (37: not a multiple of the vector width), n = 5003 and 1003 (odd), capacity
 * factors 1/2, 1 and 2, a capacity of 1 and one of n (cf = E caps C at n); the routers'
 * threads 1, 2, 3 with the default grain (one block below 4096 tokens) and with blocks of 500
 * tokens (lists that overflow and are cut many times, several blocks per thread). */
static void test_ec_vs_heap(void)
{
    static double L[ECR_N * ECR_EMAX];
    gsl_rng *g = moe_rng_alloc(29, 1);
    moe_plan *ref = moe_plan_alloc(ECR_N, ECR_EMAX, 16);
    static const int Es[] = {8, 37, 64}, ns[] = {ECR_N, 1003};
    static const long long cf[][2] = {{1, 2}, {1, 1}, {2, 1}, {0, 0}, {-1, 0}};
    int cases = 0;
    for (int ie = 0; ie < 3; ie++)
        for (int in = 0; in < 2; in++) {
            const int E = Es[ie], n = ns[in];
            ecr_fill(L, n, E, g);
            for (int c = 0; c < 5; c++) {
                moe_route_opts o;
                moe_route_opts_default(&o);
                if (cf[c][0] > 0)
                    o.cf_set = 1, o.cf_num = cf[c][0], o.cf_den = cf[c][1];
                else if (cf[c][0] == 0)
                    o.capacity = 1;
                else
                    o.cf_set = 1, o.cf_num = E, o.cf_den = 1;
                long C;
                CHECK_INT(moe_capacity(&o, 1, n, E, &C), MOE_OK);
                C = C < n ? C : n;
                CHECK(ec_heap_ref_route(L, n, E, C, ref) == 0, "reference out of memory");
                for (int grain = 0; grain <= 500; grain += 500)
                    for (int th = 1; th <= 3; th++) {
                        moe_par_set_grain(grain);
                        moe_plan *p = route_helper("expert_choice", &o, n, E, L, NULL, NULL, th);
                        moe_par_set_grain(0);
                        CHECK(p->capacity == C && route_helper_same_plan(p, ref, E),
                              "expert_choice E %d n %d capacity %ld (case %d), %d threads, grain "
                              "%d: plan differs from the previous implementation",
                              E, n, C, c, th, grain);
                        moe_plan_free(p);
                        cases++;
                    }
            }
        }
    CHECK_INT(cases, 3 * 2 * 5 * 2 * 3);
    moe_plan_free(ref);
    gsl_rng_free(g);
}

/* ---- candidate selection and sort (routers/colselect.h) ---- */

static int cand_cmp(const void *a, const void *b)
{
    const moe_cand *x = a, *y = b;
    return moe_cand_better(*x, *y) ? -1 : moe_cand_better(*y, *x) ? 1 : 0;
}

/* Lists of 1..3000 candidates in patterns that defeat simple pivots (sorted, reversed, all
 * scores equal with tokens shuffled or reversed, organ pipe, few distinct scores, random):
 * moe_cand_sort gives qsort's order of the total order; moe_cand_select(k) leaves at a[k-1]
 * qsort's k-th and the set of a[0..k) equal to qsort's first k. */
static void test_colselect(void)
{
    enum { M = 3000 };
    static moe_cand a[M], b[M], want[M], tmp[M];
    gsl_rng *g = moe_rng_alloc(31, 1);
    int bad_sort = 0, bad_sel = 0, lists = 0;
    static const int lens[] = {1, 2, 3, 15, 16, 17, 100, 999, M};
    for (int il = 0; il < 9; il++)
        for (int pat = 0; pat < 7; pat++) {
            const int m = lens[il];
            for (int i = 0; i < m; i++) {
                const int r = m - 1 - i;
                double v = pat == 0 ? i : pat == 1 ? r : pat <= 3 ? 0.5
                         : pat == 4 ? (i < m / 2 ? i : r) : pat == 5 ? (double)(i % 3)
                                                                     : gsl_rng_uniform(g);
                a[i] = (moe_cand){v, pat == 3 ? r : i};
            }
            if (pat == 2) /* equal scores, tokens shuffled */
                gsl_ran_shuffle(g, a, (size_t)m, sizeof *a);
            memcpy(want, a, (size_t)m * sizeof *a);
            qsort(want, (size_t)m, sizeof *want, cand_cmp);
            memcpy(b, a, (size_t)m * sizeof *a);
            moe_cand_sort(b, m, tmp);
            bad_sort += memcmp(b, want, (size_t)m * sizeof *b) != 0;
            const long ks[] = {1, m / 3 + 1, m / 2 + 1, m};
            for (int q = 0; q < 4; q++) {
                const long k = ks[q];
                memcpy(b, a, (size_t)m * sizeof *a);
                moe_cand_select(b, m, k, tmp);
                int ok = b[k - 1].v == want[k - 1].v && b[k - 1].t == want[k - 1].t;
                qsort(b, (size_t)k, sizeof *b, cand_cmp);
                ok = ok && memcmp(b, want, (size_t)k * sizeof *b) == 0;
                bad_sel += !ok;
            }
            lists++;
        }
    CHECK(bad_sort == 0, "moe_cand_sort: %d of %d lists out of qsort's order", bad_sort, lists);
    CHECK(bad_sel == 0, "moe_cand_select: %d of %d selections differ from qsort's first k",
          bad_sel, 4 * lists);
    gsl_rng_free(g);
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
    /* expert_choice checks its logits while it takes their softmax, nothing else */
    CHECK_INT(moe_router_find("expert_choice")->flags, MOE_RF_CHECKS_FINITE);
}

int main(void)
{
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
    test_ec_vs_heap();
    test_colselect();
    test_soft_p1(plan);
    test_soft_p2(plan);
    test_soft_sums(plan);
    test_soft_errors();
    moe_plan_free(plan);
    return check_report("test_routers_ec_soft");
}
