/* point_train.c: the training run of one sweep point (point.h, moe_point_train_run): the point's
 * source (batch 0 is the held-out batch, batch s + 1 feeds step s), router, layer shape and seed
 * given to the training engine (train.h) with the point's [train] configuration; every eval row
 * is kept in the result (the store's tables `steps` and `step_loads`), and the last one gives
 * the point's scalar metrics where the names agree.
 */
#include "point.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

const char *const moe_train_columns[MOE_TRAIN_NCOLS] = {
    "step",          "loss",           "heldout_loss",   "aux_loss",
    "z_loss",        "load_imbalance", "assignment_drop_rate", "token_drop_rate",
    "dead_experts",  "fluctuation",    "specialisation", "gate_entropy"};

int moe_point_train_rows(const moe_point *pt)
{
    if (!pt->train || pt->tc.steps < 1 || pt->tc.eval_every < 1)
        return 0;
    const long s = pt->tc.steps, e = pt->tc.eval_every;
    /* rows at s' = 0, e, 2e, ... < s, plus s - 1 when it is not a multiple of e */
    return (int)((s - 1) / e + 1 + ((s - 1) % e != 0));
}

typedef struct {
    const moe_point *pt;
    moe_source *src;
    volatile sig_atomic_t *stop;
    moe_point_result *res;
    int row;
} train_ctx;

static int batch_fn(void *ctx, long b, moe_batch *out)
{
    train_ctx *c = ctx;
    if (c->stop && *c->stop)
        return moe_fail(MOE_EINVAL, NULL, "interrupted (point %s)", c->pt->config_key);
    if (b > (long)INT32_MAX)
        return moe_fail(MOE_EINVAL, NULL, "too many batches (point %s)", c->pt->config_key);
    return moe_source_batch(c->src, (int)b, out);
}

static int row_fn(void *ctx, const moe_train_row *r)
{
    train_ctx *c = ctx;
    moe_point_result *res = c->res;
    if (c->row >= res->train_rows || r->E != res->E)
        return moe_fail(MOE_EINVAL, NULL, "eval row %d of %d rows with %d experts (point %s)",
                        c->row + 1, res->train_rows, r->E, c->pt->config_key);
    double *v = res->train_row + (size_t)c->row * MOE_TRAIN_NCOLS;
    const double vals[MOE_TRAIN_NCOLS] = {
        (double)r->step,     r->loss,           r->heldout_loss,    r->aux_loss,
        r->z_loss,           r->load_imbalance, r->assignment_drop_rate, r->token_drop_rate,
        (double)r->dead_experts, r->fluctuation, r->specialisation, r->gate_entropy};
    memcpy(v, vals, sizeof vals);
    for (int e = 0; e < r->E; e++)
        res->train_loads[(size_t)c->row * (size_t)r->E + (size_t)e] = (double)r->loads[e];
    c->row++;
    return MOE_OK;
}

/* The point's scalar metrics from the last eval row: the metrics named alike, others NaN. */
static void last_row_metrics(moe_point_result *res, double wall, const moe_point *pt)
{
    const double *last = res->train_row + (size_t)(res->train_rows - 1) * MOE_TRAIN_NCOLS;
    for (int i = 0; i < MOE_POINT_NMETRICS; i++) {
        res->mean[i] = NAN;
        res->std[i] = NAN;
        for (int c = 1; c < MOE_TRAIN_NCOLS; c++)
            if (strcmp(moe_point_metrics[i].name, moe_train_columns[c]) == 0)
                res->mean[i] = last[c];
    }
    for (int i = 0; i < MOE_NPHASES; i++)
        res->time_mean[i] = res->time_std[i] = NAN;
    /* one training step (forward, backward, update) as the point's total time per batch */
    res->time_mean[MOE_PHASE_TOTAL] = wall / (double)pt->tc.steps;
    res->tokens_per_s = wall > 0.0 ? (double)pt->tokens * pt->tc.steps / wall : NAN;
    res->gflops_per_s = NAN;
}

int moe_point_train_run(const moe_point *pt, volatile sig_atomic_t *stop, moe_point_result *res)
{
    const double wall0 = moe_now();
    if (res->E != pt->E || res->train_rows != moe_point_train_rows(pt) || res->train_rows < 1)
        return moe_fail(MOE_EINVAL, NULL, "result sized for E = %d, %d eval rows; point has "
                        "E = %d, %d eval rows (moe_point_train_run)", res->E, res->train_rows,
                        pt->E, moe_point_train_rows(pt));
    train_ctx c = {pt, NULL, stop, res, 0};
    int rc = moe_source_open(pt->source, pt->params, pt->nparams, pt->tokens, pt->d, pt->m,
                             pt->seed, &c.src);
    if (rc)
        return rc;
    moe_train_config tc = pt->tc;
    tc.n = pt->tokens;
    tc.d = pt->d;
    tc.f = pt->f;
    tc.m = pt->m;
    tc.act = pt->act;
    tc.seed = pt->seed;
    tc.wg_init = moe_source_gate(c.src);
    moe_trainer *tr = NULL;
    if (!(rc = moe_train_alloc(&tc, pt->rtype, &pt->opts, &tr)))
        rc = moe_train_run(tr, batch_fn, &c, row_fn, &c);
    moe_train_free(tr);
    moe_source_close(c.src);
    if (!rc && c.row != res->train_rows)
        rc = moe_fail(MOE_EINVAL, NULL, "%d eval rows, expected %d (point %s)", c.row,
                      res->train_rows, pt->config_key);
    if (rc)
        return rc;
    /* points of a training sweep keep no per-batch, per-expert or histogram rows */
    memset(res->assigned, 0, (size_t)res->E * sizeof *res->assigned);
    memset(res->kept, 0, (size_t)res->E * sizeof *res->kept);
    memset(res->importance, 0, (size_t)res->E * sizeof *res->importance);
    memset(res->experts_per_token, 0, ((size_t)res->E + 1) * sizeof *res->experts_per_token);
    res->wall_s = moe_now() - wall0;
    last_row_metrics(res, res->wall_s, pt);
    return MOE_OK;
}

/* ---- names of the enumerated training keys ---- */

static const struct {
    const char *key, *names[3];
} enum_keys[] = {
    {"optimizer", {"sgd", "adam", NULL}},      /* enum moe_train_optimizer */
    {"lr_schedule", {"constant", "cosine", NULL}}, /* enum moe_train_schedule */
    {"aux", {"router", "importance", NULL}},   /* enum moe_train_aux */
    {"trainable", {"gate", "all", NULL}},      /* enum moe_train_trainable */
    {"teacher", {"moe", "dense", NULL}},       /* enum moe_train_teacher */
};

const char *moe_train_enum_name(const char *key, int value)
{
    for (size_t i = 0; i < sizeof enum_keys / sizeof enum_keys[0]; i++)
        if (strcmp(enum_keys[i].key, key) == 0)
            return value >= 0 && value < 2 ? enum_keys[i].names[value] : "?";
    return "?";
}

int moe_train_enum_value(const char *key, const char *name, int *value)
{
    for (size_t i = 0; i < sizeof enum_keys / sizeof enum_keys[0]; i++)
        if (strcmp(enum_keys[i].key, key) == 0)
            for (int v = 0; enum_keys[i].names[v]; v++)
                if (strcmp(enum_keys[i].names[v], name) == 0) {
                    *value = v;
                    return 1;
                }
    return 0;
}
