/* test_api_layer.c: moesim_layer of the C API (sim/api.c, sim/moesim_api.h) and its layer
 * options (pad_to_capacity), linked statically as every unit test (it also runs under the
 * sanitizers).
 *
 * Checked:
 *   - a hand-worked plan (values in hand_case) with a gap below an expert's last filled slot:
 *     y exact, padded and unpadded, and the rows the experts ran: unpadded each expert's slots up
 *     to its last filled one (3 + 1), padded E x C = 2 x 3;
 *   - a random sparse plan (E = 4, C = 10, gaps, dropped tokens) with gelu_tanh and SwiGLU: y
 *     padded equals y unpadded bit for bit (memcmp), rows E x C against the rows recounted here
 *     from the plan; pad_to_capacity = false equals no option;
 *   - a dense plan (slots mixing tokens, as soft_moe's) with the option: y unchanged, E x C rows
 *     (a dense layer runs every slot) with or without it;
 *   - errors, one line each and rows_run left as it was: a routing option that is not the
 *     layer's, a bad value, a missing key; -1 before any call.
 */
#include "check.h"
#include "moe.h"
#include "moesim_api.h"

#include <gsl/gsl_rng.h>
#include <string.h>

static const char *const pad_key[] = {"pad_to_capacity"};
static const char *const pad_on[] = {"true"}, *const pad_off[] = {"false"};

/* T = 3, E = 2, C = 3, D = 2, F = 1, relu. Expert 0: w1 = (1, 1), b1 = 0, w2 = (2, -1),
 * b2 = (0.5, 0); expert 1: w1 = (1, -1), b1 = 1, w2 = (1, 1), b2 = (0, 0).
 * token 0 (1, 2)       -> expert 0 slot 0, combine 0.5: h = 3, relu 3, out (6.5, -3) -> (3.25, -1.5)
 * token 1 (-1, 0.5)    -> expert 0 slot 2, combine 1: h = -0.5, relu 0, out = b2 = (0.5, 0)
 * token 2 (0.25, 0.75) -> expert 1 slot 0, combine 1: h = 0.5, out (0.5, 0.5)
 * Slot 1 of expert 0 is empty: unpadded the experts run 3 + 1 rows, padded 2 x 3. */
static void hand_case(void)
{
    const float x[] = {1, 2, -1, 0.5f, 0.25f, 0.75f};
    const float w1[] = {1, 1, 1, -1}, b1[] = {0, 1}, w2[] = {2, -1, 1, 1}, b2[] = {0.5f, 0, 0, 0};
    const int32_t tok[] = {0, 1, 2}, exp_[] = {0, 0, 1}, slot[] = {0, 2, 0};
    const double dw[] = {1, 1, 1}, cw[] = {0.5, 1, 1};
    const float want[] = {3.25f, -1.5f, 0.5f, 0, 0.5f, 0.5f};
    for (int pad = 0; pad < 2; pad++) {
        moesim_plan_view pv = {3, 2, 3, 0, 3, tok, exp_, slot, dw, cw, pad, pad_key, pad_on};
        float y[6];
        int rc = moesim_layer(&pv, x, 2, 1, w1, b1, w2, b2, "relu", y);
        CHECK(rc == 0, "hand case pad=%d: %s", pad, moesim_errmsg());
        CHECK(memcmp(y, want, sizeof y) == 0, "hand case pad=%d: y = %g %g %g %g %g %g", pad,
              y[0], y[1], y[2], y[3], y[4], y[5]);
        CHECK_INT(moesim_layer_rows_run(), pad ? 6 : 4);
    }
}

/* rows an unpadded layer runs: each expert's slots up to its last filled one */
static long rows_used(const int32_t *exp_, const int32_t *slot, size_t n, int E)
{
    long hi[16] = {0}, s = 0;
    for (size_t i = 0; i < n; i++)
        if (slot[i] + 1 > hi[exp_[i]])
            hi[exp_[i]] = slot[i] + 1;
    for (int e = 0; e < E; e++)
        s += hi[e];
    return s;
}

static float *uniform_f(gsl_rng *r, size_t n, double a)
{
    float *v = malloc(n * sizeof *v);
    for (size_t i = 0; v && i < n; i++)
        v[i] = (float)(a * (2.0 * gsl_rng_uniform(r) - 1.0));
    return v;
}

/* A random plan: token t claims expert (t + j) % E for j < 2 when that expert has a slot left,
 * at slot 2 * load (every other slot empty), so C = 10 leaves gaps and drops. */
static void random_case(gsl_rng *r, const char *act, int dense)
{
    enum { T = 50, E = 4, C = 10, D = 8, F = 16 };
    const int FW = strcmp(act, "swiglu") == 0 ? 2 * F : F;
    float *x = uniform_f(r, (size_t)T * D, 1.0), *w1 = uniform_f(r, (size_t)E * D * FW, 0.3);
    float *b1 = uniform_f(r, (size_t)E * FW, 0.1), *w2 = uniform_f(r, (size_t)E * F * D, 0.3);
    float *b2 = uniform_f(r, (size_t)E * D, 0.1);
    int32_t tok[2 * T], exp_[2 * T], slot[2 * T];
    double dw[2 * T], cw[2 * T];
    int load[E] = {0};
    size_t n = 0;
    for (int t = 0; t < T; t++)
        for (int j = 0; j < 2; j++) {
            int e = (t * 3 + j) % E;
            if (dense) { /* slots mixing several tokens with weights, as soft_moe's */
                tok[n] = t, exp_[n] = e, slot[n] = (t + 3 * j) % C;
                dw[n] = gsl_rng_uniform(r), cw[n] = gsl_rng_uniform(r);
                n++;
                continue;
            }
            if (2 * load[e] >= C)
                continue;
            tok[n] = t, exp_[n] = e, slot[n] = 2 * load[e]++;
            dw[n] = 1.0, cw[n] = gsl_rng_uniform(r);
            n++;
        }
    float *y0 = malloc((size_t)T * D * sizeof *y0), *y1 = malloc((size_t)T * D * sizeof *y1);
    float *y2 = malloc((size_t)T * D * sizeof *y2);
    moesim_plan_view pv = {T, E, C, dense, n, tok, exp_, slot, dw, cw, 0, NULL, NULL};
    int rc = moesim_layer(&pv, x, D, F, w1, b1, w2, b2, act, y0);
    long r0 = moesim_layer_rows_run();
    pv.n_opts = 1, pv.keys = pad_key, pv.values = pad_on;
    rc = rc ? rc : moesim_layer(&pv, x, D, F, w1, b1, w2, b2, act, y1);
    long r1 = moesim_layer_rows_run();
    pv.values = pad_off;
    rc = rc ? rc : moesim_layer(&pv, x, D, F, w1, b1, w2, b2, act, y2);
    long r2 = moesim_layer_rows_run();
    CHECK(rc == 0, "random %s dense=%d: %s", act, dense, moesim_errmsg());
    CHECK(memcmp(y0, y1, (size_t)T * D * sizeof *y0) == 0 &&
              memcmp(y0, y2, (size_t)T * D * sizeof *y0) == 0,
          "random %s dense=%d: padded y differs from unpadded", act, dense);
    if (dense) /* a dense plan runs every slot, with or without the option */
        CHECK(r0 == (long)E * C && r1 == r0 && r2 == r0, "dense rows %ld %ld %ld, want %d", r0,
              r1, r2, E * C);
    else
        CHECK(r0 == rows_used(exp_, slot, n, E) && r1 == (long)E * C && r2 == r0 &&
                  r0 < (long)E * C,
              "random %s: rows unpadded %ld (want %ld), padded %ld (want %d), false %ld", act,
              r0, rows_used(exp_, slot, n, E), r1, E * C, r2);
    free(x), free(w1), free(b1), free(w2), free(b2), free(y0), free(y1), free(y2);
}

static void errors(void)
{
    const float x[] = {1, 2}, w1[] = {1, 1}, b1[] = {0}, w2[] = {1, 1}, b2[] = {0, 0};
    const int32_t tok[] = {0}, exp_[] = {0}, slot[] = {0};
    const double dw[] = {1}, cw[] = {1};
    float y[2];
    long before = moesim_layer_rows_run();
    static const char *const cf_key[] = {"capacity_factor"}, *const cf_val[] = {"1.25"};
    static const char *const two[] = {"2"};
    moesim_plan_view pv = {1, 1, 1, 0, 1, tok, exp_, slot, dw, cw, 1, cf_key, cf_val};
    int rc = moesim_layer(&pv, x, 2, 1, w1, b1, w2, b2, "relu", y);
    CHECK(rc == MOESIM_EINVAL &&
              strstr(moesim_errmsg(), "option capacity_factor is not an option of the layer"),
          "routing option: %d %s", rc, moesim_errmsg());
    pv.keys = pad_key, pv.values = two;
    rc = moesim_layer(&pv, x, 2, 1, w1, b1, w2, b2, "relu", y);
    CHECK(rc == MOESIM_EINVAL && strstr(moesim_errmsg(), "bad value '2' for option "
                                                         "pad_to_capacity"),
          "bad value: %d %s", rc, moesim_errmsg());
    pv.keys = NULL;
    rc = moesim_layer(&pv, x, 2, 1, w1, b1, w2, b2, "relu", y);
    CHECK(rc == MOESIM_EINVAL && strstr(moesim_errmsg(), "layer option 0 has no key"),
          "no key: %d %s", rc, moesim_errmsg());
    CHECK_INT(moesim_layer_rows_run(), before);
}

int main(void)
{
    CHECK_INT(moesim_layer_rows_run(), -1);
    hand_case();
    gsl_rng *r = moe_rng_alloc(20261205, 11);
    random_case(r, "gelu_tanh", 0);
    random_case(r, "swiglu", 0);
    random_case(r, "gelu_tanh", 1);
    gsl_rng_free(r);
    errors();
    CHECK_INT(moesim_api_version(), 4);
    return check_report("test_api_layer");
}
