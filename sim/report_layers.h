/* report_layers.h: `moesim report` over the layers of a model (sim/report_layers.c): for the
 * points whose distribution names a model layer (points.layer, from a layer or layers key),
 * grouped into sweeps over layers (points whose configuration keys differ only in the layer
 * number and the cluster configuration, which does not change the routing):
 *   across layers   p50, p90, p95 and max over the layers of the layer's load imbalance
 *                   (points.load_imbalance: max/mean of the assigned load per expert, mean over
 *                   the point's batches), with the worst layer; percentiles by linear
 *                   interpolation between the sorted values (GSL's gsl_stats_quantile, NumPy's
 *                   default "linear");
 *   within a layer  min, max and std (population: divided by E) of the tokens per expert
 *                   (expert_loads.assigned, mean per batch).
 * Several points of one group and layer (seeds, cluster configurations) are averaged. Reads
 * the unqualified `points` (moe_store_reader_setup's selection). */
#ifndef MOE_REPORT_LAYERS_H
#define MOE_REPORT_LAYERS_H

#include <jansson.h>
#include <sqlite3.h>
#include <stdio.h>

/* Both tables as text on out; nothing when no selected point has a layer (or the database
 * predates points.layer). */
int moe_report_layers_text(sqlite3 *db, const char *path, FILE *out);
/* The same as root["layers"], an array of groups (absent when there are none). */
int moe_report_layers_json(sqlite3 *db, const char *path, json_t *root);

#endif
