/* test_cluster.c: the cluster model (sim/cluster.c) on cases worked by hand.
 *
 * Case A: 2 nodes x 2 devices, 8 experts contiguous (experts 2d, 2d+1 on device d), 4 tokens
 * (token t starts on device t), one token activation B = 500 x 2 = 1000 bytes, intra-node
 * 8 Gbit/s (1 us per B) with 1 us latency, inter-node 0.8 Gbit/s (10 us per B) with 10 us
 * latency, 1e6 FLOPs per row at 1 TFLOP/s (1 us per row).
 *   t0 (dev 0): e0 e1 -> dev 0 twice: 2 rows, 1 token in, no bytes, 1 node
 *   t1 (dev 1): e0 e4 -> dev 0 (intra 1->0); dev 2 on node 1: network 1->3 (relay, local
 *                index 1), then intra 3->2; 2 nodes
 *   t2 (dev 2): e6 e4 -> dev 3 (intra 2->3), dev 2 (itself); 1 node
 *   t3 (dev 3): e1 e2 -> node 0: network 3->1 (relay), intra 1->0; dev 1 is the relay; 1 node
 * rows (4 1 2 1): balancedness 2/4; tokens in (3 1 2 1); intra send (0 2B B B), recv
 * (2B 0 B B); inter send (0 B 0 B), recv (0 B 0 B); nodes histogram (0 3 1), mean 1.25;
 * node bytes 0->0 2B, 0->1 B, 1->0 B, 1->1 2B.
 * Dispatch = sum over link kinds of latency x max(send peers, recv peers) + max(send, recv)/bw:
 *   d0: 1 + 2 = 3 us; d1: (1 + 2) + (10 + 10) = 23 us; d2: 1 + 1 = 2 us;
 *   d3: (1 + 1) + (10 + 10) = 22 us. Combine the same. Experts (4 1 2 1) us.
 *   Step = 23 + 4 + 23 = 50 us.
 * Case B: one expert with two replicas on two devices (hand-built placement): claims at
 * positions 0..3 go to replicas 0 1 0 1 (position mod replicas), 2 rows per device.
 * Case C: refusals (dense plan, a placement for other devices, a bad topology).
 * Case D: case A's plan with dispatch = per_claim (one copy per claim, straight to the device):
 *   t1: 1->0 intra, 1->2 network; t2: 2->3 intra; t3: 3->0 and 3->1 network (2 copies).
 *   intra send (0 B B 0), recv (B 0 0 B); inter send (0 B 0 2B), recv (B B B 0); peers intra
 *   (1 1 1 1), inter (1 1 1 2). Dispatch d0: (1 + 1) + (10 + 10) = 22 us, d1 22, d2 22,
 *   d3: 2 + (20 + 20) = 42 us. Rows, tokens in and nodes as in case A; node bytes 0->0 B,
 *   0->1 B, 1->0 2B, 1->1 B. Step = 42 + 4 + 42 = 88 us.
 * Case E: moe_calib_fit, the weighted least-squares line of `moesim calibrate`: through
 *   exact points of y = 2 + 3x it returns (2, 3) with no residual; through (0,1) (1,1) (2,4)
 *   with weights 1/y^2 = (1, 1, 1/16) the normal equations give S = 33/16, Sx = 9/8,
 *   Sxx = 5/4, Sy = 9/4, Sxy = 3/2, so c1 = (S Sxy - Sx Sy)/(S Sxx - Sx^2) = 3/7 and
 *   c0 = (Sy - c1 Sx)/S = 6/7; relative residuals (6/7 - 1, 9/7 - 1, 12/7/4 - 1) = (-1/7,
 *   2/7, -4/7), rms sqrt(21/49/3) = sqrt(1/7).
 * Case F: case D with the pack term: pack_latency_us = 2, pack_row_ns = 1000 (1 us per row),
 *   pack_gbps = 8 (1 byte per ns: a row of B = 1000 bytes 1 us). Every device holds one token
 *   of 2 claims: packed (2 2 2 2), pack = 2 + 2 x 1 + 2 x 1 = 6 us per phase; dispatch and
 *   combine (28 28 28 48) us; step = 48 + 4 + 48 = 100 us. Refused: a negative pack term.
 *   moe_calib_fit_pack through exact points of y = 1 + 2 rows + 3 bytes at (rows, bytes) =
 *   (1,0) (0,1) (1,1) (2,3), y = (3 4 6 14), returns (1 2 3) with no residual; points with
 *   bytes = 4 rows (one row width) do not determine the plane; 2 points are too few.
 * Case G: case F with the combine's own terms and shared processors: unpack_latency_us = 1,
 *   unpack_row_ns = 500, unpack_gbps = 0 (no byte term): unpack = 1 + 2 x 0.5 = 2 us per
 *   device, combine (24 24 24 44) us, dispatch unchanged (28 28 28 48); step = 48 + 4 + 44 =
 *   96 us. Then cores = 1: each node's 2 devices run their local work on one processor, so
 *   the phase's local work is the node's sum, pack 2 x 6 = 12 us and unpack 2 x 2 = 4 us on
 *   every device: dispatch (34 34 34 54), combine (26 26 26 46), step 54 + 4 + 46 = 104 us;
 *   cores = 2 (one per device) leaves case G's first numbers. Refused: cores = -1.
 * Case I: case G (cores = 2) with warm terms: warm_pack_latency_us = 0.5, warm_pack_row_ns =
 *   250, warm_unpack_latency_us = 0.25, warm_unpack_row_ns = 125 (no byte terms): warm pack
 *   0.5 + 2 x 0.25 = 1 us, warm unpack 0.25 + 2 x 0.125 = 0.5 us. A node's step (H = 500,
 *   flops_per_row = 1e6, 2 slots a device, T / D = 1 token a device): weights 2 x 2 x 1e6 = 4e6
 *   bytes a device, activations (1 + rows) x 2 x 500 x 4 = 4000 (1 + rows) bytes, rows
 *   (4 1 2 1): node 0 8e6 + 28000 = 8028000 bytes, node 1 8e6 + 20000 = 8020000. cache_mb =
 *   7.6522 (8023933 bytes): node 1 warm, node 0 cold: t_pack (6 6 1 1), t_unpack (2 2 0.5
 *   0.5), dispatch (28 28 23 43), combine (24 24 22.5 42.5), step 43 + 4 + 42.5 = 89.5 us.
 *   cache_mb = 8: both nodes warm, dispatch (23 23 23 43), combine (22.5 22.5 22.5 42.5); 7:
 *   both cold, case G's numbers; warm terms given but warm = 0: case G's. Refused: a negative
 *   warm term, a negative cache_mb.
 * Case H: case A's plan with pad_to_capacity and capacity C = 4: device q owns C_q = 1 slot
 *   of each of the 8 experts and sends its whole (E, 1) buffer, zero rows included: 2 rows
 *   to each device (its 2 experts), keeping its own 2. rows (8 8 8 8) = E C / D, balancedness
 *   1, experts 8 us each; tokens in, nodes and packed stay case A's.
 *   Hierarchical: device q sends 2B intra to its node's other device, 4B over the network to
 *   its relay on the other node (same local index), which forwards 2B of them to its
 *   neighbour: intra send = recv = 4B, inter send = recv = 4B on every device, one peer each;
 *   dispatch = (1 + 4) + (10 + 40) = 55 us, combine the same, step = 55 + 8 + 55 = 118 us;
 *   node bytes 8B in each of the 4 cells.
 *   per_claim: 2B intra to the neighbour, 2B straight to each remote device: intra 2B, inter
 *   4B with 2 peers: dispatch = (1 + 2) + (20 + 40) = 63 us, step = 63 + 8 + 63 = 134 us;
 *   node bytes 0->0 4B, 0->1 8B, 1->0 8B, 1->1 4B.
 *   Case B padded with C = 4: device q owns slots 2q, 2q+1; slot g of an expert goes to
 *   replica g mod 2 (device 0 for even g): every device computes 2 rows of each expert
 *   (rows 4 4) and sends one row of each expert to the other, 2 x 16 bytes each way. */
#include "check.h"
#include "cluster.h"
#include "moe.h"
#include "mpi_calib.h"

#include <math.h>

#include <string.h>

static moe_cluster_topo topo_a(void)
{
    moe_cluster_topo t = {.name = "a", .nodes = 2, .devices_per_node = 2, .intra_gbps = 8,
                          .intra_latency_us = 1, .inter_gbps = 0.8, .inter_latency_us = 10,
                          .device_tflops = 1, .dtype_bytes = 2};
    return t;
}

/* Case A's plan: tokens in order, or in reverse order (reversed = 1). */
static void plan_case_a(moe_plan *plan, int reversed)
{
    static const int claims[4][2] = {{0, 1}, {0, 4}, {6, 4}, {1, 2}};
    moe_plan_reset(plan, 4, 8, 8);
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 2; j++) {
            const int tok = reversed ? 3 - i : i;
            moe_plan_push(plan, tok, claims[tok][j], 0, 1.0, 0.5);
        }
}

/* The four byte arrays of cs (4 devices): intra-node sent and received, network sent and
 * received, exactly. */
static void check_bytes(const char *what, const moe_cluster_sim *cs, const double *is,
                        const double *ir, const double *es, const double *er)
{
    char m[96];
    const double *got[] = {cs->intra_send, cs->intra_recv, cs->inter_send, cs->inter_recv};
    const double *want[] = {is, ir, es, er};
    const char *name[] = {"intra_send", "intra_recv", "inter_send", "inter_recv"};
    for (int i = 0; i < 4; i++) {
        snprintf(m, sizeof m, "%s%s", what, name[i]);
        check_close_arrays(m, got[i], want[i], 4, 0, 0);
    }
}

/* Case D on case A's simulator, placement and plan. */
static void check_case_d(moe_cluster_sim *cs, const moe_placement *pl, moe_plan *plan)
{
    moe_cluster_topo t = topo_a();
    t.per_claim = 1;
    plan_case_a(plan, 0);
    CHECK_INT(moe_cluster_sim_run(cs, &t, pl, plan, 500, 1e6, 1.0), 0);
    const double B = 1000;
    long rows[] = {4, 1, 2, 1}, tin[] = {3, 1, 2, 1};
    double is[] = {0, B, B, 0}, ir[] = {B, 0, 0, B}, es[] = {0, B, 0, 2 * B},
           er[] = {B, B, B, 0};
    double td[] = {22e-6, 22e-6, 22e-6, 42e-6}, nb[] = {B, B, 2 * B, B};
    for (int d = 0; d < 4; d++) {
        CHECK_INT(cs->rows[d], rows[d]);
        CHECK_INT(cs->tokens_in[d], tin[d]);
    }
    check_bytes("per_claim ", cs, is, ir, es, er);
    check_close_arrays("per_claim t_dispatch", cs->t_dispatch, td, 4, 1e-18, 1e-12);
    check_close_arrays("per_claim t_combine", cs->t_combine, td, 4, 1e-18, 1e-12);
    check_close_arrays("per_claim node_bytes", cs->node_bytes, nb, 4, 0, 0);
    CHECK_INT(cs->nodes_hist[1], 3);
    CHECK_INT(cs->nodes_hist[2], 1);
    CHECK_NEAR(cs->t_step, 88e-6, 1e-18);
    /* case F */
    t.pack_latency_us = 2;
    t.pack_row_ns = 1000;
    t.pack_gbps = 8;
    CHECK_INT(moe_cluster_sim_run(cs, &t, pl, plan, 500, 1e6, 1.0), 0);
    double tf[] = {28e-6, 28e-6, 28e-6, 48e-6}, tp[] = {6e-6, 6e-6, 6e-6, 6e-6};
    for (int d = 0; d < 4; d++)
        CHECK_INT(cs->packed[d], 2);
    check_close_arrays("pack t_pack", cs->t_pack, tp, 4, 1e-18, 1e-12);
    check_close_arrays("pack t_dispatch", cs->t_dispatch, tf, 4, 1e-18, 1e-12);
    check_close_arrays("pack t_combine", cs->t_combine, tf, 4, 1e-18, 1e-12);
    CHECK_NEAR(cs->t_step, 100e-6, 1e-18);
    /* case G */
    t.unpack = 1;
    t.unpack_latency_us = 1;
    t.unpack_row_ns = 500;
    CHECK_INT(moe_cluster_sim_run(cs, &t, pl, plan, 500, 1e6, 1.0), 0);
    double gc[] = {24e-6, 24e-6, 24e-6, 44e-6}, gu[] = {2e-6, 2e-6, 2e-6, 2e-6};
    check_close_arrays("unpack t_unpack", cs->t_unpack, gu, 4, 1e-18, 1e-12);
    check_close_arrays("unpack t_dispatch", cs->t_dispatch, tf, 4, 1e-18, 1e-12);
    check_close_arrays("unpack t_combine", cs->t_combine, gc, 4, 1e-18, 1e-12);
    CHECK_NEAR(cs->t_step, 96e-6, 1e-18);
    t.cores = 1;
    CHECK_INT(moe_cluster_sim_run(cs, &t, pl, plan, 500, 1e6, 1.0), 0);
    double sd[] = {34e-6, 34e-6, 34e-6, 54e-6}, sc[] = {26e-6, 26e-6, 26e-6, 46e-6};
    check_close_arrays("cores = 1 t_dispatch", cs->t_dispatch, sd, 4, 1e-18, 1e-12);
    check_close_arrays("cores = 1 t_combine", cs->t_combine, sc, 4, 1e-18, 1e-12);
    CHECK_NEAR(cs->t_step, 104e-6, 1e-18);
    t.cores = 2;
    CHECK_INT(moe_cluster_sim_run(cs, &t, pl, plan, 500, 1e6, 1.0), 0);
    check_close_arrays("cores = 2 t_dispatch", cs->t_dispatch, tf, 4, 1e-18, 1e-12);
    check_close_arrays("cores = 2 t_combine", cs->t_combine, gc, 4, 1e-18, 1e-12);
    /* case I */
    t.warm_pack_latency_us = 0.5;
    t.warm_pack_row_ns = 250;
    t.warm_unpack_latency_us = 0.25;
    t.warm_unpack_row_ns = 125;
    const double cache[4] = {7.6522, 8, 7, 8};
    const double ip[4][4] = {{6e-6, 6e-6, 1e-6, 1e-6}, {1e-6, 1e-6, 1e-6, 1e-6},
                             {6e-6, 6e-6, 6e-6, 6e-6}, {6e-6, 6e-6, 6e-6, 6e-6}};
    const double iu[4][4] = {{2e-6, 2e-6, 0.5e-6, 0.5e-6}, {0.5e-6, 0.5e-6, 0.5e-6, 0.5e-6},
                             {2e-6, 2e-6, 2e-6, 2e-6}, {2e-6, 2e-6, 2e-6, 2e-6}};
    const double id[4][4] = {{28e-6, 28e-6, 23e-6, 43e-6}, {23e-6, 23e-6, 23e-6, 43e-6},
                             {28e-6, 28e-6, 28e-6, 48e-6}, {28e-6, 28e-6, 28e-6, 48e-6}};
    const double ic[4][4] = {{24e-6, 24e-6, 22.5e-6, 42.5e-6},
                             {22.5e-6, 22.5e-6, 22.5e-6, 42.5e-6},
                             {24e-6, 24e-6, 24e-6, 44e-6}, {24e-6, 24e-6, 24e-6, 44e-6}};
    const double istep[4] = {89.5e-6, 89.5e-6, 96e-6, 96e-6};
    for (int k = 0; k < 4; k++) {
        char m[64];
        t.cache_mb = cache[k];
        t.warm = k < 3; /* the last: terms and cache given, no warm key */
        CHECK_INT(moe_cluster_sim_run(cs, &t, pl, plan, 500, 1e6, 1.0), 0);
        snprintf(m, sizeof m, "warm %d t_pack", k);
        check_close_arrays(m, cs->t_pack, ip[k], 4, 1e-18, 1e-12);
        snprintf(m, sizeof m, "warm %d t_unpack", k);
        check_close_arrays(m, cs->t_unpack, iu[k], 4, 1e-18, 1e-12);
        snprintf(m, sizeof m, "warm %d t_dispatch", k);
        check_close_arrays(m, cs->t_dispatch, id[k], 4, 1e-18, 1e-12);
        snprintf(m, sizeof m, "warm %d t_combine", k);
        check_close_arrays(m, cs->t_combine, ic[k], 4, 1e-18, 1e-12);
        CHECK_NEAR(cs->t_step, istep[k], 1e-18);
    }
    t.warm = 0;
    t.warm_unpack_row_ns = -1;
    moe_clear_error();
    CHECK(moe_cluster_topo_check(&t, "cluster.x") == MOE_EINVAL && strstr(moe_errmsg(), "warm_"),
          "negative warm term: %s", moe_errmsg());
    t.warm_unpack_row_ns = 125;
    t.cache_mb = -1;
    moe_clear_error();
    CHECK(moe_cluster_topo_check(&t, "cluster.x") == MOE_EINVAL &&
              strstr(moe_errmsg(), "cache_mb"),
          "negative cache_mb: %s", moe_errmsg());
    t.cache_mb = 0;
    t.cores = -1;
    moe_clear_error();
    CHECK(moe_cluster_topo_check(&t, "cluster.x") == MOE_EINVAL && strstr(moe_errmsg(), "cores"),
          "negative cores: %s", moe_errmsg());
    t.cores = 0;
    t.pack_row_ns = -1;
    moe_clear_error();
    CHECK(moe_cluster_topo_check(&t, "cluster.x") == MOE_EINVAL &&
              strstr(moe_errmsg(), "pack_row_ns"),
          "negative pack term: %s", moe_errmsg());
}

/* Case H on case A's simulator, placement and plan (padded). */
static void check_case_h(moe_cluster_sim *cs, const moe_placement *pl, moe_plan *plan)
{
    moe_cluster_topo t = topo_a();
    plan_case_a(plan, 0);
    plan->capacity = 4;
    moe_cluster_sim_set_pad(cs, 1);
    CHECK_INT(moe_cluster_sim_run(cs, &t, pl, plan, 500, 1e6, 1.0), 0);
    const double B = 1000;
    long tin[] = {3, 1, 2, 1};
    double b4[] = {4 * B, 4 * B, 4 * B, 4 * B}, td[] = {55e-6, 55e-6, 55e-6, 55e-6},
           tx[] = {8e-6, 8e-6, 8e-6, 8e-6}, nb[] = {8 * B, 8 * B, 8 * B, 8 * B};
    for (int d = 0; d < 4; d++) {
        CHECK_INT(cs->rows[d], 8);
        CHECK_INT(cs->tokens_in[d], tin[d]);
        CHECK_INT(cs->packed[d], 2);
    }
    check_bytes("padded ", cs, b4, b4, b4, b4);
    check_close_arrays("padded t_dispatch", cs->t_dispatch, td, 4, 1e-18, 1e-12);
    check_close_arrays("padded t_combine", cs->t_combine, td, 4, 1e-18, 1e-12);
    check_close_arrays("padded t_experts", cs->t_experts, tx, 4, 1e-18, 1e-12);
    check_close_arrays("padded node_bytes", cs->node_bytes, nb, 4, 0, 0);
    CHECK_INT(cs->nodes_hist[1], 3);
    CHECK_INT(cs->nodes_hist[2], 1);
    CHECK_NEAR(cs->balancedness, 1.0, 0);
    CHECK_NEAR(cs->t_step, 118e-6, 1e-18);
    t.per_claim = 1;
    CHECK_INT(moe_cluster_sim_run(cs, &t, pl, plan, 500, 1e6, 1.0), 0);
    double b2[] = {2 * B, 2 * B, 2 * B, 2 * B}, tc[] = {63e-6, 63e-6, 63e-6, 63e-6},
           nc[] = {4 * B, 8 * B, 8 * B, 4 * B};
    for (int d = 0; d < 4; d++)
        CHECK_INT(cs->rows[d], 8);
    check_bytes("padded per_claim ", cs, b2, b2, b4, b4);
    check_close_arrays("padded per_claim t_dispatch", cs->t_dispatch, tc, 4, 1e-18, 1e-12);
    check_close_arrays("padded per_claim node_bytes", cs->node_bytes, nc, 4, 0, 0);
    CHECK_NEAR(cs->t_step, 134e-6, 1e-18);
    moe_cluster_sim_set_pad(cs, 0);
}

static void test_case_a(void)
{
    moe_cluster_topo t = topo_a();
    moe_plan *plan = moe_plan_alloc(4, 8, 16);
    moe_placement *pl = moe_placement_alloc(MOE_PLACE_CONTIGUOUS, NULL, 8, 0, 1, 2, 4);
    moe_cluster_sim *cs = moe_cluster_sim_alloc(&t);
    CHECK(plan && pl && cs, "alloc failed: %s", moe_errmsg());
    if (!plan || !pl || !cs)
        return;
    plan_case_a(plan, 0);
    CHECK_INT(moe_cluster_sim_run(cs, &t, pl, plan, 500, 1e6, 1.0), 0);
    const double B = 1000;
    long rows[] = {4, 1, 2, 1}, tin[] = {3, 1, 2, 1};
    double is[] = {0, 2 * B, B, B}, ir[] = {2 * B, 0, B, B}, es[] = {0, B, 0, B},
           er[] = {0, B, 0, B};
    double td[] = {3e-6, 23e-6, 2e-6, 22e-6}, tx[] = {4e-6, 1e-6, 2e-6, 1e-6};
    double nb[] = {2 * B, B, B, 2 * B};
    for (int d = 0; d < 4; d++) {
        CHECK_INT(cs->rows[d], rows[d]);
        CHECK_INT(cs->tokens_in[d], tin[d]);
    }
    check_bytes("", cs, is, ir, es, er);
    check_close_arrays("t_dispatch", cs->t_dispatch, td, 4, 1e-18, 1e-12);
    check_close_arrays("t_combine", cs->t_combine, td, 4, 1e-18, 1e-12);
    check_close_arrays("t_experts", cs->t_experts, tx, 4, 1e-18, 1e-12);
    check_close_arrays("node_bytes", cs->node_bytes, nb, 4, 0, 0);
    CHECK_INT(cs->nodes_hist[0], 0);
    CHECK_INT(cs->nodes_hist[1], 3);
    CHECK_INT(cs->nodes_hist[2], 1);
    CHECK_NEAR(cs->nodes_per_token, 1.25, 1e-15);
    CHECK_NEAR(cs->balancedness, 0.5, 1e-15);
    CHECK_NEAR(cs->t_step, 50e-6, 1e-18);
    /* the same plan with its claims in another order gives the same devices and bytes */
    plan_case_a(plan, 1);
    CHECK_INT(moe_cluster_sim_run(cs, &t, pl, plan, 500, 1e6, 1.0), 0);
    check_close_arrays("t_dispatch (reordered)", cs->t_dispatch, td, 4, 1e-18, 1e-12);
    CHECK_NEAR(cs->t_step, 50e-6, 1e-18);
    check_case_d(cs, pl, plan);
    check_case_h(cs, pl, plan);
    moe_cluster_sim_free(cs);
    moe_placement_free(pl);
    moe_plan_free(plan);
}

static void test_case_b(void)
{
    moe_cluster_topo t = topo_a();
    t.nodes = 1;
    t.devices_per_node = 2;
    /* slot p on device p / 2: expert 0 in slots 0 (device 0) and 2 (device 1), expert 1 in
     * slots 1 and 3 */
    int p2l[] = {0, 1, 0, 1}, rank[] = {0, 0, 1, 1}, cnt[] = {2, 2}, l2p[] = {0, 2, 1, 3};
    moe_placement pl = {.E = 2, .P = 4, .D = 2, .max_cnt = 2, .phy2log = p2l, .phy_rank = rank,
                        .log_cnt = cnt, .log2phy = l2p};
    moe_plan *plan = moe_plan_alloc(4, 2, 8);
    moe_cluster_sim *cs = moe_cluster_sim_alloc(&t);
    CHECK(plan && cs, "alloc failed");
    if (!plan || !cs)
        return;
    moe_plan_reset(plan, 4, 2, 2);
    for (int tok = 0; tok < 4; tok++)
        moe_plan_push(plan, tok, 0, 0, 1.0, 1.0);
    CHECK_INT(moe_cluster_sim_run(cs, &t, &pl, plan, 8, 1.0, 1.0), 0);
    CHECK_INT(cs->rows[0], 2);
    CHECK_INT(cs->rows[1], 2);
    CHECK_NEAR(cs->balancedness, 1.0, 0);
    /* tokens 0, 1 start on device 0 and tokens 2, 3 on device 1: token 1 goes to device 1
     * and token 2 to device 0, one intra copy each way, no network bytes */
    CHECK_NEAR(cs->intra_send[0], 16.0, 0);
    CHECK_NEAR(cs->intra_send[1], 16.0, 0);
    CHECK_NEAR(cs->inter_send[0] + cs->inter_send[1], 0.0, 0);
    /* case H: padded to C = 4 */
    plan->capacity = 4;
    moe_cluster_sim_set_pad(cs, 1);
    CHECK_INT(moe_cluster_sim_run(cs, &t, &pl, plan, 8, 1.0, 1.0), 0);
    CHECK_INT(cs->rows[0], 4);
    CHECK_INT(cs->rows[1], 4);
    CHECK_NEAR(cs->intra_send[0], 32.0, 0);
    CHECK_NEAR(cs->intra_send[1], 32.0, 0);
    CHECK_NEAR(cs->intra_recv[0], 32.0, 0);
    CHECK_NEAR(cs->inter_send[0] + cs->inter_send[1], 0.0, 0);
    moe_cluster_sim_free(cs);
    moe_plan_free(plan);
}

static void test_refused(void)
{
    moe_cluster_topo t = topo_a();
    moe_plan *plan = moe_plan_alloc(4, 8, 16);
    moe_placement *pl = moe_placement_alloc(MOE_PLACE_CONTIGUOUS, NULL, 8, 0, 1, 1, 8);
    moe_cluster_sim *cs = moe_cluster_sim_alloc(&t);
    moe_plan_reset(plan, 4, 8, 8);
    moe_clear_error();
    CHECK(moe_cluster_sim_run(cs, &t, pl, plan, 8, 1, 1) == MOE_EINVAL &&
              strstr(moe_errmsg(), "on 8 devices"),
          "placement for another cluster: %s", moe_errmsg());
    moe_placement_free(pl);
    pl = moe_placement_alloc(MOE_PLACE_CONTIGUOUS, NULL, 8, 0, 1, 2, 4);
    plan->dense = 1;
    moe_clear_error();
    CHECK(moe_cluster_sim_run(cs, &t, pl, plan, 8, 1, 1) == MOE_EINVAL &&
              strstr(moe_errmsg(), "dense plan"),
          "dense plan: %s", moe_errmsg());
    moe_clear_error();
    t.inter_gbps = 0;
    CHECK(moe_cluster_topo_check(&t, "cluster.x") == MOE_EINVAL &&
              strstr(moe_errmsg(), "(cluster.x)"),
          "zero bandwidth: %s", moe_errmsg());
    moe_clear_error();
    t = topo_a();
    t.device_tflops = 0;
    CHECK(moe_cluster_topo_check(&t, "cluster.x") == MOE_EINVAL, "zero rate accepted");
    t.measured = 1;
    moe_clear_error();
    CHECK_INT(moe_cluster_topo_check(&t, "cluster.x"), 0);
    moe_cluster_sim_free(cs);
    moe_placement_free(pl);
    moe_plan_free(plan);
}

static void test_case_e(void)
{
    double x[] = {0, 1, 2, 5}, y[] = {2, 5, 8, 17}, c0, c1, rms;
    CHECK_INT(moe_calib_fit(x, y, 4, &c0, &c1, &rms), 0);
    CHECK_NEAR(c0, 2.0, 1e-12);
    CHECK_NEAR(c1, 3.0, 1e-12);
    CHECK_NEAR(rms, 0.0, 1e-12);
    double y2[] = {1, 1, 4};
    CHECK_INT(moe_calib_fit(x, y2, 3, &c0, &c1, &rms), 0);
    CHECK_NEAR(c0, 6.0 / 7.0, 1e-12);
    CHECK_NEAR(c1, 3.0 / 7.0, 1e-12);
    CHECK_NEAR(rms, sqrt(1.0 / 7.0), 1e-12);
    double same[] = {4, 4, 4}, neg[] = {1, -1, 2};
    CHECK_INT(moe_calib_fit(same, y2, 3, &c0, &c1, &rms), MOE_EINVAL);
    CHECK_INT(moe_calib_fit(x, neg, 3, &c0, &c1, &rms), MOE_EINVAL);
    CHECK_INT(moe_calib_fit(x, y2, 1, &c0, &c1, &rms), MOE_EINVAL);
    /* case F's plane */
    double r[] = {1, 0, 1, 2}, b[] = {0, 1, 1, 3}, yp[] = {3, 4, 6, 14}, c[3];
    CHECK_INT(moe_calib_fit_pack(r, b, yp, 4, c, &rms), 0);
    CHECK_NEAR(c[0], 1.0, 1e-9);
    CHECK_NEAR(c[1], 2.0, 1e-9);
    CHECK_NEAR(c[2], 3.0, 1e-9);
    CHECK_NEAR(rms, 0.0, 1e-9);
    double b4[] = {4, 0, 4, 8};
    moe_clear_error();
    CHECK_INT(moe_calib_fit_pack(r, b4, yp, 4, c, &rms), MOE_EINVAL);
    CHECK_INT(moe_calib_fit_pack(r, b, yp, 2, c, &rms), MOE_EINVAL);
}

int main(void)
{
    test_case_a();
    test_case_b();
    test_refused();
    test_case_e();
    return check_report("test_cluster");
}
