/* source.h: token sources: synthetic generators drawn from PCG streams through GSL
 * distributions, and recorded traces / .npy files. The sources are a plug-in family like the
 * routers: every source type is one file in sim/sources/ defining a `moe_source_type`, listed
 * in the NULL-terminated table of sim/sources/registry.c; sim/source.c holds what they share
 * (parameter parsing and validation, the batch buffers, the gate matrix, recorded rows).
 *
 * A source yields batches of T tokens. Every batch has hidden states x (T,D) and token ids (T);
 * sources without a vocabulary of their own draw ids uniformly from `vocab` (stated per source
 * in `moesim list sources`). A source that records logits or affinities fills logits (T,M) and
 * the gate GEMM is skipped; one that records expert choices fills choices (T,Krec) for replay.
 * Recorded sources without hidden states synthesise x as isotropic Gaussian rows (seeded).
 */
#ifndef MOE_SOURCE_H
#define MOE_SOURCE_H

#include "moe.h"
#include <stdio.h>

typedef struct {
    const char *key, *value;
    const char *file; int line; /* where it was written (spec file and line, or "--set", 0) */
    const char *section;        /* spec section ("distribution.g") for messages, or NULL */
} moe_kv;

typedef struct {
    int n, d, m;       /* T, D, M */
    float *x;          /* (T,D) hidden states, always present */
    int64_t *ids;      /* (T) token ids, always present */
    double *logits;    /* (T,M) recorded logits/affinities, or NULL (gate GEMM from x and Wg) */
    int32_t *choices;  /* (T,Krec) recorded expert ids, or NULL */
    double *choice_w;  /* (T,Krec) recorded gate weights, or NULL */
    int k_rec;
    /* (T,E) draws given as files (moesim route), or NULL: moe_route_in's gumbel_u, rts_u */
    const double *gumbel_u, *rts_u;
} moe_batch;

typedef struct moe_source moe_source;

/* Open source `kind` (a name of the registry: "gaussian", "clustered", "zipf_ids", "drift",
 * "collapsed", "npy", "trace_deepseek", ...) with its parameters, for batches of n tokens of
 * width d routed over M = m logit columns, reproducible from seed. Unknown or bad parameters
 * are errors naming the key and where it was written. */
int moe_source_open(const char *kind, const moe_kv *params, int nparams, int n, int d, int m,
                    uint64_t seed, moe_source **out);
/* Fill batch number b (0-based); buffers are owned by the source and valid until the next call
 * (the first call allocates them: a source whose batches are never asked for, e.g. because a
 * cache already holds them, allocates none). */
int moe_source_batch(moe_source *s, int b, moe_batch *out);
/* Hands the x (T,D) and ids (T) of the last batch to the caller, who frees them with free();
 * the next batch allocates new ones. Both NULL before the first batch. */
void moe_source_take_batch(moe_source *s, float **x, int64_t **ids);
/* The gate matrix Wg (D,M): random by default, aligned with cluster centres when asked. */
const float *moe_source_gate(const moe_source *s);
/* Experts the source is fixed to (recorded traces), or 0 if any M works. */
int moe_source_required_m(const moe_source *s);
void moe_source_close(moe_source *s); /* NULL-safe */
/* `moesim list sources`: name, summary and parameters of every source of the registry. */
void moe_source_list(FILE *out);

/* ---- source types (one file each in sim/sources/) ----------------------------------------
 * A source type is a parameter table and four functions. moe_source_open validates every
 * given value against the table (later values of a key win), allocates the token stream, calls
 * open, then draws the gate. moe_source_batch allocates the batch buffers missing (x and ids
 * always; logits, choices and choice_w as open asked through has_logits, k_rec and
 * has_choice_w; zeroed), reseeds the token stream to (seed, MOE_STREAM_TOKENS + 16 b) and calls
 * batch. */

enum moe_source_param_kind { MOE_SP_NUM, MOE_SP_INT, MOE_SP_ENUM, MOE_SP_STR };

typedef struct {
    const char *key;     /* NULL ends a table */
    int kind;            /* enum moe_source_param_kind */
    const char *def;     /* default as shown by `moesim list sources` */
    double def_num;      /* numeric default (a type may give a sentinel, e.g. -1 = M) */
    double lo, hi;       /* bounds (numbers and integers); hi >= MOE_SP_BIG: no upper bound */
    int lo_open;         /* lo itself is excluded */
    const char *choices; /* enum values "a|b" */
    const char *help;
} moe_source_param;

#define MOE_SP_BIG 1e300
#define MOE_SP_MAX 12    /* parameters of one type at most */
#define MOE_SP_END {NULL, 0, NULL, 0, 0, 0, 0, NULL, NULL}
/* Parameters several types share. */
#define MOE_SP_VOCAB(def, dn, hi)                                                             \
    {"vocab", MOE_SP_INT, def, dn, 1, hi, 0, NULL, "token ids lie in 0..vocab-1"}
#define MOE_SP_SIGMA(help) {"sigma", MOE_SP_NUM, "1", 1, 0, MOE_SP_BIG, 1, NULL, help}
#define MOE_SP_GATE_SCALE                                                                     \
    {"gate_scale", MOE_SP_NUM, "1", 1, 0, MOE_SP_BIG, 1, NULL, "multiplies the gate matrix Wg"}

enum {
    MOE_SOURCE_RECORDED = 1u /* rows come from files: open may fix M (required_m) and the
                              * source may be opened with M = 0 */
};

typedef struct moe_source_type {
    const char *name;
    const char *summary;              /* for `moesim list sources` */
    unsigned flags;                   /* MOE_SOURCE_RECORDED */
    const moe_source_param *params;   /* ends with MOE_SP_END; at most MOE_SP_MAX; has vocab */
    /* Read the parameters, build s->ws, and set required_m, k_rec, has_logits, has_choice_w
     * as the batches need. On error the caller calls close. */
    int (*open)(moe_source *s);
    /* Fill s->x, s->ids (and logits, choices, choice_w) for batch b from s->rng. */
    int (*batch)(moe_source *s, int b);
    /* Free s->ws (may be partly built); NULL when open allocates nothing. */
    void (*close)(moe_source *s);
    /* Unit directions (count,D) the aligned gate points along, or NULL for the random gate;
     * NULL for a type without an aligned gate. A type with one has a gate_noise parameter. */
    const double *(*gate_dirs)(const moe_source *s, int *count);
} moe_source_type;

extern const moe_source_type *const moe_source_types[]; /* NULL-terminated (sources/registry.c) */
const moe_source_type *moe_source_find(const char *name);

typedef struct {
    double num;
    const char *str;   /* enum or string value (points into the caller's moe_kv or the table) */
    const moe_kv *kv;  /* where it was set; NULL = default */
} moe_source_value;

struct moe_source {
    const moe_source_type *type;
    int n, d, m;           /* T, D, M */
    uint64_t seed;
    moe_source_value val[MOE_SP_MAX];
    long vocab;            /* the `vocab` parameter (every type has one) */
    int required_m;        /* set by open: M of a recorded source, else 0 */
    int k_rec;             /* set by open: recorded choices per token (0 = none) */
    int has_logits;        /* set by open: batches carry logits (T,M) */
    int has_choice_w;      /* set by open: batches carry choice_w (T,Krec) */
    /* batch buffers (allocated by the first batch) */
    float *x;              /* (T,D) */
    int64_t *ids;          /* (T) */
    double *logits;        /* (T,M) or NULL */
    int32_t *choices;      /* (T,Krec) or NULL */
    double *choice_w;      /* (T,Krec) or NULL */
    float *wg;             /* (D,M) */
    gsl_rng *rng;          /* token stream, reseeded per batch */
    void *ws;              /* the type's state */
};

/* Helpers for source types. */
double moe_source_num(const moe_source *s, const char *key);      /* number of a parameter */
const char *moe_source_str(const moe_source *s, const char *key); /* text of a parameter */
int moe_source_has(const moe_source *s, const char *key);         /* the type has the key */
int moe_source_given(const moe_source *s, const char *key);       /* the key was given */
/* moe_fail(MOE_EINVAL, hint, "<what> (<where>, key <key>)") for parameter key. */
int moe_source_fail(const moe_source *s, const char *key, const char *hint, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* calloc that reports out of memory once into *rc (and does nothing when *rc is set). */
void *moe_source_calloc(size_t count, size_t size, int *rc, const char *what);
/* Reseed a gsl_rng running PCG32 to (seed, stream) without allocating. */
void moe_source_reseed(gsl_rng *r, uint64_t seed, uint64_t stream);
void moe_source_fill_ids_uniform(moe_source *s);           /* ids (T) uniform over vocab */
void moe_source_fill_x_gaussian(moe_source *s, double sd); /* x (T,D) ~ N(0, sd^2) */

/* A recorded table: N rows (tokens) of one layer. Arrays are malloc'd; moe_rec_clear frees. */
typedef struct {
    long n;            /* N rows */
    int E;             /* experts (M) */
    int K;             /* Krec recorded choices per row; 0 = none */
    double *logits;    /* (N,E) logits or affinities, or NULL */
    int32_t *choices;  /* (N,K) recorded expert ids, or NULL */
    double *choice_w;  /* (N,K) recorded gate weights, or NULL (replay then combines with 1/K) */
    int64_t *ids;      /* (N) token ids, or NULL (the source draws them uniformly) */
    float *x;          /* (N,D) recorded hidden states, or NULL (synthesised) */
    int d;             /* D of x */
    int layer_lo, layer_hi; /* layers seen in the trace (for messages) */
} moe_rec;

void moe_rec_clear(moe_rec *r); /* frees the arrays, zeroes the struct */

/* Sources of recorded rows (npy, traces): s->ws is a moe_rec. */
moe_rec *moe_source_rec_alloc(moe_source *s); /* zeroed, as s->ws; NULL (reported) on ENOMEM */
void moe_source_rec_ready(moe_source *s);    /* k_rec, has_logits, has_choice_w from the rows */
int moe_source_rec_batch(moe_source *s, int b); /* batch b: rows (b T + t) mod N */
void moe_source_rec_close(moe_source *s);

#endif
