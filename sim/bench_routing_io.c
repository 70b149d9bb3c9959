/* bench_routing_io.c: the folder and the process `moesim bench --routing` shares with the
 * PyTorch twins of its routers (interface in bench_routing_io.h). */
#include "bench_routing_io.h"
#include "moe.h"
#include "npy.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

int brio_tmpdir(char *dir, size_t len)
{
    const char *tmp = getenv("TMPDIR");
    const char *base[2] = {"/dev/shm", tmp && *tmp ? tmp : "/tmp"};
    for (int i = 0; i < 2; i++) {
        snprintf(dir, len, "%s/moesim-brXXXXXX", base[i]);
        if (access(base[i], W_OK) == 0 && mkdtemp(dir))
            return MOE_OK;
    }
    return moe_fail(MOE_EIO, "set TMPDIR to a writable folder",
                    "cannot create a temporary folder (bench --routing, %s)", dir);
}

/* The guarded folder, for brio_on_signal. */
static char brio_dir[1100];

/* SIGINT, SIGTERM, SIGHUP: remove the guarded folder's inputs (up to 2 GB of memory in /dev/shm)
 * and the folder before dying; unlink and rmdir are async-signal-safe. */
static void brio_on_signal(int sig)
{
    static const char *const files[] = {"logits.npy", "uniforms.npy"};
    char path[1200];
    if (brio_dir[0]) {
        for (int i = 0; i < 2; i++) {
            size_t len = strlen(brio_dir), fl = strlen(files[i]);
            if (len + fl + 2 > sizeof path)
                continue;
            memcpy(path, brio_dir, len);
            path[len] = '/';
            memcpy(path + len + 1, files[i], fl + 1);
            unlink(path);
        }
        rmdir(brio_dir);
    }
    signal(sig, SIG_DFL);
    raise(sig);
}

void brio_guard(const char *dir)
{
    brio_dir[0] = '\0';
    if (dir && strlen(dir) < sizeof brio_dir) {
        memcpy(brio_dir, dir, strlen(dir) + 1);
        signal(SIGINT, brio_on_signal);
        signal(SIGTERM, brio_on_signal);
        signal(SIGHUP, brio_on_signal);
    }
}

void brio_rmdir(const char *dir)
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
        fprintf(stderr, "bench --routing: could not remove %s: %s\n", dir, strerror(errno));
}

int brio_write_inputs(const char *dir, const double *L, const double *u, int n, int E)
{
    char path[1200];
    size_t shL[2] = {(size_t)n, (size_t)E}, shu[1] = {(size_t)n};
    snprintf(path, sizeof path, "%s/logits.npy", dir);
    int rc = moe_npy_write(path, MOE_F64, L, 2, shL);
    snprintf(path, sizeof path, "%s/uniforms.npy", dir);
    return rc ? rc : moe_npy_write(path, MOE_F64, u, 1, shu);
}

const double *brio_map_logits(const char *dir, size_t count, void **map, size_t *len)
{
    char path[1200];
    snprintf(path, sizeof path, "%s/logits.npy", dir);
    const int fd = open(path, O_RDONLY);
    struct stat st;
    unsigned char *m = MAP_FAILED;
    if (fd >= 0 && fstat(fd, &st) == 0 && st.st_size >= 10)
        m = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_SHARED, fd, 0);
    if (fd >= 0)
        close(fd);
    if (m == MAP_FAILED) {
        moe_fail(MOE_EIO, NULL, "cannot map the shared logits (%s)", path);
        return NULL;
    }
    const size_t off = 10 + (size_t)m[8] + ((size_t)m[9] << 8); /* magic, version, header */
    if (m[6] != 1 || off % sizeof(double) || off + count * sizeof(double) > (size_t)st.st_size) {
        munmap(m, (size_t)st.st_size);
        moe_fail(MOE_EIO, NULL, "unexpected layout of the shared logits (%s)", path);
        return NULL;
    }
    *map = m;
    *len = (size_t)st.st_size;
    return (const double *)(m + off);
}

/* ---- the script's processes ---- */

/* Starts `python script mode --dir dir [--cases cases] --threads threads --cf 5/4` with
 * OMP_WAIT_POLICY=passive (no threads spinning between its calls) and its stdin and stdout the
 * descriptors in and out, by posix_spawn (no shell; nothing run between fork and exec in this
 * threaded process): the process id, or -1. close1 and close2 (the other ends of the caller's
 * pipes, or -1) are closed in it. */
static pid_t brio_spawn(const char *python, const char *script, const char *mode,
                        const char *dir, const char *cases, int threads, int in, int out,
                        int close1, int close2)
{
    char th[16];
    snprintf(th, sizeof th, "%d", threads);
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
    int bad = 0;
    if (in != STDIN_FILENO)
        bad |= posix_spawn_file_actions_adddup2(&fa, in, STDIN_FILENO);
    if (out != STDOUT_FILENO)
        bad |= posix_spawn_file_actions_adddup2(&fa, out, STDOUT_FILENO);
    if (in > STDERR_FILENO)
        bad |= posix_spawn_file_actions_addclose(&fa, in);
    if (out > STDERR_FILENO && out != in)
        bad |= posix_spawn_file_actions_addclose(&fa, out);
    if (close1 >= 0)
        bad |= posix_spawn_file_actions_addclose(&fa, close1);
    if (close2 >= 0)
        bad |= posix_spawn_file_actions_addclose(&fa, close2);
    char *const with[] = {(char *)python, (char *)script, (char *)mode, "--dir", (char *)dir,
                          "--cases", (char *)cases, "--threads", th, "--cf", "5/4", NULL};
    char *const without[] = {(char *)python, (char *)script, (char *)mode, "--dir", (char *)dir,
                             "--threads", th, "--cf", "5/4", NULL};
    pid_t pid = -1;
    fflush(NULL);
    if (bad || posix_spawn(&pid, python, &fa, NULL, cases ? with : without, env) != 0)
        pid = -1;
    posix_spawn_file_actions_destroy(&fa);
    free(env);
    return pid;
}

/* The exit status of process pid once it ends, 128 + the signal that ended it, or -1. */
static int brio_wait(pid_t pid)
{
    int ws;
    pid_t w;
    while ((w = waitpid(pid, &ws, 0)) < 0 && errno == EINTR)
        ;
    if (w != pid)
        return -1;
    return WIFEXITED(ws) ? WEXITSTATUS(ws) : WIFSIGNALED(ws) ? 128 + WTERMSIG(ws) : -1;
}

int brio_check(const char *python, const char *script, const char *dir, const char *cases,
               int threads)
{
    const int null = open("/dev/null", O_RDWR);
    if (null < 0)
        return -1;
    const pid_t pid = brio_spawn(python, script, "check", dir, cases, threads, null, null, -1,
                                 -1);
    close(null);
    return pid > 0 ? brio_wait(pid) : -1;
}

int brio_twin_start(brio_twin *t, const char *python, const char *script, const char *dir,
                    int threads, int n, int E)
{
    int in[2], out[2]; /* in: our requests to its stdin; out: its stdout to us */
    memset(t, 0, sizeof *t);
    t->pid = -1;
    if (pipe(in) != 0)
        return -1;
    if (pipe(out) != 0) {
        close(in[0]);
        close(in[1]);
        return -1;
    }
    t->pid = brio_spawn(python, script, "serve", dir, NULL, threads, in[0], out[1], in[1],
                        out[0]);
    close(in[0]);
    close(out[1]);
    if (t->pid < 0) {
        close(in[1]);
        close(out[0]);
        return -1;
    }
    /* a request written after the twin ended must give an error, not end this process */
    signal(SIGPIPE, SIG_IGN);
    t->to = fdopen(in[1], "w");
    t->from = fdopen(out[0], "r");
    if (!t->to || !t->from) {
        if (!t->to)
            close(in[1]);
        if (!t->from)
            close(out[0]);
        return brio_twin_stop(t);
    }
    char line[256];
    int rn = -1, rE = -1;
    if (fgets(line, sizeof line, t->from) && sscanf(line, "ready %d %d", &rn, &rE) == 2 &&
        rn == n && rE == E)
        return 0;
    const int st = brio_twin_stop(t);
    return st ? st : -1;
}

int brio_twin_time(brio_twin *t, const char *router, int k, int repeats, double min_time,
                   int max_repeats, double *best, int *passes, double *total)
{
    char line[512], name[64];
    int kk, n, E;
    if (!t->to || !t->from ||
        fprintf(t->to, "time %s %d %d %.17g %d\n", router, k, repeats, min_time, max_repeats) < 0 ||
        fflush(t->to) != 0 || !fgets(line, sizeof line, t->from))
        return -1;
    if (sscanf(line, "time %63s %d %d %d %lf %d %lf", name, &kk, &n, &E, best, passes,
               total) != 7 || strcmp(name, router) != 0 || kk != k || *passes < 1)
        return -1;
    return 0;
}

int brio_twin_stop(brio_twin *t)
{
    if (t->to)
        fclose(t->to);
    if (t->from)
        fclose(t->from);
    t->to = t->from = NULL;
    const int st = t->pid > 0 ? brio_wait(t->pid) : -1;
    t->pid = -1;
    return st;
}
