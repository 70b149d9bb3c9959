/* layer.c: the real MoE layer of layer.h: gate (gate.c's fixed-order routine), dispatch by
 * index, expert FFNs, combine, in fp32: the expert GEMMs through layer_gemm.h (libxsmm kernels
 * on weights packed once, or OpenBLAS sgemm), soft plans' dispatch/combine GEMMs through GSL's
 * BLAS interface (OpenBLAS), the naive double-precision reference, the dense mixture used for
 * the output error, and the activations.
 *
 * Workspaces (allocated once in moe_layer_alloc, never in forward). R = E * max(C_max, 1) rows:
 *   xin  (R,D)   expert inputs, row e*C + s holds h[e,s] (C = the plan's capacity, so each
 *                expert's rows form one contiguous block and a dense plan's M = E*C columns
 *                map one-to-one onto rows)
 *   hid  (R,FW)  hidden activations, FW = F (2F for SwiGLU); also the scratch of the phases
 *                that do not need it at the same time: the dense plans'
 *                (T,M) dispatch / combine weight matrices, filled block of tokens by
 *                block of tokens (rows per block = R*FW / M, at least FW for a dense plan)
 *   out  (R,D)   expert outputs
 *   used (E)     rows filled per expert in the current forward (max slot + 1)
 *   hits (R)     entries on each slot in the current forward (0, 1, or 2 for two or more)
 * so the layer needs no (T,M) buffer of its own: a sparse layer with a large C_max does not
 * pay n_max * E * C_max floats for matrices only soft_moe uses.
 * The activations and the row kernels are in layer_act.c.
 */
#include "layer.h"

#include "blas_info.h"
#include "gate.h"
#include "layer_act.h"
#include "layer_gemm.h"

#include <gsl/gsl_blas.h>
#include <gsl/gsl_matrix_float.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct moe_layer {
    int n_max, E, d, f, fw, act; /* fw = F, or 2F for SwiGLU */
    long C_max;
    size_t rows;                  /* R = E * max(C_max, 1) */
    float *xin;                   /* (R,D) */
    float *hid;                   /* (R,FW) */
    float *out;                   /* (R,D) */
    long *used;                   /* (E) */
    unsigned char *hits;          /* (R) */
    size_t tile;                  /* rows per tile of the expert phase, 0: one per segment */
    int pad;                      /* 1: sparse plans run every expert at C rows */
    size_t rows_run;              /* rows of the last expert phase */
    size_t ntiles;                /* its tiles (L->tiles[0..ntiles)) */
    struct expert_seg *seg;       /* (2E) row segments of the expert phase */
    struct expert_tile *tiles;    /* (E (C_max / MOE_TILE_ALIGN + 2)) the expert phase's tiles */
    moe_shared_ws *sh;            /* shared experts (moe_layer_set_shared), or NULL */
    moe_gemm_pack *p1, *p2;       /* libxsmm: W1 (E,D,FW), W2 (E,F,D) packed; else NULL */
    const float *src1, *src2;     /* the w1, w2 packed into p1, p2 (NULL: none yet) */
};


/* ---- bias + activation over rows, split across the BLAS threads ----
 * Rows are split into contiguous ranges, one per thread; each element is computed on its own,
 * so the result does not depend on the thread count. */
typedef struct {
    const moe_layer *L;
    float *buf;            /* (rows, ld) */
    const float *b;        /* bias (width) or (2F) for SwiGLU */
    size_t r0, r1, ld, width;
    int act;               /* activation, -1 = bias only, MOE_ACT_SWIGLU = gate/up halves */
} act_job;

static void act_rows(const act_job *j)
{
    for (size_t r = j->r0; r < j->r1; r++) {
        float *row = j->buf + r * j->ld;
        if (j->act == MOE_ACT_SWIGLU)
            moe_act_swiglu_row(row, row + j->width, j->b, j->b + j->width, j->width);
        else
            moe_act_bias(j->act, row, j->b, j->width);
    }
}

static void *act_thread(void *arg)
{
    act_rows(arg);
    return NULL;
}

static void act_parallel(const moe_layer *L, int act, float *buf, size_t rows, size_t ld,
                         const float *b, size_t width)
{
    int nt = moe_blas_threads();
    if (nt > MOE_MAX_THREADS)
        nt = MOE_MAX_THREADS;
    if (nt < 1 || rows * width < 65536) /* small: threads cost more than they save */
        nt = 1;
    if ((size_t)nt > rows)
        nt = (int)rows;
    act_job jobs[MOE_MAX_THREADS];
    for (int i = 0; i < nt; i++)
        jobs[i] = (act_job){L, buf, b, rows * (size_t)i / (size_t)nt,
                            rows * (size_t)(i + 1) / (size_t)nt, ld, width, act};
    moe_gemm_run_jobs(act_thread, jobs, sizeof *jobs, nt);
}

/* FFN_e on `rows` rows: hid (rows,FW) = in (rows,D) W1_e + b1_e, activation (SwiGLU: into
 * columns [0,F)), out (rows,D) = act (rows,F) W2_e + b2_e. sgemm writes with beta = 0 and the
 * biases are broadcast over rows in the activation pass. 0 < split < rows: the GEMMs run rows
 * [0, split) and [split, rows) as separate calls (moe_gemm_expert), with the same bits as two
 * FFN calls; bias and activation are per element. */
static int ffn_rows_par(const moe_layer *L, const moe_experts *w, int e, const float *in,
                        size_t rows, size_t split, float *hid, float *out, int par)
{
    size_t D = (size_t)L->d, F = (size_t)L->f, FW = (size_t)L->fw;
    int nt = par ? moe_blas_threads() : 1;
    int rc = moe_gemm_expert(L->p1, w->w1, (size_t)e, rows, split, D, FW, in, D, hid, FW, nt,
                             "expert first matrix");
    if (rc)
        return rc;
    if (par) {
        act_parallel(L, L->act, hid, rows, FW, w->b1 + (size_t)e * FW, F);
    } else {
        act_job j = {L, hid, w->b1 + (size_t)e * FW, 0, rows, FW, F, L->act};
        act_rows(&j);
    }
    rc = moe_gemm_expert(L->p2, w->w2, (size_t)e, rows, split, F, D, hid, FW, out, D, nt,
                         "expert second matrix");
    if (rc)
        return rc;
    if (par) {
        act_parallel(L, -1, out, rows, D, w->b2 + (size_t)e * D, D);
    } else {
        act_job j = {L, out, w->b2 + (size_t)e * D, 0, rows, D, D, -1};
        act_rows(&j);
    }
    return MOE_OK;
}

/* ---- the expert phase: tiles of expert rows in parallel, one BLAS thread each ----
 * Each expert's rows form one segment [0, used_e) and, padded to capacity, a second one
 * [used_e, C) of zero rows (with libxsmm: the same segment, after a split); a segment is one
 * tile, or several (below). With T BLAS threads, T workers take tiles from one queue (longest
 * first) and run the FFN of each with single-threaded sgemm: every core stays busy through both
 * GEMMs and the activation between them, and no GEMM pays OpenBLAS's fork/join on a block of a
 * few hundred rows. With one BLAS thread the tiles run in turn.
 *
 * Bits: the kept rows of an expert always go through one GEMM pair of M = used_e rows (libxsmm:
 * the same kernel calls), padded or not, whatever the thread count, so y is the same bits
 * padded or not (tested). Row tiles
 * (moe_layer_set_tile_rows) keep a tile's hidden rows in cache. OpenBLAS rounds a row by the
 * kernel that computes it: its kernels take our rows (its N in a row-major call) in groups of
 * 4 to 24 from the start of each block, a tail goes through narrower kernels, and GEMMs with
 * M*N*K below about 7e6 take small-matrix kernels. So tiles start at multiples of
 * MOE_TILE_ALIGN rows, the last one runs the rest (tile..2 tile-1 rows), and only where
 * tile*D*F >= MOE_TILE_MIN_MNK: each row meets the kernel and sums it meets untiled (tested).
 * libxsmm's kernels (layer_gemm.h) take rows in blocks of 16 from the start of each call, so the
 * same segments and tile boundaries (multiples of 192 = 12 x 16) keep their bits too. */
enum { MOE_TILE_ALIGN = 192, MOE_TILE_MIN_MNK = 1 << 24 };
/* Default rows per tile with libxsmm: a tile's hidden rows (768 x FW floats, 6 MB at F = 2048)
 * stay in the last-level cache between the two GEMMs, where an untiled expert of thousands of
 * rows writes them to memory and reads them back twice (activation, second GEMM); experts of
 * fewer than 1536 rows stay whole (each tile reads the expert's weights again). */
enum { MOE_TILE_XSMM = 768 };
typedef struct expert_seg {
    int e;
    size_t r0, len; /* rows [r0, r0 + len) of expert e's block */
    size_t split;   /* > 0: rows [r0, r0 + split) are tiled as a segment of their own, and the
                     * rest (padding) runs in the last tile's GEMM calls after a split */
} expert_seg;

/* One GEMM pair of the expert phase: rows [at, at + rows) of expert e's block, in segment seg
 * (e and at kept here for the queue's order). */
typedef struct expert_tile {
    size_t rows, at;
    int seg, e, last; /* last: the segment's last tile, which takes the rest and any split */
} expert_tile;

typedef struct {
    const moe_layer *L;
    const moe_experts *w;
    size_t C;                 /* rows per expert block */
    const expert_seg *seg;    /* the segments */
    const expert_tile *tile;  /* (n) tiles, longest first */
    size_t n;
    int par;                  /* par: one worker, threaded BLAS and activation */
    atomic_size_t next;       /* next tile to take */
    atomic_int rc;
} expert_pool;

/* Runs tiles from the pool until none is left. */
static void *expert_worker(void *arg)
{
    expert_pool *p = arg;
    size_t D = (size_t)p->L->d, FW = (size_t)p->L->fw;
    for (;;) {
        size_t i = atomic_fetch_add(&p->next, 1);
        if (i >= p->n || atomic_load(&p->rc))
            break;
        const expert_tile *t = &p->tile[i];
        const expert_seg *s = &p->seg[t->seg];
        size_t r0 = (size_t)t->e * p->C + t->at;
        size_t split = s->split && t->last ? s->split - (t->at - s->r0) : 0; /* its kept rows */
        int rc = ffn_rows_par(p->L, p->w, s->e, p->L->xin + r0 * D, t->rows, split,
                              p->L->hid + r0 * FW, p->L->out + r0 * D, p->par);
        if (rc)
            atomic_store(&p->rc, rc);
    }
    return NULL;
}

/* Longest first, so that the queue ends on its shortest tiles and the workers finish close
 * together (an expert of 2048 rows in 768-row tiles ends in one of 1280 rows; taken last, it
 * left the other worker idle for about 5% of the expert phase); ties by expert, then row. */
static int tile_cmp(const void *a, const void *b)
{
    const expert_tile *x = a, *y = b;
    if (x->rows != y->rows)
        return x->rows > y->rows ? -1 : 1;
    if (x->e != y->e)
        return x->e < y->e ? -1 : 1;
    return x->at < y->at ? -1 : x->at > y->at;
}

/* FFN_e on rows [0, rows_e) of each expert's block, and on [rows_e, C) too when padded.
 * Padded with libxsmm, the zero rows [rows_e, C) join the last tile of the kept rows as a split
 * (moe_gemm_pack_run): the kept rows meet the same kernel calls as unpadded (same bits; no
 * entry combines a zero row's output), and the packed weights are read once for both instead
 * of once more for a segment of zero rows. OpenBLAS packs the weights on every call anyway and
 * keeps two segments. */
static int experts_run(moe_layer *L, const moe_experts *w, size_t C, const long *rows, int pad)
{
    expert_seg *seg = L->seg;
    expert_tile *tile = L->tiles;
    int n = 0;
    L->rows_run = L->ntiles = 0;
    for (int e = 0; e < L->E; e++) {
        size_t r = rows[e] > 0 ? (size_t)rows[e] : 0;
        if (r && pad && r < C && L->p1) {
            seg[n++] = (expert_seg){e, 0, C, r};
        } else {
            if (r)
                seg[n++] = (expert_seg){e, 0, r, 0};
            if (pad && r < C)
                seg[n++] = (expert_seg){e, r, C - r, 0};
        }
        L->rows_run += pad ? C : r;
    }
    size_t T = 0; /* at most C / tile + 2 an expert (C <= C_max, tile >= MOE_TILE_ALIGN) */
    for (int i = 0; i < n; i++) {
        size_t kept = seg[i].split ? seg[i].split : seg[i].len; /* the rows that set the tiles */
        size_t nt = L->tile && kept >= 2 * L->tile ? kept / L->tile : 1;
        for (size_t j = 0; j < nt; j++) {
            size_t t0 = j * L->tile, len = j + 1 < nt ? L->tile : seg[i].len - t0;
            tile[T++] = (expert_tile){len, seg[i].r0 + t0, i, seg[i].e, j + 1 == nt};
        }
    }
    qsort(tile, T, sizeof *tile, tile_cmp);
    L->ntiles = T;
    const int blas_threads = moe_blas_threads();
    int nt = blas_threads > MOE_MAX_THREADS ? MOE_MAX_THREADS : blas_threads;
    if (nt < 1)
        nt = 1;
    if ((size_t)nt > T)
        nt = (int)T;
    expert_pool pool = {L, w, C, seg, tile, T, nt == 1, 0, 0};
    if (nt > 1)
        moe_blas_set_threads(1);
    moe_gemm_run_jobs(expert_worker, &pool, 0, nt); /* every worker takes tiles from one queue */
    if (nt > 1)
        moe_blas_set_threads(blas_threads);
    int rc = atomic_load(&pool.rc);
    if (rc)
        return moe_fail(rc, NULL, "an expert's FFN failed in a worker thread (expert phase)");
    return MOE_OK;
}

static int check_experts(const moe_experts *w, int E, int d, int f, int act, const char *where)
{
    if (!w || !w->w1 || !w->b1 || !w->w2 || !w->b2)
        return moe_fail(MOE_EINVAL, NULL, "expert weights missing (%s)", where);
    if (w->act < MOE_ACT_GELU_TANH || w->act > MOE_ACT_SWIGLU)
        return moe_fail(MOE_EINVAL, NULL, "unknown activation %d (%s)", w->act, where);
    if (w->E != E || w->d != d || w->f != f || w->act != act)
        return moe_fail(MOE_EINVAL, "allocate the layer with the experts' shape and activation",
                        "experts E=%d d=%d f=%d act=%s do not match the layer E=%d d=%d f=%d "
                        "act=%s (%s)", w->E, w->d, w->f, moe_act_name(w->act), E, d, f,
                        moe_act_name(act), where);
    return MOE_OK;
}

/* Every entry within (T, E, C); *sorted = whether tokens are non-decreasing in entry order. */
static int check_plan(const moe_plan *plan, int E, const char *where, int *sorted)
{
    if (plan->E != E)
        return moe_fail(MOE_EINVAL, NULL, "plan has %d experts, the layer %d (%s)", plan->E, E,
                        where);
    if (plan->n < 0 || plan->capacity < 0)
        return moe_fail(MOE_EINVAL, NULL, "plan has n = %d, capacity = %ld (%s)", plan->n,
                        plan->capacity, where);
    int s = 1;
    int32_t last = 0;
    for (size_t i = 0; i < plan->n_entries; i++) {
        const moe_entry *en = &plan->entries[i];
        if (en->token < 0 || en->token >= plan->n || en->expert < 0 || en->expert >= E ||
            en->slot < 0 || en->slot >= plan->capacity)
            return moe_fail(MOE_EINVAL, "a router wrote an entry outside the plan's shape",
                            "plan entry %zu (token %d, expert %d, slot %d) outside n = %d, "
                            "E = %d, C = %ld (%s)", i, en->token, en->expert, en->slot, plan->n,
                            E, plan->capacity, where);
        if (en->token < last)
            s = 0;
        last = en->token;
    }
    if (sorted)
        *sorted = s;
    return MOE_OK;
}

/* ---- allocation ---- */

moe_layer *moe_layer_alloc(int n_max, int E, long C_max, int d, int f, int act)
{
    if (n_max < 1 || E < 1 || C_max < 0 || d < 1 || f < 1 || act < MOE_ACT_GELU_TANH ||
        act > MOE_ACT_SWIGLU) {
        moe_fail(MOE_EINVAL, NULL, "bad layer shape n_max=%d E=%d C_max=%ld d=%d f=%d act=%d "
                 "(moe_layer_alloc)", n_max, E, C_max, d, f, act);
        return NULL;
    }
    int fw = act == MOE_ACT_SWIGLU ? 2 * f : f;
    if (act == MOE_ACT_SWIGLU && f > 1073741823) {
        moe_fail(MOE_EINVAL, NULL, "hidden width f=%d too large (moe_layer_alloc)", f);
        return NULL;
    }
    size_t rows, nx, nh;
    if (__builtin_mul_overflow((size_t)E, (size_t)(C_max > 0 ? C_max : 1), &rows) ||
        __builtin_mul_overflow(rows, (size_t)d, &nx) ||
        __builtin_mul_overflow(rows, (size_t)fw, &nh) || nx > SIZE_MAX / sizeof(float) ||
        nh > SIZE_MAX / sizeof(float)) {
        moe_fail(MOE_EINVAL, "use a smaller capacity", "layer workspace E=%d x C_max=%ld "
                 "overflows (moe_layer_alloc)", E, C_max);
        return NULL;
    }
    moe_layer *L = calloc(1, sizeof *L);
    if (!L) {
        moe_fail(MOE_ENOMEM, NULL, "out of memory (moe_layer_alloc)");
        return NULL;
    }
    L->n_max = n_max;
    L->E = E;
    L->C_max = C_max;
    L->d = d;
    L->f = f;
    L->fw = fw;
    L->act = act;
    L->rows = rows;
    L->xin = malloc(nx * sizeof *L->xin);
    L->hid = malloc(nh * sizeof *L->hid);
    L->out = malloc(nx * sizeof *L->out);
    L->used = calloc((size_t)E, sizeof *L->used);
    L->hits = malloc(rows);
    L->seg = malloc(2 * (size_t)E * sizeof *L->seg);
    L->tiles = malloc((size_t)E * ((size_t)(C_max > 0 ? C_max : 1) / MOE_TILE_ALIGN + 2) *
                      sizeof *L->tiles);
    if (!L->xin || !L->hid || !L->out || !L->used || !L->hits || !L->seg || !L->tiles) {
        moe_fail(MOE_ENOMEM, "use a smaller capacity, width or expert count",
                 "out of memory for layer workspaces of %zu x (%d + %d + %d) floats "
                 "(moe_layer_alloc)", rows, d, fw, d);
        moe_layer_free(L);
        return NULL;
    }
    if (moe_gemm_default() == MOE_GEMM_LIBXSMM && moe_layer_set_gemm(L, MOE_GEMM_LIBXSMM)) {
        moe_layer_free(L);
        return NULL;
    }
    return L;
}

void moe_layer_free(moe_layer *L)
{
    if (!L)
        return;
    free(L->xin);
    free(L->hid);
    free(L->out);
    free(L->used);
    free(L->hits);
    free(L->seg);
    free(L->tiles);
    moe_shared_ws_free(L->sh);
    moe_gemm_pack_free(L->p1), moe_gemm_pack_free(L->p2);
    free(L);
}

int moe_layer_set_gemm(moe_layer *L, int backend)
{
    if (backend != MOE_GEMM_OPENBLAS && backend != MOE_GEMM_LIBXSMM)
        return moe_fail(MOE_EINVAL, NULL, "unknown GEMM backend %d (moe_layer_set_gemm)",
                        backend);
    moe_gemm_pack_free(L->p1), moe_gemm_pack_free(L->p2);
    L->p1 = L->p2 = NULL;
    L->src1 = L->src2 = NULL;
    size_t E = (size_t)L->E, D = (size_t)L->d, F = (size_t)L->f, FW = (size_t)L->fw;
    int rc = backend == MOE_GEMM_OPENBLAS ? MOE_OK : moe_gemm_pack_alloc(E, D, FW, D, &L->p1);
    if (!rc && L->p1 && (rc = moe_gemm_pack_alloc(E, F, D, FW, &L->p2)))
        moe_gemm_pack_free(L->p1), L->p1 = NULL;
    moe_layer_set_tile_rows(L, L->p1 ? MOE_TILE_XSMM : 0);
    return rc;
}

int moe_layer_gemm(const moe_layer *L) { return L->p1 ? MOE_GEMM_LIBXSMM : MOE_GEMM_OPENBLAS; }

void moe_layer_repack(moe_layer *L) { L->src1 = L->src2 = NULL; }

void moe_layer_set_pad_to_capacity(moe_layer *L, int on) { L->pad = on != 0; }

void moe_layer_set_tile_rows(moe_layer *L, size_t rows)
{
    size_t t = (rows + MOE_TILE_ALIGN - 1) / MOE_TILE_ALIGN * MOE_TILE_ALIGN;
    L->tile = (double)t * L->d * L->f >= (double)MOE_TILE_MIN_MNK ? t : 0;
}

size_t moe_layer_tile_rows(const moe_layer *L) { return L->tile; }

size_t moe_layer_rows_run(const moe_layer *L) { return L->rows_run; }

size_t moe_layer_tiles(const moe_layer *L, int *expert, size_t *at, size_t *rows, size_t max)
{
    for (size_t i = 0; i < L->ntiles && i < max; i++) {
        expert[i] = L->tiles[i].e;
        at[i] = L->tiles[i].at;
        rows[i] = L->tiles[i].rows;
    }
    return L->ntiles;
}

/* ---- gate ---- */

/* The logits come from moesim's own fixed-order routine (gate.h), not from sgemm: every logit
 * is the same IEEE-754 double whatever the BLAS kernel, the thread count or the CPU, so routing
 * decisions are too. Written straight into logits (N,M): no workspace, any M >= 1. */
int moe_layer_gate(moe_layer *L, const float *x, int n, const float *wg, int m, double *logits)
{
    if (n < 0 || n > L->n_max)
        return moe_fail(MOE_EINVAL, NULL, "%d tokens outside the layer's 0..%d (moe_layer_gate)",
                        n, L->n_max);
    if (m < 1)
        return moe_fail(MOE_EINVAL, NULL, "gate needs M >= 1 columns (got %d) (moe_layer_gate)",
                        m);
    moe_gate_logits(x, (size_t)n, (size_t)L->d, wg, (size_t)m, logits, moe_blas_threads());
    return MOE_OK;
}

/* ---- forward: sparse plans ----
 * Dispatch and combine are memory-bound copies; with T BLAS threads they are split over T
 * threads. Dispatch writes one distinct row (e,s) per entry when no slot holds two entries (the
 * plans of every router), so any split of the entries is safe; a plan with a slot of two or more
 * entries is dispatched on one thread. Combine adds into y[t]: it is split only at token
 * boundaries, when the entries are sorted by token (every token-choice router emits them so),
 * and each thread writes its own token range; otherwise it runs on one thread. Per token, the
 * entries are added in the same order either way, so y does not depend on the thread count.
 *
 * A row written by one entry alone is stored as 0 + w * x, the bits that zeroing it and adding
 * w * x give (0 + v is v, but +0 for v = -0), without the pass that zeroes it first: the slots
 * of a plan whose every slot has at most one entry (dispatch), a sorted plan's first entry of
 * each token (combine). Rows no entry writes are zeroed; other plans zero every row, then add. */
enum { COPY_ADD, COPY_SET, COPY_COMBINE_ADD, COPY_COMBINE_SET };
typedef struct {
    const moe_layer *L;
    const moe_entry *en;
    const float *x;
    float *y;
    size_t C, e0, e1;   /* entries [e0, e1) */
    size_t t0, t1;      /* combine: token rows [t0, t1) of y this job writes */
    int mode;           /* COPY_*: dispatch or combine, each adding to zeroed rows or setting */
} copy_job;

static void copy_dispatch(const copy_job *j)
{
    size_t D = (size_t)j->L->d;
    for (size_t i = j->e0; i < j->e1; i++) {
        const moe_entry *en = &j->en[i];
        float *h = j->L->xin + ((size_t)en->expert * j->C + (size_t)en->slot) * D;
        if (j->mode == COPY_SET)
            moe_act_scale0((float)en->dispatch_w, j->x + (size_t)en->token * D, h, D);
        else
            moe_act_axpy((float)en->dispatch_w, j->x + (size_t)en->token * D, h, D);
    }
}

static void copy_combine(const copy_job *j)
{
    size_t D = (size_t)j->L->d, next = j->t0; /* next: the first token row not written yet */
    if (j->mode == COPY_COMBINE_ADD)
        memset(j->y + j->t0 * D, 0, (j->t1 - j->t0) * D * sizeof(float));
    for (size_t i = j->e0; i < j->e1; i++) {
        const moe_entry *en = &j->en[i];
        size_t t = (size_t)en->token;
        const float *o = j->L->out + ((size_t)en->expert * j->C + (size_t)en->slot) * D;
        if (j->mode == COPY_COMBINE_SET && t >= next) { /* sorted: the token's first entry */
            memset(j->y + next * D, 0, (t - next) * D * sizeof(float));
            moe_act_scale0((float)en->combine_w, o, j->y + t * D, D);
            next = t + 1;
        } else {
            moe_act_axpy((float)en->combine_w, o, j->y + t * D, D);
        }
    }
    if (j->mode == COPY_COMBINE_SET && next < j->t1)
        memset(j->y + next * D, 0, (j->t1 - next) * D * sizeof(float));
}

static void *copy_run(void *arg)
{
    const copy_job *j = arg;
    if (j->mode == COPY_ADD || j->mode == COPY_SET)
        copy_dispatch(j);
    else
        copy_combine(j);
    return NULL;
}

/* Dispatch: h[e*C + s] = sum dispatch_w * x[t] over the rows 0..used_e-1 of each expert
 * (padded to capacity: all C rows, the ones without an entry zero); fills L->used. */
static void dispatch_sparse(moe_layer *L, const moe_plan *plan, const float *x, int nt)
{
    size_t D = (size_t)L->d, C = (size_t)plan->capacity, ne = plan->n_entries;
    const moe_entry *en = plan->entries;
    unsigned char *hits = L->hits;
    memset(hits, 0, (size_t)L->E * C);
    for (int e = 0; e < L->E; e++)
        L->used[e] = 0;
    int multi = 0; /* a slot with two or more entries */
    for (size_t i = 0; i < ne; i++) {
        size_t e = (size_t)en[i].expert, s = (size_t)en[i].slot;
        if (s + 1 > (size_t)L->used[e])
            L->used[e] = (long)s + 1;
        multi |= hits[e * C + s];
        hits[e * C + s] = 1;
    }
    for (int e = 0; e < L->E; e++) {
        size_t r = L->pad ? C : (size_t)L->used[e];
        float *h = L->xin + (size_t)e * C * D;
        if (multi) {
            if (r)
                memset(h, 0, r * D * sizeof(float));
            continue;
        }
        for (size_t s = 0; s < r; s++) /* the rows no entry writes */
            if (!hits[(size_t)e * C + s])
                memset(h + s * D, 0, D * sizeof(float));
    }
    if (multi)
        nt = 1;
    copy_job jobs[MOE_MAX_THREADS];
    for (int i = 0; i < nt; i++)
        jobs[i] = (copy_job){L, en, x, NULL, C, ne * (size_t)i / (size_t)nt,
                             ne * (size_t)(i + 1) / (size_t)nt, 0, 0, multi ? COPY_ADD : COPY_SET};
    moe_gemm_run_jobs(copy_run, jobs, sizeof *jobs, nt);
}

/* Combine: y[t] = sum combine_w * out[e*C + s], split at token boundaries when sorted. */
static void combine_sparse(moe_layer *L, const moe_plan *plan, int sorted, float *y, int nt)
{
    size_t C = (size_t)plan->capacity, n = (size_t)plan->n, ne = plan->n_entries;
    const moe_entry *en = plan->entries;
    copy_job jobs[MOE_MAX_THREADS];
    int ct = sorted ? nt : 1;
    size_t cut[MOE_MAX_THREADS + 1];
    cut[0] = 0;
    cut[ct] = ne;
    for (int i = 1; i < ct; i++) {
        size_t c = ne * (size_t)i / (size_t)ct;
        if (c < cut[i - 1])
            c = cut[i - 1];
        while (c > 0 && c < ne && en[c].token == en[c - 1].token)
            c++;
        cut[i] = c;
    }
    for (int i = 0; i < ct; i++) {
        size_t tok0 = i == 0 ? 0 : (cut[i] < ne ? (size_t)en[cut[i]].token : n);
        size_t tok1 = i == ct - 1 ? n : (cut[i + 1] < ne ? (size_t)en[cut[i + 1]].token : n);
        if (tok1 < tok0)
            tok1 = tok0;
        jobs[i] = (copy_job){L, en, NULL, y, C, cut[i], cut[i + 1], tok0, tok1,
                             sorted ? COPY_COMBINE_SET : COPY_COMBINE_ADD};
    }
    moe_gemm_run_jobs(copy_run, jobs, sizeof *jobs, ct);
}

static int forward_sparse(moe_layer *L, const moe_experts *w, const moe_plan *plan, int sorted,
                          const float *x, float *y, moe_phase_times *tm)
{
    int nt = moe_blas_threads();
    if (nt > MOE_MAX_THREADS)
        nt = MOE_MAX_THREADS;
    if (nt < 1 || plan->n_entries * (size_t)L->d < (1u << 18)) /* small: one thread */
        nt = 1;
    double t0 = moe_now();
    dispatch_sparse(L, plan, x, nt);
    double t1 = moe_now();
    /* experts: FFN_e on each expert's contiguous block of used rows */
    int rc = experts_run(L, w, (size_t)plan->capacity, L->used, L->pad);
    if (rc)
        return rc;
    double t2 = moe_now();
    combine_sparse(L, plan, sorted, y, nt);
    double t3 = moe_now();
    if (tm) {
        tm->dispatch = t1 - t0;
        tm->experts = t2 - t1;
        tm->combine = t3 - t2;
    }
    return MOE_OK;
}

/* ---- forward: dense plans (soft_moe) ---- */

/* Fill W (tb,M) in the hidden workspace with the dispatch (which = 0) or combine (which = 1)
 * weights of tokens t0..t0+tb-1; column e*C + s. *pos: cursor into token-sorted entries. */
static void dense_block(moe_layer *L, const moe_plan *plan, int sorted, size_t *pos, size_t t0,
                        size_t tb, int which)
{
    size_t C = (size_t)plan->capacity, M = (size_t)L->E * C;
    float *W = L->hid;
    memset(W, 0, tb * M * sizeof *W);
    const moe_entry *en = plan->entries;
    size_t i = sorted ? *pos : 0;
    for (; i < plan->n_entries; i++) {
        size_t t = (size_t)en[i].token;
        if (t < t0 || t >= t0 + tb) {
            if (sorted && t >= t0 + tb)
                break;
            continue;
        }
        W[(t - t0) * M + (size_t)en[i].expert * C + (size_t)en[i].slot] +=
            (float)(which ? en[i].combine_w : en[i].dispatch_w);
    }
    *pos = i;
}

static int forward_dense(moe_layer *L, const moe_experts *w, const moe_plan *plan, int sorted,
                         const float *x, float *y, moe_phase_times *tm)
{
    size_t D = (size_t)L->d, C = (size_t)plan->capacity, FW = (size_t)L->fw;
    size_t n = (size_t)plan->n, M = (size_t)L->E * C;
    size_t tb = L->rows * FW / M; /* >= FW since M <= R */
    if (tb > n)
        tb = n;
    int rc;

    /* dispatch: H (M,D) = sum over token blocks Disp_b^T (M,tb) X_b (tb,D) */
    double t0 = moe_now();
    size_t pos = 0;
    for (size_t b0 = 0; b0 < n; b0 += tb) {
        size_t rows = n - b0 < tb ? n - b0 : tb;
        dense_block(L, plan, sorted, &pos, b0, rows, 0);
        rc = moe_gemm_sgemm(1, M, D, rows, L->hid, M, x + b0 * D, D, b0 ? 1.0f : 0.0f, L->xin, D,
                   "soft dispatch");
        if (rc)
            return rc;
    }
    double t1 = moe_now();

    /* experts: FFN_e on its C slots (every slot of a dense plan is filled) */
    for (int e = 0; e < L->E; e++)
        L->used[e] = (long)C;
    if ((rc = experts_run(L, w, C, L->used, 0)))
        return rc;
    double t2 = moe_now();

    /* combine: Y_b (tb,D) = Cmb_b (tb,M) Out (M,D) */
    pos = 0;
    for (size_t b0 = 0; b0 < n; b0 += tb) {
        size_t rows = n - b0 < tb ? n - b0 : tb;
        dense_block(L, plan, sorted, &pos, b0, rows, 1);
        rc = moe_gemm_sgemm(0, rows, D, M, L->hid, M, L->out, D, 0.0f, y + b0 * D, D,
                            "soft combine");
        if (rc)
            return rc;
    }
    double t3 = moe_now();
    if (tm) {
        tm->dispatch = t1 - t0;
        tm->experts = t2 - t1;
        tm->combine = t3 - t2;
    }
    return MOE_OK;
}

/* ---- shared experts (shared_ffn.h) ---- */

int moe_layer_set_shared(moe_layer *L, const moe_shared *sh)
{
    moe_shared_ws_free(L->sh);
    L->sh = NULL;
    if (!sh || sh->S == 0)
        return MOE_OK;
    int rc = moe_shared_check(sh, L->d, L->act, "moe_layer_set_shared");
    if (rc)
        return rc;
    L->sh = moe_shared_ws_alloc(sh, L->n_max, L->d, L->act);
    return L->sh ? MOE_OK : moe_fail(MOE_ENOMEM, NULL, "cannot set the shared experts "
                                     "(moe_layer_set_shared)");
}

/* w's shared experts are the ones the layer packed. */
static int shared_check(const moe_layer *L, const moe_experts *w, const char *where)
{
    if (!w->shared || w->shared->S == 0 || moe_shared_ws_source(L->sh) == w->shared)
        return MOE_OK;
    return moe_fail(MOE_EINVAL, "call moe_layer_set_shared with the experts' shared experts",
                    "the experts have %d shared experts the layer was not given (%s)",
                    w->shared->S, where);
}

/* y (n,D) += the shared experts of w on x (n,D); the seconds go to the experts phase. */
static int shared_forward(moe_layer *L, const moe_experts *w, const float *x, size_t n, float *y,
                          moe_phase_times *tm)
{
    if (!w->shared || w->shared->S == 0 || n == 0)
        return MOE_OK;
    double t0 = moe_now();
    int rc = moe_shared_ws_add(L->sh, x, n, y);
    if (tm)
        tm->experts += moe_now() - t0;
    return rc;
}

int moe_layer_forward_shared(moe_layer *L, const moe_experts *w, const float *x, int n, float *y,
                             moe_phase_times *tm)
{
    int rc = shared_check(L, w, "moe_layer_forward_shared");
    if (rc)
        return rc;
    if (n < 0 || n > L->n_max)
        return moe_fail(MOE_EINVAL, NULL, "%d tokens outside the layer's 0..%d "
                        "(moe_layer_forward_shared)", n, L->n_max);
    return shared_forward(L, w, x, (size_t)n, y, tm);
}

int moe_layer_forward(moe_layer *L, const moe_experts *w, const moe_plan *plan, const float *x,
                      float *y, moe_phase_times *tm)
{
    int rc = check_experts(w, L->E, L->d, L->f, L->act, "moe_layer_forward");
    if (rc)
        return rc;
    if (plan->n > L->n_max)
        return moe_fail(MOE_EINVAL, "allocate the layer for more tokens",
                        "plan has %d tokens, the layer's workspace %d (moe_layer_forward)",
                        plan->n, L->n_max);
    if (plan->capacity > L->C_max)
        return moe_fail(MOE_EINVAL, "allocate the layer with C_max >= the plan's capacity",
                        "plan capacity %ld exceeds the layer's C_max %ld (moe_layer_forward)",
                        plan->capacity, L->C_max);
    int sorted;
    rc = check_plan(plan, L->E, "moe_layer_forward", &sorted);
    if (rc)
        return rc;
    if ((rc = shared_check(L, w, "moe_layer_forward")))
        return rc;
    moe_gemm_pack_sync(L->p1, w->w1, &L->src1, moe_blas_threads()); /* packs a new address */
    moe_gemm_pack_sync(L->p2, w->w2, &L->src2, moe_blas_threads());
    if (tm)
        tm->dispatch = tm->experts = tm->combine = 0.0;
    L->rows_run = L->ntiles = 0;
    if (plan->n == 0)
        return MOE_OK;
    if (plan->capacity == 0) /* no slot: every token gets y = 0 */
        memset(y, 0, (size_t)plan->n * (size_t)L->d * sizeof *y);
    else if ((rc = plan->dense ? forward_dense(L, w, plan, sorted, x, y, tm)
                               : forward_sparse(L, w, plan, sorted, x, y, tm)))
        return rc;
    return shared_forward(L, w, x, (size_t)plan->n, y, tm);
}

/* ---- naive reference ---- */

static double act_d(int act, double v)
{
    switch (act) {
    case MOE_ACT_GELU_TANH:
        return 0.5 * v * (1.0 + tanh(sqrt(2.0 / M_PI) * (v + 0.044715 * v * v * v)));
    case MOE_ACT_GELU_ERF:
        return 0.5 * v * (1.0 + erf(v / sqrt(2.0)));
    case MOE_ACT_RELU:
        return v > 0.0 ? v : 0.0;
    default:
        return v;
    }
}

/* Triple loops in double, straight from the definitions in layer.h and docs/routing.md section 1:
 * h[e,s] = sum dispatch_w x[t]; o[e,s] = FFN_e(h[e,s]) for every slot with an entry;
 * y[t] = sum combine_w o[e,s]. Allocates its own (E*C, D) buffers: a reference, not a kernel. */
int moe_layer_forward_naive(const moe_experts *w, const moe_plan *plan, const float *x, float *y)
{
    int rc = check_experts(w, plan->E, w ? w->d : 0, w ? w->f : 0, w ? w->act : 0,
                           "moe_layer_forward_naive");
    if (rc)
        return rc;
    rc = check_plan(plan, w->E, "moe_layer_forward_naive", NULL);
    if (rc)
        return rc;
    size_t E = (size_t)w->E, C = (size_t)plan->capacity, D = (size_t)w->d, F = (size_t)w->f;
    size_t n = (size_t)plan->n, FW = w->act == MOE_ACT_SWIGLU ? 2 * F : F;
    double *h = calloc(E * C * D + 1, sizeof *h);
    double *o = calloc(E * C * D + 1, sizeof *o);
    double *a = malloc((FW + 1) * sizeof *a);
    double *acc = calloc(n * D + 1, sizeof *acc);
    char *has = calloc(E * C + 1, 1);
    if (!h || !o || !a || !acc || !has) {
        free(h), free(o), free(a), free(acc), free(has);
        return moe_fail(MOE_ENOMEM, NULL, "out of memory (moe_layer_forward_naive)");
    }
    const moe_entry *en = plan->entries;
    for (size_t i = 0; i < plan->n_entries; i++) {
        size_t row = (size_t)en[i].expert * C + (size_t)en[i].slot;
        has[row] = 1;
        for (size_t c = 0; c < D; c++)
            h[row * D + c] += en[i].dispatch_w * (double)x[(size_t)en[i].token * D + c];
    }
    for (size_t row = 0; row < E * C; row++) {
        if (!has[row])
            continue;
        size_t e = row / C;
        const float *w1 = w->w1 + e * D * FW, *b1 = w->b1 + e * FW;
        const float *w2 = w->w2 + e * F * D, *b2 = w->b2 + e * D;
        for (size_t j = 0; j < FW; j++) {
            double s = b1[j];
            for (size_t c = 0; c < D; c++)
                s += h[row * D + c] * (double)w1[c * FW + j];
            a[j] = s;
        }
        for (size_t j = 0; j < F; j++)
            a[j] = w->act == MOE_ACT_SWIGLU ? a[j] / (1.0 + exp(-a[j])) * a[F + j]
                                            : act_d(w->act, a[j]);
        for (size_t c = 0; c < D; c++) {
            double s = b2[c];
            for (size_t j = 0; j < F; j++)
                s += a[j] * (double)w2[j * D + c];
            o[row * D + c] = s;
        }
    }
    for (size_t i = 0; i < plan->n_entries; i++) {
        size_t row = (size_t)en[i].expert * C + (size_t)en[i].slot;
        for (size_t c = 0; c < D; c++)
            acc[(size_t)en[i].token * D + c] += en[i].combine_w * o[row * D + c];
    }
    if ((rc = moe_shared_add_naive(w->shared, w->d, w->act, x, n, acc))) {
        free(h), free(o), free(a), free(acc), free(has);
        return rc;
    }
    for (size_t i = 0; i < n * D; i++)
        y[i] = (float)acc[i];
    free(h), free(o), free(a), free(acc), free(has);
    return MOE_OK;
}

/* ---- dense mixture ---- */

/* Chunks of up to R selected rows are gathered into xin; per expert one GEMM pair over the
 * chunk, then y_row += p[t,e] * FFN_e(x_t). */
int moe_layer_dense_mixture(moe_layer *L, const moe_experts *w, const float *x, int n,
                            const double *p, const int *rows, int nrows, float *y)
{
    int rc = check_experts(w, L->E, L->d, L->f, L->act, "moe_layer_dense_mixture");
    if (rc)
        return rc;
    if (n < 0 || (rows && nrows < 0))
        return moe_fail(MOE_EINVAL, NULL, "dense mixture of n = %d, nrows = %d "
                        "(moe_layer_dense_mixture)", n, nrows);
    if ((rc = shared_check(L, w, "moe_layer_dense_mixture")))
        return rc;
    moe_gemm_pack_sync(L->p1, w->w1, &L->src1, moe_blas_threads()); /* packs a new address */
    moe_gemm_pack_sync(L->p2, w->w2, &L->src2, moe_blas_threads());
    size_t cnt = rows ? (size_t)nrows : (size_t)n;
    if (rows)
        for (size_t i = 0; i < cnt; i++)
            if (rows[i] < 0 || rows[i] >= n)
                return moe_fail(MOE_EINVAL, NULL, "row %d of the dense mixture outside 0..%d "
                                "(moe_layer_dense_mixture)", rows[i], n - 1);
    size_t D = (size_t)L->d, E = (size_t)L->E;
    memset(y, 0, cnt * D * sizeof *y);
    for (size_t c0 = 0; c0 < cnt; c0 += L->rows) {
        size_t nc = cnt - c0 < L->rows ? cnt - c0 : L->rows;
        for (size_t i = 0; i < nc; i++) {
            size_t t = rows ? (size_t)rows[c0 + i] : c0 + i;
            memcpy(L->xin + i * D, x + t * D, D * sizeof *x);
        }
        for (size_t e = 0; e < E; e++) {
            rc = ffn_rows_par(L, w, (int)e, L->xin, nc, 0, L->hid, L->out, 1);
            if (rc)
                return rc;
            for (size_t i = 0; i < nc; i++) {
                size_t t = rows ? (size_t)rows[c0 + i] : c0 + i;
                moe_act_axpy((float)p[t * E + e], L->out + i * D, y + (c0 + i) * D, D);
            }
        }
        if ((rc = shared_forward(L, w, L->xin, nc, y + c0 * D, NULL)))
            return rc;
    }
    return MOE_OK;
}

/* ---- phase timings ---- */

const char *const moe_phase_names[MOE_NPHASES] = {"gate",    "route",   "dispatch",
                                                  "experts", "combine", "total"};

void moe_phase_times_array(const moe_phase_times *t, double *v)
{
    v[MOE_PHASE_GATE] = t->gate;
    v[MOE_PHASE_ROUTE] = t->route;
    v[MOE_PHASE_DISPATCH] = t->dispatch;
    v[MOE_PHASE_EXPERTS] = t->experts;
    v[MOE_PHASE_COMBINE] = t->combine;
    v[MOE_PHASE_TOTAL] = t->total;
}

/* ---- error ---- */

double moe_rel_l2(const float *a, const float *ref, size_t len)
{
    double num = 0.0, den = 0.0;
    for (size_t i = 0; i < len; i++) {
        double d = (double)a[i] - (double)ref[i];
        num += d * d;
        den += (double)ref[i] * (double)ref[i];
    }
    if (den == 0.0)
        return num == 0.0 ? 0.0 : INFINITY;
    return sqrt(num / den);
}

/* ---- workspace size (`moesim bench` reports memory) ---- */

size_t moe_layer_workspace_bytes(const moe_layer *L)
{
    if (!L)
        return 0;
    return L->rows * (2 * (size_t)L->d + (size_t)L->fw) * sizeof(float) +
           (size_t)L->E * sizeof *L->used + L->rows + moe_shared_ws_bytes(L->sh) +
           moe_layer_packed_bytes(L);
}

size_t moe_layer_packed_bytes(const moe_layer *L)
{
    return L ? moe_gemm_pack_bytes(L->p1) + moe_gemm_pack_bytes(L->p2) : 0;
}

/* ---- building blocks for the shared experts (shared_ffn.c) ---- */

int moe_layer_sgemm(int ta, size_t m, size_t n, size_t k, const float *a, size_t lda,
                    const float *b, size_t ldb, float beta, float *c, size_t ldc,
                    const char *where)
{
    return moe_gemm_sgemm(ta, m, n, k, a, lda, b, ldb, beta, c, ldc, where);
}

void moe_layer_bias_act_rows(int act, float *buf, size_t rows, size_t ld, const float *b,
                             size_t width)
{
    act_parallel(NULL, act, buf, rows, ld, b, width);
}

double moe_act_ref(int act, double v) { return act_d(act, v); }
