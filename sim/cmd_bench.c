/* cmd_bench.c: `moesim bench`: the speed of the real MoE layer against the BLAS it
 * runs on and against PyTorch, in one run, stored in SQLite like any experiment.
 *
 * For each layer configuration (E=16 k=2 topk, E=64 k=1 switch, E=8 k=2 topk; n=8192, d=512,
 * f=2048, cf=1.25, GELU tanh, fp32; --quick shrinks the shapes for a smoke run) it measures,
 * after one warm-up, `repeats` forwards of gate + route + dispatch + experts + combine, each
 * followed by one round of the reference GEMMs below (bench_points_measure), and:
 *   - each phase's median and spread, the layer's tokens/s;
 *   - the expert phase's GFLOP/s on useful FLOPs (4*d*f per kept entry) against a dense sgemm
 *     pair of the same useful FLOPs, (N x D)(D x F) then (N x F)(F x D) with N = kept entries,
 *     timed in the same run, against the same GEMMs grouped per expert (the expert phase without
 *     bias, activation or gather: what OpenBLAS allows on these shapes), and against the fp32
 *     peak (--peak-gflops, default 467, measured on the reference machine);
 *   - the share of route + dispatch + combine in the layer time;
 *   - a check of the layer output against the naive reference (moe_layer_forward_naive) on the
 *     first tokens (all tokens with --quick);
 *   - the same forwards with pad_to_capacity = true (every expert at C rows, as padded
 *     implementations run), whose output must equal the unpadded one bit for bit;
 *   - PyTorch (sim/bench_torch_moe.py, run with /usr/bin/python3 when torch imports) on the same
 *     inputs: the per-expert loop of Mixtral and the one-hot einsum dispatch of GShard/DeepSpeed,
 *     1 and 2 threads, OMP_WAIT_POLICY=passive; its outputs must agree with moesim's.
 * On the first configuration it also measures time per token for n = 1k, 4k, 16k, 64k (with the
 * grouped GEMM pair alone at each n, to tell the layer's overhead from OpenBLAS's small-GEMM
 * efficiency; the four n in rounds, one forward of each n per round) and the layer's workspace
 * bytes against n*d, E*C*d and the n*E*C of a one-hot dispatch. Then the training step against
 * a PyTorch training loop (bench_train.c, config "train"; not with --quick). `--config` selects
 * configurations; a forced OPENBLAS_CORETYPE weaker than the CPU is warned about (blas_info.h)
 * and recorded.
 *
 * Timings are reported, never asserted: the command fails only on errors and on outputs that
 * disagree. Rows go to the table `bench` of --db (default results/bench.db), one transaction per
 * run, with the BLAS provenance (library, core, threads, OPENBLAS_CORETYPE) on every row.
 */
#include "bench.h"
#include "blas_info.h"
#include "cli.h"
#include "layer.h"
#include "layer_gemm.h"
#include "npy.h"
#include "options.h"
#include "pipeline.h"
#include "provenance.h"
#include "store.h"

#include <errno.h>
#include <getopt.h>
#include <gsl/gsl_randist.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bench_routing.h"

static const bench_cfg bench_cfgs[] = {
    {"E16k2", "topk", 16, 2}, /* the reference layer */
    {"E64k1", "switch", 64, 1},
    {"E8k2", "topk", 8, 2},
};
enum { NCFG = sizeof bench_cfgs / sizeof *bench_cfgs };

static const bench_shape shape_full = {8192, 512, 2048, {1024, 4096, 16384, 65536}, 4, 256};
static const bench_shape shape_quick = {1024, 64, 256, {256, 1024, 4096, 0}, 3, 0};

/* ---- statistics ---- */


bench_stat bench_stat_one(double v) { return (bench_stat){v, NAN, NAN, NAN, NAN}; }

/* ---- the run: options, provenance, database ---- */


/* The context of one row: which layer it measures. */
typedef struct {
    const char *config, *router;
    int E, k, n;
    long C;
    size_t kept;
} row_key;

/* One row of the run in the table bench (store.h): a metric of the layer rk, its median and
 * spread (NaN spread = a single value). */
static int db_put(bench_ctx *c, const row_key *rk, const char *metric, const char *unit,
                  bench_stat s)
{
    const moe_bench_row row = {
        .run = c->run_id, .git_rev = moe_git_rev(), .blas_library = c->bi.library,
        .blas_core = c->bi.core, .blas_threads = c->bi.threads,
        .openblas_coretype = c->bi.coretype_env, .torch = c->torch_version,
        .quick = c->a.quick, .repeats = c->a.repeats, .config = rk->config,
        .router = rk->router, .E = rk->E, .k = rk->k, .n = rk->n, .d = c->sh->d, .f = c->sh->f,
        .cf = atof(BENCH_CF), .capacity = rk->C, .kept = (long long)rk->kept, .metric = metric,
        .unit = unit, .median = s.median, .q1 = s.q1, .q3 = s.q3, .min = s.min, .max = s.max};
    return bench_put_row(c, &row);
}

/* ---- inputs ---- */


static void fill_gauss(gsl_rng *r, float *v, size_t len, double sigma)
{
    for (size_t i = 0; i < len; i++)
        v[i] = (float)gsl_ran_gaussian_ziggurat(r, sigma);
}

static void weights_free(bench_weights *w)
{
    free(w->wg);
    free(w->w1);
    free(w->b1);
    free(w->w2);
    free(w->b2);
    memset(w, 0, sizeof *w);
}

/* Gate N(0, 1/d) (logits of unit scale), W1 N(0, 1/d), W2 N(0, 1/f), biases N(0, 0.1^2), each
 * from its PCG stream. */
static int weights_alloc(const bench_ctx *c, int E, bench_weights *w)
{
    size_t D = (size_t)c->sh->d, F = (size_t)c->sh->f, e = (size_t)E;
    memset(w, 0, sizeof *w);
    w->E = E;
    w->d = c->sh->d;
    w->f = c->sh->f;
    w->wg = malloc(D * e * sizeof(float));
    w->w1 = malloc(e * D * F * sizeof(float));
    w->b1 = malloc(e * F * sizeof(float));
    w->w2 = malloc(e * F * D * sizeof(float));
    w->b2 = malloc(e * D * sizeof(float));
    gsl_rng *rg = moe_rng_alloc(c->a.seed, MOE_STREAM_GATE_W);
    gsl_rng *rw = moe_rng_alloc(c->a.seed, MOE_STREAM_EXPERT_W);
    int rc = MOE_OK;
    if (!w->wg || !w->w1 || !w->b1 || !w->w2 || !w->b2 || !rg || !rw) {
        rc = moe_fail(MOE_ENOMEM, "try --quick", "out of memory (weights of %d experts, d=%zu, "
                      "f=%zu)", E, D, F);
        weights_free(w);
    } else {
        fill_gauss(rg, w->wg, D * e, 1.0 / sqrt((double)D));
        fill_gauss(rw, w->w1, e * D * F, 1.0 / sqrt((double)D));
        fill_gauss(rw, w->b1, e * F, 0.1);
        fill_gauss(rw, w->w2, e * F * D, 1.0 / sqrt((double)F));
        fill_gauss(rw, w->b2, e * D, 0.1);
        w->ex = (moe_experts){E, (int)D, (int)F, MOE_ACT_GELU_TANH, w->w1, w->b1, w->w2, w->b2, NULL};
    }
    gsl_rng_free(rg);
    gsl_rng_free(rw);
    return rc;
}

/* x (T,D) ~ N(0,1), T = n rows. */
static int tokens_alloc(const bench_ctx *c, int n, float **x)
{
    size_t len = (size_t)n * (size_t)c->sh->d;
    *x = malloc(len * sizeof **x);
    gsl_rng *r = moe_rng_alloc(c->a.seed, MOE_STREAM_TOKENS);
    if (!*x || !r) {
        free(*x);
        *x = NULL;
        gsl_rng_free(r);
        return moe_fail(MOE_ENOMEM, "try --quick", "out of memory (%d tokens)", n);
    }
    fill_gauss(r, *x, len, 1.0);
    gsl_rng_free(r);
    return MOE_OK;
}

/* ---- one layer point: the one-batch pipeline (gate, route, layer), timed ---- */

/* Bench rows name the total of the phases "layer" (time_layer). */
static const char *phase_name(int ph)
{
    return ph == MOE_PHASE_TOTAL ? "layer" : moe_phase_names[ph];
}


/* ---- correctness: the layer against its naive double-precision reference ---- */

/* Compares p->y on the first `ntok` tokens (0 = all) with moe_layer_forward_naive on the
 * sub-plan of those tokens' entries (a sparse slot holds one token, so their rows are exact). */
static int naive_check(const layer_point *p, const bench_weights *w, const float *x, int ntok,
                       double *err)
{
    const moe_plan *pl = p->plan;
    int nt = ntok > 0 && ntok < pl->n ? ntok : pl->n;
    size_t cnt = 0;
    for (size_t i = 0; i < pl->n_entries; i++)
        cnt += pl->entries[i].token < nt;
    moe_plan *sub = moe_plan_alloc(nt, pl->E, cnt);
    float *yref = malloc((size_t)nt * (size_t)w->d * sizeof *yref);
    int rc = MOE_OK;
    if (!sub || !yref) {
        rc = moe_fail(MOE_ENOMEM, NULL, "out of memory (naive check)");
        goto out;
    }
    if ((rc = moe_plan_reset(sub, nt, pl->E, pl->m)))
        goto out;
    sub->k = pl->k;
    sub->capacity = pl->capacity;
    for (size_t i = 0; i < pl->n_entries && !rc; i++) {
        const moe_entry *en = &pl->entries[i];
        if (en->token < nt)
            rc = moe_plan_push(sub, en->token, en->expert, en->slot, en->dispatch_w,
                               en->combine_w);
    }
    if (!rc && !(rc = moe_layer_forward_naive(&w->ex, sub, x, yref)))
        *err = moe_rel_l2(p->y, yref, (size_t)nt * (size_t)w->d);
out:
    moe_plan_free(sub);
    free(yref);
    return rc;
}

/* ---- one configuration ---- */

typedef struct {
    const bench_cfg *cfg;
    int n;
    long C;
    size_t kept;
    bench_stat ph[MOE_NPHASES];
    double flops;     /* useful expert FLOPs: 4*d*f per kept entry */
    gemm_ref g;
    bench_stat paired; /* round by round: the dense pair's time over the expert phase's */
    double share;     /* (route + dispatch + combine) / layer, medians */
    double naive_err;
    bench_stat pad[MOE_NPHASES]; /* pad_to_capacity = true: every expert at C rows */
    torch_result tr;
} cfg_result;

typedef struct {
    int n;
    long C;
    size_t kept;
    bench_stat layer, experts;
    double phase[MOE_NPHASES]; /* s per token, each phase's median / n */
    double per_token;  /* s, median layer / n */
    double grouped;    /* s, median of the grouped GEMM pair on this plan */
    size_t ws_bytes;     /* the layer's buffers, the packed weights apart */
    size_t packed_bytes; /* the packed expert weights (the same at every n) */
} scale_result;

static double gflops(double flops, double s) { return flops / s * 1e-9; }

static void print_phases(const cfg_result *r)
{
    printf("%-9s %11s %23s %23s %7s\n", "phase", "median ms", "IQR ms", "min..max ms", "share");
    for (int ph = 0; ph < MOE_NPHASES; ph++) {
        const bench_stat *s = &r->ph[ph];
        printf("%-9s %11.3f %11.3f..%-11.3f %11.3f..%-11.3f %6.1f%%\n", phase_name(ph),
               1e3 * s->median, 1e3 * s->q1, 1e3 * s->q3, 1e3 * s->min, 1e3 * s->max,
               100.0 * s->median / r->ph[MOE_PHASE_TOTAL].median);
    }
    const bench_stat *L = &r->ph[MOE_PHASE_TOTAL];
    printf("layer: %.0f tokens/s (IQR %.0f..%.0f, min..max %.0f..%.0f)\n", r->n / L->median,
           r->n / L->q3, r->n / L->q1, r->n / L->max, r->n / L->min);
}

static void print_gemm(const bench_ctx *c, const cfg_result *r)
{
    int d = c->sh->d, f = c->sh->f;
    double ge = gflops(r->flops, r->ph[MOE_PHASE_EXPERTS].median);
    double gd = gflops(r->flops, r->g.dense.median), gg = gflops(r->flops, r->g.grouped.median);
    printf("expert phase: %.3f GFLOP useful (4*d*f x %zu kept) in %.2f ms = %.1f GFLOP/s\n",
           r->flops * 1e-9, r->kept, 1e3 * r->ph[MOE_PHASE_EXPERTS].median, ge);
    printf("  dense GEMM pair (%zux%d)(%dx%d), (%zux%d)(%dx%d): %.2f ms = %.1f GFLOP/s "
           "(min..max %.1f..%.1f)\n", r->kept, d, d, f, r->kept, f, f, d,
           1e3 * r->g.dense.median, gd, gflops(r->flops, r->g.dense.max),
           gflops(r->flops, r->g.dense.min));
    printf("  grouped GEMM pair (the same GEMMs per expert, no gather/bias/activation): "
           "%.2f ms = %.1f GFLOP/s\n", 1e3 * r->g.grouped.median, gg);
    printf("  activation gelu_tanh alone on (%zux%d): %.2f ms (%.1f%% of the expert phase)\n",
           r->kept, f, 1e3 * r->g.act.median,
           100.0 * r->g.act.median / r->ph[MOE_PHASE_EXPERTS].median);
    printf("  ratios: experts/dense %.3f (target >= 0.90), experts/grouped %.3f, "
           "experts/peak %.3f, dense/peak %.3f (peak %.0f GFLOP/s)\n", ge / gd, ge / gg,
           ge / c->a.peak, gd / c->a.peak, c->a.peak);
    printf("  experts/dense round by round (each forward against the dense pair right after "
           "it): median %.3f, min..max %.3f..%.3f\n", r->paired.median, r->paired.min,
           r->paired.max);
    printf("route+dispatch+combine: %.2f%% of the layer (target <= 5%%)\n", 100.0 * r->share);
}

/* The layer against the fastest PyTorch configuration, the target's ratio: the median of
 * PyTorch's forwards over moesim's, in rounds (bench_torch_measure). */
static double torch_rounds_ratio(const torch_result *tr)
{
    return tr->theirs_rounds.median / tr->mine_rounds.median;
}

/* The same from the tables: the fastest configuration's median forward in the script's table
 * over the median of moesim's layer, timed before it. */
static double torch_table_ratio(const cfg_result *r)
{
    return r->tr.t[r->tr.best_style][r->tr.best_th].median / r->ph[MOE_PHASE_TOTAL].median;
}

static void print_torch(const bench_ctx *c, const cfg_result *r)
{
    const torch_result *tr = &r->tr;
    if (!tr->available) {
        printf("torch: %s\n", tr->note);
        return;
    }
    printf("torch %s (OMP_WAIT_POLICY=passive; threads = torch's%s), whole layer per forward, "
           "median ms (min..max):\n", c->torch_version,
           tr->blas_threads_set ? " and OpenBLAS's" : " only: OpenBLAS's not settable");
    for (int s = 0; s < TORCH_STYLES; s++) {
        printf("  %-7s", torch_styles[s]);
        for (int j = 0; j < tr->nth; j++)
            printf("  %d thread%s %9.2f (%.2f..%.2f)", tr->threads[j], tr->threads[j] > 1 ? "s" : " ",
                   1e3 * tr->t[s][j].median, 1e3 * tr->t[s][j].min, 1e3 * tr->t[s][j].max);
        printf("\n");
    }
    double best = tr->t[tr->best_style][tr->best_th].median;
    printf("  fastest: %s, %d thread%s: %.0f tokens/s; moesim/torch-best = %.2fx (this table "
           "against moesim's phases above, timed before it)\n", torch_styles[tr->best_style],
           tr->threads[tr->best_th], tr->threads[tr->best_th] > 1 ? "s" : "", r->n / best,
           torch_table_ratio(r));
    printf("  in %d rounds (two moesim forwards, then two of the fastest, the second of each "
           "timed): moesim %.2f ms, "
           "torch %.2f ms (medians) = %.2fx (target >= 1.3x); round by round median %.2fx, "
           "min..max %.2f..%.2f\n", tr->rounds, 1e3 * tr->mine_rounds.median,
           1e3 * tr->theirs_rounds.median, torch_rounds_ratio(tr), tr->ratio_rounds.median,
           tr->ratio_rounds.min, tr->ratio_rounds.max);
    int ok = tr->rel_l2[0] < TORCH_TOL && tr->rel_l2[1] < TORCH_TOL;
    printf("  agreement: rel L2 vs moesim: loop %.2e, einsum %.2e (%s, tolerance %.0e); "
           "routing %s (%ld kept (token,expert) pairs differ)\n", tr->rel_l2[0], tr->rel_l2[1],
           ok ? "ok" : "DISAGREE", TORCH_TOL, tr->routing_mismatch ? "differs" : "identical",
           tr->routing_mismatch);
}

static int store_cfg(bench_ctx *c, const cfg_result *r)
{
    row_key rk = {r->cfg->name, r->cfg->router, r->cfg->E, r->cfg->k, r->n, r->C, r->kept};
    char m[48];
    int rc = MOE_OK;
    for (int ph = 0; ph < MOE_NPHASES && !rc; ph++) {
        snprintf(m, sizeof m, "time_%s", phase_name(ph));
        rc = db_put(c, &rk, m, "s", r->ph[ph]);
    }
    const bench_stat *L = &r->ph[MOE_PHASE_TOTAL];
    double ge = gflops(r->flops, r->ph[MOE_PHASE_EXPERTS].median);
    double gd = gflops(r->flops, r->g.dense.median), gg = gflops(r->flops, r->g.grouped.median);
    if (rc || (rc = db_put(c, &rk, "tokens_per_s", "1/s",
                           (bench_stat){r->n / L->median, r->n / L->q3, r->n / L->q1,
                                        r->n / L->max, r->n / L->min})) ||
        (rc = db_put(c, &rk, "flops_expert_useful", "FLOP", bench_stat_one(r->flops))) ||
        (rc = db_put(c, &rk, "gflops_experts", "GFLOP/s", bench_stat_one(ge))) ||
        (rc = db_put(c, &rk, "time_dense_gemm_pair", "s", r->g.dense)) ||
        (rc = db_put(c, &rk, "time_grouped_gemm_pair", "s", r->g.grouped)) ||
        (rc = db_put(c, &rk, "time_activation", "s", r->g.act)) ||
        (rc = db_put(c, &rk, "gflops_dense_gemm_pair", "GFLOP/s", bench_stat_one(gd))) ||
        (rc = db_put(c, &rk, "gflops_grouped_gemm_pair", "GFLOP/s", bench_stat_one(gg))) ||
        (rc = db_put(c, &rk, "ratio_experts_vs_dense", "1", bench_stat_one(ge / gd))) ||
        (rc = db_put(c, &rk, "ratio_experts_vs_dense_rounds", "1", r->paired)) ||
        (rc = db_put(c, &rk, "ratio_experts_vs_peak", "1", bench_stat_one(ge / c->a.peak))) ||
        (rc = db_put(c, &rk, "ratio_dense_vs_peak", "1", bench_stat_one(gd / c->a.peak))) ||
        (rc = db_put(c, &rk, "peak_gflops", "GFLOP/s", bench_stat_one(c->a.peak))) ||
        (rc = db_put(c, &rk, "share_route_dispatch_combine", "1", bench_stat_one(r->share))) ||
        (rc = db_put(c, &rk, "rel_l2_vs_naive", "1", bench_stat_one(r->naive_err))) ||
        (rc = db_put(c, &rk, "time_experts_padded", "s", r->pad[MOE_PHASE_EXPERTS])) ||
        (rc = db_put(c, &rk, "time_layer_padded", "s", r->pad[MOE_PHASE_TOTAL])))
        return rc;
    const torch_result *tr = &r->tr;
    if (!tr->available)
        return MOE_OK;
    for (int s = 0; s < TORCH_STYLES && !rc; s++) {
        for (int j = 0; j < tr->nth && !rc; j++) {
            snprintf(m, sizeof m, "torch_%s_%dt_time_layer", torch_styles[s], tr->threads[j]);
            rc = db_put(c, &rk, m, "s", tr->t[s][j]);
        }
        if (!rc) {
            snprintf(m, sizeof m, "torch_%s_rel_l2", torch_styles[s]);
            rc = db_put(c, &rk, m, "1", bench_stat_one(tr->rel_l2[s]));
        }
    }
    if (!rc)
        rc = db_put(c, &rk, "ratio_vs_torch_best", "1", bench_stat_one(torch_table_ratio(r)));
    if (!rc)
        rc = db_put(c, &rk, "time_layer_rounds", "s", tr->mine_rounds);
    if (!rc)
        rc = db_put(c, &rk, "torch_best_time_layer_rounds", "s", tr->theirs_rounds);
    if (!rc)
        rc = db_put(c, &rk, "ratio_vs_torch_best_rounds", "1",
                    bench_stat_one(torch_rounds_ratio(tr)));
    if (!rc)
        rc = db_put(c, &rk, "ratio_vs_torch_best_per_round", "1", tr->ratio_rounds);
    if (!rc)
        rc = db_put(c, &rk, "torch_routing_mismatch", "1", bench_stat_one((double)tr->routing_mismatch));
    return rc;
}

static int bench_config(bench_ctx *c, const bench_cfg *cfg, const bench_weights *w,
                        const float *x, cfg_result *r)
{
    int n = c->sh->n;
    layer_point p;
    int rc = bench_point_alloc(cfg, w, n, 0, &p);
    if (rc)
        return rc;
    memset(r, 0, sizeof *r);
    r->cfg = cfg;
    r->n = n;
    r->C = p.C;
    if ((rc = bench_points_measure(&p, 1, w, x, c->a.repeats, 1, r->ph, &r->g, &r->paired,
                                   NULL)))
        goto out;
    r->kept = p.plan->n_entries;
    r->flops = 4.0 * c->sh->d * c->sh->f * (double)r->kept;
    r->share = (r->ph[MOE_PHASE_ROUTE].median + r->ph[MOE_PHASE_DISPATCH].median +
                r->ph[MOE_PHASE_COMBINE].median) / r->ph[MOE_PHASE_TOTAL].median;
    printf("\n== layer %s: %s k=%d, E=%d, n=%d, d=%d, f=%d, cf=%s, C=%ld, kept %zu of %ld "
           "claims, %d repeats ==\n", cfg->name, cfg->router, cfg->k, cfg->E, n, c->sh->d,
           c->sh->f, BENCH_CF, p.C, r->kept, p.plan->n_claims, c->a.repeats);
    print_phases(r);
    print_gemm(c, r);
    if ((rc = naive_check(&p, w, x, c->sh->check_tokens, &r->naive_err)))
        goto out;
    int nt = c->sh->check_tokens > 0 && c->sh->check_tokens < n ? c->sh->check_tokens : n;
    int ok = r->naive_err < NAIVE_TOL;
    printf("check: layer output vs naive double reference on %d tokens: rel L2 %.2e (%s)\n", nt,
           r->naive_err, ok ? "ok" : "DISAGREE");
    if (!ok)
        c->failures++;
    if ((rc = bench_padded_measure(c, cfg, w, x, &p, r->ph, r->pad)))
        goto out;
    if ((rc = bench_torch_measure(c, cfg, w, x, &p, &r->tr)))
        goto out;
    print_torch(c, r);
    if (r->tr.available && !(r->tr.rel_l2[0] < TORCH_TOL && r->tr.rel_l2[1] < TORCH_TOL))
        c->failures++;
    fflush(stdout);
    rc = store_cfg(c, r);
out:
    bench_point_free(&p);
    return rc;
}

/* ---- n-scaling and memory (first configuration) ---- */

/* Each phase's time per token at each n, and over its smallest value across n: which phase
 * makes the time per token move with n. */
static void print_scaling_phases(const scale_result *sr, int nscale, int E)
{
    double best[MOE_NPHASES];
    for (int ph = 0; ph < MOE_NPHASES; ph++) {
        best[ph] = INFINITY;
        for (int i = 0; i < nscale; i++)
            best[ph] = fmin(best[ph], sr[i].phase[ph]);
    }
    printf("%7s %9s", "n", "rows/exp");
    for (int ph = 0; ph < MOE_NPHASES; ph++)
        printf(" %15s", phase_name(ph));
    printf("\n%7s %9s", "", "");
    for (int ph = 0; ph < MOE_NPHASES; ph++)
        printf(" %15s", "us/tok (/min)");
    printf("\n");
    for (int i = 0; i < nscale; i++) {
        printf("%7d %9.0f", sr[i].n, (double)sr[i].kept / E);
        for (int ph = 0; ph < MOE_NPHASES; ph++)
            printf(" %7.3f (%5.2f)", 1e6 * sr[i].phase[ph], sr[i].phase[ph] / best[ph]);
        printf("\n");
    }
}

static int bench_scaling(bench_ctx *c, const bench_cfg *cfg, const bench_weights *w,
                         const float *x, scale_result *sr)
{
    const bench_shape *sh = c->sh;
    size_t D = (size_t)sh->d, F = (size_t)sh->f, E = (size_t)cfg->E;
    printf("\n== scaling %s: n from %d to %d tokens ==\n", cfg->name, sh->scale_n[0],
           sh->scale_n[sh->nscale - 1]);
    /* every n allocated first, then timed in rounds (bench_points_measure) */
    layer_point p[BENCH_NSCALE];
    bench_stat stv[BENCH_NSCALE * MOE_NPHASES];
    gemm_ref g[BENCH_NSCALE];
    const int R = c->a.repeats;
    double *lay = malloc((size_t)sh->nscale * (size_t)R * sizeof *lay);
    int np = 0, rc = lay ? MOE_OK : moe_fail(MOE_ENOMEM, NULL, "out of memory (timings)");
    while (!rc && np < sh->nscale && !(rc = bench_point_alloc(cfg, w, sh->scale_n[np], 0, &p[np])))
        np++;
    if (!rc)
        rc = bench_points_measure(p, np, w, x, R, 0, stv, g, NULL, lay);
    bench_stat rounds = bench_stat_one(NAN); /* each round's slowest per token over its fastest */
    for (int r = 0; !rc && r < R; r++) {
        double lo = INFINITY, hi = 0.0;
        for (int i = 0; i < np; i++) {
            const double t = lay[(size_t)i * R + r] / sh->scale_n[i];
            lo = fmin(lo, t), hi = fmax(hi, t);
        }
        lay[r] = hi / lo; /* (row r of point 0, read above, is no longer needed) */
    }
    if (!rc)
        rounds = bench_stat_of(lay, R);
    free(lay);
    for (int i = 0; i < np && !rc; i++) {
        const int n = sh->scale_n[i];
        const bench_stat *st = stv + (size_t)i * MOE_NPHASES;
        const moe_layer *L = moe_pipeline_layer(p[i].pipe);
        sr[i] = (scale_result){n, p[i].C, p[i].plan->n_entries, st[MOE_PHASE_TOTAL],
                               st[MOE_PHASE_EXPERTS], {0}, st[MOE_PHASE_TOTAL].median / n,
                               g[i].grouped.median,
                               moe_layer_workspace_bytes(L) - moe_layer_packed_bytes(L),
                               moe_layer_packed_bytes(L)};
        for (int ph = 0; ph < MOE_NPHASES; ph++)
            sr[i].phase[ph] = st[ph].median / n;
        row_key rk = {"scaling", cfg->router, cfg->E, cfg->k, n, p[i].C, p[i].plan->n_entries};
        double nd_ecd = 4.0 * ((double)n * (double)D + (double)E * (double)p[i].C * (double)D);
        for (int ph = 0; ph < MOE_NPHASES && !rc; ph++) {
            char m[32];
            snprintf(m, sizeof m, "time_%s", phase_name(ph));
            rc = db_put(c, &rk, m, "s", st[ph]);
        }
        if (!rc)
            rc = db_put(c, &rk, "time_grouped_gemm_pair", "s", g[i].grouped);
        if (!rc)
            rc = db_put(c, &rk, "time_per_token", "s", bench_stat_one(sr[i].per_token));
        if (!rc)
            rc = db_put(c, &rk, "workspace_bytes", "B", bench_stat_one((double)sr[i].ws_bytes));
        if (!rc)
            rc = db_put(c, &rk, "packed_weight_bytes", "B",
                        bench_stat_one((double)sr[i].packed_bytes));
        if (!rc)
            rc = db_put(c, &rk, "ratio_workspace_vs_nd_ECd", "1",
                        bench_stat_one((double)sr[i].ws_bytes / nd_ecd));
    }
    for (int i = 0; i < np; i++)
        bench_point_free(&p[i]);
    if (rc)
        return rc;
    double best = INFINITY, gbest = INFINITY;
    for (int i = 0; i < sh->nscale; i++) {
        best = fmin(best, sr[i].per_token);
        gbest = fmin(gbest, sr[i].grouped / sr[i].n);
    }
    printf("%7s %6s %10s %9s %6s %13s %6s %9s %10s %9s %11s\n", "n", "C", "layer ms",
           "us/token", "/best", "GEMMs us/tok", "/best", "GEMM GF/s", "workspace", "ws/4(nd+",
           "one-hot nEC");
    printf("%7s %6s %10s %9s %6s %13s %6s %9s %10s %9s %11s\n", "", "", "", "", "", "(grouped)",
           "", "", "MB", "ECd)", "MB");
    for (int i = 0; i < sh->nscale; i++) {
        double n = sr[i].n, C = (double)sr[i].C, gt = sr[i].grouped / n;
        printf("%7d %6ld %10.2f %9.3f %6.3f %13.3f %6.3f %9.1f %10.1f %9.3f %11.1f\n", sr[i].n,
               sr[i].C, 1e3 * sr[i].layer.median, 1e6 * sr[i].per_token, sr[i].per_token / best,
               1e6 * gt, gt / gbest,
               gflops(4.0 * (double)D * (double)F * (double)sr[i].kept, sr[i].grouped),
               (double)sr[i].ws_bytes / 1048576.0,
               (double)sr[i].ws_bytes / (4.0 * (n * (double)D + (double)E * C * (double)D)),
               4.0 * n * (double)E * C / 1048576.0);
    }
    printf("(GEMMs: the expert GEMM pair alone, grouped per expert as the layer runs it; "
           "workspace: the layer's own buffers, E*C rows of expert input, hidden (F = %zu) and "
           "output; x and y are the caller's)\n", F);
    printf("(not in workspace: the expert weights packed in the GEMM kernels' layout, %.1f MB "
           "at every n, a copy of the weights)\n", (double)sr[0].packed_bytes / 1048576.0);
    printf("(time per token round by round, the slowest n's over the fastest n's in the same "
           "round: median %.3f, min..max %.3f..%.3f)\n", rounds.median, rounds.min, rounds.max);
    print_scaling_phases(sr, sh->nscale, (int)E);
    return MOE_OK;
}

/* ---- targets ---- */

/* --quick measures small shapes: the targets apply to the full run, so a value below one is
 * "below" there, never "MISSED". */
static int targets_quick;

static const char *verdict(int met)
{
    return met ? "met" : targets_quick ? "below (the target applies to the full run)" : "MISSED";
}

static void print_targets(const bench_ctx *c, const cfg_result *res, int ncfg,
                          const scale_result *sr, int nscale)
{
    targets_quick = c->a.quick;
    printf("\n== targets ==\n");
    if (targets_quick)
        printf("(--quick: small shapes, for a smoke run; the targets apply to the full run,"
               " `moesim bench` without --quick)\n");
    for (int i = 0; i < ncfg; i++) {
        const cfg_result *r = &res[i];
        double ge = gflops(r->flops, r->ph[MOE_PHASE_EXPERTS].median);
        double gd = gflops(r->flops, r->g.dense.median), gg = gflops(r->flops, r->g.grouped.median);
        printf("%-6s experts/dense GEMM pair        %6.3f  (>= 0.90)  %s\n", r->cfg->name, ge / gd,
               verdict(ge / gd >= 0.9));
        printf("%-6s route+dispatch+combine share   %5.2f%%  (<= 5%%)    %s\n", r->cfg->name,
               100.0 * r->share, verdict(r->share <= 0.05));
        if (r->tr.available) {
            double x = torch_rounds_ratio(&r->tr), x1 = torch_table_ratio(r);
            printf("%-6s layer vs fastest PyTorch       %5.2fx  (>= 1.3x)  %s (in rounds; "
                   "timed apart: %.2fx)\n", r->cfg->name, x, verdict(x >= 1.3), x1);
        } else {
            printf("%-6s layer vs fastest PyTorch       not measured (%s)\n", r->cfg->name,
                   r->tr.note);
        }
        /* what OpenBLAS itself allows on these shapes, to tell its limits from the layer's */
        printf("%-6s   OpenBLAS: one dense pair %.0f GFLOP/s (%.0f%% of peak), the pair grouped "
               "per expert (%.0f rows each on average) %.0f (%.0f%%); expert phase %.0f = %.2f "
               "of grouped\n", r->cfg->name, gd, 100.0 * gd / c->a.peak,
               (double)r->kept / r->cfg->E, gg, 100.0 * gg / c->a.peak, ge, ge / gg);
    }
    if (nscale > 0) {
        double lo = INFINITY, hi = 0.0, wlo = INFINITY, whi = 0.0;
        for (int i = 0; i < nscale; i++) {
            lo = fmin(lo, sr[i].per_token);
            hi = fmax(hi, sr[i].per_token);
            double w = (double)sr[i].ws_bytes /
                       (4.0 * ((double)sr[i].n * c->sh->d +
                               (double)res[0].cfg->E * (double)sr[i].C * c->sh->d));
            wlo = fmin(wlo, w);
            whi = fmax(whi, w);
        }
        double glo = INFINITY, ghi = 0.0;
        int worst = 0, gworst = 0; /* the slowest n per token: the layer's, the GEMM pair's */
        for (int i = 0; i < nscale; i++) {
            double gt = sr[i].grouped / sr[i].n;
            glo = fmin(glo, gt);
            ghi = fmax(ghi, gt);
            if (sr[i].per_token > sr[worst].per_token)
                worst = i;
            if (gt > sr[gworst].grouped / sr[gworst].n)
                gworst = i;
        }
        printf("scaling time per token max/min n=%d..%d  %6.3f  (<= 1.10)  %s\n", sr[0].n,
               sr[nscale - 1].n, hi / lo, verdict(hi / lo <= 1.10));
        if (hi / lo > 1.10)
            printf("         the layer slowest at n=%d; the GEMM pair alone, grouped per expert: "
                   "max/min %.3f per token, slowest at n=%d (%.0f rows per expert on average)\n",
                   sr[worst].n, ghi / glo, sr[gworst].n,
                   (double)sr[gworst].kept / res[0].cfg->E);
        /* an O(n*E*C) term would grow this ratio with n (64x from 1k to 64k tokens) */
        printf("memory workspace / 4(n*d + E*C*d) stays in %.2f..%.2f over n  %s\n", wlo, whi,
               verdict(whi / wlo <= 1.5));
    }
}

/* ---- the command ---- */

static void usage(FILE *out)
{
    fprintf(out,
            "usage: moesim bench [--quick] [--repeats N] [--threads N] [--db PATH] [--no-torch]\n"
            "                    [--python PATH] [--torch-script PATH] [--peak-gflops X]\n"
            "                    [--seed S] [--config LIST]\n"
            "Measures the MoE layer forward (gate, route, dispatch, experts, combine) on\n"
            "E=16 k=2 (topk), E=64 k=1 (switch), E=8 k=2 (topk) with n=8192 tokens, d=512,\n"
            "f=2048, cf=1.25, fp32: median and spread of each phase, tokens/s, the expert phase's\n"
            "GFLOP/s against a dense sgemm pair of the same useful FLOPs and the fp32 peak, the\n"
            "n-scaling from 1k to 64k tokens, the layer's memory, and PyTorch (per-expert loop\n"
            "and one-hot einsum styles, 1 and 2 threads) on the same inputs when torch imports.\n"
            "Results go to the table `bench` of the database. Run it as `make bench`, which\n"
            "unsets OPENBLAS_CORETYPE so that OpenBLAS picks its own (AVX-512) kernels.\n"
            "  --quick            small shapes (n=1024, d=64, f=256) for a smoke run\n"
            "  --repeats N        timed forwards per measurement after one warm-up (default 7,\n"
            "                     3 with --quick)\n"
            "  --threads N        BLAS threads (default 2)\n"
            "  --db PATH          results database (default results/bench.db)\n"
            "  --no-torch         skip the PyTorch reference\n"
            "  --python PATH      interpreter with numpy and torch (default /usr/bin/python3)\n"
            "  --torch-script P   default sim/bench_torch_moe.py\n"
            "  --peak-gflops X    fp32 peak for the ratios (default 467: measured on the\n"
            "                     reference machine, 2 cores AVX-512)\n"
            "  --seed S           PCG seed of tokens and weights (default 1)\n"
            "  --config LIST      run only these of E16k2,E64k1,E8k2,train (the n-scaling runs\n"
            "                     with E16k2; train: the training step, E=16 k=2 n=4096 d=256\n"
            "                     f=1024, forward + backward + Adam, against a PyTorch training\n"
            "                     loop, sim/bench_torch_train.py, next to --torch-script)\n");
}

static int parse_int(const char *s, const char *flag, int lo, int hi, int *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (!*s || *end || errno || v < lo || v > hi)
        return moe_fail(MOE_EINVAL, NULL, "bad value '%s' for %s: want an integer in %d..%d "
                        "(command line)", s, flag, lo, hi);
    *out = (int)v;
    return MOE_OK;
}

static int parse_args(int argc, char **argv, bench_args *a, int *help)
{
    enum { O_QUICK = 1000, O_REPEATS, O_THREADS, O_DB, O_NOTORCH, O_PYTHON, O_SCRIPT, O_PEAK,
           O_SEED, O_CONFIG, O_HELP };
    static const struct option lo[] = {
        {"quick", no_argument, NULL, O_QUICK},
        {"repeats", required_argument, NULL, O_REPEATS},
        {"threads", required_argument, NULL, O_THREADS},
        {"db", required_argument, NULL, O_DB},
        {"no-torch", no_argument, NULL, O_NOTORCH},
        {"python", required_argument, NULL, O_PYTHON},
        {"torch-script", required_argument, NULL, O_SCRIPT},
        {"peak-gflops", required_argument, NULL, O_PEAK},
        {"seed", required_argument, NULL, O_SEED},
        {"config", required_argument, NULL, O_CONFIG},
        {"help", no_argument, NULL, O_HELP},
        {NULL, 0, NULL, 0},
    };
    optind = 1;
    opterr = 0;
    int c, rc;
    char *end;
    while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
        switch (c) {
        case O_QUICK: a->quick = 1; break;
        case O_REPEATS:
            if ((rc = parse_int(optarg, "--repeats", 1, 1000, &a->repeats)))
                return rc;
            break;
        case O_THREADS:
            if ((rc = parse_int(optarg, "--threads", 1, 1024, &a->threads)))
                return rc;
            break;
        case O_DB: a->db = optarg; break;
        case O_NOTORCH: a->no_torch = 1; break;
        case O_PYTHON: a->python = optarg; break;
        case O_SCRIPT: a->script = optarg; break;
        case O_PEAK:
            a->peak = strtod(optarg, &end);
            if (!*optarg || *end || !(a->peak > 0.0) || !isfinite(a->peak))
                return moe_fail(MOE_EINVAL, NULL, "bad value '%s' for --peak-gflops: want a "
                                "positive number (command line)", optarg);
            break;
        case O_SEED:
            errno = 0;
            a->seed = strtoull(optarg, &end, 10);
            if (!*optarg || *end || *optarg == '-' || errno)
                return moe_fail(MOE_EINVAL, NULL, "bad value '%s' for --seed: want an integer "
                                ">= 0 (command line)", optarg);
            break;
        case O_CONFIG: a->configs = optarg; break;
        case O_HELP: *help = 1; return MOE_OK;
        default:
            return moe_fail(MOE_EINVAL, "`moesim bench --help` lists the flags",
                            "unknown or incomplete flag '%s' (command line)", argv[optind - 1]);
        }
    }
    if (optind < argc)
        return moe_fail(MOE_EINVAL, "`moesim bench --help` lists the flags",
                        "unexpected argument '%s' (command line)", argv[optind]);
    for (const char *q = a->configs; q && *q;) {
        size_t len = strcspn(q, ",");
        int found = len == 5 && !strncmp(q, "train", 5);
        for (int i = 0; i < NCFG; i++)
            found |= strlen(bench_cfgs[i].name) == len && !strncmp(q, bench_cfgs[i].name, len);
        if (!found)
            return moe_fail(MOE_EINVAL, "configurations: E16k2 (with the n-scaling), E64k1, E8k2, "
                            "train",
                            "unknown configuration '%.*s' for --config (command line)",
                            (int)len, q);
        q += len + (q[len] == ',');
    }
    return MOE_OK;
}

int bench_selected(const bench_args *a, const char *name)
{
    if (!a->configs)
        return 1;
    size_t len = strlen(name);
    for (const char *q = a->configs; *q;) {
        size_t l = strcspn(q, ",");
        if (l == len && !strncmp(q, name, len))
            return 1;
        q += l + (q[l] == ',');
    }
    return 0;
}

static void print_provenance(bench_ctx *c)
{
    char line[512];
    moe_blas_info_format(&c->bi, line, sizeof line);
    printf("moesim bench%s: run %s, git %s\n", c->a.quick ? " --quick" : "", c->run_id,
           moe_git_rev());
    printf("BLAS: %s\n", line);
    if (!c->bi.coretype_env[0])
        printf("OPENBLAS_CORETYPE is unset: OpenBLAS picked the %s kernels itself (%d-bit)\n",
               c->bi.core, moe_blas_core_width(c->bi.core));
    else
        printf("OPENBLAS_CORETYPE=%s forces the %s kernels (%d-bit)%s; `make bench` runs without "
               "it\n", c->bi.coretype_env, c->bi.core, moe_blas_core_width(c->bi.core),
               c->bi.cpu_avx512f && !c->bi.core_avx512 ? " on an AVX-512 CPU" : "");
    printf("threads: %d BLAS; layer fp32, GELU tanh; peak for ratios %.0f GFLOP/s\n",
           c->bi.threads, c->a.peak);
    if (moe_gemm_default() == MOE_GEMM_LIBXSMM)
        printf("expert GEMMs: %s on column blocks of %zu; next column block of the weights "
               "prefetched: %s\n", moe_gemm_backend_name(MOE_GEMM_LIBXSMM),
               moe_gemm_block_cols(),
               moe_gemm_prefetches() ? "yes (Intel CPU)" : "no (not an Intel CPU)");
    else
        printf("expert GEMMs: OpenBLAS sgemm per expert (no libxsmm in this build or for this "
               "CPU)\n");
}

int moe_cmd_bench(int argc, char **argv)
{
    bench_ctx c;
    memset(&c, 0, sizeof c);
    c.a = (bench_args){0, 0, 2, 0, "results/bench.db", "/usr/bin/python3",
                       "sim/bench_torch_moe.py", NULL, BENCH_PEAK_GFLOPS, 1};
    for (int i = 1; i < argc; i++) /* the route phase of every router: bench_routing.c */
        if (strcmp(argv[i], "--routing") == 0)
            return moe_bench_routing(argc, argv);
    int help = 0;
    int rc = parse_args(argc, argv, &c.a, &help);
    if (rc)
        return rc;
    if (help) {
        usage(stdout);
        return MOE_OK;
    }
    c.sh = c.a.quick ? &shape_quick : &shape_full;
    if (c.a.repeats == 0)
        c.a.repeats = c.a.quick ? 3 : 7;
    moe_blas_check_coretype(stderr);
    moe_blas_set_threads(c.a.threads);
    moe_blas_info_get(&c.bi);
    if ((rc = bench_open(&c)))
        return rc;
    print_provenance(&c);

    cfg_result res[NCFG];
    scale_result sr[4];
    int nscale = 0;
    bench_weights w = {0};
    float *x = NULL;
    int ncfg = 0;
    for (int i = 0; i < NCFG && !rc; i++) {
        const bench_cfg *cfg = &bench_cfgs[i];
        if (!bench_selected(&c.a, cfg->name))
            continue;
        /* the first configuration also runs the n-scaling: its tokens cover the largest n */
        int nx = c.sh->n;
        if (i == 0)
            for (int s = 0; s < c.sh->nscale; s++)
                if (c.sh->scale_n[s] > nx)
                    nx = c.sh->scale_n[s];
        if ((rc = weights_alloc(&c, cfg->E, &w)) || (rc = tokens_alloc(&c, nx, &x)))
            break;
        rc = bench_config(&c, cfg, &w, x, &res[ncfg]);
        if (!rc)
            ncfg++;
        if (!rc && i == 0) {
            rc = bench_scaling(&c, cfg, &w, x, sr);
            if (!rc)
                nscale = c.sh->nscale;
        }
        weights_free(&w);
        free(x);
        x = NULL;
    }
    weights_free(&w);
    free(x);
    if (!rc && bench_selected(&c.a, "train"))
        rc = bench_train(&c);
    if (rc)
        return bench_close(&c, rc);
    print_targets(&c, res, ncfg, sr, nscale);
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("peak resident memory %.0f MB\n", (double)ru.ru_maxrss / 1024.0);
    if ((rc = bench_close(&c, MOE_OK)))
        return rc;
    if (c.failures)
        return moe_fail(MOE_EINPUT, "the timings are stored; the outputs above marked DISAGREE "
                        "are a correctness bug", "%d output check%s failed (bench)", c.failures,
                        c.failures > 1 ? "s" : "");
    return MOE_OK;
}
