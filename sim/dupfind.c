/* dupfind.c: moe_dup_find by a stable merge sort of the indices (ties keep index order), so
 * each group of equal values is a run whose first two indices are the value's first and second
 * occurrences; the run with the smallest second occurrence is the answer. */
#include "dupfind.h"

#include "moe.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    const char *base;
    size_t size;
    moe_dup_cmp cmp;
    void *ctx;
} dup_sort;

static int idx_cmp(const dup_sort *s, size_t a, size_t b)
{
    int c = s->cmp(s->base + a * s->size, s->base + b * s->size, s->ctx);
    return c ? c : (a < b ? -1 : a > b);
}

/* Bottom-up merge sort of idx (n) with tmp (n) as scratch. */
static void sort_idx(const dup_sort *s, size_t *idx, size_t *tmp, size_t n)
{
    for (size_t w = 1; w < n; w *= 2) {
        for (size_t lo = 0; lo < n; lo += 2 * w) {
            size_t mid = lo + w < n ? lo + w : n, hi = lo + 2 * w < n ? lo + 2 * w : n;
            size_t i = lo, j = mid, k = lo;
            while (i < mid && j < hi)
                tmp[k++] = idx_cmp(s, idx[i], idx[j]) <= 0 ? idx[i++] : idx[j++];
            while (i < mid)
                tmp[k++] = idx[i++];
            while (j < hi)
                tmp[k++] = idx[j++];
        }
        memcpy(idx, tmp, n * sizeof *idx);
    }
}

int moe_dup_find(const void *base, size_t n, size_t size, moe_dup_cmp cmp, void *ctx,
                 size_t *first, size_t *second)
{
    if (n < 2)
        return 0;
    size_t *idx = malloc(2 * n * sizeof *idx);
    if (!idx) {
        moe_fail(MOE_ENOMEM, NULL, "out of memory (%zu list values)", n);
        return -1;
    }
    for (size_t i = 0; i < n; i++)
        idx[i] = i;
    dup_sort s = {base, size, cmp, ctx};
    sort_idx(&s, idx, idx + n, n);
    int found = 0;
    for (size_t r = 1; r < n; r++) {
        const void *a = s.base + idx[r - 1] * size, *b = s.base + idx[r] * size;
        /* idx[r] is a second occurrence only when it starts no run: its predecessor is equal
         * and is the run's first (the run before r - 1 differs) */
        if (cmp(a, b, ctx) != 0 || (r >= 2 && cmp(s.base + idx[r - 2] * size, a, ctx) == 0))
            continue;
        if (!found || idx[r] < *second) {
            *first = idx[r - 1];
            *second = idx[r];
            found = 1;
        }
    }
    free(idx);
    return found;
}

int moe_dup_cmp_str(const void *a, const void *b, void *ctx)
{
    (void)ctx;
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

int moe_dup_cmp_long(const void *a, const void *b, void *ctx)
{
    (void)ctx;
    long x = *(const long *)a, y = *(const long *)b;
    return (x > y) - (x < y);
}

int moe_dup_cmp_u64(const void *a, const void *b, void *ctx)
{
    (void)ctx;
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}
