/* options.h: the one table of routing options. Each row names a field of moe_route_opts (by
 * offset), its type, default, bounds and help; the table drives the defaults
 * (moe_route_opts_default), `moesim route` flags (--capacity-factor is key capacity_factor),
 * spec keys in router sections and `--set router.NAME.key=value` overrides (moe_route_opts_set),
 * validation, the routers an option applies to (moe_route_option_check: an option given
 * explicitly for a router it does not apply to is an error), --help and `moesim list options`
 * (moe_route_options_print), and the canonical text
 * stored with every sweep point (moe_route_opts_describe). Adding an option is one row here and
 * one field in moe_route_opts. */
#ifndef MOE_OPTIONS_H
#define MOE_OPTIONS_H

#include "moe.h"
#include <stdio.h>

/* How a row's field is stored, parsed and described. */
enum moe_option_kind {
    MOE_OPT_INT,    /* int field, integer >= lo (values above INT_MAX are clamped to INT_MAX) */
    MOE_OPT_LONG,   /* long field, integer >= lo */
    MOE_OPT_NUMBER, /* double field, finite, >= lo (> lo when lo_open) */
    MOE_OPT_BOOL,   /* int field 0/1: true|1|yes, false|0|no */
    MOE_OPT_ENUM,   /* int field: index of the value in `values` ("a|b|c") */
    MOE_OPT_DECIMAL, /* the exact capacity factor: cf_set, cf_num/cf_den */
    MOE_OPT_TABLE   /* a .npy path of int64 loaded into hash_table, hash_table_len */
};

typedef struct {
    const char *key;    /* spec key, e.g. "capacity_factor"; flag is --capacity-factor */
    const char *type;   /* shown in --help: "int", "decimal", "number", "bool", "enum", "path" */
    int kind;           /* enum moe_option_kind */
    size_t offset;      /* offsetof(moe_route_opts, field) */
    double def;         /* default value (enum: index in values; bool: 0 or 1) */
    double lo;          /* lower bound of INT, LONG and NUMBER */
    int lo_open;        /* NUMBER: the bound is exclusive */
    const char *values; /* ENUM: "a|b|c" */
    const char *def_text; /* default as shown in --help; NULL = from def */
    const char *choices;  /* allowed values as shown in --help; NULL = from the bounds */
    const char *help;
    const char *routers;  /* the routers it applies to, "topk|switch"; NULL = every router */
} moe_option;

extern const moe_option moe_route_options[]; /* terminated by key == NULL */

/* The row of key, or NULL. */
const moe_option *moe_route_option_find(const char *key);
/* Whether op applies to the router type named router. */
int moe_route_option_applies(const moe_option *op, const char *router);
/* MOE_OK when option key (given explicitly) applies to router, else MOE_EINVAL "option K does
 * not apply to router R" with the routers it applies to as the hint. Unknown keys pass (the
 * setter reports them). */
int moe_route_option_check(const char *key, const char *router);
/* Set one routing option from text. Unknown key, bad value: MOE_EINVAL naming key and value.
 * hash_table is a path: the table is loaded from .npy and owned by the caller through
 * moe_route_opts_release. */
int moe_route_opts_set(moe_route_opts *o, const char *key, const char *value);
/* Free what moe_route_opts_set allocated (the hash table). */
void moe_route_opts_release(moe_route_opts *o);
/* The default and the allowed values of op as `--help` shows them. */
void moe_option_default_text(const moe_option *op, char *def, size_t len);
void moe_option_choices_text(const moe_option *op, char *choices, size_t len);
/* Print the option table (for --help and `moesim list options`). */
void moe_route_options_print(FILE *out, int as_flags);
/* Canonical text of a routing option set, "k=2 capacity_factor=1.25 ..." (only non-defaults,
 * in table order), used as part of a sweep point's configuration key. */
int moe_route_opts_describe(const moe_route_opts *o, char *buf, size_t len);

#endif
