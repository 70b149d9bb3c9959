/* test_metrics_rows.c: the anchor losses from the router's own softmax rows (moe_metrics_attach,
 * sim/metrics_anchor.c): a plan attached to its metrics has its routers' rows pass
 * (moe_claims_rows) hand each softmax row to the metrics, which add seq_aux_loss's and
 * importance_loss_vmoe's terms as the rows come, instead of taking exp(L - lse) of every logit
 * again in moe_metrics_compute.
 *
 * Checked, on plans routed by switch, topk (k = 2, 8), gshard, hash and dsv3_bias from N(0,1)
 * logits (fixed PCG seed) or logits rounded to multiples of 1/2 (ties in the routing map, to the
 * lower index), or with the draws below 1.5 scaled down to multiples of 1e-20 (logits that
 * differ while their probabilities are equal: the router's choice by logit is then not the
 * metrics' choice by probability, and the metrics must not take the router's top-k for those
 * rows):
 *   - the values equal, bit for bit, those of the algorithmic reference
 *     moe_metrics_anchor_reference run on the plan without its logsumexps (then it takes each
 *     row's softmax with moe_softmax: exp(L - max) / sum, the router's formula, vexp.h), with
 *     sequences and routing groups, so the rows path adds the same terms in the same order;
 *   - they do not depend on the routers' threads (1, 2 and 3 threads give the same bits);
 *   - they agree with the separate pass (exp(L - lse), the values without the attachment)
 *     within the bound derived below from the rounding of the two softmax formulas;
 *   - plans the rows cannot serve fall back to the separate pass with its bits: gate noise
 *     (the noisy logits' terms), Megatron's own scores (sigmoid), k above the rows' top-k
 *     limit, and a plan whose rows were of other logits. expert_choice (k = 0: no routing map)
 *     takes the rows path too. */
#include "check.h"
#include "metrics_anchor.h"
#include "moe.h"
#include "../routers/par.h"

#include <gsl/gsl_randist.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Both NaN, or the same bits. */
static int same(double a, double b)
{
    return (isnan(a) && isnan(b)) || memcmp(&a, &b, sizeof a) == 0;
}

typedef struct {
    const char *router;
    int n, E, k, ties, seq, group;
    double noise;
    int score;
    int rows; /* 1: the rows path serves the metrics; 0: they fall back to the separate pass */
} rows_case;

typedef struct {
    double seq_aux, imp, load_vmoe, load_shazeer;
} losses;

static losses losses_of(const moe_metrics *mt)
{
    return (losses){mt->seq_aux_loss, mt->importance_loss_vmoe, mt->load_loss_vmoe,
                    mt->load_loss_shazeer};
}

static int same_losses(losses a, losses b)
{
    return same(a.seq_aux, b.seq_aux) && same(a.imp, b.imp) && same(a.load_vmoe, b.load_vmoe) &&
           same(a.load_shazeer, b.load_shazeer);
}

/* Routes L (token ids ids, for hash) into plan (attached to mt) with a fresh generator of seed
 * 5, then the metrics. */
static int route_and_measure(moe_router *r, const double *L, const int64_t *ids, int n, int E,
                             moe_plan *plan, moe_metrics *mt)
{
    gsl_rng *rng = moe_rng_alloc(5, 1);
    moe_route_in in = {n, E, L, ids, NULL, rng, NULL, NULL, 0, NULL, NULL};
    int rc = rng ? moe_router_route(r, &in, plan) : MOE_ENOMEM;
    if (!rc)
        rc = moe_metrics_compute(plan, L, 0, 0, 0, 0, mt);
    if (rng)
        gsl_rng_free(rng);
    return rc;
}

/* The tolerance between the rows path (p' = exp(L - m) / s, m the row maximum, s the sum of
 * exp(L - m)) and the separate pass (p'' = exp(L - lse), lse = m + log s), u = 2^-53:
 *   p': L - m rounds with relative error u, which exp turns into |L - m| u; exp itself u; s
 *       holds E rounded terms and E - 1 rounded additions, (2E) u; the division u:
 *       |p'/p - 1| <= (|L - m| + 2E + 2) u.
 *   p'': lse carries the error of s, (2E) u, of log, u, and its own rounding |lse| u; L - lse
 *       rounds with |L - lse| u; exp u: |p''/p - 1| <= (|L - lse| + |lse| + 2E + 2) u.
 *   With |L| < 8 here (N(0,1), E*n < 2^20 draws) and lse < 8 + log E < 14: together
 *   d = (2 * 8 + 14 + 14 + 8 + 4E + 4) u = (4E + 56) u per probability.
 * A sum over n of either, positive terms in the same order: its own rounding (n - 1) u each,
 * so the sums of p differ by at most D = d + 2 (n - 1) u relative. seq_aux_loss is a sum of E
 * positive products of those sums and equal counts (the routing maps agree: N(0,1) logits have
 * no two values of a row within 1e-12 of each other) plus its own E-term rounding: rel D + 2E u.
 * importance_loss_vmoe = cv^2 of the sums x (population, mean mu): perturbing each x by at most
 * D relative moves sd by at most D mu (sqrt(1 + cv^2) + 1) and mu by D mu, so cv by at most
 * D (2 + 2 cv) and cv^2 by at most 4 D cv (1 + cv); GSL's mean and variance round within
 * E u relative each, which the same argument adds as 4 (2 E u) cv (1 + cv) + 2 E u cv^2.
 * Both checks take twice those bounds. */
static void check_close_to_exact(const rows_case *c, losses got, losses ex)
{
    const double u = 0x1p-53, E = c->E;
    const double D = (4.0 * E + 56.0) * u + 2.0 * (c->n - 1) * u;
    CHECK(same(got.seq_aux, ex.seq_aux) || /* (NaN in both for expert_choice: k = 0) */
              fabs(got.seq_aux - ex.seq_aux) <= 2.0 * (D + 2.0 * E * u) * fabs(ex.seq_aux),
          "%s k %d E %d: seq_aux_loss %.17g, separate pass %.17g", c->router, c->k, c->E,
          got.seq_aux, ex.seq_aux);
    const double cv = sqrt(ex.imp);
    const double tol = 2.0 * (4.0 * (D + 2.0 * E * u) * cv * (1.0 + cv) + 2.0 * E * u * ex.imp);
    CHECK(fabs(got.imp - ex.imp) <= tol, "%s k %d E %d: importance_loss_vmoe %.17g, separate "
          "pass %.17g (tol %g)", c->router, c->k, c->E, got.imp, ex.imp, tol);
    CHECK(same(got.load_shazeer, ex.load_shazeer), "%s: load_loss_shazeer from the loads",
          c->router);
}

static void run_case(const rows_case *c, gsl_rng *g)
{
    const int n = c->n, E = c->E;
    double *L = malloc((size_t)n * E * sizeof *L);
    int64_t *ids = malloc((size_t)n * sizeof *ids);
    moe_plan *plan = moe_plan_alloc(n, E, (size_t)n * (size_t)c->k + 16);
    moe_metrics *mt = moe_metrics_alloc(E), *ref = moe_metrics_alloc(E);
    moe_router *r = NULL;
    moe_route_opts o;
    moe_route_opts_default(&o);
    o.k = c->k, o.cf_set = 1, o.cf_num = 5, o.cf_den = 4, o.noise_std = c->noise;
    o.score = c->score;
    int rc = L && ids && plan && mt && ref ? moe_router_alloc(moe_router_find(c->router), &o, n, E, &r)
                                    : MOE_ENOMEM;
    CHECK(rc == MOE_OK, "%s: set-up: %s", c->router, moe_errmsg());
    if (rc)
        goto out;
    for (int t = 0; t < n; t++)
        ids[t] = (int64_t)t * 7919 % 50021; /* hash = mod: experts in no pattern of t */
    for (size_t i = 0; i < (size_t)n * E; i++) {
        const double x = gsl_ran_gaussian_ziggurat(g, 1.0);
        L[i] = c->ties ? round(2.0 * x) / 2.0 : x;
        /* ties 2: the draws above 1.5 as multiples of 1/2, the others as multiples of 1e-20
         * (distinct doubles for distinct multiples): next to a row maximum of 1.5 or more,
         * every L - max of the small ones rounds to -max (1e-20 is far below half its ulp),
         * and in a row without one exp(L - max) is 1.0 for all of them, so distinct logits
         * share a probability: the router's choice by logit (the larger) and the metrics'
         * choice by probability (the lower expert) differ wherever such values meet the k-th
         * place */
        if (c->ties == 2)
            L[i] = x >= 1.5 ? round(2.0 * x) / 2.0 : round(4.0 * x) * 1e-20;
    }
    if ((rc = moe_metrics_set_opts(mt, &r->opts)) || (rc = moe_metrics_set_opts(ref, &r->opts)))
        goto out;
    mt->sequence_length = ref->sequence_length = c->seq;
    mt->group_size = ref->group_size = c->group;
    if ((rc = moe_metrics_attach(mt, plan, n, r->k)))
        goto out;

    /* threads 2 (the machine's), then 1 and 3: the same bits */
    losses by_threads[3];
    const int threads[3] = {2, 1, 3};
    for (int i = 0; i < 3 && !rc; i++) {
        moe_par_set_threads(threads[i]);
        rc = route_and_measure(r, L, ids, n, E, plan, mt);
        by_threads[i] = losses_of(mt);
    }
    moe_par_set_threads(0);
    CHECK(rc == MOE_OK, "%s: route and metrics: %s", c->router, moe_errmsg());
    if (rc)
        goto out;
    CHECK(same_losses(by_threads[1], by_threads[0]) && same_losses(by_threads[2], by_threads[0]),
          "%s k %d E %d: 1, 2 and 3 threads give the same bits (seq_aux %.17g %.17g %.17g)",
          c->router, c->k, E, by_threads[1].seq_aux, by_threads[0].seq_aux,
          by_threads[2].seq_aux);
    const losses got = by_threads[0];
    CHECK(!c->rows || plan->rows_of == L, "%s: the rows pass saw every row of these logits",
          c->router);
    /* the z-loss's sum of the token-choice routers' rows pass (added chunk by chunk as the rows
     * come): the serial loop over the plan's logsumexps, bit for bit */
    if (c->rows && c->k > 0 && strcmp(c->router, "expert_choice") != 0) {
        double z = 0.0;
        for (int t = 0; t < n; t++)
            z += plan->lse[t] * plan->lse[t];
        CHECK(plan->lse_of == L && plan->lse_sumsq_of == L && same(plan->lse_sumsq, z) &&
                  same(mt->z_loss, z / n),
              "%s k %d E %d: the pass's sum of lse^2 %.17g, the serial loop %.17g", c->router,
              c->k, E, plan->lse_sumsq, z);
    }

    /* the separate pass on the same plan (the rows set aside) */
    const double *rows_of = plan->rows_of;
    plan->rows_of = NULL;
    rc = moe_metrics_compute(plan, L, 0, 0, 0, 0, mt);
    const losses ex = losses_of(mt);
    CHECK(rc == MOE_OK, "%s: separate pass", c->router);
    if (c->rows) {
        /* the reference with the router's softmax formula (no logsumexps: moe_softmax) */
        const double *lse_of = plan->lse_of;
        plan->lse_of = NULL;
        memcpy(ref->kept_load, mt->kept_load, (size_t)E * sizeof *ref->kept_load);
        rc = moe_metrics_anchor_reference(plan, L, ref);
        plan->lse_of = lse_of;
        CHECK(rc == MOE_OK, "%s: reference", c->router);
        const losses want = losses_of(ref);
        CHECK(same_losses(got, want),
              "%s k %d E %d seq %d group %d: rows path = reference with the router's softmax "
              "(seq_aux %.17g vs %.17g, importance %.17g vs %.17g)",
              c->router, c->k, E, c->seq, c->group, got.seq_aux, want.seq_aux, got.imp,
              want.imp);
        if (!c->ties)
            check_close_to_exact(c, got, ex);
    } else {
        CHECK(same_losses(got, ex), "%s k %d E %d: falls back to the separate pass, its bits "
              "(seq_aux %.17g vs %.17g)", c->router, c->k, E, got.seq_aux, ex.seq_aux);
    }
    plan->rows_of = rows_of;

    /* rows of other logits (L2: L with its first half of rows shifted by 1/4): the metrics of
     * L take the separate pass over L, the reference's values */
    if (c->rows) {
        double *L2 = malloc((size_t)n * E * sizeof *L2);
        CHECK(L2 != NULL, "alloc");
        if (L2) {
            for (size_t i = 0; i < (size_t)n * E; i++)
                L2[i] = L[i] + (i < (size_t)n / 2 * E ? 0.25 : 0.0);
            gsl_rng *rng = moe_rng_alloc(5, 1);
            moe_route_in in = {n, E, L2, ids, NULL, rng, NULL, NULL, 0, NULL, NULL};
            rc = rng ? moe_router_route(r, &in, plan) : MOE_ENOMEM;
            if (!rc)
                rc = moe_metrics_compute(plan, L, 0, 0, 0, 0, mt);
            memcpy(ref->kept_load, mt->kept_load, (size_t)E * sizeof *ref->kept_load);
            if (!rc)
                rc = moe_metrics_anchor_reference(plan, L, ref);
            CHECK(rc == MOE_OK && plan->rows_of == L2 && same_losses(losses_of(mt), losses_of(ref)),
                  "%s: rows of other logits are not taken (seq_aux %.17g, reference %.17g)",
                  c->router, mt->seq_aux_loss, ref->seq_aux_loss);
            if (rng)
                gsl_rng_free(rng);
            free(L2);
        }
    }
out:
    moe_router_free(r);
    moe_plan_free(plan);
    moe_metrics_free(mt);
    moe_metrics_free(ref);
    free(L);
    free(ids);
}

int main(void)
{
    gsl_rng *g = moe_rng_alloc(2026, 0);
    const rows_case cases[] = {
        {"switch", 4096, 64, 1, 0, 0, 0, 0.0, MOE_SCORE_AUTO, 1},
        {"switch", 2048, 20, 1, 1, 256, 512, 0.0, MOE_SCORE_AUTO, 1},
        {"topk", 4096, 64, 2, 0, 512, 1024, 0.0, MOE_SCORE_AUTO, 1},
        {"topk", 4096, 64, 2, 1, 0, 0, 0.0, MOE_SCORE_AUTO, 1},
        {"topk", 2048, 256, 8, 0, 0, 256, 0.0, MOE_SCORE_AUTO, 1},
        {"topk", 2048, 256, 8, 1, 128, 0, 0.0, MOE_SCORE_AUTO, 1},
        {"gshard", 3000, 20, 2, 0, 1000, 0, 0.0, MOE_SCORE_AUTO, 1},
        {"gshard", 4096, 64, 2, 1, 0, 2048, 0.0, MOE_SCORE_AUTO, 1},
        {"switch", 1024, 20, 1, 2, 0, 0, 0.0, MOE_SCORE_AUTO, 1}, /* equal p, distinct L */
        {"topk", 1024, 64, 2, 2, 256, 0, 0.0, MOE_SCORE_AUTO, 1},
        {"topk", 1024, 64, 8, 2, 0, 0, 0.0, MOE_SCORE_AUTO, 1},
        {"gshard", 1024, 20, 2, 2, 0, 0, 0.0, MOE_SCORE_AUTO, 1},
        /* E = 8: chunks of 2048 rows, sequences and groups ending inside them, the last group
         * shorter (6144 = 9 x 640 + 384); k = E: every expert in the routing map */
        {"switch", 6144, 8, 1, 0, 96, 640, 0.0, MOE_SCORE_AUTO, 1},
        {"topk", 6144, 8, 8, 0, 96, 640, 0.0, MOE_SCORE_AUTO, 1},
        {"gshard", 6144, 8, 2, 1, 0, 640, 0.0, MOE_SCORE_AUTO, 1},
        {"switch", 2048, 8, 1, 1, 0, 0, 0.0, MOE_SCORE_AUTO, 1}, /* ties in L */
        {"switch", 2048, 8, 1, 2, 0, 0, 0.0, MOE_SCORE_AUTO, 1}, /* equal p, distinct L */
        {"topk", 2048, 8, 2, 1, 0, 0, 0.0, MOE_SCORE_AUTO, 1},
        {"topk", 2048, 8, 2, 2, 0, 0, 0.0, MOE_SCORE_AUTO, 1},
        {"gshard", 2048, 8, 2, 2, 0, 0, 0.0, MOE_SCORE_AUTO, 1}, /* equal p, distinct L */
        /* hash: no choices of its own by logit (the routing map from the softmax's argmax of
         * p alone); E = 256 one sequence and one group (the sums of p the router's own) */
        {"hash", 2048, 64, 1, 2, 0, 0, 0.0, MOE_SCORE_AUTO, 1}, /* equal p, distinct L */
        {"hash", 6144, 8, 1, 1, 96, 640, 0.0, MOE_SCORE_AUTO, 1},
        {"hash", 1024, 256, 1, 0, 0, 0, 0.0, MOE_SCORE_AUTO, 1},
        /* dsv3_bias: choices by its biased sigmoid keys, none the metrics can take, so the
         * routing map is each row's top-k of p, several rows at a time (k >= 3: the selection
         * networks, which decline rows with equal p) */
        {"dsv3_bias", 2048, 64, 8, 0, 0, 256, 0.0, MOE_SCORE_AUTO, 1},
        {"dsv3_bias", 2048, 256, 8, 2, 128, 0, 0.0, MOE_SCORE_AUTO, 1}, /* equal p */
        {"dsv3_bias", 2048, 64, 2, 1, 0, 0, 0.0, MOE_SCORE_AUTO, 1},    /* ties in L */
        {"dsv3_bias", 6144, 8, 4, 0, 96, 640, 0.0, MOE_SCORE_AUTO, 1},
        /* E = 16 and 32: the pass's sums of p and of lse^2 in one loop of their own */
        {"topk", 2048, 16, 2, 0, 0, 0, 0.0, MOE_SCORE_AUTO, 1},
        {"switch", 2048, 32, 1, 0, 0, 0, 0.0, MOE_SCORE_AUTO, 1},
        {"topk", 2048, 64, 2, 0, 0, 0, 1.0, MOE_SCORE_AUTO, 0},       /* gate noise */
        {"topk", 2048, 64, 2, 0, 0, 0, 0.0, MOE_SCORE_SIGMOID, 0},    /* own scores */
        /* expert_choice: its rows pass, with step 1 on it where the lists fit (E = 64, 8),
         * else for the metrics alone (E = 2: C = 1.25 n / 2 fills a block's lists) */
        {"expert_choice", 2048, 64, 1, 0, 0, 0, 0.0, MOE_SCORE_AUTO, 1},
        {"expert_choice", 6144, 8, 1, 0, 96, 640, 0.0, MOE_SCORE_AUTO, 1},
        {"expert_choice", 4096, 2, 1, 0, 0, 0, 0.0, MOE_SCORE_AUTO, 1},
        {"topk", 1024, 128, 65, 0, 0, 0, 0.0, MOE_SCORE_AUTO, 0},     /* k above the limit */
    };
    for (size_t i = 0; g && i < sizeof cases / sizeof cases[0]; i++)
        run_case(&cases[i], g);
    CHECK(g != NULL, "rng");
    if (g)
        gsl_rng_free(g);
    printf("test_metrics_rows: %d passed, %d failed\n", check_pass, check_fail);
    return check_fail != 0;
}
