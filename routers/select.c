/* select.c: the k largest of a row with AVX-512, without a branch per element (select.h).
 *
 * Three steps, each on eight lanes at a time:
 *   1. the largest and the second largest of each lane over the row's blocks of eight (the
 *      last block padded with -inf): sixteen distinct elements of the row (or padding);
 *   2. thr = the k-th largest of those sixteen (k <= 8), from the two lane sets sorted by a
 *      sorting network. k distinct elements of the row are >= thr, so the k-th largest of the
 *      row is >= thr and every element of the answer is >= thr: the elements >= thr are the
 *      candidates, compressed in index order (about k of them for distinct values);
 *   3. each candidate's rank in the order (value descending, index ascending), counted against
 *      all the candidates; the order is total, so the ranks are a permutation and the first k
 *      ranks are the answer, ties to the lower index exactly as the stable argsort has them.
 * Rows with more than SEL_MAX_CAND candidates (many equal values) or with a NaN take the
 * caller's scalar selection instead. */
#include "select.h"

#include <stdint.h>

/* The smallest of v[idx[j]], j < k; NaN when one of them is NaN. */
static double sel_min_at(const double *v, const int32_t *idx, int k)
{
    double lo = v[idx[0]];
    for (int j = 1; j < k; j++)
        lo = v[idx[j]] < lo || v[idx[j]] != v[idx[j]] ? v[idx[j]] : lo;
    return lo;
}

#if defined(__AVX512F__)
#include <immintrin.h>

enum { SEL_MAX_LEN = 1024, SEL_MAX_CAND = 64 };

/* One layer of a sorting network on the eight lanes of x, descending: lane i and lane p[i]
 * compare, and the lanes of mx (the lower of each pair) keep the larger value. */
static inline __m512d sel_layer(__m512d x, __m512i p, __mmask8 mx)
{
    const __m512d y = _mm512_permutexvar_pd(p, x);
    return _mm512_mask_blend_pd(mx, _mm512_min_pd(x, y), _mm512_max_pd(x, y));
}

/* The eight lanes of x in descending order: the 19 comparators of the optimal six-layer
 * network for eight inputs (Knuth, TAOCP vol. 3, 5.3.4), checked on every 0-1 input. NaN-free
 * x only. */
static inline __m512d sel_sort8(__m512d x)
{
    x = sel_layer(x, _mm512_set_epi64(5, 4, 7, 6, 1, 0, 3, 2), 0x33); /* 02 13 46 57 */
    x = sel_layer(x, _mm512_set_epi64(3, 2, 1, 0, 7, 6, 5, 4), 0x0f); /* 04 15 26 37 */
    x = sel_layer(x, _mm512_set_epi64(6, 7, 4, 5, 2, 3, 0, 1), 0x55); /* 01 23 45 67 */
    x = sel_layer(x, _mm512_set_epi64(7, 6, 3, 2, 5, 4, 1, 0), 0x0c); /* 24 35 */
    x = sel_layer(x, _mm512_set_epi64(7, 3, 5, 1, 6, 2, 4, 0), 0x0a); /* 14 36 */
    return sel_layer(x, _mm512_set_epi64(7, 5, 6, 3, 4, 1, 2, 0), 0x2a); /* 12 34 56 */
}

/* Lane l of x. */
static inline double sel_lane(__m512d x, int l)
{
    return _mm_cvtsd_f64(_mm512_castpd512_pd128(
        _mm512_permutexvar_pd(_mm512_set1_epi64(l), x)));
}

/* thr = the k-th largest (1 <= k <= 8) of the sixteen lanes of A and B, each sorted
 * descending: max(A[k-1], B[k-1], min(A[l], B[k-2-l]) for l <= k-2) (the k largest of the two
 * lists take l + 1 from A and k - 1 - l from B for some l). */
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

int moe_select_topk(const double *v, int len, int k, int32_t *idx, double *val)
{
    if (k < 1 || k > 8 || len < 8 || len > SEL_MAX_LEN)
        return 0;
    const int nb = (len + 7) / 8;
    const __mmask8 last = (__mmask8)(0xffu >> (8 * nb - len));
    const __m512d ninf = _mm512_set1_pd(-__builtin_inf());
    __m512d m1 = _mm512_loadu_pd(v), m2 = ninf; /* each lane's largest and second largest */
    for (int b = 1; b < nb; b++) {
        const __m512d x = _mm512_mask_loadu_pd(ninf, b == nb - 1 ? last : 0xff, v + 8 * b);
        m2 = _mm512_max_pd(m2, _mm512_min_pd(m1, x));
        m1 = _mm512_max_pd(m1, x);
    }
    /* (with a NaN in the row thr means nothing: the row is declined below); k = len: every
     * element is a candidate, no threshold to find */
    const __m512d thr = k == len ? ninf
                        : _mm512_set1_pd(nb == 1 ? sel_lane(sel_sort8(m1), k - 1)
                                                 : sel_kth_of16(sel_sort8(m1), sel_sort8(m2), k));
    /* candidates: value and index, in index order; the arrays take a full vector past m */
    double cv[SEL_MAX_LEN + 16];
    int64_t ci[SEL_MAX_LEN + 8];
    __m512i iv = _mm512_set_epi64(7, 6, 5, 4, 3, 2, 1, 0);
    const __m512i eight = _mm512_set1_epi64(8);
    int m = 0;
    __mmask8 nan = 0;
    for (int b = 0; b < nb; b++, iv = _mm512_add_epi64(iv, eight)) {
        const __mmask8 ld = b == nb - 1 ? last : 0xff;
        const __m512d x = _mm512_mask_loadu_pd(ninf, ld, v + 8 * b);
        nan |= _mm512_cmp_pd_mask(x, x, _CMP_UNORD_Q);
        const __mmask8 c = _mm512_mask_cmp_pd_mask(ld, x, thr, _CMP_GE_OQ);
        _mm512_storeu_pd(cv + m, _mm512_maskz_compress_pd(c, x));
        _mm512_storeu_si512((void *)(ci + m), _mm512_maskz_compress_epi64(c, iv));
        m += __builtin_popcount(c);
    }
    if (m > SEL_MAX_CAND || nan)
        return 0; /* NaN: the scalar selection's own rule */
    /* the lanes past m that the ranks load: defined, unused */
    _mm512_storeu_pd(cv + m, ninf);
    _mm512_storeu_pd(cv + m + 8, ninf);
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

int moe_select_top2(const double *x, int len, double mx, int32_t *e1, int32_t *e2)
{
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

int moe_select_argmax_skip(const double *x, int len, int skip)
{
    (void)x, (void)len, (void)skip;
    return -2;
}

int moe_select_first_eq(const double *x, int len, double m)
{
    for (int i = 0; i < len; i++)
        if (x[i] == m)
            return i;
    return -1;
}

int moe_select_topk(const double *v, int len, int k, int32_t *idx, double *val)
{
    (void)v, (void)len, (void)k, (void)idx, (void)val;
    return 0;
}

#endif
