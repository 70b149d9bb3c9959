/* score.c: the score path of the token-choice routers (score.h): score functions, group-limited
 * selection and combine weights. */
#include "score.h"
#include "claims.h"

#include <math.h>
#include <stdlib.h>


int moe_score_setup(moe_score_cfg *s, const moe_route_opts *o, int k, int E, int def_score,
                    int def_norm, const char *router)
{
    s->score = o->score == MOE_SCORE_AUTO ? def_score : o->score;
    s->normalize = o->normalize_topk == MOE_TRI_AUTO ? def_norm
                                                     : o->normalize_topk == MOE_TRI_TRUE;
    s->scale = o->route_scale;
    s->k = k;
    s->E = E;
    s->G = o->groups;
    s->M = o->topk_groups ? o->topk_groups : o->groups;
    s->gmax = o->group_score == MOE_GSCORE_MAX;
    s->per_group = 0;
    s->is_default = s->score == def_score && s->normalize == def_norm && s->scale == 1.0 &&
                    s->G == 0;
    /* Megatron normalises sigmoid and sqrtsoftplus scores only when k > 1 (a router's own
     * defaults keep its own code: dsv3_bias at k = 1 gives weight 1 as DeepSeek-V3 does) */
    if (k == 1 && s->score != MOE_SCORE_SOFTMAX)
        s->normalize = 0;
    if (o->topk_groups && !o->groups)
        return moe_fail(MOE_EINPUT, "give groups G with topk_groups",
                        "topk_groups = %d needs groups (topk_groups)", o->topk_groups);
    if (s->G == 0)
        return MOE_OK;
    if (E % s->G)
        return moe_fail(MOE_EINPUT, "groups must divide the number of experts",
                        "groups = %d does not divide E = %d (groups)", s->G, E);
    if (s->M > s->G)
        return moe_fail(MOE_EINPUT, NULL, "topk_groups = %d is above groups = %d (topk_groups)",
                        s->M, s->G);
    if ((long)k > (long)s->M * (E / s->G))
        return moe_fail(MOE_EINPUT, "raise topk_groups or lower k",
                        "%s: k = %d is above the %d experts of the %d kept groups (topk_groups)",
                        router, k, s->M * (E / s->G), s->M);
    /* Megatron: the sum of the top-(k / M) scores of each group; at least one */
    s->per_group = k / s->M > 0 ? k / s->M : 1;
    if (s->per_group > E / s->G)
        s->per_group = E / s->G;
    return MOE_OK;
}

void moe_score_apply(int score, const double *l, const double *p, int E, double *s)
{
    switch (score) {
    case MOE_SCORE_SIGMOID:
        for (int e = 0; e < E; e++)
            s[e] = 1.0 / (1.0 + exp(-l[e]));
        break;
    case MOE_SCORE_SQRTSOFTPLUS:
        for (int e = 0; e < E; e++) /* softplus without overflow: x + log1p(exp(-x)) for x > 0 */
            s[e] = sqrt(l[e] > 0.0 ? l[e] + log1p(exp(-l[e])) : log1p(exp(l[e])));
        break;
    default:
        if (p)
            for (int e = 0; e < E; e++)
                s[e] = p[e];
        else
            moe_softmax(l, E, s);
        break;
    }
}

moe_score_tmp *moe_score_tmp_alloc(const moe_score_cfg *s, int n_rows)
{
    moe_score_tmp *w = calloc(1, sizeof *w);
    const size_t ne = (size_t)n_rows * s->E, ng = (size_t)n_rows * (s->G ? s->G : 1);
    if (w) {
        w->E = s->E;
        w->G = s->G;
        w->s = malloc(ne * sizeof *w->s);
        w->key = malloc(ne * sizeof *w->key);
        w->gs = malloc(ng * sizeof *w->gs);
        w->gval = malloc(ng * sizeof *w->gval);
        w->gsel = malloc(ng * sizeof *w->gsel);
    }
    if (!w || !w->s || !w->key || !w->gs || !w->gval || !w->gsel) {
        moe_score_tmp_free(w);
        moe_fail(MOE_ENOMEM, NULL, "out of memory (router scores for %d tokens)", n_rows);
        return NULL;
    }
    return w;
}

void moe_score_tmp_free(moe_score_tmp *w)
{
    if (!w)
        return;
    free(w->s);
    free(w->key);
    free(w->gs);
    free(w->gval);
    free(w->gsel);
    free(w);
}

void moe_score_weights(const moe_score_cfg *s, const double *chosen_s, int k, double *w)
{
    double sum = 0.0;
    for (int j = 0; j < k; j++)
        sum += chosen_s[j];
    for (int j = 0; j < k; j++) {
        double g = s->normalize && sum > 0.0 ? chosen_s[j] / sum : chosen_s[j];
        w[j] = g * s->scale;
    }
}

/* key (E): entries outside the M best groups set to -inf (group_limited_topk). idx, w (k):
 * scratch for the per-group top scores. */
static void group_mask(const moe_score_cfg *s, moe_score_tmp *tmp, int t, double *key,
                       int32_t *idx, double *w)
{
    const int G = s->G, Eg = s->E / s->G;
    double *gs = tmp->gs + (size_t)t * G, *gval = tmp->gval + (size_t)t * G;
    int32_t *gsel = tmp->gsel + (size_t)t * G;
    for (int g = 0; g < G; g++) {
        const double *kg = key + (size_t)g * Eg;
        if (s->gmax) {
            gs[g] = kg[moe_claims_argmax(kg, Eg, -1)];
            continue;
        }
        moe_claims_topk(kg, Eg, s->per_group, idx, w);
        double sum = 0.0;
        for (int j = 0; j < s->per_group; j++)
            sum += w[j];
        gs[g] = sum;
    }
    moe_claims_topk(gs, G, s->M, gsel, gval); /* group ties: the lower group */
    for (int g = 0; g < G; g++)
        gs[g] = 0.0;
    for (int j = 0; j < s->M; j++)
        gs[gsel[j]] = 1.0;
    for (int g = 0; g < G; g++)
        if (gs[g] == 0.0)
            for (int e = g * Eg; e < (g + 1) * Eg; e++)
                key[e] = -INFINITY;
}

void moe_score_token(const moe_score_cfg *s, moe_score_tmp *tmp, int t, const double *sc,
                     const double *bias, int32_t *idx, double *w)
{
    const int E = s->E, k = s->k;
    double *key = tmp->key + (size_t)t * E;
    for (int e = 0; e < E; e++)
        key[e] = bias ? sc[e] + bias[e] : sc[e];
    if (s->G)
        group_mask(s, tmp, t, key, idx, w);
    moe_claims_topk(key, E, k, idx, w); /* ties: the lower expert */
    for (int j = 0; j < k; j++)
        w[j] = sc[idx[j]];
    moe_score_weights(s, w, k, w);
}
