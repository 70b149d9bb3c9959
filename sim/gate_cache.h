/* gate_cache.h: the batches of a sweep with their gate logits, computed once and shared by every
 * point that routes the same batch.
 *
 * A batch and its logits (T,M) = x (T,D) Wg (D,M) are determined by the source (its name and
 * canonical parameter text), the tokens T, the width D, the logit columns M, the seed and the
 * batch number: the source's tokens come from (seed, MOE_STREAM_TOKENS + 16 b), its gate Wg from
 * the seed, and the gate routine gives the same bits whatever the thread count (gate.h). That
 * tuple is the key. The points of a sweep that differ only in router, capacity factor, expert
 * width f, activation or shared experts share it, so a sweep of R routers x C capacity factors
 * draws each batch and runs its gate once instead of R x C times.
 *
 * Memory: an entry holds x (T,D) float, ids (T) int64 and logits (T,M) double, T (4D + 8 + 8M)
 * bytes (2.42 GB at T = 2^20, D = 64, M = 256). The cache holds at most max_bytes (default: a
 * quarter of the physical memory); the least recently used entries are dropped to make room,
 * and a batch larger than max_bytes is not cached (the point then draws it and runs its gate
 * itself, as without a cache). Batches that bring their own logits or expert choices (recorded
 * sources) are not cached.
 *
 * The cache also keeps one memo of a router's capacity-free work on one of its batches
 * (route_memo.h): the points that route the same batch with the same router and options except
 * the capacity ones (a sweep's capacity factors, innermost) run only their capacity part after
 * the first. It is freed with the batch it belongs to, or when a route of another key replaces
 * it; its memory (one router workspace) comes on top of max_bytes. Likewise a memo of the
 * anchor metrics' sums over a batch's rows (anchor_memo.h), which do not depend on the capacity
 * either: T doubles per key, a few keys.
 */
#ifndef MOE_GATE_CACHE_H
#define MOE_GATE_CACHE_H

#include "point.h"
#include "source.h"

typedef struct moe_gate_cache moe_gate_cache;

/* A cache of at most max_bytes; max_bytes <= 0: a quarter of the physical memory. NULL (reported)
 * when out of memory. */
moe_gate_cache *moe_gate_cache_alloc(double max_bytes);
void moe_gate_cache_free(moe_gate_cache *c); /* NULL is a no-op */

/* Batch number index of point pt, whose source src is open: *out the batch and *logits its gate
 * output (T,M) computed by moe_pipeline_gate_stage with the source's gate, in *gate_s seconds
 * (the time measured when it was computed), from the cache or drawn and computed now and kept.
 * *logits is NULL when the batch is not cached (it brings its own logits or choices, does not
 * have the point's shape, or does not fit): *out is then the source's batch, to run as usual.
 * Valid until the next call. */
int moe_gate_cache_batch(moe_gate_cache *c, const moe_point *pt, moe_source *src, int index,
                         moe_batch *out, const double **logits, double *gate_s);

/* What the cache did: batches computed (and kept), batches served from the cache, the bytes
 * held at most, the bound. */
typedef struct {
    long computed, reused;
    double peak_bytes, max_bytes;
    long memo_hits, memo_records; /* routes that reused / recorded capacity-free work */
    long anchor_hits, anchor_records; /* anchor passes that reused / kept their sums */
    long z_hits, z_records;           /* z-loss sums over the rows reused / kept */
} moe_gate_cache_stats;
moe_gate_cache_stats moe_gate_cache_get_stats(const moe_gate_cache *c);

/* The cache's memo of capacity-free routing work (route_memo.h) and in *batch the number of the
 * cached batch whose logits are `logits` (never reused for another batch), or 0 when they are
 * not the cache's. */
typedef struct moe_route_memo moe_route_memo;
moe_route_memo *moe_gate_cache_memo(moe_gate_cache *c, const double *logits,
                                    unsigned long *batch);
/* The cache's memo of the anchor metrics' sums over its batches' rows (anchor_memo.h), keyed
 * by the batch numbers moe_gate_cache_memo gives; a batch's keys are dropped with it. */
typedef struct moe_anchor_memo moe_anchor_memo;
moe_anchor_memo *moe_gate_cache_anchor_memo(moe_gate_cache *c);

#endif
