/* route_memo.h: a router's capacity-free work on one batch, kept for the next point that routes
 * the same logits with the same options except the capacity ones.
 *
 * In a sweep the points that differ only in the capacity factor route the same cached logits
 * (gate_cache.h) one after the other. For the routers flagged MOE_RF_MEMO (relu, topp,
 * sinkhorn, expert_choice) nearly all of a route does not depend on the capacity: each token's
 * claims (experts, gates, ranks), the softmax rows and their statistics, sinkhorn's balancing,
 * expert_choice's candidate lists (built for a few times the capacity of the route that
 * records them, moe_route_memo_recording, and built again when a later one needs more).
 * Those routers split their route in two: the capacity-free part, whose results stay in the
 * router's workspace and the plan, and the capacity part (capacity C, slots, entries), which
 * only reads them. A memo holds one such workspace with the plan's results of the
 * capacity-free part (assigned loads, importance, claims, each row's logsumexp, the metrics'
 * sums over the softmax rows: moe_metrics_attach) and the key they belong to; a router whose
 * key matches borrows the workspace and runs only its capacity part. Plans and metrics are the same bits as a full
 * route's.
 *
 * The key: the router type, its options (as it runs with them: moe_route_opts_effective) except
 * the capacity options (capacity_factor, capacity_factor_eval, capacity, min_capacity, rounding,
 * capacity_multiple, dropless) and those read only by the capacity part or the metrics of the
 * plan (renormalize, pad_to_capacity); the tokens n, the router's n_max and columns m; the batch
 * (the logits' address and the number the gate cache gives each batch it holds, never reused);
 * whether a metrics observer reads the rows. No memo for routers that draw random numbers
 * (moe_router_needs_rng), routing groups (group_size < n), the claim orders bpr and rts (their
 * keys are made or drawn per route), or a batch that brings its own logits.
 *
 * Ownership: a point's pipeline records into the memo when its route misses (the previous
 * workspace is freed at once: one memo at a time) and hands its router's workspace to the memo
 * when it is freed (moe_route_memo_keep); a later point that hits borrows that workspace for its
 * route and gives it back. Memory: the memo holds one router workspace (relu at 2^20 tokens x
 * 256 experts: the claims made, 12 bytes each, and the rows pass's buffers; sinkhorn: K (T,E)
 * doubles) and T + 2E doubles, while the hitting point's own workspace is allocated but never
 * touched. */
#ifndef MOE_ROUTE_MEMO_H
#define MOE_ROUTE_MEMO_H

#include "moe.h"

typedef struct moe_route_memo moe_route_memo;

/* An empty memo; NULL (reported) when out of memory. */
moe_route_memo *moe_route_memo_alloc(void);
void moe_route_memo_free(moe_route_memo *m); /* NULL is a no-op */
/* Drop what the memo holds (the workspace is freed). */
void moe_route_memo_clear(moe_route_memo *m);
/* The batch number of what the memo holds or records (0: none). */
unsigned long moe_route_memo_batch(const moe_route_memo *m);

/* What memos did: routes that reused the work, routes that recorded it. */
typedef struct {
    long hits, records;
} moe_route_memo_stats;
moe_route_memo_stats moe_route_memo_get_stats(const moe_route_memo *m);

/* ---- the pipeline's side ---- */

/* Before router r routes in into plan for batch number `batch` (> 0) of the cache: a hit lends
 * r the memo's workspace (r routes only its capacity part), a miss frees what the memo holds
 * and lets r record its capacity-free results; nothing when r or the input has no memo (see
 * above; what the memo holds is then freed). An empty plan also gets the entry buffer the
 * memo keeps when that is larger than its own: the pages a previous point's plan wrote (a
 * variable-k router's plan grows with the capacity factor, and fresh pages cost a page fault
 * each on first touch). */
void moe_route_memo_begin(moe_route_memo *m, moe_router *r, const moe_route_in *in,
                          moe_plan *plan, unsigned long batch);
/* After that route (rc its status): the lent workspace goes back to the memo. */
void moe_route_memo_end(moe_route_memo *m, moe_router *r, int rc);
/* Router r and its plan are about to be freed: when r's workspace holds the work its last route
 * recorded, the memo takes it (r->ws becomes NULL); while the memo holds work, it also takes
 * plan's entry buffer when larger than the one it keeps (plan's entries become NULL). */
void moe_route_memo_keep(moe_route_memo *m, moe_router *r, moe_plan *plan);

/* ---- the router's side (routers flagged MOE_RF_MEMO, inside their route) ---- */

/* 1 when r's workspace already holds the capacity-free work of this route: plan (just reset)
 * then has its results (assigned_load, importance, n_claims, lse, the rows observer's sums) and
 * room for an entry per claim, and the router runs only its capacity part; else 0. */
int moe_route_memo_reuse(moe_router *r, moe_plan *plan);
/* 1 when this route of r records its capacity-free work (moe_route_memo_record will keep it):
 * a router may then make that work serve more capacities than its own. */
int moe_route_memo_recording(const moe_router *r);
/* After the capacity-free part of a full route: keep plan's results of it for later hits and
 * give plan room for an entry per claim (nothing unless the pipeline asked to record). Out of
 * memory, the memo is dropped silently: the route itself is unaffected. */
void moe_route_memo_record(moe_router *r, moe_plan *plan);

#endif
