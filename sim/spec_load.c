/* spec_load.c: interpreting the raw sections of a spec (spec_internal.h): the [experiment]
 * keys and sweep axes, [shape.NAME], [router.NAME] (routing options through the option table,
 * sim/options.c) and [distribution.NAME] sections, and which sections the sweep uses. */
#include "cluster_spec.h"
#include "spec_internal.h"
#include "presets.h"

#include "dupfind.h"
#include "layer.h"
#include "models.h"
#include "options.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
    size_t dj, di;
    int dup = moe_dup_find(w, (size_t)nw, sizeof *w, moe_dup_cmp_str, NULL, &dj, &di);
    if (dup) {
        int rc = dup < 0 ? MOE_ENOMEM : KV_FAIL(MOE_EINVAL, sec, kv, "give each value once",
                                                 "'%s' is listed twice", w[di]);
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

int moe_spec_split_list(const spec_section *sec, const spec_kv *kv, char ***out, int *n)
{
    return split_list(sec, kv, out, n);
}

void moe_spec_free_words(char **w, int n) { free_words(w, n); }

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
    for (int i = 0; i < nw && !rc; i++)
        rc = parse_int(sec, kv, w[i], lo, hi, &v[i]);
    size_t dj, di;
    int dup = rc ? 0 : moe_dup_find(v, (size_t)nw, sizeof *v, moe_dup_cmp_long, NULL, &dj, &di);
    if (dup) /* "8" and "08" are one value: one point */
        rc = dup < 0 ? MOE_ENOMEM : KV_FAIL(MOE_EINVAL, sec, kv, "give each value once",
                                             "%ld is listed twice ('%s' and '%s')", v[di], w[dj],
                                             w[di]);
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
const spec_kv *moe_spec_first_kv(const spec_section *sec)
{
    return sec->nkv ? &sec->kv[0] : &sec->head;
}

static int load_router(const spec_section *sec, const char *name, spec_router *r)
{
    memset(r, 0, sizeof *r);
    r->sec = sec;
    r->name = name;
    moe_route_opts_default(&r->opts);
    r->type_kv = moe_spec_kv_find(sec, "type");
    char base[256]; /* a variant "topk[k=1]" without type: the type of its base name */
    snprintf(base, sizeof base, "%.*s", (int)strcspn(name, "["), name);
    const char *tname = r->type_kv ? r->type_kv->value : base;
    const spec_kv *pkv = moe_spec_kv_find(sec, "preset"); /* presets.c: type and options */
    const moe_preset *preset = NULL;
    if (pkv) {
        int rc = moe_preset_lookup(pkv->value, &preset);
        if (!rc && r->type_kv && strcmp(r->type_kv->value, preset->router))
            rc = moe_fail(MOE_EINVAL, "leave out type, or give the options without a preset",
                          "type %s conflicts with preset %s (router %s)", r->type_kv->value,
                          preset->name, preset->router);
        if (rc)
            return moe_spec_relocate(rc, sec, pkv);
        tname = preset->router;
        r->preset = preset->name;
    }
    r->type = moe_router_find(tname);
    if (!r->type) {
        const spec_kv *kv = r->type_kv ? r->type_kv : moe_spec_first_kv(sec);
        return moe_spec_fail_at(MOE_EINVAL, kv->file, kv->line, sec->name, "type",
                        "`moesim list routers` shows the routers",
                        r->type_kv ? "unknown router type '%s'"
                                   : "no type given and '%s' is not a router type", tname);
    }
    if (preset) { /* the preset's options first; the section's keys override them */
        moe_clear_error();
        int rc = moe_preset_apply(preset, &r->opts, NULL, NULL);
        if (rc)
            return moe_spec_relocate(rc, sec, pkv);
    }
    for (int i = 0; i < sec->nkv; i++) {
        const spec_kv *kv = &sec->kv[i];
        if (strcmp(kv->key, "type") == 0 || strcmp(kv->key, "preset") == 0)
            continue;
        moe_clear_error();
        int rc = moe_route_opts_set(&r->opts, kv->key, kv->value);
        if (!rc)
            rc = moe_route_option_check(kv->key, r->type->name);
        if (rc)
            return moe_spec_relocate(rc, sec, kv);
    }
    /* the keys the expansion locates errors at or reads as given */
    r->k_kv = moe_spec_kv_find(sec, "k");
    r->cf_kv = moe_spec_kv_find(sec, "capacity_factor");
    r->cap_kv = moe_spec_kv_find(sec, "capacity");
    r->ne_kv = moe_spec_kv_find(sec, "num_experts");
    const spec_kv *table = moe_spec_kv_find(sec, "hash_table");
    r->hash_path = table ? table->value : NULL;
    if (r->cf_kv || (preset && r->opts.cf_set)) /* the section's or the preset's own */
        decimal_text(r->opts.cf_num, r->opts.cf_den, r->cf_text, sizeof r->cf_text);
    return MOE_OK;
}

/* `model = NAME` and `scale = 1/N` of a shape section: the preset's values (widths divided by
 * N), which the section's other keys then override. *have gets d, f, E as given. */
static int load_shape_model(const spec_section *sec, spec_shape *sh, int *have)
{
    const spec_kv *mkv = moe_spec_kv_find(sec, "model"), *skv = moe_spec_kv_find(sec, "scale");
    int den = 1, rc;
    if (skv && !mkv)
        return KV_FAIL(MOE_EINVAL, sec, skv, "scale shrinks a preset: add model = NAME",
                       "scale without model");
    if (skv) {
        moe_clear_error();
        if ((rc = moe_scale_parse(skv->value, &den)))
            return moe_spec_relocate(rc, sec, skv);
    }
    if (!mkv)
        return MOE_OK;
    const moe_model *m;
    moe_clear_error();
    if ((rc = moe_model_lookup(mkv->value, &m)))
        return moe_spec_relocate(rc, sec, mkv);
    sh->model = m;
    sh->E = m->E;
    sh->k = m->k;
    sh->d = moe_scale_width(m->d, den);
    sh->f = moe_scale_width(m->f, den);
    sh->S = m->S;
    sh->fs = m->S ? moe_scale_width(m->fs, den) : 0;
    sh->shared_gate = m->shared_gate;
    sh->act = m->act;
    have[0] = have[1] = have[2] = 1;
    return MOE_OK;
}

/* The shared-expert keys of a shape: 1 when kv is one of them (parsed into sh), else 0. */
static int load_shape_shared(const spec_section *sec, const spec_kv *kv, spec_shape *sh, int *rc)
{
    long v;
    if (!strcmp(kv->key, "shared_experts")) {
        *rc = parse_int(sec, kv, kv->value, 0, 1L << 10, &v);
        sh->S = (int)v;
    } else if (!strcmp(kv->key, "shared_f")) {
        *rc = parse_int(sec, kv, kv->value, 1, 1L << 18, &v);
        sh->fs = (int)v;
    } else if (!strcmp(kv->key, "shared_gate")) {
        moe_clear_error();
        *rc = moe_shared_gate_parse(kv->value, &sh->shared_gate);
        if (*rc)
            *rc = moe_spec_relocate(*rc, sec, kv);
    } else {
        return !strcmp(kv->key, "model") || !strcmp(kv->key, "scale"); /* load_shape_model */
    }
    return 1;
}

static int load_shape(const spec_section *sec, const char *name, spec_shape *sh)
{
    memset(sh, 0, sizeof *sh);
    sh->sec = sec;
    sh->name = name;
    sh->act = MOE_ACT_GELU_TANH;
    int have[3] = {0, 0, 0}; /* d, f, E */
    int rc = load_shape_model(sec, sh, have);
    if (rc)
        return rc;
    for (int i = 0; i < sec->nkv; i++) {
        const spec_kv *kv = &sec->kv[i];
        long v;
        if (load_shape_shared(sec, kv, sh, &rc)) {
            ;
        } else if (!strcmp(kv->key, "d")) {
            rc = parse_int(sec, kv, kv->value, 1, 1L << 16, &v);
            sh->d = (int)v;
            have[0] = 1;
        } else if (!strcmp(kv->key, "f")) { /* 0: routing only, no experts (point.c) */
            rc = parse_int(sec, kv, kv->value, 0, 1L << 18, &v);
            sh->f = (int)v;
            have[1] = 1;
        } else if (!strcmp(kv->key, "E")) {
            rc = parse_int(sec, kv, kv->value, 1, 1L << 16, &v);
            sh->E = (int)v;
            sh->E_kv = kv;
            have[2] = 1;
        } else if (!strcmp(kv->key, "k")) {
            rc = parse_int(sec, kv, kv->value, 1, 1L << 16, &v);
            sh->k = (int)v;
            sh->k_kv = kv;
        } else if (!strcmp(kv->key, "activation")) {
            moe_clear_error();
            rc = moe_act_parse(kv->value, &sh->act);
            if (rc)
                rc = moe_spec_relocate(rc, sec, kv);
        } else {
            rc = KV_FAIL(MOE_EINVAL, sec, kv, "shape keys are model, scale, d, f, E, k, "
                         "activation, shared_experts, shared_f, shared_gate", "unknown key");
        }
        if (rc)
            return rc;
    }
    const spec_kv *kv0 = moe_spec_first_kv(sec);
    if (!have[0] || !have[1] || !have[2])
        return moe_spec_fail_at(MOE_EINVAL, kv0->file, kv0->line, sec->name,
                        !have[0] ? "d" : !have[1] ? "f" : "E",
                        "a shape needs d, f and E (or model = NAME)", "missing key");
    if (sh->k > sh->E)
        return KV_FAIL(MOE_EINVAL, sec, moe_spec_blame(sh->k_kv, sh->E_kv),
                       "k must be between 1 and E",
                       "k = %d exceeds E = %d", sh->k, sh->E);
    if (sh->S > 0 && sh->fs < 1)
        return KV_FAIL(MOE_EINVAL, sec, moe_spec_kv_find(sec, "shared_experts"),
                       "give the shared experts' width: shared_f = N",
                       "shared_experts = %d without shared_f", sh->S);
    if (sh->S == 0)
        sh->fs = 0, sh->shared_gate = MOE_SHARED_GATE_NONE;
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
    di->source_kv = moe_spec_kv_find(sec, "source");
    di->shapes_kv = moe_spec_kv_find(sec, "shapes");
    if (!di->source_kv) {
        const spec_kv *kv0 = moe_spec_first_kv(sec);
        return moe_spec_fail_at(MOE_EINVAL, kv0->file, kv0->line, sec->name, "source",
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

/* Append sec to the picked sections, or its variants when its keys hold lists; returns the new
 * count. */
static int add_picked(const moe_spec *s, const spec_section *sec, const char *kind,
                      const spec_section **v, const char **nm, int nv)
{
    if (!sec->expanded) {
        section_kind(sec->name, kind, &nm[nv]);
        v[nv++] = sec;
        return nv;
    }
    const int self = (int)(sec - s->secs) + 1;
    for (int i = 0; i < s->nsecs; i++)
        if (s->secs[i].variant_of == self) {
            section_kind(s->secs[i].name, kind, &nm[nv]);
            v[nv++] = &s->secs[i];
        }
    return nv;
}

/* Resolve a list of section names (or all sections of the kind, in file order); a section
 * whose keys hold lists stands for its variants (spec_axes.c). */
static int pick(moe_spec *s, const spec_section *exp, const char *listkey, const char *kind,
                const spec_section ***out, const char ***names, int *n)
{
    *out = NULL;
    *names = NULL;
    *n = 0;
    const spec_kv *kv = moe_spec_kv_find(exp, listkey);
    const spec_section **v = NULL;
    const char **nm = NULL;
    int nv = 0;
    if (kv) {
        char **w;
        int nw;
        int rc = split_list(exp, kv, &w, &nw);
        if (rc)
            return rc;
        v = calloc((size_t)s->nsecs + 1, sizeof *v); /* variants: at most all sections */
        nm = calloc((size_t)s->nsecs + 1, sizeof *nm);
        if (!v || !nm) {
            free(v);
            free(nm);
            free_words(w, nw);
            return moe_fail(MOE_ENOMEM, NULL, "out of memory");
        }
        for (int i = 0; i < nw; i++) {
            char full[300];
            snprintf(full, sizeof full, "%s.%s", kind, w[i]);
            const spec_section *sec = moe_spec_section_find(s, full);
            if (!sec) {
                rc = KV_FAIL(MOE_EINVAL, exp, kv, "each listed name needs its own section",
                             "no section [%s] for '%s'", full, w[i]);
                free(v);
                free(nm);
                free_words(w, nw);
                return rc;
            }
            nv = add_picked(s, sec, kind, v, nm, nv);
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
            if (!s->secs[i].variant_of && section_kind(s->secs[i].name, kind, &nm[nv]))
                nv = add_picked(s, &s->secs[i], kind, v, nm, nv);
        if (nv == 0) {
            free(v);
            free(nm);
            return moe_spec_fail_at(MOE_EINVAL, s->path, 0, "experiment", listkey,
                            "add a section such as [router.topk] or [shape.small]",
                            "no [%s.NAME] sections", kind);
        }
    }
    *out = v;
    *names = nm;
    *n = nv;
    return MOE_OK;
}

/* Every [experiment] key is known; every other section is [router|distribution|shape.NAME]. */
static int check_names(const moe_spec *s, const spec_section *exp)
{
    static const char *const keys[] = {"name",    "description", "routers", "capacity_factors",
                                       "distributions", "shapes", "tokens", "batches", "seeds",
                                       "error_tokens", "preset", NULL};
    for (int i = 0; i < exp->nkv; i++) {
        int ok = 0;
        for (int j = 0; keys[j]; j++)
            ok |= strcmp(exp->kv[i].key, keys[j]) == 0;
        if (!ok && !moe_cluster_spec_key(exp->kv[i].key))
            return KV_FAIL(MOE_EINVAL, exp, &exp->kv[i],
                           "experiment keys: name description routers preset capacity_factors "
                           "distributions shapes tokens batches seeds error_tokens clusters "
                           "placement redundant_experts warmup_batches expert_groups",
                           "unknown key");
    }
    for (int i = 0; i < s->nsecs; i++) {
        const char *rest;
        const spec_section *sec = &s->secs[i];
        if (strcmp(sec->name, "experiment") == 0 || strcmp(sec->name, "train") == 0)
            continue;
        if (!section_kind(sec->name, "router", &rest) &&
            !section_kind(sec->name, "cluster", &rest) &&
            !section_kind(sec->name, "distribution", &rest) &&
            !section_kind(sec->name, "shape", &rest))
            return KV_FAIL(MOE_EINVAL, sec, moe_spec_first_kv(sec),
                           "sections are [experiment], [router.NAME], [distribution.NAME], "
                           "[shape.NAME], [train], [cluster.NAME]",
                           "unknown section [%s]", sec->name);
        if (!valid_name(rest))
            return KV_FAIL(MOE_EINVAL, sec, moe_spec_first_kv(sec),
                           "names use letters, digits, _ and -", "bad section name [%s]",
                           sec->name);
    }
    return MOE_OK;
}

/* experiment.name, or the file's stem. */
static int load_name(moe_spec *s, const spec_section *exp)
{
    const spec_kv *kv = moe_spec_kv_find(exp, "name");
    if (kv) {
        if (!valid_name(kv->value))
            return KV_FAIL(MOE_EINVAL, exp, kv, "names use letters, digits, _ and -",
                           "bad name '%s'", kv->value);
        s->name = moe_spec_strdup(kv->value);
    } else {
        const char *b = strrchr(s->path, '/');
        b = b ? b + 1 : s->path;
        s->name = moe_spec_strdup(b);
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
    return MOE_OK;
}

/* The key of exp, or the default value dflt located at the spec file (in *tmp). */
static const spec_kv *key_or_default(const moe_spec *s, const spec_section *exp,
                                     const char *key, const char *dflt, spec_kv *tmp)
{
    const spec_kv *kv = moe_spec_kv_find(exp, key);
    if (kv)
        return kv;
    *tmp = (spec_kv){(char *)key, (char *)dflt, s->path, 0};
    return tmp;
}

/* experiment.seeds: integers in 0..2^63-1, each once. */
static int load_seeds(moe_spec *s, const spec_section *exp)
{
    spec_kv tmp;
    const spec_kv *kv = key_or_default(s, exp, "seeds", "1", &tmp);
    char **w;
    int nw, rc;
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
    }
    size_t dj, di;
    int dup = rc ? 0 : moe_dup_find(s->seeds, (size_t)nw, sizeof *s->seeds, moe_dup_cmp_u64,
                                    NULL, &dj, &di);
    if (dup)
        rc = dup < 0 ? MOE_ENOMEM : KV_FAIL(MOE_EINVAL, exp, kv, "give each value once",
                                             "seed %llu is listed twice ('%s' and '%s')",
                                             (unsigned long long)s->seeds[di], w[dj], w[di]);
    s->nseeds = nw;
    free_words(w, nw);
    return rc;
}

/* experiment.tokens, batches, seeds and error_tokens. */
static int load_axes(moe_spec *s, const spec_section *exp)
{
    spec_kv tmp;
    int rc;
    if ((rc = int_list(exp, key_or_default(s, exp, "tokens", "1024", &tmp), 1, 1L << 22,
                       &s->tokens, &s->ntokens)))
        return rc;
    if ((rc = int_list(exp, key_or_default(s, exp, "batches", "1", &tmp), 1, 100000,
                       &s->batches, &s->nbatches)))
        return rc;
    if ((rc = load_seeds(s, exp)))
        return rc;
    s->error_tokens = 512;
    const spec_kv *kv = moe_spec_kv_find(exp, "error_tokens");
    if (kv) {
        long v;
        if ((rc = parse_int(exp, kv, kv->value, 0, 1L << 22, &v)))
            return rc;
        s->error_tokens = (int)v;
    }
    return MOE_OK;
}

/* experiment.capacity_factors: exact decimals, each once (default 1.0). */
/* Capacity factors by exact value (num/den as parsed: 1.1 and 1.10 are one value). */
static int cf_cmp(const void *a, const void *b, void *ctx)
{
    (void)ctx;
    const spec_cf *x = a, *y = b;
    if (x->num != y->num)
        return x->num < y->num ? -1 : 1;
    return (x->den > y->den) - (x->den < y->den);
}

static int load_cfs(moe_spec *s, const spec_section *exp)
{
    const spec_kv *kv = moe_spec_kv_find(exp, "capacity_factors");
    if (!kv) {
        s->cfs = calloc(1, sizeof *s->cfs);
        if (!s->cfs)
            return moe_fail(MOE_ENOMEM, NULL, "out of memory");
        s->cfs[0].num = s->cfs[0].den = 1;
        decimal_text(1, 1, s->cfs[0].text, sizeof s->cfs[0].text);
        s->ncfs = 1;
        return MOE_OK;
    }
    char **w;
    int nw, rc;
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
            rc = moe_spec_relocate(rc, exp, kv);
            break;
        }
        decimal_text(s->cfs[i].num, s->cfs[i].den, s->cfs[i].text, sizeof s->cfs[i].text);
    }
    size_t dj, di;
    int dup = rc ? 0 : moe_dup_find(s->cfs, (size_t)nw, sizeof *s->cfs, cf_cmp, NULL, &dj, &di);
    if (dup)
        rc = dup < 0 ? MOE_ENOMEM : KV_FAIL(MOE_EINVAL, exp, kv, "give each value once",
                                             "capacity factor %s is listed twice",
                                             s->cfs[di].text);
    s->ncfs = nw;
    free_words(w, nw);
    return rc;
}

/* The sections of one kind the sweep uses (experiment.<listkey>, or all of them), loaded into
 * the array *items of item_size bytes by load; *count counts the loaded ones (for freeing). */
static int load_kind(moe_spec *s, const spec_section *exp, const char *listkey,
                     const char *kind, void **items, size_t item_size, int *count,
                     int (*load)(const spec_section *, const char *, void *))
{
    const spec_section **secs;
    const char **names;
    int n, rc;
    *items = NULL;
    if ((rc = pick(s, exp, listkey, kind, &secs, &names, &n)))
        return rc;
    *items = calloc((size_t)n, item_size);
    if (!*items)
        rc = moe_fail(MOE_ENOMEM, NULL, "out of memory");
    for (int i = 0; i < n && !rc; i++) {
        rc = load(secs[i], names[i], (char *)*items + (size_t)i * item_size);
        *count = i + 1;
    }
    free(secs);
    free(names);
    return rc;
}

static int load_shape_item(const spec_section *sec, const char *name, void *item)
{
    return load_shape(sec, name, item);
}

static int load_router_item(const spec_section *sec, const char *name, void *item)
{
    return load_router(sec, name, item);
}

static int load_dist_item(const spec_section *sec, const char *name, void *item)
{
    return load_dist(sec, name, item);
}

/* Which shapes each distribution pairs with (its `shapes` key, or all). */
static int pair_dists(moe_spec *s)
{
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
        int nw, rc;
        if ((rc = split_list(di->sec, di->shapes_kv, &w, &nw)))
            return rc;
        for (int j = 0; j < nw && !rc; j++) {
            int found = 0;
            for (int q = 0; q < s->nshapes; q++)
                if (moe_spec_name_matches(s->shapes[q].name, w[j]))
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

int moe_spec_interpret(moe_spec *s)
{
    spec_section *exp = moe_spec_section_get(s, "experiment");
    if (!exp)
        return moe_fail(MOE_ENOMEM, NULL, "out of memory");
    int rc;
    if ((rc = check_names(s, exp)) || (rc = moe_spec_expand_axes(s)))
        return rc;
    exp = moe_spec_section_get(s, "experiment"); /* the expansion may move the sections */
    if ((rc = load_name(s, exp)) || (rc = load_axes(s, exp)) || (rc = load_cfs(s, exp)))
        return rc;
    void *items;
    rc = load_kind(s, exp, "shapes", "shape", &items, sizeof *s->shapes, &s->nshapes,
                   load_shape_item);
    s->shapes = items;
    if (rc)
        return rc;
    rc = load_kind(s, exp, "routers", "router", &items, sizeof *s->routers, &s->nrouters,
                   load_router_item);
    s->routers = items;
    if (rc)
        return rc;
    rc = load_kind(s, exp, "distributions", "distribution", &items, sizeof *s->dists,
                   &s->ndists, load_dist_item);
    s->dists = items;
    if (rc || (rc = pair_dists(s)))
        return rc;
    if ((rc = moe_cluster_spec_load(s, exp)))
        return rc;
    return moe_spec_train_load(s);
}

int moe_spec_parse_int(const spec_section *sec, const spec_kv *kv, const char *text, long lo,
                       long hi, long *out)
{
    return parse_int(sec, kv, text, lo, hi, out);
}

