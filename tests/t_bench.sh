#!/bin/sh
# t_bench.sh: `moesim bench --quick` as a smoke test of the benchmark's pipeline: the
# report has its sections, the layer output agrees with the naive reference, the results land in
# the `bench` table with the BLAS provenance, a forced weaker OPENBLAS_CORETYPE is warned about,
# the PyTorch reference's failure modes are handled (tests/bench/fake_torch.sh stands in for
# torch), and bad flags are errors. No timing is asserted: timings belong to `make bench`.
NAME=t_bench
. tests/lib.sh
make_tmp
T=$tmp
has() { grep -q -- "$2" "$1" && ok || no "$(basename "$1") lacks '$2'"; }
count() { n=$(grep -c -- "$2" "$1"); [ "$n" = "$3" ] && ok || no "$(basename "$1"): '$2' $n times, expected $3"; }
q() { sqlite3 "$T/b.db" "$1" 2>&1; }
eq() { got=$(q "$2"); [ "$got" = "$3" ] && ok || no "$1: got '$got', expected '$3'"; }
WARN="moesim: warning: OPENBLAS_CORETYPE=Haswell forces 256-bit kernels on an AVX-512 CPU (about half the GEMM speed here); unset it"
avx512=0; grep -qw avx512f /proc/cpuinfo 2>/dev/null && avx512=1

# ---- a quick run without the override, as `make bench` runs ----
if env -u OPENBLAS_CORETYPE "$M" bench --quick --no-torch --repeats 2 --db "$T/b.db" \
        >"$T/out" 2>"$T/err"; then ok; else no "bench --quick exited $?: $(cat "$T/err")"; fi
has "$T/out" '^BLAS: OpenBLAS .*; core [A-Za-z]*; 2 threads; OPENBLAS_CORETYPE unset$'
has "$T/out" '^OPENBLAS_CORETYPE is unset: OpenBLAS picked the'
# sections: three layers with C = ceil(k*n*cf/E) for n = 1024, cf = 1.25 (2*1024*1.25/16 = 160,
# 1024*1.25/64 = 20, 2*1024*1.25/8 = 320), the scaling table and the targets
has "$T/out" '^== layer E16k2: topk k=2, E=16, n=1024, d=64, f=256, cf=1.25, C=160,'
has "$T/out" '^== layer E64k1: switch k=1, E=64, n=1024, d=64, f=256, cf=1.25, C=20,'
has "$T/out" '^== layer E8k2: topk k=2, E=8, n=1024, d=64, f=256, cf=1.25, C=320,'
for ph in gate route dispatch experts combine layer; do count "$T/out" "^$ph  " 3; done
count "$T/out" '^layer: [0-9]* tokens/s' 3
count "$T/out" '^expert phase: .* GFLOP/s$' 3
count "$T/out" '^  dense GEMM pair (' 3
count "$T/out" '^route+dispatch+combine: ' 3
count "$T/out" '^check: layer output vs naive double reference on 1024 tokens: rel L2 .* (ok)$' 3
count "$T/out" '^torch: skipped (--no-torch)$' 3
has "$T/out" '^== scaling E16k2: n from 256 to 4096 tokens ==$'
for n in 256 1024 4096; do has "$T/out" "^ *$n  "; done
# the note under the scaling verdict names the n where the layer and where the GEMM pair alone
# are slowest per token: rows of the scaling table with the largest "/best" in its two columns
# (the layer's, the GEMMs'; rows printed equal to three decimals all qualify); there is no note
# when the layer's largest is within 1.10 (a value that prints as 1.100 may go either way)
note=$(awk '
    /^== scaling / { t = 1; next }
    /^\(GEMMs: / { t = 0 }
    t && /^ *[0-9]+ +[0-9]+ +[0-9.]+ +[0-9.]+ +[0-9.]+ +[0-9.]+ +[0-9.]+ / {
        m++; n[m] = $1; l[m] = $5 + 0; g[m] = $7 + 0
        if (l[m] > lb) lb = l[m]
        if (g[m] > gb) gb = g[m] }
    END {
        if (lb < 1.1) { print "none"; exit }
        if (lb == 1.1) { print "either"; exit }
        for (i = 1; i <= m; i++) {
            if (l[i] == lb) ls = ls (ls ? "|" : "") n[i]
            if (g[i] == gb) gs = gs (gs ? "|" : "") n[i]
        }
        printf "the layer slowest at n=(%s); .*slowest at n=(%s) ", ls, gs }' "$T/out")
case $note in
none) if grep -q 'the layer slowest at n=' "$T/out"; then
          no "a slowest-n note with the layer within 1.10"; else ok; fi ;;
either) ok ;;
*) if grep -Eq "^ *$note" "$T/out"; then ok; else
       no "the slowest-n note does not match the scaling table ('$note'): $(grep 'slowest at' "$T/out")"; fi ;;
esac
# timed in rounds: each configuration's forwards against the dense pair round by round, and
# each round's slowest n over its fastest, a ratio of at least 1 (min <= median <= max)
count "$T/out" '^  experts/dense round by round (each forward against the dense pair right after it): median [0-9.]*, min..max [0-9.]*\.\.[0-9.]*$' 3
rr=$(sed -n 's/^(time per token round by round, the slowest n.s over the fastest n.s in the same round: median \([0-9.]*\), min..max \([0-9.]*\)\.\.\([0-9.]*\))$/\1 \2 \3/p' "$T/out")
if [ -n "$rr" ] && echo "$rr" | awk '{ exit !($2 >= 1 && $2 <= $1 && $1 <= $3) }'; then ok
else no "the scaling's round-by-round line: '$rr'"; fi
has "$T/out" '^== targets ==$'
has "$T/out" '^== training step: skipped (--quick; it runs at full size only) ==$'
# --quick measures small shapes: a value under a full-size target is "below", never MISSED
has "$T/out" '^(--quick: small shapes, for a smoke run; the targets apply to the full run'
if grep -q 'MISSED' "$T/out"; then no "bench --quick prints MISSED: $(grep MISSED "$T/out")"; else ok; fi
has "$T/out" '^memory workspace / 4(n\*d + E\*C\*d) stays in'
has "$T/out" "^stored in $T/b.db, table bench, run '"
[ -s "$T/err" ] && no "unexpected stderr: $(cat "$T/err")" || ok

# ---- the database ----
if command -v sqlite3 >/dev/null; then
    eq "runs" "SELECT count(DISTINCT run) FROM bench" 1
    eq "configs" "SELECT group_concat(config) FROM (SELECT DISTINCT config FROM bench ORDER BY config)" \
        "E16k2,E64k1,E8k2,scaling"
    eq "capacities" "SELECT group_concat(config || '=' || capacity) FROM (SELECT DISTINCT config, capacity FROM bench WHERE config != 'scaling' ORDER BY config)" \
        "E16k2=160,E64k1=20,E8k2=320"
    eq "scaling points" "SELECT group_concat(n) FROM (SELECT DISTINCT n FROM bench WHERE config = 'scaling' ORDER BY n)" "256,1024,4096"
    eq "phases stored" "SELECT count(*) FROM bench WHERE metric LIKE 'time_%' AND config != 'scaling' AND metric IN ('time_gate','time_route','time_dispatch','time_experts','time_combine','time_layer') AND median > 0 AND min <= median AND median <= max" 18
    eq "provenance" "SELECT DISTINCT blas_threads || ',' || (blas_library LIKE 'OpenBLAS%') || ',' || ifnull(openblas_coretype, 'unset') || ',' || quick || ',' || repeats FROM bench" "2,1,unset,1,2"
    core=$(sed -n 's/^BLAS: .*; core \([A-Za-z]*\);.*/\1/p' "$T/out")
    eq "core as printed" "SELECT DISTINCT blas_core FROM bench" "$core"
    # useful FLOPs = 4*d*f per kept entry (d = 64, f = 256)
    eq "useful flops" "SELECT count(*) FROM bench WHERE metric = 'flops_expert_useful' AND median = 4*64*256*kept" 3
    eq "naive check stored" "SELECT count(*) FROM bench WHERE metric = 'rel_l2_vs_naive' AND median < 1e-5" 3
    eq "round-by-round ratios stored" "SELECT count(*) FROM bench WHERE metric = 'ratio_experts_vs_dense_rounds' AND config != 'scaling' AND min > 0 AND min <= median AND median <= max" 3
    # the JSON twin of the database holds the same rows (python3 reads it: the standard library)
    has "$T/out" "^and as JSON in $T/b.json$"
    if command -v python3 >/dev/null; then
        nj=$(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); r=d["rows"]; print(len(r), sum(1 for x in r if x["metric"] == "flops_expert_useful" and x["median"] == 4*64*256*x["kept"]))' "$T/b.json" 2>&1)
        eq "JSON rows = database rows, useful flops" "SELECT count(*) || ' 3' FROM bench" "$nj"
    else
        skip 1 "python3 is not installed (it reads the JSON)"
    fi
else
    no "the sqlite3 command is missing (make deps installs it)"
fi

# ---- bench --routing into the same database: its rows beside the layer's, in both files ----
# Two sizes and two expert counts; --large-from 1024 makes 1024 tokens a "large" size (moesim
# best of --large-repeats 1 there, of --repeats 2 at 512); --min-time 0: exactly those passes.
RB="bench --routing --sizes 512,1024 --experts 8,16 --repeats 2 --large-repeats 1 --large-from 1024 --min-time 0"
if env -u OPENBLAS_CORETYPE "$M" $RB --no-torch --db "$T/b.db" >"$T/rout" 2>"$T/rerr"; then ok
else no "bench --routing exited $?: $(cat "$T/rerr")"; fi
has "$T/rout" '^moesim bench --routing: 2 threads, load average '
has "$T/rout" '^\*\*\* the PyTorch comparison is SKIPPED (--no-torch) \*\*\*$'
has "$T/rout" "^stored in $T/b.db, table bench, run '"
has "$T/rout" '^replay is not benchmarked '
# the threads' round trip (routers/par.c moe_par_round_trip_ns) at the start and the end of the
# run, and before each cell (its progress line); a measured time, so only its form is checked
has "$T/rout" "^a cache line's round trip between the first two threads at the start: [0-9][0-9]* ns "
has "$T/rout" "^a cache line's round trip between the first two threads at the end: [0-9][0-9]* ns "
# every router but replay at each of the 2 x 2 (n, E): 14 cases, topk k = 8 only where k <= E
# (all here): one progress line each on stderr, 56 in all, and one per drawn set of logits
count "$T/rerr" '^bench --routing: moesim ' 56
# two rounds below --large-from (1024 here), one from there on
count "$T/rerr" '^bench --routing: moesim .* n=512 .* (best of 2 in 2 rounds; round trip [0-9][0-9]* ns) ' 28
count "$T/rerr" '^bench --routing: moesim .* n=1024 .* (best of 1 in 1 round; round trip [0-9][0-9]* ns) ' 28
count "$T/rerr" '^bench --routing: logits n=' 4
count "$T/rerr" '^bench --routing: bound n=' 4
count "$T/rerr" '^bench --routing: PyTorch ' 0
if command -v sqlite3 >/dev/null; then
    eq "routing: two runs now" "SELECT count(DISTINCT run) FROM bench" 2
    # every router of the registry but replay (it needs recorded choices), topk at k = 1, 2, 8,
    # the others at their type's default k (routers/*.c: dsv3_bias 2; topp, relu, sinkhorn, hash,
    # base, soft_moe 1; dense E)
    eq "routing configs" "SELECT group_concat(config, ' ') FROM (SELECT DISTINCT config FROM bench WHERE config LIKE 'routing%E8' OR config = 'routing_load' ORDER BY config)" \
        "routing_base_k1_E8 routing_dense_k8_E8 routing_dsv3_bias_k2_E8 routing_expert_choice_k1_E8 routing_gshard_k2_E8 routing_hash_k1_E8 routing_load routing_relu_k1_E8 routing_sinkhorn_k1_E8 routing_soft_moe_k1_E8 routing_switch_k1_E8 routing_topk_k1_E8 routing_topk_k2_E8 routing_topk_k8_E8 routing_topp_k1_E8"
    # one time_route row per router, size and E: 14 x 2 x 2
    eq "routing cells" "SELECT count(*) || ' ' || count(DISTINCT config || n) FROM bench WHERE metric = 'time_route' AND config LIKE 'routing%'" "56 56"
    eq "routing sizes x E" "SELECT group_concat(ne, ' ') FROM (SELECT DISTINCT n || 'x' || E AS ne FROM bench WHERE metric = 'time_route' AND config LIKE 'routing%' ORDER BY n, E)" "512x8 512x16 1024x8 1024x16"
    # moesim's repeats: 2 below --large-from, 1 from there on
    eq "routing repeats" "SELECT group_concat(nr, ' ') FROM (SELECT DISTINCT n || ':' || repeats AS nr FROM bench WHERE metric = 'time_route' AND config LIKE 'routing%' ORDER BY n)" "512:2 1024:1"
    # C = ceil(k n cf / E), n = 1024, cf = 1.25, E = 8: 160 for k = 1, 320 for k = 2, 1280 for k = 8
    eq "routing capacities" "SELECT group_concat(config || '=' || capacity, ' ') FROM (SELECT DISTINCT config, capacity FROM bench WHERE n = 1024 AND config IN ('routing_switch_k1_E8', 'routing_topk_k2_E8', 'routing_topk_k8_E8', 'routing_gshard_k2_E8', 'routing_expert_choice_k1_E8') ORDER BY config)" \
        "routing_expert_choice_k1_E8=160 routing_gshard_k2_E8=320 routing_switch_k1_E8=160 routing_topk_k2_E8=320 routing_topk_k8_E8=1280"
    # tokens/s = n / the fastest repeat; ratio to the bound = that time / the bound's
    eq "routing tokens/s" "SELECT count(*) FROM bench a JOIN bench b USING (run, config, n) WHERE a.metric = 'tokens_per_s' AND b.metric = 'time_route' AND abs(a.median * b.min - a.n) < 1e-9 * a.n AND b.min <= b.median AND b.median <= b.max" 56
    eq "routing ratio to the bound" "SELECT count(*) FROM bench a JOIN bench b USING (run, config, n) JOIN bench c USING (run, config, n) WHERE a.metric = 'ratio_vs_bound' AND b.metric = 'time_route' AND c.metric = 'time_bound' AND abs(a.median - b.min / c.median) <= 1e-12 * a.median" 56
    eq "routing: no PyTorch rows with --no-torch" "SELECT count(*) FROM bench WHERE metric IN ('time_torch', 'ratio_vs_torch', 'plan_same_as_torch')" 0
    eq "routing: d = f = 0, cf 1.25" "SELECT count(*) FROM bench WHERE config LIKE 'routing%' AND (d != 0 OR f != 0 OR cf != 1.25)" 0
    eq "routing: load and run time rows" "SELECT group_concat(metric, ' ') FROM (SELECT metric FROM bench WHERE config = 'routing_load' AND median >= 0 ORDER BY metric)" \
        "cpu_time_run load_average_end load_average_start thread_round_trip_end thread_round_trip_start wall_time_run"
    eq "routing: each cell's round trip (ns)" "SELECT count(*) FROM bench WHERE metric = 'thread_round_trip' AND unit = 'ns' AND median > 0 AND config LIKE 'routing%'" 56
    if command -v python3 >/dev/null; then
        nj=$(python3 -c 'import json,sys; r=json.load(open(sys.argv[1]))["rows"]; print(len(r), len({x["run"] for x in r}))' "$T/b.json" 2>&1)
        eq "JSON: the layer rows kept beside the routing rows" "SELECT count(*) || ' 2' FROM bench" "$nj"
    else
        skip 1 "python3 is not installed (it reads the JSON)"
    fi
fi

# ---- bench --routing --min-time: at least --repeats passes, then more until they add up to it ----
# Checked on the stored rows (min, max over a cell's passes; repeats = its passes) by what the
# rule implies, in two rounds of 0.01 s each: passes >= 2; passes * slowest >= 0.02 s unless
# capped at 1000; (passes - 2) * fastest < 0.02 s (in each round the passes before its last had
# not reached 0.01 s).
if env -u OPENBLAS_CORETYPE "$M" bench --routing --sizes 512 --experts 8 --routers switch,topk \
        --repeats 2 --min-time 0.02 --no-torch --db "$T/m.db" >"$T/mout" 2>"$T/merr"; then ok
else no "bench --routing --min-time exited $?: $(cat "$T/merr")"; fi
has "$T/mout" 'moesim best of at least 2 passes below 1048576 tokens, of 2 from there on, and of more until they take 0.02 s;'
if command -v sqlite3 >/dev/null; then
    got=$(sqlite3 "$T/m.db" "SELECT count(*) || ' ' || sum(repeats >= 2 AND (repeats = 1000 OR repeats * max >= 0.02) AND (repeats - 2) * min < 0.02) FROM bench WHERE metric = 'time_route'" 2>&1)
    [ "$got" = "4 4" ] && ok || no "--min-time 0.02: cells / cells that keep the rule: got '$got', want '4 4'"
fi

# ---- bench --routing with PyTorch: every twin's plan equals moesim's, its rows in both files ----
if ! /usr/bin/python3 -c 'import torch' >/dev/null 2>&1; then
    skip 32 "PyTorch does not import in /usr/bin/python3 (make bench installs python3-torch)"
elif ! command -v sqlite3 >/dev/null; then
    skip 32 "the sqlite3 command is missing"
else
    # E = 8 only: each (n, E) starts PyTorch afresh (about 1.6 s of import here)
    RBT="bench --routing --sizes 512,1024 --experts 8 --repeats 2 --large-repeats 1 --large-from 1024 --min-time 0"
    if env -u OPENBLAS_CORETYPE "$M" $RBT --db "$T/p.db" >"$T/pout" 2>"$T/perr"; then ok
    else no "bench --routing with PyTorch exited $?: $(cat "$T/perr")"; fi
    # the twins: every router of the 14 cases (sim/bench_torch_routing.py), 14 per (n, E); the
    # plan check runs once per E on --check-n tokens and holds for both sizes
    q2() { sqlite3 "$T/p.db" "$1" 2>&1; }
    got=$(q2 "SELECT count(*) || ' ' || sum(median = 1) FROM bench WHERE metric = 'plan_same_as_torch'")
    [ "$got" = "28 28" ] && ok || no "plans checked / equal to PyTorch's: got '$got', want '28 28'"
    got=$(q2 "SELECT group_concat(DISTINCT router) FROM bench WHERE config LIKE 'routing%' AND router IS NOT NULL AND config NOT IN (SELECT config FROM bench WHERE metric = 'plan_same_as_torch')")
    [ -z "$got" ] && ok || no "routers without a plan check: got '$got', want none"
    got=$(q2 "SELECT count(*) FROM bench t JOIN bench m USING (run, config, n) JOIN bench r USING (run, config, n) WHERE t.metric = 'time_torch' AND m.metric = 'time_route' AND r.metric = 'ratio_vs_torch' AND abs(r.median - t.median / m.min) <= 1e-12 * r.median")
    [ "$got" = 28 ] && ok || no "ratio_vs_torch = PyTorch time / moesim's best: got '$got' rows, want 28"
    # PyTorch's repeats: --repeats below --large-from, once from there on
    got=$(q2 "SELECT group_concat(nr, ' ') FROM (SELECT DISTINCT n || ':' || repeats AS nr FROM bench WHERE metric = 'time_torch' ORDER BY n)")
    [ "$got" = "512:2 1024:1" ] && ok || no "PyTorch repeats: got '$got'"
    # one twin process per (n, E), each twin timed right after moesim's router, in its rounds
    count "$T/perr" '^bench --routing: PyTorch [0-9][^ ]* started on n=' 2
    count "$T/perr" '^bench --routing: PyTorch .* n=512 .* (best of 2 in 2 rounds, each after moesim.s) ' 14
    count "$T/perr" '^bench --routing: PyTorch .* n=1024 .* (best of 1 in 1 round, each after moesim.s) ' 14
    count "$T/perr" '^bench --routing: PyTorch ' 30
    # the script's inputs in folder $1: $2 x 8 N(0,1) logits and $2 uniforms, NumPy seed $3
    twin_inputs() {
        /usr/bin/python3 - "$1" "$2" "$3" <<'PY'
import os, sys
import numpy as np
d, n = sys.argv[1], int(sys.argv[2])
os.makedirs(d)
g = np.random.default_rng(int(sys.argv[3]))
np.save(d + "/logits.npy", g.standard_normal((n, 8)))
np.save(d + "/uniforms.npy", g.random(n))
PY
    }
    # the serve mode on its own: a ready line, then one answer per request (the --min-time rule
    # checked as below), and a bad request ends it with an error
    twin_inputs "$T/sv" 48 5
    out=$(printf 'time switch 1 3 0.02 1000\ntime topk 2 3 0 1000\n' |
          /usr/bin/python3 sim/bench_torch_routing.py serve --dir "$T/sv" --threads 1 --cf 5/4 2>&1)
    tv=$(/usr/bin/python3 -c 'import torch; print(torch.__version__)' 2>&1)
    bad=$(printf '%s\n' "$out" | awk -v tv="$tv" '
        NR == 1 { if ($0 != "ready 48 8 " tv) print "first line: " $0; next }
        $1 == "time" { n++; p = $7; best = $6; tot = $8
            if ($4 != 48 || $5 != 8 || p < 3 || best * p > tot * (1 + 1e-9) ||
                ($2 == "switch" && tot < 0.02 && p < 1000) || ($2 == "topk" && p != 3))
                print "bad: " $0; next }
        { print "extra: " $0 }
        END { if (n != 2) print "answers: " n }')
    [ -z "$bad" ] && ok || no "bench_torch_routing.py serve: $bad ($out)"
    if printf 'time nosuch 1 3 0 10\n' | /usr/bin/python3 sim/bench_torch_routing.py serve \
            --dir "$T/sv" --threads 1 --cf 5/4 >"$T/svo" 2>"$T/sve"; then
        no "serve took a request for an unknown router"
    else has "$T/sve" "bench_torch_routing.py: bad request 'time nosuch 1 3 0 10"; fi
    # a twin process that ends after its first answer (one round a cell from --large-from 512
    # on): that twin's time kept, the later twins of that (n, E) skipped and said so, the next
    # (n, E) with a new process
    if env -u OPENBLAS_CORETYPE "$M" bench --routing --sizes 512,1024 --experts 8 --routers switch,topk --large-from 512 \
            --repeats 2 --large-repeats 1 --min-time 0 --python /bin/sh --torch-script tests/bench/twin_dies.sh \
            --db "$T/d.db" >"$T/dout" 2>"$T/derr"; then ok
    else no "bench --routing with a dying twin exited $?: $(cat "$T/derr")"; fi
    count "$T/derr" '^bench --routing: PyTorch switch .* each after moesim' 2
    count "$T/derr" '^bench --routing: PyTorch topk ' 0
    count "$T/derr" '^bench --routing: \*\*\* the PyTorch timing at n=[0-9]* E=8 exited with 0: its cells from the first failed one are SKIPPED \*\*\*$' 2
    got=$(sqlite3 "$T/d.db" "SELECT group_concat(router || ':' || n, ' ') FROM (SELECT router, n FROM bench WHERE metric = 'time_torch' ORDER BY n)" 2>&1)
    [ "$got" = "switch:512 switch:1024" ] && ok || no "PyTorch times kept with a dying twin: got '$got'"
    # the layer against the real PyTorch reference in rounds (its --serve mode): its outputs
    # agree, and each layer has its rounds
    if env -u OPENBLAS_CORETYPE "$M" bench --quick --config E8k2 --repeats 2 --db "$T/lt.db" \
            >"$T/ltout" 2>"$T/lterr"; then ok
    else no "bench --quick with PyTorch exited $?: $(cat "$T/lterr")"; fi
    count "$T/ltout" '^  agreement: rel L2 vs moesim: loop .* (ok, tolerance 1e-04); routing identical' 1
    count "$T/ltout" '^  in 2 rounds (two moesim forwards, then two of the fastest, the second of each timed): moesim [0-9.]* ms, torch [0-9.]* ms (medians) = [0-9.]*x' 1
    # the reference's --serve protocol on a small layer written here (T 64, D 16, F 32, E 4):
    # its table as one line of JSON, then one answer per request (as many times as asked), and
    # exit status 2 on a request it cannot read
    mkdir "$T/sv2"
    /usr/bin/python3 - "$T/sv2" <<'PY'
import sys, numpy as np
d, r = sys.argv[1], np.random.default_rng(3)
T, D, F, E = 64, 16, 32, 4
for name, shape in (("x", (T, D)), ("wg", (D, E)), ("w1", (E, D, F)), ("b1", (E, F)),
                    ("w2", (E, F, D)), ("b2", (E, D))):
    np.save("%s/%s.npy" % (d, name), r.standard_normal(shape).astype(np.float32))
np.save(d + "/kept.npy", np.zeros((0, 2), np.int64))
PY
    printf 'time loop 1 3\ntime einsum 2 1\n' | /usr/bin/python3 sim/bench_torch_moe.py --dir "$T/sv2" \
        --router topk --k 2 --capacity 40 --repeats 1 --einsum-repeats 1 --threads 1 --serve \
        >"$T/sv2o" 2>"$T/sv2e" && ok || no "--serve exited $?: $(cat "$T/sv2e")"
    got=$(sed -n '2,$p' "$T/sv2o" | awk '{ ok = NF == 3 + ($1 == "time" && $2 == "loop" ? 3 : 1); for (i = 4; i <= NF; i++) ok = ok && $i > 0; printf "%s:%s:%d ", $2, $3, ok }')
    [ "$got" = "loop:1:1 einsum:2:1 " ] && ok || no "--serve answers: got '$got' ($(cat "$T/sv2o"))"
    if printf 'time loop 0 3\n' | /usr/bin/python3 sim/bench_torch_moe.py --dir "$T/sv2" --router topk \
            --k 2 --capacity 40 --repeats 1 --einsum-repeats 1 --threads 1 --serve >/dev/null 2>"$T/sv3e"; then
        no "--serve took a request for 0 threads"
    else has "$T/sv3e" "bench_torch_moe.py: bad request 'time loop 0 3'"; fi
    # the interpreter's path holding a quote and a space is an argument, never shell text: the
    # twin runs and the version of its torch is stored
    hq="$T/py's dir"
    mkdir -p "$hq" && ln -s /usr/bin/python3 "$hq/python3"
    if env -u OPENBLAS_CORETYPE "$M" bench --routing --sizes 512 --experts 8 --routers switch \
            --repeats 2 --min-time 0 --python "$hq/python3" --db "$T/q.db" >"$T/qout" 2>"$T/qerr"; then ok
    else no "bench --routing with a quoted interpreter path exited $?: $(cat "$T/qerr")"; fi
    count "$T/qerr" '^bench --routing: PyTorch switch k=1 n=512 E=8: ' 1
    want=$(/usr/bin/python3 -c 'import torch; print(torch.__version__)' 2>&1)
    got=$(sqlite3 "$T/q.db" "SELECT group_concat(DISTINCT torch) FROM bench" 2>&1)
    [ -n "$want" ] && [ "$got" = "$want" ] && ok || no "torch version with a quoted interpreter path: got '$got', expected '$want'"
    count "$T/perr" '^bench --routing: plan check on 4096 tokens, E=' 1
    count "$T/pout" ' same ' 28
    # the JSON file holds exactly the database's rows (doubles written with 17 digits)
    js=$(python3 - "$T/p.db" "$T/p.json" <<'PY'
import json, sqlite3, sys
db = sqlite3.connect(sys.argv[1])
cols = ("config", "router", "n", "E", "k", "repeats", "capacity", "kept", "metric", "median",
        "min", "max")
a = sorted(tuple(r) for r in db.execute("SELECT %s FROM bench" % ", ".join(cols)))
b = sorted(tuple(x[c] for c in cols) for x in json.load(open(sys.argv[2]))["rows"])
b = [tuple(None if v == "" and i == 1 else v for i, v in enumerate(r)) for r in b]
print("equal" if a == b else "differ: %d vs %d rows, first %s" %
      (len(a), len(b), next((p for p in zip(a, b) if p[0] != p[1]), None)))
PY
)
    [ "$js" = equal ] && ok || no "JSON vs database: $js"
    lacks "temporary folders left" "$T/perr" "could not remove"
    # --min-time in the script: at least --repeats passes, then more until they add up to
    # --min-time (or --max-repeats); checked on what it prints (best, passes, their total)
    twin_inputs "$T/mt" 64 3
    for mt in "0 1000" "0.02 1000" "0.02 5"; do
        set -- $mt
        out=$(/usr/bin/python3 sim/bench_torch_routing.py time --dir "$T/mt" --cases switch:1,topk:2 \
              --repeats 3 --min-time "$1" --max-repeats "$2" --threads 1 --cf 5/4 2>&1)
        bad=$(printf '%s\n' "$out" | awk -v S="$1" -v M="$2" '
            $1 == "time" { n++; p = $7; best = $6; tot = $8
                if (p < 3 || p > M || best * p > tot * (1 + 1e-9) ||
                    (S == 0 && p != 3) || (p < M && tot < S) ||
                    (p > 3 && (p - 1) * best >= S)) print "bad: " $0 }
            END { if (n != 2) print "lines: " n }')
        [ -z "$bad" ] && ok || no "bench_torch_routing.py --min-time $1 --max-repeats $2: $bad ($out)"
    done
fi

# ---- --config train alone: no layer section (with --quick the training step only says so) ----
if env -u OPENBLAS_CORETYPE "$M" bench --quick --no-torch --config train --db "$T/t.db" \
        >"$T/outt" 2>"$T/errt"; then ok; else no "bench --config train exited $?: $(cat "$T/errt")"; fi
count "$T/outt" '^== layer ' 0
count "$T/outt" '^== training step: skipped' 1

# ---- a second run adds rows, it does not replace them ----
if env -u OPENBLAS_CORETYPE "$M" bench --quick --no-torch --repeats 1 --db "$T/b.db" \
        >"$T/out2" 2>"$T/err2"; then ok; else no "second run exited $?: $(cat "$T/err2")"; fi
command -v sqlite3 >/dev/null && eq "two layer runs" "SELECT count(DISTINCT run) FROM bench WHERE config NOT LIKE 'routing%'" 2

# ---- a forced core type weaker than the CPU's ----
OPENBLAS_CORETYPE=Haswell "$M" bench --quick --no-torch --repeats 1 --db "$T/h.db" \
    >"$T/out3" 2>"$T/err3" && ok || no "bench with OPENBLAS_CORETYPE=Haswell exited $?"
has "$T/out3" '^BLAS: .*core Haswell; 2 threads; OPENBLAS_CORETYPE Haswell$'
if [ $avx512 = 1 ]; then
    [ "$(cat "$T/err3")" = "$WARN" ] && ok || no "warning: got '$(cat "$T/err3")'"
else
    [ -s "$T/err3" ] && no "warning on a CPU without AVX-512: $(cat "$T/err3")" || ok
fi
# an AVX-512 core forced on purpose is no loss: no warning (only where the CPU has AVX-512:
# elsewhere OpenBLAS's SkylakeX kernels stop at their first illegal instruction)
if [ $avx512 = 1 ]; then
    OPENBLAS_CORETYPE=SkylakeX "$M" bench --quick --no-torch --repeats 1 --db "$T/s.db" \
        >"$T/out4" 2>"$T/err4" && ok || no "bench with OPENBLAS_CORETYPE=SkylakeX exited $?"
    [ -s "$T/err4" ] && no "warning for SkylakeX: $(cat "$T/err4")" || ok
else
    skip 2 "the CPU has no AVX-512, so OPENBLAS_CORETYPE=SkylakeX cannot run here"
fi

# ---- the PyTorch reference's failure modes, with a stand-in script ----
FT="--python /bin/sh --torch-script tests/bench/fake_torch.sh"
FAKE_TORCH=missing env -u OPENBLAS_CORETYPE "$M" bench --quick --repeats 1 --db "$T/f.db" $FT \
    >"$T/out5" 2>"$T/err5" && ok || no "torch missing: exit $?: $(cat "$T/err5")"
count "$T/out5" '^torch: skipped: PyTorch not available to /bin/sh (exit 3)$' 3
mkdir "$T/tmp"
FAKE_TORCH=wrong TMPDIR="$T/tmp" env -u OPENBLAS_CORETYPE "$M" bench --quick --repeats 1 \
    --db "$T/f.db" $FT >"$T/out6" 2>"$T/err6" && no "outputs that disagree: exit 0" || ok
count "$T/out6" '^  agreement: rel L2 vs moesim: .*(DISAGREE, tolerance 1e-04)' 3
has "$T/err6" '^moesim: error: 3 output checks failed (bench)$'
has "$T/out6" '^E16k2  layer vs fastest PyTorch'
# the rounds: the stand-in answers every request with 0.25 s forwards; the target's ratio is
# PyTorch's median over moesim's in the rounds (checked on the stored rows of the three layers)
count "$T/out6" '^  in 1 rounds (two moesim forwards, then two of the fastest, the second of each timed): moesim [0-9.]* ms, torch 250.00 ms (medians) = ' 3
count "$T/out6" '^E[0-9]*k[0-9]  *layer vs fastest PyTorch  *[0-9.]*x  (>= 1.3x)  .* (in rounds; timed apart: [0-9.]*x)$' 3
if command -v sqlite3 >/dev/null; then
    got=$(sqlite3 "$T/f.db" "SELECT count(*) FROM bench a JOIN bench b ON a.run = b.run AND a.config = b.config JOIN bench c ON c.run = a.run AND c.config = a.config WHERE a.metric = 'ratio_vs_torch_best_rounds' AND b.metric = 'time_layer_rounds' AND c.metric = 'torch_best_time_layer_rounds' AND c.median = 0.25 AND b.repeats = 1 AND abs(a.median - c.median / b.median) <= 1e-12 * a.median AND a.run = (SELECT max(run) FROM bench)" 2>&1)
    [ "$got" = 3 ] && ok || no "rounds rows (ratio = PyTorch / moesim medians): got '$got' layers, expected 3"
else
    skip 1 "the sqlite3 command is missing"
fi
# a reference that gives its table but answers no round: an error naming the round, nothing
# stored, no file left
mkdir "$T/tmpq"
FAKE_TORCH=quiet TMPDIR="$T/tmpq" env -u OPENBLAS_CORETYPE "$M" bench --quick --repeats 1 \
    --config E8k2 --db "$T/qu.db" $FT >"$T/outq" 2>"$T/errq" && no "no rounds answered: exit 0" || ok
has "$T/errq" '^moesim: error: the PyTorch reference did not answer its round 1 (loop, 2 threads; tests/bench/fake_torch.sh)$'
[ -z "$(ls -A "$T/tmpq")" ] && ok || no "temporary files left: $(ls -R "$T/tmpq")"
if command -v sqlite3 >/dev/null; then
    n=$(sqlite3 "$T/qu.db" "SELECT count(*) FROM bench" 2>&1)
    [ "$n" = 0 ] && ok || no "run without rounds stored rows: $n"
else
    skip 1 "the sqlite3 command is missing"
fi
[ -z "$(ls -A "$T/tmp")" ] && ok || no "temporary files left: $(ls -R "$T/tmp")"
FAKE_TORCH=garbage env -u OPENBLAS_CORETYPE "$M" bench --quick --repeats 1 --db "$T/g.db" $FT \
    >"$T/out7" 2>"$T/err7" && no "garbage from torch: exit 0" || ok
has "$T/err7" "^moesim: error: cannot read the PyTorch reference's JSON"
if command -v sqlite3 >/dev/null; then
    # a failed run stores nothing (one transaction per run)
    n=$(sqlite3 "$T/g.db" "SELECT count(*) FROM bench" 2>&1)
    [ "$n" = 0 ] && ok || no "failed run stored rows: $n"
fi
# the interpreter's path and TMPDIR holding a quote and a space are arguments, never shell
# text: the reference runs on the inputs in that folder, and the folder is left empty
hp="$T/it's here"
mkdir -p "$hp/tmp" && ln -s /bin/sh "$hp/sh"
FAKE_TORCH=wrong TMPDIR="$hp/tmp" env -u OPENBLAS_CORETYPE "$M" bench --quick --repeats 1 \
    --config E8k2 --db "$T/h.db" --python "$hp/sh" --torch-script tests/bench/fake_torch.sh \
    >"$T/out8" 2>"$T/err8" && no "outputs that disagree (quoted paths): exit 0" || ok
count "$T/out8" '^  agreement: rel L2 vs moesim: .*(DISAGREE, tolerance 1e-04)' 1
[ -z "$(ls -A "$hp/tmp")" ] && ok || no "temporary files left: $(ls -R "$hp/tmp")"
# SIGTERM while the reference runs: the inputs and their folder are removed, and the bench ends
# by that signal (the stand-in writes its process id, then sleeps until the test ends it)
mkdir "$T/tmp9"
FAKE_TORCH=hang FAKE_TORCH_PID="$T/fake.pid" TMPDIR="$T/tmp9" env -u OPENBLAS_CORETYPE "$M" \
    bench --quick --repeats 1 --config E8k2 --db "$T/i.db" $FT >"$T/out9" 2>"$T/err9" &
bp=$!
i=0
while [ ! -s "$T/fake.pid" ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i + 1)); done
[ -n "$(ls -A "$T/tmp9")" ] && ok || no "no temporary folder while the reference runs"
kill -TERM $bp
{ wait $bp; st=$?; } 2>/dev/null
[ -s "$T/fake.pid" ] && kill "$(cat "$T/fake.pid")" 2>/dev/null
[ $st = 143 ] && ok || no "bench after SIGTERM exited $st, expected 143 (128 + SIGTERM)"
[ -z "$(ls -A "$T/tmp9")" ] && ok || no "temporary files left after SIGTERM: $(ls -R "$T/tmp9")"

# ---- flags ----
"$M" bench --help >"$T/help" 2>&1 && ok || no "bench --help exited $?"
has "$T/help" '^usage: moesim bench'
experr() {
    desc=$1; pat=$2; shift 2
    "$M" bench "$@" >"$T/o" 2>"$T/e" && { no "$desc: exit 0"; return; }
    grep -q -- "$pat" "$T/e" && ok || no "$desc: '$(head -1 "$T/e")' lacks '$pat'"
}
experr "repeats 0" "moesim: error: bad value '0' for --repeats: want an integer in 1..1000 (command line)" --quick --repeats 0
experr "threads x" "moesim: error: bad value 'x' for --threads: want an integer in 1..1024 (command line)" --quick --threads x
experr "peak x" "moesim: error: bad value 'x' for --peak-gflops: want a positive number (command line)" --quick --peak-gflops x
experr "seed -1" "moesim: error: bad value '-1' for --seed: want an integer >= 0 (command line)" --quick --seed -1
experr "unknown config" "moesim: error: unknown configuration 'E1' for --config (command line)" --quick --config E1
experr "unknown config after train" "moesim: error: unknown configuration 'trainx' for --config (command line)" --quick --config train,trainx
experr "unknown flag" "moesim: error: unknown or incomplete flag '--fast' (command line)" --fast
experr "stray argument" "moesim: error: unexpected argument 'extra' (command line)" --quick extra
experr "routing sizes 0" "moesim: error: bad list '0' (--sizes)" --routing --sizes 0
experr "routing large-from 0" "moesim: error: --repeats >= 1, --large-repeats >= 1, --large-from >= 1, --threads >= 0, --check-n >= 16, --min-time from 0 to 60 (command line)" --routing --large-from 0
experr "routing min-time -1" "moesim: error: --repeats >= 1, --large-repeats >= 1, --large-from >= 1, --threads >= 0, --check-n >= 16, --min-time from 0 to 60 (command line)" --routing --min-time -1
experr "routing min-time x" "moesim: error: --repeats >= 1, --large-repeats >= 1, --large-from >= 1, --threads >= 0, --check-n >= 16, --min-time from 0 to 60 (command line)" --routing --min-time 1x
experr "bad db" "moesim: error: cannot open the database: unable to open database file" --quick --no-torch --db "$T/no/such/dir/b.db"

finish
