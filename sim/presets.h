/* presets.h: named presets, each reproducing one library's default router: a router type and a
 * list of routing option assignments kept as text ("key = value"), set through the option
 * table of options.c (so no value is typed twice), plus the public file it was read from.
 * `moesim route --preset NAME`, the spec key `preset` of a router section, `moesim list
 * presets` and the Python binding use it. Options given explicitly override a preset's. */
#ifndef MOE_PRESETS_H
#define MOE_PRESETS_H

#include "moe.h"
#include <stdio.h>

#define MOE_PRESET_MAX_SET 12

typedef struct {
    const char *name;   /* "deepspeed_top2" */
    const char *router; /* router type, "gshard" */
    const char *set[MOE_PRESET_MAX_SET]; /* "key = value" assignments, NULL-terminated */
    const char *source; /* the library's public file and function it reproduces */
} moe_preset;

extern const moe_preset moe_presets[]; /* terminated by name == NULL */

/* The preset called name, or NULL. */
const moe_preset *moe_preset_find(const char *name);
/* The preset called name, or MOE_EINVAL "unknown preset 'NAME'" (where: the caller's). */
int moe_preset_lookup(const char *name, const moe_preset **out);
/* Set the preset's assignments on o (through moe_route_opts_set), in table order, skipping a
 * key when skip is non-NULL and skip(key, ctx) is true (options given explicitly). An
 * assignment the option table rejects is MOE_EINVAL naming the preset and the assignment. */
int moe_preset_apply(const moe_preset *p, moe_route_opts *o,
                     int (*skip)(const char *key, void *ctx), void *ctx);
/* `moesim list presets`: each preset with its router, assignments and source. */
void moe_presets_print(FILE *out);

#endif
