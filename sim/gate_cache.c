/* gate_cache.c: a sweep's batches with their gate logits, computed once (gate_cache.h). Owns the
 * entries (x and ids taken over from the source, the logits) and their key; the gate itself runs
 * through the pipeline's gate stage, so a cached batch routes on the very logits the point would
 * compute. The logits (gigabytes at 2^20 tokens) live in huge pages (huge.h): their first write
 * is most of the gate's time.
 */
#include "gate_cache.h"

#include "anchor_memo.h"
#include "huge.h"
#include "route_memo.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct {
    char *key;        /* source, parameters, T, D, M, seed, batch number */
    float *x;         /* (T,D) */
    int64_t *ids;     /* (T) */
    double *logits;   /* (T,M), moe_huge_alloc of logits_bytes */
    size_t logits_bytes;
    moe_batch b;      /* the batch, pointing at x and ids */
    double gate_s;    /* seconds the gate took */
    double bytes;
    unsigned long used; /* last use, for least-recently-used eviction */
    unsigned long serial; /* the entry's number, never reused (route memo keys) */
} gc_entry;

struct moe_gate_cache {
    gc_entry *e;
    int n, cap;
    double bytes, max_bytes;
    unsigned long clock, serials;
    moe_gate_cache_stats st;
    moe_route_memo *memo; /* routers' capacity-free work on one of the batches */
    moe_anchor_memo *anchor; /* the anchor metrics' sums over the batches' rows */
};

moe_gate_cache *moe_gate_cache_alloc(double max_bytes)
{
    moe_gate_cache *c = calloc(1, sizeof *c);
    if (!c) {
        moe_fail(MOE_ENOMEM, NULL, "out of memory (gate cache)");
        return NULL;
    }
    if (!(max_bytes > 0.0)) {
        long pages = sysconf(_SC_PHYS_PAGES), size = sysconf(_SC_PAGESIZE);
        max_bytes = pages > 0 && size > 0 ? 0.25 * (double)pages * (double)size : 0.0;
    }
    c->max_bytes = max_bytes;
    c->st.max_bytes = max_bytes;
    if (!(c->memo = moe_route_memo_alloc()) || !(c->anchor = moe_anchor_memo_alloc())) {
        moe_route_memo_free(c->memo);
        free(c);
        return NULL;
    }
    return c;
}

static void entry_clear(gc_entry *e)
{
    free(e->key);
    free(e->x);
    free(e->ids);
    free(e->logits);
    memset(e, 0, sizeof *e);
}

void moe_gate_cache_free(moe_gate_cache *c)
{
    if (!c)
        return;
    for (int i = 0; i < c->n; i++)
        entry_clear(&c->e[i]);
    moe_route_memo_free(c->memo);
    moe_anchor_memo_free(c->anchor);
    free(c->e);
    free(c);
}

moe_gate_cache_stats moe_gate_cache_get_stats(const moe_gate_cache *c)
{
    moe_gate_cache_stats st = c->st;
    const moe_route_memo_stats ms = moe_route_memo_get_stats(c->memo);
    st.memo_hits = ms.hits;
    st.memo_records = ms.records;
    const moe_anchor_memo_stats as = moe_anchor_memo_get_stats(c->anchor);
    st.anchor_hits = as.hits;
    st.anchor_records = as.records;
    st.z_hits = as.z_hits;
    st.z_records = as.z_records;
    return st;
}

moe_route_memo *moe_gate_cache_memo(moe_gate_cache *c, const double *logits,
                                    unsigned long *batch)
{
    *batch = 0;
    for (int i = 0; logits && i < c->n; i++)
        if (c->e[i].logits == logits)
            *batch = c->e[i].serial;
    return c->memo;
}

moe_anchor_memo *moe_gate_cache_anchor_memo(moe_gate_cache *c) { return c->anchor; }

/* Drops the least recently used entry. */
static void evict_one(moe_gate_cache *c)
{
    int lru = 0;
    for (int i = 1; i < c->n; i++)
        if (c->e[i].used < c->e[lru].used)
            lru = i;
    if (moe_route_memo_batch(c->memo) == c->e[lru].serial) /* its memo goes with it */
        moe_route_memo_clear(c->memo);
    moe_anchor_memo_drop(c->anchor, c->e[lru].serial);
    c->bytes -= c->e[lru].bytes;
    entry_clear(&c->e[lru]);
    c->e[lru] = c->e[--c->n];
}

/* A new entry of `bytes` for key, room made by eviction; NULL (reported) when out of memory. */
static gc_entry *entry_new(moe_gate_cache *c, char *key, double bytes)
{
    while (c->n > 0 && c->bytes + bytes > c->max_bytes)
        evict_one(c);
    if (c->n == c->cap) {
        int cap = c->cap ? 2 * c->cap : 8;
        gc_entry *ne = realloc(c->e, (size_t)cap * sizeof *ne);
        if (!ne) {
            free(key);
            moe_fail(MOE_ENOMEM, NULL, "out of memory (gate cache)");
            return NULL;
        }
        c->e = ne;
        c->cap = cap;
    }
    gc_entry *e = &c->e[c->n++];
    memset(e, 0, sizeof *e);
    e->key = key;
    e->bytes = bytes;
    c->bytes += bytes;
    if (c->bytes > c->st.peak_bytes)
        c->st.peak_bytes = c->bytes;
    return e;
}

/* Takes batch raw (src's last batch) into e, checks its x and runs the gate of src on it. */
static int entry_fill(gc_entry *e, const moe_batch *raw, moe_source *src, const char *label)
{
    const size_t T = (size_t)raw->n, M = (size_t)raw->m;
    moe_source_take_batch(src, &e->x, &e->ids);
    e->logits_bytes = T * M * sizeof *e->logits;
    e->logits = moe_huge_alloc(e->logits_bytes);
    if (!e->logits)
        return moe_fail(MOE_ENOMEM, "lower experiment.tokens", "out of memory (gate cache: a "
                        "batch of %zu tokens x %zu logits, point %s)", T, M, label);
    int rc = moe_pipeline_check_x(e->x, raw->n, raw->d, label);
    if (rc)
        return rc;
    e->b = *raw;
    e->b.x = e->x;
    e->b.ids = e->ids;
    moe_pipeline_gate_stage(e->x, raw->n, raw->d, moe_source_gate(src), raw->m, e->logits,
                            &e->gate_s);
    return MOE_OK;
}

int moe_gate_cache_batch(moe_gate_cache *c, const moe_point *pt, moe_source *src, int index,
                         moe_batch *out, const double **logits, double *gate_s)
{
    *logits = NULL;
    char *key = NULL;
    size_t klen = 0;
    FILE *m = open_memstream(&key, &klen);
    if (!m)
        return moe_fail(MOE_ENOMEM, NULL, "out of memory (gate cache)");
    fprintf(m, "%s|%s|%d|%d|%d|%llu|%d", pt->source, pt->params_text ? pt->params_text : "",
            pt->tokens, pt->d, pt->m, (unsigned long long)pt->seed, index);
    if (fclose(m) != 0 || !key) {
        free(key);
        return moe_fail(MOE_ENOMEM, NULL, "out of memory (gate cache)");
    }
    for (int i = 0; i < c->n; i++)
        if (strcmp(c->e[i].key, key) == 0) {
            free(key);
            c->e[i].used = ++c->clock;
            *out = c->e[i].b;
            *logits = c->e[i].logits;
            *gate_s = c->e[i].gate_s;
            c->st.reused++;
            return MOE_OK;
        }
    moe_batch raw;
    int rc = moe_source_batch(src, index, &raw);
    *out = raw;
    const double bytes = (double)raw.n * (4.0 * raw.d + 8.0 + 8.0 * raw.m);
    if (rc || raw.logits || raw.choices || raw.choice_w || raw.n != pt->tokens ||
        raw.d != pt->d || raw.m != pt->m || bytes > c->max_bytes) {
        free(key);
        return rc; /* not cached: the point runs the source's batch as usual */
    }
    gc_entry *e = entry_new(c, key, bytes);
    if (!e)
        return MOE_ENOMEM;
    if ((rc = entry_fill(e, &raw, src, pt->config_key))) {
        c->bytes -= e->bytes;
        entry_clear(e);
        c->n--;
        return rc;
    }
    e->used = ++c->clock;
    e->serial = ++c->serials;
    c->st.computed++;
    *out = e->b;
    *logits = e->logits;
    *gate_s = e->gate_s;
    return MOE_OK;
}
