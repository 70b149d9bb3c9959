/* store_stats.c: the parts of the results database (store.h) that group points into
 * configurations and seeds into replicates: the table `runs` (one row per `moesim run`), the
 * points' link to their run, the configuration of a point without its seed (`config_group`),
 * the table `student_t` of t quantiles, the views over seeds (`over_seeds`, `summary`,
 * `by_router_cf`), the migration step that adds them (schema version 3), and the point filters
 * of `moesim report` and `moesim plot` (--where, --run) with the list of configuration keys
 * that vary among the selected points.
 *
 * Statistics over seeds, per configuration (every key but seed; cf is a key): for each metric
 * x with n non-NULL values over the seeds, the mean, the sample standard deviation
 * sd = sqrt(sum (x_i - mean)^2 / (n - 1)) (two passes, NULL for n = 1) and the half-width of
 * the 95% confidence interval of the mean t_{0.975, n-1} sd / sqrt(n), with the Student t
 * quantile from GSL (gsl_cdf_tdist_Pinv) stored for n - 1 = 1..MOE_STORE_T_MAXDF and the normal
 * quantile 1.959963984540054 beyond (the t quantile at 1000 degrees of freedom is 1.9623, 0.12%
 * above it). Beside them the within-run spread: the mean over seeds of the sample standard
 * deviation over batches (<metric>_batch_sd).
 */
#include "store.h"

#include "moe.h"

#include <gsl/gsl_cdf.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The configuration key of a point without its "seed=N" item (config_key is
 * "... batches=B seed=N error_tokens=X"). */
#define GROUP_EXPR(K)                                                                           \
    "(CASE WHEN instr(" K ", ' seed=') = 0 THEN " K " ELSE substr(" K ", 1, instr(" K           \
    ", ' seed=') - 1) || coalesce(substr(substr(" K ", instr(" K ", ' seed=') + 6),"            \
    " nullif(instr(substr(" K ", instr(" K ", ' seed=') + 6), ' '), 0)), '') END)"

/* K without its item " NAME=..." (K must start and end with a space). */
#define STRIP_EXPR(K, NAME)                                                                     \
    "(CASE WHEN instr(" K ", ' " NAME "=') = 0 THEN " K " ELSE substr(" K ", 1, instr(" K       \
    ", ' " NAME "=')) || substr(substr(" K ", instr(" K ", ' " NAME "=') + 1),"                 \
    " instr(substr(" K ", instr(" K ", ' " NAME "=') + 1), ' ') + 1) END)"

/* Metrics the views over seeds carry: every scalar metric (with its std over batches), then
 * the speed, whose batch spread is not stored. */
static const char *const speed_metrics[] = {"time_total_s", "tokens_per_s", "gflops_per_s"};
enum { NSPEED = sizeof speed_metrics / sizeof speed_metrics[0] };

static const char *metric_name(int i, int *has_std)
{
    if (i < MOE_POINT_NMETRICS) {
        *has_std = 1;
        return moe_point_metrics[i].name;
    }
    *has_std = i - MOE_POINT_NMETRICS == 0; /* time_total_s has time_total_s_std */
    return i - MOE_POINT_NMETRICS < NSPEED ? speed_metrics[i - MOE_POINT_NMETRICS] : NULL;
}

/* Configuration columns of a row over seeds (all constant within a configuration group). */
static const char *const group_cols[][2] = {
    {"router", "router"},          {"type", "router_type"},
    {"router_options", "router_options"},
    {"cf", "capacity_factor_value"}, {"cf_text", "capacity_factor"},
    {"cf_note", "capacity_factor_note"},
    {"distribution", "distribution"}, {"source", "source"},
    {"source_params", "source_params"}, {"shape", "shape"},
    {"d", "d"}, {"f", "f"}, {"E", "E"}, {"k", "k"}, {"activation", "activation"},
    {"tokens", "tokens"}, {"batches", "batches"}, {"error_tokens", "error_tokens"},
};
enum { NGROUP = sizeof group_cols / sizeof group_cols[0] };

void moe_store_seed_stats_sql(FILE *m, const char *from)
{
    const int nm = MOE_POINT_NMETRICS + NSPEED;
    int has_std;
    fprintf(m, "WITH src AS (SELECT *, " GROUP_EXPR("config_key") " AS grp FROM %s),"
               " mean AS (SELECT grp", from);
    for (int i = 0; i < nm; i++)
        fprintf(m, ", avg(%s) AS m%d", metric_name(i, &has_std), i);
    fprintf(m, " FROM src GROUP BY grp), agg AS (SELECT s.grp, min(s.id) AS first_id,"
               " count(*) AS seeds, group_concat(s.seed, ' ') AS seed_list,"
               " count(DISTINCT s.run) AS runs, max(s.run) AS last_run");
    for (int g = 0; g < NGROUP; g++)
        fprintf(m, ", min(s.%s) AS %s", group_cols[g][1], group_cols[g][0]);
    for (int i = 0; i < nm; i++) {
        const char *x = metric_name(i, &has_std);
        fprintf(m, ", mean.m%d AS %s, count(s.%s) AS %s_n,"
                   " sqrt(sum((s.%s - mean.m%d) * (s.%s - mean.m%d)) / (count(s.%s) - 1))"
                   " AS %s_seed_sd",
                i, x, x, x, x, i, x, i, x, x);
        if (has_std)
            fprintf(m, ", avg(s.%s_std) AS %s_batch_sd", x, x);
    }
    fprintf(m, " FROM src s JOIN mean USING (grp) GROUP BY s.grp)"
               " SELECT first_id, grp AS config_group, seeds, seed_list, runs, last_run");
    for (int g = 0; g < NGROUP; g++)
        fprintf(m, ", %s", group_cols[g][0]);
    for (int i = 0; i < nm; i++) {
        const char *x = metric_name(i, &has_std);
        fprintf(m, ", %s, %s_n, %s_seed_sd, %s_seed_sd * coalesce((SELECT t975 FROM student_t"
                   " WHERE df = %s_n - 1), 1.959963984540054) / sqrt(%s_n) AS %s_ci95",
                x, x, x, x, x, x, x);
        if (has_std)
            fprintf(m, ", %s_batch_sd", x);
    }
    fprintf(m, " FROM agg");
}

/* The views over seeds: over_seeds (every metric), summary and by_router_cf (the main ones,
 * rounded). */
static char *views_sql(void)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *m = open_memstream(&buf, &len);
    if (!m)
        return NULL;
    fputs("DROP VIEW IF EXISTS summary; DROP VIEW IF EXISTS by_router_cf;"
          " DROP VIEW IF EXISTS over_seeds;\nCREATE VIEW over_seeds AS ", m);
    moe_store_seed_stats_sql(m, "points");
    fputs(" ORDER BY distribution, shape, router, cf, config_group;\n", m);
    static const char *const main_cols[][2] = {
        {"load_imbalance", "3"}, {"assignment_drop_rate", "4"}, {"token_drop_rate", "4"},
        {"output_error_dense", "4"}, {"output_error_dropless", "4"}, {"aux_loss", "4"},
        {"tokens_per_s", "0"}};
    for (int v = 0; v < 2; v++) {
        fprintf(m, "CREATE VIEW %s AS SELECT router, type, cf, cf_text, distribution, shape, d,"
                   " f, E, k, activation, tokens, batches, seeds",
                v ? "by_router_cf" : "summary");
        for (size_t i = 0; i < sizeof main_cols / sizeof main_cols[0]; i++) {
            const char *x = main_cols[i][0], *nd = main_cols[i][1];
            const char *as = !strcmp(x, "assignment_drop_rate") ? "drop_rate"
                             : !strcmp(x, "output_error_dense")  ? "error_dense"
                             : !strcmp(x, "output_error_dropless") ? "error_dropless"
                                                                  : x;
            fprintf(m, ", round(%s, %s) AS %s, round(%s_seed_sd, %s) AS %s_seed_sd,"
                       " round(%s_ci95, %s) AS %s_ci95", x, nd, as, x, nd, as, x, nd, as);
            if (strcmp(x, "tokens_per_s") != 0)
                fprintf(m, ", round(%s_batch_sd, %s) AS %s_batch_sd", x, nd, as);
        }
        fprintf(m, ", config_group FROM over_seeds ORDER BY %s;\n",
                v ? "router, cf, distribution, shape, config_group"
                  : "distribution, shape, router, cf, config_group");
    }
    if (fclose(m) != 0) {
        free(buf);
        return NULL;
    }
    return buf;
}

static int exec_sql(sqlite3 *db, const char *sql, const char *what, const char *path)
{
    int rc = sqlite3_exec(db, sql, NULL, NULL, NULL);
    if (rc != SQLITE_OK)
        return moe_fail(MOE_EDB, NULL, "%s: %s (%s)", what, sqlite3_errmsg(db), path);
    return MOE_OK;
}

int moe_store_t_table(sqlite3 *db, const char *schema, const char *path)
{
    char sql[256];
    snprintf(sql, sizeof sql, "CREATE TABLE IF NOT EXISTS %s.student_t (df INTEGER PRIMARY KEY,"
                              " t975 REAL NOT NULL) STRICT; DELETE FROM %s.student_t;",
             schema, schema);
    int r = exec_sql(db, sql, "cannot create the table student_t", path);
    if (r)
        return r;
    snprintf(sql, sizeof sql, "INSERT INTO %s.student_t VALUES (?, ?)", schema);
    sqlite3_stmt *q = NULL;
    int rc = sqlite3_prepare_v2(db, sql, -1, &q, NULL);
    for (int df = 1; rc == SQLITE_OK && df <= MOE_STORE_T_MAXDF; df++) {
        sqlite3_bind_int(q, 1, df);
        sqlite3_bind_double(q, 2, gsl_cdf_tdist_Pinv(0.975, (double)df));
        rc = sqlite3_step(q);
        if (rc == SQLITE_DONE)
            rc = sqlite3_reset(q);
    }
    sqlite3_finalize(q);
    if (rc != SQLITE_OK)
        return moe_fail(MOE_EDB, NULL, "cannot fill the table student_t: %s (%s)",
                        sqlite3_errmsg(db), path);
    return MOE_OK;
}

int moe_store_seed_views(sqlite3 *db, const char *path)
{
    char *v = views_sql();
    if (!v)
        return moe_fail(MOE_ENOMEM, NULL, "out of memory (%s)", path);
    int r = exec_sql(db, v, "cannot create the views over seeds", path);
    free(v);
    return r;
}

int moe_store_migrate_runs(sqlite3 *db, const char *path)
{
    static const char *const runs_sql =
        "CREATE TABLE IF NOT EXISTS runs (\n"
        "  id INTEGER PRIMARY KEY,\n"
        "  spec TEXT NOT NULL,            -- the experiment name\n"
        "  spec_path TEXT NOT NULL,       -- the spec file as given\n"
        "  spec_text TEXT,                -- the spec file's text\n"
        "  overrides TEXT NOT NULL,       -- the --set arguments, one per line\n"
        "  git_rev TEXT NOT NULL,\n"
        "  started_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%SZ', 'now')),\n"
        "  finished_at TEXT,              -- NULL while running or after an interruption\n"
        "  points_run INTEGER NOT NULL DEFAULT 0\n"
        ") STRICT;\n"
        "ALTER TABLE points ADD COLUMN run INTEGER REFERENCES runs(id) ON DELETE SET NULL;\n"
        "ALTER TABLE points ADD COLUMN config_group TEXT GENERATED ALWAYS AS "
        GROUP_EXPR("config_key") " VIRTUAL;\n"
        "CREATE INDEX IF NOT EXISTS points_run ON points(run);\n";
    int r = exec_sql(db, runs_sql, "cannot add the table runs", path);
    if (!r)
        r = moe_store_t_table(db, "main", path);
    return r ? r : moe_store_seed_views(db, path);
}

/* ---- filters ---- */

/* 1 when the database has ep_ranks rows (store.h). */
int moe_store_ep_has_rows(sqlite3 *db)
{
    sqlite3_stmt *q = NULL;
    int has = 0;
    if (sqlite3_prepare_v2(db, "SELECT 1 FROM sqlite_master WHERE type = 'table' AND"
                               " name = 'ep_ranks'", -1, &q, NULL) == SQLITE_OK)
        has = sqlite3_step(q) == SQLITE_ROW;
    sqlite3_finalize(q);
    q = NULL;
    if (has && sqlite3_prepare_v2(db, "SELECT EXISTS (SELECT 1 FROM main.ep_ranks)", -1, &q,
                                  NULL) == SQLITE_OK)
        has = sqlite3_step(q) == SQLITE_ROW && sqlite3_column_int(q, 0);
    sqlite3_finalize(q);
    return has;
}

int moe_store_has_column(sqlite3 *db, const char *table, const char *col)
{
    char sql[128];
    snprintf(sql, sizeof sql, "SELECT 1 FROM pragma_table_info('%s', 'main') WHERE name = '%s'", table,
             col);
    sqlite3_stmt *q = NULL;
    int yes = sqlite3_prepare_v2(db, sql, -1, &q, NULL) == SQLITE_OK &&
              sqlite3_step(q) == SQLITE_ROW;
    sqlite3_finalize(q);
    return yes;
}

int moe_store_point_filter(sqlite3 *db, const char *where, const char *run, char **cond)
{
    *cond = NULL;
    long long run_id = 0;
    if (run) {
        if (!moe_store_has_column(db, "points", "run"))
            return moe_fail(MOE_EINVAL, "databases written before runs were recorded have no"
                            " runs: use --where", "the database records no runs (--run)");
        sqlite3_stmt *q = NULL;
        char *end;
        long long id = strtoll(run, &end, 10);
        int numeric = *run && !*end;
        const char *sql = numeric ? "SELECT id FROM runs WHERE id = ?1"
                          : !strcmp(run, "last") ? "SELECT max(id) FROM runs"
                                                 : "SELECT max(id) FROM runs WHERE spec = ?2";
        int rc = sqlite3_prepare_v2(db, sql, -1, &q, NULL);
        if (rc == SQLITE_OK && numeric)
            sqlite3_bind_int64(q, 1, id);
        else if (rc == SQLITE_OK && strcmp(run, "last") != 0)
            sqlite3_bind_text(q, 2, run, -1, SQLITE_TRANSIENT);
        if (rc == SQLITE_OK && sqlite3_step(q) == SQLITE_ROW &&
            sqlite3_column_type(q, 0) != SQLITE_NULL)
            run_id = sqlite3_column_int64(q, 0);
        sqlite3_finalize(q);
        if (!run_id)
            return moe_fail(MOE_EINVAL, "sqlite3 DB 'SELECT * FROM runs' lists the runs",
                            "no run '%s' in the database (--run)", run);
    }
    char *buf = NULL;
    size_t len = 0;
    FILE *m = open_memstream(&buf, &len);
    if (!m)
        return moe_fail(MOE_ENOMEM, NULL, "out of memory (--where)");
    fprintf(m, "id IN (SELECT id FROM main.points WHERE 1");
    if (where)
        fprintf(m, " AND (%s)", where);
    if (run)
        fprintf(m, " AND run = %lld", run_id);
    fprintf(m, ")");
    if (fclose(m) != 0) {
        free(buf);
        return moe_fail(MOE_ENOMEM, NULL, "out of memory (--where)");
    }
    /* the condition must be one well-formed expression over points */
    char *check = sqlite3_mprintf("SELECT count(*) FROM main.points WHERE %s", buf);
    sqlite3_stmt *q = NULL;
    int rc = check ? sqlite3_prepare_v2(db, check, -1, &q, NULL) : SQLITE_NOMEM;
    const char *tail_err = rc == SQLITE_OK ? NULL : sqlite3_errmsg(db);
    int r = MOE_OK;
    if (rc != SQLITE_OK)
        r = moe_fail(MOE_EINVAL, "an SQL condition on the columns of points, e.g."
                     " --where \"router = 'topk' AND tokens = 2048\"",
                     "bad condition: %s (--where)", tail_err ? tail_err : "out of memory");
    sqlite3_finalize(q);
    sqlite3_free(check);
    if (r) {
        free(buf);
        return r;
    }
    *cond = buf;
    return MOE_OK;
}

/* PRAGMA query_only of the connection (readers opened read-write set it: sim/rodb.c). */
static int query_only(sqlite3 *db)
{
    sqlite3_stmt *q = NULL;
    int on = sqlite3_prepare_v2(db, "PRAGMA query_only", -1, &q, NULL) == SQLITE_OK &&
             sqlite3_step(q) == SQLITE_ROW && sqlite3_column_int(q, 0);
    sqlite3_finalize(q);
    return on;
}

int moe_store_restrict(sqlite3 *db, const char *cond, const char *path)
{
    char *sql = sqlite3_mprintf("DROP VIEW IF EXISTS temp.points;"
                                " CREATE TEMP VIEW points AS SELECT * FROM main.points WHERE %s",
                                cond);
    if (!sql)
        return moe_fail(MOE_ENOMEM, NULL, "out of memory (%s)", path);
    /* a temporary view writes nothing to the file: lift query_only for this statement only */
    const int qo = query_only(db);
    if (qo)
        sqlite3_exec(db, "PRAGMA query_only = 0", NULL, NULL, NULL);
    int r = exec_sql(db, sql, "cannot select the points", path);
    if (qo && sqlite3_exec(db, "PRAGMA query_only = 1", NULL, NULL, NULL) != SQLITE_OK && !r)
        r = moe_fail(MOE_EDB, NULL, "cannot restore query_only (%s)", path);
    sqlite3_free(sql);
    return r;
}

int moe_store_reader_setup(sqlite3 *db, const char *cond, const char *path)
{
    int r = MOE_OK;
    const int has_run = moe_store_has_column(db, "points", "run");
    char *missing = moe_store_missing_metrics_sql(db); /* metrics newer than the database */
    char *sql = missing ? sqlite3_mprintf("DROP VIEW IF EXISTS temp.points; CREATE TEMP VIEW"
                                          " points AS SELECT *%s%s FROM main.points WHERE %s",
                                          has_run ? "" : ", NULL AS run", missing,
                                          cond ? cond : "1")
                        : NULL;
    free(missing);
    if (!sql)
        return moe_fail(MOE_ENOMEM, NULL, "out of memory (%s)", path);
    const int qo = query_only(db);
    if (qo)
        sqlite3_exec(db, "PRAGMA query_only = 0", NULL, NULL, NULL);
    r = exec_sql(db, sql, "cannot select the points", path);
    if (!r)
        r = moe_store_t_table(db, "temp", path);
    if (qo && sqlite3_exec(db, "PRAGMA query_only = 1", NULL, NULL, NULL) != SQLITE_OK && !r)
        r = moe_fail(MOE_EDB, NULL, "cannot restore query_only (%s)", path);
    sqlite3_free(sql);
    return r;
}

/* Configuration keys (columns of points) whose values can differ between configurations. */
static const char *const config_keys[] = {
    "router", "router_type", "router_options", "distribution", "source", "source_params",
    "shape", "d", "f", "E", "k", "activation", "tokens", "batches", "error_tokens", NULL};

int moe_store_varying_keys(sqlite3 *db, const char *cond, const char *within, char **out)
{
    *out = NULL;
    char *buf = NULL;
    size_t len = 0;
    FILE *m = open_memstream(&buf, &len);
    if (!m)
        return moe_fail(MOE_ENOMEM, NULL, "out of memory");
    fprintf(m, "SELECT ");
    for (int i = 0; config_keys[i]; i++)
        fprintf(m, "%smax(c%d)", i ? ", " : "", i);
    fprintf(m, " FROM (SELECT ");
    for (int i = 0; config_keys[i]; i++) {
        if (!strcmp(config_keys[i], "router_options")) /* the cf is one of the options */
            fputs("count(DISTINCT " STRIP_EXPR("(' ' || router_options || ' ')",
                                               "capacity_factor") ")", m);
        else
            fprintf(m, "count(DISTINCT %s)", config_keys[i]);
        fprintf(m, " AS c%d%s", i, config_keys[i + 1] ? ", " : "");
    }
    fprintf(m, " FROM points WHERE %s", cond ? cond : "1");
    if (within)
        fprintf(m, " GROUP BY %s", within);
    fprintf(m, ")");
    if (fclose(m) != 0) {
        free(buf);
        return moe_fail(MOE_ENOMEM, NULL, "out of memory");
    }
    sqlite3_stmt *q = NULL;
    int rc = sqlite3_prepare_v2(db, buf, -1, &q, NULL);
    free(buf);
    if (rc != SQLITE_OK || (rc = sqlite3_step(q)) != SQLITE_ROW) {
        int r = moe_fail(MOE_EDB, NULL, "cannot list the configuration keys: %s",
                         sqlite3_errmsg(db));
        sqlite3_finalize(q);
        return r;
    }
    char keys[512] = "";
    size_t n = 0;
    for (int i = 0; config_keys[i]; i++)
        if (sqlite3_column_int(q, i) > 1)
            n += (size_t)snprintf(keys + n, sizeof keys - n, "%s%s", n ? " " : "",
                                  config_keys[i]);
    sqlite3_finalize(q);
    *out = malloc(strlen(keys) + 1);
    if (!*out)
        return moe_fail(MOE_ENOMEM, NULL, "out of memory");
    strcpy(*out, keys);
    return MOE_OK;
}
