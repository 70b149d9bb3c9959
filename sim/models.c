/* models.c: the table of model presets (models.h) and the scale parser.
 *
 * Values read from each model's public config file (config.json on the Hugging Face hub, keys
 * named below) and, for the routing conventions the config does not spell out, the modeling code
 * named in `source`; docs/models.md repeats the table with every value and its file. Keys:
 *   E      num_local_experts (Mixtral), moe_num_experts (DBRX ffn_config), n_routed_experts
 *          (DeepSeek), num_experts (Qwen, OLMoE, Switch)
 *   k      num_experts_per_tok, moe_top_k (DBRX); Switch routes to 1
 *   d      hidden_size, d_model (DBRX, Switch)
 *   f      intermediate_size (Mixtral, OLMoE), ffn_hidden_size (DBRX), moe_intermediate_size
 *          (DeepSeek, Qwen), d_ff (Switch)
 *   S, Fs  n_shared_experts x moe_intermediate_size (DeepSeek: one FFN of n_shared *
 *          moe_intermediate_size in DeepseekV2MoE, here S FFNs of that width each);
 *          Qwen1.5-MoE: one shared expert of shared_expert_intermediate_size, sigmoid gate
 *   score, normalize_topk, route_scale, groups, topk_groups: scoring_func, norm_topk_prob,
 *          routed_scaling_factor, n_group, topk_group (DeepSeek; n_group = 1 is no group
 *          limit); norm_topk_prob (Qwen, OLMoE); moe_normalize_expert_weights = 1 (DBRX, the
 *          p = 1 norm); Mixtral renormalises the top-k softmax in MixtralSparseMoeBlock
 */
#include "models.h"

#include "layer.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define SM MOE_SCORE_SOFTMAX
#define SG MOE_SCORE_SIGMOID
#define NT MOE_TRI_TRUE
#define NF MOE_TRI_FALSE
#define GN MOE_SHARED_GATE_NONE
#define GS MOE_SHARED_GATE_SIGMOID
#define SW MOE_ACT_SWIGLU
#define RL MOE_ACT_RELU

/* name, E, k, d, f, S, Fs, shared gate, act, score, normalize, route_scale, groups,
 * topk_groups, router, source */
const moe_model moe_models[] = {
    {"mixtral_8x7b", 8, 2, 4096, 14336, 0, 0, GN, SW, SM, NT, 1.0, 0, 0, "topk",
     "huggingface.co/mistralai/Mixtral-8x7B-v0.1 config.json; transformers "
     "models/mixtral/modeling_mixtral.py MixtralSparseMoeBlock"},
    {"mixtral_8x22b", 8, 2, 6144, 16384, 0, 0, GN, SW, SM, NT, 1.0, 0, 0, "topk",
     "huggingface.co/mistralai/Mixtral-8x22B-v0.1 config.json; transformers "
     "models/mixtral/modeling_mixtral.py MixtralSparseMoeBlock"},
    {"dbrx", 16, 4, 6144, 10752, 0, 0, GN, SW, SM, NT, 1.0, 0, 0, "topk",
     "huggingface.co/databricks/dbrx-base config.json (ffn_config); transformers "
     "models/dbrx/modeling_dbrx.py DbrxRouter"},
    {"deepseek_v2_lite", 64, 6, 2048, 1408, 2, 1408, GN, SW, SM, NF, 1.0, 0, 0, "topk",
     "huggingface.co/deepseek-ai/DeepSeek-V2-Lite config.json; modeling_deepseek.py MoEGate, "
     "DeepseekV2MoE"},
    {"deepseek_v3", 256, 8, 7168, 2048, 1, 2048, GN, SW, SG, NT, 2.5, 8, 4, "dsv3_bias",
     "huggingface.co/deepseek-ai/DeepSeek-V3 config.json; github.com/deepseek-ai/DeepSeek-V3 "
     "inference/model.py Gate.forward, MoE.forward"},
    {"qwen1_5_moe_a2_7b", 60, 4, 2048, 1408, 1, 5632, GS, SW, SM, NF, 1.0, 0, 0, "topk",
     "huggingface.co/Qwen/Qwen1.5-MoE-A2.7B config.json; transformers "
     "models/qwen2_moe/modeling_qwen2_moe.py Qwen2MoeSparseMoeBlock"},
    {"qwen3_30b_a3b", 128, 8, 2048, 768, 0, 0, GN, SW, SM, NT, 1.0, 0, 0, "topk",
     "huggingface.co/Qwen/Qwen3-30B-A3B config.json; transformers "
     "models/qwen3_moe/modeling_qwen3_moe.py Qwen3MoeSparseMoeBlock"},
    {"olmoe_1b_7b", 64, 8, 2048, 1024, 0, 0, GN, SW, SM, NF, 1.0, 0, 0, "topk",
     "huggingface.co/allenai/OLMoE-1B-7B-0924 config.json; transformers "
     "models/olmoe/modeling_olmoe.py OlmoeSparseMoeBlock"},
    {"switch_base_128", 128, 1, 768, 3072, 0, 0, GN, RL, SM, NF, 1.0, 0, 0, "switch",
     "huggingface.co/google/switch-base-128 config.json; transformers "
     "models/switch_transformers/modeling_switch_transformers.py SwitchTransformersTop1Router"},
    {"gshard_600b", 2048, 2, 1024, 8192, 0, 0, GN, RL, SM, NT, 1.0, 0, 0, "gshard",
     "no public config file: GShard paper (arXiv 2006.16668) section 3, the 600B "
     "model MoE(2048E, 36L): model dim 1024, FFN hidden 8192, top-2 gating"},
    {NULL, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0.0, 0, 0, NULL, NULL},
};

const moe_model *moe_model_find(const char *name)
{
    for (const moe_model *m = moe_models; name && m->name; m++)
        if (!strcmp(m->name, name))
            return m;
    return NULL;
}

int moe_model_lookup(const char *name, const moe_model **out)
{
    *out = moe_model_find(name);
    if (*out)
        return MOE_OK;
    char hint[512] = "models: ";
    for (const moe_model *m = moe_models; m->name; m++) {
        strncat(hint, m->name, sizeof hint - strlen(hint) - 1);
        if (m[1].name)
            strncat(hint, ", ", sizeof hint - strlen(hint) - 1);
    }
    return moe_fail(MOE_EINVAL, hint, "unknown model '%s' (model)", name ? name : "(null)");
}

static const char *score_name(int s)
{
    return s == MOE_SCORE_SIGMOID ? "sigmoid" : s == MOE_SCORE_SQRTSOFTPLUS ? "sqrtsoftplus"
                                                                           : "softmax";
}

void moe_models_print(FILE *out)
{
    fprintf(out, "%-18s %5s %2s %5s %6s %2s %5s %-7s %-9s %-7s %-9s %5s %6s %4s %s\n",
            "model", "E", "k", "d", "f", "S", "Fs", "gate", "act", "score", "normalize",
            "scale", "groups", "topk", "router");
    for (const moe_model *m = moe_models; m->name; m++)
        fprintf(out, "%-18s %5d %2d %5d %6d %2d %5d %-7s %-9s %-7s %-9s %5g %6d %4d %s\n",
                m->name, m->E, m->k, m->d, m->f, m->S, m->fs, moe_shared_gate_name(m->shared_gate),
                moe_act_name(m->act), score_name(m->score),
                m->normalize_topk == MOE_TRI_TRUE ? "true" : "false", m->route_scale, m->groups,
                m->topk_groups, m->router);
    fprintf(out, "\nSources (docs/models.md lists every value with its file):\n");
    for (const moe_model *m = moe_models; m->name; m++)
        fprintf(out, "  %-18s %s\n", m->name, m->source);
}

int moe_scale_parse(const char *text, int *den)
{
    const char *p = text;
    if (p && !strcmp(p, "1")) {
        *den = 1;
        return MOE_OK;
    }
    if (p && p[0] == '1' && p[1] == '/' && p[2] >= '1' && p[2] <= '9') {
        char *end;
        errno = 0;
        long v = strtol(p + 2, &end, 10);
        if (!*end && !errno && v >= 1 && v <= 1L << 16) {
            *den = (int)v;
            return MOE_OK;
        }
    }
    return moe_fail(MOE_EINVAL, "write 1/N with N from 1 to 65536, e.g. 1/8",
                    "bad scale '%s' (scale)", text ? text : "(null)");
}

int moe_scale_width(int width, int den)
{
    int w = den > 1 ? width / den : width;
    return w < 1 ? 1 : w;
}
