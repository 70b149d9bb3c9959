/* outfile.c: every file moesim writes (plan CSV, metrics JSON, .npy, recorded metrics, chart data
 * and images) goes through here, and the inputs those outputs must never replace are noted here.
 *
 * An output is written into a temporary file that mkstemp creates in the target folder
 * ("<path>.tmp.XXXXXX": O_CREAT|O_EXCL, a fresh random name, so a planted file or symlink can
 * neither be written through nor guessed) and renamed over path only when complete: no failure
 * (a full disk included) leaves a partial file, and an earlier file at path stays as it was.
 * The output path itself must be a regular file or not exist: a symlink, FIFO, device node,
 * socket or folder is refused before anything is written (rename would replace it, a plain open
 * would write through it), and so is a file that this process read as an input (same device and
 * inode, so hard links and other spellings of the path count, and same inode change time). Temporaries still open are
 * listed so that a signal handler can remove them (moe_outfile_remove_temps). */
#include "moe.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- inputs: every file noted by moe_outfile_note_input ---- */

/* Device and inode name the file; the inode change time tells it from a later file that reuses
 * the inode number of a deleted input (a library user may read, delete and write again). */
typedef struct {
    dev_t dev;
    ino_t ino;
    struct timespec ctim;
} file_id;

static int same_file(const file_id *f, const struct stat *sb)
{
    return f->dev == sb->st_dev && f->ino == sb->st_ino && f->ctim.tv_sec == sb->st_ctim.tv_sec &&
           f->ctim.tv_nsec == sb->st_ctim.tv_nsec;
}

static file_id *inputs;
static size_t ninputs, capinputs;

int moe_outfile_note_input(const char *path)
{
    struct stat sb;
    if (stat(path, &sb) != 0)
        return MOE_OK; /* the reader reports the missing file itself */
    for (size_t i = 0; i < ninputs; i++)
        if (same_file(&inputs[i], &sb))
            return MOE_OK;
    if (ninputs == capinputs) {
        size_t cap = capinputs ? 2 * capinputs : 16;
        file_id *v = realloc(inputs, cap * sizeof *v);
        if (!v)
            return moe_fail(MOE_ENOMEM, NULL, "out of memory (%s)", path);
        inputs = v;
        capinputs = cap;
    }
    inputs[ninputs++] = (file_id){sb.st_dev, sb.st_ino, sb.st_ctim};
    return MOE_OK;
}

/* ---- temporaries still open, for moe_outfile_remove_temps ---- */

enum { MAXLIVE = 8 };
static char *volatile live[MAXLIVE];

static void live_set(char *tmp, int on)
{
    for (int i = 0; i < MAXLIVE; i++)
        if (on ? live[i] == NULL : live[i] == tmp) {
            live[i] = on ? tmp : NULL;
            return;
        }
}

void moe_outfile_remove_temps(void)
{
    for (int i = 0; i < MAXLIVE; i++) {
        char *t = live[i];
        if (t)
            unlink(t); /* async-signal-safe */
    }
}

/* ---- the checks of an output path ---- */

static const char *kind_of(mode_t m)
{
    return S_ISLNK(m)    ? "a symbolic link"
           : S_ISFIFO(m) ? "a FIFO"
           : S_ISCHR(m)  ? "a character device"
           : S_ISBLK(m)  ? "a block device"
           : S_ISSOCK(m) ? "a socket"
           : S_ISDIR(m)  ? "a folder"
                         : "not a regular file";
}

int moe_outfile_check(const char *path, const char *what)
{
    struct stat sb;
    if (lstat(path, &sb) != 0)
        return MOE_OK; /* a new file (or an unreachable one: the open reports it) */
    if (!S_ISREG(sb.st_mode))
        return moe_fail(MOE_EIO, "give the path of a regular file, or of a new one",
                        "cannot write %s: the path is %s (%s)", what, kind_of(sb.st_mode), path);
    for (size_t i = 0; i < ninputs; i++)
        if (same_file(&inputs[i], &sb))
            return moe_fail(MOE_EINVAL, "give each output a path of its own",
                            "cannot write %s over an input of this command (%s)", what, path);
    return MOE_OK;
}

/* ---- open and commit ---- */

int moe_outfile_open(moe_outfile *o, const char *path, const char *what, const char *mode)
{
    o->f = NULL;
    o->path = path;
    o->what = what;
    o->tmp[0] = '\0';
    int rc = moe_outfile_check(path, what);
    if (rc)
        return rc;
    char tmp[sizeof o->tmp];
    if (snprintf(tmp, sizeof tmp, "%s.tmp.XXXXXX", path) >= (int)sizeof tmp)
        return moe_fail(MOE_EIO, NULL, "path too long (%s)", path);
    int fd = mkstemp(tmp); /* O_RDWR|O_CREAT|O_EXCL, mode 0600 */
    if (fd < 0)
        return moe_fail(MOE_EIO, "check that the folder exists and is writable",
                        "cannot write %s: %s (%s)", what, strerror(errno), path);
    memcpy(o->tmp, tmp, sizeof tmp);
    live_set(o->tmp, 1);
    mode_t mask = umask(0); /* the mode a plain fopen would have given: 0666 & ~umask */
    umask(mask);
    if (fchmod(fd, 0666 & ~mask) != 0 || !(o->f = fdopen(fd, mode))) {
        int e = errno;
        close(fd);
        unlink(o->tmp);
        live_set(o->tmp, 0);
        return moe_fail(MOE_EIO, NULL, "cannot write %s: %s (%s)", what, strerror(e), path);
    }
    errno = 0; /* so a failed write below is told apart from an earlier errno */
    return MOE_OK;
}

void moe_outfile_discard(moe_outfile *o)
{
    if (o->f)
        fclose(o->f);
    o->f = NULL;
    unlink(o->tmp);
    live_set(o->tmp, 0);
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
    if (bad)
        unlink(o->tmp);
    live_set(o->tmp, 0);
    if (!bad)
        return MOE_OK;
    return moe_fail(MOE_EIO, "check free space and permissions", "cannot write %s: %s (%s)",
                    o->what, strerror(err ? err : EIO), o->path);
}
