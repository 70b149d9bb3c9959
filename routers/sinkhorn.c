/* sinkhorn.c: the `sinkhorn` router (Clark et al. 2022, unified scaling laws; Megatron-LM's
 * sinkhorn load balancing), ROUTING.md section 3. Fills moe_router_sinkhorn and owns
 * moe_sinkhorn_balance (sinkhorn.h).
 *
 *   selection  top-k per token of the Sinkhorn-balanced matrix B = diag(d0) exp(L - rowmax)
 *              diag(d1) (columns summing to 1/E, rows to 1/n), run to convergence: the relative
 *              change of the column scalings d1 below opts.sinkhorn_tol (default 1e-9), at most
 *              MOE_SINKHORN_MAX_ITER = 10000 iterations, an error otherwise. The row scaling
 *              does not change a row's order, so the key is K[t,e] * d1[e]; ties to the lower
 *              expert (stable sort).
 *   gate       from the raw logits, as Megatron: sigmoid(L[t,e]) for k = 1; for k > 1 the full
 *              softmax p[t,e] of the chosen experts (not renormalised).
 *   capacity   dropless unless a capacity factor or an explicit capacity is given (then C from
 *              the formula with this k and claims in opts.order through claims.c, with
 *              renormalize as given); opts.dropless forces dropless.
 *   statistics assigned_load and importance from the claims (claims.c), aux_loss = 0.
 * Default k = 1 (Clark et al.'s S-BASE and Megatron's default). Megatron stops at a mean
 * absolute change of d1 below 1e-4 in fp32; moesim uses the stricter relative tolerance above.
 */
#include "moe.h"
#include "claims.h"
#include "sinkhorn.h"

#include <math.h>
#include <stdlib.h>

/* ---- balancing ---- */

int moe_sinkhorn_balance(const double *L, int n, int E, double tol, int max_iter, double *K,
                         double *d0, double *d1, double *colsum, int *iters)
{
    for (int t = 0; t < n; t++) {
        const double *lt = L + (size_t)t * E;
        double *kt = K + (size_t)t * E, mx = lt[0];
        for (int e = 1; e < E; e++)
            if (lt[e] > mx)
                mx = lt[e];
        for (int e = 0; e < E; e++)
            kt[e] = exp(lt[e] - mx);
    }
    for (int e = 0; e < E; e++)
        d1[e] = 1.0;
    for (int it = 1; it <= max_iter; it++) {
        /* rows: d0[t] = 1 / (n * (K d1)[t]); columns: colsum = K^T d0, row by row */
        for (int e = 0; e < E; e++)
            colsum[e] = 0.0;
        for (int t = 0; t < n; t++) {
            const double *kt = K + (size_t)t * E;
            double s = 0.0;
            for (int e = 0; e < E; e++)
                s += kt[e] * d1[e];
            d0[t] = 1.0 / ((double)n * s);
            for (int e = 0; e < E; e++)
                colsum[e] += d0[t] * kt[e];
        }
        double delta = 0.0;
        for (int e = 0; e < E; e++) {
            double nd = 1.0 / ((double)E * colsum[e]);
            if (!(colsum[e] > 0.0) || !isfinite(nd))
                return moe_fail(MOE_EINPUT, "logits that differ by more than ~700 within a row "
                                "leave an expert without mass; rescale the logits",
                                "sinkhorn: expert %d gets no mass (column sum %g, iteration %d)",
                                e, colsum[e], it);
            double ch = fabs(nd - d1[e]) / nd;
            if (ch > delta)
                delta = ch;
            d1[e] = nd;
        }
        if (delta < tol) {
            if (iters)
                *iters = it;
            return MOE_OK;
        }
    }
    return moe_fail(MOE_EINPUT, "raise sinkhorn_tol, or check the logits for extreme values",
                    "sinkhorn did not converge to relative tolerance %g in %d iterations "
                    "(sinkhorn_tol)", tol, max_iter);
}

/* ---- workspace ---- */

typedef struct {
    moe_claims *cl;
    double *K;      /* (T,E) exp(L - rowmax) */
    double *d0;     /* (T) row scalings */
    double *d1;     /* (E) column scalings */
    double *colsum; /* (E) scratch */
    double *key;    /* (E) selection key of one token: K[t,e] * d1[e] */
    int iters;      /* iterations of the last balancing */
} sinkhorn_ws;

static void sinkhorn_free(moe_router *r)
{
    sinkhorn_ws *w = r->ws;
    if (!w)
        return;
    moe_claims_free(w->cl);
    free(w->K);
    free(w->d0);
    free(w->d1);
    free(w->colsum);
    free(w->key);
    free(w);
    r->ws = NULL;
}

static int sinkhorn_alloc(moe_router *r)
{
    if (!(r->opts.sinkhorn_tol > 0.0))
        return moe_fail(MOE_EINVAL, NULL, "sinkhorn_tol must be > 0 (got %g)",
                        r->opts.sinkhorn_tol);
    sinkhorn_ws *w = calloc(1, sizeof *w);
    if (!w)
        return moe_fail(MOE_ENOMEM, NULL, "out of memory (router sinkhorn)");
    r->ws = w;
    const size_t n = (size_t)r->n_max, E = (size_t)r->E;
    w->cl = moe_claims_alloc(r->n_max, r->k, r->E, 1);
    w->K = malloc(n * E * sizeof *w->K);
    w->d0 = malloc(n * sizeof *w->d0);
    w->d1 = malloc(E * sizeof *w->d1);
    w->colsum = malloc(E * sizeof *w->colsum);
    w->key = malloc(E * sizeof *w->key);
    if (!w->cl || !w->K || !w->d0 || !w->d1 || !w->colsum || !w->key) {
        sinkhorn_free(r);
        return moe_fail(MOE_ENOMEM, "use fewer tokens per routing group",
                        "out of memory (sinkhorn workspace for %d tokens x %d experts)",
                        r->n_max, r->E);
    }
    return MOE_OK;
}

/* ---- routing ---- */

static int sinkhorn_route(moe_router *r, const moe_route_in *in, moe_plan *plan)
{
    sinkhorn_ws *w = r->ws;
    moe_claims *cl = w->cl;
    const moe_route_opts *o = &r->opts;
    const int n = in->n, E = r->E, k = r->k;
    int rc = moe_sinkhorn_balance(in->logits, n, E, o->sinkhorn_tol, MOE_SINKHORN_MAX_ITER,
                                  w->K, w->d0, w->d1, w->colsum, &w->iters);
    if (rc)
        return rc;
    if ((rc = moe_claims_softmax(cl, in->logits, n, plan)))
        return rc;
    for (int t = 0; t < n; t++) {
        const double *kt = w->K + (size_t)t * E, *lt = in->logits + (size_t)t * E;
        for (int e = 0; e < E; e++)
            w->key[e] = kt[e] * w->d1[e];
        moe_claims_topk(w->key, E, k, cl->expert + (size_t)t * k, cl->gate + (size_t)t * k);
        for (int j = 0; j < k; j++) {
            const size_t i = (size_t)t * k + j;
            const int e = cl->expert[i];
            cl->gate[i] = k == 1 ? 1.0 / (1.0 + exp(-lt[e])) : cl->p[(size_t)t * E + e];
            cl->claim[i] = 1;
        }
    }
    const int limited = !o->dropless && (o->cf_set || o->capacity >= 0);
    long C = 0;
    if (limited && (rc = moe_capacity(o, k, n, E, &C)))
        return rc;
    cl->rts_u = in->rts_u; /* order rts */
    if ((rc = moe_claims_resolve(cl, n, o->order, C, !limited, o->renormalize, plan)))
        return rc;
    plan->aux_loss = 0.0;
    return MOE_OK;
}

const moe_router_type moe_router_sinkhorn = {
    "sinkhorn",
    "Sinkhorn-balanced top-k (Clark 2022, Megatron), converged to sinkhorn_tol (1e-9 rel.)",
    MOE_RF_HAS_DROPLESS,
    1,
    sinkhorn_alloc,
    sinkhorn_free,
    sinkhorn_route,
    NULL,
};
