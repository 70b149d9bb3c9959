/* rowpass.h: a pass over chunks of rows on the routers' threads whose sums are taken in row
 * order (rowpass.c), for routers that write their plan entries while they compute each row
 * (dense, soft_moe).
 *
 * Chunks 0..nch-1 go, in increasing order, to whichever thread is free: it runs
 * work(ctx, slot, ch) into one of MOE_ROWPASS_SLOTS chunk slots (slot: 0..MOE_ROWPASS_SLOTS-1,
 * the caller's scratch for one chunk), and add(ctx, slot, ch) runs for the chunks in chunk
 * order, one at a time, by whichever thread finds the next chunk computed; its slot is free
 * again after that. Sums taken in add are those of the serial loop over rows, bit for bit,
 * whatever the number of threads. A thread waits only when every slot holds a chunk not yet
 * added (the oldest being computed by a thread the system has paused), so a loaded machine
 * does not make the threads take turns chunk by chunk. */
#ifndef MOE_ROWPASS_H
#define MOE_ROWPASS_H

enum { MOE_ROWPASS_SLOTS = 16 };

typedef void (*moe_rowpass_fn)(void *ctx, int slot, long ch);

/* Runs the pass with np threads (1..MOE_PAR_MAX of par.h); add may be NULL. MOE_OK, or
 * MOE_ENOMEM when the pass's lock cannot be created. */
int moe_rowpass_run(long nch, int np, moe_rowpass_fn work, moe_rowpass_fn add, void *ctx);

#endif
