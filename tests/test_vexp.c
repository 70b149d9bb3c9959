/* test_vexp.c: moe_vexp_shift (sim/vexp.c) against the C library's exp, bit for bit.
 *
 * The reference is exp() of the same argument x[i] - m, the libm call every softmax made before
 * the vector path existed. Arguments: uniform on the softmax range [-50, 0] (x - max x), on
 * [-750, 750] (both ends of the fast range |a| < 512, underflow to subnormals and zero,
 * overflow), values within a few ulps of the range ends 2^-54 and 512 and of every multiple of
 * ln2/128 (where the table index changes), exact zeros, a NaN-free random bit pattern set, and
 * rows of every length 0..40 (the scalar tail). Counted as one check per block, naming the first
 * argument that differs. Then moe_softmax_rows_max, rows of 7, 8 (its own path) and 9 logits,
 * against the scalar softmax written here with the C library's exp and log, bit for bit, and
 * rows of eight whose maximum is a zero of either sign against moe_vmax's maximum; and
 * moe_softmax_pairs (the gates of two values) and moe_pairs_div against their scalar definition,
 * moe_softmax_rows8_top2 against the softmax and moe_select_top2_8 apart, and
 * moe_softmax_rows_more against the softmax, the C library's exp, the argmax of p,
 * moe_select_is_top and the first index of the maximum apart, and with each row's maximum given
 * (esel_max) against itself scanning; the slow flag of both (an exponential's argument outside
 * the fast range, which the rows pass takes as the sign to check its logits for infinities and
 * NaNs) against its definition, and with an infinity or a NaN planted at every place. */
#include "check.h"
#include "moe.h"
#include "vexp.h"
#include "../routers/select.h"

#include <gsl/gsl_rng.h>
#include <stdint.h>
#include <string.h>

enum { BLK = 4096 };

static uint64_t bits(double v)
{
    uint64_t u;
    memcpy(&u, &v, sizeof u);
    return u;
}

/* x (len) against exp(x[i] - m); one check */
static void cmp_row(const char *what, const double *x, int len, double m)
{
    static double got[BLK];
    moe_vexp_shift(x, len, m, got);
    int bad = -1;
    for (int i = 0; i < len && bad < 0; i++) {
        double want = exp(x[i] - m);
        if (bits(got[i]) != bits(want))
            bad = i;
    }
    CHECK(bad < 0, "%s: exp(%a - %a) = %a, the C library gives %a", what, bad < 0 ? 0 : x[bad],
          m, bad < 0 ? 0 : got[bad], bad < 0 ? 0 : exp(x[bad] - m));
}

/* moe_softmax_rows_max on nrows rows of len against the scalar definition: m = the row's
 * maximum, p = exp(x - m) by the C library, s = their sum in index order from 0, p / s,
 * lse = m + moe_log(s) (the softmax takes eight rows' logarithms in one vector); one check,
 * naming the first row that differs. */
static void cmp_softmax(const char *what, const double *x, int nrows, int len)
{
    static double p[BLK], lse[BLK / 8], mx[BLK / 8], want[BLK];
    moe_softmax_rows_max(x, nrows, len, p, lse, mx);
    int bad = -1;
    for (int r = 0; r < nrows && bad < 0; r++) {
        const double *xr = x + (size_t)r * len;
        double m = xr[0], s = 0.0;
        for (int i = 1; i < len; i++)
            m = xr[i] > m ? xr[i] : m;
        for (int i = 0; i < len; i++)
            s += want[i] = exp(xr[i] - m);
        for (int i = 0; i < len; i++)
            if (bits(p[(size_t)r * len + i]) != bits(want[i] / s))
                bad = r;
        if (bits(lse[r]) != bits(m + moe_log(s)) || bits(mx[r]) != bits(m))
            bad = r;
    }
    CHECK(bad < 0, "%s: softmax of %d rows of %d: row %d differs from the scalar definition",
          what, nrows, len, bad);
}

/* Rows of eight whose maximum is a zero of either sign: mx the same double as moe_vmax of the
 * row (its vector maximum's fixed tree, the one the rows of eight reproduce by columns, so
 * that a zero comes back with the sign it always had), and p and lse the scalar definition's
 * (cmp_softmax's, its maximum moe_vmax's value); one check. */
static void cmp_zero_max(const double *x, int nrows)
{
    static double p[BLK], lse[BLK / 8], mx[BLK / 8];
    moe_softmax_rows_max(x, nrows, 8, p, lse, mx);
    int bad = -1, neg = 0;
    for (int r = 0; r < nrows && bad < 0; r++) {
        const double *xr = x + (size_t)r * 8, m = moe_vmax(xr, 8);
        double s = 0.0, e[8];
        for (int i = 0; i < 8; i++)
            s += e[i] = exp(xr[i] - m);
        for (int i = 0; i < 8; i++)
            if (bits(p[(size_t)r * 8 + i]) != bits(e[i] / s))
                bad = r;
        if (bits(mx[r]) != bits(m) || bits(lse[r]) != bits(m + moe_log(s)))
            bad = r;
        neg += signbit(m) != 0;
    }
    CHECK(bad < 0 && (nrows < 64 || neg > 0), "%d rows of 8, maxima of either zero (%d of -0): "
          "row %d differs from moe_vmax's maximum and the scalar softmax", nrows, neg, bad);
}

/* What the softmax of nrows rows of len, maxima mx, must say in slow (vexp.h): 1 when some
 * x - max is not below 512 in magnitude (or is NaN), outside the fast range of the exponential
 * (cmp_row above checks those ranges), or when a row has elements after its last multiple of
 * the lanes (eight with AVX-512, four with AVX2 and FMA only), which the vector lanes do not
 * take; else 0. Built without either, every row. */
/* ROWS8: the softmax of rows of eight with the top-2 takes rows in vector blocks of this many
 * (eight with AVX-512, every row with AVX2: its two chosen first in four lanes), the rows after
 * the last block undecided; 0: none, every row undecided (the scalar build) */
#if defined(__AVX512F__)
enum { LANES = 8, ROWS8 = 8 };
#elif defined(__AVX2__) && defined(__FMA__)
enum { LANES = 4, ROWS8 = 1 };
#else
enum { LANES = 0, ROWS8 = 0 };
#endif
static int want_slow(const double *x, int nrows, int len, const double *mx)
{
    if (LANES == 0)
        return nrows > 0; /* (every exponential the C library's, none on the vector's path) */
    if (nrows > 0 && len % (LANES ? LANES : 1)) /* (LANES is 0 only above: no division) */
        return 1;
    for (int r = 0; r < nrows; r++)
        for (int i = 0; i < len; i++)
            if (!(fabs(x[(size_t)r * len + i] - mx[r]) < 512.0))
                return 1;
    return 0;
}

/* Rows cmp_top2 saw, not declined, whose two are (1) and are not (0) the two largest of p. */
static long top2_is_top[2];

/* moe_softmax_rows8_top2 on nrows rows of eight against its definition: moe_softmax_rows_max
 * (bit for bit), and moe_select_top2_8 of each row from its maximum (select.h), the C library's
 * exp(x - max) at the two indices, or -1 where that declines; istop moe_select_is_top of the
 * row's p at those two for the rows of the vector blocks of eight, 0 for a declined row and the
 * rows after the last block; one check. */
static void cmp_top2(const char *what, const double *x, int nrows)
{
    static double p[BLK], lse[BLK / 8], mx[BLK / 8], val[BLK / 4], p0[BLK], lse0[BLK / 8],
        mx0[BLK / 8];
    static int32_t idx[BLK / 4];
    static uint8_t ist[BLK / 8];
    int slow = 0;
    moe_softmax_rows8_top2(x, nrows, p, lse, mx, idx, val, ist, &slow);
    moe_softmax_rows_max(x, nrows, 8, p0, lse0, mx0);
    /* slow: as want_slow, and 1 when rows are left after the last vector block (the rows the
     * vector blocks do not take; in the scalar build, every row) */
    const int want = (ROWS8 ? nrows % ROWS8 != 0 : nrows > 0) || want_slow(x, nrows, 8, mx0);
    CHECK(slow == want, "%s: %d rows of 8 with the top-2: slow %d, expected %d", what, nrows,
          slow, want);
    int bad = -1;
    for (int r = 0; r < nrows && bad < 0; r++) {
        int32_t e[2] = {-1, -1};
        const double *xr = x + (size_t)r * 8;
        const int ok = moe_select_top2_8(xr, mx0[r], e, e + 1);
        if (memcmp(p + (size_t)r * 8, p0 + (size_t)r * 8, 8 * sizeof *p) ||
            bits(lse[r]) != bits(lse0[r]) || bits(mx[r]) != bits(mx0[r]) ||
            (ok ? idx[2 * r] != e[0] || idx[2 * r + 1] != e[1] ||
                      bits(val[2 * r]) != bits(exp(xr[e[0]] - mx0[r])) ||
                      bits(val[2 * r + 1]) != bits(exp(xr[e[1]] - mx0[r]))
                : idx[2 * r] != -1))
            bad = r;
        const int top = ok && moe_select_is_top(p0 + (size_t)r * 8, 8, e, 2);
        const int decided = ROWS8 && r < nrows / ROWS8 * ROWS8; /* (the vector blocks' rows) */
        if (ist[r] != (decided && top))
            bad = r;
        top2_is_top[top] += ok;
    }
    CHECK(bad < 0, "%s: %d rows of 8: row %d differs from the softmax and top-2 apart", what,
          nrows, bad);
}

/* The numerators given (num: each row's moe_vexp_shift by its moe_vmax, as sinkhorn's K): every
 * output the same bits as the softmax's own (p, lse, mx, es, ist, pmax, xf, pf, from cmp_more's
 * call with the same sel), and slow set when there are rows, so that they are then scanned for
 * non-finite logits. One check. */
static void cmp_more_num(const char *what, const double *x, int nrows, int len, int k,
                         const int32_t *sel, const double *p, const double *lse,
                         const double *mx, const double *es, const uint8_t *ist,
                         const int32_t *pmax, const int32_t *xf, const double *pf)
{
    static double num[BLK], p3[BLK], lse3[BLK / 8], mx3[BLK / 8], es3[BLK], pf3[BLK];
    static int32_t pmax3[BLK], xf3[BLK];
    static uint8_t ist3[BLK / 8];
    for (int t = 0; t < nrows; t++)
        moe_vexp_shift(x + (size_t)t * len, len, moe_vmax(x + (size_t)t * len, len),
                       num + (size_t)t * len);
    int slow = 0;
    moe_softmax_rows_more(x, nrows, len, p3,
                          &(moe_softmax_more){.lse = lse3, .mx = mx3, .sel = k ? sel : NULL,
                                              .k = k, .esel = es3, .istop = ist3, .pmax = pmax3,
                                              .xfirst = xf3, .pfirst = pf3, .slow = &slow,
                                              .num = num});
    int bad = -1;
    for (int t = 0; t < nrows && bad < 0; t++)
        if (memcmp(p3 + (size_t)t * len, p + (size_t)t * len, (size_t)len * sizeof *p) ||
            bits(lse3[t]) != bits(lse[t]) || bits(mx3[t]) != bits(mx[t]) ||
            memcmp(es3 + (size_t)t * k, es + (size_t)t * k, (size_t)k * sizeof *es) ||
            (k && ist3[t] != ist[t]) || pmax3[t] != pmax[t] || xf3[t] != xf[t] ||
            (xf[t] >= 0 && bits(pf3[t]) != bits(pf[t])))
            bad = t;
    CHECK(bad < 0 && slow == (nrows > 0), "%s: %d rows of %d, %d columns each, numerators "
          "given: row %d differs from the softmax's own, slow %d", what, nrows, len, k, bad, slow);
}

/* moe_softmax_rows_more on nrows rows of len, with k columns sel per row (drawn from r, repeats
 * allowed, every other row its k largest by moe_select_topk; none for k = 0), each row's argmax
 * of p and first index of its maximum, against its definition: p, lse and mx those of
 * moe_softmax_rows_max, bit for bit; esel = exp(x - m) by the C library at those columns, m
 * the row's maximum; istop moe_select_is_top of the row's p at sel; pmax the first index of the
 * row's largest p by the serial loop "if (p[i] > best)" (a row holding a NaN: any index of the
 * row); xfirst the first index i with x[i] == m by a scalar loop (-1 for none: a NaN) and
 * pfirst the p there; one check. Then the same with esel_max (one more check). */
static void cmp_more(const char *what, const double *x, int nrows, int len, int k, gsl_rng *r)
{
    static double p[BLK], lse[BLK / 8], mx[BLK / 8], p0[BLK], lse0[BLK / 8], mx0[BLK / 8],
        es[BLK], pf[BLK];
    static int32_t sel[BLK], pmax[BLK], xf[BLK];
    static uint8_t ist[BLK / 8];
    for (int i = 0; i < nrows * k; i++)
        sel[i] = (int32_t)gsl_rng_uniform_int(r, (unsigned long)len);
    for (int t = 0; t < nrows && k > 1; t += 2) /* every other row: sel its k largest */
        moe_select_topk(x + (size_t)t * len, len, k < len ? k : len, sel + (size_t)t * k, pf);
    int slow = 0;
    moe_softmax_rows_more(x, nrows, len, p,
                          &(moe_softmax_more){.lse = lse, .mx = mx, .sel = k ? sel : NULL,
                                              .k = k, .esel = es, .istop = ist, .pmax = pmax,
                                              .xfirst = xf, .pfirst = pf, .slow = &slow});
    moe_softmax_rows_max(x, nrows, len, p0, lse0, mx0);
    CHECK(slow == want_slow(x, nrows, len, mx0), "%s: %d rows of %d, %d columns each: slow %d, "
          "expected %d", what, nrows, len, k, slow, want_slow(x, nrows, len, mx0));
    int bad = -1;
    for (int t = 0; t < nrows && bad < 0; t++) {
        const double *xr = x + (size_t)t * len, *pr = p0 + (size_t)t * len;
        if (memcmp(p + (size_t)t * len, pr, (size_t)len * sizeof *p) ||
            bits(lse[t]) != bits(lse0[t]) || bits(mx[t]) != bits(mx0[t]))
            bad = t;
        for (int q = 0; q < k; q++)
            if (bits(es[t * k + q]) != bits(exp(xr[sel[t * k + q]] - mx0[t])))
                bad = t;
        if (k && ist[t] != moe_select_is_top(pr, len, sel + (size_t)t * k, k))
            bad = t;
        int nan = 0, first = 0;
        for (int i = 0; i < len; i++) {
            nan |= isnan(pr[i]);
            first = pr[i] > pr[first] ? i : first;
        }
        if (nan ? pmax[t] < 0 || pmax[t] >= len : pmax[t] != first)
            bad = t;
        int at = -1;
        for (int i = len - 1; i >= 0; i--)
            at = xr[i] == mx0[t] ? i : at;
        if (xf[t] != at || (at >= 0 && bits(pf[t]) != bits(pr[at])))
            bad = t;
    }
    CHECK(bad < 0, "%s: %d rows of %d, %d columns each: row %d differs from the softmax, exp, "
          "the argmax of p, is_top and the first index of the maximum apart", what, nrows, len,
          k, bad);
    cmp_more_num(what, x, nrows, len, k, sel, p, lse, mx, es, ist, pmax, xf, pf);
    if (k == 0)
        return;
    /* esel_max: each row's maximum given in esel[t * k] (by a scalar loop; a row with a NaN
     * gets 0, and its outputs mean nothing): every output the same bits as the scan's, mx the
     * value given (== the scan's: the two zeros may differ in sign) */
    static double p2[BLK], lse2[BLK / 8], mx2[BLK / 8], es2[BLK], pf2[BLK];
    static int32_t pmax2[BLK], xf2[BLK];
    int fin[BLK / 8];
    for (int t = 0; t < nrows; t++) {
        const double *xr = x + (size_t)t * len;
        double m = xr[0];
        fin[t] = 1;
        for (int i = 0; i < len; i++) {
            fin[t] &= !isnan(xr[i]);
            m = xr[i] > m ? xr[i] : m;
        }
        es2[t * k] = fin[t] ? m : 0.0;
    }
    moe_softmax_rows_more(x, nrows, len, p2,
                          &(moe_softmax_more){.lse = lse2, .mx = mx2, .sel = sel, .k = k,
                                              .esel = es2, .esel_max = 1, .pmax = pmax2,
                                              .xfirst = xf2, .pfirst = pf2});
    bad = -1;
    int rows = 0;
    for (int t = 0; t < nrows && bad < 0; t++) {
        if (!fin[t])
            continue;
        rows++;
        if (memcmp(p2 + (size_t)t * len, p + (size_t)t * len, (size_t)len * sizeof *p) ||
            memcmp(es2 + (size_t)t * k, es + (size_t)t * k, (size_t)k * sizeof *es) ||
            bits(lse2[t]) != bits(lse[t]) || !(mx2[t] == mx[t]) || pmax2[t] != pmax[t] ||
            xf2[t] != xf[t] || (xf[t] >= 0 && bits(pf2[t]) != bits(pf[t])))
            bad = t;
    }
    CHECK(bad < 0, "%s: %d rows of %d, the maximum given (esel_max): row %d of the %d without "
          "a NaN differs from the scan's", what, nrows, len, bad, rows);
}

/* x's distance from log x in units of the last place of moe_log(x), against long double logl
 * (64 significant bits). */
static double log_ulps(double x)
{
    const double y = moe_log(x);
    const long double d = fabsl((long double)y - logl((long double)x));
    int ex;
    frexp(y, &ex);
    return (double)(d / ldexpl(1.0L, ex - 53));
}

/* moe_log against logl on n values from draw (one check: the largest error in ulps, at most 1),
 * and how many it gives as the C library's log does (printed: they need not agree). */
static void cmp_log(const char *what, gsl_rng *r, long n, double (*draw)(gsl_rng *))
{
    double worst = 0.0, at = 1.0;
    long same = 0;
    for (long i = 0; i < n; i++) {
        const double x = draw(r), u = log_ulps(x);
        if (u > worst)
            worst = u, at = x;
        same += bits(moe_log(x)) == bits(log(x));
    }
    CHECK(worst <= 1.0, "moe_log, %s: %.3f ulps from logl at x = %a", what, worst, at);
    printf("  moe_log, %s: at most %.3f ulps from logl; the C library's double in %.1f%%\n",
           what, worst, 100.0 * (double)same / (double)n);
}

static double draw_any(gsl_rng *r) /* every binade of the positive normal doubles */
{
    return ldexp(1.0 + gsl_rng_uniform(r), (int)gsl_rng_uniform_int(r, 2046) - 1022);
}
static double draw_sum(gsl_rng *r) /* the sums of a softmax row: [1, 2^20) */
{
    return ldexp(1.0 + gsl_rng_uniform(r), (int)gsl_rng_uniform_int(r, 20));
}
static double draw_one(gsl_rng *r) /* near 1, where log x is small (f tiny, and f near 0) */
{
    return 1.0 + ldexp(gsl_rng_uniform(r) - 0.5, -(int)gsl_rng_uniform_int(r, 52));
}
static double draw_edge(gsl_rng *r) /* a few ulps around sqrt(2) 2^k and 2^k (the splits) */
{
    const double b = gsl_rng_uniform_int(r, 2) ? 1.4142135623730951 : 1.0;
    const int k = (int)gsl_rng_uniform_int(r, 41) - 20;
    double x = ldexp(b, k);
    for (int j = (int)gsl_rng_uniform_int(r, 9) - 4; j != 0; j += j > 0 ? -1 : 1)
        x = nextafter(x, j > 0 ? INFINITY : 0.0);
    return x;
}

/* moe_softmax_pairs on n pairs (v0, v1) against the scalar definition topk's gates had: e_j =
 * exp(v_j - v0) by the C library, s = 0 + e0 + e1, v_j = e_j / s; and moe_pairs_div on those
 * exponentials (e0, e1) against the same; one check. */
static void cmp_pairs(const char *what, const double *x, long n)
{
    static double g[BLK], d[BLK];
    memcpy(g, x, (size_t)n * 2 * sizeof *g);
    moe_softmax_pairs(g, n);
    for (long t = 0; t < n; t++) {
        d[2 * t] = exp(x[2 * t] - x[2 * t]);
        d[2 * t + 1] = exp(x[2 * t + 1] - x[2 * t]);
    }
    moe_pairs_div(d, n);
    long bad = -1;
    for (long t = 0; t < n && bad < 0; t++) {
        const double *v = x + 2 * t, e0 = exp(v[0] - v[0]), e1 = exp(v[1] - v[0]);
        const double s = 0.0 + e0 + e1;
        if (bits(g[2 * t]) != bits(e0 / s) || bits(g[2 * t + 1]) != bits(e1 / s) ||
            bits(d[2 * t]) != bits(e0 / s) || bits(d[2 * t + 1]) != bits(e1 / s))
            bad = t;
    }
    CHECK(bad < 0, "%s: %ld pairs: pair %ld (%a, %a) differs from the scalar definition", what, n,
          bad, bad < 0 ? 0.0 : x[2 * bad], bad < 0 ? 0.0 : x[2 * bad + 1]);
}

/* An infinity or a NaN planted at each place of 16 rows of len uniform on [-3, 3] (none
 * leaves the fast range): the softmax must say slow (so that the rows pass checks the chunk
 * for non-finite logits), through moe_softmax_rows_more and, for len 8, moe_softmax_rows8_top2;
 * and for the rows without one what want_slow says (0 with vector lanes). One check per (len,
 * value). */
static void check_slow_planted(int len, gsl_rng *r)
{
    enum { NR = 16 };
    static double x[NR * 64], p[NR * 64], lse[NR], mx[NR], e2[2 * NR];
    static int32_t idx[2 * NR];
    const double vals[3] = {INFINITY, -INFINITY, NAN};
    for (int i = 0; i < NR * len; i++)
        x[i] = 6.0 * gsl_rng_uniform(r) - 3.0;
    int s0 = 0, s1 = 0;
    moe_softmax_rows_more(x, NR, len, p, &(moe_softmax_more){.slow = &s0});
    if (len == 8)
        moe_softmax_rows8_top2(x, NR, p, lse, mx, idx, e2, NULL, &s1);
    double mxs[NR];
    moe_softmax_rows_max(x, NR, len, p, NULL, mxs);
    const int want = want_slow(x, NR, len, mxs); /* (0 with vector lanes: all in the range) */
    CHECK(s0 == want && s1 == (len == 8 && (want || !ROWS8)), "%d rows of %d finite, within the "
          "fast range: slow %d and %d, expected %d", NR, len, s0, s1, want);
    for (int v = 0; v < 3; v++) {
        int missed = -1;
        for (int q = 0; q < NR * len && missed < 0; q++) {
            const double keep = x[q];
            x[q] = vals[v];
            int a = 0, b = len == 8 ? 0 : 1;
            moe_softmax_rows_more(x, NR, len, p, &(moe_softmax_more){.lse = lse, .slow = &a});
            if (len == 8)
                moe_softmax_rows8_top2(x, NR, p, lse, mx, idx, e2, NULL, &b);
            if (!a || !b)
                missed = q;
            x[q] = keep;
        }
        CHECK(missed < 0, "%d rows of %d with %g at element %d: the softmax did not say slow",
              NR, len, vals[v], missed);
    }
}

int main(void)
{
    gsl_rng *r = moe_rng_alloc(20261205u, MOE_STREAM_TOKENS);
    static double x[BLK];
    /* 4M arguments on the softmax range, 4M on [-750, 750] */
    for (int b = 0; b < 1024; b++) {
        for (int i = 0; i < BLK; i++)
            x[i] = -50.0 * gsl_rng_uniform(r);
        cmp_row("softmax range", x, BLK, 0.0);
        for (int i = 0; i < BLK; i++)
            x[i] = 1500.0 * gsl_rng_uniform(r) - 750.0;
        cmp_row("[-750, 750]", x, BLK, 0.0);
    }
    /* near the ends of the fast range and near the table steps k ln2/128 */
    int q = 0;
    const double ends[] = {0x1p-54, 512.0, 708.0, 709.78, 745.0};
    for (size_t e = 0; e < sizeof ends / sizeof *ends; e++)
        for (int s = -1; s <= 1; s += 2)
            for (int u = -8; u <= 8; u++)
                x[q++] = s * nextafter(ends[e], u < 0 ? 0.0 : INFINITY) * (1.0 + u * 0x1p-52);
    for (int k = -2000; k <= 2000 && q + 3 <= BLK; k += 2)
        for (int u = -1; u <= 1; u++)
            x[q++] = k * 0x1.62e42fefa39efp-8 * (1.0 + u * 0x1p-52);
    cmp_row("range ends and table steps", x, q, 0.0);
    /* zeros (the row maximum minus itself), and the shift itself */
    for (int i = 0; i < 64; i++)
        x[i] = i % 3 ? 1.25 : -0.0;
    cmp_row("zeros", x, 64, 1.25);
    cmp_row("zeros, m = -0", x, 64, -0.0);
    /* random finite bit patterns (all magnitudes) */
    for (int b = 0; b < 64; b++) {
        for (int i = 0; i < BLK; i++) {
            uint64_t u = (uint64_t)gsl_rng_get(r) << 32 ^ gsl_rng_get(r);
            double v;
            memcpy(&v, &u, sizeof v);
            x[i] = isfinite(v) ? v : 1.0;
        }
        cmp_row("random bit patterns", x, BLK, 0.0);
    }
    /* every row length 0..40: vector body and scalar tail */
    for (int len = 0; len <= 40; len++) {
        for (int i = 0; i < len; i++)
            x[i] = 4.0 * gsl_rng_uniform(r) - 2.0;
        cmp_row("short rows", x, len, 0.5);
    }
    /* softmax rows: eight logits a row (its own path, eight rows at a time, then the rest) and
     * other lengths, every row count 0..40; N(0,1)-like rows, rows with ties, and rows whose
     * spread takes exp out of its fast range (underflow to subnormals and zero) */
    for (int len = 7; len <= 9; len++)
        for (int nrows = 0; nrows <= 40; nrows++) {
            for (int i = 0; i < nrows * len; i++)
                x[i] = 6.0 * gsl_rng_uniform(r) - 3.0;
            cmp_softmax("uniform rows", x, nrows, len);
            for (int i = 0; i < nrows * len; i++)
                x[i] = (double)(int)(4.0 * gsl_rng_uniform(r)) / 2.0;
            cmp_softmax("tied rows", x, nrows, len);
            for (int i = 0; i < nrows * len; i++)
                x[i] = 1600.0 * gsl_rng_uniform(r) - 800.0;
            cmp_softmax("wide rows", x, nrows, len);
        }
    for (int i = 0; i < BLK; i++)
        x[i] = 20.0 * gsl_rng_uniform(r) - 10.0;
    cmp_softmax("512 rows of 8", x, BLK / 8, 8);
    /* rows of +0, -0, -1 and -2: most maxima a zero, of either sign (every row count 0..40,
     * then 512 rows) */
    for (int c = 0; c <= 41; c++) {
        const int nrows = c <= 40 ? c : BLK / 8;
        for (int i = 0; i < nrows * 8; i++) {
            const int v = (int)gsl_rng_uniform_int(r, 4);
            x[i] = v == 0 ? 0.0 : v == 1 ? -0.0 : 1.0 - v;
        }
        cmp_zero_max(x, nrows);
    }
    /* the softmax with the top-2 of rows of eight: every row count 0..40 (eight rows at a time,
     * then the rest), rows uniform on [-3, 3], wide rows (exponentials that underflow), rows of
     * halves with ties (twice the maximum: its second place), rows with a NaN (declined) */
    for (int nrows = 0; nrows <= 40; nrows++) {
        for (int i = 0; i < nrows * 8; i++)
            x[i] = 6.0 * gsl_rng_uniform(r) - 3.0;
        cmp_top2("uniform rows", x, nrows);
        for (int i = 0; i < nrows * 8; i++)
            x[i] = 1600.0 * gsl_rng_uniform(r) - 800.0;
        cmp_top2("wide rows", x, nrows);
        for (int i = 0; i < nrows * 8; i++)
            x[i] = (double)(int)(4.0 * gsl_rng_uniform(r)) / 2.0;
        cmp_top2("tied rows", x, nrows);
        for (int z = 3; z < nrows * 8; z += 29)
            x[z] = NAN;
        cmp_top2("rows with a NaN", x, nrows);
        /* the second largest one ulp above another, both near the maximum 0.5, where their
         * exponentials are mostly the same double (two logits a rounding apart share a p) */
        for (int i = 0; i < nrows * 8; i++)
            x[i] = i % 8 == 5   ? nextafter(x[i - 1], INFINITY)
                   : i % 8 == 4 ? 0.49 - 0.0625 * (i % 3)
                   : i % 8 == 0 ? 0.5
                                : -1.0 - (i % 8);
        cmp_top2("two logits a rounding apart", x, nrows);
    }
    if (ROWS8) /* (in the scalar build every row is declined: moe_select_top2's scalar path) */
        CHECK(top2_is_top[0] > 0 && top2_is_top[1] > 0,
              "rows of 8 with the top-2: %ld rows whose two are the largest of p, %ld not",
              top2_is_top[1], top2_is_top[0]);
    /* the logarithm: within one ulp everywhere it computes itself (the vector lanes, the
     * same doubles, are compared through the softmax rows' lse above and below: sums of
     * rows of up to 1024 logits) */
    cmp_log("all binades", r, 1000000, draw_any);
    cmp_log("sums [1, 2^20)", r, 1000000, draw_sum);
    cmp_log("near 1", r, 1000000, draw_one);
    cmp_log("near 2^k and sqrt(2) 2^k", r, 200000, draw_edge);
    CHECK(moe_log(1.0) == 0.0 && isnan(moe_log(-1.0)) && moe_log(0.0) == -INFINITY &&
              moe_log(INFINITY) == INFINITY && isnan(moe_log(NAN)) &&
              bits(moe_log(0x1p-1074)) == bits(log(0x1p-1074)),
          "moe_log(1) = 0 and the C library's values outside the positive normal doubles");
    for (int b = 0; b < 400; b++) { /* 204800 rows of 8: the vector lanes and moe_log agree */
        for (int i = 0; i < BLK; i++)
            x[i] = 8.0 * gsl_rng_uniform(r) - 4.0;
        cmp_softmax("rows of 8 for the logarithm", x, BLK / 8, 8);
    }
    for (int len = 64; len <= 1024; len *= 4) /* sums up to 1024 in the vector lanes */
        for (int nrows = 1; nrows <= BLK / len; nrows++) {
            for (int i = 0; i < nrows * len; i++)
                x[i] = 0.01 * gsl_rng_uniform(r);
            cmp_softmax("flat long rows", x, nrows, len);
        }
    /* the softmax with the exponentials at chosen columns and each row's argmax of p: rows of
     * 7, 8 (eight rows at a time, then the rest), 9, 64 and 67 (vector blocks, then a tail),
     * every row count 0..40 (0..60 from 64), 0 to 8 columns a row; rows uniform on [-3, 3],
     * wide ones (exp's other lanes: subnormals and zeros), rows of halves whose largest value
     * comes again in other lanes, blocks and the tail (the first one is the argmax), and rows
     * with a NaN */
    for (int len = 7; len <= 67; len = len == 9 ? 64 : len == 64 ? 67 : len + 1)
        for (int nrows = 0; nrows <= (len >= 64 ? 60 : 40); nrows++)
            for (int k = 0; k <= 8; k++) {
                for (int i = 0; i < nrows * len; i++)
                    x[i] = 6.0 * gsl_rng_uniform(r) - 3.0;
                cmp_more("uniform rows", x, nrows, len, k, r);
                for (int i = 0; i < nrows * len; i++)
                    x[i] = 1600.0 * gsl_rng_uniform(r) - 800.0;
                cmp_more("wide rows", x, nrows, len, k, r);
                for (int i = 0; i < nrows * len; i++)
                    x[i] = (double)(int)(4.0 * gsl_rng_uniform(r)) / 2.0;
                cmp_more("tied rows", x, nrows, len, k, r);
                for (int z = 5; z < nrows * len; z += 37)
                    x[z] = NAN;
                cmp_more("rows with a NaN", x, nrows, len, k, r);
            }
    /* slow: every non-finite logit seen, at every place of a block of rows */
    for (int len = 8; len <= 64; len *= 2)
        check_slow_planted(len, r);
    /* rows whose two largest logits lie two ulps apart, the larger at the later index: their
     * exponentials differ (1 and 1 - 2^-53) while the division often gives both the same p,
     * and then the argmax of p is the earlier index; counted, so that the case is met */
    long collapsed = 0;
    for (int len = 8; len <= 67; len = len == 9 ? 64 : len == 64 ? 67 : len + 1)
        for (int b = 0; b < 64; b++) {
            const int nrows = BLK / len;
            for (int t = 0; t < nrows; t++) {
                double *xr = x + (size_t)t * len;
                for (int i = 0; i < len; i++)
                    xr[i] = -1.0 - 2.0 * gsl_rng_uniform(r);
                const int i2 = 1 + (int)gsl_rng_uniform_int(r, (unsigned long)len - 1);
                const int i1 = (int)gsl_rng_uniform_int(r, (unsigned long)i2);
                xr[i2] = 0.5;
                xr[i1] = 0.5 - 0x1p-53;
            }
            cmp_more("two largest two ulps apart", x, nrows, len, 0, r);
            static double p[BLK];
            moe_softmax_rows_max(x, nrows, len, p, NULL, NULL);
            for (int t = 0; t < nrows; t++) {
                const double *xr = x + (size_t)t * len, *pr = p + (size_t)t * len;
                for (int i = 0; i < len; i++)
                    for (int j = i + 1; j < len; j++)
                        collapsed += xr[i] == 0.5 - 0x1p-53 && xr[j] == 0.5 && pr[i] == pr[j];
            }
        }
    CHECK(collapsed > 0, "rows whose two largest logits differ and share a p: %ld met", collapsed);
    printf("rows whose two largest logits differ and share a p: %ld\n", collapsed);
    /* pairs, the larger first: every count 0..40 (four pairs a vector, then the masked rest),
     * values uniform on [-3, 3], tied values, gaps past exp's fast range (underflow) */
    for (long n = 0; n <= 40; n++) {
        for (long t = 0; t < n; t++) {
            const double a = 6.0 * gsl_rng_uniform(r) - 3.0, b = 6.0 * gsl_rng_uniform(r) - 3.0;
            x[2 * t] = a > b ? a : b;
            x[2 * t + 1] = a > b ? b : a;
        }
        cmp_pairs("uniform pairs", x, n);
        for (long t = 0; t < n; t++)
            x[2 * t] = x[2 * t + 1] = (double)(int)(4.0 * gsl_rng_uniform(r)) / 2.0;
        cmp_pairs("tied pairs", x, n);
        for (long t = 0; t < n; t++) {
            x[2 * t] = 400.0 * gsl_rng_uniform(r);
            x[2 * t + 1] = x[2 * t] - 1500.0 * gsl_rng_uniform(r);
        }
        cmp_pairs("wide pairs", x, n);
    }
    for (long t = 0; t < BLK / 2; t++) {
        x[2 * t] = 10.0 * gsl_rng_uniform(r);
        x[2 * t + 1] = x[2 * t] - 20.0 * gsl_rng_uniform(r);
    }
    cmp_pairs("2048 pairs", x, BLK / 2);
    gsl_rng_free(r);
    return check_report("test_vexp");
}
