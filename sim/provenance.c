/* provenance.c: the git revision baked in at build time and the BLAS configuration at run time,
 * stored with every result row (provenance.h). */
#include "provenance.h"

#include "blas_info.h"

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
    snprintf(pv->blas_library, sizeof pv->blas_library, "%s", bi.library);
    snprintf(pv->blas_core, sizeof pv->blas_core, "%s", bi.core);
    pv->blas_threads = bi.threads;
}
