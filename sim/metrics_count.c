/* metrics_count.c: the counts of a plan's entries behind the routing metrics (metrics_count.h),
 * on the routers' threads (routers/par.h).
 *
 * Two passes, each split into contiguous parts: the entries (validity, the kept load of each
 * expert, whether they come in runs of token order) and the tokens (experts and expert groups
 * per token, dropped tokens per routing group). Every result is an integer count, summed over
 * the parts, or a double computed afterwards from those counts in the order the serial loop
 * over tokens takes: the values do not depend on the number of threads. A plan whose entries do
 * not come in runs (expert choice, dense plans) marks its (token, expert) pairs in a bitmap
 * (T, 64 * ceil(E/64)) first, filled serially.
 */
#include "metrics_count.h"
#include "../routers/par.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

enum { RUN_MAX = 16, SCAN_GRAIN = 1 << 16 };

/* ---- the entries ---- */

typedef struct {
    const moe_plan *plan;
    long *kept;                    /* (nparts, E) entries per expert, sparse plans */
    size_t bad[MOE_PAR_MAX];       /* the part's first entry outside (T, E, C), or SIZE_MAX */
    int ok[MOE_PAR_MAX];           /* inside the part: token order, runs of <= RUN_MAX */
    size_t lead[MOE_PAR_MAX];      /* entries of the part's first token at its start */
    size_t trail[MOE_PAR_MAX];     /* entries of the part's last token at its end */
} scan_job;

static void scan_part(void *ctx, int i, int np)
{
    scan_job *j = ctx;
    const moe_plan *plan = j->plan;
    long lo, hi;
    moe_par_range((long)plan->n_entries, i, np, &lo, &hi);
    long *kept = j->kept ? j->kept + (size_t)i * (size_t)plan->E : NULL;
    j->bad[i] = SIZE_MAX;
    j->ok[i] = 1;
    j->lead[i] = j->trail[i] = 0;
    int ok = 1;
    size_t run = 0, lead = 0;
    int32_t prev = -1;
    for (long x = lo; x < hi; x++) {
        const moe_entry *en = &plan->entries[x];
        if (en->token < 0 || en->token >= plan->n || en->expert < 0 || en->expert >= plan->E ||
            en->slot < 0 || en->slot >= plan->capacity) {
            j->bad[i] = (size_t)x;
            return;
        }
        if (x > lo) {
            run = en->token == prev ? run + 1 : 1;
            ok &= run <= RUN_MAX && en->token >= prev;
        } else {
            run = 1;
        }
        lead += lead == (size_t)(x - lo) && (x == lo || en->token == prev);
        prev = en->token;
        if (kept)
            kept[en->expert]++;
    }
    j->ok[i] = ok;
    j->lead[i] = lead;
    j->trail[i] = run;
}

int moe_metrics_scan(const moe_plan *plan, long *kept, int *runs)
{
    const int E = plan->E, sparse = !plan->dense;
    const int np = moe_par_parts((long)plan->n_entries, SCAN_GRAIN);
    scan_job j = {.plan = plan};
    if (sparse && !(j.kept = calloc((size_t)np * (size_t)E, sizeof *j.kept)))
        return moe_fail(MOE_ENOMEM, NULL, "out of memory (metrics of %d experts)", E);
    moe_par_run(scan_part, &j, np);
    /* the parts in entry order: the first bad entry, then the runs across part boundaries */
    int in_runs = sparse;
    int32_t prev = -1;
    size_t run = 0;
    for (int i = 0; i < np; i++) {
        long lo, hi;
        moe_par_range((long)plan->n_entries, i, np, &lo, &hi);
        if (j.bad[i] != SIZE_MAX) {
            const moe_entry *en = &plan->entries[j.bad[i]];
            free(j.kept);
            return moe_fail(MOE_EINVAL, "the router produced an inconsistent plan",
                            "plan entry %zu (token %d, expert %d, slot %d) outside T = %d, "
                            "E = %d, C = %ld (metrics)",
                            j.bad[i], en->token, en->expert, en->slot, plan->n, plan->E,
                            plan->capacity);
        }
        if (hi == lo)
            continue;
        const int32_t first = plan->entries[lo].token, last = plan->entries[hi - 1].token;
        const size_t head = first == prev ? run + j.lead[i] : j.lead[i];
        in_runs &= j.ok[i] && first >= prev && head <= RUN_MAX;
        run = j.trail[i] == (size_t)(hi - lo) ? head : j.trail[i];
        prev = last;
    }
    for (int i = 0; sparse && i < np; i++)
        for (int e = 0; e < E; e++)
            kept[e] += j.kept[(size_t)i * (size_t)E + (size_t)e];
    free(j.kept);
    if (plan->n_claims > 0 && (size_t)plan->n_claims < plan->n_entries)
        return moe_fail(MOE_EINVAL, "the router produced an inconsistent plan",
                        "plan has %zu entries but only %ld claims (metrics)", plan->n_entries,
                        plan->n_claims);
    *runs = in_runs;
    return MOE_OK;
}

/* ---- the tokens ---- */

/* Set bits of row in [a, b). */
static int bits_in(const uint64_t *row, int a, int b)
{
    int c = 0;
    while (a < b) {
        const int w = a / 64, o = a % 64, len = b - a < 64 - o ? b - a : 64 - o;
        const uint64_t m = len == 64 ? ~(uint64_t)0 : (((uint64_t)1 << len) - 1) << o;
        c += __builtin_popcountll(row[w] & m);
        a += len;
    }
    return c;
}

/* Adds v to the distinct values set[0..*len) (RUN_MAX at most); 1 if it was new. */
static int add_distinct(int *set, int *len, int v)
{
    for (int i = 0; i < *len; i++)
        if (set[i] == v)
            return 0;
    set[(*len)++] = v;
    return 1;
}

typedef struct {
    const moe_plan *plan;
    const uint64_t *bits; /* (T, words) marks, or NULL: runs of entries */
    int words, G, per, gs;
    long *hist;           /* (nparts, E + 1 + G + 1): experts per token, groups touched */
    long touched[MOE_PAR_MAX];
    long *gdrop;          /* (routing groups) dropped tokens of the groups starting in a part */
    long head[MOE_PAR_MAX]; /* dropped tokens of a part's first group begun in an earlier part */
} count_job;

/* The first entry of token t or later (the entries come in token order). */
static size_t first_entry(const moe_plan *plan, int t)
{
    size_t lo = 0, hi = plan->n_entries;
    while (lo < hi) {
        const size_t mid = lo + (hi - lo) / 2;
        if (plan->entries[mid].token < t)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* The distinct experts *cnt and groups *touched of token t: from the marks, or (bits NULL)
 * from the token's run of entries starting at *at, which it advances. */
static void token_counts(const count_job *j, int t, size_t *at, int *cnt, int *touched)
{
    const moe_plan *plan = j->plan;
    const int per = j->per;
    *cnt = *touched = 0;
    if (j->bits) {
        const uint64_t *row = j->bits + (size_t)t * (size_t)j->words;
        for (int g = 0; g < j->G; g++) {
            const int c = bits_in(row, g * per, (g + 1) * per);
            *cnt += c;
            *touched += c > 0;
        }
        return;
    }
    int ex[RUN_MAX], gr[RUN_MAX], ng = 0;
    for (; *at < plan->n_entries && plan->entries[*at].token == t; (*at)++) {
        const int e = plan->entries[*at].expert;
        if (add_distinct(ex, cnt, e))
            add_distinct(gr, &ng, e / per);
    }
    *touched = ng;
}

static void count_part(void *ctx, int i, int np)
{
    count_job *j = ctx;
    const moe_plan *plan = j->plan;
    const int E = plan->E, gs = j->gs;
    long lo, hi;
    moe_par_range(plan->n, i, np, &lo, &hi);
    long *ept = j->hist + (size_t)i * ((size_t)E + 2 + (size_t)j->G), *gt = ept + E + 1;
    size_t at = j->bits || lo >= hi ? 0 : first_entry(plan, (int)lo);
    long touched_sum = 0, dropped = 0;
    j->head[i] = 0;
    for (long t = lo; t < hi; t++) {
        int cnt, touched;
        token_counts(j, (int)t, &at, &cnt, &touched);
        ept[cnt]++;
        gt[touched]++;
        touched_sum += touched;
        dropped += cnt == 0;
        if ((t + 1) % gs == 0 || t == hi - 1) { /* the group ends, or the part does */
            const long g = t / gs;
            if (g * gs < lo) /* begun in an earlier part */
                j->head[i] = dropped;
            else
                j->gdrop[g] = dropped;
            dropped = 0;
        }
    }
    j->touched[i] = touched_sum;
}

int moe_metrics_count_tokens(const moe_plan *plan, const uint64_t *bits, int words, int G,
                             int group_size, moe_metrics *mt)
{
    const int n = plan->n, E = plan->E;
    const int gs = moe_metrics_span(group_size, n); /* the last group may be shorter */
    const long ngroups = (n + gs - 1) / gs;
    const int np = moe_par_parts(bits ? (long)n * words : (long)plan->n_entries + n,
                                 SCAN_GRAIN);
    count_job j = {.plan = plan, .bits = bits, .words = words, .G = G, .per = E / G, .gs = gs};
    j.hist = calloc((size_t)np * ((size_t)E + 2 + (size_t)G), sizeof *j.hist);
    j.gdrop = malloc((size_t)ngroups * sizeof *j.gdrop);
    if (!j.hist || !j.gdrop) {
        free(j.hist);
        free(j.gdrop);
        return moe_fail(MOE_ENOMEM, NULL, "out of memory (metrics of %d tokens)", n);
    }
    moe_par_run(count_part, &j, np);
    memset(mt->experts_per_token, 0, ((size_t)E + 1) * sizeof *mt->experts_per_token);
    memset(mt->groups_touched, 0, ((size_t)G + 1) * sizeof *mt->groups_touched);
    long touched_sum = 0;
    for (int i = 0; i < np; i++) {
        const long *ept = j.hist + (size_t)i * ((size_t)E + 2 + (size_t)G), *gt = ept + E + 1;
        for (int c = 0; c <= E; c++)
            mt->experts_per_token[c] += ept[c];
        for (int c = 0; c <= G; c++)
            mt->groups_touched[c] += gt[c];
        touched_sum += j.touched[i];
        long lo, hi;
        moe_par_range(n, i, np, &lo, &hi);
        if (i > 0 && lo < hi && lo % gs != 0) /* the group continued from part i - 1 */
            j.gdrop[lo / gs] += j.head[i];
    }
    /* the drop rate of each routing group, in group order */
    double rmin = INFINITY, rmax = -INFINITY, rsum = 0.0;
    for (long g = 0; g < ngroups; g++) {
        const int in_group = g == ngroups - 1 ? n - (int)(g * gs) : gs;
        const double r = plan->dense ? 0.0 : (double)j.gdrop[g] / in_group;
        rmin = r < rmin ? r : rmin;
        rmax = r > rmax ? r : rmax;
        rsum += r;
    }
    free(j.hist);
    free(j.gdrop);
    mt->groups_touched_mean = (double)touched_sum / n;
    mt->token_drop_rate_group_min = rmin;
    mt->token_drop_rate_group_max = rmax;
    mt->token_drop_rate_group_mean = rsum / (double)ngroups;
    return MOE_OK;
}
