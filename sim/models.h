/* models.h: model presets, the layer shape and routing conventions of published MoE models
 * (`model = NAME` in a [shape.NAME] section, `moesim list models`, docs/models.md), and the
 * `scale = 1/N` that shrinks their widths for a small machine.
 *
 * A preset fills E, k, d, f, the shared experts (S, Fs, gate), the activation and the routing
 * options score, normalize_topk, route_scale, groups, topk_groups; keys set explicitly in the
 * shape (or, for the routing options, in the router section) override it. Every value comes
 * from the model's public config file or modeling code, named in `source`.
 */
#ifndef MOE_MODELS_H
#define MOE_MODELS_H

#include "moe.h"

#include <stdio.h>

typedef struct moe_model_preset {
    const char *name;
    int E, k, d, f;           /* routed experts, experts per token, model width, expert width */
    int S, fs, shared_gate;   /* shared experts: count, width, enum moe_shared_gate */
    int act;                  /* enum moe_act */
    int score;                /* enum moe_score */
    int normalize_topk;       /* enum moe_tri (TRUE or FALSE) */
    double route_scale;
    int groups, topk_groups;  /* 0: no group limit */
    const char *router;       /* the moesim router its routing corresponds to */
    const char *source;       /* the public file the values were read from */
} moe_model;


extern const moe_model moe_models[]; /* terminated by name == NULL */

/* The preset called name, or NULL. */
const moe_model *moe_model_find(const char *name);
/* The preset called name; an unknown name is MOE_EINVAL "unknown model 'X' (model)" with every
 * name in the hint. */
int moe_model_lookup(const char *name, const moe_model **out);
/* The table of presets, one line each (`moesim list models`). */
void moe_models_print(FILE *out);

/* Parse a scale "1/N" (N >= 1; "1" is 1/1) into *den. Anything else is MOE_EINVAL naming the
 * value. */
int moe_scale_parse(const char *text, int *den);
/* A width divided by the scale's N, rounded down, at least 1. */
int moe_scale_width(int width, int den);

#endif
