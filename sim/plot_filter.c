/* plot_filter.c: the point filter of `moesim plot` and `moesim report --html` (plot.h): the
 * --where and --run of the next chart drawing, applied to the reader's connection as a
 * temporary view that shadows `points` (store.h, moe_store_point_filter and
 * moe_store_reader_setup), so that every chart query sees only the selected points. */
#include "plot.h"

#include "moe.h"
#include "store.h"

#include <stdlib.h>

static const char *filter_where, *filter_run;

void moe_plot_set_filter(const char *where, const char *run)
{
    filter_where = where;
    filter_run = run;
}

int moe_plot_apply_filter(sqlite3 *db, const char *db_path)
{
    /* always: `points` becomes temp.points (all points without a filter) and temp.student_t
     * exists, whatever the schema version, for the confidence intervals of the charts */
    char *cond = NULL;
    int rc = filter_where || filter_run
                 ? moe_store_point_filter(db, filter_where, filter_run, &cond)
                 : MOE_OK;
    if (!rc)
        rc = moe_store_reader_setup(db, cond, db_path);
    free(cond);
    return rc;
}
