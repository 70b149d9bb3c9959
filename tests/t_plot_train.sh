#!/bin/sh
# t_plot_train.sh: the training charts of `moesim plot` (sim/plot_train.h, plots/train_*.gp).
# A tiny sweep (topk k=2 and switch at capacity factors 1.0 and 1.5 on one distribution, E 8,
# 128 tokens, d 16, f 32) is run with --no-plots, then tests/fixtures/train/train_steps.sql adds
# hand-made training rows (its header states every value). `moesim plot` must draw the five
# training charts as non-empty PNG and SVG with their titles, axis labels and legend entries,
# and each data file must hold the rows worked out by hand below from the fixture. A database
# without training rows draws none of them. Prints "t_plot_train: N passed, N failed" last.
NAME=t_plot_train
. tests/lib.sh
make_tmp

if ! command -v gnuplot >/dev/null 2>&1; then
    skip 1 "gnuplot is not installed (make deps installs gnuplot-nox)"
    finish
fi
train_charts="train_loss train_balance train_loads train_routing train_final"

tiny_spec "$tmp/t.ini" t_plot_train "topk switch" - clus
db=$tmp/a.db
"$MOESIM" run "$tmp/t.ini" --db "$db" --no-plots >"$tmp/out" 2>"$tmp/err"
check "sweep exits 0 ($(cat "$tmp/err"))" test $? = 0

# ---- without training rows: no training chart ----
"$MOESIM" plot "$db" --out "$tmp/plain" >"$tmp/out" 2>"$tmp/err"
check "plot without training rows exits 0 ($(cat "$tmp/err"))" test $? = 0
check "no training chart without training rows" test -z "$(ls "$tmp/plain" | grep '^train_')"

# ---- with the fixture ----
sqlite3 "$db" <tests/fixtures/train/train_steps.sql
check "fixture applied: 12 steps rows" test "$(q "$db" 'SELECT count(*) FROM steps')" = 12
out=$tmp/charts
"$MOESIM" plot "$db" --out "$out" >"$tmp/out" 2>"$tmp/err"
check "plot exits 0 ($(cat "$tmp/err"))" test $? = 0
lacks "plot: no gnuplot warning" "$tmp/err" "moesim: gnuplot"
for c in $train_charts; do chart_files "$out" "$c"; done
# labels and legends (the series: router plus the aux weight, which differs between them)
for c in train_loss train_balance train_routing train_final; do
    contains "$c.svg: legend entry topk" "$out/$c.svg" ">topk aux 0.01<"
    contains "$c.svg: legend entry switch" "$out/$c.svg" ">switch aux 0<"
done
contains "train_loss.svg: y label" "$out/train_loss.svg" "held-out loss (MSE)"
contains "train_loss.svg: x label" "$out/train_loss.svg" "training step"
contains "train_balance.svg: y label" "$out/train_balance.svg" "dropped assignments (%)"
contains "train_balance.svg: dead experts" "$out/train_balance.svg" "dead experts"
contains "train_routing.svg: y label" "$out/train_routing.svg" "specialisation (NMI, 0-1)"
contains "train_loads.svg: colour scale label" "$out/train_loads.svg" "share of kept load (%)"
contains "train_loads.svg: panel of switch" "$out/train_loads.svg" "switch aux 0, clus"
contains "train_final.svg: x label" "$out/train_final.svg" "capacity factor"

# rows FILE: the data rows of FILE (no comments, no blank lines, quotes removed)
rows() { grep -v '^#' "$1" | grep . | tr -d '"'; }

# train_loss: the points at capacity factor 1.0 (nearest 1.0), 2 series x 3 steps; columns
# distribution shape series(2 words) cf step loss heldout aux z points, then the half-widths of
# the 95% confidence intervals over seeds (NaN: one point each, no interval). From the fixture:
rows "$out/train_loss.dat" >"$tmp/r"
same "train_loss: 6 rows" "$(wc -l <"$tmp/r")" 6
same "train_loss: topk step 20" "$(grep '^clus s topk aux 0.01 1.0 20 ' "$tmp/r")" \
    "clus s topk aux 0.01 1.0 20 0.25 0.29999999999999999 1 3.5 1 NaN NaN NaN NaN"
same "train_loss: switch step 10" "$(grep '^clus s switch aux 0 1.0 10 ' "$tmp/r")" \
    "clus s switch aux 0 1.0 10 0.80000000000000004 0.90000000000000002 1.6000000000000001 4.0999999999999996 1 NaN NaN NaN NaN"

# train_balance: load imbalance, drop rates, dead experts; switch collapses to 6 dead experts
rows "$out/train_balance.dat" >"$tmp/r"
same "train_balance: 6 rows" "$(wc -l <"$tmp/r")" 6
same "train_balance: switch step 20" "$(grep '^clus s switch aux 0 1.0 20 ' "$tmp/r")" \
    "clus s switch aux 0 1.0 20 5 0.65000000000000002 0.65000000000000002 6 1 NaN NaN NaN NaN"

# train_routing: specialisation fluctuation gate_entropy
rows "$out/train_routing.dat" >"$tmp/r"
same "train_routing: 6 rows" "$(wc -l <"$tmp/r")" 6
same "train_routing: topk step 20" "$(grep '^clus s topk aux 0.01 1.0 20 ' "$tmp/r")" \
    "clus s topk aux 0.01 1.0 20 0.55000000000000004 0.10000000000000001 1.6000000000000001 1 NaN NaN NaN"

# train_loads: 2 series x 3 steps x 8 experts; columns ... step xlo xhi expert share load
# points. switch at step 10: loads 40 20 0 800 0 300 0 0 (sum 1160) over steps (0, 10]:
# expert 3 has 800/1160, expert 2 nothing; step 0 spans (-1, 0]; topk at step 20 expert 0:
# 310/2440.
rows "$out/train_loads.dat" >"$tmp/r"
same "train_loads: 48 rows" "$(wc -l <"$tmp/r")" 48
# (the series takes 3 words: $3 router, $7 step, $8 xlo, $9 xhi, $10 expert, $11 share, $12 load)
awk '$3 == "switch" && $7 == 10 && $10 == 3 { printf "%d %d %.12f %d\n", $8, $9, $11, $12 }' \
    "$tmp/r" >"$tmp/x"
same "train_loads: switch step 10 expert 3" "$(cat "$tmp/x")" \
    "0 10 $(awk 'BEGIN { printf "%.12f", 800 / 1160 }') 800"
same "train_loads: switch step 10 expert 2" \
    "$(awk '$3 == "switch" && $7 == 10 && $10 == 2 { print $11, $12 }' "$tmp/r")" "0 0"
same "train_loads: step 0 spans (-1, 0]" \
    "$(awk '$3 == "switch" && $7 == 0 && $10 == 0 { print $8, $9 }' "$tmp/r")" "-1 0"
same "train_loads: topk step 20 expert 0" \
    "$(awk '$3 == "topk" && $7 == 20 && $10 == 0 { printf "%.12f", $11 }' "$tmp/r")" \
    "$(awk 'BEGIN { printf "%.12f", 310 / 2440 }')"

# train_final: every capacity factor, 2 series x 2 cf; columns ... cf x heldout_loss flops
# points. Useful expert FLOPs per token = kept entries in the last window / (128 tokens x 10
# steps) x 4 d f (d 16, f 32, gelu_tanh): topk cf 1.0: 2440 / 1280 x 2048 = 3904; switch cf 1.5:
# 1280 / 1280 x 2048 = 2048.
rows "$out/train_final.dat" >"$tmp/r"
same "train_final: 4 rows" "$(wc -l <"$tmp/r")" 4
same "train_final: topk cf 1.0" "$(grep '^clus s topk aux 0.01 1.0 ' "$tmp/r")" \
    "clus s topk aux 0.01 1.0 1 0.29999999999999999 3904 1"
same "train_final: switch cf 1.5" "$(grep '^clus s switch aux 0 1.5 ' "$tmp/r")" \
    "clus s switch aux 0 1.5 1.5 0.80000000000000004 2048 1"
contains "train_loss.svg: one seed, no bands" "$out/train_loss.svg" \
    "One seed per series: no spread over seeds to show"

# ---- a second seed: bands ----
# A copy of the topk point at cf 1.0 (seed 2) with its training rows, every loss of its steps
# 0.1 above the first seed's. Hand-worked: two seeds at step 20 give the loss mean
# (0.25 + 0.35) / 2 = 0.3, the sample sd 0.1 / sqrt(2), the standard error 0.1 / 2, and the 95%
# half-width t_{0.975,1} x 0.05 with t_{0.975,1} = 12.706204736174707 (the published Student t
# quantile for one degree of freedom): 0.63531023680873535.
p1=$(q "$db" "SELECT id FROM points WHERE router = 'topk' AND capacity_factor = '1.0'")
cols=$(q "$db" "SELECT group_concat(name, ', ') FROM pragma_table_info('points')") # stored ones
sqlite3 "$db" "CREATE TEMP TABLE cp AS SELECT $cols FROM points WHERE id = $p1;
    UPDATE cp SET id = 1000, seed = 2, config_key = replace(config_key, ' seed=1', ' seed=2');
    INSERT INTO points ($cols) SELECT $cols FROM cp;
    INSERT INTO train_points SELECT 1000, steps, optimizer, lr, lr_schedule, warmup, aux,
        aux_weight, z_weight, trainable, eval_every, probe_tokens, teacher, teacher_experts,
        teacher_k, target_noise FROM train_points WHERE point = $p1;
    INSERT INTO steps SELECT 1000, step, loss + 0.1, heldout_loss, aux_loss, z_loss,
        load_imbalance, assignment_drop_rate, token_drop_rate, dead_experts, fluctuation,
        specialisation, gate_entropy FROM steps WHERE point = $p1;" 2>"$tmp/err"
check "second seed added ($(cat "$tmp/err"))" test "$(q "$db" 'SELECT count(*) FROM steps')" = 15
"$MOESIM" plot "$db" --out "$tmp/two" >"$tmp/out" 2>"$tmp/err"
check "plot with two seeds exits 0 ($(cat "$tmp/err"))" test $? = 0
lacks "plot with two seeds: no gnuplot warning" "$tmp/err" "moesim: gnuplot"
rows "$tmp/two/train_loss.dat" >"$tmp/r"
# (the series takes 3 words: $7 step, $8 loss, $12 points, $13 and $14 the loss and held-out
# loss half-widths)
got=$(awk '$3 == "topk" && $7 == 20 { print $8, $12, $13 }' "$tmp/r")
same "train_loss: topk step 20 over two seeds: mean, points, half-width" \
    "$(echo "$got" | awk '{ printf "%.12f %d %.12f", $1, $2, $3 }')" \
    "$(awk 'BEGIN { printf "%.12f %d %.12f", 0.3, 2, 12.706204736174707 * 0.1 / 2 }')"
same "train_loss: held-out loss equal over the seeds: half-width 0" \
    "$(awk '$3 == "topk" && $7 == 20 { print $14 }' "$tmp/r")" 0
contains "train_loss.svg: the bands are named" "$tmp/two/train_loss.svg" \
    "Bands: 95% confidence interval of the mean over the seeds of each step (up to 2"
finish
