/* mpi_run.c: `moesim run` over ranks (moe_mpi.h): sweep points dealt round robin with rank 0
 * the only SQLite writer, or every point expert-parallel on all ranks (its per-rank rows go to
 * the store with the point, in one transaction).
 *
 * Points over ranks (no --expert-parallel), messages on moesim's communicator: rank 0
 * broadcasts the list of points to run; worker w runs points j = w, w + P, ... of that list and
 * sends each as a header (RESULT, point, 0, counts) with the packed result, or (ERROR, point,
 * code) with its message; rank 0 takes them in point order, interleaved with its own points.
 * At the end, or after an error or an interruption, rank 0 sends STOP to the workers still
 * running, takes their messages up to DONE (discarding results nobody will store) and releases
 * them with FIN. Expert parallel: rank 0 broadcasts each point's index (-1: stop), all ranks run
 * it, agree, and rank 0 gathers the per-rank means of ep_ranks.
 */
#include "mpi_internal.h"

#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- results over the wire ---- */
#ifdef MOESIM_MPI

/* Longs of a moe_point_result for E experts: its two histograms and the groups. */
#define RESULT_NLONGS(E) (2 * ((size_t)(E) + 1) + 1)

/* Doubles of a moe_point_result for E experts, b batches and its eval rows (training). */
static size_t result_ndoubles(const moe_point_result *r)
{
    return 2 * (size_t)MOE_POINT_NMETRICS + 2 * (size_t)MOE_NPHASES + 4 + 3 * (size_t)r->E +
           (size_t)r->batches * (MOE_POINT_NMETRICS + MOE_NPHASES) +
           (size_t)r->train_rows * (MOE_TRAIN_NCOLS + (size_t)r->E);
}

static void result_pack(const moe_point_result *r, double *d, long *l)
{
    size_t k = 0;
    for (int i = 0; i < MOE_POINT_NMETRICS; i++) {
        d[k++] = r->mean[i];
        d[k++] = r->std[i];
    }
    for (int i = 0; i < MOE_NPHASES; i++) {
        d[k++] = r->time_mean[i];
        d[k++] = r->time_std[i];
    }
    d[k++] = r->tokens_per_s;
    d[k++] = r->gflops_per_s;
    d[k++] = r->wall_s;
    d[k++] = 0.0; /* reserved */
    for (int e = 0; e < r->E; e++) {
        d[k++] = r->assigned[e];
        d[k++] = r->kept[e];
        d[k++] = r->importance[e];
    }
    memcpy(d + k, r->batch_metric, (size_t)r->batches * MOE_POINT_NMETRICS * sizeof *d);
    k += (size_t)r->batches * MOE_POINT_NMETRICS;
    memcpy(d + k, r->batch_time, (size_t)r->batches * MOE_NPHASES * sizeof *d);
    k += (size_t)r->batches * MOE_NPHASES;
    if (r->train_rows > 0) { /* train_row and train_loads are NULL otherwise */
        memcpy(d + k, r->train_row, (size_t)r->train_rows * MOE_TRAIN_NCOLS * sizeof *d);
        k += (size_t)r->train_rows * MOE_TRAIN_NCOLS;
        memcpy(d + k, r->train_loads, (size_t)r->train_rows * (size_t)r->E * sizeof *d);
    }
    memcpy(l, r->experts_per_token, ((size_t)r->E + 1) * sizeof *l);
    l[r->E + 1] = r->groups;
    memcpy(l + r->E + 2, r->groups_touched, ((size_t)r->E + 1) * sizeof *l);
}

static void result_unpack(moe_point_result *r, const double *d, const long *l)
{
    size_t k = 0;
    for (int i = 0; i < MOE_POINT_NMETRICS; i++) {
        r->mean[i] = d[k++];
        r->std[i] = d[k++];
    }
    for (int i = 0; i < MOE_NPHASES; i++) {
        r->time_mean[i] = d[k++];
        r->time_std[i] = d[k++];
    }
    r->tokens_per_s = d[k++];
    r->gflops_per_s = d[k++];
    r->wall_s = d[k++];
    k++;
    for (int e = 0; e < r->E; e++) {
        r->assigned[e] = d[k++];
        r->kept[e] = d[k++];
        r->importance[e] = d[k++];
    }
    memcpy(r->batch_metric, d + k, (size_t)r->batches * MOE_POINT_NMETRICS * sizeof *d);
    k += (size_t)r->batches * MOE_POINT_NMETRICS;
    memcpy(r->batch_time, d + k, (size_t)r->batches * MOE_NPHASES * sizeof *d);
    k += (size_t)r->batches * MOE_NPHASES;
    if (r->train_rows > 0) {
        memcpy(r->train_row, d + k, (size_t)r->train_rows * MOE_TRAIN_NCOLS * sizeof *d);
        k += (size_t)r->train_rows * MOE_TRAIN_NCOLS;
        memcpy(r->train_loads, d + k, (size_t)r->train_rows * (size_t)r->E * sizeof *d);
    }
    memcpy(r->experts_per_token, l, ((size_t)r->E + 1) * sizeof *l);
    r->groups = (int)l[r->E + 1];
    memcpy(r->groups_touched, l + r->E + 2, ((size_t)r->E + 1) * sizeof *l);
}
#endif

/* ---- `moesim run` over ranks ---- */

struct moe_mpi_run {
    int ep, P, rank;
    int shared;              /* rank 0: the list went out (or the stop) */
    size_t total;
    unsigned char *run;      /* (total) workers: points to run */
    moe_ep_point *epc;       /* ep mode: this rank's point context */
    double *gathered;        /* rank 0, ep mode: (P, MOE_EP_NMODES, MOE_EP_NFIELDS) means of
                              * the last point */
    int *done;               /* rank 0, sweep mode: (P) DONE received from the worker */
};

enum { TAG_CTL = 11, TAG_HDR = 12, TAG_DBL = 13, TAG_LNG = 14, TAG_MSG = 15 };
enum { CTL_STOP = 1, CTL_FIN = 2 };
enum { HDR_RESULT = 1, HDR_ERROR = 2, HDR_DONE = 3 };

int moe_mpi_run_alloc(int ep, moe_mpi_run **out)
{
    *out = NULL;
    if (ep && !moe_mpi_compiled())
        return moe_fail(MOE_EINVAL, "install libopenmpi-dev and openmpi-bin (make deps), rebuild "
                        "and run under mpirun -np P",
                        "--expert-parallel needs MPI, and moesim was built without it (mpicc "
                        "was not found) (moesim run)");
    if (!ep && moe_mpi_g.size == 1)
        return MOE_OK;
    moe_mpi_run *m = calloc(1, sizeof *m);
    if (!m)
        return moe_fail(MOE_ENOMEM, NULL, "out of memory (moesim run over MPI)");
    m->ep = ep;
    m->P = moe_mpi_g.size;
    m->rank = moe_mpi_g.rank;
    m->epc = ep ? moe_ep_point_alloc() : NULL;
    m->done = calloc((size_t)m->P, sizeof *m->done);
    m->gathered = calloc((size_t)m->P * MOE_EP_NMODES * MOE_EP_NFIELDS, sizeof *m->gathered);
    if (!m->done || !m->gathered || (ep && !m->epc)) {
        moe_mpi_run_free(m);
        return moe_fail(MOE_ENOMEM, NULL, "out of memory (moesim run over MPI)");
    }
    *out = m;
    return MOE_OK;
}

void moe_mpi_run_free(moe_mpi_run *m)
{
    if (!m)
        return;
    moe_ep_point_free(m->epc);
    free(m->run);
    free(m->gathered);
    free(m->done);
    free(m);
}

int moe_mpi_run_is_worker(const moe_mpi_run *m) { return m && m->rank > 0; }

int moe_mpi_run_share(moe_mpi_run *m, const unsigned char *stored, size_t total, int force,
                      int rc)
{
    if (!m || m->shared)
        return rc;
    m->shared = 1;
    m->total = total;
    unsigned char *run = rc ? NULL : calloc(total + 1, 1);
    if (!rc && !run)
        rc = moe_fail(MOE_ENOMEM, NULL, "out of memory (moesim run over MPI)");
    for (size_t i = 0; run && i < total; i++)
        run[i] = force || !stored[i];
#ifdef MOESIM_MPI
    if (moe_mpi_g.active && moe_mpi_g.size > 1) {
        long long hdr[2] = {rc, (long long)total};
        MPI_Bcast(hdr, 2, MPI_LONG_LONG, 0, moe_mpi_g.comm);
        if (!rc && total)
            MPI_Bcast(run, (int)total, MPI_UNSIGNED_CHAR, 0, moe_mpi_g.comm);
    }
#endif
    free(run);
    if (!rc)
        fprintf(stderr, "moesim run: %d rank%s (%s), %s\n", m->P, m->P > 1 ? "s" : "",
                moe_mpi_library(), m->ep ? "experts sharded over the ranks (--expert-parallel)"
                                         : "points dealt round robin, rank 0 writes");
    return rc;
}

#ifdef MOESIM_MPI
/* Workers: receive the list; *go = 0 when rank 0 failed before the loop. */
static int worker_receive_share(moe_mpi_run *m, int *go)
{
    *go = 0;
    long long hdr[2];
    MPI_Bcast(hdr, 2, MPI_LONG_LONG, 0, moe_mpi_g.comm);
    if (hdr[0] != 0)
        return MOE_OK;
    m->total = (size_t)hdr[1];
    m->run = calloc(m->total + 1, 1);
    if (!m->run) {
        moe_mpi_g.desync = 1; /* rank 0 is about to broadcast the list: cannot take part */
        return moe_fail(MOE_ENOMEM, NULL, "out of memory (rank %d)", moe_mpi_g.rank);
    }
    if (m->total)
        MPI_Bcast(m->run, (int)m->total, MPI_UNSIGNED_CHAR, 0, moe_mpi_g.comm);
    *go = 1;
    return MOE_OK;
}
#endif

/* ep mode, every rank after an agreed point: rank 0 gathers the per-rank means. */
static void ep_gather_stats(moe_mpi_run *m)
{
    double mine[MOE_EP_NMODES * MOE_EP_NFIELDS];
    moe_ep_point_means(m->epc, mine);
#ifdef MOESIM_MPI
    if (moe_mpi_g.active && moe_mpi_g.size > 1) {
        MPI_Gather(mine, MOE_EP_NMODES * MOE_EP_NFIELDS, MPI_DOUBLE, m->gathered,
                   MOE_EP_NMODES * MOE_EP_NFIELDS, MPI_DOUBLE, 0, moe_mpi_g.comm);
        return;
    }
#endif
    memcpy(m->gathered, mine, sizeof mine);
}

/* ep mode, every rank: run point pt expert-parallel and agree on the outcome. */
static int ep_run_point(moe_mpi_run *m, const moe_point *pt, volatile sig_atomic_t *stop,
                        moe_point_result *res)
{
    int rc = res ? moe_point_run_ep(pt, stop, res, moe_ep_point_hooks(m->epc)) : MOE_ENOMEM;
    if ((rc = moe_mpi_agree_point(rc)))
        return rc;
    ep_gather_stats(m);
    return MOE_OK;
}

#ifdef MOESIM_MPI
/* Rank 0, sweep mode: the next message of worker w for point i. */
static int recv_result(moe_mpi_run *m, int w, size_t i, moe_point_result *res)
{
    long hdr[5];
    MPI_Recv(hdr, 5, MPI_LONG, w, TAG_HDR, moe_mpi_g.comm, MPI_STATUS_IGNORE);
    if (hdr[0] == HDR_DONE) {
        m->done[w] = 1;
        return moe_fail(MOE_EINVAL, "run the same command again to resume",
                        "interrupted on rank %d before point %zu", w, i + 1);
    }
    if (hdr[0] == HDR_ERROR) {
        char msg[MOE_MPI_MSG_LEN];
        MPI_Recv(msg, MOE_MPI_MSG_LEN, MPI_CHAR, w, TAG_MSG, moe_mpi_g.comm, MPI_STATUS_IGNORE);
        msg[MOE_MPI_MSG_LEN - 1] = '\0';
        return moe_fail(hdr[2] ? (int)hdr[2] : MOE_EINVAL, NULL, "rank %d: %s", w, msg);
    }
    size_t nd = result_ndoubles(res);
    double *d = malloc(((size_t)hdr[3] > nd ? (size_t)hdr[3] : nd) * sizeof *d);
    long *l = malloc(((size_t)hdr[4] > RESULT_NLONGS(res->E) ? (size_t)hdr[4]
                                                             : RESULT_NLONGS(res->E)) * sizeof *l);
    if (!d || !l) {
        free(d);
        free(l);
        moe_mpi_g.desync = 1; /* the payload cannot be taken off the worker */
        return moe_fail(MOE_ENOMEM, NULL, "out of memory (result of point %zu)", i + 1);
    }
    MPI_Recv(d, (int)hdr[3], MPI_DOUBLE, w, TAG_DBL, moe_mpi_g.comm, MPI_STATUS_IGNORE);
    MPI_Recv(l, (int)hdr[4], MPI_LONG, w, TAG_LNG, moe_mpi_g.comm, MPI_STATUS_IGNORE);
    int rc = MOE_OK;
    if ((size_t)hdr[1] != i || (size_t)hdr[3] != nd || (size_t)hdr[4] != RESULT_NLONGS(res->E))
        rc = moe_fail(MOE_EINVAL, "every rank must run the same moesim on the same spec",
                      "rank %d sent point %ld with %ld values, expected point %zu with %zu "
                      "(moesim run over MPI)", w, hdr[1] + 1, hdr[3], i + 1, nd);
    else
        result_unpack(res, d, l);
    free(d);
    free(l);
    return rc;
}
#endif

int moe_mpi_run_point(moe_mpi_run *m, size_t i, size_t j, const moe_point *pt,
                      volatile sig_atomic_t *stop, moe_point_result *res)
{
    if (m->ep) {
#ifdef MOESIM_MPI
        if (moe_mpi_g.active && moe_mpi_g.size > 1) {
            long long cmd = (long long)i;
            MPI_Bcast(&cmd, 1, MPI_LONG_LONG, 0, moe_mpi_g.comm);
        }
#endif
        return ep_run_point(m, pt, stop, res);
    }
    int w = (int)(j % (size_t)m->P);
    if (w == 0)
        return moe_point_run(pt, stop, res);
#ifdef MOESIM_MPI
    return recv_result(m, w, i, res);
#else
    (void)i;
    return moe_fail(MOE_EINVAL, NULL, "no rank %d without MPI", w);
#endif
}

int moe_mpi_run_ep_rows(const moe_mpi_run *m, moe_store_ep *out)
{
    if (!m || !m->ep)
        return 0;
    *out = (moe_store_ep){m->P, m->gathered};
    return 1;
}

int moe_mpi_run_finish(moe_mpi_run *m, int rc)
{
    if (!m || m->rank != 0)
        return rc;
    if (!m->shared) { /* rank 0 failed before the loop: the workers wait for the list */
        moe_mpi_run_share(m, NULL, 0, 0, rc ? rc : MOE_EINVAL);
        return rc;
    }
#ifdef MOESIM_MPI
    if (!moe_mpi_g.active || moe_mpi_g.size == 1 || moe_mpi_g.desync) /* desync: moe_mpi_finalize aborts the job */
        return rc;
    if (m->ep) {
        long long cmd = -1;
        MPI_Bcast(&cmd, 1, MPI_LONG_LONG, 0, moe_mpi_g.comm);
        return rc;
    }
    /* sweep mode: stop the workers still running, take their last messages, release them */
    MPI_Request *req = calloc((size_t)m->P, sizeof *req);
    int stopv = CTL_STOP, fin = CTL_FIN, nreq = 0;
    for (int w = 1; w < m->P; w++)
        if (!m->done[w] && rc && req)
            MPI_Isend(&stopv, 1, MPI_INT, w, TAG_CTL, moe_mpi_g.comm, &req[nreq++]);
    for (int w = 1; w < m->P; w++) {
        while (!m->done[w]) {
            long hdr[5];
            MPI_Recv(hdr, 5, MPI_LONG, w, TAG_HDR, moe_mpi_g.comm, MPI_STATUS_IGNORE);
            if (hdr[0] == HDR_DONE) {
                m->done[w] = 1;
            } else if (hdr[0] == HDR_ERROR) {
                char msg[MOE_MPI_MSG_LEN];
                MPI_Recv(msg, MOE_MPI_MSG_LEN, MPI_CHAR, w, TAG_MSG, moe_mpi_g.comm, MPI_STATUS_IGNORE);
                msg[MOE_MPI_MSG_LEN - 1] = '\0';
                if (!rc)
                    rc = moe_fail(MOE_EINVAL, NULL, "rank %d: %s", w, msg);
            } else { /* a result nobody will store: take it off the wire */
                double dd;
                long ll;
                MPI_Status s1;
                for (int tag = TAG_DBL; tag <= TAG_LNG; tag++) {
                    MPI_Probe(w, tag, moe_mpi_g.comm, &s1);
                    int cnt = 0;
                    MPI_Get_count(&s1, tag == TAG_DBL ? MPI_DOUBLE : MPI_LONG, &cnt);
                    void *buf = malloc((size_t)(cnt > 0 ? cnt : 1) * sizeof(double));
                    MPI_Recv(buf ? buf : (tag == TAG_DBL ? (void *)&dd : (void *)&ll),
                             buf ? cnt : 0, tag == TAG_DBL ? MPI_DOUBLE : MPI_LONG, w, tag,
                             moe_mpi_g.comm, MPI_STATUS_IGNORE);
                    free(buf);
                }
            }
        }
    }
    if (req)
        MPI_Waitall(nreq, req, MPI_STATUSES_IGNORE);
    free(req);
    for (int w = 1; w < m->P; w++)
        MPI_Send(&fin, 1, MPI_INT, w, TAG_CTL, moe_mpi_g.comm);
#endif
    return rc;
}

#ifdef MOESIM_MPI
/* Sweep-mode worker: run points j = rank, rank + P, ... of the list; send each result. */
static int sweep_worker(moe_mpi_run *m, const moe_spec *spec, volatile sig_atomic_t *stop)
{
    size_t j = 0;
    for (size_t i = 0; i < m->total && i < moe_spec_npoints(spec); i++) {
        if (!m->run[i] || (int)(j++ % (size_t)m->P) != m->rank)
            continue;
        int flag = 0;
        MPI_Iprobe(0, TAG_CTL, moe_mpi_g.comm, &flag, MPI_STATUS_IGNORE);
        if (flag || (stop && *stop))
            break; /* the CTL message is taken below */
        const moe_point *pt = moe_spec_point(spec, i);
        moe_clear_error();
        moe_point_result *res = moe_point_result_alloc_for(pt);
        int rc = res ? moe_point_run(pt, stop, res) : MOE_ENOMEM;
        size_t nd = res ? result_ndoubles(res) : 0;
        double *d = rc ? NULL : malloc(nd * sizeof *d);
        long *l = rc ? NULL : malloc(RESULT_NLONGS(pt->E) * sizeof *l);
        if (!rc && (!d || !l))
            rc = moe_fail(MOE_ENOMEM, NULL, "out of memory (result of point %zu)", i + 1);
        if (rc) {
            long hdr[5] = {HDR_ERROR, (long)i, rc, 0, 0};
            char msg[MOE_MPI_MSG_LEN];
            snprintf(msg, sizeof msg, "%s", moe_errmsg()[0] ? moe_errmsg() : "failed");
            MPI_Send(hdr, 5, MPI_LONG, 0, TAG_HDR, moe_mpi_g.comm);
            MPI_Send(msg, MOE_MPI_MSG_LEN, MPI_CHAR, 0, TAG_MSG, moe_mpi_g.comm);
        } else {
            result_pack(res, d, l);
            long hdr[5] = {HDR_RESULT, (long)i, 0, (long)nd, (long)RESULT_NLONGS(pt->E)};
            MPI_Send(hdr, 5, MPI_LONG, 0, TAG_HDR, moe_mpi_g.comm);
            MPI_Send(d, (int)nd, MPI_DOUBLE, 0, TAG_DBL, moe_mpi_g.comm);
            MPI_Send(l, (int)RESULT_NLONGS(pt->E), MPI_LONG, 0, TAG_LNG, moe_mpi_g.comm);
        }
        free(d);
        free(l);
        moe_point_result_free(res);
        if (rc)
            break;
    }
    long done[5] = {HDR_DONE, 0, 0, 0, 0};
    MPI_Send(done, 5, MPI_LONG, 0, TAG_HDR, moe_mpi_g.comm);
    for (;;) { /* a STOP may come before the FIN */
        int ctl = 0;
        MPI_Recv(&ctl, 1, MPI_INT, 0, TAG_CTL, moe_mpi_g.comm, MPI_STATUS_IGNORE);
        if (ctl == CTL_FIN)
            break;
    }
    return MOE_OK; /* errors were sent to rank 0, which reports them */
}

/* ep-mode worker: run every point rank 0 names, together with it. */
static int ep_worker(moe_mpi_run *m, const moe_spec *spec)
{
    for (;;) {
        long long cmd;
        MPI_Bcast(&cmd, 1, MPI_LONG_LONG, 0, moe_mpi_g.comm);
        if (cmd < 0)
            break;
        if ((size_t)cmd >= moe_spec_npoints(spec)) {
            moe_mpi_g.desync = 1;
            return moe_fail(MOE_EINVAL, "every rank must run the same moesim on the same spec",
                            "rank 0 asked for point %lld of %zu (rank %d)", cmd + 1,
                            moe_spec_npoints(spec), moe_mpi_g.rank);
        }
        const moe_point *pt = moe_spec_point(spec, (size_t)cmd);
        moe_clear_error();
        moe_point_result *res = moe_point_result_alloc_for(pt);
        /* no stop here: rank 0 decides, and its interruption reaches us through the agreement */
        int rc = ep_run_point(m, pt, NULL, res);
        moe_point_result_free(res);
        if (moe_mpi_g.desync) /* out of step for good: moe_mpi_finalize aborts the job */
            return rc;
    }
    return MOE_OK; /* errors were agreed on and reported by rank 0 */
}
#endif

int moe_mpi_run_worker(moe_mpi_run *m, const moe_spec *spec, volatile sig_atomic_t *stop)
{
#ifdef MOESIM_MPI
    int go = 0;
    int rc = worker_receive_share(m, &go);
    if (rc || !go)
        return rc;
    return m->ep ? ep_worker(m, spec) : sweep_worker(m, spec, stop);
#else
    (void)m, (void)spec, (void)stop;
    return moe_fail(MOE_EINVAL, NULL, "no worker ranks without MPI (moesim run)");
#endif
}

