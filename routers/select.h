/* select.h: the k largest values of a row, vectorised (AVX-512), for the token-choice routers'
 * per-token selection (moe_claims_topk uses it where it applies). */
#ifndef MOE_SELECT_H
#define MOE_SELECT_H

#include <stdint.h>

/* The k largest of v[0..len) in descending order, ties to the lower index (the first k of a
 * stable descending argsort): idx (k) their indices, val (k) their values. Returns 1 when done,
 * 0 when the row is outside the vector path (no AVX-512, k outside 1..8, len outside 8..1024,
 * more than 64 elements at or above the threshold of the method, a NaN) and nothing was
 * written: the caller then selects another way. */
int moe_select_topk(const double *v, int len, int k, int32_t *idx, double *val);

/* moe_select_topk of each of the n rows v (n, len): row t's answer at idx + t * k and val +
 * t * k, four rows at a time where the rows are short (8..64 elements); a row it declines gets
 * idx[t * k] = -1 and nothing else written. */
void moe_select_topk_rows(const double *v, long n, int len, int k, int32_t *idx, double *val);

/* The index of the largest of x[0..len) other than x[skip] (skip -1: none), ties to the lower
 * index (-0.0 and +0.0 equal), exactly as moe_claims_argmax's scalar loop; -1 when there is no
 * element, -2 when the row holds a NaN or there is no AVX-512 (the caller then scans). */
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
 * elements, rows holding a NaN, an mx that is not in the row, or without AVX-512. */
int moe_select_top2(const double *x, int len, double mx, int32_t *e1, int32_t *e2);

/* The first i < len with x[i] == m (so -0.0 and +0.0 match each other), or -1. */
int moe_select_first_eq(const double *x, int len, double m);

#endif
