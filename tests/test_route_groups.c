/* test_route_groups.c: routing groups (group_size), mode eval, order rts from the stream and
 * input jitter.
 *
 * Groups, registry-wide: for every router of moe_router_types, routing n = 24 tokens with
 * group_size 8 gives exactly the plan of routing the three groups of 8 one after the other (a
 * router without groups, the same generator continuing from group to group) and concatenating
 * them with token + 8g and slot + C*g (C the largest capacity of a group), capacity 3C, loads,
 * importance and claims summed, aux_loss the mean of the groups'. That is the definition of the
 * wrapper; the hand-worked cases below check the groups' capacity rule itself.
 *
 * Hand-worked (8 tokens, 4 experts, one-hot logits 2 on the expert of each token:
 * experts 0 1 0 0 | 2 3 0 1, switch, cf 1):
 *   no groups: C = ceil(8/4) = 2; expert 0 is claimed by tokens 0, 2, 3, 6: 3 and 6 dropped.
 *   G = 4: C = ceil(4/4) = 1 per group; group 0 keeps 0 (e0) and 1 (e1) and drops 2, 3; group 1
 *   keeps all four at slot 1*1 + 0 = 1; capacity 2.
 *   G = 2: C = ceil(2/4) = 1; groups (0,1) (2,3) (4,5) (6,7): token 3 dropped; slots 0 0 1 2 2
 *   3 3, capacity 4.
 *   expert_choice, G = 4: C = ceil(4/4) = 1 per group, each expert takes the token of the group
 *   with the largest p: group 0: e0 token 0 (ties to the lower token), e1 token 1, e2 and e3
 *   (p equal over the group's tokens 0..3 for e2: every token has p = 1/(3+e^2) there) token
 *   0; so the entries of group 0 are e0 t0, e1 t1, e2 t0, e3 t0, slots 0; group 1 (tokens
 *   4..7): e0 t6, e1 t7, e2 t4, e3 t5, slot 1.
 *   soft_moe, P = 1, G = 4: every token of a group mixes into its group's slot only: the entries
 *   of token t have slot t / 4, capacity 2.
 * Mode eval: capacity_factor 1, capacity_factor_eval 2: the switch plan above keeps all 8
 * tokens (C = ceil(8*2/4) = 4); mode train keeps 6.
 * Order rts without a file: the keys are gsl_rng_uniform_pos of the router's stream, row-major
 * (T,E), drawn before the router's own draws: given as rts_u they give the same plan.
 * Jitter through the pipeline: x (4,2) = (1,0) (0,1) (1,1) (2,-1), Wg (2,2) = (1,-1; 0,2):
 * logits (1,-1) (0,2) (1,1) (2,-4); eps 0.5 and draws u = 0.5 everywhere except token 2's
 * (0, 0.75): factors 1 and (0.5, 1.25), so token 2's gate input is (0.5, 1.25) and its logits
 * (0.5, 2.0); the experts see x unchanged. Stream draws (gsl_rng_uniform row-major from the
 * router's stream) replay from the file. */
#include "check.h"
#include "jitter.h"
#include "moe.h"
#include "options.h"
#include "pipeline.h"

#include <stdlib.h>
#include <string.h>

enum { N = 24, G = 8, M = 4, KREC = 2 };

static int same_entries(const moe_entry *a, const moe_entry *b)
{
    return a->token == b->token && a->expert == b->expert && a->slot == b->slot &&
           a->dispatch_w == b->dispatch_w && a->combine_w == b->combine_w;
}

static void fill_inputs(double *L, int64_t *ids, int32_t *ch, double *cw, double *u)
{
    gsl_rng *g = moe_rng_alloc(11, MOE_STREAM_TOKENS);
    for (int i = 0; i < N * M; i++)
        L[i] = 2.0 * gsl_rng_uniform(g) - 1.0;
    for (int t = 0; t < N; t++) {
        ids[t] = (int64_t)gsl_rng_uniform_int(g, 50);
        ch[t * KREC] = (int32_t)gsl_rng_uniform_int(g, M);
        ch[t * KREC + 1] = (ch[t * KREC] + 1 + (int32_t)gsl_rng_uniform_int(g, M - 1)) % M;
        cw[t * KREC] = 0.6;
        cw[t * KREC + 1] = 0.4;
        u[t] = gsl_rng_uniform(g);
    }
    gsl_rng_free(g);
}

/* The routing input of rows r0 .. r0+n-1. */
static moe_route_in rows_input(const double *L, const int64_t *ids, const int32_t *ch,
                               const double *cw, const double *u, int r0, int n, gsl_rng *rng)
{
    moe_route_in in = {n, M, L + (size_t)r0 * M, ids + r0, u + r0, rng, ch + (size_t)r0 * KREC,
                       cw + (size_t)r0 * KREC, KREC, NULL, NULL};
    return in;
}

static void test_registry(void)
{
    static double L[N * M], cw[N * KREC], u[N];
    static int64_t ids[N];
    static int32_t ch[N * KREC];
    fill_inputs(L, ids, ch, cw, u);
    int routers = 0, compared = 0;
    for (int i = 0; moe_router_types[i]; i++, routers++) {
        const moe_router_type *t = moe_router_types[i];
        for (int variant = 0; variant < 2; variant++) {
            moe_route_opts o;
            moe_route_opts_default(&o);
            if (t->flags & MOE_RF_NO_CAPACITY || t->flags & MOE_RF_DENSE)
                variant = 1; /* one run: the capacity factor does not apply */
            else if (variant == 0)
                moe_route_opts_set(&o, "capacity_factor", "0.75");
            if (!strcmp(t->name, "topk") && variant == 0)
                o.noise_std = 0.5; /* the noise draws go group after group too */
            moe_route_opts sep = o;
            o.group_size = G;
            moe_router *rg = NULL, *rs = NULL;
            int rc = moe_router_alloc(t, &o, N, M, &rg);
            if (!rc)
                rc = moe_router_alloc(t, &sep, G, M, &rs);
            CHECK(rc == MOE_OK, "%s: alloc: %s", t->name, moe_errmsg());
            if (rc) {
                moe_router_free(rg);
                continue;
            }
            /* gshard: the stream's u for the random policy (no uniforms given) */
            const double *uu = strcmp(t->name, "gshard") ? u : NULL;
            gsl_rng *g1 = moe_rng_alloc(5, moe_router_stream(t));
            gsl_rng *g2 = moe_rng_alloc(5, moe_router_stream(t));
            moe_plan *pg = moe_plan_alloc(N, rg->E, (size_t)N * M);
            moe_plan *ps[N / G];
            moe_route_in in = rows_input(L, ids, ch, cw, u, 0, N, g1);
            in.uniforms = uu;
            rc = moe_router_route(rg, &in, pg);
            CHECK(rc == MOE_OK, "%s: grouped: %s", t->name, moe_errmsg());
            long C = 0;
            for (int g = 0; g < N / G; g++) {
                ps[g] = moe_plan_alloc(G, rs->E, (size_t)G * M);
                moe_route_in q = rows_input(L, ids, ch, cw, u, g * G, G, g2);
                q.uniforms = uu ? uu + g * G : NULL;
                CHECK(moe_router_route(rs, &q, ps[g]) == MOE_OK, "%s group %d: %s", t->name, g,
                      moe_errmsg());
                if (ps[g]->capacity > C)
                    C = ps[g]->capacity;
            }
            size_t at = 0;
            int same = rc == MOE_OK, loads = 1;
            double aux = 0.0;
            long claims = 0, rank[4] = {0, 0, 0, 0};
            for (int g = 0; g < N / G && same; g++) {
                for (size_t j = 0; j < ps[g]->n_entries && same; j++, at++) {
                    moe_entry e = ps[g]->entries[j];
                    e.token += g * G;
                    e.slot += (int32_t)(g * C);
                    same = at < pg->n_entries && same_entries(&e, &pg->entries[at]);
                }
                aux += ps[g]->aux_loss / (N / G);
                claims += ps[g]->n_claims;
                for (int j = 0; j < 2; j++) {
                    rank[j] += ps[g]->rank_claims[j];
                    rank[2 + j] += ps[g]->rank_kept[j];
                }
            }
            for (int e = 0; e < rg->E && same; e++) {
                long a = 0;
                double im = 0.0;
                for (int g = 0; g < N / G; g++) {
                    a += ps[g]->assigned_load[e];
                    im += ps[g]->importance[e];
                }
                loads = loads && a == pg->assigned_load[e] && im == pg->importance[e];
            }
            CHECK(same && at == pg->n_entries, "%s (variant %d): grouped plan = the groups "
                  "routed one by one", t->name, variant);
            compared += same && at == pg->n_entries && at > 0;
            CHECK(pg->capacity == 3 * C, "%s: capacity %ld = 3 x %ld", t->name, pg->capacity, C);
            CHECK(loads && claims == pg->n_claims, "%s: loads, importance, claims summed",
                  t->name);
            CHECK(rank[0] == pg->rank_claims[0] && rank[1] == pg->rank_claims[1] &&
                      rank[2] == pg->rank_kept[0] && rank[3] == pg->rank_kept[1],
                  "%s: claims and kept claims per choice rank summed over the groups", t->name);
            CHECK_NEAR(pg->aux_loss, aux, 1e-15 * (1.0 + fabs(aux)));
            /* the plan format: 0 <= slot < capacity, tokens in range, and a sparse plan's
             * (expert, slot) pairs distinct */
            int fmt = 1;
            for (size_t a = 0; a < pg->n_entries && fmt; a++) {
                const moe_entry *x = &pg->entries[a];
                fmt = x->slot >= 0 && x->slot < pg->capacity && x->token >= 0 && x->token < N &&
                      x->expert >= 0 && x->expert < rg->E;
                for (size_t b2 = a + 1; fmt && !pg->dense && b2 < pg->n_entries; b2++)
                    fmt = !(pg->entries[b2].expert == x->expert && pg->entries[b2].slot == x->slot);
            }
            CHECK(fmt, "%s: grouped plan keeps the plan format", t->name);
            for (int g = 0; g < N / G; g++)
                moe_plan_free(ps[g]);
            moe_plan_free(pg);
            gsl_rng_free(g1);
            gsl_rng_free(g2);
            moe_router_free(rg);
            moe_router_free(rs);
        }
    }
    CHECK(routers >= 13 && compared >= routers, "%d routers, %d non-empty plans compared",
          routers, compared);
}

/* The 8-token one-hot example of the header. */
static const double L8[8 * 4] = {2, 0, 0, 0, 0, 2, 0, 0, 2, 0, 0, 0, 2, 0, 0, 0,
                                 0, 0, 2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 2, 0, 0};

static moe_plan *route8(const char *router, moe_route_opts *o, const double *rts, gsl_rng *rng)
{
    moe_router *r = NULL;
    moe_plan *p = moe_plan_alloc(8, 4, 64);
    moe_route_in in = {8, 4, L8, NULL, NULL, rng, NULL, NULL, 0, NULL, rts};
    int rc = moe_router_alloc(moe_router_find(router), o, 8, 4, &r);
    if (!rc)
        rc = moe_router_route(r, &in, p);
    CHECK(rc == MOE_OK, "%s: %s", router, moe_errmsg());
    moe_router_free(r);
    return p;
}

/* entries (token, expert, slot) of p in order equal want (n triples) */
static void expect_plan(const char *what, const moe_plan *p, const int *want, size_t n, long C)
{
    int ok = p->n_entries == n && p->capacity == C;
    for (size_t i = 0; ok && i < n; i++)
        ok = p->entries[i].token == want[3 * i] && p->entries[i].expert == want[3 * i + 1] &&
             p->entries[i].slot == want[3 * i + 2];
    CHECK(ok, "%s: %zu entries, capacity %ld (want %zu, %ld)", what, p->n_entries, p->capacity,
          n, C);
}

static void test_hand_worked(void)
{
    moe_route_opts o;
    moe_route_opts_default(&o);
    moe_plan *p = route8("switch", &o, NULL, NULL);
    static const int none[] = {0, 0, 0, 1, 1, 0, 2, 0, 1, 4, 2, 0, 5, 3, 0, 7, 1, 1};
    expect_plan("switch, no groups", p, none, 6, 2);
    moe_plan_free(p);
    o.group_size = 4;
    p = route8("switch", &o, NULL, NULL);
    static const int g4[] = {0, 0, 0, 1, 1, 0, 4, 2, 1, 5, 3, 1, 6, 0, 1, 7, 1, 1};
    expect_plan("switch, G = 4", p, g4, 6, 2);
    moe_plan_free(p);
    o.group_size = 2;
    p = route8("switch", &o, NULL, NULL);
    static const int g2[] = {0, 0, 0, 1, 1, 0, 2, 0, 1, 4, 2, 2, 5, 3, 2, 6, 0, 3, 7, 1, 3};
    expect_plan("switch, G = 2", p, g2, 7, 4);
    moe_plan_free(p);

    o.group_size = 4;
    p = route8("expert_choice", &o, NULL, NULL);
    /* expert_choice emits by expert, then by slot */
    int ok = p->capacity == 2 && p->n_entries == 8;
    static const int ec[8][3] = {{0, 0, 0}, {1, 1, 0}, {0, 2, 0}, {0, 3, 0},
                                 {6, 0, 1}, {7, 1, 1}, {4, 2, 1}, {5, 3, 1}};
    for (int i = 0; ok && i < 8; i++) {
        int found = 0;
        for (size_t j = 0; j < p->n_entries; j++)
            found |= p->entries[j].token == ec[i][0] && p->entries[j].expert == ec[i][1] &&
                     p->entries[j].slot == ec[i][2];
        ok = found;
    }
    CHECK(ok, "expert_choice, G = 4: one token per expert and group, slot = group");
    moe_plan_free(p);

    moe_route_opts s;
    moe_route_opts_default(&s);
    s.group_size = 4;
    p = route8("soft_moe", &s, NULL, NULL);
    ok = p->capacity == 2 && p->n_entries == 32 && p->dense;
    for (size_t j = 0; ok && j < p->n_entries; j++)
        ok = p->entries[j].slot == p->entries[j].token / 4;
    CHECK(ok, "soft_moe, G = 4: each token in its group's slot (capacity %ld, %zu entries)",
          p->capacity, p->n_entries);
    moe_plan_free(p);

    /* mode eval: capacity_factor_eval 2 keeps every token; mode train keeps 6 */
    moe_route_opts e;
    moe_route_opts_default(&e);
    CHECK(!moe_route_opts_set(&e, "capacity_factor_eval", "2"), "%s", moe_errmsg());
    p = route8("switch", &e, NULL, NULL);
    CHECK(p->n_entries == 6 && p->capacity == 2, "train: %zu entries", p->n_entries);
    moe_plan_free(p);
    e.mode = MOE_MODE_EVAL;
    p = route8("switch", &e, NULL, NULL);
    CHECK(p->n_entries == 8 && p->capacity == 4, "eval: %zu entries, C %ld", p->n_entries,
          p->capacity);
    moe_plan_free(p);

    /* n not divisible by G: refused at allocation and at routing */
    moe_router *r = NULL;
    o.group_size = 3;
    moe_clear_error();
    CHECK_INT(moe_router_alloc(moe_router_find("switch"), &o, 8, 4, &r), MOE_EINPUT);
    CHECK(!strcmp(moe_errmsg(), "group_size 3 does not divide the 8 tokens (router switch)"),
          "'%s'", moe_errmsg());
    o.group_size = 4;
    CHECK_INT(moe_router_alloc(moe_router_find("switch"), &o, 8, 4, &r), MOE_OK);
    moe_plan *q = moe_plan_alloc(8, 4, 64);
    moe_route_in in6 = {6, 4, L8, NULL, NULL, NULL, NULL, NULL, 0, NULL, NULL};
    moe_clear_error();
    CHECK_INT(moe_router_route(r, &in6, q), MOE_EINPUT);
    CHECK(!strcmp(moe_errmsg(), "group_size 4 does not divide the 6 tokens (router switch)"),
          "'%s'", moe_errmsg());
    moe_clear_error();
    moe_plan_free(q);
    moe_router_free(r);
}

static void test_rts_stream(void)
{
    moe_route_opts o;
    moe_route_opts_default(&o);
    o.order = MOE_ORDER_RTS;
    static const char *const routers[] = {"switch", "topk", "gshard", "sinkhorn"};
    for (size_t i = 0; i < sizeof routers / sizeof *routers; i++) {
        const moe_router_type *t = moe_router_find(routers[i]);
        gsl_rng *a = moe_rng_alloc(3, moe_router_stream(t));
        gsl_rng *b = moe_rng_alloc(3, moe_router_stream(t));
        double keys[8 * 4];
        for (int j = 0; j < 8 * 4; j++)
            keys[j] = gsl_rng_uniform_pos(b);
        moe_route_opts c = o;
        if (!strcmp(routers[i], "sinkhorn"))
            moe_route_opts_set(&c, "capacity_factor", "1"); /* dropless otherwise */
        moe_plan *drawn = route8(routers[i], &c, NULL, a);
        moe_plan *given = route8(routers[i], &c, keys, b); /* b continues as a did */
        int same = drawn->n_entries == given->n_entries && drawn->capacity == given->capacity;
        for (size_t j = 0; same && j < drawn->n_entries; j++)
            same = same_entries(&drawn->entries[j], &given->entries[j]);
        CHECK(same, "%s: rts keys from the stream = the same keys given", routers[i]);
        moe_plan_free(drawn);
        moe_plan_free(given);
        gsl_rng_free(a);
        gsl_rng_free(b);
    }
    /* no keys and no generator: one-line error */
    moe_router *r = NULL;
    CHECK_INT(moe_router_alloc(moe_router_find("switch"), &o, 8, 4, &r), MOE_OK);
    moe_plan *p = moe_plan_alloc(8, 4, 64);
    moe_route_in in = {8, 4, L8, NULL, NULL, NULL, NULL, NULL, 0, NULL, NULL};
    moe_clear_error();
    CHECK_INT(moe_router_route(r, &in, p), MOE_EINVAL);
    CHECK(!strcmp(moe_errmsg(), "claim order rts needs its draws (order)"), "'%s'",
          moe_errmsg());
    moe_clear_error();
    moe_plan_free(p);
    moe_router_free(r);
}

/* One batch of the jitter example through the pipeline; logits out (4,2), plan entries. */
static void jitter_batch(const moe_route_opts *o, const double *u, uint64_t seed, double *lg,
                         int *expert)
{
    static const float x[8] = {1, 0, 0, 1, 1, 1, 2, -1}, wg[4] = {1, -1, 0, 2};
    static float w1[2 * 2 * 3], b1[2 * 3], w2[2 * 3 * 2], b2[2 * 2];
    for (int i = 0; i < 12; i++)
        w1[i] = w2[i] = 0.25f * (float)(i % 5) - 0.5f;
    const moe_experts ex = {2, 2, 3, MOE_ACT_RELU, w1, b1, w2, b2, NULL};
    moe_pipeline_cfg cfg = {.rtype = moe_router_find("topk"), .opts = o, .T = 4, .M = 2,
                            .w = &ex, .wg = wg, .seed = seed, .label = "jitter test",
                            .flags = MOE_PIPE_LAYER | MOE_PIPE_METRICS};
    moe_pipeline *p = NULL;
    int rc = moe_pipeline_alloc(&cfg, &p);
    if (!rc) {
        moe_pipeline_set_jitter_draws(p, u);
        moe_batch b = {0};
        b.n = 4, b.d = 2, b.m = 2, b.x = (float *)x;
        rc = moe_pipeline_run_batch(p, &b, NULL, NULL);
    }
    CHECK(rc == MOE_OK, "jitter batch: %s", moe_errmsg());
    if (!rc) {
        memcpy(lg, moe_pipeline_logits(p), 8 * sizeof *lg);
        const moe_plan *pl = moe_pipeline_plan(p);
        for (int t = 0; t < 4; t++)
            expert[t] = -1;
        for (size_t i = 0; i < pl->n_entries; i++)
            expert[pl->entries[i].token] = pl->entries[i].expert;
    }
    moe_pipeline_free(p);
}

static void test_jitter(void)
{
    moe_route_opts o;
    moe_route_opts_default(&o);
    o.k = 1;
    o.dropless = 1;
    double lg[8], lg2[8];
    int ex[4], ex2[4];
    jitter_batch(&o, NULL, 1, lg, ex);
    static const double plain[8] = {1, -1, 0, 2, 1, 1, 2, -4};
    check_close_arrays("logits without jitter", lg, plain, 8, 0, 0);
    o.jitter = 0.5;
    static const double u[8] = {0.5, 0.5, 0.5, 0.5, 0.0, 0.75, 0.5, 0.5};
    jitter_batch(&o, u, 1, lg, ex);
    static const double jit[8] = {1, -1, 0, 2, 0.5, 2.0, 2, -4};
    check_close_arrays("logits with jitter", lg, jit, 8, 0, 0);
    CHECK(ex[2] == 1 && ex[0] == 0 && ex[3] == 0, "token 2 moves to expert 1 (%d)", ex[2]);
    /* the stream's draws replay from a file holding them */
    double su[8];
    gsl_rng *g = moe_rng_alloc(9, moe_router_stream(moe_router_find("topk")));
    for (int i = 0; i < 8; i++)
        su[i] = gsl_rng_uniform(g);
    gsl_rng_free(g);
    jitter_batch(&o, NULL, 9, lg, ex);
    jitter_batch(&o, su, 9, lg2, ex2);
    check_close_arrays("stream jitter = its draws given", lg, lg2, 8, 0, 0);
    CHECK(memcmp(ex, ex2, sizeof ex) == 0, "same plan");
    CHECK(lg[0] != 1.0, "the stream's jitter moved logit [0,0] (%g)", lg[0]);
    /* mode eval turns the jitter off */
    o.mode = MOE_MODE_EVAL;
    jitter_batch(&o, NULL, 9, lg, ex);
    check_close_arrays("eval: no jitter", lg, plain, 8, 0, 0);
    /* a draw outside [0,1) is refused */
    float xj[2];
    const float x2[2] = {1, 1};
    const double badu[2] = {0.5, 1.0};
    moe_clear_error();
    CHECK_INT(moe_jitter_apply(x2, 1, 2, 0.1, badu, NULL, xj), MOE_EINPUT);
    CHECK(!strcmp(moe_errmsg(), "jitter draw 1 at token 0, column 1 is outside [0, 1)"), "'%s'",
          moe_errmsg());
    moe_clear_error();
}

int main(void)
{
    test_registry();
    test_hand_worked();
    test_rts_stream();
    test_jitter();
    return check_report("test_route_groups");
}
