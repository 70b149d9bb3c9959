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
#include "par.h"
#include "vexp.h"

#include <math.h>
#include <stdlib.h>
#if defined(__AVX512F__)
#include <immintrin.h>
#endif

/* ---- algorithm ----
 * Selection, not sorting: the order "higher score first, equal scores lower token first" is
 * total, so an expert's top C are one set and their order is unique, and any method that finds
 * them in that order gives the stable argsort's plan. The tokens are split into blocks, one per
 * thread; a thread computes its tokens' softmax rows and keeps, for every expert, the best
 * min(C, block) of its block in a min-heap (root = the worst kept; a token replaces the root
 * only when strictly better, so most tokens cost one comparison per expert), then sorts each
 * heap. The top C of an expert are then the first C of the merge of its per-block sorted runs;
 * the merge runs over experts on the threads and writes the entries in place. */

/* ---- workspace ---- */

enum { EC_ROWS = 16 }; /* softmax rows computed together (moe_softmax_rows) */

typedef struct {
    double *hv;   /* (T,E) heap values: part p, expert e at E*lo_p + e*cap_p */
    int32_t *ht;  /* (T,E) heap tokens, same layout */
    int *hsz;     /* (P,E) heap sizes */
    double *thr;  /* (P,E) entry threshold: -inf while a heap fills, then its root's value */
    double *row;  /* (P,EC_ROWS,E) softmax rows per part */
} ec_ws;

static void ec_free(moe_router *r)
{
    ec_ws *w = r->ws;
    if (!w)
        return;
    free(w->hv);
    free(w->ht);
    free(w->hsz);
    free(w->thr);
    free(w->row);
    free(w);
    r->ws = NULL;
}

static int ec_alloc(moe_router *r)
{
    ec_ws *w = calloc(1, sizeof *w);
    if (!w)
        return moe_fail(MOE_ENOMEM, NULL, "out of memory (router expert_choice workspace)");
    r->ws = w;
    size_t ne = (size_t)r->n_max * (size_t)r->E, pe = (size_t)MOE_PAR_MAX * (size_t)r->E;
    w->hv = malloc(ne * sizeof *w->hv);
    w->ht = malloc(ne * sizeof *w->ht);
    w->hsz = malloc(pe * sizeof *w->hsz);
    w->thr = malloc(pe * sizeof *w->thr);
    w->row = malloc(pe * EC_ROWS * sizeof *w->row);
    if (!w->hv || !w->ht || !w->hsz || !w->thr || !w->row) {
        ec_free(r);
        return moe_fail(MOE_ENOMEM, "use fewer tokens per routing group",
                        "out of memory (expert_choice workspace for %d tokens x %d experts)",
                        r->n_max, r->E);
    }
    return MOE_OK;
}

/* ---- per-block selection ---- */

/* a is worse than b: lower score, or equal score and higher token */
static inline int ec_worse(double av, int32_t at, double bv, int32_t bt)
{
    return av < bv || (av == bv && at > bt);
}

static void ec_sift_down(double *hv, int32_t *ht, int sz, int i)
{
    const double xv = hv[i];
    const int32_t xt = ht[i];
    for (;;) {
        int c = 2 * i + 1;
        if (c >= sz)
            break;
        if (c + 1 < sz && ec_worse(hv[c + 1], ht[c + 1], hv[c], ht[c]))
            c++;
        if (!ec_worse(hv[c], ht[c], xv, xt))
            break;
        hv[i] = hv[c];
        ht[i] = ht[c];
        i = c;
    }
    hv[i] = xv;
    ht[i] = xt;
}

typedef struct {
    ec_ws *w;
    const double *logits;
    int n, E, P;
    long C;
    moe_entry *out;  /* (E,C) the plan's entries */
    double *imp;     /* (E) importance */
    double *lse;     /* (T) the rows' logsumexp (plan->lse) */
} ec_job;

/* heap of part p, expert e */
static inline size_t ec_heap(const ec_job *j, int p, int e, long *cap)
{
    long lo, hi;
    moe_par_range(j->n, p, j->P, &lo, &hi);
    *cap = j->C < hi - lo ? j->C : hi - lo;
    return (size_t)j->E * (size_t)lo + (size_t)e * (size_t)*cap;
}

/* Token t with score v into the heap (hv, ht) of size *sz <= cap of one expert; *thr becomes
 * the root's value once the heap is full (a later token enters only when strictly above it). */
static inline void ec_offer(double *hv, int32_t *ht, int *sz, long cap, double *thr, double v,
                            int32_t t)
{
    if (*sz < cap) { /* sift up */
        int i = (*sz)++;
        while (i > 0 && ec_worse(v, t, hv[(i - 1) / 2], ht[(i - 1) / 2])) {
            hv[i] = hv[(i - 1) / 2];
            ht[i] = ht[(i - 1) / 2];
            i = (i - 1) / 2;
        }
        hv[i] = v;
        ht[i] = t;
    } else { /* v > hv[0]: equal score, the kept token is lower */
        hv[0] = v;
        ht[0] = t;
        ec_sift_down(hv, ht, (int)cap, 0);
    }
    if (*sz == cap)
        *thr = hv[0];
}

/* The experts of one softmax row whose threshold the row beats (most tokens: none). */
static void ec_row(double *hv0, int32_t *ht0, int *hsz, long cap, double *thr, const double *row,
                   int E, int32_t t)
{
    int e = 0;
#if defined(__AVX512F__)
    for (; e + 8 <= E; e += 8) {
        __mmask8 m = _mm512_cmp_pd_mask(_mm512_loadu_pd(row + e), _mm512_loadu_pd(thr + e),
                                        _CMP_GT_OQ);
        while (m) {
            const int q = e + __builtin_ctz(m);
            m &= (__mmask8)(m - 1);
            ec_offer(hv0 + (size_t)q * cap, ht0 + (size_t)q * cap, hsz + q, cap, thr + q, row[q],
                     t);
        }
    }
#endif
    for (; e < E; e++)
        if (row[e] > thr[e])
            ec_offer(hv0 + (size_t)e * cap, ht0 + (size_t)e * cap, hsz + e, cap, thr + e, row[e],
                     t);
}

static void ec_block(void *arg, int p, int np)
{
    ec_job *j = arg;
    ec_ws *w = j->w;
    const int E = j->E;
    long lo, hi, cap;
    moe_par_range(j->n, p, np, &lo, &hi);
    const size_t base = ec_heap(j, p, 0, &cap);
    double *row = w->row + (size_t)p * EC_ROWS * E, *hv0 = w->hv + base;
    double *thr = w->thr + (size_t)p * E;
    int32_t *ht0 = w->ht + base;
    int *hsz = w->hsz + (size_t)p * E;
    for (int e = 0; e < E; e++)
        hsz[e] = 0, thr[e] = cap > 0 ? -INFINITY : INFINITY;
    for (long t0 = lo; t0 < hi; t0 += EC_ROWS) {
        const int nr = hi - t0 < EC_ROWS ? (int)(hi - t0) : EC_ROWS;
        moe_softmax_rows(j->logits + (size_t)t0 * E, nr, E, row, j->lse + t0);
        for (int q = 0; q < nr; q++)
            ec_row(hv0, ht0, hsz, cap, thr, row + (size_t)q * E, E, (int32_t)(t0 + q));
    }
    /* heapsort: the worst goes last, so each heap ends best first */
    for (int e = 0; e < E; e++) {
        double *hv = hv0 + (size_t)e * cap;
        int32_t *ht = ht0 + (size_t)e * cap;
        for (int sz = hsz[e]; sz > 1; sz--) {
            double tv = hv[0];
            int32_t tt = ht[0];
            hv[0] = hv[sz - 1];
            ht[0] = ht[sz - 1];
            hv[sz - 1] = tv;
            ht[sz - 1] = tt;
            ec_sift_down(hv, ht, sz - 1, 0);
        }
    }
}

/* Experts of range i: merge the blocks' sorted runs, first C into the entries. */
static void ec_merge(void *arg, int i, int np)
{
    ec_job *j = arg;
    long e0, e1;
    moe_par_range(j->E, i, np, &e0, &e1);
    for (long e = e0; e < e1; e++) {
        const double *rv[MOE_PAR_MAX];
        const int32_t *rt[MOE_PAR_MAX];
        int len[MOE_PAR_MAX], pos[MOE_PAR_MAX] = {0};
        for (int p = 0; p < j->P; p++) {
            long cap;
            size_t at = ec_heap(j, p, (int)e, &cap);
            rv[p] = j->w->hv + at;
            rt[p] = j->w->ht + at;
            len[p] = j->w->hsz[(size_t)p * j->E + e];
        }
        double imp = 0.0;
        for (long s = 0; s < j->C; s++) {
            int b = -1;
            for (int p = 0; p < j->P; p++)
                if (pos[p] < len[p] &&
                    (b < 0 || ec_worse(rv[b][pos[b]], rt[b][pos[b]], rv[p][pos[p]], rt[p][pos[p]])))
                    b = p;
            const double g = rv[b][pos[b]];
            j->out[e * j->C + s] = (moe_entry){rt[b][pos[b]], (int32_t)e, (int32_t)s, 1.0, g};
            pos[b]++;
            imp += g;
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
    ec_job j = {r->ws, in->logits, n, E, moe_par_parts(n, 2048), C, plan->entries,
                plan->importance, moe_plan_lse_buffer(plan)};
    if (!j.lse)
        return MOE_ENOMEM;
    moe_par_run(ec_block, &j, j.P);
    moe_par_run(ec_merge, &j, moe_par_parts(E, 1));
    plan->n_entries = ne;
    plan->lse_of = in->logits;
    plan->k = 0;
    plan->capacity = C;
    plan->aux_loss = 0.0;
    for (int e = 0; e < E; e++)
        plan->assigned_load[e] = C;
    plan->n_claims = (long)plan->n_entries;
    return MOE_OK;
}

const moe_router_type moe_router_expert_choice = {
    "expert_choice",
    "expert choice (Zhou et al. 2022): each expert takes its top C tokens by softmax score",
    0,
    1,
    ec_alloc,
    ec_free,
    ec_route,
    NULL,
};
