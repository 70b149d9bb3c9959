# blas_env.sh: sourced by experiments/regression/record.sh (make record) and
# tests/t_regression.sh. Pins the OpenBLAS kernel the regression baselines were recorded with
# (Haswell: AVX2 + FMA) on every x86-64 CPU that can run it, so that fp32 GEMM bits - the gate
# logits, hence every floating routing metric - match the recorded ones on other machines too.
# (An AVX-512 CPU would otherwise pick SkylakeX kernels, whose sums round differently.) Elsewhere
# the kernel is left alone; tests/t_regression.sh then compares floating metrics more loosely.
if grep -qw avx2 /proc/cpuinfo 2>/dev/null && grep -qw fma /proc/cpuinfo 2>/dev/null; then
    OPENBLAS_CORETYPE=Haswell
    export OPENBLAS_CORETYPE
fi
