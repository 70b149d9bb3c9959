/* fuzz_spec.c: libFuzzer target for the experiment spec parser (sim/spec.c: libinih, the
 * --set overrides, value checks and the sweep expansion) and, for small sweeps, the check of
 * every point (moe_spec_check: routers allocated, sources opened).
 *
 * An input is the text of a spec file; lines after a line reading `#--set--` are --set
 * overrides, one per line (at most 8). Seed corpus: tests/fuzz/corpus_spec/.
 *
 * Contracts (fuzz.h for errors): an error leaves no spec and names the spec file or the --set
 * at fault; a loaded spec has at least one point, every point a router type, 1 <= E <= M with
 * E dividing M, 0 <= k <= E, T, D, F and batches >= 1, a capacity factor text, a finite
 * non-negative factor when the sweep's factor applies, and a configuration key no other point
 * of the sweep shares (points with equal keys would be merged by the results store).
 */
#include "fuzz.h"
#include "spec.h"

#include <math.h>

#define FUZZ_MAX_SETS 8

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int fuzz_strcmp_ptr(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Small enough for moe_spec_check to run quickly: it allocates routers for T tokens and opens
 * each source (T x D hidden states, M columns; parameters such as vocab or clusters size
 * tables). File parameters are left to the source fuzz targets. */
static int fuzz_spec_small(const moe_spec *s)
{
    size_t np = moe_spec_npoints(s);
    if (np > 64)
        return 0;
    for (size_t i = 0; i < np; i++) {
        const moe_point *p = moe_spec_point(s, i);
        if (p->tokens > 256 || p->d > 64 || p->f > 256 || p->m > 256)
            return 0;
        for (int j = 0; j < p->nparams; j++) {
            const char *v = p->params[j].value;
            char *end;
            double x = strtod(v, &end);
            if (end != v && !(fabs(x) <= 1e5))
                return 0;
            if (strchr(v, '/') || strstr(v, ".."))
                return 0;
        }
    }
    return 1;
}

static void fuzz_spec_points(const moe_spec *s)
{
    size_t np = moe_spec_npoints(s);
    FUZZ_REQUIRE(np >= 1, "a spec without points");
    FUZZ_REQUIRE(moe_spec_name(s) && moe_spec_name(s)[0], "a spec without a name");
    const char **keys = malloc(np * sizeof *keys);
    FUZZ_REQUIRE(keys != NULL, "out of memory in the harness");
    int bad = 0;
    for (size_t i = 0; i < np; i++) {
        const moe_point *p = moe_spec_point(s, i);
        bad |= !p || !p->rtype || !p->router || !p->distribution || !p->source || !p->shape;
        if (bad)
            break;
        bad |= p->E < 1 || p->m < p->E || p->m % p->E != 0 || p->k < 0 || p->k > p->E;
        bad |= p->tokens < 1 || p->d < 1 || p->f < 0 || p->batches < 1; /* f = 0: routing only */
        bad |= !p->cf_text || (!p->cf_note && !(p->cf >= 0.0 && isfinite(p->cf)));
        bad |= !p->config_key || !p->opts_text || p->error_tokens < 0;
        keys[i] = p->config_key;
    }
    FUZZ_REQUIRE(!bad, "a point breaks its invariants");
    qsort(keys, np, sizeof *keys, fuzz_strcmp_ptr);
    int dup = 0;
    for (size_t i = 1; i < np; i++)
        dup |= strcmp(keys[i - 1], keys[i]) == 0;
    free(keys);
    FUZZ_REQUIRE(!dup, "two points of the sweep share a configuration key");
}

static void fuzz_spec_error(int rc, const char *path)
{
    FUZZ_REQUIRE(rc >= MOE_EINVAL && rc <= MOE_EINPUT, "error code out of range");
    const char *msg = moe_errmsg();
    FUZZ_REQUIRE(msg[0] && !strchr(msg, '\n'), "an error without a one-line message");
    FUZZ_REQUIRE(strstr(msg, path) || strstr(msg, "--set:"),
                 "a message that names neither the spec file nor the --set");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char mark[] = "\n#--set--\n";
    const size_t ml = sizeof mark - 1;
    size_t spec_len = size;
    for (size_t i = 0; i + ml <= size; i++)
        if (memcmp(data + i, mark, ml) == 0) {
            spec_len = i + 1;
            break;
        }
    char path[400];
    snprintf(path, sizeof path, "%s/spec.ini", fuzz_dir());
    fuzz_write(path, data, spec_len);
    /* the overrides: one per line, NUL bytes end a line early (argv cannot hold them) */
    char *sets[FUZZ_MAX_SETS];
    int nsets = 0;
    size_t pos = spec_len + ml - 1;
    while (spec_len < size && pos < size && nsets < FUZZ_MAX_SETS) {
        const uint8_t *b = data + pos, *nl = memchr(b, '\n', size - pos);
        size_t len = nl ? (size_t)(nl - b) : size - pos;
        sets[nsets] = malloc(len + 1);
        FUZZ_REQUIRE(sets[nsets] != NULL, "out of memory in the harness");
        memcpy(sets[nsets], b, len);
        sets[nsets][len] = '\0';
        nsets++;
        pos += len + 1;
    }
    moe_spec *s = (moe_spec *)1; /* must come back NULL on an error */
    int rc = moe_spec_load(path, (const char *const *)sets, nsets, &s);
    if (rc) {
        FUZZ_REQUIRE(s == NULL, "a failed load returned a spec");
        fuzz_spec_error(rc, path);
    } else {
        FUZZ_REQUIRE(s != NULL, "a load without a spec");
        fuzz_spec_points(s);
        if (fuzz_spec_small(s)) {
            moe_clear_error();
            rc = moe_spec_check(s);
            if (rc)
                fuzz_spec_error(rc, path);
        }
        moe_spec_free(s);
    }
    for (int i = 0; i < nsets; i++)
        free(sets[i]);
    return 0;
}
