/* soft_moe.c: the Soft MoE router (Puigcerver et al. 2023), docs/routing.md section 3.
 *
 * Logits have M = E*P columns (E = r->E, P = opts.slots_per_expert; moe_router_alloc checks
 * that P divides M); column j is slot (j mod P) of expert (j div P).
 *   dispatch D (T,M) = softmax over tokens, per column
 *   combine  W (T,M) = softmax over all M columns, per token
 * Every (token, column) pair is an entry (t, j/P, j%P, D[t,j], W[t,j]), token-major.
 * Nothing is dropped: plan->dense = 1, capacity = P, assigned_load[e] = P,
 * importance[e] = sum of W over all tokens and e's slots, n_claims = entries = T*M, k = 0.
 * Fills the moe_router_type interface of moe_router_type of moe.h.
 *
 * Three passes over the logits, row by row, on the routers' threads (par.h, rowpass.h), with
 * the values of moe_softmax on each column and each row:
 *   1. each column's maximum m[j] (token ranges, then their maxima), and the finiteness check;
 *   2. each column's sum s[j] of exp(L[t,j] - m[j]) in token order (ranges of columns, so each
 *      sum is the serial loop's);
 *   3. chunks of rows: W by moe_softmax_rows (with each row's logsumexp, kept in the plan for
 *      the z-loss), D[t,j] = exp(L[t,j] - m[j]) / s[j] again, the entries written straight into
 *      the plan, importance summed chunk after chunk in token order.
 * No (T,M) workspace: the exponentials of pass 2 are taken again in pass 3 instead of stored. */
#include "moe.h"
#include "par.h"
#include "rowpass.h"
#include "vexp.h"

#include <stdatomic.h>
#include <stdlib.h>

/* ---- workspace ---- */

enum { SOFT_CHUNK_VALUES = 4096 }; /* logits of one chunk of rows */

typedef struct {
    int rows;     /* rows per chunk */
    double *cmax; /* (MOE_PAR_MAX, M) column maxima of each part's tokens; row 0: of all */
    double *csum; /* (M) column sums */
    double *W;    /* (MOE_ROWPASS_SLOTS, rows, M) combine rows of the chunks in flight */
    double *D;    /* (MOE_ROWPASS_SLOTS, rows, M) their dispatch rows; pass 2: (MOE_PAR_MAX, rows,
                   * M) each thread's exponentials */
} soft_ws;

static void soft_free(moe_router *r)
{
    soft_ws *w = r->ws;
    if (!w)
        return;
    free(w->cmax);
    free(w->csum);
    free(w->W);
    free(w->D);
    free(w);
    r->ws = NULL;
}

static int soft_alloc(moe_router *r)
{
    soft_ws *w = calloc(1, sizeof *w);
    if (!w)
        return moe_fail(MOE_ENOMEM, NULL, "out of memory (router soft_moe workspace)");
    r->ws = w;
    const size_t m = (size_t)r->m;
    w->rows = r->m >= SOFT_CHUNK_VALUES ? 1 : SOFT_CHUNK_VALUES / r->m;
    const int rs = MOE_ROWPASS_SLOTS, pm = MOE_PAR_MAX, slots = rs > pm ? rs : pm;
    const size_t part = (size_t)slots * (size_t)w->rows * m;
    w->cmax = malloc((size_t)MOE_PAR_MAX * m * sizeof *w->cmax);
    w->csum = malloc(m * sizeof *w->csum);
    w->W = malloc(part * sizeof *w->W);
    w->D = malloc(part * sizeof *w->D);
    if (!w->cmax || !w->csum || !w->W || !w->D) {
        soft_free(r);
        return moe_fail(MOE_ENOMEM, NULL, "out of memory (soft_moe workspace for %d columns)",
                        r->m);
    }
    return MOE_OK;
}

/* ---- routing ---- */

typedef struct {
    const soft_ws *w;
    const double *L; /* (T,M) */
    moe_plan *plan;
    int n, M, P, np;
    atomic_int nonfinite; /* a part has a non-finite logit */
} soft_job;

/* Pass 1, part i: the column maxima of its tokens (the finite logits' maximum is exact, so
 * that of the parts' maxima is the column's). */
static void soft_colmax(void *ctx, int i, int np)
{
    soft_job *j = ctx;
    const int M = j->M;
    long t0, t1;
    moe_par_range(j->n, i, np, &t0, &t1);
    double *restrict mx = j->w->cmax + (size_t)i * M;
    const double *L = j->L + (size_t)t0 * M;
    if (!moe_all_finite(L, (size_t)(t1 - t0) * M)) {
        atomic_store(&j->nonfinite, 1);
        return;
    }
    for (int c = 0; c < M; c++)
        mx[c] = L[c];
    for (long t = t0 + 1; t < t1; t++) {
        const double *restrict lt = j->L + (size_t)t * M;
        for (int c = 0; c < M; c++)
            mx[c] = lt[c] > mx[c] ? lt[c] : mx[c];
    }
}

/* Pass 2, part i: s[c] = sum over t, in token order, of exp(L[t,c] - m[c]) for its range of
 * columns (blocks of 8), rows a chunk at a time (one vector exponential per chunk). */
static void soft_colsum(void *ctx, int i, int np)
{
    soft_job *j = ctx;
    const int M = j->M, R = j->w->rows;
    long b0, b1;
    moe_par_range((M + 7) / 8, i, np, &b0, &b1);
    const int c0 = (int)b0 * 8, c1 = (int)b1 * 8 < M ? (int)b1 * 8 : M, wd = c1 - c0;
    const double *restrict mx = j->w->cmax;
    double *restrict s = j->w->csum, *restrict d = j->w->D + (size_t)i * R * M;
    for (int c = c0; c < c1; c++)
        s[c] = 0.0;
    for (long t0 = 0; t0 < j->n; t0 += R) {
        const int rows = j->n - t0 < R ? (int)(j->n - t0) : R;
        for (int q = 0; q < rows; q++) {
            const double *restrict lt = j->L + (size_t)(t0 + q) * M + c0;
            for (int c = 0; c < wd; c++)
                d[(size_t)q * wd + c] = lt[c] - mx[c0 + c];
        }
        moe_vexp_shift(d, rows * wd, 0.0, d); /* exp(L - m): (L - m) - 0 is L - m */
        for (int q = 0; q < rows; q++)
            for (int c = 0; c < wd; c++)
                s[c0 + c] += d[(size_t)q * wd + c];
    }
}

static void soft_chunk(const soft_job *j, long ch, long *t0, long *t1)
{
    *t0 = ch * j->w->rows;
    *t1 = *t0 + j->w->rows < j->n ? *t0 + j->w->rows : j->n;
}

/* Pass 3, chunk ch: W rows and logsumexps, D rows, the entries of its tokens. */
static void soft_work(void *ctx, int slot, long ch)
{
    soft_job *j = ctx;
    const int M = j->M, P = j->P;
    long t0, t1;
    soft_chunk(j, ch, &t0, &t1);
    const size_t len = (size_t)(t1 - t0) * M, off = (size_t)slot * j->w->rows * M;
    double *restrict W = j->w->W + off, *restrict D = j->w->D + off;
    const double *restrict L = j->L + (size_t)t0 * M, *restrict mx = j->w->cmax;
    const double *restrict s = j->w->csum;
    moe_softmax_rows(L, (int)(t1 - t0), M, W, j->plan->lse + t0);
    for (size_t o = 0; o < len; o += M)
        for (int c = 0; c < M; c++)
            D[o + c] = L[o + c] - mx[c];
    moe_vexp_shift(D, (int)len, 0.0, D);
    for (long t = t0; t < t1; t++) {
        moe_entry *restrict en = j->plan->entries + (size_t)t * M;
        const size_t o = (size_t)(t - t0) * M;
        for (int e = 0, c = 0; e < M / P; e++)
            for (int q = 0; q < P; q++, c++) {
                en[c].token = (int32_t)t;
                en[c].expert = e;
                en[c].slot = q;
                en[c].dispatch_w = D[o + c] / s[c]; /* as moe_softmax divides: correctly rounded */
                en[c].combine_w = W[o + c];
            }
    }
}

/* Pass 3, chunk ch after every earlier one: importance[j/P] += W[t,j], token by token. */
static void soft_add(void *ctx, int slot, long ch)
{
    soft_job *j = ctx;
    const int M = j->M, P = j->P;
    long t0, t1;
    soft_chunk(j, ch, &t0, &t1);
    const double *W = j->w->W + (size_t)slot * j->w->rows * M;
    double *restrict imp = j->plan->importance;
    for (long t = t0; t < t1; t++) {
        const double *restrict wt = W + (size_t)(t - t0) * M;
        if (P == 1)
            for (int c = 0; c < M; c++)
                imp[c] += wt[c];
        else
            for (int e = 0, c = 0; e < M / P; e++)
                for (int q = 0; q < P; q++, c++)
                    imp[e] += wt[c];
    }
}

/* logits (T,M) -> plan with T*M entries, token-major. */
static int soft_route(moe_router *r, const moe_route_in *in, moe_plan *plan)
{
    soft_ws *w = r->ws;
    const int n = in->n, M = r->m, P = M / r->E;
    int rc;
    plan->k = 0;
    plan->dense = 1;
    plan->capacity = P;
    plan->aux_loss = 0.0;
    if ((rc = moe_plan_reserve(plan, (size_t)n * (size_t)M)) || !moe_plan_lse_buffer(plan))
        return rc ? rc : MOE_ENOMEM;
    const int np = moe_par_parts((long)n * M, 16384);
    soft_job j = {.w = w, .L = in->logits, .plan = plan, .n = n, .M = M, .P = P, .np = np};
    atomic_init(&j.nonfinite, 0);
    moe_par_run(soft_colmax, &j, np);
    if (atomic_load(&j.nonfinite)) /* the first non-finite logit, named as moe_router_route does */
        return moe_logits_check_finite(in->logits, n, M);
    for (int i = 1; i < np; i++) /* the column maxima: of the parts' maxima */
        for (int c = 0; c < M; c++)
            w->cmax[c] = w->cmax[(size_t)i * M + c] > w->cmax[c] ? w->cmax[(size_t)i * M + c]
                                                                 : w->cmax[c];
    const int nb = (M + 7) / 8;
    moe_par_run(soft_colsum, &j, np < nb ? np : nb);
    if ((rc = moe_rowpass_run((n + w->rows - 1) / w->rows, np, soft_work, soft_add, &j)))
        return rc;
    plan->n_entries = (size_t)n * (size_t)M;
    for (int e = 0; e < r->E; e++)
        plan->assigned_load[e] = P;
    plan->n_claims = (long)plan->n_entries;
    plan->lse_of = in->logits;
    return MOE_OK;
}

const moe_router_type moe_router_soft_moe = {
    "soft_moe",
    "Soft MoE (Puigcerver et al. 2023): every token in every slot, dense weights",
    MOE_RF_DENSE | MOE_RF_CHECKS_FINITE,
    1,
    soft_alloc,
    soft_free,
    soft_route,
    NULL,
};
