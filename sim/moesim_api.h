/* moesim_api.h: moesim as a shared library (libmoesim.so), the C API behind the Python package
 * in python/moesim/. Self-contained: needs no other moesim header, nor GSL's.
 *
 *   moesim_route          route one logits matrix (T,M), float64 or float32, with a preset
 *                         (`moesim list presets`) and options given as key/value text (the keys
 *                         of `moesim list options`, validated by the same option table as
 *                         `moesim route --key value`) and its draws (uniforms, Gumbel and rts
 *                         uniforms, token ids, hash table, recorded choices); returns a result
 *                         holding the plan and its metrics, read with
 *                         moesim_result_info/_entries/_metric
 *   moesim_layer          run the MoE layer on a plan given as entry arrays, with the layer's
 *                         options (pad_to_capacity) as key/value text like moesim_route's;
 *                         moesim_layer_rows_run: the rows its experts ran
 *   moesim_router_get     the routers of the registry (name, summary, default k, needs)
 *   moesim_option_get     the routing option table (key, type, default, choices, help)
 *   moesim_preset_get     the presets (name, router, option assignments, source file)
 *   moesim_errmsg/_hint   the one-line message of the last failed call on this thread
 *   moesim_release        free the buffers moesim_route keeps between calls
 *
 * moesim_route and moesim_layer return MOESIM_OK (0) or a status code below; on failure the
 * message "<what> (<where>)" is what moesim_errmsg() returns on the same thread until the next
 * moesim_route or moesim_layer call there. Results equal `moesim route`'s for the same inputs, options and seed.
 * Only the moesim_* symbols are exported; the library is not thread-safe across calls that
 * share a result, and reentrant otherwise. Dimension letters as in moe.h: T tokens, M logit
 * columns, E experts, C slots per expert, D model width, F expert hidden width, Krec recorded
 * choices per token. */
#ifndef MOESIM_API_H
#define MOESIM_API_H

#include <stddef.h>
#include <stdint.h>

#define MOESIM_API_VERSION 4

/* status codes (the values of moe.h's MOE_* codes) */
enum {
    MOESIM_OK = 0,
    MOESIM_EINVAL = 1,  /* bad option or argument value */
    MOESIM_EIO = 2,     /* file cannot be read (the hash_table option names a .npy) */
    MOESIM_EFORMAT = 3, /* malformed file content */
    MOESIM_ENOMEM = 4,
    MOESIM_EINPUT = 6   /* bad numeric input: NaN/inf logits, k out of range, bad ids */
};

int moesim_api_version(void); /* MOESIM_API_VERSION of the library that was loaded */
const char *moesim_errmsg(void);  /* "" after a successful moesim_route or moesim_layer */
const char *moesim_errhint(void); /* a hint for the user, or "" */

/* ---- routing ---- */

/* dtypes of moesim_route_args.logits */
enum { MOESIM_F64 = 0, MOESIM_F32 = 1 };

typedef struct {
    const char *router;              /* registry name: "topk", "switch", "gshard", ...; NULL
                                        with a preset: the preset's router */
    const void *logits;              /* (T,M) row-major, of logits_dtype */
    int n, m;                        /* T, M */
    int n_opts;                      /* routing options: n_opts pairs of key and value text, */
    const char *const *keys;         /*   e.g. "capacity_factor" "1.25"; applied in order, */
    const char *const *values;       /*   "hash_table" takes a .npy path */
    const double *uniforms;          /* (T) gshard draws in [0,1), or NULL: drawn from seed */
    const int64_t *token_ids;        /* (T) ids for the hash router, or NULL */
    const int64_t *hash_table;       /* (L) expert of each id for hash = table, or NULL */
    size_t hash_table_len;           /* L */
    const int32_t *choices;          /* (T,Krec) recorded expert ids (replay), or NULL */
    const double *choice_weights;    /* (T,Krec) recorded gate weights, or NULL */
    int k_rec;                       /* Krec */
    uint64_t seed;                   /* PCG seed of gshard's draws and topk's noise */
    /* since version 2 */
    const double *gumbel_uniforms;   /* (T,M) draws u in (0,1) of the Gumbel G = -log(-log u)
                                        (gshard second_policy sampling, switch select rsample),
                                        or NULL */
    const double *rts_uniforms;      /* (T,M) keys in (0,1) of order rts, or NULL */
    const char *preset;              /* a preset's name, or NULL: its router and options are set
                                        first, the options above override them */
    int logits_dtype;                /* MOESIM_F64: logits is double; MOESIM_F32: float, widened
                                        exactly inside the library (on the router's threads)
                                        into a buffer kept for the next call (moesim_release) */
} moesim_route_args;

typedef struct moesim_result moesim_result;

typedef struct {
    size_t n_entries;
    int n_tokens;    /* T */
    int num_experts; /* E */
    int m;           /* M */
    int k;           /* experts per token the router used */
    long capacity;   /* C */
    int dense;       /* 1 for soft_moe: the layer mixes slots with GEMMs */
} moesim_plan_info;

/* Route; on success *out holds the plan and its routing metrics (FLOPs 0 and output errors NaN,
 * as `moesim route` without a layer). Free with moesim_result_free. */
int moesim_route(const moesim_route_args *a, moesim_result **out);
/* NULL is a no-op. Since version 3 the library keeps the last freed result's router and buffers
 * (not its plan: they are reused) for the next moesim_route with the same router, preset,
 * options, T, M and Krec and no hash table, which then allocates nothing and touches no fresh
 * memory; results are the same either way. */
void moesim_result_free(moesim_result *r);
/* Free what moesim_route keeps for the next call: the last result's buffers and the float64 copy
 * of float32 logits (since version 3). */
void moesim_release(void);
void moesim_result_info(const moesim_result *r, moesim_plan_info *info);
/* Copy the entries, in the router's order, into five arrays of n_entries values each. */
void moesim_result_entries(const moesim_result *r, int32_t *token, int32_t *expert,
                           int32_t *slot, double *dispatch_weight, double *combine_weight);

/* The metrics, in the order and with the keys of `moesim route --metrics` JSON (without
 * "router"). moesim_metric_name(i) is NULL past the last. moesim_result_metric copies up to len
 * values of metric i into out and returns how many it has (1 for scalars, E or E+1 for arrays,
 * G+1 <= E+1 for the groups-touched histogram;
 * -1 for a bad i); *is_int tells integer-valued metrics (exact as doubles below 2^53). */
const char *moesim_metric_name(int i);
long moesim_result_metric(const moesim_result *r, int i, double *out, size_t len, int *is_int);

/* ---- the layer ---- */

typedef struct {
    int n_tokens, num_experts; /* T, E */
    long capacity;             /* C: every slot < C */
    int dense;                 /* as moesim_plan_info.dense */
    size_t n_entries;
    const int32_t *token, *expert, *slot;           /* (n_entries) */
    const double *dispatch_weight, *combine_weight; /* (n_entries) */
    /* since version 4 */
    int n_opts;                /* options of the layer: n_opts pairs of key and value text, */
    const char *const *keys;   /*   validated as moesim_route's; the layer takes */
    const char *const *values; /*   "pad_to_capacity" ("true"/"false"), other keys are errors */
} moesim_plan_view;

/* y (T,D) = the MoE layer on x (T,D) with expert weights w1 (E,D,F) b1 (E,F) w2 (E,F,D) b2 (E,D)
 * (SwiGLU: w1 (E,D,2F), b1 (E,2F)), float32 row-major, the activation by name (gelu_tanh,
 * gelu_erf, relu, swiglu). The arrays must have these sizes; entries are checked against T, E, C.
 * With pad_to_capacity = true every expert of a sparse plan runs exactly C rows (zero rows beyond
 * its filled slots, as a padded implementation executes them) and y is the same, bit for bit. */
int moesim_layer(const moesim_plan_view *plan, const float *x, int d, int f, const float *w1,
                 const float *b1, const float *w2, const float *b2, const char *activation,
                 float *y);
/* Rows the experts ran in the last successful moesim_layer on this thread (since version 4):
 * each expert's slots up to its last filled one, E x C padded to capacity and for dense plans
 * (which run every slot); -1 before one. Times 4 D F (6 D F for SwiGLU) FLOPs, the executed expert
 * FLOPs of moesim's metrics. */
long moesim_layer_rows_run(void);

/* ---- what the library holds ---- */

typedef struct {
    const char *name, *summary;
    int default_k;
    int needs_token_ids, uses_rng, dense, needs_choices, no_capacity, all_experts;
} moesim_router_info;

typedef struct {
    const char *key, *type, *def, *choices, *help; /* choices may be NULL */
} moesim_option_info;

typedef struct {
    const char *name, *router;
    int n_set;              /* option assignments "key = value", n_set of them */
    const char *const *set;
    const char *source;     /* the library file and function the preset follows */
} moesim_preset_info;

/* Fill *out with router i / option i / preset i of the table; 0, or -1 past the last. */
int moesim_router_get(int i, moesim_router_info *out);
int moesim_option_get(int i, moesim_option_info *out);
int moesim_preset_get(int i, moesim_preset_info *out);

#endif
