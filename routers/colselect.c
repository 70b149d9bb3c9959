/* colselect.c: selection and sorting of (score, token) candidates (colselect.h). */
#include "colselect.h"

#include <string.h>

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
