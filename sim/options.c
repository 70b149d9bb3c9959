/* options.c: the table of routing options (STYLE.md: one table drives the spec parser, the
 * --set overrides, `moesim route` flags, validation and --help) and the setter behind it. */
#include "options.h"
#include "npy.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

const moe_option moe_route_options[] = {
    {"k", "int", "router default (topk 2)", ">= 1, <= E", "experts per token"},
    {"capacity_factor", "decimal", "1.0", ">= 0, exact decimal",
     "C = max(min_capacity, ROUND(k*n*cf/E)), computed exactly on integers"},
    {"capacity", "int", "formula", ">= 0", "explicit slots per expert (overrides the formula)"},
    {"min_capacity", "int", "0", ">= 0", "lower bound on the capacity"},
    {"rounding", "enum", "ceil", "ceil|floor|round", "ROUND in the capacity formula (round: half to even)"},
    {"order", "enum", "choice_major", "choice_major|token_major|bpr|probs",
     "order in which token-choice claims take slots"},
    {"renormalize", "bool", "false", "true|false", "divide kept gates by their sum after drops"},
    {"threshold_on", "enum", "normalized", "normalized|raw",
     "gshard: test 2*g2 > u (normalized) or 2*p2 > u (raw)"},
    {"hash", "enum", "mod", "mod|table|balanced", "hash router: expert of a token id"},
    {"hash_table", "path", "none", ".npy of int", "hash = table: expert of each id (index = id)"},
    {"slots_per_expert", "int", "M/E or 1", ">= 1", "soft_moe: slots P per expert (M = E*P columns)"},
    {"num_experts", "int", "M / P", ">= 1", "experts E (soft_moe: M = E*P)"},
    {"noise_std", "number", "0", ">= 0", "topk: std of Gaussian noise added to the logits"},
    {"dropless", "bool", "false", "true|false", "token-choice routers: no capacity limit"},
    {"bias_rate", "number", "0.001", ">= 0", "dsv3_bias: bias update rate"},
    {"sinkhorn_tol", "number", "1e-9", "> 0", "sinkhorn: convergence tolerance"},
    {NULL, NULL, NULL, NULL, NULL},
};

/* ---- value parsers ---- */

static int bad(const char *key, const char *value, const char *want)
{
    return moe_fail(MOE_EINVAL, want, "bad value '%s' for option %s", value, key);
}

static int parse_long(const char *key, const char *v, long lo, long *out)
{
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (errno || end == v || *end || x < lo)
        return moe_fail(MOE_EINVAL, NULL, "bad value '%s' for option %s: want an integer >= %ld",
                        v, key, lo);
    *out = x;
    return MOE_OK;
}

static int parse_num(const char *key, const char *v, double lo, int strict, double *out)
{
    char *end;
    errno = 0;
    double x = strtod(v, &end);
    if (errno || end == v || *end || !isfinite(x) || x < lo || (strict && x == lo))
        return moe_fail(MOE_EINVAL, NULL, "bad value '%s' for option %s: want a number %s %g",
                        v, key, strict ? ">" : ">=", lo);
    *out = x;
    return MOE_OK;
}

static int parse_bool(const char *key, const char *v, int *out)
{
    if (!strcmp(v, "true") || !strcmp(v, "1") || !strcmp(v, "yes"))
        *out = 1;
    else if (!strcmp(v, "false") || !strcmp(v, "0") || !strcmp(v, "no"))
        *out = 0;
    else
        return bad(key, v, "use true or false");
    return MOE_OK;
}

/* index of v in "a|b|c", or -1 */
static int enum_index(const char *choices, const char *v)
{
    size_t lv = strlen(v);
    int i = 0;
    for (const char *p = choices; *p; i++) {
        const char *bar = strchr(p, '|');
        size_t len = bar ? (size_t)(bar - p) : strlen(p);
        if (len == lv && !strncmp(p, v, len))
            return i;
        if (!bar)
            break;
        p = bar + 1;
    }
    return -1;
}

static int parse_enum(const char *key, const char *v, const char *choices, int *out)
{
    int i = enum_index(choices, v);
    if (i < 0)
        return moe_fail(MOE_EINVAL, NULL, "bad value '%s' for option %s: want one of %s", v, key,
                        choices);
    *out = i;
    return MOE_OK;
}

static int load_hash_table(moe_route_opts *o, const char *path)
{
    moe_npy a;
    int rc = moe_npy_read(path, &a);
    if (rc)
        return rc;
    int64_t *t = NULL;
    if (a.ndim != 1) {
        moe_npy_free(&a);
        return moe_fail(MOE_EFORMAT, "the hash table is a 1-d array: expert of each token id",
                        "hash table must be 1-d, has %d dimensions (%s)", a.ndim, path);
    }
    char what[4200];
    snprintf(what, sizeof what, "hash table %s", path);
    rc = moe_npy_as_int64(&a, what, &t);
    size_t len = a.count;
    moe_npy_free(&a);
    if (rc)
        return rc;
    moe_route_opts_release(o);
    o->hash_table = t;
    o->hash_table_len = len;
    return MOE_OK;
}

/* ---- the setter ---- */

int moe_route_opts_set(moe_route_opts *o, const char *key, const char *v)
{
    long l;
    double d;
    int rc = MOE_OK;
    if (!strcmp(key, "k")) {
        if (!(rc = parse_long(key, v, 1, &l)))
            o->k = l > INT_MAX ? INT_MAX : (int)l;
    } else if (!strcmp(key, "capacity_factor")) {
        if (!(rc = moe_decimal_parse(v, &o->cf_num, &o->cf_den)))
            o->cf_set = 1;
    } else if (!strcmp(key, "capacity")) {
        if (!(rc = parse_long(key, v, 0, &l)))
            o->capacity = l;
    } else if (!strcmp(key, "min_capacity")) {
        if (!(rc = parse_long(key, v, 0, &l)))
            o->min_capacity = l;
    } else if (!strcmp(key, "rounding")) {
        rc = parse_enum(key, v, "ceil|floor|round", &o->rounding);
    } else if (!strcmp(key, "order")) {
        rc = parse_enum(key, v, "choice_major|token_major|bpr|probs", &o->order);
    } else if (!strcmp(key, "renormalize")) {
        rc = parse_bool(key, v, &o->renormalize);
    } else if (!strcmp(key, "threshold_on")) {
        rc = parse_enum(key, v, "normalized|raw", &o->threshold_on);
    } else if (!strcmp(key, "hash")) {
        rc = parse_enum(key, v, "mod|table|balanced", &o->hash);
    } else if (!strcmp(key, "hash_table")) {
        rc = load_hash_table(o, v);
    } else if (!strcmp(key, "slots_per_expert")) {
        if (!(rc = parse_long(key, v, 1, &l)))
            o->slots_per_expert = l > INT_MAX ? INT_MAX : (int)l;
    } else if (!strcmp(key, "num_experts")) {
        if (!(rc = parse_long(key, v, 1, &l)))
            o->num_experts = l > INT_MAX ? INT_MAX : (int)l;
    } else if (!strcmp(key, "noise_std")) {
        if (!(rc = parse_num(key, v, 0.0, 0, &d)))
            o->noise_std = d;
    } else if (!strcmp(key, "dropless")) {
        rc = parse_bool(key, v, &o->dropless);
    } else if (!strcmp(key, "bias_rate")) {
        if (!(rc = parse_num(key, v, 0.0, 0, &d)))
            o->bias_rate = d;
    } else if (!strcmp(key, "sinkhorn_tol")) {
        if (!(rc = parse_num(key, v, 0.0, 1, &d)))
            o->sinkhorn_tol = d;
    } else {
        rc = moe_fail(MOE_EINVAL, "`moesim list options` shows the routing options",
                      "unknown routing option '%s'", key);
    }
    return rc;
}

void moe_route_opts_release(moe_route_opts *o)
{
    free((void *)o->hash_table);
    o->hash_table = NULL;
    o->hash_table_len = 0;
}

void moe_route_options_print(FILE *out, int as_flags)
{
    for (const moe_option *op = moe_route_options; op->key; op++) {
        char name[64];
        if (as_flags) {
            snprintf(name, sizeof name, "--%s", op->key);
            for (char *c = name + 2; *c; c++)
                if (*c == '_')
                    *c = '-';
        } else {
            snprintf(name, sizeof name, "%s", op->key);
        }
        fprintf(out, "  %-20s %-8s default %-14s %s (%s)\n", name, op->type, op->def, op->help,
                op->choices ? op->choices : "");
    }
}

int moe_route_opts_describe(const moe_route_opts *o, char *buf, size_t len)
{
    moe_route_opts d;
    moe_route_opts_default(&d);
    static const char *rounding[] = {"ceil", "floor", "round"};
    static const char *order[] = {"choice_major", "token_major", "bpr", "probs"};
    static const char *thr[] = {"normalized", "raw"};
    static const char *hash[] = {"mod", "table", "balanced"};
    size_t n = 0;
    int w;
#define PUT(...)                                                                              \
    do {                                                                                      \
        w = snprintf(buf + n, n < len ? len - n : 0, __VA_ARGS__);                            \
        if (w < 0)                                                                            \
            return moe_fail(MOE_EINVAL, NULL, "cannot describe routing options");             \
        n += (size_t)w;                                                                       \
    } while (0)
    if (len)
        buf[0] = '\0';
    if (o->k != d.k)
        PUT("%sk=%d", n ? " " : "", o->k);
    if (o->cf_set)
        PUT("%scapacity_factor=%lld/%lld", n ? " " : "", o->cf_num, o->cf_den);
    if (o->capacity != d.capacity)
        PUT("%scapacity=%ld", n ? " " : "", o->capacity);
    if (o->min_capacity != d.min_capacity)
        PUT("%smin_capacity=%ld", n ? " " : "", o->min_capacity);
    if (o->rounding != d.rounding)
        PUT("%srounding=%s", n ? " " : "", rounding[o->rounding]);
    if (o->order != d.order)
        PUT("%sorder=%s", n ? " " : "", order[o->order]);
    if (o->renormalize != d.renormalize)
        PUT("%srenormalize=true", n ? " " : "");
    if (o->threshold_on != d.threshold_on)
        PUT("%sthreshold_on=%s", n ? " " : "", thr[o->threshold_on]);
    if (o->hash != d.hash)
        PUT("%shash=%s", n ? " " : "", hash[o->hash]);
    if (o->hash_table)
        PUT("%shash_table_len=%zu", n ? " " : "", o->hash_table_len);
    if (o->slots_per_expert != d.slots_per_expert)
        PUT("%sslots_per_expert=%d", n ? " " : "", o->slots_per_expert);
    if (o->num_experts != d.num_experts)
        PUT("%snum_experts=%d", n ? " " : "", o->num_experts);
    if (o->noise_std != d.noise_std)
        PUT("%snoise_std=%.17g", n ? " " : "", o->noise_std);
    if (o->dropless != d.dropless)
        PUT("%sdropless=true", n ? " " : "");
    if (o->bias_rate != d.bias_rate)
        PUT("%sbias_rate=%.17g", n ? " " : "", o->bias_rate);
    if (o->sinkhorn_tol != d.sinkhorn_tol)
        PUT("%ssinkhorn_tol=%.17g", n ? " " : "", o->sinkhorn_tol);
#undef PUT
    if (n >= len)
        return moe_fail(MOE_EINVAL, NULL, "routing options too long to describe");
    return MOE_OK;
}
