/* train.c: the training engine of train.h: configuration, parameters and teacher drawn from
 * the seed, the forward/backward of one batch (teacher targets, gate GEMM, route, expert FFNs,
 * losses, gradients), SGD/Adam with constant or cosine learning rate and linear warmup, the
 * router's observe step, and the run loop with its eval rows. The kernels are train_kern.c's,
 * the logit gradients train_grad.c's, the eval metrics train_eval.c's. */
#include "train_impl.h"

#include <gsl/gsl_randist.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

/* PCG streams of the engine (after moe.h's enum moe_stream). */
enum {
    TR_STREAM_TEACHER = 16, /* teacher gate and FFNs */
    TR_STREAM_STUDENT = 17, /* student gate (unless given) and FFNs */
    TR_STREAM_DRAWS = 18,   /* training draws: gate noise, gshard uniforms, target noise */
    TR_STREAM_EVAL = 19     /* eval draws */
};

void moe_train_config_default(moe_train_config *c)
{
    memset(c, 0, sizeof *c);
    c->n = 256;
    c->d = 32;
    c->f = 64;
    c->act = MOE_ACT_GELU_TANH;
    c->steps = 200;
    c->optimizer = MOE_OPT_ADAM;
    c->lr = 1e-3;
    c->trainable = MOE_TRAIN_ALL;
    c->teacher = MOE_TEACHER_MOE;
    c->teacher_experts = 8;
    c->teacher_k = 1;
    c->eval_every = 10;
    c->probe_tokens = 256;
    c->seed = 1;
}

/* ---- buffers ---- */

static void *xalloc(size_t n, size_t sz, int *bad)
{
    void *p = calloc(n ? n : 1, sz);
    if (!p)
        *bad = 1;
    return p;
}

/* Views of a parameter block [w1 | b1 | w2 | b2] starting at base (REAL). */
static void ffn_view(tr_ffn *w, const moe_trainer *tr, int E, void *base)
{
    const size_t rs = tr->k->rsz, d = (size_t)tr->c.d, f = (size_t)tr->c.f;
    const size_t fw = tr->c.act == MOE_ACT_SWIGLU ? 2 * f : f;
    w->E = E;
    w->d = (int)d;
    w->f = (int)f;
    w->fw = (int)fw;
    w->act = tr->c.act;
    w->w1 = base;
    w->b1 = (char *)w->w1 + (size_t)E * d * fw * rs;
    w->w2 = (char *)w->b1 + (size_t)E * fw * rs;
    w->b2 = (char *)w->w2 + (size_t)E * f * d * rs;
}

static size_t ffn_size(const moe_train_config *c, int E)
{
    size_t d = (size_t)c->d, f = (size_t)c->f, fw = c->act == MOE_ACT_SWIGLU ? 2 * f : f;
    return (size_t)E * (d * fw + fw + f * d + d);
}

/* Gaussian fill: N(0, s^2) in order, from r. */
static void fill(const moe_trainer *tr, gsl_rng *r, void *v, size_t off, size_t len, double s)
{
    for (size_t i = 0; i < len; i++)
        tr->k->set(v, off + i, gsl_ran_gaussian(r, s));
}

/* Weights of one MoE: gate (D,M) then w1 ~ N(0, 1/D), w2 ~ N(0, 1/F), biases 0. */
static void init_moe(const moe_trainer *tr, gsl_rng *r, void *v, int M, const tr_ffn *w,
                     const float *wg)
{
    const size_t d = (size_t)tr->c.d, f = (size_t)tr->c.f, fw = (size_t)w->fw;
    const size_t gate = d * (size_t)M, E = (size_t)w->E;
    for (size_t i = 0; i < gate; i++)
        tr->k->set(v, i, wg ? (double)wg[i] : gsl_ran_gaussian(r, 1.0 / sqrt((double)d)));
    fill(tr, r, v, gate, E * d * fw, 1.0 / sqrt((double)d));
    fill(tr, r, v, gate + E * d * fw + E * fw, E * f * d, 1.0 / sqrt((double)f));
}

static int check_config(const moe_train_config *c)
{
    if (c->n < 1 || c->d < 1 || c->f < 1 || c->m < 1)
        return moe_fail(MOE_EINVAL, NULL, "tokens, d, f and the logit columns must be >= 1 "
                        "(n = %d, d = %d, f = %d, M = %d) (train)", c->n, c->d, c->f, c->m);
    if (c->steps < 0 || c->warmup < 0 || c->eval_every < 1)
        return moe_fail(MOE_EINVAL, NULL, "steps, warmup must be >= 0 and eval_every >= 1 "
                        "(train)");
    if (!(c->lr > 0.0) || !isfinite(c->lr))
        return moe_fail(MOE_EINVAL, NULL, "lr must be finite and > 0 (got %g) (train)", c->lr);
    if (!(c->aux_weight >= 0.0) || !(c->z_weight >= 0.0) || !(c->target_noise >= 0.0))
        return moe_fail(MOE_EINVAL, NULL, "aux_weight, z_weight and target_noise must be >= 0 "
                        "(train)");
    if (c->teacher == MOE_TEACHER_MOE &&
        (c->teacher_experts < 1 || c->teacher_k < 1 || c->teacher_k > c->teacher_experts))
        return moe_fail(MOE_EINVAL, NULL, "teacher_k must be in 1..teacher_experts (%d, %d) "
                        "(train)", c->teacher_k, c->teacher_experts);
    if (c->probe_tokens < 1 || c->probe_tokens > c->n)
        return moe_fail(MOE_EINVAL, NULL, "probe_tokens must be in 1..tokens = 1..%d (got %d) "
                        "(train)", c->n, c->probe_tokens);
    if (c->act < MOE_ACT_GELU_TANH || c->act > MOE_ACT_SWIGLU)
        return moe_fail(MOE_EINVAL, NULL, "unknown activation %d (train)", c->act);
    return MOE_OK;
}

static int alloc_buffers(moe_trainer *tr)
{
    const size_t n = (size_t)tr->c.n, d = (size_t)tr->c.d, M = (size_t)tr->M;
    const size_t rs = tr->k->rsz, Et = (size_t)tr->Et, mx = M > Et ? M : Et;
    const size_t np = (size_t)tr->c.probe_tokens;
    int bad = 0;
    tr->theta = xalloc(tr->n_params, rs, &bad);
    tr->grad = xalloc(tr->n_params, rs, &bad);
    tr->adam_m = xalloc(tr->n_params, rs, &bad);
    tr->adam_v = xalloc(tr->n_params, rs, &bad);
    tr->t_theta = xalloc(d * Et + ffn_size(&tr->c, tr->Et), rs, &bad);
    tr->xr = xalloc(n * d, rs, &bad);
    tr->y = xalloc(n * d, rs, &bad);
    tr->ystar = xalloc(n * d, rs, &bad);
    tr->dy = xalloc(n * d, rs, &bad);
    tr->L = xalloc(n * M, sizeof(double), &bad);
    tr->Ln = xalloc(n * M, sizeof(double), &bad);
    tr->dL = xalloc(n * M, sizeof(double), &bad);
    tr->p = xalloc(n * M, sizeof(double), &bad);
    tr->dwc = xalloc(n * M, sizeof(double), &bad);
    tr->dd = xalloc(n * M, sizeof(double), &bad);
    tr->tl = xalloc(n * Et, sizeof(double), &bad);
    tr->kept = xalloc(n * M, 1, &bad);
    tr->gm = xalloc(n * mx, rs, &bad);
    tr->dm = xalloc(n * M, rs, &bad);
    tr->wc = xalloc(n * M, rs, &bad);
    tr->drow = xalloc(mx, sizeof(double), &bad);
    tr->grow = xalloc(mx, sizeof(double), &bad);
    tr->srow = xalloc(mx, sizeof(double), &bad);
    tr->sig = xalloc(mx, sizeof(double), &bad);
    tr->key = xalloc(mx, sizeof(double), &bad);
    tr->idx = xalloc(mx, sizeof(int), &bad);
    tr->itmp = xalloc(mx, sizeof(int), &bad);
    tr->off = xalloc(mx + 1, sizeof(long), &bad);
    tr->fill = xalloc(mx, sizeof(long), &bad);
    tr->unif = xalloc(n, sizeof(double), &bad);
    tr->noise = xalloc(n * M, sizeof(double), &bad);
    tr->tnoise = xalloc(n * d, sizeof(double), &bad);
    tr->t_top1 = xalloc(np, sizeof(int), &bad);
    tr->s_top1 = xalloc(np, sizeof(int), &bad);
    tr->prev_top1 = xalloc(np, sizeof(int), &bad);
    tr->window = xalloc(M, sizeof(long), &bad);
    tr->held.x = xalloc(n * d, sizeof(float), &bad);
    tr->held.ids = xalloc(n, sizeof(int64_t), &bad);
    tr->plan = moe_plan_alloc((int)n, tr->E, n * (size_t)tr->E);
    tr->eplan = moe_plan_alloc((int)n, tr->E, n * (size_t)tr->E);
    tr->tplan = moe_plan_alloc((int)n, tr->Et, n * (size_t)tr->Kt);
    tr->mt = moe_metrics_alloc(tr->E);
    tr->rng_train = moe_rng_alloc(tr->c.seed, TR_STREAM_DRAWS);
    tr->rng_eval = moe_rng_alloc(tr->c.seed, TR_STREAM_EVAL);
    if (bad || !tr->plan || !tr->eplan || !tr->tplan || !tr->mt || !tr->rng_train ||
        !tr->rng_eval)
        return moe_fail(MOE_ENOMEM, NULL, "out of memory (training buffers for %zu tokens)", n);
    return MOE_OK;
}

int moe_train_alloc(const moe_train_config *c, const moe_router_type *rt,
                    const moe_route_opts *ro, moe_trainer **out)
{
    *out = NULL;
    int rc = check_config(c);
    if (rc)
        return rc;
    moe_trainer *tr = calloc(1, sizeof *tr);
    if (!tr)
        return moe_fail(MOE_ENOMEM, NULL, "out of memory (trainer)");
    tr->c = *c;
    tr->k = c->precision == MOE_TRAIN_FP64 ? &moe_train_kern_f64 : &moe_train_kern_f32;
    moe_route_opts o = *ro;
    tr->noise_std = strcmp(rt->name, "topk") == 0 ? o.noise_std : 0.0;
    o.noise_std = 0.0; /* the engine adds topk's noise itself, to differentiate through it */
    if ((rc = moe_router_alloc(rt, &o, c->n, c->m, &tr->r)))
        goto fail;
    tr->rt = rt;
    tr->E = tr->r->E;
    tr->M = c->m;
    tr->P = tr->M / tr->E;
    tr->K = tr->r->k;
    if ((rc = moe_train_gate_kind(tr->r, &tr->gate_kind, &tr->aux_router, &tr->renorm)))
        goto fail;
    if (tr->gate_kind == TR_GATE_CONST && c->trainable == MOE_TRAIN_GATE) {
        rc = moe_fail(MOE_EINVAL, "use trainable = all", "router %s has no trainable routing: "
                      "trainable = gate leaves nothing to train (trainable)", rt->name);
        goto fail;
    }
    tr->Et = c->teacher == MOE_TEACHER_DENSE ? 1 : c->teacher_experts;
    tr->Kt = c->teacher == MOE_TEACHER_DENSE ? 1 : c->teacher_k;
    tr->n_gate = (size_t)c->d * (size_t)tr->M;
    tr->n_params = tr->n_gate + ffn_size(c, tr->E);
    if ((rc = alloc_buffers(tr)))
        goto fail;
    ffn_view(&tr->ffn, tr, tr->E, (char *)tr->theta + tr->n_gate * tr->k->rsz);
    ffn_view(&tr->gffn, tr, tr->E, (char *)tr->grad + tr->n_gate * tr->k->rsz);
    ffn_view(&tr->tffn, tr, tr->Et, (char *)tr->t_theta + (size_t)c->d * tr->Et * tr->k->rsz);
    gsl_rng *rt_ = moe_rng_alloc(c->seed, TR_STREAM_TEACHER);
    gsl_rng *rs_ = moe_rng_alloc(c->seed, TR_STREAM_STUDENT);
    if (!rt_ || !rs_) {
        gsl_rng_free(rt_);
        gsl_rng_free(rs_);
        rc = moe_fail(MOE_ENOMEM, NULL, "out of memory (trainer generators)");
        goto fail;
    }
    init_moe(tr, rt_, tr->t_theta, tr->Et, &tr->tffn, NULL);
    init_moe(tr, rs_, tr->theta, tr->M, &tr->ffn, c->wg_init);
    gsl_rng_free(rt_);
    gsl_rng_free(rs_);
    *out = tr;
    return MOE_OK;
fail:
    moe_train_free(tr);
    return rc;
}

void moe_train_free(moe_trainer *tr)
{
    if (!tr)
        return;
    moe_router_free(tr->r);
    void *bufs[] = {tr->theta, tr->grad, tr->adam_m, tr->adam_v, tr->t_theta, tr->xr, tr->y,
                    tr->ystar, tr->dy, tr->L, tr->Ln, tr->dL, tr->p, tr->dwc,
                    tr->dd, tr->tl, tr->kept, tr->gm, tr->dm, tr->wc, tr->drow, tr->grow,
                    tr->srow, tr->sig, tr->key, tr->idx, tr->itmp, tr->off, tr->fill, tr->unif,
                    tr->noise, tr->tnoise, tr->t_top1, tr->s_top1, tr->prev_top1, tr->window,
                    tr->held.x, tr->held.ids, tr->held.choices, tr->held.choice_w, tr->dcw,
                    tr->row_entry, tr->xin, tr->hid, tr->act, tr->out, tr->dout, tr->dhid};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
        free(bufs[i]);
    moe_plan_free(tr->plan);
    moe_plan_free(tr->eplan);
    moe_plan_free(tr->tplan);
    moe_metrics_free(tr->mt);
    gsl_rng_free(tr->rng_train);
    gsl_rng_free(tr->rng_eval);
    free(tr);
}

/* ---- rows ---- */

int moe_train_rows(moe_trainer *tr, const tr_ffn *w, const moe_plan *p)
{
    const size_t R = p->dense ? (size_t)p->m : p->n_entries, d = (size_t)tr->c.d;
    const size_t f = (size_t)w->f, fw = (size_t)w->fw, rs = tr->k->rsz;
    const size_t need_dcw = R > 4 * (size_t)tr->c.n ? R : 4 * (size_t)tr->c.n;
    if (need_dcw > tr->dcw_cap) {
        double *q = realloc(tr->dcw, need_dcw * sizeof *q);
        if (!q)
            return moe_fail(MOE_ENOMEM, NULL, "out of memory (%zu training rows)", R);
        tr->dcw = q;
        tr->dcw_cap = need_dcw;
    }
    if (R > tr->rows_cap) {
        size_t cap = R + R / 4 + 16;
        void **bufs[] = {&tr->xin, &tr->hid, &tr->act, &tr->out, &tr->dout, &tr->dhid};
        size_t width[] = {d, fw, f, d, d, fw};
        for (int i = 0; i < 6; i++) {
            free(*bufs[i]);
            *bufs[i] = malloc(cap * width[i] * rs);
        }
        free(tr->row_entry);
        tr->row_entry = malloc(cap * sizeof *tr->row_entry);
        if (!tr->xin || !tr->hid || !tr->act || !tr->out || !tr->dout || !tr->dhid ||
            !tr->row_entry) {
            tr->rows_cap = 0;
            return moe_fail(MOE_ENOMEM, NULL, "out of memory (%zu training rows)", R);
        }
        tr->rows_cap = cap;
    }
    if (p->dense)
        return MOE_OK; /* rows_in sets off */
    /* counting sort of the entries by expert, entry order within an expert */
    for (int e = 0; e <= w->E; e++)
        tr->off[e] = 0;
    for (size_t i = 0; i < p->n_entries; i++)
        tr->off[p->entries[i].expert + 1]++;
    for (int e = 0; e < w->E; e++) {
        tr->off[e + 1] += tr->off[e];
        tr->fill[e] = tr->off[e];
    }
    for (size_t i = 0; i < p->n_entries; i++)
        tr->row_entry[tr->fill[p->entries[i].expert]++] = i;
    return MOE_OK;
}

/* ---- the expert phase on worker threads ---- */

enum { TR_MAX_THREADS = 8 };

typedef struct {
    moe_trainer *tr;
    void (*fn)(void *, int);
    void *ctx;
    const int *order;
    int n;
    atomic_int next;
} tr_pool;

static void *pool_worker(void *arg)
{
    tr_pool *p = arg;
    for (;;) {
        int i = atomic_fetch_add(&p->next, 1);
        if (i >= p->n)
            break;
        p->fn(p->ctx, p->order[i]);
    }
    return NULL;
}

int moe_train_experts_run(moe_trainer *tr, int E, void (*fn)(void *, int), void *ctx)
{
    int *order = tr->idx + 0, n = 0; /* idx has max(M, Et) >= E entries; free here */
    for (int e = 0; e < E; e++) {
        long rows = tr->off[e + 1] - tr->off[e];
        if (rows <= 0)
            continue;
        int j = n++; /* insertion by rows, descending; ties by expert index */
        while (j > 0 && tr->off[order[j - 1] + 1] - tr->off[order[j - 1]] < rows) {
            order[j] = order[j - 1];
            j--;
        }
        order[j] = e;
    }
    int nt = tr->threads < TR_MAX_THREADS ? tr->threads : TR_MAX_THREADS;
    nt = nt < n ? nt : n;
    tr_pool pool = {tr, fn, ctx, order, n, 0};
    pthread_t th[TR_MAX_THREADS];
    int started[TR_MAX_THREADS] = {0};
    for (int i = 1; i < nt; i++)
        started[i] = pthread_create(&th[i], NULL, pool_worker, &pool) == 0;
    pool_worker(&pool);
    for (int i = 1; i < nt; i++)
        if (started[i])
            pthread_join(th[i], NULL);
    return MOE_OK;
}
