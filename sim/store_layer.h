/* store_layer.h: the column points.layer of the results database (sim/store_layer.c): the model
 * layer a point's distribution reads, generated from source_params (schema version 6). */
#ifndef MOE_STORE_LAYER_H
#define MOE_STORE_LAYER_H

#include <sqlite3.h>

/* Migration 5 -> 6: add points.layer, a virtual column generated from source_params (its
 * parameter `layer`, NULL without one). Idempotent: nothing when the column exists. path names
 * the database in errors. */
int moe_store_migrate_layer(sqlite3 *db, const char *path);

#endif
