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
    double *p;                /* (T,E) mixture weights */
    int *rows, nrows, rows_n; /* (T) rows of the dense-mixture error, for batches of rows_n */
    float *y, *y2, *ysub, *ydense; /* (T,D) */
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
    free(p);
}

/* Slots per expert and plan entries for the configuration (see the header comment). */
static int size_plans(moe_pipeline *p)
{
    const moe_pipeline_cfg *c = &p->cfg;
    const int T = c->T, E = p->r->E;
    if (c->rtype->flags & MOE_RF_DENSE) {
        p->C_max = c->M / E;
        p->cap = (size_t)T * (size_t)c->M;
        return MOE_OK;
    }
    int kc = p->r->k > 0 ? p->r->k : 1;
    if (c->k_claims > kc)
        kc = c->k_claims;
    long C = 0;
    int rc = moe_capacity(c->opts, kc, T, E, &C);
    if (rc)
        return rc;
    p->C_max = c->C_max > 0 ? c->C_max : (C < T ? T : C);
    size_t kept_max = (size_t)E * (size_t)(C < T ? C : T);
    p->cap = (size_t)T * (size_t)kc;
    if (kept_max > p->cap)
        p->cap = kept_max; /* expert choice: E*C entries */
    return MOE_OK;
}

static int alloc_routers(moe_pipeline *p)
{
    const moe_pipeline_cfg *c = &p->cfg;
    int rc = moe_router_alloc(c->rtype, c->opts, c->T, c->M, &p->r);
    if (rc)
        return rc;
    if ((c->rtype->flags & MOE_RF_USES_RNG) || c->opts->noise_std > 0.0 ||
        c->opts->select == MOE_SELECT_RSAMPLE) {
        uint64_t stream = moe_router_stream(c->rtype);
        p->rng = moe_rng_alloc(c->seed, stream);
        p->rng2 = moe_rng_alloc(c->seed, stream);
        if (!p->rng || !p->rng2)
            return moe_fail(MOE_ENOMEM, NULL, "out of memory (rng)");
    }
    return size_plans(p);
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
    p->cfg.w = w;
    p->L = moe_layer_alloc(T, w->E, p->C_max, D, w->f, w->act);
    if (!p->L)
        return moe_fail(MOE_ENOMEM, NULL, "cannot allocate the layer (T = %d, E = %d, C = %ld, "
                        "D = %d, F = %d)", T, w->E, p->C_max, D, w->f);
    p->y = malloc((size_t)T * D * sizeof *p->y);
    if (!p->y)
        return moe_fail(MOE_ENOMEM, NULL, "out of memory (layer output, %d tokens)", T);
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
    p->mt->output_error_dense = moe_rel_l2(p->ysub, p->ydense, (size_t)nrows * D);
    if (p->twin) {
        moe_route_in in2 = *in;
        in2.rng = p->rng2;
        if ((rc = moe_router_route(p->r2, &in2, p->plan2)) ||
            (rc = moe_layer_forward(p->L, w, p->plan2, b->x, p->y2, NULL)))
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
    if (!p->routed) {
        if (!c->wg || !p->L)
            return moe_fail(MOE_EINVAL, NULL, "batch without logits and no gate (%s)",
                            c->label ? c->label : "pipeline");
        double t0 = moe_now();
        if ((rc = moe_layer_gate(p->L, b->x, b->n, c->wg, c->M, p->logits)))
            return rc;
        t.gate = moe_now() - t0;
        p->routed = p->logits;
        p->gate_computed = 1;
    }
    /* route */
    moe_route_in in = {b->n, c->M, p->routed, b->ids, uniforms, p->rng, b->choices, b->choice_w,
                       b->k_rec, b->gumbel_u, b->rts_u};
    double t0 = moe_now();
    if ((rc = moe_router_route(p->r, &in, p->plan)))
        return rc;
    t.route = moe_now() - t0;
    /* dispatch, experts, combine */
    if (fl & MOE_PIPE_LAYER) {
        moe_phase_times lt = {0};
        if ((rc = c->ep ? c->ep->forward(c->ep->ctx, c->w, p->plan, &in, b->x, p->y, &lt)
                        : moe_layer_forward(p->L, c->w, p->plan, b->x, p->y, &lt)))
            return rc;
        t.dispatch = lt.dispatch;
        t.experts = lt.experts;
        t.combine = lt.combine;
    }
    t.total = t.gate + t.route + t.dispatch + t.experts + t.combine;
    /* metrics and output errors */
    const moe_experts *w = p->L ? c->w : NULL;
    if ((fl & MOE_PIPE_METRICS) &&
        (rc = moe_metrics_compute(p->plan, p->routed, w ? w->d : 0, w ? w->f : 0,
                                  w ? w->act : 0, p->gate_computed, p->mt)))
        return rc;
    if ((fl & MOE_PIPE_ERRORS) && (fl & MOE_PIPE_LAYER) && (fl & MOE_PIPE_METRICS) &&
        (rc = output_errors(p, b, &in)))
        return rc;
    if ((fl & MOE_PIPE_OBSERVE) && p->r->type->observe)
        p->r->type->observe(p->r, &in, p->plan);
    if (tm)
        *tm = t;
    return MOE_OK;
}

int moe_pipeline_run_source(moe_pipeline *p, moe_source *src, int index, moe_phase_times *tm)
{
    const moe_pipeline_cfg *c = &p->cfg;
    moe_batch b;
    int rc = moe_source_batch(src, index, &b);
    if (rc)
        return rc;
    int D = p->cfg.w ? p->cfg.w->d : b.d;
    if (b.n != c->T || b.d != D || b.m != c->M)
        return moe_fail(MOE_EINVAL, NULL, "source %s gave a batch of (%d,%d,%d), expected "
                        "T = %d, D = %d, M = %d (batch %d)", c->source ? c->source : "?", b.n,
                        b.d, b.m, c->T, D, c->M, index);
    return moe_pipeline_run_batch(p, &b, NULL, tm);
}

moe_router *moe_pipeline_router(const moe_pipeline *p) { return p->r; }
const moe_plan *moe_pipeline_plan(const moe_pipeline *p) { return p->plan; }
const moe_metrics *moe_pipeline_metrics(const moe_pipeline *p) { return p->mt; }
const float *moe_pipeline_output(const moe_pipeline *p) { return p->y; }
const double *moe_pipeline_logits(const moe_pipeline *p) { return p->routed; }
int moe_pipeline_gate_computed(const moe_pipeline *p) { return p->gate_computed; }
const moe_layer *moe_pipeline_layer(const moe_pipeline *p) { return p->L; }
