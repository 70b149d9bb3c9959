/* source.h: token sources (DESIGN.md "Token distributions"): synthetic generators drawn from
 * PCG streams through GSL distributions, and recorded traces / .npy files.
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
} moe_batch;

typedef struct moe_source moe_source;

/* Open source `kind` (e.g. "gaussian", "clustered", "zipf_ids", "drift", "collapsed", "npy",
 * "trace_deepseek", ...) with its parameters, for batches of n tokens of width d routed over
 * M = m logit columns, reproducible from seed. Unknown or bad parameters are errors naming the
 * key and where it was written. */
int moe_source_open(const char *kind, const moe_kv *params, int nparams, int n, int d, int m,
                    uint64_t seed, moe_source **out);
/* Fill batch number b (0-based); buffers are owned by the source and valid until the next call. */
int moe_source_batch(moe_source *s, int b, moe_batch *out);
/* The gate matrix Wg (D,M): random by default, aligned with cluster centres when asked. */
const float *moe_source_gate(const moe_source *s);
/* Experts the source is fixed to (recorded traces), or 0 if any M works. */
int moe_source_required_m(const moe_source *s);
void moe_source_close(moe_source *s); /* NULL-safe */
/* `moesim list sources`: name, summary and parameters of every source. */
void moe_source_list(FILE *out);

#endif
