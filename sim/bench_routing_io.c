/* bench_routing_io.c: the folder and the process `moesim bench --routing` shares with the
 * PyTorch twins of its routers (interface in bench_routing_io.h). */
#include "bench_routing_io.h"
#include "bench_proc.h"
#include "moe.h"
#include "npy.h"

#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

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

/* The command line `python script mode --dir dir [--cases cases] --threads threads --cf 5/4`
 * of brio_check and brio_twin_start, in c (argv points into it). */
typedef struct {
    char th[16];
    char *argv[12];
} brio_cmd;

static char *const *brio_argv(brio_cmd *c, const char *python, const char *script,
                              const char *mode, const char *dir, const char *cases, int threads)
{
    int i = 0;
    snprintf(c->th, sizeof c->th, "%d", threads);
    c->argv[i++] = (char *)python;
    c->argv[i++] = (char *)script;
    c->argv[i++] = (char *)mode;
    c->argv[i++] = "--dir";
    c->argv[i++] = (char *)dir;
    if (cases) {
        c->argv[i++] = "--cases";
        c->argv[i++] = (char *)cases;
    }
    c->argv[i++] = "--threads";
    c->argv[i++] = c->th;
    c->argv[i++] = "--cf";
    c->argv[i++] = "5/4";
    c->argv[i] = NULL;
    return c->argv;
}

int brio_check(const char *python, const char *script, const char *dir, const char *cases,
               int threads)
{
    const int null = open("/dev/null", O_RDWR);
    if (null < 0)
        return -1;
    brio_cmd cmd;
    const pid_t pid =
        bench_spawn(brio_argv(&cmd, python, script, "check", dir, cases, threads), null, null,
                    -1, -1, -1);
    close(null);
    return pid > 0 ? bench_wait(pid) : -1;
}

int brio_twin_start(bench_child *t, const char *python, const char *script, const char *dir,
                    int threads, int n, int E, char *version, size_t vlen)
{
    brio_cmd cmd;
    if (bench_child_start(t, brio_argv(&cmd, python, script, "serve", dir, NULL, threads)))
        return -1;
    char line[256], ver[64];
    int rn = -1, rE = -1;
    if (fgets(line, sizeof line, t->from) &&
        sscanf(line, "ready %d %d %63s", &rn, &rE, ver) == 3 && rn == n && rE == E) {
        snprintf(version, vlen, "%s", ver);
        return 0;
    }
    const int st = bench_child_stop(t);
    return st ? st : -1;
}

int brio_twin_time(bench_child *t, const char *router, int k, int repeats, double min_time,
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
