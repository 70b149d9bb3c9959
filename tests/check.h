/* check.h: a small test harness. Every test binary prints "<name>: N passed, N failed" and
 * exits non-zero on any failure. Tolerance checks use abs + |ref|*rel (llm.c) and report the
 * worst difference. */
#ifndef MOE_CHECK_H
#define MOE_CHECK_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

static int check_pass, check_fail;

#define CHECK(cond, ...)                                                                      \
    do {                                                                                      \
        if (cond) {                                                                           \
            check_pass++;                                                                     \
        } else {                                                                              \
            check_fail++;                                                                     \
            fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);                              \
            fprintf(stderr, __VA_ARGS__);                                                     \
            fputc('\n', stderr);                                                              \
        }                                                                                     \
    } while (0)

#define CHECK_INT(got, want)                                                                  \
    CHECK((long long)(got) == (long long)(want), "%s = %lld, expected %lld", #got,            \
          (long long)(got), (long long)(want))

#define CHECK_NEAR(got, want, tol)                                                            \
    CHECK(fabs((double)(got) - (double)(want)) <= (tol), "%s = %.17g, expected %.17g (tol %g)", \
          #got, (double)(got), (double)(want), (double)(tol))

/* Compare arrays with |a - ref| <= abs + |ref|*rel; reports the worst offender. */
static inline int check_close_arrays(const char *what, const double *got, const double *ref,
                                     size_t len, double abs_tol, double rel_tol)
{
    size_t worst = 0;
    double worst_excess = -1.0, worst_diff = 0.0;
    int bad = 0;
    for (size_t i = 0; i < len; i++) {
        double diff = fabs(got[i] - ref[i]);
        double tol = abs_tol + fabs(ref[i]) * rel_tol;
        if (!(diff <= tol))
            bad++;
        if (!(diff - tol <= worst_excess)) {
            worst_excess = diff - tol;
            worst = i;
            worst_diff = diff;
        }
    }
    if (bad) {
        check_fail++;
        fprintf(stderr, "FAIL %s: %d of %zu values outside tolerance; worst at %zu: got %.9g ref %.9g (diff %.3g)\n",
                what, bad, len, worst, got[worst], ref[worst], worst_diff);
    } else {
        check_pass++;
    }
    return bad == 0;
}

/* check_close_arrays on float arrays (widened to double). */
static inline int check_close_floats(const char *what, const float *got, const float *ref,
                                     size_t len, double abs_tol, double rel_tol)
{
    double *g = (double *)malloc((len + 1) * sizeof *g), *r = (double *)malloc((len + 1) * sizeof *r);
    for (size_t i = 0; g && r && i < len; i++) {
        g[i] = got[i];
        r[i] = ref[i];
    }
    int ok = g && r && check_close_arrays(what, g, r, len, abs_tol, rel_tol);
    free(g);
    free(r);
    return ok;
}

static inline int check_report(const char *name)
{
    printf("%s: %d passed, %d failed\n", name, check_pass, check_fail);
    return check_fail ? 1 : 0;
}

#endif
