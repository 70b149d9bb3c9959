/* spec.c: experiment specs. Reads an INI file with libinih (no hand-written parser), applies
 * `--set section.key=value` overrides, checks every key and value with its file, line and key,
 * and expands the sweep into points (sim/point.h). Owns moe_spec_* (spec.h).
 *
 * ---- the spec format ------------------------------------------------------------------------
 *
 *   [experiment]                  ; optional; every key has a default
 *   name = default                ; results go to results/NAME.db (default: the file's stem)
 *   description = free text       ; ignored by the run
 *   routers = topk switch         ; [router.NAME] sections to sweep (default: all, file order)
 *   capacity_factors = 1.0 1.25   ; exact decimals (default 1.0)
 *   distributions = gauss         ; [distribution.NAME] sections (default: all)
 *   shapes = small                ; [shape.NAME] sections (default: all)
 *   tokens = 2048                 ; tokens per batch T (default 1024)
 *   batches = 2                   ; batches per point (default 1)
 *   seeds = 1 2 3                 ; seeds (default 1)
 *   error_tokens = 512            ; rows for the dense-mixture error; 0 = all (default 512)
 *
 *   [router.NAME]                 ; one router configuration
 *   type = topk                   ; a registered router (moesim list routers); default: NAME
 *   k = 2                         ; any routing option (moesim list options): k, capacity_factor,
 *                                 ; capacity, min_capacity, rounding, order, renormalize, ...
 *
 *   [distribution.NAME]           ; one token source
 *   source = clustered            ; a source kind (moesim list sources)
 *   shapes = small                ; optional: only pair this source with these shapes
 *   clusters = 8                  ; every other key is a parameter of the source
 *
 *   [shape.NAME]                  ; one layer shape
 *   d = 256                       ; model width D
 *   f = 512                       ; expert hidden width F
 *   E = 16                        ; experts
 *   k = 2                         ; optional: k of topk routers that set no k of their own
 *   activation = gelu_tanh        ; gelu_tanh (default), gelu_erf, relu, swiglu
 *
 * Every list (routers, capacity_factors, distributions, shapes, tokens, batches, seeds) is a sweep
 * axis; values are separated by spaces or commas, and a long list may continue on indented lines.
 * The sweep is the product of all axes (a distribution with `shapes` pairs only with those).
 * A router that sets its own capacity_factor runs at that factor only; one with an explicit
 * `capacity`, `dropless = true`, or a dense plan (soft_moe) has no use for the factor and runs
 * once, recorded with capacity_factor "none" and the reason. Comments: lines starting with ; or #, and
 * " ; ..." at the end of a line. Lines are at most 197 characters. Paths (hash_table, trace files)
 * are relative to the directory moesim runs in. Overrides: `--set experiment.tokens=1024`,
 * `--set router.topk.k=1`, `--set distribution.zipf.zipf_s=1.2`; a --set may add a key or a section.
 * Errors: unknown keys and sections, bad values, empty or repeated list items, k > E and any
 * failure to allocate a router or open a source are reported as
 * "<what> (<file>:<line>, key <section>.<key>)" before any point runs.
 */
#include "spec.h"

#include "layer.h"
#include "options.h"

#include <ctype.h>
#include <errno.h>
#include <ini.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- raw sections and keys ---- */

typedef struct {
    char *key, *value;
    const char *file; /* the spec path, or a "--set" label */
    int line;         /* spec line, or the index of the --set (from 1) */
} spec_kv;

typedef struct {
    char *name; /* "experiment", "router.topk", ... */
    spec_kv *kv;
    int nkv, cap;
    spec_kv head; /* where the section starts (key ""), for errors about a section without keys */
} spec_section;

/* ---- interpreted sections ---- */

typedef struct {
    const spec_section *sec;
    const char *name; /* after "router." */
    const moe_router_type *type;
    const spec_kv *type_kv, *k_kv, *cf_kv, *cap_kv, *dropless_kv, *ne_kv;
    moe_route_opts opts; /* options of the section (owns the hash table) */
    const char *hash_path;
    char cf_text[48];    /* canonical text of the section's own capacity_factor */
} spec_router;

typedef struct {
    const spec_section *sec;
    const char *name, *source;
    const spec_kv *source_kv, *shapes_kv;
    moe_kv *params;
    int nparams;
    char *params_text;
    unsigned char *pairs; /* (nshapes) 1 if this distribution pairs with shape i */
} spec_dist;

typedef struct {
    const spec_section *sec;
    const char *name;
    int d, f, E, k, act;
    const spec_kv *E_kv, *k_kv;
} spec_shape;

typedef struct {
    long long num, den;
    char text[48];
} spec_cf;

struct moe_spec {
    char *path, *name;
    spec_section *secs;
    int nsecs;
    char **labels; /* "--set" labels owned here */
    int nlabels;
    spec_router *routers;
    int nrouters;
    spec_dist *dists;
    int ndists;
    spec_shape *shapes;
    int nshapes;
    spec_cf *cfs;
    int ncfs;
    long *tokens, *batches;
    int ntokens, nbatches;
    uint64_t *seeds;
    int nseeds;
    int error_tokens;
    moe_point *points;
    size_t npoints, cap_points;
};

/* ---- errors with a location ---- */

static int loc_fail(int code, const char *file, int line, const char *section, const char *key,
                    const char *hint, const char *fmt, ...) __attribute__((format(printf, 7, 8)));

static int loc_fail(int code, const char *file, int line, const char *section, const char *key,
                    const char *hint, const char *fmt, ...)
{
    char what[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    char where[512];
    if (line > 0)
        snprintf(where, sizeof where, "%s:%d", file, line);
    else
        snprintf(where, sizeof where, "%s", file);
    if (!*key) /* the section as a whole */
        return moe_fail(code, hint, "%s (%s, section [%s])", what, where, section);
    return moe_fail(code, hint, "%s (%s, key %s.%s)", what, where, section, key);
}

#define KV_FAIL(code, sec, kv, hint, ...)                                                     \
    loc_fail(code, (kv)->file, (kv)->line, (sec)->name, (kv)->key, hint, __VA_ARGS__)

/* Re-report the error a callee recorded, with the location of kv appended. */
static int kv_relocate(int rc, const spec_section *sec, const spec_kv *kv)
{
    char what[1024], hint[512];
    snprintf(what, sizeof what, "%s", *moe_errmsg() ? moe_errmsg() : "failed");
    snprintf(hint, sizeof hint, "%s", moe_errhint());
    moe_clear_error();
    return KV_FAIL(rc ? rc : MOE_EINVAL, sec, kv, hint[0] ? hint : NULL, "%s", what);
}

/* ---- building the raw sections ---- */

static char *xstrdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *c = malloc(n);
    if (c)
        memcpy(c, s, n);
    return c;
}

static spec_section *section_find(moe_spec *s, const char *name)
{
    for (int i = 0; i < s->nsecs; i++)
        if (strcmp(s->secs[i].name, name) == 0)
            return &s->secs[i];
    return NULL;
}

static spec_section *section_get(moe_spec *s, const char *name)
{
    spec_section *sec = section_find(s, name);
    if (sec)
        return sec;
    spec_section *ns = realloc(s->secs, (size_t)(s->nsecs + 1) * sizeof *ns);
    if (!ns)
        return NULL;
    s->secs = ns;
    sec = &s->secs[s->nsecs];
    memset(sec, 0, sizeof *sec);
    sec->name = xstrdup(name);
    if (!sec->name)
        return NULL;
    sec->head.key = sec->head.value = (char *)"";
    sec->head.file = s->path;
    s->nsecs++;
    return sec;
}

static spec_kv *kv_find(const spec_section *sec, const char *key)
{
    if (!sec)
        return NULL;
    for (int i = 0; i < sec->nkv; i++)
        if (strcmp(sec->kv[i].key, key) == 0)
            return &sec->kv[i];
    return NULL;
}

static spec_kv *kv_add(spec_section *sec, const char *key, const char *value, const char *file,
                       int line)
{
    if (sec->nkv == sec->cap) {
        int cap = sec->cap ? 2 * sec->cap : 8;
        spec_kv *nk = realloc(sec->kv, (size_t)cap * sizeof *nk);
        if (!nk)
            return NULL;
        sec->kv = nk;
        sec->cap = cap;
    }
    spec_kv *kv = &sec->kv[sec->nkv];
    kv->key = xstrdup(key);
    kv->value = xstrdup(value);
    if (!kv->key || !kv->value) {
        free(kv->key);
        free(kv->value);
        return NULL;
    }
    kv->file = file;
    kv->line = line;
    sec->nkv++;
    return kv;
}

/* ---- libinih callbacks ---- */

typedef struct {
    moe_spec *s;
    FILE *f;
    int line;     /* lines handed to inih so far = the line being parsed */
    int indented; /* the current line starts with white space (an inih continuation) */
    int failed, code; /* the first error recorded (message in moe_errmsg) */
    spec_kv *last; /* the key of the previous handler call, for continuations */
    const spec_section *last_sec;
} parse_ctx;

/* fgets-style reader that counts lines (the Debian libinih is built without line numbers
 * in the handler) and refuses lines longer than inih's buffer. */
static char *reader(char *str, int num, void *stream)
{
    parse_ctx *c = stream;
    if (!fgets(str, num, c->f))
        return NULL;
    c->line++;
    size_t len = strlen(str);
    if (len == (size_t)num - 1 && str[len - 1] != '\n' && !feof(c->f)) {
        int ch;
        while ((ch = fgetc(c->f)) != EOF && ch != '\n')
            ;
        if (!c->failed)
            c->code = moe_fail(MOE_EFORMAT, "continue a long list on indented lines",
                               "line longer than %d characters (%s:%d)", num - 3, c->s->path,
                               c->line);
        c->failed = 1;
    }
    c->indented = str[0] == ' ' || str[0] == '\t';
    /* A section header makes its section even when no key follows (libinih reports keys only):
     * `[router.soft_moe]` alone is a router of type soft_moe. Named as inih names it: the text
     * between '[' and the first ']' after leading white space. */
    const char *b = str;
    while (isspace((unsigned char)*b))
        b++;
    const char *e = *b == '[' ? strchr(b, ']') : NULL;
    if (e && !c->failed && !(c->indented && c->last)) { /* (indented after a key: a value) */
        char name[256];
        size_t n = (size_t)(e - b - 1);
        c->last = NULL; /* a header ends any continuation; section_get may move the sections */
        c->last_sec = NULL;
        if (n < sizeof name) {
            memcpy(name, b + 1, n);
            name[n] = '\0';
            spec_section *sec = section_find(c->s, name);
            if (!sec && (sec = section_get(c->s, name)) != NULL)
                sec->head.line = c->line;
            if (!sec) {
                c->code = moe_fail(MOE_ENOMEM, NULL, "out of memory (%s:%d)", c->s->path,
                                   c->line);
                c->failed = 1;
            }
        }
    }
    return str;
}

static int handler(void *user, const char *section, const char *name, const char *value)
{
    parse_ctx *c = user;
    moe_spec *s = c->s;
    if (c->failed)
        return 0;
    if (c->indented && c->last && c->last_sec && strcmp(c->last_sec->name, section) == 0 &&
        strcmp(c->last->key, name) == 0) { /* continuation line of the previous key */
        size_t a = strlen(c->last->value), b = strlen(value);
        char *v = realloc(c->last->value, a + b + 2);
        if (!v)
            goto nomem;
        v[a] = ' ';
        memcpy(v + a + 1, value, b + 1);
        c->last->value = v;
        return 1;
    }
    if (!*section) {
        c->failed = 1;
        c->code = moe_fail(MOE_EINVAL, "put keys under a section such as [experiment]",
                           "key outside a section (%s:%d, key %s)", s->path, c->line, name);
        return 0;
    }
    spec_section *sec = section_get(s, section);
    if (!sec)
        goto nomem;
    const spec_kv *dup = kv_find(sec, name);
    if (dup) {
        c->failed = 1;
        c->code = loc_fail(MOE_EINVAL, s->path, c->line, section, name,
                           "give each key once per section",
                           "duplicate key (first given at line %d)", dup->line);
        return 0;
    }
    c->last = kv_add(sec, name, value, s->path, c->line);
    if (!c->last)
        goto nomem;
    c->last_sec = sec;
    return 1;
nomem:
    c->failed = 1;
    c->code = moe_fail(MOE_ENOMEM, NULL, "out of memory (%s:%d)", s->path, c->line);
    return 0;
}

static int parse_file(moe_spec *s)
{
    FILE *f = fopen(s->path, "r");
    if (!f)
        return moe_fail(MOE_EIO, "give the path of a spec such as experiments/default.ini",
                        "cannot open spec: %s (%s)", strerror(errno), s->path);
    parse_ctx c = {.s = s, .f = f};
    int rc = ini_parse_stream(reader, &c, handler, &c);
    int rerr = ferror(f);
    fclose(f);
    if (c.failed)
        return c.code;
    if (rerr)
        return moe_fail(MOE_EIO, NULL, "read error (%s)", s->path);
    if (rc > 0)
        return moe_fail(MOE_EFORMAT,
                        "lines are `key = value`, `[section]`, or comments starting with ; or #",
                        "syntax error (%s:%d)", s->path, rc);
    if (rc < 0)
        return moe_fail(MOE_ENOMEM, NULL, "cannot parse spec (%s)", s->path);
    return MOE_OK;
}

/* "section.key=value": the key is the part after the last dot before '='. */
static int apply_set(moe_spec *s, const char *set, int i)
{
    char label[32];
    snprintf(label, sizeof label, "--set:%d", i);
    const char *eq = strchr(set, '=');
    const char *dot = NULL;
    for (const char *p = set; eq && p < eq; p++)
        if (*p == '.')
            dot = p;
    if (!eq || !dot || dot == set || dot + 1 == eq)
        return moe_fail(MOE_EINVAL,
                        "write --set section.key=value, e.g. --set experiment.tokens=512",
                        "bad override '%s' (%s)", set, label);
    char **nl = realloc(s->labels, (size_t)(s->nlabels + 1) * sizeof *nl);
    if (!nl)
        return moe_fail(MOE_ENOMEM, NULL, "out of memory (%s)", label);
    s->labels = nl;
    char *lab = xstrdup(label);
    if (!lab)
        return moe_fail(MOE_ENOMEM, NULL, "out of memory (%s)", label);
    s->labels[s->nlabels++] = lab;
    char secname[256], key[256];
    if ((size_t)(dot - set) >= sizeof secname || (size_t)(eq - dot - 1) >= sizeof key)
        return moe_fail(MOE_EINVAL, NULL, "override name too long (%s)", label);
    memcpy(secname, set, (size_t)(dot - set));
    secname[dot - set] = '\0';
    memcpy(key, dot + 1, (size_t)(eq - dot - 1));
    key[eq - dot - 1] = '\0';
    const char *value = eq + 1;
    spec_section *sec = section_get(s, secname);
    if (!sec)
        return moe_fail(MOE_ENOMEM, NULL, "out of memory (%s)", label);
    spec_kv *kv = kv_find(sec, key);
    if (kv) {
        char *v = xstrdup(value);
        if (!v)
            return moe_fail(MOE_ENOMEM, NULL, "out of memory (%s)", label);
        free(kv->value);
        kv->value = v;
        kv->file = lab;
        kv->line = 0;
    } else if (!kv_add(sec, key, value, lab, 0)) {
        return moe_fail(MOE_ENOMEM, NULL, "out of memory (%s)", label);
    }
    return MOE_OK;
}

/* ---- values ---- */

/* Split a list on spaces and commas into malloc'd words; an empty list is an error. */
static int split_list(const spec_section *sec, const spec_kv *kv, char ***out, int *n)
{
    *out = NULL;
    *n = 0;
    char **w = NULL;
    int nw = 0;
    const char *p = kv->value;
    for (;;) {
        while (*p && (isspace((unsigned char)*p) || *p == ','))
            p++;
        if (!*p)
            break;
        const char *b = p;
        while (*p && !isspace((unsigned char)*p) && *p != ',')
            p++;
        char **nw2 = realloc(w, (size_t)(nw + 1) * sizeof *w);
        char *word = malloc((size_t)(p - b) + 1);
        if (!nw2 || !word) {
            free(word);
            if (nw2)
                w = nw2;
            for (int i = 0; i < nw; i++)
                free(w[i]);
            free(w);
            return moe_fail(MOE_ENOMEM, NULL, "out of memory");
        }
        w = nw2;
        memcpy(word, b, (size_t)(p - b));
        word[p - b] = '\0';
        w[nw++] = word;
    }
    if (nw == 0) {
        free(w);
        return KV_FAIL(MOE_EINVAL, sec, kv, "give at least one value", "empty list");
    }
    for (int i = 0; i < nw; i++)
        for (int j = 0; j < i; j++)
            if (strcmp(w[i], w[j]) == 0) {
                int rc = KV_FAIL(MOE_EINVAL, sec, kv, "give each value once",
                                 "'%s' is listed twice", w[i]);
                for (int q = 0; q < nw; q++)
                    free(w[q]);
                free(w);
                return rc;
            }
    *out = w;
    *n = nw;
    return MOE_OK;
}

static void free_words(char **w, int n)
{
    for (int i = 0; i < n; i++)
        free(w[i]);
    free(w);
}

static int parse_int(const spec_section *sec, const spec_kv *kv, const char *text, long lo,
                     long hi, long *out)
{
    char *end;
    errno = 0;
    long x = strtol(text, &end, 10);
    if (errno || end == text || *end || x < lo || x > hi)
        return KV_FAIL(MOE_EINVAL, sec, kv, NULL,
                       "bad number '%s': want an integer in %ld..%ld", text, lo, hi);
    *out = x;
    return MOE_OK;
}

static int int_list(const spec_section *sec, const spec_kv *kv, long lo, long hi, long **out,
                    int *n)
{
    char **w;
    int nw;
    int rc = split_list(sec, kv, &w, &nw);
    if (rc)
        return rc;
    long *v = malloc((size_t)nw * sizeof *v);
    if (!v) {
        free_words(w, nw);
        return moe_fail(MOE_ENOMEM, NULL, "out of memory");
    }
    for (int i = 0; i < nw && !rc; i++) {
        rc = parse_int(sec, kv, w[i], lo, hi, &v[i]);
        for (int j = 0; j < i && !rc; j++) /* "8" and "08" are one value: one point */
            if (v[j] == v[i])
                rc = KV_FAIL(MOE_EINVAL, sec, kv, "give each value once",
                             "%ld is listed twice ('%s' and '%s')", v[i], w[j], w[i]);
    }
    free_words(w, nw);
    if (rc) {
        free(v);
        return rc;
    }
    *out = v;
    *n = nw;
    return MOE_OK;
}

/* Canonical text of an exact decimal num/den (den a power of ten): "1.0", "0.5", "1.25". */
static void decimal_text(long long num, long long den, char *buf, size_t len)
{
    char frac[24];
    int nf = 0;
    for (long long d = den; d > 1 && nf < 20; d /= 10)
        nf++;
    long long r = num % den;
    for (int i = nf - 1; i >= 0; i--) {
        frac[i] = (char)('0' + r % 10);
        r /= 10;
    }
    frac[nf] = '\0';
    if (nf == 0)
        snprintf(buf, len, "%lld.0", num);
    else
        snprintf(buf, len, "%lld.%s", num / den, frac);
}

static int valid_name(const char *s)
{
    if (!*s)
        return 0;
    for (; *s; s++)
        if (!isalnum((unsigned char)*s) && *s != '_' && *s != '-')
            return 0;
    return 1;
}

/* ---- interpreting sections ---- */

static int section_kind(const char *name, const char *kind, const char **rest)
{
    size_t n = strlen(kind);
    if (strncmp(name, kind, n) == 0 && name[n] == '.') {
        *rest = name + n + 1;
        return 1;
    }
    return 0;
}

/* The first key of a section (for errors about the section as a whole). */
static const spec_kv *first_kv(const spec_section *sec)
{
    return sec->nkv ? &sec->kv[0] : &sec->head;
}

static int load_router(const spec_section *sec, const char *name, spec_router *r)
{
    memset(r, 0, sizeof *r);
    r->sec = sec;
    r->name = name;
    moe_route_opts_default(&r->opts);
    r->type_kv = kv_find(sec, "type");
    const char *tname = r->type_kv ? r->type_kv->value : name;
    r->type = moe_router_find(tname);
    if (!r->type) {
        const spec_kv *kv = r->type_kv ? r->type_kv : first_kv(sec);
        return loc_fail(MOE_EINVAL, kv->file, kv->line, sec->name, "type",
                        "`moesim list routers` shows the routers",
                        r->type_kv ? "unknown router type '%s'"
                                   : "no type given and '%s' is not a router type", tname);
    }
    for (int i = 0; i < sec->nkv; i++) {
        const spec_kv *kv = &sec->kv[i];
        if (strcmp(kv->key, "type") == 0)
            continue;
        moe_clear_error();
        int rc = moe_route_opts_set(&r->opts, kv->key, kv->value);
        if (rc)
            return kv_relocate(rc, sec, kv);
        if (!strcmp(kv->key, "k"))
            r->k_kv = kv;
        else if (!strcmp(kv->key, "capacity_factor"))
            r->cf_kv = kv;
        else if (!strcmp(kv->key, "capacity"))
            r->cap_kv = kv;
        else if (!strcmp(kv->key, "dropless"))
            r->dropless_kv = kv;
        else if (!strcmp(kv->key, "num_experts"))
            r->ne_kv = kv;
        else if (!strcmp(kv->key, "hash_table"))
            r->hash_path = kv->value;
    }
    if (r->cf_kv)
        decimal_text(r->opts.cf_num, r->opts.cf_den, r->cf_text, sizeof r->cf_text);
    return MOE_OK;
}

static int load_shape(const spec_section *sec, const char *name, spec_shape *sh)
{
    memset(sh, 0, sizeof *sh);
    sh->sec = sec;
    sh->name = name;
    sh->act = MOE_ACT_GELU_TANH;
    int have_d = 0, have_f = 0, have_E = 0;
    for (int i = 0; i < sec->nkv; i++) {
        const spec_kv *kv = &sec->kv[i];
        long v;
        int rc = MOE_OK;
        if (!strcmp(kv->key, "d")) {
            rc = parse_int(sec, kv, kv->value, 1, 1L << 16, &v);
            sh->d = (int)v;
            have_d = 1;
        } else if (!strcmp(kv->key, "f")) {
            rc = parse_int(sec, kv, kv->value, 1, 1L << 18, &v);
            sh->f = (int)v;
            have_f = 1;
        } else if (!strcmp(kv->key, "E")) {
            rc = parse_int(sec, kv, kv->value, 1, 1L << 16, &v);
            sh->E = (int)v;
            sh->E_kv = kv;
            have_E = 1;
        } else if (!strcmp(kv->key, "k")) {
            rc = parse_int(sec, kv, kv->value, 1, 1L << 16, &v);
            sh->k = (int)v;
            sh->k_kv = kv;
        } else if (!strcmp(kv->key, "activation")) {
            moe_clear_error();
            rc = moe_act_parse(kv->value, &sh->act);
            if (rc)
                rc = kv_relocate(rc, sec, kv);
        } else {
            rc = KV_FAIL(MOE_EINVAL, sec, kv, "shape keys are d, f, E, k, activation",
                         "unknown key");
        }
        if (rc)
            return rc;
    }
    const spec_kv *kv0 = first_kv(sec);
    if (!have_d || !have_f || !have_E)
        return loc_fail(MOE_EINVAL, kv0->file, kv0->line, sec->name,
                        !have_d ? "d" : !have_f ? "f" : "E", "a shape needs d, f and E",
                        "missing key");
    if (sh->k > sh->E)
        return KV_FAIL(MOE_EINVAL, sec, sh->k_kv, "k must be between 1 and E",
                       "k = %d exceeds E = %d", sh->k, sh->E);
    return MOE_OK;
}

static int kv_cmp(const void *a, const void *b)
{
    const moe_kv *x = a, *y = b;
    return strcmp(x->key, y->key);
}

static int load_dist(const spec_section *sec, const char *name, spec_dist *di)
{
    memset(di, 0, sizeof *di);
    di->sec = sec;
    di->name = name;
    di->source_kv = kv_find(sec, "source");
    di->shapes_kv = kv_find(sec, "shapes");
    if (!di->source_kv) {
        const spec_kv *kv0 = first_kv(sec);
        return loc_fail(MOE_EINVAL, kv0->file, kv0->line, sec->name, "source",
                        "`moesim list sources` shows the sources", "missing key");
    }
    di->source = di->source_kv->value;
    if (!valid_name(di->source))
        return KV_FAIL(MOE_EINVAL, sec, di->source_kv, "`moesim list sources` shows the sources",
                       "bad source name '%s'", di->source);
    di->params = calloc((size_t)sec->nkv + 1, sizeof *di->params);
    if (!di->params)
        return moe_fail(MOE_ENOMEM, NULL, "out of memory");
    for (int i = 0; i < sec->nkv; i++) {
        const spec_kv *kv = &sec->kv[i];
        if (kv == di->source_kv || kv == di->shapes_kv)
            continue;
        di->params[di->nparams++] =
            (moe_kv){.key = kv->key, .value = kv->value, .file = kv->file, .line = kv->line,
                     .section = sec->name};
    }
    /* canonical parameter text, sorted by key */
    moe_kv *sorted = malloc(((size_t)di->nparams + 1) * sizeof *sorted);
    if (!sorted)
        return moe_fail(MOE_ENOMEM, NULL, "out of memory");
    memcpy(sorted, di->params, (size_t)di->nparams * sizeof *sorted);
    qsort(sorted, (size_t)di->nparams, sizeof *sorted, kv_cmp);
    char *buf = NULL;
    size_t len = 0;
    FILE *m = open_memstream(&buf, &len);
    if (!m) {
        free(sorted);
        return moe_fail(MOE_ENOMEM, NULL, "out of memory");
    }
    for (int i = 0; i < di->nparams; i++)
        fprintf(m, "%s%s=%s", i ? " " : "", sorted[i].key, sorted[i].value);
    fclose(m);
    free(sorted);
    if (!buf)
        return moe_fail(MOE_ENOMEM, NULL, "out of memory");
    di->params_text = buf;
    return MOE_OK;
}

/* Resolve a list of section names (or all sections of the kind, in file order). */
static int pick(moe_spec *s, const spec_section *exp, const char *listkey, const char *kind,
                const spec_section ***out, const char ***names, int *n)
{
    *out = NULL;
    *names = NULL;
    *n = 0;
    const spec_kv *kv = kv_find(exp, listkey);
    const spec_section **v = NULL;
    const char **nm = NULL;
    int nv = 0;
    if (kv) {
        char **w;
        int nw;
        int rc = split_list(exp, kv, &w, &nw);
        if (rc)
            return rc;
        v = calloc((size_t)nw, sizeof *v);
        nm = calloc((size_t)nw, sizeof *nm);
        if (!v || !nm) {
            free(v);
            free(nm);
            free_words(w, nw);
            return moe_fail(MOE_ENOMEM, NULL, "out of memory");
        }
        for (int i = 0; i < nw; i++) {
            char full[300];
            snprintf(full, sizeof full, "%s.%s", kind, w[i]);
            const spec_section *sec = section_find(s, full);
            if (!sec) {
                rc = KV_FAIL(MOE_EINVAL, exp, kv, "each listed name needs its own section",
                             "no section [%s] for '%s'", full, w[i]);
                free(v);
                free(nm);
                free_words(w, nw);
                return rc;
            }
            v[nv] = sec;
            section_kind(sec->name, kind, &nm[nv]);
            nv++;
        }
        free_words(w, nw);
    } else {
        v = calloc((size_t)s->nsecs + 1, sizeof *v);
        nm = calloc((size_t)s->nsecs + 1, sizeof *nm);
        if (!v || !nm) {
            free(v);
            free(nm);
            return moe_fail(MOE_ENOMEM, NULL, "out of memory");
        }
        for (int i = 0; i < s->nsecs; i++)
            if (section_kind(s->secs[i].name, kind, &nm[nv]))
                v[nv++] = &s->secs[i];
        if (nv == 0) {
            free(v);
            free(nm);
            return loc_fail(MOE_EINVAL, s->path, 0, "experiment", listkey,
                            "add a section such as [router.topk] or [shape.small]",
                            "no [%s.NAME] sections", kind);
        }
    }
    *out = v;
    *names = nm;
    *n = nv;
    return MOE_OK;
}

static int load_experiment(moe_spec *s)
{
    spec_section *exp = section_get(s, "experiment");
    if (!exp)
        return moe_fail(MOE_ENOMEM, NULL, "out of memory");
    static const char *const keys[] = {"name",    "description", "routers", "capacity_factors",
                                       "distributions", "shapes", "tokens", "batches", "seeds",
                                       "error_tokens", NULL};
    for (int i = 0; i < exp->nkv; i++) {
        int ok = 0;
        for (int j = 0; keys[j]; j++)
            ok |= strcmp(exp->kv[i].key, keys[j]) == 0;
        if (!ok)
            return KV_FAIL(MOE_EINVAL, exp, &exp->kv[i],
                           "experiment keys: name description routers capacity_factors "
                           "distributions shapes tokens batches seeds error_tokens",
                           "unknown key");
    }
    for (int i = 0; i < s->nsecs; i++) {
        const char *rest;
        const spec_section *sec = &s->secs[i];
        if (strcmp(sec->name, "experiment") == 0)
            continue;
        if (!section_kind(sec->name, "router", &rest) &&
            !section_kind(sec->name, "distribution", &rest) &&
            !section_kind(sec->name, "shape", &rest))
            return KV_FAIL(MOE_EINVAL, sec, first_kv(sec),
                           "sections are [experiment], [router.NAME], [distribution.NAME], "
                           "[shape.NAME]",
                           "unknown section [%s]", sec->name);
        if (!valid_name(rest))
            return KV_FAIL(MOE_EINVAL, sec, first_kv(sec),
                           "names use letters, digits, _ and -", "bad section name [%s]",
                           sec->name);
    }
    const spec_kv *kv;
    int rc;
    /* name */
    kv = kv_find(exp, "name");
    if (kv) {
        if (!valid_name(kv->value))
            return KV_FAIL(MOE_EINVAL, exp, kv, "names use letters, digits, _ and -",
                           "bad name '%s'", kv->value);
        s->name = xstrdup(kv->value);
    } else {
        const char *b = strrchr(s->path, '/');
        b = b ? b + 1 : s->path;
        s->name = xstrdup(b);
        if (s->name) {
            char *dot = strrchr(s->name, '.');
            if (dot && dot != s->name)
                *dot = '\0';
            if (!strcmp(s->name, ".") || !strcmp(s->name, "..")) /* results/...db, plots/out/.. */
                return moe_fail(MOE_EINVAL, "add name = NAME to [experiment]",
                                "no experiment name: the file name gives '%s' (%s)", s->name,
                                s->path);
        }
    }
    if (!s->name)
        return moe_fail(MOE_ENOMEM, NULL, "out of memory");
    /* numeric axes */
    static const spec_kv dflt_tokens = {"tokens", "1024", NULL, 0},
                         dflt_batches = {"batches", "1", NULL, 0},
                         dflt_seeds = {"seeds", "1", NULL, 0};
    spec_kv tmp;
    kv = kv_find(exp, "tokens");
    if (!kv) {
        tmp = dflt_tokens;
        tmp.file = s->path;
        kv = &tmp;
    }
    if ((rc = int_list(exp, kv, 1, 1L << 22, &s->tokens, &s->ntokens)))
        return rc;
    kv = kv_find(exp, "batches");
    if (!kv) {
        tmp = dflt_batches;
        tmp.file = s->path;
        kv = &tmp;
    }
    if ((rc = int_list(exp, kv, 1, 100000, &s->batches, &s->nbatches)))
        return rc;
    kv = kv_find(exp, "seeds");
    if (!kv) {
        tmp = dflt_seeds;
        tmp.file = s->path;
        kv = &tmp;
    }
    {
        char **w;
        int nw;
        if ((rc = split_list(exp, kv, &w, &nw)))
            return rc;
        s->seeds = malloc((size_t)nw * sizeof *s->seeds);
        if (!s->seeds) {
            free_words(w, nw);
            return moe_fail(MOE_ENOMEM, NULL, "out of memory");
        }
        for (int i = 0; i < nw && !rc; i++) {
            char *end;
            errno = 0;
            unsigned long long x = strtoull(w[i], &end, 10);
            if (errno || end == w[i] || *end || !isdigit((unsigned char)w[i][0]) ||
                x > (unsigned long long)INT64_MAX)
                rc = KV_FAIL(MOE_EINVAL, exp, kv, NULL,
                             "bad number '%s': want a seed in 0..2^63-1", w[i]);
            s->seeds[i] = (uint64_t)x;
            for (int j = 0; j < i && !rc; j++)
                if (s->seeds[j] == s->seeds[i])
                    rc = KV_FAIL(MOE_EINVAL, exp, kv, "give each value once",
                                 "seed %llu is listed twice ('%s' and '%s')", x, w[j], w[i]);
        }
        s->nseeds = nw;
        free_words(w, nw);
        if (rc)
            return rc;
    }
    s->error_tokens = 512;
    kv = kv_find(exp, "error_tokens");
    if (kv) {
        long v;
        if ((rc = parse_int(exp, kv, kv->value, 0, 1L << 22, &v)))
            return rc;
        s->error_tokens = (int)v;
    }
    /* capacity factors */
    kv = kv_find(exp, "capacity_factors");
    if (kv) {
        char **w;
        int nw;
        if ((rc = split_list(exp, kv, &w, &nw)))
            return rc;
        s->cfs = calloc((size_t)nw, sizeof *s->cfs);
        if (!s->cfs) {
            free_words(w, nw);
            return moe_fail(MOE_ENOMEM, NULL, "out of memory");
        }
        for (int i = 0; i < nw && !rc; i++) {
            moe_clear_error();
            rc = moe_decimal_parse(w[i], &s->cfs[i].num, &s->cfs[i].den);
            if (rc) {
                rc = kv_relocate(rc, exp, kv);
                break;
            }
            decimal_text(s->cfs[i].num, s->cfs[i].den, s->cfs[i].text, sizeof s->cfs[i].text);
            for (int j = 0; j < i; j++)
                if (s->cfs[j].num == s->cfs[i].num && s->cfs[j].den == s->cfs[i].den)
                    rc = KV_FAIL(MOE_EINVAL, exp, kv, "give each value once",
                                 "capacity factor %s is listed twice", s->cfs[i].text);
        }
        s->ncfs = nw;
        free_words(w, nw);
        if (rc)
            return rc;
    } else {
        s->cfs = calloc(1, sizeof *s->cfs);
        if (!s->cfs)
            return moe_fail(MOE_ENOMEM, NULL, "out of memory");
        s->cfs[0].num = s->cfs[0].den = 1;
        decimal_text(1, 1, s->cfs[0].text, sizeof s->cfs[0].text);
        s->ncfs = 1;
    }
    /* sections */
    const spec_section **secs;
    const char **names;
    int n;
    if ((rc = pick(s, exp, "shapes", "shape", &secs, &names, &n)))
        return rc;
    s->shapes = calloc((size_t)n, sizeof *s->shapes);
    if (!s->shapes) {
        rc = moe_fail(MOE_ENOMEM, NULL, "out of memory");
    }
    for (int i = 0; i < n && !rc; i++) {
        rc = load_shape(secs[i], names[i], &s->shapes[i]);
        s->nshapes = i + 1;
    }
    free(secs);
    free(names);
    if (rc)
        return rc;

    if ((rc = pick(s, exp, "routers", "router", &secs, &names, &n)))
        return rc;
    s->routers = calloc((size_t)n, sizeof *s->routers);
    if (!s->routers)
        rc = moe_fail(MOE_ENOMEM, NULL, "out of memory");
    for (int i = 0; i < n && !rc; i++) {
        rc = load_router(secs[i], names[i], &s->routers[i]);
        s->nrouters = i + 1;
    }
    free(secs);
    free(names);
    if (rc)
        return rc;

    if ((rc = pick(s, exp, "distributions", "distribution", &secs, &names, &n)))
        return rc;
    s->dists = calloc((size_t)n, sizeof *s->dists);
    if (!s->dists)
        rc = moe_fail(MOE_ENOMEM, NULL, "out of memory");
    for (int i = 0; i < n && !rc; i++) {
        rc = load_dist(secs[i], names[i], &s->dists[i]);
        s->ndists = i + 1;
    }
    free(secs);
    free(names);
    if (rc)
        return rc;
    /* distribution -> shape pairing */
    for (int i = 0; i < s->ndists; i++) {
        spec_dist *di = &s->dists[i];
        di->pairs = calloc((size_t)s->nshapes, 1);
        if (!di->pairs)
            return moe_fail(MOE_ENOMEM, NULL, "out of memory");
        if (!di->shapes_kv) {
            memset(di->pairs, 1, (size_t)s->nshapes);
            continue;
        }
        char **w;
        int nw;
        if ((rc = split_list(di->sec, di->shapes_kv, &w, &nw)))
            return rc;
        for (int j = 0; j < nw && !rc; j++) {
            int found = 0;
            for (int q = 0; q < s->nshapes; q++)
                if (strcmp(s->shapes[q].name, w[j]) == 0)
                    di->pairs[q] = 1, found = 1;
            if (!found)
                rc = KV_FAIL(MOE_EINVAL, di->sec, di->shapes_kv,
                             "name shapes of the sweep (experiment.shapes)",
                             "shape '%s' is not in the sweep", w[j]);
        }
        free_words(w, nw);
        if (rc)
            return rc;
    }
    return MOE_OK;
}

/* ---- expansion ---- */

static int push_point(moe_spec *s, const moe_point *p)
{
    if (s->npoints == s->cap_points) {
        size_t cap = s->cap_points ? 2 * s->cap_points : 64;
        moe_point *np = realloc(s->points, cap * sizeof *np);
        if (!np)
            return moe_fail(MOE_ENOMEM, NULL, "out of memory (sweep points)");
        s->points = np;
        s->cap_points = cap;
    }
    s->points[s->npoints++] = *p;
    return MOE_OK;
}

/* Fill the router-dependent part of a point for shape sh; checks k and E with locations. */
static int point_router(const spec_router *r, const spec_shape *sh, moe_point *p)
{
    p->router = r->name;
    p->rtype = r->type;
    p->opts = r->opts;
    const int is_topk = strcmp(r->type->name, "topk") == 0;
    if (!r->k_kv && is_topk && sh->k > 0)
        p->opts.k = sh->k;
    int k = p->opts.k > 0 ? p->opts.k : r->type->default_k;
    if ((r->type->flags & MOE_RF_ALL_EXPERTS) && p->opts.k == 0)
        k = sh->E;
    if (k > sh->E) {
        const spec_kv *kv = r->k_kv ? r->k_kv : (is_topk && sh->k_kv) ? sh->k_kv : sh->E_kv;
        const spec_section *sec = r->k_kv ? r->sec : sh->sec;
        return KV_FAIL(MOE_EINVAL, sec, kv, "k must be between 1 and E",
                       "k = %d exceeds E = %d (router %s, shape %s)", k, sh->E, r->name,
                       sh->name);
    }
    const int dense = (r->type->flags & MOE_RF_DENSE) != 0;
    if (r->ne_kv && p->opts.num_experts != sh->E)
        return KV_FAIL(MOE_EINVAL, r->sec, r->ne_kv, "leave num_experts out: the shape sets E",
                       "num_experts = %d differs from E = %d of shape %s",
                       p->opts.num_experts, sh->E, sh->name);
    /* soft_moe: P slots per expert (unset = 1), M = E*P */
    long P = p->opts.slots_per_expert > 0 ? p->opts.slots_per_expert : 1;
    long m = dense ? (long)sh->E * P : sh->E;
    if (m > 1L << 20)
        return KV_FAIL(MOE_EINVAL, r->sec, kv_find(r->sec, "slots_per_expert"), NULL,
                       "E * slots_per_expert = %ld logit columns is too many", m);
    p->m = (int)m;
    p->k = k;
    p->d = sh->d;
    p->f = sh->f;
    p->E = sh->E;
    p->act = sh->act;
    p->shape = sh->name;
    return MOE_OK;
}

static char *point_key(const moe_point *p)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *m = open_memstream(&buf, &len);
    if (!m)
        return NULL;
    fprintf(m,
            "router=%s type=%s opts={%s} cf=%s distribution=%s source=%s params={%s} "
            "shape=%s d=%d f=%d E=%d k=%d activation=%s tokens=%d batches=%d seed=%llu "
            "error_tokens=%d",
            p->router, p->rtype->name, p->opts_text, p->cf_text, p->distribution, p->source,
            p->params_text, p->shape, p->d, p->f, p->E, p->k, moe_act_name(p->act), p->tokens,
            p->batches, (unsigned long long)p->seed, p->error_tokens);
    if (fclose(m) != 0) {
        free(buf);
        return NULL;
    }
    return buf;
}

static int add_point(moe_spec *s, moe_point *p, const spec_router *r)
{
    char desc[1024];
    moe_clear_error();
    int rc = moe_route_opts_describe(&p->opts, desc, sizeof desc);
    if (rc)
        return kv_relocate(rc, r->sec, r->type_kv ? r->type_kv : first_kv(r->sec));
    char *text = NULL;
    size_t len = 0;
    FILE *m = open_memstream(&text, &len);
    if (!m)
        return moe_fail(MOE_ENOMEM, NULL, "out of memory");
    fprintf(m, "%s", desc);
    if (r->hash_path)
        fprintf(m, "%shash_table=%s", desc[0] ? " " : "", r->hash_path);
    if (fclose(m) != 0) {
        free(text);
        return moe_fail(MOE_ENOMEM, NULL, "out of memory");
    }
    p->opts_text = text;
    char *key = point_key(p);
    if (!key) {
        free(text);
        return moe_fail(MOE_ENOMEM, NULL, "out of memory");
    }
    p->config_key = key;
    rc = push_point(s, p);
    if (rc) {
        free(text);
        free(key);
    }
    return rc;
}

static int expand(moe_spec *s)
{
    for (int si = 0; si < s->nshapes; si++)
        for (int di = 0; di < s->ndists; di++) {
            if (!s->dists[di].pairs[si])
                continue;
            for (int ti = 0; ti < s->ntokens; ti++)
                for (int bi = 0; bi < s->nbatches; bi++)
                    for (int ei = 0; ei < s->nseeds; ei++)
                        for (int ri = 0; ri < s->nrouters; ri++) {
                            const spec_router *r = &s->routers[ri];
                            moe_point p;
                            memset(&p, 0, sizeof p);
                            int rc = point_router(r, &s->shapes[si], &p);
                            if (rc)
                                return rc;
                            p.distribution = s->dists[di].name;
                            p.source = s->dists[di].source;
                            p.params = s->dists[di].params;
                            p.nparams = s->dists[di].nparams;
                            p.params_text = s->dists[di].params_text;
                            p.tokens = (int)s->tokens[ti];
                            p.batches = (int)s->batches[bi];
                            p.seed = s->seeds[ei];
                            p.error_tokens = s->error_tokens;
                            const char *note = NULL;
                            if (r->cf_kv)
                                note = "capacity_factor set by the router section";
                            else if (r->cap_kv)
                                note = "explicit capacity";
                            else if (r->opts.dropless)
                                note = "dropless";
                            else if (r->type->flags & MOE_RF_DENSE)
                                note = "dense plan: no capacity";
                            else if (r->type->flags & MOE_RF_NO_CAPACITY)
                                note = "router has no capacity factor";
                            if (note) {
                                p.cf_note = note;
                                p.cf_text = "none";
                                p.cf = NAN;
                                if (r->cf_kv) {
                                    /* the router's own factor: recorded as that factor */
                                    p.cf = (double)r->opts.cf_num / (double)r->opts.cf_den;
                                    p.cf_text = r->cf_text;
                                }
                                if ((rc = add_point(s, &p, r)))
                                    return rc;
                                continue;
                            }
                            for (int ci = 0; ci < s->ncfs; ci++) {
                                moe_point q = p;
                                q.opts.cf_set = 1;
                                q.opts.cf_num = s->cfs[ci].num;
                                q.opts.cf_den = s->cfs[ci].den;
                                q.cf_text = s->cfs[ci].text;
                                q.cf = (double)s->cfs[ci].num / (double)s->cfs[ci].den;
                                if ((rc = add_point(s, &q, r)))
                                    return rc;
                            }
                        }
        }
    if (s->npoints == 0)
        return moe_fail(MOE_EINVAL, "check the shapes keys of the distributions",
                        "the sweep has no points (%s)", s->path);
    return MOE_OK;
}

/* ---- public ---- */

int moe_spec_load(const char *path, const char *const *sets, int nsets, moe_spec **out)
{
    *out = NULL;
    moe_clear_error();
    moe_spec *s = calloc(1, sizeof *s);
    if (!s)
        return moe_fail(MOE_ENOMEM, NULL, "out of memory (%s)", path);
    s->path = xstrdup(path);
    if (!s->path) {
        free(s);
        return moe_fail(MOE_ENOMEM, NULL, "out of memory (%s)", path);
    }
    int rc = parse_file(s);
    for (int i = 0; i < nsets && !rc; i++)
        rc = apply_set(s, sets[i], i + 1);
    if (!rc)
        rc = load_experiment(s);
    if (!rc)
        rc = expand(s);
    if (rc) {
        moe_spec_free(s);
        return rc;
    }
    *out = s;
    return MOE_OK;
}

void moe_spec_free(moe_spec *s)
{
    if (!s)
        return;
    for (size_t i = 0; i < s->npoints; i++) {
        free((char *)s->points[i].opts_text);
        free((char *)s->points[i].config_key);
    }
    free(s->points);
    for (int i = 0; i < s->nrouters; i++)
        moe_route_opts_release(&s->routers[i].opts);
    free(s->routers);
    for (int i = 0; i < s->ndists; i++) {
        free(s->dists[i].params);
        free(s->dists[i].params_text);
        free(s->dists[i].pairs);
    }
    free(s->dists);
    free(s->shapes);
    free(s->cfs);
    free(s->tokens);
    free(s->batches);
    free(s->seeds);
    for (int i = 0; i < s->nsecs; i++) {
        for (int j = 0; j < s->secs[i].nkv; j++) {
            free(s->secs[i].kv[j].key);
            free(s->secs[i].kv[j].value);
        }
        free(s->secs[i].kv);
        free(s->secs[i].name);
    }
    free(s->secs);
    for (int i = 0; i < s->nlabels; i++)
        free(s->labels[i]);
    free(s->labels);
    free(s->name);
    free(s->path);
    free(s);
}

const char *moe_spec_name(const moe_spec *s) { return s->name; }
size_t moe_spec_npoints(const moe_spec *s) { return s->npoints; }
const moe_point *moe_spec_point(const moe_spec *s, size_t i)
{
    return i < s->npoints ? &s->points[i] : NULL;
}

/* ---- checking every point before the run ---- */

static const spec_router *router_of(const moe_spec *s, const moe_point *p)
{
    for (int i = 0; i < s->nrouters; i++)
        if (strcmp(s->routers[i].name, p->router) == 0)
            return &s->routers[i];
    return NULL;
}

static const spec_dist *dist_of(const moe_spec *s, const moe_point *p)
{
    for (int i = 0; i < s->ndists; i++)
        if (strcmp(s->dists[i].name, p->distribution) == 0)
            return &s->dists[i];
    return NULL;
}

static int check_router(const spec_router *r, const moe_point *p, int dropless)
{
    moe_route_opts o = p->opts;
    if (dropless)
        o.dropless = 1;
    moe_router *inst = NULL;
    moe_clear_error();
    int rc = moe_router_alloc(p->rtype, &o, p->tokens, p->m, &inst);
    moe_router_free(inst);
    if (rc)
        return kv_relocate(rc, r->sec, r->type_kv ? r->type_kv : first_kv(r->sec));
    return MOE_OK;
}

/* The parameter of di whose value (3 characters or more, the longest) msg quotes, or the
 * `source` key. */
static const spec_kv *quoted_kv(const spec_dist *di, const char *msg)
{
    const spec_kv *best = di->source_kv;
    size_t best_len = 0;
    for (int i = 0; i < di->sec->nkv; i++) {
        const spec_kv *kv = &di->sec->kv[i];
        size_t len = strlen(kv->value);
        if (kv != di->source_kv && len >= 3 && len > best_len && strstr(msg, kv->value)) {
            best = kv;
            best_len = len;
        }
    }
    return best;
}

int moe_spec_check(const moe_spec *s)
{
    typedef struct {
        const spec_dist *di;
        int tokens, d, m;
        uint64_t seed;
        int has_choices; /* batch 0 records expert choices */
    } seen_t;
    seen_t *seen = calloc(s->npoints + 1, sizeof *seen);
    size_t nseen = 0;
    if (!seen)
        return moe_fail(MOE_ENOMEM, NULL, "out of memory");
    int rc = MOE_OK;
    for (size_t i = 0; i < s->npoints && !rc; i++) {
        const moe_point *p = &s->points[i];
        const spec_router *r = router_of(s, p);
        const spec_dist *di = dist_of(s, p);
        rc = check_router(r, p, 0);
        if (!rc && (p->rtype->flags & MOE_RF_HAS_DROPLESS) && !p->opts.dropless)
            rc = check_router(r, p, 1);
        if (rc)
            break;
        seen_t *sn = NULL;
        for (size_t j = 0; j < nseen && !sn; j++)
            if (seen[j].di == di && seen[j].tokens == p->tokens && seen[j].d == p->d &&
                seen[j].m == p->m && seen[j].seed == p->seed)
                sn = &seen[j];
        if (!sn) {
            sn = &seen[nseen++];
            *sn = (seen_t){di, p->tokens, p->d, p->m, p->seed, 0};
            moe_source *src = NULL;
            moe_clear_error();
            rc = moe_source_open(p->source, p->params, p->nparams, p->tokens, p->d, p->m,
                                 p->seed, &src);
            if (rc) {
                /* sources name the key and line of a bad parameter themselves; otherwise the
                 * parameter whose value the message quotes (a missing file), else `source` */
                if (!strstr(moe_errmsg(), s->path) && !strstr(moe_errmsg(), "--set:"))
                    rc = kv_relocate(rc, di->sec, quoted_kv(di, moe_errmsg()));
                break;
            }
            int rm = moe_source_required_m(src);
            moe_batch b0;
            if (rm && rm != p->m) {
                rc = KV_FAIL(MOE_EINVAL, di->sec, di->source_kv,
                             "pair the source with a matching shape (shapes = ... in its "
                             "section)",
                             "source %s records %d experts, but router %s on shape %s needs %d "
                             "logit columns",
                             p->source, rm, p->router, p->shape, p->m);
            } else {
                moe_clear_error();
                rc = moe_source_batch(src, 0, &b0);
                if (rc)
                    rc = kv_relocate(rc, di->sec, di->source_kv);
                else
                    sn->has_choices = b0.choices != NULL && b0.k_rec > 0;
            }
            moe_source_close(src);
            if (rc)
                break;
        }
        if ((p->rtype->flags & MOE_RF_NEEDS_CHOICES) && !sn->has_choices)
            rc = KV_FAIL(MOE_EINVAL, di->sec, di->source_kv,
                         "replay a recorded trace source (trace_deepseek, trace_mixtral, ...)",
                         "router %s (%s) needs recorded expert choices; source %s has none",
                         p->router, p->rtype->name, p->source);
    }
    free(seen);
    return rc;
}
