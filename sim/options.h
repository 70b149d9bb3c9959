/* options.h: the one table of routing options (name, type, default, allowed values, help) that
 * drives `moesim route` flags (--capacity-factor is key capacity_factor), spec keys in router
 * sections, `--set router.NAME.key=value` overrides, validation and --help. */
#ifndef MOE_OPTIONS_H
#define MOE_OPTIONS_H

#include "moe.h"
#include <stdio.h>

typedef struct {
    const char *key;     /* spec key, e.g. "capacity_factor"; flag is --capacity-factor */
    const char *type;    /* "int", "decimal", "number", "bool", "enum", "path" */
    const char *def;     /* default as text */
    const char *choices; /* enum values "a|b|c", or bounds text, or NULL */
    const char *help;
} moe_option;

extern const moe_option moe_route_options[]; /* terminated by key == NULL */

/* Set one routing option from text. Unknown key, bad value: MOE_EINVAL naming key and value.
 * hash_table is a path: the table is loaded from .npy and owned by the caller through
 * moe_route_opts_release. */
int moe_route_opts_set(moe_route_opts *o, const char *key, const char *value);
/* Free what moe_route_opts_set allocated (the hash table). */
void moe_route_opts_release(moe_route_opts *o);
/* Print the option table (for --help and `moesim list options`). */
void moe_route_options_print(FILE *out, int as_flags);
/* Canonical text of a routing option set, "k=2 capacity_factor=1.25 ..." (only non-defaults),
 * used as part of a sweep point's configuration key. */
int moe_route_opts_describe(const moe_route_opts *o, char *buf, size_t len);

#endif
