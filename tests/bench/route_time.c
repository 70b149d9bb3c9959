/* route_time.c: CPU seconds of one routing call in a C program, the reference that
 * python/tests/bench_route.py compares moesim.route with. Times exactly the call the Python
 * package makes (moesim_route of sim/moesim_api.h, linked statically: the same router, options,
 * metrics, threads and buffers) and the free of its result, on float64 logits read from a .npy
 * file; nothing of Python (no entries copied out, no metrics read).
 *
 * Usage: route_time LOGITS.npy REPS ROUTER [key=value ...]
 * Prints "route_time: <fastest> <median>" in seconds of process CPU time over REPS runs (after
 * one run not timed). */
#include "moe.h"
#include "moesim_api.h"
#include "npy.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double cpu_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static int route_once(const moesim_route_args *a)
{
    moesim_result *res = NULL;
    int rc = moesim_route(a, &res);
    moesim_result_free(res);
    return rc;
}

int main(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: route_time LOGITS.npy REPS ROUTER [key=value ...]\n");
        return 2;
    }
    moe_npy npy;
    double *L = NULL;
    int reps = atoi(argv[2]), nopt = argc - 4;
    const char *keys[64], *vals[64];
    if (nopt > 64) {
        fprintf(stderr, "route_time: at most 64 options\n");
        return 2;
    }
    for (int i = 0; i < nopt; i++) {
        char *eq = strchr(argv[4 + i], '=');
        if (!eq) {
            fprintf(stderr, "route_time: want key=value, got %s\n", argv[4 + i]);
            return 2;
        }
        *eq = '\0';
        keys[i] = argv[4 + i];
        vals[i] = eq + 1;
    }
    if (moe_npy_read(argv[1], &npy) || moe_npy_as_double(&npy, argv[1], &L)) {
        fprintf(stderr, "route_time: error: %s\n", moe_errmsg());
        return 1;
    }
    double *ts = calloc((size_t)(reps > 0 ? reps : 1), sizeof *ts);
    if (!ts || npy.ndim != 2 || reps < 1) {
        fprintf(stderr, "route_time: want 2-d logits and REPS >= 1\n");
        return 2;
    }
    moesim_route_args a = {.router = argv[3], .logits = L, .n = (int)npy.shape[0],
                           .m = (int)npy.shape[1], .n_opts = nopt, .keys = keys, .values = vals,
                           .logits_dtype = MOESIM_F64};
    int rc = route_once(&a); /* warm-up */
    for (int i = 0; !rc && i < reps; i++) {
        double t0 = cpu_now();
        rc = route_once(&a);
        ts[i] = cpu_now() - t0;
    }
    if (rc) {
        fprintf(stderr, "route_time: error: %s\n", moesim_errmsg());
        return 1;
    }
    qsort(ts, (size_t)reps, sizeof *ts, cmp_double);
    printf("route_time: %.6f %.6f\n", ts[0], ts[reps / 2]);
    free(ts);
    free(L);
    moe_npy_free(&npy);
    return 0;
}
