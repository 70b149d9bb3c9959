/* paths.c: the search for moesim's shipped files and its recorded traces (paths.h). */
#include "paths.h"

#include "moe.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#ifndef MOESIM_DATADIR
#define MOESIM_DATADIR ""
#endif

#ifndef PATH_MAX
#define PATH_MAX 4096
#endif

const char *moe_data_dir_installed(void) { return MOESIM_DATADIR; }

static int exists(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0;
}

/* The folder of the running binary (resolved, no trailing slash) into dir; 0 if unknown. */
static int exe_dir(char *dir, size_t len)
{
    char buf[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", buf, sizeof buf - 1);
    if (n <= 0 || (size_t)n >= sizeof buf - 1)
        return 0;
    buf[n] = '\0';
    char *slash = strrchr(buf, '/');
    if (!slash)
        return 0;
    *slash = '\0';
    return snprintf(dir, len, "%s", buf[0] ? buf : "/") < (int)len;
}

/* The candidate folders of the shipped files, in search order; returns how many (at most 3). */
static int data_roots(char roots[3][PATH_MAX])
{
    const char *env = getenv("MOESIM_DATA");
    if (env && *env) {
        snprintf(roots[0], PATH_MAX, "%s", env);
        return 1;
    }
    int n = 0;
    char dir[PATH_MAX];
    if (exe_dir(dir, sizeof dir)) {
        snprintf(roots[n++], PATH_MAX, "%s", dir);
        char *slash = strrchr(dir, '/');
        if (slash && slash != dir) {
            *slash = '\0';
            snprintf(roots[n++], PATH_MAX, "%s", dir);
        }
    }
    if (MOESIM_DATADIR[0])
        snprintf(roots[n++], PATH_MAX, "%s", MOESIM_DATADIR);
    return n;
}

int moe_data_path(const char *rel, char *out, size_t len)
{
    char roots[3][PATH_MAX];
    int n = data_roots(roots);
    if (len)
        snprintf(out, len, "%s", rel);
    for (int i = 0; i < n; i++) {
        char p[PATH_MAX + 256];
        snprintf(p, sizeof p, "%s/%s", roots[i], rel);
        if (i == 0 && len)
            snprintf(out, len, "%s", p);
        if (exists(p)) {
            if (snprintf(out, len, "%s", p) >= (int)len)
                return moe_fail(MOE_EIO, NULL, "path too long (%s)", p);
            return MOE_OK;
        }
    }
    char looked[1024] = "";
    for (int i = 0; i < n; i++) {
        size_t l = strlen(looked);
        if (snprintf(looked + l, sizeof looked - l, "%s%s/%s", i ? ", " : "", roots[i], rel) < 0)
            break;
    }
    const int env = getenv("MOESIM_DATA") && *getenv("MOESIM_DATA");
    return moe_fail(MOE_EIO,
                    env ? "MOESIM_DATA must name moesim's data folder (the one holding plots/ and "
                          "experiments/data/), or be unset"
                        : "install moesim with `make install PREFIX=...`, or set MOESIM_DATA to "
                          "the folder holding plots/ and experiments/data/",
                    "%s not found (looked in %s)", rel, 
                    n ? looked : "nowhere: the binary's folder is unknown");
}

static char trace_root[PATH_MAX + 64];
static char trace_hint[2 * PATH_MAX];

const char *moe_trace_root(void)
{
    const char *e = getenv("MOESIM_TRACES");
    if (e && *e)
        return e;
    /* the source tree holding the binary: the first candidate folder holding sim/main.c */
    char roots[3][PATH_MAX];
    int n = getenv("MOESIM_DATA") && *getenv("MOESIM_DATA") ? 0 : data_roots(roots);
    for (int i = 0; i < n; i++) {
        char p[PATH_MAX + 32];
        if (snprintf(p, sizeof p, "%s/sim/main.c", roots[i]) < (int)sizeof p && exists(p) &&
            snprintf(trace_root, sizeof trace_root, "%s/../shared/data/traces", roots[i]) <
                (int)sizeof trace_root)
            return trace_root;
    }
    return "../shared/data/traces";
}

const char *moe_trace_hint(void)
{
    const char *e = getenv("MOESIM_TRACES");
    if (e && *e)
        snprintf(trace_hint, sizeof trace_hint,
                 "the traces were looked for under MOESIM_TRACES=%s; set it to the folder holding "
                 "the trace folders (docs/traces.md), or give the file or folder as path",
                 e);
    else
        snprintf(trace_hint, sizeof trace_hint,
                 "MOESIM_TRACES is unset, so the traces were looked for under %s; set "
                 "MOESIM_TRACES to the folder holding the trace folders (docs/traces.md), or "
                 "give the file or folder as path",
                 moe_trace_root());
    return trace_hint;
}
