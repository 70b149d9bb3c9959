/* base.c: the `base` router (BASE layers, Lewis et al. 2021), docs/routing.md section 3. Fills
 * moe_router_base: an exact balanced assignment. Every token goes to exactly one expert, every
 * expert takes at most C = ceil(n/E) tokens, and the total affinity sum over tokens of L[t,e(t)]
 * is maximal (computed on the double logits). Slots are numbered in token order within each
 * expert; dispatch 1, combine = sigmoid(L[t,e]) (BASE's gate on the assigned expert); k = 1.
 * Statistics (docs/metrics.md): assigned_load = kept_load = the entry counts, importance =
 * sum of combine weights, n_claims = n, aux_loss = 0. Capacity options (capacity_factor,
 * capacity, min_capacity, rounding, order, dropless) do not apply and are ignored: BASE's
 * capacity is ceil(n/E) by definition. k must be 1.
 *
 * ---- algorithm: shortest augmenting paths on the expert graph, warm-started by prices ----
 * A transportation problem: E sources of C slots, n tokens of demand 1, cost -L[t,e]. D =
 * E*C - n (< E) dummy tokens with affinity 0 to every expert take the free slots, so every
 * expert ends with exactly C tokens (the real tokens' optimum is unchanged: the dummies add a
 * constant). Duals: one price per expert, kept as potentials pi = -price. Invariant: every
 * placed token s sits on an expert a maximising L[s,a] + pi[a], and no expert holds more than
 * C tokens; such a partial assignment is optimal for the tokens it places.
 * One solve (a "level") of a set of tokens with capacity C = ceil(size/E), from given pi:
 *   1. in token order (dummies last), each token goes to its best expert under L + pi; among
 *      exactly tied best experts to the lowest one with room, else to the lowest;
 *   2. an expert holding more than C keeps the C tokens with the largest margin (best minus
 *      second-best value of L + pi, 0 when tied; ties to the lower token); the rest are out;
 *   3. the tokens left out are added one at a time, in token order, along a shortest
 *      augmenting path: Dijkstra over the E experts from the new token t (label
 *      d[e] = -L[t,e] - pi[e]) through move edges a -> b, "move a token s held by a to b", of
 *      reduced cost min over s on a of (L[s,a] - L[s,b]) + pi[a] - pi[b] >= 0, stopped at the
 *      first extracted expert with a free slot (label delta). The tokens along the path move
 *      one expert on, t takes the path's first expert, and every extracted expert v gets
 *      pi[v] += d[v] - delta (<= 0). Prices only rise, and only on full experts (an expert
 *      with room ends the search), so pi stays on the scale of the logits.
 * The cheapest move a -> b is the top of a min-heap per ordered pair (a,b) holding a's tokens
 * keyed by L[s,a] - L[s,b] (ties to the lower token), BASE_HEAP_D-ary: moves insert into and
 * delete from E-1 heaps each, and a wide, shallow heap does that with fewer cache misses.
 * Any pi gives the exact optimum; pi only decides how much of step 3 is needed: with prices
 * close to the optimal duals, step 1 is nearly balanced and step 3 adds few tokens on short
 * paths. The prices come from the same solve on nested subsets of the tokens: the level order
 * is t = i * a mod n (i = 0, 1, ...; a coprime to n near 0.618 n, a low-discrepancy stride,
 * so every subset samples the whole group evenly); level l takes the first E * c_l tokens of
 * that order, c_0 = C (all n tokens), c_{l+1} = floor(c_l / BASE_LEVEL_RATIO) down to
 * c = 1; the coarsest level starts from pi = 0 and each level from the prices of the one
 * below. At worst a level costs what the plain token-by-token solve costs (a path of at most
 * E-1 moves per token, each move 2(E-1) heap updates); the levels below add at most 1/3 of
 * the top level's step 1 and heap building.
 * Measured (n = 16384, one core, N(0,1) logits minus skew*e/(E-1)): E = 64 0.02-0.03 s for
 * every skew 0..1000 (at 1000 every token ranks the experts alike), against 0.04-0.08 s
 * (skew 0) and 0.4-0.6 s (skew 20-1000) for the token-by-token solve (tokens added in token
 * order from pi = 0) it replaces; E = 256 0.18-0.2 s (was 0.3-5.5 s).
 * Memory: 16 bytes * E*E*ceil(n/E) (the heaps) + 4 bytes * (n+E)*E (heap positions), both in
 * transparent huge pages (moe_huge_alloc: at 2^20 x 256 that is 5 GB, whose first touch with
 * 4 KiB pages is a million page faults), + 4 bytes * E*ceil(n/E) per thread (step 2's table).
 *
 * ---- threads (routers/par.h; the plan does not depend on their number) ----
 * Step 1's best experts and margins are computed on the threads by token ranges; the exact
 * ties, which depend on the counts so far, are then settled in token order on one thread.
 * Step 2 runs per expert (its bucket, its argsort, its E-1 heaps and its tokens' positions are
 * its own), the experts split over the threads by their share of the level's tokens. The heaps
 * of one expert are filled in blocks of BASE_FILL_BLOCK tokens (rows read once, E-1 sequential
 * write streams), heapified with local token indices (0..cnt-1 in token order, so ties order as
 * before) and their positions gathered in a (cnt, E) table copied row by row into hpos, instead
 * of scattered writes over n rows. Step 3 is sequential by nature (each path depends on the
 * last), but the heap updates of a path split by b: heaps (a,b) of different b are disjoint, so
 * the caller and a helper thread take chunks of b from a shared counter and apply the path's
 * moves to those heaps, each heap seeing the same operations in the same order; a helper that
 * is not running (a loaded machine) leaves all chunks to the caller instead of stalling it.
 *
 * Ties (deterministic; one of the optimal assignments is returned): fixed by steps 1-3 at the
 * top level given the prices from the levels below: best experts tie as in step 1, margins
 * to the lower token, tokens left out are added in token order; Dijkstra extracts the smallest
 * label first, ties to the lower expert, and replaces a label only by a strictly smaller one;
 * a move takes the token with the smallest affinity loss, ties to the lower token. Equal logits
 * leave pi = 0 at every level and rows equal across tokens leave L + pi all tied, so in both
 * cases the experts fill in token order: token t goes to expert floor(t / C). Where several
 * assignments are optimal (tied logits, tokens with identical rows) the plan can differ from
 * the token-by-token solve's, which broke ties by its own history.
 */
#include "moe.h"
#include "huge.h"
#include "par.h"

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

#include <math.h>
#include <sched.h>
#include <stdint.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#define BASE_LEVEL_RATIO 4 /* capacity ratio between consecutive levels */
#define BASE_MAX_LEVELS 32  /* > 1 + log4(INT_MAX) */
#define BASE_HEAP_D 32      /* heap arity: at C = 256 a heap has 3 levels (1 + 32 + 223) */
#define BASE_FILL_BLOCK 64  /* tokens per block when the heaps are filled */
#define BASE_GRAIN 65536L    /* logits per part in steps 1 and 2 */
#define BASE_CREW_MIN_E 32  /* step 3 on two cores from this many experts ... */
#define BASE_CREW_MIN_Q 16  /* ... and this many tokens to add */

/* ---- workspace ---- */

typedef struct {
    double key;  /* L[s,a] - L[s,b]: affinity lost by moving s from a to b */
    int32_t tok; /* s */
} base_node;

typedef struct {
    int Cmax;          /* ceil(n_max / E): heap capacity per pair */
    int n;             /* real tokens of the group being routed; tokens >= n are dummies */
    const double *L;   /* (T,E) logits of the group being routed (valid during route) */
    double *zero;      /* (E) the logits of a dummy token: 0 */
    int32_t *asg;      /* (T+E) expert of each token, -1 = not placed */
    base_node *heap;   /* (E,E,Cmax) tokens of a, min-heap by L[s,a] - L[s,b] (pair (a,b)) */
    int32_t *hsize;    /* (E,E) heap sizes */
    double *top;       /* (E,E) key of the top of heap (a,b), +inf when empty */
    int32_t *hpos;     /* (T+E,E) position of token s in heap (asg[s], b) */
    long *load;        /* (E) tokens held */
    double *pi;        /* (E) potentials = -prices */
    double *d;         /* (E) Dijkstra labels */
    int *pred;         /* (E) predecessor, -1 = the new token */
    unsigned char *done; /* (E) extracted */
    int32_t *mv_tok;   /* (E) tokens moved along the augmenting path */
    int *mv_from;      /* (E) their experts before the move */
    int *mv_to;        /* (E) their new experts */
    long *fill;        /* (E) slot counter when writing the plan */
    int32_t *rank;     /* (T) position of each token in the level order i * a mod n */
    long *bstart;      /* (E+1) start of each expert's tokens in bucket */
    int32_t *bucket;   /* (T+E) a level's tokens grouped by best expert, token order within */
    double *margin;    /* (T+E) best minus second-best value of L + pi */
    double *mtmp;      /* (T+E) margins of one bucket, for the sort */
    int *idx, *itmp;   /* (T+E) argsort order and scratch */
    int32_t *queue;    /* (T+E) tokens left out in step 2 */
    int32_t *tab;      /* (MOE_PAR_MAX,Cmax,E) heap positions of one expert's tokens, per part */
} base_ws;

static void base_free(moe_router *r)
{
    base_ws *w = r->ws;
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
    free(w->mv_from);
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
    free(w->tab);
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
    const size_t n = (size_t)r->n_max, E = (size_t)r->E, T = n + E;
    w->Cmax = (int)((n + E - 1) / E);
    w->zero = calloc(E, sizeof *w->zero);
    w->asg = malloc(T * sizeof *w->asg);
    w->heap = moe_huge_alloc(E * E * (size_t)w->Cmax * sizeof *w->heap);
    w->hsize = malloc(E * E * sizeof *w->hsize);
    w->top = malloc(E * E * sizeof *w->top);
    w->hpos = moe_huge_alloc(T * E * sizeof *w->hpos);
    w->load = malloc(E * sizeof *w->load);
    w->pi = malloc(E * sizeof *w->pi);
    w->d = malloc(E * sizeof *w->d);
    w->pred = malloc(E * sizeof *w->pred);
    w->done = malloc(E);
    w->mv_tok = malloc(E * sizeof *w->mv_tok);
    w->mv_from = malloc(E * sizeof *w->mv_from);
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
    w->tab = moe_huge_alloc((size_t)MOE_PAR_MAX * w->Cmax * E * sizeof *w->tab);
    if (!w->zero || !w->asg || !w->heap || !w->hsize || !w->top || !w->hpos || !w->load ||
        !w->pi || !w->d || !w->pred || !w->done || !w->mv_tok || !w->mv_from || !w->mv_to ||
        !w->fill ||
        !w->rank || !w->bstart || !w->bucket || !w->margin || !w->mtmp || !w->idx ||
        !w->itmp || !w->queue || !w->tab) {
        base_free(r);
        return moe_fail(MOE_ENOMEM, "use fewer tokens per routing group",
                        "out of memory (base workspace for %d tokens x %d experts)", r->n_max,
                        r->E);
    }
    return MOE_OK;
}

/* The logits (E) of token s: a row of L, or zeros for a dummy. */
static inline const double *base_row(const base_ws *w, int E, int32_t s)
{
    return s < w->n ? w->L + (size_t)s * E : w->zero;
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
        int p = (i - 1) / BASE_HEAP_D;
        if (!node_less(x, h[p]))
            break;
        heap_set(w, E, h, b, i, h[p]);
        i = p;
    }
    heap_set(w, E, h, b, i, x);
}

/* Sift h[i] down in the heap h of sz nodes; when pos is given, pos[tok * stride] follows
 * every node that moves (its position). */
#if defined(__AVX512F__) && BASE_HEAP_D == 32
/* The index of the least (node_less) of the 32 nodes h[c0..c0+31]: the smallest key, then
 * among the nodes with that key (== : -0.0 and +0.0 alike) the smallest token. A heap's tokens
 * are distinct, so exactly one node is least: the one the scalar scan finds, without its 31
 * unpredictable branches. Keys are finite or infinite, never NaN (finite logits). */
static inline int heap_min32(const base_node *h, int c0)
{
    const __m512i ik = _mm512_set_epi64(14, 12, 10, 8, 6, 4, 2, 0);
    const __m512i it = _mm512_set_epi64(15, 13, 11, 9, 7, 5, 3, 1);
    const __m512i low = _mm512_set1_epi64(0xffffffff); /* the token; the padding cleared */
    __m512d k[4];
    __m512i t[4];
    for (int q = 0; q < 4; q++) {
        const __m512i a = _mm512_loadu_si512((const void *)(h + c0 + 8 * q));
        const __m512i b = _mm512_loadu_si512((const void *)(h + c0 + 8 * q + 4));
        k[q] = _mm512_castsi512_pd(_mm512_permutex2var_epi64(a, ik, b));
        t[q] = _mm512_and_si512(_mm512_permutex2var_epi64(a, it, b), low);
    }
    const __m512d mk = _mm512_set1_pd(_mm512_reduce_min_pd(
        _mm512_min_pd(_mm512_min_pd(k[0], k[1]), _mm512_min_pd(k[2], k[3]))));
    __mmask8 eq[4];
    __m512i tm = _mm512_set1_epi64(INT64_MAX);
    for (int q = 0; q < 4; q++) {
        eq[q] = _mm512_cmp_pd_mask(k[q], mk, _CMP_EQ_OQ);
        tm = _mm512_mask_min_epi64(tm, eq[q], tm, t[q]);
    }
    const __m512i mt = _mm512_set1_epi64(_mm512_reduce_min_epi64(tm));
    for (int q = 0; q < 3; q++) {
        const __mmask8 at = _mm512_mask_cmpeq_epi64_mask(eq[q], t[q], mt);
        if (at)
            return c0 + 8 * q + __builtin_ctz(at);
    }
    return c0 + 24 + __builtin_ctz(_mm512_mask_cmpeq_epi64_mask(eq[3], t[3], mt));
}
#endif

static void heap_sift(base_node *h, int sz, int i, int32_t *pos, int stride)
{
    const base_node x = h[i];
    for (;;) {
        const int c0 = BASE_HEAP_D * i + 1;
        if (c0 >= sz)
            break;
        const int cend = c0 + BASE_HEAP_D < sz ? c0 + BASE_HEAP_D : sz;
        int c = c0;
#if defined(__AVX512F__) && BASE_HEAP_D == 32
        if (cend - c0 == 32)
            c = heap_min32(h, c0);
        else
#endif
        for (int j = c0 + 1; j < cend; j++)
            if (node_less(h[j], h[c]))
                c = j;
        if (!node_less(h[c], x))
            break;
        h[i] = h[c];
        if (pos)
            pos[(size_t)h[i].tok * stride] = i;
        i = c;
    }
    h[i] = x;
    if (pos)
        pos[(size_t)x.tok * stride] = i;
}

static void heap_down(base_ws *w, int E, int a, int b, int i)
{
    heap_sift(heap_of(w, E, a, b), w->hsize[(size_t)a * E + b], i, w->hpos + b, E);
}

/* Token s joins expert a: into heaps (a,b) for every b != a in [b0, b1). */
static void token_insert(base_ws *w, int E, int32_t s, int a, int b0, int b1)
{
    const double *ls = base_row(w, E, s);
    for (int b = b0; b < b1; b++) {
        if (b == a)
            continue;
        base_node *h = heap_of(w, E, a, b);
        int i = w->hsize[(size_t)a * E + b]++;
        h[i] = (base_node){ls[a] - ls[b], s};
        heap_up(w, E, a, b, i);
        w->top[(size_t)a * E + b] = h[0].key;
    }
}

/* Token s leaves expert a: out of heaps (a,b) for every b != a in [b0, b1). */
static void token_remove(base_ws *w, int E, int32_t s, int a, int b0, int b1)
{
    for (int b = b0; b < b1; b++) {
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
}

/* Heaps (a,b), b != a, from the cnt tokens keep[0..cnt) a holds (in token order): filled
 * row by row with their local indices for tokens (which order them as the tokens do), heapified
 * bottom-up, then given the tokens back; the positions go through tab (cnt, E) and are copied
 * to hpos row by row (scattered writes stay within tab). */
static void heaps_build(base_ws *w, int E, int a, const int *keep, int cnt, int32_t *tab)
{
    for (int j0 = 0; j0 < cnt; j0 += BASE_FILL_BLOCK) { /* the block's rows stay in cache */
        const int j1 = j0 + BASE_FILL_BLOCK < cnt ? j0 + BASE_FILL_BLOCK : cnt;
        for (int b = 0; b < E; b++) {
            base_node *h = heap_of(w, E, a, b);
            for (int j = j0; j < j1 && b != a; j++) {
                const double *ls = base_row(w, E, keep[j]);
                h[j] = (base_node){ls[a] - ls[b], j};
            }
        }
    }
    for (int b = 0; b < E; b++) {
        if (b == a)
            continue;
        base_node *h = heap_of(w, E, a, b);
        w->hsize[(size_t)a * E + b] = cnt;
        if (cnt > 1)
            for (int i = (cnt - 2) / BASE_HEAP_D; i >= 0; i--) /* from the last parent */
                heap_sift(h, cnt, i, NULL, 0);
        for (int i = 0; i < cnt; i++) {
            tab[(size_t)h[i].tok * E + b] = i;
            h[i].tok = keep[h[i].tok];
        }
        w->top[(size_t)a * E + b] = cnt > 0 ? h[0].key : INFINITY;
    }
    for (int j = 0; j < cnt; j++) {
        tab[(size_t)j * E + a] = 0; /* no heap (a,a) */
        memcpy(w->hpos + (size_t)keep[j] * E, tab + (size_t)j * E, (size_t)E * sizeof *tab);
    }
}

/* ---- one augmentation: add token t along a shortest path ---- */

/* The shortest augmenting path for token t: its moves (mv_tok, mv_from, mv_to: nmv of them,
 * from the path's end back to its start), its first expert (*first) and the potential update;
 * the tokens' experts and the loads change, the heaps do not (path_apply). */
static int path_find(base_ws *w, int E, long C, int32_t t, int *first)
{
    const double *lt = base_row(w, E, t);
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
        const int32_t s = heap_of(w, E, u, v)[0].tok;
        w->mv_tok[nmv] = s;
        w->mv_from[nmv] = u;
        w->mv_to[nmv++] = v;
        w->asg[s] = v;
        w->load[u]--;
        w->load[v]++;
        v = u;
    }
    *first = v;
    w->asg[t] = v;
    w->load[v]++;
    /* potentials: pi[v] += d[v] - delta on the extracted experts (d[v] <= delta) */
    const double delta = w->d[f];
    for (int x = 0; x < E; x++)
        if (w->done[x])
            w->pi[x] += w->d[x] - delta;
    return nmv;
}

/* The heap changes of a path found by path_find, on the heaps (a,b) with b in [b0, b1): each
 * moved token leaves its old expert's heaps and joins its new one's, in path order, then t
 * joins its first expert's. Heaps of different b are disjoint, so two ranges can run at once
 * and every heap sees the same operations in the same order. */
static void path_apply(base_ws *w, int E, int nmv, int32_t t, int first, int b0, int b1)
{
    for (int i = 0; i < nmv; i++) {
        token_remove(w, E, w->mv_tok[i], w->mv_from[i], b0, b1);
        token_insert(w, E, w->mv_tok[i], w->mv_to[i], b0, b1);
    }
    token_insert(w, E, t, first, b0, b1);
}

/* Step 3 on two cores: part 0 finds the paths; the heap updates of a path are shared out in
 * chunks of BASE_CHUNK values of b, taken by part 0 and by part 1 (a helper waiting between
 * paths) from one counter, so part 0 never waits for a helper that is not running (a loaded
 * machine), only for a chunk the helper has taken and not finished. The counter holds the path's
 * number (high 32 bits) and the next b (low 32 bits); part 0 sets it to (path, 0), then raises
 * go; a chunk taken belongs to the path named in the counter, whose data stays put until part 0
 * has seen all E values of b done. */
typedef struct {
    base_ws *w;
    int E, nq, nmv, first;
    long C;
    int32_t t;
    atomic_int go, done, alive, quit;
    atomic_llong next; /* (path << 32) | next b */
} base_crew;

enum { BASE_CHUNK = 8 };

/* Takes and applies chunks of path e while there are any; returns the values of b applied. */
static int crew_chunks(base_crew *c, long long e)
{
    int did = 0;
    long long cur = atomic_load(&c->next);
    while ((cur >> 32) == e && (cur & 0xffffffffLL) < c->E) {
        if (!atomic_compare_exchange_weak(&c->next, &cur, cur + BASE_CHUNK))
            continue; /* cur reloaded */
        const int b0 = (int)(cur & 0xffffffffLL), b1 = b0 + BASE_CHUNK < c->E ? b0 + BASE_CHUNK
                                                                               : c->E;
        path_apply(c->w, c->E, c->nmv, c->t, c->first, b0, b1);
        did += b1 - b0;
        cur = atomic_load(&c->next);
    }
    return did;
}

static void crew_part(void *ctx, int part, int np)
{
    base_crew *c = ctx;
    base_ws *w = c->w;
    (void)np;
    if (part == 1) { /* the helper: chunks of every path it sees, until part 0 ends */
        atomic_store(&c->alive, 1);
        for (int seen = 0, spins = 0; !atomic_load(&c->quit);) {
            const int g = atomic_load(&c->go);
            if (g == seen) {
                if (++spins > 256)
                    sched_yield();
                continue;
            }
            seen = g;
            spins = 0;
            const int did = crew_chunks(c, g);
            if (did)
                atomic_fetch_add(&c->done, did);
        }
        return;
    }
    int epoch = 0;
    for (int i = 0; i < c->nq; i++) {
        int first;
        const int32_t t = w->queue[i];
        const int nmv = path_find(w, c->E, c->C, t, &first);
        if (!atomic_load(&c->alive)) { /* part 1 has not started: all here */
            path_apply(w, c->E, nmv, t, first, 0, c->E);
            continue;
        }
        c->nmv = nmv;
        c->t = t;
        c->first = first;
        atomic_store(&c->done, 0);
        atomic_store(&c->next, (long long)++epoch << 32);
        atomic_store(&c->go, epoch);
        const int did = crew_chunks(c, epoch);
        for (int spins = 0; atomic_load(&c->done) + did < c->E;) /* the helper's last chunk */
            if (++spins > 256)
                sched_yield();
    }
    atomic_store(&c->quit, 1);
}

/* Step 3: the nq tokens of queue added one at a time, in order. */
static void augment_all(base_ws *w, int E, long C, int nq)
{
    base_crew c = {.w = w, .E = E, .nq = nq, .C = C};
    atomic_init(&c.go, 0);
    atomic_init(&c.done, 0);
    atomic_init(&c.alive, 0);
    atomic_init(&c.quit, 0);
    atomic_init(&c.next, 0);
    /* two parts where a path's 2(E-1) heap updates per move outweigh the handshake */
    const int np = E >= BASE_CREW_MIN_E && nq >= BASE_CREW_MIN_Q ? moe_par_parts(2, 1) : 1;
    moe_par_run(crew_part, &c, np);
}

/* ---- one level: the tokens with rank < nl, from the current potentials ---- */

/* Token s's best expert under L + pi (the lowest of exactly tied best ones) to asg[s], its
 * margin over the second best value (0 when tied, +inf when E = 1) to margin[s]. */
static void best_expert(base_ws *w, int E, int32_t s)
{
    const double *ls = base_row(w, E, s);
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
    w->asg[s] = best;
    w->margin[s] = v1 - v2;
}

typedef struct {
    base_ws *w;
    int E, nl, nt; /* nt: tokens and dummies, n + nd */
    long C;
} base_level_job;

/* Step 1 on a range of tokens: the best experts of the level's tokens, -1 for the others. */
static void step1_part(void *ctx, int i, int np)
{
    const base_level_job *j = ctx;
    base_ws *w = j->w;
    long lo, hi;
    moe_par_range(j->nt, i, np, &lo, &hi);
    for (int32_t t = (int32_t)lo; t < hi; t++) {
        if (t < w->n && w->rank[t] >= j->nl)
            w->asg[t] = -1;
        else
            best_expert(w, j->E, t);
    }
}

/* Step 2 for the experts whose bucket starts in part i's share of the level's tokens: an
 * over-full expert keeps its C largest margins (its bucket's stretch of the scratch arrays),
 * then its heaps. Experts own disjoint buckets, heaps and token positions. */
static void step2_part(void *ctx, int i, int np)
{
    const base_level_job *j = ctx;
    base_ws *w = j->w;
    const int E = j->E;
    const long C = j->C, total = w->bstart[E];
    for (int a = 0; a < E; a++) {
        const long lo = w->bstart[a], hi = w->bstart[a + 1], cnt = hi - lo;
        const long owner = total > 0 ? lo * np / total : 0;
        if ((owner < np ? owner : np - 1) != i)
            continue;
        if (cnt > C) {
            for (long q = 0; q < cnt; q++)
                w->mtmp[lo + q] = w->margin[w->bucket[lo + q]];
            moe_argsort_desc(w->mtmp + lo, (int)cnt, w->idx + lo, w->itmp + lo);
            for (long q = C; q < cnt; q++)
                w->asg[w->bucket[lo + w->idx[lo + q]]] = -1;
        }
        w->load[a] = cnt > C ? C : cnt;
        int kept = 0, *keep = w->idx + lo; /* a's tokens in token order */
        for (long q = lo; q < hi; q++)
            if (w->asg[w->bucket[q]] == a)
                keep[kept++] = w->bucket[q];
        heaps_build(w, E, a, keep, kept, w->tab + (size_t)i * w->Cmax * E);
    }
}

/* Steps 1-3 for the nl tokens of rank < nl (plus C*E - nl dummies), from pi; leaves every
 * one of them placed (asg), every expert holding exactly C, and pi updated. */
static void solve_level(base_ws *w, int E, int nl)
{
    const int n = w->n;
    const long C = ((long)nl + E - 1) / E;
    const int32_t nd = (int32_t)(C * E - nl); /* dummies n .. n+nd-1 */
    base_level_job job = {w, E, nl, n + nd, C};
    /* step 1: best experts (on the threads); exact ties for the best go, in token order, to
     * the lowest tied expert with room (count < C), else the lowest; bucket the tokens by
     * expert in token order */
    moe_par_run(step1_part, &job, moe_par_parts((long)(n + nd) * E, BASE_GRAIN));
    for (int e = 0; e <= E; e++)
        w->bstart[e] = 0;
    long *count = w->bstart + 1;
    for (int32_t t = 0; t < n + nd; t++) {
        int best = w->asg[t];
        if (best < 0)
            continue;
        if (w->margin[t] == 0.0 && count[best] >= C) { /* margin 0: the best is tied */
            const double *ls = base_row(w, E, t), v1 = ls[best] + w->pi[best];
            for (int e = best + 1; e < E; e++)
                if (ls[e] + w->pi[e] == v1 && count[e] < C) {
                    w->asg[t] = best = e;
                    break;
                }
        }
        count[best]++;
    }
    for (int e = 0; e < E; e++)
        w->bstart[e + 1] += w->bstart[e];
    for (int e = 0; e < E; e++)
        w->fill[e] = w->bstart[e];
    for (int32_t t = 0; t < n + nd; t++)
        if (w->asg[t] >= 0)
            w->bucket[w->fill[w->asg[t]]++] = t;
    /* step 2 (on the threads): an over-full expert keeps the C largest margins; the heaps */
    moe_par_run(step2_part, &job, moe_par_parts((long)nl * E, BASE_GRAIN));
    /* step 3: the left-out tokens, in token order */
    int nq = 0;
    for (int32_t t = 0; t < n + nd; t++)
        if ((t >= n || w->rank[t] < nl) && w->asg[t] < 0)
            w->queue[nq++] = t;
    augment_all(w, E, C, nq);
}

/* ---- routing ---- */

static int64_t base_gcd(int64_t x, int64_t y)
{
    while (y) {
        int64_t r = x % y;
        x = y;
        y = r;
    }
    return x;
}

static int base_route(moe_router *r, const moe_route_in *in, moe_plan *plan)
{
    base_ws *w = r->ws;
    const int n = in->n, E = r->E;
    const long C = ((long)n + E - 1) / E;
    w->L = in->logits;
    w->n = n;
    /* level order: token (i * a) mod n has rank i */
    int64_t a = (int64_t)(0.6180339887498949 * n);
    if (a < 1)
        a = 1;
    while (base_gcd(a, n) != 1)
        a++;
    for (int64_t i = 0; i < n; i++)
        w->rank[(i * a) % n] = (int32_t)i;
    /* level sizes: n, then E * c for c = C / ratio, C / ratio^2, ..., 1 (no dummies below) */
    int sizes[BASE_MAX_LEVELS], nlev = 0;
    sizes[nlev++] = n;
    for (long c = C / BASE_LEVEL_RATIO; c >= 1 && nlev < BASE_MAX_LEVELS; c /= BASE_LEVEL_RATIO)
        sizes[nlev++] = (int)(c * E);
    for (int e = 0; e < E; e++)
        w->pi[e] = 0.0;
    for (int l = nlev - 1; l >= 0; l--) /* coarsest first */
        solve_level(w, E, sizes[l]);

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
