/* layer_time.c: the MoE layer of `moesim bench` (gate, route, dispatch, experts, combine) at
 * several token counts in one process, the counts interleaved round by round so that a load
 * change on a shared machine hits them alike. Per n and phase: the minimum and the median over
 * the rounds, in us per token, and each n's time per token over the largest n's; the process
 * CPU time per token (all threads; load inflates it less than wall time).
 * Arguments: rounds (default 15), E (16), k (2), then the token counts (default 1024 4096
 * 16384 65536). d = 512, f = 2048, cf = 1.25, GELU tanh, as the bench. Prints a checksum of
 * each output (its bits: compare two builds). LT_THREADS=N sets the BLAS threads (default: the
 * BLAS default). `make bench-layer-time` builds and runs it. */
#include "bench.h"

#include <gsl/gsl_randist.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { NMAX = 8 };

static void fill(gsl_rng *r, float *v, size_t len, double sigma)
{
    for (size_t i = 0; i < len; i++)
        v[i] = (float)gsl_ran_gaussian_ziggurat(r, sigma);
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    int rounds = argc > 1 ? atoi(argv[1]) : 15, E = argc > 2 ? atoi(argv[2]) : 16;
    int k = argc > 3 ? atoi(argv[3]) : 2, ns[NMAX] = {1024, 4096, 16384, 65536}, nn = 4;
    if (argc > 4)
        for (nn = 0; nn < NMAX && 4 + nn < argc; nn++)
            ns[nn] = atoi(argv[4 + nn]);
    size_t D = 512, F = 2048, e = (size_t)E;
    int nx = 0;
    for (int i = 0; i < nn; i++)
        nx = ns[i] > nx ? ns[i] : nx;
    bench_weights w = {E, (int)D, (int)F, NULL, NULL, NULL, NULL, NULL, {0}};
    w.wg = malloc(D * e * sizeof(float));
    w.w1 = malloc(e * D * F * sizeof(float));
    w.b1 = malloc(e * F * sizeof(float));
    w.w2 = malloc(e * F * D * sizeof(float));
    w.b2 = malloc(e * D * sizeof(float));
    float *x = malloc((size_t)nx * D * sizeof *x);
    double *v = malloc((size_t)rounds * NMAX * MOE_NPHASES * sizeof *v);
    double *cpu = malloc((size_t)rounds * NMAX * sizeof *cpu); /* process CPU s per token */
    gsl_rng *r = gsl_rng_alloc(gsl_rng_mt19937);
    if (!w.wg || !w.w1 || !w.b1 || !w.w2 || !w.b2 || !x || !v || !cpu || !r)
        return 1;
    fill(r, w.wg, D * e, 1.0 / sqrt((double)D));
    fill(r, w.w1, e * D * F, 1.0 / sqrt((double)D));
    fill(r, w.b1, e * F, 0.1);
    fill(r, w.w2, e * F * D, 1.0 / sqrt((double)F));
    fill(r, w.b2, e * D, 0.1);
    fill(r, x, (size_t)nx * D, 1.0);
    if (getenv("LT_THREADS"))
        moe_blas_set_threads(atoi(getenv("LT_THREADS")));
    w.ex = (moe_experts){E, (int)D, (int)F, MOE_ACT_GELU_TANH, w.w1, w.b1, w.w2, w.b2, NULL};
    bench_cfg cfg = {"layer_time", k == 1 ? "switch" : "topk", E, k};
    layer_point p[NMAX];
    for (int i = 0; i < nn; i++)
        if (bench_point_alloc(&cfg, &w, ns[i], 0, &p[i])) {
            fprintf(stderr, "layer_time: %s\n", moe_errmsg());
            return 1;
        }
    for (int rd = -1; rd < rounds; rd++)
        for (int i = 0; i < nn; i++) {
            moe_batch b = {ns[i], (int)D, E, x, NULL, NULL, NULL, NULL, 0, NULL, NULL};
            moe_phase_times tm;
            double t[MOE_NPHASES];
            struct timespec c0, c1;
            clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &c0);
            int rc = moe_pipeline_run_batch(p[i].pipe, &b, NULL, &tm);
            clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &c1);
            if (rd >= 0)
                cpu[(size_t)i * (size_t)rounds + (size_t)rd] =
                    ((double)(c1.tv_sec - c0.tv_sec) + 1e-9 * (double)(c1.tv_nsec - c0.tv_nsec)) /
                    ns[i];
            if (rc) {
                fprintf(stderr, "layer_time: %s\n", moe_errmsg());
                return 1;
            }
            moe_phase_times_array(&tm, t);
            for (int ph = 0; rd >= 0 && ph < MOE_NPHASES; ph++)
                v[((size_t)i * MOE_NPHASES + (size_t)ph) * (size_t)rounds + (size_t)rd] = t[ph];
        }
    double mn[NMAX][MOE_NPHASES], md[NMAX][MOE_NPHASES];
    for (int i = 0; i < nn; i++)
        for (int ph = 0; ph < MOE_NPHASES; ph++) {
            double *s = v + ((size_t)i * MOE_NPHASES + (size_t)ph) * (size_t)rounds;
            qsort(s, (size_t)rounds, sizeof *s, cmp_d);
            mn[i][ph] = s[0] / ns[i];
            md[i][ph] = s[rounds / 2] / ns[i];
        }
    printf("E=%d k=%d d=%zu f=%zu, %d rounds; us per token, min / median (ratio of the medians "
           "to the last n's)\n%7s", E, k, D, F, rounds, "n");
    for (int ph = 0; ph < MOE_NPHASES; ph++)
        printf(" %21s", ph == MOE_PHASE_TOTAL ? "layer" : moe_phase_names[ph]);
    printf("  CPU us/tok min/median  checksum\n");
    for (int i = 0; i < nn; i++) {
        printf("%7d", ns[i]);
        for (int ph = 0; ph < MOE_NPHASES; ph++)
            printf(" %6.3f/%6.3f (%5.3f)", 1e6 * mn[i][ph], 1e6 * md[i][ph],
                   md[i][ph] / md[nn - 1][ph]);
        double cs = 0;
        for (size_t j = 0; j < (size_t)ns[i] * D; j++)
            cs += p[i].y[j] * (double)(j % 7 + 1);
        double *c = cpu + (size_t)i * (size_t)rounds;
        qsort(c, (size_t)rounds, sizeof *c, cmp_d);
        printf("  %7.3f/%7.3f  %.17g\n", 1e6 * c[0], 1e6 * c[rounds / 2], cs);
    }
    for (int i = 0; i < nn; i++)
        bench_point_free(&p[i]);
    free(w.wg), free(w.w1), free(w.b1), free(w.w2), free(w.b2), free(x), free(v), free(cpu);
    gsl_rng_free(r);
    return 0;
}
