/* colselect.h: the best k of a list of (score, token) candidates, by selection, and sorting such
 * a list; for the routers in which an expert chooses its tokens (expert_choice), where each
 * expert's column of scores is reduced to candidates and the best C of them are kept.
 *
 * The order is "higher score first, equal scores lower token first": total on candidates with
 * distinct tokens, so the best k are one set and their sorted order is unique (the first k of a
 * stable descending argsort of the column). Scores are compared as doubles and are not NaN. */
#ifndef MOE_COLSELECT_H
#define MOE_COLSELECT_H

#include <stdint.h>

typedef struct {
    double v;   /* score */
    int32_t t;  /* token */
} moe_cand;

/* 1 if a comes before b in the order above. */
static inline int moe_cand_better(moe_cand a, moe_cand b)
{
    return a.v > b.v || (a.v == b.v && a.t < b.t);
}

/* Reorder a (m) so that a[0..k) are its k best, 1 <= k <= m: a[k-1] is the k-th best, a[0..k-1)
 * better in no particular order, a[k..m) worse. Quickselect (median of three, expected O(m));
 * a range that does not shrink fast enough is sorted instead, so the worst case is O(m log m).
 * tmp (m): scratch. */
void moe_cand_select(moe_cand *a, long m, long k, moe_cand *tmp);

/* Shorten a list a (m) of which only the best k (1 <= k < m) are wanted, keeping every one of
 * them: the candidates with a score above x stay (moved to the front, in their order), where x
 * is a score of the list with at least k candidates above it, taken from a sample of 32 so that
 * about k + (m - k) / 4 stay; when no sampled score will do (many equal scores), the best k
 * stay (moe_cand_select) and x is the k-th best's score. Returns the number kept; *x = x. A
 * candidate with a score <= x cannot be among the best k of the list, nor of the list with
 * later tokens added. Vector compares (eight lanes with AVX-512, four with AVX2). tmp (m):
 * scratch. */
long moe_cand_cut(moe_cand *a, long m, long k, double *x, moe_cand *tmp);

/* Sort a (m) best first (merge sort, O(m log m)); tmp (m): scratch. */
void moe_cand_sort(moe_cand *a, long m, moe_cand *tmp);

#endif
