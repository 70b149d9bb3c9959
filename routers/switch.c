/* switch.c: the `switch` router (Fedus et al. 2022), docs/routing.md section 3. Fills
 * moe_router_switch: top-1 by logit (ties to the lower expert), gate = full-softmax p of the
 * chosen expert (not renormalised), capacity with k = 1,
 * aux_loss = E * sum_e f_e * P_e (f_e fraction of tokens whose first choice is e, before
 * capacity; P_e = mean_t p[t,e]).
 * opts.select = rsample (DeepSpeed top1gating noisy_gate_policy 'RSample'): the expert is
 * argmax of L + G, G = -log(-log u), u (T,E) from in->gumbel_u, else gsl_rng_uniform_pos of
 * in->rng row-major for every (t,e); the gate is the clean p. Order rts (DeepSpeed use_rts)
 * takes its keys from in->rts_u. */
#include "moe.h"
#include "claims.h"
#include "score.h"

#include <math.h>
#include <stdlib.h>

typedef struct {
    moe_claims *cl;
    moe_score_cfg sc;    /* the score path (score.h); sc.is_default: gate = p of the argmax */
    moe_score_tmp *tmp;  /* its scratch, when not the default */
    double *gb;          /* (T,E) drawn Gumbel uniforms (rsample without a file), or NULL */
    const double *gu;    /* (T,E) the Gumbel uniforms of the group */
} switch_ws;

/* ---- workspace ---- */


static void switch_free(moe_router *r)
{
    switch_ws *w = r->ws;
    if (!w)
        return;
    moe_claims_free(w->cl);
    moe_score_tmp_free(w->tmp);
    free(w->gb);
    free(w);
    r->ws = NULL;
}

static int switch_alloc(moe_router *r)
{
    if (r->opts.k != 0 && r->opts.k != 1)
        return moe_fail(MOE_EINPUT, "switch routes every token to one expert; use topk for k > 1",
                        "switch needs k = 1, got k = %d (k)", r->opts.k);
    switch_ws *w = calloc(1, sizeof *w);
    if (!w)
        return moe_fail(MOE_ENOMEM, NULL, "out of memory (router switch)");
    r->ws = w;
    int rc = moe_score_setup(&w->sc, &r->opts, 1, r->E, MOE_SCORE_SOFTMAX, 0, "switch");
    if (!rc && !w->sc.is_default && r->opts.select == MOE_SELECT_RSAMPLE)
        rc = moe_fail(MOE_EINVAL, "use select = argmax with a score option",
                      "switch: select = rsample is not combined with a non-default score path "
                      "(score, normalize_topk, route_scale, groups)");
    if (rc) {
        switch_free(r);
        return rc;
    }
    w->cl = moe_claims_alloc(r->n_max, 1, r->E, 1);
    if (r->opts.select == MOE_SELECT_RSAMPLE)
        w->gb = malloc((size_t)r->n_max * (size_t)r->E * sizeof *w->gb);
    if (!w->cl || (r->opts.select == MOE_SELECT_RSAMPLE && !w->gb) ||
        (!w->sc.is_default && !(w->tmp = moe_score_tmp_alloc(&w->sc, r->n_max)))) {
        switch_free(r);
        return moe_fail(MOE_ENOMEM, NULL, "out of memory (router switch, %d tokens)", r->n_max);
    }
    return MOE_OK;
}

/* ---- routing ---- */

/* Token t through the score path (score.h). */
static void switch_score_row(void *ctx, int t, const double *lt, const double *pt)
{
    switch_ws *w = ctx;
    moe_claims *cl = w->cl;
    double *st = w->tmp->s + (size_t)t * cl->E;
    moe_score_apply(w->sc.score, lt, pt, cl->E, st);
    moe_score_token(&w->sc, w->tmp, t, st, NULL, cl->expert + t, cl->gate + t);
    cl->claim[t] = 1;
}

/* select = rsample: the expert is argmax of L + G, G = -log(-log u), ties to the lower expert;
 * the gate stays the clean p of that expert. */
static void switch_row_rsample(void *ctx, int t, const double *lt, const double *pt)
{
    switch_ws *w = ctx;
    moe_claims *cl = w->cl;
    const double *u = w->gu + (size_t)t * cl->E;
    int best = 0;
    double bv = lt[0] - log(-log(u[0]));
    for (int e = 1; e < cl->E; e++) {
        double v = lt[e] - log(-log(u[e]));
        if (v > bv) {
            bv = v;
            best = e;
        }
    }
    cl->expert[t] = best;
    cl->gate[t] = pt[best];
    cl->claim[t] = 1;
}

static int switch_route(moe_router *r, const moe_route_in *in, moe_plan *plan)
{
    switch_ws *w = r->ws;
    moe_claims *cl = w->cl;
    int rc;
    moe_claims_scratch_p(cl, r->opts.order); /* p only for orders bpr, probs */
    cl->stats_in_rows = 1; /* every row leaves its claim final */
    cl->rts_u = in->rts_u;
    if (r->opts.select == MOE_SELECT_RSAMPLE) {
        if (!in->gumbel_u && !in->rng)
            return moe_fail(MOE_EINVAL, "give a seed or a file of draws (--gumbel-uniforms U.npy)",
                            "switch rsample needs Gumbel draws or a random generator (uniforms)");
        w->gu = in->gumbel_u;
        if (!w->gu) {
            for (size_t i = 0; i < (size_t)in->n * r->E; i++)
                w->gb[i] = gsl_rng_uniform_pos(in->rng);
            w->gu = w->gb;
        }
        rc = moe_claims_rows(cl, in->logits, in->n, switch_row_rsample, w, plan);
    } else if (w->sc.is_default) {
        plan->rows_topk = cl->expert; /* each row's first index of its largest logit */
        plan->rows_topk_k = 1;
        /* each token's first choice and gate (claims.h) */
        rc = moe_claims_rows(cl, in->logits, in->n, moe_claims_row_first, cl, plan);
        plan->rows_topk = NULL;
    } else {
        rc = moe_claims_rows(cl, in->logits, in->n, switch_score_row, w, plan);
    }
    if (rc)
        return rc;
    /* aux_loss with f_e = (tokens whose first choice is e) / n */
    return moe_claims_finish(cl, &r->opts, in->n, MOE_CLAIMS_AUX_FIRST, plan);
}

const moe_router_type moe_router_switch = {
    "switch",
    "Switch Transformer top-1 (Fedus 2022): gate = softmax p of the chosen expert",
    MOE_RF_HAS_DROPLESS | MOE_RF_CHECKS_FINITE,
    1,
    switch_alloc,
    switch_free,
    switch_route,
    NULL,
};
