/* plot_charts.h: the chart table of `moesim plot` (plot.c draws it): for each chart its name
 * (plots/NAME.gp), its data columns and the SQL query that produces them from the results
 * database. Every query returns NLAYOUT layout columns, then the data columns written to the
 * chart's data file (the layout columns are described in plot.c):
 *   nkey keys and x, nmetric metric columns (the chart needs one non-NULL value), a count
 *   (points, batches or tokens), then nerr columns of error half-widths, the j-th for the j-th
 *   metric: the 95% confidence interval of the mean over seeds, t_{0.975,n-1} sd / sqrt(n)
 *   (Student t from the table student_t, sd the sample standard deviation over the n points
 *   of the configuration; NULL for n = 1).
 */
#ifndef MOE_PLOT_CHARTS_H
#define MOE_PLOT_CHARTS_H

#include <sqlite3.h>

enum { NLAYOUT = 7 };

typedef struct {
    const char *name;    /* plots/NAME.gp, DIR/NAME.{dat,png,svg} */
    const char *what;    /* for notes and the data file header */
    const char *columns; /* the data columns (after the 7 layout columns) */
    int nkey;            /* leading data columns that are keys or x */
    int nmetric;         /* metric columns after them: the chart needs one non-NULL value */
    int needs_cf;        /* needs a capacity factor sweep */
    int panel_rows;      /* rows of panels per data row (for the image height); 0 = data rows */
    const char *empty;   /* why the query can return nothing */
    const char *sql;
    int nerr;            /* error half-width columns after the count (0 or nmetric) */
} moe_plot_chart;

/* The charts drawn for every database with points, in order. */
extern const moe_plot_chart moe_plot_charts[];
extern const int moe_plot_ncharts;
/* Expert parallelism (table ep_ranks): drawn only when the database has ep_ranks rows. */
extern const moe_plot_chart moe_plot_ep_chart;
/* The experts-per-token histogram of topp and relu: drawn only when the database has such
 * points (moe_plot_dynamic_has_rows). */
extern const moe_plot_chart moe_plot_dynamic_chart;
int moe_plot_dynamic_has_rows(sqlite3 *db);
/* The cluster model (tables cluster_points, devices, node_traffic): drawn only when the
 * database has cluster_points rows. */
extern const moe_plot_chart moe_plot_cluster_charts[];
extern const int moe_plot_ncluster;
/* 1 when db has the cluster tables and a cluster_points row. */
int moe_plot_cluster_has_rows(sqlite3 *db);
/* Training runs (plot_train.h): drawn only when the database has steps rows. */
extern const moe_plot_chart moe_plot_train_charts[];
extern const int moe_plot_ntrain;

#endif
