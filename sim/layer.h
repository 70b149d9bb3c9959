/* layer.h: the real MoE layer (gate logits by gate.h, dispatch, expert FFNs, combine) in fp32:
 * expert GEMMs by libxsmm on weights packed once, or OpenBLAS (layer_gemm.h, moe_layer_set_gemm),
 * plus the naive reference it is tested against and the dense mixture used for the output
 * error.
 *
 * Expert FFN_e(h) = act(h W1_e + b1_e) W2_e + b2_e, with
 *   w1 (E,D,F)  b1 (E,F)  w2 (E,F,D)  b2 (E,D)
 * SwiGLU: w1 (E,D,2F), b1 (E,2F); columns [0,F) are the gate, [F,2F) the up projection:
 *   FFN_e(h) = (silu(h W1g + b1g) * (h W1u + b1u)) W2_e + b2_e.
 * GELU tanh form: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))); erf form: 0.5 x (1 + erf(x/sqrt 2)).
 */
#ifndef MOE_LAYER_H
#define MOE_LAYER_H

#include "moe.h"
#include "shared_ffn.h"

typedef struct {
    int E, d, f;
    int act;              /* enum moe_act */
    const float *w1, *b1; /* (E,D,F) (E,F); SwiGLU (E,D,2F) (E,2F) */
    const float *w2, *b2; /* (E,F,D) (E,D) */
    /* shared experts (shared_ffn.h) every token also passes through, with this activation and
     * width d; NULL or S = 0: none. The layer needs moe_layer_set_shared with the same pointer. */
    const moe_shared *shared;
} moe_experts;

/* Seconds one batch spends in each phase: the one timing struct of moesim. The layer fills
 * dispatch, experts and combine; the batch pipeline (pipeline.h) gate, route and total
 * (the sum of the five phases). MOE_PHASE_* index the same phases in arrays of results, in
 * this order; moe_phase_names[] are their names in the database (time_<name>_s). */
typedef struct {
    double gate, route, dispatch, experts, combine, total;
} moe_phase_times;
enum { MOE_PHASE_GATE, MOE_PHASE_ROUTE, MOE_PHASE_DISPATCH, MOE_PHASE_EXPERTS, MOE_PHASE_COMBINE,
       MOE_PHASE_TOTAL, MOE_NPHASES };
extern const char *const moe_phase_names[MOE_NPHASES];
/* The phases of t as an array v (MOE_NPHASES) in MOE_PHASE_* order. */
void moe_phase_times_array(const moe_phase_times *t, double *v);

typedef struct moe_layer moe_layer;

/* Shared experts for the layer: allocates their workspace for n_max tokens and packs the
 * weights of sh (copied now; call again after changing them). Forward, the dense mixture and
 * the naive reference then add them to y for experts whose `shared` is sh. */
int moe_layer_set_shared(moe_layer *L, const moe_shared *sh);

/* Workspaces for up to n_max tokens, E experts with capacity C_max slots each (for soft_moe,
 * C_max = P), width d, hidden f. Allocated once per shape, never inside forward. */
moe_layer *moe_layer_alloc(int n_max, int E, long C_max, int d, int f, int act);
void moe_layer_free(moe_layer *L);

/* Padding to capacity (the routing option pad_to_capacity): on = 1 makes moe_layer_forward run
 * every expert of a sparse plan at exactly C rows, C = the plan's capacity, as GShard, DeepSpeed
 * and Megatron's padded layers do: the rows of an expert beyond its kept claims are zero inputs
 * whose outputs no entry combines. y is the same as unpadded, bit for bit (each output row is
 * computed from its own input row alone); dispatch (zeroing E*C rows) and the expert phase take
 * the time of the padded implementation. Dense plans (soft_moe) fill every slot anyway. on = 0
 * (the default): each expert runs its rows up to its last filled slot. */
void moe_layer_set_pad_to_capacity(moe_layer *L, int on);

/* Rows per tile of the expert phase: an expert with at least 2 R rows runs them as GEMM pairs
 * of R rows each, the last one taking the rest (R..2R-1 rows), R = `rows` rounded up to a
 * multiple of 192; 0: one GEMM pair per expert. Ignored (R = 0) when R*d*f is below 2^24, near
 * OpenBLAS's small-matrix kernels. Tile boundaries on multiples of 192 rows keep every row in
 * the GEMM kernel it meets untiled: y is the same bit for bit (tested with OpenBLAS's Haswell
 * and Cooperlake kernels, and libxsmm). The default, set by moe_layer_set_gemm: 768 with
 * libxsmm (a tile's hidden rows stay in cache between the two GEMMs), 0 with OpenBLAS. */
void moe_layer_set_tile_rows(moe_layer *L, size_t rows);
/* The rows per tile in effect (0: untiled). */
size_t moe_layer_tile_rows(const moe_layer *L);

/* The expert GEMMs' backend (layer_gemm.h): MOE_GEMM_LIBXSMM, the default when the build
 * has libxsmm and it supports the CPU, runs libxsmm kernels on a copy of the expert weights
 * packed once (the layer's memory grows by the size of w1 and w2); MOE_GEMM_OPENBLAS runs
 * OpenBLAS sgemm, which packs the weights on every call. The two round differently (y differs
 * in its last bits, docs/layer.md); each keeps y independent of threads, tiles and padding.
 * Sets the backend's default tile rows (moe_layer_set_tile_rows). Fails (the layer keeps
 * OpenBLAS) when libxsmm is missing or out of memory. */
int moe_layer_set_gemm(moe_layer *L, int backend);
int moe_layer_gemm(const moe_layer *L);
/* With libxsmm the layer packs the expert weights when forward or the dense mixture first
 * sees their address (w1, w2), and again when the address changes, not when the values do:
 * after changing weights in place, call moe_layer_repack before the next forward. */
void moe_layer_repack(moe_layer *L);

/* Rows the expert phase of the last moe_layer_forward ran FFN_e on, summed over experts (the
 * kept slots up to each expert's last filled one; E*C padded to capacity; 0 before any). */
size_t moe_layer_rows_run(const moe_layer *L);
/* The tiles of that expert phase in the order its workers took them (longest first; ties by
 * expert, then row): for i < min(count, max), tile i runs rows [at[i], at[i] + rows[i]) of
 * expert[i]'s block. Returns the count (0 before any). */
size_t moe_layer_tiles(const moe_layer *L, int *expert, size_t *at, size_t *rows, size_t max);

/* logits (T,M) = x (T,D) * wg (D,M): float products summed in double in the fixed order of
 * gate.h (not a BLAS sgemm), so the bits do not depend on the BLAS kernel, threads or CPU. */
int moe_layer_gate(moe_layer *L, const float *x, int n, const float *wg, int m, double *logits);

/* y (T,D) = sum over plan entries of combine_w * FFN_e(h[e,s]), h[e,s] = sum dispatch_w * x[t].
 * Sparse plans gather/scatter by index; dense plans (soft_moe) use GEMMs. Tokens without
 * entries get y = 0, plus the shared experts of w (every token, one GEMM pair, timed in the
 * experts phase). tm may be NULL. */
int moe_layer_forward(moe_layer *L, const moe_experts *w, const moe_plan *plan, const float *x,
                      float *y, moe_phase_times *tm);

/* y (n,D) += the shared experts of w on x (n,D) alone (for a forward that runs the routed
 * experts elsewhere: the expert-parallel layer); nothing without shared experts. */
int moe_layer_forward_shared(moe_layer *L, const moe_experts *w, const float *x, int n, float *y,
                             moe_phase_times *tm);

/* Naive reference (triple loops, double accumulation): same contract as moe_layer_forward. */
int moe_layer_forward_naive(const moe_experts *w, const moe_plan *plan, const float *x, float *y);

/* Dense mixture y (T,D) = sum_e p[t,e] FFN_e(x_t) for the tokens listed in rows (nrows of them;
 * rows = NULL means all n), p (T,E). y rows are written in the order of rows. */
int moe_layer_dense_mixture(moe_layer *L, const moe_experts *w, const float *x, int n,
                            const double *p, const int *rows, int nrows, float *y);

/* The layer's building blocks, for the shared experts (shared_ffn.c):
 * c (m,n) = op(a) b + beta c on row-major blocks (op(a) = a^T when ta), as the expert GEMMs;
 * bias + activation over rows of buf (rows, ld), width columns (act < 0: bias only; SwiGLU:
 * gate [0,width), up [width, 2 width), result in the gate columns), threaded as in forward;
 * the activation in double, as the naive reference computes it (not SwiGLU). */
int moe_layer_sgemm(int ta, size_t m, size_t n, size_t k, const float *a, size_t lda,
                    const float *b, size_t ldb, float beta, float *c, size_t ldc,
                    const char *where);
void moe_layer_bias_act_rows(int act, float *buf, size_t rows, size_t ld, const float *b,
                             size_t width);
double moe_act_ref(int act, double v);

/* ||a - ref||_2 / ||ref||_2 in double (0 if both are 0, +inf if only ref is 0). */
double moe_rel_l2(const float *a, const float *ref, size_t len);

/* Apply an activation in place to len values (not SwiGLU). */
void moe_activate(int act, float *v, size_t len);
const char *moe_act_name(int act);
int moe_act_parse(const char *s, int *act);

/* Bytes of the layer's own workspaces (xin, hid, out, used, hits): E*C_max*(2D + FW) floats
 * plus E longs and E*C_max bytes, plus the shared experts' workspace and the packed weights;
 * the caller's x and y are not counted. 0 for NULL. */
size_t moe_layer_workspace_bytes(const moe_layer *L);

/* Bytes of the packed weights alone (part of the above): a copy of the expert weights in the
 * GEMM kernels' layout, the same at every n; 0 without packing or for NULL. */
size_t moe_layer_packed_bytes(const moe_layer *L);

#endif
