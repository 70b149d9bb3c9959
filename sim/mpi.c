/* mpi.c: moesim over MPI (moe_mpi.h; the header is not called mpi.h so that it cannot
 * shadow MPI's own <mpi.h> on the -Isim include path). Owns the process setup (MPI_Init only
 * under an MPI launcher), the expert-parallel layer forward (MPI_Alltoallv dispatch and
 * combine), the plan under DeepSpeed's per-rank capacity, the error agreement between ranks,
 * `moesim run` spread over ranks (sweep points dealt round robin, or every point
 * expert-parallel) with rank 0 the only SQLite writer, and the table ep_ranks.
 *
 * Built with -DMOESIM_MPI (the Makefile adds it with mpicc's flags when mpicc is found) this
 * file calls MPI; without it every process is rank 0 of 1, the collectives below reduce to
 * copies and --expert-parallel is refused.
 *
 * Expert-parallel workspaces (moe_ep, allocated once per layer shape; Cc = slots per expert the
 * key spaces cover, C_max or P*C_max with per-rank plans; El = this rank's experts):
 *   send (Sx,D), ret (Sx,D)    dispatch rows this rank sends, and their expert outputs back
 *   recv (Rx,D), out (Rx,D)    rows it receives for its experts, and their outputs
 *   sgen, srow (E*Cc)          slot (e,s) -> send row, valid where sgen = the pass's stamp
 *   rgen (P*El*Cc)             (source rank, local slot) seen in the receive pass
 *   sub                        the plan of the received rows: (row, local expert, slot, 1, 1)
 *   L                          moe_layer for El experts: h[e,s] = sum of the rows of (e,s)
 * Sx = rows of this rank's tokens at most (<= the plan's entries), Rx = entries at most. Buffers
 * are sized for the worst case but touched only as far as a plan fills them.
 *
 * Agreement: every expert-parallel forward starts with an all-reduce of (status, phase) and
 * every point ends with one (moe_mpi_agree_point). A rank that fails outside a collective meets
 * the others in the next agreement, whatever phase they are in; they all return an error and
 * come back in step at the end of the point. Only an unrecoverable loss of step sets the desync
 * flag, and then moe_mpi_finalize aborts the job instead of hanging.
 *
 * Points over ranks (no --expert-parallel), messages on moesim's communicator: rank 0
 * broadcasts the list of points to run; worker w runs points j = w, w + P, ... of that list and
 * sends each as a header (RESULT, point, 0, counts) with the packed result, or (ERROR, point,
 * code) with its message; rank 0 takes them in point order, interleaved with its own points.
 * At the end, or after an error or an interruption, rank 0 sends STOP to the workers still
 * running, takes their messages up to DONE (discarding results nobody will store) and releases
 * them with FIN. Expert parallel: rank 0 broadcasts each point's index (-1: stop), all ranks run
 * it, agree, and rank 0 gathers the per-rank means of ep_ranks.
 *
 * Per-rank capacity (DeepSpeed): the routing draws of rank q's local routing come from stream
 * MOE_EP_STREAM + q of the point's seed.
 */
#include "moe_mpi.h"

#include "store.h"

#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#ifdef MOESIM_MPI
#include <mpi.h>
#endif

enum { MOE_EP_STREAM = 64 }; /* rank q's per-rank-capacity draws: stream 64 + q */

/* ---- processes ---- */

static struct {
    int active, rank, size, desync, started;
    int echo; /* this rank's current error only echoes another rank's (agree_fwd) */
#ifdef MOESIM_MPI
    MPI_Comm comm;
#endif
} g = {0, 0, 1, 0, 0, 0
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
    if (g.started || !launched_by_mpi())
        return MOE_OK;
    int flag = 0;
    MPI_Initialized(&flag);
    if (!flag && MPI_Init(NULL, NULL) != MPI_SUCCESS)
        return moe_fail(MOE_EINVAL, "check the MPI installation (mpirun --version)",
                        "MPI_Init failed (moe_mpi_init)");
    g.started = !flag;
    /* moesim's own communicator; MPI errors stay fatal (MPI_ERRORS_ARE_FATAL, the default) */
    MPI_Comm_dup(MPI_COMM_WORLD, &g.comm);
    MPI_Comm_rank(g.comm, &g.rank);
    MPI_Comm_size(g.comm, &g.size);
    g.active = 1;
#endif
    return MOE_OK;
}

int moe_mpi_finalize(int rc)
{
#ifdef MOESIM_MPI
    if (!g.active)
        return rc;
    if (g.desync && g.size > 1) {
        fprintf(stderr, "moesim: error on rank %d with the other ranks out of step: aborting "
                "the job (MPI_Abort)\n", g.rank);
        fflush(stderr);
        MPI_Abort(MPI_COMM_WORLD, rc ? rc : 1);
    }
    MPI_Comm_free(&g.comm);
    g.active = 0;
    if (g.started)
        MPI_Finalize();
    g.started = 0;
    g.rank = 0;
    g.size = 1;
#endif
    return rc;
}

int moe_mpi_rank(void) { return g.rank; }
int moe_mpi_size(void) { return g.size; }
int moe_mpi_active(void) { return g.active; }
int moe_mpi_desync(void) { return g.desync; }

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

/* Rows of D floats: counts and displacements in rows per rank (P); ic, id: (P) int scratch. */
static void a2av_rows(const float *send, const long *scnt, const long *sdsp, float *recv,
                      const long *rcnt, const long *rdsp, size_t D, int *ic, int *id, int *jc,
                      int *jd)
{
#ifdef MOESIM_MPI
    if (g.active) {
        for (int q = 0; q < g.size; q++) {
            ic[q] = (int)(scnt[q] * (long)D);
            id[q] = (int)(sdsp[q] * (long)D);
            jc[q] = (int)(rcnt[q] * (long)D);
            jd[q] = (int)(rdsp[q] * (long)D);
        }
        MPI_Alltoallv(send, ic, id, MPI_FLOAT, recv, jc, jd, MPI_FLOAT, g.comm);
        return;
    }
#endif
    (void)ic, (void)id, (void)jc, (void)jd, (void)rcnt;
    if (scnt[0])
        memcpy(recv + (size_t)rdsp[0] * D, send + (size_t)sdsp[0] * D,
               (size_t)scnt[0] * D * sizeof *send);
}

/* y (T,D): every rank's block of rows to every rank, in place. */
static void allgather_rows(float *y, const int *tbeg, size_t D, int *ic, int *id)
{
#ifdef MOESIM_MPI
    if (g.active && g.size > 1) {
        for (int q = 0; q < g.size; q++) {
            ic[q] = (int)((long)(tbeg[q + 1] - tbeg[q]) * (long)D);
            id[q] = (int)((long)tbeg[q] * (long)D);
        }
        MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, y, ic, id, MPI_FLOAT, g.comm);
        return;
    }
#endif
    (void)y, (void)tbeg, (void)D, (void)ic, (void)id;
}

void moe_mpi_sum(double *v, int n)
{
#ifdef MOESIM_MPI
    if (g.active && g.size > 1)
        MPI_Allreduce(MPI_IN_PLACE, v, n, MPI_DOUBLE, MPI_SUM, g.comm);
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
    if (g.active && g.size > 1) {
        int v[3] = {rc != 0, phase, -phase}, r[3];
        MPI_Allreduce(v, r, 3, MPI_INT, MPI_MAX, g.comm);
        *any = r[0];
        *maxph = r[1];
        *minph = -r[2];
    }
#endif
}

/* At the start of an expert-parallel forward: rc is this rank's status so far. */
static int agree_fwd(int rc)
{
    int any, lo, hi;
    agree_raw(rc, PHASE_FWD, &any, &lo, &hi);
    if (rc)
        return rc;
    if (any || hi != PHASE_FWD) {
        g.echo = 1;
        return moe_fail(MOE_EINVAL, "see the error reported for the failing rank",
                        "the point failed on another rank (rank %d stops with it)", g.rank);
    }
    return MOE_OK;
}

#ifdef MOESIM_MPI
enum { MSG_LEN = 1024 };

/* After a failed agreement: rank 0 learns the first failing rank's message. own: this rank
 * failed itself (not only in echo of another). */
static int gather_error(int rc, int own)
{
    char mine[MSG_LEN];
    snprintf(mine, sizeof mine, "%s", !own ? "" : moe_errmsg()[0] ? moe_errmsg() : "failed");
    char *all = g.rank == 0 ? malloc((size_t)g.size * MSG_LEN) : NULL;
    MPI_Gather(mine, MSG_LEN, MPI_CHAR, all, MSG_LEN, MPI_CHAR, 0, g.comm);
    if (g.rank != 0 || own || !all) { /* a rank's own error is reported as it is */
        free(all);
        return rc ? rc : moe_fail(MOE_EINVAL, NULL, "the point failed on another rank (rank %d)",
                                  g.rank);
    }
    int q = 1;
    while (q < g.size && !all[(size_t)q * MSG_LEN])
        q++;
    moe_clear_error();
    int r = moe_fail(MOE_EINVAL, NULL, "rank %d: %s", q < g.size ? q : 0,
                     q < g.size ? all + (size_t)q * MSG_LEN : "failed");
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
    const int own = rc && !g.echo;
    g.echo = 0;
    if (lo != PHASE_END) {
        g.desync = 1;
        return rc ? rc : moe_fail(MOE_EINVAL, NULL, "ranks out of step (rank %d)", g.rank);
    }
    if (!any)
        return MOE_OK;
#ifdef MOESIM_MPI
    if (g.active && g.size > 1)
        return gather_error(rc, own);
#endif
    (void)own;
    return rc;
}

/* ---- the expert-parallel layer ---- */

struct moe_ep {
    int P, rank, T, E, d, f, act, fw;
    long Cc;                  /* slots per expert covered by the key spaces */
    int e0, el, t0, tn;       /* this rank's experts [e0, e0+el), tokens [t0, t0+tn) */
    int *ebeg, *tbeg;         /* (P+1) block starts */
    int *eown, *town;         /* (E) (T) owners */
    size_t sx, rx;            /* rows of send/ret and recv/out */
    float *send, *ret, *recv, *out;
    unsigned *sgen, *rgen;
    int *srow;
    unsigned stamp;
    long *scnt, *sdsp, *rcnt, *rdsp, *cur; /* (P) rows */
    int *ic, *id, *jc, *jd;                /* (P) MPI counts in floats */
    moe_layer *L;
    moe_plan *sub, *loc;
};

void moe_ep_free(moe_ep *ep)
{
    if (!ep)
        return;
    free(ep->ebeg);
    free(ep->tbeg);
    free(ep->eown);
    free(ep->town);
    free(ep->send);
    free(ep->ret);
    free(ep->recv);
    free(ep->out);
    free(ep->sgen);
    free(ep->rgen);
    free(ep->srow);
    free(ep->scnt);
    free(ep->sdsp);
    free(ep->rcnt);
    free(ep->rdsp);
    free(ep->cur);
    free(ep->ic);
    free(ep->id);
    free(ep->jc);
    free(ep->jd);
    moe_layer_free(ep->L);
    moe_plan_free(ep->sub);
    moe_plan_free(ep->loc);
    free(ep);
}

static void *xcalloc(size_t n, size_t size, int *bad)
{
    void *p = calloc(n ? n : 1, size);
    if (!p)
        *bad = 1;
    return p;
}

moe_ep *moe_ep_alloc(int T, int E, long C_max, int d, int f, int act, size_t cap_entries,
                     int per_rank)
{
    const int P = g.size, rank = g.rank;
    if (E < P || T < P) {
        moe_fail(MOE_EINVAL, "use at most as many ranks as experts and tokens",
                 "expert parallelism over %d ranks needs E >= %d and T >= %d tokens, got E = %d, "
                 "T = %d (moe_ep_alloc)", P, P, P, E, T);
        return NULL;
    }
    if (d < 1 || f < 1 || C_max < 0 || cap_entries < 1) {
        moe_fail(MOE_EINVAL, NULL, "bad expert-parallel shape d=%d f=%d C_max=%ld entries=%zu "
                 "(moe_ep_alloc)", d, f, C_max, cap_entries);
        return NULL;
    }
    moe_ep *ep = calloc(1, sizeof *ep);
    if (!ep) {
        moe_fail(MOE_ENOMEM, NULL, "out of memory (moe_ep_alloc)");
        return NULL;
    }
    ep->P = P;
    ep->rank = rank;
    ep->T = T;
    ep->E = E;
    ep->d = d;
    ep->f = f;
    ep->act = act;
    ep->fw = act == MOE_ACT_SWIGLU ? 2 * f : f;
    long Cc = (per_rank ? (long)P : 1L) * (C_max > 0 ? C_max : 1);
    ep->Cc = Cc;
    int bad = 0;
    ep->ebeg = xcalloc((size_t)P + 1, sizeof *ep->ebeg, &bad);
    ep->tbeg = xcalloc((size_t)P + 1, sizeof *ep->tbeg, &bad);
    ep->eown = xcalloc((size_t)E, sizeof *ep->eown, &bad);
    ep->town = xcalloc((size_t)T, sizeof *ep->town, &bad);
    if (bad)
        goto nomem;
    for (int q = 0; q <= P; q++) {
        ep->ebeg[q] = moe_mpi_block_start(E, P, q);
        ep->tbeg[q] = moe_mpi_block_start(T, P, q);
    }
    for (int e = 0; e < E; e++)
        ep->eown[e] = moe_mpi_block_owner(E, P, e);
    for (int t = 0; t < T; t++)
        ep->town[t] = moe_mpi_block_owner(T, P, t);
    ep->e0 = ep->ebeg[rank];
    ep->el = ep->ebeg[rank + 1] - ep->e0;
    ep->t0 = ep->tbeg[rank];
    ep->tn = ep->tbeg[rank + 1] - ep->t0;
    /* rows: sent <= entries of this rank's tokens <= one plan's entries (a per-rank plan of
     * n_q <= T tokens has at most as many as a plan of T); received <= all entries of the plan
     * (P plans' worth for the union of per-rank plans) and <= source ranks x local slots */
    size_t keys, rkeys;
    if (__builtin_mul_overflow((size_t)E, (size_t)Cc, &keys) ||
        __builtin_mul_overflow((size_t)P * (size_t)ep->el, (size_t)Cc, &rkeys)) {
        moe_fail(MOE_EINVAL, "use a smaller capacity", "expert-parallel slot space E=%d x C=%ld "
                 "overflows (moe_ep_alloc)", E, Cc);
        moe_ep_free(ep);
        return NULL;
    }
    size_t ent = cap_entries * (per_rank ? (size_t)P : 1);
    ep->sx = cap_entries < keys ? cap_entries : keys;
    ep->rx = ent < rkeys ? ent : rkeys;
    if (ep->sx * (size_t)d > INT_MAX || ep->rx * (size_t)d > INT_MAX ||
        (size_t)T * (size_t)d > INT_MAX || ep->rx > INT_MAX) {
        moe_fail(MOE_EINVAL, "use fewer tokens, a smaller width or more ranks",
                 "expert-parallel buffers of %zu x %d floats exceed MPI's int counts "
                 "(moe_ep_alloc)", ep->rx > ep->sx ? ep->rx : ep->sx, d);
        moe_ep_free(ep);
        return NULL;
    }
    ep->send = malloc((ep->sx ? ep->sx : 1) * (size_t)d * sizeof(float));
    ep->ret = malloc((ep->sx ? ep->sx : 1) * (size_t)d * sizeof(float));
    ep->recv = malloc((ep->rx ? ep->rx : 1) * (size_t)d * sizeof(float));
    ep->out = malloc((ep->rx ? ep->rx : 1) * (size_t)d * sizeof(float));
    ep->sgen = xcalloc(keys, sizeof *ep->sgen, &bad);
    ep->srow = xcalloc(keys, sizeof *ep->srow, &bad);
    ep->rgen = xcalloc(rkeys, sizeof *ep->rgen, &bad);
    ep->scnt = xcalloc((size_t)P, sizeof(long), &bad);
    ep->sdsp = xcalloc((size_t)P, sizeof(long), &bad);
    ep->rcnt = xcalloc((size_t)P, sizeof(long), &bad);
    ep->rdsp = xcalloc((size_t)P, sizeof(long), &bad);
    ep->cur = xcalloc((size_t)P, sizeof(long), &bad);
    ep->ic = xcalloc((size_t)P, sizeof(int), &bad);
    ep->id = xcalloc((size_t)P, sizeof(int), &bad);
    ep->jc = xcalloc((size_t)P, sizeof(int), &bad);
    ep->jd = xcalloc((size_t)P, sizeof(int), &bad);
    if (bad || !ep->send || !ep->ret || !ep->recv || !ep->out)
        goto nomem;
    ep->L = moe_layer_alloc(ep->rx > 0 ? (int)ep->rx : 1, ep->el, Cc, d, f, act);
    if (!ep->L) {
        moe_ep_free(ep);
        return NULL;
    }
    ep->sub = moe_plan_alloc((int)ep->rx, ep->el, ep->rx);
    ep->loc = per_rank ? moe_plan_alloc(T, E, cap_entries) : NULL;
    if (!ep->sub || (per_rank && !ep->loc))
        goto nomem;
    return ep;
nomem:
    moe_ep_free(ep);
    moe_fail(MOE_ENOMEM, "use fewer tokens, experts or a smaller capacity",
             "out of memory for expert-parallel workspaces (T = %d, E = %d, C = %ld, D = %d)",
             T, E, Cc, d);
    return NULL;
}

/* A fresh stamp for the slot marks; on wrap-around the marks are cleared. */
static unsigned next_stamp(moe_ep *ep)
{
    if (++ep->stamp == 0) {
        memset(ep->sgen, 0, (size_t)ep->E * (size_t)ep->Cc * sizeof *ep->sgen);
        memset(ep->rgen, 0,
               (size_t)ep->P * (size_t)ep->el * (size_t)ep->Cc * sizeof *ep->rgen);
        ep->stamp = 1;
    }
    return ep->stamp;
}

static int check_ep_plan(const moe_ep *ep, const moe_plan *plan)
{
    if (plan->n != ep->T || plan->E != ep->E)
        return moe_fail(MOE_EINVAL, NULL, "plan of %d tokens and %d experts, the expert-parallel "
                        "layer was set up for %d and %d (moe_ep_forward)", plan->n, plan->E,
                        ep->T, ep->E);
    if (plan->capacity < 0 || plan->capacity > ep->Cc)
        return moe_fail(MOE_EINVAL, NULL, "plan capacity %ld outside the expert-parallel "
                        "layer's 0..%ld (moe_ep_forward)", plan->capacity, ep->Cc);
    for (size_t i = 0; i < plan->n_entries; i++) {
        const moe_entry *en = &plan->entries[i];
        if (en->token < 0 || en->token >= plan->n || en->expert < 0 || en->expert >= plan->E ||
            en->slot < 0 || en->slot >= plan->capacity)
            return moe_fail(MOE_EINVAL, NULL, "plan entry %zu (token %d, expert %d, slot %d) "
                            "outside n = %d, E = %d, C = %ld (moe_ep_forward)", i, en->token,
                            en->expert, en->slot, plan->n, plan->E, plan->capacity);
    }
    return MOE_OK;
}

/* Prefix sums: dsp[q] = sum of cnt[0..q); returns the total. */
static long prefix(const long *cnt, long *dsp, int P)
{
    long s = 0;
    for (int q = 0; q < P; q++) {
        dsp[q] = s;
        s += cnt[q];
    }
    return s;
}

/* moe_ep_forward with this rank's status so far (rc_in != 0: fail, together with the others). */
static int ep_forward_rc(moe_ep *ep, const moe_experts *w, const moe_plan *plan, const float *x,
                         float *y, int gather, moe_ep_stats *st, int rc_in)
{
    int rc = rc_in ? rc_in : check_ep_plan(ep, plan);
    if (!rc && (!w || w->E != ep->E || w->d != ep->d || w->f != ep->f || w->act != ep->act))
        rc = moe_fail(MOE_EINVAL, NULL, "expert weights do not match the expert-parallel layer "
                      "(moe_ep_forward)");
    if ((rc = agree_fwd(rc)))
        return rc;
    const int P = ep->P, me = ep->rank, e0 = ep->e0, el = ep->el;
    const int t0 = ep->t0, t1 = ep->t0 + ep->tn;
    const size_t D = (size_t)ep->d, FW = (size_t)ep->fw, F = (size_t)ep->f;
    const long Cc = ep->Cc;
    const moe_entry *en = plan->entries;
    const size_t ne = plan->n_entries;
    double a2a = 0.0, tp = moe_now();

    /* ---- dispatch: one row per slot (e,s) this rank's tokens touch, grouped by the expert's
     * rank in order of first appearance in the plan ---- */
    memset(ep->scnt, 0, (size_t)P * sizeof *ep->scnt);
    unsigned sa = next_stamp(ep);
    for (size_t i = 0; i < ne; i++) {
        if (en[i].token < t0 || en[i].token >= t1)
            continue;
        size_t key = (size_t)en[i].expert * (size_t)Cc + (size_t)en[i].slot;
        if (ep->sgen[key] != sa) {
            ep->sgen[key] = sa;
            ep->scnt[ep->eown[en[i].expert]]++;
        }
    }
    long nsend = prefix(ep->scnt, ep->sdsp, P);
    if ((size_t)nsend > ep->sx)
        return moe_fail(MOE_EINVAL, NULL, "%ld dispatch rows exceed the workspace of %zu "
                        "(moe_ep_forward)", nsend, ep->sx);
    memcpy(ep->cur, ep->sdsp, (size_t)P * sizeof *ep->cur);
    unsigned sb = next_stamp(ep);
    for (size_t i = 0; i < ne; i++) {
        if (en[i].token < t0 || en[i].token >= t1)
            continue;
        size_t key = (size_t)en[i].expert * (size_t)Cc + (size_t)en[i].slot;
        if (ep->sgen[key] != sb) {
            ep->sgen[key] = sb;
            ep->srow[key] = (int)ep->cur[ep->eown[en[i].expert]]++;
            memset(ep->send + (size_t)ep->srow[key] * D, 0, D * sizeof(float));
        }
        float a = (float)en[i].dispatch_w, *row = ep->send + (size_t)ep->srow[key] * D;
        const float *xt = x + (size_t)en[i].token * D;
        for (size_t c = 0; c < D; c++)
            row[c] += a * xt[c];
    }
    /* what arrives: the same first-appearance order, per source rank, for this rank's experts */
    memset(ep->rcnt, 0, (size_t)P * sizeof *ep->rcnt);
    long tokens = 0;
    unsigned ra = next_stamp(ep);
    for (size_t i = 0; i < ne; i++) {
        int e = en[i].expert;
        if (e < e0 || e >= e0 + el)
            continue;
        tokens++;
        int src = ep->town[en[i].token];
        size_t key = ((size_t)src * (size_t)el + (size_t)(e - e0)) * (size_t)Cc +
                     (size_t)en[i].slot;
        if (ep->rgen[key] != ra) {
            ep->rgen[key] = ra;
            ep->rcnt[src]++;
        }
    }
    long nrecv = prefix(ep->rcnt, ep->rdsp, P);
    if ((size_t)nrecv > ep->rx)
        return moe_fail(MOE_EINVAL, NULL, "%ld received rows exceed the workspace of %zu "
                        "(moe_ep_forward)", nrecv, ep->rx);
    if ((rc = moe_plan_reset(ep->sub, (int)nrecv, el, 0)))
        return rc;
    ep->sub->capacity = plan->capacity;
    memcpy(ep->cur, ep->rdsp, (size_t)P * sizeof *ep->cur);
    unsigned rb = next_stamp(ep);
    for (size_t i = 0; i < ne; i++) {
        int e = en[i].expert;
        if (e < e0 || e >= e0 + el)
            continue;
        int src = ep->town[en[i].token];
        size_t key = ((size_t)src * (size_t)el + (size_t)(e - e0)) * (size_t)Cc +
                     (size_t)en[i].slot;
        if (ep->rgen[key] != rb) {
            ep->rgen[key] = rb;
            if ((rc = moe_plan_push(ep->sub, (int32_t)ep->cur[src]++, e - e0, en[i].slot, 1.0,
                                    1.0)))
                return rc;
        }
    }
    double t1s = moe_now();
    a2av_rows(ep->send, ep->scnt, ep->sdsp, ep->recv, ep->rcnt, ep->rdsp, D, ep->ic, ep->id,
              ep->jc, ep->jd);
    double t2s = moe_now();
    a2a += t2s - t1s;

    /* ---- experts: this rank's FFNs on the received rows ---- */
    const moe_experts wl = {el, ep->d, ep->f, ep->act, w->w1 + (size_t)e0 * D * FW,
                            w->b1 + (size_t)e0 * FW, w->w2 + (size_t)e0 * F * D,
                            w->b2 + (size_t)e0 * D};
    if (nrecv > 0 && (rc = moe_layer_forward(ep->L, &wl, ep->sub, ep->recv, ep->out, NULL)))
        return rc; /* (cannot fail on a valid plan: shapes checked above) */
    double t3s = moe_now();

    /* ---- combine: outputs back in the same row order; y[t] += combine_w * out ---- */
    a2av_rows(ep->out, ep->rcnt, ep->rdsp, ep->ret, ep->scnt, ep->sdsp, D, ep->ic, ep->id,
              ep->jc, ep->jd);
    double t4s = moe_now();
    a2a += t4s - t3s;
    memset(y + (size_t)t0 * D, 0, (size_t)ep->tn * D * sizeof *y);
    for (size_t i = 0; i < ne; i++) {
        if (en[i].token < t0 || en[i].token >= t1)
            continue;
        size_t key = (size_t)en[i].expert * (size_t)Cc + (size_t)en[i].slot;
        float a = (float)en[i].combine_w, *yt = y + (size_t)en[i].token * D;
        const float *o = ep->ret + (size_t)ep->srow[key] * D;
        for (size_t c = 0; c < D; c++)
            yt[c] += a * o[c];
    }
    double t5s = moe_now();
    if (gather)
        allgather_rows(y, ep->tbeg, D, ep->ic, ep->id);
    if (st) {
        memset(st, 0, sizeof *st);
        st->rank = me;
        st->P = P;
        st->e0 = e0;
        st->experts = el;
        st->t0 = t0;
        st->held = ep->tn;
        st->tokens = tokens;
        st->rows_local = ep->scnt[me];
        st->rows_out = nsend - ep->scnt[me];
        st->rows_in = nrecv - ep->rcnt[me];
        st->bytes_sent = st->bytes_recv =
            (double)(st->rows_out + st->rows_in) * (double)D * sizeof(float);
        st->a2a_s = a2a;
        st->expert_s = t3s - t2s;
        st->pack_s = (t1s - tp) + (t5s - t4s);
        st->dispatch_s = t2s - tp;
        st->combine_s = t5s - t3s;
    }
    return MOE_OK;
}

int moe_ep_forward(moe_ep *ep, const moe_experts *w, const moe_plan *plan, const float *x,
                   float *y, int gather, moe_ep_stats *st)
{
    return ep_forward_rc(ep, w, plan, x, y, gather, st, MOE_OK);
}

/* ---- DeepSpeed's per-rank capacity ---- */

int moe_ep_plan_per_rank(moe_ep *ep, moe_router *r, const moe_route_in *in, gsl_rng *const *rngs,
                         moe_plan *out, long *claims, long *dropped)
{
    if (!ep->loc)
        return moe_fail(MOE_EINVAL, "allocate the layer with per_rank = 1",
                        "no per-rank workspace (moe_ep_plan_per_rank)");
    if (in->n != ep->T)
        return moe_fail(MOE_EINVAL, NULL, "%d tokens, the expert-parallel layer has %d "
                        "(moe_ep_plan_per_rank)", in->n, ep->T);
    int rc = moe_plan_reset(out, ep->T, ep->E, in->m);
    if (rc)
        return rc;
    long off = 0;
    const size_t M = (size_t)in->m, K = (size_t)(in->k_rec > 0 ? in->k_rec : 0);
    for (int q = 0; q < ep->P; q++) {
        const int tq = ep->tbeg[q];
        moe_route_in iq = *in;
        iq.n = ep->tbeg[q + 1] - tq;
        iq.logits = in->logits + (size_t)tq * M;
        iq.ids = in->ids ? in->ids + tq : NULL;
        iq.uniforms = in->uniforms ? in->uniforms + tq : NULL;
        iq.choices = in->choices ? in->choices + (size_t)tq * K : NULL;
        iq.choice_w = in->choice_w ? in->choice_w + (size_t)tq * K : NULL;
        iq.rng = rngs ? rngs[q] : in->rng;
        moe_plan *lp = ep->loc;
        if ((rc = moe_router_route(r, &iq, lp)))
            return rc;
        for (size_t i = 0; i < lp->n_entries; i++) {
            const moe_entry *e = &lp->entries[i];
            if ((rc = moe_plan_push(out, e->token + tq, e->expert, (int32_t)(e->slot + off),
                                    e->dispatch_w, e->combine_w)))
                return rc;
        }
        for (int e = 0; e < ep->E; e++) {
            out->assigned_load[e] += lp->assigned_load[e];
            out->importance[e] += lp->importance[e];
        }
        out->k = lp->k;
        out->dense |= lp->dense;
        const int has_claims = !lp->dense && lp->n_claims > 0;
        out->n_claims += has_claims ? lp->n_claims : (long)lp->n_entries;
        if (claims)
            claims[q] = has_claims ? lp->n_claims : (long)lp->n_entries;
        if (dropped)
            dropped[q] = has_claims ? lp->n_claims - (long)lp->n_entries : 0;
        off += lp->capacity;
    }
    out->capacity = off;
    if (off > ep->Cc)
        return moe_fail(MOE_EINVAL, NULL, "per-rank capacities sum to %ld slots, above the "
                        "expert-parallel layer's %ld (moe_ep_plan_per_rank)", off, ep->Cc);
    return MOE_OK;
}

/* ---- the expert-parallel point: moe_point_ep hooks ---- */

/* Per-rank columns of ep_ranks, means over batches (two rows per rank: global, per_rank). */
enum { F_E0, F_EXPERTS, F_T0, F_HELD, F_CAPACITY, F_TOKENS, F_ROWS_OUT, F_ROWS_IN, F_ROWS_LOCAL,
       F_BYTES_SENT, F_BYTES_RECV, F_A2A, F_EXPERT, F_PACK, F_CLAIMS, F_DROPPED, NF };
static const char *const field_names[NF] = {
    "first_expert", "experts", "first_token", "tokens_held", "plan_capacity", "tokens",
    "rows_out", "rows_in", "rows_local", "bytes_sent", "bytes_recv", "a2a_s", "expert_s",
    "pack_s", "claims", "dropped"};
enum { MODE_GLOBAL, MODE_PER_RANK, NMODES };
static const char *const mode_names[NMODES] = {"global", "per_rank"};

typedef struct {
    moe_ep *ep;
    moe_router *r;
    gsl_rng **rngs;   /* (P) or NULL */
    moe_plan *uplan;  /* the per-rank-capacity plan */
    float *yscratch;  /* (T,D) its output (not kept) */
    long *claims, *dropped; /* (P) */
    double acc[NMODES][NF];
    int nb, P;
} ep_point;

static void ep_point_clear(ep_point *c)
{
    moe_ep_free(c->ep);
    if (c->rngs)
        for (int q = 0; q < c->P; q++)
            gsl_rng_free(c->rngs[q]);
    free(c->rngs);
    moe_plan_free(c->uplan);
    free(c->yscratch);
    free(c->claims);
    free(c->dropped);
    memset(c, 0, sizeof *c);
}

static int ep_begin(void *ctx, const moe_point *pt, moe_router *r, long C_max, size_t cap)
{
    ep_point *c = ctx;
    ep_point_clear(c);
    c->P = g.size;
    c->r = r;
    c->ep = moe_ep_alloc(pt->tokens, pt->E, C_max, pt->d, pt->f, pt->act, cap, 1);
    if (!c->ep)
        return MOE_EINVAL;
    int bad = 0;
    c->uplan = moe_plan_alloc(pt->tokens, pt->E, cap * (size_t)c->P);
    c->yscratch = malloc((size_t)pt->tokens * (size_t)pt->d * sizeof *c->yscratch);
    c->claims = xcalloc((size_t)c->P, sizeof *c->claims, &bad);
    c->dropped = xcalloc((size_t)c->P, sizeof *c->dropped, &bad);
    if ((pt->rtype->flags & MOE_RF_USES_RNG) || pt->opts.noise_std > 0.0) {
        c->rngs = xcalloc((size_t)c->P, sizeof *c->rngs, &bad);
        for (int q = 0; !bad && q < c->P; q++)
            if (!(c->rngs[q] = moe_rng_alloc(pt->seed, MOE_EP_STREAM + (uint64_t)q)))
                bad = 1;
    }
    if (bad || !c->uplan || !c->yscratch)
        return moe_fail(MOE_ENOMEM, NULL, "out of memory (expert-parallel point %s)",
                        pt->config_key);
    return MOE_OK;
}

static void ep_accumulate(double *acc, const moe_ep_stats *st, long capacity)
{
    acc[F_E0] = st->e0;
    acc[F_EXPERTS] = st->experts;
    acc[F_T0] = st->t0;
    acc[F_HELD] = st->held;
    acc[F_CAPACITY] += (double)capacity;
    acc[F_TOKENS] += (double)st->tokens;
    acc[F_ROWS_OUT] += (double)st->rows_out;
    acc[F_ROWS_IN] += (double)st->rows_in;
    acc[F_ROWS_LOCAL] += (double)st->rows_local;
    acc[F_BYTES_SENT] += st->bytes_sent;
    acc[F_BYTES_RECV] += st->bytes_recv;
    acc[F_A2A] += st->a2a_s;
    acc[F_EXPERT] += st->expert_s;
    acc[F_PACK] += st->pack_s;
}

static int ep_forward(void *ctx, const moe_experts *w, const moe_plan *plan,
                      const moe_route_in *in, const float *x, float *y, moe_layer_timing *tm)
{
    ep_point *c = ctx;
    moe_ep_stats st;
    /* the point's plan: its output is the layer output */
    int rc = moe_ep_forward(c->ep, w, plan, x, y, 1, &st);
    if (rc)
        return rc;
    if (tm) {
        tm->dispatch = st.dispatch_s;
        tm->experts = st.expert_s;
        tm->combine = st.combine_s;
    }
    ep_accumulate(c->acc[MODE_GLOBAL], &st, plan->capacity);
    /* the same batch under DeepSpeed's per-rank capacity: measured, not kept */
    rc = moe_ep_plan_per_rank(c->ep, c->r, in, c->rngs, c->uplan, c->claims, c->dropped);
    if ((rc = ep_forward_rc(c->ep, w, c->uplan, x, c->yscratch, 0, &st, rc)))
        return rc;
    ep_accumulate(c->acc[MODE_PER_RANK], &st, c->uplan->capacity);
    c->acc[MODE_PER_RANK][F_CLAIMS] += (double)c->claims[g.rank];
    c->acc[MODE_PER_RANK][F_DROPPED] += (double)c->dropped[g.rank];
    c->nb++;
    return MOE_OK;
}

static const moe_point_ep ep_hooks_proto = {NULL, ep_begin, ep_forward};

/* ---- results over the wire ---- */
#ifdef MOESIM_MPI

/* Doubles and longs of a moe_point_result for E experts and b batches. */
static size_t result_ndoubles(int E, int b)
{
    return 2 * (size_t)MOE_POINT_NMETRICS + 2 * (size_t)MOE_T_COUNT + 4 + 3 * (size_t)E +
           (size_t)b * (MOE_POINT_NMETRICS + MOE_T_COUNT);
}

static void result_pack(const moe_point_result *r, double *d, long *l)
{
    size_t k = 0;
    for (int i = 0; i < MOE_POINT_NMETRICS; i++) {
        d[k++] = r->mean[i];
        d[k++] = r->std[i];
    }
    for (int i = 0; i < MOE_T_COUNT; i++) {
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
    memcpy(d + k, r->batch_time, (size_t)r->batches * MOE_T_COUNT * sizeof *d);
    memcpy(l, r->experts_per_token, ((size_t)r->E + 1) * sizeof *l);
}

static void result_unpack(moe_point_result *r, const double *d, const long *l)
{
    size_t k = 0;
    for (int i = 0; i < MOE_POINT_NMETRICS; i++) {
        r->mean[i] = d[k++];
        r->std[i] = d[k++];
    }
    for (int i = 0; i < MOE_T_COUNT; i++) {
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
    memcpy(r->batch_time, d + k, (size_t)r->batches * MOE_T_COUNT * sizeof *d);
    memcpy(r->experts_per_token, l, ((size_t)r->E + 1) * sizeof *l);
}
#endif

/* ---- `moesim run` over ranks ---- */

struct moe_mpi_run {
    int ep, P, rank;
    int shared;              /* rank 0: the list went out (or the stop) */
    size_t total;
    unsigned char *run;      /* (total) workers: points to run */
    ep_point epc;            /* ep mode: this rank's point context */
    moe_point_ep hooks;
    double *gathered;        /* rank 0, ep mode: (P, NMODES, NF) means of the last point */
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
    if (!ep && g.size == 1)
        return MOE_OK;
    moe_mpi_run *m = calloc(1, sizeof *m);
    if (!m)
        return moe_fail(MOE_ENOMEM, NULL, "out of memory (moesim run over MPI)");
    m->ep = ep;
    m->P = g.size;
    m->rank = g.rank;
    m->hooks = ep_hooks_proto;
    m->hooks.ctx = &m->epc;
    m->done = calloc((size_t)m->P, sizeof *m->done);
    m->gathered = calloc((size_t)m->P * NMODES * NF, sizeof *m->gathered);
    if (!m->done || !m->gathered) {
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
    ep_point_clear(&m->epc);
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
    if (g.active && g.size > 1) {
        long long hdr[2] = {rc, (long long)total};
        MPI_Bcast(hdr, 2, MPI_LONG_LONG, 0, g.comm);
        if (!rc && total)
            MPI_Bcast(run, (int)total, MPI_UNSIGNED_CHAR, 0, g.comm);
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
    MPI_Bcast(hdr, 2, MPI_LONG_LONG, 0, g.comm);
    if (hdr[0] != 0)
        return MOE_OK;
    m->total = (size_t)hdr[1];
    m->run = calloc(m->total + 1, 1);
    if (!m->run) {
        g.desync = 1; /* rank 0 is about to broadcast the list: cannot take part */
        return moe_fail(MOE_ENOMEM, NULL, "out of memory (rank %d)", g.rank);
    }
    if (m->total)
        MPI_Bcast(m->run, (int)m->total, MPI_UNSIGNED_CHAR, 0, g.comm);
    *go = 1;
    return MOE_OK;
}
#endif

/* ep mode, every rank after an agreed point: rank 0 gathers the per-rank means. */
static void ep_gather_stats(moe_mpi_run *m)
{
    double mine[NMODES * NF];
    const double nb = m->epc.nb > 0 ? (double)m->epc.nb : 1.0;
    for (int mo = 0; mo < NMODES; mo++)
        for (int f = 0; f < NF; f++) {
            double v = m->epc.acc[mo][f];
            if (f != F_E0 && f != F_EXPERTS && f != F_T0 && f != F_HELD)
                v /= nb;
            mine[mo * NF + f] = v;
        }
    mine[MODE_GLOBAL * NF + F_CLAIMS] = NAN; /* per token shard: only known per rank's plan */
    mine[MODE_GLOBAL * NF + F_DROPPED] = NAN;
#ifdef MOESIM_MPI
    if (g.active && g.size > 1) {
        MPI_Gather(mine, NMODES * NF, MPI_DOUBLE, m->gathered, NMODES * NF, MPI_DOUBLE, 0,
                   g.comm);
        return;
    }
#endif
    memcpy(m->gathered, mine, sizeof mine);
}

/* ep mode, every rank: run point pt expert-parallel and agree on the outcome. */
static int ep_run_point(moe_mpi_run *m, const moe_point *pt, volatile sig_atomic_t *stop,
                        moe_point_result *res)
{
    int rc = res ? moe_point_run_ep(pt, stop, res, &m->hooks) : MOE_ENOMEM;
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
    MPI_Recv(hdr, 5, MPI_LONG, w, TAG_HDR, g.comm, MPI_STATUS_IGNORE);
    if (hdr[0] == HDR_DONE) {
        m->done[w] = 1;
        return moe_fail(MOE_EINVAL, "run the same command again to resume",
                        "interrupted on rank %d before point %zu", w, i + 1);
    }
    if (hdr[0] == HDR_ERROR) {
        char msg[MSG_LEN];
        MPI_Recv(msg, MSG_LEN, MPI_CHAR, w, TAG_MSG, g.comm, MPI_STATUS_IGNORE);
        msg[MSG_LEN - 1] = '\0';
        return moe_fail(hdr[2] ? (int)hdr[2] : MOE_EINVAL, NULL, "rank %d: %s", w, msg);
    }
    size_t nd = result_ndoubles(res->E, res->batches);
    double *d = malloc(((size_t)hdr[3] > nd ? (size_t)hdr[3] : nd) * sizeof *d);
    long *l = malloc(((size_t)hdr[4] > (size_t)res->E + 1 ? (size_t)hdr[4] : (size_t)res->E + 1) *
                     sizeof *l);
    if (!d || !l) {
        free(d);
        free(l);
        g.desync = 1; /* the payload cannot be taken off the worker */
        return moe_fail(MOE_ENOMEM, NULL, "out of memory (result of point %zu)", i + 1);
    }
    MPI_Recv(d, (int)hdr[3], MPI_DOUBLE, w, TAG_DBL, g.comm, MPI_STATUS_IGNORE);
    MPI_Recv(l, (int)hdr[4], MPI_LONG, w, TAG_LNG, g.comm, MPI_STATUS_IGNORE);
    int rc = MOE_OK;
    if ((size_t)hdr[1] != i || (size_t)hdr[3] != nd || (size_t)hdr[4] != (size_t)res->E + 1)
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
        if (g.active && g.size > 1) {
            long long cmd = (long long)i;
            MPI_Bcast(&cmd, 1, MPI_LONG_LONG, 0, g.comm);
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

int moe_mpi_run_stored(moe_mpi_run *m, sqlite3 *db, const char *db_path, const moe_point *pt,
                       int rc)
{
    if (!m || !m->ep || rc)
        return rc;
    if ((rc = moe_mpi_ep_schema(db, db_path)))
        return rc;
    sqlite3_stmt *find = NULL, *del = NULL, *ins = NULL;
    char sql[1024];
    int n = snprintf(sql, sizeof sql, "INSERT INTO ep_ranks (point, capacity, rank, ranks");
    for (int f = 0; f < NF; f++)
        n += snprintf(sql + n, sizeof sql - (size_t)n, ", %s", field_names[f]);
    n += snprintf(sql + n, sizeof sql - (size_t)n, ") VALUES (?, ?, ?, ?");
    for (int f = 0; f < NF; f++)
        n += snprintf(sql + n, sizeof sql - (size_t)n, ", ?");
    snprintf(sql + n, sizeof sql - (size_t)n, ")");
    int s = sqlite3_prepare_v2(db, "SELECT id FROM points WHERE config_key = ?", -1, &find, NULL);
    if (s == SQLITE_OK)
        s = sqlite3_prepare_v2(db, "DELETE FROM ep_ranks WHERE point = ?", -1, &del, NULL);
    if (s == SQLITE_OK)
        s = sqlite3_prepare_v2(db, sql, -1, &ins, NULL);
    if (s == SQLITE_OK)
        s = sqlite3_bind_text(find, 1, pt->config_key, -1, SQLITE_STATIC);
    sqlite3_int64 id = 0;
    if (s == SQLITE_OK && (s = sqlite3_step(find)) == SQLITE_ROW) {
        id = sqlite3_column_int64(find, 0);
        s = SQLITE_OK;
    } else if (s == SQLITE_DONE) {
        s = SQLITE_NOTFOUND;
    }
    int began = 0;
    if (s == SQLITE_OK && (s = sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL)) == SQLITE_OK)
        began = 1;
    if (s == SQLITE_OK && (s = sqlite3_bind_int64(del, 1, id)) == SQLITE_OK &&
        (s = sqlite3_step(del)) == SQLITE_DONE)
        s = SQLITE_OK;
    for (int mo = 0; s == SQLITE_OK && mo < NMODES; mo++)
        for (int q = 0; s == SQLITE_OK && q < m->P; q++) {
            const double *v = m->gathered + ((size_t)q * NMODES + (size_t)mo) * NF;
            sqlite3_reset(ins);
            int b = 1;
            s = sqlite3_bind_int64(ins, b++, id);
            if (s == SQLITE_OK)
                s = sqlite3_bind_text(ins, b++, mode_names[mo], -1, SQLITE_STATIC);
            if (s == SQLITE_OK)
                s = sqlite3_bind_int(ins, b++, q);
            if (s == SQLITE_OK)
                s = sqlite3_bind_int(ins, b++, m->P);
            for (int f = 0; s == SQLITE_OK && f < NF; f++)
                s = isfinite(v[f]) ? sqlite3_bind_double(ins, b++, v[f])
                                   : sqlite3_bind_null(ins, b++);
            if (s == SQLITE_OK && (s = sqlite3_step(ins)) == SQLITE_DONE)
                s = SQLITE_OK;
        }
    if (s == SQLITE_OK && began && (s = sqlite3_exec(db, "COMMIT", NULL, NULL, NULL)) == SQLITE_OK)
        began = 0;
    if (s != SQLITE_OK)
        rc = moe_fail(MOE_EDB, NULL, "cannot store the per-rank rows of point %s: %s (%s)",
                      pt->config_key, s == SQLITE_NOTFOUND ? "point not stored" :
                      sqlite3_errmsg(db), db_path);
    if (began)
        sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL); /* the first error is the one reported */
    sqlite3_finalize(find);
    sqlite3_finalize(del);
    sqlite3_finalize(ins);
    return rc;
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
    if (!g.active || g.size == 1 || g.desync) /* desync: moe_mpi_finalize aborts the job */
        return rc;
    if (m->ep) {
        long long cmd = -1;
        MPI_Bcast(&cmd, 1, MPI_LONG_LONG, 0, g.comm);
        return rc;
    }
    /* sweep mode: stop the workers still running, take their last messages, release them */
    MPI_Request *req = calloc((size_t)m->P, sizeof *req);
    int stopv = CTL_STOP, fin = CTL_FIN, nreq = 0;
    for (int w = 1; w < m->P; w++)
        if (!m->done[w] && rc && req)
            MPI_Isend(&stopv, 1, MPI_INT, w, TAG_CTL, g.comm, &req[nreq++]);
    for (int w = 1; w < m->P; w++) {
        while (!m->done[w]) {
            long hdr[5];
            MPI_Recv(hdr, 5, MPI_LONG, w, TAG_HDR, g.comm, MPI_STATUS_IGNORE);
            if (hdr[0] == HDR_DONE) {
                m->done[w] = 1;
            } else if (hdr[0] == HDR_ERROR) {
                char msg[MSG_LEN];
                MPI_Recv(msg, MSG_LEN, MPI_CHAR, w, TAG_MSG, g.comm, MPI_STATUS_IGNORE);
                msg[MSG_LEN - 1] = '\0';
                if (!rc)
                    rc = moe_fail(MOE_EINVAL, NULL, "rank %d: %s", w, msg);
            } else { /* a result nobody will store: take it off the wire */
                double dd;
                long ll;
                MPI_Status s1;
                for (int tag = TAG_DBL; tag <= TAG_LNG; tag++) {
                    MPI_Probe(w, tag, g.comm, &s1);
                    int cnt = 0;
                    MPI_Get_count(&s1, tag == TAG_DBL ? MPI_DOUBLE : MPI_LONG, &cnt);
                    void *buf = malloc((size_t)(cnt > 0 ? cnt : 1) * sizeof(double));
                    MPI_Recv(buf ? buf : (tag == TAG_DBL ? (void *)&dd : (void *)&ll),
                             buf ? cnt : 0, tag == TAG_DBL ? MPI_DOUBLE : MPI_LONG, w, tag,
                             g.comm, MPI_STATUS_IGNORE);
                    free(buf);
                }
            }
        }
    }
    if (req)
        MPI_Waitall(nreq, req, MPI_STATUSES_IGNORE);
    free(req);
    for (int w = 1; w < m->P; w++)
        MPI_Send(&fin, 1, MPI_INT, w, TAG_CTL, g.comm);
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
        MPI_Iprobe(0, TAG_CTL, g.comm, &flag, MPI_STATUS_IGNORE);
        if (flag || (stop && *stop))
            break; /* the CTL message is taken below */
        const moe_point *pt = moe_spec_point(spec, i);
        moe_clear_error();
        moe_point_result *res = moe_point_result_alloc(pt->E, pt->batches);
        int rc = res ? moe_point_run(pt, stop, res) : MOE_ENOMEM;
        size_t nd = res ? result_ndoubles(pt->E, pt->batches) : 0;
        double *d = rc ? NULL : malloc(nd * sizeof *d);
        long *l = rc ? NULL : malloc(((size_t)pt->E + 1) * sizeof *l);
        if (!rc && (!d || !l))
            rc = moe_fail(MOE_ENOMEM, NULL, "out of memory (result of point %zu)", i + 1);
        if (rc) {
            long hdr[5] = {HDR_ERROR, (long)i, rc, 0, 0};
            char msg[MSG_LEN];
            snprintf(msg, sizeof msg, "%s", moe_errmsg()[0] ? moe_errmsg() : "failed");
            MPI_Send(hdr, 5, MPI_LONG, 0, TAG_HDR, g.comm);
            MPI_Send(msg, MSG_LEN, MPI_CHAR, 0, TAG_MSG, g.comm);
        } else {
            result_pack(res, d, l);
            long hdr[5] = {HDR_RESULT, (long)i, 0, (long)nd, (long)pt->E + 1};
            MPI_Send(hdr, 5, MPI_LONG, 0, TAG_HDR, g.comm);
            MPI_Send(d, (int)nd, MPI_DOUBLE, 0, TAG_DBL, g.comm);
            MPI_Send(l, pt->E + 1, MPI_LONG, 0, TAG_LNG, g.comm);
        }
        free(d);
        free(l);
        moe_point_result_free(res);
        if (rc)
            break;
    }
    long done[5] = {HDR_DONE, 0, 0, 0, 0};
    MPI_Send(done, 5, MPI_LONG, 0, TAG_HDR, g.comm);
    for (;;) { /* a STOP may come before the FIN */
        int ctl = 0;
        MPI_Recv(&ctl, 1, MPI_INT, 0, TAG_CTL, g.comm, MPI_STATUS_IGNORE);
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
        MPI_Bcast(&cmd, 1, MPI_LONG_LONG, 0, g.comm);
        if (cmd < 0)
            break;
        if ((size_t)cmd >= moe_spec_npoints(spec)) {
            g.desync = 1;
            return moe_fail(MOE_EINVAL, "every rank must run the same moesim on the same spec",
                            "rank 0 asked for point %lld of %zu (rank %d)", cmd + 1,
                            moe_spec_npoints(spec), g.rank);
        }
        const moe_point *pt = moe_spec_point(spec, (size_t)cmd);
        moe_clear_error();
        moe_point_result *res = moe_point_result_alloc(pt->E, pt->batches);
        /* no stop here: rank 0 decides, and its interruption reaches us through the agreement */
        int rc = ep_run_point(m, pt, NULL, res);
        moe_point_result_free(res);
        if (g.desync) /* out of step for good: moe_mpi_finalize aborts the job */
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

/* ---- the ep_ranks table ---- */

int moe_mpi_ep_schema(sqlite3 *db, const char *db_path)
{
    static const char *const sql =
        "CREATE TABLE IF NOT EXISTS ep_ranks (\n"
        "  point INTEGER NOT NULL REFERENCES points(id) ON DELETE CASCADE,\n"
        "  capacity TEXT NOT NULL,       -- 'global': the point's plan; 'per_rank': DeepSpeed's\n"
        "                                -- capacity per rank from its own tokens\n"
        "  rank INTEGER NOT NULL,\n"
        "  ranks INTEGER NOT NULL,\n"
        "  first_expert INTEGER NOT NULL, experts INTEGER NOT NULL,\n"
        "  first_token INTEGER NOT NULL, tokens_held INTEGER NOT NULL,\n"
        "  plan_capacity REAL,           -- slots per expert (per_rank: summed over ranks)\n"
        "  tokens REAL NOT NULL,         -- entries on the rank's experts per batch\n"
        "  rows_out REAL, rows_in REAL, rows_local REAL, -- dispatch rows per batch\n"
        "  bytes_sent REAL, bytes_recv REAL,             -- both all-to-alls, per batch\n"
        "  a2a_s REAL, expert_s REAL, pack_s REAL,       -- seconds per batch\n"
        "  claims REAL, dropped REAL,    -- per_rank: its tokens' claims; dropped by its capacity\n"
        "  PRIMARY KEY (point, capacity, rank)\n"
        ") STRICT;\n"
        "CREATE VIEW IF NOT EXISTS ep_summary AS SELECT p.id AS point, p.router,"
        " p.capacity_factor AS cf, p.distribution, p.shape, e.capacity, count(*) AS ranks,"
        " round(max(e.tokens) / nullif(avg(e.tokens), 0), 3) AS device_imbalance,"
        " CAST(sum(e.bytes_sent) AS INTEGER) AS bytes_sent,"
        " round(max(e.a2a_s) * 1e3, 3) AS a2a_ms, round(max(e.expert_s) * 1e3, 3) AS expert_ms,"
        " round(CASE e.capacity WHEN 'global' THEN p.assignment_drop_rate"
        " ELSE sum(e.dropped) / nullif(sum(e.claims), 0) END, 4) AS drop_rate"
        " FROM ep_ranks e JOIN points p ON p.id = e.point"
        " GROUP BY e.point, e.capacity ORDER BY e.point, e.capacity;\n";
    char *err = NULL;
    int s = sqlite3_exec(db, sql, NULL, NULL, &err);
    if (s != SQLITE_OK) {
        int rc = moe_fail(MOE_EDB, NULL, "cannot create the table ep_ranks: %s (%s)",
                          err ? err : sqlite3_errstr(s), db_path);
        sqlite3_free(err);
        return rc;
    }
    return MOE_OK;
}

int moe_mpi_ep_has_rows(sqlite3 *db)
{
    sqlite3_stmt *q = NULL;
    int has = 0;
    if (sqlite3_prepare_v2(db, "SELECT 1 FROM sqlite_master WHERE type = 'table' AND"
                               " name = 'ep_ranks'", -1, &q, NULL) == SQLITE_OK)
        has = sqlite3_step(q) == SQLITE_ROW;
    sqlite3_finalize(q);
    q = NULL;
    if (has && sqlite3_prepare_v2(db, "SELECT EXISTS (SELECT 1 FROM main.ep_ranks)", -1, &q,
                                  NULL) == SQLITE_OK)
        has = sqlite3_step(q) == SQLITE_ROW && sqlite3_column_int(q, 0);
    sqlite3_finalize(q);
    return has;
}
