/* relu.c: the `relu` router (ReMoE, Wang et al. 2024, "ReMoE: Fully Differentiable
 * Mixture-of-Experts with ReLU Routing"). Fills moe_router_relu: a token goes to every expert
 * whose logit is strictly positive, with combine weight = the logit (ReLU(L)), ranked by
 * descending logit (ties to the lower expert), at most max_k of them (default E); a token with
 * no positive logit goes nowhere. The number of experts varies per token: the experts-per-token
 * histogram and the FLOPs follow it. Dropless unless a capacity factor or a capacity is given
 * (claims_var.h). aux_loss = mean over tokens of sum_e ReLU(L[t,e]),
 * ReMoE's L1 sparsity penalty without its adaptive coefficient. */
#include "moe.h"
#include "claims_var.h"
#include "ranked.h"

#include <stdlib.h>
#include <string.h>
#if defined(__AVX512F__)
#include <immintrin.h>
#endif

typedef struct {
    moe_claims_var *v;
    double *l1; /* (T) sum of ReLU(L) of each token */
} relu_ws;

static void relu_free(moe_router *r)
{
    relu_ws *w = r->ws;
    if (!w)
        return;
    moe_claims_var_free(w->v);
    free(w->l1);
    free(w);
    r->ws = NULL;
}

static int relu_alloc(moe_router *r)
{
    if (r->opts.max_k > r->E)
        return moe_fail(MOE_EINPUT, NULL, "max_k = %d is above E = %d (max_k)", r->opts.max_k,
                        r->E);
    relu_ws *w = calloc(1, sizeof *w);
    if (!w)
        return moe_fail(MOE_ENOMEM, NULL, "out of memory (router relu)");
    r->ws = w;
    return MOE_OK;
}

/* The buffers, on the first route (a route that reuses a memo's workspace never needs them). */
static int relu_buffers(moe_router *r)
{
    relu_ws *w = r->ws;
    if (w->v)
        return MOE_OK;
    w->v = moe_claims_var_alloc(r->n_max, r->opts.max_k ? r->opts.max_k : r->E, r->E);
    w->l1 = malloc((size_t)r->n_max * sizeof *w->l1);
    if (!w->v || !w->l1) {
        moe_claims_var_free(w->v);
        free(w->l1);
        w->v = NULL, w->l1 = NULL;
        return moe_fail(MOE_ENOMEM, NULL, "out of memory (router relu, %d tokens)", r->n_max);
    }
    return MOE_OK;
}

/* The positive logits of lt (E) with their experts, in expert order, into pos, at; returns
 * their number. Without a branch on the values (half of them are positive: a branch would be
 * mispredicted on every other one). */
static int relu_positive(const double *lt, int E, double *pos, int32_t *at)
{
    int np = 0, e = 0;
#if defined(__AVX512F__) && defined(__AVX512VL__)
    const __m256i step = _mm256_set1_epi32(8);
    __m256i ix = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    for (; e + 8 <= E; e += 8, ix = _mm256_add_epi32(ix, step)) {
        const __m512d x = _mm512_loadu_pd(lt + e);
        const __mmask8 m = _mm512_cmp_pd_mask(x, _mm512_setzero_pd(), _CMP_GT_OQ);
        _mm512_mask_compressstoreu_pd(pos + np, m, x);
        _mm256_mask_compressstoreu_epi32(at + np, m, ix);
        np += __builtin_popcount(m);
    }
#endif
    for (; e < E; e++) {
        pos[np] = lt[e], at[np] = e;
        np += lt[e] > 0.0;
    }
    return np;
}

/* Token t: experts in descending logit (ties to the lower expert) while the logit is > 0, at
 * most K, weight L. */
static void relu_row(void *ctx, int t, const double *lt, const double *pt)
{
    (void)pt;
    relu_ws *w = ctx;
    moe_claims_var *v = w->v;
    const int K = v->K, E = v->E;
    if (E <= MOE_RANKED_MAX) { /* the positive logits only, as far as K */
        double pos[MOE_RANKED_MAX];
        int32_t at[MOE_RANKED_MAX], heap[MOE_RANKED_MAX];
        const int np = relu_positive(lt, E, pos, at);
        double s = 0.0; /* sum_e ReLU(L) in e order: the zero terms leave it unchanged */
        for (int i = 0; i < np; i++)
            s += pos[i];
        w->l1[t] = s;
        const int m = np < K ? np : K;
        const long a = moe_claims_var_take(v, t, m);
        if (4 * m > np) { /* most of them: sorted whole (ties to the lower expert) */
            double sv[MOE_RANKED_MAX];
            const int in = moe_ranked_sort(pos, at, sv, heap, np);
            memcpy(v->expert + a, in ? at : heap, (size_t)m * sizeof *at);
            memcpy(v->gate + a, in ? pos : sv, (size_t)m * sizeof *pos);
            return;
        }
        moe_ranked rk; /* ties to the lower position: the lower expert */
        moe_ranked_init(&rk, pos, np, heap);
        for (int j = 0; j < m; j++) {
            const int q = moe_ranked_next(&rk);
            v->expert[a + j] = at[q];
            v->gate[a + j] = pos[q];
        }
    } else { /* the K largest, then the positive prefix */
        double s = 0.0;
        for (int e = 0; e < E; e++)
            s += lt[e] > 0.0 ? lt[e] : 0.0;
        w->l1[t] = s;
        const long a = moe_claims_var_take(v, t, K);
        moe_claims_topk(lt, E, K, v->expert + a, v->gate + a);
        int m = 0;
        while (m < K && v->gate[a + m] > 0.0)
            m++;
        v->cnt[t] = m;
    }
}

static int relu_route(moe_router *r, const moe_route_in *in, moe_plan *plan)
{
    relu_ws *w = r->ws; /* a memo's when the route reuses it (route_memo.h) */
    const int n = in->n;
    const int rc = moe_claims_var_route(r, in, &w->v, relu_buffers, relu_row, w, plan);
    if (rc)
        return rc;
    double s = 0.0;
    for (int t = 0; t < n; t++) /* in token order: independent of the threads */
        s += w->l1[t];
    plan->aux_loss = s / n;
    plan->k = 0; /* varies per token */
    return MOE_OK;
}

const moe_router_type moe_router_relu = {
    "relu",
    "ReLU routing (ReMoE 2024): every expert with a positive logit, weight = the logit",
    MOE_RF_HAS_DROPLESS | MOE_RF_MEMO,
    1,
    relu_alloc,
    relu_free,
    relu_route,
    NULL,
};
