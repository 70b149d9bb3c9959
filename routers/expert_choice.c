/* expert_choice.c: the expert choice router (Zhou et al. 2022), docs/routing.md section 3.
 *
 * S = softmax(L) per token; each expert takes its top C = ROUND(n * cf / E) tokens by S[:,e]
 * (moe_capacity with k = 1, capped at n; ties to the lower token index: stable sort).
 * slot = rank in that selection (0 = highest score, as flaxformer and V-MoE), dispatch 1,
 * combine S[t,e]. Entries in expert-major order (expert, then slot). A token may be taken
 * by 0..E experts. Claim-less statistics (docs/metrics.md): assigned_load[e] = C,
 * importance[e] = sum of e's combine weights, n_claims = entries, aux_loss = 0, k = 0.
 * Fills the moe_router_type interface of moe.h.
 */
#include "moe.h"
#include "claims.h"
#include "colselect.h"
#include "par.h"
#include "route_memo.h"
#include "vexp.h"

#include <math.h>
#include <stdlib.h>
#if defined(__AVX512F__) || defined(__AVX2__)
#include <immintrin.h>
#endif

/* ---- algorithm ----
 * Selection, not sorting: the order "higher score first, equal scores lower token first" is
 * total, so an expert's top C are one set and their order is unique, and any method that finds
 * them in that order gives the stable argsort's plan.
 *   1. The tokens are split into blocks, one per thread. A thread computes its tokens' softmax
 *      rows (16 at a time, cache-resident) and keeps, for every expert, a list of candidates
 *      holding at least the best cap = min(C, block) tokens of the block seen so far: a row is
 *      compared with the experts' thresholds eight experts at a time, and a token joins an
 *      expert's list only when its score is strictly above the threshold. When a list reaches
 *      its room of 2 cap + 32, it is cut (moe_cand_cut, colselect.h) to the candidates above a
 *      score x with at least cap candidates above it, and the threshold becomes x: a later
 *      token with a score <= x can never be among the block's best cap (with x = the cap-th
 *      best score, the fallback, a later token with that score comes after all of them). Most
 *      tokens cost one vector comparison per eight experts.
 *   2. Per expert (ranges of experts on the threads): the blocks' lists together hold the
 *      expert's best C; a cut and a selection keep them, a sort orders them, and they are
 *      written as the expert's entries in slot order. */

/* ---- workspace ---- */

/* softmax rows computed together; list room beyond 2 cap; the lists a route memo keeps are
 * built for EC_MEMO_CF times the capacity when that is at most 1/16 of a block (a sweep's
 * capacity factors up to that many times the first one's reuse them) */
enum { EC_ROWS = 16, EC_SLACK = 32, EC_MEMO_CF = 4 };

typedef struct {
    moe_cand *list;  /* (P,E,room) candidate lists of block p, expert e */
    size_t list_cap; /* allocated candidates */
    moe_cand *scr;   /* selection scratch: room per block in step 1, 2 P room per range in 2 */
    size_t scr_cap;
    long *cnt;       /* (P,E) candidates in each list */
    double *thr;     /* (P,E) entry threshold: -inf until the first selection */
    double *row;     /* (P,EC_ROWS,E) softmax rows per block */
    int finite[MOE_PAR_MAX]; /* per block: its logits are all finite */
    /* the lists of a route that a route memo keeps (route_memo.h): built for capacity built_C
     * on built_P blocks of built_room, they hold every expert's best C of each block for any
     * C <= built_C, so a route of the same logits at such a C skips step 1 */
    int built, built_P;
    long built_C, built_room;
    moe_claims *cl; /* the shared rows pass's workspace (ec_rows), made at its first use */
    int n_max;      /* the router's tokens per route (for cl) */
} ec_ws;

static void ec_free(moe_router *r)
{
    ec_ws *w = r->ws;
    if (!w)
        return;
    free(w->list);
    free(w->scr);
    free(w->cnt);
    free(w->thr);
    free(w->row);
    moe_claims_free(w->cl);
    free(w);
    r->ws = NULL;
}

static int ec_alloc(moe_router *r)
{
    ec_ws *w = calloc(1, sizeof *w);
    if (!w)
        return moe_fail(MOE_ENOMEM, NULL, "out of memory (router expert_choice workspace)");
    r->ws = w;
    w->n_max = r->n_max;
    const size_t pe = (size_t)MOE_PAR_MAX * (size_t)r->E;
    w->cnt = malloc(pe * sizeof *w->cnt);
    w->thr = malloc(pe * sizeof *w->thr);
    w->row = malloc(pe * EC_ROWS * sizeof *w->row);
    if (!w->cnt || !w->thr || !w->row) {
        ec_free(r);
        return moe_fail(MOE_ENOMEM, NULL, "out of memory (router expert_choice workspace)");
    }
    return MOE_OK;
}

/* *buf grown to at least need candidates (contents not kept). */
static int ec_grow(moe_cand **buf, size_t *cap, size_t need, int n, int E)
{
    if (*cap >= need)
        return MOE_OK;
    free(*buf);
    *cap = 0;
    if (!(*buf = malloc(need * sizeof **buf)))
        return moe_fail(MOE_ENOMEM, "use fewer tokens per routing group or a smaller capacity",
                        "out of memory (expert_choice candidates for %d tokens x %d experts)", n,
                        E);
    *cap = need;
    return MOE_OK;
}

/* ---- step 1: candidates per block ---- */

typedef struct {
    ec_ws *w;
    const double *logits;
    int n, E, P, NM; /* tokens, experts, blocks (the rows pass's thread parts), expert ranges */
    long C, room;    /* capacity; list room per (block, expert) */
    long Cb;         /* the capacity the lists are built for (>= C) */
    moe_entry *out;  /* (E,C) the plan's entries */
    double *imp;     /* (E) importance */
    double *lse;     /* (T) the rows' logsumexp (plan->lse) */
} ec_job;

/* Token t with score v into expert e's list of block p (room j->room, keeping cap). */
static inline void ec_offer(const ec_job *j, moe_cand *list, long *cnt, double *thr, long cap,
                            moe_cand *scr, double v, int32_t t)
{
    list[(*cnt)++] = (moe_cand){v, t};
    if (*cnt == j->room && *cnt > cap) /* full: keep what can be among the best cap */
        *cnt = moe_cand_cut(list, *cnt, cap, thr, scr);
}

/* The experts whose threshold the softmax row of token t beats (most tokens: none). */
static void ec_row(const ec_job *j, moe_cand *lists, long *cnt, double *thr, long cap,
                   moe_cand *scr, const double *row, int32_t t)
{
    const int E = j->E;
    int e = 0;
#if defined(__AVX512F__)
    for (; e < E; e += 8) {
        const __mmask8 ld = E - e >= 8 ? 0xff : (__mmask8)((1u << (E - e)) - 1u);
        __mmask8 m = _mm512_mask_cmp_pd_mask(ld, _mm512_maskz_loadu_pd(ld, row + e),
                                             _mm512_maskz_loadu_pd(ld, thr + e), _CMP_GT_OQ);
        while (m) {
            const int q = e + __builtin_ctz(m);
            m &= (__mmask8)(m - 1);
            ec_offer(j, lists + (size_t)q * j->room, cnt + q, thr + q, cap, scr, row[q], t);
        }
    }
#elif defined(__AVX2__)
    for (; e + 8 <= E; e += 8) { /* an offer changes only its own expert's threshold */
        unsigned m = (unsigned)_mm256_movemask_pd(_mm256_cmp_pd(
                         _mm256_loadu_pd(row + e), _mm256_loadu_pd(thr + e), _CMP_GT_OQ)) |
                     (unsigned)_mm256_movemask_pd(_mm256_cmp_pd(_mm256_loadu_pd(row + e + 4),
                                                                _mm256_loadu_pd(thr + e + 4),
                                                                _CMP_GT_OQ)) << 4;
        while (m) {
            const int q = e + __builtin_ctz(m);
            m &= m - 1;
            ec_offer(j, lists + (size_t)q * j->room, cnt + q, thr + q, cap, scr, row[q], t);
        }
    }
#endif
    for (; e < E; e++)
        if (row[e] > thr[e])
            ec_offer(j, lists + (size_t)e * j->room, cnt + e, thr + e, cap, scr, row[e], t);
}

static void ec_block(void *arg, int p, int np)
{
    ec_job *j = arg;
    ec_ws *w = j->w;
    const int E = j->E;
    long lo, hi;
    moe_par_range(j->n, p, np, &lo, &hi);
    const long cap = j->Cb < hi - lo ? j->Cb : hi - lo;
    double *row = w->row + (size_t)p * EC_ROWS * E, *thr = w->thr + (size_t)p * E;
    long *cnt = w->cnt + (size_t)p * E;
    moe_cand *lists = w->list + (size_t)p * E * j->room, *scr = w->scr + (size_t)p * j->room;
    for (int e = 0; e < E; e++)
        cnt[e] = 0, thr[e] = cap > 0 ? -INFINITY : INFINITY;
    int fin = 1;
    for (long t0 = lo; t0 < hi; t0 += EC_ROWS) {
        const int nr = hi - t0 < EC_ROWS ? (int)(hi - t0) : EC_ROWS;
        const double *x = j->logits + (size_t)t0 * E;
        int slow = 0;
        moe_softmax_rows_more(x, nr, E, row,
                              &(moe_softmax_more){.lse = j->lse + t0, .slow = &slow});
        fin &= moe_softmax_finite(x, (size_t)nr * E, slow);
        for (int q = 0; q < nr; q++)
            ec_row(j, lists, cnt, thr, cap, scr, row + (size_t)q * E, (int32_t)(t0 + q));
    }
    w->finite[p] = fin;
}

/* Step 1 on the shared rows pass (ec_rows): the rows of chunk [t0, t1) (their softmax p) into
 * the lists of the pass's thread part, whose chunks come in increasing token order, as a
 * block's rows come to ec_block; a part's lists keep its best cap of whatever tokens it met. */
static void ec_chunk(void *ctx, long t0, long t1, const double *p, int part)
{
    const ec_job *j = ctx;
    ec_ws *w = j->w;
    const int E = j->E;
    const long cap = j->Cb;
    moe_cand *lists = w->list + (size_t)part * E * j->room, *scr = w->scr + (size_t)part * j->room;
    for (long t = t0; t < t1; t++)
        ec_row(j, lists, w->cnt + (size_t)part * E, w->thr + (size_t)part * E, cap, scr,
               p + (size_t)(t - t0) * E, (int32_t)t);
}

/* The claims' rows pass (claims.h) over the logits, when the plan's metrics observe the rows:
 * the softmax rows and logsumexps once for the router and the metrics (as hash_rows), so that
 * the metrics take every expert_choice plan's rows the same way. With lists = 1 it is also
 * step 1: the pass hands its chunks to whichever thread is free, so a part may meet any number
 * of tokens, and it is taken only when the lists' room stays below a block (room <= n / P),
 * where any part's lists hold its best cap (a full list is cut back to cap). Returns
 * MOE_EINPUT for a non-finite logit. */
static int ec_rows(ec_job *j, moe_plan *plan, int lists)
{
    ec_ws *w = j->w;
    if (!w->cl && !(w->cl = moe_claims_alloc(w->n_max, 1, j->E, 0)))
        return MOE_ENOMEM;
    moe_claims *cl = w->cl;
    if (!cl->p && !(cl->p = malloc(moe_claims_rows_scratch(cl->n_max, j->E) * sizeof *cl->p)))
        return moe_fail(MOE_ENOMEM, NULL, "out of memory (softmax rows of %d tokens)", j->n);
    for (int p = 0; lists && p < j->P; p++) /* (else the lists are a memo's, or ec_block's) */
        for (int e = 0; e < j->E; e++) {
            w->cnt[(size_t)p * j->E + e] = 0;
            w->thr[(size_t)p * j->E + e] = j->Cb > 0 ? -INFINITY : INFINITY;
        }
    cl->stats_in_rows = 0;
    cl->rows_chunk = lists ? ec_chunk : NULL;
    plan->k = 0; /* (the metrics' rows observer reads the plan's experts per token) */
    int rc = moe_claims_rows(cl, j->logits, j->n, lists ? moe_claims_row_chunk : NULL, j, plan);
    cl->rows_chunk = NULL;
    for (int p = 0; lists && p < j->P; p++)
        w->finite[p] = 1; /* (the pass checked them) */
    return rc;
}

/* ---- step 2: each expert's best C ---- */

/* Experts of range i: gather the blocks' lists, keep the best C, sort them into the entries. */
static void ec_merge(void *arg, int i, int np)
{
    ec_job *j = arg;
    ec_ws *w = j->w;
    const size_t all = (size_t)j->P * (size_t)j->room;
    moe_cand *g = w->scr + 2 * all * (size_t)i, *tmp = g + all;
    long e0, e1;
    moe_par_range(j->E, i, np, &e0, &e1);
    for (long e = e0; e < e1; e++) {
        long m = 0;
        for (int p = 0; p < j->P; p++) {
            const moe_cand *l = w->list + ((size_t)p * j->E + e) * j->room;
            const long c = w->cnt[(size_t)p * j->E + e];
            for (long q = 0; q < c; q++)
                g[m + q] = l[q];
            m += c;
        }
        if (m > j->C) { /* m >= C: block p holds min(C, its tokens) */
            double x;
            m = moe_cand_cut(g, m, j->C, &x, tmp);
            if (m > j->C)
                moe_cand_select(g, m, j->C, tmp);
        }
        moe_cand_sort(g, j->C, tmp);
        double imp = 0.0;
        moe_entry *out = j->out + e * j->C;
        for (long s = 0; s < j->C; s++) {
            out[s] = (moe_entry){g[s].t, (int32_t)e, (int32_t)s, 1.0, g[s].v};
            imp += g[s].v;
        }
        j->imp[e] = imp;
    }
}

/* ---- routing ---- */

/* logits (T,E) -> plan with E*C entries, expert-major. */
static int ec_route(moe_router *r, const moe_route_in *in, moe_plan *plan)
{
    const int n = in->n, E = r->E;
    long C;
    int rc = moe_capacity(&r->opts, 1, n, E, &C);
    if (rc)
        return rc;
    if (C > n)
        C = n;
    const size_t ne = (size_t)E * (size_t)C;
    if (plan->cap_entries < ne) {
        moe_entry *en = realloc(plan->entries, ne * sizeof *en);
        if (!en)
            return moe_fail(MOE_ENOMEM, NULL, "out of memory (plan with %zu entries)", ne);
        plan->entries = en;
        plan->cap_entries = ne;
    }
    ec_ws *w = r->ws; /* a memo's when the route reuses it (route_memo.h) */
    const int hit = moe_route_memo_reuse(r, plan); /* the rows' logsumexps are in plan */
    ec_job j = {w, in->logits, n, E, moe_claims_rows_threads(n), moe_par_parts(E, 1), C, 0, C,
                plan->entries, plan->importance, moe_plan_lse_buffer(plan)};
    if (!j.lse)
        return MOE_ENOMEM;
    const int reuse = hit && w->built && w->built_P == j.P && C >= 1 && C <= w->built_C;
    const long maxlen = (n + j.P - 1) / j.P;
    /* lists for the next capacities too, while they stay short beside the blocks (memory) */
    if (!reuse && (hit || moe_route_memo_recording(r)) && C <= maxlen / (16 * EC_MEMO_CF))
        j.Cb = EC_MEMO_CF * C;
    const long cap = j.Cb < maxlen ? j.Cb : maxlen;
    j.room = reuse ? w->built_room : 2 * cap + EC_SLACK < maxlen ? 2 * cap + EC_SLACK : maxlen;
    const size_t all = (size_t)j.P * (size_t)j.room;
    if ((!reuse && (rc = ec_grow(&w->list, &w->list_cap, all * (size_t)E, n, E))) ||
        (rc = ec_grow(&w->scr, &w->scr_cap, 2 * all * (size_t)j.NM, n, E)))
        return rc;
    /* with the metrics observing the rows: step 1 on the rows pass where its lists fit, else
     * the rows pass for the metrics alone */
    const int on_rows = plan->rows_add && !reuse && j.room == 2 * cap + EC_SLACK;
    if (plan->rows_add && (rc = ec_rows(&j, plan, on_rows)))
        return rc;
    if (!reuse) {
        w->built = 0;
        if (!on_rows)
            moe_par_run(ec_block, &j, j.P);
        w->built = hit || moe_route_memo_recording(r);
        w->built_P = j.P, w->built_C = j.Cb, w->built_room = j.room;
    }
    for (int p = 0; p < j.P; p++)
        if (!w->finite[p]) /* the first non-finite logit, named as moe_router_route names it */
            return moe_logits_check_finite(in->logits, n, E);
    moe_par_run(ec_merge, &j, j.NM);
    plan->n_entries = ne;
    plan->lse_of = in->logits;
    plan->k = 0;
    plan->capacity = C;
    plan->aux_loss = 0.0;
    for (int e = 0; e < E; e++)
        plan->assigned_load[e] = C;
    plan->n_claims = (long)plan->n_entries;
    if (!hit)
        moe_route_memo_record(r, plan);
    return MOE_OK;
}

const moe_router_type moe_router_expert_choice = {
    "expert_choice",
    "expert choice (Zhou et al. 2022): each expert takes its top C tokens by softmax score",
    MOE_RF_CHECKS_FINITE | MOE_RF_MEMO,
    1,
    ec_alloc,
    ec_free,
    ec_route,
    NULL,
};
