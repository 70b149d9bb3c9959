/* ec_heap_ref.h: the previous implementation of the expert_choice router's selection, kept as
 * the reference that the current one (routers/expert_choice.c) is compared with bit for bit.
 *
 * Origin: routers/expert_choice.c at commit eae4a87 (ec_worse, ec_sift_down, ec_offer, ec_row's
 * scalar loop and ec_block's heapsort, copied unchanged), run on one block of all n tokens: for
 * every expert a min-heap of its best C tokens (root = the worst kept; a token replaces the root
 * only when strictly better), then a heapsort that leaves each heap best first, which is the
 * expert's slot order. Softmax rows and logsumexps by moe_softmax_rows, as that code took them.
 * Include after moe.h. */
#ifndef MOE_EC_HEAP_REF_H
#define MOE_EC_HEAP_REF_H

#include "vexp.h"

#include <math.h>
#include <stdlib.h>

/* a is worse than b: lower score, or equal score and higher token */
static inline int ec_ref_worse(double av, int32_t at, double bv, int32_t bt)
{
    return av < bv || (av == bv && at > bt);
}

static void ec_ref_sift_down(double *hv, int32_t *ht, int sz, int i)
{
    const double xv = hv[i];
    const int32_t xt = ht[i];
    for (;;) {
        int c = 2 * i + 1;
        if (c >= sz)
            break;
        if (c + 1 < sz && ec_ref_worse(hv[c + 1], ht[c + 1], hv[c], ht[c]))
            c++;
        if (!ec_ref_worse(hv[c], ht[c], xv, xt))
            break;
        hv[i] = hv[c];
        ht[i] = ht[c];
        i = c;
    }
    hv[i] = xv;
    ht[i] = xt;
}

static inline void ec_ref_offer(double *hv, int32_t *ht, int *sz, long cap, double *thr, double v,
                                int32_t t)
{
    if (*sz < cap) { /* sift up */
        int i = (*sz)++;
        while (i > 0 && ec_ref_worse(v, t, hv[(i - 1) / 2], ht[(i - 1) / 2])) {
            hv[i] = hv[(i - 1) / 2];
            ht[i] = ht[(i - 1) / 2];
            i = (i - 1) / 2;
        }
        hv[i] = v;
        ht[i] = t;
    } else { /* v > hv[0]: equal score, the kept token is lower */
        hv[0] = v;
        ht[0] = t;
        ec_ref_sift_down(hv, ht, (int)cap, 0);
    }
    if (*sz == cap)
        *thr = hv[0];
}

/* Fill plan (allocated for n tokens and E experts) with the expert_choice plan of logits L
 * (n,E) at capacity C (already capped at n), as routers/expert_choice.c defines it. Returns 0,
 * or -1 when out of memory. */
static int ec_heap_ref_route(const double *L, int n, int E, long C, moe_plan *plan)
{
    double *hv = malloc((size_t)E * (size_t)(C ? C : 1) * sizeof *hv);
    int32_t *ht = malloc((size_t)E * (size_t)(C ? C : 1) * sizeof *ht);
    double *thr = malloc((size_t)E * sizeof *thr), *row = malloc((size_t)E * sizeof *row);
    int *hsz = calloc((size_t)E, sizeof *hsz);
    const size_t ne = (size_t)E * (size_t)C;
    int rc = -1;
    if (!hv || !ht || !thr || !row || !hsz || moe_plan_reset(plan, n, E, E) ||
        moe_plan_reserve(plan, ne) || !moe_plan_lse_buffer(plan))
        goto out;
    for (int e = 0; e < E; e++)
        thr[e] = C > 0 ? -INFINITY : INFINITY;
    for (int t = 0; t < n; t++) {
        moe_softmax_rows(L + (size_t)t * E, 1, E, row, plan->lse + t);
        for (int e = 0; e < E; e++)
            if (row[e] > thr[e])
                ec_ref_offer(hv + (size_t)e * C, ht + (size_t)e * C, hsz + e, C, thr + e, row[e],
                             t);
    }
    for (int e = 0; e < E; e++) { /* heapsort: the worst goes last, so each heap ends best first */
        double *v = hv + (size_t)e * C;
        int32_t *tk = ht + (size_t)e * C;
        for (int sz = hsz[e]; sz > 1; sz--) {
            double tv = v[0];
            int32_t tt = tk[0];
            v[0] = v[sz - 1];
            tk[0] = tk[sz - 1];
            v[sz - 1] = tv;
            tk[sz - 1] = tt;
            ec_ref_sift_down(v, tk, sz - 1, 0);
        }
        double imp = 0.0;
        for (long s = 0; s < C; s++) {
            plan->entries[e * C + s] = (moe_entry){tk[s], (int32_t)e, (int32_t)s, 1.0, v[s]};
            imp += v[s];
        }
        plan->importance[e] = imp;
        plan->assigned_load[e] = C;
    }
    plan->n_entries = ne;
    plan->lse_of = L;
    plan->k = 0;
    plan->capacity = C;
    plan->aux_loss = 0.0;
    plan->n_claims = (long)ne;
    rc = 0;
out:
    free(hv);
    free(ht);
    free(thr);
    free(row);
    free(hsz);
    return rc;
}

#endif
