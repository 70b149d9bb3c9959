/* dsv3_bias.h: the per-expert bias state of the stateful `dsv3_bias` router
 * (routers/dsv3_bias.c), exposed so that tests and reports can read it. */
#ifndef MOE_DSV3_BIAS_H
#define MOE_DSV3_BIAS_H

#include "moe.h"

/* The router's bias b (E), as updated by its observe step; NULL if r is not a dsv3_bias
 * router. Valid until the router is freed. */
const double *moe_dsv3_bias_state(const moe_router *r);

#endif
