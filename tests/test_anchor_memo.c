/* test_anchor_memo.c: the anchor metrics' sums over a batch's rows kept across points
 * (sim/anchor_memo.c, taken by moe_metrics_compute_memo).
 *
 * Plans routed by topk (k = 2, the router's logsumexps kept) from N(0,1) logits (fixed PCG
 * seed), n = 256, E = 16, their metrics without a rows observer (so the anchor pass reads every
 * row: the pass the memo replaces). Checked:
 *   - a plan's metrics through the memo are the same bits, every metric of the table, as
 *     moe_metrics_compute's without it: when the memo records (first pass of a key) and when it
 *     reuses the sums another plan of the same key recorded (the same logits routed at another
 *     capacity factor: other entries, the same sums);
 *   - each input of the pass changed alone misses (another record, no hit) a key that differs
 *     only in it, kept and used just before, and gives the metrics computed without the memo:
 *     another batch number of the same logits, the same logits at another address,
 *     sequence_length, group_size, the score function (softmax, Megatron's sigmoid and sqrt-softplus scores), k,
 *     one logsumexp one ulp off, the logsumexps not kept, fewer tokens;
 *   - plans with gate noise are neither kept nor served (their terms read the noisy logits);
 *   - batch number 0 (logits that are not a cached batch) and a NULL memo keep nothing;
 *   - dropping a batch's keys makes its next pass miss;
 *   - the z-loss of plans without logsumexps (the sum over rows of each row's squared
 *     logsumexp, taken from the logits) is kept per (logits, batch number, tokens) and served
 *     to the next plan of the same key with the same bits, missed for another batch number,
 *     address or number of tokens; plans with logsumexps never take that pass. */
#include "anchor_memo.h"
#include "check.h"
#include "metric_table.h"
#include "moe.h"

#include <gsl/gsl_randist.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

enum { N = 256, E = 16 };

/* Every metric of the table, the loads and the histograms: the same bits (NaN equals NaN). */
static int same_metrics(const moe_metrics *a, const moe_metrics *b)
{
    for (int i = 0; i < MOE_POINT_NMETRICS; i++) {
        const double u = moe_metric_value(a, moe_metric_row(i)),
                     v = moe_metric_value(b, moe_metric_row(i));
        if (memcmp(&u, &v, sizeof u) != 0 && !(isnan(u) && isnan(v)))
            return 0;
    }
    return memcmp(a->assigned_load, b->assigned_load, E * sizeof *a->assigned_load) == 0 &&
           memcmp(a->kept_load, b->kept_load, E * sizeof *a->kept_load) == 0 &&
           memcmp(a->experts_per_token, b->experts_per_token,
                  (E + 1) * sizeof *a->experts_per_token) == 0;
}

/* topk with k experts, capacity factor cf_num/4, noise_std noise, routing n tokens of L. */
static moe_plan *route(const double *L, int n, int k, int cf_num, double noise)
{
    moe_route_opts o;
    moe_route_opts_default(&o);
    o.k = k, o.cf_set = 1, o.cf_num = cf_num, o.cf_den = 4, o.noise_std = noise;
    moe_router *r = NULL;
    moe_plan *plan = moe_plan_alloc(N, E, (size_t)N * (size_t)k + 16);
    gsl_rng *rng = moe_rng_alloc(5, MOE_STREAM_NOISE);
    moe_route_in in = {n, E, L, NULL, NULL, rng, NULL, NULL, 0, NULL, NULL};
    int rc = plan && rng ? moe_router_alloc(moe_router_find("topk"), &o, N, E, &r) : MOE_ENOMEM;
    if (!rc)
        rc = moe_router_route(r, &in, plan);
    CHECK(rc == MOE_OK, "route topk k %d cf %d/4 noise %g: %s", k, cf_num, noise, moe_errmsg());
    moe_router_free(r);
    gsl_rng_free(rng);
    if (rc) {
        moe_plan_free(plan);
        return NULL;
    }
    return plan;
}

typedef struct {
    int seq, group, score;
} opts3;

static moe_metrics *metrics_for(opts3 o)
{
    moe_metrics *mt = moe_metrics_alloc(E);
    if (mt)
        mt->sequence_length = o.seq, mt->group_size = o.group, mt->score = o.score;
    return mt;
}

static moe_anchor_memo_stats stats(const moe_anchor_memo *m) { return moe_anchor_memo_get_stats(m); }

/* The metrics of plan on L through memo m as batch `batch` equal those without a memo; the
 * memo's counts then grew by (hits, records) (not checked when hits < 0). */
static void memo_pass(const char *what, moe_anchor_memo *m, unsigned long batch,
                       const moe_plan *plan, const double *L, opts3 o, long hits, long records)
{
    moe_metrics *a = metrics_for(o), *b = metrics_for(o);
    const moe_anchor_memo_stats s0 = m ? stats(m) : (moe_anchor_memo_stats){0, 0, 0, 0};
    const int ok = a && b && plan &&
                   moe_metrics_compute_memo(plan, L, 0, 0, 0, 0, m, batch, a) == MOE_OK &&
                   moe_metrics_compute(plan, L, 0, 0, 0, 0, b) == MOE_OK;
    CHECK(ok, "%s: metrics computed (%s)", what, moe_errmsg());
    CHECK(ok && same_metrics(a, b), "%s: the metrics without the memo, bit for bit", what);
    if (m && hits >= 0) {
        const moe_anchor_memo_stats s1 = stats(m);
        CHECK(s1.hits - s0.hits == hits && s1.records - s0.records == records,
              "%s: %ld hits, %ld records; expected %ld, %ld", what, s1.hits - s0.hits,
              s1.records - s0.records, hits, records);
    }
    moe_metrics_free(a);
    moe_metrics_free(b);
}

/* The z-loss of plan (no logsumexps of its own) through m as batch `batch`: the metrics'
 * bits without the memo (memo_pass), and the z counts grew by (hits, records). */
static void z_pass(const char *what, moe_anchor_memo *m, unsigned long batch,
                   const moe_plan *plan, const double *L, long hits, long records)
{
    const moe_anchor_memo_stats s = stats(m);
    memo_pass(what, m, batch, plan, L, (opts3){0, 0, MOE_SCORE_AUTO}, -1, -1);
    const moe_anchor_memo_stats t = stats(m);
    CHECK(t.z_hits - s.z_hits == hits && t.z_records - s.z_records == records,
          "%s: z-loss %ld hits, %ld records; expected %ld, %ld", what, t.z_hits - s.z_hits,
          t.z_records - s.z_records, hits, records);
}

/* The pass of (vp, vL, vo) as batch vb misses the key of (bp, bL, bo) as batch 1, kept and used
 * just before: a record, no hit; the key of the base is kept and hit after it. */
static void variant(const char *what, moe_anchor_memo *m, const moe_plan *bp, const double *bL,
                    opts3 bo, unsigned long vb, const moe_plan *vp, const double *vL, opts3 vo)
{
    const moe_anchor_memo_stats s = stats(m);
    memo_pass("the base key", m, 1, bp, bL, bo, -1, -1);
    const moe_anchor_memo_stats t = stats(m);
    CHECK(t.hits + t.records == s.hits + s.records + 1, "%s: the base pass counted once", what);
    memo_pass(what, m, vb, vp, vL, vo, 0, 1);
    memo_pass("the base key after", m, 1, bp, bL, bo, 1, 0);
}

int main(void)
{
    double *L = malloc((size_t)N * E * sizeof *L), *L2 = malloc((size_t)N * E * sizeof *L2);
    gsl_rng *g = moe_rng_alloc(3, 1);
    moe_anchor_memo *m = moe_anchor_memo_alloc();
    if (!L || !L2 || !g || !m)
        return 1;
    for (size_t i = 0; i < (size_t)N * E; i++)
        L[i] = L2[i] = gsl_ran_gaussian_ziggurat(g, 1.0);
    const opts3 o = {0, 0, MOE_SCORE_AUTO};
    moe_plan *p1 = route(L, N, 2, 4, 0.0), *p2 = route(L, N, 2, 2, 0.0);
    CHECK(p1 && p2 && p1->lse_of == L && p2->lse_of == L, "topk keeps its logsumexps");
    CHECK(p1 && p2 && p1->n_entries != p2->n_entries, "cf 1 and cf 0.5: other plans");

    memo_pass("first pass of a key", m, 1, p1, L, o, 0, 1);
    memo_pass("the same key at another capacity factor", m, 1, p2, L, o, 1, 0);
    memo_pass("the same plan again", m, 1, p1, L, o, 1, 0);

    /* each input alone: a miss, recorded; the key it differs from is kept (used just before,
     * and hit again after) */
    const opts3 g64 = {0, 64, MOE_SCORE_AUTO}; /* sequences and groups apart (not shared) */
    variant("another batch number", m, p2, L, o, 2, p2, L, o);
    moe_plan *q = route(L2, N, 2, 2, 0.0); /* the same values at another address */
    variant("the same logits at another address", m, p2, L, o, 1, q, L2, o);
    moe_plan_free(q);
    variant("sequence_length 128", m, p2, L, g64, 1, p2, L, (opts3){128, 64, MOE_SCORE_AUTO});
    variant("group_size 128", m, p2, L, g64, 1, p2, L, (opts3){0, 128, MOE_SCORE_AUTO});
    variant("Megatron's sigmoid scores", m, p2, L, o, 1, p2, L,
            (opts3){0, 0, MOE_SCORE_SIGMOID});
    variant("Megatron's sqrt-softplus scores", m, p2, L, (opts3){0, 0, MOE_SCORE_SIGMOID}, 1, p2,
            L, (opts3){0, 0, MOE_SCORE_SQRTSOFTPLUS});
    q = route(L, N, 1, 2, 0.0);
    variant("k = 1", m, p2, L, o, 1, q, L, o);
    moe_plan_free(q);
    q = route(L, N, 2, 2, 0.0);
    if (q) {
        q->lse[7] = nextafter(q->lse[7], INFINITY);
        variant("one logsumexp one ulp up", m, p2, L, o, 1, q, L, o);
        q->lse_of = NULL;
        variant("the logsumexps not kept", m, p2, L, o, 1, q, L, o);
    }
    moe_plan_free(q);
    q = route(L, N / 2, 2, 2, 0.0); /* sequences and groups of 64 tokens in both */
    const opts3 s64 = {64, 64, MOE_SCORE_AUTO};
    variant("the first half of the tokens", m, p2, L, s64, 1, q, L, s64);
    moe_plan_free(q);
    q = route(L, N, 2, 2, 1.0);
    CHECK(q && q->noisy_logits, "noise_std 1: a noisy plan");
    memo_pass("gate noise: not kept", m, 1, q, L, o, 0, 0);
    memo_pass("gate noise again: not served", m, 1, q, L, o, 0, 0);
    moe_plan_free(q);

    /* what a memo keeps: the MOE_ANCHOR_MEMO_KEYS = 4 keys used last; a drop removes one
     * batch's keys only */
    moe_anchor_memo_free(m);
    m = moe_anchor_memo_alloc();
    if (!m)
        return 1;
    memo_pass("batch 0: nothing kept", m, 0, p2, L, o, 0, 0);
    memo_pass("NULL memo", NULL, 1, p2, L, o, 0, 0);
    for (unsigned long b = 1; b <= 5; b++)
        memo_pass("batches 1 to 5 recorded", m, b, p1, L, o, 0, 1);
    memo_pass("batch 1 replaced by batch 5", m, 1, p2, L, o, 0, 1);
    memo_pass("batch 3 still kept", m, 3, p2, L, o, 1, 0);
    moe_anchor_memo_drop(m, 3);
    memo_pass("batch 3 dropped: recorded again", m, 3, p2, L, o, 0, 1);
    memo_pass("batch 1 kept after the drop of 3", m, 1, p2, L, o, 1, 0);

    /* the z-loss's sum of plans without logsumexps: kept per (logits, batch, n, M) */
    moe_anchor_memo_free(m);
    m = moe_anchor_memo_alloc();
    moe_plan *z1 = route(L, N, 2, 4, 0.0), *z2 = route(L, N, 2, 2, 0.0),
             *zc = route(L2, N, 2, 2, 0.0), *zh = route(L, N / 2, 2, 2, 0.0);
    if (!m || !z1 || !z2 || !zc || !zh)
        return 1;
    z1->lse_of = z2->lse_of = zc->lse_of = zh->lse_of = NULL;
    z_pass("first z pass", m, 1, z1, L, 0, 1);
    z_pass("the same logits at another capacity factor", m, 1, z2, L, 1, 0);
    z_pass("another batch number", m, 2, z2, L, 0, 1);
    z_pass("the same values at another address", m, 1, zc, L2, 0, 1);
    z_pass("the first half of the tokens", m, 1, zh, L, 0, 1);
    z_pass("batch 0", m, 0, z2, L, 0, 0);
    z_pass("a plan with logsumexps: no z pass", m, 1, p2, L, 0, 0);
    moe_anchor_memo_drop(m, 1);
    z_pass("batch 1 dropped", m, 1, z2, L, 0, 1);
    z_pass("batch 2 kept", m, 2, z1, L, 1, 0);
    moe_plan_free(z1);
    moe_plan_free(z2);
    moe_plan_free(zc);
    moe_plan_free(zh);

    moe_plan_free(p1);
    moe_plan_free(p2);
    moe_anchor_memo_free(m);
    gsl_rng_free(g);
    free(L);
    free(L2);
    printf("test_anchor_memo: %d passed, %d failed\n", check_pass, check_fail);
    return check_fail != 0;
}
