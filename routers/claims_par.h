/* claims_par.h: claim resolution on the routers' threads (claims_par.c): every claim order, used
 * by moe_claims_resolve for the orders bpr, probs, rts and gate always (their selection replaces
 * a sort per expert) and for choice_major and token_major when more than one thread is worth
 * it. */
#ifndef MOE_CLAIMS_PAR_H
#define MOE_CLAIMS_PAR_H

#include "claims.h"
#include "par.h"

#include <stddef.h>

enum { MOE_CLAIMS_PAR_MAX_K = 64 }; /* choices per token of choice_major and token_major */

/* moe_claims_resolve (claims.h) after its argument checks, for any order (choice_major and
 * token_major only with c->K <= MOE_CLAIMS_PAR_MAX_K): the plan entries, slots, capacity and
 * statistics that claims.h defines, bit for bit, whatever the number of threads. stats = 0: the
 * claim statistics (assigned_load, importance, n_claims) are already in the plan (rows pass).
 * Keys of the orders probs, rts and gate are never NaN (finite logits, draws in (0,1)). */
int moe_claims_resolve_par(moe_claims *c, int n, int order, long C, int dropless,
                           int renormalize, int stats, moe_plan *plan);

/* Order bpr's visiting order of n tokens into c->order (T): the stable descending argsort of
 * each token's largest probability max_e p[t,e] (the keys the rows pass left in c->val, else
 * taken from c->p), on the routers' threads. Uses c->list, c->tmp (T). */
int moe_claims_order_bpr(moe_claims *c, int n);

/* The k-th largest (1 <= k <= len) of a[0..len), which it permutes (-0.0 equals +0.0). */
double moe_claims_kth_largest(double *a, long len, long k);

/* The entries of a resolution written by token parts (claims_par.c, claims_var.c): each part
 * counts the entries it keeps (kept[i]), the parts' entries are placed one after the other and
 * each part writes its own, token-major, with the claims and kept claims of ranks 0 and 1 it
 * met. */
typedef struct {
    int np;                                /* parts */
    size_t ent0[MOE_PAR_MAX];              /* first entry of each part */
    size_t kept[MOE_PAR_MAX];              /* entries of each part */
    long rank_claims[MOE_PAR_MAX][2], rank_kept[MOE_PAR_MAX][2];
    int obs;                               /* the parts show their entries to the plan's
                                            * entries observer (moe_claims_parts_write) */
} moe_claims_parts;

/* Part i's counts of ranks 0 and 1 (kept apart per part: no shared cache line in the loop). */
void moe_claims_parts_ranks(moe_claims_parts *p, int i, const long rc[2], const long rk[2]);

/* Places the parts' entries after the plan's (ent0 from kept), reserves room for them, runs
 * write(ctx, i, np) on the np parts (on the routers' threads), then adds the entries and the
 * rank counts to the plan. With observe, when the plan has no entries yet and its entries
 * observer (moe_plan.ents_begin) takes them, p->obs = 1 while write runs: each part then shows
 * the observer its entries by blocks (moe_claims_parts_seen), and the plan's ents_seen is set
 * after. MOE_ENOMEM when the plan cannot grow. */
int moe_claims_parts_write(moe_claims_parts *p, moe_plan *plan, void (*write)(void *, int, int),
                           void *ctx, int observe);

/* Tokens per block a part shows the entries observer, for K choices a token: about 32 KB of
 * entries, read again from the first-level cache or the next. */
static inline long moe_claims_parts_block(int K) { return K < 64 ? 1024 / K : 16; }

/* Part i of the parts p (tokens [lo, hi)) wrote the entries [a, b) of its tokens [t0, t1): shown
 * to plan's entries observer when p->obs. */
static inline void moe_claims_parts_seen(const moe_claims_parts *p, const moe_plan *plan, int i,
                                         long lo, long hi, long t0, long t1, const moe_entry *a,
                                         const moe_entry *b)
{
    if (p->obs)
        plan->ents_block(plan->ents_ctx, i, lo, hi, t0, t1, a, b);
}

#endif
