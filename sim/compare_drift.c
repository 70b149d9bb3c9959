/* compare_drift.c: printing the drift table of `moesim compare` (compare_drift.h). */
#include "compare_drift.h"

#include "moe.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int has_prefix(const char *s, const char *p) { return strncmp(s, p, strlen(p)) == 0; }

static int nomem(const char *where)
{
    return moe_fail(MOE_ENOMEM, NULL, "out of memory (%s)", where);
}

void moe_compare_metric_family(const char *name, char *out, size_t len)
{
    const char *b = strchr(name, '[');
    if (!b) {
        snprintf(out, len, "%s", name);
        return;
    }
    snprintf(out, len, "%.*s[%s]", (int)(b - name), name,
             has_prefix(name, "experts_per_token[") || has_prefix(name, "groups_touched[") ? "j"
                                                                                    : "e");
}


/* Value of the top-level field NAME=... of a config key (braces may hold spaces). */
static int key_field(const char *key, const char *name, char *out, size_t len)
{
    size_t nl = strlen(name);
    const char *p = key;
    while (*p) {
        while (*p == ' ')
            p++;
        const char *start = p;
        int depth = 0;
        while (*p && (depth > 0 || *p != ' ')) {
            if (*p == '{')
                depth++;
            else if (*p == '}' && depth > 0)
                depth--;
            p++;
        }
        if ((size_t)(p - start) > nl && strncmp(start, name, nl) == 0 && start[nl] == '=') {
            snprintf(out, len, "%.*s", (int)(p - start - (ptrdiff_t)nl - 1), start + nl + 1);
            return 1;
        }
    }
    return 0;
}

/* A short label of a point: "router cf=X distribution/shape T=tokens b=batches seed=S", or the
 * whole key when a field is missing. */
static void point_label(const char *key, char *out, size_t len)
{
    char r[64], cf[32], di[64], sh[64], t[24], b[24], s[24];
    if (key_field(key, "router", r, sizeof r) && key_field(key, "cf", cf, sizeof cf) &&
        key_field(key, "distribution", di, sizeof di) && key_field(key, "shape", sh, sizeof sh) &&
        key_field(key, "tokens", t, sizeof t) && key_field(key, "batches", b, sizeof b) &&
        key_field(key, "seed", s, sizeof s))
        snprintf(out, len, "%s cf=%s %s/%s T=%s b=%s seed=%s", r, cf, di, sh, t, b, s);
    else
        snprintf(out, len, "%s", key);
}

void moe_compare_print_table(const drift *d, size_t max_rows)
{
    static const char *const head[] = {"point", "metric", "baseline", "candidate", "rel diff",
                                       "tolerance"};
    size_t shown = max_rows && d->n > max_rows ? max_rows : d->n;
    int w[6];
    for (int k = 0; k < 6; k++)
        w[k] = (int)strlen(head[k]);
    char label[512];
    for (size_t i = 0; i < shown; i++) {
        const drift_row *r = &d->rows[i];
        point_label(r->key, label, sizeof label);
        const char *cells[6] = {label, r->metric, r->base, r->cand, r->rel, r->tol};
        for (int k = 0; k < 6; k++)
            if ((int)strlen(cells[k]) > w[k])
                w[k] = (int)strlen(cells[k]);
    }
    for (int k = 0; k < 6; k++)
        printf("%s%-*s", k ? "  " : "", k == 5 ? 0 : w[k], head[k]);
    putchar('\n');
    for (size_t i = 0; i < shown; i++) {
        const drift_row *r = &d->rows[i];
        point_label(r->key, label, sizeof label);
        const char *cells[6] = {label, r->metric, r->base, r->cand, r->rel, r->tol};
        for (int k = 0; k < 6; k++)
            printf("%s%-*s", k ? "  " : "", k == 5 ? 0 : w[k], cells[k]);
        putchar('\n');
    }
    if (shown < d->n)
        printf("... %zu more rows (--max-rows 0 shows all)\n", d->n - shown);
    /* points missing on one side: their full keys */
    for (size_t i = 0; i < d->n; i++)
        if (strcmp(d->rows[i].metric, "(point)") == 0)
            printf("%s point: %s\n", strcmp(d->rows[i].cand, "missing") == 0
                                         ? "missing in the candidate"
                                         : "extra in the candidate",
                   d->rows[i].key);
}

typedef struct {
    char name[NAME_LEN];
    size_t n;
    double maxrel;
} summary_fam;

/* The entry of name in f (*nf entries in first-seen order), added (n 0, maxrel -1) when new;
 * slot (hcap, a power of two; 0 empty, else index + 1) finds names by an FNV-1a hash, so a
 * summary of 10^5 distinct names is linear. */
static size_t fam_index(summary_fam *f, size_t *nf, size_t *slot, size_t hcap, const char *name)
{
    uint64_t h = 1469598103934665603u;
    for (const char *q = name; *q; q++)
        h = (h ^ (unsigned char)*q) * 1099511628211u;
    size_t i = (size_t)h & (hcap - 1);
    for (; slot[i]; i = (i + 1) & (hcap - 1))
        if (strcmp(f[slot[i] - 1].name, name) == 0)
            return slot[i] - 1;
    size_t k = (*nf)++;
    snprintf(f[k].name, sizeof f[k].name, "%s", name);
    f[k].n = 0;
    f[k].maxrel = -1.0;
    slot[i] = k + 1;
    return k;
}

/* Per metric family: how many values drifted and the largest relative difference. */
int moe_compare_print_summary(const drift *d)
{
    size_t hcap = 2;
    while (hcap < 2 * (d->n + 1))
        hcap *= 2;
    summary_fam *f = calloc(d->n ? d->n : 1, sizeof *f);
    size_t *slot = calloc(hcap, sizeof *slot);
    if (!f || !slot) {
        free(f);
        free(slot);
        return nomem("moesim compare");
    }
    size_t nf = 0;
    for (size_t i = 0; i < d->n; i++) {
        char name[NAME_LEN];
        moe_compare_metric_family(d->rows[i].metric, name, sizeof name);
        size_t k = fam_index(f, &nf, slot, hcap, name);
        f[k].n++;
        char *end = NULL;
        double rel = strtod(d->rows[i].rel, &end);
        if (end != d->rows[i].rel && rel > f[k].maxrel)
            f[k].maxrel = rel;
    }
    int w = (int)strlen("metric");
    for (size_t k = 0; k < nf; k++)
        if ((int)strlen(f[k].name) > w)
            w = (int)strlen(f[k].name);
    printf("\ndrift by metric:\n  %-*s  %8s  %s\n", w, "metric", "values", "max rel diff");
    for (size_t k = 0; k < nf; k++) {
        if (f[k].maxrel >= 0.0)
            printf("  %-*s  %8zu  %.2e\n", w, f[k].name, f[k].n, f[k].maxrel);
        else
            printf("  %-*s  %8zu  -\n", w, f[k].name, f[k].n);
    }
    /* per router: points with at least one row (rows come grouped by point) */
    nf = 0;
    memset(slot, 0, hcap * sizeof *slot);
    for (size_t i = 0; i < d->n; i++) {
        if (i > 0 && strcmp(d->rows[i].key, d->rows[i - 1].key) == 0)
            continue;
        char name[NAME_LEN];
        if (!key_field(d->rows[i].key, "router", name, sizeof name))
            snprintf(name, sizeof name, "?");
        f[fam_index(f, &nf, slot, hcap, name)].n++;
    }
    printf("\ndrifted points by router:");
    for (size_t k = 0; k < nf; k++)
        printf(" %s %zu%s", f[k].name, f[k].n, k + 1 < nf ? "," : "\n");
    free(f);
    free(slot);
    return MOE_OK;
}

