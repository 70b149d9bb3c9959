/* test_rng.c: PCG32 against the published reference output of pcg32-demo (pcg-c): seeded with
 * initstate 42, initseq 54, the first six outputs are 0xa15c02b7 0x7b47f409 0xba1d3330
 * 0x83d2f293 0xbfa4784b 0xcbed606e. Also: the gsl_rng_type draws the same stream, streams
 * differ, and gsl_rng_uniform is uniform on [0,1) (chi-square on 20 bins, 5 sigma). */
#include "check.h"
#include "moe.h"

#include <gsl/gsl_cdf.h>
#include <gsl/gsl_randist.h>

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
    gsl_rng_free(g);
    gsl_rng_free(a);
    gsl_rng_free(b);
    return check_report("test_rng");
}
