/* test_gate.c: the fixed-order gate logits (sim/gate.c).
 *
 * Checked: hand-worked products; the summation order k = 0..D-1 (x = (2^60, 1, -2^60) against
 * ones sums to 0 in that order, while any other grouping that adds 2^60 and -2^60 first gives 1),
 * placed in every tile position (the scalar path's full 4x16 tiles and tails; the vector path's
 * column panels of 1 to 4 vectors of 8 (or 4) doubles, partial vectors, and row tiles of 3 to 24
 * rows with tails); bit equality with the plain double loop of the definition on random
 * (1000,67) x (67,M) shapes, M = 37 (a full 32-column panel and a 5-column one), 12 and 8,
 * float and double inputs; the same bits for 1, 2 and 3 threads; moe_layer_gate returns exactly
 * these logits; logits of the largest floats are finite. */
#include "check.h"
#include "gate.h"
#include "layer.h"
#include "moe.h"

#include <float.h>
#include <gsl/gsl_randist.h>
#include <math.h>
#include <string.h>

static void test_hand(void)
{
    /* x (2,3), wg (3,2): row 0 = (1+0+6, 0+2-3), row 1 = (0.5+0+8, 0-1-4) */
    const float x[6] = {1, 2, 3, 0.5f, -1, 4}, wg[6] = {1, 0, 0, 1, 2, -1};
    const double want[4] = {7, -1, 8.5, -5};
    double got[4];
    moe_gate_logits(x, 2, 3, wg, 2, got, 1);
    for (int i = 0; i < 4; i++)
        CHECK(got[i] == want[i], "hand logit %d: %g, want %g", i, got[i], want[i]);
    /* d = 0: empty sums are +0.0 */
    double z[4] = {1, 1, 1, 1};
    moe_gate_logits(x, 2, 0, wg, 2, z, 2);
    for (int i = 0; i < 4; i++)
        CHECK(z[i] == 0.0, "d = 0 gives 0, got %g", z[i]);
}

/* n rows, m columns: row r0 of x is (2^60, 1, -2^60), column c0 of wg is (1, 1, 1), column
 * c1 = c0 + 1 (mod m) is (0, 1, 0), everything else 0. Logit (r0, c0) must be 0: in the order
 * k = 0, 1, 2 in double, 2^60 + 1 rounds to 2^60 and then cancels; (r0, c1) is exactly 1; all
 * other logits are 0. */
static void test_order(size_t n, size_t m, size_t r0, size_t c0, int threads)
{
    const size_t d = 3;
    float *x = calloc(n * d, sizeof *x), *wg = calloc(d * m, sizeof *wg);
    double *lg = malloc(n * m * sizeof *lg);
    x[r0 * d + 0] = 0x1p60f, x[r0 * d + 1] = 1.0f, x[r0 * d + 2] = -0x1p60f;
    for (size_t k = 0; k < d; k++)
        wg[k * m + c0] = 1.0f;
    size_t c1 = (c0 + 1) % m;
    if (c1 != c0)
        wg[1 * m + c1] = 1.0f;
    moe_gate_logits(x, n, d, wg, m, lg, threads);
    for (size_t r = 0; r < n; r++)
        for (size_t c = 0; c < m; c++) {
            double want = (r == r0 && c == c1 && c1 != c0) ? 1.0 : 0.0;
            CHECK(lg[r * m + c] == want, "order probe n=%zu m=%zu at (%zu,%zu), %d threads: "
                  "logit (%zu,%zu) = %g, want %g", n, m, r0, c0, threads, r, c, lg[r * m + c],
                  want);
        }
    free(x), free(wg), free(lg);
}

static void test_random(gsl_rng *r, size_t M)
{
    enum { N = 1000, D = 67 };
    float *x = malloc(N * D * sizeof *x), *wg = malloc(D * M * sizeof *wg);
    double *xd = malloc(N * D * sizeof *xd), *wd = malloc(D * M * sizeof *wd);
    double *ref = malloc(N * M * sizeof *ref), *refd = malloc(N * M * sizeof *refd);
    double *lg = malloc(N * M * sizeof *lg);
    for (size_t i = 0; i < (size_t)N * D; i++)
        xd[i] = gsl_ran_gaussian(r, 1.0), x[i] = (float)xd[i];
    for (size_t i = 0; i < (size_t)D * M; i++)
        wd[i] = gsl_ran_gaussian(r, 0.1), wg[i] = (float)wd[i];
    /* the definition, written plainly (this file is built with -std=c11: no contraction) */
    for (size_t t = 0; t < N; t++)
        for (size_t j = 0; j < M; j++) {
            double s = 0.0, sd = 0.0;
            for (size_t k = 0; k < D; k++) {
                s += (double)x[t * D + k] * (double)wg[k * M + j];
                sd += xd[t * D + k] * wd[k * M + j];
            }
            ref[t * M + j] = s, refd[t * M + j] = sd;
        }
    for (int th = 1; th <= 3; th++) {
        moe_gate_logits(x, N, D, wg, M, lg, th);
        CHECK(memcmp(lg, ref, sizeof(double) * N * M) == 0,
              "float gate, M = %zu, %d threads: not bit-equal to the sequential double loop", M, th);
        moe_gate_logits_d(xd, N, D, wd, M, lg, th);
        CHECK(memcmp(lg, refd, sizeof(double) * N * M) == 0,
              "double gate, M = %zu, %d threads: not bit-equal to the sequential double loop", M, th);
    }
    moe_layer *L = moe_layer_alloc(N, 4, 1, D, 3, MOE_ACT_RELU);
    CHECK(L != NULL, "layer alloc: %s", moe_errmsg());
    if (L) {
        CHECK_INT(moe_layer_gate(L, x, N, wg, M, lg), MOE_OK);
        CHECK(memcmp(lg, ref, sizeof(double) * N * M) == 0,
              "moe_layer_gate: not bit-equal to the sequential double loop");
        moe_layer_free(L);
    }
    free(x), free(wg), free(xd), free(wd), free(ref), free(refd), free(lg);
}

/* The largest floats: x = +-FLT_MAX, wg = +-FLT_MAX, d = 64 (signs chosen so every product of
 * a row is positive, then mixed). Each product is below 2^256 and exact in double and 64 of them
 * sum below 2^262, so every logit is finite: the pipeline relies on this to skip the routers'
 * finiteness check of logits its gate computed from finite x and wg. Logit (0,0) is FLT_MAX^2
 * (exact in double: 48 significant bits) added 64 times from +0.0 in double, as the definition
 * sums (the partial sums 3, 5, ... FLT_MAX^2 need 49-54 bits and round). */
static void test_finite_bound(void)
{
    enum { N = 3, D = 64, M = 5 };
    float x[N * D], wg[D * M];
    double lg[N * M];
    for (int k = 0; k < D; k++) {
        x[0 * D + k] = FLT_MAX, x[1 * D + k] = -FLT_MAX;
        x[2 * D + k] = k % 3 ? FLT_MAX : -FLT_MAX;
        for (int j = 0; j < M; j++)
            wg[k * M + j] = (j + k) % 2 && j > 0 ? -FLT_MAX : FLT_MAX;
    }
    moe_gate_logits(x, N, D, wg, M, lg, 1);
    const double big = (double)FLT_MAX * (double)FLT_MAX;
    double want = 0.0;
    for (int k = 0; k < D; k++)
        want += big;
    for (int i = 0; i < N * M; i++)
        CHECK(isfinite(lg[i]), "logit %d of the largest floats is not finite: %g", i, lg[i]);
    CHECK(lg[0] == want, "logit (0,0): %.17g, want %.17g", lg[0], want);
}

int main(void)
{
    gsl_rng *r = moe_rng_alloc(20261205u, MOE_STREAM_EXPERT_W);
    test_hand();
    test_finite_bound();
    /* full tiles (8 rows, 32 columns) and tails (7 rows, 20 columns), probe in each corner; then
     * shapes of the vector path: 1 to 4 vectors per panel (m = 8, 16, 24, 40), partial vectors
     * (m = 13, 45) and rows over a 24-row block with tails (n = 30, 49) */
    const size_t shapes[][2] = {{8, 32}, {7, 20}, {1, 1}, {5, 17}, {49, 8},
                                {30, 16}, {25, 24}, {30, 40}, {13, 13}, {26, 45}};
    for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++) {
        size_t n = shapes[s][0], m = shapes[s][1];
        for (int th = 1; th <= 2; th++) {
            test_order(n, m, 0, 0, th);
            test_order(n, m, n - 1, m - 1, th);
            test_order(n, m, n / 2, m / 2, th);
        }
    }
    test_random(r, 37);
    test_random(r, 12);
    test_random(r, 8);
    gsl_rng_free(r);
    return check_report("test_gate");
}
