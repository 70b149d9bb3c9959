/* dense.c: the `dense` router (classic dense MoE, Jacobs et al. 1991 / Shazeer et al. 2017
 * without sparsity), docs/routing.md section 3. Fills moe_router_dense: every token goes to every
 * expert with combine weight p[t,e] = softmax(L[t,:])[e], dispatch 1, slot = the token index
 * (capacity n), k = E, nothing dropped. Entries are token-major (token, then expert).
 * Statistics: assigned_load[e] = kept_load[e] = n, importance[e] = sum_t p[t,e],
 * n_claims = n*E, aux_loss = 0. The plan is sparse-shaped (plan->dense = 0): the layer gathers
 * E*n rows by index, and its output is the dense mixture sum_e p[t,e] FFN_e(x_t) itself.
 * Capacity options do not apply and are ignored; k must be E or left unset. */
#include "moe.h"

#include <stdlib.h>

/* ---- workspace ---- */

static void dense_free(moe_router *r)
{
    free(r->ws);
    r->ws = NULL;
}

static int dense_alloc(moe_router *r)
{
    if (r->opts.k != 0 && r->opts.k != r->E)
        return moe_fail(MOE_EINPUT, "dense uses every expert: leave k unset or set k = E",
                        "dense needs k = E = %d, got k = %d (k)", r->E, r->opts.k);
    r->k = r->E;
    r->ws = malloc((size_t)r->E * sizeof(double)); /* (E) p of one token */
    if (!r->ws)
        return moe_fail(MOE_ENOMEM, NULL, "out of memory (router dense)");
    return MOE_OK;
}

/* ---- routing ---- */

/* logits (T,E) -> plan with T*E entries, token-major. */
static int dense_route(moe_router *r, const moe_route_in *in, moe_plan *plan)
{
    double *p = r->ws;
    const int n = in->n, E = r->E;
    plan->k = E;
    plan->capacity = n;
    plan->aux_loss = 0.0;
    for (int t = 0; t < n; t++) {
        moe_softmax(in->logits + (size_t)t * E, E, p);
        for (int e = 0; e < E; e++) {
            int rc = moe_plan_push(plan, t, e, t, 1.0, p[e]);
            if (rc)
                return rc;
            plan->importance[e] += p[e];
        }
    }
    for (int e = 0; e < E; e++)
        plan->assigned_load[e] = n;
    plan->n_claims = (long)n * E;
    return MOE_OK;
}

const moe_router_type moe_router_dense = {
    "dense",
    "dense MoE: every token to every expert, combine weight p = softmax(L)",
    MOE_RF_NO_CAPACITY | MOE_RF_ALL_EXPERTS,
    1, /* placeholder: the effective k is E (set in dense_alloc) */
    dense_alloc,
    dense_free,
    dense_route,
    NULL,
};
