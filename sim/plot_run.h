/* plot_run.h: running gnuplot for `moesim plot` (plot.h): found on PATH, started with fork/exec
 * (no shell), stdin and stdout on /dev/null, its stderr collected. */
#ifndef MOE_PLOT_RUN_H
#define MOE_PLOT_RUN_H

#include "moe.h"

/* The gnuplot executable on PATH (malloc'd), or NULL with moe_fail (MOE_EIO, MOE_ENOMEM). */
char *moe_plot_find_gnuplot(void);

/* Run `gnuplot -e vars script`, which writes o's temporary through /dev/fd/N (named in vars by
 * the caller). Success (exit 0 and a non-empty output): o is committed to its path and gnuplot's
 * warnings are echoed on stderr. Otherwise o is discarded and MOE_EIO returned through moe_fail
 * with gnuplot's last line of stderr. */
int moe_plot_draw(const char *gnuplot, const char *script, const char *vars, moe_outfile *o);

#endif
