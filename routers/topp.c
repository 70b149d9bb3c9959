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
    return MOE_OK;
}

/* The claims' store, on the first route (a route that reuses a memo's workspace never needs
 * it). */
static int topp_buffers(moe_router *r)
{
    topp_ws *w = r->ws;
    if (!w->v && !(w->v = moe_claims_var_alloc(r->n_max, r->opts.max_k ? r->opts.max_k : r->E,
                                               r->E)))
        return moe_fail(MOE_ENOMEM, NULL, "out of memory (router topp, %d tokens)", r->n_max);
    return MOE_OK;
}

/* The experts whose p (E) lies in the top buckets of NB equal buckets of [0, max p], down to
 * the first bucket at which they hold top_p of the probability (as summed here) or K of the
 * experts, into cv, ci (in expert order): a top set that holds the claimed prefix, except when
 * the sum in rank order rounds below this one (topp_row then takes all E). Returns their
 * number. */
enum { TOPP_NB = 64 };

static int topp_candidates(const double *pt, int E, int K, double top_p, double *cv,
                           int32_t *ci)
{
    double mx = 0.0, bs[TOPP_NB + 1] = {0.0};
    int bc[TOPP_NB + 1] = {0};
    for (int e = 0; e < E; e++)
        mx = pt[e] > mx ? pt[e] : mx;
    if (!(mx > 0.0)) { /* every p underflowed: all */
        for (int e = 0; e < E; e++)
            cv[e] = pt[e], ci[e] = e;
        return E;
    }
    const double scale = TOPP_NB / mx;
    for (int e = 0; e < E; e++) {
        const int b = (int)(pt[e] * scale);
        bs[b] += pt[e];
        bc[b]++;
    }
    double s = 0.0;
    int c = 0, b = TOPP_NB;
    for (; b > 0; b--) {
        s += bs[b], c += bc[b];
        if (s >= top_p || c >= K)
            break;
    }
    int m = 0;
    for (int e = 0; e < E; e++)
        if ((int)(pt[e] * scale) >= b)
            cv[m] = pt[e], ci[m++] = e;
    return m;
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
    if (E <= MOE_RANKED_MAX) { /* sorted: a top set that holds the claims */
        int32_t ci[MOE_RANKED_MAX], si[MOE_RANKED_MAX];
        double cv[MOE_RANKED_MAX], sv[MOE_RANKED_MAX];
        int nc = topp_candidates(pt, E, K, w->top_p, cv, ci);
        for (;;) {
            const int in = moe_ranked_sort(cv, ci, sv, si, nc);
            const double *ov = in ? cv : sv;
            const int32_t *oi = in ? ci : si;
            cum = 0.0;
            for (m = 0; m < nc && m < K && (m == 0 || cum < w->top_p); m++)
                cum += ov[m];
            if (m < nc || m == K || cum >= w->top_p || nc == E) {
                moe_claims_var_put(v, t, m, oi, ov);
                return;
            }
            for (int e = 0; e < E; e++) /* the set ran out first: every expert */
                cv[e] = pt[e], ci[e] = e;
            nc = E;
        }
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
    topp_ws *w = r->ws; /* a memo's when the route reuses it (route_memo.h) */
    const int E = r->E;
    const int rc = moe_claims_var_route(r, in, &w->v, topp_buffers, topp_row, w, plan);
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
    MOE_RF_HAS_DROPLESS | MOE_RF_MEMO,
    1,
    topp_alloc,
    topp_free,
    topp_route,
    NULL,
};
