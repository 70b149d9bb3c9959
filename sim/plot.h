/* plot.h: charts from a results database (README.md "Charts"), drawn by gnuplot from SQLite
 * alone. For every chart, moesim exports one whitespace-separated data file DIR/NAME.dat (a
 * header naming its columns, the query it came from, the configuration and the swept capacity
 * factors, then one gnuplot `index` block per panel and series) and runs the tracked script
 * plots/NAME.gp on it three times: DIR/NAME.png (pngcairo), DIR/NAME.svg and DIR/NAME.pdf
 * (pdfcairo). A chart with more panels than one image holds (6 panel columns, 8 panel rows; with
 * a --size, what fits) is drawn as pages DIR/NAME_p1.png, _p2, ... (each in the three formats),
 * so no image passes cairo's 32767-pixel limit. Outputs are written under temporary names and
 * renamed, so a failed or interrupted gnuplot (SIGINT, SIGTERM, SIGHUP) leaves no partial chart;
 * gnuplot writes through a descriptor and never gets a file name it could run as a command.
 *
 * Every chart carries the configuration in a subtitle, and the points of one router that differ
 * in a configuration key other than capacity factor and seed are separate series (plot_cfg.h).
 *
 * Charts (NAME): drop_rate, load_imbalance, flops_per_token, output_error (vs capacity factor,
 * a line per router, a panel per distribution; output_error: against the router's own dropless
 * output, then against the dense mixture), expert_loads (sorted per-expert load bars per router
 * at the capacity factor nearest MOE_PLOT_LOAD_CF), experts_per_token (histogram for
 * expert_choice and gshard routers), throughput (tokens/s and GFLOP/s per router at that
 * capacity factor: median and nearest-rank quartiles over the timed batches of table batches);
 * with training rows (table steps), the training charts of plot_train.h.
 * A chart whose data the database does not hold (no capacity factor sweep, no expert_choice or
 * gshard point, metrics all NULL) is skipped with a note on stderr; when no chart at all can be
 * drawn, that is an error.
 *
 * The scripts are found in $MOESIM_PLOTS if set, else in plots/ of moesim's data folder
 * (paths.h); gnuplot on PATH.
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

/* The same, also printing every file written (data, PNG, SVG, PDF) to list, one path per line
 * (list may be NULL). */
int moe_plot_db_list(const char *db_path, const char *out_dir, FILE *list);

/* Options of `moesim plot`. */
typedef struct {
    const char *out_dir; /* NULL: plots/out/<db file name without .db>/ */
    double width_in;     /* figure width in inches (plot_cfg.h: moe_plot_size_parse); 0 = the
                          * automatic size in pixels (360 per panel column, 300 per panel row) */
    double height_in;    /* figure height in inches; 0 = from the panel rows */
} moe_plot_opts;

/* moe_plot_db_list with options (opts NULL: the defaults). */
int moe_plot_db_opts(const char *db_path, const moe_plot_opts *opts, FILE *list);

/* Draw only the points selected by where (an SQL condition on the columns of points) and run
 * (a run id, "last" or a spec name) in the following moe_plot_db* calls; NULL, NULL: all
 * points (store.h, moe_store_point_filter). The strings must outlive those calls. */
void moe_plot_set_filter(const char *where, const char *run);
/* Restrict the unqualified name `points` on db to the filter's points (a temporary view;
 * nothing when no filter is set). sim/plot_filter.c. */
int moe_plot_apply_filter(sqlite3 *db, const char *db_path);

#endif
