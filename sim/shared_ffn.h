/* shared_ffn.h: shared experts, the FFNs every token passes through besides its routed experts
 * (DeepSeek-V2/V3 `MoE.forward`: y = routed(x) + shared(x); Qwen2-MoE `Qwen2MoeSparseMoeBlock`:
 * y = routed(x) + sigmoid(x . wg) * shared(x)).
 *
 * S shared experts of hidden width Fs, with the activation of the routed experts (layer.h):
 *   w1 (S,D,FWs)  b1 (S,FWs)  w2 (S,Fs,D)  b2 (S,D),   FWs = Fs (2*Fs for SwiGLU: gate, then up)
 *   wg (S,D)      gate weights, only with gate = MOE_SHARED_GATE_SIGMOID
 * y[t] += sum_s g[t,s] FFN_s(x_t), g = 1 (gate none) or sigmoid(x_t . wg_s) (gate sigmoid).
 *
 * The layer runs the S experts as ONE GEMM pair over all tokens: the workspace packs w1 into one
 * (D, S*FWs) matrix (SwiGLU: the S gate halves, then the S up halves) and uses w2 as the
 * (S*Fs, D) matrix it already is; hid (T, S*FWs) = x W1cat + b1, the activation, then
 * y (T,D) += act (T, S*Fs) W2cat (sgemm with beta = 1) + sum_s g[t,s] b2_s.
 */
#ifndef MOE_SHARED_FFN_H
#define MOE_SHARED_FFN_H

#include "moe.h"

#include <stddef.h>

enum moe_shared_gate { MOE_SHARED_GATE_NONE = 0, MOE_SHARED_GATE_SIGMOID = 1 };

typedef struct moe_shared {
    int S, fs;            /* count, hidden width; S = 0: no shared experts */
    int gate;             /* enum moe_shared_gate */
    const float *w1, *b1; /* (S,D,FWs) (S,FWs) */
    const float *w2, *b2; /* (S,Fs,D) (S,D) */
    const float *wg;      /* (S,D) with gate sigmoid, else NULL */
} moe_shared;

/* The workspace of one layer's shared experts: packed weights and hidden rows for n_max tokens. */
typedef struct moe_shared_ws moe_shared_ws;

/* Check sh against (d, act) and allocate the workspace for up to n_max tokens, packing the
 * weights of sh (copied now: call again after changing them). NULL on error (moe_fail). */
moe_shared_ws *moe_shared_ws_alloc(const moe_shared *sh, int n_max, int d, int act);
void moe_shared_ws_free(moe_shared_ws *ws); /* NULL is a no-op */
/* The shared experts the workspace was packed from (the pointer given to _alloc). */
const moe_shared *moe_shared_ws_source(const moe_shared_ws *ws);
size_t moe_shared_ws_bytes(const moe_shared_ws *ws); /* 0 for NULL */

/* y (n,D) += shared(x (n,D)), n <= n_max: one GEMM pair (any n: blocks of n_max rows). */
int moe_shared_ws_add(moe_shared_ws *ws, const float *x, size_t n, float *y);

/* Naive reference in double: acc (n,D) += shared(x), straight from the definition above. */
int moe_shared_add_naive(const moe_shared *sh, int d, int act, const float *x, size_t n,
                         double *acc);

/* FLOPs one token spends in the shared experts: S * (4 or 6 for SwiGLU) * D * Fs, plus 2*D*S for
 * the sigmoid gate. 0 without shared experts (sh NULL or S = 0). */
double moe_shared_flops_per_token(const moe_shared *sh, int d, int act);

/* Shape checks shared by the loaders: S >= 0, Fs >= 1 when S > 0. */
int moe_shared_check(const moe_shared *sh, int d, int act, const char *where);

const char *moe_shared_gate_name(int gate);
int moe_shared_gate_parse(const char *s, int *gate);

#endif
