/* layer_gemm.c: the expert GEMM backends of layer_gemm.h (OpenBLAS sgemm; libxsmm kernels on
 * weights packed once) and the layer's job runner.
 *
 * libxsmm is column-major: our row-major c (rows,N) = a (rows,K) W (K,N) is, read
 * column-major, c^T (N,rows) = W^T (N,K) a^T (K,rows). One kernel call computes a column block
 * of width m (moe_gemm_block_cols, or the last block's rest of N) for n <= MOE_GEMM_BR rows:
 * its A is the packed block (m x K, lda = m), its B the rows of a (K x n, ldb = lda), its C
 * the block of c (m x n, ldc). Kernels for every n = 1..MOE_GEMM_BR and both widths are
 * generated once, in moe_gemm_pack_alloc.
 */
#include "layer_gemm.h"

#include "huge.h"
#include "moe.h"
#include "../routers/par.h"

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif
#include <gsl/gsl_blas.h>
#include <gsl/gsl_matrix_float.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef MOESIM_XSMM
#include <libxsmm.h>
#endif

/* ---- jobs ---- */

typedef struct {
    void *(*fn)(void *);
    char *jobs;
    size_t size;
} run_jobs_ctx;

static void run_jobs_part(void *ctx, int i, int nparts)
{
    (void)nparts;
    const run_jobs_ctx *r = ctx;
    r->fn(r->jobs + (size_t)i * r->size);
}

void moe_gemm_run_jobs(void *(*fn)(void *), void *jobs, size_t size, int nt)
{
    run_jobs_ctx r = {fn, jobs, size};
    moe_par_run(run_jobs_part, &r, nt < 1 ? 1 : nt > MOE_MAX_THREADS ? MOE_MAX_THREADS : nt);
}

/* ---- OpenBLAS ---- */

int moe_gemm_sgemm(int ta, size_t m, size_t n, size_t k, const float *a, size_t lda,
                   const float *b, size_t ldb, float beta, float *c, size_t ldc,
                   const char *where)
{
    gsl_matrix_float_const_view A = ta ? gsl_matrix_float_const_view_array_with_tda(a, k, m, lda)
                                       : gsl_matrix_float_const_view_array_with_tda(a, m, k, lda);
    gsl_matrix_float_const_view B = gsl_matrix_float_const_view_array_with_tda(b, k, n, ldb);
    gsl_matrix_float_view Cv = gsl_matrix_float_view_array_with_tda(c, m, n, ldc);
    int rc = gsl_blas_sgemm(ta ? CblasTrans : CblasNoTrans, CblasNoTrans, 1.0f, &A.matrix,
                            &B.matrix, beta, &Cv.matrix);
    if (rc)
        return moe_fail(MOE_EINVAL, NULL, "sgemm failed with GSL error %d (%s)", rc, where);
    return MOE_OK;
}

/* ---- libxsmm on packed weights ---- */

#ifdef MOESIM_XSMM
typedef libxsmm_smmfunction xkern;
#else
typedef void (*xkern)(const float *a, const float *b, float *c, ...);
#endif

struct moe_gemm_pack {
    size_t E, K, N, lda;  /* lda: leading dimension of the rows the kernels read */
    size_t bn;            /* columns per block (moe_gemm_block_cols) */
    size_t nb;            /* column blocks per matrix */
    size_t wt;            /* width of the last block (1..bn) */
    int prefetch;         /* 1: each next column block is prefetched (moe_gemm_prefetches) */
    float *w;             /* (E, N*K) packed, on huge pages (huge.h): every forward streams all
                           * of it, 4 KiB at a time a TLB miss otherwise (+1-4% GEMM speed at
                           * 128 rows per expert, one thread, CPU time, load average 6) */
    xkern kern[2][MOE_GEMM_BR]; /* [last block][rows - 1] */
};

#ifdef MOESIM_XSMM
static pthread_once_t xsmm_once = PTHREAD_ONCE_INIT;
static int xsmm_ok;

static void xsmm_init(void)
{
    libxsmm_init();
    /* kernels need AVX2 at least; older targets fall back to OpenBLAS */
    xsmm_ok = libxsmm_get_target_archid() >= LIBXSMM_X86_AVX2;
}
#endif

int moe_gemm_libxsmm_available(void)
{
#ifdef MOESIM_XSMM
    pthread_once(&xsmm_once, xsmm_init);
    return xsmm_ok;
#else
    return 0;
#endif
}

/* libxsmm's kernels on weights packed once are the faster expert GEMMs: on the Intel Xeon
 * (Cooper Lake) and the AMD EPYC (Zen 5) moesim was tuned on, with AVX-512, the layer's expert
 * phase came to 0.93-1.01 of a dense OpenBLAS GEMM pair of the same FLOPs with them, well ahead
 * of OpenBLAS per expert. On an AMD EPYC without AVX-512 (Zen 3, family 19h model 01h, where
 * libxsmm generates AVX2 "hsw" kernels and OpenBLAS runs its Zen ones) they are too, with column
 * blocks of 32 (moe_gemm_block_cols): per-expert GEMM pairs of 128 rows (E = 64, d = 512,
 * f = 2048, two workers, each GEMM on one thread, the backends alternated in one process, best
 * of 9) came to 0.98-1.00 of the dense pair against 0.90-0.94 for OpenBLAS; at 1024 and 2048
 * rows an expert both matched the dense pair (1.00-1.01). */
int moe_gemm_default(void)
{
    return moe_gemm_libxsmm_available() ? MOE_GEMM_LIBXSMM : MOE_GEMM_OPENBLAS;
}

/* A block row of 64 columns is four 16-float AVX-512 registers, but eight of the sixteen 8-float
 * AVX2 ones, which presumably leaves libxsmm's "hsw" kernels a register tile of few rows: on
 * blocks of 64 they ran the expert pair at 0.74-0.78 of the dense one (the measurements above),
 * on blocks of 32 at 0.98-1.00; 24 and 40 were slower (0.93, 0.71), and 8 to 24 rows a call
 * all within 2%. */
size_t moe_gemm_block_cols(void)
{
#ifdef MOESIM_XSMM
    if (moe_gemm_libxsmm_available() && libxsmm_get_target_archid() < LIBXSMM_X86_AVX512_CORE)
        return 32;
#endif
    return 64;
}

/* Whether prefetching each next column block into L2 during the calls on the current one pays
 * on this CPU. Measured at 128 rows an expert (n = 1k, E = 16, k = 2 and E = 64, k = 1 at
 * n = 8192, where each block serves 8 kernel calls): on the Intel Xeon (Cooper Lake) the layer
 * was first tuned on, the GEMMs waited on memory for the first read of every block (0.92 of
 * the speed of 768-row tiles without the prefetch, 0.99 with it, CPU time on one core); on an
 * AMD EPYC (Zen 5, family 1Ah) the prefetch made the expert phase 2.5-4% slower (its hardware
 * prefetchers bring the blocks in time, and the software prefetch only crowds its 1 MB L2), and
 * no slower or faster with tiles of 768 rows. So: on Intel CPUs only. The prefetch changes no
 * value. */
int moe_gemm_prefetches(void)
{
#if defined(__x86_64__) || defined(__i386__)
    unsigned a, b, c, d;
    if (__get_cpuid(0, &a, &b, &c, &d)) /* the vendor, "GenuineIntel", in ebx, edx, ecx */
        return b == 0x756e6547u && d == 0x49656e69u && c == 0x6c65746eu;
#endif
    return 0;
}

const char *moe_gemm_backend_name(int b)
{
#ifdef MOESIM_XSMM
    static char name[64];
    if (b == MOE_GEMM_LIBXSMM && moe_gemm_libxsmm_available()) {
        if (!name[0])
            snprintf(name, sizeof name, "libxsmm %d.%d.%d (%s)", LIBXSMM_VERSION_MAJOR,
                     LIBXSMM_VERSION_MINOR, LIBXSMM_VERSION_UPDATE, libxsmm_get_target_arch());
        return name;
    }
#endif
    return b == MOE_GEMM_LIBXSMM ? "libxsmm (not built)" : "OpenBLAS";
}

int moe_gemm_pack_alloc(size_t E, size_t K, size_t N, size_t lda, moe_gemm_pack **out)
{
    *out = NULL;
    if (!moe_gemm_libxsmm_available())
        return moe_fail(MOE_EINVAL, "build with libxsmm (Debian libxsmm-dev)",
                        "no libxsmm kernels in this build or for this CPU (expert GEMMs)");
    moe_gemm_pack *p = calloc(1, sizeof *p);
    size_t len;
    if (!p || __builtin_mul_overflow(E, K * N, &len) ||
        !(p->w = moe_huge_alloc(len * sizeof *p->w))) {
        free(p);
        return moe_fail(MOE_ENOMEM, "use fewer or smaller experts, or the OpenBLAS expert GEMMs",
                        "out of memory for %zu packed %zux%zu weight matrices (expert GEMMs)", E,
                        K, N);
    }
    p->E = E, p->K = K, p->N = N, p->lda = lda;
    p->prefetch = moe_gemm_prefetches();
    p->bn = moe_gemm_block_cols();
    p->nb = (N + p->bn - 1) / p->bn;
    p->wt = N - (p->nb - 1) * p->bn;
#ifdef MOESIM_XSMM
    const float alpha = 1.0f, beta = 0.0f;
    const int flags = LIBXSMM_GEMM_FLAG_NONE;
    for (int last = p->nb > 1 ? 0 : 1; last < 2; last++) /* full blocks, then the last */
        for (int r = 1; r <= MOE_GEMM_BR; r++) {
            libxsmm_blasint m = (libxsmm_blasint)(last ? p->wt : p->bn);
            libxsmm_blasint ldw = m, ldb = (libxsmm_blasint)lda, ldc = (libxsmm_blasint)N;
            p->kern[last][r - 1] = libxsmm_smmdispatch(m, r, (libxsmm_blasint)K, &ldw, &ldb,
                                                       &ldc, &alpha, &beta, &flags, NULL);
            if (!p->kern[last][r - 1]) {
                moe_gemm_pack_free(p);
                return moe_fail(MOE_EINVAL, "use the OpenBLAS expert GEMMs",
                                "libxsmm generated no kernel for %dx%dx%zu (expert GEMMs)",
                                (int)m, r, K);
            }
        }
#endif
    *out = p;
    return MOE_OK;
}

void moe_gemm_pack_free(moe_gemm_pack *p)
{
    if (!p)
        return;
    free(p->w);
    free(p);
}

void moe_gemm_pack_fill(moe_gemm_pack *p, const float *w, long e)
{
    size_t K = p->K, N = p->N, e0 = e < 0 ? 0 : (size_t)e, e1 = e < 0 ? p->E : (size_t)e + 1;
    for (size_t x = e0; x < e1; x++) {
        const float *src = w + x * K * N;
        float *dst = p->w + x * K * N;
        for (size_t b = 0; b < p->nb; b++) {
            size_t c0 = b * p->bn, wd = b + 1 < p->nb ? p->bn : p->wt;
            for (size_t k = 0; k < K; k++)
                memcpy(dst + c0 * K + k * wd, src + k * N + c0, wd * sizeof *dst);
        }
    }
}

size_t moe_gemm_pack_blocks(const moe_gemm_pack *p) { return p ? p->nb : 0; }

size_t moe_gemm_pack_bytes(const moe_gemm_pack *p)
{
    return p ? sizeof *p + p->E * p->K * p->N * sizeof *p->w : 0;
}

int moe_gemm_pack_run(const moe_gemm_pack *p, size_t e, size_t rows, size_t split,
                      const float *a, size_t lda, float *c, size_t ldc, size_t b0, size_t b1)
{
    if (lda != p->lda || ldc != p->N || e >= p->E || b1 > p->nb)
        return moe_fail(MOE_EINVAL, NULL, "packed GEMM called with lda %zu, ldc %zu, expert "
                        "%zu, blocks to %zu; its kernels have lda %zu, ldc %zu, %zu experts, "
                        "%zu blocks (expert GEMMs)", lda, ldc, e, b1, p->lda, p->N, p->E, p->nb);
    const float *w = p->w + e * p->K * p->N;
    size_t sp = split > 0 && split < rows ? split : rows;
    size_t calls = (sp + MOE_GEMM_BR - 1) / MOE_GEMM_BR +
                   (rows - sp + MOE_GEMM_BR - 1) / MOE_GEMM_BR; /* kernel calls per block */
    for (size_t b = b0; b < b1; b++) {
        int last = b + 1 == p->nb;
        const float *blk = w + b * p->bn * p->K;
        float *cb = c + b * p->bn;
        /* where it pays (moe_gemm_prefetches), the next block, prefetched into L2 a part
         * before each call on this one */
        const char *nx = p->prefetch && b + 1 < b1 ? (const char *)(blk + p->bn * p->K)
                                                   : NULL;
        size_t nxb = nx ? (b + 2 == p->nb ? p->wt : p->bn) * p->K * sizeof *p->w : 0;
        size_t j = 0;
        /* rows [0, split), then [split, rows), each in blocks of MOE_GEMM_BR from its start */
        for (size_t s0 = 0, s1 = sp; s0 < rows; s0 = s1, s1 = rows)
            for (size_t r = s0; r < s1; r += MOE_GEMM_BR, j++) {
                for (size_t o = nxb * j / calls & ~(size_t)63; o < nxb * (j + 1) / calls; o += 64)
                    __builtin_prefetch(nx + o, 0, 2);
                size_t nr = s1 - r < MOE_GEMM_BR ? s1 - r : MOE_GEMM_BR;
                p->kern[last][nr - 1](blk, a + r * lda, cb + r * ldc);
            }
    }
    return MOE_OK;
}

/* ---- one expert's GEMM on either backend ---- */

typedef struct {
    const moe_gemm_pack *p;
    const float *a, *w;
    float *c;
    size_t e, rows, split, lda, ldc, b0, b1;
    int rc;
} pack_job;

static void *pack_run_job(void *arg)
{
    pack_job *j = arg;
    j->rc = moe_gemm_pack_run(j->p, j->e, j->rows, j->split, j->a, j->lda, j->c, j->ldc, j->b0,
                              j->b1);
    return NULL;
}

static void *pack_fill_job(void *arg)
{
    pack_job *j = arg;
    for (size_t e = j->b0; e < j->b1; e++)
        moe_gemm_pack_fill((moe_gemm_pack *)j->p, j->w, (long)e);
    return NULL;
}

/* nt clamped to 1..min(parts, MOE_MAX_THREADS): one job per thread, each with a part */
static int job_threads(int nt, size_t parts)
{
    if (nt < 1)
        nt = 1;
    if ((size_t)nt > parts)
        nt = (int)parts;
    return nt > MOE_MAX_THREADS ? MOE_MAX_THREADS : nt;
}

int moe_gemm_expert(const moe_gemm_pack *p, const float *w, size_t e, size_t rows, size_t split,
                    size_t K, size_t N, const float *a, size_t lda, float *c, size_t ldc, int nt,
                    const char *where)
{
    if (!p) {
        size_t s = split > 0 && split < rows ? split : rows;
        int rc = moe_gemm_sgemm(0, s, N, K, a, lda, w + e * K * N, N, 0.0f, c, ldc, where);
        if (!rc && s < rows)
            rc = moe_gemm_sgemm(0, rows - s, N, K, a + s * lda, lda, w + e * K * N, N, 0.0f,
                                c + s * ldc, ldc, where);
        return rc;
    }
    nt = job_threads(nt, p->nb);
    pack_job jobs[MOE_MAX_THREADS];
    for (int i = 0; i < nt; i++)
        jobs[i] = (pack_job){p, a, NULL, c, e, rows, split, lda, ldc,
                             p->nb * (size_t)i / (size_t)nt, p->nb * (size_t)(i + 1) / (size_t)nt,
                             MOE_OK};
    moe_gemm_run_jobs(pack_run_job, jobs, sizeof *jobs, nt);
    for (int i = 0; i < nt; i++)
        if (jobs[i].rc)
            return jobs[i].rc;
    return MOE_OK;
}

void moe_gemm_pack_sync(moe_gemm_pack *p, const float *w, const float **src, int nt)
{
    if (!p || *src == w)
        return;
    nt = job_threads(nt, p->E);
    pack_job jobs[MOE_MAX_THREADS];
    for (int i = 0; i < nt; i++)
        jobs[i] = (pack_job){p, NULL, w, NULL, 0, 0, 0, 0, 0, p->E * (size_t)i / (size_t)nt,
                             p->E * (size_t)(i + 1) / (size_t)nt, MOE_OK};
    moe_gemm_run_jobs(pack_fill_job, jobs, sizeof *jobs, nt);
    *src = w;
}
