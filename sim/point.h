/* point.h: one sweep point (router x capacity factor x distribution x layer shape x tokens x
 * batches x seed) and the runner that measures it: source, expert weights, gate, route, the real
 * layer, metrics and output errors, averaged over batches (DESIGN.md "Data flow").
 *
 * The configuration (moe_point) is filled by the spec expander (sim/spec.c); the result
 * (moe_point_result) is what the store (sim/store.c) writes as one row of `points` plus its rows
 * in `expert_loads`, `batches` and `experts_per_token`.
 */
#ifndef MOE_POINT_H
#define MOE_POINT_H

#include "layer.h" /* moe_experts, moe_layer_timing (expert-parallel hook) */
#include "moe.h"
#include "source.h"

#include <signal.h>

/* ---- configuration of one point ---- */
typedef struct {
    const char *router;              /* router section name ([router.NAME]) */
    const moe_router_type *rtype;
    moe_route_opts opts;             /* section options + shape k + the point's cf (the hash
                                      * table, if any, is owned by the spec) */
    const char *opts_text;           /* canonical routing options (moe_route_opts_describe) */
    const char *cf_text;             /* "1.25", or "none" when the router ignores the sweep */
    double cf;                       /* the capacity factor, NAN when ignored */
    const char *cf_note;             /* why the sweep's cf is ignored, NULL when applied */
    const char *distribution, *source;
    const moe_kv *params;            /* (nparams) source parameters with file and line */
    int nparams;
    const char *params_text;         /* canonical "key=value ..." sorted by key */
    const char *shape;               /* shape section name */
    int d, f, E, k, act;             /* layer shape; k = the router's effective k */
    int m;                           /* M logit columns: E, or E*P for dense routers */
    int tokens, batches;             /* T per batch, number of batches */
    uint64_t seed;
    int error_tokens;                /* rows for the dense-mixture error; 0 = all */
    const char *config_key;          /* canonical text of all of the above */
} moe_point;

/* ---- metrics of a point ---- */

/* Scalar metrics of moe_metrics, one column each (mean and std over batches) in `points` and
 * one column each in `batches`. */
typedef struct {
    const char *name;
    size_t offset;   /* offsetof(moe_metrics, field) */
    int is_long;     /* field is long (capacity, counts), else double */
} moe_point_metric;
extern const moe_point_metric moe_point_metrics[]; /* terminated by name == NULL */
enum { MOE_POINT_NMETRICS = 18 };
/* Index of a metric in moe_point_metrics by name, or -1. */
int moe_point_metric_index(const char *name);

/* Timing phases, seconds per batch: gate, route, dispatch, experts, combine, total. */
enum { MOE_T_GATE, MOE_T_ROUTE, MOE_T_DISPATCH, MOE_T_EXPERTS, MOE_T_COMBINE, MOE_T_TOTAL,
       MOE_T_COUNT };
extern const char *const moe_point_phases[MOE_T_COUNT];

typedef struct {
    int E, batches;
    double mean[MOE_POINT_NMETRICS], std[MOE_POINT_NMETRICS]; /* std NAN for one batch */
    double time_mean[MOE_T_COUNT], time_std[MOE_T_COUNT];
    double tokens_per_s;       /* tokens / total time */
    double gflops_per_s;       /* executed FLOPs (gate + useful expert + soft dispatch/combine) */
    double *assigned, *kept, *importance; /* (E) means per batch */
    long *experts_per_token;   /* (E+1) tokens with 0..E kept experts, summed over batches */
    double *batch_metric;      /* (batches, MOE_POINT_NMETRICS) */
    double *batch_time;        /* (batches, MOE_T_COUNT) */
    double wall_s;             /* wall time of the whole point, errors included */
} moe_point_result;

moe_point_result *moe_point_result_alloc(int E, int batches);
void moe_point_result_free(moe_point_result *r); /* NULL is a no-op */

/* Run one point. stop (may be NULL) is polled between batches: when it becomes non-zero the
 * point is abandoned with MOE_EINVAL "interrupted" and res is not valid. res must be allocated
 * for pt->E experts and pt->batches batches. */
int moe_point_run(const moe_point *pt, volatile sig_atomic_t *stop, moe_point_result *res);

/* ---- expert-parallel hook (sim/mpi.c) ----
 * moe_point_run_ep runs the point as moe_point_run does, but with the layer forward of every
 * batch replaced by ep->forward (same contract as moe_layer_forward: y (T,D) complete). begin is
 * called once the point's workspaces exist, with the point's router, the layer's C_max and the
 * plan's entry capacity; in is the batch's routing input. moe_point_run = ep NULL. */
typedef struct {
    void *ctx;
    int (*begin)(void *ctx, const moe_point *pt, moe_router *r, long C_max, size_t cap_entries);
    int (*forward)(void *ctx, const moe_experts *w, const moe_plan *plan, const moe_route_in *in,
                   const float *x, float *y, moe_layer_timing *tm);
} moe_point_ep;
int moe_point_run_ep(const moe_point *pt, volatile sig_atomic_t *stop, moe_point_result *res,
                     const moe_point_ep *ep);

/* Rows of the dense-mixture error subset: nrows = min(T, error_tokens) (all if 0), evenly
 * spaced rows[i] = floor(i*T/nrows). rows must hold T ints. Returns nrows. */
int moe_point_error_rows(int T, int error_tokens, int *rows);

#endif
