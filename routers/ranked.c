/* ranked.c: descending order of a row, taken one index at a time or sorted whole (interface in
 * ranked.h). */
#include "ranked.h"

#include <float.h>
#include <stdint.h>
#include <string.h>

/* a comes before b: larger value, or equal value and lower index (-0.0 equals +0.0) */
static inline int ranked_before(const double *v, int32_t a, int32_t b)
{
    return v[a] > v[b] || (v[a] == v[b] && a < b);
}

static void ranked_sift(moe_ranked *r, int i)
{
    int32_t *h = r->h;
    const int32_t x = h[i];
    for (;;) {
        int c = 2 * i + 1;
        if (c >= r->n)
            break;
        if (c + 1 < r->n && ranked_before(r->v, h[c + 1], h[c]))
            c++;
        if (!ranked_before(r->v, h[c], x))
            break;
        h[i] = h[c];
        i = c;
    }
    h[i] = x;
}

void moe_ranked_init(moe_ranked *r, const double *v, int len, int32_t *heap)
{
    r->v = v, r->h = heap, r->n = len;
    for (int i = 0; i < len; i++)
        heap[i] = i;
    for (int i = len / 2 - 1; i >= 0; i--)
        ranked_sift(r, i);
}

int moe_ranked_next(moe_ranked *r)
{
    if (r->n == 0)
        return -1;
    const int32_t top = r->h[0];
    r->h[0] = r->h[--r->n];
    if (r->n > 1)
        ranked_sift(r, 0);
    return top;
}

/* Runs of RUN sorted by insertion (stable), then bottom-up merges between the two buffers; a
 * merge takes from the right run only when its value is strictly larger (stable), without a
 * branch on the values. */
enum { RUN = 8 };

static void sort_runs(double *v, int32_t *ix, int len)
{
    for (int lo = 0; lo < len; lo += RUN) {
        const int hi = lo + RUN < len ? lo + RUN : len;
        for (int i = lo + 1; i < hi; i++) {
            const double x = v[i];
            const int32_t xi = ix[i];
            int j = i;
            for (; j > lo && v[j - 1] < x; j--)
                v[j] = v[j - 1], ix[j] = ix[j - 1];
            v[j] = x, ix[j] = xi;
        }
    }
}

static void merge_runs(const double *v, const int32_t *ix, double *ov, int32_t *oi, int len,
                       int w)
{
    for (int lo = 0; lo < len; lo += 2 * w) {
        const int mid = lo + w < len ? lo + w : len, hi = lo + 2 * w < len ? lo + 2 * w : len;
        int i = lo, j = mid, o = lo;
        while (i < mid && j < hi) {
            const int right = v[j] > v[i];
            ov[o] = right ? v[j] : v[i];
            oi[o++] = right ? ix[j] : ix[i];
            j += right;
            i += !right;
        }
        for (; i < mid; i++, o++)
            ov[o] = v[i], oi[o] = ix[i];
        for (; j < hi; j++, o++)
            ov[o] = v[j], oi[o] = ix[j];
    }
}

/* By value buckets: b(x) = (int)((x - min) * (NB / (max - min))), a monotone map (each
 * floating-point step rounds monotonically), so the pairs placed bucket by bucket from the top,
 * in their given order within a bucket, are sorted but for the order within each bucket, which
 * one stable insertion pass restores; it moves each pair past its own bucket's larger values
 * only. Into sv, si; 0 when the values do not suit it (a NaN or an infinity, all equal, or a
 * bucket of more than BUCKET_MAX pairs: then the merge sort). */
enum { BUCKET_MIN_LEN = 24, BUCKET_MAX = 24 };

static int sort_buckets(const double *v, const int32_t *ix, double *sv, int32_t *si, int len)
{
    double lo = v[0], hi = v[0];
    int nan = 0;
    for (int i = 0; i < len; i++) {
        lo = v[i] < lo ? v[i] : lo;
        hi = v[i] > hi ? v[i] : hi;
        nan |= v[i] != v[i];
    }
    const double range = hi - lo;
    if (nan || !(range > 0.0 && range <= DBL_MAX))
        return 0; /* a NaN, all equal, or an infinity */
    int nb = 1;
    while (nb < len)
        nb *= 2;
    const double scale = nb / range;
    if (!(scale <= DBL_MAX))
        return 0; /* a range too small to divide */
    uint16_t b[MOE_RANKED_MAX];
    int start[MOE_RANKED_MAX + 1];
    memset(start, 0, (size_t)(nb + 1) * sizeof *start);
    for (int i = 0; i < len; i++) {
        int q = (int)((v[i] - lo) * scale);
        q = q < nb ? q : nb - 1;
        b[i] = (uint16_t)(nb - 1 - q); /* bucket 0: the largest values */
        start[b[i] + 1]++;
    }
    for (int q = 0; q < nb; q++) {
        if (start[q + 1] > BUCKET_MAX)
            return 0;
        start[q + 1] += start[q];
    }
    for (int i = 0; i < len; i++) {
        const int o = start[b[i]]++;
        sv[o] = v[i], si[o] = ix[i];
    }
    for (int i = 1; i < len; i++) {
        const double x = sv[i];
        if (!(sv[i - 1] < x))
            continue;
        const int32_t xi = si[i];
        int j = i;
        for (; j > 0 && sv[j - 1] < x; j--)
            sv[j] = sv[j - 1], si[j] = si[j - 1];
        sv[j] = x, si[j] = xi;
    }
    return 1;
}

int moe_ranked_sort(double *v, int32_t *ix, double *sv, int32_t *si, int len)
{
    if (len >= BUCKET_MIN_LEN && len <= MOE_RANKED_MAX && sort_buckets(v, ix, sv, si, len))
        return 0;
    sort_runs(v, ix, len);
    int in_v = 1;
    for (int w = RUN; w < len; w *= 2, in_v = !in_v) {
        if (in_v)
            merge_runs(v, ix, sv, si, len, w);
        else
            merge_runs(sv, si, v, ix, len, w);
    }
    return in_v;
}
