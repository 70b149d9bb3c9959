/* train_step.c: one batch through the training engine (train.h): draws, teacher targets, the
 * student's forward and exact backward, the optimizer step with its learning-rate schedule,
 * the router's observe, and the run loop that emits the eval rows. Owns moe_train_forward,
 * moe_train_objective, moe_train_step, moe_train_run and the parameter accessors. */
#include "train_impl.h"

#include "blas_info.h"
#include "pipeline.h"

#include <gsl/gsl_randist.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- draws ---- */

/* gshard's uniforms always; gate noise and target noise for training batches only. */
static void draw(moe_trainer *tr, gsl_rng *r, int train)
{
    const size_t n = (size_t)tr->c.n, M = (size_t)tr->M, d = (size_t)tr->c.d;
    if (tr->gate_kind == TR_GATE_GSHARD)
        for (size_t t = 0; t < n; t++)
            tr->unif[t] = gsl_rng_uniform(r);
    if (train && tr->noise_std > 0.0)
        for (size_t i = 0; i < n * M; i++)
            tr->noise[i] = tr->noise_std * gsl_ran_gaussian_ziggurat(r, 1.0);
    if (train && tr->c.target_noise > 0.0)
        for (size_t i = 0; i < n * d; i++)
            tr->tnoise[i] = gsl_ran_gaussian_ziggurat(r, tr->c.target_noise);
}

/* ---- teacher ---- */

/* ystar (T,D) = teacher(xr): top-Kt of its logits, softmax over the Kt, no capacity limit;
 * a dense teacher is one FFN with weight 1. */
static int teacher_forward(moe_trainer *tr, void *ystar)
{
    const int n = tr->c.n, Et = tr->Et, Kt = tr->Kt;
    moe_plan *tp = tr->tplan;
    int rc = moe_plan_reset(tp, n, Et, Et);
    if (rc)
        return rc;
    tr->k->gate(tr, tr->xr, tr->t_theta, Et, tr->tl);
    for (int e = 0; e < Et; e++)
        tr->fill[e] = 0;
    for (int t = 0; t < n; t++) {
        const double *lt = tr->tl + (size_t)t * Et;
        moe_argsort_desc(lt, Et, tr->idx, tr->itmp);
        double s = 0.0;
        for (int j = 0; j < Kt; j++)
            s += (tr->sig[j] = exp(lt[tr->idx[j]] - lt[tr->idx[0]]));
        for (int j = 0; j < Kt; j++) {
            int e = tr->idx[j];
            if ((rc = moe_plan_push(tp, t, e, (int32_t)tr->fill[e]++, 1.0, tr->sig[j] / s)))
                return rc;
        }
    }
    long C = 1;
    for (int e = 0; e < Et; e++)
        C = tr->fill[e] > C ? tr->fill[e] : C;
    tp->capacity = C;
    return tr->k->ffn_forward(tr, &tr->tffn, tp, tr->xr, ystar);
}

/* ---- forward and backward ---- */

static int forward(moe_trainer *tr, const moe_batch *b, moe_plan *p, int train, int grad,
                   double parts[3]);

/* Every GEMM runs on one BLAS thread (threaded OpenBLAS sgemm rounds differently with the
 * thread count); the caller's BLAS threads become workers of the expert phase instead. */
static int blas_enter(moe_trainer *tr)
{
    int threads = moe_blas_threads();
    tr->threads = threads < 1 ? 1 : threads;
    if (threads > 1)
        moe_blas_set_threads(1);
    return threads;
}

static void blas_leave(int threads)
{
    if (threads > 1)
        moe_blas_set_threads(threads);
}

int moe_train_forward(moe_trainer *tr, const moe_batch *b, moe_plan *p, int train, int grad,
                      double parts[3])
{
    int threads = blas_enter(tr);
    int rc = forward(tr, b, p, train, grad, parts);
    blas_leave(threads);
    return rc;
}

static int forward(moe_trainer *tr, const moe_batch *b, moe_plan *p, int train, int grad,
                   double parts[3])
{
    const size_t n = (size_t)tr->c.n, d = (size_t)tr->c.d, M = (size_t)tr->M;
    if (b->n != tr->c.n || b->d != tr->c.d)
        return moe_fail(MOE_EINVAL, NULL, "batch of %d tokens x %d, trainer expects %d x %d "
                        "(train)", b->n, b->d, tr->c.n, tr->c.d);
    if (train && !tr->frozen)
        draw(tr, tr->rng_train, 1);
    else if (!train)
        draw(tr, tr->rng_eval, 0);
    tr->k->load_x(tr->xr, b->x, n * d);
    int rc = teacher_forward(tr, tr->ystar);
    if (rc)
        return rc;
    if (train && tr->c.target_noise > 0.0)
        tr->k->add(tr->ystar, tr->tnoise, n * d);
    /* student: logits, routed logits, plan */
    tr->k->gate(tr, tr->xr, tr->theta, tr->M, tr->L);
    for (size_t i = 0; i < n * M; i++)
        tr->Ln[i] = tr->L[i] + (train && tr->noise_std > 0.0 ? tr->noise[i] : 0.0);
    moe_route_in in = {0};
    in.n = tr->c.n;
    in.m = tr->M;
    in.logits = tr->Ln;
    in.ids = b->ids;
    in.uniforms = tr->gate_kind == TR_GATE_GSHARD ? tr->unif : NULL;
    in.choices = b->choices;
    in.choice_w = b->choice_w;
    in.k_rec = b->k_rec;
    if ((rc = moe_pipeline_route_stage(tr->r, &in, p, NULL)))
        return rc;
    if ((rc = tr->k->ffn_forward(tr, &tr->ffn, p, tr->xr, tr->y)))
        return rc;
    parts[0] = tr->k->mse(tr->y, tr->ystar, n * d, grad ? tr->dy : NULL);
    if (grad)
        memset(tr->dL, 0, n * M * sizeof *tr->dL);
    moe_train_aux_z(tr, p, grad, &parts[1], &parts[2]);
    if (!grad) {
        if (tr->c.aux_kind == MOE_AUX_IMPORTANCE)
            parts[1] = moe_train_importance(tr, p, 0);
        return MOE_OK;
    }
    tr_ffn *gw = tr->c.trainable == MOE_TRAIN_ALL ? &tr->gffn : NULL;
    if ((rc = tr->k->ffn_backward(tr, &tr->ffn, gw, p, tr->xr, tr->dy, tr->dcw, tr->dwc,
                                  tr->dd)))
        return rc;
    if (!gw) /* expert gradients stay 0 */
        memset((char *)tr->grad + tr->n_gate * tr->k->rsz, 0,
               (tr->n_params - tr->n_gate) * tr->k->rsz);
    if (tr->c.aux_kind == MOE_AUX_IMPORTANCE)
        parts[1] = moe_train_importance(tr, p, 1);
    if ((rc = moe_train_router_backward(tr, p)))
        return rc;
    tr->k->gate_backward(tr, tr->xr, tr->dL, tr->grad);
    return MOE_OK;
}

static double total(const moe_trainer *tr, const double parts[3])
{
    return parts[0] + tr->c.aux_weight * parts[1] + tr->c.z_weight * parts[2];
}

int moe_train_objective(moe_trainer *tr, const moe_batch *b, double *loss, double *grad,
                        double parts[3])
{
    double pp[3];
    int rc = moe_train_forward(tr, b, tr->plan, 1, grad != NULL, pp);
    if (rc)
        return rc;
    tr->drawn = 1;
    if (loss)
        *loss = total(tr, pp);
    if (parts)
        memcpy(parts, pp, sizeof pp);
    if (grad)
        for (size_t i = 0; i < tr->n_params; i++)
            grad[i] = tr->k->get(tr->grad, i);
    return MOE_OK;
}

void moe_train_freeze_draws(moe_trainer *tr, int on) { tr->frozen = on && tr->drawn; }

double moe_train_lr(const moe_train_config *c, long s)
{
    if (s < c->warmup)
        return c->lr * (double)(s + 1) / c->warmup;
    if (c->lr_schedule != MOE_LR_COSINE || c->steps <= c->warmup)
        return c->lr;
    double u = (double)(s - c->warmup) / (double)(c->steps - c->warmup);
    return c->lr * 0.5 * (1.0 + cos(M_PI * u));
}

static void update(moe_trainer *tr)
{
    long s = tr->t_adam++;
    double bc1 = 1.0 - pow(0.9, (double)tr->t_adam), bc2 = 1.0 - pow(0.999, (double)tr->t_adam);
    size_t len = tr->c.trainable == MOE_TRAIN_ALL ? tr->n_params : tr->n_gate;
    tr->k->update(tr, len, moe_train_lr(&tr->c, s), bc1, bc2);
}

static void observe(moe_trainer *tr, const moe_batch *b)
{
    if (!tr->rt->observe)
        return;
    moe_route_in in = {0};
    in.n = tr->c.n;
    in.m = tr->M;
    in.logits = tr->Ln;
    in.ids = b->ids;
    tr->rt->observe(tr->r, &in, tr->plan);
}

int moe_train_step(moe_trainer *tr, const moe_batch *b, double *loss)
{
    double pp[3];
    int rc = moe_train_forward(tr, b, tr->plan, 1, 1, pp);
    if (rc)
        return rc;
    if (loss)
        *loss = total(tr, pp);
    update(tr);
    observe(tr, b);
    return MOE_OK;
}

/* ---- accessors ---- */

size_t moe_train_n_params(const moe_trainer *tr) { return tr->n_params; }
size_t moe_train_n_gate_params(const moe_trainer *tr) { return tr->n_gate; }
double moe_train_param_get(const moe_trainer *tr, size_t i) { return tr->k->get(tr->theta, i); }
void moe_train_param_set(moe_trainer *tr, size_t i, double v) { tr->k->set(tr->theta, i, v); }
const moe_plan *moe_train_last_plan(const moe_trainer *tr) { return tr->plan; }
double moe_train_output(const moe_trainer *tr, size_t i) { return tr->k->get(tr->y, i); }
int moe_train_gate_has_grad(const moe_trainer *tr) { return tr->gate_kind != TR_GATE_CONST; }

int moe_train_source_batch(void *ctx, long b, moe_batch *out)
{
    return moe_source_batch(ctx, (int)b, out);
}

/* ---- the run ---- */

/* Keep batch 0 as the held-out batch (deep copy) and its teacher's top-1 on the probe tokens
 * (the held-out loss recomputes the noise-free targets at each eval). */
static int keep_heldout(moe_trainer *tr, const moe_batch *b)
{
    const size_t n = (size_t)tr->c.n, d = (size_t)tr->c.d;
    moe_batch *h = &tr->held;
    h->n = b->n;
    h->d = b->d;
    h->m = b->m;
    memcpy(h->x, b->x, n * d * sizeof *h->x);
    memcpy(h->ids, b->ids, n * sizeof *h->ids);
    if (b->choices) {
        size_t kr = (size_t)b->k_rec;
        h->choices = malloc(n * kr * sizeof *h->choices);
        h->choice_w = b->choice_w ? malloc(n * kr * sizeof *h->choice_w) : NULL;
        if (!h->choices || (b->choice_w && !h->choice_w))
            return moe_fail(MOE_ENOMEM, NULL, "out of memory (held-out batch)");
        memcpy(h->choices, b->choices, n * kr * sizeof *h->choices);
        if (b->choice_w)
            memcpy(h->choice_w, b->choice_w, n * kr * sizeof *h->choice_w);
        h->k_rec = b->k_rec;
    }
    tr->k->load_x(tr->xr, h->x, n * d);
    int threads = blas_enter(tr);
    int rc = teacher_forward(tr, tr->ystar);
    blas_leave(threads);
    if (rc)
        return rc;
    /* teacher top-1 of the probe tokens: argmax of its gate logits (tl from teacher_forward) */
    for (int t = 0; t < tr->c.probe_tokens; t++) {
        const double *lt = tr->tl + (size_t)t * tr->Et;
        int best = 0;
        for (int e = 1; e < tr->Et; e++)
            if (lt[e] > lt[best])
                best = e;
        tr->t_top1[t] = best;
    }
    return MOE_OK;
}

int moe_train_run(moe_trainer *tr, moe_train_batch_fn fn, void *ctx, moe_train_row_fn cb,
                  void *cbctx)
{
    moe_batch b;
    int rc = fn(ctx, 0, &b);
    if (rc || (rc = keep_heldout(tr, &b)))
        return rc;
    for (long s = 0; s < tr->c.steps; s++) {
        if ((rc = fn(ctx, s + 1, &b)))
            return rc;
        double pp[3];
        if ((rc = moe_train_forward(tr, &b, tr->plan, 1, 1, pp)))
            return rc;
        for (size_t i = 0; i < tr->plan->n_entries; i++)
            tr->window[tr->plan->entries[i].expert]++;
        if (s % tr->c.eval_every == 0 || s == tr->c.steps - 1) {
            moe_train_row row;
            memset(&row, 0, sizeof row);
            row.step = s;
            row.loss = pp[0];
            row.aux_loss = pp[1];
            row.z_loss = pp[2];
            if ((rc = moe_metrics_compute(tr->plan, tr->L, 0, 0, tr->c.act, 1, tr->mt)))
                return rc;
            row.load_imbalance = tr->mt->load_imbalance;
            row.assignment_drop_rate = tr->mt->assignment_drop_rate;
            row.token_drop_rate = tr->mt->token_drop_rate;
            if ((rc = moe_train_eval_heldout(tr, &row)))
                return rc;
            if (cb && (rc = cb(cbctx, &row)))
                return rc;
            memset(tr->window, 0, (size_t)tr->E * sizeof *tr->window);
        }
        update(tr);
        observe(tr, &b);
    }
    return MOE_OK;
}
