/* cmd_route.c: `moesim route`: route one recorded logits matrix, write the plan (docs/routing.md
 * section 1) as CSV and the metrics (section 4) as JSON, and optionally run the real layer on
 * given weights and write its output as .npy. The batch runs through the one-batch pipeline
 * (pipeline.h), as `moesim run` does. Flags are those of docs/moesim.1; the routing flags
 * come from the option table in options.c (--capacity-factor sets capacity_factor). */
#include "blas_info.h"
#include "cli.h"
#include "layer.h"
#include "npy.h"
#include "options.h"
#include "pipeline.h"
#include "presets.h"

#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

enum { F_ROUTER = 1000, F_LOGITS, F_TOKENS, F_UNIFORMS, F_X, F_W1, F_B1, F_W2, F_B2, F_OUTPUT,
       F_PLAN, F_METRICS, F_ACT, F_SEED, F_HELP, F_GUMBEL, F_RTS, F_SW1, F_SB1, F_SW2, F_SB2,
       F_SWG, F_PRESET, F_WG, F_JITTER_U, F_OPT0 };

typedef struct {
    const char *router, *logits, *tokens, *uniforms, *x, *w1, *b1, *w2, *b2, *output, *plan,
        *metrics;
    int act;
    unsigned long long seed;
    const char *gumbel, *rts; /* (T,E) draws: Gumbel uniforms, rts keys */
    const char *sw1, *sb1, *sw2, *sb2, *swg; /* shared experts (shared_ffn.h) and their gate */
    char cap_flag[48];        /* "--capacity" or "--capacity-factor" when given, else "" */
    const char *preset;       /* --preset NAME: router and options of presets.c */
    const char *wg, *jitter_u; /* gate weights (D,M) instead of logits; jitter draws (T,D) */
} route_args;

static void usage(FILE *out)
{
    fprintf(out,
            "usage: moesim route --router NAME|--preset NAME --logits L.npy --plan OUT.csv\n"
            "                    [--metrics OUT.json]\n"
            "                    [--tokens IDS.npy] [--uniforms U.npy] [routing options]\n"
            "                    [--gumbel-uniforms G.npy] [--rts-uniforms R.npy]\n"
            "                    [--wg WG.npy instead of --logits, with the layer]\n"
            "                    [--jitter EPS [--jitter-uniforms J.npy]]\n"
            "                    [--x X.npy --w1 W1.npy --b1 B1.npy --w2 W2.npy --b2 B2.npy\n"
            "                     --output Y.npy [--activation gelu_tanh|gelu_erf|relu|swiglu]\n"
            "                     [--shared-w1 SW1.npy --shared-b1 SB1.npy --shared-w2 SW2.npy\n"
            "                      --shared-b2 SB2.npy [--shared-gate-w SWG.npy]]]\n"
            "                    [--seed S]\n"
            "Routes one logits matrix L (T,M) as docs/routing.md says and writes the plan as CSV\n"
            "(token,expert,slot,dispatch_weight,combine_weight) and the metrics as JSON.\n"
            "With the weights x (T,D), w1 (E,D,F), b1 (E,F), w2 (E,F,D), b2 (E,D) (SwiGLU: w1\n"
            "(E,D,2F), b1 (E,2F)) it runs the real layer and writes y (T,D) as float32 .npy,\n"
            "and the metrics gain FLOPs and the output errors. Shared experts, which every token\n"
            "also passes through with weight 1: w1 (S,D,Fs), b1 (S,Fs), w2 (S,Fs,D), b2 (S,D)\n"
            "(SwiGLU: (S,D,2Fs), (S,2Fs)); --shared-gate-w (S,D) weighs shared expert s by\n"
            "sigmoid(x . wg_s) (Qwen2-MoE's shared expert gate). --seed selects the PCG streams\n"
            "of gshard's draws (when --uniforms is not given) and topk's noise (default 0).\n"
            "--gumbel-uniforms (T,E) gives the Gumbel draws u (G = -log(-log u)) of gshard's\n"
            "second_policy sampling and switch's select rsample; --rts-uniforms (T,E) the keys\n"
            "of order rts. Every value strictly between 0 and 1.\n"
            "--preset NAME sets the router and the options of one library's default router\n"
            "(`moesim list presets`); options given explicitly override the preset's.\n"
            "--wg WG (D,M) runs the gate: L = x WG (x jittered by --jitter; the experts see x\n"
            "unchanged), with the layer's weights and instead of --logits; --jitter-uniforms\n"
            "(T,D) gives the jitter draws u in [0,1) (factor 1 - eps + 2 eps u).\n"
            "Routing options:\n");
    moe_route_options_print(out, 1);
}

/* ---- inputs ---- */

/* "logits path/to/L.npy": names an input and its file in conversion errors */
static const char *what_of(const char *what, const char *path)
{
    static char buf[4200];
    snprintf(buf, sizeof buf, "%s %s", what, path);
    return buf;
}

static int read_array(const char *path, const char *what, int want_ndim, moe_npy *a)
{
    int rc = moe_npy_read(path, a);
    if (rc)
        return rc;
    if (a->ndim != want_ndim) {
        int nd = a->ndim;
        moe_npy_free(a);
        return moe_fail(MOE_EFORMAT, NULL, "%s must have %d dimensions, has %d (%s)", what,
                        want_ndim, nd, path);
    }
    return MOE_OK;
}

/* MOE_OK when every value of v (shape, ndim <= 3) is finite; else the error naming the first
 * non-finite one by its index, e.g. "non-finite w1[1,2,3] = nan (w1.npy)". */
static int check_finite(const float *v, int ndim, const size_t *shape, const char *what,
                        const char *path)
{
    size_t len = 1;
    for (int i = 0; i < ndim; i++)
        len *= shape[i];
    for (size_t i = 0; i < len; i++) {
        if (isfinite(v[i]))
            continue;
        char at[96];
        int o = 0;
        for (int j = 0; j < ndim; j++) {
            size_t stride = 1;
            for (int q = j + 1; q < ndim; q++)
                stride *= shape[q];
            o += snprintf(at + o, sizeof at - (size_t)o, "%s%zu", j ? "," : "",
                          (i / stride) % shape[j]);
        }
        return moe_fail(MOE_EINPUT, "inputs must be finite numbers",
                        "non-finite %s[%s] = %g (%s)", what, at, (double)v[i], path);
    }
    return MOE_OK;
}

static int read_float(const char *path, const char *what, int ndim, const size_t *shape,
                      float **out)
{
    moe_npy a;
    int rc = read_array(path, what, ndim, &a);
    if (rc)
        return rc;
    for (int i = 0; i < ndim; i++)
        if (a.shape[i] != shape[i]) {
            char want[96], got[96];
            int w = 0, g = 0;
            for (int j = 0; j < ndim; j++) {
                w += snprintf(want + w, sizeof want - (size_t)w, "%s%zu", j ? "," : "", shape[j]);
                g += snprintf(got + g, sizeof got - (size_t)g, "%s%zu", j ? "," : "", a.shape[j]);
            }
            moe_npy_free(&a);
            return moe_fail(MOE_EFORMAT, "shapes: x (T,D) w1 (E,D,F) b1 (E,F) w2 (E,F,D) b2 (E,D)",
                            "%s has shape (%s), expected (%s) (%s)", what, got, want, path);
        }
    char w[4200];
    snprintf(w, sizeof w, "%s %s", what, path);
    rc = moe_npy_as_float(&a, w, out);
    moe_npy_free(&a);
    return rc ? rc : check_finite(*out, ndim, shape, what, path);
}

typedef struct {
    float *x, *w1, *b1, *w2, *b2;
    float *sw1, *sb1, *sw2, *sb2, *swg;
    moe_shared sh;
    moe_experts ex;
} layer_in;

static void layer_in_free(layer_in *l)
{
    free(l->sw1);
    free(l->sb1);
    free(l->sw2);
    free(l->sb2);
    free(l->swg);
    free(l->x);
    free(l->w1);
    free(l->b1);
    free(l->w2);
    free(l->b2);
    memset(l, 0, sizeof *l);
}

/* The shared experts: S from w1 (S,D,Fs) (SwiGLU: (S,D,2Fs)); every other shape follows. */
static int read_shared(const route_args *a, size_t d, layer_in *l)
{
    moe_npy w1;
    int rc = read_array(a->sw1, "shared w1", 3, &w1);
    if (rc)
        return rc;
    size_t S = w1.shape[0], f2 = w1.shape[2], f = f2;
    moe_npy_free(&w1);
    if (a->act == MOE_ACT_SWIGLU && f2 % 2)
        return moe_fail(MOE_EFORMAT, "SwiGLU shared w1 is (S,D,2Fs): gate then up projection",
                        "shared w1 last dimension %zu is odd (%s)", f2, a->sw1);
    if (a->act == MOE_ACT_SWIGLU)
        f = f2 / 2;
    if (S < 1 || S > 1024 || f < 1)
        return moe_fail(MOE_EFORMAT, NULL, "shared w1 has %zu experts of width %zu: need 1..1024 "
                        "experts of width >= 1 (%s)", S, f, a->sw1);
    size_t s1[3] = {S, d, f2}, sb1[2] = {S, f2}, s2[3] = {S, f, d}, sb2[2] = {S, d};
    if ((rc = read_float(a->sw1, "shared w1", 3, s1, &l->sw1)) ||
        (rc = read_float(a->sb1, "shared b1", 2, sb1, &l->sb1)) ||
        (rc = read_float(a->sw2, "shared w2", 3, s2, &l->sw2)) ||
        (rc = read_float(a->sb2, "shared b2", 2, sb2, &l->sb2)) ||
        (a->swg && (rc = read_float(a->swg, "shared gate wg", 2, sb2, &l->swg))))
        return rc;
    l->sh = (moe_shared){(int)S, (int)f, a->swg ? MOE_SHARED_GATE_SIGMOID : MOE_SHARED_GATE_NONE,
                         l->sw1, l->sb1, l->sw2, l->sb2, l->swg};
    l->ex.shared = &l->sh;
    return MOE_OK;
}

/* D from x (T,D) and F from w1 (E,D,F) (SwiGLU: (E,D,2F)) as the headers give them; every other
 * shape follows. *f2 gets w1's last dimension (F, or 2F with SwiGLU). */
static int layer_dims(const route_args *a, size_t *d, size_t *f, size_t *f2)
{
    moe_npy xa, w1;
    int rc = read_array(a->x, "x", 2, &xa);
    if (rc)
        return rc;
    *d = xa.shape[1];
    moe_npy_free(&xa);
    if ((rc = read_array(a->w1, "w1", 3, &w1)))
        return rc;
    *f2 = *f = w1.shape[2];
    moe_npy_free(&w1);
    if (a->act == MOE_ACT_SWIGLU) {
        if (*f2 % 2)
            return moe_fail(MOE_EFORMAT, "SwiGLU w1 is (E,D,2F): gate then up projection",
                            "w1 last dimension %zu is odd (%s)", *f2, a->w1);
        *f = *f2 / 2;
    }
    return MOE_OK;
}

static int read_layer(const route_args *a, int n, int E, layer_in *l)
{
    memset(l, 0, sizeof *l);
    size_t d, f, f2;
    int rc = layer_dims(a, &d, &f, &f2);
    if (rc)
        return rc;
    size_t e = (size_t)E;
    size_t sx[2] = {(size_t)n, d}, s1[3] = {e, d, f2}, sb1[2] = {e, f2}, s2[3] = {e, f, d},
           sb2[2] = {e, d};
    if ((rc = read_float(a->x, "x", 2, sx, &l->x)) ||
        (rc = read_float(a->w1, "w1", 3, s1, &l->w1)) ||
        (rc = read_float(a->b1, "b1", 2, sb1, &l->b1)) ||
        (rc = read_float(a->w2, "w2", 3, s2, &l->w2)) ||
        (rc = read_float(a->b2, "b2", 2, sb2, &l->b2))) {
        layer_in_free(l);
        return rc;
    }
    l->ex = (moe_experts){E, (int)d, (int)f, a->act, l->w1, l->b1, l->w2, l->b2, NULL};
    if (a->sw1 && (rc = read_shared(a, d, l))) {
        layer_in_free(l);
        return rc;
    }
    return MOE_OK;
}

/* Refuse, before anything large is allocated, a run whose estimated memory
 * (moe_pipeline_estimate: layer workspaces of E x slots per expert, weights, plans) exceeds the
 * machine's physical memory, naming the option that sets the slots (--capacity or
 * --capacity-factor) when they exceed the tokens, else the logits file (the tokens). */
static int check_memory(const route_args *a, const moe_pipeline_cfg *cfg, int E,
                        const char *cap_flag)
{
    size_t d = 0, f = 0, f2 = 0;
    int rc;
    if (a->w1 && (rc = layer_dims(a, &d, &f, &f2)))
        return rc;
    if (d > INT32_MAX || f > INT32_MAX)
        return moe_fail(MOE_EINPUT, NULL, "layer width %zu or %zu is beyond the int range (%s)",
                        d, f, a->w1);
    double need = 0.0, layer = 0.0;
    long C = 0;
    if ((rc = moe_pipeline_estimate(cfg, E, (int)d, (int)f, a->act, &need, &layer, &C)))
        return rc;
    long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    double phys = pages > 0 && page > 0 ? (double)pages * (double)page : 0.0;
    if (phys <= 0.0 || need <= phys)
        return MOE_OK;
    int slots = C > cfg->T && cap_flag;
    return moe_fail(MOE_ENOMEM,
                    slots ? "a capacity above the tokens per batch is never filled"
                          : "fewer tokens (logits rows), or a smaller layer",
                    "the run needs about %.3g GB (layer workspaces %.3g GB for %d experts x %ld "
                    "slots), the machine has %.3g GB of physical memory (%s)",
                    need / 1e9, layer / 1e9, E, C, phys / 1e9, slots ? cap_flag : a->logits);
}

/* ---- outputs ---- */

/* The checks of every output before anything is written, so that a later output cannot fail on
 * its path after an earlier one replaced a file: each path passes moe_outfile_check (a regular
 * file or absent, no input), lies in an existing writable folder, and differs from the other
 * outputs (by name, and by device and inode when it exists). */
static int check_outputs(const route_args *a)
{
    const char *path[3] = {a->plan, a->metrics, a->output};
    static const char *const what[3] = {"plan", "metrics", ".npy file"};
    struct stat st[3];
    int exists[3] = {0};
    for (int i = 0; i < 3; i++) {
        if (!path[i])
            continue;
        int rc = moe_outfile_check(path[i], what[i]);
        if (rc)
            return rc;
        const char *slash = strrchr(path[i], '/');
        size_t len = slash ? (size_t)(slash - path[i]) : 0;
        char *dir = malloc(len + 2);
        if (!dir)
            return moe_fail(MOE_ENOMEM, NULL, "out of memory (%s)", path[i]);
        if (slash)
            memcpy(dir, path[i], len ? len : 1);
        else
            dir[0] = '.';
        dir[slash ? (len ? len : 1) : 1] = '\0';
        struct stat ds;
        int err = stat(dir, &ds) != 0 ? errno : !S_ISDIR(ds.st_mode) ? ENOTDIR
                  : access(dir, W_OK | X_OK) != 0 ? errno : 0;
        free(dir);
        if (err)
            return moe_fail(MOE_EIO, "check that the folder exists and is writable",
                            "cannot write %s: %s (%s)", what[i], strerror(err), path[i]);
        exists[i] = stat(path[i], &st[i]) == 0;
        for (int j = 0; j < i; j++)
            if (path[j] && (strcmp(path[i], path[j]) == 0 ||
                            (exists[i] && exists[j] && st[i].st_dev == st[j].st_dev &&
                             st[i].st_ino == st[j].st_ino)))
                return moe_fail(MOE_EINVAL, "give each output a path of its own",
                                "cannot write %s over the %s of this command (%s)", what[i],
                                what[j], path[i]);
    }
    return MOE_OK;
}

/* A (T,E) file of draws u, each strictly between 0 and 1 (Gumbel G = -log(-log u) is finite),
 * or in [0,1) with open0 = 0 (jitter), as doubles into *out (the caller frees). */
static int read_draws(const char *path, const char *what, int n, int m, double **out, int open0)
{
    moe_npy a;
    int rc = read_array(path, what, 2, &a);
    if (rc)
        return rc;
    if (a.shape[0] != (size_t)n || a.shape[1] != (size_t)m)
        rc = moe_fail(MOE_EINPUT, NULL, "%s have shape (%zu,%zu), want (%d,%d) (%s)", what,
                      a.shape[0], a.shape[1], n, m, path);
    if (!rc)
        rc = moe_npy_as_double(&a, what_of(what, path), out);
    for (size_t i = 0; !rc && i < a.count; i++)
        if (!((open0 ? (*out)[i] > 0.0 : (*out)[i] >= 0.0) && (*out)[i] < 1.0))
            rc = moe_fail(MOE_EINPUT, open0 ? "draws are uniforms strictly between 0 and 1"
                                            : "draws are uniforms in [0, 1)",
                          "%s value %g at token %zu, column %zu is outside %s (%s)", what,
                          (*out)[i], i / (size_t)m, i % (size_t)m, open0 ? "(0,1)" : "[0,1)",
                          path);
    moe_npy_free(&a);
    if (rc) {
        free(*out);
        *out = NULL;
    }
    return rc;
}

/* The logits L (T,M) of --logits, each finite, into *logits (the caller frees *L and it). */
static int read_logits(const route_args *a, moe_npy *L, double **logits, int *n, int *m)
{
    int rc = read_array(a->logits, "logits", 2, L);
    if (rc || (rc = moe_npy_as_double(L, what_of("logits", a->logits), logits)))
        return rc;
    if (L->shape[0] == 0 || L->shape[1] == 0 || L->shape[0] > 1u << 30 || L->shape[1] > 1u << 20)
        return moe_fail(MOE_EINPUT, NULL, "logits have shape (%zu,%zu): need n >= 1, M >= 1 (%s)",
                        L->shape[0], L->shape[1], a->logits);
    *n = (int)L->shape[0];
    *m = (int)L->shape[1];
    for (size_t i = 0; i < L->count; i++)
        if (!isfinite((*logits)[i]))
            return moe_fail(MOE_EINPUT, "logits must be finite: check the gate or the file",
                            "non-finite logit %g at token %zu, column %zu (%s)", (*logits)[i],
                            i / (size_t)*m, i % (size_t)*m, a->logits);
    return MOE_OK;
}

/* The gate weights WG (D,M) of --wg into *wg (the caller frees it); n and D from x (T,D). */
static int read_gate(const route_args *a, float **wg, int *n, int *m, int *d)
{
    moe_npy xa, ga;
    int rc = read_array(a->x, "x", 2, &xa);
    if (rc)
        return rc;
    size_t nx = xa.shape[0], dx = xa.shape[1];
    moe_npy_free(&xa);
    if ((rc = read_array(a->wg, "wg", 2, &ga)))
        return rc;
    size_t shape[2] = {ga.shape[0], ga.shape[1]};
    moe_npy_free(&ga);
    if (nx == 0 || nx > 1u << 30 || dx == 0 || dx > 1u << 20 || shape[1] == 0 ||
        shape[1] > 1u << 20)
        return moe_fail(MOE_EINPUT, NULL, "x (%zu,%zu) and wg (%zu,%zu): need n, D, M >= 1 (%s)",
                        nx, dx, shape[0], shape[1], a->wg);
    if (shape[0] != dx)
        return moe_fail(MOE_EFORMAT, "wg is (D,M): x (T,D) times wg gives the logits (T,M)",
                        "wg has %zu rows, x has D = %zu columns (%s)", shape[0], dx, a->wg);
    *n = (int)nx;
    *d = (int)dx;
    *m = (int)shape[1];
    return read_float(a->wg, "wg", 2, shape, wg);
}

/* ---- the command ---- */

static int parse_args(int argc, char **argv, route_args *a, moe_route_opts *o, int *help)
{
    enum { NOPT = 64 };
    struct option lo[NOPT];
    char names[NOPT][40];
    int n = 0;
    const char *given[NOPT] = {0}; /* explicit option values, set after the preset's */
    static const struct { const char *name; int val; } fixed[] = {
        {"router", F_ROUTER}, {"logits", F_LOGITS}, {"tokens", F_TOKENS},
        {"uniforms", F_UNIFORMS}, {"x", F_X}, {"w1", F_W1}, {"b1", F_B1}, {"w2", F_W2},
        {"b2", F_B2}, {"output", F_OUTPUT}, {"plan", F_PLAN}, {"metrics", F_METRICS},
        {"activation", F_ACT}, {"seed", F_SEED}, {"gumbel-uniforms", F_GUMBEL},
        {"rts-uniforms", F_RTS}, {"shared-w1", F_SW1}, {"shared-b1", F_SB1},
        {"shared-w2", F_SW2}, {"shared-b2", F_SB2}, {"shared-gate-w", F_SWG},
        {"preset", F_PRESET},
        {"wg", F_WG}, {"jitter-uniforms", F_JITTER_U},
    };
    for (size_t i = 0; i < sizeof fixed / sizeof *fixed; i++)
        lo[n++] = (struct option){fixed[i].name, required_argument, NULL, fixed[i].val};
    lo[n++] = (struct option){"help", no_argument, NULL, F_HELP};
    for (int i = 0; moe_route_options[i].key && n < NOPT - 1; i++) {
        snprintf(names[i], sizeof names[i], "%s", moe_route_options[i].key);
        for (char *c = names[i]; *c; c++)
            if (*c == '_')
                *c = '-';
        lo[n++] = (struct option){names[i], required_argument, NULL, F_OPT0 + i};
    }
    lo[n] = (struct option){NULL, 0, NULL, 0};

    optind = 0; /* glibc: full re-initialisation, so the command can run more than once */
    opterr = 0;
    int c, rc;
    while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
        switch (c) {
        case F_ROUTER: a->router = optarg; break;
        case F_LOGITS: a->logits = optarg; break;
        case F_TOKENS: a->tokens = optarg; break;
        case F_UNIFORMS: a->uniforms = optarg; break;
        case F_X: a->x = optarg; break;
        case F_W1: a->w1 = optarg; break;
        case F_B1: a->b1 = optarg; break;
        case F_W2: a->w2 = optarg; break;
        case F_B2: a->b2 = optarg; break;
        case F_OUTPUT: a->output = optarg; break;
        case F_PLAN: a->plan = optarg; break;
        case F_METRICS: a->metrics = optarg; break;
        case F_GUMBEL: a->gumbel = optarg; break;
        case F_RTS: a->rts = optarg; break;
        case F_SW1: a->sw1 = optarg; break;
        case F_SB1: a->sb1 = optarg; break;
        case F_SW2: a->sw2 = optarg; break;
        case F_SB2: a->sb2 = optarg; break;
        case F_SWG: a->swg = optarg; break;
        case F_PRESET: a->preset = optarg; break;
        case F_WG: a->wg = optarg; break;
        case F_JITTER_U: a->jitter_u = optarg; break;
        case F_ACT:
            if ((rc = moe_act_parse(optarg, &a->act)))
                return rc;
            break;
        case F_SEED: {
            char *end;
            errno = 0;
            a->seed = strtoull(optarg, &end, 10);
            if (!isdigit((unsigned char)*optarg) || *end || errno || a->seed > INT64_MAX)
                return moe_fail(MOE_EINVAL, NULL, "bad value '%s': want a seed in 0..2^63-1 "
                                "(--seed)", optarg);
            break;
        }
        case F_HELP: *help = 1; return MOE_OK;
        case '?':
            return moe_fail(MOE_EINVAL, "`moesim route --help` lists the flags",
                            "unknown or incomplete flag '%s' (command line)", argv[optind - 1]);
        default: given[c - F_OPT0] = optarg;
        }
    }
    if (a->preset) { /* the preset's router and options first, explicit options over them */
        const moe_preset *p;
        if ((rc = moe_preset_lookup(a->preset, &p))) {
            moe_error_where("--preset");
            return rc;
        }
        if (a->router && strcmp(a->router, p->router))
            return moe_fail(MOE_EINVAL, "leave out --router, or give the options without a preset",
                            "--router %s conflicts with preset %s (router %s) (command line)",
                            a->router, p->name, p->router);
        a->router = p->router;
        if ((rc = moe_preset_apply(p, o, NULL, NULL)))
            return rc;
    }
    for (int i = 0; i < n && moe_route_options[i].key; i++) {
        if (given[i] && (rc = moe_route_opts_set(o, moe_route_options[i].key, given[i]))) {
            moe_error_where("--%s", names[i]);
            return rc;
        }
        if (given[i] && (!strcmp(names[i], "capacity") || !strcmp(names[i], "capacity-factor")))
            snprintf(a->cap_flag, sizeof a->cap_flag, "--%.40s", names[i]);
    }
    for (int i = 0; a->router && moe_router_find(a->router) && moe_route_options[i].key; i++)
        if (given[i] && (rc = moe_route_option_check(moe_route_options[i].key, a->router))) {
            moe_error_where("--%s", names[i]);
            return rc;
        }
    if (optind < argc)
        return moe_fail(MOE_EINVAL, "`moesim route --help` lists the flags",
                        "unexpected argument '%s' (command line)", argv[optind]);
    if (!a->router || !(a->logits || a->wg) || !a->plan)
        return moe_fail(MOE_EINVAL, "`moesim route --help` shows an example; --preset NAME "
                        "can take the place of --router",
                        "route needs --router, --logits and --plan (command line)");
    int nl = !!a->x + !!a->w1 + !!a->b1 + !!a->w2 + !!a->b2 + !!a->output;
    if (nl != 0 && nl != 6)
        return moe_fail(MOE_EINVAL, NULL,
                        "the layer needs all of --x --w1 --b1 --w2 --b2 --output, %d of 6 given "
                        "(command line)", nl);
    int ns = !!a->sw1 + !!a->sb1 + !!a->sw2 + !!a->sb2;
    if ((ns != 0 && ns != 4) || (a->swg && ns == 0))
        return moe_fail(MOE_EINVAL, NULL, "shared experts need all of --shared-w1 --shared-b1 "
                        "--shared-w2 --shared-b2, %d of 4 given (command line)", ns);
    if (ns && !nl)
        return moe_fail(MOE_EINVAL, NULL, "shared experts need the layer: --x --w1 --b1 --w2 "
                        "--b2 --output (command line)");
    if (a->wg && (a->logits || nl != 6))
        return moe_fail(MOE_EINVAL, "the gate computes the logits from x and the layer's weights",
                        "--wg replaces --logits and needs the layer (--x --w1 --b1 --w2 --b2 "
                        "--output) (command line)");
    if (a->jitter_u && !o->jitter)
        return moe_fail(MOE_EINVAL, NULL, "--jitter-uniforms needs --jitter (command line)");
    return MOE_OK;
}

int moe_cmd_route(int argc, char **argv)
{
    route_args a = {0};
    a.act = MOE_ACT_GELU_TANH;
    moe_route_opts o;
    moe_route_opts_default(&o);
    int help = 0, rc;
    moe_npy L = {0}, ids = {0}, un = {0};
    double *logits = NULL, *uniforms = NULL, *gumbel = NULL, *rts = NULL, *jit = NULL;
    float *wg = NULL;
    int64_t *tok = NULL;
    moe_pipeline *pipe = NULL;
    layer_in lay = {0};
    int wrote_plan = 0, wrote_metrics = 0;

    if ((rc = parse_args(argc, argv, &a, &o, &help)))
        goto out;
    if (help) {
        usage(stdout);
        goto out;
    }
    const moe_router_type *t = moe_router_find(a.router);
    if (!t) {
        rc = moe_fail(MOE_EINVAL, "`moesim list routers` lists them",
                      "unknown router '%s' (--router)", a.router);
        goto out;
    }
    int n = 0, m = 0, d = 0;
    if ((rc = a.wg ? read_gate(&a, &wg, &n, &m, &d) : read_logits(&a, &L, &logits, &n, &m)))
        goto out;
    if (a.tokens) {
        if ((rc = read_array(a.tokens, "token ids", 1, &ids)) ||
            (rc = moe_npy_as_int64(&ids, what_of("token ids", a.tokens), &tok)))
            goto out;
        if (ids.shape[0] != (size_t)n) {
            rc = moe_fail(MOE_EINPUT, NULL, "token ids have length %zu, logits have %d rows (%s)",
                          ids.shape[0], n, a.tokens);
            goto out;
        }
    }
    if (a.uniforms) {
        if ((rc = read_array(a.uniforms, "uniforms", 1, &un)) ||
            (rc = moe_npy_as_double(&un, what_of("uniforms", a.uniforms), &uniforms)))
            goto out;
        if (un.shape[0] != (size_t)n) {
            rc = moe_fail(MOE_EINPUT, NULL, "uniforms have length %zu, logits have %d rows (%s)",
                          un.shape[0], n, a.uniforms);
            goto out;
        }
    }
    if ((a.gumbel && (rc = read_draws(a.gumbel, "Gumbel uniforms", n, m, &gumbel, 1))) ||
        (a.rts && (rc = read_draws(a.rts, "rts uniforms", n, m, &rts, 1))) ||
        (a.jitter_u && (rc = read_draws(a.jitter_u, "jitter uniforms", n, d, &jit, 0))))
        goto out;
    /* one batch through the pipeline: route, and with weights the layer and its errors (the
     * dropless twin draws from a fresh stream of the same seed) */
    const moe_pipeline_cfg cfg = {
        .rtype = t, .opts = &o, .T = n, .M = m, .seed = a.seed, .label = "moesim route", .wg = wg,
        .flags = MOE_PIPE_METRICS | (a.w1 ? MOE_PIPE_LAYER | MOE_PIPE_ERRORS : 0)};
    if ((rc = moe_pipeline_alloc(&cfg, &pipe)) ||
        (rc = check_memory(&a, &cfg, moe_pipeline_router(pipe)->E,
                           a.cap_flag[0] ? a.cap_flag : NULL)))
        goto out;
    moe_pipeline_set_jitter_draws(pipe, jit);
    if (a.w1) {
        moe_blas_check_coretype(stderr);
        if ((rc = read_layer(&a, n, moe_pipeline_router(pipe)->E, &lay)) ||
            (rc = moe_pipeline_set_experts(pipe, &lay.ex)))
            goto out;
    }
    const moe_batch batch = {n, a.w1 ? lay.ex.d : 0, m, lay.x, tok, logits, NULL, NULL, 0,
                             gumbel, rts};
    if ((rc = moe_pipeline_run_batch(pipe, &batch, uniforms, NULL)))
        goto out;
    const moe_plan *plan = moe_pipeline_plan(pipe);
    const moe_metrics *mt = moe_pipeline_metrics(pipe);
    /* everything computed: now write, each file through a temporary name */
    if ((rc = check_outputs(&a)) || (rc = moe_plan_write_csv(plan, a.plan)))
        goto out;
    wrote_plan = 1;
    if (a.metrics) {
        if ((rc = moe_metrics_write_json(mt, t->name, a.metrics)))
            goto out;
        wrote_metrics = 1;
    }
    if (a.output) {
        size_t shape[2] = {(size_t)n, (size_t)lay.ex.d};
        if ((rc = moe_npy_write(a.output, MOE_F32, moe_pipeline_output(pipe), 2, shape)))
            goto out;
    }
out:
    if (rc) { /* nothing half-written: take back what this command already wrote */
        if (wrote_plan)
            unlink(a.plan);
        if (wrote_metrics)
            unlink(a.metrics);
    }
    moe_pipeline_free(pipe);
    layer_in_free(&lay);
    moe_route_opts_release(&o);
    free(logits);
    free(uniforms);
    free(gumbel);
    free(rts);
    free(jit);
    free(wg);
    free(tok);
    moe_npy_free(&L);
    moe_npy_free(&ids);
    moe_npy_free(&un);
    return rc;
}
