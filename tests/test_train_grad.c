/* test_train_grad.c: the training engine's hand-written gradients (sim/train.h) against central
 * finite differences, for every router of the registry, in the engine's double-precision path
 * (MOE_TRAIN_FP64: the same kernels as fp32, with dgemm).
 *
 * Objective: mse + aux_weight * aux + z_weight * z with aux_weight 0.1, z_weight 0.01 (the
 * router's own aux loss; one case with the importance CV^2), teacher MoE 4 experts top-2,
 * T = 32 tokens, D = 8, F = 16, E = 4 (soft_moe: M = 8, 2 slots per expert), gelu_tanh (one
 * case each SwiGLU and gelu_erf). Three SGD steps first move the parameters off the draw (and
 * dsv3_bias's bias off 0). Checked: every gate weight (D*M) and every 5th expert weight
 * (trainable = all), h = 1e-6, draws frozen; a parameter whose perturbation changes the plan
 * (a discrete selection flips) is skipped and counted (at most 10% may be).
 * Bound: |grad - fd| <= 1e-7 + 1e-5 |fd| per parameter. The central difference's truncation
 * error is O(h^2 f''') ~ 1e-12 and its rounding error ~ 1e-16 / 1e-6 = 1e-10 on O(1) losses,
 * so the bound leaves room only for a wrong formula. The relative error reached,
 * ||grad - fd|| / ||fd|| over the checked parameters, is printed per case (4e-9 to 1.3e-8
 * when this was written; a 0.1% error in one formula, sigmoid', made 31 of 256 fail).
 *
 * Also: the fp32 engine's output equals moe_layer_forward_naive (sim/layer.c's double-precision
 * reference) on the engine's own plan and weights, sparse plans with drops and dense plans,
 * tolerance abs 1e-4 + 1e-4 |ref| as test_layer.c (fp32 GEMMs vs double loops, O(1) values);
 * learning-rate schedules and one SGD and Adam step on hand-worked values; the aux loss the engine computes for topk, switch, gshard equals the router's own
 * plan->aux_loss (the router files, docs/routing.md's formulas); NMI on hand-worked labelings; the
 * fp32 engine gives identical loss curves with 1 and 2 BLAS threads. */
#include "check.h"
#include "train.h"
#include "blas_info.h"
#include "layer.h"

#include <gsl/gsl_randist.h>
#include <string.h>

#define N 32
#define D 8
#define F 16
#define E 4

typedef struct {
    float x[N * D];
    int64_t ids[N];
    int32_t choices[N * 2];
    double choice_w[N * 2];
    moe_batch b;
} tbatch;

/* Gaussian tokens (scaled so logits are O(1)), ids 0..99, two distinct recorded choices. */
static void tbatch_fill(tbatch *tb, gsl_rng *r)
{
    for (int i = 0; i < N * D; i++)
        tb->x[i] = (float)gsl_ran_gaussian(r, 1.0);
    for (int t = 0; t < N; t++) {
        tb->ids[t] = (int64_t)gsl_rng_uniform_int(r, 100);
        int a = (int)gsl_rng_uniform_int(r, E), b = (a + 1 + (int)gsl_rng_uniform_int(r, E - 1)) % E;
        tb->choices[2 * t] = a;
        tb->choices[2 * t + 1] = b;
        tb->choice_w[2 * t] = 0.7;
        tb->choice_w[2 * t + 1] = 0.3;
    }
    tb->b.n = N;
    tb->b.d = D;
    tb->b.m = E;
    tb->b.x = tb->x;
    tb->b.ids = tb->ids;
    tb->b.choices = tb->choices;
    tb->b.choice_w = tb->choice_w;
    tb->b.k_rec = 2;
    tb->b.logits = NULL;
}

/* The small shape of these checks: T = N tokens of width D, F hidden, M columns, all tokens
 * probed; the other keys at their defaults. */
static void small_config(moe_train_config *c, int m, int act)
{
    moe_train_config_default(c);
    c->n = N;
    c->d = D;
    c->f = F;
    c->m = m;
    c->act = act;
    c->probe_tokens = N;
}

static int same_plan(const moe_plan *a, const moe_entry *ref, size_t nref)
{
    if (a->n_entries != nref)
        return 0;
    for (size_t i = 0; i < nref; i++)
        if (a->entries[i].token != ref[i].token || a->entries[i].expert != ref[i].expert ||
            a->entries[i].slot != ref[i].slot)
            return 0;
    return 1;
}

typedef struct {
    const char *router, *label;
    int k, act, aux_kind, renormalize, dropless;
    double noise;
} gcase;

static void check_case(const gcase *gc)
{
    const moe_router_type *rt = moe_router_find(gc->router);
    CHECK(rt != NULL, "router %s in the registry", gc->router);
    if (!rt)
        return;
    moe_train_config c;
    small_config(&c, strcmp(gc->router, "soft_moe") == 0 ? 2 * E : E, gc->act);
    c.optimizer = MOE_OPT_SGD;
    c.lr = 0.05;
    c.aux_weight = 0.1;
    c.z_weight = 0.01;
    c.aux_kind = gc->aux_kind;
    c.teacher_experts = 4;
    c.teacher_k = 2;
    c.precision = MOE_TRAIN_FP64;
    c.seed = 7;
    moe_route_opts o;
    moe_route_opts_default(&o);
    o.k = gc->k;
    o.renormalize = gc->renormalize;
    o.dropless = gc->dropless;
    o.noise_std = gc->noise;
    if (strcmp(gc->router, "soft_moe") == 0)
        o.num_experts = E;
    moe_trainer *tr = NULL;
    int rc = moe_train_alloc(&c, rt, &o, &tr);
    CHECK(rc == MOE_OK, "%s: alloc: %s", gc->label, moe_errmsg());
    if (rc)
        return;
    gsl_rng *r = moe_rng_alloc(11, 1);
    tbatch tb;
    for (int s = 0; s < 3; s++) {
        tbatch_fill(&tb, r);
        rc = moe_train_step(tr, &tb.b, NULL);
        CHECK(rc == MOE_OK, "%s: step: %s", gc->label, moe_errmsg());
    }
    tbatch_fill(&tb, r);
    const size_t np = moe_train_n_params(tr), ng = moe_train_n_gate_params(tr);
    double *g = malloc(np * sizeof *g), loss0, parts[3];
    rc = moe_train_objective(tr, &tb.b, &loss0, g, parts);
    CHECK(rc == MOE_OK, "%s: objective: %s", gc->label, moe_errmsg());
    moe_train_freeze_draws(tr, 1);
    const moe_plan *pl = moe_train_last_plan(tr);
    size_t nref = pl->n_entries;
    moe_entry *ref = malloc(nref * sizeof *ref);
    memcpy(ref, pl->entries, nref * sizeof *ref);
    if (gc->noise == 0.0 && !gc->renormalize && gc->aux_kind == MOE_AUX_ROUTER)
        CHECK_NEAR(parts[1], pl->aux_loss, 1e-12 + 1e-12 * fabs(pl->aux_loss));
    const double h = 1e-6;
    double num = 0.0, den = 0.0;
    int checked = 0, skipped = 0, bad = 0, gate_nonzero = 0;
    for (size_t i = 0; i < np; i++) {
        if (i >= ng && (i - ng) % 5 != 0)
            continue;
        double v = moe_train_param_get(tr, i), lp, lm;
        moe_train_param_set(tr, i, v + h);
        rc = moe_train_objective(tr, &tb.b, &lp, NULL, NULL);
        int same = same_plan(moe_train_last_plan(tr), ref, nref);
        moe_train_param_set(tr, i, v - h);
        rc |= moe_train_objective(tr, &tb.b, &lm, NULL, NULL);
        same = same && same_plan(moe_train_last_plan(tr), ref, nref);
        moe_train_param_set(tr, i, v);
        if (rc || !same) {
            skipped++;
            continue;
        }
        double fd = (lp - lm) / (2 * h), diff = fabs(g[i] - fd);
        checked++;
        num += diff * diff;
        den += fd * fd;
        gate_nonzero += i < ng && fabs(g[i]) > 1e-8;
        if (!(diff <= 1e-7 + 1e-5 * fabs(fd))) {
            if (bad++ < 3)
                fprintf(stderr, "%s: param %zu (%s): grad %.12g fd %.12g\n", gc->label, i,
                        i < ng ? "gate" : "expert", g[i], fd);
        }
    }
    CHECK(bad == 0, "%s: %d of %d gradients outside the bound", gc->label, bad, checked);
    CHECK(skipped * 10 <= checked + skipped, "%s: %d of %d parameters flip the plan", gc->label,
          skipped, checked + skipped);
    if (moe_train_gate_has_grad(tr))
        CHECK(gate_nonzero > 0, "%s: the gate gradient is not all zero", gc->label);
    printf("%-28s loss %.6f  checked %3d skipped %2d  rel. error %.2e\n", gc->label, loss0,
           checked, skipped, den > 0 ? sqrt(num / den) : 0.0);
    free(ref);
    free(g);
    gsl_rng_free(r);
    moe_train_free(tr);
}

static void test_gradients(void)
{
    static const gcase cases[] = {
        {"topk", "topk k=2", 2, MOE_ACT_GELU_TANH, MOE_AUX_ROUTER, 0, 0, 0.0},
        {"topk", "topk k=2 renormalize", 2, MOE_ACT_GELU_TANH, MOE_AUX_ROUTER, 1, 0, 0.0},
        {"topk", "topk k=2 noise 0.5", 2, MOE_ACT_GELU_TANH, MOE_AUX_ROUTER, 0, 0, 0.5},
        {"topk", "topk k=1 importance swiglu", 1, MOE_ACT_SWIGLU, MOE_AUX_IMPORTANCE, 0, 0, 0.0},
        {"switch", "switch", 0, MOE_ACT_GELU_TANH, MOE_AUX_ROUTER, 0, 0, 0.0},
        {"gshard", "gshard", 0, MOE_ACT_GELU_ERF, MOE_AUX_ROUTER, 0, 0, 0.0},
        {"gshard", "gshard renormalize", 0, MOE_ACT_GELU_TANH, MOE_AUX_ROUTER, 1, 0, 0.0},
        {"expert_choice", "expert_choice", 0, MOE_ACT_GELU_TANH, MOE_AUX_ROUTER, 0, 0, 0.0},
        {"soft_moe", "soft_moe P=2", 0, MOE_ACT_GELU_TANH, MOE_AUX_ROUTER, 0, 0, 0.0},
        {"soft_moe", "soft_moe importance", 0, MOE_ACT_GELU_TANH, MOE_AUX_IMPORTANCE, 0, 0, 0.0},
        {"base", "base", 0, MOE_ACT_GELU_TANH, MOE_AUX_ROUTER, 0, 0, 0.0},
        {"sinkhorn", "sinkhorn k=1", 0, MOE_ACT_GELU_TANH, MOE_AUX_ROUTER, 0, 0, 0.0},
        {"sinkhorn", "sinkhorn k=2", 2, MOE_ACT_GELU_TANH, MOE_AUX_ROUTER, 0, 0, 0.0},
        {"dsv3_bias", "dsv3_bias k=2", 2, MOE_ACT_GELU_TANH, MOE_AUX_ROUTER, 0, 0, 0.0},
        {"dsv3_bias", "dsv3_bias k=2 renormalize", 2, MOE_ACT_GELU_TANH, MOE_AUX_ROUTER, 1, 0,
         0.0},
        {"dense", "dense", 0, MOE_ACT_GELU_TANH, MOE_AUX_ROUTER, 0, 0, 0.0},
        {"hash", "hash (experts only)", 0, MOE_ACT_GELU_TANH, MOE_AUX_ROUTER, 0, 0, 0.0},
        {"replay", "replay (experts only)", 0, MOE_ACT_GELU_TANH, MOE_AUX_ROUTER, 0, 0, 0.0},
        /* topp and relu: their router losses are not trained; the importance loss is */
        {"topp", "topp importance", 0, MOE_ACT_GELU_TANH, MOE_AUX_IMPORTANCE, 0, 0, 0.0},
        {"relu", "relu renormalize", 0, MOE_ACT_GELU_TANH, MOE_AUX_IMPORTANCE, 1, 0, 0.0},
    };
    int seen[64] = {0};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        check_case(&cases[i]);
        for (int j = 0; moe_router_types[j]; j++)
            if (strcmp(moe_router_types[j]->name, cases[i].router) == 0)
                seen[j] = 1;
    }
    for (int j = 0; moe_router_types[j]; j++) /* every router of the registry is checked */
        CHECK(seen[j], "router %s has a gradient check", moe_router_types[j]->name);
}

/* The fp32 forward against the layer's naive reference, on the engine's plan and weights. */
static void check_forward(const char *router, int m, int act)
{
    moe_train_config c;
    small_config(&c, m, act);
    moe_route_opts o;
    moe_route_opts_default(&o);
    if (m != E)
        o.num_experts = E;
    moe_trainer *tr = NULL;
    int rc = moe_train_alloc(&c, moe_router_find(router), &o, &tr);
    CHECK(rc == MOE_OK, "%s: alloc: %s", router, moe_errmsg());
    if (rc)
        return;
    gsl_rng *r = moe_rng_alloc(5, 1);
    tbatch tb;
    tbatch_fill(&tb, r);
    rc = moe_train_objective(tr, &tb.b, NULL, NULL, NULL);
    CHECK(rc == MOE_OK, "%s: objective: %s", router, moe_errmsg());
    const size_t fw = act == MOE_ACT_SWIGLU ? 2 * F : F, ng = moe_train_n_gate_params(tr);
    const size_t np = moe_train_n_params(tr);
    float *wv = malloc(np * sizeof *wv), *y = malloc(N * D * sizeof *y);
    double *got = malloc(N * D * sizeof *got), *ref = malloc(N * D * sizeof *ref);
    for (size_t i = 0; i < np; i++)
        wv[i] = (float)moe_train_param_get(tr, i);
    moe_experts w = {E, D, F, act, wv + ng, wv + ng + (size_t)E * D * fw, NULL, NULL, NULL};
    w.w2 = w.b1 + (size_t)E * fw;
    w.b2 = w.w2 + (size_t)E * F * D;
    const moe_plan *p = moe_train_last_plan(tr);
    CHECK_INT(moe_layer_forward_naive(&w, p, tb.x, y), MOE_OK);
    for (size_t i = 0; i < N * D; i++) {
        got[i] = moe_train_output(tr, i);
        ref[i] = y[i];
    }
    char what[64];
    snprintf(what, sizeof what, "%s forward vs naive layer", router);
    check_close_arrays(what, got, ref, N * D, 1e-4, 1e-4);
    CHECK(p->n_entries > 0, "%s: plan has entries", router);
    free(wv), free(y), free(got), free(ref);
    gsl_rng_free(r);
    moe_train_free(tr);
}

/* Schedules, hand-worked: lr 1, warmup 5, steps 15: warmup (s+1)/5; cosine after it
 * (1 + cos(pi (s-5)/10)) / 2: s = 5 -> 1, s = 10 -> 1/2, s = 15 -> 0. */
static void test_schedule(void)
{
    moe_train_config c;
    moe_train_config_default(&c);
    c.lr = 1.0;
    c.warmup = 5;
    c.steps = 15;
    CHECK_NEAR(moe_train_lr(&c, 0), 0.2, 1e-15);
    CHECK_NEAR(moe_train_lr(&c, 4), 1.0, 1e-15);
    CHECK_NEAR(moe_train_lr(&c, 10), 1.0, 1e-15); /* constant */
    c.lr_schedule = MOE_LR_COSINE;
    CHECK_NEAR(moe_train_lr(&c, 5), 1.0, 1e-15);
    CHECK_NEAR(moe_train_lr(&c, 10), 0.5, 1e-15);
    CHECK_NEAR(moe_train_lr(&c, 15), 0.0, 1e-15);
}

/* One optimizer step from the gradient g the objective reports, same batch and draws:
 * SGD theta - lr g; Adam (Kingma & Ba, step 1: m = (1-b1) g, v = (1-b2) g^2, bias-corrected
 * m/(1-b1) = g, v/(1-b2) = g^2) theta - lr g / (|g| + 1e-8). */
static void test_optimizer_step(int optimizer)
{
    moe_train_config c;
    small_config(&c, E, MOE_ACT_GELU_TANH);
    c.precision = MOE_TRAIN_FP64;
    c.optimizer = optimizer;
    c.lr = 0.01;
    c.aux_weight = 0.1;
    c.z_weight = 0.01;
    moe_route_opts o;
    moe_route_opts_default(&o);
    moe_trainer *tr = NULL;
    int rc = moe_train_alloc(&c, moe_router_find("topk"), &o, &tr);
    CHECK(rc == MOE_OK, "alloc: %s", moe_errmsg());
    if (rc)
        return;
    gsl_rng *r = moe_rng_alloc(9, 1);
    tbatch tb;
    tbatch_fill(&tb, r);
    const size_t np = moe_train_n_params(tr);
    double *g = malloc(np * sizeof *g), *t0 = malloc(np * sizeof *t0), *want = malloc(np * sizeof *want);
    double *got = malloc(np * sizeof *got);
    rc = moe_train_objective(tr, &tb.b, NULL, g, NULL);
    moe_train_freeze_draws(tr, 1);
    for (size_t i = 0; i < np; i++) {
        t0[i] = moe_train_param_get(tr, i);
        want[i] = optimizer == MOE_OPT_SGD ? t0[i] - c.lr * g[i]
                                           : t0[i] - c.lr * g[i] / (fabs(g[i]) + 1e-8);
    }
    rc |= moe_train_step(tr, &tb.b, NULL);
    CHECK(rc == MOE_OK, "objective and step: %s", moe_errmsg());
    for (size_t i = 0; i < np; i++)
        got[i] = moe_train_param_get(tr, i);
    check_close_arrays(optimizer == MOE_OPT_SGD ? "SGD step" : "Adam step", got, want, np,
                       1e-12, 1e-12);
    free(g), free(t0), free(want), free(got);
    gsl_rng_free(r);
    moe_train_free(tr);
}

/* NMI with the arithmetic-mean normalisation, worked by hand:
 * a = (0,0,0,1), b = (0,0,1,1): joint (0,0) 1/2, (0,1) 1/4, (1,1) 1/4; marginals a (3/4, 1/4),
 * b (1/2, 1/2); MI = 1/2 ln(4/3) + 1/4 ln(2/3) + 1/4 ln 2; H(a) = -(3/4 ln 3/4 + 1/4 ln 1/4),
 * H(b) = ln 2; NMI = MI / ((H(a) + H(b)) / 2) = 0.34371... Identical partitions under a
 * relabelling give 1, independent ones 0. */
static void test_nmi(void)
{
    int a[4] = {0, 0, 0, 1}, b[4] = {0, 0, 1, 1}, c[4] = {1, 1, 0, 0}, d[4] = {0, 1, 0, 1};
    double mi = 0.5 * log(4.0 / 3.0) + 0.25 * log(2.0 / 3.0) + 0.25 * log(2.0);
    double ha = -(0.75 * log(0.75) + 0.25 * log(0.25)), hb = log(2.0);
    CHECK_NEAR(moe_train_nmi(a, b, 4, 2, 2), mi / (0.5 * (ha + hb)), 1e-12);
    CHECK_NEAR(moe_train_nmi(b, c, 4, 2, 2), 1.0, 1e-12);
    CHECK_NEAR(moe_train_nmi(b, d, 4, 2, 2), 0.0, 1e-12);
    int u[4] = {-1, -1, 2, 2}; /* "no expert" (-1) is a class of its own */
    CHECK_NEAR(moe_train_nmi(b, u, 4, 2, 3), 1.0, 1e-12);
}

/* ---- determinism: 1 vs 2 BLAS threads ---- */

typedef struct {
    moe_source *src;
} srcctx;

typedef struct {
    double v[64][4];
    int n;
} curve;

static int record(void *ctx, const moe_train_row *row)
{
    curve *cv = ctx;
    if (cv->n < 64) {
        cv->v[cv->n][0] = row->loss;
        cv->v[cv->n][1] = row->heldout_loss;
        cv->v[cv->n][2] = row->aux_loss;
        cv->v[cv->n][3] = row->specialisation;
        cv->n++;
    }
    return 0;
}

static int run_curve(const char *router, int threads, curve *cv)
{
    moe_train_config c;
    moe_train_config_default(&c);
    c.n = 512;
    c.d = 64;
    c.f = 128;
    c.m = 8;
    c.steps = 20;
    c.eval_every = 2;
    c.aux_weight = 1e-2;
    c.z_weight = 1e-3;
    c.lr_schedule = MOE_LR_COSINE;
    c.warmup = 5;
    c.probe_tokens = 128;
    moe_route_opts o;
    moe_route_opts_default(&o);
    moe_source *s = NULL;
    moe_trainer *tr = NULL;
    int rc = moe_source_open("clustered", NULL, 0, c.n, c.d, c.m, 3, &s);
    if (!rc)
        rc = moe_train_alloc(&c, moe_router_find(router), &o, &tr);
    moe_blas_set_threads(threads);
    memset(cv, 0, sizeof *cv);
    if (!rc)
        rc = moe_train_run(tr, moe_train_source_batch, s, record, cv);
    moe_train_free(tr);
    moe_source_close(s);
    return rc;
}

static void test_threads(void)
{
    const char *routers[] = {"topk", "expert_choice", "soft_moe"};
    int saved = moe_blas_threads();
    for (int i = 0; i < 3; i++) {
        curve a, b;
        int rc1 = run_curve(routers[i], 1, &a), rc2 = run_curve(routers[i], 2, &b);
        CHECK(rc1 == MOE_OK && rc2 == MOE_OK, "%s: runs: %s", routers[i], moe_errmsg());
        CHECK_INT(a.n, 11); /* rows at steps 0, 2, ..., 18 and the last, 19 */
        CHECK(a.n == b.n && memcmp(a.v, b.v, sizeof a.v) == 0,
              "%s: loss curves differ between 1 and 2 threads", routers[i]);
        CHECK(a.v[a.n - 1][1] < a.v[0][1], "%s: held-out loss falls (%g -> %g)", routers[i],
              a.v[0][1], a.v[a.n - 1][1]);
    }
    moe_blas_set_threads(saved);
}

int main(void)
{
    moe_install_gsl_handler();
    test_nmi();
    test_schedule();
    test_optimizer_step(MOE_OPT_SGD);
    test_optimizer_step(MOE_OPT_ADAM);
    check_forward("topk", E, MOE_ACT_GELU_TANH);
    check_forward("expert_choice", E, MOE_ACT_GELU_ERF);
    check_forward("switch", E, MOE_ACT_SWIGLU);
    check_forward("soft_moe", 2 * E, MOE_ACT_RELU);
    test_gradients();
    test_threads();
    printf("test_train_grad: %d passed, %d failed\n", check_pass, check_fail);
    return check_fail != 0;
}
