/* rowpass.h: a pass over chunks of rows on the routers' threads whose sums are taken in row
 * order (rowpass.c), for routers that write their plan entries while they compute each row
 * (dense, soft_moe).
 *
 * Chunks 0..nch-1 go, in increasing order, to whichever thread is free: it runs
 * work(ctx, part, ch) (part: the index of the thread, 0..np-1, for scratch of its own), waits
 * until every earlier chunk has been added and runs add(ctx, part, ch). So add sees the chunks
 * one at a time in chunk order, whatever the number of threads: sums taken there are those of
 * the serial loop over rows, bit for bit. A thread only waits for chunks that running threads
 * took, so a part run later on the caller cannot stall the others. */
#ifndef MOE_ROWPASS_H
#define MOE_ROWPASS_H

typedef void (*moe_rowpass_fn)(void *ctx, int part, long ch);

/* Runs the pass with np parts (1..MOE_PAR_MAX of par.h); add may be NULL. */
void moe_rowpass_run(long nch, int np, moe_rowpass_fn work, moe_rowpass_fn add, void *ctx);

#endif
