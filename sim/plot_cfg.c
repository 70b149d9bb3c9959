/* plot_cfg.c: the configuration the charts state (plot_cfg.h): subtitle, capacity factor tics,
 * keys that differ inside a series and the query prefix that separates them, and --size. */
#include "plot_cfg.h"

#include "moe.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Configuration keys (columns of points) that can differ between points of one router in one
 * panel; each that does becomes part of the series name. */
static const char *const cfg_keys[] = {
    "router_type", "router_options", "source", "source_params", "d", "f", "E", "k", "m",
    "activation", "tokens", "batches", "error_tokens",
};
enum { NCFG_KEYS = sizeof cfg_keys / sizeof cfg_keys[0] };

/* Keys of the subtitle, then the number of seeds. */
static const char *const sub_keys[] = {"E", "k", "d", "f", "tokens", "batches"};
enum { NSUB_KEYS = sizeof sub_keys / sizeof sub_keys[0], MAX_TICS = 12, MAX_LISTED = 6 };

static int cfg_oom(void)
{
    return moe_fail(MOE_ENOMEM, NULL, "out of memory (moesim plot)");
}

static int cfg_dberr(sqlite3 *db, const char *db_path)
{
    return moe_fail(MOE_EDB, "is this database from another moesim version?",
                    "cannot read the configuration of the points: %s (%s)", sqlite3_errmsg(db),
                    db_path);
}

/* 1 when points has the column name. */
static int has_column(sqlite3 *db, const char *name)
{
    sqlite3_stmt *q = NULL;
    int found = 0;
    if (sqlite3_prepare_v2(db, "SELECT 1 FROM pragma_table_info('points') WHERE name = ?", -1,
                           &q, NULL) == SQLITE_OK &&
        sqlite3_bind_text(q, 1, name, -1, SQLITE_STATIC) == SQLITE_OK)
        found = sqlite3_step(q) == SQLITE_ROW;
    sqlite3_finalize(q);
    return found;
}

/* Run sql (one row, one column) and append its text to m; *got = 1 when a row came back. */
static int put_text(sqlite3 *db, const char *db_path, const char *sql, FILE *m)
{
    sqlite3_stmt *q = NULL;
    int rc = sqlite3_prepare_v2(db, sql, -1, &q, NULL);
    if (rc == SQLITE_OK && (rc = sqlite3_step(q)) == SQLITE_ROW) {
        const unsigned char *s = sqlite3_column_text(q, 0);
        fputs(s ? (const char *)s : "", m);
        rc = SQLITE_DONE;
    }
    sqlite3_finalize(q);
    return rc == SQLITE_DONE ? MOE_OK : cfg_dberr(db, db_path);
}

/* The subtitle: each key with its distinct values (at most MAX_LISTED, else the range and the
 * count), then the number of seeds. */
static int read_subtitle(sqlite3 *db, const char *db_path, FILE *m)
{
    char sql[512];
    for (int i = 0; i < NSUB_KEYS; i++) {
        const char *k = sub_keys[i];
        if (!has_column(db, k))
            continue;
        fprintf(m, "%s%s=", i ? "  " : "", k);
        snprintf(sql, sizeof sql,
                 "SELECT CASE WHEN count(*) <= %d THEN group_concat(v, ',') ELSE"
                 " min(v) || '..' || max(v) || ' (' || count(*) || ' values)' END"
                 " FROM (SELECT DISTINCT %s AS v FROM points ORDER BY v)",
                 MAX_LISTED, k);
        int rc = put_text(db, db_path, sql, m);
        if (rc)
            return rc;
    }
    fputs("  seeds=", m);
    return put_text(db, db_path, "SELECT count(DISTINCT seed) FROM points", m);
}

/* The swept capacity factors, "a,b,c" (every n-th when more than MAX_TICS, the last always). */
static int read_cftics(sqlite3 *db, const char *db_path, FILE *m)
{
    sqlite3_stmt *q = NULL;
    int rc = sqlite3_prepare_v2(db,
                                "SELECT v, row_number() OVER (ORDER BY v), count(*) OVER ()"
                                " FROM (SELECT DISTINCT capacity_factor_value AS v FROM points"
                                " WHERE capacity_factor_value IS NOT NULL) ORDER BY v",
                                -1, &q, NULL);
    int first = 1;
    while (rc == SQLITE_OK && (rc = sqlite3_step(q)) == SQLITE_ROW) {
        const long long i = sqlite3_column_int64(q, 1), n = sqlite3_column_int64(q, 2);
        const long long step = (n + MAX_TICS - 1) / MAX_TICS;
        if ((i - 1) % step != 0 && i != n)
            continue;
        fprintf(m, "%s%.17g", first ? "" : ",", sqlite3_column_double(q, 0));
        first = 0;
        rc = SQLITE_OK;
    }
    sqlite3_finalize(q);
    return rc == SQLITE_DONE ? MOE_OK : cfg_dberr(db, db_path);
}

/* The keys of cfg_keys that take more than one value among the points of one (distribution,
 * shape, router; router_options: and capacity factor): their names ", "-joined into names, and the series-name suffix expression
 * (" || ' [' || 'k=' || k || ']'") into suffix. Replaceable by the store's own query of what
 * varies, when it has one. */
static int read_differing(sqlite3 *db, const char *db_path, FILE *names, FILE *suffix)
{
    char sql[512];
    int n = 0;
    for (int i = 0; i < NCFG_KEYS; i++) {
        const char *k = cfg_keys[i];
        if (!has_column(db, k))
            continue;
        /* router_options holds the capacity factor: compared at one capacity factor */
        snprintf(sql, sizeof sql,
                 "SELECT count(*) FROM (SELECT 1 FROM points GROUP BY distribution, shape,"
                 " router%s HAVING count(DISTINCT %s) > 1 LIMIT 1)",
                 strcmp(k, "router_options") == 0 ? ", capacity_factor" : "", k);
        char *buf = NULL;
        size_t len = 0;
        FILE *t = open_memstream(&buf, &len);
        if (!t)
            return cfg_oom();
        int rc = put_text(db, db_path, sql, t);
        fclose(t);
        const int differs = buf && strcmp(buf, "1") == 0;
        free(buf);
        if (rc)
            return rc;
        if (!differs)
            continue;
        fprintf(names, "%s%s", n ? ", " : "", k);
        fprintf(suffix, " || '%s%s=' || %s", n ? ", " : " [", k, k);
        n++;
    }
    if (n)
        fputs(" || ']'", suffix);
    return MOE_OK;
}

/* "WITH points AS (SELECT <every column, router with the suffix> FROM temp.points),": the points
 * the filter selected (plot_filter.c makes temp.points, every point without a filter). */
static int build_with(sqlite3 *db, const char *db_path, const char *suffix, FILE *m)
{
    sqlite3_stmt *q = NULL;
    int rc = sqlite3_prepare_v2(db, "SELECT name FROM pragma_table_info('points') ORDER BY cid",
                                -1, &q, NULL);
    fputs("WITH points AS (SELECT ", m);
    int first = 1;
    while (rc == SQLITE_OK && (rc = sqlite3_step(q)) == SQLITE_ROW) {
        const char *c = (const char *)sqlite3_column_text(q, 0);
        fprintf(m, "%s\"%s\"", first ? "" : ", ", c ? c : "");
        if (c && strcmp(c, "router") == 0)
            fprintf(m, "%s AS router", suffix);
        first = 0;
        rc = SQLITE_OK;
    }
    sqlite3_finalize(q);
    fputs(" FROM temp.points), ", m);
    return rc == SQLITE_DONE ? MOE_OK : cfg_dberr(db, db_path);
}

/* Close the memstream m into *out (NULL and MOE_ENOMEM when it failed). */
static int close_into(FILE *m, char **buf, char **out)
{
    if (!m)
        return cfg_oom();
    if (fclose(m) != 0) {
        free(*buf);
        return cfg_oom();
    }
    *out = *buf;
    return MOE_OK;
}

int moe_plot_cfg_read(sqlite3 *db, const char *db_path, moe_plot_cfg *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    char *b[4] = {NULL, NULL, NULL, NULL};
    size_t len[4];
    FILE *m[4];
    for (int i = 0; i < 4; i++)
        m[i] = open_memstream(&b[i], &len[i]);
    int rc = (m[0] && m[1] && m[2] && m[3]) ? MOE_OK : cfg_oom();
    if (!rc)
        rc = read_subtitle(db, db_path, m[0]);
    if (!rc)
        rc = read_cftics(db, db_path, m[1]);
    if (!rc)
        rc = read_differing(db, db_path, m[2], m[3]);
    char *suffix = NULL;
    int r0 = close_into(m[0], &b[0], &cfg->subtitle), r1 = close_into(m[1], &b[1], &cfg->cftics),
        r2 = close_into(m[2], &b[2], &cfg->differing), r3 = close_into(m[3], &b[3], &suffix);
    rc = rc ? rc : r0 ? r0 : r1 ? r1 : r2 ? r2 : r3;
    if (!rc && suffix && *suffix) {
        char *w = NULL;
        size_t wl;
        FILE *wm = open_memstream(&w, &wl);
        if (!wm)
            rc = cfg_oom();
        else
            rc = build_with(db, db_path, suffix, wm);
        int rw = close_into(wm, &w, &cfg->with);
        rc = rc ? rc : rw;
    }
    free(suffix);
    if (rc)
        moe_plot_cfg_free(cfg);
    return rc;
}

void moe_plot_cfg_free(moe_plot_cfg *cfg)
{
    free(cfg->subtitle);
    free(cfg->cftics);
    free(cfg->differing);
    free(cfg->with);
    memset(cfg, 0, sizeof *cfg);
}

char *moe_plot_cfg_sql(const moe_plot_cfg *cfg, const char *sql)
{
    /* cfg->with ends in ", ": a query with its own WITH continues the list, another one gets
     * the prefix closed by a space */
    const int own_with = strncmp(sql, "WITH ", 5) == 0;
    const char *head = cfg->with ? cfg->with : "", *rest = cfg->with && own_with ? sql + 5 : sql;
    size_t lh = strlen(head), lr = strlen(rest);
    if (cfg->with && !own_with)
        lh -= 2;
    char *s = malloc(lh + lr + 2);
    if (!s) {
        cfg_oom();
        return NULL;
    }
    memcpy(s, head, lh);
    if (cfg->with && !own_with)
        s[lh++] = ' ';
    memcpy(s + lh, rest, lr + 1);
    return s;
}

int moe_plot_size_parse(const char *text, double *width_in, double *height_in)
{
    *width_in = *height_in = 0.0;
    if (strcmp(text, "column") == 0) {
        *width_in = MOE_PLOT_COLUMN_IN;
        return MOE_OK;
    }
    if (strcmp(text, "page") == 0) {
        *width_in = MOE_PLOT_PAGE_IN;
        return MOE_OK;
    }
    char *end = NULL;
    double w = strtod(text, &end), h = NAN;
    if (end != text && (*end == 'x' || *end == 'X')) {
        const char *p = end + 1;
        h = strtod(p, &end);
        if (end == p)
            h = NAN;
    }
    if (!(w >= 0.5 && w <= 40.0 && h >= 0.5 && h <= 40.0) || *end != '\0')
        return moe_fail(MOE_EINVAL,
                        "--size column (3.5 in wide), page (7 in) or WxH in inches, e.g. 3.5x2.5",
                        "bad figure size '%s' (moesim plot --size)", text);
    *width_in = w;
    *height_in = h;
    return MOE_OK;
}
