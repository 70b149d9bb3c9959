#!/bin/sh
# t_run.sh: `moesim run` and `moesim report` end to end on small shapes (tests/run.sh runs it with
# MOESIM=<build>/moesim). A sweep stores the expected rows; a sweep killed with SIGKILL part-way
# and rerun ends with exactly the rows of an uninterrupted run (timings aside), without
# duplicates; SIGINT stops cleanly with exit 130; --force reruns and replaces; a read-only
# folder, a locked database, a newer schema version and a foreign file give clear errors and
# leave the database as it was. Prints "t_run: N passed, N failed[, N skipped]" last.
NAME=t_run
. tests/lib.sh
holder=
cleanup_extra='[ -n "$holder" ] && kill "$holder" 2>/dev/null; chmod -R u+w "$tmp" 2>/dev/null'
make_tmp
chmod 755 "$tmp"

# 4 routers (topk, switch, gshard at 2 capacity factors; soft_moe once: dense, no capacity)
# x 2 distributions = (3*2 + 1) * 2 = 14 points, E = 8, 2 batches each.
tiny_spec "$tmp/t.ini" t_run "topk switch gshard soft" g c
spec=$tmp/t.ini

# ---- a small sweep: expected rows ----
db=$tmp/a.db
"$MOESIM" run "$spec" --db "$db" --no-plots >"$tmp/out" 2>"$tmp/err"
check "small sweep exits 0 ($(cat "$tmp/err"))" test $? = 0
check "14 points" test "$(q "$db" 'SELECT count(*) FROM points')" = 14
check "14 x 8 expert_loads rows" test "$(q "$db" 'SELECT count(*) FROM expert_loads')" = 112
check "14 x 2 batches rows" test "$(q "$db" 'SELECT count(*) FROM batches')" = 28
check "14 x (8+1) experts_per_token rows" \
    test "$(q "$db" 'SELECT count(*) FROM experts_per_token')" = 126
check "soft_moe stored once with capacity factor none" \
    test "$(q "$db" "SELECT count(*) FROM points WHERE router='soft' AND capacity_factor='none' AND capacity_factor_value IS NULL")" = 2
check "schema version 7" test "$(q "$db" 'PRAGMA user_version')" = 7
check "WAL journal" test "$(q "$db" 'PRAGMA journal_mode')" = wal
check "histogram sums to tokens x batches" \
    test "$(q "$db" 'SELECT count(*) FROM (SELECT point, sum(tokens) s FROM experts_per_token GROUP BY point) WHERE s != 256')" = 0
check "14 x (1+1) groups_touched rows (one expert group), each summing to tokens x batches" \
    test "$(q "$db" 'SELECT count(*) FROM groups_touched')|$(q "$db" 'SELECT count(*) FROM (SELECT point, sum(tokens) s FROM groups_touched GROUP BY point) WHERE s != 256')" = "28|0"
check "summary view" test "$(q "$db" 'SELECT count(*) FROM summary')" = 14
contains "summary table printed" "$tmp/out" "router"

# rerun: everything is stored, nothing runs
"$MOESIM" run "$spec" --db "$db" --no-plots >"$tmp/out" 2>"$tmp/err"
check "rerun exits 0" test $? = 0
contains "rerun skips all" "$tmp/err" "0 points run, 14 skipped"
check "rerun adds no rows" test "$(q "$db" 'SELECT count(*) FROM points')" = 14

# --set adds points (a new seed), the old ones stay
"$MOESIM" run "$spec" --db "$db" --no-plots --set experiment.seeds="1 2" >"$tmp/out" 2>"$tmp/err"
check "--set seeds exits 0" test $? = 0
contains "--set runs only the new seed" "$tmp/err" "14 points run, 14 skipped"
check "28 points after a second seed" test "$(q "$db" 'SELECT count(*) FROM points')" = 28

# ---- report ----
"$MOESIM" report "$db" --csv >"$tmp/csv" 2>"$tmp/err"
check "report --csv exits 0" test $? = 0
# one row per configuration: the 28 points are 14 configurations with 2 seeds each
check "csv: header + 14 configurations" test "$(wc -l <"$tmp/csv")" = 15
contains "csv header" "$tmp/csv" "router,cf_text,distribution"
"$MOESIM" report "$db" >"$tmp/out" 2>"$tmp/err"
check "report exits 0" test $? = 0
contains "report table" "$tmp/out" "(14 configurations"
"$MOESIM" report "$db" --points --csv >"$tmp/csv" 2>"$tmp/err"
check "csv --points: header + 28 rows" test "$(wc -l <"$tmp/csv")" = 29
contains "csv --points header" "$tmp/csv" "id,run,router,capacity_factor,distribution"

# ---- --force reruns and replaces ----
maxid=$(q "$db" 'SELECT max(id) FROM points')
q "$db" 'SELECT config_key, load_imbalance, assignment_drop_rate, output_error_dense FROM points ORDER BY config_key' >"$tmp/before"
"$MOESIM" run "$spec" --db "$db" --no-plots --force >"$tmp/out" 2>"$tmp/err"
check "--force exits 0" test $? = 0
contains "--force runs all 14" "$tmp/err" "14 points run, 0 skipped"
check "--force keeps 28 points" test "$(q "$db" 'SELECT count(*) FROM points')" = 28
check "--force replaced the 14 (new ids)" \
    test "$(q "$db" "SELECT count(*) FROM points WHERE id > $maxid")" = 14
check "--force leaves no orphan loads" \
    test "$(q "$db" 'SELECT count(*) FROM expert_loads WHERE point NOT IN (SELECT id FROM points)')" = 0
q "$db" 'SELECT config_key, load_imbalance, assignment_drop_rate, output_error_dense FROM points ORDER BY config_key' >"$tmp/after"
check "--force reproduces the metrics" cmp -s "$tmp/before" "$tmp/after"

# ---- killed with SIGKILL part-way, rerun = uninterrupted run ----
# heavier points (4096 tokens, d 64) so that the kill lands part-way: 42 points
heavy="--set experiment.tokens=4096 --set shape.s.d=64 --set shape.s.f=128 --set experiment.seeds=1,2,3"
ref=$tmp/ref.db
# shellcheck disable=SC2086
"$MOESIM" run "$spec" --db "$ref" --no-plots $heavy >/dev/null 2>&1
check "reference run stores 42 points" test "$(q "$ref" 'SELECT count(*) FROM points')" = 42
kdb=$tmp/k.db
# shellcheck disable=SC2086
"$MOESIM" run "$spec" --db "$kdb" --no-plots $heavy >/dev/null 2>&1 &
pid=$!
n=0
i=0
while [ $i -lt 400 ]; do
    n=$(q "$kdb" 'SELECT count(*) FROM points' 2>/dev/null || echo 0)
    [ "${n:-0}" -ge 3 ] 2>/dev/null && break
    sleep 0.02
    i=$((i + 1))
done
kill -9 "$pid" 2>/dev/null
wait "$pid" 2>/dev/null
n=$(q "$kdb" 'SELECT count(*) FROM points')
check "killed part-way ($n of 42 stored)" test "$n" -ge 3 -a "$n" -lt 42
check "killed database passes integrity_check" test "$(q "$kdb" 'PRAGMA integrity_check')" = ok
# shellcheck disable=SC2086
"$MOESIM" run "$spec" --db "$kdb" --no-plots $heavy >/dev/null 2>"$tmp/err"
check "resume exits 0" test $? = 0
contains "resume skips what was stored" "$tmp/err" "$((42 - n)) points run, $n skipped"
check "resumed: 42 points, no duplicates" \
    test "$(q "$kdb" 'SELECT count(*), count(DISTINCT config_key) FROM points')" = "42|42"
cols="config_key, router, router_type, router_options, capacity_factor, capacity_factor_value,
 distribution, source, source_params, shape, d, f, E, k, m, activation, tokens, batches, seed,
 error_tokens, capacity, num_entries, n_tokens, load_imbalance, load_imbalance_std,
 kept_load_imbalance, load_cv, assignment_drop_rate, assignment_drop_rate_std, token_drop_rate,
 importance_cv2, aux_loss, z_loss, flops_gate, flops_expert_useful, flops_expert_padded,
 flops_soft_dispatch, flops_soft_combine, output_error_dense, output_error_dense_std,
 output_error_dropless"
q "$ref" "SELECT $cols FROM points ORDER BY config_key" >"$tmp/ref.points"
q "$kdb" "SELECT $cols FROM points ORDER BY config_key" >"$tmp/k.points"
check "resumed points equal the uninterrupted run" cmp -s "$tmp/ref.points" "$tmp/k.points"
child="SELECT p.config_key, l.expert, l.assigned, l.kept, l.importance FROM expert_loads l JOIN points p ON p.id = l.point ORDER BY 1, 2"
q "$ref" "$child" >"$tmp/ref.loads"
q "$kdb" "$child" >"$tmp/k.loads"
check "resumed expert loads equal" cmp -s "$tmp/ref.loads" "$tmp/k.loads"
child="SELECT p.config_key, b.batch, b.load_imbalance, b.assignment_drop_rate, b.output_error_dense, b.output_error_dropless FROM batches b JOIN points p ON p.id = b.point ORDER BY 1, 2"
q "$ref" "$child" >"$tmp/ref.batches"
q "$kdb" "$child" >"$tmp/k.batches"
check "resumed batch rows equal" cmp -s "$tmp/ref.batches" "$tmp/k.batches"
child="SELECT p.config_key, h.experts, h.tokens FROM experts_per_token h JOIN points p ON p.id = h.point ORDER BY 1, 2"
q "$ref" "$child" >"$tmp/ref.ept"
q "$kdb" "$child" >"$tmp/k.ept"
check "resumed histograms equal" cmp -s "$tmp/ref.ept" "$tmp/k.ept"
check "resumed child row counts" \
    test "$(q "$kdb" 'SELECT (SELECT count(*) FROM expert_loads), (SELECT count(*) FROM batches), (SELECT count(*) FROM experts_per_token)')" = "336|84|378"

# ---- SIGINT: clean stop, non-zero exit, resumable ----
idb=$tmp/i.db
# shellcheck disable=SC2086
"$MOESIM" run "$spec" --db "$idb" --no-plots $heavy >/dev/null 2>"$tmp/err" &
pid=$!
i=0
while [ $i -lt 400 ]; do
    n=$(q "$idb" 'SELECT count(*) FROM points' 2>/dev/null || echo 0)
    [ "${n:-0}" -ge 2 ] 2>/dev/null && break
    sleep 0.02
    i=$((i + 1))
done
kill -INT "$pid" 2>/dev/null
wait "$pid"
rc=$?
# 130 = 128 + SIGINT (2), what a shell reports for a process stopped by Ctrl-C
check "SIGINT exits 130 ($rc)" test "$rc" = 130
contains "SIGINT says interrupted by SIGINT" "$tmp/err" "moesim: interrupted by SIGINT: "
contains "SIGINT: the point in progress is not written" "$tmp/err" "the point in progress not written ($idb)"
check "SIGINT: no '(signal)' placeholder" test "$(grep -c "(signal)" "$tmp/err")" = 0
n=$(q "$idb" 'SELECT count(*) FROM points')
check "SIGINT leaves whole points ($n)" test "$(q "$idb" "SELECT count(*) FROM batches")" = $((n * 2))
check "SIGINT database passes integrity_check" test "$(q "$idb" 'PRAGMA integrity_check')" = ok

# ---- a read-only folder ----
# Root ignores permissions: as root the runs below drop to user nobody (setpriv), when it can
# run the binary; otherwise these checks are skipped, and say so.
as_user() { if [ "$(id -u)" = 0 ]; then setpriv --reuid=65534 --regid=65534 --clear-groups "$@"; else "$@"; fi; }
ro=$tmp/ro
mkdir "$ro"
cp "$db" "$ro/x.db"
chmod 755 "$ro"
chmod 644 "$ro/x.db" "$spec"
if as_user "$MOESIM" report --help >/dev/null 2>&1; then
    sum_before=$(cksum <"$ro/x.db")
    chmod 555 "$ro"
    as_user "$MOESIM" run "$spec" --db "$ro/new.db" --no-plots >/dev/null 2>"$tmp/err"
    check "read-only folder, new database: non-zero exit" test $? != 0
    contains "read-only folder: clear error" "$tmp/err" "cannot open the database"
    contains "read-only folder: names the file" "$tmp/err" "$ro/new.db"
    as_user "$MOESIM" run "$spec" --db "$ro/x.db" --no-plots --force >/dev/null 2>"$tmp/err"
    check "read-only folder, existing database: non-zero exit" test $? != 0
    contains "read-only folder: hint" "$tmp/err" "not writable"
    check "read-only folder: database unchanged" test "$(cksum <"$ro/x.db")" = "$sum_before"
    check "read-only folder: no new file" test ! -e "$ro/new.db"
    chmod 755 "$ro"
else
    skip 7 "read-only folder checks (running as root without setpriv to user nobody)"
fi

# ---- a locked database ----
ldb=$tmp/l.db
cp "$db" "$ldb"
rm -f "$tmp/fifo"
mkfifo "$tmp/fifo"
sqlite3 "$ldb" <"$tmp/fifo" >/dev/null 2>&1 &
holder=$!
exec 3>"$tmp/fifo"
# the holder waits for a probe below that holds the lock for a moment (without a busy timeout its
# BEGIN would fail at once and it would go on without the lock)
echo "PRAGMA busy_timeout = 30000; BEGIN EXCLUSIVE; DELETE FROM experts_per_token WHERE point = -1;" >&3
i=0
while [ $i -lt 1500 ]; do # wait until the lock is held (30 s at most: a loaded machine is slow)
    sqlite3 "$ldb" 'BEGIN IMMEDIATE; ROLLBACK;' >/dev/null 2>&1 || break
    sleep 0.02
    i=$((i + 1))
done
check "locked database: the holder took the lock" test $i -lt 1500
"$MOESIM" run "$spec" --db "$ldb" --no-plots --force >/dev/null 2>"$tmp/err"
check "locked database: non-zero exit" test $? != 0
contains "locked database: clear error" "$tmp/err" "locked"
echo "ROLLBACK;" >&3
exec 3>&-
wait "$holder"
holder=
check "locked database: points unchanged" \
    test "$(q "$ldb" 'SELECT count(*), max(id) FROM points')" = "$(q "$db" 'SELECT count(*), max(id) FROM points')"
check "locked database: integrity_check" test "$(q "$ldb" 'PRAGMA integrity_check')" = ok

# ---- a newer schema version; a foreign database ----
ndb=$tmp/n.db
cp "$db" "$ndb"
q "$ndb" 'PRAGMA user_version = 99'
sum_before=$(cksum <"$ndb")
"$MOESIM" run "$spec" --db "$ndb" --no-plots --force >/dev/null 2>"$tmp/err"
check "newer version: non-zero exit" test $? != 0
contains "newer version: clear error" "$tmp/err" "schema version 99 is newer"
check "newer version: file untouched" test "$(cksum <"$ndb")" = "$sum_before"
check "newer version: no WAL file left" test ! -s "$ndb-wal"
"$MOESIM" report "$ndb" >/dev/null 2>"$tmp/err"
check "newer version: report refuses" test $? != 0
contains "newer version: report error" "$tmp/err" "newer"
fdb=$tmp/f.db
q "$fdb" 'CREATE TABLE t (x); INSERT INTO t VALUES (1)'
"$MOESIM" run "$spec" --db "$fdb" --no-plots >/dev/null 2>"$tmp/err"
check "foreign database: non-zero exit" test $? != 0
contains "foreign database: clear error" "$tmp/err" "not a moesim results database"
check "foreign database: untouched" test "$(q "$fdb" 'SELECT count(*) FROM sqlite_master')" = 1
printf 'this is not sqlite, just text that is long enough to look like a header......\n' >"$tmp/junk.db"
"$MOESIM" run "$spec" --db "$tmp/junk.db" --no-plots >/dev/null 2>"$tmp/err"
check "junk file: non-zero exit" test $? != 0
contains "junk file: names the file" "$tmp/err" "$tmp/junk.db"

# ---- spec errors stop before anything runs ----
"$MOESIM" run "$spec" --db "$tmp/e.db" --no-plots --set router.topk.k=9 >/dev/null 2>"$tmp/err"
check "k > E: non-zero exit" test $? != 0
contains "k > E: located" "$tmp/err" "(--set:1, key router.topk.k)"
check "k > E: no database created" test ! -e "$tmp/e.db"

# ---- `moesim list metrics` names every metric the database stores ----
# (the columns of points from capacity on: every REAL column but the _std spreads)
"$MOESIM" list metrics | awk '{print $1}' >"$tmp/listed"
q "$db" "SELECT name FROM pragma_table_info('points') WHERE type = 'REAL' AND name NOT LIKE '%_std' AND cid > (SELECT cid FROM pragma_table_info('points') WHERE name = 'created_at')" >"$tmp/stored"
check "points has metric columns" test "$(wc -l <"$tmp/stored")" -ge 20
unlisted=$(grep -vxF -f "$tmp/listed" "$tmp/stored" | tr '\n' ' ')
check "list metrics lacks stored metrics: $unlisted" test -z "$unlisted"

# ---- the OPENBLAS_CORETYPE warning: once, and only when points run (not for --help, --dry-run
# or a spec error); on CPUs without AVX-512 Haswell is no loss and nothing is printed ----
WARN="moesim: warning: OPENBLAS_CORETYPE=Haswell forces 256-bit kernels on an AVX-512 CPU (about half the GEMM speed here); unset it"
OPENBLAS_CORETYPE=Haswell "$MOESIM" run --help >/dev/null 2>"$tmp/err"
check "run --help: nothing on stderr ($(cat "$tmp/err"))" test ! -s "$tmp/err"
OPENBLAS_CORETYPE=Haswell "$MOESIM" run "$spec" --dry-run >/dev/null 2>"$tmp/err"
check "run --dry-run: nothing on stderr ($(cat "$tmp/err"))" test ! -s "$tmp/err"
OPENBLAS_CORETYPE=Haswell "$MOESIM" run "$tmp/no_such.ini" >/dev/null 2>"$tmp/err"
check "missing spec: the error is the first line ($(head -1 "$tmp/err"))" \
    test "$(head -1 "$tmp/err")" = "moesim: error: cannot open spec: No such file or directory ($tmp/no_such.ini)"
OPENBLAS_CORETYPE=Haswell "$MOESIM" run "$spec" --db "$tmp/w.db" --no-plots \
    --set experiment.routers=switch --set experiment.batches=1 >/dev/null 2>"$tmp/err"
check "run with OPENBLAS_CORETYPE=Haswell exits 0" test $? = 0
if grep -qw avx512f /proc/cpuinfo 2>/dev/null; then
    check "run: the warning once, first" test "$(grep -c 'OPENBLAS_CORETYPE' "$tmp/err")" = 1 -a \
        "$(head -1 "$tmp/err")" = "$WARN"
else
    check "run: no warning without AVX-512" test "$(grep -c 'OPENBLAS_CORETYPE' "$tmp/err")" = 0
fi

finish
