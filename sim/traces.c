/* traces.c: what the recorded-trace sources share (sim/sources/trace_*.c hold one reader and
 * one token source per trace family): the trace folder, file lists in natural order, the
 * checks every reader applies, the conversion of recorded choices into affinities, the loader
 * of one layer's rows, and the report behind `moesim trace info`.
 *
 * Every reader turns its format into a stream of records (one token at one layer) handed to a
 * sink: the loader keeps the rows of one layer (moe_trace_load), the info report counts every
 * layer (moe_trace_info).
 */
#include "trace.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zlib.h>


static const char *const trace_folder[4] = {
    "deepseek-v2-lite-moebeyond", "mixtral-8x7b-instruct-fp8-specmoe", "flame-moe-290m-dynande",
    "mixtral-8x7b-fiddler-popularity"};

const char *moe_trace_folder(int format)
{
    return format >= 0 && format < 4 ? trace_folder[format] : "";
}

/* ---- small helpers ---------------------------------------------------------------------- */


int moe_trace_experts(int format)
{
    return (format == MOE_TRACE_MIXTRAL || format == MOE_TRACE_POPULARITY) ? MOE_TRACE_MX_E
                                                                            : MOE_TRACE_DS_E;
}

static int is_dir(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

static int is_file(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

static int ends_with(const char *s, const char *suf)
{
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && strcmp(s + a - b, suf) == 0;
}

static const char *base_name(const char *p)
{
    const char *s = strrchr(p, '/');
    return s ? s + 1 : p;
}

/* Natural order: runs of digits compare as numbers (prompt_2 < prompt_10). */
static int natcmp(const char *a, const char *b)
{
    while (*a && *b) {
        if (isdigit((unsigned char)*a) && isdigit((unsigned char)*b)) {
            while (*a == '0' && isdigit((unsigned char)a[1]))
                a++;
            while (*b == '0' && isdigit((unsigned char)b[1]))
                b++;
            size_t la = 0, lb = 0;
            while (isdigit((unsigned char)a[la]))
                la++;
            while (isdigit((unsigned char)b[lb]))
                lb++;
            if (la != lb)
                return la < lb ? -1 : 1;
            int c = strncmp(a, b, la);
            if (c)
                return c;
            a += la;
            b += lb;
        } else {
            if (*a != *b)
                return (unsigned char)*a - (unsigned char)*b;
            a++;
            b++;
        }
    }
    return (unsigned char)*a - (unsigned char)*b;
}

static int natcmp_ptr(const void *a, const void *b)
{
    return natcmp(*(char *const *)a, *(char *const *)b);
}

int moe_trace_parse_long(const char *s, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end)
        return -1;
    *out = v;
    return 0;
}

void moe_trace_chomp(char *s)
{
    size_t n = strlen(s);
    while (n && (s[n - 1] == '\n' || s[n - 1] == '\r'))
        s[--n] = '\0';
}

int moe_trace_blank(const char *s)
{
    while (*s && isspace((unsigned char)*s))
        s++;
    return *s == '\0';
}

/* ---- file lists ---- */

typedef struct {
    char **v;
    size_t n, cap;
} strlist;

static void strlist_free(strlist *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->v[i]);
    free(l->v);
    memset(l, 0, sizeof *l);
}

static int strlist_add(strlist *l, const char *dir, const char *name)
{
    if (l->n == l->cap) {
        size_t nc = l->cap ? 2 * l->cap : 64;
        char **nv = realloc(l->v, nc * sizeof *nv);
        if (!nv)
            return moe_fail(MOE_ENOMEM, NULL, "out of memory (file list of %s)", name);
        l->v = nv;
        l->cap = nc;
    }
    size_t len = (dir ? strlen(dir) + 1 : 0) + strlen(name) + 1;
    char *s = malloc(len);
    if (!s)
        return moe_fail(MOE_ENOMEM, NULL, "out of memory (file list of %s)", name);
    snprintf(s, len, "%s%s%s", dir ? dir : "", dir ? "/" : "", name);
    l->v[l->n++] = s;
    return MOE_OK;
}

/* Regular files in dir and its direct subfolders whose names pass accept, sorted in natural
 * order of their paths. */
static int list_files(const char *dir, int (*accept)(const char *), strlist *out, int depth)
{
    DIR *d = opendir(dir);
    if (!d)
        return moe_fail(MOE_EIO, moe_trace_hint(), "cannot read folder: %s (%s)", strerror(errno),
                        dir);
    int rc = MOE_OK;
    struct dirent *de;
    size_t first = out->n;
    while (!rc && (de = readdir(d))) {
        if (de->d_name[0] == '.')
            continue;
        size_t len = strlen(dir) + strlen(de->d_name) + 2;
        char *full = malloc(len);
        if (!full) {
            rc = moe_fail(MOE_ENOMEM, NULL, "out of memory (file list of %s)", dir);
            break;
        }
        snprintf(full, len, "%s/%s", dir, de->d_name);
        if (depth > 0 && is_dir(full))
            rc = list_files(full, accept, out, depth - 1);
        else if (is_file(full) && accept(de->d_name))
            rc = strlist_add(out, dir, de->d_name);
        free(full);
    }
    closedir(d);
    if (!rc && depth > 0 && out->n > first) /* sort once, at the top */
        qsort(out->v + first, out->n - first, sizeof *out->v, natcmp_ptr);
    return rc;
}

static int accept_csv(const char *n) { return ends_with(n, ".csv"); }
static int accept_routing(const char *n) { return ends_with(n, "_routing.jsonl"); }
static int accept_flame(const char *n)
{
    return ends_with(n, ".csv.gz") || ends_with(n, ".csv");
}
static int accept_any_trace(const char *n)
{
    return ends_with(n, ".csv") || ends_with(n, ".csv.gz") || ends_with(n, ".jsonl") ||
           ends_with(n, ".json");
}

/* Layer number in a FLAME file name ("..._layer7_..."), or -1. */
static int flame_layer_of(const char *path)
{
    const char *b = base_name(path), *s = b, *hit = NULL;
    while ((s = strstr(s, "layer")) != NULL) {
        if (isdigit((unsigned char)s[5]))
            hit = s + 5;
        s += 5;
    }
    if (!hit)
        return -1;
    long v = strtol(hit, NULL, 10);
    return v >= 0 && v < MOE_TRACE_MAX_LAYERS ? (int)v : -1;
}

/* ---- checks ------------------------------------------------------------------ */

int moe_trace_check_k(moe_trace_state *st, int k, int has_w, const char *file, long line)
{
    if (st->K == 0) {
        st->K = k;
        st->has_w = has_w;
        return MOE_OK;
    }
    if (k != st->K)
        return moe_fail(MOE_EFORMAT, "every record of a trace must list the same number of experts",
                        "record lists %d experts, earlier records %d (%s:%ld)", k, st->K, file,
                        line);
    if (has_w != st->has_w)
        return moe_fail(MOE_EFORMAT, NULL, "record %s gating_probs, earlier records %s (%s:%ld)",
                        has_w ? "has" : "lacks", st->has_w ? "have them" : "do not", file, line);
    return MOE_OK;
}

int moe_trace_check_ids(const int32_t *ids, int k, int E, const char *file, long line)
{
    for (int j = 0; j < k; j++) {
        if (ids[j] < 0 || ids[j] >= E)
            return moe_fail(MOE_EFORMAT, "expert ids of this trace lie in 0..E-1",
                            "expert id %d out of range 0..%d (%s:%ld)", (int)ids[j], E - 1, file,
                            line);
        for (int i = 0; i < j; i++)
            if (ids[i] == ids[j])
                return moe_fail(MOE_EFORMAT, NULL, "expert id %d listed twice (%s:%ld)",
                                (int)ids[j], file, line);
    }
    return MOE_OK;
}

const char *moe_trace_gz_message(const char *msg, const char *path)
{
    size_t n = strlen(path);
    if (msg && strncmp(msg, path, n) == 0 && msg[n] == ':' && msg[n + 1] == ' ')
        return msg + n + 2;
    return msg ? msg : "";
}

const char *moe_trace_skip_bom(const char *line)
{
    const unsigned char *u = (const unsigned char *)line;
    return u[0] == 0xEF && u[1] == 0xBB && u[2] == 0xBF ? line + 3 : line;
}

/* ---- affinities ---------------------------------------------------------------------------- */

void moe_trace_affinity(int E, int K, const int32_t *experts, const double *w, const double *p,
                        int ranked, double *row)
{
    if (p) {
        double S = 0.0, pmin = 1.0;
        for (int j = 0; j < K; j++) {
            S += p[experts[j]];
            if (p[experts[j]] < pmin)
                pmin = p[experts[j]];
        }
        double q = E > K ? (1.0 - S) / (E - K) : 1.0;
        if (q > pmin)
            q = pmin;
        if (q < 1e-12)
            q = 1e-12;
        for (int e = 0; e < E; e++)
            row[e] = log(q);
        for (int j = 0; j < K; j++)
            row[experts[j]] = log(p[experts[j]]);
        return;
    }
    for (int e = 0; e < E; e++)
        row[e] = log(MOE_TRACE_EPS);
    for (int j = 0; j < K; j++) {
        double v = w ? w[j] : ranked ? 2.0 * (K - j) / ((double)K * (K + 1)) : 1.0 / K;
        row[experts[j]] = log(v > MOE_TRACE_EPS ? v : MOE_TRACE_EPS);
    }
}

/* ---- the loader (one layer) ---------------------------------------------------------------- */

typedef struct {
    int layer;     /* wanted layer; -1 = every record (a single FLAME file) */
    long max;
    long vocab;
    int E;
    moe_rec *rec;
    long cap;
    int lo, hi;    /* layers seen */
} load_ctx;

/* FNV-1a 64 of a token's text */
static uint64_t fnv1a(const char *s)
{
    uint64_t h = 14695981039346656037ULL; /* FNV-1a 64 offset basis */
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 1099511628211ULL;
    }
    return h;
}

static int grow(void **p, size_t count, size_t size)
{
    void *np = realloc(*p, count * size);
    if (!np)
        return moe_fail(MOE_ENOMEM, NULL, "out of memory (trace of %zu rows)", count);
    *p = np;
    return MOE_OK;
}

static int load_sink(void *vctx, const moe_trace_rec *r)
{
    load_ctx *c = vctx;
    if (r->layer < c->lo)
        c->lo = r->layer;
    if (r->layer > c->hi)
        c->hi = r->layer;
    if (c->layer >= 0 && r->layer != c->layer)
        return MOE_TRACE_MORE;
    moe_rec *rec = c->rec;
    const int K = r->k;
    if (rec->n == 0) {
        rec->K = K;
        rec->E = c->E = r->E;
    }
    const int E = c->E;
    if (rec->n == c->cap) {
        long nc = c->cap ? 2 * c->cap : 1024;
        if (nc > c->max)
            nc = c->max;
        int rc = grow((void **)&rec->choices, (size_t)nc * K, sizeof *rec->choices);
        if (!rc)
            rc = grow((void **)&rec->logits, (size_t)nc * E, sizeof *rec->logits);
        if (!rc && r->w)
            rc = grow((void **)&rec->choice_w, (size_t)nc * K, sizeof *rec->choice_w);
        if (!rc && r->text)
            rc = grow((void **)&rec->ids, (size_t)nc, sizeof *rec->ids);
        if (rc)
            return rc;
        c->cap = nc;
    }
    size_t t = (size_t)rec->n;
    memcpy(rec->choices + t * K, r->experts, (size_t)K * sizeof *r->experts);
    if (r->w && rec->choice_w)
        memcpy(rec->choice_w + t * K, r->w, (size_t)K * sizeof *r->w);
    if (r->text && rec->ids)
        rec->ids[t] = (int64_t)(fnv1a(r->text) % (uint64_t)c->vocab);
    moe_trace_affinity(E, K, r->experts, r->w, r->p, 0, rec->logits + t * E);
    rec->n++;
    return rec->n >= c->max ? MOE_TRACE_STOP : MOE_TRACE_MORE;
}

static int read_one(int format, const char *file, int layer, moe_trace_state *st,
                    moe_trace_sink sink, void *ctx)
{
    st->files++;
    switch (format) {
    case MOE_TRACE_DEEPSEEK:
        return moe_trace_read_deepseek(file, st, sink, ctx);
    case MOE_TRACE_MIXTRAL:
        return moe_trace_read_mixtral(file, st, sink, ctx);
    case MOE_TRACE_FLAME:
        return moe_trace_read_flame(file, layer, st, sink, ctx);
    default:
        return moe_fail(MOE_EINVAL, NULL, "trace format %d has no record reader", format);
    }
}

static const char *format_glob(int format)
{
    switch (format) {
    case MOE_TRACE_DEEPSEEK: return "*.csv";
    case MOE_TRACE_MIXTRAL: return "*_routing.jsonl";
    case MOE_TRACE_FLAME: return "*layer<L>*.csv.gz";
    default: return "*.json";
    }
}

/* The trace files of path for a format: the file itself, or the folder's matching files. */
static int trace_files(int format, const char *path, strlist *files)
{
    if (is_file(path))
        return strlist_add(files, NULL, path);
    if (!is_dir(path))
        return moe_fail(MOE_EIO, moe_trace_hint(), "trace not found: %s (%s)", strerror(ENOENT),
                        path);
    int (*acc)(const char *) = format == MOE_TRACE_DEEPSEEK  ? accept_csv
                               : format == MOE_TRACE_MIXTRAL ? accept_routing
                                                             : accept_flame;
    int rc = list_files(path, acc, files, 1);
    if (!rc && files->n == 0)
        rc = moe_fail(MOE_EFORMAT, moe_trace_hint(), "no trace files (%s) in folder (%s)",
                      format_glob(format), path);
    return rc;
}

int moe_trace_load(int format, const char *path, int layer, long max_tokens, long vocab,
                   moe_rec *rec)
{
    memset(rec, 0, sizeof *rec);
    if (format == MOE_TRACE_POPULARITY)
        return moe_fail(MOE_EINVAL, NULL, "popularity counts are not per-token rows (%s)", path);
    strlist files = {0};
    int rc = trace_files(format, path, &files);
    if (rc) {
        strlist_free(&files);
        return rc;
    }
    int single = is_file(path);
    load_ctx c = {single && format == MOE_TRACE_FLAME ? -1 : layer,
                  max_tokens > 0 ? max_tokens : LONG_MAX, vocab > 0 ? vocab : 1,
                  0, rec, 0, INT_MAX, -1};
    moe_trace_state st = {format == MOE_TRACE_FLAME ? 0 : moe_trace_experts(format), 0, -1, 0, 0};
    for (size_t i = 0; i < files.n && !rc; i++) {
        int fl = layer;
        if (format == MOE_TRACE_FLAME) {
            fl = flame_layer_of(files.v[i]);
            if (fl < 0)
                fl = 0;
            if (fl < c.lo)
                c.lo = fl;
            if (fl > c.hi)
                c.hi = fl;
            if (!single && fl != layer)
                continue;
        }
        rc = read_one(format, files.v[i], fl, &st, load_sink, &c);
    }
    if (rc == MOE_TRACE_STOP)
        rc = MOE_OK;
    if (!rc && rec->n == 0) {
        if (c.hi >= 0)
            rc = moe_fail(MOE_EINVAL, "choose one of the trace's layers",
                          "layer %d is not in the trace, which holds layers %d..%d (%s)", layer,
                          c.lo, c.hi, path);
        else
            rc = moe_fail(MOE_EFORMAT, NULL, "no records (%s)", path);
    }
    strlist_free(&files);
    if (rc) {
        moe_rec_clear(rec);
        return rc;
    }
    rec->layer_lo = c.lo;
    rec->layer_hi = c.hi;
    return MOE_OK;
}

/* ---- the per-token trace sources ------------------------------------------------------------ */

int moe_trace_source_open(moe_source *s, int format)
{
    char def[4096];
    const char *path = moe_source_str(s, "path");
    if (!moe_source_given(s, "path")) {
        snprintf(def, sizeof def, "%s/%s", moe_trace_root(), moe_trace_folder(format));
        path = def;
    }
    moe_rec *r = moe_source_rec_alloc(s);
    if (!r)
        return MOE_ENOMEM;
    int rc = moe_trace_load(format, path, (int)moe_source_num(s, "layer"),
                            (long)moe_source_num(s, "max_tokens"), s->vocab, r);
    if (rc)
        return rc;
    s->required_m = r->E;
    moe_source_rec_ready(s);
    return MOE_OK;
}

/* ---- trace info ----------------------------------------------------------------------------- */

typedef struct {
    int E;
    long *counts;   /* (MAX_LAYERS, E) */
    long *tokens;   /* (MAX_LAYERS) records per layer */
    long *seq_max;  /* max position per sequence */
    long nseq, seq_cap;
    long records;
    int has_text;
} info_ctx;

static int info_sink(void *vctx, const moe_trace_rec *r)
{
    info_ctx *c = vctx;
    if (!c->counts) {
        c->E = r->E;
        c->counts = calloc((size_t)MOE_TRACE_MAX_LAYERS * c->E, sizeof *c->counts);
        if (!c->counts)
            return moe_fail(MOE_ENOMEM, NULL, "out of memory (trace info)");
    }
    if (r->seq >= c->seq_cap) {
        long nc = c->seq_cap ? 2 * c->seq_cap : 256;
        while (nc <= r->seq)
            nc *= 2;
        int rc = grow((void **)&c->seq_max, (size_t)nc, sizeof *c->seq_max);
        if (rc)
            return rc;
        for (long i = c->seq_cap; i < nc; i++)
            c->seq_max[i] = -1;
        c->seq_cap = nc;
    }
    if (r->seq >= c->nseq)
        c->nseq = r->seq + 1;
    if (r->pos > c->seq_max[r->seq])
        c->seq_max[r->seq] = r->pos;
    for (int j = 0; j < r->k; j++)
        c->counts[(size_t)r->layer * c->E + r->experts[j]]++;
    c->tokens[r->layer]++;
    c->records++;
    c->has_text |= r->text != NULL;
    return MOE_TRACE_MORE;
}

/* Detect the format of one file from its name and first line. */
static int detect_format(const char *file, int *format)
{
    if (ends_with(file, ".json")) {
        *format = MOE_TRACE_POPULARITY;
        return MOE_OK;
    }
    if (ends_with(file, ".jsonl")) {
        *format = MOE_TRACE_MIXTRAL;
        return MOE_OK;
    }
    gzFile g = gzopen(file, "rb");
    if (!g)
        return moe_fail(MOE_EIO, moe_trace_hint(), "cannot open trace: %s (%s)",
                        errno ? strerror(errno) : "gzopen failed", file);
    char head[128] = "";
    int zerr = Z_OK;
    char zmsg[128] = "";
    if (!gzgets(g, head, sizeof head)) {
        head[0] = '\0';
        snprintf(zmsg, sizeof zmsg, "%s", moe_trace_gz_message(gzerror(g, &zerr), file));
    }
    gzclose(g);
    if (zerr != Z_OK)
        return moe_fail(MOE_EFORMAT, "is the file truncated or not gzip?",
                        "corrupt or truncated gzip data: %s (%s)", zmsg, file);
    const char *h = moe_trace_skip_bom(head);
    if (!strncmp(h, moe_trace_ds_header, strlen(moe_trace_ds_header))) {
        *format = MOE_TRACE_DEEPSEEK;
        return MOE_OK;
    }
    if (!strncmp(h, "layer_id,token_id,", 18)) {
        *format = MOE_TRACE_FLAME;
        return MOE_OK;
    }
    return moe_fail(MOE_EFORMAT,
                    "moesim reads the DeepSeek CSV, Mixtral JSONL, FLAME csv(.gz) and Fiddler "
                    "popularity JSON traces (moesim list sources)",
                    "unknown trace format: %s (%s)", head[0] ? "unrecognised header" : "empty file",
                    file);
}

static const char *const format_desc[4] = {
    "deepseek-csv: DeepSeek-V2-Lite expert ids per token and layer, with token text",
    "mixtral-jsonl: Mixtral-8x7B expert ids and renormalised gate probabilities per token",
    "flame-csv: FLAME-MoE router probabilities per token (one file per layer)",
    "popularity-json: Mixtral-8x7B expert selection counts per layer (no per-token records)",
};
static const char *const format_source[4] = {"trace_deepseek", "trace_mixtral", "trace_flame",
                                             "trace_mixtral_popularity"};

static void print_layer_row(FILE *out, int layer, long tokens, const long *cnt, int E)
{
    long sum = 0, mx = 0, mn = LONG_MAX;
    for (int e = 0; e < E; e++) {
        sum += cnt[e];
        if (cnt[e] > mx)
            mx = cnt[e];
        if (cnt[e] < mn)
            mn = cnt[e];
    }
    double mean = (double)sum / E;
    fprintf(out, "%5d %8ld %10.4f %8ld %8ld\n", layer, tokens, mean > 0 ? mx / mean : 0.0, mn,
            mx);
}

/* Tokens of each layer of popularity counts (L,E): the layer's counts / 2 (top-2). */
static long pop_layer_tokens(const long *c, int E)
{
    long s = 0;
    for (int e = 0; e < E; e++)
        s += c[e];
    return s / 2;
}

/* max/mean of the per-expert counts of one layer (0 for an empty layer) */
static double pop_imbalance(const long *c, int E)
{
    long sum = 0, mx = 0;
    for (int e = 0; e < E; e++) {
        sum += c[e];
        mx = c[e] > mx ? c[e] : mx;
    }
    double mean = (double)sum / E;
    return mean > 0 ? mx / mean : 0.0;
}

static int info_popularity(const char *path, FILE *out)
{
    int L, E;
    long *c;
    int rc = moe_trace_popularity_read(path, &L, &E, &c);
    if (rc)
        return rc;
    long maxtok = 0;
    for (int l = 0; l < L; l++)
        if (pop_layer_tokens(c + (size_t)l * E, E) > maxtok)
            maxtok = pop_layer_tokens(c + (size_t)l * E, E);
    fprintf(out, "trace    %s\nformat   %s\nsource   %s\nfiles    1\n", path, format_desc[3],
            format_source[3]);
    fprintf(out, "layers   %d (0..%d)\nexperts  %d\n", L, L - 1, E);
    fprintf(out, "k        2 (Mixtral top-2; tokens = counts/2)\n");
    fprintf(out, "weights  none (counts only)\ntokens   %ld (largest layer)\n", maxtok);
    fprintf(out, "recorded load per layer (imbalance = max/mean of per-expert counts):\n");
    fprintf(out, "layer   tokens  imbalance      min      max\n");
    for (int l = 0; l < L; l++)
        print_layer_row(out, l, pop_layer_tokens(c + (size_t)l * E, E), c + (size_t)l * E, E);
    free(c);
    return MOE_OK;
}

/* A folder of popularity files (and no per-token trace): one line per file. */
static int info_popularity_folder(const char *path, const strlist *files, FILE *out)
{
    size_t n = 0, skip = strlen(path) + 1;
    int width = 4;
    for (size_t i = 0; i < files->n; i++)
        if (ends_with(files->v[i], ".json")) {
            n++;
            int len = (int)strlen(files->v[i] + skip);
            width = len > width ? len : width;
        }
    fprintf(out, "trace    %s\nformat   %s\nsource   %s\nfiles    %zu\n", path, format_desc[3],
            format_source[3], n);
    fprintf(out, "k        2 (Mixtral top-2; tokens = counts/2)\nweights  none (counts only)\n");
    fprintf(out, "recorded load per file (tokens of the largest layer; imbalance = max/mean\n"
                 "of the per-expert counts, its mean and max over the layers):\n");
    fprintf(out, "%-*s %6s %7s %8s %9s %9s\n", width, "file", "layers", "experts", "tokens",
            "imb mean", "imb max");
    for (size_t i = 0; i < files->n; i++) {
        if (!ends_with(files->v[i], ".json"))
            continue;
        int L, E;
        long *c;
        int rc = moe_trace_popularity_read(files->v[i], &L, &E, &c);
        if (rc)
            return rc;
        long maxtok = 0;
        double imb_sum = 0.0, imb_max = 0.0;
        for (int l = 0; l < L; l++) {
            const long *row = c + (size_t)l * E;
            maxtok = pop_layer_tokens(row, E) > maxtok ? pop_layer_tokens(row, E) : maxtok;
            imb_sum += pop_imbalance(row, E);
            imb_max = fmax(imb_max, pop_imbalance(row, E));
        }
        free(c);
        fprintf(out, "%-*s %6d %7d %8ld %9.4f %9.4f\n", width, files->v[i] + skip, L, E, maxtok,
                imb_sum / L, imb_max);
    }
    fprintf(out, "give one file for its per-layer table\n");
    return MOE_OK;
}

/* The format of path: a file's, or that of the first per-token trace file of a folder (-1 for
 * a folder holding only popularity counts); *files lists the folder's trace files. */
static int info_format(const char *path, strlist *files, int *format)
{
    *format = -1;
    if (is_file(path))
        return detect_format(path, format);
    if (!is_dir(path))
        return moe_fail(MOE_EIO, moe_trace_hint(), "trace not found: %s (%s)", strerror(ENOENT),
                        path);
    int rc = list_files(path, accept_any_trace, files, 1);
    int json = 0;
    for (size_t i = 0; !rc && i < files->n && *format < 0; i++) {
        if (ends_with(files->v[i], ".json")) {
            json = 1;
            continue;
        }
        if (ends_with(files->v[i], ".jsonl") && !accept_routing(base_name(files->v[i])))
            continue;
        rc = detect_format(files->v[i], format);
    }
    if (!rc && *format < 0 && !json)
        rc = moe_fail(MOE_EFORMAT, files->n ? "give one .jsonl file" : moe_trace_hint(),
                      "no trace files in folder (%s)", path);
    return rc;
}

/* Every record of a per-token trace (DeepSeek, Mixtral, FLAME) through info_sink. */
static int info_scan(const char *path, int format, strlist *files, info_ctx *c,
                     moe_trace_state *st)
{
    *st = (moe_trace_state){format == MOE_TRACE_FLAME ? 0 : moe_trace_experts(format), 0, -1, 0,
                            0};
    int rc = trace_files(format, path, files);
    if (rc)
        return rc;
    c->tokens = calloc(MOE_TRACE_MAX_LAYERS, sizeof *c->tokens);
    if (!c->tokens)
        return moe_fail(MOE_ENOMEM, NULL, "out of memory (trace info)");
    for (size_t i = 0; i < files->n && !rc; i++) {
        int fl = 0;
        if (format == MOE_TRACE_FLAME) {
            fl = flame_layer_of(files->v[i]);
            if (fl < 0)
                fl = 0;
        }
        rc = read_one(format, files->v[i], fl, st, info_sink, c);
    }
    return rc;
}

static void info_ctx_free(info_ctx *c, strlist *files)
{
    strlist_free(files);
    free(c->counts);
    free(c->tokens);
    free(c->seq_max);
}

/* The report of a per-token trace (DeepSeek, Mixtral, FLAME). */
static int info_records(const char *path, int format, FILE *out)
{
    strlist files = {0};
    info_ctx c = {0};
    moe_trace_state st;
    int rc = info_scan(path, format, &files, &c, &st);
    if (rc)
        goto done;
    int E = c.E;
    int nl = 0, lo = -1, hi = -1;
    long tokens = 0;
    for (int l = 0; l < MOE_TRACE_MAX_LAYERS; l++)
        if (c.tokens[l]) {
            nl++;
            if (lo < 0)
                lo = l;
            hi = l;
        }
    for (long q = 0; q < c.nseq; q++)
        tokens += c.seq_max[q] + 1;
    fprintf(out, "trace    %s\nformat   %s\nsource   %s\nfiles    %ld\n", path,
            format_desc[format], format_source[format], st.files);
    fprintf(out, "layers   %d (%d..%d)\nexperts  %d\nk        %d recorded experts per token\n",
            nl, lo, hi, E, st.K);
    fprintf(out, "weights  %s\n",
            format == MOE_TRACE_FLAME ? "router softmax probabilities (not renormalised)"
            : st.has_w == 1           ? "gate probabilities of the recorded experts"
                                      : "none (expert ids only)");
    fprintf(out, "tokens   %ld (records %ld, missing (token, layer) records %ld)%s\n", tokens,
            c.records, tokens * nl - c.records, c.has_text ? ", with token text" : "");
    fprintf(out, "recorded load per layer (imbalance = max/mean of per-expert counts):\n");
    fprintf(out, "layer   tokens  imbalance      min      max\n");
    for (int l = 0; l < MOE_TRACE_MAX_LAYERS; l++)
        if (c.tokens[l])
            print_layer_row(out, l, c.tokens[l], c.counts + (size_t)l * c.E, E);
done:
    info_ctx_free(&c, &files);
    return rc;
}

int moe_trace_info(const char *path, FILE *out)
{
    strlist any = {0};
    int format;
    int rc = info_format(path, &any, &format);
    if (!rc && format < 0)
        rc = info_popularity_folder(path, &any, out);
    else if (!rc && format == MOE_TRACE_POPULARITY)
        rc = info_popularity(path, out);
    else if (!rc)
        rc = info_records(path, format, out);
    strlist_free(&any);
    return rc;
}

/* ---- the layers of a trace (`layers = all`) ---------------------------------------------- */

static const char *const layer_sources[4] = {"trace_deepseek", "trace_mixtral", "trace_flame",
                                             "trace_popularity"};

/* "l1 l2 ..." of the layers marked in has (MAX_LAYERS), malloc'd. */
static int layer_text(const unsigned char *has, char **text)
{
    char *buf = malloc((size_t)MOE_TRACE_MAX_LAYERS * 5 + 1);
    if (!buf)
        return moe_fail(MOE_ENOMEM, NULL, "out of memory (trace layers)");
    size_t n = 0;
    for (int l = 0; l < MOE_TRACE_MAX_LAYERS; l++)
        if (has[l])
            n += (size_t)sprintf(buf + n, "%s%d", n ? " " : "", l);
    buf[n] = '\0';
    *text = buf;
    return MOE_OK;
}

int moe_trace_layer_list(const char *source, const char *path, char **text)
{
    *text = NULL;
    int format = -1;
    for (int f = 0; f < 4; f++)
        if (!strcmp(source, layer_sources[f]))
            format = f;
    if (format < 0)
        return moe_fail(MOE_EINVAL, "layers = all needs a recorded trace source: trace_deepseek, "
                        "trace_mixtral, trace_flame or trace_popularity",
                        "source %s has no trace layers", source);
    char def[4096];
    if (!path) {
        if (format == MOE_TRACE_POPULARITY)
            return moe_fail(MOE_EINVAL, "give the popularity file as path",
                            "layers = all of trace_popularity needs a path");
        snprintf(def, sizeof def, "%s/%s", moe_trace_root(), moe_trace_folder(format));
        path = def;
    }
    unsigned char has[MOE_TRACE_MAX_LAYERS] = {0};
    int rc = MOE_OK, found = 0;
    if (format == MOE_TRACE_POPULARITY) {
        int L = 0, E = 0;
        long *c = NULL;
        if (!(rc = moe_trace_popularity_read(path, &L, &E, &c)))
            for (int l = 0; l < L && l < MOE_TRACE_MAX_LAYERS; l++)
                found += has[l] = 1;
        free(c);
    } else {
        strlist files = {0};
        info_ctx c = {0};
        moe_trace_state st;
        if (!(rc = info_scan(path, format, &files, &c, &st)))
            for (int l = 0; l < MOE_TRACE_MAX_LAYERS; l++)
                found += has[l] = c.tokens[l] > 0;
        info_ctx_free(&c, &files);
    }
    if (!rc && !found)
        rc = moe_fail(MOE_EFORMAT, NULL, "no layer has a record (%s)", path);
    return rc ? rc : layer_text(has, text);
}
