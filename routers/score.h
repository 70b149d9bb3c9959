/* score.h: the score path of the token-choice routers (topk, switch, gshard, dsv3_bias, replay):
 * per-token scores s = f(L) (softmax, sigmoid or sqrt(softplus)), an optional group limit
 * (only experts of the M best of G contiguous groups can be chosen), the top-k of s plus the
 * router's bias, and the combine weights (chosen s, normalised over the chosen or raw, times
 * route_scale). The conventions are those of Megatron-LM core
 * megatron/core/transformer/moe/moe_utils.py (topk_routing_with_score_function,
 * group_limited_topk) and DeepSeek-V3 inference/model.py (Gate.forward); docs/routing.md says
 * where moesim differs.
 *
 * A router resolves its options once (moe_score_setup, at alloc), keeps its own historical code
 * when moe_score_cfg.is_default says the options equal its defaults (so the plans of every
 * router stay bit for bit what they were), and otherwise calls moe_score_token per token. */
#ifndef MOE_SCORE_H
#define MOE_SCORE_H

#include "moe.h"

typedef struct {
    int score;      /* enum moe_score, never AUTO */
    int normalize;  /* 1: chosen s / their sum (never for sigmoid and sqrtsoftplus with k = 1) */
    double scale;   /* route_scale */
    int k, E;
    int G, M;       /* groups (0: none) and groups kept */
    int per_group;  /* group score topk_sum: the top-per_group scores of a group are summed */
    int gmax;       /* group score = max of the group */
    int is_default; /* the options equal the router's defaults: use the router's own code */
} moe_score_cfg;

/* Resolve o for a router whose own score is def_score and own normalisation def_norm (0/1),
 * routing k experts of E. Errors (MOE_EINPUT, one line naming the option): groups not dividing
 * E, topk_groups without groups or above groups, k above the experts of the kept groups. */
int moe_score_setup(moe_score_cfg *s, const moe_route_opts *o, int k, int E, int def_score,
                    int def_norm, const char *router);

/* s (E) = f(l): softmax (p, when not NULL, is taken as the softmax of l), sigmoid
 * 1/(1+exp(-l)), sqrtsoftplus sqrt(log(1+exp(l))). */
void moe_score_apply(int score, const double *l, const double *p, int E, double *s);

/* Scratch of a routing group: row t of each array is token t's. */
typedef struct {
    int E, G;
    double *s;       /* (T,E) the scores */
    double *key;     /* (T,E) s + bias, masked to the kept groups */
    double *gs;      /* (T,G) group scores, then the kept-group flags */
    double *gval;    /* (T,G) the kept groups' scores */
    int32_t *gsel;   /* (T,G) the kept groups */
} moe_score_tmp;

/* Scratch for n_rows concurrent tokens (the (T,E) and (T,G) buffers of one routing group):
 * row i of the returned arrays is token i's. NULL after moe_fail on out-of-memory. */
moe_score_tmp *moe_score_tmp_alloc(const moe_score_cfg *s, int n_rows);
void moe_score_tmp_free(moe_score_tmp *w); /* NULL is a no-op */

/* Token t: key = s + bias (bias (E) may be NULL), masked to the M best groups when grouped
 * (group ties to the lower group), the k largest keys into idx (k) (ties to the lower expert),
 * and w (k) = the combine weights of those experts from s (normalised and scaled as s says).
 * Uses row t of tmp. */
void moe_score_token(const moe_score_cfg *s, moe_score_tmp *tmp, int t, const double *sc,
                     const double *bias, int32_t *idx, double *w);

/* w (k) = the combine weights of k chosen scores chosen_s (k): normalised and scaled. */
void moe_score_weights(const moe_score_cfg *s, const double *chosen_s, int k, double *w);

#endif
