/* cmd_plot.c: `moesim plot DB [--out DIR] [--where COND] [--run RUN]` (cli.h): draws the charts
 * of a results database with gnuplot (sim/plot.h) into DIR (default plots/out/<DB file name
 * without .db>/) and prints the files written, one per line. When the selected points hold
 * several configurations (keys other than capacity factor and seed that differ), it says which
 * keys differ on stderr, so that a chart is never read as one configuration by mistake. */
#include "cli.h"
#include "moe.h"
#include "plot.h"
#include "store.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char usage_text[] =
    "usage: moesim plot DB [--out DIR] [--where COND] [--run RUN]\n"
    "Draws the charts of a results database (moesim run) with gnuplot, from SQLite alone:\n"
    "  drop_rate          dropped assignments and tokens (%) vs capacity factor\n"
    "  load_imbalance     max/mean expert load, assigned and kept, vs capacity factor\n"
    "  flops_per_token    useful vs capacity-padded FLOPs per token vs capacity factor\n"
    "  output_error       relative L2 error vs the dense mixture (and dropless) vs cf\n"
    "  expert_loads       per-expert loads, sorted, per router at capacity factor 1.0\n"
    "  experts_per_token  experts-per-token histogram (expert_choice, gshard)\n"
    "  throughput         tokens/s and achieved GFLOP/s per router\n"
    "  ep_ranks           per-rank load, bytes and times (only after run --expert-parallel)\n"
    "each as DIR/NAME.png and DIR/NAME.svg, with its data in DIR/NAME.dat.\n"
    "  --out DIR    output folder (default plots/out/<DB file name without .db>)\n"
    "  --where COND only the points matching an SQL condition on the columns of points,\n"
    "               e.g. --where \"tokens = 2048 AND k = 2\"\n"
    "  --run RUN    only the points stored by run RUN: its id (table runs), 'last', or a\n"
    "               spec name (its last run)\n"
    "When the selected points differ in keys other than cf and seed, moesim says which.\n"
    "The scripts NAME.gp are read from $MOESIM_PLOTS, else from plots/ of moesim's data\n"
    "folder ($MOESIM_DATA, the source tree holding the binary, or the installed one:\n"
    "moesim --version names it).\n"
    "Needs gnuplot with the pngcairo and svg terminals (Debian: gnuplot-nox; make deps).\n";

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
        {"where", required_argument, NULL, 'w'},
        {"run", required_argument, NULL, 'r'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *out_dir = NULL, *where = NULL, *run = NULL;
    int c;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "ho:", longopts, NULL)) != -1) {
        switch (c) {
        case 'o': out_dir = optarg; break;
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
    char *dir = NULL;
    if (out_dir) { /* "charts/" and "charts" name the same folder: print charts/x.dat */
        size_t n = strlen(out_dir);
        while (n > 1 && out_dir[n - 1] == '/')
            n--;
        if (!(dir = malloc(n + 1)))
            return moe_fail(MOE_ENOMEM, NULL, "out of memory (moesim plot)");
        memcpy(dir, out_dir, n);
        dir[n] = '\0';
    }
    int rc = moe_plot_note_varying(argv[optind], where, run);
    if (!rc) {
        moe_plot_set_filter(where, run);
        rc = moe_plot_db_list(argv[optind], dir, stdout);
        moe_plot_set_filter(NULL, NULL);
    }
    free(dir);
    return rc;
}
