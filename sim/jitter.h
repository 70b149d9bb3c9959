/* jitter.h: multiplicative input jitter of the gate input (DeepSpeed's noisy_gate_policy
 * 'Jitter', multiplicative_jitter; Megatron's moe_input_jitter_eps, apply_input_jitter):
 * xj = x * U(1-eps, 1+eps), one factor per element, on the gate's input only (the experts see
 * x unchanged). */
#ifndef MOE_JITTER_H
#define MOE_JITTER_H

#include "moe.h"

/* xj (n,d) = x (n,d) times the factors f = 1 - eps + 2*eps*u, u (n,d) row-major from the given
 * draws (each in [0,1)), or, when u is NULL, gsl_rng_uniform(rng) per element row-major. The
 * factor is rounded to float and the product taken in float (as the fp32 gate input of
 * DeepSpeed). eps in [0,1). Errors: a draw outside [0,1), no draws and no generator. */
int moe_jitter_apply(const float *x, int n, int d, double eps, const double *u, gsl_rng *rng,
                     float *xj);

#endif
