/* api.c: the C API of libmoesim.so (moesim_api.h) over the library's public functions:
 * moe_route_opts_set for the options, the one-batch pipeline (pipeline.h) for the plan and its
 * metrics, moe_layer_alloc and the pipeline's layer stage for a given plan through the layer.
 * Each call does what `moesim route` does for the same inputs (sim/cmd_route.c), so that
 * results match it bit for bit; a freed result's pipeline is kept for the next call of the same
 * router, options and shape, and the float64 copy of float32 logits too (moesim_release). */
#include "moesim_api.h"

#include "layer.h"
#include "moe.h"
#include "metric_table.h"
#include "options.h"
#include "pipeline.h"
#include "presets.h"
#include "../routers/par.h"

#include <math.h>
#include <pthread.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

_Static_assert((int)MOESIM_EINVAL == MOE_EINVAL && (int)MOESIM_EIO == MOE_EIO &&
               (int)MOESIM_EFORMAT == MOE_EFORMAT && (int)MOESIM_ENOMEM == MOE_ENOMEM &&
               (int)MOESIM_EINPUT == MOE_EINPUT, "moesim_api.h status codes follow moe.h");

struct moesim_result {
    moe_route_opts opts;          /* must outlive the pipeline */
    const int64_t *caller_table;  /* a hash table given by the caller (not freed here) */
    moe_pipeline *pipe;  /* owns the plan and the metrics of the routed batch */
    const moe_plan *plan;
    const moe_metrics *mt;
    char *key;           /* the call that made it (call_key), or NULL: not to be kept */
    size_t key_len;
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

static int set_options(const moesim_route_args *a, const char *router, moe_route_opts *o)
{
    for (int i = 0; i < a->n_opts; i++) {
        if (!a->keys[i] || !a->values[i])
            return moe_fail(MOE_EINVAL, NULL, "routing option %d has no key or value", i);
        int rc = moe_route_opts_set(o, a->keys[i], a->values[i]);
        if (!rc)
            rc = moe_route_option_check(a->keys[i], router);
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

/* The router type: a->router, or the preset's (applied to o first); a router given with a
 * preset must be the preset's. */
static int route_type(const moesim_route_args *a, moe_route_opts *o, const moe_router_type **t)
{
    const char *name = a->router;
    *t = NULL;
    if (a->preset) {
        const moe_preset *p;
        int rc = moe_preset_lookup(a->preset, &p);
        if (rc) {
            moe_error_where("preset");
            return rc;
        }
        if (name && strcmp(name, p->router))
            return moe_fail(MOE_EINVAL, "leave out router, or give the options without a preset",
                            "router %s conflicts with preset %s (router %s) (router)", name,
                            p->name, p->router);
        name = p->router;
        if ((rc = moe_preset_apply(p, o, NULL, NULL)))
            return rc;
    }
    *t = name ? moe_router_find(name) : NULL;
    if (!*t)
        return moe_fail(MOE_EINVAL, "moesim.routers() lists them", "unknown router '%s' (router)",
                        name ? name : "(null)");
    return MOE_OK;
}

/* MOE_OK when every draw of u (T,M) is strictly between 0 and 1 (what = the argument). */
static int check_draws(const double *u, int n, int m, const char *what)
{
    for (size_t i = 0; u && i < (size_t)n * (size_t)m; i++)
        if (!(u[i] > 0.0 && u[i] < 1.0))
            return moe_fail(MOE_EINPUT, "draws are uniforms strictly between 0 and 1",
                            "%s value %g at token %zu, column %zu is outside (0,1) (%s)", what,
                            u[i], i / (size_t)m, i % (size_t)m, what);
    return MOE_OK;
}

typedef struct {
    const float *src;
    double *dst;
    long len;
} widen_job;

static void widen_part(void *ctx, int i, int nparts)
{
    const widen_job *w = ctx;
    long lo, hi;
    moe_par_range(w->len, i, nparts, &lo, &hi);
    for (long j = lo; j < hi; j++)
        w->dst[j] = w->src[j];
}

/* The float64 copy of float32 logits is kept for the next call of at most its size: a fresh
 * 32 MiB array (65536 x 64) costs page faults and the kernel's zeroing of every page on first
 * write, about as much CPU as the conversion itself, where a reused one costs neither. One buffer
 * for the process, taken under the lock, so concurrent calls on other threads allocate their
 * own; moesim_release frees it. */
static pthread_mutex_t wide_lock = PTHREAD_MUTEX_INITIALIZER;
static double *wide_keep;   /* the kept buffer, or NULL (taken, or none yet) */
static size_t wide_keep_n;  /* its length in doubles */

/* A buffer of len doubles: the kept one if large enough, else a new one. A large array is
 * aligned to 2 MiB and marked for transparent huge pages (one fault per 2 MiB instead of per
 * 4 KiB; NumPy does the same for its large arrays). */
static double *wide_take(size_t len, size_t *cap)
{
    pthread_mutex_lock(&wide_lock);
    double *dst = wide_keep;
    *cap = wide_keep_n;
    wide_keep = NULL;
    wide_keep_n = 0;
    pthread_mutex_unlock(&wide_lock);
    if (dst && *cap >= len)
        return dst;
    free(dst);
    size_t bytes = len * sizeof(double), huge = (size_t)2 << 20;
    if (bytes >= huge) {
        bytes = (bytes + huge - 1) / huge * huge; /* aligned_alloc: a multiple of huge */
        dst = aligned_alloc(huge, bytes);
#ifdef MADV_HUGEPAGE
        if (dst)
            madvise(dst, bytes, MADV_HUGEPAGE); /* advice only: a failure leaves 4 KiB pages */
#endif
    } else {
        dst = malloc(bytes);
    }
    *cap = bytes / sizeof(double);
    return dst;
}

/* Keep buf (cap doubles) for the next call, or free it when a buffer is kept already. */
static void wide_give(double *buf, size_t cap)
{
    if (!buf)
        return;
    pthread_mutex_lock(&wide_lock);
    if (!wide_keep) {
        wide_keep = buf;
        wide_keep_n = cap;
        buf = NULL;
    }
    pthread_mutex_unlock(&wide_lock);
    free(buf);
}

/* float32 logits (T,M) widened (exactly) into a double array of *cap >= T*M values (give it
 * back with wide_give), the parts on the router's threads. */
static double *widen_logits(const float *src, int n, int m, size_t *cap)
{
    long len = (long)n * m;
    double *dst = wide_take((size_t)len, cap);
    if (!dst) {
        moe_fail(MOE_ENOMEM, NULL, "out of memory (float64 copy of the float32 logits)");
        return NULL;
    }
    widen_job w = {src, dst, len};
    moe_par_run(widen_part, &w, moe_par_parts(len, 1L << 16));
    return dst;
}

/* ---- the routing of the last call, kept for the next ----
 * A routing call allocates a pipeline (router workspaces, plan, metrics: tens of MiB at 65536 x
 * 64) whose buffers fault once per 4 KiB page when first written (about 1800 faults per topk
 * call, a fifth to a half of the call's CPU time on a virtual machine) unless the C library
 * happens to reuse freed memory, which depends on the process's allocation history. So a freed
 * result is kept (one for the process) and taken by the next call with the same router, preset,
 * options (as text, in order), T, M and Krec: its router and buffers route the new batch, its
 * draws seeded again, as a pipeline that runs batch after batch in `moesim run`. Calls with a
 * hash table are not kept (its content may change under the same pointer or path). */
static pthread_mutex_t kept_lock = PTHREAD_MUTEX_INITIALIZER;
static moesim_result *kept;

static void result_destroy(moesim_result *r)
{
    moe_pipeline_free(r->pipe);
    if (r->opts.hash_table == r->caller_table) /* the caller's: not ours to free */
        r->opts.hash_table = NULL;
    moe_route_opts_release(&r->opts);
    free(r->key);
    free(r);
}

/* The text of what determines a call's pipeline (router, preset, options, T, M, Krec), in
 * *len bytes, or NULL when it is not to be kept (a hash table) or out of memory. */
static char *call_key(const moesim_route_args *a, size_t *len)
{
    if (a->hash_table)
        return NULL;
    size_t n = 3 * sizeof(int) + 2;
    const char *r = a->router ? a->router : "", *p = a->preset ? a->preset : "";
    n += strlen(r) + strlen(p);
    for (int i = 0; i < a->n_opts; i++) {
        if (!a->keys[i] || !a->values[i] || !strcmp(a->keys[i], "hash_table"))
            return NULL;
        n += strlen(a->keys[i]) + strlen(a->values[i]) + 2;
    }
    char *key = malloc(n), *q = key;
    if (!key)
        return NULL;
    const int dims[3] = {a->n, a->m, a->k_rec};
    memcpy(q, dims, sizeof dims);
    q += sizeof dims;
    for (int i = -2; i < a->n_opts; i++) { /* router, preset, then key and value pairs */
        const char *parts[2] = {i == -2 ? r : i == -1 ? p : a->keys[i],
                                i < 0 ? NULL : a->values[i]};
        for (int j = 0; j < 2 && parts[j]; j++) {
            size_t l = strlen(parts[j]) + 1;
            memcpy(q, parts[j], l);
            q += l;
        }
    }
    *len = (size_t)(q - key);
    return key;
}

/* The kept result if it was made by the call of key, else NULL. */
static moesim_result *kept_take(const char *key, size_t len)
{
    moesim_result *r = NULL;
    pthread_mutex_lock(&kept_lock);
    if (kept && kept->key_len == len && !memcmp(kept->key, key, len)) {
        r = kept;
        kept = NULL;
    }
    pthread_mutex_unlock(&kept_lock);
    return r;
}

void moesim_release(void)
{
    pthread_mutex_lock(&kept_lock);
    moesim_result *r = kept;
    kept = NULL;
    pthread_mutex_unlock(&kept_lock);
    if (r)
        result_destroy(r);
    pthread_mutex_lock(&wide_lock);
    double *buf = wide_keep;
    wide_keep = NULL;
    wide_keep_n = 0;
    pthread_mutex_unlock(&wide_lock);
    free(buf);
}

/* A new result for call a: its router and options set, its pipeline allocated. */
static int result_new(const moesim_route_args *a, moesim_result **out)
{
    moesim_result *res = calloc(1, sizeof *res);
    if (!res)
        return moe_fail(MOE_ENOMEM, NULL, "out of memory (result)");
    moe_route_opts *o = &res->opts;
    moe_route_opts_default(o);
    res->caller_table = a->hash_table;
    const moe_router_type *t = NULL;
    int rc = route_type(a, o, &t);
    if (!rc)
        rc = set_options(a, t->name, o);
    if (!rc) { /* routing and metrics only, as `moesim route` */
        const moe_pipeline_cfg cfg = {.rtype = t, .opts = o, .T = a->n, .M = a->m,
                                      .k_claims = a->k_rec, .seed = a->seed,
                                      .label = "moesim.route", .flags = MOE_PIPE_METRICS};
        rc = moe_pipeline_alloc(&cfg, &res->pipe);
    }
    if (rc) {
        result_destroy(res);
        return rc;
    }
    *out = res;
    return MOE_OK;
}

int moesim_route(const moesim_route_args *a, moesim_result **out)
{
    api_enter();
    *out = NULL;
    if (a->n <= 0 || a->m <= 0 || !a->logits)
        return moe_fail(MOE_EINPUT, NULL, "logits have shape (%d,%d): need n >= 1, M >= 1 (logits)",
                        a->n, a->m);
    if (a->logits_dtype != MOESIM_F64 && a->logits_dtype != MOESIM_F32)
        return moe_fail(MOE_EINVAL, NULL, "logits_dtype %d is neither MOESIM_F64 nor MOESIM_F32 "
                        "(logits_dtype)", a->logits_dtype);
    size_t key_len = 0;
    char *key = call_key(a, &key_len);
    moesim_result *res = key ? kept_take(key, key_len) : NULL;
    int rc = MOE_OK;
    if (res) { /* the kept pipeline: the draws from the seed again */
        free(key);
        moe_pipeline_reseed(res->pipe, a->seed);
    } else if (!(rc = result_new(a, &res))) {
        res->key = key;
        res->key_len = key_len;
    } else {
        free(key);
        return rc;
    }
    double *wide = NULL;
    size_t wide_cap = 0;
    if (!(rc = check_draws(a->gumbel_uniforms, a->n, a->m, "gumbel_uniforms")))
        rc = check_draws(a->rts_uniforms, a->n, a->m, "rts_uniforms");
    if (!rc && a->logits_dtype == MOESIM_F32 &&
        !(wide = widen_logits(a->logits, a->n, a->m, &wide_cap)))
        rc = MOE_ENOMEM;
    if (!rc) { /* one batch through the pipeline */
        const moe_batch batch = {a->n, 0, a->m, NULL, (int64_t *)a->token_ids,
                                 wide ? wide : (double *)a->logits, (int32_t *)a->choices,
                                 (double *)a->choice_weights, a->k_rec,
                                 (double *)a->gumbel_uniforms, (double *)a->rts_uniforms};
        if (!(rc = moe_pipeline_run_batch(res->pipe, &batch, a->uniforms, NULL))) {
            res->plan = moe_pipeline_plan(res->pipe);
            res->mt = moe_pipeline_metrics(res->pipe);
        }
    }
    wide_give(wide, wide_cap);
    if (rc)
        result_destroy(res); /* a failed batch may leave the pipeline half-run: not kept */
    else
        *out = res;
    return rc;
}

/* Keep r for the next call (replacing the one kept), or free it if it is not to be kept. */
void moesim_result_free(moesim_result *r)
{
    if (!r)
        return;
    if (r->key) {
        pthread_mutex_lock(&kept_lock);
        moesim_result *old = kept;
        kept = r;
        pthread_mutex_unlock(&kept_lock);
        r = old;
    }
    if (r)
        result_destroy(r);
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

/* ---- metrics: the metric table (sim/metric_table.c), in the order of the metrics JSON ---- */

const char *moesim_metric_name(int i)
{
    const moe_point_metric *m = moe_metric_in_order(i + 1);
    return m ? m->name : NULL;
}

long moesim_result_metric(const moesim_result *r, int i, double *out, size_t len, int *is_int)
{
    const moe_point_metric *m = moe_metric_in_order(i + 1);
    if (!m)
        return -1;
    const moe_metrics *mt = r->mt;
    const char *field = (const char *)mt + m->offset;
    const size_t count = moe_metric_len(m, mt);
    *is_int = m->kind != MOE_METRIC_DOUBLE && m->kind != MOE_METRIC_EXPERT_DOUBLE;
    for (size_t j = 0; j < count && j < len; j++) {
        switch (m->kind) {
        case MOE_METRIC_DOUBLE:
        case MOE_METRIC_LONG: out[j] = moe_metric_value(mt, m); break;
        case MOE_METRIC_INT: out[j] = (double)*(const int *)field; break;
        case MOE_METRIC_EXPERT_DOUBLE: out[j] = (*(double *const *)field)[j]; break;
        default: out[j] = (double)(*(long *const *)field)[j]; break; /* per expert, histogram */
        }
    }
    return (long)count;
}

/* ---- the layer ---- */

static _Thread_local long layer_rows = -1; /* moesim_layer_rows_run */

long moesim_layer_rows_run(void) { return layer_rows; }

/* The layer's options of pv (moesim_plan_view.keys/values): validated by the option table, then
 * only those the layer uses. *pad: pad_to_capacity. */
static int layer_options(const moesim_plan_view *pv, int *pad)
{
    moe_route_opts o;
    moe_route_opts_default(&o);
    int rc = MOE_OK;
    for (int i = 0; i < pv->n_opts && !rc; i++) {
        if (!pv->keys || !pv->values || !pv->keys[i] || !pv->values[i])
            rc = moe_fail(MOE_EINVAL, NULL, "layer option %d has no key or value (moesim_layer)",
                          i);
        else if ((rc = moe_route_opts_set(&o, pv->keys[i], pv->values[i])))
            moe_error_where("option %s", pv->keys[i]);
        else if (strcmp(pv->keys[i], "pad_to_capacity") != 0)
            rc = moe_fail(MOE_EINVAL, "give routing options to moesim_route",
                          "option %s is not an option of the layer, which takes "
                          "pad_to_capacity (moesim_layer)", pv->keys[i]);
    }
    *pad = o.pad_to_capacity;
    moe_route_opts_release(&o);
    return rc;
}

int moesim_layer(const moesim_plan_view *pv, const float *x, int d, int f, const float *w1,
                 const float *b1, const float *w2, const float *b2, const char *activation,
                 float *y)
{
    api_enter();
    int act, rc, pad = 0;
    if ((rc = moe_act_parse(activation ? activation : "", &act)) || (rc = layer_options(pv, &pad)))
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
    moe_experts ex = {pv->num_experts, d, f, act, w1, b1, w2, b2, NULL};
    moe_layer_set_pad_to_capacity(L, pad);
    if (!rc && !(rc = moe_pipeline_layer_stage(L, &ex, plan, x, y, NULL)))
        layer_rows = (long)moe_layer_rows_run(L);
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
    static _Thread_local char def[64], choices[64]; /* valid until the next call */
    moe_option_default_text(op, def, sizeof def);
    moe_option_choices_text(op, choices, sizeof choices);
    *out = (moesim_option_info){op->key, op->type, def, choices, op->help};
    return 0;
}

int moesim_preset_get(int i, moesim_preset_info *out)
{
    int n = 0;
    while (moe_presets[n].name)
        n++;
    if (i < 0 || i >= n)
        return -1;
    const moe_preset *p = &moe_presets[i];
    int k = 0;
    while (k < MOE_PRESET_MAX_SET && p->set[k])
        k++;
    *out = (moesim_preset_info){p->name, p->router, k, p->set, p->source};
    return 0;
}
