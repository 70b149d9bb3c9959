/* trace.h: recorded routing traces, shared by the trace token sources and their readers
 * (sim/sources/trace_*.c), the loader and report of traces.c, and `moesim trace info`
 * (cmd_trace.c). Internal: the public interface is source.h.
 *
 * Four real traces live in folders of moe_trace_root() ($MOESIM_TRACES, or ../shared/data/traces
 * beside the source tree holding the binary: sim/paths.h), one per trace:
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
#include "source.h"

#include <stdio.h>

enum moe_trace_format {
    MOE_TRACE_DEEPSEEK = 0,   /* DeepSeek-V2-Lite CSV (MoE-Beyond) */
    MOE_TRACE_MIXTRAL = 1,    /* Mixtral-8x7B JSONL (speculative-moe) */
    MOE_TRACE_FLAME = 2,      /* FLAME-MoE csv(.gz) (DynaNDE) */
    MOE_TRACE_POPULARITY = 3  /* Mixtral-8x7B per-layer counts JSON (Fiddler) */
};

#define MOE_TRACE_EPS 1e-4      /* affinity of an expert a token did not choose */
#define MOE_TRACE_MAX_LAYERS 1024 /* layer numbers 0..1023 */


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

/* Affinities row (E) of one token from its K recorded choices (the formula
 * `moesim list sources` states):
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

/* The layers a trace holds, as the text "l1 l2 ..." (ascending, malloc'd): every layer with a
 * record in the trace of `source` (trace_deepseek, trace_mixtral, trace_flame; every layer of
 * its file for trace_popularity) at path (NULL: the format's folder under moe_trace_root()).
 * The value of a distribution's `layers = all`. MOE_EINVAL for another source. */
int moe_trace_layer_list(const char *source, const char *path, char **text);

/* `moesim trace info PATH`: detect the format of a trace file or folder and print what it
 * holds (format, files, layers, tokens, experts, k) and the recorded load imbalance (max/mean
 * of the per-expert counts) of every layer. */
int moe_trace_info(const char *path, FILE *out);

/* ---- for the readers and the trace sources (sim/traces.c, sim/sources/trace_*.c) ---------- */

#define MOE_TRACE_DS_E 64     /* DeepSeek-V2-Lite routed experts */
#define MOE_TRACE_MX_E 8      /* Mixtral-8x7B experts */
#define MOE_TRACE_MAX_E 4096  /* experts of a FLAME file or popularity table at most */

extern const char moe_trace_ds_header[]; /* the header line of a DeepSeek CSV */

/* The folder of a format's trace under moe_trace_root(). */
const char *moe_trace_folder(int format);

/* One record: one token at one layer, as a reader hands it to a sink. */
typedef struct {
    const char *file;
    long line;
    int layer;
    long seq, pos;            /* sequence (prompt, problem) and token position within it */
    int E;                    /* experts of the trace */
    int k;
    const int32_t *experts;   /* (K) */
    const double *w;          /* (K) recorded gate weights, or NULL */
    const double *p;          /* (E) recorded router probabilities, or NULL */
    const char *text;         /* token text, or NULL */
} moe_trace_rec;

/* A sink returns MOE_TRACE_MORE, MOE_TRACE_STOP (enough rows) or a MOE error code > 0. */
enum { MOE_TRACE_MORE = 0, MOE_TRACE_STOP = -1 };
typedef int (*moe_trace_sink)(void *ctx, const moe_trace_rec *r);

/* What a trace holds, shared by the readers of one load (consistency across files). */
typedef struct {
    int E;
    int K;         /* 0 until the first record */
    int has_w;     /* -1 until the first record */
    long seq_next; /* next sequence number */
    long files;
} moe_trace_state;

/* The readers: every record of one file to sink, in file order. A FLAME file is one layer. */
int moe_trace_read_deepseek(const char *path, moe_trace_state *st, moe_trace_sink sink,
                            void *ctx);
int moe_trace_read_mixtral(const char *path, moe_trace_state *st, moe_trace_sink sink,
                           void *ctx);
int moe_trace_read_flame(const char *path, int layer, moe_trace_state *st, moe_trace_sink sink,
                         void *ctx);

/* Checks shared by the readers: the same k (and weights or none) in every record; ids in
 * 0..E-1 and distinct. Errors name file and line. */
int moe_trace_check_k(moe_trace_state *st, int k, int has_w, const char *file, long line);
int moe_trace_check_ids(const int32_t *ids, int k, int E, const char *file, long line);
void moe_trace_chomp(char *s);            /* drop trailing '\n' and '\r' */
int moe_trace_blank(const char *s);       /* only white space */
int moe_trace_parse_long(const char *s, long *out); /* the whole string as an integer; 0 = ok */
/* zlib's gzerror message without the "<path>: " it starts with */
const char *moe_trace_gz_message(const char *msg, const char *path);
/* line past a UTF-8 byte order mark, if it starts with one */
const char *moe_trace_skip_bom(const char *line);

/* The parameters every per-token trace source has, and its open: the rows of `layer` from
 * `path` (default: the format's folder under moe_trace_root()) as the source's moe_rec. */
#define MOE_SP_TRACE(layer_def, layer_dn)                                                     \
    {"layer", MOE_SP_INT, layer_def, layer_dn, 0, MOE_TRACE_MAX_LAYERS - 1, 0, NULL,          \
     "model layer, numbered as the trace numbers it"},                                        \
    {"max_tokens", MOE_SP_INT, "65536", 65536, 1, 1e9, 0, NULL, "read at most this many tokens"}
int moe_trace_source_open(moe_source *s, int format);

#endif
