/* trace_flame.c: the FLAME-MoE-290M routing trace (DynaNDE): its csv(.gz) reader and the
 * `trace_flame` token source.
 *
 * Format: one file per layer (the layer number from the file name, `layer_id` is always 0),
 * gzip-compressed or plain, a header layer_id,token_id,expert_0,...,expert_{E-1}, then per
 * token E router probabilities of which the top 6 are non-zero (not renormalised).
 */
#include "trace.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#define LINE_MAX_FLAME (1 << 16)

/* ---- the reader ---------------------------------------------------------------------------- */

static const char *const hint_flame_header =
    "a FLAME trace starts with the header layer_id,token_id,expert_0,...,expert_{E-1}";

/* 0 if the stream is sound, else the error (negated) naming file and line. */
static int gz_broken(gzFile g, const char *path, long ln)
{
    int err;
    const char *m = gzerror(g, &err);
    if (err == Z_OK)
        return 0;
    return -moe_fail(MOE_EFORMAT, "is the file truncated?",
                     "corrupt or truncated gzip data: %s (%s:%ld)", moe_trace_gz_message(m, path),
                     path, ln);
}

/* Read one line with gzgets; 1 = line, 0 = end of file, < 0 = error (code negated). */
static int gz_line(gzFile g, char *buf, int len, const char *path, long ln)
{
    if (!gzgets(g, buf, len))
        return gz_broken(g, path, ln);
    size_t n = strlen(buf);
    int rc;
    /* a last line without '\n': complete, or cut by a broken stream */
    if (n > 0 && buf[n - 1] != '\n' && (rc = gz_broken(g, path, ln)))
        return rc;
    if (n == (size_t)len - 1 && buf[n - 1] != '\n' && !gzeof(g))
        return -moe_fail(MOE_EFORMAT, NULL, "line longer than %d bytes (%s:%ld)", len - 1, path,
                         ln);
    moe_trace_chomp(buf);
    return 1;
}

/* Split on commas in place (no quoting in this format). Returns the field count. */
static int split_commas(char *s, char **f, int maxf)
{
    int nf = 0;
    for (;;) {
        if (nf == maxf)
            return maxf + 1;
        f[nf++] = s;
        char *c = strchr(s, ',');
        if (!c)
            return nf;
        *c = '\0';
        s = c + 1;
    }
}

int moe_trace_read_flame(const char *path, int layer, moe_trace_state *st, moe_trace_sink sink,
                         void *ctx)
{
    gzFile g = gzopen(path, "rb");
    if (!g)
        return moe_fail(MOE_EIO, moe_trace_hint(), "cannot open trace: %s (%s)",
                        errno ? strerror(errno) : "gzopen failed", path);
    char *buf = malloc(LINE_MAX_FLAME);
    char **fld = malloc((MOE_TRACE_MAX_E + 3) * sizeof *fld);
    double *p = malloc(MOE_TRACE_MAX_E * sizeof *p);
    double *w = malloc(MOE_TRACE_MAX_E * sizeof *w);
    int32_t *ids = malloc(MOE_TRACE_MAX_E * sizeof *ids);
    int rc = MOE_OK, E = 0, got;
    long ln = 1, rows = 0;
    if (!buf || !fld || !p || !w || !ids) {
        rc = moe_fail(MOE_ENOMEM, NULL, "out of memory (%s)", path);
        goto done;
    }
    if ((got = gz_line(g, buf, LINE_MAX_FLAME, path, ln)) <= 0) {
        rc = got < 0 ? -got
                     : moe_fail(MOE_EFORMAT, hint_flame_header, "empty file: no header (%s)",
                                path);
        goto done;
    }
    /* the header; a UTF-8 byte order mark before it is skipped */
    char *hdr = buf + (moe_trace_skip_bom(buf) - buf);
    int nf = split_commas(hdr, fld, MOE_TRACE_MAX_E + 2);
    int hdr_ok = nf >= 3 && nf <= MOE_TRACE_MAX_E + 2 && !strcmp(fld[0], "layer_id") &&
                 !strcmp(fld[1], "token_id");
    for (int e = 0; hdr_ok && e < nf - 2; e++) {
        char want[32];
        snprintf(want, sizeof want, "expert_%d", e);
        hdr_ok = !strcmp(fld[e + 2], want);
    }
    if (!hdr_ok) {
        rc = moe_fail(MOE_EFORMAT, hint_flame_header, "not a FLAME trace: bad header (%s:1)", path);
        goto done;
    }
    E = nf - 2;
    if (st->E == 0)
        st->E = E;
    if (E != st->E) {
        rc = moe_fail(MOE_EFORMAT, NULL, "file has %d experts, earlier files %d (%s:1)", E, st->E,
                      path);
        goto done;
    }
    long seq = st->seq_next; /* every layer file holds the same tokens */
    while ((got = gz_line(g, buf, LINE_MAX_FLAME, path, ln + 1)) > 0) {
        ln++;
        if (moe_trace_blank(buf))
            continue;
        nf = split_commas(buf, fld, E + 2);
        if (nf != E + 2) {
            rc = moe_fail(MOE_EFORMAT, "columns: layer_id,token_id,expert_0,...,expert_{E-1}",
                          "expected %d columns, found %s%d (%s:%ld)", E + 2,
                          nf > E + 2 ? "more than " : "", nf > E + 2 ? E + 2 : nf, path, ln);
            goto done;
        }
        long v;
        if (moe_trace_parse_long(fld[0], &v) || moe_trace_parse_long(fld[1], &v) || v < 0) {
            rc = moe_fail(MOE_EFORMAT, NULL, "bad layer_id or token_id (%s:%ld)", path, ln);
            goto done;
        }
        int k = 0;
        for (int e = 0; e < E; e++) {
            char *end;
            p[e] = strtod(fld[e + 2], &end);
            if (end == fld[e + 2] || *end || !(p[e] >= 0.0 && p[e] <= 1.0)) {
                rc = moe_fail(MOE_EFORMAT, "scores are router probabilities in [0, 1]",
                              "bad score '%.30s' for expert %d (%s:%ld)", fld[e + 2], e, path, ln);
                goto done;
            }
            if (p[e] > 0.0) {
                /* insert by descending p, ties keep the lower expert first */
                int j = k++;
                while (j > 0 && p[ids[j - 1]] < p[e]) {
                    ids[j] = ids[j - 1];
                    j--;
                }
                ids[j] = e;
            }
        }
        if (k == 0) {
            rc = moe_fail(MOE_EFORMAT, NULL, "row has no non-zero score (%s:%ld)", path, ln);
            goto done;
        }
        if ((rc = moe_trace_check_k(st, k, 1, path, ln)))
            goto done;
        for (int j = 0; j < k; j++)
            w[j] = p[ids[j]];
        moe_trace_rec r = {path, ln, layer, seq, rows++, E, k, ids, w, p, NULL};
        if ((rc = sink(ctx, &r)))
            goto done;
    }
    if (got < 0) {
        rc = -got;
        goto done;
    }
    if (rows == 0)
        rc = moe_fail(MOE_EFORMAT, NULL, "no records after the header (%s)", path);
done:
    free(buf);
    free(fld);
    free(p);
    free(w);
    free(ids);
    gzclose(g);
    return rc;
}

/* ---- the source ---------------------------------------------------------------------------- */

static const moe_source_param flame_params[] = {
    {"path", MOE_SP_STR, "$MOESIM_TRACES/flame-moe-290m-dynande", 0, 0, 0, 0, NULL,
     "a folder of *layer<L>*.csv.gz files, or one file (read whatever its layer)"},
    MOE_SP_TRACE("2", 2),
    MOE_SP_VOCAB("32000", 32000, 2147483647.0),
    MOE_SP_END,
};

static int flame_open(moe_source *s) { return moe_trace_source_open(s, MOE_TRACE_FLAME); }

const moe_source_type moe_source_trace_flame = {
    .name = "trace_flame",
    .summary = "FLAME-MoE-290M router probabilities per token (M = 64, top-6); replay: choices "
               "by descending p, combine = p; affinities: log p on the 6, the missing mass "
               "spread evenly over the other 58; ids uniform, x Gaussian",
    .flags = MOE_SOURCE_RECORDED,
    .params = flame_params,
    .open = flame_open,
    .batch = moe_source_rec_batch,
    .close = moe_source_rec_close,
};
