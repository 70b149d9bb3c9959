/* metric_table.h: the one table of routing metrics (sim/metric_table.c). Each row is a field of
 * moe_metrics with its kind, help, place in the metrics JSON, `moesim report` column and the
 * tolerance `moesim compare` gives it; the table drives the JSON (sim/metrics.c), the schema
 * (sim/store.c, through moe_point_metrics), `report`, `list metrics` and `compare`. Adding a
 * metric is one field in moe_metrics (computed in sim/metrics.c) and one row in the table. */
#ifndef MOE_METRIC_TABLE_H
#define MOE_METRIC_TABLE_H

#include "point.h"

enum moe_metric_kind {
    MOE_METRIC_DOUBLE,        /* double scalar: a column of points and batches */
    MOE_METRIC_LONG,          /* long scalar (counts): a column of points and batches */
    MOE_METRIC_INT,           /* int describing the plan (E): JSON only */
    MOE_METRIC_EXPERT_LONG,   /* long * (E) per expert: a column of expert_loads */
    MOE_METRIC_EXPERT_DOUBLE, /* double * (E) per expert: a column of expert_loads */
    MOE_METRIC_HISTOGRAM,     /* long * (E+1) tokens by experts kept: table experts_per_token */
    MOE_METRIC_GROUP_HISTOGRAM /* long * (G+1) tokens by expert groups kept: table groups_touched */
};

/* `moesim compare`: a value passes when |b - c| <= atol + rtol * max(|b|, |c|), with rtol and
 * atol of the metric's class. The _std of a metric is MOE_TOL_ROUTING, of an output error
 * MOE_TOL_OUTPUT. */
enum moe_metric_tol {
    MOE_TOL_ROUTING, /* computed in double by moesim from the logits: rtol 1e-9 */
    MOE_TOL_EXACT,   /* counts: exact, always */
    MOE_TOL_OUTPUT   /* errors of fp32 layer outputs: rtol 1e-6 + atol 1e-6 */
};

/* Every metric: the scalars of moe_point_metrics (rows 0..MOE_POINT_NMETRICS-1, in the stored
 * column order), then the plan size and the array metrics. */
enum { MOE_METRIC_NROWS = MOE_POINT_NMETRICS + 6 };
const moe_point_metric *moe_metric_row(int i); /* i in 0..MOE_METRIC_NROWS-1, else NULL */
/* The row at position pos (1..MOE_METRIC_NROWS) of the metrics JSON and `moesim list metrics`,
 * or NULL. */
const moe_point_metric *moe_metric_in_order(int pos);
/* The row whose name or (array metrics) column is name, or NULL. */
const moe_point_metric *moe_metric_find(const char *name);
/* A scalar row's value in mt, as a double. */
double moe_metric_value(const moe_metrics *mt, const moe_point_metric *m);
/* An array row's length in mt: E, E+1 for the experts-per-token histogram, G+1 for the
 * groups-touched histogram (G = mt->groups); 1 for scalars. */
size_t moe_metric_len(const moe_point_metric *m, const moe_metrics *mt);

#endif
