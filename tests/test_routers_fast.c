/* test_routers_fast.c: the fast paths of the token-choice routers give the plans of the serial
 * code, bit for bit.
 *
 *  - moe_select_topk (routers/select.c, the vector top-k) against a reference written here: k
 *    scans for the largest not yet taken, strict > so that ties go to the lower index (the
 *    definition of the stable descending argsort's first k). Rows of lengths 8..300 and k 1..8
 *    of Gaussian values, quarters (many ties), +0.0/-0.0 mixes and small integers; the
 *    function may decline a row (returns 0), but every row it takes must match, and the
 *    Gaussian rows must mostly be taken (else the test would check nothing): with AVX-512
 *    every k, with AVX2 k = 2..8.
 *  - moe_select_topk_net4 (routers/select_net.c, four rows by a selection network, without
 *    AVX-512) against a stable sort, and its declines (see test_select_net4); likewise
 *    moe_select_topk_net8 (eight rows, on 32-bit keys), its declines against the rule worked
 *    out on the doubles' bits (see test_select_net8).
 *  - moe_claims_argmax with a skipped index (the vector pass of select.c) against a scalar scan.
 *  - moe_select_first_eq (the first index of a value) and moe_select_pack (the elements at or
 *    above a threshold) against scalar scans.
 *  - moe_select_is_top (whether a set of k indices is a row's top-k) against its definition.
 *  - moe_select_top2 (a row's two first choices given its maximum) against scalar scans.
 *  - the claims tail on the routers' threads (routers/claims_par.c) and the rows pass: switch,
 *    topk k = 1, 2, 8 and gshard on 40000 tokens of quartered logits (ties across the part
 *    boundaries), orders choice_major and token_major, with capacity, dropless and
 *    renormalize, routed with 1 thread (the serial loops of claims.c) and with 2 threads: the
 *    same entries, loads, importance, claims per rank, capacity and aux loss.
 *  - topk's gates, taken for a chunk of tokens at once, against moe_softmax per token.
 *  - switch's and topk k = 1's expert, dropless, at E = 8 (a row is one vector) and 64 on the
 *    quartered logits: the first index of the row's largest logit by a scalar scan; gshard's
 *    and topk k = 2's two choices likewise (the first index of the largest, then of the
 *    largest of the others) at E = 8, 32, 40, 48 and 64, and topk k = 2's gates against
 *    moe_softmax of the two logits.
 *  - gshard's gates and second claims at E = 8 (eight tokens at a time) and 64 against their
 *    definition per token, for the policies random (the test on g2, and on p2 with
 *    threshold_on raw), threshold and all; and gshard drawing from a seed against the same draws
 *    given (test_gshard_drawn).
 *  - the sums the rows pass adds at E = 8, 16, 32, 40 and 64 (importance, loads, the aux loss's
 *    mean of p, the z-loss's sum of squares) for switch and topk k = 2 against their
 *    definitions. */
#include "check.h"
#include "moe.h"
#include "../routers/claims.h"
#include "../routers/select.h"
#include "route_helper.h"

#include <gsl/gsl_randist.h>
#include <string.h>

enum { N = 40000, E = 64, LMAX = 300 };

static double L[(size_t)N * E], U[N];

static void ref_topk(const double *v, int len, int k, int32_t *idx, double *val)
{
    unsigned char used[LMAX] = {0};
    for (int j = 0; j < k; j++) {
        int b = -1;
        for (int i = 0; i < len; i++)
            if (!used[i] && (b < 0 || v[i] > v[b]))
                b = i;
        used[b] = 1;
        idx[j] = b;
        val[j] = v[b];
    }
}

static void test_select(void)
{
    gsl_rng *g = moe_rng_alloc(5, 1);
    static const char *kind[] = {"gaussian", "quarters", "signed zeros", "integers"};
    for (int mode = 0; mode < 4; mode++) {
        int bad = 0, taken = 0, rows = 0, taken2 = 0, rows2 = 0; /* 2: rows with k >= 2 */
        for (int it = 0; it < 22000; it++) { /* the last 2000: k = len = 8 (every element) */
            const int len = it >= 20000 ? 8 : 8 + (int)gsl_rng_uniform_int(g, LMAX - 8 + 1);
            const int k = it >= 20000 ? 8 : 1 + (int)gsl_rng_uniform_int(g, 8);
            double v[LMAX], vv[8], rv[8];
            int32_t vi[8], ri[8];
            for (int i = 0; i < len; i++) {
                const double z = gsl_ran_gaussian_ziggurat(g, 1.0);
                v[i] = mode == 0   ? z
                       : mode == 1 ? (double)(int)(z * 4.0) / 4.0
                       : mode == 2 ? (gsl_rng_uniform(g) < 0.5 ? 0.0 : -0.0)
                                   : (double)gsl_rng_uniform_int(g, 40);
                if (it >= 20000 && i == it % 8 && mode == 3) /* and an -inf among them */
                    v[i] = -INFINITY;
            }
            rows++;
            rows2 += k >= 2;
            if (!moe_select_topk(v, len, k, vi, vv))
                continue;
            taken++;
            taken2 += k >= 2;
            ref_topk(v, len, k, ri, rv);
            for (int j = 0; j < k; j++)
                if (vi[j] != ri[j] || memcmp(&vv[j], &rv[j], sizeof vv[j])) {
                    bad++;
                    break;
                }
        }
        CHECK(bad == 0, "moe_select_topk, %s rows: %d of %d differ from the reference",
              kind[mode], bad, taken);
#if defined(__AVX512F__)
        if (mode == 0)
            CHECK(taken > rows * 9 / 10, "moe_select_topk took only %d of %d Gaussian rows",
                  taken, rows);
#elif defined(__AVX2__)
        if (mode == 0) /* four lanes take k = 2..8 (k = 1 is moe_claims_argmax's) */
            CHECK(taken2 > rows2 * 9 / 10 && taken == taken2,
                  "moe_select_topk took %d of %d Gaussian rows with k >= 2, %d with k = 1",
                  taken2, rows2, taken - taken2);
#endif
    }
    gsl_rng_free(g);
}

/* The stable descending argsort of test_select_sorted's row: a before b when v[a] > v[b], or
 * when neither is above the other (equal, -0.0 and +0.0 included) and a < b. */
static const double *sort_row;

static int by_rank(const void *pa, const void *pb)
{
    const int a = *(const int *)pa, b = *(const int *)pb;
    if (sort_row[a] > sort_row[b])
        return -1;
    if (sort_row[b] > sort_row[a])
        return 1;
    return (a > b) - (a < b);
}

/* Row r of SEL_BATCH of test_select_sorted's kind for length len and k: Gaussian (few
 * candidates past k: the sorts), quarters and small integers (ties inside and at the k-th
 * place, crowds of equal values: the ranks, the scalar path), Gaussian with +inf, -inf and
 * signed zeros sprinkled, -inf with a few finite values (k past the finite ones), and Gaussian
 * with one NaN. Returns its kind. */
enum { SEL_LEN = 1024, SEL_BATCH = 7 };

static int select_row(gsl_rng *g, int len, int k, int r, double *v)
{
    const int kind = (len * 8 + k + r) % 6;
    for (int i = 0; i < len; i++) {
        const double z = gsl_ran_gaussian_ziggurat(g, 1.0), u = gsl_rng_uniform(g);
        v[i] = kind == 1   ? (double)(int)(z * 4.0) / 4.0
               : kind == 2 ? (double)gsl_rng_uniform_int(g, 40)
               : kind == 3 ? (u < 0.05   ? INFINITY
                              : u < 0.1  ? -INFINITY
                              : u < 0.15 ? (u < 0.125 ? 0.0 : -0.0)
                                         : z)
               : kind == 4 ? (u < 4.0 / len ? z : -INFINITY)
                           : z;
    }
    if (kind == 5)
        v[gsl_rng_uniform_int(g, len)] = NAN;
    return kind;
}

/* moe_select_topk_net4 (routers/select_net.c): four rows at once through a selection network
 * on keys that keep a value's bits above the low eight and its column below them. Against the
 * stable sort (by_rank) on every length it takes that occurs as an expert count or bounds a
 * branch (8, 12, 16, 20, 32, 60, 64, 100, 128, 252, 256) and k 1..8, blocks of four rows where
 * row i is:
 *   0  Gaussian: must be taken (a decline needs two of its k + 1 largest equal in their top 44
 *      bits) and equal the sort;
 *   1  Gaussian with the (k+1)-th largest replaced by the k-th with its lowest bit flipped (at
 *      k = len the k-th by the (k-1)-th), so that the two keys agree above the column bits and
 *      the columns, not the values, would order them: must be declined;
 *   2  small integers (exact ties, decided by index): must be declined, or equal the sort;
 *   3  negative values below a +0.0 or -0.0 (the largest), or Gaussian with +inf or a NaN
 *      anywhere: must be declined.
 * With AVX-512, or without AVX2 and FMA, the function declines everything (checked too). */
static void test_select_net4(void)
{
    static const int lens[] = {8, 12, 16, 20, 32, 60, 64, 100, 128, 252, 256};
    gsl_rng *g = moe_rng_alloc(23, 1);
    static double v[4 * 256];
    static int ord[256];
    int blocks = 0, taken[4] = {0, 0, 0, 0}, wrong = 0, seen = 0;
    for (size_t li = 0; li < sizeof lens / sizeof lens[0]; li++)
        for (int k = 1; k <= 8; k++)
            for (int rep = 0; rep < 8; rep++) {
                const int len = lens[li];
                for (int r = 0; r < 4; r++) {
                    double *vr = v + (size_t)r * len;
                    for (int i = 0; i < len; i++)
                        vr[i] = r == 2 ? (double)gsl_rng_uniform_int(g, 12)
                                       : gsl_ran_gaussian_ziggurat(g, 1.0);
                    if (r == 1) { /* the k-th's lowest bit flipped, into the (k+1)-th */
                        sort_row = vr;
                        for (int i = 0; i < len; i++)
                            ord[i] = i;
                        qsort(ord, (size_t)len, sizeof ord[0], by_rank);
                        const int a = k < len ? k - 1 : k - 2; /* k = len: the last two */
                        uint64_t b;
                        memcpy(&b, &vr[ord[a]], sizeof b);
                        b ^= 1;
                        memcpy(&vr[ord[a + 1]], &b, sizeof b);
                    } else if (r == 3) { /* a zero above negative values, or inf, or NaN */
                        for (int i = 0; rep % 3 == 0 && i < len; i++)
                            vr[i] = -fabs(vr[i]) - 0.5;
                        vr[gsl_rng_uniform_int(g, (unsigned long)len)] =
                            rep % 3 == 0 ? (rep % 2 ? -0.0 : 0.0) : rep % 3 == 1 ? INFINITY : NAN;
                    }
                }
                int32_t idx[4 * 8];
                double val[4 * 8];
                const int got = moe_select_topk_net4(v, len, k, idx, val);
                blocks++;
                for (int r = 0; r < 4; r++) {
                    if (!(got >> r & 1))
                        continue;
                    taken[r]++;
                    const double *vr = v + (size_t)r * len;
                    sort_row = vr;
                    for (int i = 0; i < len; i++)
                        ord[i] = i;
                    qsort(ord, (size_t)len, sizeof ord[0], by_rank);
                    seen++;
                    for (int j = 0; j < k; j++)
                        wrong += idx[r * k + j] != ord[j] ||
                                 memcmp(&val[r * k + j], &vr[ord[j]], sizeof(double));
                }
            }
    gsl_rng_free(g);
#if !defined(__AVX512F__) && defined(__AVX2__) && defined(__FMA__)
    /* (the shapes it fits, as select.h states them) */
    CHECK(moe_select_net4_fits(8, 8) && moe_select_net4_fits(60, 3) &&
              moe_select_net4_fits(256, 1) && !moe_select_net4_fits(62, 8) &&
              !moe_select_net4_fits(260, 8) && !moe_select_net4_fits(4, 2) &&
              !moe_select_net4_fits(64, 9),
          "moe_select_net4_fits: not the shapes select.h gives (8..256, a multiple of 4, k 1..8)");
    CHECK(taken[0] == blocks && taken[1] == 0 && taken[3] == 0 && wrong == 0,
          "selection network, %d blocks of four rows: Gaussian rows taken %d (all expected), "
          "rows whose k-th and (k+1)-th differ in the lowest bit taken %d and rows with a zero, "
          "an infinity or a NaN taken %d (none expected), %d of the %d rows taken wrong (tied "
          "integer rows taken: %d)",
          blocks, taken[0], taken[1], taken[3], wrong, seen, taken[2]);
#else
    CHECK(taken[0] + taken[1] + taken[2] + taken[3] == 0 && !moe_select_net4_fits(64, 8),
          "selection network without its build: %d rows taken, none expected",
          taken[0] + taken[1] + taken[2] + taken[3]);
#endif
}

#if !defined(__AVX512F__) && defined(__AVX2__) && defined(__FMA__)
/* Whether moe_select_topk_net8 must decline row v (len) for k, by the rule select.h states,
 * worked out here on the doubles' bits: a value whose high 32 bits read as a float NaN or
 * infinity (exponent field 0x7f8 or more: NaN, infinity, magnitude 2^1017 or more), or, among
 * the first k + 1 of the stable sort ord (min(k + 1, len) of them), a value whose high 32 bits
 * above the low ceil(log2(len)) are zero in magnitude or two values alike in those bits. */
static int net8_declines(const double *v, const int *ord, int len, int k)
{
    int bits = 0;
    while ((1 << bits) < len)
        bits++;
    const uint32_t keep = ~((1u << bits) - 1);
    for (int i = 0; i < len; i++) {
        uint64_t b;
        memcpy(&b, &v[i], sizeof b);
        if ((b >> 52 & 0x7ff) >= 0x7f8)
            return 1;
    }
    uint32_t prev = 0;
    for (int j = 0; j <= k && j < len; j++) {
        uint64_t b;
        memcpy(&b, &v[ord[j]], sizeof b);
        const uint32_t key = (uint32_t)(b >> 32) & keep;
        if ((key & 0x7fffffffu) == 0 || (j > 0 && key == prev))
            return 1;
        prev = key;
    }
    return 0;
}
#endif

/* moe_select_topk_net8 (routers/select_net.c): eight rows at once through the selection
 * network on keys of the doubles' high 32 bits, the column in the low ceil(log2(len)). On
 * every length it takes that occurs as an expert count or bounds a branch (8, 16, 24, 32, 56,
 * 64, 128, 136, 248, 256) and k 1..8, blocks of eight rows of five kinds (row r of kind r % 5):
 *   0  Gaussian;
 *   1  Gaussian with the (k+1)-th largest replaced by the k-th with its lowest bit flipped (at
 *      k = len the k-th by the (k-1)-th): alike in their high 32 bits;
 *   2  small integers (exact ties, decided by index);
 *   3  1 + i * 2^(bits - 20) for column i, shuffled, where bits is the column's: neighbours
 *      differ in the lowest bit a key keeps (rep even: the top 20 - bits of the mantissa), or
 *      by half that, so that pairs of them are alike in what the keys keep (rep odd);
 *   4  negative values below a +0.0 or -0.0, or Gaussian with +inf, a NaN or 2^1020 anywhere.
 * Each row must be declined exactly when net8_declines says so, and a row taken must equal
 * the stable sort (by_rank); most Gaussian rows must be taken. With AVX-512, or without AVX2
 * and FMA, the function declines everything (checked too). */
static void test_select_net8(void)
{
    static const int lens[] = {8, 16, 24, 32, 56, 64, 128, 136, 248, 256};
    gsl_rng *g = moe_rng_alloc(29, 1);
    static double v[8 * 256];
    static int ord[8][256];
    int rows = 0, wrong = 0, gauss = 0, gauss_taken = 0, kind_taken[5] = {0};
#if !defined(__AVX512F__) && defined(__AVX2__) && defined(__FMA__)
    int mismatched = 0;
#endif
    for (size_t li = 0; li < sizeof lens / sizeof lens[0]; li++)
        for (int k = 1; k <= 8; k++)
            for (int rep = 0; rep < 6; rep++) {
                const int len = lens[li];
                int bits = 0;
                while ((1 << bits) < len)
                    bits++;
                for (int r = 0; r < 8; r++) {
                    double *vr = v + (size_t)r * len;
                    const int kind = r % 5;
                    for (int i = 0; i < len; i++)
                        vr[i] = kind == 2 ? (double)gsl_rng_uniform_int(g, 12)
                                : kind == 3
                                    ? 1.0 + i * ldexp(1.0, bits - 20 - rep % 2)
                                    : gsl_ran_gaussian_ziggurat(g, 1.0);
                    for (int i = len - 1; kind == 3 && i > 0; i--) { /* shuffled */
                        const int j = (int)gsl_rng_uniform_int(g, (unsigned long)i + 1);
                        const double x = vr[i];
                        vr[i] = vr[j], vr[j] = x;
                    }
                    sort_row = vr;
                    for (int i = 0; i < len; i++)
                        ord[r][i] = i;
                    qsort(ord[r], (size_t)len, sizeof ord[r][0], by_rank);
                    if (kind == 1) { /* the k-th's lowest bit flipped, into the (k+1)-th */
                        const int a = k < len ? k - 1 : k - 2;
                        uint64_t b;
                        memcpy(&b, &vr[ord[r][a]], sizeof b);
                        b ^= 1;
                        memcpy(&vr[ord[r][a + 1]], &b, sizeof b);
                    } else if (kind == 4) { /* a zero above negative values, or inf, NaN, huge */
                        for (int i = 0; rep % 4 == 0 && i < len; i++)
                            vr[i] = -fabs(vr[i]) - 0.5;
                        vr[gsl_rng_uniform_int(g, (unsigned long)len)] =
                            rep % 4 == 0   ? (rep % 8 ? -0.0 : 0.0)
                            : rep % 4 == 1 ? INFINITY
                            : rep % 4 == 2 ? NAN
                                           : ldexp(1.0, 1020);
                    }
                    if (kind == 1 || kind == 4) {
                        for (int i = 0; i < len; i++)
                            ord[r][i] = i;
                        qsort(ord[r], (size_t)len, sizeof ord[r][0], by_rank);
                    }
                }
                int32_t idx[8 * 8];
                double val[8 * 8];
                const int got = moe_select_topk_net8(v, len, k, idx, val);
                for (int r = 0; r < 8; r++) {
                    const double *vr = v + (size_t)r * len;
                    const int taken = got >> r & 1, kind = r % 5;
                    rows++;
                    kind_taken[kind] += taken;
                    gauss += kind == 0;
                    gauss_taken += kind == 0 && taken;
#if !defined(__AVX512F__) && defined(__AVX2__) && defined(__FMA__)
                    mismatched += taken == net8_declines(vr, ord[r], len, k);
#endif
                    for (int j = 0; taken && j < k; j++)
                        wrong += idx[r * k + j] != ord[r][j] ||
                                 memcmp(&val[r * k + j], &vr[ord[r][j]], sizeof(double));
                }
            }
    gsl_rng_free(g);
#if !defined(__AVX512F__) && defined(__AVX2__) && defined(__FMA__)
    CHECK(moe_select_net8_fits(8, 8) && moe_select_net8_fits(248, 1) &&
              moe_select_net8_fits(256, 3) && !moe_select_net8_fits(60, 3) &&
              !moe_select_net8_fits(264, 8) && !moe_select_net8_fits(64, 9),
          "moe_select_net8_fits: not the shapes select.h gives (8..256, a multiple of 8, k 1..8)");
    CHECK(mismatched == 0 && wrong == 0 && gauss_taken > gauss * 9 / 10 && kind_taken[1] == 0 &&
              kind_taken[3] > 0 && kind_taken[4] == 0,
          "eight-row selection network, %d rows: %d taken where the rule declines them or "
          "declined where it takes them, %d taken wrong; Gaussian rows taken %d of %d (most "
          "expected); rows whose k-th and (k+1)-th differ in the lowest bit taken %d (none), "
          "rows at the keys' resolution taken %d (some), rows with a zero, an infinity, a NaN "
          "or 2^1020 taken %d (none)",
          rows, mismatched, wrong, gauss_taken, gauss, kind_taken[1], kind_taken[3],
          kind_taken[4]);
#else
    CHECK(kind_taken[0] + kind_taken[1] + kind_taken[2] + kind_taken[3] + kind_taken[4] == 0 &&
              !moe_select_net8_fits(64, 8),
          "eight-row selection network without its build: %d rows taken, none expected",
          kind_taken[0] + kind_taken[1] + kind_taken[2] + kind_taken[3] + kind_taken[4]);
#endif
}

/* moe_select_topk, moe_select_topk_rows (four rows at a time, then one by one), moe_claims_topk
 * and moe_claims_topk_rows (which fall back to the scalar selection where the vector one
 * declines) against a brute-force reference: the first k of a stable sort of the whole row
 * (qsort on value descending, then index ascending, which is that order). Every length
 * 8..SEL_LEN (multiples of 8 and not: the one-block sort at 8, the rows in registers up to
 * 64, the candidates through memory above) with every k 1..8, SEL_BATCH rows of the kinds of
 * select_row each (so that every kind meets every length and k). Rows with a NaN must be
 * declined by the vector selection; the scalar rule for them is not a sort, so they are not
 * compared. */
static void test_select_sorted(void)
{
    gsl_rng *g = moe_rng_alloc(19, 1);
    static double v[SEL_BATCH * SEL_LEN];
    static int ord[SEL_LEN];
    int bad[4] = {0, 0, 0, 0}, nan_taken = 0, rows = 0, gauss = 0, gauss_taken = 0;
    for (int len = 8; len <= SEL_LEN; len++)
        for (int k = 1; k <= 8; k++) {
            int kind[SEL_BATCH];
            for (int r = 0; r < SEL_BATCH; r++)
                kind[r] = select_row(g, len, k, r, v + (size_t)r * len);
            double val[4][SEL_BATCH * 8];
            int32_t idx[4][SEL_BATCH * 8], got[SEL_BATCH];
            moe_select_topk_rows(v, SEL_BATCH, len, k, idx[1], val[1]);
            moe_claims_topk_rows(v, SEL_BATCH, len, k, idx[3], val[3]);
            for (int r = 0; r < SEL_BATCH; r++) {
                const double *vr = v + (size_t)r * len;
                got[r] = moe_select_topk(vr, len, k, idx[0] + r * k, val[0] + r * k);
                moe_claims_topk(vr, len, k, idx[2] + r * k, val[2] + r * k);
                rows++;
                gauss += kind[r] == 0;
                gauss_taken += kind[r] == 0 && got[r];
                if (kind[r] == 5) {
                    nan_taken += got[r] + (idx[1][r * k] >= 0);
                    continue;
                }
                sort_row = vr;
                for (int i = 0; i < len; i++)
                    ord[i] = i;
                qsort(ord, (size_t)len, sizeof ord[0], by_rank);
                for (int f = 0; f < 4; f++) { /* the vector ones only where they take the row */
                    const int taken = f >= 2 || (f == 0 ? got[r] : idx[1][r * k] >= 0);
                    int wrong = 0;
                    for (int j = 0; taken && j < k; j++)
                        wrong |= idx[f][r * k + j] != ord[j] ||
                                 memcmp(&val[f][r * k + j], &vr[ord[j]], sizeof(double));
                    bad[f] += wrong;
                }
            }
        }
    CHECK(bad[0] == 0 && bad[1] == 0 && bad[2] == 0 && bad[3] == 0 && nan_taken == 0,
          "top-k against a stable sort, %d rows: wrong rows of moe_select_topk %d, "
          "moe_select_topk_rows %d, moe_claims_topk %d, moe_claims_topk_rows %d; %d takings of "
          "rows with a NaN",
          rows, bad[0], bad[1], bad[2], bad[3], nan_taken);
#if defined(__AVX512F__)
    CHECK(gauss_taken > gauss * 9 / 10, "moe_select_topk took only %d of %d Gaussian rows",
          gauss_taken, gauss);
#elif defined(__AVX2__) /* (k = 2..8 only: 7 of the 8 values of k) */
    CHECK(gauss_taken > gauss * 8 / 10, "moe_select_topk took only %d of %d Gaussian rows",
          gauss_taken, gauss);
#endif
    gsl_rng_free(g);
}

/* moe_claims_argmax (the vector pass of select.c for rows of 8 and more, eight lanes with
 * AVX-512, four with AVX2) against the scalar definition written here: the first index of the
 * largest value other than x[skip], by a strict > scan; rows of lengths 1..300, every skip
 * position class (none, first, last, inside), Gaussian, quartered, signed-zero and all -inf
 * rows, and Gaussian rows with a NaN somewhere (the vector pass declines them, the scan
 * decides). */
static void test_argmax_skip(void)
{
    gsl_rng *g = moe_rng_alloc(7, 1);
    int bad = 0, rows = 0;
    for (int it = 0; it < 50000; it++) {
        const int len = 1 + (int)gsl_rng_uniform_int(g, LMAX), mode = it % 5;
        double v[LMAX];
        for (int i = 0; i < len; i++) {
            const double z = gsl_ran_gaussian_ziggurat(g, 1.0);
            v[i] = mode == 0 || mode == 4 ? z
                   : mode == 1           ? (double)(int)(z * 4.0) / 4.0
                   : mode == 2           ? (gsl_rng_uniform(g) < 0.5 ? 0.0 : -0.0)
                                         : -INFINITY;
        }
        if (mode == 4)
            v[gsl_rng_uniform_int(g, len)] = NAN;
        const int pick = (int)gsl_rng_uniform_int(g, 4);
        const int skip = pick == 0 ? -1 : pick == 1 ? 0 : pick == 2 ? len - 1
                                                      : (int)gsl_rng_uniform_int(g, len);
        int ref = -1;
        for (int i = 0; i < len; i++)
            if (i != skip && (ref < 0 || v[i] > v[ref]))
                ref = i;
        bad += moe_claims_argmax(v, len, skip) != ref;
        rows++;
    }
    CHECK(bad == 0, "moe_claims_argmax: %d of %d rows differ from the scalar scan", bad, rows);
    gsl_rng_free(g);
}

/* moe_select_is_top against its definition written here: 1 iff the row holds no NaN and every
 * element outside idx is below the smallest v[idx[j]]. Sets: the reference's top-k (ties to the
 * lower index), the same with its last index swapped for another (mostly not the top), and
 * the top-k with ties to the higher index (a top-k as well unless a tie meets the k-th place);
 * rows of lengths 1..300 (multiples of 8 and not) of Gaussian values, quarters, signed zeros
 * (ties everywhere) and Gaussian values with one NaN. */
/* moe_select_first_eq (64 elements per test, select.c with AVX-512, select_first.c with AVX2)
 * against a scalar scan for the first i with x[i] == m: rows of lengths 1..300 of small
 * integers (m present once, several times, or not at all), m = 0.0 in rows of signed zeros
 * (-0.0 == +0.0), and m a NaN (equal to nothing). */
static void test_first_eq(void)
{
    gsl_rng *g = moe_rng_alloc(9, 1);
    int bad = 0;
    for (int it = 0; it < 40000; it++) {
        const int len = 1 + (int)gsl_rng_uniform_int(g, LMAX), zeros = it % 5 == 0;
        double v[LMAX];
        for (int i = 0; i < len; i++)
            v[i] = zeros ? (gsl_rng_uniform(g) < 0.5 ? 0.0 : -0.0)
                         : (double)gsl_rng_uniform_int(g, 3 * LMAX);
        const double m = zeros ? 0.0 : it % 5 == 1 ? NAN : (double)gsl_rng_uniform_int(g, 3 * LMAX);
        int ref = -1;
        for (int i = len - 1; i >= 0; i--)
            ref = v[i] == m ? i : ref;
        bad += moe_select_first_eq(v, len, m) != ref;
    }
    CHECK(bad == 0, "moe_select_first_eq: %d of 40000 rows differ from the scalar scan", bad);
    gsl_rng_free(g);
}

/* moe_select_pack against a scalar scan: rows of small integers (some equal to the threshold),
 * zeros of either sign against -0.0, NaN; strict and not. */
static void test_pack(void)
{
    gsl_rng *g = moe_rng_alloc(10, 1);
    int bad = 0;
    for (int it = 0; it < 40000; it++) {
        const int len = 1 + (int)gsl_rng_uniform_int(g, LMAX), strict = it & 1;
        double v[LMAX], cv[LMAX];
        int32_t ci[LMAX];
        for (int i = 0; i < len; i++)
            v[i] = it % 7 == 0 && i % 5 == 2 ? NAN : (double)gsl_rng_uniform_int(g, 9) - 4.0;
        const double thr = it % 3 == 0 ? -0.0 : (double)gsl_rng_uniform_int(g, 9) - 4.0;
        const int m = moe_select_pack(v, len, thr, strict, cv, ci);
        int r = 0, ok = 1;
        for (int i = 0; i < len; i++)
            if (strict ? v[i] > thr : v[i] >= thr) {
                ok &= r < m && ci[r] == i && memcmp(&cv[r], &v[i], sizeof v[i]) == 0;
                r++;
            }
        bad += !ok || r != m;
    }
    CHECK(bad == 0, "moe_select_pack: %d of 40000 rows differ from a scalar scan", bad);
    gsl_rng_free(g);
}

static void test_is_top(void)
{
    gsl_rng *g = moe_rng_alloc(11, 1);
    int bad = 0, yes = 0, no = 0;
    for (int it = 0; it < 40000; it++) {
        const int len = 1 + (int)gsl_rng_uniform_int(g, LMAX), mode = it % 4;
        const int k = 1 + (int)gsl_rng_uniform_int(g, len < 8 ? len : 8);
        double v[LMAX], rv[8], w[LMAX];
        int32_t idx[8];
        for (int i = 0; i < len; i++) {
            const double z = gsl_ran_gaussian_ziggurat(g, 1.0);
            v[i] = mode == 1   ? (double)(int)(z * 4.0) / 4.0
                   : mode == 2 ? (gsl_rng_uniform(g) < 0.5 ? 0.0 : -0.0)
                               : z;
        }
        if (mode == 3)
            v[gsl_rng_uniform_int(g, len)] = NAN;
        const int set = it / 4 % 3;
        if (set == 2) { /* ties to the higher index: the top-k of the reversed row */
            for (int i = 0; i < len; i++)
                w[i] = v[len - 1 - i];
            ref_topk(w, len, k, idx, rv);
            for (int j = 0; j < k; j++)
                idx[j] = len - 1 - idx[j];
        } else {
            ref_topk(v, len, k, idx, rv);
        }
        if (set == 1 && k < len) { /* the last index swapped for one outside the set */
            int o;
            do {
                o = (int)gsl_rng_uniform_int(g, len);
                for (int j = 0; j < k; j++)
                    o = idx[j] == o ? -1 : o;
            } while (o < 0);
            idx[k - 1] = o;
        }
        double lo = INFINITY;
        int want = 1;
        for (int j = 0; j < k; j++)
            lo = v[idx[j]] < lo ? v[idx[j]] : lo;
        for (int i = 0; i < len; i++) {
            int in = 0;
            for (int j = 0; j < k; j++)
                in |= idx[j] == i;
            if (isnan(v[i]) || (!in && v[i] >= lo))
                want = 0;
        }
        const int got = moe_select_is_top(v, len, idx, k);
        bad += got != want;
        yes += want;
        no += !want;
    }
    CHECK(bad == 0 && yes > 5000 && no > 5000,
          "moe_select_is_top: %d of %d rows differ from the definition (%d top, %d not)", bad,
          yes + no, yes, no);
    gsl_rng_free(g);
}

/* moe_select_top2 against the scalar definition written here: e1 the first index of the
 * largest (strict > scan), e2 the first index of the largest of the others; rows of lengths
 * 2..300 of Gaussian values, quarters, signed zeros, -inf with a few finite values, and
 * Gaussian rows with a NaN (which it must decline); mx is given as the row's own largest value
 * (with signed zeros, whichever zero the scan keeps). */
static void test_top2(void)
{
    gsl_rng *g = moe_rng_alloc(17, 1);
    int bad = 0, taken = 0, nan_taken = 0, rows = 0, rows8 = 0;
    for (int it = 0; it < 40000; it++) {
        const int len = 2 + (int)gsl_rng_uniform_int(g, LMAX - 1), mode = it % 5;
        rows8 += len >= 8 && mode != 4; /* (the rows the four lanes of AVX2 take) */
        double v[LMAX];
        for (int i = 0; i < len; i++) {
            const double z = gsl_ran_gaussian_ziggurat(g, 1.0);
            v[i] = mode == 1   ? (double)(int)(z * 4.0) / 4.0
                   : mode == 2 ? (gsl_rng_uniform(g) < 0.5 ? 0.0 : -0.0)
                   : mode == 3 ? (gsl_rng_uniform(g) < 0.95 ? -INFINITY : z)
                               : z;
        }
        if (mode == 4)
            v[gsl_rng_uniform_int(g, len)] = NAN;
        int r1 = 0, r2 = -1;
        for (int i = 1; i < len; i++)
            if (v[i] > v[r1])
                r1 = i;
        for (int i = 0; i < len; i++)
            if (i != r1 && (r2 < 0 || v[i] > v[r2]))
                r2 = i;
        int32_t e1 = -7, e2 = -7;
        const int got = moe_select_top2(v, len, v[r1], &e1, &e2);
        rows++;
        if (mode == 4) {
            nan_taken += got;
            continue;
        }
        taken += got;
        bad += got && (e1 != r1 || e2 != r2);
    }
    CHECK(bad == 0 && nan_taken == 0,
          "moe_select_top2: %d of %d rows differ from the scalar scans, %d rows with a NaN taken",
          bad, taken, nan_taken);
#if defined(__AVX512F__)
    CHECK(taken == rows - rows / 5, "moe_select_top2 took %d of the %d rows without a NaN", taken,
          rows - rows / 5);
#elif defined(__AVX2__)
    CHECK(taken == rows8, "moe_select_top2 took %d of the %d rows of 8 or more without a NaN",
          taken, rows8);
#endif
    gsl_rng_free(g);
}

static moe_plan *route(const char *name, int k, int order, int dropless, int renorm, int nt)
{
    moe_route_opts o = route_helper_opts(k, order);
    o.dropless = dropless;
    o.renormalize = renorm;
    return route_helper(name, &o, N, E, L, U, NULL, nt);
}

static void test_threads(void)
{
    static const struct {
        const char *name;
        int k;
    } rt[] = {{"switch", 1}, {"topk", 1}, {"topk", 2}, {"topk", 8}, {"gshard", 2}};
    static const struct {
        int order, dropless, renorm;
    } mode[] = {{MOE_ORDER_CHOICE_MAJOR, 0, 0},
                {MOE_ORDER_TOKEN_MAJOR, 0, 1},
                {MOE_ORDER_CHOICE_MAJOR, 1, 0}};
    for (size_t a = 0; a < sizeof rt / sizeof rt[0]; a++)
        for (size_t m = 0; m < sizeof mode / sizeof mode[0]; m++) {
            moe_plan *p1 = route(rt[a].name, rt[a].k, mode[m].order, mode[m].dropless,
                                 mode[m].renorm, 1);
            moe_plan *p2 = route(rt[a].name, rt[a].k, mode[m].order, mode[m].dropless,
                                 mode[m].renorm, 2);
            /* the capacity must drop claims, or the slot numbering past C is not exercised */
            const int drops = mode[m].dropless || p1->n_entries < (size_t)p1->n_claims;
            CHECK(p1->n_entries > 0 && drops && route_helper_same_plan(p1, p2, E),
                  "%s k=%d order %d dropless %d renormalize %d: 1 and 2 threads differ "
                  "(%zu and %zu entries of %ld claims)",
                  rt[a].name, rt[a].k, mode[m].order, mode[m].dropless, mode[m].renorm,
                  p1->n_entries, p2->n_entries, p1->n_claims);
            moe_plan_free(p1);
            moe_plan_free(p2);
        }
}

/* topk's gates: the rows pass takes the exponentials of a chunk of tokens' selected logits in
 * one vector call (routers/topk.c, topk_gates), or for k >= 3 takes them from its softmax (the
 * numerators of p at the selected experts, moe_softmax_rows_more: the row of eight in one
 * vector, and longer rows); each token's gates must be moe_softmax of its selected logits, the
 * definition (docs/routing.md section 3) and the per-token call the router made before, bit for
 * bit, and its choices the k largest logits by rank (ref_topk). Dropless, not renormalised:
 * entry t*k + j is token t's choice j with its gate as combine weight. k = 3 leaves a tail of
 * the vector call that the C library's exp takes; the quartered logits give ties and zeros, and
 * the same times 300 give differences below -512, which the C library's exp takes, down to
 * subnormal and zero exponentials. Rows of 8, 16, 100 and 256 are the first values of L read
 * as such rows (N * 64 / E of them above 64). */
static double W[(size_t)N * E];

static void test_gates(void)
{
    static const int ks[] = {1, 2, 3, 8}, es[] = {64, 16, 8, 100, 256};
    for (size_t i = 0; i < (size_t)N * E; i++)
        W[i] = L[i] * 300.0;
    for (int w = 0; w < 2; w++)
        for (size_t b = 0; b < sizeof es / sizeof es[0]; b++)
            for (size_t a = 0; a < sizeof ks / sizeof ks[0]; a++) {
                const int k = ks[a], Eb = es[b], n = (int)((size_t)N * E / (size_t)Eb < N
                                                               ? (size_t)N * E / (size_t)Eb
                                                               : N);
                const double *X = w ? W : L;
                moe_route_opts o = route_helper_opts(k, MOE_ORDER_CHOICE_MAJOR);
                o.dropless = 1;
                moe_plan *p = route_helper("topk", &o, n, Eb, X, U, NULL, 2);
                int bad = !p || p->n_entries != (size_t)n * k, tiny = 0, chosen = 0;
                for (int t = 0; !bad && t < n; t++) {
                    double sv[8], ref[8], rv[8];
                    int32_t ri[8];
                    ref_topk(X + (size_t)t * Eb, Eb, k, ri, rv); /* the choices, by rank */
                    for (int j = 0; j < k; j++) {
                        sv[j] = X[(size_t)t * Eb + p->entries[(size_t)t * k + j].expert];
                        chosen += p->entries[(size_t)t * k + j].expert != ri[j];
                    }
                    moe_softmax(sv, k, ref);
                    for (int j = 0; j < k; j++) {
                        bad += memcmp(&ref[j], &p->entries[(size_t)t * k + j].combine_w,
                                      sizeof ref[j]) != 0;
                        tiny += ref[j] < 0x1p-1022;
                    }
                }
                CHECK(bad == 0 && chosen == 0 && (!w || k < 3 || tiny > 0),
                      "topk k=%d E=%d%s: %d gates differ from moe_softmax of the selected logits "
                      "(%d below the smallest normal), %d choices from the top k by rank",
                      k, Eb, w ? " (logits x 300)" : "", bad, tiny, chosen);
                moe_plan_free(p);
            }
}

/* switch's and topk k = 1's choice, dropless, on the quartered logits read as rows of 8 (one
 * vector: its own first-index test) and of 64: every token's one entry is the first index of its
 * row's largest logit, found here by a scalar scan (strict >, so ties go to the lower expert). */
static void test_switch_first(void)
{
    static const char *const routers[] = {"switch", "topk"};
    for (int ri = 0; ri < 2; ri++)
        for (int Ew = 8; Ew <= 64; Ew *= 8) {
            const int n = N * E / Ew < 20000 ? N * E / Ew : 20000;
            moe_route_opts o = route_helper_opts(1, MOE_ORDER_CHOICE_MAJOR);
            o.dropless = 1;
            moe_plan *p = route_helper(routers[ri], &o, n, Ew, L, U, NULL, 2);
            int bad = -1, ties = 0;
            for (int t = 0; t < n; t++) {
                const double *lt = L + (size_t)t * Ew;
                int b = 0, cnt = 1;
                for (int e = 1; e < Ew; e++) {
                    cnt += lt[e] == lt[b];
                    if (lt[e] > lt[b])
                        b = e, cnt = 1;
                }
                ties += cnt > 1;
                if (bad < 0 && ((size_t)t >= p->n_entries || p->entries[t].token != t ||
                                p->entries[t].expert != b))
                    bad = t;
            }
            CHECK(bad < 0 && p->n_entries == (size_t)n,
                  "%s E=%d: token %d is not routed to the first index of its largest logit",
                  routers[ri], Ew, bad);
            CHECK(ties > n / 20, "%s E=%d: only %d of %d rows tie at their maximum", routers[ri],
                  Ew, ties, n);
            moe_plan_free(p);
        }
}

/* The first index of the largest of lt (Ew) other than skip, by a scalar scan. */
static int first_max(const double *lt, int Ew, int skip)
{
    int b = -1;
    for (int e = 0; e < Ew; e++)
        if (e != skip && (b < 0 || lt[e] > lt[b]))
            b = e;
    return b;
}

/* gshard's two choices (every second one claiming: second_policy all) and topk k = 2's,
 * dropless, on the quartered logits read as rows of 8 (one vector: its own top-2), 48 and 64
 * (topk selects those before the softmax, four rows at a time, and gshard at 64) and 32 and 40
 * (after it, per token):
 * the first index of the row's largest logit, then the first index of the largest of the others
 * (the maximum's second place when it has one), by scalar scans; topk's two gates bit for bit
 * the softmax of those two logits (moe_softmax of the pair, without renormalisation). */
static void test_gshard_top2(void)
{
    static const char *const routers[] = {"gshard", "topk"};
    static const int widths[] = {8, 32, 40, 48, 64};
    for (int ri = 0; ri < 2; ri++)
        for (int wi = 0; wi < 5; wi++) {
            const int n = 20000, Ew = widths[wi];
            moe_route_opts o = route_helper_opts(2, MOE_ORDER_CHOICE_MAJOR);
            o.dropless = 1;
            o.renormalize = 0;
            o.second_policy = MOE_SECOND_ALL;
            moe_plan *p = route_helper(routers[ri], &o, n, Ew, L, U, NULL, 2);
            int bad = -1, badg = -1;
            for (int t = 0; t < n && bad < 0; t++) {
                const double *lt = L + (size_t)t * Ew;
                const int e1 = first_max(lt, Ew, -1), e2 = first_max(lt, Ew, e1);
                const moe_entry *en = p->entries + 2 * (size_t)t;
                if (p->n_entries != 2 * (size_t)n || en[0].token != t || en[1].token != t ||
                    en[0].expert != e1 || en[1].expert != e2) {
                    bad = t;
                    break;
                }
                const double v[2] = {lt[e1], lt[e2]};
                double g[2];
                moe_softmax(v, 2, g);
                if (ri == 1 && badg < 0 &&
                    (memcmp(&en[0].combine_w, &g[0], sizeof g[0]) ||
                     memcmp(&en[1].combine_w, &g[1], sizeof g[1])))
                    badg = t;
            }
            CHECK(bad < 0, "%s E=%d: token %d's two choices are not the scans' first and second",
                  routers[ri], Ew, bad);
            CHECK(badg < 0, "topk E=%d: token %d's gates are not the softmax of its two logits",
                  Ew, badg);
            moe_plan_free(p);
        }
}

/* gshard's gates and second claims at E = 8 (eight tokens at a time on the rows pass) and 64
 * (the choices selected before the softmax), against their definition per token: the two
 * choices by scalar scans, p = moe_softmax of the row, g1 = p1 / (p1 + p2), g2 = p2 / (p1 +
 * p2), the second claiming when 2 g2 > u (policy random, the draws U), 2 p2 > u (random with
 * threshold_on raw), g2 > 0.3 (threshold) or always (all); dropless, without renormalisation,
 * on 20003 tokens (a last chunk that is not a multiple of eight): entry by entry, bit for bit. */
static void test_gshard_gates(void)
{
    static const int policy[] = {MOE_SECOND_RANDOM, MOE_SECOND_THRESHOLD, MOE_SECOND_ALL,
                                 MOE_SECOND_RANDOM};
    static const char *pname[] = {"random", "threshold", "all", "random (raw)"};
    const int n = 20003;
    for (int Ew = 8; Ew <= 64; Ew *= 8)
        for (int pi = 0; pi < 4; pi++) {
            moe_route_opts o = route_helper_opts(2, MOE_ORDER_CHOICE_MAJOR);
            o.dropless = 1;
            o.renormalize = 0;
            o.second_policy = policy[pi];
            if (pi == 3)
                o.threshold_on = MOE_THRESH_RAW;
            o.second_threshold = 0.3;
            moe_plan *p = route_helper("gshard", &o, n, Ew, L, U, NULL, 2);
            size_t at = 0;
            int bad = -1, second = 0;
            for (int t = 0; t < n && bad < 0; t++) {
                const double *lt = L + (size_t)t * Ew;
                double pt[64];
                moe_softmax(lt, Ew, pt);
                const int e1 = first_max(lt, Ew, -1), e2 = first_max(lt, Ew, e1);
                const double g1 = pt[e1] / (pt[e1] + pt[e2]), g2 = pt[e2] / (pt[e1] + pt[e2]);
                const int keep = pi == 0   ? 2.0 * g2 > U[t]
                                 : pi == 1 ? g2 > 0.3
                                 : pi == 2 ? 1
                                           : 2.0 * pt[e2] > U[t];
                second += keep;
                const moe_entry *en = p->entries + at;
                if (at + 1 + (size_t)keep > p->n_entries || en[0].token != t ||
                    en[0].expert != e1 || memcmp(&en[0].combine_w, &g1, sizeof g1) ||
                    (keep && (en[1].token != t || en[1].expert != e2 ||
                              memcmp(&en[1].combine_w, &g2, sizeof g2))))
                    bad = t;
                at += 1 + (size_t)keep;
            }
            CHECK(bad < 0 && at == p->n_entries,
                  "gshard E=%d policy %s: token %d's entries differ from the definition", Ew,
                  pname[pi], bad);
            CHECK(pi == 2 ? second == n : second > n / 10 && second < n - n / 10,
                  "gshard E=%d policy %s: %d of %d second choices claim", Ew, pname[pi], second,
                  n);
            moe_plan_free(p);
        }
}

/* gshard drawing its second-expert draws from a PCG32 generator (moe_rng_uniform_fill) against
 * the same draws given with the logits (gsl_rng_uniform one after another from a generator of
 * the same seed), on 1 and 2 threads and token counts that are not a multiple of eight: the
 * same plan, and the generator left where those draws leave it. */
static void test_gshard_drawn(void)
{
    static double u[N];
    const int ns[] = {20003, 4099, 77};
    int bad = 0, cases = 0;
    for (int Ew = 8; Ew <= 64; Ew *= 8)
        for (size_t q = 0; q < sizeof ns / sizeof *ns; q++)
            for (int nt = 1; nt <= 2; nt++) {
                const int n = ns[q];
                moe_route_opts o = route_helper_opts(2, MOE_ORDER_CHOICE_MAJOR);
                gsl_rng *x = moe_rng_alloc(5u, MOE_STREAM_GSHARD);
                gsl_rng *y = moe_rng_alloc(5u, MOE_STREAM_GSHARD);
                for (int i = 0; i < n; i++)
                    u[i] = gsl_rng_uniform(x);
                moe_plan *a = route_helper("gshard", &o, n, Ew, L, u, NULL, nt);
                moe_par_set_threads(nt);
                moe_router *r = NULL;
                moe_plan *b = moe_plan_alloc(n, Ew, 16);
                moe_route_in in = {n, Ew, L, NULL, NULL, y, NULL, NULL, 0, NULL, NULL};
                const int rc = moe_router_alloc(moe_router_find("gshard"), &o, n, Ew, &r) ||
                               moe_router_route(r, &in, b);
                moe_par_set_threads(0);
                bad += rc || !route_helper_same_plan(a, b, Ew) || gsl_rng_get(x) != gsl_rng_get(y);
                cases++;
                moe_router_free(r);
                moe_plan_free(a);
                moe_plan_free(b);
                gsl_rng_free(x);
                gsl_rng_free(y);
            }
    CHECK(bad == 0, "gshard with its draws from a seed: %d of %d cases differ from the same draws "
                    "given, or leave the generator elsewhere", bad, cases);
}

/* The sums the rows pass adds chunk by chunk in token order at E = 8, 16, 32 and 64 (every
 * sum in registers in one pass where a build has such a path) and 40 (the general loops)
 * (routers/claims.c: the sums of p and of the squared logsumexps, then the claims'
 * statistics, on whichever thread adds the chunk): switch and topk k = 2, dropless (entry
 * t*k + j is token t's claim j, its gate the combine weight), on 2 threads on the quartered
 * logits read as rows of E, against their definitions summed here in token order:
 * importance[e] the gates of the claims on e, assigned_load[e] their count, the aux loss from
 * pmean[e] = (sum_t p[t,e]) / n (p = moe_softmax of the row) as claims.h defines it for each
 * router, and lse_sumsq = moe_sum_sq(0, lse) with lse = moe_logsumexp of each row; all bit for
 * bit. */
static void test_rows_sums(void)
{
    static const int widths[] = {8, 16, 32, 40, 64};
    const int n = N;
    static double lse[N];
    for (int q = 0; q < 10; q++) {
        const int EW = widths[q / 2], ri = q % 2;
        const int k = ri ? 2 : 1;
        moe_route_opts o = route_helper_opts(k, MOE_ORDER_TOKEN_MAJOR);
        o.dropless = 1;
        moe_plan *p = route_helper(ri ? "topk" : "switch", &o, n, EW, L, U, NULL, 2);
        double imp[E] = {0}, pm[E] = {0}, pr[E], s = 0.0;
        long cnt[E] = {0}; /* at k = 1 also switch's first choices per expert */
        int bad = !p || p->n_entries != (size_t)n * k;
        for (int t = 0; !bad && t < n; t++) {
            moe_softmax(L + (size_t)t * EW, EW, pr);
            lse[t] = moe_logsumexp(L + (size_t)t * EW, EW);
            for (int e = 0; e < EW; e++)
                pm[e] += pr[e];
            for (int j = 0; j < k; j++) {
                const moe_entry *en = &p->entries[(size_t)t * k + j];
                imp[en->expert] += en->combine_w;
                cnt[en->expert]++;
            }
        }
        for (int e = 0; e < EW; e++) /* moe_claims_finish's sums, in its order */
            s += ri ? (double)cnt[e] * (pm[e] / n) : (double)cnt[e] / n * (pm[e] / n);
        const double aux = ri ? (double)EW / ((double)k * n) * s : EW * s;
        const double zs = moe_sum_sq(0.0, lse, n);
        CHECK(!bad && memcmp(imp, p->importance, EW * sizeof imp[0]) == 0 &&
                  memcmp(cnt, p->assigned_load, EW * sizeof cnt[0]) == 0 &&
                  p->n_claims == (long)n * k && memcmp(&aux, &p->aux_loss, sizeof aux) == 0 &&
                  memcmp(&zs, &p->lse_sumsq, sizeof zs) == 0,
              "%s k=%d E=%d: the rows pass's sums differ from their definitions (aux %.17g "
              "against %.17g, z-loss sum %.17g against %.17g)", ri ? "topk" : "switch", k, EW,
              p ? p->aux_loss : 0.0, aux, p ? p->lse_sumsq : 0.0, zs);
        moe_plan_free(p);
    }
}

int main(void)
{
    gsl_rng *g = moe_rng_alloc(13, 1);
    for (size_t i = 0; i < (size_t)N * E; i++) { /* quarters, skewed to the low experts */
        const double z = gsl_ran_gaussian_ziggurat(g, 1.0) + 0.5 * (double)(i % E < 8);
        L[i] = (double)(int)(z * 4.0) / 4.0;
    }
    for (int i = 0; i < N; i++)
        U[i] = gsl_rng_uniform(g);
    gsl_rng_free(g);
    test_select();
    test_select_sorted();
    test_select_net4();
    test_select_net8();
    test_argmax_skip();
    test_first_eq();
    test_pack();
    test_is_top();
    test_top2();
    test_threads();
    test_gates();
    test_switch_first();
    test_gshard_top2();
    test_gshard_gates();
    test_gshard_drawn();
    test_rows_sums();
    printf("test_routers_fast: %d passed, %d failed\n", check_pass, check_fail);
    return check_fail != 0;
}
