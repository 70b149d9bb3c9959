/* claims_par.c: moe_claims_resolve for the claim orders choice_major and token_major on the
 * routers' threads (claims_par.h), with the plan and statistics of the serial loop bit for bit.
 *
 * A claim's slot is the number of claims on its expert before it in the claim order, kept when
 * below the capacity C. The tokens are split into contiguous parts, one per thread:
 *   1. each part counts its claims per (rank, expert) (choice_major: the order is rank, then
 *      token) or per expert (token_major: token, then rank); unless the rows pass has added the
 *      claim statistics already, each thread also adds the gates of one range of experts to
 *      importance, visiting every claim in token order (the order of the serial sum, so the
 *      sums are the same doubles);
 *   2. serially: the loads, the capacity (dropless: the largest load), each part's first slot
 *      per (rank, expert) as the prefix of the counts in claim order, the entries each part
 *      keeps and so where its entries start in the plan;
 *   3. each part numbers its claims from those first slots and writes its entries (token-major,
 *      by token then rank, renormalised per token as the serial loop does) at its place.
 */
#include "claims_par.h"
#include "par.h"

#include <stdlib.h>

typedef struct {
    moe_claims *c;
    moe_plan *plan;
    int n, KR;            /* KR: ranks counted apart (K for choice_major, 1 for token_major) */
    int renormalize, np;
    int stats;            /* 0: assigned_load, importance and n_claims are already in the plan */
    long C;
    long *cnt;            /* (np, KR, E) claims of each part, then the part's first slots */
    double *acc;          /* (np, E+1) each thread's importance sums */
    size_t ent0[MOE_PAR_MAX];      /* first entry of each part */
    long claims[MOE_PAR_MAX];      /* claims of each part */
    long rank_claims[MOE_PAR_MAX][2], rank_kept[MOE_PAR_MAX][2];
} rp_job;

/* Step 1 for part i: counts of its tokens; importance of its experts over all tokens. */
static void rp_count(void *ctx, int i, int np)
{
    rp_job *j = ctx;
    const moe_claims *c = j->c;
    const int K = c->K, E = c->E, KR = j->KR;
    long lo, hi, e0, e1;
    moe_par_range(j->n, i, np, &lo, &hi);
    long *cnt = j->cnt + (size_t)i * KR * E, claims = 0;
    for (long t = lo; t < hi; t++)
        for (int r = 0; r < K; r++) {
            const size_t q = (size_t)t * K + r;
            if (c->claim[q]) {
                cnt[(size_t)(KR > 1 ? r : 0) * E + c->expert[q]]++;
                claims++;
            }
        }
    j->claims[i] = claims;
    if (!j->stats)
        return;
    /* importance[e] for e in [e0, e1), every claim in token order; the others go to the spare
     * sum acc[E] so that the loop has no branch on the expert */
    moe_par_range(E, i, np, &e0, &e1);
    double *acc = j->acc + (size_t)i * (E + 1), *imp = j->plan->importance;
    for (long e = e0; e < e1; e++)
        acc[e] = imp[e];
    for (size_t q = 0; q < (size_t)j->n * K; q++) {
        const int e = c->expert[q];
        const size_t to = c->claim[q] && e >= e0 && e < e1 ? (size_t)e : (size_t)E;
        acc[to] += c->gate[q];
    }
    for (long e = e0; e < e1; e++)
        imp[e] = acc[e];
}

/* Step 3 for part i: slots from the part's first slots, entries at ent0[i]. */
static void rp_assign(void *ctx, int i, int np)
{
    rp_job *j = ctx;
    const moe_claims *c = j->c;
    const int K = c->K, E = c->E, KR = j->KR;
    const long C = j->C;
    long lo, hi;
    moe_par_range(j->n, i, np, &lo, &hi);
    long *next = j->cnt + (size_t)i * KR * E;
    moe_entry *en = j->plan->entries + j->ent0[i];
    long rc[2] = {0, 0}, rk[2] = {0, 0};
    long slot[MOE_CLAIMS_PAR_MAX_K];
    for (long t = lo; t < hi; t++) {
        const size_t q0 = (size_t)t * K;
        double sum = 0.0;
        for (int r = 0; r < K; r++) {
            const size_t q = q0 + r;
            long s = -1;
            if (c->claim[q]) {
                s = next[(size_t)(KR > 1 ? r : 0) * E + c->expert[q]]++;
                s = s < C ? s : -1;
            }
            slot[r] = s;
            if (s >= 0)
                sum += c->gate[q];
        }
        for (int r = 0; r < K; r++) {
            const size_t q = q0 + r;
            const long s = slot[r];
            if (r < 2) {
                rc[r] += c->claim[q];
                rk[r] += s >= 0;
            }
            if (s < 0)
                continue;
            const double g = c->gate[q];
            *en++ = (moe_entry){(int32_t)t, c->expert[q], (int32_t)s, 1.0,
                                (j->renormalize && sum > 0.0) ? g / sum : g};
        }
    }
    for (int r = 0; r < 2; r++) {
        j->rank_claims[i][r] = rc[r];
        j->rank_kept[i][r] = rk[r];
    }
}

/* Step 2: loads, capacity, first slots (in place of the counts), the parts' first entries. */
static int rp_prefix(rp_job *j, int dropless, size_t *kept_all)
{
    const int E = j->c->E, KR = j->KR, np = j->np;
    moe_plan *plan = j->plan;
    for (int i = 0; i < np && j->stats; i++) {
        plan->n_claims += j->claims[i];
        for (int r = 0; r < KR; r++)
            for (int e = 0; e < E; e++)
                plan->assigned_load[e] += j->cnt[((size_t)i * KR + r) * E + e];
    }
    long C = j->C;
    if (dropless) {
        C = 0;
        for (int e = 0; e < E; e++)
            if (plan->assigned_load[e] > C)
                C = plan->assigned_load[e];
    }
    plan->capacity = j->C = C;
    long *run = calloc((size_t)E, sizeof *run); /* claims on e so far in claim order */
    if (!run)
        return moe_fail(MOE_ENOMEM, NULL, "out of memory (claims of %d experts)", E);
    size_t kept[MOE_PAR_MAX] = {0};
    for (int r = 0; r < KR; r++)
        for (int i = 0; i < np; i++)
            for (int e = 0; e < E; e++) {
                long *q = &j->cnt[((size_t)i * KR + r) * E + e];
                const long first = run[e], n = *q;
                run[e] += n;
                *q = first;
                if (first < C)
                    kept[i] += (size_t)((first + n < C ? first + n : C) - first);
            }
    free(run);
    size_t at = plan->n_entries;
    for (int i = 0; i < np; i++) {
        j->ent0[i] = at;
        at += kept[i];
    }
    *kept_all = at - plan->n_entries;
    return MOE_OK;
}

int moe_claims_resolve_par(moe_claims *c, int n, int order, long C, int dropless,
                           int renormalize, int stats, moe_plan *plan)
{
    const int K = c->K, E = c->E;
    rp_job j = {.c = c, .plan = plan, .n = n, .renormalize = renormalize, .stats = stats,
                .C = C};
    j.KR = order == MOE_ORDER_CHOICE_MAJOR ? K : 1;
    j.np = moe_par_parts((long)n * K, 16384);
    j.cnt = calloc((size_t)j.np * j.KR * E, sizeof *j.cnt);
    j.acc = malloc((size_t)j.np * (E + 1) * sizeof *j.acc);
    if (!j.cnt || !j.acc) {
        free(j.cnt);
        free(j.acc);
        return moe_fail(MOE_ENOMEM, NULL, "out of memory (claims of %d tokens)", n);
    }
    moe_par_run(rp_count, &j, j.np);
    size_t kept = 0;
    int rc = rp_prefix(&j, dropless, &kept);
    if (!rc)
        rc = moe_plan_reserve(plan, kept);
    if (!rc) {
        moe_par_run(rp_assign, &j, j.np);
        plan->n_entries += kept;
        for (int i = 0; i < j.np; i++)
            for (int r = 0; r < 2; r++) {
                plan->rank_claims[r] += j.rank_claims[i][r];
                plan->rank_kept[r] += j.rank_kept[i][r];
            }
    }
    free(j.cnt);
    free(j.acc);
    return rc;
}
