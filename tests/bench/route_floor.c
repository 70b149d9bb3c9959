/* route_floor.c: what the route phase of switch, topk and gshard cannot do without, in units of
 * the bound of `moesim bench --routing` (one pass over the logits, one exponential each), each
 * part alone on the routers' threads, on the bench's N(0,1) float64 logits:
 *   - softmax: moe_softmax_rows_max, the exact float64 softmax every one of those routers takes
 *     (p, the log-sum-exp for the z-loss and the row maximum), p into a buffer of one chunk of
 *     rows per thread (the routers' chunk, moe_claims_rows_chunk), as their rows pass does;
 *     at E = 8, k = 2 moe_softmax_rows8_top2, which also gives each row's top two, as gshard and
 *     topk k = 2 take them there;
 *   - + select (k >= 2 but E = 8, k = 2): what moesim's top-k of each row of logits
 *     (moe_claims_topk_rows) adds when it goes first in each chunk, as topk takes it before its
 *     softmax (the softmax then reads the chunk's logits from the cache): the time of both
 *     together less the softmax's alone (at k = 1 the softmax pass gives the first index of the
 *     maximum);
 *   - entries: n * k plan entries (moe_entry, 32 bytes) written in token order, each thread its
 *     tokens' entries, from the selection's experts and values (k = 1: expert 0, gate 1).
 * The plan's slots, the claims' counts and the metrics come on top of these. Each figure is the
 * best of at least R runs back to back (R = 10 below 2^20 tokens, 3 from there on), and of more
 * until they took a quarter of a second, as the bench's cells and bound (`--min-time`): the
 * first passes after a pause run slower on a busy host (65536 x 8 here: a bound of 0.73 ms from
 * 10 passes, 0.37 from 460); the bound's passes run before the parts and again after them, and
 * the best of all is taken, as the bench takes its bound.
 *
 * Usage: route_floor [N E K]: one shape; without arguments the routing bench's shapes (n = 65536
 * and 1048576, E = 8, 64, 256, k = 1, 2, 8). `make bench-route-floor` builds and runs it. */
#include "bench_routing.h"
#include "moe.h"
#include "vexp.h"
#include "../routers/claims.h"
#include "../routers/par.h"

#include <gsl/gsl_randist.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

typedef struct {
    const double *L;
    int n, E, k;
    int top2; /* E = 8, k = 2: the softmax pass gives the top two (moe_softmax_rows8_top2) */
    long chunk;
    double *p[MOE_PAR_MAX]; /* one chunk of rows per part */
    double *lse, *mx;       /* (n) */
    int32_t *idx;           /* (n, k) */
    double *val;            /* (n, k) */
    moe_entry *en;          /* (n * k) */
} floor_job;

/* The softmax of part i's rows, a chunk at a time, each chunk's top-k first with sel. */
static void softmax_rows(floor_job *j, int i, int np, int sel)
{
    long lo, hi;
    moe_par_range(j->n, i, np, &lo, &hi);
    for (long t = lo; t < hi; t += j->chunk) {
        const int nr = (int)(hi - t < j->chunk ? hi - t : j->chunk);
        int slow = 0;
        if (sel)
            moe_claims_topk_rows(j->L + (size_t)t * j->E, nr, j->E, j->k,
                                 j->idx + (size_t)t * j->k, j->val + (size_t)t * j->k);
        if (j->top2) /* (the top two to idx and val, as the routers take them there) */
            moe_softmax_rows8_top2(j->L + (size_t)t * 8, nr, j->p[i], j->lse + t, j->mx + t,
                                   j->idx + (size_t)t * 2, j->val + (size_t)t * 2, NULL,
                                   &slow);
        else
            moe_softmax_rows_max(j->L + (size_t)t * j->E, nr, j->E, j->p[i], j->lse + t,
                                 j->mx + t);
    }
}

static void softmax_part(void *ctx, int i, int np)
{
    softmax_rows(ctx, i, np, 0);
}

static void select_softmax_part(void *ctx, int i, int np)
{
    softmax_rows(ctx, i, np, 1);
}

static void entries_part(void *ctx, int i, int np)
{
    floor_job *j = ctx;
    long lo, hi;
    moe_par_range(j->n, i, np, &lo, &hi);
    const int k = j->k;
    for (long t = lo; t < hi; t++)
        for (int r = 0; r < k; r++) {
            const size_t q = (size_t)t * k + r;
            j->en[q] = (moe_entry){(int32_t)t, j->idx[q], (int32_t)(t % 4096), 1.0, j->val[q]};
        }
}

enum { MIN_TIME_MS = 250 }; /* the bench's --min-time */

/* The best of at least R runs of fn back to back, and of more until they took MIN_TIME_MS. */
static double timed(void (*fn)(void *, int, int), floor_job *j, int R)
{
    double best = INFINITY, spent = 0.0;
    for (int r = 0; r < R || spent < MIN_TIME_MS * 1e-3; r++) {
        const double t0 = moe_now();
        moe_par_run(fn, j, moe_par_threads());
        const double dt = moe_now() - t0;
        best = dt < best ? dt : best;
        spent += dt;
    }
    return best;
}

/* The bound as timed does the parts: the best of R passes at a time until they took
 * MIN_TIME_MS. */
static double bound_timed(const double *L, int n, int E, int R)
{
    double best = INFINITY;
    for (const double t0 = moe_now(); best == INFINITY || moe_now() - t0 < MIN_TIME_MS * 1e-3;) {
        const double b = moe_bench_routing_bound(L, n, E, R);
        best = b < best ? b : best;
    }
    return best;
}

static int floor_shape(const double *L, int n, int E, int k)
{
    floor_job j = {.L = L, .n = n, .E = E, .k = k, .top2 = E == 8 && k == 2};
    j.chunk = moe_claims_rows_chunk(E);
    int ok = (j.lse = malloc((size_t)n * sizeof *j.lse)) &&
             (j.mx = malloc((size_t)n * sizeof *j.mx)) &&
             (j.idx = malloc((size_t)n * k * sizeof *j.idx)) &&
             (j.val = malloc((size_t)n * k * sizeof *j.val)) &&
             (j.en = malloc((size_t)n * k * sizeof *j.en));
    for (int i = 0; ok && i < MOE_PAR_MAX; i++)
        ok = (j.p[i] = malloc((size_t)j.chunk * E * sizeof(double))) != NULL;
    if (ok) {
        const int R = n >= 1048576 ? 3 : 10;
        const int sel = k >= 2 && !j.top2;
        const double b0 = bound_timed(L, n, E, R), s = timed(softmax_part, &j, R),
                     c = sel ? timed(select_softmax_part, &j, R) : s;
        if (k == 1) /* the entries' experts (k >= 2: the selection's or the softmax's top two) */
            for (long t = 0; t < n; t++)
                j.idx[t] = 0, j.val[t] = 1.0;
        const double w = timed(entries_part, &j, R), b1 = bound_timed(L, n, E, R),
                     b = b1 < b0 ? b1 : b0;
        double sum = 0.0; /* keeps the outputs alive */
        for (long t = 0; t < n; t++)
            sum += j.lse[t] + j.en[(size_t)t * k].combine_w;
        printf("n=%-7d E=%-3d k=%d: bound %8.3f ms | softmax %5.2f | + select %5.2f | entries "
               "%5.2f | sum %5.2f bounds (checksum %.6g)\n",
               n, E, k, b * 1e3, s / b, (c - s) / b, w / b, (c + w) / b, sum);
    } else {
        fprintf(stderr, "route_floor: out of memory at n = %d, E = %d, k = %d\n", n, E, k);
    }
    free(j.lse), free(j.mx), free(j.idx), free(j.val), free(j.en);
    for (int i = 0; i < MOE_PAR_MAX; i++)
        free(j.p[i]);
    return ok ? 0 : 1;
}

/* The floors of n x E logits (N(0,1), drawn once) at each of the nk values of ks. */
static int floor_size(int n, int E, const int *ks, int nk)
{
    double *L = malloc((size_t)n * E * sizeof *L);
    gsl_rng *g = moe_rng_alloc(1, 0);
    if (!L || !g) {
        fprintf(stderr, "route_floor: out of memory (%d x %d logits)\n", n, E);
        free(L);
        if (g)
            gsl_rng_free(g);
        return 1;
    }
    for (size_t q = 0; q < (size_t)n * E; q++)
        L[q] = gsl_ran_ugaussian(g);
    gsl_rng_free(g);
    int rc = 0;
    for (int c = 0; c < nk && !rc; c++)
        rc = floor_shape(L, n, E, ks[c]);
    free(L);
    return rc;
}

int main(int argc, char **argv)
{
    static const int ns[] = {65536, 1048576}, es[] = {8, 64, 256}, ks[] = {1, 2, 8};
    if (argc != 1 && argc != 4) {
        fprintf(stderr, "usage: route_floor [N E K]\n");
        return 2;
    }
    const int n = argc == 4 ? atoi(argv[1]) : 0, E = argc == 4 ? atoi(argv[2]) : 8,
              k = argc == 4 ? atoi(argv[3]) : 1;
    if (argc == 4 && (n < 1 || E < 8 || E > 1024 || k < 1 || k > 8 || k > E)) {
        fprintf(stderr, "route_floor: N >= 1, 8 <= E <= 1024, 1 <= K <= 8 and K <= E, got %d, "
                        "%d and %d\n", n, E, k);
        return 2;
    }
    printf("route_floor: %d threads; each part alone, in units of the bound (one pass over the "
           "logits, one exponential each)\n", moe_par_threads());
    if (argc == 4)
        return floor_size(n, E, &k, 1);
    int rc = 0;
    for (int a = 0; a < 2 && !rc; a++)
        for (int b = 0; b < 3 && !rc; b++)
            rc = floor_size(ns[a], es[b], ks, 3);
    return rc;
}
