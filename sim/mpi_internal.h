/* mpi_internal.h: what the three MPI files share and nothing else includes: the process state
 * (mpi_proc.c), the row collectives and the forward's agreement, and the expert-parallel point
 * that `moesim run --expert-parallel` runs (mpi_ep.c, used by mpi_run.c). Every file that
 * includes it is compiled with the same -DMOESIM_MPI (the Makefile's sim/mpi%.o rule).
 */
#ifndef MOE_MPI_INTERNAL_H
#define MOE_MPI_INTERNAL_H

#include "moe_mpi.h"
#include "store.h"

#ifdef MOESIM_MPI
#include <mpi.h>
#endif

/* The process: rank and size of moesim's communicator (rank 0 of 1 without MPI). */
typedef struct {
    int active, rank, size, desync, started;
    int echo; /* this rank's current error only echoes another rank's (moe_mpi_agree_fwd) */
#ifdef MOESIM_MPI
    MPI_Comm comm;
#endif
} moe_mpi_state;
extern moe_mpi_state moe_mpi_g;

enum { MOE_MPI_MSG_LEN = 1024 }; /* error messages between ranks */

/* Rows of D floats to every rank: counts and displacements in rows per rank (P); ic, id, jc,
 * jd: (P) int scratch. With one rank, a copy. */
void moe_mpi_a2av_rows(const float *send, const long *scnt, const long *sdsp, float *recv,
                       const long *rcnt, const long *rdsp, size_t D, int *ic, int *id, int *jc,
                       int *jd);
/* y (T,D): every rank's block of rows (tbeg (P+1)) to every rank, in place. */
void moe_mpi_allgather_rows(float *y, const int *tbeg, size_t D, int *ic, int *id);
/* At the start of an expert-parallel forward: agree on rc, this rank's status so far. */
int moe_mpi_agree_fwd(int rc);
/* calloc of at least one element; sets *bad on failure. */
void *moe_mpi_xcalloc(size_t n, size_t size, int *bad);

/* ---- the expert-parallel point (mpi_ep.c) ---- */

/* The pipeline hook of an expert-parallel point: every batch's plan through moe_ep_forward,
 * and the same batch under DeepSpeed's per-rank capacity (measured, not kept); per-rank
 * statistics summed over the point's batches for ep_ranks. */
typedef struct moe_ep_point moe_ep_point;
moe_ep_point *moe_ep_point_alloc(void);
void moe_ep_point_free(moe_ep_point *c); /* NULL is a no-op */
const moe_pipeline_ep *moe_ep_point_hooks(moe_ep_point *c);
/* This rank's ep_ranks values of the last point, (MOE_EP_NMODES, MOE_EP_NFIELDS) means per
 * batch. */
void moe_ep_point_means(const moe_ep_point *c, double *v);

#endif
