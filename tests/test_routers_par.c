/* test_routers_par.c: the routers' threads (routers/par.c) do not change plans. Every router
 * that runs on several threads routes the same logits with 1 and with 2 threads and must give
 * the same plan bit for bit (entries, loads, importance, aux loss, capacity) and the same
 * z-loss (also through the logsumexps the routers keep in the plan); the logits are quantised to quarters so that many scores tie and the tie rules are
 * exercised across the thread boundary. The selections that replaced full sorts are also
 * checked against the stable argsort of sim/util.c (moe_argsort_desc) run on the same values:
 * expert choice's top C tokens per expert and moe_claims_topk's k largest per row. Last, the
 * threads' round-trip probe that the benchmark records. */
#include "check.h"
#include "moe.h"
#include "../routers/claims.h"
#include "../routers/par.h"
#include "route_helper.h"

#include <gsl/gsl_randist.h>

enum { N = 6000, E = 16 };

static double L[N * E], U[N];

static moe_plan *route(const char *name, int k, int order, int threads)
{
    moe_route_opts o = route_helper_opts(k, order);
    return route_helper(name, &o, N, E, L, U, NULL, threads);
}

static void test_threads_same_plan(void)
{
    static const struct {
        const char *name;
        int k, order;
    } cases[] = {
        {"switch", 1, MOE_ORDER_CHOICE_MAJOR},  {"topk", 1, MOE_ORDER_CHOICE_MAJOR},
        {"topk", 2, MOE_ORDER_CHOICE_MAJOR},    {"topk", 8, MOE_ORDER_TOKEN_MAJOR},
        {"topk", 8, MOE_ORDER_CHOICE_MAJOR},
        {"topk", 2, MOE_ORDER_BPR},             {"topk", 2, MOE_ORDER_PROBS},
        {"gshard", 2, MOE_ORDER_CHOICE_MAJOR},  {"expert_choice", 0, MOE_ORDER_CHOICE_MAJOR},
        {"dsv3_bias", 2, MOE_ORDER_CHOICE_MAJOR}, {"sinkhorn", 1, MOE_ORDER_CHOICE_MAJOR},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        moe_plan *a = route(cases[c].name, cases[c].k, cases[c].order, 1);
        moe_plan *b = route(cases[c].name, cases[c].k, cases[c].order, 2);
        CHECK(a->n_entries > 0 && route_helper_same_plan(a, b, E), "%s k=%d order %d: 1 and 2 threads differ",
              cases[c].name, cases[c].k, cases[c].order);
        moe_plan_free(a);
        moe_plan_free(b);
    }
    double z1, z2;
    moe_par_set_threads(1);
    int rc = moe_par_sum_lse_sq(L, N, E, &z1);
    moe_par_set_threads(2);
    rc |= moe_par_sum_lse_sq(L, N, E, &z2);
    moe_par_set_threads(0);
    /* reference: the serial loop of moe_logsumexp rows, squares added in token order */
    double zr = 0.0;
    for (int t = 0; t < N; t++) {
        double l = moe_logsumexp(L + (size_t)t * E, E);
        zr += l * l;
    }
    CHECK(rc == 0 && z1 == zr && z2 == zr, "z-loss sums %.17g, %.17g, serial %.17g", z1, z2, zr);
    /* the z-loss of the metrics from the logsumexps the routers kept equals the serial one */
    static const char *kept[] = {"switch", "topk", "gshard", "expert_choice", "sinkhorn"};
    moe_metrics *mt = moe_metrics_alloc(E);
    for (size_t c = 0; c < sizeof kept / sizeof kept[0]; c++) {
        moe_plan *p = route(kept[c], 0, 0, 2);
        CHECK(p->lse_of == L, "%s did not keep the logsumexps", kept[c]);
        rc = moe_metrics_compute(p, L, 0, 0, 0, 0, mt);
        CHECK(rc == 0 && mt->z_loss == zr / N, "%s: z-loss %.17g, serial %.17g", kept[c],
              mt->z_loss, zr / N);
        moe_plan_free(p);
    }
    moe_metrics_free(mt);
}

/* topk k = 8 with capacity factor 3/4 (E = 16: C = 2250 slots against about 3000 claims an
 * expert) in both orders: tokens that keep all eight claims (their entries written eight at a
 * time) next to tokens that keep some, 1 and 2 threads the same plan. E = 8 (the logits' first
 * N * 8 values, every expert claimed by every token, the slots counted in vector registers):
 * choice_major at 15/16 (C = 5625 of 6000 claims an expert, about 5250 of them of ranks 0 to 6,
 * so a rank-7 claim is kept on some experts and not on others), token_major at 3/4 (each token
 * keeps all eight claims until the experts fill, together, at token 4500, then none). */
static void test_topk8_drops(int e)
{
    static const int orders[] = {MOE_ORDER_CHOICE_MAJOR, MOE_ORDER_TOKEN_MAJOR};
    for (size_t c = 0; c < sizeof orders / sizeof orders[0]; c++) {
        moe_route_opts o = route_helper_opts(8, orders[c]);
        const int all_or_none = e == 8 && orders[c] == MOE_ORDER_TOKEN_MAJOR;
        o.cf_num = e == 8 && !all_or_none ? 15 : 3;
        o.cf_den = e == 8 && !all_or_none ? 16 : 4;
        moe_plan *a = route_helper("topk", &o, N, e, L, U, NULL, 1);
        moe_plan *b = route_helper("topk", &o, N, e, L, U, NULL, 2);
        int per[9] = {0}; /* tokens by their entries */
        for (size_t i = 0, t0 = 0; i <= b->n_entries; i++)
            if (i == b->n_entries || b->entries[i].token != b->entries[t0].token) {
                per[i - t0]++;
                t0 = i;
            }
        CHECK(per[8] > 0 && (all_or_none ? per[8] < N
                                         : per[1] + per[2] + per[3] + per[4] + per[5] +
                                                   per[6] + per[7] > 0),
              "topk k=8 E %d order %d: %d tokens keep all eight claims, %d keep one to seven "
              "(both kinds wanted)", e, orders[c], per[8],
              per[1] + per[2] + per[3] + per[4] + per[5] + per[6] + per[7]);
        CHECK(route_helper_same_plan(a, b, e), "topk k=8 E %d cf %d/%d order %d: 1 and 2 "
              "threads differ", e, (int)o.cf_num, (int)o.cf_den, orders[c]);
        moe_plan_free(a);
        moe_plan_free(b);
    }
}

/* expert choice: expert e's entries are the first C of the stable argsort of softmax column e */
static void test_expert_choice_vs_argsort(void)
{
    moe_plan *p = route("expert_choice", 0, 0, 2);
    static double S[N * E], col[N];
    static int idx[N], tmp[N];
    for (int t = 0; t < N; t++)
        moe_softmax(L + (size_t)t * E, E, S + (size_t)t * E);
    const long C = p->capacity;
    CHECK_INT(C, (N * 5 + 4 * E - 1) / (4 * E)); /* ceil(n * 1.25 / E) */
    int bad = 0;
    for (int e = 0; e < E; e++) {
        for (int t = 0; t < N; t++)
            col[t] = S[(size_t)t * E + e];
        moe_argsort_desc(col, N, idx, tmp);
        for (long s = 0; s < C; s++) {
            const moe_entry *en = &p->entries[e * C + s];
            bad += en->token != idx[s] || en->expert != e || en->slot != s ||
                   en->combine_w != col[idx[s]];
        }
    }
    CHECK(bad == 0, "expert_choice: %d entries differ from the stable argsort", bad);
    moe_plan_free(p);
}

static void test_topk_vs_argsort(void)
{
    int idx[E], tmp[E], bad = 0;
    int32_t sel[E];
    double val[E];
    for (int k = 1; k <= E; k++)
        for (int t = 0; t < 200; t++) {
            const double *row = L + (size_t)t * E;
            moe_argsort_desc(row, E, idx, tmp);
            moe_claims_topk(row, E, k, sel, val);
            for (int j = 0; j < k; j++)
                bad += sel[j] != idx[j] || val[j] != row[idx[j]];
        }
    CHECK(bad == 0, "moe_claims_topk: %d selections differ from the stable argsort", bad);
}

/* moe_par_round_trip_ns is a measured time, so only its form is checked: NaN with one thread,
 * finite and positive with two, also when called from a part while the pool runs a job (the
 * call then gets threads of its own). */
static void rt_nested(void *ctx, int i, int np)
{
    (void)np;
    if (i == 0)
        *(double *)ctx = moe_par_round_trip_ns(100);
}

static void test_round_trip(void)
{
    moe_par_set_threads(1);
    CHECK(isnan(moe_par_round_trip_ns(100)), "one thread: round trip not NaN");
    moe_par_set_threads(2);
    for (int trips = 1; trips <= 1000; trips *= 10) {
        const double ns = moe_par_round_trip_ns(trips);
        CHECK(isfinite(ns) && ns > 0.0, "two threads, %d trips: round trip %g ns", trips, ns);
    }
    double nested = NAN;
    moe_par_run(rt_nested, &nested, 2);
    CHECK(isfinite(nested) && nested > 0.0, "from a part: round trip %g ns", nested);
    moe_par_set_threads(0);
}

int main(void)
{
    gsl_rng *g = moe_rng_alloc(11, 1);
    for (int i = 0; i < N * E; i++) /* quarters in [-2, 2]: many exact ties */
        L[i] = (double)(int)(gsl_ran_gaussian_ziggurat(g, 1.0) * 4.0) / 4.0;
    for (int i = 0; i < N; i++)
        U[i] = gsl_rng_uniform(g);
    gsl_rng_free(g);
    test_threads_same_plan();
    test_topk8_drops(E);
    test_topk8_drops(8);
    test_expert_choice_vs_argsort();
    test_topk_vs_argsort();
    test_round_trip();
    printf("test_routers_par: %d passed, %d failed\n", check_pass, check_fail);
    return check_fail != 0;
}
