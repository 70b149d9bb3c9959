#!/bin/sh
# t_pad_flops.sh: the metric flops_expert_executed (sim/metric_table.c, docs/metrics.md) shows
# what pad_to_capacity changes: a sweep of topk with and without the option stores, at the
# padded point, E*C rows of expert FLOPs, and at the other its useful FLOPs; shared experts add
# the same to both; `moesim list metrics`, `moesim report --json` and `moesim compare --record`
# show the metric.
# tests/run.sh runs it with MOESIM=<build>/moesim. Prints "t_pad_flops: N passed, N failed" last.
NAME=t_pad_flops
. tests/lib.sh
make_tmp

e4_spec "$tmp/s.ini" pad_flops 2 'routers = plain padded\nshapes = s shared'
cat >>"$tmp/s.ini" <<'INI'

[router.plain]
type = topk

[router.padded]
type = topk
pad_to_capacity = true

[shape.shared]
d = 16
f = 32
E = 4
shared_experts = 1
shared_f = 8
INI
status "run" 0 "$tmp/run.out" "$M" run "$tmp/s.ini" --db "$tmp/s.db" --no-plots
v() { q "$tmp/s.db" "SELECT $1 FROM points WHERE router = '$2' AND shape = '$3'"; }
# Hand-worked: n 50, E 4, k 2, cf 1.0: C = ceil(2*50/4) = 25; GELU: 4 d f = 4*16*32 = 2048 FLOPs
# per row; padded: E*C rows = 100 rows = 204800 FLOPs in every batch (std 0). Shared expert:
# 4 d Fs = 4*16*8 = 512 FLOPs per token, 50 tokens = 25600 more, padded or not.
same "padded: E*C*4*d*f" "$(v 'flops_expert_executed || " " || flops_expert_executed_std' padded s)" \
    "204800.0 0.0"
same "padded: equals flops_expert_padded" "$(v 'flops_expert_executed = flops_expert_padded' padded s)" 1
same "padded: useful FLOPs are fewer (the padding rows)" \
    "$(v 'flops_expert_useful < flops_expert_executed' padded s)" 1
same "plain: executed = useful" "$(v 'flops_expert_executed = flops_expert_useful' plain s)" 1
same "plain: padded FLOPs still counted, not executed" \
    "$(v 'flops_expert_padded || " " || (flops_expert_executed < flops_expert_padded)' plain s)" \
    "204800.0 1"
same "shared expert: padded + 50*512" "$(v flops_expert_executed padded shared)" "230400.0"
same "shared expert, plain: useful + 50*512 in both" \
    "$(v 'flops_expert_executed = flops_expert_useful' plain shared)" 1
"$M" list metrics >"$tmp/list" 2>&1
contains "list metrics shows it" "$tmp/list" "flops_expert_executed"
"$M" report "$tmp/s.db" --json >"$tmp/json" 2>&1
contains "report --json has it" "$tmp/json" '"flops_expert_executed"'
"$M" compare --record "$tmp/s.db" "$tmp/rec.tsv" >/dev/null 2>&1
same "compare --record holds it at every point" \
    "$(grep -c "$(printf '\tflops_expert_executed\t')" "$tmp/rec.tsv")" 4
finish
