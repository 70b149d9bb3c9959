/* trace_deepseek.c: the DeepSeek-V2-Lite routing trace (MoE-Beyond): its CSV reader and the
 * `trace_deepseek` token source.
 *
 * Format: a header `Layer ID,Batch Number,Token,Activated Expert IDs`, then rows grouped by
 * layer, in token order within a layer; the 6 ids are a set (the hook's order is an artifact);
 * tokens may be CSV-quoted (RFC 4180); no weights. Every layer of a file (one prompt) logs
 * every token. Token ids are FNV-1a 64 of the token text mod vocab (traces.c).
 */
#include "trace.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

const char moe_trace_ds_header[] = "Layer ID,Batch Number,Token,Activated Expert IDs";
static const char *const hint_ds_header =
    "a DeepSeek trace starts with the header Layer ID,Batch Number,Token,Activated Expert IDs";
static const char *const hint_ds_layers =
    "every layer of a prompt logs every token: is the file truncated?";

/* Split one CSV line (newline removed) into at most maxf fields, in place; RFC 4180 quoting
 * ("" inside quotes is a quote). Returns the number of fields, -1 for an unterminated quote,
 * -2 for text after a closing quote, maxf + 1 for too many fields. */
static int csv_split(char *s, char **f, int maxf)
{
    int nf = 0;
    char *r = s, *w = s;
    for (;;) {
        if (nf == maxf)
            return maxf + 1;
        f[nf++] = w;
        if (*r == '"') {
            r++;
            for (;;) {
                if (!*r)
                    return -1;
                if (*r == '"') {
                    if (r[1] == '"') {
                        *w++ = '"';
                        r += 2;
                        continue;
                    }
                    r++;
                    break;
                }
                *w++ = *r++;
            }
            if (*r && *r != ',')
                return -2;
        } else {
            while (*r && *r != ',')
                *w++ = *r++;
        }
        if (!*r) {
            *w = '\0';
            return nf;
        }
        r++; /* the comma */
        *w++ = '\0';
    }
}

/* "[8, 26, 56]" -> ids; returns k, or -1 on a syntax error, -2 for more than maxk ids. */
static int parse_id_list(const char *s, int32_t *ids, int maxk)
{
    int k = 0;
    while (isspace((unsigned char)*s))
        s++;
    if (*s++ != '[')
        return -1;
    for (;;) {
        while (isspace((unsigned char)*s))
            s++;
        if (*s == ']' && k == 0)
            return -1;
        char *end;
        errno = 0;
        long v = strtol(s, &end, 10);
        if (end == s || errno || v < INT32_MIN || v > INT32_MAX)
            return -1;
        if (k == maxk)
            return -2;
        ids[k++] = (int32_t)v;
        s = end;
        while (isspace((unsigned char)*s))
            s++;
        if (*s == ',') {
            s++;
            continue;
        }
        if (*s != ']')
            return -1;
        s++;
        while (isspace((unsigned char)*s))
            s++;
        return *s ? -1 : k;
    }
}

int moe_trace_read_deepseek(const char *path, moe_trace_state *st, moe_trace_sink sink, void *ctx)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return moe_fail(MOE_EIO, moe_trace_hint(), "cannot open trace: %s (%s)", strerror(errno),
                        path);
    char *line = NULL;
    size_t cap = 0;
    long ln = 0, rows = 0, pos = 0, first_count = -1;
    int rc = MOE_OK, cur = -1, first_layer = -1;
    unsigned char *seen = calloc(MOE_TRACE_MAX_LAYERS, 1);
    long seq = st->seq_next++;
    if (!seen) {
        fclose(f);
        return moe_fail(MOE_ENOMEM, NULL, "out of memory (%s)", path);
    }
    if (getline(&line, &cap, f) < 0) {
        rc = moe_fail(MOE_EFORMAT, hint_ds_header, "empty file: no header (%s)", path);
        goto done;
    }
    ln = 1;
    moe_trace_chomp(line);
    const char *h = moe_trace_skip_bom(line);
    if (strcmp(h, moe_trace_ds_header) != 0) {
        rc = moe_fail(MOE_EFORMAT, hint_ds_header, "not a DeepSeek trace: header '%.80s' (%s:1)",
                      h, path);
        goto done;
    }
    while (getline(&line, &cap, f) >= 0) {
        ln++;
        moe_trace_chomp(line);
        if (moe_trace_blank(line))
            continue;
        char *fld[4];
        int nf = csv_split(line, fld, 4);
        if (nf == -1 || nf == -2) {
            rc = moe_fail(MOE_EFORMAT, "is the file truncated?", "%s (%s:%ld)",
                          nf == -1 ? "unterminated quoted field" : "text after a closing quote",
                          path, ln);
            goto done;
        }
        if (nf != 4) {
            rc = moe_fail(MOE_EFORMAT, "columns: Layer ID,Batch Number,Token,Activated Expert IDs",
                          "expected 4 columns, found %s%d (%s:%ld)", nf > 4 ? "more than " : "",
                          nf > 4 ? 4 : nf, path, ln);
            goto done;
        }
        long layer, batch;
        if (moe_trace_parse_long(fld[0], &layer) || layer < 0 || layer >= MOE_TRACE_MAX_LAYERS) {
            rc = moe_fail(MOE_EFORMAT, NULL, "bad layer id '%.40s' (%s:%ld)", fld[0], path, ln);
            goto done;
        }
        if (moe_trace_parse_long(fld[1], &batch)) {
            rc = moe_fail(MOE_EFORMAT, NULL, "bad batch number '%.40s' (%s:%ld)", fld[1], path,
                          ln);
            goto done;
        }
        int32_t ids[MOE_TRACE_DS_E];
        int k = parse_id_list(fld[3], ids, MOE_TRACE_DS_E);
        if (k < 0) {
            rc = moe_fail(MOE_EFORMAT, "expert ids are written \"[8, 26, 56, 57, 60, 43]\"",
                          "bad expert id list '%.60s' (%s:%ld)", fld[3], path, ln);
            goto done;
        }
        if ((rc = moe_trace_check_ids(ids, k, MOE_TRACE_DS_E, path, ln)) ||
            (rc = moe_trace_check_k(st, k, 0, path, ln)))
            goto done;
        if (layer != cur) {
            if (cur >= 0 && first_count < 0) {
                first_count = pos; /* tokens of the file's first layer */
            } else if (cur >= 0 && pos != first_count) {
                rc = moe_fail(MOE_EFORMAT, hint_ds_layers,
                              "layer %d has %ld tokens, layer %d has %ld (%s:%ld)", cur, pos,
                              first_layer, first_count, path, ln - 1);
                goto done;
            }
            if (seen[layer]) {
                rc = moe_fail(MOE_EFORMAT, "rows are grouped by layer",
                              "rows of layer %ld are not contiguous (%s:%ld)", layer, path, ln);
                goto done;
            }
            seen[layer] = 1;
            if (first_layer < 0)
                first_layer = (int)layer;
            cur = (int)layer;
            pos = 0;
        }
        moe_trace_rec r = {path, ln, (int)layer, seq, pos++, MOE_TRACE_DS_E, k, ids,
                           NULL, NULL, fld[2]};
        rows++;
        rc = sink(ctx, &r);
        if (rc)
            goto done;
    }
    if (ferror(f)) {
        rc = moe_fail(MOE_EIO, NULL, "read error: %s (%s)", strerror(errno), path);
        goto done;
    }
    if (rows == 0) {
        rc = moe_fail(MOE_EFORMAT, NULL, "no records after the header (%s)", path);
        goto done;
    }
    if (first_count >= 0 && pos != first_count)
        rc = moe_fail(MOE_EFORMAT, hint_ds_layers,
                      "layer %d has %ld tokens, layer %d has %ld (%s:%ld)", cur, pos, first_layer,
                      first_count, path, ln);
done:
    free(seen);
    free(line);
    fclose(f);
    return rc;
}

/* ---- the source ---------------------------------------------------------------------------- */

static const moe_source_param deepseek_params[] = {
    {"path", MOE_SP_STR, "$MOESIM_TRACES/deepseek-v2-lite-moebeyond", 0, 0, 0, 0, NULL,
     "a prompt_*_data.csv file or a folder of them (and of subfolders)"},
    MOE_SP_TRACE("1", 1),
    MOE_SP_VOCAB("102400", 102400, 2147483647.0),
    MOE_SP_END,
};

static int deepseek_open(moe_source *s) { return moe_trace_source_open(s, MOE_TRACE_DEEPSEEK); }

const moe_source_type moe_source_trace_deepseek = {
    .name = "trace_deepseek",
    .summary = "DeepSeek-V2-Lite top-6 ids per token (M = 64); replay: choices, combine 1/6; "
               "affinities: log(1/6) on the 6 chosen, log(1e-4) elsewhere; ids: FNV-1a of the "
               "token text mod vocab; x Gaussian",
    .flags = MOE_SOURCE_RECORDED,
    .params = deepseek_params,
    .open = deepseek_open,
    .batch = moe_source_rec_batch,
    .close = moe_source_rec_close,
};
