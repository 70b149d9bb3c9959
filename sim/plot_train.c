/* plot_train.c: whether a results database holds training rows (plot_train.h); the chart
 * queries themselves are the macros of plot_train.h, rows of sim/plot.c's chart table. */
#include "plot_train.h"

#include <stddef.h>

int moe_plot_train_has_rows(sqlite3 *db)
{
    sqlite3_stmt *q = NULL;
    int has = 0;
    if (sqlite3_prepare_v2(db, "SELECT 1 FROM sqlite_master WHERE type = 'table' AND"
                               " name IN ('steps', 'step_loads', 'train_points')",
                           -1, &q, NULL) == SQLITE_OK)
        while (sqlite3_step(q) == SQLITE_ROW)
            has++;
    sqlite3_finalize(q);
    q = NULL;
    if (has == 3 && sqlite3_prepare_v2(db, "SELECT EXISTS (SELECT 1 FROM main.steps)", -1, &q,
                                       NULL) == SQLITE_OK)
        has = sqlite3_step(q) == SQLITE_ROW && sqlite3_column_int(q, 0);
    else
        has = 0;
    sqlite3_finalize(q);
    return has;
}
