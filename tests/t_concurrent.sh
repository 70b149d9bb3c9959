#!/bin/sh
# t_concurrent.sh: two or three `moesim run` of the same spec on one database at the same time.
# Each point is checked under the write lock before it is stored, and a writer waits for the
# other's lock, so every run exits 0, each point is stored once, and the database equals an
# uninterrupted single run (compare --rtol 0 --atol 0). A point found stored by the other run
# is reported ("stored meanwhile by another run on this database: skipped"); whether that
# happens depends on timing, so it is counted, not required.
NAME=t_concurrent
. tests/lib.sh
make_tmp
t=$tmp
tiny_spec "$t/c.ini" conc "topk switch gshard ec soft" g cl
"$M" run "$t/c.ini" --db "$t/one.db" --no-plots >"$t/one.out" 2>&1
check "the single run ($(tail -3 "$t/one.out"))" test $? = 0
skips=0
for round in 1 2 3; do
    db=$t/two$round.db
    "$M" run "$t/c.ini" --db "$db" --no-plots >"$t/a$round.out" 2>&1 & pa=$!
    "$M" run "$t/c.ini" --db "$db" --no-plots >"$t/b$round.out" 2>&1 & pb=$!
    "$M" run "$t/c.ini" --db "$db" --no-plots >"$t/c$round.out" 2>&1 & pc=$!
    wait $pa; ra=$?
    wait $pb; rb=$?
    wait $pc; rc=$?
    check "round $round: first run exits 0 ($(tail -2 "$t/a$round.out"))" test $ra = 0
    check "round $round: second run exits 0 ($(tail -2 "$t/b$round.out"))" test $rb = 0
    check "round $round: third run exits 0 ($(tail -2 "$t/c$round.out"))" test $rc = 0
    lacks "round $round: no raw constraint error" "$t/b$round.out" "UNIQUE constraint"
    status "round $round: the database equals the single run" 0 "$t/cmp$round.out" \
        "$M" compare "$t/one.db" "$db" --rtol 0 --atol 0
    s=$(cat "$t/a$round.out" "$t/b$round.out" "$t/c$round.out" | grep -c 'stored meanwhile by another run')
    skips=$((skips + s))
done
if command -v sqlite3 >/dev/null 2>&1; then
    same "each point stored once" "$(sqlite3 "$t/two1.db" 'SELECT count(*) - count(DISTINCT config_key) FROM points')" 0
else
    skip 1 "sqlite3 is not installed"
fi
echo "t_concurrent: note: $skips points found stored by a concurrent run over 3 rounds"
finish
