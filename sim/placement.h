/* placement.h: where the experts of one MoE layer live on a cluster of devices.
 *
 * Dimension letters: E logical experts, R redundant replicas, P = E + R physical expert
 * slots, D devices, N nodes (D a multiple of N), G expert groups. Physical slot p lives on
 * device p / (P / D), so a placement is the map phy2log (P) plus each slot's replica rank.
 *
 * Strategies:
 *   contiguous   slot p holds expert p: experts in blocks of E/D (DeepSpeed, Megatron default)
 *   round_robin  expert e on device e mod D
 *   greedy       experts sorted by load (descending), each put on the lightest device that
 *                still has room for E/D experts (capacity-constrained longest-processing-time;
 *                the same packing EPLB uses)
 *   eplb         EPLB's hierarchical policy (deepseek-ai/EPLB eplb.py, rebalance_experts):
 *                groups packed onto nodes, R replicas of the heaviest experts made within each
 *                node, physical experts packed onto the node's devices; the global policy (one
 *                group, one node) when G is not a multiple of N. */
#ifndef MOE_PLACEMENT_H
#define MOE_PLACEMENT_H

typedef enum {
    MOE_PLACE_CONTIGUOUS = 0,
    MOE_PLACE_ROUND_ROBIN = 1,
    MOE_PLACE_GREEDY = 2,
    MOE_PLACE_EPLB = 3
} moe_place_kind;

typedef struct {
    int E, P, D;      /* logical experts, physical slots (E + R), devices */
    int max_cnt;      /* most replicas any expert has */
    int *phy2log;     /* (P) logical expert held by slot p */
    int *phy_rank;    /* (P) replica rank of slot p among its expert's replicas */
    int *log_cnt;     /* (E) replicas of each expert (>= 1) */
    int *log2phy;     /* (E, max_cnt) slot of replica r of expert e; -1 past log_cnt[e] */
} moe_placement;

/* Name <-> kind ("contiguous", "round_robin", "greedy", "eplb"); -1 for an unknown name. */
int moe_placement_kind_parse(const char *name);
const char *moe_placement_kind_name(moe_place_kind kind);

/* Build a placement of E experts (R redundant slots, only for eplb) on D devices in N nodes
 * with G expert groups (eplb only; G divides E). load (E) is the warm-up load of each expert
 * (greedy and eplb; may be NULL for contiguous and round_robin). Returns NULL with moe_fail
 * on a shape that does not divide (E + R by D, D by N, E by G). */
moe_placement *moe_placement_alloc(moe_place_kind kind, const double *load, int E, int R,
                                   int G, int N, int D);
void moe_placement_free(moe_placement *pl); /* NULL is a no-op */

/* EPLB's building blocks, exposed for the tests (weights (n), outputs (n) or as stated).
 * Ties: items of equal weight are taken in index order, and among equally light packs (or
 * equally loaded experts) the lowest index wins. */
/* Pack n items into `packs` packs of exactly n/packs items each, heaviest item first into
 * the lightest pack that has room. */
void moe_placement_pack(const double *w, int n, int packs, int *pack_index, int *rank_in_pack);
/* Replicate nlog experts into nphy >= nlog slots: each extra slot goes to the expert with
 * the largest load per replica. phy2log (nphy), rank (nphy), cnt (nlog). */
void moe_placement_replicate(const double *w, int nlog, int nphy, int *phy2log, int *rank,
                             int *cnt);

#endif
