/* test_routers_score.c: the score path of the token-choice routers (routers/score.h): options
 * score, normalize_topk, route_scale, groups, topk_groups and group_score on topk, switch,
 * gshard, dsv3_bias and replay, and the variable-k routers topp and relu, against cases worked
 * by hand from the conventions of Megatron-LM core megatron/core/transformer/moe/moe_utils.py
 * (topk_routing_with_score_function:
 * scores = softmax / sigmoid / sqrtsoftplus of the logits, top-k of the scores, sigmoid and
 * sqrtsoftplus normalised over the chosen only when k > 1, times scaling_factor;
 * group_limited_topk: group score = sum of the group's top-(k / group_topk) scores, experts
 * outside the best group_topk groups masked) and DeepSeek-V3 inference/model.py Gate.forward
 * (group score = max of the group without bias; weights times route_scale).
 * Expected values are written from sig(x) = 1/(1+exp(-x)) and sp(x) = sqrt(log(1+exp(x)))
 * computed here independently of the library; tolerance 1e-12. */
#include "check.h"
#include "moe.h"

#include <string.h>

static double sig(double x) { return 1.0 / (1.0 + exp(-x)); }
static double ssp(double x) { return sqrt(log(1.0 + exp(x))); }

/* Route n tokens of E logits with router name; NULL (and rc) when alloc or route fails. */
static moe_plan *route(const char *name, const moe_route_opts *o, int n, int E, const double *L,
                       const double *u, int *rc)
{
    moe_router *r = NULL;
    moe_plan *p = NULL;
    moe_clear_error();
    int st = moe_router_alloc(moe_router_find(name), o, n, E, &r);
    if (!st && !(p = moe_plan_alloc(n, E, (size_t)n * E)))
        st = MOE_ENOMEM;
    if (!st) {
        moe_route_in in = {0};
        in.n = n;
        in.m = E;
        in.logits = L;
        in.uniforms = u;
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

/* The plan's entries (token 0 only) against experts want_e and combine weights want_w. */
static void check_token0(const char *what, const moe_plan *p, int k, const int *want_e,
                         const double *want_w)
{
    CHECK(p != NULL, "%s: routing failed: %s", what, moe_errmsg());
    if (!p)
        return;
    CHECK(p->n_entries == (size_t)k, "%s: %zu entries, expected %d", what, p->n_entries, k);
    for (int j = 0; j < k && j < (int)p->n_entries; j++) {
        CHECK(p->entries[j].expert == want_e[j], "%s: choice %d is expert %d, expected %d", what,
              j, p->entries[j].expert, want_e[j]);
        CHECK(fabs(p->entries[j].combine_w - want_w[j]) <= 1e-12,
              "%s: choice %d weight %.17g, expected %.17g", what, j, p->entries[j].combine_w,
              want_w[j]);
    }
}

static moe_route_opts opts(int k, const char *score, const char *norm, const char *scale)
{
    moe_route_opts o;
    moe_route_opts_default(&o);
    o.k = k;
    o.dropless = 1;
    if (score)
        o.score = !strcmp(score, "softmax") ? MOE_SCORE_SOFTMAX
                  : !strcmp(score, "sigmoid") ? MOE_SCORE_SIGMOID
                                              : MOE_SCORE_SQRTSOFTPLUS;
    if (norm)
        o.normalize_topk = !strcmp(norm, "true") ? MOE_TRI_TRUE : MOE_TRI_FALSE;
    if (scale)
        o.route_scale = atof(scale);
    return o;
}

/* L = (1, 0, 2, -1): every monotone score picks experts 2 then 0. */
static void test_scores(void)
{
    const double L[4] = {1, 0, 2, -1};
    const int e20[2] = {2, 0};
    moe_route_opts o = opts(2, "sigmoid", NULL, NULL);
    double w[2] = {sig(2) / (sig(2) + sig(1)), sig(1) / (sig(2) + sig(1))};
    moe_plan *p = route("topk", &o, 1, 4, L, NULL, NULL);
    check_token0("topk sigmoid (normalised: topk's default)", p, 2, e20, w);
    moe_plan_free(p);

    o = opts(2, "sigmoid", "false", "2.5");
    w[0] = 2.5 * sig(2);
    w[1] = 2.5 * sig(1);
    p = route("topk", &o, 1, 4, L, NULL, NULL);
    check_token0("topk sigmoid raw, route_scale 2.5", p, 2, e20, w);
    moe_plan_free(p);

    o = opts(2, "sqrtsoftplus", "true", NULL);
    w[0] = ssp(2) / (ssp(2) + ssp(1));
    w[1] = ssp(1) / (ssp(2) + ssp(1));
    p = route("topk", &o, 1, 4, L, NULL, NULL);
    check_token0("topk sqrtsoftplus normalised", p, 2, e20, w);
    moe_plan_free(p);

    /* softmax raw (Megatron pre-softmax, Qwen2-MoE norm_topk_prob = False): full-softmax p */
    double z = exp(1) + exp(0) + exp(2) + exp(-1);
    o = opts(2, "softmax", "false", NULL);
    w[0] = exp(2) / z;
    w[1] = exp(1) / z;
    p = route("topk", &o, 1, 4, L, NULL, NULL);
    check_token0("topk softmax raw", p, 2, e20, w);
    moe_plan_free(p);

    /* k = 1 sigmoid is never normalised, even when asked */
    o = opts(0, "sigmoid", "true", NULL);
    w[0] = sig(2);
    p = route("switch", &o, 1, 4, L, NULL, NULL);
    check_token0("switch sigmoid k=1 (not normalised)", p, 1, e20, w);
    moe_plan_free(p);

    /* softmax k = 1 normalised: weight 1 */
    o = opts(0, NULL, "true", NULL);
    w[0] = 1.0;
    p = route("switch", &o, 1, 4, L, NULL, NULL);
    check_token0("switch softmax normalised", p, 1, e20, w);
    moe_plan_free(p);

    /* dsv3_bias with softmax scores, bias 0 on its first batch: s = p, normalised */
    o = opts(2, "softmax", NULL, "2.5");
    w[0] = 2.5 * exp(2) / (exp(2) + exp(1));
    w[1] = 2.5 * exp(1) / (exp(2) + exp(1));
    p = route("dsv3_bias", &o, 1, 4, L, NULL, NULL);
    check_token0("dsv3_bias softmax, route_scale 2.5", p, 2, e20, w);
    moe_plan_free(p);
}

/* gshard with sigmoid scores: e1 = 0, e2 = 1 of L = (2, 1, 0); test 2*s2/(s1+s2) > u. */
static void test_gshard(void)
{
    const double L[6] = {2, 1, 0, 2, 1, 0};
    const double u[2] = {0.1, 0.99}; /* 2*sig(1)/(sig(2)+sig(1)) = 0.9074: kept, then not */
    moe_route_opts o = opts(2, "sigmoid", NULL, NULL);
    moe_plan *p = route("gshard", &o, 2, 3, L, u, NULL);
    CHECK(p && p->n_entries == 3, "gshard sigmoid: %zu entries, expected 3",
          p ? p->n_entries : 0);
    if (p && p->n_entries == 3) {
        double s1 = sig(2), s2 = sig(1);
        CHECK(p->entries[1].expert == 1 && fabs(p->entries[1].combine_w - s2 / (s1 + s2)) < 1e-12,
              "gshard sigmoid: second choice of token 0 (expert 1, %.17g)", s2 / (s1 + s2));
        CHECK(p->entries[2].token == 1 && p->entries[2].expert == 0 &&
                  fabs(p->entries[2].combine_w - s1 / (s1 + s2)) < 1e-12,
              "gshard sigmoid: token 1 keeps its first choice with weight s1/(s1+s2)");
    }
    moe_plan_free(p);
}

/* E = 8 in G = 4 groups of 2, L = (0, 5 | 4, 4 | 3, 3 | -1, 6), sigmoid, k = 4, M = 2.
 * topk_sum (top 4/2 = 2 per group): g0 = sig0+sig5 = 1.4933, g1 = 2 sig4 = 1.9640,
 * g2 = 2 sig3 = 1.9051, g3 = sig(-1)+sig6 = 1.2665: groups 1, 2; experts 2, 3 (tie: lower
 * first), 4, 5. max: g3 (sig6), g0 (sig5): experts 7, 1, 0, 6. Ungrouped would be 7, 1, 2, 3. */
static void test_groups(void)
{
    const double L[8] = {0, 5, 4, 4, 3, 3, -1, 6};
    moe_route_opts o = opts(4, "sigmoid", NULL, NULL);
    o.groups = 4;
    o.topk_groups = 2;
    const int e_sum[4] = {2, 3, 4, 5}, e_max[4] = {7, 1, 0, 6};
    double t = 2 * sig(4) + 2 * sig(3);
    double w[4] = {sig(4) / t, sig(4) / t, sig(3) / t, sig(3) / t};
    moe_plan *p = route("topk", &o, 1, 8, L, NULL, NULL);
    check_token0("topk groups topk_sum", p, 4, e_sum, w);
    moe_plan_free(p);
    /* dsv3_bias with its bias at 0 selects as topk does (sigmoid is its own default) */
    p = route("dsv3_bias", &o, 1, 8, L, NULL, NULL);
    check_token0("dsv3_bias groups topk_sum", p, 4, e_sum, w);
    moe_plan_free(p);

    o.group_score = MOE_GSCORE_MAX;
    t = sig(6) + sig(5) + sig(0) + sig(-1);
    double wm[4] = {sig(6) / t, sig(5) / t, sig(0) / t, sig(-1) / t};
    p = route("topk", &o, 1, 8, L, NULL, NULL);
    check_token0("topk groups max", p, 4, e_max, wm);
    moe_plan_free(p);
}

/* Bad groups: one-line errors at alloc. */
static void test_bad(void)
{
    const double L[8] = {0};
    struct {
        int k, G, M;
        const char *what;
    } bad[] = {{2, 3, 0, "does not divide"}, {2, 4, 5, "is above groups"},
               {5, 4, 2, "is above the 4 experts"}, {2, 0, 2, "needs groups"}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        moe_route_opts o = opts(bad[i].k, "sigmoid", NULL, NULL);
        o.groups = bad[i].G;
        o.topk_groups = bad[i].M;
        int rc = 0;
        moe_plan *p = route("topk", &o, 1, 8, L, NULL, &rc);
        CHECK(!p && rc == MOE_EINPUT && strstr(moe_errmsg(), bad[i].what) &&
                  !strchr(moe_errmsg(), '\n'),
              "k=%d groups=%d topk_groups=%d: rc %d, message '%s', expected '%s'", bad[i].k,
              bad[i].G, bad[i].M, rc, moe_errmsg(), bad[i].what);
        moe_plan_free(p);
    }
}

/* The options set to a router's own defaults give its historical plan exactly (score.h:
 * is_default keeps the router's own code): topk softmax normalised. */
static void test_defaults(void)
{
    const double L[12] = {0.3, -1, 2, 0.5, 1, 1, 0, 2, -3, 0.25, 0.5, 4};
    moe_route_opts a = opts(2, NULL, NULL, NULL), b = opts(2, "softmax", "true", "1");
    moe_plan *pa = route("topk", &a, 3, 4, L, NULL, NULL), *pb = route("topk", &b, 3, 4, L, NULL,
                                                                       NULL);
    int same = pa && pb && pa->n_entries == pb->n_entries;
    for (size_t i = 0; same && i < pa->n_entries; i++) { /* field by field: moe_entry has padding */
        const moe_entry *x = &pa->entries[i], *y = &pb->entries[i];
        same = x->token == y->token && x->expert == y->expert && x->slot == y->slot &&
               !memcmp(&x->dispatch_w, &y->dispatch_w, sizeof x->dispatch_w) &&
               !memcmp(&x->combine_w, &y->combine_w, sizeof x->combine_w);
    }
    CHECK(same, "topk: score softmax normalize_topk true gives the default plan bit for bit");
    moe_plan_free(pa);
    moe_plan_free(pb);
}

/* Variable k. topp: L = (log 5, log 3, log 2, 0): exp = (5, 3, 2, 1), p = (5, 3, 2, 1)/11;
 * top_p 0.7: 5/11 = 0.4545 < 0.7, 8/11 = 0.7273 >= 0.7: experts 0, 1 with raw p.
 * relu: L = (1.5, -2, 0, 0.25): experts 0, 3 with weights 1.5, 0.25 (0 is not > 0);
 * aux_loss = 1.75. */
static void test_variable_k(void)
{
    const double L[4] = {log(5), log(3), log(2), 0}, R[4] = {1.5, -2, 0, 0.25};
    moe_route_opts o = opts(0, NULL, NULL, NULL);
    o.dropless = 0;
    o.top_p = 0.7;
    const int e01[2] = {0, 1}, e03[2] = {0, 3};
    double w[2] = {5.0 / 11, 3.0 / 11};
    moe_plan *p = route("topp", &o, 1, 4, L, NULL, NULL);
    check_token0("topp 0.7", p, 2, e01, w);
    moe_plan_free(p);
    o.max_k = 1; /* at most one */
    p = route("topp", &o, 1, 4, L, NULL, NULL);
    check_token0("topp 0.7 max_k 1", p, 1, e01, w);
    moe_plan_free(p);
    o.max_k = 0;
    w[0] = 1.5;
    w[1] = 0.25;
    p = route("relu", &o, 1, 4, R, NULL, NULL);
    check_token0("relu", p, 2, e03, w);
    CHECK(p && fabs(p->aux_loss - 1.75) < 1e-15, "relu aux_loss = sum of ReLU(L) = 1.75");
    moe_plan_free(p);
    int rc = 0;
    o.top_p = 1.5;
    p = route("topp", &o, 1, 4, L, NULL, &rc);
    CHECK(!p && rc && strstr(moe_errmsg(), "top_p = 1.5 is outside (0, 1]"),
          "topp: top_p 1.5 refused: '%s'", moe_errmsg());
    moe_plan_free(p);
}

int main(void)
{
    test_variable_k();
    test_scores();
    test_gshard();
    test_groups();
    test_bad();
    test_defaults();
    return check_report("test_routers_score");
}
