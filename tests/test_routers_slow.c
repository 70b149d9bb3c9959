/* test_routers_slow.c: sinkhorn, dsv3_bias, topp and relu on the routers' threads (routers/
 * sinkhorn.c, dsv3_bias.c, topp.c, relu.c, ranked.c) against their definitions, written plainly
 * here from the routers' header comments:
 *   - moe_sinkhorn_balance gives the bits of the serial loop of sinkhorn.h (exp of libm, row sums
 *     over e in order, column sums over t in order, two passes per iteration) for 1, 2 and 3
 *     threads, on shapes with row tails (n = 5003: the last row block short, pieces of blocks
 *     that are not multiples of eight rows) and column tails (E = 37; E = 300: a full
 *     128-column block and a tail per thread with AVX-512, blocks of 32 and a tail with
 *     AVX2; E = 256: 128 columns per range on two threads, the experiments' shape), and on
 *     n = 7 rows cut into pieces of two or three rows (every grain 1);
 *   - dropless, token_major plans (entries in token order, slot = the expert's claims so far)
 *     built from a stable descending argsort (moe_argsort_desc) of the definition's scores:
 *     topp (softmax p, claimed until the cumulative p reaches top_p), relu (logits > 0), both also
 *     with max_k, dsv3_bias (sigmoid + bias, gates normalised over the k) and sinkhorn (key
 *     K d1, gate sigmoid for k = 1 and p for k = 2), compared bit for bit;
 *   - with a capacity factor, every claim order gives the same plan with 1 and 2 threads;
 *   - topp and relu in every claim order, capacity factor 0.5, 1, 2 and dropless, max_k, ties,
 *     on 1 and 2 threads, give the plans of the previous code path (ref_var: the claims laid
 *     out as (T,K) columns and resolved by moe_claims_resolve) bit for bit;
 *   - moe_ranked and moe_ranked_sort take indices in the order of moe_argsort_desc, ties (and
 *     -0.0 = +0.0) to the lower index, on halves (ties), continuous values, an outlier, a
 *     subnormal range and infinities (moe_ranked_sort's by-bucket path and its fallbacks).
 * The logits are quantised to quarters so that scores tie and the tie rules are exercised. */
#include "check.h"
#include "moe.h"
#include "../routers/claims.h"
#include "../routers/par.h"
#include "../routers/ranked.h"
#include "../routers/sinkhorn.h"
#include "route_helper.h"

#include <gsl/gsl_randist.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

enum { N = 5003, EW = 300, EN = 37 };

static double L[N * EW];

static void fill_logits(gsl_rng *r, int E, double sd)
{
    for (int i = 0; i < N * E; i++)
        L[i] = round(4.0 * gsl_ran_gaussian(r, sd)) / 4.0;
}

/* ---- sinkhorn balancing against the serial loop ---- */

static int ref_balance(int n, int E, double tol, double *K, double *d0, double *d1, double *cs)
{
    for (int t = 0; t < n; t++) {
        double mx = L[(size_t)t * E];
        for (int e = 1; e < E; e++)
            mx = L[(size_t)t * E + e] > mx ? L[(size_t)t * E + e] : mx;
        for (int e = 0; e < E; e++)
            K[(size_t)t * E + e] = exp(L[(size_t)t * E + e] - mx);
    }
    for (int e = 0; e < E; e++)
        d1[e] = 1.0;
    for (int it = 1; it <= MOE_SINKHORN_MAX_ITER; it++) {
        for (int e = 0; e < E; e++)
            cs[e] = 0.0;
        for (int t = 0; t < n; t++) {
            double s = 0.0;
            for (int e = 0; e < E; e++)
                s += K[(size_t)t * E + e] * d1[e];
            d0[t] = 1.0 / ((double)n * s);
        }
        for (int t = 0; t < n; t++)
            for (int e = 0; e < E; e++)
                cs[e] += d0[t] * K[(size_t)t * E + e];
        double delta = 0.0;
        for (int e = 0; e < E; e++) {
            double nd = 1.0 / ((double)E * cs[e]), ch = fabs(nd - d1[e]) / nd;
            delta = ch > delta ? ch : delta;
            d1[e] = nd;
        }
        if (delta < tol)
            return it;
    }
    return -1;
}

/* n rows of E; grain > 0: every part split down to that many items */
static void test_balance(gsl_rng *r, int n, int E, long grain)
{
    fill_logits(r, E, 1.5);
    const size_t ne = (size_t)n * E;
    double *K = malloc(ne * sizeof *K), *Kr = malloc(ne * sizeof *Kr);
    double d0[N], d0r[N], d1[EW], d1r[EW], cs[EW];
    int want = ref_balance(n, E, 1e-9, Kr, d0r, d1r, cs);
    CHECK(want > 1, "n = %d, E = %d: the reference converges in more than one iteration (%d)",
          n, E, want);
    moe_par_set_grain(grain);
    for (int th = 1; th <= 3; th++) {
        moe_par_set_threads(th);
        int iters = 0;
        int rc = moe_sinkhorn_balance(L, n, E, 1e-9, MOE_SINKHORN_MAX_ITER, K, d0, d1, cs, &iters);
        CHECK(rc == MOE_OK && iters == want,
              "n = %d, E = %d, %d threads: rc %d, %d iterations, want %d", n, E, th, rc, iters,
              want);
        CHECK(memcmp(K, Kr, ne * sizeof *K) == 0 &&
                  memcmp(d0, d0r, (size_t)n * sizeof *d0) == 0 &&
                  memcmp(d1, d1r, (size_t)E * sizeof *d1) == 0,
              "n = %d, E = %d, %d threads: K, d0, d1 not bit-equal to the serial loop", n, E, th);
    }
    moe_par_set_threads(0);
    moe_par_set_grain(0);
    free(K), free(Kr);
}

/* ---- reference plans: dropless, token_major ---- */

typedef struct {
    int n;
    int32_t tok[N * 64], ex[N * 64];
    long slot[N * 64];
    double w[N * 64];
} ref_plan;

static ref_plan R;
static long fill[EW];

static void ref_push(int t, int e, double w)
{
    R.tok[R.n] = t, R.ex[R.n] = e, R.w[R.n] = w, R.slot[R.n] = fill[e]++;
    R.n++;
}

/* per token: scores v (E) ordered by a stable descending argsort */
static void ref_order(const double *v, int E, int *idx)
{
    int tmp[EW];
    moe_argsort_desc(v, E, idx, tmp);
}

static moe_plan *route(const char *name, moe_route_opts *o, int E, int threads)
{
    return route_helper(name, o, N, E, L, NULL, NULL, threads);
}

static void check_ref(const char *what, const moe_plan *p)
{
    int ok = p->n_entries == (size_t)R.n;
    for (int i = 0; ok && i < R.n; i++) {
        const moe_entry *x = &p->entries[i];
        ok = x->token == R.tok[i] && x->expert == R.ex[i] && x->slot == R.slot[i] &&
             memcmp(&x->combine_w, &R.w[i], sizeof R.w[i]) == 0;
    }
    CHECK(ok, "%s: plan differs from the definition (%zu entries, want %d)", what, p->n_entries,
          R.n);
}

static void ref_begin(void)
{
    R.n = 0;
    memset(fill, 0, sizeof fill);
}

static void ref_topp(int E, double top_p, int max_k)
{
    ref_begin();
    double p[EW];
    int idx[EW];
    for (int t = 0; t < N; t++) {
        moe_softmax(L + (size_t)t * E, E, p);
        ref_order(p, E, idx);
        double cum = 0.0;
        for (int j = 0; j < max_k && (j == 0 || cum < top_p); j++) {
            ref_push(t, idx[j], p[idx[j]]);
            cum += p[idx[j]];
        }
    }
}

static void ref_relu(int E, int max_k)
{
    ref_begin();
    int idx[EW];
    for (int t = 0; t < N; t++) {
        const double *lt = L + (size_t)t * E;
        ref_order(lt, E, idx);
        for (int j = 0; j < max_k && lt[idx[j]] > 0.0; j++)
            ref_push(t, idx[j], lt[idx[j]]);
    }
}

static void ref_dsv3(int E, int k)
{
    ref_begin();
    double s[EW];
    int idx[EW];
    for (int t = 0; t < N; t++) {
        for (int e = 0; e < E; e++)
            s[e] = 1.0 / (1.0 + exp(-L[(size_t)t * E + e])); /* + bias 0 */
        ref_order(s, E, idx);
        double sum = 0.0;
        for (int j = 0; j < k; j++)
            sum += s[idx[j]];
        for (int j = 0; j < k; j++)
            ref_push(t, idx[j], s[idx[j]] / sum);
    }
}

static void ref_sinkhorn(int E, int k)
{
    static double K[N * EN];
    double d0[N], d1[EN], cs[EN], key[EN], p[EN];
    ref_balance(N, E, 1e-9, K, d0, d1, cs);
    ref_begin();
    int idx[EN];
    for (int t = 0; t < N; t++) {
        const double *lt = L + (size_t)t * E;
        for (int e = 0; e < E; e++)
            key[e] = K[(size_t)t * E + e] * d1[e];
        ref_order(key, E, idx);
        moe_softmax(lt, E, p);
        for (int j = 0; j < k; j++)
            ref_push(t, idx[j], k == 1 ? 1.0 / (1.0 + exp(-lt[idx[j]])) : p[idx[j]]);
    }
}

static void test_definitions(gsl_rng *r)
{
    const int E = EN;
    fill_logits(r, E, 1.0);
    moe_route_opts o;
    for (int th = 1; th <= 2; th++) {
        char what[80];
        moe_route_opts_default(&o);
        o.order = MOE_ORDER_TOKEN_MAJOR;
        ref_topp(E, 0.5, E);
        moe_plan *p = route("topp", &o, E, th);
        snprintf(what, sizeof what, "topp top_p 0.5, %d threads", th);
        check_ref(what, p);
        moe_plan_free(p);
        o.top_p = 0.9, o.max_k = 5;
        ref_topp(E, 0.9, 5);
        p = route("topp", &o, E, th);
        snprintf(what, sizeof what, "topp top_p 0.9 max_k 5, %d threads", th);
        check_ref(what, p);
        moe_plan_free(p);
        moe_route_opts_default(&o);
        o.order = MOE_ORDER_TOKEN_MAJOR;
        ref_relu(E, E);
        p = route("relu", &o, E, th);
        snprintf(what, sizeof what, "relu, %d threads", th);
        check_ref(what, p);
        moe_plan_free(p);
        o.max_k = 3;
        ref_relu(E, 3);
        p = route("relu", &o, E, th);
        snprintf(what, sizeof what, "relu max_k 3, %d threads", th);
        check_ref(what, p);
        moe_plan_free(p);
        moe_route_opts_default(&o);
        o.order = MOE_ORDER_TOKEN_MAJOR, o.k = 8;
        ref_dsv3(E, 8);
        p = route("dsv3_bias", &o, E, th);
        snprintf(what, sizeof what, "dsv3_bias k 8, %d threads", th);
        check_ref(what, p);
        moe_plan_free(p);
        for (int k = 1; k <= 2; k++) {
            moe_route_opts_default(&o);
            o.order = MOE_ORDER_TOKEN_MAJOR, o.k = k;
            ref_sinkhorn(E, k);
            p = route("sinkhorn", &o, E, th);
            snprintf(what, sizeof what, "sinkhorn k %d, %d threads", k, th);
            check_ref(what, p);
            moe_plan_free(p);
        }
    }
}

/* ---- 1 and 2 threads with capacity, every order ---- */

static void test_threads(gsl_rng *r)
{
    const int E = EN;
    fill_logits(r, E, 1.0);
    static const struct {
        const char *name;
        int k;
    } rs[] = {{"topp", 0}, {"relu", 0}, {"dsv3_bias", 8}, {"sinkhorn", 2}, {"sinkhorn", 1}};
    const int orders[] = {MOE_ORDER_CHOICE_MAJOR, MOE_ORDER_TOKEN_MAJOR, MOE_ORDER_BPR,
                          MOE_ORDER_PROBS};
    for (size_t i = 0; i < sizeof rs / sizeof *rs; i++)
        for (int q = 0; q < 4; q++) {
            moe_route_opts o;
            moe_route_opts_default(&o);
            o.k = rs[i].k, o.order = orders[q];
            o.cf_set = 1, o.cf_num = 3, o.cf_den = 4; /* drops: C below the mean load */
            moe_plan *a = route(rs[i].name, &o, E, 1), *b = route(rs[i].name, &o, E, 2);
            CHECK(a->n_entries > 0 && a->n_entries < (size_t)a->n_claims &&
                      route_helper_same_plan(a, b, E),
                  "%s k=%d order %d, capacity factor 0.75: 1 and 2 threads differ (or nothing "
                  "dropped)", rs[i].name, rs[i].k, orders[q]);
            moe_plan_free(a), moe_plan_free(b);
        }
}

/* ---- topp and relu against the previous code path ---- */

/* Each token's claims by the definition (ref_topp / ref_relu: a stable descending argsort),
 * at most K: experts ex (n,K) and gates g (n,K), cnt (n) of them; claims in all, the longest
 * prefix Kc, and relu's sum of ReLU(L) over the tokens. */
typedef struct {
    int topp, K, Kc;
    int32_t *ex;
    double *g, l1;
    int *cnt;
    long claims;
} ref_claims;

static void ref_var_claims(ref_claims *rc, const char *name, const moe_route_opts *o, int n,
                           int E, const double *Lv)
{
    const int topp = strcmp(name, "topp") == 0, K = o->max_k ? o->max_k : E;
    double *p = malloc((size_t)E * sizeof *p);
    int *idx = malloc((size_t)E * sizeof *idx), *tmp = malloc((size_t)E * sizeof *tmp);
    *rc = (ref_claims){.topp = topp, .K = K, .Kc = 1};
    rc->ex = malloc((size_t)n * K * sizeof *rc->ex);
    rc->g = malloc((size_t)n * K * sizeof *rc->g);
    rc->cnt = malloc((size_t)n * sizeof *rc->cnt);
    for (int t = 0; t < n; t++) {
        const double *lt = Lv + (size_t)t * E, *v = lt;
        if (topp)
            moe_softmax(lt, E, p), v = p;
        moe_argsort_desc(v, E, idx, tmp);
        double cum = 0.0;
        int m = 0;
        for (; m < K && (topp ? m == 0 || cum < o->top_p : v[idx[m]] > 0.0); m++) {
            rc->ex[(size_t)t * K + m] = idx[m], rc->g[(size_t)t * K + m] = v[idx[m]];
            cum += v[idx[m]];
        }
        for (int e = 0; e < E; e++)
            rc->l1 += lt[e] > 0.0 ? lt[e] : 0.0;
        rc->cnt[t] = m, rc->claims += m, rc->Kc = m > rc->Kc ? m : rc->Kc;
    }
    free(p), free(idx), free(tmp);
}

static void ref_claims_free(ref_claims *rc)
{
    free(rc->ex), free(rc->g), free(rc->cnt);
}

/* The plan of topp or relu as the routers made it before they stored their claims compactly
 * (the removed moe_ranked_compact + moe_claims_finish_variable): the claims rc laid out as
 * (n,Kc) claim columns, claim 0 after each token's prefix, resolved by moe_claims_resolve
 * (claims.h) with C = moe_capacity(o, 1, claims, E) when o gives a capacity factor (else
 * dropless), on one thread; aux_loss as the routers' header comments define it. */
static moe_plan *ref_var(const ref_claims *rcl, const moe_route_opts *o, int n, int E,
                         const double *Lv, const double *U)
{
    const int Kc = rcl->Kc, K = rcl->K;
    moe_par_set_threads(1);
    moe_claims *c = moe_claims_alloc(n, Kc, E, 1);
    moe_plan *pl = moe_plan_alloc(n, E, 16);
    int rc = moe_plan_reset(pl, n, E, E) || moe_claims_softmax(c, Lv, n, pl);
    for (int t = 0; t < n; t++)
        for (int j = 0; j < Kc; j++) {
            const size_t q = (size_t)t * Kc + j, src = (size_t)t * K + j;
            const int on = j < rcl->cnt[t];
            c->claim[q] = (unsigned char)on;
            c->expert[q] = on ? rcl->ex[src] : 0;
            c->gate[q] = on ? rcl->g[src] : 0.0;
        }
    c->rts_u = U;
    const int limited = !o->dropless && o->cf_set;
    long C = 0;
    if (!rc && limited)
        rc = moe_capacity(o, 1, rcl->claims, E, &C);
    if (!rc)
        rc = moe_claims_resolve(c, n, o->order, C, !limited, o->renormalize, pl);
    CHECK(rc == 0, "reference, order %d: %s", o->order, moe_errmsg());
    double s = 0.0;
    for (int e = 0; rcl->topp && e < E; e++)
        s += (double)pl->assigned_load[e] * c->pmean[e];
    pl->aux_loss = !rcl->topp ? rcl->l1 / n
                   : rcl->claims ? (double)E / (double)rcl->claims * s : 0.0;
    moe_claims_free(c);
    moe_par_set_threads(0);
    return pl;
}

/* topp and relu in every claim order, capacity factors 0.5, 1, 2 and dropless, with and without
 * max_k, renormalised or not, on 1 and 2 threads, against ref_var bit for bit; logits with ties
 * (quarters), E = 37 on the heap path and E = 4100 (> MOE_RANKED_MAX) on the path of the long
 * rows (orders choice_major and probs, cf 0.5 and dropless). */
static void test_var_orders(gsl_rng *r, int n, int E)
{
    double *U = malloc((size_t)n * E * sizeof *U);
    for (int i = 0; i < n * E; i++) {
        L[i] = round(4.0 * gsl_ran_gaussian(r, 1.0)) / 4.0;
        U[i] = gsl_rng_uniform_pos(r);
    }
    static const struct {
        const char *name;
        double top_p;
        int max_k;
    } cs[] = {{"topp", 0.5, 0}, {"topp", 0.9, 5}, {"relu", 0.5, 0}, {"relu", 0.5, 3}};
    static const long long cf[][2] = {{1, 2}, {1, 1}, {2, 1}, {0, 0}};
    const int step = E > 300 ? 3 : 1; /* the long rows: orders choice_major and probs */
    for (size_t i = 0; i < sizeof cs / sizeof *cs; i++) {
        moe_route_opts o;
        moe_route_opts_default(&o);
        o.top_p = cs[i].top_p;
        o.max_k = cs[i].max_k ? cs[i].max_k : E > 300 ? 40 : 0;
        ref_claims rcl;
        ref_var_claims(&rcl, cs[i].name, &o, n, E, L);
        for (int order = MOE_ORDER_CHOICE_MAJOR; order <= MOE_ORDER_GATE; order += step)
            for (int q = 0; q < 4; q += step) {
                o.order = order;
                o.renormalize = (order + q) % 2;
                o.cf_set = cf[q][0] > 0, o.cf_num = cf[q][0], o.cf_den = cf[q][1];
                o.dropless = cf[q][0] == 0;
                moe_plan *want = ref_var(&rcl, &o, n, E, L, U);
                moe_plan *a = route_helper(cs[i].name, &o, n, E, L, NULL, U, 1);
                moe_plan *b = route_helper(cs[i].name, &o, n, E, L, NULL, U, 2);
                CHECK(route_helper_same_plan(want, a, E) && route_helper_same_plan(want, b, E) &&
                          (q > 0 || a->n_entries < (size_t)a->n_claims),
                      "%s max_k %d, E = %d, order %d, cf %lld/%lld, renormalize %d: the plan "
                      "on 1 or 2 threads differs from the previous code path's (or cf 1/2 "
                      "dropped nothing)", cs[i].name, o.max_k, E, order, cf[q][0], cf[q][1],
                      o.renormalize);
                moe_plan_free(want), moe_plan_free(a), moe_plan_free(b);
            }
        ref_claims_free(&rcl);
    }
    free(U);
}

/* ---- moe_ranked ---- */

static void test_ranked(gsl_rng *r)
{
    enum { M = 301 };
    double v[M];
    int idx[M], tmp[M];
    int32_t heap[M];
    for (int rep = 0; rep < 32; rep++) {
        /* rep 0-19: halves (many ties); 20-25: continuous values, 128 to 301 of them (by value
         * buckets); 26-27: one value far above the others (most in one bucket); 28-29: a
         * subnormal range; 30-31: an infinity */
        const int len = rep == 0 ? 1
                        : rep == 1 ? 2
                        : rep < 20 ? M - rep
                                   : 128 + (M - 128) * (rep % 7) / 6;
        for (int i = 0; i < len; i++)
            v[i] = rep < 20 ? round(gsl_ran_gaussian(r, 2.0)) / 2.0 : gsl_ran_gaussian(r, 1.0);
        if (rep >= 26 && rep < 28)
            v[len / 3] = 1e6;
        for (int i = 0; rep >= 28 && rep < 30 && i < len; i++)
            v[i] = (i % 5) * 4.9e-324;
        if (rep >= 30)
            v[len / 4] = rep == 30 ? INFINITY : -INFINITY;
        v[0] = 0.0, v[len / 2] = -0.0; /* equal: the lower index first */
        moe_argsort_desc(v, len, idx, tmp);
        moe_ranked rk;
        moe_ranked_init(&rk, v, len, heap);
        int ok = 1;
        for (int q = 0; q < len; q++)
            ok &= moe_ranked_next(&rk) == idx[q];
        CHECK(ok && moe_ranked_next(&rk) == -1,
              "moe_ranked on %d values: not the stable descending argsort's order", len);
        double sv[M], cv[M]; /* moe_ranked_sort: the same order, the values carried along */
        int32_t ix[M], si[M];
        for (int i = 0; i < len; i++)
            cv[i] = v[i], ix[i] = i;
        const int in = moe_ranked_sort(cv, ix, sv, si, len);
        ok = 1;
        for (int q = 0; q < len; q++)
            ok &= (in ? ix : si)[q] == idx[q] &&
                  memcmp(&(in ? cv : sv)[q], &v[idx[q]], sizeof v[0]) == 0;
        CHECK(ok, "moe_ranked_sort on %d values: not the stable descending argsort's order",
              len);
    }
}

int main(void)
{
    gsl_rng *r = moe_rng_alloc(20261205u, 7);
    test_ranked(r);
    test_balance(r, N, EN, 0);
    test_balance(r, N, EW, 0);
    test_balance(r, N, 256, 0);
    test_balance(r, 7, EN, 1);
    test_definitions(r);
    test_threads(r);
    test_var_orders(r, N, EN);
    test_var_orders(r, 64, 4100);
    gsl_rng_free(r);
    return check_report("test_routers_slow");
}
