/* huge.c: large buffers backed by transparent huge pages (interface in huge.h). */
#include "huge.h"

#include <stdlib.h>
#include <sys/mman.h>

void *moe_huge_alloc(size_t bytes)
{
    const size_t huge = (size_t)2 << 20;
    if (bytes < huge)
        return malloc(bytes > 0 ? bytes : 1);
    if (bytes > ((size_t)-1) - huge)
        return NULL;
    bytes = (bytes + huge - 1) / huge * huge; /* aligned_alloc: a multiple of the alignment */
    void *p = aligned_alloc(huge, bytes);
#ifdef MADV_HUGEPAGE
    if (p)
        (void)madvise(p, bytes, MADV_HUGEPAGE);
#endif
    return p;
}
