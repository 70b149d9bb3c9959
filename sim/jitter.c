/* jitter.c: multiplicative input jitter before the gate (jitter.h). */
#include "jitter.h"

int moe_jitter_apply(const float *x, int n, int d, double eps, const double *u, gsl_rng *rng,
                     float *xj)
{
    if (!(eps >= 0.0 && eps < 1.0))
        return moe_fail(MOE_EINVAL, NULL, "jitter %g is outside [0, 1) (jitter)", eps);
    if (!u && !rng)
        return moe_fail(MOE_EINVAL, "give a seed or the draws (--jitter-uniforms U.npy (n,D))",
                        "jitter needs its draws or a random generator (jitter)");
    const size_t len = (size_t)n * (size_t)d;
    for (size_t i = 0; i < len; i++) {
        double v = u ? u[i] : gsl_rng_uniform(rng);
        if (!(v >= 0.0 && v < 1.0))
            return moe_fail(MOE_EINPUT, "jitter draws are uniforms in [0, 1)",
                            "jitter draw %g at token %zu, column %zu is outside [0, 1)", v,
                            i / (size_t)d, i % (size_t)d);
        xj[i] = x[i] * (float)(1.0 - eps + 2.0 * eps * v);
    }
    return MOE_OK;
}
