/* compare_drift.h: the drift table of `moesim compare` (sim/cmd_compare.c) and its printing
 * (sim/compare_drift.c): one row per value that drifted, then a summary per metric family and
 * per router. */
#ifndef MOE_COMPARE_DRIFT_H
#define MOE_COMPARE_DRIFT_H

#include <stddef.h>

enum { NAME_LEN = 48 };

typedef struct {
    const char *key;  /* the point's config_key */
    char metric[NAME_LEN];
    char base[32], cand[32], rel[16], tol[40];
} drift_row;

typedef struct {
    drift_row *rows;
    size_t n, cap;
    size_t values, drifted, points_drifted, missing, extra, metrics_missing, metrics_extra;
} drift;

/* The metric name with indices replaced by a letter: importance[3] -> importance[e]. */
void moe_compare_metric_family(const char *name, char *out, size_t len);
/* The drift table, at most max_rows rows (0 = all). */
void moe_compare_print_table(const drift *d, size_t max_rows);
/* The summary per metric family and per router. */
int moe_compare_print_summary(const drift *d);

#endif
