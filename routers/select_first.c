/* select_first.c: the first index of a row's maximum (moe_select_argmax_skip) and of a value
 * (moe_select_first_eq) without AVX-512, four lanes at a time with AVX2 (select.h; the AVX-512
 * build's are in select.c). */
#include "select.h"

#if !defined(__AVX512F__)
#if defined(__AVX2__)
#include <immintrin.h>
#endif

#if defined(__AVX2__)
/* Block b of x (elements 4b..4b+3) with its lanes outside [0, len) or at skip -inf (masked
 * loads: nothing past len is read); *ld the lanes taken, as all-ones lanes. */
static inline __m256d sel_block4(const double *x, int len, int skip, int b, __m256i *ld)
{
    const __m256i at = _mm256_add_epi64(_mm256_set1_epi64x(4 * (long long)b),
                                        _mm256_setr_epi64x(0, 1, 2, 3));
    *ld = _mm256_andnot_si256(_mm256_cmpeq_epi64(at, _mm256_set1_epi64x(skip)),
                              _mm256_cmpgt_epi64(_mm256_set1_epi64x(len), at));
    return _mm256_blendv_pd(_mm256_set1_pd(-__builtin_inf()), _mm256_maskload_pd(x + 4 * b, *ld),
                            _mm256_castsi256_pd(*ld));
}

/* Four lanes, as AVX-512 takes eight: the maximum, then the first lane equal to it (the scan's
 * strict > keeps the first of equals, -0 equals +0); only skip's block and the last masked. */
int moe_select_argmax_skip(const double *x, int len, int skip)
{
    const int nb = (len + 3) / 4;
    __m256d mx = _mm256_set1_pd(-__builtin_inf()), nan = _mm256_setzero_pd();
    for (int b = 0; b < nb; b++) {
        __m256i ld;
        const __m256d v = 4 * b + 4 <= len && skip >> 2 != b ? _mm256_loadu_pd(x + 4 * b)
                                                              : sel_block4(x, len, skip, b, &ld);
        nan = _mm256_or_pd(nan, _mm256_cmp_pd(v, v, _CMP_UNORD_Q));
        mx = _mm256_max_pd(mx, v);
    }
    if (_mm256_movemask_pd(nan))
        return -2;
    mx = _mm256_max_pd(mx, _mm256_permute_pd(mx, 0x5));
    mx = _mm256_max_pd(mx, _mm256_permute2f128_pd(mx, mx, 0x01));
    for (int b = 0; b < nb; b++) {
        int eq;
        if (4 * b + 4 <= len && skip >> 2 != b) {
            eq = _mm256_movemask_pd(_mm256_cmp_pd(_mm256_loadu_pd(x + 4 * b), mx, _CMP_EQ_OQ));
        } else { /* (a lane left out reads -inf, equal to a maximum of -inf: masked) */
            __m256i ld;
            const __m256d v = sel_block4(x, len, skip, b, &ld);
            eq = _mm256_movemask_pd(
                _mm256_and_pd(_mm256_cmp_pd(v, mx, _CMP_EQ_OQ), _mm256_castsi256_pd(ld)));
        }
        if (eq)
            return 4 * b + __builtin_ctz((unsigned)eq);
    }
    return -1;
}
#else
int moe_select_argmax_skip(const double *x, int len, int skip)
{
    (void)x, (void)len, (void)skip;
    return -2;
}
#endif

#if defined(__AVX2__)
/* Sixteen blocks of four (64 elements) compared before one test of their bits, as the AVX-512
 * build takes eight blocks of eight: where a row's maximum lies is random, so a test per block
 * would mispredict about once a row. Before, without AVX-512, the scalar scan: the softmax of
 * rows of 64 in cache with the first index of their maximum and p there 162 -> 143.5-145.6 ns a
 * row (the exponentials alone 81). */
int moe_select_first_eq(const double *x, int len, double m)
{
    const __m256d vm = _mm256_set1_pd(m);
    int i = 0;
    for (; i + 64 <= len; i += 64) {
        uint64_t eq = 0;
        for (int b = 0; b < 16; b++)
            eq |= (uint64_t)_mm256_movemask_pd(_mm256_cmp_pd(_mm256_loadu_pd(x + i + 4 * b), vm,
                                                             _CMP_EQ_OQ))
                  << (4 * b);
        if (eq)
            return i + __builtin_ctzll(eq);
    }
    for (; i + 4 <= len; i += 4) {
        const int eq = _mm256_movemask_pd(_mm256_cmp_pd(_mm256_loadu_pd(x + i), vm, _CMP_EQ_OQ));
        if (eq)
            return i + __builtin_ctz((unsigned)eq);
    }
    for (; i < len; i++)
        if (x[i] == m)
            return i;
    return -1;
}
#else
int moe_select_first_eq(const double *x, int len, double m)
{
    for (int i = 0; i < len; i++)
        if (x[i] == m)
            return i;
    return -1;
}
#endif
#endif
