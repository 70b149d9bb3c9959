/* store.c: the SQLite results database of store.h. Owns the schema (version
 * MOE_STORE_VERSION), opening with its checks (newer version, foreign file, read-only, locked),
 * and the one-transaction write of a point. Every sqlite3 return code is checked; errors are
 * MOE_EDB naming the database file. Commits without a sync (synchronous = NORMAL): a killed
 * process loses no point committed, a power cut may lose the last ones (docs/database.md).
 *
 * Schema, version 3 (STRICT tables; `sqlite3 results/x.db .schema` shows it):
 *   points             one row per sweep point: configuration columns (router, router_type,
 *                      router_options, capacity_factor text + _value real + _note, distribution,
 *                      source, source_params, shape, d, f, E, k, m, activation, tokens, batches,
 *                      seed, error_tokens, config_key UNIQUE), provenance (git_rev, blas_library,
 *                      blas_core, blas_threads, created_at), every scalar metric of moe_metrics
 *                      as <name> (mean over batches) and <name>_std (sample std; NULL for one
 *                      batch), time_<phase>_s and _std per batch for gate, route, dispatch,
 *                      experts, combine, total, then tokens_per_s, gflops_per_s, wall_s
 *   expert_loads       (point, expert): assigned, kept, importance, means per batch
 *   batches            (point, batch): every scalar metric and time_<phase>_s of one batch
 *   experts_per_token  (point, experts): tokens with that many kept experts, summed over batches
 *   groups_touched     (point, groups): tokens whose kept experts lie in that many expert groups
 *                      (G contiguous groups; G = 1 without groups), summed over batches
 *   ep_ranks           (point, capacity, rank): per-rank load, rows, bytes and times of an
 *                      expert-parallel point (moe_store_put_ep), means per batch
 *   bench              (run, config, n, metric): `moesim bench` rows with their provenance
 *   train_points       (point): the training configuration of a training point ([train])
 *   steps              (point, step): the eval rows of a training point (moe_train_columns)
 *   step_loads         (point, step, expert): kept tokens per expert since the previous row
 * A training point has its points row (metrics of its last eval row) and the three training
 * tables, but no expert_loads, batches or experts_per_token rows.
 *   runs               one row per `moesim run` (spec name and text, overrides, times);
 *                      points.run links each point to the run that stored it, and the
 *                      generated column points.config_group is config_key without the seed
 *   student_t          t quantiles of the 95% confidence intervals (store_stats.c)
 *   views              over_seeds, summary, by_router_cf (one row per configuration, metrics
 *                      over seeds: store_stats.c), loads, provenance, ep_summary, train_summary
 * Child rows go with their point (ON DELETE CASCADE; foreign_keys is on for our connection).
 *
 * Migrations, run in the transaction that opens a writable database of an older version:
 *   0 -> 7  a database holding only the table bench (written by `moesim bench` before the
 *           store owned it): the whole schema is added around it
 *   1 -> 2  ep_ranks, ep_summary and bench are added (ep_ranks may exist already: the
 *           expert-parallel runs of version 1 created it on demand, with the same columns)
 *   2 -> 3  train_points, steps, step_loads and the view train_summary are added
 *   3 -> 4  the cluster model's tables (cluster_points, devices, nodes_per_token, node_traffic)
 *   4 -> 5  runs, points.run, points.config_group, student_t and the views over seeds
 *           (moe_store_migrate_runs; summary and by_router_cf are replaced)
 *   5 -> 6  the scalar metrics of the metric table that points and batches lack, the table
 *           groups_touched, the views over seeds again (moe_store_migrate_metrics; idempotent,
 *           it runs before the 4 -> 5 step on older databases); points.shared_experts,
 *           shared_f, shared_gate (moe_store_migrate_shared); points.layer, generated from
 *           source_params (the distribution's model layer; moe_store_migrate_layer)
 *   6 -> 7  the metric flops_expert_executed (moe_store_migrate_metrics again: it adds every
 *           scalar metric of the table that points or batches lack, and the views over seeds)
 * A new database gets the tables of version 4, then the 4 -> 5, 5 -> 6 and 6 -> 7 steps.
 */
#include "store.h"
#include "store_train.h"

#include "cluster_store.h"
#include "store_layer.h"

#include "rodb.h"

#include "layer.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

struct moe_store {
    sqlite3 *db;
    char *path;
    int readonly;
    sqlite3_stmt *find, *del, *ins_point, *ins_load, *ins_batch, *ins_ept, *ins_ep, *ins_bench;
    sqlite3_stmt *ins_gt; /* groups_touched */
    sqlite3_stmt *ins_train, *ins_step, *ins_sload;
    int existed;  /* the last put found its point stored by another process */
    long long run_id; /* the run points are linked to (moe_store_run_begin), 0 = none */
};

/* ---- errors ---- */

static int db_fail(const moe_store *st, sqlite3 *db, int rc, const char *what)
{
    int prim = rc & 0xff;
    const char *hint = NULL;
    if (prim == SQLITE_BUSY || prim == SQLITE_LOCKED)
        hint = "another process is writing to this database: wait for it, or give --db PATH";
    else if (prim == SQLITE_READONLY || prim == SQLITE_CANTOPEN || prim == SQLITE_PERM)
        hint = "the database or its folder is not writable: fix the permissions or give --db "
               "PATH";
    else if (prim == SQLITE_NOTADB || prim == SQLITE_CORRUPT)
        hint = "this file is not a moesim results database";
    else if (prim == SQLITE_FULL)
        hint = "the disk is full";
    const char *msg = db ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
    return moe_fail(MOE_EDB, hint, "%s: %s (%s)", what, msg, st->path);
}

/* ---- schema ---- */

static const char *const config_cols[][2] = {
    {"spec", "TEXT NOT NULL"},
    {"router", "TEXT NOT NULL"},
    {"router_type", "TEXT NOT NULL"},
    {"router_options", "TEXT NOT NULL"},
    {"capacity_factor", "TEXT NOT NULL"},
    {"capacity_factor_value", "REAL"},
    {"capacity_factor_note", "TEXT"},
    {"distribution", "TEXT NOT NULL"},
    {"source", "TEXT NOT NULL"},
    {"source_params", "TEXT NOT NULL"},
    {"shape", "TEXT NOT NULL"},
    {"d", "INTEGER NOT NULL"},
    {"f", "INTEGER NOT NULL"},
    {"E", "INTEGER NOT NULL"},
    {"k", "INTEGER NOT NULL"},
    {"m", "INTEGER NOT NULL"},
    {"activation", "TEXT NOT NULL"},
    {"tokens", "INTEGER NOT NULL"},
    {"batches", "INTEGER NOT NULL"},
    {"seed", "INTEGER NOT NULL"},
    {"error_tokens", "INTEGER NOT NULL"},
    {"config_key", "TEXT NOT NULL UNIQUE"},
    {"git_rev", "TEXT NOT NULL"},
    {"blas_library", "TEXT NOT NULL"},
    {"blas_core", "TEXT NOT NULL"},
    {"blas_threads", "INTEGER NOT NULL"},
};
enum { NCONFIG = sizeof config_cols / sizeof config_cols[0] };

static const char *const views_sql =
    "CREATE VIEW loads AS SELECT p.id AS point, p.router, p.capacity_factor AS cf,"
    " p.distribution, p.shape, l.expert, l.assigned, l.kept, round(l.importance, 4) AS importance"
    " FROM expert_loads l JOIN points p ON p.id = l.point ORDER BY p.id, l.expert;\n"
    "CREATE VIEW provenance AS SELECT git_rev, blas_library, blas_core, blas_threads,"
    " count(*) AS points, min(created_at) AS first_point, max(created_at) AS last_point"
    " FROM points GROUP BY git_rev, blas_library, blas_core, blas_threads;\n";

/* Tables added by version 2 (IF NOT EXISTS: the migrations run them on older databases). */
static const char *const ep_ranks_sql =
    "CREATE TABLE IF NOT EXISTS ep_ranks (\n"
    "  point INTEGER NOT NULL REFERENCES points(id) ON DELETE CASCADE,\n"
    "  capacity TEXT NOT NULL,       -- 'global': the point's plan; 'per_rank': DeepSpeed's\n"
    "                                -- capacity per rank from its own tokens\n"
    "  rank INTEGER NOT NULL,\n"
    "  ranks INTEGER NOT NULL,\n"
    "  first_expert INTEGER NOT NULL, experts INTEGER NOT NULL,\n"
    "  first_token INTEGER NOT NULL, tokens_held INTEGER NOT NULL,\n"
    "  plan_capacity REAL,           -- slots per expert (per_rank: summed over ranks)\n"
    "  tokens REAL NOT NULL,         -- entries on the rank's experts per batch\n"
    "  rows_out REAL, rows_in REAL, rows_local REAL, -- dispatch rows per batch\n"
    "  bytes_sent REAL, bytes_recv REAL,             -- both all-to-alls, per batch\n"
    "  a2a_s REAL, expert_s REAL, pack_s REAL,       -- seconds per batch\n"
    "  claims REAL, dropped REAL,    -- per_rank: its tokens' claims; dropped by its capacity\n"
    "  PRIMARY KEY (point, capacity, rank)\n"
    ") STRICT;\n"
    "CREATE VIEW IF NOT EXISTS ep_summary AS SELECT p.id AS point, p.router,"
    " p.capacity_factor AS cf, p.distribution, p.shape, e.capacity, count(*) AS ranks,"
    " round(max(e.tokens) / nullif(avg(e.tokens), 0), 3) AS device_imbalance,"
    " CAST(sum(e.bytes_sent) AS INTEGER) AS bytes_sent,"
    " round(max(e.a2a_s) * 1e3, 3) AS a2a_ms, round(max(e.expert_s) * 1e3, 3) AS expert_ms,"
    " round(CASE e.capacity WHEN 'global' THEN p.assignment_drop_rate"
    " ELSE sum(e.dropped) / nullif(sum(e.claims), 0) END, 4) AS drop_rate"
    " FROM ep_ranks e JOIN points p ON p.id = e.point"
    " GROUP BY e.point, e.capacity ORDER BY e.point, e.capacity;\n";

/* ep_ranks columns after (point, capacity, rank, ranks), in MOE_EP_* order. */
static const char *const ep_cols[MOE_EP_NFIELDS] = {
    "first_expert", "experts", "first_token", "tokens_held", "plan_capacity", "tokens",
    "rows_out", "rows_in", "rows_local", "bytes_sent", "bytes_recv", "a2a_s", "expert_s",
    "pack_s", "claims", "dropped"};
static const char *const ep_modes[MOE_EP_NMODES] = {"global", "per_rank"};

static const char *const bench_sql =
    "CREATE TABLE IF NOT EXISTS bench ("
    " run TEXT NOT NULL,"          /* UTC start of the `moesim bench` run, plus its pid */
    " git_rev TEXT, blas_library TEXT, blas_core TEXT, blas_threads INTEGER,"
    " openblas_coretype TEXT,"     /* OPENBLAS_CORETYPE of the run, NULL when unset */
    " torch TEXT,"                 /* PyTorch version, NULL when not measured */
    " quick INTEGER NOT NULL, repeats INTEGER NOT NULL,"
    " config TEXT NOT NULL, router TEXT, E INTEGER, k INTEGER, n INTEGER NOT NULL,"
    " d INTEGER, f INTEGER, cf REAL, capacity INTEGER, kept INTEGER,"
    " metric TEXT NOT NULL, unit TEXT,"
    " median REAL, q1 REAL, q3 REAL, min REAL, max REAL,"
    " PRIMARY KEY (run, config, n, metric));\n";

/* The CREATE statements of version 4 (malloc'd); create_or_migrate adds the 4 -> 5 step. */
static char *schema_sql(void)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *m = open_memstream(&buf, &len);
    if (!m)
        return NULL;
    fprintf(m, "CREATE TABLE points (\n  id INTEGER PRIMARY KEY");
    for (int i = 0; i < NCONFIG; i++)
        fprintf(m, ",\n  %s %s", config_cols[i][0], config_cols[i][1]);
    fprintf(m, ",\n  created_at TEXT NOT NULL DEFAULT (strftime('%%Y-%%m-%%dT%%H:%%M:%%SZ', "
               "'now'))");
    for (int i = 0; i < MOE_STORE_NMETRICS_V4; i++) /* later ones: the 5 -> 6 step */
        fprintf(m, ",\n  %s REAL,\n  %s_std REAL", moe_point_metrics[i].name,
                moe_point_metrics[i].name);
    for (int i = 0; i < MOE_NPHASES; i++)
        fprintf(m, ",\n  time_%s_s REAL,\n  time_%s_s_std REAL", moe_phase_names[i],
                moe_phase_names[i]);
    fprintf(m, ",\n  tokens_per_s REAL,\n  gflops_per_s REAL,\n  wall_s REAL\n) STRICT;\n");
    fprintf(m, "CREATE TABLE expert_loads (\n"
               "  point INTEGER NOT NULL REFERENCES points(id) ON DELETE CASCADE,\n"
               "  expert INTEGER NOT NULL,\n  assigned REAL NOT NULL,\n  kept REAL NOT NULL,\n"
               "  importance REAL,\n  PRIMARY KEY (point, expert)\n) STRICT;\n");
    fprintf(m, "CREATE TABLE batches (\n"
               "  point INTEGER NOT NULL REFERENCES points(id) ON DELETE CASCADE,\n"
               "  batch INTEGER NOT NULL");
    for (int i = 0; i < MOE_STORE_NMETRICS_V4; i++)
        fprintf(m, ",\n  %s REAL", moe_point_metrics[i].name);
    for (int i = 0; i < MOE_NPHASES; i++)
        fprintf(m, ",\n  time_%s_s REAL", moe_phase_names[i]);
    fprintf(m, ",\n  PRIMARY KEY (point, batch)\n) STRICT;\n");
    fprintf(m, "CREATE TABLE experts_per_token (\n"
               "  point INTEGER NOT NULL REFERENCES points(id) ON DELETE CASCADE,\n"
               "  experts INTEGER NOT NULL,\n  tokens INTEGER NOT NULL,\n"
               "  PRIMARY KEY (point, experts)\n) STRICT;\n");
    fputs(views_sql, m);
    fputs(ep_ranks_sql, m);
    fputs(bench_sql, m);
    fputs(moe_store_train_sql, m);
    fputs(moe_cluster_store_sql, m);
    if (fclose(m) != 0) {
        free(buf);
        return NULL;
    }
    return buf;
}

/* INSERT INTO points (...) VALUES (?, ...) over the config columns, metrics and timings. */
static char *insert_point_sql(void)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *m = open_memstream(&buf, &len);
    if (!m)
        return NULL;
    int n = 0;
    fprintf(m, "INSERT INTO points (");
    for (int i = 0; i < NCONFIG; i++, n++)
        fprintf(m, "%s%s", n ? ", " : "", config_cols[i][0]);
    for (const moe_point_metric *mm = moe_point_metrics; mm->name; mm++, n += 2)
        fprintf(m, ", %s, %s_std", mm->name, mm->name);
    for (int i = 0; i < MOE_NPHASES; i++, n += 2)
        fprintf(m, ", time_%s_s, time_%s_s_std", moe_phase_names[i], moe_phase_names[i]);
    fprintf(m, ", tokens_per_s, gflops_per_s, wall_s, run, shared_experts, shared_f, shared_gate)"
               " VALUES (");
    n += 7;
    for (int i = 0; i < n; i++)
        fprintf(m, "%s?", i ? ", " : "");
    fprintf(m, ")");
    if (fclose(m) != 0) {
        free(buf);
        return NULL;
    }
    return buf;
}

static char *insert_batch_sql(void)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *m = open_memstream(&buf, &len);
    if (!m)
        return NULL;
    int n = 2;
    fprintf(m, "INSERT INTO batches (point, batch");
    for (const moe_point_metric *mm = moe_point_metrics; mm->name; mm++, n++)
        fprintf(m, ", %s", mm->name);
    for (int i = 0; i < MOE_NPHASES; i++, n++)
        fprintf(m, ", time_%s_s", moe_phase_names[i]);
    fprintf(m, ") VALUES (");
    for (int i = 0; i < n; i++)
        fprintf(m, "%s?", i ? ", " : "");
    fprintf(m, ")");
    if (fclose(m) != 0) {
        free(buf);
        return NULL;
    }
    return buf;
}

/* "<head>, <cols>) VALUES (?, ...)" with nhead + ncols placeholders; head names the table and
 * its first nhead columns, e.g. "INSERT INTO steps (point". */
static char *insert_cols_sql(const char *head, int nhead, const char *const *cols, int ncols)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *m = open_memstream(&buf, &len);
    if (!m)
        return NULL;
    fputs(head, m);
    for (int f = 0; f < ncols; f++)
        fprintf(m, ", %s", cols[f]);
    fprintf(m, ") VALUES (");
    for (int f = 0; f < nhead + ncols; f++)
        fprintf(m, "%s?", f ? ", " : "");
    fprintf(m, ")");
    if (fclose(m) != 0) {
        free(buf);
        return NULL;
    }
    return buf;
}

/* ---- small statement helpers ---- */

static int exec(moe_store *st, const char *sql, const char *what)
{
    int rc = sqlite3_exec(st->db, sql, NULL, NULL, NULL);
    return rc == SQLITE_OK ? MOE_OK : db_fail(st, st->db, rc, what);
}

/* Run a one-row query returning an integer. */
static int query_int(moe_store *st, const char *sql, long long *out, const char *what)
{
    sqlite3_stmt *q = NULL;
    int rc = sqlite3_prepare_v2(st->db, sql, -1, &q, NULL);
    if (rc != SQLITE_OK)
        return db_fail(st, st->db, rc, what);
    rc = sqlite3_step(q);
    if (rc != SQLITE_ROW) {
        int r = db_fail(st, st->db, rc, what);
        sqlite3_finalize(q);
        return r;
    }
    *out = sqlite3_column_int64(q, 0);
    rc = sqlite3_finalize(q);
    return rc == SQLITE_OK ? MOE_OK : db_fail(st, st->db, rc, what);
}

static int prepare(moe_store *st, const char *sql, sqlite3_stmt **q)
{
    if (!sql)
        return moe_fail(MOE_ENOMEM, NULL, "out of memory (%s)", st->path);
    int rc = sqlite3_prepare_v3(st->db, sql, -1, SQLITE_PREPARE_PERSISTENT, q, NULL);
    return rc == SQLITE_OK ? MOE_OK : db_fail(st, st->db, rc, "cannot prepare a statement");
}

/* ---- open / close ---- */

/* 1 when every object of a database without a version belongs to the table bench (written by
 * `moesim bench` before the store owned that table). */
static int bench_only(moe_store *st, int *yes)
{
    long long others = 0;
    int rc = query_int(st, "SELECT count(*) FROM sqlite_master WHERE name != 'bench' AND"
                           " name NOT LIKE 'sqlite_autoindex_bench_%'", &others,
                       "cannot read the schema");
    *yes = !rc && others == 0;
    return rc;
}

/* Migration 1 -> 2: the tables ep_ranks and bench. */
static int migrate_1_to_2(moe_store *st)
{
    size_t len = strlen(ep_ranks_sql) + strlen(bench_sql) + 32;
    char *sql = malloc(len);
    if (!sql)
        return moe_fail(MOE_ENOMEM, NULL, "out of memory (%s)", st->path);
    snprintf(sql, len, "%s%s", ep_ranks_sql, bench_sql);
    int rc = exec(st, sql, "cannot upgrade the database schema");
    free(sql);
    return rc;
}

/* Migration 2 -> 3: the training tables. */
static int migrate_2_to_3(moe_store *st)
{
    return exec(st, moe_store_train_sql, "cannot upgrade the database schema");
}

/* Migration 3 -> 4: the cluster model's tables (sim/cluster_store.c). */
static int migrate_3_to_4(moe_store *st)
{
    return exec(st, moe_cluster_store_sql, "cannot upgrade the database schema");
}

/* Inside the opening transaction: create the schema (version 0: the tables of version 4) or
 * migrate an older one, one step after the other, then set the version once. */
static int create_or_migrate(moe_store *st, long long version)
{
    if (version == MOE_STORE_VERSION)
        return MOE_OK;
    int rc = MOE_OK;
    if (version == 0) {
        char *sql = schema_sql();
        if (!sql)
            return moe_fail(MOE_ENOMEM, NULL, "out of memory (%s)", st->path);
        rc = exec(st, sql, "cannot create the schema");
        free(sql);
        version = 4;
    }
    if (!rc && version <= 1)
        rc = migrate_1_to_2(st);
    if (!rc && version <= 2)
        rc = migrate_2_to_3(st);
    if (!rc && version <= 3)
        rc = migrate_3_to_4(st);
    if (!rc && version <= 6) /* the metrics of versions 6 and 7 (before the views over seeds) */
        rc = moe_store_migrate_metrics(st->db, st->path);
    if (!rc && version <= 4) /* runs, config_group, statistics over seeds */
        rc = moe_store_migrate_runs(st->db, st->path);
    if (!rc && version <= 5) /* shared experts */
        rc = moe_store_migrate_shared(st->db, st->path);
    if (!rc && version <= 5)
        rc = moe_store_migrate_layer(st->db, st->path); /* points.layer */
    if (!rc) {
        char sql[64];
        snprintf(sql, sizeof sql, "PRAGMA user_version = %d;", MOE_STORE_VERSION);
        rc = exec(st, sql, "cannot set the schema version");
    }
    return rc;
}

/* WAL is a property of the file: set it once, outside any transaction. */
static int set_wal(moe_store *st)
{
    /* Switching the journal mode needs an exclusive lock. While another run creates the same
     * database, SQLite can answer SQLITE_BUSY at once (without the busy handler, to avoid a
     * deadlock): try again every 10 ms, up to the busy timeout. */
    int rc = SQLITE_BUSY, wal = 0;
    for (int waited = 0; waited <= MOE_STORE_BUSY_MS; waited += 10) {
        sqlite3_stmt *q = NULL;
        rc = sqlite3_prepare_v2(st->db, "PRAGMA journal_mode = WAL", -1, &q, NULL);
        if (rc == SQLITE_OK) {
            rc = sqlite3_step(q);
            wal = rc == SQLITE_ROW && sqlite3_column_text(q, 0) &&
                  strcmp((const char *)sqlite3_column_text(q, 0), "wal") == 0;
            int fr = sqlite3_finalize(q);
            rc = rc == SQLITE_ROW ? fr : rc;
        }
        if ((rc & 0xff) != SQLITE_BUSY && (rc & 0xff) != SQLITE_LOCKED)
            break;
        sqlite3_sleep(10);
    }
    if (rc != SQLITE_OK)
        return db_fail(st, st->db, rc, "cannot set WAL mode");
    if (!wal)
        return moe_fail(MOE_EDB, "the database or its folder may be read-only",
                        "cannot switch the database to WAL mode (%s)", st->path);
    return MOE_OK;
}

static int create_or_check(moe_store *st)
{
    long long version = 0, objects = 0;
    /* the version and the objects from one snapshot: another process may create the schema
     * between two reads made outside a transaction */
    int rc = exec(st, "BEGIN", "cannot read the database");
    if (rc)
        return rc;
    if ((rc = query_int(st, "PRAGMA user_version", &version, "cannot read the schema version")) ||
        (rc = query_int(st, "SELECT count(*) FROM sqlite_master", &objects,
                        "cannot read the schema"))) {
        sqlite3_exec(st->db, "ROLLBACK", NULL, NULL, NULL);
        return rc;
    }
    if ((rc = exec(st, "COMMIT", "cannot read the database")))
        return rc;
    if (version > MOE_STORE_VERSION)
        return moe_fail(MOE_EDB, "use a newer moesim, or give --db PATH for a new database",
                        "database schema version %lld is newer than this moesim's %d (%s)",
                        version, MOE_STORE_VERSION, st->path);
    int bench = 0;
    if (version == 0 && objects > 0 && ((rc = bench_only(st, &bench)) || !bench))
        return rc ? rc : moe_fail(MOE_EDB, "give --db PATH for a new database",
                                  "not a moesim results database: it has tables but no schema "
                                  "version (%s)", st->path);
    if (st->readonly) { /* an older version is read as it is: its tables are a subset */
        if (version == 0)
            return moe_fail(MOE_EDB, "run `moesim run SPEC --db PATH` first",
                            "empty database: no moesim results (%s)", st->path);
        return MOE_OK;
    }
    if ((rc = set_wal(st)))
        return rc;
    /* take the write lock once: a locked or read-only database fails here, before any point */
    if ((rc = exec(st, "BEGIN IMMEDIATE", "cannot write to the database")))
        return rc;
    /* (another process may have created or upgraded it meanwhile) */
    if ((rc = query_int(st, "PRAGMA user_version", &version, "cannot read the schema version")) ||
        (rc = create_or_migrate(st, version)) ||
        (rc = exec(st, "COMMIT", "cannot write to the database")))
        goto rollback;
    return MOE_OK;
rollback:
    sqlite3_exec(st->db, "ROLLBACK", NULL, NULL, NULL); /* the first error is the one reported */
    return rc;
}

int moe_store_open(const char *path, int readonly, moe_store **out)
{
    *out = NULL;
    moe_store *st = calloc(1, sizeof *st);
    if (!st)
        return moe_fail(MOE_ENOMEM, NULL, "out of memory (%s)", path);
    st->path = malloc(strlen(path) + 1);
    if (!st->path) {
        free(st);
        return moe_fail(MOE_ENOMEM, NULL, "out of memory (%s)", path);
    }
    strcpy(st->path, path);
    st->readonly = readonly;
    struct stat sb;
    if (readonly && stat(path, &sb) != 0) { /* report, plot, compare: say the file is missing */
        int r = moe_fail(MOE_EDB, "check the path: `moesim run SPEC` writes results/NAME.db",
                         "cannot open the database: %s (%s)", strerror(errno), path);
        moe_store_close(st);
        return r;
    }
    int flags = readonly ? SQLITE_OPEN_READONLY : SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE;
    int rc = readonly ? moe_rodb_open(path, &st->db) : sqlite3_open_v2(path, &st->db, flags, NULL);
    if (rc != SQLITE_OK) {
        int r = db_fail(st, st->db, rc, "cannot open the database");
        moe_store_close(st);
        return r;
    }
    if ((rc = sqlite3_extended_result_codes(st->db, 1)) != SQLITE_OK ||
        (rc = sqlite3_busy_timeout(st->db, MOE_STORE_BUSY_MS)) != SQLITE_OK) {
        int r = db_fail(st, st->db, rc, "cannot configure the database connection");
        moe_store_close(st);
        return r;
    }
    int r = create_or_check(st);
    if (!r && !readonly) {
        r = exec(st, "PRAGMA foreign_keys = ON", "cannot enable foreign keys");
        if (!r)
            r = exec(st, "PRAGMA synchronous = NORMAL", "cannot set the synchronous mode");
        char *ip = NULL, *ib = NULL, *ie = NULL;
        if (!r)
            r = prepare(st, "SELECT id FROM points WHERE config_key = ?", &st->find);
        if (!r)
            r = prepare(st, "DELETE FROM points WHERE config_key = ?", &st->del);
        if (!r)
            r = prepare(st, ip = insert_point_sql(), &st->ins_point);
        if (!r)
            r = prepare(st, ib = insert_batch_sql(), &st->ins_batch);
        if (!r)
            r = prepare(st, "INSERT INTO expert_loads (point, expert, assigned, kept, importance)"
                            " VALUES (?, ?, ?, ?, ?)", &st->ins_load);
        if (!r)
            r = prepare(st, "INSERT INTO experts_per_token (point, experts, tokens)"
                            " VALUES (?, ?, ?)", &st->ins_ept);
        if (!r)
            r = prepare(st, "INSERT INTO groups_touched (point, groups, tokens)"
                            " VALUES (?, ?, ?)", &st->ins_gt);
        if (!r)
            r = prepare(st, ie = insert_cols_sql("INSERT INTO ep_ranks (point, capacity, rank,"
                                                 " ranks", 4, ep_cols, MOE_EP_NFIELDS),
                        &st->ins_ep);
        if (!r)
            r = prepare(st, "INSERT INTO bench VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,"
                            "?,?,?,?,?,?)", &st->ins_bench);
        if (!r)
            r = prepare(st, "INSERT INTO train_points (point, steps, optimizer, lr, lr_schedule,"
                            " warmup, aux, aux_weight, z_weight, trainable, eval_every,"
                            " probe_tokens, teacher, teacher_experts, teacher_k, target_noise)"
                            " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", &st->ins_train);
        char *is = NULL;
        if (!r)
            r = prepare(st, is = insert_cols_sql("INSERT INTO steps (point", 1,
                                                 moe_train_columns, MOE_TRAIN_NCOLS),
                        &st->ins_step);
        if (!r)
            r = prepare(st, "INSERT INTO step_loads (point, step, expert, load)"
                            " VALUES (?, ?, ?, ?)", &st->ins_sload);
        free(is);
        free(ip);
        free(ib);
        free(ie);
    } else if (!r) {
        r = prepare(st, "SELECT id FROM points WHERE config_key = ?", &st->find);
    }
    if (r) {
        moe_store_close(st);
        return r;
    }
    *out = st;
    return MOE_OK;
}

void moe_store_close(moe_store *st)
{
    if (!st)
        return;
    sqlite3_stmt *qs[] = {st->find, st->del, st->ins_point, st->ins_load, st->ins_batch,
                          st->ins_ept, st->ins_ep, st->ins_bench, st->ins_train,
                          st->ins_step, st->ins_sload, st->ins_gt};
    for (size_t i = 0; i < sizeof qs / sizeof qs[0]; i++)
        sqlite3_finalize(qs[i]); /* returns the statement's last error, already reported */
    if (st->db && sqlite3_close(st->db) != SQLITE_OK)
        fprintf(stderr, "moesim: warning: closing %s: %s\n", st->path, sqlite3_errmsg(st->db));
    free(st->path);
    free(st);
}

sqlite3 *moe_store_db(moe_store *st) { return st->db; }
const char *moe_store_path(const moe_store *st) { return st->path; }

/* ---- queries and the write of a point ---- */

int moe_store_find(moe_store *st, const char *config_key, long long *id)
{
    *id = 0;
    int rc = sqlite3_bind_text(st->find, 1, config_key, -1, SQLITE_TRANSIENT);
    if (rc == SQLITE_OK) {
        rc = sqlite3_step(st->find);
        if (rc == SQLITE_ROW) {
            *id = sqlite3_column_int64(st->find, 0);
            rc = SQLITE_DONE;
        }
    }
    int r = rc == SQLITE_DONE ? MOE_OK : db_fail(st, st->db, rc, "cannot look up a point");
    sqlite3_reset(st->find); /* returns the step's error, reported above */
    sqlite3_clear_bindings(st->find);
    return r;
}

/* Binding with one sticky return code: the first failure wins. */
typedef struct {
    sqlite3_stmt *q;
    int i, rc;
} binder;

static void b_text(binder *b, const char *s)
{
    int rc = s ? sqlite3_bind_text(b->q, ++b->i, s, -1, SQLITE_TRANSIENT)
               : sqlite3_bind_null(b->q, ++b->i);
    if (b->rc == SQLITE_OK)
        b->rc = rc;
}

static void b_int(binder *b, long long v)
{
    int rc = sqlite3_bind_int64(b->q, ++b->i, (sqlite3_int64)v);
    if (b->rc == SQLITE_OK)
        b->rc = rc;
}

static void b_real(binder *b, double v) /* NaN and inf are stored as NULL */
{
    int rc = isfinite(v) ? sqlite3_bind_double(b->q, ++b->i, v) : sqlite3_bind_null(b->q, ++b->i);
    if (b->rc == SQLITE_OK)
        b->rc = rc;
}

/* Step a bound insert/delete to completion and reset it. */
static int run(moe_store *st, binder *b, const char *what)
{
    int rc = b->rc;
    if (rc == SQLITE_OK) {
        rc = sqlite3_step(b->q);
        if (rc == SQLITE_DONE)
            rc = SQLITE_OK;
    }
    int r = rc == SQLITE_OK ? MOE_OK : db_fail(st, st->db, rc, what);
    sqlite3_reset(b->q); /* returns the step's error, reported above */
    sqlite3_clear_bindings(b->q);
    return r;
}

/* The ep_ranks rows of the point id. */
static int put_ep_rows(moe_store *st, sqlite3_int64 id, const moe_store_ep *ep)
{
    for (int mo = 0; mo < MOE_EP_NMODES; mo++)
        for (int q = 0; q < ep->ranks; q++) {
            const double *v = ep->v + ((size_t)q * MOE_EP_NMODES + (size_t)mo) * MOE_EP_NFIELDS;
            binder b = {st->ins_ep, 0, SQLITE_OK};
            b_int(&b, id);
            b_text(&b, ep_modes[mo]);
            b_int(&b, q);
            b_int(&b, ep->ranks);
            for (int f = 0; f < MOE_EP_NFIELDS; f++)
                b_real(&b, v[f]);
            int r = run(st, &b, "cannot insert the per-rank rows (ep_ranks)");
            if (r)
                return r;
        }
    return MOE_OK;
}

/* The train_points row of the training point id, its steps and step_loads rows. */
static int put_train_rows(moe_store *st, sqlite3_int64 id, const moe_point *pt,
                          const moe_point_result *res)
{
    const moe_train_config *c = &pt->tc;
    binder b = {st->ins_train, 0, SQLITE_OK};
    b_int(&b, id);
    b_int(&b, c->steps);
    b_text(&b, moe_train_enum_name("optimizer", c->optimizer));
    b_real(&b, c->lr);
    b_text(&b, moe_train_enum_name("lr_schedule", c->lr_schedule));
    b_int(&b, c->warmup);
    b_text(&b, moe_train_enum_name("aux", c->aux_kind));
    b_real(&b, c->aux_weight);
    b_real(&b, c->z_weight);
    b_text(&b, moe_train_enum_name("trainable", c->trainable));
    b_int(&b, c->eval_every);
    b_int(&b, c->probe_tokens);
    b_text(&b, moe_train_enum_name("teacher", c->teacher));
    b_int(&b, c->teacher_experts);
    b_int(&b, c->teacher_k);
    b_real(&b, c->target_noise);
    int r = run(st, &b, "cannot insert the training configuration (train_points)");
    for (int i = 0; !r && i < res->train_rows; i++) {
        const double *v = res->train_row + (size_t)i * MOE_TRAIN_NCOLS;
        binder q = {st->ins_step, 0, SQLITE_OK};
        b_int(&q, id);
        for (int k = 0; k < MOE_TRAIN_NCOLS; k++) {
            if (k == 0 || strcmp(moe_train_columns[k], "dead_experts") == 0)
                b_int(&q, (long long)v[k]);
            else
                b_real(&q, v[k]);
        }
        r = run(st, &q, "cannot insert the eval rows (steps)");
        for (int e = 0; !r && e < res->E; e++) {
            binder l = {st->ins_sload, 0, SQLITE_OK};
            b_int(&l, id);
            b_int(&l, (long long)v[0]);
            b_int(&l, e);
            b_int(&l, (long long)res->train_loads[(size_t)i * (size_t)res->E + (size_t)e]);
            r = run(st, &l, "cannot insert the per-expert loads (step_loads)");
        }
    }
    return r;
}


/* Rows (point id, j, v[j]) for j = 0..top of a histogram through the statement q. */
static int put_histogram(moe_store *st, sqlite3_stmt *q, sqlite3_int64 id, const long *v, int top,
                         const char *what)
{
    for (int j = 0; j <= top; j++) {
        binder h = {q, 0, SQLITE_OK};
        b_int(&h, id);
        b_int(&h, j);
        b_int(&h, v[j]);
        int r = run(st, &h, what);
        if (r)
            return r;
    }
    return MOE_OK;
}

static int put_rows(moe_store *st, const char *spec_name, const moe_point *pt,
                    const moe_point_result *res, const moe_provenance *pv, int replace,
                    const moe_store_ep *ep)
{
    int r;
    if (replace) {
        binder b = {st->del, 0, SQLITE_OK};
        b_text(&b, pt->config_key);
        if ((r = run(st, &b, "cannot delete the stored point")))
            return r;
    }
    binder b = {st->ins_point, 0, SQLITE_OK};
    b_text(&b, spec_name);
    b_text(&b, pt->router);
    b_text(&b, pt->rtype->name);
    b_text(&b, pt->opts_text);
    b_text(&b, pt->cf_text);
    b_real(&b, pt->cf);
    b_text(&b, pt->cf_note);
    b_text(&b, pt->distribution);
    b_text(&b, pt->source);
    b_text(&b, pt->params_text);
    b_text(&b, pt->shape);
    b_int(&b, pt->d);
    b_int(&b, pt->f);
    b_int(&b, pt->E);
    b_int(&b, pt->k);
    b_int(&b, pt->m);
    b_text(&b, moe_act_name(pt->act));
    b_int(&b, pt->tokens);
    b_int(&b, pt->batches);
    b_int(&b, (long long)pt->seed);
    b_int(&b, pt->error_tokens);
    b_text(&b, pt->config_key);
    b_text(&b, pv->git_rev);
    b_text(&b, pv->blas_library);
    b_text(&b, pv->blas_core);
    b_int(&b, pv->blas_threads);
    for (int i = 0; i < MOE_POINT_NMETRICS; i++) {
        b_real(&b, res->mean[i]);
        b_real(&b, res->std[i]);
    }
    for (int i = 0; i < MOE_NPHASES; i++) {
        b_real(&b, res->time_mean[i]);
        b_real(&b, res->time_std[i]);
    }
    b_real(&b, res->tokens_per_s);
    b_real(&b, res->gflops_per_s);
    b_real(&b, res->wall_s);
    if (st->run_id)
        b_int(&b, st->run_id);
    else
        b_text(&b, NULL);
    b_int(&b, pt->shared_S);
    b_int(&b, pt->shared_f);
    b_text(&b, moe_shared_gate_name(pt->shared_gate));
    if ((r = run(st, &b, "cannot insert the point")))
        return r;
    sqlite3_int64 id = sqlite3_last_insert_rowid(st->db);
    if (res->train_rows > 0) /* a training point: its configuration and eval rows only */
        return put_train_rows(st, id, pt, res);
    for (int e = 0; e < res->E; e++) {
        binder l = {st->ins_load, 0, SQLITE_OK};
        b_int(&l, id);
        b_int(&l, e);
        b_real(&l, res->assigned[e]);
        b_real(&l, res->kept[e]);
        b_real(&l, res->importance[e]);
        if ((r = run(st, &l, "cannot insert expert loads")))
            return r;
    }
    if ((r = put_histogram(st, st->ins_ept, id, res->experts_per_token, res->E,
                           "cannot insert the experts-per-token histogram")) ||
        (r = put_histogram(st, st->ins_gt, id, res->groups_touched, res->groups,
                           "cannot insert the groups-touched histogram")))
        return r;
    for (int bt = 0; bt < res->batches; bt++) {
        binder q = {st->ins_batch, 0, SQLITE_OK};
        b_int(&q, id);
        b_int(&q, bt);
        for (int i = 0; i < MOE_POINT_NMETRICS; i++)
            b_real(&q, res->batch_metric[(size_t)bt * MOE_POINT_NMETRICS + i]);
        for (int i = 0; i < MOE_NPHASES; i++)
            b_real(&q, res->batch_time[(size_t)bt * MOE_NPHASES + i]);
        if ((r = run(st, &q, "cannot insert batch rows")))
            return r;
    }
    if (ep && (r = put_ep_rows(st, id, ep)))
        return r;
    return res->cluster ? moe_cluster_store_put(st->db, st->path, id, res->cluster) : MOE_OK;
}

int moe_store_put(moe_store *st, const char *spec_name, const moe_point *pt,
                  const moe_point_result *res, const moe_provenance *pv, int replace)
{
    return moe_store_put_ep(st, spec_name, pt, res, pv, replace, NULL);
}

/* ROLLBACK after a failed write; the first error is the one reported. */
static void rollback(moe_store *st)
{
    int rc = sqlite3_exec(st->db, "ROLLBACK", NULL, NULL, NULL);
    if (rc != SQLITE_OK && sqlite3_get_autocommit(st->db) == 0)
        fprintf(stderr, "moesim: warning: rollback failed: %s (%s)\n", sqlite3_errmsg(st->db),
                st->path);
}

int moe_store_put_ep(moe_store *st, const char *spec_name, const moe_point *pt,
                     const moe_point_result *res, const moe_provenance *pv, int replace,
                     const moe_store_ep *ep)
{
    if (st->readonly)
        return moe_fail(MOE_EDB, NULL, "database opened read-only (%s)", st->path);
    st->existed = 0;
    int r = exec(st, "BEGIN IMMEDIATE", "cannot start a transaction");
    if (r)
        return r;
    long long id = 0;
    /* another run on this database may have stored the point since we looked: checked under
     * the write lock, so two runs never both insert it */
    if (!replace && !(r = moe_store_find(st, pt->config_key, &id)) && id != 0) {
        rollback(st);
        st->existed = 1;
        return moe_fail(MOE_EDB, NULL, "point already stored by another run (%s)", st->path);
    }
    if (!r)
        r = put_rows(st, spec_name, pt, res, pv, replace, ep);
    if (!r)
        r = exec(st, "COMMIT", "cannot commit the point");
    if (r)
        rollback(st);
    return r;
}

int moe_store_last_existed(const moe_store *st) { return st->existed; }

int moe_store_run_begin(moe_store *st, const char *spec_name, const char *spec_path,
                        const char *overrides, const char *git_rev)
{
    if (st->readonly)
        return moe_fail(MOE_EDB, NULL, "database opened read-only (%s)", st->path);
    char *text = NULL;
    size_t len = 0;
    FILE *f = fopen(spec_path, "rb");
    if (f) { /* the spec's text, as read now (NULL when it cannot be read) */
        FILE *m = open_memstream(&text, &len);
        char buf[4096];
        size_t n;
        while (m && (n = fread(buf, 1, sizeof buf, f)) > 0)
            fwrite(buf, 1, n, m);
        if (m && fclose(m) != 0) {
            free(text);
            text = NULL;
        }
        fclose(f);
    }
    sqlite3_stmt *q = NULL;
    int rc = sqlite3_prepare_v2(st->db, "INSERT INTO runs (spec, spec_path, spec_text, overrides,"
                                        " git_rev) VALUES (?, ?, ?, ?, ?)", -1, &q, NULL);
    if (rc == SQLITE_OK) {
        binder b = {q, 0, SQLITE_OK};
        b_text(&b, spec_name);
        b_text(&b, spec_path);
        b_text(&b, text);
        b_text(&b, overrides ? overrides : "");
        b_text(&b, git_rev);
        rc = b.rc == SQLITE_OK ? sqlite3_step(q) : b.rc;
    }
    free(text);
    sqlite3_finalize(q);
    if (rc != SQLITE_DONE)
        return db_fail(st, st->db, rc, "cannot record the run");
    st->run_id = sqlite3_last_insert_rowid(st->db);
    return MOE_OK;
}

int moe_store_run_end(moe_store *st, long long points_run)
{
    if (!st->run_id)
        return MOE_OK;
    sqlite3_stmt *q = NULL;
    int rc = sqlite3_prepare_v2(st->db, "UPDATE runs SET points_run = ?, finished_at ="
                                        " strftime('%Y-%m-%dT%H:%M:%SZ', 'now') WHERE id = ?",
                                -1, &q, NULL);
    if (rc == SQLITE_OK) {
        sqlite3_bind_int64(q, 1, points_run);
        sqlite3_bind_int64(q, 2, st->run_id);
        rc = sqlite3_step(q);
    }
    sqlite3_finalize(q);
    return rc == SQLITE_DONE ? MOE_OK : db_fail(st, st->db, rc, "cannot record the end of the run");
}

long long moe_store_run_id(const moe_store *st) { return st->run_id; }

/* ---- bench runs ---- */

int moe_store_bench_begin(moe_store *st)
{
    if (st->readonly)
        return moe_fail(MOE_EDB, NULL, "database opened read-only (%s)", st->path);
    return exec(st, "BEGIN IMMEDIATE", "cannot start a transaction");
}

int moe_store_bench_put(moe_store *st, const moe_bench_row *r)
{
    binder b = {st->ins_bench, 0, SQLITE_OK};
    b_text(&b, r->run);
    b_text(&b, r->git_rev);
    b_text(&b, r->blas_library);
    b_text(&b, r->blas_core);
    b_int(&b, r->blas_threads);
    b_text(&b, r->openblas_coretype && *r->openblas_coretype ? r->openblas_coretype : NULL);
    b_text(&b, r->torch && *r->torch ? r->torch : NULL);
    b_int(&b, r->quick);
    b_int(&b, r->repeats);
    b_text(&b, r->config);
    b_text(&b, r->router && *r->router ? r->router : NULL);
    b_int(&b, r->E);
    b_int(&b, r->k);
    b_int(&b, r->n);
    b_int(&b, r->d);
    b_int(&b, r->f);
    b_real(&b, r->cf);
    b_int(&b, r->capacity);
    b_int(&b, r->kept);
    b_text(&b, r->metric);
    b_text(&b, r->unit);
    b_real(&b, r->median);
    b_real(&b, r->q1);
    b_real(&b, r->q3);
    b_real(&b, r->min);
    b_real(&b, r->max);
    return run(st, &b, r->metric ? r->metric : "cannot insert a bench row");
}

int moe_store_bench_end(moe_store *st, int commit)
{
    if (!commit) {
        rollback(st);
        return MOE_OK;
    }
    int r = exec(st, "COMMIT", "cannot commit the bench run");
    if (r)
        rollback(st);
    return r;
}
