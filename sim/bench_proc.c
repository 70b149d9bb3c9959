/* bench_proc.c: the temporary folders and child processes of `moesim bench` (interface in
 * bench_proc.h). */
#include "bench_proc.h"
#include "moe.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

int bench_tmpdir(char *dir, size_t len, const char *name, int in_memory)
{
    const char *tmp = getenv("TMPDIR");
    const char *base[2] = {"/dev/shm", tmp && *tmp ? tmp : "/tmp"};
    for (int i = in_memory ? 0 : 1; i < 2; i++) {
        if ((size_t)snprintf(dir, len, "%s/%s-XXXXXX", base[i], name) >= len)
            continue;
        if (access(base[i], W_OK) == 0 && mkdtemp(dir))
            return MOE_OK;
    }
    return moe_fail(MOE_EIO, "set TMPDIR to a writable folder",
                    "cannot create a temporary folder (%s in %s)", name, base[1]);
}

/* The guarded folder and its files, for bench_on_signal. */
static char guard_dir[1100];
static const char *const *guard_files;

/* SIGINT, SIGTERM, SIGHUP: remove the guarded folder's files (the inputs of a reference: up to
 * gigabytes, in memory when in /dev/shm) and the folder, then die of the signal; unlink, rmdir,
 * signal and raise are async-signal-safe. */
static void bench_on_signal(int sig)
{
    char path[1200];
    for (int i = 0; guard_dir[0] && guard_files && guard_files[i]; i++) {
        size_t len = strlen(guard_dir), fl = strlen(guard_files[i]);
        if (len + fl + 2 > sizeof path)
            continue;
        memcpy(path, guard_dir, len);
        path[len] = '/';
        memcpy(path + len + 1, guard_files[i], fl + 1);
        unlink(path);
    }
    if (guard_dir[0])
        rmdir(guard_dir);
    signal(sig, SIG_DFL);
    raise(sig);
}

void bench_guard(const char *dir, const char *const *files)
{
    guard_dir[0] = '\0';
    guard_files = files;
    if (dir && strlen(dir) < sizeof guard_dir) {
        memcpy(guard_dir, dir, strlen(dir) + 1);
        signal(SIGINT, bench_on_signal);
        signal(SIGTERM, bench_on_signal);
        signal(SIGHUP, bench_on_signal);
    }
}

void bench_rmdir(const char *dir, const char *who)
{
    DIR *d = opendir(dir);
    struct dirent *f;
    char path[1400];
    while (d && (f = readdir(d)))
        if (strcmp(f->d_name, ".") && strcmp(f->d_name, "..") &&
            (size_t)snprintf(path, sizeof path, "%s/%s", dir, f->d_name) < sizeof path)
            unlink(path);
    if (d)
        closedir(d);
    if (rmdir(dir) != 0)
        fprintf(stderr, "%s: could not remove %s: %s\n", who, dir, strerror(errno));
}

pid_t bench_spawn(char *const argv[], int in, int out, int err, int close1, int close2)
{
    size_t ne = 0;
    while (environ[ne])
        ne++;
    char **env = malloc((ne + 2) * sizeof *env);
    posix_spawn_file_actions_t fa;
    if (!env || posix_spawn_file_actions_init(&fa) != 0) {
        free(env);
        return -1;
    }
    size_t k = 0;
    for (size_t i = 0; i < ne; i++)
        if (strncmp(environ[i], "OMP_WAIT_POLICY=", 16) != 0)
            env[k++] = environ[i];
    env[k++] = "OMP_WAIT_POLICY=passive";
    env[k] = NULL;
    const int fd[3] = {in, out, err};
    int bad = 0;
    for (int s = 0; s < 3; s++) /* dup2 of each first, then the closes: a descriptor may be */
        if (fd[s] >= 0 && fd[s] != s) /* given twice (the same /dev/null as stdin and stdout) */
            bad |= posix_spawn_file_actions_adddup2(&fa, fd[s], s);
    for (int s = 0; s < 3; s++) {
        int dup = 0;
        for (int q = 0; q < s; q++)
            dup |= fd[q] == fd[s];
        if (fd[s] > STDERR_FILENO && !dup)
            bad |= posix_spawn_file_actions_addclose(&fa, fd[s]);
    }
    if (close1 >= 0)
        bad |= posix_spawn_file_actions_addclose(&fa, close1);
    if (close2 >= 0)
        bad |= posix_spawn_file_actions_addclose(&fa, close2);
    pid_t pid = -1;
    fflush(NULL);
    if (bad || posix_spawnp(&pid, argv[0], &fa, NULL, argv, env) != 0)
        pid = -1;
    posix_spawn_file_actions_destroy(&fa);
    free(env);
    return pid;
}

int bench_child_start(bench_child *ch, char *const argv[])
{
    int in[2], out[2]; /* in: our requests to its stdin; out: its stdout to us */
    ch->pid = -1;
    ch->to = ch->from = NULL;
    if (pipe(in) != 0)
        return -1;
    if (pipe(out) != 0) {
        close(in[0]);
        close(in[1]);
        return -1;
    }
    ch->pid = bench_spawn(argv, in[0], out[1], -1, in[1], out[0]);
    close(in[0]);
    close(out[1]);
    if (ch->pid < 0) {
        close(in[1]);
        close(out[0]);
        return -1;
    }
    signal(SIGPIPE, SIG_IGN);
    if (!(ch->to = fdopen(in[1], "w")))
        close(in[1]);
    if (!(ch->from = fdopen(out[0], "r")))
        close(out[0]);
    if (ch->to && ch->from)
        return 0;
    bench_child_stop(ch);
    return -1;
}

int bench_child_stop(bench_child *ch)
{
    if (ch->to)
        fclose(ch->to);
    if (ch->from)
        fclose(ch->from);
    ch->to = ch->from = NULL;
    const int st = ch->pid > 0 ? bench_wait(ch->pid) : -1;
    ch->pid = -1;
    return st;
}

int bench_wait(pid_t pid)
{
    int ws;
    pid_t w;
    while ((w = waitpid(pid, &ws, 0)) < 0 && errno == EINTR)
        ;
    if (w != pid)
        return -1;
    return WIFEXITED(ws) ? WEXITSTATUS(ws) : WIFSIGNALED(ws) ? 128 + WTERMSIG(ws) : -1;
}

char *bench_capture(char *const argv[], int *status)
{
    *status = 127;
    int po[2];
    const int null = open("/dev/null", O_RDWR | O_CLOEXEC);
    if (null < 0 || pipe(po) != 0) {
        if (null >= 0)
            close(null);
        return NULL;
    }
    const pid_t pid = bench_spawn(argv, null, po[1], -1, po[0], -1);
    close(po[1]);
    close(null);
    if (pid < 0) {
        close(po[0]);
        return NULL;
    }
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap);
    for (;;) { /* (read to the end even without memory: the child must not block on its pipe) */
        char skip[4096];
        if (buf && len + 1024 > cap) {
            char *nb = realloc(buf, cap * 2);
            if (!nb) {
                free(buf);
                buf = NULL;
            } else {
                buf = nb;
                cap *= 2;
            }
        }
        const ssize_t got = buf ? read(po[0], buf + len, cap - len - 1)
                                : read(po[0], skip, sizeof skip);
        if (got < 0 && errno == EINTR)
            continue;
        if (got <= 0)
            break;
        if (buf)
            len += (size_t)got;
    }
    close(po[0]);
    if (buf)
        buf[len] = '\0';
    *status = bench_wait(pid);
    return buf;
}

/* Appends a space (unless at the start) and s in single quotes (a ' becomes '\'') to buf (len
 * bytes, *pos used); -1 when it does not fit. */
static int shell_quote(char *buf, size_t len, size_t *pos, const char *s)
{
    if (*pos + 3 >= len)
        return -1;
    if (*pos > 0)
        buf[(*pos)++] = ' ';
    buf[(*pos)++] = '\'';
    for (; *s; s++) {
        const char *piece = *s == '\'' ? "'\\''" : NULL;
        size_t pl = piece ? 4 : 1;
        if (*pos + pl + 2 >= len)
            return -1;
        if (piece)
            memcpy(buf + *pos, piece, pl);
        else
            buf[*pos] = *s;
        *pos += pl;
    }
    buf[(*pos)++] = '\'';
    buf[*pos] = '\0';
    return 0;
}

void bench_argv_text(char *const argv[], char *buf, size_t len)
{
    static const char env[] = "OMP_WAIT_POLICY=passive";
    size_t pos = sizeof env - 1;
    if (len < sizeof env + 4) {
        if (len > 0)
            buf[0] = '\0';
        return;
    }
    memcpy(buf, env, sizeof env);
    for (int i = 0; argv[i]; i++)
        if (shell_quote(buf, len - 4, &pos, argv[i]) != 0) {
            memcpy(buf + (pos < len - 4 ? pos : len - 4), "...", 4);
            return;
        }
}
