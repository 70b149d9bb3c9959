#!/bin/sh
# t_plot_cluster.sh: the cluster charts of `moesim plot` (cluster_loads, cluster_traffic,
# cluster_step; plots/cluster_*.gp) on a sweep whose cluster model is worked out by hand, and
# their absence from a database without cluster rows; and the experts-per-token histogram of
# the variable-k routers (experts_per_token_dynamic) on hand-worked logits (tests/run.sh runs it
# with MOESIM=<build>/moesim). Prints "t_plot_cluster: N passed, N failed" last.
NAME=t_plot_cluster
. tests/lib.sh
make_tmp

if ! command -v gnuplot >/dev/null 2>&1; then
    bad "gnuplot is not installed (make deps installs gnuplot-nox)"
    finish
fi

# npy_header DESCR SHAPE: the 128-byte header of a NumPy .npy file (format 1.0: a 10-byte
# preamble, then the dictionary space-padded to 118 bytes ending in a newline)
npy_header() {
    printf '\223NUMPY\001\000\166\000'
    printf '%-117s\n' "$(printf "{'descr': '%s', 'fortran_order': False, 'shape': %s, }" "$1" "$2")"
}
# write_ids FILE ID...: a .npy file of int64 token ids, little-endian, each < 256
write_ids() {
    f=$1; shift
    { npy_header '<i8' "($#,)"
      for v in "$@"; do printf "\\$(printf %03o "$v")\\000\\000\\000\\000\\000\\000\\000"; done
    } >"$f"
}

# The hand-worked sweep. 8 tokens with ids 0 0 0 0 1 1 2 3 (every batch: the 8 rows cycle),
# hash routing `id mod 4` (k = 1, dropless): expert loads e0..e3 = 4 2 1 1. Two nodes of one
# device each (D = 2, E/D = 2 experts per device); tokens start data-parallel, tokens 0-3 on
# device 0 (node 0), 4-7 on device 1 (node 1). B = d x dtype_bytes = 16 x 2 = 32 bytes a token.
#   contiguous:  device 0 {e0 e1}, device 1 {e2 e3}: rows 6 and 2, balancedness (6+2)/2/6 = 2/3;
#                tokens 4, 5 (e1) cross node 1 -> node 0: 2 x 32 = 64 bytes, nothing else
#                leaves its device (one device per node: no intra-node forwarding).
#   round_robin: device 0 {e0 e2}, device 1 {e1 e3}: rows 5 and 3, balancedness 4/5;
#                token 6 (e2) crosses node 1 -> node 0: 32 bytes.
#   greedy:      by warm-up load 4 2 1 1, heaviest first to the lightest device with room
#                (2 experts each): e0 -> 0, e1 -> 1, e2 -> 1 (3 < 4), e3 -> 0 (device 1 full):
#                device 0 {e0 e3}, device 1 {e1 e2}: rows 5 and 3, balancedness 4/5; token 7 (e3)
#                crosses node 1 -> node 0: 32 bytes.
# Time (docs/cluster.md): one inter-node message, alpha 5 us, beta 200 Gbit/s = 25e9 B/s, so
# dispatch = combine = 5e-6 + bytes / 25e9 (64 bytes: 5.00256e-06; 32: 5.00128e-06); experts =
# rows x 2 d f x 2 / 100e12 of the busiest device (6 rows: 1.2288e-10; 5 rows: 1.024e-10);
# step = their sum (1.000524288e-05 and 1.00026624e-05).
write_ids "$tmp/ids.npy" 0 0 0 0 1 1 2 3
cat >"$tmp/h.ini" <<'INI'
[experiment]
name = t_plot_cluster
routers = hash
distributions = ids
shapes = s
tokens = 8
batches = 3
error_tokens = 8
clusters = two
placement = contiguous round_robin greedy
[router.hash]
type = hash
dropless = 1
[distribution.ids]
source = npy
ids = ids.npy
[shape.s]
d = 16
f = 32
E = 4
k = 1
[cluster.two]
nodes = 2
devices_per_node = 1
intra_gbps = 1600
intra_latency_us = 1
inter_gbps = 200
inter_latency_us = 5
device_tflops = 100
INI
db=$tmp/h.db
(cd "$tmp" && "$MOESIM" run h.ini --db "$db" --no-plots >"$tmp/out" 2>"$tmp/err")
check "cluster sweep exits 0 ($(cat "$tmp/err"))" test $? = 0
out=$tmp/charts
"$MOESIM" plot "$db" --out "$out" >"$tmp/pout" 2>"$tmp/perr"
check "plot exits 0 ($(cat "$tmp/perr"))" test $? = 0
for c in cluster_loads cluster_traffic cluster_step; do
    chart_files "$out" "$c"
    check "$c.pdf written" test -s "$out/$c.pdf"
done

# rows of a data file without comments and blank lines, numbers printed with %.12g
rows() {
    grep -v '^#' "$out/$1.dat" | grep -v '^$' | tr -d '"' |
        awk '{ s = $1; for (i = 2; i <= NF; i++)
            s = s " " ($i ~ /^[-0-9.e+]+$/ && $i !~ /^[0-9]+$/ ? sprintf("%.12g", $i) : $i);
            print s }' | cut -d" " -f"$2"
}
# cluster_loads: cluster placement router device node tokens_in rows balancedness points
same "device loads (hand-worked)" "$(rows cluster_loads 2-9 | tr '\n' ';')" \
"contiguous hash 0 0 6 6 0.666666666667 1;contiguous hash 1 1 2 2 0.666666666667 1;\
round_robin hash 0 0 5 5 0.8 1;round_robin hash 1 1 3 3 0.8 1;\
greedy hash 0 0 5 5 0.8 1;greedy hash 1 1 3 3 0.8 1;"
# cluster_traffic: cluster placement router src_node dst_node bytes points
same "node-to-node bytes (hand-worked)" "$(rows cluster_traffic 2,4-6 | tr '\n' ';')" \
"contiguous 0 0 0;contiguous 0 1 0;contiguous 1 0 64;contiguous 1 1 0;\
round_robin 0 0 0;round_robin 0 1 0;round_robin 1 0 32;round_robin 1 1 0;\
greedy 0 0 0;greedy 0 1 0;greedy 1 0 32;greedy 1 1 0;"
# cluster_step: cluster placement router x t_dispatch_s t_experts_s t_combine_s t_step_s points
same "step time breakdown (hand-worked)" "$(rows cluster_step 2,4-9 | tr '\n' ';')" \
"contiguous 1 5.00256e-06 1.2288e-10 5.00256e-06 1.000524288e-05 1;\
round_robin 2 5.00128e-06 1.024e-10 5.00128e-06 1.00026624e-05 1;\
greedy 3 5.00128e-06 1.024e-10 5.00128e-06 1.00026624e-05 1;"
contains "the loads chart titles give balancedness" "$out/cluster_loads.svg" "contiguous: balancedness 0.667"
contains "the traffic chart titles give the inter-node total" "$out/cluster_traffic.svg" \
    "contiguous: 0.0625 KiB inter-node"

# The variable-k histogram (experts_per_token_dynamic): 4 tokens with logits over E = 4 experts,
# rows (2 0 0 0), (1 0 0 0), (0 0 0 0), (0 0 0 0), routed dropless by topp (top_p = 0.6) and relu.
# topp, softmax p: e^2/(e^2+3) = 0.711 >= 0.6: 1 expert; e/(e+3) = 0.475, + 1/(e+3) = 0.650: 2;
# 0.25, 0.50, 0.75: 3. So 1, 2, 3 experts for 1, 1, 2 tokens: fractions 0.25 0.25 0.5.
# relu, the positive logits: 1, 1, 0, 0 experts: fractions 0.5 (0 experts) and 0.5 (1 expert).
# write_f64 FILE ROWS COLS V...: a .npy (ROWS,COLS) float64 file of values 0, 1, 2 (their
# little-endian IEEE 754 bytes: 0 is all zero, 1.0 = 3ff0..., 2.0 = 4000...)
write_f64() {
    f=$1; r=$2; c=$3; shift 3
    { npy_header '<f8' "($r, $c)"
      for v in "$@"; do
          printf '\000\000\000\000\000\000'
          case $v in 0) printf '\000\000' ;; 1) printf '\360\077' ;; 2) printf '\000\100' ;; esac
      done
    } >"$f"
}
write_f64 "$tmp/l.npy" 4 4  2 0 0 0  1 0 0 0  0 0 0 0  0 0 0 0
cat >"$tmp/v.ini" <<'INI'
[experiment]
name = t_plot_dynamic
routers = topp relu
distributions = l
shapes = s
tokens = 4
batches = 1
error_tokens = 4
[router.topp]
type = topp
top_p = 0.6
dropless = 1
[router.relu]
type = relu
dropless = 1
[distribution.l]
source = npy
logits = l.npy
[shape.s]
d = 8
f = 16
E = 4
k = 1
INI
(cd "$tmp" && "$MOESIM" run v.ini --db "$tmp/v.db" --no-plots >/dev/null 2>"$tmp/err")
check "variable-k sweep exits 0 ($(cat "$tmp/err"))" test $? = 0
"$MOESIM" plot "$tmp/v.db" --out "$tmp/vk" >/dev/null 2>"$tmp/perr"
check "plot of the variable-k sweep exits 0 ($(cat "$tmp/perr"))" test $? = 0
out=$tmp/vk
chart_files "$out" experts_per_token_dynamic
# experts_per_token_dynamic: distribution shape router cf experts fraction tokens
same "variable-k histogram (hand-worked)" "$(rows experts_per_token_dynamic 3,5-7 | tr '\n' ';')" \
"topp 0 0 0;topp 1 0.25 1;topp 2 0.25 1;topp 3 0.5 2;relu 0 0.5 2;relu 1 0.5 2;"

# A database without cluster rows, topp or relu points draws none of those charts, silently.
tiny_spec "$tmp/t.ini" t_plot_cluster "topk" gauss clus
(cd "$tmp" && "$MOESIM" run t.ini --db "$tmp/a.db" --no-plots >/dev/null 2>"$tmp/err")
check "plain sweep exits 0 ($(cat "$tmp/err"))" test $? = 0
"$MOESIM" plot "$tmp/a.db" --out "$tmp/plain" >/dev/null 2>"$tmp/perr"
check "plot of a plain sweep exits 0 ($(cat "$tmp/perr"))" test $? = 0
check "no cluster chart without cluster rows" test -z "$(ls "$tmp/plain" | grep '^cluster_')"
check "the plain charts are there" test -s "$tmp/plain/drop_rate.png"
check "no variable-k histogram without topp or relu points" \
    test ! -e "$tmp/plain/experts_per_token_dynamic.png"
lacks "nothing said about the charts a plain sweep cannot feed" "$tmp/perr" "_dynamic"
lacks "nothing said about the cluster charts" "$tmp/perr" "cluster_"
finish
