/* cluster_spec.h: the cluster part of a spec (spec module internals): [cluster.NAME] sections
 * (topologies) and the [experiment] axes clusters, placement, redundant_experts, with
 * warmup_batches and expert_groups; each sweep point runs once per cluster configuration. A
 * [cluster.NAME] section may give its own redundant_experts list, which replaces the axis for
 * that cluster (replica counts must divide over each cluster's devices). */
#ifndef MOE_CLUSTER_SPEC_H
#define MOE_CLUSTER_SPEC_H

#include "cluster_point.h"
#include "spec_internal.h"

typedef struct moe_cluster_spec {
    moe_cluster_topo *topos;
    const spec_section **secs; /* (ntopos) the [cluster.NAME] section of each topology */
    int ntopos;
    moe_cluster_cfg *cfgs; /* clusters x placements x redundant experts (R > 0: eplb only) */
    int ncfgs;
    const spec_section **where_sec; /* (ncfgs) where each configuration's replica count is */
    const spec_kv **where_kv;       /* given, for errors */
    const spec_section *exp;
} moe_cluster_spec;

/* 1 when key is one of the [experiment] keys of this module. */
int moe_cluster_spec_key(const char *key);
/* Load the [cluster.*] sections and the axes into s->cluster (NULL when the spec has none). */
int moe_cluster_spec_load(moe_spec *s, const spec_section *exp);
void moe_cluster_spec_free(moe_cluster_spec *c); /* NULL is a no-op */
/* Push point p once per cluster configuration (copies of its texts, the configuration's text
 * appended to the key) through push; p's own texts stay the caller's. */
int moe_cluster_spec_expand(moe_spec *s, const moe_point *p,
                            int (*push)(moe_spec *, const moe_point *));

#endif
