/* blas_info.c: BLAS provenance and the OPENBLAS_CORETYPE check (blas_info.h). The only file
 * that includes OpenBLAS's own cblas.h (its enums clash with GSL's gsl_cblas.h elsewhere). */
#include "blas_info.h"

#include <cblas.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* ---- core names ---- */

/* OpenBLAS's DYNAMIC_ARCH core names (driver/others/dynamic.c) grouped by sgemm kernel width. */
static const char *const cores_512[] = {"SkylakeX", "Cooperlake", "SapphireRapids", NULL};
static const char *const cores_256[] = {"Haswell", "Zen", "Sandybridge", "Bulldozer",
                                        "Piledriver", "Steamroller", "Excavator", NULL};

static int in_list(const char *name, const char *const *list)
{
    if (!name)
        return 0;
    for (int i = 0; list[i]; i++)
        if (strcasecmp(name, list[i]) == 0)
            return 1;
    return 0;
}

int moe_blas_core_is_avx512(const char *name) { return in_list(name, cores_512); }

int moe_blas_core_width(const char *name)
{
    if (in_list(name, cores_512))
        return 512;
    if (in_list(name, cores_256))
        return 256;
    return 128;
}

static int cpu_has_avx512f(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") ? 1 : 0;
#else
    return 0;
#endif
}

/* ---- provenance ---- */

static void copy_str(char *dst, size_t len, const char *src)
{
    snprintf(dst, len, "%s", src ? src : "");
}

void moe_blas_info_get(moe_blas_info *bi)
{
    memset(bi, 0, sizeof *bi);
    copy_str(bi->library, sizeof bi->library, openblas_get_config());
    copy_str(bi->core, sizeof bi->core, openblas_get_corename());
    bi->threads = openblas_get_num_threads();
    copy_str(bi->coretype_env, sizeof bi->coretype_env, getenv("OPENBLAS_CORETYPE"));
    bi->cpu_avx512f = cpu_has_avx512f();
    bi->core_avx512 = moe_blas_core_is_avx512(bi->core);
}

void moe_blas_set_threads(int n)
{
    if (n >= 1)
        openblas_set_num_threads(n);
}

int moe_blas_threads(void) { return openblas_get_num_threads(); }

int moe_blas_info_format(const moe_blas_info *bi, char *buf, size_t len)
{
    return snprintf(buf, len, "%s; core %s; %d thread%s; OPENBLAS_CORETYPE %s", bi->library,
                    bi->core, bi->threads, bi->threads == 1 ? "" : "s",
                    bi->coretype_env[0] ? bi->coretype_env : "unset");
}

/* ---- the forced core type ---- */

int moe_blas_check_coretype(FILE *warn)
{
    const char *forced = getenv("OPENBLAS_CORETYPE");
    if (!forced || !*forced || !cpu_has_avx512f())
        return 0;
    /* OpenBLAS ignores a name it does not know and detects the core itself: then the core in
     * use is what counts. */
    if (moe_blas_core_is_avx512(forced) || moe_blas_core_is_avx512(openblas_get_corename()))
        return 0;
    if (warn) {
        int w = moe_blas_core_width(forced);
        fprintf(warn,
                "moesim: warning: OPENBLAS_CORETYPE=%s forces %d-bit kernels on an AVX-512 CPU "
                "(about %s the GEMM speed here); unset it\n",
                forced, w, w == 256 ? "half" : "a quarter of");
    }
    return 1;
}
