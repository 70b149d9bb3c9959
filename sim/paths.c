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

/* Folders above the binary that may be the top of its source tree: ./moesim, build/moesim and
 * build/tests/test_x sit 0, 1 and 2 levels below it. */
#define TREE_LEVELS 3

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

/* The moesim source tree holding the binary, into dir: the first of the binary's folder and
 * the TREE_LEVELS - 1 folders above it that holds sim/main.c. 0 if there is none. */
static int source_tree(char *dir, size_t len)
{
    char d[PATH_MAX];
    if (!exe_dir(d, sizeof d))
        return 0;
    for (int level = 0; level < TREE_LEVELS; level++) {
        char p[PATH_MAX + 16];
        if (snprintf(p, sizeof p, "%s/sim/main.c", d) < (int)sizeof p && exists(p))
            return snprintf(dir, len, "%s", d) < (int)len;
        char *slash = strrchr(d, '/');
        if (!slash || slash == d)
            return 0;
        *slash = '\0';
    }
    return 0;
}

/* The folders searched for shipped files, in order; returns how many (at most 2). */
static int data_roots(char roots[2][PATH_MAX])
{
    const char *env = getenv("MOESIM_DATA");
    if (env && *env)
        return snprintf(roots[0], PATH_MAX, "%s", env) < PATH_MAX;
    int n = source_tree(roots[0], PATH_MAX);
    if (MOESIM_DATADIR[0] && snprintf(roots[n], PATH_MAX, "%s", MOESIM_DATADIR) < PATH_MAX)
        n++;
    return n;
}

int moe_data_path(const char *rel, char *out, size_t len)
{
    char roots[2][PATH_MAX];
    int n = data_roots(roots);
    char looked[2 * PATH_MAX + 600] = "";
    if (len)
        snprintf(out, len, "%s", rel);
    for (int i = 0; i < n; i++) {
        char p[PATH_MAX + 512];
        if (snprintf(p, sizeof p, "%s/%s", roots[i], rel) >= (int)sizeof p)
            continue;
        if (i == 0 && len)
            snprintf(out, len, "%s", p);
        if (exists(p))
            return snprintf(out, len, "%s", p) < (int)len
                       ? MOE_OK
                       : moe_fail(MOE_EIO, NULL, "path too long (%s)", p);
        size_t l = strlen(looked);
        if (snprintf(looked + l, sizeof looked - l, "%s%s", i ? ", " : "", p) < 0)
            break;
    }
    const char *env = getenv("MOESIM_DATA");
    if (env && *env)
        return moe_fail(MOE_EIO,
                        "MOESIM_DATA must name moesim's data folder (the one holding plots/ and "
                        "experiments/data/), or be unset",
                        "%s not found (looked in %s)", rel, looked);
    const char *hint = "install moesim with `make install PREFIX=...`, or set MOESIM_DATA to "
                       "the folder holding plots/ and experiments/data/";
    if (!n)
        return moe_fail(MOE_EIO, hint,
                        "%s not found (nowhere to look: the binary is in no moesim source tree "
                        "and was not installed by make install)",
                        rel);
    return moe_fail(MOE_EIO, hint, "%s not found (looked in %s)", rel, looked);
}

static char trace_root[PATH_MAX + 64];
static char trace_hint[2 * PATH_MAX];

const char *moe_trace_root(void)
{
    const char *e = getenv("MOESIM_TRACES");
    if (e && *e)
        return e;
    char tree[PATH_MAX];
    if (source_tree(tree, sizeof tree) &&
        snprintf(trace_root, sizeof trace_root, "%s/../shared/data/traces", tree) <
            (int)sizeof trace_root)
        return trace_root;
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
