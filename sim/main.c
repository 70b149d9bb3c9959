/* main.c: the moesim command line. Parses the command word and dispatches; the only place that
 * prints library errors and exits. */
#include "cli.h"
#include "moe.h"
#include "source.h"
#include "options.h"

#include <stdio.h>
#include <string.h>

typedef struct {
    const char *name;
    int (*fn)(int, char **);
    const char *help;
} command;

static const command commands[] = {
    {"run", moe_cmd_run, "run an experiment spec into SQLite (resumable), then draw its charts"},
    {"plot", moe_cmd_plot, "draw the charts of a results database with gnuplot (PNG, SVG)"},
    {"report", moe_cmd_report, "print the points of a results database (table or --csv)"},
    {"compare", moe_cmd_compare, "compare recorded metrics of two runs; exit 1 on drift"},
    {"route", moe_cmd_route, "route one logits matrix; write the plan, metrics, layer output"},
    {"list", moe_cmd_list, "list routers, sources, metrics or options"},
    {"trace", moe_cmd_trace, "moesim trace info PATH: what a recorded trace holds, load per layer"},
    {"bench", moe_cmd_bench, "layer speed against a dense GEMM pair and PyTorch (make bench)"},
    {NULL, NULL, NULL},
};

static void usage(FILE *out)
{
    fprintf(out, "usage: moesim COMMAND [options]   (moesim COMMAND --help for each)\n\n");
    for (const command *c = commands; c->name; c++)
        fprintf(out, "  %-8s %s\n", c->name, c->help);
}

/* ---- moesim list ---- */

static const char *const metric_names[][2] = {
    {"assigned_load", "(E) claims on each expert before capacity"},
    {"kept_load", "(E) entries kept on each expert"},
    {"importance", "(E) summed gate values of the claims on each expert before capacity"},
    {"load_imbalance", "max/mean of assigned_load"},
    {"kept_load_imbalance", "max/mean of kept_load"},
    {"load_cv", "population std/mean of assigned_load"},
    {"assignment_drop_rate", "dropped claims / all claims"},
    {"token_drop_rate", "tokens with no kept entry / n"},
    {"importance_cv2", "CV^2 (population) of importance"},
    {"aux_loss", "the router's auxiliary balancing loss (ROUTING.md section 3)"},
    {"z_loss", "mean over tokens of logsumexp(L[t,:])^2"},
    {"capacity", "slots per expert C"},
    {"num_entries", "plan entries"},
    {"n_tokens", "tokens per routing group T"},
    {"experts_per_token", "(E+1) histogram of tokens by number of experts kept"},
    {"flops_gate", "2*n*d*M"},
    {"flops_expert_useful", "4*d*f per kept entry (6*d*f for SwiGLU)"},
    {"flops_expert_padded", "E*C*4*d*f: what a capacity-padded implementation executes"},
    {"flops_soft_dispatch", "2*n*M*d (soft_moe)"},
    {"flops_soft_combine", "2*n*M*d (soft_moe)"},
    {"output_error_dense", "relative L2 distance from the dense mixture sum_e p[t,e] FFN_e(x_t)"},
    {"output_error_dropless", "relative L2 distance from the router's own dropless output"},
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
        printf("usage: moesim list [routers|sources|metrics|options]\n");
        return 0;
    }
    if (!strcmp(what, "routers")) {
        for (int i = 0; moe_router_types[i]; i++)
            printf("%-14s %s\n", moe_router_types[i]->name, moe_router_types[i]->summary);
    } else if (!strcmp(what, "sources")) {
        moe_source_list(stdout);
    } else if (!strcmp(what, "metrics")) {
        for (int i = 0; metric_names[i][0]; i++)
            printf("%-24s %s\n", metric_names[i][0], metric_names[i][1]);
    } else if (!strcmp(what, "options")) {
        moe_route_options_print(stdout, 0);
    } else {
        return moe_fail(MOE_EINVAL, "moesim list routers|sources|metrics|options",
                        "unknown list '%s' (moesim list)", what);
    }
    return 0;
}

int main(int argc, char **argv)
{
    moe_install_gsl_handler();
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") ||
        !strcmp(argv[1], "help")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    for (const command *c = commands; c->name; c++) {
        if (strcmp(c->name, argv[1]) == 0) {
            /* run, route (with a layer) and bench warn themselves when OPENBLAS_CORETYPE
             * forces weaker kernels, just before their GEMMs run */
            int rc = c->fn(argc - 1, argv + 1);
            if (rc) {
                fprintf(stderr, "moesim: error: %s\n", moe_errmsg());
                if (*moe_errhint())
                    fprintf(stderr, "hint: %s\n", moe_errhint());
            }
            return rc ? 1 : 0;
        }
    }
    fprintf(stderr, "moesim: error: unknown command '%s' (command line)\n", argv[1]);
    fprintf(stderr, "hint: moesim --help lists the commands\n");
    return 2;
}
