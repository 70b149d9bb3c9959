#!/bin/sh
# t_preset_sweep.sh: `preset` as a sweep axis (sim/spec_axes.c). experiment.preset lists
# presets; each becomes a router of the sweep named after it, with the preset's type and
# options (the values of sim/presets.c, as `moesim route --preset NAME` uses them), and
# router_options starts with preset=NAME so that report and plot tell the series apart. A
# [router.NAME] section of a listed preset overrides that preset's options; without
# experiment.capacity_factors a preset keeps its own capacity factor, with it the sweep's factors
# override. Errors: an unknown preset name, experiment.routers given as well, a section whose
# preset key names another preset. tests/run.sh runs it with MOESIM=<build>/moesim.
# Prints "t_preset_sweep: N passed, N failed" last.
NAME=t_preset_sweep
. tests/lib.sh
make_tmp

e4_spec "$tmp/p.ini" preset_sweep 1 \
    'preset = deepspeed_top2 fairseq_top2 megatron_topk vmoe_bpr flaxformer_tokens_choose'

# 1. expansion: one point per preset, named after it
status "dry run" 0 "$tmp/dry" "$M" run "$tmp/p.ini" --dry-run
same "one point per preset" "$(grep -c '^router=' "$tmp/dry")" 5
contains "points counted" "$tmp/dry" "5 points; spec"

# 2. stored values: type and options of each preset (the assignments of sim/presets.c in option
# table order; capacity_factor 1/1 is the sweep's default factor, which a preset without its own
# capacity factor gets); the capacity C is worked by hand from each library's formula at n = 50,
# E = 4, k = 2:
#   deepspeed_top2 (rounding deepspeed_f32): ceil(float32(12.5) * float32(1.0 * 2)) = 25
#   fairseq_top2 (rounding fairseq): 2 * int(1.0 * ceil(12.5)) = 26 (exactly ceil(25) = 25)
#   vmoe_bpr (its own cf 1.05): ceil(2 * 50 * 1.05 / 4) = ceil(26.25) = 27 -> multiple of 4: 28
#   flaxformer_tokens_choose (its own cf 0.5, rounding round): round(12.5) = 12 (half to even)
status "run" 0 "$tmp/run.out" "$M" run "$tmp/p.ini" --db "$tmp/p.db" --no-plots
sel() { q "$tmp/p.db" "SELECT $1 FROM points WHERE router = '$2'"; }
same "deepspeed_top2 stored" "$(sel "router_type || ' ' || router_options" deepspeed_top2)" \
    "gshard preset=deepspeed_top2 capacity_factor=1/1 min_capacity=4 rounding=deepspeed_f32 renormalize=true second_policy=sampling"
same "fairseq_top2 stored" "$(sel "router_type || ' ' || router_options" fairseq_top2)" \
    "gshard preset=fairseq_top2 capacity_factor=1/1 rounding=fairseq renormalize=true second_policy=sampling"
same "megatron_topk stored" "$(sel "router_type || ' ' || router_options" megatron_topk)" \
    "topk preset=megatron_topk k=2 order=gate dropless=true"
same "vmoe_bpr stored: its own capacity factor" \
    "$(sel "router_type || ' ' || capacity_factor || ' ' || router_options" vmoe_bpr)" \
    "topk 1.05 preset=vmoe_bpr k=2 capacity_factor=105/100 order=bpr capacity_multiple=4 normalize_topk=false"
same "flaxformer_tokens_choose: its own capacity factor" \
    "$(sel capacity_factor flaxformer_tokens_choose)" 0.5
same "capacities from the libraries' formulas" \
    "$(for r in deepspeed_top2 fairseq_top2 vmoe_bpr flaxformer_tokens_choose; do
        sel 'CAST(capacity AS INTEGER)' $r; done | tr '\n' ' ')" "25 26 28 12 "
# `moesim route --preset NAME` on 50 rows of 4 logits (a fixture's) has the same capacities
L=tests/fixtures/presets/deepspeed_top1_n50/logits.npy
for r in deepspeed_top2:25 fairseq_top2:26 vmoe_bpr:28 flaxformer_tokens_choose:12; do
    p=${r%%:*} c=${r#*:}
    "$M" route --preset "$p" --logits "$L" --plan "$tmp/$p.csv" --metrics "$tmp/$p.json" \
        >/dev/null 2>&1
    contains "route --preset $p: capacity $c" "$tmp/$p.json" "\"capacity\": $c"
done

# 3. report shows the presets as routers
"$M" report "$tmp/p.db" >"$tmp/report" 2>&1
for r in deepspeed_top2 fairseq_top2 megatron_topk vmoe_bpr flaxformer_tokens_choose; do
    contains "report lists $r" "$tmp/report" "$r"
done

# 4. a [router.NAME] section overrides its preset; list-valued keys make variants
cat >>"$tmp/p.ini" <<'INI'

[router.fairseq_top2]
min_capacity = 30 0
INI
status "override: dry run" 0 "$tmp/dry2" "$M" run "$tmp/p.ini" --dry-run
same "override: 6 points" "$(grep -c '^router=' "$tmp/dry2")" 6
contains "override: min_capacity 30 on top of the preset" "$tmp/dry2" \
    "router=fairseq_top2[min_capacity=30] type=gshard opts={preset=fairseq_top2 capacity_factor=1/1 min_capacity=30 rounding=fairseq renormalize=true second_policy=sampling}"
contains "override: min_capacity 0" "$tmp/dry2" \
    "router=fairseq_top2[min_capacity=0] type=gshard opts={preset=fairseq_top2 capacity_factor=1/1 rounding=fairseq"

# 5. experiment.capacity_factors overrides the presets' own factors (dropless megatron_topk
# has none): 4 presets x 2 factors + 1
status "capacity factors: dry run" 0 "$tmp/dry3" "$M" run "$tmp/p.ini" --dry-run \
    --set experiment.capacity_factors="0.5 2" --set router.fairseq_top2.min_capacity=0
same "capacity factors: 9 points" "$(grep -c '^router=' "$tmp/dry3")" 9
contains "capacity factors: vmoe_bpr at the sweep's 0.5" "$tmp/dry3" \
    "router=vmoe_bpr type=topk opts={preset=vmoe_bpr k=2 capacity_factor=5/10 order=bpr"

# 6. errors: one line naming the key and the spec line, exit 1, nothing written
err() {
    d=$1 msg=$2 ini=$3
    rm -f "$tmp/e.db"
    status "$d" 1 "$tmp/e.out" "$M" run "$ini" --db "$tmp/e.db" --no-plots
    same "$d: message" "$(head -1 "$tmp/e.out")" "moesim: error: $msg"
    check "$d: no database" test ! -e "$tmp/e.db"
}
pline=$(grep -n '^preset = ' "$tmp/p.ini" | cut -d: -f1)
sed 's/^preset = .*/preset = deepspeed_top2 bogus/' "$tmp/p.ini" >"$tmp/e1.ini"
err "unknown preset" "unknown preset 'bogus' ($tmp/e1.ini:$pline, key experiment.preset)" "$tmp/e1.ini"
sed 's/^preset = \(.*\)/preset = \1\nrouters = topk/' "$tmp/p.ini" >"$tmp/e2.ini"
err "routers and preset" \
    "experiment.preset and experiment.routers both given ($tmp/e2.ini:$pline, key experiment.preset)" \
    "$tmp/e2.ini"
sed 's/^min_capacity = 30 0$/preset = mixtral/' "$tmp/p.ini" >"$tmp/e3.ini"
line=$(grep -n '^preset = mixtral' "$tmp/e3.ini" | cut -d: -f1)
err "section names another preset" \
    "preset mixtral conflicts with experiment.preset fairseq_top2 ($tmp/e3.ini:$line, key router.fairseq_top2.preset)" \
    "$tmp/e3.ini"
finish
