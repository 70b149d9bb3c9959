/* ranked.h: a row's indices in descending order of value, ties to the lower index (the order of
 * a stable descending argsort), taken one at a time, for the routers that claim a prefix of that
 * order whose length depends on the values (topp, relu): a binary heap, O(len) to build and
 * O(log len) per index taken, instead of ordering the whole row; or, when most of the row is
 * taken, the whole row sorted (moe_ranked_sort). */
#ifndef MOE_RANKED_H
#define MOE_RANKED_H

#include <stdint.h>

/* Rows up to this length take the heap on the caller's stack (16 KB of indices). */
enum { MOE_RANKED_MAX = 4096 };

typedef struct {
    const double *v; /* (len) the values */
    int32_t *h;      /* heap of the indices not taken yet, best at h[0] */
    int n;           /* indices left */
} moe_ranked;

/* Start the order of v[0..len), len <= MOE_RANKED_MAX, with heap (len) as storage. */
void moe_ranked_init(moe_ranked *r, const double *v, int len, int32_t *heap);

/* The next index in the order (the largest value not taken yet, ties to the lower index), or -1
 * when every index has been taken. */
int moe_ranked_next(moe_ranked *r);

/* Sorts the pairs (v[i], ix[i]), i < len, by descending v, equal values in their given order
 * (stable): the order moe_ranked takes them in when ix is increasing. sv (len) and si (len) are
 * scratch; returns 1 when the sorted pairs are in v, ix, 0 when they are in sv, si. A bottom-up
 * merge sort without a branch on the values: faster than the heap when most of the row is
 * taken. */
int moe_ranked_sort(double *v, int32_t *ix, double *sv, int32_t *si, int len);

#endif
