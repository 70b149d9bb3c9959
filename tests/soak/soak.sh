#!/bin/sh
# soak.sh: `make soak` (not part of `make test`). Runs the 64-point sweep tests/soak/soak.ini
# into one database, kills `moesim run` with SIGKILL at SOAK_KILLS (default 200) random moments
# and restarts it each time (it resumes from the points already stored); whenever a restart
# completes the sweep, the database is checked and a fresh sweep begins. Then SOAK_PHASES
# (default 6) phases run 2 or 3 `moesim run` of the same spec at once on one fresh database,
# every second phase with one of them killed at a random moment and restarted. Every finished
# database must equal an uninterrupted run's (`moesim compare --rtol 0 --atol 0`: every metric
# bit-identical, timings aside), pass `PRAGMA integrity_check`, and hold each point once; after
# every kill the database must pass the integrity check and hold no fewer points than before.
# Prints its figures (kills, restarts, sweeps completed, points, concurrent runs, wall time) and
# "soak: PASS" or "soak: FAIL"; exits non-zero on failure.
# Environment: MOESIM (default ./moesim), SOAK_KILLS, SOAK_PHASES, SOAK_SEED (default 1: the
# random kill moments, from awk's srand), SOAK_DIR (default a fresh folder under $TMPDIR, removed
# unless the soak fails).
M=${MOESIM:-./moesim}
KILLS=${SOAK_KILLS:-200}
PHASES=${SOAK_PHASES:-6}
SEED=${SOAK_SEED:-1}
SPEC=tests/soak/soak.ini
NPOINTS=64

if ! command -v sqlite3 >/dev/null 2>&1; then
    echo "soak: the sqlite3 shell is needed (apt-get install sqlite3)"
    exit 1
fi
t=${SOAK_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/moesim_soak.XXXXXX")} || exit 1
mkdir -p "$t"
failures=0
fail() { failures=$((failures + 1)); echo "soak: FAIL: $*"; }
now_ms() { date +%s%3N; }
start=$(now_ms)

# verify DB WHAT: the database equals the uninterrupted run, is intact, holds each point once
verify() {
    ic=$(sqlite3 "$1" 'PRAGMA integrity_check' 2>&1)
    [ "$ic" = ok ] || fail "$2: integrity_check says: $ic"
    n=$(sqlite3 "$1" 'SELECT count(*), count(DISTINCT config_key) FROM points' 2>&1)
    [ "$n" = "$NPOINTS|$NPOINTS" ] || fail "$2: points (all|distinct) = $n, want $NPOINTS|$NPOINTS"
    if ! "$M" compare "$t/ref.db" "$1" --rtol 0 --atol 0 >"$t/cmp.out" 2>&1; then
        fail "$2: differs from the uninterrupted run:"
        sed 's/^/    /' "$t/cmp.out" | tail -20
    fi
}
fresh() { rm -f "$1" "$1-wal" "$1-shm" "$1-journal"; }
stored() { sqlite3 "$1" 'SELECT count(*) FROM points' 2>/dev/null || echo 0; }

# the uninterrupted run, and its wall time (the range of the kill moments)
t0=$(now_ms)
if ! "$M" run "$SPEC" --db "$t/ref.db" --no-plots >"$t/ref.out" 2>&1; then
    echo "soak: the uninterrupted run failed:"; tail -5 "$t/ref.out"; exit 1
fi
ref_ms=$(( $(now_ms) - t0 ))
[ "$ref_ms" -ge 50 ] || ref_ms=50
echo "soak: uninterrupted run of $NPOINTS points: $ref_ms ms; kill moments uniform in 0..$((ref_ms * 11 / 10)) ms (seed $SEED)"

# ---- phase 1: kills and restarts ----
# more moments than kills: a run that finishes before its moment is not a kill
awk -v n="$((KILLS * 4))" -v s="$SEED" -v ms="$ref_ms" \
    'BEGIN { srand(s); for (i = 0; i < n; i++) printf "%.3f\n", rand() * ms * 1.1 / 1000 }' \
    >"$t/delays"
db=$t/soak.db
fresh "$db"
kills=0 restarts=0 sweeps=0 finished_early=0 before=0 runs=0
while [ $kills -lt "$KILLS" ] && read -r delay; do
    [ $runs = 0 ] || restarts=$((restarts + 1))
    runs=$((runs + 1))
    "$M" run "$SPEC" --db "$db" --no-plots >"$t/run.out" 2>&1 &
    pid=$!
    sleep "$delay"
    kill -KILL "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
    rc=$?
    if [ $rc = 137 ]; then
        kills=$((kills + 1))
        if [ -e "$db" ]; then
            ic=$(sqlite3 "$db" 'PRAGMA integrity_check' 2>&1)
            [ "$ic" = ok ] || fail "after kill $kills: integrity_check says: $ic"
        fi
        after=$(stored "$db")
        [ "$after" -ge "$before" ] || fail "after kill $kills: $after points stored, $before before"
        before=$after
        continue
    fi
    if [ $rc != 0 ]; then
        fail "run $runs exited $rc (not killed):"; tail -5 "$t/run.out" | sed 's/^/    /'
        continue
    fi
    # the run finished before its kill moment: the sweep is complete
    finished_early=$((finished_early + 1))
    sweeps=$((sweeps + 1))
    verify "$db" "sweep $sweeps (after $kills kills)"
    fresh "$db"
    before=0
done <"$t/delays"
# the last sweep, finished without a kill
if "$M" run "$SPEC" --db "$db" --no-plots >"$t/run.out" 2>&1; then
    restarts=$((restarts + 1)); sweeps=$((sweeps + 1))
    verify "$db" "the last sweep (after all $kills kills)"
else
    fail "the final resume failed:"; tail -5 "$t/run.out" | sed 's/^/    /'
fi
phase1_ms=$(( $(now_ms) - start ))

# ---- phase 2: 2 or 3 runs at once on one database ----
conc=0 conc_kills=0 skipped_meanwhile=0
p=1
while [ $p -le "$PHASES" ]; do
    db=$t/conc$p.db
    fresh "$db"
    n=$(( 2 + p % 2 ))
    pids=""
    i=1
    while [ $i -le $n ]; do
        "$M" run "$SPEC" --db "$db" --no-plots >"$t/c$p.$i.out" 2>&1 &
        pids="$pids $!"
        i=$((i + 1))
    done
    conc=$((conc + n))
    if [ $((p % 2)) = 0 ]; then
        # kill the first run at a random moment, restart it while the others go on
        d=$(awk -v s="$((SEED * 1000 + p))" -v ms="$ref_ms" 'BEGIN { srand(s); printf "%.3f", rand() * ms / 2000 }')
        sleep "$d"
        first=${pids# }; first=${first%% *}
        kill -KILL "$first" 2>/dev/null
        wait "$first" 2>/dev/null
        if [ $? = 137 ]; then conc_kills=$((conc_kills + 1)); fi
        "$M" run "$SPEC" --db "$db" --no-plots >"$t/c$p.r.out" 2>&1 &
        pids="${pids# $first} $!"
        conc=$((conc + 1))
    fi
    for q in $pids; do
        wait "$q" || fail "phase $p: a concurrent run exited $? (see $t/c$p.*.out)"
    done
    skipped_meanwhile=$((skipped_meanwhile + $(cat "$t"/c$p.*.out | grep -c 'stored meanwhile by another run')))
    verify "$db" "concurrent phase $p ($n runs at once)"
    p=$((p + 1))
done
wall_ms=$(( $(now_ms) - start ))

echo "soak: spec $SPEC, $NPOINTS points per sweep"
echo "soak: kills $kills (SIGKILL), restarts $restarts, sweeps completed and checked $sweeps" \
     "($finished_early finished before their kill moment), $(( (phase1_ms + 500) / 1000 )) s"
echo "soak: concurrent phases $PHASES, concurrent runs $conc ($conc_kills killed and restarted)," \
     "points found stored meanwhile by another run: $skipped_meanwhile"
echo "soak: wall time $(( (wall_ms + 500) / 1000 )) s"
if [ $failures = 0 ]; then
    echo "soak: PASS: every database equal to the uninterrupted run (compare --rtol 0 --atol 0)," \
         "integrity_check ok, each point stored once"
    [ -n "$SOAK_DIR" ] || rm -rf "$t"
    exit 0
fi
echo "soak: FAIL: $failures checks failed (files kept in $t)"
exit 1
