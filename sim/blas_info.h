/* blas_info.h: the BLAS configuration as provenance: which library, which kernel
 * ("core") OpenBLAS runs, how many threads, and whether OPENBLAS_CORETYPE forces a core weaker
 * than what the CPU supports. moesim links OpenBLAS (never GSL's reference CBLAS), so these
 * are thin wrappers over openblas_get_config / _get_corename / _get_num_threads.
 *
 * OpenBLAS reads OPENBLAS_CORETYPE once, when the library is loaded: a process cannot undo a
 * forced core type, it can only report it (`make bench` runs with the variable unset). */
#ifndef MOE_BLAS_INFO_H
#define MOE_BLAS_INFO_H

#include <stdio.h>

typedef struct {
    char library[256];     /* openblas_get_config(): "OpenBLAS 0.3.21 DYNAMIC_ARCH ... Cooperlake" */
    char core[64];         /* openblas_get_corename(): the kernel in use, e.g. "Cooperlake" */
    int threads;           /* openblas_get_num_threads() */
    char coretype_env[64]; /* value of OPENBLAS_CORETYPE, "" when unset */
    int cpu_avx512f;       /* 1 if the CPU supports AVX-512F */
    int core_avx512;       /* 1 if the core in use has AVX-512 kernels */
} moe_blas_info;

/* Fill bi from the running OpenBLAS and the environment. */
void moe_blas_info_get(moe_blas_info *bi);

/* Set the number of BLAS threads (openblas_set_num_threads); n < 1 is ignored. */
void moe_blas_set_threads(int n);
/* The number of BLAS threads (openblas_get_num_threads). */
int moe_blas_threads(void);

/* 1 if name (case-insensitive, as OpenBLAS compares it) is one of OpenBLAS's AVX-512 cores:
 * SkylakeX, Cooperlake, SapphireRapids. */
int moe_blas_core_is_avx512(const char *name);

/* Vector width in bits of an OpenBLAS core's sgemm kernels: 512, 256 (AVX/AVX2 cores such as
 * Haswell, Zen, Sandybridge), or 128 for the older cores and names it does not know. */
int moe_blas_core_width(const char *name);

/* If OPENBLAS_CORETYPE is set and the core it forces is weaker than what the CPU supports (an
 * AVX-512 CPU running a non-AVX-512 core), print one warning line to warn (when not NULL):
 *   moesim: warning: OPENBLAS_CORETYPE=Haswell forces 256-bit kernels on an AVX-512 CPU
 *   (about half the GEMM speed here); unset it
 * and return 1; otherwise print nothing and return 0. */
int moe_blas_check_coretype(FILE *warn);

/* One provenance line: "<library>; core <core>; <threads> threads; OPENBLAS_CORETYPE <value
 * or unset>". Returns what snprintf returns. */
int moe_blas_info_format(const moe_blas_info *bi, char *buf, size_t len);

#endif
