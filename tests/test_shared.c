/* test_shared.c: shared experts (sim/shared_ffn.c and their use in sim/layer.c).
 *
 * Checked: a hand-worked one-expert case (values below), the layer's forward with shared
 * experts against the naive double reference (moe_layer_forward_naive, which adds
 * moe_shared_add_naive) for every activation, gate none and sigmoid, on sparse plans with
 * dropped tokens, dense plans and a plan without slots (every token still gets the shared
 * output); the dense mixture with p = 0 equals the shared output alone; the workspace in blocks
 * of n_max rows equals one block; FLOPs per token hand-worked; errors (layer not given the
 * shared experts, bad shapes, unknown gate names); the routed forward followed by
 * moe_layer_forward_shared (what the pipeline does after an expert-parallel forward) equals the
 * naive reference.
 * Tolerance as in test_layer.c: abs 1e-4 + |ref| * 1e-4 (fp32 GEMMs against double loops on
 * O(1) values, sums of at most 40 terms). */
#include "check.h"
#include "layer.h"

#include <gsl/gsl_randist.h>
#include <string.h>

#define TOL_ABS 1e-4
#define TOL_REL 1e-4

typedef struct {
    moe_experts w;
    moe_shared sh;
    float *w1, *b1, *w2, *b2;
    float *sw1, *sb1, *sw2, *sb2, *swg;
} owned;

static void fill_gauss(gsl_rng *r, float *v, size_t len, double sigma)
{
    for (size_t i = 0; i < len; i++)
        v[i] = (float)gsl_ran_gaussian(r, sigma);
}

static float *gauss(gsl_rng *r, size_t len, double sigma)
{
    float *v = malloc(len * sizeof *v);
    fill_gauss(r, v, len, sigma);
    return v;
}

/* E routed experts (D,F) and S shared experts (D,Fs), weights scaled 1/sqrt(fan-in). */
static void make(owned *o, gsl_rng *r, int E, int d, int f, int S, int fs, int act, int gate)
{
    size_t fw = act == MOE_ACT_SWIGLU ? 2 * (size_t)f : (size_t)f;
    size_t fws = act == MOE_ACT_SWIGLU ? 2 * (size_t)fs : (size_t)fs;
    o->w1 = gauss(r, (size_t)E * d * fw, 1.0 / sqrt(d));
    o->b1 = gauss(r, (size_t)E * fw, 0.3);
    o->w2 = gauss(r, (size_t)E * f * d, 1.0 / sqrt(f));
    o->b2 = gauss(r, (size_t)E * d, 0.3);
    o->sw1 = gauss(r, (size_t)S * d * fws, 1.0 / sqrt(d));
    o->sb1 = gauss(r, (size_t)S * fws, 0.3);
    o->sw2 = gauss(r, (size_t)S * fs * d, 1.0 / sqrt(fs));
    o->sb2 = gauss(r, (size_t)S * d, 0.3);
    o->swg = gauss(r, (size_t)S * d, 1.0 / sqrt(d));
    o->sh = (moe_shared){S, fs, gate, o->sw1, o->sb1, o->sw2, o->sb2,
                         gate == MOE_SHARED_GATE_SIGMOID ? o->swg : NULL};
    o->w = (moe_experts){E, d, f, act, o->w1, o->b1, o->w2, o->b2, &o->sh};
}

static void owned_free(owned *o)
{
    free(o->w1), free(o->b1), free(o->w2), free(o->b2);
    free(o->sw1), free(o->sb1), free(o->sw2), free(o->sb2), free(o->swg);
}

static void compare(const char *what, const float *got, const float *ref, size_t len)
{
    check_close_floats(what, got, ref, len, TOL_ABS, TOL_REL);
}

/* Token-choice plan: token t (t % 5 != 2) claims experts (t % E) and ((t + 1) % E) in that
 * order; a claim beyond C slots of its expert is dropped. combine_w ~ U(0,1). */
static void plan_tc(moe_plan *p, gsl_rng *r, int n, int E, long C)
{
    moe_plan_reset(p, n, E, E);
    p->k = 2;
    p->capacity = C;
    long fill[64] = {0};
    for (int t = 0; t < n; t++)
        for (int j = 0; j < 2 && t % 5 != 2; j++) {
            int e = (t + j) % E;
            if (fill[e] < C)
                moe_plan_push(p, t, e, (int32_t)fill[e]++, 1.0, gsl_rng_uniform(r));
        }
}

/* Dense plan: every token on every slot (P = 2), weights ~ U(0, 1/M). */
static void plan_dense(moe_plan *p, gsl_rng *r, int n, int E)
{
    moe_plan_reset(p, n, E, 2 * E);
    p->capacity = 2;
    p->dense = 1;
    for (int t = 0; t < n; t++)
        for (int j = 0; j < 2 * E; j++)
            moe_plan_push(p, t, j / 2, j % 2, gsl_rng_uniform(r) / (2 * E),
                          gsl_rng_uniform(r) / (2 * E));
}

/* Hand-worked: D = 2, one shared expert of width 1, relu, no routed entries (C = 1, empty plan).
 *   w1 (1,2,1) = [1; 2], b1 = [0.5], w2 (1,1,2) = [3, -1], b2 = [0.1, 0.2], x = [1, -0.25]
 *   h = 1*1 + (-0.25)*2 + 0.5 = 1, relu(1) = 1, y = [3*1 + 0.1, -1*1 + 0.2] = [3.1, -0.8].
 * Sigmoid gate with wg = [0, 0]: g = sigmoid(0) = 0.5, y = [1.55, -0.4]; with wg = [2, 0]:
 * g = sigmoid(2) = 0.8807970779778823, y = g * [3.1, -0.8]. */
static void test_hand(void)
{
    float w1[2] = {1, 2}, b1[1] = {0.5f}, w2[2] = {3, -1}, b2[2] = {0.1f, 0.2f};
    float rw1[2] = {0, 0}, rb1[1] = {0}, rw2[2] = {0, 0}, rb2[2] = {0, 0};
    float x[2] = {1, -0.25f}, y[2] = {9, 9}, wg0[2] = {0, 0}, wg2[2] = {2, 0};
    moe_shared sh = {1, 1, MOE_SHARED_GATE_NONE, w1, b1, w2, b2, NULL};
    moe_experts w = {1, 2, 1, MOE_ACT_RELU, rw1, rb1, rw2, rb2, &sh};
    moe_layer *L = moe_layer_alloc(1, 1, 1, 2, 1, MOE_ACT_RELU);
    CHECK_INT(moe_layer_set_shared(L, &sh), MOE_OK);
    moe_plan *p = moe_plan_alloc(1, 1, 4);
    moe_plan_reset(p, 1, 1, 1);
    p->capacity = 1;
    CHECK_INT(moe_layer_forward(L, &w, p, x, y, NULL), MOE_OK);
    CHECK_NEAR(y[0], 3.1, 1e-6);
    CHECK_NEAR(y[1], -0.8, 1e-6);
    sh.gate = MOE_SHARED_GATE_SIGMOID;
    sh.wg = wg0;
    CHECK_INT(moe_layer_set_shared(L, &sh), MOE_OK);
    CHECK_INT(moe_layer_forward(L, &w, p, x, y, NULL), MOE_OK);
    CHECK_NEAR(y[0], 1.55, 1e-6);
    CHECK_NEAR(y[1], -0.4, 1e-6);
    sh.wg = wg2;
    CHECK_INT(moe_layer_set_shared(L, &sh), MOE_OK);
    CHECK_INT(moe_layer_forward(L, &w, p, x, y, NULL), MOE_OK);
    CHECK_NEAR(y[0], 0.8807970779778823 * 3.1, 1e-6);
    CHECK_NEAR(y[1], 0.8807970779778823 * -0.8, 1e-6);
    /* the naive reference gives the same */
    CHECK_INT(moe_layer_forward_naive(&w, p, x, y), MOE_OK);
    CHECK_NEAR(y[0], 0.8807970779778823 * 3.1, 1e-6);
    moe_plan_free(p);
    moe_layer_free(L);
}

static void test_vs_naive(gsl_rng *r)
{
    enum { N = 29, E = 4, D = 10, F = 12, S = 3, FS = 7 };
    float *x = gauss(r, N * D, 1.0), *y = malloc(N * D * sizeof *y);
    float *yr = malloc(N * D * sizeof *yr), *y0 = malloc(N * D * sizeof *y0);
    moe_plan *p = moe_plan_alloc(N, E, (size_t)N * 2 * E);
    for (int act = MOE_ACT_GELU_TANH; act <= MOE_ACT_SWIGLU; act++)
        for (int gate = MOE_SHARED_GATE_NONE; gate <= MOE_SHARED_GATE_SIGMOID; gate++) {
            owned o;
            make(&o, r, E, D, F, S, FS, act, gate);
            moe_layer *L = moe_layer_alloc(N, E, N, D, F, act);
            CHECK_INT(moe_layer_set_shared(L, &o.sh), MOE_OK);
            for (int kind = 0; kind < 3; kind++) {
                if (kind == 0)
                    plan_tc(p, r, N, E, 5); /* 48 claims on 20 slots: drops */
                else if (kind == 1)
                    plan_dense(p, r, N, E);
                else
                    plan_tc(p, r, N, E, 0); /* no slot: y = shared(x) only */
                for (int i = 0; i < N * D; i++)
                    y[i] = NAN;
                moe_phase_times tm = {0};
                CHECK_INT(moe_layer_forward(L, &o.w, p, x, y, &tm), MOE_OK);
                CHECK_INT(moe_layer_forward_naive(&o.w, p, x, yr), MOE_OK);
                char what[96];
                snprintf(what, sizeof what, "shared forward vs naive, %s, gate %s, %s",
                         moe_act_name(act), moe_shared_gate_name(gate),
                         kind == 0 ? "sparse" : kind == 1 ? "dense" : "C = 0");
                compare(what, y, yr, N * D);
                /* the shared part is really there: without it y differs on every token */
                moe_experts w0 = o.w;
                w0.shared = NULL;
                CHECK_INT(moe_layer_forward_naive(&w0, p, x, y0), MOE_OK);
                int same = 0;
                for (int t = 0; t < N; t++)
                    same += y0[t * D] == yr[t * D];
                CHECK(same == 0, "%s: %d tokens without a shared contribution", what, same);
            }
            /* the expert-parallel path: routed experts alone, then moe_layer_forward_shared */
            moe_experts wr = o.w;
            wr.shared = NULL;
            plan_tc(p, r, N, E, 5);
            CHECK_INT(moe_layer_forward(L, &wr, p, x, y0, NULL), MOE_OK);
            CHECK_INT(moe_layer_forward_shared(L, &o.w, x, N, y0, NULL), MOE_OK);
            CHECK_INT(moe_layer_forward_naive(&o.w, p, x, yr), MOE_OK);
            compare("routed forward + moe_layer_forward_shared vs naive", y0, yr, N * D);
            CHECK_INT(moe_layer_forward_shared(L, &o.w, x, N + 1, y0, NULL), MOE_EINVAL);
            /* dense mixture with p = 0: the shared output alone, = naive on an empty plan */
            double *pz = calloc(N * E, sizeof *pz);
            CHECK_INT(moe_layer_dense_mixture(L, &o.w, x, N, pz, NULL, 0, y), MOE_OK);
            plan_tc(p, r, N, E, 0);
            CHECK_INT(moe_layer_forward_naive(&o.w, p, x, yr), MOE_OK);
            compare("dense mixture with p = 0 vs shared output", y, yr, N * D);
            free(pz);
            moe_layer_free(L);
            owned_free(&o);
        }
    moe_plan_free(p);
    free(x), free(y), free(yr), free(y0);
}

/* moe_shared_ws_add in blocks of n_max = 4 rows equals one block of 13 rows. */
static void test_blocks(gsl_rng *r)
{
    enum { N = 13, D = 6 };
    owned o;
    make(&o, r, 1, D, 3, 2, 5, MOE_ACT_SWIGLU, MOE_SHARED_GATE_SIGMOID);
    float *x = gauss(r, N * D, 1.0), *ya = calloc(N * D, sizeof(float));
    float *yb = calloc(N * D, sizeof(float));
    double *acc = calloc(N * D, sizeof *acc);
    moe_shared_ws *w4 = moe_shared_ws_alloc(&o.sh, 4, D, MOE_ACT_SWIGLU);
    moe_shared_ws *w13 = moe_shared_ws_alloc(&o.sh, N, D, MOE_ACT_SWIGLU);
    CHECK(w4 && w13, "workspaces: %s", moe_errmsg());
    CHECK_INT(moe_shared_ws_add(w4, x, N, ya), MOE_OK);
    CHECK_INT(moe_shared_ws_add(w13, x, N, yb), MOE_OK);
    CHECK_INT(moe_shared_add_naive(&o.sh, D, MOE_ACT_SWIGLU, x, N, acc), MOE_OK);
    float *yr = malloc(N * D * sizeof *yr);
    for (int i = 0; i < N * D; i++)
        yr[i] = (float)acc[i];
    compare("shared experts in blocks of 4 rows", ya, yr, N * D);
    compare("shared experts in one block", yb, yr, N * D);
    CHECK(moe_shared_ws_bytes(w4) == (size_t)(D * 20 + 20 + D + 4 * 20 + 4 * 2) * sizeof(float),
          "workspace bytes %zu", moe_shared_ws_bytes(w4));
    moe_shared_ws_free(w4);
    moe_shared_ws_free(w13);
    moe_shared_ws_free(NULL);
    owned_free(&o);
    free(x), free(ya), free(yb), free(acc), free(yr);
}

/* FLOPs per token, hand-worked: S = 2, D = 4, Fs = 3: gelu 2 * 4*4*3 = 96, SwiGLU 2 * 6*4*3 =
 * 144; the sigmoid gate adds 2*D*S = 16. */
static void test_flops(void)
{
    moe_shared sh = {2, 3, MOE_SHARED_GATE_NONE, NULL, NULL, NULL, NULL, NULL};
    CHECK_NEAR(moe_shared_flops_per_token(&sh, 4, MOE_ACT_GELU_TANH), 96.0, 0.0);
    CHECK_NEAR(moe_shared_flops_per_token(&sh, 4, MOE_ACT_SWIGLU), 144.0, 0.0);
    sh.gate = MOE_SHARED_GATE_SIGMOID;
    CHECK_NEAR(moe_shared_flops_per_token(&sh, 4, MOE_ACT_RELU), 112.0, 0.0);
    CHECK_NEAR(moe_shared_flops_per_token(NULL, 4, MOE_ACT_RELU), 0.0, 0.0);
    sh.S = 0;
    CHECK_NEAR(moe_shared_flops_per_token(&sh, 4, MOE_ACT_RELU), 0.0, 0.0);
}

static void test_errors(gsl_rng *r)
{
    owned o;
    make(&o, r, 2, 4, 3, 1, 2, MOE_ACT_RELU, MOE_SHARED_GATE_NONE);
    moe_layer *L = moe_layer_alloc(3, 2, 2, 4, 3, MOE_ACT_RELU);
    moe_plan *p = moe_plan_alloc(3, 2, 8);
    plan_tc(p, r, 3, 2, 2);
    float x[12] = {0}, y[12];
    /* the layer was not given these shared experts */
    moe_clear_error();
    CHECK_INT(moe_layer_forward(L, &o.w, p, x, y, NULL), MOE_EINVAL);
    CHECK(strstr(moe_errmsg(), "shared") != NULL, "message: %s", moe_errmsg());
    double pz[6] = {0};
    moe_clear_error();
    CHECK_INT(moe_layer_dense_mixture(L, &o.w, x, 3, pz, NULL, 0, y), MOE_EINVAL);
    /* bad shapes and gate names */
    moe_shared bad = o.sh;
    bad.fs = 0;
    moe_clear_error();
    CHECK_INT(moe_layer_set_shared(L, &bad), MOE_EINVAL);
    CHECK(strstr(moe_errmsg(), "shared") != NULL, "message: %s", moe_errmsg());
    bad = o.sh;
    bad.gate = MOE_SHARED_GATE_SIGMOID; /* without wg */
    moe_clear_error();
    CHECK(moe_shared_ws_alloc(&bad, 3, 4, MOE_ACT_RELU) == NULL, "sigmoid gate without wg");
    CHECK(strstr(moe_errmsg(), "missing") != NULL, "message: %s", moe_errmsg());
    int g = -1;
    CHECK_INT(moe_shared_gate_parse("sigmoid", &g), MOE_OK);
    CHECK_INT(g, MOE_SHARED_GATE_SIGMOID);
    moe_clear_error();
    CHECK_INT(moe_shared_gate_parse("softmax", &g), MOE_EINVAL);
    CHECK(strstr(moe_errmsg(), "softmax") && strstr(moe_errmsg(), "shared_gate"),
          "message names value and key: %s", moe_errmsg());
    /* S = 0: no workspace, forward as without shared experts */
    moe_shared none = {0, 0, 0, NULL, NULL, NULL, NULL, NULL};
    CHECK_INT(moe_layer_set_shared(L, &none), MOE_OK);
    o.w.shared = &none;
    CHECK_INT(moe_layer_forward(L, &o.w, p, x, y, NULL), MOE_OK);
    moe_plan_free(p);
    moe_layer_free(L);
    owned_free(&o);
}

int main(void)
{
    gsl_rng *r = moe_rng_alloc(20261205, 7);
    test_hand();
    test_vs_naive(r);
    test_blocks(r);
    test_flops();
    test_errors(r);
    gsl_rng_free(r);
    return check_report("test_shared");
}
