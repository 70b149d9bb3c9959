/* paths.h: where moesim finds the files it ships (the gnuplot scripts in plots/, the data in
 * experiments/data/) and the recorded traces, whatever the working directory.
 *
 * Shipped files are looked up, in this order, in
 *   1. $MOESIM_DATA, when set and not empty (then nowhere else);
 *   2. the moesim source tree holding the binary: the first of the binary's folder (./moesim),
 *      its parent (build/moesim) and grandparent (build/tests/test_x) that holds sim/main.c;
 *   3. the installed data folder compiled in by `make install PREFIX=...` (MOESIM_DATADIR,
 *      PREFIX/share/moesim).
 * Recorded traces: $MOESIM_TRACES, else ../shared/data/traces beside that source tree, else
 * ../shared/data/traces from the working directory. */
#ifndef MOE_PATHS_H
#define MOE_PATHS_H

#include <stddef.h>

/* Write the path of rel (e.g. "plots", "experiments/data/x.json") into out (len bytes).
 * Returns MOE_OK when it exists; otherwise out holds the first place looked in and the error
 * (MOE_EIO, through moe_fail) names every place looked in. */
int moe_data_path(const char *rel, char *out, size_t len);

/* The folder of the recorded traces (a static buffer): see above. */
const char *moe_trace_root(void);

/* The hint for a trace that cannot be found (a static buffer): where the trace folder was
 * looked for and how to point moesim at it. */
const char *moe_trace_hint(void);

/* The installed data folder compiled in (MOESIM_DATADIR), or "" when none was. */
const char *moe_data_dir_installed(void);

#endif
