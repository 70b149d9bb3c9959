/* bigbuf.c: large buffers with huge pages (bigbuf.h). */
#include "bigbuf.h"

#include <stdint.h>
#include <sys/mman.h>

enum { BIG_ALIGN = 2 << 20 }; /* the x86-64 huge page */

static size_t round_up(size_t bytes) { return (bytes + BIG_ALIGN - 1) / BIG_ALIGN * BIG_ALIGN; }

void *moe_bigbuf_alloc(size_t bytes)
{
    if (bytes == 0 || bytes > SIZE_MAX - 2 * (size_t)BIG_ALIGN)
        return NULL;
    const size_t len = round_up(bytes), map = len + BIG_ALIGN;
    char *p = mmap(NULL, map, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return NULL;
    /* keep the 2 MB-aligned len bytes inside the mapping, unmap the rest */
    char *a = (char *)(((uintptr_t)p + BIG_ALIGN - 1) & ~(uintptr_t)(BIG_ALIGN - 1));
    if (a > p)
        munmap(p, (size_t)(a - p));
    if (p + map > a + len)
        munmap(a + len, (size_t)(p + map - (a + len)));
#ifdef MADV_HUGEPAGE
    madvise(a, len, MADV_HUGEPAGE); /* advice only: without it the buffer works in 4 KB pages */
#endif
    return a;
}

void moe_bigbuf_free(void *p, size_t bytes)
{
    if (p)
        munmap(p, round_up(bytes));
}
