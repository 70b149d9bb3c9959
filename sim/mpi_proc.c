/* mpi_proc.c: the MPI processes of moe_mpi.h: setup (MPI_Init only under an MPI launcher) and
 * finalisation, placement of blocks over ranks, the collectives on rows and sums, and the error
 * agreement between ranks.
 *
 * Built with -DMOESIM_MPI (the Makefile adds it with mpicc's flags when mpicc is found) this
 * file calls MPI; without it every process is rank 0 of 1 and the collectives reduce to copies.
 *
 * Agreement: every expert-parallel forward starts with an all-reduce of (status, phase) and
 * every point ends with one (moe_mpi_agree_point). A rank that fails outside a collective meets
 * the others in the next agreement, whatever phase they are in; they all return an error and
 * come back in step at the end of the point. Only an unrecoverable loss of step sets the desync
 * flag, and then moe_mpi_finalize aborts the job instead of hanging.
 */
#include "mpi_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- processes ---- */

moe_mpi_state moe_mpi_g = {0, 0, 1, 0, 0, 0
#ifdef MOESIM_MPI
       , MPI_COMM_NULL
#endif
};

int moe_mpi_compiled(void)
{
#ifdef MOESIM_MPI
    return 1;
#else
    return 0;
#endif
}

const char *moe_mpi_library(void)
{
#ifdef MOESIM_MPI
    static char buf[MPI_MAX_LIBRARY_VERSION_STRING + 1];
    int len = 0;
    if (!buf[0] && MPI_Get_library_version(buf, &len) == MPI_SUCCESS) {
        buf[len < (int)sizeof buf ? len : (int)sizeof buf - 1] = '\0';
        char *nl = strpbrk(buf, ",\n"); /* "Open MPI v4.1.4" */
        if (nl)
            *nl = '\0';
    }
    return buf;
#else
    return "none (built without MPI)";
#endif
}

static int launched_by_mpi(void)
{
    static const char *const vars[] = {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_SIZE",
                                       "PMI_RANK"};
    for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++)
        if (getenv(vars[i]))
            return 1;
    return 0;
}

int moe_mpi_init(void)
{
#ifndef MOESIM_MPI
    /* several copies of a build without MPI would each run everything */
    const char *n = getenv("OMPI_COMM_WORLD_SIZE");
    if (!n)
        n = getenv("PMI_SIZE");
    if (launched_by_mpi() && n && atoi(n) > 1)
        return moe_fail(MOE_EINVAL, "install libopenmpi-dev and openmpi-bin (make deps) and "
                        "rebuild, or run without mpirun",
                        "moesim was built without MPI but started as %s processes by an MPI "
                        "launcher (moe_mpi_init)", n);
#endif
#ifdef MOESIM_MPI
    if (moe_mpi_g.started || !launched_by_mpi())
        return MOE_OK;
    int flag = 0;
    MPI_Initialized(&flag);
    if (!flag && MPI_Init(NULL, NULL) != MPI_SUCCESS)
        return moe_fail(MOE_EINVAL, "check the MPI installation (mpirun --version)",
                        "MPI_Init failed (moe_mpi_init)");
    moe_mpi_g.started = !flag;
    /* moesim's own communicator; MPI errors stay fatal (MPI_ERRORS_ARE_FATAL, the default) */
    MPI_Comm_dup(MPI_COMM_WORLD, &moe_mpi_g.comm);
    MPI_Comm_rank(moe_mpi_g.comm, &moe_mpi_g.rank);
    MPI_Comm_size(moe_mpi_g.comm, &moe_mpi_g.size);
    moe_mpi_g.active = 1;
#endif
    return MOE_OK;
}

int moe_mpi_finalize(int rc)
{
#ifdef MOESIM_MPI
    if (!moe_mpi_g.active)
        return rc;
    if (moe_mpi_g.desync && moe_mpi_g.size > 1) {
        fprintf(stderr, "moesim: error on rank %d with the other ranks out of step: aborting "
                "the job (MPI_Abort)\n", moe_mpi_g.rank);
        fflush(stderr);
        MPI_Abort(MPI_COMM_WORLD, rc ? rc : 1);
    }
    MPI_Comm_free(&moe_mpi_g.comm);
    moe_mpi_g.active = 0;
    if (moe_mpi_g.started)
        MPI_Finalize();
    moe_mpi_g.started = 0;
    moe_mpi_g.rank = 0;
    moe_mpi_g.size = 1;
#endif
    return rc;
}

int moe_mpi_rank(void) { return moe_mpi_g.rank; }
int moe_mpi_size(void) { return moe_mpi_g.size; }
int moe_mpi_active(void) { return moe_mpi_g.active; }
int moe_mpi_desync(void) { return moe_mpi_g.desync; }

/* ---- placement ---- */

int moe_mpi_block_start(int n, int P, int q)
{
    return (int)(((long long)q * n + P - 1) / P);
}

int moe_mpi_block_owner(int n, int P, int i)
{
    return (int)((long long)i * P / n);
}

/* ---- collectives (copies with one rank) ---- */

void moe_mpi_a2av_rows(const float *send, const long *scnt, const long *sdsp, float *recv,
                       const long *rcnt, const long *rdsp, size_t D, int *ic, int *id, int *jc,
                       int *jd)
{
#ifdef MOESIM_MPI
    if (moe_mpi_g.active) {
        for (int q = 0; q < moe_mpi_g.size; q++) {
            ic[q] = (int)(scnt[q] * (long)D);
            id[q] = (int)(sdsp[q] * (long)D);
            jc[q] = (int)(rcnt[q] * (long)D);
            jd[q] = (int)(rdsp[q] * (long)D);
        }
        MPI_Alltoallv(send, ic, id, MPI_FLOAT, recv, jc, jd, MPI_FLOAT, moe_mpi_g.comm);
        return;
    }
#endif
    (void)ic, (void)id, (void)jc, (void)jd, (void)rcnt;
    if (scnt[0])
        memcpy(recv + (size_t)rdsp[0] * D, send + (size_t)sdsp[0] * D,
               (size_t)scnt[0] * D * sizeof *send);
}

void moe_mpi_allgather_rows(float *y, const int *tbeg, size_t D, int *ic, int *id)
{
#ifdef MOESIM_MPI
    if (moe_mpi_g.active && moe_mpi_g.size > 1) {
        for (int q = 0; q < moe_mpi_g.size; q++) {
            ic[q] = (int)((long)(tbeg[q + 1] - tbeg[q]) * (long)D);
            id[q] = (int)((long)tbeg[q] * (long)D);
        }
        MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, y, ic, id, MPI_FLOAT, moe_mpi_g.comm);
        return;
    }
#endif
    (void)y, (void)tbeg, (void)D, (void)ic, (void)id;
}

void moe_mpi_sum(double *v, int n)
{
#ifdef MOESIM_MPI
    if (moe_mpi_g.active && moe_mpi_g.size > 1)
        MPI_Allreduce(MPI_IN_PLACE, v, n, MPI_DOUBLE, MPI_SUM, moe_mpi_g.comm);
#else
    (void)v, (void)n;
#endif
}

/* ---- error agreement ---- */

enum { PHASE_FWD = 1, PHASE_END = 2 };

/* All-reduce of (failed, phase): *any = some rank failed, *minph and *maxph the phases met. */
static void agree_raw(int rc, int phase, int *any, int *minph, int *maxph)
{
    *any = rc != 0;
    *minph = *maxph = phase;
#ifdef MOESIM_MPI
    if (moe_mpi_g.active && moe_mpi_g.size > 1) {
        int v[3] = {rc != 0, phase, -phase}, r[3];
        MPI_Allreduce(v, r, 3, MPI_INT, MPI_MAX, moe_mpi_g.comm);
        *any = r[0];
        *maxph = r[1];
        *minph = -r[2];
    }
#endif
}

int moe_mpi_agree_fwd(int rc)
{
    int any, lo, hi;
    agree_raw(rc, PHASE_FWD, &any, &lo, &hi);
    if (rc)
        return rc;
    if (any || hi != PHASE_FWD) {
        moe_mpi_g.echo = 1;
        return moe_fail(MOE_EINVAL, "see the error reported for the failing rank",
                        "the point failed on another rank (rank %d stops with it)", moe_mpi_g.rank);
    }
    return MOE_OK;
}

#ifdef MOESIM_MPI
/* After a failed agreement: rank 0 learns the first failing rank's message. own: this rank
 * failed itself (not only in echo of another). */
static int gather_error(int rc, int own)
{
    char mine[MOE_MPI_MSG_LEN];
    snprintf(mine, sizeof mine, "%s", !own ? "" : moe_errmsg()[0] ? moe_errmsg() : "failed");
    char *all = moe_mpi_g.rank == 0 ? malloc((size_t)moe_mpi_g.size * MOE_MPI_MSG_LEN) : NULL;
    MPI_Gather(mine, MOE_MPI_MSG_LEN, MPI_CHAR, all, MOE_MPI_MSG_LEN, MPI_CHAR, 0, moe_mpi_g.comm);
    if (moe_mpi_g.rank != 0 || own || !all) { /* a rank's own error is reported as it is */
        free(all);
        return rc ? rc : moe_fail(MOE_EINVAL, NULL, "the point failed on another rank (rank %d)",
                                  moe_mpi_g.rank);
    }
    int q = 1;
    while (q < moe_mpi_g.size && !all[(size_t)q * MOE_MPI_MSG_LEN])
        q++;
    moe_clear_error();
    int r = moe_fail(MOE_EINVAL, NULL, "rank %d: %s", q < moe_mpi_g.size ? q : 0,
                     q < moe_mpi_g.size ? all + (size_t)q * MOE_MPI_MSG_LEN : "failed");
    free(all);
    return r;
}
#endif

int moe_mpi_agree_point(int rc)
{
    int any, lo, hi;
    agree_raw(rc, PHASE_END, &any, &lo, &hi);
    /* Some ranks were still inside a forward: they fail there and come to the end of the point;
     * meet them once more. */
    int rounds = 0;
    while (lo != PHASE_END && rounds++ < 2) {
        int any2;
        agree_raw(rc, PHASE_END, &any2, &lo, &hi);
        any |= any2;
    }
    const int own = rc && !moe_mpi_g.echo;
    moe_mpi_g.echo = 0;
    if (lo != PHASE_END) {
        moe_mpi_g.desync = 1;
        return rc ? rc : moe_fail(MOE_EINVAL, NULL, "ranks out of step (rank %d)", moe_mpi_g.rank);
    }
    if (!any)
        return MOE_OK;
#ifdef MOESIM_MPI
    if (moe_mpi_g.active && moe_mpi_g.size > 1)
        return gather_error(rc, own);
#endif
    (void)own;
    return rc;
}

