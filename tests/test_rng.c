/* test_rng.c: PCG32 against the published reference output of pcg32-demo (pcg-c): seeded with
 * initstate 42, initseq 54, the first six outputs are 0xa15c02b7 0x7b47f409 0xba1d3330
 * 0x83d2f293 0xbfa4784b 0xcbed606e. Also: the gsl_rng_type draws the same stream, streams
 * differ, and gsl_rng_uniform is uniform on [0,1) (chi-square on 20 bins, 5 sigma); the jump
 * ahead against that many draws, and the uniforms drawn at once on the threads (four
 * generators side by side in each thread's part) against one at a time. */
#include "check.h"
#include "moe.h"
#include "../routers/par.h"

#include <gsl/gsl_cdf.h>
#include <gsl/gsl_randist.h>
#include <string.h>

int main(void)
{
    const uint32_t want[6] = {0xa15c02b7u, 0x7b47f409u, 0xba1d3330u,
                              0x83d2f293u, 0xbfa4784bu, 0xcbed606eu};
    moe_pcg32 r;
    moe_pcg32_seed(&r, 42u, 54u);
    for (int i = 0; i < 6; i++)
        CHECK(moe_pcg32_next(&r) == want[i], "output %d = 0x%08x", i, want[i]);

    gsl_rng *g = moe_rng_alloc(42u, 54u);
    for (int i = 0; i < 6; i++)
        CHECK(gsl_rng_get(g) == want[i], "gsl_rng output %d", i);
    CHECK(gsl_rng_max(g) == 0xffffffffUL, "max");

    /* different streams of the same seed differ */
    gsl_rng *a = moe_rng_alloc(7u, MOE_STREAM_TOKENS), *b = moe_rng_alloc(7u, MOE_STREAM_NOISE);
    int same = 0;
    for (int i = 0; i < 100; i++)
        same += gsl_rng_get(a) == gsl_rng_get(b);
    CHECK(same < 3, "streams 1 and 4 of seed 7 agree on %d of 100 outputs", same);

    /* uniformity of gsl_rng_uniform: chi-square over 20 bins with 200000 draws; the bound is
     * the 1 - 1e-6 quantile of chi2(19) so a correct generator fails once in a million runs. */
    enum { BINS = 20, N = 200000 };
    long cnt[BINS] = {0};
    int outside = 0;
    for (int i = 0; i < N; i++) {
        double u = gsl_rng_uniform(a);
        if (!(u >= 0.0 && u < 1.0))
            outside++;
        else
            cnt[(int)(u * BINS)]++;
    }
    CHECK(outside == 0, "%d uniforms outside [0,1)", outside);
    double chi2 = 0.0, expct = (double)N / BINS;
    for (int i = 0; i < BINS; i++)
        chi2 += (cnt[i] - expct) * (cnt[i] - expct) / expct;
    CHECK(chi2 < gsl_cdf_chisq_Qinv(1e-6, BINS - 1), "chi2 = %g", chi2);

    /* a GSL distribution drawing through the PCG type: Gaussian mean and variance */
    double s = 0, s2 = 0;
    for (int i = 0; i < N; i++) {
        double x = gsl_ran_gaussian_ziggurat(b, 1.0);
        s += x;
        s2 += x * x;
    }
    double mean = s / N, var = s2 / N - mean * mean;
    CHECK(fabs(mean) < 5.0 / sqrt(N), "gaussian mean %g", mean);
    CHECK(fabs(var - 1.0) < 5.0 * sqrt(2.0 / N), "gaussian variance %g", var);

    /* the jump ahead: advance(r, d) is d draws (d = 0, 1, 2, 1000, 2^20 + 7 against that many
     * calls); moe_rng_uniform_fill gives the doubles of one gsl_rng_uniform call after another
     * and leaves the generator where they leave it, on 1 and 2 threads, for counts below and
     * above its split (8192 draws a thread) and not a multiple of the threads */
    const uint64_t ds[] = {0, 1, 2, 1000, (1u << 20) + 7};
    for (size_t q = 0; q < sizeof ds / sizeof *ds; q++) {
        moe_pcg32 x, y;
        moe_pcg32_seed(&x, 9u, 3u);
        y = x;
        for (uint64_t i = 0; i < ds[q]; i++)
            moe_pcg32_next(&x);
        moe_pcg32_advance(&y, ds[q]);
        CHECK(x.state == y.state && x.inc == y.inc, "advance by %llu differs from that many draws",
              (unsigned long long)ds[q]);
    }
    static double u[40001], v[40001];
    const long ns[] = {0, 1, 8191, 16384, 40001};
    for (int nt = 1; nt <= 2; nt++)
        for (size_t q = 0; q < sizeof ns / sizeof *ns; q++) {
            moe_par_set_threads(nt);
            gsl_rng *x = moe_rng_alloc(11u, MOE_STREAM_GSHARD);
            gsl_rng *y = moe_rng_alloc(11u, MOE_STREAM_GSHARD);
            for (long i = 0; i < ns[q]; i++)
                u[i] = gsl_rng_uniform(x);
            moe_rng_uniform_fill(y, v, ns[q]);
            CHECK(!memcmp(u, v, (size_t)ns[q] * sizeof *u) && gsl_rng_get(x) == gsl_rng_get(y),
                  "%d threads, %ld uniforms at once differ from one at a time", nt, ns[q]);
            gsl_rng_free(x);
            gsl_rng_free(y);
        }
    moe_par_set_threads(0);
    gsl_rng_free(g);
    gsl_rng_free(a);
    gsl_rng_free(b);
    return check_report("test_rng");
}
