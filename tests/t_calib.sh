#!/bin/sh
# t_calib.sh: `moesim calibrate` and the cluster model's prediction of the real expert-parallel
# runs, run by tests/run.sh with MOESIM=<build>/moesim and BUILD=<build>. Skipped (counted) when
# mpirun is absent or moesim was built without MPI (no BUILD/tests/mpi_ep_check).
#
# For P = 2 and 4 ranks (oversubscribed on CI's 2 cores, as tests/t_mpi.sh runs them):
#   1. `mpirun -np P moesim calibrate --ranks P --repeats 30 --out lb.ini` fits alpha and beta
#      on this machine's loopback all-to-all (message sizes 16 B to 64 KiB per peer: the
#      expert-parallel run below sends at most 64 tokens x 2 claims x 16 floats = 8 KiB) and
#      the layer's local work of each phase, through the first quartile of each size's repeats,
#      once cold (every repeat after a flush of the lines it touches) and once warm (each repeat
#      after the last), with the size of the last cache level (cache_mb);
#   2. the sparse routers of tests/t_mpi.sh's sweep (tests/lib.sh ep_spec: T = 64, d = 16,
#      E = 8, two capacity factors, two sources) run with --expert-parallel over the same P
#      ranks, with that section as their cluster (dispatch = per_claim, contiguous placement,
#      1 warm-up batch and 8 measured), so that one run stores both the measured dispatch and
#      combine times of the layer (batches.time_dispatch_s and time_combine_s, rank 0's clock)
#      and the model's prediction of them (cluster_points.t_dispatch_s, t_combine_s);
#   3. the prediction is checked against the measurement, taken as the calibration takes its
#      repeats: the median over the 20 points of the prediction over the first quartile of the
#      160 measured batches lies within a factor F = 3 (1/3 <= ratio <= 3), for dispatch and
#      for combine.
# F = 3 was stated before the first comparison was run, from the model's assumptions then, and
# has not been changed since. The variation measured with the model of that time (cold terms
# only) and the same measurement, ten runs at a load average of 10.7 to 23 on the 2-core development machine
# (docs/cluster.md has the tables): ratios 0.78 to 1.28 on 2 ranks (a margin of 2.3x or more to
# the factor), 0.41 to 2.48 on 4 ranks sharing 2 cores (a margin of 1.2x at the high end),
# where the calibrated latency itself moved from 5.5 to 18.2 us between calibrations; the fit
# of each third of a calibration's repeats gave alphas within 9% of each other on 2 ranks and
# within 23% on 4 ranks in five runs of six (5.5 to 9.7 us in the sixth).
# On 2026-12-06 (a quieter host, load 0.1-1.5) the 2-rank dispatch check read 2.2 to 3.3 with
# the model's cold terms only, failing in about one CI run of three: this run's model is tiny
# (d = 16, f = 32, 64 tokens), its whole step stays in the cache, and the measured local work
# (about 1 us a dispatch, all-to-all included) is the warm one, not the cold benchmark's 2.6 us.
# Since then calibrate also writes the warm terms, and the model takes them for a node whose
# step fits in its last cache level (here about 60 KB of 32 MB; docs/cluster.md): five runs
# then gave ratios 1.04-1.07 (2 ranks, dispatch), 0.98-1.03 (combine), 0.92-1.05 and 1.06-1.12
# (4 ranks). F was not changed.
# The checks can fail: MOESIM_CALIB_LATENCY_X=K multiplies the calibrated section's latency by
# K before the run; K = 10 failed all four checks (ratios 4.2 to 6.2), K = 0.1 the two 4-rank
# checks (0.14; on 2 ranks the prediction is mostly the local work, ratios 1.16 and 0.57). With
# the warm terms: K = 10 3.6 to 10, all four failed; K = 0.1 0.28 and 0.20 on 4 ranks, failed.
# They are skipped (counted, the message names the load) when the 1-minute load average at the
# start of a rank count's calibration exceeds 4 x the online processors: other processes then
# decide the timings (the check states a property of this machine's own cost, not of its load).
# MOESIM_CALIB=1 (`make calib-check`) runs them whatever the load.
# Under the sanitizers (an instrumented moesim: BUILD names an asan build, or the binary holds
# the AddressSanitizer runtime) the timings compare instrumented packing with an uninstrumented
# MPI library, so the 4 factor checks are skipped (counted); every other check runs.
# Also: calibrate refuses a job of one rank and a --ranks that does not match the job.
# Prints "t_calib: N passed, N failed" last.
# It runs alone in both of make test's passes (the marker below): its factor checks compare this
# machine's timings, and its calibrations fit them in every pass. In the sanitizer pass it used
# to run beside other tests, and on 2026-12-06 two CI runs failed there: the 4-rank calibration
# (3 repeats a size, 4 ranks on 2 cores, another test's jobs running, load 3.2) stopped with
# "all-to-all: the fitted time does not grow with the bytes" in the second (the first kept only
# mpirun's notice of the exit), a fit calibrate rightly refuses to write. Alone, 20 such
# calibrations under AddressSanitizer passed, 10 of them beside a busy loop; beside two busy
# loops one of 6 with 30 repeats failed the same way.
# run.sh: alone
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
cores=$(getconf _NPROCESSORS_ONLN 2>/dev/null || echo 1)

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
# Under the sanitizers, where no timing is compared, 3 repeats and 2 batches a point suffice.
reps=30 nb=9
[ "$san" = 1 ] && reps=3 nb=2
ep_spec ep.ini t_calib "topk switch gshard ec hash" "$nb" "clusters = loopback\nwarmup_batches = 1"

# median of the numbers on stdin
median() { quantile 0.5; }
# the Q-quantile of the numbers on stdin, interpolated as GSL's gsl_stats_quantile_from_sorted_data
# (what moesim calibrate uses): position (n - 1) Q between the two nearest sorted values
quantile() { sort -g | awk -v q="$1" '{v[NR - 1] = $1} END {if (NR == 0) {print "nan"; exit}
    h = (NR - 1) * q; i = int(h); d = h - i; x = (i + 1 < NR) ? v[i] + d * (v[i + 1] - v[i]) : v[i]
    printf "%.6g\n", x}'; }
# within PRED MEAS: 1 when 1/F <= PRED/MEAS <= F
within() { awk -v p="$1" -v m="$2" -v f="$F" 'BEGIN {r = m > 0 ? p / m : -1;
    print (r >= 1 / f && r <= f) ? 1 : 0}'; }

for n in 2 4; do
    load=$(cut -d' ' -f1 /proc/loadavg 2>/dev/null || echo 0)
    busy=$(awk -v l="$load" -v c="$cores" 'BEGIN {print (l > 4 * c) ? 1 : 0}')
    if mpi "$n" "$MOESIM" calibrate --ranks "$n" --repeats "$reps" --max-bytes 65536 \
        --out lb$n.ini >cal$n.out 2>&1; then ok; else
        # moesim's own message first (mpirun's notice of the exit follows it)
        bad "calibrate -np $n: $(grep -m 3 -E 'moesim: |ERROR: ' cal$n.out) $(tail -3 cal$n.out)"
        skip 5 "calibrate -np $n failed"; continue
    fi
    same "-np $n: section [cluster.loopback] for $n devices, alpha >= 0, beta > 0, local work cold and warm, cache, cores" \
        "$(awk '/^\[cluster.loopback\]/ {s = 1} $1 == "devices_per_node" {d = $3}
        $1 == "intra_gbps" {g = $3} $1 == "intra_latency_us" {l = $3} $1 == "dispatch" {p = $3}
        $1 ~ /^(warm_)?(un)?pack_(latency_us|row_ns|gbps)$/ {k++; if ($3 < 0) neg++}
        $1 == "cache_mb" {m = ($3 > 0)} $1 == "cores" {c = $3}
        END {print s, d, (g > 0), (l >= 0), p, k, neg + 0, m + 0, c}' lb$n.ini)" \
        "1 $n 1 1 per_claim 12 0 1 $cores"
    grep -E '^all-to-all:|us per call' cal$n.out | sed "s/^/t_calib: -np $n /"
    # MOESIM_CALIB_LATENCY_X=K: the section's latency multiplied by K, a deliberately wrong
    # model that shows the factor checks fail (docs/cluster.md)
    awk -v k="${MOESIM_CALIB_LATENCY_X:-1}" '$1 ~ /_latency_us$/ && $1 !~ /pack/ {$3 = $3 * k}
        {print}' lb$n.ini >lbx$n.ini
    cat ep.ini lbx$n.ini >run$n.ini
    if mpi "$n" "$MOESIM" run run$n.ini --db ep$n.db --no-plots \
        --expert-parallel >run$n.out 2>&1; then ok; else
        bad "run -np $n --expert-parallel: $(tail -5 run$n.out)"; skip 3 "the run failed"
        continue
    fi
    same "-np $n: a cluster_points row per point" "$(q ep$n.db "SELECT count(*) FROM points p
        JOIN cluster_points c ON c.point = p.id WHERE c.devices = $n")" 20
    for ph in dispatch combine; do
        pred=$(q ep$n.db "SELECT t_${ph}_s FROM cluster_points" | median)
        meas=$(q ep$n.db "SELECT time_${ph}_s FROM batches WHERE batch >= 1" | quantile 0.25)
        echo "t_calib: $n ranks, $ph: predicted $pred s (median over points), measured $meas s" \
            "(first quartile of the batches), ratio" \
            "$(awk -v p="$pred" -v m="$meas" 'BEGIN {printf "%.3g", p / m}'), load $load"
        if [ $san = 1 ]; then
            skip 1 "-np $n $ph: timings of a sanitizer build are not the machine's"
        elif [ "${MOESIM_CALIB:-0}" != 1 ] && [ "$busy" = 1 ]; then
            skip 1 "-np $n $ph: load average $load above 4 x $cores processors"
        else
            same "-np $n: predicted $ph within x$F of the measured ($pred s, $meas s)" \
                "$(within "$pred" "$meas")" 1
        fi
    done
done

finish
