/* cluster_point.h: the cluster model inside a sweep point. A point with a cluster
 * configuration (topology x placement x redundant experts, from the spec) collects the expert
 * loads of its first warmup batches, builds the placement from them, runs the plan of every
 * later batch through the cluster model (cluster.h) and averages the results per batch: the
 * imbalance it reports is out of sample. Shapes: D devices, N nodes. */
#ifndef MOE_CLUSTER_POINT_H
#define MOE_CLUSTER_POINT_H

#include "cluster.h"
#include "layer.h"

typedef struct moe_cluster_cfg {
    const moe_cluster_topo *topo;
    int placement;   /* moe_place_kind */
    int redundant;   /* R, eplb only */
    int groups;      /* expert groups G for eplb */
    int warmup;      /* batches whose loads build the placement; not measured */
    int d, f;        /* model and expert hidden widths the model prices (0: the point's) */
    char text[320];  /* canonical text, appended to the point's config key */
} moe_cluster_cfg;

/* Means per measured batch. */
typedef struct moe_cluster_result {
    int D, N, measured_batches;
    char cluster[64];
    int placement, redundant, groups, warmup;
    double tflops;           /* device rate used (the topology's, or measured) */
    double *tokens_in, *rows, *bytes_intra, *bytes_inter;    /* (D); bytes sent + received */
    double *t_dispatch, *t_experts, *t_combine;              /* (D) */
    double *node_bytes;      /* (N,N) */
    double *nodes_hist;      /* (N+1) tokens per batch sent to j nodes */
    double balancedness, nodes_per_token, t_step;
    double t_dispatch_max, t_experts_max, t_combine_max;     /* means of the per-batch maxima */
    double model_s;          /* wall seconds of the cluster model per measured batch */
} moe_cluster_result;

void moe_cluster_result_free(moe_cluster_result *r); /* NULL is a no-op */

/* Check that cfg fits a point of E experts and the given batches (warmup < batches, the
 * placement's divisibility). */
int moe_cluster_cfg_check(const moe_cluster_cfg *cfg, int E, int batches);

typedef struct moe_cluster_run moe_cluster_run;

/* For a point of E experts with widths d and f (replaced by cfg's when set); an expert row
 * costs (swiglu ? 6 : 4) d f FLOPs and sends d * dtype_bytes bytes. */
moe_cluster_run *moe_cluster_run_alloc(const moe_cluster_cfg *cfg, int E, int d, int f,
                                       int swiglu, int batches);
/* The point pads every expert to its capacity (pad_to_capacity): the model sends and computes
 * the padded rows (moe_cluster_sim_set_pad). */
void moe_cluster_run_set_pad(moe_cluster_run *r, int on);
/* Batch b's plan; tm and expert_flops give the measured rate (topologies with measured). */
int moe_cluster_run_batch(moe_cluster_run *r, int b, const moe_plan *plan,
                          const moe_phase_times *tm, double expert_flops);
/* The means over the measured batches (owned by the caller), and free the run. */
moe_cluster_result *moe_cluster_run_finish(moe_cluster_run *r);
void moe_cluster_run_free(moe_cluster_run *r); /* NULL is a no-op */

#endif
