/* dense_soft_ref.h: the previous implementations of the dense and soft_moe routers' route
 * functions, kept as the references that the current ones (routers/dense.c, routers/soft_moe.c)
 * are compared with bit for bit.
 *
 * Origin: dense_route of routers/dense.c and soft_route of routers/soft_moe.c at commit 150f3a2,
 * copied with their loops unchanged (one thread: moe_softmax of every row, for soft_moe also of
 * every column gathered, moe_plan_push of every entry); the workspace they took from the router
 * is allocated here per call. They keep no logsumexps (plan->lse_of stays NULL), as that code
 * did, so the metrics of their plans take every softmax and logsumexp themselves. The plan is
 * reset here as moe_router_route resets it. Include after moe.h. */
#ifndef MOE_DENSE_SOFT_REF_H
#define MOE_DENSE_SOFT_REF_H

#include <stdlib.h>

/* logits (T,E) -> plan with T*E entries, token-major. */
static int ref_dense_route(const double *logits, int n, int E, moe_plan *plan)
{
    int rc = moe_plan_reset(plan, n, E, E);
    double *p = malloc((size_t)E * sizeof(double)); /* (E) p of one token */
    if (rc || !p) {
        free(p);
        return rc ? rc : MOE_ENOMEM;
    }
    plan->k = E;
    plan->capacity = n;
    plan->aux_loss = 0.0;
    for (int t = 0; t < n && !rc; t++) {
        moe_softmax(logits + (size_t)t * E, E, p);
        for (int e = 0; e < E && !rc; e++) {
            rc = moe_plan_push(plan, t, e, t, 1.0, p[e]);
            plan->importance[e] += p[e];
        }
    }
    for (int e = 0; e < E; e++)
        plan->assigned_load[e] = n;
    plan->n_claims = (long)n * E;
    free(p);
    return rc;
}

/* logits (T,M), M = E*P -> plan with T*M entries, token-major. */
static int ref_soft_route(const double *logits, int n, int E, int P, moe_plan *plan)
{
    const int M = E * P;
    int rc = moe_plan_reset(plan, n, E, M);
    double *D = malloc((size_t)n * M * sizeof *D), *W = malloc((size_t)M * sizeof *W);
    double *col = malloc((size_t)n * sizeof *col), *dcol = malloc((size_t)n * sizeof *dcol);
    if (rc || !D || !W || !col || !dcol) {
        free(D), free(W), free(col), free(dcol);
        return rc ? rc : MOE_ENOMEM;
    }
    /* dispatch: softmax over tokens, one column at a time */
    for (int j = 0; j < M; j++) {
        for (int t = 0; t < n; t++)
            col[t] = logits[(size_t)t * M + j];
        moe_softmax(col, n, dcol);
        for (int t = 0; t < n; t++)
            D[(size_t)t * M + j] = dcol[t];
    }
    plan->k = 0;
    plan->dense = 1;
    plan->capacity = P;
    plan->aux_loss = 0.0;
    for (int t = 0; t < n && !rc; t++) {
        moe_softmax(logits + (size_t)t * M, M, W); /* combine over all columns */
        for (int j = 0; j < M && !rc; j++) {
            rc = moe_plan_push(plan, t, j / P, j % P, D[(size_t)t * M + j], W[j]);
            plan->importance[j / P] += W[j];
        }
    }
    for (int e = 0; e < E; e++)
        plan->assigned_load[e] = P;
    plan->n_claims = (long)plan->n_entries;
    free(D), free(W), free(col), free(dcol);
    return rc;
}

#endif
