/* report_html.c: `moesim report DB --html DIR` (report.h): one self-contained HTML page,
 * DIR/report.html, that can be sent as it is: the selection (--where, --run), the configuration
 * keys that vary, the configurations table (means over seeds with 95% confidence intervals and
 * the sd over batches), the provenance, the runs with their spec text and overrides, and every
 * chart of `moesim plot` inline as SVG. Nothing in the page refers to another file or to the
 * network: the charts are drawn into a temporary folder, their SVG is copied into the page
 * without the XML prolog and the namespace declarations (which HTML does not need), and the
 * temporary folder is removed. Every database string is HTML-escaped. */
#include "moe.h"
#include "plot.h"
#include "report.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static void html_text(FILE *f, const char *s)
{
    for (; s && *s; s++) {
        switch (*s) {
        case '<': fputs("&lt;", f); break;
        case '>': fputs("&gt;", f); break;
        case '&': fputs("&amp;", f); break;
        case '"': fputs("&quot;", f); break;
        default: fputc(*s, f);
        }
    }
}

static void html_table(FILE *f, const moe_report_table *t)
{
    fputs("<table>\n<thead><tr>", f);
    for (int c = 0; c < t->ncols; c++) {
        fputs("<th>", f);
        html_text(f, t->cols[c].header);
        fputs("</th>", f);
    }
    fputs("</tr></thead>\n<tbody>\n", f);
    for (size_t i = 0; i < t->nrows; i++) {
        fputs("<tr>", f);
        for (int c = 0; c < t->ncols; c++) {
            const char *s = t->cell[i * (size_t)t->ncols + (size_t)c];
            fputs(t->cols[c].fmt ? "<td class=\"n\">" : "<td>", f);
            html_text(f, s ? s : "-");
            fputs("</td>", f);
        }
        fputs("</tr>\n", f);
    }
    fputs("</tbody>\n</table>\n", f);
}

/* The rows of a query as an HTML table (column names as headers). */
static int html_query(FILE *f, sqlite3 *db, const char *sql, const char *path)
{
    sqlite3_stmt *q = NULL;
    int rc = sqlite3_prepare_v2(db, sql, -1, &q, NULL);
    if (rc != SQLITE_OK)
        return moe_fail(MOE_EDB, NULL, "cannot read the database: %s (%s)", sqlite3_errmsg(db),
                        path);
    fputs("<table>\n<thead><tr>", f);
    for (int c = 0; c < sqlite3_column_count(q); c++) {
        fputs("<th>", f);
        html_text(f, sqlite3_column_name(q, c));
        fputs("</th>", f);
    }
    fputs("</tr></thead>\n<tbody>\n", f);
    while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
        fputs("<tr>", f);
        for (int c = 0; c < sqlite3_column_count(q); c++) {
            const unsigned char *s = sqlite3_column_text(q, c);
            fputs("<td>", f);
            html_text(f, s ? (const char *)s : "-");
            fputs("</td>", f);
        }
        fputs("</tr>\n", f);
    }
    fputs("</tbody>\n</table>\n", f);
    int r = rc == SQLITE_DONE ? MOE_OK
                              : moe_fail(MOE_EDB, NULL, "cannot read the database: %s (%s)",
                                         sqlite3_errmsg(db), path);
    sqlite3_finalize(q);
    return r;
}

/* Copy an SVG file into the page: from "<svg" on, without xmlns declarations. */
static int inline_svg(FILE *f, const char *svg_path)
{
    FILE *in = fopen(svg_path, "rb");
    if (!in)
        return moe_fail(MOE_EIO, NULL, "cannot read a chart: %s (%s)", strerror(errno),
                        svg_path);
    char *buf = NULL;
    size_t len = 0;
    FILE *m = open_memstream(&buf, &len);
    char chunk[8192];
    size_t n;
    while (m && (n = fread(chunk, 1, sizeof chunk, in)) > 0)
        fwrite(chunk, 1, n, m);
    fclose(in);
    if (!m || fclose(m) != 0) {
        free(buf);
        return moe_fail(MOE_ENOMEM, NULL, "out of memory (%s)", svg_path);
    }
    const char *p = strstr(buf, "<svg");
    if (!p) {
        free(buf);
        return moe_fail(MOE_EIO, NULL, "not an SVG chart (%s)", svg_path);
    }
    while (*p) {
        if (strncmp(p, " xmlns", 6) == 0 || strncmp(p, "\nxmlns", 6) == 0 ||
            strncmp(p, "\txmlns", 6) == 0) { /* drop ' xmlns[:x]="..."' */
            const char *q = strchr(p, '"');
            q = q ? strchr(q + 1, '"') : NULL;
            if (q) {
                p = q + 1;
                continue;
            }
        }
        fputc(*p++, f);
    }
    free(buf);
    return MOE_OK;
}

/* Draw the charts into a fresh temporary folder; *list: the files written, one per line. */
static int draw_charts(const char *db_path, const char *where, const char *run, char *tmpdir,
                       char **list)
{
    char *len_buf = NULL;
    size_t len = 0;
    FILE *m = open_memstream(&len_buf, &len);
    if (!m)
        return moe_fail(MOE_ENOMEM, NULL, "out of memory (moesim report --html)");
    if (!mkdtemp(tmpdir)) {
        fclose(m);
        free(len_buf);
        return moe_fail(MOE_EIO, NULL, "cannot create a temporary folder: %s (%s)",
                        strerror(errno), tmpdir);
    }
    moe_plot_set_filter(where, run);
    /* the plot's summary line names the temporary folder: not on stdout (its notes on
     * stderr stay) */
    fflush(stdout);
    const int saved = dup(STDOUT_FILENO), null = open("/dev/null", O_WRONLY);
    if (saved >= 0 && null >= 0)
        dup2(null, STDOUT_FILENO);
    int rc = moe_plot_db_list(db_path, tmpdir, m);
    fflush(stdout);
    if (saved >= 0 && null >= 0)
        dup2(saved, STDOUT_FILENO);
    if (saved >= 0)
        close(saved);
    if (null >= 0)
        close(null);
    moe_plot_set_filter(NULL, NULL);
    if (fclose(m) != 0 && !rc)
        rc = moe_fail(MOE_ENOMEM, NULL, "out of memory (moesim report --html)");
    *list = len_buf;
    return rc;
}

static void remove_charts(const char *tmpdir, char *list)
{
    for (char *line = list ? strtok(list, "\n") : NULL; line; line = strtok(NULL, "\n"))
        unlink(line);
    rmdir(tmpdir);
}

static const char css[] =
    "body{font-family:sans-serif;margin:2em;max-width:1300px}"
    "table{border-collapse:collapse;font-size:12px;margin:1em 0}"
    "th,td{border:1px solid #bbb;padding:2px 6px}td.n{text-align:right}"
    "th{background:#eee}pre{background:#f6f6f6;padding:1em;overflow:auto}"
    "svg{max-width:100%;height:auto;display:block;margin:1em 0}";

static int write_page(FILE *f, moe_store *st, const char *db_path, const char *where,
                      const char *run, const char *list)
{
    sqlite3 *db = moe_store_db(st);
    fputs("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>moesim"
          " report: ", f);
    html_text(f, db_path);
    fprintf(f, "</title>\n<style>%s</style>\n</head>\n<body>\n<h1>moesim report: ", css);
    html_text(f, db_path);
    fputs("</h1>\n<p>Selection: ", f);
    html_text(f, where ? where : "all points");
    if (run) {
        fputs("; run ", f);
        html_text(f, run);
    }
    char *keys = NULL;
    int r = moe_store_varying_keys(db, NULL, MOE_STORE_CHART_GROUP, &keys);
    if (r)
        return r;
    /* (points here is the selection: the reader's temporary view) */
    fputs(".</p>\n", f);
    if (*keys) {
        fputs("<p><strong>Several configurations:</strong> points of one router, distribution"
              " and shape differ in ", f);
        html_text(f, keys);
        fputs(" (besides cf and seed).</p>\n", f);
    }
    free(keys);
    fputs("<h2>Configurations</h2>\n<p>One row per configuration (every key but the seed):"
          " means over seeds; +-ci95 is the half-width of the 95% confidence interval of the"
          " mean over seeds (Student t; - for one seed); bsd is the sample sd over the batches"
          " of a run, averaged over seeds.</p>\n", f);
    moe_report_table t;
    if ((r = moe_report_fetch(st, MOE_REPORT_CONFIGS, 0, &t)))
        return r;
    html_table(f, &t);
    moe_report_table_free(&t);
    fputs("<h2>Charts</h2>\n", f);
    char *copy = list ? strdup(list) : NULL;
    for (char *line = copy ? strtok(copy, "\n") : NULL; line && !r; line = strtok(NULL, "\n")) {
        size_t n = strlen(line);
        if (n < 4 || strcmp(line + n - 4, ".svg") != 0)
            continue;
        const char *base = strrchr(line, '/');
        fputs("<h3>", f);
        html_text(f, base ? base + 1 : line);
        fputs("</h3>\n<figure>\n", f);
        r = inline_svg(f, line);
        fputs("</figure>\n", f);
    }
    free(copy);
    if (r)
        return r;
    fputs("<h2>Provenance</h2>\n", f);
    if ((r = html_query(f, db, "SELECT git_rev, blas_library, blas_core, blas_threads,"
                               " count(*) AS points, min(created_at) AS first_point,"
                               " max(created_at) AS last_point FROM points GROUP BY git_rev,"
                               " blas_library, blas_core, blas_threads", db_path)))
        return r;
    sqlite3_stmt *probe = NULL;
    const int has_runs =
        sqlite3_prepare_v2(db, "SELECT 1 FROM main.runs", -1, &probe, NULL) == SQLITE_OK;
    sqlite3_finalize(probe);
    if (has_runs) {
        fputs("<h2>Runs</h2>\n", f);
        static const char runs_q[] = "SELECT id, spec, spec_path, overrides, git_rev,"
                                     " started_at, finished_at, points_run FROM main.runs"
                                     " WHERE id IN (SELECT run FROM points) ORDER BY id";
        if ((r = html_query(f, db, runs_q, db_path)))
            return r;
        sqlite3_stmt *q = NULL;
        int rc = sqlite3_prepare_v2(db, "SELECT id, spec_path, spec_text FROM main.runs WHERE id"
                                        " IN (SELECT run FROM points) ORDER BY id", -1, &q, NULL);
        while (rc == SQLITE_OK && sqlite3_step(q) == SQLITE_ROW) {
            fprintf(f, "<h3>Spec of run %lld: ", (long long)sqlite3_column_int64(q, 0));
            html_text(f, (const char *)sqlite3_column_text(q, 1));
            fputs("</h3>\n<pre>", f);
            const unsigned char *txt = sqlite3_column_text(q, 2);
            html_text(f, txt ? (const char *)txt : "(the spec file could not be read)");
            fputs("</pre>\n", f);
        }
        sqlite3_finalize(q);
    } else {
        fputs("<p>This database was written before moesim recorded its runs: no spec"
              " text.</p>\n", f);
    }
    fputs("</body>\n</html>\n", f);
    return MOE_OK;
}

int moe_report_html(moe_store *st, const char *db_path, const char *where, const char *run,
                    const char *dir)
{
    if (mkdir(dir, 0777) != 0 && errno != EEXIST)
        return moe_fail(MOE_EIO, NULL, "cannot create the folder: %s (%s)", strerror(errno),
                        dir);
    const char *tmp = getenv("TMPDIR");
    char tmpdir[4096];
    snprintf(tmpdir, sizeof tmpdir, "%s/moesim-report.XXXXXX", tmp && *tmp ? tmp : "/tmp");
    char *list = NULL;
    int r = draw_charts(db_path, where, run, tmpdir, &list);
    char out_path[4096];
    snprintf(out_path, sizeof out_path, "%s/report.html", dir);
    moe_outfile o;
    if (!r)
        r = moe_outfile_open(&o, out_path, "report", "w");
    if (!r) {
        int w = write_page(o.f, st, db_path, where, run, list);
        if (w)
            moe_outfile_discard(&o);
        r = w ? w : moe_outfile_commit(&o, ferror(o.f));
    }
    remove_charts(tmpdir, list);
    free(list);
    if (!r)
        printf("moesim report: %s (self-contained: tables, provenance, spec, charts inline)\n",
               out_path);
    return r;
}
