/* clustered.h: the Gaussian-mixture sources `clustered` (clustered.c) and `drift` (drift.c),
 * which is clustered with a weight ranking that rotates per batch: their shared parameters and
 * functions. */
#ifndef MOE_SOURCES_CLUSTERED_H
#define MOE_SOURCES_CLUSTERED_H

#include "source.h"

#define MOE_SP_CLUSTERS                                                                       \
    {"clusters", MOE_SP_INT, "M", -1, 1, 1 << 20, 0, NULL, "number of mixture components"},   \
    {"radius", MOE_SP_NUM, "3", 3, 0, MOE_SP_BIG, 0, NULL,                                     \
     "cluster centres lie on the sphere of this radius"},                                     \
    MOE_SP_SIGMA("standard deviation of every coordinate around its centre"),                 \
    {"weights", MOE_SP_ENUM, "zipf", 0, 0, 0, 0, "zipf|dirichlet",                             \
     "cluster weights: w_i ~ (i+1)^-zipf_s, or Dirichlet(alpha) drawn once"},                  \
    {"zipf_s", MOE_SP_NUM, "1.2", 1.2, 0, 100, 0, NULL, "Zipf exponent of the cluster weights"}, \
    {"alpha", MOE_SP_NUM, "0.5", 0.5, 0, 1e6, 1, NULL,                                         \
     "Dirichlet concentration of the weights"},                                               \
    MOE_SP_VOCAB("32000", 32000, 2147483647.0),                                                \
    {"gate", MOE_SP_ENUM, "random", 0, 0, 0, 0, "random|aligned",                              \
     "Wg N(0, 1/D), or column e = unit centre (e mod clusters) + N(0, gate_noise^2/D)"},       \
    MOE_SP_GATE_SCALE,                                                                         \
    {"gate_noise", MOE_SP_NUM, "0.1", 0.1, 0, MOE_SP_BIG, 0, NULL,                             \
     "noise of the aligned gate columns"}

/* Centres and weights from the parameters (a `drift_step` parameter, where the type has one,
 * rotates the ranking per batch). */
int moe_clustered_open(moe_source *s);
int moe_clustered_batch(moe_source *s, int b);
void moe_clustered_close(moe_source *s);
const double *moe_clustered_gate_dirs(const moe_source *s, int *count);

#endif
