/* cmd_plot.c: `moesim plot DB [--out DIR] [--size column|page|WxH] [--where COND] [--run RUN]`
 * (cli.h): draws the charts of a results database with gnuplot (sim/plot.h) into DIR (default
 * plots/out/<DB file name without .db>/) and prints the files written, one per line. When the
 * selected points hold several configurations (keys other than capacity factor and seed that
 * differ), it says which keys differ on stderr, so that a chart is never read as one
 * configuration by mistake. */
#include "cli.h"
#include "moe.h"
#include "plot.h"
#include "plot_cfg.h"
#include "store.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char usage_text[] =
    "usage: moesim plot DB [--out DIR] [--size column|page|WxH] [--where COND] [--run RUN]\n"
    "Draws the charts of a results database (moesim run) with gnuplot, from SQLite alone:\n"
    "  drop_rate          dropped assignments and tokens (%) vs capacity factor\n"
    "  load_imbalance     max/mean expert load, assigned and kept, vs capacity factor\n"
    "  flops_per_token    useful vs capacity-padded FLOPs per token vs capacity factor\n"
    "  output_error       relative L2 error vs the router's own dropless output and vs\n"
    "                     the dense mixture, vs capacity factor\n"
    "  expert_loads       per-expert loads, sorted, per router at capacity factor 1.0\n"
    "  experts_per_token  experts-per-token histogram (expert_choice, gshard)\n"
    "  throughput         tokens/s and achieved GFLOP/s per router (median and IQR over\n"
    "                     batches, or marked as a single sample)\n"
    "  ep_ranks           per-rank load, bytes and times (only after run --expert-parallel)\n"
    "  experts_per_token_dynamic  the same for topp and relu (when there are some)\n"
    "with a cluster model (a [cluster.NAME] section), a panel per placement:\n"
    "  cluster_loads      expert rows and tokens per device, balancedness (mean/max)\n"
    "  cluster_traffic    heatmap of the dispatch bytes from node to node\n"
    "  cluster_step       step time per placement and router: dispatch, experts, combine\n"
    "with training runs (a [train] section), over training steps at cf 1.0 or nearest:\n"
    "  train_loss         training and held-out loss, aux loss, z-loss\n"
    "  train_balance      load imbalance, drop rates, dead experts\n"
    "  train_loads        heatmap of each expert's share of the kept load\n"
    "  train_routing      specialisation, routing fluctuation, gate entropy\n"
    "  train_final        final held-out loss and useful FLOPs per token vs capacity factor\n"
    "each as DIR/NAME.png, DIR/NAME.svg and DIR/NAME.pdf, with its data in DIR/NAME.dat; a\n"
    "chart with more panels than fit one image is split into pages NAME_p1.png, _p2, ...\n"
    "Every chart names the configuration (E, k, d, f, tokens, batches, seeds) in its subtitle;\n"
    "points of one router that differ in another key (tokens, k, ...) are separate series.\n"
    "  --out DIR    output folder (default plots/out/<DB file name without .db>)\n"
    "  --size S     figure size for a paper: column (3.5 in wide), page (7 in wide, two\n"
    "               columns) or WxH in inches (e.g. 3.5x2.5); PNG at 300 dpi. Default: a\n"
    "               screen size in pixels from the number of panels\n"
    "  --where COND only the points matching an SQL condition on the columns of points,\n"
    "               e.g. --where \"tokens = 2048 AND k = 2\"\n"
    "  --run RUN    only the points stored by run RUN: its id (table runs), 'last', or a\n"
    "               spec name (its last run)\n"
    "When the selected points differ in keys other than cf and seed, moesim says which.\n"
    "The scripts NAME.gp are read from $MOESIM_PLOTS, else from plots/ of moesim's data\n"
    "folder ($MOESIM_DATA, the source tree holding the binary, or the installed one:\n"
    "moesim --version names it).\n"
    "Needs gnuplot with the pngcairo, svg and pdfcairo terminals (Debian: gnuplot-nox; make deps).\n";

int moe_plot_note_varying(const char *db_path, const char *where, const char *run)
{
    moe_store *st = NULL;
    int rc = moe_store_open(db_path, 1, &st);
    if (rc)
        return rc;
    char *cond = NULL, *keys = NULL;
    if (where || run)
        rc = moe_store_point_filter(moe_store_db(st), where, run, &cond);
    if (!rc)
        rc = moe_store_varying_keys(moe_store_db(st), cond, MOE_STORE_CHART_GROUP, &keys);
    if (!rc && *keys)
        fprintf(stderr, "moesim plot: note: the selected points hold several configurations:"
                        " points of one router, distribution and shape differ in %s (besides cf and"
                        " seed); the charts must tell them apart, or select one with --where\n", keys);
    free(cond);
    free(keys);
    moe_store_close(st);
    return rc;
}

int moe_cmd_plot(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"out", required_argument, NULL, 'o'},
        {"size", required_argument, NULL, 's'},
        {"where", required_argument, NULL, 'w'},
        {"run", required_argument, NULL, 'r'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    moe_plot_opts opts = {NULL, 0.0, 0.0};
    const char *where = NULL, *run = NULL;
    int c, rc;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "ho:s:", longopts, NULL)) != -1) {
        switch (c) {
        case 'o': opts.out_dir = optarg; break;
        case 's':
            if ((rc = moe_plot_size_parse(optarg, &opts.width_in, &opts.height_in)))
                return rc;
            break;
        case 'w': where = optarg; break;
        case 'r': run = optarg; break;
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
    if (!(rc = moe_plot_note_varying(argv[optind], where, run))) {
        moe_plot_set_filter(where, run);
        rc = moe_plot_db_opts(argv[optind], &opts, stdout);
        moe_plot_set_filter(NULL, NULL);
    }
    return rc;
}
