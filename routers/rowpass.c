/* rowpass.c: chunks of rows on the threads, their sums in row order (interface in rowpass.h). */
#include "rowpass.h"
#include "moe.h"
#include "par.h"

#include <pthread.h>

enum { SLOTS = MOE_ROWPASS_SLOTS };

typedef struct {
    long nch;
    moe_rowpass_fn work, add;
    void *ctx;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    long next;                  /* the next chunk to take */
    long added;                 /* chunks [0, added) are added */
    int adding;                 /* a thread is adding chunks */
    int nfree;
    int free_slot[SLOTS];       /* free slots, last freed on top (still in cache) */
    int slot_of[SLOTS];         /* slot of chunk ch at [ch % SLOTS] */
    unsigned char ready[SLOTS]; /* chunk ch at [ch % SLOTS] is computed */
} rowpass_job;

/* Add the computed chunks in chunk order; called and returns with j->mu held. */
static void rowpass_add_ready(rowpass_job *j)
{
    j->adding = 1;
    while (j->added < j->nch && j->ready[j->added % SLOTS]) {
        const long ch = j->added;
        const int slot = j->slot_of[ch % SLOTS];
        pthread_mutex_unlock(&j->mu);
        if (j->add)
            j->add(j->ctx, slot, ch);
        pthread_mutex_lock(&j->mu);
        j->ready[ch % SLOTS] = 0;
        j->free_slot[j->nfree++] = slot;
        j->added = ch + 1;
        pthread_cond_broadcast(&j->cv);
    }
    j->adding = 0;
}

static void rowpass_part(void *arg, int i, int np)
{
    (void)i, (void)np;
    rowpass_job *j = arg;
    pthread_mutex_lock(&j->mu);
    for (;;) {
        while (j->next < j->nch && j->nfree == 0)
            pthread_cond_wait(&j->cv, &j->mu);
        if (j->next >= j->nch)
            break;
        const long ch = j->next++;
        const int slot = j->free_slot[--j->nfree];
        j->slot_of[ch % SLOTS] = slot;
        pthread_mutex_unlock(&j->mu);
        j->work(j->ctx, slot, ch);
        pthread_mutex_lock(&j->mu);
        j->ready[ch % SLOTS] = 1;
        if (!j->adding)
            rowpass_add_ready(j);
    }
    pthread_mutex_unlock(&j->mu);
}

int moe_rowpass_run(long nch, int np, moe_rowpass_fn work, moe_rowpass_fn add, void *ctx)
{
    rowpass_job j = {.nch = nch, .work = work, .add = add, .ctx = ctx, .nfree = SLOTS};
    for (int s = 0; s < SLOTS; s++) /* slot 0 on top */
        j.free_slot[s] = SLOTS - 1 - s;
    if (pthread_mutex_init(&j.mu, NULL))
        return moe_fail(MOE_ENOMEM, NULL, "cannot create a mutex (router rows)");
    if (pthread_cond_init(&j.cv, NULL)) {
        pthread_mutex_destroy(&j.mu);
        return moe_fail(MOE_ENOMEM, NULL, "cannot create a condition variable (router rows)");
    }
    moe_par_run(rowpass_part, &j, np < 1 ? 1 : np > MOE_PAR_MAX ? MOE_PAR_MAX : np);
    pthread_cond_destroy(&j.cv);
    pthread_mutex_destroy(&j.mu);
    return MOE_OK;
}
