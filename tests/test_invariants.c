/* test_invariants.c: properties every router in the registry must keep, looped over
 * moe_router_types (a new router is picked up without editing this file), on random logits of
 * several shapes and capacity factors:
 *   ids in range, 0 <= slot < capacity, no duplicate (token, expert) for sparse plans and no two
 *   entries in one (expert, slot), kept load <= capacity, finite weights, identical plans for
 *   identical seeds, and the metrics computed from the plan are finite; and a NaN or an
 *   infinity among the logits is the error "non-finite logit", on rows of 3, 8 and 64; and
 *   the check of the logits split over the routers' threads names the first non-finite one;
 *   and draws given with the logits (moe_route_in.uniforms) outside [0, 1) are refused, the
 *   first one named, whatever the router and wherever the draw falls (the vector lanes of
 *   four or the draws after them). */
#include "check.h"
#include "moe.h"
#include "../routers/par.h"

#include <gsl/gsl_randist.h>
#include <string.h>

typedef struct { int n, m, k; const char *cf; } shape;

static int plans_equal(const moe_plan *a, const moe_plan *b)
{
    if (a->n_entries != b->n_entries || a->capacity != b->capacity)
        return 0;
    for (size_t i = 0; i < a->n_entries; i++) {
        const moe_entry *x = &a->entries[i], *y = &b->entries[i];
        if (x->token != y->token || x->expert != y->expert || x->slot != y->slot ||
            x->dispatch_w != y->dispatch_w || x->combine_w != y->combine_w)
            return 0;
    }
    return 1;
}

/* route once with a fresh rng of (seed, stream 5); returns 0 on success */
static int route(const moe_router_type *t, const moe_route_opts *o, const shape *s,
                 const double *L, const int64_t *ids, uint64_t seed, moe_plan **out, int *E)
{
    moe_router *r = NULL;
    if (moe_router_alloc(t, o, s->n, s->m, &r))
        return -1;
    gsl_rng *rng = moe_rng_alloc(seed, MOE_STREAM_GSHARD);
    moe_plan *p = moe_plan_alloc(s->n, r->E, (size_t)s->n * (size_t)s->m);
    moe_route_in in = {s->n, s->m, L, ids, NULL, rng, NULL, NULL, 0, NULL, NULL};
    /* routers that replay recorded choices (replay) get the top-k of the logits as the record */
    int32_t *ch = NULL;
    if (t->flags & MOE_RF_NEEDS_CHOICES) {
        ch = malloc((size_t)s->n * (size_t)s->k * sizeof *ch);
        for (int i = 0; i < s->n; i++)
            for (int j = 0; j < s->k; j++) {
                int best = -1;
                for (int e = 0; e < s->m; e++) {
                    int used = 0;
                    for (int q = 0; q < j; q++)
                        used |= ch[(size_t)i * s->k + q] == e;
                    if (!used && (best < 0 || L[(size_t)i * s->m + e] > L[(size_t)i * s->m + best]))
                        best = e;
                }
                ch[(size_t)i * s->k + j] = best;
            }
        in.choices = ch;
        in.k_rec = s->k;
    }
    int rc = moe_router_route(r, &in, p);
    free(ch);
    *E = r->E;
    moe_router_free(r);
    gsl_rng_free(rng);
    if (rc) {
        moe_plan_free(p);
        return rc;
    }
    *out = p;
    return 0;
}

/* Router t on 64 tokens of N(0,1) logits with E = 8 and 64 (rows the vector exponentials take
 * whole, whose softmax tells the rows pass whether to look for non-finite logits) and one NaN,
 * +inf or -inf planted at a different place each time: the error "non-finite logit", as for
 * the NaN above; one check per (E, value). */
static void check_nonfinite_wide(const moe_router_type *t, gsl_rng *g)
{
    enum { N = 64 };
    static double L[N * 64];
    static int64_t ids[N];
    const double vals[3] = {NAN, INFINITY, -INFINITY};
    for (int i = 0; i < N; i++)
        ids[i] = i;
    for (int E = 8; E <= 64; E *= 8)
        for (int v = 0; v < 3; v++) {
            moe_route_opts o;
            moe_route_opts_default(&o);
            moe_router *r = NULL;
            if (moe_router_alloc(t, &o, N, E, &r)) {
                CHECK(0, "%s alloc E = %d: %s", t->name, E, moe_errmsg());
                moe_clear_error();
                continue;
            }
            for (int i = 0; i < N * E; i++)
                L[i] = gsl_ran_ugaussian(g);
            const int at = (int)gsl_rng_uniform_int(g, (unsigned long)(N * E));
            L[at] = vals[v];
            moe_plan *p = moe_plan_alloc(N, r->E, (size_t)N * E);
            moe_route_in in = {N, E, L, ids, NULL, g, NULL, NULL, 0, NULL, NULL};
            moe_clear_error();
            const int rc = moe_router_route(r, &in, p);
            CHECK(rc == MOE_EINPUT && strstr(moe_errmsg(), "non-finite logit"),
                  "%s E = %d, %g at token %d, column %d: rc %d, %s", t->name, E, vals[v],
                  at / E, at % E, rc, moe_errmsg());
            moe_clear_error();
            moe_router_free(r);
            moe_plan_free(p);
        }
}

/* moe_logits_check_finite with every thread taking a part (grain 1): 300 tokens of 7 finite
 * logits pass; with a NaN at element 1500 (token 214, column 2) and an infinity after it, in
 * the last part, or with an infinity at element 5 of the first, the message names that first
 * one (the scan on one thread that found it before). */
static void check_finite_parts(void)
{
    enum { N = 300, M = 7 };
    static double L[N * M];
    for (int i = 0; i < N * M; i++)
        L[i] = 0.001 * i - 1.0;
    moe_par_set_grain(1);
    CHECK_INT(moe_logits_check_finite(L, N, M), MOE_OK);
    L[1500] = NAN;
    L[1700] = INFINITY;
    moe_clear_error();
    CHECK(moe_logits_check_finite(L, N, M) == MOE_EINPUT &&
              strstr(moe_errmsg(), "at token 214, column 2"),
          "NaN at 1500 and inf at 1700: %s", moe_errmsg());
    L[5] = -INFINITY;
    moe_clear_error();
    CHECK(moe_logits_check_finite(L, N, M) == MOE_EINPUT &&
              strstr(moe_errmsg(), "at token 0, column 5"),
          "-inf at 5 before them: %s", moe_errmsg());
    moe_clear_error();
    moe_par_set_grain(0);
}

/* The draws u (N) with the logits: each bad value, alone at several places (in a block of
 * four, in the last draws past the blocks), makes the route fail naming it; the draws with
 * 0, -0.0 and the largest double below 1 pass. */
static void check_uniforms(void)
{
    enum { N = 39, E = 4 };
    static const double bad[] = {1.0, -1e-300, NAN, INFINITY, 2.0};
    static const int at[] = {0, 5, 35, 38};
    double L[N * E], u[N];
    for (int i = 0; i < N * E; i++)
        L[i] = 0.01 * i;
    moe_route_opts o;
    moe_route_opts_default(&o);
    o.k = 1;
    moe_router *r = NULL;
    moe_plan *plan = moe_plan_alloc(N, E, N + 16);
    CHECK_INT(moe_router_alloc(moe_router_find("switch"), &o, N, E, &r), MOE_OK);
    int wrong = 0;
    for (size_t b = 0; b < sizeof bad / sizeof bad[0]; b++)
        for (size_t a = 0; a < sizeof at / sizeof at[0]; a++) {
            for (int i = 0; i < N; i++)
                u[i] = i == 3 ? -0.0 : i == 4 ? nextafter(1.0, 0.0) : 0.5;
            u[at[a]] = bad[b];
            char want[64];
            snprintf(want, sizeof want, "at token %d is outside [0, 1)", at[a]);
            moe_route_in in = {N, E, L, NULL, u, NULL, NULL, NULL, 0, NULL, NULL};
            moe_clear_error();
            wrong += moe_router_route(r, &in, plan) != MOE_EINPUT || !strstr(moe_errmsg(), want);
        }
    for (int i = 0; i < N; i++)
        u[i] = i == 3 ? -0.0 : i == 4 ? nextafter(1.0, 0.0) : 0.0;
    moe_route_in in = {N, E, L, NULL, u, NULL, NULL, NULL, 0, NULL, NULL};
    CHECK_INT(moe_router_route(r, &in, plan), MOE_OK);
    CHECK(wrong == 0, "%d of 20 draws outside [0, 1) not refused with their token named", wrong);
    moe_router_free(r);
    moe_plan_free(plan);
    moe_clear_error();
}

int main(void)
{
    const shape shapes[] = {
        {1, 4, 1, "1.0"}, {7, 3, 2, "1.0"}, {64, 8, 2, "1.25"}, {100, 10, 1, "1.1"},
        {33, 4, 4, "0.5"}, {256, 16, 2, "0.0"}, {50, 6, 2, "8"},
    };
    gsl_rng *g = moe_rng_alloc(2024, MOE_STREAM_TOKENS);
    int routers = 0;
    for (int ri = 0; moe_router_types[ri]; ri++) {
        const moe_router_type *t = moe_router_types[ri];
        routers++;
        int bad_range = 0, bad_dup = 0, bad_load = 0, bad_w = 0, bad_repro = 0, bad_metric = 0;
        int routed = 0;
        for (size_t si = 0; si < sizeof shapes / sizeof *shapes; si++) {
            shape s = shapes[si];
            moe_route_opts o;
            moe_route_opts_default(&o);
            if (moe_decimal_parse(s.cf, &o.cf_num, &o.cf_den))
                return 2;
            o.cf_set = 1;
            o.k = s.k;
            if (t->flags & MOE_RF_DENSE)
                o.k = 0;
            double *L = malloc((size_t)s.n * (size_t)s.m * sizeof *L);
            int64_t *ids = malloc((size_t)s.n * sizeof *ids);
            for (int i = 0; i < s.n * s.m; i++)
                L[i] = gsl_ran_gaussian(g, 2.0);
            for (int i = 0; i < s.n; i++)
                ids[i] = (int64_t)gsl_rng_uniform_int(g, 1000);
            moe_plan *p = NULL, *q = NULL;
            int E = 0;
            if (route(t, &o, &s, L, ids, 99, &p, &E)) {
                /* a router may refuse a k it does not support (switch, gshard, hash):
                 * retry with its own default k */
                moe_clear_error();
                o.k = 0;
                if (route(t, &o, &s, L, ids, 99, &p, &E)) {
                    CHECK(0, "%s on shape %zu: %s", t->name, si, moe_errmsg());
                    moe_clear_error();
                    free(L);
                    free(ids);
                    continue;
                }
            }
            routed++;
            long *kept = calloc((size_t)E, sizeof *kept);
            char *pair = calloc((size_t)s.n * (size_t)E, 1);
            char *slot = calloc((size_t)E * (size_t)(p->capacity > 0 ? p->capacity : 1), 1);
            for (size_t i = 0; i < p->n_entries; i++) {
                const moe_entry *en = &p->entries[i];
                if (en->token < 0 || en->token >= s.n || en->expert < 0 || en->expert >= E ||
                    en->slot < 0 || en->slot >= p->capacity) {
                    bad_range++;
                    continue;
                }
                size_t pi = (size_t)en->token * (size_t)E + (size_t)en->expert;
                size_t sl = (size_t)en->expert * (size_t)p->capacity + (size_t)en->slot;
                if ((!p->dense && pair[pi]) || (!p->dense && slot[sl]))
                    bad_dup++;
                pair[pi] = slot[sl] = 1;
                kept[en->expert]++;
                if (!isfinite(en->dispatch_w) || !isfinite(en->combine_w))
                    bad_w++;
            }
            for (int e = 0; e < E; e++)
                if (!p->dense && kept[e] > p->capacity)
                    bad_load++;
            if (route(t, &o, &s, L, ids, 99, &q, &E) || !plans_equal(p, q))
                bad_repro++;
            moe_metrics *mt = moe_metrics_alloc(E);
            if (!mt || moe_metrics_compute(p, L, 8, 16, MOE_ACT_GELU_TANH, 1, mt) ||
                !isfinite(mt->load_imbalance) || !isfinite(mt->importance_cv2) ||
                !isfinite(mt->z_loss) || !isfinite(mt->aux_loss))
                bad_metric++;
            moe_metrics_free(mt);
            free(kept);
            free(pair);
            free(slot);
            moe_plan_free(p);
            moe_plan_free(q);
            free(L);
            free(ids);
        }
        CHECK(routed == (int)(sizeof shapes / sizeof *shapes), "%s routed %d shapes", t->name,
              routed);
        CHECK(bad_range == 0, "%s: %d entries out of range", t->name, bad_range);
        CHECK(bad_dup == 0, "%s: %d duplicate (token, expert) or (expert, slot)", t->name, bad_dup);
        CHECK(bad_load == 0, "%s: %d experts over capacity", t->name, bad_load);
        CHECK(bad_w == 0, "%s: %d non-finite weights", t->name, bad_w);
        CHECK(bad_repro == 0, "%s: %d plans differ for the same seed", t->name, bad_repro);
        CHECK(bad_metric == 0, "%s: %d plans with bad metrics", t->name, bad_metric);
    }
    CHECK(routers >= 6, "registry holds %d routers", routers);

    /* input validation shared by all routers: NaN logits, k > E, n = 0 */
    for (int ri = 0; moe_router_types[ri]; ri++) {
        const moe_router_type *t = moe_router_types[ri];
        moe_route_opts o;
        moe_route_opts_default(&o);
        moe_router *r = NULL;
        double L[6] = {0.1, 0.2, NAN, 0.4, 0.5, 0.6};
        int64_t ids[2] = {1, 2};
        int rc = moe_router_alloc(t, &o, 2, 3, &r);
        CHECK(rc == 0, "%s alloc: %s", t->name, moe_errmsg());
        if (rc) {
            moe_clear_error();
            continue;
        }
        moe_plan *p = moe_plan_alloc(2, r->E, 8);
        moe_route_in in = {2, 3, L, ids, NULL, g, NULL, NULL, 0, NULL, NULL};
        moe_clear_error();
        rc = moe_router_route(r, &in, p);
        CHECK(rc == MOE_EINPUT && strstr(moe_errmsg(), "non-finite logit"),
              "%s NaN: rc %d, %s", t->name, rc, moe_errmsg());
        moe_clear_error();
        check_nonfinite_wide(t, g);
        in.n = 0;
        rc = moe_router_route(r, &in, p);
        CHECK(rc == MOE_EINPUT, "%s n = 0: rc %d", t->name, rc);
        moe_clear_error();
        moe_router_free(r);
        moe_plan_free(p);
        o.k = 4; /* k > E = 3 */
        rc = moe_router_alloc(t, &o, 2, 3, &r);
        CHECK(rc == MOE_EINPUT && r == NULL, "%s k > E: rc %d", t->name, rc);
        moe_clear_error();
    }
    check_finite_parts();
    check_uniforms();
    gsl_rng_free(g);
    return check_report("test_invariants");
}
