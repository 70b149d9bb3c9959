/* provenance.h: where a result came from: the git revision the binary was built from (passed by
 * the Makefile as -DMOESIM_GIT_REV) and the BLAS library, core and threads (sim/blas_info.h). */
#ifndef MOE_PROVENANCE_H
#define MOE_PROVENANCE_H

typedef struct {
    char git_rev[64];        /* `git describe --always --dirty`, or "unknown" */
    char blas_library[256];  /* openblas_get_config() */
    char blas_core[64];      /* openblas_get_corename() */
    int blas_threads;        /* openblas_get_num_threads() */
} moe_provenance;

void moe_provenance_get(moe_provenance *pv);
const char *moe_git_rev(void);

#endif
