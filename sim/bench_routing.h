/* bench_routing.h: `moesim bench --routing` (sim/bench_routing.c). */
#ifndef MOE_BENCH_ROUTING_H
#define MOE_BENCH_ROUTING_H

/* argv[0] is the command word; the flags are those of usage in bench_routing.c. */
int moe_bench_routing(int argc, char **argv);

#endif
