/* topp.c: the `topp` router (dynamic top-p routing, Huang et al. 2024, "Harder Tasks Need More
 * Experts: Dynamic Routing in MoE Models"). Fills moe_router_topp: p = softmax(L) per token;
 * experts in descending p (ties to the lower expert) are taken until their cumulative p first
 * reaches top_p (cumsum >= top_p), at least 1 and at most max_k (default E); combine weight =
 * the raw p of each taken expert (not renormalised unless renormalize). The number of experts
 * varies per token: the experts-per-token histogram and the FLOPs follow it. Dropless unless a
 * capacity factor or a capacity is given (claims.h, moe_claims_finish_variable).
 * aux_loss = E / claims * sum_e assigned_e * mean_t p[t,e], the top-k balance loss with k*n
 * replaced by the number of claims. */
#include "moe.h"
#include "claims.h"
#include "ranked.h"

#include <stdlib.h>

typedef struct {
    moe_claims *cl;
    double top_p;
    double *val; /* (T,K) scratch of the sorted p (rows longer than MOE_RANKED_MAX) */
    int *cnt;    /* (T) claims of each token, a prefix of its K columns */
} topp_ws;

static int topp_kmax(const moe_router *r) { return r->opts.max_k ? r->opts.max_k : r->E; }

static void topp_free(moe_router *r)
{
    topp_ws *w = r->ws;
    if (!w)
        return;
    moe_claims_free(w->cl);
    free(w->val);
    free(w->cnt);
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
    const int K = topp_kmax(r);
    w->cl = moe_claims_alloc(r->n_max, K, r->E, 1);
    w->val = r->E > MOE_RANKED_MAX ? malloc((size_t)r->n_max * K * sizeof *w->val) : NULL;
    w->cnt = malloc((size_t)r->n_max * sizeof *w->cnt);
    if (!w->cl || (r->E > MOE_RANKED_MAX && !w->val) || !w->cnt) {
        topp_free(r);
        return moe_fail(MOE_ENOMEM, NULL, "out of memory (router topp, %d tokens)", r->n_max);
    }
    return MOE_OK;
}

/* Token t: experts in descending p (ties to the lower expert), claimed until the cumulative p
 * reaches top_p, at most K; only the claimed prefix is written (moe_ranked_compact). */
static void topp_row(void *ctx, int t, const double *lt, const double *pt)
{
    (void)lt;
    topp_ws *w = ctx;
    moe_claims *cl = w->cl;
    const int K = cl->K, E = cl->E;
    const size_t i0 = (size_t)t * K;
    double cum = 0.0;
    int m = 0;
    if (E <= MOE_RANKED_MAX) { /* only as far into the order as the claims go */
        int32_t heap[MOE_RANKED_MAX];
        moe_ranked rk;
        moe_ranked_init(&rk, pt, E, heap);
        for (; m < K && (m == 0 || cum < w->top_p); m++) {
            const int e = moe_ranked_next(&rk);
            cl->expert[i0 + m] = e;
            cl->gate[i0 + m] = pt[e];
            cl->claim[i0 + m] = 1;
            cum += pt[e];
        }
    } else { /* the K largest, then the claimed prefix */
        double *v = w->val + i0;
        moe_claims_topk(pt, E, K, cl->expert + i0, v);
        for (; m < K && (m == 0 || cum < w->top_p); m++) {
            cl->gate[i0 + m] = v[m];
            cl->claim[i0 + m] = 1;
            cum += v[m];
        }
    }
    w->cnt[t] = m;
}

static int topp_route(moe_router *r, const moe_route_in *in, moe_plan *plan)
{
    topp_ws *w = r->ws;
    moe_claims *cl = w->cl;
    const int n = in->n, E = r->E;
    cl->rts_u = in->rts_u; /* order rts */
    moe_claims_scratch_p(cl, r->opts.order); /* p kept only for orders bpr, probs */
    int rc = moe_claims_rows(cl, in->logits, n, topp_row, w, plan);
    if (rc)
        return rc;
    const int K = moe_ranked_compact(cl, n, w->cnt);
    rc = moe_claims_finish_variable(cl, &r->opts, n, plan);
    cl->K = K;
    if (rc)
        return rc;
    double s = 0.0;
    for (int e = 0; e < E; e++)
        s += (double)plan->assigned_load[e] * cl->pmean[e];
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
