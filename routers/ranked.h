/* ranked.h: a row's indices in descending order of value, ties to the lower index (the order of
 * a stable descending argsort), taken one at a time, for the routers that claim a prefix of that
 * order whose length depends on the values (topp, relu): a binary heap, O(len) to build and
 * O(log len) per index taken, instead of ordering the whole row. Also the compaction of such
 * prefix claims into as few claim columns as the longest prefix needs. */
#ifndef MOE_RANKED_H
#define MOE_RANKED_H

#include "claims.h"

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

/* Claims of n tokens in c (T,K) whose claimed choices are, for token t, exactly the first
 * cnt[t] columns (the other columns need not be written), rewritten in place as (T,Kc) with Kc = max(1, max_t cnt[t]): the same expert
 * and gate at column j < cnt[t], claim 0 (expert 0, gate 0) after it. Sets c->K = Kc and returns
 * the previous K, which the caller restores after moe_claims_resolve. The claims' order, token
 * by token and rank by rank, is unchanged, so every claim order resolves them to the same plan
 * (unclaimed columns are skipped everywhere). */
int moe_ranked_compact(moe_claims *c, int n, const int *cnt);

#endif
