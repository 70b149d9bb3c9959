/* gate.c: the fixed-order gate logits of gate.h.
 *
 * Float inputs, vector path (AVX-512F, or AVX2 with FMA): the weights are converted once per
 * call to double column panels of NV vectors (zero-padded to whole vectors), a block of RB token
 * rows at a time is converted to double, and a register tile of MR rows x NV vectors of columns
 * takes k = 0..D-1 in order, each step one fused multiply-add per accumulator. The products of
 * two floats are exact in double, so fma(x, w, acc) rounds exactly as acc + x*w does and every
 * logit is the same bits as the definition's loop (tests/test_gate.c): the vectors run across
 * output columns and the row tile across tokens, never across the reduction.
 *
 * Scalar path (double inputs, other CPUs, or when the packing buffers cannot be allocated):
 * rows in blocks of GR = 4 tokens, columns in chunks of GC = 16 experts; for each (block, chunk)
 * the GR x GC accumulators start at +0.0 and take k = 0..D-1 in order; tails run the same loops
 * with shorter bounds.
 *
 * Threads take contiguous row ranges; each logit is computed by exactly one of them, in the
 * same way. Built with -ffp-contract=off (Makefile): the compiler fuses nothing on its own; the
 * vector path's explicit FMAs are the only fused operations, and only on exact products. */
#include "gate.h"
#include "../routers/par.h"

enum { GR = 4, GC = 16, GATE_MAX_THREADS = 8 };

/* One (rows r0..r0+nr, columns c0..c0+nc) tile, nr <= GR, nc <= GC. TYPE is float or double. */
#define GATE_TILE(NAME, TYPE)                                                                 \
    static void NAME(const TYPE *x, size_t d, const TYPE *wg, size_t m, double *out,          \
                     size_t r0, size_t nr, size_t c0, size_t nc)                              \
    {                                                                                         \
        double acc[GR][GC] = {{0.0}};                                                         \
        if (nr == GR && nc == GC) {                                                           \
            for (size_t k = 0; k < d; k++) {                                                  \
                const TYPE *w = wg + k * m + c0;                                              \
                double wv[GC];                                                                \
                for (size_t j = 0; j < GC; j++)                                               \
                    wv[j] = (double)w[j];                                                     \
                for (size_t r = 0; r < GR; r++) {                                             \
                    double xv = (double)x[(r0 + r) * d + k];                                  \
                    for (size_t j = 0; j < GC; j++)                                           \
                        acc[r][j] += xv * wv[j];                                              \
                }                                                                             \
            }                                                                                 \
        } else {                                                                              \
            for (size_t k = 0; k < d; k++) {                                                  \
                const TYPE *w = wg + k * m + c0;                                              \
                for (size_t r = 0; r < nr; r++) {                                             \
                    double xv = (double)x[(r0 + r) * d + k];                                  \
                    for (size_t j = 0; j < nc; j++)                                           \
                        acc[r][j] += xv * (double)w[j];                                       \
                }                                                                             \
            }                                                                                 \
        }                                                                                     \
        for (size_t r = 0; r < nr; r++)                                                       \
            for (size_t j = 0; j < nc; j++)                                                   \
                out[(r0 + r) * m + c0 + j] = acc[r][j];                                       \
    }

GATE_TILE(tile_f, float)
GATE_TILE(tile_d, double)

/* ---- vector path (float inputs) ---- */
#if defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__))
#include <immintrin.h>
#include <stdlib.h>
#define GATE_VEC 1
#if defined(__AVX512F__)
typedef __m512d vd;
enum { VW = 8 };
#define V_ZERO() _mm512_setzero_pd()
#define V_LOAD(p) _mm512_load_pd(p)
#define V_SET1(v) _mm512_set1_pd(v)
#define V_FMA(a, b, c) _mm512_fmadd_pd(a, b, c)
#define V_STORE(p, v) _mm512_storeu_pd(p, v)
#define V_CVT(p) _mm512_cvtps_pd(_mm256_loadu_ps(p))
/* rows of the register tile for NV = 1..4 vectors of columns: 24 accumulators of 32 registers */
#define MR1 24
#define MR2 12
#define MR3 8
#define MR4 6
#else
typedef __m256d vd;
enum { VW = 4 };
#define V_ZERO() _mm256_setzero_pd()
#define V_LOAD(p) _mm256_load_pd(p)
#define V_SET1(v) _mm256_set1_pd(v)
#define V_FMA(a, b, c) _mm256_fmadd_pd(a, b, c)
#define V_STORE(p, v) _mm256_storeu_pd(p, v)
#define V_CVT(p) _mm256_cvtps_pd(_mm_loadu_ps(p))
/* 12 accumulators of 16 registers */
#define MR1 12
#define MR2 6
#define MR3 4
#define MR4 3
#endif
/* NVMAX vectors per column panel; RB rows per converted block (a multiple of every MRn) */
enum { NVMAX = 4, RB = 24 };

/* One MR x NV tile: out[r, c0 + j] for r < nrows, j < ncols (ncols <= NV * VW) from the
 * converted rows xb (MR, d), row stride ld, and the panel wp (d, NV * VW). Accumulators start at
 * +0.0 and take k = 0..d-1 in order; the loops over r and v are unrolled so they stay in
 * registers. */
#define GATE_KERN(NAME, MR, NV)                                                               \
    static void NAME(const double *xb, size_t d, size_t ld, const double *wp, double *out,   \
                     size_t m, size_t nrows, size_t ncols)                                    \
    {                                                                                         \
        vd acc[MR][NV];                                                                       \
        _Pragma("GCC unroll 32") for (int r = 0; r < MR; r++)                                 \
            _Pragma("GCC unroll 4") for (int v = 0; v < NV; v++) acc[r][v] = V_ZERO();        \
        for (size_t k = 0; k < d; k++) {                                                      \
            const double *w = wp + k * (NV * VW);                                             \
            vd wv[NV];                                                                        \
            _Pragma("GCC unroll 4") for (int v = 0; v < NV; v++) wv[v] = V_LOAD(w + v * VW);  \
            _Pragma("GCC unroll 32") for (int r = 0; r < MR; r++) {                           \
                vd xv = V_SET1(xb[(size_t)r * ld + k]);                                       \
                _Pragma("GCC unroll 4") for (int v = 0; v < NV; v++)                          \
                    acc[r][v] = V_FMA(xv, wv[v], acc[r][v]);                                  \
            }                                                                                 \
        }                                                                                     \
        for (size_t r = 0; r < nrows; r++)                                                    \
            for (size_t v = 0; v < NV && v * VW < ncols; v++) {                               \
                if ((v + 1) * VW <= ncols) {                                                  \
                    V_STORE(out + r * m + v * VW, acc[r][v]);                                 \
                } else {                                                                      \
                    double tmp[VW];                                                           \
                    V_STORE(tmp, acc[r][v]);                                                  \
                    for (size_t j = 0; v * VW + j < ncols; j++)                               \
                        out[r * m + v * VW + j] = tmp[j];                                     \
                }                                                                             \
            }                                                                                 \
    }

GATE_KERN(kern1, MR1, 1)
GATE_KERN(kern2, MR2, 2)
GATE_KERN(kern3, MR3, 3)
GATE_KERN(kern4, MR4, 4)

/* The weights (d, m) as double panels: panel p holds columns p*NVMAX*VW.. (at most NVMAX
 * vectors, the last one zero-padded to whole vectors) as (d, width), panels one after another. */
typedef struct {
    double *w;
    size_t d, m, np;
} gate_panels;

static size_t panel_cols(size_t m, size_t p)
{
    size_t c0 = p * NVMAX * VW;
    return m - c0 < (size_t)(NVMAX * VW) ? m - c0 : (size_t)(NVMAX * VW);
}

static size_t panel_vecs(size_t ncols) { return (ncols + VW - 1) / VW; }

static int panels_pack(gate_panels *P, const float *wg, size_t d, size_t m)
{
    P->d = d, P->m = m, P->np = (m + NVMAX * VW - 1) / (NVMAX * VW);
    size_t len = 0;
    for (size_t p = 0; p < P->np; p++)
        len += d * panel_vecs(panel_cols(m, p)) * VW;
    size_t bytes = (len * sizeof(double) + 63) / 64 * 64;
    P->w = aligned_alloc(64, bytes ? bytes : 64);
    if (!P->w)
        return -1;
    double *dst = P->w;
    for (size_t p = 0; p < P->np; p++) {
        size_t c0 = p * NVMAX * VW, nc = panel_cols(m, p), wd = panel_vecs(nc) * VW;
        for (size_t k = 0; k < d; k++, dst += wd)
            for (size_t j = 0; j < wd; j++)
                dst[j] = j < nc ? (double)wg[k * m + c0 + j] : 0.0;
    }
    return 0;
}

/* Row stride of the converted block: d plus one cache line, so that the RB rows of a block do
 * not all fall into the same cache set when d * 8 bytes is a multiple of 4096. */
static size_t xb_ld(size_t d) { return d + 8; }

/* Rows r0..r1 of x through every panel, RB rows at a time converted into xb (RB, xb_ld(d)). */
static void vec_rows(const float *x, size_t d, const gate_panels *P, double *out, size_t r0,
                     size_t r1, double *xb)
{
    const size_t ld = xb_ld(d);
    for (size_t b = r0; b < r1; b += RB) {
        size_t nb = r1 - b < RB ? r1 - b : RB;
        for (size_t r = 0; r < nb; r++) {
            const float *xr = x + (b + r) * d;
            double *xo = xb + r * ld;
            size_t k = 0;
            for (; k + VW <= d; k += VW)
                V_STORE(xo + k, V_CVT(xr + k));
            for (; k < d; k++)
                xo[k] = (double)xr[k];
        }
        for (size_t r = nb; r < RB; r++)
            for (size_t k = 0; k < d; k++)
                xb[r * ld + k] = 0.0;
        const double *wp = P->w;
        for (size_t p = 0; p < P->np; p++) {
            size_t c0 = p * NVMAX * VW, nc = panel_cols(P->m, p), nv = panel_vecs(nc);
            size_t mr = nv == 1 ? MR1 : nv == 2 ? MR2 : nv == 3 ? MR3 : MR4;
            for (size_t s = 0; s < nb; s += mr) {
                size_t nr = nb - s < mr ? nb - s : mr;
                const double *xs = xb + s * ld;
                double *o = out + (b + s) * P->m + c0;
                switch (nv) {
                case 1: kern1(xs, d, ld, wp, o, P->m, nr, nc); break;
                case 2: kern2(xs, d, ld, wp, o, P->m, nr, nc); break;
                case 3: kern3(xs, d, ld, wp, o, P->m, nr, nc); break;
                default: kern4(xs, d, ld, wp, o, P->m, nr, nc); break;
                }
            }
            wp += d * nv * VW;
        }
    }
}
#endif

typedef struct {
    const void *x, *wg;
    double *out;
    size_t d, m, r0, r1;
    int dbl;
#ifdef GATE_VEC
    const gate_panels *P; /* non-NULL: the vector path, with xb (RB, d) of its own */
    double *xb;
#endif
} gate_job;

static void *gate_run(void *arg)
{
    const gate_job *j = arg;
#ifdef GATE_VEC
    if (j->P) {
        vec_rows(j->x, j->d, j->P, j->out, j->r0, j->r1, j->xb);
        return NULL;
    }
#endif
    for (size_t r = j->r0; r < j->r1; r += GR) {
        size_t nr = j->r1 - r < GR ? j->r1 - r : GR;
        for (size_t c = 0; c < j->m; c += GC) {
            size_t nc = j->m - c < GC ? j->m - c : GC;
            if (j->dbl)
                tile_d(j->x, j->d, j->wg, j->m, j->out, r, nr, c, nc);
            else
                tile_f(j->x, j->d, j->wg, j->m, j->out, r, nr, c, nc);
        }
    }
    return NULL;
}

static void gate_part(void *jobs, int i, int nparts)
{
    (void)nparts;
    gate_run((gate_job *)jobs + i);
}

/* Rows split into nt contiguous ranges (multiples of GR except the last); job 0 runs on the
 * caller, the others on the workers moe_par_run keeps between calls (routers/par.h). Float
 * inputs take the vector path when it is built and its buffers can be allocated. */
static void gate_split(const void *x, size_t n, size_t d, const void *wg, size_t m,
                       double *out, int threads, int dbl)
{
    if (n == 0 || m == 0)
        return;
    size_t blocks = (n + GR - 1) / GR;
    size_t nt = threads < 1 ? 1 : (size_t)threads;
    if (nt > GATE_MAX_THREADS)
        nt = GATE_MAX_THREADS;
    if (nt > blocks)
        nt = blocks;
    /* below about a million multiply-adds a thread costs more than it saves */
    if (n * d * m < ((size_t)1 << 20))
        nt = 1;
    gate_job jobs[GATE_MAX_THREADS];
#ifdef GATE_VEC
    gate_panels P = {NULL, 0, 0, 0};
    double *xb = NULL;
    if (!dbl && d > 0 && panels_pack(&P, wg, d, m) == 0) {
        xb = aligned_alloc(64, nt * RB * xb_ld(d) * sizeof(double));
        if (!xb)
            free(P.w), P.w = NULL;
    }
#endif
    for (size_t i = 0; i < nt; i++) {
        size_t b0 = blocks * i / nt, b1 = blocks * (i + 1) / nt;
        size_t r1 = b1 * GR < n ? b1 * GR : n;
        jobs[i] = (gate_job){.x = x, .wg = wg, .out = out, .d = d, .m = m, .r0 = b0 * GR,
                             .r1 = r1, .dbl = dbl};
#ifdef GATE_VEC
        if (P.w)
            jobs[i].P = &P, jobs[i].xb = xb + i * RB * xb_ld(d);
#endif
    }
    moe_par_run(gate_part, jobs, (int)nt);
#ifdef GATE_VEC
    free(P.w);
    free(xb);
#endif
}

void moe_gate_logits(const float *x, size_t n, size_t d, const float *wg, size_t m,
                     double *logits, int threads)
{
    gate_split(x, n, d, wg, m, logits, threads, 0);
}

void moe_gate_logits_d(const double *x, size_t n, size_t d, const double *wg, size_t m,
                       double *logits, int threads)
{
    gate_split(x, n, d, wg, m, logits, threads, 1);
}
