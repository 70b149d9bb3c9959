/* gate.h: the router's gate logits, logits (N,M) = x (N,D) wg (D,M), computed by moesim's own
 * fixed-order routine instead of a BLAS sgemm, so that routing decisions do not depend on the
 * BLAS kernel, the thread count or the CPU.
 *
 * Every logit is the sum over k = 0, 1, ..., D-1, in that order, of the product
 * (double)x[t,k] * (double)wg[k,j], accumulated in double from +0.0. A product of two floats is
 * exact in double (24 + 24 significand bits <= 53), so the only roundings are the D additions,
 * always in the same order: the result is one well-defined IEEE-754 value whatever the vector
 * width, the blocking, the thread split or whether the compiler contracts a*b+c into an FMA
 * (fma(a,b,c) rounds a*b+c once, and a*b is exact, so both give the same bits). gate.c is
 * compiled with -ffp-contract=off anyway, so the argument does not rest on that alone. */
#ifndef MOE_GATE_H
#define MOE_GATE_H

#include <stddef.h>

/* logits (n,m) = x (n,d) wg (d,m) as described above, rows split into contiguous blocks over up
 * to `threads` threads (the result does not depend on it). n = 0 is a no-op; d = 0 gives
 * zeros. */
void moe_gate_logits(const float *x, size_t n, size_t d, const float *wg, size_t m,
                     double *logits, int threads);

/* The same over double inputs (the training engine's double-precision kernels): products are
 * rounded once each (no longer exact), still added in the fixed order k = 0..D-1 without
 * contraction, so the bits are again independent of CPU and threads. */
void moe_gate_logits_d(const double *x, size_t n, size_t d, const double *wg, size_t m,
                       double *logits, int threads);

#endif
