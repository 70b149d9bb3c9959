/* store.h: the results database (SQLite, DESIGN.md "Results database"), the only code that
 * knows its tables and writes them. One row per sweep point in `points` with every
 * configuration value in its own column, the provenance, the mean and std over batches of
 * every scalar metric and the timings; per-expert loads in `expert_loads`, per-batch rows in
 * `batches`, the experts-per-token histogram in `experts_per_token`, the per-rank rows of
 * expert-parallel points in `ep_ranks`, the rows of `moesim bench` in `bench`, the
 * configuration and eval rows of training points in `train_points`, `steps` and `step_loads`;
 * views `summary`, `by_router_cf`, `loads`, `provenance`, `ep_summary` and `train_summary` for
 * `sqlite3 results/x.db`.
 *
 * Schema versioned with PRAGMA user_version (MOE_STORE_VERSION), WAL journal, STRICT tables,
 * each point (its ep_ranks rows included) and each bench run written in one transaction,
 * prepared statements kept for the store's lifetime. Databases of an older version are
 * upgraded in place when opened for writing; newer ones are refused.
 */
#ifndef MOE_STORE_H
#define MOE_STORE_H

#include "point.h"
#include "provenance.h"

#include <sqlite3.h>

#define MOE_STORE_VERSION 4

typedef struct moe_store moe_store;

/* Open (creating when writable and absent) a results database. An older version is migrated in
 * place (one transaction) when writable, read as it is when readonly. A database with a newer
 * user_version, a file that is not a moesim database, a read-only file or folder, or a database
 * another process holds a write lock on (busy timeout 250 ms): MOE_EDB with a clear message and
 * nothing written. readonly: open for reading only (moesim report). */
int moe_store_open(const char *path, int readonly, moe_store **out);
void moe_store_close(moe_store *st); /* NULL is a no-op */

/* id of the point stored under config_key, or 0 in *id when there is none. */
int moe_store_find(moe_store *st, const char *config_key, long long *id);

/* Write one point (its row, expert loads, batches and histogram; a training point: its row,
 * train_points, steps and step_loads) in one transaction; replace:
 * delete a stored point with the same config_key first (in the same transaction). Without
 * replace, a stored point with the same key is an error. On any error nothing is written. */
int moe_store_put(moe_store *st, const char *spec_name, const moe_point *pt,
                  const moe_point_result *res, const moe_provenance *pv, int replace);

/* ---- expert-parallel points: table ep_ranks ---- */

/* Columns of one ep_ranks row (means per batch over the point's batches), and its capacity
 * modes: 'global' (the point's plan) and 'per_rank' (DeepSpeed's capacity per rank). */
enum { MOE_EP_FIRST_EXPERT, MOE_EP_EXPERTS, MOE_EP_FIRST_TOKEN, MOE_EP_TOKENS_HELD,
       MOE_EP_PLAN_CAPACITY, MOE_EP_TOKENS, MOE_EP_ROWS_OUT, MOE_EP_ROWS_IN, MOE_EP_ROWS_LOCAL,
       MOE_EP_BYTES_SENT, MOE_EP_BYTES_RECV, MOE_EP_A2A_S, MOE_EP_EXPERT_S, MOE_EP_PACK_S,
       MOE_EP_CLAIMS, MOE_EP_DROPPED, MOE_EP_NFIELDS };
enum { MOE_EP_GLOBAL, MOE_EP_PER_RANK, MOE_EP_NMODES };

typedef struct {
    int ranks;
    const double *v; /* (ranks, MOE_EP_NMODES, MOE_EP_NFIELDS); NaN is stored as NULL */
} moe_store_ep;

/* moe_store_put, plus the point's ep_ranks rows (ep may be NULL) in the same transaction. */
int moe_store_put_ep(moe_store *st, const char *spec_name, const moe_point *pt,
                     const moe_point_result *res, const moe_provenance *pv, int replace,
                     const moe_store_ep *ep);
/* 1 when the last moe_store_put(_ep) without replace failed because the point was found
 * stored (by another process, checked inside the write transaction): nothing was written. */
int moe_store_last_existed(const moe_store *st);

/* How long a writer waits for another process's write lock (sqlite3_busy_timeout), in ms. */
#define MOE_STORE_BUSY_MS 30000

/* 1 when the database has ep_ranks rows (then `moesim plot` draws the chart ep_ranks). */
int moe_store_ep_has_rows(sqlite3 *db);

/* The query of the chart ep_ranks (sim/plot.c, drawn by plots/ep_ranks.gp): plot.c's 7 layout
 * columns (panel column 1; panel row = router, ranked by its first point; series = capacity
 * mode: 1 global, 2 per rank), then router, cf, capacity, rank, tokens, bytes_sent, a2a_s,
 * expert_s (means per batch, averaged over the router's points at the capacity factor nearest
 * CF, a string literal) and the number of rows averaged. */
#define MOE_STORE_EP_CHART_SQL(CF)                                                               \
    "WITH rt AS (SELECT router, row_number() OVER (ORDER BY min(id)) AS rk FROM points"           \
    " GROUP BY router),"                                                                          \
    " ep AS (SELECT e.*, p.router, p.capacity_factor AS cf, p.capacity_factor_value AS v"         \
    " FROM ep_ranks e JOIN points p ON p.id = e.point),"                                          \
    " pick AS (SELECT router, cf FROM (SELECT router, cf, row_number() OVER (PARTITION BY"        \
    " router ORDER BY abs(coalesce(min(v), " CF ") - " CF "), min(v)) AS n FROM ep"               \
    " GROUP BY router, cf) WHERE n = 1),"                                                         \
    " g AS (SELECT ep.router, ep.cf, ep.capacity, ep.rank, avg(ep.tokens) AS tokens,"             \
    " avg(ep.bytes_sent) AS bytes, avg(ep.a2a_s) AS a2a, avg(ep.expert_s) AS expert,"             \
    " count(*) AS n FROM ep JOIN pick USING (router, cf)"                                         \
    " GROUP BY ep.router, ep.cf, ep.capacity, ep.rank)"                                           \
    " SELECT 1, '', rt.rk, g.router, CASE g.capacity WHEN 'global' THEN 1 ELSE 2 END,"            \
    " CASE g.capacity WHEN 'global' THEN 'global capacity' ELSE"                                  \
    " 'capacity per rank (DeepSpeed)' END, 0, g.router, g.cf, g.capacity, g.rank, g.tokens,"      \
    " g.bytes, g.a2a, g.expert, g.n FROM g JOIN rt USING (router)"                                \
    " ORDER BY rt.rk, g.capacity != 'global', g.rank"

/* ---- `moesim bench`: table bench ---- */

/* One row: a metric of one measured layer (median and spread; NaN is stored as NULL). */
typedef struct {
    const char *run;               /* UTC start of the bench run, plus its pid */
    const char *git_rev, *blas_library, *blas_core;
    int blas_threads;
    const char *openblas_coretype; /* NULL or "" when unset */
    const char *torch;             /* PyTorch version, NULL or "" when not measured */
    int quick, repeats;
    const char *config, *router;
    int E, k, n, d, f;
    double cf;
    long long capacity, kept;
    const char *metric, *unit;
    double median, q1, q3, min, max;
} moe_bench_row;

/* A bench run is one transaction: begin, put its rows, end (commit = 0 rolls it back). */
int moe_store_bench_begin(moe_store *st);
int moe_store_bench_put(moe_store *st, const moe_bench_row *r);
int moe_store_bench_end(moe_store *st, int commit);

/* The connection, for queries (report, summary). */
sqlite3 *moe_store_db(moe_store *st);
const char *moe_store_path(const moe_store *st);

#endif
