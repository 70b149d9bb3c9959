/* cols4.h: four rows taken as columns in AVX registers (lane i: row i), shared by the kernels
 * that work on four rows at a time (routers/select.c, routers/sinkhorn.c, sim/vexp_avx2.h).
 * Include it where __AVX2__ is defined. */
#ifndef MOE_COLS4_H
#define MOE_COLS4_H

#include <immintrin.h>
#include <stdint.h>

/* c[j] lane i = r[i] lane j, i, j < 4. */
static inline __attribute__((always_inline)) void moe_transpose4_pd(const __m256d *r,
                                                                    __m256d *c)
{
    const __m256d t0 = _mm256_unpacklo_pd(r[0], r[1]), t1 = _mm256_unpackhi_pd(r[0], r[1]);
    const __m256d t2 = _mm256_unpacklo_pd(r[2], r[3]), t3 = _mm256_unpackhi_pd(r[2], r[3]);
    c[0] = _mm256_permute2f128_pd(t0, t2, 0x20);
    c[1] = _mm256_permute2f128_pd(t1, t3, 0x20);
    c[2] = _mm256_permute2f128_pd(t0, t2, 0x31);
    c[3] = _mm256_permute2f128_pd(t1, t3, 0x31);
}

/* The four rows of eight at x (4 x 8) as columns: c[e] lane i = x[8 i + e]. Pairs of columns
 * of rows 0 and 2 (1 and 3) loaded into the halves of a register (the upper half by an insert
 * from memory), then unpacked: half the shuffles of four row loads and moe_transpose4_pd, which
 * in the softmax of rows of eight competed with the exponentials' own shuffles (that softmax
 * with moe_cols8_store, in cache, one thread: 21.95 -> 19.95 ns a row). */
static inline __attribute__((always_inline)) void moe_cols8_load(const double *x, __m256d *c)
{
#define MOE_COLS8_PAIR(o)                                                                  \
    _mm256_insertf128_pd(_mm256_castpd128_pd256(_mm_loadu_pd(x + (o))),                     \
                         _mm_loadu_pd(x + (o) + 16), 1)
    for (int h = 0; h < 4; h++) { /* columns 2h, 2h + 1 */
        const __m256d r02 = MOE_COLS8_PAIR(2 * h), r13 = MOE_COLS8_PAIR(2 * h + 8);
        c[2 * h] = _mm256_unpacklo_pd(r02, r13);
        c[2 * h + 1] = _mm256_unpackhi_pd(r02, r13);
    }
#undef MOE_COLS8_PAIR
}

/* The columns c[0..7] of four rows of eight (lane i: row i) stored as the rows at p (4 x 8):
 * moe_cols8_load's way back, the halves stored apart (the upper one by an extract to memory)
 * instead of moe_transpose4_pd's second shuffle. */
static inline __attribute__((always_inline)) void moe_cols8_store(const __m256d *c, double *p)
{
    for (int h = 0; h < 4; h++) { /* columns 2h, 2h + 1 */
        const __m256d lo = _mm256_unpacklo_pd(c[2 * h], c[2 * h + 1]);
        const __m256d hi = _mm256_unpackhi_pd(c[2 * h], c[2 * h + 1]);
        _mm_storeu_pd(p + 2 * h, _mm256_castpd256_pd128(lo));
        _mm_storeu_pd(p + 2 * h + 8, _mm256_castpd256_pd128(hi));
        _mm_storeu_pd(p + 2 * h + 16, _mm256_extractf128_pd(lo, 1));
        _mm_storeu_pd(p + 2 * h + 24, _mm256_extractf128_pd(hi, 1));
    }
}

/* The indices (as doubles) of the two largest of each lane's eight columns c[0..7], ties to
 * the lower index (the first two of a stable descending sort): the scalar two-largest steps in
 * index order, in every lane at once: the first two ordered (ties: the first stays first), then
 * each later value taken as the first when above it, else as the second when above that
 * (strict: equals stay behind). A lane holding a NaN gets indices of no meaning. */
static inline __attribute__((always_inline)) void moe_top2_cols8(const __m256d *c, __m256d *fi,
                                                                 __m256d *gi)
{
    const __m256d gt = _mm256_cmp_pd(c[1], c[0], _CMP_GT_OQ);
    __m256d f = _mm256_blendv_pd(c[0], c[1], gt), g = _mm256_blendv_pd(c[1], c[0], gt);
    __m256d a = _mm256_blendv_pd(_mm256_setzero_pd(), _mm256_set1_pd(1.0), gt);
    __m256d b = _mm256_blendv_pd(_mm256_set1_pd(1.0), _mm256_setzero_pd(), gt);
    for (int e = 2; e < 8; e++) {
        const __m256d at = _mm256_set1_pd((double)e);
        const __m256d gt1 = _mm256_cmp_pd(c[e], f, _CMP_GT_OQ);
        const __m256d gt2 = _mm256_cmp_pd(c[e], g, _CMP_GT_OQ);
        g = _mm256_blendv_pd(_mm256_blendv_pd(g, c[e], gt2), f, gt1);
        b = _mm256_blendv_pd(_mm256_blendv_pd(b, at, gt2), a, gt1);
        f = _mm256_blendv_pd(f, c[e], gt1);
        a = _mm256_blendv_pd(a, at, gt1);
    }
    *fi = a, *gi = b;
}

/* idx2[2 i], idx2[2 i + 1] = lane i of fi, gi (indices as doubles), i < 4. */
static inline __attribute__((always_inline)) void moe_idx2_store(__m256d fi, __m256d gi,
                                                                 int32_t *idx2)
{
    const __m128i a = _mm256_cvtpd_epi32(fi), b = _mm256_cvtpd_epi32(gi);
    _mm_storeu_si128((__m128i *)idx2, _mm_unpacklo_epi32(a, b));
    _mm_storeu_si128((__m128i *)(idx2 + 4), _mm_unpackhi_epi32(a, b));
}

#endif
