/* par.c: the routers' threads (interface in par.h). The parts run on a pool of threads kept
 * between calls: the routers and the metrics call moe_par_run several times per batch, and a
 * thread created and joined per call cost about 30 us (a tenth of the whole route phase of
 * 65536 tokens at E = 8). */
#include "par.h"
#include "moe.h"

#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>

static int par_threads; /* 0 = not set: the online processors */
static long par_grain;  /* > 0: replaces the callers' grains (tests) */

void moe_par_set_threads(int nt)
{
    par_threads = nt < 0 ? 0 : nt > MOE_PAR_MAX ? MOE_PAR_MAX : nt;
}

/* The online processors, asked once per process: sysconf reads them from a file in /sys
 * (an open, a read and a close), 13 us a call on the virtual machine measured, and a route of
 * switch at 65536 x 8 (1.2 ms there) asked four times. */
static atomic_int par_online;

int moe_par_threads(void)
{
    if (par_threads > 0)
        return par_threads;
    int nt = atomic_load_explicit(&par_online, memory_order_relaxed);
    if (nt == 0) {
        const long np = sysconf(_SC_NPROCESSORS_ONLN);
        nt = np < 1 ? 1 : np > MOE_PAR_MAX ? MOE_PAR_MAX : (int)np;
        atomic_store_explicit(&par_online, nt, memory_order_relaxed);
    }
    return nt;
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

/* ---- the pool ----
 * Worker w (1 <= w < MOE_PAR_MAX) runs part w of each job whose nparts exceeds w. A job is
 * published under the lock with a new generation number; the workers wait for it on a
 * condition variable (after a short spin: the routers call moe_par_run several times in a row)
 * and the caller, having run part 0, waits until every worker part has finished. One job at a
 * time: a call made while the pool runs a job (from a part, or from another thread) creates
 * its own threads as before. After fork() the child starts without workers. */

enum { PAR_SPIN = 50 }; /* polls of the generation before a worker sleeps */

typedef struct {
    void (*fn)(void *ctx, int i, int nparts);
    void *ctx;
    int i, nparts;
} par_job;

/* Between two polls: let another thread run (a loaded machine), else go on at once. */
static inline void par_pause(void) { sched_yield(); }

static struct {
    pthread_mutex_t mu;
    pthread_cond_t go, done;
    atomic_int busy;             /* a job is running on the pool */
    atomic_ulong gen;            /* the current job's number */
    int nworkers;                /* workers 1..nworkers exist */
    unsigned long born[MOE_PAR_MAX]; /* the job number when worker w was created */
    atomic_int pending;          /* worker parts of the current job not finished */
    par_job job;
} par_pool = {.mu = PTHREAD_MUTEX_INITIALIZER, .go = PTHREAD_COND_INITIALIZER,
              .done = PTHREAD_COND_INITIALIZER};

static void *par_worker(void *arg)
{
    const int w = (int)(intptr_t)arg;
    pthread_mutex_lock(&par_pool.mu);
    unsigned long seen = par_pool.born[w]; /* the job number before the one it was made for */
    pthread_mutex_unlock(&par_pool.mu);
    for (;;) {
        for (int s = 0; s < PAR_SPIN && atomic_load_explicit(&par_pool.gen,
                                                             memory_order_acquire) == seen; s++)
            par_pause();
        pthread_mutex_lock(&par_pool.mu);
        while (atomic_load(&par_pool.gen) == seen)
            pthread_cond_wait(&par_pool.go, &par_pool.mu);
        seen = atomic_load(&par_pool.gen);
        const par_job job = par_pool.job;
        pthread_mutex_unlock(&par_pool.mu);
        if (w >= job.nparts)
            continue;
        job.fn(job.ctx, w, job.nparts);
        if (atomic_fetch_sub(&par_pool.pending, 1) == 1) { /* the last part: wake the caller */
            pthread_mutex_lock(&par_pool.mu);
            pthread_cond_signal(&par_pool.done);
            pthread_mutex_unlock(&par_pool.mu);
        }
    }
    return NULL;
}

/* In the child of fork(): no workers (they were not copied), a free pool. */
static void par_atfork_child(void)
{
    pthread_mutex_init(&par_pool.mu, NULL);
    pthread_cond_init(&par_pool.go, NULL);
    pthread_cond_init(&par_pool.done, NULL);
    par_pool.nworkers = 0;
    atomic_store(&par_pool.pending, 0);
    atomic_store(&par_pool.busy, 0);
}

static pthread_once_t par_once = PTHREAD_ONCE_INIT;
static void par_init(void) { pthread_atfork(NULL, NULL, par_atfork_child); }

/* Workers 1..nparts-1 started (with the lock held); returns how many exist. */
static int par_grow(int nparts)
{
    while (par_pool.nworkers < nparts - 1) {
        pthread_t th;
        pthread_attr_t at;
        int ok = pthread_attr_init(&at) == 0;
        par_pool.born[par_pool.nworkers + 1] = atomic_load(&par_pool.gen);
        ok = ok && pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED) == 0 &&
             pthread_create(&th, &at, par_worker, (void *)(intptr_t)(par_pool.nworkers + 1)) == 0;
        pthread_attr_destroy(&at);
        if (!ok)
            break;
        par_pool.nworkers++;
    }
    return par_pool.nworkers;
}

static void *par_main(void *arg)
{
    par_job *j = arg;
    j->fn(j->ctx, j->i, j->nparts);
    return NULL;
}

/* moe_par_run with threads of its own (the pool is busy). */
static void par_run_own(void (*fn)(void *ctx, int i, int nparts), void *ctx, int nparts)
{
    pthread_t th[MOE_PAR_MAX];
    par_job job[MOE_PAR_MAX];
    int started[MOE_PAR_MAX] = {0};
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

void moe_par_run(void (*fn)(void *ctx, int i, int nparts), void *ctx, int nparts)
{
    if (nparts > MOE_PAR_MAX)
        nparts = MOE_PAR_MAX;
    if (nparts <= 1) {
        fn(ctx, 0, 1);
        return;
    }
    pthread_once(&par_once, par_init);
    int idle = 0;
    if (!atomic_compare_exchange_strong(&par_pool.busy, &idle, 1)) {
        par_run_own(fn, ctx, nparts);
        return;
    }
    pthread_mutex_lock(&par_pool.mu);
    const int nw = par_grow(nparts); /* parts above nw + 1 run on the caller */
    const int on_pool = nparts - 1 < nw ? nparts - 1 : nw;
    par_pool.job = (par_job){fn, ctx, 0, nparts};
    atomic_store(&par_pool.pending, on_pool);
    atomic_fetch_add_explicit(&par_pool.gen, 1, memory_order_release);
    pthread_cond_broadcast(&par_pool.go);
    pthread_mutex_unlock(&par_pool.mu);
    fn(ctx, 0, nparts);
    for (int i = on_pool + 1; i < nparts; i++)
        fn(ctx, i, nparts);
    for (int s = 0; s < PAR_SPIN && atomic_load(&par_pool.pending) > 0; s++)
        par_pause();
    pthread_mutex_lock(&par_pool.mu);
    while (atomic_load(&par_pool.pending) > 0)
        pthread_cond_wait(&par_pool.done, &par_pool.mu);
    pthread_mutex_unlock(&par_pool.mu);
    atomic_store(&par_pool.busy, 0);
}

/* ---- the distance between the threads ---- */

#define RT_WARM 0.02 /* seconds of untimed trips before the timed ones */

typedef struct {
    _Alignas(64) _Atomic long flag; /* 1: part 1 is there; then 2i + 2 from part 0, 2i + 3 back;
                                     * -1: part 0 is done or gave up */
    long trips;
    double ns;
} rt_job;

/* Waits until j->flag is want (1) or -1 (0), giving up (0) once moe_now() passes deadline;
 * every 4096 polls it also yields the processor, so that on a machine with more running
 * threads than processors the other part gets to answer (a trip then takes a time slice). */
static int rt_wait(rt_job *j, long want, double deadline)
{
    for (unsigned spin = 1;; spin++) {
        const long f = atomic_load_explicit(&j->flag, memory_order_acquire);
        if (f == want)
            return 1;
        if (f == -1)
            return 0;
        if ((spin & 4095) == 0) {
            if (moe_now() > deadline)
                return 0;
            sched_yield();
        }
    }
}

static void rt_part(void *ctx, int i, int np)
{
    (void)np;
    rt_job *j = ctx;
    const double start = moe_now(), deadline = start + 1.0 + RT_WARM + 0.01 * (double)j->trips;
    if (i == 1) { /* answers trip t (2t + 2) with 2t + 3 until part 0 ends the game (-1) */
        long zero = 0;
        if (!atomic_compare_exchange_strong(&j->flag, &zero, 1))
            return; /* part 0 gave up (this part ran after it, on the caller) */
        for (long t = 0; rt_wait(j, 2 * t + 2, deadline); t++)
            atomic_store_explicit(&j->flag, 2 * t + 3, memory_order_release);
        return;
    }
    if (i != 0)
        return;
    if (!rt_wait(j, 1, start + 1.0)) {
        atomic_store(&j->flag, -1);
        return;
    }
    /* trips untimed for RT_WARM seconds first: a worker that has slept may wake on the caller's
     * processor, and the two then take turns on it (microseconds a trip) until the system
     * moves one of them */
    const double t_start = moe_now();
    double t0 = 0.0;
    long t = 0, timed = -1;
    for (;; t++) {
        if (timed < 0 && moe_now() - t_start >= RT_WARM) {
            timed = t;
            t0 = moe_now();
        }
        if (timed >= 0 && t - timed == j->trips)
            break;
        atomic_store_explicit(&j->flag, 2 * t + 2, memory_order_release);
        if (!rt_wait(j, 2 * t + 3, deadline + (t_start - start)))
            break;
    }
    if (timed >= 0 && t - timed == j->trips)
        j->ns = (moe_now() - t0) / (double)j->trips * 1e9;
    atomic_store(&j->flag, -1);
}

double moe_par_round_trip_ns(long trips)
{
    rt_job j;
    atomic_init(&j.flag, 0);
    j.trips = trips > 0 ? trips : 1;
    j.ns = NAN;
    if (moe_par_threads() >= 2)
        moe_par_run(rt_part, &j, 2);
    return j.ns;
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
    *sum = moe_sum_sq(0.0, j.lse, n);
    free(j.lse);
    return MOE_OK;
}
