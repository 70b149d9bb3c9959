/* soft_moe.c: the Soft MoE router (Puigcerver et al. 2023), docs/routing.md section 3.
 *
 * Logits have M = E*P columns (E = r->E, P = opts.slots_per_expert; moe_router_alloc checks
 * that P divides M); column j is slot (j mod P) of expert (j div P).
 *   dispatch D (T,M) = softmax over tokens, per column
 *   combine  W (T,M) = softmax over all M columns, per token
 * Every (token, column) pair is an entry (t, j/P, j%P, D[t,j], W[t,j]), token-major.
 * Nothing is dropped: plan->dense = 1, capacity = P, assigned_load[e] = P,
 * importance[e] = sum of W over all tokens and e's slots, n_claims = entries = T*M, k = 0.
 * Fills the moe_router_type interface of moe.h.
 */
#include "moe.h"

#include <stdlib.h>

/* ---- workspace ---- */

typedef struct {
    double *D;    /* (T,M) dispatch weights */
    double *W;    /* (M) combine weights of one token */
    double *col;  /* (T) logits of one column */
    double *dcol; /* (T) softmax of that column */
} soft_ws;

static void soft_free(moe_router *r)
{
    soft_ws *w = r->ws;
    if (!w)
        return;
    free(w->D);
    free(w->W);
    free(w->col);
    free(w->dcol);
    free(w);
    r->ws = NULL;
}

static int soft_alloc(moe_router *r)
{
    soft_ws *w = calloc(1, sizeof *w);
    if (!w)
        return moe_fail(MOE_ENOMEM, NULL, "out of memory (router soft_moe workspace)");
    r->ws = w;
    size_t n = (size_t)r->n_max, m = (size_t)r->m;
    w->D = malloc(n * m * sizeof *w->D);
    w->W = malloc(m * sizeof *w->W);
    w->col = malloc(n * sizeof *w->col);
    w->dcol = malloc(n * sizeof *w->dcol);
    if (!w->D || !w->W || !w->col || !w->dcol) {
        soft_free(r);
        return moe_fail(MOE_ENOMEM, "use fewer tokens per routing group",
                        "out of memory (soft_moe workspace for %d tokens x %d columns)",
                        r->n_max, r->m);
    }
    return MOE_OK;
}

/* ---- routing ---- */

/* logits (T,M) -> plan with T*M entries, token-major. */
static int soft_route(moe_router *r, const moe_route_in *in, moe_plan *plan)
{
    soft_ws *w = r->ws;
    const int n = in->n, M = r->m, P = M / r->E;

    /* dispatch: softmax over tokens, one column at a time */
    for (int j = 0; j < M; j++) {
        for (int t = 0; t < n; t++)
            w->col[t] = in->logits[(size_t)t * M + j];
        moe_softmax(w->col, n, w->dcol);
        for (int t = 0; t < n; t++)
            w->D[(size_t)t * M + j] = w->dcol[t];
    }

    plan->k = 0;
    plan->dense = 1;
    plan->capacity = P;
    plan->aux_loss = 0.0;
    for (int t = 0; t < n; t++) {
        moe_softmax(in->logits + (size_t)t * M, M, w->W); /* combine over all columns */
        for (int j = 0; j < M; j++) {
            int rc = moe_plan_push(plan, t, j / P, j % P, w->D[(size_t)t * M + j], w->W[j]);
            if (rc)
                return rc;
            plan->importance[j / P] += w->W[j];
        }
    }
    for (int e = 0; e < r->E; e++)
        plan->assigned_load[e] = P;
    plan->n_claims = (long)plan->n_entries;
    return MOE_OK;
}

const moe_router_type moe_router_soft_moe = {
    "soft_moe",
    "Soft MoE (Puigcerver et al. 2023): every token in every slot, dense weights",
    MOE_RF_DENSE,
    1,
    soft_alloc,
    soft_free,
    soft_route,
    NULL,
};
