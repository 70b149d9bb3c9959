/* rng.c: PCG32, XSH-RR 64/32 (M. E. O'Neill, "PCG: A Family of Simple Fast Space-Efficient
 * Statistically Good Algorithms for Random Number Generation", 2014), and its gsl_rng_type so
 * that GSL's distributions draw from it. Streams are selected by (seed, stream) as in pcg-c's
 * pcg32_srandom_r(initstate, initseq). */
#include "moe.h"
#include "../routers/par.h"

#include <gsl/gsl_rng.h>

void moe_pcg32_seed(moe_pcg32 *r, uint64_t initstate, uint64_t initseq)
{
    r->state = 0u;
    r->inc = (initseq << 1u) | 1u;
    moe_pcg32_next(r);
    r->state += initstate;
    moe_pcg32_next(r);
}

uint32_t moe_pcg32_next(moe_pcg32 *r)
{
    uint64_t old = r->state;
    r->state = old * 6364136223846793005ULL + r->inc;
    uint32_t xorshifted = (uint32_t)(((old >> 18u) ^ old) >> 27u);
    uint32_t rot = (uint32_t)(old >> 59u);
    return (xorshifted >> rot) | (xorshifted << ((-rot) & 31u));
}

/* ---- gsl_rng_type ---- */

static void pcg_set(void *state, unsigned long seed)
{
    /* gsl_rng_set(r, s): stream 0 (GSL passes one seed); moe_rng_alloc selects streams. */
    moe_pcg32_seed(state, (uint64_t)seed, 0u);
}

static unsigned long pcg_get(void *state) { return moe_pcg32_next(state); }

static double pcg_get_double(void *state)
{
    return moe_pcg32_next(state) / 4294967296.0; /* [0, 1) */
}

static const gsl_rng_type pcg32_type = {
    "pcg32", 0xffffffffUL, 0, sizeof(moe_pcg32), pcg_set, pcg_get, pcg_get_double,
};
const gsl_rng_type *moe_rng_pcg32 = &pcg32_type;

gsl_rng *moe_rng_alloc(uint64_t seed, uint64_t stream)
{
    gsl_rng *r = gsl_rng_alloc(moe_rng_pcg32);
    if (!r) {
        moe_fail(MOE_ENOMEM, NULL, "out of memory (random number generator)");
        return NULL;
    }
    moe_pcg32_seed(gsl_rng_state(r), seed, stream);
    return r;
}

/* ---- many uniforms at once ---- */

void moe_pcg32_advance(moe_pcg32 *r, uint64_t delta)
{
    /* state after delta steps of s -> a s + c (mod 2^64), by squaring: the composition of two
     * steps of the affine map is again affine, (a, c) then (a, c) = (a a, (a + 1) c) */
    uint64_t a = 6364136223846793005ULL, c = r->inc, am = 1u, cm = 0u;
    for (; delta > 0; delta >>= 1) {
        if (delta & 1u) {
            am *= a;
            cm = cm * a + c;
        }
        c = (a + 1u) * c;
        a *= a;
    }
    r->state = am * r->state + cm;
}

typedef struct {
    moe_pcg32 start;
    double *u;
    long n;
} fill_job;

/* Draws q = lo..hi-1 into u[q] from the state start before draw 0: four generators at once,
 * each a quarter of [lo, hi) (the last one then the draws left), as one generator's steps wait
 * on each other (a multiplication and an addition each) and four overlap. */
static void pcg32_uniforms(const moe_pcg32 *start, double *u, long lo, long hi)
{
    const long m = (hi - lo) / 4;
    moe_pcg32 g[4];
    for (int j = 0; j < 4; j++) {
        g[j] = *start;
        moe_pcg32_advance(&g[j], (uint64_t)(lo + j * m));
    }
    for (long q = 0; q < m; q++)
#pragma GCC unroll 4
        for (int j = 0; j < 4; j++)
            u[lo + j * m + q] = moe_pcg32_next(&g[j]) / 4294967296.0; /* as pcg_get_double */
    for (long q = lo + 4 * m; q < hi; q++)
        u[q] = moe_pcg32_next(&g[3]) / 4294967296.0;
}

static void fill_part(void *ctx, int i, int np)
{
    const fill_job *j = ctx;
    long lo, hi;
    moe_par_range(j->n, i, np, &lo, &hi);
    pcg32_uniforms(&j->start, j->u, lo, hi);
}

void moe_rng_uniform_fill(gsl_rng *r, double *u, long n)
{
    if (r->type != moe_rng_pcg32 || n < 8192) {
        for (long q = 0; q < n; q++)
            u[q] = gsl_rng_uniform(r);
        return;
    }
    moe_pcg32 *g = gsl_rng_state(r);
    fill_job j = {*g, u, n};
    moe_par_run(fill_part, &j, moe_par_parts(n, 8192));
    moe_pcg32_advance(g, (uint64_t)n);
}
