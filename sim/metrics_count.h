/* metrics_count.h: the counts of a plan's entries behind the routing metrics, on the routers'
 * threads (metrics_count.c; used by moe_metrics_compute, sim/metrics.c). The results do not
 * depend on the number of threads. */
#ifndef MOE_METRICS_COUNT_H
#define MOE_METRICS_COUNT_H

#include "metrics_anchor.h" /* moe_metrics_span */
#include "moe.h"

#include <stdint.h>

/* One pass over the entries: each must lie inside the plan's (T, E, C) (else the error naming
 * the first one that does not), and a plan cannot have fewer claims than entries; *ordered =
 * whether the entries of a sparse plan come in token order (the token-choice routers' plans:
 * each token's experts can then be read from its own entries); kept (E) += the entries of each
 * expert (sparse plans only). */
int moe_metrics_scan(const moe_plan *plan, long *kept, int *ordered);

/* mt's experts_per_token (E+1) and groups_touched (G+1) histograms, groups_touched_mean and the
 * token drop rates per routing group of group_size tokens (0: one group), for G contiguous
 * expert groups: from the marks bits (T, words) (bit e % 64 of word e / 64 of row t set when
 * token t has expert e) or, with bits NULL, from each token's entries (moe_metrics_scan gave
 * ordered = 1). */
int moe_metrics_count_tokens(const moe_plan *plan, const uint64_t *bits, int words, int G,
                             int group_size, moe_metrics *mt);

/* moe_metrics_scan and moe_metrics_count_tokens (bits NULL) in one pass over the entries of a
 * sparse plan, for plans whose entries come in token order (the token-choice routers'): the
 * same kept (E) additions, checks and counts, and *done = 1. *done = 0 with nothing written
 * (kept and mt unchanged) when the plan is dense or empty, its entries are not in token order
 * or one lies outside (T, E, C): the caller then runs the two passes (which name a bad entry).
 * Errors: moe_metrics_scan's claims check, MOE_ENOMEM. */
int moe_metrics_scan_count(const moe_plan *plan, int G, int group_size, long *kept,
                           moe_metrics *mt, int *done);

/* The plan's entries observer (moe_plan.ents_begin, ents_block) of mt, whose state mt owns
 * (mt->ents, freed by moe_metrics_free): moe_metrics_ents_attach lets plan's resolutions show
 * mt's metrics the entries they write, which the observer counts as moe_metrics_scan_count's
 * one pass does, block by block on the router's threads right after each block is written
 * (from cache rather than from memory), for E <= 256 and one expert group. moe_metrics_scan_count
 * then merges those counts instead of reading the entries again, when the observer saw every
 * entry of the plan as it is (ents_seen), for the same options; the same checks and values.
 * Errors: MOE_ENOMEM. */
typedef struct moe_metrics_ents moe_metrics_ents;
int moe_metrics_ents_attach(moe_metrics *mt, moe_plan *plan);
void moe_metrics_ents_free(moe_metrics_ents *o);

/* The marks bits (T, words) of the plan's (token, expert) pairs (bits zero on entry) and, for a
 * dense plan, slot_mark (E, C) zero on entry: 1 at each slot some entry fills, with kept_load
 * (E) += the slots of each expert it marks. On the routers' threads when the entries come in
 * token order (each thread marking its own tokens' entries, found by binary searches), else in
 * one loop. Each entry is checked to lie inside the plan's (T, E, C) before it is marked; at
 * the first that does not, moe_metrics_scan's error (so that a dense plan, whose entries the
 * scan has nothing else to count in, needs only this pass over them). */
int moe_metrics_mark(const moe_plan *plan, uint64_t *bits, int words, unsigned char *slot_mark,
                     long *kept_load);

#endif
