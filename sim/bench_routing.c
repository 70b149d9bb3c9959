/* bench_routing.c: `moesim bench --routing`, the speed of the route phase.
 *
 * For n tokens of N(0,1) float64 logits and E experts, every router's route phase as a sweep
 * runs it (moe_router_route, then moe_metrics_compute on the plan) is timed (best of R), and
 * set against
 *   - the bound: one pass over the logits taking one exponential per logit (the routers' own
 *     vector exponential, moe_vexp_shift), on the routers' threads (moe_par_threads), measured
 *     in the same run;
 *   - PyTorch implementations of switch, topk, gshard and expert_choice
 *     (sim/bench_torch_routing.py, run with the same number of threads), first checked to
 *     produce the same plan as moesim on `--check-n` tokens: same (token, expert, slot) entries
 *     in the same order, combine weights within 1e-12 relative.
 * Capacity factor 1.25; other options at their defaults. Routers whose plan would hold more
 * than BR_MAX_ENTRIES entries (dense, soft_moe at large n*E) or whose workspace grows with
 * E*E*n/E (base) run at the smaller sizes only, and say so; replay needs recorded choices and is
 * not run. The rows go to the table bench of --db (default results/bench.db) in one transaction,
 * config "routing_<router>_k<k>_E<E>" (d = f = 0: no layer), and to its JSON twin
 * (results/bench.json, beside the layer benchmark's rows): time_route (s, over the repeats),
 * tokens_per_s, time_bound and ratio_vs_bound, time_torch and ratio_vs_torch (PyTorch time /
 * moesim time) when PyTorch ran, plan_same_as_torch (1/0) when checked; config "routing_load"
 * holds the load average at the start and the end of the run.
 */
#include "bench.h"
#include "bench_routing.h"
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
#include <sys/wait.h>
#include <unistd.h>

#define BR_MAX_ENTRIES (1L << 25)
#define BR_BASE_MAX_N 65536L

typedef struct {
    const char *router;
    int k;      /* 0: the router's default */
    int torch;  /* has a PyTorch implementation */
} br_case;

static const br_case br_cases[] = {
    {"switch", 1, 1},        {"topk", 1, 1},    {"topk", 2, 1},      {"topk", 8, 1},
    {"gshard", 2, 1},        {"expert_choice", 1, 1}, {"hash", 0, 0}, {"dsv3_bias", 0, 0},
    {"sinkhorn", 0, 0},      {"soft_moe", 0, 0}, {"base", 0, 0},     {"dense", 0, 0},
    {"topp", 0, 0},          {"relu", 0, 0},
};
enum { BR_NCASES = sizeof br_cases / sizeof br_cases[0] };

typedef struct {
    int sizes[4], nsizes, experts[4], nexperts, repeats, check_n, threads, torch;
    const char *python, *script;
    const char *routers; /* comma-separated names to run, or NULL for all */
    const char *db;
} br_args;

typedef struct {
    double ms, torch_ms, bound_ms; /* ms: the best of the repeats */
    bench_stat t;                  /* seconds over the repeats */
    int n, E, k, ran, same; /* k effective; same: 1 plan equal to PyTorch's, 0 differs, -1 not
                             * checked */
    long C;                 /* the plan's capacity */
    size_t kept;            /* its entries */
} br_result;

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
    double s = 0.0, e[1024];
    for (long q = lo; q < hi; q += 1024) {
        const int nb = hi - q < 1024 ? (int)(hi - q) : 1024;
        moe_vexp_shift(j->L + q, nb, 0.0, e); /* the routers' exponential (vexp.h) */
        for (int k = 0; k < nb; k++)
            s += e[k];
    }
    j->part[i] = s;
}

static double br_bound(const double *L, int n, int E, int repeats)
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

static int br_skip(const br_args *a, const br_case *c, long n, long E)
{
    if (a->routers && !br_listed(a->routers, c->router))
        return 1;
    if (strcmp(c->router, "base") == 0)
        return n > BR_BASE_MAX_N;
    if (strcmp(c->router, "dense") == 0 || strcmp(c->router, "soft_moe") == 0)
        return n * E > BR_MAX_ENTRIES;
    return c->k > E;
}

/* Times router c on L: res's times, k, capacity and entries. */
static int br_time(const br_case *c, const double *L, int n, int E, int repeats, br_result *res)
{
    br_run b;
    double *v = malloc((size_t)repeats * sizeof *v);
    int rc = v ? br_run_alloc(c, n, E, &b) : moe_fail(MOE_ENOMEM, NULL, "out of memory");
    if (rc) {
        free(v);
        return rc;
    }
    for (int r = 0; !rc && r < repeats; r++)
        rc = br_route_once(&b, L, n, E, NULL, &v[r]);
    if (!rc) {
        res->k = b.r->k;
        res->C = b.plan->capacity;
        res->kept = b.plan->n_entries;
        res->t = bench_stat_of(v, repeats);
        res->ms = res->t.min * 1e3;
    }
    br_run_free(&b);
    free(v);
    return rc;
}

/* ---- PyTorch ---- */

static int br_python_run(const br_args *a, const char *args, char **out)
{
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "'%s' '%s' %s --threads %d --cf 5/4", a->python, a->script, args,
             moe_par_threads());
    FILE *f = popen(cmd, "r");
    if (!f)
        return -1;
    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap);
    while (buf) {
        if (len + 4096 > cap) {
            char *nb = realloc(buf, cap *= 2);
            if (!nb) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = nb;
        }
        size_t got = fread(buf + len, 1, cap - len - 1, f);
        if (got == 0)
            break;
        len += got;
    }
    if (buf)
        buf[len] = '\0';
    int st = pclose(f);
    if (out)
        *out = buf;
    else
        free(buf);
    return st == -1 ? -1 : WIFEXITED(st) ? WEXITSTATUS(st) : 128;
}

/* Route the check logits with moesim and compare with the PyTorch plan written into dir. */
static int br_same_plan(const br_case *c, const char *dir, const double *L, const double *u,
                        int n, int E)
{
    char path[1200];
    snprintf(path, sizeof path, "%s/torch_%s_k%d.npy", dir, c->router, c->k);
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

/* Check every PyTorch router against moesim on check_n tokens with E experts: fills same[]. */
static int br_check(const br_args *a, int E, int *same)
{
    const int n = a->check_n;
    char dir[] = "/tmp/moesim-brXXXXXX";
    if (!mkdtemp(dir))
        return moe_fail(MOE_EIO, NULL, "cannot create a temporary directory (bench --routing)");
    double *L = br_logits(n, E, 7), *u = malloc((size_t)n * sizeof *u);
    gsl_rng *g = moe_rng_alloc(7, MOE_STREAM_GSHARD);
    int rc = !L || !u || !g ? MOE_ENOMEM : MOE_OK;
    for (int i = 0; !rc && i < n; i++)
        u[i] = gsl_rng_uniform(g);
    char path[1200], args[1400];
    size_t shL[2] = {(size_t)n, (size_t)E}, shu[1] = {(size_t)n};
    snprintf(path, sizeof path, "%s/logits.npy", dir);
    rc = rc ? rc : moe_npy_write(path, MOE_F64, L, 2, shL);
    snprintf(path, sizeof path, "%s/uniforms.npy", dir);
    rc = rc ? rc : moe_npy_write(path, MOE_F64, u, 1, shu);
    snprintf(args, sizeof args, "check --dir '%s'", dir);
    int st = rc ? -1 : br_python_run(a, args, NULL);
    for (int c = 0; c < BR_NCASES; c++) {
        same[c] = -1;
        if (!rc && st == 0 && br_cases[c].torch && br_cases[c].k <= E)
            same[c] = br_same_plan(&br_cases[c], dir, L, u, n, E);
    }
    char cmd[1300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "bench --routing: could not remove %s\n", dir);
    free(L);
    free(u);
    if (g)
        gsl_rng_free(g);
    return rc;
}

/* Time the PyTorch routers at every size and E; fills res[..].torch_ms. 0 = ran. */
static int br_torch_time(const br_args *a, br_result *res)
{
    char args[512], *out = NULL;
    int pos = snprintf(args, sizeof args, "time --repeats %d --sizes ", a->repeats);
    for (int i = 0; i < a->nsizes; i++)
        pos += snprintf(args + pos, sizeof args - pos, "%s%d", i ? "," : "", a->sizes[i]);
    pos += snprintf(args + pos, sizeof args - pos, " --experts ");
    for (int i = 0; i < a->nexperts; i++)
        pos += snprintf(args + pos, sizeof args - pos, "%s%d", i ? "," : "", a->experts[i]);
    int st = br_python_run(a, args, &out);
    for (char *line = out ? strtok(out, "\n") : NULL; line; line = strtok(NULL, "\n")) {
        char name[64];
        int k, n, E;
        double s;
        if (sscanf(line, "time %63s %d %d %d %lf", name, &k, &n, &E, &s) != 5)
            continue;
        for (int si = 0; si < a->nsizes; si++)
            for (int ei = 0; ei < a->nexperts; ei++)
                for (int c = 0; c < BR_NCASES; c++) {
                    br_result *r = &res[(si * a->nexperts + ei) * BR_NCASES + c];
                    if (a->sizes[si] == n && a->experts[ei] == E && br_cases[c].torch &&
                        br_cases[c].k == k && strcmp(br_cases[c].router, name) == 0)
                        r->torch_ms = s * 1e3;
                }
    }
    free(out);
    return st;
}

static void br_print(const br_args *a, const br_result *res)
{
    printf("\n%-14s %2s %8s %4s %10s %9s %10s %8s %9s %8s %5s\n", "router", "k", "n", "E",
           "moesim ms", "Mtok/s", "torch ms", "x torch", "bound ms", "/bound", "plan");
    for (int i = 0; i < a->nsizes * a->nexperts * BR_NCASES; i++) {
        const br_result *r = &res[i];
        const br_case *c = &br_cases[i % BR_NCASES];
        if (!r->ran)
            continue;
        char kk[8], tm[16] = "-", xt[16] = "-";
        snprintf(kk, sizeof kk, "%d", c->k);
        if (c->k == 0)
            snprintf(kk, sizeof kk, "-");
        if (r->torch_ms > 0.0) {
            snprintf(tm, sizeof tm, "%.2f", r->torch_ms);
            snprintf(xt, sizeof xt, "%.2f", r->torch_ms / r->ms);
        }
        printf("%-14s %2s %8d %4d %10.2f %9.2f %10s %8s %9.2f %8.2f %5s\n", c->router, kk, r->n,
               r->E, r->ms, r->n / r->ms * 1e-3, tm, xt, r->bound_ms, r->ms / r->bound_ms,
               r->same == 1 ? "same" : r->same == 0 ? "DIFF" : "-");
    }
    printf("(x torch: PyTorch time / moesim time; /bound: moesim time / the time of one pass "
           "over the logits with one exp each; plan: PyTorch's plan on %d tokens vs moesim's; "
           "%d threads, best of %d)\n", a->check_n, moe_par_threads(), a->repeats);
}

/* ---- the rows ---- */

static int br_put(bench_ctx *c, const br_result *r, const char *config, const char *router,
                  const char *metric, const char *unit, bench_stat s)
{
    const moe_bench_row row = {
        .run = c->run_id, .git_rev = moe_git_rev(), .blas_library = c->bi.library,
        .blas_core = c->bi.core, .blas_threads = moe_par_threads(),
        .openblas_coretype = c->bi.coretype_env, .torch = c->torch_version,
        .repeats = c->a.repeats, .config = config, .router = router, .E = r->E, .k = r->k,
        .n = r->n, .cf = 1.25, .capacity = r->C, .kept = (long long)r->kept, .metric = metric,
        .unit = unit, .median = s.median, .q1 = s.q1, .q3 = s.q3, .min = s.min, .max = s.max};
    return bench_put_row(c, &row);
}

/* Every measured router's rows, and the load averages, in one transaction of a->db. */
static int br_store(const br_args *a, const br_result *res, const double load[2], int torch)
{
    bench_ctx c;
    memset(&c, 0, sizeof c);
    c.a.db = a->db;
    c.a.repeats = a->repeats;
    c.routing = 1;
    moe_blas_info_get(&c.bi);
    int st = -1;
    char *ver = torch ? bench_run_capture("/usr/bin/python3 -c 'import torch; "
                                          "print(torch.__version__)' 2>/dev/null", &st) : NULL;
    if (ver && st == 0)
        snprintf(c.torch_version, sizeof c.torch_version, "%.*s", (int)strcspn(ver, "\n"),
                 ver);
    free(ver);
    int rc = bench_open(&c);
    if (rc)
        return rc;
    const br_result lr = {.k = 0};
    rc = br_put(&c, &lr, "routing_load", NULL, "load_average_start", "1", bench_stat_one(load[0]));
    if (!rc)
        rc = br_put(&c, &lr, "routing_load", NULL, "load_average_end", "1",
                    bench_stat_one(load[1]));
    for (int i = 0; !rc && i < a->nsizes * a->nexperts * BR_NCASES; i++) {
        const br_result *r = &res[i];
        const char *router = br_cases[i % BR_NCASES].router;
        if (!r->ran)
            continue;
        char cfg[96];
        snprintf(cfg, sizeof cfg, "routing_%s_k%d_E%d", router, r->k, r->E);
        const double best = r->t.min;
        rc = br_put(&c, r, cfg, router, "time_route", "s", r->t);
        if (!rc)
            rc = br_put(&c, r, cfg, router, "tokens_per_s", "1/s", bench_stat_one(r->n / best));
        if (!rc)
            rc = br_put(&c, r, cfg, router, "time_bound", "s", bench_stat_one(r->bound_ms * 1e-3));
        if (!rc)
            rc = br_put(&c, r, cfg, router, "ratio_vs_bound", "1",
                        bench_stat_one(best / (r->bound_ms * 1e-3)));
        if (!rc && r->torch_ms > 0.0)
            rc = br_put(&c, r, cfg, router, "time_torch", "s", bench_stat_one(r->torch_ms * 1e-3));
        if (!rc && r->torch_ms > 0.0)
            rc = br_put(&c, r, cfg, router, "ratio_vs_torch", "1",
                        bench_stat_one(r->torch_ms * 1e-3 / best));
        if (!rc && r->same >= 0)
            rc = br_put(&c, r, cfg, router, "plan_same_as_torch", "1", bench_stat_one(r->same));
    }
    return bench_close(&c, rc);
}

/* The 1-minute load average, NaN when unknown. */
static double br_load(void)
{
    double l[1];
    return getloadavg(l, 1) == 1 ? l[0] : NAN;
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
                 "[--threads T] [--check-n N] [--no-torch] [--python PATH] " \
                 "[--torch-script PATH] [--routers NAME,..] [--db PATH]"

static int br_parse_args(int argc, char **argv, br_args *a, int *help)
{
    *a = (br_args){{65536, 1048576}, 2, {8, 64, 256}, 3, 3, 4096, 0, 1, "/usr/bin/python3",
                   "sim/bench_torch_routing.py", NULL, "results/bench.db"};
    static const struct option lo[] = {
        {"routing", no_argument, NULL, 'R'},     {"sizes", required_argument, NULL, 'n'},
        {"experts", required_argument, NULL, 'e'}, {"repeats", required_argument, NULL, 'r'},
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
    if (!rc && (a->repeats < 1 || a->threads < 0 || a->check_n < 16))
        rc = moe_fail(MOE_EINVAL, NULL, "--repeats >= 1, --threads >= 0, --check-n >= 16 "
                      "(command line)");
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
    double load[2] = {br_load(), NAN};
    printf("moesim bench --routing: %d threads, load average %.2f at the start\n",
           moe_par_threads(), load[0]);
    const int ncell = a.nsizes * a.nexperts * BR_NCASES;
    br_result *res = calloc((size_t)ncell, sizeof *res);
    if (!res)
        return moe_fail(MOE_ENOMEM, NULL, "out of memory (bench --routing)");
    for (int i = 0; i < ncell; i++)
        res[i].same = -1;
    int have_torch = a.torch && access(a.script, R_OK) == 0;
    for (int ei = 0; have_torch && ei < a.nexperts; ei++) {
        int same[BR_NCASES];
        if ((rc = br_check(&a, a.experts[ei], same)))
            break;
        for (int si = 0; si < a.nsizes; si++)
            for (int c = 0; c < BR_NCASES; c++)
                res[(si * a.nexperts + ei) * BR_NCASES + c].same = same[c];
    }
    for (int si = 0; !rc && si < a.nsizes; si++)
        for (int ei = 0; !rc && ei < a.nexperts; ei++) {
            const int n = a.sizes[si], E = a.experts[ei];
            double *L = br_logits(n, E, 1);
            if (!L) {
                rc = MOE_ENOMEM;
                break;
            }
            double bound = br_bound(L, n, E, a.repeats) * 1e3;
            for (int c = 0; !rc && c < BR_NCASES; c++) {
                br_result *r = &res[(si * a.nexperts + ei) * BR_NCASES + c];
                r->n = n;
                r->E = E;
                r->bound_ms = bound;
                if (br_skip(&a, &br_cases[c], n, E))
                    continue;
                rc = br_time(&br_cases[c], L, n, E, a.repeats, r);
                r->ran = !rc;
                fprintf(stderr, "bench --routing: %s k=%d n=%d E=%d %.2f ms\n",
                        br_cases[c].router, br_cases[c].k, n, E, r->ms);
            }
            free(L);
        }
    if (!rc && have_torch) {
        int st = br_torch_time(&a, res);
        if (st)
            fprintf(stderr, "bench --routing: PyTorch comparison skipped (%s %s exited with %d; "
                    "apt-get install python3-torch)\n", a.python, a.script, st);
    } else if (!rc) {
        fprintf(stderr, "bench --routing: PyTorch comparison skipped\n");
    }
    if (!rc)
        br_print(&a, res);
    load[1] = br_load();
    if (!rc)
        printf("load average %.2f at the end\n", load[1]);
    if (!rc)
        rc = br_store(&a, res, load, have_torch);
    free(res);
    return rc;
}
