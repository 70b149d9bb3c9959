/* plot_cfg.h: what the charts of `moesim plot` (plot.h) say about the configuration of a results
 * database, read once per database before any chart is drawn: the subtitle every chart carries
 * (E, k, d, f, tokens, batches, seeds: each key with its distinct values), the swept capacity
 * factors (the x tics of the capacity-factor charts), and the configuration keys that differ
 * inside what a chart draws as one line (same distribution, shape and router). Those keys are
 * never averaged silently: the charts' queries then read `points` through a common table
 * expression that appends them to the router name ("topk [tokens=512]"), so each such
 * configuration is its own series, named in the legend.
 *
 * Also the figure size of `moesim plot --size`.
 */
#ifndef MOE_PLOT_CFG_H
#define MOE_PLOT_CFG_H

#include <sqlite3.h>

typedef struct {
    char *subtitle;  /* "E=8,16  k=1,2  d=256  f=1024  tokens=2048  batches=2  seeds=1" */
    char *cftics;    /* the swept capacity factors "0.5,0.75,1" ("" when none) */
    char *differing; /* the keys that differ inside a series, "tokens, k" ("" when none) */
    char *with;      /* "WITH points AS (...)," to prepend to a chart query (without its own
                      * "WITH "), or NULL when no key differs */
} moe_plot_cfg;

/* Read the configuration of db (db_path for messages). MOE_EDB or MOE_ENOMEM through moe_fail;
 * on error cfg holds nothing to free. */
int moe_plot_cfg_read(sqlite3 *db, const char *db_path, moe_plot_cfg *cfg);

/* Free what moe_plot_cfg_read allocated (a zeroed cfg is fine). */
void moe_plot_cfg_free(moe_plot_cfg *cfg);

/* The SQL of a chart query over the database of cfg: sql itself when no key differs, else sql
 * reading `points` through cfg->with (merged into sql's own WITH list when it has one). Every
 * chart query goes through this, so a query that reads `points` by that name gets the split
 * series. malloc'd; NULL with moe_fail when out of memory. */
char *moe_plot_cfg_sql(const moe_plot_cfg *cfg, const char *sql);

/* Figure sizes (inches) of `--size`: one column and the full text width of a two-column paper
 * (3.5 and 7.0 inches wide, the widths of the ACM, IEEE and NeurIPS templates, rounded). */
#define MOE_PLOT_COLUMN_IN 3.5
#define MOE_PLOT_PAGE_IN 7.0

/* Parse --size: "column", "page" (height 0: chosen from the panels) or "WxH" in inches
 * (0.5 to 40 each). MOE_EINVAL through moe_fail naming the text. */
int moe_plot_size_parse(const char *text, double *width_in, double *height_in);

#endif
