/* bench_torch.c: the PyTorch reference of `moesim bench` (bench.h): writes the layer's inputs
 * and kept (token, expert) pairs as .npy into a temporary folder, runs sim/bench_torch_moe.py
 * (the per-expert loop of Mixtral and the one-hot einsum dispatch of GShard/DeepSpeed, 1 and 2
 * threads, OMP_WAIT_POLICY=passive), reads its JSON timings, compares its outputs with moesim's,
 * then times moesim's layer and the fastest PyTorch configuration in rounds (the script's
 * --serve mode), so that the ratio the target reads compares the two in the same stretch of
 * time.
 */
#include "bench.h"
#include "bench_proc.h"

#include "npy.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

const char *const torch_styles[TORCH_STYLES] = {"loop", "einsum"};

/* ---- PyTorch reference (sim/bench_torch_moe.py) ---- */

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

/* One line of the reference's stdout (malloc'd), NULL at its end. */
static char *torch_line(bench_child *tp)
{
    char *line = NULL;
    size_t cap = 0;
    if (getline(&line, &cap, tp->from) < 0) {
        free(line);
        return NULL;
    }
    return line;
}

/* Whether the reference's line is its {"error": ...} object (it then ends). */
static int torch_said_error(const char *line)
{
    json_t *root = json_loads(line, 0, NULL);
    const int e = json_is_object(root) && json_object_get(root, "error") != NULL;
    json_decref(root);
    return e;
}

/* Round after round: two forwards of p, then two of the fastest PyTorch configuration, the
 * second of each timed; tr's rounds statistics. The first forward of each side is not timed: it
 * starts cold, right after the other process's work (its thread pools asleep, its data out of
 * the caches). Timed, with one forward a side a round, moesim's E8k2 layer read 469.7 ms here
 * (its own table in the same run 446.7: forwards in a row) and PyTorch's 563.1 (578.6), 1.20x;
 * the second forwards of two read 408.4 (417.7) and 569.4 (561.4), 1.39x. */
static int torch_rounds(bench_ctx *c, const bench_weights *w, const float *x, layer_point *p,
                        bench_child *tp, torch_result *tr)
{
    const int R = c->a.repeats;
    const char *style = torch_styles[tr->best_style];
    const int th = tr->threads[tr->best_th];
    double *v = malloc(3 * (size_t)R * sizeof *v), t[MOE_NPHASES];
    if (!v)
        return moe_fail(MOE_ENOMEM, NULL, "out of memory (rounds)");
    int rc = MOE_OK;
    for (int r = 0; r < R && !rc; r++) {
        if ((rc = bench_point_forward(p, w, x, t)) || (rc = bench_point_forward(p, w, x, t)))
            break;
        char *line = NULL, name[16];
        int got_th = 0, used = 0;
        double s0 = NAN, s = NAN;
        if (fprintf(tp->to, "time %s %d 2\n", style, th) < 0 || fflush(tp->to) != 0 ||
            !(line = torch_line(tp)) ||
            sscanf(line, "time %15s %d %lf %lf%n", name, &got_th, &s0, &s, &used) != 4 ||
            strcmp(name, style) != 0 || got_th != th || !(s > 0.0) || line[used] != '\n') {
            free(line);
            rc = moe_fail(MOE_EIO, "run the script with --serve by hand to see its answers",
                          "the PyTorch reference did not answer its round %d (%s, %d threads; "
                          "%s)", r + 1, style, th, c->a.script);
            break;
        }
        free(line);
        v[r] = t[MOE_PHASE_TOTAL];
        v[R + r] = s;
        v[2 * R + r] = s / t[MOE_PHASE_TOTAL];
    }
    if (!rc) {
        tr->rounds = R;
        tr->mine_rounds = bench_stat_of(v, R);
        tr->theirs_rounds = bench_stat_of(v + R, R);
        tr->ratio_rounds = bench_stat_of(v + 2 * R, R);
    }
    free(v);
    return rc;
}

int bench_torch_measure(bench_ctx *c, const bench_cfg *cfg, const bench_weights *w,
                        const float *x, layer_point *p, torch_result *tr)
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
    char dir[1100];
    int rc = bench_tmpdir(dir, sizeof dir, "moesim-bench", 0);
    if (rc)
        return rc;
    bench_guard(dir, torch_files);
    rc = torch_write_inputs(dir, w, x, p);
    char *out = NULL, cmd[2048];
    bench_child tp = {-1, NULL, NULL};
    if (rc)
        goto out;
    char cap[24], rep[24], erep[24], k[24];
    snprintf(cap, sizeof cap, "%ld", p->C);
    snprintf(rep, sizeof rep, "%d", c->a.repeats);
    snprintf(erep, sizeof erep, "%d", c->a.repeats < 3 ? c->a.repeats : 3); /* s per forward */
    snprintf(k, sizeof k, "%d", cfg->k);
    char *const argv[] = {(char *)c->a.python, (char *)c->a.script, "--dir", dir, "--router",
                          (char *)cfg->router, "--k", k, "--capacity", cap, "--repeats", rep,
                          "--einsum-repeats", erep, "--threads", "1,2", "--serve", NULL};
    bench_argv_text(argv, cmd, sizeof cmd);
    int status = 0;
    if (bench_child_start(&tp, argv) == 0) /* its table: one line of JSON, then it serves */
        out = torch_line(&tp);
    if (out && torch_said_error(out)) { /* then it ends: its status tells why */
        free(out);
        out = NULL;
    }
    if (!out) /* (127 when it did not start, as a shell says of a missing program) */
        status = tp.pid > 0 ? bench_child_stop(&tp) : 127;
    if (!out && (status == 3 || status == 127)) { /* its "torch not importable", or no python */
        snprintf(tr->note, sizeof tr->note, "skipped: PyTorch not available to %s (exit %d)",
                 c->a.python, status);
        goto out;
    }
    if (!out) {
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
    if ((rc = torch_rounds(c, w, x, p, &tp, tr)))
        goto out;
    if ((status = bench_child_stop(&tp)) != 0)
        rc = moe_fail(MOE_EIO, "run the command by hand: it prints its error on stderr",
                      "the PyTorch reference ended with exit status %d after its rounds (%s)",
                      status, cmd);
out:
    if (tp.pid > 0)
        bench_child_stop(&tp);
    free(out);
    bench_rmdir(dir, "bench");
    bench_guard(NULL, NULL);
    return rc;
}
