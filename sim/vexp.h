/* vexp.h: the exponentials of a row, exp(x[i] - m), eight at a time where the CPU has AVX-512,
 * four at a time where it has AVX2 and FMA only (vexp_avx2.h).
 *
 * The vector lanes evaluate the algorithm of the GNU C library's exp (glibc 2.28 and later,
 * its FMA variant, which glibc selects on every CPU with FMA): x = k ln2/128 + r, exp(x) =
 * 2^(k/128) (1 + tail_k) exp(r), a table of 2^(i/128) and a degree-5 polynomial, with the same
 * constants and the same operations in the same order, each fused multiply-add where glibc's
 * has one. Every lane is therefore the same double as the C library's exp of the same
 * argument on such a system (tests/test_vexp.c compares them bit for bit on millions of
 * arguments); arguments outside the fast range of that algorithm (|a| < 2^-54 or |a| >= 512,
 * and non-finite values) are passed to the C library's exp itself. Without AVX-512 the four
 * lanes of AVX2 evaluate the same; without either, every element is the C library's exp. */
#ifndef MOE_VEXP_H
#define MOE_VEXP_H

#include <stddef.h>
#include <stdint.h>

/* The natural logarithm of x, moesim's own (not the C library's): for a positive normal
 * finite x within one unit in the last place of log x (tests/test_vexp.c measures it against
 * long double logl), the same double on every machine, with or without AVX-512, one at a time
 * or eight at a time in the softmax rows below; other x (zero, negative, subnormal, infinite,
 * NaN) the C library's log(x). Every logsumexp of moesim (the softmax rows' lse, moe_logsumexp,
 * moe_softmax_lse) takes its log of the sum from it. */
double moe_log(double x);

/* out[i] = exp(x[i] - m) for i < len (out may equal x). */
void moe_vexp_shift(const double *x, int len, double m, double *out);

/* max of x[0..len), len >= 1, for finite x: the value of the serial loop "if (x[i] > m) m = x[i]"
 * except that a maximum of zero may come back as -0.0 where the loop gives +0.0 or the other
 * way round, which changes neither exp(x[i] - m) nor m + log(s). */
double moe_vmax(const double *x, int len);

/* 1 if x[0..len) are all finite (no infinity, no NaN), else 0. */
int moe_all_finite(const double *x, size_t len);
/* moe_all_finite of the rows x[0..len) a softmax below just took, given its slow flag
 * (moe_softmax_more): 1 without a look when slow is 0, since every x then went through the
 * exponential's fast path, which no infinite or NaN x takes; else the scan. */
int moe_softmax_finite(const double *x, size_t len, int slow);

/* g (n, 2) in place: each pair (v0, v1), a token's largest value first, replaced by its softmax
 * with the first as the shift, as topk's gates take it: e_j = exp(v_j - v0), s = 0 + e0 + e1
 * added in that order, v_j = e_j / s (the same doubles as the C library's exp and a scalar
 * division). Four pairs a vector. */
void moe_softmax_pairs(double *g, long n);
/* g[2i], g[2i+1] = g[2i] / s, g[2i+1] / s with s = 0 + g[2i] + g[2i+1], for i < n: the division
 * of moe_softmax_pairs, for pairs whose exponentials are known. */
void moe_pairs_div(double *g, long n);

/* Rows r < nrows of x (nrows, len), len >= 1: p row r = the softmax moe_softmax computes, and
 * lse[r] (lse may be NULL) = the logsumexp moe_softmax_lse returns, bit for bit: exp(x - max)
 * summed in index order, each p divided by that sum, lse = max + moe_log(sum). Eight rows at
 * a time, so that their eight sums (each still in index order) overlap in the adder. */
void moe_softmax_rows(const double *x, int nrows, int len, double *p, double *lse);
/* moe_softmax_rows, also giving mx[r] (mx may be NULL) = the maximum of row r that the softmax
 * subtracted (moe_vmax's value: one of the row's values, or its zero of the other sign). */
void moe_softmax_rows_max(const double *x, int nrows, int len, double *p, double *lse,
                          double *mx);

/* What moe_softmax_rows_more gives besides p, each NULL when not wanted. */
typedef struct {
    double *lse;        /* (nrows): as moe_softmax_rows */
    double *mx;         /* (nrows): as moe_softmax_rows_max */
    const int32_t *sel; /* (nrows, k), each in [0, len), with esel (nrows, k): each row's */
    int k;              /* exponentials exp(x - max) at its k columns sel (the numerators of p */
    double *esel;       /* before their division): the C library's exp of those differences */
    int esel_max;       /* with sel: esel[r * k] holds on entry row r's maximum (its first
                         * selected value, by rank), taken instead of a scan of the row (for a row
                         * with a NaN any value: the softmax of such a row means nothing) */
    uint8_t *istop;     /* with sel, (nrows): 1 when no p of row r outside its k columns sel
                         * reaches the smallest p at them, as moe_select_is_top (select.h) of the
                         * row's p and sel: that set is then the k largest of p */
    int32_t *pmax;      /* (nrows): each row's first index of its largest p (for a row that
                         * holds a NaN, some index in [0, len)) */
    int32_t *xfirst;    /* (nrows), with pfirst (nrows): each row's first index of its maximum */
    double *pfirst;     /* mx (moe_select_first_eq, select.h) and its p; -1 (pfirst unset) for
                         * a row where no value equals it (a NaN) */
    int *slow;          /* set to 1 when some x - max left the vector exponential's fast range
                         * (or went to the C library's exp), or when num is given; else left as
                         * it was: while it stays 0, every x of the rows is finite (an infinite
                         * or NaN x, or max, makes x - max infinite or NaN) */
    const double *num;  /* (nrows, len) or NULL: the rows' numerators exp(x - max), max the
                         * moe_vmax of each row, computed already by moe_vexp_shift (the same
                         * doubles this softmax would take), which it copies instead */
} moe_softmax_more;

/* moe_softmax_rows_max with the outputs of o: p, lse and mx the same doubles. */
void moe_softmax_rows_more(const double *x, int nrows, int len, double *p,
                           const moe_softmax_more *o);

/* Rows of eight logits (len = 8): moe_softmax_rows_max (mx not NULL), and each row's two
 * largest logits as moe_select_top2_8 (select.h) takes them from the row's maximum mx[r]:
 * idx2[2r], idx2[2r+1] their indices and e2[2r], e2[2r+1] the exponentials exp(x - mx[r]) there
 * (the numerators of p before the division: the C library's exp of those differences);
 * idx2[2r] = -1 (the rest unset) for a row it declines (a NaN); *slow as moe_softmax_more's
 * slow. istop (nrows) or NULL: 1 where row r's two are also the two largest of p (no other p
 * of the row reaches p at idx2[2r+1], as moe_select_is_top of p and idx2 with k = 2), else 0
 * (then nothing is said: also for a declined row and, with AVX-512, rows past the last
 * multiple of eight; with AVX2 and without AVX-512 every row is told, its two taken first in
 * four lanes and the softmax keeping their numerators).
 * With the row in a register already, the selection costs a few instructions more than the
 * softmax. */
void moe_softmax_rows8_top2(const double *x, int nrows, double *p, double *lse, double *mx,
                            int32_t *idx2, double *e2, uint8_t *istop, int *slow);

#endif
