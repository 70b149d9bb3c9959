#!/bin/sh
# t_python.sh: the Python package (python/moesim) on BUILD/libmoesim.so against BUILD/moesim:
# every route fixture bit for bit against `moesim route`, conversions, errors, listings and an
# offline pip install (python/tests/test_moesim.py). Needs a Python with NumPy: $PYTHON, else
# Debian's /usr/bin/python3, else python3 on PATH; skipped (and counted as skipped) without one,
# or when BUILD has no libmoesim.so (the sanitizer build makes none).
B=${BUILD:-build}
M=$(realpath "${MOESIM:-$B/moesim}" 2>/dev/null)
LIB=$(realpath "$B/libmoesim.so" 2>/dev/null)
py=""
for c in ${PYTHON:-} /usr/bin/python3 python3; do
    if command -v "$c" >/dev/null 2>&1 && "$c" -c 'import numpy' >/dev/null 2>&1; then py=$c; break; fi
done
if [ -z "$py" ]; then
    echo "t_python: skipped: no python3 with numpy (apt-get install python3-numpy)"
    echo "t_python: 0 passed, 0 failed, 1 skipped"; exit 0
fi
if [ -z "$LIB" ] || [ ! -f "$LIB" ]; then
    echo "t_python: skipped: $B/libmoesim.so not built (make $B/libmoesim.so)"
    echo "t_python: 0 passed, 0 failed, 1 skipped"; exit 0
fi
pass=0; fail=0
# the shared library loads OpenBLAS and never GSL's reference CBLAS, like the binary (t_link.sh)
libs=$(ldd "$LIB" 2>&1)
if printf '%s\n' "$libs" | grep -q libopenblas && ! printf '%s\n' "$libs" | grep -q gslcblas; then
    pass=$((pass + 1)); else fail=$((fail + 1)); echo "FAIL: $LIB: $(printf '%s' "$libs" | tr '\n' ' ')"; fi
# only the C API is exported
extra=$(nm -D --defined-only "$LIB" | awk '{print $3}' | grep -v '^moesim_' | grep -v '^_' | head -3)
if [ -z "$extra" ]; then pass=$((pass + 1)); else fail=$((fail + 1)); echo "FAIL: $LIB exports $extra"; fi
out=$(PYTHONPATH=$(pwd)/python MOESIM_LIB=$LIB "$py" python/tests/test_moesim.py "$M" 2>&1); rc=$?
printf '%s\n' "$out" | grep -v '^test_python: [0-9]* passed'
line=$(printf '%s\n' "$out" | grep -E '^test_python: [0-9]+ passed, [0-9]+ failed' | tail -1)
p=$(printf '%s' "$line" | sed -n 's/.*: \([0-9]*\) passed, \([0-9]*\) failed.*/\1/p')
f=$(printf '%s' "$line" | sed -n 's/.*: \([0-9]*\) passed, \([0-9]*\) failed.*/\2/p')
[ -n "$p" ] || { p=0; f=1; echo "FAIL: test_moesim.py crashed (exit $rc)"; }
[ $rc -ne 0 ] && [ "$f" = 0 ] && f=1
echo "t_python: $((pass + p)) passed, $((fail + f)) failed"
[ $((fail + f)) = 0 ]
