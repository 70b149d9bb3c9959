/* claims_var.h: the claims of the variable-k routers (topp, relu), whose tokens each make their
 * own number of claims (0 to K), stored compactly, and their resolution into the plan on the
 * routers' threads: the plan, slots, capacity and claim statistics of moe_claims_resolve
 * (claims.h) on the same claims, bit for bit, whatever the number of threads.
 *
 * Storage: the claims of token t are cnt[t] consecutive places of the store (expert, gate), in
 * rank order, from at[t]; a token takes its places when its claims are known (an atomic
 * counter), so the store holds only the claims made (its capacity n_max * K is address space,
 * touched only as far as the claims go). The rows pass (moe_claims_rows on the workspace cl)
 * calls the router's row() per token, which puts the token's claims; its adding pass, in token
 * order, adds the claim statistics (assigned_load, importance, n_claims) and first[t], the
 * claims of the tokens before t.
 *
 * Resolution: the capacity C (dropless: the largest load), then the slots in the claim order
 * (docs/routing.md): choice_major and bpr rank by rank, token_major token by token, probs, rts
 * and gate by key per expert; the plan is reserved once at its final size (sum over experts of
 * min(load, C) entries) and written in place by the threads, token-major (by token, then rank),
 * weights renormalised per token over its kept claims when asked. */
#ifndef MOE_CLAIMS_VAR_H
#define MOE_CLAIMS_VAR_H

#include "claims.h"

#include <stdatomic.h>

typedef struct {
    int n_max, E, K;  /* K: the most claims of one token */
    long cap;         /* places of the store: n_max * K */
    moe_claims *cl;   /* the rows pass: softmax, pmean, rowmax, bpr keys (claims.h); its p
                       * holds p_cap doubles, as many as the last rows pass needed */
    size_t p_cap;
    int32_t *expert;  /* (cap) store: expert of each claim */
    double *gate;     /* (cap) store: its gate (the combine weight before renormalisation) */
    long *at;         /* (T) first place of token t's claims */
    int *cnt;         /* (T) claims of token t */
    long *first;      /* (T+1) claims of the tokens before t (adding pass) */
    int kmax;         /* the most claims of one token in the last pass */
    atomic_long used; /* places taken */
    /* scratch of the orders that do not number claims in token order, allocated on first use:
     * bpr, probs, rts, gate */
    int32_t *slot;    /* (cap) slot of the claim at each place, -1 = dropped */
    long *list;       /* (cap) keyed orders: places grouped by expert, token order within */
    double *key;      /* (cap) keyed orders: their keys */
    /* the claims per (part, rank, expert) of the last resolution, which depend on the rows
     * pass and the parts but not on the capacity: the next resolution of the same claims (a
     * route memo's next capacity factor) starts from them */
    long *counts;     /* (counts_len) or NULL */
    size_t counts_len, counts_cap;
    int counts_np, counts_kr, counts_perm; /* their parts, ranks, visiting order (bpr: 1) */
} moe_claims_var;

/* Workspace for up to n_max tokens of at most K claims each on E experts (with the full
 * softmax rows of claims.h). NULL on out-of-memory (after moe_fail). */
moe_claims_var *moe_claims_var_alloc(int n_max, int K, int E);
void moe_claims_var_free(moe_claims_var *v); /* NULL is a no-op */

/* The rows pass over n tokens (moe_claims_rows with the claim statistics of the stored claims),
 * for claim order `order` (moe_claims_scratch_p) and rts draws rts_u (or NULL); row() must put
 * every token's claims (moe_claims_var_put or _take), exactly once. */
int moe_claims_var_rows(moe_claims_var *v, const double *logits, int n, int order,
                        const double *rts_u, moe_claims_row_fn row, void *ctx, moe_plan *plan);

/* The rows pass's results are in v from an earlier pass over the same logits with the same
 * order and row() (a memo of the capacity-free work, route_memo.h) and the plan has its claim
 * statistics back: moe_claims_var_resolve may resolve them again, under any capacity. */
static inline void moe_claims_var_reused(moe_claims_var *v) { v->cl->stats_done = 1; }

/* m places for token t's claims (0 <= m <= K), from a row(): the index of the first. */
static inline long moe_claims_var_take(moe_claims_var *v, int t, int m)
{
    const long a = atomic_fetch_add_explicit(&v->used, m, memory_order_relaxed);
    v->at[t] = a;
    v->cnt[t] = m;
    return a;
}

/* Token t's claims: m experts ex (m) with gates g (m), in rank order. */
void moe_claims_var_put(moe_claims_var *v, int t, int m, const int32_t *ex, const double *g);

/* After the rows pass on the same n tokens: capacity (dropless unless o gives a capacity factor
 * or a capacity and o->dropless is not set; then C = moe_capacity(o, 1, claims, E)), the
 * claims in o's order, the entries and plan->capacity, rank_claims, rank_kept; aux_loss
 * untouched. */
int moe_claims_var_resolve(moe_claims_var *v, const moe_route_opts *o, int n, moe_plan *plan);

/* A variable-k router's claims and plan for the input in (aux_loss untouched): when r's
 * workspace holds the capacity-free work of these logits (a route memo's, route_memo.h), only
 * the resolution; else buffers(r) (the router's buffers on its first route: *v is the store
 * afterwards) and the rows pass with row(ctx, ...), recorded for the memo, then the resolution
 * under r's options. v: where r's workspace keeps its store. */
int moe_claims_var_route(moe_router *r, const moe_route_in *in, moe_claims_var **v,
                         int (*buffers)(moe_router *r), moe_claims_row_fn row, void *ctx,
                         moe_plan *plan);

#endif
