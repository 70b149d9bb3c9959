/* provenance.h: where a result came from: moesim's version, the git revision the binary was
 * built from (passed by the Makefile as -DMOESIM_GIT_REV) and the BLAS library, core and threads
 * (sim/blas_info.h). `moesim --version` prints them. */
#ifndef MOE_PROVENANCE_H
#define MOE_PROVENANCE_H

#include <stdio.h>

/* The release number; the git revision tells builds of the same release apart. */
#define MOESIM_VERSION "0.9.0"

typedef struct {
    char git_rev[64];        /* `git describe --always --dirty`, or "unknown" */
    char blas_library[256];  /* openblas_get_config(); "; expert GEMMs " and their backend */
    char blas_core[64];      /* openblas_get_corename() */
    int blas_threads;        /* openblas_get_num_threads() */
} moe_provenance;

void moe_provenance_get(moe_provenance *pv);
const char *moe_git_rev(void);

/* The text of `moesim --version`: the version, the git revision, the BLAS provenance line
 * (moe_blas_info_format), MPI, and where the gnuplot scripts and shipped data are found. */
void moe_provenance_print_version(FILE *out);

#endif
