/* topk.c: the `topk` router (Shazeer et al. 2017, noisy top-k gating), docs/routing.md section 3.
 * Fills moe_router_topk: the k largest logits per token (ties to the lower expert), gate =
 * softmax over those k logits only; optional gate noise noise_std * N(0,1) added to every logit
 * before selection (the gate then uses the noisy logits, KeepTopK(H(x)) then softmax);
 * capacity with this k; aux_loss = E/(k*n) * sum_e assigned_e * mean_t p[t,e] with p the full
 * softmax of the un-noised logits (also the p of orders bpr and probs). */
#include "moe.h"
#include "claims.h"
#include "score.h"
#include "select.h"

#include "vexp.h"

#if defined(__AVX512F__) || defined(__AVX2__)
#include <immintrin.h>
#endif
#include <gsl/gsl_randist.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

enum { TOPK_GATES_BUF = 512 }; /* values whose exponentials topk_gates takes in one call */

typedef struct {
    moe_claims *cl;
    moe_score_cfg sc;    /* the score path (score.h); sc.is_default: softmax over the k logits */
    moe_score_tmp *tmp;  /* its scratch, when not the default */
} topk_ws;

/* ---- workspace ---- */

static void topk_free(moe_router *r)
{
    topk_ws *w = r->ws;
    if (!w)
        return;
    moe_claims_free(w->cl);
    moe_score_tmp_free(w->tmp);
    free(w);
    r->ws = NULL;
}

static int topk_alloc(moe_router *r)
{
    topk_ws *w = calloc(1, sizeof *w);
    if (!w)
        return moe_fail(MOE_ENOMEM, NULL, "out of memory (router topk)");
    r->ws = w;
    int rc = moe_score_setup(&w->sc, &r->opts, r->k, r->E, MOE_SCORE_SOFTMAX, 1, "topk");
    if (rc) {
        topk_free(r);
        return rc;
    }
    w->cl = moe_claims_alloc(r->n_max, r->k, r->E, 1);
    if (!w->sc.is_default && !(w->tmp = moe_score_tmp_alloc(&w->sc, r->n_max))) {
        topk_free(r);
        return MOE_ENOMEM;
    }
    if (!w->cl) {
        topk_free(r);
        return moe_fail(MOE_ENOMEM, NULL, "out of memory (router topk, %d tokens)", r->n_max);
    }
    return MOE_OK;
}

/* ---- routing ---- */

/* The gates of a router built with MOESIM_PERTURB_TOPK (test build only: Makefile
 * $(B)/moesim-perturb, tests/t_regression.sh): a deliberately perturbed router, its first gate
 * nudged by 1e-3, that `moesim compare` must catch. */
static void topk_perturb(double *gate)
{
#ifdef MOESIM_PERTURB_TOPK
    gate[0] += 1e-3;
#else
    (void)gate;
#endif
}

/* Token t's k largest of row (E), ties to the lower expert: expert[t*k..] and gate[t*k..] =
 * the selected values, and with soft their softmax in place (else topk_gates takes it for the
 * chunk). in_rows: row is token t's logits inside the rows pass (its maximum is known). */
static void topk_select(moe_claims *cl, int t, const double *row, int in_rows, int soft)
{
    const int k = cl->K;
    const size_t i0 = (size_t)t * k;
    double *sv = cl->gate + i0; /* the selected values, then their softmax in place */
    if (k == 2 && in_rows && moe_claims_top2_row(cl, t, row, cl->expert + i0,
                                                 cl->expert + i0 + 1)) {
        sv[0] = row[cl->expert[i0]];
        sv[1] = row[cl->expert[i0 + 1]];
    } else if (k <= 2 && in_rows) { /* the first index of the maximum, then of the rest's */
        cl->expert[i0] = moe_claims_argmax_row(cl, t, row);
        sv[0] = row[cl->expert[i0]];
        if (k == 2) {
            cl->expert[i0 + 1] = moe_claims_argmax(row, cl->E, cl->expert[i0]);
            sv[1] = row[cl->expert[i0 + 1]];
        }
    } else {
        moe_claims_topk(row, cl->E, k, cl->expert + i0, sv);
    }
    if (soft) {
        moe_softmax(sv, k, sv);
        topk_perturb(sv);
    }
    for (int j = 0; j < k; j++)
        cl->claim[i0 + j] = 1;
}

/* The rows pass's ctx for topk_row and topk_gates: the workspace and the logits, whose rows
 * topk_gates selects from a chunk at a time when chunk_select is set. */
typedef struct {
    moe_claims *cl;
    const double *logits;
    int chunk_select;
} topk_rows_ctx;

/* Whether the chunk's rows are selected before their softmax (topk_select_chunk) rather than by
 * topk_row per token after it: k from 3 to 8 (moe_claims_topk_rows, four rows at a time up to
 * 64 experts, one at a time with the next rows prefetched above; the softmax then takes each
 * row's maximum from the selection and tells the metrics where the choices are p's top k, and
 * the gates are the pass's exponentials), k = 2 from 48 to 64 experts (the same selection in
 * registers, which spares the softmax each row's maximum and the per-token scans for the two
 * largest; measured against topk_row, two threads: 7-10% faster at 64 experts, 3% at 48 and
 * 56, the same at 40, slower at 32 (2%), 16 (20%) and 128 (1%)), and k = 2 on rows of eight
 * (topk_top2_8, one loop without a call per token); other rows with k = 1, 2 take the row's
 * maximum from the rows pass in topk_row. */
static int topk_chunk_select(const moe_claims *cl)
{
    return (cl->K >= 3 && cl->K <= 8) ||
           (cl->K == 2 && (cl->E == 8 || (cl->E >= 48 && cl->E <= 64)));
}

/* The two largest of each row of eight logits of tokens [t0, t1), as topk_select takes them in
 * the rows pass, and their exponentials exp(v - v0) (v0 the row's first choice, its maximum):
 * the softmax has left them in expert and gate (claims.h top2_rows) but for the rows it
 * declined (a NaN), which topk_select scans and whose exponentials are taken here, as
 * moe_softmax_pairs takes them. */
static void topk_top2_8(moe_claims *cl, const double *logits, long t0, long t1)
{
    for (long t = t0; t < t1; t++)
        if (cl->expert[(size_t)t * 2] < 0) {
            topk_select(cl, (int)t, logits + (size_t)t * 8, 1, 0);
            double *g = cl->gate + (size_t)t * 2;
            g[1] = exp(g[1] - g[0]);
            g[0] = exp(g[0] - g[0]);
        }
    memset(cl->claim + (size_t)t0 * 2, 1, (size_t)(t1 - t0) * 2);
}

static void topk_row(void *ctx, int t, const double *lt, const double *pt)
{
    (void)pt;
    const topk_rows_ctx *x = ctx; /* (with chunk_select, topk_gates selects for the chunk) */
    moe_claims *cl = x->cl;
    topk_select(cl, t, lt, 1, cl->K > TOPK_GATES_BUF);
}

/* rows_select of the rows pass (chunk selection, k >= 3): the k largest logits of each token
 * of [t0, t1), by rank, into expert (their values into gate, which the softmax then replaces
 * by their exponentials), every choice claiming. */
static void topk_select_chunk(void *ctx, long t0, long t1)
{
    const topk_rows_ctx *x = ctx;
    moe_claims *cl = x->cl;
    const int k = cl->K;
    moe_claims_topk_rows(x->logits + (size_t)t0 * cl->E, t1 - t0, cl->E, k,
                         cl->expert + (size_t)t0 * k, cl->gate + (size_t)t0 * k);
    memset(cl->claim + (size_t)t0 * k, 1, (size_t)(t1 - t0) * k);
}

/* g[j] = e[j] / s for j < k, eight at a time, without AVX-512 four (each quotient correctly
 * rounded, as one at a time). */
static void topk_div(double *g, const double *e, int k, double s)
{
    int j = 0;
#if defined(__AVX512F__)
    for (; j + 8 <= k; j += 8)
        _mm512_storeu_pd(g + j, _mm512_div_pd(_mm512_loadu_pd(e + j), _mm512_set1_pd(s)));
#elif defined(__AVX2__)
    for (; j + 4 <= k; j += 4)
        _mm256_storeu_pd(g + j, _mm256_div_pd(_mm256_loadu_pd(e + j), _mm256_set1_pd(s)));
#endif
    for (; j < k; j++)
        g[j] = e[j] / s;
}

/* rows_chunk of the rows pass (k <= TOPK_GATES_BUF): the gates of tokens [t0, t1) from the
 * selected values topk_row left in gate (descending, so each token's first is its maximum):
 * the softmax of each token's values exactly as moe_softmax computes it (exp(v - max), summed
 * in rank order, each divided by the sum), with the exponentials of up to TOPK_GATES_BUF
 * values in one call of the vector exponential (the C library's values, vexp.h) instead of
 * one call per token. With chunk selection, gate holds those exponentials already, from the
 * rows pass's softmax (rows_select for k >= 3, its top-2 at k = 2): the row's maximum is the
 * first value, so the softmax took the same exp of the same differences. */
static void topk_gates(void *ctx, long t0, long t1, const double *p, int part)
{
    (void)p, (void)part;
    const topk_rows_ctx *x = ctx;
    moe_claims *cl = x->cl;
    const int k = cl->K, per = TOPK_GATES_BUF / k; /* tokens per call */
    double e[TOPK_GATES_BUF];
    if (x->chunk_select && k == 2) { /* the softmax's exponentials: divide, four pairs a vector */
        if (cl->E == 8)
            topk_top2_8(cl, x->logits, t0, t1);
        moe_pairs_div(cl->gate + (size_t)t0 * 2, t1 - t0);
        for (long t = t0; t < t1; t++)
            topk_perturb(cl->gate + (size_t)t * 2);
        return;
    } else if (x->chunk_select) { /* the exponentials, from the softmax: sum and divide */
        for (long t = t0; t < t1; t++) {
            double *g = cl->gate + (size_t)t * k, s = 0.0;
            for (int j = 0; j < k; j++) /* in rank order, as moe_softmax adds them */
                s += g[j];
            topk_div(g, g, k, s);
            topk_perturb(g);
        }
        return;
    }
    for (long t = t0; k == 1 && t < t1; t++) { /* exp(v - v) / exp(v - v): 1 for a finite v */
        cl->gate[t] = (cl->gate[t] - cl->gate[t]) + 1.0;
        topk_perturb(cl->gate + t);
    }
    if (k == 2) { /* eight pairs at a time, in place */
        moe_softmax_pairs(cl->gate + (size_t)t0 * 2, t1 - t0);
        for (long t = t0; t < t1; t++)
            topk_perturb(cl->gate + (size_t)t * 2);
        return;
    }
    for (long a = t0; k > 1 && a < t1; a += per) {
        const long b = a + per < t1 ? a + per : t1;
        double *g = cl->gate + (size_t)a * k;
        for (long q = 0; q < (b - a) * k; q += k) /* v - max, as moe_softmax subtracts it */
            for (int j = 0; j < k; j++)
                e[q + j] = g[q + j] - g[q];
        moe_vexp_shift(e, (int)((b - a) * k), 0.0, e);
        for (long q = 0; q < (b - a) * k; q += k) {
            double s = 0.0;
            for (int j = 0; j < k; j++) /* in rank order, as moe_softmax adds them */
                s += e[q + j];
            topk_div(g + q, e + q, k, s);
            topk_perturb(g + q);
        }
    }
}

/* The score path (score.h) for token t of logits lt (E); pt (E) = their softmax or NULL. */
static void topk_score_select(topk_ws *w, int t, const double *lt, const double *pt)
{
    moe_claims *cl = w->cl;
    const int k = cl->K;
    const size_t i0 = (size_t)t * k;
    double *st = w->tmp->s + (size_t)t * cl->E;
    moe_score_apply(w->sc.score, lt, pt, cl->E, st);
    moe_score_token(&w->sc, w->tmp, t, st, NULL, cl->expert + i0, cl->gate + i0);
    for (int j = 0; j < k; j++)
        cl->claim[i0 + j] = 1;
}

static void topk_score_row(void *ctx, int t, const double *lt, const double *pt)
{
    topk_score_select(ctx, t, lt, pt);
}

static int topk_route(moe_router *r, const moe_route_in *in, moe_plan *plan)
{
    topk_ws *w = r->ws;
    moe_claims *cl = w->cl;
    const int n = in->n, E = r->E;
    const double sd = r->opts.noise_std;
    if (sd > 0.0 && !in->rng)
        return moe_fail(MOE_EINVAL, "give a seed for the gate noise",
                        "topk with noise_std %g needs a random generator (noise_std)", sd);
    /* p of the un-noised logits; without noise the selection runs in the same pass */
    const int dflt = w->sc.is_default;
    moe_claims_scratch_p(cl, r->opts.order); /* p only for orders bpr, probs */
    cl->stats_in_rows = 1; /* the rows leave their claims final (when there is no noise) */
    if (dflt && !(sd > 0.0)) { /* each row's k largest logits by rank, ties to the lower */
        plan->rows_topk = cl->expert;
        plan->rows_topk_k = cl->K;
    }
    cl->rows_chunk = dflt && cl->K <= TOPK_GATES_BUF ? topk_gates : NULL;
    topk_rows_ctx x = {cl, in->logits, cl->rows_chunk && topk_chunk_select(cl)};
    cl->top2_rows = x.chunk_select && cl->K == 2 && E == 8 && !(sd > 0.0);
    cl->rows_select =
        x.chunk_select && !cl->top2_rows && !(sd > 0.0) ? topk_select_chunk : NULL;
    /* k = 1: the first index of the maximum with its probability, which topk_gates then
     * turns into the softmax of that one value, 1 (for a finite row) */
    const moe_claims_row_fn per_row = sd > 0.0       ? NULL
                                      : !dflt        ? topk_score_row
                                      : x.chunk_select ? moe_claims_row_chunk
                                      : cl->K == 1 && cl->rows_chunk ? moe_claims_row_first
                                                                     : topk_row;
    int rc = moe_claims_rows(cl, in->logits, n, per_row, dflt ? (void *)&x : (void *)w, plan);
    plan->rows_topk = NULL;
    cl->rows_chunk = NULL;
    cl->rows_select = NULL;
    cl->top2_rows = 0;
    if (rc)
        return rc;
    /* the noisy logits go into the plan's own buffer, for the metrics (plan->noisy_logits) */
    double *noisy = sd > 0.0 ? moe_plan_noisy_buffer(plan) : NULL;
    if (sd > 0.0 && !noisy)
        return MOE_ENOMEM;
    for (int t = 0; sd > 0.0 && t < n; t++) {
        /* row (E) = logits[t,:] + noise, drawn in token then expert order, into the plan */
        const double *lt = in->logits + (size_t)t * E;
        double *row = noisy + (size_t)t * E;
        for (int e = 0; e < E; e++)
            row[e] = lt[e] + sd * gsl_ran_gaussian_ziggurat(in->rng, 1.0);
        if (dflt)
            topk_select(cl, t, row, 0, 1);
        else /* the scores of the noisy logits */
            topk_score_select(w, t, row, NULL);
    }
    plan->noise_std = sd;
    cl->rts_u = in->rts_u; /* order rts */
    return moe_claims_finish(cl, &r->opts, n, MOE_CLAIMS_AUX_ASSIGNED, plan);
}

const moe_router_type moe_router_topk = {
    "topk",
    "noisy top-k gating (Shazeer 2017): softmax over the k largest logits",
    MOE_RF_USES_RNG | MOE_RF_HAS_DROPLESS | MOE_RF_CHECKS_FINITE,
    2,
    topk_alloc,
    topk_free,
    topk_route,
    NULL,
};
