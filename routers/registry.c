/* registry.c: the NULL-terminated table of router types. Adding a router is one new file in
 * routers/ (defining `const moe_router_type moe_router_NAME`) and two lines here;
 * `moesim list routers` and the test suite iterate this table. */
#include "moe.h"

extern const moe_router_type moe_router_topk, moe_router_switch, moe_router_gshard,
    moe_router_expert_choice, moe_router_hash, moe_router_soft_moe;
extern const moe_router_type moe_router_replay;
extern const moe_router_type moe_router_base, moe_router_sinkhorn, moe_router_dsv3_bias,
    moe_router_dense;
extern const moe_router_type moe_router_topp, moe_router_relu;

const moe_router_type *const moe_router_types[] = {
    &moe_router_topk,
    &moe_router_switch,
    &moe_router_gshard,
    &moe_router_expert_choice,
    &moe_router_hash,
    &moe_router_soft_moe,
    &moe_router_base,
    &moe_router_sinkhorn,
    &moe_router_dsv3_bias,
    &moe_router_dense,
    &moe_router_replay,
    &moe_router_topp,
    &moe_router_relu,
    NULL,
};
