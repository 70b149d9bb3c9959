/* trace.h: recorded routing traces, shared by the token sources (sources.c), the trace readers
 * (traces.c) and `moesim trace info` (cmd_trace.c). Internal: the public interface is source.h.
 *
 * Four real traces live under $MOESIM_TRACES (default ../shared/data/traces beside the source
 * tree holding the binary: sim/paths.h); each folder has a SOURCE.md:
 *   deepseek-v2-lite-moebeyond       CSV, top-6 expert ids per token and layer, token text
 *   mixtral-8x7b-instruct-fp8-specmoe JSONL, top-2 ids and renormalised gate probabilities
 *   flame-moe-290m-dynande           csv.gz, router softmax probabilities (top-6 non-zero)
 *   mixtral-8x7b-fiddler-popularity  JSON, per-layer expert selection counts
 *
 * Recorded choices are offered two ways at once: a batch carries the choices (T,Krec) and
 * their recorded weights for the `replay` router, and affinities logits (T,E) that every router
 * can route on (moe_trace_affinity states the formula).
 */
#ifndef MOE_TRACE_H
#define MOE_TRACE_H

#include "moe.h"
#include "paths.h"

#include <stdio.h>

enum moe_trace_format {
    MOE_TRACE_DEEPSEEK = 0,   /* DeepSeek-V2-Lite CSV (MoE-Beyond) */
    MOE_TRACE_MIXTRAL = 1,    /* Mixtral-8x7B JSONL (speculative-moe) */
    MOE_TRACE_FLAME = 2,      /* FLAME-MoE csv(.gz) (DynaNDE) */
    MOE_TRACE_POPULARITY = 3  /* Mixtral-8x7B per-layer counts JSON (Fiddler) */
};

#define MOE_TRACE_EPS 1e-4      /* affinity of an expert a token did not choose */
#define MOE_TRACE_MAX_LAYERS 1024 /* layer numbers 0..1023 */

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

/* moe_trace_root (the folder holding the trace folders) and moe_trace_hint: sim/paths.h. */

/* Experts of a format (64, 8, 64, 8). */
int moe_trace_experts(int format);

/* Load the rows of model layer `layer` (numbered as the trace numbers them) from path, a trace
 * file or a folder of them, at most max_tokens rows, in file order (files in natural name
 * order: prompt_2 before prompt_10). A single FLAME file is read whatever its layer. Token ids
 * (DeepSeek only: FNV-1a 64 of the token text mod vocab) and affinities are filled as
 * moe_trace_affinity says. Malformed input is a MOE_EFORMAT error naming file and line;
 * a missing path MOE_EIO; an absent layer MOE_EINVAL. */
int moe_trace_load(int format, const char *path, int layer, long max_tokens, long vocab,
                   moe_rec *rec);

/* Read a Fiddler popularity JSON: counts (L,E), malloc'd, of L layers and E experts. */
int moe_trace_popularity_read(const char *path, int *L, int *E, long **counts);

/* Affinities row (E) of one token from its K recorded choices (ROUTING-side formula, also in
 * `moesim list sources`):
 *   p != NULL (FLAME, full router probabilities (E) with the K chosen non-zero):
 *       row[e] = log p[e] on the chosen experts; the unrecorded mass 1 - sum is spread evenly
 *       over the other E-K experts, capped at the smallest recorded p (and at least 1e-12), so
 *       softmax(row) gives back the recorded probabilities exactly unless the cap applies
 *       (it never does in the FLAME-MoE files: the spread share is at most 0.90 of the cap).
 *   w != NULL (Mixtral JSONL, recorded gate weights):  row[e] = log max(w_j, eps) on chosen
 *       expert j, log eps elsewhere (eps = MOE_TRACE_EPS); top-k then reproduces the recorded
 *       choices and, with k = Krec, the recorded (renormalised) gates exactly.
 *   ids only, ranked = 0 (DeepSeek: the ids are a set): log(1/K) on the chosen, log eps else.
 *   ids only, ranked = 1 (popularity samples: the order is the draw order): rank r (0-based)
 *       gets log((K - r) / (K (K + 1) / 2)), i.e. 2/3 and 1/3 for K = 2; log eps elsewhere. */
void moe_trace_affinity(int E, int K, const int32_t *experts, const double *w, const double *p,
                        int ranked, double *row);

/* `moesim trace info PATH`: detect the format of a trace file or folder and print what it
 * holds (format, files, layers, tokens, experts, k) and the recorded load imbalance (max/mean
 * of the per-expert counts) of every layer. */
int moe_trace_info(const char *path, FILE *out);

#endif
