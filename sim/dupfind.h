/* dupfind.h: the first value listed twice in an array, in O(n log n) (a sort of the indices)
 * instead of comparing every pair: lists of 10^5 seeds or capacity factors are checked at once.
 */
#ifndef MOE_DUPFIND_H
#define MOE_DUPFIND_H

#include <stddef.h>

/* cmp(a, b, ctx) < 0, 0, > 0 as a precedes, equals, follows b (pointers to elements). */
typedef int (*moe_dup_cmp)(const void *a, const void *b, void *ctx);

/* Among n elements of `size` bytes at base: the smallest index *second whose value equals an
 * earlier one, and the earliest index *first of that value (what a scan of every pair
 * j < i in order of i, then j, would report). Returns 1 when found, 0 when all values differ,
 * -1 when out of memory (moe_fail called). */
int moe_dup_find(const void *base, size_t n, size_t size, moe_dup_cmp cmp, void *ctx,
                 size_t *first, size_t *second);

/* Comparators: C strings (elements are char *), long, uint64_t. */
int moe_dup_cmp_str(const void *a, const void *b, void *ctx);
int moe_dup_cmp_long(const void *a, const void *b, void *ctx);
int moe_dup_cmp_u64(const void *a, const void *b, void *ctx);

#endif
