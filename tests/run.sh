#!/bin/sh
# tests/run.sh BUILD [LABEL [TOTALS]]: runs every test binary in BUILD/tests and the shell tests
# tests/t_*.sh (which source tests/lib.sh); prints each test's closing line with its wall time in
# seconds, the failures' output, and every skip with its count and reason ("SKIP name: N checks:
# reason" lines of the tests), then a labelled summary of this pass ("LABEL: N passed, N failed,
# N skipped (in N tests)", LABEL defaults to the build folder) and, last, the plain line "N
# passed, N failed" (", N skipped" added when some checks were skipped). With TOTALS, also
# appends "PASS FAIL SKIPPED" to that file (make test adds up its two passes). Exits non-zero if
# anything failed.
B=${1:-build}
LABEL=${2:-$B}
TOTALS=${3:-}
pass=0; fail=0; skipped=0; bad=""; skips=""
nl='
'
# one TEST-NAME OUTPUT RC: add a test's counts
one() {
    name=$1 out=$2 rc=$3
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
    printf '%s (%d s)\n' "${line:-$name: crashed (exit $rc)}" "$secs"
}
ntests=0
for t in "$B"/tests/test_*; do
    [ -x "$t" ] || continue
    case "$t" in *.d) continue;; esac
    t0=$(date +%s)
    out=$("$t" 2>&1); rc=$?
    secs=$(($(date +%s) - t0))
    one "$(basename "$t")" "$out" $rc
    ntests=$((ntests + 1))
done
for s in tests/t_*.sh; do
    [ -f "$s" ] || continue
    t0=$(date +%s)
    out=$(MOESIM=$B/moesim BUILD=$B sh "$s" 2>&1); rc=$?
    secs=$(($(date +%s) - t0))
    one "$(basename "$s")" "$out" $rc
    ntests=$((ntests + 1))
done
if [ -n "$skips" ]; then
    echo "skipped checks ($LABEL):"
    printf '%s' "$skips" | sed 's/^SKIP /  /'
fi
[ -n "$bad" ] && echo "failing ($LABEL):$bad"
[ -n "$TOTALS" ] && echo "$pass $fail $skipped" >>"$TOTALS"
echo "$LABEL: $pass passed, $fail failed, $skipped skipped (in $ntests tests)"
if [ "$skipped" = 0 ]; then echo "$pass passed, $fail failed"
else echo "$pass passed, $fail failed, $skipped skipped"; fi
[ "$fail" = 0 ]
