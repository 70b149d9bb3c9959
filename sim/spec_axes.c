/* spec_axes.c: list-valued keys of [router.NAME], [distribution.NAME] and [shape.NAME] sections
 * as sweep axes, and routers named in experiment.routers without a section of their own
 * (spec_internal.h; run by moe_spec_interpret before the sections are loaded).
 *
 * A key whose value lists several values (`zipf_s = 1.0 1.2 1.5`, `E = 8 16 64`, `k = 1 2`;
 * separated by spaces or commas, each value once) makes the section a family of variants, one
 * per combination of the listed values (the product, in the order of the keys and values as
 * written). Variant sections are appended to the spec's sections, named
 * "NAME[key=value,key2=value2]" (the listed keys only), with every key of the original and the
 * listed keys holding one value each (file and line of the original key, so that errors point
 * at it). The original is marked `expanded` and stands for its variants wherever its name is
 * used (experiment.routers, distributions, shapes; a distribution's `shapes`). Keys that are
 * never lists: router `type` and `hash_table`, distribution `source`, `shapes` and the file
 * paths `path`, `logits`, `hidden`, `ids`. A distribution's `layers` (a list of layer numbers, or
 * `all`: every layer of its recorded trace) is its `layer` key as a list.
 *
 * A name in experiment.routers without a [router.NAME] section that is a registered router
 * type gets an empty section: the router with its defaults.
 *
 * experiment.preset lists named presets (presets.h) as the routers of the sweep, one router per
 * preset: each name gets the section [router.NAME] (empty when the spec has none) with the key
 * preset = NAME, located at experiment.preset, and experiment.routers becomes the list. The keys
 * of a [router.NAME] section the spec gives override that preset's options (list-valued keys
 * make variants as anywhere). experiment.routers given as well is an error: the routers of the
 * sweep come from one list.
 */
#include "presets.h"
#include "spec_internal.h"
#include "trace.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int never_list(const char *kind, const char *key)
{
    static const char *const router_keys[] = {"type", "hash_table", NULL};
    static const char *const dist_keys[] = {"source", "shapes", "path", "logits", "hidden",
                                            "ids", NULL};
    const char *const *keys = !strcmp(kind, "router") ? router_keys
                              : !strcmp(kind, "distribution") ? dist_keys
                                                              : NULL;
    for (int i = 0; keys && keys[i]; i++)
        if (!strcmp(keys[i], key))
            return 1;
    return 0;
}

/* Kind of a section name ("router", "distribution", "shape") or NULL. */
static const char *kind_of(const char *name)
{
    static const char *const kinds[] = {"router", "distribution", "shape", NULL};
    for (int i = 0; kinds[i]; i++) {
        size_t n = strlen(kinds[i]);
        if (!strncmp(name, kinds[i], n) && name[n] == '.')
            return kinds[i];
    }
    return NULL;
}

/* Routers listed in experiment.routers with no section: an empty one when the name is a
 * registered router type (errors about unknown names stay with the loader). */
static int add_default_routers(moe_spec *s)
{
    const spec_section *exp = moe_spec_section_find(s, "experiment");
    const spec_kv *kv = exp ? moe_spec_kv_find(exp, "routers") : NULL;
    if (!kv)
        return MOE_OK;
    char **w;
    int nw;
    int rc = moe_spec_split_list(exp, kv, &w, &nw);
    if (rc)
        return rc;
    const char *file = kv->file;
    const int line = kv->line;
    for (int i = 0; i < nw && !rc; i++) {
        char full[300];
        snprintf(full, sizeof full, "router.%s", w[i]);
        if (moe_spec_section_find(s, full) || !moe_router_find(w[i]))
            continue;
        spec_section *sec = moe_spec_section_get(s, full); /* may move the sections */
        if (!sec) {
            rc = moe_fail(MOE_ENOMEM, NULL, "out of memory");
            break;
        }
        sec->head.file = file; /* errors about it point at experiment.routers */
        sec->head.line = line;
        sec->implicit = 1;
    }
    moe_spec_free_words(w, nw);
    return rc;
}

/* The listed values of one key of a section. */
typedef struct {
    int key;     /* index in the section's keys */
    char **w;
    int n;
} axis;

static int add_kv(spec_section *sec, const spec_kv *src, const char *value)
{
    spec_kv *nk = realloc(sec->kv, (size_t)(sec->nkv + 1) * sizeof *nk);
    if (!nk)
        return moe_fail(MOE_ENOMEM, NULL, "out of memory");
    sec->kv = nk;
    spec_kv *kv = &sec->kv[sec->nkv];
    *kv = *src;
    kv->key = moe_spec_strdup(src->key);
    kv->value = moe_spec_strdup(value);
    if (!kv->key || !kv->value) {
        free(kv->key);
        free(kv->value);
        return moe_fail(MOE_ENOMEM, NULL, "out of memory");
    }
    sec->nkv++;
    return MOE_OK;
}

/* One name of experiment.preset (pk): its section [router.NAME] holds preset = NAME. */
static int add_preset_router(moe_spec *s, const spec_kv *pk, const char *name)
{
    if (!moe_preset_find(name))
        return moe_spec_fail_at(MOE_EINVAL, pk->file, pk->line, "experiment", pk->key,
                                "`moesim list presets` lists them", "unknown preset '%s'", name);
    char full[300];
    snprintf(full, sizeof full, "router.%s", name);
    int fresh = moe_spec_section_find(s, full) == NULL;
    spec_section *sec = moe_spec_section_get(s, full); /* may move the sections */
    if (!sec)
        return moe_fail(MOE_ENOMEM, NULL, "out of memory");
    if (fresh) {
        sec->head.file = pk->file; /* errors about it point at experiment.preset */
        sec->head.line = pk->line;
        sec->implicit = 1;
    }
    const spec_kv *own = moe_spec_kv_find(sec, "preset");
    if (own && strcmp(own->value, name) != 0)
        return KV_FAIL(MOE_EINVAL, sec, own, "leave preset out of the section: its name sets it",
                       "preset %s conflicts with experiment.preset %s", own->value, name);
    return own ? MOE_OK : add_kv(sec, pk, name);
}

/* experiment.preset: a router section per listed preset, and experiment.routers listing them. */
static int add_preset_routers(moe_spec *s)
{
    spec_section *exp = moe_spec_section_find(s, "experiment");
    const spec_kv *kv = exp ? moe_spec_kv_find(exp, "preset") : NULL;
    if (!kv)
        return MOE_OK;
    const spec_kv *rk = moe_spec_kv_find(exp, "routers");
    if (rk)
        return KV_FAIL(MOE_EINVAL, exp, moe_spec_blame(kv, rk),
                       "list the presets in preset, or give [router.NAME] sections with "
                       "preset = ... and list those in routers",
                       "experiment.preset and experiment.routers both given");
    const spec_kv pk = *kv; /* its strings stay; the sections may move */
    char **w;
    int nw;
    int rc = moe_spec_split_list(exp, kv, &w, &nw);
    for (int i = 0; i < nw && !rc; i++)
        rc = add_preset_router(s, &pk, w[i]);
    moe_spec_free_words(w, nw);
    if (rc)
        return rc;
    spec_kv routers = pk;
    routers.key = "routers"; /* add_kv copies it */
    exp = moe_spec_section_find(s, "experiment");
    return add_kv(exp, &routers, pk.value);
}

/* Append the variant of section si for the value indices idx[] of the axes. */
static int add_variant(moe_spec *s, int si, const axis *ax, int nax, const int *idx)
{
    char name[1024];
    size_t n = (size_t)snprintf(name, sizeof name, "%s[", s->secs[si].name);
    for (int a = 0; a < nax && n < sizeof name; a++)
        n += (size_t)snprintf(name + n, sizeof name - n, "%s%s=%s", a ? "," : "",
                              s->secs[si].kv[ax[a].key].key, ax[a].w[idx[a]]);
    if (n + 2 >= sizeof name)
        return KV_FAIL(MOE_EINVAL, &s->secs[si], &s->secs[si].kv[ax[0].key], NULL,
                       "too many listed values for one section");
    strcat(name, "]");
    /* (a new name: the values of each list differ, moe_spec_split_list, and no section name
     * given in the spec holds '[', check_names) */
    spec_section *v = moe_spec_section_new(s, name); /* may move the sections */
    if (!v)
        return moe_fail(MOE_ENOMEM, NULL, "out of memory");
    const spec_section *orig = &s->secs[si];
    v->head = orig->head;
    v->variant_of = si + 1;
    for (int k = 0; k < orig->nkv; k++) {
        const char *value = orig->kv[k].value;
        for (int a = 0; a < nax; a++)
            if (ax[a].key == k)
                value = ax[a].w[idx[a]];
        int rc = add_kv(v, &orig->kv[k], value);
        if (rc)
            return rc;
        orig = &s->secs[si];
    }
    return MOE_OK;
}

/* Section si: its list-valued keys become variants (none: nothing changes). */
static int expand_section(moe_spec *s, int si, const char *kind)
{
    axis ax[64];
    int nax = 0, rc = MOE_OK;
    const spec_section *sec = &s->secs[si];
    for (int k = 0; k < sec->nkv && !rc; k++) {
        if (never_list(kind, sec->kv[k].key))
            continue;
        char **w;
        int nw;
        if ((rc = moe_spec_split_list(sec, &sec->kv[k], &w, &nw)))
            break;
        if (nw < 2) {
            moe_spec_free_words(w, nw);
            continue;
        }
        if (nax == (int)(sizeof ax / sizeof ax[0])) {
            moe_spec_free_words(w, nw);
            rc = KV_FAIL(MOE_EINVAL, sec, &sec->kv[k], NULL, "too many list-valued keys");
            break;
        }
        ax[nax++] = (axis){k, w, nw};
    }
    long total = nax ? 1 : 0;
    for (int a = 0; a < nax && !rc; a++)
        if ((total *= ax[a].n) > 100000)
            rc = KV_FAIL(MOE_EINVAL, sec, &sec->kv[ax[a].key], NULL,
                         "more than 100000 variants of one section");
    int idx[64] = {0};
    for (long v = 0; v < total && !rc; v++) {
        long r = v; /* the last key varies fastest */
        for (int a = nax - 1; a >= 0; a--) {
            idx[a] = (int)(r % ax[a].n);
            r /= ax[a].n;
        }
        rc = add_variant(s, si, ax, nax, idx);
    }
    if (!rc && nax)
        s->secs[si].expanded = 1;
    for (int a = 0; a < nax; a++)
        moe_spec_free_words(ax[a].w, ax[a].n);
    return rc;
}

/* A distribution's `layers` key is its layer axis: it becomes `layer`, and `all` the layers of
 * its trace (moe_trace_layer_list); the variants are then one per layer. */
static int layers_key(spec_section *sec)
{
    spec_kv *kv = NULL;
    const spec_kv *src = NULL, *path = NULL, *one = NULL;
    for (int k = 0; k < sec->nkv; k++) {
        const char *key = sec->kv[k].key;
        kv = !strcmp(key, "layers") ? &sec->kv[k] : kv;
        src = !strcmp(key, "source") ? &sec->kv[k] : src;
        path = !strcmp(key, "path") ? &sec->kv[k] : path;
        one = !strcmp(key, "layer") ? &sec->kv[k] : one;
    }
    if (!kv)
        return MOE_OK;
    if (one)
        return KV_FAIL(MOE_EINVAL, sec, kv, "give layer (one) or layers (a list, or all)",
                       "both layer and layers");
    char *key = moe_spec_strdup("layer");
    if (!key)
        return moe_fail(MOE_ENOMEM, NULL, "out of memory");
    free(kv->key);
    kv->key = key;
    if (strcmp(kv->value, "all") != 0)
        return MOE_OK;
    char *list = NULL;
    moe_clear_error();
    int rc = moe_trace_layer_list(src ? src->value : "", path ? path->value : NULL, &list);
    if (rc)
        return moe_spec_relocate(rc, sec, kv);
    free(kv->value);
    kv->value = list;
    return MOE_OK;
}

int moe_spec_expand_axes(moe_spec *s)
{
    int rc = add_preset_routers(s);
    if (!rc)
        rc = add_default_routers(s);
    const int n = s->nsecs; /* variants are appended after the originals */
    for (int i = 0; i < n && !rc; i++) {
        const char *kind = kind_of(s->secs[i].name);
        if (kind && !strcmp(kind, "distribution"))
            rc = layers_key(&s->secs[i]);
        if (kind && !rc)
            rc = expand_section(s, i, kind);
    }
    return rc;
}

int moe_spec_name_matches(const char *name, const char *listed)
{
    size_t n = strlen(listed);
    return !strncmp(name, listed, n) && (name[n] == '\0' || name[n] == '[');
}
