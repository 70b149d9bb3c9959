/* bench_torch.c: the PyTorch reference of `moesim bench` (bench.h): writes the layer's inputs
 * and kept (token, expert) pairs as .npy into a temporary folder, runs sim/bench_torch_moe.py
 * (the per-expert loop of Mixtral and the one-hot einsum dispatch of GShard/DeepSpeed, 1 and 2
 * threads, OMP_WAIT_POLICY=passive), reads its JSON timings and compares its outputs with
 * moesim's.
 */
#include "bench.h"

#include "npy.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

const char *const torch_styles[TORCH_STYLES] = {"loop", "einsum"};

/* ---- PyTorch reference (sim/bench_torch_moe.py) ---- */



int bench_shell_quote(char *buf, size_t len, size_t *pos, const char *s)
{
    if (*pos + 2 >= len)
        return -1;
    if (*pos > 0 && buf[*pos - 1] != ' ')
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

static int write_npy(const char *dir, const char *name, int dtype, const void *data, int ndim,
                     size_t s0, size_t s1, size_t s2)
{
    char path[4096 + 32];
    size_t shape[3] = {s0, s1, s2};
    snprintf(path, sizeof path, "%s/%s", dir, name);
    return moe_npy_write(path, dtype, data, ndim, shape);
}

static const char *const torch_files[] = {"x.npy", "wg.npy", "w1.npy", "b1.npy", "w2.npy",
                                          "b2.npy", "kept.npy", "y_loop.npy", "y_einsum.npy",
                                          NULL};

static void torch_cleanup(const char *dir)
{
    char path[4096 + 32];
    for (int i = 0; torch_files[i]; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, torch_files[i]);
        unlink(path);
    }
    rmdir(dir);
}

static int torch_write_inputs(const char *dir, const bench_weights *w, const float *x,
                              const layer_point *p)
{
    size_t n = (size_t)p->n, D = (size_t)w->d, F = (size_t)w->f, E = (size_t)w->E;
    size_t N = p->plan->n_entries;
    int64_t *kept = malloc((2 * N + 1) * sizeof *kept); /* (N,2) token, expert */
    if (!kept)
        return moe_fail(MOE_ENOMEM, NULL, "out of memory (plan for torch)");
    for (size_t i = 0; i < N; i++) {
        kept[2 * i] = p->plan->entries[i].token;
        kept[2 * i + 1] = p->plan->entries[i].expert;
    }
    int rc = write_npy(dir, "x.npy", MOE_F32, x, 2, n, D, 0);
    if (!rc)
        rc = write_npy(dir, "wg.npy", MOE_F32, w->wg, 2, D, E, 0);
    if (!rc)
        rc = write_npy(dir, "w1.npy", MOE_F32, w->w1, 3, E, D, F);
    if (!rc)
        rc = write_npy(dir, "b1.npy", MOE_F32, w->b1, 2, E, F, 0);
    if (!rc)
        rc = write_npy(dir, "w2.npy", MOE_F32, w->w2, 3, E, F, D);
    if (!rc)
        rc = write_npy(dir, "b2.npy", MOE_F32, w->b2, 2, E, D, 0);
    if (!rc)
        rc = write_npy(dir, "kept.npy", MOE_I64, kept, 2, N, 2, 0);
    free(kept);
    return rc;
}

char *bench_run_capture(const char *cmd, int *status)
{
    FILE *f = popen(cmd, "r");
    if (!f) {
        *status = -1;
        return NULL;
    }
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap);
    while (buf) {
        if (len + 1024 > cap) {
            char *nb = realloc(buf, cap * 2);
            if (!nb) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = nb;
            cap *= 2;
        }
        size_t got = fread(buf + len, 1, cap - len - 1, f);
        len += got;
        if (got == 0)
            break;
    }
    if (buf)
        buf[len] = '\0';
    int st = pclose(f);
    *status = st == -1 ? -1 : WIFEXITED(st) ? WEXITSTATUS(st) : 128;
    return buf;
}

static double json_num(json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    return json_is_number(v) ? json_number_value(v) : NAN;
}

static int torch_parse(bench_ctx *c, const char *text, torch_result *tr)
{
    json_error_t err;
    json_t *root = json_loads(text, 0, &err);
    if (!root || !json_is_object(root)) {
        json_decref(root);
        return moe_fail(MOE_EFORMAT, "run the script by hand to see its output",
                        "cannot read the PyTorch reference's JSON: %s (%s, line %d)", err.text,
                        c->a.script, err.line);
    }
    json_t *ver = json_object_get(root, "torch");
    if (json_is_string(ver))
        snprintf(c->torch_version, sizeof c->torch_version, "%s", json_string_value(ver));
    tr->routing_mismatch = (long)json_integer_value(json_object_get(root, "routing_mismatch"));
    tr->blas_threads_set = json_is_true(json_object_get(root, "blas_threads_set"));
    json_t *res = json_object_get(root, "results");
    size_t i;
    json_t *it;
    json_array_foreach(res, i, it) {
        const char *style = json_string_value(json_object_get(it, "style"));
        int th = (int)json_integer_value(json_object_get(it, "threads"));
        int s = -1, j;
        for (int q = 0; q < TORCH_STYLES; q++)
            if (style && strcmp(style, torch_styles[q]) == 0)
                s = q;
        for (j = 0; j < tr->nth; j++)
            if (tr->threads[j] == th)
                break;
        if (s < 0 || j == tr->nth)
            continue;
        tr->t[s][j] = (bench_stat){json_num(it, "median"), json_num(it, "q1"),
                                   json_num(it, "q3"), json_num(it, "min"), json_num(it, "max")};
    }
    json_decref(root);
    return MOE_OK;
}

static int torch_compare(const char *dir, const char *name, const float *y, size_t n, size_t D,
                         double *err)
{
    char path[4096 + 32];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    moe_npy a;
    int rc = moe_npy_read(path, &a);
    if (rc)
        return rc;
    if (a.dtype != MOE_F32 || a.ndim != 2 || a.shape[0] != n || a.shape[1] != D) {
        moe_npy_free(&a);
        return moe_fail(MOE_EFORMAT, NULL, "PyTorch output is not float32 (%zu,%zu) (%s)", n, D,
                        path);
    }
    *err = moe_rel_l2(y, a.data, n * D);
    moe_npy_free(&a);
    return MOE_OK;
}

int bench_torch_measure(bench_ctx *c, const bench_cfg *cfg, const bench_weights *w,
                         const float *x, const layer_point *p, torch_result *tr)
{
    memset(tr, 0, sizeof *tr);
    tr->threads[0] = 1;
    tr->threads[1] = 2;
    tr->nth = 2;
    for (int s = 0; s < TORCH_STYLES; s++)
        for (int j = 0; j < TORCH_MAXTH; j++)
            tr->t[s][j] = bench_stat_one(NAN);
    tr->rel_l2[0] = tr->rel_l2[1] = NAN;
    if (c->a.no_torch) {
        snprintf(tr->note, sizeof tr->note, "skipped (--no-torch)");
        return MOE_OK;
    }
    if (access(c->a.script, R_OK) != 0) {
        snprintf(tr->note, sizeof tr->note, "skipped: %s not found (run from the repository)",
                 c->a.script);
        return MOE_OK;
    }
    const char *tmp = getenv("TMPDIR");
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/moesim-bench-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(dir))
        return moe_fail(MOE_EIO, "set TMPDIR to a writable folder",
                        "cannot create a temporary folder (%s: %s)", dir, strerror(errno));
    int rc = torch_write_inputs(dir, w, x, p);
    char cmd[16384], num[160];
    size_t pos = 0;
    char *out = NULL;
    if (rc)
        goto out;
    pos = (size_t)snprintf(cmd, sizeof cmd, "OMP_WAIT_POLICY=passive ");
    int repeats_einsum = c->a.repeats < 3 ? c->a.repeats : 3; /* seconds per forward */
    snprintf(num, sizeof num, " --dir ");
    if (bench_shell_quote(cmd, sizeof cmd, &pos, c->a.python) ||
        bench_shell_quote(cmd, sizeof cmd, &pos, c->a.script) ||
        pos + strlen(num) >= sizeof cmd)
        goto toolong;
    memcpy(cmd + pos, num, strlen(num) + 1);
    pos += strlen(num);
    if (bench_shell_quote(cmd, sizeof cmd, &pos, dir))
        goto toolong;
    snprintf(num, sizeof num,
             " --router %s --k %d --capacity %ld --repeats %d --einsum-repeats %d --threads 1,2",
             cfg->router, cfg->k, p->C, c->a.repeats, repeats_einsum);
    if (pos + strlen(num) >= sizeof cmd)
        goto toolong;
    memcpy(cmd + pos, num, strlen(num) + 1);

    int status;
    fflush(stdout);
    out = bench_run_capture(cmd, &status);
    if (status == 3 || status == 127) { /* the script's "torch not importable", or no python */
        snprintf(tr->note, sizeof tr->note, "skipped: PyTorch not available to %s (exit %d)",
                 c->a.python, status);
        goto out;
    }
    if (status != 0 || !out) {
        rc = moe_fail(MOE_EIO, "run the command by hand: it prints its error on stderr",
                      "the PyTorch reference failed with exit status %d (%s)", status, cmd);
        goto out;
    }
    if ((rc = torch_parse(c, out, tr)))
        goto out;
    size_t n = (size_t)p->n, D = (size_t)w->d;
    if ((rc = torch_compare(dir, "y_loop.npy", p->y, n, D, &tr->rel_l2[0])) ||
        (rc = torch_compare(dir, "y_einsum.npy", p->y, n, D, &tr->rel_l2[1])))
        goto out;
    tr->available = 1;
    tr->best_style = tr->best_th = -1;
    for (int s = 0; s < TORCH_STYLES; s++)
        for (int j = 0; j < tr->nth; j++)
            if (isfinite(tr->t[s][j].median) &&
                (tr->best_style < 0 ||
                 tr->t[s][j].median < tr->t[tr->best_style][tr->best_th].median)) {
                tr->best_style = s;
                tr->best_th = j;
            }
    if (tr->best_style < 0) {
        rc = moe_fail(MOE_EFORMAT, NULL, "the PyTorch reference reported no timing (%s)",
                      c->a.script);
        goto out;
    }
    goto out;
toolong:
    rc = moe_fail(MOE_EINVAL, NULL, "paths too long for the PyTorch command (%s)", c->a.script);
out:
    free(out);
    torch_cleanup(dir);
    return rc;
}

