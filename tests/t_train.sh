#!/bin/sh
# t_train.sh: training sweeps through `moesim run` (a spec with a [train] section; sim/spec_train.c,
# sim/point_train.c, the store's tables train_points, steps and step_loads). Run by tests/run.sh
# with MOESIM=<build>/moesim.
#   - spec errors: unknown key, bad values, a list where one value is wanted, probe_tokens and
#     teacher_k out of range, experiment.batches, trainable = gate with a hash router: one line
#     naming the key (file:line) and nothing written;
#   - a tiny sweep: the rows of every table (eval rows at 0, eval_every, ... and the last step,
#     counted by hand), the point row's metrics equal its last eval row, the step-0 loads add up
#     to the kept entries of the drop rate, the training configuration in train_points and in the
#     config key; a rerun skips every point, a new lr runs only its points, --force replaces;
#   - determinism: 1 and 2 threads and every training axis reversed give identical steps and
#     step_loads tables (exact text of every value);
#   - under mpirun -np 2 (points over ranks; skipped without MPI): the same tables again.
# Prints "t_train: N passed, N failed[, N skipped]" last.
NAME=t_train
. tests/lib.sh
make_tmp

# ---- spec errors ----
spec_tr() { # FILE [TRAIN LINES...]: a small training spec with the given [train] keys
    f=$1; shift
    {
        printf '[experiment]\nname = tr\nrouters = topk hash\ntokens = 64\n'
        printf '\n[router.topk]\ntype = topk\nk = 2\n\n[router.hash]\ntype = hash\n'
        printf '\n[distribution.c]\nsource = clustered\n\n[shape.s]\nd = 8\nf = 16\nE = 4\n'
        printf '\n[train]\n'
        for l in "$@"; do printf '%s\n' "$l"; done
    } >"$f"
}
# err DESC WANT_TEXT TRAIN_LINES...: the spec fails with WANT_TEXT and writes nothing
err() {
    ed=$1 etext=$2; shift 2
    spec_tr "$tmp/e.ini" "$@"
    status "$ed: exit 1" 1 "$tmp/e.out" "$MOESIM" run "$tmp/e.ini" --db "$tmp/e.db" --no-plots
    contains "$ed: message" "$tmp/e.out" "$etext"
    check "$ed: one error line" test "$(grep -c '^moesim: error:' "$tmp/e.out")" = 1
    check "$ed: no database written" test ! -e "$tmp/e.db"
}
# line numbers: [train] is line 21 of spec_tr's file, its first key line 22
err "unknown key" "unknown key ($tmp/e.ini:23, key train.momentum)" "steps = 5" "momentum = 0.9"
err "bad optimizer" "bad value 'rmsprop': want sgd or adam ($tmp/e.ini:22, key train.optimizer)" \
    "optimizer = rmsprop"
err "lr 0" "bad number '0': want a finite number > 0 ($tmp/e.ini:22, key train.lr)" "lr = 0"
err "negative aux_weight" "bad number '-1e-2': want a finite number >= 0 ($tmp/e.ini:23, key train.aux_weight)" \
    "steps = 5" "aux_weight = 0 -1e-2"
err "steps 0" "bad number '0': want an integer in 1..10000000 ($tmp/e.ini:22, key train.steps)" \
    "steps = 0"
err "lr listed twice" "'0.1' and '1e-1' are the same value ($tmp/e.ini:22, key train.lr)" \
    "lr = 0.1 1e-1"
err "eval_every list" "eval_every takes one value, not a list ($tmp/e.ini:22, key train.eval_every)" \
    "eval_every = 5 10"
err "probe_tokens > tokens" "probe_tokens = 65 exceeds tokens = 64 ($tmp/e.ini:22, key train.probe_tokens)" \
    "probe_tokens = 65"
err "teacher_k > teacher_experts" "teacher_k = 3 exceeds teacher_experts = 2 ($tmp/e.ini:23, key train.teacher_k)" \
    "teacher_experts = 2" "teacher_k = 3"
err "trainable = gate with hash" \
    "trainable = gate: router hash (hash) has no trainable gate ($tmp/e.ini:22, key train.trainable)" \
    "trainable = gate"
spec_tr "$tmp/e.ini" "steps = 5"
sed -i 's/^tokens = 64$/tokens = 64\nbatches = 2/' "$tmp/e.ini"
status "batches with [train]: exit 1" 1 "$tmp/e.out" "$MOESIM" run "$tmp/e.ini" --db "$tmp/e.db"
contains "batches with [train]: message" "$tmp/e.out" \
    "batches has no meaning with a [train] section ($tmp/e.ini:5, key experiment.batches)"
spec_tr "$tmp/e.ini" "steps = 5"
status "a [train] key by --set is checked too" 1 "$tmp/e.out" \
    "$MOESIM" run "$tmp/e.ini" --db "$tmp/e.db" --set train.optimizer=lion
contains "--set: message" "$tmp/e.out" "bad value 'lion': want sgd or adam (--set:1, key train.optimizer)"

# ---- a tiny sweep ----
# 2 routers x 2 learning rates = 4 points; steps 25, eval_every 10: eval rows at steps 0, 10, 20
# and the last step 24 (4 rows a point); E = 8
spec=$tmp/t.ini
cat >"$spec" <<EOF
[experiment]
name = t_train
routers = topk switch
capacity_factors = 1.0
tokens = 128
seeds = 3

[router.topk]
type = topk
k = 2

[router.switch]
type = switch

[distribution.c]
source = clustered

[shape.s]
d = 16
f = 32
E = 8

[train]
steps = 25
lr = 1e-3 1e-2
eval_every = 10
aux_weight = 1e-2
EOF
db=$tmp/a.db
status "tiny training sweep" 0 "$tmp/out" "$MOESIM" run "$spec" --db "$db" --no-plots
same "4 points" "$(q "$db" 'SELECT count(*) FROM points')" 4
same "4 train_points rows" "$(q "$db" 'SELECT count(*) FROM train_points')" 4
same "4 eval rows a point" "$(q "$db" 'SELECT group_concat(n) FROM (SELECT count(*) n FROM steps GROUP BY point)')" "4,4,4,4"
same "eval steps 0 10 20 24" "$(q "$db" 'SELECT group_concat(step, " ") FROM steps WHERE point = 1 ORDER BY step')" "0 10 20 24"
same "8 loads per eval row" "$(q "$db" 'SELECT count(*) FROM step_loads')" 128
same "no per-batch rows for training points" \
    "$(q "$db" 'SELECT (SELECT count(*) FROM batches) + (SELECT count(*) FROM expert_loads) + (SELECT count(*) FROM experts_per_token)')" 0
same "points: batches 1" "$(q "$db" 'SELECT DISTINCT batches FROM points')" 1
same "the point row holds its last eval row" \
    "$(q "$db" 'SELECT count(*) FROM points p JOIN steps s ON s.point = p.id AND s.step = 24 WHERE p.load_imbalance = s.load_imbalance AND p.assignment_drop_rate = s.assignment_drop_rate AND p.aux_loss = s.aux_loss')" 4
# kept entries of the step-0 batch = k T (1 - assignment drop rate): topk k = 2, T = 128
same "step-0 loads = kept entries" \
    "$(q "$db" "SELECT count(*) FROM steps s JOIN points p ON p.id = s.point WHERE s.step = 0 AND (SELECT sum(load) FROM step_loads l WHERE l.point = s.point AND l.step = 0) = CAST(round(p.k * 128 * (1 - s.assignment_drop_rate)) AS INTEGER)")" 4
same "training configuration stored" \
    "$(q "$db" "SELECT group_concat(lr || ' ' || optimizer || ' ' || steps || ' ' || eval_every || ' ' || teacher_experts, ',') FROM (SELECT * FROM train_points ORDER BY point)")" \
    "0.001 adam 25 10 8,0.01 adam 25 10 8,0.001 adam 25 10 8,0.01 adam 25 10 8"
same "config key holds the training configuration" \
    "$(q "$db" "SELECT count(*) FROM points WHERE config_key LIKE '% train={steps=25 optimizer=adam lr=0.01 %'")" 2
same "losses are stored and finite" \
    "$(q "$db" 'SELECT count(*) FROM steps WHERE loss > 0 AND heldout_loss > 0 AND gate_entropy >= 0 AND specialisation BETWEEN 0 AND 1')" 16
same "fluctuation 0 at step 0" "$(q "$db" 'SELECT DISTINCT fluctuation FROM steps WHERE step = 0')" 0.0
same "train_summary view" "$(q "$db" 'SELECT count(*) FROM train_summary')" 4
# with lr 1e-2 the held-out loss falls over 25 steps (Adam on a fresh student)
same "held-out loss falls at lr 1e-2" \
    "$(q "$db" 'SELECT count(*) FROM steps a JOIN steps b ON a.point = b.point JOIN train_points t ON t.point = a.point WHERE t.lr = 0.01 AND a.step = 0 AND b.step = 24 AND b.heldout_loss < a.heldout_loss')" 2

# resume, a new axis value, --force
status "rerun" 0 "$tmp/out" "$MOESIM" run "$spec" --db "$db" --no-plots
contains "rerun skips all" "$tmp/out" "0 points run, 4 skipped"
status "a third lr" 0 "$tmp/out" "$MOESIM" run "$spec" --db "$db" --no-plots --set "train.lr=1e-3 1e-2 3e-2"
contains "only the new lr runs" "$tmp/out" "2 points run, 4 skipped"
same "6 points, 24 eval rows" "$(q "$db" 'SELECT count(*) FROM points')|$(q "$db" 'SELECT count(*) FROM steps')" "6|24"
q "$db" 'SELECT p.config_key, s.* FROM steps s JOIN points p ON p.id = s.point ORDER BY 1, s.step' | cut -d'|' -f1,3- >"$tmp/before"
status "--force" 0 "$tmp/out" "$MOESIM" run "$spec" --db "$db" --no-plots --force
contains "--force reruns" "$tmp/out" "4 points run, 0 skipped"
same "--force: no duplicate rows" "$(q "$db" 'SELECT count(*) FROM steps')|$(q "$db" 'SELECT count(*) FROM step_loads')|$(q "$db" 'SELECT count(*) FROM train_points')" "24|192|6"
q "$db" 'SELECT p.config_key, s.* FROM steps s JOIN points p ON p.id = s.point ORDER BY 1, s.step' | cut -d'|' -f1,3- >"$tmp/after"
check "--force reproduces the same curves" cmp -s "$tmp/before" "$tmp/after"

# ---- determinism: threads and sweep order ----
# dump DB: every steps and step_loads value with its point's config key (not the point id)
dump() {
    q "$1" 'SELECT p.config_key, s.* FROM steps s JOIN points p ON p.id = s.point ORDER BY 1, s.step' | cut -d'|' -f1,3-
    q "$1" 'SELECT p.config_key, l.step, l.expert, l.load FROM step_loads l JOIN points p ON p.id = l.point ORDER BY 1, 2, 3'
}
det="--set experiment.tokens=512 --set train.aux_weight=0,1e-2"
rev="--set experiment.routers=switch,topk --set train.lr=1e-2,1e-3 --set train.aux_weight=1e-2,0"
# shellcheck disable=SC2086
OPENBLAS_NUM_THREADS=1 "$MOESIM" run "$spec" --db "$tmp/t1.db" --no-plots $det >"$tmp/o1" 2>&1
check "1 thread ($(tail -2 "$tmp/o1"))" test $? = 0
# shellcheck disable=SC2086
OPENBLAS_NUM_THREADS=2 "$MOESIM" run "$spec" --db "$tmp/t2.db" --no-plots $det $rev >"$tmp/o2" 2>&1
check "2 threads, reversed ($(tail -2 "$tmp/o2"))" test $? = 0
q1='SELECT config_key FROM points WHERE id = 1'
check "the reversed sweep ran in another order" test "$(q "$tmp/t1.db" "$q1")" != "$(q "$tmp/t2.db" "$q1")"
dump "$tmp/t1.db" >"$tmp/d1"
dump "$tmp/t2.db" >"$tmp/d2"
same "8 points x 4 rows + loads" "$(wc -l <"$tmp/d1")" $((8 * 4 + 8 * 4 * 8))
check "1 vs 2 threads, reversed order: identical steps and step_loads" cmp -s "$tmp/d1" "$tmp/d2"

# ---- points over MPI ranks ----
if command -v mpirun >/dev/null 2>&1 && [ -x "$BUILD/tests/mpi_ep_check" ]; then
    mpi_env
    # shellcheck disable=SC2086
    OPENBLAS_NUM_THREADS=1 timeout 300 mpirun --oversubscribe -np 2 "$MOESIM" run "$spec" \
        --db "$tmp/m.db" --no-plots $det >"$tmp/om" 2>&1
    check "mpirun -np 2 ($(tail -3 "$tmp/om"))" test $? = 0
    dump "$tmp/m.db" >"$tmp/dm"
    check "over 2 ranks: identical steps and step_loads" cmp -s "$tmp/d1" "$tmp/dm"
    same "over 2 ranks: train_points" "$(q "$tmp/m.db" 'SELECT count(*) FROM train_points')" 8
    status "--expert-parallel refuses training points" 1 "$tmp/oe" \
        timeout 300 mpirun --oversubscribe -np 2 "$MOESIM" run "$spec" --db "$tmp/e2.db" \
        --no-plots --expert-parallel
    contains "--expert-parallel: message" "$tmp/oe" "training points run on one process"
else
    skip 5 "no MPI (mpirun or an MPI build of moesim missing)"
fi

finish
