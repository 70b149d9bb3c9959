#!/bin/sh
# t_plot.sh: `moesim plot` and the charts after `moesim run` (tests/run.sh runs it with
# MOESIM=<build>/moesim, from the repository root). A tiny sweep (4 routers, 2 capacity factors,
# 2 distributions) is run with --no-plots, then plotted: every chart exists as a valid non-empty
# PNG, SVG and PDF, and its data file holds the database's numbers (compared with the sqlite3
# CLI). The charts name the configuration (E, k, d, f, tokens) in a subtitle, put their x tics at
# the swept capacity factors, split into pages past 6 panel columns or 8 panel rows (a
# 120-panel sweep), honour --size, and split a router's points that differ in a key (tokens)
# into separate series.
# Errors: gnuplot missing from PATH, an empty database (schema without points; a zero-byte file),
# a SQLite file that is not a moesim database, a newer schema version, a text file, points that
# lack every metric the charts need, a missing script folder and a failing script all exit
# non-zero with one clear error line and leave no chart behind. Prints "t_plot: N passed, N
# failed" last.
NAME=t_plot
. tests/lib.sh
PLOTS="$REPO/plots"
make_tmp

if ! command -v gnuplot >/dev/null 2>&1; then
    bad "gnuplot is not installed (make deps installs gnuplot-nox)"
    finish
fi

charts="drop_rate load_imbalance flops_per_token output_error expert_loads experts_per_token throughput"

# expect_error DESCRIPTION PATTERN DB [ENV...]: `moesim plot DB --out $tmp/err_out` exits
# non-zero with one "moesim: error:" line containing PATTERN, and leaves no chart (with
# earlier=1: no temporary file; the charts drawn before the failure may stay).
earlier=
expect_error() {
    desc=$1; pat=$2; edb=$3; shift 3
    rm -rf "$tmp/err_out"
    env "$@" "$MOESIM" plot "$edb" --out "$tmp/err_out" >"$tmp/eout" 2>"$tmp/eerr"
    rc=$?
    err=$(grep '^moesim: error:' "$tmp/eerr" | head -1)
    if [ $rc -eq 0 ]; then bad "$desc: exit 0"; return; fi
    if ! printf '%s' "$err" | grep -qF -- "$pat"; then
        bad "$desc: message '$err' lacks '$pat'"; return
    fi
    if [ "$(grep -c '^moesim: error:' "$tmp/eerr")" != 1 ]; then
        bad "$desc: not one error line: $(cat "$tmp/eerr")"; return
    fi
    if [ -n "$(find "$tmp/err_out" -name '*.tmp.*' 2>/dev/null)" ] || { [ -z "$earlier" ] &&
        [ -n "$(find "$tmp/err_out" -name '*.png' -o -name '*.svg' 2>/dev/null)" ]; }; then
        bad "$desc: left a chart behind: $(ls "$tmp/err_out")"; return
    fi
    ok
}

# ---- a tiny sweep, run with --no-plots ----
# (topk, gshard, ec at cf 1.0 and 1.5; soft_moe once, capacity factor none) x 2 distributions
# = (3*2 + 1) * 2 = 14 points, E = 8.
tiny_spec "$tmp/t.ini" t_plot "topk gshard ec soft" gauss clus
db=$tmp/a.db
mkdir "$tmp/cwd"
(cd "$tmp/cwd" && "$MOESIM" run "$tmp/t.ini" --db "$db" --no-plots >"$tmp/out" 2>"$tmp/err")
check "sweep exits 0 ($(cat "$tmp/err"))" test $? = 0
check "14 points" test "$(q "$db" 'SELECT count(*) FROM points')" = 14
check "--no-plots draws nothing" test ! -e "$tmp/cwd/plots"

# ---- moesim plot: every chart, PNG and SVG ----
out=$tmp/charts
MOESIM_PLOTS= "$MOESIM" plot "$db" --out "$out" >"$tmp/out" 2>"$tmp/err"
check "plot exits 0 ($(cat "$tmp/err"))" test $? = 0
check "plot: no warning on stderr ($(cat "$tmp/err"))" test ! -s "$tmp/err"
check "plot lists 7 x 4 files written" test "$(grep -c "^$out/" "$tmp/out")" = 28
contains "plot: summary line" "$tmp/out" "7 charts from 14 points"
for c in $charts; do
    png=$out/$c.png
    if [ -s "$png" ] && [ "$(od -An -tx1 -N8 "$png" | tr -d ' \n')" = 89504e470d0a1a0a ]; then
        ok
    else
        bad "$c.png: missing, empty or not a PNG"
    fi
    # PNG width (IHDR, big-endian at byte 16): at least 1200 pixels
    w=$(od -An -tu1 -j16 -N4 "$png" 2>/dev/null | awk '{ print $1 * 16777216 + $2 * 65536 + $3 * 256 + $4 }')
    check "$c.png is at least 1200 pixels wide ($w)" test "${w:-0}" -ge 1200
    pdf=$out/$c.pdf
    check "$c.pdf is a PDF" test "$(head -c 5 "$pdf" 2>/dev/null)" = "%PDF-"
    svg=$out/$c.svg
    if [ -s "$svg" ] && grep -q '<svg' "$svg" && grep -q '</svg>' "$svg"; then
        ok
    else
        bad "$c.svg: missing, empty or not a whole SVG"
    fi
    check "$c.dat written" test -s "$out/$c.dat"
done
check "no temporary file left" test -z "$(find "$out" -name '*.tmp.*')"
contains "drop_rate.svg has the axis label" "$out/drop_rate.svg" "dropped assignments (%)"
contains "drop_rate.svg has the x label" "$out/drop_rate.svg" "capacity factor"
contains "throughput.svg has the y label" "$out/throughput.svg" "tokens/s"
contains "flops_per_token.svg names FLOPs per token" "$out/flops_per_token.svg" "FLOP per token"
contains "drop_rate.svg has a legend entry per router" "$out/drop_rate.svg" ">gshard<"
contains "data file names its columns" "$out/drop_rate.dat" \
    "# columns: distribution shape router cf x assignment_drop_rate token_drop_rate points"
contains "data file names its query" "$out/drop_rate.dat" "# query"

# ---- the data files hold the database's numbers ----
# dat_vs_db FILE NKEY "DATCOLS" SQL: SQL returns NKEY key columns then one value per column
# number in DATCOLS (columns of FILE, whose first NKEY columns are the same keys). Prints
# "<db rows> <db rows found in FILE> <FILE rows> <mismatches>"; values agree to 1e-12 relative
# (sqlite3 prints 15 digits, the data file 17); NULL is NaN in the file.
dat_vs_db() {
    q -separator '|' "$db" "$4" >"$tmp/db.rows"
    grep -v '^#' "$1" | grep . | tr -d '"' | tr ' ' '|' >"$tmp/dat.rows"
    awk -F'|' -v nk="$2" -v cols="$3" '
        function far(a, b,   d, m) {
            if (a == "NaN" || b == "") return !(a == "NaN" && b == "")
            d = a - b; if (d < 0) d = -d; m = b < 0 ? -b : b
            return d > 1e-12 * m + 1e-300
        }
        function key(   k, i) { k = $1; for (i = 2; i <= nk; i++) k = k "|" $i; return k }
        FNR == NR { n_db++; db[key()] = $0; next }
        {
            n_dat++; k = key()
            if (!(k in db)) { bad++; print "not in the database: " $0 > "/dev/stderr"; next }
            if (!(k in seen)) { seen[k] = 1; found++ }
            split(db[k], v, "|"); nc = split(cols, c, " ")
            for (j = 1; j <= nc; j++)
                if (far($(c[j]), v[nk + j])) {
                    bad++; print "differs: " $0 " vs " db[k] > "/dev/stderr"; break
                }
        }
        END { print n_db + 0, found + 0, n_dat + 0, bad + 0 }' "$tmp/db.rows" "$tmp/dat.rows"
}
cfkeys="distribution, shape, router, capacity_factor"
r=$(dat_vs_db "$out/drop_rate.dat" 4 "6 7 8" "SELECT $cfkeys, avg(assignment_drop_rate),
    avg(token_drop_rate), count(*) FROM points GROUP BY $cfkeys")
# 14 (router, cf, distribution) groups; soft_moe (cf none) is written at both ends of the range
check "drop_rate.dat = database (db rows, found, file rows, bad: $r)" test "$r" = "14 14 16 0"
r=$(dat_vs_db "$out/load_imbalance.dat" 4 "6 7" "SELECT $cfkeys, avg(load_imbalance),
    avg(kept_load_imbalance) FROM points GROUP BY $cfkeys")
check "load_imbalance.dat = database ($r)" test "$r" = "14 14 16 0"
r=$(dat_vs_db "$out/flops_per_token.dat" 4 "6 7" "SELECT $cfkeys,
    avg((flops_gate + flops_expert_useful + flops_soft_dispatch + flops_soft_combine) / n_tokens),
    avg((flops_gate + flops_expert_padded + flops_soft_dispatch + flops_soft_combine) / n_tokens)
    FROM points GROUP BY $cfkeys")
check "flops_per_token.dat = database ($r)" test "$r" = "14 14 16 0"
# the error against the router's own dropless output comes first (the top row)
r=$(dat_vs_db "$out/output_error.dat" 4 "6 7" "SELECT $cfkeys, avg(output_error_dropless),
    avg(output_error_dense) FROM points GROUP BY $cfkeys")
check "output_error.dat = database ($r)" test "$r" = "14 14 16 0"
# throughput at cf 1.0 (soft_moe: its one point), one sample per batch: tokens / batch time and
# useful FLOPs / batch time. With 2 batches the median is their mean, the nearest-rank first
# quartile (rank ceil(2/4) = 1) the smaller, the third (rank ceil(6/4) = 2) the larger.
r=$(dat_vs_db "$out/throughput.dat" 4 "6 7 8 9 10 11 12" "SELECT p.distribution, p.shape,
    p.router, p.capacity_factor, avg(b.n_tokens / b.time_total_s), min(b.n_tokens / b.time_total_s),
    max(b.n_tokens / b.time_total_s), avg(g), min(g), max(g), count(*) FROM (SELECT *,
    (flops_gate + flops_expert_useful + flops_soft_dispatch + flops_soft_combine) / time_total_s
    * 1e-9 AS g FROM batches) b JOIN points p ON p.id = b.point
    WHERE p.capacity_factor IN ('1.0', 'none') GROUP BY 1, 2, 3, 4")
check "throughput.dat = database: median and quartiles of 2 batches ($r)" test "$r" = "8 8 8 0"
contains "throughput says what its bars are" "$out/throughput.svg" "median of 2 timed batches"
# expert loads at cf 1.0 (soft_moe: its one point), ranked by assigned load (then kept, expert)
r=$(dat_vs_db "$out/expert_loads.dat" 5 "6 7 8" "SELECT p.distribution, p.shape, p.router,
    p.capacity_factor, row_number() OVER (PARTITION BY p.id ORDER BY l.assigned DESC,
    l.kept DESC, l.expert), l.assigned, l.kept, p.capacity FROM expert_loads l
    JOIN points p ON p.id = l.point WHERE p.capacity_factor IN ('1.0', 'none')")
check "expert_loads.dat = database, sorted ($r)" test "$r" = "64 64 64 0"
check "expert_loads.dat: loads sorted descending" test "$(grep -v '^#' "$out/expert_loads.dat" |
    grep . | awk '$5 > 1 && $6 > prev { bad++ } { prev = $6 } END { print bad + 0 }')" = 0
# experts per token: gshard and ec histograms up to the largest count reached per router
r=$(dat_vs_db "$out/experts_per_token.dat" 5 "7" "SELECT p.distribution, p.shape, p.router,
    p.capacity_factor, h.experts, h.tokens FROM experts_per_token h JOIN points p
    ON p.id = h.point WHERE p.router_type IN ('gshard', 'expert_choice') AND h.experts <=
    (SELECT max(h2.experts) FROM experts_per_token h2 JOIN points p2 ON p2.id = h2.point
     WHERE p2.router = p.router AND h2.tokens > 0)")
n=$(grep -v '^#' "$out/experts_per_token.dat" | grep -c .)
check "experts_per_token.dat = database ($r)" test "$r" = "$n $n $n 0" -a "$n" -ge 16
check "experts_per_token.dat: fractions sum to 1 per block" test "$(grep -v '^#' \
    "$out/experts_per_token.dat" | awk 'NF == 0 { if (s) { if (s < 0.999999 || s > 1.000001) bad++; s = 0 } next }
    { s += $6 } END { if (s < 0.999999 || s > 1.000001) bad++; print bad + 0 }')" = 0
check "soft_moe flat across the swept range (x = 1.0 and 1.5)" test "$(grep '"soft"' \
    "$out/drop_rate.dat" | awk '{ printf "%s ", $5 }')" = "1 1.5 1 1.5 "

# ---- the configuration subtitle and the x tics ----
# tiny_spec: d 16, f 32, E 8, 128 tokens, 2 batches, 1 seed; k: topk's 2 and the others' own
k_db=$(q "$db" "SELECT group_concat(k, ',') FROM (SELECT DISTINCT k FROM points ORDER BY k)")
for c in drop_rate expert_loads throughput; do
    contains "$c.svg: subtitle names the configuration" "$out/$c.svg" \
        "a.db:  E=8  k=$k_db  d=16  f=32  tokens=128  batches=2  seeds=1"
done
contains "data file: the configuration" "$out/drop_rate.dat" \
    "# configuration (chart subtitle): E=8  k=$k_db  d=16  f=32  tokens=128  batches=2  seeds=1"
# x tics at the swept capacity factors 1.0 and 1.5 (gnuplot's own tics would be 1, 1.1, ... 1.5)
contains "data file: x tics at the swept cf" "$out/drop_rate.dat" \
    "# swept capacity factors (x tics): 1,1.5"
for c in drop_rate load_imbalance flops_per_token output_error; do
    contains "$c.svg: x tic at 1.5" "$out/$c.svg" "<text> 1.5</text>"
done
# drop_rate's y tics are whole percents: a tic 1.1 would be an x tic between the swept values
lacks "drop_rate.svg: no x tic between the swept values" "$out/drop_rate.svg" "<text> 1.1</text>"

# ---- --size: PNG at 300 dpi, PDF in inches; a bad size is refused ----
# png_dims FILE: "W H" from the IHDR chunk (big-endian at bytes 16 and 20)
png_dims() { od -An -tu1 -j16 -N8 "$1" | awk '{ print $1 * 16777216 + $2 * 65536 + $3 * 256 + $4,
    $5 * 16777216 + $6 * 65536 + $7 * 256 + $8 }'; }
"$MOESIM" plot "$db" --out "$tmp/sz" --size 5x3 >"$tmp/out" 2>"$tmp/err"
check "--size 5x3 exits 0 ($(cat "$tmp/err"))" test $? = 0
# 5 in at 300 dpi = 1500 pixels, 3 in = 900; 5 x 3 in = 360 x 216 points in the PDF
# (5 in: one panel column per page, so the 2 distributions take 2 pages)
same "--size 5x3: throughput PNG pixels" "$(png_dims "$tmp/sz/throughput_p1.png")" "1500 900"
contains "--size 5x3: PDF page 360 x 216 points" "$tmp/sz/throughput_p2.pdf" "/MediaBox [ 0 0 360 216 ]"
"$MOESIM" plot "$db" --out "$tmp/szc" --size column >"$tmp/out" 2>"$tmp/err"
check "--size column exits 0 ($(cat "$tmp/err"))" test $? = 0
# column: 3.5 in = 1050 pixels wide; one panel column per page (2 distributions: 2 pages)
same "--size column: PNG width" "$(png_dims "$tmp/szc/drop_rate_p1.png" | cut -d' ' -f1)" 1050
check "--size column: drop_rate on 2 pages" test -s "$tmp/szc/drop_rate_p2.pdf" -a \
    ! -e "$tmp/szc/drop_rate_p3.png" -a ! -e "$tmp/szc/drop_rate.png"
for bad_size in 3 0x2 3x 3x100 wide; do
    status "--size $bad_size refused" 1 "$tmp/out" "$MOESIM" plot "$db" --out "$tmp/szb" \
        --size "$bad_size"
    contains "--size $bad_size: message" "$tmp/out" "bad figure size '$bad_size'"
done
check "--size refused: nothing written" test ! -e "$tmp/szb"
"$MOESIM" plot "$db" --out "$tmp/slash/" >"$tmp/out" 2>"$tmp/err"
lacks "--out DIR/: no double slash in the paths printed" "$tmp/out" "//"

# ---- a router whose points differ in a key other than cf and seed: separate series ----
cp "$db" "$tmp/mixed.db"
"$MOESIM" run "$tmp/t.ini" --db "$tmp/mixed.db" --no-plots --set experiment.tokens=64 \
    >"$tmp/out" 2>"$tmp/err"
check "second run with 64 tokens exits 0 ($(cat "$tmp/err"))" test $? = 0
"$MOESIM" plot "$tmp/mixed.db" --out "$tmp/mixed" >"$tmp/out" 2>"$tmp/err"
check "mixed token counts: plot exits 0 ($(cat "$tmp/err"))" test $? = 0
contains "mixed token counts: says the series are split" "$tmp/out" "series split by tokens"
contains "mixed token counts: a series per token count (128)" "$tmp/mixed/drop_rate.dat" \
    '"topk [tokens=128]"'
contains "mixed token counts: a series per token count (64)" "$tmp/mixed/drop_rate.dat" \
    '"topk [tokens=64]"'
lacks "mixed token counts: no merged series" "$tmp/mixed/drop_rate.dat" '"topk" '
contains "mixed token counts: subtitle" "$tmp/mixed/drop_rate.svg" "tokens=64,128"
contains "mixed token counts: legend" "$tmp/mixed/drop_rate.svg" ">gshard [tokens=64]<"

# ---- a sweep of 120 panels: pages, none past cairo's 32767-pixel limit ----
# 4 routers x 3 copies = 12 routers (rows of expert_loads), 2 distributions x 5 copies = 10
# (columns): at most 6 columns and 8 rows per page = 2 x 2 pages of expert loads, 2 pages of the
# capacity-factor charts.
cp "$db" "$tmp/big.db"
pcols=$(q "$tmp/big.db" "SELECT group_concat(name, ', ') FROM pragma_table_info('points')")
dup() { # dup OFFSET COLUMN SUFFIX MAXID: copy points below MAXID with COLUMN || SUFFIX
    sel=$(printf '%s' "$pcols" | sed "s/\bid\b/id + $1/; s/\b$2\b/$2 || '$3'/;
        s/\bconfig_key\b/config_key || '$2$3'/")
    printf 'INSERT INTO points (%s) SELECT %s FROM points WHERE id < %s;\n' "$pcols" "$sel" "$4"
    printf 'INSERT INTO expert_loads SELECT point + %s, expert, assigned, kept, importance FROM expert_loads WHERE point < %s;\n' "$1" "$4"
}
{ for n in 1 2; do dup $((n * 100)) router "_$n" 100; done
  for n in 1 2 3 4; do dup $((n * 1000)) distribution "_$n" 1000; done; } >"$tmp/big.sql"
q "$tmp/big.db" <"$tmp/big.sql"
same "120-panel sweep: 12 routers x 10 distributions" \
    "$(q "$tmp/big.db" 'SELECT count(DISTINCT router), count(DISTINCT distribution) FROM points')" "12|10"
"$MOESIM" plot "$tmp/big.db" --out "$tmp/big" >"$tmp/out" 2>"$tmp/err"
check "120-panel sweep: plot exits 0 ($(cat "$tmp/err"))" test $? = 0
for f in expert_loads_p1 expert_loads_p2 expert_loads_p3 expert_loads_p4 drop_rate_p1 drop_rate_p2; do
    check "120-panel sweep: $f.png, .svg and .pdf" test -s "$tmp/big/$f.png" -a \
        -s "$tmp/big/$f.svg" -a -s "$tmp/big/$f.pdf"
done
check "120-panel sweep: no more pages, no unpaged image" test ! -e "$tmp/big/expert_loads_p5.png" \
    -a ! -e "$tmp/big/expert_loads.png" -a ! -e "$tmp/big/drop_rate_p3.png"
big=0
for f in "$tmp/big"/*.png; do
    set -- $(png_dims "$f")
    [ "$1" -le 32767 ] && [ "$2" -le 32767 ] || big=$((big + 1))
done
check "120-panel sweep: every image within cairo's limit" test "$big" = 0
contains "120-panel sweep: pages say so" "$tmp/big/drop_rate_p2.svg" "(page 2 of 2)"
# every distribution has its panel on one of the pages
n=0
for d in gauss clus gauss_1 clus_1 gauss_2 clus_2 gauss_3 clus_3 gauss_4 clus_4; do
    cat "$tmp/big"/drop_rate_p*.svg | grep -qF "<text>$d</text>" && n=$((n + 1))
done
same "120-panel sweep: every distribution drawn" "$n" 10

# ---- moesim run draws the charts (default folder plots/out/<db name>) ----
(cd "$tmp/cwd" && MOESIM_PLOTS=$PLOTS "$MOESIM" run "$tmp/t.ini" --db "$tmp/cwd/b.db" \
    --set experiment.capacity_factors=1.0 >"$tmp/out" 2>"$tmp/err")
check "run with charts exits 0 ($(cat "$tmp/err"))" test $? = 0
n=0
for c in $charts; do [ -s "$tmp/cwd/plots/out/b/$c.png" ] && [ -s "$tmp/cwd/plots/out/b/$c.svg" ] && n=$((n + 1)); done
check "run drew 7 charts in plots/out/b ($n)" test "$n" = 7
contains "run says where the charts are" "$tmp/out" "plots/out/b/"
(cd "$tmp/cwd" && MOESIM_PLOTS=$PLOTS "$MOESIM" plot "$db" >"$tmp/out" 2>"$tmp/err")
check "plot, default folder: exits 0 ($(cat "$tmp/err"))" test $? = 0
check "plot, default folder plots/out/a" test -s "$tmp/cwd/plots/out/a/drop_rate.png"

# ---- charts a database cannot feed are skipped, the rest drawn ----
cp "$db" "$tmp/nohist.db"
q "$tmp/nohist.db" "PRAGMA foreign_keys = ON; DELETE FROM points WHERE router IN ('gshard', 'ec')"
cp -r "$out" "$tmp/nohist" # over the charts of the full sweep: the histogram must go
"$MOESIM" plot "$tmp/nohist.db" --out "$tmp/nohist" >"$tmp/out" 2>"$tmp/err"
check "no gshard/expert_choice: exits 0 ($(cat "$tmp/err"))" test $? = 0
contains "no gshard/expert_choice: says the histogram is skipped" "$tmp/err" \
    "experts_per_token skipped: no expert_choice or gshard points"
contains "no gshard/expert_choice: the earlier histogram is removed" "$tmp/err" \
    "(its earlier chart removed)"
check "no gshard/expert_choice: 6 charts" test "$(ls "$tmp/nohist"/*.png | wc -l)" = 6
check "no gshard/expert_choice: no histogram left" test ! -e "$tmp/nohist/experts_per_token.svg" \
    -a ! -e "$tmp/nohist/experts_per_token.dat"
cp "$db" "$tmp/nocf.db"
q "$tmp/nocf.db" "PRAGMA foreign_keys = ON; DELETE FROM points WHERE capacity_factor != 'none'"
"$MOESIM" plot "$tmp/nocf.db" --out "$tmp/nocf" >"$tmp/out" 2>"$tmp/err"
check "no capacity factor sweep: exits 0 ($(cat "$tmp/err"))" test $? = 0
contains "no capacity factor sweep: says so" "$tmp/err" "drop_rate skipped: no capacity factor sweep"
check "no capacity factor sweep: expert loads and throughput only" \
    test "$(cd "$tmp/nocf" && ls *.png | tr '\n' ' ')" = "expert_loads.png throughput.png "

# ---- plot --help lists every chart script (plots/NAME.gp but the shared common.gp, cf_rows.gp,
# train_rows.gp) ----
"$MOESIM" plot --help >"$tmp/help"
for gp in plots/*.gp; do
    name=$(basename "$gp" .gp)
    case $name in common | cf_rows | train_rows) continue ;; esac
    if grep -q "^  $name " "$tmp/help"; then ok; else bad "plot --help lacks the chart $name"; fi
done

# ---- errors ----
mkdir "$tmp/bin"
ln -s "$(command -v sh)" "$tmp/bin/sh"
ln -s "$(command -v sqlite3)" "$tmp/bin/sqlite3"
expect_error "gnuplot missing from PATH" "gnuplot not found on PATH" "$db" PATH="$tmp/bin"
contains "gnuplot missing: hint" "$tmp/eerr" "hint: install gnuplot-nox (make deps)"
check "gnuplot missing: no output folder" test ! -e "$tmp/err_out"

cp "$db" "$tmp/empty.db"
q "$tmp/empty.db" "PRAGMA foreign_keys = ON; DELETE FROM points"
expect_error "schema without points" "no points in the database: nothing to plot" "$tmp/empty.db"
: >"$tmp/zero.db"
expect_error "zero-byte database" "empty database: no moesim results" "$tmp/zero.db"
expect_error "no such database" \
    "cannot open the database: No such file or directory ($tmp/none.db)" "$tmp/none.db"
contains "no such database: hint names the cause, not permissions" "$tmp/eerr" \
    "hint: check the path: \`moesim run SPEC\` writes results/NAME.db"
check "no such database: not created" test ! -e "$tmp/none.db"
q "$tmp/foreign.db" 'CREATE TABLE t (x); INSERT INTO t VALUES (1)'
expect_error "SQLite file of another program" "not a moesim results database" "$tmp/foreign.db"
cp "$db" "$tmp/newer.db"
q "$tmp/newer.db" 'PRAGMA user_version = 99'
expect_error "newer schema version" "schema version 99 is newer" "$tmp/newer.db"
printf 'not a database, just text long enough to fill a header..............\n' >"$tmp/text.db"
expect_error "text file" "$tmp/text.db" "$tmp/text.db"
cp "$db" "$tmp/nometrics.db"
cols=$(q "$tmp/nometrics.db" "SELECT group_concat(name || ' = NULL', ', ') FROM pragma_table_info('points')
    WHERE type = 'REAL' AND name NOT LIKE 'capacity_factor%'")
q "$tmp/nometrics.db" "UPDATE points SET $cols; DELETE FROM expert_loads; DELETE FROM experts_per_token;
    DELETE FROM batches"
expect_error "points without metrics" "no chart can be drawn" "$tmp/nometrics.db"
expect_error "script folder missing" "gnuplot script not found" "$db" MOESIM_PLOTS="$tmp/nowhere"

# a failing script: the charts before it are whole, it leaves nothing, the error names it
cp -r "$PLOTS" "$tmp/plots_broken"
rm -rf "$tmp/plots_broken/out"
echo 'this_is_not_a_gnuplot_command' >>"$tmp/plots_broken/output_error.gp"
earlier=1
expect_error "failing script" "gnuplot failed on $tmp/plots_broken/output_error.gp" "$db" \
    MOESIM_PLOTS="$tmp/plots_broken"
earlier=
check "failing script: earlier charts whole" test -s "$tmp/err_out/flops_per_token.svg"
check "failing script: no partial chart" test ! -e "$tmp/err_out/output_error.png" -a \
    ! -e "$tmp/err_out/output_error.svg"

# usage errors
"$MOESIM" plot >/dev/null 2>"$tmp/err"
check "no database given: non-zero exit" test $? != 0
contains "no database given: message" "$tmp/err" "no database given"
"$MOESIM" plot "$db" --bogus >/dev/null 2>"$tmp/err"
check "unknown option: non-zero exit" test $? != 0

finish
