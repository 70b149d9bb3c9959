/* base_ref.h: the previous implementation of the base router (BASE layers' exact balanced
 * assignment), kept as the reference that the current one (routers/base.c) is compared with bit
 * for bit: plans (token, expert, slot, combine weight) and statistics.
 *
 * Origin: routers/base.c at commit 150f3a2, its workspace and functions copied unchanged but for
 * the base_ref_ / BASE_REF_ prefixes; one core. base_ref_plan routes n tokens of L (n,E) into
 * plan (reset by the caller) as that code's base_route did. Include after moe.h. */
#ifndef MOE_BASE_REF_H
#define MOE_BASE_REF_H

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define BASE_REF_LEVEL_RATIO 4 /* capacity ratio between consecutive levels */
#define BASE_REF_MAX_LEVELS 32  /* > 1 + log4(INT_MAX) */
#define BASE_REF_HEAP_D 32      /* heap arity: at C = 256 a heap has 3 levels (1 + 32 + 223) */

/* ---- workspace ---- */

typedef struct {
    double key;  /* L[s,a] - L[s,b]: affinity lost by moving s from a to b */
    int32_t tok; /* s */
} base_ref_node;

typedef struct {
    int Cmax;          /* ceil(n_max / E): heap capacity per pair */
    int n;             /* real tokens of the group being routed; tokens >= n are dummies */
    const double *L;   /* (T,E) logits of the group being routed (valid during route) */
    double *zero;      /* (E) the logits of a dummy token: 0 */
    int32_t *asg;      /* (T+E) expert of each token, -1 = not placed */
    base_ref_node *heap;   /* (E,E,Cmax) tokens of a, min-heap by L[s,a] - L[s,b] (pair (a,b)) */
    int32_t *hsize;    /* (E,E) heap sizes */
    double *top;       /* (E,E) key of the top of heap (a,b), +inf when empty */
    int32_t *hpos;     /* (T+E,E) position of token s in heap (asg[s], b) */
    long *load;        /* (E) tokens held */
    double *pi;        /* (E) potentials = -prices */
    double *d;         /* (E) Dijkstra labels */
    int *pred;         /* (E) predecessor, -1 = the new token */
    unsigned char *done; /* (E) extracted */
    int32_t *mv_tok;   /* (E) tokens moved along the augmenting path */
    int *mv_to;        /* (E) their new experts */
    long *fill;        /* (E) slot counter when writing the plan */
    int32_t *rank;     /* (T) position of each token in the level order i * a mod n */
    long *bstart;      /* (E+1) start of each expert's tokens in bucket */
    int32_t *bucket;   /* (T+E) a level's tokens grouped by best expert, token order within */
    double *margin;    /* (T+E) best minus second-best value of L + pi */
    double *mtmp;      /* (T+E) margins of one bucket, for the sort */
    int *idx, *itmp;   /* (T+E) argsort order and scratch */
    int32_t *queue;    /* (T+E) tokens left out in step 2 */
} base_ref_ws;

static void base_ref_free(moe_router *r)
{
    base_ref_ws *w = r->ws;
    if (!w)
        return;
    free(w->zero);
    free(w->asg);
    free(w->heap);
    free(w->hsize);
    free(w->top);
    free(w->hpos);
    free(w->load);
    free(w->pi);
    free(w->d);
    free(w->pred);
    free(w->done);
    free(w->mv_tok);
    free(w->mv_to);
    free(w->fill);
    free(w->rank);
    free(w->bstart);
    free(w->bucket);
    free(w->margin);
    free(w->mtmp);
    free(w->idx);
    free(w->itmp);
    free(w->queue);
    free(w);
    r->ws = NULL;
}

static int base_ref_alloc(moe_router *r)
{
    if (r->k != 1)
        return moe_fail(MOE_EINPUT, "base assigns every token to exactly one expert",
                        "base needs k = 1, got k = %d (k)", r->k);
    base_ref_ws *w = calloc(1, sizeof *w);
    if (!w)
        return moe_fail(MOE_ENOMEM, NULL, "out of memory (router base)");
    r->ws = w;
    const size_t n = (size_t)r->n_max, E = (size_t)r->E, T = n + E;
    w->Cmax = (int)((n + E - 1) / E);
    w->zero = calloc(E, sizeof *w->zero);
    w->asg = malloc(T * sizeof *w->asg);
    w->heap = malloc(E * E * (size_t)w->Cmax * sizeof *w->heap);
    w->hsize = malloc(E * E * sizeof *w->hsize);
    w->top = malloc(E * E * sizeof *w->top);
    w->hpos = malloc(T * E * sizeof *w->hpos);
    w->load = malloc(E * sizeof *w->load);
    w->pi = malloc(E * sizeof *w->pi);
    w->d = malloc(E * sizeof *w->d);
    w->pred = malloc(E * sizeof *w->pred);
    w->done = malloc(E);
    w->mv_tok = malloc(E * sizeof *w->mv_tok);
    w->mv_to = malloc(E * sizeof *w->mv_to);
    w->fill = malloc(E * sizeof *w->fill);
    w->rank = malloc(n * sizeof *w->rank);
    w->bstart = malloc((E + 1) * sizeof *w->bstart);
    w->bucket = malloc(T * sizeof *w->bucket);
    w->margin = malloc(T * sizeof *w->margin);
    w->mtmp = malloc(T * sizeof *w->mtmp);
    w->idx = malloc(T * sizeof *w->idx);
    w->itmp = malloc(T * sizeof *w->itmp);
    w->queue = malloc(T * sizeof *w->queue);
    if (!w->zero || !w->asg || !w->heap || !w->hsize || !w->top || !w->hpos || !w->load ||
        !w->pi || !w->d || !w->pred || !w->done || !w->mv_tok || !w->mv_to || !w->fill ||
        !w->rank || !w->bstart || !w->bucket || !w->margin || !w->mtmp || !w->idx ||
        !w->itmp || !w->queue) {
        base_ref_free(r);
        return moe_fail(MOE_ENOMEM, "use fewer tokens per routing group",
                        "out of memory (base workspace for %d tokens x %d experts)", r->n_max,
                        r->E);
    }
    return MOE_OK;
}

/* The logits (E) of token s: a row of L, or zeros for a dummy. */
static inline const double *base_ref_row(const base_ref_ws *w, int E, int32_t s)
{
    return s < w->n ? w->L + (size_t)s * E : w->zero;
}

/* ---- pair heaps: heap (a,b) holds a's tokens, min by L[s,a] - L[s,b], ties lower token ---- */

static inline int base_ref_node_less(base_ref_node x, base_ref_node y)
{
    return x.key < y.key || (x.key == y.key && x.tok < y.tok);
}

static inline base_ref_node *base_ref_heap_of(base_ref_ws *w, int E, int a, int b)
{
    return w->heap + ((size_t)a * E + b) * w->Cmax;
}

static inline void base_ref_heap_set(base_ref_ws *w, int E, base_ref_node *h, int b, int i, base_ref_node x)
{
    h[i] = x;
    w->hpos[(size_t)x.tok * E + b] = i;
}

static void base_ref_heap_up(base_ref_ws *w, int E, int a, int b, int i)
{
    base_ref_node *h = base_ref_heap_of(w, E, a, b), x = h[i];
    while (i > 0) {
        int p = (i - 1) / BASE_REF_HEAP_D;
        if (!base_ref_node_less(x, h[p]))
            break;
        base_ref_heap_set(w, E, h, b, i, h[p]);
        i = p;
    }
    base_ref_heap_set(w, E, h, b, i, x);
}

static void base_ref_heap_down(base_ref_ws *w, int E, int a, int b, int i)
{
    base_ref_node *h = base_ref_heap_of(w, E, a, b), x = h[i];
    const int sz = w->hsize[(size_t)a * E + b];
    for (;;) {
        const int c0 = BASE_REF_HEAP_D * i + 1;
        if (c0 >= sz)
            break;
        const int cend = c0 + BASE_REF_HEAP_D < sz ? c0 + BASE_REF_HEAP_D : sz;
        int c = c0;
        for (int j = c0 + 1; j < cend; j++)
            if (base_ref_node_less(h[j], h[c]))
                c = j;
        if (!base_ref_node_less(h[c], x))
            break;
        base_ref_heap_set(w, E, h, b, i, h[c]);
        i = c;
    }
    base_ref_heap_set(w, E, h, b, i, x);
}

/* Token s joins expert a: into heaps (a,b) for every b != a. */
static void base_ref_token_insert(base_ref_ws *w, int E, int32_t s, int a)
{
    const double *ls = base_ref_row(w, E, s);
    w->asg[s] = a;
    w->load[a]++;
    for (int b = 0; b < E; b++) {
        if (b == a)
            continue;
        base_ref_node *h = base_ref_heap_of(w, E, a, b);
        int i = w->hsize[(size_t)a * E + b]++;
        h[i] = (base_ref_node){ls[a] - ls[b], s};
        base_ref_heap_up(w, E, a, b, i);
        w->top[(size_t)a * E + b] = h[0].key;
    }
}

/* Token s leaves its expert a: out of heaps (a,b) for every b != a. */
static void base_ref_token_remove(base_ref_ws *w, int E, int32_t s)
{
    const int a = w->asg[s];
    w->load[a]--;
    for (int b = 0; b < E; b++) {
        if (b == a)
            continue;
        base_ref_node *h = base_ref_heap_of(w, E, a, b);
        int i = w->hpos[(size_t)s * E + b];
        int last = --w->hsize[(size_t)a * E + b];
        if (i != last) {
            base_ref_heap_set(w, E, h, b, i, h[last]);
            base_ref_heap_down(w, E, a, b, i);
            base_ref_heap_up(w, E, a, b, i);
        }
        w->top[(size_t)a * E + b] = last > 0 ? h[0].key : INFINITY;
    }
    w->asg[s] = -1;
}

/* Heaps (a,b), b != a, from the tokens a holds (asg[s] == a) in bucket[lo..hi): filled, then
 * heapified bottom-up. */
static void base_ref_heaps_build(base_ref_ws *w, int E, int a, long lo, long hi)
{
    for (int b = 0; b < E; b++) {
        if (b == a)
            continue;
        base_ref_node *h = base_ref_heap_of(w, E, a, b);
        int sz = 0;
        for (long j = lo; j < hi; j++) {
            const int32_t s = w->bucket[j];
            if (w->asg[s] != a)
                continue;
            const double *ls = base_ref_row(w, E, s);
            base_ref_heap_set(w, E, h, b, sz++, (base_ref_node){ls[a] - ls[b], s});
        }
        w->hsize[(size_t)a * E + b] = sz;
        if (sz > 1)
            for (int i = (sz - 2) / BASE_REF_HEAP_D; i >= 0; i--) /* from the last parent */
                base_ref_heap_down(w, E, a, b, i);
        w->top[(size_t)a * E + b] = sz > 0 ? h[0].key : INFINITY;
    }
}

/* ---- one augmentation: add token t along a shortest path ---- */

static void base_ref_augment(base_ref_ws *w, int E, long C, int32_t t)
{
    const double *lt = base_ref_row(w, E, t);
    for (int e = 0; e < E; e++) {
        w->d[e] = -lt[e] - w->pi[e]; /* reduced cost of t -> e */
        w->pred[e] = -1;
        w->done[e] = 0;
    }
    int f; /* the first extracted expert with a free slot: the path's end */
    for (;;) {
        int u = -1;
        for (int v = 0; v < E; v++) /* strict <: ties to the lower index */
            if (!w->done[v] && (u < 0 || w->d[v] < w->d[u]))
                u = v;
        w->done[u] = 1;
        if (w->load[u] < C) {
            f = u;
            break;
        }
        /* move edges u -> v; an empty heap has top = +inf and never relaxes */
        const double *top = w->top + (size_t)u * E, base = w->d[u] + w->pi[u];
        for (int v = 0; v < E; v++) {
            double nd = base + top[v] - w->pi[v];
            if (!w->done[v] && nd < w->d[v]) {
                w->d[v] = nd;
                w->pred[v] = u;
            }
        }
    }
    /* the moves along the path, read before any heap changes */
    int nmv = 0, v = f;
    while (w->pred[v] >= 0) {
        int u = w->pred[v];
        w->mv_tok[nmv] = base_ref_heap_of(w, E, u, v)[0].tok;
        w->mv_to[nmv++] = v;
        v = u;
    }
    const int first = v;
    for (int i = 0; i < nmv; i++) {
        base_ref_token_remove(w, E, w->mv_tok[i]);
        base_ref_token_insert(w, E, w->mv_tok[i], w->mv_to[i]);
    }
    base_ref_token_insert(w, E, t, first);
    /* potentials: pi[v] += d[v] - delta on the extracted experts (d[v] <= delta) */
    const double delta = w->d[f];
    for (int x = 0; x < E; x++)
        if (w->done[x])
            w->pi[x] += w->d[x] - delta;
}

/* ---- one level: the tokens with rank < nl, from the current potentials ---- */

/* Token s goes to its best expert under L + pi: among exactly tied best experts the lowest
 * one with room (count < C), else the lowest. Its margin over the second best value (0 when
 * tied, +inf when E = 1) goes to margin[s]. */
static void base_ref_best_expert(base_ref_ws *w, int E, long C, const long *count, int32_t s)
{
    const double *ls = base_ref_row(w, E, s);
    int best = 0;
    double v1 = ls[0] + w->pi[0], v2 = -INFINITY;
    for (int e = 1; e < E; e++) {
        const double v = ls[e] + w->pi[e];
        if (v > v1) {
            v2 = v1;
            v1 = v;
            best = e;
        } else if (v > v2) {
            v2 = v;
        }
    }
    if (v2 == v1 && count[best] >= C)
        for (int e = best + 1; e < E; e++)
            if (ls[e] + w->pi[e] == v1 && count[e] < C) {
                best = e;
                break;
            }
    w->asg[s] = best;
    w->margin[s] = v1 - v2;
}

/* Steps 1-3 for the nl tokens of rank < nl (plus C*E - nl dummies), from pi; leaves every
 * one of them placed (asg), every expert holding exactly C, and pi updated. */
static void base_ref_solve_level(base_ref_ws *w, int E, int nl)
{
    const int n = w->n;
    const long C = ((long)nl + E - 1) / E;
    const int32_t nd = (int32_t)(C * E - nl); /* dummies n .. n+nd-1 */
    /* step 1: best experts; bucket the tokens by expert in token order */
    for (int e = 0; e <= E; e++)
        w->bstart[e] = 0;
    for (int32_t t = 0; t < n + nd; t++) {
        if (t < n && w->rank[t] >= nl) {
            w->asg[t] = -1;
            continue;
        }
        base_ref_best_expert(w, E, C, w->bstart + 1, t);
        w->bstart[w->asg[t] + 1]++;
    }
    for (int e = 0; e < E; e++)
        w->bstart[e + 1] += w->bstart[e];
    for (int e = 0; e < E; e++)
        w->fill[e] = w->bstart[e];
    for (int32_t t = 0; t < n + nd; t++)
        if (w->asg[t] >= 0)
            w->bucket[w->fill[w->asg[t]]++] = t;
    /* step 2: an over-full expert keeps the C largest margins; build the heaps */
    for (int a = 0; a < E; a++) {
        const long lo = w->bstart[a], hi = w->bstart[a + 1], cnt = hi - lo;
        if (cnt > C) {
            for (long j = 0; j < cnt; j++)
                w->mtmp[j] = w->margin[w->bucket[lo + j]];
            moe_argsort_desc(w->mtmp, (int)cnt, w->idx, w->itmp);
            for (long j = C; j < cnt; j++)
                w->asg[w->bucket[lo + w->idx[j]]] = -1;
        }
        w->load[a] = cnt > C ? C : cnt;
        base_ref_heaps_build(w, E, a, lo, hi);
    }
    /* step 3: the left-out tokens, in token order */
    int nq = 0;
    for (int32_t t = 0; t < n + nd; t++)
        if ((t >= n || w->rank[t] < nl) && w->asg[t] < 0)
            w->queue[nq++] = t;
    for (int i = 0; i < nq; i++)
        base_ref_augment(w, E, C, w->queue[i]);
}

/* ---- routing ---- */

static int64_t base_ref_gcd(int64_t x, int64_t y)
{
    while (y) {
        int64_t r = x % y;
        x = y;
        y = r;
    }
    return x;
}

static int base_ref_route(moe_router *r, const moe_route_in *in, moe_plan *plan)
{
    base_ref_ws *w = r->ws;
    const int n = in->n, E = r->E;
    const long C = ((long)n + E - 1) / E;
    w->L = in->logits;
    w->n = n;
    /* level order: token (i * a) mod n has rank i */
    int64_t a = (int64_t)(0.6180339887498949 * n);
    if (a < 1)
        a = 1;
    while (base_ref_gcd(a, n) != 1)
        a++;
    for (int64_t i = 0; i < n; i++)
        w->rank[(i * a) % n] = (int32_t)i;
    /* level sizes: n, then E * c for c = C / ratio, C / ratio^2, ..., 1 (no dummies below) */
    int sizes[BASE_REF_MAX_LEVELS], nlev = 0;
    sizes[nlev++] = n;
    for (long c = C / BASE_REF_LEVEL_RATIO; c >= 1 && nlev < BASE_REF_MAX_LEVELS; c /= BASE_REF_LEVEL_RATIO)
        sizes[nlev++] = (int)(c * E);
    for (int e = 0; e < E; e++)
        w->pi[e] = 0.0;
    for (int l = nlev - 1; l >= 0; l--) /* coarsest first */
        base_ref_solve_level(w, E, sizes[l]);

    plan->capacity = C;
    plan->aux_loss = 0.0;
    for (int e = 0; e < E; e++)
        w->fill[e] = 0;
    for (int t = 0; t < n; t++) {
        const int e = w->asg[t];
        const double g = 1.0 / (1.0 + exp(-in->logits[(size_t)t * E + e]));
        int rc = moe_plan_push(plan, t, e, (int32_t)w->fill[e]++, 1.0, g);
        if (rc)
            return rc;
        plan->assigned_load[e]++;
        plan->importance[e] += g;
    }
    plan->n_claims = n;
    w->L = NULL;
    return MOE_OK;
}

/* Routes L (n,E) into plan as routers/base.c at 150f3a2 did; MOE_OK or an error code. */
static int base_ref_plan(const double *L, int n, int E, moe_plan *plan)
{
    moe_router r;
    memset(&r, 0, sizeof r);
    r.n_max = n;
    r.E = r.m = E;
    r.k = 1;
    int rc = base_ref_alloc(&r);
    if (rc)
        return rc;
    moe_route_in in;
    memset(&in, 0, sizeof in);
    in.n = n;
    in.m = E;
    in.logits = L;
    rc = base_ref_route(&r, &in, plan);
    base_ref_free(&r);
    return rc;
}

#endif
