/* plan.c: the routing plan (docs/routing.md section 1): allocation, entries, CSV export. */
#include "moe.h"
#include "huge.h"
#include "../routers/par.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

moe_plan *moe_plan_alloc(int n_max, int E, size_t cap_entries)
{
    (void)n_max;
    moe_plan *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    if (cap_entries < 16)
        cap_entries = 16;
    p->entries = malloc(cap_entries * sizeof *p->entries);
    p->assigned_load = calloc((size_t)(E > 0 ? E : 1), sizeof *p->assigned_load);
    p->importance = calloc((size_t)(E > 0 ? E : 1), sizeof *p->importance);
    if (!p->entries || !p->assigned_load || !p->importance) {
        moe_plan_free(p);
        return NULL;
    }
    p->cap_entries = cap_entries;
    p->E = E;
    return p;
}

void moe_plan_free(moe_plan *p)
{
    if (!p)
        return;
    free(p->entries);
    free(p->assigned_load);
    free(p->importance);
    free(p->lse);
    free(p->noisy_buf);
    free(p);
}

int moe_plan_reset(moe_plan *p, int n, int E, int m)
{
    if (E > p->E) {
        long *al = realloc(p->assigned_load, (size_t)E * sizeof *al);
        if (!al)
            return moe_fail(MOE_ENOMEM, NULL, "out of memory (plan for %d experts)", E);
        p->assigned_load = al;
        double *im = realloc(p->importance, (size_t)E * sizeof *im);
        if (!im)
            return moe_fail(MOE_ENOMEM, NULL, "out of memory (plan for %d experts)", E);
        p->importance = im;
    }
    p->n = n;
    p->E = E;
    p->m = m;
    p->k = 0;
    p->capacity = 0;
    p->dense = 0;
    p->n_entries = 0;
    p->n_claims = 0;
    p->aux_loss = 0.0;
    p->lse_of = NULL;
    p->lse_sumsq_of = NULL;
    p->rows_of = NULL;
    p->ents_seen = 0;
    p->noisy_logits = NULL;
    p->noise_std = 0.0;
    p->rank_claims[0] = p->rank_claims[1] = p->rank_kept[0] = p->rank_kept[1] = 0;
    memset(p->assigned_load, 0, (size_t)E * sizeof *p->assigned_load);
    memset(p->importance, 0, (size_t)E * sizeof *p->importance);
    return MOE_OK;
}

double *moe_plan_noisy_buffer(moe_plan *p)
{
    const size_t need = (size_t)p->n * (size_t)p->E;
    if (p->noisy_cap < need) {
        double *h = realloc(p->noisy_buf, need * sizeof *h);
        if (!h) {
            moe_fail(MOE_ENOMEM, NULL, "out of memory (noisy logits of %d tokens)", p->n);
            return NULL;
        }
        p->noisy_buf = h;
        p->noisy_cap = need;
    }
    p->noisy_logits = p->noisy_buf;
    return p->noisy_buf;
}

double *moe_plan_lse_buffer(moe_plan *p)
{
    if (p->lse_cap < (size_t)p->n) {
        double *l = realloc(p->lse, (size_t)p->n * sizeof *l);
        if (!l) {
            moe_fail(MOE_ENOMEM, NULL, "out of memory (plan logsumexp of %d tokens)", p->n);
            return NULL;
        }
        p->lse = l;
        p->lse_cap = (size_t)p->n;
    }
    return p->lse;
}

int moe_plan_reserve(moe_plan *p, size_t more)
{
    if (p->cap_entries - p->n_entries >= more)
        return MOE_OK;
    size_t nc = p->cap_entries * 2 > p->n_entries + more ? p->cap_entries * 2
                                                         : p->n_entries + more;
    if (p->n_entries == 0) /* nothing to keep: the exact size */
        nc = more;
    /* a new buffer (huge pages: entries written once by the router's threads), the entries
     * kept copied */
    moe_entry *ne = moe_huge_alloc(nc * sizeof *ne);
    if (!ne)
        return moe_fail(MOE_ENOMEM, NULL, "out of memory (plan with %zu entries)", nc);
    if (p->n_entries)
        memcpy(ne, p->entries, p->n_entries * sizeof *ne);
    free(p->entries);
    p->entries = ne;
    p->cap_entries = nc;
    return MOE_OK;
}

/* ---- the first entry with a non-finite weight, on the threads ---- */

typedef struct {
    const moe_plan *p;
    size_t first[MOE_PAR_MAX]; /* each part's first, or the part's end */
} finite_job;

static void finite_part(void *ctx, int i, int np)
{
    finite_job *j = ctx;
    long lo, hi;
    moe_par_range((long)j->p->n_entries, i, np, &lo, &hi);
    const moe_entry *en = j->p->entries;
    long x = lo;
    while (x < hi && isfinite(en[x].dispatch_w) && isfinite(en[x].combine_w))
        x++;
    j->first[i] = (size_t)x;
}

size_t moe_plan_first_nonfinite(const moe_plan *p)
{
    finite_job j = {.p = p};
    const int np = moe_par_parts((long)p->n_entries, 1L << 16);
    moe_par_run(finite_part, &j, np);
    for (int i = 0; i < np; i++) {
        long lo, hi;
        moe_par_range((long)p->n_entries, i, np, &lo, &hi);
        if (j.first[i] < (size_t)hi)
            return j.first[i];
    }
    return p->n_entries;
}

int moe_plan_push(moe_plan *p, int32_t t, int32_t e, int32_t s, double dw, double cw)
{
    if (p->n_entries == p->cap_entries) {
        size_t nc = p->cap_entries * 2;
        moe_entry *ne = realloc(p->entries, nc * sizeof *ne);
        if (!ne)
            return moe_fail(MOE_ENOMEM, NULL, "out of memory (plan with %zu entries)", nc);
        p->entries = ne;
        p->cap_entries = nc;
    }
    p->ents_seen = 0;
    moe_entry *en = &p->entries[p->n_entries++];
    en->token = t;
    en->expert = e;
    en->slot = s;
    en->dispatch_w = dw;
    en->combine_w = cw;
    return MOE_OK;
}

void moe_plan_mixture_weights(const moe_plan *p, const double *logits, double *w)
{
    size_t n = (size_t)p->n, E = (size_t)p->E;
    if (p->dense) {
        memset(w, 0, n * E * sizeof *w);
        for (size_t i = 0; i < p->n_entries; i++) {
            const moe_entry *en = &p->entries[i];
            w[(size_t)en->token * E + (size_t)en->expert] += en->combine_w;
        }
        return;
    }
    for (size_t t = 0; t < n; t++) /* sparse plans: M = E */
        moe_softmax(logits + t * (size_t)p->m, p->m, w + t * E);
}

int moe_plan_write_csv(const moe_plan *p, const char *path)
{
    moe_outfile o;
    int rc = moe_outfile_open(&o, path, "plan", "w");
    if (rc)
        return rc;
    int bad = fputs("token,expert,slot,dispatch_weight,combine_weight\n", o.f) < 0;
    for (size_t i = 0; i < p->n_entries && !bad; i++) {
        const moe_entry *en = &p->entries[i];
        bad = fprintf(o.f, "%d,%d,%d,%.9g,%.9g\n", en->token, en->expert, en->slot,
                      en->dispatch_w, en->combine_w) < 0;
    }
    return moe_outfile_commit(&o, bad);
}
