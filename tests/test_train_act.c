/* test_train_act.c: the fp32 training engine's activations against the fp64 path. The fp32
 * kernels take GELU (tanh and erf forms) from the layer's vectorised moe_activate and its
 * derivative from the forward's output (sim/train_kern.h, FAST_GELU); the fp64 kernels, whose
 * gradients test_train_grad.c checks against finite differences, use libm's tanh and erf. On
 * the same model, batch and draws (topk k = 2, E = 4, T = 64 tokens, D = 16, F = 32, teacher
 * MoE 4 experts top-2, aux 0.1, z 0.01, every parameter trainable), the fp32 loss and gradient
 * must equal the fp64 ones up to float rounding: relative L2 of the gradient <= 1e-4, loss
 * within 1e-5 relative. Origin of the bound: float GEMMs over at most 64 terms and the
 * activation's own error (fast exp about 1 ulp, erfc 1.2e-7) give about 1e-7 (1.2e-7 to
 * 1.5e-7 when this was written); a wrong derivative is far above the bound: dropping the
 * factor 2 of the tanh form's second term gave 5.4e-2, 0.39 for 1/sqrt(2 pi) = 0.3989 in the
 * erf form gave 2.4e-3. ReLU is checked alike, as a control. */
#include "check.h"
#include "layer.h"
#include "train.h"

#include <gsl/gsl_randist.h>
#include <stdlib.h>
#include <string.h>

#define T 64
#define D 16
#define F 32
#define E 4

static moe_trainer *make(int act, int precision)
{
    moe_train_config c;
    moe_train_config_default(&c);
    c.n = T;
    c.d = D;
    c.f = F;
    c.m = E;
    c.act = act;
    c.probe_tokens = T;
    c.aux_weight = 0.1;
    c.z_weight = 0.01;
    c.teacher_experts = 4;
    c.teacher_k = 2;
    c.precision = precision;
    c.seed = 7;
    moe_route_opts o;
    moe_route_opts_default(&o);
    o.k = 2;
    o.dropless = 1;
    moe_trainer *tr = NULL;
    int rc = moe_train_alloc(&c, moe_router_find("topk"), &o, &tr);
    CHECK(rc == MOE_OK, "alloc: %s", moe_errmsg());
    return rc ? NULL : tr;
}

static void check_act(int act)
{
    static float x[T * D];
    static int64_t ids[T];
    gsl_rng *r = moe_rng_alloc(3, 1);
    for (int i = 0; i < T * D; i++)
        x[i] = (float)gsl_ran_gaussian(r, 1.0);
    gsl_rng_free(r);
    moe_batch b;
    memset(&b, 0, sizeof b);
    b.n = T;
    b.d = D;
    b.m = E;
    b.x = x;
    b.ids = ids;
    moe_trainer *t32 = make(act, MOE_TRAIN_FP32), *t64 = make(act, MOE_TRAIN_FP64);
    if (t32 && t64) {
        size_t np = moe_train_n_params(t64);
        CHECK_INT(moe_train_n_params(t32), np);
        double *g32 = malloc(np * sizeof *g32), *g64 = malloc(np * sizeof *g64), l32, l64;
        int rc = moe_train_objective(t32, &b, &l32, g32, NULL);
        CHECK(rc == MOE_OK, "fp32 objective: %s", moe_errmsg());
        rc = moe_train_objective(t64, &b, &l64, g64, NULL);
        CHECK(rc == MOE_OK, "fp64 objective: %s", moe_errmsg());
        double num = 0.0, den = 0.0;
        for (size_t i = 0; i < np; i++) {
            num += (g32[i] - g64[i]) * (g32[i] - g64[i]);
            den += g64[i] * g64[i];
        }
        double rel = sqrt(num / den);
        printf("%-10s loss fp32 %.9g fp64 %.9g  gradient rel. L2 %.2e over %zu parameters\n",
               moe_act_name(act), l32, l64, rel, np);
        CHECK(rel <= 1e-4, "%s: gradient fp32 vs fp64 rel L2 %.3g > 1e-4", moe_act_name(act), rel);
        CHECK(fabs(l32 - l64) <= 1e-5 * fabs(l64), "%s: loss fp32 %.9g vs fp64 %.9g",
              moe_act_name(act), l32, l64);
        free(g32);
        free(g64);
    }
    moe_train_free(t32);
    moe_train_free(t64);
}

int main(void)
{
    check_act(MOE_ACT_GELU_TANH);
    check_act(MOE_ACT_GELU_ERF);
    check_act(MOE_ACT_RELU);
    printf("test_train_act: %d passed, %d failed\n", check_pass, check_fail);
    return check_fail != 0;
}
