/* base.c: the `base` router (BASE layers, Lewis et al. 2021), ROUTING.md section 3. Fills
 * moe_router_base: an exact balanced assignment. Every token goes to exactly one expert, every
 * expert takes at most C = ceil(n/E) tokens, and the total affinity sum over tokens of L[t,e(t)]
 * is maximal (computed on the double logits). Slots are numbered in token order within each
 * expert; dispatch 1, combine = sigmoid(L[t,e]) (BASE's gate on the assigned expert); k = 1.
 * Statistics (ROUTING.md section 4): assigned_load = kept_load = the entry counts, importance =
 * sum of combine weights, n_claims = n, aux_loss = 0. Capacity options (capacity_factor,
 * capacity, min_capacity, rounding, order, dropless) do not apply and are ignored: BASE's
 * capacity is ceil(n/E) by definition. k must be 1.
 *
 * ---- algorithm: successive shortest paths on the expert graph ----
 * Min-cost flow, cost c(t,e) = -L[t,e], tokens added one at a time in token order. After each
 * addition the assignment of the tokens added so far is optimal (no negative cycle in the
 * residual graph). The residual graph is collapsed onto E + 1 nodes: experts and a sink.
 *   source -> e      new token t to expert e          cost -L[t,e]
 *   a -> b           move a token s held by a to b     cost L[s,a] - L[s,b], minimised over s
 *   e -> sink        e has a free slot (load < C)      cost 0
 *   sink -> e        e holds a token (load > 0)        cost 0 (only for the potentials)
 * The cheapest move a -> b is the top of a min-heap per ordered pair (a,b) of a's tokens keyed
 * by L[s,a] - L[s,b] (ties to the lower token); potentials pi (E+1) keep reduced costs
 * non-negative, so each augmentation is one Dijkstra over E+1 nodes (dense, O(E) per
 * extraction), stopped when the sink is extracted; then pi[v] += min(d[v], d[sink]), which keeps
 * every reduced cost >= 0 and the path's at 0. An augmentation moves at most E-1 tokens, each
 * move costing 2(E-1) heap updates of O(log C). Time about n * (E * (#extracted) + path length
 * * E log C); memory 16 bytes * E*E*ceil(n/E) (the heaps) + 4 bytes * n*E (heap positions).
 * For n = 16384, E = 64: ~0.05 s on Gaussian logits, ~0.3-0.7 s when every token prefers the
 * same few experts (long augmenting paths, many moves); no loop depends on the logit scale.
 *
 * Ties (deterministic, one of the optimal assignments is returned): tokens are added in token
 * order; Dijkstra extracts the smallest label first, ties to the lower expert index, the sink
 * last; a label is replaced only by a strictly smaller one (the first expert to reach a node
 * keeps it); a move uses the token with the smallest affinity loss, ties to the lower token.
 * E.g. all-equal logits fill the experts in order: token t goes to expert floor(t / C).
 */
#include "moe.h"

#include <math.h>
#include <stdlib.h>

/* ---- workspace ---- */

typedef struct {
    double key;  /* L[s,a] - L[s,b]: affinity lost by moving s from a to b */
    int32_t tok; /* s */
} base_node;

typedef struct {
    int Cmax;          /* ceil(n_max / E): heap capacity per pair */
    const double *L;   /* (T,E) logits of the group being routed (valid during route) */
    int32_t *asg;      /* (T) expert of each added token, -1 = not yet */
    base_node *heap;   /* (E,E,Cmax) tokens of a, min-heap by L[s,a] - L[s,b] (pair (a,b)) */
    int32_t *hsize;    /* (E,E) heap sizes */
    double *top;       /* (E,E) key of the top of heap (a,b), +inf when empty */
    int32_t *hpos;     /* (T,E) position of token s in heap (asg[s], b) */
    long *load;        /* (E) tokens held */
    double *pi;        /* (E+1) potentials, index E = sink */
    double *d;         /* (E+1) Dijkstra labels */
    int *pred;         /* (E+1) predecessor, -1 = the source */
    unsigned char *done; /* (E+1) extracted */
    int32_t *mv_tok;   /* (E) tokens moved along the augmenting path */
    int *mv_to;        /* (E) their new experts */
    long *fill;        /* (E) slot counter when writing the plan */
} base_ws;

static void base_free(moe_router *r)
{
    base_ws *w = r->ws;
    if (!w)
        return;
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
    free(w);
    r->ws = NULL;
}

static int base_alloc(moe_router *r)
{
    if (r->k != 1)
        return moe_fail(MOE_EINPUT, "base assigns every token to exactly one expert",
                        "base needs k = 1, got k = %d (k)", r->k);
    base_ws *w = calloc(1, sizeof *w);
    if (!w)
        return moe_fail(MOE_ENOMEM, NULL, "out of memory (router base)");
    r->ws = w;
    const size_t n = (size_t)r->n_max, E = (size_t)r->E;
    w->Cmax = (int)((n + E - 1) / E);
    w->asg = malloc(n * sizeof *w->asg);
    w->heap = malloc(E * E * (size_t)w->Cmax * sizeof *w->heap);
    w->hsize = malloc(E * E * sizeof *w->hsize);
    w->top = malloc(E * E * sizeof *w->top);
    w->hpos = malloc(n * E * sizeof *w->hpos);
    w->load = malloc(E * sizeof *w->load);
    w->pi = malloc((E + 1) * sizeof *w->pi);
    w->d = malloc((E + 1) * sizeof *w->d);
    w->pred = malloc((E + 1) * sizeof *w->pred);
    w->done = malloc(E + 1);
    w->mv_tok = malloc(E * sizeof *w->mv_tok);
    w->mv_to = malloc(E * sizeof *w->mv_to);
    w->fill = malloc(E * sizeof *w->fill);
    if (!w->asg || !w->heap || !w->hsize || !w->top || !w->hpos || !w->load || !w->pi || !w->d ||
        !w->pred || !w->done || !w->mv_tok || !w->mv_to || !w->fill) {
        base_free(r);
        return moe_fail(MOE_ENOMEM, "use fewer tokens per routing group",
                        "out of memory (base workspace for %d tokens x %d experts)", r->n_max,
                        r->E);
    }
    return MOE_OK;
}

/* ---- pair heaps: heap (a,b) holds a's tokens, min by L[s,a] - L[s,b], ties lower token ---- */

static inline int node_less(base_node x, base_node y)
{
    return x.key < y.key || (x.key == y.key && x.tok < y.tok);
}

static inline base_node *heap_of(base_ws *w, int E, int a, int b)
{
    return w->heap + ((size_t)a * E + b) * w->Cmax;
}

static inline void heap_set(base_ws *w, int E, base_node *h, int b, int i, base_node x)
{
    h[i] = x;
    w->hpos[(size_t)x.tok * E + b] = i;
}

static void heap_up(base_ws *w, int E, int a, int b, int i)
{
    base_node *h = heap_of(w, E, a, b), x = h[i];
    while (i > 0) {
        int p = (i - 1) / 2;
        if (!node_less(x, h[p]))
            break;
        heap_set(w, E, h, b, i, h[p]);
        i = p;
    }
    heap_set(w, E, h, b, i, x);
}

static void heap_down(base_ws *w, int E, int a, int b, int i)
{
    base_node *h = heap_of(w, E, a, b), x = h[i];
    const int sz = w->hsize[(size_t)a * E + b];
    for (;;) {
        int c = 2 * i + 1;
        if (c >= sz)
            break;
        if (c + 1 < sz && node_less(h[c + 1], h[c]))
            c++;
        if (!node_less(h[c], x))
            break;
        heap_set(w, E, h, b, i, h[c]);
        i = c;
    }
    heap_set(w, E, h, b, i, x);
}

/* Token s joins expert a: into heaps (a,b) for every b != a. */
static void token_insert(base_ws *w, int E, int32_t s, int a)
{
    const double *ls = w->L + (size_t)s * E;
    w->asg[s] = a;
    w->load[a]++;
    for (int b = 0; b < E; b++) {
        if (b == a)
            continue;
        base_node *h = heap_of(w, E, a, b);
        int i = w->hsize[(size_t)a * E + b]++;
        h[i] = (base_node){ls[a] - ls[b], s};
        heap_up(w, E, a, b, i);
        w->top[(size_t)a * E + b] = h[0].key;
    }
}

/* Token s leaves its expert a: out of heaps (a,b) for every b != a. */
static void token_remove(base_ws *w, int E, int32_t s)
{
    const int a = w->asg[s];
    w->load[a]--;
    for (int b = 0; b < E; b++) {
        if (b == a)
            continue;
        base_node *h = heap_of(w, E, a, b);
        int i = w->hpos[(size_t)s * E + b];
        int last = --w->hsize[(size_t)a * E + b];
        if (i != last) {
            heap_set(w, E, h, b, i, h[last]);
            heap_down(w, E, a, b, i);
            heap_up(w, E, a, b, i);
        }
        w->top[(size_t)a * E + b] = last > 0 ? h[0].key : INFINITY;
    }
    w->asg[s] = -1;
}

/* ---- one augmentation: add token t along a shortest path ---- */

static void augment(base_ws *w, int E, long C, int32_t t)
{
    const int S = E; /* the sink */
    const double *lt = w->L + (size_t)t * E;
    for (int e = 0; e < E; e++) {
        w->d[e] = -lt[e] - w->pi[e]; /* reduced cost of source -> e (source potential 0) */
        w->pred[e] = -1;
        w->done[e] = 0;
    }
    w->d[S] = INFINITY;
    w->pred[S] = -1;
    w->done[S] = 0;
    for (;;) {
        int u = -1;
        for (int v = 0; v <= S; v++) /* strict <: ties to the lower index, the sink last */
            if (!w->done[v] && (u < 0 || w->d[v] < w->d[u]))
                u = v;
        w->done[u] = 1;
        if (u == S)
            break;
        const double du = w->d[u];
        if (w->load[u] < C && !w->done[S]) {
            double nd = du + w->pi[u] - w->pi[S];
            if (nd < w->d[S]) {
                w->d[S] = nd;
                w->pred[S] = u;
            }
        }
        /* move edges u -> v; an empty heap has top = +inf and never relaxes */
        const double *top = w->top + (size_t)u * E, base = du + w->pi[u];
        for (int v = 0; v < E; v++) {
            double nd = base + top[v] - w->pi[v];
            if (!w->done[v] && nd < w->d[v]) {
                w->d[v] = nd;
                w->pred[v] = u;
            }
        }
    }
    /* the moves along the path, read before any heap changes */
    int nmv = 0, v = w->pred[S];
    while (w->pred[v] >= 0) {
        int u = w->pred[v];
        w->mv_tok[nmv] = heap_of(w, E, u, v)[0].tok;
        w->mv_to[nmv++] = v;
        v = u;
    }
    const int first = v;
    for (int i = 0; i < nmv; i++) {
        token_remove(w, E, w->mv_tok[i]);
        token_insert(w, E, w->mv_tok[i], w->mv_to[i]);
    }
    token_insert(w, E, t, first);
    /* potentials: pi[v] += min(d[v], d[sink]) */
    const double dS = w->d[S];
    for (int x = 0; x <= S; x++)
        w->pi[x] += w->d[x] < dS ? w->d[x] : dS;
}

/* ---- routing ---- */

static int base_route(moe_router *r, const moe_route_in *in, moe_plan *plan)
{
    base_ws *w = r->ws;
    const int n = in->n, E = r->E;
    const long C = ((long)n + E - 1) / E;
    w->L = in->logits;
    for (int t = 0; t < n; t++)
        w->asg[t] = -1;
    for (size_t i = 0; i < (size_t)E * E; i++) {
        w->hsize[i] = 0;
        w->top[i] = INFINITY;
    }
    for (int e = 0; e < E; e++)
        w->load[e] = 0;
    for (int e = 0; e <= E; e++)
        w->pi[e] = 0.0;
    for (int t = 0; t < n; t++)
        augment(w, E, C, t);

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

const moe_router_type moe_router_base = {
    "base",
    "BASE layers (Lewis 2021): exact balanced assignment, <= ceil(n/E) per expert, gate sigmoid",
    MOE_RF_NO_CAPACITY,
    1,
    base_alloc,
    base_free,
    base_route,
    NULL,
};
