#!/bin/sh
# t_db_readers.sh: the commands that only read a results database (report, plot, compare) on
# databases they cannot or must not change, and on crafted contents:
#   - in a read-only folder (a read-only bind mount when this test may mount, else a chmod 555
#     folder run as user nobody; skipped with a count when neither is possible) they work and
#     leave no -wal or -shm file; in a writable folder they leave none either;
#   - `moesim report` escapes control characters from the database (no terminal escape
#     reaches the terminal), in the table and in --csv;
#   - `moesim compare` treats infinity as a value: inf against a finite value is drift, inf
#     against inf is not; `compare --record` writes inf as "inf" and reads it back.
# Prints "t_db_readers: N passed, N failed[, N skipped]" last.
NAME=t_db_readers
. tests/lib.sh
make_tmp
export MOESIM_PLOTS=$REPO/plots
tiny_spec "$tmp/r.ini" r "topk switch" g c
"$MOESIM" run "$tmp/r.ini" --db "$tmp/r.db" --no-plots >/dev/null 2>&1
check "the sweep ran" test -s "$tmp/r.db"

# readers DIR LABEL [RUN...]: report, plot and compare on DIR/r.db (run through RUN, e.g. as
# another user) succeed, change nothing and leave no -wal/-shm file
readers() {
    dir=$1 label=$2; shift 2
    sum=$(cksum <"$dir/r.db")
    status "$label: report" 0 "$tmp/o1" "$@" "$MOESIM" report "$dir/r.db"
    contains "$label: report lists the points" "$tmp/o1" "(8 configurations;"
    status "$label: plot" 0 "$tmp/o2" "$@" "$MOESIM" plot "$dir/r.db" --out "$tmp/charts_$label"
    status "$label: compare" 0 "$tmp/o3" "$@" "$MOESIM" compare "$dir/r.db" "$tmp/r.db"
    same "$label: no -wal/-shm left" "$(ls "$dir")" "r.db"
    same "$label: database unchanged" "$(cksum <"$dir/r.db")" "$sum"
}
mkdir "$tmp/rw" "$tmp/ro" "$tmp/charts_writable" "$tmp/charts_ro"
chmod 777 "$tmp/charts_ro"
cp "$tmp/r.db" "$tmp/rw/r.db"
readers "$tmp/rw" writable
cp "$tmp/r.db" "$tmp/ro/r.db"
if mount --bind "$tmp/ro" "$tmp/ro" 2>/dev/null; then
    cleanup_extra='umount "$tmp/ro" 2>/dev/null'
    if mount -o remount,ro,bind "$tmp/ro" 2>/dev/null && ! touch "$tmp/ro/x" 2>/dev/null; then
        readers "$tmp/ro" ro
    else
        skip 7 "read-only folder: cannot remount a bind mount read-only here"
    fi
    umount "$tmp/ro"
    cleanup_extra=:
elif [ "$(id -u)" != 0 ]; then
    chmod 555 "$tmp/ro"
    readers "$tmp/ro" ro
    chmod 755 "$tmp/ro"
elif setpriv --reuid=65534 --regid=65534 --clear-groups "$MOESIM" report --help >/dev/null 2>&1; then
    chmod 755 "$tmp"
    chmod 644 "$tmp/r.db"
    chmod 555 "$tmp/ro"
    readers "$tmp/ro" ro setpriv --reuid=65534 --regid=65534 --clear-groups
    chmod 755 "$tmp/ro"
else
    skip 7 "read-only folder: cannot mount, and cannot run moesim as user nobody"
fi

# ---- report escapes control characters ----
cp "$tmp/r.db" "$tmp/esc.db"
q "$tmp/esc.db" "UPDATE points SET distribution = 'g' || char(27) || ']0;owned' || char(7) || char(27) || '[2J' || char(10) || 'x' || char(155) || 'y' WHERE distribution = 'g'"
"$MOESIM" report "$tmp/esc.db" >"$tmp/rep" 2>&1
same "report of a crafted database: exit" $? 0
same "report: no ESC, BEL or C1 byte" "$(LC_ALL=C grep -c "$(printf '[\033\007]')" "$tmp/rep")" 0
same "report: no CSI byte" "$(LC_ALL=C grep -c "$(printf '\302\233')" "$tmp/rep")" 0
contains "report: the escapes shown" "$tmp/rep" 'g\e]0;owned\x07\e[2J\nx\x9by'
"$MOESIM" report "$tmp/esc.db" --csv >"$tmp/rep" 2>&1
same "report --csv: no ESC byte" "$(LC_ALL=C grep -c "$(printf '\033')" "$tmp/rep")" 0
same "report --csv: one line per point and the header" "$(wc -l <"$tmp/rep")" 9

# ---- compare and infinity ----
"$MOESIM" compare --record "$tmp/r.db" "$tmp/base.tsv" >/dev/null 2>&1
cp "$tmp/r.db" "$tmp/inf.db"
key=$(q "$tmp/inf.db" "SELECT config_key FROM points ORDER BY config_key LIMIT 1")
q "$tmp/inf.db" "UPDATE points SET load_imbalance = 9e999 WHERE config_key = '$key'"
same "inf stored" "$(q "$tmp/inf.db" "SELECT load_imbalance FROM points WHERE config_key = '$key'")" Inf
status "compare: finite vs inf is drift" 1 "$tmp/c1" "$MOESIM" compare "$tmp/base.tsv" "$tmp/inf.db"
contains "compare: names the drifted metric" "$tmp/c1" "load_imbalance"
status "compare: inf vs finite is drift" 1 "$tmp/c2" "$MOESIM" compare "$tmp/inf.db" "$tmp/r.db"
status "compare: inf vs inf is no drift" 0 "$tmp/c3" "$MOESIM" compare "$tmp/inf.db" "$tmp/inf.db"
status "compare --record with inf" 0 "$tmp/c4" "$MOESIM" compare --record "$tmp/inf.db" "$tmp/inf.tsv"
same "recorded as inf" "$(grep -c "$(printf '^\tload_imbalance\tinf$')" "$tmp/inf.tsv")" 1
status "the recorded inf reads back: no drift" 0 "$tmp/c5" "$MOESIM" compare "$tmp/inf.tsv" "$tmp/inf.db"
status "the recorded inf reads back: drift against finite" 1 "$tmp/c6" "$MOESIM" compare "$tmp/inf.tsv" "$tmp/base.tsv"
sed "s/^\(\tload_imbalance\t\)inf$/\1-inf/" "$tmp/inf.tsv" >"$tmp/ninf.tsv"
status "-inf vs inf is drift" 1 "$tmp/c7" "$MOESIM" compare "$tmp/ninf.tsv" "$tmp/inf.tsv"
sed "s/^\(\tload_imbalance\t\)inf$/\1infinity/" "$tmp/inf.tsv" >"$tmp/bad.tsv"
status "a value spelt otherwise is refused" 1 "$tmp/c8" "$MOESIM" compare "$tmp/bad.tsv" "$tmp/inf.tsv"
ln=$(grep -n "$(printf '^\tload_imbalance\tinfinity$')" "$tmp/bad.tsv" | cut -d: -f1)
contains "a value spelt otherwise: names file and line" "$tmp/c8" "value is not a number, inf, -inf or null ($tmp/bad.tsv:$ln)"
finish
