/* cluster_scale.c: CPU seconds of the cluster model (sim/cluster.c) per batch at DeepSeek-V3
 * scale: E = 256 experts, top-8 claims drawn uniformly without repetition, on 8 x 8 devices,
 * contiguous and EPLB with 64 redundant experts, for T = 8192 .. 65536 tokens. Prints one line
 * per (placement, T) with the per-batch CPU time (thread CPU clock, best of 5) and its ratio
 * to T = 8192. The EPLB placement is built from random loads unrelated to the uniform
 * traffic: it measures cost, not balance. `make bench-cluster` builds and runs it. */
#include "cluster.h"
#include "moe.h"

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double cpu_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int main(void)
{
    const int E = 256, k = 8, Tmax = 65536;
    moe_cluster_topo t = {.name = "h100_8x8", .nodes = 8, .devices_per_node = 8,
                          .intra_gbps = 3600, .intra_latency_us = 1, .inter_gbps = 400,
                          .inter_latency_us = 3, .device_tflops = 495, .dtype_bytes = 2};
    moe_plan *plan = moe_plan_alloc(Tmax, E, (size_t)Tmax * k);
    moe_cluster_sim *cs = moe_cluster_sim_alloc(&t);
    double *load = malloc((size_t)E * sizeof *load);
    moe_pcg32 rng;
    moe_pcg32_seed(&rng, 1, 1);
    if (!plan || !cs || !load)
        return 1;
    for (int e = 0; e < E; e++)
        load[e] = 1.0 + (double)(moe_pcg32_next(&rng) % 100);
    const char *names[] = {"contiguous", "eplb R=64"};
    moe_placement *pl[2] = {moe_placement_alloc(MOE_PLACE_CONTIGUOUS, NULL, E, 0, 1, 8, 64),
                            moe_placement_alloc(MOE_PLACE_EPLB, load, E, 64, 8, 8, 64)};
    if (!pl[0] || !pl[1])
        return 1;
    for (int q = 0; q < 2; q++) {
        double base = 0;
        for (int T = 8192; T <= Tmax; T *= 2) {
            moe_plan_reset(plan, T, E, E);
            for (int tok = 0; tok < T; tok++) {
                int chosen[8], n = 0;
                while (n < k) {
                    int e = (int)(moe_pcg32_next(&rng) % (uint32_t)E), dup = 0;
                    for (int j = 0; j < n; j++)
                        dup |= chosen[j] == e;
                    if (!dup)
                        chosen[n++] = e;
                }
                for (int j = 0; j < k; j++)
                    moe_plan_push(plan, tok, chosen[j], 0, 1.0, 1.0 / k);
            }
            double best = 1e30;
            for (int rep = 0; rep < 5; rep++) {
                double t0 = cpu_now();
                if (moe_cluster_sim_run(cs, &t, pl[q], plan, 7168, 6.0 * 7168 * 2048, 495))
                    return 1;
                double dt = cpu_now() - t0;
                best = dt < best ? dt : best;
            }
            if (T == 8192)
                base = best;
            printf("%-11s T=%6d  %.2f ms per batch  x%.2f of T=8192  balancedness %.3f  "
                   "nodes/token %.3f\n", names[q], T, best * 1e3, best / base, cs->balancedness,
                   cs->nodes_per_token);
        }
    }
    moe_placement_free(pl[0]);
    moe_placement_free(pl[1]);
    moe_cluster_sim_free(cs);
    moe_plan_free(plan);
    free(load);
    return 0;
}
