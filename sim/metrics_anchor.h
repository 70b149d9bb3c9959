/* metrics_anchor.h: the anchor libraries' losses and balance statistics of a plan
 * (sim/metrics_anchor.c; definitions in docs/metrics.md): Megatron seq_aux_loss, t2t
 * load_loss_shazeer, V-MoE importance_loss_vmoe and load_loss_vmoe, fairseq overflow_expert1/2,
 * vLLM balancedness. Called by moe_metrics_compute (sim/metrics.c). */
#ifndef MOE_METRICS_ANCHOR_H
#define MOE_METRICS_ANCHOR_H

#include "moe.h"

/* Tokens per routing group or sequence: len when 0 < len < n, else n (one span of all). */
int moe_metrics_span(int len, int n);

/* The anchor metrics of plan into mt from the logits (T,E) routed (NULL: the losses that need
 * them are NaN); mt->kept_load must already hold the kept loads. The per-token terms are
 * computed on moe_par_threads() threads and every sum is taken in token order, so the values
 * do not depend on the number of threads. MOE_EINVAL when sequence_length does not divide T,
 * MOE_ENOMEM when out of memory. */
int moe_metrics_anchor(const moe_plan *plan, const double *logits, moe_metrics *mt);
/* moe_metrics_anchor with the sums over the rows from memo (anchor_memo.h) when it holds those
 * of logits as the gate cache's batch number `batch`, else computed and kept there (memo NULL or
 * batch 0: moe_metrics_anchor). The same bits as moe_metrics_anchor. */
typedef struct moe_anchor_memo moe_anchor_memo;
int moe_metrics_anchor_memo(const moe_plan *plan, const double *logits, moe_metrics *mt,
                            moe_anchor_memo *memo, unsigned long batch);

/* The algorithmic reference of the losses moe_metrics_anchor computes (seq_aux_loss,
 * importance_loss_vmoe, load_loss_vmoe, load_loss_shazeer): one serial loop over tokens with
 * the plain top-k of routers/claims.h and the C library's exp. For the tests, which compare
 * the two bit for bit. */
int moe_metrics_anchor_reference(const moe_plan *plan, const double *logits, moe_metrics *mt);

/* The state behind moe_metrics_attach (moe.h); moe_metrics_free frees it (NULL is a no-op). */
typedef struct moe_metrics_rows moe_metrics_rows;
void moe_metrics_rows_free(moe_metrics_rows *r);

/* The sums of plan's rows observer (moe_metrics_attach) after a rows pass, saved into state
 * (moe_metrics_rows_state_size() bytes) and put back into the observer of another plan, as if
 * that plan's router had run the same rows pass (a memo of the rows pass: route_memo.h). Both
 * return 1, or 0 when the plan has no observer of the metrics (nothing copied). */
size_t moe_metrics_rows_state_size(void);
int moe_metrics_rows_save(const moe_plan *plan, void *state);
int moe_metrics_rows_restore(moe_plan *plan, const void *state);

#endif
