#!/bin/sh
# Runs every test binary in BUILD/tests and the shell tests in tests/*.sh; prints one closing
# line "N passed, N failed" (counting checks) and exits non-zero if anything failed.
B=${1:-build}
pass=0; fail=0; bad=""
for t in "$B"/tests/test_*; do
    [ -x "$t" ] || continue
    case "$t" in *.d) continue;; esac
    out=$("$t" 2>&1); rc=$?
    line=$(printf '%s\n' "$out" | grep -E ': [0-9]+ passed, [0-9]+ failed' | tail -1)
    p=$(printf '%s' "$line" | sed -n 's/.*: \([0-9]*\) passed, \([0-9]*\) failed.*/\1/p')
    f=$(printf '%s' "$line" | sed -n 's/.*: \([0-9]*\) passed, \([0-9]*\) failed.*/\2/p')
    [ -n "$p" ] || { p=0; f=1; }
    if [ $rc -ne 0 ] && [ "$f" = 0 ]; then f=1; fi
    pass=$((pass + p)); fail=$((fail + f))
    if [ "$f" != 0 ]; then bad="$bad $(basename "$t")"; printf '%s\n' "$out" | tail -30; fi
    printf '%s\n' "${line:-$(basename "$t"): crashed (exit $rc)}"
done
for s in tests/t_*.sh; do
    [ -f "$s" ] || continue
    out=$(MOESIM=$B/moesim BUILD=$B sh "$s" 2>&1); rc=$?
    line=$(printf '%s\n' "$out" | grep -E ': [0-9]+ passed, [0-9]+ failed' | tail -1)
    p=$(printf '%s' "$line" | sed -n 's/.*: \([0-9]*\) passed, \([0-9]*\) failed.*/\1/p')
    f=$(printf '%s' "$line" | sed -n 's/.*: \([0-9]*\) passed, \([0-9]*\) failed.*/\2/p')
    [ -n "$p" ] || { p=0; f=1; }
    if [ $rc -ne 0 ] && [ "$f" = 0 ]; then f=1; fi
    pass=$((pass + p)); fail=$((fail + f))
    if [ "$f" != 0 ]; then bad="$bad $(basename "$s")"; printf '%s\n' "$out" | tail -30; fi
    printf '%s\n' "${line:-$(basename "$s"): crashed (exit $rc)}"
done
[ -n "$bad" ] && echo "failing:$bad"
echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
