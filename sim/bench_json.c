/* bench_json.c: the run of a `moesim bench` (layer or --routing): its id, its rows stored in
 * the database in one transaction and collected as JSON (bench.h: bench_open, bench_put_row,
 * bench_close, bench_write_json). */
#include "bench.h"
#include "moe.h"
#include "provenance.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

int bench_open(bench_ctx *c)
{
    time_t now = time(NULL);
    struct tm utc;
    gmtime_r(&now, &utc);
    char stamp[32];
    strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%SZ", &utc);
    snprintf(c->run_id, sizeof c->run_id, "%s-%ld", stamp, (long)getpid());
    /* the default lives in results/, which a fresh checkout may not have yet */
    if (strcmp(c->a.db, "results/bench.db") == 0 && mkdir("results", 0777) != 0 &&
        errno != EEXIST)
        return moe_fail(MOE_EIO, NULL, "cannot create results/ (%s)", strerror(errno));
    if (!(c->json = json_array()))
        return moe_fail(MOE_ENOMEM, NULL, "out of memory (bench JSON)");
    int rc = moe_store_open(c->a.db, 0, &c->db);
    if (!rc && (rc = moe_store_bench_begin(c->db))) {
        moe_store_close(c->db);
        c->db = NULL;
    }
    if (rc) {
        json_decref(c->json);
        c->json = NULL;
    }
    return rc;
}

int bench_close(bench_ctx *c, int rc)
{
    if (rc) {
        moe_store_bench_end(c->db, 0);
        moe_store_close(c->db);
    } else {
        rc = moe_store_bench_end(c->db, 1);
        moe_store_close(c->db);
        if (!rc)
            printf("stored in %s, table bench, run '%s'\n", c->a.db, c->run_id);
        if (!rc)
            rc = bench_write_json(c);
    }
    c->db = NULL;
    json_decref(c->json);
    c->json = NULL;
    return rc;
}

/* A row of the routing benchmark (config "routing_..."). */
static int is_routing_row(json_t *row)
{
    const char *cfg = json_string_value(json_object_get(row, "config"));
    return cfg && strncmp(cfg, "routing_", 8) == 0;
}

/* The rows of the other benchmark in the JSON file at path (none when it is absent or not ours)
 * appended to rows. */
static void keep_other_rows(const bench_ctx *c, const char *path, json_t *rows)
{
    json_t *old = json_load_file(path, 0, NULL);
    json_t *orows = json_object_get(old, "rows");
    size_t i;
    json_t *row;
    if (json_is_array(orows))
        json_array_foreach(orows, i, row)
            if (json_is_object(row) && is_routing_row(row) != c->routing)
                json_array_append(rows, row);
    json_decref(old);
}

int bench_put_row(bench_ctx *c, const moe_bench_row *r)
{
    const moe_bench_row row = *r;
    json_t *o = json_pack("{s:s, s:s, s:s, s:s, s:i, s:s, s:s, s:b, s:i, s:s, s:s, s:i, s:i, s:i,"
                          " s:i, s:i, s:f, s:I, s:I, s:s, s:s}",
                          "run", row.run, "git_rev", row.git_rev, "blas_library",
                          row.blas_library ? row.blas_library : "", "blas_core",
                          row.blas_core ? row.blas_core : "", "blas_threads", row.blas_threads,
                          "openblas_coretype", row.openblas_coretype ? row.openblas_coretype : "",
                          "torch", row.torch ? row.torch : "", "quick", row.quick, "repeats",
                          row.repeats, "config", row.config ? row.config : "", "router",
                          row.router ? row.router : "", "E", row.E, "k", row.k, "n", row.n, "d",
                          row.d, "f", row.f, "cf", row.cf, "capacity", (json_int_t)row.capacity,
                          "kept", (json_int_t)row.kept, "metric", row.metric, "unit", row.unit);
    const char *st[5] = {"median", "q1", "q3", "min", "max"};
    const double sv[5] = {row.median, row.q1, row.q3, row.min, row.max};
    for (int i = 0; o && i < 5; i++) /* NaN (not measured) as null, as in the database */
        json_object_set_new(o, st[i], isfinite(sv[i]) ? json_real(sv[i]) : json_null());
    if (!o || json_array_append_new(c->json, o))
        return moe_fail(MOE_ENOMEM, NULL, "out of memory (bench JSON rows)");
    return moe_store_bench_put(c->db, &row);
}

/* The rows of this run as JSON, {"run": ..., "rows": [...]}, into path (results/bench.json for
 * the default database: the database path with .db replaced by .json). */
int bench_write_json(const bench_ctx *c)
{
    char path[4096];
    size_t len = strlen(c->a.db);
    if (len > 3 && strcmp(c->a.db + len - 3, ".db") == 0)
        len -= 3;
    if (len + 6 > sizeof path)
        return moe_fail(MOE_EINVAL, NULL, "database path too long for its JSON twin (%s)",
                        c->a.db);
    snprintf(path, sizeof path, "%.*s.json", (int)len, c->a.db);
    json_t *rows = json_copy((json_t *)c->json);
    if (rows)
        keep_other_rows(c, path, rows);
    json_t *root = rows ? json_pack("{s:s, s:o}", "run", c->run_id, "rows", rows) : NULL;
    if (!root)
        return moe_fail(MOE_ENOMEM, NULL, "out of memory (bench JSON)");
    moe_outfile out;
    int rc = moe_outfile_open(&out, path, "bench results", "w");
    if (!rc) {
        int bad = json_dumpf(root, out.f, JSON_INDENT(1) | JSON_REAL_PRECISION(17)) != 0;
        bad |= fputc('\n', out.f) == EOF;
        rc = moe_outfile_commit(&out, bad);
    }
    json_decref(root);
    if (!rc)
        printf("and as JSON in %s\n", path);
    return rc;
}
