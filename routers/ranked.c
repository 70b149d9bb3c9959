/* ranked.c: descending order of a row taken one index at a time (interface in ranked.h). */
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
