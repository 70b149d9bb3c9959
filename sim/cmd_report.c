/* cmd_report.c: `moesim report DB [--csv]` (cli.h): the stored points of a results database and
 * their main metrics, as an aligned table or as CSV (full precision, RFC 4180 quoting). Opens
 * the database read-only; a database of a newer schema version is refused (store.c). */
#include "cli.h"
#include "metric_table.h"
#include "moe.h"
#include "store.h"
#include "textsafe.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char usage_text[] =
    "usage: moesim report DB [--csv]\n"
    "Prints the points stored in a results database (moesim run) with their main metrics:\n"
    "an aligned table, or CSV with --csv. All columns: sqlite3 DB 'SELECT * FROM points'.\n";

/* column: header, SQL expression, printf format for the table (NULL = text) */
typedef struct {
    const char *header, *expr, *fmt;
} column;

/* The configuration of a point, then the metrics the metric table shows in the report (in its
 * order), then the speed. */
static const column config_cols[] = {
    {"id", "id", NULL},
    {"router", "router", NULL},
    {"cf", "capacity_factor", NULL},
    {"distribution", "distribution", NULL},
    {"shape", "shape", NULL},
    {"E", "E", NULL},
    {"tokens", "tokens", NULL},
    {"batches", "batches", NULL},
    {"seed", "seed", NULL},
};
static const column speed_cols[] = {
    {"tokens_per_s", "tokens_per_s", "%.0f"},
    {"gflops_per_s", "gflops_per_s", "%.2f"},
};
enum { NCONFIG = sizeof config_cols / sizeof config_cols[0],
       NSPEED = sizeof speed_cols / sizeof speed_cols[0],
       MAXCOLS = NCONFIG + MOE_POINT_NMETRICS + NSPEED };

static column cols[MAXCOLS];
static int ncols; /* columns in use */

static void columns_init(void)
{
    ncols = 0;
    for (int i = 0; i < NCONFIG; i++)
        cols[ncols++] = config_cols[i];
    for (const moe_point_metric *m = moe_point_metrics; m->name; m++)
        if (m->report)
            cols[ncols++] = (column){m->report, m->name, m->report_fmt};
    for (int i = 0; i < NSPEED; i++)
        cols[ncols++] = speed_cols[i];
}

static void csv_cell(FILE *out, const char *s)
{
    if (!strpbrk(s, ",\"\n\r")) {
        fputs(s, out);
        return;
    }
    fputc('"', out);
    for (; *s; s++) {
        if (*s == '"')
            fputc('"', out);
        fputc(*s, out);
    }
    fputc('"', out);
}

/* Text of cell c of the current row (buf holds it). */
static const char *cell(sqlite3_stmt *q, int c, int csv, char *buf, size_t len)
{
    int type = sqlite3_column_type(q, c);
    if (type == SQLITE_NULL)
        return csv ? "" : "-";
    if (type == SQLITE_FLOAT) {
        snprintf(buf, len, csv || !cols[c].fmt ? "%.9g" : cols[c].fmt, sqlite3_column_double(q, c));
        return buf;
    }
    const unsigned char *t = sqlite3_column_text(q, c);
    return moe_text_escape(t ? (const char *)t : "", buf, len); /* no terminal escapes */
}

static int report(moe_store *st, int csv)
{
    columns_init();
    sqlite3 *db = moe_store_db(st);
    char sql[2048];
    size_t n = (size_t)snprintf(sql, sizeof sql, "SELECT ");
    for (int c = 0; c < ncols; c++)
        n += (size_t)snprintf(sql + n, sizeof sql - n, "%s%s", c ? ", " : "", cols[c].expr);
    snprintf(sql + n, sizeof sql - n, " FROM points ORDER BY distribution, shape, router,"
             " capacity_factor_value, tokens, batches, seed, id");
    sqlite3_stmt *q = NULL;
    int rc = sqlite3_prepare_v2(db, sql, -1, &q, NULL);
    if (rc != SQLITE_OK)
        return moe_fail(MOE_EDB, NULL, "cannot read the points: %s (%s)", sqlite3_errmsg(db),
                        moe_store_path(st));
    /* rows as text, for the column widths */
    size_t nrows = 0, cap = 64;
    char **text = malloc(cap * ncols * sizeof *text);
    int width[MAXCOLS];
    for (int c = 0; c < ncols; c++)
        width[c] = (int)strlen(cols[c].header);
    int r = text ? MOE_OK : moe_fail(MOE_ENOMEM, NULL, "out of memory (moesim report)");
    while (!r && (rc = sqlite3_step(q)) == SQLITE_ROW) {
        if (nrows == cap) {
            char **nt = realloc(text, 2 * cap * ncols * sizeof *text);
            if (!nt) {
                r = moe_fail(MOE_ENOMEM, NULL, "out of memory (moesim report)");
                break;
            }
            text = nt;
            cap *= 2;
        }
        for (int c = 0; c < ncols; c++) {
            char buf[512];
            const char *s = cell(q, c, csv, buf, sizeof buf);
            char *dup = malloc(strlen(s) + 1);
            if (dup)
                strcpy(dup, s);
            text[nrows * ncols + (size_t)c] = dup;
            if (!dup)
                r = moe_fail(MOE_ENOMEM, NULL, "out of memory (moesim report)");
            else if ((int)strlen(dup) > width[c])
                width[c] = (int)strlen(dup);
        }
        nrows++;
    }
    if (!r && rc != SQLITE_DONE)
        r = moe_fail(MOE_EDB, NULL, "cannot read the points: %s (%s)", sqlite3_errmsg(db),
                     moe_store_path(st));
    sqlite3_finalize(q);
    if (!r) {
        for (int c = 0; c < ncols; c++) {
            if (csv)
                printf("%s%s", c ? "," : "", cols[c].header);
            else
                printf("%s%*s", c ? "  " : "", cols[c].fmt ? width[c] : -width[c], cols[c].header);
        }
        putchar('\n');
        for (size_t i = 0; i < nrows; i++) {
            for (int c = 0; c < ncols; c++) {
                const char *s = text[i * ncols + (size_t)c];
                if (csv) {
                    if (c)
                        putchar(',');
                    csv_cell(stdout, s);
                } else {
                    printf("%s%*s", c ? "  " : "", cols[c].fmt ? width[c] : -width[c], s);
                }
            }
            putchar('\n');
        }
        if (!csv)
            printf("(%zu points; all columns: sqlite3 %s 'SELECT * FROM points')\n", nrows,
                   moe_store_path(st));
    }
    for (size_t i = 0; text && i < nrows * ncols; i++)
        free(text[i]);
    free(text);
    return r;
}

int moe_cmd_report(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"csv", no_argument, NULL, 'c'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int csv = 0, c;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (c) {
        case 'c': csv = 1; break;
        case 'h': fputs(usage_text, stdout); return MOE_OK;
        default:
            return moe_fail(MOE_EINVAL, "moesim report --help lists the options",
                            "unknown option '%s' (moesim report)", argv[optind - 1]);
        }
    }
    if (optind != argc - 1)
        return moe_fail(MOE_EINVAL, "moesim report results/default.db",
                        optind >= argc ? "no database given (moesim report)"
                                       : "more than one database given (moesim report)");
    moe_store *st = NULL;
    int rc = moe_store_open(argv[optind], 1, &st);
    if (rc)
        return rc;
    rc = report(st, csv);
    moe_store_close(st);
    return rc;
}
