/* drift.c: the `drift` token source: clustered (clustered.c), but at batch b cluster
 * (i + b*drift_step) mod clusters gets weight w_i, so the weight ranking rotates by drift_step
 * clusters per batch (a shifting expert popularity); ids uniform over vocab. */
#include "clustered.h"

static const moe_source_param drift_params[] = {
    MOE_SP_CLUSTERS,
    {"drift_step", MOE_SP_INT, "1", 1, 0, 1 << 30, 0, NULL,
     "the weight ranking rotates by this many clusters per batch"},
    MOE_SP_END,
};

const moe_source_type moe_source_drift = {
    .name = "drift",
    .summary = "clustered, but at batch b cluster (i + b*drift_step) mod clusters gets weight "
               "w_i: the weight ranking rotates by drift_step clusters per batch; ids uniform "
               "over vocab",
    .params = drift_params,
    .open = moe_clustered_open,
    .batch = moe_clustered_batch,
    .close = moe_clustered_close,
    .gate_dirs = moe_clustered_gate_dirs,
};
