/* select_net.c: the k largest of four rows at once by a selection network, without AVX-512
 * (select.h moe_select_topk_net4).
 *
 * The four rows go into the four lanes of AVX2 registers (lane i: row i, one register per
 * column), so that every compare-exchange is one vertical max and one min, with no shuffle and
 * no branch. Each value becomes a key, a double of the same order with its column in the low
 * SN_BITS bits of the mantissa (the bits it had there cleared), so that the keys of a row are
 * distinct and carry their column through the network. The columns go in groups of eight: the
 * first group is sorted by a 19-comparator network (descending), and each later one, sorted the
 * same way, is merged into the eight largest so far (the larger of t[i] and g[7 - i] is a
 * bitonic sequence holding the eight largest of both; three half-cleaner steps sort it). Every
 * key not among the final eight was let go by one of those merges, so the largest key let go
 * is the ninth.
 *
 * The keys order the values exactly as long as no two of the first k + 1 keys of a row share
 * their value bits above the low SN_BITS (then neither their order nor the place of the k-th
 * depended on the columns written there) and none of them is a zero (+0.0 and -0.0 are equal
 * values with keys of different signs): a row is taken only then, and without a NaN or an
 * infinity (x * 0 + acc, summed over the row, is a NaN for either). Everything else, and every
 * row of a tie that a stable sort decides by index, is declined: the caller selects it another
 * way. For continuous values a decline needs two values equal in their top 44 bits. */
#include "select.h"

#include <stddef.h>
#include <stdint.h>

#if !defined(__AVX512F__) && defined(__AVX2__) && defined(__FMA__)
#include "cols4.h"

#include <immintrin.h>
#include <math.h>

enum { SN_BITS = 8, SN_MAX_LEN = 1 << SN_BITS };

/* a takes the larger key, b the smaller */
#define SN_CX(a, b)                                                                                \
    do {                                                                                           \
        const __m256d hi_ = _mm256_max_pd(a, b);                                                   \
        b = _mm256_min_pd(a, b);                                                                   \
        a = hi_;                                                                                   \
    } while (0)

/* c[0..7] in descending order in every lane (an optimal network of 19 comparators, depth 6). */
static inline __attribute__((always_inline)) void sn_sort8(__m256d *c)
{
    SN_CX(c[0], c[2]); SN_CX(c[1], c[3]); SN_CX(c[4], c[6]); SN_CX(c[5], c[7]);
    SN_CX(c[0], c[4]); SN_CX(c[1], c[5]); SN_CX(c[2], c[6]); SN_CX(c[3], c[7]);
    SN_CX(c[0], c[1]); SN_CX(c[2], c[3]); SN_CX(c[4], c[5]); SN_CX(c[6], c[7]);
    SN_CX(c[2], c[4]); SN_CX(c[3], c[5]);
    SN_CX(c[1], c[4]); SN_CX(c[3], c[6]);
    SN_CX(c[1], c[2]); SN_CX(c[3], c[4]); SN_CX(c[5], c[6]);
}

/* t (descending) becomes the eight largest of t and g (both descending), descending; *lost
 * takes the largest of the eight let go. */
static inline __attribute__((always_inline)) void sn_merge8(__m256d *t, const __m256d *g,
                                                            __m256d *lost)
{
    __m256d lo[8];
#pragma GCC unroll 8
    for (int i = 0; i < 8; i++) {
        lo[i] = _mm256_min_pd(t[i], g[7 - i]);
        t[i] = _mm256_max_pd(t[i], g[7 - i]);
    }
    const __m256d m = _mm256_max_pd(_mm256_max_pd(_mm256_max_pd(lo[0], lo[1]),
                                                  _mm256_max_pd(lo[2], lo[3])),
                                    _mm256_max_pd(_mm256_max_pd(lo[4], lo[5]),
                                                  _mm256_max_pd(lo[6], lo[7])));
    *lost = _mm256_max_pd(*lost, m);
    SN_CX(t[0], t[4]); SN_CX(t[1], t[5]); SN_CX(t[2], t[6]); SN_CX(t[3], t[7]);
    SN_CX(t[0], t[2]); SN_CX(t[1], t[3]); SN_CX(t[4], t[6]); SN_CX(t[5], t[7]);
    SN_CX(t[0], t[1]); SN_CX(t[2], t[3]); SN_CX(t[4], t[5]); SN_CX(t[6], t[7]);
}

/* Columns c0..c0+3 of the four rows at v (row stride len) as keys into c[0..3]; *bad sums
 * x * 0 (a NaN for a NaN or an infinity). */
static inline __attribute__((always_inline)) void sn_keys4(const double *v, int len, int c0,
                                                           __m256d *c, __m256d *bad)
{
    __m256d r[4];
#pragma GCC unroll 4
    for (int i = 0; i < 4; i++)
        r[i] = _mm256_loadu_pd(v + (size_t)i * len + c0);
    moe_transpose4_pd(r, c);
    const __m256d hi = _mm256_castsi256_pd(_mm256_set1_epi64x(~(int64_t)(SN_MAX_LEN - 1)));
    const __m256i col = _mm256_set1_epi64x(c0);
#pragma GCC unroll 4
    for (int j = 0; j < 4; j++) {
        *bad = _mm256_fmadd_pd(c[j], _mm256_setzero_pd(), *bad);
        c[j] = _mm256_or_pd(_mm256_and_pd(c[j], hi), _mm256_castsi256_pd(_mm256_add_epi64(
                                                          col, _mm256_set1_epi64x(j))));
    }
}

/* Group q (columns 8q..8q+7, or 8q..8q+3 and four keys of -inf when half is 1) sorted. */
static inline __attribute__((always_inline)) void sn_group(const double *v, int len, int q,
                                                           int half, __m256d *c, __m256d *bad)
{
    sn_keys4(v, len, 8 * q, c, bad);
    if (half) {
#pragma GCC unroll 4
        for (int j = 4; j < 8; j++)
            c[j] = _mm256_set1_pd(-INFINITY);
    } else {
        sn_keys4(v, len, 8 * q + 4, c + 4, bad);
    }
    sn_sort8(c);
}

static inline __attribute__((always_inline)) int sn_rows4(const double *v, const int len, int k,
                                                          int32_t *idx, double *val)
{
    __m256d t[8], g[8], bad = _mm256_setzero_pd(), lost = _mm256_set1_pd(-INFINITY);
    sn_group(v, len, 0, 0, t, &bad);
#pragma GCC unroll 8
    for (int q = 1; q < len / 8; q++) {
        sn_group(v, len, q, 0, g, &bad);
        sn_merge8(t, g, &lost);
    }
    if (len % 8) {
        sn_group(v, len, len / 8, 1, g, &bad);
        sn_merge8(t, g, &lost);
    }
    /* the first k + 1 keys: distinct above the column bits, none a zero */
    const __m256i hi = _mm256_set1_epi64x(~(int64_t)(SN_MAX_LEN - 1));
    const __m256i mag = _mm256_set1_epi64x(INT64_MAX & ~(int64_t)(SN_MAX_LEN - 1));
    const __m256i zero = _mm256_setzero_si256();
    __m256i no = _mm256_castpd_si256(_mm256_cmp_pd(bad, bad, _CMP_UNORD_Q));
    __m256i prev = _mm256_setzero_si256();
    for (int j = 0; j <= k; j++) {
        const __m256i x = _mm256_and_si256(_mm256_castpd_si256(j < 8 ? t[j] : lost), hi);
        no = _mm256_or_si256(no, _mm256_cmpeq_epi64(_mm256_and_si256(x, mag), zero));
        if (j > 0)
            no = _mm256_or_si256(no, _mm256_cmpeq_epi64(x, prev));
        prev = x;
    }
    const int declined = _mm256_movemask_pd(_mm256_castsi256_pd(no));
    int64_t col[8][4];
    for (int j = 0; j < k; j++)
        _mm256_storeu_si256((__m256i *)col[j],
                            _mm256_and_si256(_mm256_castpd_si256(t[j]),
                                             _mm256_set1_epi64x(SN_MAX_LEN - 1)));
    for (int i = 0; i < 4; i++)
        for (int j = 0; !(declined >> i & 1) && j < k; j++) {
            idx[i * k + j] = (int32_t)col[j][i];
            val[i * k + j] = v[(size_t)i * len + col[j][i]];
        }
    return ~declined & 15;
}

int moe_select_net4_fits(int len, int k)
{
    return k >= 1 && k <= 8 && len >= 8 && len <= SN_MAX_LEN && len % 4 == 0;
}

int moe_select_topk_net4(const double *v, int len, int k, int32_t *idx, double *val)
{
    if (!moe_select_net4_fits(len, k))
        return 0;
    switch (len) { /* the usual expert counts with their loops unrolled */
    case 8: return sn_rows4(v, 8, k, idx, val);
    case 16: return sn_rows4(v, 16, k, idx, val);
    case 32: return sn_rows4(v, 32, k, idx, val);
    case 64: return sn_rows4(v, 64, k, idx, val);
    default: return sn_rows4(v, len, k, idx, val);
    }
}

#else

int moe_select_net4_fits(int len, int k)
{
    (void)len, (void)k;
    return 0;
}

int moe_select_topk_net4(const double *v, int len, int k, int32_t *idx, double *val)
{
    (void)v, (void)len, (void)k, (void)idx, (void)val;
    return 0;
}

#endif
