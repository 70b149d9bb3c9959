/* test_claims_var.c: the variable claims of topp and relu (routers/claims_var.h) resolved again
 * without a new rows pass, as the route memo does at each capacity factor after the first
 * (sim/route_memo.h): the resolution then starts from the claim counts the previous one kept
 * (the counts per part, rank and expert do not depend on the capacity).
 *
 * Cases: 3000 tokens x 32 experts of pseudo-random logits with ties (whole rows equal, pairs of
 * equal logits), claims made by a relu-like row written here (the positive logits, largest
 * first, ties to the lower expert, at most K = 32 or K = 5), the claim orders choice_major,
 * token_major, bpr, probs and gate, capacity factors 0.5, 1, 2 then 0.75 and dropless, with and
 * without renormalisation, on 1 and 2 threads (2 threads with every parallel pass split however
 * small, moe_par_set_grain(1)). Reference: the previous path, a rows pass right before every
 * resolution (no counts to reuse). Checked: the two plans bit for bit (route_helper_same_plan:
 * entries, loads, importance, claims, per-rank counts, capacity), and that the cases drop claims.
 */
#include "check.h"
#include "moe.h"
#include "options.h"
#include "../routers/claims_var.h"
#include "../routers/par.h"
#include "route_helper.h"

#include <string.h>

enum { N = 3000, E = 32 };

static double L[N * E], lse[N];

/* relu-like: the positive logits of token t, largest first, ties to the lower expert, at most
 * v->K of them (insertion into a sorted list) */
static void row_relu(void *ctx, int t, const double *lt, const double *pt)
{
    (void)pt;
    moe_claims_var *v = ctx;
    int32_t ex[E];
    double g[E];
    int m = 0;
    for (int e = 0; e < E; e++) {
        if (!(lt[e] > 0.0))
            continue;
        int j = m < v->K ? m++ : v->K;
        if (j == v->K && !(lt[e] > g[v->K - 1]))
            continue;
        if (j == v->K)
            j--;
        while (j > 0 && g[j - 1] < lt[e]) {
            g[j] = g[j - 1], ex[j] = ex[j - 1];
            j--;
        }
        g[j] = lt[e], ex[j] = e;
    }
    moe_claims_var_put(v, t, m, ex, g);
}

/* opts of order o, capacity factor cf ("" = dropless), renormalisation rn */
static moe_route_opts opts_of(const char *o, const char *cf, int rn)
{
    moe_route_opts op;
    moe_route_opts_default(&op);
    if (moe_route_opts_set(&op, "order", o) || (*cf && moe_route_opts_set(&op, "capacity_factor",
                                                                          cf)) ||
        moe_route_opts_set(&op, "renormalize", rn ? "true" : "false"))
        fprintf(stderr, "options: %s\n", moe_errmsg());
    return op;
}

static int order_of(const char *o)
{
    moe_route_opts op = opts_of(o, "", 0);
    const int r = op.order;
    moe_route_opts_release(&op);
    return r;
}

int main(void)
{
    unsigned long s = 12345;
    for (int i = 0; i < N * E; i++) {
        s = s * 6364136223846793005UL + 1442695040888963407UL;
        L[i] = (double)(long)((s >> 33) % 2001 - 1000) / 250.0; /* quantised: many ties */
    }
    for (int e = 0; e < E; e++)
        L[7 * E + e] = 0.5; /* a row of equal logits */
    const char *orders[] = {"choice_major", "token_major", "bpr", "probs", "gate"};
    const char *cfs[] = {"0.5", "1", "2", "0.75", ""};
    const int Ks[] = {E, 5};
    int cases = 0, drops = 0;
    for (int mode = 0; mode < 3; mode++) { /* 1 thread, 2, 2 with grain 1 */
        moe_par_set_threads(mode ? 2 : 1);
        moe_par_set_grain(mode == 2);
        for (size_t ki = 0; ki < sizeof Ks / sizeof *Ks; ki++)
            for (size_t oi = 0; oi < sizeof orders / sizeof *orders; oi++) {
                const int order = order_of(orders[oi]);
                moe_claims_var *a = moe_claims_var_alloc(N, Ks[ki], E);
                moe_claims_var *b = moe_claims_var_alloc(N, Ks[ki], E);
                moe_plan *pa = moe_plan_alloc(N, E, 16), *pb = moe_plan_alloc(N, E, 16);
                long load[E], claims = 0;
                double imp[E];
                for (size_t ci = 0; ci < sizeof cfs / sizeof *cfs; ci++) {
                    const int rn = (int)(ci + oi) % 2;
                    moe_route_opts op = opts_of(orders[oi], cfs[ci], rn);
                    moe_plan_reset(pa, N, E, E);
                    moe_plan_reset(pb, N, E, E);
                    /* a: one rows pass, its statistics and logsumexps given back at each cf as the
                     * memo gives them; b: a rows pass before every resolution */
                    int rc = 0;
                    if (ci == 0) {
                        rc |= moe_claims_var_rows(a, L, N, order, NULL, row_relu, a, pa);
                        memcpy(load, pa->assigned_load, sizeof load);
                        memcpy(imp, pa->importance, sizeof imp);
                        memcpy(lse, pa->lse, sizeof lse);
                        claims = pa->n_claims;
                    } else {
                        memcpy(pa->assigned_load, load, sizeof load);
                        memcpy(pa->importance, imp, sizeof imp);
                        memcpy(moe_plan_lse_buffer(pa), lse, sizeof lse);
                        pa->lse_of = L;
                        pa->n_claims = claims;
                        moe_claims_var_reused(a);
                    }
                    rc |= moe_claims_var_rows(b, L, N, order, NULL, row_relu, b, pb);
                    rc |= moe_claims_var_resolve(a, &op, N, pa);
                    rc |= moe_claims_var_resolve(b, &op, N, pb);
                    CHECK(rc == 0 && route_helper_same_plan(pa, pb, E),
                          "order %s K %d cf %s renormalize %d, %s: the resolution again differs "
                          "from the one after a rows pass (%zu entries, %zu)",
                          orders[oi], Ks[ki], *cfs[ci] ? cfs[ci] : "dropless", rn,
                          mode == 0 ? "1 thread" : mode == 1 ? "2 threads" : "grain 1",
                          pa->n_entries, pb->n_entries);
                    drops += pb->n_entries < (size_t)pb->n_claims;
                    cases++;
                    moe_route_opts_release(&op);
                }
                moe_plan_free(pa);
                moe_plan_free(pb);
                moe_claims_var_free(a);
                moe_claims_var_free(b);
            }
    }
    moe_par_set_threads(0);
    moe_par_set_grain(0);
    CHECK(drops >= cases / 2, "only %d of %d cases drop claims", drops, cases);
    printf("test_claims_var: %d passed, %d failed\n", check_pass, check_fail);
    return check_fail != 0;
}
