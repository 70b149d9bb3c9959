/* hash.c: placeholder while the router is written (issue 2). */
#include "moe.h"
static int route(moe_router *r, const moe_route_in *in, moe_plan *plan)
{
    (void)in; (void)plan;
    return moe_fail(MOE_EINVAL, NULL, "router %s is not written yet", r->type->name);
}
const moe_router_type moe_router_hash = { "hash", "placeholder", 0, 1, NULL, NULL, route, NULL };
