/* bigbuf.h: buffers of gigabytes in a mapping of their own, backed by transparent huge pages
 * where the kernel offers them (madvise mode).
 *
 * The first write to a fresh page costs a page fault; on the 2-core development VM about 4-17 us
 * of CPU per 4 KB page, 4-8 s for 2 GB. Backed by 2 MB pages, a buffer takes one fault per 2 MB
 * and roughly half the CPU in all for its first write (measured: 512 MB written the first time,
 * 2.0 s of CPU in 4 KB pages, 1.2-1.35 s in huge pages). The buffer is returned to the system by
 * moe_bigbuf_free (not kept by the C library for reuse): for buffers a process fills once, such
 * as the gate logits of a sweep's gate cache. */
#ifndef MOE_BIGBUF_H
#define MOE_BIGBUF_H

#include <stddef.h>

/* bytes of zeroed memory, aligned to 2 MB, or NULL when it cannot be mapped (the caller
 * reports it). bytes = 0 gives NULL. */
void *moe_bigbuf_alloc(size_t bytes);
/* Unmaps p of the size given to moe_bigbuf_alloc; NULL is a no-op. */
void moe_bigbuf_free(void *p, size_t bytes);

#endif
