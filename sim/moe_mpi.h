/* moe_mpi.h: moesim over MPI (README.md "Expert parallelism over MPI"), in three files: the process
 * setup, placement, collectives and error agreement (mpi_proc.c), expert parallelism (experts
 * sharded over ranks, tokens moved with MPI_Alltoallv as in Shazeer et al. 2017, GShard,
 * DeepSpeed and Tutel; mpi_ep.c) and `moesim run` spread over ranks (mpi_run.c). The header is
 * not called mpi.h so that it cannot shadow MPI's own <mpi.h> on the -Isim include path.
 *
 * MPI is optional: sim/mpi_*.c use it only when the Makefile found mpicc (-DMOESIM_MPI). Without
 * it every process is one rank, moe_mpi_compiled() is 0 and --expert-parallel is refused with a
 * clear error. MPI_Init runs only when the process was started by mpirun (or another MPI
 * launcher), so a plain `./moesim` never needs MPI.
 *
 * Placement (P ranks, T tokens, E experts, E >= P, T >= P): rank q holds the tokens
 * [ceil(qT/P), ceil((q+1)T/P)) and the experts [ceil(qE/P), ceil((q+1)E/P)), contiguous blocks;
 * with E divisible by P that is E/P experts per rank, experts e/(E/P) as in DeepSpeed. Token t
 * lives on rank floor(tP/T), expert e on rank floor(eP/E).
 *
 * Expert-parallel forward of one routing plan (every rank holds the same plan: routing is
 * replicated, so it is bit-identical to the single-process routing):
 *   dispatch  each rank sums dispatch_w * x[t] over its own tokens' entries into one row per
 *             expert slot (e,s) they touch, and sends the rows to the expert's rank with one
 *             MPI_Alltoallv (the counts and the row order follow from the plan, so no counts are
 *             exchanged); sparse plans send one row per kept entry, dense plans (soft_moe) one
 *             partial sum per slot and source rank
 *   experts   each rank runs its experts (moe_layer_forward on the received rows: the rows of
 *             one slot are summed into h[e,s] and FFN_e(h[e,s]) is returned per row)
 *   combine   the outputs go back with a second MPI_Alltoallv in the same row order, and each
 *             token's rank sums combine_w * out in plan order.
 * Only filled rows move (no padding to the capacity, as Tutel's and MegaBlocks' variable-size
 * all-to-all); the rows a rank sends to itself stay in memory and are not counted as bytes.
 */
#ifndef MOE_MOE_MPI_H
#define MOE_MOE_MPI_H

#include "layer.h"
#include "moe.h"
#include "point.h"
#include "spec.h"
#include "store.h"

#include <signal.h>

/* ---- processes ------------------------------------------------------------------------- */

/* 1 when moesim was built with MPI (mpicc found), else 0. */
int moe_mpi_compiled(void);
/* "Open MPI v4.1.4, ..." (MPI_Get_library_version), or "none (built without MPI)". */
const char *moe_mpi_library(void);
/* Initialise MPI when launched by an MPI launcher (env OMPI_COMM_WORLD_SIZE, PMIX_RANK, PMI_SIZE
 * or PMI_RANK set); otherwise do nothing and run as rank 0 of 1. Safe to call twice. */
int moe_mpi_init(void);
/* Finalise MPI if moe_mpi_init started it. rc: the command's status; when the ranks lost step
 * after an error on some of them (moe_mpi_desync), the job is aborted with MPI_Abort instead so
 * that no rank waits forever in a collective. Returns rc. */
int moe_mpi_finalize(int rc);
int moe_mpi_rank(void); /* 0 without MPI */
int moe_mpi_size(void); /* 1 without MPI */
int moe_mpi_active(void); /* MPI initialised by moe_mpi_init */
int moe_mpi_desync(void); /* 1 after an out-of-step error (see moe_mpi_finalize) */

/* ---- placement ------------------------------------------------------------------------- */

/* First index of rank q's block when n items are spread over P ranks: ceil(q*n/P). */
int moe_mpi_block_start(int n, int P, int q);
/* The rank holding item i of n: floor(i*P/n). */
int moe_mpi_block_owner(int n, int P, int i);

/* ---- the expert-parallel layer -------------------------------------------------------------- */

/* What one rank did in one expert-parallel forward. */
typedef struct {
    int rank, P;
    int e0, experts;        /* experts [e0, e0 + experts) live here */
    int t0, held;           /* tokens [t0, t0 + held) live here */
    long tokens;            /* plan entries on this rank's experts: its expert-side load */
    long rows_out;          /* dispatch rows it sends to other ranks (its tokens, their experts) */
    long rows_in;           /* dispatch rows it receives from other ranks */
    long rows_local;        /* rows that stay here (its tokens on its experts) */
    double bytes_sent;      /* both all-to-alls, other ranks only: (rows_out + rows_in) * D * 4 */
    double bytes_recv;      /* the same by symmetry: combine returns what dispatch brought */
    double a2a_s;           /* seconds in the two MPI_Alltoallv calls (waiting included) */
    double expert_s;        /* seconds in this rank's expert FFNs */
    double pack_s;          /* seconds packing dispatch rows and combining outputs */
    double dispatch_s;      /* packing + the dispatch all-to-all, from the forward's start
                             * (after an untimed barrier: every rank has arrived) */
    double combine_s;       /* the combine all-to-all + summing into y, from the moment every
                             * rank's experts are done (an untimed barrier) */
    long rows_run;          /* rows its expert FFNs ran: the filled slots up to each local
                               expert's last, experts x C padded to capacity */
} moe_ep_stats;

typedef struct moe_ep moe_ep;

/* Workspaces for plans over T tokens, E experts, capacity up to C_max, width d, hidden f,
 * activation act, with up to cap_entries entries, on this process's rank of moe_mpi_size()
 * ranks. per_rank: also room for the plans of moe_ep_plan_per_rank (capacity up to P * C_max,
 * up to P * cap_entries entries). Needs E >= P and T >= P. NULL on error (moe_errmsg). */
moe_ep *moe_ep_alloc(int T, int E, long C_max, int d, int f, int act, size_t cap_entries,
                     int per_rank);
void moe_ep_free(moe_ep *ep); /* NULL is a no-op */

/* Padding to capacity (the routing option pad_to_capacity; off by default): on = 1 runs every
 * local expert at C rows, C = the plan's capacity, zero rows included, with y the same bits as
 * unpadded. A plan built by the last moe_ep_plan_per_rank on ep is also sent padded, as
 * DeepSpeed and Tutel send it: rank q's whole (E, C_q, D) slot buffer, zero rows included, to
 * the experts' ranks and back; any other plan sends its filled slots as unpadded (docs/layer.md,
 * "Padding to capacity"). */
int moe_ep_set_pad_to_capacity(moe_ep *ep, int on);

/* y (T,D) = the layer output of plan (docs/routing.md section 1) computed expert-parallel:
 * this rank reads only its own token rows of x (T,D) and only its own experts of w; every rank
 * must call it with the same plan. gather: 1 = y complete on every rank (MPI_Allgatherv, not timed),
 * 0 = only this rank's token rows of y are written. st (may be NULL) receives this rank's
 * counts and times. A collective: an error on one rank is reported on all of them. */
int moe_ep_forward(moe_ep *ep, const moe_experts *w, const moe_plan *plan, const float *x,
                   float *y, int gather, moe_ep_stats *st);

/* The expert-parallel layer's local work on plan, without its all-to-alls (the benchmark of
 * `moesim calibrate`): *t_dispatch the seconds of the dispatch's (index the claims, pack the
 * rows, plan the received rows), *t_combine of the combine's sum of the returned rows into y
 * (T,D), the sent rows standing for the returned ones. */
int moe_ep_local_work(moe_ep *ep, const moe_plan *plan, const float *x, float *y,
                      double *t_dispatch, double *t_combine);

/* Write back and evict from every cache level the lines moe_ep_local_work reads or writes
 * (the layer's workspaces, plan, x (T,D) and y (T,D)), so that a timed call starts cold as in a
 * forward; 1 when done, 0 where the processor has no cache-line flush moesim uses (x86 only). */
int moe_ep_flush(const moe_ep *ep, const moe_plan *plan, const float *x, const float *y);

/* DeepSpeed's per-rank capacity: every rank routes only its own tokens, with the capacity
 * computed from its n_q tokens (C_q = ROUND(k * n_q * cf / E)). This builds the union of the P
 * local plans (every rank computes all of them: routing is cheap and this keeps the plan
 * identical everywhere) as one plan over all T tokens: rank q's tokens offset by t0_q, its
 * slots by the summed capacities of ranks < q; capacity = the sum. rngs: P generators (rank q's
 * draws) for routers that draw random numbers, else NULL. claims, dropped (P, may be NULL):
 * claims of each rank's local plan and those dropped by its capacity. */
int moe_ep_plan_per_rank(moe_ep *ep, moe_router *r, const moe_route_in *in, gsl_rng *const *rngs,
                         moe_plan *out, long *claims, long *dropped);

/* Collective: v (n) summed over the ranks, in place on every rank (nothing with one rank). */
void moe_mpi_sum(double *v, int n);

/* ---- error agreement ------------------------------------------------------------------------ */

/* Collective: the ranks agree on a status. Every rank passes its rc; returns MOE_OK when all are
 * 0, else a non-zero code on every rank (a rank's own error message is kept; the others get
 * "failed on another rank"). Detects ranks out of step (one failed outside a collective while
 * the others were in one) and brings them back in step. */
int moe_mpi_agree_point(int rc);

/* ---- `moesim run` over ranks ---------------------------------------------------------------- */

/* Two modes. Sweep over ranks (ep = 0, P > 1): the points to run are dealt round robin (the j-th
 * point to run goes to rank j mod P); every rank runs its points in order and sends the results
 * to rank 0, the only SQLite writer, which stores them in point order, so the database equals a
 * single-process run's except timings and created_at. Expert parallel (ep = 1): all ranks run
 * every point together, the layer forward through moe_ep_forward; rank 0 stores the point and
 * its per-rank rows in the table ep_ranks (moe_store_put_ep). */
typedef struct moe_mpi_run moe_mpi_run;

/* NULL in *out when the run needs no MPI (ep = 0 and one rank). */
int moe_mpi_run_alloc(int ep, moe_mpi_run **out);
void moe_mpi_run_free(moe_mpi_run *m); /* NULL is a no-op */
int moe_mpi_run_is_worker(const moe_mpi_run *m); /* rank > 0 */

/* Rank 0: share the list of points to run (those not stored, or all with force) with the
 * workers and say on stderr how the run is spread; or, when rc != 0 (rank 0 failed before the
 * loop, e.g. the database), tell them to stop. Returns rc. */
int moe_mpi_run_share(moe_mpi_run *m, const unsigned char *stored, size_t total, int force,
                      int rc);
/* Rank 0: the result of point i of the spec (the j-th point to run): computed here (its own
 * points; every point in ep mode, together with the workers) or received from its rank. */
int moe_mpi_run_point(moe_mpi_run *m, size_t i, size_t j, const moe_point *pt,
                      volatile sig_atomic_t *stop, moe_point_result *res);
/* Rank 0, ep mode, after moe_mpi_run_point: the point's ep_ranks rows in *out (valid until the
 * next point), for moe_store_put_ep. Returns 0 (and leaves *out) when m is not in ep mode. */
int moe_mpi_run_ep_rows(const moe_mpi_run *m, moe_store_ep *out);
/* Rank 0 at the end of the loop (normal or not): stop the workers and collect their last
 * messages. Returns rc, or a worker's error when rc is 0. */
int moe_mpi_run_finish(moe_mpi_run *m, int rc);
/* Workers: receive the list of points and run their share until rank 0 says stop. */
int moe_mpi_run_worker(moe_mpi_run *m, const moe_spec *spec, volatile sig_atomic_t *stop);

#endif
