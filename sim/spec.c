/* spec.c: experiment specs (spec.h). This file expands the interpreted sections into sweep points,
 * owns the public moe_spec_* functions and checks every point before a run; the INI file and the
 * `--set section.key=value` overrides are read by sim/spec_read.c (libinih, no hand-written
 * parser) and the sections interpreted by sim/spec_load.c, every error with its file, line and
 * key (shared types: sim/spec_internal.h).
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
 *   [train]                       ; optional: every point becomes a training run of the layer
 *   steps = 200                   ; keys and defaults: sim/spec_train.c, docs/spec.md
 *
 * Every list (routers, capacity_factors, distributions, shapes, tokens, batches, seeds) is a sweep
 * axis, and so is any key of a router, distribution or shape section that lists several values
 * (`k = 1 2`, `zipf_s = 1.0 1.5`, `E = 8 16`: variant sections NAME[key=value], sim/spec_axes.c;
 * a router named in `routers` without a section runs its registry type with defaults); values are separated by spaces or commas, and a long list may continue on indented lines.
 * The sweep is the product of all axes (a distribution with `shapes` pairs only with those).
 * A router that sets its own capacity_factor runs at that factor only; one with an explicit
 * `capacity`, `dropless = true`, or a dense plan (soft_moe) has no use for the factor and runs
 * once, recorded with capacity_factor "none" and the reason. Comments: lines starting with ; or
 * #, and " ; ..." at the end of a line. Lines are at most 197 characters and end in LF, CRLF or
 * CR; a UTF-8 byte order mark before the first line is skipped. Paths (hash_table, trace files)
 * are relative to the directory moesim runs in. Overrides: `--set experiment.tokens=1024`,
 * `--set router.topk.k=1`, `--set distribution.zipf.zipf_s=1.2`; a --set may add a key or a
 * section. Errors: unknown keys and sections, a section or key given twice, a NUL byte, bad
 * values, empty or repeated list items, k > E and any failure to allocate a router or open a
 * source are reported as "<what> (<file>:<line>, key <section>.<key>)" before any point runs.
 */
#include "cluster_spec.h"
#include "spec_internal.h"

#include "models.h"
#include "options.h"
#include "pipeline.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

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
    if (sh->model)
        moe_spec_model_opts(r, sh, p);
    int k = p->opts.k > 0 ? p->opts.k : r->type->default_k;
    if ((r->type->flags & MOE_RF_ALL_EXPERTS) && p->opts.k == 0)
        k = sh->E;
    if (k > sh->E) {
        const spec_kv *kk = r->k_kv ? r->k_kv : (is_topk && sh->k_kv) ? sh->k_kv : NULL;
        /* name the key of a --set when the conflict comes from one (k, or E) */
        const spec_kv *kv = moe_spec_blame(kk, sh->E_kv);
        const spec_section *sec = kv == r->k_kv ? r->sec : sh->sec;
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
        return KV_FAIL(MOE_EINVAL, r->sec, moe_spec_kv_find(r->sec, "slots_per_expert"), NULL,
                       "E * slots_per_expert = %ld logit columns is too many", m);
    p->m = (int)m;
    p->k = k;
    p->d = sh->d;
    p->f = sh->f;
    p->E = sh->E;
    p->act = sh->act;
    p->shape = sh->name;
    p->shared_S = sh->S;
    p->shared_f = sh->fs;
    p->shared_gate = sh->shared_gate;
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
    if (p->shared_S > 0) /* absent otherwise: keys of points without them stay as they were */
        fprintf(m, " shared_experts=%d shared_f=%d shared_gate=%s", p->shared_S, p->shared_f,
                moe_shared_gate_name(p->shared_gate));
    moe_spec_train_key(p, m);
    if (fclose(m) != 0) {
        free(buf);
        return NULL;
    }
    return buf;
}

static int add_point(moe_spec *s, moe_point *p, const spec_router *r)
{
    const spec_section *shsec = NULL;
    for (int i = 0; i < s->nshapes; i++)
        if (s->shapes[i].name == p->shape)
            shsec = s->shapes[i].sec;
    if (s->train && p->shared_S > 0 && shsec)
        return KV_FAIL(MOE_EINVAL, shsec, moe_spec_first_kv(shsec),
                       "training runs the routed experts only: remove the shared experts",
                       "shape %s has shared experts, which [train] does not train", p->shape);
    if (s->train && !p->train) /* one point per combination of the [train] lists */
        return moe_spec_train_expand(s, p, r, add_point);
    char desc[1024];
    moe_clear_error();
    int rc = moe_route_opts_describe(&p->opts, desc, sizeof desc);
    if (rc)
        return moe_spec_relocate(rc, r->sec, r->type_kv ? r->type_kv : moe_spec_first_kv(r->sec));
    char *text = NULL;
    size_t len = 0;
    FILE *m = open_memstream(&text, &len);
    if (!m)
        return moe_fail(MOE_ENOMEM, NULL, "out of memory");
    if (r->preset) /* stored first in router_options: which preset the point came from */
        fprintf(m, "preset=%s%s", r->preset, desc[0] ? " " : "");
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
    rc = s->cluster ? moe_cluster_spec_expand(s, p, push_point) : push_point(s, p);
    if (rc || s->cluster) { /* the cluster points hold copies */
        free(text);
        free(key);
    }
    return rc;
}

static int expand(moe_spec *s)
{
    /* without experiment.capacity_factors a preset keeps its own capacity factor */
    const spec_section *exp = moe_spec_section_find(s, "experiment");
    const int cf_swept = exp && moe_spec_kv_find(exp, "capacity_factors");
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
                            const int own_cf = r->cf_kv || (r->preset && r->opts.cf_set &&
                                                            !cf_swept);
                            if (r->cf_kv)
                                note = "capacity_factor set by the router section";
                            else if (own_cf)
                                note = "capacity_factor set by the preset";
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
                                if (own_cf) {
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
    s->path = moe_spec_strdup(path);
    if (!s->path) {
        free(s);
        return moe_fail(MOE_ENOMEM, NULL, "out of memory (%s)", path);
    }
    int rc = moe_spec_read_ini(s);
    for (int i = 0; i < nsets && !rc; i++)
        rc = moe_spec_apply_set(s, sets[i], i + 1);
    if (!rc)
        rc = moe_spec_interpret(s);
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
    moe_spec_train_free(s->train);
    moe_cluster_spec_free(s->cluster);
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
    moe_clear_error();
    /* no workspace at the point's size: the options are checked on a one-token instance, the
     * size-dependent rules and the capacity formula on T (moe_pipeline_estimate, check_memory) */
    int rc = moe_router_check(p->rtype, &o, p->tokens, p->m);
    if (!rc && o.sequence_length > 0 && p->tokens % o.sequence_length != 0) { /* seq_aux_loss */
        const spec_kv *kv = moe_spec_kv_find(r->sec, "sequence_length");
        rc = moe_fail(MOE_EINVAL, "sequence_length must divide the tokens of a batch",
                      "sequence_length %d does not divide tokens = %d", o.sequence_length,
                      p->tokens);
        if (kv)
            return moe_spec_relocate(rc, r->sec, kv);
    }
    if (rc)
        return moe_spec_relocate(rc, r->sec, r->type_kv ? r->type_kv : moe_spec_first_kv(r->sec));
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

/* Physical memory in bytes (sysconf), 0 when unknown. */
static double phys_bytes(void)
{
    long pages = sysconf(_SC_PHYS_PAGES), size = sysconf(_SC_PAGESIZE);
    return pages > 0 && size > 0 ? (double)pages * (double)size : 0.0;
}

/* A point whose estimated memory (moe_pipeline_estimate) exceeds the machine's physical memory
 * is refused here, before anything runs, naming the key that sets it: the capacity (the router's
 * capacity or capacity_factor, else experiment.capacity_factors) when slots per expert exceed
 * the tokens, else experiment.tokens. */
static int check_memory(const moe_spec *s, const spec_router *r, const moe_point *p,
                        double phys)
{
    const moe_pipeline_cfg cfg = {.rtype = p->rtype, .opts = &p->opts, .T = p->tokens,
                                  .M = p->m, .shared_S = p->shared_S, .shared_f = p->shared_f};
    double need = 0.0, layer = 0.0;
    long C = 0;
    moe_clear_error();
    int rc = moe_pipeline_estimate(&cfg, p->E, p->d, p->f, p->act, &need, &layer, &C);
    if (rc)
        return moe_spec_relocate(rc, r->sec, r->type_kv ? r->type_kv : moe_spec_first_kv(r->sec));
    if (phys <= 0.0 || need <= phys)
        return MOE_OK;
    const spec_section *sec = r->sec;
    const spec_kv *kv = r->cap_kv ? r->cap_kv : r->cf_kv;
    for (int i = 0; !kv && i < s->nsecs; i++)
        if (strcmp(s->secs[i].name, "experiment") == 0) {
            sec = &s->secs[i];
            kv = moe_spec_kv_find(sec, C > p->tokens ? "capacity_factors" : "tokens");
        }
    if (!kv)
        kv = moe_spec_first_kv(sec = r->sec);
    return KV_FAIL(MOE_ENOMEM, sec, kv,
                   C > p->tokens ? "a capacity above the tokens per batch is never filled"
                                 : "fewer tokens per batch, or a smaller shape",
                   "point %zu needs about %.3g GB (layer workspaces %.3g GB for %d experts x %ld "
                   "slots), the machine has %.3g GB of physical memory",
                   (size_t)(p - s->points) + 1, need / 1e9, layer / 1e9, p->E, C, phys / 1e9);
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
    /* open-addressing hash of the seen batches (slot = index + 1, 0 empty): linear in the
     * points, where a scan of every earlier one took 15 s for 10^5 seeds */
    size_t hcap = 2;
    while (hcap < 2 * (s->npoints + 1))
        hcap *= 2;
    size_t *slot = calloc(hcap, sizeof *slot);
    if (!seen || !slot) {
        free(seen);
        free(slot);
        return moe_fail(MOE_ENOMEM, NULL, "out of memory");
    }
    int rc = MOE_OK;
    const double phys = phys_bytes();
    for (size_t i = 0; i < s->npoints && !rc; i++) {
        const moe_point *p = &s->points[i];
        const spec_router *r = router_of(s, p);
        const spec_dist *di = dist_of(s, p);
        rc = check_router(r, p, 0);
        if (!rc && (p->rtype->flags & MOE_RF_HAS_DROPLESS) && !p->opts.dropless)
            rc = check_router(r, p, 1);
        if (!rc)
            rc = check_memory(s, r, p, phys);
        if (rc || (rc = moe_spec_train_check(s, p)))
            break;
        seen_t *sn = NULL;
        uint64_t h = (uint64_t)(uintptr_t)di * 0x9E3779B97F4A7C15u;
        h = (h ^ (uint64_t)p->tokens) * 0xBF58476D1CE4E5B9u;
        h = (h ^ ((uint64_t)p->d << 32 | (uint32_t)p->m)) * 0x94D049BB133111EBu;
        h = (h ^ p->seed) * 0x9E3779B97F4A7C15u;
        size_t hi = (size_t)(h >> 17) & (hcap - 1);
        for (; slot[hi] && !sn; hi = (hi + 1) & (hcap - 1)) {
            seen_t *c = &seen[slot[hi] - 1];
            if (c->di == di && c->tokens == p->tokens && c->d == p->d && c->m == p->m &&
                c->seed == p->seed)
                sn = c;
        }
        if (!sn) {
            slot[hi] = nseen + 1;
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
                    rc = moe_spec_relocate(rc, di->sec, quoted_kv(di, moe_errmsg()));
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
                    rc = moe_spec_relocate(rc, di->sec, di->source_kv);
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
    free(slot);
    return rc;
}

