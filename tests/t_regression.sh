#!/bin/sh
# t_regression.sh: regression tests on recorded metrics; tests/run.sh runs it with
# MOESIM=<build>/moesim and BUILD=<build>.
#  1. every experiments/regression/*.ini is rerun and compared with results/regression/NAME.tsv
#     (moesim compare, default tolerances); specs marked "; needs: traces" are skipped, with a
#     message, when the traces are absent; the others run without them (MOESIM_TRACES empty).
#  2. determinism: the same spec and seed with OPENBLAS_NUM_THREADS=1 and =2, and with every
#     sweep axis reversed, give bit-identical routing metrics (compare --rtol 0); the same thread
#     count in another sweep order gives bit-identical everything (--rtol 0 --atol 0).
#     Two OpenBLAS kernels (OPENBLAS_CORETYPE=Prescott, 128-bit SSE3, and SkylakeX or Haswell)
#     give bit-identical routing metrics (--rtol 0) and output errors within atol 1e-6.
#  3. a deliberately perturbed router (BUILD/moesim-perturb: topk's first gate + 1e-3) makes the
#     comparison fail and name the metric and the router; the unperturbed rerun passes.
#  4. compare itself, on edited recorded files: another expert GEMM backend noted, counts exact, the tolerance of each metric class
#     at its boundary, --rtol/--atol, missing and extra points and metrics, --record round trip,
#     no timestamps/paths/timings in a recorded file, malformed files named with their line.
#  5. re-recording (experiments/regression/record.sh, i.e. make record) into a scratch folder
#     prints what changed and rewrites the file; a second run reports it unchanged.
# Prints "t_regression: N passed, N failed[, N skipped]" last.
NAME=t_regression
. tests/lib.sh
PERTURB=$BUILD/moesim-perturb
make_tmp
traces=${MOESIM_TRACES:-../shared/data/traces}
mkdir -p "$tmp/no-traces"
syn=experiments/regression/synthetic.ini

# run_spec MOESIM SPEC DB [ARGS...]: run a regression spec (traces only if it needs them)
run_spec() {
    bin=$1 spec=$2 db=$3; shift 3
    tdir=$tmp/no-traces
    grep -q '^; needs: traces' "$spec" && tdir=$traces
    MOESIM_TRACES=$tdir "$bin" run "$spec" --db "$db" --no-plots "$@" >"$db.log" 2>&1
}

# ---- 1. every regression experiment against its recorded metrics ----
nspecs=0
for spec in experiments/regression/*.ini; do
    name=$(basename "$spec" .ini)
    rec=results/regression/$name.tsv
    check "$rec is recorded (make record)" test -f "$rec"
    if grep -q '^; needs: traces' "$spec" && [ ! -d "$traces" ]; then
        skip 3 "$name: it needs the recorded traces under $traces (absent)"
        continue
    fi
    nspecs=$((nspecs + 1))
    run_spec "$MOESIM" "$spec" "$tmp/$name.db"
    check "$name runs ($(tail -5 "$tmp/$name.db.log"))" test $? = 0
    [ -f "$rec" ] || continue
    # routing metrics do not depend on the BLAS kernel (fixed-order gate); output errors are
    # fp32 GEMMs and may differ in their last bits on another kernel, within their tolerance
    want=$(sed -n 's/^blas_core\t//p' "$rec")
    have=$(sqlite3 "$tmp/$name.db" 'SELECT group_concat(DISTINCT blas_core) FROM points')
    [ "$name" = synthetic ] && syn_core=$have && syn_want=$want
    # ... and what ran the expert GEMMs (libxsmm with its target, or OpenBLAS)
    [ "$name" = synthetic ] && syn_gemm_want=$(sed -n 's/^expert_gemm\t//p' "$rec") &&
        syn_gemm=$(sqlite3 "$tmp/$name.db" "SELECT group_concat(DISTINCT substr(blas_library,
            instr(blas_library, '; expert GEMMs ') + 15)) FROM points")
    status "$name matches $rec (make record re-records after an intended change)" 0 \
        "$tmp/$name.cmp" "$MOESIM" compare "$rec" "$tmp/$name.db"
    contains "$name: compare says so" "$tmp/$name.cmp" "no drift"
done
check "at least the synthetic and the in-repository recorded experiments ran" test "$nspecs" -ge 2
# the provenance names what ran the expert GEMMs, whose last bits the output errors carry
check "every point's blas_library names its expert GEMM backend (libxsmm or OpenBLAS)" test \
    "$(sqlite3 "$tmp/synthetic.db" "SELECT count(*) FROM points WHERE blas_library NOT LIKE
       '%; expert GEMMs libxsmm %' AND blas_library NOT LIKE '%; expert GEMMs OpenBLAS'")" = 0
check "synthetic.tsv names its expert GEMM backend" test -n "$syn_gemm_want"
# the tests below compare with the tracked synthetic.tsv: byte for byte only on its BLAS kernel
# and its expert GEMM backend (the output errors' last bits depend on both)
same_core=1
if [ "$syn_core" != "$syn_want" ]; then
    same_core=0
    skip 2 "BLAS core $syn_core, not $syn_want: the byte-for-byte checks of the recorded file"
elif [ "$syn_gemm" != "$syn_gemm_want" ]; then
    same_core=0
    skip 2 "expert GEMMs $syn_gemm, not $syn_gemm_want: the byte-for-byte checks of the recorded file"
fi
# no baseline without its experiment
for rec in results/regression/*.tsv; do
    check "$rec has its spec" test -f "experiments/regression/$(basename "$rec" .tsv).ini"
done

# ---- 2. determinism: thread count and sweep order ----
# 1280 tokens: large enough for the gate (1280,32) x (32,8) to be split over two threads (it
# stays on one below 2^20 multiply-adds); when the gate was a threaded OpenBLAS sgemm, 1 vs 2
# threads drifted in 123 of these 126 points (1024 and 1536 tokens happened not to).
big="--set experiment.tokens=1280"
rev="--set experiment.routers=dense,dsv3_bias,sinkhorn,base,soft_moe,hash_balanced,hash,expert_choice,gshard_raw,gshard,switch,topk_noisy,topk_token_major,topk_probs,topk_bpr,topk
--set experiment.capacity_factors=1.5,1.0,0.5 --set experiment.distributions=zipf_ids,clustered_zipf,gaussian"
# shellcheck disable=SC2086
OPENBLAS_NUM_THREADS=1 run_spec "$MOESIM" "$syn" "$tmp/t1.db" $big
check "1-thread run ($(tail -3 "$tmp/t1.db.log"))" test $? = 0
# shellcheck disable=SC2086
OPENBLAS_NUM_THREADS=2 run_spec "$MOESIM" "$syn" "$tmp/t2.db" $big $rev
check "2-thread run, axes reversed ($(tail -3 "$tmp/t2.db.log"))" test $? = 0
# shellcheck disable=SC2086
OPENBLAS_NUM_THREADS=1 run_spec "$MOESIM" "$syn" "$tmp/t3.db" $big $rev
check "1-thread run, axes reversed ($(tail -3 "$tmp/t3.db.log"))" test $? = 0
q1='SELECT router || " " || capacity_factor || " " || distribution FROM points WHERE id = 1'
check "the reversed sweep ran in another order" \
    test "$(sqlite3 "$tmp/t1.db" "$q1")" != "$(sqlite3 "$tmp/t3.db" "$q1")"
check "the first run stored 1 BLAS thread" \
    test "$(sqlite3 "$tmp/t1.db" 'SELECT DISTINCT blas_threads FROM points')" = 1
if [ "$(nproc 2>/dev/null || echo 1)" -ge 2 ]; then
    check "the second run stored 2 BLAS threads" \
        test "$(sqlite3 "$tmp/t2.db" 'SELECT DISTINCT blas_threads FROM points')" = 2
else
    echo "t_regression: note: one CPU, OpenBLAS may cap the 2-thread run at 1 thread"
fi
status "1 vs 2 threads and reversed order: routing metrics bit-identical (--rtol 0)" 0 \
    "$tmp/threads.cmp" "$MOESIM" compare "$tmp/t1.db" "$tmp/t2.db" --rtol 0
status "same threads, reversed order: everything bit-identical (--rtol 0 --atol 0)" 0 \
    "$tmp/order.cmp" "$MOESIM" compare "$tmp/t1.db" "$tmp/t3.db" --rtol 0 --atol 0
contains "order: every value compared" "$tmp/order.cmp" "no drift: "

# ---- 2b. the OpenBLAS kernel: the gate logits are moesim's own fixed-order sums (sim/gate.c),
# so routing metrics are bit-identical across kernels; output errors come from fp32 expert GEMMs
# whose kernels round differently, compared within atol 1e-6 (their class's atol; --rtol 0 sets
# every relative tolerance to 0) ----
core2=
grep -qw avx2 /proc/cpuinfo 2>/dev/null && grep -qw fma /proc/cpuinfo 2>/dev/null && core2=Haswell
grep -qw avx512f /proc/cpuinfo 2>/dev/null && core2=SkylakeX
if [ -n "$core2" ]; then
    # shellcheck disable=SC2086
    OPENBLAS_CORETYPE=Prescott run_spec "$MOESIM" "$syn" "$tmp/k1.db" $big
    check "Prescott-kernel run ($(tail -3 "$tmp/k1.db.log"))" test $? = 0
    # shellcheck disable=SC2086
    OPENBLAS_CORETYPE=$core2 run_spec "$MOESIM" "$syn" "$tmp/k2.db" $big
    check "$core2-kernel run ($(tail -3 "$tmp/k2.db.log"))" test $? = 0
    check "the runs stored different BLAS cores" test \
        "$(sqlite3 "$tmp/k1.db" 'SELECT DISTINCT blas_core FROM points')" != \
        "$(sqlite3 "$tmp/k2.db" 'SELECT DISTINCT blas_core FROM points')"
    status "Prescott vs $core2 kernel: routing metrics bit-identical (--rtol 0)" 0 \
        "$tmp/kernels.cmp" "$MOESIM" compare "$tmp/k1.db" "$tmp/k2.db" --rtol 0
    contains "kernels: every value compared" "$tmp/kernels.cmp" "no drift: "
else
    skip 5 "no AVX2 + FMA: only one OpenBLAS kernel family to compare"
fi

# ---- 3. a deliberately perturbed router ----
check "the perturbed build exists ($PERTURB; make builds it with the tests)" test -x "$PERTURB"
run_spec "$PERTURB" "$syn" "$tmp/perturbed.db"
check "perturbed run ($(tail -3 "$tmp/perturbed.db.log"))" test $? = 0
# shellcheck disable=SC2086
status "the perturbed router fails the comparison" 1 "$tmp/perturbed.cmp" \
    "$MOESIM" compare results/regression/synthetic.tsv "$tmp/perturbed.db"
contains "perturbed: the drift table names the metric" "$tmp/perturbed.cmp" "importance_cv2"
contains "perturbed: and the per-expert importance" "$tmp/perturbed.cmp" "importance[e]"
contains "perturbed: and the output error" "$tmp/perturbed.cmp" "output_error_dense"
contains "perturbed: names the router" "$tmp/perturbed.cmp" "drifted points by router: topk 9,"
lacks "perturbed: no other router drifted" "$tmp/perturbed.cmp" "switch cf="
lacks "perturbed: no count drifted (a 1e-3 gate nudge moves no token)" "$tmp/perturbed.cmp" "kept["
contains "perturbed: the error line" "$tmp/perturbed.cmp" "moesim: error: metrics drifted"
contains "perturbed: the hint names the re-record command" "$tmp/perturbed.cmp" "make record"
# topk's 5 configurations x 3 cfs x 3 distributions
contains "perturbed: 45 points drifted" "$tmp/perturbed.cmp" "in 45 of 126 points"
run_spec "$MOESIM" "$syn" "$tmp/rerun.db"
# shellcheck disable=SC2086
status "the unperturbed rerun passes" 0 "$tmp/rerun.cmp" \
    "$MOESIM" compare results/regression/synthetic.tsv "$tmp/rerun.db"
status "perturbed vs unperturbed databases differ too" 1 "$tmp/pr.cmp" \
    "$MOESIM" compare "$tmp/rerun.db" "$tmp/perturbed.db"

# ---- 4. compare on edited recorded files ----
base=$tmp/base.tsv
status "--record writes a recorded file" 0 "$tmp/rec.out" \
    "$MOESIM" compare --record "$tmp/rerun.db" "$base"
[ $same_core = 1 ] && check "the recorded file equals the tracked one byte for byte" \
    cmp -s "$base" results/regression/synthetic.tsv
status "--record of a recorded file" 0 "$tmp/rec2.out" \
    "$MOESIM" compare --record "$base" "$tmp/again.tsv"
check "recording a recorded file reproduces it" cmp -s "$base" "$tmp/again.tsv"
status "a recorded file matches its database bit for bit" 0 "$tmp/rt.cmp" \
    "$MOESIM" compare "$base" "$tmp/rerun.db" --rtol 0 --atol 0
for word in created_at git_rev time_ wall_s tokens_per_s gflops blas_threads /tmp /work; do
    lacks "no timestamps, paths or timings in a recorded file" "$base" "$word"
done

# edit POINT_PATTERN METRIC AWK_EXPR OUT: copy $base, replacing the value of METRIC in the first
# point whose key matches POINT_PATTERN by AWK_EXPR of the old value v
edit() {
    awk -v pat="$1" -v m="$2" -v out="$4" 'BEGIN { FS = OFS = "\t" }
        $1 == "point" { inp = (!done && index($2, pat) > 0) }
        inp && $1 == "" && $2 == m { v = $3 + 0; $3 = sprintf("%.17g", '"$3"'); done = 1; inp = 0 }
        { print > out }' "$base"
}
pt="router=switch type=switch opts={capacity_factor=1/1} cf=1.0 distribution=gaussian"
edit "$pt" "kept[0]" "v + 1" "$tmp/count.tsv"
check "edit: one count changed" test "$(diff "$base" "$tmp/count.tsv" | grep -c '^>')" = 1
status "a count off by one is drift" 1 "$tmp/count.cmp" "$MOESIM" compare "$base" "$tmp/count.tsv"
contains "count: names the metric" "$tmp/count.cmp" "kept[0]"
contains "count: names the point" "$tmp/count.cmp" "switch cf=1.0 gaussian/s T=256 b=2 seed=7"
contains "count: exact tolerance" "$tmp/count.cmp" "exact"
# 126 points x (30 scalar metrics and their _std, 3 x 8 loads, 9 + 2 histogram bins) = 11970
contains "count: one value in one point" "$tmp/count.cmp" "DRIFT: 1 of 11970 values in 1 of 126 points"
status "counts stay exact under --rtol" 1 "$tmp/count2.cmp" \
    "$MOESIM" compare "$base" "$tmp/count.tsv" --rtol 0.5
edit "$pt" "load_imbalance" "v * (1 + 1e-12)" "$tmp/r12.tsv"
edit "$pt" "load_imbalance" "v * (1 + 1e-7)" "$tmp/r7.tsv"
check "edit: the routing metric changed" test "$(diff "$base" "$tmp/r12.tsv" | grep -c '^>')" = 1
status "a routing metric within rtol 1e-9 passes" 0 "$tmp/r12.cmp" \
    "$MOESIM" compare "$base" "$tmp/r12.tsv"
status "... but not under --rtol 0" 1 "$tmp/r12b.cmp" "$MOESIM" compare "$base" "$tmp/r12.tsv" --rtol 0
status "a routing metric off by 1e-7 relative is drift" 1 "$tmp/r7.cmp" \
    "$MOESIM" compare "$base" "$tmp/r7.tsv"
contains "routing: names the metric" "$tmp/r7.cmp" "load_imbalance"
contains "routing: rel diff" "$tmp/r7.cmp" "1.00e-07"
status "--rtol 1e-6 accepts it" 0 "$tmp/r7b.cmp" "$MOESIM" compare "$base" "$tmp/r7.tsv" --rtol 1e-6
edit "$pt" "output_error_dense" "v + 5e-7" "$tmp/o1.tsv"
edit "$pt" "output_error_dense" "v + 1e-4" "$tmp/o2.tsv"
status "an output error within 1e-6 + 1e-6 rel passes" 0 "$tmp/o1.cmp" \
    "$MOESIM" compare "$base" "$tmp/o1.tsv"
status "... but not under --rtol 0 --atol 0" 1 "$tmp/o1b.cmp" \
    "$MOESIM" compare "$base" "$tmp/o1.tsv" --rtol 0 --atol 0
status "an output error off by 1e-4 is drift" 1 "$tmp/o2.cmp" "$MOESIM" compare "$base" "$tmp/o2.tsv"
contains "output: names the metric" "$tmp/o2.cmp" "output_error_dense"
status "--atol 1e-3 accepts it" 0 "$tmp/o2b.cmp" "$MOESIM" compare "$base" "$tmp/o2.tsv" --atol 1e-3
# a null on one side
awk -v pat="$pt" 'BEGIN { FS = OFS = "\t" } $1 == "point" { inp = index($2, pat) > 0 }
    inp && $2 == "z_loss" { $3 = "null" } { print }' "$base" >"$tmp/null.tsv"
status "a value not stored on one side is drift" 1 "$tmp/null.cmp" \
    "$MOESIM" compare "$base" "$tmp/null.tsv"
contains "null: shown" "$tmp/null.cmp" "null"
# a point missing, a point extra, a metric missing
awk -v pat="$pt" 'BEGIN { FS = "\t" } $1 == "point" { skip = index($2, pat) > 0 } !skip' \
    "$base" >"$tmp/less.tsv"
status "a missing point is drift" 1 "$tmp/less.cmp" "$MOESIM" compare "$base" "$tmp/less.tsv"
contains "missing point: named with its full key" "$tmp/less.cmp" "missing in the candidate point: $pt"
contains "missing point: counted" "$tmp/less.cmp" "1 points missing in the candidate, 0 extra"
status "an extra point is drift" 1 "$tmp/more.cmp" "$MOESIM" compare "$tmp/less.tsv" "$base"
contains "extra point: named" "$tmp/more.cmp" "extra in the candidate point: $pt"
grep -v "	aux_loss_std	" "$base" >"$tmp/fewer.tsv"
status "a metric missing in the candidate is drift" 1 "$tmp/fewer.cmp" \
    "$MOESIM" compare "$base" "$tmp/fewer.tsv"
contains "missing metric: named" "$tmp/fewer.cmp" "aux_loss_std"
# malformed input
status "a missing file is an error" 1 "$tmp/e1" "$MOESIM" compare "$tmp/nope.tsv" "$base"
contains "missing file: named" "$tmp/e1" "$tmp/nope.tsv"
printf 'hello\n' >"$tmp/junk.tsv"
status "a foreign file is an error" 1 "$tmp/e2" "$MOESIM" compare "$tmp/junk.tsv" "$base"
contains "foreign file: said so, with its line" "$tmp/e2" "not a moesim recorded metrics file (no \"moesim-metrics<TAB>1\" line) ($tmp/junk.tsv:1)"
# a baseline from the other backend than this machine's (OpenBLAS here unless libxsmm runs)
other=OpenBLAS
[ "$syn_gemm" = OpenBLAS ] && other="libxsmm 1.17.0 (cpx)"
sed "s/^expert_gemm\t.*/expert_gemm\t$other/" "$base" >"$tmp/gemm.tsv"
status "another expert GEMM backend is no drift" 0 "$tmp/gemm.cmp" \
    "$MOESIM" compare "$tmp/gemm.tsv" "$base"
contains "compare notes the other backend" "$tmp/gemm.cmp" \
    "note: the baseline's expert GEMMs ran on $other, the candidate's on $syn_gemm"
vl=$(grep -n "^$(printf '\t')" "$base" | head -1 | cut -d: -f1) # the first value line
sed "${vl}s/\t[^\t]*\$/\t12abc/" "$base" >"$tmp/badval.tsv"
status "a malformed value is an error" 1 "$tmp/e3" "$MOESIM" compare "$base" "$tmp/badval.tsv"
contains "malformed value: file and line" "$tmp/e3" "value is not a number, inf, -inf or null ($tmp/badval.tsv:$vl)"
{ head -"$vl" "$base"; sed -n '/^point/{p;q;}' "$base"; } >"$tmp/dup.tsv"
status "a point twice is an error" 1 "$tmp/e4" "$MOESIM" compare "$tmp/dup.tsv" "$base"
contains "duplicate point: said so" "$tmp/e4" "point stored twice"
status "one file only is a usage error" 1 "$tmp/e5" "$MOESIM" compare "$base"
status "a negative tolerance is an error" 1 "$tmp/e6" "$MOESIM" compare "$base" "$base" --rtol -1
contains "negative tolerance: named" "$tmp/e6" "--rtol"
status "recording an empty database is an error" 1 "$tmp/e7" \
    sh -c "sqlite3 '$tmp/rerun.db' 'DELETE FROM points' && '$MOESIM' compare --record '$tmp/rerun.db' '$tmp/empty.tsv'"
contains "empty database: said so" "$tmp/e7" "no points to record"
check "nothing written for an empty database" test ! -e "$tmp/empty.tsv"
status "--help" 0 "$tmp/help" "$MOESIM" compare --help
contains "--help documents the re-record command" "$tmp/help" "make record"

# ---- 5. re-recording prints what changed ----
mkdir -p "$tmp/results"
cp results/regression/synthetic.tsv "$tmp/results/synthetic.tsv"
status "record.sh with the perturbed router" 0 "$tmp/rec1.out" \
    sh experiments/regression/record.sh "$PERTURB" "$tmp/results" synthetic
contains "record: prints the drift table" "$tmp/rec1.out" "drifted points by router: topk 9,"
contains "record: says it updated the file" "$tmp/rec1.out" "$tmp/results/synthetic.tsv: updated"
if cmp -s "$tmp/results/synthetic.tsv" results/regression/synthetic.tsv; then
    bad "record: the file did not change"
else
    ok
fi
status "record.sh back with the real router" 0 "$tmp/rec2.out" \
    sh experiments/regression/record.sh "$MOESIM" "$tmp/results" synthetic
[ $same_core = 1 ] && check "record: the file is back to the tracked one" \
    cmp -s "$tmp/results/synthetic.tsv" results/regression/synthetic.tsv
status "record.sh again" 0 "$tmp/rec3.out" \
    sh experiments/regression/record.sh "$MOESIM" "$tmp/results" synthetic
contains "record: unchanged the second time" "$tmp/rec3.out" "$tmp/results/synthetic.tsv: unchanged"

finish
