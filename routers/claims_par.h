/* claims_par.h: claim resolution on the routers' threads (claims_par.c): every claim order, used
 * by moe_claims_resolve for the orders bpr, probs, rts and gate always (their selection replaces
 * a sort per expert) and for choice_major and token_major when more than one thread is worth
 * it. */
#ifndef MOE_CLAIMS_PAR_H
#define MOE_CLAIMS_PAR_H

#include "claims.h"

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

#endif
