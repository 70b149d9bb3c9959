/* train_impl.h: the private state of the training engine (train.h), shared by train.c (set-up,
 * steps, optimizer, run loop), train_kern.c (the fp32/fp64 numerical kernels: GEMMs, expert
 * FFN forward and backward, loss), train_grad.c (logit gradients per router, aux and z-loss)
 * and train_eval.c (eval metrics). Not part of the public API. */
#ifndef MOE_TRAIN_IMPL_H
#define MOE_TRAIN_IMPL_H

#include "train.h"

#include <gsl/gsl_rng.h>

/* Gate formulas (how a router's combine weights depend on the logits). */
enum tr_gate {
    TR_GATE_SOFTMAX_SEL = 0, /* topk: softmax over the k selected logits */
    TR_GATE_FULL_P = 1,      /* switch, expert_choice, dense, sinkhorn k > 1: p = softmax(L_t) */
    TR_GATE_GSHARD = 2,      /* p_i / (p1 + p2) over the top-2 */
    TR_GATE_SIGMOID = 3,     /* base, sinkhorn k = 1: sigmoid(L[t,e]) */
    TR_GATE_SIG_NORM = 4,    /* dsv3_bias: sigmoid normalised over the k selected (s + bias) */
    TR_GATE_SOFT = 5,        /* soft_moe: dispatch and combine softmaxes */
    TR_GATE_CONST = 6,       /* hash, replay */
    TR_GATE_RELU = 7         /* relu: ReLU(L[t,e]) */
};
enum tr_auxrouter { TR_AUX_NONE = 0, TR_AUX_TOPK = 1, TR_AUX_SWITCH = 2, TR_AUX_GSHARD = 3 };

/* Expert weights of one MoE (student or teacher), pointers into REAL arrays. */
typedef struct {
    int E, d, f, fw, act;
    void *w1, *b1, *w2, *b2;
} tr_ffn;

struct moe_trainer;
/* One expert phase: the weights (and gradients) it works on; dense = a dense (soft_moe) plan. */
typedef struct {
    struct moe_trainer *tr;
    const tr_ffn *w;
    tr_ffn *gw;
    int dense;
} tr_job;
/* The precision-specific kernels (train_kern.c), one table per REAL type. */
typedef struct {
    size_t rsz; /* sizeof(REAL) */
    /* xr (T,D) = x (float) */
    void (*load_x)(void *xr, const float *x, size_t len);
    /* out (T,M) double = xr (T,D) w (D,M) */
    void (*gate)(struct moe_trainer *tr, const void *xr, const void *w, int m, double *out);
    /* y (T,D) = the MoE output of plan with weights w */
    int (*ffn_forward)(struct moe_trainer *tr, const tr_ffn *w, const moe_plan *p,
                       const void *xr, void *y);
    /* expert grads into gw (NULL: none), dcw (entries) or dWc/dD (T,M) for dense plans */
    int (*ffn_backward)(struct moe_trainer *tr, const tr_ffn *w, tr_ffn *gw, const moe_plan *p,
                        const void *xr, const void *dy, double *dcw, double *dwc, double *dd);
    /* mse of y against t; dy = d mse / dy (if dy) */
    double (*mse)(const void *y, const void *t, size_t len, void *dy);
    /* g (D,M) = xr^T dL, dL double (T,M) */
    void (*gate_backward)(struct moe_trainer *tr, const void *xr, const double *dl, void *g);
    /* y += noise (double) */
    void (*add)(void *y, const double *noise, size_t len);
    double (*get)(const void *v, size_t i);
    void (*set)(void *v, size_t i, double x);
    /* optimizer over [0, len): SGD or Adam with bias corrections bc1, bc2 */
    void (*update)(struct moe_trainer *tr, size_t len, double lr, double bc1, double bc2);
} tr_kern;

extern const tr_kern moe_train_kern_f32, moe_train_kern_f64;

struct moe_trainer {
    moe_train_config c;
    const tr_kern *k;
    const moe_router_type *rt;
    moe_router *r;
    int E, M, P, K;            /* student experts, columns, slots per expert, router k */
    int gate_kind, aux_router; /* enum tr_gate, enum tr_auxrouter */
    int renorm;                /* router renormalises kept gates (claims routers) */
    double noise_std;          /* topk gate noise, added by the engine */
    /* parameters [Wg (D,M) | w1 | b1 | w2 | b2], gradients, Adam moments (REAL) */
    size_t n_params, n_gate;
    void *theta, *grad, *adam_m, *adam_v;
    tr_ffn ffn, gffn;          /* views of theta and grad */
    long t_adam;
    /* teacher: gate (D,Et) and FFNs, REAL */
    int Et, Kt;
    void *t_theta;
    tr_ffn tffn;
    moe_plan *plan, *tplan, *eplan;
    /* per-batch buffers */
    void *xr, *y, *ystar, *dy;  /* (T,D) REAL */
    double *L, *Ln, *dL;        /* (T,M) clean logits, routed logits, logit gradient */
    double *tl;                 /* (T,Et) teacher logits */
    double *p;                  /* (T,M) softmax of L */
    double *dwc, *dd;           /* (T,M) dense-plan gradients */
    double *dcw;                /* (entries) combine-weight gradients */
    size_t dcw_cap;
    double *drow, *grow, *srow, *sig, *key; /* (M) per-token scratch */
    unsigned char *kept;        /* (T,M) entry marks */
    int *idx, *itmp;            /* (M) argsort */
    void *gm;                   /* (T,M) REAL scratch for gate GEMMs */
    /* expert rows: R rows grouped by expert */
    size_t rows_cap;
    void *xin, *hid, *act, *out, *dout, *dhid; /* (R,D) (R,FW) (R,F) (R,D) (R,D) (R,FW) */
    long *off;                  /* (max(E,Et)+1) */
    long *fill;                 /* (max(E,Et)) */
    size_t *row_entry;          /* (R) entry of each row (sparse plans) */
    void *dm, *wc;              /* (T,M) REAL dense-plan dispatch and combine */
    /* random draws */
    gsl_rng *rng_train, *rng_eval;
    int frozen, drawn;
    double *unif;               /* (T) gshard uniforms */
    double *noise;              /* (T,M) topk gate noise (unit normal) */
    double *tnoise;             /* (T,D) target noise */
    /* eval */
    moe_batch held;             /* copy of batch 0 */
    int *t_top1, *s_top1, *prev_top1; /* (probe) */
    long *window;               /* (E) kept loads since the last row */
    long rows_done;
    moe_metrics *mt;
    int threads;                /* BLAS threads of the caller, used as workers */
};

/* ---- train_grad.c ---- */
/* Gate formula and router aux of a router type (by name); TR_GATE_CONST for unknown. */
int moe_train_gate_kind(const moe_router *r, int *gate_kind, int *aux_router, int *renorm);
/* aux and z of the clean logits tr->L for plan (fills tr->p); adds their weighted gradients
 * to tr->dL when grad. */
void moe_train_aux_z(moe_trainer *tr, const moe_plan *p, int grad, double *aux, double *z);
/* Importance CV^2 of the kept combine weights; adds its weighted gradient to dcw/dwc. */
double moe_train_importance(moe_trainer *tr, const moe_plan *p, int grad);
/* dL (T,M) += the gradient through the router's combine (and dispatch) weights, from dcw
 * (sparse plans) or dwc, dd (dense plans). Uses tr->Ln (the routed logits). */
int moe_train_router_backward(moe_trainer *tr, const moe_plan *p);

/* ---- train_eval.c ---- */
/* Student top-1 per token (-1: no entry) of the first n tokens of plan; w (n,E) receives the
 * summed combine weights per (token, expert), mark (n,E) the entries. */
void moe_train_top1(const moe_plan *p, int n, double *w, unsigned char *mark, int *top1);
/* Fill the eval row fields measured on the held-out batch. */
int moe_train_eval_heldout(moe_trainer *tr, moe_train_row *row);

/* ---- train.c ---- */
/* Group the plan's entries into rows by expert (tr->off, tr->row_entry; dense plans: M rows)
 * and grow the row buffers to fit. */
int moe_train_rows(moe_trainer *tr, const tr_ffn *w, const moe_plan *p);
/* fn(ctx, e) for e in 0..E-1: experts taken from a shared queue (most rows first) by
 * tr->threads workers, each running single-threaded BLAS; every expert is computed by one
 * thread from its own rows, so results do not depend on the thread count. */
int moe_train_experts_run(moe_trainer *tr, int E, void (*fn)(void *, int), void *ctx);
/* Forward of batch b: teacher targets (noise if train), student logits, route into p,
 * output; returns mse/aux/z; with grad the full gradient into tr->grad. */
int moe_train_forward(moe_trainer *tr, const moe_batch *b, moe_plan *p, int train, int grad,
                      double parts[3]);

#endif
