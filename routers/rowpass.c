/* rowpass.c: chunks of rows on the threads, their sums in row order (interface in rowpass.h). */
#include "rowpass.h"
#include "par.h"

#include <sched.h>
#include <stdatomic.h>

typedef struct {
    long nch;
    moe_rowpass_fn work, add;
    void *ctx;
    atomic_long next; /* the next chunk to take */
    atomic_long done; /* chunks [0, done) are added */
} rowpass_job;

static void rowpass_part(void *arg, int part, int np)
{
    (void)np;
    rowpass_job *j = arg;
    for (long ch; (ch = atomic_fetch_add(&j->next, 1)) < j->nch;) {
        j->work(j->ctx, part, ch);
        for (int spin = 0; atomic_load_explicit(&j->done, memory_order_acquire) != ch; spin++)
            if (spin >= 64)
                sched_yield();
        if (j->add)
            j->add(j->ctx, part, ch);
        atomic_store_explicit(&j->done, ch + 1, memory_order_release);
    }
}

void moe_rowpass_run(long nch, int np, moe_rowpass_fn work, moe_rowpass_fn add, void *ctx)
{
    rowpass_job j = {.nch = nch, .work = work, .add = add, .ctx = ctx};
    atomic_init(&j.next, 0);
    atomic_init(&j.done, 0);
    moe_par_run(rowpass_part, &j, np < 1 ? 1 : np > MOE_PAR_MAX ? MOE_PAR_MAX : np);
}
