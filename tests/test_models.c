/* test_models.c: model presets (sim/models.c) and their use in spec shapes (sim/spec_load.c,
 * sim/spec_model.c).
 *
 * The expected values are a second table written here from the public config files, in the
 * config files' own terms (hidden_size, moe_intermediate_size, n_shared_experts, n_group, ...),
 * and converted to moesim's by the rules of docs/models.md (n_group = 1 is no group limit;
 * DeepSeek's shared experts are n_shared_experts FFNs of moe_intermediate_size each;
 * Qwen1.5-MoE has one shared expert of shared_expert_intermediate_size with a sigmoid gate).
 * The files (read on the Hugging Face hub copies):
 *   mistralai/Mixtral-8x7B-v0.1, mistralai/Mixtral-8x22B-v0.1, databricks/dbrx-base (ffn_config),
 *   deepseek-ai/DeepSeek-V2-Lite, deepseek-ai/DeepSeek-V3, Qwen/Qwen1.5-MoE-A2.7B,
 *   Qwen/Qwen3-30B-A3B, allenai/OLMoE-1B-7B-0924, google/switch-base-128: config.json;
 *   gshard_600b from the GShard paper (arXiv 2006.16668), no config file exists.
 * Also checked: override order (shape keys over the preset, router-section options over the
 * preset's routing options, options that do not apply to a router left alone), scale = 1/N
 * (d, f and shared_f only, rounded down), a list of models as a sweep axis, and the errors of an
 * unknown model (one line naming the key, every model in the hint), a bad scale and a scale
 * without a model. */
#include "check.h"
#include "models.h"
#include "spec.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* One model as its config file states it. */
typedef struct {
    const char *name;
    int hidden_size, expert_ffn, num_experts, experts_per_tok;
    int n_shared_experts, shared_ffn; /* shared_ffn: width of ONE shared FFN */
    const char *scoring_func;
    int norm_topk_prob;               /* 1 true, 0 false */
    double routed_scaling_factor;
    int n_group, topk_group;          /* 1, 1: no group limit */
    const char *hidden_act;           /* silu (gated) or relu */
} config_json;

static const config_json configs[] = {
    /* Mixtral: hidden_size 4096, intermediate_size 14336, num_local_experts 8,
     * num_experts_per_tok 2, hidden_act silu; the block renormalises the top-2 softmax */
    {"mixtral_8x7b", 4096, 14336, 8, 2, 0, 0, "softmax", 1, 1.0, 1, 1, "silu"},
    {"mixtral_8x22b", 6144, 16384, 8, 2, 0, 0, "softmax", 1, 1.0, 1, 1, "silu"},
    /* DBRX: d_model 6144, ffn_hidden_size 10752, moe_num_experts 16, moe_top_k 4,
     * moe_normalize_expert_weights 1, ffn_act_fn silu (GLU) */
    {"dbrx", 6144, 10752, 16, 4, 0, 0, "softmax", 1, 1.0, 1, 1, "silu"},
    /* DeepSeek-V2-Lite: hidden_size 2048, moe_intermediate_size 1408, n_routed_experts 64,
     * num_experts_per_tok 6, n_shared_experts 2, scoring_func softmax, norm_topk_prob false,
     * routed_scaling_factor 1.0, n_group 1, topk_group 1 */
    {"deepseek_v2_lite", 2048, 1408, 64, 6, 2, 1408, "softmax", 0, 1.0, 1, 1, "silu"},
    /* DeepSeek-V3: hidden_size 7168, moe_intermediate_size 2048, n_routed_experts 256,
     * num_experts_per_tok 8, n_shared_experts 1, scoring_func sigmoid, norm_topk_prob true,
     * routed_scaling_factor 2.5, n_group 8, topk_group 4 */
    {"deepseek_v3", 7168, 2048, 256, 8, 1, 2048, "sigmoid", 1, 2.5, 8, 4, "silu"},
    /* Qwen1.5-MoE-A2.7B: hidden_size 2048, moe_intermediate_size 1408, num_experts 60,
     * num_experts_per_tok 4, shared_expert_intermediate_size 5632, norm_topk_prob false */
    {"qwen1_5_moe_a2_7b", 2048, 1408, 60, 4, 1, 5632, "softmax", 0, 1.0, 1, 1, "silu"},
    /* Qwen3-30B-A3B: hidden_size 2048, moe_intermediate_size 768, num_experts 128,
     * num_experts_per_tok 8, norm_topk_prob true */
    {"qwen3_30b_a3b", 2048, 768, 128, 8, 0, 0, "softmax", 1, 1.0, 1, 1, "silu"},
    /* OLMoE-1B-7B-0924: hidden_size 2048, intermediate_size 1024, num_experts 64,
     * num_experts_per_tok 8, norm_topk_prob false */
    {"olmoe_1b_7b", 2048, 1024, 64, 8, 0, 0, "softmax", 0, 1.0, 1, 1, "silu"},
    /* switch-base-128: d_model 768, d_ff 3072, num_experts 128, top-1 router (raw softmax
     * probability as the weight), dense_act_fn relu */
    {"switch_base_128", 768, 3072, 128, 1, 0, 0, "softmax", 0, 1.0, 1, 1, "relu"},
    /* GShard 600B (paper): model dim 1024, FFN hidden 8192, 2048 experts, top-2, normalised
     * top-2 gates, ReLU FFN */
    {"gshard_600b", 1024, 8192, 2048, 2, 0, 0, "softmax", 1, 1.0, 1, 1, "relu"},
};
enum { NCONFIGS = sizeof configs / sizeof configs[0] };

static void test_table(void)
{
    int n = 0;
    for (const moe_model *m = moe_models; m->name; m++)
        n++;
    CHECK_INT(n, NCONFIGS);
    for (int i = 0; i < NCONFIGS; i++) {
        const config_json *c = &configs[i];
        const moe_model *m = moe_model_find(c->name);
        CHECK(m != NULL, "preset %s exists", c->name);
        if (!m)
            continue;
        int gated = !strcmp(c->hidden_act, "silu");
        CHECK(m->E == c->num_experts && m->k == c->experts_per_tok && m->d == c->hidden_size &&
                  m->f == c->expert_ffn,
              "%s: E k d f = %d %d %d %d, config %d %d %d %d", c->name, m->E, m->k, m->d, m->f,
              c->num_experts, c->experts_per_tok, c->hidden_size, c->expert_ffn);
        CHECK(m->S == c->n_shared_experts && m->fs == c->shared_ffn,
              "%s: shared %d x %d, config %d x %d", c->name, m->S, m->fs, c->n_shared_experts,
              c->shared_ffn);
        CHECK(m->shared_gate == (!strcmp(c->name, "qwen1_5_moe_a2_7b") ? MOE_SHARED_GATE_SIGMOID
                                                                       : MOE_SHARED_GATE_NONE),
              "%s: shared gate %d", c->name, m->shared_gate);
        CHECK(m->act == (gated ? MOE_ACT_SWIGLU : MOE_ACT_RELU), "%s: act %d", c->name, m->act);
        CHECK(m->score == (!strcmp(c->scoring_func, "sigmoid") ? MOE_SCORE_SIGMOID
                                                                : MOE_SCORE_SOFTMAX),
              "%s: score %d", c->name, m->score);
        CHECK(m->normalize_topk == (c->norm_topk_prob ? MOE_TRI_TRUE : MOE_TRI_FALSE),
              "%s: normalize_topk %d", c->name, m->normalize_topk);
        CHECK(m->route_scale == c->routed_scaling_factor, "%s: route_scale %g", c->name,
              m->route_scale);
        CHECK(m->groups == (c->n_group > 1 ? c->n_group : 0) &&
                  m->topk_groups == (c->n_group > 1 ? c->topk_group : 0),
              "%s: groups %d topk_groups %d", c->name, m->groups, m->topk_groups);
        CHECK(m->source && strlen(m->source) > 20, "%s: source named", c->name);
    }
    CHECK(moe_model_find("mixtral") == NULL, "no prefix matches");
}

static void test_scale(void)
{
    int den = 0;
    CHECK_INT(moe_scale_parse("1/8", &den), MOE_OK);
    CHECK_INT(den, 8);
    CHECK_INT(moe_scale_parse("1", &den), MOE_OK);
    CHECK_INT(den, 1);
    CHECK_INT(moe_scale_parse("1/16", &den), MOE_OK);
    CHECK_INT(den, 16);
    const char *bad[] = {"0.125", "1/0", "2/8", "1/", "1/8x", "1/-2", "", "1/99999999999"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        moe_clear_error();
        CHECK_INT(moe_scale_parse(bad[i], &den), MOE_EINVAL);
        CHECK(strstr(moe_errmsg(), "scale") != NULL, "'%s': %s", bad[i], moe_errmsg());
    }
    /* 7168 / 8 = 896; 1408 / 16 = 88; 3 / 8 rounds down to 0, kept at 1 */
    CHECK_INT(moe_scale_width(7168, 8), 896);
    CHECK_INT(moe_scale_width(1408, 16), 88);
    CHECK_INT(moe_scale_width(3, 8), 1);
}

/* ---- in specs ---- */

static int load(const char *text, const char *const *sets, int nsets, moe_spec **out)
{
    char path[64];
    snprintf(path, sizeof path, "/tmp/moesim_test_models_XXXXXX");
    int fd = mkstemp(path);
    if (fd < 0 || write(fd, text, strlen(text)) != (ssize_t)strlen(text)) {
        perror("spec");
        exit(2);
    }
    close(fd);
    moe_clear_error();
    int rc = moe_spec_load(path, sets, nsets, out);
    unlink(path);
    return rc;
}

static const char *spec_text =
    "[experiment]\n"
    "routers = topk expert_choice own\n"
    "capacity_factors = 1.0\n"
    "distributions = g\n"
    "shapes = v3\n"
    "tokens = 64\n"
    "batches = 1\n"
    "[router.topk]\n"
    "type = topk\n"
    "[router.expert_choice]\n"
    "type = expert_choice\n"
    "[router.own]\n"
    "type = topk\n"
    "route_scale = 1.5\n"
    "k = 2\n"
    "[distribution.g]\n"
    "source = gaussian\n"
    "[shape.v3]\n"
    "model = deepseek_v3\n"
    "scale = 1/8\n";

static const moe_point *find(const moe_spec *s, const char *router, const char *shape)
{
    for (size_t i = 0; i < moe_spec_npoints(s); i++) {
        const moe_point *p = moe_spec_point(s, i);
        if (!strcmp(p->router, router) && !strcmp(p->shape, shape))
            return p;
    }
    return NULL;
}

static void test_spec(void)
{
    moe_spec *s = NULL;
    CHECK_INT(load(spec_text, NULL, 0, &s), MOE_OK);
    if (!s)
        return;
    CHECK_INT((int)moe_spec_npoints(s), 3);
    const moe_point *p = find(s, "topk", "v3");
    /* the preset, d and widths at 1/8: 7168/8 = 896, 2048/8 = 256 */
    CHECK(p && p->E == 256 && p->k == 8 && p->d == 896 && p->f == 256 && p->shared_S == 1 &&
              p->shared_f == 256 && p->act == MOE_ACT_SWIGLU,
          "topk on deepseek_v3 at 1/8: E %d k %d d %d f %d S %d Fs %d", p ? p->E : -1,
          p ? p->k : -1, p ? p->d : -1, p ? p->f : -1, p ? p->shared_S : -1,
          p ? p->shared_f : -1);
    CHECK(p && p->opts.score == MOE_SCORE_SIGMOID && p->opts.normalize_topk == MOE_TRI_TRUE &&
              p->opts.route_scale == 2.5 && p->opts.groups == 8 && p->opts.topk_groups == 4,
          "the preset's routing options");
    CHECK(p && strstr(p->config_key, "shared_experts=1 shared_f=256 shared_gate=none"),
          "config key: %s", p ? p->config_key : "");
    /* the router section's own route_scale and k win; the rest comes from the preset */
    p = find(s, "own", "v3");
    CHECK(p && p->opts.route_scale == 1.5 && p->k == 2 && p->opts.groups == 8 &&
              p->opts.score == MOE_SCORE_SIGMOID, "router section over the preset");
    /* expert_choice: no score options, its own k */
    p = find(s, "expert_choice", "v3");
    CHECK(p && p->opts.score == MOE_SCORE_AUTO && p->opts.groups == 0 &&
              p->opts.route_scale == 1.0, "options that do not apply are left alone");
    moe_spec_free(s);

    /* shape keys over the preset, whatever their order; scale leaves explicit widths alone */
    const char *sets[] = {"shape.v3.E=64", "shape.v3.k=4", "shape.v3.d=64",
                          "shape.v3.shared_experts=2", "shape.v3.shared_gate=sigmoid",
                          "experiment.routers=topk"};
    CHECK_INT(load(spec_text, sets, 6, &s), MOE_OK);
    p = s ? find(s, "topk", "v3") : NULL;
    CHECK(p && p->E == 64 && p->k == 4 && p->d == 64 && p->f == 256 && p->shared_S == 2 &&
              p->shared_f == 256 && p->shared_gate == MOE_SHARED_GATE_SIGMOID &&
              p->opts.groups == 8,
          "overrides: E %d k %d d %d f %d S %d", p ? p->E : -1, p ? p->k : -1, p ? p->d : -1,
          p ? p->f : -1, p ? p->shared_S : -1);
    moe_spec_free(s);

    /* a list of models is a sweep axis */
    const char *axis[] = {"shape.v3.model=mixtral_8x7b olmoe_1b_7b", "shape.v3.scale=1/16",
                          "experiment.routers=topk"};
    CHECK_INT(load(spec_text, axis, 3, &s), MOE_OK);
    CHECK(s && moe_spec_npoints(s) == 2, "two models, two points");
    for (size_t i = 0; s && i < moe_spec_npoints(s); i++) {
        p = moe_spec_point(s, i);
        int mix = p->E == 8;
        CHECK(p->d == (mix ? 256 : 128) && p->f == (mix ? 896 : 64) &&
                  p->opts.normalize_topk == (mix ? MOE_TRI_TRUE : MOE_TRI_FALSE),
              "model axis point %zu: E %d d %d f %d", i, p->E, p->d, p->f);
    }
    moe_spec_free(s);
}

static void test_errors(void)
{
    moe_spec *s = NULL;
    const char *unknown[] = {"shape.v3.model=deepseek_v4"};
    CHECK_INT(load(spec_text, unknown, 1, &s), MOE_EINVAL);
    CHECK(strstr(moe_errmsg(), "unknown model 'deepseek_v4'") &&
              strstr(moe_errmsg(), "shape.v3.model") && !strchr(moe_errmsg(), '\n'),
          "one line naming the key: %s", moe_errmsg());
    CHECK(strstr(moe_errhint(), "mixtral_8x7b") && strstr(moe_errhint(), "gshard_600b"),
          "hint lists the models: %s", moe_errhint());
    const char *badscale[] = {"shape.v3.scale=0.125"};
    CHECK_INT(load(spec_text, badscale, 1, &s), MOE_EINVAL);
    CHECK(strstr(moe_errmsg(), "bad scale '0.125'") && strstr(moe_errmsg(), "shape.v3.scale"),
          "bad scale: %s", moe_errmsg());
    const char *nomodel =
        "[experiment]\nrouters = topk\ndistributions = g\nshapes = s\n"
        "[router.topk]\ntype = topk\n[distribution.g]\nsource = gaussian\n"
        "[shape.s]\nd = 16\nf = 16\nE = 4\nscale = 1/2\n";
    CHECK_INT(load(nomodel, NULL, 0, &s), MOE_EINVAL);
    CHECK(strstr(moe_errmsg(), "scale without model") && strstr(moe_errmsg(), "shape.s.scale"),
          "scale without model: %s", moe_errmsg());
    const char *nowidth[] = {"shape.v3.model=mixtral_8x7b", "shape.v3.shared_experts=1"};
    CHECK_INT(load(spec_text, nowidth, 2, &s), MOE_EINVAL);
    CHECK(strstr(moe_errmsg(), "shared_experts = 1 without shared_f"), "no width: %s",
          moe_errmsg());
    moe_clear_error();
    const moe_model *m;
    CHECK_INT(moe_model_lookup(NULL, &m), MOE_EINVAL);
}

int main(void)
{
    test_table();
    test_scale();
    test_spec();
    test_errors();
    return check_report("test_models");
}
