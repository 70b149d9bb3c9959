/* metrics_count.c: the counts of a plan's entries behind the routing metrics (metrics_count.h),
 * on the routers' threads (routers/par.h).
 *
 * Two passes, each split into contiguous parts: the entries (validity, the kept load of each
 * expert, whether they come in token order) and the tokens (experts and expert groups per token,
 * dropped tokens per routing group); or, for a plan whose entries come in token order, both in one
 * pass over token parts (moe_metrics_scan_count): each part finds its first entry by a binary
 * search as if the entries were in token order and checks, as it reads them, that they are exactly
 * its tokens' in token order, so that the parts together have read every entry once; a plan where
 * that fails is counted again by the two passes. For E <= 64 and one expert group a part of the
 * one pass reads its entries rather than its tokens (a token without an entry is a dropped one),
 * with its counts in locals. Every result is an integer count, summed over the parts, or a double
 * computed afterwards from those counts in the order the serial loop over tokens takes: the values
 * do not depend on the number of threads. The tokens of a plan in token order (the token-choice
 * routers') are read from their own entries, found by a binary search from each part's first
 * token; a plan in another order (expert choice, dense plans) marks its (token, expert) pairs in a
 * bitmap (T, 64 * ceil(E/64)) first, filled serially.
 *
 * The one pass can also run inside the router (the plan's entries observer, moe_plan.ents_block):
 * each of the router's token parts counts every block of entries right after writing it, with
 * the part's state kept between blocks (count_run), and moe_metrics_scan_count merges the parts'
 * counts as it merges its own parts' when the observer saw the whole plan as it is.
 */
#include "metrics_count.h"
#include "../routers/par.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

enum { SCAN_GRAIN = 1 << 16 };

/* ---- the entries ---- */

typedef struct {
    const moe_plan *plan;
    long *kept;              /* (nparts, E) entries per expert, sparse plans */
    size_t bad[MOE_PAR_MAX]; /* the part's first entry outside (T, E, C), or SIZE_MAX */
    int ordered[MOE_PAR_MAX]; /* the part's entries in token order */
} scan_job;

static void scan_part(void *ctx, int i, int np)
{
    scan_job *j = ctx;
    const moe_plan *plan = j->plan;
    long lo, hi;
    moe_par_range((long)plan->n_entries, i, np, &lo, &hi);
    long *kept = j->kept ? j->kept + (size_t)i * (size_t)plan->E : NULL;
    j->bad[i] = SIZE_MAX;
    int ordered = 1;
    int32_t prev = -1;
    for (long x = lo; x < hi; x++) {
        const moe_entry *en = &plan->entries[x];
        if (en->token < 0 || en->token >= plan->n || en->expert < 0 || en->expert >= plan->E ||
            en->slot < 0 || en->slot >= plan->capacity) {
            j->bad[i] = (size_t)x;
            return;
        }
        ordered &= en->token >= prev;
        prev = en->token;
        if (kept)
            kept[en->expert]++;
    }
    j->ordered[i] = ordered;
}

int moe_metrics_scan(const moe_plan *plan, long *kept, int *ordered)
{
    const int E = plan->E, sparse = !plan->dense;
    const int np = moe_par_parts((long)plan->n_entries, SCAN_GRAIN);
    scan_job j = {.plan = plan};
    if (sparse && !(j.kept = calloc((size_t)np * (size_t)E, sizeof *j.kept)))
        return moe_fail(MOE_ENOMEM, NULL, "out of memory (metrics of %d experts)", E);
    moe_par_run(scan_part, &j, np);
    /* the parts in entry order: the first bad entry, the order across part boundaries */
    int in_order = sparse;
    int32_t prev = -1;
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
        in_order &= j.ordered[i] && plan->entries[lo].token >= prev;
        prev = plan->entries[hi - 1].token;
    }
    for (int i = 0; sparse && i < np; i++)
        for (int e = 0; e < E; e++)
            kept[e] += j.kept[(size_t)i * (size_t)E + (size_t)e];
    free(j.kept);
    if (plan->n_claims > 0 && (size_t)plan->n_claims < plan->n_entries)
        return moe_fail(MOE_EINVAL, "the router produced an inconsistent plan",
                        "plan has %zu entries but only %ld claims (metrics)", plan->n_entries,
                        plan->n_claims);
    *ordered = in_order;
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

typedef struct {
    const moe_plan *plan;
    const uint64_t *bits; /* (T, words) marks, or NULL: the entries in token order */
    int words, G, per, gs;
    long *hist;           /* (nparts, E + 1 + G + 1): experts per token, groups touched */
    long touched[MOE_PAR_MAX];
    long *gdrop;          /* (routing groups) dropped tokens of the groups starting in a part */
    long head[MOE_PAR_MAX]; /* dropped tokens of a part's first group begun in an earlier part */
    uint64_t *own;        /* (nparts, words) zero: each part's marks of the token it reads */
    long *kept;           /* (nparts, E) one pass (moe_metrics_scan_count): entries per expert,
                           * the entries checked as they are read; NULL: checked already */
    int bad[MOE_PAR_MAX]; /* one pass: the part's entries are not its tokens' in token order, or
                           * one lies outside (T, E, C) */
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

/* The distinct experts *cnt and groups *touched of the marks row (words). */
static void row_counts(const count_job *j, const uint64_t *row, int *cnt, int *touched)
{
    *cnt = *touched = 0;
    if (j->G == 1) { /* one group: every mark (none is set at or above E) */
        for (int w = 0; w < j->words; w++)
            *cnt += __builtin_popcountll(row[w]);
        *touched = *cnt > 0;
        return;
    }
    for (int g = 0; g < j->G; g++) {
        const int c = bits_in(row, g * j->per, (g + 1) * j->per);
        *cnt += c;
        *touched += c > 0;
    }
}

/* The entries of part i of np, from *at, of token t (one pass: also checked, and counted per
 * expert into kept) into the marks own; *at moves past them. 0 when an entry lies outside
 * (T, E, C). */
static int token_marks(const count_job *j, long t, size_t *at, uint64_t *own, long *kept)
{
    const moe_plan *plan = j->plan;
    size_t x = *at;
    for (; x < plan->n_entries && plan->entries[x].token == t; x++) {
        const int e = plan->entries[x].expert;
        if (kept) {
            const int32_t sl = plan->entries[x].slot;
            if (e < 0 || e >= plan->E || sl < 0 || sl >= plan->capacity)
                return 0;
            kept[e]++;
        }
        own[e / 64] |= (uint64_t)1 << (e % 64);
    }
    *at = x;
    return 1;
}

/* The routing groups of part i from the one starting at token *g0 up to the one holding token
 * t (t = hi: all its groups) have ended, present tokens of the first met (entries seen), none of
 * the others: their dropped tokens (those in [lo, hi) less those met) into gdrop, or head for a
 * group begun in an earlier part. *g0 moves to the group holding t; returns where that ends.
 * Out of line: reached once per group, it keeps the entry loop's registers free. */
static __attribute__((noinline)) long groups_ended(count_job *j, int i, long lo, long hi,
                                                   long *g0, long present, long t)
{
    const long gs = j->gs;
    for (; *g0 + gs <= t || (t == hi && *g0 < hi); *g0 += gs, present = 0) {
        const long a = *g0 < lo ? lo : *g0, b = *g0 + gs < hi ? *g0 + gs : hi;
        if (*g0 < lo)
            j->head[i] = b - a - present;
        else
            j->gdrop[*g0 / gs] = b - a - present;
    }
    return *g0 + gs;
}

/* count_part's one pass for E <= 64 W (W <= 4 mark words) and one expert group (a token
 * touches its group when it has an entry), over the entries of tokens [lo, hi) (lo < hi), read
 * in blocks in entry order (count_run_block) rather than over the tokens, its state between
 * blocks in a count_run. An entry is accepted when its expert and slot lie inside (E, C) and
 * its token is the previous entry's (lo for the first) or a later one below hi; a token with no
 * entry is dropped, so the histogram needs only the marks of the tokens met, and each routing
 * group's dropped tokens are its tokens in the part less those met. The part is bad exactly
 * when count_part's token loop would find it so: when an entry of [at, stop) is not accepted
 * (that loop stops there, short of stop, or finds it outside (E, C)). The entry at stop, when
 * there is one, has a token at or past hi (first_entry found stop by looking at it), so that
 * loop stops there too. */
typedef struct {
    long lo, hi;          /* the part's tokens */
    long present, g0, gend; /* tokens met in the routing group from g0, which ends at gend */
    int32_t prev;         /* the token of the last entry read (lo before the first) */
    int ok;               /* every entry read so far accepted */
    uint64_t mark[4];     /* the experts of token prev */
    long hist[4 * 64 + 1], kl[4 * 64]; /* tokens per count of experts, entries per expert */
} count_run;

/* Part i of job j (tokens [lo, hi)) starts its pass: u empty, the part bad until it ends. */
static void count_run_start(count_job *j, int i, long lo, long hi, count_run *u)
{
    const int E = j->plan->E;
    u->lo = lo;
    u->hi = hi;
    u->present = 0;
    u->g0 = lo / j->gs * j->gs;
    u->gend = u->g0 + j->gs;
    u->prev = (int32_t)lo;
    u->ok = 1;
    memset(u->mark, 0, sizeof u->mark);
    memset(u->hist, 0, ((size_t)E + 1) * sizeof *u->hist);
    memset(u->kl, 0, (size_t)E * sizeof *u->kl);
    j->head[i] = 0;
    j->bad[i] = 1;
}

/* The entries [en, end) of part i into u; returns u->ok (0: one is not accepted, u stops). Its
 * state in locals while it reads (the counts through u's arrays, which no entry field aliases). */
static inline __attribute__((always_inline)) int
count_run_block(count_job *j, int i, count_run *u, const moe_entry *en, const moe_entry *end,
                const int W)
{
    const moe_plan *plan = j->plan;
    /* s < 0 || s >= C as one unsigned compare, likewise e and t */
    const long C = plan->capacity;
    const uint32_t uE = (uint32_t)plan->E, uhi = (uint32_t)u->hi,
                   uC = C <= 0 ? 0 : C > INT32_MAX ? (uint32_t)INT32_MAX + 1 : (uint32_t)C;
    long *const hist = u->hist, *const kl = u->kl;
    long present = u->present, gend = u->gend;
    int32_t prev = u->prev;
    uint64_t mark[4] = {u->mark[0], u->mark[1], u->mark[2], u->mark[3]};
    int ok = 0;
    for (; en < end; en++) {
        const int32_t t = en->token, e = en->expert;
        if (((uint32_t)e >= uE) | ((uint32_t)en->slot >= uC))
            goto out;
        if (t != prev) { /* token prev is done: its marks, then the groups that end before t */
            if ((uint32_t)t - (uint32_t)prev >= uhi - (uint32_t)prev)
                goto out; /* before prev, or at or past hi */
            int c = 0;
#pragma GCC unroll 4
            for (int w = 0; w < W; w++) {
                c += __builtin_popcountll(mark[w]);
                mark[w] = 0;
            }
            hist[c]++;
            present += c > 0;
            if (t >= gend) {
                gend = groups_ended(j, i, u->lo, u->hi, &u->g0, present, t);
                present = 0;
            }
            prev = t;
        }
        kl[e]++;
        if (W == 1)
            mark[0] |= (uint64_t)1 << e;
        else
            mark[e / 64] |= (uint64_t)1 << (e % 64);
    }
    ok = 1;
out:
    u->present = present;
    u->gend = gend;
    u->prev = prev;
    for (int w = 0; w < 4; w++)
        u->mark[w] = mark[w];
    return u->ok = ok;
}

static int count_block_one_word(count_job *j, int i, count_run *u, const moe_entry *en,
                                const moe_entry *end)
{
    return count_run_block(j, i, u, en, end, 1);
}

static int count_block_four_words(count_job *j, int i, count_run *u, const moe_entry *en,
                                  const moe_entry *end)
{
    return count_run_block(j, i, u, en, end, 4);
}

/* Part i has read all its entries into u, every one accepted: the last token's marks, the
 * routing groups left, and the part's counts into ept (E + 1), gt (2) and kept (E). */
static void count_run_end(count_job *j, int i, count_run *u, long *ept, long *gt, long *kept)
{
    const int E = j->plan->E;
    int c = 0;
    for (int w = 0; w < 4; w++)
        c += __builtin_popcountll(u->mark[w]);
    u->hist[c]++;
    groups_ended(j, i, u->lo, u->hi, &u->g0, u->present + (c > 0), u->hi);
    long met = 0; /* tokens with an entry (hist[0] counted token lo only, when it has none) */
    for (int k = 1; k <= E; k++) {
        ept[k] += u->hist[k];
        met += u->hist[k];
    }
    ept[0] += u->hi - u->lo - met;
    gt[0] += u->hi - u->lo - met;
    gt[1] += met;
    j->touched[i] = met;
    for (int e = 0; e < E; e++)
        kept[e] += u->kl[e];
    j->bad[i] = 0;
}

/* count_part's one pass over the entries [at, stop) of tokens [lo, hi) (lo < hi). */
static void count_part_entries(count_job *j, int i, long lo, long hi, size_t at, size_t stop,
                               long *ept, long *gt, long *kept)
{
    const moe_entry *en = j->plan->entries;
    count_run u;
    count_run_start(j, i, lo, hi, &u);
    if (j->words == 1 ? count_block_one_word(j, i, &u, en + at, en + stop)
                      : count_block_four_words(j, i, &u, en + at, en + stop)) /* (the words
                                                                     * past E's stay zero) */
        count_run_end(j, i, &u, ept, gt, kept);
}

static void count_part(void *ctx, int i, int np)
{
    count_job *j = ctx;
    const moe_plan *plan = j->plan;
    const int E = plan->E, gs = j->gs;
    long lo, hi;
    moe_par_range(plan->n, i, np, &lo, &hi);
    long *ept = j->hist + (size_t)i * ((size_t)E + 2 + (size_t)j->G), *gt = ept + E + 1;
    long *kept = j->kept ? j->kept + (size_t)i * (size_t)E : NULL;
    /* one pass: the part reads entries [at, stop), the next part starts where this one stops */
    size_t at = j->bits || (kept ? i == 0 : lo >= hi) ? 0 : first_entry(plan, (int)lo);
    const size_t stop = !kept ? 0 : i == np - 1 ? plan->n_entries : first_entry(plan, (int)hi);
    if (kept && j->words <= 4 && j->G == 1 && lo < hi) { /* the common case: by entries */
        count_part_entries(j, i, lo, hi, at, stop, ept, gt, kept);
        return;
    }
    uint64_t *own = j->own + (size_t)i * (size_t)j->words; /* one token's marks, zero */
    long touched_sum = 0, dropped = 0;
    long end = lo < hi ? (lo / gs + 1) * gs : hi; /* where the current routing group ends */
    j->head[i] = 0;
    j->bad[i] = 0;
    for (long t = lo; t < hi; t++) {
        int cnt, touched;
        if (j->bits) {
            row_counts(j, j->bits + (size_t)t * (size_t)j->words, &cnt, &touched);
        } else { /* the token's entries, then its marks cleared */
            const size_t a0 = at;
            if (!token_marks(j, t, &at, own, kept) || (kept && at > stop)) {
                memset(own, 0, (size_t)j->words * sizeof *own);
                j->bad[i] = 1;
                return;
            }
            if (j->words == 1 && j->G == 1) { /* E <= 64, one group */
                cnt = __builtin_popcountll(own[0]);
                touched = cnt > 0;
            } else {
                row_counts(j, own, &cnt, &touched);
            }
            if (j->words == 1)
                own[0] = 0;
            for (size_t x = a0; j->words > 1 && x < at; x++)
                own[plan->entries[x].expert / 64] = 0;
        }
        ept[cnt]++;
        gt[touched]++;
        touched_sum += touched;
        dropped += cnt == 0;
        if (t + 1 == end || t == hi - 1) { /* the group ends, or the part does */
            const long g = t / gs;
            if (g * gs < lo) /* begun in an earlier part */
                j->head[i] = dropped;
            else
                j->gdrop[g] = dropped;
            dropped = 0;
            end += t + 1 == end ? gs : 0;
        }
    }
    j->touched[i] = touched_sum;
    j->bad[i] = kept && at != stop; /* an entry of another token, or out of token order */
}

/* The counts of the parts into mt (count_part has run on job j of np parts, part i from token
 * lo[i], or moe_par_range's parts when lo is NULL). */
static void count_merge(const count_job *j, int np, const long *lo, moe_metrics *mt)
{
    const moe_plan *plan = j->plan;
    const int n = plan->n, E = plan->E, G = j->G, gs = j->gs;
    const long ngroups = (n + gs - 1) / gs;
    memset(mt->experts_per_token, 0, ((size_t)E + 1) * sizeof *mt->experts_per_token);
    memset(mt->groups_touched, 0, ((size_t)G + 1) * sizeof *mt->groups_touched);
    long touched_sum = 0;
    for (int i = 0; i < np; i++) {
        const long *ept = j->hist + (size_t)i * ((size_t)E + 2 + (size_t)G), *gt = ept + E + 1;
        for (int c = 0; c <= E; c++)
            mt->experts_per_token[c] += ept[c];
        for (int c = 0; c <= G; c++)
            mt->groups_touched[c] += gt[c];
        touched_sum += j->touched[i];
        long a = lo ? lo[i] : 0, b = lo ? (i + 1 < np ? lo[i + 1] : n) : 0;
        if (!lo)
            moe_par_range(n, i, np, &a, &b);
        if (i > 0 && a < b && a % gs != 0) /* the group continued from part i - 1 */
            j->gdrop[a / gs] += j->head[i];
    }
    /* the drop rate of each routing group, in group order */
    double rmin = INFINITY, rmax = -INFINITY, rsum = 0.0;
    for (long g = 0; g < ngroups; g++) {
        const int in_group = g == ngroups - 1 ? n - (int)(g * gs) : gs;
        const double r = plan->dense ? 0.0 : (double)j->gdrop[g] / in_group;
        rmin = r < rmin ? r : rmin;
        rmax = r > rmax ? r : rmax;
        rsum += r;
    }
    mt->groups_touched_mean = (double)touched_sum / n;
    mt->token_drop_rate_group_min = rmin;
    mt->token_drop_rate_group_max = rmax;
    mt->token_drop_rate_group_mean = rsum / (double)ngroups;
}

/* The scratch of a count over np parts (one pass: with kept), or MOE_ENOMEM. */
static int count_alloc(count_job *j, int np, long ngroups, int one_pass)
{
    const int E = j->plan->E;
    j->hist = calloc((size_t)np * ((size_t)E + 2 + (size_t)j->G), sizeof *j->hist);
    j->gdrop = malloc((size_t)ngroups * sizeof *j->gdrop);
    j->own = calloc((size_t)np * (size_t)j->words, sizeof *j->own);
    j->kept = one_pass ? calloc((size_t)np * (size_t)E, sizeof *j->kept) : NULL;
    if (j->hist && j->gdrop && j->own && (!one_pass || j->kept))
        return MOE_OK;
    free(j->hist);
    free(j->gdrop);
    free(j->own);
    free(j->kept);
    return moe_fail(MOE_ENOMEM, NULL, "out of memory (metrics of %d tokens)", j->plan->n);
}

static void count_free(count_job *j)
{
    free(j->hist);
    free(j->gdrop);
    free(j->own);
    free(j->kept);
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
    int rc = count_alloc(&j, np, ngroups, 0);
    if (rc)
        return rc;
    moe_par_run(count_part, &j, np);
    count_merge(&j, np, NULL, mt);
    count_free(&j);
    return MOE_OK;
}

/* ---- the entries as the router writes them (moe_plan.ents_block) ---- */

/* count_part's one pass, run by the router's own token parts on each block of entries right
 * after writing it (while the block is in cache), for moe_metrics_scan_count to merge. */
struct moe_metrics_ents {
    const moe_metrics *mt;
    const moe_plan *plan;
    count_job j;              /* hist, gdrop and kept of the parts, as count_part fills them */
    int np;
    long n, C;                /* the plan's tokens and capacity at ents_begin */
    size_t a0[MOE_PAR_MAX], a1[MOE_PAR_MAX]; /* the entries each part wrote */
    int done[MOE_PAR_MAX];    /* part i's last block came, every entry accepted */
    size_t cap_hist, cap_kept, cap_groups;   /* of j's arrays */
    count_run run[MOE_PAR_MAX];
};

/* Grows *a to n longs (cap *cap); 0 when out of memory (*a as it was). */
static int ents_grow(long **a, size_t *cap, size_t n)
{
    if (n <= *cap)
        return 1;
    long *b = realloc(*a, n * sizeof *b);
    if (!b)
        return 0;
    *a = b;
    *cap = n;
    return 1;
}

static int ents_begin(void *ctx, const moe_plan *plan, int np)
{
    moe_metrics_ents *o = ctx;
    const moe_metrics *mt = o->mt;
    const int E = plan->E, n = plan->n;
    if (plan != o->plan || E != mt->E || E > 4 * 64 || mt->groups != 1 || n <= 0 ||
        plan->n_entries != 0 || np < 1 || np > MOE_PAR_MAX)
        return 0;
    const int gs = moe_metrics_span(mt->group_size, n);
    const size_t ngroups = ((size_t)n + (size_t)gs - 1) / (size_t)gs,
                 nh = (size_t)np * ((size_t)E + 3), nk = (size_t)np * (size_t)E;
    if (!ents_grow(&o->j.hist, &o->cap_hist, nh) || !ents_grow(&o->j.kept, &o->cap_kept, nk) ||
        !ents_grow(&o->j.gdrop, &o->cap_groups, ngroups))
        return 0; /* (the metrics then count the entries themselves) */
    memset(o->j.hist, 0, nh * sizeof *o->j.hist);
    memset(o->j.kept, 0, nk * sizeof *o->j.kept);
    o->j.plan = plan;
    o->j.words = (E + 63) / 64;
    o->j.G = 1;
    o->j.per = E;
    o->j.gs = gs;
    o->np = np;
    o->n = n;
    o->C = plan->capacity;
    memset(o->done, 0, sizeof o->done);
    return 1;
}

static void ents_block(void *ctx, int i, long lo, long hi, long t0, long t1, const moe_entry *a,
                       const moe_entry *b)
{
    moe_metrics_ents *o = ctx;
    count_job *j = &o->j;
    count_run *u = &o->run[i];
    if (t0 == lo) {
        count_run_start(j, i, lo, hi, u);
        o->a0[i] = (size_t)(a - j->plan->entries);
    }
    if (!u->ok || (a < b && !(j->words == 1 ? count_block_one_word(j, i, u, a, b)
                                            : count_block_four_words(j, i, u, a, b))))
        return;
    if (t1 == hi) {
        long *ept = j->hist + (size_t)i * ((size_t)j->plan->E + 3), *kept = j->kept;
        count_run_end(j, i, u, ept, ept + j->plan->E + 1, kept + (size_t)i * j->plan->E);
        o->a1[i] = (size_t)(b - j->plan->entries);
        o->done[i] = 1;
    }
}

/* The observer counted every entry of plan, as it is, in parts that cover its tokens and its
 * entries one after the other, for expert groups G and routing groups of group_size; then
 * lo[i] = part i's first token. */
static int ents_whole(const moe_metrics_ents *o, const moe_plan *plan, int G, int group_size,
                      long *lo)
{
    if (!o || !plan->ents_seen || plan->ents_ctx != o || o->plan != plan || o->j.plan != plan ||
        G != 1 || o->n != plan->n || o->C != plan->capacity || plan->dense ||
        o->j.gs != moe_metrics_span(group_size, plan->n))
        return 0;
    size_t at = 0;
    long t = 0;
    for (int i = 0; i < o->np; i++) {
        if (!o->done[i] || o->run[i].lo != t || o->a0[i] != at)
            return 0;
        lo[i] = t;
        t = o->run[i].hi;
        at = o->a1[i];
    }
    return t == plan->n && at == plan->n_entries;
}

int moe_metrics_ents_attach(moe_metrics *mt, moe_plan *plan)
{
    moe_metrics_ents *o = mt->ents;
    if (!o && !(o = mt->ents = calloc(1, sizeof *o)))
        return moe_fail(MOE_ENOMEM, NULL, "out of memory (metrics of the plan's entries)");
    o->mt = mt;
    o->plan = plan;
    o->j.plan = NULL;
    plan->ents_begin = ents_begin;
    plan->ents_block = ents_block;
    plan->ents_ctx = o;
    plan->ents_seen = 0;
    return MOE_OK;
}

void moe_metrics_ents_free(moe_metrics_ents *o)
{
    if (!o)
        return;
    free(o->j.hist);
    free(o->j.kept);
    free(o->j.gdrop);
    free(o);
}

/* moe_metrics_scan_count's last check, once its counts are in: *done = 1 unless the plan has
 * fewer claims than entries. */
static int scan_count_claims(const moe_plan *plan, int *done)
{
    if (plan->n_claims > 0 && (size_t)plan->n_claims < plan->n_entries)
        return moe_fail(MOE_EINVAL, "the router produced an inconsistent plan",
                        "plan has %zu entries but only %ld claims (metrics)", plan->n_entries,
                        plan->n_claims);
    *done = 1;
    return MOE_OK;
}

int moe_metrics_scan_count(const moe_plan *plan, int G, int group_size, long *kept,
                           moe_metrics *mt, int *done)
{
    const int n = plan->n, E = plan->E;
    *done = 0;
    if (plan->dense || plan->n_entries == 0 || n <= 0)
        return MOE_OK;
    long lo[MOE_PAR_MAX];
    moe_metrics_ents *o = mt->ents;
    if (ents_whole(o, plan, G, group_size, lo)) { /* counted as the router wrote them */
        for (int i = 0; i < o->np; i++)
            for (int e = 0; e < E; e++)
                kept[e] += o->j.kept[(size_t)i * (size_t)E + (size_t)e];
        count_merge(&o->j, o->np, lo, mt);
        o->j.plan = NULL; /* (the merge added the heads into gdrop: once) */
        return scan_count_claims(plan, done);
    }
    const int gs = moe_metrics_span(group_size, n);
    const long ngroups = (n + gs - 1) / gs;
    const int np = moe_par_parts((long)plan->n_entries + n, SCAN_GRAIN);
    count_job j = {.plan = plan, .words = (E + 63) / 64, .G = G, .per = E / G, .gs = gs};
    int rc = count_alloc(&j, np, ngroups, 1);
    if (rc)
        return rc;
    moe_par_run(count_part, &j, np);
    int bad = 0;
    for (int i = 0; i < np; i++)
        bad |= j.bad[i];
    if (!bad) {
        for (int i = 0; i < np; i++)
            for (int e = 0; e < E; e++)
                kept[e] += j.kept[(size_t)i * (size_t)E + (size_t)e];
        count_merge(&j, np, NULL, mt);
    }
    count_free(&j);
    return bad ? MOE_OK : scan_count_claims(plan, done);
}

/* ---- the marks of a plan in another order ---- */

enum { MARK_PART_BYTES = 1 << 22 }; /* the parts' own slot marks, at most, in all */

typedef struct {
    const moe_plan *plan;
    uint64_t *bits;
    int words;
    unsigned char *marks; /* (nparts, E, C) each part's slot marks, or NULL: none to take */
    int bad[MOE_PAR_MAX]; /* the part met an entry of another part's tokens */
} mark_job;

/* Part i marks the tokens [lo, hi) of a plan sorted by token: the entries between the first of
 * token lo and the first of token hi (binary searches, as if the entries came in token order;
 * the parts' ranges meet, so together they read every entry once), each checked to be one of
 * its tokens, so that no two parts write the same token's marks. */
static void mark_part(void *ctx, int i, int np)
{
    mark_job *j = ctx;
    const moe_plan *plan = j->plan;
    long lo, hi;
    moe_par_range(plan->n, i, np, &lo, &hi);
    const size_t a = i == 0 ? 0 : first_entry(plan, (int)lo);
    const size_t b = i == np - 1 ? plan->n_entries : first_entry(plan, (int)hi);
    unsigned char *sm = j->marks ? j->marks + (size_t)i * plan->E * plan->capacity : NULL;
    j->bad[i] = 0;
    const uint32_t uE = (uint32_t)plan->E;
    const uint64_t uC = plan->capacity < 0 ? 0 : (uint64_t)plan->capacity;
    for (size_t x = a; x < b; x++) {
        const moe_entry *en = &plan->entries[x];
        if (en->token < lo || en->token >= hi || (uint32_t)en->expert >= uE ||
            (uint64_t)(uint32_t)en->slot >= uC) { /* (the loop below decides) */
            j->bad[i] = 1;
            return;
        }
        j->bits[(size_t)en->token * j->words + (size_t)en->expert / 64] |=
            (uint64_t)1 << (en->expert % 64);
        if (sm)
            sm[(size_t)en->expert * plan->capacity + en->slot] = 1;
    }
}

int moe_metrics_mark(const moe_plan *plan, uint64_t *bits, int words, unsigned char *slot_mark,
                     long *kept_load)
{
    const int E = plan->E, dense = plan->dense;
    const size_t ec = dense ? (size_t)E * (size_t)plan->capacity : 0;
    int np = moe_par_parts((long)plan->n_entries, SCAN_GRAIN);
    np = plan->n > 0 && np > plan->n ? plan->n : np;
    mark_job j = {.plan = plan, .bits = bits, .words = words};
    int ok = np > 1 && ec * (size_t)np <= MARK_PART_BYTES &&
             (!ec || (j.marks = calloc(ec * (size_t)np, 1)));
    if (ok) {
        moe_par_run(mark_part, &j, np);
        for (int i = 0; i < np; i++)
            ok &= !j.bad[i];
    }
    if (ok) { /* a slot is kept when any part marked it */
        for (size_t q = 0; q < ec; q++) {
            unsigned char m = 0;
            for (int i = 0; i < np; i++)
                m |= j.marks[(size_t)i * ec + q];
            slot_mark[q] = m;
        }
    } else { /* not in token order (or one part): the serial loop (a mark the parts set before
              * they stopped is an entry's own, which the loop sets again) */
        for (size_t i = 0; i < plan->n_entries; i++) {
            const moe_entry *en = &plan->entries[i];
            if (en->token < 0 || en->token >= plan->n || en->expert < 0 ||
                en->expert >= plan->E || en->slot < 0 || en->slot >= plan->capacity) {
                free(j.marks); /* (the scan finds the same entry and names it) */
                long *k = calloc((size_t)plan->E, sizeof *k);
                int o, rc = k ? moe_metrics_scan(plan, k, &o)
                              : moe_fail(MOE_ENOMEM, NULL, "out of memory (metrics)");
                free(k);
                return rc ? rc : moe_fail(MOE_EINVAL, NULL, "plan entry %zu invalid (metrics)", i);
            }
            bits[(size_t)en->token * words + (size_t)en->expert / 64] |=
                (uint64_t)1 << (en->expert % 64);
            if (dense)
                slot_mark[(size_t)en->expert * plan->capacity + en->slot] = 1;
        }
    }
    free(j.marks);
    for (size_t q = 0; q < ec; q++) /* kept_load[e] = distinct slots of e */
        kept_load[q / (size_t)plan->capacity] += slot_mark[q];
    return MOE_OK;
}

