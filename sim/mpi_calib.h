/* mpi_calib.h: `moesim calibrate`, the loopback calibration of the cluster model's alpha-beta
 * constants on the ranks of an MPI job (sim/mpi_calib.c; docs/cluster.md "Calibration").
 *
 * Two benchmarks over message sizes m (bytes per peer), the sizes interleaved within each
 * repeat and every repeat started from a barrier: a ping-pong between ranks 0 and 1 (t = alpha
 * + m / beta, half the round trip) and an all-to-all over the P ranks with the MPI_Alltoallv of
 * the expert-parallel layer (t = alpha (P-1) + (P-1) m / beta, the slowest rank). Each size's
 * time is the first quartile of its repeats (other processes only add time); alpha and beta
 * come from a weighted least-squares line (GSL, weights 1/t^2: relative errors, so that the
 * large sizes do not set the latency alone), fitted again on each third of the repeats to
 * report the fit's spread. The all-to-all fit is written as a [cluster.NAME] section with
 * dispatch = per_claim, the topology of the ranks on this machine, and cores = the machine's
 * online processors.
 *
 * A third benchmark times the layer's local work around the all-to-all on every rank at once,
 * with the layer's own code (moe_ep_local_work) on a plan of n claims per rank, rows of H
 * floats, each repeat with the work's cache lines flushed first (moe_ep_flush): the dispatch's
 * (indexing the claims, packing the send rows, planning the received ones) and the combine's
 * (adding the returned rows into the tokens' outputs), over n and H; each is fitted as
 * t = latency + n row + n 4H / rate (moe_calib_fit_pack) and written as the section's
 * pack_latency_us, pack_row_ns, pack_gbps and unpack_latency_us, unpack_row_ns, unpack_gbps.
 * The grid runs again warm (no flush: each repeat after the last), written as the warm_*
 * terms, with the size of the last cache level (cache_mb), for models whose step stays in
 * the cache. */
#ifndef MOE_MPI_CALIB_H
#define MOE_MPI_CALIB_H

#include <stddef.h>

/* The line y = c0 + c1 x through (x, y) (n >= 2, y > 0) by least squares with weights 1/y^2;
 * rel_rms: the root mean square of (fit - y) / y. MOE_EINVAL when n < 2, a y <= 0 or all x
 * equal. */
int moe_calib_fit(const double *x, const double *y, size_t n, double *c0, double *c1,
                  double *rel_rms);

/* The plane y = c[0] + c[1] rows + c[2] bytes through the n points (n >= 3, y > 0) by least
 * squares with weights 1/y^2 (GSL's gsl_multifit_wlinear); rel_rms as above. MOE_EINVAL when
 * n < 3, a y <= 0 or the points do not determine the plane. */
int moe_calib_fit_pack(const double *rows, const double *bytes, const double *y, size_t n,
                       double c[3], double *rel_rms);

/* `moesim calibrate [--ranks P] [--out FILE] [--name NAME] [--repeats N] [--max-bytes B]`,
 * run under mpirun -np P (P >= 2). */
int moe_cmd_calibrate(int argc, char **argv);

#endif
