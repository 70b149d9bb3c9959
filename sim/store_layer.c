/* store_layer.c: the column points.layer (store_layer.h). source_params holds the
 * distribution's parameters as "key=value" items sorted by key and separated by single
 * spaces, so " layer=N " in " " || source_params || " " is the parameter layer; its digits run
 * to the next space. */
#include "store_layer.h"
#include "moe.h"

#define PADDED "(' ' || source_params || ' ')"
#define AT "instr(' ' || source_params, ' layer=')"
#define REST "substr(" PADDED ", " AT " + 7)"

static const char layer_sql[] =
    "ALTER TABLE points ADD COLUMN layer INTEGER GENERATED ALWAYS AS (CASE WHEN " AT " > 0 "
    "THEN CAST(substr(" REST ", 1, instr(" REST ", ' ') - 1) AS INTEGER) END) VIRTUAL;";

int moe_store_migrate_layer(sqlite3 *db, const char *path)
{
    sqlite3_stmt *q = NULL;
    int has = 0;
    int rc = sqlite3_prepare_v2(db, "SELECT count(*) FROM pragma_table_xinfo('points', 'main')"
                                    " WHERE name = 'layer'", -1, &q, NULL);
    if (rc == SQLITE_OK && (rc = sqlite3_step(q)) == SQLITE_ROW) {
        has = sqlite3_column_int(q, 0) > 0;
        rc = SQLITE_OK;
    }
    sqlite3_finalize(q);
    if (rc == SQLITE_OK && !has)
        rc = sqlite3_exec(db, layer_sql, NULL, NULL, NULL);
    if (rc != SQLITE_OK)
        return moe_fail(MOE_EDB, NULL, "cannot upgrade the database schema (points.layer): %s "
                        "(%s)", sqlite3_errmsg(db), path);
    return MOE_OK;
}
