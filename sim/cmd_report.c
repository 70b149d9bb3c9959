/* cmd_report.c: `moesim report DB [--csv|--json|--html DIR] [--points] [--where COND]
 * [--run RUN]` (cli.h). By default one row per configuration (every key but seed; the
 * capacity factor is a key) with the main metrics as mean over seeds, the half-width of the 95%
 * confidence interval over seeds (Student t) and the mean sample sd over batches; --points
 * prints every stored point instead. Output: an aligned table, CSV (full precision, RFC 4180
 * quoting), JSON (every scalar metric with mean, seed_sd, ci95, batch_sd and n, the runs, the
 * provenance and the configuration keys that vary) or one self-contained HTML page
 * (sim/report_html.c). Opens the database read-only; a database of a newer schema version is
 * refused (store.c); older ones are read as they are (no runs before version 3). */
#include "cli.h"
#include "metric_table.h"
#include "moe.h"
#include "report.h"
#include "report_layers.h"
#include "store.h"
#include "textsafe.h"

#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char usage_text[] =
    "usage: moesim report DB [--csv | --json | --html DIR] [--points] [--where COND]\n"
    "                        [--run RUN]\n"
    "Prints the results of a database (moesim run): one row per configuration (every key\n"
    "but the seed), each metric as its mean over seeds, +- the half-width of the 95%\n"
    "confidence interval of that mean over seeds (Student t; '-' for one seed) and bsd, the\n"
    "sample sd over the batches of a run (mean over seeds). Points of a sweep over model\n"
    "layers (a distribution's layers key) add the imbalance across layers (p50, p90, p95, max)\n"
    "and within each layer (min, max, std of tokens per expert); --json: \"layers\".\n"
    "  --points     one row per stored point instead (every seed)\n"
    "  --csv        CSV at full precision instead of the aligned table\n"
    "  --json       JSON: every metric with mean, seed_sd, ci95, batch_sd, n; runs, provenance\n"
    "  --html DIR   write DIR/report.html: one self-contained page (tables, provenance, spec\n"
    "               text, every chart inline as SVG; needs gnuplot)\n"
    "  --where COND only the points matching an SQL condition on the columns of points,\n"
    "               e.g. --where \"tokens = 2048 AND capacity_factor_value = 1\"\n"
    "  --run RUN    only the points stored by run RUN: its id (table runs), 'last', or a\n"
    "               spec name (its last run)\n"
    "All columns: sqlite3 DB 'SELECT * FROM over_seeds' (or points).\n";

/* ---- the columns ---- */

static const moe_report_col point_cols[] = {
    {"id", "id", NULL},           {"run", "run", NULL},
    {"router", "router", NULL},   {"cf", "capacity_factor", NULL},
    {"distribution", "distribution", NULL}, {"shape", "shape", NULL},
    {"E", "E", NULL},             {"k", "k", NULL},
    {"tokens", "tokens", NULL},   {"batches", "batches", NULL},
    {"seed", "seed", NULL},
};
static const moe_report_col config_cols[] = {
    {"router", "router", NULL},   {"cf", "cf_text", NULL},
    {"distribution", "distribution", NULL}, {"shape", "shape", NULL},
    {"E", "E", NULL},             {"k", "k", NULL},
    {"tokens", "tokens", NULL},   {"batches", "batches", NULL},
    {"seeds", "seeds", NULL},
};
enum { NPOINTC = sizeof point_cols / sizeof point_cols[0],
       NCONFC = sizeof config_cols / sizeof config_cols[0],
       MAXCOLS = NPOINTC + 3 * (MOE_POINT_NMETRICS + 2) };

/* Expressions built for the configuration table ("<metric>_ci95", "<metric>_batch_sd"). */
static char col_text[MAXCOLS][1][64];

/* Columns of the table `which` into cols (returns how many). */
static int columns(int which, moe_report_col *cols)
{
    int n = 0;
    const moe_report_col *base = which == MOE_REPORT_POINTS ? point_cols : config_cols;
    const int nbase = which == MOE_REPORT_POINTS ? NPOINTC : NCONFC;
    for (int i = 0; i < nbase; i++)
        cols[n++] = base[i];
    for (const moe_point_metric *m = moe_point_metrics; m->name; m++) {
        if (!m->report)
            continue;
        if (which == MOE_REPORT_POINTS) {
            cols[n++] = (moe_report_col){m->report, m->name, m->report_fmt};
            continue;
        }
        cols[n++] = (moe_report_col){m->report, m->name, m->report_fmt};
        /* n changes in a statement of its own: `cols[n++] = {.., col_text[n - 1]}` reads n
         * unsequenced with its increment, which is undefined (clang -Wunsequenced) */
        snprintf(col_text[n][0], sizeof col_text[n][0], "%s_ci95", m->name);
        cols[n] = (moe_report_col){"+-ci95", col_text[n][0], m->report_fmt};
        n++;
        snprintf(col_text[n][0], sizeof col_text[n][0], "%s_batch_sd", m->name);
        cols[n] = (moe_report_col){"bsd", col_text[n][0], m->report_fmt};
        n++;
    }
    cols[n++] = (moe_report_col){"tokens_per_s", "tokens_per_s", "%.0f"};
    if (which == MOE_REPORT_CONFIGS)
        cols[n++] = (moe_report_col){"+-ci95", "tokens_per_s_ci95", "%.0f"};
    cols[n++] = (moe_report_col){"gflops_per_s", "gflops_per_s", "%.2f"};
    return n;
}

static moe_report_col table_cols[2][MAXCOLS];

/* ---- fetching ---- */

void moe_report_table_free(moe_report_table *t)
{
    for (size_t i = 0; t->cell && i < t->nrows * (size_t)t->ncols; i++)
        free(t->cell[i]);
    free(t->cell);
    t->cell = NULL;
    t->nrows = 0;
}

/* Text of cell c of the current row (NULL for SQL NULL; buf holds it). */
static const char *cell(sqlite3_stmt *q, int c, const moe_report_col *col, int full, char *buf,
                        size_t len)
{
    int type = sqlite3_column_type(q, c);
    if (type == SQLITE_NULL)
        return NULL;
    if (type == SQLITE_FLOAT) {
        snprintf(buf, len, full || !col->fmt ? "%.9g" : col->fmt, sqlite3_column_double(q, c));
        return buf;
    }
    const unsigned char *t = sqlite3_column_text(q, c);
    return moe_text_escape(t ? (const char *)t : "", buf, len); /* no terminal escapes */
}

static char *build_sql(int which, const moe_report_col *cols, int ncols)
{
    char *sql = NULL;
    size_t len = 0;
    FILE *m = open_memstream(&sql, &len);
    if (!m)
        return NULL;
    fputs("SELECT ", m);
    for (int c = 0; c < ncols; c++)
        fprintf(m, "%s%s", c ? ", " : "", cols[c].expr);
    if (which == MOE_REPORT_POINTS) {
        fputs(" FROM points ORDER BY distribution, shape, router, capacity_factor_value,"
              " tokens, batches, seed, id", m);
    } else {
        fputs(" FROM (", m);
        moe_store_seed_stats_sql(m, "points");
        fputs(") ORDER BY distribution, shape, router, cf, tokens, batches, config_group", m);
    }
    if (fclose(m) != 0) {
        free(sql);
        return NULL;
    }
    return sql;
}

int moe_report_fetch(moe_store *st, int which, int full, moe_report_table *t)
{
    moe_report_col *cols = table_cols[which == MOE_REPORT_POINTS];
    memset(t, 0, sizeof *t);
    t->cols = cols;
    t->ncols = columns(which, cols);
    sqlite3 *db = moe_store_db(st);
    char *sql = build_sql(which, cols, t->ncols);
    if (!sql)
        return moe_fail(MOE_ENOMEM, NULL, "out of memory (moesim report)");
    sqlite3_stmt *q = NULL;
    int rc = sqlite3_prepare_v2(db, sql, -1, &q, NULL);
    free(sql);
    if (rc != SQLITE_OK)
        return moe_fail(MOE_EDB, NULL, "cannot read the points: %s (%s)", sqlite3_errmsg(db),
                        moe_store_path(st));
    size_t cap = 64;
    t->cell = malloc(cap * (size_t)t->ncols * sizeof *t->cell);
    int r = t->cell ? MOE_OK : moe_fail(MOE_ENOMEM, NULL, "out of memory (moesim report)");
    while (!r && (rc = sqlite3_step(q)) == SQLITE_ROW) {
        if (t->nrows == cap) {
            char **nt = realloc(t->cell, 2 * cap * (size_t)t->ncols * sizeof *nt);
            if (!nt) {
                r = moe_fail(MOE_ENOMEM, NULL, "out of memory (moesim report)");
                break;
            }
            t->cell = nt;
            cap *= 2;
        }
        for (int c = 0; c < t->ncols; c++) {
            char buf[512];
            const char *s = cell(q, c, &cols[c], full, buf, sizeof buf);
            char *dup = s ? malloc(strlen(s) + 1) : NULL;
            if (dup)
                strcpy(dup, s);
            t->cell[t->nrows * (size_t)t->ncols + (size_t)c] = dup;
            if (s && !dup)
                r = moe_fail(MOE_ENOMEM, NULL, "out of memory (moesim report)");
        }
        t->nrows++;
    }
    if (!r && rc != SQLITE_DONE)
        r = moe_fail(MOE_EDB, NULL, "cannot read the points: %s (%s)", sqlite3_errmsg(db),
                     moe_store_path(st));
    sqlite3_finalize(q);
    if (r)
        moe_report_table_free(t);
    return r;
}

/* ---- aligned table and CSV ---- */

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

static void print_table(const moe_report_table *t, int csv)
{
    int width[MAXCOLS];
    for (int c = 0; c < t->ncols; c++) {
        width[c] = (int)strlen(t->cols[c].header);
        for (size_t i = 0; i < t->nrows; i++) {
            const char *s = t->cell[i * (size_t)t->ncols + (size_t)c];
            if (s && (int)strlen(s) > width[c])
                width[c] = (int)strlen(s);
        }
    }
    for (int c = 0; c < t->ncols; c++) {
        if (csv)
            printf("%s%s", c ? "," : "", t->cols[c].expr);
        else
            printf("%s%*s", c ? "  " : "", t->cols[c].fmt ? width[c] : -width[c],
                   t->cols[c].header);
    }
    putchar('\n');
    for (size_t i = 0; i < t->nrows; i++) {
        for (int c = 0; c < t->ncols; c++) {
            const char *s = t->cell[i * (size_t)t->ncols + (size_t)c];
            if (csv) {
                if (c)
                    putchar(',');
                csv_cell(stdout, s ? s : "");
            } else {
                printf("%s%*s", c ? "  " : "", t->cols[c].fmt ? width[c] : -width[c],
                       s ? s : "-");
            }
        }
        putchar('\n');
    }
}

/* ---- JSON ---- */

/* Append the rows of a query as objects (column name: value) to arr. */
static int json_rows(sqlite3 *db, const char *sql, json_t *arr, const char *path)
{
    sqlite3_stmt *q = NULL;
    int rc = sqlite3_prepare_v2(db, sql, -1, &q, NULL);
    while (rc == SQLITE_OK && (rc = sqlite3_step(q)) == SQLITE_ROW) {
        json_t *o = json_object();
        for (int c = 0; o && c < sqlite3_column_count(q); c++) {
            const char *name = sqlite3_column_name(q, c);
            json_t *v;
            switch (sqlite3_column_type(q, c)) {
            case SQLITE_INTEGER: v = json_integer(sqlite3_column_int64(q, c)); break;
            case SQLITE_FLOAT: v = json_real(sqlite3_column_double(q, c)); break;
            case SQLITE_NULL: v = json_null(); break;
            default: v = json_string((const char *)sqlite3_column_text(q, c)); break;
            }
            if (!v || json_object_set_new(o, name, v) != 0) {
                json_decref(o);
                o = NULL;
            }
        }
        if (!o || json_array_append_new(arr, o) != 0) {
            sqlite3_finalize(q);
            return moe_fail(MOE_ENOMEM, NULL, "out of memory (moesim report --json)");
        }
        rc = SQLITE_OK;
    }
    int r = rc == SQLITE_DONE ? MOE_OK
                              : moe_fail(MOE_EDB, NULL, "cannot read the database: %s (%s)",
                                         sqlite3_errmsg(db), path);
    sqlite3_finalize(q);
    return r;
}

/* Nest the statistics of every metric x of a configuration row: x, x_seed_sd, x_ci95,
 * x_batch_sd and x_n become metrics.x.{mean, seed_sd, ci95, batch_sd, n}. */
static int json_nest_metrics(json_t *row)
{
    json_t *metrics = json_object();
    static const char *const speed[] = {"time_total_s", "tokens_per_s", "gflops_per_s"};
    for (int i = 0; metrics && i < MOE_POINT_NMETRICS + 3; i++) {
        const char *x = i < MOE_POINT_NMETRICS ? moe_point_metrics[i].name
                                               : speed[i - MOE_POINT_NMETRICS];
        static const char *const suffix[][2] = {
            {"", "mean"}, {"_seed_sd", "seed_sd"}, {"_ci95", "ci95"},
            {"_batch_sd", "batch_sd"}, {"_n", "n"}};
        json_t *m = json_object();
        for (int s = 0; m && s < 5; s++) {
            char key[96];
            snprintf(key, sizeof key, "%s%s", x, suffix[s][0]);
            json_t *v = json_object_get(row, key);
            if (!v)
                continue;
            json_object_set(m, suffix[s][1], v);
            json_object_del(row, key);
        }
        if (!m || json_object_set_new(metrics, x, m) != 0)
            return MOE_ENOMEM;
    }
    return metrics && json_object_set_new(row, "metrics", metrics) == 0 ? MOE_OK : MOE_ENOMEM;
}

static int report_json(moe_store *st, const char *where, const char *run, const char *cond)
{
    sqlite3 *db = moe_store_db(st);
    const char *path = moe_store_path(st);
    json_t *root = json_object(), *configs = json_array(), *runs = json_array(),
           *prov = json_array();
    char *keys = NULL, *sql = NULL;
    size_t len = 0;
    int r = root && configs && runs && prov ? MOE_OK : MOE_ENOMEM;
    FILE *m = r ? NULL : open_memstream(&sql, &len);
    if (m) {
        moe_store_seed_stats_sql(m, "points");
        fputs(" ORDER BY distribution, shape, router, cf, tokens, batches, config_group", m);
        if (fclose(m) != 0)
            r = MOE_ENOMEM;
    } else {
        r = MOE_ENOMEM;
    }
    if (!r)
        r = json_rows(db, sql, configs, path);
    for (size_t i = 0; !r && i < json_array_size(configs); i++)
        r = json_nest_metrics(json_array_get(configs, i));
    if (!r)
        r = json_rows(db, "SELECT git_rev, blas_library, blas_core, blas_threads, count(*) AS"
                          " points, min(created_at) AS first_point, max(created_at) AS"
                          " last_point FROM points GROUP BY git_rev, blas_library, blas_core,"
                          " blas_threads", prov, path);
    sqlite3_stmt *probe = NULL;
    if (!r && sqlite3_prepare_v2(db, "SELECT 1 FROM main.runs", -1, &probe, NULL) == SQLITE_OK)
        r = json_rows(db, "SELECT * FROM main.runs WHERE id IN (SELECT run FROM points)"
                          " ORDER BY id", runs, path);
    sqlite3_finalize(probe);
    if (!r)
        r = moe_store_varying_keys(db, cond, NULL, &keys);
    if (!r) {
        json_object_set_new(root, "database", json_string(path));
        json_object_set_new(root, "where", where ? json_string(where) : json_null());
        json_object_set_new(root, "run", run ? json_string(run) : json_null());
        json_object_set_new(root, "varying_keys", json_string(keys));
        json_object_set_new(root, "confidence", json_string(
            "ci95: half-width of the 95% confidence interval of the mean over seeds, "
            "t_{0.975,n-1} seed_sd / sqrt(n); seed_sd: sample sd over seeds; batch_sd: mean "
            "over seeds of the sample sd over batches"));
        json_object_set(root, "provenance", prov);
        json_object_set(root, "runs", runs);
        json_object_set(root, "configurations", configs);
        r = moe_report_layers_json(db, path, root); /* "layers" when points have one */
    }
    if (!r) {
        if (json_dumpf(root, stdout, JSON_INDENT(2) | JSON_REAL_PRECISION(17)) != 0)
            r = moe_fail(MOE_EIO, NULL, "cannot write the JSON (stdout)");
        else
            putchar('\n');
    } else if (r == MOE_ENOMEM) {
        r = moe_fail(MOE_ENOMEM, NULL, "out of memory (moesim report --json)");
    }
    free(sql);
    free(keys);
    json_decref(root);
    json_decref(configs);
    json_decref(runs);
    json_decref(prov);
    return r;
}

/* ---- the command ---- */

typedef struct {
    int csv, json, points;
    const char *html, *where, *run;
} report_args;

static int parse_args(int argc, char **argv, report_args *a, int *help)
{
    static const struct option longopts[] = {
        {"csv", no_argument, NULL, 'c'},          {"json", no_argument, NULL, 'j'},
        {"points", no_argument, NULL, 'p'},       {"html", required_argument, NULL, 'H'},
        {"where", required_argument, NULL, 'w'},  {"run", required_argument, NULL, 'r'},
        {"help", no_argument, NULL, 'h'},         {NULL, 0, NULL, 0},
    };
    int c;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (c) {
        case 'c': a->csv = 1; break;
        case 'j': a->json = 1; break;
        case 'p': a->points = 1; break;
        case 'H': a->html = optarg; break;
        case 'w': a->where = optarg; break;
        case 'r': a->run = optarg; break;
        case 'h': fputs(usage_text, stdout); *help = 1; return MOE_OK;
        default:
            return moe_fail(MOE_EINVAL, "moesim report --help lists the options",
                            "unknown option or missing value '%s' (moesim report)",
                            argv[optind - 1]);
        }
    }
    if (a->csv + a->json + (a->html != NULL) > 1)
        return moe_fail(MOE_EINVAL, NULL, "--csv, --json and --html exclude each other"
                        " (moesim report)");
    if (optind != argc - 1)
        return moe_fail(MOE_EINVAL, "moesim report results/default.db",
                        optind >= argc ? "no database given (moesim report)"
                                       : "more than one database given (moesim report)");
    return MOE_OK;
}

int moe_cmd_report(int argc, char **argv)
{
    report_args a = {0};
    int help = 0;
    int rc = parse_args(argc, argv, &a, &help);
    if (rc || help)
        return rc;
    const char *path = argv[optind];
    moe_store *st = NULL;
    if ((rc = moe_store_open(path, 1, &st)))
        return rc;
    sqlite3 *db = moe_store_db(st);
    char *cond = NULL;
    if (a.where || a.run)
        rc = moe_store_point_filter(db, a.where, a.run, &cond);
    if (!rc)
        rc = moe_store_reader_setup(db, cond, path);
    if (!rc && a.json) {
        rc = report_json(st, a.where, a.run, cond);
    } else if (!rc && a.html) {
        rc = moe_report_html(st, path, a.where, a.run, a.html);
    } else if (!rc) {
        moe_report_table t;
        const int which = a.points ? MOE_REPORT_POINTS : MOE_REPORT_CONFIGS;
        if (!(rc = moe_report_fetch(st, which, a.csv, &t))) {
            print_table(&t, a.csv);
            if (!a.csv)
                printf("(%zu %s; %s all columns: sqlite3 %s 'SELECT * FROM %s')\n", t.nrows,
                       a.points ? "points" : "configurations",
                       a.points ? "" : "+-ci95: 95% confidence interval over seeds, bsd: sd"
                                       " over batches;",
                       path, a.points ? "points" : "over_seeds");
            moe_report_table_free(&t);
            if (!a.csv)
                rc = moe_report_layers_text(db, path, stdout);
        }
    }
    free(cond);
    moe_store_close(st);
    return rc;
}
