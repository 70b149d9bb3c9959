/* test_shared_route.c: `moesim route` with shared experts (--shared-w1 ... --shared-gate-w)
 * against the fixtures tests/ref/shared_ref.py wrote under tests/fixtures/shared/ (NumPy, float64:
 * routed output from tests/ref/moe_ref.py plus the shared experts from their definition).
 * Checked per case: y within 1e-4 + 1e-3 rel (the layer runs in fp32, as in test_fixtures.c);
 * flops_expert_useful and flops_expert_padded of the metrics JSON equal expected_flops.txt
 * exactly (integers far below 2^53); output_error_dense and output_error_dropless (shared
 * experts on both sides of each) within 1e-4 + 1e-3 rel. Also: the flags' errors (three of four shared files, shared
 * files without the layer, a shared w1 whose D differs from x). Run from the repository root. */
#include "check.h"
#include "cli.h"
#include "moe.h"
#include "npy.h"

#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define ROOT "tests/fixtures/shared"

/* Run `moesim route` in dir with the words of text plus extra (NULL-terminated). */
static int route_in(const char *dir, char *text, const char *const *extra)
{
    char *argv[64];
    int argc = 0;
    argv[argc++] = "route";
    for (char *w = strtok(text, " \t\r\n"); w && argc < 48; w = strtok(NULL, " \t\r\n"))
        argv[argc++] = w;
    for (int i = 0; extra[i] && argc < 63; i++)
        argv[argc++] = (char *)extra[i];
    argv[argc] = NULL;
    char cwd[PATH_MAX];
    if (!getcwd(cwd, sizeof cwd) || chdir(dir) != 0) {
        fprintf(stderr, "test_shared_route: cannot enter %s\n", dir);
        exit(2);
    }
    moe_clear_error();
    int rc = moe_cmd_route(argc, argv);
    if (chdir(cwd) != 0)
        exit(2);
    return rc;
}

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    char *buf = calloc(1, 4096);
    size_t n = buf ? fread(buf, 1, 4095, f) : 0;
    (void)n;
    fclose(f);
    return buf;
}

static void run_case(const char *name, const char *tmp)
{
    char dir[PATH_MAX], path[PATH_MAX + 32], y_out[PATH_MAX], plan_out[PATH_MAX],
        met_out[PATH_MAX];
    snprintf(dir, sizeof dir, ROOT "/%s", name);
    snprintf(y_out, sizeof y_out, "%s/y.npy", tmp);
    snprintf(plan_out, sizeof plan_out, "%s/plan.csv", tmp);
    snprintf(met_out, sizeof met_out, "%s/metrics.json", tmp);
    unlink(y_out), unlink(plan_out), unlink(met_out);
    snprintf(path, sizeof path, "%s/cmd", dir);
    char *cmd = slurp(path);
    CHECK(cmd != NULL, "%s: no cmd", name);
    if (!cmd)
        return;
    const char *extra[] = {"--plan", plan_out, "--metrics", met_out, "--output", y_out, NULL};
    int rc = route_in(dir, cmd, extra);
    free(cmd);
    CHECK(rc == 0, "%s: route failed: %s", name, moe_errmsg());
    if (rc)
        return;
    moe_npy want = {0}, got = {0};
    double *wv = NULL, *gv = NULL;
    snprintf(path, sizeof path, "%s/expected_y.npy", dir);
    if (moe_npy_read(path, &want) || moe_npy_as_double(&want, "expected y", &wv) ||
        moe_npy_read(y_out, &got) || moe_npy_as_double(&got, "y", &gv) ||
        got.count != want.count) {
        CHECK(0, "%s: cannot compare y: %s", name, moe_errmsg());
    } else {
        char what[200];
        snprintf(what, sizeof what, "%s: y with shared experts vs NumPy", name);
        check_close_arrays(what, gv, wv, want.count, 1e-4, 1e-3);
    }
    free(wv), free(gv);
    moe_npy_free(&want), moe_npy_free(&got);
    snprintf(path, sizeof path, "%s/expected_flops.txt", dir);
    char *ft = slurp(path);
    double useful = -1, padded = -1, e_dense = -1, e_dl = -1;
    CHECK(ft && sscanf(ft, "%lf %lf %lf %lf", &useful, &padded, &e_dense, &e_dl) == 4,
          "%s: expected_flops.txt", name);
    free(ft);
    json_error_t err;
    json_t *m = json_load_file(met_out, 0, &err);
    CHECK(m != NULL, "%s: metrics JSON: %s", name, err.text);
    if (m) {
        double gu = json_real_value(json_object_get(m, "flops_expert_useful"));
        double gp = json_real_value(json_object_get(m, "flops_expert_padded"));
        CHECK(gu == useful && gp == padded, "%s: FLOPs useful %.0f padded %.0f, expected %.0f %.0f",
              name, gu, gp, useful, padded);
        /* output errors as test_fixtures.c tolerates them: 1e-4 + 1e-3 relative (fp32 layer) */
        double gd = json_real_value(json_object_get(m, "output_error_dense"));
        double gl = json_real_value(json_object_get(m, "output_error_dropless"));
        CHECK(fabs(gd - e_dense) <= 1e-4 + 1e-3 * e_dense, "%s: output_error_dense %.9g, "
              "expected %.9g", name, gd, e_dense);
        CHECK(fabs(gl - e_dl) <= 1e-4 + 1e-3 * e_dl, "%s: output_error_dropless %.9g, "
              "expected %.9g", name, gl, e_dl);
        json_decref(m);
    }
}

static void expect_error(const char *what, const char *line, const char *fragment)
{
    char buf[1024];
    snprintf(buf, sizeof buf, "%s", line);
    const char *extra[] = {"--plan", "/tmp/moesim_test_shared_never.csv", NULL};
    int rc = route_in(ROOT "/topk_dropless_gate", buf, extra);
    CHECK(rc != 0 && strstr(moe_errmsg(), fragment) != NULL, "%s: rc %d, message: %s", what, rc,
          moe_errmsg());
    CHECK(access("/tmp/moesim_test_shared_never.csv", F_OK) != 0, "%s: no plan written", what);
}

int main(void)
{
    char tmp[] = "/tmp/moesim_test_shared_XXXXXX";
    if (!mkdtemp(tmp)) {
        perror("mkdtemp");
        return 2;
    }
    run_case("topk_dropless_gate", tmp);
    run_case("switch_drops_nogate", tmp);
    const char *layer = "--router topk --logits logits.npy --x x.npy --w1 w1.npy --b1 b1.npy "
                        "--w2 w2.npy --b2 b2.npy --output /tmp/moesim_test_shared_never.npy ";
    char line[1024];
    snprintf(line, sizeof line, "%s--shared-w1 sw1.npy --shared-b1 sb1.npy --shared-w2 sw2.npy",
             layer);
    expect_error("three of four", line, "3 of 4 given");
    expect_error("no layer", "--router topk --logits logits.npy --shared-w1 sw1.npy "
                 "--shared-b1 sb1.npy --shared-w2 sw2.npy --shared-b2 sb2.npy",
                 "shared experts need the layer");
    snprintf(line, sizeof line, "%s--shared-w1 w1.npy --shared-b1 sb1.npy --shared-w2 sw2.npy "
             "--shared-b2 sb2.npy", layer); /* w1 (4,8,16): b1 should then be (4,16) */
    expect_error("shapes", line, "shared b1");
    snprintf(line, sizeof line, "%s--shared-gate-w swg.npy", layer);
    expect_error("gate without experts", line, "0 of 4 given");
    char p[PATH_MAX + 16];
    const char *outs[] = {"y.npy", "plan.csv", "metrics.json"};
    for (int i = 0; i < 3; i++) {
        snprintf(p, sizeof p, "%s/%s", tmp, outs[i]);
        unlink(p);
    }
    rmdir(tmp);
    return check_report("test_shared_route");
}
