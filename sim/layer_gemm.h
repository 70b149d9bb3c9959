/* layer_gemm.h: the GEMMs of the MoE layer's expert FFNs. Two backends:
 *   - OpenBLAS sgemm through GSL's BLAS interface (moe_gemm_sgemm), which packs the weights
 *     on every call;
 *   - libxsmm (built when the Makefile finds it, -DMOESIM_XSMM): JIT kernels over weights
 *     packed once (moe_gemm_pack), in column blocks (moe_gemm_block_cols), so a GEMM of few rows
 *     does not pay the packing of the whole weight matrix on every call.
 * And the layer's job runner (moe_gemm_run_jobs): nt jobs on nt threads.
 *
 * Packed layout of E matrices W_e (K,N) row-major: for each expert, blocks of
 * moe_gemm_block_cols() columns (the last one the rest of N), each block (K, width) row-major,
 * so a block is one contiguous column-major (width x K) operand of libxsmm's kernel.
 * Bits: rows run in blocks of MOE_GEMM_BR from the first row of each call, the rest through the
 * kernel for that many rows; a row's output depends on its input row and on the kernel its
 * block runs through, not on the other rows. The layer keeps calls on the same row boundaries
 * (segments, tiles on multiples of 192 = 12 x 16 rows), so y keeps its bits across threads,
 * tiles and padding (tested in test_layer.c); whether the 16-row kernel and a tail kernel round
 * a row alike is not relied on (a padded expert run as one call over all C rows changed y in
 * the expert-parallel tests). */
#ifndef MOE_LAYER_GEMM_H
#define MOE_LAYER_GEMM_H

#include <stddef.h>

enum { MOE_GEMM_OPENBLAS = 0, MOE_GEMM_LIBXSMM = 1 };
enum { MOE_GEMM_BR = 16 }; /* rows per kernel call */

typedef struct moe_gemm_pack moe_gemm_pack;

/* 1 if this build has libxsmm and it generates kernels for this CPU. */
int moe_gemm_libxsmm_available(void);
/* The backend a new layer takes (moe_layer_alloc): libxsmm where it is available, OpenBLAS
 * elsewhere (layer_gemm.c has the measurements). */
int moe_gemm_default(void);
/* Columns per block of the packed weights: 64 where libxsmm runs AVX-512 kernels, 32 where it
 * runs AVX2 ones (layer_gemm.c says why). Each output element is one dot product over K in the
 * kernel, whatever block its column falls in: libxsmm's AVX2 kernels gave the same bits with
 * blocks of 16, 32 and 64 columns (checked once on 16 rows x 512 x 2048). */
size_t moe_gemm_block_cols(void);
/* "libxsmm 1.17.0 (cpx)" or "OpenBLAS" for the backend id b. */
const char *moe_gemm_backend_name(int b);
/* 1 if the packed kernels prefetch each next column block of the weights on this CPU (Intel),
 * 0 if not (every other vendor; layer_gemm.c says why). */
int moe_gemm_prefetches(void);

/* *out = a workspace for E packed (K,N) matrices and their kernels, which read input rows of
 * leading dimension lda >= K and write output rows of leading dimension N. Fails (*out = NULL,
 * moe_fail) without libxsmm, out of memory, or when libxsmm generates no kernel. */
int moe_gemm_pack_alloc(size_t E, size_t K, size_t N, size_t lda, moe_gemm_pack **out);
void moe_gemm_pack_free(moe_gemm_pack *p);
/* Packs matrix e of w (E,K,N) row-major, or all of them when e < 0. */
void moe_gemm_pack_fill(moe_gemm_pack *p, const float *w, long e);
/* Column blocks of each packed matrix. */
size_t moe_gemm_pack_blocks(const moe_gemm_pack *p);
size_t moe_gemm_pack_bytes(const moe_gemm_pack *p);
/* c (rows,N) = a (rows,K) W_e on the column blocks [b0, b1), row-major with leading dims
 * lda and ldc, which must be the pack's lda and N (c's other columns untouched). With
 * 0 < split < rows, rows [0, split) and [split, rows) run as two calls would (each in blocks of
 * MOE_GEMM_BR from its own first row, so the same bits), but each column block of W_e is read
 * once for both: a padded expert's kept and zero rows. split = 0: one call. */
int moe_gemm_pack_run(const moe_gemm_pack *p, size_t e, size_t rows, size_t split,
                      const float *a, size_t lda, float *c, size_t ldc, size_t b0, size_t b1);

/* Packs w (E,K,N) into p on nt threads unless *src == w already, then sets *src = w: the
 * pack follows the weights' address, not their values (the layer's contract: see
 * moe_layer_repack in layer.h). Nothing when p is NULL. */
void moe_gemm_pack_sync(moe_gemm_pack *p, const float *w, const float **src, int nt);
/* c (rows,N) = a (rows,K) W_e for expert e of w (E,K,N): OpenBLAS when p is NULL, else the
 * packed kernels of p (packed from w) with the column blocks split over nt threads; split as
 * in moe_gemm_pack_run (OpenBLAS: two sgemm calls). */
int moe_gemm_expert(const moe_gemm_pack *p, const float *w, size_t e, size_t rows, size_t split,
                    size_t K, size_t N, const float *a, size_t lda, float *c, size_t ldc, int nt,
                    const char *where);

/* c (m,n) = op(a) b + beta c on row-major blocks with leading dimensions lda, ldb, ldc;
 * op(a) = a (m,k), or a^T when ta (a stored (k,m)). All sizes >= 1. OpenBLAS. */
int moe_gemm_sgemm(int ta, size_t m, size_t n, size_t k, const float *a, size_t lda,
                   const float *b, size_t ldb, float beta, float *c, size_t ldc,
                   const char *where);

/* Runs fn on nt jobs (job i at (char *)jobs + i*size; size 0: all the same job), job 0 on the
 * calling thread, the others on the workers moe_par_run keeps between calls (routers/par.h; new
 * threads when those are busy, the caller when one cannot start); nt is capped at
 * MOE_MAX_THREADS. */
enum { MOE_MAX_THREADS = 8 };
void moe_gemm_run_jobs(void *(*fn)(void *), void *jobs, size_t size, int nt);

#endif
