/* pipeline.h: one batch through the MoE layer, the only place that runs it (README.md
 * "Layout"). `moesim run` (point.c, and its expert-parallel form in mpi_run.c), `moesim route`
 * (cmd_route.c) and `moesim bench` (cmd_bench.c) all measure this code:
 *
 *   batch     from a token source (moe_pipeline_run_source) or given (moe_pipeline_run_batch)
 *   gate      logits (T,M) = x (T,D) Wg (D,M): float products summed in double in a fixed
 *             order (gate.h), skipped when the batch brings logits
 *   route     the router's plan (moe_pipeline_route_stage), timed on its own
 *   layer     dispatch, experts, combine (moe_pipeline_layer_stage, or the expert-parallel
 *             hook)
 *   metrics   moe_metrics_compute on the plan
 *   errors    output_error_dense: rel. L2 of y from the dense mixture sum_e p[t,e] FFN_e(x_t)
 *             on min(T, error_rows) evenly spaced rows (p = softmax of the logits; dense plans:
 *             the combine weights summed per expert); output_error_dropless (routers with a
 *             dropless form): rel. L2 of y from the same router with dropless = 1 on the same
 *             batch and the same random draws (a twin router, its generator seeded
 *             identically); 0 for a router that is dropless already. Not part of the timings.
 *   observe   stateful routers update their state from their plans (twin included)
 *
 * A pipeline is allocated once per point (router, twin, layer, plans, metrics and every
 * workspace sized from the configuration) and then runs any number of batches; flags say
 * which stages run. Random draws of the router come from (seed, moe_router_stream(type)).
 *
 * The route and layer stages are also entry points of their own, for the paths that run a
 * batch's routing or its experts on workspaces they own: the expert-parallel layer (each
 * rank's routing under per-rank capacity, each rank's local experts), the training engine's
 * forward, the C API's layer call and the routing benchmark. This file is the only caller of
 * the router (moe_router_route) and of the layer forward (moe_layer_forward); the batch
 * runner calls them through the same two stage functions.
 */
#ifndef MOE_PIPELINE_H
#define MOE_PIPELINE_H

#include "layer.h"
#include "moe.h"
#include "source.h"

/* What a batch computes. Routing always runs. */
enum {
    MOE_PIPE_LAYER = 1u << 0,   /* dispatch, experts, combine: y (T,D); needs experts */
    MOE_PIPE_METRICS = 1u << 1, /* routing metrics and FLOPs of the plan */
    MOE_PIPE_ERRORS = 1u << 2,  /* output errors; needs LAYER and METRICS */
    MOE_PIPE_OBSERVE = 1u << 3  /* stateful routers observe each batch's plan */
};

typedef struct moe_pipeline_cfg moe_pipeline_cfg;

/* Expert-parallel hook (mpi_ep.c): forward replaces moe_layer_forward for the batch's plan
 * (same contract: y (T,D) complete; in is the batch's routing input, for per-rank routing).
 * begin runs once at the end of moe_pipeline_alloc with the router, the layer's C_max and the
 * plan's entry capacity. */
typedef struct {
    void *ctx;
    int (*begin)(void *ctx, const moe_pipeline_cfg *cfg, moe_router *r, long C_max,
                 size_t cap_entries);
    int (*forward)(void *ctx, const moe_experts *w, const moe_plan *plan, const moe_route_in *in,
                   const float *x, float *y, moe_phase_times *tm);
} moe_pipeline_ep;

struct moe_pipeline_cfg {
    const moe_router_type *rtype;
    const moe_route_opts *opts; /* k, capacity, ...: copied by the routers */
    int T, M;                   /* tokens per batch, logit columns (E, or E*P for soft_moe) */
    int k_claims;               /* claims per token to size the plan when a batch records more
                                 * than the router's k (replay); 0: the router's k */
    long C_max;                 /* layer slots per expert; 0: any plan's (max(formula, T)) */
    const moe_experts *w;       /* expert weights (E,D,F), or NULL until moe_pipeline_set_experts */
    const float *wg;            /* (D,M) gate for batches without logits, or NULL */
    uint64_t seed;              /* the router's random stream, and the twin's */
    int error_rows;             /* rows of the dense-mixture error; 0 = all */
    unsigned flags;             /* MOE_PIPE_* */
    const moe_pipeline_ep *ep;  /* expert-parallel forward, or NULL */
    const char *source;         /* names the source in messages (moe_pipeline_run_source) */
    const char *label;          /* names the point in messages */
    int shared_S, shared_f;     /* shared experts (count, width) for moe_pipeline_estimate; the
                                 * run takes them from w->shared */
};

typedef struct moe_pipeline moe_pipeline;

/* Allocate everything one point needs (the configuration is copied; opts, w, wg and ep must
 * outlive the pipeline). Errors (bad options, k > E, out of memory) through moe_fail. */
int moe_pipeline_alloc(const moe_pipeline_cfg *cfg, moe_pipeline **out);
void moe_pipeline_free(moe_pipeline *p); /* NULL is a no-op */

/* Bytes a point with this configuration allocates, estimated before anything runs, for experts
 * (E, d, f, act): the layer's workspaces E * max(C_max, 1) * (2d + FW) floats, the expert
 * weights, the plans (the dropless twin's too), the logits, the outputs and the dense-mixture
 * rows, and the router's workspace taken as 16 bytes per logit. *layer gets the layer's
 * workspaces alone and *C_max its slots per expert (both may be NULL). Errors of the routing
 * options (moe_capacity) through moe_fail. */
int moe_pipeline_estimate(const moe_pipeline_cfg *cfg, int E, int d, int f, int act,
                          double *bytes, double *layer, long *C_max);

/* Attach expert weights to a pipeline allocated without them (w (E,D,F) with E the router's
 * experts); allocates the layer, and the dropless twin with MOE_PIPE_ERRORS. Once only. */
int moe_pipeline_set_experts(moe_pipeline *p, const moe_experts *w);

/* Run one batch b (b->n tokens, b->n <= T; b->m = M; x (T,D) needed with a layer or a gate).
 * uniforms (T) are gshard's draws, or NULL to draw from the pipeline's stream. tm (may be
 * NULL) receives the phase times. */
int moe_pipeline_run_batch(moe_pipeline *p, const moe_batch *b, const double *uniforms,
                           moe_phase_times *tm);
/* The jitter draws u (T,D) in [0,1) of the batches that follow (replay of option jitter), or
 * NULL (the default) to draw them from the router's stream, gsl_rng_uniform row-major before
 * the router's own draws. */
void moe_pipeline_set_jitter_draws(moe_pipeline *p, const double *u);
/* Seed the pipeline's draws again, from seed: the next batch draws what the first batch of a
 * pipeline allocated with that seed draws. */
void moe_pipeline_reseed(moe_pipeline *p, uint64_t seed);
/* Batch number index of src, checked to be (T,D,M), then moe_pipeline_run_batch. */
int moe_pipeline_run_source(moe_pipeline *p, moe_source *src, int index, moe_phase_times *tm);

/* moe_pipeline_run_source on batch b (number index of the source) drawn earlier, with its gate
 * output given: logits (T,M) that moe_pipeline_gate_stage computed from b->x and this
 * pipeline's gate wg in gate_s seconds (a sweep's gate cache, gate_cache.h), b->x having passed
 * moe_pipeline_check_x. The batch runs as if its gate had just run: the same checks (except
 * that x is not checked again), the gate FLOPs counted, time_gate = gate_s. With option jitter
 * the gate runs on the jittered x as usual and logits are not used. */
/* The check of a batch's input x (T,D) = (n,D) before its gate: MOE_OK, or the error naming the
 * first non-finite x[t,j] and label (the point). */
int moe_pipeline_check_x(const float *x, int n, int D, const char *label);
int moe_pipeline_run_gated(moe_pipeline *p, const moe_batch *b, int index, const double *logits,
                           double gate_s, moe_phase_times *tm);
/* The memo of the router's capacity-free work (route_memo.h) for the next
 * moe_pipeline_run_gated, whose logits are the gate cache's batch number `batch` (> 0): a route
 * whose key matches what m holds runs only its capacity part, and a route that misses records
 * into m; m takes the router's workspace when the pipeline is freed. m (may be NULL) must
 * outlive the pipeline. */
typedef struct moe_route_memo moe_route_memo;
void moe_pipeline_set_memo(moe_pipeline *p, moe_route_memo *m, unsigned long batch);
/* The memo of the anchor metrics' sums over the rows (anchor_memo.h) for the batches that
 * moe_pipeline_set_memo numbers: a batch's metrics take the sums kept for their key, or keep
 * theirs. m (may be NULL) must outlive the pipeline. */
typedef struct moe_anchor_memo moe_anchor_memo;
void moe_pipeline_set_anchor_memo(moe_pipeline *p, moe_anchor_memo *m);

/* Results of the last batch, valid until the next one. */
moe_router *moe_pipeline_router(const moe_pipeline *p);
const moe_plan *moe_pipeline_plan(const moe_pipeline *p);
const moe_metrics *moe_pipeline_metrics(const moe_pipeline *p); /* MOE_PIPE_METRICS */
const float *moe_pipeline_output(const moe_pipeline *p);        /* y (T,D), MOE_PIPE_LAYER */
const double *moe_pipeline_logits(const moe_pipeline *p);       /* (T,M) routed on */
int moe_pipeline_gate_computed(const moe_pipeline *p);          /* the gate GEMM ran */
const moe_layer *moe_pipeline_layer(const moe_pipeline *p);     /* NULL without experts */

/* ---- stages ---- */

/* route: plan = the plan router r makes for in (moe_router_route: the plan is reset first).
 * seconds (may be NULL) receives the wall time of the routing alone, measured with moe_now;
 * with NULL nothing but the router runs. */
int moe_pipeline_route_stage(moe_router *r, const moe_route_in *in, moe_plan *plan,
                             double *seconds);

/* gate: logits (n,M) = x (n,D) wg (D,M) by moe_gate_logits on the BLAS threads (gate.h: the
 * same bits whatever the thread count), as a batch without logits runs it; seconds (may be
 * NULL) receives its wall time. */
void moe_pipeline_gate_stage(const float *x, int n, int D, const float *wg, int M,
                             double *logits, double *seconds);

/* layer: dispatch, experts, combine of plan on x (T,D) into y (T,D) through L
 * (moe_layer_forward: checks the plan and the weights against L's shape). tm (may be NULL)
 * receives the dispatch, experts and combine times. */
int moe_pipeline_layer_stage(moe_layer *L, const moe_experts *w, const moe_plan *plan,
                             const float *x, float *y, moe_phase_times *tm);

/* Rows of the dense-mixture error subset: nrows = min(T, error_rows) (all if 0), evenly spaced
 * rows[i] = floor(i*T/nrows). rows must hold T ints. Returns nrows. */
int moe_pipeline_error_rows(int T, int error_rows, int *rows);

#endif
