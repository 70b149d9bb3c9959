#!/bin/sh
# twin_dies.sh: stands in for sim/bench_torch_routing.py in tests/t_bench.sh (run as
# `--python /bin/sh --torch-script tests/bench/twin_dies.sh`): the real script, but in serve mode
# its output ends after the ready line and one answer, as if the twin died after timing the
# first twin asked for. The bench must keep that time, skip the later twins and say so.
case "$1" in
serve) /usr/bin/python3 sim/bench_torch_routing.py "$@" | sed -u 2q ;;
*) exec /usr/bin/python3 sim/bench_torch_routing.py "$@" ;;
esac
