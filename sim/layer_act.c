/* layer_act.c: the MoE layer's elementwise float kernels (layer_act.h) and the activations of
 * layer.h (moe_activate, moe_act_name, moe_act_parse).
 *
 * The activations use a branch-free exp (Cephes expf polynomial) in loops of constant trip
 * count VL, which GCC vectorises at -O2; libm's tanhf/erff would keep them scalar, and then
 * the activation pass alone costs about as much as the expert GEMMs of the reference layer.
 */
#include "layer_act.h"

#include "layer.h"

#include <stdint.h>
#include <string.h>

/* ---- activations ---- */

enum { VL = 16 }; /* chunk length: inner loops of this constant length vectorise at -O2 */

typedef union { float f; uint32_t u; } moe_fbits;

/* e^x in float, branch-free: x clamped to [-87, 88] (normal results, no inf), n = round(x/ln2)
 * by the 1.5*2^23 shifter, r = x - n ln2 in two parts, Cephes expf's degree-6 polynomial
 * (S. L. Moshier, relative error about 1 ulp), times 2^n built in the exponent bits. */
static inline float fast_expf(float x)
{
    x = x < -87.0f ? -87.0f : x;
    x = x > 88.0f ? 88.0f : x;
    moe_fbits j;
    j.f = x * 1.44269504088896341f + 12582912.0f;
    float fn = j.f - 12582912.0f;
    float r = x - fn * 0.693359375f;
    r = r - fn * -2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    moe_fbits s;
    s.u = (j.u - 0x4B400000u + 127u) << 23; /* low bits of j hold n; n + 127 in 1..254 */
    return p * s.f;
}

/* 0.5 x (1 + tanh(z)) = x / (1 + e^(-2z)), z = sqrt(2/pi) (x + 0.044715 x^3): the sigmoid form
 * has no cancellation for negative x. */
static inline float gelu_tanh_f(float x)
{
    float z2 = 1.5957691216057308f * (x + 0.044715f * x * x * x); /* 2z */
    return x / (1.0f + fast_expf(-z2));
}

/* x Phi(x) = 0.5 x erfc(-x/sqrt 2), erfc by Numerical Recipes' erfcc (2nd ed., section 6.2:
 * fractional error below 1.2e-7 everywhere), so small negative tails keep their precision. */
static inline float gelu_erf_f(float x)
{
    float z = -0.70710678118654752f * x;
    float az = z < 0.0f ? -z : z;
    float t = 1.0f / (1.0f + 0.5f * az);
    float q = -1.26551223f + t * (1.00002368f + t * (0.37409196f + t * (0.09678418f +
              t * (-0.18628806f + t * (0.27886807f + t * (-1.13520398f + t * (1.48851587f +
              t * (-0.82215223f + t * 0.17087277f))))))));
    float ans = t * fast_expf(-az * az + q);
    float erfc = z >= 0.0f ? ans : 2.0f - ans;
    return 0.5f * x * erfc;
}

static inline float relu_f(float x) { return x > 0.0f ? x : 0.0f; }

static inline float silu_f(float x) { return x / (1.0f + fast_expf(-x)); }

/* Runs STMT for I in [0, LEN): chunks of VL with a constant inner trip count, then the tail. */
#define CHUNKED(I, LEN, STMT)                                                                 \
    do {                                                                                      \
        size_t I##0_ = 0, n_ = (LEN);                                                         \
        for (; I##0_ + VL <= n_; I##0_ += VL)                                                 \
            for (size_t I = I##0_; I < I##0_ + VL; I++) {                                     \
                STMT;                                                                         \
            }                                                                                 \
        for (size_t I = I##0_; I < n_; I++) {                                                 \
            STMT;                                                                             \
        }                                                                                     \
    } while (0)

void moe_activate(int act, float *v, size_t len)
{
    switch (act) {
    case MOE_ACT_GELU_TANH:
        CHUNKED(i, len, v[i] = gelu_tanh_f(v[i]));
        break;
    case MOE_ACT_GELU_ERF:
        CHUNKED(i, len, v[i] = gelu_erf_f(v[i]));
        break;
    case MOE_ACT_RELU:
        CHUNKED(i, len, v[i] = relu_f(v[i]));
        break;
    default: /* SwiGLU needs both halves: see moe_act_swiglu_row */
        break;
    }
}

/* v (len) = act(v + b); act < 0: bias only. */
void moe_act_bias(int act, float *restrict v, const float *restrict b, size_t len)
{
    switch (act) {
    case MOE_ACT_GELU_TANH:
        CHUNKED(i, len, v[i] = gelu_tanh_f(v[i] + b[i]));
        break;
    case MOE_ACT_GELU_ERF:
        CHUNKED(i, len, v[i] = gelu_erf_f(v[i] + b[i]));
        break;
    case MOE_ACT_RELU:
        CHUNKED(i, len, v[i] = relu_f(v[i] + b[i]));
        break;
    default:
        CHUNKED(i, len, v[i] += b[i]);
        break;
    }
}

/* One SwiGLU row: g (F) = silu(g + bg) * (u + bu), u the up half (F) of the same row. */
void moe_act_swiglu_row(float *restrict g, const float *restrict u, const float *restrict bg,
                        const float *restrict bu, size_t f)
{
    CHUNKED(j, f, g[j] = silu_f(g[j] + bg[j]) * (u[j] + bu[j]));
}

/* y (len) += a x (len) */
void moe_act_axpy(float a, const float *restrict x, float *restrict y, size_t len)
{
    CHUNKED(i, len, y[i] += a * x[i]);
}

void moe_act_scale0(float a, const float *restrict x, float *restrict y, size_t len)
{
    CHUNKED(i, len, y[i] = 0.0f + a * x[i]);
}

const char *moe_act_name(int act)
{
    switch (act) {
    case MOE_ACT_GELU_TANH: return "gelu_tanh";
    case MOE_ACT_GELU_ERF: return "gelu_erf";
    case MOE_ACT_RELU: return "relu";
    case MOE_ACT_SWIGLU: return "swiglu";
    default: return "unknown";
    }
}

int moe_act_parse(const char *s, int *act)
{
    for (int a = MOE_ACT_GELU_TANH; a <= MOE_ACT_SWIGLU; a++)
        if (s && strcmp(s, moe_act_name(a)) == 0) {
            *act = a;
            return MOE_OK;
        }
    return moe_fail(MOE_EINVAL, "use one of gelu_tanh, gelu_erf, relu, swiglu",
                    "unknown activation '%s' (act)", s ? s : "(null)");
}

