/* gate_time.c: time moe_gate_logits (sim/gate.c) on random float inputs, best of R runs, for
 * n = 8192, d = 512 and E = 8, 16, 64, 256 (the shapes of `moesim bench`), 1 and 2 threads.
 * Optional arguments: n, d, one E only. Prints ms per call and the multiply-add rate; `make bench-gate` builds and runs it. */
#include "gate.h"

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int main(int argc, char **argv)
{
    size_t n = argc > 1 ? (size_t)atol(argv[1]) : 8192, d = argc > 2 ? (size_t)atol(argv[2]) : 512;
    const size_t ms[] = {8, 16, 64, 256};
    float *x = malloc(n * d * sizeof *x), *wg = malloc(d * 256 * sizeof *wg);
    double *lg = malloc(n * 256 * sizeof *lg);
    if (!x || !wg || !lg)
        return 1;
    unsigned s = 12345u;
    for (size_t i = 0; i < n * d; i++)
        s = s * 1103515245u + 12345u, x[i] = (float)((int)(s >> 8) % 2001 - 1000) / 997.0f;
    for (size_t i = 0; i < d * 256; i++)
        s = s * 1103515245u + 12345u, wg[i] = (float)((int)(s >> 8) % 2001 - 1000) / 31000.0f;
    size_t only_m = argc > 3 ? (size_t)atol(argv[3]) : 0;
    for (size_t mi = 0; mi < sizeof ms / sizeof *ms; mi++)
        for (int th = 1; th <= 2; th++) {
            if (only_m && ms[mi] != only_m)
                continue;
            double best = 1e30;
            for (int rep = 0; rep < 5; rep++) {
                double t0 = now_s();
                moe_gate_logits(x, n, d, wg, ms[mi], lg, th);
                double t = now_s() - t0;
                best = t < best ? t : best;
            }
            double sum = 0;
            for (size_t i = 0; i < n * ms[mi]; i++)
                sum += lg[i];
            printf("n=%zu d=%zu E=%3zu threads=%d: %8.3f ms  %6.2f Gmadd/s  (checksum %.17g)\n",
                   n, d, ms[mi], th, 1e3 * best, (double)(n * d * ms[mi]) / best * 1e-9, sum);
        }
    free(x), free(wg), free(lg);
    return 0;
}
