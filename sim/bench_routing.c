/* bench_routing.c: `moesim bench --routing`, the speed of the route phase.
 *
 * For every size n and expert count E, n x E N(0,1) float64 logits are drawn once; every
 * router's route phase as a sweep runs it (moe_router_route, then moe_metrics_compute on the
 * plan) is timed (the best of at least R passes, R = --repeats below 2^20 tokens,
 * --large-repeats from 2^20 on, and of more until the passes add up to --min-time seconds: a
 * fast route gets as many chances at a quiet moment of the host as a slow one) and set against
 *   - the bound: one pass over the logits taking one exponential per logit (the routers' own
 *     vector exponential, moe_vexp_shift), on the routers' threads (moe_par_threads), measured
 *     in the same run: the best of R passes before the routers (repeated until they took
 *     --min-time) and R before each router's cell;
 *   - the PyTorch twins of the routers (sim/bench_torch_routing.py, run with the same number of
 *     threads, each timed as moesim's cells: at least R passes, once from 2^20 on, and more
 *     until they add up to --min-time) on the same logits: they are written once per (n, E) as
 *     .npy into a temporary folder (in /dev/shm when it exists: memory, not disk), which one
 *     twin process per (n, E) memory-maps (bench_routing_io.c); moesim routes the file's own
 *     pages, mapped, so the largest logits (2 GB at 2^20 x 256) are in memory once. A cell
 *     runs in rounds, two below --large-from and one from there on, each moesim's passes and
 *     then its twin's (br_cell), so that moesim and PyTorch are timed over the same stretch of
 *     the host's time. Each twin is first checked to produce the same plan as moesim on
 *     `--check-n` tokens (same (token, expert, slot) entries in the same order, combine
 *     weights within 1e-12 relative).
 * Capacity factor 1.25; other options at their defaults. dense and soft_moe, whose plans hold
 * n*E entries (8.6 GB at 2^20 x 256), run where those take at most half of the machine's
 * memory, base (its workspace is 20*E*n bytes: 5 GB at 2^20 x 256) up to 2^20 tokens, and the
 * table says so; replay needs recorded choices and is not run.
 * Every finished cell prints a line on stderr (wall and CPU seconds of the cell, of the run).
 * The rows go to the table bench of --db (default results/bench.db) in one transaction,
 * config "routing_<router>_k<k>_E<E>" (d = f = 0: no layer; repeats: that row's passes), and
 * to its JSON twin (results/bench.json, beside the layer benchmark's rows): time_route (s, over
 * the passes), tokens_per_s, time_bound and ratio_vs_bound, time_torch and ratio_vs_torch
 * (PyTorch time / moesim time) when PyTorch ran, plan_same_as_torch (1/0) when checked,
 * thread_round_trip (ns: br_round_trip right before the cell, with two or more threads); config
 * "routing_load" holds the load average and that round trip at the start and the end of the
 * run and the run's wall and CPU seconds.
 */
#include "bench.h"
#include "bench_routing.h"
#include "bench_proc.h"
#include "bench_routing_io.h"
#include "moe.h"
#include "npy.h"
#include "pipeline.h"
#include "provenance.h"
#include "vexp.h"
#include "../routers/par.h"

#include <getopt.h>
#include <gsl/gsl_randist.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <unistd.h>

#define BR_BASE_MAX_N 1048576L
#define BR_MAX_REPEATS 1000 /* passes of one cell at most, --repeats above it aside */

typedef struct {
    const char *router;
    int k;      /* 0: the router's default */
    int torch;  /* has a PyTorch twin in sim/bench_torch_routing.py */
} br_case;

static const br_case br_cases[] = {
    {"switch", 1, 1},   {"topk", 1, 1},     {"topk", 2, 1},     {"topk", 8, 1},
    {"gshard", 2, 1},   {"expert_choice", 1, 1}, {"hash", 0, 1}, {"dsv3_bias", 0, 1},
    {"sinkhorn", 0, 1}, {"soft_moe", 0, 1}, {"base", 0, 1},     {"dense", 0, 1},
    {"topp", 0, 1},     {"relu", 0, 1},
};
enum { BR_NCASES = sizeof br_cases / sizeof br_cases[0] };

typedef struct {
    int sizes[4], nsizes, experts[4], nexperts, repeats, large_repeats, check_n, threads, torch;
    int large_from; /* n from which moesim repeats large_repeats times, PyTorch once */
    double min_time; /* seconds: each cell's timed passes go on until they add up to this */
    const char *python, *script;
    const char *routers; /* comma-separated names to run, or NULL for all */
    const char *db;
} br_args;

typedef struct {
    double ms, torch_ms, bound_ms; /* ms: the best of the repeats */
    double rt_ns;                  /* the threads' round trip before the cell (br_round_trip) */
    bench_stat t;                  /* seconds over the repeats */
    int n, E, k, ran, same; /* k effective; same: 1 plan equal to PyTorch's, 0 differs, -1 not
                             * checked */
    int repeats, torch_repeats; /* of this cell: moesim's, PyTorch's */
    long C;                 /* the plan's capacity */
    size_t kept;            /* its entries */
} br_result;

/* A cache line's round trip between the first two threads, in ns (NaN with one thread): the
 * host's state, which moves the routes' times (their threads hand data to each other) but not
 * the bound's. 2000 trips after the probe's 20 ms of untimed ones (a worker woken on the
 * caller's processor shares it until the system moves it: 4 to 12 us a trip before then). */
static double br_round_trip(void)
{
    return moe_par_round_trip_ns(2000);
}

static void br_print_round_trip(const char *when, double ns)
{
    if (isfinite(ns))
        printf("a cache line's round trip between the first two threads %s: %.0f ns (tens of "
               "ns: cores that share a cache; hundreds: cores far apart, where the routes' "
               "handoffs between threads cost more and their times rise; thousands: the two "
               "threads took turns on one processor, the other one busy)\n", when, ns);
}

/* The wall clock and the process's CPU time at the start of the run, for the progress lines. */
static double br_t0_wall, br_t0_cpu;

/* CPU seconds of this process and its waited-for children (PyTorch). */
static double br_cpu_all(void)
{
    struct rusage s, ch;
    if (getrusage(RUSAGE_SELF, &s) || getrusage(RUSAGE_CHILDREN, &ch))
        return NAN;
    return s.ru_utime.tv_sec + s.ru_stime.tv_sec + ch.ru_utime.tv_sec + ch.ru_stime.tv_sec +
           (s.ru_utime.tv_usec + s.ru_stime.tv_usec + ch.ru_utime.tv_usec +
            ch.ru_stime.tv_usec) * 1e-6;
}

/* A progress line on stderr: what finished, its wall seconds, the run's wall and CPU seconds
 * so far (moesim's, and PyTorch's up to its last finished call). */
static void br_progress(const char *what, double cell_s)
{
    double l = NAN;
    if (getloadavg(&l, 1) != 1)
        l = NAN;
    fprintf(stderr, "bench --routing: %-52s %7.1f s | run %7.1f s wall, %7.1f s CPU, load %.1f\n",
            what, cell_s, moe_now() - br_t0_wall, br_cpu_all() - br_t0_cpu, l);
}

static int br_repeats(const br_args *a, int n)
{
    return n >= a->large_from ? a->large_repeats : a->repeats;
}

/* PyTorch's repeats at n: once from large_from on (each call allocates its tensors afresh, so a
 * repeat warms nothing there and only doubles the time). */
static int br_torch_repeats(const br_args *a, int n)
{
    return n >= a->large_from ? 1 : a->repeats;
}

/* ---- inputs ---- */

static double *br_logits(int n, int E, uint64_t seed)
{
    double *L = malloc((size_t)n * E * sizeof *L);
    gsl_rng *g = moe_rng_alloc(seed, MOE_STREAM_TOKENS);
    if (!L || !g) {
        free(L);
        if (g)
            gsl_rng_free(g);
        moe_fail(MOE_ENOMEM, NULL, "out of memory (bench logits %d x %d)", n, E);
        return NULL;
    }
    for (size_t i = 0; i < (size_t)n * E; i++)
        L[i] = gsl_ran_gaussian_ziggurat(g, 1.0);
    gsl_rng_free(g);
    return L;
}

/* n uniform draws (gshard's second-expert test), seed's gshard stream; NULL when out of
 * memory. */
static double *br_uniforms(int n, uint64_t seed)
{
    double *u = malloc((size_t)n * sizeof *u);
    gsl_rng *g = moe_rng_alloc(seed, MOE_STREAM_GSHARD);
    for (int i = 0; u && g && i < n; i++)
        u[i] = gsl_rng_uniform(g);
    if (g)
        gsl_rng_free(g);
    if (!u || !g) {
        free(u);
        moe_fail(MOE_ENOMEM, NULL, "out of memory (bench draws)");
        return NULL;
    }
    return u;
}

static moe_route_opts br_opts(int k)
{
    moe_route_opts o;
    moe_route_opts_default(&o);
    o.k = k;
    o.cf_set = 1;
    o.cf_num = 5;
    o.cf_den = 4;
    return o;
}

/* ---- the bound: read every logit once, one exponential each ---- */

typedef struct {
    const double *L;
    long len;
    double part[MOE_PAR_MAX];
} br_bound_job;

static void br_bound_part(void *ctx, int i, int np)
{
    br_bound_job *j = ctx;
    long lo, hi;
    moe_par_range(j->len, i, np, &lo, &hi);
    /* The exponentials are summed only to keep them alive, into eight independent sums: one
     * sum would chain every addition to the one before (about four cycles each), and that
     * chain, not the reading or the exponentials, would set the pace (1.5x slower here). */
    double s0 = 0.0, s1 = 0.0, s2 = 0.0, s3 = 0.0, s4 = 0.0, s5 = 0.0, s6 = 0.0, s7 = 0.0;
    double e[1024];
    for (long q = lo; q < hi; q += 1024) {
        const int nb = hi - q < 1024 ? (int)(hi - q) : 1024;
        moe_vexp_shift(j->L + q, nb, 0.0, e); /* the routers' exponential (vexp.h) */
        int k = 0;
        for (; k + 8 <= nb; k += 8) {
            s0 += e[k], s1 += e[k + 1], s2 += e[k + 2], s3 += e[k + 3];
            s4 += e[k + 4], s5 += e[k + 5], s6 += e[k + 6], s7 += e[k + 7];
        }
        for (; k < nb; k++)
            s0 += e[k];
    }
    j->part[i] = s0 + s1 + s2 + s3 + s4 + s5 + s6 + s7;
}

double moe_bench_routing_bound(const double *L, int n, int E, int repeats)
{
    br_bound_job j = {L, (long)n * E, {0}};
    double best = INFINITY, sink = 0.0;
    for (int r = 0; r < repeats; r++) {
        double t0 = moe_now();
        moe_par_run(br_bound_part, &j, moe_par_threads());
        double dt = moe_now() - t0;
        for (int i = 0; i < MOE_PAR_MAX; i++)
            sink += j.part[i];
        best = dt < best ? dt : best;
    }
    if (!(sink > 0.0)) /* keeps the sums alive */
        fprintf(stderr, "bench --routing: bound sum %g\n", sink);
    return best;
}

/* ---- one router ---- */

typedef struct {
    moe_router *r;
    moe_plan *plan;
    moe_metrics *mt;
    gsl_rng *rng;
    int64_t *ids;
} br_run;

static void br_run_free(br_run *b)
{
    moe_router_free(b->r);
    moe_plan_free(b->plan);
    moe_metrics_free(b->mt);
    if (b->rng)
        gsl_rng_free(b->rng);
    free(b->ids);
    memset(b, 0, sizeof *b);
}

static int br_run_alloc(const br_case *c, int n, int E, br_run *b)
{
    memset(b, 0, sizeof *b);
    const moe_router_type *t = moe_router_find(c->router);
    if (!t)
        return moe_fail(MOE_EINVAL, NULL, "no router %s (bench --routing)", c->router);
    moe_route_opts o = br_opts(c->k);
    int rc = moe_router_alloc(t, &o, n, E, &b->r);
    if (rc)
        return rc;
    b->plan = moe_plan_alloc(n, E, (size_t)n * (size_t)(b->r->k > 0 ? b->r->k : 1) + 16);
    b->mt = moe_metrics_alloc(b->r->E);
    b->rng = moe_rng_alloc(1, moe_router_stream(t));
    b->ids = malloc((size_t)n * sizeof *b->ids);
    if (!b->plan || !b->mt || !b->rng || !b->ids ||
        moe_metrics_attach(b->mt, b->plan, n, b->r->k)) { /* the metrics as a sweep has them */
        br_run_free(b);
        return moe_fail(MOE_ENOMEM, NULL, "out of memory (bench --routing, %s)", c->router);
    }
    for (int i = 0; i < n; i++) /* token ids for hash: a Knuth multiplicative scramble */
        b->ids[i] = (int64_t)(((uint64_t)i * 2654435761u) % 50021u);
    return MOE_OK;
}

/* Route (and compute the metrics) once; *dt the seconds taken. */
static int br_route_once(br_run *b, const double *L, int n, int E, const double *u, double *dt)
{
    moe_route_in in = {n, E, L, b->ids, u, b->rng, NULL, NULL, 0, NULL, NULL};
    double t0 = moe_now();
    int rc = moe_pipeline_route_stage(b->r, &in, b->plan, NULL);
    if (!rc)
        rc = moe_metrics_compute(b->plan, L, 0, 0, 0, 0, b->mt);
    *dt = moe_now() - t0;
    return rc;
}

/* name is one of the comma-separated names of list */
static int br_listed(const char *list, const char *name)
{
    const size_t len = strlen(name);
    for (const char *p = list; p && *p; p = strchr(p, ',') ? strchr(p, ',') + 1 : "")
        if (strncmp(p, name, len) == 0 && (p[len] == ',' || p[len] == '\0'))
            return 1;
    return 0;
}

/* Bytes of physical memory (sysconf), or infinity when unknown. */
static double br_memory(void)
{
    const long pages = sysconf(_SC_PHYS_PAGES), size = sysconf(_SC_PAGESIZE);
    return pages > 0 && size > 0 ? (double)pages * size : INFINITY;
}

/* Why router c does not run at n tokens and E experts (NULL: it runs); "" when --routers left it
 * out. */
static const char *br_skip(const br_args *a, const br_case *c, long n, long E)
{
    if (a->routers && !br_listed(a->routers, c->router))
        return "";
    if (strcmp(c->router, "base") == 0 && n > BR_BASE_MAX_N)
        return "its exact assignment's workspace is 20*E*n bytes: up to 2^20 tokens";
    if ((strcmp(c->router, "dense") == 0 || strcmp(c->router, "soft_moe") == 0) &&
        (double)n * E * sizeof(moe_entry) > br_memory() / 2)
        return "its plan's n*E entries take over half of this machine's memory";
    if (c->k > E)
        return "k > E";
    return NULL;
}

/* k as the PyTorch twin takes it: the case's, else the router type's default. */
static int br_case_k(const br_case *c)
{
    const moe_router_type *t = moe_router_find(c->router);
    return c->k ? c->k : t ? t->default_k : 1;
}

/* Round q's share of `want` passes split over Q rounds. */
static int br_share(int want, int q, int Q)
{
    return want / Q + (q < want % Q);
}

/* Times router c on L, and its PyTorch twin when tw is running (*tw_ok, cleared when the twin
 * is gone): in Q rounds (two below --large-from, else one), each moesim's passes (the router
 * allocated for the round and freed after it), then the twin's, so that both are timed over
 * the same stretch of the host's time. Each side takes at least its repeats over the rounds
 * and, in each round, more until that round's passes add up to min_time / Q (at most
 * BR_MAX_REPEATS passes in all, or the repeats when more). res: moesim's times, k, capacity,
 * entries and passes; the twin's best and passes. */
static int br_cell(const br_args *a, const br_case *c, const double *L, int n, int E,
                   bench_child *tw, int *tw_ok, br_result *res)
{
    const int Q = n >= a->large_from ? 1 : 2, R = br_repeats(a, n), RT = br_torch_repeats(a, n);
    const int most = R > BR_MAX_REPEATS ? R : BR_MAX_REPEATS, tmost = RT > most ? RT : most;
    const double t0 = moe_now();
    double *v = malloc((size_t)most * sizeof *v), tbest = INFINITY, tsec = 0.0;
    int nv = 0, tpass = 0, rc = v ? MOE_OK : moe_fail(MOE_ENOMEM, NULL, "out of memory");
    for (int q = 0; !rc && q < Q; q++) {
        br_run b;
        if ((rc = br_run_alloc(c, n, E, &b)))
            break;
        const int want = br_share(R, q, Q), cap = br_share(most, q, Q);
        double sum = 0.0;
        for (int r = 0; !rc && r < cap && (r < want || sum < a->min_time / Q); r++, nv++)
            if (!(rc = br_route_once(&b, L, n, E, NULL, &v[nv])))
                sum += v[nv];
        res->k = b.r->k;
        res->C = b.plan->capacity;
        res->kept = b.plan->n_entries;
        br_run_free(&b);
        if (rc || !tw || !*tw_ok || !c->torch)
            continue;
        double best, tot, t1 = moe_now();
        int p, tw_want = br_share(RT, q, Q);
        if (brio_twin_time(tw, c->router, br_case_k(c), tw_want > 0 ? tw_want : 1,
                           a->min_time / Q, br_share(tmost, q, Q), &best, &p, &tot)) {
            *tw_ok = 0;
            continue;
        }
        tbest = best < tbest ? best : tbest;
        tpass += p;
        tsec += moe_now() - t1;
    }
    if (!rc) {
        res->t = bench_stat_of(v, nv);
        res->ms = res->t.min * 1e3;
        res->repeats = nv;
        char what[160];
        int w = snprintf(what, sizeof what, "moesim %s k=%d n=%d E=%d: %.2f ms (best of %d in %d "
                         "round%s", c->router, res->k, n, E, res->ms, nv, Q, Q > 1 ? "s" : "");
        if (w > 0 && (size_t)w < sizeof what)
            snprintf(what + w, sizeof what - (size_t)w,
                     isfinite(res->rt_ns) ? "; round trip %.0f ns)" : ")", res->rt_ns);
        br_progress(what, moe_now() - t0 - tsec);
        if (tpass > 0 && *tw_ok) {
            res->torch_ms = tbest * 1e3;
            res->torch_repeats = tpass;
            snprintf(what, sizeof what, "PyTorch %s k=%d n=%d E=%d: %.2f ms (best of %d in %d "
                     "round%s, each after moesim's)", c->router, br_case_k(c), n, E,
                     res->torch_ms, tpass, Q, Q > 1 ? "s" : "");
            br_progress(what, tsec);
        }
    }
    free(v);
    return rc;
}

/* ---- PyTorch ---- */

/* "name:k,..." of the cases with a twin for which want[c] is set; 0 when there is none. */
static int br_torch_cases(const int *want, char *buf, size_t len)
{
    size_t pos = 0;
    int count = 0;
    buf[0] = '\0';
    for (int c = 0; c < BR_NCASES; c++)
        if (want[c] && br_cases[c].torch && pos + 40 < len) {
            pos += (size_t)snprintf(buf + pos, len - pos, "%s%s:%d", count ? "," : "",
                                    br_cases[c].router, br_case_k(&br_cases[c]));
            count++;
        }
    return count;
}


/* Route the check logits with moesim and compare with the PyTorch plan written into dir. */
static int br_same_plan(const br_case *c, const char *dir, const double *L, const double *u,
                        int n, int E)
{
    char path[1200];
    snprintf(path, sizeof path, "%s/torch_%s_k%d.npy", dir, c->router, br_case_k(c));
    moe_npy a;
    if (moe_npy_read(path, &a)) {
        moe_clear_error();
        return 0;
    }
    double *tp = NULL, dt;
    br_run b;
    int same = 0;
    if (!moe_npy_as_double(&a, "torch plan", &tp) && !br_run_alloc(c, n, E, &b)) {
        if (!br_route_once(&b, L, n, E, u, &dt) && a.ndim == 2 && a.shape[1] == 4 &&
            a.shape[0] == b.plan->n_entries) {
            same = 1;
            for (size_t i = 0; same && i < b.plan->n_entries; i++) {
                const moe_entry *en = &b.plan->entries[i];
                const double *q = tp + 4 * i;
                same = en->token == q[0] && en->expert == q[1] && en->slot == q[2] &&
                       fabs(en->combine_w - q[3]) <= 1e-12 * fabs(q[3]);
            }
        }
        br_run_free(&b);
    }
    moe_clear_error();
    free(tp);
    moe_npy_free(&a);
    return same;
}

/* Check every PyTorch twin against moesim on check_n tokens with E experts: fills same[]
 * (-1: not checked). *st: the script's exit status. */
static int br_check(const br_args *a, int E, int *same, int *st)
{
    const int n = a->check_n;
    int want[BR_NCASES];
    char dir[1100], cases[1024];
    for (int c = 0; c < BR_NCASES; c++) {
        same[c] = -1;
        want[c] = !br_skip(a, &br_cases[c], n, E);
    }
    *st = 0;
    if (!br_torch_cases(want, cases, sizeof cases))
        return MOE_OK;
    int rc = bench_tmpdir(dir, sizeof dir, "moesim-br", 1);
    if (rc)
        return rc;
    double *L = br_logits(n, E, 7), *u = br_uniforms(n, 7);
    rc = !L || !u ? MOE_ENOMEM : brio_write_inputs(dir, L, u, n, E);
    *st = rc ? -1 : brio_check(a->python, a->script, dir, cases, moe_par_threads());
    for (int c = 0; !rc && *st == 0 && c < BR_NCASES; c++)
        if (want[c] && br_cases[c].torch)
            same[c] = br_same_plan(&br_cases[c], dir, L, u, n, E);
    if (*st == 0) {
        char what[96];
        snprintf(what, sizeof what, "plan check on %d tokens, E=%d", n, E);
        br_progress(what, NAN);
    }
    bench_rmdir(dir, "bench --routing");
    free(L);
    free(u);
    return rc;
}

/* ---- the table ---- */

static void br_print(const br_args *a, const br_result *res)
{
    printf("\n%-14s %2s %8s %4s %10s %9s %10s %8s %9s %8s %5s %8s\n", "router", "k", "n", "E",
           "moesim ms", "Mtok/s", "torch ms", "x torch", "bound ms", "/bound", "plan", "R");
    for (int i = 0; i < a->nsizes * a->nexperts * BR_NCASES; i++) {
        const br_result *r = &res[i];
        const br_case *c = &br_cases[i % BR_NCASES];
        const char *why = br_skip(a, c, r->n, r->E);
        char kk[8], tm[16] = "-", xt[16] = "-", rr[16];
        snprintf(kk, sizeof kk, "%d", c->k);
        if (c->k == 0)
            snprintf(kk, sizeof kk, "-");
        if (!r->ran) {
            if (why && *why && c->k <= r->E)
                printf("%-14s %2s %8d %4d   not run: %s\n", c->router, kk, r->n, r->E, why);
            continue;
        }
        if (r->torch_ms > 0.0) {
            snprintf(tm, sizeof tm, "%.2f", r->torch_ms);
            snprintf(xt, sizeof xt, "%.2f", r->torch_ms / r->ms);
        }
        if (r->torch_ms > 0.0)
            snprintf(rr, sizeof rr, "%d/%d", r->repeats, r->torch_repeats);
        else
            snprintf(rr, sizeof rr, "%d", r->repeats);
        printf("%-14s %2s %8d %4d %10.2f %9.2f %10s %8s %9.2f %8.2f %5s %8s\n", c->router, kk,
               r->n, r->E, r->ms, r->n / r->ms * 1e-3, tm, xt, r->bound_ms, r->ms / r->bound_ms,
               r->same == 1 ? "same" : r->same == 0 ? "DIFF" : "-", rr);
    }
    printf("(x torch: PyTorch time / moesim time; /bound: moesim time / the time of one pass "
           "over the logits with one exp each; plan: PyTorch's plan on %d tokens vs moesim's, "
           "'-' where moesim's router has no PyTorch twin; %d threads; R: best of R passes for "
           "moesim/PyTorch, at least %d/%d below %d tokens and %d/1 from there on (each "
           "PyTorch call allocates its tensors afresh, so a repeat there warms nothing), and "
           "more until the passes take %g s (at most %d), in two rounds below %d tokens (one "
           "from there on), each moesim's passes then PyTorch's; '-' torch: no twin or "
           "PyTorch skipped)\n", a->check_n, moe_par_threads(), a->repeats, a->repeats,
           a->large_from, a->large_repeats, a->min_time, BR_MAX_REPEATS, a->large_from);
    printf("replay is not benchmarked (it routes recorded choices)\n");
}

/* ---- the rows ---- */

static int br_put(bench_ctx *c, const br_result *r, const char *config, const char *router,
                  const char *metric, const char *unit, bench_stat s)
{
    const moe_bench_row row = {
        .run = c->run_id, .git_rev = moe_git_rev(), .blas_library = c->bi.library,
        .blas_core = c->bi.core, .blas_threads = moe_par_threads(),
        .openblas_coretype = c->bi.coretype_env, .torch = c->torch_version,
        .repeats = r->repeats, .config = config, .router = router, .E = r->E, .k = r->k,
        .n = r->n, .cf = 1.25, .capacity = r->C, .kept = (long long)r->kept, .metric = metric,
        .unit = unit, .median = s.median, .q1 = s.q1, .q3 = s.q3, .min = s.min, .max = s.max};
    return bench_put_row(c, &row);
}

/* One measured cell's rows. */
static int br_put_cell(bench_ctx *c, const br_result *r, const char *router)
{
    char cfg[96];
    snprintf(cfg, sizeof cfg, "routing_%s_k%d_E%d", router, r->k, r->E);
    const double best = r->t.min, bound = r->bound_ms * 1e-3;
    int rc = br_put(c, r, cfg, router, "time_route", "s", r->t);
    if (!rc)
        rc = br_put(c, r, cfg, router, "tokens_per_s", "1/s", bench_stat_one(r->n / best));
    if (!rc)
        rc = br_put(c, r, cfg, router, "time_bound", "s", bench_stat_one(bound));
    if (!rc)
        rc = br_put(c, r, cfg, router, "ratio_vs_bound", "1", bench_stat_one(best / bound));
    br_result rt = *r; /* PyTorch's rows: its repeats */
    rt.repeats = r->torch_repeats;
    if (!rc && r->torch_ms > 0.0)
        rc = br_put(c, &rt, cfg, router, "time_torch", "s", bench_stat_one(r->torch_ms * 1e-3));
    if (!rc && r->torch_ms > 0.0)
        rc = br_put(c, &rt, cfg, router, "ratio_vs_torch", "1",
                    bench_stat_one(r->torch_ms * 1e-3 / best));
    if (!rc && r->same >= 0)
        rc = br_put(c, r, cfg, router, "plan_same_as_torch", "1", bench_stat_one(r->same));
    if (!rc && isfinite(r->rt_ns))
        rc = br_put(c, r, cfg, router, "thread_round_trip", "ns", bench_stat_one(r->rt_ns));
    return rc;
}

/* Every measured router's rows, the load averages and the run's wall and CPU seconds (this
 * process and its children: PyTorch) in one transaction of a->db; torch_version: the twins'
 * (empty when none ran). */
static int br_store(const br_args *a, const br_result *res, const double run[6],
                    const char *torch_version)
{
    bench_ctx c;
    memset(&c, 0, sizeof c);
    c.a.db = a->db;
    c.a.repeats = a->repeats;
    c.routing = 1;
    moe_blas_info_get(&c.bi);
    snprintf(c.torch_version, sizeof c.torch_version, "%s", torch_version);
    int rc = bench_open(&c);
    if (rc)
        return rc;
    const br_result lr = {.k = 0, .repeats = 1};
    static const char *const what[6] = {"load_average_start", "load_average_end",
                                        "wall_time_run",      "cpu_time_run",
                                        "thread_round_trip_start", "thread_round_trip_end"};
    static const char *const unit[6] = {"1", "1", "s", "s", "ns", "ns"};
    for (int i = 0; !rc && i < 6; i++)
        if (i < 4 || isfinite(run[i]))
            rc = br_put(&c, &lr, "routing_load", NULL, what[i], unit[i], bench_stat_one(run[i]));
    for (int i = 0; !rc && i < a->nsizes * a->nexperts * BR_NCASES; i++)
        if (res[i].ran)
            rc = br_put_cell(&c, &res[i], br_cases[i % BR_NCASES].router);
    return bench_close(&c, rc);
}

/* The 1-minute load average, NaN when unknown. */
static double br_load(void)
{
    double l[1];
    return getloadavg(l, 1) == 1 ? l[0] : NAN;
}

/* A number of seconds, NaN unless the whole of s is one. */
static double br_seconds(const char *s)
{
    char *end;
    const double x = strtod(s, &end);
    return end != s && !*end ? x : NAN;
}

static int br_parse_list(const char *s, int *v, int *nv, int max, const char *flag)
{
    *nv = 0;
    for (const char *p = s; *p;) {
        char *end;
        long x = strtol(p, &end, 10);
        if (end == p || x < 1 || x > (1L << 26) || *nv == max || (*end && *end != ','))
            return moe_fail(MOE_EINVAL, "give up to 4 positive integers separated by commas",
                            "bad list '%s' (%s)", s, flag);
        v[(*nv)++] = (int)x;
        p = *end ? end + 1 : end;
    }
    return *nv ? MOE_OK : moe_fail(MOE_EINVAL, NULL, "empty list (%s)", flag);
}

#define BR_USAGE "usage: moesim bench --routing [--sizes N,..] [--experts E,..] [--repeats R] " \
                 "[--large-repeats R] [--large-from N] [--min-time S] [--threads T] " \
                 "[--check-n N] [--no-torch] [--python PATH] [--torch-script PATH] " \
                 "[--routers NAME,..] [--db PATH]"

static int br_parse_args(int argc, char **argv, br_args *a, int *help)
{
    *a = (br_args){{65536, 1048576}, 2, {8, 64, 256}, 3, 10, 2, 4096, 0, 1, 1048576, 0.25,
                   "/usr/bin/python3", "sim/bench_torch_routing.py", NULL, "results/bench.db"};
    static const struct option lo[] = {
        {"routing", no_argument, NULL, 'R'},     {"sizes", required_argument, NULL, 'n'},
        {"experts", required_argument, NULL, 'e'}, {"repeats", required_argument, NULL, 'r'},
        {"large-repeats", required_argument, NULL, 'L'},
        {"large-from", required_argument, NULL, 'F'},
        {"min-time", required_argument, NULL, 'm'},
        {"threads", required_argument, NULL, 't'}, {"check-n", required_argument, NULL, 'c'},
        {"no-torch", no_argument, NULL, 'N'},    {"python", required_argument, NULL, 'p'},
        {"torch-script", required_argument, NULL, 's'}, {"routers", required_argument, NULL, 'o'},
        {"db", required_argument, NULL, 'd'},
        {"help", no_argument, NULL, 'h'}, {NULL, 0, NULL, 0}};
    int c, rc = MOE_OK;
    opterr = 0;
    optind = 1;
    while (!rc && (c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
        switch (c) {
        case 'R': break;
        case 'h': *help = 1; break;
        case 'n': rc = br_parse_list(optarg, a->sizes, &a->nsizes, 4, "--sizes"); break;
        case 'e': rc = br_parse_list(optarg, a->experts, &a->nexperts, 4, "--experts"); break;
        case 'r': a->repeats = atoi(optarg); break;
        case 'L': a->large_repeats = atoi(optarg); break;
        case 'F': a->large_from = atoi(optarg); break;
        case 'm': a->min_time = br_seconds(optarg); break;
        case 't': a->threads = atoi(optarg); break;
        case 'c': a->check_n = atoi(optarg); break;
        case 'N': a->torch = 0; break;
        case 'p': a->python = optarg; break;
        case 's': a->script = optarg; break;
        case 'o': a->routers = optarg; break;
        case 'd': a->db = optarg; break;
        default:
            return moe_fail(MOE_EINVAL, BR_USAGE,
                            "unknown or incomplete flag '%s' (command line)", argv[optind - 1]);
        }
    }
    if (!rc && (a->repeats < 1 || a->large_repeats < 1 || a->large_from < 1 ||
                a->threads < 0 || a->check_n < 16 || !(a->min_time >= 0.0 && a->min_time <= 60.0)))
        rc = moe_fail(MOE_EINVAL, NULL, "--repeats >= 1, --large-repeats >= 1, --large-from >= 1, "
                      "--threads >= 0, --check-n >= 16, --min-time from 0 to 60 (command line)");
    return rc;
}

/* The cells of n tokens and E experts (row: their BR_NCASES results): moesim's, then, when
 * dir is given (the logits shared with PyTorch go there), PyTorch's on the same logits;
 * torch_version (vlen bytes): the version of torch the twins' process said it runs. */
static int br_size(const br_args *a, int n, int E, const char *dir, br_result *row,
                   char *torch_version, size_t vlen)
{
    const double t0 = moe_now();
    double *Lown = br_logits(n, E, 1), *u = dir ? br_uniforms(n, 1) : NULL;
    const double *L = Lown;
    void *map = NULL;
    size_t map_len = 0;
    int rc = !Lown || (dir && !u) ? MOE_ENOMEM : MOE_OK;
    if (!rc && dir && !(rc = brio_write_inputs(dir, Lown, u, n, E))) {
        free(Lown); /* route the shared file's logits: one copy in memory */
        Lown = NULL;
        if (!(L = brio_map_logits(dir, (size_t)n * E, &map, &map_len)))
            rc = MOE_EIO;
    }
    free(u);
    char what[128];
    snprintf(what, sizeof what, "logits n=%d E=%d drawn%s", n, E, dir ? " and shared" : "");
    if (!rc)
        br_progress(what, moe_now() - t0);
    /* the twins' process, timing each twin right after moesim's router (br_cell) */
    int want[BR_NCASES], any = 0, tw_ok = 0, st = 0;
    for (int c = 0; c < BR_NCASES; c++)
        any |= (want[c] = !br_skip(a, &br_cases[c], n, E)) && br_cases[c].torch;
    bench_child tw = {-1, NULL, NULL};
    if (!rc && dir && any) {
        const double ts = moe_now();
        st = brio_twin_start(&tw, a->python, a->script, dir, moe_par_threads(), n, E,
                             torch_version, vlen);
        tw_ok = st == 0;
        snprintf(what, sizeof what, "PyTorch %s started on n=%d E=%d", torch_version, n, E);
        if (tw_ok)
            br_progress(what, moe_now() - ts);
    }
    const int R = br_repeats(a, n);
    /* the bound: R passes before the routers, repeated until they took min_time as a cell's
     * passes do, then R more before each router's cell, so that its best is taken over at
     * least as many passes as a cell has, spread over the same stretch of the run (R passes
     * before the routers alone gave 3.4 to 5.95 ms at 65536 x 64 over one day on the quiet
     * machine) */
    double tb = moe_now(), bound = rc ? 0.0 : INFINITY, spent = 0.0; /* the bound's seconds */
    int passes = 0;
    while (!rc && (passes == 0 || spent < a->min_time)) {
        const double b = moe_bench_routing_bound(L, n, E, R) * 1e3;
        bound = b < bound ? b : bound;
        passes += R;
        spent = moe_now() - tb;
    }
    const double first = bound;
    const int first_passes = passes;
    for (int c = 0; !rc && c < BR_NCASES; c++) {
        br_result *r = &row[c];
        r->n = n;
        r->E = E;
        if (!want[c])
            continue;
        tb = moe_now();
        const double b = moe_bench_routing_bound(L, n, E, R) * 1e3;
        spent += moe_now() - tb;
        bound = b < bound ? b : bound;
        passes += R;
        r->rt_ns = br_round_trip();
        rc = br_cell(a, &br_cases[c], L, n, E, tw.pid > 0 ? &tw : NULL, &tw_ok, r);
        r->ran = !rc;
    }
    for (int c = 0; c < BR_NCASES; c++)
        row[c].bound_ms = bound;
    snprintf(what, sizeof what, "bound n=%d E=%d: %.2f ms (best of %d; first %d: %.2f)", n, E,
             bound, passes, first_passes, first);
    if (!rc)
        br_progress(what, spent);
    const int started = tw.pid > 0; /* (tw_ok cleared since: a cell found the twin gone) */
    if (started)
        st = bench_child_stop(&tw);
    if (started && !tw_ok)
        fprintf(stderr, "bench --routing: *** the PyTorch timing at n=%d E=%d exited with %d: "
                "its cells from the first failed one are SKIPPED ***\n", n, E, st);
    else if (started && st)
        fprintf(stderr, "bench --routing: the PyTorch timing at n=%d E=%d exited with %d after "
                "its last cell\n", n, E, st);
    else if (!started && st)
        fprintf(stderr, "bench --routing: *** the PyTorch timing at n=%d E=%d exited with %d: "
                "its cells are SKIPPED ***\n", n, E, st);
    free(Lown);
    if (map)
        munmap(map, map_len);
    return rc;
}

int moe_bench_routing(int argc, char **argv)
{
    br_args a;
    int help = 0, rc = br_parse_args(argc, argv, &a, &help);
    if (rc)
        return rc;
    if (help) {
        printf("%s\n", BR_USAGE);
        return MOE_OK;
    }
    moe_par_set_threads(a.threads);
    br_t0_wall = moe_now();
    br_t0_cpu = br_cpu_all();
    double run[6] = {br_load(), NAN, NAN, NAN, br_round_trip(), NAN};
    printf("moesim bench --routing: %d threads, load average %.2f at the start; moesim best of "
           "at least %d passes below %d tokens, of %d from there on, and of more until they "
           "take %g s; one line per finished cell on stderr\n", moe_par_threads(), run[0],
           a.repeats, a.large_from, a.large_repeats, a.min_time);
    br_print_round_trip("at the start", run[4]);
    const int ncell = a.nsizes * a.nexperts * BR_NCASES;
    br_result *res = calloc((size_t)ncell, sizeof *res);
    if (!res)
        return moe_fail(MOE_ENOMEM, NULL, "out of memory (bench --routing)");
    for (int i = 0; i < ncell; i++)
        res[i].same = -1;
    int have_torch = a.torch && access(a.script, R_OK) == 0, st = 0;
    for (int ei = 0; have_torch && ei < a.nexperts; ei++) {
        int same[BR_NCASES];
        if ((rc = br_check(&a, a.experts[ei], same, &st)) || st)
            break;
        for (int si = 0; si < a.nsizes; si++)
            for (int c = 0; c < BR_NCASES; c++)
                res[(si * a.nexperts + ei) * BR_NCASES + c].same = same[c];
    }
    if (!rc && have_torch && st) {
        printf("*** the PyTorch comparison is SKIPPED: %s %s exited with %d%s ***\n", a.python,
               a.script, st, st == 3 ? " (torch does not import: apt-get install python3-torch)"
                                     : "");
        have_torch = 0;
    } else if (!rc && !have_torch) {
        printf("*** the PyTorch comparison is SKIPPED (%s) ***\n",
               a.torch ? "its script is not found: run from the repository" : "--no-torch");
    }
    char dir[1100] = "", torch_version[64] = "";
    static const char *const inputs[] = {"logits.npy", "uniforms.npy", NULL};
    if (!rc && have_torch && !(rc = bench_tmpdir(dir, sizeof dir, "moesim-br", 1)))
        bench_guard(dir, inputs);
    for (int si = 0; !rc && si < a.nsizes; si++)
        for (int ei = 0; !rc && ei < a.nexperts; ei++)
            rc = br_size(&a, a.sizes[si], a.experts[ei], have_torch ? dir : NULL,
                         &res[(si * a.nexperts + ei) * BR_NCASES], torch_version,
                         sizeof torch_version);
    if (have_torch && dir[0]) {
        bench_rmdir(dir, "bench --routing");
        bench_guard(NULL, NULL);
    }
    if (!rc)
        br_print(&a, res);
    run[1] = br_load();
    run[2] = moe_now() - br_t0_wall;
    run[3] = br_cpu_all() - br_t0_cpu;
    run[5] = br_round_trip();
    if (!rc)
        printf("load average %.2f at the end; the run took %.1f s wall, %.1f s of CPU (moesim "
               "and PyTorch)\n", run[1], run[2], run[3]);
    if (!rc)
        br_print_round_trip("at the end", run[5]);
    if (!rc)
        rc = br_store(&a, res, run, torch_version);
    free(res);
    return rc;
}
