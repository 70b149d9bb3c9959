/* mpi_ep.c: the expert-parallel layer of moe_mpi.h (experts sharded over the ranks, tokens
 * moved with MPI_Alltoallv), the plan under DeepSpeed's per-rank capacity, and the pipeline
 * hook of an expert-parallel point (mpi_internal.h).
 *
 * Expert-parallel workspaces (moe_ep, allocated once per layer shape; Cc = slots per expert the
 * key spaces cover, C_max or P*C_max with per-rank plans; El = this rank's experts):
 *   send (Sx,D), ret (Sx,D)    dispatch rows this rank sends, and their expert outputs back
 *   recv (Rx,D), out (Rx,D)    rows it receives for its experts, and their outputs
 *   sgen, srow (E*Cc)          slot (e,s) -> send row, valid where sgen = the pass's stamp
 *   rgen (P*El*Cc)             (source rank, local slot) seen in the receive pass
 *   sub                        the plan of the received rows: (row, local expert, slot, 1, 1)
 *   mine, theirs (entries)     the plan's entries of this rank's tokens (the claims it sends)
 *                              and of its experts (the claims it receives), in plan order
 *   L                          moe_layer for El experts: h[e,s] = sum of the rows of (e,s)
 * Sx = rows of this rank's tokens at most (<= the plan's entries), Rx = entries at most. Buffers
 * are sized for the worst case but touched only as far as a plan fills them. The received rows
 * run through the pipeline's layer stage (moe_pipeline_layer_stage), each rank's routing under
 * per-rank capacity through its route stage (moe_pipeline_route_stage).
 *
 * Per-rank capacity (DeepSpeed): the routing draws of rank q's local routing come from stream
 * MOE_EP_STREAM + q of the point's seed.
 *
 * Padding to capacity (moe_ep_set_pad_to_capacity, the point's pad_to_capacity): the local
 * experts run C rows; a per-rank plan sends each rank's whole slot buffer (below). The padded
 * buffers grow to their fixed sizes at the first padded forward, before its agreement.
 */
#include "mpi_internal.h"

#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { MOE_EP_STREAM = 64 }; /* rank q's per-rank-capacity draws: stream 64 + q */

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
    size_t *mine, *theirs, nmine, ntheirs, nent; /* nent: capacity of both lists */
    unsigned stamp;
    long *scnt, *sdsp, *rcnt, *rdsp, *cur; /* (P) rows */
    int *ic, *id, *jc, *jd;                /* (P) MPI counts in floats */
    moe_layer *L;
    moe_plan *sub, *loc;
    int pad;                  /* pad_to_capacity: every local expert runs C rows */
    long *poff;               /* (P+1) slot offsets of the last per-rank plan's ranks */
    const moe_plan *pplan;    /* that plan (its layout: poff), NULL before one */
    size_t pplan_entries;     /* its entries when built */
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
    free(ep->mine);
    free(ep->theirs);
    free(ep->scnt);
    free(ep->sdsp);
    free(ep->rcnt);
    free(ep->rdsp);
    free(ep->cur);
    free(ep->ic);
    free(ep->id);
    free(ep->jc);
    free(ep->jd);
    free(ep->poff);
    moe_layer_free(ep->L);
    moe_plan_free(ep->sub);
    moe_plan_free(ep->loc);
    free(ep);
}

void *moe_mpi_xcalloc(size_t n, size_t size, int *bad)
{
    void *p = calloc(n ? n : 1, size);
    if (!p)
        *bad = 1;
    return p;
}

moe_ep *moe_ep_alloc(int T, int E, long C_max, int d, int f, int act, size_t cap_entries,
                     int per_rank)
{
    const int P = moe_mpi_g.size, rank = moe_mpi_g.rank;
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
    ep->ebeg = moe_mpi_xcalloc((size_t)P + 1, sizeof *ep->ebeg, &bad);
    ep->tbeg = moe_mpi_xcalloc((size_t)P + 1, sizeof *ep->tbeg, &bad);
    ep->eown = moe_mpi_xcalloc((size_t)E, sizeof *ep->eown, &bad);
    ep->town = moe_mpi_xcalloc((size_t)T, sizeof *ep->town, &bad);
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
    ep->sgen = moe_mpi_xcalloc(keys, sizeof *ep->sgen, &bad);
    ep->srow = moe_mpi_xcalloc(keys, sizeof *ep->srow, &bad);
    ep->rgen = moe_mpi_xcalloc(rkeys, sizeof *ep->rgen, &bad);
    ep->nent = ent;
    ep->mine = moe_mpi_xcalloc(ent, sizeof *ep->mine, &bad);
    ep->theirs = moe_mpi_xcalloc(ent, sizeof *ep->theirs, &bad);
    ep->scnt = moe_mpi_xcalloc((size_t)P, sizeof(long), &bad);
    ep->sdsp = moe_mpi_xcalloc((size_t)P, sizeof(long), &bad);
    ep->rcnt = moe_mpi_xcalloc((size_t)P, sizeof(long), &bad);
    ep->rdsp = moe_mpi_xcalloc((size_t)P, sizeof(long), &bad);
    ep->cur = moe_mpi_xcalloc((size_t)P, sizeof(long), &bad);
    ep->ic = moe_mpi_xcalloc((size_t)P, sizeof(int), &bad);
    ep->id = moe_mpi_xcalloc((size_t)P, sizeof(int), &bad);
    ep->jc = moe_mpi_xcalloc((size_t)P, sizeof(int), &bad);
    ep->jd = moe_mpi_xcalloc((size_t)P, sizeof(int), &bad);
    ep->poff = moe_mpi_xcalloc((size_t)P + 1, sizeof *ep->poff, &bad);
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

/* The claims this rank handles: the plan's entries of its tokens (mine) and of its experts
 * (theirs), in plan order; the only pass over the whole batch's entries. A rank of a real
 * expert-parallel layer holds its own tokens' routing and learns what it receives from the
 * counts; here every rank holds the global plan, and this one pass stands for that. */
static int ep_index(moe_ep *ep, const moe_plan *plan)
{
    const int t0 = ep->t0, t1 = ep->t0 + ep->tn, e0 = ep->e0, e1 = ep->e0 + ep->el;
    const moe_entry *en = plan->entries;
    const size_t ne = plan->n_entries;
    if (ne > ep->nent)
        return moe_fail(MOE_EINVAL, NULL, "%zu plan entries exceed the workspace of %zu "
                        "(moe_ep_forward)", ne, ep->nent);
    size_t nm = 0, nt = 0;
    for (size_t i = 0; i < ne; i++) {
        ep->mine[nm] = i;
        nm += en[i].token >= t0 && en[i].token < t1;
        ep->theirs[nt] = i;
        nt += en[i].expert >= e0 && en[i].expert < e1;
    }
    ep->nmine = nm;
    ep->ntheirs = nt;
    return MOE_OK;
}

/* row (D) += a * xt (D): a claim's share of its dispatch row */
static void add_scaled(float *row, float a, const float *xt, size_t D)
{
    for (size_t c = 0; c < D; c++)
        row[c] += a * xt[c];
}

/* Dispatch rows: one row per slot (e,s) this rank's tokens touch, grouped by the expert's rank
 * in order of first appearance in the plan, each the sum of dispatch_w * x[t] of its entries.
 * Fills send, scnt, sdsp and srow; *nsend rows in all. Reads the entries of mine only. */
static int ep_pack(moe_ep *ep, const moe_plan *plan, const float *x, long *nsend)
{
    const int P = ep->P;
    const size_t D = (size_t)ep->d;
    const long Cc = ep->Cc;
    const moe_entry *en = plan->entries;
    const size_t *mine = ep->mine, nm = ep->nmine;
    memset(ep->scnt, 0, (size_t)P * sizeof *ep->scnt);
    unsigned sa = next_stamp(ep);
    for (size_t m = 0; m < nm; m++) {
        const size_t i = mine[m];
        size_t key = (size_t)en[i].expert * (size_t)Cc + (size_t)en[i].slot;
        if (ep->sgen[key] != sa) {
            ep->sgen[key] = sa;
            ep->scnt[ep->eown[en[i].expert]]++;
        }
    }
    *nsend = prefix(ep->scnt, ep->sdsp, P);
    if ((size_t)*nsend > ep->sx)
        return moe_fail(MOE_EINVAL, NULL, "%ld dispatch rows exceed the workspace of %zu "
                        "(moe_ep_forward)", *nsend, ep->sx);
    memcpy(ep->cur, ep->sdsp, (size_t)P * sizeof *ep->cur);
    unsigned sb = next_stamp(ep);
    for (size_t m = 0; m < nm; m++) {
        const size_t i = mine[m];
        size_t key = (size_t)en[i].expert * (size_t)Cc + (size_t)en[i].slot;
        if (ep->sgen[key] != sb) {
            ep->sgen[key] = sb;
            ep->srow[key] = (int)ep->cur[ep->eown[en[i].expert]]++;
            memset(ep->send + (size_t)ep->srow[key] * D, 0, D * sizeof(float));
        }
        add_scaled(ep->send + (size_t)ep->srow[key] * D, (float)en[i].dispatch_w,
                   x + (size_t)en[i].token * D, D);
    }
    return MOE_OK;
}

/* What arrives: the rows for this rank's experts, in the same first-appearance order per
 * source rank, and the plan sub of the received rows (row, local expert, slot, 1, 1). Fills
 * rcnt, rdsp and sub; *nrecv rows, *tokens entries of this rank's experts. Reads the entries
 * of theirs only. */
static int ep_plan_recv(moe_ep *ep, const moe_plan *plan, long *nrecv, long *tokens)
{
    const int P = ep->P, e0 = ep->e0, el = ep->el;
    const long Cc = ep->Cc;
    const moe_entry *en = plan->entries;
    const size_t *theirs = ep->theirs, nt = ep->ntheirs;
    memset(ep->rcnt, 0, (size_t)P * sizeof *ep->rcnt);
    *tokens = (long)nt;
    unsigned ra = next_stamp(ep);
    for (size_t m = 0; m < nt; m++) {
        const size_t i = theirs[m];
        int e = en[i].expert;
        int src = ep->town[en[i].token];
        size_t key = ((size_t)src * (size_t)el + (size_t)(e - e0)) * (size_t)Cc +
                     (size_t)en[i].slot;
        if (ep->rgen[key] != ra) {
            ep->rgen[key] = ra;
            ep->rcnt[src]++;
        }
    }
    *nrecv = prefix(ep->rcnt, ep->rdsp, P);
    if ((size_t)*nrecv > ep->rx)
        return moe_fail(MOE_EINVAL, NULL, "%ld received rows exceed the workspace of %zu "
                        "(moe_ep_forward)", *nrecv, ep->rx);
    int rc = moe_plan_reset(ep->sub, (int)*nrecv, el, 0);
    if (rc)
        return rc;
    ep->sub->capacity = plan->capacity;
    memcpy(ep->cur, ep->rdsp, (size_t)P * sizeof *ep->cur);
    unsigned rb = next_stamp(ep);
    for (size_t m = 0; m < nt; m++) {
        const size_t i = theirs[m];
        int e = en[i].expert;
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
    return MOE_OK;
}

/* ---- padding to capacity (pad_to_capacity) ----
 * Every local expert runs C rows, C = the plan's capacity (the layer's padding, layer.h). What
 * crosses the all-to-alls depends on the plan's slot layout:
 *   - a per-rank-capacity plan (the last one moe_ep_plan_per_rank built on this layer): rank q
 *     owns the slots [off_q, off_q + C_q) of every expert and sends all of them, zero rows
 *     included: the (E, C_q, D) buffer DeepSpeed's MOELayer (sharded_moe.py: einsum "sec,sm->ecm"
 *     then _AllToAll) and Tutel (fast_encode then all_to_all) send, El_r x C_q rows to rank r in
 *     (local expert, slot) order; the combine sends the same rows back;
 *   - any other plan (one capacity over the whole batch): its slots belong to no rank's buffer,
 *     so the rows sent are the filled slots as unpadded, and the empty ones are the zero rows the
 *     layer adds where the expert runs.
 * The entries of the received rows' plan are those of the unpadded layer (the filled slots), so
 * each expert's kept rows go through the same GEMM pair and y keeps its bits. */

int moe_ep_set_pad_to_capacity(moe_ep *ep, int on)
{
    ep->pad = on != 0;
    moe_layer_set_pad_to_capacity(ep->L, ep->pad);
    return MOE_OK;
}

/* 1 when plan is padded in the per-rank layout (poff). */
static int ep_pad_layout(const moe_ep *ep, const moe_plan *plan)
{
    return ep->pad && !plan->dense && plan == ep->pplan &&
           plan->n_entries == ep->pplan_entries && plan->capacity == ep->poff[ep->P];
}

/* Room for sx send rows and rx received rows (the padded layout's fixed counts); the layer of the
 * received rows grows with them. Before the forward's agreement: a failure fails every rank. */
static int ep_reserve(moe_ep *ep, size_t sx, size_t rx)
{
    const size_t D = (size_t)ep->d;
    if (sx * D > INT_MAX || rx * D > INT_MAX || rx > INT_MAX)
        return moe_fail(MOE_EINVAL, "use fewer tokens, a smaller width or more ranks",
                        "padded expert-parallel buffers of %zu x %zu floats exceed MPI's int "
                        "counts (moe_ep_forward)", rx > sx ? rx : sx, D);
    if (sx > ep->sx) {
        float *a = realloc(ep->send, sx * D * sizeof *a);
        if (a)
            ep->send = a;
        float *b = a ? realloc(ep->ret, sx * D * sizeof *b) : NULL;
        if (!b)
            return moe_fail(MOE_ENOMEM, NULL, "out of memory for %zu padded dispatch rows "
                            "(moe_ep_forward)", sx);
        ep->ret = b;
        ep->sx = sx;
    }
    if (rx > ep->rx) {
        float *a = realloc(ep->recv, rx * D * sizeof *a);
        if (a)
            ep->recv = a;
        float *b = a ? realloc(ep->out, rx * D * sizeof *b) : NULL;
        if (b)
            ep->out = b;
        moe_layer *L = b ? moe_layer_alloc((int)rx, ep->el, ep->Cc, ep->d, ep->f, ep->act) : NULL;
        if (!L)
            return moe_fail(MOE_ENOMEM, NULL, "out of memory for %zu padded received rows "
                            "(moe_ep_forward)", rx);
        moe_layer_free(ep->L);
        ep->L = L;
        moe_layer_set_pad_to_capacity(L, ep->pad);
        ep->rx = rx;
    }
    return MOE_OK;
}

static int ep_reserve_padded(moe_ep *ep)
{
    const long *off = ep->poff;
    const long Cme = off[ep->rank + 1] - off[ep->rank];
    return ep_reserve(ep, (size_t)ep->E * (size_t)Cme, (size_t)ep->el * (size_t)off[ep->P]);
}

/* ep_pack in the padded per-rank layout: El_r x C_me rows to each rank r, row (j, s) of rank r's
 * block at sdsp[r] + j C_me + (s - off_me), every row zeroed first, then each entry of mine adds
 * dispatch_w * x[t] to its slot's row, in plan order (the sums of the unpadded rows). */
static int ep_pack_padded(moe_ep *ep, const moe_plan *plan, const float *x, long *nsend)
{
    const int P = ep->P;
    const size_t D = (size_t)ep->d;
    const long Cc = ep->Cc, base = ep->poff[ep->rank];
    const long Cme = ep->poff[ep->rank + 1] - base;
    const moe_entry *en = plan->entries;
    for (int r = 0; r < P; r++)
        ep->scnt[r] = (long)(ep->ebeg[r + 1] - ep->ebeg[r]) * Cme;
    *nsend = prefix(ep->scnt, ep->sdsp, P);
    memset(ep->send, 0, (size_t)*nsend * D * sizeof *ep->send);
    for (size_t m = 0; m < ep->nmine; m++) {
        const size_t i = ep->mine[m];
        const int e = en[i].expert, r = ep->eown[e];
        if (en[i].slot < base || en[i].slot >= base + Cme)
            return moe_fail(MOE_EINVAL, NULL, "slot %d of expert %d outside rank %d's slots "
                            "%ld..%ld of the per-rank plan (moe_ep_forward)", en[i].slot, e,
                            ep->rank, base, base + Cme - 1);
        size_t key = (size_t)e * (size_t)Cc + (size_t)en[i].slot;
        ep->srow[key] = (int)(ep->sdsp[r] + (long)(e - ep->ebeg[r]) * Cme + (en[i].slot - base));
        add_scaled(ep->send + (size_t)ep->srow[key] * D, (float)en[i].dispatch_w,
                   x + (size_t)en[i].token * D, D);
    }
    return MOE_OK;
}

/* ep_plan_recv in the padded per-rank layout: El x C_q rows from each rank q, and the plan of
 * the rows that carry claims (one entry per filled slot, in plan order, as unpadded). */
static int ep_plan_recv_padded(moe_ep *ep, const moe_plan *plan, long *nrecv, long *tokens)
{
    const int P = ep->P, e0 = ep->e0, el = ep->el;
    const long Cc = ep->Cc, *off = ep->poff;
    const moe_entry *en = plan->entries;
    for (int q = 0; q < P; q++)
        ep->rcnt[q] = (long)el * (off[q + 1] - off[q]);
    *nrecv = prefix(ep->rcnt, ep->rdsp, P);
    *tokens = (long)ep->ntheirs;
    int rc = moe_plan_reset(ep->sub, (int)*nrecv, el, 0);
    if (rc)
        return rc;
    ep->sub->capacity = plan->capacity;
    unsigned rb = next_stamp(ep);
    for (size_t m = 0; m < ep->ntheirs; m++) {
        const size_t i = ep->theirs[m];
        const int j = en[i].expert - e0, src = ep->town[en[i].token];
        const long Cq = off[src + 1] - off[src];
        size_t key = ((size_t)src * (size_t)el + (size_t)j) * (size_t)Cc + (size_t)en[i].slot;
        if (ep->rgen[key] == rb)
            continue;
        ep->rgen[key] = rb;
        long row = ep->rdsp[src] + (long)j * Cq + (en[i].slot - off[src]);
        if ((rc = moe_plan_push(ep->sub, (int32_t)row, j, en[i].slot, 1.0, 1.0)))
            return rc;
    }
    return MOE_OK;
}

/* Combine: y[t] = sum of combine_w * (the returned output of its row) over the entries of this
 * rank's tokens (mine), in plan order. */
static void ep_combine(const moe_ep *ep, const moe_plan *plan, float *y)
{
    const size_t D = (size_t)ep->d;
    const long Cc = ep->Cc;
    const moe_entry *en = plan->entries;
    memset(y + (size_t)ep->t0 * D, 0, (size_t)ep->tn * D * sizeof *y);
    for (size_t m = 0; m < ep->nmine; m++) {
        const size_t i = ep->mine[m];
        size_t key = (size_t)en[i].expert * (size_t)Cc + (size_t)en[i].slot;
        float a = (float)en[i].combine_w, *yt = y + (size_t)en[i].token * D;
        const float *o = ep->ret + (size_t)ep->srow[key] * D;
        for (size_t c = 0; c < D; c++)
            yt[c] += a * o[c];
    }
}

int moe_ep_local_work(moe_ep *ep, const moe_plan *plan, const float *x, float *y,
                      double *t_dispatch, double *t_combine)
{
    int rc = check_ep_plan(ep, plan);
    if (rc)
        return rc;
    long nsend, nrecv, tokens;
    double t0 = moe_now();
    if ((rc = ep_index(ep, plan)) || (rc = ep_pack(ep, plan, x, &nsend)) ||
        (rc = ep_plan_recv(ep, plan, &nrecv, &tokens)))
        return rc;
    double t1 = moe_now();
    memcpy(ep->ret, ep->send, (size_t)nsend * (size_t)ep->d * sizeof *ep->ret);
    double t2 = moe_now();
    ep_combine(ep, plan, y);
    *t_dispatch = t1 - t0;
    *t_combine = moe_now() - t2;
    return MOE_OK;
}

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
static void flush_lines(const void *p, size_t bytes)
{
    const char *c = p;
    for (size_t i = 0; i < bytes; i += 64)
        _mm_clflush(c + i);
    if (bytes)
        _mm_clflush(c + bytes - 1);
}
#endif

int moe_ep_flush(const moe_ep *ep, const moe_plan *plan, const float *x, const float *y)
{
#if defined(__x86_64__) || defined(__i386__)
    const size_t D = (size_t)ep->d, keys = (size_t)ep->E * (size_t)ep->Cc;
    const size_t rkeys = (size_t)ep->P * (size_t)ep->el * (size_t)ep->Cc;
    flush_lines(ep, sizeof *ep);
    flush_lines(ep->send, ep->sx * D * sizeof(float));
    flush_lines(ep->ret, ep->sx * D * sizeof(float));
    flush_lines(ep->sgen, keys * sizeof *ep->sgen);
    flush_lines(ep->srow, keys * sizeof *ep->srow);
    flush_lines(ep->rgen, rkeys * sizeof *ep->rgen);
    flush_lines(ep->mine, ep->nent * sizeof *ep->mine);
    flush_lines(ep->theirs, ep->nent * sizeof *ep->theirs);
    flush_lines(ep->eown, (size_t)ep->E * sizeof *ep->eown);
    flush_lines(ep->town, (size_t)ep->T * sizeof *ep->town);
    flush_lines(ep->scnt, (size_t)ep->P * sizeof *ep->scnt);
    flush_lines(ep->sdsp, (size_t)ep->P * sizeof *ep->sdsp);
    flush_lines(ep->rcnt, (size_t)ep->P * sizeof *ep->rcnt);
    flush_lines(ep->rdsp, (size_t)ep->P * sizeof *ep->rdsp);
    flush_lines(ep->cur, (size_t)ep->P * sizeof *ep->cur);
    flush_lines(ep->sub, sizeof *ep->sub);
    flush_lines(ep->sub->entries, ep->sub->cap_entries * sizeof *ep->sub->entries);
    flush_lines(plan, sizeof *plan);
    flush_lines(plan->entries, plan->n_entries * sizeof *plan->entries);
    flush_lines(x, (size_t)ep->T * D * sizeof *x);
    flush_lines(y, (size_t)ep->T * D * sizeof *y);
    _mm_mfence();
    return 1;
#else
    (void)ep;
    (void)plan;
    (void)x;
    (void)y;
    return 0;
#endif
}

/* Every rank here before any goes on (with MPI running; untimed). */
static void ep_sync(void)
{
#ifdef MOESIM_MPI
    if (moe_mpi_g.active)
        MPI_Barrier(moe_mpi_g.comm);
#endif
}

/* The statistics of one forward: rows nsend sent and nrecv received, tokens entries of this
 * rank's experts; times (moe_now) tp at its start, ts[0] and ts[1] around the dispatch
 * all-to-all, ts[2] at the end of the experts, ts[5] at the start of the combine (every rank's
 * experts done), ts[3] after the combine all-to-all, ts[4] at the end of the combine. */
static void ep_stats(const moe_ep *ep, long nsend, long nrecv, long tokens, double tp,
                     const double ts[6], moe_ep_stats *st)
{
    const int me = ep->rank;
    memset(st, 0, sizeof *st);
    st->rank = me;
    st->P = ep->P;
    st->e0 = ep->e0;
    st->experts = ep->el;
    st->t0 = ep->t0;
    st->held = ep->tn;
    st->tokens = tokens;
    st->rows_local = ep->scnt[me];
    st->rows_out = nsend - ep->scnt[me];
    st->rows_in = nrecv - ep->rcnt[me];
    st->bytes_sent = st->bytes_recv =
        (double)(st->rows_out + st->rows_in) * (double)ep->d * sizeof(float);
    st->a2a_s = (ts[1] - ts[0]) + (ts[3] - ts[5]);
    st->expert_s = ts[2] - ts[1];
    st->pack_s = (ts[0] - tp) + (ts[4] - ts[3]);
    st->dispatch_s = ts[1] - tp;
    st->combine_s = ts[4] - ts[5];
}

/* moe_ep_forward with this rank's status so far (rc_in != 0: fail, together with the others). */
static int ep_forward_rc(moe_ep *ep, const moe_experts *w, const moe_plan *plan, const float *x,
                         float *y, int gather, moe_ep_stats *st, int rc_in)
{
    int rc = rc_in ? rc_in : check_ep_plan(ep, plan);
    if (!rc && (!w || w->E != ep->E || w->d != ep->d || w->f != ep->f || w->act != ep->act))
        rc = moe_fail(MOE_EINVAL, NULL, "expert weights do not match the expert-parallel layer "
                      "(moe_ep_forward)");
    const int padded = !rc && ep_pad_layout(ep, plan);
    if (padded)
        rc = ep_reserve_padded(ep);
    if ((rc = moe_mpi_agree_fwd(rc)))
        return rc;
    const int e0 = ep->e0, el = ep->el;
    const size_t D = (size_t)ep->d, FW = (size_t)ep->fw, F = (size_t)ep->f;
    ep_sync(); /* each phase is timed from a barrier, as moesim calibrate times its repeats */
    double ts[6], tp = moe_now();
    long nsend, nrecv, tokens;

    /* ---- dispatch ---- */
    if ((rc = ep_index(ep, plan)))
        return rc;
    if (padded ? (rc = ep_pack_padded(ep, plan, x, &nsend)) ||
                     (rc = ep_plan_recv_padded(ep, plan, &nrecv, &tokens))
               : (rc = ep_pack(ep, plan, x, &nsend)) ||
                     (rc = ep_plan_recv(ep, plan, &nrecv, &tokens)))
        return rc;
    ts[0] = moe_now();
    moe_mpi_a2av_rows(ep->send, ep->scnt, ep->sdsp, ep->recv, ep->rcnt, ep->rdsp, D, ep->ic,
                      ep->id, ep->jc, ep->jd);
    ts[1] = moe_now();

    /* ---- experts: this rank's FFNs on the received rows ---- */
    const moe_experts wl = {el, ep->d, ep->f, ep->act, w->w1 + (size_t)e0 * D * FW,
                            w->b1 + (size_t)e0 * FW, w->w2 + (size_t)e0 * F * D,
                            w->b2 + (size_t)e0 * D, NULL};
    /* (padded, the experts run C rows even when no row arrives) */
    const int run = nrecv > 0 || (ep->pad && !plan->dense && plan->capacity > 0);
    if (run && nrecv == 0) { /* the layer runs no plan of 0 rows: one zero row, no entry */
        ep->sub->n = 1;
        memset(ep->recv, 0, D * sizeof *ep->recv);
    }
    if (run && (rc = moe_pipeline_layer_stage(ep->L, &wl, ep->sub, ep->recv, ep->out, NULL)))
        return rc; /* (cannot fail on a valid plan: shapes checked above) */
    ts[2] = moe_now();
    ep_sync(); /* the combine is timed from the moment every rank's experts are done */
    ts[5] = moe_now();

    /* ---- combine: outputs back in the same row order; y[t] += combine_w * out ---- */
    moe_mpi_a2av_rows(ep->out, ep->rcnt, ep->rdsp, ep->ret, ep->scnt, ep->sdsp, D, ep->ic,
                      ep->id, ep->jc, ep->jd);
    ts[3] = moe_now();
    ep_combine(ep, plan, y);
    ts[4] = moe_now();
    if (gather)
        moe_mpi_allgather_rows(y, ep->tbeg, D, ep->ic, ep->id);
    if (st) {
        ep_stats(ep, nsend, nrecv, tokens, tp, ts, st);
        st->rows_run = run ? (long)moe_layer_rows_run(ep->L) : 0;
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
    ep->pplan = NULL;
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
        ep->poff[q] = off;
        if ((rc = moe_pipeline_route_stage(r, &iq, lp, NULL)))
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
    ep->poff[ep->P] = off;
    ep->pplan = out;
    ep->pplan_entries = out->n_entries;
    return MOE_OK;
}

/* ---- the expert-parallel point: the pipeline hook ---- */

struct moe_ep_point {
    moe_pipeline_ep hooks;
    moe_ep *ep;
    moe_router *r;
    gsl_rng **rngs;   /* (P) or NULL */
    moe_plan *uplan;  /* the per-rank-capacity plan */
    float *yscratch;  /* (T,D) its output (not kept) */
    long *claims, *dropped; /* (P) */
    double acc[MOE_EP_NMODES][MOE_EP_NFIELDS];
    int nb, P;
};

static void ep_point_clear(moe_ep_point *c)
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
    moe_pipeline_ep hooks = c->hooks;
    memset(c, 0, sizeof *c);
    c->hooks = hooks;
}

static int ep_begin(void *ctx, const moe_pipeline_cfg *cfg, moe_router *r, long C_max,
                    size_t cap)
{
    moe_ep_point *c = ctx;
    ep_point_clear(c);
    const moe_experts *w = cfg->w;
    c->P = moe_mpi_g.size;
    c->r = r;
    c->ep = moe_ep_alloc(cfg->T, w->E, C_max, w->d, w->f, w->act, cap, 1);
    if (!c->ep)
        return MOE_EINVAL;
    moe_ep_set_pad_to_capacity(c->ep, cfg->opts->pad_to_capacity);
    int bad = 0;
    c->uplan = moe_plan_alloc(cfg->T, w->E, cap * (size_t)c->P);
    c->yscratch = malloc((size_t)cfg->T * (size_t)w->d * sizeof *c->yscratch);
    c->claims = moe_mpi_xcalloc((size_t)c->P, sizeof *c->claims, &bad);
    c->dropped = moe_mpi_xcalloc((size_t)c->P, sizeof *c->dropped, &bad);
    if ((cfg->rtype->flags & MOE_RF_USES_RNG) || cfg->opts->noise_std > 0.0 ||
        cfg->opts->select == MOE_SELECT_RSAMPLE) {
        c->rngs = moe_mpi_xcalloc((size_t)c->P, sizeof *c->rngs, &bad);
        for (int q = 0; !bad && q < c->P; q++)
            if (!(c->rngs[q] = moe_rng_alloc(cfg->seed, MOE_EP_STREAM + (uint64_t)q)))
                bad = 1;
    }
    if (bad || !c->uplan || !c->yscratch)
        return moe_fail(MOE_ENOMEM, NULL, "out of memory (expert-parallel point %s)",
                        cfg->label ? cfg->label : "");
    return MOE_OK;
}

static void ep_accumulate(double *acc, const moe_ep_stats *st, long capacity)
{
    acc[MOE_EP_FIRST_EXPERT] = st->e0;
    acc[MOE_EP_EXPERTS] = st->experts;
    acc[MOE_EP_FIRST_TOKEN] = st->t0;
    acc[MOE_EP_TOKENS_HELD] = st->held;
    acc[MOE_EP_PLAN_CAPACITY] += (double)capacity;
    acc[MOE_EP_TOKENS] += (double)st->tokens;
    acc[MOE_EP_ROWS_OUT] += (double)st->rows_out;
    acc[MOE_EP_ROWS_IN] += (double)st->rows_in;
    acc[MOE_EP_ROWS_LOCAL] += (double)st->rows_local;
    acc[MOE_EP_BYTES_SENT] += st->bytes_sent;
    acc[MOE_EP_BYTES_RECV] += st->bytes_recv;
    acc[MOE_EP_A2A_S] += st->a2a_s;
    acc[MOE_EP_EXPERT_S] += st->expert_s;
    acc[MOE_EP_PACK_S] += st->pack_s;
}

static int ep_forward(void *ctx, const moe_experts *w, const moe_plan *plan,
                      const moe_route_in *in, const float *x, float *y, moe_phase_times *tm)
{
    moe_ep_point *c = ctx;
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
    ep_accumulate(c->acc[MOE_EP_GLOBAL], &st, plan->capacity);
    /* the same batch under DeepSpeed's per-rank capacity: measured, not kept */
    rc = moe_ep_plan_per_rank(c->ep, c->r, in, c->rngs, c->uplan, c->claims, c->dropped);
    if ((rc = ep_forward_rc(c->ep, w, c->uplan, x, c->yscratch, 0, &st, rc)))
        return rc;
    ep_accumulate(c->acc[MOE_EP_PER_RANK], &st, c->uplan->capacity);
    c->acc[MOE_EP_PER_RANK][MOE_EP_CLAIMS] += (double)c->claims[moe_mpi_g.rank];
    c->acc[MOE_EP_PER_RANK][MOE_EP_DROPPED] += (double)c->dropped[moe_mpi_g.rank];
    c->nb++;
    return MOE_OK;
}

moe_ep_point *moe_ep_point_alloc(void)
{
    moe_ep_point *c = calloc(1, sizeof *c);
    if (!c) {
        moe_fail(MOE_ENOMEM, NULL, "out of memory (expert-parallel point)");
        return NULL;
    }
    c->hooks = (moe_pipeline_ep){c, ep_begin, ep_forward};
    return c;
}

void moe_ep_point_free(moe_ep_point *c)
{
    if (!c)
        return;
    ep_point_clear(c);
    free(c);
}

const moe_pipeline_ep *moe_ep_point_hooks(moe_ep_point *c) { return &c->hooks; }

void moe_ep_point_means(const moe_ep_point *c, double *v)
{
    const double nb = c->nb > 0 ? (double)c->nb : 1.0;
    for (int mo = 0; mo < MOE_EP_NMODES; mo++)
        for (int f = 0; f < MOE_EP_NFIELDS; f++) {
            double x = c->acc[mo][f];
            if (f != MOE_EP_FIRST_EXPERT && f != MOE_EP_EXPERTS && f != MOE_EP_FIRST_TOKEN &&
                f != MOE_EP_TOKENS_HELD)
                x /= nb;
            v[mo * MOE_EP_NFIELDS + f] = x;
        }
    /* per token shard: only known per rank's plan */
    v[MOE_EP_GLOBAL * MOE_EP_NFIELDS + MOE_EP_CLAIMS] = NAN;
    v[MOE_EP_GLOBAL * MOE_EP_NFIELDS + MOE_EP_DROPPED] = NAN;
}
