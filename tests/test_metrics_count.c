/* test_metrics_count.c: the one-pass count of a plan's entries (moe_metrics_scan_count,
 * sim/metrics_count.c) against the two passes it replaces for plans in token order
 * (moe_metrics_scan, then moe_metrics_count_tokens reading each token's entries), which are the
 * expected values: the same kept loads, histograms and drop rates bit for bit (memcmp), for any
 * number of threads and part boundaries; and for plans it must leave to the two passes (entries
 * out of token order, in expert order, outside (T, E, C), dense) that it says so and writes
 * nothing. */
#include "check.h"
#include "metrics_count.h"
#include "moe.h"
#include "../routers/par.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* A plan of n tokens in token order: each token 0..kmax distinct experts (0: dropped), slots
 * below C, drawn from a fixed LCG. */
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
        for (int j = 0; j < k; j++) /* distinct: e0 + j*step mod E with step coprime */
            moe_plan_push(p, t, (e0 + 5 * j) % E, (int32_t)((t + j) % C), 1.0, 0.5);
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
        long probe;
        memset(&probe, 0x5a, sizeof probe);
        CHECK(rc == MOE_OK && done == 0 && got->kept[0] == probe &&
                  got->mt->experts_per_token[0] == -7 && got->mt->groups_touched_mean == -7.0,
              "%s: declined with nothing written (threads %d, rc %d, done %d)", what, th, rc,
              done);
    }
    moe_par_set_threads(0);
    moe_par_set_grain(0);
}

static void test_declined(counts *got)
{
    moe_plan *p = plan_tokens(300, 12, 3, 40, 11);
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
    long kept[12] = {0};
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
    moe_plan *q = moe_plan_alloc(300, 12, 600);
    if (q && !moe_plan_reset(q, 300, 12, 12)) {
        q->capacity = 50;
        for (int e = 0; e < 12; e++)
            for (int c = 0; c < 40; c++)
                moe_plan_push(q, (c * 7 + e) % 300, e, c, 1.0, 1.0);
        check_declined(q, got, "expert order");
        q->dense = 1;
        check_declined(q, got, "dense plan");
    }
    moe_plan_free(q);
    moe_plan_free(p);
}

int main(void)
{
    counts ref = {.mt = moe_metrics_alloc(130)}, got = {.mt = moe_metrics_alloc(130)};
    if (!ref.mt || !got.mt)
        return 1;
    test_token_order(&ref, &got);
    test_declined(&got);
    moe_metrics_free(ref.mt);
    moe_metrics_free(got.mt);
    printf("test_metrics_count: %d passed, %d failed\n", check_pass, check_fail);
    return check_fail != 0;
}
