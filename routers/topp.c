/* topp.c: the `topp` router (dynamic top-p routing, Huang et al. 2024, "Harder Tasks Need More
 * Experts: Dynamic Routing in MoE Models"). Fills moe_router_topp: p = softmax(L) per token;
 * experts in descending p (ties to the lower expert) are taken until their cumulative p first
 * reaches top_p (cumsum >= top_p), at least 1 and at most max_k (default E); combine weight =
 * the raw p of each taken expert (not renormalised unless renormalize). The number of experts
 * varies per token: the experts-per-token histogram and the FLOPs follow it. Dropless unless a
 * capacity factor or a capacity is given (claims_var.h).
 * aux_loss = E / claims * sum_e assigned_e * mean_t p[t,e], the top-k balance loss with k*n
 * replaced by the number of claims. */
#include "moe.h"
#include "claims_var.h"
#include "ranked.h"

#include <stdlib.h>

typedef struct {
    moe_claims_var *v;
    double top_p;
} topp_ws;

static void topp_free(moe_router *r)
{
    topp_ws *w = r->ws;
    if (!w)
        return;
    moe_claims_var_free(w->v);
    free(w);
    r->ws = NULL;
}

static int topp_alloc(moe_router *r)
{
    const double P = r->opts.top_p;
    if (!(P > 0.0 && P <= 1.0))
        return moe_fail(MOE_EINVAL, "top_p is a probability in (0, 1]",
                        "top_p = %g is outside (0, 1] (top_p)", P);
    if (r->opts.max_k > r->E)
        return moe_fail(MOE_EINPUT, NULL, "max_k = %d is above E = %d (max_k)", r->opts.max_k,
                        r->E);
    topp_ws *w = calloc(1, sizeof *w);
    if (!w)
        return moe_fail(MOE_ENOMEM, NULL, "out of memory (router topp)");
    r->ws = w;
    w->top_p = P;
    w->v = moe_claims_var_alloc(r->n_max, r->opts.max_k ? r->opts.max_k : r->E, r->E);
    if (!w->v) {
        topp_free(r);
        return moe_fail(MOE_ENOMEM, NULL, "out of memory (router topp, %d tokens)", r->n_max);
    }
    return MOE_OK;
}

/* Token t: experts in descending p (ties to the lower expert), claimed until the cumulative p
 * reaches top_p, at most K. */
static void topp_row(void *ctx, int t, const double *lt, const double *pt)
{
    (void)lt;
    topp_ws *w = ctx;
    moe_claims_var *v = w->v;
    const int K = v->K, E = v->E;
    double cum = 0.0;
    int m = 0;
    if (E <= MOE_RANKED_MAX) { /* only as far into the order as the claims go */
        int32_t heap[MOE_RANKED_MAX], ex[MOE_RANKED_MAX];
        double g[MOE_RANKED_MAX];
        moe_ranked rk;
        moe_ranked_init(&rk, pt, E, heap);
        for (; m < K && (m == 0 || cum < w->top_p); m++) {
            const int e = moe_ranked_next(&rk);
            ex[m] = e;
            g[m] = pt[e];
            cum += pt[e];
        }
        moe_claims_var_put(v, t, m, ex, g);
    } else { /* the K largest, then the claimed prefix */
        const long a = moe_claims_var_take(v, t, K);
        moe_claims_topk(pt, E, K, v->expert + a, v->gate + a);
        for (; m < K && (m == 0 || cum < w->top_p); m++)
            cum += v->gate[a + m];
        v->cnt[t] = m;
    }
}

static int topp_route(moe_router *r, const moe_route_in *in, moe_plan *plan)
{
    topp_ws *w = r->ws;
    const int n = in->n, E = r->E;
    int rc = moe_claims_var_rows(w->v, in->logits, n, r->opts.order, in->rts_u, topp_row, w,
                                 plan);
    if (!rc)
        rc = moe_claims_var_resolve(w->v, &r->opts, n, plan);
    if (rc)
        return rc;
    const double *pmean = w->v->cl->pmean;
    double s = 0.0;
    for (int e = 0; e < E; e++)
        s += (double)plan->assigned_load[e] * pmean[e];
    plan->aux_loss = plan->n_claims ? (double)E / (double)plan->n_claims * s : 0.0;
    plan->k = 0; /* varies per token */
    return MOE_OK;
}

const moe_router_type moe_router_topp = {
    "topp",
    "dynamic top-p (Huang 2024): experts until their cumulative softmax p reaches top_p",
    MOE_RF_HAS_DROPLESS,
    1,
    topp_alloc,
    topp_free,
    topp_route,
    NULL,
};
