#!/bin/sh
# t_route.sh: `moesim route` as a user runs it: a successful run writes the plan, metrics and
# layer output; every bad input (NaN/inf logits, k > E, wrong shapes or dtypes, unknown
# router or option, unreadable or truncated file, unwritable output) exits non-zero with a
# one-line "moesim: error:" message naming the problem, and leaves no output file behind.
M=$(realpath "${MOESIM:-./moesim}")
F=tests/fixtures/errors
R=tests/fixtures/route
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
pass=0; fail=0
ok() { pass=$((pass + 1)); }
no() { fail=$((fail + 1)); echo "FAIL: $*"; }

# expect_error DESCRIPTION PATTERN ARGS...: non-zero exit, PATTERN in the error line, no outputs
expect_error() {
    desc=$1; pat=$2; shift 2
    rm -f "$T"/out.*
    "$M" route "$@" --plan "$T/out.csv" --metrics "$T/out.json" >"$T/stdout" 2>"$T/stderr"
    rc=$?
    err=$(grep '^moesim: error:' "$T/stderr" | head -1)
    if [ $rc -eq 0 ]; then no "$desc: exit 0"; return; fi
    if ! printf '%s' "$err" | grep -q -- "$pat"; then no "$desc: message '$err' lacks '$pat'"; return; fi
    if [ "$(grep -c '^moesim: error:' "$T/stderr")" != 1 ]; then no "$desc: not one error line"; return; fi
    if ls "$T"/out.* >/dev/null 2>&1; then no "$desc: left output behind: $(ls "$T")"; return; fi
    ok
}

# a successful run of the real layer
c=$R/layer_topk_drops
if [ -d "$c" ]; then :; else c=$(ls -d $R/layer_* | head -1); fi
if (cd "$c" && "$M" route $(cat cmd) --plan "$T/p.csv" --metrics "$T/m.json" \
        $( [ -f expected_y.npy ] && echo --output "$T/y.npy" )) 2>"$T/stderr"; then
    head -1 "$T/p.csv" | grep -qx 'token,expert,slot,dispatch_weight,combine_weight' && ok \
        || no "plan header"
    grep -q '"output_error_dense"' "$T/m.json" && ok || no "metrics json keys"
    ls "$T"/*.tmp.* >/dev/null 2>&1 && no "temporary files left" || ok
else
    no "layer case $c failed: $(cat "$T/stderr")"
fi

expect_error "NaN logit" "non-finite logit nan at token 2, column 1 (tests/fixtures/errors/nan.npy)" --router topk --logits $F/nan.npy
expect_error "inf logit" "non-finite logit -inf at token 5, column 3 (tests/fixtures/errors/inf.npy)" --router switch --logits $F/inf.npy
expect_error "k > E" "k = 5 is outside 1..E = 1..4" --router topk --logits $F/good.npy --k 5
expect_error "k = 0" "bad value '0' for option k: want an integer >= 1 (--k)" --router topk --logits $F/good.npy --k 0
expect_error "unknown router" "unknown router 'top3' (--router)" --router top3 --logits $F/good.npy
expect_error "unknown option" "unknown or incomplete flag '--capacity-fraction' (command line)" --router topk --logits $F/good.npy --capacity-fraction 1
expect_error "bad cf" "capacity factor '1.2.3'" --router topk --logits $F/good.npy --capacity-factor 1.2.3
expect_error "negative cf" "capacity factor '-1' is not a non-negative decimal (--capacity-factor)" --router topk --logits $F/good.npy --capacity-factor -1
expect_error "bad order" "want one of choice_major|token_major|bpr|probs" --router topk --logits $F/good.npy --order random
expect_error "missing file" "no_such.npy" --router topk --logits $F/no_such.npy
expect_error "truncated npy" "truncated.npy" --router topk --logits $F/truncated.npy
expect_error "fortran order" "fortran.npy" --router topk --logits $F/fortran.npy
expect_error "int logits" "must be float32 or float64, got int64 (logits tests/fixtures/errors/int_logits.npy)" --router topk --logits $F/int_logits.npy
expect_error "1-d logits" "logits must have 2 dimensions, has 1" --router topk --logits $F/one_d.npy
expect_error "no tokens" "need n >= 1" --router topk --logits $F/empty.npy
expect_error "ids length" "token ids have length 5, logits have 6 rows" --router hash --logits $F/good.npy --tokens $F/ids5.npy
expect_error "negative id" "negative token id -3 at token 2" --router hash --logits $F/good.npy --tokens $F/ids_neg.npy
expect_error "float ids" "must be int32 or int64, got float64 (token ids tests/fixtures/errors/ids_float.npy)" --router hash --logits $F/good.npy --tokens $F/ids_float.npy
expect_error "hash without ids" "router hash needs token ids" --router hash --logits $F/good.npy
expect_error "switch k=2" "k" --router switch --logits $F/good.npy --k 2
expect_error "w1 shape" "w1 has shape (4,2,5), expected (4,3,5)" --router topk --logits $F/good.npy \
    --x $F/x.npy --w1 $F/w1_bad.npy --b1 $F/b1.npy --w2 $F/w2.npy --b2 $F/b2.npy --output "$T/out.npy"
expect_error "partial layer flags" "the layer needs all of --x --w1 --b1 --w2 --b2 --output, 1 of 6 given (command line)" --router topk --logits $F/good.npy --x $F/x.npy
expect_error "stray argument" "unexpected argument 'extra' (command line)" --router topk --logits $F/good.npy extra
expect_error "unknown activation" "gelu_fast" --router topk --logits $F/good.npy --activation gelu_fast

# an unwritable output folder: error naming the path, nothing written
mkdir -p "$T/ro"; chmod 555 "$T/ro"
if [ "$(id -u)" = 0 ]; then
    # root writes anywhere: use a path under a regular file instead
    out="$T/stdout/plan.csv"
else
    out="$T/ro/plan.csv"
fi
if "$M" route --router topk --logits $F/good.npy --plan "$out" 2>"$T/stderr"; then
    no "unwritable plan path accepted"
else
    grep -q "cannot write plan.*plan.csv" "$T/stderr" && ok || no "unwritable: $(cat "$T/stderr")"
fi

# --help and list
"$M" route --help | grep -q -- "--capacity-factor" && ok || no "route --help lacks --capacity-factor"
n=$("$M" list routers | wc -l)
[ "$n" -ge 6 ] && ok || no "list routers printed $n lines"
"$M" list routers | grep -q '^expert_choice ' && ok || no "list routers lacks expert_choice"

# errors of the command line name where they come from: exact first line, exit 1
# first_error WANT ARGS...: `moesim ARGS` exits 1 and its first stderr line is WANT
first_error() {
    want=$1; shift
    "$M" "$@" >"$T/stdout" 2>"$T/stderr"
    rc=$?
    got=$(head -1 "$T/stderr")
    [ $rc = 1 ] && [ "$got" = "$want" ] && ok || no "moesim $*: exit $rc, '$got', want '$want'"
}
first_error "moesim: error: route needs --router, --logits and --plan (command line)" \
    route --router topk --logits $F/good.npy
first_error "moesim: error: unknown list 'bogus' (moesim list)" list bogus

echo "t_route: $pass passed, $fail failed"
[ $fail = 0 ]
