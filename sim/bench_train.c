/* bench_train.c: the training-step benchmark of `moesim bench` (bench.h): moesim's training
 * engine (moe_train_bench, train.h) against a PyTorch CPU training loop of the same model
 * (sim/bench_torch_train.py: the same topk router with capacity, expert FFNs, teacher, loss =
 * MSE + 1e-2 aux + 1e-3 z-loss, Adam, gradients by autograd), in the same run, with ReLU and
 * with GELU (tanh): one forward + backward + Adam update of E=16 k=2 n=4096 d=256 f=1024 per
 * step, median over `repeats` steps after one warm-up. The PyTorch script is looked up next to
 * the layer reference (--torch-script's folder) and runs with --threads threads (torch's and
 * OpenBLAS's), OMP_WAIT_POLICY=passive. Rows of config "train" in the table bench: per
 * activation time_train_step, torch_time_train_step, ratio_train_vs_torch and both last losses.
 */
#include "bench.h"
#include "bench_proc.h"

#include "provenance.h"
#include "train.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum { TB_N = 4096, TB_D = 256, TB_F = 1024, TB_E = 16, TB_K = 2, TB_C = TB_K * TB_N / TB_E };
#define TB_TARGET 1.5 /* moesim's step at least 1.5x as fast as PyTorch's */

static const int tb_acts[] = {MOE_ACT_RELU, MOE_ACT_GELU_TANH};
enum { TB_NACT = sizeof tb_acts / sizeof tb_acts[0] };

typedef struct {
    double sec, loss;             /* moesim: median s per step, last loss */
    double torch_sec, torch_loss; /* NaN when not measured */
} tb_result;

/* One row of config "train" (the shape of moe_train_bench, capacity factor 1.0, C = kT/E). */
static int tb_put(bench_ctx *c, const char *metric, const char *unit, double v)
{
    const moe_bench_row row = {
        .run = c->run_id, .git_rev = moe_git_rev(), .blas_library = c->bi.library,
        .blas_core = c->bi.core, .blas_threads = c->bi.threads,
        .openblas_coretype = c->bi.coretype_env, .torch = c->torch_version,
        .quick = c->a.quick, .repeats = c->a.repeats, .config = "train", .router = "topk",
        .E = TB_E, .k = TB_K, .n = TB_N, .d = TB_D, .f = TB_F, .cf = 1.0, .capacity = TB_C,
        .kept = 0, .metric = metric, .unit = unit, .median = v, .q1 = NAN, .q3 = NAN,
        .min = NAN, .max = NAN};
    return bench_put_row(c, &row);
}

/* The script's path: bench_torch_train.py in the folder of the layer reference (malloc'd). */
static char *tb_script(const char *layer_script)
{
    const char *slash = strrchr(layer_script, '/');
    size_t n = slash ? (size_t)(slash - layer_script) + 1 : 0;
    const char *name = "bench_torch_train.py";
    char *p = malloc(n + strlen(name) + 1);
    if (!p) {
        moe_fail(MOE_ENOMEM, NULL, "out of memory (training benchmark)");
        return NULL;
    }
    memcpy(p, layer_script, n);
    strcpy(p + n, name);
    return p;
}

/* The PyTorch loop for activation act: r->torch_sec and r->torch_loss, or *note (skipped). */
static int tb_torch(bench_ctx *c, const char *script, int act, tb_result *r, char *note,
                    size_t note_len)
{
    char steps[24], th[24], cmd[2048];
    snprintf(steps, sizeof steps, "%d", c->a.repeats);
    snprintf(th, sizeof th, "%d", c->a.threads);
    char *const argv[] = {(char *)c->a.python, (char *)script, "--steps", steps, "--threads", th,
                          "--act", (char *)moe_act_name(act), NULL};
    bench_argv_text(argv, cmd, sizeof cmd);
    int status;
    char *out = bench_capture(argv, &status);
    int rc = MOE_OK;
    if (status == 3 || status == 127) {
        snprintf(note, note_len, "skipped: PyTorch not available to %s (exit %d)", c->a.python,
                 status);
    } else if (status != 0 || !out) {
        rc = moe_fail(MOE_EIO, "run the command by hand: it prints its error on stderr",
                      "the PyTorch training loop failed with exit status %d (%s)", status, cmd);
    } else {
        json_error_t err;
        json_t *root = json_loads(out, 0, &err);
        json_t *sec = json_object_get(root, "sec_per_step"), *loss = json_object_get(root, "loss");
        json_t *ver = json_object_get(root, "torch");
        if (!json_is_number(sec) || !json_is_number(loss))
            rc = moe_fail(MOE_EFORMAT, "run the script by hand to see its output",
                          "cannot read the PyTorch training loop's JSON (%s)", script);
        else {
            r->torch_sec = json_number_value(sec);
            r->torch_loss = json_number_value(loss);
            if (json_is_string(ver))
                snprintf(c->torch_version, sizeof c->torch_version, "%s", json_string_value(ver));
        }
        json_decref(root);
    }
    free(out);
    return rc;
}

static int tb_store(bench_ctx *c, int act, const tb_result *r)
{
    char m[96];
    const char *a = moe_act_name(act);
    int rc;
    snprintf(m, sizeof m, "time_train_step_%s", a);
    if ((rc = tb_put(c, m, "s", r->sec)))
        return rc;
    snprintf(m, sizeof m, "train_last_loss_%s", a);
    if ((rc = tb_put(c, m, "1", r->loss)) || !isfinite(r->torch_sec))
        return rc;
    snprintf(m, sizeof m, "torch_time_train_step_%s", a);
    if ((rc = tb_put(c, m, "s", r->torch_sec)))
        return rc;
    snprintf(m, sizeof m, "torch_train_last_loss_%s", a);
    if ((rc = tb_put(c, m, "1", r->torch_loss)))
        return rc;
    snprintf(m, sizeof m, "ratio_train_vs_torch_%s", a);
    return tb_put(c, m, "1", r->torch_sec / r->sec);
}

int bench_train(bench_ctx *c)
{
    if (c->a.quick) {
        printf("\n== training step: skipped (--quick; it runs at full size only) ==\n");
        return MOE_OK;
    }
    printf("\n== training step: topk k=2, E=%d, n=%d, d=%d, f=%d, C=%d, forward + backward + "
           "Adam, aux 1e-2, z 1e-3, fp32, %d steps after a warm-up ==\n", TB_E, TB_N, TB_D, TB_F,
           TB_C, c->a.repeats);
    char *script = tb_script(c->a.script);
    if (!script)
        return MOE_ENOMEM;
    char note[200] = "";
    if (c->a.no_torch)
        snprintf(note, sizeof note, "skipped (--no-torch)");
    else if (access(script, R_OK) != 0)
        snprintf(note, sizeof note, "skipped: %s not found (run from the repository)", script);
    int rc = MOE_OK;
    tb_result res[TB_NACT];
    for (int i = 0; i < TB_NACT && !rc; i++) {
        tb_result *r = &res[i];
        r->torch_sec = r->torch_loss = NAN;
        if ((rc = moe_train_bench(c->a.repeats, tb_acts[i], &r->sec, &r->loss)))
            break;
        if (!note[0])
            rc = tb_torch(c, script, tb_acts[i], r, note, sizeof note);
        if (!rc)
            rc = tb_store(c, tb_acts[i], r);
        if (rc)
            break;
        printf("%-9s moesim %8.1f ms/step (loss %.4g)", moe_act_name(tb_acts[i]), 1e3 * r->sec,
               r->loss);
        if (isfinite(r->torch_sec))
            printf("   PyTorch %8.1f ms/step (loss %.4g)   ratio %5.2fx  (>= %.1fx)  %s\n",
                   1e3 * r->torch_sec, r->torch_loss, r->torch_sec / r->sec, TB_TARGET,
                   r->torch_sec / r->sec >= TB_TARGET ? "met" : "MISSED");
        else
            printf("   PyTorch not measured (%s)\n", note);
    }
    free(script);
    return rc;
}
