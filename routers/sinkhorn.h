/* sinkhorn.h: the Sinkhorn balancing behind the `sinkhorn` router (routers/sinkhorn.c), exposed
 * so that tests can check the converged matrix. */
#ifndef MOE_SINKHORN_H
#define MOE_SINKHORN_H

#include "moe.h"

#define MOE_SINKHORN_MAX_ITER 10000

/* Balance K (T,E) = exp(L[t,e] - max_e L[t,:]) (L (T,E) finite) into
 * B = diag(d0) K diag(d1) with column sums 1/E and row sums 1/n (Megatron's marginals):
 *   d1 = 1; repeat  d0[t] = 1 / (n * sum_e K[t,e] d1[e]),
 *                   d1'[e] = 1 / (E * sum_t d0[t] K[t,e]),
 *                   delta = max_e |d1'[e] - d1[e]| / d1'[e],  d1 = d1'
 *   until delta < tol (then column sums are 1/E and every row sum is within a relative delta
 *   of 1/n), at most max_iter iterations.
 * Writes K, d0 (T), d1 (E) and the iterations used (iters may be NULL); colsum (E) is scratch.
 * Errors (MOE_EINPUT): no convergence within max_iter, or a column whose mass underflows. */
int moe_sinkhorn_balance(const double *L, int n, int E, double tol, int max_iter, double *K,
                         double *d0, double *d1, double *colsum, int *iters);

#endif
