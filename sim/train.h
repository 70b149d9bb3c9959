/* train.h: router training dynamics. A student MoE layer (gate Wg (D,M), expert FFNs as in
 * layer.h) routed by any router of the registry learns, by exact hand-written gradients, to
 * reproduce a fixed teacher (an MoE with its own experts, or one dense FFN) on batches of tokens
 * supplied by the caller. The engine knows nothing of specs or stores: the caller gives a
 * configuration, a router, a batch function and an eval callback.
 *
 * Model (shapes as in moe.h):
 *   L (T,M)  = x (T,D) Wg (D,M)                      gate GEMM (BLAS), widened to double
 *   plan     = router(L + noise)                     noise only for topk with noise_std > 0, on
 *                                                    training batches (eval routes clean logits)
 *   y (T,D)  = sum over plan entries cw * FFN_e(dw * x_t); dense plans (soft_moe): slot inputs
 *              D^T x, y = W FFN(slots) (GEMMs), as moe_layer_forward
 *   FFN_e(h) = act(h W1_e + b1_e) W2_e + b2_e        w1 (E,D,FW) b1 (E,FW) w2 (E,F,D) b2 (E,D)
 *   loss     = mse + aux_weight * aux + z_weight * z
 *   mse      = mean over the T*D elements of (y - y*)^2 (as torch.nn.functional.mse_loss)
 *   z        = mean_t logsumexp(L_t)^2 over the M columns (ST-MoE router z-loss)
 *   aux      = MOE_AUX_ROUTER: the router's own load-balancing loss on the clean logits, with
 *              p = softmax(L_t), P_e = mean_t p[t,e] and claim counts before capacity:
 *                topk   E/(k T) sum_e assigned_e P_e;  switch E sum_e (assigned_e/T) P_e;
 *                gshard E sum_e (first_e/T) P_e (first_e: tokens whose top-1 is e);
 *                every other router 0 (dsv3_bias balances by its bias, updated each step by
 *                the router's observe; expert_choice, soft_moe, base, sinkhorn, dense balance
 *                by construction; hash and replay have no trainable routing).
 *              The counts are constants of the gradient; it flows through P_e.
 *              MOE_AUX_IMPORTANCE: Shazeer et al. (2017) CV(I)^2 (population variance / mean^2)
 *              of the importance I_e = sum of the kept entries' combine weights on e.
 * Gradients: through the combine, the FFNs (BLAS GEMMs), and the combine weights back to the
 * logits following each router's gate formula (topk: softmax over its k selected logits;
 * switch, expert_choice, dense, sinkhorn k > 1: full softmax p; gshard: p_i / (p1 + p2);
 * base, sinkhorn k = 1: sigmoid; dsv3_bias: sigmoid normalised over the k selected; soft_moe:
 * dispatch softmax over tokens per column and combine softmax over columns per token;
 * renormalize = true divides by the kept sum and is differentiated too). The discrete
 * selection (which experts, which tokens kept) has zero gradient. hash and replay: constant
 * combine weights, only the experts train.
 *
 * Precision: MOE_TRAIN_FP32 (float parameters, sgemm) is the engine; MOE_TRAIN_FP64 runs the
 * same code in double (dgemm), for the finite-difference gradient checks.
 *
 * Threads and determinism: threaded OpenBLAS sgemm rounds differently with the thread count, so
 * every GEMM of the engine runs on one BLAS thread; the caller's BLAS thread count
 * (moe_blas_threads) becomes the number of workers that take the experts' FFN forward and
 * backward from a queue, one expert per worker at a time. Other reductions are sequential.
 * Results are identical for any thread count (tested with 1 and 2).
 */
#ifndef MOE_TRAIN_H
#define MOE_TRAIN_H

#include "moe.h"
#include "source.h"

enum moe_train_optimizer { MOE_OPT_SGD = 0, MOE_OPT_ADAM = 1 };
enum moe_train_schedule { MOE_LR_CONSTANT = 0, MOE_LR_COSINE = 1 };
enum moe_train_trainable { MOE_TRAIN_GATE = 0, MOE_TRAIN_ALL = 1 };
enum moe_train_teacher { MOE_TEACHER_MOE = 0, MOE_TEACHER_DENSE = 1 };
enum moe_train_aux { MOE_AUX_ROUTER = 0, MOE_AUX_IMPORTANCE = 1 };
enum moe_train_precision { MOE_TRAIN_FP32 = 0, MOE_TRAIN_FP64 = 1 };

typedef struct {
    int n, d, f, m;         /* T tokens per step, D, F, M logit columns (E*P for soft_moe) */
    int act;                /* enum moe_act */
    int steps;              /* training steps */
    int optimizer;          /* enum moe_train_optimizer; Adam betas 0.9, 0.999, eps 1e-8 */
    double lr;
    int lr_schedule;        /* enum moe_train_schedule */
    int warmup;             /* steps of linear warmup: lr * (s+1)/warmup for s < warmup */
    double aux_weight, z_weight;
    int aux_kind;           /* enum moe_train_aux */
    int trainable;          /* enum moe_train_trainable */
    int teacher;            /* enum moe_train_teacher */
    int teacher_experts, teacher_k; /* teacher MoE: experts and top-k (softmax over the k) */
    double target_noise;    /* std of Gaussian noise added to the training targets */
    int eval_every;         /* eval rows at steps 0, eval_every, 2 eval_every, ... and the last */
    int probe_tokens;       /* fixed probe tokens: the first probe_tokens of the held-out batch */
    int precision;          /* enum moe_train_precision */
    uint64_t seed;
    const float *wg_init;   /* (D,M) initial gate (e.g. moe_source_gate), or NULL: N(0, 1/D) */
} moe_train_config;

/* n 256, d 32, f 64, act gelu_tanh, steps 200, adam, lr 1e-3, constant, warmup 0, aux 0,
 * z 0, router aux, trainable all, teacher moe with 8 experts top-1, noise 0, eval_every 10,
 * probe_tokens 256, fp32, seed 1; m = 0: the caller must set the logit columns. */
void moe_train_config_default(moe_train_config *c);

/* One eval row (arrays valid until the next row). Training-batch metrics (loss, aux_loss,
 * z_loss, load_imbalance, drop rates) are those of the step's batch before its update; the
 * held-out loss (noise-free teacher targets), fluctuation, specialisation and gate entropy
 * are measured on the fixed held-out batch with the parameters before the step's update. */
typedef struct {
    long step;
    double loss;                 /* mse of the training batch */
    double heldout_loss;         /* mse on the held-out batch */
    double aux_loss, z_loss;     /* unweighted */
    double load_imbalance;       /* max/mean of assigned loads (moe_metrics_compute) */
    double assignment_drop_rate, token_drop_rate;
    int dead_experts;            /* experts with no kept token over the steps since the last row */
    const long *loads;           /* (E) kept tokens per expert summed over those steps */
    int E;
    double fluctuation;          /* share of probe tokens whose student top-1 changed since the
                                    last row (0 at the first row) */
    double specialisation;       /* NMI(teacher top-1, student top-1) on the probe tokens,
                                    MI / arithmetic mean of the two entropies (sklearn's
                                    default); NaN with a dense teacher */
    double gate_entropy;         /* mean over probe tokens of the entropy (nats) of softmax(L_t)
                                    summed per expert; hash/replay: of the normalised combine
                                    weights of the token's entries */
} moe_train_row;

/* Student top-1 (fluctuation, specialisation): the expert with the largest summed combine
 * weight among the token's plan entries (ties to the lower expert), or "no expert" for a token
 * without entries (counted as a class of its own). Teacher top-1: argmax of its gate logits. */

typedef struct moe_trainer moe_trainer;

/* Batch b (0 = the held-out batch, then 1, 2, ... one per step) of c->n tokens: x (T,D) and
 * ids always; choices/choice_w for replay. Buffers may be the callee's, valid until the next
 * call. moe_source_batch has this shape (see moe_train_source_batch). */
typedef int (*moe_train_batch_fn)(void *ctx, long b, moe_batch *out);
/* Called once per eval row; a non-zero return stops the run with that status. */
typedef int (*moe_train_row_fn)(void *ctx, const moe_train_row *row);

/* Adapter: ctx is a moe_source *. */
int moe_train_source_batch(void *ctx, long b, moe_batch *out);

/* Validates c (shapes >= 1, lr > 0, teacher_k in 1..teacher_experts, ...) and the router
 * (opts as for moe_router_alloc with n_max = c->n; trainable = gate with hash/replay is an
 * error: nothing to train). Draws teacher and student weights from c->seed. */
int moe_train_alloc(const moe_train_config *c, const moe_router_type *rt,
                    const moe_route_opts *ro, moe_trainer **out);
void moe_train_free(moe_trainer *tr); /* NULL-safe */

/* The whole run: batch 0 is kept as the held-out batch, then steps of fresh batches; cb gets
 * one row per eval step (may be NULL). */
int moe_train_run(moe_trainer *tr, moe_train_batch_fn fn, void *ctx, moe_train_row_fn cb,
                  void *cbctx);

/* ---- lower level: for the gradient checks and the benchmark ---- */

/* NMI of two labelings of n items, labels in [-1, ka) and [-1, kb) (-1 is a class of its own):
 * MI / ((H(a) + H(b)) / 2), natural logs; 1 when both are constant. */
double moe_train_nmi(const int *a, const int *b, int n, int ka, int kb);

/* Total loss (mse + weighted aux + z) on batch b and, if grad != NULL, its gradient w.r.t.
 * all parameters (moe_train_n_params doubles, layout [Wg | w1 | b1 | w2 | b2]). Does not
 * update the parameters or the router state. Random draws (topk noise, gshard uniforms,
 * target noise) are drawn afresh unless frozen. parts (may be NULL): mse, aux, z. */
int moe_train_objective(moe_trainer *tr, const moe_batch *b, double *loss, double *grad,
                        double parts[3]);
/* Keep the draws of the last objective for the following ones (1) or draw afresh (0). */
void moe_train_freeze_draws(moe_trainer *tr, int on);
/* One training step on b: objective, update, router observe. loss may be NULL. */
int moe_train_step(moe_trainer *tr, const moe_batch *b, double *loss);
size_t moe_train_n_params(const moe_trainer *tr);
size_t moe_train_n_gate_params(const moe_trainer *tr); /* D*M: the first ones */
double moe_train_param_get(const moe_trainer *tr, size_t i);
void moe_train_param_set(moe_trainer *tr, size_t i, double v);
/* The learning rate of step s (0-based) under c's schedule: lr (s+1)/warmup for s < warmup,
 * then lr (constant) or lr (1 + cos(pi (s - warmup) / (steps - warmup))) / 2 (cosine). */
double moe_train_lr(const moe_train_config *c, long s);
/* Element i of the student output y (T,D) of the last objective or step. */
double moe_train_output(const moe_trainer *tr, size_t i);
/* The plan of the last objective or step (valid until the next call). */
const moe_plan *moe_train_last_plan(const moe_trainer *tr);
/* Whether the engine can train router r (MOE_EINVAL with a message when it has no training
 * gradient) and, in *gate_trains, whether its combine weights depend on the logits (0 for
 * hash and replay: trainable = gate leaves nothing to train). For checks before a run. */
int moe_train_router_check(const moe_router *r, int *gate_trains);
/* Whether the router's combine weights depend on the logits (0 for hash, replay). */
int moe_train_gate_has_grad(const moe_trainer *tr);

/* Training-step benchmark: topk k = 2, E = 16, n = 4096, d = 256, f = 1024, Adam, trainable
 * all, aux 1e-2, z 1e-3, moe teacher (16 experts, top-2), relu, Gaussian tokens; `steps`
 * timed steps after one warm-up step. Stores seconds per step (forward + backward + update,
 * teacher targets included) and the last loss. */
int moe_train_bench(int steps, int act, double *sec_per_step, double *last_loss);

#endif
