/* plot_run.c: running gnuplot for `moesim plot` (plot_run.h): finding it on PATH, starting it
 * with fork/exec (no shell) and turning its exit status and stderr into a committed or discarded
 * output file. */
#include "plot_run.h"

#include "moe.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

/* The gnuplot executable on PATH (malloc'd), or NULL with moe_fail. */
char *moe_plot_find_gnuplot(void)
{
    const char *path = getenv("PATH");
    if (path) {
        const char *p = path;
        for (;;) {
            const char *end = strchr(p, ':');
            size_t len = end ? (size_t)(end - p) : strlen(p);
            char *cand = malloc(len + 10);
            if (!cand) {
                moe_fail(MOE_ENOMEM, NULL, "out of memory (moesim plot)");
                return NULL;
            }
            if (len) /* an empty entry is the working directory */
                snprintf(cand, len + 10, "%.*s/gnuplot", (int)len, p);
            else
                snprintf(cand, len + 10, "./gnuplot");
            struct stat sb;
            if (stat(cand, &sb) == 0 && S_ISREG(sb.st_mode) && access(cand, X_OK) == 0)
                return cand;
            free(cand);
            if (!end)
                break;
            p = end + 1;
        }
    }
    moe_fail(MOE_EIO, "install gnuplot-nox (make deps)", "gnuplot not found on PATH (%s)",
             path ? path : "PATH unset");
    return NULL;
}

/* Last non-empty line of s, trimmed (points into s, which it modifies). */
static const char *last_line(char *s)
{
    size_t n = strlen(s);
    while (n && (s[n - 1] == '\n' || s[n - 1] == ' ' || s[n - 1] == '\r'))
        s[--n] = '\0';
    char *nl = strrchr(s, '\n');
    return nl ? nl + 1 : s;
}

/* Start gnuplot -e VARS SCRIPT, stdin and stdout on /dev/null, its stderr on a pipe (*fd, the
 * read end). Both ends of the pipe are closed on exec, so a gnuplot started later does not
 * hold this one's pipe open (the child's stderr is a dup, which exec keeps). */
static int spawn_start(const char *gnuplot, const char *vars, const char *script, pid_t *pid,
                       int *fd_out)
{
    int fd[2];
    if (pipe(fd) != 0)
        return moe_fail(MOE_EIO, NULL, "cannot create a pipe: %s (gnuplot)", strerror(errno));
    fcntl(fd[0], F_SETFD, FD_CLOEXEC);
    fcntl(fd[1], F_SETFD, FD_CLOEXEC);
    fflush(NULL);
    *pid = fork();
    if (*pid < 0) {
        int e = errno;
        close(fd[0]);
        close(fd[1]);
        return moe_fail(MOE_EIO, NULL, "cannot start gnuplot: %s (%s)", strerror(e), gnuplot);
    }
    if (*pid == 0) {
        int nul = open("/dev/null", O_RDWR);
        if (nul >= 0) {
            dup2(nul, 0);
            dup2(nul, 1);
        }
        dup2(fd[1], 2);
        char *const argv[] = {(char *)"gnuplot", (char *)"-e", (char *)vars, (char *)script,
                              NULL};
        execv(gnuplot, argv);
        _exit(127);
    }
    close(fd[1]);
    *fd_out = fd[0];
    return MOE_OK;
}

/* Collect a started gnuplot: its stderr until the end in *err (malloc'd, may be empty), then
 * its exit. *status: the exit status, or -1 when it did not exit normally. Closes fd. */
static int spawn_finish(const char *gnuplot, pid_t pid, int fd, char **err, int *status)
{
    *err = NULL;
    *status = -1;
    size_t len = 0, cap = 4096;
    char *buf = malloc(cap);
    char chunk[4096];
    ssize_t got;
    while ((got = read(fd, chunk, sizeof chunk)) != 0) {
        if (got < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        if (buf && len + (size_t)got + 1 > cap && len < (1u << 20)) {
            while (len + (size_t)got + 1 > cap)
                cap *= 2;
            char *nb = realloc(buf, cap);
            if (!nb) {
                free(buf);
                buf = NULL;
            } else {
                buf = nb;
            }
        }
        if (buf && len + (size_t)got + 1 <= cap) {
            memcpy(buf + len, chunk, (size_t)got);
            len += (size_t)got;
        }
    }
    close(fd);
    int ws;
    while (waitpid(pid, &ws, 0) < 0) {
        if (errno != EINTR) {
            free(buf);
            return moe_fail(MOE_EIO, NULL, "cannot wait for gnuplot: %s (%s)", strerror(errno),
                            gnuplot);
        }
    }
    if (!buf)
        return moe_fail(MOE_ENOMEM, NULL, "out of memory (gnuplot output)");
    buf[len] = '\0';
    *err = buf;
    *status = WIFEXITED(ws) ? WEXITSTATUS(ws) : -1;
    return MOE_OK;
}

int moe_plot_draw_start(const char *gnuplot, const char *script, const char *vars,
                        moe_outfile *o, moe_plot_job *j)
{
    j->o = o;
    j->fd = -1;
    int rc = spawn_start(gnuplot, vars, script, &j->pid, &j->fd);
    if (rc) {
        moe_outfile_discard(o);
        j->o = NULL;
    }
    return rc;
}

int moe_plot_draw_finish(const char *gnuplot, const char *script, moe_plot_job *j)
{
    moe_outfile *o = j->o;
    if (!o)
        return MOE_OK;
    j->o = NULL;
    char *err = NULL;
    int status;
    int rc = spawn_finish(gnuplot, j->pid, j->fd, &err, &status);
    if (rc) {
        moe_outfile_discard(o);
        return rc;
    }
    struct stat sb;
    int ok = status == 0 && fstat(fileno(o->f), &sb) == 0 && sb.st_size > 0;
    if (!ok) {
        moe_outfile_discard(o);
        const char *why = *err ? last_line(err)
                          : status == 127 ? "could not run gnuplot"
                          : status < 0    ? "gnuplot was killed"
                                          : "no output written";
        rc = moe_fail(MOE_EIO, "check the script and the data file next to the chart",
                      "gnuplot failed on %s: %s (%s)", script, why, o->path);
        free(err);
        return rc;
    }
    if (*err) { /* warnings: the chart is drawn, but say so */
        char *s = err, *nl;
        while (*s) {
            nl = strchr(s, '\n');
            if (nl)
                *nl = '\0';
            if (*s)
                fprintf(stderr, "moesim: gnuplot (%s): %s\n", script, s);
            if (!nl)
                break;
            s = nl + 1;
        }
    }
    free(err);
    return moe_outfile_commit(o, 0);
}

void moe_plot_draw_cancel(moe_plot_job *j)
{
    if (!j->o)
        return;
    kill(j->pid, SIGTERM);
    close(j->fd);
    while (waitpid(j->pid, NULL, 0) < 0 && errno == EINTR)
        ;
    moe_outfile_discard(j->o);
    j->o = NULL;
}
