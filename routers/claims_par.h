/* claims_par.h: claim resolution on the routers' threads for the claim orders choice_major and
 * token_major (claims_par.c), used by moe_claims_resolve when more than one thread is worth it. */
#ifndef MOE_CLAIMS_PAR_H
#define MOE_CLAIMS_PAR_H

#include "claims.h"

enum { MOE_CLAIMS_PAR_MAX_K = 64 }; /* choices per token it takes */

/* moe_claims_resolve (claims.h) for order MOE_ORDER_CHOICE_MAJOR or MOE_ORDER_TOKEN_MAJOR and
 * c->K <= MOE_CLAIMS_PAR_MAX_K, after its argument checks: the same plan entries, slots,
 * capacity and statistics, bit for bit, whatever the number of threads. stats = 0: the claim
 * statistics (assigned_load, importance, n_claims) are already in the plan (rows pass). */
int moe_claims_resolve_par(moe_claims *c, int n, int order, long C, int dropless,
                           int renormalize, int stats, moe_plan *plan);

#endif
