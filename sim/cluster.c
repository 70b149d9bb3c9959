/* cluster.c: the cluster model of expert parallelism (cluster.h, docs/cluster.md).
 *
 * Dispatch follows the hierarchical all-to-all of DeepSeek-V3 (DeepEP's internode kernels): a
 * token goes once over the network to each remote node holding one of its experts, to the
 * device with the sender's local index there (the relay), and is forwarded over the intra-node
 * link to every other device of that node that needs it; within its own node it goes straight
 * to each device. A device receives one copy of a token however many of its experts the token
 * claims. Combine sends the same bytes back the same way. A topology with dispatch = per_claim
 * sends instead one copy per claim straight to the expert's device (Megatron's alltoall
 * dispatcher, moesim's --expert-parallel). */
#include "cluster.h"

#include <stdlib.h>
#include <string.h>

int moe_cluster_topo_check(const moe_cluster_topo *t, const char *where)
{
    if (t->nodes < 1 || t->devices_per_node < 1 || t->dtype_bytes < 1)
        return moe_fail(MOE_EINVAL, NULL, "nodes, devices_per_node and dtype_bytes must be >= 1 "
                        "(%s)", where);
    if (t->nodes > 4096 || t->devices_per_node > 4096 || t->nodes * t->devices_per_node > 16384)
        return moe_fail(MOE_EINVAL, NULL, "at most 16384 devices (%d x %d) (%s)", t->nodes,
                        t->devices_per_node, where);
    if (!(t->intra_gbps > 0) || !(t->inter_gbps > 0) || !(t->intra_latency_us >= 0) ||
        !(t->inter_latency_us >= 0) || t->intra_gbps > 1e9 || t->inter_gbps > 1e9 ||
        t->intra_latency_us > 1e9 || t->inter_latency_us > 1e9)
        return moe_fail(MOE_EINVAL, NULL, "bandwidths must be in (0, 1e9] Gbit/s and latencies "
                        "in [0, 1e9] us (%s)", where);
    if (!(t->pack_latency_us >= 0 && t->pack_latency_us <= 1e9) ||
        !(t->pack_row_ns >= 0 && t->pack_row_ns <= 1e9) ||
        !(t->pack_gbps >= 0 && t->pack_gbps <= 1e9) ||
        !(t->unpack_latency_us >= 0 && t->unpack_latency_us <= 1e9) ||
        !(t->unpack_row_ns >= 0 && t->unpack_row_ns <= 1e9) ||
        !(t->unpack_gbps >= 0 && t->unpack_gbps <= 1e9) ||
        !(t->warm_pack_latency_us >= 0 && t->warm_pack_latency_us <= 1e9) ||
        !(t->warm_pack_row_ns >= 0 && t->warm_pack_row_ns <= 1e9) ||
        !(t->warm_pack_gbps >= 0 && t->warm_pack_gbps <= 1e9) ||
        !(t->warm_unpack_latency_us >= 0 && t->warm_unpack_latency_us <= 1e9) ||
        !(t->warm_unpack_row_ns >= 0 && t->warm_unpack_row_ns <= 1e9) ||
        !(t->warm_unpack_gbps >= 0 && t->warm_unpack_gbps <= 1e9) ||
        !(t->cache_mb >= 0 && t->cache_mb <= 1e9))
        return moe_fail(MOE_EINVAL, NULL, "pack_latency_us, pack_row_ns, pack_gbps, their "
                        "unpack_* and warm_* terms and cache_mb must be in [0, 1e9] (%s)",
                        where);
    if (t->cores < 0 || t->cores > 1 << 20)
        return moe_fail(MOE_EINVAL, NULL, "cores must be in [0, 1048576] (%s)", where);
    if (!t->measured && !(t->device_tflops > 0 && t->device_tflops <= 1e9))
        return moe_fail(MOE_EINVAL, NULL, "device_tflops must be in (0, 1e9] or measured (%s)",
                        where);
    return MOE_OK;
}

void moe_cluster_sim_free(moe_cluster_sim *cs)
{
    if (!cs)
        return;
    void *all[] = {cs->tokens_in,  cs->rows,       cs->packed,     cs->t_pack,
                   cs->t_unpack,   cs->intra_send, cs->intra_recv, cs->inter_send,
                   cs->inter_recv, cs->t_dispatch, cs->t_experts,  cs->t_combine,
                   cs->node_bytes, cs->nodes_hist, cs->tok_start,  cs->tok_ent,
                   cs->dev_stamp,  cs->node_stamp, cs->pair_intra, cs->pair_inter,
                   cs->warm};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        free(all[i]);
    free(cs);
}

moe_cluster_sim *moe_cluster_sim_alloc(const moe_cluster_topo *t)
{
    if (moe_cluster_topo_check(t, t->name) != 0)
        return NULL;
    moe_cluster_sim *cs = calloc(1, sizeof *cs);
    if (!cs)
        goto oom;
    const size_t D = (size_t)t->nodes * (size_t)t->devices_per_node, N = (size_t)t->nodes;
    cs->D = (int)D;
    cs->N = (int)N;
    cs->tokens_in = malloc(D * sizeof(long));
    cs->rows = malloc(D * sizeof(long));
    cs->packed = malloc(D * sizeof(long));
    cs->t_pack = malloc(D * sizeof(double));
    cs->t_unpack = malloc(D * sizeof(double));
    cs->intra_send = malloc(D * sizeof(double));
    cs->intra_recv = malloc(D * sizeof(double));
    cs->inter_send = malloc(D * sizeof(double));
    cs->inter_recv = malloc(D * sizeof(double));
    cs->t_dispatch = malloc(D * sizeof(double));
    cs->t_experts = malloc(D * sizeof(double));
    cs->t_combine = malloc(D * sizeof(double));
    cs->node_bytes = malloc(N * N * sizeof(double));
    cs->nodes_hist = malloc((N + 1) * sizeof(long));
    cs->dev_stamp = malloc(D * sizeof(int));
    cs->node_stamp = malloc(N * sizeof(int));
    cs->pair_intra = malloc(D * D);
    cs->pair_inter = malloc(D * D);
    cs->warm = malloc(D);
    if (!cs->warm || !cs->tokens_in || !cs->rows || !cs->packed || !cs->t_pack || !cs->t_unpack ||
        !cs->intra_send || !cs->intra_recv || !cs->inter_send ||
        !cs->inter_recv || !cs->t_dispatch || !cs->t_experts || !cs->t_combine ||
        !cs->node_bytes || !cs->nodes_hist || !cs->dev_stamp || !cs->node_stamp ||
        !cs->pair_intra || !cs->pair_inter)
        goto oom;
    return cs;
oom:
    moe_cluster_sim_free(cs);
    moe_fail(MOE_ENOMEM, NULL, "out of memory (cluster %s)", t->name);
    return NULL;
}

void moe_cluster_sim_set_pad(moe_cluster_sim *cs, int on) { cs->pad = on != 0; }

void moe_cluster_add_load(const moe_plan *plan, double *load)
{
    for (size_t i = 0; i < plan->n_entries; i++)
        load[plan->entries[i].expert] += 1.0;
}

/* Group the plan's claims by token (counting sort, plan order kept within a token). */
static int group_by_token(moe_cluster_sim *cs, const moe_plan *plan)
{
    const int T = plan->n;
    if (T + 1 > cs->T_cap) {
        int *p = realloc(cs->tok_start, ((size_t)T + 1) * sizeof(int));
        if (!p)
            return moe_fail(MOE_ENOMEM, NULL, "out of memory (cluster model, %d tokens)", T);
        cs->tok_start = p;
        cs->T_cap = T + 1;
    }
    if (plan->n_entries > cs->ent_cap) {
        int *p = realloc(cs->tok_ent, plan->n_entries * sizeof(int));
        if (!p)
            return moe_fail(MOE_ENOMEM, NULL, "out of memory (cluster model, %zu claims)",
                            plan->n_entries);
        cs->tok_ent = p;
        cs->ent_cap = plan->n_entries;
    }
    memset(cs->tok_start, 0, ((size_t)T + 1) * sizeof(int));
    for (size_t i = 0; i < plan->n_entries; i++)
        cs->tok_start[plan->entries[i].token + 1]++;
    for (int t = 0; t < T; t++)
        cs->tok_start[t + 1] += cs->tok_start[t];
    /* each token's start counts up to its end while filling, then everything shifts back */
    for (size_t i = 0; i < plan->n_entries; i++)
        cs->tok_ent[cs->tok_start[plan->entries[i].token]++] = (int)i;
    for (int t = T; t > 0; t--)
        cs->tok_start[t] = cs->tok_start[t - 1];
    cs->tok_start[0] = 0;
    return MOE_OK;
}

static void reset(moe_cluster_sim *cs)
{
    const size_t D = (size_t)cs->D, N = (size_t)cs->N;
    memset(cs->tokens_in, 0, D * sizeof(long));
    memset(cs->rows, 0, D * sizeof(long));
    memset(cs->packed, 0, D * sizeof(long));
    memset(cs->intra_send, 0, D * sizeof(double));
    memset(cs->intra_recv, 0, D * sizeof(double));
    memset(cs->inter_send, 0, D * sizeof(double));
    memset(cs->inter_recv, 0, D * sizeof(double));
    memset(cs->node_bytes, 0, N * N * sizeof(double));
    memset(cs->nodes_hist, 0, (N + 1) * sizeof(long));
    memset(cs->pair_intra, 0, D * D);
    memset(cs->pair_inter, 0, D * D);
    for (size_t d = 0; d < D; d++)
        cs->dev_stamp[d] = -1;
    for (size_t n = 0; n < N; n++)
        cs->node_stamp[n] = -1;
}

static void send_intra(moe_cluster_sim *cs, int dpn, int from, int to, double B)
{
    cs->intra_send[from] += B;
    cs->intra_recv[to] += B;
    cs->pair_intra[(size_t)from * (size_t)cs->D + (size_t)to] = 1;
    cs->node_bytes[(size_t)(from / dpn) * (size_t)cs->N + (size_t)(to / dpn)] += B;
}

/* One copy of B bytes from device from to device to over the network (no relay). */
static void send_inter(moe_cluster_sim *cs, int dpn, int from, int to, double B)
{
    cs->inter_send[from] += B;
    cs->inter_recv[to] += B;
    cs->pair_inter[(size_t)from * (size_t)cs->D + (size_t)to] = 1;
    cs->node_bytes[(size_t)(from / dpn) * (size_t)cs->N + (size_t)(to / dpn)] += B;
}

/* Token t from device src: its claims to devices, relays and bytes. Hierarchical: one network
 * copy per remote node to the relay with the sender's local index, forwarded within the node,
 * one copy per device. per_claim: one copy per claim on another device, sent straight there.
 * Padded (cs->pad): only the tokens, claims packed and nodes; pad_rows sends the rows.
 * Returns the nodes touched. */
static int route_token(moe_cluster_sim *cs, const moe_placement *pl, const moe_plan *plan,
                       int dpn, int t, int src, double B, int per_claim)
{
    const int send = !cs->pad;
    const int ppd = pl->P / pl->D, sn = src / dpn;
    int nodes = 0;
    for (int j = cs->tok_start[t]; j < cs->tok_start[t + 1]; j++) {
        const int e = plan->entries[cs->tok_ent[j]].expert;
        const int rep = j % pl->log_cnt[e];
        const int d = pl->log2phy[(size_t)e * (size_t)pl->max_cnt + (size_t)rep] / ppd;
        const int n = d / dpn, relay = n * dpn + src % dpn;
        cs->rows[d] += send;
        cs->packed[src]++;
        if (send && per_claim && d != src)
            (n == sn ? send_intra : send_inter)(cs, dpn, src, d, B);
        if (cs->node_stamp[n] != t) {
            cs->node_stamp[n] = t;
            nodes++;
            if (send && !per_claim && n != sn)
                send_inter(cs, dpn, src, relay, B);
        }
        if (cs->dev_stamp[d] != t) {
            cs->dev_stamp[d] = t;
            cs->tokens_in[d]++;
            const int from = n == sn ? src : relay;
            if (send && !per_claim && d != from)
                send_intra(cs, dpn, from, d, B);
        }
    }
    return nodes;
}

/* The slots g in [lo, hi) with g mod R = r. */
static long slots_of_replica(long lo, long hi, int R, int r)
{
    const long first = lo + ((r - lo % R) % R + R) % R;
    return first < hi ? (hi - 1 - first) / R + 1 : 0;
}

/* pad_to_capacity: every device q sends its whole (E, C_q) slot buffer (moe_cluster_sim_set_pad),
 * n rows of B bytes at a time to each replica's device. */
static void pad_rows(moe_cluster_sim *cs, const moe_placement *pl, long C, int dpn, double B,
                     int per_claim)
{
    const int D = cs->D, ppd = pl->P / pl->D;
    for (int q = 0; q < D; q++) {
        const long lo = (long)((long long)q * C / D), hi = (long)((long long)(q + 1) * C / D);
        const int sn = q / dpn;
        for (int e = 0; e < pl->E && hi > lo; e++) {
            const int R = pl->log_cnt[e];
            for (int rep = 0; rep < R; rep++) {
                const long n = slots_of_replica(lo, hi, R, rep);
                const int d = pl->log2phy[(size_t)e * (size_t)pl->max_cnt + (size_t)rep] / ppd;
                const int dn = d / dpn, relay = dn * dpn + q % dpn;
                cs->rows[d] += n;
                if (n == 0 || d == q)
                    continue;
                if (dn == sn) {
                    send_intra(cs, dpn, q, d, (double)n * B);
                } else if (per_claim) {
                    send_inter(cs, dpn, q, d, (double)n * B);
                } else {
                    send_inter(cs, dpn, q, relay, (double)n * B);
                    if (d != relay)
                        send_intra(cs, dpn, relay, d, (double)n * B);
                }
            }
        }
    }
}

/* Peers a device sends to or receives from over one kind of link: the larger count. */
static int peers(const unsigned char *pair, int D, int d)
{
    int s = 0, r = 0;
    for (int o = 0; o < D; o++) {
        s += pair[(size_t)d * (size_t)D + (size_t)o];
        r += pair[(size_t)o * (size_t)D + (size_t)d];
    }
    return s > r ? s : r;
}

static double fmax2(double a, double b) { return a > b ? a : b; }

/* The local work of one phase on every device into t (D): each device's own, latency + rows x
 * per row + bytes / rate, with the cold terms c (us per call, ns per row, Gbit/s, 0: no byte
 * term) or, on a device whose node's step stays in the cache (warm[d]), the warm ones w; and
 * when the node's devices share cores processors, at least the node's summed work over them
 * (the processors run it in turn). */
static void local_work(moe_cluster_sim *cs, int dpn, int cores, const double c[3],
                       const double w[3], const unsigned char *warm, double *t)
{
    const double B = cs->row_bytes;
    for (int d = 0; d < cs->D; d++) {
        const double *k = warm[d] ? w : c, n = (double)cs->packed[d];
        const double lat = k[0] * 1e-6, row = k[1] * 1e-9, rate = k[2] * 1e9 / 8.0;
        t[d] = lat + n * row + (rate > 0 ? n * B / rate : 0.0);
    }
    for (int n0 = 0; cores > 0 && n0 < cs->D; n0 += dpn) {
        double sum = 0;
        for (int d = n0; d < n0 + dpn; d++)
            sum += t[d];
        for (int d = n0; d < n0 + dpn; d++)
            t[d] = fmax2(t[d], sum / cores);
    }
}

/* warm (D): 1 for the devices of a node whose step fits in cache_mb (t->warm only): the sum
 * over its devices of their experts' weights (2 flops_per_row bytes each: flops_per_row / 2
 * elements of 4 bytes) and of their tokens' and expert rows' activations in and out (H
 * elements of 4 bytes each way). */
static void warm_nodes(const moe_cluster_sim *cs, const moe_cluster_topo *t,
                       const moe_placement *pl, int T, int H, double flops_per_row,
                       unsigned char *warm)
{
    const int dpn = t->devices_per_node;
    const double slots = (double)pl->P / pl->D, act = 8.0 * H, per_tok = (double)T / cs->D;
    for (int n0 = 0; n0 < cs->D; n0 += dpn) {
        double bytes = 0.0;
        for (int d = n0; d < n0 + dpn; d++)
            bytes += slots * 2.0 * flops_per_row + (per_tok + (double)cs->rows[d]) * act;
        const int fits = t->warm && bytes <= t->cache_mb * 1048576.0;
        for (int d = n0; d < n0 + dpn; d++)
            warm[d] = (unsigned char)fits;
    }
}

/* Alpha-beta times per device and the step time (docs/cluster.md). */
static void times(moe_cluster_sim *cs, const moe_cluster_topo *t, double flops_per_row,
                  double tflops, const unsigned char *warm)
{
    const double bi = t->intra_gbps * 1e9 / 8.0, be = t->inter_gbps * 1e9 / 8.0;
    const double ai = t->intra_latency_us * 1e-6, ae = t->inter_latency_us * 1e-6;
    const int dpn = t->devices_per_node;
    /* pack: each of the device's claims gathered into the send buffer (dispatch); unpack:
     * added back into its token's output (combine) */
    const double pc[3] = {t->pack_latency_us, t->pack_row_ns, t->pack_gbps};
    const double pw[3] = {t->warm_pack_latency_us, t->warm_pack_row_ns, t->warm_pack_gbps};
    const double uc[3] = {t->unpack_latency_us, t->unpack_row_ns, t->unpack_gbps};
    const double uw[3] = {t->warm_unpack_latency_us, t->warm_unpack_row_ns, t->warm_unpack_gbps};
    local_work(cs, dpn, t->cores, pc, pw, warm, cs->t_pack);
    if (t->unpack)
        local_work(cs, dpn, t->cores, uc, uw, warm, cs->t_unpack);
    else
        memcpy(cs->t_unpack, cs->t_pack, (size_t)cs->D * sizeof *cs->t_unpack);
    double md = 0, mx = 0, mc = 0, rows_sum = 0, rows_max = 0;
    for (int d = 0; d < cs->D; d++) {
        double intra = ai * peers(cs->pair_intra, cs->D, d) +
                       fmax2(cs->intra_send[d], cs->intra_recv[d]) / bi;
        double inter = ae * peers(cs->pair_inter, cs->D, d) +
                       fmax2(cs->inter_send[d], cs->inter_recv[d]) / be;
        cs->t_dispatch[d] = intra + inter + cs->t_pack[d];
        cs->t_combine[d] = intra + inter + cs->t_unpack[d]; /* the same bytes back */
        cs->t_experts[d] = (double)cs->rows[d] * flops_per_row / (tflops * 1e12);
        md = fmax2(md, cs->t_dispatch[d]);
        mx = fmax2(mx, cs->t_experts[d]);
        mc = fmax2(mc, cs->t_combine[d]);
        rows_sum += (double)cs->rows[d];
        rows_max = fmax2(rows_max, (double)cs->rows[d]);
    }
    cs->balancedness = rows_max > 0 ? rows_sum / cs->D / rows_max : 1.0;
    cs->t_step = md + mx + mc;
}

int moe_cluster_sim_run(moe_cluster_sim *cs, const moe_cluster_topo *t,
                        const moe_placement *pl, const moe_plan *plan, int H,
                        double flops_per_row, double tflops)
{
    if (plan->dense)
        return moe_fail(MOE_EINVAL, "the cluster model needs a sparse plan",
                        "dense plan (cluster %s)", t->name);
    if (pl->D != cs->D || pl->E != plan->E)
        return moe_fail(MOE_EINVAL, NULL, "placement for %d experts on %d devices, cluster %s "
                        "has %d devices and the plan %d experts", pl->E, pl->D, t->name, cs->D,
                        plan->E);
    if (H < 1 || !(tflops > 0) || !(flops_per_row >= 0))
        return moe_fail(MOE_EINVAL, NULL, "cluster model needs H >= 1, a rate > 0 and FLOPs "
                        ">= 0 (cluster %s)", t->name);
    int rc = group_by_token(cs, plan);
    if (rc)
        return rc;
    reset(cs);
    const int T = plan->n, dpn = t->devices_per_node;
    const double B = (double)H * (double)t->dtype_bytes;
    cs->row_bytes = B;
    long nodes_sum = 0;
    for (int tok = 0; tok < T; tok++) {
        const int src = (int)((long long)tok * cs->D / T);
        const int nodes = route_token(cs, pl, plan, dpn, tok, src, B, t->per_claim);
        cs->nodes_hist[nodes]++;
        nodes_sum += nodes;
    }
    cs->nodes_per_token = T > 0 ? (double)nodes_sum / T : 0.0;
    if (cs->pad)
        pad_rows(cs, pl, plan->capacity, dpn, B, t->per_claim);
    warm_nodes(cs, t, pl, T, H, flops_per_row, cs->warm);
    times(cs, t, flops_per_row, tflops, cs->warm);
    return MOE_OK;
}
