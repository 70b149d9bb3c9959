/* test_pipeline.c: the one-batch pipeline (sim/pipeline.c) on a small topk layer, T = 6 tokens,
 * E = 3 experts, k = 1, cf = 1 (C = ROUND(1*6*1/3) = 2 slots), D = 4, F = 5, GELU tanh.
 * Reference values come from the library's own parts run by hand on the same inputs, never from
 * the pipeline's output:
 *   - the plan: the same router type and options routed directly (moe_router_route);
 *   - y: moe_layer_forward_naive (the layer's double-precision reference) on that plan;
 *   - output_error_dense: y against moe_layer_forward_naive on a hand-built dense plan, one
 *     entry (t, e, slot t) per token and expert with combine weight softmax(logits[t])[e],
 *     which is sum_e p[t,e] FFN_e(x_t);
 *   - output_error_dropless: y against the naive forward of the plan routed with dropless = 1;
 *   - the gate: logits[t][e] = sum_d x[t][d] wg[d][e] summed in double here;
 *   - the phase times: total is the sum of the five phases, layer phases 0 without a layer;
 *   - the stages on their own (moe_pipeline_route_stage, moe_pipeline_layer_stage): the same
 *     plan as the router routed directly, y within 1e-4 of moe_layer_forward_naive.
 * The route memo (route_memo.h): for relu, topp and sinkhorn (k = 2) under the claim orders
 * choice_major, token_major, gate and probs, a pipeline routes 512 tokens x 16 experts at
 * cf 0.5, 1 and 2 given the memo, each point in a pipeline of its own (as `moesim run` runs
 * them); the points after the first reuse the first one's work (the memo's count), and each
 * plan (every entry's fields bit for bit, capacity, loads, importance, claims, per-rank counts,
 * logsumexps) and every metric of the table equals that of a pipeline without a memo routing
 * the same batch at the same cf. A memo is not reused by another order, another batch number
 * or a router that draws random numbers.
 * Error paths: a layer without experts, experts of the wrong E, a plan whose capacity exceeds
 * the layer's slots given to the layer stage.
 */
#include "check.h"
#include "metric_table.h"
#include "options.h"
#include "pipeline.h"
#include "route_memo.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

enum { T = 6, E = 3, D = 4, F = 5 };

/* logits (T,E): tokens 0, 1, 3, 5 prefer expert 0 (4 claims for C = 2 slots: 2 dropped),
 * token 2 expert 1, token 4 expert 2. */
static const double logits[T * E] = {2.0, 0.5, 0.1, 1.5, 0.2, 0.3, 0.1, 1.2, 0.4,
                                     1.1, 0.9, 0.2, 0.3, 0.1, 0.8, 0.9, 0.3, 0.6};

static float frand(unsigned *s) /* deterministic values in [-1, 1) */
{
    *s = *s * 1103515245u + 12345u;
    return (float)((*s >> 8) & 0xffff) / 32768.0f - 1.0f;
}

static void fill(float *v, size_t n, unsigned *s, float scale)
{
    for (size_t i = 0; i < n; i++)
        v[i] = scale * frand(s);
}

static moe_route_opts opts_of(const char *dropless)
{
    moe_route_opts o;
    moe_route_opts_default(&o);
    if (moe_route_opts_set(&o, "k", "1") || moe_route_opts_set(&o, "capacity_factor", "1") ||
        moe_route_opts_set(&o, "dropless", dropless))
        fprintf(stderr, "options: %s\n", moe_errmsg());
    return o;
}

/* The plan of t's router on the logits, routed directly. */
static moe_plan *route_direct(const moe_route_opts *o)
{
    moe_router *r = NULL;
    moe_plan *p = moe_plan_alloc(T, E, (size_t)T * E);
    moe_route_in in = {T, E, logits, NULL, NULL, NULL, NULL, NULL, 0, NULL, NULL};
    if (moe_router_alloc(moe_router_find("topk"), o, T, E, &r) || moe_router_route(r, &in, p)) {
        fprintf(stderr, "direct routing: %s\n", moe_errmsg());
        moe_plan_free(p);
        p = NULL;
    }
    moe_router_free(r);
    return p;
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

static void check_times(const char *what, const moe_phase_times *t, int layer)
{
    CHECK(t->total == t->gate + t->route + t->dispatch + t->experts + t->combine,
          "%s: total %g is the sum of the phases", what, t->total);
    CHECK(t->gate >= 0 && t->route >= 0 && t->dispatch >= 0 && t->experts >= 0 &&
              t->combine >= 0, "%s: phases non-negative", what);
    if (!layer)
        CHECK(t->dispatch == 0 && t->experts == 0 && t->combine == 0,
              "%s: no layer phases without a layer", what);
}

/* The route and layer stages called on their own, on workspaces of the test's. */
static void check_stages(const moe_route_opts *o, const moe_plan *ref, const moe_experts *ex,
                         const float *x)
{
    moe_router *r = NULL;
    moe_plan *p = moe_plan_alloc(T, E, (size_t)T * E);
    moe_layer *L = moe_layer_alloc(T, E, 2, D, F, ex->act), *L1 = moe_layer_alloc(T, E, 1, D, F,
                                                                                   ex->act);
    CHECK(p && L && L1, "stages: workspaces");
    CHECK_INT(moe_router_alloc(moe_router_find("topk"), o, T, E, &r), MOE_OK);
    if (!p || !L || !L1 || !r)
        goto out;
    moe_route_in in = {T, E, logits, NULL, NULL, NULL, NULL, NULL, 0, NULL, NULL};
    double sec = -1.0;
    CHECK_INT(moe_pipeline_route_stage(r, &in, p, &sec), MOE_OK);
    CHECK(same_plan(p, ref) && sec >= 0.0, "route stage: the router's plan, %g s >= 0", sec);
    CHECK_INT(moe_pipeline_route_stage(r, &in, p, NULL), MOE_OK);
    CHECK(same_plan(p, ref), "route stage without a time: the router's plan");
    float y[T * D], y_naive[T * D];
    moe_phase_times tm = {0};
    CHECK_INT(moe_pipeline_layer_stage(L, ex, p, x, y, &tm), MOE_OK);
    CHECK_INT(moe_layer_forward_naive(ex, p, x, y_naive), MOE_OK);
    double worst = 0.0;
    for (int i = 0; i < T * D; i++)
        worst = fmax(worst, fabs((double)y[i] - y_naive[i]) / (1e-6 + fabs(y_naive[i])));
    CHECK(worst < 1e-4, "layer stage: y = the naive forward (worst rel. diff %.3g)", worst);
    CHECK(tm.dispatch >= 0 && tm.experts >= 0 && tm.combine >= 0, "layer stage: phase times");
    /* C = 2 slots of the plan, 1 in the layer */
    CHECK_INT(moe_pipeline_layer_stage(L1, ex, p, x, y, NULL), MOE_EINVAL);
    moe_clear_error();
out:
    moe_router_free(r);
    moe_plan_free(p);
    moe_layer_free(L);
    moe_layer_free(L1);
}

/* a and b have the same bits: entries field by field, loads, importance, statistics */
static int same_bits(const moe_plan *a, const moe_plan *b)
{
    if (a->n_entries != b->n_entries || a->capacity != b->capacity || a->k != b->k ||
        a->n_claims != b->n_claims || memcmp(&a->aux_loss, &b->aux_loss, sizeof a->aux_loss) ||
        memcmp(a->rank_claims, b->rank_claims, sizeof a->rank_claims) ||
        memcmp(a->rank_kept, b->rank_kept, sizeof a->rank_kept) ||
        memcmp(a->assigned_load, b->assigned_load, (size_t)a->E * sizeof *a->assigned_load) ||
        memcmp(a->importance, b->importance, (size_t)a->E * sizeof *a->importance) ||
        (a->lse_of != NULL) != (b->lse_of != NULL) ||
        (a->lse_of && memcmp(a->lse, b->lse, (size_t)a->n * sizeof *a->lse)))
        return 0;
    for (size_t i = 0; i < a->n_entries; i++) {
        const moe_entry *x = &a->entries[i], *y = &b->entries[i];
        if (x->token != y->token || x->expert != y->expert || x->slot != y->slot ||
            memcmp(&x->dispatch_w, &y->dispatch_w, sizeof x->dispatch_w) ||
            memcmp(&x->combine_w, &y->combine_w, sizeof x->combine_w))
            return 0;
    }
    return 1;
}

static int same_metrics(const moe_metrics *a, const moe_metrics *b)
{
    const size_t ne = (size_t)a->E;
    if (memcmp(a->assigned_load, b->assigned_load, ne * sizeof *a->assigned_load) ||
        memcmp(a->kept_load, b->kept_load, ne * sizeof *a->kept_load) ||
        memcmp(a->importance, b->importance, ne * sizeof *a->importance) ||
        memcmp(a->experts_per_token, b->experts_per_token, (ne + 1) * sizeof *a->kept_load))
        return 0;
    for (int i = 0; i < MOE_POINT_NMETRICS; i++) { /* the scalars */
        const double u = moe_metric_value(a, moe_metric_row(i)),
                     v = moe_metric_value(b, moe_metric_row(i));
        if (memcmp(&u, &v, sizeof u) != 0 && !(isnan(u) && isnan(v)))
            return 0;
    }
    return 1;
}

enum { MT = 512, ME = 16, MD = 4 };

/* The options "key=value ..." with capacity_factor cf. */
static moe_route_opts memo_opts(const char *opts, const char *cf)
{
    moe_route_opts o;
    moe_route_opts_default(&o);
    char buf[128];
    snprintf(buf, sizeof buf, "%s", opts);
    for (char *kv = strtok(buf, " "); kv; kv = strtok(NULL, " ")) {
        char *eq = strchr(kv, '=');
        *eq = 0;
        if (moe_route_opts_set(&o, kv, eq + 1))
            fprintf(stderr, "options: %s\n", moe_errmsg());
    }
    if (moe_route_opts_set(&o, "capacity_factor", cf))
        fprintf(stderr, "options: %s\n", moe_errmsg());
    return o;
}

/* One point: router type name with options opts plus capacity_factor cf, batch number batch of
 * the memo m (NULL: none) on logits lg; its plan and metrics copied out through the pipeline. */
static int memo_point(const char *type, const char *opts, const char *cf, moe_route_memo *m,
                      unsigned long batch, const double *lg, float *x, const float *wg,
                      int (*check)(const moe_pipeline *, const void *), const void *ref)
{
    moe_route_opts o = memo_opts(opts, cf);
    moe_pipeline_cfg cfg = {.rtype = moe_router_find(type), .opts = &o, .T = MT, .M = ME,
                            .wg = wg, .flags = MOE_PIPE_METRICS, .label = "memo"};
    moe_pipeline *p = NULL;
    int ok = moe_pipeline_alloc(&cfg, &p) == MOE_OK;
    const moe_batch b = {MT, MD, ME, x, NULL, NULL, NULL, NULL, 0, NULL, NULL};
    moe_pipeline_set_memo(p, m, batch);
    ok = ok && moe_pipeline_run_gated(p, &b, 0, lg, 0.0, NULL) == MOE_OK;
    ok = ok && check(p, ref);
    moe_pipeline_free(p);
    moe_route_opts_release(&o);
    return ok;
}

static int check_none(const moe_pipeline *p, const void *ref) { (void)p, (void)ref; return 1; }

typedef struct {
    const char *type, *opts, *cf;
    const double *lg;
    float *x;
    const float *wg;
} memo_ref;

/* p's plan and metrics equal those of a pipeline without a memo on the same point */
static int check_fresh(const moe_pipeline *p, const void *ctx)
{
    const memo_ref *r = ctx;
    moe_route_opts o = memo_opts(r->opts, r->cf);
    moe_pipeline_cfg cfg = {.rtype = moe_router_find(r->type), .opts = &o, .T = MT, .M = ME,
                            .wg = r->wg, .flags = MOE_PIPE_METRICS, .label = "fresh"};
    moe_pipeline *q = NULL;
    const moe_batch b = {MT, MD, ME, r->x, NULL, NULL, NULL, NULL, 0, NULL, NULL};
    int ok = moe_pipeline_alloc(&cfg, &q) == MOE_OK &&
             moe_pipeline_run_gated(q, &b, 0, r->lg, 0.0, NULL) == MOE_OK &&
             same_bits(moe_pipeline_plan(p), moe_pipeline_plan(q)) &&
             same_metrics(moe_pipeline_metrics(p), moe_pipeline_metrics(q));
    moe_pipeline_free(q);
    moe_route_opts_release(&o);
    return ok;
}

static void check_memo(void)
{
    static double lg[MT * ME];
    static float xm[MT * MD], wgm[MD * ME];
    unsigned seed = 11;
    for (int i = 0; i < MT * ME; i++)
        lg[i] = 2.0 * frand(&seed) + (i % ME == 3 ? 0.7 : 0.0); /* expert 3 popular */
    fill(xm, MT * MD, &seed, 1.0f);
    fill(wgm, MD * ME, &seed, 0.5f);
    const char *routers[][2] = {{"relu", ""}, {"topp", "order=token_major"},
                                {"sinkhorn", "k=2"}, {"relu", "order=gate"},
                                {"topp", "order=probs"}, {"sinkhorn", "k=2 order=probs"}};
    const char *cfs[] = {"0.5", "1", "2"};
    moe_route_memo *m = moe_route_memo_alloc();
    long hits = 0;
    for (size_t i = 0; i < sizeof routers / sizeof *routers; i++)
        for (int c = 0; c < 3; c++) {
            const memo_ref ref = {routers[i][0], routers[i][1], cfs[c], lg, xm, wgm};
            CHECK(memo_point(ref.type, ref.opts, ref.cf, m, 1, lg, xm, wgm, check_fresh, &ref),
                  "memo: %s %s cf %s: the plan and metrics of a route without the memo",
                  ref.type, ref.opts, ref.cf);
            hits += c > 0;
            CHECK(moe_route_memo_get_stats(m).hits == hits, "memo: %s %s cf %s: %s", ref.type,
                  ref.opts, ref.cf, c ? "reused" : "recorded, not reused");
        }
    /* another order, another batch, a router with draws: no reuse */
    CHECK(memo_point("sinkhorn", "k=2 order=token_major", "1", m, 1, lg, xm, wgm, check_none,
                     NULL) &&
              memo_point("sinkhorn", "k=2 order=token_major", "1", m, 2, lg, xm, wgm,
                         check_none, NULL) &&
              moe_route_memo_get_stats(m).hits == hits,
          "memo: another order, another batch number: not reused");
    CHECK(memo_point("sinkhorn", "k=2 order=token_major", "2", m, 2, lg, xm, wgm, check_none,
                     NULL) &&
              moe_route_memo_get_stats(m).hits == hits + 1,
          "memo: the same batch number and options at another cf: reused");
    CHECK(memo_point("topk", "k=2 noise_std=0.5", "1", m, 2, lg, xm, wgm, check_none, NULL) &&
              moe_route_memo_batch(m) == 0,
          "memo: a router without a memo (topk) frees what the memo held");
    moe_route_memo_free(m);
}

int main(void)
{
    unsigned seed = 7;
    float x[T * D], w1[E * D * F], b1[E * F], w2[E * F * D], b2[E * D], wg[D * E];
    fill(x, T * D, &seed, 1.0f);
    fill(w1, E * D * F, &seed, 0.5f);
    fill(b1, E * F, &seed, 0.1f);
    fill(w2, E * F * D, &seed, 0.45f);
    fill(b2, E * D, &seed, 0.1f);
    fill(wg, D * E, &seed, 0.5f);
    const moe_experts ex = {E, D, F, MOE_ACT_GELU_TANH, w1, b1, w2, b2, NULL};
    moe_route_opts o = opts_of("false"), od = opts_of("true");
    moe_plan *ref = route_direct(&o), *refd = route_direct(&od);
    CHECK(ref && ref->capacity == 2 && ref->n_entries == 4,
          "direct plan: C = 2 and 4 kept entries (2 of expert 0's 4 claims dropped)");
    const moe_batch b = {T, D, E, x, NULL, (double *)logits, NULL, NULL, 0, NULL, NULL};

    /* ---- routing only ---- */
    moe_pipeline_cfg cfg = {.rtype = moe_router_find("topk"), .opts = &o, .T = T, .M = E,
                            .flags = MOE_PIPE_METRICS, .label = "test"};
    moe_pipeline *p = NULL;
    moe_phase_times tm;
    CHECK_INT(moe_pipeline_alloc(&cfg, &p), MOE_OK);
    CHECK_INT(moe_pipeline_run_batch(p, &b, NULL, &tm), MOE_OK);
    CHECK(same_plan(moe_pipeline_plan(p), ref), "routing only: the plan of the router itself");
    CHECK(moe_pipeline_output(p) == NULL && moe_pipeline_layer(p) == NULL,
          "routing only: no layer, no output");
    CHECK(moe_pipeline_metrics(p)->flops_expert_useful == 0.0 &&
              moe_pipeline_metrics(p)->num_entries == 4,
          "routing only: 4 entries, no FLOPs without a layer shape");
    check_times("routing only", &tm, 0);
    moe_pipeline_free(p);

    /* ---- a layer without experts; experts of the wrong E ---- */
    cfg.flags = MOE_PIPE_LAYER | MOE_PIPE_METRICS;
    CHECK_INT(moe_pipeline_alloc(&cfg, &p), MOE_OK);
    CHECK_INT(moe_pipeline_run_batch(p, &b, NULL, NULL), MOE_EINVAL);
    const moe_experts ex2 = {2, D, F, MOE_ACT_GELU_TANH, w1, b1, w2, b2, NULL};
    CHECK_INT(moe_pipeline_set_experts(p, &ex2), MOE_EINVAL);
    moe_pipeline_free(p);

    /* ---- layer, metrics, output errors ---- */
    cfg.flags = MOE_PIPE_LAYER | MOE_PIPE_METRICS | MOE_PIPE_ERRORS;
    cfg.w = &ex;
    CHECK_INT(moe_pipeline_alloc(&cfg, &p), MOE_OK);
    CHECK_INT(moe_pipeline_run_batch(p, &b, NULL, &tm), MOE_OK);
    check_times("layer", &tm, 1);
    CHECK(same_plan(moe_pipeline_plan(p), ref), "layer: the plan of the router itself");
    float y_naive[T * D], y_dense[T * D], y_drop[T * D];
    CHECK_INT(moe_layer_forward_naive(&ex, ref, x, y_naive), MOE_OK);
    const float *y = moe_pipeline_output(p);
    double worst = 0.0;
    for (int i = 0; i < T * D; i++)
        worst = fmax(worst, fabs((double)y[i] - y_naive[i]) / (1e-6 + fabs(y_naive[i])));
    CHECK(worst < 1e-4, "y = the naive forward of the plan (worst rel. diff %.3g)", worst);
    /* the dense mixture as a hand-built plan */
    moe_plan *dp = moe_plan_alloc(T, E, (size_t)T * E);
    CHECK_INT(moe_plan_reset(dp, T, E, E), MOE_OK);
    dp->capacity = T;
    for (int t = 0; t < T; t++) {
        double pr[E];
        moe_softmax(logits + t * E, E, pr);
        for (int e = 0; e < E; e++)
            moe_plan_push(dp, t, e, t, 1.0, pr[e]);
    }
    CHECK_INT(moe_layer_forward_naive(&ex, dp, x, y_dense), MOE_OK);
    double want = moe_rel_l2(y_naive, y_dense, T * D);
    const moe_metrics *mt = moe_pipeline_metrics(p);
    CHECK(want > 0.01 && fabs(mt->output_error_dense - want) <= 1e-4 * want,
          "output_error_dense %.9g, expected %.9g", mt->output_error_dense, want);
    CHECK_INT(moe_layer_forward_naive(&ex, refd, x, y_drop), MOE_OK);
    want = moe_rel_l2(y_naive, y_drop, T * D);
    CHECK(want > 0.01 && fabs(mt->output_error_dropless - want) <= 1e-4 * want,
          "output_error_dropless %.9g, expected %.9g", mt->output_error_dropless, want);
    CHECK(mt->flops_expert_useful == 4.0 * D * F * 4, "useful FLOPs 4*D*F per kept entry: %g",
          mt->flops_expert_useful);
    moe_pipeline_free(p);

    /* ---- a router that is dropless already: output_error_dropless = 0 ---- */
    cfg.opts = &od;
    CHECK_INT(moe_pipeline_alloc(&cfg, &p), MOE_OK);
    CHECK_INT(moe_pipeline_run_batch(p, &b, NULL, NULL), MOE_OK);
    CHECK(same_plan(moe_pipeline_plan(p), refd), "dropless: the plan of the router itself");
    CHECK(moe_pipeline_metrics(p)->output_error_dropless == 0.0,
          "dropless router: output_error_dropless = 0");
    moe_pipeline_free(p);

    /* ---- the gate: a batch without logits ---- */
    cfg.opts = &o;
    cfg.wg = wg;
    CHECK_INT(moe_pipeline_alloc(&cfg, &p), MOE_OK);
    const moe_batch bx = {T, D, E, x, NULL, NULL, NULL, NULL, 0, NULL, NULL};
    CHECK_INT(moe_pipeline_run_batch(p, &bx, NULL, &tm), MOE_OK);
    CHECK_INT(moe_pipeline_gate_computed(p), 1);
    const double *lg = moe_pipeline_logits(p);
    worst = 0.0;
    for (int t = 0; t < T; t++)
        for (int e = 0; e < E; e++) {
            double s = 0.0;
            for (int d = 0; d < D; d++)
                s += (double)x[t * D + d] * wg[d * E + e];
            worst = fmax(worst, fabs(lg[t * E + e] - s));
        }
    CHECK(worst < 1e-5, "gate logits = x wg (worst abs. diff %.3g)", worst);
    check_times("gate", &tm, 1);
    moe_pipeline_free(p);

    check_stages(&o, ref, &ex, x);
    check_memo();

    moe_plan_free(ref);
    moe_plan_free(refd);
    moe_plan_free(dp);
    moe_route_opts_release(&o);
    moe_route_opts_release(&od);
    printf("test_pipeline: %d passed, %d failed\n", check_pass, check_fail);
    return check_fail ? 1 : 0;
}
