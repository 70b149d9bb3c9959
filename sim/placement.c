/* placement.c: expert placement strategies (contiguous, round robin, greedy, EPLB).
 * Written from the semantics of deepseek-ai/EPLB eplb.py (balanced_packing,
 * replicate_experts, rebalance_experts_hierarchical, rebalance_experts); see docs/cluster.md.
 * Shapes: E logical experts, P physical slots, D devices, N nodes, G groups. */
#include "placement.h"

#include "moe.h"

#include <stdlib.h>
#include <string.h>

static const char *const kind_names[] = {"contiguous", "round_robin", "greedy", "eplb"};

int moe_placement_kind_parse(const char *name)
{
    for (int i = 0; i < 4; i++)
        if (strcmp(name, kind_names[i]) == 0)
            return i;
    return -1;
}

const char *moe_placement_kind_name(moe_place_kind kind)
{
    return (unsigned)kind < 4 ? kind_names[kind] : "?";
}

void moe_placement_free(moe_placement *pl)
{
    if (!pl)
        return;
    free(pl->phy2log);
    free(pl->phy_rank);
    free(pl->log_cnt);
    free(pl->log2phy);
    free(pl);
}

/* ---- EPLB building blocks ----------------------------------------------------------------- */

typedef struct {
    double w;
    int i;
} weighted;

/* Heaviest first; equal weights in index order (a stable descending sort). */
static int weighted_cmp(const void *a, const void *b)
{
    const weighted *x = a, *y = b;
    if (x->w != y->w)
        return x->w > y->w ? -1 : 1;
    return (x->i > y->i) - (x->i < y->i);
}

void moe_placement_pack(const double *w, int n, int packs, int *pack_index, int *rank_in_pack)
{
    int per = n / packs;
    if (per == 1) { /* eplb.py returns the identity here, whatever the weights */
        for (int i = 0; i < n; i++) {
            pack_index[i] = i;
            rank_in_pack[i] = 0;
        }
        return;
    }
    weighted *order = malloc((size_t)n * sizeof *order);
    double *pack_w = calloc((size_t)packs, sizeof *pack_w);
    int *pack_n = calloc((size_t)packs, sizeof *pack_n);
    if (!order || !pack_w || !pack_n) { /* callers size n by E: tiny; degrade to identity */
        for (int i = 0; i < n; i++) {
            pack_index[i] = i / per;
            rank_in_pack[i] = i % per;
        }
        goto out;
    }
    for (int i = 0; i < n; i++)
        order[i] = (weighted){w[i], i};
    qsort(order, (size_t)n, sizeof *order, weighted_cmp);
    for (int j = 0; j < n; j++) {
        int best = -1;
        for (int p = 0; p < packs; p++)
            if (pack_n[p] < per && (best < 0 || pack_w[p] < pack_w[best]))
                best = p;
        int item = order[j].i;
        pack_index[item] = best;
        rank_in_pack[item] = pack_n[best];
        pack_w[best] += w[item];
        pack_n[best]++;
    }
out:
    free(order);
    free(pack_w);
    free(pack_n);
}

void moe_placement_replicate(const double *w, int nlog, int nphy, int *phy2log, int *rank,
                             int *cnt)
{
    for (int e = 0; e < nlog; e++) {
        phy2log[e] = e;
        rank[e] = 0;
        cnt[e] = 1;
    }
    for (int p = nlog; p < nphy; p++) {
        int best = 0;
        for (int e = 1; e < nlog; e++)
            if (w[e] / cnt[e] > w[best] / cnt[best])
                best = e;
        phy2log[p] = best;
        rank[p] = cnt[best];
        cnt[best]++;
    }
}

/* ---- EPLB hierarchical policy ------------------------------------------------------------- */

typedef struct {
    int *log2mlog, *mlog2log; /* (E) node-major order of the logical experts and its inverse */
    int *gpi, *gri;           /* (G) node of each group, rank in the node */
    double *gw, *tpm, *tpp;   /* (G) group loads, (E/N) loads per node, (P/N) per slot */
    int *p2m, *prank, *mcnt;  /* (P/N), (P/N), (E/N) one node's replication */
    int *pi, *rip, *pp2p;     /* (P/N) one node's packing onto devices and its inverse */
} eplb_work;

static void eplb_work_free(eplb_work *w)
{
    void *all[] = {w->log2mlog, w->mlog2log, w->gpi, w->gri, w->gw, w->tpm, w->tpp,
                   w->p2m, w->prank, w->mcnt, w->pi, w->rip, w->pp2p};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        free(all[i]);
}

static int eplb_work_alloc(eplb_work *w, int E, int P, int G, int N)
{
    size_t e = (size_t)E, g = (size_t)G, en = (size_t)(E / N), pn = (size_t)(P / N);
    memset(w, 0, sizeof *w);
    w->log2mlog = malloc(e * sizeof(int));
    w->mlog2log = malloc(e * sizeof(int));
    w->gpi = malloc(g * sizeof(int));
    w->gri = malloc(g * sizeof(int));
    w->gw = malloc(g * sizeof(double));
    w->tpm = malloc(en * sizeof(double));
    w->tpp = malloc(pn * sizeof(double));
    w->p2m = malloc(pn * sizeof(int));
    w->prank = malloc(pn * sizeof(int));
    w->mcnt = malloc(en * sizeof(int));
    w->pi = malloc(pn * sizeof(int));
    w->rip = malloc(pn * sizeof(int));
    w->pp2p = malloc(pn * sizeof(int));
    if (!w->log2mlog || !w->mlog2log || !w->gpi || !w->gri || !w->gw || !w->tpm || !w->tpp ||
        !w->p2m || !w->prank || !w->mcnt || !w->pi || !w->rip || !w->pp2p) {
        eplb_work_free(w);
        return moe_fail(MOE_ENOMEM, NULL, "out of memory (EPLB placement of %d experts)", E);
    }
    return 0;
}

/* rebalance_experts_hierarchical for one layer: fills pl->phy2log, phy_rank, log_cnt. */
static int eplb_hierarchical(moe_placement *pl, const double *load, int G, int N)
{
    int E = pl->E, P = pl->P, D = pl->D;
    int gs = E / G, gpn = G / N, en = E / N, pn = P / N, dpn = D / N, ppd = P / D;
    eplb_work w;
    if (eplb_work_alloc(&w, E, P, G, N) != 0)
        return MOE_ENOMEM;
    /* Step 1: groups onto nodes; mlog numbers the experts node by node. */
    for (int g = 0; g < G; g++) {
        w.gw[g] = 0.0;
        for (int j = 0; j < gs; j++)
            w.gw[g] += load[g * gs + j];
    }
    moe_placement_pack(w.gw, G, N, w.gpi, w.gri);
    for (int e = 0; e < E; e++) {
        int g = e / gs;
        w.log2mlog[e] = (w.gpi[g] * gpn + w.gri[g]) * gs + e % gs;
        w.mlog2log[w.log2mlog[e]] = e;
    }
    for (int n = 0; n < N; n++) {
        /* Step 2: replicas of the heaviest experts within node n. */
        for (int j = 0; j < en; j++)
            w.tpm[j] = load[w.mlog2log[n * en + j]];
        moe_placement_replicate(w.tpm, en, pn, w.p2m, w.prank, w.mcnt);
        /* Step 3: the node's physical experts onto its devices. */
        for (int q = 0; q < pn; q++)
            w.tpp[q] = w.tpm[w.p2m[q]] / w.mcnt[w.p2m[q]];
        moe_placement_pack(w.tpp, pn, dpn, w.pi, w.rip);
        for (int q = 0; q < pn; q++)
            w.pp2p[w.pi[q] * ppd + w.rip[q]] = q;
        for (int q = 0; q < pn; q++) {
            int phy = w.pp2p[q];
            pl->phy2log[n * pn + q] = w.mlog2log[n * en + w.p2m[phy]];
            pl->phy_rank[n * pn + q] = w.prank[phy];
        }
        for (int j = 0; j < en; j++)
            pl->log_cnt[w.mlog2log[n * en + j]] = w.mcnt[j];
    }
    eplb_work_free(&w);
    return 0;
}

/* ---- the strategies ----------------------------------------------------------------------- */

static int check_shape(moe_place_kind kind, const double *load, int E, int R, int G, int N,
                       int D)
{
    if ((unsigned)kind > MOE_PLACE_EPLB)
        return moe_fail(MOE_EINVAL, NULL, "unknown placement %d", (int)kind);
    if (E < 1 || D < 1 || N < 1 || R < 0 || G < 1)
        return moe_fail(MOE_EINVAL, NULL,
                        "placement needs E, D, N, G >= 1 and R >= 0 (E=%d D=%d N=%d G=%d R=%d)",
                        E, D, N, G, R);
    if (R > 0 && kind != MOE_PLACE_EPLB)
        return moe_fail(MOE_EINVAL, "redundant experts need placement = eplb",
                        "redundant_experts = %d with placement %s", R,
                        moe_placement_kind_name(kind));
    if ((E + R) % D != 0)
        return moe_fail(MOE_EINVAL, NULL,
                        "experts plus redundant experts (%d) not a multiple of the devices (%d)",
                        E + R, D);
    if (D % N != 0)
        return moe_fail(MOE_EINVAL, NULL, "devices (%d) not a multiple of the nodes (%d)", D, N);
    if (kind == MOE_PLACE_EPLB && E % G != 0)
        return moe_fail(MOE_EINVAL, NULL, "experts (%d) not a multiple of the groups (%d)", E, G);
    if ((kind == MOE_PLACE_GREEDY || kind == MOE_PLACE_EPLB) && !load)
        return moe_fail(MOE_EINVAL, NULL, "placement %s needs expert loads",
                        moe_placement_kind_name(kind));
    return 0;
}

static void place_simple(moe_placement *pl, moe_place_kind kind, const double *load)
{
    int E = pl->E, D = pl->D, per = E / D;
    for (int p = 0; p < E; p++) {
        pl->phy_rank[p] = 0;
        pl->log_cnt[p] = 1;
    }
    if (kind == MOE_PLACE_CONTIGUOUS) {
        for (int p = 0; p < E; p++)
            pl->phy2log[p] = p;
    } else if (kind == MOE_PLACE_ROUND_ROBIN) {
        for (int e = 0; e < E; e++)
            pl->phy2log[(e % D) * per + e / D] = e;
    } else { /* greedy: capacity-constrained packing of the experts onto the devices */
        int *dev = malloc((size_t)E * sizeof *dev), *rank = malloc((size_t)E * sizeof *rank);
        if (dev && rank) {
            moe_placement_pack(load, E, D, dev, rank);
            for (int e = 0; e < E; e++)
                pl->phy2log[dev[e] * per + rank[e]] = e;
        } else {
            for (int p = 0; p < E; p++)
                pl->phy2log[p] = p;
        }
        free(dev);
        free(rank);
    }
}

moe_placement *moe_placement_alloc(moe_place_kind kind, const double *load, int E, int R,
                                   int G, int N, int D)
{
    if (check_shape(kind, load, E, R, G, N, D) != 0)
        return NULL;
    moe_placement *pl = calloc(1, sizeof *pl);
    if (!pl)
        goto oom;
    pl->E = E;
    pl->P = E + R;
    pl->D = D;
    pl->phy2log = malloc((size_t)pl->P * sizeof(int));
    pl->phy_rank = malloc((size_t)pl->P * sizeof(int));
    pl->log_cnt = malloc((size_t)E * sizeof(int));
    if (!pl->phy2log || !pl->phy_rank || !pl->log_cnt)
        goto oom;
    if (kind == MOE_PLACE_EPLB) {
        /* Hierarchical when the groups split evenly over the nodes, else the global policy. */
        int hier = G % N == 0;
        if (eplb_hierarchical(pl, load, hier ? G : 1, hier ? N : 1) != 0)
            goto fail;
    } else {
        place_simple(pl, kind, load);
    }
    pl->max_cnt = 1;
    for (int e = 0; e < E; e++)
        if (pl->log_cnt[e] > pl->max_cnt)
            pl->max_cnt = pl->log_cnt[e];
    pl->log2phy = malloc((size_t)E * (size_t)pl->max_cnt * sizeof(int));
    if (!pl->log2phy)
        goto oom;
    for (size_t i = 0; i < (size_t)E * (size_t)pl->max_cnt; i++)
        pl->log2phy[i] = -1;
    for (int p = 0; p < pl->P; p++)
        pl->log2phy[(size_t)pl->phy2log[p] * (size_t)pl->max_cnt + (size_t)pl->phy_rank[p]] = p;
    return pl;
oom:
    moe_fail(MOE_ENOMEM, NULL, "out of memory (placement of %d experts)", E);
fail:
    moe_placement_free(pl);
    return NULL;
}
