/* cmd_run.c: `moesim run SPEC [--set section.key=value]... [--db PATH] [--force] [--no-plots]
 * [--dry-run]` (cli.h). Loads and checks the spec (every router's options checked, every source
 * opened before the first point runs), opens results/NAME.db (or --db), skips points whose
 * config_key is stored (resume; --force reruns and replaces them), runs the rest, and prints a
 * summary table. A progress bar on a terminal (stderr), one plain line per point otherwise.
 * On one process the points share a gate cache (gate_cache.h): each batch is drawn and its gate
 * logits computed once for all the points that route it.
 * SIGINT/SIGTERM: the point in progress is abandoned unwritten (each point is one transaction),
 * the database is closed cleanly and the command fails; rerunning resumes.
 */
#include "blas_info.h"
#include "cli.h"
#include "gate_cache.h"
#include "mem_reuse.h"
#include "moe.h"
#include "moe_mpi.h" /* under mpirun: points over ranks, or --expert-parallel */
#include "plot.h"
#include "provenance.h"
#include "spec.h"
#include "store.h"

#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t stop_flag;

static void on_signal(int sig) { stop_flag = sig; } /* SIGINT or SIGTERM, never 0 */

static const char usage_text[] =
    "usage: moesim run SPEC [--set section.key=value]... [--db PATH] [--force] [--no-plots]\n"
    "                       [--dry-run]\n"
    "Runs the sweep of an experiment spec (experiments/*.ini) into SQLite.\n"
    "  --set S.K=V   override key K of section S, e.g. --set experiment.tokens=1024,\n"
    "                --set router.topk.k=1 (repeatable; may add keys and sections)\n"
    "  --db PATH     results database (default results/NAME.db, NAME from [experiment])\n"
    "  --force       rerun points already stored and replace them (default: skip them)\n"
    "  --no-plots    do not draw the charts after the run\n"
    "  --dry-run     check the spec and list the points without running them\n"
    "  --expert-parallel  under `mpirun -np P`: shard every point's experts over the P ranks\n"
    "                and exchange tokens with MPI_Alltoallv; per-rank load, bytes and times go\n"
    "                to the table ep_ranks (without it, mpirun -np P deals the points out)\n"
    "Points already stored with the same configuration are skipped, so an interrupted run\n"
    "resumes where it stopped. `moesim report DB` prints the results.\n";

static void fmt_duration(double s, char *buf, size_t len)
{
    if (!(s >= 0.0) || s > 1e7) {
        snprintf(buf, len, "--:--");
        return;
    }
    long t = (long)(s + 0.5);
    if (t >= 3600)
        snprintf(buf, len, "%ld:%02ld:%02ld", t / 3600, (t / 60) % 60, t % 60);
    else
        snprintf(buf, len, "%ld:%02ld", t / 60, t % 60);
}

/* ---- progress ---- */

/* One frame: the bar, the count, the ETA and label (the point in progress, or the last
 * frame's "done"). */
static void progress_bar(size_t done, size_t total, const char *label, double elapsed,
                         size_t ran, size_t to_run)
{
    const int width = 28;
    int fill = total ? (int)((double)done / (double)total * width) : width;
    char bar[64];
    for (int i = 0; i < width; i++)
        bar[i] = i < fill ? '#' : '.';
    bar[width] = '\0';
    char eta[32];
    fmt_duration(ran ? elapsed / (double)ran * (double)(to_run - ran) : -1.0, eta, sizeof eta);
    fprintf(stderr, "\r[%s] %zu/%zu ETA %s  %s\033[K", bar, done, total, eta, label);
    fflush(stderr);
}

/* The label of the point in progress: router, cf, distribution, shape, tokens and seed. */
static void point_label(const moe_point *pt, char *buf, size_t len)
{
    snprintf(buf, len, "%s cf=%s %s %s tokens=%d seed=%llu", pt->router, pt->cf_text,
             pt->distribution, pt->shape, pt->tokens, (unsigned long long)pt->seed);
}

static void progress_line(size_t i, size_t total, const moe_point *pt,
                          const moe_point_result *res)
{
    const double imb = res->mean[moe_point_metric_index("load_imbalance")],
                 drop = res->mean[moe_point_metric_index("assignment_drop_rate")],
                 err = res->mean[moe_point_metric_index("output_error_dense")];
    if (res->train_rows > 0) { /* training: the last eval row's losses (columns 1 and 2) */
        const double *last = res->train_row + (size_t)(res->train_rows - 1) * MOE_TRAIN_NCOLS;
        fprintf(stderr,
                "[%zu/%zu] router=%s cf=%s distribution=%s shape=%s tokens=%d seed=%llu: "
                "%d steps, loss %.4f held-out %.4f imbalance %.3f drop %.4f (%.2f s)\n",
                i, total, pt->router, pt->cf_text, pt->distribution, pt->shape, pt->tokens,
                (unsigned long long)pt->seed, pt->tc.steps, last[1], last[2], imb, drop,
                res->wall_s);
        return;
    }
    fprintf(stderr,
            "[%zu/%zu] router=%s cf=%s distribution=%s shape=%s tokens=%d seed=%llu: "
            "imbalance %.3f drop %.4f error %.4f (%.2f s)\n",
            i, total, pt->router, pt->cf_text, pt->distribution, pt->shape, pt->tokens,
            (unsigned long long)pt->seed, imb, drop, err, res->wall_s);
}

/* ---- summary ---- */

/* One row per configuration of this sweep (points stored now or before): the main metrics as
 * means over seeds, with the 95% confidence interval when there are several seeds. */
static int print_summary(moe_store *st, const moe_spec *spec)
{
    sqlite3 *db = moe_store_db(st);
    int rc = sqlite3_exec(db, "CREATE TEMP TABLE IF NOT EXISTS sweep (key TEXT PRIMARY KEY);"
                              "DELETE FROM temp.sweep;", NULL, NULL, NULL);
    sqlite3_stmt *ins = NULL, *q = NULL;
    if (rc == SQLITE_OK)
        rc = sqlite3_prepare_v2(db, "INSERT OR IGNORE INTO temp.sweep VALUES (?)", -1, &ins,
                                NULL);
    for (size_t i = 0; rc == SQLITE_OK && i < moe_spec_npoints(spec); i++) {
        rc = sqlite3_bind_text(ins, 1, moe_spec_point(spec, i)->config_key, -1, SQLITE_STATIC);
        if (rc == SQLITE_OK && (rc = sqlite3_step(ins)) == SQLITE_DONE)
            rc = SQLITE_OK;
        int r2 = sqlite3_reset(ins);
        if (rc == SQLITE_OK)
            rc = r2;
    }
    sqlite3_finalize(ins); /* returns the step's error, handled above */
    char *sql = NULL;
    size_t len = 0;
    FILE *m = rc == SQLITE_OK ? open_memstream(&sql, &len) : NULL;
    if (m) {
        fputs("SELECT router, cf_text, distribution, shape, tokens, seeds, load_imbalance,"
              " assignment_drop_rate, assignment_drop_rate_ci95, token_drop_rate,"
              " output_error_dense, output_error_dropless, tokens_per_s FROM (", m);
        moe_store_seed_stats_sql(m, "(SELECT points.* FROM points JOIN temp.sweep"
                                    " ON points.config_key = sweep.key)");
        fputs(") ORDER BY distribution, shape, router, cf, tokens, config_group", m);
        if (fclose(m) != 0) {
            free(sql);
            sql = NULL;
        }
    }
    if (rc == SQLITE_OK)
        rc = sql ? sqlite3_prepare_v2(db, sql, -1, &q, NULL) : SQLITE_NOMEM;
    free(sql);
    if (rc != SQLITE_OK) {
        int r = moe_fail(MOE_EDB, NULL, "cannot summarise the sweep: %s (%s)",
                         sqlite3_errmsg(db), moe_store_path(st));
        sqlite3_finalize(q);
        return r;
    }
    printf("\n%-14s %5s %-18s %-10s %6s %5s %9s %17s %8s %9s %9s %10s\n", "router", "cf",
           "distribution", "shape", "tokens", "seeds", "imbalance", "drop_rate (ci95)",
           "tok_drop", "err_dense", "err_drpls", "tokens/s");
    while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
        char cells[7][40];
        for (int c = 0; c < 7; c++) {
            const int col = 6 + c;
            if (sqlite3_column_type(q, col) == SQLITE_NULL)
                snprintf(cells[c], sizeof cells[c], "-");
            else if (c == 6)
                snprintf(cells[c], sizeof cells[c], "%.0f", sqlite3_column_double(q, col));
            else if (c == 0)
                snprintf(cells[c], sizeof cells[c], "%.3f", sqlite3_column_double(q, col));
            else
                snprintf(cells[c], sizeof cells[c], "%.4f", sqlite3_column_double(q, col));
        }
        char drop[96];
        if (strcmp(cells[2], "-") != 0)
            snprintf(drop, sizeof drop, "%s +-%s", cells[1], cells[2]);
        else
            snprintf(drop, sizeof drop, "%s", cells[1]);
        printf("%-14s %5s %-18s %-10s %6d %5d %9s %17s %8s %9s %9s %10s\n",
               (const char *)sqlite3_column_text(q, 0), (const char *)sqlite3_column_text(q, 1),
               (const char *)sqlite3_column_text(q, 2), (const char *)sqlite3_column_text(q, 3),
               sqlite3_column_int(q, 4), sqlite3_column_int(q, 5), cells[0], drop, cells[3],
               cells[4], cells[5], cells[6]);
    }
    int r = rc == SQLITE_DONE ? MOE_OK
                              : moe_fail(MOE_EDB, NULL, "cannot summarise the sweep: %s (%s)",
                                         sqlite3_errmsg(db), moe_store_path(st));
    sqlite3_finalize(q);
    if (!r)
        printf("(one row per configuration: means over seeds, +- the 95%% confidence interval"
               " when there are several; per point: moesim report %s)\n", moe_store_path(st));
    return r;
}

/* Training sweeps: the last eval row per point, averaged per router and cf over the points of
 * this sweep (temp.sweep, filled by print_summary). */
static int print_train_summary(moe_store *st)
{
    sqlite3 *db = moe_store_db(st);
    sqlite3_stmt *q = NULL;
    int rc = sqlite3_prepare_v2(
        db,
        "SELECT p.router, p.capacity_factor, count(*), avg(s.loss), avg(s.heldout_loss),"
        " avg(s.load_imbalance), avg(s.assignment_drop_rate), avg(s.dead_experts),"
        " avg(s.specialisation) FROM points p JOIN temp.sweep ON p.config_key = sweep.key"
        " JOIN steps s ON s.point = p.id AND s.step = (SELECT max(step) FROM steps"
        " WHERE point = p.id) GROUP BY p.router, p.capacity_factor"
        " ORDER BY p.router, min(p.capacity_factor_value)", -1, &q, NULL);
    if (rc == SQLITE_OK)
        printf("\n%-16s %6s %6s %10s %10s %10s %10s %6s %8s\n", "router", "cf", "points",
               "loss", "held-out", "imbalance", "drop_rate", "dead", "special.");
    while (rc == SQLITE_OK && (rc = sqlite3_step(q)) == SQLITE_ROW) {
        char spec[32];
        if (sqlite3_column_type(q, 8) == SQLITE_NULL)
            snprintf(spec, sizeof spec, "-");
        else
            snprintf(spec, sizeof spec, "%.3f", sqlite3_column_double(q, 8));
        printf("%-16s %6s %6d %10.4f %10.4f %10.3f %10.4f %6.1f %8s\n",
               (const char *)sqlite3_column_text(q, 0), (const char *)sqlite3_column_text(q, 1),
               sqlite3_column_int(q, 2), sqlite3_column_double(q, 3),
               sqlite3_column_double(q, 4), sqlite3_column_double(q, 5),
               sqlite3_column_double(q, 6), sqlite3_column_double(q, 7), spec);
        rc = SQLITE_OK;
    }
    int r = rc == SQLITE_DONE ? MOE_OK
                              : moe_fail(MOE_EDB, NULL, "cannot summarise the training runs: "
                                         "%s (%s)", sqlite3_errmsg(db), moe_store_path(st));
    sqlite3_finalize(q);
    if (!r)
        printf("(the last eval row of each training run; curves: table steps of %s)\n",
               moe_store_path(st));
    return r;
}

/* ---- the command ---- */

static int make_results_dir(void)
{
    if (mkdir("results", 0777) == 0 || errno == EEXIST)
        return MOE_OK;
    return moe_fail(MOE_EIO, "give --db PATH to write elsewhere",
                    "cannot create the folder results: %s (results/)", strerror(errno));
}

typedef struct {
    const char **sets;
    int nsets, force, no_plots, dry, ep;
    const char *db_path, *spec_path;
    char *overrides; /* the --set arguments, one per line (recorded in the table runs) */
} run_args;

/* Flags and the spec path; *help when --help was given (usage printed). */
static int parse_args(int argc, char **argv, run_args *a, int *help)
{
    static const struct option longopts[] = {
        {"set", required_argument, NULL, 's'}, {"db", required_argument, NULL, 'd'},
        {"force", no_argument, NULL, 'f'},     {"no-plots", no_argument, NULL, 'P'},
        {"dry-run", no_argument, NULL, 'n'},   {"help", no_argument, NULL, 'h'},
        {"expert-parallel", no_argument, NULL, 'X'},
        {NULL, 0, NULL, 0},
    };
    int c;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (c) {
        case 's': a->sets[a->nsets++] = optarg; break;
        case 'd': a->db_path = optarg; break;
        case 'f': a->force = 1; break;
        case 'P': a->no_plots = 1; break;
        case 'n': a->dry = 1; break;
        case 'X': a->ep = 1; break;
        case 'h':
            fputs(usage_text, stdout);
            *help = 1;
            return MOE_OK;
        default:
            return moe_fail(MOE_EINVAL, "moesim run --help lists the options",
                            "unknown option or missing value '%s' (moesim run)",
                            argv[optind - 1]);
        }
    }
    if (optind != argc - 1)
        return moe_fail(MOE_EINVAL, "moesim run experiments/default.ini",
                        optind >= argc ? "no spec given (moesim run)"
                                       : "more than one spec given (moesim run)");
    a->spec_path = argv[optind];
    return MOE_OK;
}

/* Opens --db, or results/NAME.db (*dbbuf: the malloc'd path). */
static int open_db(run_args *a, const moe_spec *spec, char **dbbuf, moe_store **st)
{
    int rc;
    if (!a->db_path) {
        if ((rc = make_results_dir()))
            return rc;
        size_t len = strlen(moe_spec_name(spec)) + 16;
        *dbbuf = malloc(len);
        if (!*dbbuf)
            return moe_fail(MOE_ENOMEM, NULL, "out of memory (moesim run)");
        snprintf(*dbbuf, len, "results/%s.db", moe_spec_name(spec));
        a->db_path = *dbbuf;
    }
    return moe_store_open(a->db_path, 0, st);
}

/* stored[i] = point i is in the database; *nstored of them. */
static int find_stored(moe_store *st, const moe_spec *spec, unsigned char **stored,
                       size_t *nstored)
{
    const size_t total = moe_spec_npoints(spec);
    *nstored = 0;
    *stored = calloc(total + 1, 1);
    if (!*stored)
        return moe_fail(MOE_ENOMEM, NULL, "out of memory (moesim run)");
    int rc = MOE_OK;
    for (size_t i = 0; i < total && !rc; i++) {
        long long id;
        rc = moe_store_find(st, moe_spec_point(spec, i)->config_key, &id);
        (*stored)[i] = id != 0;
        *nstored += (*stored)[i];
    }
    return rc;
}

typedef struct {
    size_t ran, done, failed;
} run_counts;

/* Runs the points not stored (all with --force) and stores each in one transaction; stops at
 * the first error or at a signal (stop_flag). */
static int run_points(const run_args *a, const moe_spec *spec, moe_store *st,
                      moe_mpi_run *mp, const unsigned char *stored, size_t to_run,
                      run_counts *n)
{
    const size_t total = moe_spec_npoints(spec);
    const int tty = isatty(STDERR_FILENO);
    moe_provenance pv;
    moe_provenance_get(&pv);
    const double t0 = moe_now();
    int rc = MOE_OK;
    moe_gate_cache *gc = mp ? NULL : moe_gate_cache_alloc(0.0); /* MPI: no shared batches */
    moe_mem_reuse_freed(); /* the points' buffers reuse the pages of the points before */
    if (!mp && !gc)
        return MOE_ENOMEM;
    for (size_t i = 0; i < total && !stop_flag; i++) {
        const moe_point *pt = moe_spec_point(spec, i);
        long long sid = 0;
        if (!stored[i] && !a->force && !mp && (rc = moe_store_find(st, pt->config_key, &sid)))
            break;
        if ((stored[i] || sid) && !a->force) {
            if (sid)
                fprintf(stderr, "moesim: point %zu stored meanwhile by another run on this "
                        "database: skipped\n", i + 1);
            n->done++;
            continue;
        }
        if (tty) {
            char label[512];
            point_label(pt, label, sizeof label);
            progress_bar(n->done, total, label, moe_now() - t0, n->ran, to_run);
        }
        moe_point_result *res = moe_point_result_alloc_for(pt);
        if (!res) {
            rc = MOE_ENOMEM;
            break;
        }
        moe_clear_error();
        n->failed = i;
        /* interrupted inside a point: it is abandoned and nothing of it is written. MPI: run
         * here, received from its rank, or expert-parallel on all ranks */
        moe_store_ep epr;
        if (!(rc = mp ? moe_mpi_run_point(mp, i, n->ran, pt, &stop_flag, res)
                      : moe_point_run_cached(pt, &stop_flag, res, gc)))
            rc = moe_store_put_ep(st, moe_spec_name(spec), pt, res, &pv, stored[i],
                                  moe_mpi_run_ep_rows(mp, &epr) ? &epr : NULL);
        if (rc && moe_store_last_existed(st)) { /* stored by another run while this ran */
            fprintf(stderr, "moesim: point %zu stored meanwhile by another run on this "
                    "database: skipped\n", i + 1);
            moe_clear_error();
            rc = MOE_OK;
            n->done++;
        } else if (!rc) {
            n->ran++;
            n->done++;
            if (!tty)
                progress_line(n->done, total, pt, res);
        }
        moe_point_result_free(res);
        if (rc)
            break;
    }
    if (gc && (n->ran > 0)) {
        const moe_gate_cache_stats gs = moe_gate_cache_get_stats(gc);
        fprintf(stderr, "moesim run: gate cache: %ld batches drawn and gated, %ld reused "
                "(at most %.2f GB held, bound %.2f GB)\n", gs.computed, gs.reused,
                gs.peak_bytes / 1e9, gs.max_bytes / 1e9);
        if (gs.memo_records > 0)
            fprintf(stderr, "moesim run: capacity-free routing work kept for %ld routes, "
                    "reused by %ld\n", gs.memo_records, gs.memo_hits);
        if (gs.anchor_records > 0 || gs.z_records > 0)
            fprintf(stderr, "moesim run: anchor metrics' sums over the rows kept for %ld "
                    "points, reused by %ld; z-loss's kept for %ld, reused by %ld\n",
                    gs.anchor_records, gs.anchor_hits, gs.z_records, gs.z_hits);
    }
    moe_gate_cache_free(gc);
    if (tty) {
        char label[64], el[32];
        fmt_duration(moe_now() - t0, el, sizeof el);
        snprintf(label, sizeof label, "%s: %zu run in %s", rc || stop_flag ? "stopped" : "done",
                 n->ran, el);
        progress_bar(n->done, total, label, moe_now() - t0, n->ran, to_run);
        fputc('\n', stderr);
    }
    return rc;
}

/* Rank 0 after the spec is checked: open the database, run, report, draw. */
static int run_sweep(run_args *a, const moe_spec *spec, moe_mpi_run *mp)
{
    const size_t total = moe_spec_npoints(spec);
    moe_store *st = NULL;
    char *dbbuf = NULL;
    unsigned char *stored = NULL;
    size_t nstored = 0;
    /* the points run GEMMs: warn (once, rank 0) when OPENBLAS_CORETYPE forces weaker kernels */
    moe_blas_check_coretype(stderr);
    int rc = open_db(a, spec, &dbbuf, &st);
    if (!rc)
        rc = find_stored(st, spec, &stored, &nstored);
    if (rc)
        goto out;
    moe_mpi_run_share(mp, stored, total, a->force, MOE_OK); /* MPI: the points to run */
    const size_t to_run = a->force ? total : total - nstored;
    if (to_run > 0) {
        moe_provenance pv;
        moe_provenance_get(&pv);
        if ((rc = moe_store_run_begin(st, moe_spec_name(spec), a->spec_path, a->overrides,
                                      pv.git_rev)))
            goto out;
    }
    fprintf(stderr, "moesim run %s: %zu points, %zu stored%s, %zu to run -> %s\n", a->spec_path,
            total, nstored, a->force && nstored ? " (rerun: --force)" : "", to_run, a->db_path);
    struct sigaction sa, old_int, old_term;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESETHAND; /* a second Ctrl-C kills at once */
    stop_flag = 0;
    sigaction(SIGINT, &sa, &old_int);
    sigaction(SIGTERM, &sa, &old_term);
    const double t0 = moe_now();
    run_counts n = {0, 0, 0};
    rc = run_points(a, spec, st, mp, stored, to_run, &n);
    moe_mem_reuse_release();
    sigaction(SIGINT, &old_int, NULL);
    sigaction(SIGTERM, &old_term, NULL);
    if (!rc && !stop_flag)
        rc = moe_store_run_end(st, (long long)n.ran);
    char el[32];
    fmt_duration(moe_now() - t0, el, sizeof el);
    if (stop_flag) { /* main.c exits 128 + the signal number, as the shell does */
        moe_clear_error();
        moe_fail(MOE_EINVAL, "run the same command again to resume",
                 "interrupted by %s: %zu of %zu points stored, the point in progress not "
                 "written (%s)", stop_flag == SIGINT ? "SIGINT" : "SIGTERM", n.done, total,
                 a->db_path);
        rc = 128 + (int)stop_flag;
    } else if (rc) {
        fprintf(stderr, "moesim: point %zu of %zu failed: %s\n", n.failed + 1, total,
                moe_spec_point(spec, n.failed)->config_key);
    } else {
        fprintf(stderr, "moesim run: %zu points run, %zu skipped (stored), %s\n", n.ran,
                n.done - n.ran, el);
        rc = print_summary(st, spec);
        if (!rc && moe_spec_point(spec, 0)->train)
            rc = print_train_summary(st);
        /* Charts: after a successful run and unless --no-plots, drawn from the database alone
         * (sim/plot.h) into plots/out/<db file name without .db>/. */
        if (!rc && !a->no_plots && !(rc = moe_plot_note_varying(a->db_path, NULL, NULL)))
            rc = moe_plot_db(a->db_path, NULL);
    }
out:
    free(stored);
    moe_store_close(st);
    free(dbbuf);
    return rc;
}

int moe_cmd_run(int argc, char **argv)
{
    run_args a = {0};
    a.sets = calloc((size_t)argc + 1, sizeof *a.sets);
    if (!a.sets)
        return moe_fail(MOE_ENOMEM, NULL, "out of memory (moesim run)");
    int help = 0;
    int rc = parse_args(argc, argv, &a, &help);
    moe_spec *spec = NULL;
    if (!rc && !help)
        rc = moe_spec_load(a.spec_path, a.sets, a.nsets, &spec);
    size_t olen = 1;
    for (int i = 0; i < a.nsets; i++)
        olen += strlen(a.sets[i]) + 1;
    a.overrides = !rc && !help ? calloc(olen, 1) : NULL;
    for (int i = 0; a.overrides && i < a.nsets; i++) {
        strcat(a.overrides, a.sets[i]);
        strcat(a.overrides, "\n");
    }
    free(a.sets);
    if (rc || help)
        return rc;
    moe_mpi_run *mp = NULL; /* MPI: NULL for a single-process run */
    if ((rc = moe_spec_check(spec)))
        goto out;
    /* MPI: workers run their share; rank 0 writes and reports */
    if ((rc = moe_mpi_init()) || (rc = moe_mpi_run_alloc(a.ep, &mp)))
        goto out;
    if (moe_mpi_run_is_worker(mp)) { /* (--dry-run: rank 0 lists, then tells them to stop) */
        rc = moe_mpi_run_worker(mp, spec, &stop_flag);
        goto out;
    }
    if (a.dry) {
        const size_t total = moe_spec_npoints(spec);
        for (size_t i = 0; i < total; i++)
            printf("%s\n", moe_spec_point(spec, i)->config_key);
        printf("%zu points; spec %s checked\n", total, a.spec_path);
        goto out;
    }
    rc = run_sweep(&a, spec, mp);
out:
    rc = moe_mpi_run_finish(mp, rc); /* MPI: stop and release the workers */
    moe_mpi_run_free(mp);
    moe_mpi_finalize(rc);
    moe_spec_free(spec);
    free(a.overrides);
    return rc;
}
