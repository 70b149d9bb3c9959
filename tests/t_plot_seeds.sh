#!/bin/sh
# t_plot_seeds.sh: the spread over seeds on the capacity-factor charts (drop_rate,
# load_imbalance, flops_per_token, output_error). The tiny sweep of tests/lib.sh (topk and
# switch, capacity factors 1.0 and 1.5, two distributions) is run with 3 seeds and with 1 seed.
# Expected values: for every (distribution, router, capacity factor) the data file holds, after
# the count of points, the half-width of the 95% confidence interval of each metric's mean over
# the seeds, computed here with awk from the three points' values read with the sqlite3 CLI:
# mean m, sample sd s = sqrt(sum (x - m)^2 / 2), half-width t s / sqrt(3) with t = t_{0.975,2}
# = 4.302652729911275 (the published Student t quantile for 2 degrees of freedom). With one
# seed the half-widths are NaN (no spread to show) and the chart says so under its panels; with
# three seeds the chart says what its error bars are. And --where applies to the points whose
# series are split by a differing key (the split must not read the unfiltered points). Prints "t_plot_seeds: N passed, N failed"
# last.
NAME=t_plot_seeds
. tests/lib.sh
make_tmp

if ! command -v gnuplot >/dev/null 2>&1 || ! command -v sqlite3 >/dev/null 2>&1; then
    skip 20 "gnuplot or the sqlite3 CLI is not installed (make deps, make deps-test)"
    finish
fi

tiny_spec "$tmp/t1.ini" t_plot_seeds "topk switch" gauss clus
sed 's/^seeds = 1$/seeds = 1 2 3/' "$tmp/t1.ini" >"$tmp/t3.ini"
check "the 3-seed spec sweeps 3 seeds" grep -q '^seeds = 1 2 3$' "$tmp/t3.ini"
for n in 1 3; do
    "$MOESIM" run "$tmp/t$n.ini" --db "$tmp/s$n.db" --no-plots >"$tmp/run$n" 2>&1
    check "run with $n seed(s) exits 0 ($(tail -1 "$tmp/run$n"))" test $? = 0
    "$MOESIM" plot "$tmp/s$n.db" --out "$tmp/o$n" >"$tmp/plot$n" 2>&1
    check "plot of $n seed(s) exits 0 ($(tail -1 "$tmp/plot$n"))" test $? = 0
done

# ci DB ROUTER DIST CF COLUMN: the half-width from the points' values (see the header).
ci() {
    q "$1" "SELECT $5 FROM points WHERE router = '$2' AND distribution = '$3'
            AND capacity_factor = '$4' ORDER BY seed" |
        awk '{ x[NR] = $1; s += $1 } END {
            if (NR != 3) { print "points:" NR; exit }
            m = s / NR; for (i = 1; i <= NR; i++) ss += (x[i] - m) ^ 2
            printf "%.17g\n", 4.302652729911275 * sqrt(ss / (NR - 1)) / sqrt(NR) }'
}
# dat_col FILE ROUTER DIST CF N: column N of the data row of (DIST, ROUTER, CF).
dat_col() {
    awk -v r="\"$2\"" -v d="\"$3\"" -v c="\"$4\"" -v n="$5" \
        '!/^#/ && $1 == d && $3 == r && $4 == c { print $n; exit }' "$1"
}
# close A B: relative difference below 1e-9 (the database's sums and awk's differ in the order
# of the additions only).
close() {
    awk -v a="$1" -v b="$2" 'BEGIN { d = a - b; if (d < 0) d = -d; s = (b < 0 ? -b : b);
        exit !(a != "" && b != "" && d <= 1e-9 * s + 1e-15) }'
}

# columns: distribution shape router cf x metric_1 metric_2 points ci95_1 ci95_2
checked=0 nonzero=0
for chart in drop_rate:assignment_drop_rate:token_drop_rate \
    load_imbalance:load_imbalance:kept_load_imbalance \
    output_error:output_error_dropless:output_error_dense; do
    name=${chart%%:*} rest=${chart#*:}
    m1=${rest%%:*} m2=${rest#*:}
    dat=$tmp/o3/$name.dat
    check "$name.dat: every data row has 10 columns" \
        awk '!/^#/ && NF > 0 && NF != 10 { exit 1 }' "$dat"
    for r in topk switch; do
        for dist in gauss clus; do
            for cf in 1.0 1.5; do
                for j in 1 2; do
                    eval m=\$m$j
                    want=$(ci "$tmp/s3.db" $r $dist $cf $m)
                    got=$(dat_col "$dat" $r $dist $cf $((8 + j)))
                    if close "$got" "$want"; then checked=$((checked + 1))
                    else bad "$name $r $dist cf $cf $m: ci95 $got, want $want"; fi
                    [ "$want" = 0 ] || nonzero=$((nonzero + 1))
                done
            done
        done
    done
done
same "confidence intervals checked (3 charts x 2 routers x 2 distributions x 2 cfs x 2)" \
    "$checked" 48
check "some intervals are not zero ($nonzero)" test "$nonzero" -gt 0

# one seed: NaN half-widths and the note
check "one seed: the half-widths are NaN" \
    awk '!/^#/ && NF > 0 { if ($9 != "NaN" || $10 != "NaN") exit 1; n++ } END { exit !n }' \
    "$tmp/o1/drop_rate.dat"
contains "one seed: the chart says there is no spread" "$tmp/o1/drop_rate.svg" \
    "One seed per point: no spread over seeds to show"
contains "three seeds: the chart says what its bars are" "$tmp/o3/drop_rate.svg" \
    "Error bars: 95% confidence interval of the mean over the seeds of each point (up to 3"

# --where with series split by a key: the split (plot_cfg.c) reads the filtered points only.
# Hand-derived: tokens 128 and 256 are swept, --where keeps 256, so no series of 128 remains
# and the series is not split (one value of tokens is left).
sed 's/^tokens = 128$/tokens = 128 256/' "$tmp/t1.ini" >"$tmp/tt.ini"
"$MOESIM" run "$tmp/tt.ini" --db "$tmp/tt.db" --no-plots >"$tmp/runtt" 2>&1
check "run with two token counts exits 0 ($(tail -1 "$tmp/runtt"))" test $? = 0
"$MOESIM" plot "$tmp/tt.db" --out "$tmp/ott" --where 'tokens = 256' >"$tmp/plottt" 2>&1
check "plot --where exits 0 ($(tail -1 "$tmp/plottt"))" test $? = 0
same "--where tokens = 256: data rows (2 routers x 2 distributions x 2 cfs)" \
    "$(awk '!/^#/ && NF > 0' "$tmp/ott/drop_rate.dat" | wc -l | tr -d ' ')" 8
lacks "--where tokens = 256: no series of 128 tokens" "$tmp/ott/drop_rate.dat" "tokens=128"
sed 's/^tokens = 128$/tokens = 128 256 512/' "$tmp/t1.ini" >"$tmp/t3t.ini"
"$MOESIM" run "$tmp/t3t.ini" --db "$tmp/t3t.db" --no-plots >"$tmp/runt3t" 2>&1
"$MOESIM" plot "$tmp/t3t.db" --out "$tmp/o3t" --where 'tokens >= 256' >"$tmp/plot3t" 2>&1
check "plot --where tokens >= 256 exits 0 ($(tail -1 "$tmp/plot3t"))" test $? = 0
contains "--where tokens >= 256: series split by tokens" "$tmp/o3t/drop_rate.dat" "tokens=512"
lacks "--where tokens >= 256: the split series leave out 128 tokens" "$tmp/o3t/drop_rate.dat" \
    "tokens=128"
finish
