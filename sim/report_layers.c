/* report_layers.c: imbalance across and within the layers of a model in `moesim report`
 * (report_layers.h). */
#include "report_layers.h"
#include "moe.h"

#include <gsl/gsl_sort.h>
#include <gsl/gsl_statistics_double.h>

#include <ctype.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    int layer, points, E;
    double imbalance; /* sum, then mean over the points */
    double *load;     /* (E) tokens per expert: sum, then mean over the points */
} layer_row;

typedef struct {
    char *key, *router, *cf, *dist;
    char *shape;
    long tokens;
    layer_row *rows;
    int nrows, cap;
} layer_group;

typedef struct {
    layer_group *g;
    int n, cap;
} group_list;

static void groups_free(group_list *gl)
{
    for (int i = 0; i < gl->n; i++) {
        layer_group *g = &gl->g[i];
        for (int r = 0; r < g->nrows; r++)
            free(g->rows[r].load);
        free(g->rows);
        free(g->key);
        free(g->router);
        free(g->cf);
        free(g->dist);
        free(g->shape);
    }
    free(gl->g);
}

static char *dup_text(const unsigned char *s)
{
    return strdup(s ? (const char *)s : "");
}

/* The configuration key of a point without its layer and cluster: cut at " cluster=", every
 * number after "layer=" replaced by "*". */
static char *group_key(const char *config_key)
{
    char *k = strdup(config_key);
    if (!k)
        return NULL;
    char *c = strstr(k, " cluster=");
    if (c)
        *c = '\0';
    char *w = k;
    for (const char *r = k; *r;) {
        if (!strncmp(r, "layer=", 6)) {
            const char *end = r + 6;
            while (isdigit((unsigned char)*end))
                end++;
            memmove(w, r, 6);
            w += 6;
            *w++ = '*'; /* (w <= r + 6 <= end: the digits are read before they are overwritten) */
            r = end;
        } else {
            *w++ = *r++;
        }
    }
    *w = '\0';
    return k;
}

static layer_group *group_find(group_list *gl, const char *key)
{
    for (int i = 0; i < gl->n; i++)
        if (!strcmp(gl->g[i].key, key))
            return &gl->g[i];
    if (gl->n == gl->cap) {
        int nc = gl->cap ? 2 * gl->cap : 8;
        layer_group *g = realloc(gl->g, (size_t)nc * sizeof *g);
        if (!g)
            return NULL;
        gl->g = g;
        gl->cap = nc;
    }
    layer_group *g = &gl->g[gl->n++];
    memset(g, 0, sizeof *g);
    return g;
}

static layer_row *row_find(layer_group *g, int layer, int E)
{
    for (int r = 0; r < g->nrows; r++)
        if (g->rows[r].layer == layer && g->rows[r].E == E)
            return &g->rows[r];
    if (g->nrows == g->cap) {
        int nc = g->cap ? 2 * g->cap : 32;
        layer_row *rr = realloc(g->rows, (size_t)nc * sizeof *rr);
        if (!rr)
            return NULL;
        g->rows = rr;
        g->cap = nc;
    }
    layer_row *row = &g->rows[g->nrows];
    *row = (layer_row){layer, 0, E, 0.0, calloc((size_t)(E > 0 ? E : 1), sizeof(double))};
    if (!row->load)
        return NULL;
    g->nrows++;
    return row;
}

static int db_fail(sqlite3 *db, const char *path)
{
    return moe_fail(MOE_EDB, NULL, "cannot read the layers: %s (%s)", sqlite3_errmsg(db), path);
}

/* Add the expert loads of point id to row. */
static int add_loads(sqlite3 *db, const char *path, sqlite3_stmt *q, sqlite3_int64 id,
                     layer_row *row)
{
    sqlite3_reset(q);
    if (sqlite3_bind_int64(q, 1, id) != SQLITE_OK)
        return db_fail(db, path);
    int rc;
    while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
        int e = sqlite3_column_int(q, 0);
        if (e >= 0 && e < row->E)
            row->load[e] += sqlite3_column_double(q, 1);
    }
    return rc == SQLITE_DONE ? MOE_OK : db_fail(db, path);
}

/* One selected point with a layer into its group and layer row. */
static int add_point(sqlite3 *db, const char *path, sqlite3_stmt *p, sqlite3_stmt *l,
                     group_list *gl)
{
    char *key = group_key((const char *)sqlite3_column_text(p, 1));
    layer_group *g = key ? group_find(gl, key) : NULL;
    if (!g) {
        free(key);
        return moe_fail(MOE_ENOMEM, NULL, "out of memory (moesim report)");
    }
    if (!g->key) {
        g->key = key;
        g->router = dup_text(sqlite3_column_text(p, 4));
        g->cf = dup_text(sqlite3_column_text(p, 5));
        g->dist = dup_text(sqlite3_column_text(p, 6));
        g->shape = dup_text(sqlite3_column_text(p, 7));
        g->tokens = sqlite3_column_int64(p, 8);
        if (!g->router || !g->cf || !g->dist || !g->shape)
            return moe_fail(MOE_ENOMEM, NULL, "out of memory (moesim report)");
        char *b = strchr(g->dist, '['); /* the variant's name without its listed keys */
        if (b)
            *b = '\0';
    } else {
        free(key);
    }
    layer_row *row = row_find(g, sqlite3_column_int(p, 2), sqlite3_column_int(p, 9));
    if (!row)
        return moe_fail(MOE_ENOMEM, NULL, "out of memory (moesim report)");
    row->points++;
    row->imbalance += sqlite3_column_double(p, 3);
    return add_loads(db, path, l, sqlite3_column_int64(p, 0), row);
}

static int row_cmp(const void *a, const void *b)
{
    const layer_row *x = a, *y = b;
    return (x->layer > y->layer) - (x->layer < y->layer);
}

/* The groups of the selected points with a layer (none when the column is absent). */
static int load_groups(sqlite3 *db, const char *path, group_list *gl)
{
    memset(gl, 0, sizeof *gl);
    sqlite3_stmt *p = NULL, *l = NULL;
    int rc = MOE_OK, has = 0;
    if (sqlite3_prepare_v2(db, "SELECT count(*) FROM pragma_table_xinfo('points', 'main') WHERE"
                               " name = 'layer'", -1, &p, NULL) != SQLITE_OK)
        return db_fail(db, path);
    if (sqlite3_step(p) == SQLITE_ROW)
        has = sqlite3_column_int(p, 0) > 0;
    sqlite3_finalize(p);
    p = NULL;
    if (!has)
        return MOE_OK;
    if (sqlite3_prepare_v2(db, "SELECT id, config_key, layer, load_imbalance, router,"
                               " capacity_factor, distribution, shape, tokens, E FROM points"
                               " WHERE layer IS NOT NULL ORDER BY id", -1, &p, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(db, "SELECT expert, assigned FROM main.expert_loads WHERE point = ?",
                           -1, &l, NULL) != SQLITE_OK)
        rc = db_fail(db, path);
    int s = SQLITE_DONE;
    while (!rc && (s = sqlite3_step(p)) == SQLITE_ROW)
        rc = add_point(db, path, p, l, gl);
    if (!rc && s != SQLITE_DONE)
        rc = db_fail(db, path);
    sqlite3_finalize(p);
    sqlite3_finalize(l);
    for (int i = 0; !rc && i < gl->n; i++) {
        layer_group *g = &gl->g[i];
        for (int r = 0; r < g->nrows; r++) {
            layer_row *row = &g->rows[r];
            row->imbalance /= row->points;
            for (int e = 0; e < row->E; e++)
                row->load[e] /= row->points;
        }
        qsort(g->rows, (size_t)g->nrows, sizeof *g->rows, row_cmp);
    }
    return rc;
}

/* Percentiles of a group's per-layer imbalance: p50, p90, p95, max, and the worst layer. */
typedef struct {
    double p50, p90, p95, max;
    int worst;
} across;

static int across_layers(const layer_group *g, across *a)
{
    double *v = malloc((size_t)g->nrows * sizeof *v);
    if (!v)
        return moe_fail(MOE_ENOMEM, NULL, "out of memory (moesim report)");
    a->max = g->rows[0].imbalance;
    for (int r = 0; r < g->nrows; r++) {
        v[r] = g->rows[r].imbalance;
        a->max = v[r] > a->max ? v[r] : a->max;
    }
    for (int r = g->nrows - 1; r >= 0; r--) /* the first layer of the largest value */
        if (v[r] == a->max)
            a->worst = g->rows[r].layer;
    gsl_sort(v, 1, (size_t)g->nrows);
    a->p50 = gsl_stats_quantile_from_sorted_data(v, 1, (size_t)g->nrows, 0.50);
    a->p90 = gsl_stats_quantile_from_sorted_data(v, 1, (size_t)g->nrows, 0.90);
    a->p95 = gsl_stats_quantile_from_sorted_data(v, 1, (size_t)g->nrows, 0.95);
    free(v);
    return MOE_OK;
}

/* Tokens per expert of one layer: min, max, population std. */
static void within_layer(const layer_row *row, double *mn, double *mx, double *sd)
{
    gsl_stats_minmax(mn, mx, row->load, 1, (size_t)row->E);
    double mean = gsl_stats_mean(row->load, 1, (size_t)row->E);
    *sd = gsl_stats_sd_with_fixed_mean(row->load, 1, (size_t)row->E, mean);
}

int moe_report_layers_text(sqlite3 *db, const char *path, FILE *out)
{
    group_list gl;
    int rc = load_groups(db, path, &gl);
    if (rc || gl.n == 0) {
        groups_free(&gl);
        return rc;
    }
    fprintf(out, "\nImbalance across layers (load_imbalance = max/mean tokens per expert of a "
                 "layer; percentiles over the layers, linear interpolation):\n");
    fprintf(out, "%-16s %-6s %-18s %-10s %6s %8s %8s %8s %8s %6s\n", "router", "cf",
            "distribution", "shape", "layers", "p50", "p90", "p95", "max", "worst");
    for (int i = 0; i < gl.n && !rc; i++) {
        const layer_group *g = &gl.g[i];
        across a = {0};
        if (!(rc = across_layers(g, &a)))
            fprintf(out, "%-16s %-6s %-18s %-10s %6d %8.4f %8.4f %8.4f %8.4f %6d\n", g->router,
                    g->cf, g->dist, g->shape, g->nrows, a.p50, a.p90, a.p95, a.max, a.worst);
    }
    fprintf(out, "\nWithin each layer (tokens per expert per batch: min, max, std over the "
                 "experts):\n");
    fprintf(out, "%-16s %-6s %-18s %-10s %6s %9s %10s %10s %10s\n", "router", "cf",
            "distribution", "shape", "layer", "imbalance", "min", "max", "std");
    for (int i = 0; i < gl.n && !rc; i++) {
        const layer_group *g = &gl.g[i];
        for (int r = 0; r < g->nrows; r++) {
            double mn, mx, sd;
            within_layer(&g->rows[r], &mn, &mx, &sd);
            fprintf(out, "%-16s %-6s %-18s %-10s %6d %9.4f %10.2f %10.2f %10.2f\n", g->router,
                    g->cf, g->dist, g->shape, g->rows[r].layer, g->rows[r].imbalance, mn, mx,
                    sd);
        }
    }
    groups_free(&gl);
    return rc;
}

static int set_num(json_t *o, const char *k, double v)
{
    return json_object_set_new(o, k, isfinite(v) ? json_real(v) : json_null());
}

/* One group as a JSON object. */
static json_t *group_json(const layer_group *g, const across *a)
{
    json_t *o = json_object(), *im = json_object(), *rows = json_array();
    int bad = !o || !im || !rows;
    bad |= !bad && (json_object_set_new(o, "router", json_string(g->router)) ||
                    json_object_set_new(o, "capacity_factor", json_string(g->cf)) ||
                    json_object_set_new(o, "distribution", json_string(g->dist)) ||
                    json_object_set_new(o, "shape", json_string(g->shape)) ||
                    json_object_set_new(o, "tokens", json_integer(g->tokens)) ||
                    json_object_set_new(o, "layers", json_integer(g->nrows)) ||
                    set_num(im, "p50", a->p50) || set_num(im, "p90", a->p90) ||
                    set_num(im, "p95", a->p95) || set_num(im, "max", a->max) ||
                    json_object_set_new(im, "worst_layer", json_integer(a->worst)));
    for (int r = 0; !bad && r < g->nrows; r++) {
        double mn, mx, sd;
        within_layer(&g->rows[r], &mn, &mx, &sd);
        json_t *row = json_object();
        bad = !row || json_object_set_new(row, "layer", json_integer(g->rows[r].layer)) ||
              json_object_set_new(row, "points", json_integer(g->rows[r].points)) ||
              set_num(row, "load_imbalance", g->rows[r].imbalance) ||
              set_num(row, "tokens_per_expert_min", mn) ||
              set_num(row, "tokens_per_expert_max", mx) ||
              set_num(row, "tokens_per_expert_std", sd) || json_array_append_new(rows, row);
    }
    if (!bad && !json_object_set(o, "imbalance_across_layers", im) &&
        !json_object_set(o, "per_layer", rows)) {
        json_decref(im);
        json_decref(rows);
        return o;
    }
    json_decref(o);
    json_decref(im);
    json_decref(rows);
    return NULL;
}

int moe_report_layers_json(sqlite3 *db, const char *path, json_t *root)
{
    group_list gl;
    int rc = load_groups(db, path, &gl);
    json_t *arr = !rc && gl.n ? json_array() : NULL;
    if (!rc && gl.n && !arr)
        rc = moe_fail(MOE_ENOMEM, NULL, "out of memory (moesim report --json)");
    for (int i = 0; i < gl.n && !rc; i++) {
        across a = {0};
        json_t *o = NULL;
        if (!(rc = across_layers(&gl.g[i], &a)) &&
            (!(o = group_json(&gl.g[i], &a)) || json_array_append_new(arr, o)))
            rc = moe_fail(MOE_ENOMEM, NULL, "out of memory (moesim report --json)");
    }
    if (!rc && arr && json_object_set_new(root, "layers", arr))
        rc = moe_fail(MOE_ENOMEM, NULL, "out of memory (moesim report --json)");
    else if (rc)
        json_decref(arr);
    groups_free(&gl);
    return rc;
}
