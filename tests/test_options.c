/* test_options.c: the routing option table (sim/options.c) drives the defaults, the setter with
 * its bounds and messages, and the canonical description. Expected values are worked by hand from
 * the table's rows: defaults k 0 (router default), capacity -1 (formula), rounding ceil, bias_rate
 * 0.001, sinkhorn_tol 1e-9; the description lists non-defaults in table order as key=value with
 * the capacity factor as the fraction it was written as (1.25 = 125/100). */
#include "check.h"
#include "options.h"

#include <string.h>

static void test_defaults(void)
{
    moe_route_opts o;
    moe_route_opts_default(&o);
    CHECK_INT(o.k, 0);
    CHECK_INT(o.cf_set, 0);
    CHECK(o.cf_num == 1 && o.cf_den == 1, "cf 1/1 when unset");
    CHECK_INT(o.capacity, -1);
    CHECK_INT(o.min_capacity, 0);
    CHECK_INT(o.rounding, MOE_ROUND_CEIL);
    CHECK_INT(o.order, MOE_ORDER_CHOICE_MAJOR);
    CHECK_INT(o.threshold_on, MOE_THRESH_NORMALIZED);
    CHECK_INT(o.hash, MOE_HASH_MOD);
    CHECK(o.hash_table == NULL && o.hash_table_len == 0, "no hash table");
    CHECK(o.bias_rate == 0.001 && o.sinkhorn_tol == 1e-9 && o.noise_std == 0.0, "numbers");
    char buf[256];
    CHECK_INT(moe_route_opts_describe(&o, buf, sizeof buf), MOE_OK);
    CHECK(buf[0] == '\0', "defaults describe as '' ('%s')", buf);
}

static void test_set_describe(void)
{
    moe_route_opts o;
    moe_route_opts_default(&o);
    static const char *const kv[][2] = {
        {"noise_std", "0.5"}, {"k", "3"},          {"order", "bpr"}, {"renormalize", "yes"},
        {"capacity_factor", "1.25"}, {"min_capacity", "4"}, {"hash", "balanced"},
        {"sinkhorn_tol", "1e-4"},
    };
    for (size_t i = 0; i < sizeof kv / sizeof kv[0]; i++)
        CHECK(moe_route_opts_set(&o, kv[i][0], kv[i][1]) == MOE_OK, "set %s=%s: %s", kv[i][0],
              kv[i][1], moe_errmsg());
    CHECK_INT(o.k, 3);
    CHECK_INT(o.order, MOE_ORDER_BPR);
    CHECK_INT(o.renormalize, 1);
    CHECK_INT(o.hash, MOE_HASH_BALANCED);
    CHECK_INT(o.min_capacity, 4);
    char buf[256];
    CHECK_INT(moe_route_opts_describe(&o, buf, sizeof buf), MOE_OK);
    const char *want = "k=3 capacity_factor=125/100 min_capacity=4 order=bpr renormalize=true "
                       "hash=balanced noise_std=0.5 sinkhorn_tol=0.0001";
    CHECK(strcmp(buf, want) == 0, "describe '%s', want '%s'", buf, want);
    /* too small a buffer is an error, not a cut text */
    CHECK_INT(moe_route_opts_describe(&o, buf, 10), MOE_EINVAL);
    moe_clear_error();
    /* back to the default: no longer described */
    CHECK_INT(moe_route_opts_set(&o, "renormalize", "false"), MOE_OK);
    CHECK_INT(moe_route_opts_set(&o, "order", "choice_major"), MOE_OK);
    CHECK_INT(moe_route_opts_describe(&o, buf, sizeof buf), MOE_OK);
    CHECK(strstr(buf, "order") == NULL && strstr(buf, "renormalize") == NULL, "'%s'", buf);
    /* k above INT_MAX (the int field's range) is refused, not clamped; o.k keeps its value */
    CHECK_INT(moe_route_opts_set(&o, "k", "2147483648"), MOE_EINVAL);
    CHECK(strstr(moe_errmsg(), "want an integer in 1..2147483647") != NULL, "'%s'", moe_errmsg());
    CHECK_INT(o.k, 3);
    moe_clear_error();
    CHECK_INT(moe_route_opts_set(&o, "k", "2147483647"), MOE_OK);
    CHECK_INT(o.k, 2147483647);

    /* the dialect rows, described in table order after the older rows; the eval factor is its
     * own fraction (2.5 = 25/10) and leaves capacity_factor as it was */
    moe_route_opts q;
    moe_route_opts_default(&q);
    static const char *const kv2[][2] = {
        {"jitter", "0.01"}, {"mode", "eval"}, {"capacity_factor_eval", "2.5"},
        {"pad_to_capacity", "true"}, {"group_size", "64"},
    };
    for (size_t i = 0; i < sizeof kv2 / sizeof kv2[0]; i++)
        CHECK(moe_route_opts_set(&q, kv2[i][0], kv2[i][1]) == MOE_OK, "set %s=%s: %s",
              kv2[i][0], kv2[i][1], moe_errmsg());
    CHECK(q.cf_eval_set && q.cf_eval_num == 25 && q.cf_eval_den == 10 && !q.cf_set,
          "eval factor 25/10, capacity_factor unset");
    CHECK(q.jitter == 0.01 && q.mode == MOE_MODE_EVAL && q.group_size == 64 &&
          q.pad_to_capacity == 1, "dialect fields");
    CHECK_INT(moe_route_opts_describe(&q, buf, sizeof buf), MOE_OK);
    want = "group_size=64 pad_to_capacity=true capacity_factor_eval=25/10 mode=eval "
           "jitter=0.01";
    CHECK(strcmp(buf, want) == 0, "describe '%s', want '%s'", buf, want);
}

/* Mode eval (DeepSpeed's eval_capacity_factor and its training-only noisy gate policies):
 * the router runs with capacity_factor_eval, without noise, jitter, rsample or Gumbel
 * sampling; mode train, or eval without an eval factor, keeps capacity_factor. */
static void test_effective(void)
{
    moe_route_opts o, e;
    moe_route_opts_default(&o);
    CHECK(!moe_route_opts_set(&o, "capacity_factor", "1.25") &&
          !moe_route_opts_set(&o, "capacity_factor_eval", "2") &&
          !moe_route_opts_set(&o, "noise_std", "1") && !moe_route_opts_set(&o, "jitter", "0.1") &&
          !moe_route_opts_set(&o, "select", "rsample") &&
          !moe_route_opts_set(&o, "second_policy", "sampling"), "set: %s", moe_errmsg());
    moe_route_opts_effective(&o, &e);
    CHECK(e.cf_set && e.cf_num == 125 && e.cf_den == 100 && e.noise_std == 1.0 &&
          e.jitter == 0.1 && e.select == MOE_SELECT_RSAMPLE &&
          e.second_policy == MOE_SECOND_SAMPLING, "train: the options as given");
    CHECK_INT(moe_route_opts_set(&o, "mode", "eval"), MOE_OK);
    moe_route_opts_effective(&o, &e);
    CHECK(e.cf_set && e.cf_num == 2 && e.cf_den == 1, "eval: cf %lld/%lld", e.cf_num, e.cf_den);
    CHECK(e.noise_std == 0.0 && e.jitter == 0.0 && e.select == MOE_SELECT_ARGMAX &&
          e.second_policy == MOE_SECOND_ALL, "eval: no noise, jitter, rsample, sampling");
    /* the random second policy is GShard's rule, not a training-only noise: it stays */
    CHECK_INT(moe_route_opts_set(&o, "second_policy", "random"), MOE_OK);
    moe_route_opts_effective(&o, &e);
    CHECK_INT(e.second_policy, MOE_SECOND_RANDOM);
    o.cf_eval_set = 0;
    moe_route_opts_effective(&o, &e);
    CHECK(e.cf_num == 125 && e.cf_den == 100, "eval without an eval factor keeps cf");
}

static void expect_bad(const char *key, const char *value, const char *frag)
{
    moe_route_opts o;
    moe_route_opts_default(&o);
    moe_clear_error();
    int rc = moe_route_opts_set(&o, key, value);
    CHECK(rc == MOE_EINVAL, "%s=%s: rc %d", key, value, rc);
    CHECK(strstr(moe_errmsg(), frag) != NULL, "%s=%s: message '%s' lacks '%s'", key, value,
          moe_errmsg(), frag);
    moe_clear_error();
}

static void test_bounds(void)
{
    expect_bad("k", "0", "bad value '0' for option k: want an integer >= 1");
    expect_bad("capacity", "-1", "want an integer >= 0");
    expect_bad("slots_per_expert", "1.5", "want an integer >= 1");
    expect_bad("noise_std", "-0.1", "want a number >= 0");
    expect_bad("noise_std", "inf", "want a number >= 0");
    expect_bad("sinkhorn_tol", "0", "want a number > 0");
    expect_bad("rounding", "up", "want one of ceil|floor|round");
    expect_bad("dropless", "maybe", "bad value 'maybe' for option dropless");
    expect_bad("capacity_factor", "-1", "capacity factor '-1' is not a non-negative decimal");
    expect_bad("kk", "2", "unknown routing option 'kk'");
    expect_bad("score", "tanh", "want one of auto|softmax|sigmoid|sqrtsoftplus");
    expect_bad("normalize_topk", "yes", "want one of auto|true|false");
    expect_bad("route_scale", "0", "want a number > 0");
    expect_bad("groups", "0", "want an integer >= 1");
    expect_bad("group_score", "mean", "want one of topk_sum|max");
    expect_bad("top_p", "0", "want a number > 0");
    expect_bad("sequence_length", "0", "want an integer >= 1");
    /* the dialect rows: jitter keeps U(1-eps, 1+eps) positive, mode is train or eval, the eval
     * capacity factor is a decimal like capacity_factor, group_size 0 means no groups */
    expect_bad("jitter", "1", "bad value '1' for option jitter: want a number in [0, 1)");
    expect_bad("jitter", "-0.01", "want a number >= 0");
    expect_bad("mode", "evaluation", "bad value 'evaluation' for option mode: want one of "
               "train|eval");
    expect_bad("capacity_factor_eval", "x", "capacity factor 'x' is not a non-negative decimal");
    expect_bad("group_size", "-2", "want an integer >= 0");
    expect_bad("pad_to_capacity", "2", "bad value '2' for option pad_to_capacity");
}

/* Every row is found by its key and has help; 24 options (counted in the table: 16, then the
 * score path's 6 and the variable-k routers' top_p and max_k). */
static void test_rows(void)
{
    int n = 0;
    for (const moe_option *op = moe_route_options; op->key; op++, n++) {
        CHECK(moe_route_option_find(op->key) == op, "find %s", op->key);
        CHECK(op->help && op->type, "%s has help and type", op->key);
    }
    CHECK_INT(n, 34); /* 16 + 8 score, group and variable-k rows + second_policy,
                       * second_threshold, select, capacity_multiple + sequence_length +
                       * group_size, pad_to_capacity, capacity_factor_eval, mode, jitter */
    CHECK(moe_route_option_find("nope") == NULL, "unknown key");
}

/* The routers column: every name in it is a registered router (a typo would make an option
 * apply nowhere), and the rule of each router as its file states it: soft_moe has no capacity
 * (soft_moe.c: nothing is dropped), threshold_on is gshard's draw test (gshard.c), noise_std is
 * topk's gate noise (topk.c), hash keeps token order (hash.c: opts.order does not apply). */
static void test_applies(void)
{
    for (const moe_option *op = moe_route_options; op->key; op++) {
        if (!op->routers)
            continue;
        int any = 0;
        for (const char *p = op->routers; *p;) {
            char name[32];
            size_t len = strcspn(p, "|");
            snprintf(name, sizeof name, "%.*s", (int)len, p);
            CHECK(moe_router_find(name) != NULL, "%s: '%s' is a router", op->key, name);
            any = 1;
            p += len + (p[len] == '|');
        }
        CHECK(any, "%s applies to some router", op->key);
    }
    static const struct { const char *key, *router; int ok; } cases[] = {
        {"capacity_factor", "soft_moe", 0}, {"capacity_factor", "topk", 1},
        {"capacity", "soft_moe", 0},        {"threshold_on", "topk", 0},
        {"threshold_on", "gshard", 1},      {"noise_std", "switch", 0},
        {"order", "hash", 0},               {"order", "topk", 1},
        {"slots_per_expert", "topk", 0},    {"num_experts", "soft_moe", 1},
        {"num_experts", "topk", 1},         {"k", "expert_choice", 0},
        {"bias_rate", "sinkhorn", 0},       {"dropless", "expert_choice", 0},
        /* BASE's C is ceil(n/E) and dense keeps every pair: no capacity factor (base.c,
         * dense.c); the score path is the token-choice routers' own (score.c) */
        {"capacity_factor", "base", 0},     {"capacity_factor", "dense", 0},
        {"capacity_factor_eval", "dense", 0}, {"capacity_factor_eval", "expert_choice", 1},
        {"score", "expert_choice", 0},      {"normalize_topk", "soft_moe", 0},
        {"route_scale", "hash", 0},         {"groups", "base", 0},
        {"topk_groups", "sinkhorn", 0},     {"group_score", "dense", 0},
        /* groups, mode and jitter apply to every router */
        {"group_size", "soft_moe", 1},      {"group_size", "expert_choice", 1},
        {"mode", "base", 1},                {"jitter", "hash", 1},
        {"pad_to_capacity", "soft_moe", 0}, {"pad_to_capacity", "topk", 1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        moe_clear_error();
        int rc = moe_route_option_check(cases[i].key, cases[i].router);
        CHECK_INT(rc, cases[i].ok ? MOE_OK : MOE_EINVAL);
        if (!cases[i].ok) {
            char want[128];
            snprintf(want, sizeof want, "option %s does not apply to router %s", cases[i].key,
                     cases[i].router);
            CHECK(!strcmp(moe_errmsg(), want), "message '%s'", moe_errmsg());
        }
    }
}

int main(void)
{
    test_defaults();
    test_set_describe();
    test_bounds();
    test_effective();
    test_rows();
    test_applies();
    return check_report("test_options");
}
