/* route_groups.c: routing groups (group_size G), for every router type alike. The n tokens of a
 * batch split into n/G groups of G contiguous tokens; each group is routed on its own by the
 * router type, as a batch of G tokens (so its capacity is the router's own rule on G tokens:
 * C = max(min_capacity, ROUND(k*G*cf/E)) for the capacity routers, ceil(G/E) for BASE, P slots
 * per expert for soft_moe), with the inputs of the group's rows: logits, token ids, recorded
 * choices and every file of draws. Draws from the router's stream are taken group after group;
 * the routers draw in token order, so each group gets the draws of its rows in the ungrouped
 * sequence.
 *
 * The groups' plans are assembled into one plan of the same format: token g*G + t, slot
 * g*C + s with C the largest capacity of a group (the groups of a fixed-capacity router all have
 * the same), capacity (n/G)*C, so slot < capacity holds and the layer serves each group from
 * its own block of slots. Claim statistics (assigned_load, importance, n_claims) are summed over
 * the groups, aux_loss is the mean of the groups' losses (GShard computes the loss per group and
 * averages), and the logsumexps of the logits are kept when every group kept them.
 */
#include "moe.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int moe_route_capacity(const moe_route_opts *o, int k, long n, int E, long *C)
{
    moe_route_opts e;
    moe_route_opts_effective(o, &e);
    const long G = e.group_size > 0 && e.group_size < n ? e.group_size : n;
    long c = 0;
    int rc = moe_capacity(&e, k, G, E, &c);
    if (rc)
        return rc;
    if (__builtin_mul_overflow(c, n / G, C))
        return moe_fail(MOE_EINVAL, NULL, "capacity %ld x %ld groups overflows", c, n / G);
    return MOE_OK;
}

/* The group's view of the batch's inputs: rows g*G .. g*G+G-1. */
static moe_route_in group_input(const moe_route_in *in, int g, int G)
{
    const size_t row = (size_t)g * (size_t)G, m = (size_t)in->m;
    moe_route_in q = *in;
    q.n = G;
    q.logits = in->logits + row * m;
    if (in->ids)
        q.ids = in->ids + row;
    if (in->uniforms)
        q.uniforms = in->uniforms + row;
    if (in->choices)
        q.choices = in->choices + row * (size_t)in->k_rec;
    if (in->choice_w)
        q.choice_w = in->choice_w + row * (size_t)in->k_rec;
    if (in->gumbel_u)
        q.gumbel_u = in->gumbel_u + row * m;
    if (in->rts_u)
        q.rts_u = in->rts_u + row * m;
    return q;
}

int moe_route_groups(moe_router *r, const moe_route_in *in, moe_plan *plan)
{
    const int G = r->opts.group_size, ng = in->n / G, E = r->E;
    int rc = moe_plan_reset(plan, in->n, E, in->m);
    if (rc)
        return rc;
    plan->k = r->k;
    if (!r->gplan && !(r->gplan = moe_plan_alloc(G, E, plan->cap_entries)))
        return moe_fail(MOE_ENOMEM, NULL, "out of memory (plan of a group of %d tokens)", G);
    moe_plan *gp = r->gplan;
    double *lse = NULL;
    int keep_lse = 1;
    long C = 0;
    double aux = 0.0;
    for (int g = 0; g < ng; g++) {
        const moe_route_in q = group_input(in, g, G);
        if ((rc = moe_plan_reset(gp, G, E, in->m)))
            return rc;
        gp->k = r->k;
        if ((rc = r->type->route(r, &q, gp)))
            return rc;
        for (size_t i = 0; i < gp->n_entries; i++) {
            const moe_entry *e = &gp->entries[i];
            /* the slot stays group-local until C is known */
            if ((rc = moe_plan_push(plan, e->token + g * G, e->expert, e->slot, e->dispatch_w,
                                    e->combine_w)))
                return rc;
        }
        for (int e = 0; e < E; e++) {
            plan->assigned_load[e] += gp->assigned_load[e];
            plan->importance[e] += gp->importance[e];
        }
        plan->n_claims += gp->n_claims;
        for (int j = 0; j < 2; j++) { /* per-rank claims (fairseq's overflow metrics) */
            plan->rank_claims[j] += gp->rank_claims[j];
            plan->rank_kept[j] += gp->rank_kept[j];
        }
        if (gp->noisy_logits) { /* the noisy logits of each group, for the metrics */
            double *nz = plan->noisy_logits ? plan->noisy_buf : moe_plan_noisy_buffer(plan);
            if (!nz)
                return MOE_ENOMEM;
            memcpy(nz + (size_t)g * G * E, gp->noisy_logits, (size_t)G * E * sizeof *nz);
            plan->noise_std = gp->noise_std;
        }
        aux += gp->aux_loss;
        if (gp->capacity > C)
            C = gp->capacity;
        plan->dense = gp->dense;
        plan->k = gp->k;
        keep_lse = keep_lse && gp->lse_of == q.logits;
        if (keep_lse) {
            if (!lse && !(lse = moe_plan_lse_buffer(plan)))
                return MOE_ENOMEM;
            for (int t = 0; t < G; t++)
                lse[(size_t)g * G + t] = gp->lse[t];
        }
    }
    if (C > INT32_MAX / ng)
        return moe_fail(MOE_EINPUT, "use fewer or larger groups",
                        "%d groups x capacity %ld exceed the plan's slot range", ng, C);
    for (size_t i = 0; i < plan->n_entries; i++)
        plan->entries[i].slot += (plan->entries[i].token / G) * (int32_t)C;
    plan->capacity = C * ng;
    plan->aux_loss = aux / ng;
    plan->lse_of = keep_lse ? in->logits : NULL;
    return MOE_OK;
}
