#!/bin/sh
# t_route_modern.sh: `moesim route` with the score-path options and the variable-k routers:
# the bad inputs of the README table each give exit 1, one error line naming the option, and no
# plan file; a group-limited sigmoid plan and a topp plan are written. tests/run.sh runs it with
# MOESIM=<build>/moesim. Prints "t_route_modern: N passed, N failed" last.
NAME=t_route_modern
. tests/lib.sh
make_tmp
L=tests/fixtures/route/score_topk_groups_sum/logits.npy  # (16,8)

# bad DESC MESSAGE ARGS...: exit 1, the exact first line, no plan written
bad_input() {
    d=$1 msg=$2; shift 2
    status "$d" 1 "$tmp/out" "$MOESIM" route --logits "$L" --plan "$tmp/p.csv" "$@"
    same "$d: first line" "$(head -1 "$tmp/out")" "moesim: error: $msg"
    check "$d: no plan" test ! -e "$tmp/p.csv"
}
bad_input "groups not dividing E" "groups = 3 does not divide E = 8 (groups)" \
    --router topk --groups 3
bad_input "topk_groups > groups" "topk_groups = 5 is above groups = 4 (topk_groups)" \
    --router topk --groups 4 --topk-groups 5
bad_input "k above the kept experts" \
    "topk: k = 5 is above the 4 experts of the 2 kept groups (topk_groups)" \
    --router topk --k 5 --groups 4 --topk-groups 2
bad_input "topk_groups without groups" "topk_groups = 2 needs groups (topk_groups)" \
    --router dsv3_bias --topk-groups 2
bad_input "top_p above 1" "top_p = 1.5 is outside (0, 1] (top_p)" --router topp --top-p 1.5
bad_input "top_p 0" "bad value '0' for option top_p: want a number > 0 (--top-p)" \
    --router topp --top-p 0
bad_input "unknown score" \
    "bad value 'tanh' for option score: want one of auto|softmax|sigmoid|sqrtsoftplus (--score)" \
    --router topk --score tanh

# good runs: 16 tokens, k = 4 -> 64 entries (dropless); topp p = 1 routes every expert
status "sigmoid groups" 0 "$tmp/out" "$MOESIM" route --router topk --logits "$L" --score sigmoid \
    --groups 4 --topk-groups 2 --k 4 --dropless true --plan "$tmp/p.csv"
same "sigmoid groups: 64 entries" "$(tail -n +2 "$tmp/p.csv" | wc -l | tr -d ' ')" 64
rm -f "$tmp/p.csv"
status "topp 1" 0 "$tmp/out" "$MOESIM" route --router topp --logits "$L" --top-p 1 \
    --plan "$tmp/p.csv"
same "topp 1: every expert of every token" "$(tail -n +2 "$tmp/p.csv" | wc -l | tr -d ' ')" 128
finish
