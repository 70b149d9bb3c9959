/* test_layer.c: the MoE layer (sim/layer.c) against its naive double-precision reference.
 *
 * Plans are built by hand with moe_plan_push (no routers), weights drawn from PCG streams
 * through gsl_ran_gaussian. Checked: forward == forward_naive for every activation on sparse
 * plans with drops, empty experts, slot gaps and tokens without entries (which must get y = 0),
 * and on dense (soft) plans in token order and shuffled; forward with k = E and combine p equals
 * the dense mixture; the gate GEMM equals a double loop; activations at hand-computed points
 * and against libm in double over [-10, 10]; moe_rel_l2 on hand values; error paths.
 * Layer-vs-reference tolerance: abs 1e-4 + |ref| * 1e-4 (fp32 GEMMs vs double loops on O(1)
 * values with D, F <= 24 terms per sum), worst difference reported by check_close_arrays. */
#include "check.h"
#include "layer.h"
#include "layer_act.h"
#include "blas_info.h"
#include "layer_gemm.h"

#include <gsl/gsl_randist.h>
#include <string.h>

#define TOL_ABS 1e-4
#define TOL_REL 1e-4

typedef struct {
    moe_experts w;
    float *w1, *b1, *w2, *b2;
} owned_experts;

static void fill_gauss(gsl_rng *r, float *v, size_t len, double sigma)
{
    for (size_t i = 0; i < len; i++)
        v[i] = (float)gsl_ran_gaussian(r, sigma);
}

/* Weights scaled 1/sqrt(fan-in) so hidden values and outputs stay O(1). */
static void experts_make(owned_experts *o, gsl_rng *r, int E, int d, int f, int act)
{
    size_t fw = act == MOE_ACT_SWIGLU ? 2 * (size_t)f : (size_t)f;
    o->w1 = malloc((size_t)E * d * fw * sizeof(float));
    o->b1 = malloc((size_t)E * fw * sizeof(float));
    o->w2 = malloc((size_t)E * f * d * sizeof(float));
    o->b2 = malloc((size_t)E * d * sizeof(float));
    fill_gauss(r, o->w1, (size_t)E * d * fw, 1.0 / sqrt(d));
    fill_gauss(r, o->b1, (size_t)E * fw, 0.3);
    fill_gauss(r, o->w2, (size_t)E * f * d, 1.0 / sqrt(f));
    fill_gauss(r, o->b2, (size_t)E * d, 0.3);
    o->w = (moe_experts){E, d, f, act, o->w1, o->b1, o->w2, o->b2, NULL};
}

static void experts_free(owned_experts *o)
{
    free(o->w1), free(o->b1), free(o->w2), free(o->b2);
}

static void compare(const char *what, const float *got, const float *ref, size_t len)
{
    double *g = malloc(len * sizeof *g), *rf = malloc(len * sizeof *rf);
    for (size_t i = 0; i < len; i++) {
        g[i] = got[i];
        rf[i] = ref[i];
    }
    check_close_arrays(what, g, rf, len, TOL_ABS, TOL_REL);
    free(g), free(rf);
}

/* Token-choice plan, choice-major claims (docs/routing.md section 2): each token t with
 * t % 7 != 3 picks k distinct experts uniformly among 0..E-2 (expert E-1 stays empty); a claim
 * gets its expert's next slot or is dropped at capacity C. dispatch_w = 1 except 0.5 on every
 * fifth entry (the layer must scale by it); combine_w ~ U(0,1). With gaps = 1, slots are
 * remapped by s -> (3 s + 1) mod C (C not a multiple of 3), so experts have unfilled slots
 * below their highest one. has[t] = 1 when token t kept an entry. */
static void plan_sparse(moe_plan *p, gsl_rng *r, int n, int E, int k, long C, int gaps, int *has)
{
    moe_plan_reset(p, n, E, E);
    p->k = k;
    p->capacity = C;
    int *pick = malloc((size_t)n * k * sizeof *pick), *pool = malloc((size_t)E * sizeof *pool);
    long *fill = calloc((size_t)E, sizeof *fill);
    for (int t = 0; t < n; t++) {
        for (int e = 0; e < E - 1; e++)
            pool[e] = e;
        gsl_ran_shuffle(r, pool, (size_t)(E - 1), sizeof *pool);
        for (int j = 0; j < k; j++)
            pick[t * k + j] = pool[j];
        has[t] = 0;
    }
    for (int j = 0; j < k; j++)
        for (int t = 0; t < n; t++) {
            if (t % 7 == 3)
                continue;
            int e = pick[t * k + j];
            if (fill[e] >= C)
                continue; /* dropped */
            long s = fill[e]++;
            if (gaps)
                s = (3 * s + 1) % C;
            double dw = p->n_entries % 5 == 4 ? 0.5 : 1.0;
            moe_plan_push(p, t, e, (int32_t)s, dw, gsl_rng_uniform(r));
            has[t] = 1;
        }
    free(pick), free(pool), free(fill);
}

/* Dense (soft) plan: column j = e*P + s; dispatch = softmax over tokens per column, combine =
 * softmax over columns per token (docs/routing.md, soft_moe), logits ~ N(0,1). Token `skip` (if
 * >= 0) gets no entries. shuffle: entries in random order instead of token order. */
static void plan_soft(moe_plan *p, gsl_rng *r, int n, int E, int P, int skip, int shuffle)
{
    int M = E * P;
    moe_plan_reset(p, n, E, M);
    p->capacity = P;
    p->dense = 1;
    double *lg = malloc((size_t)n * M * sizeof *lg), *col = malloc((size_t)n * sizeof *col);
    double *disp = malloc((size_t)n * M * sizeof *disp), *cmb = malloc((size_t)n * M * sizeof *cmb);
    for (int i = 0; i < n * M; i++)
        lg[i] = gsl_ran_gaussian(r, 1.0);
    for (int j = 0; j < M; j++) {
        for (int t = 0; t < n; t++)
            col[t] = lg[t * M + j];
        moe_softmax(col, n, col);
        for (int t = 0; t < n; t++)
            disp[t * M + j] = col[t];
    }
    for (int t = 0; t < n; t++)
        moe_softmax(lg + (size_t)t * M, M, cmb + (size_t)t * M);
    for (int t = 0; t < n; t++)
        for (int j = 0; j < M; j++)
            if (t != skip)
                moe_plan_push(p, t, j / P, j % P, disp[t * M + j], cmb[t * M + j]);
    if (shuffle)
        gsl_ran_shuffle(r, p->entries, p->n_entries, sizeof *p->entries);
    free(lg), free(col), free(disp), free(cmb);
}

/* ---- activations ---- */

static void test_activations(void)
{
    /* gelu_tanh(1) = 0.5 (1 + tanh(sqrt(2/pi) * 1.044715)) = 0.8411919906082768 (the formula
     * in double, NumPy: 0.5*(1+np.tanh(np.sqrt(2/np.pi)*(1+0.044715)))); gelu_erf(1) = Phi(1) =
     * 0.5 (1 + erf(1/sqrt 2)) = 0.8413447460685429 (the standard normal CDF at 1); relu(-2) = 0
     * and relu(3) = 3 by definition. Tolerance 1.2e-7: two float ulps at 0.84 (ulp 6e-8). */
    float v[2] = {1.0f, -2.0f};
    moe_activate(MOE_ACT_GELU_TANH, v, 1);
    CHECK_NEAR(v[0], 0.8411919906082768, 1.2e-7);
    v[0] = 1.0f;
    moe_activate(MOE_ACT_GELU_ERF, v, 1);
    CHECK_NEAR(v[0], 0.8413447460685429, 1.2e-7);
    v[0] = 3.0f;
    moe_activate(MOE_ACT_RELU, v, 2);
    CHECK(v[0] == 3.0f && v[1] == 0.0f, "relu(3), relu(-2) = %g, %g", v[0], v[1]);

    /* 2001 points on [-10, 10] (31 chunks of 64 plus a tail) against libm in double.
     * Tolerance abs 1e-6 + rel 1e-5: the float argument z of exp carries a rounding of 6e-8
     * relative, which exp turns into |z| * 6e-8 relative error, |z| <= 90 on this range. */
    enum { NP = 2001 };
    static float a[NP];
    static double got[NP], ref[NP];
    for (int act = MOE_ACT_GELU_TANH; act <= MOE_ACT_RELU; act++) {
        for (int i = 0; i < NP; i++)
            a[i] = (float)(-10.0 + 0.01 * i);
        for (int i = 0; i < NP; i++) {
            double x = a[i];
            double z = sqrt(2.0 / M_PI) * (x + 0.044715 * x * x * x);
            /* 1 + tanh(z) = 2 / (1 + e^(-2z)) and 1 + erf(u) = erfc(-u): the forms without
             * cancellation in double for negative x (1 + tanh(-19) is 0 to 16 digits) */
            ref[i] = act == MOE_ACT_GELU_TANH ? x / (1.0 + exp(-2.0 * z))
                     : act == MOE_ACT_GELU_ERF ? 0.5 * x * erfc(-x / sqrt(2.0))
                                               : (x > 0 ? x : 0.0);
        }
        moe_activate(act, a, NP);
        for (int i = 0; i < NP; i++)
            got[i] = a[i];
        char what[64];
        snprintf(what, sizeof what, "%s on [-10, 10]", moe_act_name(act));
        check_close_arrays(what, got, ref, NP, 1e-6, 1e-5);
    }

    /* Each element alone (a one-element call: the loop over a part chunk) gives the same float
     * as within whole chunks of 64 (the vectorised loops, whose clamped exponential arguments
     * go through a small array): the same operations on each element. 4099 points on [-100,
     * 100], past both clamps of exp's argument (-87 and 88), and the biased and SwiGLU forms. */
    enum { NB = 4099 };
    static float xb[NB], bb[NB], ub[NB], all[NB];
    for (int i = 0; i < NB; i++) {
        xb[i] = (float)(-100.0 + 200.0 * i / (NB - 1));
        bb[i] = (float)(0.25 * sin(0.37 * i));
        ub[i] = (float)(0.5 * cos(0.11 * i));
    }
    for (int form = 0; form < 3 * 2 + 1; form++) {
        const int act = form / 2, bias = form % 2; /* form 6: SwiGLU */
        int same = 1;
        memcpy(all, xb, sizeof all);
        if (form == 6)
            moe_act_swiglu_row(all, ub, bb, bb, NB);
        else if (bias)
            moe_act_bias(act, all, bb, NB);
        else
            moe_activate(act, all, NB);
        for (int i = 0; i < NB; i++) {
            float one = xb[i];
            if (form == 6)
                moe_act_swiglu_row(&one, ub + i, bb + i, bb + i, 1);
            else if (bias)
                moe_act_bias(act, &one, bb + i, 1);
            else
                moe_activate(act, &one, 1);
            if (memcmp(&one, all + i, sizeof one) != 0) {
                if (same)
                    CHECK(0, "form %d at x = %a: alone %a, in a chunk %a", form, xb[i], one,
                          all[i]);
                same = 0;
            }
        }
        CHECK(same, "activation form %d: one element alone differs from the chunked loops",
              form);
    }

    /* names round-trip; unknown name is an error naming it */
    int ok = 1;
    for (int act = MOE_ACT_GELU_TANH; act <= MOE_ACT_SWIGLU; act++) {
        int back = -1;
        if (moe_act_parse(moe_act_name(act), &back) != MOE_OK || back != act)
            ok = 0;
    }
    CHECK(ok, "moe_act_parse(moe_act_name(a)) != a");
    CHECK(strcmp(moe_act_name(MOE_ACT_SWIGLU), "swiglu") == 0, "swiglu name");
    moe_clear_error();
    int act = 99;
    CHECK_INT(moe_act_parse("gelu_fast", &act), MOE_EINVAL);
    CHECK(strstr(moe_errmsg(), "gelu_fast") != NULL, "message names the activation: %s",
          moe_errmsg());
    CHECK_INT(act, 99);
    moe_clear_error();
}

/* ---- forward vs naive ---- */

static void test_sparse(gsl_rng *r)
{
    enum { N = 37, E = 5, K = 2, D = 12, F = 20 };
    const long C_MAX = 8;
    float *x = malloc(N * D * sizeof *x), *y = malloc(N * D * sizeof *y),
          *yr = malloc(N * D * sizeof *yr);
    int has[N];
    moe_plan *p = moe_plan_alloc(N, E, 64);
    fill_gauss(r, x, N * D, 1.0);
    for (int act = MOE_ACT_GELU_TANH; act <= MOE_ACT_SWIGLU; act++) {
        owned_experts ow;
        experts_make(&ow, r, E, D, F, act);
        moe_layer *L = moe_layer_alloc(N, E, C_MAX, D, F, act);
        CHECK(L != NULL, "alloc %s: %s", moe_act_name(act), moe_errmsg());
        /* C = 6 < C_MAX (row stride is the plan's C); C = 7 with slot gaps */
        for (int variant = 0; variant < 2 && L; variant++) {
            long C = variant ? 7 : 6;
            plan_sparse(p, r, N, E, K, C, variant, has);
            /* the plan has drops: N - N/7 tokens claim K = 2 slots each on E - 1 = 4 experts
             * of C <= 7 slots: 64 claims > 28 slots */
            CHECK(p->n_entries < (size_t)(N - (N + 3) / 7) * K, "plan has no drops");
            for (int i = 0; i < N * D; i++)
                y[i] = NAN; /* forward must overwrite every row */
            moe_phase_times tm = {-1, -1, -1, -1, -1, -1};
            int rc = moe_layer_forward(L, &ow.w, p, x, y, &tm);
            CHECK(rc == MOE_OK, "forward %s: %s", moe_act_name(act), moe_errmsg());
            CHECK(tm.dispatch >= 0 && tm.experts >= 0 && tm.combine >= 0 && tm.gate == -1 &&
                      tm.route == -1, "timing phases filled, gate and route left to the caller");
            CHECK_INT(moe_layer_forward_naive(&ow.w, p, x, yr), MOE_OK);
            char what[96];
            snprintf(what, sizeof what, "sparse forward vs naive, %s, C=%ld%s",
                     moe_act_name(act), C, variant ? " with slot gaps" : "");
            compare(what, y, yr, N * D);
            int zero_bad = 0, nz_rows = 0, without = 0;
            for (int t = 0; t < N; t++) {
                int nz = 0;
                for (int c = 0; c < D; c++)
                    nz += y[t * D + c] != 0.0f;
                if (!has[t]) {
                    without++;
                    zero_bad += nz != 0;
                } else {
                    nz_rows += nz > 0;
                }
            }
            CHECK(without >= 5 && zero_bad == 0,
                  "%d tokens without entries, %d of them with y != 0", without, zero_bad);
            CHECK_INT(nz_rows, N - without);
        }
        moe_layer_free(L);
        experts_free(&ow);
    }
    moe_plan_free(p);
    free(x), free(y), free(yr);
}

static void test_dense(gsl_rng *r)
{
    /* F = 8 with relu: token blocks of R*FW/M = FW = 8 rows, so N = 37 needs 5 blocks */
    enum { N = 37, E = 3, P = 2, D = 10, F = 8 };
    float *x = malloc(N * D * sizeof *x), *y = malloc(N * D * sizeof *y),
          *yr = malloc(N * D * sizeof *yr);
    moe_plan *p = moe_plan_alloc(N, E, (size_t)N * E * P);
    fill_gauss(r, x, N * D, 1.0);
    for (int act = MOE_ACT_GELU_TANH; act <= MOE_ACT_SWIGLU; act++) {
        owned_experts ow;
        experts_make(&ow, r, E, D, F, act);
        moe_layer *L = moe_layer_alloc(N, E, P, D, F, act);
        for (int shuffle = 0; shuffle < 2 && L; shuffle++) {
            int skip = shuffle ? 11 : -1;
            plan_soft(p, r, N, E, P, skip, shuffle);
            for (int i = 0; i < N * D; i++)
                y[i] = NAN;
            CHECK(moe_layer_forward(L, &ow.w, p, x, y, NULL) == MOE_OK, "dense forward: %s",
                  moe_errmsg());
            CHECK_INT(moe_layer_forward_naive(&ow.w, p, x, yr), MOE_OK);
            char what[96];
            snprintf(what, sizeof what, "dense forward vs naive, %s, %s", moe_act_name(act),
                     shuffle ? "shuffled entries, token 11 without entries" : "token order");
            compare(what, y, yr, N * D);
            if (shuffle) {
                int nz = 0;
                for (int c = 0; c < D; c++)
                    nz += y[skip * D + c] != 0.0f;
                CHECK(nz == 0, "dense: token without entries has %d non-zero outputs", nz);
            }
        }
        moe_layer_free(L);
        experts_free(&ow);
    }
    moe_plan_free(p);
    free(x), free(y), free(yr);
}

/* k = E, every token on every expert (slot = token, C = N), combine = p = softmax of random
 * logits: y[t] = sum_e p[t,e] FFN_e(x_t) by definition, which is the dense mixture. */
static void test_mixture(gsl_rng *r)
{
    enum { N = 29, E = 4, D = 16, F = 24 };
    float *x = malloc(N * D * sizeof *x), *y = malloc(N * D * sizeof *y),
          *ym = malloc(N * D * sizeof *ym), *ysel = malloc(3 * D * sizeof *ysel);
    double *p = malloc(N * E * sizeof *p), lg[E];
    fill_gauss(r, x, N * D, 1.0);
    for (int t = 0; t < N; t++) {
        for (int e = 0; e < E; e++)
            lg[e] = gsl_ran_gaussian(r, 1.0);
        moe_softmax(lg, E, p + t * E);
    }
    moe_plan *pl = moe_plan_alloc(N, E, N * E);
    moe_plan_reset(pl, N, E, E);
    pl->k = E;
    pl->capacity = N;
    for (int e = 0; e < E; e++)
        for (int t = 0; t < N; t++)
            moe_plan_push(pl, t, e, t, 1.0, p[t * E + e]);
    for (int act = MOE_ACT_GELU_TANH; act <= MOE_ACT_SWIGLU; act++) {
        owned_experts ow;
        experts_make(&ow, r, E, D, F, act);
        moe_layer *L = moe_layer_alloc(N, E, N, D, F, act);
        /* C_max = 2: the mixture runs in chunks of E * 2 = 8 rows */
        moe_layer *Ls = moe_layer_alloc(N, E, 2, D, F, act);
        CHECK_INT(moe_layer_forward(L, &ow.w, pl, x, y, NULL), MOE_OK);
        CHECK_INT(moe_layer_dense_mixture(L, &ow.w, x, N, p, NULL, 0, ym), MOE_OK);
        char what[96];
        snprintf(what, sizeof what, "forward k=E vs dense mixture, %s", moe_act_name(act));
        compare(what, y, ym, N * D);
        CHECK_INT(moe_layer_dense_mixture(Ls, &ow.w, x, N, p, NULL, 0, ym), MOE_OK);
        snprintf(what, sizeof what, "forward k=E vs dense mixture in chunks of 8, %s",
                 moe_act_name(act));
        compare(what, y, ym, N * D);
        /* selected rows, written in the order given */
        const int rows[3] = {17, 0, 28};
        CHECK_INT(moe_layer_dense_mixture(Ls, &ow.w, x, N, p, rows, 3, ysel), MOE_OK);
        float ypick[3 * D];
        for (int i = 0; i < 3; i++)
            memcpy(ypick + i * D, y + rows[i] * D, D * sizeof(float));
        snprintf(what, sizeof what, "dense mixture rows {17,0,28}, %s", moe_act_name(act));
        compare(what, ysel, ypick, 3 * D);
        moe_layer_free(L);
        moe_layer_free(Ls);
        experts_free(&ow);
    }
    moe_plan_free(pl);
    free(x), free(y), free(ym), free(ysel), free(p);
}

/* ---- gate ---- */

static void test_gate(gsl_rng *r)
{
    /* M = 4 (one column per expert) and M = 12 (soft, P = 3) */
    enum { N = 20, E = 4, D = 9, F = 3 };
    moe_layer *L = moe_layer_alloc(N, E, 1, D, F, MOE_ACT_RELU);
    float *x = malloc(N * D * sizeof *x), *wg = malloc(D * 12 * sizeof *wg);
    double *lg = malloc(N * 12 * sizeof *lg), *ref = malloc(N * 12 * sizeof *ref);
    fill_gauss(r, x, N * D, 1.0);
    fill_gauss(r, wg, D * 12, 1.0);
    const int ms[2] = {E, 12};
    for (int i = 0; i < 2; i++) {
        int m = ms[i];
        for (int t = 0; t < N; t++)
            for (int j = 0; j < m; j++) {
                double s = 0.0;
                for (int c = 0; c < D; c++)
                    s += (double)x[t * D + c] * wg[c * m + j];
                ref[t * m + j] = s;
            }
        CHECK(moe_layer_gate(L, x, N, wg, m, lg) == MOE_OK, "gate M=%d: %s", m, moe_errmsg());
        char what[64];
        snprintf(what, sizeof what, "gate GEMM vs double loop, M=%d", m);
        check_close_arrays(what, lg, ref, (size_t)N * m, TOL_ABS, TOL_REL);
    }
    moe_clear_error();
    CHECK_INT(moe_layer_gate(L, x, N + 1, wg, E, lg), MOE_EINVAL);   /* n > n_max */
    moe_clear_error();
    CHECK_INT(moe_layer_gate(L, x, N, wg, 0, lg), MOE_EINVAL);       /* M < 1 */
    moe_clear_error();
    moe_layer_free(L);
    free(x), free(wg), free(lg), free(ref);
}

/* ---- errors and small contracts ---- */

static void test_errors(gsl_rng *r)
{
    enum { N = 10, E = 3, D = 4, F = 5 };
    owned_experts ow;
    experts_make(&ow, r, E, D, F, MOE_ACT_GELU_TANH);
    moe_layer *L = moe_layer_alloc(N, E, 4, D, F, MOE_ACT_GELU_TANH);
    float x[(N + 1) * D], y[(N + 1) * D];
    fill_gauss(r, x, (N + 1) * D, 1.0);
    moe_plan *p = moe_plan_alloc(N + 1, E, 16);

    moe_clear_error();
    moe_plan_reset(p, N, E, E);
    p->capacity = 5; /* > C_max = 4 */
    moe_plan_push(p, 0, 0, 4, 1.0, 1.0);
    CHECK_INT(moe_layer_forward(L, &ow.w, p, x, y, NULL), MOE_EINVAL);
    CHECK(strstr(moe_errmsg(), "C_max") != NULL, "capacity message: %s", moe_errmsg());
    moe_clear_error();

    moe_plan_reset(p, N + 1, E, E); /* n > n_max */
    p->capacity = 2;
    moe_plan_push(p, N, 1, 0, 1.0, 1.0);
    CHECK_INT(moe_layer_forward(L, &ow.w, p, x, y, NULL), MOE_EINVAL);
    CHECK(strstr(moe_errmsg(), "tokens") != NULL, "n_max message: %s", moe_errmsg());
    moe_clear_error();

    moe_plan_reset(p, N, E, E); /* slot outside the plan's capacity */
    p->capacity = 2;
    moe_plan_push(p, 1, 1, 2, 1.0, 1.0);
    CHECK_INT(moe_layer_forward(L, &ow.w, p, x, y, NULL), MOE_EINVAL);
    moe_clear_error();
    CHECK_INT(moe_layer_forward_naive(&ow.w, p, x, y), MOE_EINVAL);
    moe_clear_error();

    moe_plan_reset(p, N, E, E); /* experts of another width */
    p->capacity = 2;
    moe_plan_push(p, 1, 1, 1, 1.0, 1.0);
    moe_experts bad = ow.w;
    bad.f = F + 1;
    CHECK_INT(moe_layer_forward(L, &bad, p, x, y, NULL), MOE_EINVAL);
    moe_clear_error();
    bad = ow.w;
    bad.act = MOE_ACT_RELU;
    CHECK_INT(moe_layer_forward(L, &bad, p, x, y, NULL), MOE_EINVAL);
    moe_clear_error();

    /* capacity 0 (cf = 0): everything dropped, y = 0 */
    moe_plan_reset(p, N, E, E);
    p->capacity = 0;
    for (int i = 0; i < N * D; i++)
        y[i] = NAN;
    CHECK_INT(moe_layer_forward(L, &ow.w, p, x, y, NULL), MOE_OK);
    int nz = 0;
    for (int i = 0; i < N * D; i++)
        nz += y[i] != 0.0f;
    CHECK_INT(nz, 0);

    moe_clear_error();
    CHECK(moe_layer_alloc(0, E, 4, D, F, MOE_ACT_RELU) == NULL, "alloc n_max = 0");
    CHECK(moe_errmsg()[0] != '\0', "alloc failure recorded");
    moe_clear_error();
    CHECK(moe_layer_alloc(N, E, 4, D, F, 7) == NULL, "alloc with unknown activation");
    moe_clear_error();
    moe_layer_free(NULL); /* no-op */

    /* rel_l2: a = (1,2), ref = (1,1): |(0,1)| / |(1,1)| = 1/sqrt(2) */
    const float a[2] = {1, 2}, b[2] = {1, 1}, z[2] = {0, 0};
    CHECK_NEAR(moe_rel_l2(a, b, 2), 1.0 / sqrt(2.0), 1e-15);
    CHECK(moe_rel_l2(z, z, 2) == 0.0, "rel_l2 of zeros");
    CHECK(isinf(moe_rel_l2(a, z, 2)), "rel_l2 against a zero reference is inf");

    moe_plan_free(p);
    moe_layer_free(L);
    experts_free(&ow);
}

/* The threaded paths of the layer (dispatch split over entries, combine split at token
 * boundaries when entries are sorted by token, experts on a queue with one BLAS thread each)
 * only engage on plans with at least 2^18 entry-values; this plan (about 2570 entries of
 * D = 200) is above that. Checked: the same y, bit for bit, with 1 and 2 BLAS threads, for
 * entries in claim order (combine on one thread) and sorted by token (combine split), and y
 * against the naive reference. */
static int by_token(const void *a, const void *b)
{
    const moe_entry *x = a, *y = b;
    if (x->token != y->token)
        return x->token < y->token ? -1 : 1;
    if (x->expert != y->expert) /* a token has one entry per expert: a total order */
        return x->expert < y->expert ? -1 : 1;
    return 0;
}

static void test_threads(gsl_rng *r)
{
    enum { N = 1500, E = 9, K = 2, D = 200, F = 24 };
    const long C = 330;
    float *x = malloc((size_t)N * D * sizeof *x), *y1 = malloc((size_t)N * D * sizeof *y1),
          *y2 = malloc((size_t)N * D * sizeof *y2), *yr = malloc((size_t)N * D * sizeof *yr);
    int *has = malloc(N * sizeof *has);
    moe_plan *p = moe_plan_alloc(N, E, (size_t)N * K);
    fill_gauss(r, x, (size_t)N * D, 1.0);
    owned_experts ow;
    experts_make(&ow, r, E, D, F, MOE_ACT_GELU_TANH);
    moe_layer *L = moe_layer_alloc(N, E, C, D, F, MOE_ACT_GELU_TANH);
    plan_sparse(p, r, N, E, K, C, 0, has);
    CHECK(p->n_entries * D >= (1u << 18), "plan too small for the threaded paths: %zu entries",
          p->n_entries);
    int saved = moe_blas_threads();
    for (int sorted = 0; sorted < 2 && L; sorted++) {
        if (sorted)
            qsort(p->entries, p->n_entries, sizeof *p->entries, by_token);
        for (size_t i = 0; i < (size_t)N * D; i++)
            y1[i] = y2[i] = NAN; /* every row must be written, entries or not */
        moe_blas_set_threads(1);
        int rc1 = moe_layer_forward(L, &ow.w, p, x, y1, NULL);
        moe_blas_set_threads(2);
        int rc2 = moe_layer_forward(L, &ow.w, p, x, y2, NULL);
        moe_blas_set_threads(saved);
        CHECK(rc1 == MOE_OK && rc2 == MOE_OK, "forward: %s", moe_errmsg());
        CHECK(memcmp(y1, y2, (size_t)N * D * sizeof *y1) == 0,
              "y differs between 1 and 2 threads (entries %s)", sorted ? "by token" : "by claim");
        CHECK_INT(moe_layer_forward_naive(&ow.w, p, x, yr), MOE_OK);
        compare(sorted ? "threaded forward vs naive, entries by token"
                       : "threaded forward vs naive, entries by claim",
                y2, yr, (size_t)N * D);
    }
    moe_layer_free(L);
    experts_free(&ow);
    moe_plan_free(p);
    free(x), free(y1), free(y2), free(yr), free(has);
}

/* y = forward of p with th BLAS threads, tile request `tile`, padding pad; y is set to NaN first
 * so that every output must be written. */
static void forward_with(moe_layer *L, const moe_experts *w, const moe_plan *p, const float *x,
                         float *y, size_t len, int th, size_t tile, int pad)
{
    moe_blas_set_threads(th);
    moe_layer_set_tile_rows(L, tile);
    moe_layer_set_pad_to_capacity(L, pad);
    for (size_t j = 0; j < len; j++)
        y[j] = NAN;
    CHECK_INT(moe_layer_forward(L, w, p, x, y, NULL), MOE_OK);
}

/* The two ways dispatch and combine write rows (layer.c): a row written by one entry alone is
 * set to 0 + w x; otherwise rows are zeroed and the entries added. Expected values: the same
 * plan through the zero-then-add path, bit for bit (0 + v on a zeroed row is what the set
 * computes). Plan: plan_sparse with slot gaps and tokens without entries, sorted by token (set
 * paths). Combine: the same entries with the tokens' groups in reverse order (each token's
 * entries in the same order) are unsorted and take the zero-then-add combine. Dispatch: one
 * more entry on an occupied slot, with dispatch and combine weights 0, placed after its token's
 * entries (still sorted), makes the plan take the zero-then-add dispatch: the slot's row gets
 * + 0 x, which changes no value (a sum of 0 + v is never -0), and y of its token + 0 out.
 * With 1 and 2 BLAS threads (this plan engages the threaded copies: test_threads). */
static void test_copy_paths(gsl_rng *r)
{
    enum { N = 1500, E = 9, K = 2, D = 200, F = 24 };
    const long C = 331;
    size_t len = (size_t)N * D;
    float *x = malloc(len * sizeof *x), *ys = malloc(len * sizeof *ys),
          *ya = malloc(len * sizeof *ya);
    int *has = malloc(N * sizeof *has);
    moe_plan *p = moe_plan_alloc(N, E, (size_t)N * K + 1);
    moe_plan *q = moe_plan_alloc(N, E, (size_t)N * K + 1);
    fill_gauss(r, x, len, 1.0);
    owned_experts ow;
    experts_make(&ow, r, E, D, F, MOE_ACT_GELU_TANH);
    moe_layer *L = moe_layer_alloc(N, E, C, D, F, MOE_ACT_GELU_TANH);
    plan_sparse(p, r, N, E, K, C, 1, has);
    qsort(p->entries, p->n_entries, sizeof *p->entries, by_token);
    CHECK(p->n_entries * D >= (1u << 18), "plan too small for the threaded paths: %zu entries",
          p->n_entries);
    int saved = moe_blas_threads();
    for (int th = 1; th <= 2 && L; th++) {
        /* combine: tokens' groups reversed */
        moe_plan_reset(q, N, E, E);
        q->k = K;
        q->capacity = C;
        for (size_t end = p->n_entries; end > 0;) {
            size_t b = end;
            while (b > 0 && p->entries[b - 1].token == p->entries[end - 1].token)
                b--;
            for (size_t i = b; i < end; i++)
                moe_plan_push(q, p->entries[i].token, p->entries[i].expert, p->entries[i].slot,
                              p->entries[i].dispatch_w, p->entries[i].combine_w);
            end = b;
        }
        forward_with(L, &ow.w, p, x, ys, len, th, 0, 0);
        forward_with(L, &ow.w, q, x, ya, len, th, 0, 0);
        CHECK(memcmp(ys, ya, len * sizeof *ys) == 0, "combine: sorted (set) and unsorted "
              "(zero, add) plans give different y, %d thread(s)", th);
        /* dispatch: a zero-weight second entry on the slot of entry 10, after its token's */
        moe_entry dup = p->entries[10];
        size_t at = 11;
        while (at < p->n_entries && p->entries[at].token == dup.token)
            at++;
        moe_plan_reset(q, N, E, E);
        q->k = K;
        q->capacity = C;
        for (size_t i = 0; i <= p->n_entries; i++) {
            if (i == at)
                moe_plan_push(q, dup.token, dup.expert, dup.slot, 0.0, 0.0);
            if (i < p->n_entries)
                moe_plan_push(q, p->entries[i].token, p->entries[i].expert, p->entries[i].slot,
                              p->entries[i].dispatch_w, p->entries[i].combine_w);
        }
        forward_with(L, &ow.w, q, x, ya, len, th, 0, 0);
        CHECK(memcmp(ys, ya, len * sizeof *ys) == 0, "dispatch: one entry per slot (set) and a "
              "slot of two entries (zero, add) give different y, %d thread(s)", th);
    }
    moe_blas_set_threads(saved);
    float *yr = malloc(len * sizeof *yr);
    CHECK_INT(moe_layer_forward_naive(&ow.w, p, x, yr), MOE_OK);
    compare("set-path forward vs naive", ys, yr, len);
    moe_layer_free(L);
    experts_free(&ow);
    moe_plan_free(p), moe_plan_free(q);
    free(x), free(ys), free(ya), free(yr), free(has);
}

/* Padding to capacity and row tiles on a plan_sparse plan with slot gaps (5 experts, C = 900,
 * expert 4 empty, drops). Expected values: the layer's own unpadded output y0, itself checked
 * against the naive reference; padded, the kept rows of each expert go through the same GEMM
 * pair as unpadded (the zero rows are a separate one), so y must equal y0 bit for bit, with 1
 * and 2 BLAS threads. Tile requests of 16 and 300 rows are ignored at this shape (64 * 64 * 128
 * and 320 * 64 * 128 are below 2^24, layer.h), so y must also equal y0 bit for bit with them
 * (test_tile_bits tests tiles that run). Rows run: unpadded, each expert's highest filled
 * slot + 1 (counted here from the plan); padded, E * C. */
static void test_pad_tiles(gsl_rng *r)
{
    enum { N = 3000, E = 5, K = 2, D = 64, F = 128 };
    const long C = 900;
    size_t len = (size_t)N * D;
    float *x = malloc(len * sizeof *x), *y0 = malloc(len * sizeof *y0),
          *y = malloc(len * sizeof *y), *yr = malloc(len * sizeof *yr);
    int *has = malloc(N * sizeof *has);
    moe_plan *p = moe_plan_alloc(N, E, (size_t)N * K);
    fill_gauss(r, x, len, 1.0);
    owned_experts ow;
    experts_make(&ow, r, E, D, F, MOE_ACT_GELU_TANH);
    moe_layer *L = moe_layer_alloc(N, E, C, D, F, MOE_ACT_GELU_TANH);
    plan_sparse(p, r, N, E, K, C, 1, has);
    long top[E] = {0};
    size_t want = 0;
    for (size_t i = 0; i < p->n_entries; i++)
        if (p->entries[i].slot + 1L > top[p->entries[i].expert])
            top[p->entries[i].expert] = p->entries[i].slot + 1L;
    for (int e = 0; e < E; e++)
        want += (size_t)top[e];
    CHECK(top[E - 1] == 0 && want < (size_t)E * C, "the plan leaves rows unfilled (%zu of %ld)",
          want, E * C);
    int saved = moe_blas_threads();
    CHECK_INT(moe_layer_forward(L, &ow.w, p, x, y0, NULL), MOE_OK);
    CHECK(moe_layer_rows_run(L) == want, "rows run %zu, want %zu", moe_layer_rows_run(L), want);
    CHECK_INT(moe_layer_forward_naive(&ow.w, p, x, yr), MOE_OK);
    compare("forward with slot gaps vs naive (pad test)", y0, yr, len);
    const size_t tiles[] = {0, 16, 300};
    for (int th = 1; th <= 2; th++)
        for (int pad = 0; pad < 2; pad++)
            for (int i = 0; i < 3; i++) {
                forward_with(L, &ow.w, p, x, y, len, th, tiles[i], pad);
                size_t rows = moe_layer_rows_run(L), rw = pad ? (size_t)E * C : want;
                CHECK(rows == rw, "rows run %zu, want %zu (pad %d)", rows, rw, pad);
                char what[96];
                snprintf(what, sizeof what, "%d threads, tile %zu, pad %d vs naive", th,
                         tiles[i], pad);
                compare(what, y, yr, len);
                CHECK(moe_layer_tile_rows(L) == 0, "tile %zu in effect at D*F = %d",
                      moe_layer_tile_rows(L), D * F);
                CHECK(memcmp(y, y0, len * sizeof *y) == 0, "y differs from unpadded: %d "
                      "threads, pad %d, tile request %zu", th, pad, tiles[i]);
            }
    moe_layer_set_tile_rows(L, 0);
    moe_blas_set_threads(saved);
    moe_layer_set_pad_to_capacity(L, 0);
    /* a plan with no entry: padded, every expert still runs C rows and y = 0 */
    moe_plan_reset(p, N, E, E);
    p->capacity = 4;
    moe_layer_set_pad_to_capacity(L, 1);
    CHECK_INT(moe_layer_forward(L, &ow.w, p, x, y, NULL), MOE_OK);
    size_t nz = 0;
    for (size_t j = 0; j < len; j++)
        nz += y[j] != 0.0f;
    CHECK(moe_layer_rows_run(L) == (size_t)E * 4 && nz == 0,
          "empty plan padded: %zu rows run (want %d), %zu nonzero outputs", moe_layer_rows_run(L),
          E * 4, nz);
    moe_layer_free(L);
    experts_free(&ow);
    moe_plan_free(p);
    free(x), free(y0), free(y), free(yr), free(has);
}

/* The expert phase's queue of tiles (moe_layer_tiles) after a forward of test_tile_bits' plan
 * (experts of used[e] rows, capacity C) with tiles of `tile` rows: longest first, ties by
 * expert then row; each expert's tiles cover its rows [0, used[e]) (padded: [0, C)) once, each
 * starting on a multiple of the tile (or of it after used[e], in a segment of padding);
 * unpadded, the list is want (nw tiles), worked by hand below. */
static void check_tiles(const moe_layer *L, const size_t *used, int E, size_t C, size_t tile,
                        int pad, const char *what, const size_t (*want)[3], int nw)
{
    enum { MAX = 64 };
    int ex[MAX];
    size_t at[MAX], rows[MAX], cover[8] = {0};
    size_t T = moe_layer_tiles(L, ex, at, rows, MAX);
    CHECK(T >= 1 && T <= MAX && E <= 8, "%s: %zu tiles", what, T);
    if (T < 1 || T > MAX || E > 8)
        return;
    for (size_t i = 0; i < T; i++) {
        /* a segment of padding (OpenBLAS) starts at used[e] and is tiled from there */
        int ok = ex[i] >= 0 && ex[i] < E && rows[i] > 0 &&
                 (at[i] % tile == 0 || (pad && at[i] >= used[ex[i]] &&
                                        (at[i] - used[ex[i]]) % tile == 0));
        CHECK(ok, "%s: tile %zu is expert %d rows %zu + %zu", what, i, ex[i], at[i], rows[i]);
        if (i > 0) {
            int later = rows[i] < rows[i - 1] ||
                        (rows[i] == rows[i - 1] && (ex[i] > ex[i - 1] ||
                                                    (ex[i] == ex[i - 1] && at[i] > at[i - 1])));
            CHECK(later, "%s: tile %zu (expert %d, %zu rows at %zu) queued after expert %d, %zu "
                  "rows at %zu", what, i, ex[i], rows[i], at[i], ex[i - 1], rows[i - 1],
                  at[i - 1]);
        }
        if (ex[i] >= 0 && ex[i] < E)
            cover[ex[i]] += rows[i];
    }
    for (int e = 0; e < E; e++) {
        size_t need = pad ? C : used[e], end = 0;
        for (size_t i = 0; i < T; i++) /* the tiles of e, in row order, must meet end to end */
            for (size_t j = 0; j < T; j++)
                if (ex[j] == e && at[j] == end)
                    end += rows[j];
        CHECK(cover[e] == need && end == need, "%s: expert %d covered %zu rows, contiguous to "
              "%zu, want %zu", what, e, cover[e], end, need);
    }
    if (pad)
        return;
    CHECK(T == (size_t)nw, "%s: %zu tiles, want %d", what, T, nw);
    for (int i = 0; i < nw && (size_t)i < T; i++)
        CHECK(rows[i] == want[i][0] && (size_t)ex[i] == want[i][1] && at[i] == want[i][2],
              "%s: tile %d is %zu rows of expert %d at %zu, want %zu of %zu at %zu", what, i,
              rows[i], ex[i], at[i], want[i][0], want[i][1], want[i][2]);
}

/* Row tiles keep the bits. Expected values: the layer's own untiled output y0 (one BLAS
 * thread), itself checked against the naive reference. Experts of 1700, 1100, 700 and 100 rows
 * (tokens in blocks, k = 1) at D = 128, F = 512: a request of 300 rows rounds up to 384 (a
 * multiple of 192), so the first two experts run as 384 x 3 + 548 and 384 + 716 rows, the
 * others untiled (fewer than 2 tiles); 500 rounds to 576: 576 + 1124, the rest untiled; 768
 * (libxsmm's default): 768 + 932, the rest untiled. Padded with libxsmm, the zero rows join the
 * last tile of each expert after a split (layer.c), which must not move the kept rows. Tile
 * boundaries on multiples of 192 rows keep every row in the OpenBLAS kernel it meets untiled
 * (layer.h), so y must equal y0 bit for bit for GELU and SwiGLU, 1 and 2 threads, padded or
 * not; with OpenBLAS and with libxsmm (rows in blocks of 16 from each call's first row, and
 * 192 is a multiple of 16: layer_gemm.h). Requests whose tiles fall under tile*D*F = 2^24
 * are ignored: 100 rounds to 192 rows,
 * 192*128*512 = 12582912 < 2^24, so no tiles. After each forward, check_tiles checks the
 * expert phase's queue: the tiles above, longest first. */
static void test_tile_bits(gsl_rng *r)
{
    enum { N = 3600, E = 4, D = 128, F = 512 };
    const int last[E] = {1700, 2800, 3500, 3600}; /* expert e takes tokens [last[e-1], last[e]) */
    const long C = 1800;
    size_t len = (size_t)N * D;
    float *x = malloc(len * sizeof *x), *y0 = malloc(len * sizeof *y0),
          *y = malloc(len * sizeof *y), *yr = malloc(len * sizeof *yr);
    moe_plan *p = moe_plan_alloc(N, E, N);
    fill_gauss(r, x, len, 1.0);
    moe_plan_reset(p, N, E, E);
    p->k = 1;
    p->capacity = C;
    for (int t = 0, e = 0; t < N; t++) {
        while (t >= last[e])
            e++;
        moe_plan_push(p, t, e, t - (e ? last[e - 1] : 0), 1.0, gsl_rng_uniform(r));
    }
    int saved = moe_blas_threads();
    const int acts[2] = {MOE_ACT_GELU_TANH, MOE_ACT_SWIGLU};
    const int ng = moe_gemm_libxsmm_available() ? 2 : 1; /* OpenBLAS, then libxsmm */
    owned_experts ow = {0}; /* one draw per activation, used by both backends */
    for (int ag = 0; ag < 2 * ng; ag++) {
        int a = ag / ng, g = ag % ng;
        if (g == 0) {
            experts_make(&ow, r, E, D, F, acts[a]);
            CHECK_INT(moe_layer_forward_naive(&ow.w, p, x, yr), MOE_OK);
        }
        moe_layer *L = moe_layer_alloc(N, E, C, D, F, acts[a]);
        CHECK_INT(moe_layer_set_gemm(L, g ? MOE_GEMM_LIBXSMM : MOE_GEMM_OPENBLAS), MOE_OK);
        /* layer.h: the backend's default, 768 rows with libxsmm (768*128*512 >= 2^24), 0 with
         * OpenBLAS; 768 is also among the requests run below */
        CHECK(moe_layer_tile_rows(L) == (g ? 768u : 0u), "%s: default tile %zu rows",
              moe_gemm_backend_name(g), moe_layer_tile_rows(L));
        moe_layer_set_tile_rows(L, 100);
        CHECK(moe_layer_tile_rows(L) == 0, "tile 100 at D*F = %d: %zu rows in effect, want 0",
              D * F, moe_layer_tile_rows(L));
        moe_layer_set_tile_rows(L, 500);
        CHECK(moe_layer_tile_rows(L) == 576, "tile 500: %zu rows, want 576",
              moe_layer_tile_rows(L));
        moe_layer_set_tile_rows(L, 300);
        CHECK(moe_layer_tile_rows(L) == 384, "tile 300: %zu rows, want 384",
              moe_layer_tile_rows(L));
        moe_layer_set_tile_rows(L, 0);
        moe_blas_set_threads(1);
        CHECK_INT(moe_layer_forward(L, &ow.w, p, x, y0, NULL), MOE_OK);
        compare(a ? "untiled swiglu vs naive (tile test)" : "untiled gelu vs naive (tile test)",
                y0, yr, len);
        const size_t tiles[3] = {300, 500, 768}, used[E] = {1700, 1100, 700, 100};
        /* unpadded queues (rows, expert, first row) from the tiles in the comment above */
        static const size_t q384[8][3] = {{716, 1, 384}, {700, 2, 0}, {548, 0, 1152},
                                          {384, 0, 0},   {384, 0, 384}, {384, 0, 768},
                                          {384, 1, 0},   {100, 3, 0}};
        static const size_t q576[5][3] = {
            {1124, 0, 576}, {1100, 1, 0}, {700, 2, 0}, {576, 0, 0}, {100, 3, 0}};
        static const size_t q768[5][3] = {
            {1100, 1, 0}, {932, 0, 768}, {768, 0, 0}, {700, 2, 0}, {100, 3, 0}};
        const size_t(*want[3])[3] = {q384, q576, q768};
        const int nwant[3] = {8, 5, 5};
        for (int th = 1; th <= 2; th++)
            for (int pad = 0; pad < 2; pad++)
                for (int i = 0; i < 3; i++) {
                    forward_with(L, &ow.w, p, x, y, len, th, tiles[i], pad);
                    size_t bad = 0;
                    for (size_t j = 0; j < len; j++)
                        bad += memcmp(&y[j], &y0[j], sizeof *y) != 0;
                    CHECK(bad == 0, "%s, %s, tile %zu, %d threads, pad %d: %zu of %zu outputs "
                          "differ from untiled", moe_act_name(acts[a]), moe_gemm_backend_name(g),
                          tiles[i], th, pad, bad, len);
                    char what[160];
                    snprintf(what, sizeof what, "%s, %s, tile %zu, %d threads, pad %d",
                             moe_act_name(acts[a]), moe_gemm_backend_name(g), tiles[i], th, pad);
                    check_tiles(L, used, E, (size_t)C, moe_layer_tile_rows(L), pad, what,
                                want[i], nwant[i]);
                }
        moe_blas_set_threads(saved);
        moe_layer_free(L);
        if (g == ng - 1)
            experts_free(&ow);
    }
    moe_plan_free(p);
    free(x), free(y0), free(y), free(yr);
}

/* The GEMM backends (layer.h): libxsmm is the default when available; both agree with the
 * naive reference within the tolerance above; the packed weights follow the weights' address
 * and moe_layer_repack. Expected values: moe_layer_forward_naive on the weights in use (after
 * an in-place change, the new ones once repacked; before, the packed old ones, which is the
 * documented contract). Widths D = 70, F = 90 leave a partial column block (70 = 64 + 6 and
 * 90 = 64 + 26 in blocks of 64, 2 x 32 + 6 and 2 x 32 + 26 in blocks of 32), and experts of 37
 * rows a partial row block (37 = 2 x 16 + 5). */
static void test_gemm_backends(gsl_rng *r)
{
    enum { N = 74, E = 2, D = 70, F = 90 };
    size_t len = (size_t)N * D;
    float *x = malloc(len * sizeof *x), *y = malloc(len * sizeof *y),
          *yr = malloc(len * sizeof *yr), *yold = malloc(len * sizeof *yold);
    moe_plan *p = moe_plan_alloc(N, E, N);
    fill_gauss(r, x, len, 1.0);
    moe_plan_reset(p, N, E, E);
    p->k = 1;
    p->capacity = N / 2;
    for (int t = 0; t < N; t++)
        moe_plan_push(p, t, t % 2, t / 2, 1.0, 0.5 + 0.5 * gsl_rng_uniform(r));
    for (int a = MOE_ACT_GELU_TANH; a <= MOE_ACT_SWIGLU; a++) {
        owned_experts ow;
        experts_make(&ow, r, E, D, F, a);
        moe_layer *L = moe_layer_alloc(N, E, N / 2, D, F, a);
        CHECK(moe_layer_gemm(L) == moe_gemm_default(), "default backend %d",
              moe_layer_gemm(L));
        CHECK_INT(moe_layer_set_gemm(L, 7), MOE_EINVAL);
        CHECK_INT(moe_layer_forward_naive(&ow.w, p, x, yr), MOE_OK);
        for (int g = MOE_GEMM_OPENBLAS; g <= MOE_GEMM_LIBXSMM; g++) {
            if (g == MOE_GEMM_LIBXSMM && !moe_gemm_libxsmm_available()) {
                CHECK(moe_layer_set_gemm(L, g) != MOE_OK, "libxsmm accepted without it");
                continue;
            }
            CHECK_INT(moe_layer_set_gemm(L, g), MOE_OK);
            CHECK_INT(moe_layer_forward(L, &ow.w, p, x, y, NULL), MOE_OK);
            char what[96];
            snprintf(what, sizeof what, "%s %s vs naive", moe_act_name(a),
                     moe_gemm_backend_name(g));
            compare(what, y, yr, len);
        }
        if (moe_gemm_libxsmm_available()) {
            /* in-place change of W2: the pack keeps the old values until moe_layer_repack */
            memcpy(yold, y, len * sizeof *y);
            size_t nw2 = (size_t)E * F * D;
            for (size_t j = 0; j < nw2; j++)
                ow.w2[j] *= -0.5f;
            CHECK_INT(moe_layer_forward(L, &ow.w, p, x, y, NULL), MOE_OK);
            CHECK(memcmp(y, yold, len * sizeof *y) == 0, "%s: in-place change seen without "
                  "repack", moe_act_name(a));
            moe_layer_repack(L);
            CHECK_INT(moe_layer_forward(L, &ow.w, p, x, y, NULL), MOE_OK);
            CHECK_INT(moe_layer_forward_naive(&ow.w, p, x, yr), MOE_OK);
            compare("after moe_layer_repack vs naive", y, yr, len);
        }
        moe_layer_free(L);
        experts_free(&ow);
    }
    moe_plan_free(p);
    free(x), free(y), free(yr), free(yold);
}

/* moe_gemm_prefetches (layer_gemm.h): 1 exactly on Intel CPUs. Expected value: the vendor_id
 * line of /proc/cpuinfo (the kernel's own reading of CPUID), "GenuineIntel" or another. */
static void test_gemm_prefetch(void)
{
    FILE *f = fopen("/proc/cpuinfo", "r");
    char line[256], vendor[64] = "";
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "vendor_id : %63s", vendor) == 1)
            break;
    if (f)
        fclose(f);
    if (!vendor[0]) {
        printf("note: no vendor_id in /proc/cpuinfo; moe_gemm_prefetches not checked\n");
        return;
    }
    CHECK(moe_gemm_prefetches() == (strcmp(vendor, "GenuineIntel") == 0),
          "moe_gemm_prefetches() = %d on a CPU of vendor %s", moe_gemm_prefetches(), vendor);
}

int main(void)
{
    moe_install_gsl_handler();
    gsl_rng *r = moe_rng_alloc(20240607u, MOE_STREAM_EXPERT_W);
    test_activations();
    test_gate(r);
    test_sparse(r);
    test_threads(r);
    test_pad_tiles(r);
    test_copy_paths(r);
    test_tile_bits(r);
    test_gemm_backends(r);
    test_gemm_prefetch();
    test_dense(r);
    test_mixture(r);
    test_errors(r);
    gsl_rng_free(r);
    return check_report("test_layer");
}
