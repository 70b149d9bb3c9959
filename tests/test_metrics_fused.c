/* test_metrics_fused.c: the anchor losses of moe_metrics_anchor (sim/metrics_anchor.c: terms in
 * chunks of rows on the threads, vector exp, the routers' top-k, sums added in chunk order) against its algorithmic reference moe_metrics_anchor_reference
 * (one serial loop over tokens, the C library's exp, moe_claims_topk of routers/claims.h), bit
 * for bit, on 1, 2 and 3 threads: seq_aux_loss, importance_loss_vmoe, load_loss_vmoe and
 * load_loss_shazeer. Logits N(0,1) from a fixed PCG seed, or rounded to multiples of 1/2 (many
 * equal values: ties in the top-k, to the lower index), with some -inf entries, rows holding
 * NaN (their logsumexp is NaN), gate noise (noisy logits L + N(0,1)), Megatron's own scores
 * (sigmoid, sqrt(softplus)), sequences and routing groups; E from 8 to 256 (E not a multiple of
 * 8 leaves a tail outside the vector lanes) and k from 1 to E (k = 1 the maximum, k <= 8 the
 * vector selection of routers/select.c, k > 8 the routers' scalar one). The reference's values themselves are checked against NumPy
 * re-implementations of the libraries in tests/test_metrics_anchor.c.
 * Also the experts-per-token and groups-touched histograms of a plan whose entries come in
 * expert order (counted from (T,E) marks, eight at a time) against a direct count here, and
 * every count of moe_metrics_compute (sim/metrics_count.c: entries and tokens in parts on the
 * threads) on 1, 2 and 3 threads with parts of one item against a serial count here: kept
 * loads, both histograms, groups_touched_mean, the token drop rates per routing group (the
 * same divisions in group order, so the same bits) and the first invalid entry reported; and
 * moe_plan_first_nonfinite (sim/plan.c, the entries in parts on the threads) against the index
 * of the first entry given a NaN or infinite weight here. */
#include "check.h"
#include "metrics_anchor.h"
#include "moe.h"
#include "../routers/par.h"

#include <gsl/gsl_randist.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

enum { KIND_GAUSS, KIND_TIES, KIND_SPECIAL };

/* Both NaN, or the same bits. */
static int same(double a, double b)
{
    return (isnan(a) && isnan(b)) || memcmp(&a, &b, sizeof a) == 0;
}

static void fill(double *L, int n, int E, int kind, gsl_rng *g)
{
    for (size_t i = 0; i < (size_t)n * E; i++) {
        double x = gsl_ran_gaussian_ziggurat(g, 1.0);
        L[i] = kind == KIND_TIES ? round(2.0 * x) / 2.0 : x;
    }
    if (kind != KIND_SPECIAL)
        return;
    for (int t = 0; t < n; t += 7) /* every 7th row: a -inf entry */
        L[(size_t)t * E + (size_t)(t % E)] = -INFINITY;
    for (int t = 3; t < n; t += 97) /* every 97th row from 3: a NaN (logsumexp NaN) */
        L[(size_t)t * E + (size_t)((t / 97) % E)] = NAN;
}

typedef struct {
    int n, E, k, kind, noisy, score, seq, group;
} fused_case;

static void run_case(const fused_case *c, gsl_rng *g)
{
    const int n = c->n, E = c->E;
    double *L = malloc((size_t)n * E * sizeof *L);
    moe_plan *p = moe_plan_alloc(n, E, 16);
    moe_metrics *ref = moe_metrics_alloc(E), *mt = moe_metrics_alloc(E);
    CHECK(L && p && ref && mt, "alloc");
    if (!L || !p || !ref || !mt || moe_plan_reset(p, n, E, E))
        goto out;
    fill(L, n, E, c->kind, g);
    p->k = c->k;
    double *lse = moe_plan_lse_buffer(p), *H = c->noisy ? moe_plan_noisy_buffer(p) : NULL;
    CHECK(lse != NULL && (!c->noisy || H != NULL), "plan buffers");
    if (!lse || (c->noisy && !H))
        goto out;
    for (int t = 0; t < n; t++)
        lse[t] = moe_logsumexp(L + (size_t)t * E, E);
    p->lse_of = L;
    for (size_t i = 0; H && i < (size_t)n * E; i++)
        H[i] = L[i] + gsl_ran_gaussian_ziggurat(g, 1.0);
    p->noise_std = c->noisy ? 1.0 : 0.0;
    for (int e = 0; e < E; e++)
        p->assigned_load[e] = 1 + (long)gsl_rng_uniform_int(g, 100);
    moe_route_opts o;
    moe_route_opts_default(&o);
    o.sequence_length = c->seq;
    o.group_size = c->group;
    o.score = c->score;
    CHECK_INT(moe_metrics_set_opts(ref, &o), MOE_OK);
    CHECK_INT(moe_metrics_set_opts(mt, &o), MOE_OK);
    CHECK_INT(moe_metrics_anchor_reference(p, L, ref), MOE_OK);
    CHECK(isfinite(ref->importance_loss_vmoe) || c->kind == KIND_SPECIAL,
          "n %d E %d k %d: the reference's importance loss is finite", n, E, c->k);
    for (int nt = 1; nt <= 3; nt++) {
        moe_par_set_threads(nt);
        CHECK_INT(moe_metrics_anchor(p, L, mt), MOE_OK);
        const char *what = "n %d E %d k %d kind %d noisy %d score %d seq %d group %d, %d "
                           "threads: %s %.17g, reference %.17g";
#define SAME(f)                                                                               \
    CHECK(same(mt->f, ref->f), what, n, E, c->k, c->kind, c->noisy, c->score, c->seq,         \
          c->group, nt, #f, mt->f, ref->f)
        SAME(seq_aux_loss);
        SAME(importance_loss_vmoe);
        SAME(load_loss_vmoe);
        SAME(load_loss_shazeer);
#undef SAME
    }
    moe_par_set_threads(0);
out:
    free(L);
    moe_plan_free(p);
    moe_metrics_free(ref);
    moe_metrics_free(mt);
}

/* Entries in expert order (expert e takes the tokens t with (7t + 13e) mod 5 == 0, and token
 * 0 twice), E = 72 in G groups: the histograms equal a count of distinct (token, expert) pairs
 * and groups made here from the same rule. */
static void test_marks(int G)
{
    enum { N = 300, EX = 72 };
    moe_plan *p = moe_plan_alloc(N, EX, (size_t)N * EX + 1);
    moe_metrics *mt = moe_metrics_alloc(EX);
    CHECK(p && mt, "alloc");
    if (!p || !mt || moe_plan_reset(p, N, EX, EX))
        goto out;
    p->k = 1;
    p->capacity = N + 1;
    long want[EX + 1] = {0}, want_g[EX + 1] = {0};
    for (int e = 0; e < EX; e++) {
        int slot = 0;
        for (int t = 0; t < N; t++)
            if ((7 * t + 13 * e) % 5 == 0)
                moe_plan_push(p, t, e, slot++, 1.0, 1.0);
        if (e == 0)
            moe_plan_push(p, 0, 0, slot, 1.0, 1.0); /* a repeated pair counts once */
    }
    for (int t = 0; t < N; t++) {
        int cnt = 0, touched = 0;
        for (int g = 0; g < G; g++) {
            int c = 0;
            for (int e = g * (EX / G); e < (g + 1) * (EX / G); e++)
                c += (7 * t + 13 * e) % 5 == 0;
            cnt += c;
            touched += c > 0;
        }
        want[cnt]++;
        want_g[touched]++;
    }
    moe_route_opts o;
    moe_route_opts_default(&o);
    o.groups = G;
    CHECK_INT(moe_metrics_set_opts(mt, &o), MOE_OK);
    CHECK_INT(moe_metrics_compute(p, NULL, 0, 0, 0, 0, mt), MOE_OK);
    for (int c = 0; c <= EX; c++)
        CHECK(mt->experts_per_token[c] == want[c], "G %d: experts_per_token[%d] = %ld, want %ld",
              G, c, mt->experts_per_token[c], want[c]);
    for (int c = 0; c <= G; c++)
        CHECK(mt->groups_touched[c] == want_g[c], "G %d: groups_touched[%d] = %ld, want %ld", G,
              c, mt->groups_touched[c], want_g[c]);
out:
    moe_plan_free(p);
    moe_metrics_free(mt);
}

/* Claims of token t: (7t) % (kmax + 1). */
static int kcl(int t, int kmax) { return (t * 7) % (kmax + 1); }

/* Plan of N tokens over EX experts in G groups: token t keeps kcl(t) claims on experts
 * (3t + 7j) % EX (j = 0, 1, ...: distinct; one more entry on the first
 * expert in every 9th token whose claims are fewer than kmax), in
 * token order (each token read from its entries), or (order 1) in expert order (marks first).
 * The counts against a serial count of the same rule, on 1 to 3 threads. */
static void test_counts(int kmax, int order, int G, int gsz)
{
    enum { N = 700, EX = 40 };
    moe_plan *p = moe_plan_alloc(N, EX, (size_t)N * 20);
    moe_metrics *mt = moe_metrics_alloc(EX);
    unsigned char *has = calloc((size_t)N * EX, 1);
    CHECK(p && mt && has, "alloc");
    if (!p || !mt || !has || moe_plan_reset(p, N, EX, EX))
        goto out;
    p->k = 2;
    p->capacity = N;
    long kept[EX] = {0};
    for (int pass = 0; pass < (order ? EX : 1); pass++)
        for (int t = 0; t < N; t++)
            for (int j = 0; j < kcl(t, kmax) + (t % 9 == 0 && kcl(t, kmax) < kmax); j++) {
                const int e = j == kcl(t, kmax) ? (3 * t) % EX : (3 * t + 7 * j) % EX;
                if (order && e != pass)
                    continue;
                moe_plan_push(p, t, e, t, 1.0, 1.0);
                has[(size_t)t * EX + e] = 1;
                kept[e]++;
            }
    p->n_claims = (long)p->n_entries + 5;
    long ept[EX + 1] = {0}, gt[EX + 1] = {0}, touched_sum = 0, dropped = 0;
    const int gs = gsz > 0 && gsz < N ? gsz : N;
    int in_group = 0, ngroups = 0;
    double rmin = INFINITY, rmax = -INFINITY, rsum = 0.0;
    for (int t = 0; t < N; t++) {
        int cnt = 0, touched = 0;
        for (int g = 0; g < G; g++) {
            int c = 0;
            for (int e = g * (EX / G); e < (g + 1) * (EX / G); e++)
                c += has[(size_t)t * EX + e];
            cnt += c;
            touched += c > 0;
        }
        ept[cnt]++;
        gt[touched]++;
        touched_sum += touched;
        dropped += cnt == 0;
        if (++in_group == gs || t == N - 1) {
            double r = (double)dropped / in_group;
            rmin = r < rmin ? r : rmin;
            rmax = r > rmax ? r : rmax;
            rsum += r;
            ngroups++;
            dropped = in_group = 0;
        }
    }
    moe_route_opts o;
    moe_route_opts_default(&o);
    o.groups = G;
    o.group_size = gsz;
    CHECK_INT(moe_metrics_set_opts(mt, &o), MOE_OK);
    moe_par_set_grain(1);
    for (int nt = 1; nt <= 3; nt++) {
        moe_par_set_threads(nt);
        CHECK_INT(moe_metrics_compute(p, NULL, 0, 0, 0, 0, mt), MOE_OK);
        const char *what = "kmax %d order %d G %d group_size %d, %d threads: %s";
        int same_ept = 1, same_gt = 1, same_kept = 1;
        for (int c = 0; c <= EX; c++)
            same_ept &= mt->experts_per_token[c] == ept[c];
        for (int c = 0; c <= G; c++)
            same_gt &= mt->groups_touched[c] == gt[c];
        for (int e = 0; e < EX; e++)
            same_kept &= mt->kept_load[e] == kept[e];
        CHECK(same_ept, what, kmax, order, G, gsz, nt, "experts_per_token");
        CHECK(same_gt, what, kmax, order, G, gsz, nt, "groups_touched");
        CHECK(same_kept, what, kmax, order, G, gsz, nt, "kept_load");
        CHECK(same(mt->groups_touched_mean, (double)touched_sum / N), what, kmax, order, G, gsz,
              nt, "groups_touched_mean");
        CHECK(same(mt->token_drop_rate_group_min, rmin) &&
              same(mt->token_drop_rate_group_max, rmax) &&
              same(mt->token_drop_rate_group_mean, rsum / ngroups), what, kmax, order, G, gsz,
              nt, "token drop rates per group");
        CHECK(same(mt->token_drop_rate, (double)ept[0] / N), what, kmax, order, G, gsz, nt,
              "token_drop_rate");
    }
    /* two entries outside the plan: the first is the one named, whichever part finds it */
    const size_t b1 = p->n_entries / 2 + 1, b2 = p->n_entries - 2;
    p->entries[b2].slot = N;
    p->entries[b1].expert = EX;
    char want[64];
    snprintf(want, sizeof want, "plan entry %zu (", b1);
    for (int nt = 1; nt <= 3; nt++) {
        moe_par_set_threads(nt);
        moe_clear_error();
        CHECK_INT(moe_metrics_compute(p, NULL, 0, 0, 0, 0, mt), MOE_EINVAL);
        CHECK(strstr(moe_errmsg(), want) != NULL, "%d threads: '%s' names entry %zu", nt,
              moe_errmsg(), b1);
    }
    moe_par_set_threads(0);
    moe_par_set_grain(0);
out:
    free(has);
    moe_plan_free(p);
    moe_metrics_free(mt);
}

/* A plan of 1000 finite entries, then non-finite weights at entries 700 (combine, +inf) and
 * 310 (dispatch, NaN): the first non-finite one on 1 to 3 threads, parts of one entry. */
static void test_first_nonfinite(void)
{
    moe_plan *p = moe_plan_alloc(1000, 4, 1000);
    CHECK(p != NULL, "alloc");
    if (!p || moe_plan_reset(p, 1000, 4, 4))
        goto out;
    for (int t = 0; t < 1000; t++)
        moe_plan_push(p, t, t % 4, t, 0.5, 0.25);
    moe_par_set_grain(1);
    for (int step = 0; step < 3; step++) {
        if (step == 1)
            p->entries[700].combine_w = INFINITY;
        if (step == 2)
            p->entries[310].dispatch_w = NAN;
        const size_t want = step == 0 ? 1000 : step == 1 ? 700 : 310;
        for (int nt = 1; nt <= 3; nt++) {
            moe_par_set_threads(nt);
            CHECK(moe_plan_first_nonfinite(p) == want, "step %d, %d threads: first non-finite "
                  "entry %zu, want %zu", step, nt, moe_plan_first_nonfinite(p), want);
        }
    }
    moe_par_set_threads(0);
    moe_par_set_grain(0);
out:
    moe_plan_free(p);
}

int main(void)
{
    test_first_nonfinite();
    test_counts(16, 0, 1, 0);
    test_counts(16, 0, 4, 33);
    test_counts(40, 0, 5, 700);
    test_counts(3, 0, 2, 1);
    test_counts(16, 1, 8, 100);
    test_counts(5, 1, 1, 0);
    test_marks(1);
    test_marks(4);
    test_marks(9);
    gsl_rng *g = moe_rng_alloc(2024, 0);
    const fused_case cases[] = {
        {3000, 8, 2, KIND_GAUSS, 0, MOE_SCORE_SOFTMAX, 0, 0},
        {3000, 8, 8, KIND_TIES, 0, MOE_SCORE_SOFTMAX, 0, 0},
        {2500, 16, 1, KIND_TIES, 0, MOE_SCORE_SOFTMAX, 0, 0},
        {2000, 20, 3, KIND_SPECIAL, 0, MOE_SCORE_SOFTMAX, 0, 0},
        {2000, 20, 1, KIND_GAUSS, 0, MOE_SCORE_SOFTMAX, 0, 0},
        {1000, 250, 1, KIND_TIES, 0, MOE_SCORE_SOFTMAX, 0, 0},
        {2048, 64, 1, KIND_GAUSS, 0, MOE_SCORE_SOFTMAX, 0, 0},
        {2048, 64, 2, KIND_TIES, 0, MOE_SCORE_SOFTMAX, 128, 256},
        {2048, 64, 8, KIND_TIES, 0, MOE_SCORE_SOFTMAX, 0, 300},
        {2048, 64, 9, KIND_GAUSS, 0, MOE_SCORE_SOFTMAX, 512, 0},
        {2048, 64, 2, KIND_SPECIAL, 0, MOE_SCORE_SOFTMAX, 0, 0},
        {2048, 64, 2, KIND_GAUSS, 1, MOE_SCORE_SOFTMAX, 256, 1000},
        {1024, 64, 64, KIND_TIES, 1, MOE_SCORE_SOFTMAX, 0, 0},
        {2048, 64, 4, KIND_TIES, 0, MOE_SCORE_SIGMOID, 64, 0},
        {2048, 64, 2, KIND_GAUSS, 0, MOE_SCORE_SQRTSOFTPLUS, 0, 500},
        {1200, 256, 8, KIND_TIES, 0, MOE_SCORE_SOFTMAX, 0, 0},
        {1200, 256, 2, KIND_GAUSS, 1, MOE_SCORE_SOFTMAX, 400, 0},
        {600, 250, 13, KIND_SPECIAL, 0, MOE_SCORE_SOFTMAX, 0, 0},
    };
    for (size_t i = 0; g && i < sizeof cases / sizeof cases[0]; i++)
        run_case(&cases[i], g);
    CHECK(g != NULL, "rng");
    gsl_rng_free(g);
    printf("test_metrics_fused: %d passed, %d failed\n", check_pass, check_fail);
    return check_fail != 0;
}
