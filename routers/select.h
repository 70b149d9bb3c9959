/* select.h: the k largest values of a row, vectorised (AVX-512), for the token-choice routers'
 * per-token selection (moe_claims_topk uses it where it applies). */
#ifndef MOE_SELECT_H
#define MOE_SELECT_H

#include <stdint.h>

/* The k largest of v[0..len) in descending order, ties to the lower index (the first k of a
 * stable descending argsort): idx (k) their indices, val (k) their values. Returns 1 when done,
 * 0 when the row is outside the vector path (no AVX-512, k outside 1..8, len outside 8..1024,
 * more than 64 elements at or above the threshold of the method, a NaN) and nothing was
 * written: the caller then selects another way. Without AVX-512 but with AVX2 it takes k = 2..8
 * (four lanes; k = 3..8 decline above 64 candidates, as above), for len 8..1024 and no NaN. */
int moe_select_topk(const double *v, int len, int k, int32_t *idx, double *val);

/* moe_select_topk of each of the n rows v (n, len): row t's answer at idx + t * k and val +
 * t * k, four rows at a time where the rows are short (with AVX-512: 8..64 elements; without
 * it, with AVX2: k = 3..8 of 8..256 by moe_select_topk_net4); a row it declines gets
 * idx[t * k] = -1 and nothing else written. */
void moe_select_topk_rows(const double *v, long n, int len, int k, int32_t *idx, double *val);

/* moe_select_topk of the four rows v (4, len), each row's answer at idx + i * k and val + i * k,
 * by a selection network in the four lanes of AVX2 registers (select_net.c), for k = 1..8 and
 * len = 8..256 a multiple of 4. Returns the rows answered as bits (bit i: row i); a row with a
 * NaN, an infinity, a zero among its k + 1 largest, or two of those equal in all but their low
 * eight bits is declined (nothing written), and every row is declined with AVX-512, without
 * AVX2 and FMA, or outside those shapes. */
int moe_select_topk_net4(const double *v, int len, int k, int32_t *idx, double *val);

/* Whether moe_select_topk_net4 takes rows of len with k in this build (it may still decline a
 * row for its values). */
int moe_select_net4_fits(int len, int k);

/* moe_select_topk_net4 for eight rows v (8, len) at once, in the eight lanes of AVX2 float
 * registers, on keys of each double's high 32 bits (select_net.c), for k = 1..8 and len =
 * 8..256 a multiple of 8. Returns the rows answered as bits (bit i: row i); declines a row as
 * moe_select_topk_net4 does, and also where two of its k + 1 largest agree in the top
 * 20 - ceil(log2(len)) bits of their mantissa (their sign and exponent alike) or a value's
 * magnitude is 2^1017 or more. Every row is declined with AVX-512, without AVX2 and FMA, or
 * outside those shapes. */
int moe_select_topk_net8(const double *v, int len, int k, int32_t *idx, double *val);

/* Whether moe_select_topk_net8 takes rows of len with k in this build. */
int moe_select_net8_fits(int len, int k);

/* Each of the n rows of eight x (n, 8): its two largest as moe_select_topk with k = 2 gives
 * them, in idx2[2r], idx2[2r + 1], and ok[r] = 1; ok[r] = 0 (idx2 of the row unset) where
 * moe_select_topk declines the row (a NaN; every row without AVX2 or AVX-512). With AVX2 and
 * no AVX-512 four rows at a time, as columns. */
void moe_select_top2_rows8(const double *x, int n, int32_t *idx2, uint8_t *ok);

/* The elements of v[0..len) at or above thr (strict: above; a NaN never), in index order, into
 * cv and their indices into ci; returns their number. Places past it, up to len, may be
 * written. Four lanes at a time without AVX-512 but with AVX2 (a permutation chosen by each
 * four's mask), else one at a time; no branch on the values either way. */
int moe_select_pack(const double *v, int len, double thr, int strict, double *cv, int32_t *ci);

/* The index of the largest of x[0..len) other than x[skip] (skip -1: none), ties to the lower
 * index (-0.0 and +0.0 equal), exactly as moe_claims_argmax's scalar loop; -1 when there is no
 * element, -2 when the row holds a NaN or there is no AVX2 (the caller then scans). */
int moe_select_argmax_skip(const double *x, int len, int skip);

/* Whether the k distinct indices idx (k) are those of the k largest of v[0..len) under any
 * rule for ties: every other element is below the smallest v[idx[j]]. Then idx holds, as a set,
 * what moe_select_topk and the scalar selection return, in whatever order. 0 when another
 * element reaches that smallest value, and for any row holding a NaN. */
int moe_select_is_top(const double *v, int len, const int32_t *idx, int k);

/* The row's two first choices given its maximum mx (moe_vmax's, so one of the row's values):
 * *e1 = the first index of mx, *e2 = the first index of the largest of the others (ties to the
 * lower index, -0.0 and +0.0 equal), as moe_claims_argmax_row and moe_claims_argmax with e1
 * skipped give them, in one pass over the row and a second one only up to e2 when mx occurs
 * once. Returns 1 when done, 0 (nothing written) for rows of fewer than 2 or more than 1024
 * elements, rows holding a NaN, an mx that is not in the row, or without AVX-512 (with AVX2
 * instead: rows of 8..1024 elements, in four lanes, mx the row's largest). */
int moe_select_top2(const double *x, int len, double mx, int32_t *e1, int32_t *e2);

/* The first i < len with x[i] == m (so -0.0 and +0.0 match each other), or -1. */
int moe_select_first_eq(const double *x, int len, double m);

/* moe_select_first_eq, moe_select_top2 and moe_select_is_top of a row of eight (E = 8), inline
 * for the callers that take them once per token: with AVX-512 the row is one vector (the
 * functions above call these for len = 8), without it they are those functions. */
#if defined(__AVX512F__)
#include <immintrin.h>

static inline int moe_select_first_eq8(const double *x, double m)
{
    const __mmask8 eq = _mm512_cmp_pd_mask(_mm512_loadu_pd(x), _mm512_set1_pd(m), _CMP_EQ_OQ);
    return eq ? __builtin_ctz(eq) : -1;
}

/* moe_select_top2_8 of the row already in v. */
static inline int moe_select_top2_8v(__m512d v, double mx, int32_t *e1, int32_t *e2)
{
    const __m512d vm = _mm512_set1_pd(mx);
    const __mmask8 eq = _mm512_cmp_pd_mask(v, vm, _CMP_EQ_OQ);
    if (_mm512_cmp_pd_mask(v, v, _CMP_UNORD_Q) || !eq)
        return 0;
    const __mmask8 again = eq & (__mmask8)(eq - 1); /* mx twice: its second place */
    const __mmask8 second =
        again ? again
              : _mm512_cmp_pd_mask(v, /* else the first place of the largest below mx */
                                   _mm512_set1_pd(_mm512_mask_reduce_max_pd(
                                       _mm512_cmp_pd_mask(v, vm, _CMP_LT_OQ), v)),
                                   _CMP_EQ_OQ);
    if (!second)
        return 0;
    *e1 = __builtin_ctz(eq);
    *e2 = __builtin_ctz(second);
    return 1;
}

static inline int moe_select_top2_8(const double *x, double mx, int32_t *e1, int32_t *e2)
{
    return moe_select_top2_8v(_mm512_loadu_pd(x), mx, e1, e2);
}

static inline int moe_select_is_top8(const double *v, const int32_t *idx, int k)
{
    double lo = v[idx[0]]; /* the smallest chosen value, NaN if one is */
    for (int j = 1; j < k; j++)
        lo = v[idx[j]] < lo || v[idx[j]] != v[idx[j]] ? v[idx[j]] : lo;
    return lo == lo && __builtin_popcount(_mm512_cmp_pd_mask(_mm512_loadu_pd(v),
                                                             _mm512_set1_pd(lo), _CMP_NLT_UQ)) == k;
}
#else
static inline int moe_select_first_eq8(const double *x, double m)
{
    return moe_select_first_eq(x, 8, m);
}

static inline int moe_select_top2_8(const double *x, double mx, int32_t *e1, int32_t *e2)
{
    return moe_select_top2(x, 8, mx, e1, e2);
}

static inline int moe_select_is_top8(const double *v, const int32_t *idx, int k)
{
    return moe_select_is_top(v, 8, idx, k);
}
#endif

#endif
