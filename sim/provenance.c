/* provenance.c: the git revision baked in at build time and the BLAS configuration at run time,
 * stored with every result row (provenance.h). */
#include "provenance.h"

#include "blas_info.h"
#include "layer_gemm.h"
#include "moe.h"
#include "moe_mpi.h"
#include "paths.h"

#include <stdio.h>

#ifndef MOESIM_GIT_REV
#define MOESIM_GIT_REV "unknown"
#endif

const char *moe_git_rev(void) { return MOESIM_GIT_REV[0] ? MOESIM_GIT_REV : "unknown"; }

void moe_provenance_get(moe_provenance *pv)
{
    moe_blas_info bi;
    moe_blas_info_get(&bi);
    snprintf(pv->git_rev, sizeof pv->git_rev, "%s", moe_git_rev());
    /* the library, then what runs the layer's expert GEMMs (moe_gemm_default: libxsmm's
     * kernels where they run AVX-512, else the same OpenBLAS): their last bits depend on it */
    snprintf(pv->blas_library, sizeof pv->blas_library, "%.180s; expert GEMMs %.60s", bi.library,
             moe_gemm_backend_name(moe_gemm_default()));
    snprintf(pv->blas_core, sizeof pv->blas_core, "%s", bi.core);
    pv->blas_threads = bi.threads;
}

void moe_provenance_print_version(FILE *out)
{
    moe_blas_info bi;
    moe_blas_info_get(&bi);
    char blas[512];
    moe_blas_info_format(&bi, blas, sizeof blas);
    char data[4096];
    const int found = moe_data_path("plots", data, sizeof data) == MOE_OK;
    moe_clear_error();
    const char *inst = moe_data_dir_installed();
    fprintf(out, "moesim %s\n", MOESIM_VERSION);
    fprintf(out, "git revision: %s\n", moe_git_rev());
    fprintf(out, "BLAS: %s\n", blas);
    fprintf(out, "MPI: %s\n", moe_mpi_compiled() ? moe_mpi_library() : "none (built without MPI)");
    fprintf(out, "gnuplot scripts: %s%s\n", data, found ? "" : " (not found)");
    fprintf(out, "installed data folder: %s\n", inst[0] ? inst : "none (not built by make install)");
    fprintf(out, "traces: %s\n", moe_trace_root());
}
