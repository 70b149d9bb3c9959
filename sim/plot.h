/* plot.h: charts from a results database (DESIGN.md "Charts"), drawn by gnuplot from SQLite
 * alone. For every chart, moesim exports one whitespace-separated data file DIR/NAME.dat (a
 * header naming its columns and the query it came from, then one gnuplot `index` block per
 * panel and series) and runs the tracked script plots/NAME.gp on it twice: DIR/NAME.png
 * (pngcairo) and DIR/NAME.svg. Outputs are written under temporary names and renamed, so a
 * failed or interrupted gnuplot (SIGINT, SIGTERM, SIGHUP) leaves no partial chart; gnuplot
 * writes through a descriptor and never gets a file name it could run as a command.
 *
 * Charts (NAME): drop_rate, load_imbalance, flops_per_token, output_error (vs capacity factor,
 * a line per router, a panel per distribution), expert_loads (sorted per-expert load bars per
 * router at the capacity factor nearest MOE_PLOT_LOAD_CF), experts_per_token (histogram for
 * expert_choice and gshard routers), throughput (tokens/s and GFLOP/s per router). A chart whose
 * data the database does not hold (no capacity factor sweep, no expert_choice or gshard point,
 * metrics all NULL) is skipped with a note on stderr; when no chart at all can be drawn, that is
 * an error.
 *
 * The scripts are found in $MOESIM_PLOTS if set, else in plots/ under the working directory;
 * gnuplot on PATH.
 */
#ifndef MOE_PLOT_H
#define MOE_PLOT_H

#include <sqlite3.h>
#include <stdio.h>

#define MOE_PLOT_LOAD_CF 1.0 /* capacity factor of the expert_loads chart (nearest stored) */

/* Draw every chart of the results database db_path into out_dir (created if missing; NULL =
 * plots/out/<db file name without .db>/), then print one line on stdout saying how many charts
 * were drawn and where. Errors (MOE_EDB, MOE_EIO, MOE_ENOMEM, MOE_EINVAL through moe_fail): the
 * database cannot be opened read-only, is not a moesim database, has another schema version
 * or no points; gnuplot is not on PATH; a script is missing; gnuplot fails. The database and
 * gnuplot are checked before anything is written. */
int moe_plot_db(const char *db_path, const char *out_dir);

/* The same, also printing every file written (data, PNG, SVG) to list, one path per line
 * (list may be NULL). */
int moe_plot_db_list(const char *db_path, const char *out_dir, FILE *list);

/* Draw only the points selected by where (an SQL condition on the columns of points) and run
 * (a run id, "last" or a spec name) in the following moe_plot_db* calls; NULL, NULL: all
 * points (store.h, moe_store_point_filter). The strings must outlive those calls. */
void moe_plot_set_filter(const char *where, const char *run);
/* Restrict the unqualified name `points` on db to the filter's points (a temporary view;
 * nothing when no filter is set). sim/plot_filter.c. */
int moe_plot_apply_filter(sqlite3 *db, const char *db_path);

#endif
