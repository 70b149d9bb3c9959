/* bench_routing.h: `moesim bench --routing` (sim/bench_routing.c). */
#ifndef MOE_BENCH_ROUTING_H
#define MOE_BENCH_ROUTING_H

/* argv[0] is the command word; the flags are those of usage in bench_routing.c. */
int moe_bench_routing(int argc, char **argv);

/* The bound of `moesim bench --routing`: the best of repeats passes over the n x E logits L on
 * the routers' threads, each reading every logit once and taking its exponential (the routers'
 * own, moe_vexp_shift), in seconds. */
double moe_bench_routing_bound(const double *L, int n, int E, int repeats);

#endif
