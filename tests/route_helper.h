/* route_helper.h: routing a test's logits through a named router on a chosen number of threads,
 * and comparing two plans bit for bit, for the router tests that check that the routers'
 * threads (routers/par.h) do not change plans. Include after check.h and moe.h. */
#ifndef MOE_ROUTE_HELPER_H
#define MOE_ROUTE_HELPER_H

#include "../routers/par.h"

#include <string.h>

/* The options of these tests: the defaults with k, order and capacity factor 5/4. */
static inline moe_route_opts route_helper_opts(int k, int order)
{
    moe_route_opts o;
    moe_route_opts_default(&o);
    o.k = k;
    o.order = order;
    o.cf_set = 1;
    o.cf_num = 5;
    o.cf_den = 4;
    return o;
}

/* Router `name` with options o on logits L (n,E) and gshard draws U (n), rts keys R (n,E) or
 * NULL, routed with nt routers' threads (then reset to the default). A failure is a CHECK
 * naming the case; the plan is returned either way (free it with moe_plan_free). */
static inline moe_plan *route_helper(const char *name, const moe_route_opts *o, int n, int E,
                                     const double *L, const double *U, const double *R, int nt)
{
    moe_par_set_threads(nt);
    moe_router *r = NULL;
    moe_plan *p = moe_plan_alloc(n, E, 16);
    int rc = moe_router_alloc(moe_router_find(name), o, n, E, &r);
    moe_route_in in = {n, E, L, NULL, U, NULL, NULL, NULL, 0, NULL, R};
    if (!rc)
        rc = moe_router_route(r, &in, p);
    CHECK(rc == 0, "%s k=%d order %d threads %d: %s", name, o->k, o->order, nt, moe_errmsg());
    moe_router_free(r);
    moe_par_set_threads(0);
    return p;
}

/* 1 when a and b (E experts) hold the same entries in the same order, capacity, claims, aux
 * loss, loads, importance, claims per rank and (when kept) logsumexps, bit for bit. */
static inline int route_helper_same_plan(const moe_plan *a, const moe_plan *b, int E)
{
    if (a->n_entries != b->n_entries || a->capacity != b->capacity ||
        a->n_claims != b->n_claims || memcmp(&a->aux_loss, &b->aux_loss, sizeof a->aux_loss) ||
        memcmp(a->rank_claims, b->rank_claims, sizeof a->rank_claims) ||
        memcmp(a->rank_kept, b->rank_kept, sizeof a->rank_kept) ||
        (a->lse_of == NULL) != (b->lse_of == NULL))
        return 0;
    for (size_t i = 0; i < a->n_entries; i++) {
        const moe_entry *x = &a->entries[i], *y = &b->entries[i];
        if (x->token != y->token || x->expert != y->expert || x->slot != y->slot ||
            memcmp(&x->combine_w, &y->combine_w, sizeof x->combine_w) ||
            memcmp(&x->dispatch_w, &y->dispatch_w, sizeof x->dispatch_w))
            return 0;
    }
    return memcmp(a->assigned_load, b->assigned_load, (size_t)E * sizeof *a->assigned_load) ==
               0 &&
           memcmp(a->importance, b->importance, (size_t)E * sizeof *a->importance) == 0 &&
           (!a->lse_of || memcmp(a->lse, b->lse, (size_t)a->n * sizeof *a->lse) == 0);
}

#endif
