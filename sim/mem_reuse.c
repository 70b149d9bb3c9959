/* mem_reuse.c: freed memory kept for reuse (interface in mem_reuse.h). */
#include "mem_reuse.h"

#include <stdlib.h> /* defines __GLIBC__ (through features.h) on the GNU C library */
#if defined(__GLIBC__)
#include <malloc.h>
#endif

void moe_mem_reuse_freed(void)
{
#if defined(__GLIBC__)
    mallopt(M_MMAP_MAX, 0);          /* large blocks from the heap, reused after free */
    mallopt(M_TRIM_THRESHOLD, -1);   /* never give the heap's top back */
#endif
}

void moe_mem_reuse_release(void)
{
#if defined(__GLIBC__)
    malloc_trim(0);
#endif
}
