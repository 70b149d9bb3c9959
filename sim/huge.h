/* huge.h: large buffers backed by transparent huge pages (huge.c). A buffer written once per
 * routing pass at 2^20 tokens (a plan's entries, a router's claims) is gigabytes of fresh
 * pages; with 4 KiB pages every first touch is a page fault (4-17 us each on a virtual
 * machine), with 2 MiB pages one fault covers 512 of them. */
#ifndef MOE_HUGE_H
#define MOE_HUGE_H

#include <stddef.h>

/* bytes of memory (free it with free()): from 2 MiB on, aligned to 2 MiB, rounded up to a
 * multiple of it and marked for transparent huge pages (advice only: the system may still use
 * 4 KiB pages); smaller sizes as malloc. NULL when out of memory. */
void *moe_huge_alloc(size_t bytes);

#endif
