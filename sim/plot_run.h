/* plot_run.h: running gnuplot for `moesim plot` (plot.h): found on PATH, started with fork/exec
 * (no shell), stdin and stdout on /dev/null, its stderr collected. */
#ifndef MOE_PLOT_RUN_H
#define MOE_PLOT_RUN_H

#include "moe.h"

#include <sys/types.h>

/* The gnuplot executable on PATH (malloc'd), or NULL with moe_fail (MOE_EIO, MOE_ENOMEM). */
char *moe_plot_find_gnuplot(void);

/* Drawing one output in two steps, so that several gnuplots run at once. _start runs
 * `gnuplot -e vars script`, which writes o's temporary through /dev/fd/N (named in vars by the
 * caller); on failure o is discarded. _finish collects it: on success (exit 0 and a non-empty
 * output) o is committed to its path and gnuplot's warnings are echoed on stderr; otherwise o is
 * discarded and MOE_EIO returned through moe_fail with gnuplot's last line of stderr. _finish
 * does nothing for a job whose start failed. Every started job must be finished or cancelled. */
typedef struct {
    moe_outfile *o; /* NULL once finished or if the start failed */
    pid_t pid;
    int fd;         /* gnuplot's stderr */
} moe_plot_job;
int moe_plot_draw_start(const char *gnuplot, const char *script, const char *vars,
                        moe_outfile *o, moe_plot_job *j);
int moe_plot_draw_finish(const char *gnuplot, const char *script, moe_plot_job *j);
/* Stop a started job (after another failed): gnuplot is terminated and waited for, o discarded,
 * no error recorded. Does nothing for a finished job. */
void moe_plot_draw_cancel(moe_plot_job *j);

#endif
