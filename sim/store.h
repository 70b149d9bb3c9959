/* store.h: the results database (SQLite, docs/database.md), the only code that
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
#include <stdio.h>

#define MOE_STORE_VERSION 7

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

/* ---- runs (store_stats.c, store.c) ---- */

/* Record the start of a `moesim run` in the table runs (spec name, spec file and its text,
 * the --set overrides one per line, git revision); every point put afterwards links to it. */
int moe_store_run_begin(moe_store *st, const char *spec_name, const char *spec_path,
                        const char *overrides, const char *git_rev);
/* Record the end of the run (finished_at, points_run); no-op without a run. */
int moe_store_run_end(moe_store *st, long long points_run);
long long moe_store_run_id(const moe_store *st); /* 0 before moe_store_run_begin */

/* ---- configurations over seeds (store_stats.c) ---- */

/* Degrees of freedom of the table student_t (t_{0.975, df} from gsl_cdf_tdist_Pinv). */
#define MOE_STORE_T_MAXDF 1000

/* Append to m the SELECT of the statistics over seeds of the points in `from` (a table, view
 * or parenthesised subquery with the columns of points): one row per configuration (every key
 * but seed), columns first_id, config_group, seeds, seed_list, runs, last_run, the
 * configuration (router, type, router_options, cf REAL, cf_text, cf_note, distribution, source,
 * source_params, shape, d, f, E, k, activation, tokens, batches, error_tokens), then for every
 * scalar metric x and time_total_s, tokens_per_s, gflops_per_s: x (mean over seeds), x_n
 * (seeds with a value), x_seed_sd (sample sd; NULL for one seed), x_ci95 (half-width of the 95% confidence interval
 * of the mean, Student t) and, for metrics with a spread over batches, x_batch_sd (mean over
 * seeds of the sample sd over batches). Needs a table student_t (moe_store_t_table). */
void moe_store_seed_stats_sql(FILE *m, const char *from);
/* Create and fill schema.student_t ("main" in the migration; "temp" for readers of databases
 * without it). */
int moe_store_t_table(sqlite3 *db, const char *schema, const char *path);
/* Migration step to version 3 (inside the opening transaction): the table runs, points.run
 * and points.config_group, student_t, the views over_seeds, summary, by_router_cf. */
int moe_store_migrate_runs(sqlite3 *db, const char *path);
/* Migration step to version 6 (sim/store_shared.c; idempotent: it checks what exists): the
 * columns points.shared_experts, shared_f, shared_gate (0, 0, 'none' for older rows). */
int moe_store_migrate_shared(sqlite3 *db, const char *path);
/* (Re)create the views over seeds (over_seeds, summary, by_router_cf) over every metric. */
int moe_store_seed_views(sqlite3 *db, const char *path);
/* 1 when table (of schema main) has the column col. */
int moe_store_has_column(sqlite3 *db, const char *table, const char *col);
/* Migration step of the metrics added with schema version 6 (sim/store_metrics.c; idempotent:
 * it adds only what is missing): a column in points (with its _std) and batches for every scalar
 * metric of the table, the table groups_touched, and the views over seeds again when they
 * exist. */
int moe_store_migrate_metrics(sqlite3 *db, const char *path);
/* The scalar metrics of schema version 4 (the first rows of the metric table): the tables a new
 * database starts from; the 5 -> 6 step adds the others. */
enum { MOE_STORE_NMETRICS_V4 = 18 };
extern const char *const moe_store_groups_touched_sql; /* CREATE TABLE IF NOT EXISTS ... */
/* ", NULL AS x, NULL AS x_std" for every scalar metric x that points lacks (a database of an
 * older version read as it is); malloc'd, "" when none, NULL when out of memory. */
char *moe_store_missing_metrics_sql(sqlite3 *db);

/* The SQL condition on points (malloc'd into *cond) selecting the points of `moesim report`
 * and `moesim plot`: where (an SQL condition on the columns of points, or NULL) and run (a run
 * id, "last", a spec name = its last run, or NULL). A bad condition or an unknown run is a
 * MOE_EINVAL naming --where or --run. The condition has the form "id IN (SELECT id FROM
 * main.points WHERE ...)". */
int moe_store_point_filter(sqlite3 *db, const char *where, const char *run, char **cond);
/* Make the unqualified name `points` mean the points matching cond on this connection (a
 * temporary view that shadows main.points; queries that name main.points or the stored views
 * see every point). */
int moe_store_restrict(sqlite3 *db, const char *cond, const char *path);
/* For readers (report): the unqualified name `points` means the points matching cond (NULL:
 * all) with a column run (NULL in databases older than version 3), and temp.student_t exists,
 * so that moe_store_seed_stats_sql(m, "points") works on any schema version. */
int moe_store_reader_setup(sqlite3 *db, const char *cond, const char *path);
/* The configuration keys (columns of points, space-separated, malloc'd) that take more than
 * one value among the points matching cond (NULL: all points), within groups of equal values
 * of the columns `within` (e.g. "router, distribution, shape": what a chart draws apart as
 * series and panels; NULL: all points one group); capacity factor and seed excluded (the cf
 * inside router_options too). What a chart that merges these points must tell apart; "" when
 * none. */
#define MOE_STORE_CHART_GROUP "router, distribution, shape"
int moe_store_varying_keys(sqlite3 *db, const char *cond, const char *within, char **out);

/* The connection, for queries (report, summary). */
sqlite3 *moe_store_db(moe_store *st);
const char *moe_store_path(const moe_store *st);

#endif
