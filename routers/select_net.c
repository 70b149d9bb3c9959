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

/* c[0..7] in descending order in every lane by the compare-exchange CX (an optimal network of
 * 19 comparators, depth 6). */
#define SN_SORT8(CX, c)                                                                            \
    do {                                                                                           \
        CX(c[0], c[2]); CX(c[1], c[3]); CX(c[4], c[6]); CX(c[5], c[7]);                            \
        CX(c[0], c[4]); CX(c[1], c[5]); CX(c[2], c[6]); CX(c[3], c[7]);                            \
        CX(c[0], c[1]); CX(c[2], c[3]); CX(c[4], c[5]); CX(c[6], c[7]);                            \
        CX(c[2], c[4]); CX(c[3], c[5]);                                                            \
        CX(c[1], c[4]); CX(c[3], c[6]);                                                            \
        CX(c[1], c[2]); CX(c[3], c[4]); CX(c[5], c[6]);                                            \
    } while (0)

/* t (descending, of type T) becomes the eight largest of t and g (both descending),
 * descending, by MAX, MIN and the compare-exchange CX; *lost takes the largest of the eight
 * let go. */
#define SN_MERGE8(T, MAX, MIN, CX, t, g, lost)                                                     \
    do {                                                                                           \
        T lo_[8];                                                                                  \
        _Pragma("GCC unroll 8") for (int i_ = 0; i_ < 8; i_++)                                     \
        {                                                                                          \
            lo_[i_] = MIN(t[i_], g[7 - i_]);                                                       \
            t[i_] = MAX(t[i_], g[7 - i_]);                                                         \
        }                                                                                          \
        *(lost) = MAX(*(lost), MAX(MAX(MAX(lo_[0], lo_[1]), MAX(lo_[2], lo_[3])),                  \
                                   MAX(MAX(lo_[4], lo_[5]), MAX(lo_[6], lo_[7]))));                \
        CX(t[0], t[4]); CX(t[1], t[5]); CX(t[2], t[6]); CX(t[3], t[7]);                            \
        CX(t[0], t[2]); CX(t[1], t[3]); CX(t[4], t[6]); CX(t[5], t[7]);                            \
        CX(t[0], t[1]); CX(t[2], t[3]); CX(t[4], t[5]); CX(t[6], t[7]);                            \
    } while (0)

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
    SN_SORT8(SN_CX, c);
}

static inline __attribute__((always_inline)) int sn_rows4(const double *v, const int len, int k,
                                                          int32_t *idx, double *val)
{
    __m256d t[8], g[8], bad = _mm256_setzero_pd(), lost = _mm256_set1_pd(-INFINITY);
    sn_group(v, len, 0, 0, t, &bad);
#pragma GCC unroll 8
    for (int q = 1; q < len / 8; q++) {
        sn_group(v, len, q, 0, g, &bad);
        SN_MERGE8(__m256d, _mm256_max_pd, _mm256_min_pd, SN_CX, t, g, &lost);
    }
    if (len % 8) {
        sn_group(v, len, len / 8, 1, g, &bad);
        SN_MERGE8(__m256d, _mm256_max_pd, _mm256_min_pd, SN_CX, t, g, &lost);
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

/* ---- eight rows at a time, on keys of 32 bits ----
 * The same network in the eight lanes of float registers (lane i: row i), on keys taken from
 * each double's high 32 bits (sign, exponent and the top 20 bits of the mantissa), which, read
 * as a float, order the doubles as they do (a truncation toward zero of the magnitude, the
 * sign apart: a <= b gives key(a) <= key(b)); the low sf_bits(len) bits then carry the column.
 * Half the network's operations for each row, and no conversion: the high halves are picked
 * by one shuffle of two loads. A row is taken as by sn_rows4 (its first k + 1 keys distinct
 * above the column bits, none a zero; no NaN or infinity, and no double of magnitude 2^1017
 * or more, whose high half reads as one), which for continuous values now declines a row
 * where two of its k + 1 largest agree in the top 20 - sf_bits(len) bits of their mantissa;
 * the caller selects those rows another way. */
enum { SF_MAX_LEN = 256 };

#define SF_CX(a, b)                                                                                \
    do {                                                                                           \
        const __m256 hi_ = _mm256_max_ps(a, b);                                                    \
        b = _mm256_min_ps(a, b);                                                                   \
        a = hi_;                                                                                   \
    } while (0)

/* The bits that carry a column of a row of len (3 for 8 columns .. 8 for 256). */
static inline int sf_bits(int len)
{
    return 32 - __builtin_clz((unsigned)len - 1);
}

/* Columns c0..c0+7 of the eight rows at v (row stride len) as keys into c[0..7] (the columns
 * in the order 0, 1, 4, 5, 2, 3, 6, 7 of the group, which the network does not mind); *bad
 * sums key * 0 in each row's lane (a NaN for a high half that reads as a NaN or an
 * infinity). */
static inline __attribute__((always_inline)) void sf_keys8(const double *v, int len, int c0,
                                                           __m256 hi, __m256 *c, __m256 *bad)
{
    const __m256i col = _mm256_add_epi32(_mm256_setr_epi32(0, 1, 4, 5, 2, 3, 6, 7),
                                         _mm256_set1_epi32(c0));
    __m256 x[8], a[8], b[8];
#pragma GCC unroll 8
    for (int i = 0; i < 8; i++) {
        const double *row = v + (size_t)i * len + c0;
        const __m256 h = _mm256_shuffle_ps(_mm256_castpd_ps(_mm256_loadu_pd(row)),
                                           _mm256_castpd_ps(_mm256_loadu_pd(row + 4)), 0xDD);
        x[i] = _mm256_or_ps(_mm256_and_ps(h, hi), _mm256_castsi256_ps(col));
    }
    /* the 8 x 8 transpose: lane i of c[j] is lane j of x[i] */
#pragma GCC unroll 4
    for (int i = 0; i < 8; i += 2) {
        a[i] = _mm256_unpacklo_ps(x[i], x[i + 1]);
        a[i + 1] = _mm256_unpackhi_ps(x[i], x[i + 1]);
    }
#pragma GCC unroll 2
    for (int i = 0; i < 8; i += 4) {
        b[i] = _mm256_shuffle_ps(a[i], a[i + 2], 0x44);
        b[i + 1] = _mm256_shuffle_ps(a[i], a[i + 2], 0xEE);
        b[i + 2] = _mm256_shuffle_ps(a[i + 1], a[i + 3], 0x44);
        b[i + 3] = _mm256_shuffle_ps(a[i + 1], a[i + 3], 0xEE);
    }
#pragma GCC unroll 4
    for (int j = 0; j < 4; j++) {
        c[j] = _mm256_permute2f128_ps(b[j], b[j + 4], 0x20);
        c[j + 4] = _mm256_permute2f128_ps(b[j], b[j + 4], 0x31);
    }
#pragma GCC unroll 8
    for (int j = 0; j < 8; j++) /* (a key keeps the exponent of its high half) */
        *bad = _mm256_fmadd_ps(c[j], _mm256_setzero_ps(), *bad);
}

static inline __attribute__((always_inline)) int sf_rows8(const double *v, const int len, int k,
                                                          int32_t *idx, double *val)
{
    const int bits = sf_bits(len);
    const int32_t cm = (int32_t)((1u << bits) - 1);
    const __m256 hi = _mm256_castsi256_ps(_mm256_set1_epi32(~cm));
    __m256 t[8], g[8], bad = _mm256_setzero_ps(), lost = _mm256_set1_ps(-INFINITY);
    sf_keys8(v, len, 0, hi, t, &bad);
    SN_SORT8(SF_CX, t);
#pragma GCC unroll 8
    for (int q = 1; q < len / 8; q++) {
        sf_keys8(v, len, 8 * q, hi, g, &bad);
        SN_SORT8(SF_CX, g);
        SN_MERGE8(__m256, _mm256_max_ps, _mm256_min_ps, SF_CX, t, g, &lost);
    }
    /* the first k + 1 keys: distinct above the column bits, none a zero */
    const __m256i hk = _mm256_set1_epi32(~cm), mag = _mm256_set1_epi32(INT32_MAX & ~cm);
    const __m256i zero = _mm256_setzero_si256();
    __m256i no = _mm256_castps_si256(_mm256_cmp_ps(bad, bad, _CMP_UNORD_Q));
    __m256i prev = _mm256_setzero_si256();
    for (int j = 0; j <= k; j++) {
        const __m256i x = _mm256_and_si256(_mm256_castps_si256(j < 8 ? t[j] : lost), hk);
        no = _mm256_or_si256(no, _mm256_cmpeq_epi32(_mm256_and_si256(x, mag), zero));
        if (j > 0)
            no = _mm256_or_si256(no, _mm256_cmpeq_epi32(x, prev));
        prev = x;
    }
    const int declined = _mm256_movemask_ps(_mm256_castsi256_ps(no));
    int32_t col[8][8];
    for (int j = 0; j < k; j++)
        _mm256_storeu_si256((__m256i *)col[j], _mm256_and_si256(_mm256_castps_si256(t[j]),
                                                                _mm256_set1_epi32(cm)));
    for (int i = 0; i < 8; i++)
        for (int j = 0; !(declined >> i & 1) && j < k; j++) {
            idx[i * k + j] = col[j][i];
            val[i * k + j] = v[(size_t)i * len + col[j][i]];
        }
    return ~declined & 255;
}

int moe_select_net8_fits(int len, int k)
{
    return k >= 1 && k <= 8 && len >= 8 && len <= SF_MAX_LEN && len % 8 == 0;
}

int moe_select_topk_net8(const double *v, int len, int k, int32_t *idx, double *val)
{
    if (!moe_select_net8_fits(len, k))
        return 0;
    switch (len) { /* the usual expert counts with their loops unrolled */
    case 8: return sf_rows8(v, 8, k, idx, val);
    case 16: return sf_rows8(v, 16, k, idx, val);
    case 32: return sf_rows8(v, 32, k, idx, val);
    case 64: return sf_rows8(v, 64, k, idx, val);
    case 128: return sf_rows8(v, 128, k, idx, val);
    case 256: return sf_rows8(v, 256, k, idx, val);
    default: return sf_rows8(v, len, k, idx, val);
    }
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

int moe_select_net8_fits(int len, int k)
{
    (void)len, (void)k;
    return 0;
}

int moe_select_topk_net8(const double *v, int len, int k, int32_t *idx, double *val)
{
    (void)v, (void)len, (void)k, (void)idx, (void)val;
    return 0;
}

#endif
