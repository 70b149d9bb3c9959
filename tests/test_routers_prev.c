/* test_routers_prev.c: expert_choice and dsv3_bias against their previous implementations, bit
 * for bit (plans, loads, importance, logsumexps), with ties, on the routers' 1, 2 and 3 threads:
 *   - expert_choice against its per-expert heaps (tests/ec_heap_ref.h: routers/expert_choice.c
 *     at commit eae4a87, one thread) on quarter logits with repeated rows, E = 8, 37 (not a
 *     multiple of the vector width) and 64, n = 5003 and 1003, capacity factors 1/2, 1 and 2, a
 *     capacity of 1 and one of n, with one block and with blocks of 500 tokens; and the
 *     candidate selection and sort of routers/colselect.h against qsort of the same order on
 *     lists that defeat simple pivots;
 *   - dsv3_bias against its per-token code at commit eae4a87 (kept below), the plan built from
 *     its choices by the choice_major rule of docs/routing.md, on quarter logits (and the same
 *     times 24: scores of exactly 1.0 and near 0), E = 37 and 64, k = 2, 4 and 8, dropless and
 *     capacity factors 1/2, 1 and 2, the bias at 0 and after one observe step (either sign),
 *     expert groups (the score path);
 *   - base against its one-core code (tests/base_ref.h: routers/base.c at commit 150f3a2) on
 *     N(0,1) logits with a skew of 0 and 20 across the experts, quarter logits with repeated
 *     rows and equal logits, E = 8, 37 and 64 with n not a multiple of E (dummies), on 1 and 3
 *     threads with the default grain and a grain of 1 (steps 1 and 2 split even at this n). */
#include "check.h"
#include "moe.h"
#include "../routers/claims.h"
#include "../routers/colselect.h"
#include "../routers/dsv3_bias.h"
#include "../routers/score.h"
#include "base_ref.h"
#include "ec_heap_ref.h"
#include "route_helper.h"
#include "vexp.h"

#include <gsl/gsl_randist.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static moe_route_opts opts(void)
{
    moe_route_opts o;
    moe_route_opts_default(&o);
    return o;
}

static moe_router *make(const char *name, const moe_route_opts *o, int n, int m, int *rc)
{
    moe_router *r = NULL;
    moe_clear_error();
    *rc = moe_router_alloc(moe_router_find(name), o, n, m, &r);
    return r;
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

/* moe_cand_cut (colselect.h) on a copy b of a (m), 1 <= k < m, want = a sorted: it keeps c >= k
 * candidates, the ones of a with a score above x in a's order, and the best k among them;
 * when the sample found no x (many equal scores) it keeps just the best k, x the k-th score. */
static int cut_keeps_best(const moe_cand *a, long m, long k, const moe_cand *want, moe_cand *b,
                          moe_cand *tmp)
{
    memcpy(b, a, (size_t)m * sizeof *a);
    double x;
    const long c = moe_cand_cut(b, m, k, &x, tmp);
    if (c < k || c > m)
        return 0;
    long above = 0; /* the candidates of a above x, in order, are b[0..above) */
    int in_order = 1;
    for (long i = 0; i < m; i++)
        if (a[i].v > x) {
            in_order &= above < c && b[above].v == a[i].v && b[above].t == a[i].t;
            above++;
        }
    if (!(c == k ? above <= k : in_order && above == c))
        return 0;
    qsort(b, (size_t)c, sizeof *b, cand_cmp);
    for (long i = 0; i < k; i++)
        if (b[i].v != want[i].v || b[i].t != want[i].t)
            return 0;
    return 1;
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
    int bad_sort = 0, bad_sel = 0, bad_cut = 0, lists = 0;
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
                if (k < m) /* the cut keeps the best k: the first k of its list sorted */
                    bad_cut += !cut_keeps_best(a, m, k, want, b, tmp);
            }
            lists++;
        }
    CHECK(bad_sort == 0, "moe_cand_sort: %d of %d lists out of qsort's order", bad_sort, lists);
    CHECK(bad_sel == 0, "moe_cand_select: %d of %d selections differ from qsort's first k",
          bad_sel, 4 * lists);
    CHECK(bad_cut == 0, "moe_cand_cut: %d cuts lost one of the best k or kept one below x",
          bad_cut);
    gsl_rng_free(g);
}

/* ---- dsv3_bias against its previous implementation ---- */

enum { DV_N = 3001, DV_EMAX = 64 };

/* One token's experts ex (k) and gates g (k) from logits lt (E) and bias b (E): dsv3_token of
 * routers/dsv3_bias.c at commit eae4a87, copied with its scalar loops. */
static void dv_prev_token(const double *lt, const double *b, int E, int k, int32_t *ex, double *g)
{
    double s[DV_EMAX], key[DV_EMAX];
    for (int e = 0; e < E; e++)
        s[e] = -lt[e];
    moe_vexp_shift(s, E, 0.0, s);
    for (int e = 0; e < E; e++) {
        s[e] = 1.0 / (1.0 + s[e]);
        key[e] = s[e] + b[e];
    }
    moe_claims_topk(key, E, k, ex, g); /* ties: lower expert */
    double sum = 0.0;
    for (int j = 0; j < k; j++)
        sum += s[ex[j]];
    for (int j = 0; j < k; j++)
        g[j] = s[ex[j]] / sum;
}

/* The choices (T,k) of every token: the previous code above, or with expert groups the
 * previous score-path loop of dsv3_route (moe_score_apply, then moe_score_token, per token). */
static void dv_prev_choices(const double *L, int n, int E, const moe_route_opts *o,
                            const double *b, int32_t *ex, double *g)
{
    moe_score_cfg sc;
    moe_score_tmp *tmp = NULL;
    if (o->groups) {
        CHECK_INT(moe_score_setup(&sc, o, o->k, E, MOE_SCORE_SIGMOID, 1, "dsv3_bias"), MOE_OK);
        tmp = moe_score_tmp_alloc(&sc, n);
        CHECK(tmp != NULL, "score scratch");
    }
    for (int t = 0; t < n; t++) {
        const double *lt = L + (size_t)t * E;
        const size_t i0 = (size_t)t * o->k;
        if (!tmp) {
            dv_prev_token(lt, b, E, o->k, ex + i0, g + i0);
            continue;
        }
        double *st = tmp->s + (size_t)t * E;
        moe_score_apply(sc.score, lt, NULL, E, st);
        moe_score_token(&sc, tmp, t, st, b, ex + i0, g + i0);
    }
    moe_score_tmp_free(tmp);
}

/* Compare plan p with the choice_major plan of the choices ex, g (T,k): the claims of rank 0 in
 * token order, then rank 1, ..., each taking its expert's next slot below C (C < 0: dropless,
 * C = the largest load); entries token-major, then by rank; loads and importance (gates summed
 * in token order, then rank) before capacity. */
static int dv_same(const moe_plan *p, int n, int E, int k, const int32_t *ex, const double *g,
                   long C)
{
    static long slot[DV_N * 8];
    long fill[DV_EMAX] = {0}, load[DV_EMAX] = {0}, cmax = 0;
    double imp[DV_EMAX] = {0};
    for (int j = 0; j < k; j++)
        for (int t = 0; t < n; t++) {
            const int e = ex[(size_t)t * k + j];
            slot[(size_t)t * k + j] = C < 0 || fill[e] < C ? fill[e]++ : -1;
        }
    for (int t = 0; t < n; t++)
        for (int j = 0; j < k; j++) {
            const int e = ex[(size_t)t * k + j];
            load[e]++;
            imp[e] += g[(size_t)t * k + j];
            cmax = load[e] > cmax ? load[e] : cmax;
        }
    if (p->capacity != (C < 0 ? cmax : C) || p->n_claims != (long)n * k ||
        memcmp(p->assigned_load, load, (size_t)E * sizeof *load) ||
        memcmp(p->importance, imp, (size_t)E * sizeof *imp))
        return 0;
    size_t q = 0;
    for (int t = 0; t < n; t++)
        for (int j = 0; j < k; j++) {
            const size_t i = (size_t)t * k + j;
            if (slot[i] < 0)
                continue;
            if (q >= p->n_entries)
                return 0;
            const moe_entry *en = &p->entries[q++];
            if (en->token != t || en->expert != ex[i] || en->slot != slot[i] ||
                en->dispatch_w != 1.0 || memcmp(&en->combine_w, &g[i], sizeof g[i]))
                return 0;
        }
    return q == p->n_entries;
}

/* Logits quantised to quarters (sigmoid scores tie, so do keys with equal biases), n = 3001
 * (odd); each case routes two batches with one router: the first with the bias at 0, the second
 * with the bias its observe step gave (rate 1/64: 0 or +-1/64 per expert). One shape has the
 * logits times 24 (scores of exactly 1.0 and near 0: the selection that starts from the logits
 * alone must step aside there). */
static void test_dsv3_prev(void)
{
    static double L0[DV_N * DV_EMAX], L1[DV_N * DV_EMAX], g[DV_N * 8];
    static int32_t ex[DV_N * 8];
    gsl_rng *rg = moe_rng_alloc(37, MOE_STREAM_TOKENS);
    for (int i = 0; i < DV_N * DV_EMAX; i++) {
        L0[i] = round(4.0 * gsl_ran_gaussian_ziggurat(rg, 1.0)) / 4.0;
        L1[i] = 24.0 * L0[i];
    }
    gsl_rng_free(rg);
    moe_plan *p = moe_plan_alloc(DV_N, DV_EMAX, 16);
    static const struct {
        int E, k, groups, topk_groups, wide;
    } shapes[] = {{37, 2, 0, 0, 0}, {37, 8, 0, 0, 0}, {64, 8, 0, 0, 0}, {64, 8, 8, 3, 0},
                  {64, 4, 0, 0, 1}};
    static const long long cf[][2] = {{0, 0}, {1, 2}, {1, 1}, {2, 1}}; /* {0, 0}: dropless */
    int bad = 0, cases = 0;
    for (int sh = 0; sh < 5; sh++)
        for (int c = 0; c < 4; c++)
            for (int th = 1; th <= 3; th++) {
                const int E = shapes[sh].E, k = shapes[sh].k;
                const double *L = shapes[sh].wide ? L1 : L0;
                moe_route_opts o = opts();
                o.k = k, o.bias_rate = 1.0 / 64;
                o.groups = shapes[sh].groups, o.topk_groups = shapes[sh].topk_groups;
                if (cf[c][0])
                    o.cf_set = 1, o.cf_num = cf[c][0], o.cf_den = cf[c][1];
                long C = -1;
                if (cf[c][0])
                    CHECK_INT(moe_capacity(&o, k, DV_N, E, &C), MOE_OK);
                moe_par_set_threads(th);
                moe_par_set_grain(th == 3 ? 256 : 0); /* 3 threads: many small blocks */
                int rc;
                moe_router *r = make("dsv3_bias", &o, DV_N, E, &rc);
                CHECK(rc == MOE_OK, "dsv3 alloc: %s", moe_errmsg());
                for (int batch = 0; r && batch < 2; batch++) {
                    moe_route_in in;
                    memset(&in, 0, sizeof in);
                    in.n = DV_N, in.m = E, in.logits = L;
                    double b[DV_EMAX];
                    memcpy(b, moe_dsv3_bias_state(r), (size_t)E * sizeof *b);
                    CHECK_INT(moe_router_route(r, &in, p), MOE_OK);
                    dv_prev_choices(L, DV_N, E, &o, b, ex, g);
                    if (!dv_same(p, DV_N, E, k, ex, g, C)) {
                        bad++;
                        fprintf(stderr, "dsv3 E %d k %d groups %d cf case %d, %d threads, "
                                "batch %d: plan differs from the previous code\n", E, k,
                                o.groups, c, th, batch);
                    }
                    r->type->observe(r, &in, p);
                    cases++;
                }
                moe_router_free(r);
                moe_par_set_grain(0);
                moe_par_set_threads(0);
            }
    CHECK(bad == 0 && cases == 5 * 4 * 3 * 2, "dsv3_bias: %d of %d plans differ from the "
          "previous implementation", bad, cases);
    moe_plan_free(p);
}

/* ---- base against its previous implementation ---- */

enum { BR_N = 3001, BR_EMAX = 64 };

/* kind 0, 1: N(0,1) minus skew 0 or 20 times e/(E-1) (at 20 most tokens rank the experts
 * alike, so step 3 moves many tokens along long paths); 2: quarters of N(0,1) with every
 * third row a copy of an earlier one (ties within rows and across tokens); 3: all equal. */
static void base_fill(double *L, int n, int E, int kind, gsl_rng *g)
{
    for (int t = 0; t < n; t++)
        for (int e = 0; e < E; e++) {
            const double x = gsl_ran_gaussian_ziggurat(g, 1.0);
            L[(size_t)t * E + e] = kind == 3   ? 0.5
                                   : kind == 2 ? (t % 3 == 2 ? L[(size_t)(t / 7) * E + e]
                                                             : round(4.0 * x) / 4.0)
                                               : x - (kind ? 20.0 : 0.0) * e / (E - 1);
        }
}

static void test_base_prev(void)
{
    static double L[BR_N * BR_EMAX];
    gsl_rng *g = moe_rng_alloc(37, 1);
    static const int Es[] = {8, 37, 64}, ns[] = {1003, BR_N, BR_N};
    moe_route_opts o;
    moe_route_opts_default(&o);
    o.k = 1;
    int cases = 0;
    for (int ie = 0; ie < 3; ie++)
        for (int kind = 0; kind < 4; kind++) {
            const int E = Es[ie], n = ns[ie];
            base_fill(L, n, E, kind, g);
            moe_plan *ref = moe_plan_alloc(n, E, (size_t)n + 16);
            CHECK(moe_plan_reset(ref, n, E, E) == 0 && base_ref_plan(L, n, E, ref) == 0,
                  "base reference E %d n %d: out of memory", E, n);
            for (int grain = 0; grain <= 1; grain++)
                for (int th = 1; th <= 3; th += 2) {
                    moe_par_set_grain(grain);
                    moe_plan *p = route_helper("base", &o, n, E, L, NULL, NULL, th);
                    moe_par_set_grain(0);
                    int same = p->n_entries == ref->n_entries && p->capacity == ref->capacity &&
                               p->n_claims == ref->n_claims && p->aux_loss == ref->aux_loss;
                    for (size_t i = 0; same && i < p->n_entries; i++) {
                        const moe_entry *x = &p->entries[i], *y = &ref->entries[i];
                        same = x->token == y->token && x->expert == y->expert &&
                               x->slot == y->slot &&
                               !memcmp(&x->combine_w, &y->combine_w, sizeof x->combine_w) &&
                               !memcmp(&x->dispatch_w, &y->dispatch_w, sizeof x->dispatch_w);
                    }
                    same = same &&
                           !memcmp(p->assigned_load, ref->assigned_load,
                                   (size_t)E * sizeof *p->assigned_load) &&
                           !memcmp(p->importance, ref->importance,
                                   (size_t)E * sizeof *p->importance);
                    CHECK(same, "base E %d n %d logits %d, %d threads, grain %d: plan differs "
                          "from the previous implementation", E, n, kind, th, grain);
                    moe_plan_free(p);
                    cases++;
                }
            moe_plan_free(ref);
        }
    CHECK_INT(cases, 3 * 4 * 2 * 2);
    gsl_rng_free(g);
}

int main(void)
{
    test_ec_vs_heap();
    test_colselect();
    test_dsv3_prev();
    test_base_prev();
    return check_report("test_routers_prev");
}
