/* cluster_store.h: the results database's tables of the cluster model (written by
 * sim/store.c's transaction of a point): cluster_points (one row per point with a cluster
 * configuration), devices (one row per device), nodes_per_token (histogram) and node_traffic
 * (node-to-node dispatch bytes). Means per measured batch. */
#ifndef MOE_CLUSTER_STORE_H
#define MOE_CLUSTER_STORE_H

#include "cluster_point.h"

#include <sqlite3.h>

/* CREATE TABLE IF NOT EXISTS statements (schema version 3; the migration 2 -> 3 runs them). */
extern const char moe_cluster_store_sql[];

/* Insert the rows of point id (inside the caller's transaction). path names the database in
 * errors. */
int moe_cluster_store_put(sqlite3 *db, const char *path, sqlite3_int64 id,
                          const moe_cluster_result *r);

#endif
