/* cmd_list.c: `moesim list [routers|sources|metrics|options|models|presets]`: what the
 * registry, the source table, the metric table, the routing option table, the model table and
 * the preset table hold. */
#include "cli.h"
#include "metric_table.h"
#include "moe.h"
#include "models.h"
#include "options.h"
#include "presets.h"
#include "source.h"

#include <stdio.h>
#include <string.h>

/* What the store holds beside the metric table's metrics: speed and the per-rank table of
 * expert-parallel runs. */
static const char *const other_measures[][2] = {
    /* speed, stored per point by moesim run (points; per batch in batches); not compared */
    {"time_gate_s", "seconds per batch in the gate GEMM X*Wg (0 when the logits are recorded)"},
    {"time_route_s", "seconds per batch in the router"},
    {"time_dispatch_s", "seconds per batch gathering the expert inputs"},
    {"time_experts_s", "seconds per batch in the expert FFNs"},
    {"time_combine_s", "seconds per batch weighting and summing the expert outputs"},
    {"time_total_s", "seconds per batch: gate + route + dispatch + experts + combine"},
    {"tokens_per_s", "tokens / total time"},
    {"gflops_per_s", "executed FLOPs (gate, useful expert, soft dispatch and combine) / total time"},
    {"wall_s", "wall-clock seconds of the whole point, error references included"},
    /* per point and rank, table ep_ranks (moesim run --expert-parallel), means per batch; rows
     * 'global' for the point's plan, 'per_rank' for DeepSpeed's capacity from the rank's tokens */
    {"ep_ranks.plan_capacity", "slots per expert of the plan (per_rank: summed over ranks)"},
    {"ep_ranks.tokens", "entries on the rank's experts"},
    {"ep_ranks.rows_out", "dispatch rows sent to other ranks (its tokens, their experts)"},
    {"ep_ranks.rows_in", "dispatch rows received from other ranks"},
    {"ep_ranks.rows_local", "rows that stay on the rank (its tokens, its experts)"},
    {"ep_ranks.bytes_sent", "bytes sent in both all-to-alls: (rows_out + rows_in) * D * 4"},
    {"ep_ranks.bytes_recv", "bytes received in both all-to-alls"},
    {"ep_ranks.a2a_s", "seconds in the two MPI_Alltoallv calls, waiting included"},
    {"ep_ranks.expert_s", "seconds in the rank's expert FFNs"},
    {"ep_ranks.pack_s", "seconds packing dispatch rows and combining outputs"},
    {"ep_ranks.claims", "per_rank: claims of the rank's tokens"},
    {"ep_ranks.dropped", "per_rank: claims dropped by the rank's capacity ROUND(k*n_local*cf/E)"},
    {NULL, NULL},
};

int moe_cmd_list(int argc, char **argv)
{
    const char *what = argc > 1 ? argv[1] : "routers";
    if (!strcmp(what, "--help") || !strcmp(what, "-h")) {
        printf("usage: moesim list [routers|sources|metrics|options|models|presets]\n");
        return 0;
    }
    if (!strcmp(what, "routers")) {
        for (int i = 0; moe_router_types[i]; i++)
            printf("%-14s %s\n", moe_router_types[i]->name, moe_router_types[i]->summary);
    } else if (!strcmp(what, "sources")) {
        moe_source_list(stdout);
    } else if (!strcmp(what, "metrics")) {
        for (int i = 1; i <= MOE_METRIC_NROWS; i++)
            if (moe_metric_in_order(i))
                printf("%-24s %s\n", moe_metric_in_order(i)->name, moe_metric_in_order(i)->help);
        for (int i = 0; other_measures[i][0]; i++)
            printf("%-24s %s\n", other_measures[i][0], other_measures[i][1]);
    } else if (!strcmp(what, "options")) {
        moe_route_options_print(stdout, 0);
    } else if (!strcmp(what, "models")) {
        moe_models_print(stdout);
    } else if (!strcmp(what, "presets")) {
        moe_presets_print(stdout);
    } else {
        return moe_fail(MOE_EINVAL, "moesim list routers|sources|metrics|options|models|presets",
                        "unknown list '%s' (moesim list)", what);
    }
    return 0;
}

