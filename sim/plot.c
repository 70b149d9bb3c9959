/* plot.c: the charts of plot.h. Owns the export of each query of the chart table
 * (plot_charts.c) into a gnuplot data file, the layout variables handed to the tracked scripts
 * plots/NAME.gp, and running gnuplot (fork/exec, no shell) for PNG and SVG.
 *
 * Every chart query returns 7 layout columns, then the data columns written to the file:
 *   col_rank col_label    panel column (a distribution with its shape)
 *   row_rank row_label    panel row (a router for expert_loads and experts_per_token; else 1)
 *   ser_rank ser_label    series: a line or bar set (a router; a capacity factor for
 *                         experts_per_token); ser_rank is its style (colour), stable across charts
 *   flat                  1 for a router that ignores the capacity factor (drawn dashed, flat
 *                         across the swept range: its row is written at both ends)
 * Rows are ordered by (col_rank, row_rank, ser_rank, x): each (col, row, series) is one gnuplot
 * data block (`index` i, blocks separated by two blank lines). Text is written in double quotes,
 * NULL as NaN, reals with %.17g, so the file holds the database's numbers exactly.
 *
 * No name that gnuplot could read as a command ('<cmd', '|cmd') or a special file ('-', '+')
 * reaches it: the data file and the output are given as /dev/fd/N (descriptors of the data file
 * and of the output's mkstemp temporary, sim/outfile.c, which moesim renames when gnuplot
 * succeeded), the scripts by absolute path, every path double-quoted with octal escapes.
 *
 * gnuplot gets, through -e (plots/common.gp documents them): datafile, outfile, term, plotdir,
 * dbname, width, height, cflo, cfhi, loadcf, the range of each metric column (mn_J, mx_J), the
 * grid (ncols, nrows, ct_C, rt_R), the legend (nseries, st_K, ss_K, sf_K), the blocks (nblocks,
 * bs_I, bf_I, bk_I, bm_I) and the blocks of each panel (first_R_C, last_R_C; first > last when
 * the panel is empty).
 */
#include "plot.h"

#include "moe.h"
#include "paths.h"
#include "plot_train.h"
#include "plot_cfg.h"
#include "plot_charts.h"
#include "plot_run.h"
#include "store.h"
#include "textsafe.h"

#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#define XSTR(x) STR(x)
#define STR(x) #x



/* ---- small helpers ---- */

/* malloc'd "a" "b" "c" joined; NULL (with moe_fail) when out of memory. */
static char *join3(const char *a, const char *b, const char *c)
{
    size_t la = strlen(a), lb = strlen(b), lc = strlen(c);
    char *s = malloc(la + lb + lc + 1);
    if (!s) {
        moe_fail(MOE_ENOMEM, NULL, "out of memory (moesim plot)");
        return NULL;
    }
    memcpy(s, a, la);
    memcpy(s + la, b, lb);
    memcpy(s + la + lb, c, lc + 1);
    return s;
}

/* mkdir -p */
static int make_dirs(const char *dir)
{
    char *p = join3(dir, "", "");
    if (!p)
        return MOE_ENOMEM;
    int rc = MOE_OK;
    for (char *s = p + 1;; s++) {
        if (*s != '/' && *s != '\0')
            continue;
        char c = *s;
        *s = '\0';
        struct stat sb;
        if (mkdir(p, 0777) != 0 && errno != EEXIST) {
            rc = moe_fail(MOE_EIO, "give a writable folder with --out DIR",
                          "cannot create the folder: %s (%s)", strerror(errno), p);
            break;
        }
        if (stat(p, &sb) != 0 || !S_ISDIR(sb.st_mode)) {
            rc = moe_fail(MOE_EIO, "give a folder with --out DIR", "not a folder (%s)", p);
            break;
        }
        *s = c;
        if (c == '\0')
            break;
    }
    free(p);
    return rc;
}

/* plots/out/<file name of db without .db> (malloc'd). */
static char *default_out_dir(const char *db_path)
{
    const char *base = strrchr(db_path, '/');
    base = base ? base + 1 : db_path;
    size_t n = strlen(base);
    if (n > 3 && strcmp(base + n - 3, ".db") == 0)
        n -= 3;
    if ((n == 1 && base[0] == '.') || (n == 2 && base[0] == '.' && base[1] == '.')) {
        moe_fail(MOE_EINVAL, "give the chart folder with --out DIR",
                 "no chart folder can be named after this database (%s)", db_path);
        return NULL;
    }
    char *s = malloc(n + 16);
    if (!s) {
        moe_fail(MOE_ENOMEM, NULL, "out of memory (moesim plot)");
        return NULL;
    }
    snprintf(s, n + 16, "plots/out/%.*s", (int)n, base);
    return s;
}

/* ---- gnuplot variables ---- */

/* Append a gnuplot string literal: single quotes, '' for a quote, control characters as
 * spaces. */
static void gp_str(FILE *m, const char *s)
{
    fputc('\'', m);
    for (; *s; s++) {
        if (*s == '\'')
            fputs("''", m);
        else if ((unsigned char)*s < 32)
            fputc(' ', m);
        else
            fputc(*s, m);
    }
    fputc('\'', m);
}

/* Append a file name for gnuplot: a double-quoted string with \\, \" and every control character
 * as an octal escape, so the name arrives byte for byte. Callers pass absolute paths or
 * /dev/fd/N only: gnuplot reads a name starting with '<' or '|' as a shell command, and '-',
 * '+' or '' as special files. */
static void gp_path(FILE *m, const char *s)
{
    fputc('"', m);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            fprintf(m, "\\%c", c);
        else if (c < 32 || c == 127)
            fprintf(m, "\\%03o", c);
        else
            fputc(c, m);
    }
    fputc('"', m);
}

/* A gnuplot real (always with a decimal point or exponent, so never an integer). */
static void gp_real(FILE *m, double v)
{
    if (!isfinite(v)) {
        fputs("NaN", m);
        return;
    }
    char buf[40];
    snprintf(buf, sizeof buf, "%.17g", v);
    fputs(buf, m);
    if (!strpbrk(buf, ".eE"))
        fputs(".0", m);
}

/* ---- layout of a chart: the panels and series found while exporting ---- */

typedef struct {
    long long rank;
    char *label;
    int flat;
} key;

typedef struct {
    key *v;
    int n, cap;
} keyset;

static void keyset_clear(keyset *ks)
{
    for (int i = 0; i < ks->n; i++)
        free(ks->v[i].label);
    free(ks->v);
    ks->v = NULL;
    ks->n = ks->cap = 0;
}

/* Add (rank, label) unless a key with this rank is present. */
static int keyset_add(keyset *ks, long long rank, const char *label, int flat)
{
    for (int i = 0; i < ks->n; i++)
        if (ks->v[i].rank == rank)
            return MOE_OK;
    if (ks->n == ks->cap) {
        int cap = ks->cap ? 2 * ks->cap : 16;
        key *v = realloc(ks->v, (size_t)cap * sizeof *v);
        if (!v)
            return moe_fail(MOE_ENOMEM, NULL, "out of memory (moesim plot)");
        ks->v = v;
        ks->cap = cap;
    }
    char *l = join3(label ? label : "", "", "");
    if (!l)
        return MOE_ENOMEM;
    ks->v[ks->n++] = (key){rank, l, flat};
    return MOE_OK;
}

static int key_cmp(const void *a, const void *b)
{
    long long x = ((const key *)a)->rank, y = ((const key *)b)->rank;
    return (x > y) - (x < y);
}

/* 1-based position of rank in the sorted set. */
static int keyset_pos(const keyset *ks, long long rank)
{
    for (int i = 0; i < ks->n; i++)
        if (ks->v[i].rank == rank)
            return i + 1;
    return 0;
}

typedef struct {
    long long col, row, ser; /* ranks */
    int flat;
    unsigned mask; /* bit j: metric column j has a value in this block; bit 16 + j: and a
                    * positive error half-width */
} block;

enum { MAXMETRIC = 8 };

typedef struct {
    keyset cols, rows, sers;
    block *b;
    int nb, capb;
    long rows_written;
    int has_metric;               /* some metric cell is not NULL */
    long long max_count;          /* charts with error columns: the most points of a row */
    double lo[MAXMETRIC], hi[MAXMETRIC]; /* range of each metric column (NaN: no value) */
} layout;

static void layout_clear(layout *L)
{
    keyset_clear(&L->cols);
    keyset_clear(&L->rows);
    keyset_clear(&L->sers);
    free(L->b);
    memset(L, 0, sizeof *L);
}

static int layout_block(layout *L, long long col, long long row, long long ser, int flat)
{
    if (L->nb == L->capb) {
        int cap = L->capb ? 2 * L->capb : 32;
        block *b = realloc(L->b, (size_t)cap * sizeof *b);
        if (!b)
            return moe_fail(MOE_ENOMEM, NULL, "out of memory (moesim plot)");
        L->b = b;
        L->capb = cap;
    }
    L->b[L->nb++] = (block){col, row, ser, flat, 0u};
    return MOE_OK;
}

/* What every chart of one database shares. */
typedef struct {
    sqlite3 *db;
    const char *db_path, *dbname, *gnuplot, *plotdir, *out_dir;
    double cflo, cfhi;
    const moe_plot_cfg *cfg;
    double width_in, height_in; /* --size (0: automatic) */
    FILE *list;
} plot_ctx;

/* ---- export: one query into one data file ---- */

static void write_cell(FILE *f, sqlite3_stmt *q, int c)
{
    switch (sqlite3_column_type(q, c)) {
    case SQLITE_NULL:
        fputs("NaN", f);
        break;
    case SQLITE_INTEGER:
        fprintf(f, "%lld", (long long)sqlite3_column_int64(q, c));
        break;
    case SQLITE_FLOAT: {
        double v = sqlite3_column_double(q, c);
        if (isfinite(v))
            fprintf(f, "%.17g", v);
        else
            fputs("NaN", f);
        break;
    }
    default: {
        const unsigned char *s = sqlite3_column_text(q, c);
        fputc('"', f);
        for (; s && *s; s++)
            fputc(*s == '"' ? '\'' : *s < 32 ? ' ' : *s, f);
        fputc('"', f);
    }
    }
}

/* Run the chart's query, write it to f (the temporary of final_path), fill L. */
static int export_chart(const plot_ctx *X, const moe_plot_chart *ch, FILE *f,
                        const char *final_path, layout *L)
{
    sqlite3 *db = X->db;
    const char *db_path = X->db_path;
    sqlite3_stmt *q = NULL;
    char *sql = moe_plot_cfg_sql(X->cfg, ch->sql);
    if (!sql)
        return MOE_ENOMEM;
    int rc = sqlite3_prepare_v2(db, sql, -1, &q, NULL);
    free(sql);
    if (rc != SQLITE_OK)
        return moe_fail(MOE_EDB, "is this database from another moesim version?",
                        "cannot query the data of chart %s: %s (%s)", ch->name,
                        sqlite3_errmsg(db), db_path);
    const int ncol = sqlite3_column_count(q);
    if (ncol != NLAYOUT + ch->nkey + ch->nmetric + 1 + ch->nerr || ch->nmetric > MAXMETRIC ||
        (ch->nerr && ch->nerr != ch->nmetric)) {
        sqlite3_finalize(q);
        return moe_fail(MOE_EINVAL, NULL, "chart %s: query has %d columns (sim/plot.c)",
                        ch->name, ncol);
    }
    fputs("# ", f); /* paths escaped: a newline in one must not end the comment */
    moe_text_fput(final_path, f);
    fprintf(f, ": %s; written by moesim plot from ", ch->what);
    moe_text_fput(db_path, f);
    fprintf(f, " (sim/plot.c), drawn by plots/%s.gp\n", ch->name);
    fprintf(f, "# one block (gnuplot index) per panel and series; NaN: NULL in the database\n");
    fprintf(f, "# columns: %s\n", ch->columns);
    fprintf(f, "# query (first %d result columns are the layout, not written): %s\n", NLAYOUT,
            ch->sql);
    fputs("# configuration (chart subtitle): ", f);
    moe_text_fput(X->cfg->subtitle, f);
    fprintf(f, "\n# swept capacity factors (x tics): %s\n", X->cfg->cftics);
    if (*X->cfg->differing) {
        fputs("# series split by the keys that differ within a router: ", f);
        moe_text_fput(X->cfg->differing, f);
        fputc('\n', f);
    }
    long long pc = 0, pr = 0, ps = 0;
    for (int j = 0; j < MAXMETRIC; j++)
        L->lo[j] = L->hi[j] = NAN;
    while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
        long long c = sqlite3_column_int64(q, 0), r = sqlite3_column_int64(q, 2),
                  s = sqlite3_column_int64(q, 4);
        int flat = sqlite3_column_int(q, 6);
        if (L->rows_written == 0 || c != pc || r != pr || s != ps) {
            if (L->rows_written)
                fputs("\n\n", f);
            if ((rc = layout_block(L, c, r, s, flat)) ||
                (rc = keyset_add(&L->cols, c, (const char *)sqlite3_column_text(q, 1), 0)) ||
                (rc = keyset_add(&L->rows, r, (const char *)sqlite3_column_text(q, 3), 0)) ||
                (rc = keyset_add(&L->sers, s, (const char *)sqlite3_column_text(q, 5), flat))) {
                sqlite3_finalize(q);
                return rc;
            }
            pc = c;
            pr = r;
            ps = s;
        }
        for (int i = NLAYOUT; i < ncol; i++) {
            if (i > NLAYOUT)
                fputc(' ', f);
            write_cell(f, q, i);
        }
        fputc('\n', f);
        const int ie = NLAYOUT + ch->nkey + ch->nmetric + 1; /* first error column */
        if (ch->nerr && sqlite3_column_int64(q, ie - 1) > L->max_count)
            L->max_count = sqlite3_column_int64(q, ie - 1);
        for (int j = 0; j < ch->nmetric; j++) {
            const int i = NLAYOUT + ch->nkey + j;
            const double v = sqlite3_column_double(q, i);
            if (sqlite3_column_type(q, i) == SQLITE_NULL || !isfinite(v))
                continue;
            L->has_metric = 1;
            L->b[L->nb - 1].mask |= 1u << j;
            /* the range holds the error bars too */
            double e = ch->nerr ? sqlite3_column_double(q, ie + j) : 0.0;
            e = isfinite(e) && e > 0.0 ? e : 0.0;
            if (e > 0.0)
                L->b[L->nb - 1].mask |= 1u << (16 + j); /* an error bar to draw */
            if (!(v - e >= L->lo[j]))
                L->lo[j] = v - e;
            if (!(v + e <= L->hi[j]))
                L->hi[j] = v + e;
        }
        L->rows_written++;
    }
    int r = MOE_OK;
    if (rc != SQLITE_DONE)
        r = moe_fail(MOE_EDB, NULL, "cannot query the data of chart %s: %s (%s)", ch->name,
                     sqlite3_errmsg(db), db_path);
    sqlite3_finalize(q);
    if (!r && L->nb > 0) {
        qsort(L->cols.v, (size_t)L->cols.n, sizeof *L->cols.v, key_cmp);
        qsort(L->rows.v, (size_t)L->rows.n, sizeof *L->rows.v, key_cmp);
        qsort(L->sers.v, (size_t)L->sers.n, sizeof *L->sers.v, key_cmp);
    }
    return r;
}

/* ---- pages and sizes ---- */


/* One image of a chart: a range of its panel rows and columns (0-based, half-open) and its
 * size in layout units (pixels of the default PNG; 1/100 inch with --size). */
typedef struct {
    int r0, r1, c0, c1, no, n; /* page no of n (1-based) */
    int width, height;
} page;

/* Layout units per inch with --size, PNG pixels per inch with --size. */
enum { UNITS_PER_IN = 100, PNG_DPI = 300 };

/* The panel grid of chart ch with layout L cut into pages, so that no image passes cairo's
 * 32767-pixel limit and no panel shrinks below a readable size: at most maxc panel columns and
 * maxr data rows per page. The pages, row-major, go to *pages (malloc'd), their count to *np. */
static int plan_pages(const plot_ctx *X, const moe_plot_chart *ch, const layout *L, page **pages,
                      int *np)
{
    const int sized = X->width_in > 0;
    const int W = sized ? (int)lround(X->width_in * UNITS_PER_IN) : 0;
    const int H = sized ? (int)lround(X->height_in * UNITS_PER_IN) : 0;
    const int prow = ch->panel_rows ? ch->panel_rows : 1; /* panel rows per data row */
    int maxc = sized ? (W - 110) / 250 : 6, maxr = sized ? 3 : 8;
    if (sized && H > 0)
        maxr = (H - 190) / (210 * (ch->panel_rows ? ch->panel_rows : 1));
    if (ch->panel_rows)
        maxr = L->rows.n; /* a fixed number of panel rows: pages split the columns only */
    maxc = maxc < 1 ? 1 : maxc;
    maxr = maxr < 1 ? 1 : maxr;
    const int pr = (L->rows.n + maxr - 1) / maxr, pc = (L->cols.n + maxc - 1) / maxc;
    *np = pr * pc;
    *pages = calloc((size_t)*np, sizeof **pages);
    if (!*pages)
        return moe_fail(MOE_ENOMEM, NULL, "out of memory (moesim plot)");
    for (int i = 0; i < *np; i++) {
        page *g = &(*pages)[i];
        g->r0 = (i / pc) * maxr;
        g->r1 = g->r0 + maxr < L->rows.n ? g->r0 + maxr : L->rows.n;
        g->c0 = (i % pc) * maxc;
        g->c1 = g->c0 + maxc < L->cols.n ? g->c0 + maxc : L->cols.n;
        g->no = i + 1;
        g->n = *np;
        const int nc = g->c1 - g->c0, rows = (ch->panel_rows ? 1 : g->r1 - g->r0) * prow;
        if (sized) {
            g->width = W;
            g->height = H > 0 ? H : 210 * rows + 190;
        } else {
            g->width = 360 * nc + 180 < 1200 ? 1200 : 360 * nc + 180;
            g->height = 300 * rows + 220 < 800 ? 800 : 300 * rows + 220;
        }
    }
    return MOE_OK;
}

/* The -e argument of gnuplot for one output (malloc'd): page g of the chart. */
static char *gnuplot_vars(const plot_ctx *X, const moe_plot_chart *ch, const layout *L,
                          const page *g, const char *datafile, const char *outfile,
                          const char *term)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *m = open_memstream(&buf, &len);
    if (!m) {
        moe_fail(MOE_ENOMEM, NULL, "out of memory (moesim plot)");
        return NULL;
    }
    const int sized = X->width_in > 0;
    fputs("datafile=", m);
    gp_path(m, datafile);
    fputs("; outfile=", m);
    gp_path(m, outfile);
    fputs("; term=", m);
    gp_str(m, term);
    fputs("; plotdir=", m);
    gp_path(m, X->plotdir);
    fputs("; dbname=", m);
    gp_str(m, X->dbname);
    fputs("; subtitle=", m);
    gp_str(m, X->cfg->subtitle);
    fputs("; differing=", m);
    gp_str(m, X->cfg->differing);
    fprintf(m, "; cftics='%s'", X->cfg->cftics); /* digits, '.', 'e', '-', ',' only */
    fprintf(m, "; page=%d; npages=%d", g->no, g->n);
    fprintf(m, "; width=%d; height=%d; pxscale=", g->width, g->height);
    gp_real(m, sized ? (double)PNG_DPI / UNITS_PER_IN : 1.0);
    fputs("; ptscale=", m);
    gp_real(m, sized ? 72.0 / UNITS_PER_IN : 1.0);
    fputs("; cflo=", m);
    gp_real(m, X->cflo);
    fputs("; cfhi=", m);
    gp_real(m, X->cfhi);
    fputs("; loadcf=", m);
    gp_real(m, MOE_PLOT_LOAD_CF);
    for (int j = 0; j < ch->nmetric; j++) {
        fprintf(m, "; mn_%d=", j + 1);
        gp_real(m, L->lo[j]);
        fprintf(m, "; mx_%d=", j + 1);
        gp_real(m, L->hi[j]);
    }
    fprintf(m, "; nerr=%d; maxn=%lld", ch->nerr, L->max_count);
    fprintf(m, "; ncols=%d; nrows=%d", g->c1 - g->c0, g->r1 - g->r0);
    for (int i = g->c0; i < g->c1; i++) {
        fprintf(m, "; ct_%d=", i - g->c0 + 1);
        gp_str(m, L->cols.v[i].label);
    }
    for (int i = g->r0; i < g->r1; i++) {
        fprintf(m, "; rt_%d=", i - g->r0 + 1);
        gp_str(m, L->rows.v[i].label);
    }
    fprintf(m, "; nseries=%d", L->sers.n);
    for (int i = 0; i < L->sers.n; i++) {
        fprintf(m, "; st_%d=", i + 1);
        gp_str(m, L->sers.v[i].label);
        fprintf(m, "; ss_%d=%lld; sf_%d=%d", i + 1, L->sers.v[i].rank, i + 1,
                L->sers.v[i].flat);
    }
    fprintf(m, "; nblocks=%d", L->nb);
    for (int i = 0; i < L->nb; i++)
        fprintf(m, "; bs_%d=%lld; bf_%d=%d; bk_%d=%d; bm_%d=%u", i, L->b[i].ser, i,
                L->b[i].flat, i, keyset_pos(&L->sers, L->b[i].ser), i, L->b[i].mask);
    for (int r = g->r0 + 1; r <= g->r1; r++)
        for (int c = g->c0 + 1; c <= g->c1; c++) {
            int first = -1, last = -2;
            for (int i = 0; i < L->nb; i++)
                if (keyset_pos(&L->rows, L->b[i].row) == r &&
                    keyset_pos(&L->cols, L->b[i].col) == c) {
                    if (first < 0)
                        first = i;
                    last = i;
                }
            fprintf(m, "; first_%d_%d=%d; last_%d_%d=%d", r - g->r0, c - g->c0, first,
                    r - g->r0, c - g->c0, last);
        }
    if (fclose(m) != 0) {
        free(buf);
        moe_fail(MOE_ENOMEM, NULL, "out of memory (moesim plot)");
        return NULL;
    }
    return buf;
}

/* ---- the command ---- */

/* Checks of the database: points, and whether a capacity factor was swept. */
static int check_db(sqlite3 *db, const char *db_path, long long *npoints, double *cflo,
                    double *cfhi)
{
    sqlite3_stmt *q = NULL;
    int rc = sqlite3_prepare_v2(db, "SELECT count(*), min(capacity_factor_value),"
                                    " max(capacity_factor_value) FROM points", -1, &q, NULL);
    if (rc == SQLITE_OK && (rc = sqlite3_step(q)) == SQLITE_ROW) {
        *npoints = sqlite3_column_int64(q, 0);
        *cflo = sqlite3_column_type(q, 1) == SQLITE_NULL ? NAN : sqlite3_column_double(q, 1);
        *cfhi = sqlite3_column_type(q, 2) == SQLITE_NULL ? NAN : sqlite3_column_double(q, 2);
        rc = SQLITE_OK;
    }
    int r = rc == SQLITE_OK ? MOE_OK
                            : moe_fail(MOE_EDB, "this file is not a moesim results database",
                                       "cannot read the points: %s (%s)", sqlite3_errmsg(db),
                                       db_path);
    sqlite3_finalize(q);
    if (!r && *npoints == 0)
        r = moe_fail(MOE_EDB, "run `moesim run SPEC --db PATH` first",
                     "no points in the database: nothing to plot (%s)", db_path);
    return r;
}

/* The script folder: $MOESIM_PLOTS or plots; every script and common.gp must be there.
 * *dir_out: its absolute path (malloc'd), so that gnuplot can never read it as a command. */
static int check_scripts(char **dir_out)
{
    *dir_out = NULL;
    static char found[4096];
    const char *dir = getenv("MOESIM_PLOTS");
    const int from_env = dir && *dir;
    if (!from_env && moe_data_path("plots", found, sizeof found))
        return MOE_EIO;
    if (!from_env)
        dir = found;
    static const char *const shared[] = {"common", "cf_rows"}; /* loaded by the scripts */
    for (int i = -2; i < moe_plot_ncharts; i++) {
        char *p = join3(dir, "/", i < 0 ? shared[i + 2] : moe_plot_charts[i].name);
        char *gp = p ? join3(p, ".gp", "") : NULL;
        free(p);
        if (!gp)
            return MOE_ENOMEM;
        int ok = access(gp, R_OK) == 0;
        if (!ok) {
            int r = moe_fail(MOE_EIO,
                             from_env ? "MOESIM_PLOTS must name moesim's plots/ folder"
                                      : "set MOESIM_DATA to moesim's data folder, or "
                                        "MOESIM_PLOTS=/path/to/moesim/plots",
                             "gnuplot script not found (%s)", gp);
            free(gp);
            return r;
        }
        free(gp);
    }
    if (!(*dir_out = realpath(dir, NULL)))
        return moe_fail(MOE_EIO, NULL, "cannot resolve the script folder: %s (%s)",
                        strerror(errno), dir);
    return MOE_OK;
}

/* Print a path written to list (escaped: one path per line whatever its characters). */
static void list_path(FILE *list, const char *path)
{
    if (list) {
        moe_text_fput(path, list);
        fputc('\n', list);
    }
}

/* The output terminals: gnuplot's name, the file extension. */
static const char *const terms[][2] = {{"pngcairo", "png"}, {"svg", "svg"}, {"pdfcairo", "pdf"}};
enum { NTERMS = sizeof terms / sizeof terms[0] };

/* The file of page g of a chart in format ext: stem.ext, or stem_pN.ext when the chart has
 * several pages (malloc'd). */
static char *page_path(const char *stem, const page *g, const char *ext)
{
    char suffix[48];
    if (g->n > 1)
        snprintf(suffix, sizeof suffix, "_p%d.%s", g->no, ext);
    else
        snprintf(suffix, sizeof suffix, ".%s", ext);
    return join3(stem, suffix, "");
}

/* Start one image of a chart: gnuplot with terminal t writes page g into o (*out: its path,
 * malloc'd). dat: the data file, given to gnuplot as /dev/fd/datfd. */
static int image_start(const plot_ctx *X, const moe_plot_chart *ch, const layout *L,
                       const page *g, const char *script, const char *stem, int datfd, int t,
                       moe_outfile *o, moe_plot_job *j, char **out)
{
    *out = page_path(stem, g, terms[t][1]);
    if (!*out)
        return MOE_ENOMEM;
    int rc = moe_outfile_open(o, *out, "chart", "wb");
    if (rc)
        return rc;
    char datname[32], outname[32]; /* descriptors: no path is read as a pipe or a name */
    snprintf(datname, sizeof datname, "/dev/fd/%d", datfd);
    snprintf(outname, sizeof outname, "/dev/fd/%d", fileno(o->f));
    char *vars = gnuplot_vars(X, ch, L, g, datname, outname, terms[t][0]);
    if (!vars) {
        moe_outfile_discard(o);
        return MOE_ENOMEM;
    }
    rc = moe_plot_draw_start(X->gnuplot, script, vars, o, j);
    free(vars);
    return rc;
}

/* Page g in every terminal: one gnuplot per terminal, run at once (the machine's cores draw
 * them side by side), then collected in order. After a failure the images not yet collected
 * are stopped and discarded, as if never started. */
static int plot_page(const plot_ctx *X, const moe_plot_chart *ch, const layout *L, const page *g,
                     const char *script, const char *stem, int datfd)
{
    moe_outfile o[NTERMS];
    moe_plot_job j[NTERMS];
    char *out[NTERMS] = {0};
    int rc = MOE_OK;
    for (int t = 0; t < NTERMS; t++) {
        j[t].o = NULL;
        if (!rc)
            rc = image_start(X, ch, L, g, script, stem, datfd, t, &o[t], &j[t], &out[t]);
    }
    for (int t = 0; t < NTERMS; t++) {
        if (rc) {
            moe_plot_draw_cancel(&j[t]);
        } else if (j[t].o) {
            rc = moe_plot_draw_finish(X->gnuplot, script, &j[t]);
            if (!rc)
                list_path(X->list, out[t]);
        }
        free(out[t]);
    }
    return rc;
}

/* Remove the images of an earlier plot of this chart into the folder (a single page and pages
 * _p1, _p2, ... until one is missing) and, with dat, its data file: a chart of an earlier plot
 * would mislead. Returns how many files were removed. */
static int remove_old(const char *stem, int dat)
{
    int removed = 0;
    if (dat) {
        char *old = join3(stem, ".dat", "");
        removed += old && unlink(old) == 0;
        free(old);
    }
    for (int no = 0;; no++) {
        int here = 0;
        for (int t = 0; t < NTERMS; t++) {
            char *old = page_path(stem, &(page){.no = no, .n = no ? 2 : 1}, terms[t][1]);
            here += old && unlink(old) == 0;
            free(old);
        }
        removed += here;
        if (no > 0 && !here)
            break;
    }
    return removed;
}

/* Draw one chart: data file, then PNG, SVG and PDF of each page. *drawn: 1 if drawn, 0 if
 * skipped. */
static int plot_chart(const plot_ctx *X, const moe_plot_chart *ch, int *drawn)
{
    *drawn = 0;
    char *stem = join3(X->out_dir, "/", ch->name);
    char *dat = stem ? join3(stem, ".dat", "") : NULL;
    char *script0 = join3(X->plotdir, "/", ch->name);
    char *script = script0 ? join3(script0, ".gp", "") : NULL;
    free(script0);
    layout L;
    memset(&L, 0, sizeof L);
    page *pages = NULL;
    int npages = 0;
    moe_outfile o;
    int datfd = -1, rc = (stem && dat && script) ? MOE_OK : MOE_ENOMEM;
    const char *skip = NULL; /* why the database cannot feed this chart */
    if (!rc && ch->needs_cf && !isfinite(X->cflo))
        skip = "no capacity factor sweep (every point has capacity factor none)";
    else if (!rc && !(rc = moe_outfile_open(&o, dat, "the data file", "w"))) {
        if ((rc = export_chart(X, ch, o.f, dat, &L)))
            moe_outfile_discard(&o);
        else if ((skip = L.rows_written == 0 ? ch->empty
                         : !L.has_metric    ? "its metrics are all NULL"
                                            : NULL))
            moe_outfile_discard(&o);
        else if (fflush(o.f) != 0 || (datfd = dup(fileno(o.f))) < 0)
            rc = moe_outfile_commit(&o, 1);
        else
            rc = moe_outfile_commit(&o, ferror(o.f));
    }
    if (!rc && skip) {
        const int removed = remove_old(stem, 1);
        fprintf(stderr, "moesim plot: %s skipped: %s in %s%s\n", ch->name, skip, X->db_path,
                removed ? " (its earlier chart removed)" : "");
        goto out;
    }
    if (rc || (rc = plan_pages(X, ch, &L, &pages, &npages)))
        goto out;
    list_path(X->list, dat);
    remove_old(stem, 0); /* the page count may have changed */
    for (int p = 0; p < npages && !rc; p++)
        rc = plot_page(X, ch, &L, &pages[p], script, stem, datfd);
    if (!rc)
        *drawn = 1;
out:
    if (datfd >= 0)
        close(datfd);
    layout_clear(&L);
    free(pages);
    free(stem);
    free(dat);
    free(script);
    return rc;
}

/* SIGINT, SIGTERM, SIGHUP while drawing: remove the temporaries, then die of the signal. */
static const int plot_signals[] = {SIGINT, SIGTERM, SIGHUP};
enum { NSIG_PLOT = sizeof plot_signals / sizeof plot_signals[0] };

static void on_plot_signal(int sig)
{
    moe_outfile_remove_temps();
    signal(sig, SIG_DFL);
    raise(sig);
}

int moe_plot_db_opts(const char *db_path, const moe_plot_opts *opts, FILE *list)
{
    moe_store *st = NULL;
    char *gnuplot = NULL, *dir_buf = NULL, *plotdir = NULL;
    const char *out_dir = opts ? opts->out_dir : NULL;
    struct sigaction old[NSIG_PLOT], sa;
    int caught = 0;
    long long npoints = 0;
    double cflo = NAN, cfhi = NAN;
    moe_plot_cfg cfg;
    memset(&cfg, 0, sizeof cfg);
    int rc = moe_store_open(db_path, 1, &st);
    if (rc)
        return rc;
    sqlite3 *db = moe_store_db(st);
    if ((rc = moe_plot_apply_filter(db, db_path)) ||
        (rc = check_db(db, db_path, &npoints, &cflo, &cfhi)) ||
        (rc = moe_plot_cfg_read(db, db_path, &cfg)))
        goto out;
    if (!(gnuplot = moe_plot_find_gnuplot())) {
        rc = MOE_EIO;
        goto out;
    }
    if ((rc = check_scripts(&plotdir)))
        goto out;
    if (!out_dir) {
        if (!(dir_buf = default_out_dir(db_path))) {
            rc = MOE_ENOMEM;
            goto out;
        }
        out_dir = dir_buf;
    } else { /* "charts/" and "charts" name the same folder: no "charts//x.png" */
        if (!(dir_buf = join3(out_dir, "", ""))) {
            rc = MOE_ENOMEM;
            goto out;
        }
        for (size_t n = strlen(dir_buf); n > 1 && dir_buf[n - 1] == '/'; n--)
            dir_buf[n - 1] = '\0';
        out_dir = dir_buf;
    }
    if ((rc = make_dirs(out_dir)))
        goto out;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_plot_signal;
    sigemptyset(&sa.sa_mask);
    for (caught = 0; caught < NSIG_PLOT; caught++) { /* an ignored signal stays ignored */
        sigaction(plot_signals[caught], NULL, &old[caught]);
        if (old[caught].sa_handler != SIG_IGN)
            sigaction(plot_signals[caught], &sa, NULL);
    }
    const char *dbname = strrchr(db_path, '/');
    plot_ctx X = {db,      db_path, dbname ? dbname + 1 : db_path,
                  gnuplot, plotdir, out_dir,
                  cflo,    cfhi,    &cfg,
                  opts ? opts->width_in : 0.0, opts ? opts->height_in : 0.0, list};
    int ndrawn = 0;
    for (int i = 0; i < moe_plot_ncharts && !rc; i++) {
        int drawn = 0;
        rc = plot_chart(&X, &moe_plot_charts[i], &drawn);
        ndrawn += drawn;
    }
    if (!rc && moe_plot_dynamic_has_rows(db)) { /* variable-k histogram */
        int drawn = 0;
        rc = plot_chart(&X, &moe_plot_dynamic_chart, &drawn);
        ndrawn += drawn;
    }
    if (!rc && moe_store_ep_has_rows(db)) { /* the expert-parallel chart */
        int drawn = 0;
        rc = plot_chart(&X, &moe_plot_ep_chart, &drawn);
        ndrawn += drawn;
    }
    const int has_cluster = !rc && moe_plot_cluster_has_rows(db);
    for (int i = 0; has_cluster && i < moe_plot_ncluster && !rc; i++) {
        int drawn = 0;
        rc = plot_chart(&X, &moe_plot_cluster_charts[i], &drawn);
        ndrawn += drawn;
    }
    const int has_train = !rc && moe_plot_train_has_rows(db);
    for (int i = 0; has_train && i < moe_plot_ntrain && !rc; i++) {
        int drawn = 0;
        rc = plot_chart(&X, &moe_plot_train_charts[i], &drawn);
        ndrawn += drawn;
    }
    if (!rc && ndrawn == 0)
        rc = moe_fail(MOE_EDB, "is this a database of a moesim run with metrics?",
                      "no chart can be drawn: the points lack every metric the charts need "
                      "(%s)", db_path);
    if (!rc)
        printf("moesim plot: %d charts from %lld points in %s/ (PNG, SVG and PDF; data in "
               ".dat)%s%s\n",
               ndrawn, npoints, out_dir, *cfg.differing ? "; series split by " : "",
               cfg.differing);
out:
    for (int i = 0; i < caught; i++)
        sigaction(plot_signals[i], &old[i], NULL);
    moe_store_close(st);
    moe_plot_cfg_free(&cfg);
    free(gnuplot);
    free(dir_buf);
    free(plotdir);
    return rc;
}

int moe_plot_db_list(const char *db_path, const char *out_dir, FILE *list)
{
    const moe_plot_opts o = {out_dir, 0.0, 0.0};
    return moe_plot_db_opts(db_path, &o, list);
}

int moe_plot_db(const char *db_path, const char *out_dir)
{
    return moe_plot_db_list(db_path, out_dir, NULL);
}
