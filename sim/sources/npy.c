/* npy.c: the `npy` token source: recorded NumPy arrays, logits (N,M), hidden states (N,D) and
 * token ids (N), each optionally with a leading layer axis; batches cycle through the rows
 * (source.c). x Gaussian and ids uniform over vocab when not given; logits given fix M. */
#include "source.h"
#include "npy.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static const moe_source_param npy_params[] = {
    {"logits", MOE_SP_STR, "none", 0, 0, 0, 0, NULL,
     ".npy (N,M) or (L,N,M) float: routed as given"},
    {"hidden", MOE_SP_STR, "none", 0, 0, 0, 0, NULL,
     ".npy (N,D) or (L,N,D) float: hidden states (else Gaussian rows)"},
    {"ids", MOE_SP_STR, "none", 0, 0, 0, 0, NULL,
     ".npy (N) or (L,N) int: token ids (else uniform)"},
    {"layer", MOE_SP_INT, "0", 0, 0, 1 << 20, 0, NULL, "index along a leading layer axis"},
    MOE_SP_VOCAB("32000", 32000, 2147483647.0),
    MOE_SP_GATE_SCALE,
    MOE_SP_END,
};

/* "logits L.npy": names an npy source's input and its file in conversion errors */
static const char *npy_what(const moe_source *s, const char *key)
{
    static _Thread_local char buf[4200];
    snprintf(buf, sizeof buf, "%s %s", key, moe_source_str(s, key));
    return buf;
}

/* One .npy input of the npy source: (N,W) or (L,N,W) (vectors: (N) or (L,N)); selects the
 * layer and returns the rows N and width W. */
static int npy_input(moe_source *s, const char *key, int vec, moe_npy *a, size_t *off,
                     long *N, long *W, int *layered)
{
    const char *path = moe_source_str(s, key);
    int rc = moe_npy_read(path, a);
    if (rc)
        return rc;
    int base = vec ? 1 : 2;
    if (a->ndim != base && a->ndim != base + 1)
        return moe_source_fail(s, key,
                               vec ? "token ids are (N) or (L,N)" : "arrays are (N,W) or (L,N,W)",
                     "%s has %d dimensions, want %d or %d (%s)", key, a->ndim, base, base + 1,
                     path);
    *layered = a->ndim == base + 1;
    long layer = (long)moe_source_num(s, "layer");
    size_t L = *layered ? a->shape[0] : 1;
    if (*layered && (size_t)layer >= L)
        return moe_source_fail(s, "layer", NULL, "layer %ld is outside the %zu layers of %s", layer,
                               L,
                     path);
    *N = (long)a->shape[*layered];
    *W = vec ? 1 : (long)a->shape[*layered + 1];
    if (*N <= 0 || *W <= 0)
        return moe_source_fail(s, key, NULL, "%s is empty (%s)", key, path);
    *off = *layered ? (size_t)layer * (size_t)*N * (size_t)*W : 0;
    return MOE_OK;
}

static int npy_open(moe_source *s)
{
    static const char *const keys[3] = {"logits", "hidden", "ids"};
    moe_npy a[3];
    memset(a, 0, sizeof a);
    long N = -1, rows[3] = {0}, W[3] = {0};
    size_t off[3] = {0};
    int rc = MOE_OK, any = 0, layered = 0;
    for (int i = 0; i < 3 && !rc; i++) {
        if (!moe_source_given(s, keys[i]))
            continue;
        any = 1;
        int lay = 0;
        rc = npy_input(s, keys[i], i == 2, &a[i], &off[i], &rows[i], &W[i], &lay);
        layered |= lay;
        if (!rc && N >= 0 && rows[i] != N)
            rc = moe_source_fail(s, keys[i], "logits, hidden and ids describe the same tokens",
                       "%s has %ld rows, the other arrays %ld", keys[i], rows[i], N);
        if (!rc)
            N = rows[i];
    }
    if (!rc && !any)
        rc = moe_fail(MOE_EINVAL, "e.g. logits = L.npy",
                      "source npy needs at least one of logits, hidden, ids (source npy)");
    if (!rc && !layered && moe_source_num(s, "layer") != 0)
        rc = moe_source_fail(s, "layer", NULL, "no array has a leading layer axis");
    moe_rec *r = rc ? NULL : moe_source_rec_alloc(s);
    if (!rc && !r)
        rc = MOE_ENOMEM;
    if (!rc)
        r->n = N;
    if (!rc && a[0].data) { /* logits */
        double *all = NULL;
        rc = moe_npy_as_double(&a[0], npy_what(s, "logits"), &all);
        if (!rc) {
            r->E = (int)W[0];
            r->logits = malloc((size_t)N * r->E * sizeof *r->logits);
            if (!r->logits)
                rc = moe_fail(MOE_ENOMEM, NULL, "out of memory (%s)", moe_source_str(s, "logits"));
            else
                memcpy(r->logits, all + off[0], (size_t)N * r->E * sizeof *r->logits);
            for (size_t i = 0; !rc && i < (size_t)N * r->E; i++)
                if (!isfinite(r->logits[i]))
                    rc = moe_source_fail(s, "logits", "logits must be finite",
                               "non-finite logit at row %zu, column %zu of %s", i / r->E,
                               i % r->E, moe_source_str(s, "logits"));
        }
        free(all);
        s->required_m = r->E;
    }
    if (!rc && a[1].data) { /* hidden */
        float *all = NULL;
        if (W[1] != s->d)
            rc = moe_source_fail(s, "hidden",
                                 "set the layer shape's d to the width of the hidden states",
                       "hidden states have width %ld but the layer has d = %d (%s)", W[1], s->d,
                       moe_source_str(s, "hidden"));
        if (!rc)
            rc = moe_npy_as_float(&a[1], npy_what(s, "hidden"), &all);
        if (!rc) {
            r->d = s->d;
            r->x = malloc((size_t)N * s->d * sizeof *r->x);
            if (!r->x)
                rc = moe_fail(MOE_ENOMEM, NULL, "out of memory (%s)", moe_source_str(s, "hidden"));
            else
                memcpy(r->x, all + off[1], (size_t)N * s->d * sizeof *r->x);
        }
        free(all);
    }
    if (!rc && a[2].data) { /* ids */
        int64_t *all = NULL;
        rc = moe_npy_as_int64(&a[2], npy_what(s, "ids"), &all);
        if (!rc) {
            r->ids = malloc((size_t)N * sizeof *r->ids);
            if (!r->ids)
                rc = moe_fail(MOE_ENOMEM, NULL, "out of memory (%s)", moe_source_str(s, "ids"));
            else
                memcpy(r->ids, all + off[2], (size_t)N * sizeof *r->ids);
            for (long i = 0; !rc && i < N; i++)
                if (r->ids[i] < 0)
                    rc = moe_source_fail(s, "ids", NULL, "negative token id %lld at row %ld of %s",
                               (long long)r->ids[i], i, moe_source_str(s, "ids"));
        }
        free(all);
    }
    for (int i = 0; i < 3; i++)
        moe_npy_free(&a[i]);
    if (!rc)
        moe_source_rec_ready(s);
    return rc;
}

const moe_source_type moe_source_npy = {
    .name = "npy",
    .summary = "recorded NumPy arrays; batches cycle through the rows; x Gaussian and ids uniform "
               "over vocab when not given",
    .flags = MOE_SOURCE_RECORDED,
    .params = npy_params,
    .open = npy_open,
    .batch = moe_source_rec_batch,
    .close = moe_source_rec_close,
};
