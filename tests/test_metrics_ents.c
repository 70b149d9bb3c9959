/* test_metrics_ents.c: the counts of a plan's entries taken as the router writes them (the
 * plan's entries observer, moe_metrics_attach: sim/metrics_count.c, routers/claims_par.c)
 * against the counts moe_metrics_compute takes by reading the finished plan's entries (a
 * fresh, unattached moe_metrics on the same plan, the path that test_metrics_count.c checks
 * against its two-pass definition), bit for bit: kept loads, the experts-per-token and
 * groups-touched histograms, groups_touched_mean, the token drop rates (overall and per routing
 * group) and kept_load_imbalance.
 *
 * Plans of switch, topk (k = 1, 2, 3, 8; orders choice_major, token_major, bpr and probs;
 * dropless; renormalised), gshard, hash and dsv3_bias on 3001 tokens of N(0,1) logits (fixed
 * PCG seed), E = 8, 20, 64, 130 and 256, capacity factor 3/4 (claims dropped at every E), on 1,
 * 2 and 3 routers' threads with parts of a few tokens (grain 1), routing groups of 7 and 100 and
 * one group in the metrics: the parts' blocks of entries (1024 / k tokens) end inside routing
 * groups and inside runs of dropped tokens. The observer must have seen the plan (ents_seen)
 * exactly where a resolution on the threads wrote it (more than one part, or an order by key),
 * and must stand aside (ents_seen 0, the same counts) for E = 300 (more than four mark words),
 * two expert groups in the metrics, a router whose entries it is not shown (topp), and a plan
 * given one more entry after the router wrote it. Then entries shown by hand in blocks of 1 to
 * 37 tokens, as they are or with one of them outside (T, E, C) or out of token order (in turn at
 * 60 entries, some at the start of a block): the metrics must count the plan exactly as without
 * the observer (for an entry outside: the same error naming it). */
#include "check.h"
#include "metrics_count.h"
#include "moe.h"
#include "../routers/par.h"

#include <gsl/gsl_randist.h>
#include <stdlib.h>
#include <string.h>

enum { N = 3001 };

/* The counts of a and b are the same bits; else *which names the first that is not. */
static int same_counts(const moe_metrics *a, const moe_metrics *b, const char **which)
{
    const int E = a->E, G = a->groups;
#define CMP(f, len)                                                                           \
    if (memcmp(a->f, b->f, (size_t)(len) * sizeof *a->f)) {                                   \
        *which = #f;                                                                          \
        return 0;                                                                             \
    }
#define CMPV(f)                                                                               \
    if (memcmp(&a->f, &b->f, sizeof a->f)) {                                                  \
        *which = #f;                                                                          \
        return 0;                                                                             \
    }
    CMP(kept_load, E)
    CMP(experts_per_token, E + 1)
    CMP(groups_touched, G + 1)
    CMPV(groups_touched_mean)
    CMPV(token_drop_rate)
    CMPV(token_drop_rate_group_min)
    CMPV(token_drop_rate_group_mean)
    CMPV(token_drop_rate_group_max)
    CMPV(kept_load_imbalance)
    CMPV(num_entries)
#undef CMPV
#undef CMP
    return 1;
}

typedef struct {
    const char *router;
    int k, order, dropless, renormalize;
} ents_case;

/* The router of c on L (N, E) into a plan observed by metrics with expert groups G and routing
 * groups of gs tokens, on nt threads: the plan's ents_seen against want (-1: 1 exactly when a
 * resolution on the threads wrote it) and its counts against unattached metrics'. */
static void run_case(const ents_case *c, const double *L, const int64_t *ids, int E, int G,
                     int gs, int nt, int want)
{
    moe_route_opts o;
    moe_route_opts_default(&o);
    o.k = c->k, o.order = c->order, o.dropless = c->dropless, o.renormalize = c->renormalize;
    o.cf_set = 1, o.cf_num = 3, o.cf_den = 4;
    moe_route_opts mo = o;
    mo.groups = G, mo.group_size = gs;
    moe_par_set_threads(nt);
    moe_par_set_grain(1);
    moe_router *r = NULL;
    moe_plan *plan = moe_plan_alloc(N, E, 16);
    moe_metrics *mt = moe_metrics_alloc(E), *plain = moe_metrics_alloc(E);
    gsl_rng *rng = moe_rng_alloc(3, MOE_STREAM_GSHARD);
    int rc = plan && mt && plain && rng ? moe_router_alloc(moe_router_find(c->router), &o, N, E, &r)
                                        : MOE_ENOMEM;
    if (!rc)
        rc = moe_metrics_set_opts(mt, &mo);
    if (!rc)
        rc = moe_metrics_set_opts(plain, &mo);
    if (!rc)
        rc = moe_metrics_attach(mt, plan, N, r->k);
    moe_route_in in = {N, E, L, ids, NULL, rng, NULL, NULL, 0, NULL, NULL};
    if (!rc)
        rc = moe_router_route(r, &in, plan);
    const int seen = plan ? plan->ents_seen : -1;
    if (!rc)
        rc = moe_metrics_compute(plan, L, 0, 0, 0, 0, mt);
    if (!rc)
        rc = moe_metrics_compute(plan, L, 0, 0, 0, 0, plain);
    const char *what = "%s k %d order %d dropless %d renorm %d E %d G %d group %d threads %d";
#define ARGS c->router, c->k, c->order, c->dropless, c->renormalize, E, G, gs, nt
    char head[160];
    snprintf(head, sizeof head, what, ARGS);
#undef ARGS
    CHECK(rc == MOE_OK, "%s: %s", head, moe_errmsg());
    if (!rc) {
        const int keyed = c->order == MOE_ORDER_BPR || c->order == MOE_ORDER_PROBS;
        const int expect = want >= 0 ? want : nt > 1 || keyed;
        const char *which = "";
        CHECK(seen == expect, "%s: ents_seen %d, expected %d", head, seen, expect);
        CHECK(same_counts(mt, plain, &which), "%s: %s observed differs from read (%ld entries "
              "of %d tokens)", head, which, plain->num_entries, N);
        CHECK(plain->assignment_drop_rate > 0.0 || c->dropless || want == 0,
              "%s: some claims dropped (%g, %ld claims, %ld entries, C %ld)", head,
              plain->assignment_drop_rate, plan->n_claims, plain->num_entries, plan->capacity);
    }
    if (!rc && want < 0 && seen == 1) { /* one more entry after the router: not its plan now */
        const moe_entry last = plan->entries[plan->n_entries - 1]; /* (its expert again) */
        rc = moe_plan_push(plan, last.token, last.expert, 0, 1.0, 0.5);
        plan->n_claims += 1;
        moe_metrics_free(plain);
        plain = moe_metrics_alloc(E);
        if (!rc && plain && !moe_metrics_set_opts(plain, &mo) &&
            !moe_metrics_compute(plan, L, 0, 0, 0, 0, plain) &&
            !moe_metrics_compute(plan, L, 0, 0, 0, 0, mt)) {
            const char *which = "";
            CHECK(plan->ents_seen == 0 && same_counts(mt, plain, &which),
                  "%s, one entry pushed after: ents_seen %d, %s", head, plan->ents_seen, which);
        }
    }
    gsl_rng_free(rng);
    moe_router_free(r);
    moe_plan_free(plan);
    moe_metrics_free(mt);
    moe_metrics_free(plain);
    moe_par_set_threads(0);
    moe_par_set_grain(0);
}

static void test_routers(void)
{
    static const ents_case cases[] = {
        {"switch", 1, MOE_ORDER_CHOICE_MAJOR, 0, 0},
        {"topk", 1, MOE_ORDER_CHOICE_MAJOR, 0, 0},
        {"topk", 2, MOE_ORDER_CHOICE_MAJOR, 0, 0},
        {"topk", 3, MOE_ORDER_CHOICE_MAJOR, 0, 0},
        {"topk", 8, MOE_ORDER_CHOICE_MAJOR, 0, 0},
        {"topk", 2, MOE_ORDER_TOKEN_MAJOR, 0, 0},
        {"topk", 2, MOE_ORDER_BPR, 0, 0},
        {"topk", 2, MOE_ORDER_PROBS, 0, 0},
        {"topk", 2, MOE_ORDER_CHOICE_MAJOR, 1, 0},
        {"topk", 8, MOE_ORDER_CHOICE_MAJOR, 0, 1},
        {"gshard", 2, MOE_ORDER_CHOICE_MAJOR, 0, 0},
        {"hash", 1, MOE_ORDER_CHOICE_MAJOR, 0, 0},
        {"dsv3_bias", 8, MOE_ORDER_CHOICE_MAJOR, 0, 0},
    };
    static const int Es[] = {8, 20, 64, 130, 256}, sizes[] = {0, 7, 100};
    gsl_rng *g = moe_rng_alloc(11, MOE_STREAM_TOKENS);
    double *L = malloc((size_t)N * 300 * sizeof *L);
    int64_t *ids = malloc((size_t)N * sizeof *ids);
    if (!g || !L || !ids) {
        CHECK(0, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < (size_t)N * 300; i++)
        L[i] = gsl_ran_gaussian_ziggurat(g, 1.0);
    for (int t = 0; t < N; t++)
        ids[t] = (int64_t)t * 7919 % 50021;
    for (size_t ic = 0; ic < sizeof cases / sizeof cases[0]; ic++)
        for (int ie = 0; ie < 5; ie++)
            for (int z = 0; z < 3; z++)
                for (int nt = 1; nt <= 3; nt++)
                    if (cases[ic].k <= Es[ie])
                        run_case(&cases[ic], L, ids, Es[ie], 1, sizes[z], nt, -1);
    /* where the observer stands aside */
    run_case(&cases[2], L, ids, 300, 1, 0, 2, 0);  /* E > 256 */
    run_case(&cases[2], L, ids, 64, 2, 100, 2, 0); /* two expert groups */
    const ents_case topp = {"topp", 2, MOE_ORDER_CHOICE_MAJOR, 0, 0};
    run_case(&topp, L, ids, 64, 1, 7, 2, 0);
out:
    free(L);
    free(ids);
    gsl_rng_free(g);
}

/* A plan of n tokens in token order from an LCG: 0 to 3 distinct experts a token, slots < C. */
static moe_plan *plan_lcg(int n, int E, long C, uint64_t s)
{
    moe_plan *p = moe_plan_alloc(n, E, (size_t)n * 3 + 16);
    if (!p || moe_plan_reset(p, n, E, E)) {
        moe_plan_free(p);
        return NULL;
    }
    p->capacity = C;
    for (int t = 0; t < n; t++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        const int k = (int)((s >> 33) % 4), e0 = (int)((s >> 17) % (uint64_t)E);
        for (int j = 0; j < k; j++)
            moe_plan_push(p, t, (e0 + 5 * j) % E, (int32_t)((s >> 40) % (uint64_t)C), 1.0, 0.5);
    }
    p->n_claims = (long)p->n_entries;
    return p;
}

/* q: p's entries shown to mt's observer by hand, np parts (moe_par_range) in blocks of 1 to 37
 * tokens, as a resolution on the threads shows them, each block the entries whose tokens tok
 * (the tokens the entries were written for) lie in it; 0 if the observer declined. */
static int show(const moe_plan *p, const int32_t *tok, moe_plan *q, moe_metrics *mt, int np)
{
    if (moe_plan_reset(q, p->n, p->E, p->E) || moe_plan_reserve(q, p->n_entries) ||
        moe_metrics_ents_attach(mt, q))
        return 0;
    q->capacity = p->capacity;
    q->n_claims = p->n_claims;
    if (!q->ents_begin(q->ents_ctx, q, np))
        return 0;
    memcpy(q->entries, p->entries, p->n_entries * sizeof *p->entries);
    size_t x = 0;
    for (int i = 0; i < np; i++) {
        long lo, hi;
        moe_par_range(p->n, i, np, &lo, &hi);
        for (long t0 = lo, t1, b = 1;; t0 = t1, b = b % 37 + 5) {
            t1 = hi - t0 > b ? t0 + b : hi;
            const size_t a = x;
            while (x < p->n_entries && tok[x] < t1)
                x++;
            q->ents_block(q->ents_ctx, i, lo, hi, t0, t1, q->entries + a, q->entries + x);
            if (t1 == hi)
                break;
        }
    }
    q->n_entries = p->n_entries;
    q->ents_seen = 1;
    return 1;
}

/* Bad entries: 1 a slot at C, 2 an expert at E, 3 a token before the previous entry's (at
 * each of 60 entries in turn: some of them start a block, where the order must be checked
 * against the previous block's last token). */
static void test_by_hand(void)
{
    for (int np = 1; np <= 4; np++)
        for (int bad = 0; bad <= 3 + 59; bad++) {
            const int E = np == 3 ? 130 : 40;
            moe_plan *p = plan_lcg(500, E, 30, (uint64_t)(17 * np + (bad < 3 ? bad : 3)));
            moe_plan *q = moe_plan_alloc(500, E, 16);
            moe_metrics *mt = moe_metrics_alloc(E), *plain = moe_metrics_alloc(E);
            if (!p || !q || !mt || !plain) {
                CHECK(0, "out of memory");
            } else {
                int32_t *tok = malloc(p->n_entries * sizeof *tok); /* (before the change) */
                for (size_t x = 0; tok && x < p->n_entries; x++)
                    tok[x] = p->entries[x].token;
                moe_entry *en = &p->entries[p->n_entries / 3 + (size_t)(bad < 3 ? 0 : bad - 3)];
                while (bad >= 3 && en[-1].token == en->token) /* (the first of its token's) */
                    en++;
                if (bad == 1)
                    en->slot = (int32_t)p->capacity; /* outside (T, E, C) */
                else if (bad == 2)
                    en->expert = E;
                else if (bad >= 3)
                    en->token = en[-1].token - 1; /* out of order */
                moe_par_set_threads(np);
                moe_par_set_grain(1);
                const int shown = tok && show(p, tok, q, mt, np);
                free(tok);
                moe_clear_error();
                const int r1 = moe_metrics_compute(q, NULL, 0, 0, 0, 0, mt);
                char e1[256];
                snprintf(e1, sizeof e1, "%s", moe_errmsg());
                moe_clear_error();
                const int r2 = moe_metrics_compute(p, NULL, 0, 0, 0, 0, plain);
                const char *which = "";
                CHECK(shown && r1 == r2 && strcmp(e1, moe_errmsg()) == 0 &&
                          (r1 || same_counts(mt, plain, &which)),
                      "by hand, %d parts, bad %d: shown %d, rc %d / %d (%s / %s), %s", np, bad,
                      shown, r1, r2, e1, moe_errmsg(), which);
                CHECK((r1 != MOE_OK) == (bad == 1 || bad == 2), "by hand, %d parts, bad %d: "
                      "rc %d", np, bad, r1);
            }
            moe_plan_free(p);
            moe_plan_free(q);
            moe_metrics_free(mt);
            moe_metrics_free(plain);
        }
    moe_par_set_threads(0);
    moe_par_set_grain(0);
}

int main(void)
{
    test_routers();
    test_by_hand();
    printf("test_metrics_ents: %d passed, %d failed\n", check_pass, check_fail);
    return check_fail != 0;
}
