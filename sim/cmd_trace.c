/* cmd_trace.c: `moesim trace info FILE`: what a recorded trace (file or folder) holds (format,
 * files, layers, tokens, experts, k, recorded weights) and its recorded load imbalance (max/mean
 * of the per-expert counts) per layer. The report is moe_trace_info (traces.c). Declared in cli.h. */
#include "cli.h"
#include "moe.h"
#include "trace.h"

#include <stdio.h>
#include <string.h>

static void usage(FILE *out)
{
    fprintf(out,
            "usage: moesim trace info PATH\n"
            "Prints what a recorded routing trace holds (format, files, layers, tokens, experts,\n"
            "k, recorded weights) and the recorded load imbalance (max/mean of the per-expert\n"
            "counts) of every layer. PATH is a trace file or a folder of them:\n"
            "  DeepSeek-V2-Lite CSV (prompt_*_data.csv), Mixtral JSONL (*_routing.jsonl),\n"
            "  FLAME-MoE csv.gz (one file per layer), Fiddler popularity JSON (a folder of\n"
            "  them gets one line per file).\n"
            "The traces live under $MOESIM_TRACES (default %s).\n",
            moe_trace_root());
}

static int is_help(const char *a) { return !strcmp(a, "--help") || !strcmp(a, "-h"); }

int moe_cmd_trace(int argc, char **argv)
{
    if ((argc >= 2 && is_help(argv[1])) || (argc >= 3 && is_help(argv[2]))) {
        usage(stdout);
        return MOE_OK;
    }
    if (argc < 2)
        return moe_fail(MOE_EINVAL, "usage: moesim trace info PATH",
                        "missing subcommand (moesim trace)");
    if (strcmp(argv[1], "info") != 0)
        return moe_fail(MOE_EINVAL, "usage: moesim trace info PATH",
                        "unknown subcommand '%s' (moesim trace)", argv[1]);
    if (argc != 3)
        return moe_fail(MOE_EINVAL, "usage: moesim trace info PATH",
                        "%s (moesim trace info)", argc < 3 ? "missing PATH" : "too many arguments");
    return moe_trace_info(argv[2], stdout);
}
