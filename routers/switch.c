/* switch.c: the `switch` router (Fedus et al. 2022), ROUTING.md section 3. Fills
 * moe_router_switch: top-1 by logit (ties to the lower expert), gate = full-softmax p of the
 * chosen expert (not renormalised), capacity with k = 1,
 * aux_loss = E * sum_e f_e * P_e (f_e fraction of tokens whose first choice is e, before
 * capacity; P_e = mean_t p[t,e]). */
#include "moe.h"
#include "claims.h"

#include <stdlib.h>

/* ---- workspace ---- */

static void switch_free(moe_router *r)
{
    moe_claims_free(r->ws);
    r->ws = NULL;
}

static int switch_alloc(moe_router *r)
{
    if (r->opts.k != 0 && r->opts.k != 1)
        return moe_fail(MOE_EINPUT, "switch routes every token to one expert; use topk for k > 1",
                        "switch needs k = 1, got k = %d (k)", r->opts.k);
    r->ws = moe_claims_alloc(r->n_max, 1, r->E, 1);
    return r->ws ? MOE_OK : MOE_ENOMEM;
}

/* ---- routing ---- */

/* Token t: its first choice and gate (runs on the routers' threads, see claims.h). */
static void switch_row(void *ctx, int t, const double *lt, const double *pt)
{
    moe_claims *cl = ctx;
    int e = moe_claims_argmax(lt, cl->E, -1);
    cl->expert[t] = e;
    cl->gate[t] = pt[e];
    cl->claim[t] = 1;
}

static int switch_route(moe_router *r, const moe_route_in *in, moe_plan *plan)
{
    moe_claims *cl = r->ws;
    int rc = moe_claims_rows(cl, in->logits, in->n, switch_row, cl, plan);
    if (rc)
        return rc;
    /* aux_loss with f_e = (tokens whose first choice is e) / n */
    return moe_claims_finish(cl, &r->opts, in->n, MOE_CLAIMS_AUX_FIRST, plan);
}

const moe_router_type moe_router_switch = {
    "switch",
    "Switch Transformer top-1 (Fedus 2022): gate = softmax p of the chosen expert",
    MOE_RF_HAS_DROPLESS,
    1,
    switch_alloc,
    switch_free,
    switch_route,
    NULL,
};
