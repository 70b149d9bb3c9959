/* test_claims_orders.c: the claim orders that rank claims by a key (bpr, probs, rts, gate), now
 * resolved on the routers' threads by selection instead of a sort per expert
 * (routers/claims_par.c), and the orders choice_major and token_major (on the threads from
 * contiguous token parts, with a loop of their own for one choice per token), against a
 * reference written here and across thread counts.
 *
 * The reference is the definition of the orders (claims.h, moe_claims_resolve), written as the
 * serial loops the selection replaced: bpr visits the tokens by the stable descending argsort
 * (moe_argsort_desc) of max_e p[t,e] and takes slots rank by rank; probs, rts and gate keep, per
 * expert, the first C claims of the stable descending argsort of its claims (in claim index
 * order) by key (p[t,e], the draw rts[t,e], the claim's gate) and number the kept ones in claim
 * index order; choice_major takes slots rank by rank in token order, token_major claim by claim.
 * Statistics (loads, importance) are added claim by claim in claim index order.
 *
 * Cases: claims filled directly into a claims workspace (K = 1, 2, 3, 8 distinct experts per
 * token, some last choices making no claim; E up to 8, whose counts the threads keep in vector
 * registers, and larger E, in memory), keys quantised to a few values so that most claims tie
 * with others, capacity factors 0.5, 1 and 2 (drops on most experts, some, and none) and
 * dropless, with and without renormalisation, on 1 thread, 2 threads, and 2 threads with every
 * parallel pass split however small (moe_par_set_grain(1), n down to 1 token): the whole plan,
 * bit for bit (memcmp of entries, loads, importance, claims per rank, capacity). Then the
 * routers topk, switch and gshard with each order on 1 and 2 threads, the token orders on
 * shapes where the rows pass's parts end off the even split.
 */
#include "check.h"
#include "moe.h"
#include "../routers/claims.h"
#include "route_helper.h"

#include <gsl/gsl_randist.h>
#include <stddef.h>

enum { NMAX = 30000, EMAX = 64, KMAX = 8 };

/* ---- the reference ---- */

typedef struct {
    long load[EMAX], rank_claims[2], rank_kept[2], n_claims, C;
    double importance[EMAX];
    moe_entry *en;
    size_t n_entries;
} ref_plan;

static long ref_slot[NMAX * KMAX];
static int ref_idx[NMAX * KMAX], ref_tmp[NMAX * KMAX], ref_list[NMAX * KMAX];
static double ref_val[NMAX * KMAX];

static double ref_key(const moe_claims *c, int order, size_t q)
{
    const size_t t = q / (size_t)c->K;
    const int e = c->expert[q];
    return order == MOE_ORDER_PROBS ? c->p[t * c->E + e]
           : order == MOE_ORDER_RTS ? c->rts_u[t * c->E + e]
                                    : c->gate[q];
}

static void ref_resolve(const moe_claims *c, int n, int order, long C, int dropless, int renorm,
                        ref_plan *rp)
{
    const int K = c->K, E = c->E;
    const size_t nk = (size_t)n * K;
    memset(rp, 0, offsetof(ref_plan, en));
    rp->n_entries = 0;
    for (size_t q = 0; q < nk; q++) {
        ref_slot[q] = -1;
        if (c->claim[q]) {
            rp->load[c->expert[q]]++;
            rp->importance[c->expert[q]] += c->gate[q];
            rp->n_claims++;
        }
    }
    if (dropless)
        for (int e = 0, m = 0; e < E; e++)
            C = m = rp->load[e] > m ? (int)rp->load[e] : m;
    rp->C = C;
    if (order == MOE_ORDER_BPR) {
        long fill[EMAX] = {0};
        for (int t = 0; t < n; t++) {
            const double *pt = c->p + (size_t)t * E;
            ref_val[t] = pt[moe_claims_argmax(pt, E, -1)];
        }
        moe_argsort_desc(ref_val, n, ref_idx, ref_tmp);
        for (int j = 0; j < K; j++)
            for (int r = 0; r < n; r++) {
                const size_t q = (size_t)ref_idx[r] * K + j;
                if (c->claim[q])
                    ref_slot[q] = fill[c->expert[q]] < C ? fill[c->expert[q]]++ : -1;
            }
    } else if (order == MOE_ORDER_CHOICE_MAJOR || order == MOE_ORDER_TOKEN_MAJOR) {
        long fill[EMAX] = {0}; /* rank by rank, or claim by claim in token order */
        const int passes = order == MOE_ORDER_CHOICE_MAJOR ? K : 1;
        for (int j = 0; j < passes; j++)
            for (size_t q = (size_t)j; q < nk; q += (size_t)passes)
                if (c->claim[q])
                    ref_slot[q] = fill[c->expert[q]] < C ? fill[c->expert[q]]++ : -1;
    } else {
        for (int e = 0; e < E; e++) {
            int cnt = 0;
            for (size_t q = 0; q < nk; q++)
                if (c->claim[q] && c->expert[q] == e)
                    ref_list[cnt++] = (int)q;
            for (int i = 0; i < cnt; i++)
                ref_val[i] = ref_key(c, order, (size_t)ref_list[i]);
            moe_argsort_desc(ref_val, cnt, ref_idx, ref_tmp);
            for (int i = 0; i < cnt && i < C; i++)
                ref_slot[ref_list[ref_idx[i]]] = 0; /* kept */
            long s = 0;
            for (int i = 0; i < cnt; i++)
                if (ref_slot[ref_list[i]] == 0)
                    ref_slot[ref_list[i]] = s++;
        }
    }
    for (int t = 0; t < n; t++) {
        const size_t q0 = (size_t)t * K;
        double sum = 0.0;
        for (int j = 0; j < K; j++)
            if (ref_slot[q0 + j] >= 0)
                sum += c->gate[q0 + j];
        for (int j = 0; j < K; j++) {
            const size_t q = q0 + j;
            if (j < 2) {
                rp->rank_claims[j] += c->claim[q];
                rp->rank_kept[j] += ref_slot[q] >= 0;
            }
            if (ref_slot[q] >= 0)
                rp->en[rp->n_entries++] = (moe_entry){
                    t, c->expert[q], (int32_t)ref_slot[q], 1.0,
                    renorm && sum > 0.0 ? c->gate[q] / sum : c->gate[q]};
        }
    }
}

static int same_as_ref(const moe_plan *p, const ref_plan *rp, int E)
{
    if (p->n_entries != rp->n_entries || p->capacity != rp->C || p->n_claims != rp->n_claims ||
        memcmp(p->rank_claims, rp->rank_claims, sizeof rp->rank_claims) ||
        memcmp(p->rank_kept, rp->rank_kept, sizeof rp->rank_kept) ||
        memcmp(p->assigned_load, rp->load, (size_t)E * sizeof *rp->load) ||
        memcmp(p->importance, rp->importance, (size_t)E * sizeof *rp->importance))
        return 0;
    for (size_t i = 0; i < p->n_entries; i++) {
        const moe_entry *x = &p->entries[i], *y = &rp->en[i];
        if (x->token != y->token || x->expert != y->expert || x->slot != y->slot ||
            memcmp(&x->combine_w, &y->combine_w, sizeof x->combine_w) ||
            memcmp(&x->dispatch_w, &y->dispatch_w, sizeof x->dispatch_w))
            return 0;
    }
    return 1;
}

/* ---- claims filled directly ---- */

static double P[NMAX * EMAX], RT[NMAX * EMAX];

/* n tokens, K distinct experts each (skewed to the low experts), gates quantised to eighths,
 * p = softmax of logits quantised to halves, rts draws from {0.25, 0.5, 0.75}; with holes:
 * every fifth token's last choice makes no claim (with K = 1: the token makes none). */
static void fill_claims(moe_claims *c, int n, int K, int E, int holes, gsl_rng *g)
{
    for (int t = 0; t < n; t++) {
        double lt[EMAX];
        for (int e = 0; e < E; e++) {
            lt[e] = (double)(int)(gsl_ran_gaussian_ziggurat(g, 1.0) * 2.0) / 2.0;
            RT[(size_t)t * E + e] = 0.25 * (double)(1 + gsl_rng_uniform_int(g, 3));
        }
        moe_softmax(lt, E, P + (size_t)t * E);
        int used[EMAX] = {0};
        for (int j = 0; j < K; j++) {
            int e;
            do /* a skewed draw: the square of a uniform favours the low experts */
                e = (int)(E * gsl_rng_uniform(g) * gsl_rng_uniform(g));
            while (used[e]);
            used[e] = 1;
            const size_t q = (size_t)t * K + j;
            c->expert[q] = e;
            c->gate[q] = 0.125 * (double)(1 + gsl_rng_uniform_int(g, 8));
            c->claim[q] = !(holes && j == K - 1 && t % 5 == 0);
        }
    }
    memcpy(c->p, P, (size_t)n * E * sizeof *P);
    c->rts_u = RT;
}

static void test_direct(void)
{
    static const int orders[] = {MOE_ORDER_BPR,  MOE_ORDER_PROBS,        MOE_ORDER_RTS,
                                 MOE_ORDER_GATE, MOE_ORDER_CHOICE_MAJOR, MOE_ORDER_TOKEN_MAJOR};
    static const char *oname[] = {"bpr", "probs", "rts", "gate", "choice_major", "token_major"};
    static const struct {
        int n, K, E;
    } shapes[] = {{30000, 2, 64}, {20000, 8, 32}, {25000, 1, 16}, {37, 2, 8}, {1, 1, 4},
                  {5, 8, 12}, {20000, 1, 8}, {15000, 2, 8}, {9000, 8, 8}, {7000, 3, 5}};
    static const long cf4[] = {2, 4, 8}; /* capacity factors 0.5, 1, 2 in quarters */
    gsl_rng *g = moe_rng_alloc(21, 1);
    ref_plan rp;
    rp.en = malloc((size_t)NMAX * KMAX * sizeof *rp.en);
    int cases = 0, drops = 0;
    for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++) {
        const int n = shapes[s].n, K = shapes[s].K, E = shapes[s].E;
        moe_claims *c = moe_claims_alloc(n, K, E, 1);
        fill_claims(c, n, K, E, s % 2 == 0, g);
        for (int oi = 0; oi < 6; oi++)
            for (int cfi = 0; cfi < 4; cfi++) { /* cfi 3: dropless */
                const int dropless = cfi == 3, renorm = (oi + cfi) % 2;
                const long C = dropless ? 0 : (cf4[cfi] * K * n + 4L * E - 1) / (4L * E);
                ref_resolve(c, n, orders[oi], C, dropless, renorm, &rp);
                drops += rp.n_entries < (size_t)rp.n_claims;
                for (int mode = 0; mode < 3; mode++) { /* 1 thread, 2, 2 with grain 1 */
                    moe_par_set_threads(mode ? 2 : 1);
                    moe_par_set_grain(mode == 2);
                    moe_plan *p = moe_plan_alloc(n, E, 16);
                    c->stats_done = 0;
                    int rc = moe_claims_resolve(c, n, orders[oi], C, dropless, renorm, p);
                    CHECK(rc == 0 && same_as_ref(p, &rp, E),
                          "order %s n=%d K=%d E=%d C=%ld dropless %d renormalize %d, %s: plan "
                          "differs from the reference (%zu entries, reference %zu)",
                          oname[oi], n, K, E, C, dropless, renorm,
                          mode == 0 ? "1 thread" : mode == 1 ? "2 threads" : "2 threads grain 1",
                          p->n_entries, rp.n_entries);
                    moe_plan_free(p);
                }
                cases++;
            }
        moe_claims_free(c);
    }
    moe_par_set_threads(0);
    moe_par_set_grain(0);
    /* the cases must drop claims, or the selection at the capacity is not exercised */
    CHECK(drops >= cases / 2, "only %d of %d cases drop claims", drops, cases);
    free(rp.en);
    gsl_rng_free(g);
}

/* ---- through the routers ---- */

enum { RN = 20000, RE = 64 };
static double RL[RN * RE], RU[RN], RR[RN * RE];

/* Router name with k, order and capacity factor cfq / 4 (renormalised at 1) on n tokens of E
 * experts: the plans on 1 and 2 threads, bit for bit; one check. */
static void same_on_threads(const char *name, int k, int order, int cfq, int n, int E,
                            const double *R)
{
    moe_route_opts o = route_helper_opts(k, order);
    o.cf_num = cfq;
    o.renormalize = cfq == 4;
    moe_plan *p1 = route_helper(name, &o, n, E, RL, RU, R, 1);
    moe_plan *p2 = route_helper(name, &o, n, E, RL, RU, R, 2);
    CHECK(p1->n_entries > 0 && route_helper_same_plan(p1, p2, E),
          "%s k=%d order %d n=%d E=%d cf %d/4: 1 and 2 threads differ (%zu and %zu entries)",
          name, k, order, n, E, cfq, p1->n_entries, p2->n_entries);
    moe_plan_free(p1);
    moe_plan_free(p2);
}

static void test_routers(void)
{
    static const struct {
        const char *name;
        int k;
    } rt[] = {{"switch", 1}, {"topk", 2}, {"topk", 8}, {"gshard", 2}};
    static const int orders[] = {MOE_ORDER_BPR, MOE_ORDER_PROBS, MOE_ORDER_RTS, MOE_ORDER_GATE};
    for (size_t a = 0; a < sizeof rt / sizeof *rt; a++)
        for (int oi = 0; oi < 4; oi++)
            for (int cfq = 2; cfq <= 8; cfq *= 2)
                same_on_threads(rt[a].name, rt[a].k, orders[oi], cfq, RN, RE, RR);
}

/* The token orders through the routers whose rows pass leaves its claims final: that pass
 * counts each part's claims for the resolution on the threads, on parts that end at its chunk
 * boundaries (not n / 2); shapes where those differ (E = 8: chunks of 2048 tokens, E = 64: of
 * 256), capacity factors 0.5, 1, 2 (drops across the boundary), against 1 thread (the serial
 * loops). */
static void test_token_orders(void)
{
    static const struct {
        const char *name;
        int k;
    } rt[] = {{"switch", 1}, {"topk", 1}, {"topk", 2}, {"topk", 8}, {"gshard", 2}};
    static const int orders[] = {MOE_ORDER_CHOICE_MAJOR, MOE_ORDER_TOKEN_MAJOR};
    static const int shapes[][2] = {{RN, 8}, {12345, 8}, {RN, 64}, {9999, 64}};
    for (size_t a = 0; a < sizeof rt / sizeof *rt; a++)
        for (int oi = 0; oi < 2; oi++)
            for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++)
                for (int cfq = 2; cfq <= 8; cfq *= 2)
                    same_on_threads(rt[a].name, rt[a].k, orders[oi], cfq, shapes[s][0],
                                    shapes[s][1], NULL);
}

int main(void)
{
    gsl_rng *g = moe_rng_alloc(17, 1);
    for (size_t i = 0; i < (size_t)RN * RE; i++) { /* quarters, skewed to the low experts */
        RL[i] = (double)(int)((gsl_ran_gaussian_ziggurat(g, 1.0) + 0.5 * (i % RE < 8)) * 4.0) / 4.0;
        RR[i] = 0.25 * (double)(1 + gsl_rng_uniform_int(g, 3));
    }
    for (int i = 0; i < RN; i++)
        RU[i] = gsl_rng_uniform(g);
    gsl_rng_free(g);
    test_direct();
    test_routers();
    test_token_orders();
    return check_report("test_claims_orders");
}
