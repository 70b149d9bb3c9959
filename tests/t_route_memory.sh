#!/bin/sh
# t_route_memory.sh: `moesim route` refuses up front a run whose estimated memory exceeds the
# machine's physical memory, as the spec check of `moesim run` does: a --capacity (or
# --capacity-factor) of 10^12 slots per expert with a layer is an error naming the option, the
# bytes needed and the machine's memory, and nothing is written; the same layer with a capacity
# the tokens can fill runs. The .npy inputs are written by a few lines of Python (tests/npy_f32.py:
# the standard library only).
NAME=t_route_memory
. tests/lib.sh
make_tmp
t=$tmp
G=tests/fixtures/errors/good.npy   # logits (6,4): 6 tokens, 4 experts

if ! command -v python3 >/dev/null 2>&1; then
    skip 13 "python3 is not installed (it writes the .npy inputs)"
    finish
fi
# x (6,3) and w1 (4,3,5) with values in [-1, 1], zero biases, w2 (4,5,3)
npy() { python3 tests/npy_f32.py "$t/$1" "$2" $(seq 0 $(($3 - 1)) | awk "{print $4}"); }
npy x.npy 6,3 18 '(($1 * 7) % 11 - 5) / 5'
npy w1.npy 4,3,5 60 '(($1 * 5) % 13 - 6) / 6'
npy b1.npy 4,5 20 0
npy w2.npy 4,5,3 60 '(($1 * 3) % 7 - 3) / 3'
npy b2.npy 4,3 12 0
lay="--x $t/x.npy --w1 $t/w1.npy --b1 $t/b1.npy --w2 $t/w2.npy --b2 $t/b2.npy --output $t/y.npy"

# shellcheck disable=SC2086
status "capacity 6 (the tokens) with a layer runs" 0 "$t/ok.out" "$M" route --router topk \
    --logits "$G" --plan "$t/ok.csv" --capacity 6 $lay
check "capacity 6: the output is written" test -s "$t/y.npy"
rm -f "$t/y.npy"

# 10^12 slots: the layer workspaces alone are E x C x (2D + F) floats = 4 x 10^12 x (2*3 + 5)
# x 4 bytes = 1.76e14 bytes = 1.76e+05 GB (hand-worked from the estimate's formula in
# sim/pipeline.h); weights, plans and logits add a few hundred bytes, below the 3 digits shown
# shellcheck disable=SC2086
status "capacity 10^12 with a layer is refused" 1 "$t/cap.out" "$M" route --router topk \
    --logits "$G" --plan "$t/cap.csv" --metrics "$t/cap.json" --capacity 1000000000000 $lay
contains "capacity: what it needs" "$t/cap.out" \
    "moesim: error: the run needs about 1.76e+05 GB (layer workspaces 1.76e+05 GB for 4 experts x 1000000000000 slots), the machine has "
contains "capacity: what the machine has, naming the option" "$t/cap.out" \
    " GB of physical memory (--capacity)"
contains "capacity: the hint" "$t/cap.out" "hint: a capacity above the tokens per batch is never filled"
check "capacity: no plan" test ! -e "$t/cap.csv"
check "capacity: no metrics" test ! -e "$t/cap.json"
check "capacity: no output" test ! -e "$t/y.npy"

# the same through a capacity factor: C = ceil(cf x k x T / E) = 10^11 x 2 x 6 / 4 = 3 x 10^11
# slots; 4 x 3e11 x 11 x 4 bytes = 5.28e13 bytes = 5.28e+04 GB
# shellcheck disable=SC2086
status "capacity factor 10^11 with a layer is refused" 1 "$t/cf.out" "$M" route --router topk \
    --logits "$G" --plan "$t/cf.csv" --capacity-factor 100000000000 $lay
contains "capacity factor: what it needs, naming the option" "$t/cf.out" \
    "moesim: error: the run needs about 5.28e+04 GB (layer workspaces 5.28e+04 GB for 4 experts x 300000000000 slots)"
contains "capacity factor: names the option" "$t/cf.out" "(--capacity-factor)"
check "capacity factor: no plan" test ! -e "$t/cf.csv"
finish
