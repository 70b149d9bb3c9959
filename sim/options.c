/* options.c: the table of routing options (options.h) and the code it drives: defaults, the
 * setter behind spec keys, --set overrides and `moesim route` flags, --help, and the canonical
 * text of an option set. */
#include "options.h"
#include "npy.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#define OFF(field) offsetof(moe_route_opts, field)

/* The routers an option applies to (the `routers` column; NULL = every router). */
#define R_K "topk|switch|gshard|hash|base|sinkhorn|dsv3_bias|dense|replay"
#define R_CAP "topk|switch|gshard|expert_choice|hash|sinkhorn|dsv3_bias|replay|topp|relu"
#define R_CLAIMS "topk|switch|gshard|hash|sinkhorn|dsv3_bias|replay|topp|relu"
#define R_SCORE "topk|switch|gshard|dsv3_bias|replay"
#define R_ORDER "topk|switch|gshard|sinkhorn|dsv3_bias|replay|topp|relu"

/* key, type, kind, field, default, lower bound, exclusive, enum values, default text, choices
 * text, help, routers */
const moe_option moe_route_options[] = {
    {"k", "int", MOE_OPT_INT, OFF(k), 0, 1, 0, NULL, "router default (topk 2)", ">= 1, <= E",
     "experts per token", R_K},
    {"capacity_factor", "decimal", MOE_OPT_DECIMAL, OFF(cf_set), 1, 0, 0, NULL, "1.0",
     ">= 0, exact decimal",
     "C = max(min_capacity, ROUND(k*n*cf/E)), computed exactly on integers", R_CAP},
    {"capacity", "int", MOE_OPT_LONG, OFF(capacity), -1, 0, 0, NULL, "formula", NULL,
     "explicit slots per expert (overrides the formula)", R_CAP},
    {"min_capacity", "int", MOE_OPT_LONG, OFF(min_capacity), 0, 0, 0, NULL, NULL, NULL,
     "lower bound on the capacity", R_CAP},
    {"rounding", "enum", MOE_OPT_ENUM, OFF(rounding), MOE_ROUND_CEIL, 0, 0,
     "ceil|floor|round|deepspeed_f32|fairseq|tutel", NULL, NULL,
     "ROUND in the capacity formula (round: half to even), or a library's own formula: "
     "deepspeed_f32 ceil(n/E * cf*k) in float32, fairseq and tutel k*int(cf*ceil(n/E))", R_CAP},
    {"order", "enum", MOE_OPT_ENUM, OFF(order), MOE_ORDER_CHOICE_MAJOR, 0, 0,
     "choice_major|token_major|bpr|probs|rts|gate", NULL, NULL,
     "order in which token-choice claims take slots", R_ORDER},
    {"renormalize", "bool", MOE_OPT_BOOL, OFF(renormalize), 0, 0, 0, NULL, NULL, NULL,
     "divide kept gates by their sum after drops", R_CLAIMS},
    {"threshold_on", "enum", MOE_OPT_ENUM, OFF(threshold_on), MOE_THRESH_NORMALIZED, 0, 0,
     "normalized|raw", NULL, NULL, "gshard: test 2*g2 > u (normalized) or 2*p2 > u (raw)",
     "gshard"},
    {"hash", "enum", MOE_OPT_ENUM, OFF(hash), MOE_HASH_MOD, 0, 0, "mod|table|balanced", NULL,
     NULL, "hash router: expert of a token id", "hash"},
    {"hash_table", "path", MOE_OPT_TABLE, OFF(hash_table), 0, 0, 0, NULL, "none", ".npy of int",
     "hash = table: expert of each id (index = id)", "hash"},
    {"slots_per_expert", "int", MOE_OPT_INT, OFF(slots_per_expert), 0, 1, 0, NULL, "M/E or 1",
     NULL, "soft_moe: slots P per expert (M = E*P columns)", "soft_moe"},
    {"num_experts", "int", MOE_OPT_INT, OFF(num_experts), 0, 1, 0, NULL, "M / P", NULL,
     "experts E (soft_moe: M = E*P)", NULL},
    {"noise_std", "number", MOE_OPT_NUMBER, OFF(noise_std), 0.0, 0, 0, NULL, NULL, NULL,
     "topk: std of Gaussian noise added to the logits", "topk"},
    {"dropless", "bool", MOE_OPT_BOOL, OFF(dropless), 0, 0, 0, NULL, NULL, NULL,
     "token-choice routers: no capacity limit", R_CLAIMS},
    {"bias_rate", "number", MOE_OPT_NUMBER, OFF(bias_rate), 0.001, 0, 0, NULL, NULL, NULL,
     "dsv3_bias: bias update rate", "dsv3_bias"},
    {"sinkhorn_tol", "number", MOE_OPT_NUMBER, OFF(sinkhorn_tol), 1e-9, 0, 1, NULL, "1e-9", NULL,
     "sinkhorn: convergence tolerance", "sinkhorn"},
    {"second_policy", "enum", MOE_OPT_ENUM, OFF(second_policy), MOE_SECOND_RANDOM, 0, 0,
     "random|all|sampling|threshold", NULL, NULL,
     "gshard: second choice kept by 2*g2 > u, always, Gumbel-sampled, or g2 > second_threshold",
     "gshard"},
    {"second_threshold", "number", MOE_OPT_NUMBER, OFF(second_threshold), 0.2, 0, 0, NULL, NULL,
     NULL, "gshard second_policy threshold: keep the second choice iff g2 > this", "gshard"},
    {"select", "enum", MOE_OPT_ENUM, OFF(select), MOE_SELECT_ARGMAX, 0, 0, "argmax|rsample", NULL,
     NULL, "switch: expert = argmax L, or argmax (L + Gumbel) (rsample)", "switch"},
    {"capacity_multiple", "int", MOE_OPT_LONG, OFF(capacity_multiple), 1, 1, 0, NULL, NULL, NULL,
     "C rounded up to a multiple of this, after min_capacity", R_CAP},
    {"score", "enum", MOE_OPT_ENUM, OFF(score), MOE_SCORE_AUTO, 0, 0,
     "auto|softmax|sigmoid|sqrtsoftplus", "router's own", NULL,
     "token-choice routers: score s = f(logits) that selects and weighs experts", R_SCORE},
    {"normalize_topk", "enum", MOE_OPT_ENUM, OFF(normalize_topk), MOE_TRI_AUTO, 0, 0,
     "auto|true|false", "router's own", NULL,
     "token-choice routers: combine weights = chosen s / their sum (true) or raw s (false)", R_SCORE},
    {"route_scale", "number", MOE_OPT_NUMBER, OFF(route_scale), 1.0, 0, 1, NULL, NULL, NULL,
     "token-choice routers: combine weights times this after normalisation", R_SCORE},
    {"groups", "int", MOE_OPT_INT, OFF(groups), 0, 1, 0, NULL, "off", "divides E",
     "group-limited routing: G contiguous groups of experts", R_SCORE},
    {"topk_groups", "int", MOE_OPT_INT, OFF(topk_groups), 0, 1, 0, NULL, "groups", "<= groups",
     "group-limited routing: experts only from the M best groups of each token", R_SCORE},
    {"group_score", "enum", MOE_OPT_ENUM, OFF(group_score), MOE_GSCORE_TOPK_SUM, 0, 0,
     "topk_sum|max", NULL, NULL,
     "group-limited routing: group score = sum of its top-(k/M) scores, or its max", R_SCORE},
    {"top_p", "number", MOE_OPT_NUMBER, OFF(top_p), 0.5, 0, 1, NULL, NULL, "> 0, <= 1",
     "topp: experts in descending p until their cumulative p reaches this", "topp"},
    {"max_k", "int", MOE_OPT_INT, OFF(max_k), 0, 1, 0, NULL, "E", "<= E",
     "topp, relu: at most this many experts per token", "topp|relu"},
    {"sequence_length", "int", MOE_OPT_INT, OFF(sequence_length), 0, 1, 0, NULL, "batch",
     "divides the tokens", "metric seq_aux_loss: sequences of this many consecutive tokens",
     NULL},
    {"group_size", "int", MOE_OPT_INT, OFF(group_size), 0, 0, 0, NULL, "off", "divides n",
     "routing groups: n/G groups of G contiguous tokens, each routed on its own with its own C",
     NULL},
    {"pad_to_capacity", "bool", MOE_OPT_BOOL, OFF(pad_to_capacity), 0, 0, 0, NULL, NULL, NULL,
     "the point models padding every expert to C rows (Megatron); plan and metrics unchanged",
     R_CAP},
    {"capacity_factor_eval", "decimal", MOE_OPT_DECIMAL, OFF(cf_eval_set), 1, 0, 0, NULL,
     "capacity_factor", ">= 0, exact decimal", "the capacity factor of mode eval", R_CAP},
    {"mode", "enum", MOE_OPT_ENUM, OFF(mode), MOE_MODE_TRAIN, 0, 0, "train|eval", NULL, NULL,
     "eval: capacity_factor_eval, no noise, jitter, rsample or Gumbel sampling", NULL},
    {"jitter", "number", MOE_OPT_NUMBER, OFF(jitter), 0.0, 0, 0, NULL, "0 (off)", ">= 0, < 1",
     "gate input x times U(1-eps, 1+eps) per element (points that run the gate)", NULL},
    {NULL, NULL, 0, 0, 0, 0, 0, NULL, NULL, NULL, NULL, NULL},
};
#undef OFF

const moe_option *moe_route_option_find(const char *key)
{
    for (const moe_option *op = moe_route_options; op->key; op++)
        if (!strcmp(op->key, key))
            return op;
    return NULL;
}

/* Whether name is one of the '|'-separated names in list. */
static int name_in(const char *list, const char *name)
{
    size_t len = strlen(name);
    for (const char *p = list; *p;) {
        size_t n = strcspn(p, "|");
        if (n == len && !strncmp(p, name, n))
            return 1;
        p += n;
        if (*p)
            p++;
    }
    return 0;
}

int moe_route_option_applies(const moe_option *op, const char *router)
{
    return !op->routers || name_in(op->routers, router);
}

int moe_route_option_check(const char *key, const char *router)
{
    const moe_option *op = moe_route_option_find(key);
    if (!op || moe_route_option_applies(op, router))
        return MOE_OK;
    char hint[256];
    snprintf(hint, sizeof hint, "%s applies to: %s", key, op->routers);
    for (char *c = hint; *c; c++)
        if (*c == '|')
            *c = ' ';
    return moe_fail(MOE_EINVAL, hint, "option %s does not apply to router %s", key, router);
}

/* ---- fields by offset ---- */

/* The set flag and the fraction of a decimal option: capacity_factor or capacity_factor_eval. */
typedef struct {
    int *set;
    long long *num, *den;
} decimal_ref;

static decimal_ref decimal_of(moe_route_opts *o, const moe_option *op)
{
    if (op->offset == offsetof(moe_route_opts, cf_eval_set))
        return (decimal_ref){&o->cf_eval_set, &o->cf_eval_num, &o->cf_eval_den};
    return (decimal_ref){&o->cf_set, &o->cf_num, &o->cf_den};
}

static void *field(moe_route_opts *o, const moe_option *op) { return (char *)o + op->offset; }

static const void *cfield(const moe_route_opts *o, const moe_option *op)
{
    return (const char *)o + op->offset;
}

static int get_int(const moe_route_opts *o, const moe_option *op)
{
    int v;
    memcpy(&v, cfield(o, op), sizeof v);
    return v;
}

static long get_long(const moe_route_opts *o, const moe_option *op)
{
    long v;
    memcpy(&v, cfield(o, op), sizeof v);
    return v;
}

static double get_double(const moe_route_opts *o, const moe_option *op)
{
    double v;
    memcpy(&v, cfield(o, op), sizeof v);
    return v;
}

static void put_int(moe_route_opts *o, const moe_option *op, int v)
{
    memcpy(field(o, op), &v, sizeof v);
}

static void put_long(moe_route_opts *o, const moe_option *op, long v)
{
    memcpy(field(o, op), &v, sizeof v);
}

static void put_double(moe_route_opts *o, const moe_option *op, double v)
{
    memcpy(field(o, op), &v, sizeof v);
}

void moe_route_opts_default(moe_route_opts *o)
{
    memset(o, 0, sizeof *o);
    for (const moe_option *op = moe_route_options; op->key; op++) {
        switch (op->kind) {
        case MOE_OPT_INT:
        case MOE_OPT_BOOL:
        case MOE_OPT_ENUM: put_int(o, op, (int)op->def); break;
        case MOE_OPT_LONG: put_long(o, op, (long)op->def); break;
        case MOE_OPT_NUMBER: put_double(o, op, op->def); break;
        case MOE_OPT_DECIMAL: { /* unset; cf = 1 when unset */
            decimal_ref d = decimal_of(o, op);
            *d.set = 0;
            *d.num = *d.den = 1;
            break;
        }
        default: break; /* MOE_OPT_TABLE: no table */
        }
    }
}

/* ---- value parsers ---- */

static int bad(const char *key, const char *value, const char *want)
{
    return moe_fail(MOE_EINVAL, want, "bad value '%s' for option %s", value, key);
}

static int parse_long(const char *key, const char *v, long lo, long hi, long *out)
{
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (!errno && end != v && !*end && x > hi) /* not clamped: refused */
        return moe_fail(MOE_EINVAL, NULL, "bad value '%s' for option %s: want an integer in "
                        "%ld..%ld", v, key, lo, hi);
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
    const moe_option *op = moe_route_option_find(key);
    if (!op)
        return moe_fail(MOE_EINVAL, "`moesim list options` shows the routing options",
                        "unknown routing option '%s'", key);
    long l = 0;
    double d = 0.0;
    int i = 0, rc = MOE_OK;
    switch (op->kind) {
    case MOE_OPT_INT:
        if (!(rc = parse_long(key, v, (long)op->lo, INT_MAX, &l)))
            put_int(o, op, (int)l);
        break;
    case MOE_OPT_LONG:
        if (!(rc = parse_long(key, v, (long)op->lo, LONG_MAX, &l)))
            put_long(o, op, l);
        break;
    case MOE_OPT_NUMBER:
        if (!(rc = parse_num(key, v, op->lo, op->lo_open, &d)) && op->offset == offsetof(moe_route_opts, jitter) &&
            d >= 1.0) /* U(1-eps, 1+eps) must stay positive */
            rc = moe_fail(MOE_EINVAL, NULL, "bad value '%s' for option %s: want a number in "
                          "[0, 1)", v, key);
        if (!rc)
            put_double(o, op, d);
        break;
    case MOE_OPT_BOOL:
        if (!(rc = parse_bool(key, v, &i)))
            put_int(o, op, i);
        break;
    case MOE_OPT_ENUM:
        if (!(rc = parse_enum(key, v, op->values, &i)))
            put_int(o, op, i);
        break;
    case MOE_OPT_DECIMAL: {
        decimal_ref dr = decimal_of(o, op);
        if (!(rc = moe_decimal_parse(v, dr.num, dr.den)))
            *dr.set = 1;
        break;
    }
    default:
        rc = load_hash_table(o, v);
        break;
    }
    return rc;
}

void moe_route_opts_release(moe_route_opts *o)
{
    free((void *)o->hash_table);
    o->hash_table = NULL;
    o->hash_table_len = 0;
}

/* The i-th value of "a|b|c" into buf. */
static const char *enum_name(const char *values, int i, char *buf, size_t len)
{
    const char *p = values;
    for (; i > 0 && p; i--) {
        p = strchr(p, '|');
        if (p)
            p++;
    }
    if (!p)
        p = "?";
    size_t n = strcspn(p, "|");
    snprintf(buf, len, "%.*s", (int)(n < len ? n : len - 1), p);
    return buf;
}

void moe_option_default_text(const moe_option *op, char *def, size_t len)
{
    if (op->def_text)
        snprintf(def, len, "%s", op->def_text);
    else if (op->kind == MOE_OPT_ENUM)
        enum_name(op->values, (int)op->def, def, len);
    else if (op->kind == MOE_OPT_BOOL)
        snprintf(def, len, "%s", op->def != 0 ? "true" : "false");
    else
        snprintf(def, len, "%g", op->def);
}

void moe_option_choices_text(const moe_option *op, char *choices, size_t len)
{
    if (op->choices)
        snprintf(choices, len, "%s", op->choices);
    else if (op->kind == MOE_OPT_ENUM)
        snprintf(choices, len, "%s", op->values);
    else if (op->kind == MOE_OPT_BOOL)
        snprintf(choices, len, "true|false");
    else
        snprintf(choices, len, "%s %g", op->lo_open ? ">" : ">=", op->lo);
}

void moe_route_options_print(FILE *out, int as_flags)
{
    for (const moe_option *op = moe_route_options; op->key; op++) {
        char name[64], def[64], choices[64];
        if (as_flags) {
            snprintf(name, sizeof name, "--%s", op->key);
            for (char *c = name + 2; *c; c++)
                if (*c == '_')
                    *c = '-';
        } else {
            snprintf(name, sizeof name, "%s", op->key);
        }
        moe_option_default_text(op, def, sizeof def);
        moe_option_choices_text(op, choices, sizeof choices);
        fprintf(out, "  %-20s %-8s default %-14s %s (%s)", name, op->type, def, op->help,
                choices);
        if (op->routers) { /* "; routers: topk switch" */
            fputs("; routers: ", out);
            for (const char *p = op->routers; *p; p++)
                fputc(*p == '|' ? ' ' : *p, out);
        }
        fputc('\n', out);
    }
}

/* Append " key=value" (no space first) for op when o differs from the default; *n grows by
 * what the value needs even when buf is too small. */
static int describe_one(const moe_route_opts *o, const moe_option *op, char *buf, size_t len,
                        size_t *n)
{
    char v[64];
    v[0] = '\0';
    switch (op->kind) {
    case MOE_OPT_INT:
    case MOE_OPT_BOOL:
    case MOE_OPT_ENUM: {
        int x = get_int(o, op);
        if (x == (int)op->def)
            return MOE_OK;
        if (op->kind == MOE_OPT_INT)
            snprintf(v, sizeof v, "%d", x);
        else if (op->kind == MOE_OPT_BOOL)
            snprintf(v, sizeof v, "%s", x ? "true" : "false");
        else
            enum_name(op->values, x, v, sizeof v);
        break;
    }
    case MOE_OPT_LONG:
        if (get_long(o, op) == (long)op->def)
            return MOE_OK;
        snprintf(v, sizeof v, "%ld", get_long(o, op));
        break;
    case MOE_OPT_NUMBER:
        if (get_double(o, op) == op->def)
            return MOE_OK;
        snprintf(v, sizeof v, "%.17g", get_double(o, op));
        break;
    case MOE_OPT_DECIMAL: {
        moe_route_opts c = *o; /* decimal_of points into a copy: o stays const */
        decimal_ref dr = decimal_of(&c, op);
        if (!*dr.set)
            return MOE_OK;
        snprintf(v, sizeof v, "%lld/%lld", *dr.num, *dr.den);
        break;
    }
    default: /* the table is described by its length; the spec adds its path */
        if (!o->hash_table)
            return MOE_OK;
        snprintf(v, sizeof v, "%zu", o->hash_table_len);
        break;
    }
    int w = snprintf(buf + *n, *n < len ? len - *n : 0, "%s%s%s=%s", *n ? " " : "", op->key,
                     op->kind == MOE_OPT_TABLE ? "_len" : "", v);
    if (w < 0)
        return moe_fail(MOE_EINVAL, NULL, "cannot describe routing options");
    *n += (size_t)w;
    return MOE_OK;
}

int moe_route_opts_describe(const moe_route_opts *o, char *buf, size_t len)
{
    size_t n = 0;
    if (len)
        buf[0] = '\0';
    for (const moe_option *op = moe_route_options; op->key; op++) {
        int rc = describe_one(o, op, buf, len, &n);
        if (rc)
            return rc;
    }
    if (n >= len)
        return moe_fail(MOE_EINVAL, NULL, "routing options too long to describe");
    return MOE_OK;
}

void moe_route_opts_effective(const moe_route_opts *o, moe_route_opts *out)
{
    *out = *o;
    if (o->mode != MOE_MODE_EVAL)
        return;
    if (o->cf_eval_set) {
        out->cf_set = 1;
        out->cf_num = o->cf_eval_num;
        out->cf_den = o->cf_eval_den;
    }
    out->noise_std = 0.0;
    out->jitter = 0.0;
    out->select = MOE_SELECT_ARGMAX;
    if (out->second_policy == MOE_SECOND_SAMPLING)
        out->second_policy = MOE_SECOND_ALL;
}
