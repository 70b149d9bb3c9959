/* claims_var.c: the variable-k routers' claims, stored compactly, and their resolution on the
 * routers' threads (interface in claims_var.h).
 *
 * Every order numbers an expert's claims in a fixed visiting order, and a claim keeps its slot
 * when it is below the capacity C. The tokens (or, for bpr, the positions of the tokens in the
 * bpr order) are split into contiguous parts, one per thread:
 *   1. each part counts its claims per (rank, expert) (choice_major, bpr: the order is rank,
 *      then position) or per expert (token_major and the keyed orders: token, then rank);
 *   2. serially, the prefix of those counts in the visiting order gives each part its first
 *      slot per (rank, expert), and each part's kept claims;
 *   3. choice_major, token_major: each part numbers its claims from there and writes its
 *      entries at once (the parts are token ranges, so the entries follow in token order);
 *      bpr: each part numbers its claims into slot[], and a pass by token ranges writes the
 *      entries; probs, rts, gate: each part scatters its claims to their expert's list in
 *      token order with their keys, each expert with more than C claims keeps those with a key
 *      above the C-th largest (selection, moe_claims_kth_largest) and the first ones equal to
 *      it, numbered in token order; then the entries as for bpr.
 * The claim statistics are the rows pass's (var_stats, in token order: the sums of the serial
 * definition). */
#include "claims_var.h"
#include "claims_par.h"
#include "huge.h"
#include "par.h"
#include "route_memo.h"

#include <stdlib.h>
#include <string.h>

/* ---- store and rows pass ---- */

/* The rows pass's adding step for tokens [t0, t1), in token order: claim statistics, first[],
 * kmax. */
static void var_stats(void *ctx, long t0, long t1, moe_plan *plan)
{
    moe_claims_var *v = ctx;
    long run = v->first[t0];
    long *load = plan->assigned_load;
    double *imp = plan->importance;
    for (long t = t0; t < t1; t++) {
        const long a = v->at[t];
        const int m = v->cnt[t];
        v->first[t] = run;
        v->kmax = m > v->kmax ? m : v->kmax;
        for (long q = a; q < a + m; q++) {
            load[v->expert[q]]++;
            imp[v->expert[q]] += v->gate[q];
        }
        run += m;
    }
    plan->n_claims += run - v->first[t0];
    v->first[t1] = run;
}

moe_claims_var *moe_claims_var_alloc(int n_max, int K, int E)
{
    moe_claims_var *v = calloc(1, sizeof *v);
    if (!v) {
        moe_fail(MOE_ENOMEM, NULL, "out of memory (claims workspace)");
        return NULL;
    }
    v->n_max = n_max, v->K = K, v->E = E;
    v->cap = (long)n_max * K;
    const size_t cap = (size_t)(v->cap > 0 ? v->cap : 1), nt = (size_t)n_max + 1;
    atomic_init(&v->used, 0);
    v->cl = moe_claims_alloc(n_max, 1, E, 0); /* p: as the rows pass needs it (var_p) */
    v->expert = moe_huge_alloc(cap * sizeof *v->expert); /* touched as far as used */
    v->gate = moe_huge_alloc(cap * sizeof *v->gate);
    v->at = malloc(nt * sizeof *v->at);
    v->cnt = malloc(nt * sizeof *v->cnt);
    v->first = malloc(nt * sizeof *v->first);
    if (!v->cl || !v->expert || !v->gate || !v->at || !v->cnt || !v->first) {
        moe_claims_var_free(v);
        moe_fail(MOE_ENOMEM, NULL, "out of memory (claims workspace for %d tokens, %d experts)",
                 n_max, E);
        return NULL;
    }
    v->cl->stats_in_rows = 1;
    v->cl->stats_rows = var_stats;
    v->cl->stats_ctx = v;
    return v;
}

void moe_claims_var_free(moe_claims_var *v)
{
    if (!v)
        return;
    moe_claims_free(v->cl);
    free(v->expert);
    free(v->gate);
    free(v->at);
    free(v->cnt);
    free(v->first);
    free(v->slot);
    free(v->list);
    free(v->key);
    free(v->counts);
    free(v);
}

/* The softmax rows' buffer of a rows pass over n tokens: every row for order probs (its keys),
 * else the pass's scratch (a few MB instead of T x E doubles of address space, which would take
 * memory that the process has touched already from the buffers that need it). */
static int var_p(moe_claims_var *v, int n, int order)
{
    const size_t need = order == MOE_ORDER_PROBS ? (size_t)n * (size_t)v->E
                                                 : moe_claims_rows_scratch(n, v->E);
    if (v->p_cap >= need && v->cl->p)
        return MOE_OK;
    free(v->cl->p);
    v->p_cap = 0;
    if (!(v->cl->p = malloc((need > 0 ? need : 1) * sizeof *v->cl->p)))
        return moe_fail(MOE_ENOMEM, NULL, "out of memory (softmax rows of %d tokens)", n);
    v->p_cap = need;
    return MOE_OK;
}

int moe_claims_var_rows(moe_claims_var *v, const double *logits, int n, int order,
                        const double *rts_u, moe_claims_row_fn row, void *ctx, moe_plan *plan)
{
    if (!plan || !row)
        return moe_fail(MOE_EINVAL, NULL, "variable claims without a plan or a row (claims)");
    int rc = var_p(v, n, order);
    if (rc)
        return rc;
    atomic_store(&v->used, 0);
    v->counts_len = 0; /* new claims: no counts yet */
    v->first[0] = 0;
    v->kmax = 0;
    v->cl->rts_u = rts_u;
    moe_claims_scratch_p(v->cl, order); /* p kept only for order probs */
    return moe_claims_rows(v->cl, logits, n, row, ctx, plan);
}

void moe_claims_var_put(moe_claims_var *v, int t, int m, const int32_t *ex, const double *g)
{
    const long a = moe_claims_var_take(v, t, m);
    memcpy(v->expert + a, ex, (size_t)m * sizeof *ex);
    memcpy(v->gate + a, g, (size_t)m * sizeof *g);
}

/* ---- resolution ---- */

typedef struct {
    moe_claims_var *v;
    moe_plan *plan;
    int n, np, KR, renormalize;
    long C;
    const int *perm;       /* bpr: the token at each position, else NULL */
    long *cnt;             /* (np, KR, E) claims of each part, then its first slots */
    int32_t *sbuf;         /* (np, K) each part's slots of one token */
    const double *keys;    /* keyed orders: (T,E) by token and expert, or NULL: the gates */
    long *off;             /* (E+1) keyed orders: each expert's first place in list */
    double *scratch;       /* (np, maxload) keyed orders: a copy of one expert's keys */
    long maxload;
    moe_claims_parts pt;   /* each part's entries (pt.np = np) */
} cv_job;

/* Step 1 for part i: its claims per (rank, expert), by position. */
static void cv_count(void *ctx, int i, int np)
{
    cv_job *j = ctx;
    const moe_claims_var *v = j->v;
    const int E = v->E, KR = j->KR;
    long lo, hi;
    moe_par_range(j->n, i, np, &lo, &hi);
    long *cnt = j->cnt + (size_t)i * KR * E;
    for (long r = lo; r < hi; r++) {
        const long t = j->perm ? j->perm[r] : r, a = v->at[t];
        const int m = v->cnt[t];
        for (int k = 0; k < m; k++)
            cnt[(size_t)(KR > 1 ? k : 0) * E + v->expert[a + k]]++;
    }
}

/* Step 1 on the parts, or its result of the last resolution of the same claims on the same
 * parts; kept for the next one (not when out of memory: it then counts again). */
static void cv_counts(cv_job *j)
{
    moe_claims_var *v = j->v;
    const size_t len = (size_t)j->np * j->KR * v->E;
    const int perm = j->perm != NULL;
    if (v->counts_len == len && v->counts_np == j->np && v->counts_kr == j->KR &&
        v->counts_perm == perm) {
        memcpy(j->cnt, v->counts, len * sizeof *j->cnt);
        return;
    }
    moe_par_run(cv_count, j, j->np);
    v->counts_len = 0;
    if (v->counts_cap < len) {
        free(v->counts);
        v->counts_cap = 0;
        if (!(v->counts = malloc(len * sizeof *v->counts)))
            return;
        v->counts_cap = len;
    }
    memcpy(v->counts, j->cnt, len * sizeof *v->counts);
    v->counts_len = len, v->counts_np = j->np, v->counts_kr = j->KR, v->counts_perm = perm;
}

/* Step 2: capacity (dropless: the largest load), each part's first slots in the visiting order
 * (rank, part, expert) in place of its counts, and its kept claims (j->pt.kept). Returns the
 * entries of the plan, sum over experts of min(load, C). */
static size_t cv_prefix(cv_job *j, int dropless, long *run)
{
    const int E = j->v->E, KR = j->KR;
    const long *load = j->plan->assigned_load;
    long C = j->C;
    if (dropless) {
        C = 0;
        for (int e = 0; e < E; e++)
            C = load[e] > C ? load[e] : C;
    }
    j->plan->capacity = j->C = C;
    memset(run, 0, (size_t)E * sizeof *run);
    for (int r = 0; r < KR; r++)
        for (int i = 0; i < j->np; i++) {
            long *q = j->cnt + ((size_t)i * KR + r) * E;
            for (int e = 0; e < E; e++) {
                const long first = run[e], c = q[e];
                run[e] += c;
                q[e] = first;
                if (first < C)
                    j->pt.kept[i] += (size_t)((first + c < C ? first + c : C) - first);
            }
        }
    size_t total = 0;
    j->maxload = 0;
    for (int e = 0; e < E; e++) {
        total += (size_t)(load[e] < C ? load[e] : C);
        j->maxload = run[e] > j->maxload ? run[e] : j->maxload;
    }
    return total;
}

/* Token t's entries from the slots s (cnt[t]) of its claims, at *en: by rank, weights
 * renormalised over the kept claims when asked; claims and kept claims of ranks 0 and 1 added
 * to rc, rk (the part's own: no shared cache line in the loop). */
static void cv_token(const cv_job *j, long t, const int32_t *s, moe_entry **en, long rc[2],
                     long rk[2])
{
    const moe_claims_var *v = j->v;
    const long a = v->at[t];
    const int m = v->cnt[t];
    double sum = 0.0;
    for (int k = 0; j->renormalize && k < m; k++)
        if (s[k] >= 0)
            sum += v->gate[a + k];
    for (int k = 0; k < m; k++) {
        if (k < 2) {
            rc[k]++;
            rk[k] += s[k] >= 0;
        }
        if (s[k] < 0)
            continue;
        const double g = v->gate[a + k];
        *(*en)++ = (moe_entry){(int32_t)t, v->expert[a + k], s[k], 1.0,
                               (j->renormalize && sum > 0.0) ? g / sum : g};
    }
}

/* Step 3 for part i of the orders choice_major, token_major (perm NULL: its entries at
 * ent0[i]) and bpr (its slots into slot[]). */
static void cv_assign(void *ctx, int i, int np)
{
    cv_job *j = ctx;
    moe_claims_var *v = j->v;
    const int E = v->E, KR = j->KR;
    long lo, hi;
    moe_par_range(j->n, i, np, &lo, &hi);
    long *next = j->cnt + (size_t)i * KR * E;
    moe_entry *en = j->plan->entries + j->pt.ent0[i];
    int32_t *own = j->sbuf + (size_t)i * v->K;
    long rc[2] = {0, 0}, rk[2] = {0, 0};
    for (long r = lo; r < hi; r++) {
        const long t = j->perm ? j->perm[r] : r, a = v->at[t];
        const int m = v->cnt[t];
        int32_t *s = j->perm ? v->slot + a : own;
        for (int k = 0; k < m; k++) {
            const long x = next[(size_t)(KR > 1 ? k : 0) * E + v->expert[a + k]]++;
            s[k] = x < j->C ? (int32_t)x : -1;
        }
        if (!j->perm)
            cv_token(j, t, s, &en, rc, rk);
    }
    moe_claims_parts_ranks(&j->pt, i, rc, rk);
}

/* Entries of token part i from slot[]: count (kept[i]) */
static void cv_emit_count(void *ctx, int i, int np)
{
    cv_job *j = ctx;
    const moe_claims_var *v = j->v;
    long lo, hi;
    moe_par_range(j->n, i, np, &lo, &hi);
    size_t kept = 0;
    for (long t = lo; t < hi; t++)
        for (long q = v->at[t]; q < v->at[t] + v->cnt[t]; q++)
            kept += v->slot[q] >= 0;
    j->pt.kept[i] = kept;
}

/* ... and write them at ent0[i]. */
static void cv_emit(void *ctx, int i, int np)
{
    cv_job *j = ctx;
    long lo, hi;
    moe_par_range(j->n, i, np, &lo, &hi);
    moe_entry *en = j->plan->entries + j->pt.ent0[i];
    long rc[2] = {0, 0}, rk[2] = {0, 0};
    for (long t = lo; t < hi; t++)
        cv_token(j, t, j->v->slot + j->v->at[t], &en, rc, rk);
    moe_claims_parts_ranks(&j->pt, i, rc, rk);
}

/* Token part i of a keyed order: its claims into list at its first places per expert (token
 * order within an expert), with their keys. */
static void cv_key_scatter(void *ctx, int i, int np)
{
    cv_job *j = ctx;
    moe_claims_var *v = j->v;
    const int E = v->E;
    long lo, hi;
    moe_par_range(j->n, i, np, &lo, &hi);
    long *next = j->cnt + (size_t)i * E;
    for (long t = lo; t < hi; t++)
        for (long q = v->at[t]; q < v->at[t] + v->cnt[t]; q++) {
            const int e = v->expert[q];
            const long at = next[e]++;
            v->list[at] = q;
            v->key[at] = j->keys ? j->keys[(size_t)t * E + (size_t)e] : v->gate[q];
        }
}

/* Experts on part i (those whose claims start in its share of the claims): the kept claims,
 * numbered in token order. */
static void cv_key_select(void *ctx, int i, int np)
{
    cv_job *j = ctx;
    moe_claims_var *v = j->v;
    const int E = v->E;
    const long C = j->C, total = j->off[E];
    int e0 = 0;
    while (e0 < E && j->off[e0] * np < total * i)
        e0++;
    int e1 = e0;
    while (e1 < E && (i + 1 == np || j->off[e1] * np < total * (i + 1)))
        e1++;
    double *sc = j->scratch + (size_t)i * (size_t)j->maxload;
    for (int e = e0; e < e1; e++) {
        const long a = j->off[e], cnt = j->off[e + 1] - a;
        const long *li = v->list + a;
        const double *kv = v->key + a;
        if (cnt <= C) {
            for (long q = 0; q < cnt; q++)
                v->slot[li[q]] = (int32_t)q;
            continue;
        }
        double thr = 0.0;
        if (C > 0) {
            memcpy(sc, kv, (size_t)cnt * sizeof *sc);
            thr = moe_claims_kth_largest(sc, cnt, C);
        }
        long above = 0, s = 0;
        for (long q = 0; C > 0 && q < cnt; q++)
            above += kv[q] > thr;
        long eq_left = C - above; /* claims equal to thr kept: the first in token order */
        for (long q = 0; q < cnt; q++) {
            const int keep = C > 0 && (kv[q] > thr || (kv[q] == thr && eq_left-- > 0));
            v->slot[li[q]] = keep && s < C ? (int32_t)s++ : -1;
        }
    }
}

/* Keyed orders after cv_count and cv_prefix (KR = 1): the claims grouped by expert, the kept
 * claims and their slots. */
static int cv_keyed(cv_job *j, const long *run)
{
    moe_claims_var *v = j->v;
    const int E = v->E;
    j->off[0] = 0;
    for (int e = 0; e < E; e++) {
        j->off[e + 1] = j->off[e] + run[e];
        for (int i = 0; i < j->np; i++)
            j->cnt[(size_t)i * E + e] += j->off[e];
    }
    moe_par_run(cv_key_scatter, j, j->np);
    j->scratch = malloc((size_t)j->np * (size_t)(j->maxload > 0 ? j->maxload : 1) *
                        sizeof *j->scratch);
    if (!j->scratch)
        return moe_fail(MOE_ENOMEM, NULL, "out of memory (claims of %ld on one expert)",
                        j->maxload);
    moe_par_run(cv_key_select, j, j->np);
    free(j->scratch);
    return MOE_OK;
}

/* The scratch of the orders that keep slots per claim, on first use. */
static int cv_scratch(moe_claims_var *v, int keyed)
{
    const size_t cap = (size_t)(v->cap > 0 ? v->cap : 1);
    if (!v->slot)
        v->slot = malloc(cap * sizeof *v->slot);
    if (keyed && !v->list)
        v->list = malloc(cap * sizeof *v->list);
    if (keyed && !v->key)
        v->key = malloc(cap * sizeof *v->key);
    if (!v->slot || (keyed && (!v->list || !v->key)))
        return moe_fail(MOE_ENOMEM, NULL, "out of memory (claim order of %ld claims)", v->cap);
    return MOE_OK;
}

static int cv_run(cv_job *j, int order, int dropless, long *run)
{
    moe_claims_var *v = j->v;
    const int keyed = order == MOE_ORDER_PROBS || order == MOE_ORDER_RTS ||
                      order == MOE_ORDER_GATE;
    int rc = MOE_OK;
    if (order != MOE_ORDER_CHOICE_MAJOR && order != MOE_ORDER_TOKEN_MAJOR &&
        (rc = cv_scratch(v, keyed)))
        return rc;
    if (order == MOE_ORDER_BPR) {
        if ((rc = moe_claims_order_bpr(v->cl, j->n)))
            return rc;
        j->perm = v->cl->order;
    }
    cv_counts(j);
    const size_t total = cv_prefix(j, dropless, run);
    if ((rc = moe_plan_reserve(j->plan, total)))
        return rc;
    if (order == MOE_ORDER_CHOICE_MAJOR || order == MOE_ORDER_TOKEN_MAJOR) {
        return moe_claims_parts_write(&j->pt, j->plan, cv_assign, j, 0);
    }
    if (order == MOE_ORDER_BPR)
        moe_par_run(cv_assign, j, j->np);
    else if ((rc = cv_keyed(j, run)))
        return rc;
    j->perm = NULL;
    moe_par_run(cv_emit_count, j, j->np);
    return moe_claims_parts_write(&j->pt, j->plan, cv_emit, j, 0);
}

int moe_claims_var_resolve(moe_claims_var *v, const moe_route_opts *o, int n, moe_plan *plan)
{
    const int E = v->E, order = o->order;
    const moe_claims *cl = v->cl;
    if (!cl->stats_done)
        return moe_fail(MOE_EINVAL, NULL, "variable claims resolved without their rows pass "
                        "(claims)");
    if (order < MOE_ORDER_CHOICE_MAJOR || order > MOE_ORDER_GATE)
        return moe_fail(MOE_EINVAL, NULL, "unknown claim order %d (order)", order);
    if (order == MOE_ORDER_RTS && !cl->rts_u)
        return moe_fail(MOE_EINVAL, "give the draws: --rts-uniforms U.npy of shape (n,E)",
                        "claim order rts needs its draws (order)");
    v->cl->stats_done = 0;
    const long claims = v->first[n];
    const int limited = !o->dropless && (o->cf_set || o->capacity >= 0);
    cv_job j = {.v = v, .plan = plan, .n = n, .renormalize = o->renormalize};
    if (limited) {
        int rc = moe_capacity(o, 1, claims, E, &j.C);
        if (rc)
            return rc;
    }
    j.np = j.pt.np = moe_par_parts(claims, 16384);
    j.KR = order == MOE_ORDER_CHOICE_MAJOR || order == MOE_ORDER_BPR ? (v->kmax > 0 ? v->kmax
                                                                                     : 1)
                                                                     : 1;
    j.keys = order == MOE_ORDER_PROBS ? cl->p : order == MOE_ORDER_RTS ? cl->rts_u : NULL;
    j.cnt = calloc((size_t)j.np * j.KR * E, sizeof *j.cnt);
    j.sbuf = malloc((size_t)j.np * (size_t)(v->K > 0 ? v->K : 1) * sizeof *j.sbuf);
    j.off = malloc(((size_t)E + 1) * sizeof *j.off);
    long *run = malloc((size_t)E * sizeof *run);
    int rc = !j.cnt || !j.sbuf || !j.off || !run
                 ? moe_fail(MOE_ENOMEM, NULL, "out of memory (claims of %d tokens)", n)
                 : cv_run(&j, order, !limited, run);
    free(j.cnt);
    free(j.sbuf);
    free(j.off);
    free(run);
    return rc;
}

int moe_claims_var_route(moe_router *r, const moe_route_in *in, moe_claims_var **v,
                         int (*buffers)(moe_router *r), moe_claims_row_fn row, void *ctx,
                         moe_plan *plan)
{
    int rc = MOE_OK;
    if (moe_route_memo_reuse(r, plan)) /* the claims of these logits are in *v already */
        moe_claims_var_reused(*v);
    else if (!(rc = buffers(r)) && !(rc = moe_claims_var_rows(*v, in->logits, in->n,
                                                             r->opts.order, in->rts_u, row,
                                                             ctx, plan)))
        moe_route_memo_record(r, plan);
    return rc ? rc : moe_claims_var_resolve(*v, &r->opts, in->n, plan);
}
