#!/bin/sh
# run.sh: `make fuzz`. Builds every libFuzzer target tests/fuzz/fuzz_NAME.c with clang
# (-fsanitize=fuzzer,address,undefined; the library too) into build-fuzz/fuzz/, then runs each
# for FUZZ_SECONDS (default 30) on a scratch copy of its seed corpus tests/fuzz/corpus_NAME/
# (new inputs stay in the scratch folder; the tracked corpus is not changed) and prints one
# summary line per target (tests/fuzz/NAME.dict, when present, is its dictionary). A crash,
# leak, timeout or out-of-memory input is written to
# tests/fuzz/crashes/fuzz_NAME-<kind>-<sha1> (tracked: tests/test_fuzz_regress.c replays it in
# `make test` once the bug is fixed). Exits non-zero when any target found something.
# Environment: FUZZ_SECONDS, FUZZ_CC (default clang), FUZZ_TARGETS (default all), MAKE.
SECS=${FUZZ_SECONDS:-30}
FCC=${FUZZ_CC:-clang}
MK=${MAKE:-make}
B=build-fuzz
CRASHES=tests/fuzz/crashes
names=${FUZZ_TARGETS:-$(for f in tests/fuzz/fuzz_*.c; do basename "$f" .c; done)}

tmp=$(mktemp -d "${TMPDIR:-/tmp}/moesim_fuzz_run.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT

# libFuzzer ships with clang's runtime libraries (Debian: clang pulls libclang-rt-NN-dev)
printf 'int LLVMFuzzerTestOneInput(const unsigned char *d, unsigned long n);\n%s\n' \
    'int LLVMFuzzerTestOneInput(const unsigned char *d, unsigned long n) { (void)d; return (int)(n & 0); }' \
    >"$tmp/probe.c"
if ! "$FCC" -fsanitize=fuzzer,address,undefined -o "$tmp/probe" "$tmp/probe.c" 2>"$tmp/probe.err"; then
    echo "fuzz: $FCC cannot build libFuzzer targets:"
    sed 's/^/  /' "$tmp/probe.err" | head -5
    echo "hint: apt-get install clang (and libclang-rt-<version>-dev), or set FUZZ_CC"
    exit 1
fi

SAN="-g -O1 -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=all"
targets=""
for n in $names; do targets="$targets $B/fuzz/$n"; done
# shellcheck disable=SC2086
"$MK" --no-print-directory B=$B CC="$FCC" CFLAGS="$SAN -fsanitize=fuzzer-no-link" \
    LDFLAGS="$SAN" $targets || exit 1

mkdir -p "$CRASHES"
found=0
printf '%-22s %10s %6s %6s %8s  %s\n' target runs secs cov corpus result
for n in $names; do
    corpus=tests/fuzz/corpus_${n#fuzz_}
    scratch=$tmp/$n
    mkdir -p "$scratch"
    [ -d "$corpus" ] && cp "$corpus"/* "$scratch"/ 2>/dev/null
    seeds=$(ls "$scratch" | wc -l)
    dict=tests/fuzz/${n#fuzz_}.dict
    [ -f "$dict" ] && dict="-dict=$dict" || dict=
    start=$(date +%s)
    ASAN_OPTIONS=detect_leaks=1:allocator_may_return_null=1 UBSAN_OPTIONS=print_stacktrace=1 \
        "./$B/fuzz/$n" -max_total_time="$SECS" -timeout=10 -rss_limit_mb=2048 -max_len=8192 \
        -print_final_stats=1 -artifact_prefix="$PWD/$CRASHES/$n-" $dict "$scratch" \
        </dev/null >"$tmp/$n.log" 2>&1
    rc=$?
    secs=$(( $(date +%s) - start ))
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$tmp/$n.log" | tail -1)
    cov=$(grep -o 'cov: [0-9]*' "$tmp/$n.log" | tail -1 | sed 's/cov: //')
    unit=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$tmp/$n.log" | tail -1)
    if [ "$rc" = 0 ] && [ -z "$unit" ]; then
        result=ok
    else
        found=1
        result="FOUND (exit $rc): ${unit:-no input written}"
        cp "$tmp/$n.log" "$B/$n.log"
    fi
    printf '%-22s %10s %6s %6s %3s->%-4s  %s\n' "$n" "${runs:-?}" "$secs" "${cov:-?}" "$seeds" \
        "$(ls "$scratch" | wc -l)" "$result"
    [ "$result" = ok ] || tail -40 "$B/$n.log" | sed 's/^/    /'
done
if [ $found = 0 ]; then
    echo "fuzz: no crash, leak or timeout in ${SECS}s per target"
else
    echo "fuzz: found inputs in $CRASHES/ (logs in $B/*.log); fix, then keep them: make test replays them"
fi
exit $found
