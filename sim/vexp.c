/* vexp.c: exp(x[i] - m) over a row, the softmax of rows, and moesim's logarithm (vexp.h). */
#include "vexp.h"
#include "../routers/select.h"

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* ---- the logarithm (moe_log, vexp.h) ----
 * x = 2^k m with m in [sqrt(2)/2, sqrt(2)), f = m - 1 (exact), s = f / (2 + f), so that
 * log(1 + f) = 2 atanh(s) = f - (h - s (h + R(s^2))) with h = f^2 / 2 and R(z) the series
 * sum_{i = 1..11} 2 z^i / (2i + 1) (for |s| <= 0.1716 its first omitted term is below 2^-60 of
 * the result), and log x = k ln2_hi + (f - (h - (s (h + R) + k ln2_lo))): ln 2 in two parts,
 * the first with 32 trailing zero bits so that k ln2_hi is exact. The scalar function and the
 * vector lanes below take the same operations in the same order, each fused multiply-add in
 * both, so they give the same doubles. */
#define VL_LN2HI 0x1.62e42fee00000p-1
#define VL_LN2LO 0x1.a39ef35793c76p-33
#define VL_SQRT2 0x3ff6a09e667f3bcdLL   /* the bits of RN(sqrt 2) */
#define VL_MANT 0x000fffffffffffffLL
#define VL_ONE 0x3ff0000000000000LL
/* the coefficients of R, vl_c[i] = 2 / (2i + 1) (each quotient rounded once) */
static const double vl_c[12] = {0.0,        2.0 / 3.0,  2.0 / 5.0,  2.0 / 7.0,
                                2.0 / 9.0,  2.0 / 11.0, 2.0 / 13.0, 2.0 / 15.0,
                                2.0 / 17.0, 2.0 / 19.0, 2.0 / 21.0, 2.0 / 23.0};

double moe_log(double x)
{
    if (!(x >= 0x1p-1022 && x < INFINITY))
        return log(x); /* zero, negative, subnormal, infinite or NaN: the C library's */
    int64_t ix, mb;
    memcpy(&ix, &x, sizeof ix);
    int64_t e = (ix >> 52) - 1023;
    mb = (ix & VL_MANT) | VL_ONE; /* m in [1, 2) */
    if (mb >= VL_SQRT2) {         /* m / 2 */
        mb -= (int64_t)1 << 52;
        e += 1;
    }
    double m;
    memcpy(&m, &mb, sizeof m);
    const double f = m - 1.0, k = (double)e;
    const double h = (f * f) * 0.5, s = f / (2.0 + f), z = s * s;
    double t = vl_c[11];
#pragma GCC unroll 10
    for (int i = 10; i >= 1; i--)
        t = fma(t, z, vl_c[i]);
    const double R = t * z;
    return k * VL_LN2HI + (f - (h - (s * (h + R) + k * VL_LN2LO)));
}

#if defined(__AVX512F__)
#include <immintrin.h>

#include "vexp_tab.h"

/* The table's pairs at the even indices idx (eight lanes): tail = vx_tab[idx], sb =
 * vx_tab[idx + 1]. Eight 16-byte loads and two permutes: on the AMD host (Zen 5) the two
 * 8-lane gathers they replace made the bound's pass about 20% slower. */
static inline void vx_lookup(__m512i idx, __m512d *tail, __m512i *sb)
{
    int64_t ii[8];
    _mm512_storeu_si512((void *)ii, idx);
#define VX_PAIR(j) _mm_loadu_si128((const __m128i *)(vx_tab + ii[j]))
#define VX_FOUR(j)                                                                          \
    _mm256_inserti128_si256(_mm256_castsi128_si256(VX_PAIR(j)), VX_PAIR(j + 1), 1)
    const __m512i ta = _mm512_inserti64x4(_mm512_castsi256_si512(VX_FOUR(0)), VX_FOUR(2), 1);
    const __m512i tb = _mm512_inserti64x4(_mm512_castsi256_si512(VX_FOUR(4)), VX_FOUR(6), 1);
#undef VX_FOUR
#undef VX_PAIR
    *tail = _mm512_castsi512_pd(
        _mm512_permutex2var_epi64(ta, _mm512_set_epi64(14, 12, 10, 8, 6, 4, 2, 0), tb));
    *sb = _mm512_permutex2var_epi64(ta, _mm512_set_epi64(15, 13, 11, 9, 7, 5, 3, 1), tb);
}

/* Eight lanes: the C library's fast path, operation for operation, and its tiny-argument case
 * (|a| < 2^-54: 1.0 + a, which is 1.0), which every softmax row meets at its maximum. Lanes
 * outside both are flagged in the returned mask for the caller to redo with exp(). */
static inline __m512d vx_exp8(__m512d a, __mmask8 *fast)
{
    const __m512d absa = _mm512_abs_pd(a);
    const __mmask8 tiny = _mm512_cmp_pd_mask(absa, _mm512_set1_pd(0x1p-54), _CMP_LT_OQ);
    *fast = (_mm512_cmp_pd_mask(absa, _mm512_set1_pd(0x1p-54), _CMP_GE_OQ) &
             _mm512_cmp_pd_mask(absa, _mm512_set1_pd(0x1p9), _CMP_LT_OQ)) | tiny;
    __m512d kd = _mm512_fmadd_pd(a, _mm512_set1_pd(VX_INVLN2N), _mm512_set1_pd(VX_SHIFT));
    const __m512i ki = _mm512_castpd_si512(kd);
    kd = _mm512_sub_pd(kd, _mm512_set1_pd(VX_SHIFT));
    __m512d r = _mm512_fmadd_pd(kd, _mm512_set1_pd(VX_NEGLN2HI), a);
    r = _mm512_fmadd_pd(kd, _mm512_set1_pd(VX_NEGLN2LO), r);
    const __m512i idx = _mm512_slli_epi64(_mm512_and_si512(ki, _mm512_set1_epi64(127)), 1);
    __m512d tail;
    __m512i sb;
    vx_lookup(idx, &tail, &sb);
    const __m512i sbits = _mm512_add_epi64(sb, _mm512_slli_epi64(ki, 45));
    const __m512d p23 = _mm512_fmadd_pd(r, _mm512_set1_pd(VX_C3), _mm512_set1_pd(VX_C2));
    const __m512d rt = _mm512_add_pd(r, tail);
    const __m512d r2 = _mm512_mul_pd(r, r);
    const __m512d p45 = _mm512_fmadd_pd(r, _mm512_set1_pd(VX_C5), _mm512_set1_pd(VX_C4));
    const __m512d lo = _mm512_fmadd_pd(p23, r2, rt);
    const __m512d tmp = _mm512_fmadd_pd(_mm512_mul_pd(r2, r2), p45, lo);
    const __m512d scale = _mm512_castsi512_pd(sbits);
    return _mm512_mask_add_pd(_mm512_fmadd_pd(scale, tmp, scale), tiny, a,
                              _mm512_set1_pd(1.0));
}

/* out[0..7] = exp(a): vx_exp8, and the C library's exp for the lanes outside its range, and
 * *e the same eight values (from the register when every lane took the fast path, else from
 * out). Returns 1 when a lane was outside it, else 0: then every lane of a is finite. Always
 * inline: as a call (GCC's choice for a function this long) every vector of eight paid for it,
 * and the caller's vectors went through memory around it. */
static inline __attribute__((always_inline)) int vx_exp8_keep(__m512d a, double *out, __m512d *e)
{
    __mmask8 fast;
    *e = vx_exp8(a, &fast);
    _mm512_storeu_pd(out, *e);
    if (fast != 0xff) {
        double av[8];
        _mm512_storeu_pd(av, a);
        for (int j = 0; j < 8; j++)
            if (!(fast >> j & 1))
                out[j] = exp(av[j]);
        *e = _mm512_loadu_pd(out);
        return 1;
    }
    return 0;
}

/* vx_exp8_keep without the register. */
static inline __attribute__((always_inline)) int vx_exp8_store(__m512d a, double *out)
{
    __m512d e;
    return vx_exp8_keep(a, out, &e);
}

/* Eight lanes of moe_log: the same operations (k from its integer by an exact conversion),
 * the lanes outside its range (ok clear) redone by moe_log, i.e. the C library's log. */
static inline __m512d vl_log8(__m512d x)
{
    const __mmask8 ok = _mm512_cmp_pd_mask(x, _mm512_set1_pd(0x1p-1022), _CMP_GE_OQ) &
                        _mm512_cmp_pd_mask(x, _mm512_set1_pd(INFINITY), _CMP_LT_OQ);
    const __m512i ix = _mm512_castpd_si512(x);
    __m512i e = _mm512_sub_epi64(_mm512_srai_epi64(ix, 52), _mm512_set1_epi64(1023));
    __m512i mb = _mm512_or_si512(_mm512_and_si512(ix, _mm512_set1_epi64(VL_MANT)),
                                 _mm512_set1_epi64(VL_ONE));
    const __mmask8 big = _mm512_cmpge_epi64_mask(mb, _mm512_set1_epi64(VL_SQRT2));
    mb = _mm512_mask_sub_epi64(mb, big, mb, _mm512_set1_epi64((int64_t)1 << 52));
    e = _mm512_mask_add_epi64(e, big, e, _mm512_set1_epi64(1));
    const __m512d f = _mm512_sub_pd(_mm512_castsi512_pd(mb), _mm512_set1_pd(1.0));
    const __m512d k = _mm512_cvtepi32_pd(_mm512_cvtepi64_epi32(e));
    const __m512d h = _mm512_mul_pd(_mm512_mul_pd(f, f), _mm512_set1_pd(0.5));
    const __m512d s = _mm512_div_pd(f, _mm512_add_pd(_mm512_set1_pd(2.0), f));
    const __m512d z = _mm512_mul_pd(s, s);
    __m512d t = _mm512_set1_pd(vl_c[11]);
#pragma GCC unroll 10
    for (int i = 10; i >= 1; i--)
        t = _mm512_fmadd_pd(t, z, _mm512_set1_pd(vl_c[i]));
    const __m512d R = _mm512_mul_pd(t, z);
    const __m512d in = _mm512_add_pd(_mm512_mul_pd(s, _mm512_add_pd(h, R)),
                                     _mm512_mul_pd(k, _mm512_set1_pd(VL_LN2LO)));
    __m512d y = _mm512_add_pd(_mm512_mul_pd(k, _mm512_set1_pd(VL_LN2HI)),
                              _mm512_sub_pd(f, _mm512_sub_pd(h, in)));
    if (ok != 0xff) {
        double xv[8], yv[8];
        _mm512_storeu_pd(xv, x);
        _mm512_storeu_pd(yv, y);
        for (int j = 0; j < 8; j++)
            if (!(ok >> j & 1))
                yv[j] = log(xv[j]);
        y = _mm512_loadu_pd(yv);
    }
    return y;
}

/* lse[j] = m[j] + moe_log(s[j]) for j < n <= 8, in one vector. */
static inline void vl_lse(const double *m, const double *s, int n, double *lse)
{
    const __mmask8 km = (__mmask8)((1u << n) - 1u);
    const __m512d sv = _mm512_mask_loadu_pd(_mm512_set1_pd(1.0), km, s);
    _mm512_mask_storeu_pd(lse, km, _mm512_add_pd(_mm512_maskz_loadu_pd(km, m), vl_log8(sv)));
}

/* moe_vexp_shift, returning 0 when every argument x[i] - m took the vector's fast path (so
 * that every x[i] is finite: an infinite or NaN x[i] or m makes x[i] - m infinite or NaN),
 * else 1 (the elements after the last multiple of eight count as not on it). */
static inline int vx_shift(const double *x, int len, double m, double *out)
{
    const __m512d vm = _mm512_set1_pd(m);
    int i = 0, slow = 0;
    for (; i + 8 <= len; i += 8)
        slow |= vx_exp8_store(_mm512_sub_pd(_mm512_loadu_pd(x + i), vm), out + i);
    for (; i < len; i++) {
        out[i] = exp(x[i] - m);
        slow = 1;
    }
    return slow;
}

void moe_vexp_shift(const double *x, int len, double m, double *out)
{
    (void)vx_shift(x, len, m, out);
}

double moe_vmax(const double *x, int len)
{
    int i = 0;
    double m = x[0];
    if (len >= 8) {
        __m512d v = _mm512_loadu_pd(x);
        for (i = 8; i + 8 <= len; i += 8)
            v = _mm512_max_pd(v, _mm512_loadu_pd(x + i));
        m = _mm512_reduce_max_pd(v);
    }
    for (; i < len; i++)
        if (x[i] > m)
            m = x[i];
    return m;
}

int moe_all_finite(const double *x, size_t len)
{
    /* x - x is 0 for a finite x and NaN for an infinity or a NaN */
    __mmask8 bad = 0;
    size_t i = 0;
    for (; i + 8 <= len; i += 8) {
        const __m512d v = _mm512_loadu_pd(x + i);
        bad |= _mm512_cmp_pd_mask(_mm512_sub_pd(v, v), _mm512_setzero_pd(), _CMP_UNORD_Q);
    }
    for (; i < len; i++)
        bad |= !isfinite(x[i]);
    return !bad;
}

void moe_softmax_pairs(double *g, long n)
{
    for (long q = 0; q < 2 * n; q += 8) { /* four pairs a vector, the last ones masked */
        const long left = 2 * n - q;
        const __mmask8 m = left >= 8 ? (__mmask8)0xff : (__mmask8)((1u << left) - 1u);
        const __m512d v = _mm512_maskz_loadu_pd(m, g + q);
        double e[8];
        vx_exp8_store(_mm512_sub_pd(v, _mm512_movedup_pd(v)), e); /* v - v0 */
        _mm512_mask_storeu_pd(g + q, m, _mm512_loadu_pd(e));
    }
    moe_pairs_div(g, n);
}

void moe_pairs_div(double *g, long n)
{
    for (long q = 0; q < 2 * n; q += 8) { /* four pairs a vector, the last ones masked */
        const long left = 2 * n - q;
        const __mmask8 m = left >= 8 ? (__mmask8)0xff : (__mmask8)((1u << left) - 1u);
        const __m512d ev = _mm512_maskz_loadu_pd(m, g + q);
        const __m512d s = _mm512_add_pd(ev, _mm512_permute_pd(ev, 0x55)); /* e0 + e1 */
        _mm512_mask_storeu_pd(g + q, m, _mm512_div_pd(ev, s));
    }
}

static inline __attribute__((always_inline)) void vx_div(double *p, int len, double s)
{
    const __m512d vs = _mm512_set1_pd(s);
    int i = 0;
    for (; i + 8 <= len; i += 8)
        _mm512_storeu_pd(p + i, _mm512_div_pd(_mm512_loadu_pd(p + i), vs));
    for (; i < len; i++)
        p[i] /= s;
}

/* vx_div, returning how many quotients are not below lo (NaNs counted, as moe_select_is_top
 * counts them). */
static inline __attribute__((always_inline)) int vx_div_count(double *p, int len, double s,
                                                              double lo)
{
    const __m512d vs = _mm512_set1_pd(s), vl = _mm512_set1_pd(lo);
    int i = 0, cnt = 0;
    for (; i + 8 <= len; i += 8) {
        const __m512d q = _mm512_div_pd(_mm512_loadu_pd(p + i), vs);
        _mm512_storeu_pd(p + i, q);
        cnt += __builtin_popcount(_mm512_cmp_pd_mask(q, vl, _CMP_NLT_UQ));
    }
    for (; i < len; i++) {
        p[i] /= s;
        cnt += !(p[i] < lo);
    }
    return cnt;
}

/* vx_div, returning the first index of the largest quotient (0 for a row where none compares:
 * NaNs): each lane keeps its largest quotient and the index of its first block with it (a later
 * block takes over only when larger), then the lowest index among the lanes with the largest.
 * (vx_div, vx_div_count and vx_div_pmax are always inline: GCC stopped inlining them into the
 * two loops of sm_rows_gen, and the call per row took 14% of switch's samples at E = 16.) */
static inline __attribute__((always_inline)) int vx_div_pmax(double *p, int len, double s)
{
    const __m512d vs = _mm512_set1_pd(s);
    __m512d bv = _mm512_set1_pd(-1.0);
    __m512i bi = _mm512_setzero_si512(), at = _mm512_set_epi64(7, 6, 5, 4, 3, 2, 1, 0);
    int i = 0, arg = -1;
    double best = -1.0;
    for (; i + 8 <= len; i += 8) {
        const __m512d q = _mm512_div_pd(_mm512_loadu_pd(p + i), vs);
        _mm512_storeu_pd(p + i, q);
        const __mmask8 gt = _mm512_cmp_pd_mask(q, bv, _CMP_GT_OQ);
        bv = _mm512_mask_mov_pd(bv, gt, q);
        bi = _mm512_mask_mov_epi64(bi, gt, at);
        at = _mm512_add_epi64(at, _mm512_set1_epi64(8));
    }
    if (i > 0) {
        best = _mm512_reduce_max_pd(bv);
        const __mmask8 eq = _mm512_cmp_pd_mask(bv, _mm512_set1_pd(best), _CMP_EQ_OQ);
        arg = (int)_mm512_mask_reduce_min_epi64(eq, bi);
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

#elif defined(__AVX2__) && defined(__FMA__)
#include "vexp_avx2.h"

int moe_all_finite(const double *x, size_t len) { return vx4_all_finite(x, len); }

double moe_vmax(const double *x, int len) { return vx4_max(x, len); }

void moe_softmax_pairs(double *g, long n)
{
    vx4_pairs_exp(g, n);
    vx4_pairs_div(g, n);
}

void moe_pairs_div(double *g, long n) { vx4_pairs_div(g, n); }

void moe_vexp_shift(const double *x, int len, double m, double *out)
{
    (void)vx_shift(x, len, m, out);
}

#else

int moe_all_finite(const double *x, size_t len)
{
    int bad = 0;
    for (size_t i = 0; i < len; i++)
        bad |= !isfinite(x[i]);
    return !bad;
}

double moe_vmax(const double *x, int len)
{
    double m = x[0];
    for (int i = 1; i < len; i++)
        if (x[i] > m)
            m = x[i];
    return m;
}

void moe_softmax_pairs(double *g, long n)
{
    for (long t = 0; t < n; t++) {
        double *v = g + 2 * t;
        v[1] = exp(v[1] - v[0]);
        v[0] = exp(v[0] - v[0]);
    }
    moe_pairs_div(g, n);
}

void moe_pairs_div(double *g, long n)
{
    for (long t = 0; t < n; t++) {
        double *v = g + 2 * t;
        const double s = 0.0 + v[0] + v[1];
        v[0] /= s;
        v[1] /= s;
    }
}

static void vx_div(double *p, int len, double s)
{
    for (int i = 0; i < len; i++)
        p[i] /= s;
}

static int vx_div_count(double *p, int len, double s, double lo)
{
    int cnt = 0;
    for (int i = 0; i < len; i++) {
        p[i] /= s;
        cnt += !(p[i] < lo);
    }
    return cnt;
}

static int vx_div_pmax(double *p, int len, double s)
{
    int arg = 0;
    double best = -1.0;
    for (int i = 0; i < len; i++) {
        p[i] /= s;
        if (p[i] > best) {
            best = p[i];
            arg = i;
        }
    }
    return arg;
}

static int vx_shift(const double *x, int len, double m, double *out)
{
    for (int i = 0; i < len; i++)
        out[i] = exp(x[i] - m);
    return 1;
}

void moe_vexp_shift(const double *x, int len, double m, double *out)
{
    (void)vx_shift(x, len, m, out);
}

#endif

/* s[j] += the elements of row pr[j] (len), j < nr <= 8, each sum in index order. */
static inline void sm_sums(const double *const *pr, int nr, int len, double *s)
{
    if (nr == 8) {
        for (int i = 0; i < len; i++) { /* eight independent sums, each in index order */
            s[0] += pr[0][i], s[1] += pr[1][i], s[2] += pr[2][i], s[3] += pr[3][i];
            s[4] += pr[4][i], s[5] += pr[5][i], s[6] += pr[6][i], s[7] += pr[7][i];
        }
    } else {
        for (int j = 0; j < nr; j++)
            for (int i = 0; i < len; i++)
                s[j] += pr[j][i];
    }
}

/* es (nr, k) = the values of e (nr, len) at the columns sel (nr, k), row by row. */
static inline void sm_gather(const double *e, int nr, int len, const int32_t *sel, int k,
                             double *es)
{
    for (int j = 0; j < nr; j++)
        for (int q = 0; q < k; q++)
            es[(size_t)j * k + q] = e[(size_t)j * len + sel[(size_t)j * k + q]];
}

/* The smallest of p at a row's k selected columns, from their exponentials es (k) and the
 * row's sum s: the smallest exponential (NaN when one is NaN, as moe_select_is_top's minimum)
 * divided by s, which is the smallest quotient since rounding keeps the order. */
static inline double sm_sel_lo(const double *es, int k, double s)
{
    double lo = es[0];
    for (int q = 1; q < k; q++)
        lo = es[q] < lo || es[q] != es[q] ? es[q] : lo;
    return lo / s;
}

/* lse[j] = m[j] + moe_log(s[j]) for j < n <= 8 (one vector with AVX-512, two with AVX2). */
static inline void sm_lse(const double *m, const double *s, int n, double *lse)
{
#if defined(__AVX512F__)
    vl_lse(m, s, n, lse);
#elif defined(__AVX2__) && defined(__FMA__)
    vx4_lse(m, s, n, lse);
#else
    for (int j = 0; j < n; j++)
        lse[j] = m[j] + moe_log(s[j]);
#endif
}

#if defined(__AVX512F__)
/* Row v's two largest (moe_select_top2_8 of v from its maximum m) into idx2; idx2[0] = -1 for a
 * row it declines. */
static inline void sm_top2(__m512d v, double m, int32_t *idx2)
{
    if (!moe_select_top2_8v(v, m, idx2, idx2 + 1))
        idx2[0] = -1;
}

/* e2 (nr, 2) = the numerators e (nr, 8) at the indices idx2 (nr, 2) of the rows not declined. */
static inline void sm_top2_num(const double *e, int nr, const int32_t *idx2, double *e2)
{
    for (int j = 0; j < nr; j++)
        if (idx2[2 * j] >= 0) {
            e2[2 * j] = e[(size_t)j * 8 + idx2[2 * j]];
            e2[2 * j + 1] = e[(size_t)j * 8 + idx2[2 * j + 1]];
        }
}

/* Step one of sm_rows8 for the eight rows from r0: each row's maximum m, first index of it
 * (xfirst), two largest (idx2) and exponentials ev (also into p). */
static inline __attribute__((always_inline)) void
sm_rows8_exp(const double *x, int nrows, int r0, double *p, int32_t *idx2, int32_t *xfirst,
             int *slow, double *m, __m512d *ev)
{
    /* the rows after next on their way from memory (the hardware's prefetcher does not
     * keep up with this loop's streams: the pass took 8% longer without) */
    if (r0 + 24 <= nrows)
        for (int j = 0; j < 8; j++)
            __builtin_prefetch(x + (size_t)(r0 + 16 + j) * 8);
    for (int j = 0; j < 8; j++) {
        const size_t o = (size_t)(r0 + j) * 8;
        const __m512d v = _mm512_loadu_pd(x + o);
        m[j] = _mm512_reduce_max_pd(v);
        if (xfirst) { /* as moe_select_first_eq8 */
            const __mmask8 eq = _mm512_cmp_pd_mask(v, _mm512_set1_pd(m[j]), _CMP_EQ_OQ);
            xfirst[r0 + j] = eq ? __builtin_ctz(eq) : -1;
        }
        *slow |= vx_exp8_keep(_mm512_sub_pd(v, _mm512_set1_pd(m[j])), p + o, &ev[j]);
        if (idx2)
            sm_top2(v, m[j], idx2 + 2 * (size_t)(r0 + j));
    }
}

/* Step two of sm_rows8 for the eight rows from r0, whose step one left m and ev: the sums,
 * the quotients and what comes from them. */
static inline __attribute__((always_inline)) void
sm_rows8_div(int r0, double *p, double *lse, double *mx, int32_t *idx2, double *e2,
             const int32_t *sel, int k, double *esel, uint8_t *istop, int32_t *pmax,
             const int32_t *xfirst, double *pfirst, const double *m, const __m512d *ev)
{
    double s[8] = {0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0};
    const double *pr[8];
    for (int j = 0; j < 8; j++)
        pr[j] = p + (size_t)(r0 + j) * 8;
    sm_sums(pr, 8, 8, s);
    if (idx2)
        sm_top2_num(p + (size_t)r0 * 8, 8, idx2 + 2 * (size_t)r0, e2 + 2 * (size_t)r0);
    if (sel)
        sm_gather(p + (size_t)r0 * 8, 8, 8, sel + (size_t)r0 * k, k, esel + (size_t)r0 * k);
    for (int j = 0; j < 8; j++) {
        double *pj = p + (size_t)(r0 + j) * 8;
        const __m512d q = _mm512_div_pd(ev[j], _mm512_set1_pd(s[j]));
        _mm512_storeu_pd(pj, q);
        const int xf = xfirst ? xfirst[r0 + j] : -1;
        const __m512d pxf = /* p at the first index of the maximum, in every lane */
            xf >= 0 ? _mm512_permutexvar_pd(_mm512_set1_epi64(xf), q) : _mm512_setzero_pd();
        if (pmax) { /* the largest p is the one at the first index of the maximum (the
                     * exponential there is 1, every other at most 1), when there is one */
            const __m512d big = xf >= 0 ? pxf : _mm512_set1_pd(_mm512_reduce_max_pd(q));
            const __mmask8 eq = _mm512_cmp_pd_mask(q, big, _CMP_EQ_OQ);
            pmax[r0 + j] = eq ? __builtin_ctz(eq) : 0;
        }
        if (istop && idx2) { /* p at the second choice, the smaller of the two */
            const int32_t *ij = idx2 + 2 * (size_t)(r0 + j);
            const int l2 = ij[0] >= 0 ? ij[1] & 7 : 0;
            const __m512d lo = _mm512_permutexvar_pd(_mm512_set1_epi64(l2), q);
            istop[r0 + j] = ij[0] >= 0 && __builtin_popcount(_mm512_cmp_pd_mask(
                                              q, lo, _CMP_NLT_UQ)) == 2;
        } else if (istop) {
            const double lo = sm_sel_lo(esel + (size_t)(r0 + j) * k, k, s[j]);
            istop[r0 + j] = __builtin_popcount(_mm512_cmp_pd_mask(
                                q, _mm512_set1_pd(lo), _CMP_NLT_UQ)) == k &&
                            lo == lo;
        }
        if (pfirst && xf >= 0)
            pfirst[r0 + j] = _mm512_cvtsd_f64(pxf);
        if (mx)
            mx[r0 + j] = m[j];
    }
    if (lse)
        vl_lse(m, s, 8, lse + r0);
}

/* The 8 x 8 block of doubles r (row j in r[j]) transposed in place: in-lane pairs, then two
 * rounds of 128-bit lanes. */
static inline __attribute__((always_inline)) void sm_transpose8(__m512d *r)
{
    __m512d t[8], u[8];
    for (int i = 0; i < 4; i++) { /* t[2i]: rows 2i, 2i+1 at the even columns, t[2i+1] odd */
        t[2 * i] = _mm512_unpacklo_pd(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_pd(r[2 * i], r[2 * i + 1]);
    }
    for (int h = 0; h < 8; h += 4) { /* u[h + c]: four rows at columns c and c + 4 */
        u[h] = _mm512_shuffle_f64x2(t[h], t[h + 2], 0x88);
        u[h + 1] = _mm512_shuffle_f64x2(t[h + 1], t[h + 3], 0x88);
        u[h + 2] = _mm512_shuffle_f64x2(t[h], t[h + 2], 0xDD);
        u[h + 3] = _mm512_shuffle_f64x2(t[h + 1], t[h + 3], 0xDD);
    }
    for (int c = 0; c < 4; c++) {
        r[c] = _mm512_shuffle_f64x2(u[c], u[c + 4], 0x88);
        r[c + 4] = _mm512_shuffle_f64x2(u[c], u[c + 4], 0xDD);
    }
}

/* The columns c (8) of the eight rows x (8 x 8, row after row): c[e] lane j = x[j][e]. Column
 * pairs 2q, 2q+1 of rows 0, 2, 4, 6 and of rows 1, 3, 5, 7 gathered by 16-byte loads into the
 * 128-bit lanes, then split by in-lane unpacks: no shuffle across lanes (with
 * sm_transpose8 instead the pass took 5% longer). */
static inline __attribute__((always_inline)) void sm_columns8(const double *x, __m512d *c)
{
    for (int q = 0; q < 4; q++) {
        __m512d a = _mm512_broadcast_f64x2(_mm_loadu_pd(x + 2 * q));
        __m512d b = _mm512_broadcast_f64x2(_mm_loadu_pd(x + 8 + 2 * q));
        for (int l = 1; l < 4; l++) {
            a = _mm512_mask_broadcast_f64x2(a, (__mmask8)(3 << 2 * l),
                                            _mm_loadu_pd(x + 16 * l + 2 * q));
            b = _mm512_mask_broadcast_f64x2(b, (__mmask8)(3 << 2 * l),
                                            _mm_loadu_pd(x + 16 * l + 8 + 2 * q));
        }
        c[2 * q] = _mm512_unpacklo_pd(a, b);
        c[2 * q + 1] = _mm512_unpackhi_pd(a, b);
    }
}

/* Eight rows as columns (lane j: row r0 + j) between the steps of sm_rows8c. */
typedef struct {
    __m512d ev[8]; /* the exponentials, column e in ev[e] */
    __m512d m, s;  /* each row's maximum and sum */
    __m512i first; /* each row's first index of its maximum */
    int done;      /* the rows went through sm_rows8_exp and sm_rows8_div instead */
} sm_cols8;

/* Step one of sm_rows8c for the eight rows from r0: sm_rows8_exp's results (but the two
 * largest) by columns. The maxima by the tree of _mm512_reduce_max_pd (the same operands in
 * the same places: the same doubles, a zero's sign included), the first index of the maximum
 * by masks, each row's sum by vector additions in index order (the order of sm_sums). A block
 * with a lane outside the exponential's fast range leaves g->done for the caller. */
static inline __attribute__((always_inline)) void
sm_rows8c_exp(const double *x, int nrows, int r0, int32_t *xfirst, sm_cols8 *g)
{
    if (r0 + 24 <= nrows) /* (as sm_rows8_exp) */
        for (int j = 0; j < 8; j++)
            __builtin_prefetch(x + (size_t)(r0 + 16 + j) * 8);
    __m512d c[8];
    sm_columns8(x + (size_t)r0 * 8, c);
    const __m512d a0 = _mm512_max_pd(c[4], c[0]), a1 = _mm512_max_pd(c[5], c[1]);
    const __m512d a2 = _mm512_max_pd(c[6], c[2]), a3 = _mm512_max_pd(c[7], c[3]);
    g->m = _mm512_max_pd(_mm512_max_pd(a2, a0), _mm512_max_pd(a3, a1));
    __mmask8 fast = 0xff;
    g->s = _mm512_setzero_pd();
    for (int e = 0; e < 8; e++) {
        __mmask8 f;
        g->ev[e] = vx_exp8(_mm512_sub_pd(c[e], g->m), &f);
        fast &= f;
        g->s = _mm512_add_pd(g->s, g->ev[e]);
    }
    g->done = fast != 0xff;
    if (g->done)
        return;
    g->first = _mm512_set1_epi64(-1);
    for (int e = 7; e >= 0; e--)
        g->first = _mm512_mask_mov_epi64(g->first, _mm512_cmp_pd_mask(c[e], g->m, _CMP_EQ_OQ),
                                         _mm512_set1_epi64(e));
    if (xfirst)
        _mm256_storeu_si256((__m256i *)(xfirst + r0), _mm512_cvtepi64_epi32(g->first));
}

/* Step two of sm_rows8c for the eight rows from r0 (sm_rows8_div's results): the quotients by
 * columns (the same divisions), p at the first index of the maximum and the first index of
 * the largest p by masks, then the quotients back to rows. */
static inline __attribute__((always_inline)) void
sm_rows8c_div(int r0, double *p, double *lse, double *mx, int32_t *pmax, double *pfirst,
              const sm_cols8 *g)
{
    __m512d q[8];
    for (int e = 0; e < 8; e++)
        q[e] = _mm512_div_pd(g->ev[e], g->s);
    __m512d pxf = q[0]; /* p at the first index of the maximum (every row has one here) */
    for (int e = 1; e < 8; e++)
        pxf = _mm512_mask_mov_pd(pxf, _mm512_cmpeq_epi64_mask(g->first, _mm512_set1_epi64(e)),
                                 q[e]);
    if (pmax) { /* the largest p is the one at the first index of the maximum */
        __m512i pm = _mm512_setzero_si512();
        for (int e = 7; e >= 0; e--)
            pm = _mm512_mask_mov_epi64(pm, _mm512_cmp_pd_mask(q[e], pxf, _CMP_EQ_OQ),
                                       _mm512_set1_epi64(e));
        _mm256_storeu_si256((__m256i *)(pmax + r0), _mm512_cvtepi64_epi32(pm));
    }
    if (pfirst)
        _mm512_storeu_pd(pfirst + r0, pxf);
    if (mx)
        _mm512_storeu_pd(mx + r0, g->m);
    if (lse) {
        double m[8], s[8];
        _mm512_storeu_pd(m, g->m);
        _mm512_storeu_pd(s, g->s);
        vl_lse(m, s, 8, lse + r0);
    }
    sm_transpose8(q);
    for (int j = 0; j < 8; j++)
        _mm512_storeu_pd(p + (size_t)(r0 + j) * 8, q[j]);
}

/* Rows of eight logits (E = 8), eight rows at a time, each row one vector: the steps of
 * moe_softmax_rows_max below (moe_vmax, moe_vexp_shift, the sums, vx_div or vx_div_pmax) inline,
 * with the same operations, step two of each eight rows after step one of the next eight (so
 * that the sums do not wait for the last row's exponentials while nothing else is ready).
 * Returns the rows taken: nrows rounded down to a multiple of eight. */
static inline __attribute__((always_inline)) int
sm_rows8(const double *x, int nrows, double *p, double *lse, double *mx, int32_t *idx2,
         double *e2, const int32_t *sel, int k, double *esel, uint8_t *istop, int32_t *pmax,
         int32_t *xfirst, double *pfirst, int *slow)
{
    const int full = nrows / 8 * 8;
    double m[2][8];
    __m512d ev[2][8]; /* the rows' exponentials, kept for their division */
    for (int r0 = 0; r0 < full + 8; r0 += 8) {
        const int h = (r0 / 8) & 1;
        if (r0 < full)
            sm_rows8_exp(x, nrows, r0, p, idx2, xfirst, slow, m[h], ev[h]);
        if (r0 > 0)
            sm_rows8_div(r0 - 8, p, lse, mx, idx2, e2, sel, k, esel, istop, pmax, xfirst, pfirst,
                         m[h ^ 1], ev[h ^ 1]);
    }
    return full;
}

/* sm_rows8 without sel, esel, istop and the two largest, the rows as columns (sm_rows8c_exp
 * and sm_rows8c_div, again step two of each eight rows after step one of the next eight):
 * the same doubles and indices in 12-17% less time than by rows, one thread alone, on
 * rows in cache: no horizontal maximum, and eight sums a vector instead of single doubles. The
 * top-2 rows (moe_softmax_rows8_top2) stay by rows: by columns they took 15% less alone but 9%
 * longer for gshard with both threads busy. */
static inline __attribute__((always_inline)) int
sm_rows8c(const double *x, int nrows, double *p, double *lse, double *mx, int32_t *pmax,
          int32_t *xfirst, double *pfirst, int *slow)
{
    const int full = nrows / 8 * 8;
    sm_cols8 g[2];
    for (int r0 = 0; r0 < full + 8; r0 += 8) {
        const int h = (r0 / 8) & 1;
        if (r0 < full) {
            sm_rows8c_exp(x, nrows, r0, xfirst, &g[h]);
            if (g[h].done) { /* by rows, at once */
                double m[8];
                __m512d ev[8];
                sm_rows8_exp(x, nrows, r0, p, NULL, xfirst, slow, m, ev);
                sm_rows8_div(r0, p, lse, mx, NULL, NULL, NULL, 0, NULL, NULL, pmax, xfirst,
                             pfirst, m, ev);
            }
        }
        if (r0 > 0 && !g[h ^ 1].done)
            sm_rows8c_div(r0 - 8, p, lse, mx, pmax, pfirst, &g[h ^ 1]);
    }
    return full;
}
#endif

/* The rows of sm_rows past those sm_rows8 took, RW at a time. longrows (a constant, so that
 * the short rows' loop compiles as it did without it): rows of 32 or more, whose lines start
 * on their way from memory a row at a time, row r + PD's before row r, instead of the next RW
 * rows' all at once (that burst overran the loads in flight: moe_vmax waited on memory for a
 * sixth of switch's time at E = 256, 12% longer than now, and 6% at E = 128; at E = 16 the
 * row-at-a-time lines were 5% slower). */
static inline __attribute__((always_inline)) void
sm_rows_gen(const double *x, int nrows, int len, double *p, double *lse, double *mx,
            const int32_t *sel, int k, double *esel, int esel_max, uint8_t *istop, int32_t *pmax,
            int32_t *xfirst, double *pfirst, int *slow, const double *num, const int longrows)
{
    enum { RW = 8, PD = 4 };
    for (int r0 = 0; r0 < nrows; r0 += RW) {
        const int nr = nrows - r0 < RW ? nrows - r0 : RW;
        double m[RW], s[RW] = {0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0};
        const double *pr[RW];
        /* the next RW rows start on their way from memory while these take their exponentials
         * (else moe_vmax waits for each of them): short rows all at once, long ones a row at a
         * time, below */
        const int next_end = longrows ? r0 : r0 + 2 * RW < nrows ? r0 + 2 * RW : nrows;
        for (size_t o = (size_t)(r0 + RW) * (size_t)len; o < (size_t)next_end * (size_t)len;
             o += 8)
            __builtin_prefetch(x + o);
        for (int j = 0; j < nr; j++) {
            const size_t o = (size_t)(r0 + j) * (size_t)len;
            for (size_t q = o + (size_t)PD * len;
                 longrows && r0 + j + PD < nrows && q < o + (size_t)(PD + 1) * len; q += 8)
                __builtin_prefetch(x + q);
            m[j] = esel_max ? esel[(size_t)(r0 + j) * k] : moe_vmax(x + o, len);
            if (num) { /* the numerators known: the finiteness check then scans the rows */
                memcpy(p + o, num + o, (size_t)len * sizeof *p);
                *slow = 1;
            } else {
                *slow |= vx_shift(x + o, len, m[j], p + o);
            }
            pr[j] = p + o;
            if (xfirst)
                xfirst[r0 + j] = moe_select_first_eq(x + o, len, m[j]);
        }
        sm_sums(pr, nr, len, s);
        if (sel)
            sm_gather(p + (size_t)r0 * len, nr, len, sel + (size_t)r0 * k, k,
                      esel + (size_t)r0 * k);
        for (int j = 0; j < nr; j++) {
            double *pj = p + (size_t)(r0 + j) * (size_t)len;
            const double lo = istop ? sm_sel_lo(esel + (size_t)(r0 + j) * k, k, s[j]) : 0.0;
            if (pmax)
                pmax[r0 + j] = vx_div_pmax(pj, len, s[j]);
            else if (istop)
                istop[r0 + j] = vx_div_count(pj, len, s[j], lo) == k && lo == lo;
            else
                vx_div(pj, len, s[j]);
            if (pmax && istop) /* (its definition, on the quotients just stored) */
                istop[r0 + j] = moe_select_is_top(pj, len, sel + (size_t)(r0 + j) * k, k);
            if (pfirst && xfirst[r0 + j] >= 0)
                pfirst[r0 + j] = pj[xfirst[r0 + j]];
            if (mx)
                mx[r0 + j] = m[j];
        }
        if (lse)
            sm_lse(m, s, nr, lse + r0);
    }
}

/* sm_rows_gen for rows of 32 or more, a function of its own: inlined into sm_rows beside the
 * short rows' loop it made that loop 2-4% slower at E = 16. */
static __attribute__((noinline)) void
sm_rows_long(const double *x, int nrows, int len, double *p, double *lse, double *mx,
             const int32_t *sel, int k, double *esel, int esel_max, uint8_t *istop,
             int32_t *pmax, int32_t *xfirst, double *pfirst, int *slow, const double *num)
{
    sm_rows_gen(x, nrows, len, p, lse, mx, sel, k, esel, esel_max, istop, pmax, xfirst, pfirst,
                slow, num, 1);
}

#if !defined(__AVX512F__) && defined(__AVX2__) && defined(__FMA__)
static void sm_rows(const double *x, int nrows, int len, double *p, double *lse, double *mx,
                    const int32_t *sel, int k, double *esel, int esel_max, uint8_t *istop,
                    int32_t *pmax, int32_t *xfirst, double *pfirst, int *slow, const double *num);
#include "vexp_rows4.h" /* (its drivers call sm_rows for the rows they decline) */
#endif

/* moe_softmax_rows_max, and moe_softmax_rows_more's esel (with sel), istop (with sel), pmax,
 * xfirst and pfirst (pfirst only with xfirst). */
static void sm_rows(const double *x, int nrows, int len, double *p, double *lse, double *mx,
                    const int32_t *sel, int k, double *esel, int esel_max, uint8_t *istop,
                    int32_t *pmax, int32_t *xfirst, double *pfirst, int *slow, const double *num)
{
    int first = 0;
#if defined(__AVX512F__)
    if (len == 8 && !num) /* then the rest, fewer than eight rows, below */
        first = sel      ? sm_rows8(x, nrows, p, lse, mx, NULL, NULL, sel, k, esel, istop, pmax,
                                    xfirst, pfirst, slow)
                : xfirst ? sm_rows8c(x, nrows, p, lse, mx, pmax, xfirst, pfirst, slow)
                         : sm_rows8c(x, nrows, p, lse, mx, pmax, NULL, NULL, slow);
#elif defined(__AVX2__) && defined(__FMA__)
    if (len == 8 && !num && !sel) /* then the rest, fewer than four rows, below */
        first = sm_rows4c(x, nrows, p, lse, mx, pmax, xfirst, pfirst, NULL, NULL, NULL, slow);
#endif
    if (first) {
        x += (size_t)first * 8;
        p += (size_t)first * 8;
        lse = lse ? lse + first : NULL;
        mx = mx ? mx + first : NULL;
        sel = sel ? sel + (size_t)first * k : NULL;
        esel = esel ? esel + (size_t)first * k : NULL;
        istop = istop ? istop + first : NULL;
        pmax = pmax ? pmax + first : NULL;
        xfirst = xfirst ? xfirst + first : NULL;
        pfirst = pfirst ? pfirst + first : NULL;
    }
    nrows -= first;
    if (len >= 32)
        sm_rows_long(x, nrows, len, p, lse, mx, sel, k, esel, esel_max, istop, pmax, xfirst,
                     pfirst, slow, num);
    else
        sm_rows_gen(x, nrows, len, p, lse, mx, sel, k, esel, esel_max, istop, pmax, xfirst,
                    pfirst, slow, num, 0);
}

int moe_softmax_finite(const double *x, size_t len, int slow)
{
    return !slow || moe_all_finite(x, len);
}

void moe_softmax_rows_max(const double *x, int nrows, int len, double *p, double *lse,
                          double *mx)
{
    int slow = 0;
    sm_rows(x, nrows, len, p, lse, mx, NULL, 0, NULL, 0, NULL, NULL, NULL, NULL, &slow, NULL);
}

void moe_softmax_rows_more(const double *x, int nrows, int len, double *p,
                           const moe_softmax_more *o)
{
    int slow = 0;
    sm_rows(x, nrows, len, p, o->lse, o->mx, o->sel, o->sel ? o->k : 0, o->sel ? o->esel : NULL,
            o->sel && o->esel_max, o->sel ? o->istop : NULL, o->pmax, o->xfirst,
            o->xfirst ? o->pfirst : NULL, &slow, o->num);
    if (o->slow)
        *o->slow |= slow;
}

void moe_softmax_rows8_top2(const double *x, int nrows, double *p, double *lse, double *mx,
                            int32_t *idx2, double *e2, uint8_t *istop, int *slow)
{
    int first = 0, sl = 0;
#if defined(__AVX512F__)
    first = sm_rows8(x, nrows, p, lse, mx, idx2, e2, NULL, 0, NULL, istop, NULL, NULL, NULL, &sl);
#elif defined(__AVX2__) && defined(__FMA__)
    first = sm_rows8_top2_cols(x, nrows, p, lse, mx, idx2, e2, istop, &sl);
#endif
    for (int r = first; istop && r < nrows; r++)
        istop[r] = 0;
    *slow |= sl | (first < nrows); /* (the rows left, below, are not told apart) */
    moe_softmax_rows_max(x + (size_t)first * 8, nrows - first, 8, p + (size_t)first * 8,
                         lse ? lse + first : NULL, mx + first);
    for (int r = first; r < nrows; r++) { /* the rows left, from memory */
        const double *xr = x + (size_t)r * 8;
        int32_t *e = idx2 + 2 * (size_t)r;
        if (!moe_select_top2_8(xr, mx[r], e, e + 1)) {
            e[0] = -1;
            continue;
        }
        e2[2 * (size_t)r] = exp(xr[e[0]] - mx[r]); /* the softmax's own numerators (vexp.h) */
        e2[2 * (size_t)r + 1] = exp(xr[e[1]] - mx[r]);
    }
}

void moe_softmax_rows(const double *x, int nrows, int len, double *p, double *lse)
{
    moe_softmax_rows_max(x, nrows, len, p, lse, NULL);
}
