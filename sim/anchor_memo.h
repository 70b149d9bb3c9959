/* anchor_memo.h: the anchor metrics' sums over one batch's rows (and the z-loss's), kept for
 * the next points that take them again from the same inputs.
 *
 * The anchor losses seq_aux_loss and importance_loss_vmoe (metrics_anchor.h) sum per-token terms
 * over every row of the logits (T,E): each row's softmax (from the router's logsumexps when the
 * plan kept them) and its Megatron top-k. None of it depends on the capacity: in a sweep the
 * points that route one cached batch (gate_cache.h) with one router at several capacity factors
 * take the same sums again at every point. A memo keeps the sums of the last few keys; the
 * anchor pass of a point whose key matches takes them instead of reading every row again. The
 * values are the same bits: they are the sums the pass computed from the same inputs.
 *
 * The key is every input of that pass (metrics_anchor.c, anc_sums): the batch (the logits'
 * address and the number the gate cache gives each batch it holds, never reused), tokens n,
 * experts E, the experts per token k of the plan, the tokens per sequence and per routing group,
 * the score function of the metrics, whether the plan's logsumexps of these logits are used and
 * then their values (compared in full), and which sums are shared. The router itself is not
 * part of the key: the pass reads only the inputs above. Not kept: plans with gate noise (their
 * terms read the noisy logits), passes whose logits are not a cached batch (batch 0), and the
 * sums the router's own rows pass gave (they are already free: moe_metrics_attach).
 *
 * The z-loss (mean over rows of the squared logsumexp) likewise: plans that keep no logsumexps
 * of these logits (hash, for one) take every row's again at every point; the memo keeps the sum
 * per batch.
 *
 * Memory: the keys' logsumexps, T doubles per kept key (8 MiB at T = 2^20), at most
 * MOE_ANCHOR_MEMO_KEYS keys. The gate cache owns one memo and drops a batch's keys with it. */
#ifndef MOE_ANCHOR_MEMO_H
#define MOE_ANCHOR_MEMO_H

#include "moe.h"

enum { MOE_ANCHOR_MEMO_KEYS = 4 };

typedef struct moe_anchor_memo moe_anchor_memo;

/* The inputs of one anchor pass (see above); lse (n) is read only when use_lse. */
typedef struct {
    const double *logits;
    unsigned long batch;
    int n, E, k, seq, group, score, own, use_lse, shared;
    const double *lse;
} moe_anchor_key;

/* What the pass gives: the sums over sequences and over routing groups, the groups counted. */
typedef struct {
    double seq_sum, imp_sum;
    int ngroups;
} moe_anchor_sums;

/* An empty memo; NULL (reported) when out of memory. */
moe_anchor_memo *moe_anchor_memo_alloc(void);
void moe_anchor_memo_free(moe_anchor_memo *m); /* NULL is a no-op */

/* 1 and *out the sums kept for key k, or 0 (nothing kept for it; m NULL or k->batch 0). */
int moe_anchor_memo_find(moe_anchor_memo *m, const moe_anchor_key *k, moe_anchor_sums *out);
/* Keep s for key k, in place of the least recently used key when full (nothing when m is NULL
 * or k->batch is 0; out of memory, nothing is kept). */
void moe_anchor_memo_put(moe_anchor_memo *m, const moe_anchor_key *k, const moe_anchor_sums *s);
/* Drop every key of batch number `batch` (the gate cache drops the batch). */
void moe_anchor_memo_drop(moe_anchor_memo *m, unsigned long batch);

/* The z-loss's sum over the rows of the squared logsumexps of logits (n,M), batch number batch,
 * when the plan kept no logsumexps of its own (moe_par_sum_lse_sq): the same keys (but the
 * rows' terms: logits, batch, n, M) and the same rules as the sums above. find: 1 and *z, or 0;
 * put: keep z. */
int moe_anchor_memo_find_z(moe_anchor_memo *m, const double *logits, unsigned long batch, int n,
                           int M, double *z);
void moe_anchor_memo_put_z(moe_anchor_memo *m, const double *logits, unsigned long batch, int n,
                           int M, double z);

/* Passes whose sums were found (hits) and kept (records); the same for the z-loss's sums. */
typedef struct {
    long hits, records, z_hits, z_records;
} moe_anchor_memo_stats;
moe_anchor_memo_stats moe_anchor_memo_get_stats(const moe_anchor_memo *m);

/* moe_metrics_compute (moe.h) whose anchor pass uses memo m for logits that are the gate cache's
 * batch number `batch` (m NULL or batch 0: moe_metrics_compute itself). */
int moe_metrics_compute_memo(const moe_plan *plan, const double *logits, int d, int f, int act,
                             int gate_computed, moe_anchor_memo *m, unsigned long batch,
                             moe_metrics *mt);

#endif
