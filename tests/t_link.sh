#!/bin/sh
# t_link.sh: moesim runs its GEMMs on OpenBLAS: the binary loads libopenblas and never GSL's
# reference CBLAS (libgslcblas), whose sgemm is about 50x slower here.
M=${MOESIM:-./moesim}
pass=0; fail=0
libs=$(ldd "$M" 2>&1)
if printf '%s\n' "$libs" | grep -q 'libopenblas'; then pass=$((pass + 1)); else
    fail=$((fail + 1)); echo "FAIL: $M does not load libopenblas"; fi
if printf '%s\n' "$libs" | grep -q 'gslcblas'; then
    fail=$((fail + 1)); echo "FAIL: $M loads GSL's reference CBLAS: $(printf '%s\n' "$libs" | grep gslcblas)"
else pass=$((pass + 1)); fi
echo "t_link: $pass passed, $fail failed"
[ $fail = 0 ]
