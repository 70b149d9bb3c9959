/* claims.h: claim resolution shared by the token-choice routers (topk, switch, gshard, hash):
 * given each token's ordered choices, the claim order, the capacity and renormalisation
 * (docs/routing.md section 2), produce the plan entries with their slots and the claim statistics
 * (assigned_load, importance, n_claims, capacity).
 *
 * A router fills, for the n tokens of one group:
 *   expert (T,K)  chosen expert of each choice, by rank (choice 0 = the token's first choice)
 *   gate   (T,K)  gate value of each choice (the combine weight before renormalisation)
 *   claim  (T,K)  1 if the choice claims a slot; 0 for a choice that makes no claim (gshard's
 *                 second choice that failed its draw): it is not counted anywhere
 *   p      (T,E)  full softmax of the logits (moe_claims_softmax), needed by orders bpr and probs
 * then calls moe_claims_resolve. Every token has exactly K choices (K fixed per call).
 */
#ifndef MOE_CLAIMS_H
#define MOE_CLAIMS_H

#include "moe.h"
#include "par.h"

typedef struct {
    int n_max, K, E;
    int32_t *expert;      /* (T,K) */
    double *gate;         /* (T,K) */
    unsigned char *claim; /* (T,K) */
    double *p;            /* (T,E) full softmax, or NULL when allocated without it */
    int keep_p;           /* 1: the rows pass fills p (else rows only pass through scratch) */
    int stats_in_rows;    /* set by the router: row() leaves each token's claims final, so the
                           * rows pass adds the claim statistics (assigned_load, importance,
                           * n_claims) to the plan, in token order */
    int stats_done;       /* the last rows pass did so (moe_claims_resolve then does not) */
    /* claims stored elsewhere (claims_var.h): the adding pass calls stats_rows(stats_ctx, t0,
     * t1, plan) for tokens [t0, t1), in token order, instead of reading the (T,K) arrays */
    void (*stats_rows)(void *ctx, long t0, long t1, moe_plan *plan);
    void *stats_ctx;
    /* set by the router, or NULL: called by the rows pass for each chunk of tokens [t0, t1)
     * once row() has run on all of them and before anything reads their claims, with row()'s
     * ctx, p the chunk's softmax rows (t1 - t0, E) and part the pass's thread part running it
     * (0 <= part < moe_claims_rows_threads(n); a part's chunks come in increasing token
     * order); chunks run concurrently on the pass's threads (work that is cheaper per chunk
     * than per token, such as one vector exponential over the chunk) */
    void (*rows_chunk)(void *ctx, long t0, long t1, const double *p, int part);
    /* set by the router, or NULL: called by the rows pass for each chunk of tokens [t0, t1)
     * with row()'s ctx before the chunk's softmax, to leave each token's K choices in expert
     * (by rank, each in [0, E)) and their logits in gate (t*K.., the first the row's maximum,
     * which the softmax takes instead of scanning the row); the softmax then leaves in gate the
     * exponentials exp(l - max) of the logits l of those experts (the numerators of p before
     * its division: moe_softmax_rows_more), for rows_chunk to make the gates from without
     * taking them again */
    void (*rows_select)(void *ctx, long t0, long t1);
    const double *num;    /* set by a router, or NULL: (n, E) the numerators exp(L - rowmax)
                           * of the rows pass's softmax (moe_vexp_shift of each row with its
                           * moe_vmax), when the router has them already (sinkhorn's K): the
                           * softmax copies them instead of taking the exponentials again */
    int top2_rows;        /* set by a router with K = 2 at E = 8: the rows pass's softmax also
                           * leaves each row's two largest logits in expert and gate
                           * (moe_softmax_rows8_top2: expert[2t] = -1 for a row it declines)
                           * before row() sees the row */
    int bpr_keys;         /* set by moe_claims_scratch_p for order bpr: the rows pass also leaves
                           * each token's key max_e p[t,e] in val (T) */
    int bpr_ready;        /* the last rows pass did so (moe_claims_resolve then uses them) */
    int first_ready;      /* the resolution on the threads left in fill (E) the tokens whose first
                           * choice is each expert (K = 1 in token order, every token claiming) */
    /* The claims per (rank, expert) that a rows pass adding the claim statistics counted for
     * the resolution on the threads, so that it need not count them again: part_cnt (parts, K,
     * E) for the parts the resolution will take (moe_claims_rows_parts), part i = tokens
     * [part_t0[i], part_t0[i + 1]) (on the pass's chunk boundaries); part_ready = 1 while valid
     * (reset by the resolution). part_cnt is NULL when K * E is too large to keep. */
    long *part_cnt;
    long part_t0[MOE_PAR_MAX + 1];
    int part_np, part_ready;
    double *pmean;        /* (E) mean over tokens of p[t,e] (moe_claims_softmax) */
    double *rowmax;       /* (T) each row's maximum logit, from the last rows pass */
    int32_t *pmax;        /* (T) each row's first index of its largest p, from the last rows
                           * pass when the plan's rows observer asked for them (rows_pmax);
                           * allocated by the first such pass */
    uint8_t *istop;       /* (T) for the plan's rows observer (moe_plan.rows_topk_sure), from
                           * the last rows pass with rows_select: 1 where the row's K choices are
                           * the K largest of its p (moe_softmax_more.istop); allocated when a
                           * pass first needs it */
    const double *rts_u;  /* (T,E) order rts: the draws, set by the router per group, or NULL */
    /* scratch for moe_claims_resolve */
    long *slot;           /* (T,K) slot of each claim, -1 = dropped or no claim */
    long *fill;           /* (E) next free slot per expert */
    long *off;            /* (E+1) start of each expert's claims in list (order probs) */
    int *list;            /* (T*K) claim indices t*K+j grouped by expert (order probs) */
    int *order;           /* (max(T, T*K)) visiting order / argsort output */
    int *tmp;             /* (max(T, T*K)) argsort scratch */
    double *val;          /* (max(T, T*K)) sort keys */
} moe_claims;

/* Workspace for up to n_max tokens, K choices each, E experts. with_p = 0 leaves p NULL
 * (router without probabilities, e.g. hash: orders bpr and probs are then unavailable).
 * Returns NULL on out-of-memory (after moe_fail). */
moe_claims *moe_claims_alloc(int n_max, int K, int E, int with_p);
void moe_claims_free(moe_claims *c); /* NULL is a no-op */

/* For a router whose only use of p after the rows pass is its claim order: p is filled only
 * when `order` (enum moe_order) is probs; otherwise each row's softmax lives in a
 * cache-resident scratch while row() runs, and for order bpr the rows pass keeps each token's
 * largest probability, the only use bpr has for p (pmean and the plan are the same either
 * way). */
void moe_claims_scratch_p(moe_claims *c, int order);

/* Doubles of p a rows pass over n tokens on E experts reads and writes when p is not kept
 * (keep_p = 0): the chunk slots it reuses, or every row when the pass has few chunks. A
 * workspace allocated without p may be given one of that size (of n * E for order probs). */
size_t moe_claims_rows_scratch(int n, int E);

/* The rows pass's chunk at E experts: 16384 / E tokens, at least 64 and at most 2048. */
long moe_claims_rows_chunk(int E);

/* acc[e] += p[t,e] for the rows t of p (rows, E), row after row: each acc[e] takes the same
 * additions in the same order as a loop over the rows adding one row at a time, with the sums
 * kept in registers across the rows (a sum kept in memory waits for its own store at every
 * row). */
void moe_claims_add_rows(double *restrict acc, const double *restrict p, long rows, int E);

/* The thread parts a rows pass over n tokens runs on (the parts rows_chunk is told). */
int moe_claims_rows_threads(int n);

/* The parts of n tokens on which the resolution on the threads (claims_par.h) numbers the claims
 * of the token orders, and for which a rows pass leaves its counts (part_cnt). */
int moe_claims_rows_parts(const moe_claims *c, int n);

/* p (T,E) = softmax of each row of logits (T,E); pmean (E) = mean_t p[t,e]. On the routers'
 * threads (par.h); the values do not depend on their number. plan (may be NULL): also keeps
 * each row's logsumexp in plan->lse (plan->lse_of = logits), for the z-loss. Returns MOE_OK,
 * MOE_ENOMEM, or MOE_EINPUT for a non-finite logit (the error of moe_logits_check_finite: the
 * pass reads every logit, so routers flagged MOE_RF_CHECKS_FINITE rely on it). */
int moe_claims_softmax(moe_claims *c, const double *logits, int n, moe_plan *plan);

/* A router's per-token work, called once per token t with its logits lt (E) and softmax pt (E)
 * right after pt is computed; calls run concurrently for different tokens, so row must write
 * only token t's outputs (expert, gate, claim at t*K..t*K+K-1, or the router's own (T) arrays). */
typedef void (*moe_claims_row_fn)(void *ctx, int t, const double *lt, const double *pt);

/* moe_claims_softmax with row() called for every token (row may be NULL). */
int moe_claims_rows(moe_claims *c, const double *logits, int n, moe_claims_row_fn row,
                    void *ctx, moe_plan *plan);

/* Index of the largest of x[0..len), skipping index skip (-1: none); ties to the lower index. */
int moe_claims_argmax(const double *x, int len, int skip);

/* moe_claims_argmax(lt, E, -1) of token t's logits lt (E) inside a row() of moe_claims_rows,
 * found from the maximum the pass has taken already (c->rowmax[t]). */
int moe_claims_argmax_row(const moe_claims *c, int t, const double *lt);

/* moe_select_top2 (select.h) of token t's logits lt (E) inside a row() of moe_claims_rows, from
 * its maximum c->rowmax[t]: *e1 the first index of the maximum, *e2 its second place if it has
 * one, else the first index of the largest logit below it; 0 (nothing written or a partial
 * answer) for a row it declines (a NaN), which the caller then scans. */
int moe_claims_top2_row(const moe_claims *c, int t, const double *lt, int32_t *e1, int32_t *e2);

/* A row() for one choice per token (K = 1): expert[t] = the first index of the row's largest
 * logit (moe_claims_argmax_row), gate[t] = its probability pt[expert[t]], claim[t] = 1, in the
 * claims c of the rows pass (called directly: ctx is c). The rows pass runs it over a chunk's
 * tokens in a loop of its own, so its ctx is free for the pass's rows_chunk. */
void moe_claims_row_first(void *ctx, int t, const double *lt, const double *pt);

/* A row() that does nothing, for a router whose rows_chunk does each chunk's per-row work: the
 * rows pass then makes no call per token. */
void moe_claims_row_chunk(void *ctx, int t, const double *lt, const double *pt);

/* The k largest of v[0..len) in descending order, ties to the lower index (the first k of a
 * stable descending argsort): idx (k) their indices, val (k) their values. By insertion into a
 * sorted list of k: O(len) for the small k of routing. */
void moe_claims_topk(const double *v, int len, int k, int32_t *idx, double *val);

/* moe_claims_topk of each of the n rows v (n, len) (len >= 1, 1 <= k <= len): row t's answer
 * at idx + t * k and val + t * k. */
void moe_claims_topk_rows(const double *v, long n, int len, int k, int32_t *idx, double *val);

/* Resolve the claims of n tokens into plan entries.
 * order: enum moe_order or MOE_ORDER_RTS (DeepSpeed's random token selection, top1gating
 * use_rts: each expert keeps the C claims with the largest c->rts_u[t,e], ties to the lower
 * token, slots in token order among the kept; needs c->rts_u) or MOE_ORDER_GATE (Megatron's
 * drop_policy 'probs': the same with the claim's gate c->gate as its key).
 * C: capacity (slots per expert); dropless = 1 ignores C and uses
 * C = the largest number of claims on one expert, so nothing is dropped and slot < C holds.
 * renormalize = 1: each token's kept gate values are divided by their sum.
 * Fills plan->assigned_load, importance (claims before capacity), n_claims, capacity and the
 * entries (dispatch_weight 1), emitted token-major: by token, then by choice rank.
 * Does not touch plan->aux_loss. Errors: MOE_EINVAL for an unknown order or an order that needs
 * p when the workspace has none. */
int moe_claims_resolve(moe_claims *c, int n, int order, long C, int dropless, int renormalize,
                       moe_plan *plan);

/* The shared tail of the token-choice routers topk, switch and gshard: capacity
 * C = moe_capacity(o, K, n, E) (none if o->dropless), moe_claims_resolve with o's order and
 * renormalisation, then aux_loss:
 *   MOE_CLAIMS_AUX_ASSIGNED  E / (K*n) * sum_e assigned_load[e] * pmean[e]   (topk)
 *   MOE_CLAIMS_AUX_FIRST     E * sum_e (first[e] / n) * pmean[e], first[e] = tokens whose
 *                            first choice is e                            (switch, gshard)
 * Needs moe_claims_rows (or _softmax) run on the same n tokens first. */
enum { MOE_CLAIMS_AUX_ASSIGNED = 0, MOE_CLAIMS_AUX_FIRST = 1 };
int moe_claims_finish(moe_claims *c, const moe_route_opts *o, int n, int aux, moe_plan *plan);

#endif
