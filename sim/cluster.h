/* cluster.h: a model of expert parallelism on a cluster, computed from each batch's plan (no
 * processes): which device every claim goes to, the bytes each device sends and receives
 * within and across nodes in a hierarchical all-to-all, and the predicted dispatch, expert and
 * combine times of an alpha-beta model. docs/cluster.md writes the model out.
 *
 * Dimension letters: T tokens, E experts, D devices, N nodes (D = N * devices_per_node),
 * H model width (the size of one token's activation is H * dtype_bytes bytes). */
#ifndef MOE_CLUSTER_H
#define MOE_CLUSTER_H

#include "moe.h"
#include "placement.h"

/* A topology, as a [cluster.NAME] spec section gives it. Bandwidths are Gbit/s (10^9 bits
 * per second) per device and direction; latencies microseconds per message. */
typedef struct {
    char name[64];
    int nodes, devices_per_node;
    double intra_gbps, intra_latency_us;
    double inter_gbps, inter_latency_us;
    double device_tflops; /* dense rate of one device; 0 with measured = 1 */
    int measured;         /* use the rate this machine reached on the layer's GEMMs */
    int dtype_bytes;      /* bytes per activation element on the wire */
    int per_claim;        /* dispatch = per_claim: one copy per claim, straight from the
                           * token's device to the expert's (Megatron's alltoall dispatcher,
                           * moesim's own --expert-parallel); 0: hierarchical (DeepEP) */
    /* Local pack and unpack on a device's processor, per phase: pack_latency_us per call,
     * pack_row_ns per row of its tokens' claims, pack_gbps the bytes rate of those rows
     * (0: no byte term). All 0 (the default): the term is left out. */
    double pack_latency_us, pack_row_ns, pack_gbps;
    /* The combine's own local work (adding the returned rows into the outputs), the same three
     * terms; unpack = 0 (no unpack_* key given): the combine uses the pack terms. */
    double unpack_latency_us, unpack_row_ns, unpack_gbps;
    int unpack;
    /* The same local work when it starts with its lines in the cache (warm_pack_*,
     * warm_unpack_*), taken for the devices of a node whose step fits in cache_mb MB of the
     * node's last cache level (their experts' weights, their tokens' and expert rows'
     * activations in and out, 4-byte elements): nothing of the layer's is evicted between
     * batches. warm = 0 (no warm_* key given): every device takes the terms above. */
    double warm_pack_latency_us, warm_pack_row_ns, warm_pack_gbps;
    double warm_unpack_latency_us, warm_unpack_row_ns, warm_unpack_gbps;
    double cache_mb;
    int warm;
    /* Processors a node's devices share for their local work (ranks on a machine with fewer
     * cores than ranks); 0: one per device. */
    int cores;
} moe_cluster_topo;

/* Check a topology (every count >= 1, every rate > 0, latencies and pack terms >= 0); where names the
 * section in the message. */
int moe_cluster_topo_check(const moe_cluster_topo *t, const char *where);

/* One batch through the model. Arrays are (D) unless stated. */
typedef struct {
    int D, N;
    long *tokens_in;        /* tokens a device receives (one copy per token and device) */
    long *rows;             /* expert rows a device computes (claims on its slots; padded:
                             * its slot rows, moe_cluster_sim_set_pad) */
    long *packed;           /* claims of the tokens a device holds: rows it packs and unpacks */
    double *intra_send, *intra_recv, *inter_send, *inter_recv; /* bytes, dispatch direction */
    double *t_dispatch, *t_experts, *t_combine;                /* seconds, pack included */
    double *t_pack, *t_unpack; /* the local work of the dispatch (pack) and of the combine
                                * (unpack), processors shared (cores) */
    double *node_bytes;     /* (N,N) dispatch bytes from a device of node a to one of node b */
    long *nodes_hist;       /* (N+1) tokens sent to exactly j nodes */
    double balancedness;    /* mean(rows) / max(rows) over devices; 1 when no rows */
    double nodes_per_token; /* mean over tokens of the nodes each is sent to */
    double t_step;          /* max t_dispatch + max t_experts + max t_combine */
    /* workspace */
    int *tok_start, *tok_ent;   /* (T+1), (entries): the plan's claims grouped by token */
    int *dev_stamp, *node_stamp; /* (D), (N) */
    unsigned char *pair_intra, *pair_inter; /* (D,D) a sent anything to b */
    unsigned char *warm;        /* (D) the device's local work took the warm terms */
    double row_bytes;           /* H * dtype_bytes of the last run */
    int pad;                    /* pad_to_capacity: the padded slot buffers (moe_cluster_sim_set_pad) */
    int T_cap;
    size_t ent_cap;
} moe_cluster_sim;

moe_cluster_sim *moe_cluster_sim_alloc(const moe_cluster_topo *t);
void moe_cluster_sim_free(moe_cluster_sim *cs); /* NULL is a no-op */

/* Run the plan of one batch (sparse plans only) through the model: token t starts on device
 * floor(t * D / T) (with t->per_claim, each claim on another device is one copy sent there
 * directly, over the intra- or inter-node link); claim j of the plan, counted token by token, goes to replica
 * (j mod replicas) of its expert (vLLM's choice). H is the model width, flops_per_row the
 * expert FLOPs of one row, tflops the device rate (the topology's, or the measured one). */
int moe_cluster_sim_run(moe_cluster_sim *cs, const moe_cluster_topo *t,
                        const moe_placement *pl, const moe_plan *plan, int H,
                        double flops_per_row, double tflops);

/* pad_to_capacity (on = 1): the capacity-padded layout of DeepSpeed, Tutel and moesim's
 * per-rank expert parallelism. The plan's C slots of every expert are split over the devices as
 * its tokens are (device q owns C_q = floor((q+1) C / D) - floor(q C / D) of them), and device q
 * sends all E x C_q rows of its slot buffer, zero rows included: slot g of expert e goes to
 * replica (g mod replicas) of e, straight to that device with per_claim, over the relay of the
 * hierarchical all-to-all otherwise (each row its own copy: a slot holds no token to share).
 * rows then counts these padded rows (every expert runs C rows in all), and the bytes and
 * peers follow them; tokens_in, packed and the nodes per token stay those of the claims. */
void moe_cluster_sim_set_pad(moe_cluster_sim *cs, int on);

/* Add the plan's claims per expert to load (E): the warm-up statistics of greedy and EPLB. */
void moe_cluster_add_load(const moe_plan *plan, double *load);

#endif
