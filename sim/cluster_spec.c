/* cluster_spec.c: [cluster.NAME] sections and the cluster axes of [experiment]
 * (cluster_spec.h; the keys are documented in docs/cluster.md). */
#include "cluster_spec.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const exp_keys[] = {"clusters", "placement", "redundant_experts",
                                       "warmup_batches", "expert_groups", "cluster_d",
                                       "cluster_f", NULL};

int moe_cluster_spec_key(const char *key)
{
    for (int i = 0; exp_keys[i]; i++)
        if (strcmp(key, exp_keys[i]) == 0)
            return 1;
    return 0;
}

void moe_cluster_spec_free(moe_cluster_spec *c)
{
    if (!c)
        return;
    free(c->topos);
    free(c->secs);
    free(c->cfgs);
    free(c->where_sec);
    free(c->where_kv);
    free(c);
}

static int parse_real(const spec_section *sec, const spec_kv *kv, double *out)
{
    char *end;
    errno = 0;
    double x = strtod(kv->value, &end);
    if (errno || end == kv->value || *end || !isfinite(x))
        return KV_FAIL(MOE_EINVAL, sec, kv, NULL, "bad number '%s'", kv->value);
    *out = x;
    return MOE_OK;
}

/* One [cluster.NAME] section. */
static int load_topo(const spec_section *sec, const char *name, moe_cluster_topo *t)
{
    static const char *const keys[] = {"nodes", "devices_per_node", "intra_gbps",
                                       "intra_latency_us", "inter_gbps", "inter_latency_us",
                                       "device_tflops", "dtype_bytes", "redundant_experts",
                                       "dispatch", "pack_latency_us", "pack_row_ns",
                                       "pack_gbps", "unpack_latency_us", "unpack_row_ns",
                                       "unpack_gbps", "cores", "warm_pack_latency_us",
                                       "warm_pack_row_ns", "warm_pack_gbps",
                                       "warm_unpack_latency_us", "warm_unpack_row_ns",
                                       "warm_unpack_gbps", "cache_mb", NULL};
    memset(t, 0, sizeof *t);
    snprintf(t->name, sizeof t->name, "%s", name);
    t->dtype_bytes = 2;
    unsigned seen = 0;
    int rc = MOE_OK;
    for (int i = 0; i < sec->nkv && !rc; i++) {
        const spec_kv *kv = &sec->kv[i];
        int j = 0;
        while (keys[j] && strcmp(kv->key, keys[j]) != 0)
            j++;
        if (!keys[j])
            return KV_FAIL(MOE_EINVAL, sec, kv, "cluster keys: nodes devices_per_node "
                           "intra_gbps intra_latency_us inter_gbps inter_latency_us "
                           "device_tflops dtype_bytes redundant_experts dispatch pack_latency_us "
                           "pack_row_ns pack_gbps unpack_latency_us unpack_row_ns unpack_gbps "
                           "cores warm_pack_latency_us warm_pack_row_ns warm_pack_gbps "
                           "warm_unpack_latency_us warm_unpack_row_ns warm_unpack_gbps cache_mb",
                           "unknown key");
        if (j == 8) /* the cluster's own redundant_experts axis: read by load_cfgs */
            continue;
        seen |= 1u << j;
        long v;
        switch (j) {
        case 0: rc = moe_spec_parse_int(sec, kv, kv->value, 1, 4096, &v); t->nodes = (int)v; break;
        case 1:
            rc = moe_spec_parse_int(sec, kv, kv->value, 1, 4096, &v);
            t->devices_per_node = (int)v;
            break;
        case 2: rc = parse_real(sec, kv, &t->intra_gbps); break;
        case 3: rc = parse_real(sec, kv, &t->intra_latency_us); break;
        case 4: rc = parse_real(sec, kv, &t->inter_gbps); break;
        case 5: rc = parse_real(sec, kv, &t->inter_latency_us); break;
        case 6:
            if (strcmp(kv->value, "measured") == 0)
                t->measured = 1;
            else
                rc = parse_real(sec, kv, &t->device_tflops);
            break;
        case 7:
            rc = moe_spec_parse_int(sec, kv, kv->value, 1, 16, &v);
            t->dtype_bytes = (int)v;
            break;
        case 9:
            if (strcmp(kv->value, "per_claim") == 0)
                t->per_claim = 1;
            else if (strcmp(kv->value, "hierarchical") != 0)
                rc = KV_FAIL(MOE_EINVAL, sec, kv, "dispatch: hierarchical per_claim",
                             "unknown dispatch '%s'", kv->value);
            break;
        case 10: rc = parse_real(sec, kv, &t->pack_latency_us); break;
        case 11: rc = parse_real(sec, kv, &t->pack_row_ns); break;
        case 12: rc = parse_real(sec, kv, &t->pack_gbps); break;
        case 13: rc = parse_real(sec, kv, &t->unpack_latency_us); break;
        case 14: rc = parse_real(sec, kv, &t->unpack_row_ns); break;
        case 15: rc = parse_real(sec, kv, &t->unpack_gbps); break;
        case 16:
            rc = moe_spec_parse_int(sec, kv, kv->value, 0, 1 << 20, &v);
            t->cores = (int)v;
            break;
        case 17: rc = parse_real(sec, kv, &t->warm_pack_latency_us); break;
        case 18: rc = parse_real(sec, kv, &t->warm_pack_row_ns); break;
        case 19: rc = parse_real(sec, kv, &t->warm_pack_gbps); break;
        case 20: rc = parse_real(sec, kv, &t->warm_unpack_latency_us); break;
        case 21: rc = parse_real(sec, kv, &t->warm_unpack_row_ns); break;
        case 22: rc = parse_real(sec, kv, &t->warm_unpack_gbps); break;
        case 23: rc = parse_real(sec, kv, &t->cache_mb); break;
        }
        t->unpack |= j >= 13 && j <= 15;
        t->warm |= j >= 17 && j <= 22;
    }
    if (rc)
        return rc;
    for (int j = 0; j < 7; j++)
        if (!(seen & (1u << j)))
            return KV_FAIL(MOE_EINVAL, sec, moe_spec_first_kv(sec), NULL,
                           "missing key %s in [%s]", keys[j], sec->name);
    moe_clear_error();
    if (moe_cluster_topo_check(t, sec->name))
        return moe_spec_relocate(MOE_EINVAL, sec, moe_spec_first_kv(sec));
    return MOE_OK;
}

/* The topologies: experiment.clusters, or every [cluster.*] section in file order. */
static int load_topos(moe_spec *s, moe_cluster_spec *c, const spec_kv *list)
{
    int n = 0, rc = MOE_OK;
    for (int i = 0; i < s->nsecs; i++)
        n += strncmp(s->secs[i].name, "cluster.", 8) == 0;
    char **w = NULL;
    int nw = 0;
    if (list && (rc = moe_spec_split_list(c->exp, list, &w, &nw)))
        return rc;
    int cap = list ? nw : n;
    c->topos = calloc((size_t)(cap > 0 ? cap : 1), sizeof *c->topos);
    c->secs = calloc((size_t)(cap > 0 ? cap : 1), sizeof *c->secs);
    if (!c->topos || !c->secs) {
        moe_spec_free_words(w, nw);
        return moe_fail(MOE_ENOMEM, NULL, "out of memory");
    }
    for (int i = 0; i < cap && !rc; i++) {
        const spec_section *sec = NULL;
        if (list) {
            char full[256];
            snprintf(full, sizeof full, "cluster.%s", w[i]);
            sec = moe_spec_section_find(s, full);
            if (!sec)
                rc = KV_FAIL(MOE_EINVAL, c->exp, list, "each listed name needs its own section",
                             "no section [%s] for '%s'", full, w[i]);
        } else {
            for (int q = 0, seen = 0; q < s->nsecs && !sec; q++)
                if (strncmp(s->secs[q].name, "cluster.", 8) == 0 && seen++ == i)
                    sec = &s->secs[q];
        }
        if (!rc)
            rc = load_topo(sec, sec->name + 8, &c->topos[i]);
        c->secs[i] = sec;
        c->ntopos = i + 1;
    }
    moe_spec_free_words(w, nw);
    return rc;
}

/* A redundant_experts list (integers, each once) of section sec. */
static int r_list(const spec_section *sec, const spec_kv *kv, long **R, int *n)
{
    char **w = NULL;
    int rc = moe_spec_split_list(sec, kv, &w, n);
    if (rc)
        return rc;
    *R = calloc((size_t)*n, sizeof **R);
    if (!*R)
        rc = moe_fail(MOE_ENOMEM, NULL, "out of memory");
    for (int j = 0; j < *n && !rc; j++)
        rc = moe_spec_parse_int(sec, kv, w[j], 0, 1L << 20, &(*R)[j]);
    moe_spec_free_words(w, *n);
    return rc;
}

/* The configurations of topology t: its placements, each EPLB one per replica count. */
static void add_cfgs(moe_cluster_spec *c, int t, char **pw, int np, const long *R, int nr,
                     const spec_section *rsec, const spec_kv *rkv, const int *num)
{
    for (int i = 0; i < np; i++) {
        int kind = moe_placement_kind_parse(pw[i]), zero_done = 0;
        for (int j = 0; j < nr; j++) {
            long r = kind == MOE_PLACE_EPLB ? R[j] : 0; /* replicas are EPLB's */
            if (r == 0 && zero_done++)
                continue;
            c->where_sec[c->ncfgs] = rsec;
            c->where_kv[c->ncfgs] = rkv;
            moe_cluster_cfg *g = &c->cfgs[c->ncfgs++];
            *g = (moe_cluster_cfg){&c->topos[t], kind, (int)r, num[1], num[0], num[2], num[3],
                                   ""};
            const moe_cluster_topo *tp = g->topo;
            int len = snprintf(g->text, sizeof g->text,
                     "cluster=%s{%dx%d %.9g/%.9g %.9g/%.9g %.9g %d} placement=%s R=%ld G=%d "
                     "warmup=%d cluster_d=%d cluster_f=%d%s", tp->name, tp->nodes,
                     tp->devices_per_node, tp->intra_gbps, tp->intra_latency_us, tp->inter_gbps,
                     tp->inter_latency_us, tp->measured ? 0.0 : tp->device_tflops,
                     tp->dtype_bytes, pw[i], r, num[1], num[0], num[2], num[3],
                     tp->per_claim ? " dispatch=per_claim" : ""); /* (keys unchanged without) */
            /* the pack term only when set (keys unchanged without) */
            if ((tp->pack_latency_us > 0 || tp->pack_row_ns > 0 || tp->pack_gbps > 0) &&
                len > 0 && (size_t)len < sizeof g->text)
                len += snprintf(g->text + len, sizeof g->text - (size_t)len,
                                " pack=%.9g/%.9g/%.9g", tp->pack_latency_us, tp->pack_row_ns,
                                tp->pack_gbps);
            if (tp->unpack && len > 0 && (size_t)len < sizeof g->text)
                len += snprintf(g->text + len, sizeof g->text - (size_t)len,
                                " unpack=%.9g/%.9g/%.9g", tp->unpack_latency_us,
                                tp->unpack_row_ns, tp->unpack_gbps);
            if (tp->cores > 0 && len > 0 && (size_t)len < sizeof g->text)
                len += snprintf(g->text + len, sizeof g->text - (size_t)len, " cores=%d",
                                tp->cores);
            if (tp->warm && len > 0 && (size_t)len < sizeof g->text)
                snprintf(g->text + len, sizeof g->text - (size_t)len,
                         " warm=%.9g/%.9g/%.9g/%.9g/%.9g/%.9g cache=%.9g",
                         tp->warm_pack_latency_us, tp->warm_pack_row_ns, tp->warm_pack_gbps,
                         tp->warm_unpack_latency_us, tp->warm_unpack_row_ns,
                         tp->warm_unpack_gbps, tp->cache_mb);
        }
    }
}

/* The axes placement and redundant_experts (a cluster's own list replaces the experiment's),
 * crossed with the topologies. */
static int load_cfgs(moe_spec *s, moe_cluster_spec *c, const int *num)
{
    spec_kv dp = {"placement", "contiguous", s->path, 0};
    spec_kv dr = {"redundant_experts", "0", s->path, 0};
    const spec_kv *pk = moe_spec_kv_find(c->exp, "placement");
    const spec_kv *rk = moe_spec_kv_find(c->exp, "redundant_experts");
    char **pw = NULL;
    int np = 0, rc;
    if ((rc = moe_spec_split_list(c->exp, pk ? pk : &dp, &pw, &np)))
        return rc;
    for (int i = 0; i < np && !rc; i++)
        if (moe_placement_kind_parse(pw[i]) < 0)
            rc = KV_FAIL(MOE_EINVAL, c->exp, pk, "placements: contiguous round_robin greedy "
                         "eplb", "unknown placement '%s'", pw[i]);
    for (int t = 0; t < c->ntopos && !rc; t++) {
        const spec_kv *own = moe_spec_kv_find(c->secs[t], "redundant_experts");
        const spec_section *rsec = own ? c->secs[t] : c->exp;
        const spec_kv *rkv = own ? own : rk ? rk : &dr;
        long *R = NULL;
        int nr = 0;
        if (!(rc = r_list(rsec, rkv, &R, &nr))) {
            size_t cap = (size_t)(c->ncfgs + np * nr);
            moe_cluster_cfg *g = realloc(c->cfgs, cap * sizeof *g);
            const spec_section **ws = g ? realloc(c->where_sec, cap * sizeof *ws) : NULL;
            const spec_kv **wk = ws ? realloc(c->where_kv, cap * sizeof *wk) : NULL;
            if (g)
                c->cfgs = g;
            if (ws)
                c->where_sec = ws;
            if (wk)
                c->where_kv = wk;
            if (!g || !ws || !wk)
                rc = moe_fail(MOE_ENOMEM, NULL, "out of memory");
            else
                add_cfgs(c, t, pw, np, R, nr, rsec, rkv, num);
        }
        free(R);
    }
    moe_spec_free_words(pw, np);
    return rc;
}

int moe_cluster_spec_load(moe_spec *s, const spec_section *exp)
{
    int has_secs = 0;
    const spec_kv *first_key = NULL;
    for (int i = 0; i < s->nsecs; i++)
        has_secs |= strncmp(s->secs[i].name, "cluster.", 8) == 0;
    for (int i = 0; i < exp->nkv && !first_key; i++)
        if (moe_cluster_spec_key(exp->kv[i].key))
            first_key = &exp->kv[i];
    s->cluster = NULL;
    if (!has_secs && !first_key)
        return MOE_OK;
    if (!has_secs)
        return KV_FAIL(MOE_EINVAL, exp, first_key, "add a [cluster.NAME] section",
                       "no [cluster.NAME] sections");
    moe_cluster_spec *c = calloc(1, sizeof *c);
    if (!c)
        return moe_fail(MOE_ENOMEM, NULL, "out of memory");
    s->cluster = c;
    c->exp = exp;
    const spec_kv *list = moe_spec_kv_find(exp, "clusters");
    /* warmup_batches, expert_groups, cluster_d, cluster_f */
    static const char *const nk[] = {"warmup_batches", "expert_groups", "cluster_d", "cluster_f"};
    const long lo[] = {0, 1, 0, 0}, hi[] = {100000, 1L << 20, 1L << 20, 1L << 20};
    int num[4] = {1, 1, 0, 0}, rc = MOE_OK;
    for (int i = 0; i < 4 && !rc; i++) {
        const spec_kv *kv = moe_spec_kv_find(exp, nk[i]);
        long v;
        if (kv && !(rc = moe_spec_parse_int(exp, kv, kv->value, lo[i], hi[i], &v)))
            num[i] = (int)v;
    }
    if (!rc)
        rc = load_topos(s, c, list);
    if (!rc)
        rc = load_cfgs(s, c, num);
    return rc;
}

static char *join(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    char *r = malloc(la + lb + 2);
    if (r) {
        memcpy(r, a, la);
        r[la] = ' ';
        memcpy(r + la + 1, b, lb + 1);
    }
    return r;
}

int moe_cluster_spec_expand(moe_spec *s, const moe_point *p,
                            int (*push)(moe_spec *, const moe_point *))
{
    const moe_cluster_spec *c = s->cluster;
    for (int i = 0; i < c->ncfgs; i++) {
        moe_point q = *p;
        q.cluster = &c->cfgs[i];
        moe_clear_error();
        int rc = moe_cluster_cfg_check(q.cluster, p->E, p->batches);
        if (rc)
            return moe_spec_relocate(rc, c->where_sec[i], c->where_kv[i]);
        q.opts_text = moe_spec_strdup(p->opts_text);
        q.config_key = join(p->config_key, c->cfgs[i].text);
        if (!q.opts_text || !q.config_key || (rc = push(s, &q))) {
            free((char *)q.opts_text);
            free((char *)q.config_key);
            return rc ? rc : moe_fail(MOE_ENOMEM, NULL, "out of memory");
        }
    }
    return MOE_OK;
}
