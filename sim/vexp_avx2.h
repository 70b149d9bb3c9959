/* vexp_avx2.h: the exponential and the softmax's row kernels of vexp.c in four lanes, for CPUs
 * with AVX2 and FMA but not AVX-512 (vexp.c takes the eight-lane ones where it has AVX-512).
 * Included by vexp.c only, after its logarithm's constants (VL_*, vl_c).
 *
 * vx4_exp evaluates the same algorithm as vexp.c's eight lanes, the C library's exp (FMA
 * variant), with the same constants and the same operations in the same order, each fused
 * multiply-add where it has one: every lane is the same double as exp() of its argument
 * (tests/test_vexp.c compares them bit for bit). The divisions are IEEE divisions, the same
 * quotients as the scalar code's. vx_shift and the vx_div kernels carry the names of vexp.c's
 * eight-lane ones, which the softmax rows call. Without these lanes every exponential of a
 * softmax was a call of the C library's exp, and a route at 65536 x 8 took 3-5x longer than
 * with them. */
#ifndef MOE_VEXP_AVX2_H
#define MOE_VEXP_AVX2_H

#include "cols4.h"
#include "vexp_tab.h"

#include <immintrin.h>
#include <math.h>
#include <stdint.h>

/* Four lanes: the C library's fast path, operation for operation, and its tiny-argument case
 * (|a| < 2^-54: 1.0 + a), which every softmax row meets at its maximum. *fast: bit j set where
 * lane j took one of them; the others are for the caller to redo with exp(). */
static inline __attribute__((always_inline)) __m256d vx4_exp(__m256d a, int *fast)
{
    const __m256d absa = _mm256_andnot_pd(_mm256_set1_pd(-0.0), a);
    const __m256d tiny = _mm256_cmp_pd(absa, _mm256_set1_pd(0x1p-54), _CMP_LT_OQ);
    const __m256d inr = _mm256_and_pd(_mm256_cmp_pd(absa, _mm256_set1_pd(0x1p-54), _CMP_GE_OQ),
                                      _mm256_cmp_pd(absa, _mm256_set1_pd(0x1p9), _CMP_LT_OQ));
    *fast = _mm256_movemask_pd(_mm256_or_pd(inr, tiny));
    __m256d kd = _mm256_fmadd_pd(a, _mm256_set1_pd(VX_INVLN2N), _mm256_set1_pd(VX_SHIFT));
    const __m256i ki = _mm256_castpd_si256(kd);
    kd = _mm256_sub_pd(kd, _mm256_set1_pd(VX_SHIFT));
    __m256d r = _mm256_fmadd_pd(kd, _mm256_set1_pd(VX_NEGLN2HI), a);
    r = _mm256_fmadd_pd(kd, _mm256_set1_pd(VX_NEGLN2LO), r);
    /* the table's pairs (tail_i, sb_i) at i = ki mod 128, one 16-byte load each: lanes 0, 2
     * in the low halves and 1, 3 in the high ones, so that the unpacks give lanes in order */
    int64_t ii[4];
    _mm256_storeu_si256((__m256i *)ii, _mm256_slli_epi64(
                                           _mm256_and_si256(ki, _mm256_set1_epi64x(127)), 1));
#define VX4_PAIR(j) _mm_loadu_si128((const __m128i *)(vx_tab + ii[j]))
    const __m256i p02 = _mm256_inserti128_si256(_mm256_castsi128_si256(VX4_PAIR(0)),
                                                VX4_PAIR(2), 1);
    const __m256i p13 = _mm256_inserti128_si256(_mm256_castsi128_si256(VX4_PAIR(1)),
                                                VX4_PAIR(3), 1);
#undef VX4_PAIR
    const __m256d tail = _mm256_castsi256_pd(_mm256_unpacklo_epi64(p02, p13));
    const __m256i sb = _mm256_unpackhi_epi64(p02, p13);
    const __m256i sbits = _mm256_add_epi64(sb, _mm256_slli_epi64(ki, 45));
    const __m256d p23 = _mm256_fmadd_pd(r, _mm256_set1_pd(VX_C3), _mm256_set1_pd(VX_C2));
    const __m256d rt = _mm256_add_pd(r, tail);
    const __m256d r2 = _mm256_mul_pd(r, r);
    const __m256d p45 = _mm256_fmadd_pd(r, _mm256_set1_pd(VX_C5), _mm256_set1_pd(VX_C4));
    const __m256d lo = _mm256_fmadd_pd(p23, r2, rt);
    const __m256d tmp = _mm256_fmadd_pd(_mm256_mul_pd(r2, r2), p45, lo);
    const __m256d scale = _mm256_castsi256_pd(sbits);
    return _mm256_blendv_pd(_mm256_fmadd_pd(scale, tmp, scale),
                            _mm256_add_pd(a, _mm256_set1_pd(1.0)), tiny);
}

/* out[0..3] = exp(a), the lanes outside the fast path by the C library's exp; returns 1 when
 * one was (then some lane of a may be infinite or NaN), else 0. */
static inline __attribute__((always_inline)) int vx4_exp_store(__m256d a, double *out)
{
    int fast;
    _mm256_storeu_pd(out, vx4_exp(a, &fast));
    if (fast == 0xf)
        return 0;
    double av[4];
    _mm256_storeu_pd(av, a);
    for (int j = 0; j < 4; j++)
        if (!(fast >> j & 1))
            out[j] = exp(av[j]);
    return 1;
}

/* out[i] = exp(x[i] - m), i < len; 0 when every argument took the fast path (every x[i] and m
 * then finite), else 1 (the elements after the last multiple of four count as not on it). */
static inline __attribute__((always_inline)) int vx_shift(const double *x, int len, double m,
                                                           double *out)
{
    const __m256d vm = _mm256_set1_pd(m);
    int i = 0, slow = 0;
    for (; i + 4 <= len; i += 4)
        slow |= vx4_exp_store(_mm256_sub_pd(_mm256_loadu_pd(x + i), vm), out + i);
    for (; i < len; i++) {
        out[i] = exp(x[i] - m);
        slow = 1;
    }
    return slow;
}

/* The largest of x[0..len), len >= 1, finite: as the serial loop, but for the sign of a zero
 * maximum (vexp.h's moe_vmax). */
static inline double vx4_max(const double *x, int len)
{
    int i = 0;
    double m = x[0];
    if (len >= 4) {
        __m256d v = _mm256_loadu_pd(x);
        for (i = 4; i + 4 <= len; i += 4)
            v = _mm256_max_pd(v, _mm256_loadu_pd(x + i));
        double t[4];
        _mm256_storeu_pd(t, v);
        m = t[0] > t[1] ? t[0] : t[1];
        m = t[2] > m ? t[2] : m;
        m = t[3] > m ? t[3] : m;
    }
    for (; i < len; i++)
        if (x[i] > m)
            m = x[i];
    return m;
}

/* 1 if x[0..len) are all finite, else 0 (x - x is NaN exactly for an infinity or a NaN). */
static inline int vx4_all_finite(const double *x, size_t len)
{
    int bad = 0;
    size_t i = 0;
    for (; i + 4 <= len; i += 4) {
        const __m256d v = _mm256_loadu_pd(x + i);
        bad |= _mm256_movemask_pd(_mm256_cmp_pd(_mm256_sub_pd(v, v), v, _CMP_UNORD_Q));
    }
    for (; i < len; i++)
        bad |= !isfinite(x[i]);
    return !bad;
}

/* p[i] /= s for i < len */
static inline __attribute__((always_inline)) void vx_div(double *p, int len, double s)
{
    const __m256d vs = _mm256_set1_pd(s);
    int i = 0;
    for (; i + 4 <= len; i += 4)
        _mm256_storeu_pd(p + i, _mm256_div_pd(_mm256_loadu_pd(p + i), vs));
    for (; i < len; i++)
        p[i] /= s;
}

/* vx_div, returning how many quotients are not below lo (NaNs counted). */
static inline __attribute__((always_inline)) int vx_div_count(double *p, int len, double s,
                                                               double lo)
{
    const __m256d vs = _mm256_set1_pd(s), vl = _mm256_set1_pd(lo);
    int i = 0, cnt = 0;
    for (; i + 4 <= len; i += 4) {
        const __m256d q = _mm256_div_pd(_mm256_loadu_pd(p + i), vs);
        _mm256_storeu_pd(p + i, q);
        cnt += __builtin_popcount((unsigned)_mm256_movemask_pd(_mm256_cmp_pd(q, vl,
                                                                             _CMP_NLT_UQ)));
    }
    for (; i < len; i++) {
        p[i] /= s;
        cnt += !(p[i] < lo);
    }
    return cnt;
}

/* vx_div, returning the first index of the largest quotient (0 for a row where none compares:
 * NaNs): each lane keeps its largest quotient and the first block index with it, then the
 * lowest index among the lanes with the largest, then the tail. */
static inline __attribute__((always_inline)) int vx_div_pmax(double *p, int len, double s)
{
    const __m256d vs = _mm256_set1_pd(s);
    __m256d bv = _mm256_set1_pd(-1.0), bi = _mm256_setzero_pd();
    __m256d at = _mm256_set_pd(3.0, 2.0, 1.0, 0.0);
    int i = 0, arg = -1;
    double best = -1.0;
    for (; i + 4 <= len; i += 4) {
        const __m256d q = _mm256_div_pd(_mm256_loadu_pd(p + i), vs);
        _mm256_storeu_pd(p + i, q);
        const __m256d gt = _mm256_cmp_pd(q, bv, _CMP_GT_OQ);
        bv = _mm256_blendv_pd(bv, q, gt);
        bi = _mm256_blendv_pd(bi, at, gt);
        at = _mm256_add_pd(at, _mm256_set1_pd(4.0));
    }
    if (i > 0) { /* without branches: the lanes' largest, then the least index among them */
        __m256d m = _mm256_max_pd(bv, _mm256_permute_pd(bv, 0x5));
        m = _mm256_max_pd(m, _mm256_permute2f128_pd(m, m, 0x01));
        __m256d ix = _mm256_blendv_pd(_mm256_set1_pd((double)len), bi,
                                      _mm256_cmp_pd(bv, m, _CMP_EQ_OQ));
        ix = _mm256_min_pd(ix, _mm256_permute_pd(ix, 0x5));
        ix = _mm256_min_pd(ix, _mm256_permute2f128_pd(ix, ix, 0x01));
        best = _mm256_cvtsd_f64(m);
        arg = (int)_mm256_cvtsd_f64(ix);
    }
    for (; i < len; i++) {
        p[i] /= s;
        if (p[i] > best) {
            best = p[i];
            arg = i;
        }
    }
    return best >= 0.0 ? arg : 0;
}

/* Four lanes of moe_log (vexp.c's VL_* constants and vl_c) in each of the n <= 16 vectors
 * x[0..n) into y: the same operations, k converted exactly (AVX2 has no 64-bit integer to
 * double conversion: 2^52 + 2^51 + e as bits, minus that as a double, exact for the exponents
 * here), the lanes outside its range (zero, negative, subnormal, infinite, NaN) redone by the C
 * library's log. The n vectors go step by step together: one logarithm is a chain of about
 * twenty dependent operations (a division, then ten fused multiply-adds), which alone fill
 * the scheduler (in cache: 7.6 ns a vector one after another, 5.2 eight side by side; in the
 * softmax of rows of eight, one after each four rows' divisions, about 14). */
static inline __attribute__((always_inline)) void vx4_logs(const __m256d *x, __m256d *y,
                                                           const int n)
{
    __m256d f[16], k[16], h[16], s[16], z[16], t[16];
    int ok[16];
#pragma GCC unroll 16
    for (int j = 0; j < n; j++) {
        ok[j] = _mm256_movemask_pd(
            _mm256_and_pd(_mm256_cmp_pd(x[j], _mm256_set1_pd(0x1p-1022), _CMP_GE_OQ),
                          _mm256_cmp_pd(x[j], _mm256_set1_pd(INFINITY), _CMP_LT_OQ)));
        const __m256i ix = _mm256_castpd_si256(x[j]);
        __m256i e = _mm256_sub_epi64(_mm256_srli_epi64(ix, 52), _mm256_set1_epi64x(1023));
        __m256i mb = _mm256_or_si256(_mm256_and_si256(ix, _mm256_set1_epi64x(VL_MANT)),
                                     _mm256_set1_epi64x(VL_ONE));
        const __m256i big = _mm256_cmpgt_epi64(mb, _mm256_set1_epi64x(VL_SQRT2 - 1)); /* >= */
        mb = _mm256_sub_epi64(mb, _mm256_and_si256(big, _mm256_set1_epi64x((int64_t)1 << 52)));
        e = _mm256_sub_epi64(e, big); /* + 1 where big (all ones: -1) */
        f[j] = _mm256_sub_pd(_mm256_castsi256_pd(mb), _mm256_set1_pd(1.0));
        k[j] = _mm256_sub_pd(_mm256_castsi256_pd(_mm256_add_epi64(
                                 e, _mm256_castpd_si256(_mm256_set1_pd(0x1.8p52)))),
                             _mm256_set1_pd(0x1.8p52));
        h[j] = _mm256_mul_pd(_mm256_mul_pd(f[j], f[j]), _mm256_set1_pd(0.5));
        s[j] = _mm256_div_pd(f[j], _mm256_add_pd(_mm256_set1_pd(2.0), f[j]));
        z[j] = _mm256_mul_pd(s[j], s[j]);
        t[j] = _mm256_set1_pd(vl_c[11]);
    }
#pragma GCC unroll 10
    for (int i = 10; i >= 1; i--)
#pragma GCC unroll 16
        for (int j = 0; j < n; j++)
            t[j] = _mm256_fmadd_pd(t[j], z[j], _mm256_set1_pd(vl_c[i]));
#pragma GCC unroll 16
    for (int j = 0; j < n; j++) {
        const __m256d R = _mm256_mul_pd(t[j], z[j]);
        const __m256d in = _mm256_add_pd(_mm256_mul_pd(s[j], _mm256_add_pd(h[j], R)),
                                         _mm256_mul_pd(k[j], _mm256_set1_pd(VL_LN2LO)));
        y[j] = _mm256_add_pd(_mm256_mul_pd(k[j], _mm256_set1_pd(VL_LN2HI)),
                             _mm256_sub_pd(f[j], _mm256_sub_pd(h[j], in)));
    }
    for (int j = 0; j < n; j++) {
        if (ok[j] == 0xf)
            continue;
        double xv[4], yv[4];
        _mm256_storeu_pd(xv, x[j]);
        _mm256_storeu_pd(yv, y[j]);
        for (int l = 0; l < 4; l++)
            if (!(ok[j] >> l & 1))
                yv[l] = log(xv[l]);
        y[j] = _mm256_loadu_pd(yv);
    }
}

static inline __m256d vx4_log(__m256d x)
{
    __m256d y;
    vx4_logs(&x, &y, 1);
    return y;
}

/* lse[j] = m[j] + moe_log(s[j]) for j < n <= 8, four at a time. */
static inline __attribute__((always_inline)) void vx4_lse(const double *m, const double *s,
                                                          int n, double *lse)
{
    int j0 = 0;
    for (; j0 + 4 <= n; j0 += 4)
        _mm256_storeu_pd(lse + j0, _mm256_add_pd(_mm256_loadu_pd(m + j0),
                                                 vx4_log(_mm256_loadu_pd(s + j0))));
    for (; j0 < n; j0 += 4) { /* the last rows, fewer than four */
        double sv[4] = {1.0, 1.0, 1.0, 1.0}, mv[4] = {0.0, 0.0, 0.0, 0.0}, out[4];
        const int c = n - j0 < 4 ? n - j0 : 4;
        for (int j = 0; j < c; j++)
            sv[j] = s[j0 + j], mv[j] = m[j0 + j];
        _mm256_storeu_pd(out, _mm256_add_pd(_mm256_loadu_pd(mv),
                                            vx4_log(_mm256_loadu_pd(sv))));
        for (int j = 0; j < c; j++)
            lse[j0 + j] = out[j];
    }
}

/* g (n, 2): each pair (v0, v1) replaced by its softmax from v0 (vexp.h's moe_softmax_pairs),
 * two pairs a vector, the division that of vx4_pairs_div. */
static inline void vx4_pairs_exp(double *g, long n)
{
    long q = 0;
    for (; q + 4 <= 2 * n; q += 4) {
        const __m256d v = _mm256_loadu_pd(g + q);
        vx4_exp_store(_mm256_sub_pd(v, _mm256_movedup_pd(v)), g + q); /* v - v0 */
    }
    for (; q < 2 * n; q += 2) {
        g[q + 1] = exp(g[q + 1] - g[q]);
        g[q] = exp(g[q] - g[q]);
    }
}

/* g[2i], g[2i+1] divided by s = 0 + g[2i] + g[2i+1], i < n (vexp.h's moe_pairs_div) */
static inline void vx4_pairs_div(double *g, long n)
{
    long q = 0;
    for (; q + 4 <= 2 * n; q += 4) {
        const __m256d ev = _mm256_loadu_pd(g + q);
        /* e0 + e1 in both lanes of a pair: the sum 0 + e0 + e1, as the exponentials are +0,
         * positive or NaN */
        const __m256d s = _mm256_add_pd(ev, _mm256_permute_pd(ev, 0x5));
        _mm256_storeu_pd(g + q, _mm256_div_pd(ev, s));
    }
    for (; q < 2 * n; q += 2) {
        const double s = 0.0 + g[q] + g[q + 1];
        g[q] /= s;
        g[q + 1] /= s;
    }
}

/* Four rows of eight logits as columns (lane j: row r0 + j) between the two steps of
 * vexp_rows4.h's sm_rows4c: the by-rows steps of sm_rows_gen for rows of eight
 * (vx4_max, vx_shift, moe_select_first_eq, the sums, vx_div_pmax, vx4_lse; with the two
 * largest as the selected columns, sm_gather and vx_div_count) on four rows at once, with the
 * same operations on the same operands: no horizontal steps, four sums a vector. */
typedef struct {
    __m256d ev[8];       /* the exponentials, column e in ev[e] */
    __m256d m, s, first; /* each row's maximum, its sum, the first index of its maximum */
    __m256d fi, gi;      /* (top2) the indices of its two largest logits */
    int done;            /* a lane outside the exponential's fast path: the rows go by rows */
} vx4_cols;

/* Step one for the four rows at x (4 x 8): the maxima as vx4_max takes them (the lanes of
 * max(x[0..3], x[4..7]), then t0 > t1 ? t0 : t1 and so on: the same doubles, a zero's sign
 * included), the exponentials, the sums in index order from 0.0, then the first index of the
 * maximum, or with top2 the two largest logits (moe_select_top2_rows8's). */
static inline __attribute__((always_inline)) void vx4_cols_exp(const double *x, vx4_cols *g,
                                                               const int top2)
{
    __m256d c[8], v[4];
    moe_cols8_load(x, c);
    for (int l = 0; l < 4; l++)
        v[l] = _mm256_max_pd(c[l], c[4 + l]);
    g->m = _mm256_max_pd(v[3], _mm256_max_pd(v[2], _mm256_max_pd(v[0], v[1])));
    int fast = 0xf;
    g->s = _mm256_setzero_pd();
    for (int e = 0; e < 8; e++) {
        int f;
        g->ev[e] = vx4_exp(_mm256_sub_pd(c[e], g->m), &f);
        fast &= f;
        g->s = _mm256_add_pd(g->s, g->ev[e]);
    }
    g->done = fast != 0xf;
    if (g->done)
        return;
    if (top2) {
        moe_top2_cols8(c, &g->fi, &g->gi);
        return;
    }
    g->first = _mm256_set1_pd(-1.0);
    for (int e = 7; e >= 0; e--)
        g->first = _mm256_blendv_pd(g->first, _mm256_set1_pd((double)e),
                                    _mm256_cmp_pd(c[e], g->m, _CMP_EQ_OQ));
}

/* The lanes of ev[0..7] at the column indices at (as doubles). */
static inline __attribute__((always_inline)) __m256d vx4_cols_at(const __m256d *ev, __m256d at)
{
    __m256d r = ev[0];
    for (int e = 1; e < 8; e++)
        r = _mm256_blendv_pd(r, ev[e], _mm256_cmp_pd(at, _mm256_set1_pd((double)e), _CMP_EQ_OQ));
    return r;
}

/* Step two for the four rows from r0: the quotients (the same divisions), the first index of
 * the largest (vx_div_pmax's), p at the first index of the maximum, with top2 (idx2 given) the
 * two largest logits' indices, their exponentials (e2) and whether they are p's two largest
 * (istop: vx_div_count's count of quotients not below the smaller one's, sm_sel_lo), the
 * maxima, and the quotients back to rows of p. (lse: the caller's, from vx4_logs of the sums
 * of several steps.) */
static inline __attribute__((always_inline)) void
vx4_cols_div(int r0, double *p, double *mx, int32_t *pmax, int32_t *xfirst, double *pfirst,
             int32_t *idx2, double *e2, uint8_t *istop, const vx4_cols *g)
{
    __m256d q[8];
    for (int e = 0; e < 8; e++)
        q[e] = _mm256_div_pd(g->ev[e], g->s);
    /* p at the first index of the largest logit is the largest p: its exponential is exp(0) =
     * 1 and the others' at most 1 (exp of a negative argument), divided by the same sum */
    const __m256d pf = xfirst && pfirst ? vx4_cols_at(q, g->first) : _mm256_setzero_pd();
    if (pmax) {
        __m256d qm = q[0], pm = _mm256_setzero_pd();
        if (xfirst && pfirst)
            qm = pf;
        else
            for (int e = 1; e < 8; e++)
                qm = _mm256_max_pd(qm, q[e]);
        for (int e = 7; e >= 0; e--)
            pm = _mm256_blendv_pd(pm, _mm256_set1_pd((double)e),
                                  _mm256_cmp_pd(q[e], qm, _CMP_EQ_OQ));
        _mm_storeu_si128((__m128i *)(pmax + r0), _mm256_cvtpd_epi32(pm));
    }
    if (xfirst) {
        _mm_storeu_si128((__m128i *)(xfirst + r0), _mm256_cvtpd_epi32(g->first));
        if (pfirst)
            _mm256_storeu_pd(pfirst + r0, pf);
    }
    if (idx2) {
        moe_idx2_store(g->fi, g->gi, idx2 + 2 * (size_t)r0);
        /* the largest logit's exponential is exp(0) = 1 (its argument the maximum less
         * itself, a zero of either sign: the tiny-argument case, 1.0 + a), so the pair's first
         * needs no look-up, and the second's (at most 1, the smaller of the two) is the one
         * istop compares the quotients with */
        const __m256d one = _mm256_set1_pd(1.0), eg = vx4_cols_at(g->ev, g->gi);
        const __m256d a = _mm256_unpacklo_pd(one, eg), b = _mm256_unpackhi_pd(one, eg);
        double *const e2r = e2 + 2 * (size_t)r0; /* (rows 0 and 2 in a, 1 and 3 in b) */
        _mm_storeu_pd(e2r, _mm256_castpd256_pd128(a));
        _mm_storeu_pd(e2r + 2, _mm256_castpd256_pd128(b));
        _mm_storeu_pd(e2r + 4, _mm256_extractf128_pd(a, 1));
        _mm_storeu_pd(e2r + 6, _mm256_extractf128_pd(b, 1));
        if (istop) {
            const __m256d lo = _mm256_div_pd(eg, g->s);
            __m256i cnt = _mm256_setzero_si256(); /* minus the quotients not below lo */
            for (int e = 0; e < 8; e++)
                cnt = _mm256_add_epi64(cnt, _mm256_castpd_si256(
                                                _mm256_cmp_pd(q[e], lo, _CMP_NLT_UQ)));
            const int two = _mm256_movemask_pd(_mm256_castsi256_pd(
                _mm256_cmpeq_epi64(cnt, _mm256_set1_epi64x(-2))));
            for (int j = 0; j < 4; j++)
                istop[r0 + j] = (uint8_t)(two >> j & 1);
        }
    }
    if (mx)
        _mm256_storeu_pd(mx + r0, g->m);
    moe_cols8_store(q, p + (size_t)r0 * 8);
}

#endif
