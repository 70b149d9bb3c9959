#!/bin/sh
# t_results.sh: results a researcher can trust (tests/run.sh runs it with MOESIM=<build>/moesim,
# from the repository root):
#   - seeds are replicates: the views over_seeds and summary and `report --json` give, per
#     configuration, the mean over seeds, the sample sd and the 95% confidence interval, checked
#     against an awk computation from the points table (two-pass sd) and the closed form of the
#     Student t quantile with 2 degrees of freedom (3 seeds): for nu = 2 the t CDF is
#     F(t) = 1/2 + t / (2 sqrt(2 + t^2)), so t_{0.975,2} = (2p - 1) / sqrt(2 p (1 - p)), p = 0.975
#     (= 4.3027, the value of every published t table);
#   - cf is REAL in the views (`WHERE cf = 1` finds the rows) with its decimal text in cf_text;
#   - runs are recorded (table runs: spec name, spec text, overrides; points.run), report and
#     plot take --where and --run, bad ones are one-line errors; two configurations that differ
#     only in tokens are two rows, never averaged, and plot says which keys differ;
#   - a database of schema version 4 (without runs) is upgraded to 5 by `moesim run`;
#   - list-valued keys of router, distribution and shape sections are sweep axes; a router
#     listed without a section runs its registry type; a k > E conflict caused by a --set names
#     that --set;
#   - smaller defects: compare of two databases does not hint at `make record` (a recorded
#     baseline does), `plot --out DIR/` prints DIR/x.dat, the progress bar's last frame has a
#     label.
NAME=t_results
. tests/lib.sh
make_tmp
export MOESIM_PLOTS="$REPO/plots"

if ! command -v sqlite3 >/dev/null 2>&1; then
    skip 40 "the sqlite3 command is missing"
    finish
fi

# ---- seeds as replicates ----
spec=$tmp/s.ini
tiny_spec "$spec" s "topk switch" g c
sed -i 's/^seeds = 1$/seeds = 1 2 3/' "$spec"
db=$tmp/s.db
status "run with 3 seeds" 0 "$tmp/out" "$MOESIM" run "$spec" --db "$db" --no-plots
same "24 points" "$(q "$db" 'SELECT count(*) FROM points')" 24
same "8 configurations in over_seeds" "$(q "$db" 'SELECT count(*) FROM over_seeds')" 8
same "summary: one row per configuration" "$(q "$db" 'SELECT count(*) FROM summary')" 8
same "every configuration has 3 seeds" "$(q "$db" 'SELECT DISTINCT seeds FROM over_seeds')" 3
# awk: mean, sample sd (two passes) and t_{0.975,2} sd / sqrt(3) of one configuration
sel="router = 'switch' AND capacity_factor = '1.0' AND distribution = 'c'"
q "$db" "SELECT assignment_drop_rate FROM points WHERE $sel" >"$tmp/vals"
same "3 values of the configuration" "$(wc -l <"$tmp/vals")" 3
want=$(awk '{ x[NR] = $1; s += $1 } END { m = s / NR; for (i = 1; i <= NR; i++) ss += (x[i] - m) ^ 2;
    sd = sqrt(ss / (NR - 1)); p = 0.975; t = (2 * p - 1) / sqrt(2 * p * (1 - p));
    printf "%.12g %.12g %.12g", m, sd, t * sd / sqrt(NR) }' "$tmp/vals")
got=$(q "$db" "SELECT printf('%.12g %.12g %.12g', assignment_drop_rate,
    assignment_drop_rate_seed_sd, assignment_drop_rate_ci95) FROM over_seeds WHERE router =
    'switch' AND cf = 1 AND distribution = 'c'")
close() { # close DESC GOT WANT: three numbers each, equal within rel 1e-9
    if awk -v g="$2" -v w="$3" 'BEGIN { n = split(g, a, " "); split(w, b, " "); if (n != 3) exit 1;
        for (i = 1; i <= 3; i++) { d = a[i] - b[i]; if (d < 0) d = -d; m = b[i] < 0 ? -b[i] : b[i];
        if (d > 1e-9 * m + 1e-15) exit 1 } }'; then ok; else bad "$1: got '$2', want '$3'"; fi
}
close "over_seeds: mean, seed sd, ci95 of the drop rate" "$got" "$want"
check "the configuration's seeds differ (a real spread)" awk -v w="$want" \
    'BEGIN { split(w, b, " "); exit !(b[2] > 0) }'
same "summary rounds the same ci95" "$(q "$db" "SELECT drop_rate_ci95 FROM summary WHERE
    router = 'switch' AND cf = 1 AND distribution = 'c'")" \
    "$(awk -v w="$want" 'BEGIN { split(w, b, " "); printf "%.4f", b[3] }' | sed 's/0*$//')"
same "t table: t_{0.975,2} from GSL = closed form" "$(q "$db" \
    "SELECT printf('%.12f', t975) FROM student_t WHERE df = 2")" \
    "$(awk 'BEGIN { p = 0.975; printf "%.12f", (2 * p - 1) / sqrt(2 * p * (1 - p)) }')"
# batch spread beside it: mean over seeds of the sd over the 2 batches
same "batch sd = mean of the points' std over batches" "$(q "$db" "SELECT printf('%.12g',
    assignment_drop_rate_batch_sd) FROM over_seeds WHERE router = 'switch' AND cf = 1 AND
    distribution = 'c'")" "$(q "$db" "SELECT printf('%.12g', avg(assignment_drop_rate_std))
    FROM points WHERE $sel")"
# report --json carries the same statistics
"$MOESIM" report "$db" --json >"$tmp/json" 2>"$tmp/err"
same "report --json exits 0" $? 0
got=$(python3 -c 'import json,sys
d = json.load(open(sys.argv[1]))
c = [c for c in d["configurations"] if c["router"] == "switch" and c["cf"] == 1.0 and c["distribution"] == "c"]
m = c[0]["metrics"]["assignment_drop_rate"]
print("%.12g %.12g %.12g" % (m["mean"], m["seed_sd"], m["ci95"]), len(d["configurations"]), m["n"])' "$tmp/json" 2>&1)
close "report --json: mean, seed sd, ci95" "$(echo "$got" | cut -d' ' -f1-3)" "$want"
same "report --json: 8 configurations of 3 seeds" "$(echo "$got" | cut -d' ' -f4-)" "8 3"
# the aligned table: one row per configuration
status "report" 0 "$tmp/rep" "$MOESIM" report "$db"
contains "report: 8 configurations" "$tmp/rep" "(8 configurations;"
contains "report: ci95 column" "$tmp/rep" "+-ci95"

# ---- cf as a number ----
same "WHERE cf = 1 finds the cf 1.0 rows" "$(q "$db" 'SELECT count(*) FROM summary WHERE cf = 1')" 4
same "cf_text keeps the decimal" "$(q "$db" "SELECT DISTINCT cf_text FROM summary WHERE cf = 1.5")" 1.5
same "cf is REAL" "$(q "$db" 'SELECT DISTINCT typeof(cf) FROM summary')" real

# ---- runs ----
same "one run recorded" "$(q "$db" "SELECT count(*) || ' ' || spec || ' ' || points_run FROM runs")" "1 s 24"
same "run keeps the spec text" "$(q "$db" "SELECT spec_text = CAST(readfile('$spec') AS TEXT)
    FROM runs WHERE id = 1")" 1
same "every point links to run 1" "$(q "$db" 'SELECT DISTINCT run FROM points')" 1
status "second run, other tokens" 0 "$tmp/out" "$MOESIM" run "$spec" --db "$db" --no-plots \
    --set experiment.tokens=64
same "run 2 with its override" "$(q "$db" "SELECT overrides FROM runs WHERE id = 2")" \
    "experiment.tokens=64"
same "no mixing: 16 configurations after a second token count" \
    "$(q "$db" 'SELECT count(*) FROM summary')" 16
same "each summary row is one token count" \
    "$(q "$db" 'SELECT count(*) FROM summary WHERE seeds = 3')" 16
"$MOESIM" report "$db" --csv --run 1 >"$tmp/csv1" 2>"$tmp/err"
same "report --run 1: 8 rows" "$(($(wc -l <"$tmp/csv1") - 1))" 8
lacks "report --run 1: no 64-token rows" "$tmp/csv1" ",64,"
"$MOESIM" report "$db" --csv --where "tokens = 64" >"$tmp/csv2" 2>"$tmp/err"
same "report --where tokens = 64: 8 rows" "$(($(wc -l <"$tmp/csv2") - 1))" 8
"$MOESIM" report "$db" --csv --run last --where "router = 'topk'" >"$tmp/csv3" 2>"$tmp/err"
same "report --run last --where: 4 rows" "$(($(wc -l <"$tmp/csv3") - 1))" 4
status "bad --where" 1 "$tmp/err" "$MOESIM" report "$db" --where "rooter = 1"
contains "bad --where: one error line" "$tmp/err" "moesim: error: bad condition: no such column: rooter (--where)"
status "unknown --run" 1 "$tmp/err" "$MOESIM" report "$db" --run 9
contains "unknown --run" "$tmp/err" "moesim: error: no run '9' in the database (--run)"
status "plot --run 1" 0 "$tmp/pl" "$MOESIM" plot "$db" --out "$tmp/ch1" --run 1
lacks "plot --run 1: one configuration per series" "$tmp/pl" "several configurations"
status "plot of both runs" 0 "$tmp/pl" "$MOESIM" plot "$db" --out "$tmp/ch2/"
contains "plot says what differs" "$tmp/pl" "differ in tokens (besides cf and seed)"
contains "plot --out DIR/ prints DIR/x.dat" "$tmp/pl" "$tmp/ch2/drop_rate.dat"
lacks "plot --out DIR/: no double slash" "$tmp/pl" "ch2//"
status "plot --where" 0 "$tmp/pl" "$MOESIM" plot "$db" --out "$tmp/ch3" --where 'tokens = 64'
contains "plot --where: the 24 points of 64 tokens" "$tmp/pl" "charts from 24 points"

# ---- compare: the make-record hint only for recorded baselines ----
cp "$db" "$tmp/other.db"
q "$tmp/other.db" "UPDATE points SET load_imbalance = load_imbalance * 2 WHERE id = 1"
status "compare two databases: drift" 1 "$tmp/cmp" "$MOESIM" compare "$db" "$tmp/other.db"
lacks "compare of databases: no make record hint" "$tmp/cmp" "make record"
"$MOESIM" compare --record "$db" "$tmp/base.tsv" >/dev/null 2>&1
status "compare against a recorded baseline: drift" 1 "$tmp/cmp" "$MOESIM" compare "$tmp/base.tsv" "$tmp/other.db"
contains "recorded baseline: make record hint" "$tmp/cmp" "make record"

# ---- the progress bar's last frame (a terminal through script(1)) ----
if command -v script >/dev/null 2>&1; then
    script -qec "'$MOESIM' run '$spec' --db '$tmp/p.db' --no-plots" /dev/null >"$tmp/tty" 2>&1
    tr '\r' '\n' <"$tmp/tty" | grep '^\[' | tail -1 >"$tmp/last"
    contains "last frame says done" "$tmp/last" "24/24 ETA 0:00  done: 24 run in"
else
    skip 1 "script(1) is missing: no terminal for the progress bar"
fi

# ---- schema version 4 -> 5 (runs and statistics over seeds) ----
v2=$tmp/v2.db
cp "$tmp/p.db" "$v2" 2>/dev/null || cp "$db" "$v2"
q "$v2" "DROP VIEW summary; DROP VIEW by_router_cf; DROP VIEW over_seeds; DROP TABLE runs;
    DROP TABLE student_t; DROP INDEX points_run; ALTER TABLE points DROP COLUMN config_group;
    ALTER TABLE points DROP COLUMN run; CREATE VIEW summary AS SELECT id, capacity_factor AS cf
    FROM points; PRAGMA user_version = 4"
same "fixture is version 4" "$(q "$v2" 'PRAGMA user_version')" 4
n2=$(q "$v2" 'SELECT count(*) FROM points')
status "report reads version 4" 0 "$tmp/o" "$MOESIM" report "$v2"
contains "report of version 4: configurations" "$tmp/o" "configurations;"
status "run upgrades version 4" 0 "$tmp/o" "$MOESIM" run "$spec" --db "$v2" --no-plots --set experiment.seeds=4
same "upgraded to version 7" "$(q "$v2" 'PRAGMA user_version')" 7
same "old points kept, without a run" "$(q "$v2" 'SELECT count(*) FROM points WHERE run IS NULL')" "$n2"
same "new points in run 1" "$(q "$v2" 'SELECT count(*) FROM points WHERE run = 1')" 8
same "summary over 4 seeds" "$(q "$v2" 'SELECT DISTINCT seeds FROM summary')" 4

# ---- list-valued keys, routers without a section ----
cat >"$tmp/ax.ini" <<'EOF'
[experiment]
name = ax
routers = topk switch
capacity_factors = 1.0
distributions = c
tokens = 64
error_tokens = 16

[router.topk]
k = 1 2

[distribution.c]
source = clustered
zipf_s = 1.0, 1.5

[shape.s]
d = 16
f = 32
E = 4 8
EOF
status "list-valued keys run" 0 "$tmp/o" "$MOESIM" run "$tmp/ax.ini" --db "$tmp/ax.db" --no-plots
# (topk k=1, k=2, switch) x zipf_s (2) x E (2)
same "12 points" "$(q "$tmp/ax.db" 'SELECT count(*) FROM points')" 12
same "k axis in the database" "$(q "$tmp/ax.db" "SELECT group_concat(DISTINCT router || ':' || k)
    FROM (SELECT * FROM points WHERE router_type = 'topk' ORDER BY k)")" "topk[k=1]:1,topk[k=2]:2"
same "E axis in the database" "$(q "$tmp/ax.db" "SELECT group_concat(DISTINCT shape || ':' || E)
    FROM (SELECT * FROM points ORDER BY E)")" "s[E=4]:4,s[E=8]:8"
same "zipf_s axis in the source parameters" "$(q "$tmp/ax.db" "SELECT group_concat(DISTINCT
    distribution || ':' || source_params) FROM (SELECT * FROM points ORDER BY source_params)")" \
    "c[zipf_s=1.0]:zipf_s=1.0,c[zipf_s=1.5]:zipf_s=1.5"
same "switch without a section: its registry type" \
    "$(q "$tmp/ax.db" "SELECT DISTINCT router_type || ' ' || router_options FROM points WHERE router = 'switch'")" \
    "switch capacity_factor=1/1"
same "the axis is in the configuration key" \
    "$(q "$tmp/ax.db" "SELECT count(*) FROM points WHERE config_key LIKE '%params={zipf_s=1.5}%'")" 6
sed 's/^routers = topk switch$/routers = topk nope/' "$tmp/ax.ini" >"$tmp/nope.ini"
status "unknown router without a section" 1 "$tmp/err" "$MOESIM" run "$tmp/nope.ini" --dry-run
contains "unknown router: its name" "$tmp/err" "no section [router.nope] for 'nope'"
status "k = 9 in a list" 1 "$tmp/err" "$MOESIM" run "$tmp/ax.ini" --dry-run --set router.topk.k="1 9"
contains "k in a list: error at the key" "$tmp/err" "k = 9 exceeds E = 4 (router topk[k=9], shape s[E=4]) (--set:1, key router.topk.k)"

# ---- a k/E conflict caused by a --set names the --set ----
tiny_spec "$tmp/k.ini" k "topk" g c
status "--set E below k" 1 "$tmp/err" "$MOESIM" run "$tmp/k.ini" --dry-run --set shape.s.E=1
contains "--set E: the error names the --set" "$tmp/err" "k = 2 exceeds E = 1 (router topk, shape s) (--set:1, key shape.s.E)"
status "--set k above E" 1 "$tmp/err" "$MOESIM" run "$tmp/k.ini" --dry-run --set router.topk.k=9
contains "--set k: the error names the --set" "$tmp/err" "(--set:1, key router.topk.k)"
status "both from --set" 1 "$tmp/err" "$MOESIM" run "$tmp/k.ini" --dry-run --set shape.s.E=8 --set router.topk.k=9
contains "both from --set: the k key" "$tmp/err" "k = 9 exceeds E = 8 (router topk, shape s) (--set:2, key router.topk.k)"

finish
