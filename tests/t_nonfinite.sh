#!/bin/sh
# t_nonfinite.sh: non-finite values in and out of the layer. moesim route refuses a NaN or an
# infinity in any input array, naming the array, the index and the file; finite inputs that
# overflow float32 in the layer (x and w1 at 1e30: products 1e60), and a router whose weights
# overflow (topk with --noise-std 1e308), are errors naming what and where, with nothing
# written; moesim run refuses the same noise before storing the point. The .npy inputs are
# written here by a few lines of Python (standard library only: the NumPy format 1.0 header and
# little-endian float32), their values chosen by hand.
NAME=t_nonfinite
. tests/lib.sh
make_tmp
G=tests/fixtures/errors/good.npy   # logits (6,4)

if ! command -v python3 >/dev/null 2>&1; then
    skip 29 "python3 is not installed (it writes the .npy inputs)"
    finish
fi
python3 - "$tmp" <<'PY'
import math, os, struct, sys
d = sys.argv[1]
def save(name, shape, vals):
    dims = ", ".join(map(str, shape)) + ("," if len(shape) == 1 else "")
    hdr = "{'descr': '<f4', 'fortran_order': False, 'shape': (%s), }" % dims
    hdr += " " * ((64 - (10 + len(hdr) + 1) % 64) % 64) + "\n"
    with open(os.path.join(d, name), "wb") as f:
        f.write(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(hdr)) + hdr.encode())
        f.write(struct.pack("<%df" % len(vals), *vals))
x = [((i * 7) % 11 - 5) / 5 for i in range(18)]           # x (6,3), values in [-1, 1]
w1 = [((i * 5) % 13 - 6) / 6 for i in range(60)]          # w1 (4,3,5)
save("x.npy", (6, 3), x)
save("w1.npy", (4, 3, 5), w1)
save("b1.npy", (4, 5), [0.0] * 20)
save("w2.npy", (4, 5, 3), [((i * 3) % 7 - 3) / 3 for i in range(60)])
save("b2.npy", (4, 3), [0.0] * 12)
v = list(w1); v[1 * 15 + 2 * 5 + 3] = math.nan; save("w1_nan.npy", (4, 3, 5), v)   # w1[1,2,3]
v = list(x); v[4 * 3 + 1] = -math.inf; save("x_inf.npy", (6, 3), v)               # x[4,1]
v = [0.0] * 12; v[2 * 3 + 0] = math.inf; save("b2_inf.npy", (4, 3), v)             # b2[2,0]
save("x_big.npy", (6, 3), [1e30] * 18)
save("w1_big.npy", (4, 3, 5), [1e30] * 60)
PY
t=$tmp
lay() { # lay W1 X B2 OUT: the layer arguments
    echo "--x $t/$2 --w1 $t/$1 --b1 $t/b1.npy --w2 $t/w2.npy --b2 $t/$3 --output $t/$4"
}
# shellcheck disable=SC2046
status "finite inputs run" 0 "$t/ok.out" "$M" route --router topk --logits "$G" \
    --plan "$t/ok.csv" $(lay w1.npy x.npy b2.npy y.npy)
check "finite inputs: y written" test -s "$t/y.npy"

# refused (the expected line, hand-derived from the value planted above)
nothing_written() { # DESC: no plan, no output, no temporary
    check "$1: no plan written" test ! -e "$t/bad.csv"
    check "$1: no output written" test ! -e "$t/bad.npy"
    check "$1: no temporary left" test -z "$(find "$t" -name '*.tmp*' -o -name '.*moesim*')"
}
# shellcheck disable=SC2046
status "NaN in w1" 1 "$t/nan.out" "$M" route --router topk --logits "$G" --plan "$t/bad.csv" \
    $(lay w1_nan.npy x.npy b2.npy bad.npy)
contains "NaN in w1: named with its index and file" "$t/nan.out" \
    "moesim: error: non-finite w1[1,2,3] = nan ($t/w1_nan.npy)"
nothing_written "NaN in w1"
# shellcheck disable=SC2046
status "-inf in x" 1 "$t/inf.out" "$M" route --router topk --logits "$G" --plan "$t/bad.csv" \
    $(lay w1.npy x_inf.npy b2.npy bad.npy)
contains "-inf in x: named" "$t/inf.out" "moesim: error: non-finite x[4,1] = -inf ($t/x_inf.npy)"
nothing_written "-inf in x"
# shellcheck disable=SC2046
status "inf in b2" 1 "$t/b2.out" "$M" route --router topk --logits "$G" --plan "$t/bad.csv" \
    $(lay w1.npy x.npy b2_inf.npy bad.npy)
contains "inf in b2: named" "$t/b2.out" "moesim: error: non-finite b2[2,0] = inf ($t/b2_inf.npy)"
# x and w1 at 1e30: every hidden value is 3e60, beyond float32's 3.4e38
# shellcheck disable=SC2046
status "float32 overflow in the layer" 1 "$t/big.out" "$M" route --router topk --logits "$G" \
    --plan "$t/bad.csv" $(lay w1_big.npy x_big.npy b2.npy bad.npy)
contains "overflow: says what" "$t/big.out" "from finite inputs: float32 overflowed in the layer (moesim route)"
contains "overflow: names the output and its first element" "$t/big.out" "moesim: error: layer output y[0,0] ="
nothing_written "overflow"
# noise of std 1e308 on logits of order 1: infinite noisy logits, NaN softmax weights
status "--noise-std 1e308" 1 "$t/noise.out" "$M" route --router topk --logits "$G" \
    --plan "$t/bad.csv" --noise-std 1e308
contains "noise: says what" "$t/noise.out" "a non-finite weight"
contains "noise: names the option in the hint" "$t/noise.out" "--noise-std"
check "noise: no plan written" test ! -e "$t/bad.csv"
check "noise: one error line" test "$(grep -c '^moesim: error:' "$t/noise.out")" = 1

# moesim run: the same noise in a spec fails the point before anything is stored
tiny_spec "$t/noise.ini" noise topk - cl
sed -i 's/^\[router.topk\]$/[router.topk]\nnoise_std = 1e308/' "$t/noise.ini"
status "run with noise_std 1e308 fails" 1 "$t/run.out" "$M" run "$t/noise.ini" --db "$t/n.db" \
    --no-plots
contains "run: names the weight" "$t/run.out" "a non-finite weight"
contains "run: names the point" "$t/run.out" "topk"
if [ ! -f "$t/n.db" ]; then
    ok # no database at all: nothing stored
elif command -v sqlite3 >/dev/null 2>&1; then
    same "run: no point stored" "$(sqlite3 "$t/n.db" 'SELECT count(*) FROM points')" 0
else
    skip 1 "sqlite3 is not installed (to count the stored points)"
fi
finish
