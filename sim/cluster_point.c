/* cluster_point.c: the cluster model inside a sweep point (cluster_point.h). The warm-up
 * batches give the expert loads of greedy and EPLB and, for a topology with measured, the
 * device rate (expert FLOPs over the seconds of the layer's expert phase on this machine). */
#include "cluster_point.h"

#include <stdlib.h>
#include <string.h>

struct moe_cluster_run {
    const moe_cluster_cfg *cfg;
    int E, H, batches;
    double flops_per_row;
    double *load;               /* (E) warm-up claims per expert */
    double warm_flops, warm_s;  /* measured rate */
    moe_placement *pl;
    moe_cluster_sim *cs;
    moe_cluster_result *res;
};

void moe_cluster_result_free(moe_cluster_result *r)
{
    if (!r)
        return;
    free(r->tokens_in);
    free(r->rows);
    free(r->bytes_intra);
    free(r->bytes_inter);
    free(r->t_dispatch);
    free(r->t_experts);
    free(r->t_combine);
    free(r->node_bytes);
    free(r->nodes_hist);
    free(r);
}

static moe_cluster_result *result_alloc(const moe_cluster_cfg *cfg)
{
    const size_t N = (size_t)cfg->topo->nodes, D = N * (size_t)cfg->topo->devices_per_node;
    moe_cluster_result *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    r->D = (int)D;
    r->N = (int)N;
    snprintf(r->cluster, sizeof r->cluster, "%s", cfg->topo->name);
    r->placement = cfg->placement;
    r->redundant = cfg->redundant;
    r->groups = cfg->groups;
    r->warmup = cfg->warmup;
    r->tokens_in = calloc(D, sizeof(double));
    r->rows = calloc(D, sizeof(double));
    r->bytes_intra = calloc(D, sizeof(double));
    r->bytes_inter = calloc(D, sizeof(double));
    r->t_dispatch = calloc(D, sizeof(double));
    r->t_experts = calloc(D, sizeof(double));
    r->t_combine = calloc(D, sizeof(double));
    r->node_bytes = calloc(N * N, sizeof(double));
    r->nodes_hist = calloc(N + 1, sizeof(double));
    if (!r->tokens_in || !r->rows || !r->bytes_intra || !r->bytes_inter || !r->t_dispatch ||
        !r->t_experts || !r->t_combine || !r->node_bytes || !r->nodes_hist) {
        moe_cluster_result_free(r);
        return NULL;
    }
    return r;
}

int moe_cluster_cfg_check(const moe_cluster_cfg *cfg, int E, int batches)
{
    if (cfg->warmup < 0 || cfg->warmup >= batches)
        return moe_fail(MOE_EINVAL, "use more batches than warmup_batches",
                        "warmup_batches = %d leaves no measured batch of %d (cluster %s)",
                        cfg->warmup, batches, cfg->topo->name);
    if (cfg->placement != MOE_PLACE_CONTIGUOUS && cfg->placement != MOE_PLACE_ROUND_ROBIN &&
        cfg->warmup < 1)
        return moe_fail(MOE_EINVAL, "set warmup_batches >= 1",
                        "placement %s needs warm-up loads (cluster %s)",
                        moe_placement_kind_name(cfg->placement), cfg->topo->name);
    if (cfg->topo->measured && cfg->warmup < 1)
        return moe_fail(MOE_EINVAL, "set warmup_batches >= 1",
                        "device_tflops = measured needs a warm-up batch (cluster %s)",
                        cfg->topo->name);
    /* the placement's own shape checks, on uniform loads */
    double *load = malloc((size_t)E * sizeof *load);
    if (!load)
        return moe_fail(MOE_ENOMEM, NULL, "out of memory");
    for (int e = 0; e < E; e++)
        load[e] = 1.0;
    moe_placement *pl = moe_placement_alloc(cfg->placement, load, E, cfg->redundant,
                                            cfg->groups, cfg->topo->nodes,
                                            cfg->topo->nodes * cfg->topo->devices_per_node);
    free(load);
    if (!pl)
        return moe_fail(MOE_EINVAL, NULL, "placement does not fit (cluster %s)",
                        cfg->topo->name);
    moe_placement_free(pl);
    return MOE_OK;
}

void moe_cluster_run_free(moe_cluster_run *r)
{
    if (!r)
        return;
    free(r->load);
    moe_placement_free(r->pl);
    moe_cluster_sim_free(r->cs);
    moe_cluster_result_free(r->res);
    free(r);
}

moe_cluster_run *moe_cluster_run_alloc(const moe_cluster_cfg *cfg, int E, int d, int f,
                                       int swiglu, int batches)
{
    if (cfg->d > 0)
        d = cfg->d;
    if (cfg->f > 0)
        f = cfg->f;
    if (moe_cluster_cfg_check(cfg, E, batches) != 0)
        return NULL;
    moe_cluster_run *r = calloc(1, sizeof *r);
    if (r) {
        r->cfg = cfg;
        r->E = E;
        r->H = d;
        r->batches = batches;
        r->flops_per_row = (swiglu ? 6.0 : 4.0) * d * f;
        r->load = calloc((size_t)E, sizeof *r->load);
        r->res = result_alloc(cfg);
    }
    if (!r || !r->load || !r->res) {
        moe_cluster_run_free(r);
        moe_fail(MOE_ENOMEM, NULL, "out of memory (cluster %s)", cfg->topo->name);
        return NULL;
    }
    if (!(r->cs = moe_cluster_sim_alloc(cfg->topo))) {
        moe_cluster_run_free(r);
        return NULL;
    }
    return r;
}

void moe_cluster_run_set_pad(moe_cluster_run *r, int on) { moe_cluster_sim_set_pad(r->cs, on); }

static void accumulate(moe_cluster_result *res, const moe_cluster_sim *cs)
{
    double md = 0, mx = 0, mc = 0;
    for (int d = 0; d < cs->D; d++) {
        res->tokens_in[d] += (double)cs->tokens_in[d];
        res->rows[d] += (double)cs->rows[d];
        res->bytes_intra[d] += cs->intra_send[d] + cs->intra_recv[d];
        res->bytes_inter[d] += cs->inter_send[d] + cs->inter_recv[d];
        res->t_dispatch[d] += cs->t_dispatch[d];
        res->t_experts[d] += cs->t_experts[d];
        res->t_combine[d] += cs->t_combine[d];
        md = cs->t_dispatch[d] > md ? cs->t_dispatch[d] : md;
        mx = cs->t_experts[d] > mx ? cs->t_experts[d] : mx;
        mc = cs->t_combine[d] > mc ? cs->t_combine[d] : mc;
    }
    for (int i = 0; i < cs->N * cs->N; i++)
        res->node_bytes[i] += cs->node_bytes[i];
    for (int j = 0; j <= cs->N; j++)
        res->nodes_hist[j] += (double)cs->nodes_hist[j];
    res->balancedness += cs->balancedness;
    res->nodes_per_token += cs->nodes_per_token;
    res->t_step += cs->t_step;
    res->t_dispatch_max += md;
    res->t_experts_max += mx;
    res->t_combine_max += mc;
    res->measured_batches++;
}

int moe_cluster_run_batch(moe_cluster_run *r, int b, const moe_plan *plan,
                          const moe_phase_times *tm, double expert_flops)
{
    const moe_cluster_cfg *cfg = r->cfg;
    if (b < cfg->warmup) {
        moe_cluster_add_load(plan, r->load);
        r->warm_flops += expert_flops;
        r->warm_s += tm ? tm->experts : 0.0;
        return MOE_OK;
    }
    if (!r->pl) {
        r->res->tflops = cfg->topo->device_tflops;
        if (cfg->topo->measured) {
            if (!(r->warm_s > 0) || !(r->warm_flops > 0))
                return moe_fail(MOE_EINVAL, NULL, "no expert time measured in the warm-up "
                                "(cluster %s, device_tflops = measured)", cfg->topo->name);
            r->res->tflops = r->warm_flops / r->warm_s * 1e-12;
        }
        r->pl = moe_placement_alloc(cfg->placement, r->load, r->E, cfg->redundant, cfg->groups,
                                    cfg->topo->nodes, r->cs->D);
        if (!r->pl)
            return MOE_EINVAL;
    }
    const double t0 = moe_now();
    int rc = moe_cluster_sim_run(r->cs, cfg->topo, r->pl, plan, r->H, r->flops_per_row,
                                 r->res->tflops);
    if (!rc)
        accumulate(r->res, r->cs);
    r->res->model_s += moe_now() - t0;
    return rc;
}

moe_cluster_result *moe_cluster_run_finish(moe_cluster_run *r)
{
    moe_cluster_result *res = r->res;
    const double nb = res->measured_batches > 0 ? (double)res->measured_batches : 1.0;
    double *per_device[] = {res->tokens_in, res->rows, res->bytes_intra, res->bytes_inter,
                            res->t_dispatch, res->t_experts, res->t_combine};
    for (size_t i = 0; i < sizeof per_device / sizeof per_device[0]; i++)
        for (int d = 0; d < res->D; d++)
            per_device[i][d] /= nb;
    for (int i = 0; i < res->N * res->N; i++)
        res->node_bytes[i] /= nb;
    for (int j = 0; j <= res->N; j++)
        res->nodes_hist[j] /= nb;
    res->balancedness /= nb;
    res->nodes_per_token /= nb;
    res->t_step /= nb;
    res->t_dispatch_max /= nb;
    res->t_experts_max /= nb;
    res->t_combine_max /= nb;
    res->model_s /= nb;
    r->res = NULL;
    moe_cluster_run_free(r);
    return res;
}
