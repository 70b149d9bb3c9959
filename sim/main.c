/* main.c: the moesim command line. Parses the command word and dispatches; the only place that
 * prints library errors and exits. Exit status: 0, 1 on an error, 2 on a bad command line, and
 * 128 + N when a command stopped on signal N (SIGINT: 130), as a shell reports it. */
#include "cli.h"
#include "moe.h"
#include "mpi_calib.h"
#include "provenance.h"

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
    {"calibrate", moe_cmd_calibrate, "under mpirun: fit the cluster model's latency and bandwidth"},
    {NULL, NULL, NULL},
};

static void usage(FILE *out)
{
    fprintf(out, "usage: moesim COMMAND [options]   (moesim COMMAND --help for each)\n"
                 "       moesim --version\n\n");
    for (const command *c = commands; c->name; c++)
        fprintf(out, "  %-9s %s\n", c->name, c->help);
    fprintf(out, "\nEnvironment: MOESIM_DATA (the folder holding plots/ and experiments/data/),\n"
                 "MOESIM_PLOTS (the gnuplot scripts), MOESIM_TRACES (the recorded traces).\n"
                 "Manual: man moesim, and docs/ in the source tree.\n");
}

int main(int argc, char **argv)
{
    moe_install_gsl_handler();
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") ||
        !strcmp(argv[1], "help")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    if (!strcmp(argv[1], "--version") || !strcmp(argv[1], "-V")) {
        moe_provenance_print_version(stdout);
        return 0;
    }
    for (const command *c = commands; c->name; c++) {
        if (strcmp(c->name, argv[1]) == 0) {
            /* run, route (with a layer) and bench warn themselves when OPENBLAS_CORETYPE
             * forces weaker kernels, just before their GEMMs run */
            int rc = c->fn(argc - 1, argv + 1);
            if (rc > 128) { /* stopped by signal rc - 128 (sim/cmd_run.c) */
                fprintf(stderr, "moesim: %s\n", moe_errmsg());
                if (*moe_errhint())
                    fprintf(stderr, "hint: %s\n", moe_errhint());
                return rc;
            }
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
