/* test_metrics_count.c: the one-pass count of a plan's entries (moe_metrics_scan_count,
 * sim/metrics_count.c) against the two passes it replaces for plans in token order
 * (moe_metrics_scan, then moe_metrics_count_tokens reading each token's entries), which are the
 * expected values: the same kept loads, histograms and drop rates bit for bit (memcmp), for any
 * number of threads and part boundaries; and for plans it must leave to the two passes (entries
 * out of token order, in expert order, outside (T, E, C), dense) that it says so and writes
 * nothing. Then the marks of the plans the two passes read (moe_metrics_mark: on the threads
 * for entries in token order, else serially) against the serial loop written here: dense and
 * sparse plans in token order, out of it, in expert order, and out of order at a part
 * boundary, on 1 and 2 threads. */
#include "check.h"
#include "metrics_count.h"
#include "moe.h"
#include "../routers/par.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* A plan of n tokens in token order: each token 0..kmax <= 4 distinct experts (0: dropped),
 * slots below C, drawn from a fixed LCG. Above 64 experts a token's experts lie 64 apart
 * (mod E): in different mark words at the same bit, which a count by bit alone would merge. */
static moe_plan *plan_tokens(int n, int E, int kmax, long C, uint64_t seed)
{
    moe_plan *p = moe_plan_alloc(n, E, (size_t)n * (size_t)kmax + 16);
    if (!p || moe_plan_reset(p, n, E, E))
        return NULL;
    p->capacity = C;
    uint64_t s = seed;
    for (int t = 0; t < n; t++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        const int k = (int)((s >> 33) % (uint64_t)(kmax + 1));
        const int e0 = (int)((s >> 17) % (uint64_t)E);
        const int step = E > 64 ? 64 : 5; /* e0 + j step mod E distinct for j < 4 (E 12, 64, 130) */
        for (int j = 0; j < k; j++)
            moe_plan_push(p, t, (e0 + step * j) % E, (int32_t)((t + j) % C), 1.0, 0.5);
    }
    p->n_claims = (long)p->n_entries + 3;
    return p;
}

typedef struct {
    long kept[256];
    moe_metrics *mt;
} counts;

static int same_counts(const counts *a, const counts *b, int E, int G)
{
    const moe_metrics *x = a->mt, *y = b->mt;
    return memcmp(a->kept, b->kept, (size_t)E * sizeof a->kept[0]) == 0 &&
           memcmp(x->experts_per_token, y->experts_per_token,
                  ((size_t)E + 1) * sizeof *x->experts_per_token) == 0 &&
           memcmp(x->groups_touched, y->groups_touched,
                  ((size_t)G + 1) * sizeof *x->groups_touched) == 0 &&
           memcmp(&x->groups_touched_mean, &y->groups_touched_mean, sizeof(double)) == 0 &&
           memcmp(&x->token_drop_rate_group_min, &y->token_drop_rate_group_min,
                  sizeof(double)) == 0 &&
           memcmp(&x->token_drop_rate_group_max, &y->token_drop_rate_group_max,
                  sizeof(double)) == 0 &&
           memcmp(&x->token_drop_rate_group_mean, &y->token_drop_rate_group_mean,
                  sizeof(double)) == 0;
}

/* The two passes (the reference) into ref; the one pass into got. */
static void both(const moe_plan *p, int G, int gs, counts *ref, counts *got, int *done)
{
    int ordered = 0;
    memset(ref->kept, 0, sizeof ref->kept);
    memset(got->kept, 0, sizeof got->kept);
    CHECK_INT(moe_metrics_scan(p, ref->kept, &ordered), MOE_OK);
    CHECK_INT(ordered, 1);
    CHECK_INT(moe_metrics_count_tokens(p, NULL, (p->E + 63) / 64, G, gs, ref->mt), MOE_OK);
    CHECK_INT(moe_metrics_scan_count(p, G, gs, got->kept, got->mt, done), MOE_OK);
}

static void test_token_order(counts *ref, counts *got)
{
    static const int Es[3] = {12, 64, 130}, Gs[3] = {3, 4, 2}, sizes[3] = {0, 7, 64};
    for (int ie = 0; ie < 3; ie++)
        for (int n = 5; n <= 2000; n = n * 20) {
            moe_plan *p = plan_tokens(n, Es[ie], 4, 40, (uint64_t)(n + ie));
            CHECK(p != NULL, "plan");
            if (!p)
                return;
            for (int th = 1; th <= 8; th++)
                for (int grain = 0; grain <= 1; grain++)
                    for (int g = 0; g < 2; g++)
                        for (int z = 0; z < 3; z++) {
                            const int G = g ? Gs[ie] : 1;
                            moe_par_set_threads(th);
                            moe_par_set_grain(grain);
                            int done = 0;
                            both(p, G, sizes[z], ref, got, &done);
                            CHECK(done == 1 && same_counts(ref, got, Es[ie], G),
                                  "one pass = two passes (E %d, n %d, threads %d, grain %d, G %d, "
                                  "group %d, done %d)", Es[ie], n, th, grain, G, sizes[z], done);
                        }
            moe_plan_free(p);
        }
    moe_par_set_threads(0);
    moe_par_set_grain(0);
}

/* A kept value filled with bytes 0x5a (the mark of a kept array the one pass must not touch). */
static long kept_probe(void)
{
    long probe;
    memset(&probe, 0x5a, sizeof probe);
    return probe;
}

/* The one pass declines p: *done = 0, kept and the counts untouched. */
static void check_declined(const moe_plan *p, counts *got, const char *what)
{
    for (int th = 1; th <= 3; th++) {
        moe_par_set_threads(th);
        moe_par_set_grain(1);
        memset(got->kept, 0x5a, sizeof got->kept);
        got->mt->experts_per_token[0] = -7;
        got->mt->groups_touched_mean = -7.0;
        int done = 1;
        int rc = moe_metrics_scan_count(p, 1, 0, got->kept, got->mt, &done);
        CHECK(rc == MOE_OK && done == 0 && got->kept[0] == kept_probe() &&
                  got->mt->experts_per_token[0] == -7 && got->mt->groups_touched_mean == -7.0,
              "%s: declined with nothing written (threads %d, rc %d, done %d)", what, th, rc,
              done);
    }
    moe_par_set_threads(0);
    moe_par_set_grain(0);
}

/* E experts: 12 (one mark word) and 130 (three) */
static void test_declined(counts *got, int E)
{
    moe_plan *p = plan_tokens(300, E, 3, 40, 11);
    if (!p)
        return;
    /* two tokens' entries swapped: out of token order */
    moe_entry a = p->entries[10];
    size_t b = 10;
    while (b < p->n_entries && p->entries[b].token == a.token)
        b++;
    p->entries[10] = p->entries[b];
    p->entries[b] = a;
    check_declined(p, got, "swapped entries");
    p->entries[b] = p->entries[10];
    p->entries[10] = a;
    /* a slot at the capacity, a token at n, an expert at E */
    const size_t mid = p->n_entries / 2;
    p->entries[mid].slot = (int32_t)p->capacity;
    check_declined(p, got, "slot = C");
    int ordered = 0;
    long kept[256] = {0};
    CHECK(moe_metrics_scan(p, kept, &ordered) == MOE_EINVAL, "two passes name the bad slot");
    moe_clear_error();
    p->entries[mid].slot = 0;
    p->entries[p->n_entries - 1].token = p->n;
    check_declined(p, got, "token = T");
    p->entries[p->n_entries - 1].token = p->n - 1;
    p->entries[0].expert = p->E;
    check_declined(p, got, "expert = E");
    p->entries[0].expert = 0;
    /* expert order (as expert choice writes its plans) */
    moe_plan *q = moe_plan_alloc(300, E, 40 * (size_t)E);
    if (q && !moe_plan_reset(q, 300, E, E)) {
        q->capacity = 50;
        for (int e = 0; e < E; e++)
            for (int c = 0; c < 40; c++)
                moe_plan_push(q, (c * 7 + e) % 300, e, c, 1.0, 1.0);
        check_declined(q, got, "expert order");
        q->dense = 1;
        check_declined(q, got, "dense plan");
    }
    moe_plan_free(q);
    moe_plan_free(p);
}

/* A plan of n tokens in token order for E <= 64 experts and capacity C: token t has 1..kmax
 * entries whose experts may repeat (a repeat counts in the kept load, once in the token's
 * experts), or none when it lies in a run of dropped tokens (1 in 16 tokens starts one, of 1 to
 * n/4 + 1 tokens, crossing part and routing-group boundaries) or when pattern drops it: the
 * first (1), last (2) or first and last (3) token of each of np parts, or all of part 1 (4). */
static moe_plan *plan_runs(int n, int E, int kmax, long C, int np, int pattern, uint64_t seed)
{
    moe_plan *p = moe_plan_alloc(n, E, (size_t)n * (size_t)kmax + 16);
    if (!p || moe_plan_reset(p, n, E, E)) {
        moe_plan_free(p);
        return NULL;
    }
    p->capacity = C;
    uint64_t s = seed;
    int run = 0; /* dropped tokens left in the current run */
    for (int t = 0; t < n; t++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        if (run == 0 && (s >> 60) == 0)
            run = 1 + (int)((s >> 20) % (uint64_t)(n / 4 + 1));
        int drop = run > 0;
        run -= run > 0;
        for (int i = 0; i < np; i++) {
            long lo, hi;
            moe_par_range(n, i, np, &lo, &hi);
            drop |= (pattern == 1 || pattern == 3) && t == lo;
            drop |= (pattern == 2 || pattern == 3) && t == hi - 1;
            drop |= pattern == 4 && i == 1 && t >= lo && t < hi;
        }
        const int k = drop ? 0 : 1 + (int)((s >> 33) % (uint64_t)kmax);
        int e = (int)((s >> 17) % (uint64_t)E);
        for (int j = 0; j < k; j++) {
            s = s * 6364136223846793005ull + 1442695040888963407ull;
            e = (s >> 62) == 0 ? e : (int)((s >> 20) % (uint64_t)E); /* 1 in 4 a repeat */
            moe_plan_push(p, t, e, (int32_t)((s >> 40) % (uint64_t)(C < 1000 ? C : 1000)), 1.0,
                          0.5);
        }
    }
    p->n_claims = (long)p->n_entries;
    return p;
}

/* E <= 64 and one expert group (the one pass's count over the entries, one mark word per token)
 * against the two passes: tokens dropped at part boundaries, whole parts and routing groups
 * dropped, groups that do not divide n (sizes 1, 3, 7, 64, n - 1 and one group), 1 to 8 parts
 * (a part may hold no token when n is small), experts named twice by a token. */
static void test_one_word(counts *ref, counts *got)
{
    static const int Es[4] = {1, 8, 63, 64}, ns[4] = {1, 37, 500, 1531};
    for (int ie = 0; ie < 4; ie++)
        for (int in = 0; in < 4; in++)
            for (int th = 1; th <= 8; th++)
                for (int pat = 0; pat <= 4; pat++) {
                    const int n = ns[in], sizes[6] = {0, 1, 3, 7, 64, n > 1 ? n - 1 : 1};
                    moe_plan *p = plan_runs(n, Es[ie], 3, 40, th, pat,
                                            (uint64_t)(1000 * ie + 100 * in + 10 * th + pat));
                    CHECK(p != NULL, "plan");
                    if (!p)
                        return;
                    moe_par_set_threads(th);
                    moe_par_set_grain(1);
                    for (int z = 0; z < 6; z++) {
                        int done = 0;
                        both(p, 1, sizes[z], ref, got, &done);
                        /* a plan with no entry is declined (left to the two passes) */
                        CHECK(p->n_entries == 0 ? done == 0
                                                : done == 1 && same_counts(ref, got, Es[ie], 1),
                              "one word = two passes (E %d, n %d, threads %d, pattern %d, "
                              "group %d, done %d)", Es[ie], n, th, pat, sizes[z], done);
                    }
                    moe_plan_free(p);
                }
    moe_par_set_threads(0);
    moe_par_set_grain(0);
}

/* Whether the one pass must count p, by brute force: the two passes find every entry inside
 * (T, E, C), and the tokens of the entries never decrease (the parts, whose entries the one pass
 * finds by binary search, then read every entry once, each its own tokens'). */
static int countable(const moe_plan *p)
{
    if (p->dense || p->n <= 0 || p->n_entries == 0)
        return 0;
    for (size_t x = 0; x < p->n_entries; x++) {
        const moe_entry *en = &p->entries[x];
        if (en->token < 0 || en->token >= p->n || en->expert < 0 || en->expert >= p->E ||
            en->slot < 0 || en->slot >= p->capacity || (x > 0 && en->token < en[-1].token))
            return 0;
    }
    return 1;
}

/* Entry x of p changed by mutation m (14 kinds: tokens out of range or order, experts and
 * slots just inside or outside (E, C), x swapped with x + 1); 0 when m does not apply. */
static int mutate(moe_plan *p, size_t x, int m)
{
    moe_entry *en = &p->entries[x];
    const int last = x + 1 == p->n_entries;
    const long v[13] = {-1, p->n, x > 0 ? en[-1].token - 1L : -1L,
                        last ? p->n : en[1].token + 1L, en->token + 1L, en->token - 1L,
                        -1, p->E, p->E - 1, -1, p->capacity, p->capacity - 1, INT32_MIN};
    if (m == 13) {
        if (last)
            return 0;
        const moe_entry a = en[0];
        en[0] = en[1];
        en[1] = a;
        return 1;
    }
    if (v[m] < INT32_MIN || v[m] > INT32_MAX)
        return 0;
    int32_t *f = m < 6 ? &en->token : m < 9 ? &en->expert : &en->slot;
    *f = (int32_t)v[m];
    return 1;
}

/* The one pass counts a plan of E <= 64 experts exactly when the brute force says it must (and
 * then as the two passes do), else declines with nothing written: every mutation of countable,
 * at the first and last entry, around each part's first entry and in the middle, for 1 to 8
 * parts and capacities 40, 2^31 - 1 and 2^31 (slots near the int32 limits) and 0 (no slot). */
static void test_one_word_checks(counts *ref, counts *got)
{
    static const long Cs[4] = {40, INT32_MAX, (long)INT32_MAX + 1, 0};
    for (int ie = 0; ie < 2; ie++)
        for (int ic = 0; ic < 4; ic++)
            for (int th = 1; th <= 8; th++) {
                const int E = ie ? 64 : 8, n = 300;
                moe_plan *p = plan_runs(n, E, 3, Cs[ic] ? Cs[ic] : 40, th, th % 4,
                                        (uint64_t)(77 + th));
                if (!p)
                    return;
                p->capacity = Cs[ic];
                moe_par_set_threads(th);
                moe_par_set_grain(1);
                size_t xs[3 * 8 + 3] = {0, p->n_entries - 1, p->n_entries / 2};
                int nx = 3;
                for (int i = 1; i < th; i++) { /* part i's first entry, and its neighbours */
                    long lo, hi;
                    moe_par_range(n, i, th, &lo, &hi);
                    size_t b = 0;
                    while (b < p->n_entries && p->entries[b].token < lo)
                        b++;
                    for (size_t d = 0; d < 3; d++)
                        if (b + d >= 1 && b + d - 1 < p->n_entries)
                            xs[nx++] = b + d - 1;
                }
                for (int k = 0; k < nx; k++)
                    for (int m = 0; m < 14; m++) {
                        moe_plan *q = moe_plan_alloc(n, E, p->n_entries);
                        if (!q || moe_plan_reset(q, n, E, E))
                            break;
                        q->capacity = p->capacity;
                        for (size_t x = 0; x < p->n_entries; x++)
                            moe_plan_push(q, p->entries[x].token, p->entries[x].expert,
                                          p->entries[x].slot, 1.0, 0.5);
                        q->n_claims = (long)q->n_entries;
                        if (mutate(q, xs[k], m)) {
                            const int want = countable(q);
                            int done = -1;
                            if (want) {
                                both(q, 1, 7, ref, got, &done);
                                CHECK(done == 1 && same_counts(ref, got, E, 1),
                                      "mutation %d of entry %zu counted (E %d, C %ld, threads "
                                      "%d, done %d)", m, xs[k], E, q->capacity, th, done);
                            } else {
                                memset(got->kept, 0x5a, sizeof got->kept);
                                int rc = moe_metrics_scan_count(q, 1, 7, got->kept, got->mt,
                                                                &done);
                                CHECK(rc == MOE_OK && done == 0 &&
                                          got->kept[0] == kept_probe(),
                                      "mutation %d of entry %zu declined (E %d, C %ld, "
                                      "threads %d, done %d)", m, xs[k], E, q->capacity, th,
                                      done);
                            }
                        }
                        moe_plan_free(q);
                    }
                moe_plan_free(p);
            }
    moe_par_set_threads(0);
    moe_par_set_grain(0);
}

/* ---- the marks of plans in another order (moe_metrics_mark) ---- */

/* A plan of n tokens, each with up to 4 (expert, slot) pairs (dense: slots below C shared by
 * the tokens), drawn from a fixed LCG, in token order; order 1: every other run of tokens
 * reversed (so out of token order), 2: grouped by expert (expert choice's order), 3: in token
 * order but for two entries swapped at the middle token (a part boundary on two threads). */
static moe_plan *plan_marks(int n, int E, long C, int dense, int order, uint64_t seed)
{
    moe_plan *p = moe_plan_alloc(n, E, (size_t)n * 4 + 16);
    if (!p || moe_plan_reset(p, n, E, E))
        return NULL;
    p->capacity = C;
    p->dense = dense;
    uint64_t s = seed;
    for (int t = 0; t < n; t++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        const int k = (int)((s >> 33) % 5), e0 = (int)((s >> 17) % (uint64_t)E);
        for (int j = 0; j < k; j++)
            moe_plan_push(p, t, (e0 + 3 * j) % E, (int32_t)((s >> 40) % (uint64_t)C), 1.0, 0.5);
    }
    moe_entry *en = p->entries;
    const size_t m = p->n_entries;
    if (order == 1) /* runs of 7 entries reversed, every other run */
        for (size_t a = 0; a + 7 <= m; a += 14)
            for (size_t i = 0; i < 3; i++) {
                moe_entry x = en[a + i];
                en[a + i] = en[a + 6 - i];
                en[a + 6 - i] = x;
            }
    if (order == 2) { /* stable by expert: a counting sort */
        moe_entry *tmp = malloc(m * sizeof *tmp);
        size_t at = 0;
        for (int e = 0; tmp && e < E; e++)
            for (size_t i = 0; i < m; i++)
                if (en[i].expert == e)
                    tmp[at++] = en[i];
        if (tmp)
            memcpy(en, tmp, m * sizeof *tmp);
        free(tmp);
    }
    for (size_t i = m / 2; order == 3 && i + 1 < m; i++)
        if (en[i].token != en[i + 1].token) { /* the first token change past the middle */
            moe_entry x = en[i];
            en[i] = en[i + 1];
            en[i + 1] = x;
            break;
        }
    return p;
}

/* moe_metrics_mark against the serial loop written here (expected values): every mark bit,
 * slot mark and kept load equal, on 1 thread, 2, and 2 with parts however small. */
static void test_mark(void)
{
    static const struct {
        int n, E;
        long C;
        int dense;
    } shapes[] = {{5000, 16, 8, 1}, {3001, 100, 40, 1}, {4000, 64, 50, 0}, {2500, 130, 7, 1}};
    for (size_t sh = 0; sh < sizeof shapes / sizeof *shapes; sh++)
        for (int order = 0; order < 4; order++) {
            const int n = shapes[sh].n, E = shapes[sh].E, words = (E + 63) / 64;
            const long C = shapes[sh].C;
            moe_plan *p = plan_marks(n, E, C, shapes[sh].dense, order, 77 + sh);
            const size_t nb = (size_t)n * words, ec = p && p->dense ? (size_t)E * C : 0;
            uint64_t *rb = calloc(nb, 8), *gb = calloc(nb, 8);
            unsigned char *rs = calloc(ec + 1, 1), *gs = calloc(ec + 1, 1);
            long rk[256] = {0}, gk[256] = {0};
            if (!p || !rb || !gb || !rs || !gs) {
                CHECK(0, "out of memory");
                return;
            }
            for (size_t i = 0; i < p->n_entries; i++) { /* the reference */
                const moe_entry *en = &p->entries[i];
                rb[(size_t)en->token * words + en->expert / 64] |= 1ull << (en->expert % 64);
                if (ec && !rs[(size_t)en->expert * C + en->slot]++)
                    rk[en->expert]++;
            }
            for (size_t q = 0; q < ec; q++)
                rs[q] = rs[q] > 0;
            for (int mode = 0; mode < 3; mode++) {
                moe_par_set_threads(mode ? 2 : 1);
                moe_par_set_grain(mode == 2);
                memset(gb, 0, nb * 8);
                memset(gs, 0, ec + 1);
                memset(gk, 0, sizeof gk);
                CHECK_INT(moe_metrics_mark(p, gb, words, gs, gk), MOE_OK);
                CHECK(!memcmp(rb, gb, nb * 8) && !memcmp(rs, gs, ec) &&
                          !memcmp(rk, gk, sizeof rk),
                      "marks: n %d E %d C %ld dense %d order %d mode %d differ from the serial "
                      "loop", n, E, C, p->dense, order, mode);
            }
            moe_par_set_threads(0);
            moe_par_set_grain(0);
            free(rb), free(gb), free(rs), free(gs);
            moe_plan_free(p);
        }
}

int main(void)
{
    counts ref = {.mt = moe_metrics_alloc(130)}, got = {.mt = moe_metrics_alloc(130)};
    if (!ref.mt || !got.mt)
        return 1;
    test_token_order(&ref, &got);
    test_declined(&got, 12);
    test_declined(&got, 130);
    test_one_word(&ref, &got);
    test_one_word_checks(&ref, &got);
    test_mark();
    moe_metrics_free(ref.mt);
    moe_metrics_free(got.mt);
    printf("test_metrics_count: %d passed, %d failed\n", check_pass, check_fail);
    return check_fail != 0;
}
