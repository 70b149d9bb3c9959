/* spec_internal.h: what the parts of the spec module share (not a public interface): the raw
 * sections and keys read from the INI file and --set overrides (sim/spec_read.c), the
 * interpreted sections (sim/spec_load.c), and the spec itself with its sweep points
 * (sim/spec.c: expansion, the public functions and the check before a run). */
#ifndef MOE_SPEC_INTERNAL_H
#define MOE_SPEC_INTERNAL_H

#include "spec.h"

#include <stdint.h>
#include <stdio.h>

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
    int implicit;   /* a router named in experiment.routers without a section (spec_axes.c) */
    int expanded;   /* list-valued keys: the section stands for its variants */
    int variant_of; /* a variant: 1 + the index of its original section; 0 otherwise */
} spec_section;

/* ---- interpreted sections ---- */

typedef struct {
    const spec_section *sec;
    const char *name; /* after "router." */
    const moe_router_type *type;
    const spec_kv *type_kv, *k_kv, *cf_kv, *cap_kv, *ne_kv;
    moe_route_opts opts; /* options of the section (owns the hash table) */
    const char *hash_path;
    char cf_text[48];    /* canonical text of the section's own capacity_factor */
    const char *preset;  /* the preset of the section's key preset (presets.h), or NULL */
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
    int S, fs, shared_gate;      /* shared experts (shared_experts, shared_f, shared_gate) */
    const struct moe_model_preset *model; /* `model = NAME` (models.h), or NULL */
} spec_shape;

typedef struct {
    long long num, den;
    char text[48];
} spec_cf;

struct moe_spec {
    char *path, *name;
    spec_section *secs;
    int nsecs, capsecs; /* sections, and the room for them in secs */
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
    struct spec_train *train; /* the [train] section (sim/spec_train.c), NULL without one */
    struct moe_cluster_spec *cluster; /* sim/cluster_spec.c; NULL without [cluster.*] */
};


/* ---- sim/spec_read.c: raw sections, errors with a location ---- */

/* Record "<what> (<file>:<line>, key <section>.<key>)" (line 0: no line; key "": the section as
 * a whole, "section [<section>]"). Returns code. */
int moe_spec_fail_at(int code, const char *file, int line, const char *section, const char *key,
                     const char *hint, const char *fmt, ...) __attribute__((format(printf, 7, 8)));
#define KV_FAIL(code, sec, kv, hint, ...)                                                     \
    moe_spec_fail_at(code, (kv)->file, (kv)->line, (sec)->name, (kv)->key, hint, __VA_ARGS__)

/* Of two keys whose values conflict (k and E), the one to name in the error: b when it comes
 * from a --set and a does not (the override the user just gave), else a (or b when a is
 * NULL). */
const spec_kv *moe_spec_blame(const spec_kv *a, const spec_kv *b);
/* Re-report the error a callee recorded, with the location of kv appended. */
int moe_spec_relocate(int rc, const spec_section *sec, const spec_kv *kv);
char *moe_spec_strdup(const char *s);
spec_section *moe_spec_section_find(moe_spec *s, const char *name);
/* The section called name, created (without keys) when absent; NULL when out of memory. */
spec_section *moe_spec_section_get(moe_spec *s, const char *name);
/* A new empty section named name, appended without looking for one of that name (the
 * caller knows there is none); NULL when out of memory. Like moe_spec_section_get, it may
 * move the sections. */
spec_section *moe_spec_section_new(moe_spec *s, const char *name);
spec_kv *moe_spec_kv_find(const spec_section *sec, const char *key);
/* Read s->path into raw sections. */
int moe_spec_read_ini(moe_spec *s);
/* Apply override i (from 1) "section.key=value": replaces or adds the key. */
int moe_spec_apply_set(moe_spec *s, const char *set, int i);

/* ---- sim/spec_axes.c: list-valued keys of sections, routers without a section ---- */

/* Add an empty section for every router of experiment.routers that has none and is a
 * registered type, then turn the list-valued keys of router, distribution and shape sections
 * into variant sections "NAME[key=value,...]" (the original marked expanded). */
int moe_spec_expand_axes(moe_spec *s);
/* 1 when the section name `name` (after "kind.") is `listed` or one of its variants. */
int moe_spec_name_matches(const char *name, const char *listed);

/* ---- sim/spec_load.c: interpreting the sections ---- */

/* Split a list on spaces and commas into malloc'd words (each once; empty: an error). */
int moe_spec_split_list(const spec_section *sec, const spec_kv *kv, char ***out, int *n);
void moe_spec_free_words(char **w, int n);

/* The first key of a section (for errors about the section as a whole). */
const spec_kv *moe_spec_first_kv(const spec_section *sec);
/* Check [experiment] and the section names, and load the axes, shapes, routers and
 * distributions of the sweep. */
int moe_spec_interpret(moe_spec *s);
/* Split a list value on spaces and commas (an empty list or a repeated item is an error). */
int moe_spec_split_list(const spec_section *sec, const spec_kv *kv, char ***out, int *n);
void moe_spec_free_words(char **w, int n);

/* ---- sim/spec_model.c: model presets in shapes ---- */

/* The routing conventions of shape sh's model preset (models.h) into p->opts: k and the
 * options score, normalize_topk, route_scale, groups, topk_groups, each only where it applies
 * to router r and the router section does not set it. */
void moe_spec_model_opts(const spec_router *r, const spec_shape *sh, moe_point *p);

/* ---- sim/spec_train.c: the [train] section ---- */

/* Load [train] (absent: s->train stays NULL; with it, experiment.batches is an error). */
int moe_spec_train_load(moe_spec *s);
void moe_spec_train_free(struct spec_train *t); /* NULL is a no-op */
/* Add p once per combination of the [train] value lists (p->train set, p->tc filled, checked
 * against the point's shape), each through add (which sees p->train = 1). */
int moe_spec_train_expand(moe_spec *s, moe_point *p, const spec_router *r,
                          int (*add)(moe_spec *, moe_point *, const spec_router *));
/* " train={steps=... optimizer=... ...}": the training part of a point's config key. */
void moe_spec_train_key(const moe_point *p, FILE *m);
/* The check of a training point before the run: the router can train (trainable = gate needs
 * a router whose combine weights depend on the gate). */
int moe_spec_train_check(const moe_spec *s, const moe_point *p);
/* The value parsers of spec_load.c for the other section loaders (sim/cluster_spec.c). */
int moe_spec_split_list(const spec_section *sec, const spec_kv *kv, char ***out, int *n);
void moe_spec_free_words(char **w, int n);
int moe_spec_parse_int(const spec_section *sec, const spec_kv *kv, const char *text, long lo,
                       long hi, long *out);

#endif
