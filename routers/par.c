/* par.c: the routers' threads (interface in par.h). Threads are created per call: a routing
 * pass is milliseconds, thread creation tens of microseconds. */
#include "par.h"
#include "moe.h"

#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>

static int par_threads; /* 0 = not set: the online processors */
static long par_grain;  /* > 0: replaces the callers' grains (tests) */

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

void moe_par_set_grain(long g)
{
    par_grain = g > 0 ? g : 0;
}

int moe_par_parts(long work, long grain)
{
    if (par_grain > 0)
        grain = par_grain;
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

typedef struct {
    const double *x;
    int n, M;
    double *lse;
} lse_job;

static void lse_part(void *ctx, int i, int np)
{
    lse_job *j = ctx;
    long lo, hi;
    moe_par_range(j->n, i, np, &lo, &hi);
    for (long t = lo; t < hi; t++)
        j->lse[t] = moe_logsumexp(j->x + (size_t)t * j->M, j->M);
}

int moe_par_sum_lse_sq(const double *x, int n, int M, double *sum)
{
    lse_job j = {x, n, M, malloc((size_t)(n > 0 ? n : 1) * sizeof(double))};
    if (!j.lse)
        return moe_fail(MOE_ENOMEM, NULL, "out of memory (logsumexp of %d rows)", n);
    moe_par_run(lse_part, &j, moe_par_parts((long)n * M, 16384));
    double z = 0.0;
    for (int t = 0; t < n; t++)
        z += j.lse[t] * j.lse[t];
    free(j.lse);
    *sum = z;
    return MOE_OK;
}
