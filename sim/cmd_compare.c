/* cmd_compare.c: `moesim compare BASELINE CANDIDATE [--rtol X] [--atol X] [--max-rows N]` and
 * `moesim compare --record SOURCE FILE` (cli.h): regression tests on recorded metrics.
 *
 * Each side is a results database (moesim run) or a recorded metrics file (results/regression/
 * *.tsv, written by --record). Both are read into the same metric set: per point (keyed by its
 * config_key), the mean of every scalar metric of moe_point_metrics, its sample std over batches
 * (<name>_std), the per-expert loads assigned[e], kept[e], importance[e] and the histograms
 * experts_per_token[j], j = 0..E, and groups_touched[j], j = 0..G (databases of schema version 6
 * on), and for a training point its eval rows, <column>[step] for
 * every column of the table steps and step_loads[step:expert]. Timings, throughput,
 * provenance (git revision, BLAS threads, created_at) and the spec name are not part of it.
 *
 * Tolerances, by metric class (the `tol` column of the metric table, sim/metric_table.c; a value
 * passes when |b - c| <= atol + rtol * max(|b|, |c|)):
 *   counts    capacity, num_entries, n_tokens, flops_*, assigned[e], kept[e],
 *             experts_per_token[j], groups_touched[j]: exact, always (a plan that moved one
 *             token shows here).
 *   routing   every other metric (imbalances, drop rates, importance, aux and z losses, the
 *             _std of counts): rtol 1e-9, atol 0. They are computed in double by our own C
 *             code from logits that the gate GEMM computes on one BLAS thread (sim/layer.c),
 *             so the same spec and seed give the same bits whatever the thread count or the
 *             sweep order (tests/t_regression.sh checks this with --rtol 0); 1e-9 leaves room
 *             only for a different libm or compiler in the last bits.
 *   output    output_error_dense, output_error_dropless (and their _std): rtol 1e-6, atol 1e-6.
 *             They compare fp32 layer outputs whose GEMMs run in OpenBLAS, and the bits of an
 *             fp32 GEMM depend on the BLAS kernel and on how it splits the work over threads:
 *             measured on E = 8, D = 32 points, 1 vs 2 threads moves an O(1) error by ~1e-10
 *             relative, and an error at the fp32 roundoff floor (the dense router against the
 *             dense mixture, ~1e-7) by ~5e-8 absolute, hence the absolute floor.
 * --rtol X replaces the rtol of the routing and output classes, --atol X the atol of the output
 * class; counts stay exact. `--rtol 0` therefore asks routing metrics to be bit-identical, and
 * `--rtol 0 --atol 0` everything.
 *
 * Recorded file format (text, one value per line, diff-friendly; see write_recorded):
 *   # comment lines
 *   moesim-metrics<TAB>1
 *   blas_core<TAB>Haswell             (the OpenBLAS kernel the points ran with, if known)
 *   expert_gemm<TAB>libxsmm 1.17.0 (cpx)  (what ran the layer's expert GEMMs, if known)
 *   point<TAB><config_key>            (points sorted by config_key)
 *   <TAB><metric><TAB><value>         (%.17g, which round-trips a double; null = not stored)
 */
#include "cli.h"
#include "compare_drift.h"
#include "metric_table.h"
#include "moe.h"
#include "point.h"
#include "store.h"
#include "textsafe.h"

#include <errno.h>
#include <float.h>
#include <getopt.h>
#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char usage_text[] =
    "usage: moesim compare BASELINE CANDIDATE [--rtol X] [--atol X] [--max-rows N]\n"
    "       moesim compare --record SOURCE FILE\n"
    "Compares the recorded metrics of two runs, point by point (matched by configuration key).\n"
    "BASELINE and CANDIDATE are results databases (moesim run) or recorded metrics files\n"
    "(results/regression/*.tsv). Prints a table of every value that drifted and exits 1 on\n"
    "drift (a missing or extra point is drift), 0 when none.\n"
    "  counts (capacity, num_entries, n_tokens, flops_*, per-expert assigned and kept loads,\n"
    "          experts_per_token): exact, always\n"
    "  routing metrics (every other metric):          rtol 1e-9\n"
    "  output errors (output_error_dense, _dropless): rtol 1e-6 + atol 1e-6 (fp32 GEMMs)\n"
    "  timings, throughput and provenance:            ignored\n"
    "  --rtol X      relative tolerance of every floating metric (--rtol 0: bit-identical\n"
    "                routing metrics)\n"
    "  --atol X      absolute tolerance of the output errors (--rtol 0 --atol 0: everything\n"
    "                bit-identical)\n"
    "  --max-rows N  rows of the drift table (default 40, 0 = all); the per-metric summary\n"
    "                is always complete\n"
    "  --record SOURCE FILE\n"
    "                write the metrics of SOURCE (a database or a recorded file) to FILE, in\n"
    "                the recorded format: no timestamps, paths or timings\n"
    "Re-record the regression baselines (recorded files) after an intended change with\n"
    "`make record`.\n";

/* ---- metric classes and tolerances ---- */

/* the tolerance classes of the metric table */
enum {
    CLASS_ROUTING = MOE_TOL_ROUTING,
    CLASS_COUNT = MOE_TOL_EXACT,
    CLASS_OUTPUT = MOE_TOL_OUTPUT
};

typedef struct {
    double rtol[3], atol[3];
} tolerances;

static int has_prefix(const char *s, const char *p) { return strncmp(s, p, strlen(p)) == 0; }

/* The class of a metric by its name, from the metric table's tolerance: "<name>_std" is a routing
 * metric unless <name> is an output error; "<column>[i]" is the array row of that column; names
 * this moesim does not know are routing metrics. */
static int metric_class(const char *name)
{
    char base[64];
    size_t len = strcspn(name, "[");
    int is_std = 0;
    if (len > 4 && strncmp(name + len - 4, "_std", 4) == 0 && !name[len]) {
        len -= 4;
        is_std = 1;
    }
    if (len >= sizeof base)
        return CLASS_ROUTING;
    memcpy(base, name, len);
    base[len] = '\0';
    const moe_point_metric *m = moe_metric_find(base);
    if (!m)
        return CLASS_ROUTING;
    if (m->tol == MOE_TOL_OUTPUT)
        return CLASS_OUTPUT;
    if (is_std || m->tol == MOE_TOL_ROUTING)
        return CLASS_ROUTING;
    return CLASS_COUNT;
}

/* ---- metric sets ---- */


typedef struct {
    char name[NAME_LEN];
    int null; /* not stored (NULL in the database: NaN, or not applicable) */
    double v;
} mval;

typedef struct {
    char *key;
    mval *v;
    size_t n, cap;
} mpoint;

typedef struct {
    const char *path;
    char *blas_core; /* the distinct BLAS cores of the points, comma-separated, or NULL */
    char *gemm;      /* the distinct expert GEMM backends of the points, likewise */
    int recorded;    /* read from a recorded metrics file (else a database) */
    mpoint *p;
    size_t n, cap;
} mset;

static void mset_free(mset *s)
{
    if (!s)
        return;
    for (size_t i = 0; i < s->n; i++) {
        free(s->p[i].key);
        free(s->p[i].v);
    }
    free(s->p);
    free(s->blas_core);
    free(s->gemm);
    free(s);
}

static char *dup_str(const char *s)
{
    char *d = malloc(strlen(s) + 1);
    if (d)
        strcpy(d, s);
    return d;
}

static int nomem(const char *where)
{
    return moe_fail(MOE_ENOMEM, NULL, "out of memory (%s)", where);
}

static int mset_add_point(mset *s, const char *key)
{
    if (s->n == s->cap) {
        size_t cap = s->cap ? 2 * s->cap : 64;
        mpoint *p = realloc(s->p, cap * sizeof *p);
        if (!p)
            return nomem(s->path);
        s->p = p;
        s->cap = cap;
    }
    mpoint *pt = &s->p[s->n];
    memset(pt, 0, sizeof *pt);
    if (!(pt->key = dup_str(key)))
        return nomem(s->path);
    s->n++;
    return MOE_OK;
}

/* Append a value to the last point; name is printf-formatted. */
static int mset_add_value(mset *s, int null, double v, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int mset_add_value(mset *s, int null, double v, const char *fmt, ...)
{
    mpoint *pt = &s->p[s->n - 1];
    if (pt->n == pt->cap) {
        size_t cap = pt->cap ? 2 * pt->cap : 64;
        mval *nv = realloc(pt->v, cap * sizeof *nv);
        if (!nv)
            return nomem(s->path);
        pt->v = nv;
        pt->cap = cap;
    }
    mval *m = &pt->v[pt->n];
    va_list ap;
    va_start(ap, fmt);
    int len = vsnprintf(m->name, sizeof m->name, fmt, ap);
    va_end(ap);
    if (len < 0 || len >= NAME_LEN) {
        char shown[4 * NAME_LEN];
        return moe_fail(MOE_EFORMAT, NULL, "metric name too long: '%s...' (%s)",
                        moe_text_escape(m->name, shown, sizeof shown), s->path);
    }
    m->null = null;
    m->v = null ? 0.0 : v;
    pt->n++;
    return MOE_OK;
}

static int cmp_point(const void *a, const void *b)
{
    return strcmp(((const mpoint *)a)->key, ((const mpoint *)b)->key);
}

/* Sort the points by key; a key twice is an error. */
static int mset_sort(mset *s)
{
    if (s->n > 1)
        qsort(s->p, s->n, sizeof *s->p, cmp_point);
    for (size_t i = 1; i < s->n; i++)
        if (strcmp(s->p[i - 1].key, s->p[i].key) == 0) {
            char shown[512];
            return moe_fail(MOE_EFORMAT, NULL, "point stored twice: %s (%s)",
                            moe_text_escape(s->p[i].key, shown, sizeof shown), s->path);
        }
    return MOE_OK;
}

/* ---- reading a results database ---- */

static int db_err(sqlite3 *db, const char *path)
{
    return moe_fail(MOE_EDB, NULL, "cannot read the metrics: %s (%s)", sqlite3_errmsg(db), path);
}

/* The SELECT of the metric table's stored values (malloc'd): for the points (per_expert 0)
 * id, config_key, E and every scalar metric with its _std; for one point's expert_loads
 * (per_expert 1) the expert and every per-expert column. */
static char *metrics_sql(int per_expert)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *m = open_memstream(&buf, &len);
    if (!m)
        return NULL;
    fprintf(m, per_expert ? "SELECT expert" : "SELECT id, config_key, E");
    for (int i = 0; i < MOE_METRIC_NROWS; i++) {
        const moe_point_metric *mm = moe_metric_row(i);
        int is_expert = mm->kind == MOE_METRIC_EXPERT_LONG || mm->kind == MOE_METRIC_EXPERT_DOUBLE;
        if (per_expert && is_expert)
            fprintf(m, ", %s", mm->column);
        else if (!per_expert && i < MOE_POINT_NMETRICS)
            fprintf(m, ", %s, %s_std", mm->name, mm->name);
    }
    fprintf(m, per_expert ? " FROM expert_loads WHERE point = ?1 ORDER BY expert"
                          : " FROM points ORDER BY config_key");
    if (fclose(m) != 0) {
        free(buf);
        return NULL;
    }
    return buf;
}

static int add_column(mset *s, sqlite3_stmt *q, int c, const char *fmt, const char *name,
                      int index)
{
    int null = sqlite3_column_type(q, c) == SQLITE_NULL;
    double v = null ? 0.0 : sqlite3_column_double(q, c);
    return index < 0 ? mset_add_value(s, null, v, fmt, name)
                     : mset_add_value(s, null, v, fmt, name, index);
}

/* Step q to its end, adding a value per row: column col, named fmt with column 0 as index.
 * q is reset afterwards (its bindings stay). */
static int add_rows(mset *s, sqlite3 *db, sqlite3_stmt *q, int col, const char *fmt,
                    const char *name)
{
    int rc = MOE_OK, src;
    while ((src = sqlite3_step(q)) == SQLITE_ROW && !rc)
        rc = add_column(s, q, col, fmt, name, sqlite3_column_int(q, 0));
    if (!rc && src != SQLITE_DONE && src != SQLITE_ROW)
        rc = db_err(db, s->path);
    sqlite3_reset(q); /* returns the step's error, reported above */
    return rc;
}

/* The loads and the histogram of point id (the last point of s). */
static int read_children(mset *s, sqlite3 *db, sqlite3_stmt *loads, sqlite3_stmt *hist,
                         sqlite3_stmt *ghist, long long id)
{
    if (sqlite3_bind_int64(loads, 1, id) != SQLITE_OK ||
        sqlite3_bind_int64(hist, 1, id) != SQLITE_OK ||
        (ghist && sqlite3_bind_int64(ghist, 1, id) != SQLITE_OK))
        return db_err(db, s->path);
    int rc = MOE_OK, col = 1;
    /* grouped by metric: assigned[*], kept[*], importance[*], then the histogram; loads selects
     * expert and the per-expert columns in table order (metrics_sql) */
    for (int i = 0; i < MOE_METRIC_NROWS && !rc; i++) {
        const moe_point_metric *m = moe_metric_row(i);
        if (m->kind == MOE_METRIC_EXPERT_LONG || m->kind == MOE_METRIC_EXPERT_DOUBLE)
            rc = add_rows(s, db, loads, col++, "%s[%d]", m->column);
        else if (m->kind == MOE_METRIC_HISTOGRAM)
            rc = add_rows(s, db, hist, 1, "%s[%d]", m->column);
        else if (m->kind == MOE_METRIC_GROUP_HISTOGRAM && ghist) /* none before version 6 */
            rc = add_rows(s, db, ghist, 1, "%s[%d]", m->column);
    }
    return rc;
}

/* The eval rows of training point id, if the database has them: "<column>[step]" for every
 * column of steps, "step_loads[step:expert]" (routing class: names the metric table lacks). */
static int read_train(mset *s, sqlite3 *db, long long id)
{
    sqlite3_stmt *q = NULL;
    if (sqlite3_prepare_v2(db, "SELECT 1 FROM sqlite_master WHERE name = 'steps'", -1, &q,
                           NULL) != SQLITE_OK)
        return db_err(db, s->path);
    int has = sqlite3_step(q) == SQLITE_ROW, rc = MOE_OK, src;
    sqlite3_finalize(q);
    if (!has)
        return MOE_OK;
    for (int pass = 0; pass < 2 && !rc; pass++) {
        q = NULL;
        if (sqlite3_prepare_v2(db, pass ? "SELECT step, expert, load FROM step_loads WHERE"
                                          " point = ?1 ORDER BY step, expert"
                                        : "SELECT * FROM steps WHERE point = ?1 ORDER BY step",
                               -1, &q, NULL) != SQLITE_OK ||
            sqlite3_bind_int64(q, 1, id) != SQLITE_OK) {
            sqlite3_finalize(q);
            return db_err(db, s->path);
        }
        while (!rc && (src = sqlite3_step(q)) == SQLITE_ROW) {
            const int step = sqlite3_column_int(q, pass ? 0 : 1);
            if (pass)
                rc = mset_add_value(s, 0, sqlite3_column_double(q, 2), "step_loads[%d:%d]", step,
                                    sqlite3_column_int(q, 1));
            for (int c = 2; !pass && c < sqlite3_column_count(q) && !rc; c++)
                rc = add_column(s, q, c, "%s[%d]", sqlite3_column_name(q, c), step);
        }
        if (!rc && src != SQLITE_DONE)
            rc = db_err(db, s->path);
        sqlite3_finalize(q);
    }
    return rc;
}

/* *out = the one text value of the single-row query q (NULL for SQL NULL). */
static int read_text(const mset *s, sqlite3 *db, sqlite3_stmt *q, char **out)
{
    if (sqlite3_step(q) != SQLITE_ROW)
        return db_err(db, s->path);
    const unsigned char *t = sqlite3_column_text(q, 0);
    if (t && !(*out = dup_str((const char *)t)))
        return nomem(s->path);
    return MOE_OK;
}

/* s->gemm = the distinct expert GEMM backends that blas_library names after "; expert GEMMs "
 * (comma-separated, sorted), NULL when no point names one (databases before the name). */
static int read_gemm(mset *s, sqlite3 *db)
{
    sqlite3_stmt *q = NULL;
    if (sqlite3_prepare_v2(db, "SELECT group_concat(g, ',') FROM (SELECT DISTINCT"
                               " substr(blas_library, instr(blas_library, '; expert GEMMs ') + 15)"
                               " AS g FROM points WHERE instr(blas_library, '; expert GEMMs ') > 0"
                               " ORDER BY g)", -1, &q, NULL) != SQLITE_OK) {
        sqlite3_finalize(q);
        return db_err(db, s->path);
    }
    int rc = read_text(s, db, q, &s->gemm);
    sqlite3_finalize(q);
    return rc;
}

static int read_db(mset *s)
{
    moe_store *st = NULL;
    int rc = moe_store_open(s->path, 1, &st);
    if (rc)
        return rc;
    sqlite3 *db = moe_store_db(st);
    /* `points` with NULL for the metrics a database of an older version lacks */
    if ((rc = moe_store_reader_setup(db, NULL, s->path))) {
        moe_store_close(st);
        return rc;
    }
    sqlite3_stmt *q = NULL, *loads = NULL, *hist = NULL, *cores = NULL, *ghist = NULL;
    char *sql = metrics_sql(0), *lsql = metrics_sql(1);
    if (!sql || !lsql) {
        free(sql);
        free(lsql);
        moe_store_close(st);
        return nomem(s->path);
    }
    if (sqlite3_prepare_v2(db, sql, -1, &q, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(db, lsql, -1, &loads, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(db, "SELECT experts, tokens FROM experts_per_token WHERE point = ?1"
                               " ORDER BY experts", -1, &hist, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(db, "SELECT group_concat(blas_core, ',') FROM (SELECT DISTINCT"
                               " blas_core FROM points ORDER BY blas_core)", -1, &cores,
                           NULL) != SQLITE_OK) {
        rc = db_err(db, s->path);
        goto done;
    }
    if (sqlite3_prepare_v2(db, "SELECT groups, tokens FROM groups_touched WHERE point = ?1"
                               " ORDER BY groups", -1, &ghist, NULL) != SQLITE_OK) {
        sqlite3_finalize(ghist); /* a database of an older version has no such table */
        ghist = NULL;
    }
    int src;
    while (!rc && (src = sqlite3_step(q)) == SQLITE_ROW) {
        const unsigned char *key = sqlite3_column_text(q, 1);
        if (!key) {
            rc = moe_fail(MOE_EDB, NULL, "point %lld has no config_key (%s)",
                          (long long)sqlite3_column_int64(q, 0), s->path);
            break;
        }
        if ((rc = mset_add_point(s, (const char *)key)))
            break;
        int c = 3;
        for (const moe_point_metric *mm = moe_point_metrics; mm->name && !rc; mm++, c += 2)
            rc = add_column(s, q, c, "%s", mm->name, -1);
        c = 3;
        for (const moe_point_metric *mm = moe_point_metrics; mm->name && !rc; mm++, c += 2)
            rc = add_column(s, q, c + 1, "%s_std", mm->name, -1);
        if (!rc)
            rc = read_children(s, db, loads, hist, ghist, sqlite3_column_int64(q, 0));
        if (!rc)
            rc = read_train(s, db, sqlite3_column_int64(q, 0));
    }
    if (!rc && src != SQLITE_DONE)
        rc = db_err(db, s->path);
    if (!rc)
        rc = read_text(s, db, cores, &s->blas_core);
    if (!rc)
        rc = read_gemm(s, db);
done:
    sqlite3_finalize(q); /* return the last step's error, reported above */
    sqlite3_finalize(loads);
    sqlite3_finalize(hist);
    sqlite3_finalize(ghist);
    sqlite3_finalize(cores);
    free(sql);
    free(lsql);
    moe_store_close(st);
    return rc ? rc : mset_sort(s);
}

/* ---- recorded files ---- */

static const char recorded_header[] =
    "# moesim recorded metrics (results/regression/README.md). One block per sweep point,\n"
    "# sorted by configuration key: \"point<TAB>key\", then \"<TAB>metric<TAB>value\" lines: the\n"
    "# mean over batches of every scalar metric, its sample std over batches (<name>_std),\n"
    "# per-expert loads assigned[e], kept[e], importance[e], the histograms experts_per_token[j]\n"
    "# and groups_touched[j].\n"
    "# Values %.17g (exact round trip); null = not stored. No timestamps, paths or timings.\n"
    "# Written by `moesim compare --record DB FILE`, checked by `moesim compare FILE DB`,\n"
    "# re-recorded by `make record`.\n";

static int fmt_value(const mval *m, char *buf, size_t len)
{
    return m->null ? snprintf(buf, len, "null") : snprintf(buf, len, "%.17g", m->v);
}

/* Why a key, metric name or BLAS core cannot be recorded (it would not read back as written),
 * or NULL: it is empty, holds a line break (CR or LF: the reader splits lines there and strips
 * a final CR) or, for a metric name (its value follows a tab), a tab. */
static const char *unrecordable(const char *t, int is_name)
{
    if (!*t)
        return "is empty";
    for (const char *c = t; *c; c++)
        if (*c == '\n' || *c == '\r')
            return "holds a line break";
        else if (is_name && *c == '\t')
            return "holds a tab";
    return NULL;
}

/* MOE_OK when every key and name of s reads back from a recorded file as written. */
static int check_recordable(const mset *s)
{
    const char *why = s->blas_core && *s->blas_core ? unrecordable(s->blas_core, 0) : NULL;
    char shown[512];
    if (why)
        return moe_fail(MOE_EFORMAT, NULL, "cannot record: the BLAS core '%s' %s (%s)",
                        moe_text_escape(s->blas_core, shown, sizeof shown), why, s->path);
    if (s->gemm && (why = unrecordable(s->gemm, 0)))
        return moe_fail(MOE_EFORMAT, NULL, "cannot record: the expert GEMM backend '%s' %s (%s)",
                        moe_text_escape(s->gemm, shown, sizeof shown), why, s->path);
    for (size_t i = 0; i < s->n; i++) {
        if ((why = unrecordable(s->p[i].key, 0)))
            return moe_fail(MOE_EFORMAT, NULL, "cannot record: configuration key '%s' %s (%s)",
                            moe_text_escape(s->p[i].key, shown, sizeof shown), why, s->path);
        for (size_t j = 0; j < s->p[i].n; j++)
            if ((why = unrecordable(s->p[i].v[j].name, 1)))
                return moe_fail(MOE_EFORMAT, NULL,
                                "cannot record: metric '%s' of point '%s' %s (%s)",
                                moe_text_escape(s->p[i].v[j].name, shown, 200),
                                moe_text_escape(s->p[i].key, shown + 200, sizeof shown - 200),
                                why, s->path);
    }
    return MOE_OK;
}

static int write_recorded(const mset *s, const char *path)
{
    if (s->n == 0)
        return moe_fail(MOE_EINVAL, "run the experiment into the database first",
                        "no points to record (%s)", s->path);
    int rc = check_recordable(s);
    if (rc)
        return rc;
    moe_outfile o;
    if ((rc = moe_outfile_open(&o, path, "recorded metrics", "w")))
        return rc;
    fputs(recorded_header, o.f);
    fprintf(o.f, "moesim-metrics\t1\n");
    if (s->blas_core)
        fprintf(o.f, "blas_core\t%s\n", s->blas_core);
    if (s->gemm)
        fprintf(o.f, "expert_gemm\t%s\n", s->gemm);
    for (size_t i = 0; i < s->n; i++) {
        fprintf(o.f, "point\t%s\n", s->p[i].key);
        for (size_t j = 0; j < s->p[i].n; j++) {
            char buf[64];
            fmt_value(&s->p[i].v[j], buf, sizeof buf);
            fprintf(o.f, "\t%s\t%s\n", s->p[i].v[j].name, buf);
        }
    }
    return moe_outfile_commit(&o, ferror(o.f));
}

static int bad_line(const mset *s, long line, const char *what)
{
    return moe_fail(MOE_EFORMAT, "recorded files are written by `moesim compare --record`",
                    "%s (%s:%ld)", what, s->path, line);
}

/* Parse one "<TAB>metric<TAB>value" line (text after the first tab). */
static int parse_value_line(mset *s, char *text, long line)
{
    char *tab = strchr(text, '\t');
    if (!tab || tab == text)
        return bad_line(s, line, "expected <TAB>metric<TAB>value");
    *tab = '\0';
    const char *name = text, *val = tab + 1;
    if (strchr(val, '\t') || !*val)
        return bad_line(s, line, "expected <TAB>metric<TAB>value");
    if (strcmp(val, "null") == 0)
        return mset_add_value(s, 1, 0.0, "%s", name);
    char *end = NULL;
    errno = 0;
    double v = strtod(val, &end);
    int inf = strcmp(val, "inf") == 0 || strcmp(val, "-inf") == 0; /* as %.17g writes them */
    /* strtod flags a subnormal result (as %.17g writes 5e-324) as an underflow: it is exact
     * enough to read back bit for bit; an underflow to 0 or an overflow loses the value */
    int subnormal = errno == ERANGE && v != 0.0 && fabs(v) < DBL_MIN;
    if (end == val || *end || (errno == ERANGE && !inf && !subnormal) || (!isfinite(v) && !inf))
        return bad_line(s, line, "value is not a number, inf, -inf or null");
    return mset_add_value(s, 0, v, "%s", name);
}

static int read_recorded(mset *s)
{
    FILE *f = fopen(s->path, "r");
    if (!f)
        return moe_fail(MOE_EIO, NULL, "cannot open: %s (%s)", strerror(errno), s->path);
    char *buf = NULL;
    size_t cap = 0;
    ssize_t len;
    long line = 0;
    int rc = MOE_OK, version = 0;
    while (!rc && (len = getline(&buf, &cap, f)) >= 0) {
        line++;
        if (len > 0 && buf[len - 1] == '\n')
            buf[--len] = '\0';
        if (len > 0 && buf[len - 1] == '\r')
            buf[--len] = '\0';
        if (len == 0 || buf[0] == '#')
            continue;
        if ((size_t)len != strlen(buf)) {
            rc = bad_line(s, line, "NUL byte in a text line");
        } else if (!version) {
            if (strcmp(buf, "moesim-metrics\t1") == 0)
                version = 1;
            else
                rc = bad_line(s, line, has_prefix(buf, "moesim-metrics\t")
                                           ? "unsupported recorded format version"
                                           : "not a moesim recorded metrics file (no "
                                             "\"moesim-metrics<TAB>1\" line)");
        } else if (has_prefix(buf, "blas_core\t")) {
            free(s->blas_core);
            if (!(s->blas_core = dup_str(buf + strlen("blas_core\t"))))
                rc = nomem(s->path);
        } else if (has_prefix(buf, "expert_gemm\t")) {
            free(s->gemm);
            if (!(s->gemm = dup_str(buf + strlen("expert_gemm\t"))))
                rc = nomem(s->path);
        } else if (has_prefix(buf, "point\t")) {
            if (!buf[6])
                rc = bad_line(s, line, "empty configuration key");
            else
                rc = mset_add_point(s, buf + 6);
        } else if (buf[0] == '\t') {
            rc = s->n ? parse_value_line(s, buf + 1, line)
                      : bad_line(s, line, "metric before the first point line");
        } else {
            rc = bad_line(s, line, "unknown line");
        }
    }
    if (!rc && ferror(f))
        rc = moe_fail(MOE_EIO, NULL, "cannot read: %s (%s)", strerror(errno), s->path);
    if (!rc && !version)
        rc = bad_line(s, line, "not a moesim recorded metrics file (empty)");
    free(buf);
    fclose(f);
    return rc ? rc : mset_sort(s);
}

/* Read a database or a recorded file (told apart by the SQLite header). */
static int mset_read(const char *path, mset **out)
{
    *out = NULL;
    if (moe_outfile_note_input(path)) /* compare --record SOURCE FILE: FILE must not be SOURCE */
        return MOE_ENOMEM;
    FILE *f = fopen(path, "rb");
    if (!f)
        return moe_fail(MOE_EIO, "give a results database or a recorded metrics file",
                        "cannot open: %s (%s)", strerror(errno), path);
    char magic[16] = {0};
    size_t got = fread(magic, 1, sizeof magic, f);
    fclose(f);
    mset *s = calloc(1, sizeof *s);
    if (!s)
        return nomem(path);
    s->path = path;
    s->recorded = !(got == sizeof magic && memcmp(magic, "SQLite format 3", 16) == 0);
    int rc = s->recorded ? read_recorded(s) : read_db(s);
    if (rc) {
        mset_free(s);
        return rc;
    }
    *out = s;
    return MOE_OK;
}

/* ---- comparison and the drift table ---- */


static int drift_add(drift *d, const char *key, const char *metric, const char *base,
                     const char *cand, const char *rel, const char *tol)
{
    if (d->n == d->cap) {
        size_t cap = d->cap ? 2 * d->cap : 64;
        drift_row *r = realloc(d->rows, cap * sizeof *r);
        if (!r)
            return nomem("moesim compare");
        d->rows = r;
        d->cap = cap;
    }
    drift_row *r = &d->rows[d->n++];
    r->key = key;
    snprintf(r->metric, sizeof r->metric, "%s", metric);
    snprintf(r->base, sizeof r->base, "%s", base);
    snprintf(r->cand, sizeof r->cand, "%s", cand);
    snprintf(r->rel, sizeof r->rel, "%s", rel);
    snprintf(r->tol, sizeof r->tol, "%s", tol);
    return MOE_OK;
}

static void fmt_tol(const tolerances *t, int cls, char *buf, size_t len)
{
    if (cls == CLASS_COUNT)
        snprintf(buf, len, "exact");
    else if (t->atol[cls] > 0.0)
        snprintf(buf, len, "%g+%g", t->rtol[cls], t->atol[cls]);
    else
        snprintf(buf, len, "%g", t->rtol[cls]);
}

/* Compare one value; add a row when it drifted. */
static int compare_value(drift *d, const tolerances *t, const char *key, const mval *b,
                         const mval *c)
{
    int cls = metric_class(b->name), ok;
    double rel = 0.0;
    if (b->null || c->null) {
        ok = b->null && c->null;
        rel = NAN;
    } else if (!isfinite(b->v) || !isfinite(c->v)) { /* inf only equals itself */
        ok = b->v == c->v || (isnan(b->v) && isnan(c->v));
        rel = NAN;
    } else {
        double diff = fabs(b->v - c->v), scale = fmax(fabs(b->v), fabs(c->v));
        rel = scale > 0.0 ? diff / scale : 0.0;
        ok = cls == CLASS_COUNT ? b->v == c->v : diff <= t->atol[cls] + t->rtol[cls] * scale;
    }
    d->values++;
    if (ok)
        return MOE_OK;
    d->drifted++;
    char bs[32], cs[32], rs[16], ts[40];
    fmt_value(b, bs, sizeof bs);
    fmt_value(c, cs, sizeof cs);
    if (isnan(rel))
        snprintf(rs, sizeof rs, "-");
    else
        snprintf(rs, sizeof rs, "%.2e", rel);
    fmt_tol(t, cls, ts, sizeof ts);
    return drift_add(d, key, b->name, bs, cs, rs, ts);
}

/* Metrics by name, then by position (the first of equal names first). */
static int cmp_mval_ptr(const void *a, const void *b)
{
    const mval *x = *(const mval *const *)a, *y = *(const mval *const *)b;
    int o = strcmp(x->name, y->name);
    return o ? o : (x > y) - (x < y);
}

/* The index in c of the first metric named name: c->n when none. byname (c->n) is c's metrics
 * sorted by cmp_mval_ptr (a binary search: two files listing 10^5 metrics in different orders
 * compare in n log n, not n^2). */
static size_t find_metric(const mpoint *c, const mval *const *byname, const char *name)
{
    size_t lo = 0, hi = c->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (strcmp(byname[mid]->name, name) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < c->n && strcmp(byname[lo]->name, name) == 0 ? (size_t)(byname[lo] - c->v)
                                                            : c->n;
}

/* Compare the values of two points with the same key, matching metrics by name (same position
 * first; otherwise through byname, c's metrics sorted once when first needed). */
static int compare_point(drift *d, const tolerances *t, const mpoint *b, const mpoint *c,
                         unsigned char *seen, const mval **byname)
{
    memset(seen, 0, c->n);
    size_t before = d->drifted + d->metrics_missing + d->metrics_extra;
    int rc = MOE_OK, sorted = 0;
    for (size_t i = 0; i < b->n && !rc; i++) {
        size_t j = i;
        if (j >= c->n || strcmp(b->v[i].name, c->v[j].name) != 0) {
            if (!sorted) {
                for (size_t q = 0; q < c->n; q++)
                    byname[q] = &c->v[q];
                qsort(byname, c->n, sizeof *byname, cmp_mval_ptr);
                sorted = 1;
            }
            j = find_metric(c, byname, b->v[i].name);
        }
        if (j == c->n) {
            char bs[32];
            fmt_value(&b->v[i], bs, sizeof bs);
            d->metrics_missing++;
            rc = drift_add(d, b->key, b->v[i].name, bs, "missing", "-", "-");
            continue;
        }
        seen[j] = 1;
        rc = compare_value(d, t, b->key, &b->v[i], &c->v[j]);
    }
    for (size_t j = 0; j < c->n && !rc; j++) {
        if (seen[j])
            continue;
        char cs[32];
        fmt_value(&c->v[j], cs, sizeof cs);
        d->metrics_extra++;
        rc = drift_add(d, c->key, c->v[j].name, "missing", cs, "-", "-");
    }
    if (d->drifted + d->metrics_missing + d->metrics_extra > before)
        d->points_drifted++;
    return rc;
}

static int compare_sets(const mset *b, const mset *c, const tolerances *t, drift *d)
{
    size_t maxn = 1;
    for (size_t j = 0; j < c->n; j++)
        if (c->p[j].n > maxn)
            maxn = c->p[j].n;
    unsigned char *seen = malloc(maxn);
    const mval **byname = malloc(maxn * sizeof *byname);
    if (!seen || !byname) {
        free(seen);
        free(byname);
        return nomem("moesim compare");
    }
    int rc = MOE_OK;
    size_t i = 0, j = 0;
    while (!rc && (i < b->n || j < c->n)) {
        int o = i == b->n ? 1 : j == c->n ? -1 : strcmp(b->p[i].key, c->p[j].key);
        if (o == 0) {
            rc = compare_point(d, t, &b->p[i++], &c->p[j++], seen, byname);
        } else if (o < 0) {
            d->missing++;
            rc = drift_add(d, b->p[i++].key, "(point)", "present", "missing", "-", "-");
        } else {
            d->extra++;
            rc = drift_add(d, c->p[j++].key, "(point)", "missing", "present", "-", "-");
        }
    }
    free(seen);
    free(byname);
    return rc;
}

/* ---- the command ---- */

static int parse_nonneg(const char *s, const char *opt, double *out)
{
    char *end = NULL;
    errno = 0;
    double v = strtod(s, &end);
    if (end == s || *end || errno == ERANGE || !isfinite(v) || v < 0.0)
        return moe_fail(MOE_EINVAL, "a tolerance is a number >= 0, e.g. --rtol 1e-6",
                        "bad value '%s' (moesim compare %s)", s, opt);
    *out = v;
    return MOE_OK;
}

static int run_compare(const char *bpath, const char *cpath, const tolerances *t,
                       size_t max_rows)
{
    mset *b = NULL, *c = NULL;
    drift d;
    memset(&d, 0, sizeof d);
    int rc = mset_read(bpath, &b);
    if (!rc)
        rc = mset_read(cpath, &c);
    if (!rc)
        rc = compare_sets(b, c, t, &d);
    if (rc)
        goto done;
    printf("moesim compare: baseline %s (%zu points), candidate %s (%zu points)\n", bpath, b->n,
           cpath, c->n);
    printf("tolerances: counts exact; routing metrics rtol %g; output errors rtol %g + atol %g;"
           " timings ignored\n", t->rtol[CLASS_ROUTING], t->rtol[CLASS_OUTPUT],
           t->atol[CLASS_OUTPUT]);
    if (b->blas_core && c->blas_core && strcmp(b->blas_core, c->blas_core) != 0)
        printf("note: the baseline ran with BLAS core %s, the candidate with %s: floating "
               "metrics may differ in their last bits (set OPENBLAS_CORETYPE to compare)\n",
               b->blas_core, c->blas_core);
    if (b->gemm && c->gemm && strcmp(b->gemm, c->gemm) != 0)
        printf("note: the baseline's expert GEMMs ran on %s, the candidate's on %s: output "
               "errors may differ in their last bits\n", b->gemm, c->gemm);
    size_t bad = d.drifted + d.missing + d.extra + d.metrics_missing + d.metrics_extra;
    if (bad == 0) {
        printf("no drift: %zu values in %zu points\n", d.values, b->n);
        goto done;
    }
    printf("DRIFT: %zu of %zu values in %zu of %zu points", d.drifted, d.values,
           d.points_drifted, b->n);
    if (d.missing || d.extra)
        printf("; %zu points missing in the candidate, %zu extra", d.missing, d.extra);
    if (d.metrics_missing || d.metrics_extra)
        printf("; %zu metrics missing in the candidate, %zu extra", d.metrics_missing,
               d.metrics_extra);
    printf("\n\n");
    moe_compare_print_table(&d, max_rows);
    if ((rc = moe_compare_print_summary(&d)))
        goto done;
    fflush(stdout);
    /* `make record` rewrites recorded baselines only: no hint to it for two databases */
    rc = moe_fail(MOE_EINVAL,
                  b->recorded ? "if the change is intended, re-record the baselines with `make"
                                " record`"
                              : "the table above lists what differs; `moesim report` prints"
                                " each database",
                  "metrics drifted: %zu values in %zu points, %zu points missing, %zu extra "
                  "(moesim compare %s %s)", d.drifted + d.metrics_missing + d.metrics_extra,
                  d.points_drifted, d.missing, d.extra, bpath, cpath);
done:
    free(d.rows);
    mset_free(b);
    mset_free(c);
    return rc;
}

static int run_record(const char *src, const char *out)
{
    mset *s = NULL;
    int rc = mset_read(src, &s);
    if (!rc)
        rc = write_recorded(s, out);
    if (!rc)
        printf("moesim compare: recorded %zu points of %s to %s\n", s->n, src, out);
    mset_free(s);
    return rc;
}

int moe_cmd_compare(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"rtol", required_argument, NULL, 'r'},
        {"atol", required_argument, NULL, 'a'},
        {"max-rows", required_argument, NULL, 'm'},
        {"record", no_argument, NULL, 'R'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    tolerances t = {.rtol = {[CLASS_COUNT] = 0.0, [CLASS_ROUTING] = 1e-9, [CLASS_OUTPUT] = 1e-6},
                     .atol = {[CLASS_COUNT] = 0.0, [CLASS_ROUTING] = 0.0, [CLASS_OUTPUT] = 1e-6}};
    int record = 0, c, rc;
    long max_rows = 40;
    double v;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (c) {
        case 'r':
            if ((rc = parse_nonneg(optarg, "--rtol", &v)))
                return rc;
            t.rtol[CLASS_ROUTING] = t.rtol[CLASS_OUTPUT] = v;
            break;
        case 'a':
            if ((rc = parse_nonneg(optarg, "--atol", &v)))
                return rc;
            t.atol[CLASS_OUTPUT] = v;
            break;
        case 'm': {
            char *end = NULL;
            errno = 0;
            max_rows = strtol(optarg, &end, 10);
            if (end == optarg || *end || errno || max_rows < 0)
                return moe_fail(MOE_EINVAL, "--max-rows N with N >= 0 (0 = all)",
                                "bad value '%s' (moesim compare --max-rows)", optarg);
            break;
        }
        case 'R': record = 1; break;
        case 'h': fputs(usage_text, stdout); return MOE_OK;
        default:
            return moe_fail(MOE_EINVAL, "moesim compare --help lists the options",
                            optopt ? "option needs a value or is unknown: '%s' (moesim compare)"
                                   : "unknown option '%s' (moesim compare)",
                            argv[optind - 1]);
        }
    }
    if (argc - optind != 2)
        return moe_fail(MOE_EINVAL,
                        record ? "moesim compare --record results/x.db results/regression/x.tsv"
                               : "moesim compare BASELINE CANDIDATE (moesim compare --help)",
                        "%s (moesim compare)", argc - optind < 2 ? "two files needed"
                                                                 : "too many arguments");
    if (record)
        return run_record(argv[optind], argv[optind + 1]);
    return run_compare(argv[optind], argv[optind + 1], &t, (size_t)max_rows);
}
