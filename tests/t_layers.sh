#!/bin/sh
# t_layers.sh: the layer axis of recorded distributions (`layers = all` or a list) and the
# per-layer imbalance of `moesim report`, on a tiny synthetic DeepSeek-format trace written
# here (64 experts, top-6, 4 tokens, layers 1, 2, 3). Expected values worked by hand:
#   layer 1: every token chooses experts 0-5          -> loads 4 on 6 experts, 0 on 58
#   layer 2: token t chooses experts 6t..6t+5          -> loads 1 on 24 experts
#   layer 3: tokens 0, 1 choose 0-5; tokens 2, 3 6-11  -> loads 2 on 12 experts
# mean load = 4 x 6 / 64 = 0.375, so load_imbalance (max/mean) = 32/3, 8/3, 16/3; within each
# layer min = 0 and max = 4, 1, 2; population std over the 64 experts sqrt(mean(l^2) - 0.375^2)
# = sqrt(87/64) = 1.165922, sqrt(15/64) = 0.484123, sqrt(39/64) = 0.780625.
# Across the layers, sorted (8/3, 16/3, 32/3), linear interpolation at (n - 1) q:
#   p50 = 16/3 = 5.3333; p90 = 16/3 + 0.8 (16/3) = 9.6; p95 = 16/3 + 0.9 (16/3) = 10.1333;
#   max = 32/3 = 10.6667, worst layer 1.
# Also: `layers = 1 3` runs two points; points.layer holds the layer (NULL for a source
# without one); errors for `layers = all` on a source without trace layers and for layer and
# layers together; a database whose points lack the column (version 5) gets it back on the
# next run. With the recorded DeepSeek-V2-Lite trace in its default folder (skipped, counted,
# when absent):
# `layers = all` expands to its 26 MoE layers 1..26.
# Prints "t_layers: N passed, N failed" last.
NAME=t_layers
. tests/lib.sh
make_tmp

# ---- the synthetic trace ----
ids() { # ids FIRST: "[f, f+1, ..., f+5]"
    printf '"[%d, %d, %d, %d, %d, %d]"' "$1" $(($1 + 1)) $(($1 + 2)) $(($1 + 3)) $(($1 + 4)) \
        $(($1 + 5))
}
{
    echo "Layer ID,Batch Number,Token,Activated Expert IDs"
    for t in 0 1 2 3; do echo "1,0,tok$t,$(ids 0)"; done
    for t in 0 1 2 3; do echo "2,0,tok$t,$(ids $((6 * t)))"; done
    for t in 0 1 2 3; do echo "3,0,tok$t,$(ids $((6 * (t / 2))))"; done
} >"$tmp/trace.csv"

spec() { # spec FILE LAYERS
    cat >"$1" <<EOF
[experiment]
name = t_layers
routers = replay
tokens = 4
batches = 1
seeds = 1
error_tokens = 4

[router.replay]
type = replay
dropless = 1

[distribution.syn]
source = trace_deepseek
path = $tmp/trace.csv
layers = $2

[shape.s]
d = 8
f = 8
E = 64
k = 6
EOF
}
spec "$tmp/all.ini" all
db=$tmp/all.db
status "layers = all: run" 0 "$tmp/run.out" "$M" run "$tmp/all.ini" --db "$db" --no-plots
same "layers = all: one point per layer, layer column 1 2 3" \
    "$(q "$db" "SELECT group_concat(layer, ' ') FROM (SELECT layer FROM points ORDER BY
        layer)")" "1 2 3"
tiny_spec "$tmp/tiny.ini" tiny topk gauss clus
"$M" run "$tmp/tiny.ini" --db "$tmp/tiny.db" --no-plots --set experiment.routers=topk \
    >"$tmp/tiny.out" 2>&1
same "sources without a layer: points.layer NULL" "$(q "$tmp/tiny.db" "SELECT count(*),
    count(layer) FROM points")" "4|0"
same "layers = all: load_imbalance per layer (32/3, 8/3, 16/3)" \
    "$(q "$db" "SELECT group_concat(printf('%.4f', load_imbalance), ' ') FROM (SELECT
        load_imbalance FROM points WHERE layer IS NOT NULL ORDER BY layer)")" \
    "10.6667 2.6667 5.3333"

"$M" report "$db" >"$tmp/rep.txt" 2>&1
same "report: across layers p50 p90 p95 max worst" \
    "$(awk '/^Imbalance across layers/ {f = 1; next} f && $1 == "replay" {print $5, $6, $7, $8,
        $9, $10; exit}' "$tmp/rep.txt")" "3 5.3333 9.6000 10.1333 10.6667 1"
same "report: within layers (layer imbalance min max std)" \
    "$(awk '/^Within each layer/ {f = 1; next} f && $1 == "replay" {printf "%s %s %s %s %s;",
        $5, $6, $7, $8, $9}' "$tmp/rep.txt")" \
    "1 10.6667 0.00 4.00 1.17;2 2.6667 0.00 1.00 0.48;3 5.3333 0.00 2.00 0.78;"

"$M" report "$db" --json >"$tmp/rep.json" 2>&1
if command -v python3 >/dev/null 2>&1; then
    same "report --json: layers (hand-worked values to 1e-6)" "$(python3 - "$tmp/rep.json" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1]))
g = d["layers"]
a = g[0]["imbalance_across_layers"]
want = {"p50": 16 / 3, "p90": 9.6, "p95": 16 / 3 * 1.9, "max": 32 / 3}
ok = len(g) == 1 and g[0]["layers"] == 3 and a["worst_layer"] == 1
ok = ok and all(abs(a[k] - v) < 1e-6 for k, v in want.items())
std = [87 ** 0.5 / 8, 15 ** 0.5 / 8, 39 ** 0.5 / 8]
for row, l, mx, s in zip(g[0]["per_layer"], [1, 2, 3], [4, 1, 2], std):
    ok = ok and row["layer"] == l and row["tokens_per_expert_max"] == mx
    ok = ok and row["tokens_per_expert_min"] == 0 and abs(row["tokens_per_expert_std"] - s) < 1e-6
print("ok" if ok else json.dumps(g))
EOF
)" ok
else
    skip 1 "python3 absent: report --json not parsed"
fi

# ---- a list of layers ----
spec "$tmp/list.ini" "1 3"
status "layers = 1 3: run" 0 "$tmp/list.out" "$M" run "$tmp/list.ini" --db "$tmp/list.db" \
    --no-plots
same "layers = 1 3: layers 1 and 3" "$(q "$tmp/list.db" "SELECT group_concat(layer, ' ') FROM
    (SELECT layer FROM points WHERE layer IS NOT NULL ORDER BY layer)")" "1 3"

# ---- errors ----
spec "$tmp/bad1.ini" all
sed -i 's/^source = trace_deepseek/source = gaussian/' "$tmp/bad1.ini"
status "layers = all on gaussian: exit 1" 1 "$tmp/bad1.out" "$M" run "$tmp/bad1.ini" --dry-run
contains "layers = all on gaussian: names the source and the key" "$tmp/bad1.out" \
    "source gaussian has no trace layers"
contains "layers = all on gaussian: where" "$tmp/bad1.out" "bad1.ini:"
spec "$tmp/bad2.ini" "1 2"
sed -i 's/^layers = 1 2$/layers = 1 2\nlayer = 2/' "$tmp/bad2.ini"
status "layer and layers together: exit 1" 1 "$tmp/bad2.out" "$M" run "$tmp/bad2.ini" --dry-run
contains "layer and layers together: message" "$tmp/bad2.out" "both layer and layers"

# ---- a database from before the column ----
cp "$db" "$tmp/old.db"
q "$tmp/old.db" "ALTER TABLE points DROP COLUMN layer; PRAGMA user_version = 5"
same "old database: no layer column" \
    "$(q "$tmp/old.db" "SELECT count(*) FROM pragma_table_xinfo('points') WHERE name = 'layer'")" 0
"$M" report "$tmp/old.db" >"$tmp/old.txt" 2>&1
lacks "report of a database without points.layer: no layer tables" "$tmp/old.txt" \
    "Imbalance across layers"
status "old database: the run resumes" 0 "$tmp/old.out" "$M" run "$tmp/all.ini" \
    --db "$tmp/old.db" --no-plots
same "old database: upgraded, layers back" "$(q "$tmp/old.db" "PRAGMA user_version; SELECT
    group_concat(layer, ' ') FROM (SELECT layer FROM points WHERE layer IS NOT NULL ORDER BY
    layer)")" "7
1 2 3"

# ---- the recorded DeepSeek-V2-Lite trace (its default folder) ----
spec "$tmp/ds.ini" all
sed -i '/^path = /d' "$tmp/ds.ini"
"$M" run "$tmp/ds.ini" --dry-run >"$tmp/ds.out" 2>&1
if grep -q "trace not found" "$tmp/ds.out"; then
    skip 1 "the recorded DeepSeek-V2-Lite trace is absent (docs/traces.md)"
else
    same "DeepSeek-V2-Lite, layers = all: layers 1..26" \
        "$(grep -o 'distribution=syn\[layer=[0-9]*\]' "$tmp/ds.out" | tr -dc '0-9\n' |
            sort -n | tr '\n' ' ')" \
        "$(seq 1 26 | tr '\n' ' ')"
fi

finish
