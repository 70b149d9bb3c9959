/* store_metrics.c: the migration step that gives a results database the metrics added with
 * schema version 6 (store.h, moe_store_migrate_metrics): the scalar metrics groups_touched_mean,
 * token_drop_rate_group_min/_mean/_max, seq_aux_loss, load_loss_shazeer, overflow_expert1/2,
 * importance_loss_vmoe, load_loss_vmoe and balancedness as columns of `points` (with _std) and
 * `batches`, and the table `groups_touched` (point, groups, tokens): tokens whose kept experts
 * lie in that many expert groups, summed over batches (the groups-touched histogram, stored the
 * way `experts_per_token` stores the experts-per-token histogram).
 *
 * The step checks what exists and adds only what is missing, so it gives the same schema
 * whatever ran before it: every scalar metric of the metric table that `points` or `batches`
 * lacks is added (older rows read NULL there). */
#include "store.h"

#include "metric_table.h"

#include <stdio.h>
#include <stdlib.h>

const char *const moe_store_groups_touched_sql =
    "CREATE TABLE IF NOT EXISTS groups_touched (\n"
    "  point INTEGER NOT NULL REFERENCES points(id) ON DELETE CASCADE,\n"
    "  groups INTEGER NOT NULL,\n  tokens INTEGER NOT NULL,\n"
    "  PRIMARY KEY (point, groups)\n) STRICT;\n";

static int exec_one(sqlite3 *db, const char *sql, const char *path)
{
    int rc = sqlite3_exec(db, sql, NULL, NULL, NULL);
    if (rc != SQLITE_OK)
        return moe_fail(MOE_EDB, NULL, "cannot upgrade the database schema: %s (%s)",
                        sqlite3_errmsg(db), path);
    return MOE_OK;
}

/* ALTER TABLE table ADD COLUMN col REAL, unless it has it. */
static int add_real(sqlite3 *db, const char *table, const char *col, const char *path)
{
    if (moe_store_has_column(db, table, col))
        return MOE_OK;
    char sql[160];
    snprintf(sql, sizeof sql, "ALTER TABLE %s ADD COLUMN %s REAL", table, col);
    return exec_one(db, sql, path);
}

int moe_store_migrate_metrics(sqlite3 *db, const char *path)
{
    int rc = MOE_OK;
    for (const moe_point_metric *m = moe_point_metrics; m->name && !rc; m++) {
        char std[96];
        snprintf(std, sizeof std, "%s_std", m->name);
        if (!(rc = add_real(db, "points", m->name, path)) &&
            !(rc = add_real(db, "points", std, path)))
            rc = add_real(db, "batches", m->name, path);
    }
    if (!rc)
        rc = exec_one(db, moe_store_groups_touched_sql, path);
    sqlite3_stmt *q = NULL;
    int views = !rc && sqlite3_prepare_v2(db, "SELECT 1 FROM sqlite_master WHERE type = 'view'"
                                              " AND name = 'over_seeds'", -1, &q, NULL) ==
                           SQLITE_OK && sqlite3_step(q) == SQLITE_ROW;
    sqlite3_finalize(q);
    return !rc && views ? moe_store_seed_views(db, path) : rc;
}

char *moe_store_missing_metrics_sql(sqlite3 *db)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *m = open_memstream(&buf, &len);
    if (!m)
        return NULL;
    for (const moe_point_metric *mm = moe_point_metrics; mm->name; mm++)
        if (!moe_store_has_column(db, "points", mm->name))
            fprintf(m, ", NULL AS %s, NULL AS %s_std", mm->name, mm->name);
    if (fclose(m) != 0) {
        free(buf);
        return NULL;
    }
    return buf;
}
