/* bench_json.c: the rows of a `moesim bench` run, stored in the database and collected as JSON
 * (bench.h: bench_put_row, bench_write_json). */
#include "bench.h"
#include "moe.h"
#include "provenance.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

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
    json_t *root = json_pack("{s:s, s:O}", "run", c->run_id, "rows", (json_t *)c->json);
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
