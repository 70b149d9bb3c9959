/* gaussian.c: the `gaussian` token source: x ~ N(0, sigma^2 I), isotropic; ids uniform over
 * vocab. Both from the batch's token stream (source.c states the streams). */
#include "source.h"

static const moe_source_param gaussian_params[] = {
    MOE_SP_SIGMA("standard deviation of every coordinate"),
    MOE_SP_VOCAB("32000", 32000, 2147483647.0),
    MOE_SP_GATE_SCALE,
    MOE_SP_END,
};

static int gaussian_open(moe_source *s)
{
    (void)s; /* sigma is read per batch */
    return MOE_OK;
}

static int gaussian_batch(moe_source *s, int b)
{
    (void)b;
    moe_source_fill_x_gaussian(s, moe_source_num(s, "sigma"));
    moe_source_fill_ids_uniform(s);
    return MOE_OK;
}

const moe_source_type moe_source_gaussian = {
    .name = "gaussian",
    .summary = "x ~ N(0, sigma^2 I), isotropic; ids uniform over vocab",
    .params = gaussian_params,
    .open = gaussian_open,
    .batch = gaussian_batch,
};
