/* fuzz_db.c: libFuzzer target for the readers of a results database: `moesim report` (table,
 * --csv, --json), the data extraction of `moesim plot` (every chart's query, data file and page
 * layout; gnuplot is not run) and `moesim compare` with its `--record` round trip, each on a
 * real small database (a 4-point sweep run once per process by `moesim run`) to which the fuzz
 * input was applied as SQL first: UPDATE, DELETE, ALTER, INSERT of odd values, wrong types,
 * NULLs, long strings, dropped tables and views, a rewritten schema.
 *
 * The SQL runs on its own connection with an authorizer that refuses ATTACH (no file outside
 * the scratch folder), no extension loading, a cap on statement length, strings and blobs of at
 * most 16 KiB (a 100 KB router name took 13 s per input through the plot queries under ASan,
 * which fills every large allocation, against 0.2 s for `moesim report` in the normal build) or
 * of the longest schema entry if longer (SQLite reads its schema under the same limit: the view
 * over_seeds, one average and std per metric, is 19 KB, and below it every statement failed to
 * prepare; the schema is also loaded before the limits are set, the larger limit lets a reload
 * after an input's own CREATE, ALTER or DROP read it too),
 * and a progress handler that stops a statement after 10^6 virtual-machine steps (no hang from a
 * recursive query); a statement that fails is skipped and the next one runs. Inputs naming
 * VACUUM are skipped (VACUUM INTO writes a file). The plot part is sim/plot.c itself, included
 * here for its static export functions (the chart table is plot_charts.c). Seed corpus: tests/fuzz/corpus_db/.
 *
 * Each input runs one form of report (the table, --csv --points or --json, by its length modulo
 * 3), the plot data and compare.
 *
 * Contracts (fuzz_cli.h): each reader returns 0 or an error code with a one-line message; the
 * plot data and layout functions return status codes the same way; when `compare --record`
 * succeeds, what it wrote reads back, writing it again gives the same bytes, and the database
 * and the recorded file compare equal at zero tolerance both ways; no temporary is left.
 */
#include "fuzz_cli.h"

#include "../../sim/plot.c"

#include <sqlite3.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char fuzz_db_template[600];

static const char fuzz_db_spec[] =
    "[experiment]\nname = fz\nrouters = topk ec\ncapacity_factors = 1.0 1.5\ntokens = 32\n"
    "batches = 2\nseeds = 1\nerror_tokens = 8\n"
    "[router.topk]\ntype = topk\nk = 2\n[router.ec]\ntype = expert_choice\n"
    "[distribution.g]\nsource = gaussian\n[shape.s]\nd = 4\nf = 8\nE = 4\n";

/* The template database: the spec above run once (moesim run, no charts). */
static const char *fuzz_db_make_template(void)
{
    if (fuzz_db_template[0])
        return fuzz_db_template;
    char spec[600];
    snprintf(spec, sizeof spec, "%s/fz.ini", fuzz_dir());
    snprintf(fuzz_db_template, sizeof fuzz_db_template, "%s/template.db", fuzz_dir());
    fuzz_write(spec, (const uint8_t *)fuzz_db_spec, sizeof fuzz_db_spec - 1);
    const char *argv[] = {"run", spec, "--db", fuzz_db_template, "--no-plots"};
    FUZZ_REQUIRE(fuzz_cli_run(moe_cmd_run, 5, argv) == MOE_OK,
                 "the harness cannot make its template database");
    return fuzz_db_template;
}

static int fuzz_db_auth(void *u, int action, const char *a, const char *b, const char *c,
                        const char *d)
{
    (void)u, (void)a, (void)b, (void)c, (void)d;
    return action == SQLITE_ATTACH || action == SQLITE_DETACH ? SQLITE_DENY : SQLITE_OK;
}

static int fuzz_db_progress(void *steps)
{
    return ++*(long *)steps > 1000; /* called every 1000 steps: 10^6 steps */
}

/* Apply sql (NUL-terminated) to the database at path, statement by statement; returns the
 * number of statements that failed (skipped). */
static int fuzz_db_apply(const char *path, const char *sql)
{
    sqlite3 *db = NULL;
    FUZZ_REQUIRE(sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, NULL) == SQLITE_OK,
                 "the harness cannot open its database copy");
    /* the longest schema entry in bytes, read (and the schema loaded) before the limits */
    sqlite3_stmt *q = NULL;
    int schema_len = 0;
    FUZZ_REQUIRE(sqlite3_prepare_v2(db, "SELECT max(length(CAST(sql AS BLOB))) FROM sqlite_master",
                                    -1, &q, NULL) == SQLITE_OK &&
                     sqlite3_step(q) == SQLITE_ROW,
                 "the harness cannot read the schema of its database copy");
    schema_len = sqlite3_column_int(q, 0);
    sqlite3_finalize(q);
    sqlite3_set_authorizer(db, fuzz_db_auth, NULL);
    sqlite3_limit(db, SQLITE_LIMIT_SQL_LENGTH, 1 << 16);
    sqlite3_limit(db, SQLITE_LIMIT_LENGTH, schema_len > 1 << 14 ? schema_len : 1 << 14);
    sqlite3_limit(db, SQLITE_LIMIT_ATTACHED, 0);
    long steps = 0;
    sqlite3_progress_handler(db, 1000, fuzz_db_progress, &steps);
    const char *tail = sql;
    int failed = 0;
    while (tail && *tail) {
        const char *next = NULL;
        q = NULL;
        steps = 0;
        if (sqlite3_prepare_v2(db, tail, -1, &q, &next) != SQLITE_OK) {
            /* skip to after the next ';' */
            const char *semi = strchr(tail, ';');
            tail = semi ? semi + 1 : NULL;
            failed++;
            continue;
        }
        int src = SQLITE_DONE;
        while (q && (src = sqlite3_step(q)) == SQLITE_ROW)
            ;
        failed += src != SQLITE_DONE;
        sqlite3_finalize(q);
        tail = next;
    }
    sqlite3_close(db);
    return failed;
}

/* The plot's data part on db_path: the checks, then every chart's data and pages. */
static void fuzz_db_plot(const char *db_path)
{
    moe_store *st = NULL;
    moe_plot_cfg cfg;
    memset(&cfg, 0, sizeof cfg);
    long long npoints = 0;
    double cflo = NAN, cfhi = NAN;
    moe_clear_error();
    int rc = moe_store_open(db_path, 1, &st);
    sqlite3 *db = rc ? NULL : moe_store_db(st);
    if (!rc && !(rc = moe_plot_apply_filter(db, db_path)) &&
        !(rc = check_db(db, db_path, &npoints, &cflo, &cfhi)))
        rc = moe_plot_cfg_read(db, db_path, &cfg);
    const plot_ctx X = {db, db_path, "db", NULL, NULL, fuzz_dir(), cflo, cfhi, &cfg, 0.0, 0.0,
                        NULL};
    enum { MAXLIST = 64 };
    const moe_plot_chart *list[MAXLIST];
    FUZZ_REQUIRE(moe_plot_ncharts + 1 + moe_plot_ntrain <= MAXLIST, "chart list too short");
    int n = 0;
    for (int i = 0; !rc && i < moe_plot_ncharts; i++)
        list[n++] = &moe_plot_charts[i];
    if (!rc && moe_store_ep_has_rows(db))
        list[n++] = &moe_plot_ep_chart;
    for (int i = 0; !rc && i < moe_plot_ntrain && moe_plot_train_has_rows(db); i++)
        list[n++] = &moe_plot_train_charts[i];
    for (int i = 0; i < n && !rc; i++) {
        if (list[i]->needs_cf && !isfinite(cflo))
            continue;
        char *buf = NULL;
        size_t len = 0;
        FILE *f = open_memstream(&buf, &len);
        FUZZ_REQUIRE(f != NULL, "out of memory in the harness");
        layout L;
        memset(&L, 0, sizeof L);
        page *pages = NULL;
        int np = 0;
        rc = export_chart(&X, list[i], f, "chart.dat", &L);
        if (!rc && L.rows_written && L.has_metric)
            rc = plan_pages(&X, list[i], &L, &pages, &np);
        fclose(f);
        free(buf);
        free(pages);
        layout_clear(&L);
    }
    moe_plot_cfg_free(&cfg);
    moe_store_close(st);
    FUZZ_REQUIRE(rc == MOE_OK || (rc >= MOE_EINVAL && rc <= MOE_EINPUT),
                 "plot: a status code out of range");
    if (rc)
        FUZZ_REQUIRE(moe_errmsg()[0] && !strchr(moe_errmsg(), '\n'),
                     "plot: an error without a one-line message");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *sql = malloc(size + 1);
    FUZZ_REQUIRE(sql != NULL, "out of memory in the harness");
    memcpy(sql, data, size);
    sql[size] = '\0';
    for (char *c = sql; *c; c++) /* VACUUM INTO writes a file anywhere */
        if ((c[0] | 32) == 'v' && !strncasecmp(c, "vacuum", 6)) {
            free(sql);
            return 0;
        }
    const char *tmpl = fuzz_db_make_template();
    const char *dir = fuzz_subdir("db");
    char db[600], out1[600], out2[600];
    snprintf(db, sizeof db, "%s/r.db", dir);
    snprintf(out1, sizeof out1, "%s/out1.tsv", dir);
    snprintf(out2, sizeof out2, "%s/out2.tsv", dir);
    size_t len = 0;
    char *bytes = fuzz_slurp(tmpl, &len);
    FUZZ_REQUIRE(bytes != NULL, "the harness cannot read its template database");
    fuzz_write(db, (const uint8_t *)bytes, len);
    free(bytes);
    fuzz_db_apply(db, sql);
    free(sql);

    /* one report form per input (each sets up the reader's views, the slow part): the table,
     * --csv --points or --json, by the input's length */
    const char *rep[3][4] = {{"report", db}, {"report", db, "--csv", "--points"},
                             {"report", db, "--json"}};
    static const int rep_argc[3] = {2, 4, 3};
    fuzz_cli_run(moe_cmd_report, rep_argc[size % 3], rep[size % 3]);
    fuzz_db_plot(db);
    const char *rec1[] = {"compare", "--record", db, out1};
    if (fuzz_cli_run(moe_cmd_compare, 4, rec1) == MOE_OK) {
        fuzz_record_round_trip(db, out1, out2);
    } else {
        FUZZ_REQUIRE(access(out1, F_OK) != 0, "a failed --record wrote its output");
    }
    FUZZ_REQUIRE(!fuzz_has_temp(dir), "a temporary file left behind");
    return 0;
}
