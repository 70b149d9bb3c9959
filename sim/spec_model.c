/* spec_model.c: what a shape's model preset (models.h) sets in the routing options of a point
 * (spec_internal.h): the preset's k and routing conventions, for the routers they apply to,
 * unless the router section sets them itself. */
#include "spec_internal.h"

#include "models.h"
#include "options.h"

#include <string.h>

/* Whether option key applies to r and its section leaves it to the preset. */
static int from_preset(const spec_router *r, const char *key)
{
    const moe_option *op = moe_route_option_find(key);
    return op && moe_route_option_applies(op, r->type->name) && !moe_spec_kv_find(r->sec, key);
}

void moe_spec_model_opts(const spec_router *r, const spec_shape *sh, moe_point *p)
{
    const moe_model *m = sh->model;
    moe_route_opts *o = &p->opts;
    /* k: the shape's (the preset's unless set) for the token-choice routers the score
     * options apply to, where the router section has no k */
    if (from_preset(r, "score") && !r->k_kv)
        o->k = sh->k;
    if (from_preset(r, "score"))
        o->score = m->score;
    if (from_preset(r, "normalize_topk"))
        o->normalize_topk = m->normalize_topk;
    if (from_preset(r, "route_scale"))
        o->route_scale = m->route_scale;
    if (from_preset(r, "groups"))
        o->groups = m->groups;
    if (from_preset(r, "topk_groups"))
        o->topk_groups = m->topk_groups;
}
