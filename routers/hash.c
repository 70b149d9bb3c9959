/* hash.c: the `hash` router (Roller et al. 2021, hash layers), docs/routing.md section 3. Fills
 * moe_router_hash: expert = hash(token id), k = 1, weights 1; the choices ignore the logit
 * values (they fix E; with the metrics attached the router also takes their softmax rows for
 * the metrics, hash_rows).
 *   hash = mod       id mod E
 *   hash = table     opts.hash_table[id] (an id beyond the table, or a table value outside
 *                    0..E-1, is an input error naming the id and the token index)
 *   hash = balanced  the batch's distinct ids sorted by descending frequency (ties to the
 *                    lower id), each given to the bucket with the least summed frequency so
 *                    far (ties to the lower bucket)
 * No capacity limit unless a capacity factor or an explicit capacity is given; then C from the
 * formula with k = 1 and slots in token order (opts.order does not apply). aux_loss = 0;
 * importance = assigned_load (every claim has weight 1). */
#include "moe.h"
#include "claims.h"

#include <stdlib.h>

typedef struct {
    moe_claims *cl;
    /* balanced hashing: distinct ids of the batch */
    int *ord, *tmp;   /* (T) token indices sorted by id; merge scratch */
    int *tok_u;       /* (T) token -> distinct-id index */
    int64_t *uid;     /* (T) distinct ids, ascending */
    double *ufreq;    /* (T) their frequency in the batch */
    int *uord;        /* (T) distinct ids by descending frequency */
    int *ubucket;     /* (T) bucket of each distinct id */
    long *bload;      /* (E) summed frequency per bucket */
} hash_ws;

/* ---- workspace ---- */

static void hash_free(moe_router *r)
{
    hash_ws *w = r->ws;
    if (!w)
        return;
    moe_claims_free(w->cl);
    free(w->ord);
    free(w->tmp);
    free(w->tok_u);
    free(w->uid);
    free(w->ufreq);
    free(w->uord);
    free(w->ubucket);
    free(w->bload);
    free(w);
    r->ws = NULL;
}

static int hash_alloc(moe_router *r)
{
    if (r->k != 1)
        return moe_fail(MOE_EINPUT, "hash routes every token to one expert",
                        "hash needs k = 1, got k = %d (k)", r->k);
    if (r->opts.hash == MOE_HASH_TABLE && (!r->opts.hash_table || r->opts.hash_table_len == 0))
        return moe_fail(MOE_EINVAL, "give the table (--hash-table T.npy)",
                        "hash = table needs a hash table (hash_table)");
    if (r->opts.hash < MOE_HASH_MOD || r->opts.hash > MOE_HASH_BALANCED)
        return moe_fail(MOE_EINVAL, NULL, "unknown hash %d (hash)", r->opts.hash);
    hash_ws *w = calloc(1, sizeof *w);
    if (!w)
        return moe_fail(MOE_ENOMEM, NULL, "out of memory (router hash)");
    r->ws = w;
    size_t n = (size_t)r->n_max;
    w->cl = moe_claims_alloc(r->n_max, 1, r->E, 0);
    w->ord = malloc(n * sizeof *w->ord);
    w->tmp = malloc(n * sizeof *w->tmp);
    w->tok_u = malloc(n * sizeof *w->tok_u);
    w->uid = malloc(n * sizeof *w->uid);
    w->ufreq = malloc(n * sizeof *w->ufreq);
    w->uord = malloc(n * sizeof *w->uord);
    w->ubucket = malloc(n * sizeof *w->ubucket);
    w->bload = malloc((size_t)r->E * sizeof *w->bload);
    if (!w->cl || !w->ord || !w->tmp || !w->tok_u || !w->uid || !w->ufreq || !w->uord ||
        !w->ubucket || !w->bload) {
        hash_free(r);
        return moe_fail(MOE_ENOMEM, NULL, "out of memory (router hash, %d tokens)", r->n_max);
    }
    return MOE_OK;
}

/* ---- balanced hashing ---- */

/* Stable merge sort of idx[lo..hi) ascending by key[idx[]]; tmp is scratch of the same size. */
static void sort_by_id(const int64_t *key, int *idx, int *tmp, int lo, int hi)
{
    if (hi - lo < 2)
        return;
    int mid = lo + (hi - lo) / 2;
    sort_by_id(key, idx, tmp, lo, mid);
    sort_by_id(key, idx, tmp, mid, hi);
    int i = lo, j = mid, o = lo;
    while (i < mid && j < hi)
        tmp[o++] = key[idx[j]] < key[idx[i]] ? idx[j++] : idx[i++];
    while (i < mid)
        tmp[o++] = idx[i++];
    while (j < hi)
        tmp[o++] = idx[j++];
    for (o = lo; o < hi; o++)
        idx[o] = tmp[o];
}

/* cl->expert (T) = bucket of each token's id under balanced hashing of this batch. */
static void hash_balanced(hash_ws *w, const int64_t *ids, int n, int E)
{
    for (int t = 0; t < n; t++)
        w->ord[t] = t;
    sort_by_id(ids, w->ord, w->tmp, 0, n);
    int U = 0;
    for (int r = 0; r < n; r++) {
        int t = w->ord[r];
        if (U == 0 || ids[t] != w->uid[U - 1]) {
            w->uid[U] = ids[t];
            w->ufreq[U] = 0.0;
            U++;
        }
        w->ufreq[U - 1] += 1.0;
        w->tok_u[t] = U - 1;
    }
    /* distinct ids are in ascending id order, so the stable sort puts ties to the lower id */
    moe_argsort_desc(w->ufreq, U, w->uord, w->tmp);
    for (int e = 0; e < E; e++)
        w->bload[e] = 0;
    for (int q = 0; q < U; q++) {
        int u = w->uord[q], b = 0;
        for (int e = 1; e < E; e++)
            if (w->bload[e] < w->bload[b]) /* strict: ties to the lower bucket */
                b = e;
        w->ubucket[u] = b;
        w->bload[b] += (long)w->ufreq[u];
    }
    for (int t = 0; t < n; t++)
        w->cl->expert[t] = w->ubucket[w->tok_u[t]];
}

/* ---- routing ---- */

/* With the metrics attached to the plan (moe_metrics_attach), one rows pass over the logits
 * (moe_claims_softmax, into a scratch of a few chunks) gives them every softmax row and the
 * plan each row's logsumexp, the values their own passes would take (moe_softmax's rows and
 * moe_logsumexp's), with one exponential per logit instead of one for the z-loss and one for
 * the anchor metrics. The choices do not depend on it. */
static int hash_rows(moe_router *r, const moe_route_in *in, moe_plan *plan)
{
    moe_claims *cl = ((hash_ws *)r->ws)->cl;
    if (!cl->p && !(cl->p = malloc(moe_claims_rows_scratch(r->n_max, r->E) * sizeof *cl->p)))
        return moe_fail(MOE_ENOMEM, NULL, "out of memory (softmax rows of %d tokens)", r->n_max);
    return moe_claims_softmax(cl, in->logits, in->n, plan);
}

static int hash_route(moe_router *r, const moe_route_in *in, moe_plan *plan)
{
    hash_ws *w = r->ws;
    moe_claims *cl = w->cl;
    const moe_route_opts *o = &r->opts;
    const int n = in->n, E = r->E;
    /* the logits are checked by the rows pass, else here (MOE_RF_CHECKS_FINITE) */
    int rc = plan->rows_add                      ? hash_rows(r, in, plan)
             : in->logits == r->finite_logits ? MOE_OK
                                              : moe_logits_check_finite(in->logits, n, in->m);
    if (rc)
        return rc;
    if (o->hash == MOE_HASH_BALANCED) {
        hash_balanced(w, in->ids, n, E);
    } else {
        for (int t = 0; t < n; t++) {
            int64_t id = in->ids[t];
            if (o->hash == MOE_HASH_MOD) {
                cl->expert[t] = (int32_t)(id % E);
                continue;
            }
            if ((uint64_t)id >= o->hash_table_len)
                return moe_fail(MOE_EINPUT, "the table needs an entry for every token id",
                                "token id %lld at token %d is beyond the hash table of %zu "
                                "entries (hash_table)",
                                (long long)id, t, o->hash_table_len);
            int64_t e = o->hash_table[id];
            if (e < 0 || e >= E)
                return moe_fail(MOE_EINPUT, "table values must be expert ids 0..E-1",
                                "hash table value %lld at index %lld (token %d) is outside "
                                "0..%d (hash_table)",
                                (long long)e, (long long)id, t, E - 1);
            cl->expert[t] = (int32_t)e;
        }
    }
    for (int t = 0; t < n; t++) {
        cl->gate[t] = 1.0;
        cl->claim[t] = 1;
    }
    int limited = !o->dropless && (o->cf_set || o->capacity >= 0);
    long C = 0;
    if (limited) {
        rc = moe_capacity(o, 1, n, E, &C);
        if (rc)
            return rc;
    }
    rc = moe_claims_resolve(cl, n, MOE_ORDER_TOKEN_MAJOR, C, !limited, o->renormalize, plan);
    if (rc)
        return rc;
    plan->aux_loss = 0.0;
    return MOE_OK;
}

const moe_router_type moe_router_hash = {
    "hash",
    "hash layer (Roller 2021): expert = hash(token id), mod | table | balanced",
    MOE_RF_NEEDS_IDS | MOE_RF_HAS_DROPLESS | MOE_RF_CHECKS_FINITE,
    1,
    hash_alloc,
    hash_free,
    hash_route,
    NULL,
};
