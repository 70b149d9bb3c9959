/* fuzz_trace.h: the body shared by the trace importer targets fuzz_trace_<kind>.c (sim/trace.h:
 * moe_trace_load, moe_trace_info, moe_trace_popularity_read, and the trace token sources of
 * sim/sources/ that sit on them).
 *
 * An input is one trace file, or several separated by lines reading `#--file--` (fuzz.h), which
 * then become a folder of files named as the real traces name them (natural order, a subfolder,
 * and for Mixtral a non-routing file that must be ignored). Each input is loaded twice (layer 0
 * with no token limit; layer 1 with at most 2 tokens), described by `moesim trace info`, and,
 * on the first layer that loads, opened as a token source whose first two batches are drawn.
 *
 * Contracts: errors as in fuzz.h, naming the file or folder; a load gives 1..max rows of E
 * experts (64 DeepSeek, 8 Mixtral, 1..4096 FLAME) with K in 1..E distinct recorded expert ids
 * in 0..E-1 per row, finite affinities, gate weights in [0, 1], token ids in 0..vocab-1 and
 * layer_lo <= layer_hi; a source batch has the same properties; trace info prints a report
 * starting "trace ".
 */
#ifndef MOE_FUZZ_TRACE_H
#define MOE_FUZZ_TRACE_H

#include "fuzz.h"
#include "source.h"
#include "trace.h"

#include <limits.h>
#include <math.h>

#define FUZZ_VOCAB 1000

/* file names of the parts, per format: a folder holds up to 4 files */
static const char *const fuzz_trace_names[4][4] = {
    {"prompt_1_data.csv", "prompt_10_data.csv", "prompt_2_data.csv", "sub/prompt_3_data.csv"},
    {"a_routing.jsonl", "b_routing.jsonl", "a_outputs.jsonl", "sub/c_routing.jsonl"},
    {"t_layer0_enc.csv.gz", "t_layer1_enc.csv", "t_layer0_dec.csv", "sub/t_layer2_x.csv.gz"},
    {"expert_popularity_a.json", "b.json", "c.json", "sub/d.json"},
};
static const char *const fuzz_trace_sources[4] = {"trace_deepseek", "trace_mixtral",
                                                  "trace_flame", "trace_mixtral_popularity"};

/* Rows (n, E, K) of recorded choices, weights and affinities hold the invariants above. */
static void fuzz_trace_rows(long n, int E, int K, const int32_t *choices, const double *w,
                            const double *logits, const int64_t *ids)
{
    FUZZ_REQUIRE(K >= 1 && K <= E, "recorded k outside 1..E");
    int bad_choice = 0, bad_w = 0, bad_logit = 0, bad_id = 0;
    for (long t = 0; t < n; t++) {
        const int32_t *c = choices + (size_t)t * K;
        for (int j = 0; j < K; j++) {
            bad_choice |= c[j] < 0 || c[j] >= E;
            for (int i = 0; i < j; i++)
                bad_choice |= c[i] == c[j];
            if (w)
                bad_w |= !(w[(size_t)t * K + j] >= 0.0 && w[(size_t)t * K + j] <= 1.0);
        }
        for (int e = 0; logits && e < E; e++)
            bad_logit |= !isfinite(logits[(size_t)t * E + e]);
        if (ids)
            bad_id |= ids[t] < 0 || ids[t] >= FUZZ_VOCAB;
    }
    FUZZ_REQUIRE(!bad_choice, "recorded expert id out of range or repeated");
    FUZZ_REQUIRE(!bad_w, "recorded gate weight outside [0, 1]");
    FUZZ_REQUIRE(!bad_logit, "non-finite affinity");
    FUZZ_REQUIRE(!bad_id, "token id outside 0..vocab-1");
}

static void fuzz_trace_check_rec(int format, const moe_rec *r, long max)
{
    FUZZ_REQUIRE(r->n >= 1 && r->n <= max, "row count outside 1..max_tokens");
    if (format == MOE_TRACE_FLAME)
        FUZZ_REQUIRE(r->E >= 1 && r->E <= 4096, "FLAME expert count outside 1..4096");
    else
        FUZZ_REQUIRE(r->E == moe_trace_experts(format), "expert count of the format");
    FUZZ_REQUIRE(r->choices && r->logits, "rows without choices or affinities");
    FUZZ_REQUIRE(r->layer_lo <= r->layer_hi && r->layer_lo >= 0, "layer range");
    FUZZ_REQUIRE(format != MOE_TRACE_DEEPSEEK || r->ids, "DeepSeek rows without token ids");
    fuzz_trace_rows(r->n, r->E, r->K, r->choices, r->choice_w, r->logits, r->ids);
}

/* Open the trace as a token source on `layer` and draw two batches of 3 tokens. */
static void fuzz_trace_source(int format, const char *path, int layer, int m)
{
    char ltext[16];
    snprintf(ltext, sizeof ltext, "%d", layer);
    moe_kv kv[3] = {{"path", path, "fuzz", 1, NULL}, {"layer", ltext, "fuzz", 2, NULL},
                    {"vocab", "1000", "fuzz", 3, NULL}};
    moe_source *src = NULL;
    moe_clear_error();
    int rc = moe_source_open(fuzz_trace_sources[format], kv, 3, 3, 4, m, 7, &src);
    if (rc) {
        FUZZ_REQUIRE(src == NULL, "a failed open returned a source");
        fuzz_check_error(rc, path);
        return;
    }
    FUZZ_REQUIRE(moe_source_required_m(src) >= 1, "a trace source fixes M");
    for (int b = 0; b < 2; b++) {
        moe_batch bt;
        moe_clear_error();
        rc = moe_source_batch(src, b, &bt);
        FUZZ_REQUIRE(rc == MOE_OK, "a batch of an opened trace source failed");
        FUZZ_REQUIRE(bt.n == 3 && bt.d == 4 && bt.x && bt.ids && bt.logits, "batch layout");
        int bad_x = 0;
        for (int i = 0; i < 3 * 4; i++)
            bad_x |= !isfinite(bt.x[i]);
        FUZZ_REQUIRE(!bad_x, "non-finite hidden state");
        if (bt.k_rec > 0)
            fuzz_trace_rows(3, bt.m, bt.k_rec, bt.choices, bt.choice_w, bt.logits, bt.ids);
        else
            fuzz_trace_rows(0, bt.m, 1, NULL, NULL, NULL, NULL);
    }
    moe_source_close(src);
}

static void fuzz_trace_popularity(const char *path)
{
    int L = -1, E = -1;
    long *counts = (long *)1; /* must come back NULL on an error */
    moe_clear_error();
    int rc = moe_trace_popularity_read(path, &L, &E, &counts);
    if (rc) {
        FUZZ_REQUIRE(counts == NULL, "counts left behind by an error");
        fuzz_check_error(rc, path);
    } else {
        FUZZ_REQUIRE(L >= 1 && L <= MOE_TRACE_MAX_LAYERS && E >= 1 && counts, "counts shape");
        int bad = 0;
        for (size_t i = 0; i < (size_t)L * (size_t)E; i++)
            bad |= counts[i] < 0;
        FUZZ_REQUIRE(!bad, "negative count");
        free(counts);
        fuzz_trace_source(MOE_TRACE_POPULARITY, path, 0, E);
    }
}

static void fuzz_trace_info(const char *path, const char *where)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *m = open_memstream(&buf, &len);
    FUZZ_REQUIRE(m != NULL, "open_memstream");
    moe_clear_error();
    int rc = moe_trace_info(path, m);
    fclose(m);
    if (rc)
        fuzz_check_error(rc, where);
    else
        FUZZ_REQUIRE(len > 6 && strncmp(buf, "trace ", 6) == 0, "trace info report");
    free(buf);
}

static int fuzz_trace_one(int format, const uint8_t *data, size_t size)
{
    const uint8_t *part[4];
    size_t plen[4];
    int np = format == MOE_TRACE_POPULARITY ? 1 : fuzz_split(data, size, part, plen, 4);
    const char *dir = fuzz_subdir("trace");
    char path[512];
    if (np == 1) {
        snprintf(path, sizeof path, "%s/%s", dir, fuzz_trace_names[format][0]);
        fuzz_write(path, data, size);
    } else {
        char sub[512];
        snprintf(sub, sizeof sub, "%s/sub", dir);
        mkdir(sub, 0700);
        for (int i = 0; i < np; i++) {
            char f[512];
            snprintf(f, sizeof f, "%s/%s", dir, fuzz_trace_names[format][i]);
            fuzz_write(f, part[i], plen[i]);
        }
        snprintf(path, sizeof path, "%s", dir);
    }
    if (format == MOE_TRACE_POPULARITY) {
        fuzz_trace_popularity(path);
        fuzz_trace_info(path, path);
        return 0;
    }
    static const struct { int layer; long max; } runs[2] = {{0, 0}, {1, 2}};
    int m = 0, src_layer = 0;
    for (int i = 0; i < 2; i++) {
        moe_rec rec;
        memset(&rec, 0xA5, sizeof rec); /* the loader must initialise it */
        moe_clear_error();
        int rc = moe_trace_load(format, path, runs[i].layer, runs[i].max, FUZZ_VOCAB, &rec);
        if (rc) {
            FUZZ_REQUIRE(rec.logits == NULL && rec.choices == NULL && rec.ids == NULL &&
                             rec.choice_w == NULL && rec.x == NULL && rec.n == 0,
                         "rows left behind by an error");
            fuzz_check_error(rc, dir);
        } else {
            fuzz_trace_check_rec(format, &rec, runs[i].max ? runs[i].max : LONG_MAX);
            if (m == 0) {
                m = rec.E;
                src_layer = runs[i].layer;
            }
        }
        moe_rec_clear(&rec);
    }
    fuzz_trace_info(path, dir);
    if (m > 0)
        fuzz_trace_source(format, path, src_layer, m);
    return 0;
}

#endif
