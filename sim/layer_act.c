/* layer_act.c: the MoE layer's elementwise float kernels (layer_act.h) and the activations of
 * layer.h (moe_activate, moe_act_name, moe_act_parse).
 *
 * The activations use a branch-free exp (Cephes expf polynomial) in loops of constant trip
 * count VL, which GCC vectorises at -O2; libm's tanhf/erff would keep them scalar, and then
 * the activation pass alone costs about as much as the expert GEMMs of the reference layer.
 * Each chunk takes two loops: the first clamps exp's arguments into a small array, the second
 * does the rest. In one loop GCC 12 vectorises them only with AVX-512 (its masks): for AVX2 it
 * keeps the clamp as a branch ("control flow in loop") and the loop scalar, and the activation
 * alone took 40% of the reference layer's expert phase on an AVX2 CPU. The floats are the same
 * either way: the same operations on each element, in the same order.
 */
#include "layer_act.h"

#include "layer.h"

#include <stdint.h>
#include <string.h>

/* ---- activations ---- */

/* Chunk length: inner loops of this constant length vectorise at -O2. Each chunk loads the
 * loops' constants again, so longer chunks pay that less often: GELU (tanh) with bias on rows
 * of 2048 in L1/L2 took 1.35 ns an element with chunks of 16, 1.08 with 32, 1.01 with 64 (one
 * thread, an AVX2 CPU, AMD EPYC Zen 3). The floats are the same at any length. */
enum { VL = 64 };

typedef union { float f; uint32_t u; } moe_fbits;

/* The argument of exp_clamped clamped to [-87, 88], where e^x is a normal float. */
static inline float exp_arg(float x)
{
    x = x < -87.0f ? -87.0f : x;
    return x > 88.0f ? 88.0f : x;
}

/* e^x in float for x in [-87, 88] (exp_arg's), branch-free: n = round(x/ln2) by the 1.5*2^23
 * shifter, r = x - n ln2 in two parts, Cephes expf's degree-6 polynomial (S. L. Moshier,
 * relative error about 1 ulp), times 2^n built in the exponent bits. */
static inline float exp_clamped(float x)
{
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

/* GELU (tanh form) as 0.5 x (1 + tanh(z)) = x / (1 + e^(-2z)), z = sqrt(2/pi) (x + 0.044715
 * x^3): the sigmoid form has no cancellation for negative x. gelu_tanh_arg(x) is exp's
 * argument -2z clamped, gelu_tanh_of(x, a) the result from it. */
static inline float gelu_tanh_arg(float x)
{
    return exp_arg(-(1.5957691216057308f * (x + 0.044715f * x * x * x)));
}

static inline float gelu_tanh_of(float x, float a) { return x / (1.0f + exp_clamped(a)); }

/* GELU (erf form) as x Phi(x) = 0.5 x erfc(-x/sqrt 2), erfc by Numerical Recipes' erfcc (2nd
 * ed., section 6.2: fractional error below 1.2e-7 everywhere), so small negative tails keep
 * their precision: erfc(z) = t e^(-z^2 + q(t)) for z >= 0, t = 1 / (1 + |z|/2), and 2 minus that
 * for z < 0. gelu_erf_arg(x, &t, &b) is exp's argument clamped, with t signed as z and b = 0 for
 * z >= 0, 2 for z < 0, so that gelu_erf_of's b + t e^a is erfc(z) (the same float as 2 - t e^a:
 * the product's sign flips exactly); gelu_erf_of the result. */
static inline float gelu_erf_arg(float x, float *t, float *b)
{
    float z = -0.70710678118654752f * x;
    float az = z < 0.0f ? -z : z;
    float tt = 1.0f / (1.0f + 0.5f * az);
    float q = -1.26551223f + tt * (1.00002368f + tt * (0.37409196f + tt * (0.09678418f +
              tt * (-0.18628806f + tt * (0.27886807f + tt * (-1.13520398f + tt * (1.48851587f +
              tt * (-0.82215223f + tt * 0.17087277f))))))));
    *t = z >= 0.0f ? tt : -tt;
    *b = z >= 0.0f ? 0.0f : 2.0f;
    return exp_arg(-az * az + q);
}

static inline float gelu_erf_of(float x, float a, float t, float b)
{
    return 0.5f * x * (b + t * exp_clamped(a));
}

static inline float relu_f(float x) { return x > 0.0f ? x : 0.0f; }

/* silu(x) = x / (1 + e^(-x)) from silu_arg(x), exp's argument clamped */
static inline float silu_arg(float x) { return exp_arg(-x); }

static inline float silu_of(float x, float a) { return x / (1.0f + exp_clamped(a)); }

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

/* CHUNKED in two loops over each chunk: FIRST for every I of the chunk (the clamped arguments
 * into A[I - I0], and T and B at I - I0 when it has them), then SECOND for every I of it. */
#define CHUNKED2(I, LEN, FIRST, SECOND)                                                      \
    do {                                                                                      \
        float A[VL], T[VL], B[VL];                                                            \
        size_t I##0_ = 0, n_ = (LEN);                                                         \
        for (; I##0_ < n_; I##0_ += VL) {                                                     \
            const size_t I##1_ = n_ - I##0_ < VL ? n_ : I##0_ + VL;                           \
            if (I##1_ - I##0_ == VL) {                                                        \
                for (size_t I = I##0_; I < I##0_ + VL; I++) {                                 \
                    FIRST;                                                                    \
                }                                                                             \
                for (size_t I = I##0_; I < I##0_ + VL; I++) {                                 \
                    SECOND;                                                                   \
                }                                                                             \
            } else {                                                                          \
                for (size_t I = I##0_; I < I##1_; I++) {                                      \
                    FIRST;                                                                    \
                }                                                                             \
                for (size_t I = I##0_; I < I##1_; I++) {                                      \
                    SECOND;                                                                   \
                }                                                                             \
            }                                                                                 \
        }                                                                                     \
        (void)T, (void)B;                                                                     \
    } while (0)

void moe_activate(int act, float *v, size_t len)
{
    switch (act) {
    case MOE_ACT_GELU_TANH:
        CHUNKED2(i, len, A[i - i0_] = gelu_tanh_arg(v[i]),
                 v[i] = gelu_tanh_of(v[i], A[i - i0_]));
        break;
    case MOE_ACT_GELU_ERF:
        CHUNKED2(i, len, A[i - i0_] = gelu_erf_arg(v[i], &T[i - i0_], &B[i - i0_]),
                 v[i] = gelu_erf_of(v[i], A[i - i0_], T[i - i0_], B[i - i0_]));
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
        CHUNKED2(i, len, A[i - i0_] = gelu_tanh_arg(v[i] + b[i]),
                 v[i] = gelu_tanh_of(v[i] + b[i], A[i - i0_]));
        break;
    case MOE_ACT_GELU_ERF:
        CHUNKED2(i, len, A[i - i0_] = gelu_erf_arg(v[i] + b[i], &T[i - i0_], &B[i - i0_]),
                 v[i] = gelu_erf_of(v[i] + b[i], A[i - i0_], T[i - i0_], B[i - i0_]));
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
    CHUNKED2(j, f, A[j - j0_] = silu_arg(g[j] + bg[j]),
             g[j] = silu_of(g[j] + bg[j], A[j - j0_]) * (u[j] + bu[j]));
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

