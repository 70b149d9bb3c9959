#!/bin/sh
# t_cluster.sh: the cluster model through `moesim run` (tests/run.sh runs it with
# MOESIM=<build>/moesim): [cluster.NAME] sections and the placement axes expand into one point
# per configuration, the tables cluster_points, devices, nodes_per_token and node_traffic hold
# rows that satisfy the model's identities, and bad cluster specs fail with one located error
# and no database. Prints "t_cluster: N passed, N failed" last.
NAME=t_cluster
. tests/lib.sh
make_tmp

# E = 16, top-2 dropless, 64 tokens, 3 batches (1 warm-up + 2 measured), 2 nodes x 4 devices;
# placements contiguous, round_robin, greedy, eplb with R = 0 and 8: 5 points.
spec=$tmp/c.ini
cat > "$spec" <<'INI'
[experiment]
name = t_cluster
routers = topk
distributions = g
shapes = s
tokens = 64
batches = 3
error_tokens = 16
clusters = c2x4
placement = contiguous round_robin greedy eplb
redundant_experts = 0 8
[router.topk]
type = topk
dropless = 1
[distribution.g]
source = gaussian
[shape.s]
d = 16
f = 32
E = 16
k = 2
[cluster.c2x4]
nodes = 2
devices_per_node = 4
intra_gbps = 1600
intra_latency_us = 1
inter_gbps = 200
inter_latency_us = 5
device_tflops = 100
INI
db=$tmp/c.db
"$MOESIM" run "$spec" --db "$db" --no-plots >"$tmp/out" 2>"$tmp/err"
check "cluster sweep exits 0 ($(cat "$tmp/err"))" test $? = 0
same "5 points (4 placements, eplb twice)" "$(q "$db" 'SELECT count(*) FROM points')" 5
same "5 cluster rows" "$(q "$db" 'SELECT count(*) FROM cluster_points')" 5
same "8 devices per point" "$(q "$db" 'SELECT count(*) FROM devices')" 40
same "2 measured batches" "$(q "$db" 'SELECT DISTINCT measured_batches FROM cluster_points')" 2
same "node of a device = device / 4" \
    "$(q "$db" 'SELECT count(*) FROM devices WHERE node != device / 4')" 0
# dropless top-2: every batch has 64 x 2 = 128 expert rows, whatever the placement
same "rows per batch = T k" \
    "$(q "$db" 'SELECT DISTINCT CAST(round(sum(rows)) AS INTEGER) FROM devices GROUP BY point')" 128
# every token is sent to 1 or 2 nodes (k = 2): the histogram sums to T, bins 0..2
same "nodes histogram sums to T" \
    "$(q "$db" 'SELECT DISTINCT CAST(round(sum(tokens)) AS INTEGER) FROM nodes_per_token GROUP BY point')" 64
same "nodes histogram bins" "$(q "$db" 'SELECT DISTINCT count(*) FROM nodes_per_token GROUP BY point')" 3
same "no token to 0 nodes" "$(q "$db" 'SELECT count(*) FROM nodes_per_token WHERE nodes = 0 AND tokens > 0')" 0
same "mean nodes per token from the histogram" \
    "$(q "$db" 'SELECT count(*) FROM cluster_points c WHERE abs(c.nodes_per_token - (SELECT sum(nodes * tokens) / 64.0 FROM nodes_per_token h WHERE h.point = c.point)) > 1e-9')" 0
# each network copy is sent by one device and received by another: devices count both,
# node_traffic counts it once off the diagonal
same "inter bytes: devices = 2 x node_traffic" \
    "$(q "$db" 'SELECT count(*) FROM cluster_points c WHERE abs((SELECT sum(bytes_inter) FROM devices d WHERE d.point = c.point) - 2 * (SELECT sum(bytes) FROM node_traffic n WHERE n.point = c.point AND src_node != dst_node)) > 1e-6')" 0
same "intra bytes: devices = 2 x node_traffic diagonal" \
    "$(q "$db" 'SELECT count(*) FROM cluster_points c WHERE abs((SELECT sum(bytes_intra) FROM devices d WHERE d.point = c.point) - 2 * (SELECT sum(bytes) FROM node_traffic n WHERE n.point = c.point AND src_node = dst_node)) > 1e-6')" 0
same "bytes per token copy = d x 2 bytes (multiples of 32)" \
    "$(q "$db" 'SELECT count(*) FROM node_traffic WHERE CAST(bytes * 2 AS INTEGER) % 32 != 0')" 0
same "step = dispatch + experts + combine (slowest device each)" \
    "$(q "$db" 'SELECT count(*) FROM cluster_points WHERE abs(t_step_s - t_dispatch_s - t_experts_s - t_combine_s) > 1e-12 * t_step_s')" 0
same "combine = dispatch (same bytes back)" \
    "$(q "$db" 'SELECT count(*) FROM devices WHERE t_combine_s != t_dispatch_s')" 0
# EPLB's global policy (1 group over 2 nodes) without replicas is the greedy packing
same "eplb R=0 places like greedy" \
    "$(q "$db" "SELECT count(*) FROM devices g JOIN cluster_points cg ON cg.point = g.point AND cg.placement = 'greedy' JOIN cluster_points ce ON ce.placement = 'eplb' AND ce.redundant_experts = 0 JOIN devices e ON e.point = ce.point AND e.device = g.device WHERE e.rows != g.rows")" 0
same "config keys name the configuration" \
    "$(q "$db" "SELECT count(*) FROM points WHERE config_key LIKE '%placement=eplb R=8 %'")" 1
same "balancedness in (0, 1]" \
    "$(q "$db" 'SELECT count(*) FROM cluster_points WHERE balancedness <= 0 OR balancedness > 1')" 0

# pad_to_capacity: the model sends and computes every expert's C padded rows (sim/cluster.h).
# Hand-worked: top-2 with capacity, cf 1.5: C = ceil(2 * 64 * 1.5 / 16) = 12; contiguous, experts
# 2d and 2d+1 on device d: 2 x 12 = 24 rows on every device in every batch. Device q owns
# C_q = floor((q+1) 12 / 8) - floor(q 12 / 8) slots (1 2 1 2 1 2 1 2, 12 in all) and sends 2 C_q
# rows to each other device: 4 remote devices = 8 C_q rows over the network (96 rows of
# d x 2 = 32 bytes, 3072 bytes; devices count them sent and received: 6144), 3 devices of its
# node straight (6 C_q) plus its relay's forwarding to 3 more (6 C_q): 144 rows, 9216 counted.
"$MOESIM" run "$spec" --db "$tmp/p.db" --no-plots --set experiment.placement=contiguous \
    --set experiment.redundant_experts=0 --set experiment.capacity_factors=1.5 \
    --set router.topk.dropless=0 --set router.topk.pad_to_capacity=true \
    >"$tmp/out" 2>"$tmp/err"
check "padded cluster sweep exits 0 ($(cat "$tmp/err"))" test $? = 0
same "padded: C = 12" "$(q "$tmp/p.db" 'SELECT capacity FROM points')" 12.0
same "padded: 24 rows on every device" \
    "$(q "$tmp/p.db" 'SELECT group_concat(rows, " ") FROM devices ORDER BY device')" \
    "24.0 24.0 24.0 24.0 24.0 24.0 24.0 24.0"
same "padded: bytes inter, intra" \
    "$(q "$tmp/p.db" 'SELECT sum(bytes_inter) || " " || sum(bytes_intra) FROM devices')" \
    "6144.0 9216.0"
same "padded: balancedness 1" "$(q "$tmp/p.db" 'SELECT balancedness FROM cluster_points')" 1.0

# a spec without clusters writes no cluster rows
tiny_spec "$tmp/t.ini" t_nocluster "topk" g c
"$MOESIM" run "$tmp/t.ini" --db "$tmp/n.db" --no-plots >/dev/null 2>&1
same "no cluster rows without [cluster.*]" "$(q "$tmp/n.db" 'SELECT count(*) FROM cluster_points')" 0

# bad cluster specs: one located error line, non-zero exit, no database
bad_spec() { # label, expected text, --set arguments...
    label=$1 want=$2
    shift 2
    rm -f "$tmp/bad.db"
    "$MOESIM" run "$spec" --db "$tmp/bad.db" --no-plots "$@" >/dev/null 2>"$tmp/err"
    check "$label: exit non-zero" test $? != 0
    contains "$label: message" "$tmp/err" "$want"
    check "$label: no database" test ! -e "$tmp/bad.db"
}
bad_spec "unknown placement" "unknown placement 'random'" --set experiment.placement=random
bad_spec "replicas not dividing" "experts plus redundant experts (20) not a multiple of the devices (8)" \
    --set experiment.redundant_experts=4
bad_spec "warm-up too long" "warmup_batches = 3 leaves no measured batch of 3" \
    --set experiment.warmup_batches=3
bad_spec "no bandwidth" "bandwidths must be in (0, 1e9]" --set cluster.c2x4.inter_gbps=0
bad_spec "unknown cluster key" "unknown key" --set cluster.c2x4.nvlink=1
bad_spec "unlisted cluster" "no section [cluster.big]" --set experiment.clusters=big
bad_spec "devices over nodes" "not a multiple of the devices (24)" --set cluster.c2x4.devices_per_node=12
finish
