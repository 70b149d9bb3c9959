/* replay.c: the replay router: routes every token to the experts a recorded trace chose for it
 * (moe_route_in.choices (T,Krec), from a trace source), applying capacity and drops as the
 * token-choice routers do (docs/routing.md section 2): claims in order `order` (default
 * choice_major: all first recorded choices in token order, then all second ones, ...),
 * C = moe_capacity with k = Krec, or no limit with dropless = true. combine = the recorded
 * gate weight (choice_w) or 1/Krec when the trace records ids only; renormalize as the option
 * says. The option k is ignored: the trace fixes Krec. aux_loss = 0.
 * Fills the moe_router_type interface of moe.h; claim resolution is claims.c's.
 *
 * Workspace: sized at alloc for k (the router's k) claims per token; if the trace records a
 * different Krec it is re-sized once, on the first route, and reused afterwards. */
#include "claims.h"
#include "moe.h"
#include "score.h"

#include <math.h>
#include <stdlib.h>

typedef struct {
    moe_claims *c;
    int K;       /* claims per token of the workspace */
    int with_p;  /* orders bpr and probs need the softmax (and score = softmax) */
    double *s;   /* (E) one token's scores, when a score is given */
} replay_ws;

static void replay_free(moe_router *r)
{
    replay_ws *w = r->ws;
    if (!w)
        return;
    moe_claims_free(w->c);
    free(w->s);
    free(w);
    r->ws = NULL;
}

static int replay_alloc(moe_router *r)
{
    replay_ws *w = calloc(1, sizeof *w);
    if (!w)
        return moe_fail(MOE_ENOMEM, NULL, "out of memory (router replay)");
    if (r->opts.groups) {
        free(w);
        return moe_fail(MOE_EINPUT, "the trace fixes the experts: drop groups",
                        "replay takes the recorded choices: groups = %d does not apply (groups)",
                        r->opts.groups);
    }
    w->with_p = r->opts.order == MOE_ORDER_BPR || r->opts.order == MOE_ORDER_PROBS ||
                r->opts.score == MOE_SCORE_SOFTMAX;
    w->s = malloc((size_t)r->E * sizeof *w->s);
    if (!w->s) {
        free(w);
        return moe_fail(MOE_ENOMEM, NULL, "out of memory (router replay)");
    }
    w->K = r->k;
    w->c = moe_claims_alloc(r->n_max, w->K, r->E, w->with_p);
    r->ws = w;
    if (!w->c) {
        replay_free(r);
        return MOE_ENOMEM;
    }
    return MOE_OK;
}

/* A score given: gate of recorded choice j = s[t, choice j] of s = f(logits) (score.h),
 * normalised over the Krec choices unless normalize_topk = false, times route_scale. */
static int replay_scores(moe_router *r, const moe_route_in *in, moe_claims *c, int K)
{
    replay_ws *w = r->ws;
    moe_score_cfg sc;
    moe_route_opts o = r->opts;
    if (o.normalize_topk == MOE_TRI_AUTO)
        o.normalize_topk = MOE_TRI_TRUE;
    int rc = moe_score_setup(&sc, &o, K, r->E, o.score, 1, "replay");
    if (rc)
        return rc;
    for (int t = 0; t < in->n; t++) {
        const size_t i0 = (size_t)t * K;
        moe_score_apply(sc.score, in->logits + (size_t)t * r->E,
                        c->p ? c->p + (size_t)t * r->E : NULL, r->E, w->s);
        for (int j = 0; j < K; j++)
            c->gate[i0 + j] = w->s[c->expert[i0 + j]];
        moe_score_weights(&sc, c->gate + i0, K, c->gate + i0);
    }
    return MOE_OK;
}

static int replay_route(moe_router *r, const moe_route_in *in, moe_plan *plan)
{
    replay_ws *w = r->ws;
    const int n = in->n, E = r->E, K = in->k_rec;
    if (!in->choices)
        return moe_fail(MOE_EINPUT, "route a recorded trace (a trace_* source) with replay",
                        "router replay needs recorded expert choices (input)");
    if (K < 1 || K > E)
        return moe_fail(MOE_EINPUT, NULL,
                        "recorded choices per token Krec = %d is outside 1..E = 1..%d (input)", K,
                        E);
    for (int t = 0; t < n; t++) {
        const int32_t *ch = in->choices + (size_t)t * K;
        for (int j = 0; j < K; j++) {
            if (ch[j] < 0 || ch[j] >= E)
                return moe_fail(MOE_EINPUT, NULL,
                                "recorded expert %d of token %d is outside 0..%d (choices)",
                                (int)ch[j], t, E - 1);
            for (int i = 0; i < j; i++)
                if (ch[i] == ch[j])
                    return moe_fail(MOE_EINPUT, NULL,
                                    "token %d lists expert %d twice (choices)", t, (int)ch[j]);
            if (in->choice_w && !(isfinite(in->choice_w[(size_t)t * K + j]) &&
                                  in->choice_w[(size_t)t * K + j] >= 0.0))
                return moe_fail(MOE_EINPUT, NULL,
                                "recorded weight %d of token %d is not finite and >= 0 "
                                "(choice_w)",
                                j, t);
        }
    }
    if (K != w->K) { /* once per trace: the workspace follows Krec */
        moe_claims *c = moe_claims_alloc(r->n_max, K, E, w->with_p);
        if (!c)
            return MOE_ENOMEM;
        moe_claims_free(w->c);
        w->c = c;
        w->K = K;
    }
    moe_claims *c = w->c;
    long C = 0;
    int rc = moe_capacity(&r->opts, K, n, E, &C);
    if (rc)
        return rc;
    for (size_t i = 0; i < (size_t)n * K; i++) {
        c->expert[i] = in->choices[i];
        c->gate[i] = in->choice_w ? in->choice_w[i] : 1.0 / K;
        c->claim[i] = 1;
    }
    if (w->with_p && (rc = moe_claims_softmax(c, in->logits, n, plan)))
        return rc;
    if (r->opts.score != MOE_SCORE_AUTO && (rc = replay_scores(r, in, c, K)))
        return rc;
    c->rts_u = in->rts_u; /* order rts */
    rc = moe_claims_resolve(c, n, r->opts.order, C, r->opts.dropless, r->opts.renormalize,
                            plan);
    plan->k = K;
    plan->aux_loss = 0.0;
    return rc;
}

const moe_router_type moe_router_replay = {
    "replay",
    "recorded choices of a trace source (T,Krec), with capacity and drops (order, cf)",
    MOE_RF_HAS_DROPLESS | MOE_RF_NEEDS_CHOICES,
    1,
    replay_alloc,
    replay_free,
    replay_route,
    NULL,
};
