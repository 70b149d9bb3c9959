/* point.h: one sweep point (router x capacity factor x distribution x layer shape x tokens x
 * batches x seed) and the runner that measures it: the source and the expert weights of the
 * point, each batch through the one-batch pipeline (pipeline.h), the metrics and timings
 * averaged over batches (README.md "Layout").
 *
 * The configuration (moe_point) is filled by the spec expander (sim/spec.c); the result
 * (moe_point_result) is what the store (sim/store.c) writes as one row of `points` plus its rows
 * in `expert_loads`, `batches` and `experts_per_token`.
 */
#ifndef MOE_POINT_H
#define MOE_POINT_H

#include "pipeline.h" /* moe_pipeline_ep (expert-parallel hook), moe_phase_times */
#include "moe.h"
#include "source.h"
#include "train.h"

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
    int shared_S, shared_f, shared_gate; /* shared experts (shared_ffn.h): count, width, gate */
    int m;                           /* M logit columns: E, or E*P for dense routers */
    int tokens, batches;             /* T per batch, number of batches */
    uint64_t seed;
    int error_tokens;                /* rows for the dense-mixture error; 0 = all */
    int train;                       /* 1: a training run of the layer ([train] section) */
    moe_train_config tc;             /* train: steps, optimizer, lr, ...; n, d, f, m, act, seed
                                      * are the point's, set by the spec expander */
    const char *config_key;          /* canonical text of all of the above */
    const struct moe_cluster_cfg *cluster; /* cluster model (cluster_point.h), or NULL */
} moe_point;

/* ---- metrics of a point ---- */

/* One row of the metric table (sim/metric_table.c, metric_table.h): a field of moe_metrics and
 * everything that shows it. moe_point_metrics holds the scalar metrics, one column each (mean
 * and std over batches) in `points` and one column each in `batches`; the per-expert and
 * histogram metrics are rows of the same table, reached through moe_metric_row. */
typedef struct {
    const char *name;
    size_t offset;   /* offsetof(moe_metrics, field) */
    int is_long;     /* field is long (capacity, counts), else double */
    int kind;        /* enum moe_metric_kind (metric_table.h) */
    const char *help;       /* one line, for `moesim list metrics` */
    const char *column;     /* arrays: column of the store's child table, compare's "column[i]" */
    int json_pos;           /* position of the key in the metrics JSON (router is 0) */
    const char *report;     /* column header in `moesim report`, or NULL */
    const char *report_fmt; /* printf format of that column in the aligned table */
    int tol;                /* enum moe_metric_tol: how `moesim compare` tolerates drift */
} moe_point_metric;
extern const moe_point_metric moe_point_metrics[]; /* terminated by name == NULL */
enum { MOE_POINT_NMETRICS = 30 };
/* Index of a metric in moe_point_metrics by name, or -1. */
int moe_point_metric_index(const char *name);

typedef struct {
    int E, batches;
    double mean[MOE_POINT_NMETRICS], std[MOE_POINT_NMETRICS]; /* std NAN for one batch */
    double time_mean[MOE_NPHASES], time_std[MOE_NPHASES];
    double tokens_per_s;       /* tokens / total time */
    double gflops_per_s;       /* executed FLOPs (gate + useful expert + soft dispatch/combine) */
    double *assigned, *kept, *importance; /* (E) means per batch */
    long *experts_per_token;   /* (E+1) tokens with 0..E kept experts, summed over batches */
    int groups;                /* G expert groups of the metrics (1 without groups) */
    long *groups_touched;      /* (G+1, allocated E+1) tokens with kept experts in 0..G
                                * groups, summed over batches */
    double *batch_metric;      /* (batches, MOE_POINT_NMETRICS) */
    double *batch_time;        /* (batches, MOE_NPHASES) */
    double wall_s;             /* wall time of the whole point, errors included */
    int train_rows;            /* training points: eval rows (moe_point_train_rows), else 0 */
    double *train_row;         /* (train_rows, MOE_TRAIN_NCOLS) in moe_train_columns order */
    double *train_loads;       /* (train_rows, E) kept tokens per expert since the last row */
    struct moe_cluster_result *cluster; /* the cluster model's means, with pt->cluster */
} moe_point_result;

/* Columns of one eval row of a training point (the store's table `steps`): step, then the
 * metrics of moe_train_row under their names. */
enum { MOE_TRAIN_NCOLS = 12 };
extern const char *const moe_train_columns[MOE_TRAIN_NCOLS];
/* Eval rows of a training point: steps 0, eval_every, 2 eval_every, ... and the last step
 * (0 for a point that does not train). */
int moe_point_train_rows(const moe_point *pt);

moe_point_result *moe_point_result_alloc(int E, int batches);
/* A result sized for pt: E, batches and, for a training point, its eval rows. */
moe_point_result *moe_point_result_alloc_for(const moe_point *pt);
void moe_point_result_free(moe_point_result *r); /* NULL is a no-op */

/* Run one point. A training point (pt->train) runs moe_train_run with the point's router,
 * shape and source (batch 0 held out, batch s + 1 for step s) and fills the eval rows; its
 * scalar metrics are those of the last eval row where the names agree (load_imbalance, drop
 * rates, aux_loss), the others NaN. stop (may be NULL) is polled between batches: when it
 * becomes non-zero the point is abandoned with MOE_EINVAL "interrupted" and res is not valid.
 * res must be allocated for the point (moe_point_result_alloc_for). */
int moe_point_run(const moe_point *pt, volatile sig_atomic_t *stop, moe_point_result *res);

/* Run the point as moe_point_run does, its batches and their gate logits taken from cache
 * (gate_cache.h: computed once for every point that shares them; NULL: no cache). The plans and
 * metrics are those of moe_point_run; time_gate is the gate's time when it was computed. */
struct moe_gate_cache;
int moe_point_run_cached(const moe_point *pt, volatile sig_atomic_t *stop,
                         moe_point_result *res, struct moe_gate_cache *cache);

/* Run the point as moe_point_run does, with the layer forward of every batch replaced by the
 * expert-parallel hook ep (pipeline.h; mpi_ep.c). moe_point_run = ep NULL. A training point
 * with ep is an error (training runs on one process). */
int moe_point_run_ep(const moe_point *pt, volatile sig_atomic_t *stop, moe_point_result *res,
                     const moe_pipeline_ep *ep);

/* Names of the enumerated training keys (optimizer, lr_schedule, aux, trainable, teacher):
 * the name of value, "?" for an unknown key or value; the value of name (1), or 0. */
const char *moe_train_enum_name(const char *key, int value);
int moe_train_enum_value(const char *key, const char *name, int *value);

/* The training run of moe_point_run (sim/point_train.c); res from moe_point_result_alloc_for. */
int moe_point_train_run(const moe_point *pt, volatile sig_atomic_t *stop, moe_point_result *res);

#endif
