#!/bin/sh
# tests/run.sh BUILD [LABEL [TOTALS]]: runs every test binary in BUILD/tests and the shell tests
# tests/t_*.sh (which source tests/lib.sh); prints each test's closing line with its wall time in
# seconds, the failures' output, and every skip with its count and reason ("SKIP name: N checks:
# reason" lines of the tests), then a labelled summary of this pass ("LABEL: N passed, N failed,
# N skipped (in N tests, N s)", LABEL defaults to the build folder) and, last, the plain line "N
# passed, N failed" (", N skipped" added when some checks were skipped). With TOTALS, also
# appends "PASS FAIL SKIPPED" to that file (make test adds up its two passes). Exits non-zero if
# anything failed.
#
# TEST_JOBS tests run at once (default: the online processors; 1 runs them one after another),
# the longest first (FIRST below); the lines are printed in the suite's order whatever order the
# tests end in. Markers, each a line of the shell test itself:
#   "# run.sh: alone"       it runs after the others, by itself, in every pass (a test that times
#                           the machine: tests/t_calib.sh, whose calibration fits its own
#                           timings even where the sanitizer pass skips the factor checks);
#   "# run.sh: plain only"  a run labelled asan (make test's sanitizer pass) leaves it out: what
#                           it checks does not run the instrumented code (the line says why).
B=${1:-build}
LABEL=${2:-$B}
TOTALS=${3:-}
JOBS=${TEST_JOBS:-$(getconf _NPROCESSORS_ONLN 2>/dev/null || echo 1)}
pass=0; fail=0; skipped=0; bad=""; skips=""
nl='
'
# one TEST-NAME OUTPUT RC SECS CPU: add a test's counts
one() {
    name=$1 out=$2 rc=$3 secs=$4 cpu=$5
    line=$(printf '%s\n' "$out" | grep -E ': [0-9]+ passed, [0-9]+ failed' | tail -1)
    p=$(printf '%s' "$line" | sed -n 's/.*: \([0-9]*\) passed, \([0-9]*\) failed.*/\1/p')
    f=$(printf '%s' "$line" | sed -n 's/.*: \([0-9]*\) passed, \([0-9]*\) failed.*/\2/p')
    s=$(printf '%s' "$line" | sed -n 's/.* failed, \([0-9]*\) skipped.*/\1/p')
    [ -n "$p" ] || { p=0; f=1; }
    if [ "$rc" -ne 0 ] && [ "$f" = 0 ]; then f=1; fi
    pass=$((pass + p)); fail=$((fail + f)); skipped=$((skipped + ${s:-0}))
    sk=$(printf '%s\n' "$out" | grep '^SKIP ')
    [ -n "$sk" ] && skips="$skips$sk$nl"
    if [ "$f" != 0 ]; then bad="$bad $name"; printf '%s\n' "$out" | tail -30; fi
    printf '%s (%d s, cpu %s s)\n' "${line:-$name: crashed (exit $rc)}" "$secs" "$cpu"
}

W=$(mktemp -d "${TMPDIR:-/tmp}/moesim_run.XXXXXX") || exit 1
workers=""
trap '[ -z "$workers" ] || kill $workers 2>/dev/null; rm -rf "$W"' EXIT
trap 'exit 130' INT TERM

# The suite: test i is the path in $W/t.$i; the pool's tests first, then those run alone.
n=0; alone=""
add() { n=$((n + 1)); printf '%s\n' "$1" >"$W/t.$n"; }
for t in "$B"/tests/test_*; do
    [ -x "$t" ] || continue
    case "$t" in *.d) continue;; esac
    add "$t"
done
for s in tests/t_*.sh; do
    [ -f "$s" ] || continue
    [ "$LABEL" = asan ] && grep -q '^# run\.sh: plain only' "$s" && continue
    if grep -q '^# run\.sh: alone$' "$s"; then
        alone="$alone $s"
    else
        add "$s"
    fi
done
npool=$n
for s in $alone; do add "$s"; done
# The order the pool starts its tests in: FIRST (the longest, as measured one after another)
# first, so that no long test starts last.
FIRST="t_memcheck t_plot t_report_html t_python t_regression t_results t_run t_plot_train t_mpi
    t_train t_plot_seeds t_bench t_output_safety t_route_memory t_plot_cluster t_install"
i=1
while [ $i -le $npool ]; do
    echo "$(basename "$(cat "$W/t.$i")" .sh)"
    i=$((i + 1))
done >"$W/names"
for f in $FIRST; do grep -nx "$f" "$W/names" | cut -d: -f1; done >"$W/order"
seq "$npool" | grep -vxF -f "$W/order" >>"$W/order"

# runtest I: run test I into $W/out.I, then write "RC SECS CPU" to $W/rc.I (renamed into place,
# so that a reader never sees half of it): wall seconds, and the processor seconds (user +
# system) of the test's processes, which the machine's load changes less than its wall time
# (the shell's `times` before and after, run in this shell: its second line is the finished
# children's)
runtest() {
    t=$(cat "$W/t.$1")
    times >"$W/c0.$1"
    t0=$(date +%s)
    case "$t" in
    *.sh) MOESIM=$B/moesim BUILD=$B sh "$t" >"$W/out.$1" 2>&1 ;;
    *) "$t" >"$W/out.$1" 2>&1 ;;
    esac
    rc=$?
    secs=$(($(date +%s) - t0))
    times >"$W/c1.$1"
    cpus=$(awk 'FNR == 2 {split($1, u, /[ms]/); split($2, s, /[ms]/);
        c[FILENAME] = u[1] * 60 + u[2] + s[1] * 60 + s[2]}
        END {printf "%.1f", c[ARGV[2]] - c[ARGV[1]]}' "$W/c0.$1" "$W/c1.$1")
    echo "$rc $secs $cpus" >"$W/rc.$1.tmp" && mv "$W/rc.$1.tmp" "$W/rc.$1"
}
# worker: claims the pool's tests in order (mkdir is atomic: each test runs once)
worker() {
    for i in $(cat "$W/order"); do
        mkdir "$W/claim.$i" 2>/dev/null && runtest $i
    done
}

t_start=$(date +%s)
w=1
while [ $w -le "$JOBS" ]; do
    worker &
    workers="$workers $!"
    w=$((w + 1))
done
i=1
while [ $i -le $n ]; do
    if [ $i -gt $npool ]; then
        [ $i = $((npool + 1)) ] && wait && workers=""
        runtest $i
    fi
    while [ ! -f "$W/rc.$i" ]; do sleep 0.2; done
    read -r rc secs cpus <"$W/rc.$i"
    t=$(cat "$W/t.$i")
    one "$(basename "$t")" "$(cat "$W/out.$i")" "$rc" "$secs" "$cpus"
    i=$((i + 1))
done
wait
if [ -n "$skips" ]; then
    echo "skipped checks ($LABEL):"
    printf '%s' "$skips" | sed 's/^SKIP /  /'
fi
[ -n "$bad" ] && echo "failing ($LABEL):$bad"
[ -n "$TOTALS" ] && echo "$pass $fail $skipped" >>"$TOTALS"
echo "$LABEL: $pass passed, $fail failed, $skipped skipped (in $n tests, $(($(date +%s) - t_start)) s, $JOBS at once)"
if [ "$skipped" = 0 ]; then echo "$pass passed, $fail failed"
else echo "$pass passed, $fail failed, $skipped skipped"; fi
[ "$fail" = 0 ]
