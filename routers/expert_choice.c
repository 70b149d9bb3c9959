/* expert_choice.c: the expert choice router (Zhou et al. 2022), ROUTING.md section 3.
 *
 * S = softmax(L) per token; each expert takes its top C = ROUND(n * cf / E) tokens by S[:,e]
 * (moe_capacity with k = 1, capped at n; ties to the lower token index: stable sort).
 * slot = rank in that selection (0 = highest score, as flaxformer and V-MoE), dispatch 1,
 * combine S[t,e]. Entries in expert-major order (expert, then slot). A token may be taken
 * by 0..E experts. Claim-less statistics (ROUTING.md section 4): assigned_load[e] = C,
 * importance[e] = sum of e's combine weights, n_claims = entries, aux_loss = 0, k = 0.
 * Fills the moe_router_type interface of moe.h.
 */
#include "moe.h"

#include <stdlib.h>

/* ---- workspace ---- */

typedef struct {
    double *S;   /* (T,E) softmax scores */
    double *col; /* (T) scores of one expert */
    int *idx;    /* (T) token order by descending score */
    int *tmp;    /* (T) argsort scratch */
} ec_ws;

static void ec_free(moe_router *r)
{
    ec_ws *w = r->ws;
    if (!w)
        return;
    free(w->S);
    free(w->col);
    free(w->idx);
    free(w->tmp);
    free(w);
    r->ws = NULL;
}

static int ec_alloc(moe_router *r)
{
    ec_ws *w = calloc(1, sizeof *w);
    if (!w)
        return moe_fail(MOE_ENOMEM, NULL, "out of memory (router expert_choice workspace)");
    r->ws = w;
    size_t n = (size_t)r->n_max;
    w->S = malloc(n * (size_t)r->E * sizeof *w->S);
    w->col = malloc(n * sizeof *w->col);
    w->idx = malloc(n * sizeof *w->idx);
    w->tmp = malloc(n * sizeof *w->tmp);
    if (!w->S || !w->col || !w->idx || !w->tmp) {
        ec_free(r);
        return moe_fail(MOE_ENOMEM, "use fewer tokens per routing group",
                        "out of memory (expert_choice workspace for %d tokens x %d experts)",
                        r->n_max, r->E);
    }
    return MOE_OK;
}

/* ---- routing ---- */

/* logits (T,E) -> plan with E*C entries, expert-major. */
static int ec_route(moe_router *r, const moe_route_in *in, moe_plan *plan)
{
    ec_ws *w = r->ws;
    const int n = in->n, E = r->E;
    long C;
    int rc = moe_capacity(&r->opts, 1, n, E, &C);
    if (rc)
        return rc;
    if (C > n)
        C = n;

    for (int t = 0; t < n; t++)
        moe_softmax(in->logits + (size_t)t * E, E, w->S + (size_t)t * E);

    plan->k = 0;
    plan->capacity = C;
    plan->aux_loss = 0.0;
    for (int e = 0; e < E; e++) {
        for (int t = 0; t < n; t++)
            w->col[t] = w->S[(size_t)t * E + e];
        moe_argsort_desc(w->col, n, w->idx, w->tmp); /* ties: lower token first */
        double imp = 0.0;
        for (long s = 0; s < C; s++) {
            int t = w->idx[s];
            double g = w->col[t];
            rc = moe_plan_push(plan, t, e, (int32_t)s, 1.0, g);
            if (rc)
                return rc;
            imp += g;
        }
        plan->assigned_load[e] = C;
        plan->importance[e] = imp;
    }
    plan->n_claims = (long)plan->n_entries;
    return MOE_OK;
}

const moe_router_type moe_router_expert_choice = {
    "expert_choice",
    "expert choice (Zhou et al. 2022): each expert takes its top C tokens by softmax score",
    0,
    1,
    ec_alloc,
    ec_free,
    ec_route,
    NULL,
};
