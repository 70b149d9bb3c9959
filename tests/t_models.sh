#!/bin/sh
# t_models.sh: model presets and shared experts through `moesim run` and `moesim list models`.
# Checked: the list prints one row per preset (10) with the values of docs/models.md for two of
# them; a sweep over a preset at scale 1/64 and a hand-written shape with shared experts stores
# d, f, E, k, the shared-expert columns and the preset's routing options; the points' FLOPs
# carry the shared experts (useful = 6*d*f per kept entry + T*S*(6*d*Fs + 2*d) with SwiGLU and
# the sigmoid gate, hand-worked below from the stored num_entries); an unknown model is one
# error line naming the key and exits non-zero without creating the database.
NAME=t_models; . tests/lib.sh
make_tmp

$M list models >"$tmp/list" 2>&1
same "list models: exit status" $? 0
same "ten presets" "$(grep -cE '^[a-z0-9_]+ +[0-9]+ +[0-9]+ ' "$tmp/list")" 10
contains "deepseek_v3 row" "$tmp/list" "deepseek_v3          256  8  7168   2048  1  2048 none    swiglu    sigmoid true        2.5      8    4 dsv3_bias"
contains "qwen1_5 row" "$tmp/list" "qwen1_5_moe_a2_7b     60  4  2048   1408  1  5632 sigmoid swiglu    softmax false         1      0    0 topk"

cat >"$tmp/m.ini" <<'INI'
[experiment]
name = m
routers = topk
capacity_factors = 1.0
distributions = g
shapes = v2 hand
tokens = 64
batches = 1
error_tokens = 16

[router.topk]
type = topk

[distribution.g]
source = gaussian

[shape.v2]
model = deepseek_v2_lite
scale = 1/64

[shape.hand]
d = 16
f = 24
E = 4
k = 2
activation = swiglu
shared_experts = 2
shared_f = 8
shared_gate = sigmoid
INI
status "run with presets" 0 "$tmp/run.out" $M run "$tmp/m.ini" --db "$tmp/m.db" --no-plots
q() { sqlite3 "$1" "$2"; }
# deepseek_v2_lite at 1/64: d 2048/64 = 32, f 1408/64 = 22, E 64, k 6, S 2, Fs 22
same "preset shape" "$(q "$tmp/m.db" "SELECT d, f, E, k, activation, shared_experts, shared_f, shared_gate FROM points WHERE shape = 'v2'")" \
    "32|22|64|6|swiglu|2|22|none"
same "preset options" "$(q "$tmp/m.db" "SELECT router_options FROM points WHERE shape = 'v2'")" \
    "k=6 capacity_factor=1/1 score=softmax normalize_topk=false"
same "hand shape" "$(q "$tmp/m.db" "SELECT shared_experts, shared_f, shared_gate FROM points WHERE shape = 'hand'")" \
    "2|8|sigmoid"
# useful FLOPs of the hand shape: 6*16*24 = 2304 per kept entry, plus per token
# 2 * 6*16*8 = 1536 and the gate 2*16*2 = 64: 64 tokens * 1600 = 102400
same "hand FLOPs" "$(q "$tmp/m.db" "SELECT CAST(flops_expert_useful - 2304 * num_entries AS INTEGER) FROM points WHERE shape = 'hand'")" \
    "102400"
same "hand padded FLOPs" "$(q "$tmp/m.db" "SELECT CAST(flops_expert_padded - 4 * capacity * 2304 AS INTEGER) FROM points WHERE shape = 'hand'")" \
    "102400"
check "output errors computed" test -n "$(q "$tmp/m.db" "SELECT output_error_dense FROM points WHERE shape = 'hand' AND output_error_dense > 0")"

status "unknown model" 1 "$tmp/bad.out" $M run "$tmp/m.ini" --db "$tmp/bad.db" --no-plots --set shape.v2.model=mixtral
same "the error line and its hint" "$(wc -l <"$tmp/bad.out" | tr -d ' ')" 2
contains "names the key" "$tmp/bad.out" "moesim: error: unknown model 'mixtral' (model) ("
contains "lists the models" "$tmp/bad.out" "models: mixtral_8x7b, mixtral_8x22b, dbrx"
check "no database" test ! -e "$tmp/bad.db"
finish
