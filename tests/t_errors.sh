#!/bin/sh
# t_errors.sh: the rows of the README's bad-input table ("Bad inputs") whose "where tested"
# column names this file (the table names the test of every row). Each test checks the exact
# "moesim: error:" line, a non-zero exit, one error line only, and that nothing was written:
# no file appears in the working folder, and an existing output stays intact. Disk-full runs on
# a 64 KiB tmpfs when this test may mount one (root), else it is skipped with a message; the
# file-size limit (ulimit -f, SIGXFSZ ignored so that write() fails with EFBIG) runs anywhere.
# Either way a sweep's database must pass PRAGMA integrity_check and hold whole points only,
# and resume to the full sweep once there is room.
# tests/run.sh runs it from the repository root with MOESIM; prints "t_errors: N passed, N
# failed[, N skipped]" last.
NAME=t_errors
. tests/lib.sh
FIX="$REPO/tests/fixtures/errors"
mounted=
cleanup_extra='[ -n "$mounted" ] && umount "$mounted" 2>/dev/null'
make_tmp
T=$tmp
O=$T/out          # captured stdout/stderr, outside the working folder
W=$T/w            # working folder: messages name files relative to it
mkdir -p "$O" "$W"
cd "$W" || exit 1
unset OPENBLAS_NUM_THREADS

# expect_error DESCRIPTION MESSAGE COMMAND...: COMMAND exits 1, prints exactly one line
# "moesim: error: MESSAGE", and the listing of the working folder (names, sizes, checksums)
# is the same afterwards: nothing written, nothing changed.
expect_error() {
    desc=$1; msg=$2; shift 2
    before=$(find . -type f -exec cksum {} + | sort)
    "$@" >"$O/stdout" 2>"$O/stderr"
    rc=$?
    after=$(find . -type f -exec cksum {} + | sort)
    got=$(grep '^moesim: error:' "$O/stderr")
    if [ $rc -ne 1 ]; then
        no "$desc: exit $rc, expected 1 ($(cat "$O/stderr"))"
    elif [ "$got" != "moesim: error: $msg" ]; then
        no "$desc: got '$got', expected 'moesim: error: $msg'"
    elif [ "$before" != "$after" ]; then
        no "$desc: the working folder changed: $(printf '%s\n' "$after" | grep -vxF "$before")"
    else
        ok
    fi
}

# a spec: spec NAME [sed expression]: writes NAME.ini from the base spec
spec() {
    cat >"$1.ini" <<'EOF'
[experiment]
name = e
routers = topk
capacity_factors = 1.0
tokens = 16
[router.topk]
k = 2
[distribution.g]
source = gaussian
[shape.s]
d = 4
f = 8
E = 4
EOF
    [ -n "${2:-}" ] && sed -i "$2" "$1.ini"
    return 0
}
run() { "$M" run "$@" --db x.db --no-plots; }

# ---- malformed specs: located by file, line and key; nothing runs, no database ----
spec syntax 's/^\[router.topk\]$/[router.topk/'
expect_error "spec syntax error" "syntax error (syntax.ini:6)" run syntax.ini
spec unknown_key 's/^k = 2$/k = 2\nkk = 3/'
expect_error "unknown routing option" \
    "unknown routing option 'kk' (unknown_key.ini:8, key router.topk.kk)" run unknown_key.ini
spec unknown_exp 's/^tokens = 16$/tokns = 16/'
expect_error "unknown experiment key" "unknown key (unknown_exp.ini:5, key experiment.tokns)" \
    run unknown_exp.ini
spec unknown_router 's/^k = 2$/type = top3/'
expect_error "unknown router type" \
    "unknown router type 'top3' (unknown_router.ini:7, key router.topk.type)" \
    run unknown_router.ini
# an option written for a router it does not apply to (the routers column of sim/options.c):
# soft_moe has no capacity, threshold_on is gshard's draw test
spec cf_soft 's/^k = 2$/type = soft_moe\ncapacity_factor = 1.5/'
expect_error "option for another router (spec)" \
    "option capacity_factor does not apply to router soft_moe (cf_soft.ini:8, key router.topk.capacity_factor)" \
    run cf_soft.ini
spec set_thr
expect_error "option for another router (--set)" \
    "option threshold_on does not apply to router topk (--set:1, key router.topk.threshold_on)" \
    run set_thr.ini --set router.topk.threshold_on=raw
expect_error "option for another router (route flag)" \
    "option capacity_factor does not apply to router soft_moe (--capacity-factor)" \
    "$M" route --router soft_moe --logits "$FIX/good.npy" --plan p.csv --capacity-factor 1.5
spec k_gt_e 's/^k = 2$/k = 5/'
expect_error "k > E in a spec" \
    "k = 5 exceeds E = 4 (router topk, shape s) (k_gt_e.ini:7, key router.topk.k)" run k_gt_e.ini
spec seq_len 's/^k = 2$/k = 2\nsequence_length = 5/'
expect_error "sequence_length not dividing the tokens in a spec" \
    "sequence_length 5 does not divide tokens = 16 (seq_len.ini:8, key router.topk.sequence_length)" \
    run seq_len.ini
expect_error "sequence_length not dividing the tokens (route flag)" \
    "sequence_length 5 does not divide the batch's 6 tokens (sequence_length)" \
    "$M" route --router topk --logits "$FIX/good.npy" --plan p.csv --sequence-length 5
spec cf_neg 's/^capacity_factors = 1.0$/capacity_factors = 1.0 -1/'
expect_error "cf < 0 in a spec" \
    "capacity factor '-1' is not a non-negative decimal (cf_neg.ini:4, key experiment.capacity_factors)" \
    run cf_neg.ini
spec empty_list 's/^capacity_factors = 1.0$/capacity_factors =/'
expect_error "empty list" "empty list (empty_list.ini:4, key experiment.capacity_factors)" \
    run empty_list.ini
# "1" and "01" are one seed: before the fix (found by tests/fuzz/fuzz_spec.c) they made two
# points with one configuration key, and the second failed to store
spec dup_seed 's/^tokens = 16$/tokens = 16\nseeds = 1 01/'
expect_error "a seed listed twice" \
    "seed 1 is listed twice ('1' and '01') (dup_seed.ini:6, key experiment.seeds)" run dup_seed.ini
spec dup_tokens 's/^tokens = 16$/tokens = 16 016/'
expect_error "a token count listed twice" \
    "16 is listed twice ('16' and '016') (dup_tokens.ini:5, key experiment.tokens)" \
    run dup_tokens.ini
expect_error "missing spec" "cannot open spec: No such file or directory (nope.ini)" run nope.ini
spec okspec
expect_error "bad --set" \
    "bad override 'experiment.tokens' (--set:1)" run okspec.ini --set experiment.tokens

# ---- bad .npy inputs through the npy source of a spec (moesim route: tests/t_route.sh) ----
cp "$FIX/nan.npy" "$FIX/inf.npy" "$FIX/truncated.npy" "$FIX/int_logits.npy" .
npy_spec() {
    spec "$1" "s/^source = gaussian$/source = npy\nlogits = $2/"
}
npy_spec n_nan nan.npy
expect_error "NaN logit in an npy source" \
    "non-finite logit at row 2, column 1 of nan.npy (n_nan.ini:10, key distribution.g.logits)" run n_nan.ini
npy_spec n_inf inf.npy
expect_error "-inf logit in an npy source" \
    "non-finite logit at row 5, column 3 of inf.npy (n_inf.ini:10, key distribution.g.logits)" run n_inf.ini
npy_spec n_trunc truncated.npy
expect_error "truncated .npy in an npy source" \
    "truncated .npy data: the header promises 96 bytes (24 float32), the file holds 86 (truncated.npy) (n_trunc.ini:10, key distribution.g.logits)" \
    run n_trunc.ini
npy_spec n_int int_logits.npy
expect_error "int64 logits in an npy source" \
    "array must be float32 or float64, got int64 (logits int_logits.npy) (n_int.ini:10, key distribution.g.logits)" \
    run n_int.ini

# ---- malformed trace rows: through a trace source of a spec, and moesim trace info ----
printf 'Layer ID,Batch Number,Token,Activated Expert IDs\n1,0,The,"[1, 2, 3, 4, 5, 6]"\n1,0,cat,"[7, 8, 9, 10, 11]"\n' >ds_k.csv
printf 'Layer ID,Batch Number,Token,Activated Expert IDs\n1,0,The,"[1, 2, 3, 4, 5, 64]"\n' >ds_range.csv
printf 'Layer ID,Batch Number,Token,Activated Expert IDs\n1,0,The,"[1, 2, 3\n' >ds_trunc.csv
printf '{"problem_id": 0, "layer": 0, "experts": [6, 5], "gating_probs": [0.7, 0.3], "token_idx": 0}\n{"problem_id": 0, "layer": 0, "experts": [6, 5], "tok' >mx_trunc.jsonl
printf '{"problem_id": 0, "layer": 0, "experts": [6, 6], "token_idx": 0}\n' >mx_twice.jsonl
printf 'layer_id,token_id,expert_0,expert_1,expert_2,expert_3\n0,0,0.5,0,0.3,0\n0,1,0,1.25,0,0.6\n' >fl_range.csv
printf 'layer_id,token_id,expert_0,expert_1,expert_2,expert_3\n0,0,0.5,0,0.3\n' >fl_cols.csv
# trace_spec NAME SOURCE FILE LAYER E
trace_spec() {
    spec "$1" "s/^source = gaussian$/source = $2\npath = $3\nlayer = $4/; s/^E = 4$/E = $5/"
}
trace_spec t_ds_k trace_deepseek ds_k.csv 1 64
expect_error "DeepSeek row with 5 ids after rows with 6" \
    "record lists 5 experts, earlier records 6 (ds_k.csv:3) (t_ds_k.ini:10, key distribution.g.path)" \
    run t_ds_k.ini
trace_spec t_ds_range trace_deepseek ds_range.csv 1 64
expect_error "DeepSeek expert id 64 of 64 experts" \
    "expert id 64 out of range 0..63 (ds_range.csv:2) (t_ds_range.ini:10, key distribution.g.path)" \
    run t_ds_range.ini
trace_spec t_ds_trunc trace_deepseek ds_trunc.csv 1 64
expect_error "DeepSeek row cut inside a quoted field" \
    "unterminated quoted field (ds_trunc.csv:2) (t_ds_trunc.ini:10, key distribution.g.path)" \
    run t_ds_trunc.ini
trace_spec t_mx_trunc trace_mixtral mx_trunc.jsonl 0 8
expect_error "Mixtral JSONL cut mid-record" \
    "not a JSON record: premature end of input near '\"tok' (mx_trunc.jsonl:2) (t_mx_trunc.ini:10, key distribution.g.path)" \
    run t_mx_trunc.ini
trace_spec t_fl_range trace_flame fl_range.csv 0 4
expect_error "FLAME probability above 1" \
    "bad score '1.25' for expert 1 (fl_range.csv:3) (t_fl_range.ini:10, key distribution.g.path)" \
    run t_fl_range.ini
expect_error "trace info: Mixtral expert listed twice" \
    "expert id 6 listed twice (mx_twice.jsonl:1)" "$M" trace info mx_twice.jsonl
expect_error "trace info: FLAME row with too few columns" \
    "expected 6 columns, found 5 (fl_cols.csv:2)" "$M" trace info fl_cols.csv

# ---- gnuplot missing after a sweep (moesim plot itself: tests/t_plot.sh) ----
# The points are stored (the sweep is done), then the charts fail: exit 1, whole points kept.
spec plotme
mkdir -p "$T/nobin"
PATH="$T/nobin" "$M" run plotme.ini --db "$T/plot.db" >"$O/stdout" 2>"$O/stderr"
rc=$?
got=$(grep '^moesim: error:' "$O/stderr")
[ $rc = 1 ] && [ "$got" = "moesim: error: gnuplot not found on PATH ($T/nobin)" ] && ok \
    || no "run without gnuplot: exit $rc, '$got'"
[ "$(q "$T/plot.db" 'SELECT count(*) FROM points')" = 1 ] && \
    [ "$(q "$T/plot.db" 'SELECT count(*) FROM expert_loads')" = 4 ] && ok \
    || no "run without gnuplot: the stored point is not whole"

# ---- unwritable database (read-only folder as a plain user: tests/t_run.sh) ----
# A path below a regular file cannot be created, even by root.
: >afile
expect_error "database below a regular file" \
    "cannot open the database: unable to open database file (afile/x.db)" \
    "$M" run okspec.ini --db afile/x.db --no-plots
expect_error "plan below a regular file" \
    "cannot write plan: Not a directory (afile/p.csv)" \
    "$M" route --router topk --logits "$FIX/good.npy" --plan afile/p.csv

# ---- a full disk and a file-size limit: outputs absent or intact, whole points only ----
# big.npy: float32 zeros (32768, 8), written without Python: a plan of 65536 rows (~1 MB)
hdr="{'descr': '<f4', 'fortran_order': False, 'shape': (32768, 8), }"
hl=$(( (10 + ${#hdr} + 1 + 63) / 64 * 64 - 10 ))
{
    printf '\223NUMPY\001\000'
    printf "\\$(printf %03o $((hl % 256)))\\$(printf %03o $((hl / 256)))"
    printf "%s%*s\n" "$hdr" $((hl - ${#hdr} - 1)) ''
    head -c 1048576 /dev/zero
} >"$T/big.npy"
# a sweep of 80 small points with E = 64 (each point ~5 KB of rows)
cat >"$T/sweep.ini" <<'EOF'
[experiment]
name = full
routers = topk switch
capacity_factors = 1.0 1.5
tokens = 16
seeds = 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20
error_tokens = 8
[router.topk]
k = 2
[router.switch]
type = switch
[distribution.g]
source = gaussian
[shape.s]
d = 4
f = 8
E = 64
EOF
# whole_points DB DESCRIPTION: integrity ok, some but not all of the 80 points stored, and
# every stored point has all its child rows
whole_points() {
    if [ "$(q "$1" 'PRAGMA integrity_check')" != ok ]; then
        no "$2: integrity_check failed"
        return
    fi
    n=$(q "$1" 'SELECT count(*) FROM points')
    [ "$(q "$1" 'SELECT count(*) FROM expert_loads')" = $((n * 64)) ] && \
        [ "$(q "$1" 'SELECT count(*) FROM batches')" = "$n" ] && \
        [ "$(q "$1" 'SELECT count(*) FROM experts_per_token')" = $((n * 65)) ] && \
        [ "$n" -ge 1 ] && [ "$n" -lt 80 ] && ok || no "$2: $n points, not all whole"
}
# sweep_fails DB DESCRIPTION MESSAGE RUNNER...: the sweep stops with MESSAGE as its error line
sweep_fails() {
    db=$1; desc=$2; msg=$3; shift 3
    "$@" "$M" run "$T/sweep.ini" --db "$db" --no-plots >"$O/stdout" 2>"$O/stderr"
    rc=$?
    got=$(grep '^moesim: error:' "$O/stderr")
    [ $rc = 1 ] && [ "$got" = "moesim: error: $msg" ] && ok \
        || no "$desc: exit $rc, '$got' (expected '$msg')"
    whole_points "$db" "$desc"
}

# the file-size limit: RLIMIT_FSIZE in a subshell, SIGXFSZ ignored (write fails with EFBIG);
# 400 blocks: 200 KiB in dash (512-byte blocks), 400 KiB in bash; the database gets 600 blocks
# (a new database with its schema and the t-quantile table of the statistics over seeds takes
# about 200 KiB, so that a few points fit before the limit)
limited() { (trap '' XFSZ; ulimit -f 400; "$@"); }
limited_db() { (trap '' XFSZ; ulimit -f 600; "$@"); }
mkdir lim
echo "an earlier plan" >lim/p.csv
expect_error "plan beyond the file-size limit: earlier plan intact" \
    "cannot write plan: File too large (lim/p.csv)" \
    limited "$M" route --router topk --logits "$T/big.npy" --plan lim/p.csv
sweep_fails "$T/lim.db" "sweep beyond the file-size limit" \
    "cannot commit the point: disk I/O error ($T/lim.db)" limited_db
"$M" run "$T/sweep.ini" --db "$T/lim.db" --no-plots >/dev/null 2>"$O/stderr" \
    && [ "$(q "$T/lim.db" 'SELECT count(*), count(DISTINCT config_key) FROM points')" = "80|80" ] \
    && ok || no "resume after the file-size limit: $(tail -1 "$O/stderr")"

# a full disk: a 64 KiB tmpfs (needs root and a kernel that lets this process mount), grown to
# 512 KiB (room for the schema and a few points), then to 8 MiB
mkdir "$T/full"
if [ "$(id -u)" = 0 ] && mount -t tmpfs -o size=64k tmpfs "$T/full" 2>/dev/null; then
    mounted="$T/full"
    echo "an earlier plan" >"$T/full/p.csv"
    expect_error "plan on a full disk" \
        "cannot write plan: No space left on device (../full/p.csv)" \
        "$M" route --router topk --logits "$T/big.npy" --plan ../full/p.csv --metrics ../full/m.json
    [ "$(cat "$T/full/p.csv")" = "an earlier plan" ] && [ "$(ls "$T/full")" = p.csv ] && ok \
        || no "plan on a full disk: the earlier plan changed or files were left: $(ls "$T/full")"
    rm -f "$T/full/p.csv"
    # no room for the schema: the error, and an empty database (no table) that a later run fills
    "$M" run "$T/sweep.ini" --db "$T/full/x.db" --no-plots >"$O/stdout" 2>"$O/stderr"
    rc=$?
    got=$(grep '^moesim: error:' "$O/stderr")
    [ $rc = 1 ] && [ "$got" = "moesim: error: cannot write to the database: database or disk is full ($T/full/x.db)" ] \
        && ok || no "database on a full disk: exit $rc, '$got'"
    [ "$(q "$T/full/x.db" 'PRAGMA integrity_check; SELECT count(*) FROM sqlite_master')" = "ok
0" ] && ok || no "database on a full disk: not an empty database"
    mount -o remount,size=512k "$T/full"
    sweep_fails "$T/full/x.db" "sweep on a full disk" \
        "cannot commit the point: database or disk is full ($T/full/x.db)"
    # room again: the sweep resumes to every point, once each
    mount -o remount,size=8m "$T/full"
    "$M" run "$T/sweep.ini" --db "$T/full/x.db" --no-plots >/dev/null 2>"$O/stderr" \
        && [ "$(q "$T/full/x.db" 'SELECT count(*), count(DISTINCT config_key) FROM points')" = "80|80" ] \
        && ok || no "resume after the disk was full: $(tail -1 "$O/stderr")"
    umount "$T/full" && mounted=
else
    skip 7 "full-disk checks (cannot mount a tmpfs here: needs root); the file-size limit checks ran"
fi
finish
