/* mem_reuse.h: keep the memory a sweep frees for its next point. Each point allocates its
 * router's workspace, plan and metric buffers afresh (gigabytes at 2^20 tokens x 256 experts);
 * returned to the system and mapped again, every 4 KB page costs a page fault on first touch,
 * which on the 2-core development VM is about 4-8 us of CPU per page (8 s for 2 GB). */
#ifndef MOE_MEM_REUSE_H
#define MOE_MEM_REUSE_H

/* From now on the C library keeps freed memory in the process for later allocations (glibc:
 * no separate mapping for large blocks, no trimming of the heap), so that buffers of the next
 * point reuse pages already mapped; the process's peak memory is unchanged, but it no longer
 * shrinks after a large point. A no-op on other C libraries. */
void moe_mem_reuse_freed(void);

/* Give the freed memory kept so far back to the system (glibc: malloc_trim), for a sweep that
 * has ended: the charts drawn after it start a gnuplot per image, and each fork copies the
 * page tables of every page the process still holds (gigabytes after a 2^20 x 256 sweep). */
void moe_mem_reuse_release(void);

#endif
