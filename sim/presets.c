/* presets.c: the table of named presets (presets.h). Each row is a router type, the option
 * assignments that make moesim's router follow one library's default router, as text parsed by
 * the option table (options.c), and the public file the defaults were read from. What still
 * differs from each library is listed in docs/presets.md. */
#include "presets.h"
#include "options.h"

#include <ctype.h>
#include <string.h>

const moe_preset moe_presets[] = {
    {"deepspeed_top1", "switch",
     {"capacity_factor = 1.0", "min_capacity = 4", "order = rts", "rounding = deepspeed_f32",
      NULL},
     "DeepSpeed deepspeed/moe/sharded_moe.py top1gating; defaults of deepspeed/moe/layer.py MoE "
     "(capacity_factor 1.0, min_capacity 4, use_rts true, noisy_gate_policy None)"},
    {"deepspeed_top2", "gshard",
     {"capacity_factor = 1.0", "min_capacity = 4", "second_policy = sampling",
      "renormalize = true", "rounding = deepspeed_f32", NULL},
     "DeepSpeed deepspeed/moe/sharded_moe.py top2gating (top2_2nd_expert_sampling true, gates "
     "divided by the kept gates' sum); defaults of deepspeed/moe/layer.py MoE"},
    {"deepspeed_topk", "topk",
     {"k = 4", "capacity_factor = 1.0", "min_capacity = 4", "order = probs", "renormalize = true",
      "rounding = deepspeed_f32", NULL},
     "DeepSpeed deepspeed/moe/sharded_moe.py topkgating (k > 2, drop_policy 'probs': claims "
     "ranked by softmax probability, as since v0.19.0; gates divided by the kept gates' sum)"},
    {"fairseq_top1", "switch", {"capacity_factor = 1.0", "rounding = fairseq", NULL},
     "fairseq (moe branch) fairseq/modules/moe/top1gate.py top1gating (capacity_factor 1.0)"},
    {"fairseq_top2", "gshard",
     {"second_policy = sampling", "renormalize = true", "rounding = fairseq", NULL},
     "fairseq (moe branch) fairseq/modules/moe/top2gate.py top2gating (second_expert_policy "
     "'sampling', normalize_gate_prob_before_dropping false)"},
    {"lingvo_top2", "gshard",
     {"second_policy = all", "capacity_factor = 1.0", "rounding = floor",
      "capacity_multiple = 4", NULL},
     "lingvo lingvo/core/gshard_layers.py Top2GatingOnLogits (second_expert_policy 'all', "
     "legacy_mtf_behavior true; capacity int(S*cf/E) rounded up to a multiple of 4)"},
    {"flaxformer_tokens_choose", "topk",
     {"k = 2", "capacity_factor = 0.5", "rounding = round", "min_capacity = 4",
      "normalize_topk = false", "order = choice_major", NULL},
     "flaxformer flaxformer/architectures/moe/routing.py TokensChooseMaskedRouter; capacity of "
     "moe_layers.py MoeLayer: max(round(cf*S/E), min_expert_capacity 4)"},
    {"flaxformer_experts_choose", "expert_choice",
     {"capacity_factor = 1.0", "rounding = round", "min_capacity = 4", NULL},
     "flaxformer flaxformer/architectures/moe/routing.py ExpertsChooseMaskedRouter; capacity of "
     "moe_layers.py MoeLayer: max(round(cf*S/E), min_expert_capacity 4)"},
    {"vmoe_bpr", "topk",
     {"k = 2", "capacity_factor = 1.05", "capacity_multiple = 4", "order = bpr",
      "normalize_topk = false", NULL},
     "V-MoE vmoe/nn/routing.py NoisyTopExpertsPerItemRouter with vmoe/moe.py "
     "get_top_experts_per_item_dispatcher (batch_priority, capacity_factor 1.05 of "
     "vmoe/configs/vmoe_paper/common.py, capacity multiple of 4); deterministic (no noise)"},
    {"tutel_top2", "topk", {"k = 2", "capacity_factor = 1.0", "rounding = tutel", NULL},
     "Tutel tutel/impls/fast_dispatch.py extract_critical via tutel/impls/moe_layer.py (top-2 "
     "gate, normalize_gate true, capacity_factor 1.0)"},
    {"megatron_topk", "topk", {"k = 2", "dropless = true", "order = gate", NULL},
     "Megatron-LM megatron/core/transformer/moe/moe_utils.py topk_routing_with_score_function "
     "(softmax after top-k) and router.py TopKRouter (moe_expert_capacity_factor None: "
     "dropless; with a capacity factor: megatron_topk_capacity)"},
    {"megatron_topk_capacity", "topk", {"k = 2", "capacity_factor = 1.0", "order = gate", NULL},
     "Megatron-LM megatron/core/transformer/moe/moe_utils.py topk_routing_with_score_function "
     "and apply_router_token_dropping (moe_expert_capacity_factor 1.0, get_capacity "
     "ceil(n k / E * cf), moe_token_drop_policy 'probs': each expert keeps its C claims with the "
     "largest probability normalised over the token's k experts)"},
    {"mixtral", "topk", {"k = 2", "dropless = true", NULL},
     "Hugging Face transformers src/transformers/models/mixtral/modeling_mixtral.py "
     "MixtralSparseMoeBlock (num_experts_per_tok 2, top-k of softmax, renormalised)"},
    {"qwen2_moe", "topk", {"k = 4", "normalize_topk = false", "dropless = true", NULL},
     "Hugging Face transformers src/transformers/models/qwen2_moe/modeling_qwen2_moe.py "
     "Qwen2MoeSparseMoeBlock (num_experts_per_tok 4, norm_topk_prob false)"},
    {"deepseek_v3", "dsv3_bias",
     {"k = 8", "groups = 8", "topk_groups = 4", "route_scale = 2.5", "dropless = true",
      "order = token_major", NULL},
     "DeepSeek-V3 inference/model.py Gate.forward (sigmoid scores, n_groups 8, topk_groups 4, "
     "n_activated_experts 8, route_scale 2.5, group score = sum of the top-2 biased scores)"},
    {NULL, NULL, {NULL}, NULL},
};

const moe_preset *moe_preset_find(const char *name)
{
    for (const moe_preset *p = moe_presets; p->name; p++)
        if (!strcmp(p->name, name))
            return p;
    return NULL;
}

int moe_preset_lookup(const char *name, const moe_preset **out)
{
    *out = moe_preset_find(name);
    if (*out)
        return MOE_OK;
    return moe_fail(MOE_EINVAL, "`moesim list presets` lists them", "unknown preset '%s'", name);
}

/* Splits "key = value" into trimmed key and value. Returns 0, or -1 when malformed. */
static int split_assignment(const char *text, char *key, size_t klen, char *val, size_t vlen)
{
    const char *eq = strchr(text, '=');
    if (!eq)
        return -1;
    const char *kb = text, *ke = eq, *vb = eq + 1, *ve = text + strlen(text);
    while (kb < ke && isspace((unsigned char)*kb))
        kb++;
    while (ke > kb && isspace((unsigned char)ke[-1]))
        ke--;
    while (vb < ve && isspace((unsigned char)*vb))
        vb++;
    while (ve > vb && isspace((unsigned char)ve[-1]))
        ve--;
    if (ke == kb || ve == vb || (size_t)(ke - kb) >= klen || (size_t)(ve - vb) >= vlen)
        return -1;
    memcpy(key, kb, (size_t)(ke - kb));
    key[ke - kb] = '\0';
    memcpy(val, vb, (size_t)(ve - vb));
    val[ve - vb] = '\0';
    return 0;
}

int moe_preset_apply(const moe_preset *p, moe_route_opts *o,
                     int (*skip)(const char *key, void *ctx), void *ctx)
{
    for (int i = 0; i < MOE_PRESET_MAX_SET && p->set[i]; i++) {
        char key[64], val[64];
        if (split_assignment(p->set[i], key, sizeof key, val, sizeof val))
            return moe_fail(MOE_EINVAL, NULL, "malformed assignment '%s' (preset %s)",
                            p->set[i], p->name);
        if (skip && skip(key, ctx))
            continue;
        int rc = moe_route_opts_set(o, key, val);
        if (!rc)
            rc = moe_route_option_check(key, p->router);
        if (rc) {
            moe_error_where("preset %s: %s", p->name, p->set[i]);
            return rc;
        }
    }
    return MOE_OK;
}

void moe_presets_print(FILE *out)
{
    for (const moe_preset *p = moe_presets; p->name; p++) {
        fprintf(out, "%-26s router = %s", p->name, p->router);
        for (int i = 0; i < MOE_PRESET_MAX_SET && p->set[i]; i++)
            fprintf(out, ", %s", p->set[i]);
        fprintf(out, "\n  %-24s from %s\n", "", p->source);
    }
}
