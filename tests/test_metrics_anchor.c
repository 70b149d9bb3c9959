/* test_metrics_anchor.c: the metrics of group-limited routing, routing groups and the anchor
 * libraries' losses (sim/metrics.c; definitions in docs/metrics.md):
 *   1. hand-worked plans (the arithmetic in the comments);
 *   2. the cases of tests/fixtures/metrics/anchor_cases.json, written by
 *      tests/ref/anchor_metrics.py from NumPy re-implementations of the libraries' own functions
 *      (Megatron sequence_load_balancing_loss_func, t2t _prob_in_top_k and cv_squared, fairseq
 *      top2gating's overflow metadata, V-MoE _importance/_load_auxiliary_loss, vLLM EPLB
 *      balancedness): each case's plan (fairseq's own masks and locations) is rebuilt here and
 *      every metric matched;
 *   3. the same cases routed by moesim's gshard router (capacity C, the fairseq draws u, the raw
 *      threshold 2 p2 > u, or second_policy all): the plan equals fairseq's entry for entry and
 *      the overflow percentages, counted by the router, equal fairseq's.
 * Usage: test_metrics_anchor [FIXTURE] (run from the repository root). */
#include "check.h"
#include "metric_table.h"
#include "moe.h"

#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define FIXTURE "tests/fixtures/metrics/anchor_cases.json"

/* |got - want| <= 1e-12 * max(1, |want|); both NaN counts as equal (a metric that is
 * undefined for the case, null in the fixture). */
static void check_value(const char *what, double got, double want)
{
    if (isnan(want)) {
        CHECK(isnan(got), "%s = %.17g, expected undefined (NaN)", what, got);
        return;
    }
    double tol = 1e-12 * (fabs(want) > 1.0 ? fabs(want) : 1.0);
    CHECK(fabs(got - want) <= tol, "%s = %.17g, expected %.17g", what, got, want);
}

static double metric(const moe_metrics *mt, const char *name)
{
    const moe_point_metric *m = moe_metric_find(name);
    CHECK(m != NULL, "metric %s in the table", name);
    return m ? moe_metric_value(mt, m) : NAN;
}

/* ---- 1. hand-worked ---- */

/* n = 4, E = 4, G = 2 groups {0,1} {2,3}, routing groups of 2 tokens, sequences of 2 tokens,
 * k = 2, C = 2; kept entries t0: e0 e1; t1: e0 e2; t2: none; t3: e3.
 *   groups touched: t0 1, t1 2, t2 0, t3 1 -> histogram [1, 2, 1], mean 4/4 = 1.
 *   drop per routing group: (t0, t1) 0/2 = 0, (t2, t3) 1/2 -> min 0, mean 0.25, max 0.5.
 *   kept_load (2, 1, 1, 1): balancedness = mean 1.25 / max 2 = 0.625.
 *   claims: rank 0 4, kept 3; rank 1 3, kept 2 -> overflow 25% and 100/3%.
 *   logits all 0: softmax 1/4 everywhere; Megatron's routing map (top-2, ties to the lower
 *   expert) = e0, e1 for every token; per sequence of S = 2: cost_coeff = count / (S k / E)
 *   = (2, 2, 0, 0), mean p = 1/4 -> sum = 1 for each sequence; seq_aux_loss = 1.
 *   importance (V-MoE) equal per expert -> cv^2 = 0; no noise: load_loss_vmoe undefined.
 *   load_loss_shazeer without noise: t2t cv_squared of the claims (3, 2, 1, 1): mean 7/4,
 *   variance (1.5625 + 0.0625 + 0.5625 + 0.5625) / 4 = 0.6875, / 1.75^2 = 11/49 (the epsilons
 *   1e-10 of cv_squared move it by 2e-11). */
static void test_hand(void)
{
    moe_plan *p = moe_plan_alloc(4, 4, 16);
    moe_metrics *mt = moe_metrics_alloc(4);
    CHECK(p && mt, "alloc");
    if (!p || !mt || moe_plan_reset(p, 4, 4, 4))
        goto out;
    p->k = 2;
    p->capacity = 2;
    const int ent[5][3] = {{0, 0, 0}, {0, 1, 0}, {1, 0, 1}, {1, 2, 0}, {3, 3, 0}};
    for (int i = 0; i < 5; i++)
        moe_plan_push(p, ent[i][0], ent[i][1], ent[i][2], 1.0, 0.5);
    const long assigned[4] = {3, 2, 1, 1};
    memcpy(p->assigned_load, assigned, sizeof assigned);
    p->n_claims = 7;
    p->rank_claims[0] = 4, p->rank_kept[0] = 3;
    p->rank_claims[1] = 3, p->rank_kept[1] = 2;
    double L[16] = {0};
    moe_route_opts o;
    moe_route_opts_default(&o);
    o.groups = 2;
    o.group_size = 2;
    o.sequence_length = 2;
    CHECK_INT(moe_metrics_set_opts(mt, &o), MOE_OK);
    CHECK_INT(moe_metrics_compute(p, L, 0, 0, 0, 0, mt), MOE_OK);
    const long hist[3] = {1, 2, 1};
    for (int j = 0; j < 3; j++)
        CHECK(mt->groups_touched[j] == hist[j], "groups_touched[%d] = %ld", j,
              mt->groups_touched[j]);
    check_value("groups_touched_mean", metric(mt, "groups_touched_mean"), 1.0);
    check_value("drop min", metric(mt, "token_drop_rate_group_min"), 0.0);
    check_value("drop mean", metric(mt, "token_drop_rate_group_mean"), 0.25);
    check_value("drop max", metric(mt, "token_drop_rate_group_max"), 0.5);
    check_value("token_drop_rate", mt->token_drop_rate, 0.25); /* groups of equal size */
    check_value("balancedness", metric(mt, "balancedness"), 0.625);
    check_value("overflow_expert1", metric(mt, "overflow_expert1"), 25.0);
    check_value("overflow_expert2", metric(mt, "overflow_expert2"), 100.0 / 3.0);
    check_value("seq_aux_loss", metric(mt, "seq_aux_loss"), 1.0);
    check_value("importance_loss_vmoe", metric(mt, "importance_loss_vmoe"), 0.0);
    check_value("load_loss_vmoe", metric(mt, "load_loss_vmoe"), NAN);
    CHECK_NEAR(metric(mt, "load_loss_shazeer"), 11.0 / 49.0, 1e-10);

    /* without groups: one group of all experts, the batch one routing group and one sequence:
     * groups touched [1, 3], mean 3/4; every drop rate = the batch's 1/4; seq_aux_loss over the
     * 4 tokens: cost_coeff = (4, 4, 0, 0) / (4 * 2 / 4) = (2, 2, 0, 0), sum 4 * 1/4 = 1. */
    moe_route_opts_default(&o);
    CHECK_INT(moe_metrics_set_opts(mt, &o), MOE_OK);
    CHECK_INT(moe_metrics_compute(p, L, 0, 0, 0, 0, mt), MOE_OK);
    CHECK(mt->groups_touched[0] == 1 && mt->groups_touched[1] == 3, "one group: [1, 3]");
    check_value("one group mean", mt->groups_touched_mean, 0.75);
    check_value("batch min", mt->token_drop_rate_group_min, 0.25);
    check_value("batch max", mt->token_drop_rate_group_max, 0.25);
    check_value("batch seq_aux_loss", mt->seq_aux_loss, 1.0);

    /* no second-rank claims (a top-1 router): overflow_expert2 undefined; a sequence length
     * that does not divide the batch is an error naming sequence_length */
    p->rank_claims[1] = p->rank_kept[1] = 0;
    CHECK_INT(moe_metrics_compute(p, L, 0, 0, 0, 0, mt), MOE_OK);
    CHECK(isnan(mt->overflow_expert2), "overflow_expert2 without second choices");
    o.sequence_length = 3;
    CHECK_INT(moe_metrics_set_opts(mt, &o), MOE_OK);
    CHECK_INT(moe_metrics_compute(p, L, 0, 0, 0, 0, mt), MOE_EINVAL);
    CHECK(strstr(moe_errmsg(), "sequence_length") != NULL, "message: %s", moe_errmsg());
    moe_clear_error();
out:
    moe_metrics_free(mt);
    moe_plan_free(p);
}

/* n = 1, E = 3, k = 1, noise std 1: clean logits (1, 0, -1), noisy logits (0.5, 1.5, -1).
 *   V-MoE: threshold = the top-1 noisy logit 1.5; p = 1 - Phi(1.5 - L) = 1 - Phi(0.5),
 *   1 - Phi(1.5), 1 - Phi(2.5) = 0.30853753872598688, 0.066807201268858085,
 *   0.0062096653257761592 (Phi from the normal table); (std/mean)^2 = 1.0544291203563079.
 *   t2t ProbInTopK: noisy top-2 = (1.5, 0.5): threshold_if_in 0.5, _if_out 1.5; only e1 is in:
 *   e0 Phi(1 - 1.5), e1 Phi(0 - 0.5), e2 Phi(-1 - 1.5) = Phi(-0.5), Phi(-0.5), Phi(-2.5);
 *   cv_squared = 0.47055823805317354 (the same arithmetic, with cv_squared's epsilons). */
static void test_noisy_hand(void)
{
    moe_plan *p = moe_plan_alloc(1, 3, 4);
    moe_metrics *mt = moe_metrics_alloc(3);
    CHECK(p && mt, "alloc");
    if (!p || !mt || moe_plan_reset(p, 1, 3, 3))
        goto out;
    p->k = 1;
    p->capacity = 1;
    moe_plan_push(p, 0, 1, 0, 1.0, 1.0);
    p->assigned_load[1] = 1;
    p->n_claims = 1;
    const double L[3] = {1, 0, -1}, H[3] = {0.5, 1.5, -1};
    p->noisy_logits = H;
    p->noise_std = 1.0;
    CHECK_INT(moe_metrics_compute(p, L, 0, 0, 0, 0, mt), MOE_OK);
    CHECK_NEAR(mt->load_loss_vmoe, 1.0544291203563079, 1e-12);
    CHECK_NEAR(mt->load_loss_shazeer, 0.47055823805317354, 1e-12);
out:
    moe_metrics_free(mt);
    moe_plan_free(p);
}

/* ---- 2. and 3. the NumPy fixture ---- */

static double *doubles_2d(json_t *a, int n, int E)
{
    double *v = malloc((size_t)n * E * sizeof *v);
    for (int t = 0; v && t < n; t++)
        for (int e = 0; e < E; e++)
            v[(size_t)t * E + e] = json_number_value(json_array_get(json_array_get(a, t), e));
    return v;
}

static int score_of(const char *s)
{
    return !strcmp(s, "sigmoid") ? MOE_SCORE_SIGMOID
           : !strcmp(s, "sqrtsoftplus") ? MOE_SCORE_SQRTSOFTPLUS : MOE_SCORE_SOFTMAX;
}

static void match_expected(const char *name, const moe_metrics *mt, json_t *exp)
{
    const char *key;
    json_t *v;
    char what[160];
    json_object_foreach(exp, key, v)
    {
        snprintf(what, sizeof what, "%s: %s", name, key);
        if (json_is_array(v)) { /* the groups-touched histogram */
            CHECK(json_array_size(v) == (size_t)mt->groups + 1, "%s: length", what);
            for (size_t j = 0; j < json_array_size(v) && j <= (size_t)mt->groups; j++)
                CHECK(mt->groups_touched[j] == json_integer_value(json_array_get(v, j)),
                      "%s[%zu] = %ld", what, j, mt->groups_touched[j]);
        } else {
            check_value(what, metric(mt, key), json_is_null(v) ? NAN : json_number_value(v));
        }
    }
}

/* The case's plan as fairseq made it, through the metrics. */
static void test_case_plan(json_t *c, const moe_route_opts *o, const double *L, const double *H)
{
    const char *name = json_string_value(json_object_get(c, "name"));
    const int n = (int)json_integer_value(json_object_get(c, "T"));
    const int E = (int)json_integer_value(json_object_get(c, "E"));
    json_t *ent = json_object_get(c, "entries");
    moe_plan *p = moe_plan_alloc(n, E, json_array_size(ent) + 1);
    moe_metrics *mt = moe_metrics_alloc(E);
    CHECK(p && mt, "%s: alloc", name);
    if (!p || !mt || moe_plan_reset(p, n, E, E))
        goto out;
    p->k = (int)json_integer_value(json_object_get(c, "k"));
    p->capacity = (long)json_integer_value(json_object_get(c, "capacity"));
    for (size_t i = 0; i < json_array_size(ent); i++) {
        json_t *r = json_array_get(ent, i);
        moe_plan_push(p, (int32_t)json_integer_value(json_array_get(r, 0)),
                      (int32_t)json_integer_value(json_array_get(r, 1)),
                      (int32_t)json_integer_value(json_array_get(r, 2)), 1.0, 0.5);
    }
    json_t *al = json_object_get(c, "assigned_load");
    for (int e = 0; e < E; e++) {
        p->assigned_load[e] = (long)json_integer_value(json_array_get(al, e));
        p->n_claims += p->assigned_load[e];
    }
    json_t *rc = json_object_get(c, "rank_claims"), *rk = json_object_get(c, "rank_kept");
    for (int j = 0; j < 2; j++) {
        p->rank_claims[j] = (long)json_integer_value(json_array_get(rc, j));
        p->rank_kept[j] = (long)json_integer_value(json_array_get(rk, j));
    }
    p->noisy_logits = H;
    p->noise_std = H ? json_number_value(json_object_get(c, "noise_std")) : 0.0;
    CHECK_INT(moe_metrics_set_opts(mt, o), MOE_OK);
    CHECK_INT(moe_metrics_compute(p, L, 0, 0, 0, 0, mt), MOE_OK);
    match_expected(name, mt, json_object_get(c, "expected"));
out:
    moe_metrics_free(mt);
    moe_plan_free(p);
}

/* The case routed by moesim's gshard router with fairseq's capacity and draws. */
static void test_case_gshard(json_t *c, const moe_route_opts *base, const double *L)
{
    const char *name = json_string_value(json_object_get(c, "name"));
    const int n = (int)json_integer_value(json_object_get(c, "T"));
    const int E = (int)json_integer_value(json_object_get(c, "E"));
    moe_route_opts o = *base;
    o.k = 2;
    o.capacity = (long)json_integer_value(json_object_get(c, "capacity"));
    o.threshold_on = MOE_THRESH_RAW; /* fairseq's default: 2 * gates2_s > u on the raw gate */
    json_t *uj = json_object_get(c, "uniforms");
    o.second_policy = json_is_null(uj) ? MOE_SECOND_ALL : MOE_SECOND_RANDOM;
    double *u = json_is_null(uj) ? NULL : malloc((size_t)n * sizeof *u);
    for (int t = 0; u && t < n; t++)
        u[t] = json_number_value(json_array_get(uj, t));
    moe_router *r = NULL;
    moe_plan *p = moe_plan_alloc(n, E, (size_t)n * 2);
    moe_metrics *mt = moe_metrics_alloc(E);
    gsl_rng *rng = moe_rng_alloc(1, MOE_STREAM_GSHARD);
    /* fairseq's top2gating routes the whole batch as one group: route without routing groups,
     * and compute the per-group metrics over blocks of group_size tokens of that plan */
    moe_route_opts ro = o;
    ro.group_size = 0;
    int rc = moe_router_alloc(moe_router_find("gshard"), &ro, n, E, &r);
    CHECK(!rc && p && mt && rng, "%s: gshard router: %s", name, moe_errmsg());
    if (rc || !p || !mt || !rng)
        goto out;
    moe_route_in in = {.n = n, .m = E, .logits = L, .uniforms = u, .rng = rng};
    CHECK_INT(moe_router_route(r, &in, p), MOE_OK);
    json_t *ent = json_object_get(c, "entries");
    int same = p->n_entries == json_array_size(ent);
    for (size_t i = 0; same && i < json_array_size(ent); i++) {
        json_t *x = json_array_get(ent, i);
        int found = 0; /* the router emits by token, then choice rank, as fairseq's list */
        for (size_t q = 0; q < p->n_entries && !found; q++)
            found = p->entries[q].token == json_integer_value(json_array_get(x, 0)) &&
                    p->entries[q].expert == json_integer_value(json_array_get(x, 1)) &&
                    p->entries[q].slot == json_integer_value(json_array_get(x, 2));
        same = found;
    }
    CHECK(same, "%s: gshard's plan equals fairseq top2gating's (%zu entries)", name,
          p->n_entries);
    CHECK_INT(moe_metrics_set_opts(mt, &o), MOE_OK);
    CHECK_INT(moe_metrics_compute(p, L, 0, 0, 0, 0, mt), MOE_OK);
    json_t *exp = json_object_get(c, "expected");
    char what[160];
    snprintf(what, sizeof what, "%s (gshard): overflow_expert1", name);
    check_value(what, mt->overflow_expert1,
                json_number_value(json_object_get(exp, "overflow_expert1")));
    snprintf(what, sizeof what, "%s (gshard): overflow_expert2", name);
    check_value(what, mt->overflow_expert2,
                json_number_value(json_object_get(exp, "overflow_expert2")));
out:
    gsl_rng_free(rng);
    moe_router_free(r);
    moe_metrics_free(mt);
    moe_plan_free(p);
    free(u);
}

static void test_fixture(const char *path)
{
    json_error_t jerr;
    json_t *root = json_load_file(path, 0, &jerr);
    CHECK(root != NULL, "read %s: %s", path, root ? "" : jerr.text);
    json_t *cases = json_object_get(root, "cases");
    CHECK(json_array_size(cases) >= 4, "%s has %zu cases", path, json_array_size(cases));
    for (size_t i = 0; i < json_array_size(cases); i++) {
        json_t *c = json_array_get(cases, i);
        const int n = (int)json_integer_value(json_object_get(c, "T"));
        const int E = (int)json_integer_value(json_object_get(c, "E"));
        double *L = doubles_2d(json_object_get(c, "logits"), n, E);
        json_t *hj = json_object_get(c, "noisy_logits");
        double *H = json_is_null(hj) ? NULL : doubles_2d(hj, n, E);
        moe_route_opts o;
        moe_route_opts_default(&o);
        o.groups = (int)json_integer_value(json_object_get(c, "groups"));
        o.group_size = (int)json_integer_value(json_object_get(c, "group_size"));
        o.sequence_length = (int)json_integer_value(json_object_get(c, "sequence_length"));
        o.score = score_of(json_string_value(json_object_get(c, "score")));
        if (L) {
            test_case_plan(c, &o, L, H);
            moe_route_opts g = o; /* the router's own options: no group limit, its score */
            g.groups = 0;
            g.score = MOE_SCORE_AUTO;
            test_case_gshard(c, &g, L);
        }
        free(L);
        free(H);
    }
    json_decref(root);
}

int main(int argc, char **argv)
{
    test_hand();
    test_noisy_hand();
    test_fixture(argc > 1 ? argv[1] : FIXTURE);
    return check_report("test_metrics_anchor");
}
