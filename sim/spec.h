/* spec.h: experiment specs (INI files in experiments/, read with libinih) and their expansion
 * into sweep points. The format is documented at the top of sim/spec.c and in
 * experiments/default.ini.
 */
#ifndef MOE_SPEC_H
#define MOE_SPEC_H

#include "point.h"

#include <stddef.h>

typedef struct moe_spec moe_spec;

/* Parse `path`, apply the overrides sets[0..nsets) ("section.key=value", later ones win),
 * check every key and value, and expand the sweep. Errors name the file, line and key:
 * "<what> (<file>:<line>, key <section>.<key>)"; overrides are located as "--set:<i>" (i counts
 * from 1). On error *out is NULL. */
int moe_spec_load(const char *path, const char *const *sets, int nsets, moe_spec **out);
void moe_spec_free(moe_spec *s); /* NULL is a no-op */

/* Check every point before anything runs: allocate its router (and dropless twin) and open its
 * source (once per distinct source configuration), checking the source's fixed expert count. */
int moe_spec_check(const moe_spec *s);

const char *moe_spec_name(const moe_spec *s);     /* [experiment] name, or the file's stem */
size_t moe_spec_npoints(const moe_spec *s);
const moe_point *moe_spec_point(const moe_spec *s, size_t i);

#endif
