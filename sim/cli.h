/* cli.h: the moesim subcommands. main.c parses the command word and calls one of these with
 * argv[0] = the command word; each returns 0 or a moe status code (message in moe_errmsg()),
 * or 128 + N when it stopped on signal N (moesim run on SIGINT or SIGTERM), main.c's exit
 * status then. */
#ifndef MOE_CLI_H
#define MOE_CLI_H

int moe_cmd_route(int argc, char **argv);
int moe_cmd_list(int argc, char **argv);
/* `moesim trace info FILE`: what a recorded trace holds and its recorded load per layer. */
int moe_cmd_trace(int argc, char **argv);
/* `moesim bench`: layer speed against BLAS and PyTorch; sim/cmd_bench.c. */
int moe_cmd_bench(int argc, char **argv);

/* `moesim run SPEC [--set key=value]... [--db PATH] [--force] [--no-plots]`: run a sweep into
 * SQLite, resuming (sim/cmd_run.c). */
int moe_cmd_run(int argc, char **argv);
/* `moesim report DB [--csv]`: the stored points and their main metrics (sim/cmd_report.c). */
int moe_cmd_report(int argc, char **argv);
/* `moesim plot DB [--out DIR]`: the charts of a results database, by gnuplot (sim/cmd_plot.c). */
int moe_cmd_plot(int argc, char **argv);
/* Print on stderr which configuration keys differ among the points of db_path selected by
 * where and run (NULL: all), when any do (cmd_plot.c). */
int moe_plot_note_varying(const char *db_path, const char *where, const char *run);
/* `moesim compare BASELINE CANDIDATE [--rtol X] [--atol X]` and `moesim compare --record SOURCE
 * FILE`: regression tests on recorded metrics; drift is MOE_EINVAL (sim/cmd_compare.c). */
int moe_cmd_compare(int argc, char **argv);

#endif
