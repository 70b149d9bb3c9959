#!/bin/sh
# t_blas_link.sh: moesim runs its GEMMs on OpenBLAS: the binary loads libopenblas and never
# GSL's reference CBLAS (libgslcblas), whose sgemm is about 50x slower here.
NAME=t_blas_link
. tests/lib.sh
libs=$(ldd "$MOESIM" 2>&1)
if printf '%s\n' "$libs" | grep -q 'libopenblas'; then ok; else bad "$MOESIM does not load libopenblas"; fi
if printf '%s\n' "$libs" | grep -q 'gslcblas'; then
    bad "$MOESIM loads GSL's reference CBLAS: $(printf '%s\n' "$libs" | grep gslcblas)"
else ok; fi
finish
