/* test_dupfind.c: moe_dup_find (sim/dupfind.c) against the pairwise scan it replaces (for i in
 * order, for j < i in order: the first equal pair), on hand cases and on 2000 random arrays of
 * small values (many duplicates) and of distinct values; strings, longs and uint64s. */
#include "check.h"
#include "dupfind.h"
#include "moe.h"

#include <stdint.h>
#include <string.h>

/* the definition: the first i with an earlier equal value, and the first such j */
static int brute(const long *v, size_t n, size_t *first, size_t *second)
{
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j < i; j++)
            if (v[i] == v[j]) {
                *first = j, *second = i;
                return 1;
            }
    return 0;
}

int main(void)
{
    size_t f = 99, s = 99;
    /* hand cases */
    const long a[] = {5, 3, 9, 3, 5};       /* 3 at 1 and 3 comes before 5's second at 4 */
    CHECK_INT(moe_dup_find(a, 5, sizeof *a, moe_dup_cmp_long, NULL, &f, &s), 1);
    CHECK(f == 1 && s == 3, "first duplicate of {5,3,9,3,5}: (%zu,%zu), want (1,3)", f, s);
    const long b[] = {7, 7, 7};            /* the second occurrence, not the third */
    CHECK_INT(moe_dup_find(b, 3, sizeof *b, moe_dup_cmp_long, NULL, &f, &s), 1);
    CHECK(f == 0 && s == 1, "{7,7,7}: (%zu,%zu), want (0,1)", f, s);
    const long c[] = {4, 2, 8};
    CHECK_INT(moe_dup_find(c, 3, sizeof *c, moe_dup_cmp_long, NULL, &f, &s), 0);
    CHECK_INT(moe_dup_find(c, 0, sizeof *c, moe_dup_cmp_long, NULL, &f, &s), 0);
    CHECK_INT(moe_dup_find(c, 1, sizeof *c, moe_dup_cmp_long, NULL, &f, &s), 0);
    const char *w[] = {"topk", "switch", "gshard", "switch"};
    CHECK_INT(moe_dup_find(w, 4, sizeof *w, moe_dup_cmp_str, NULL, &f, &s), 1);
    CHECK(f == 1 && s == 3, "words: (%zu,%zu), want (1,3)", f, s);
    const uint64_t u[] = {UINT64_MAX, 0, (uint64_t)INT64_MAX + 1, UINT64_MAX};
    CHECK_INT(moe_dup_find(u, 4, sizeof *u, moe_dup_cmp_u64, NULL, &f, &s), 1);
    CHECK(f == 0 && s == 3, "uint64 beyond INT64_MAX: (%zu,%zu), want (0,3)", f, s);
    /* random arrays against the definition */
    moe_pcg32 r;
    moe_pcg32_seed(&r, 20261205u, 1u);
    long v[300];
    for (int t = 0; t < 2000; t++) {
        size_t n = 1 + moe_pcg32_next(&r) % 300;
        uint32_t range = t % 2 ? 1000000u : 1 + (uint32_t)n * 2;
        for (size_t i = 0; i < n; i++)
            v[i] = (long)(moe_pcg32_next(&r) % range) - (long)range / 2;
        size_t bf = 0, bs = 0;
        int want = brute(v, n, &bf, &bs);
        int got = moe_dup_find(v, n, sizeof *v, moe_dup_cmp_long, NULL, &f, &s);
        CHECK(got == want && (!want || (f == bf && s == bs)),
              "random array %d (n = %zu): got %d (%zu,%zu), want %d (%zu,%zu)", t, n, got, f, s,
              want, bf, bs);
    }
    return check_report("test_dupfind");
}
