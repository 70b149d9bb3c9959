/* test_routers_extra.c: the routers beyond the six (docs/routing.md section 3, last bullet): base,
 * sinkhorn, dsv3_bias and dense, through the public interface (moe_router_alloc / route /
 * observe), plus moe_sinkhorn_balance (routers/sinkhorn.h) and moe_dsv3_bias_state
 * (routers/dsv3_bias.h).
 *   - hand-worked cases, each worked in the comment above it, with the tie rules pinned;
 *   - base: optimality against brute force over every feasible assignment (n <= 8, E <= 3,
 *     300 random cases, a third of them with tied logits); n = 16384, E = 64 with skew 3 and
 *     with skew 1000 (every token ranks the experts alike), and 400 random groups (n <= 3000,
 *     E <= 64, skewed, tied, near-tied): constraints and an optimality certificate (no
 *     negative cycle in the residual graph, Floyd-Warshall); identical rows pin the tie rule;
 *   - sinkhorn: the converged matrix has column sums 1/E and row sums 1/n within tolerance;
 *     non-convergence is an error;
 *   - dsv3_bias: the sign rule on a 2-batch example, and over many batches of a skewed
 *     distribution the bias moves toward balance and the load imbalance falls;
 *   - dense: the plan's weights are the dense mixture weights p, and the layer output equals
 *     the dense mixture;
 *   - the registry lists the four after soft_moe, with their flags and default k.
 * Notation: sig(x) = 1/(1+exp(-x)); expected values are computed in the test from that formula
 * or from a naive softmax written here, independently of the library. */
#include "check.h"
#include "layer.h"
#include "moe.h"
#include "../routers/dsv3_bias.h"
#include "../routers/sinkhorn.h"

#include <gsl/gsl_randist.h>
#include <math.h>
#include <string.h>

/* ---- helpers ---- */

typedef struct {
    int t, e, s;
    double cw;
} want_entry;

static double sig(double x) { return 1.0 / (1.0 + exp(-x)); }

/* Compare the plan's entries, in order, with want (len), dispatch weight 1; one CHECK. */
static void check_entries(const char *what, const moe_plan *p, const want_entry *want,
                          size_t len, double tol)
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
            en->dispatch_w != 1.0 || !(fabs(en->combine_w - w->cw) <= tol)) {
            if (!bad)
                fprintf(stderr, "%s: entry %zu is (%d,%d,%d,%.17g,%.17g), expected "
                        "(%d,%d,%d,1,%.17g)\n", what, i, en->token, en->expert, en->slot,
                        en->dispatch_w, en->combine_w, w->t, w->e, w->s, w->cw);
            bad++;
        }
    }
    CHECK(bad == 0, "%s: %d entries differ", what, bad);
}

/* A router for n tokens, m columns; NULL (and the status in *rc) on error. */
static moe_router *make(const char *name, const moe_route_opts *o, int n, int m, int *rc)
{
    moe_router *r = NULL;
    moe_clear_error();
    *rc = moe_router_alloc(moe_router_find(name), o, n, m, &r);
    return r;
}

static int route_with(moe_router *r, const double *L, int n, moe_plan *plan)
{
    moe_route_in in;
    memset(&in, 0, sizeof in);
    in.n = n;
    in.m = r->m;
    in.logits = L;
    return moe_router_route(r, &in, plan);
}

/* Route once with a fresh router. */
static int route(const char *name, const moe_route_opts *o, const double *L, int n, int m,
                 moe_plan *plan)
{
    int rc;
    moe_router *r = make(name, o, n, m, &rc);
    if (!rc)
        rc = route_with(r, L, n, plan);
    moe_router_free(r);
    return rc;
}

static moe_route_opts opts(void)
{
    moe_route_opts o;
    moe_route_opts_default(&o);
    return o;
}

/* max/mean of load (E). */
static double imbalance(const long *load, int E)
{
    double s = 0.0, mx = 0.0;
    for (int e = 0; e < E; e++) {
        s += (double)load[e];
        if (load[e] > mx)
            mx = (double)load[e];
    }
    return s > 0 ? mx / (s / E) : 0.0;
}

/* ---- registry ---- */

static void test_registry(void)
{
    static const char *const want[] = {"soft_moe", "base", "sinkhorn", "dsv3_bias", "dense"};
    int at = -1, ok = 1;
    for (int i = 0; moe_router_types[i]; i++)
        if (!strcmp(moe_router_types[i]->name, "soft_moe"))
            at = i;
    for (int j = 0; j < 5 && at >= 0; j++)
        ok = ok && moe_router_types[at + j] && !strcmp(moe_router_types[at + j]->name, want[j]);
    CHECK(at >= 0 && ok, "registry lists base, sinkhorn, dsv3_bias, dense right after soft_moe");

    const moe_router_type *b = moe_router_find("base"), *s = moe_router_find("sinkhorn"),
                          *d = moe_router_find("dsv3_bias"), *x = moe_router_find("dense");
    CHECK(b && s && d && x, "the four routers are registered");
    if (!(b && s && d && x))
        return;
    CHECK(b->default_k == 1 && s->default_k == 1 && d->default_k == 2,
          "default k: base 1, sinkhorn 1, dsv3_bias 2");
    CHECK((d->flags & MOE_RF_STATEFUL) && d->observe, "dsv3_bias is stateful with observe");
    CHECK(!(b->flags & MOE_RF_STATEFUL) && !b->observe && !s->observe && !x->observe,
          "base, sinkhorn, dense are stateless");
    CHECK((s->flags & MOE_RF_HAS_DROPLESS) && (d->flags & MOE_RF_HAS_DROPLESS) &&
              !(b->flags & MOE_RF_HAS_DROPLESS) && !(x->flags & MOE_RF_HAS_DROPLESS),
          "dropless forms: sinkhorn and dsv3_bias (capacity only with cf), not base or dense");
    CHECK(!((b->flags | s->flags | d->flags | x->flags) & (MOE_RF_DENSE | MOE_RF_NEEDS_IDS)),
          "none is a soft_moe-style dense plan or needs token ids");
    moe_route_opts o = opts();
    int rc;
    moe_router *r = make("dense", &o, 3, 5, &rc);
    CHECK(rc == MOE_OK && r && r->k == 5, "dense: effective k = E = 5");
    moe_router_free(r);
}

/* ---- base: hand-worked ---- */

static void test_base_hand(void)
{
    moe_plan *p = moe_plan_alloc(8, 4, 16);
    moe_route_opts o = opts();

    /* n = 4, E = 2, C = ceil(4/2) = 2. L = [1,0], [1,0], [5,0], [0,-3]. Expert 0 holds exactly
     * two tokens (every token is served, each expert at most 2), so the total is
     * sum_t L[t,1] + the two largest advantages L[t,0] - L[t,1] = (1, 1, 5, 3):
     * -3 + 5 + 3 = 5 with t2, t3 on e0; the next best pair {t2, t0} gives 3. Greedy in token
     * order (t0, t1 to e0) would give -1. Slots in token order: e1: t0 s0, t1 s1; e0: t2 s0,
     * t3 s1. Gates sig(L[t,e]): sig(0), sig(0), sig(5), sig(0). */
    const double L1[] = {1, 0, 1, 0, 5, 0, 0, -3};
    CHECK_INT(route("base", &o, L1, 4, 2, p), MOE_OK);
    const want_entry w1[] = {{0, 1, 0, 0.5}, {1, 1, 1, 0.5}, {2, 0, 0, sig(5)}, {3, 0, 1, 0.5}};
    check_entries("base 4x2", p, w1, 4, 1e-15);
    CHECK(p->capacity == 2 && p->k == 1 && p->n_claims == 4 && p->aux_loss == 0.0,
          "base 4x2: C %ld k %d claims %ld aux %g", p->capacity, p->k, p->n_claims, p->aux_loss);
    CHECK(p->assigned_load[0] == 2 && p->assigned_load[1] == 2, "base 4x2: loads (2, 2)");
    CHECK(fabs(p->importance[0] - (sig(5) + 0.5)) < 1e-15 && fabs(p->importance[1] - 1.0) < 1e-15,
          "base 4x2: importance = summed gates (%.17g, %.17g)", p->importance[0],
          p->importance[1]);

    /* Ties: all-zero logits, n = 5, E = 2, C = 3. Every assignment is optimal; the rule
     * (routers/base.c: prices stay 0, and in token order each token takes the lowest of its
     * tied best experts that has room) fills the experts in order: token t -> floor(t/C):
     * t0, t1, t2 -> e0 slots 0..2, t3, t4 -> e1 slots 0, 1. Gates sig(0) = 1/2. */
    const double L2[10] = {0};
    CHECK_INT(route("base", &o, L2, 5, 2, p), MOE_OK);
    const want_entry w2[] = {{0, 0, 0, 0.5}, {1, 0, 1, 0.5}, {2, 0, 2, 0.5}, {3, 1, 0, 0.5},
                             {4, 1, 1, 0.5}};
    check_entries("base ties", p, w2, 5, 0.0);

    /* n < E: n = 2, E = 3, C = 1. L = [1,2,0], [0,3,0]: both prefer e1. t1 on e1 and t0 on e0
     * gives 3 + 1 = 4; t0 on e1 gives at most 2 + 0. So t0 -> e0, t1 -> e1; e2 stays empty. */
    const double L3[] = {1, 2, 0, 0, 3, 0};
    CHECK_INT(route("base", &o, L3, 2, 3, p), MOE_OK);
    const want_entry w3[] = {{0, 0, 0, sig(1)}, {1, 1, 0, sig(3)}};
    check_entries("base n<E", p, w3, 2, 1e-15);
    CHECK(p->capacity == 1 && p->assigned_load[2] == 0, "base n<E: C = 1, e2 empty");

    /* capacity options do not apply: cf = 0.5 routes the same plan as above */
    moe_route_opts ocf = opts();
    ocf.cf_set = 1;
    ocf.cf_num = 1;
    ocf.cf_den = 2;
    CHECK_INT(route("base", &ocf, L3, 2, 3, p), MOE_OK);
    check_entries("base cf ignored", p, w3, 2, 1e-15);

    /* k must be 1 */
    moe_route_opts ok2 = opts();
    ok2.k = 2;
    int rc;
    moe_router *r = make("base", &ok2, 2, 3, &rc);
    CHECK(rc == MOE_EINPUT && !r && strstr(moe_errmsg(), "k = 1"), "base k = 2: rc %d, %s", rc,
          moe_errmsg());
    moe_plan_free(p);
}

/* ---- base: brute force ---- */

/* Best total affinity over all assignments of n tokens to E experts with at most C each. */
static double brute_best(const double *L, int n, int E, int C)
{
    int a[8] = {0}, load[3];
    double best = -INFINITY;
    for (;;) {
        memset(load, 0, sizeof load);
        int ok = 1;
        double tot = 0.0;
        for (int t = 0; t < n; t++) {
            ok = ok && ++load[a[t]] <= C;
            tot += L[t * E + a[t]];
        }
        if (ok && tot > best)
            best = tot;
        int i = 0;
        while (i < n && ++a[i] == E)
            a[i++] = 0;
        if (i == n)
            break;
    }
    return best;
}

static void test_base_brute(void)
{
    gsl_rng *g = moe_rng_alloc(77, MOE_STREAM_TOKENS);
    moe_plan *p = moe_plan_alloc(8, 3, 16);
    moe_route_opts o = opts();
    int cases = 0, bad_route = 0, bad_served = 0, bad_cap = 0, bad_slot = 0, bad_opt = 0;
    double worst = 0.0;
    for (int trial = 0; trial < 300; trial++) {
        const int n = 1 + (int)gsl_rng_uniform_int(g, 8), E = 1 + (int)gsl_rng_uniform_int(g, 3);
        const int C = (n + E - 1) / E;
        double L[24];
        for (int i = 0; i < n * E; i++) {
            L[i] = gsl_ran_gaussian(g, 1.5);
            if (trial % 3 == 0)
                L[i] = round(L[i]); /* ties */
        }
        cases++;
        if (route("base", &o, L, n, E, p) != MOE_OK) {
            bad_route++;
            continue;
        }
        int seen[8] = {0}, load[3] = {0}, next[3] = {0};
        double tot = 0.0;
        for (size_t i = 0; i < p->n_entries; i++) {
            const moe_entry *en = &p->entries[i];
            seen[en->token]++;
            load[en->expert]++;
            if (en->slot != next[en->expert]++) /* entries are token-major: slot = rank */
                bad_slot++;
            tot += L[en->token * E + en->expert];
        }
        for (int t = 0; t < n; t++)
            bad_served += seen[t] != 1;
        for (int e = 0; e < E; e++)
            bad_cap += load[e] > C;
        bad_cap += p->capacity != C;
        double diff = brute_best(L, n, E, C) - tot;
        if (fabs(diff) > worst)
            worst = fabs(diff);
        bad_opt += fabs(diff) > 1e-9;
    }
    CHECK(cases == 300 && bad_route == 0, "base brute force: %d of %d cases failed to route",
          bad_route, cases);
    CHECK(bad_served == 0, "base brute force: %d tokens not served exactly once", bad_served);
    CHECK(bad_cap == 0, "base brute force: %d capacity violations", bad_cap);
    CHECK(bad_slot == 0, "base brute force: %d slots not in token order", bad_slot);
    CHECK(bad_opt == 0, "base brute force: %d cases not optimal (worst total gap %.3g)", bad_opt,
          worst);
    moe_plan_free(p);
    gsl_rng_free(g);
}

/* ---- base: large ---- */

/* Optimality certificate for an assignment asg (T) of L (T,E) with capacity C: no negative
 * cycle in the residual graph over E experts and a sink, found by Floyd-Warshall. Edges:
 * a -> b at cost min over tokens s on a of L[s,a] - L[s,b] (move s), a -> sink (cost 0) if a
 * has a free slot, sink -> b (cost 0) if b holds a token. Returns the most negative
 * dist[v][v] (0 if none). */
static double residual_min_cycle(const double *L, const int *asg, int n, int E, int C,
                                 double *dist /* (E+1)^2 */)
{
    const int V = E + 1;
    long load[65] = {0};
    for (int i = 0; i < V * V; i++)
        dist[i] = INFINITY;
    for (int v = 0; v < V; v++)
        dist[v * V + v] = 0.0;
    for (int s = 0; s < n; s++) {
        const int a = asg[s];
        load[a]++;
        for (int b = 0; b < E; b++) {
            double c = L[(size_t)s * E + a] - L[(size_t)s * E + b];
            if (b != a && c < dist[a * V + b])
                dist[a * V + b] = c;
        }
    }
    for (int e = 0; e < E; e++) {
        if (load[e] < C)
            dist[e * V + E] = 0.0;
        if (load[e] > 0)
            dist[E * V + e] = 0.0;
    }
    for (int k = 0; k < V; k++)
        for (int i = 0; i < V; i++)
            for (int j = 0; j < V; j++)
                if (dist[i * V + k] + dist[k * V + j] < dist[i * V + j])
                    dist[i * V + j] = dist[i * V + k] + dist[k * V + j];
    double m = 0.0;
    for (int v = 0; v < V; v++)
        if (dist[v * V + v] < m)
            m = dist[v * V + v];
    return m;
}

/* Route L (n,E) with a fresh base router into p and read the plan back: asg (n) gets each
 * token's expert. Returns the number of violated constraints (a token not served exactly
 * once, a slot out of token order, a load above C = ceil(n/E), assigned_load not the entry
 * count, capacity not C), or -1 if routing failed. */
static int base_read_plan(const double *L, int n, int E, moe_plan *p, int *asg)
{
    moe_route_opts o = opts();
    if (route("base", &o, L, n, E, p) != MOE_OK)
        return -1;
    const long C = ((long)n + E - 1) / E;
    int bad = 0;
    long load[64] = {0};
    for (int t = 0; t < n; t++)
        asg[t] = -1;
    for (size_t i = 0; i < p->n_entries; i++) {
        const moe_entry *en = &p->entries[i];
        bad += asg[en->token] != -1 || en->slot != load[en->expert];
        asg[en->token] = en->expert;
        load[en->expert]++;
    }
    for (int t = 0; t < n; t++)
        bad += asg[t] < 0;
    for (int e = 0; e < E; e++)
        bad += load[e] > C || load[e] != p->assigned_load[e];
    bad += p->n_entries != (size_t)n || p->capacity != C;
    return bad;
}

/* Constraints and optimality certificate of base on L (n,E), E <= 64: one CHECK each. */
static void check_base_optimal(const char *what, const double *L, int n, int E, moe_plan *p,
                               int *asg, double *dist)
{
    const int C = (n + E - 1) / E;
    int bad = base_read_plan(L, n, E, p, asg);
    CHECK(bad == 0, "%s (n=%d E=%d): %d constraint violations (-1: routing failed: %s)", what,
          n, E, bad, moe_errmsg());
    if (bad == 0) {
        double m = residual_min_cycle(L, asg, n, E, C, dist);
        CHECK(m > -1e-9, "%s (n=%d E=%d): residual graph has a negative cycle of %.3g (not "
              "optimal)", what, n, E, m);
    }
}

static void test_base_large(void)
{
    enum { N = 16384, E = 64 };
    const int sizes[2] = {N, N - 37}; /* every expert full; and some slots free */
    double *L = malloc((size_t)N * E * sizeof *L);
    int *asg = malloc(N * sizeof *asg);
    double *dist = malloc((E + 1) * (E + 1) * sizeof *dist);
    moe_plan *p = moe_plan_alloc(N, E, N);
    gsl_rng *g = moe_rng_alloc(5, MOE_STREAM_TOKENS);
    /* Gaussian logits with a preference for low experts (skew 3 across the experts): the
     * unconstrained argmax would overload expert 0. */
    for (int t = 0; t < N; t++)
        for (int e = 0; e < E; e++)
            L[(size_t)t * E + e] = gsl_ran_gaussian(g, 1.0) - 3.0 * e / (E - 1);
    for (int c = 0; c < 2; c++)
        check_base_optimal("base skew 3", L, sizes[c], E, p, asg, dist);
    /* and the certificate itself detects a non-optimal assignment: token order greedy to the
     * best expert with room */
    {
        const int n = N, C = N / E;
        long load[E] = {0};
        for (int t = 0; t < n; t++) {
            int best = -1;
            for (int e = 0; e < E; e++)
                if (load[e] < C && (best < 0 || L[(size_t)t * E + e] > L[(size_t)t * E + best]))
                    best = e;
            asg[t] = best;
            load[best]++;
        }
        CHECK(residual_min_cycle(L, asg, n, E, C, dist) < -1e-3,
              "the certificate rejects the greedy assignment");
    }

    /* Strong skew: L = N(0,1) - 1000 e/(E-1). Adjacent experts differ by 1000/63 = 15.9
     * standard deviations, so every token ranks the experts the same way (checked below):
     * the unconstrained choice puts all tokens on expert 0, and the optimum is decided by the
     * noise alone (with every expert full the skew adds the same total to every assignment).
     * This is the case a token-by-token solve pays most for: every new token pushes a chain
     * of tokens one expert down. */
    int unranked = 0;
    for (int t = 0; t < N; t++) {
        for (int e = 0; e < E; e++)
            L[(size_t)t * E + e] = gsl_ran_gaussian(g, 1.0) - 1000.0 * e / (E - 1);
        for (int e = 1; e < E; e++)
            if (!(L[(size_t)t * E + e] < L[(size_t)t * E + e - 1])) {
                unranked++;
                break;
            }
    }
    CHECK(unranked == 0, "skew 1000: %d tokens do not rank the experts 0, 1, ..., E-1",
          unranked);
    for (int c = 0; c < 2; c++)
        check_base_optimal("base skew 1000", L, sizes[c], E, p, asg, dist);

    /* Identical rows, L[t,e] = -e: every assignment that fills the experts is optimal (the
     * certificate's cycles all cost 0). The tie rule (routers/base.c) pins the plan: L + pi
     * ends all tied, so the experts fill in token order, token t -> expert floor(t/C), for
     * n = N (C = 256) and n = N - 37 (C = 256, expert 63 takes the last 219 tokens). */
    for (int t = 0; t < N; t++)
        for (int e = 0; e < E; e++)
            L[(size_t)t * E + e] = -(double)e;
    for (int c = 0; c < 2; c++) {
        const int n = sizes[c], C = (n + E - 1) / E;
        check_base_optimal("base identical rows", L, n, E, p, asg, dist);
        int off = 0;
        for (int t = 0; t < n; t++)
            off += asg[t] != t / C;
        CHECK(off == 0, "base identical rows n=%d: %d tokens not on expert floor(t/C)", n, off);
    }
    gsl_rng_free(g);
    moe_plan_free(p);
    free(dist);
    free(asg);
    free(L);
}

/* 400 random groups, n in 1..3000 and E in 1..64, from families that stress the solver:
 * Gaussian logits with a skew of 0..1000 toward low experts, the same with the skew's sign
 * flipped for the first half of the tokens (the order of the tokens matters), integer logits
 * (many exact ties), rows equal across tokens, all-equal logits, and near-ties (noise 1e-6 on
 * a skew). Every plan must satisfy the constraints and the optimality certificate; the count
 * of failing groups is checked once. */
static void test_base_random(void)
{
    enum { NMAX = 3000, EMAX = 64 };
    double *L = malloc((size_t)NMAX * EMAX * sizeof *L);
    int *asg = malloc(NMAX * sizeof *asg);
    double *dist = malloc((EMAX + 1) * (EMAX + 1) * sizeof *dist);
    moe_plan *p = moe_plan_alloc(NMAX, EMAX, NMAX);
    gsl_rng *g = moe_rng_alloc(91, MOE_STREAM_TOKENS);
    int groups = 0, bad_route = 0, bad_plan = 0, bad_opt = 0;
    double worst = 0.0;
    for (int trial = 0; trial < 400; trial++) {
        const int n = 1 + (int)gsl_rng_uniform_int(g, trial % 4 == 0 ? NMAX : 300);
        const int E = 1 + (int)gsl_rng_uniform_int(g, trial % 2 == 0 ? EMAX : 12);
        const int family = trial % 6;
        const double skew = gsl_rng_uniform(g) * (trial % 3 == 0 ? 1000.0 : 10.0);
        for (int t = 0; t < n; t++)
            for (int e = 0; e < E; e++) {
                const double z = gsl_ran_gaussian(g, 1.0), f = E > 1 ? (double)e / (E - 1) : 0;
                double x;
                if (family == 0)
                    x = z - skew * f;
                else if (family == 1)
                    x = z + (t < n / 2 ? skew : -skew) * f;
                else if (family == 2)
                    x = round(1.5 * z) - round(skew * f);
                else if (family == 3)
                    x = -(double)e;
                else if (family == 4)
                    x = 0.0;
                else
                    x = 1e-6 * z - skew * f;
                L[(size_t)t * E + e] = x;
            }
        groups++;
        int bad = base_read_plan(L, n, E, p, asg);
        if (bad < 0) {
            bad_route++;
            continue;
        }
        if (bad > 0) {
            bad_plan++;
            continue;
        }
        double m = residual_min_cycle(L, asg, n, E, (n + E - 1) / E, dist);
        if (m < worst)
            worst = m;
        bad_opt += !(m > -1e-9);
    }
    CHECK(groups == 400 && bad_route == 0, "base random: %d of %d groups failed to route (%s)",
          bad_route, groups, moe_errmsg());
    CHECK(bad_plan == 0, "base random: %d groups violate the constraints", bad_plan);
    CHECK(bad_opt == 0, "base random: %d groups not optimal (most negative cycle %.3g)",
          bad_opt, worst);
    gsl_rng_free(g);
    moe_plan_free(p);
    free(dist);
    free(asg);
    free(L);
}

/* ---- sinkhorn ---- */

static void test_sinkhorn_hand(void)
{
    moe_plan *p = moe_plan_alloc(4, 2, 16);
    moe_route_opts o = opts();

    /* n = 2, E = 2, L = [2,0], [1,0]: both tokens prefer e0. The balanced matrix
     * B = [[x, 1/2-x], [1/2-x, x]] (rows and columns sum to 1/2) keeps the cross ratio of
     * exp(L): x^2 / (1/2-x)^2 = e^2 e^0 / (e^0 e^1) = e, x = sqrt(e) / (2 (1 + sqrt(e))) = 0.311
     * > 1/4, so t0 -> e0 and t1 -> e1. k = 1: gates sig(2), sig(0). Dropless (no cf): C = the
     * largest load = 1. */
    const double L[] = {2, 0, 1, 0};
    CHECK_INT(route("sinkhorn", &o, L, 2, 2, p), MOE_OK);
    const want_entry w1[] = {{0, 0, 0, sig(2)}, {1, 1, 0, 0.5}};
    check_entries("sinkhorn 2x2 k=1", p, w1, 2, 1e-15);
    CHECK(p->capacity == 1 && p->n_claims == 2 && p->aux_loss == 0.0,
          "sinkhorn 2x2: C %ld, claims %ld", p->capacity, p->n_claims);

    double K[4], d0[2], d1[2], cs[2];
    int it = 0;
    CHECK_INT(moe_sinkhorn_balance(L, 2, 2, 1e-9, MOE_SINKHORN_MAX_ITER, K, d0, d1, cs, &it),
              MOE_OK);
    const double x = sqrt(M_E) / (2.0 * (1.0 + sqrt(M_E)));
    const double B[4] = {d0[0] * K[0] * d1[0], d0[0] * K[1] * d1[1], d0[1] * K[2] * d1[0],
                         d0[1] * K[3] * d1[1]};
    const double Bw[4] = {x, 0.5 - x, 0.5 - x, x};
    check_close_arrays("sinkhorn 2x2 balanced matrix", B, Bw, 4, 1e-9, 0.0);
    CHECK(it >= 2, "sinkhorn 2x2 needs several iterations (%d)", it);

    /* k = 2 = E: both experts, in balanced order: t0 (e0, e1), t1 (e1, e0); gates the full
     * softmax: t0 (sig(2), sig(-2)), t1 e1 sig(-1), e0 sig(1). choice_major, dropless C = 2:
     * firsts t0 -> e0 s0, t1 -> e1 s0; seconds t0 -> e1 s1, t1 -> e0 s1. */
    moe_route_opts o2 = opts();
    o2.k = 2;
    CHECK_INT(route("sinkhorn", &o2, L, 2, 2, p), MOE_OK);
    const want_entry w2[] = {{0, 0, 0, sig(2)}, {0, 1, 1, sig(-2)}, {1, 1, 0, sig(-1)},
                             {1, 0, 1, sig(1)}};
    check_entries("sinkhorn 2x2 k=2", p, w2, 4, 1e-15);

    /* with an explicit capacity 1 the second choices are dropped (claims.c): assigned (2, 2),
     * 4 claims, 2 entries */
    o2.capacity = 1;
    CHECK_INT(route("sinkhorn", &o2, L, 2, 2, p), MOE_OK);
    const want_entry w3[] = {{0, 0, 0, sig(2)}, {1, 1, 0, sig(-1)}};
    check_entries("sinkhorn k=2 C=1", p, w3, 2, 1e-15);
    CHECK(p->capacity == 1 && p->n_claims == 4 && p->assigned_load[0] == 2 &&
              p->assigned_load[1] == 2, "sinkhorn k=2 C=1: claims counted before capacity");

    /* all-zero logits, n = 4: K = 1, d0 = 1/8, column sums 1/2, d1 stays 1: converged after
     * one iteration; ties -> expert 0 for every token (slots 0..3). */
    const double Z[8] = {0};
    it = 0;
    double K4[8], e0[4];
    CHECK_INT(moe_sinkhorn_balance(Z, 4, 2, 1e-9, 10, K4, e0, d1, cs, &it), MOE_OK);
    CHECK(it == 1 && d1[0] == 1.0 && d1[1] == 1.0 && e0[0] == 0.125,
          "sinkhorn zeros: %d iterations, d1 (%g, %g), d0 %g", it, d1[0], d1[1], e0[0]);
    CHECK_INT(route("sinkhorn", &o, Z, 4, 2, p), MOE_OK);
    const want_entry w4[] = {{0, 0, 0, 0.5}, {1, 0, 1, 0.5}, {2, 0, 2, 0.5}, {3, 0, 3, 0.5}};
    check_entries("sinkhorn ties", p, w4, 4, 0.0);
    moe_plan_free(p);
}

static void test_sinkhorn_converged(void)
{
    enum { N = 300, E = 8 };
    double *L = malloc(N * E * sizeof *L), *K = malloc(N * E * sizeof *K);
    double d0[N], d1[E], cs[E];
    gsl_rng *g = moe_rng_alloc(11, MOE_STREAM_TOKENS);
    for (int t = 0; t < N; t++)
        for (int e = 0; e < E; e++)
            L[t * E + e] = gsl_ran_gaussian(g, 2.0) - 4.0 * e / (E - 1);
    const double tol = 1e-9;
    int it = 0;
    CHECK_INT(moe_sinkhorn_balance(L, N, E, tol, MOE_SINKHORN_MAX_ITER, K, d0, d1, cs, &it),
              MOE_OK);
    double col[E] = {0}, worst_row = 0.0, worst_col = 0.0;
    for (int t = 0; t < N; t++) {
        double r = 0.0;
        for (int e = 0; e < E; e++) {
            double b = d0[t] * K[t * E + e] * d1[e];
            r += b;
            col[e] += b;
        }
        worst_row = fmax(worst_row, fabs(r * N - 1.0));
    }
    for (int e = 0; e < E; e++)
        worst_col = fmax(worst_col, fabs(col[e] * E - 1.0));
    /* columns are normalised last (exact up to rounding); rows are within the relative change
     * of d1 in the last iteration, which is < tol */
    CHECK(worst_col < 1e-12, "sinkhorn: column sums off 1/E by %.3g relative", worst_col);
    CHECK(worst_row < tol, "sinkhorn: row sums off 1/n by %.3g relative (tol %g, %d iterations)",
          worst_row, tol, it);
    /* the loose tolerance stops earlier and is less balanced, but still within itself */
    int it2 = 0;
    CHECK_INT(moe_sinkhorn_balance(L, N, E, 1e-3, MOE_SINKHORN_MAX_ITER, K, d0, d1, cs, &it2),
              MOE_OK);
    CHECK(it2 < it, "sinkhorn: tolerance 1e-3 takes %d iterations, 1e-9 takes %d", it2, it);

    /* not converged within the cap: an error naming the tolerance option */
    moe_clear_error();
    int rc = moe_sinkhorn_balance(L, N, E, 1e-12, 3, K, d0, d1, cs, NULL);
    CHECK(rc == MOE_EINPUT && strstr(moe_errmsg(), "did not converge") &&
              strstr(moe_errmsg(), "sinkhorn_tol"), "sinkhorn no convergence: rc %d, %s", rc,
          moe_errmsg());

    /* the router's selection is the top-1 of the balanced matrix: loads far more even than
     * the argmax of the logits (which piles onto the low experts) */
    moe_plan *p = moe_plan_alloc(N, E, N);
    moe_route_opts o = opts();
    CHECK_INT(route("sinkhorn", &o, L, N, E, p), MOE_OK);
    long amax[E] = {0};
    for (int t = 0; t < N; t++) {
        int b = 0;
        for (int e = 1; e < E; e++)
            if (L[t * E + e] > L[t * E + b])
                b = e;
        amax[b]++;
    }
    double ib = imbalance(p->assigned_load, E), ia = imbalance(amax, E);
    CHECK(ib < 0.5 * ia, "sinkhorn imbalance %.3f vs argmax %.3f", ib, ia);
    moe_plan_free(p);
    gsl_rng_free(g);
    free(K);
    free(L);
}

/* ---- dsv3_bias ---- */

static void test_dsv3_hand(void)
{
    moe_plan *p = moe_plan_alloc(4, 3, 16);
    moe_route_opts o = opts();

    /* k = 2 (default), L = [0, ln 3, 0]: s = sig = (1/2, 3/4, 1/2); bias 0: e1, then e0 (tie
     * with e2 -> lower expert); gates normalised over the two: 3/4 / (5/4) = 0.6, 0.4. */
    const double L[] = {0, log(3.0), 0};
    CHECK_INT(route("dsv3_bias", &o, L, 1, 3, p), MOE_OK);
    const want_entry w1[] = {{0, 1, 0, 0.6}, {0, 0, 0, 0.4}};
    check_entries("dsv3 k=2", p, w1, 2, 1e-15);
    CHECK(p->k == 2 && p->capacity == 1 && p->aux_loss == 0.0, "dsv3 k=2: k %d, C %ld", p->k,
          p->capacity);

    /* The sign rule on two batches, E = 2, k = 1, rate 0.1, the same batch twice:
     * L = [2,0], [1,0], [0.5,0], [0,1]: s = (.881,.5), (.731,.5), (.622,.5), (.5,.731).
     * Batch 1 (b = 0): e0, e0, e0, e1 -> loads (3, 1), imbalance 3/2; mean 2, so
     * b = (0 + 0.1 sign(2-3), 0 + 0.1 sign(2-1)) = (-0.1, 0.1).
     * Batch 2: keys s + b: t0 (.781, .6) -> e0; t1 (.631, .6) -> e0; t2 (.522, .6) -> e1;
     * t3 (.4, .831) -> e1: loads (2, 2), imbalance 1; gates s/s = 1 (k = 1).
     * Observe: loads equal the mean: sign 0, b unchanged. */
    moe_route_opts o1 = opts();
    o1.k = 1;
    o1.bias_rate = 0.1;
    const double L2[] = {2, 0, 1, 0, 0.5, 0, 0, 1};
    int rc;
    moe_router *r = make("dsv3_bias", &o1, 4, 2, &rc);
    CHECK(rc == MOE_OK && r, "dsv3 alloc: %s", moe_errmsg());
    if (r) {
        const double *b = moe_dsv3_bias_state(r);
        moe_route_in in;
        memset(&in, 0, sizeof in);
        in.n = 4;
        in.m = 2;
        in.logits = L2;
        CHECK(b && b[0] == 0.0 && b[1] == 0.0, "dsv3: the bias starts at 0");
        CHECK_INT(moe_router_route(r, &in, p), MOE_OK);
        const want_entry wb1[] = {{0, 0, 0, 1}, {1, 0, 1, 1}, {2, 0, 2, 1}, {3, 1, 0, 1}};
        check_entries("dsv3 batch 1", p, wb1, 4, 0.0);
        CHECK(fabs(imbalance(p->assigned_load, 2) - 1.5) < 1e-15, "dsv3 batch 1 imbalance 1.5");
        r->type->observe(r, &in, p);
        CHECK(b[0] == -0.1 && b[1] == 0.1, "dsv3 after batch 1: b = (%.17g, %.17g), expected "
              "(-0.1, 0.1)", b[0], b[1]);
        CHECK_INT(moe_router_route(r, &in, p), MOE_OK);
        const want_entry wb2[] = {{0, 0, 0, 1}, {1, 0, 1, 1}, {2, 1, 0, 1}, {3, 1, 1, 1}};
        check_entries("dsv3 batch 2", p, wb2, 4, 0.0);
        CHECK(imbalance(p->assigned_load, 2) == 1.0, "dsv3 batch 2 imbalance 1");
        r->type->observe(r, &in, p);
        CHECK(b[0] == -0.1 && b[1] == 0.1, "dsv3 after batch 2 (balanced): b unchanged");
    }
    moe_router_free(r);

    /* with a capacity factor, claims go through claims.c: n = 4, E = 2, k = 1, cf 0.5 ->
     * C = ceil(1*4*0.5/2) = 1: batch 1's claims e0, e0, e0, e1 keep t0 on e0 and t3 on e1 */
    o1.cf_set = 1;
    o1.cf_num = 1;
    o1.cf_den = 2;
    CHECK_INT(route("dsv3_bias", &o1, L2, 4, 2, p), MOE_OK);
    const want_entry wc[] = {{0, 0, 0, 1}, {3, 1, 0, 1}};
    check_entries("dsv3 cf 0.5", p, wc, 2, 0.0);
    CHECK(p->n_claims == 4 && p->assigned_load[0] == 3, "dsv3 cf: claims before capacity");

    /* the state accessor refuses other routers */
    r = make("base", &o, 2, 2, &rc);
    CHECK(rc == MOE_OK && moe_dsv3_bias_state(r) == NULL, "moe_dsv3_bias_state(base) is NULL");
    moe_router_free(r);
    moe_plan_free(p);
}

static void test_dsv3_batches(void)
{
    /* Many batches of a skewed distribution (N(0,1) logits minus 3 e/(E-1): low experts are
     * preferred), E = 8, k = 2, rate 0.01: the overloaded experts' bias falls, the
     * underloaded experts' rises, and the load imbalance falls. */
    enum { N = 512, E = 8, B = 120 };
    double *L = malloc(N * E * sizeof *L);
    moe_plan *p = moe_plan_alloc(N, E, 2 * N);
    gsl_rng *g = moe_rng_alloc(21, MOE_STREAM_TOKENS);
    moe_route_opts o = opts();
    o.bias_rate = 0.01;
    int rc;
    moe_router *r = make("dsv3_bias", &o, N, E, &rc);
    CHECK(rc == MOE_OK, "dsv3 alloc: %s", moe_errmsg());
    if (!r)
        goto out;
    double first = 0.0, last = 0.0;
    int route_bad = 0;
    for (int b = 0; b < B; b++) {
        for (int i = 0; i < N * E; i++)
            L[i] = gsl_ran_gaussian(g, 1.0) - 3.0 * (i % E) / (E - 1);
        moe_route_in in;
        memset(&in, 0, sizeof in);
        in.n = N;
        in.m = E;
        in.logits = L;
        if (moe_router_route(r, &in, p)) {
            route_bad++;
            break;
        }
        double ib = imbalance(p->assigned_load, E);
        if (b == 0)
            first = ib;
        if (b >= B - 10)
            last += ib / 10;
        r->type->observe(r, &in, p);
    }
    const double *bias = moe_dsv3_bias_state(r);
    CHECK(route_bad == 0, "dsv3 batches routed");
    CHECK(first > 1.5 && last < 1.2 && last < first,
          "dsv3: imbalance first batch %.3f, mean of the last 10 %.3f", first, last);
    CHECK(bias[0] < 0.0 && bias[E - 1] > 0.0 && bias[0] < bias[E - 1],
          "dsv3: bias of the preferred expert %.3f < 0 < bias of the least preferred %.3f",
          bias[0], bias[E - 1]);
    moe_router_free(r);
out:
    gsl_rng_free(g);
    moe_plan_free(p);
    free(L);
}

/* dsv3_bias against its definition, every expert scored: s = 1 / (1 + exp(-L)) with the C
 * library's exp, keys s + b, the k largest keys by a selection of the first largest (ties to
 * the lower expert), gates s over their sum in rank order. Rows of N(0, 1) logits, some with a
 * tie at the top, some near saturation (logits near 40, whose scores round to 1: the keys tie
 * but for the bias, and while the bias is narrow the router scores every expert of the row),
 * the bias moved by observe at a rate of 0.05 between batches so that it is wide and uneven;
 * E from 8 to 520 (multiples of 8 and not, the candidate path from 65 to 512 experts with
 * AVX2, 8 to 512 with AVX-512), k = 1, 2, 8. The experts and gates of every token must be the
 * reference's, bit for bit. */
static void test_dsv3_reference(void)
{
    static const int Es[] = {8, 64, 72, 100, 256, 520}, ks[] = {1, 2, 8};
    enum { N = 300, B = 4 };
    gsl_rng *g = moe_rng_alloc(33, MOE_STREAM_TOKENS);
    double *L = malloc((size_t)N * 520 * sizeof *L), s[520], key[520];
    moe_plan *p = moe_plan_alloc(N, 520, 8 * N);
    for (size_t ie = 0; ie < sizeof Es / sizeof *Es; ie++)
        for (size_t ik = 0; ik < sizeof ks / sizeof *ks; ik++) {
            const int E = Es[ie], k = ks[ik];
            moe_route_opts o = opts();
            o.k = k;
            o.bias_rate = 0.05;
            int rc, bad = 0, routed = 1;
            moe_router *r = make("dsv3_bias", &o, N, E, &rc);
            CHECK(rc == MOE_OK && r, "dsv3 E %d k %d alloc: %s", E, k, moe_errmsg());
            for (int b = 0; r && b < B && routed; b++) {
                for (int i = 0; i < N * E; i++) /* experts below E / 4 preferred */
                    L[i] = gsl_ran_gaussian(g, 1.0) + (i % E < E / 4 ? 0.5 : 0.0);
                for (int t = 0; t < N; t += 7) /* a tie at the top of every seventh row */
                    L[(size_t)t * E + E - 1] = L[(size_t)t * E + 1] = 3.0;
                for (int t = 3; t < N; t += 11) /* and near saturation */
                    for (int e = 0; e < E; e++)
                        L[(size_t)t * E + e] += 40.0;
                const double *bias = moe_dsv3_bias_state(r);
                moe_route_in in;
                memset(&in, 0, sizeof in);
                in.n = N;
                in.m = E;
                in.logits = L;
                if (moe_router_route(r, &in, p) != MOE_OK) {
                    routed = 0;
                    break;
                }
                int32_t ex[N][8];
                double gw[N][8];
                for (int t = 0; t < N; t++) {
                    const double *lt = L + (size_t)t * E;
                    for (int e = 0; e < E; e++) {
                        s[e] = 1.0 / (1.0 + exp(-lt[e]));
                        key[e] = s[e] + bias[e];
                    }
                    double sum = 0.0;
                    for (int j = 0; j < k; j++) {
                        int best = -1;
                        for (int e = 0; e < E; e++) {
                            int taken = 0;
                            for (int q = 0; q < j; q++)
                                taken |= ex[t][q] == e;
                            if (!taken && (best < 0 || key[e] > key[best]))
                                best = e;
                        }
                        ex[t][j] = best;
                        sum += s[best];
                    }
                    for (int j = 0; j < k; j++)
                        gw[t][j] = s[ex[t][j]] / sum;
                }
                int seen[N] = {0};
                for (size_t i = 0; i < p->n_entries; i++) {
                    const moe_entry *en = &p->entries[i];
                    int j = 0;
                    while (j < k && ex[en->token][j] != en->expert)
                        j++;
                    bad += j == k || memcmp(&en->combine_w, &gw[en->token][j], sizeof(double));
                    seen[en->token]++;
                }
                for (int t = 0; t < N; t++)
                    bad += seen[t] != k;
                r->type->observe(r, &in, p);
            }
            CHECK(routed && bad == 0, "dsv3 E %d k %d: %d entries or tokens unlike the "
                  "reference", E, k, bad);
            moe_router_free(r);
        }
    moe_plan_free(p);
    gsl_rng_free(g);
    free(L);
}

/* ---- dense ---- */

static void ref_softmax(const double *x, int len, double *p)
{
    double s = 0.0;
    for (int i = 0; i < len; i++)
        s += exp(x[i]);
    for (int i = 0; i < len; i++)
        p[i] = exp(x[i]) / s;
}

static void test_dense(void)
{
    moe_plan *p = moe_plan_alloc(2, 2, 16);
    moe_route_opts o = opts();

    /* L = [0, ln 3], [0, 0]: p = (1/4, 3/4), (1/2, 1/2); slot = token index, capacity n = 2,
     * assigned (2, 2), importance (3/4, 5/4), claims 4, k = E = 2. */
    const double L[] = {0, log(3.0), 0, 0};
    CHECK_INT(route("dense", &o, L, 2, 2, p), MOE_OK);
    const want_entry w[] = {{0, 0, 0, 0.25}, {0, 1, 0, 0.75}, {1, 0, 1, 0.5}, {1, 1, 1, 0.5}};
    check_entries("dense 2x2", p, w, 4, 1e-15);
    CHECK(p->capacity == 2 && p->k == 2 && p->n_claims == 4 && !p->dense &&
              p->assigned_load[0] == 2 && p->assigned_load[1] == 2 &&
              fabs(p->importance[0] - 0.75) < 1e-15 && fabs(p->importance[1] - 1.25) < 1e-15,
          "dense 2x2 statistics");
    moe_plan_free(p);

    /* k must be E or unset */
    moe_route_opts o3 = opts();
    o3.k = 3;
    int rc;
    moe_router *r = make("dense", &o3, 2, 4, &rc);
    CHECK(rc == MOE_EINPUT && !r, "dense k = 3 < E = 4: rc %d", rc);
    o3.k = 4;
    r = make("dense", &o3, 2, 4, &rc);
    CHECK(rc == MOE_OK && r, "dense k = E accepted");
    moe_router_free(r);

    /* weights = p, and the layer output is the dense mixture sum_e p[t,e] FFN_e(x_t) */
    enum { N = 40, E = 6, D = 8, F = 16 };
    gsl_rng *g = moe_rng_alloc(3, MOE_STREAM_TOKENS);
    double L2[N * E], pr[N * E], P[N * E];
    float x[N * D], w1[E * D * F], b1[E * F], w2[E * F * D], b2[E * D], y[N * D], ym[N * D];
    for (int i = 0; i < N * E; i++)
        L2[i] = gsl_ran_gaussian(g, 2.0);
    for (int i = 0; i < N * D; i++)
        x[i] = (float)gsl_ran_gaussian(g, 1.0);
    for (int i = 0; i < E * D * F; i++) {
        w1[i] = (float)gsl_ran_gaussian(g, 0.3);
        w2[i] = (float)gsl_ran_gaussian(g, 0.3);
    }
    for (int i = 0; i < E * F; i++)
        b1[i] = (float)gsl_ran_gaussian(g, 0.1);
    for (int i = 0; i < E * D; i++)
        b2[i] = (float)gsl_ran_gaussian(g, 0.1);
    p = moe_plan_alloc(N, E, N * E);
    CHECK_INT(route("dense", &o, L2, N, E, p), MOE_OK);
    int bad = 0;
    memset(P, 0, sizeof P);
    for (int t = 0; t < N; t++)
        ref_softmax(L2 + t * E, E, pr + t * E);
    for (size_t i = 0; i < p->n_entries; i++) {
        const moe_entry *en = &p->entries[i];
        bad += en->slot != en->token || en->dispatch_w != 1.0;
        P[en->token * E + en->expert] += en->combine_w;
    }
    CHECK(p->n_entries == N * E && bad == 0, "dense: %zu entries, %d with slot != token",
          p->n_entries, bad);
    check_close_arrays("dense combine weights vs softmax", P, pr, N * E, 1e-15, 1e-13);
    moe_experts ex = {E, D, F, MOE_ACT_GELU_TANH, w1, b1, w2, b2, NULL};
    moe_layer *ly = moe_layer_alloc(N, E, N, D, F, MOE_ACT_GELU_TANH);
    CHECK(ly != NULL, "layer alloc");
    if (ly) {
        CHECK_INT(moe_layer_forward(ly, &ex, p, x, y, NULL), MOE_OK);
        CHECK_INT(moe_layer_dense_mixture(ly, &ex, x, N, pr, NULL, N, ym), MOE_OK);
        double err = moe_rel_l2(y, ym, N * D);
        CHECK(err < 1e-5, "dense layer output vs dense mixture: rel. L2 %.3g (fp32)", err);
    }
    moe_layer_free(ly);
    moe_plan_free(p);
    gsl_rng_free(g);
}

int main(void)
{
    test_registry();
    test_base_hand();
    test_base_brute();
    test_base_large();
    test_base_random();
    test_sinkhorn_hand();
    test_sinkhorn_converged();
    test_dsv3_hand();
    test_dsv3_batches();
    test_dsv3_reference();
    test_dense();
    return check_report("test_routers_extra");
}
