/* report.h: the tables of `moesim report` as text matrices (sim/cmd_report.c), shared by its
 * aligned, CSV, JSON and HTML outputs (sim/report_html.c). */
#ifndef MOE_REPORT_H
#define MOE_REPORT_H

#include "store.h"

/* column: header, SQL expression, printf format for the table (NULL = text) */
typedef struct {
    const char *header, *expr, *fmt;
} moe_report_col;

/* A fetched table: ncols headers and nrows rows of text cells (NULL cells print "-" in the
 * aligned table, "" in CSV). */
typedef struct {
    const moe_report_col *cols;
    int ncols;
    size_t nrows;
    char **cell; /* (nrows, ncols), malloc'd */
} moe_report_table;

enum { MOE_REPORT_CONFIGS, MOE_REPORT_POINTS };

/* Fetch the configurations over seeds (MOE_REPORT_CONFIGS: one row per configuration, the main
 * metrics as mean, 95% confidence interval over seeds and sd over batches) or the points
 * (MOE_REPORT_POINTS) of the selected points (moe_store_reader_setup done on the connection).
 * full: numbers at full precision (%.9g) instead of the table formats. */
int moe_report_fetch(moe_store *st, int which, int full, moe_report_table *t);
void moe_report_table_free(moe_report_table *t);

/* Write DIR/report.html: one self-contained page with the provenance, the runs and their spec
 * text, the configurations table and every chart inline as SVG (charts drawn into a temporary
 * folder with the point filter where/run). */
int moe_report_html(moe_store *st, const char *db_path, const char *where, const char *run,
                    const char *dir);

#endif
