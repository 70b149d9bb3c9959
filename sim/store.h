/* store.h: the results database (SQLite, DESIGN.md "Results database"). One row per sweep point
 * in `points` with every configuration value in its own column, the provenance, the mean and
 * std over batches of every scalar metric and the timings; per-expert loads in `expert_loads`,
 * per-batch rows in `batches`, the experts-per-token histogram in `experts_per_token`; views
 * `summary`, `by_router_cf`, `loads` and `provenance` for `sqlite3 results/x.db`.
 *
 * Schema versioned with PRAGMA user_version (MOE_STORE_VERSION), WAL journal, STRICT tables,
 * each point written in one transaction, prepared statements kept for the store's lifetime.
 */
#ifndef MOE_STORE_H
#define MOE_STORE_H

#include "point.h"
#include "provenance.h"

#include <sqlite3.h>

#define MOE_STORE_VERSION 1

typedef struct moe_store moe_store;

/* Open (creating when writable and absent) a results database. A database with a newer
 * user_version, a file that is not a moesim database, a read-only file or folder, or a database
 * another process holds a write lock on (busy timeout 250 ms): MOE_EDB with a clear message and
 * nothing written. readonly: open for reading only (moesim report). */
int moe_store_open(const char *path, int readonly, moe_store **out);
void moe_store_close(moe_store *st); /* NULL is a no-op */

/* id of the point stored under config_key, or 0 in *id when there is none. */
int moe_store_find(moe_store *st, const char *config_key, long long *id);

/* Write one point (its row, expert loads, batches and histogram) in one transaction; replace:
 * delete a stored point with the same config_key first (in the same transaction). Without
 * replace, a stored point with the same key is an error. On any error nothing is written. */
int moe_store_put(moe_store *st, const char *spec_name, const moe_point *pt,
                  const moe_point_result *res, const moe_provenance *pv, int replace);

/* The connection, for queries (report, summary). */
sqlite3 *moe_store_db(moe_store *st);
const char *moe_store_path(const moe_store *st);

#endif
