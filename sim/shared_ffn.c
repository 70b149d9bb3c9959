/* shared_ffn.c: the shared experts of shared_ffn.h: packing the S experts into one GEMM pair,
 * the forward over all tokens, the naive double reference and the FLOPs per token. The GEMMs
 * and the bias + activation pass are the layer's own (layer.h: moe_layer_sgemm,
 * moe_layer_bias_act_rows), so the shared experts compute exactly what a routed expert with
 * the same weights computes. */
#include "shared_ffn.h"

#include "layer.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

struct moe_shared_ws {
    const moe_shared *src;
    int S, fs, fws, d, act, gate;
    size_t n_max, W;  /* W = S*FWs columns of the packed first matrix */
    float *w1p;       /* (D, W): SwiGLU: columns [0, S*Fs) gates, [S*Fs, 2*S*Fs) ups */
    float *b1p;       /* (W) in the same column order */
    float *b2sum;     /* (D) sum of the S output biases (gate none) */
    float *hid;       /* (n_max, W) */
    float *g;         /* (n_max, S) sigmoid gates */
    const float *w2, *b2, *wg; /* (S*Fs, D), (S,D), (S,D): the caller's */
};

const char *moe_shared_gate_name(int gate)
{
    return gate == MOE_SHARED_GATE_SIGMOID ? "sigmoid" : gate == MOE_SHARED_GATE_NONE ? "none"
                                                                                     : "?";
}

int moe_shared_gate_parse(const char *s, int *gate)
{
    if (s && !strcmp(s, "none")) {
        *gate = MOE_SHARED_GATE_NONE;
        return MOE_OK;
    }
    if (s && !strcmp(s, "sigmoid")) {
        *gate = MOE_SHARED_GATE_SIGMOID;
        return MOE_OK;
    }
    return moe_fail(MOE_EINVAL, "use none or sigmoid", "unknown shared_gate '%s' (shared_gate)",
                    s ? s : "(null)");
}

int moe_shared_check(const moe_shared *sh, int d, int act, const char *where)
{
    if (!sh || sh->S == 0)
        return MOE_OK;
    if (sh->S < 0 || sh->fs < 1 || d < 1)
        return moe_fail(MOE_EINVAL, "shared experts need S >= 1 and shared_f >= 1",
                        "shared experts S = %d, Fs = %d, D = %d (%s)", sh->S, sh->fs, d, where);
    if (act < MOE_ACT_GELU_TANH || act > MOE_ACT_SWIGLU)
        return moe_fail(MOE_EINVAL, NULL, "unknown activation %d (%s)", act, where);
    if (sh->gate != MOE_SHARED_GATE_NONE && sh->gate != MOE_SHARED_GATE_SIGMOID)
        return moe_fail(MOE_EINVAL, NULL, "unknown shared gate %d (%s)", sh->gate, where);
    if (!sh->w1 || !sh->b1 || !sh->w2 || !sh->b2 ||
        (sh->gate == MOE_SHARED_GATE_SIGMOID && !sh->wg))
        return moe_fail(MOE_EINVAL, NULL, "shared expert weights missing (%s)", where);
    size_t cols;
    size_t fws = (size_t)sh->fs * (act == MOE_ACT_SWIGLU ? 2u : 1u);
    if (__builtin_mul_overflow((size_t)sh->S, fws, &cols) || cols > (size_t)1 << 30)
        return moe_fail(MOE_EINVAL, "use fewer or narrower shared experts",
                        "shared experts S = %d x Fs = %d too wide (%s)", sh->S, sh->fs, where);
    return MOE_OK;
}

void moe_shared_ws_free(moe_shared_ws *ws)
{
    if (!ws)
        return;
    free(ws->w1p);
    free(ws->b1p);
    free(ws->b2sum);
    free(ws->hid);
    free(ws->g);
    free(ws);
}

/* Column of the packed first matrix for column j (0..FWs-1) of shared expert s. */
static size_t packed_col(const moe_shared_ws *ws, int s, int j)
{
    size_t Fs = (size_t)ws->fs, SF = (size_t)ws->S * Fs;
    if (ws->act == MOE_ACT_SWIGLU && j >= ws->fs) /* up half: after all the gate halves */
        return SF + (size_t)s * Fs + (size_t)(j - ws->fs);
    return (size_t)s * Fs + (size_t)j;
}

static void pack(moe_shared_ws *ws, const moe_shared *sh)
{
    size_t D = (size_t)ws->d, FW = (size_t)ws->fws, W = ws->W;
    for (int s = 0; s < ws->S; s++)
        for (int j = 0; j < ws->fws; j++) {
            size_t col = packed_col(ws, s, j);
            ws->b1p[col] = sh->b1[(size_t)s * FW + (size_t)j];
            for (size_t c = 0; c < D; c++)
                ws->w1p[c * W + col] = sh->w1[((size_t)s * D + c) * FW + (size_t)j];
        }
    for (size_t c = 0; c < D; c++) {
        float b = 0.0f;
        for (int s = 0; s < ws->S; s++)
            b += sh->b2[(size_t)s * D + c];
        ws->b2sum[c] = b;
    }
}

moe_shared_ws *moe_shared_ws_alloc(const moe_shared *sh, int n_max, int d, int act)
{
    if (moe_shared_check(sh, d, act, "moe_shared_ws_alloc"))
        return NULL;
    if (!sh || sh->S == 0 || n_max < 1) {
        moe_fail(MOE_EINVAL, NULL, "no shared experts or no tokens (moe_shared_ws_alloc)");
        return NULL;
    }
    moe_shared_ws *ws = calloc(1, sizeof *ws);
    if (!ws) {
        moe_fail(MOE_ENOMEM, NULL, "out of memory (moe_shared_ws_alloc)");
        return NULL;
    }
    *ws = (moe_shared_ws){sh, sh->S, sh->fs, sh->fs * (act == MOE_ACT_SWIGLU ? 2 : 1), d, act,
                          sh->gate, (size_t)n_max, 0, NULL, NULL, NULL, NULL, NULL,
                          sh->w2, sh->b2, sh->wg};
    ws->W = (size_t)ws->S * (size_t)ws->fws;
    size_t hid_len;
    int big = __builtin_mul_overflow(ws->n_max, ws->W, &hid_len) ||
              hid_len > SIZE_MAX / sizeof(float);
    if (!big) {
        ws->w1p = malloc((size_t)d * ws->W * sizeof *ws->w1p);
        ws->b1p = malloc(ws->W * sizeof *ws->b1p);
        ws->b2sum = malloc((size_t)d * sizeof *ws->b2sum);
        ws->hid = malloc(hid_len * sizeof *ws->hid);
        ws->g = malloc(ws->n_max * (size_t)ws->S * sizeof *ws->g);
    }
    if (big || !ws->w1p || !ws->b1p || !ws->b2sum || !ws->hid || !ws->g) {
        moe_fail(MOE_ENOMEM, "use fewer tokens or narrower shared experts",
                 "out of memory for the shared experts' workspace: %zu tokens x %zu columns "
                 "(moe_shared_ws_alloc)", ws->n_max, ws->W);
        moe_shared_ws_free(ws);
        return NULL;
    }
    pack(ws, sh);
    return ws;
}

const moe_shared *moe_shared_ws_source(const moe_shared_ws *ws) { return ws ? ws->src : NULL; }

size_t moe_shared_ws_bytes(const moe_shared_ws *ws)
{
    if (!ws)
        return 0;
    return ((size_t)ws->d * ws->W + ws->W + (size_t)ws->d + ws->n_max * ws->W +
            ws->n_max * (size_t)ws->S) * sizeof(float);
}

/* g (n,S) = sigmoid(x (n,D) . wg_s), the products summed in double. */
static void gates(moe_shared_ws *ws, const float *x, size_t n)
{
    size_t D = (size_t)ws->d, S = (size_t)ws->S;
    for (size_t t = 0; t < n; t++)
        for (size_t s = 0; s < S; s++) {
            double z = 0.0;
            for (size_t c = 0; c < D; c++)
                z += (double)x[t * D + c] * (double)ws->wg[s * D + c];
            ws->g[t * S + s] = (float)(1.0 / (1.0 + exp(-z)));
        }
}

/* One block of n <= n_max rows. */
static int add_block(moe_shared_ws *ws, const float *x, size_t n, float *y)
{
    size_t D = (size_t)ws->d, W = ws->W, Fs = (size_t)ws->fs, S = (size_t)ws->S, SF = S * Fs;
    int rc = moe_layer_sgemm(0, n, W, D, x, D, ws->w1p, W, 0.0f, ws->hid, W,
                             "shared experts' first matrix");
    if (rc)
        return rc;
    moe_layer_bias_act_rows(ws->act, ws->hid, n, W, ws->b1p, SF);
    if (ws->gate == MOE_SHARED_GATE_SIGMOID) {
        gates(ws, x, n);
        for (size_t t = 0; t < n; t++)
            for (size_t s = 0; s < S; s++) {
                float gv = ws->g[t * S + s], *h = ws->hid + t * W + s * Fs;
                for (size_t j = 0; j < Fs; j++)
                    h[j] *= gv;
            }
    }
    rc = moe_layer_sgemm(0, n, D, SF, ws->hid, W, ws->w2, D, 1.0f, y, D,
                         "shared experts' second matrix");
    if (rc)
        return rc;
    for (size_t t = 0; t < n; t++) {
        float *yr = y + t * D;
        if (ws->gate == MOE_SHARED_GATE_SIGMOID)
            for (size_t s = 0; s < S; s++) {
                float gv = ws->g[t * S + s];
                const float *b = ws->b2 + s * D;
                for (size_t c = 0; c < D; c++)
                    yr[c] += gv * b[c];
            }
        else
            for (size_t c = 0; c < D; c++)
                yr[c] += ws->b2sum[c];
    }
    return MOE_OK;
}

int moe_shared_ws_add(moe_shared_ws *ws, const float *x, size_t n, float *y)
{
    size_t D = (size_t)ws->d;
    for (size_t r0 = 0; r0 < n; r0 += ws->n_max) {
        size_t nb = n - r0 < ws->n_max ? n - r0 : ws->n_max;
        int rc = add_block(ws, x + r0 * D, nb, y + r0 * D);
        if (rc)
            return rc;
    }
    return MOE_OK;
}

int moe_shared_add_naive(const moe_shared *sh, int d, int act, const float *x, size_t n,
                         double *acc)
{
    if (!sh || sh->S == 0)
        return MOE_OK;
    int rc = moe_shared_check(sh, d, act, "moe_shared_add_naive");
    if (rc)
        return rc;
    size_t D = (size_t)d, Fs = (size_t)sh->fs, FW = act == MOE_ACT_SWIGLU ? 2 * Fs : Fs;
    double *a = malloc(FW * sizeof *a);
    if (!a)
        return moe_fail(MOE_ENOMEM, NULL, "out of memory (moe_shared_add_naive)");
    for (size_t t = 0; t < n; t++)
        for (size_t s = 0; s < (size_t)sh->S; s++) {
            const float *w1 = sh->w1 + s * D * FW, *b1 = sh->b1 + s * FW;
            const float *w2 = sh->w2 + s * Fs * D, *b2 = sh->b2 + s * D;
            for (size_t j = 0; j < FW; j++) {
                double v = b1[j];
                for (size_t c = 0; c < D; c++)
                    v += (double)x[t * D + c] * (double)w1[c * FW + j];
                a[j] = v;
            }
            for (size_t j = 0; j < Fs; j++)
                a[j] = act == MOE_ACT_SWIGLU ? a[j] / (1.0 + exp(-a[j])) * a[Fs + j]
                                             : moe_act_ref(act, a[j]);
            double g = 1.0;
            if (sh->gate == MOE_SHARED_GATE_SIGMOID) {
                double z = 0.0;
                for (size_t c = 0; c < D; c++)
                    z += (double)x[t * D + c] * (double)sh->wg[s * D + c];
                g = 1.0 / (1.0 + exp(-z));
            }
            for (size_t c = 0; c < D; c++) {
                double o = b2[c];
                for (size_t j = 0; j < Fs; j++)
                    o += a[j] * (double)w2[j * D + c];
                acc[t * D + c] += g * o;
            }
        }
    free(a);
    return MOE_OK;
}

double moe_shared_flops_per_token(const moe_shared *sh, int d, int act)
{
    if (!sh || sh->S <= 0)
        return 0.0;
    double per = (act == MOE_ACT_SWIGLU ? 6.0 : 4.0) * d * (double)sh->fs * sh->S;
    if (sh->gate == MOE_SHARED_GATE_SIGMOID)
        per += 2.0 * d * sh->S;
    return per;
}
