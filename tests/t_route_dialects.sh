#!/bin/sh
# t_route_dialects.sh: the library-dialect options from the command line and a spec: routing
# groups, mode eval with capacity_factor_eval, jitter, and the options that do not apply to a
# router. Bad inputs (the README table) give exit 1, the exact one-line error and no plan file.
# Hand-worked on tests/fixtures/route/topk_default/logits.npy (12 tokens, 4 experts, topk k = 2):
# group_size 4 gives 3 groups of C = ceil(2*4*1/4) = 2 slots, capacity 6 like the ungrouped
# ceil(2*12/4) = 6; group_size 2 gives C = ceil(2*2/4) = 1 per group, capacity 6 again, and every
# slot s of token t lies in its group's block: floor(s / 1) = floor(t / 2).
# The spec sweeps group_size, mode and jitter as list-valued keys: 8 variants; capacity 8 for
# G = 0 and for G = 16 (64 tokens, 8 experts, switch: ceil(64/8) = 8 = 4 x ceil(16/8)), 16 in
# mode eval (capacity_factor_eval 2); in mode eval the jitter is off, so jitter 0 and 0.1 give
# the same drop rate and aux loss. Prints "t_route_dialects: N passed, N failed" last.
NAME=t_route_dialects
. tests/lib.sh
make_tmp
L=tests/fixtures/route/topk_default/logits.npy  # (12,4)

# bad DESC MESSAGE ARGS...: exit 1, the exact first line, no plan written
bad_input() {
    d=$1 msg=$2; shift 2
    status "$d" 1 "$tmp/out" "$MOESIM" route --logits "$L" --plan "$tmp/p.csv" "$@"
    same "$d: first line" "$(head -1 "$tmp/out")" "moesim: error: $msg"
    check "$d: no plan" test ! -e "$tmp/p.csv"
}
bad_input "group size not dividing n" "group_size 5 does not divide the 12 tokens (router topk)" \
    --router topk --group-size 5
bad_input "group size above n" "group_size 24 does not divide the 12 tokens (router topk)" \
    --router topk --group-size 24
bad_input "jitter 1" "bad value '1' for option jitter: want a number in [0, 1) (--jitter)" \
    --router topk --jitter 1
bad_input "negative jitter" "bad value '-0.1' for option jitter: want a number >= 0 (--jitter)" \
    --router topk --jitter -0.1
bad_input "mode misspelt" \
    "bad value 'evaluate' for option mode: want one of train|eval (--mode)" \
    --router topk --mode evaluate
bad_input "jitter on given logits" "jitter 0.1 on a batch that brings its logits (moesim route)" \
    --router topk --jitter 0.1
bad_input "jitter draws without jitter" "--jitter-uniforms needs --jitter (command line)" \
    --router topk --jitter-uniforms "$L"
bad_input "--wg without the layer" \
    "--wg replaces --logits and needs the layer (--x --w1 --b1 --w2 --b2 --output) (command line)" \
    --router topk --wg "$L"
bad_input "capacity factor for base" \
    "option capacity_factor does not apply to router base (--capacity-factor)" \
    --router base --capacity-factor 0.5
bad_input "capacity factor for dense" \
    "option capacity_factor does not apply to router dense (--capacity-factor)" \
    --router dense --capacity-factor 0.5
bad_input "eval factor for soft_moe" \
    "option capacity_factor_eval does not apply to router soft_moe (--capacity-factor-eval)" \
    --router soft_moe --capacity-factor-eval 2
bad_input "padding for soft_moe" \
    "option pad_to_capacity does not apply to router soft_moe (--pad-to-capacity)" \
    --router soft_moe --pad-to-capacity true
for opt in "score softmax" "normalize-topk true" "route-scale 2" "groups 2" "topk-groups 1" \
    "group-score max"; do
    set -- $opt
    key=$(printf '%s' "$1" | tr - _)
    bad_input "$1 for expert_choice" \
        "option $key does not apply to router expert_choice (--$1)" \
        --router expert_choice --$1 $2
done
bad_input "score for sinkhorn" "option score does not apply to router sinkhorn (--score)" \
    --router sinkhorn --score sigmoid

# good runs: capacity and slot blocks of the groups
capacity() { sed -n 's/.*"capacity": *\([0-9]*\).*/\1/p' "$tmp/m.json"; }
for g in 0 4 2; do
    status "topk G=$g" 0 "$tmp/out" "$MOESIM" route --router topk --logits "$L" --group-size $g \
        --plan "$tmp/p$g.csv" --metrics "$tmp/m.json"
    same "topk G=$g: capacity" "$(capacity)" 6
done
same "G=2: every slot in its group's block" \
    "$(tail -n +2 "$tmp/p2.csv" | awk -F, '$3 != int($1 / 2) {bad++} END {print bad + 0}')" 0
same "G=4: slots 0..5 by block" \
    "$(tail -n +2 "$tmp/p4.csv" | awk -F, 'int($3 / 2) != int($1 / 4) {bad++} END {print bad + 0}')" 0
status "rts without a file" 0 "$tmp/out" "$MOESIM" route --router switch --logits "$L" \
    --order rts --capacity-factor 0.5 --plan "$tmp/rts.csv" --seed 3
same "rts: 6 of 12 tokens kept (C = ceil(12*0.5/4) = 2 on each of the 4 experts at most)" \
    "$(tail -n +2 "$tmp/rts.csv" | awk -F, '{n++} END {print (n <= 8) ? "ok" : n}')" ok

# a spec: group_size, mode and jitter as sweep axes
spec=$tmp/dial.ini
cat >"$spec" <<'INI'
[experiment]
name = dial
routers = sw
capacity_factors = 1.0
tokens = 64
batches = 1
seeds = 1
error_tokens = 16

[router.sw]
type = switch
group_size = 0 16
mode = train eval
capacity_factor_eval = 2
jitter = 0 0.1

[distribution.g]
source = clustered
zipf_s = 1.5

[shape.s]
d = 16
f = 32
E = 8
INI
db=$tmp/dial.db
status "spec run" 0 "$tmp/out" "$MOESIM" run "$spec" --db "$db" --no-plots
if command -v sqlite3 >/dev/null 2>&1; then
    same "8 variants" "$(q "$db" 'SELECT count(*) FROM points')" 8
    same "capacities" "$(q "$db" "SELECT group_concat(c) FROM (SELECT DISTINCT
        (router LIKE '%mode=eval%') || ':' || capacity AS c FROM points ORDER BY c)")" "0:8.0,1:16.0"
    same "eval ignores the jitter" "$(q "$db" "SELECT count(DISTINCT token_drop_rate || '/' ||
        aux_loss) FROM points WHERE router LIKE '%mode=eval%' AND router LIKE 'sw[group_size=16,%'")" 1
    same "train feels the jitter" "$(q "$db" "SELECT count(DISTINCT aux_loss) FROM points WHERE
        router LIKE '%mode=train%' AND router LIKE 'sw[group_size=0,%'")" 2
else
    skip 4 "no sqlite3"
fi
sed 's/^group_size = 0 16/group_size = 48/' "$spec" >"$tmp/bad.ini"
status "group size 48 of 64 tokens" 1 "$tmp/out" "$MOESIM" run "$tmp/bad.ini" --db "$tmp/bad.db" \
    --no-plots
contains "spec: group size error" "$tmp/out" "group_size 48 does not divide the 64 tokens"
check "spec: no database" test ! -e "$tmp/bad.db"
finish
