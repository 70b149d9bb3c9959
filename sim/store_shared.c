/* store_shared.c: the schema step that gives `points` the shared-expert columns of a point
 * (store.h, moe_store_migrate_shared): shared_experts (S), shared_f (Fs) and shared_gate, with
 * the values of a point without shared experts (0, 0, 'none') for the rows already there. */
#include "store.h"

#include <sqlite3.h>

int moe_store_migrate_shared(sqlite3 *db, const char *path)
{
    sqlite3_stmt *q = NULL;
    int rc = sqlite3_prepare_v2(db, "SELECT count(*) FROM pragma_table_info('points') "
                                    "WHERE name = 'shared_experts'", -1, &q, NULL);
    int have = -1;
    if (rc == SQLITE_OK && sqlite3_step(q) == SQLITE_ROW)
        have = sqlite3_column_int(q, 0);
    sqlite3_finalize(q);
    if (have < 0)
        return moe_fail(MOE_EDB, NULL, "cannot read the columns of points: %s (%s)",
                        sqlite3_errmsg(db), path);
    if (have) /* already there: the step is idempotent */
        return MOE_OK;
    char *err = NULL;
    rc = sqlite3_exec(db,
                      "ALTER TABLE points ADD COLUMN shared_experts INTEGER NOT NULL DEFAULT 0;\n"
                      "ALTER TABLE points ADD COLUMN shared_f INTEGER NOT NULL DEFAULT 0;\n"
                      "ALTER TABLE points ADD COLUMN shared_gate TEXT NOT NULL DEFAULT 'none';\n",
                      NULL, NULL, &err);
    if (rc == SQLITE_OK)
        return MOE_OK;
    rc = moe_fail(MOE_EDB, NULL, "cannot add the shared-expert columns to points: %s (%s)",
                  err ? err : sqlite3_errstr(rc), path);
    sqlite3_free(err);
    return rc;
}
