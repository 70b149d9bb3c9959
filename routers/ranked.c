/* ranked.c: descending order of a row, taken one index at a time or sorted whole (interface in
 * ranked.h). */
#include "ranked.h"

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

int moe_ranked_sort(double *v, int32_t *ix, double *sv, int32_t *si, int len)
{
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
