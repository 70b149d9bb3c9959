/* claims.c: claim resolution for the token-choice routers (topk, switch, gshard, hash):
 * capacity, the claim orders (choice_major, token_major, bpr, probs, rts, gate),
 * renormalisation and the claim statistics, exactly as docs/routing.md section 2 says. Interface in
 * claims.h. */
#include "claims.h"
#include "claims_par.h"
#include "par.h"
#include "select.h"
#include "vexp.h"

#if defined(__AVX512F__) || defined(__AVX2__)
#include <immintrin.h>
#endif
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

/* ---- workspace ---- */

/* The rows pass counts the claims per part for the resolution when K * E is at most this (the
 * counts take MOE_PAR_MAX * K * E longs, 256 KB here). */
enum { CLAIMS_PART_KE = 4096 };

moe_claims *moe_claims_alloc(int n_max, int K, int E, int with_p)
{
    moe_claims *c = calloc(1, sizeof *c);
    if (!c) {
        moe_fail(MOE_ENOMEM, NULL, "out of memory (claims workspace)");
        return NULL;
    }
    size_t nk = (size_t)n_max * (size_t)K, nn = nk > (size_t)n_max ? nk : (size_t)n_max;
    c->n_max = n_max;
    c->K = K;
    c->E = E;
    c->expert = malloc(nk * sizeof *c->expert);
    c->gate = malloc(nk * sizeof *c->gate);
    c->claim = malloc(nk * sizeof *c->claim);
    c->pmean = malloc((size_t)E * sizeof *c->pmean);
    c->rowmax = malloc((size_t)n_max * sizeof *c->rowmax);
    c->slot = malloc(nk * sizeof *c->slot);
    c->fill = malloc((size_t)E * sizeof *c->fill);
    c->off = malloc(((size_t)E + 1) * sizeof *c->off);
    c->list = malloc(nk * sizeof *c->list);
    c->order = malloc(nn * sizeof *c->order);
    c->tmp = malloc(nn * sizeof *c->tmp);
    c->val = malloc(nn * sizeof *c->val);
    const int counts = (size_t)K * (size_t)E <= CLAIMS_PART_KE; /* else the resolution's */
    if (counts)
        c->part_cnt = malloc((size_t)MOE_PAR_MAX * K * E * sizeof *c->part_cnt);
    int bad = (counts && !c->part_cnt) || !c->expert || !c->gate || !c->claim || !c->pmean ||
              !c->rowmax || !c->slot || !c->fill || !c->off || !c->list || !c->order ||
              !c->tmp || !c->val;
    if (with_p) {
        c->keep_p = 1;
        c->p = malloc((size_t)n_max * (size_t)E * sizeof *c->p);
        bad = bad || !c->p;
    }
    if (bad) {
        moe_claims_free(c);
        moe_fail(MOE_ENOMEM, NULL, "out of memory (claims workspace for %d tokens, %d experts)",
                 n_max, E);
        return NULL;
    }
    return c;
}

void moe_claims_free(moe_claims *c)
{
    if (!c)
        return;
    free(c->expert);
    free(c->gate);
    free(c->claim);
    free(c->p);
    free(c->pmean);
    free(c->rowmax);
    free(c->pmax);
    free(c->istop);
    free(c->slot);
    free(c->fill);
    free(c->off);
    free(c->list);
    free(c->order);
    free(c->tmp);
    free(c->val);
    free(c->part_cnt);
    free(c);
}

/* ---- helpers for the routers ---- */

/* Rows pass. Tokens go in chunks (moe_claims_rows_chunk), taken in increasing order by
 * whichever thread is free; a chunk's p rows (moe_softmax, exactly) are computed into c->p, at
 * their own rows when p is kept (keep_p, or few chunks) and otherwise in one of ROWS_RING chunk
 * slots of c->p, reused last freed first so that they stay in cache; row() is called on each.
 * pmean[e] is then the sum over t in token order, the order of the serial loop, so it does not
 * depend on the number of threads: the chunks are added in chunk order by whichever thread finds
 * the next one ready, while the others go on computing. A thread waits only when ROWS_RING
 * chunks are taken and not yet added (the oldest one being computed by a thread the system has
 * paused). */
enum { ROWS_CHUNK = 64, ROWS_RING = 64 };

/* Tokens per chunk: ROWS_CHUNK at E >= 256, more at smaller E (16384 / E, at most 2048), so
 * that a chunk holds about the same logits and the threads meet at the lock less often. */
long moe_claims_rows_chunk(int E)
{
    const long c = 16384 / (E > 0 ? E : 1);
    return c < ROWS_CHUNK ? ROWS_CHUNK : c > 2048 ? 2048 : c;
}

size_t moe_claims_rows_scratch(int n, int E)
{
    const long chunk = moe_claims_rows_chunk(E), nch = (n + chunk - 1) / chunk;
    return (size_t)(nch > ROWS_RING ? ROWS_RING * chunk : n) * (size_t)E;
}

typedef struct {
    moe_claims *c;
    const double *logits;
    int n;
    long chunk;       /* tokens per chunk (moe_claims_rows_chunk) */
    long nch;         /* chunks */
    moe_claims_row_fn row;
    void *ctx;
    double *lse;      /* (T) or NULL */
    double *store;    /* c->p */
    int ring;         /* 1: chunk slots in store; 0: every chunk at its own rows */
    moe_plan *stats;  /* the plan that takes the claim statistics in the adding pass, or NULL */
    moe_plan *sink;   /* the plan whose rows observer sees the rows in the adding pass, or NULL */
    int nonfinite;    /* a chunk has a non-finite logit */
    int top2;         /* the softmax leaves the rows' two largest in expert, gate (top2_rows) */
    int first;        /* the softmax leaves each row's first choice in expert, its p in gate */
    int32_t *pmax;    /* (T) c->pmax when the rows observer takes each row's argmax of p */
    uint8_t *istop;   /* (T) c->istop when the rows observer takes rows_topk_sure */
    double zsum;      /* the sum of lse[t]^2 over the chunks added (moe_sum_sq) */
    int pnp, pcur;    /* counting for the resolution: its parts, and the part being added */
    long pb[MOE_PAR_MAX + 1]; /* each part's first chunk (pb[pnp] = nch) */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    long next;        /* the next chunk to take */
    long summed;      /* chunks [0, summed) are in pmean */
    int adding;       /* a thread is adding chunks to pmean */
    int nfree;
    int free_slot[ROWS_RING];           /* free slots, last freed on top */
    int slot_of[ROWS_RING];             /* slot of chunk ch at [ch % ROWS_RING] */
    unsigned char ready[ROWS_RING];     /* chunk ch at [ch % ROWS_RING] is computed */
} rows_job;

static double *rows_p(rows_job *j, long ch)
{
    const size_t rows = j->ring ? (size_t)j->slot_of[ch % ROWS_RING] : (size_t)ch;
    return j->store + rows * (size_t)j->chunk * (size_t)j->c->E;
}

/* The claim statistics of tokens [t0, t1), claim by claim in token order (the order of the
 * serial loop of moe_claims_resolve, so importance gets the same sums); the claims per (rank,
 * expert) into cnt (K, E), or, with cnt NULL, per expert into assigned_load. */
static inline __attribute__((always_inline)) long
stats_counted(const moe_claims *c, long t0, long t1, double *restrict imp, long *restrict cnt,
              size_t stride, const int K)
{
    const int32_t *ex = c->expert;
    const double *g = c->gate;
    const unsigned char *cl = c->claim;
    long claims = 0;
    for (long t = t0; t < t1; t++)
#pragma GCC unroll 8
        for (int k = 0; k < K; k++) {
            const size_t q = (size_t)t * K + k;
            if (!cl[q])
                continue;
            const int e = ex[q];
            cnt[(size_t)k * stride + e]++;
            imp[e] += g[q];
            claims++;
        }
    return claims;
}

static void rows_add_stats(const moe_claims *c, long t0, long t1, moe_plan *plan, long *cnt)
{
    const int K = c->K;
    /* counted by rank (stride E) for the resolution, else per expert into assigned_load */
    const size_t stride = cnt ? (size_t)c->E : 0;
    long *to = cnt ? cnt : plan->assigned_load;
    plan->n_claims += K == 1   ? stats_counted(c, t0, t1, plan->importance, to, stride, 1)
                      : K == 2 ? stats_counted(c, t0, t1, plan->importance, to, stride, 2)
                               : stats_counted(c, t0, t1, plan->importance, to, stride, K);
}

int moe_claims_rows_threads(int n)
{
    return moe_par_parts(n, 2048);
}

int moe_claims_rows_parts(const moe_claims *c, int n)
{
    return moe_par_parts((long)n * c->K, 16384);
}

#if defined(__AVX512F__) || defined(__AVX2__)
/* The rows' sums of E = W NV experts (W the lanes of a vector, NV <= 16 / (W / 4)) in one pass,
 * every sum in a register, and with lse the sum of squares beside them (moe_sum_sq's additions
 * in its order): the chains of additions overlap instead of running pass after pass (without
 * AVX-512, on rows in cache: at E = 8 two passes of one register and the squares' pass took 2.8
 * ns a row, one pass 0.9; at E = 64 two passes of eight registers 11.0, one pass of sixteen
 * 5.9). */
#if defined(__AVX512F__)
typedef __m512d ar_vec;
enum { AR_W = 8, AR_MAXV = 8 };
#define ar_load _mm512_loadu_pd
#define ar_add _mm512_add_pd
#define ar_store _mm512_storeu_pd
#else
typedef __m256d ar_vec;
enum { AR_W = 4, AR_MAXV = 16 };
#define ar_load _mm256_loadu_pd
#define ar_add _mm256_add_pd
#define ar_store _mm256_storeu_pd
#endif

static inline __attribute__((always_inline)) double
add_rows_v(double *restrict pm, const double *restrict p, long rows, const double *restrict lse,
           double z, const int NV)
{
    ar_vec a[AR_MAXV];
#pragma GCC unroll 16
    for (int v = 0; v < NV; v++)
        a[v] = ar_load(pm + AR_W * v);
    for (long t = 0; t < rows; t++) {
#pragma GCC unroll 16
        for (int v = 0; v < NV; v++)
            a[v] = ar_add(a[v], ar_load(p + (size_t)t * AR_W * NV + AR_W * v));
        if (lse)
            z += lse[t] * lse[t];
    }
#pragma GCC unroll 16
    for (int v = 0; v < NV; v++)
        ar_store(pm + AR_W * v, a[v]);
    return z;
}

static inline __attribute__((always_inline)) double
add_rows_n(double *restrict pm, const double *restrict p, long rows, const double *restrict lse,
           double z, int E)
{
    switch (E) {
    case 8: return add_rows_v(pm, p, rows, lse, z, 8 / AR_W);
    case 16: return add_rows_v(pm, p, rows, lse, z, 16 / AR_W);
    case 32: return add_rows_v(pm, p, rows, lse, z, 32 / AR_W);
    default: return add_rows_v(pm, p, rows, lse, z, 64 / AR_W);
    }
}

/* add_rows_v where E is 8, 16, 32 or 64 (lse a known pointer or NULL in each loop): 1 if it
 * took the rows. */
static int add_rows_e(double *restrict pm, const double *restrict p, long rows, int E,
                      const double *restrict lse, double *z)
{
    if (E != 8 && E != 16 && E != 32 && E != 64)
        return 0;
    *z = lse ? add_rows_n(pm, p, rows, lse, *z, E) : add_rows_n(pm, p, rows, NULL, *z, E);
    return 1;
}
#endif

/* 64 experts at a time with their sums in registers, then 8, then one (claims.h). */
void moe_claims_add_rows(double *restrict pm, const double *restrict p, long rows, int E)
{
    int e = 0;
#if !defined(__AVX512F__) && defined(__AVX2__) /* (AVX-512: its loops below, as measured) */
    double z = 0.0;
    if (add_rows_e(pm, p, rows, E, NULL, &z))
        return;
#endif
#if defined(__AVX512F__)
    for (; e + 64 <= E; e += 64) {
        __m512d a[8];
        for (int v = 0; v < 8; v++)
            a[v] = _mm512_loadu_pd(pm + e + 8 * v);
        for (long t = 0; t < rows; t++)
            for (int v = 0; v < 8; v++)
                a[v] = _mm512_add_pd(a[v], _mm512_loadu_pd(p + (size_t)t * E + e + 8 * v));
        for (int v = 0; v < 8; v++)
            _mm512_storeu_pd(pm + e + 8 * v, a[v]);
    }
    for (; e + 8 <= E; e += 8) {
        __m512d a = _mm512_loadu_pd(pm + e);
        for (long t = 0; t < rows; t++)
            a = _mm512_add_pd(a, _mm512_loadu_pd(p + (size_t)t * E + e));
        _mm512_storeu_pd(pm + e, a);
    }
#elif defined(__AVX2__)
    /* (without AVX-512: 32 experts at a time in eight registers of four, then 4, then one; a
     * column at a time, the scalar loop below read each row's line again per column and took
     * a fifth of switch's samples at E = 256) */
    for (; e + 32 <= E; e += 32) {
        __m256d a[8];
        for (int v = 0; v < 8; v++)
            a[v] = _mm256_loadu_pd(pm + e + 4 * v);
        for (long t = 0; t < rows; t++)
            for (int v = 0; v < 8; v++)
                a[v] = _mm256_add_pd(a[v], _mm256_loadu_pd(p + (size_t)t * E + e + 4 * v));
        for (int v = 0; v < 8; v++)
            _mm256_storeu_pd(pm + e + 4 * v, a[v]);
    }
    for (; e + 4 <= E; e += 4) {
        __m256d a = _mm256_loadu_pd(pm + e);
        for (long t = 0; t < rows; t++)
            a = _mm256_add_pd(a, _mm256_loadu_pd(p + (size_t)t * E + e));
        _mm256_storeu_pd(pm + e, a);
    }
#endif
    for (; e < E; e++)
        for (long t = 0; t < rows; t++)
            pm[e] += p[(size_t)t * E + e];
}

/* moe_claims_add_rows(pm, p, rows, E), returning moe_sum_sq(z, lse, rows): at E = 8, 16, 32 and
 * 64 in one loop, so that the chains of additions (the sums of p, the sum of squares) overlap
 * instead of running one after the other; each takes the same additions in the same order. */
static double add_rows_sumsq(double *restrict pm, const double *restrict p, long rows, int E,
                             const double *restrict lse, double z)
{
#if defined(__AVX512F__) || defined(__AVX2__)
    if (add_rows_e(pm, p, rows, E, lse, &z))
        return z;
#endif
    moe_claims_add_rows(pm, p, rows, E);
    return moe_sum_sq(z, lse, rows);
}

/* Add the ready chunks to pmean in chunk order; called and returns with j->mu held. */
static void rows_add_ready(rows_job *j)
{
    const int E = j->c->E;
    double *pm = j->c->pmean;
    j->adding = 1;
    while (j->summed < j->nch && j->ready[j->summed % ROWS_RING]) {
        const long ch = j->summed, t0 = ch * j->chunk;
        const long t1 = t0 + j->chunk < j->n ? t0 + j->chunk : j->n;
        const double *p0 = rows_p(j, ch);
        pthread_mutex_unlock(&j->mu);
        if (j->lse) /* with the z-loss's sum, beside the other thread's exponentials */
            j->zsum = add_rows_sumsq(pm, p0, t1 - t0, E, j->lse + t0, j->zsum);
        else
            moe_claims_add_rows(pm, p0, t1 - t0, E);
        if (j->stats && j->c->stats_rows)
            j->c->stats_rows(j->c->stats_ctx, t0, t1, j->stats);
        else if (j->stats && j->pnp) {
            while (ch >= j->pb[j->pcur + 1]) /* the part that holds chunk ch */
                j->pcur++;
            rows_add_stats(j->c, t0, t1, j->stats,
                           j->c->part_cnt + (size_t)j->pcur * j->c->K * E);
        } else if (j->stats) {
            rows_add_stats(j->c, t0, t1, j->stats, NULL);
        }
        if (j->sink)
            j->sink->rows_add(j->sink->rows_ctx, t0, t1, p0, pm);
        pthread_mutex_lock(&j->mu);
        j->ready[ch % ROWS_RING] = 0;
        if (j->ring)
            j->free_slot[j->nfree++] = j->slot_of[ch % ROWS_RING];
        j->summed = ch + 1;
        pthread_cond_broadcast(&j->cv);
    }
    j->adding = 0;
}

static void rows_first(moe_claims *c, long t0, long t1, const double *logits, const double *p0);

static void rows_part(void *arg, int i, int np)
{
    (void)np;
    rows_job *j = arg;
    const int E = j->c->E;
    pthread_mutex_lock(&j->mu);
    for (;;) {
        while (j->next < j->nch && j->next - j->summed >= ROWS_RING)
            pthread_cond_wait(&j->cv, &j->mu);
        if (j->next >= j->nch)
            break;
        const long ch = j->next++;
        if (j->ring)
            j->slot_of[ch % ROWS_RING] = j->free_slot[--j->nfree];
        double *p0 = rows_p(j, ch);
        pthread_mutex_unlock(&j->mu);
        const long t0 = ch * j->chunk, t1 = t0 + j->chunk < j->n ? t0 + j->chunk : j->n;
        if (j->c->rows_select)
            j->c->rows_select(j->ctx, t0, t1);
        int slow = 0; /* (every logit of the chunk goes through the softmax's exponentials) */
        if (j->top2)
            moe_softmax_rows8_top2(j->logits + (size_t)t0 * E, (int)(t1 - t0), p0,
                                   j->lse ? j->lse + t0 : NULL, j->c->rowmax + t0,
                                   j->c->expert + (size_t)t0 * 2, j->c->gate + (size_t)t0 * 2,
                                   j->istop ? j->istop + t0 : NULL, &slow);
        else
            moe_softmax_rows_more(
                j->logits + (size_t)t0 * E, (int)(t1 - t0), E, p0,
                &(moe_softmax_more){
                    .lse = j->lse ? j->lse + t0 : NULL, .mx = j->c->rowmax + t0,
                    .sel = j->c->rows_select ? j->c->expert + (size_t)t0 * j->c->K : NULL,
                    .k = j->c->K, .esel = j->c->gate + (size_t)t0 * j->c->K,
                    .esel_max = j->c->rows_select != NULL, /* (the values selected, by rank) */
                    .istop = j->istop ? j->istop + t0 : NULL,
                    .pmax = j->pmax ? j->pmax + t0 : NULL,
                    .xfirst = j->first ? j->c->expert + t0 : NULL,
                    .pfirst = j->first ? j->c->gate + t0 : NULL, .slow = &slow,
                    .num = j->c->num ? j->c->num + (size_t)t0 * E : NULL});
        if (j->row == moe_claims_row_first) /* one loop, no call per token */
            rows_first(j->c, t0, t1, j->logits, p0);
        for (long t = t0; j->row && j->row != moe_claims_row_first &&
                          j->row != moe_claims_row_chunk && t < t1;
             t++)
            j->row(j->ctx, (int)t, j->logits + (size_t)t * E, p0 + (size_t)(t - t0) * E);
        if (j->row && j->c->rows_chunk)
            j->c->rows_chunk(j->ctx, t0, t1, p0, i);
        if (j->sink)
            j->sink->rows_each(j->sink->rows_ctx, t0, t1, p0, j->pmax ? j->pmax + t0 : NULL);
        for (long t = t0; j->c->bpr_keys && t < t1; t++) { /* as moe_claims_resolve takes it */
            const double *pt = p0 + (size_t)(t - t0) * E;
            j->c->val[t] = pt[moe_claims_argmax(pt, E, -1)];
        }
        const int fin = moe_softmax_finite(j->logits + (size_t)t0 * E, (size_t)(t1 - t0) * E, slow);
        pthread_mutex_lock(&j->mu);
        j->nonfinite |= !fin;
        j->ready[ch % ROWS_RING] = 1;
        if (!j->adding)
            rows_add_ready(j);
    }
    pthread_mutex_unlock(&j->mu);
}

int moe_claims_rows(moe_claims *c, const double *logits, int n, moe_claims_row_fn row,
                    void *ctx, moe_plan *plan)
{
    if (!c->p)
        return moe_fail(MOE_EINVAL, NULL, "router rows pass without probabilities (claims)");
    const int np = moe_claims_rows_threads(n);
    rows_job j = {.c = c, .logits = logits, .n = n, .row = row, .ctx = ctx, .store = c->p};
    j.chunk = moe_claims_rows_chunk(c->E);
    j.nch = (n + j.chunk - 1) / j.chunk;
    j.ring = !c->keep_p && j.nch > ROWS_RING;
    j.stats = c->stats_in_rows && row && plan ? plan : NULL;
    j.sink = plan && plan->rows_add ? plan : NULL;
    j.top2 = c->top2_rows && c->E == 8 && c->K == 2;
    j.first = row == moe_claims_row_first && c->K == 1;
    if (j.sink && j.sink->rows_pmax && !j.top2) { /* allocated when a pass first asks */
        if (!c->pmax && !(c->pmax = malloc((size_t)c->n_max * sizeof *c->pmax)))
            return moe_fail(MOE_ENOMEM, NULL, "out of memory (rows of %d tokens)", c->n_max);
        j.pmax = c->pmax;
    }
    /* the router's choices by the selection before the softmax (rows_select above E = 8, or
     * the top two of rows of eight) are the observer's rows_topk: the softmax tells which of
     * them are also the K largest of p (not for other selections at E = 8, where the
     * observer's own test is one vector, nor at K = E, where the observer has nothing to
     * choose) */
    if (j.sink && ((c->rows_select && c->E > 8) || j.top2) && plan->rows_topk == c->expert &&
        plan->rows_topk_k == c->K && c->K < c->E) {
        if (!c->istop && !(c->istop = malloc((size_t)c->n_max)))
            return moe_fail(MOE_ENOMEM, NULL, "out of memory (rows of %d tokens)", c->n_max);
        j.istop = c->istop;
    }
    for (int s = 0; s < ROWS_RING; s++) /* slot 0 on top */
        j.free_slot[s] = ROWS_RING - 1 - s;
    j.nfree = ROWS_RING;
    if (plan && !(j.lse = moe_plan_lse_buffer(plan)))
        return MOE_ENOMEM;
    if (pthread_mutex_init(&j.mu, NULL))
        return moe_fail(MOE_ENOMEM, NULL, "cannot create a mutex (router rows)");
    if (pthread_cond_init(&j.cv, NULL)) {
        pthread_mutex_destroy(&j.mu);
        return moe_fail(MOE_ENOMEM, NULL, "cannot create a condition variable (router rows)");
    }
    for (int e = 0; e < c->E; e++)
        c->pmean[e] = 0.0;
    c->part_ready = 0;
    if (j.stats && !c->stats_rows && c->part_cnt) { /* the counts of the resolution's parts */
        j.pnp = moe_claims_rows_parts(c, n);
        for (int i = 0; i <= j.pnp; i++)
            j.pb[i] = j.nch * i / j.pnp;
        memset(c->part_cnt, 0, (size_t)j.pnp * c->K * c->E * sizeof *c->part_cnt);
    }
    if (j.istop)
        plan->rows_topk_sure = j.istop;
    moe_par_run(rows_part, &j, np);
    if (j.istop)
        plan->rows_topk_sure = NULL;
    pthread_cond_destroy(&j.cv);
    pthread_mutex_destroy(&j.mu);
    for (int e = 0; e < c->E; e++)
        c->pmean[e] /= n;
    c->stats_done = j.stats != NULL;
    if (j.pnp) { /* assigned_load from the counts; the parts in tokens */
        const size_t ke = (size_t)c->K * c->E;
        for (int i = 0; i < j.pnp; i++)
            for (size_t q = 0; q < ke; q++)
                plan->assigned_load[q % c->E] += c->part_cnt[(size_t)i * ke + q];
        for (int i = 0; i <= j.pnp; i++)
            c->part_t0[i] = j.pb[i] * j.chunk < n ? j.pb[i] * j.chunk : n;
        c->part_np = j.pnp;
        c->part_ready = 1;
    }
    c->bpr_ready = c->bpr_keys;
    if (j.nonfinite) /* the first non-finite logit, named as moe_router_route names it */
        return moe_logits_check_finite(logits, n, c->E);
    if (plan) {
        plan->lse_of = logits;
        plan->lse_sumsq_of = logits;
        plan->lse_sumsq = j.zsum;
    }
    if (j.sink)
        plan->rows_of = logits;
    return MOE_OK;
}

int moe_claims_softmax(moe_claims *c, const double *logits, int n, moe_plan *plan)
{
    return moe_claims_rows(c, logits, n, NULL, NULL, plan);
}

int moe_claims_argmax(const double *x, int len, int skip)
{
    if (len >= 8) { /* one vector pass for the maximum, one for its first index (select.h) */
        const int v = moe_select_argmax_skip(x, len, skip);
        if (v >= -1)
            return v;
    }
    int best = -1;
    for (int i = 0; i < len; i++) {
        if (i == skip)
            continue;
        if (best < 0 || x[i] > x[best]) /* strict: ties keep the lower index */
            best = i;
    }
    return best;
}

/* moe_claims_argmax_row, inline (at E = 8 the row's test is inline too). */
static inline int argmax_row(const moe_claims *c, int t, const double *lt)
{
    /* the maximum is moe_vmax's, the one moe_claims_argmax takes: its first index is the answer */
    const int e = c->E == 8 ? moe_select_first_eq8(lt, c->rowmax[t])
                            : moe_select_first_eq(lt, c->E, c->rowmax[t]);
    return e >= 0 ? e : moe_claims_argmax(lt, c->E, -1); /* NaN rows */
}

int moe_claims_argmax_row(const moe_claims *c, int t, const double *lt)
{
    return argmax_row(c, t, lt);
}

int moe_claims_top2_row(const moe_claims *c, int t, const double *lt, int32_t *e1, int32_t *e2)
{
    return c->E == 8 ? moe_select_top2_8(lt, c->rowmax[t], e1, e2)
                     : moe_select_top2(lt, c->E, c->rowmax[t], e1, e2);
}

void moe_claims_row_first(void *ctx, int t, const double *lt, const double *pt)
{
    moe_claims *c = ctx;
    const int e = argmax_row(c, t, lt);
    c->expert[t] = e;
    c->gate[t] = pt[e];
    c->claim[t] = 1;
}

void moe_claims_row_chunk(void *ctx, int t, const double *lt, const double *pt)
{
    (void)ctx, (void)t, (void)lt, (void)pt;
}

/* moe_claims_row_first over tokens [t0, t1) of a chunk, whose softmax rows start at p0: the
 * softmax has left each row's first index of its maximum in expert and its p in gate (xfirst,
 * pfirst) but for the rows where no value equals that maximum (a NaN), which
 * moe_claims_argmax scans. */
static void rows_first(moe_claims *c, long t0, long t1, const double *logits, const double *p0)
{
    const int E = c->E;
    for (long t = t0; t < t1; t++)
        if (c->expert[t] < 0) {
            const int e = moe_claims_argmax(logits + (size_t)t * E, E, -1);
            c->expert[t] = e;
            c->gate[t] = p0[(size_t)(t - t0) * E + e];
        }
    memset(c->claim + t0, 1, (size_t)(t1 - t0));
}

/* One step of the scalar top-k selection: x (at index e) into the cnt largest so far, idx and
 * val in descending order, when fewer than k are held or x is above the k-th (equal to it: the
 * lower index stays). */
static inline void topk_insert(double x, int e, int k, int *cnt, int32_t *idx, double *val)
{
    if (*cnt == k && !(x > val[k - 1]))
        return;
    int j = *cnt < k ? (*cnt)++ : k - 1;
    while (j > 0 && val[j - 1] < x) {
        val[j] = val[j - 1];
        idx[j] = idx[j - 1];
        j--;
    }
    val[j] = x;
    idx[j] = e;
}

void moe_claims_topk(const double *v, int len, int k, int32_t *idx, double *val)
{
    if (k == 1 && len > 0) { /* the first index of the largest */
        idx[0] = moe_claims_argmax(v, len, -1);
        val[0] = v[idx[0]];
        return;
    }
    if (moe_select_topk(v, len, k, idx, val))
        return; /* the same selection without a branch per element (select.h) */
    int cnt = 0, e = 0;
    for (; e < len && cnt < k; e++)
        topk_insert(v[e], e, k, &cnt, idx, val);
#if defined(__AVX2__) && !defined(__AVX512VBMI2__)
    /* four at a time, only those above the k-th as it was before them go on to the same steps
     * (the k-th only rises, so the others would be passed over there too) */
    for (; e + 4 <= len; e += 4) {
        int gt = _mm256_movemask_pd(_mm256_cmp_pd(_mm256_loadu_pd(v + e),
                                                  _mm256_set1_pd(val[k - 1]), _CMP_GT_OQ));
        for (; gt; gt &= gt - 1) {
            const int i = e + __builtin_ctz((unsigned)gt);
            topk_insert(v[i], i, k, &cnt, idx, val);
        }
    }
#endif
    for (; e < len; e++)
        topk_insert(v[e], e, k, &cnt, idx, val);
}

void moe_claims_topk_rows(const double *v, long n, int len, int k, int32_t *idx, double *val)
{
    moe_select_topk_rows(v, n, len, k, idx, val); /* four rows at a time where it can */
    for (long t = 0; t < n; t++)
        if (idx[(size_t)t * k] < 0) /* declined (a NaN): the scalar selection */
            moe_claims_topk(v + (size_t)t * len, len, k, idx + (size_t)t * k,
                            val + (size_t)t * k);
}

void moe_claims_scratch_p(moe_claims *c, int order)
{
    c->keep_p = c->p && order == MOE_ORDER_PROBS;
    c->bpr_keys = c->p && order == MOE_ORDER_BPR;
}

/* ---- resolution ---- */

/* Claim i = t*K+j takes the next free slot of its expert, or is dropped if the expert is full. */
static void take(moe_claims *c, size_t i, long C)
{
    if (!c->claim[i])
        return;
    int e = c->expert[i];
    c->slot[i] = c->fill[e] < C ? c->fill[e]++ : -1;
}

int moe_claims_resolve(moe_claims *c, int n, int order, long C, int dropless, int renormalize,
                       moe_plan *plan)
{
    const int K = c->K, E = c->E;
    const size_t nk = (size_t)n * K;
    if ((order == MOE_ORDER_BPR || order == MOE_ORDER_PROBS) && !c->p)
        return moe_fail(MOE_EINVAL, "use order choice_major or token_major",
                        "claim order %s needs router probabilities (order)",
                        order == MOE_ORDER_BPR ? "bpr" : "probs");
    if (order == MOE_ORDER_RTS && !c->rts_u)
        return moe_fail(MOE_EINVAL, "give the draws: --rts-uniforms U.npy of shape (n,E)",
                        "claim order rts needs its draws (order)");
    const int stats = !c->stats_done; /* not yet added by the rows pass */
    c->stats_done = 0;
    if (order < MOE_ORDER_CHOICE_MAJOR || order > MOE_ORDER_GATE)
        return moe_fail(MOE_EINVAL, NULL, "unknown claim order %d (order)", order);
    /* the orders that rank claims by a key always go there (selection, not a sort per
     * expert); the others when more than one thread is worth it */
    if ((order != MOE_ORDER_CHOICE_MAJOR && order != MOE_ORDER_TOKEN_MAJOR) ||
        (K <= MOE_CLAIMS_PAR_MAX_K && moe_claims_rows_parts(c, n) > 1))
        return moe_claims_resolve_par(c, n, order, C, dropless, renormalize, stats, plan);
    c->part_ready = 0;
    /* claim statistics, before capacity */
    long *load = plan->assigned_load;
    for (size_t i = 0; i < nk; i++) {
        c->slot[i] = -1;
        if (!c->claim[i] || !stats)
            continue;
        load[c->expert[i]]++;
        plan->importance[c->expert[i]] += c->gate[i];
        plan->n_claims++;
    }
    if (dropless) {
        C = 0;
        for (int e = 0; e < E; e++)
            if (load[e] > C)
                C = load[e];
    }
    plan->capacity = C;

    /* slots */
    for (int e = 0; e < E; e++)
        c->fill[e] = 0;
    if (order == MOE_ORDER_CHOICE_MAJOR) {
        for (int j = 0; j < K; j++)
            for (int t = 0; t < n; t++)
                take(c, (size_t)t * K + j, C);
    } else { /* token_major */
        for (size_t i = 0; i < nk; i++)
            take(c, i, C);
    }

    /* entries, token-major by token then choice rank */
    for (int t = 0; t < n; t++) {
        const size_t i0 = (size_t)t * K;
        double sum = 0.0;
        for (int j = 0; j < K; j++)
            if (c->slot[i0 + j] >= 0)
                sum += c->gate[i0 + j];
        for (int j = 0; j < K; j++) {
            size_t i = i0 + j;
            if (j < 2) { /* per-rank claims and kept claims (fairseq's overflow metrics) */
                plan->rank_claims[j] += c->claim[i];
                plan->rank_kept[j] += c->slot[i] >= 0;
            }
            if (c->slot[i] < 0)
                continue;
            double cw = (renormalize && sum > 0.0) ? c->gate[i] / sum : c->gate[i];
            int rc = moe_plan_push(plan, t, c->expert[i], (int32_t)c->slot[i], 1.0, cw);
            if (rc)
                return rc;
        }
    }
    return MOE_OK;
}

typedef struct {
    const moe_claims *c;
    int n;
    long *cnt; /* (nparts, E) */
} first_job;

static void first_part(void *ctx, int i, int np)
{
    first_job *j = ctx;
    const int K = j->c->K;
    long lo, hi, *cnt = j->cnt + (size_t)i * j->c->E;
    moe_par_range(j->n, i, np, &lo, &hi);
    for (long t = lo; t < hi; t++)
        cnt[j->c->expert[(size_t)t * K]]++;
}

/* c->fill[e] = the tokens of n whose first choice is e, counted on the routers' threads. */
static int claims_count_first(moe_claims *c, int n)
{
    const int E = c->E, np = moe_par_parts(n, 65536);
    first_job j = {c, n, calloc((size_t)np * E, sizeof(long))};
    if (!j.cnt)
        return moe_fail(MOE_ENOMEM, NULL, "out of memory (first choices of %d experts)", E);
    moe_par_run(first_part, &j, np);
    for (int e = 0; e < E; e++) {
        c->fill[e] = 0;
        for (int i = 0; i < np; i++)
            c->fill[e] += j.cnt[(size_t)i * E + e];
    }
    free(j.cnt);
    return MOE_OK;
}

int moe_claims_finish(moe_claims *c, const moe_route_opts *o, int n, int aux, moe_plan *plan)
{
    const int K = c->K, E = c->E;
    long C = 0;
    if (!o->dropless) {
        int rc = moe_capacity(o, K, n, E, &C);
        if (rc)
            return rc;
    }
    c->first_ready = 0; /* set by the resolution on the threads when it counted them */
    int rc = moe_claims_resolve(c, n, o->order, C, o->dropless, o->renormalize, plan);
    if (rc)
        return rc;
    double s = 0.0;
    if (aux == MOE_CLAIMS_AUX_ASSIGNED) {
        for (int e = 0; e < E; e++)
            s += (double)plan->assigned_load[e] * c->pmean[e];
        plan->aux_loss = (double)E / ((double)K * n) * s;
    } else {
        /* fill: the first choices per expert (every first choice claims) */
        rc = c->first_ready ? MOE_OK : claims_count_first(c, n);
        c->first_ready = 0;
        if (rc)
            return rc;
        for (int e = 0; e < E; e++)
            s += (double)c->fill[e] / n * c->pmean[e];
        plan->aux_loss = E * s;
    }
    return MOE_OK;
}
