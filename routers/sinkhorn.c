/* sinkhorn.c: the `sinkhorn` router (Clark et al. 2022, unified scaling laws; Megatron-LM's
 * sinkhorn load balancing), docs/routing.md section 3. Fills moe_router_sinkhorn and owns
 * moe_sinkhorn_balance (sinkhorn.h).
 *
 *   selection  top-k per token of the Sinkhorn-balanced matrix B = diag(d0) exp(L - rowmax)
 *              diag(d1) (columns summing to 1/E, rows to 1/n), run to convergence: the relative
 *              change of the column scalings d1 below opts.sinkhorn_tol (default 1e-9), at most
 *              MOE_SINKHORN_MAX_ITER = 10000 iterations, an error otherwise. The row scaling
 *              does not change a row's order, so the key is K[t,e] * d1[e]; ties to the lower
 *              expert (stable sort).
 *   gate       from the raw logits, as Megatron: sigmoid(L[t,e]) for k = 1; for k > 1 the full
 *              softmax p[t,e] of the chosen experts (not renormalised).
 *   capacity   dropless unless a capacity factor or an explicit capacity is given (then C from
 *              the formula with this k and claims in opts.order through claims.c, with
 *              renormalize as given); opts.dropless forces dropless.
 *   statistics assigned_load and importance from the claims (claims.c), aux_loss = 0.
 * Default k = 1 (Clark et al.'s S-BASE and Megatron's default). Megatron stops at a mean
 * absolute change of d1 below 1e-4 in fp32; moesim uses the stricter relative tolerance above.
 */
#include "moe.h"
#include "claims.h"
#include "par.h"
#include "sinkhorn.h"
#include "vexp.h"

#include <math.h>
#include <stdlib.h>
#if defined(__AVX512F__)
#include <immintrin.h>
#endif

/* ---- balancing ----
 * The serial definition (sinkhorn.h) on the routers' threads, with every sum in its order:
 * K by rows (each row's maximum by moe_vmax, its exponentials by moe_vexp_shift: the C
 * library's exp bit for bit); per iteration, d0 by rows (each row sum over e in order, four rows
 * interleaved so that their sums overlap in the adder), then colsum by column ranges (each
 * column summed over t in order). The values do not depend on the number of threads. */

enum { SK_ROWS = 8 }; /* rows whose sums run together */

typedef struct {
    const double *L;
    int n, E;
    double *K, *d0, *d1, *colsum;
} sk_job;

static void sk_exp_part(void *arg, int i, int np)
{
    sk_job *j = arg;
    long lo, hi;
    moe_par_range(j->n, i, np, &lo, &hi);
    for (long t = lo; t < hi; t++) {
        const double *lt = j->L + (size_t)t * j->E;
        moe_vexp_shift(lt, j->E, moe_vmax(lt, j->E), j->K + (size_t)t * j->E);
    }
}

/* d0[t] = 1 / (n * sum_e K[t,e] d1[e]) for the rows of part i */
static void sk_rows_part(void *arg, int i, int np)
{
    sk_job *j = arg;
    const int E = j->E;
    const double *d1 = j->d1;
    long lo, hi;
    moe_par_range(j->n, i, np, &lo, &hi);
    long t = lo;
    for (; t + SK_ROWS <= hi; t += SK_ROWS) {
        const double *k0 = j->K + (size_t)t * E;
        double s[SK_ROWS] = {0.0};
        for (int e = 0; e < E; e++) {
            const double w = d1[e];
            _Pragma("GCC unroll 8") for (int r = 0; r < SK_ROWS; r++)
                s[r] += k0[(size_t)r * E + e] * w;
        }
        for (int r = 0; r < SK_ROWS; r++)
            j->d0[t + r] = 1.0 / ((double)j->n * s[r]);
    }
    for (; t < hi; t++) {
        const double *kt = j->K + (size_t)t * E;
        double s = 0.0;
        for (int e = 0; e < E; e++)
            s += kt[e] * d1[e];
        j->d0[t] = 1.0 / ((double)j->n * s);
    }
}

/* colsum[e] = sum_t d0[t] K[t,e], t in order, for the columns of part i: blocks of up to
 * SK_COLS columns whose sums stay in registers through all the rows (each a product rounded,
 * then added: the scalar loop's operations, lane by lane). */
enum { SK_COLS = 128 };

static void sk_cols_part(void *arg, int i, int np)
{
    sk_job *j = arg;
    const int E = j->E;
    long e0, e1;
    moe_par_range(E, i, np, &e0, &e1);
    double *cs = j->colsum;
    for (long b = e0; b < e1; b += SK_COLS) {
        const long be = e1 - b < SK_COLS ? e1 : b + SK_COLS;
        long e = b;
#if defined(__AVX512F__)
        if (be - b == SK_COLS) {
            __m512d acc[SK_COLS / 8];
            _Pragma("GCC unroll 16") for (int v = 0; v < SK_COLS / 8; v++)
                acc[v] = _mm512_setzero_pd();
            for (int t = 0; t < j->n; t++) {
                const double *kt = j->K + (size_t)t * E + b;
                const __m512d d = _mm512_set1_pd(j->d0[t]);
                _Pragma("GCC unroll 16") for (int v = 0; v < SK_COLS / 8; v++)
                    acc[v] = _mm512_add_pd(acc[v], _mm512_mul_pd(d, _mm512_loadu_pd(kt + 8 * v)));
            }
            _Pragma("GCC unroll 16") for (int v = 0; v < SK_COLS / 8; v++)
                _mm512_storeu_pd(cs + b + 8 * v, acc[v]);
            e = be;
        }
#endif
        for (long q = e; q < be; q++)
            cs[q] = 0.0;
        for (int t = 0; e < be && t < j->n; t++) {
            const double *kt = j->K + (size_t)t * E, d = j->d0[t];
            for (long q = e; q < be; q++)
                cs[q] += d * kt[q];
        }
    }
}

int moe_sinkhorn_balance(const double *L, int n, int E, double tol, int max_iter, double *K,
                         double *d0, double *d1, double *colsum, int *iters)
{
    sk_job j = {L, n, E, K, d0, d1, colsum};
    const int prow = moe_par_parts((long)n * E, 16384);
    const int pcol = moe_par_parts(E, 32) < prow ? moe_par_parts(E, 32) : prow;
    moe_par_run(sk_exp_part, &j, prow);
    for (int e = 0; e < E; e++)
        d1[e] = 1.0;
    for (int it = 1; it <= max_iter; it++) {
        /* rows: d0[t] = 1 / (n * (K d1)[t]); columns: colsum = K^T d0 */
        moe_par_run(sk_rows_part, &j, prow);
        moe_par_run(sk_cols_part, &j, pcol);
        double delta = 0.0;
        for (int e = 0; e < E; e++) {
            double nd = 1.0 / ((double)E * colsum[e]);
            if (!(colsum[e] > 0.0) || !isfinite(nd))
                return moe_fail(MOE_EINPUT, "logits that differ by more than ~700 within a row "
                                "leave an expert without mass; rescale the logits",
                                "sinkhorn: expert %d gets no mass (column sum %g, iteration %d)",
                                e, colsum[e], it);
            double ch = fabs(nd - d1[e]) / nd;
            if (ch > delta)
                delta = ch;
            d1[e] = nd;
        }
        if (delta < tol) {
            if (iters)
                *iters = it;
            return MOE_OK;
        }
    }
    return moe_fail(MOE_EINPUT, "raise sinkhorn_tol, or check the logits for extreme values",
                    "sinkhorn did not converge to relative tolerance %g in %d iterations "
                    "(sinkhorn_tol)", tol, max_iter);
}

/* ---- workspace ---- */

typedef struct {
    moe_claims *cl;
    double *K;      /* (T,E) exp(L - rowmax) */
    double *d0;     /* (T) row scalings */
    double *d1;     /* (E) column scalings */
    double *colsum; /* (E) scratch */
    double *key;    /* (E) selection key of one token: K[t,e] * d1[e] */
    int iters;      /* iterations of the last balancing */
} sinkhorn_ws;

static void sinkhorn_free(moe_router *r)
{
    sinkhorn_ws *w = r->ws;
    if (!w)
        return;
    moe_claims_free(w->cl);
    free(w->K);
    free(w->d0);
    free(w->d1);
    free(w->colsum);
    free(w->key);
    free(w);
    r->ws = NULL;
}

static int sinkhorn_alloc(moe_router *r)
{
    if (!(r->opts.sinkhorn_tol > 0.0))
        return moe_fail(MOE_EINVAL, NULL, "sinkhorn_tol must be > 0 (got %g)",
                        r->opts.sinkhorn_tol);
    sinkhorn_ws *w = calloc(1, sizeof *w);
    if (!w)
        return moe_fail(MOE_ENOMEM, NULL, "out of memory (router sinkhorn)");
    r->ws = w;
    const size_t n = (size_t)r->n_max, E = (size_t)r->E;
    w->cl = moe_claims_alloc(r->n_max, r->k, r->E, 1);
    w->K = malloc(n * E * sizeof *w->K);
    w->d0 = malloc(n * sizeof *w->d0);
    w->d1 = malloc(E * sizeof *w->d1);
    w->colsum = malloc(E * sizeof *w->colsum);
    w->key = malloc(E * sizeof *w->key);
    if (!w->cl || !w->K || !w->d0 || !w->d1 || !w->colsum || !w->key) {
        sinkhorn_free(r);
        return moe_fail(MOE_ENOMEM, "use fewer tokens per routing group",
                        "out of memory (sinkhorn workspace for %d tokens x %d experts)",
                        r->n_max, r->E);
    }
    return MOE_OK;
}

/* ---- routing ---- */

/* Token t of logits lt (E) and softmax pt (E): its k experts by the key K[t,e] d1[e] (into the
 * scratch key (E)), gate sigmoid(L) for k = 1, else p. */
static void sinkhorn_token(sinkhorn_ws *w, int t, const double *lt, const double *pt,
                           double *key)
{
    moe_claims *cl = w->cl;
    const int E = cl->E, k = cl->K;
    const double *kt = w->K + (size_t)t * E;
    for (int e = 0; e < E; e++)
        key[e] = kt[e] * w->d1[e];
    moe_claims_topk(key, E, k, cl->expert + (size_t)t * k, cl->gate + (size_t)t * k);
    for (int j = 0; j < k; j++) {
        const size_t i = (size_t)t * k + j;
        const int e = cl->expert[i];
        cl->gate[i] = k == 1 ? 1.0 / (1.0 + exp(-lt[e])) : pt[e];
        cl->claim[i] = 1;
    }
}

enum { SK_ROW_MAX = 4096 }; /* experts whose key row fits on a thread's stack */

/* The rows pass's per-token work (E <= SK_ROW_MAX): the key on the calling thread's stack. */
static void sinkhorn_row(void *ctx, int t, const double *lt, const double *pt)
{
    double key[SK_ROW_MAX];
    sinkhorn_token(ctx, t, lt, pt, key);
}

static int sinkhorn_route(moe_router *r, const moe_route_in *in, moe_plan *plan)
{
    sinkhorn_ws *w = r->ws;
    moe_claims *cl = w->cl;
    const moe_route_opts *o = &r->opts;
    const int n = in->n, E = r->E, k = r->k;
    int rc = moe_sinkhorn_balance(in->logits, n, E, o->sinkhorn_tol, MOE_SINKHORN_MAX_ITER,
                                  w->K, w->d0, w->d1, w->colsum, &w->iters);
    if (rc)
        return rc;
    /* the selection in the softmax's rows pass; p kept for orders bpr and probs, or for the
     * serial selection of rows too long for the stack */
    const int on_rows = E <= SK_ROW_MAX;
    if (on_rows)
        moe_claims_scratch_p(cl, o->order);
    else
        cl->keep_p = 1;
    cl->stats_in_rows = on_rows; /* the rows leave their claims final */
    if ((rc = moe_claims_rows(cl, in->logits, n, on_rows ? sinkhorn_row : NULL, w, plan)))
        return rc;
    for (int t = 0; !on_rows && t < n; t++)
        sinkhorn_token(w, t, in->logits + (size_t)t * E, cl->p + (size_t)t * E, w->key);
    const int limited = !o->dropless && (o->cf_set || o->capacity >= 0);
    long C = 0;
    if (limited && (rc = moe_capacity(o, k, n, E, &C)))
        return rc;
    cl->rts_u = in->rts_u; /* order rts */
    if ((rc = moe_claims_resolve(cl, n, o->order, C, !limited, o->renormalize, plan)))
        return rc;
    plan->aux_loss = 0.0;
    return MOE_OK;
}

const moe_router_type moe_router_sinkhorn = {
    "sinkhorn",
    "Sinkhorn-balanced top-k (Clark 2022, Megatron), converged to sinkhorn_tol (1e-9 rel.)",
    MOE_RF_HAS_DROPLESS,
    1,
    sinkhorn_alloc,
    sinkhorn_free,
    sinkhorn_route,
    NULL,
};
