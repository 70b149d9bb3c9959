/* transpose4.h: the 4 x 4 transpose of doubles in AVX registers, shared by the kernels that
 * take four rows at a time as columns (routers/select.c, routers/sinkhorn.c, sim/vexp_avx2.h).
 * Include it where __AVX2__ is defined. */
#ifndef MOE_TRANSPOSE4_H
#define MOE_TRANSPOSE4_H

#include <immintrin.h>

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

#endif
