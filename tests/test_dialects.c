/* test_dialects.c: the libraries' random rules replay draw for draw. Without a file, gshard's
 * second_policy sampling and switch's select rsample draw one gsl_rng_uniform_pos per
 * (token, expert), row-major, from the generator they are given; the same values given as
 * in->gumbel_u must give the same plan entry for entry (the fixtures dialect_* check the rules
 * themselves against tests/ref/dialects.py). Also hand-worked: capacity_multiple rounds C up
 * after min_capacity (2*10*1.0/4 = 5 -> 8 with multiple 4; explicit capacity 5 stays 5), and
 * the threshold policy keeps a second choice only when g2 > threshold (logits (0, log 0.25,
 * -30): p ratio 1 : 0.25, g2 = 0.25/1.25 = 0.2: dropped at threshold 0.21, kept at 0.19). */
#include "check.h"
#include "moe.h"
#include "options.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

enum { N = 200, E = 8 };

static double L[N * E], G[N * E];

static moe_plan *route(const char *name, const moe_route_opts *o, const double *gu, gsl_rng *g,
                       int n, int e, const double *logits)
{
    moe_router *r = NULL;
    moe_plan *p = moe_plan_alloc(n, e, (size_t)n * 2);
    moe_route_in in = {n, e, logits, NULL, NULL, g, NULL, NULL, 0, gu, NULL};
    int rc = moe_router_alloc(moe_router_find(name), o, n, e, &r);
    if (!rc)
        rc = moe_router_route(r, &in, p);
    CHECK(rc == MOE_OK, "%s: %s", name, moe_errmsg());
    moe_router_free(r);
    return p;
}

static int same_plan(const moe_plan *a, const moe_plan *b)
{
    if (a->n_entries != b->n_entries || a->capacity != b->capacity)
        return 0;
    for (size_t i = 0; i < a->n_entries; i++) {
        const moe_entry *x = &a->entries[i], *y = &b->entries[i];
        if (x->token != y->token || x->expert != y->expert || x->slot != y->slot ||
            x->combine_w != y->combine_w)
            return 0;
    }
    return 1;
}

static void test_replay(const char *name, const char *key, int value)
{
    moe_route_opts o;
    moe_route_opts_default(&o);
    if (!strcmp(key, "second_policy"))
        o.second_policy = value;
    else
        o.select = value;
    gsl_rng *g = moe_rng_alloc(7, MOE_STREAM_NOISE);
    gsl_rng *h = moe_rng_alloc(7, MOE_STREAM_NOISE);
    for (int i = 0; i < N * E; i++)
        G[i] = gsl_rng_uniform_pos(h);
    moe_plan *drawn = route(name, &o, NULL, g, N, E, L);
    moe_plan *given = route(name, &o, G, NULL, N, E, L);
    moe_route_opts d;
    moe_route_opts_default(&d);
    moe_plan *plain = route(name, &d, NULL, g, N, E, L);
    CHECK(same_plan(drawn, given), "%s %s: stream draws replay from the file", name, key);
    /* the draws matter: the sampled plan differs from the argmax one on 200 random tokens */
    CHECK(plain->n_entries > 0 && !same_plan(drawn, plain), "%s %s: draws change the plan",
          name, key);
    moe_plan_free(drawn);
    moe_plan_free(given);
    moe_plan_free(plain);
    gsl_rng_free(g);
    gsl_rng_free(h);
}

static void test_capacity_multiple(void)
{
    moe_route_opts o;
    moe_route_opts_default(&o);
    o.capacity_multiple = 4;
    long C = 0;
    CHECK_INT(moe_capacity(&o, 2, 10, 4, &C), MOE_OK);
    CHECK_INT(C, 8);
    o.min_capacity = 9;
    CHECK_INT(moe_capacity(&o, 2, 10, 4, &C), MOE_OK);
    CHECK_INT(C, 12);
    o.capacity = 5;
    CHECK_INT(moe_capacity(&o, 2, 10, 4, &C), MOE_OK);
    CHECK_INT(C, 5);
}

/* The libraries' own capacity formulas (rounding deepspeed_f32, fairseq, tutel), worked by
 * hand against moesim's exact ceil(k n cf / E):
 *   deepspeed_f32, n 50, E 4, k 1, cf 1.2: float32(12.5) * float32(1.2) = 12.5 * 1.20000005
 *     = 15.0000006, rounded to float32 15.00000095 (ulp 2^-20 at 15), ceil 16; exact 15.
 *   deepspeed_f32, k 2, cf 0.6: the tensor holds float32(0.6 * 2) = float32(1.2): 16 again.
 *   deepspeed_f32, n 32, E 8, k 2, cf 1: 4 * 2 = 8, as exact; min_capacity 9 raises it to 9.
 *   fairseq, n 26, E 4, k 2, cf 1: 2 * int(1.0 * ceil(6.5)) = 14; exact ceil(13) = 13.
 *   fairseq, n 400, E 4, k 1, cf 0.29: int(0.29 * 100) = int(28.999999999999996) = 28;
 *     exact 29. tutel (the same formula) n 26, E 4, k 2, multiple 4: 14 -> 16. */
static void test_library_capacity(void)
{
    static const struct {
        int rounding, k;
        long n;
        int E;
        long long num, den;
        long min_capacity, multiple, want, exact;
    } cases[] = {
        {MOE_ROUND_DEEPSPEED_F32, 1, 50, 4, 12, 10, 0, 1, 16, 15},
        {MOE_ROUND_DEEPSPEED_F32, 2, 50, 4, 6, 10, 0, 1, 16, 15},
        {MOE_ROUND_DEEPSPEED_F32, 2, 32, 8, 1, 1, 0, 1, 8, 8},
        {MOE_ROUND_DEEPSPEED_F32, 2, 32, 8, 1, 1, 9, 1, 9, 9},
        {MOE_ROUND_FAIRSEQ, 2, 26, 4, 1, 1, 0, 1, 14, 13},
        {MOE_ROUND_FAIRSEQ, 1, 400, 4, 29, 100, 0, 1, 28, 29},
        {MOE_ROUND_TUTEL, 2, 26, 4, 1, 1, 0, 4, 16, 16},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        moe_route_opts o;
        moe_route_opts_default(&o);
        o.cf_set = 1;
        o.cf_num = cases[i].num;
        o.cf_den = cases[i].den;
        o.min_capacity = cases[i].min_capacity;
        o.capacity_multiple = cases[i].multiple;
        long C = -1, X = -1;
        o.rounding = cases[i].rounding;
        CHECK_INT(moe_capacity(&o, cases[i].k, cases[i].n, cases[i].E, &C), MOE_OK);
        CHECK(C == cases[i].want, "library capacity case %zu: %ld, want %ld", i, C,
              cases[i].want);
        o.rounding = MOE_ROUND_CEIL;
        CHECK_INT(moe_capacity(&o, cases[i].k, cases[i].n, cases[i].E, &X), MOE_OK);
        CHECK(X == cases[i].exact, "exact capacity case %zu: %ld, want %ld", i, X,
              cases[i].exact);
    }
    /* the option table names them */
    moe_route_opts o;
    moe_route_opts_default(&o);
    CHECK_INT(moe_route_opts_set(&o, "rounding", "deepspeed_f32"), MOE_OK);
    CHECK_INT(o.rounding, MOE_ROUND_DEEPSPEED_F32);
    CHECK_INT(moe_route_opts_set(&o, "rounding", "fairseq"), MOE_OK);
    CHECK_INT(o.rounding, MOE_ROUND_FAIRSEQ);
    CHECK_INT(moe_route_opts_set(&o, "rounding", "tutel"), MOE_OK);
    CHECK_INT(o.rounding, MOE_ROUND_TUTEL);
}

static void test_threshold(void)
{
    const double l2[2 * 3] = {0.0, log(0.25), -30.0, 0.0, log(0.25), -30.0};
    moe_route_opts o;
    moe_route_opts_default(&o);
    o.second_policy = MOE_SECOND_THRESHOLD;
    o.dropless = 1;
    o.second_threshold = 0.21;
    moe_plan *p = route("gshard", &o, NULL, NULL, 2, 3, l2);
    CHECK_INT((long)p->n_entries, 2); /* first choices only */
    moe_plan_free(p);
    o.second_threshold = 0.19;
    p = route("gshard", &o, NULL, NULL, 2, 3, l2);
    CHECK_INT((long)p->n_entries, 4);
    moe_plan_free(p);
}

int main(void)
{
    gsl_rng *g = moe_rng_alloc(3, 1);
    for (int i = 0; i < N * E; i++)
        L[i] = gsl_rng_uniform(g) * 2.0 - 1.0;
    gsl_rng_free(g);
    test_replay("gshard", "second_policy", MOE_SECOND_SAMPLING);
    test_replay("switch", "select", MOE_SELECT_RSAMPLE);
    test_capacity_multiple();
    test_library_capacity();
    test_threshold();
    return check_report("test_dialects");
}
