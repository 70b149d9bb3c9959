/* test_fixtures.c: `moesim route` (moe_cmd_route) against the committed fixtures in
 * tests/fixtures/route/, which tests/ref/gen_fixtures.py produced from the independent NumPy
 * reference of docs/routing.md (tests/ref/moe_ref.py; `make fixtures` regenerates them).
 *
 * For every case folder: read `cmd` (one line of route arguments, file names relative to the
 * folder), run moe_cmd_route inside the folder with --plan/--metrics (and --output when
 * expected_y.npy exists) pointing into a mkdtemp folder, then compare
 *   - the plan, rows sorted by (token, expert, slot): token/expert/slot exactly, weights within
 *     1e-6 abs + 1e-5 rel;
 *   - every key of expected_metrics.json: integer-valued keys exactly, floats within
 *     1e-6 + 1e-5 rel, output errors within 1e-4 + 1e-3 rel (the layer runs in fp32), null as null;
 *   - the layer output y against expected_y.npy within 1e-4 + 1e-3 rel.
 * One check per case and compared quantity, naming the case and the worst difference; plus a
 * check that at least 30 cases exist (or MIN_CASES). Usage: test_fixtures [FIXTURE_DIR [MIN_CASES]]
 * (run from the repo root).
 */
#include "check.h"
#include "cli.h"
#include "moe.h"
#include "npy.h"
#include "../routers/par.h"

#include <dirent.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define FIXTURE_DIR "tests/fixtures/route"
#define MIN_CASES 30
#define MAX_ARGS 128

#define PLAN_ABS 1e-6
#define PLAN_REL 1e-5
#define MET_ABS 1e-6
#define MET_REL 1e-5
#define OUT_ABS 1e-4 /* layer output and output errors: the C layer runs in fp32 */
#define OUT_REL 1e-3

/* ---- small helpers ------------------------------------------------------------------------ */

static int file_exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

/* out = dir/file; exits the test on an over-long path (a fixture layout error). */
static void path_join(char *out, size_t len, const char *dir, const char *file)
{
    int w = snprintf(out, len, "%s/%s", dir, file);
    if (w < 0 || (size_t)w >= len) {
        fprintf(stderr, "test_fixtures: path too long: %s/%s\n", dir, file);
        exit(2);
    }
}

static char *read_text(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    size_t cap = 1024, len = 0;
    char *buf = malloc(cap);
    size_t got;
    while (buf && (got = fread(buf + len, 1, cap - len - 1, f)) > 0) {
        len += got;
        if (len + 1 == cap) {
            char *nb = realloc(buf, cap *= 2);
            if (!nb)
                free(buf);
            buf = nb;
        }
    }
    fclose(f);
    if (buf)
        buf[len] = '\0';
    return buf;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static double tol_excess(double got, double ref, double abs_tol, double rel_tol)
{
    return fabs(got - ref) - (abs_tol + fabs(ref) * rel_tol);
}

/* ---- plans -------------------------------------------------------------------------------- */

typedef struct {
    long token, expert, slot;
    double dw, cw;
} plan_row;

static int cmp_row(const void *a, const void *b)
{
    const plan_row *x = a, *y = b;
    if (x->token != y->token)
        return x->token < y->token ? -1 : 1;
    if (x->expert != y->expert)
        return x->expert < y->expert ? -1 : 1;
    if (x->slot != y->slot)
        return x->slot < y->slot ? -1 : 1;
    return 0;
}

/* Reads a plan CSV (exact header) into rows sorted by (token, expert, slot).
 * Returns 0, or -1 with a reason in why. */
static int read_plan(const char *path, plan_row **rows, size_t *n, char *why, size_t why_len)
{
    *rows = NULL;
    *n = 0;
    char *text = read_text(path);
    if (!text) {
        snprintf(why, why_len, "cannot read %s", path);
        return -1;
    }
    const char *hdr = "token,expert,slot,dispatch_weight,combine_weight\n";
    if (strncmp(text, hdr, strlen(hdr)) != 0) {
        snprintf(why, why_len, "%s: header is not '%.*s'", path, (int)strlen(hdr) - 1, hdr);
        free(text);
        return -1;
    }
    size_t cap = 64;
    plan_row *r = malloc(cap * sizeof *r);
    char *line = text + strlen(hdr), *next;
    int lineno = 2;
    for (; r && *line; line = next, lineno++) {
        next = strchr(line, '\n');
        if (next)
            *next++ = '\0';
        else
            next = line + strlen(line);
        if (*line == '\0')
            continue;
        if (*n == cap) {
            plan_row *nr = realloc(r, (cap *= 2) * sizeof *r);
            if (!nr)
                free(r);
            r = nr;
            if (!r)
                break;
        }
        plan_row *w = &r[*n];
        char *p = line, *end;
        w->token = strtol(p, &end, 10);
        int ok = end != p && *end == ',';
        if (ok) { p = end + 1; w->expert = strtol(p, &end, 10); ok = end != p && *end == ','; }
        if (ok) { p = end + 1; w->slot = strtol(p, &end, 10); ok = end != p && *end == ','; }
        if (ok) { p = end + 1; w->dw = strtod(p, &end); ok = end != p && *end == ','; }
        if (ok) {
            p = end + 1;
            w->cw = strtod(p, &end);
            ok = end != p && (*end == '\0' || *end == '\r');
        }
        if (!ok) {
            snprintf(why, why_len, "%s:%d: malformed row", path, lineno);
            free(r);
            free(text);
            return -1;
        }
        (*n)++;
    }
    free(text);
    if (!r) {
        snprintf(why, why_len, "out of memory reading %s", path);
        return -1;
    }
    qsort(r, *n, sizeof *r, cmp_row);
    *rows = r;
    return 0;
}

static void compare_plan(const char *name, const char *want_path, const char *got_path)
{
    plan_row *want = NULL, *got = NULL;
    size_t nw = 0, ng = 0;
    char why[512];
    if (read_plan(want_path, &want, &nw, why, sizeof why) != 0 ||
        read_plan(got_path, &got, &ng, why, sizeof why) != 0) {
        CHECK(0, "%s: plan: %s", name, why);
        free(want);
        free(got);
        return;
    }
    size_t bad = 0, first = 0;
    for (size_t i = 0; i < nw && i < ng; i++)
        if (cmp_row(&want[i], &got[i]) != 0 && bad++ == 0)
            first = i;
    if (nw != ng)
        CHECK(0, "%s: plan has %zu rows, expected %zu", name, ng, nw);
    else
        CHECK(bad == 0, "%s: plan (token,expert,slot) differ in %zu of %zu rows; first at row %zu: "
              "got (%ld,%ld,%ld) expected (%ld,%ld,%ld)", name, bad, nw, first,
              got[first].token, got[first].expert, got[first].slot,
              want[first].token, want[first].expert, want[first].slot);
    if (nw == ng && bad == 0 && nw > 0) {
        double *gv = malloc(2 * nw * sizeof *gv), *wv = malloc(2 * nw * sizeof *wv);
        if (gv && wv) {
            for (size_t i = 0; i < nw; i++) {
                gv[2 * i] = got[i].dw, gv[2 * i + 1] = got[i].cw;
                wv[2 * i] = want[i].dw, wv[2 * i + 1] = want[i].cw;
            }
            char what[300];
            snprintf(what, sizeof what, "%s: plan weights (index 2*row + 0 dispatch, 1 combine)",
                     name);
            check_close_arrays(what, gv, wv, 2 * nw, PLAN_ABS, PLAN_REL);
        } else {
            CHECK(0, "%s: out of memory", name);
        }
        free(gv);
        free(wv);
    }
    free(want);
    free(got);
}

/* ---- metrics ------------------------------------------------------------------------------ */

static int is_exact_key(const char *key)
{
    static const char *const exact[] = {"n_tokens", "num_experts", "capacity", "num_entries",
                                        "assigned_load", "kept_load", "experts_per_token",
                                        "flops_gate", "flops_expert_useful",
                                        "flops_expert_padded", "flops_soft_dispatch",
                                        "flops_soft_combine", "flops_expert_executed", NULL};
    for (int i = 0; exact[i]; i++)
        if (!strcmp(key, exact[i]))
            return 1;
    return 0;
}

static void compare_metric(const char *name, const char *key, json_t *want, json_t *got)
{
    int exact = is_exact_key(key);
    int out = !strncmp(key, "output_error", 12);
    double abs_tol = out ? OUT_ABS : MET_ABS, rel_tol = out ? OUT_REL : MET_REL;
    if (!got) {
        CHECK(0, "%s: metrics key \"%s\" missing", name, key);
    } else if (json_is_string(want)) {
        CHECK(json_is_string(got) && !strcmp(json_string_value(got), json_string_value(want)),
              "%s: %s = %s, expected \"%s\"", name, key,
              json_is_string(got) ? json_string_value(got) : "(not a string)",
              json_string_value(want));
    } else if (json_is_null(want)) {
        CHECK(json_is_null(got), "%s: %s = %g, expected null", name, key,
              json_is_number(got) ? json_number_value(got) : NAN);
    } else if (json_is_number(want)) {
        double w = json_number_value(want), g = json_is_number(got) ? json_number_value(got) : NAN;
        if (!json_is_number(got))
            CHECK(0, "%s: %s is %s, expected %.17g", name, key,
                  json_is_null(got) ? "null" : "not a number", w);
        else if (exact)
            CHECK(g == w, "%s: %s = %.17g, expected %.17g (exact)", name, key, g, w);
        else
            CHECK(tol_excess(g, w, abs_tol, rel_tol) <= 0,
                  "%s: %s = %.17g, expected %.17g (diff %.3g, tol %g + %g rel)", name, key, g,
                  w, fabs(g - w), abs_tol, rel_tol);
    } else if (json_is_array(want)) {
        size_t n = json_array_size(want);
        if (!json_is_array(got) || json_array_size(got) != n) {
            CHECK(0, "%s: %s has %zu values, expected %zu", name, key,
                  json_is_array(got) ? json_array_size(got) : 0, n);
            return;
        }
        size_t bad = 0, worst = 0;
        double worst_excess = -INFINITY;
        for (size_t i = 0; i < n; i++) {
            json_t *gi = json_array_get(got, i);
            double w = json_number_value(json_array_get(want, i));
            double g = json_is_number(gi) ? json_number_value(gi) : NAN;
            double ex = exact ? (g == w ? -1.0 : fabs(g - w)) : tol_excess(g, w, abs_tol, rel_tol);
            if (!(ex <= 0))
                bad++;
            if (!(ex <= worst_excess)) {
                worst_excess = ex;
                worst = i;
            }
        }
        double gw = n ? json_number_value(json_array_get(got, worst)) : 0;
        double ww = n ? json_number_value(json_array_get(want, worst)) : 0;
        CHECK(bad == 0, "%s: %s: %zu of %zu values differ%s; worst [%zu] = %.17g, expected %.17g",
              name, key, bad, n, exact ? " (exact)" : "", worst, gw, ww);
    } else {
        CHECK(0, "%s: expected_metrics.json: key %s has an unexpected type", name, key);
    }
}

static void compare_metrics(const char *name, const char *want_path, const char *got_path)
{
    json_error_t err;
    json_t *want = json_load_file(want_path, 0, &err);
    if (!want) {
        CHECK(0, "%s: cannot read %s: %s (line %d)", name, want_path, err.text, err.line);
        return;
    }
    json_t *got = json_load_file(got_path, 0, &err);
    if (!got || !json_is_object(got)) {
        CHECK(0, "%s: metrics output %s is not a JSON object: %s (line %d)", name, got_path,
              got ? "not an object" : err.text, got ? 0 : err.line);
    } else {
        const char *key;
        json_t *val;
        json_object_foreach(want, key, val)
            compare_metric(name, key, val, json_object_get(got, key));
    }
    json_decref(got);
    json_decref(want);
}

/* ---- layer output ------------------------------------------------------------------------- */

static void compare_y(const char *name, const char *want_path, const char *got_path)
{
    moe_npy want = {0}, got = {0};
    double *wv = NULL, *gv = NULL;
    if (moe_npy_read(want_path, &want) != MOE_OK || moe_npy_as_double(&want, "expected y", &wv)) {
        CHECK(0, "%s: cannot read %s: %s", name, want_path, moe_errmsg());
    } else if (moe_npy_read(got_path, &got) != MOE_OK || moe_npy_as_double(&got, "y", &gv)) {
        CHECK(0, "%s: layer output: %s", name, moe_errmsg());
    } else if (got.ndim != want.ndim || got.count != want.count ||
               got.shape[0] != want.shape[0]) {
        CHECK(0, "%s: y has %d dims, %zu values, expected %d dims, %zu values", name, got.ndim,
              got.count, want.ndim, want.count);
    } else {
        char what[300];
        snprintf(what, sizeof what, "%s: layer output y (flat index t*d + j)", name);
        check_close_arrays(what, gv, wv, want.count, OUT_ABS, OUT_REL);
    }
    free(wv);
    free(gv);
    moe_npy_free(&want);
    moe_npy_free(&got);
}

/* ---- one case ----------------------------------------------------------------------------- */

static void run_case(const char *root, const char *name, const char *tmp)
{
    char dir[PATH_MAX], path[PATH_MAX], cwd[PATH_MAX];
    char plan_out[PATH_MAX], met_out[PATH_MAX], y_out[PATH_MAX];
    path_join(dir, sizeof dir, root, name);
    path_join(plan_out, sizeof plan_out, tmp, "plan.csv");
    path_join(met_out, sizeof met_out, tmp, "metrics.json");
    path_join(y_out, sizeof y_out, tmp, "y.npy");
    unlink(plan_out);
    unlink(met_out);
    unlink(y_out);

    path_join(path, sizeof path, dir, "cmd");
    char *cmd = read_text(path);
    if (!cmd) {
        CHECK(0, "%s: cannot read %s", name, path);
        return;
    }
    path_join(path, sizeof path, dir, "expected_y.npy");
    int layer = file_exists(path);

    /* argv: "route", the words of cmd, then the outputs (getopt may permute the array, so the
     * strings are owned through a second array). */
    char *owned[MAX_ARGS], *argv[MAX_ARGS + 1];
    int argc = 0, overflow = 0;
    owned[argc++] = strdup("route");
    for (char *w = strtok(cmd, " \t\r\n"); w; w = strtok(NULL, " \t\r\n")) {
        if (argc + 7 >= MAX_ARGS) {
            overflow = 1;
            break;
        }
        owned[argc++] = strdup(w);
    }
    owned[argc++] = strdup("--plan");
    owned[argc++] = strdup(plan_out);
    owned[argc++] = strdup("--metrics");
    owned[argc++] = strdup(met_out);
    if (layer) {
        owned[argc++] = strdup("--output");
        owned[argc++] = strdup(y_out);
    }
    free(cmd);
    for (int i = 0; i < argc; i++)
        argv[i] = owned[i];
    argv[argc] = NULL;

    int rc = -1;
    if (overflow) {
        CHECK(0, "%s: cmd has more than %d words", name, MAX_ARGS - 8);
    } else if (!getcwd(cwd, sizeof cwd) || chdir(dir) != 0) {
        CHECK(0, "%s: cannot enter %s", name, dir);
    } else {
        moe_clear_error();
        rc = moe_cmd_route(argc, argv);
        if (chdir(cwd) != 0) {
            fprintf(stderr, "test_fixtures: cannot return to %s\n", cwd);
            exit(2);
        }
        CHECK(rc == 0, "%s: moe_cmd_route returned %d: %s", name, rc, moe_errmsg());
    }
    for (int i = 0; i < argc; i++)
        free(owned[i]);
    if (rc != 0)
        return;

    path_join(path, sizeof path, dir, "expected_plan.csv");
    compare_plan(name, path, plan_out);
    path_join(path, sizeof path, dir, "expected_metrics.json");
    compare_metrics(name, path, met_out);
    if (layer) {
        path_join(path, sizeof path, dir, "expected_y.npy");
        compare_y(name, path, y_out);
    }
}

int main(int argc, char **argv)
{
    const char *root = argc > 1 ? argv[1] : FIXTURE_DIR;
    size_t min_cases = argc > 2 ? (size_t)strtoul(argv[2], NULL, 10) : MIN_CASES;
    char *names[1024];
    size_t n = 0;
    DIR *d = opendir(root);
    if (d) {
        struct dirent *de;
        char sub[PATH_MAX], cmdpath[PATH_MAX];
        while ((de = readdir(d)) && n < sizeof names / sizeof *names) {
            if (de->d_name[0] == '.')
                continue;
            path_join(sub, sizeof sub, root, de->d_name);
            path_join(cmdpath, sizeof cmdpath, sub, "cmd");
            if (file_exists(cmdpath))
                names[n++] = strdup(de->d_name);
        }
        closedir(d);
    }
    CHECK(n >= min_cases, "%zu fixture cases in %s, expected at least %zu (run from the repo root)",
          n, root, min_cases);
    qsort(names, n, sizeof *names, cmp_str);

    char tmp[] = "/tmp/moesim_fixtures_XXXXXX";
    if (!mkdtemp(tmp)) {
        perror("test_fixtures: mkdtemp");
        return 1;
    }
    for (size_t i = 0; i < n; i++)
        run_case(root, names[i], tmp);
    /* again with every parallel pass of the routers split over two threads, however few the
     * tokens (routers/par.h): the plans do not depend on the threads */
    fprintf(stderr, "test_fixtures: the cases again on 2 threads, passes split at any size\n");
    moe_par_set_threads(2);
    moe_par_set_grain(1);
    for (size_t i = 0; i < n; i++) {
        run_case(root, names[i], tmp);
        free(names[i]);
    }
    moe_par_set_threads(0);
    moe_par_set_grain(0);
    char p[PATH_MAX];
    const char *outs[] = {"plan.csv", "metrics.json", "y.npy"};
    for (int i = 0; i < 3; i++) {
        path_join(p, sizeof p, tmp, outs[i]);
        unlink(p);
    }
    rmdir(tmp);
    return check_report("test_fixtures");
}
