#!/bin/sh
# t_memcheck.sh: moesim under valgrind (memcheck) must be clean: no invalid read or write, no use
# of uninitialised values, no definite or indirect leak. Runs a tiny sweep (2 routers x 2
# capacity factors, tiny shapes, 1 batch, set by --set overrides on a spec in a temp folder,
# --no-plots), its report, `moesim route` on the real layer, a trace info, and three error paths
# (bad spec value, NaN logits, truncated .npy), each under
#   valgrind --error-exitcode=9 --leak-check=full --errors-for-leak-kinds=definite,indirect
# with OPENBLAS_NUM_THREADS=1. tests/run.sh runs it with MOESIM and BUILD; prints
# "t_memcheck: N passed, N failed[, N skipped]" last. Its 10 checks are skipped, and counted as
# such, without valgrind and for the ASan build (ASan and valgrind do not mix).
#
# valgrind (3.19) cannot decode AVX-512: a binary built with -march=native on an AVX-512 CPU
# dies with SIGILL under it. Then this test builds a portable copy (CFLAGS="-O1 -g", on every
# processor) in BUILD-valgrind/ and checks that one, and keeps OpenBLAS on its AVX2 kernels
# (OPENBLAS_CORETYPE=Haswell) unless OPENBLAS_CORETYPE is already set.
# run.sh: plain only (valgrind does not run an AddressSanitizer build: all its checks skip there)
NAME=t_memcheck
. tests/lib.sh
NCHECKS=10

case "$BUILD" in *asan*) skip $NCHECKS "$(basename "$BUILD") is an AddressSanitizer build (valgrind does not run it)"; finish ;; esac
if ! command -v valgrind >/dev/null 2>&1; then
    skip $NCHECKS "valgrind is not installed (apt-get install valgrind)"
    finish
fi

make_tmp
T=$tmp
export OPENBLAS_NUM_THREADS=1
if [ -z "${OPENBLAS_CORETYPE:-}" ] && grep -q avx512f /proc/cpuinfo 2>/dev/null; then
    export OPENBLAS_CORETYPE=Haswell
fi
VG="valgrind --error-exitcode=9 --leak-check=full --errors-for-leak-kinds=definite,indirect"

# vg NAME WANT_RC COMMAND...: COMMAND exits WANT_RC under valgrind with no valgrind error
vg() {
    name=$1; want=$2; shift 2
    $VG --log-file="$T/$name.vg" "$@" >"$T/$name.out" 2>"$T/$name.err"
    rc=$?
    if [ "$rc" = 9 ] || grep -q 'Invalid \(read\|write\)\|uninitialised\|definitely lost: [1-9]\|indirectly lost: [1-9]' "$T/$name.vg"; then
        no "$name: valgrind errors:"
        grep -A8 'Invalid\|uninitialised\|definitely lost in\|indirectly lost in' "$T/$name.vg" | head -40
    elif [ "$rc" != "$want" ]; then
        no "$name: exit $rc, expected $want: $(head -3 "$T/$name.err")"
    else
        ok
    fi
}

# valgrind must be able to run the binary: else build the portable copy
$VG -q "$M" route --router topk --logits tests/fixtures/errors/good.npy --plan "$T/probe.csv" \
    >/dev/null 2>"$T/probe.err"
if grep -q 'SIGILL\|Illegal opcode\|unhandled instruction' "$T/probe.err"; then
    VB="$BUILD-valgrind"
    echo "t_memcheck: $M uses instructions valgrind cannot run (-march=native); building $VB/moesim with CFLAGS=\"-O1 -g\""
    if ! ${MAKE:-make} --no-print-directory -j"$(getconf _NPROCESSORS_ONLN 2>/dev/null || echo 1)" \
        B="$VB" CFLAGS="-O1 -g" "$VB/moesim" >"$T/build.log" 2>&1; then
        no "build of $VB/moesim failed: $(tail -5 "$T/build.log")"
        finish
    fi
    M="$VB/moesim"
fi

# ---- a tiny sweep: 2 routers x 2 capacity factors, 1 batch, and its report ----
tiny_spec "$T/v.ini" t_memcheck "topk gshard" - c
vg sweep 0 "$M" run "$T/v.ini" --db "$T/v.db" --no-plots --set experiment.tokens=32 \
    --set experiment.batches=1 --set shape.s.d=8 --set shape.s.f=16 --set shape.s.E=4 \
    --set experiment.error_tokens=8
n=$(sqlite3 "$T/v.db" 'SELECT count(*) FROM points' 2>/dev/null)
[ "$n" = 4 ] && ok || no "sweep stored '$n' points, expected 4 (2 routers x 2 capacity factors)"
vg report 0 "$M" report "$T/v.db"

# ---- moesim route on the real layer (a committed NumPy-reference case) ----
c=tests/fixtures/route/layer_topk_drops
args=$(sed "s# \([A-Za-z0-9_]*\.npy\)# $c/\1#g" "$c/cmd")
# shellcheck disable=SC2086
vg route 0 "$M" route $args --plan "$T/p.csv" --metrics "$T/m.json" --output "$T/y.npy"
[ -s "$T/p.csv" ] && [ -s "$T/m.json" ] && [ -s "$T/y.npy" ] && ok || no "route wrote no plan, metrics or output"

# ---- trace info on a small committed trace ----
vg trace 0 "$M" trace info tests/fixtures/traces/mixtral/a_routing.jsonl

# ---- error paths free what they allocated ----
vg err_spec 1 "$M" run "$T/v.ini" --db "$T/e.db" --no-plots --set router.topk.k=9
vg err_nan 1 "$M" route --router topk --logits tests/fixtures/errors/nan.npy --plan "$T/e.csv"
vg err_trunc 1 "$M" route --router switch --logits tests/fixtures/errors/truncated.npy \
    --plan "$T/e.csv"
[ ! -e "$T/e.db" ] && [ ! -e "$T/e.csv" ] && ok || no "an error path left an output file"

finish
