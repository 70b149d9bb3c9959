/* topk.c: the `topk` router (Shazeer et al. 2017, noisy top-k gating), ROUTING.md section 3.
 * Fills moe_router_topk: the k largest logits per token (ties to the lower expert), gate =
 * softmax over those k logits only; optional gate noise noise_std * N(0,1) added to every logit
 * before selection (the gate then uses the noisy logits, KeepTopK(H(x)) then softmax);
 * capacity with this k; aux_loss = E/(k*n) * sum_e assigned_e * mean_t p[t,e] with p the full
 * softmax of the un-noised logits (also the p of orders bpr and probs). */
#include "moe.h"
#include "claims.h"

#include <gsl/gsl_randist.h>
#include <stdlib.h>

typedef struct {
    moe_claims *cl;
    double *row;  /* (E) the token's (noisy) logits */
    int *idx;     /* (E) argsort of row */
    int *tmp;     /* (E) argsort scratch */
    double *sel;  /* (K) selected logits */
    double *g;    /* (K) softmax of sel */
} topk_ws;

/* ---- workspace ---- */

static void topk_free(moe_router *r)
{
    topk_ws *w = r->ws;
    if (!w)
        return;
    moe_claims_free(w->cl);
    free(w->row);
    free(w->idx);
    free(w->tmp);
    free(w->sel);
    free(w->g);
    free(w);
    r->ws = NULL;
}

static int topk_alloc(moe_router *r)
{
    topk_ws *w = calloc(1, sizeof *w);
    if (!w)
        return moe_fail(MOE_ENOMEM, NULL, "out of memory (router topk)");
    r->ws = w;
    w->cl = moe_claims_alloc(r->n_max, r->k, r->E, 1);
    w->row = malloc((size_t)r->E * sizeof *w->row);
    w->idx = malloc((size_t)r->E * sizeof *w->idx);
    w->tmp = malloc((size_t)r->E * sizeof *w->tmp);
    w->sel = malloc((size_t)r->k * sizeof *w->sel);
    w->g = malloc((size_t)r->k * sizeof *w->g);
    if (!w->cl || !w->row || !w->idx || !w->tmp || !w->sel || !w->g) {
        topk_free(r);
        return moe_fail(MOE_ENOMEM, NULL, "out of memory (router topk, %d tokens)", r->n_max);
    }
    return MOE_OK;
}

/* ---- routing ---- */

static int topk_route(moe_router *r, const moe_route_in *in, moe_plan *plan)
{
    topk_ws *w = r->ws;
    moe_claims *cl = w->cl;
    const int n = in->n, E = r->E, k = r->k;
    const double sd = r->opts.noise_std;
    if (sd > 0.0 && !in->rng)
        return moe_fail(MOE_EINVAL, "give a seed for the gate noise",
                        "topk with noise_std %g needs a random generator (noise_std)", sd);
    long C = 0;
    if (!r->opts.dropless) {
        int rc = moe_capacity(&r->opts, k, n, E, &C);
        if (rc)
            return rc;
    }
    moe_claims_softmax(cl, in->logits, n);
    for (int t = 0; t < n; t++) {
        /* row (E) = logits[t,:] (+ noise, drawn in token then expert order) */
        const double *lt = in->logits + (size_t)t * E;
        for (int e = 0; e < E; e++)
            w->row[e] = sd > 0.0 ? lt[e] + sd * gsl_ran_gaussian_ziggurat(in->rng, 1.0) : lt[e];
        moe_argsort_desc(w->row, E, w->idx, w->tmp); /* stable: ties to the lower expert */
        for (int j = 0; j < k; j++)
            w->sel[j] = w->row[w->idx[j]];
        moe_softmax(w->sel, k, w->g);
#ifdef MOESIM_PERTURB_TOPK
        /* Test build only (Makefile $(B)/moesim-perturb, tests/t_regression.sh): a deliberately
         * perturbed router, its first gate nudged by 1e-3, that `moesim compare` must catch. */
        w->g[0] += 1e-3;
#endif
        for (int j = 0; j < k; j++) {
            size_t i = (size_t)t * k + j;
            cl->expert[i] = w->idx[j];
            cl->gate[i] = w->g[j];
            cl->claim[i] = 1;
        }
    }
    int rc = moe_claims_resolve(cl, n, r->opts.order, C, r->opts.dropless, r->opts.renormalize,
                                plan);
    if (rc)
        return rc;
    double s = 0.0;
    for (int e = 0; e < E; e++)
        s += (double)plan->assigned_load[e] * cl->pmean[e];
    plan->aux_loss = (double)E / ((double)k * n) * s;
    return MOE_OK;
}

const moe_router_type moe_router_topk = {
    "topk",
    "noisy top-k gating (Shazeer 2017): softmax over the k largest logits",
    MOE_RF_USES_RNG | MOE_RF_HAS_DROPLESS,
    2,
    topk_alloc,
    topk_free,
    topk_route,
    NULL,
};
