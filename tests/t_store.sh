#!/bin/sh
# t_store.sh: migrations of the results database (sim/store.c). A database of schema version 1
# (tests/data/store_v1.sql: dumped from a database the version-1 binary wrote, see its header),
# one of version 2 (tests/data/store_v2.sql, the same point written by the version-2 binary) and
# one of version 5 (tests/data/store_v5.sql, by the version-5 binary) and one of version 6
# (tests/data/store_v6.sql, by the version-6 binary) are upgraded in place to
# version 7 by `moesim run` and keep their point; read-only commands (report, compare) read them
# without writing; the upgraded schema equals a new database's; a database holding only
# the table `bench` of an older `moesim bench` gets the rest of the schema around its rows. Run
# with MOESIM=<build>/moesim.
MOESIM=${MOESIM:-./moesim}
case "$MOESIM" in /*) ;; *) MOESIM="$(pwd)/$MOESIM" ;; esac
cd "$(dirname "$0")/.." || exit 1
pass=0 fail=0
ok() { pass=$((pass + 1)); }
bad() { fail=$((fail + 1)); echo "FAIL t_store: $1"; }
check() { d=$1; shift; if "$@"; then ok; else bad "$d"; fi; }
q() { sqlite3 "$@"; }
tmp=$(mktemp -d /tmp/moesim_t_store.XXXXXX) || exit 1
trap 'rm -rf "$tmp"' EXIT
if ! command -v sqlite3 >/dev/null; then
    echo "t_store: skipped: the sqlite3 command is missing (1 skipped)"
    echo "t_store: 0 passed, 0 failed"; exit 0
fi

# ---- version 1 -> 5 ----
db=$tmp/v1.db
q "$db" < tests/data/store_v1.sql
check "fixture is version 1" test "$(q "$db" 'PRAGMA user_version')" = 1
key=$(q "$db" 'SELECT config_key FROM points')
# read-only: report reads it and leaves it at version 1
"$MOESIM" report "$db" > "$tmp/report" 2>&1
check "report reads a version-1 database" grep -q topk "$tmp/report"
check "report leaves version 1" test "$(q "$db" 'PRAGMA user_version')" = 1
# the same spec and point: the upgrade keeps it, so the run skips it as stored (resume)
"$MOESIM" run experiments/regression/recorded.ini --set experiment.routers=topk \
    --set experiment.capacity_factors=1.25 --set experiment.distributions=popularity_instruct \
    --set experiment.tokens=32 --set experiment.batches=1 --db "$db" --no-plots \
    > "$tmp/out" 2> "$tmp/err"
rc=$?
check "run on a version-1 database succeeds: $(cat "$tmp/err")" test $rc = 0
check "upgraded to version 7" test "$(q "$db" 'PRAGMA user_version')" = 7
check "the stored point is kept and skipped" grep -q "1 stored" "$tmp/err"
check "same point" test "$(q "$db" 'SELECT config_key FROM points')" = "$key"
check "its batch and loads kept" test "$(q "$db" 'SELECT count(*) FROM batches')|$(q "$db" \
    'SELECT count(*) FROM expert_loads')" = "1|8"
for t in ep_ranks bench train_points steps step_loads cluster_points devices nodes_per_token node_traffic groups_touched; do
    check "table $t added" test "$(q "$db" "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = '$t'")" = 1
done
for v in ep_summary train_summary; do
    check "view $v added" test "$(q "$db" "SELECT count(*) FROM sqlite_master WHERE type = 'view' AND name = '$v'")" = 1
done
# the upgraded schema has the same tables and columns as a new database of version 7
new=$tmp/new.db
"$MOESIM" run experiments/regression/recorded.ini --set experiment.routers=topk \
    --set experiment.capacity_factors=1.25 --set experiment.distributions=popularity_instruct \
    --set experiment.tokens=32 --set experiment.batches=1 --db "$new" --no-plots >/dev/null 2>&1
cols() { q "$1" "SELECT m.name || '.' || p.name || ':' || p.type FROM sqlite_master m,
    pragma_table_info(m.name) p WHERE m.type IN ('table', 'view') ORDER BY m.name, p.cid"; }
cols "$db" > "$tmp/cols_upgraded"; cols "$new" > "$tmp/cols_new"
check "upgraded schema (1 -> 3) = new schema" cmp -s "$tmp/cols_upgraded" "$tmp/cols_new"

# ---- version 2 -> 5 ----
db2=$tmp/v2.db
q "$db2" < tests/data/store_v2.sql
check "fixture is version 2" test "$(q "$db2" 'PRAGMA user_version')" = 2
key2=$(q "$db2" 'SELECT config_key FROM points')
"$MOESIM" report "$db2" > "$tmp/report" 2>&1
check "report reads a version-2 database" grep -q topk "$tmp/report"
check "report leaves version 2" test "$(q "$db2" 'PRAGMA user_version')" = 2
"$MOESIM" run experiments/regression/recorded.ini --set experiment.routers=topk \
    --set experiment.capacity_factors=1.25 --set experiment.distributions=popularity_instruct \
    --set experiment.tokens=32 --set experiment.batches=1 --db "$db2" --no-plots \
    > "$tmp/out" 2> "$tmp/err"
rc=$?
check "run on a version-2 database succeeds: $(cat "$tmp/err")" test $rc = 0
check "2 -> 7: version 7" test "$(q "$db2" 'PRAGMA user_version')" = 7
check "2 -> 3: the stored point is kept and skipped" grep -q "1 stored" "$tmp/err"
check "2 -> 3: same point" test "$(q "$db2" 'SELECT config_key FROM points')" = "$key2"
check "2 -> 3: its batch and loads kept" test "$(q "$db2" 'SELECT count(*) FROM batches')|$(q \
    "$db2" 'SELECT count(*) FROM expert_loads')" = "1|8"
cols "$db2" > "$tmp/cols_upgraded2"
check "upgraded schema (2 -> 3) = new schema" cmp -s "$tmp/cols_upgraded2" "$tmp/cols_new"

# ---- version 5 -> 6: the metrics of version 6 ----
db5=$tmp/v5.db
q "$db5" < tests/data/store_v5.sql
check "fixture is version 5" test "$(q "$db5" 'PRAGMA user_version')" = 5
key5=$(q "$db5" 'SELECT config_key FROM points')
"$MOESIM" report "$db5" > "$tmp/report" 2>&1
check "report reads a version-5 database: $(tail -1 "$tmp/report")" grep -q topk "$tmp/report"
"$MOESIM" compare "$db5" "$db5" > "$tmp/cmp5" 2>&1
check "compare reads a version-5 database: $(tail -1 "$tmp/cmp5")" grep -q "no drift" "$tmp/cmp5"
check "read-only commands leave version 5" test "$(q "$db5" 'PRAGMA user_version')" = 5
"$MOESIM" run experiments/regression/recorded.ini --set experiment.routers=topk \
    --set experiment.capacity_factors=1.25 --set experiment.distributions=popularity_instruct \
    --set experiment.tokens=32 --set experiment.batches=1 --db "$db5" --no-plots \
    > "$tmp/out" 2> "$tmp/err"
rc=$?
check "run on a version-5 database succeeds: $(cat "$tmp/err")" test $rc = 0
check "5 -> 7: version 7" test "$(q "$db5" 'PRAGMA user_version')" = 7
check "5 -> 6: the stored point is kept and skipped" grep -q "1 stored" "$tmp/err"
check "5 -> 6: same point" test "$(q "$db5" 'SELECT config_key FROM points')" = "$key5"
check "5 -> 6: its old rows read NULL in the new columns" test \
    "$(q "$db5" 'SELECT count(*) FROM points WHERE seq_aux_loss IS NULL AND balancedness_std IS NULL')|$(q \
    "$db5" 'SELECT count(*) FROM batches WHERE groups_touched_mean IS NULL')" = "1|1"
check "5 -> 6: the views over seeds carry the new metrics" test \
    "$(q "$db5" 'SELECT count(*) FROM pragma_table_info('"'"'over_seeds'"'"') WHERE name IN
    ('"'"'seq_aux_loss'"'"', '"'"'overflow_expert2_ci95'"'"', '"'"'balancedness_batch_sd'"'"')')" = 3
# the same columns as a new database (in another order: version 5 had run and config_group last)
scols() { cols "$1" | sort; }
scols "$db5" > "$tmp/cols_upgraded5"; scols "$new" > "$tmp/cols_new5"
check "upgraded schema (5 -> 6) = new schema, as sets" cmp -s "$tmp/cols_upgraded5" "$tmp/cols_new5"
# the migration is idempotent: run again at version 5, it changes nothing
q "$db5" 'PRAGMA user_version = 5'
"$MOESIM" run experiments/regression/recorded.ini --set experiment.routers=topk \
    --set experiment.capacity_factors=1.25 --set experiment.distributions=popularity_instruct \
    --set experiment.tokens=32 --set experiment.batches=1 --db "$db5" --no-plots \
    > /dev/null 2> "$tmp/err"
check "5 -> 7 twice: $(cat "$tmp/err")" test "$(q "$db5" 'PRAGMA user_version')" = 7
scols "$db5" > "$tmp/cols_twice"
check "5 -> 6 twice: same schema" cmp -s "$tmp/cols_twice" "$tmp/cols_new5"
# a new point stores its groups-touched histogram (G = 1: tokens with 0 or 1 group)
check "a new database stores groups_touched rows" test \
    "$(q "$new" 'SELECT count(*) || '"'"'|'"'"' || sum(tokens) FROM groups_touched')" = "2|32"

# ---- version 6 -> 7: the column of flops_expert_executed ----
db6=$tmp/v6.db
q "$db6" < tests/data/store_v6.sql
check "fixture is version 6" test "$(q "$db6" 'PRAGMA user_version')" = 6
check "fixture has no flops_expert_executed" test "$(q "$db6" "SELECT count(*) FROM
    pragma_table_info('points') WHERE name LIKE 'flops_expert_executed%'")" = 0
"$MOESIM" report "$db6" > "$tmp/report6" 2>&1
check "report reads a version-6 database: $(tail -1 "$tmp/report6")" grep -q topk "$tmp/report6"
check "read-only commands leave version 6" test "$(q "$db6" 'PRAGMA user_version')" = 6
# one new point (cf 1.5) next to the stored one (cf 1.25, skipped)
"$MOESIM" run experiments/regression/recorded.ini --set experiment.routers=topk \
    --set experiment.capacity_factors="1.25 1.5" --set experiment.distributions=popularity_instruct \
    --set experiment.tokens=32 --set experiment.batches=1 --db "$db6" --no-plots \
    > "$tmp/out" 2> "$tmp/err"
check "run on a version-6 database succeeds: $(cat "$tmp/err")" test $? = 0
check "6 -> 7: version 7" test "$(q "$db6" 'PRAGMA user_version')" = 7
check "6 -> 7: the stored point is kept and skipped" grep -q "1 stored" "$tmp/err"
# the old row reads NULL; the new one (no pad_to_capacity) executes its useful FLOPs
check "6 -> 7: flops_expert_executed NULL for the old point, = useful for the new" test \
    "$(q "$db6" "SELECT count(*) FROM points WHERE capacity_factor = 1.25 AND
    flops_expert_executed IS NULL")|$(q "$db6" "SELECT count(*) FROM points WHERE
    capacity_factor = 1.5 AND flops_expert_executed = flops_expert_useful AND
    flops_expert_useful > 0")" = "1|1"
check "6 -> 7: over_seeds carries it" test "$(q "$db6" "SELECT count(*) FROM
    pragma_table_info('over_seeds') WHERE name = 'flops_expert_executed_ci95'")" = 1
scols "$db6" > "$tmp/cols_upgraded6"
check "upgraded schema (6 -> 7) = new schema, as sets" cmp -s "$tmp/cols_upgraded6" "$tmp/cols_new5"

# a version newer than the binary is still refused
q "$db" 'PRAGMA user_version = 99'
"$MOESIM" report "$db" > /dev/null 2> "$tmp/err"
check "newer version refused" grep -q "schema version 99 is newer" "$tmp/err"

# ---- a database with only an older bench table (no version) ----
bdb=$tmp/bench.db
q "$bdb" "CREATE TABLE bench (run TEXT NOT NULL, git_rev TEXT, blas_library TEXT,
    blas_core TEXT, blas_threads INTEGER, openblas_coretype TEXT, torch TEXT,
    quick INTEGER NOT NULL, repeats INTEGER NOT NULL, config TEXT NOT NULL, router TEXT,
    E INTEGER, k INTEGER, n INTEGER NOT NULL, d INTEGER, f INTEGER, cf REAL, capacity INTEGER,
    kept INTEGER, metric TEXT NOT NULL, unit TEXT, median REAL, q1 REAL, q3 REAL, min REAL,
    max REAL, PRIMARY KEY (run, config, n, metric));
    INSERT INTO bench (run, quick, repeats, config, n, metric, median)
    VALUES ('old', 1, 1, 'E8k2', 1024, 'time_layer', 0.5);"
"$MOESIM" run experiments/regression/recorded.ini --set experiment.routers=topk \
    --set experiment.capacity_factors=1.25 --set experiment.distributions=popularity_instruct \
    --set experiment.tokens=32 --set experiment.batches=1 --db "$bdb" --no-plots \
    > /dev/null 2> "$tmp/err"
rc=$?
check "run on a bench-only database: $(cat "$tmp/err")" test $rc = 0
check "bench-only database: version 7" test "$(q "$bdb" 'PRAGMA user_version')" = 7
check "bench rows kept" test "$(q "$bdb" "SELECT median FROM bench WHERE run = 'old'")" = 0.5
check "point stored next to them" test "$(q "$bdb" 'SELECT count(*) FROM points')" = 1

echo "t_store: $pass passed, $fail failed"
[ "$fail" = 0 ]
