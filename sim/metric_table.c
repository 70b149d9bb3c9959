/* metric_table.c: the table of routing metrics (metric_table.h, moe_point_metric in point.h).
 * The help texts state each metric's definition as sim/metrics.c computes it. */
#include "metric_table.h"

#include <stddef.h>
#include <string.h>

#define F(field) #field, offsetof(moe_metrics, field)
#define D(field) F(field), 0, MOE_METRIC_DOUBLE
#define L(field) F(field), 1, MOE_METRIC_LONG

/* name, offset, is_long, kind, help, column, JSON position, report header, report format,
 * compare tolerance; rows in the stored column order. */
const moe_point_metric moe_point_metrics[] = {
    {L(capacity), "slots per expert C", NULL, 3, NULL, NULL, MOE_TOL_EXACT},
    {L(num_entries), "plan entries", NULL, 4, NULL, NULL, MOE_TOL_EXACT},
    {L(n_tokens), "tokens per routing group T", NULL, 1, NULL, NULL, MOE_TOL_EXACT},
    {D(load_imbalance), "max/mean of assigned_load", NULL, 8, "load_imbalance", "%.3f",
     MOE_TOL_ROUTING},
    {D(kept_load_imbalance), "max/mean of kept_load", NULL, 9, NULL, NULL, MOE_TOL_ROUTING},
    {D(load_cv), "population std/mean of assigned_load", NULL, 10, NULL, NULL, MOE_TOL_ROUTING},
    {D(assignment_drop_rate), "dropped claims / all claims", NULL, 11, "drop_rate", "%.4f",
     MOE_TOL_ROUTING},
    {D(token_drop_rate), "tokens with no kept entry / n", NULL, 12, "token_drop_rate", "%.4f",
     MOE_TOL_ROUTING},
    {D(importance_cv2), "CV^2 (population) of importance", NULL, 13, NULL, NULL,
     MOE_TOL_ROUTING},
    {D(aux_loss), "the router's auxiliary balancing loss (0 for routers without one)", NULL, 14,
     "aux_loss", "%.4f", MOE_TOL_ROUTING},
    {D(z_loss), "mean over tokens of logsumexp(L[t,:])^2", NULL, 15, NULL, NULL,
     MOE_TOL_ROUTING},
    {D(flops_gate), "2*n*d*M", NULL, 17, NULL, NULL, MOE_TOL_EXACT},
    {D(flops_expert_useful), "4*d*f per kept entry (6*d*f for SwiGLU), + S*4*d*Fs per token for shared experts", NULL, 18, NULL, NULL,
     MOE_TOL_EXACT},
    {D(flops_expert_padded), "E*C*4*d*f: what a capacity-padded implementation executes, + shared experts", NULL,
     19, NULL, NULL, MOE_TOL_EXACT},
    {D(flops_soft_dispatch), "2*n*M*d (soft_moe)", NULL, 20, NULL, NULL, MOE_TOL_EXACT},
    {D(flops_soft_combine), "2*n*M*d (soft_moe)", NULL, 21, NULL, NULL, MOE_TOL_EXACT},
    {D(output_error_dense),
     "relative L2 distance from the dense mixture sum_e p[t,e] FFN_e(x_t)", NULL, 22,
     "error_dense", "%.4f", MOE_TOL_OUTPUT},
    {D(output_error_dropless), "relative L2 distance from the router's own dropless output", NULL,
     23, "error_dropless", "%.4f", MOE_TOL_OUTPUT},
    {D(groups_touched_mean),
     "distinct expert groups (G contiguous groups of E/G; G = 1 without groups) among a token's "
     "kept experts, mean over tokens", NULL, 24, NULL, NULL, MOE_TOL_ROUTING},
    {D(token_drop_rate_group_min), "smallest token drop rate of the routing groups (group_size)",
     NULL, 26, NULL, NULL, MOE_TOL_ROUTING},
    {D(token_drop_rate_group_mean), "mean over routing groups of their token drop rates", NULL,
     27, NULL, NULL, MOE_TOL_ROUTING},
    {D(token_drop_rate_group_max), "largest token drop rate of the routing groups", NULL, 28,
     NULL, NULL, MOE_TOL_ROUTING},
    {D(seq_aux_loss),
     "Megatron's sequence-level aux loss over sequences of sequence_length tokens (coeff 1)",
     NULL, 29, NULL, NULL, MOE_TOL_ROUTING},
    {D(load_loss_shazeer),
     "t2t cv_squared of the load: ProbInTopK summed over tokens (noisy topk), else claims",
     NULL, 30, NULL, NULL, MOE_TOL_ROUTING},
    {D(overflow_expert1), "fairseq: % of first-choice claims dropped by capacity", NULL, 31,
     NULL, NULL, MOE_TOL_ROUTING},
    {D(overflow_expert2), "fairseq: % of dispatched second-choice claims dropped by capacity",
     NULL, 32, NULL, NULL, MOE_TOL_ROUTING},
    {D(importance_loss_vmoe),
     "V-MoE: (std/mean)^2 of the summed softmax per expert, mean over routing groups", NULL, 33,
     NULL, NULL, MOE_TOL_ROUTING},
    {D(load_loss_vmoe),
     "V-MoE: (std/mean)^2 of the mean P(expert beats the k-th noisy logit) (noisy topk)", NULL,
     34, NULL, NULL, MOE_TOL_ROUTING},
    {D(balancedness), "vLLM EPLB: mean/max of kept_load (0 when nothing is kept)", NULL, 35,
     NULL, NULL, MOE_TOL_ROUTING},
    {D(flops_expert_executed),
     "the experts' FLOPs the modelled implementation executes: flops_expert_padded with "
     "pad_to_capacity, else flops_expert_useful (shared experts in both)", NULL, 36, NULL, NULL,
     MOE_TOL_EXACT},
    {NULL, 0, 0, 0, NULL, NULL, 0, NULL, NULL, 0},
};
_Static_assert(sizeof moe_point_metrics / sizeof moe_point_metrics[0] == MOE_POINT_NMETRICS + 1,
               "MOE_POINT_NMETRICS must match the metric table");

/* The rows that are not scalar columns of `points`. */
static const moe_point_metric array_metrics[] = {
    {"num_experts", offsetof(moe_metrics, E), 0, MOE_METRIC_INT, "experts E", NULL, 2, NULL, NULL,
     MOE_TOL_EXACT},
    {F(assigned_load), 1, MOE_METRIC_EXPERT_LONG, "(E) claims on each expert before capacity",
     "assigned", 5, NULL, NULL, MOE_TOL_EXACT},
    {F(kept_load), 1, MOE_METRIC_EXPERT_LONG, "(E) entries kept on each expert", "kept", 6, NULL,
     NULL, MOE_TOL_EXACT},
    {F(importance), 0, MOE_METRIC_EXPERT_DOUBLE,
     "(E) summed gate values of the claims on each expert before capacity", "importance", 7,
     NULL, NULL, MOE_TOL_ROUTING},
    {F(experts_per_token), 1, MOE_METRIC_HISTOGRAM,
     "(E+1) histogram of tokens by number of experts kept", "experts_per_token", 16, NULL, NULL,
     MOE_TOL_EXACT},
    {F(groups_touched), 1, MOE_METRIC_GROUP_HISTOGRAM,
     "(G+1) histogram of tokens by number of expert groups among their kept experts",
     "groups_touched", 25, NULL, NULL, MOE_TOL_EXACT},
};
_Static_assert(MOE_POINT_NMETRICS + sizeof array_metrics / sizeof array_metrics[0] ==
                   MOE_METRIC_NROWS,
               "MOE_METRIC_NROWS must match the metric table");
#undef F
#undef D
#undef L

const moe_point_metric *moe_metric_row(int i)
{
    if (i < 0 || i >= MOE_METRIC_NROWS)
        return NULL;
    return i < MOE_POINT_NMETRICS ? &moe_point_metrics[i] : &array_metrics[i - MOE_POINT_NMETRICS];
}

int moe_point_metric_index(const char *name)
{
    for (int i = 0; moe_point_metrics[i].name; i++)
        if (strcmp(moe_point_metrics[i].name, name) == 0)
            return i;
    return -1;
}

const moe_point_metric *moe_metric_in_order(int pos)
{
    for (int i = 0; i < MOE_METRIC_NROWS; i++)
        if (moe_metric_row(i)->json_pos == pos)
            return moe_metric_row(i);
    return NULL;
}

const moe_point_metric *moe_metric_find(const char *name)
{
    for (int i = 0; i < MOE_METRIC_NROWS; i++) {
        const moe_point_metric *m = moe_metric_row(i);
        if (!strcmp(m->name, name) || (m->column && !strcmp(m->column, name)))
            return m;
    }
    return NULL;
}

double moe_metric_value(const moe_metrics *mt, const moe_point_metric *m)
{
    const char *base = (const char *)mt + m->offset;
    if (m->kind == MOE_METRIC_LONG) {
        long v;
        memcpy(&v, base, sizeof v);
        return (double)v;
    }
    if (m->kind == MOE_METRIC_INT) {
        int v;
        memcpy(&v, base, sizeof v);
        return (double)v;
    }
    double v;
    memcpy(&v, base, sizeof v);
    return v;
}

size_t moe_metric_len(const moe_point_metric *m, const moe_metrics *mt)
{
    switch (m->kind) {
    case MOE_METRIC_EXPERT_LONG:
    case MOE_METRIC_EXPERT_DOUBLE: return (size_t)mt->E;
    case MOE_METRIC_HISTOGRAM: return (size_t)mt->E + 1;
    case MOE_METRIC_GROUP_HISTOGRAM: return (size_t)mt->groups + 1;
    default: return 1;
    }
}
