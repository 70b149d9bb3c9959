/* api.c: the C API of libmoesim.so (moesim_api.h) over the library's public functions:
 * moe_route_opts_set for the options, moe_router_alloc/_route for the plan, moe_metrics_compute
 * for the metrics, moe_layer_alloc/_forward for the layer. Each call does what `moesim route`
 * does for the same inputs (sim/cmd_route.c), so that results match it bit for bit. */
#include "moesim_api.h"

#include "layer.h"
#include "moe.h"
#include "options.h"

#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

_Static_assert((int)MOESIM_EINVAL == MOE_EINVAL && (int)MOESIM_EIO == MOE_EIO &&
               (int)MOESIM_EFORMAT == MOE_EFORMAT && (int)MOESIM_ENOMEM == MOE_ENOMEM &&
               (int)MOESIM_EINPUT == MOE_EINPUT, "moesim_api.h status codes follow moe.h");

struct moesim_result {
    moe_plan *plan;
    moe_metrics *mt;
};

/* Every entry point starts clean: moe_fail keeps the first message of a chain. */
static void api_enter(void)
{
    moe_clear_error();
    moe_install_gsl_handler();
}

int moesim_api_version(void) { return MOESIM_API_VERSION; }
const char *moesim_errmsg(void) { return moe_errmsg(); }
const char *moesim_errhint(void) { return moe_errhint(); }

/* ---- routing ---- */

static int set_options(const moesim_route_args *a, moe_route_opts *o)
{
    for (int i = 0; i < a->n_opts; i++) {
        if (!a->keys[i] || !a->values[i])
            return moe_fail(MOE_EINVAL, NULL, "routing option %d has no key or value", i);
        int rc = moe_route_opts_set(o, a->keys[i], a->values[i]);
        if (rc) {
            moe_error_where("option %s", a->keys[i]);
            return rc;
        }
    }
    if (a->hash_table) { /* the caller's table, not owned: replaces a loaded one */
        moe_route_opts_release(o);
        o->hash_table = a->hash_table;
        o->hash_table_len = a->hash_table_len;
    }
    return MOE_OK;
}

int moesim_route(const moesim_route_args *a, moesim_result **out)
{
    api_enter();
    *out = NULL;
    const moe_router_type *t = a->router ? moe_router_find(a->router) : NULL;
    if (!t)
        return moe_fail(MOE_EINVAL, "moesim.routers() lists them", "unknown router '%s' (router)",
                        a->router ? a->router : "(null)");
    if (a->n <= 0 || a->m <= 0 || !a->logits)
        return moe_fail(MOE_EINPUT, NULL, "logits have shape (%d,%d): need n >= 1, M >= 1 (logits)",
                        a->n, a->m);
    moe_route_opts o;
    moe_route_opts_default(&o);
    moe_router *r = NULL;
    gsl_rng *rng = NULL;
    moesim_result *res = calloc(1, sizeof *res);
    int rc = res ? set_options(a, &o) : moe_fail(MOE_ENOMEM, NULL, "out of memory (result)");
    if (rc || (rc = moe_router_alloc(t, &o, a->n, a->m, &r)))
        goto out;
    if (t->flags & MOE_RF_USES_RNG)
        rng = moe_rng_alloc(a->seed, moe_router_stream(t));
    size_t reserve = (t->flags & MOE_RF_DENSE) ? (size_t)a->n * (size_t)a->m
                                               : (size_t)a->n * (size_t)r->k;
    res->plan = moe_plan_alloc(a->n, r->E, reserve);
    res->mt = moe_metrics_alloc(r->E);
    if (!res->plan || !res->mt || ((t->flags & MOE_RF_USES_RNG) && !rng)) {
        rc = moe_fail(MOE_ENOMEM, NULL, "out of memory (plan for %d tokens)", a->n);
        goto out;
    }
    moe_route_in in = {a->n, a->m, a->logits, a->token_ids, a->uniforms, rng,
                       a->choices, a->choice_weights, a->k_rec};
    if (!(rc = moe_router_route(r, &in, res->plan)))
        rc = moe_metrics_compute(res->plan, a->logits, 0, 0, MOE_ACT_GELU_TANH, 0, res->mt);
out:
    if (o.hash_table == a->hash_table) /* the caller's: not ours to free */
        o.hash_table = NULL;
    moe_route_opts_release(&o);
    moe_router_free(r);
    gsl_rng_free(rng);
    if (rc)
        moesim_result_free(res);
    else
        *out = res;
    return rc;
}

void moesim_result_free(moesim_result *r)
{
    if (!r)
        return;
    moe_plan_free(r->plan);
    moe_metrics_free(r->mt);
    free(r);
}

void moesim_result_info(const moesim_result *r, moesim_plan_info *info)
{
    const moe_plan *p = r->plan;
    *info = (moesim_plan_info){p->n_entries, p->n, p->E, p->m, p->k, p->capacity, p->dense};
}

void moesim_result_entries(const moesim_result *r, int32_t *token, int32_t *expert,
                           int32_t *slot, double *dispatch_weight, double *combine_weight)
{
    const moe_entry *en = r->plan->entries;
    for (size_t i = 0; i < r->plan->n_entries; i++) {
        token[i] = en[i].token;
        expert[i] = en[i].expert;
        slot[i] = en[i].slot;
        dispatch_weight[i] = en[i].dispatch_w;
        combine_weight[i] = en[i].combine_w;
    }
}

/* ---- metrics: moe_metrics fields by JSON key ---- */

enum { M_LONG, M_INT, M_REAL, M_LONGS, M_REALS };
static const struct {
    const char *name;
    int kind;
    int extra; /* arrays: E + extra values */
    size_t off;
} metric_table[] = {
#define MT(name, kind, extra, field) {name, kind, extra, offsetof(moe_metrics, field)}
    MT("n_tokens", M_LONG, 0, n_tokens),
    MT("num_experts", M_INT, 0, E),
    MT("capacity", M_LONG, 0, capacity),
    MT("num_entries", M_LONG, 0, num_entries),
    MT("assigned_load", M_LONGS, 0, assigned_load),
    MT("kept_load", M_LONGS, 0, kept_load),
    MT("importance", M_REALS, 0, importance),
    MT("load_imbalance", M_REAL, 0, load_imbalance),
    MT("kept_load_imbalance", M_REAL, 0, kept_load_imbalance),
    MT("load_cv", M_REAL, 0, load_cv),
    MT("assignment_drop_rate", M_REAL, 0, assignment_drop_rate),
    MT("token_drop_rate", M_REAL, 0, token_drop_rate),
    MT("importance_cv2", M_REAL, 0, importance_cv2),
    MT("aux_loss", M_REAL, 0, aux_loss),
    MT("z_loss", M_REAL, 0, z_loss),
    MT("experts_per_token", M_LONGS, 1, experts_per_token),
    MT("flops_gate", M_REAL, 0, flops_gate),
    MT("flops_expert_useful", M_REAL, 0, flops_expert_useful),
    MT("flops_expert_padded", M_REAL, 0, flops_expert_padded),
    MT("flops_soft_dispatch", M_REAL, 0, flops_soft_dispatch),
    MT("flops_soft_combine", M_REAL, 0, flops_soft_combine),
    MT("output_error_dense", M_REAL, 0, output_error_dense),
    MT("output_error_dropless", M_REAL, 0, output_error_dropless),
#undef MT
};
enum { N_METRICS = sizeof metric_table / sizeof metric_table[0] };

const char *moesim_metric_name(int i)
{
    return i >= 0 && i < N_METRICS ? metric_table[i].name : NULL;
}

long moesim_result_metric(const moesim_result *r, int i, double *out, size_t len, int *is_int)
{
    if (i < 0 || i >= N_METRICS)
        return -1;
    const moe_metrics *mt = r->mt;
    const char *field = (const char *)mt + metric_table[i].off;
    int kind = metric_table[i].kind;
    size_t count = kind == M_LONGS || kind == M_REALS ? (size_t)mt->E + metric_table[i].extra : 1;
    *is_int = kind != M_REAL && kind != M_REALS;
    for (size_t j = 0; j < count && j < len; j++) {
        switch (kind) {
        case M_LONG: out[j] = (double)*(const long *)field; break;
        case M_INT: out[j] = (double)*(const int *)field; break;
        case M_REAL: out[j] = *(const double *)field; break;
        case M_LONGS: out[j] = (double)(*(long *const *)field)[j]; break;
        default: out[j] = (*(double *const *)field)[j]; break;
        }
    }
    return (long)count;
}

/* ---- the layer ---- */

int moesim_layer(const moesim_plan_view *pv, const float *x, int d, int f, const float *w1,
                 const float *b1, const float *w2, const float *b2, const char *activation,
                 float *y)
{
    api_enter();
    int act, rc;
    if ((rc = moe_act_parse(activation ? activation : "", &act)))
        return rc;
    if (pv->n_tokens <= 0 || pv->num_experts <= 0 || pv->capacity < 0 || d <= 0 || f <= 0)
        return moe_fail(MOE_EINPUT, NULL, "layer shape T = %d, E = %d, C = %ld, D = %d, F = %d: "
                        "need all >= 1, C >= 0 (moesim_layer)", pv->n_tokens, pv->num_experts,
                        pv->capacity, d, f);
    moe_plan *plan = moe_plan_alloc(pv->n_tokens, pv->num_experts, pv->n_entries);
    moe_layer *L = moe_layer_alloc(pv->n_tokens, pv->num_experts,
                                   pv->capacity > 0 ? pv->capacity : 1, d, f, act);
    if (!plan || !L) {
        rc = moe_fail(MOE_ENOMEM, NULL, "out of memory (layer for %d tokens)", pv->n_tokens);
        goto out;
    }
    plan->n = pv->n_tokens;
    plan->capacity = pv->capacity;
    plan->dense = pv->dense;
    for (size_t i = 0; i < pv->n_entries && !rc; i++)
        rc = moe_plan_push(plan, pv->token[i], pv->expert[i], pv->slot[i],
                           pv->dispatch_weight[i], pv->combine_weight[i]);
    moe_experts ex = {pv->num_experts, d, f, act, w1, b1, w2, b2};
    if (!rc)
        rc = moe_layer_forward(L, &ex, plan, x, y, NULL);
out:
    moe_layer_free(L);
    moe_plan_free(plan);
    return rc;
}

/* ---- what the library holds ---- */

int moesim_router_get(int i, moesim_router_info *out)
{
    int n = 0;
    while (moe_router_types[n])
        n++;
    if (i < 0 || i >= n)
        return -1;
    const moe_router_type *t = moe_router_types[i];
    unsigned fl = t->flags;
    *out = (moesim_router_info){t->name, t->summary, t->default_k,
                                !!(fl & MOE_RF_NEEDS_IDS), !!(fl & MOE_RF_USES_RNG),
                                !!(fl & MOE_RF_DENSE), !!(fl & MOE_RF_NEEDS_CHOICES),
                                !!(fl & MOE_RF_NO_CAPACITY), !!(fl & MOE_RF_ALL_EXPERTS)};
    return 0;
}

int moesim_option_get(int i, moesim_option_info *out)
{
    int n = 0;
    while (moe_route_options[n].key)
        n++;
    if (i < 0 || i >= n)
        return -1;
    const moe_option *op = &moe_route_options[i];
    *out = (moesim_option_info){op->key, op->type, op->def, op->choices, op->help};
    return 0;
}
