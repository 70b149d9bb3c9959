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
#include "route_memo.h"
#include "sinkhorn.h"
#include "vexp.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#if defined(__AVX512F__) || defined(__AVX2__)
#include <immintrin.h>
#endif
#if defined(__AVX2__)
#include "cols4.h"
#endif

/* ---- balancing ----
 * The serial definition (sinkhorn.h) on the routers' threads, with every sum in its order, in
 * one sweep over K per iteration. The sweep goes through row blocks of about SK_BLOCK_BYTES;
 * a block's rows are cut into one piece per thread:
 *   row task (b, h)     d0 of the rows of piece h of block b (in the first iteration K of those
 *                       rows first: each row's maximum by moe_vmax, its exponentials by
 *                       moe_vexp_shift, the C library's exp bit for bit, and d1 = 1);
 *   column task (b, c)  the rows of block b added, in order, to the column sums of column range
 *                       c, once every piece of block b has its d0 and block b-1 is added.
 * Any thread may run any task that is ready (a mutex and a condition variable hand them out;
 * a thread prefers its own column range, then the next row task, at most SK_AHEAD blocks
 * ahead of the slowest column range, so that a block is still in cache when its columns are
 * summed), so a part that moe_par_run runs on the calling thread finishes the sweep alone.
 * Each row sum runs over e in order (eight rows in the lanes of one AVX-512 vector or of two
 * AVX2 ones: products, then additions, never fused), each column sum over t in order (blocks
 * of columns in registers through a block's rows: 128 with AVX-512, 32 with AVX2): the values
 * do not depend on the number of threads, the block size or who ran which task, and equal
 * those of the two-pass loop of sinkhorn.h, whose iterations moe_sinkhorn_balance counts in
 * iters. */

enum { SK_ROWS = 8, SK_COLS = 128, SK_BLOCK_BYTES = 1 << 19, SK_BLOCK_MAX = 4096,
       SK_AHEAD = 2, SK_RING = 4 };
enum { SK_COLS4 = 8 }; /* AVX2: column sums of 4 SK_COLS4 columns in registers */

typedef struct {
    const double *L;
    int n, E;
    double *K, *d0, *d1, *colsum;
    int first;           /* the first sweep: row tasks compute K */
    long nblk, nb;       /* rows per block (a multiple of SK_ROWS), blocks */
    int np, ncol;        /* row pieces per block (= parts), column ranges */
    pthread_mutex_t mu;  /* guards the task state below */
    pthread_cond_t cv;   /* signalled when a task ends */
    long next_row;       /* next row task: block next_row / np, piece next_row % np */
    int done[SK_RING];   /* row pieces done of block b, in slot b % SK_RING */
    long cb[MOE_PAR_MAX];              /* next block of each column range */
    unsigned char busy[MOE_PAR_MAX];   /* a column task of the range runs */
} sk_job;

/* s[r] = sum_e k[r*E + e] * d1[e] over e in order, for the SK_ROWS rows at k (each product
 * rounded, then added: the scalar loop's operations, lane by lane). */
static void sk_sum8(const double *k, int E, const double *d1, double *s)
{
    int e = 0;
#if defined(__AVX512F__)
    const __m512i lo = _mm512_set_epi64(13, 12, 5, 4, 9, 8, 1, 0);
    const __m512i hi = _mm512_set_epi64(15, 14, 7, 6, 11, 10, 3, 2);
    __m512d acc = _mm512_setzero_pd();
    for (; e + 8 <= E; e += 8) {
        const __m512d w = _mm512_loadu_pd(d1 + e);
        __m512d p[8], t[8], a[8];
        _Pragma("GCC unroll 8") for (int r = 0; r < 8; r++) /* p[r]: row r, columns e..e+7 */
            p[r] = _mm512_mul_pd(_mm512_loadu_pd(k + (size_t)r * E + e), w);
        _Pragma("GCC unroll 4") for (int r = 0; r < 8; r += 2) { /* transpose p */
            t[r] = _mm512_unpacklo_pd(p[r], p[r + 1]);
            t[r + 1] = _mm512_unpackhi_pd(p[r], p[r + 1]);
        }
        _Pragma("GCC unroll 2") for (int q = 0; q < 2; q++)
            _Pragma("GCC unroll 2") for (int h = 0; h < 2; h++) {
                a[4 * q + h] = _mm512_permutex2var_pd(t[4 * q + h], lo, t[4 * q + h + 2]);
                a[4 * q + h + 2] = _mm512_permutex2var_pd(t[4 * q + h], hi, t[4 * q + h + 2]);
            }
        /* a[0] holds columns 0, 4 of rows 0-3, a[1] columns 1, 5, a[2] 2, 6, a[3] 3, 7; a[4..7]
         * the same for rows 4-7 */
        _Pragma("GCC unroll 4") for (int j = 0; j < 4; j++)
            acc = _mm512_add_pd(acc, _mm512_shuffle_f64x2(a[j], a[4 + j], 0x44));
        _Pragma("GCC unroll 4") for (int j = 0; j < 4; j++)
            acc = _mm512_add_pd(acc, _mm512_shuffle_f64x2(a[j], a[4 + j], 0xee));
    }
    _mm512_storeu_pd(s, acc);
#elif defined(__AVX2__)
    __m256d acc[2] = {_mm256_setzero_pd(), _mm256_setzero_pd()}; /* rows 0-3, rows 4-7 */
    for (; e + 4 <= E; e += 4) {
        const __m256d w = _mm256_loadu_pd(d1 + e);
        _Pragma("GCC unroll 2") for (int h = 0; h < 2; h++) {
            __m256d p[4], c[4];
            _Pragma("GCC unroll 4") for (int r = 0; r < 4; r++) /* row 4h + r, columns e..e+3 */
                p[r] = _mm256_mul_pd(_mm256_loadu_pd(k + (size_t)(4 * h + r) * E + e), w);
            moe_transpose4_pd(p, c); /* columns 0, 1, 2, 3 of the four rows, added in order */
            _Pragma("GCC unroll 4") for (int j = 0; j < 4; j++)
                acc[h] = _mm256_add_pd(acc[h], c[j]);
        }
    }
    _mm256_storeu_pd(s, acc[0]);
    _mm256_storeu_pd(s + 4, acc[1]);
#else
    for (int r = 0; r < SK_ROWS; r++)
        s[r] = 0.0;
#endif
    for (; e < E; e++) {
        const double w = d1[e];
        _Pragma("GCC unroll 8") for (int r = 0; r < SK_ROWS; r++)
            s[r] += k[(size_t)r * E + e] * w;
    }
}

/* d0[t] = 1 / (n * sum_e K[t,e] d1[e]) for rows lo..hi-1 */
static void sk_rows(const sk_job *j, long lo, long hi, double *d0)
{
    const int E = j->E;
    long t = lo;
    for (; t + SK_ROWS <= hi; t += SK_ROWS) {
        double s[SK_ROWS];
        sk_sum8(j->K + (size_t)t * E, E, j->d1, s);
        for (int r = 0; r < SK_ROWS; r++)
            d0[t - lo + r] = 1.0 / ((double)j->n * s[r]);
    }
    for (; t < hi; t++) {
        const double *kt = j->K + (size_t)t * E;
        double s = 0.0;
        for (int e = 0; e < E; e++)
            s += kt[e] * j->d1[e];
        d0[t - lo] = 1.0 / ((double)j->n * s);
    }
}

/* colsum[e] += sum_t d0[t - lo] K[t,e], t = lo..hi-1 in order, for columns e0..e1-1: blocks of
 * up to SK_COLS columns whose sums stay in registers through the rows. */
static void sk_cols(const sk_job *j, long lo, long hi, const double *d0, long e0, long e1)
{
    const int E = j->E;
    double *cs = j->colsum;
    long e = e0;
#if defined(__AVX512F__)
    for (; e + SK_COLS <= e1; e += SK_COLS) {
        __m512d acc[SK_COLS / 8];
        _Pragma("GCC unroll 16") for (int v = 0; v < SK_COLS / 8; v++)
            acc[v] = _mm512_loadu_pd(cs + e + 8 * v);
        for (long t = lo; t < hi; t++) {
            const double *kt = j->K + (size_t)t * E + e;
            const __m512d d = _mm512_set1_pd(d0[t - lo]);
            _Pragma("GCC unroll 16") for (int v = 0; v < SK_COLS / 8; v++)
                acc[v] = _mm512_add_pd(acc[v], _mm512_mul_pd(d, _mm512_loadu_pd(kt + 8 * v)));
        }
        _Pragma("GCC unroll 16") for (int v = 0; v < SK_COLS / 8; v++)
            _mm512_storeu_pd(cs + e + 8 * v, acc[v]);
    }
    for (; e + 32 <= e1; e += 32) {
        __m512d acc[4];
        for (int v = 0; v < 4; v++)
            acc[v] = _mm512_loadu_pd(cs + e + 8 * v);
        for (long t = lo; t < hi; t++) {
            const double *kt = j->K + (size_t)t * E + e;
            const __m512d d = _mm512_set1_pd(d0[t - lo]);
            for (int v = 0; v < 4; v++)
                acc[v] = _mm512_add_pd(acc[v], _mm512_mul_pd(d, _mm512_loadu_pd(kt + 8 * v)));
        }
        for (int v = 0; v < 4; v++)
            _mm512_storeu_pd(cs + e + 8 * v, acc[v]);
    }
#elif defined(__AVX2__)
    for (; e + 4 * SK_COLS4 <= e1; e += 4 * SK_COLS4) {
        __m256d acc[SK_COLS4];
        _Pragma("GCC unroll 8") for (int v = 0; v < SK_COLS4; v++)
            acc[v] = _mm256_loadu_pd(cs + e + 4 * v);
        for (long t = lo; t < hi; t++) {
            const double *kt = j->K + (size_t)t * E + e;
            const __m256d d = _mm256_set1_pd(d0[t - lo]);
            _Pragma("GCC unroll 8") for (int v = 0; v < SK_COLS4; v++)
                acc[v] = _mm256_add_pd(acc[v], _mm256_mul_pd(d, _mm256_loadu_pd(kt + 4 * v)));
        }
        _Pragma("GCC unroll 8") for (int v = 0; v < SK_COLS4; v++)
            _mm256_storeu_pd(cs + e + 4 * v, acc[v]);
    }
    for (; e + 4 <= e1; e += 4) {
        __m256d acc = _mm256_loadu_pd(cs + e);
        for (long t = lo; t < hi; t++)
            acc = _mm256_add_pd(acc, _mm256_mul_pd(_mm256_set1_pd(d0[t - lo]),
                                                   _mm256_loadu_pd(j->K + (size_t)t * E + e)));
        _mm256_storeu_pd(cs + e, acc);
    }
#endif
    for (long t = lo; e < e1 && t < hi; t++) {
        const double *kt = j->K + (size_t)t * E, d = d0[t - lo];
        for (long q = e; q < e1; q++)
            cs[q] += d * kt[q];
    }
}

/* Row task (b, h): rows of piece h of block b; K first in the first sweep, while the
 * SK_ROWS rows are in cache. */
static void sk_row_task(sk_job *j, long b, int h)
{
    const long b0 = b * j->nblk, bn = j->n - b0 < j->nblk ? j->n - b0 : j->nblk;
    long lo, hi;
    moe_par_range(bn, h, j->np, &lo, &hi);
    for (long t = b0 + lo; t < b0 + hi; t += SK_ROWS) {
        const long te = b0 + hi - t < SK_ROWS ? b0 + hi : t + SK_ROWS;
        for (long u = t; j->first && u < te; u++) {
            const double *lu = j->L + (size_t)u * j->E;
            moe_vexp_shift(lu, j->E, moe_vmax(lu, j->E), j->K + (size_t)u * j->E);
        }
        sk_rows(j, t, te, j->d0 + t);
    }
}

/* Column task (b, c): block b's rows added to the column sums of range c. */
static void sk_col_task(sk_job *j, long b, int c)
{
    long e0, e1;
    moe_par_range(j->E, c, j->ncol, &e0, &e1);
    if (b == 0)
        for (long e = e0; e < e1; e++)
            j->colsum[e] = 0.0;
    const long lo = b * j->nblk, hi = j->n - lo < j->nblk ? j->n : lo + j->nblk;
    sk_cols(j, lo, hi, j->d0 + lo, e0, e1);
}

/* Column range c can add its next block (every piece of that block has its d0). */
static int sk_col_ready(const sk_job *j, int c)
{
    const long b = j->cb[c];
    return !j->busy[c] && b < j->nb && j->next_row > b * j->np && j->done[b % SK_RING] == j->np;
}

/* One thread of a sweep: runs ready tasks until every column range has added every block. */
static void sk_sweep_part(void *arg, int i, int np)
{
    sk_job *j = arg;
    (void)np;
    pthread_mutex_lock(&j->mu);
    for (;;) {
        long low = j->nb;
        for (int c = 0; c < j->ncol; c++)
            low = j->cb[c] < low ? j->cb[c] : low;
        if (low == j->nb)
            break;
        int c = i < j->ncol && sk_col_ready(j, i) ? i : -1;
        const long r = j->next_row, rb = r / j->np;
        if (c < 0 && rb < j->nb && rb < low + SK_AHEAD) {
            if (r % j->np == 0) /* slot rb % SK_RING is free: block rb - SK_RING is summed */
                j->done[rb % SK_RING] = 0;
            j->next_row++;
            pthread_mutex_unlock(&j->mu);
            sk_row_task(j, rb, (int)(r % j->np));
            pthread_mutex_lock(&j->mu);
            j->done[rb % SK_RING]++;
            pthread_cond_broadcast(&j->cv);
            continue;
        }
        for (int q = 0; c < 0 && q < j->ncol; q++)
            c = sk_col_ready(j, q) ? q : -1;
        if (c < 0) {
            pthread_cond_wait(&j->cv, &j->mu);
            continue;
        }
        const long b = j->cb[c];
        j->busy[c] = 1;
        pthread_mutex_unlock(&j->mu);
        sk_col_task(j, b, c);
        pthread_mutex_lock(&j->mu);
        j->busy[c] = 0;
        j->cb[c]++;
        pthread_cond_broadcast(&j->cv);
    }
    pthread_mutex_unlock(&j->mu);
}

/* One sweep: d0 from d1 (and K first when j->first), then colsum = K^T d0. */
static void sk_sweep(sk_job *j)
{
    j->next_row = 0;
    for (int c = 0; c < j->ncol; c++)
        j->cb[c] = 0, j->busy[c] = 0;
    moe_par_run(sk_sweep_part, j, j->np);
}

int moe_sinkhorn_balance(const double *L, int n, int E, double tol, int max_iter, double *K,
                         double *d0, double *d1, double *colsum, int *iters)
{
    sk_job j = {.L = L, .n = n, .E = E, .K = K, .d0 = d0, .d1 = d1, .colsum = colsum};
    /* rows per block: about SK_BLOCK_BYTES of K, a multiple of SK_ROWS in [SK_ROWS,
     * SK_BLOCK_MAX] */
    long nblk = SK_BLOCK_BYTES / (8L * E) / SK_ROWS * SK_ROWS;
    j.nblk = nblk < SK_ROWS ? SK_ROWS : nblk > SK_BLOCK_MAX ? SK_BLOCK_MAX : nblk;
    j.nb = (n + j.nblk - 1) / j.nblk;
    j.np = moe_par_parts((long)n * E, 16384);
    j.ncol = moe_par_parts(E, 32) < j.np ? moe_par_parts(E, 32) : j.np;
    if (pthread_mutex_init(&j.mu, NULL))
        return moe_fail(MOE_ENOMEM, NULL, "cannot create a mutex (sinkhorn)");
    if (pthread_cond_init(&j.cv, NULL)) {
        pthread_mutex_destroy(&j.mu);
        return moe_fail(MOE_ENOMEM, NULL, "cannot create a condition variable (sinkhorn)");
    }
    for (int e = 0; e < E; e++)
        d1[e] = 1.0;
    int rc = MOE_OK, it = 1;
    for (;; it++) {
        if (it > max_iter) {
            rc = moe_fail(MOE_EINPUT, "raise sinkhorn_tol, or check the logits for extreme "
                          "values", "sinkhorn did not converge to relative tolerance %g in %d "
                          "iterations (sinkhorn_tol)", tol, max_iter);
            break;
        }
        j.first = it == 1; /* rows: d0[t] = 1 / (n * (K d1)[t]); columns: colsum = K^T d0 */
        sk_sweep(&j);
        double delta = 0.0;
        for (int e = 0; e < E && !rc; e++) {
            double nd = 1.0 / ((double)E * colsum[e]);
            if (!(colsum[e] > 0.0) || !isfinite(nd))
                rc = moe_fail(MOE_EINPUT, "logits that differ by more than ~700 within a row "
                              "leave an expert without mass; rescale the logits",
                              "sinkhorn: expert %d gets no mass (column sum %g, iteration %d)",
                              e, colsum[e], it);
            double ch = fabs(nd - d1[e]) / nd;
            if (ch > delta)
                delta = ch;
            d1[e] = nd;
        }
        if (rc || delta < tol)
            break;
    }
    pthread_cond_destroy(&j.cv);
    pthread_mutex_destroy(&j.mu);
    if (!rc && iters)
        *iters = it;
    return rc;
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
    double tol;     /* opts.sinkhorn_tol */
    int order;      /* opts.order */
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
    w->tol = r->opts.sinkhorn_tol;
    w->order = r->opts.order;
    return MOE_OK;
}

/* The buffers, on the first route (a route that reuses a memo's workspace never needs them). */
static int sinkhorn_buffers(const moe_router *r, sinkhorn_ws *w)
{
    if (w->cl)
        return MOE_OK;
    const size_t n = (size_t)r->n_max, E = (size_t)r->E;
    w->cl = moe_claims_alloc(r->n_max, r->k, r->E, 1);
    w->K = malloc(n * E * sizeof *w->K);
    w->d0 = malloc(n * sizeof *w->d0);
    w->d1 = malloc(E * sizeof *w->d1);
    w->colsum = malloc(E * sizeof *w->colsum);
    w->key = malloc(E * sizeof *w->key);
    if (!w->cl || !w->K || !w->d0 || !w->d1 || !w->colsum || !w->key) {
        moe_claims_free(w->cl);
        w->cl = NULL; /* the others are freed with the workspace */
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

/* The capacity-free part: balancing, then each token's claims in the rows pass (into w->cl)
 * with their statistics and the softmax rows' results in plan. */
static int sinkhorn_claims(sinkhorn_ws *w, const moe_route_in *in, moe_plan *plan)
{
    moe_claims *cl = w->cl;
    const int n = in->n, E = cl->E;
    int rc = moe_sinkhorn_balance(in->logits, n, E, w->tol, MOE_SINKHORN_MAX_ITER, w->K, w->d0,
                                  w->d1, w->colsum, &w->iters);
    if (rc)
        return rc;
    /* the selection in the softmax's rows pass; p kept for orders bpr and probs, or for the
     * serial selection of rows too long for the stack */
    const int on_rows = E <= SK_ROW_MAX;
    if (on_rows)
        moe_claims_scratch_p(cl, w->order);
    else
        cl->keep_p = 1;
    cl->stats_in_rows = on_rows; /* the rows leave their claims final */
    cl->num = w->K; /* the softmax's numerators: K is exp(L - rowmax), taken the same way */
    rc = moe_claims_rows(cl, in->logits, n, on_rows ? sinkhorn_row : NULL, w, plan);
    cl->num = NULL;
    if (rc)
        return rc;
    for (int t = 0; !on_rows && t < n; t++)
        sinkhorn_token(w, t, in->logits + (size_t)t * E, cl->p + (size_t)t * E, w->key);
    return MOE_OK;
}

static int sinkhorn_route(moe_router *r, const moe_route_in *in, moe_plan *plan)
{
    sinkhorn_ws *w = r->ws; /* a memo's when the route reuses it (route_memo.h) */
    const moe_route_opts *o = &r->opts;
    const int n = in->n, E = r->E, k = r->k;
    int rc;
    if (moe_route_memo_reuse(r, plan)) { /* the balancing and the claims are in w already */
        w->cl->stats_done = w->cl->stats_in_rows;
    } else {
        if ((rc = sinkhorn_buffers(r, w)) || (rc = sinkhorn_claims(w, in, plan)))
            return rc;
        moe_route_memo_record(r, plan);
    }
    moe_claims *cl = w->cl;
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
    MOE_RF_HAS_DROPLESS | MOE_RF_MEMO,
    1,
    sinkhorn_alloc,
    sinkhorn_free,
    sinkhorn_route,
    NULL,
};
