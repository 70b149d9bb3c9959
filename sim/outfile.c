/* outfile.c: every file moesim writes (plan CSV, metrics JSON, .npy, recorded metrics) goes
 * through here: written under "<path>.tmp.<pid>" and renamed over path only when complete, so no
 * failure (a full disk included) leaves a partial file; on failure the temporary is removed and
 * an earlier file at path stays as it was. */
#include "moe.h"

#include <errno.h>
#include <string.h>
#include <unistd.h>

int moe_outfile_open(moe_outfile *o, const char *path, const char *what, const char *mode)
{
    o->f = NULL;
    o->path = path;
    o->what = what;
    if (snprintf(o->tmp, sizeof o->tmp, "%s.tmp.%ld", path, (long)getpid()) >=
        (int)sizeof o->tmp)
        return moe_fail(MOE_EIO, NULL, "path too long (%s)", path);
    o->f = fopen(o->tmp, mode);
    if (!o->f)
        return moe_fail(MOE_EIO, "check that the folder exists and is writable",
                        "cannot write %s: %s (%s)", what, strerror(errno), path);
    errno = 0; /* so a failed write below is told apart from an earlier errno */
    return MOE_OK;
}

int moe_outfile_commit(moe_outfile *o, int bad)
{
    int err = bad ? errno : 0;
    if (fclose(o->f) != 0 && !bad) {
        bad = 1;
        err = errno;
    }
    o->f = NULL;
    if (!bad && rename(o->tmp, o->path) != 0) {
        bad = 1;
        err = errno;
    }
    if (!bad)
        return MOE_OK;
    unlink(o->tmp);
    return moe_fail(MOE_EIO, "check free space and permissions", "cannot write %s: %s (%s)",
                    o->what, strerror(err ? err : EIO), o->path);
}
