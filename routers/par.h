/* par.h: the threads of the routers, which the layer's phases share (sim/gate.c, and the jobs
 * of sim/layer_gemm.h: dispatch, the expert phase, combine), so that no phase of a forward
 * creates threads of its own. Routing work is split into contiguous parts (token blocks or
 * expert ranges); part i runs fn(ctx, i, nparts), part 0 on the calling thread, the others on
 * threads kept between calls (created on first use), all finished before moe_par_run returns.
 * Every part writes only its own outputs and every reduction whose rounding matters is done in
 * a fixed order by the caller, so a router's plan and statistics do not depend on the number
 * of threads.
 */
#ifndef MOE_PAR_H
#define MOE_PAR_H

enum { MOE_PAR_MAX = 8 };

/* Threads the routers use: nt >= 1, or 0 = the online processors (at most MOE_PAR_MAX; counted
 * at the first call and kept for the life of the process). Process-wide; set it before
 * routing, not while routers run. */
void moe_par_set_threads(int nt);
int moe_par_threads(void);

/* Parts for `work` items of which a part should hold at least `grain`: 1..moe_par_threads(). */
int moe_par_parts(long work, long grain);

/* For tests: g > 0 replaces every caller's grain by g (g = 1 splits even a few tokens over the
 * threads, so that the part boundaries of small cases are exercised); 0 restores the callers'
 * grains. Process-wide, like moe_par_set_threads. */
void moe_par_set_grain(long g);

/* [lo, hi) of part i of n items split into nparts contiguous ranges of near-equal size. */
void moe_par_range(long n, int i, int nparts, long *lo, long *hi);

/* Run fn(ctx, i, nparts) for i = 0..nparts-1 (nparts <= MOE_PAR_MAX), in parallel; a part whose
 * thread cannot be created runs on the caller. */
void moe_par_run(void (*fn)(void *ctx, int i, int nparts), void *ctx, int nparts);

/* The mean time, in nanoseconds, for one cache line to go from the calling thread to the
 * pool's first worker and back (parts 0 and 1 of one moe_par_run pass a counter back and forth,
 * spinning, yielding the processor now and then: 20 ms of trips untimed, so that two threads
 * woken on one processor have been moved apart, then `trips` timed), or NaN with fewer than two
 * threads, when the worker does not start within a second or when the trips take longer than
 * a second and 10 ms each (a machine far busier than its processors). On a host whose cores
 * share a cache it is tens of nanoseconds; where the two threads sit on cores far apart
 * (another chiplet or socket, or virtual processors the host has moved apart) hundreds, and
 * every handoff of data between the routers' threads costs that much more; thousands when the
 * two take turns on one processor. The benchmark records it beside its times. */
double moe_par_round_trip_ns(long trips);

/* *sum = sum over t of logsumexp(x[t,:])^2 for x (n,M), each row as moe_logsumexp computes it
 * and the squares added in token order (so the sum does not depend on the number of threads);
 * the rows on the threads. MOE_ENOMEM when the (n) scratch cannot be allocated. */
int moe_par_sum_lse_sq(const double *x, int n, int M, double *sum);

#endif
