/* pipeline.c: one batch through the MoE layer (pipeline.h). Owns the point's workspaces: the
 * router and its dropless twin with their random generators, the layer, the plans, the metrics
 * and the buffers of the output errors, all allocated once in moe_pipeline_alloc.
 *
 * Sizes: plans hold max(T*k, E*min(C,T)) entries (T*M for dense plans), C the capacity of the
 * formula (moe_capacity) with k the router's k or the recorded k of replayed choices; the layer
 * has C_max = max(C, T) slots per expert unless the configuration gives C_max (a plan of the
 * dropless twin may put every token on one expert), P = M/E for dense plans.
 */
#include "pipeline.h"
#include "anchor_memo.h"
#include "blas_info.h"
#include "gate.h"

#include "jitter.h"
#include "route_memo.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

struct moe_pipeline {
    moe_pipeline_cfg cfg;
    int twin;                 /* the dropless twin runs (MOE_PIPE_ERRORS, router not dropless) */
    moe_router *r, *r2;       /* the router, its dropless twin */
    gsl_rng *rng, *rng2;      /* their random draws, seeded identically; NULL when not needed */
    moe_layer *L;
    moe_plan *plan, *plan2;
    moe_metrics *mt;
    long C_max;
    size_t cap;               /* plan entries */
    double *logits;           /* (T,M) gate output */
    const double *routed;     /* (T,M) logits of the last batch */
    int gate_computed;
    int wg_checked;             /* the gate weights were found finite */
    double *p;                /* (T,E) mixture weights */
    int *rows, nrows, rows_n; /* (T) rows of the dense-mixture error, for batches of rows_n */
    float *y, *y2, *ysub, *ydense; /* (T,D) */
    float *xj;                /* (T,D) jittered gate input (option jitter), or NULL */
    const double *jitter_u;   /* (T,D) given jitter draws, or NULL: the router's stream */
    const double *gated;      /* (T,M) the batch's gate output given (moe_pipeline_run_gated) */
    double gated_s;           /* the seconds it took */
    moe_route_memo *memo;     /* the memo of the router's capacity-free work, or NULL */
    unsigned long memo_batch; /* the number of the batch the next route routes (0: none) */
    moe_anchor_memo *anchor;  /* the memo of the anchor metrics' sums, or NULL */
};

int moe_pipeline_error_rows(int T, int error_rows, int *rows)
{
    int nr = (error_rows <= 0 || error_rows > T) ? T : error_rows;
    for (int i = 0; i < nr; i++)
        rows[i] = (int)(((long long)i * T) / nr);
    return nr;
}

void moe_pipeline_free(moe_pipeline *p)
{
    if (!p)
        return;
    moe_route_memo_keep(p->memo, p->r, p->plan); /* the last route's work, for the next point */
    moe_router_free(p->r);
    moe_router_free(p->r2);
    gsl_rng_free(p->rng);
    gsl_rng_free(p->rng2);
    moe_layer_free(p->L);
    moe_plan_free(p->plan);
    moe_plan_free(p->plan2);
    moe_metrics_free(p->mt);
    free(p->logits);
    free(p->p);
    free(p->rows);
    free(p->y);
    free(p->y2);
    free(p->ysub);
    free(p->ydense);
    free(p->xj);
    free(p);
}

/* Slots per expert *C_max and plan entries *cap of configuration c for E experts and a router
 * of k experts per token (see the header comment). */
static int plan_size(const moe_pipeline_cfg *c, int E, int k, long *C_max, size_t *cap)
{
    const int T = c->T;
    const int G = c->opts->group_size; /* routing groups: n/G blocks of slots */
    if (c->rtype->flags & MOE_RF_DENSE) {
        *C_max = (long)(c->M / E) * (G > 0 && G < T ? T / G : 1);
        *cap = (size_t)T * (size_t)c->M;
        return MOE_OK;
    }
    int kc = k > 0 ? k : 1;
    if (c->k_claims > kc)
        kc = c->k_claims;
    long C = 0;
    int rc = moe_route_capacity(c->opts, kc, T, E, &C);
    if (rc)
        return rc;
    *C_max = c->C_max > 0 ? c->C_max : (C < T ? T : C);
    size_t kept_max = (size_t)E * (size_t)(C < T ? C : T);
    *cap = (size_t)T * (size_t)kc;
    if (kept_max > *cap)
        *cap = kept_max; /* expert choice: E*C entries */
    return MOE_OK;
}

static int size_plans(moe_pipeline *p)
{
    return plan_size(&p->cfg, p->r->E, p->r->k, &p->C_max, &p->cap);
}

int moe_pipeline_estimate(const moe_pipeline_cfg *cfg, int E, int d, int f, int act,
                          double *bytes, double *layer, long *C_max)
{
    const moe_route_opts *o = cfg->opts;
    int k = o->k > 0 ? o->k : cfg->rtype->default_k;
    if (cfg->rtype->flags & MOE_RF_ALL_EXPERTS)
        k = E;
    long C = 0;
    size_t cap = 0;
    int rc = plan_size(cfg, E, k, &C, &cap);
    if (rc)
        return rc;
    const double T = cfg->T, M = cfg->M, fw = act == MOE_ACT_SWIGLU ? 2.0 * f : f;
    const int twin = (cfg->rtype->flags & MOE_RF_HAS_DROPLESS) && !o->dropless;
    double lay = (double)E * (double)(C > 1 ? C : 1) * (2.0 * d + fw) * sizeof(float);
    if (f == 0) /* routing only (moe_pipeline_cfg.w NULL): no layer, no outputs */
        lay = 0.0;
    double b = lay;
    b += (double)E * ((double)d * fw + fw + (double)f * d + d) * sizeof(float); /* weights */
    b += (1 + twin) * (double)cap * sizeof(moe_entry);                          /* plans */
    b += T * M * (sizeof(double) + 16.0);                           /* logits, router */
    if (f > 0) {
        b += (2 + twin + 2) * T * d * sizeof(float);           /* y, y2, ysub, ydense */
        b += T * E * sizeof(double);                            /* mixture weights */
    }
    if (f > 0 && cfg->shared_S > 0) { /* shared experts: weights, packed matrix, hidden rows */
        const double fws = (act == MOE_ACT_SWIGLU ? 2.0 : 1.0) * cfg->shared_f * cfg->shared_S;
        b += (2.0 * d * fws + (double)cfg->shared_f * cfg->shared_S * d + T * fws) *
             sizeof(float);
    }
    *bytes = b;
    if (layer)
        *layer = lay;
    if (C_max)
        *C_max = C;
    return MOE_OK;
}

static int alloc_routers(moe_pipeline *p)
{
    const moe_pipeline_cfg *c = &p->cfg;
    int rc = moe_router_alloc(c->rtype, c->opts, c->T, c->M, &p->r);
    if (rc)
        return rc;
    if (moe_router_needs_rng(c->rtype, c->opts)) {
        uint64_t stream = moe_router_stream(c->rtype);
        p->rng = moe_rng_alloc(c->seed, stream);
        p->rng2 = moe_rng_alloc(c->seed, stream);
        if (!p->rng || !p->rng2)
            return moe_fail(MOE_ENOMEM, NULL, "out of memory (rng)");
    }
    return size_plans(p);
}

/* ---- non-finite values ----
 * NaN or infinity in an input would flow through the GEMMs into NaN outputs and null error
 * metrics with exit status 0; finite inputs whose products overflow float32 would too. Inputs
 * are checked where they enter (weights once, x per batch), the plan and y where they leave. */

/* Index of the first non-finite value of v (len), or len when all are finite. */
static size_t first_nonfinite(const float *v, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if (!isfinite(v[i]))
            return i;
    return len;
}

/* MOE_OK, or the error naming name[row,col] (cols per row) and the point. */
static int check_finite(const float *v, size_t rows, size_t cols, const char *name,
                        const char *label)
{
    size_t i = first_nonfinite(v, rows * cols);
    if (i == rows * cols)
        return MOE_OK;
    return moe_fail(MOE_EINPUT, "inputs must be finite numbers",
                    "non-finite %s[%zu,%zu] = %g (%s)", name, i / cols, i % cols, (double)v[i],
                    label ? label : "pipeline");
}

/* Expert weights, viewed as rows per expert: w1 (E*D,FW), b1 (E,FW), w2 (E*F,D), b2 (E,D). */
static int check_experts(const moe_experts *w, const char *label)
{
    const size_t E = (size_t)w->E, D = (size_t)w->d, F = (size_t)w->f;
    const size_t FW = w->act == MOE_ACT_SWIGLU ? 2 * F : F;
    int rc;
    if ((rc = check_finite(w->w1, E * D, FW, "expert weight w1 (E*D,FW)", label)) ||
        (rc = check_finite(w->b1, E, FW, "expert bias b1 (E,FW)", label)) ||
        (rc = check_finite(w->w2, E * F, D, "expert weight w2 (E*F,D)", label)) ||
        (rc = check_finite(w->b2, E, D, "expert bias b2 (E,D)", label)))
        return rc;
    return MOE_OK;
}

/* Shared expert weights (shared_ffn.h), when there are any, viewed as rows per expert. */
static int check_shared(const moe_experts *w, const char *label)
{
    const moe_shared *sh = w->shared;
    if (!sh || sh->S == 0)
        return MOE_OK;
    int rc = moe_shared_check(sh, w->d, w->act, label ? label : "pipeline");
    const size_t S = (size_t)sh->S, D = (size_t)w->d, Fs = (size_t)sh->fs;
    const size_t FWs = w->act == MOE_ACT_SWIGLU ? 2 * Fs : Fs;
    if (rc || (rc = check_finite(sh->w1, S * D, FWs, "shared weight w1 (S*D,FWs)", label)) ||
        (rc = check_finite(sh->b1, S, FWs, "shared bias b1 (S,FWs)", label)) ||
        (rc = check_finite(sh->w2, S * Fs, D, "shared weight w2 (S*Fs,D)", label)) ||
        (rc = check_finite(sh->b2, S, D, "shared bias b2 (S,D)", label)) ||
        (sh->wg && (rc = check_finite(sh->wg, S, D, "shared gate wg (S,D)", label))))
        return rc;
    return MOE_OK;
}

/* Every dispatch and combine weight of the plan is finite (a router given finite logits can
 * still overflow, e.g. topk's noise with a huge --noise-std). */
static int check_plan(const moe_plan *pl, const char *label)
{
    const size_t i = moe_plan_first_nonfinite(pl);
    if (i < pl->n_entries) {
        const moe_entry *e = &pl->entries[i];
        return moe_fail(MOE_EINPUT, "the logits or the routing options overflow double "
                        "(e.g. --noise-std)", "the router gave token %d, expert %d a "
                        "non-finite weight (dispatch %g, combine %g) (%s)", (int)e->token,
                        (int)e->expert, e->dispatch_w, e->combine_w, label ? label : "pipeline");
    }
    return MOE_OK;
}

/* y (T,D) of finite inputs: a non-finite value means float32 overflowed in the layer. */
static int check_output(const float *y, int n, int d, const char *what, const char *label)
{
    size_t len = (size_t)n * (size_t)d, i = first_nonfinite(y, len);
    if (i == len)
        return MOE_OK;
    return moe_fail(MOE_EINPUT, "scale the inputs or the weights down",
                    "%s[%zu,%zu] = %g from finite inputs: float32 overflowed in the layer (%s)",
                    what, i / (size_t)d, i % (size_t)d, (double)y[i], label ? label : "pipeline");
}

int moe_pipeline_set_experts(moe_pipeline *p, const moe_experts *w)
{
    const moe_pipeline_cfg *c = &p->cfg;
    const int T = c->T, D = w->d;
    if (p->L)
        return moe_fail(MOE_EINVAL, NULL, "experts already set (moe_pipeline_set_experts)");
    if (w->E != p->r->E)
        return moe_fail(MOE_EINVAL, NULL, "%d experts given, the router has %d (%s)", w->E,
                        p->r->E, c->label ? c->label : "pipeline");
    int rc0 = check_experts(w, c->label);
    if (rc0)
        return rc0;
    if ((rc0 = check_shared(w, c->label)))
        return rc0;
    p->cfg.w = w;
    p->L = moe_layer_alloc(T, w->E, p->C_max, D, w->f, w->act);
    if (!p->L)
        return moe_fail(MOE_ENOMEM, NULL, "cannot allocate the layer (T = %d, E = %d, C = %ld, "
                        "D = %d, F = %d)", T, w->E, p->C_max, D, w->f);
    if ((rc0 = moe_layer_set_shared(p->L, w->shared)))
        return rc0;
    moe_layer_set_pad_to_capacity(p->L, p->r->opts.pad_to_capacity);
    p->y = malloc((size_t)T * D * sizeof *p->y);
    if (!p->y)
        return moe_fail(MOE_ENOMEM, NULL, "out of memory (layer output, %d tokens)", T);
    if (p->r->opts.jitter > 0.0 && c->wg && !(p->xj = malloc((size_t)T * D * sizeof *p->xj)))
        return moe_fail(MOE_ENOMEM, NULL, "out of memory (jittered gate input, %d tokens)", T);
    if (!(c->flags & MOE_PIPE_ERRORS))
        return MOE_OK;
    p->twin = (c->rtype->flags & MOE_RF_HAS_DROPLESS) && !c->opts->dropless;
    if (p->twin) {
        moe_route_opts o2 = *c->opts;
        o2.dropless = 1;
        int rc = moe_router_alloc(c->rtype, &o2, T, c->M, &p->r2);
        if (rc)
            return rc;
        p->plan2 = moe_plan_alloc(T, w->E, p->cap);
        p->y2 = malloc((size_t)T * D * sizeof *p->y2);
    }
    p->p = malloc((size_t)T * w->E * sizeof *p->p);
    p->rows = malloc((size_t)T * sizeof *p->rows);
    p->ysub = malloc((size_t)T * D * sizeof *p->ysub);
    p->ydense = malloc((size_t)T * D * sizeof *p->ydense);
    if ((p->twin && (!p->plan2 || !p->y2)) || !p->p || !p->rows || !p->ysub || !p->ydense)
        return moe_fail(MOE_ENOMEM, NULL, "out of memory (output errors, %d tokens)", T);
    p->nrows = moe_pipeline_error_rows(T, c->error_rows, p->rows);
    p->rows_n = T;
    return MOE_OK;
}

int moe_pipeline_alloc(const moe_pipeline_cfg *cfg, moe_pipeline **out)
{
    *out = NULL;
    moe_pipeline *p = calloc(1, sizeof *p);
    if (!p)
        return moe_fail(MOE_ENOMEM, NULL, "out of memory (pipeline)");
    p->cfg = *cfg;
    p->cfg.w = NULL;
    const int T = cfg->T, M = cfg->M;
    int rc = alloc_routers(p);
    if (!rc) {
        p->plan = moe_plan_alloc(T, p->r->E, p->cap);
        p->mt = (cfg->flags & MOE_PIPE_METRICS) ? moe_metrics_alloc(p->r->E) : NULL;
        p->logits = cfg->wg ? malloc((size_t)T * M * sizeof *p->logits) : NULL;
        if (!p->plan || ((cfg->flags & MOE_PIPE_METRICS) && !p->mt) || (cfg->wg && !p->logits))
            rc = moe_fail(MOE_ENOMEM, NULL, "out of memory (plan of %d tokens)", T);
    }
    if (!rc && p->mt) /* expert groups, routing groups, sequences of the metrics */
        rc = moe_metrics_set_opts(p->mt, &p->r->opts);
    if (!rc && p->mt) /* the metrics read the router's softmax rows as it computes them */
        rc = moe_metrics_attach(p->mt, p->plan, T, p->r->k);
    if (!rc && cfg->w)
        rc = moe_pipeline_set_experts(p, cfg->w);
    if (!rc && cfg->ep)
        rc = cfg->ep->begin(cfg->ep->ctx, &p->cfg, p->r, p->C_max, p->cap);
    if (rc) {
        moe_pipeline_free(p);
        return rc;
    }
    *out = p;
    return MOE_OK;
}

/* ---- stages: the only calls of the router and of the layer forward ---- */

int moe_pipeline_route_stage(moe_router *r, const moe_route_in *in, moe_plan *plan,
                             double *seconds)
{
    if (!seconds)
        return moe_router_route(r, in, plan);
    double t0 = moe_now();
    int rc = moe_router_route(r, in, plan);
    *seconds = moe_now() - t0;
    return rc;
}

int moe_pipeline_layer_stage(moe_layer *L, const moe_experts *w, const moe_plan *plan,
                             const float *x, float *y, moe_phase_times *tm)
{
    return moe_layer_forward(L, w, plan, x, y, tm);
}

/* output_error_dense and output_error_dropless of the batch just routed and run. */
static int output_errors(moe_pipeline *p, const moe_batch *b, const moe_route_in *in)
{
    const moe_experts *w = p->cfg.w;
    const int T = in->n, D = w->d;
    moe_plan_mixture_weights(p->plan, in->logits, p->p);
    int rc;
    if (T != p->rows_n) { /* a batch of another size: its own rows */
        p->nrows = moe_pipeline_error_rows(T, p->cfg.error_rows, p->rows);
        p->rows_n = T;
    }
    const int nrows = p->nrows;
    if ((rc = moe_layer_dense_mixture(p->L, w, b->x, T, p->p, p->rows, nrows, p->ydense)))
        return rc;
    for (int i = 0; i < nrows; i++)
        memcpy(p->ysub + (size_t)i * D, p->y + (size_t)p->rows[i] * D, (size_t)D * sizeof *p->y);
    if ((rc = check_output(p->ydense, nrows, D, "dense-mixture output", p->cfg.label)))
        return rc;
    p->mt->output_error_dense = moe_rel_l2(p->ysub, p->ydense, (size_t)nrows * D);
    if (p->twin) {
        moe_route_in in2 = *in;
        in2.rng = p->rng2;
        if ((rc = moe_pipeline_route_stage(p->r2, &in2, p->plan2, NULL)) ||
            (rc = check_plan(p->plan2, p->cfg.label)) ||
            (rc = moe_pipeline_layer_stage(p->L, w, p->plan2, b->x, p->y2, NULL)) ||
            (rc = check_output(p->y2, T, D, "dropless output", p->cfg.label)))
            return rc;
        p->mt->output_error_dropless = moe_rel_l2(p->y, p->y2, (size_t)T * D);
        if ((p->cfg.flags & MOE_PIPE_OBSERVE) && p->r2->type->observe)
            p->r2->type->observe(p->r2, &in2, p->plan2);
    } else if (p->cfg.rtype->flags & MOE_RF_HAS_DROPLESS) {
        p->mt->output_error_dropless = 0.0; /* dropless already: its own dropless form */
    }
    return MOE_OK;
}

int moe_pipeline_run_batch(moe_pipeline *p, const moe_batch *b, const double *uniforms,
                           moe_phase_times *tm)
{
    const moe_pipeline_cfg *c = &p->cfg;
    const unsigned fl = c->flags;
    moe_phase_times t = {0};
    int rc;
    if ((fl & MOE_PIPE_LAYER) && !p->L)
        return moe_fail(MOE_EINVAL, NULL, "the layer needs expert weights (%s)",
                        c->label ? c->label : "pipeline");
    /* gate */
    p->routed = b->logits;
    p->gate_computed = 0;
    const int D = p->L ? c->w->d : b->d; /* no layer: routing only, the gate on the batch's x */
    if (b->x && !p->gated && (!p->routed || (fl & MOE_PIPE_LAYER)) && (p->L || !p->routed) &&
        (rc = check_finite(b->x, (size_t)b->n, (size_t)D, "input x", c->label)))
        return rc;
    if (p->routed && p->r->opts.jitter > 0.0)
        return moe_fail(MOE_EINVAL, "jitter needs the gate: give x and the gate weights, not "
                        "the logits", "jitter %g on a batch that brings its logits (%s)",
                        p->r->opts.jitter, c->label ? c->label : "pipeline");
    if (!p->routed) {
        if (!c->wg || !b->x)
            return moe_fail(MOE_EINVAL, NULL, "batch without logits and no gate (%s)",
                            c->label ? c->label : "pipeline");
        if (!p->wg_checked &&
            (rc = check_finite(c->wg, (size_t)D, (size_t)c->M, "gate weight wg",
                               c->label)))
            return rc;
        p->wg_checked = 1;
        double t0 = moe_now();
        const float *xg = b->x;
        if (p->xj) { /* jitter: the gate sees x * U(1-eps, 1+eps); the twin's stream follows */
            if ((rc = moe_jitter_apply(b->x, b->n, D, p->r->opts.jitter, p->jitter_u, p->rng,
                                       p->xj)))
                return rc;
            if (p->rng2)
                gsl_rng_memcpy(p->rng2, p->rng);
            xg = p->xj;
        }
        if (p->gated && !p->xj) { /* computed earlier from this x and wg: the same values */
            t.gate = p->gated_s;
            p->routed = p->gated;
        } else {
            if (p->L && (rc = moe_layer_gate(p->L, xg, b->n, c->wg, c->M, p->logits)))
                return rc;
            if (!p->L)
                moe_pipeline_gate_stage(xg, b->n, D, c->wg, c->M, p->logits, NULL);
            t.gate = moe_now() - t0;
            p->routed = p->logits;
        }
        p->gate_computed = 1;
    }
    /* route. Logits of the fixed-order gate on finite x and Wg are finite (each product of
     * two floats is below 2^256 and is exact in double, D of them sum far below DBL_MAX): the
     * router need not read them all once more to check (jittered x excepted). */
    p->r->finite_logits = p->gate_computed && !p->xj ? p->routed : NULL;
    if (p->r2)
        p->r2->finite_logits = p->r->finite_logits;
    moe_route_in in = {b->n, c->M, p->routed, b->ids, uniforms, p->rng, b->choices, b->choice_w,
                       b->k_rec, b->gumbel_u, b->rts_u};
    moe_route_memo_begin(p->memo, p->r, &in, p->plan, p->memo_batch);
    rc = moe_pipeline_route_stage(p->r, &in, p->plan, &t.route);
    moe_route_memo_end(p->memo, p->r, rc);
    if (rc || (rc = check_plan(p->plan, c->label)))
        return rc;
    /* dispatch, experts, combine */
    if (fl & MOE_PIPE_LAYER) {
        moe_phase_times lt = {0};
        if ((rc = c->ep ? c->ep->forward(c->ep->ctx, c->w, p->plan, &in, b->x, p->y, &lt)
                        : moe_pipeline_layer_stage(p->L, c->w, p->plan, b->x, p->y, &lt)))
            return rc;
        if (c->ep && (rc = moe_layer_forward_shared(p->L, c->w, b->x, b->n, p->y, &lt)))
            return rc; /* every rank runs the shared experts on its whole batch */
        if ((rc = check_output(p->y, b->n, c->w->d, "layer output y", c->label)))
            return rc;
        t.dispatch = lt.dispatch;
        t.experts = lt.experts;
        t.combine = lt.combine;
    }
    t.total = t.gate + t.route + t.dispatch + t.experts + t.combine;
    /* metrics and output errors */
    const moe_experts *w = p->L ? c->w : NULL;
    const unsigned long batch = p->gated && p->routed == p->gated ? p->memo_batch : 0;
    if ((fl & MOE_PIPE_METRICS) &&
        (rc = moe_metrics_compute_memo(p->plan, p->routed,
                                       w ? w->d : p->gate_computed ? D : 0, w ? w->f : 0,
                                       w ? w->act : 0, p->gate_computed, p->anchor, batch,
                                       p->mt)))
        return rc;
    if ((fl & MOE_PIPE_METRICS) && w && w->shared) { /* every token through the shared FFNs */
        double sf = (double)b->n * moe_shared_flops_per_token(w->shared, w->d, w->act);
        p->mt->flops_expert_useful += sf;
        p->mt->flops_expert_padded += sf;
        p->mt->flops_expert_executed += sf;
    }
    if ((fl & MOE_PIPE_ERRORS) && (fl & MOE_PIPE_LAYER) && (fl & MOE_PIPE_METRICS) &&
        (rc = output_errors(p, b, &in)))
        return rc;
    if ((fl & MOE_PIPE_OBSERVE) && p->r->type->observe)
        p->r->type->observe(p->r, &in, p->plan);
    if (tm)
        *tm = t;
    return MOE_OK;
}

void moe_pipeline_set_jitter_draws(moe_pipeline *p, const double *u) { p->jitter_u = u; }

void moe_pipeline_reseed(moe_pipeline *p, uint64_t seed)
{
    const uint64_t stream = moe_router_stream(p->cfg.rtype);
    p->cfg.seed = seed;
    if (p->rng)
        moe_pcg32_seed(gsl_rng_state(p->rng), seed, stream);
    if (p->rng2)
        moe_pcg32_seed(gsl_rng_state(p->rng2), seed, stream);
}

void moe_pipeline_gate_stage(const float *x, int n, int D, const float *wg, int M,
                             double *logits, double *seconds)
{
    const double t0 = moe_now();
    moe_gate_logits(x, (size_t)n, (size_t)D, wg, (size_t)M, logits, moe_blas_threads());
    if (seconds)
        *seconds = moe_now() - t0;
}

/* A source's batch b (number index) is (T,D,M). */
static int check_source_batch(const moe_pipeline *p, const moe_batch *b, int index)
{
    const moe_pipeline_cfg *c = &p->cfg;
    int D = c->w ? c->w->d : b->d;
    if (b->n != c->T || b->d != D || b->m != c->M)
        return moe_fail(MOE_EINVAL, NULL, "source %s gave a batch of (%d,%d,%d), expected "
                        "T = %d, D = %d, M = %d (batch %d)", c->source ? c->source : "?", b->n,
                        b->d, b->m, c->T, D, c->M, index);
    return MOE_OK;
}

int moe_pipeline_run_source(moe_pipeline *p, moe_source *src, int index, moe_phase_times *tm)
{
    moe_batch b;
    int rc = moe_source_batch(src, index, &b);
    if (rc || (rc = check_source_batch(p, &b, index)))
        return rc;
    return moe_pipeline_run_batch(p, &b, NULL, tm);
}

int moe_pipeline_check_x(const float *x, int n, int D, const char *label)
{
    return check_finite(x, (size_t)n, (size_t)D, "input x", label);
}

int moe_pipeline_run_gated(moe_pipeline *p, const moe_batch *b, int index, const double *logits,
                           double gate_s, moe_phase_times *tm)
{
    int rc = check_source_batch(p, b, index);
    if (rc)
        return rc;
    p->gated = b->logits ? NULL : logits;
    p->gated_s = gate_s;
    rc = moe_pipeline_run_batch(p, b, NULL, tm);
    p->gated = NULL;
    p->memo_batch = 0;
    return rc;
}

void moe_pipeline_set_memo(moe_pipeline *p, moe_route_memo *m, unsigned long batch)
{
    p->memo = m;
    p->memo_batch = batch;
}

void moe_pipeline_set_anchor_memo(moe_pipeline *p, moe_anchor_memo *m) { p->anchor = m; }

moe_router *moe_pipeline_router(const moe_pipeline *p) { return p->r; }
const moe_plan *moe_pipeline_plan(const moe_pipeline *p) { return p->plan; }
const moe_metrics *moe_pipeline_metrics(const moe_pipeline *p) { return p->mt; }
const float *moe_pipeline_output(const moe_pipeline *p) { return p->y; }
const double *moe_pipeline_logits(const moe_pipeline *p) { return p->routed; }
int moe_pipeline_gate_computed(const moe_pipeline *p) { return p->gate_computed; }
const moe_layer *moe_pipeline_layer(const moe_pipeline *p) { return p->L; }
