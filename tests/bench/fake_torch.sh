#!/bin/sh
# fake_torch.sh: stands in for torch_moe.py in tests/t_bench.sh (run as `--python /bin/sh
# --torch-script tests/bench/fake_torch.sh`), so the bench's handling of the PyTorch reference is
# tested without Python. FAKE_TORCH selects the behaviour:
#   missing   exit 3, as torch_moe.py does when torch cannot be imported
#   garbage   exit 0 with output that is not JSON
#   wrong     valid JSON and timings, but y_loop.npy / y_einsum.npy are copies of x.npy: the
#             outputs disagree with moesim's (x and y are both float32 (T,D))
#   hang      writes its process id to $FAKE_TORCH_PID, then sleeps (the test ends it)
#   quiet     as wrong, but with --serve it ends without answering the rounds' requests
dir=
serve=0
while [ $# -gt 0 ]; do
    case "$1" in
    --dir) dir=$2; shift ;;
    --serve) serve=1 ;;
    esac
    shift
done
case "${FAKE_TORCH:-wrong}" in
missing) echo '{"error": "cannot import torch: fake"}'; exit 3 ;;
garbage) echo 'this is not json'; exit 0 ;;
hang) echo $$ >"$FAKE_TORCH_PID.tmp" && mv "$FAKE_TORCH_PID.tmp" "$FAKE_TORCH_PID"; exec sleep 120 ;;
esac
cp "$dir/x.npy" "$dir/y_loop.npy" && cp "$dir/x.npy" "$dir/y_einsum.npy" || exit 1
printf '%s%s%s%s%s\n' '{"torch": "fake", "routing_mismatch": 0, "results": [' \
 '{"style": "loop", "threads": 1, "median": 0.5, "q1": 0.5, "q3": 0.5, "min": 0.5, "max": 0.5}, ' \
 '{"style": "loop", "threads": 2, "median": 0.25, "q1": 0.25, "q3": 0.25, "min": 0.25, "max": 0.25}, ' \
 '{"style": "einsum", "threads": 1, "median": 2, "q1": 2, "q3": 2, "min": 2, "max": 2}, ' \
 '{"style": "einsum", "threads": 2, "median": 1, "q1": 1, "q3": 1, "min": 1, "max": 1}]}'
[ "${FAKE_TORCH:-}" = quiet ] && exit 0
# --serve: each request "time STYLE THREADS REPEATS" answered with REPEATS forwards of 0.25 s
[ "$serve" = 1 ] || exit 0
while read -r w style th reps; do
    [ "$w" = time ] || exit 2
    printf 'time %s %s' "$style" "$th"
    i=0
    while [ "$i" -lt "$reps" ]; do printf ' 0.25'; i=$((i + 1)); done
    printf '\n'
done
