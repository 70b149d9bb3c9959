/* moe.h: the core types of moesim, shared by the engine (sim/) and the routers (routers/).
 *
 * Dimension letters, used in every shape comment "(T,E)" in this code base:
 *   T  tokens in one routing group (n)
 *   E  experts
 *   K  experts per token (k)
 *   M  logit columns: E for most routers, E*P for soft_moe (P slots per expert)
 *   C  capacity: slots per expert
 *   D  model width (d)
 *   F  expert hidden width (f)
 *
 * The routing plan is the one data structure every router produces:
 * a list of entries (token, expert, slot, dispatch_weight, combine_weight).
 */
#ifndef MOE_H
#define MOE_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <gsl/gsl_rng.h>

/* ---- errors ---------------------------------------------------------------------------
 * Library code never exits: it records one message through moe_fail (the single breakpoint)
 * and returns the status code. main.c prints "moesim: error: <what> (<where>)" and the hint. */
enum {
    MOE_OK = 0,
    MOE_EINVAL = 1, /* bad option or argument value */
    MOE_EIO = 2,    /* file cannot be read or written */
    MOE_EFORMAT = 3, /* malformed file content */
    MOE_ENOMEM = 4,
    MOE_EDB = 5,    /* SQLite */
    MOE_EINPUT = 6  /* bad numeric input: NaN/inf logits, n = 0, k out of range, bad ids */
};
/* Record an error; fmt should read "<what> (<where>)". hint may be NULL. Returns code. */
int moe_fail(int code, const char *hint, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Append " (<where>)" to the recorded message: for callers that know where the input came from
 * (a command-line flag, a file) when the callee did not. No-op without a recorded error. */
void moe_error_where(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
const char *moe_errmsg(void);
const char *moe_errhint(void);
void moe_clear_error(void);
/* Install moesim's handler as GSL's error handler (records through moe_fail, no abort). */
void moe_install_gsl_handler(void);

/* ---- random numbers (sim/rng.c) ----------------------------------------------------------
 * PCG32 XSH-RR 64/32 (O'Neill 2014). State is a plain struct; streams are selected by
 * (seed, stream): each purpose draws from its own stream. */
typedef struct { uint64_t state, inc; } moe_pcg32;
void moe_pcg32_seed(moe_pcg32 *r, uint64_t initstate, uint64_t initseq);
uint32_t moe_pcg32_next(moe_pcg32 *r);
extern const gsl_rng_type *moe_rng_pcg32; /* PCG32 as a GSL generator (range 0..2^32-1) */
/* r moved on by delta draws at once (O(log delta) steps). */
void moe_pcg32_advance(moe_pcg32 *r, uint64_t delta);
/* u[q] = gsl_rng_uniform(r) for q = 0..n-1 in order, and r left as after those n draws: the
 * same doubles, drawn on the routers' threads (par.h) when r is a moe_rng_pcg32 (each thread
 * jumps ahead to its first draw), else one at a time. */
void moe_rng_uniform_fill(gsl_rng *r, double *u, long n);
/* A gsl_rng running PCG32 seeded with (seed, stream). Free with gsl_rng_free. */
gsl_rng *moe_rng_alloc(uint64_t seed, uint64_t stream);
enum moe_stream {
    MOE_STREAM_TOKENS = 1,   /* token source draws */
    MOE_STREAM_GATE_W = 2,   /* gate matrix Wg */
    MOE_STREAM_EXPERT_W = 3, /* expert weights */
    MOE_STREAM_NOISE = 4,    /* noisy top-k gate noise */
    MOE_STREAM_GSHARD = 5,   /* gshard second-expert draws */
    MOE_STREAM_SOURCE_PARAM = 6, /* source parameters: cluster centres, embeddings */
    MOE_STREAM_SHARED_W = 7      /* shared expert weights */
};

/* ---- the plan ---------------------------------------------------------------------------- */
typedef struct {
    int32_t token, expert, slot;
    double dispatch_w, combine_w;
} moe_entry;

typedef struct moe_plan {
    int n;           /* T */
    int E;           /* experts */
    int m;           /* M logit columns */
    int k;           /* experts per token the router used (0 where it does not apply) */
    long capacity;   /* C: slots per expert; every entry has 0 <= slot < C */
    int dense;       /* 1 for soft_moe (dense dispatch weights: the layer uses GEMMs) */
    size_t n_entries, cap_entries;
    moe_entry *entries; /* (n_entries) in the order the router produced them */
    /* Router-side statistics for the metrics (sim/metrics.c): */
    long *assigned_load;  /* (E) claims on e before capacity */
    double *importance;   /* (E) summed gate values of all claims on e before capacity */
    long n_claims;        /* all claims (token-choice routers); entries for claim-less routers */
    double aux_loss;      /* as defined per router; 0 where none */
    /* Routers that take each token's softmax also keep its logsumexp (for the z-loss, so the
     * metrics do not take the exponentials again): lse (T) = moe_logsumexp of each row of
     * lse_of, the logits routed; lse_of = NULL (reset) when not kept. Valid while those logits
     * are unchanged. */
    const double *lse_of;
    double *lse;
    size_t lse_cap;
    /* lse_sumsq = moe_sum_sq(0.0, lse, T), the z-loss's sum, which a rows pass adds as its rows
     * come (in token order, on whichever thread adds them); valid when lse_sumsq_of equals
     * lse_of (NULL after a reset). */
    const double *lse_sumsq_of;
    double lse_sumsq;
    /* For the anchor loss metrics (sim/metrics.c), reset with the plan: */
    const double *noisy_logits; /* (T,E) the logits after gate noise (topk with noise_std > 0):
                                 * noisy_buf, or NULL */
    double *noisy_buf;          /* the plan's own (T,E) buffer of them (moe_plan_noisy_buffer) */
    size_t noisy_cap;
    double noise_std;           /* the std of that noise */
    long rank_claims[2];        /* claims of choice rank 0 and 1 (token-choice routers) */
    long rank_kept[2];          /* of those, the claims kept within capacity */
    /* An observer of the softmax rows the routers compute in their rows pass (moe_claims_rows),
     * p = rows t0..t1-1 of the softmax (T,E) of the logits routed: rows_each(rows_ctx, t0, t1,
     * p, pmax) once per block of rows, from the pass's threads in any order (per-row work), then
     * rows_add(rows_ctx, t0, t1, p, psum) for the same block, in token order, one call at a
     * time (the sums). pmax (t1 - t0): each row's first index of its largest p (some index in
     * [0, E) for a row holding a NaN) when rows_pmax asks for them and the pass takes them, else
     * NULL.
     * psum (E): the sums of the rows [0, t1) of p, each column from +0.0 in token order (the
     * additions of moe_claims_add_rows, claims.h), or NULL. moe_metrics_attach sets them and
     * the plan keeps them across resets; rows_of = those logits once the pass gave every row
     * (NULL after a reset, as lse_of). */
    void (*rows_each)(void *ctx, long t0, long t1, const double *p, const int32_t *pmax);
    void (*rows_add)(void *ctx, long t0, long t1, const double *p, const double *psum);
    void *rows_ctx;
    int rows_pmax;
    const double *rows_of;
    /* The router's own choices while its rows pass runs, for rows_each: rows_topk (T,
     * rows_topk_k) holds each row's rows_topk_k largest logits by rank (ties to the lower
     * expert), filled for rows t0..t1-1 before rows_each sees them; NULL when the router's
     * choices are not those (noise, scores, sampling) or outside its rows pass. */
    const int32_t *rows_topk;
    int rows_topk_k;
    /* with rows_topk or NULL: rows_topk_sure[t] = 1 where row t's rows_topk are also the
     * rows_topk_k largest of its p (no other p of the row reaches the smallest of theirs, as
     * moe_select_is_top of the row's p tells), 0 where they may not be; filled with them */
    const uint8_t *rows_topk_sure;
    /* An observer of the entries a resolution writes on the routers' threads (routers/claims.h,
     * token-major by token): when the plan has no entries yet the resolution asks
     * ents_begin(ents_ctx, plan, np) whether to show it the entries its np token parts write;
     * if so part i (tokens [lo, hi)) calls ents_block(ents_ctx, i, lo, hi, t0, t1, a, b) after
     * writing the entries [a, b) of its tokens [t0, t1), the blocks of a part in token order
     * from t0 = lo to t1 = hi (one call with t0 = t1 for an empty part), and once every part has
     * written the resolution sets ents_seen = 1: the observer saw the entries as they are.
     * moe_plan_reset and moe_plan_push clear ents_seen; moe_metrics_attach sets the rest. */
    int (*ents_begin)(void *ctx, const struct moe_plan *plan, int np);
    void (*ents_block)(void *ctx, int i, long lo, long hi, long t0, long t1, const moe_entry *a,
                       const moe_entry *b);
    void *ents_ctx;
    int ents_seen;
} moe_plan;

moe_plan *moe_plan_alloc(int n_max, int E, size_t cap_entries);
void moe_plan_free(moe_plan *p);            /* NULL is a no-op */
/* Clear entries and statistics for a new routing group of n tokens, E experts, M columns. */
int moe_plan_reset(moe_plan *p, int n, int E, int m);
/* The (T) buffer for plan->lse, grown to p->n rows; NULL when out of memory (after moe_fail). */
double *moe_plan_lse_buffer(moe_plan *p);
/* The (T,E) buffer for the noisy logits, grown to p->n rows of p->E; NULL when out of memory
 * (after moe_fail). Sets p->noisy_logits to it (the router fills it). */
double *moe_plan_noisy_buffer(moe_plan *p);
/* Append one entry (grows the buffer if needed; routers reserve enough up front). */
int moe_plan_push(moe_plan *p, int32_t t, int32_t e, int32_t s, double dw, double cw);
/* Room for `more` entries past n_entries (entries written in place by a router's threads):
 * MOE_OK or MOE_ENOMEM. */
int moe_plan_reserve(moe_plan *p, size_t more);
/* The index of the first entry whose dispatch or combine weight is not finite, or n_entries
 * when all are finite (the entries read on the routers' threads). */
size_t moe_plan_first_nonfinite(const moe_plan *p);
/* w (T,E): the weights of the dense mixture sum_e w[t,e] FFN_e(x_t) that output errors are
 * measured against: softmax of the logits (T,M) for sparse plans (M = E), the combine weights
 * summed over each expert's slots for dense (soft_moe) plans. */
void moe_plan_mixture_weights(const moe_plan *p, const double *logits, double *w);
/* Write the plan as CSV with the exact header token,expert,slot,dispatch_weight,combine_weight
 * (weights %.9g). Writes to a temporary name and renames. */
int moe_plan_write_csv(const moe_plan *p, const char *path);

/* ---- output files (sim/outfile.c) --------------------------------------------------------
 * Written into a fresh "<path>.tmp.XXXXXX" (mkstemp in the target folder) and renamed over path
 * only when complete. Errors read "cannot write <what>: <reason> (<path>)"; on failure nothing is
 * left behind. A path that is a symlink, FIFO, device, socket or folder is refused, and so is a
 * file this process noted as an input. */
typedef struct {
    FILE *f;          /* write to this */
    const char *path, *what;
    char tmp[4096];
} moe_outfile;
int moe_outfile_open(moe_outfile *o, const char *path, const char *what, const char *mode);
/* Close, then rename over path unless bad (a write failed: errno tells why) or the close or the
 * rename fails; otherwise remove the temporary. */
int moe_outfile_commit(moe_outfile *o, int bad);
/* Close and remove the temporary: nothing is written (no error is recorded). */
void moe_outfile_discard(moe_outfile *o);
/* The checks of moe_outfile_open alone: path is absent or a regular file that is no input. */
int moe_outfile_check(const char *path, const char *what);
/* Remember the file at path (device and inode) as an input that no output may replace; a
 * missing file is ignored. */
int moe_outfile_note_input(const char *path);
/* Remove the temporaries of outputs still open (async-signal-safe: for signal handlers). */
void moe_outfile_remove_temps(void);

/* ---- routing options (one struct for every router; sim/options.c fills it) --------------- */
/* ceil, floor, round: ROUND of the exact k*n*cf/E; the others: a library's own formula in
 * floating point (moe_capacity) */
enum moe_rounding { MOE_ROUND_CEIL = 0, MOE_ROUND_FLOOR = 1, MOE_ROUND_HALF_EVEN = 2,
                    MOE_ROUND_DEEPSPEED_F32 = 3, MOE_ROUND_FAIRSEQ = 4, MOE_ROUND_TUTEL = 5 };
enum moe_order { MOE_ORDER_CHOICE_MAJOR = 0, MOE_ORDER_TOKEN_MAJOR = 1, MOE_ORDER_BPR = 2,
                 MOE_ORDER_PROBS = 3 };
enum moe_threshold { MOE_THRESH_NORMALIZED = 0, MOE_THRESH_RAW = 1 };
enum moe_hash { MOE_HASH_MOD = 0, MOE_HASH_TABLE = 1, MOE_HASH_BALANCED = 2 };
enum moe_score { MOE_SCORE_AUTO = 0, MOE_SCORE_SOFTMAX = 1, MOE_SCORE_SIGMOID = 2,
                 MOE_SCORE_SQRTSOFTPLUS = 3 };
enum moe_tri { MOE_TRI_AUTO = 0, MOE_TRI_TRUE = 1, MOE_TRI_FALSE = 2 };
enum moe_group_score { MOE_GSCORE_TOPK_SUM = 0, MOE_GSCORE_MAX = 1 };
/* order rts (DeepSpeed's random token selection) follows the four orders above; order gate
 * (Megatron's drop_policy 'probs': rank by the claim's gate) follows rts */
enum { MOE_ORDER_RTS = 4, MOE_ORDER_GATE = 5 };
/* gshard: whether the second choice is dispatched */
enum moe_second_policy { MOE_SECOND_RANDOM = 0, MOE_SECOND_ALL = 1, MOE_SECOND_SAMPLING = 2,
                         MOE_SECOND_THRESHOLD = 3 };
/* switch: how the expert is selected */
enum moe_select { MOE_SELECT_ARGMAX = 0, MOE_SELECT_RSAMPLE = 1 };
/* train: the options as given; eval: capacity_factor_eval, and no noise, jitter, rsample or
 * Gumbel sampling (moe_route_opts_effective) */
enum moe_mode { MOE_MODE_TRAIN = 0, MOE_MODE_EVAL = 1 };

typedef struct {
    int k;                   /* experts per token; 0 = the router's default */
    int cf_set;              /* capacity factor given? */
    long long cf_num, cf_den; /* cf exactly, as the decimal it was written as: 1.1 = 11/10 */
    long capacity;           /* explicit C; < 0 = from the formula */
    long min_capacity;       /* default 0 */
    int rounding;            /* enum moe_rounding */
    int order;               /* enum moe_order */
    int renormalize;         /* 0/1 */
    int threshold_on;        /* enum moe_threshold */
    int hash;                /* enum moe_hash */
    const int64_t *hash_table; size_t hash_table_len; /* for hash = table (index = id) */
    int slots_per_expert;    /* soft_moe P; 0 = M / num_experts if given, else 1 */
    int num_experts;         /* soft_moe E (M = E*P); 0 = M / P */
    double noise_std;        /* topk gate noise; 0 = off */
    int dropless;            /* no capacity limit for token-choice routers */
    /* dsv3_bias: bias update rate; sinkhorn: convergence tolerance */
    double bias_rate;
    double sinkhorn_tol;
    /* Score path of the token-choice routers (routers/claims.h, moe_score_*): */
    int score;               /* enum moe_score; AUTO = the router's own score function */
    int normalize_topk;      /* enum moe_tri; AUTO = the router's own normalisation */
    double route_scale;      /* combine weights times this after normalisation; default 1 */
    int groups;              /* G contiguous expert groups; 0 = no group limit */
    int topk_groups;         /* M groups kept per token; 0 = all G */
    int group_score;         /* enum moe_group_score */
    /* Variable-k routers topp and relu: */
    double top_p;            /* topp: experts until their cumulative probability reaches this */
    int max_k;               /* topp, relu: at most this many experts per token; 0 = E */
    /* library dialects: gshard's second-choice policy and threshold, switch's selection, C
     * rounded up to a multiple */
    int second_policy;       /* enum moe_second_policy */
    double second_threshold; /* threshold policy: dispatch iff normalised g2 > this */
    int select;              /* enum moe_select */
    long capacity_multiple;  /* C rounded up to a multiple of this (1 = off) */
    /* routing groups, train and eval capacity, input jitter, padding to capacity */
    int group_size;          /* G tokens per routing group (n/G groups); 0 = one group */
    int pad_to_capacity;     /* 0/1: recorded: the point models padding to C rows (Megatron) */
    int mode;                /* enum moe_mode */
    int cf_eval_set;         /* capacity_factor_eval given? (mode eval: it replaces cf) */
    long long cf_eval_num, cf_eval_den;
    double jitter;           /* eps: gate input x times U(1-eps, 1+eps) per element; 0 = off */
    /* read by the metrics (moe_metrics_set_opts) */
    int sequence_length;     /* seq_aux_loss: sequences of this many tokens; 0 = the batch */
} moe_route_opts;

/* The defaults of the option table (sim/options.c): cf = 1.0 (unset), capacity -1, ... */
void moe_route_opts_default(moe_route_opts *o);
/* Parse a capacity factor written as a non-negative decimal ("1.25", "2", ".5") exactly. */
int moe_decimal_parse(const char *s, long long *num, long long *den);
/* The options a router runs with (moe_router_alloc copies them so): in mode eval,
 * capacity_factor_eval (when given) replaces capacity_factor, noise_std and jitter are 0, select
 * is argmax and second_policy sampling becomes all (the second expert by argmax of the logits).
 * In mode train a copy of o. */
void moe_route_opts_effective(const moe_route_opts *o, moe_route_opts *out);
/* C = max(min_capacity, ROUND(k*n*cf/E)) on integers (rounding ceil, floor, round), or the
 * library formula of rounding deepspeed_f32 (float32 ceil(n/E * cf*k)), fairseq or tutel
 * (k * int(cf * ceil(n/E)) in double) in place of ROUND, then rounded up to a multiple of
 * capacity_multiple; explicit capacity overrides.
 * cf unset means cf = 1. Returns MOE_OK and stores C, or an error on overflow. */
int moe_capacity(const moe_route_opts *o, int k, long n, int E, long *C);

/* ---- routers ----------------------------------------------------------------------------- */
typedef struct {
    int n;                   /* T */
    int m;                   /* M */
    const double *logits;    /* (T,M) row-major, all finite (checked before route) */
    const int64_t *ids;      /* (T) token ids, or NULL */
    const double *uniforms;  /* (T) gshard draws u ~ U(0,1), or NULL to draw from rng */
    gsl_rng *rng;            /* noise / draws; may be NULL when not needed */
    const int32_t *choices;  /* (T,Krec) recorded expert ids for the replay router, or NULL */
    const double *choice_w;  /* (T,Krec) recorded gate weights, or NULL */
    int k_rec;               /* Krec */
    /* (T,E) uniforms u of Gumbel draws G = -log(-log u) (gshard sampling, switch rsample), or
     * NULL to draw them from rng */
    const double *gumbel_u;
    const double *rts_u;     /* (T,E) order rts: keys of random token selection, or NULL */
} moe_route_in;

typedef struct moe_router moe_router;
enum {
    MOE_RF_NEEDS_IDS = 1u << 0, /* routes on token ids (hash) */
    MOE_RF_USES_RNG = 1u << 1,  /* draws random numbers (gshard, noisy topk) */
    MOE_RF_DENSE = 1u << 2,     /* dense plan (soft_moe) */
    MOE_RF_STATEFUL = 1u << 3,  /* state carried across batches (observe) */
    MOE_RF_HAS_DROPLESS = 1u << 4, /* has a dropless form (output error vs its own dropless) */
    MOE_RF_NEEDS_CHOICES = 1u << 5, /* routes on recorded choices (replay): choices, k_rec */
    MOE_RF_NO_CAPACITY = 1u << 6,   /* capacity factor has no effect (base, dense) */
    MOE_RF_ALL_EXPERTS = 1u << 7,   /* every token goes to every expert: effective k = E */
    MOE_RF_STREAM_GSHARD = 1u << 8, /* random draws from MOE_STREAM_GSHARD, not MOE_STREAM_NOISE */
    MOE_RF_CHECKS_FINITE = 1u << 9, /* checks its logits itself while it reads them
                                     * (moe_logits_check_finite): moe_router_route does not */
    MOE_RF_MEMO = 1u << 10 /* keeps its capacity-free work in its workspace and reuses it from
                            * a memo (route_memo.h: moe_route_memo_reuse, _record) */
};
typedef struct moe_router_type {
    const char *name;
    const char *summary;   /* one line, for `moesim list routers` */
    unsigned flags;
    int default_k;         /* k when opts.k == 0 */
    /* Allocate r->ws for up to r->n_max tokens and r->m columns (may be NULL). */
    int (*alloc)(moe_router *r);
    void (*free)(moe_router *r);
    /* Route one group; plan has been reset by the caller (n, E, m set). Validated input. */
    int (*route)(moe_router *r, const moe_route_in *in, moe_plan *plan);
    /* Stateful routers: update state from the plan of the batch just routed; else NULL. */
    void (*observe)(moe_router *r, const moe_route_in *in, const moe_plan *plan);
} moe_router_type;

struct moe_router {
    const moe_router_type *type;
    moe_route_opts opts;
    int n_max, m, E, k;    /* E = experts (m / P for soft_moe); k = effective k */
    void *ws;              /* router workspace/state, owned by the router type */
    moe_plan *gplan;       /* routing groups: the plan of one group (route_groups.c), or NULL */
    double *rts_buf;       /* (T,E) order rts keys drawn from the stream, or NULL */
    /* logits known to be finite, whose check moe_router_route skips (set by the pipeline for
     * the logits its gate computed from finite x and Wg), or NULL */
    const double *finite_logits;
    /* the memo of the capacity-free work lent for the current route (route_memo.h), or NULL;
     * memo_mode: what the route does with it (set by moe_route_memo_begin) */
    struct moe_route_memo *memo;
    int memo_mode;
};

extern const moe_router_type *const moe_router_types[]; /* NULL-terminated (routers/registry.c) */
const moe_router_type *moe_router_find(const char *name);
/* The PCG stream a router's random draws come from (with the run's seed): MOE_STREAM_GSHARD for
 * a type flagged MOE_RF_STREAM_GSHARD (gshard's second-expert draws), else MOE_STREAM_NOISE
 * (gate noise). */
uint64_t moe_router_stream(const moe_router_type *t);
/* Whether a router of type t with options o draws from its PCG stream: the type's own draws
 * (MOE_RF_USES_RNG), topk's noise, switch's rsample, order rts without a file of keys,
 * jitter. */
int moe_router_needs_rng(const moe_router_type *t, const moe_route_opts *o);
/* Validates options against (n_max, m): k in 1..E, P divides M, group_size divides n_max, ...
 * The router keeps moe_route_opts_effective(o). */
int moe_router_alloc(const moe_router_type *t, const moe_route_opts *o, int n_max, int m,
                     moe_router **out);
void moe_router_free(moe_router *r);
/* MOE_OK if the n*m logits x are finite, else MOE_EINPUT naming the first non-finite one. */
int moe_logits_check_finite(const double *x, int n, int m);
/* The checks of moe_router_alloc for (n_max, m) without a workspace for n_max tokens: the
 * checks that depend on the tokens (group_size divides n_max) at n_max, the router type's own
 * option checks on an instance for one token (O(E) bytes). */
int moe_router_check(const moe_router_type *t, const moe_route_opts *o, int n_max, int m);
/* Validates the input (n in 1..n_max, all logits finite, ids present/non-negative when needed),
 * resets the plan and routes. Order rts without in->rts_u draws its keys (T,E) first, one
 * gsl_rng_uniform_pos per (token, expert) row-major from in->rng. With group_size G (< n) the n
 * tokens route as n/G groups of G contiguous tokens (route_groups.c). */
int moe_router_route(moe_router *r, const moe_route_in *in, moe_plan *plan);
/* Routing groups (route_groups.c): route in (validated, n divisible by G) group by group through
 * the router type and assemble one plan: token = g*G + t, slot = g*C + s with C the largest
 * capacity of a group, capacity = (n/G)*C; loads, importance and claims summed, aux_loss the
 * mean over groups (GShard's per-group loss averaged), the logsumexps kept when every group
 * kept them. */
int moe_route_groups(moe_router *r, const moe_route_in *in, moe_plan *plan);
/* Slots per expert a plan of n tokens can need under o for k choices and E experts: the
 * capacity formula of moe_capacity on the options a router runs with (mode eval included),
 * per group of G tokens times n/G groups when group_size is set. */
int moe_route_capacity(const moe_route_opts *o, int k, long n, int E, long *C);

/* ---- shared numerics (sim/util.c) ---------------------------------------------------------- */
/* p = softmax(x) over len values, in double (max-subtracted). */
void moe_softmax(const double *x, int len, double *p);
/* moe_softmax, returning logsumexp(x) exactly as moe_logsumexp computes it. */
double moe_softmax_lse(const double *x, int len, double *p);
double moe_logsumexp(const double *x, int len);
/* z + x[0]^2 + x[1]^2 + ... + x[n-1]^2, added in that order, each square rounded apart (the
 * z-loss's sum of the logsumexps, from z = 0.0; a sum continued over consecutive blocks is the
 * sum over all of them). */
double moe_sum_sq(double z, const double *x, long n);
/* Stable argsort, descending by v; equal values keep ascending index order.
 * idx (len) receives the order; tmp (len) is scratch. */
void moe_argsort_desc(const double *v, int len, int *idx, int *tmp);
/* Seconds on the monotonic clock (for timings: differences only). */
double moe_now(void);

/* ---- metrics (sim/metrics.c; the table of them: sim/metric_table.c) --------------------------- */
enum moe_act { MOE_ACT_GELU_TANH = 0, MOE_ACT_GELU_ERF = 1, MOE_ACT_RELU = 2, MOE_ACT_SWIGLU = 3 };

typedef struct {
    int E;
    long capacity, num_entries, n_tokens;
    long *assigned_load, *kept_load;   /* (E) */
    double *importance;                /* (E) */
    long *experts_per_token;           /* (E+1) histogram: tokens with 0..E kept experts */
    double load_imbalance, kept_load_imbalance, load_cv;
    double assignment_drop_rate, token_drop_rate;
    double importance_cv2, aux_loss, z_loss;
    /* FLOPs, counted analytically; 0 when the layer shape is unknown (d = 0). */
    double flops_gate, flops_expert_useful, flops_expert_padded;
    double flops_soft_dispatch, flops_soft_combine;
    /* relative L2 errors of the layer output; NaN when not computed */
    double output_error_dense, output_error_dropless;
    /* Routing configuration the metrics below read (moe_metrics_set_opts; defaults: one expert
     * group, the batch as one routing group and one sequence, the router's own score). */
    int groups, group_size, sequence_length, score;
    long *groups_touched;              /* (groups+1) histogram: tokens with 0..G groups kept */
    double groups_touched_mean;
    double token_drop_rate_group_min, token_drop_rate_group_mean, token_drop_rate_group_max;
    /* the anchor libraries' losses and statistics (docs/metrics.md); NaN where undefined */
    double seq_aux_loss, load_loss_shazeer, overflow_expert1, overflow_expert2;
    double importance_loss_vmoe, load_loss_vmoe, balancedness;
    /* FLOPs of the experts as the modelled implementation executes them: padded when the
     * routing options pad every expert to C rows (pad_to_capacity), else useful */
    int pad_to_capacity;               /* from moe_metrics_set_opts */
    double flops_expert_executed;
    struct moe_metrics_rows *rows;     /* the sums over the router's softmax rows, or NULL
                                        * (moe_metrics_attach) */
    struct moe_metrics_ents *ents;     /* the counts of the entries as the router wrote them, or
                                        * NULL (moe_metrics_attach) */
} moe_metrics;

moe_metrics *moe_metrics_alloc(int E);
void moe_metrics_free(moe_metrics *mt);
/* Compute the routing metrics of a plan. logits (T,M) for z_loss; d, f, act for FLOPs
 * (d = 0: no FLOPs); gate_computed: whether the gate GEMM ran (else flops_gate = 0). */
int moe_metrics_compute(const moe_plan *plan, const double *logits, int d, int f, int act,
                        int gate_computed, moe_metrics *mt);
/* Take the routing configuration the metrics need from o: expert groups (groups; 0 = one
 * group), routing groups (group_size), sequences (sequence_length), score function (score),
 * padding to capacity (pad_to_capacity: flops_expert_executed).
 * Errors: groups that do not divide E. */
int moe_metrics_set_opts(moe_metrics *mt, const moe_route_opts *o);
/* Let the metrics of the plans routed into plan (up to n_max tokens, k experts each: the
 * router's) read the router's own softmax rows: plan's rows observer (moe_plan.rows_each,
 * rows_add) adds each row's terms of seq_aux_loss and
 * importance_loss_vmoe as the router's rows pass produces them, and moe_metrics_compute then
 * takes those sums instead of taking every row's exponentials again (docs/metrics.md: the
 * softmax is then the router's exp(L - max) / sum instead of exp(L - lse)). Plans of routers
 * without a rows pass, noisy plans and Megatron's own scores keep the separate pass. Likewise
 * plan's entries observer (moe_plan.ents_begin, ents_block) counts the entries a resolution
 * writes as it writes them, and moe_metrics_compute takes those counts instead of reading the
 * entries again (the same values). mt must outlive every routing into plan. MOE_ENOMEM when
 * out of memory. */
int moe_metrics_attach(moe_metrics *mt, moe_plan *plan, int n_max, int k);
/* Write the metrics as JSON (keys and order from the metric table) to a temporary name and
 * rename. */
int moe_metrics_write_json(const moe_metrics *mt, const char *router, const char *path);

#endif
