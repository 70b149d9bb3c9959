/* select.c: the k largest of a row with AVX-512, without a branch per element (select.h).
 *
 * Three steps, each on eight lanes at a time:
 *   1. the largest and the second largest of each lane over the row's blocks of eight (the
 *      last block padded with -inf): sixteen distinct elements of the row (or padding);
 *   2. thr = the k-th largest of those sixteen (k <= 8), from the two lane sets sorted by a
 *      sorting network (for k = 8 and k <= 2 cheaper bounds, sel_threshold). k distinct
 *      elements of the row are >= thr, so the k-th largest of the row is >= thr and every
 *      element of the answer is >= thr: the elements >= thr are the candidates, in index order
 *      (about k of them for distinct values, 16 at most for nearly every row of continuous
 *      values);
 *   3. up to 16 candidates: a sorting network on integer keys, each candidate's value as an
 *      integer of the same order with its slot among the candidates in the low four bits
 *      (sel_key), so that the keys are distinct, sort with integer min and max, and carry the
 *      slot (hence the index) along; the answer is taken only when no two of its values, nor
 *      its k-th and any other candidate, are equal in all but those four bits (sel_emit), so
 *      that no tie is decided by the network. Otherwise, and above 16 candidates, each
 *      candidate's rank in the order (value descending, index ascending), counted against all
 *      the candidates; the order is total, so the ranks are a permutation and the first k ranks
 *      are the answer, ties to the lower index exactly as the stable argsort has them.
 * A row of 8 is its own 8 candidates (no steps 1 and 2). A row of 9 to 64 (with AVX-512 VBMI2)
 * stays in registers: its candidates are one 64-bit mask, their indices packed by a byte
 * compress and their values picked from the row's blocks by those indices, and
 * moe_select_topk_rows takes four such rows at a time so that their chains of dependent
 * instructions overlap. Longer rows find their candidates through memory: up to 256 elements
 * (with VBMI2) their indices packed as bytes by one compress per eight blocks and their values
 * gathered, longer ones by a compress of each block's values and indices.
 * Rows with more than SEL_MAX_CAND candidates (many equal values) or with a NaN take the
 * caller's scalar selection instead. */
#include "select.h"

#include <stddef.h>
#include <stdint.h>

/* The smallest of v[idx[j]], j < k; NaN when one of them is NaN. */
static double sel_min_at(const double *v, const int32_t *idx, int k)
{
    double lo = v[idx[0]];
    for (int j = 1; j < k; j++)
        lo = v[idx[j]] < lo || v[idx[j]] != v[idx[j]] ? v[idx[j]] : lo;
    return lo;
}

enum { SEL_MAX_LEN = 1024, SEL_MAX_CAND = 64 };

/* moe_select_topk_rows for rows [t, n) one at a time, the row after next on its way from
 * memory (else each row waits for its lines); a row moe_select_topk declines gets idx -1. */
static void sel_rows_from(const double *v, long t, long n, int len, int k, int32_t *idx,
                          double *val)
{
    for (; t < n; t++) {
        for (size_t o = 0; t + 2 < n && o < (size_t)len; o += 8)
            __builtin_prefetch(v + (size_t)(t + 2) * len + o);
        if (!moe_select_topk(v + (size_t)t * len, len, k, idx + (size_t)t * k, val + (size_t)t * k))
            idx[(size_t)t * k] = -1;
    }
}

#if defined(__AVX512F__)
#include <immintrin.h>

enum { SEL_ROWS = 4 }; /* rows taken together by moe_select_topk_rows */

/* The optimal six-layer sorting network for eight inputs (Knuth, TAOCP vol. 3, 5.3.4; 19
 * comparators, checked on every 0-1 input): layer l pairs lane i with lane SEL_NET[l][i], and
 * the lanes of SEL_UP[l] (the lower lane of each pair) take the larger value, so that the
 * lanes end in descending order. */
static const int64_t SEL_NET[6][8] = {
    {2, 3, 0, 1, 6, 7, 4, 5}, /* 02 13 46 57 */
    {4, 5, 6, 7, 0, 1, 2, 3}, /* 04 15 26 37 */
    {1, 0, 3, 2, 5, 4, 7, 6}, /* 01 23 45 67 */
    {0, 1, 4, 5, 2, 3, 6, 7}, /* 24 35 */
    {0, 4, 2, 6, 1, 5, 3, 7}, /* 14 36 */
    {0, 2, 1, 4, 3, 6, 5, 7}, /* 12 34 56 */
};
static const __mmask8 SEL_UP[6] = {0x33, 0x0f, 0x55, 0x0c, 0x0a, 0x2a};

/* The value of x as an integer whose signed order is the order of the values: its bits with
 * those of the magnitude flipped when negative, after -0.0 is taken as +0.0 (the two zeros
 * compare equal, so they get one integer). NaN-free x only. */
static inline __m512i sel_ord(__m512d x)
{
    const __m512i b = _mm512_castpd_si512(_mm512_add_pd(x, _mm512_setzero_pd()));
    return _mm512_xor_si512(b, _mm512_srli_epi64(_mm512_srai_epi64(b, 63), 1));
}

/* The candidates' sort keys: sel_ord of each value with its low four bits replaced by the
 * candidate's slot (0..15, distinct). The keys are then distinct and sort in the values' order
 * except among values equal in all but their last four bits, which sel_emit declines. */
static inline __m512i sel_key(__m512d x, __m512i slot)
{
    return _mm512_ternarylogic_epi64(sel_ord(x), _mm512_set1_epi64(15), slot,
                                     0xba); /* (t & ~15) | slot */
}

/* The eight lanes of x in descending order, as signed integers, or (dbl) as the doubles of
 * their bits (NaN-free), each with the instructions of its own domain (a value passed between
 * the integer and the floating-point units waits a cycle more on some processors). */
static inline __m512i sel_sort8(__m512i x, int dbl)
{
#pragma GCC unroll 6
    for (int l = 0; l < 6; l++) {
        const __m512i p = _mm512_loadu_si512(SEL_NET[l]);
        if (dbl) {
            const __m512d xd = _mm512_castsi512_pd(x), yd = _mm512_permutexvar_pd(p, xd);
            x = _mm512_castpd_si512(
                _mm512_mask_blend_pd(SEL_UP[l], _mm512_min_pd(xd, yd), _mm512_max_pd(xd, yd)));
        } else {
            const __m512i y = _mm512_permutexvar_epi64(p, x);
            x = _mm512_mask_blend_epi64(SEL_UP[l], _mm512_min_epi64(x, y), _mm512_max_epi64(x, y));
        }
    }
    return x;
}

/* The eight largest of the lanes of a and b, each sorted descending, sorted descending: the larger
 * of a[i] and b[7-i] for each i, a bitonic sequence that holds the eight largest, then its
 * three half-cleaners (distances 4, 2, 1). *lose: the smaller ones of those pairs, the eight
 * others. */
static inline __m512i sel_merge8_key(__m512i a, __m512i b, __m512i *lose)
{
    static const int64_t half[3][8] = {
        {4, 5, 6, 7, 0, 1, 2, 3}, {2, 3, 0, 1, 6, 7, 4, 5}, {1, 0, 3, 2, 5, 4, 7, 6}};
    static const __mmask8 up[3] = {0x0f, 0x33, 0x55};
    const __m512i br = _mm512_permutexvar_epi64(_mm512_set_epi64(0, 1, 2, 3, 4, 5, 6, 7), b);
    *lose = _mm512_min_epi64(a, br);
    a = _mm512_max_epi64(a, br);
#pragma GCC unroll 3
    for (int l = 0; l < 3; l++) {
        const __m512i y = _mm512_permutexvar_epi64(_mm512_loadu_si512(half[l]), a);
        a = _mm512_mask_blend_epi64(up[l], _mm512_min_epi64(a, y), _mm512_max_epi64(a, y));
    }
    return a;
}

/* Writes the candidates of the first k keys of s (the eight largest keys of the candidates,
 * sorted descending; lose: the other candidates' keys when k = 8 and there are more than
 * eight, else NULL) as the answer
 * when it is the stable argsort's: each of the k keys differs in more than its slot from the
 * next largest key (for k < 8 the next lane, the largest key outside the answer included; for
 * k = 8 every key of lose), so that no tie (or near tie) decides the set or the order. The slot
 * of each key picks its value and index from c0, c1 and i0, i1. Returns 1 when written, 0
 * (nothing written) otherwise, for the rank step, which orders ties by index. */
static inline int sel_emit(__m512i s, const __m512i *lose, __m512d c0, __m512d c1, __m512i i0,
                           __m512i i1, int k, int32_t *idx, double *val)
{
    const __mmask8 first = (__mmask8)((1u << k) - 1u);
    const __m512i t = _mm512_srai_epi64(s, 4);
    const __m512i next = _mm512_permutexvar_epi64(_mm512_set_epi64(7, 7, 6, 5, 4, 3, 2, 1), t);
    const __mmask8 tie =
        _mm512_mask_cmpeq_epi64_mask(first & 0x7f, t, next) |
        (k == 8 && lose ? _mm512_cmpge_epi64_mask(_mm512_srai_epi64(*lose, 4),
                                                  _mm512_permutexvar_epi64(_mm512_set1_epi64(7), t))
                        : 0);
    if (tie)
        return 0;
    const __m512i slot = _mm512_and_si512(s, _mm512_set1_epi64(15));
    _mm512_mask_storeu_pd(val, first, _mm512_permutex2var_pd(c0, slot, c1));
    _mm256_mask_storeu_epi32(idx, first,
                             _mm512_cvtepi64_epi32(_mm512_permutex2var_epi64(i0, slot, i1)));
    return 1;
}

/* The answer from at most 16 candidates, c0 then c1 (values, -inf past the last, index order)
 * with their indices i0, i1: sel_emit of the eight largest keys (of c0 alone when c1 is all
 * padding and k < 8). */
static inline __attribute__((always_inline)) int sel_sorted(__m512d c0, __m512i i0, __m512d c1,
                                                            __m512i i1, int m, int k,
                                                            int32_t *idx, double *val)
{
    const __m512i iota = _mm512_set_epi64(7, 6, 5, 4, 3, 2, 1, 0);
    const __m512i k0 = sel_key(c0, iota);
    const __m512i k1 = sel_key(c1, _mm512_add_epi64(iota, _mm512_set1_epi64(8)));
    __m512i s = sel_sort8(k0, 0), lose;
    if (m > 8 || k == 8) { /* k = 8: every row, so that the branch is not taken at random */
        s = sel_merge8_key(s, sel_sort8(k1, 0), &lose);
        return sel_emit(s, &lose, c0, c1, i0, i1, k, idx, val);
    }
    return sel_emit(s, NULL, c0, c1, i0, i1, k, idx, val);
}

/* The k-th largest (1 <= k <= 8) of the sixteen lanes of A and B, each sorted descending:
 * max(A[k-1], B[k-1], min(A[l], B[k-2-l]) for l <= k-2) (the k largest of the two lists take
 * l + 1 from A and k - 1 - l from B for some l). */
static inline double sel_kth_of16(__m512d A, __m512d B, int k)
{
    const __m512i rev = _mm512_sub_epi64(_mm512_set1_epi64(k - 2),
                                         _mm512_set_epi64(7, 6, 5, 4, 3, 2, 1, 0));
    const __m512d pair = _mm512_min_pd(A, _mm512_permutexvar_pd(rev, B));
    const __mmask8 low = (__mmask8)((1u << (k - 1)) - 1u); /* lanes l <= k-2 */
    const __m512d t = _mm512_mask_blend_pd(low, _mm512_max_pd(A, B), pair);
    return _mm512_mask_reduce_max_pd((__mmask8)((1u << k) - 1u), t);
}

/* rk[i] = the rank of candidate i < m in cv (nc blocks of eight, m <= 8 * nc):
 * (c_j > c_i) + (c_j == c_i and j < i) summed over j, candidate j broadcast against all of
 * them at once. */
static inline __attribute__((always_inline)) void sel_rank(const double *cv, int m, int nc,
                                                           int64_t *rk)
{
    __m512i rank[SEL_MAX_CAND / 8];
    __m512d cand[SEL_MAX_CAND / 8];
    for (int b = 0; b < nc; b++) {
        rank[b] = _mm512_setzero_si512();
        cand[b] = _mm512_loadu_pd(cv + 8 * b);
    }
    for (int j = 0; j < m; j++) {
        const __m512d x = _mm512_set1_pd(cv[j]);
        const uint64_t after = j < 63 ? ~(uint64_t)0 << (j + 1) : 0; /* candidates i > j */
        for (int b = 0; b < nc; b++) {
            const __mmask8 gt = _mm512_cmp_pd_mask(x, cand[b], _CMP_GT_OQ);
            const __mmask8 eq = _mm512_mask_cmp_pd_mask((__mmask8)(after >> (8 * b)), x, cand[b],
                                                        _CMP_EQ_OQ);
            rank[b] = _mm512_mask_add_epi64(rank[b], gt | eq, rank[b], _mm512_set1_epi64(1));
        }
    }
    for (int b = 0; b < nc; b++)
        _mm512_storeu_si512((void *)(rk + 8 * b), rank[b]);
}

/* The lanes of block b (elements 8b..8b+7) that are inside [0, len) and not skip. */
static inline __mmask8 sel_block_mask(int len, int skip, int b)
{
    const int rest = len - 8 * b;
    __mmask8 m = rest >= 8 ? 0xff : (__mmask8)((1u << rest) - 1u);
    if (skip >= 8 * b && skip < 8 * b + 8)
        m &= (__mmask8)~(1u << (skip - 8 * b));
    return m;
}

/* The candidates' threshold of a row of nb blocks with each lane's largest m1 and second
 * largest m2 (step 2; -inf for k = len: every element is a candidate). For k = 8 a cheaper
 * one than the eighth largest of the sixteen: the larger of the smallest lane maximum (the
 * eight maxima reach it) and the fourth largest of m2 (the two largest of those four lanes
 * reach it), eight elements either way; one sort instead of two and the merge of their lists,
 * for about 12 candidates instead of 9 in a row of 64 continuous values (more than 16, which
 * the ranks then take, in about one row of 120). With a NaN in the row it means nothing: such
 * rows are declined. For k <= 2 the k-th largest of the lane maxima alone (k distinct elements
 * reach it), without a sort. (Always inline: GCC made it a call once it held the three cases.) */
static inline __attribute__((always_inline)) __m512d sel_threshold(__m512d m1, __m512d m2, int nb,
                                                                   int len, int k)
{
    if (k == len)
        return _mm512_set1_pd(-__builtin_inf());
    if (k <= 2 && nb > 1) { /* the k-th largest of the lane maxima: no sort */
        const __m512d top = _mm512_set1_pd(_mm512_reduce_max_pd(m1));
        if (k == 1)
            return top;
        const __mmask8 at = _mm512_cmp_pd_mask(m1, top, _CMP_EQ_OQ);
        return _mm512_set1_pd(_mm512_mask_reduce_max_pd((__mmask8)(at & (at - 1)) |
                                                            (__mmask8)~at, m1));
    }
    if (k == 8 && nb > 1) {
        const __m512d s2 = _mm512_castsi512_pd(sel_sort8(_mm512_castpd_si512(m2), 1));
        return _mm512_max_pd(_mm512_set1_pd(_mm512_reduce_min_pd(m1)),
                             _mm512_permutexvar_pd(_mm512_set1_epi64(3), s2));
    }
    const __m512d s1 = _mm512_castsi512_pd(sel_sort8(_mm512_castpd_si512(m1), 1));
    if (nb == 1)
        return _mm512_permutexvar_pd(_mm512_set1_epi64(k - 1), s1);
    const __m512d s2 = _mm512_castsi512_pd(sel_sort8(_mm512_castpd_si512(m2), 1));
    return _mm512_set1_pd(sel_kth_of16(s1, s2, k));
}

#if defined(__AVX512VBMI2__)
/* 0, 1, ..., 255 as bytes, and 64 more for a 64-byte load from 192: the indices that a byte
 * compress packs (the candidates of a row in registers, and of up to 256 elements). */
static const uint8_t sel_iota[256 + 64] = {
#define SEL_I8(a) a, a + 1, a + 2, a + 3, a + 4, a + 5, a + 6, a + 7
#define SEL_I64(a) SEL_I8(a), SEL_I8(a + 8), SEL_I8(a + 16), SEL_I8(a + 24), SEL_I8(a + 32), \
                   SEL_I8(a + 40), SEL_I8(a + 48), SEL_I8(a + 56)
    SEL_I64(0), SEL_I64(64), SEL_I64(128), SEL_I64(192)
#undef SEL_I64
#undef SEL_I8
};

/* sel_topk_mem's candidates (the elements not below thr, in index order) of a row of nb <= 32
 * blocks, -inf past its end (last: the lanes of its last block): the masks of eight blocks at a
 * time joined into 64 bits, their indices packed as bytes by one compress a group, then their
 * values gathered (a compress of each block's values and indices, 64 for a row of 256, waited
 * on each other through the count: a third of topk k = 8's time at E = 256). cv and ci as
 * sel_topk_mem's loop leaves them for the first min(m, SEL_MAX_CAND + 8) candidates, *nan the
 * lanes holding a NaN; returns m, the number of candidates. */
static int sel_cands_bytes(const double *v, int nb, __mmask8 last, __m512d thr, double *cv,
                           int64_t *ci, __mmask8 *nan)
{
    const __m512d ninf = _mm512_set1_pd(-__builtin_inf());
    uint8_t at[256 + 64];
    int m = 0;
    for (int g = 0; g < nb; g += 8) {
        __mmask8 c[8];
        for (int b = 0; b < 8; b++) {
            const int bb = g + b;
            const __mmask8 ld = bb < nb - 1 ? 0xff : bb == nb - 1 ? last : 0;
            const __m512d x = _mm512_maskz_loadu_pd(ld, v + 8 * bb);
            *nan |= _mm512_mask_cmp_pd_mask(ld, x, x, _CMP_UNORD_Q);
            c[b] = _mm512_mask_cmp_pd_mask(ld, x, thr, _CMP_GE_OQ);
        }
        const __mmask64 cand = _mm512_kunpackd(
            _mm512_kunpackw(_mm512_kunpackb(c[7], c[6]), _mm512_kunpackb(c[5], c[4])),
            _mm512_kunpackw(_mm512_kunpackb(c[3], c[2]), _mm512_kunpackb(c[1], c[0])));
        _mm512_storeu_si512((void *)(at + m),
                            _mm512_maskz_compress_epi8(cand, _mm512_loadu_si512(sel_iota + 8 * g)));
        m += __builtin_popcountll(cand);
    }
    const int take = m < SEL_MAX_CAND + 8 ? m : SEL_MAX_CAND + 8;
    _mm_storeu_si128((__m128i *)(at + m), _mm_setzero_si128()); /* index 0 past the last */
    for (int i = 0; i < take; i += 8) {
        const __mmask8 lanes = take - i >= 8 ? 0xff : (__mmask8)((1u << (take - i)) - 1u);
        const __m512i idx = _mm512_cvtepu8_epi64(_mm_loadl_epi64((const __m128i *)(at + i)));
        _mm512_storeu_si512((void *)(ci + i), idx);
        _mm512_storeu_pd(cv + i, _mm512_mask_i64gather_pd(ninf, lanes, idx, v, 8));
    }
    return m;
}
#endif

/* Steps 1 to 3 through memory, for any length: the candidates compressed into cv and ci, then
 * (sorted = 1 and at most 16 of them) sel_sorted, else the ranks. */
static int sel_topk_mem(const double *v, int len, int k, int32_t *idx, double *val, int sorted)
{
    const int nb = (len + 7) / 8;
    const __mmask8 last = (__mmask8)(0xffu >> (8 * nb - len));
    const __m512d ninf = _mm512_set1_pd(-__builtin_inf());
    /* each lane's largest and second largest, over the even blocks and the odd ones (two
     * chains of dependent instructions, not one), then of the two */
    __m512d m1 = _mm512_loadu_pd(v), m2 = ninf, o1 = ninf, o2 = ninf;
    for (int b = 1; b < nb; b++) {
        const __m512d x = _mm512_mask_loadu_pd(ninf, b == nb - 1 ? last : 0xff, v + 8 * b);
        if (b & 1) {
            o2 = _mm512_max_pd(o2, _mm512_min_pd(o1, x));
            o1 = _mm512_max_pd(o1, x);
        } else {
            m2 = _mm512_max_pd(m2, _mm512_min_pd(m1, x));
            m1 = _mm512_max_pd(m1, x);
        }
    }
    m2 = _mm512_max_pd(_mm512_min_pd(m1, o1), _mm512_max_pd(m2, o2));
    m1 = _mm512_max_pd(m1, o1);
    const __m512d thr = sel_threshold(m1, m2, nb, len, k);
    /* candidates: value and index, in index order; the arrays take two full vectors past m */
    double cv[SEL_MAX_LEN + 16];
    int64_t ci[SEL_MAX_LEN + 16];
    int m = 0;
    __mmask8 nan = 0;
#if defined(__AVX512VBMI2__)
    if (len <= 256)
        m = sel_cands_bytes(v, nb, last, thr, cv, ci, &nan);
    else
#endif
    {
        __m512i iv = _mm512_set_epi64(7, 6, 5, 4, 3, 2, 1, 0);
        const __m512i eight = _mm512_set1_epi64(8);
        for (int b = 0; b < nb; b++, iv = _mm512_add_epi64(iv, eight)) {
            const __mmask8 ld = b == nb - 1 ? last : 0xff;
            const __m512d x = _mm512_mask_loadu_pd(ninf, ld, v + 8 * b);
            nan |= _mm512_cmp_pd_mask(x, x, _CMP_UNORD_Q);
            const __mmask8 c = _mm512_mask_cmp_pd_mask(ld, x, thr, _CMP_GE_OQ);
            _mm512_storeu_pd(cv + m, _mm512_maskz_compress_pd(c, x));
            _mm512_storeu_si512((void *)(ci + m), _mm512_maskz_compress_epi64(c, iv));
            m += __builtin_popcount(c);
        }
    }
    if (m > SEL_MAX_CAND || nan)
        return 0; /* NaN: the scalar selection's own rule */
    /* the lanes past m that the sort and the ranks load: defined, unused */
    _mm512_storeu_pd(cv + m, ninf);
    _mm512_storeu_pd(cv + m + 8, ninf);
    _mm512_storeu_si512((void *)(ci + m), _mm512_setzero_si512());
    _mm512_storeu_si512((void *)(ci + m + 8), _mm512_setzero_si512());
    if (sorted && m <= 16 &&
        sel_sorted(_mm512_loadu_pd(cv), _mm512_loadu_si512((const void *)ci),
                   _mm512_loadu_pd(cv + 8), _mm512_loadu_si512((const void *)(ci + 8)), m, k,
                   idx, val))
        return 1;
    int64_t rk[SEL_MAX_CAND];
    switch ((m + 7) / 8) { /* a constant block count, so that the ranks stay in registers */
    case 1: sel_rank(cv, m, 1, rk); break;
    case 2: sel_rank(cv, m, 2, rk); break;
    case 3: sel_rank(cv, m, 3, rk); break;
    case 4: sel_rank(cv, m, 4, rk); break;
    case 5: sel_rank(cv, m, 5, rk); break;
    case 6: sel_rank(cv, m, 6, rk); break;
    case 7: sel_rank(cv, m, 7, rk); break;
    default: sel_rank(cv, m, 8, rk); break;
    }
    int32_t si[SEL_MAX_CAND];
    double sv[SEL_MAX_CAND];
    for (int i = 0; i < m; i++) { /* the ranks are a permutation of 0..m-1 */
        si[rk[i]] = (int32_t)ci[i];
        sv[rk[i]] = cv[i];
    }
    for (int j = 0; j < k; j++) {
        idx[j] = si[j];
        val[j] = sv[j];
    }
    return 1;
}

#if defined(__AVX512VBMI2__)
/* Block b (elements 8b..8b+7) of a row of nb blocks, -inf past its end (last: the lanes of its
 * last block). */
static inline __m512d sel_block(const double *v, int b, int nb, __mmask8 last)
{
    const __m512d ninf = _mm512_set1_pd(-__builtin_inf());
    return b < nb - 1 ? _mm512_loadu_pd(v + 8 * b)
           : b == nb - 1 ? _mm512_mask_loadu_pd(ninf, last, v + 8 * b)
                         : ninf;
}

/* The elements of the row v (nb <= 8 blocks, -inf past its end) at the indices i (0..63): a
 * two-source permute per pair of blocks, then bits 4 and 5 of i choose among the pairs. */
static inline __m512d sel_pick64(const double *v, int nb, __mmask8 last, __m512i i)
{
    const __mmask8 b4 = _mm512_test_epi64_mask(i, _mm512_set1_epi64(16));
    const __mmask8 b5 = _mm512_test_epi64_mask(i, _mm512_set1_epi64(32));
    __m512d x[4];
#pragma GCC unroll 4
    for (int p = 0; p < 4; p++)
        x[p] = _mm512_permutex2var_pd(sel_block(v, 2 * p, nb, last), i,
                                      sel_block(v, 2 * p + 1, nb, last));
    return _mm512_mask_blend_pd(b5, _mm512_mask_blend_pd(b4, x[0], x[1]),
                                _mm512_mask_blend_pd(b4, x[2], x[3]));
}

/* Rows of 9 to 64 elements, SEL_ROWS at a time (row r at v + r * len, its answer at idx +
 * r * k and val + r * k), each row's steps next to the other's so that the processor overlaps
 * their chains of dependent instructions; no stores read back, no loop over the candidates:
 * the candidates (elements not below thr, and NaNs) as one 64-bit mask, their indices packed
 * in index order by a byte compress, their values picked from the row's blocks. st[r] = 1 when
 * done, 0 for a row with a NaN among the candidates, -1 for sel_topk_mem (more than 16
 * candidates, or ties). */
static inline __attribute__((always_inline)) void sel_topk_regs(const double *v, int len, int k,
                                                                 int R, int32_t *idx,
                                                                 double *val, int *st)
{
    const int nb = (len + 7) / 8;
    const __mmask8 last = (__mmask8)(0xffu >> (8 * nb - len));
    const __m512d ninf = _mm512_set1_pd(-__builtin_inf());
    __m512d m1[SEL_ROWS], m2[SEL_ROWS], thr[SEL_ROWS], c0[SEL_ROWS], c1[SEL_ROWS];
    __m512i i0[SEL_ROWS], i1[SEL_ROWS];
    uint64_t cand[SEL_ROWS];
#pragma GCC unroll 4
    for (int r = 0; r < R; r++) {
        const double *vr = v + (size_t)r * len;
        m1[r] = _mm512_loadu_pd(vr);
        m2[r] = ninf;
#pragma GCC unroll 8
        for (int b = 1; b < 8; b++) {
            const __m512d x = sel_block(vr, b, nb, last);
            m2[r] = _mm512_max_pd(m2[r], _mm512_min_pd(m1[r], x));
            m1[r] = _mm512_max_pd(m1[r], x);
        }
    }
#pragma GCC unroll 4
    for (int r = 0; r < R; r++)
        thr[r] = sel_threshold(m1[r], m2[r], nb, len, k);
#pragma GCC unroll 4
    for (int r = 0; r < R; r++) {
        const double *vr = v + (size_t)r * len;
        __mmask8 c[8]; /* joined in the mask registers (kunpck), not shifted in integers */
#pragma GCC unroll 8
        for (int b = 0; b < 8; b++)
            c[b] = _mm512_mask_cmp_pd_mask(b < nb - 1 ? 0xff : b == nb - 1 ? last : 0,
                                           sel_block(vr, b, nb, last), thr[r], _CMP_NLT_UQ);
        cand[r] = _mm512_kunpackd(
            _mm512_kunpackw(_mm512_kunpackb(c[7], c[6]), _mm512_kunpackb(c[5], c[4])),
            _mm512_kunpackw(_mm512_kunpackb(c[3], c[2]), _mm512_kunpackb(c[1], c[0])));
    }
#pragma GCC unroll 4
    for (int r = 0; r < R; r++) {
        const double *vr = v + (size_t)r * len;
        const __m128i at = _mm512_castsi512_si128(
            _mm512_maskz_compress_epi8(cand[r], _mm512_loadu_si512((const void *)sel_iota)));
        i0[r] = _mm512_cvtepu8_epi64(at);
        i1[r] = _mm512_cvtepu8_epi64(_mm_srli_si128(at, 8));
        const int m = __builtin_popcountll(cand[r]);
        const unsigned keep = m >= 16 ? 0xffffu : (1u << m) - 1u; /* the candidates' lanes */
        c0[r] = _mm512_mask_mov_pd(ninf, (__mmask8)keep, sel_pick64(vr, nb, last, i0[r]));
        c1[r] = _mm512_mask_mov_pd(ninf, (__mmask8)(keep >> 8), sel_pick64(vr, nb, last, i1[r]));
    }
#pragma GCC unroll 4
    for (int r = 0; r < R; r++) {
        const int m = __builtin_popcountll(cand[r]);
        if (_mm512_cmp_pd_mask(c0[r], c0[r], _CMP_UNORD_Q) |
            _mm512_cmp_pd_mask(c1[r], c1[r], _CMP_UNORD_Q))
            st[r] = m > 16 ? -1 : 0; /* NaN: the scalar selection's own rule */
        else
            st[r] = m <= 16 && sel_sorted(c0[r], i0[r], c1[r], i1[r], m, k, idx + r * k,
                                          val + r * k) ? 1 : -1;
    }
}
#endif

/* Rows of 8 elements, R at a time as sel_topk_regs takes them: each row's sort is its answer.
 * st[r] as sel_topk_regs gives it (-1: ties). */
static inline __attribute__((always_inline)) void sel_topk8(const double *v, int k, int R,
                                                             int32_t *idx, double *val, int *st)
{
    const __m512i iota = _mm512_set_epi64(7, 6, 5, 4, 3, 2, 1, 0);
#pragma GCC unroll 4
    for (int r = 0; r < R; r++) {
        const __m512d c = _mm512_loadu_pd(v + 8 * r);
        if (_mm512_cmp_pd_mask(c, c, _CMP_UNORD_Q)) {
            st[r] = 0; /* NaN: the scalar selection's own rule */
            continue;
        }
        st[r] = sel_emit(sel_sort8(sel_key(c, iota), 0), NULL, c, c, iota, iota, k, idx + r * k,
                         val + r * k) ? 1 : -1;
    }
}

int moe_select_topk(const double *v, int len, int k, int32_t *idx, double *val)
{
    if (k < 1 || k > 8 || len < 8 || len > SEL_MAX_LEN)
        return 0;
    int st = -1;
    if (len == 8)
        sel_topk8(v, k, 1, idx, val, &st);
#if defined(__AVX512VBMI2__)
    else if (len <= 64)
        sel_topk_regs(v, len, k, 1, idx, val, &st);
#endif
    else
        return sel_topk_mem(v, len, k, idx, val, 1);
    return st >= 0 ? st : sel_topk_mem(v, len, k, idx, val, 0);
}

void moe_select_topk_rows(const double *v, long n, int len, int k, int32_t *idx, double *val)
{
    long t = 0;
#if defined(__AVX512VBMI2__)
    const int pairs = k >= 1 && k <= 8 && len >= 8 && len <= 64;
#else
    const int pairs = k >= 1 && k <= 8 && len == 8;
#endif
    for (; pairs && t + SEL_ROWS <= n; t += SEL_ROWS) {
        const double *vt = v + (size_t)t * len;
        int st[SEL_ROWS] = {-1, -1, -1, -1};
        /* the next rows start on their way from memory while these are taken (rows straight
         * from memory otherwise wait for each of their lines) */
        const size_t ahead = (size_t)(t + 2 * SEL_ROWS <= n ? SEL_ROWS : n - t - SEL_ROWS) * len;
        for (size_t o = (size_t)SEL_ROWS * len; o < (size_t)SEL_ROWS * len + ahead; o += 8)
            __builtin_prefetch(vt + o);
        if (len == 8)
            sel_topk8(vt, k, SEL_ROWS, idx + t * k, val + t * k, st);
#if defined(__AVX512VBMI2__)
        else
            sel_topk_regs(vt, len, k, SEL_ROWS, idx + t * k, val + t * k, st);
#endif
        for (int r = 0; r < SEL_ROWS; r++) {
            const size_t o = (size_t)(t + r) * k;
            if (st[r] == 0 ||
                (st[r] < 0 && !sel_topk_mem(vt + (size_t)r * len, len, k, idx + o, val + o, 0)))
                idx[o] = -1;
        }
    }
    sel_rows_from(v, t, n, len, k, idx, val); /* (rows longer than the pairs take) */
}

int moe_select_argmax_skip(const double *x, int len, int skip)
{
    const __m512d ninf = _mm512_set1_pd(-__builtin_inf());
    const int nb = (len + 7) / 8;
    __m512d mx = ninf;
    __mmask8 nan = 0;
    for (int b = 0; b < nb; b++) {
        const __mmask8 ld = sel_block_mask(len, skip, b);
        const __m512d v = _mm512_mask_loadu_pd(ninf, ld, x + 8 * b);
        nan |= _mm512_cmp_pd_mask(v, v, _CMP_UNORD_Q);
        mx = _mm512_max_pd(mx, v);
    }
    if (nan)
        return -2;
    const __m512d m = _mm512_set1_pd(_mm512_reduce_max_pd(mx));
    for (int b = 0; b < nb; b++) {
        const __mmask8 ld = sel_block_mask(len, skip, b);
        const __mmask8 eq = _mm512_mask_cmp_pd_mask(ld, _mm512_mask_loadu_pd(ninf, ld, x + 8 * b),
                                                    m, _CMP_EQ_OQ);
        if (eq)
            return 8 * b + __builtin_ctz(eq);
    }
    return -1;
}

int moe_select_top2(const double *x, int len, double mx, int32_t *e1, int32_t *e2)
{
    if (len == 8)
        return moe_select_top2_8(x, mx, e1, e2);
    if (len < 2 || len > SEL_MAX_LEN)
        return 0;
    const int nb = (len + 7) / 8;
    const __m512d vm = _mm512_set1_pd(mx);
    __m512d m2 = _mm512_set1_pd(-__builtin_inf());
    uint64_t eq[SEL_MAX_LEN / 64]; /* bit i % 64 of word i / 64: x[i] == mx */
    __mmask8 nan = 0;
    for (int b = 0; b < nb; b++) { /* the places of mx, and the largest below it */
        const __mmask8 ld = sel_block_mask(len, -1, b);
        const __m512d v = _mm512_maskz_loadu_pd(ld, x + 8 * b);
        nan |= _mm512_mask_cmp_pd_mask(ld, v, v, _CMP_UNORD_Q);
        m2 = _mm512_mask_max_pd(m2, _mm512_mask_cmp_pd_mask(ld, v, vm, _CMP_LT_OQ), m2, v);
        const uint64_t q = _mm512_mask_cmp_pd_mask(ld, v, vm, _CMP_EQ_OQ);
        eq[b / 8] = (b % 8 ? eq[b / 8] : 0) | q << (8 * (b % 8));
    }
    if (nan)
        return 0;
    int first = -1;
    for (int w = 0; w < (nb + 7) / 8; w++) {
        uint64_t q = eq[w];
        while (q) {
            const int i = 64 * w + __builtin_ctzll(q);
            if (first >= 0) { /* mx twice: the second place is the second choice */
                *e1 = first;
                *e2 = i;
                return 1;
            }
            first = i;
            q &= q - 1;
        }
    }
    if (first < 0)
        return 0; /* mx is not in the row */
    const double v2 = _mm512_reduce_max_pd(m2); /* below mx: never x[first] */
    const int second = moe_select_first_eq(x, len, v2);
    if (second < 0)
        return 0;
    *e1 = first;
    *e2 = second;
    return 1;
}

int moe_select_first_eq(const double *x, int len, double m)
{
    if (len == 8)
        return moe_select_first_eq8(x, m);
    /* 64 elements at a time without a branch per block (the place of a row's maximum is
     * random, so a test per block of eight mispredicts once per row) */
    const __m512d vm = _mm512_set1_pd(m);
    for (int i = 0; i < len; i += 64) {
        uint64_t eq = 0;
        for (int b = 0; b < 8 && i + 8 * b < len; b++) {
            const int rest = len - i - 8 * b;
            const __mmask8 ld = rest >= 8 ? 0xff : (__mmask8)((1u << rest) - 1u);
            eq |= (uint64_t)_mm512_mask_cmp_pd_mask(ld, _mm512_maskz_loadu_pd(ld, x + i + 8 * b),
                                                    vm, _CMP_EQ_OQ) << (8 * b);
        }
        if (eq)
            return i + __builtin_ctzll(eq);
    }
    return -1;
}

int moe_select_is_top(const double *v, int len, const int32_t *idx, int k)
{
    if (len == 8)
        return moe_select_is_top8(v, idx, k);
    const double lo = sel_min_at(v, idx, k);
    if (lo != lo)
        return 0;
    const __m512d vl = _mm512_set1_pd(lo);
    int cnt = 0, i = 0; /* elements not below lo (NaN: unordered, counted) */
    for (; i + 8 <= len; i += 8)
        cnt += __builtin_popcount(_mm512_cmp_pd_mask(_mm512_loadu_pd(v + i), vl, _CMP_NLT_UQ));
    if (i < len) {
        const __mmask8 m = (__mmask8)((1u << (len - i)) - 1u);
        cnt += __builtin_popcount(
            _mm512_mask_cmp_pd_mask(m, _mm512_maskz_loadu_pd(m, v + i), vl, _CMP_NLT_UQ));
    }
    return cnt == k;
}

#else

#if defined(__AVX2__)
#include "cols4.h"

#include <immintrin.h>
#include <math.h>

/* Without AVX-512: the two largest of v[0..len), len >= 8, ties to the lower index (the first
 * two of a stable descending argsort), in four lanes. thr = the second largest of eight lanes'
 * maxima (lanes 0-3 over the row's blocks of eight and a last block of four, lanes 4-7 over the
 * blocks' other halves): two elements at distinct places are >= thr, so both of the answer are.
 * The elements >= thr (2.1 of 64 Gaussian values on average) are found by masks of four, then
 * taken in index order by value (strict comparisons, so that the earlier of equals stays
 * ahead). 0 for a row holding a NaN (nothing written). */
static int sel_top2_lanes(const double *v, int len, int32_t *f_out, int32_t *g_out)
{
    __m256d a = _mm256_loadu_pd(v), b = _mm256_loadu_pd(v + 4);
    __m256d nan = _mm256_or_pd(_mm256_cmp_pd(a, a, _CMP_UNORD_Q),
                               _mm256_cmp_pd(b, b, _CMP_UNORD_Q));
    int e = 8;
    for (; e + 8 <= len; e += 8) {
        const __m256d x = _mm256_loadu_pd(v + e), y = _mm256_loadu_pd(v + e + 4);
        nan = _mm256_or_pd(nan, _mm256_or_pd(_mm256_cmp_pd(x, x, _CMP_UNORD_Q),
                                             _mm256_cmp_pd(y, y, _CMP_UNORD_Q)));
        a = _mm256_max_pd(a, x);
        b = _mm256_max_pd(b, y);
    }
    if (e + 4 <= len) {
        const __m256d x = _mm256_loadu_pd(v + e);
        nan = _mm256_or_pd(nan, _mm256_cmp_pd(x, x, _CMP_UNORD_Q));
        a = _mm256_max_pd(a, x);
        e += 4;
    }
    if (_mm256_movemask_pd(nan))
        return 0;
    /* the second largest of the eight: of the pairs' larger ones (hi) the larger of the two
     * halves' smaller maxima and the larger of their second ones, or the largest smaller one */
    const __m256d hi = _mm256_max_pd(a, b), lo = _mm256_min_pd(a, b);
    const __m256d hs = _mm256_permute_pd(hi, 5);
    const __m256d h1 = _mm256_max_pd(hi, hs), l1 = _mm256_min_pd(hi, hs);
    const __m256d h1s = _mm256_permute2f128_pd(h1, h1, 1), l1s = _mm256_permute2f128_pd(l1, l1, 1);
    __m256d t = _mm256_max_pd(_mm256_min_pd(h1, h1s), _mm256_max_pd(l1, l1s));
    __m256d lm = _mm256_max_pd(lo, _mm256_permute_pd(lo, 5));
    lm = _mm256_max_pd(lm, _mm256_permute2f128_pd(lm, lm, 1));
    t = _mm256_max_pd(t, lm);
    const double thr = _mm256_cvtsd_f64(t);
    int f = -1, g = -1;
#define SEL_TAKE(i)                                                                               \
    do {                                                                                          \
        if (f < 0 || v[i] > v[f])                                                                 \
            g = f, f = (i);                                                                       \
        else if (g < 0 || v[i] > v[g])                                                            \
            g = (i);                                                                              \
    } while (0)
    const int whole = len & ~3;
    for (int w0 = 0; w0 < whole; w0 += 64) { /* 64 elements a mask */
        uint64_t m = 0;
        for (int q = 0; q < 64 && w0 + q < whole; q += 4)
            m |= (uint64_t)_mm256_movemask_pd(_mm256_cmp_pd(_mm256_loadu_pd(v + w0 + q), t,
                                                            _CMP_GE_OQ)) << q;
        for (; m; m &= m - 1) {
            const int i = w0 + __builtin_ctzll(m);
            SEL_TAKE(i);
        }
    }
    for (e = whole; e < len; e++) {
        if (v[e] != v[e])
            return 0;
        if (v[e] >= thr)
            SEL_TAKE(e);
    }
#undef SEL_TAKE
    *f_out = f, *g_out = g;
    return 1;
}

/* The compression of four lanes by a mask of four bits (SEL_PACK[mask]): the first eight the
 * 32-bit lanes of the doubles whose bits are set, in order (for _mm256_permutevar8x32_epi32),
 * the last four their lane numbers; the places past the set bits repeat lane 0 (written past
 * the candidates, never read as one). */
static const int32_t SEL_PACK[16][12] = {
    {0, 1, 0, 1, 0, 1, 0, 1, 0, 0, 0, 0}, {0, 1, 0, 1, 0, 1, 0, 1, 0, 0, 0, 0},
    {2, 3, 0, 1, 0, 1, 0, 1, 1, 0, 0, 0}, {0, 1, 2, 3, 0, 1, 0, 1, 0, 1, 0, 0},
    {4, 5, 0, 1, 0, 1, 0, 1, 2, 0, 0, 0}, {0, 1, 4, 5, 0, 1, 0, 1, 0, 2, 0, 0},
    {2, 3, 4, 5, 0, 1, 0, 1, 1, 2, 0, 0}, {0, 1, 2, 3, 4, 5, 0, 1, 0, 1, 2, 0},
    {6, 7, 0, 1, 0, 1, 0, 1, 3, 0, 0, 0}, {0, 1, 6, 7, 0, 1, 0, 1, 0, 3, 0, 0},
    {2, 3, 6, 7, 0, 1, 0, 1, 1, 3, 0, 0}, {0, 1, 2, 3, 6, 7, 0, 1, 0, 1, 3, 0},
    {4, 5, 6, 7, 0, 1, 0, 1, 2, 3, 0, 0}, {0, 1, 4, 5, 6, 7, 0, 1, 0, 2, 3, 0},
    {2, 3, 4, 5, 6, 7, 0, 1, 1, 2, 3, 0}, {0, 1, 2, 3, 4, 5, 6, 7, 0, 1, 2, 3},
};

/* The lanes of x whose bits are set in c, in order, at cv + m, their indices (at plus the lane)
 * at ci + m (four places of each written); returns m plus their number. */
static inline __attribute__((always_inline)) int sel_pack4(__m256d x, int c, __m128i at,
                                                           double *cv, int32_t *ci, int m)
{
    const __m256i p = _mm256_loadu_si256((const __m256i *)SEL_PACK[c]);
    _mm256_storeu_pd(cv + m, _mm256_castsi256_pd(
                                 _mm256_permutevar8x32_epi32(_mm256_castpd_si256(x), p)));
    _mm_storeu_si128((__m128i *)(ci + m),
                     _mm_add_epi32(at, _mm_loadu_si128((const __m128i *)(SEL_PACK[c] + 8))));
    return m + __builtin_popcount((unsigned)c);
}

/* Without AVX-512: the k largest of v[0..len), 3 <= k <= 8, len >= 8, ties to the lower index,
 * in four lanes. thr = the smallest of eight lanes' maxima over the row's whole blocks of eight
 * (lane l: the elements at 8q + l): eight elements at distinct places, so at least k of the
 * row are >= thr and so is every element of the answer. The elements >= thr are the
 * candidates (about 18 of 64 Gaussian values, 21 of 256), packed in index order four elements
 * at a time by a permutation chosen by their mask (no branch per element). Each candidate's
 * rank in the order (value descending, then index) is the number of candidates above it or
 * equal and earlier; the ranks of four candidates are counted at once against each candidate
 * in turn, and those below k are the answer (the order is total: the ranks are a permutation,
 * and each of 0..k-1 is written once). 0 (nothing written) for a row holding a NaN or with
 * more than SEL_MAX_CAND candidates (many equal values). */
static int sel_topk_lanes(const double *v, int len, int k, int32_t *idx, double *val)
{
    __m256d a = _mm256_loadu_pd(v), b = _mm256_loadu_pd(v + 4);
    for (int e = 8; e + 8 <= len; e += 8) {
        a = _mm256_max_pd(a, _mm256_loadu_pd(v + e));
        b = _mm256_max_pd(b, _mm256_loadu_pd(v + e + 4));
    }
    __m256d t = _mm256_min_pd(a, b); /* (a NaN here: the scan below declines the row) */
    t = _mm256_min_pd(t, _mm256_permute2f128_pd(t, t, 1));
    t = _mm256_min_pd(t, _mm256_permute_pd(t, 5));
    const __m256d tv = t; /* thr in every lane */
    const double thr = _mm256_cvtsd_f64(t);
    double cv[SEL_MAX_LEN + 8]; /* (every element may be a candidate; four written past them) */
    int32_t ci[SEL_MAX_LEN + 8];
    __m256d nan = _mm256_setzero_pd();
    __m128i at = _mm_setzero_si128();
    int m = 0, e = 0;
    for (; e + 4 <= len; e += 4) {
        const __m256d x = _mm256_loadu_pd(v + e);
        nan = _mm256_or_pd(nan, _mm256_cmp_pd(x, x, _CMP_UNORD_Q));
        m = sel_pack4(x, _mm256_movemask_pd(_mm256_cmp_pd(x, tv, _CMP_GE_OQ)), at, cv, ci, m);
        at = _mm_add_epi32(at, _mm_set1_epi32(4));
    }
    for (; e < len; e++) {
        if (v[e] != v[e])
            return 0;
        if (v[e] >= thr)
            ci[m] = e, cv[m++] = v[e];
    }
    if (_mm256_movemask_pd(nan) || m > SEL_MAX_CAND)
        return 0;
    for (int j = m; j < m + 4; j++) /* lanes of the last four past the candidates (ignored) */
        cv[j] = -INFINITY;
    int64_t rk[SEL_MAX_CAND + 4];
    for (int i = 0; i < m; i += 4) { /* the ranks of candidates i..i+3 */
        const __m256d x = _mm256_loadu_pd(cv + i);
        __m256i r = _mm256_setzero_si256(); /* minus one for each candidate before it */
        int j = 0;
        for (; j < i; j++) /* earlier: before it when above or equal */
            r = _mm256_add_epi64(r, _mm256_castpd_si256(_mm256_cmp_pd(
                                        _mm256_broadcast_sd(cv + j), x, _CMP_GE_OQ)));
        for (; j < i + 4 && j < m; j++) { /* among the four: lanes after j as earlier */
            const __m256d c = _mm256_broadcast_sd(cv + j);
            const __m256d after = _mm256_cmp_pd(_mm256_set_pd(3.0, 2.0, 1.0, 0.0),
                                                _mm256_set1_pd((double)(j - i)), _CMP_GT_OQ);
            const __m256d ge = _mm256_cmp_pd(c, x, _CMP_GE_OQ);
            const __m256d gt = _mm256_cmp_pd(c, x, _CMP_GT_OQ);
            r = _mm256_add_epi64(r, _mm256_castpd_si256(_mm256_blendv_pd(gt, ge, after)));
        }
        for (; j < m; j++) /* later: before it only when above */
            r = _mm256_add_epi64(r, _mm256_castpd_si256(_mm256_cmp_pd(
                                        _mm256_broadcast_sd(cv + j), x, _CMP_GT_OQ)));
        _mm256_storeu_si256((__m256i *)(rk + i), _mm256_sub_epi64(_mm256_setzero_si256(), r));
    }
    int32_t oi[9]; /* place k: where the candidates of ranks >= k go */
    double ov[9];
    for (int i = 0; i < m; i++) {
        const int r = rk[i] < k ? (int)rk[i] : k;
        oi[r] = ci[i], ov[r] = cv[i];
    }
    for (int j = 0; j < k; j++)
        idx[j] = oi[j], val[j] = ov[j];
    return 1;
}

/* moe_select_top2_rows8 for the four rows at x (4 x 8): the rows as columns (lane i: row i),
 * then the scalar two-largest steps over the eight columns in every lane at once (cols4.h's
 * moe_top2_cols8). */
static void sel_top2_rows4(const double *x, int32_t *idx2, uint8_t *ok)
{
    __m256d c[8], fi, gi;
    moe_cols8_load(x, c);
    __m256d nan = _mm256_setzero_pd();
    for (int e = 0; e < 8; e++)
        nan = _mm256_or_pd(nan, _mm256_cmp_pd(c[e], c[e], _CMP_UNORD_Q));
    moe_top2_cols8(c, &fi, &gi);
    moe_idx2_store(fi, gi, idx2);
    const int bad = _mm256_movemask_pd(nan);
    for (int i = 0; i < 4; i++)
        ok[i] = !(bad >> i & 1);
}
#endif

int moe_select_top2(const double *x, int len, double mx, int32_t *e1, int32_t *e2)
{
#if defined(__AVX2__)
    int32_t f, g;
    if (len >= 8 && len <= SEL_MAX_LEN && sel_top2_lanes(x, len, &f, &g) && x[f] == mx) {
        *e1 = f, *e2 = g;
        return 1;
    }
#endif
    (void)x, (void)len, (void)mx, (void)e1, (void)e2;
    return 0;
}

int moe_select_is_top(const double *v, int len, const int32_t *idx, int k)
{
    const double lo = sel_min_at(v, idx, k);
    if (lo != lo)
        return 0;
    int cnt = 0;
    for (int i = 0; i < len; i++)
        cnt += !(v[i] < lo);
    return cnt == k;
}

int moe_select_topk(const double *v, int len, int k, int32_t *idx, double *val)
{
#if defined(__AVX2__)
    if (k == 2 && len >= 8 && len <= SEL_MAX_LEN && sel_top2_lanes(v, len, idx, idx + 1)) {
        val[0] = v[idx[0]], val[1] = v[idx[1]];
        return 1;
    }
    if (k >= 3 && k <= 8 && len >= 8 && len <= SEL_MAX_LEN)
        return sel_topk_lanes(v, len, k, idx, val);
#endif
    (void)v, (void)len, (void)k, (void)idx, (void)val;
    return 0;
}

#if defined(__AVX2__)
/* moe_select_topk_rows for rows [t, n) w at a time (8 or 4) by the selection network of that
 * width, the rows it declines one at a time, the rows two blocks on on their way from memory;
 * returns the first row left (fewer than w). */
static long sel_net_rows(const double *v, long t, long n, int len, int k, int32_t *idx,
                         double *val, int w)
{
    for (; t + w <= n; t += w) {
        for (size_t o = (size_t)(t + 2 * w) * len; t + 3 * w <= n && o < (size_t)(t + 3 * w) * len;
             o += 8)
            __builtin_prefetch(v + o);
        const int took = (w == 8 ? moe_select_topk_net8 : moe_select_topk_net4)(
            v + (size_t)t * len, len, k, idx + (size_t)t * k, val + (size_t)t * k);
        for (int i = 0; i < w; i++)
            if (!(took >> i & 1))
                sel_rows_from(v, t + i, t + i + 1, len, k, idx, val);
    }
    return t;
}
#endif

void moe_select_topk_rows(const double *v, long n, int len, int k, int32_t *idx, double *val)
{
    long t = 0;
#if defined(__AVX2__)
    /* k = 3..8 where the networks fit (8..256, a multiple of 8 or of 4): eight rows at a time
     * by the network on 32-bit keys, then four at a time on 64-bit keys (select_net.c), the
     * rows they decline one at a time; the rows two blocks on start on their way from memory
     * (else each block waits for its lines: 65536 x 64 from memory, one thread, four rows at a
     * time, 64-99 -> 46-71 ns a row). Other shapes: one row at a time, below. In cache, one
     * thread, Gaussian rows, k = 8: four rows at a time 46 ns a row at len 64, 168 at 256;
     * eight at a time 34 and 97 (declining 0.2% and 1.6% of the rows). */
    if (k >= 3 && moe_select_net8_fits(len, k))
        t = sel_net_rows(v, t, n, len, k, idx, val, 8);
    if (k >= 3 && moe_select_net4_fits(len, k))
        t = sel_net_rows(v, t, n, len, k, idx, val, 4);
#endif
    sel_rows_from(v, t, n, len, k, idx, val);
}

#endif

/* (one definition for every build: the four-row columns only without AVX-512 but with AVX2,
 * where they were written and measured; elsewhere, and for the rows past the last four, one
 * row at a time) */
void moe_select_top2_rows8(const double *x, int n, int32_t *idx2, uint8_t *ok)
{
    int r = 0;
#if !defined(__AVX512F__) && defined(__AVX2__)
    for (; r + 4 <= n; r += 4)
        sel_top2_rows4(x + (size_t)r * 8, idx2 + 2 * (size_t)r, ok + r);
#endif
    for (; r < n; r++) {
        double v2[2];
        ok[r] = (uint8_t)moe_select_topk(x + (size_t)r * 8, 8, 2, idx2 + 2 * (size_t)r, v2);
    }
}

int moe_select_pack(const double *v, int len, double thr, int strict, double *cv, int32_t *ci)
{
    int m = 0, e = 0;
#if !defined(__AVX512F__) && defined(__AVX2__)
    const __m256d tv = _mm256_set1_pd(thr);
    __m128i at = _mm_setzero_si128();
    for (; e + 4 <= len; e += 4) {
        const __m256d x = _mm256_loadu_pd(v + e);
        const int c = _mm256_movemask_pd(strict ? _mm256_cmp_pd(x, tv, _CMP_GT_OQ)
                                                : _mm256_cmp_pd(x, tv, _CMP_GE_OQ));
        m = sel_pack4(x, c, at, cv, ci, m);
        at = _mm_add_epi32(at, _mm_set1_epi32(4));
    }
#endif
    for (; e < len; e++) { /* written at m whether taken or not: no branch on the value */
        cv[m] = v[e], ci[m] = e;
        m += strict ? v[e] > thr : v[e] >= thr;
    }
    return m;
}
