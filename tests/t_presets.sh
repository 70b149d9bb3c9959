#!/bin/sh
# t_presets.sh: named presets (sim/presets.c). `moesim route --preset NAME` matches, entry for
# entry, the fixtures tests/fixtures/presets/ that tests/ref/gen_presets.py generated from the
# NumPy re-implementations of each library's router (test_fixtures on that folder); explicit
# options override a preset whatever their position; a preset equals its router with the
# preset's options typed out; a conflicting --router, an unknown preset and a conflicting spec
# type are one-line errors; `moesim list presets` prints every preset with its values and
# source file; the spec key preset sets the router type and options, section keys override.
# tests/run.sh runs it with MOESIM=<build>/moesim. Prints "t_presets: N passed, N failed" last.
NAME=t_presets
. tests/lib.sh
make_tmp
P=tests/fixtures/presets

# 1. every fixture, entry for entry (28 cases: the 15 presets at their defaults, 2 overrides,
# deepspeed_topk at capacity factors 2 and 0.5 and with drop_policy 'position' (--order
# token_major), megatron_topk_capacity at 0.5 and with 'position' at 1 and 0.5, and 5 cases with
# n not divisible by E where the library's own capacity formula (rounding deepspeed_f32,
# fairseq, tutel) differs from moesim's exact one)
"$BUILD/tests/test_fixtures" "$P" 28 >"$tmp/fx" 2>&1
rc=$?
same "preset fixtures: test_fixtures exit" "$rc" 0
contains "preset fixtures: no failed check" "$tmp/fx" ", 0 failed"
[ "$rc" = 0 ] || tail -20 "$tmp/fx"

# 2. explicit options override the preset, before or after --preset; the result equals the
# router with the same options typed out (plans byte for byte)
L=$P/fairseq_top1/logits.npy
route() { out=$1; shift; "$MOESIM" route --logits "$L" --plan "$tmp/$out.csv" "$@" >"$tmp/o" 2>&1; }
route a --preset fairseq_top1 --capacity-factor 2
route b --capacity-factor 2 --preset fairseq_top1
route c --router switch --capacity-factor 2
check "override after --preset = the router typed out" cmp -s "$tmp/a.csv" "$tmp/c.csv"
check "override before --preset = the router typed out" cmp -s "$tmp/b.csv" "$tmp/c.csv"
route d --preset fairseq_top1
check "the override changes the plan" sh -c "! cmp -s '$tmp/a.csv' '$tmp/d.csv'"
route e --preset mixtral
route f --router topk --k 2 --dropless true
check "mixtral = topk k 2 dropless" cmp -s "$tmp/e.csv" "$tmp/f.csv"
route g --preset qwen2_moe --k 2
route h --router topk --k 2 --normalize-topk false --dropless true
check "qwen2_moe --k 2 = topk k 2 raw weights dropless" cmp -s "$tmp/g.csv" "$tmp/h.csv"
route i --preset mixtral --router topk
check "--router equal to the preset's router is accepted" cmp -s "$tmp/i.csv" "$tmp/e.csv"
route j --preset megatron_topk_capacity --capacity-factor 0.5
route k --router topk --k 2 --capacity-factor 0.5 --order gate
check "megatron_topk_capacity = topk k 2 order gate" cmp -s "$tmp/j.csv" "$tmp/k.csv"
route l --router topk --k 2 --capacity-factor 0.5 --order probs
check "order gate and order probs keep other claims here" sh -c "! cmp -s '$tmp/k.csv' '$tmp/l.csv'"

# 3. errors: one line, exit 1, no plan
err() {
    d=$1 msg=$2; shift 2
    rm -f "$tmp/x.csv"
    status "$d" 1 "$tmp/out" "$MOESIM" route --logits "$L" --plan "$tmp/x.csv" "$@"
    same "$d: first line" "$(head -1 "$tmp/out")" "moesim: error: $msg"
    check "$d: no plan" test ! -e "$tmp/x.csv"
}
err "conflicting router" \
    "--router switch conflicts with preset mixtral (router topk) (command line)" \
    --preset mixtral --router switch
err "unknown preset" "unknown preset 'bogus' (--preset)" --preset bogus
err "option that does not apply" "option select does not apply to router topk (--select)" \
    --preset mixtral --select rsample

# 4. moesim list presets: the 15 presets, each with its router line and its source line
"$MOESIM" list presets >"$tmp/list" 2>&1
same "list presets: exit" "$?" 0
for p in deepspeed_top1 deepspeed_top2 deepspeed_topk fairseq_top1 fairseq_top2 lingvo_top2 \
    flaxformer_tokens_choose flaxformer_experts_choose vmoe_bpr tutel_top2 megatron_topk \
    megatron_topk_capacity mixtral qwen2_moe deepseek_v3; do
    same "list presets: $p" "$(grep -c "^$p  *router = " "$tmp/list")" 1
done
same "list presets: one source line each" "$(grep -c '^  *from ' "$tmp/list")" 15
contains "list presets: values" "$tmp/list" \
    "deepspeed_top2             router = gshard, capacity_factor = 1.0, min_capacity = 4, second_policy = sampling, renormalize = true"
contains "list presets: source" "$tmp/list" "deepspeed/moe/sharded_moe.py top2gating"

# 5. spec key preset: type and options from the preset, section keys override
cat >"$tmp/s.ini" <<'INI'
[experiment]
name = presets_spec
routers = mx ds
tokens = 64
batches = 1
seeds = 1
error_tokens = 16

[router.mx]
preset = mixtral
k = 1

[router.ds]
preset = deepseek_v3

[distribution.g]
source = gaussian

[shape.s]
d = 16
f = 32
E = 32
INI
status "spec with presets: dry run" 0 "$tmp/out" "$MOESIM" run "$tmp/s.ini" --dry-run
contains "spec: mixtral with k overridden" "$tmp/out" "router=mx type=topk opts={preset=mixtral k=1 dropless=true}"
contains "spec: deepseek_v3" "$tmp/out" \
    "router=ds type=dsv3_bias opts={preset=deepseek_v3 k=8 order=token_major dropless=true route_scale=2.5 groups=8 topk_groups=4}"
printf '[router.bad]\ntype = switch\npreset = mixtral\n' >>"$tmp/s.ini"
sed -i 's/^routers = mx ds/routers = mx ds bad/' "$tmp/s.ini"
status "spec: conflicting type" 1 "$tmp/out" "$MOESIM" run "$tmp/s.ini" --dry-run
contains "spec: conflicting type message" "$tmp/out" \
    "type switch conflicts with preset mixtral (router topk)"
finish
