/* cmd_plot.c: `moesim plot DB [--out DIR]` (cli.h): draws the charts of a results database with
 * gnuplot (sim/plot.h) into DIR (default plots/out/<DB file name without .db>/) and prints the
 * files written, one per line. */
#include "cli.h"
#include "moe.h"
#include "plot.h"

#include <getopt.h>
#include <stdio.h>

static const char usage_text[] =
    "usage: moesim plot DB [--out DIR]\n"
    "Draws the charts of a results database (moesim run) with gnuplot, from SQLite alone:\n"
    "  drop_rate          dropped assignments and tokens (%) vs capacity factor\n"
    "  load_imbalance     max/mean expert load, assigned and kept, vs capacity factor\n"
    "  flops_per_token    useful vs capacity-padded FLOPs per token vs capacity factor\n"
    "  output_error       relative L2 error vs the dense mixture (and dropless) vs cf\n"
    "  expert_loads       per-expert loads, sorted, per router at capacity factor 1.0\n"
    "  experts_per_token  experts-per-token histogram (expert_choice, gshard)\n"
    "  throughput         tokens/s and achieved GFLOP/s per router\n"
    "  ep_ranks           per-rank load, bytes and times (only after run --expert-parallel)\n"
    "with training runs (a [train] section), over training steps at cf 1.0 or nearest:\n"
    "  train_loss         training and held-out loss, aux loss, z-loss\n"
    "  train_balance      load imbalance, drop rates, dead experts\n"
    "  train_loads        heatmap of each expert's share of the kept load\n"
    "  train_routing      specialisation, routing fluctuation, gate entropy\n"
    "  train_final        final held-out loss and useful FLOPs per token vs capacity factor\n"
    "each as DIR/NAME.png and DIR/NAME.svg, with its data in DIR/NAME.dat.\n"
    "  --out DIR    output folder (default plots/out/<DB file name without .db>)\n"
    "The scripts NAME.gp are read from $MOESIM_PLOTS, else from plots/ of moesim's data\n"
    "folder ($MOESIM_DATA, the source tree holding the binary, or the installed one:\n"
    "moesim --version names it).\n"
    "Needs gnuplot with the pngcairo and svg terminals (Debian: gnuplot-nox; make deps).\n";

int moe_cmd_plot(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"out", required_argument, NULL, 'o'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *out_dir = NULL;
    int c;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "ho:", longopts, NULL)) != -1) {
        switch (c) {
        case 'o': out_dir = optarg; break;
        case 'h': fputs(usage_text, stdout); return MOE_OK;
        default:
            return moe_fail(MOE_EINVAL, "moesim plot --help lists the options",
                            "unknown option or missing value '%s' (moesim plot)",
                            argv[optind - 1]);
        }
    }
    if (optind != argc - 1)
        return moe_fail(MOE_EINVAL, "moesim plot results/default.db [--out DIR]",
                        optind >= argc ? "no database given (moesim plot)"
                                       : "more than one database given (moesim plot)");
    return moe_plot_db_list(argv[optind], out_dir, stdout);
}
