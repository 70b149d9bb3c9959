/* par.c: the routers' threads (interface in par.h). Threads are created per call: a routing
 * pass is milliseconds, thread creation tens of microseconds. */
#include "par.h"

#include <pthread.h>
#include <unistd.h>

static int par_threads; /* 0 = not set: the online processors */

void moe_par_set_threads(int nt)
{
    par_threads = nt < 0 ? 0 : nt > MOE_PAR_MAX ? MOE_PAR_MAX : nt;
}

int moe_par_threads(void)
{
    if (par_threads > 0)
        return par_threads;
    long np = sysconf(_SC_NPROCESSORS_ONLN);
    return np < 1 ? 1 : np > MOE_PAR_MAX ? MOE_PAR_MAX : (int)np;
}

int moe_par_parts(long work, long grain)
{
    long p = grain > 0 ? work / grain : work;
    int nt = moe_par_threads();
    return p < 1 ? 1 : p > nt ? nt : (int)p;
}

void moe_par_range(long n, int i, int nparts, long *lo, long *hi)
{
    *lo = n * i / nparts;
    *hi = n * (i + 1) / nparts;
}

typedef struct {
    void (*fn)(void *ctx, int i, int nparts);
    void *ctx;
    int i, nparts;
} par_job;

static void *par_main(void *arg)
{
    par_job *j = arg;
    j->fn(j->ctx, j->i, j->nparts);
    return NULL;
}

void moe_par_run(void (*fn)(void *ctx, int i, int nparts), void *ctx, int nparts)
{
    pthread_t th[MOE_PAR_MAX];
    par_job job[MOE_PAR_MAX];
    int started[MOE_PAR_MAX] = {0};
    if (nparts > MOE_PAR_MAX)
        nparts = MOE_PAR_MAX;
    for (int i = 1; i < nparts; i++) {
        job[i] = (par_job){fn, ctx, i, nparts};
        started[i] = pthread_create(&th[i], NULL, par_main, &job[i]) == 0;
    }
    fn(ctx, 0, nparts);
    for (int i = 1; i < nparts; i++) {
        if (started[i])
            pthread_join(th[i], NULL);
        else
            fn(ctx, i, nparts);
    }
}
