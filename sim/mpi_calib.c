/* mpi_calib.c: `moesim calibrate` (mpi_calib.h), the loopback calibration of the cluster
 * model on the ranks of an MPI job, and its least-squares fits.
 *
 * The benchmarks move floats, like the expert-parallel layer. Every timed repeat starts after
 * an MPI_Barrier; the ping-pong times ranks 0 and 1 only (the others wait in the barrier), the
 * all-to-all and the local work keep the slowest rank's time of each repeat (an MPI_Allreduce
 * after the timed work), as a phase ends when its slowest rank ends. Every fit goes through the
 * first quartile of the repeats (CALIB_Q). Rank 0 prints and writes. */
#include "mpi_calib.h"
#include "mpi_internal.h"

#include <gsl/gsl_fit.h>
#include <gsl/gsl_multifit.h>
#include <gsl/gsl_sort.h>
#include <gsl/gsl_statistics_double.h>

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Weights 1/y^2 of finite y > 0, or MOE_EINVAL naming the bad point. */
static int rel_weights(const double *x, const double *y, size_t n, double *w, const char *fn)
{
    for (size_t i = 0; i < n; i++) {
        if (!(y[i] > 0) || !isfinite(y[i]) || !isfinite(x[i]))
            return moe_fail(MOE_EINVAL, NULL, "time %g at size %g: times must be finite and "
                            "> 0 (%s)", y[i], x[i], fn);
        w[i] = 1.0 / (y[i] * y[i]);
    }
    return MOE_OK;
}

int moe_calib_fit(const double *x, const double *y, size_t n, double *c0, double *c1,
                  double *rel_rms)
{
    if (n < 2)
        return moe_fail(MOE_EINVAL, NULL, "a line needs at least 2 sizes, got %zu "
                        "(moe_calib_fit)", n);
    double *w = malloc(n * sizeof *w);
    if (!w)
        return moe_fail(MOE_ENOMEM, NULL, "out of memory (moe_calib_fit)");
    int distinct = 0;
    if (rel_weights(x, y, n, w, "moe_calib_fit")) {
        free(w);
        return MOE_EINVAL;
    }
    for (size_t i = 0; i < n; i++)
        distinct |= x[i] != x[0];
    if (!distinct) {
        free(w);
        return moe_fail(MOE_EINVAL, NULL, "every size is %g: no line (moe_calib_fit)", x[0]);
    }
    double cov00, cov01, cov11, chisq;
    gsl_fit_wlinear(x, 1, w, 1, y, 1, n, c0, c1, &cov00, &cov01, &cov11, &chisq);
    free(w);
    double s = 0;
    for (size_t i = 0; i < n; i++) {
        double r = (*c0 + *c1 * x[i] - y[i]) / y[i];
        s += r * r;
    }
    *rel_rms = sqrt(s / (double)n);
    return MOE_OK;
}

int moe_calib_fit_pack(const double *rows, const double *bytes, const double *y, size_t n,
                       double c[3], double *rel_rms)
{
    if (n < 3)
        return moe_fail(MOE_EINVAL, NULL, "a plane needs at least 3 points, got %zu "
                        "(moe_calib_fit_pack)", n);
    gsl_matrix *X = gsl_matrix_alloc(n, 3), *cov = gsl_matrix_alloc(3, 3);
    gsl_vector *w = gsl_vector_alloc(n), *cv = gsl_vector_alloc(3);
    gsl_multifit_linear_workspace *ws = gsl_multifit_linear_alloc(n, 3);
    int rc = !X || !cov || !w || !cv || !ws ? moe_fail(MOE_ENOMEM, NULL, "out of memory "
                                                      "(moe_calib_fit_pack)") : MOE_OK;
    if (!rc)
        rc = rel_weights(bytes, y, n, w->data, "moe_calib_fit_pack");
    size_t rank = 0;
    double chisq;
    if (!rc) {
        for (size_t i = 0; i < n; i++) {
            gsl_matrix_set(X, i, 0, 1.0);
            gsl_matrix_set(X, i, 1, rows[i]);
            gsl_matrix_set(X, i, 2, bytes[i]);
        }
        gsl_vector_const_view yv = gsl_vector_const_view_array(y, n);
        gsl_multifit_wlinear_tsvd(X, w, &yv.vector, 1e-12, cv, cov, &chisq, &rank, ws);
        if (rank < 3)
            rc = moe_fail(MOE_EINVAL, NULL, "the points do not determine the plane (rank %zu) "
                          "(moe_calib_fit_pack)", rank);
    }
    if (!rc) {
        double s = 0;
        for (size_t i = 0; i < 3; i++)
            c[i] = gsl_vector_get(cv, i);
        for (size_t i = 0; i < n; i++) {
            double r = (c[0] + c[1] * rows[i] + c[2] * bytes[i] - y[i]) / y[i];
            s += r * r;
        }
        *rel_rms = sqrt(s / (double)n);
    }
    gsl_matrix_free(X);
    gsl_matrix_free(cov);
    gsl_vector_free(w);
    gsl_vector_free(cv);
    gsl_multifit_linear_free(ws);
    return rc;
}

typedef struct {
    long ranks, repeats, max_bytes;
    const char *out, *name;
} calib_args;

static int parse_long(const char *flag, const char *v, long lo, long hi, long *out)
{
    char *end;
    errno = 0;
    long x = v ? strtol(v, &end, 10) : 0;
    if (!v || errno || end == v || *end || x < lo || x > hi)
        return moe_fail(MOE_EINVAL, "moesim calibrate --help", "%s needs an integer in "
                        "[%ld, %ld], got '%s' (command line)", flag, lo, hi, v ? v : "");
    *out = x;
    return MOE_OK;
}

static int parse_args(int argc, char **argv, calib_args *a, int *help)
{
    *a = (calib_args){0, 30, 1L << 20, NULL, "loopback"};
    for (int i = 1; i < argc; i++) {
        const char *f = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        int rc = MOE_OK;
        if (!strcmp(f, "--help") || !strcmp(f, "-h")) {
            *help = 1;
            return MOE_OK;
        } else if (!strcmp(f, "--ranks"))
            rc = parse_long(f, v, 2, 1L << 20, &a->ranks);
        else if (!strcmp(f, "--repeats"))
            rc = parse_long(f, v, 3, 100000, &a->repeats);
        else if (!strcmp(f, "--max-bytes"))
            rc = parse_long(f, v, 64, 1L << 28, &a->max_bytes);
        else if (!strcmp(f, "--out") && v)
            a->out = v;
        else if (!strcmp(f, "--name") && v && *v && strspn(v, "abcdefghijklmnopqrstuvwxyz"
                 "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-") == strlen(v) && strlen(v) < 60)
            a->name = v;
        else
            return moe_fail(MOE_EINVAL, "moesim calibrate --help", "bad argument '%s'%s "
                            "(command line)", f, v || strcmp(f, "--out") ? "" : ": needs a "
                            "value");
        if (rc)
            return rc;
        i++;
    }
    return MOE_OK;
}

static void usage(void)
{
    printf("usage: mpirun -np P moesim calibrate [--ranks P] [--out FILE] [--name NAME]\n"
           "                                   [--repeats N] [--max-bytes B]\n\n"
           "Loopback calibration of the cluster model (docs/cluster.md): a ping-pong between\n"
           "ranks 0 and 1 and an all-to-all over the P ranks, message sizes from 16 bytes to\n"
           "B per peer (default 1048576) in steps of 4x, interleaved, N timed repeats each\n"
           "(default 30, the first quartile kept), and the expert-parallel layer's local work\n"
           "of each phase on every rank (its own code on a benchmark plan, 16 to 1024 claims\n"
           "per rank, rows of 16 to 1024 floats), with cold caches and again warm. Fits alpha\n"
           "(latency per message) and beta (bandwidth), and the dispatch's and the combine's\n"
           "local work (latency, time per row, rate; cold and warm) by weighted least squares,\n"
           "each again on thirds of the repeats (the spread), and prints a [cluster.NAME]\n"
           "section (default loopback) with those constants, the last cache level (cache_mb)\n"
           "and this machine's processors (cores); --out FILE writes it.\n"
           "--ranks P: fail unless the job has P ranks.\n");
}

#ifdef MOESIM_MPI
/* The statistic of a benchmark's repeats that every fit uses: their first quartile. Other
 * processes on the same cores only ever add time to a repeat (a preemption, a late wake-up), so
 * a low quantile is the machine's own cost; the first quartile, unlike the minimum, does not
 * depend on the number of repeats and needs a quarter of them undisturbed. tests/t_calib.sh
 * takes the measured times of a run the same way. */
#define CALIB_Q 0.25

/* The q-quantile of t[r0..r1), sorted into s (scratch, r1 - r0). */
static double quantile(const double *t, size_t r0, size_t r1, double q, double *s)
{
    memcpy(s, t + r0, (r1 - r0) * sizeof *s);
    gsl_sort(s, 1, r1 - r0);
    return gsl_stats_quantile_from_sorted_data(s, 1, r1 - r0, q);
}

/* Half the round trip of m bytes between ranks 0 and 1, after a barrier (rank 0's clock). */
static double pingpong_once(float *buf, size_t m)
{
    const int me = moe_mpi_g.rank, n = (int)(m / sizeof(float));
    MPI_Comm c = moe_mpi_g.comm;
    MPI_Barrier(c);
    double t0 = MPI_Wtime();
    if (me == 0) {
        MPI_Send(buf, n, MPI_FLOAT, 1, 7, c);
        MPI_Recv(buf, n, MPI_FLOAT, 1, 7, c, MPI_STATUS_IGNORE);
    } else if (me == 1) {
        MPI_Recv(buf, n, MPI_FLOAT, 0, 7, c, MPI_STATUS_IGNORE);
        MPI_Send(buf, n, MPI_FLOAT, 0, 7, c);
    }
    return (MPI_Wtime() - t0) / 2.0;
}

/* The all-to-all of m bytes to every other rank (nothing to itself) after a barrier, the
 * slowest rank's time. */
static double alltoall_once(float *sbuf, float *rbuf, size_t m, int *cnt, int *dsp)
{
    const int P = moe_mpi_g.size, me = moe_mpi_g.rank, n = (int)(m / sizeof(float));
    for (int q = 0; q < P; q++) {
        cnt[q] = q == me ? 0 : n;
        dsp[q] = q * n;
    }
    MPI_Barrier(moe_mpi_g.comm);
    double t0 = MPI_Wtime();
    MPI_Alltoallv(sbuf, cnt, dsp, MPI_FLOAT, rbuf, cnt, dsp, MPI_FLOAT, moe_mpi_g.comm);
    double dt = MPI_Wtime() - t0, slowest = 0;
    MPI_Allreduce(&dt, &slowest, 1, MPI_DOUBLE, MPI_MAX, moe_mpi_g.comm);
    return slowest;
}

/* The benchmark's plan: T tokens in token order, two claims each, on experts 3t mod E and
 * (3t + E/2) mod E, slots numbered per expert in plan order, weights 0.5; the capacity is the
 * largest slot count. */
static int pack_plan(moe_plan *p, int T, int E)
{
    int rc = moe_plan_reset(p, T, E, E);
    long *cnt = calloc((size_t)E, sizeof *cnt), C = 0;
    if (!cnt)
        return moe_fail(MOE_ENOMEM, NULL, "out of memory (moesim calibrate)");
    for (int t = 0; !rc && t < T; t++)
        for (int j = 0; !rc && j < 2; j++) {
            const int e = (int)((3L * t + (long)j * (E / 2)) % E);
            rc = moe_plan_push(p, t, e, (int32_t)cnt[e]++, 0.5, 0.5);
        }
    for (int e = 0; e < E; e++)
        C = cnt[e] > C ? cnt[e] : C;
    p->capacity = C;
    free(cnt);
    return rc;
}

/* Bytes of the last cache level this process's first processor sees: the highest level in
 * /sys/devices/system/cpu/cpu0/cache (Linux: the slice a processor shares, 32 MiB on a chiplet
 * where sysconf can report all of the package's), else sysconf's L3, else L2, else 1 MiB. */
static size_t llc_bytes(void)
{
    long best = 0, level = 0;
    for (int i = 0; i < 16; i++) {
        char path[96], buf[32];
        long lv = 0, kb = 0;
        snprintf(path, sizeof path, "/sys/devices/system/cpu/cpu0/cache/index%d/level", i);
        FILE *f = fopen(path, "r");
        if (!f)
            continue;
        if (fgets(buf, sizeof buf, f))
            lv = strtol(buf, NULL, 10);
        fclose(f);
        snprintf(path, sizeof path, "/sys/devices/system/cpu/cpu0/cache/index%d/size", i);
        if (!(f = fopen(path, "r")))
            continue;
        if (fgets(buf, sizeof buf, f)) {
            char *end;
            kb = strtol(buf, &end, 10);
            kb *= *end == 'M' ? 1024 : *end == 'K' ? 1 : 0;
        }
        fclose(f);
        if (lv > level && kb > 0) {
            level = lv;
            best = kb * 1024;
        }
    }
    if (best <= 0)
        best = sysconf(_SC_LEVEL3_CACHE_SIZE);
    if (best <= 0)
        best = sysconf(_SC_LEVEL2_CACHE_SIZE);
    return (size_t)(best > 0 ? best : 1L << 20);
}

/* Bytes of other work before each timed repeat of the local work where moe_ep_flush cannot
 * flush the layer's lines: twice the last cache level. */
static size_t evict_bytes(void)
{
    return 2 * llc_bytes();
}

/* Write every cache line of buf (n bytes); returns a value that depends on them. */
static unsigned char evict(unsigned char *buf, size_t n, unsigned char v)
{
    unsigned char acc = v;
    for (size_t i = 0; i < n; i += 64) {
        acc = (unsigned char)(acc + buf[i]);
        buf[i] = acc;
    }
    return acc;
}

/* One phase of the expert-parallel layer's local work on every rank at once, run by the layer's
 * own code (moe_ep_local_work) on the plan of pack_plan with n claims per rank (T = n P / 2
 * tokens) and rows of H floats: the dispatch indexes the batch's claims, packs this rank's
 * rows and plans the rows it receives; the combine adds the rows back into its tokens' outputs.
 * With cold, each repeat starts cold, as a forward does after the rest of the step (the
 * routing, the experts, the other layers): the lines the work touches are flushed from every
 * cache level (moe_ep_flush), or evict_bytes of other work is done where they cannot be;
 * without, each repeat finds the last one's lines (a step whose data all stay in the cache).
 * td[r], tc[r]: the slowest rank's dispatch and combine work in repeat r (repeats), each rank
 * on its own clock. Fails on every rank together. */
static int time_pack(size_t n, size_t H, long repeats, int cold, double *td, double *tc)
{
    const int P = moe_mpi_g.size, T = (int)(n / 2) * P, E = P > 8 ? P : 8;
    int bad = 0;
    float *x = moe_mpi_xcalloc((size_t)T * H, sizeof(float), &bad);
    float *y = moe_mpi_xcalloc((size_t)T * H, sizeof(float), &bad);
    const size_t nev = evict_bytes();
    unsigned char *ev = NULL, acc = 0;
    moe_plan *plan = moe_plan_alloc(T, E, 2 * (size_t)T);
    moe_ep *ep = NULL;
    int rc = bad || !plan ? moe_fail(MOE_ENOMEM, NULL, "out of memory (moesim calibrate)")
                          : pack_plan(plan, T, E);
    if (!rc && !(ep = moe_ep_alloc(T, E, plan->capacity, (int)H, 1, MOE_ACT_RELU,
                                   plan->n_entries, 0)))
        rc = MOE_ENOMEM;
    for (size_t i = 0; !rc && i < (size_t)T * H; i++)
        x[i] = (float)(i % 13) * 0.125f - 0.75f;
    int all = rc;
    MPI_Allreduce(&rc, &all, 1, MPI_INT, MPI_MAX, moe_mpi_g.comm);
    for (long r = -2; !all && r < repeats; r++) {
        double dt[3] = {0, 0, 0}, slowest[3], low[3];
        if (cold && !moe_ep_flush(ep, plan, x, y) &&
            (ev || (ev = moe_mpi_xcalloc(nev, 1, &bad))))
            acc = evict(ev, nev, acc);
        MPI_Barrier(moe_mpi_g.comm);
        rc = moe_ep_local_work(ep, plan, x, y, &dt[0], &dt[1]);
        dt[2] = rc ? -1.0 : 0.0;
        MPI_Allreduce(dt, slowest, 3, MPI_DOUBLE, MPI_MAX, moe_mpi_g.comm);
        MPI_Allreduce(dt, low, 3, MPI_DOUBLE, MPI_MIN, moe_mpi_g.comm);
        if (low[2] < 0)
            all = rc ? rc : MOE_EINVAL;
        else if (r >= 0) {
            td[r] = slowest[0] + 0.0 * (double)acc; /* acc keeps the eviction's work */
            tc[r] = slowest[1];
        }
    }
    moe_ep_free(ep);
    moe_plan_free(plan);
    free(x);
    free(y);
    free(ev);
    return all;
}

#define PACK_N 4 /* claims 16, 64, 256, 1024 by row widths 16, 64, 256, 1024 floats */
#define NPACK (PACK_N * PACK_N)
#define NBLOCKS 3 /* the spread: each fit again on three consecutive thirds of the repeats */

/* The statistic (CALIB_Q) per point of times tm (npt points x R repeats), over repeats
 * [r0, r1), into y (npt); s scratch (R). */
static void stat_rows(const double *tm, size_t npt, size_t R, size_t r0, size_t r1, double *y,
                      double *s)
{
    for (size_t i = 0; i < npt; i++)
        y[i] = quantile(tm + i * R, r0, r1, CALIB_Q, s);
}

/* Rank 0: the plane through the statistic of the repeats tm (NPACK x R) over [r0, r1) into c
 * (latency s, s per row, s per byte; a negative term kept as fitted); y (NPACK), s (R) scratch. */
static int fit_plane_block(const double *tm, size_t R, size_t r0, size_t r1, const double *rows,
                           const double *bytes, double *y, double *s, double c[3], double *rms)
{
    stat_rows(tm, NPACK, R, r0, r1, y, s);
    return moe_calib_fit_pack(rows, bytes, y, NPACK, c, rms);
}

/* Rank 0: the fit of one phase's local work (tm: NPACK x R) and its spread over thirds of the
 * repeats, printed; the terms in c, each >= 0. */
static int plane_print(const char *what, const double *tm, size_t R, const double *rows,
                       const double *bytes, double *s, double c[3])
{
    double y[NPACK], med[NPACK], b[3], lo[3], hi[3], rms;
    int rc = fit_plane_block(tm, R, 0, R, rows, bytes, y, s, c, &rms);
    if (rc)
        return rc;
    for (size_t i = 0; i < NPACK; i++)
        med[i] = quantile(tm + i * R, 0, R, 0.5, s);
    printf("%s: %12s %12s %10s %10s\n", what, "claims", "row bytes", "q1 us", "median");
    for (size_t i = 0; i < NPACK; i++)
        printf("%s: %12.0f %12.0f %10.3f %10.3f\n", what, rows[i], bytes[i] / rows[i],
               y[i] * 1e6, med[i] * 1e6);
    for (size_t k = 0; k < NBLOCKS; k++) {
        if ((rc = fit_plane_block(tm, R, k * R / NBLOCKS, (k + 1) * R / NBLOCKS, rows, bytes, y,
                                  s, b, &(double){0})))
            return rc;
        for (int j = 0; j < 3; j++) {
            lo[j] = k == 0 || b[j] < lo[j] ? b[j] : lo[j];
            hi[j] = k == 0 || b[j] > hi[j] ? b[j] : hi[j];
        }
    }
    printf("%s: %.4g us per call, %.4g ns per row, %.4g GB/s, relative rms residual %.1f%%%s; "
           "over thirds of the repeats %.4g to %.4g us, %.4g to %.4g ns, %.4g to %.4g ns per "
           "kB\n", what, c[0] * 1e6, c[1] * 1e9, c[2] > 0 ? 1e-9 / c[2] : 0.0, 100.0 * rms,
           c[0] < 0 || c[1] < 0 || c[2] <= 0 ? " (a fitted term < 0 is taken as 0)" : "",
           lo[0] * 1e6, hi[0] * 1e6, lo[1] * 1e9, hi[1] * 1e9, lo[2] * 1e12, hi[2] * 1e12);
    for (int k = 0; k < 3; k++)
        c[k] = c[k] > 0 ? c[k] : 0.0;
    return MOE_OK;
}

/* Every rank: the local-work benchmark over the grid (td, tc: NPACK x repeats), cold or warm
 * (time_pack); rank 0 fits the dispatch's work into pk and the combine's into uk (latency s,
 * s per row, s per byte). */
static int calibrate_pack(long repeats, int cold, double *td, double *tc, double *s,
                          double pk[3], double uk[3])
{
    const size_t R = (size_t)repeats;
    double rows[NPACK], bytes[NPACK];
    int rc = MOE_OK;
    for (size_t i = 0; !rc && i < NPACK; i++) {
        const size_t n = (size_t)16 << (2 * (i / PACK_N)), H = (size_t)16 << (2 * (i % PACK_N));
        rows[i] = (double)n;
        bytes[i] = (double)(n * H * sizeof(float));
        rc = time_pack(n, H, repeats, cold, td + i * R, tc + i * R);
    }
    if (rc || moe_mpi_g.rank != 0)
        return rc;
    if (!(rc = plane_print(cold ? "pack" : "warm pack", td, R, rows, bytes, s, pk)))
        rc = plane_print(cold ? "unpack" : "warm unpack", tc, R, rows, bytes, s, uk);
    return rc;
}

/* Rank 0: the section with the all-to-all's and the local work's constants, to f: pk, uk the
 * cold terms, pk[3..5], uk[3..5] the warm ones. */
static int put_section(FILE *f, const calib_args *a, int P, double alpha, double beta,
                       const double pk[6], const double uk[6], long cores)
{
    double gbps = beta * 8.0 / 1e9, us = alpha * 1e6;
    return fprintf(f, "; written by moesim calibrate: the all-to-all of %d ranks on this machine "
                   "(docs/cluster.md)\n[cluster.%s]\nnodes = 1\ndevices_per_node = %d\n"
                   "intra_gbps = %.6g\nintra_latency_us = %.6g\n"
                   "; one node: the inter-node link is never used\n"
                   "inter_gbps = %.6g\ninter_latency_us = %.6g\ndevice_tflops = measured\n"
                   "dtype_bytes = 4\ndispatch = per_claim\n"
                   "; the layer's local work per phase: dispatch (pack), combine (unpack)\n"
                   "pack_latency_us = %.6g\npack_row_ns = %.6g\npack_gbps = %.6g\n"
                   "unpack_latency_us = %.6g\nunpack_row_ns = %.6g\nunpack_gbps = %.6g\n"
                   "; the same when the step's data stay in the cache (MB of the last level)\n"
                   "warm_pack_latency_us = %.6g\nwarm_pack_row_ns = %.6g\nwarm_pack_gbps = %.6g\n"
                   "warm_unpack_latency_us = %.6g\nwarm_unpack_row_ns = %.6g\n"
                   "warm_unpack_gbps = %.6g\ncache_mb = %.6g\n"
                   "; the processors the ranks share\ncores = %ld\n", P, a->name, P, gbps, us,
                   gbps, us, pk[0] * 1e6, pk[1] * 1e9, pk[2] > 0 ? 8.0 / pk[2] / 1e9 : 0.0,
                   uk[0] * 1e6, uk[1] * 1e9, uk[2] > 0 ? 8.0 / uk[2] / 1e9 : 0.0, pk[3] * 1e6,
                   pk[4] * 1e9, pk[5] > 0 ? 8.0 / pk[5] / 1e9 : 0.0, uk[3] * 1e6, uk[4] * 1e9,
                   uk[5] > 0 ? 8.0 / uk[5] / 1e9 : 0.0, (double)llc_bytes() / 1048576.0,
                   cores) < 0;
}

/* Rank 0: the line through the statistic of the repeats tm (n sizes x R) over [r0, r1) at
 * bytes x, as alpha per message (peers messages per call) and beta; y (n) and s (R) scratch. */
static int fit_block(const double *tm, size_t n, size_t R, size_t r0, size_t r1, const double *x,
                     int peers, double *y, double *s, double *alpha, double *beta, double *rms)
{
    double c0, c1;
    stat_rows(tm, n, R, r0, r1, y, s);
    int rc = moe_calib_fit(x, y, n, &c0, &c1, rms);
    *alpha = c0 > 0 ? c0 / peers : 0.0;
    *beta = c1 > 0 ? 1.0 / c1 : 0.0;
    return rc;
}

/* Rank 0: the fit of one benchmark (tm: n sizes x R repeats at bytes x) and its spread over
 * thirds of the repeats, printed; the constants in *alpha and *beta. */
static int fit_print(const char *what, const double *tm, size_t n, size_t R, const double *x,
                     int peers, double *s, double *alpha, double *beta)
{
    double y[64], rms, a, b, alo = 0, ahi = 0, blo = 0, bhi = 0;
    int rc = fit_block(tm, n, R, 0, R, x, peers, y, s, alpha, beta, &rms);
    if (rc)
        return rc;
    if (!(*beta > 0))
        return moe_fail(MOE_EINVAL, "rerun on a quieter machine, or with more --repeats",
                        "%s: the fitted time does not grow with the bytes", what);
    const int clipped = *alpha == 0;
    for (size_t k = 0; k < NBLOCKS; k++) {
        if ((rc = fit_block(tm, n, R, k * R / NBLOCKS, (k + 1) * R / NBLOCKS, x, peers, y, s,
                            &a, &b, &(double){0})))
            return rc;
        alo = k == 0 || a < alo ? a : alo;
        ahi = k == 0 || a > ahi ? a : ahi;
        blo = k == 0 || b < blo ? b : blo;
        bhi = k == 0 || b > bhi ? b : bhi;
    }
    printf("%s: alpha = %.4g us per message%s, beta = %.4g GB/s, relative rms residual %.1f%%; "
           "over thirds of the repeats alpha %.4g to %.4g us, beta %.4g to %.4g GB/s\n", what,
           *alpha * 1e6, clipped ? " (fitted intercept < 0, taken as 0)" : "", *beta / 1e9,
           100.0 * rms, alo * 1e6, ahi * 1e6, blo / 1e9, bhi / 1e9);
    return MOE_OK;
}

/* Rank 0: the table of the two benchmarks' statistics and medians per size. */
static void print_sizes(const double *x, const double *pp, const double *aa, size_t ns, size_t R,
                        double *s)
{
    printf("%12s %14s %10s %16s %10s\n", "bytes/peer", "ping-pong q1", "median", "all-to-all q1",
           "median");
    for (size_t i = 0; i < ns; i++)
        printf("%12.0f %14.3f %10.3f %16.3f %10.3f\n", x[i],
               quantile(pp + i * R, 0, R, CALIB_Q, s) * 1e6,
               quantile(pp + i * R, 0, R, 0.5, s) * 1e6,
               quantile(aa + i * R, 0, R, CALIB_Q, s) * 1e6,
               quantile(aa + i * R, 0, R, 0.5, s) * 1e6);
}

/* Every rank: the benchmarks, the sizes interleaved within each repeat (so that a change of
 * load over the run touches every size alike); rank 0 fits, prints and writes. */
static int calibrate(const calib_args *a)
{
    const int P = moe_mpi_g.size, me = moe_mpi_g.rank;
    const size_t R = (size_t)a->repeats;
    size_t ns = 0;
    for (long m = 16; m <= a->max_bytes; m *= 4)
        ns++;
    const size_t maxb = (size_t)16 << (2 * (ns - 1)), nt = (ns > NPACK ? ns : NPACK) * R;
    int bad = 0;
    float *sbuf = moe_mpi_xcalloc(maxb / sizeof(float) * (size_t)P, sizeof(float), &bad);
    float *rbuf = moe_mpi_xcalloc(maxb / sizeof(float) * (size_t)P, sizeof(float), &bad);
    double *s = moe_mpi_xcalloc(R, sizeof *s, &bad), *x = moe_mpi_xcalloc(ns, sizeof *x, &bad);
    double *pp = moe_mpi_xcalloc(nt, sizeof *pp, &bad), *aa = moe_mpi_xcalloc(nt, sizeof *aa, &bad);
    int *cnt = moe_mpi_xcalloc((size_t)P, sizeof *cnt, &bad);
    int *dsp = moe_mpi_xcalloc((size_t)P, sizeof *dsp, &bad);
    int rc = bad ? moe_fail(MOE_ENOMEM, NULL, "out of memory (moesim calibrate)") : MOE_OK;
    int all = rc;
    MPI_Allreduce(&rc, &all, 1, MPI_INT, MPI_MAX, moe_mpi_g.comm);
    for (long r = -2; !all && r < a->repeats; r++) /* two untimed warm-up repeats */
        for (size_t i = 0; i < ns; i++) {
            const size_t m = (size_t)16 << (2 * i);
            const double tp = pingpong_once(sbuf, m), ta = alltoall_once(sbuf, rbuf, m, cnt, dsp);
            x[i] = (double)m;
            if (r >= 0) {
                pp[i * R + (size_t)r] = tp;
                aa[i * R + (size_t)r] = ta;
            }
        }
    double xa[64], ap = 0, bp = 0, aa2 = 0, ba = 0, pk[6] = {0}, uk[6] = {0};
    const long cores = sysconf(_SC_NPROCESSORS_ONLN) > 0 ? sysconf(_SC_NPROCESSORS_ONLN) : 0;
    if (!all && me == 0) {
        printf("moesim calibrate: %d ranks, %ld repeats per size; fits through the first "
               "quartile (q1) of the repeats\n", P, a->repeats);
        print_sizes(x, pp, aa, ns, R, s);
        for (size_t i = 0; i < ns; i++)
            xa[i] = x[i] * (P - 1); /* bytes each rank sends */
        if (!(rc = fit_print("ping-pong (ranks 0, 1)", pp, ns, R, x, 1, s, &ap, &bp)))
            rc = fit_print("all-to-all", aa, ns, R, xa, P - 1, s, &aa2, &ba);
    }
    MPI_Allreduce(&rc, &all, 1, MPI_INT, MPI_MAX, moe_mpi_g.comm);
    if (!all)
        all = calibrate_pack(a->repeats, 1, pp, aa, s, pk, uk);
    if (!all)
        all = calibrate_pack(a->repeats, 0, pp, aa, s, pk + 3, uk + 3);
    if (!all && me == 0) {
        rc = put_section(stdout, a, P, aa2, ba, pk, uk, cores)
                 ? moe_fail(MOE_EIO, NULL, "cannot write to stdout") : MOE_OK;
        moe_outfile o;
        if (!rc && a->out && !(rc = moe_outfile_open(&o, a->out, "the cluster section", "w")))
            rc = moe_outfile_commit(&o, put_section(o.f, a, P, aa2, ba, pk, uk, cores));
    }
    free(sbuf);
    free(rbuf);
    free(s);
    free(x);
    free(pp);
    free(aa);
    free(cnt);
    free(dsp);
    return all ? all : rc;
}
#endif

int moe_cmd_calibrate(int argc, char **argv)
{
    calib_args a;
    int help = 0, rc = parse_args(argc, argv, &a, &help);
    if (rc || help) {
        if (help)
            usage();
        return rc;
    }
    if ((rc = moe_mpi_init()))
        return rc;
    const int P = moe_mpi_g.size;
    if (!moe_mpi_compiled() || P < 2)
        rc = moe_fail(MOE_EINVAL, "run it as mpirun -np P moesim calibrate (P >= 2)",
                      "calibrate needs at least 2 MPI ranks, this job has %d%s (moesim "
                      "calibrate)", P, moe_mpi_compiled() ? "" : " (moesim built without MPI)");
    else if (a.ranks && a.ranks != P)
        rc = moe_fail(MOE_EINVAL, "give mpirun -np the same count", "--ranks %ld, but the "
                      "job has %d ranks (command line)", a.ranks, P);
    else if (a.out && moe_mpi_g.rank == 0)
        rc = moe_outfile_check(a.out, "the cluster section");
#ifdef MOESIM_MPI
    if (moe_mpi_g.active) { /* every rank learns whether rank 0 can write */
        int all = rc;
        MPI_Allreduce(&rc, &all, 1, MPI_INT, MPI_MAX, moe_mpi_g.comm);
        if (!rc && all)
            moe_fail(all, NULL, "failed on rank 0 (moesim calibrate)");
        rc = all;
        if (!rc)
            rc = calibrate(&a);
    }
#endif
    return moe_mpi_finalize(rc);
}
