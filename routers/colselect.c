/* colselect.c: selection and sorting of (score, token) candidates (colselect.h). */
#include "colselect.h"

#include <string.h>
#if defined(__AVX512F__) || defined(__AVX2__)
#include <immintrin.h>
#endif

enum { CAND_INSERTION = 16 }; /* runs sorted by insertion before merging */

static void cand_insertion(moe_cand *a, long m)
{
    for (long i = 1; i < m; i++) {
        const moe_cand x = a[i];
        long j = i;
        while (j > 0 && moe_cand_better(x, a[j - 1])) {
            a[j] = a[j - 1];
            j--;
        }
        a[j] = x;
    }
}

/* Merge the sorted runs a[0..h) and a[h..m) through tmp. */
static void cand_merge(moe_cand *a, long h, long m, moe_cand *tmp)
{
    if (!moe_cand_better(a[h], a[h - 1]))
        return; /* already in order */
    memcpy(tmp, a, (size_t)h * sizeof *a);
    long i = 0, j = h, o = 0;
    while (i < h && j < m)
        a[o++] = moe_cand_better(a[j], tmp[i]) ? a[j++] : tmp[i++];
    while (i < h)
        a[o++] = tmp[i++];
}

void moe_cand_sort(moe_cand *a, long m, moe_cand *tmp)
{
    if (m <= CAND_INSERTION) {
        cand_insertion(a, m);
        return;
    }
    const long h = m / 2;
    moe_cand_sort(a, h, tmp);
    moe_cand_sort(a + h, m - h, tmp);
    cand_merge(a, h, m, tmp);
}

static inline void cand_swap(moe_cand *a, long i, long j)
{
    const moe_cand x = a[i];
    a[i] = a[j];
    a[j] = x;
}

void moe_cand_select(moe_cand *a, long m, long k, moe_cand *tmp)
{
    long lo = 0, hi = m - 1;
    int budget = 8;
    for (long r = m; r > 1; r >>= 1)
        budget += 2; /* 2 log2(m) + 8 rounds before the sort takes over */
    while (lo < hi) {
        if (hi - lo < CAND_INSERTION || budget-- == 0) {
            moe_cand_sort(a + lo, hi - lo + 1, tmp);
            return;
        }
        /* median of three into the middle, the best of them at lo and the worst at hi */
        const long mid = lo + (hi - lo) / 2;
        if (moe_cand_better(a[mid], a[lo]))
            cand_swap(a, mid, lo);
        if (moe_cand_better(a[hi], a[lo]))
            cand_swap(a, hi, lo);
        if (moe_cand_better(a[hi], a[mid]))
            cand_swap(a, hi, mid);
        const moe_cand piv = a[mid];
        /* Hoare partition: a[lo..j] not worse than piv, a[j+1..hi] not better, lo <= j < hi */
        long i = lo - 1, j = hi + 1;
        for (;;) {
            do
                i++;
            while (moe_cand_better(a[i], piv));
            do
                j--;
            while (moe_cand_better(piv, a[j]));
            if (i >= j)
                break;
            cand_swap(a, i, j);
        }
        if (k - 1 <= j)
            hi = j;
        else
            lo = j + 1;
    }
}

/* ---- cut ---- */

enum { CUT_SAMPLE = 32 };

/* The candidates of a (m) with a score above x. Four candidates per vector: lanes 0, 2, 4, 6
 * hold the scores. */
static long cut_count(const moe_cand *a, long m, double x)
{
    long i = 0, c = 0;
#if defined(__AVX512F__)
    const __m512d xv = _mm512_set1_pd(x);
    for (; i + 4 <= m; i += 4)
        c += __builtin_popcount(
            _mm512_mask_cmp_pd_mask(0x55, _mm512_loadu_pd((const double *)(a + i)), xv,
                                    _CMP_GT_OQ));
#elif defined(__AVX2__)
    const __m256d xv = _mm256_set1_pd(x);
    for (; i + 4 <= m; i += 4) { /* the scores of candidates i, i + 2, i + 1, i + 3 */
        const __m256d v = _mm256_unpacklo_pd(_mm256_loadu_pd((const double *)(a + i)),
                                             _mm256_loadu_pd((const double *)(a + i + 2)));
        c += __builtin_popcount((unsigned)_mm256_movemask_pd(_mm256_cmp_pd(v, xv, _CMP_GT_OQ)));
    }
#endif
    for (; i < m; i++)
        c += a[i].v > x;
    return c;
}

/* Keep the candidates of a (m) with a score above x, in order, at the front. */
static void cut_keep(moe_cand *a, long m, double x)
{
    long i = 0, o = 0;
#if defined(__AVX512F__)
    const __m512d xv = _mm512_set1_pd(x);
    for (; i + 4 <= m; i += 4) {
        const __m512i c = _mm512_loadu_si512((const void *)(a + i));
        const __mmask8 gt =
            _mm512_mask_cmp_pd_mask(0x55, _mm512_castsi512_pd(c), xv, _CMP_GT_OQ);
        /* whole candidates (score and token lanes) to the front: the store ends at or before
         * a + i + 4, which is read already */
        _mm512_storeu_si512((void *)(a + o),
                            _mm512_maskz_compress_epi64((__mmask8)(gt | gt << 1), c));
        o += __builtin_popcount(gt);
    }
#endif
    for (; i < m; i++) { /* without a branch: about half the candidates stay */
        const int keep = a[i].v > x;
        a[o] = a[i];
        o += keep;
    }
}

long moe_cand_cut(moe_cand *a, long m, long k, double *x, moe_cand *tmp)
{
    if (m >= 4 * CUT_SAMPLE) {
        double s[CUT_SAMPLE];
        for (int q = 0; q < CUT_SAMPLE; q++) { /* evenly spaced, sorted descending */
            const double v = a[(2 * q + 1) * m / (2 * CUT_SAMPLE)].v;
            int i = q;
            for (; i > 0 && s[i - 1] < v; i--)
                s[i] = s[i - 1];
            s[i] = v;
        }
        /* sample score i has about (i + 1/2) m / 32 of the list above it */
        long q = (k + (m - k) / 4) * CUT_SAMPLE / m;
        for (int tries = 0; tries < 3 && q < CUT_SAMPLE; tries++, q += 4) {
            const long c = cut_count(a, m, s[q]);
            if (c >= k) {
                if (c > m - (m - k) / 8)
                    break; /* frees too little */
                cut_keep(a, m, s[q]);
                *x = s[q];
                return c;
            }
        }
    }
    moe_cand_select(a, m, k, tmp);
    *x = a[k - 1].v;
    return k;
}
