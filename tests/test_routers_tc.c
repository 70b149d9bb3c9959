/* test_routers_tc.c: the token-choice routers topk, switch, gshard and hash against small cases
 * worked by hand (docs/routing.md sections 2 and 3), used through the public interface
 * (moe_router_alloc / moe_router_route / moe_plan_alloc). Each case states its logits, the
 * choices, the claim order and the resulting entries (token, expert, slot, combine weight),
 * assigned_load, importance, n_claims, capacity and aux_loss, with the tie rules pinned:
 * per-token choices compare logits with ties to the lower expert; bpr, probs and gate ties go
 * to the lower token; balanced hashing ties go to the lower id and the lower bucket.
 *
 * Notation in the comments: sig(d) = 1/(1+exp(-d)), so the softmax of two logits a > b is
 * (sig(a-b), sig(b-a)). Probabilities p are full softmaxes, computed here by ref_softmax (a
 * naive exp/sum written independently of the library), hence the tolerance 1e-12. */
#include "check.h"
#include "moe.h"

#include <gsl/gsl_randist.h>
#include <string.h>

/* ---- helpers ---- */

typedef struct {
    int t, e, s;
    double cw;
} want_entry;

static double sig(double d) { return 1.0 / (1.0 + exp(-d)); }

static void ref_softmax(const double *x, int len, double *p)
{
    double s = 0.0;
    for (int i = 0; i < len; i++)
        s += exp(x[i]);
    for (int i = 0; i < len; i++)
        p[i] = exp(x[i]) / s;
}

/* P (E) = mean over the n rows of L (T,E) of the full softmax. */
static void ref_pmean(const double *L, int n, int E, double *P)
{
    double p[16];
    for (int e = 0; e < E; e++)
        P[e] = 0.0;
    for (int t = 0; t < n; t++) {
        ref_softmax(L + (size_t)t * E, E, p);
        for (int e = 0; e < E; e++)
            P[e] += p[e] / n;
    }
}

static moe_route_opts opts_cf(long long num, long long den)
{
    moe_route_opts o;
    moe_route_opts_default(&o);
    o.cf_set = 1;
    o.cf_num = num;
    o.cf_den = den;
    return o;
}

/* Route one group with the named router; returns the plan or NULL (rc in *rc). */
static moe_plan *route_rng(const char *name, const moe_route_opts *o, int n, int m,
                           const double *L, const int64_t *ids, const double *u, gsl_rng *rng,
                           int *rc)
{
    const moe_router_type *t = moe_router_find(name);
    moe_router *r = NULL;
    moe_plan *p = NULL;
    moe_clear_error();
    int st = t ? moe_router_alloc(t, o, n, m, &r) : MOE_EINVAL;
    if (!st) {
        p = moe_plan_alloc(n, m, (size_t)n * (size_t)m);
        st = p ? MOE_OK : MOE_ENOMEM;
    }
    if (!st) {
        moe_route_in in = {0};
        in.n = n;
        in.m = m;
        in.logits = L;
        in.ids = ids;
        in.uniforms = u;
        in.rng = rng;
        st = moe_router_route(r, &in, p);
    }
    moe_router_free(r);
    if (st) {
        moe_plan_free(p);
        p = NULL;
    }
    if (rc)
        *rc = st;
    return p;
}

static moe_plan *route(const char *name, const moe_route_opts *o, int n, int m, const double *L,
                       const int64_t *ids, const double *u)
{
    int rc;
    moe_plan *p = route_rng(name, o, n, m, L, ids, u, NULL, &rc);
    CHECK(p != NULL, "%s: routing failed: %s", name, moe_errmsg());
    return p;
}

/* Entries in the plan's order against the expected list; dispatch weights must all be 1. */
static void check_entries(const char *what, const moe_plan *p, const want_entry *w, size_t nw)
{
    if (!p) {
        CHECK(0, "%s: no plan", what);
        return;
    }
    CHECK(p->n_entries == nw, "%s: %zu entries, expected %zu", what, p->n_entries, nw);
    int bad = 0;
    for (size_t i = 0; i < nw && i < p->n_entries; i++) {
        const moe_entry *en = &p->entries[i];
        if (en->token != w[i].t || en->expert != w[i].e || en->slot != w[i].s ||
            en->dispatch_w != 1.0 || !(fabs(en->combine_w - w[i].cw) <= 1e-12)) {
            if (bad++ < 4)
                fprintf(stderr,
                        "  %s entry %zu: (%d,%d,%d,%g,%.17g), expected (%d,%d,%d,1,%.17g)\n",
                        what, i, en->token, en->expert, en->slot, en->dispatch_w, en->combine_w,
                        w[i].t, w[i].e, w[i].s, w[i].cw);
        }
    }
    CHECK(bad == 0, "%s: %d entries differ", what, bad);
}

/* capacity, n_claims, assigned_load (E) and importance (E). */
static void check_stats(const char *what, const moe_plan *p, long C, long claims,
                        const long *load, const double *imp)
{
    if (!p) {
        CHECK(0, "%s: no plan", what);
        return;
    }
    CHECK(p->capacity == C, "%s: capacity %ld, expected %ld", what, p->capacity, C);
    CHECK(p->n_claims == claims, "%s: n_claims %ld, expected %ld", what, p->n_claims, claims);
    int bad = 0;
    for (int e = 0; e < p->E; e++)
        bad += p->assigned_load[e] != load[e];
    CHECK(bad == 0, "%s: assigned_load differs on %d experts", what, bad);
    check_close_arrays(what, p->importance, imp, (size_t)p->E, 1e-12, 0.0);
}

static int same_plan(const moe_plan *a, const moe_plan *b)
{
    if (!a || !b || a->n_entries != b->n_entries || a->capacity != b->capacity)
        return 0;
    for (size_t i = 0; i < a->n_entries; i++) {
        const moe_entry *x = &a->entries[i], *y = &b->entries[i];
        if (x->token != y->token || x->expert != y->expert || x->slot != y->slot ||
            x->dispatch_w != y->dispatch_w || x->combine_w != y->combine_w)
            return 0;
    }
    return 1;
}

/* ---- topk: the four claim orders on one input ----
 *
 * n = 4, E = 3, k = 2, cf = 0.75: C = ceil(2*4*0.75/3) = ceil(6/3) = 2 (exact).
 *   t0 [1.7, 0.9, -0.4]  choices e0, e1   gates sig(0.8),  sig(-0.8)
 *   t1 [0.3, 2.6,  0.8]  choices e1, e2   gates sig(1.8),  sig(-1.8)
 *   t2 [1.1,-0.6,  1.1]  tie e0 = e2: lower expert first: e0, e2, gates 0.5, 0.5
 *   t3 [2.9, 0.2,  0.1]  choices e0, e1   gates sig(2.7),  sig(-2.7)
 * claims: e0 {t0,t2,t3}, e1 {t0,t1,t3}, e2 {t1,t2}: assigned_load (3,3,2), n_claims 8,
 * importance e0 sig(.8)+.5+sig(2.7), e1 sig(-.8)+sig(1.8)+sig(-2.7), e2 sig(-1.8)+.5.
 * Full softmax (exp values: e^1.7=5.474 e^.9=2.460 e^-.4=.670; e^.3=1.350 e^2.6=13.464
 * e^.8=2.226; e^1.1=3.004 e^-.6=.549; e^2.9=18.174 e^.2=1.221 e^.1=1.105):
 *   p[t0] = (.636, .286, .078)  p[t1] = (.079, .790, .131)  p[t2] = (.458, .084, .458)
 *   p[t3] = (.887, .060, .054)
 * choice_major: firsts t0->e0 s0, t1->e1 s0, t2->e0 s1, t3->e0 full (drop);
 *               seconds t0->e1 s1, t1->e2 s0, t2->e2 s1, t3->e1 full (drop).
 * token_major:  t0: e0 s0, e1 s0; t1: e1 s1, e2 s0; t2: e0 s1, e2 s1; t3: both full.
 * bpr: max p: t3 .887 > t1 .790 > t0 .636 > t2 .458, so visit t3, t1, t0, t2:
 *               firsts t3->e0 s0, t1->e1 s0, t0->e0 s1, t2->e0 full;
 *               seconds t3->e1 s1, t1->e2 s0, t0->e1 full, t2->e2 s1.
 * probs: e0 keeps the two highest p[.,0] of {t0 .636, t2 .458, t3 .887}: t0, t3 (slots in
 *        token order t0 s0, t3 s1); e1 keeps {t0 .286, t1 .790, t3 .060} -> t0 s0, t1 s1;
 *        e2 keeps both t1 s0, t2 s1.
 * aux = E/(k*n) * sum_e assigned_e * P_e = 3/8 * (3 P0 + 3 P1 + 2 P2). */

static const double L4x3[12] = {1.7, 0.9, -0.4, 0.3, 2.6, 0.8, 1.1, -0.6, 1.1, 2.9, 0.2, 0.1};

static void test_topk_orders(void)
{
    const double a = sig(0.8), b = sig(1.8), c = sig(2.7);
    const long load[3] = {3, 3, 2};
    const double imp[3] = {a + 0.5 + c, (1 - a) + b + (1 - c), (1 - b) + 0.5};
    double P[3];
    ref_pmean(L4x3, 4, 3, P);
    const double aux = 3.0 / 8.0 * (3 * P[0] + 3 * P[1] + 2 * P[2]);

    static const int orders[4] = {MOE_ORDER_CHOICE_MAJOR, MOE_ORDER_TOKEN_MAJOR, MOE_ORDER_BPR,
                                  MOE_ORDER_PROBS};
    static const char *names[4] = {"topk choice_major", "topk token_major", "topk bpr",
                                   "topk probs"};
    const want_entry want[4][6] = {
        {{0, 0, 0, a}, {0, 1, 1, 1 - a}, {1, 1, 0, b}, {1, 2, 0, 1 - b}, {2, 0, 1, .5},
         {2, 2, 1, .5}},
        {{0, 0, 0, a}, {0, 1, 0, 1 - a}, {1, 1, 1, b}, {1, 2, 0, 1 - b}, {2, 0, 1, .5},
         {2, 2, 1, .5}},
        {{0, 0, 1, a}, {1, 1, 0, b}, {1, 2, 0, 1 - b}, {2, 2, 1, .5}, {3, 0, 0, c},
         {3, 1, 1, 1 - c}},
        {{0, 0, 0, a}, {0, 1, 0, 1 - a}, {1, 1, 1, b}, {1, 2, 0, 1 - b}, {2, 2, 1, .5},
         {3, 0, 1, c}},
    };
    moe_plan *plans[4];
    for (int i = 0; i < 4; i++) {
        moe_route_opts o = opts_cf(3, 4);
        o.order = orders[i];
        plans[i] = route("topk", &o, 4, 3, L4x3, NULL, NULL);
        check_entries(names[i], plans[i], want[i], 6);
        check_stats(names[i], plans[i], 2, 8, load, imp);
        if (plans[i]) {
            CHECK_INT(plans[i]->k, 2);
            CHECK_NEAR(plans[i]->aux_loss, aux, 1e-12);
        }
    }
    int differ = 0;
    for (int i = 0; i < 4; i++)
        for (int j = i + 1; j < 4; j++)
            differ += !same_plan(plans[i], plans[j]);
    CHECK(differ == 6, "the four orders give %d of 6 differing pairs", differ);
    for (int i = 0; i < 4; i++)
        moe_plan_free(plans[i]);

    /* renormalize with bpr: t0 keeps only e0 and t2 only e2, so their weights become 1; t1 and
     * t3 keep both choices and their gates already sum to 1. */
    moe_route_opts o = opts_cf(3, 4);
    o.order = MOE_ORDER_BPR;
    o.renormalize = 1;
    const want_entry wr[6] = {{0, 0, 1, 1.0}, {1, 1, 0, b}, {1, 2, 0, 1 - b}, {2, 2, 1, 1.0},
                              {3, 0, 0, c},   {3, 1, 1, 1 - c}};
    moe_plan *p = route("topk", &o, 4, 3, L4x3, NULL, NULL);
    check_entries("topk bpr renormalize", p, wr, 6);
    check_stats("topk bpr renormalize", p, 2, 8, load, imp); /* importance: before drops */
    moe_plan_free(p);

    /* dropless: C = the largest claimed load = 3, nothing dropped; choice_major slots:
     * firsts t0->e0 s0, t1->e1 s0, t2->e0 s1, t3->e0 s2; seconds t0->e1 s1, t1->e2 s0,
     * t2->e2 s1, t3->e1 s2. */
    o = opts_cf(3, 4);
    o.dropless = 1;
    const want_entry wd[8] = {{0, 0, 0, a}, {0, 1, 1, 1 - a}, {1, 1, 0, b}, {1, 2, 0, 1 - b},
                              {2, 0, 1, .5}, {2, 2, 1, .5}, {3, 0, 2, c}, {3, 1, 2, 1 - c}};
    p = route("topk", &o, 4, 3, L4x3, NULL, NULL);
    check_entries("topk dropless", p, wd, 8);
    check_stats("topk dropless", p, 3, 8, load, imp);
    moe_plan_free(p);

    /* cf = 1 uses k = 2: C = ceil(2*4/3) = 3 (not ceil(4/3) = 2): all 8 claims kept. */
    o = opts_cf(1, 1);
    p = route("topk", &o, 4, 3, L4x3, NULL, NULL);
    check_entries("topk cf=1", p, wd, 8);
    moe_plan_free(p);

    /* cf = 0: C = 0, everything dropped; claims and importance are still counted. */
    o = opts_cf(0, 1);
    p = route("topk", &o, 4, 3, L4x3, NULL, NULL);
    check_entries("topk cf=0", p, NULL, 0);
    check_stats("topk cf=0", p, 0, 8, load, imp);
    if (p)
        CHECK_NEAR(p->aux_loss, aux, 1e-12);
    moe_plan_free(p);

    /* explicit capacity 0 overrides the default cf */
    moe_route_opts_default(&o);
    o.capacity = 0;
    p = route("topk", &o, 4, 3, L4x3, NULL, NULL);
    check_entries("topk capacity=0", p, NULL, 0);
    moe_plan_free(p);

    /* explicit capacity 1 overrides cf = 2 (which would give C = ceil(16/3) = 6);
     * choice_major: firsts t0->e0 s0, t1->e1 s0, t2->e0 full, t3->e0 full;
     * seconds t0->e1 full, t1->e2 s0, t2->e2 full, t3->e1 full. */
    o = opts_cf(2, 1);
    o.capacity = 1;
    const want_entry w1[3] = {{0, 0, 0, a}, {1, 1, 0, b}, {1, 2, 0, 1 - b}};
    p = route("topk", &o, 4, 3, L4x3, NULL, NULL);
    check_entries("topk capacity=1", p, w1, 3);
    check_stats("topk capacity=1", p, 1, 8, load, imp);
    moe_plan_free(p);
}

/* ---- topk: k = E on one token ----
 * t0 [0.25, -1.5, 0.25], k = 3 = E: choices e0, e2 (tie to the lower expert), e1; the gate is
 * the softmax of all three logits, i.e. the full p. cf = 1: C = ceil(3*1/3) = 1.
 * aux = 3/(3*1) * (p0 + p1 + p2) = 1 (every expert has load 1). */
/* Orders gate and probs, topk k 2, C 1 (explicit capacity). Logits t0 (3, 2.9, -9), t1 (1, 0,
 * 0.5): t0 chooses e0, e1 with gates sig(0.1), sig(-0.1); t1 chooses e0, e2 with gates sig(0.5),
 * sig(-0.5). Expert 0 is claimed by both: by gate t1 wins (sig(0.5) = .622 > sig(0.1) = .525,
 * Megatron's drop_policy 'probs'); by the full softmax t0 wins (p = .525 > .506). Experts 1 and 2
 * have one claim each. */
static void test_topk_order_gate(void)
{
    const double L[6] = {3, 2.9, -9, 1, 0, 0.5};
    const want_entry wg[3] = {{0, 1, 0, sig(-0.1)}, {1, 0, 0, sig(0.5)}, {1, 2, 0, sig(-0.5)}};
    const want_entry wp[3] = {{0, 0, 0, sig(0.1)}, {0, 1, 0, sig(-0.1)}, {1, 2, 0, sig(-0.5)}};
    double p0[3], p1[3];
    ref_softmax(L, 3, p0);
    ref_softmax(L + 3, 3, p1);
    CHECK(p0[0] > p1[0] + 0.01, "hand-worked premise: p[t0,e0] %g > p[t1,e0] %g", p0[0], p1[0]);
    /* dropless: every claim kept, slots in token order, as probs */
    const want_entry wd[4] = {{0, 0, 0, sig(0.1)}, {0, 1, 0, sig(-0.1)}, {1, 0, 1, sig(0.5)},
                              {1, 2, 0, sig(-0.5)}};
    const struct {
        const char *what;
        int order, dropless;
        const want_entry *want;
        size_t nw;
    } cases[3] = {{"topk gate", MOE_ORDER_GATE, 0, wg, 3},
                  {"topk probs (other claims)", MOE_ORDER_PROBS, 0, wp, 3},
                  {"topk gate dropless", MOE_ORDER_GATE, 1, wd, 4}};
    for (int i = 0; i < 3; i++) {
        moe_route_opts o;
        moe_route_opts_default(&o);
        o.capacity = cases[i].dropless ? -1 : 1;
        o.dropless = cases[i].dropless;
        o.order = cases[i].order;
        moe_plan *p = route("topk", &o, 2, 3, L, NULL, NULL);
        check_entries(cases[i].what, p, cases[i].want, cases[i].nw);
        moe_plan_free(p);
    }
}

static void test_topk_k_equals_E(void)
{
    const double L[3] = {0.25, -1.5, 0.25};
    double p[3];
    ref_softmax(L, 3, p);
    moe_route_opts o = opts_cf(1, 1);
    o.k = 3;
    const want_entry w[3] = {{0, 0, 0, p[0]}, {0, 2, 0, p[2]}, {0, 1, 0, p[1]}};
    const long load[3] = {1, 1, 1};
    moe_plan *pl = route("topk", &o, 1, 3, L, NULL, NULL);
    check_entries("topk k=E", pl, w, 3);
    check_stats("topk k=E", pl, 1, 3, load, p);
    if (pl)
        CHECK_NEAR(pl->aux_loss, 1.0, 1e-12);
    moe_plan_free(pl);
}

/* ---- topk: gate noise ----
 * noise_std = 0.7 adds 0.7 * gsl_ran_gaussian_ziggurat(rng, 1) to every logit, token by token
 * and expert by expert, before selection; the gate is the softmax of the selected noisy logits.
 * So routing L with noise equals routing the noisy logits Z (drawn here from a fresh generator
 * with the same seed) without noise, entry for entry; aux_loss uses the assigned loads of the
 * noisy choice but p of the clean logits. Same seed: same plan. */
static void test_topk_noise(void)
{
    enum { N = 12, E = 5 };
    double L[N * E], Z[N * E];
    for (int i = 0; i < N * E; i++)
        L[i] = 0.37 * ((i * 7) % 11) - 1.3 + 0.05 * (i % 3);
    gsl_rng *ref = moe_rng_alloc(11, MOE_STREAM_NOISE);
    for (int i = 0; i < N * E; i++)
        Z[i] = L[i] + 0.7 * gsl_ran_gaussian_ziggurat(ref, 1.0);
    gsl_rng_free(ref);

    moe_route_opts o;
    moe_route_opts_default(&o);
    o.dropless = 1;
    moe_plan *clean = route("topk", &o, N, E, L, NULL, NULL);
    moe_plan *want = route("topk", &o, N, E, Z, NULL, NULL);
    o.noise_std = 0.7;
    int rc;
    gsl_rng *g1 = moe_rng_alloc(11, MOE_STREAM_NOISE), *g2 = moe_rng_alloc(11, MOE_STREAM_NOISE);
    moe_plan *n1 = route_rng("topk", &o, N, E, L, NULL, NULL, g1, &rc);
    moe_plan *n2 = route_rng("topk", &o, N, E, L, NULL, NULL, g2, &rc);
    CHECK(n1 && n2, "noisy topk failed: %s", moe_errmsg());
    CHECK(same_plan(n1, n2), "noisy topk is not reproducible for the same seed");
    CHECK(same_plan(n1, want), "noisy topk differs from topk on the noisy logits");
    CHECK(!same_plan(n1, clean), "noise_std 0.7 left the plan unchanged");
    if (n1) {
        /* aux = E/(k*N) * sum_e assigned_e * P_e, P from the clean logits */
        double P[E], s = 0.0;
        ref_pmean(L, N, E, P);
        for (int e = 0; e < E; e++)
            s += (double)n1->assigned_load[e] * P[e];
        CHECK_NEAR(n1->aux_loss, (double)E / (2.0 * N) * s, 1e-12);
    }
    moe_plan_free(clean);
    moe_plan_free(want);
    moe_plan_free(n1);
    moe_plan_free(n2);
    gsl_rng_free(g1);
    gsl_rng_free(g2);
}

/* ---- switch ----
 * n = 5, E = 2, k = 1:
 *   t0 [0.3, -0.2] -> e0, gate p = sig(0.5)     t1 [-0.1, 0.4] -> e1, gate sig(0.5)
 *   t2 [0.7,  0.2] -> e0, gate sig(0.5)         t3 [0.25, 0.5] -> e1, gate sig(0.25)
 *   t4 [0.9, -0.3] -> e0, gate sig(1.2)
 * assigned_load (3, 2), importance e0 2 sig(.5) + sig(1.2), e1 sig(.5) + sig(.25).
 * Capacity k*n*cf/E = 5/2 = 2.5: ceil 3 (all kept), floor 2 and round-half-even 2 (t4, the
 * third claim on e0, is dropped); floor with min_capacity 3 gives 3.
 * aux = E * sum_e f_e P_e = 2 * (3/5 P0 + 2/5 P1). */
static void test_switch(void)
{
    const double L[10] = {0.3, -0.2, -0.1, 0.4, 0.7, 0.2, 0.25, 0.5, 0.9, -0.3};
    const double h = sig(0.5), q = sig(0.25), f = sig(1.2);
    const long load[2] = {3, 2};
    const double imp[2] = {2 * h + f, h + q};
    double P[2];
    ref_pmean(L, 5, 2, P);
    const double aux = 2.0 * (0.6 * P[0] + 0.4 * P[1]);
    const want_entry all[5] = {{0, 0, 0, h}, {1, 1, 0, h}, {2, 0, 1, h}, {3, 1, 1, q},
                               {4, 0, 2, f}};

    moe_route_opts o = opts_cf(1, 1);
    moe_plan *p = route("switch", &o, 5, 2, L, NULL, NULL);
    check_entries("switch ceil", p, all, 5);
    check_stats("switch ceil", p, 3, 5, load, imp);
    if (p) {
        CHECK_NEAR(p->aux_loss, aux, 1e-12);
        CHECK_INT(p->k, 1);
    }
    moe_plan_free(p);

    o.rounding = MOE_ROUND_FLOOR;
    p = route("switch", &o, 5, 2, L, NULL, NULL);
    check_entries("switch floor", p, all, 4);
    check_stats("switch floor", p, 2, 5, load, imp);
    moe_plan_free(p);

    o.rounding = MOE_ROUND_HALF_EVEN;
    p = route("switch", &o, 5, 2, L, NULL, NULL);
    check_entries("switch round 2.5", p, all, 4);
    check_stats("switch round 2.5", p, 2, 5, load, imp);
    moe_plan_free(p);

    o.rounding = MOE_ROUND_FLOOR;
    o.min_capacity = 3;
    p = route("switch", &o, 5, 2, L, NULL, NULL);
    check_entries("switch floor min_capacity 3", p, all, 5);
    check_stats("switch floor min_capacity 3", p, 3, 5, load, imp);
    moe_plan_free(p);

    /* dropless with cf = 0 still keeps everything: C = max load = 3 */
    o = opts_cf(0, 1);
    o.dropless = 1;
    p = route("switch", &o, 5, 2, L, NULL, NULL);
    check_entries("switch dropless", p, all, 5);
    check_stats("switch dropless", p, 3, 5, load, imp);
    moe_plan_free(p);

    /* n = 7 (t5 [0.1, 0.6], t6 [1.0, 0.0] appended): 7/2 = 3.5 rounds half to even: 4 */
    const double L7[14] = {0.3, -0.2, -0.1, 0.4, 0.7, 0.2, 0.25, 0.5, 0.9, -0.3, 0.1, 0.6,
                           1.0, 0.0};
    o = opts_cf(1, 1);
    o.rounding = MOE_ROUND_HALF_EVEN;
    p = route("switch", &o, 7, 2, L7, NULL, NULL);
    if (p)
        CHECK_INT(p->capacity, 4);
    moe_plan_free(p);

    /* one token, E = 4: t0 [0.1, 0.7, 0.7, -2] -> e1 (tie to the lower expert), gate p1;
     * C = ceil(1/4) = 1; aux = 4 * 1 * p1. */
    const double L1[4] = {0.1, 0.7, 0.7, -2.0};
    double p1[4];
    ref_softmax(L1, 4, p1);
    const want_entry w1[1] = {{0, 1, 0, p1[1]}};
    const long load1[4] = {0, 1, 0, 0};
    const double imp1[4] = {0, p1[1], 0, 0};
    o = opts_cf(1, 1);
    p = route("switch", &o, 1, 4, L1, NULL, NULL);
    check_entries("switch one token", p, w1, 1);
    check_stats("switch one token", p, 1, 1, load1, imp1);
    if (p)
        CHECK_NEAR(p->aux_loss, 4.0 * p1[1], 1e-12);
    moe_plan_free(p);
}

/* cf = 1.1 with n = 100, E = 10, k = 1: C = ceil(100*11/(10*10)) = 11 exactly (a double
 * 100*1.1/10 = 11.000000000000002 would ceil to 12). All tokens [0.5, 0, ..., 0] choose e0,
 * so tokens 0..10 take slots 0..10 and 89 are dropped. */
static void test_capacity_exact(void)
{
    enum { N = 100, E = 10 };
    moe_route_opts o = opts_cf(11, 10);
    long C = -1;
    CHECK(moe_capacity(&o, 1, N, E, &C) == MOE_OK && C == 11, "moe_capacity cf 1.1: %ld", C);
    static double L[N * E];
    for (int t = 0; t < N; t++)
        L[t * E] = 0.5;
    want_entry w[11];
    const double g = exp(0.5) / (exp(0.5) + 9.0);
    for (int t = 0; t < 11; t++)
        w[t] = (want_entry){t, 0, t, g};
    long load[E] = {N};
    double imp[E] = {N * g};
    moe_plan *p = route("switch", &o, N, E, L, NULL, NULL);
    check_entries("switch cf 1.1", p, w, 11);
    check_stats("switch cf 1.1", p, 11, N, load, imp);
    moe_plan_free(p);
}

/* ---- switch: bpr and probs ties ----
 * E = 2, capacity 1 (explicit):
 *   t0 [0.2, 0.9] -> e1, p = sig(0.7)     t1 [1.4, 0.1] -> e0, p = sig(1.3)
 *   t2 [0.2, 0.9] -> e1, p = sig(0.7) (the same row as t0: an exact tie)
 * choice_major: t0 e1 s0, t1 e0 s0, t2 dropped. bpr visits t1 (.786), then t0 and t2 tied at
 * .668: lower token first, so t0 keeps e1. probs: e1 holds t0 and t2 with equal p: lower
 * token kept. All three orders give the choice_major plan; the opposite tie rule would keep t2.
 * With t2 [0.1, 0.9] (p = sig(0.8) = .690 > .668) bpr visits t1, t2, t0 and probs prefers t2:
 * t2 keeps e1 slot 0, t0 is dropped; choice_major still keeps t0. */
static void test_switch_ties(void)
{
    double L[6] = {0.2, 0.9, 1.4, 0.1, 0.2, 0.9};
    const double a = sig(0.7), b = sig(1.3), c = sig(0.8);
    const want_entry tie[2] = {{0, 1, 0, a}, {1, 0, 0, b}};
    const want_entry pref2[2] = {{1, 0, 0, b}, {2, 1, 0, c}};
    const int orders[3] = {MOE_ORDER_CHOICE_MAJOR, MOE_ORDER_BPR, MOE_ORDER_PROBS};
    const char *names[3] = {"switch tie choice_major", "switch tie bpr", "switch tie probs"};
    const char *names2[3] = {"switch choice_major", "switch bpr", "switch probs"};
    for (int i = 0; i < 3; i++) {
        moe_route_opts o;
        moe_route_opts_default(&o);
        o.capacity = 1;
        o.order = orders[i];
        L[4] = 0.2;
        moe_plan *p = route("switch", &o, 3, 2, L, NULL, NULL);
        check_entries(names[i], p, tie, 2);
        moe_plan_free(p);
        L[4] = 0.1;
        p = route("switch", &o, 3, 2, L, NULL, NULL);
        const want_entry cm[2] = {{0, 1, 0, a}, {1, 0, 0, b}};
        check_entries(names2[i], p, i == 0 ? cm : pref2, 2);
        moe_plan_free(p);
    }
}

/* ---- gshard ----
 * n = 3, E = 4, uniforms u = (0.6, 0.2, 0.75):
 *   t0 [0.4, 1.9, 1.2, -0.7]: e1, e2; g = sig(0.7), sig(-0.7) = .668, .332;
 *      p2 = e^1.2 / (e^.4 + e^1.9 + e^1.2 + e^-.7) = 3.320/11.994 = .277.
 *      normalized: 2 g2 = .664 > .6 dispatched; raw: 2 p2 = .554 < .6 not dispatched.
 *   t1 [2.2, 0.5, 0.5, 0.1]: e0, then e1 (tie with e2: lower expert); g = sig(1.7), sig(-1.7)
 *      = .845, .155; p2 = e^.5/(e^2.2 + 2 e^.5 + e^.1) = 1.649/13.428 = .123.
 *      normalized: 2 g2 = .309 > .2; raw: 2 p2 = .246 > .2: dispatched either way.
 *   t2 [-0.3, -0.3, 0.6, 0.6]: e2, e3 (tie: lower first); g = .5, .5;
 *      p2 = e^.6/(2 e^-.3 + 2 e^.6) = 1.822/5.126 = .355.
 *      normalized: 2 g2 = 1 > .75; raw: 2 p2 = .711 < .75 not dispatched.
 * cf = 1, k = 2: C = ceil(2*3/4) = 2. First choices e1, e0, e2: c = (1/3, 1/3, 1/3, 0) and
 * aux = 4 * (P0 + P1 + P2) / 3 whatever the draws.
 * normalized, choice_major: firsts t0->e1 s0, t1->e0 s0, t2->e2 s0; seconds t0->e2 s1,
 *   t1->e1 s1, t2->e3 s0. load (1,2,2,1), 6 claims.
 * raw: seconds of t0 and t2 make no claim: t0->e1 s0, t1->e0 s0, t2->e2 s0, t1->e1 s1;
 *   load (1,2,1,0), importance (sig(1.7), sig(.7)+sig(-1.7), .5, 0), 4 claims; with
 *   renormalize t0's and t2's single entries get weight 1.
 * capacity 1, normalized: t0's second (e2, taken by t2) and t1's second (e1, taken by t0) are
 *   dropped; load still (1,2,2,1); renormalize gives t0 and t1 weight 1. */
static void test_gshard(void)
{
    const double L[12] = {0.4, 1.9, 1.2, -0.7, 2.2, 0.5, 0.5, 0.1, -0.3, -0.3, 0.6, 0.6};
    const double u[3] = {0.6, 0.2, 0.75};
    const double a = sig(0.7), b = sig(1.7);
    double P[4];
    ref_pmean(L, 3, 4, P);
    const double aux = 4.0 * (P[0] + P[1] + P[2]) / 3.0;

    moe_route_opts o = opts_cf(1, 1);
    const want_entry wn[6] = {{0, 1, 0, a}, {0, 2, 1, 1 - a}, {1, 0, 0, b}, {1, 1, 1, 1 - b},
                              {2, 2, 0, .5}, {2, 3, 0, .5}};
    const long ln[4] = {1, 2, 2, 1};
    const double in_[4] = {b, a + (1 - b), (1 - a) + .5, .5};
    moe_plan *p = route("gshard", &o, 3, 4, L, NULL, u);
    check_entries("gshard normalized", p, wn, 6);
    check_stats("gshard normalized", p, 2, 6, ln, in_);
    if (p) {
        CHECK_NEAR(p->aux_loss, aux, 1e-12);
        CHECK_INT(p->k, 2);
    }
    moe_plan_free(p);

    o.threshold_on = MOE_THRESH_RAW;
    const want_entry wr[4] = {{0, 1, 0, a}, {1, 0, 0, b}, {1, 1, 1, 1 - b}, {2, 2, 0, .5}};
    const long lr[4] = {1, 2, 1, 0};
    const double ir[4] = {b, a + (1 - b), .5, 0};
    p = route("gshard", &o, 3, 4, L, NULL, u);
    check_entries("gshard raw", p, wr, 4);
    check_stats("gshard raw", p, 2, 4, lr, ir);
    if (p)
        CHECK_NEAR(p->aux_loss, aux, 1e-12);
    moe_plan_free(p);

    o.renormalize = 1;
    const want_entry wrr[4] = {{0, 1, 0, 1.0}, {1, 0, 0, b}, {1, 1, 1, 1 - b}, {2, 2, 0, 1.0}};
    p = route("gshard", &o, 3, 4, L, NULL, u);
    check_entries("gshard raw renormalize", p, wrr, 4);
    check_stats("gshard raw renormalize", p, 2, 4, lr, ir);
    moe_plan_free(p);

    moe_route_opts_default(&o);
    o.capacity = 1;
    const want_entry wc[4] = {{0, 1, 0, a}, {1, 0, 0, b}, {2, 2, 0, .5}, {2, 3, 0, .5}};
    p = route("gshard", &o, 3, 4, L, NULL, u);
    check_entries("gshard capacity 1", p, wc, 4);
    check_stats("gshard capacity 1", p, 1, 6, ln, in_);
    moe_plan_free(p);
    o.renormalize = 1;
    const want_entry wcr[4] = {{0, 1, 0, 1.0}, {1, 0, 0, 1.0}, {2, 2, 0, .5}, {2, 3, 0, .5}};
    p = route("gshard", &o, 3, 4, L, NULL, u);
    check_entries("gshard capacity 1 renormalize", p, wcr, 4);
    moe_plan_free(p);

    /* strict >: all-zero logits on E = 4 give p = 1/4 exactly (e0, e1 by the tie rule),
     * g = 1/2. raw: 2 p2 = 0.5; u = 0.5 does not dispatch, u = 0.49 does. normalized:
     * 2 g2 = 1 > 0.5 dispatches. */
    const double Z[4] = {0, 0, 0, 0};
    const double uh[1] = {0.5}, ul[1] = {0.49};
    const want_entry one[1] = {{0, 0, 0, .5}}, two[2] = {{0, 0, 0, .5}, {0, 1, 0, .5}};
    moe_route_opts_default(&o);
    o.threshold_on = MOE_THRESH_RAW;
    p = route("gshard", &o, 1, 4, Z, NULL, uh);
    check_entries("gshard raw 2p2 = u", p, one, 1);
    moe_plan_free(p);
    p = route("gshard", &o, 1, 4, Z, NULL, ul);
    check_entries("gshard raw 2p2 > u", p, two, 2);
    moe_plan_free(p);
    o.threshold_on = MOE_THRESH_NORMALIZED;
    p = route("gshard", &o, 1, 4, Z, NULL, uh);
    check_entries("gshard normalized 2g2 > u", p, two, 2);
    moe_plan_free(p);
}

/* gshard drawing from the generator: one gsl_rng_uniform per token in token order, for every
 * token, even one whose outcome does not depend on u (t2 below). Routing with the generator
 * equals routing with the same draws given as uniforms; the
 * generator is then exactly n draws further on; the number of second choices dispatched is
 * the number of tokens with 2 g2 > u (g2 = sig(l2 - l1) from the two largest logits). */
static void test_gshard_rng(void)
{
    enum { N = 8, E = 3 };
    double L[N * E], u[N];
    for (int i = 0; i < N * E; i++)
        L[i] = 0.8 * ((i * 5) % 7) - 2.0;
    /* t2 ties its two largest logits: g2 = 0.5 dispatches whatever u is, but u is still drawn */
    L[2 * E] = L[2 * E + 1] = 0.4;
    L[2 * E + 2] = -0.2;
    gsl_rng *ref = moe_rng_alloc(5, MOE_STREAM_GSHARD), *g = moe_rng_alloc(5, MOE_STREAM_GSHARD);
    for (int t = 0; t < N; t++)
        u[t] = gsl_rng_uniform(ref);
    int second = 0;
    for (int t = 0; t < N; t++) {
        double l[3] = {L[t * E], L[t * E + 1], L[t * E + 2]}, s1 = -1e300, s2 = -1e300;
        for (int e = 0; e < E; e++) {
            if (l[e] > s1) {
                s2 = s1;
                s1 = l[e];
            } else if (l[e] > s2) {
                s2 = l[e];
            }
        }
        second += 2.0 * sig(s2 - s1) > u[t];
    }
    moe_route_opts o;
    moe_route_opts_default(&o);
    o.dropless = 1;
    int rc;
    moe_plan *a = route_rng("gshard", &o, N, E, L, NULL, NULL, g, &rc);
    CHECK(a != NULL, "gshard with rng: %s", moe_errmsg());
    moe_plan *b = route("gshard", &o, N, E, L, NULL, u);
    CHECK(same_plan(a, b), "gshard with rng differs from gshard with the same draws");
    CHECK(gsl_rng_get(g) == gsl_rng_get(ref), "gshard did not draw exactly once per token");
    if (a) {
        CHECK_INT(a->n_claims, N + second);
        CHECK_INT(a->n_entries, N + second);
        CHECK(second > 0 && second < N, "draws decide %d of %d tokens", second, N);
    }
    moe_plan_free(a);
    moe_plan_free(b);
    gsl_rng_free(ref);
    gsl_rng_free(g);
}

/* ---- hash ----
 * mod, E = 3, ids (7, 3, 9, 4, 12) -> experts (1, 0, 0, 1, 0); no capacity limit: C = 3 (the
 * largest load), slots in token order; with cf = 1: C = ceil(5/3) = 2, t4 (third on e0) is
 * dropped; the order option does not apply (token order always). Weights 1, aux 0, importance
 * = assigned_load = (3, 2, 0). The logit values are ignored. */
static void test_hash(void)
{
    const double L[15] = {9, 0, 0, 0, 9, 0, 0, 0, 9, 3, 2, 1, -1, 5, 0};
    const int64_t ids[5] = {7, 3, 9, 4, 12};
    const want_entry w[5] = {{0, 1, 0, 1}, {1, 0, 0, 1}, {2, 0, 1, 1}, {3, 1, 1, 1},
                             {4, 0, 2, 1}};
    const long load[3] = {3, 2, 0};
    const double imp[3] = {3, 2, 0};
    moe_route_opts o;
    moe_route_opts_default(&o);
    moe_plan *p = route("hash", &o, 5, 3, L, ids, NULL);
    check_entries("hash mod", p, w, 5);
    check_stats("hash mod", p, 3, 5, load, imp);
    if (p)
        CHECK(p->aux_loss == 0.0, "hash aux %g", p->aux_loss);
    moe_plan_free(p);
    o = opts_cf(1, 1);
    o.order = MOE_ORDER_PROBS;
    p = route("hash", &o, 5, 3, L, ids, NULL);
    check_entries("hash mod cf 1", p, w, 4);
    check_stats("hash mod cf 1", p, 2, 5, load, imp);
    moe_plan_free(p);

    /* table (index = id): (2, 0, 1, 1, 0, 2); ids (5, 0, 3, 3) -> experts (2, 2, 1, 1). */
    const int64_t table[6] = {2, 0, 1, 1, 0, 2};
    const int64_t tid[4] = {5, 0, 3, 3};
    const want_entry wt[4] = {{0, 2, 0, 1}, {1, 2, 1, 1}, {2, 1, 0, 1}, {3, 1, 1, 1}};
    moe_route_opts_default(&o);
    o.hash = MOE_HASH_TABLE;
    o.hash_table = table;
    o.hash_table_len = 6;
    p = route("hash", &o, 4, 3, L, tid, NULL);
    check_entries("hash table", p, wt, 4);
    moe_plan_free(p);
    /* id 6 is beyond the table of 6 entries; table value 3 is not an expert of E = 3 */
    int rc;
    const int64_t far[2] = {1, 6};
    p = route_rng("hash", &o, 2, 3, L, far, NULL, NULL, &rc);
    CHECK(p == NULL && rc == MOE_EINPUT && strstr(moe_errmsg(), "id 6"),
          "hash id beyond table: rc %d '%s'", rc, moe_errmsg());
    moe_plan_free(p);
    const int64_t bad_table[6] = {2, 0, 3, 1, 0, 2};
    o.hash_table = bad_table;
    const int64_t mid[2] = {0, 2};
    p = route_rng("hash", &o, 2, 3, L, mid, NULL, NULL, &rc);
    CHECK(p == NULL && rc == MOE_EINPUT && strstr(moe_errmsg(), "index 2"),
          "hash table value out of range: rc %d '%s'", rc, moe_errmsg());
    moe_plan_free(p);

    /* balanced, E = 3, ids (5, 9, 5, 2, 9, 5, 7, 2, 11): frequencies 5:3, 2:2, 9:2, 7:1, 11:1,
     * in that order (2 before 9: tie to the lower id). Buckets: 5 -> b0 (loads 3,0,0),
     * 2 -> b1 (3,2,0), 9 -> b2 (3,2,2), 7 -> b1 (b1 = b2 = 2: lower bucket; 3,3,2),
     * 11 -> b2 (3,3,3). Experts by token: (0, 2, 0, 1, 2, 0, 1, 1, 2); slots in token order. */
    const int64_t bid[9] = {5, 9, 5, 2, 9, 5, 7, 2, 11};
    const double L9[27] = {0};
    const want_entry wb[9] = {{0, 0, 0, 1}, {1, 2, 0, 1}, {2, 0, 1, 1}, {3, 1, 0, 1}, {4, 2, 1, 1},
                              {5, 0, 2, 1}, {6, 1, 1, 1}, {7, 1, 2, 1}, {8, 2, 2, 1}};
    const long lb[3] = {3, 3, 3};
    const double ib[3] = {3, 3, 3};
    moe_route_opts_default(&o);
    o.hash = MOE_HASH_BALANCED;
    p = route("hash", &o, 9, 3, L9, bid, NULL);
    check_entries("hash balanced", p, wb, 9);
    check_stats("hash balanced", p, 3, 9, lb, ib);
    moe_plan_free(p);
}

/* ---- errors ---- */
static void test_errors(void)
{
    const double L[8] = {0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8};
    const int64_t ids[2] = {1, 2};
    moe_route_opts o;
    int rc;
    moe_plan *p;
    moe_route_opts_default(&o);
    o.k = 2;
    p = route_rng("switch", &o, 2, 4, L, NULL, NULL, NULL, &rc);
    CHECK(!p && rc == MOE_EINPUT && strstr(moe_errmsg(), "k = 2"), "switch k = 2: rc %d '%s'",
          rc, moe_errmsg());
    p = route_rng("hash", &o, 2, 4, L, ids, NULL, NULL, &rc);
    CHECK(!p && rc == MOE_EINPUT, "hash k = 2: rc %d '%s'", rc, moe_errmsg());
    o.k = 3;
    p = route_rng("gshard", &o, 2, 4, L, NULL, NULL, NULL, &rc);
    CHECK(!p && rc == MOE_EINPUT && strstr(moe_errmsg(), "k = 3"), "gshard k = 3: rc %d '%s'",
          rc, moe_errmsg());
    o.k = 5;
    p = route_rng("topk", &o, 2, 4, L, NULL, NULL, NULL, &rc);
    CHECK(!p && rc == MOE_EINPUT, "topk k = 5 > E: rc %d", rc);
    moe_route_opts_default(&o);
    p = route_rng("gshard", &o, 2, 4, L, NULL, NULL, NULL, &rc);
    CHECK(!p && rc != MOE_OK, "gshard without draws or generator: rc %d", rc);
    o.noise_std = 0.5;
    p = route_rng("topk", &o, 2, 4, L, NULL, NULL, NULL, &rc);
    CHECK(!p && rc != MOE_OK, "noisy topk without generator: rc %d", rc);
    moe_route_opts_default(&o);
    p = route_rng("hash", &o, 2, 4, L, NULL, NULL, NULL, &rc);
    CHECK(!p && rc == MOE_EINPUT, "hash without ids: rc %d", rc);
    o.hash = MOE_HASH_TABLE;
    p = route_rng("hash", &o, 2, 4, L, ids, NULL, NULL, &rc);
    CHECK(!p && rc != MOE_OK, "hash table without a table: rc %d", rc);
    moe_clear_error();
}

int main(void)
{
    test_topk_orders();
    test_topk_order_gate();
    test_topk_k_equals_E();
    test_topk_noise();
    test_switch();
    test_capacity_exact();
    test_switch_ties();
    test_gshard();
    test_gshard_rng();
    test_hash();
    test_errors();
    return check_report("test_routers_tc");
}
