/* metrics_anchor.c: the anchor libraries' losses and balance statistics of a plan
 * (metrics_anchor.h; formulas in docs/metrics.md, each read from the library's own function).
 *
 * Owns moe_metrics_anchor and its algorithmic reference moe_metrics_anchor_reference. Both take
 * the same per-token terms: the softmax row p (E) of the logits (exp(L[t,e] - lse[t]) with the
 * router's logsumexps, else moe_softmax), Megatron's scores s (E) and their top-k, and with gate
 * noise each expert's ProbInTopK and V-MoE load terms (Normal CDFs, GSL), and add them to the
 * per-expert sums in token order (add_row), closing a sequence or a routing group where the
 * serial loop over tokens closes it. Both select the top-k with the routers' moe_claims_topk
 * (routers/claims.h; vectorised in routers/select.c). The reference computes the terms one
 * token at a time with the C library's exp; moe_metrics_anchor computes them on the threads
 * (routers/par.h) in chunks of rows, with the vector exp of vexp.h (the same doubles as the C
 * library's exp), and each chunk's terms are added by whichever thread computed them once
 * every earlier chunk has been added. Every sum is therefore taken in token order, the values
 * are the reference's bit for bit and do not depend on the number of threads.
 *
 * Also owns moe_metrics_attach (moe.h): the same sums from the router's own softmax rows. The
 * plan's rows observer chooses each row's top-k on the rows pass's threads (rows_each) and adds
 * the rows' terms in token order as the pass hands them over (rows_add, add_row as above);
 * anchor_losses takes those sums when they cover every row of the logits and plan it is given
 * (rows_sums), and otherwise runs the pass above. Those values are the reference's given the
 * router's softmax, moe_softmax (exp(L - max) / sum), where the pass above takes exp(L - lse):
 * the last bits differ (docs/metrics.md, Precision).
 */
#include "metrics_anchor.h"
#include "anchor_memo.h"
#include "metrics_count.h"
#include "../routers/claims.h" /* moe_claims_topk */
#include "../routers/par.h"
#include "../routers/select.h"
#include "vexp.h"

#include <gsl/gsl_cdf.h>
#include <gsl/gsl_statistics_double.h>
#include <gsl/gsl_statistics_long.h>
#include <math.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

int moe_metrics_span(int len, int n) { return len > 0 && len < n ? len : n; }

/* ---- the libraries' formulas ---- */

/* t2t expert_utils.cv_squared: population variance / (mean^2 + 1e-10), the size taken as
 * len + 1e-10. */
static double t2t_cv_squared(const double *x, int len)
{
    const double eps = 1e-10, size = (double)len + eps;
    double sum = 0.0, var = 0.0;
    for (int i = 0; i < len; i++)
        sum += x[i];
    const double mean = sum / size;
    for (int i = 0; i < len; i++)
        var += (x[i] - mean) * (x[i] - mean);
    var /= size;
    return var / (mean * mean + eps);
}

/* (std / mean)^2 with the population std (jnp.std), as V-MoE computes it. */
static double vmoe_cv2(const double *x, int len)
{
    double mean = gsl_stats_mean(x, 1, (size_t)len);
    double sd = gsl_stats_sd_with_fixed_mean(x, 1, (size_t)len, mean);
    return (sd / mean) * (sd / mean);
}

/* s (E) = Megatron's scores for the auxiliary losses (compute_routing_scores_for_aux_loss):
 * sigmoid / sqrt(softplus) of the logits divided by their sum + 1e-20. */
static void aux_scores(int score, const double *lt, int E, double *s)
{
    double sum = 0.0;
    for (int e = 0; e < E; e++) {
        double x = lt[e];
        s[e] = score == MOE_SCORE_SIGMOID ? 1.0 / (1.0 + exp(-x))
                                         : sqrt(x > 0 ? x + log1p(exp(-x)) : log1p(exp(x)));
        sum += s[e];
    }
    for (int e = 0; e < E; e++)
        s[e] /= sum + 1e-20;
}

/* ---- per-token terms and the sums in token order ---- */

typedef struct {
    const moe_plan *plan;
    const double *L;                  /* (T,E) the logits routed */
    int n, E, k, S, gs;               /* k capped at E; S tokens per sequence, gs per group */
    int noisy, own, score, use_lse;   /* gate noise; Megatron's own scores (score); router's lse */
    int shared;                       /* imp is seq_p: softmax scores, sequences = groups */
    double *seq_cnt, *seq_p, *imp, *pv, *load; /* (E) running sums */
    double seq_sum, imp_sum, pv_sum;
    int in_seq, in_group, ngroups; /* tokens into the sequence and the group */
} anc_state;

/* One token's terms (E each, s only with own scores, q and l only with noise; tk (k)); the
 * exponentials by vexp (fast) or by the C library's exp (the same doubles), the top-k by
 * moe_claims_topk, the routers' own selection. Scratch: ix (E + 1), val (E + 1). */
static void row_terms(const anc_state *st, int t, int fast, double *p, double *s, int32_t *tk,
                      double *q, double *l, int32_t *ix, double *val)
{
    const int E = st->E, k = st->k;
    const double *lt = st->L + (size_t)t * E;
    if (st->use_lse && fast)
        moe_vexp_shift(lt, E, st->plan->lse[t], p);
    else if (st->use_lse)
        for (int e = 0; e < E; e++)
            p[e] = exp(lt[e] - st->plan->lse[t]);
    else
        moe_softmax(lt, E, p);
    if (st->own)
        aux_scores(st->score, lt, E, s);
    if (k >= 1 && k < E) /* Megatron's top-k routing map (k = E: every expert, no tk) */
        moe_claims_topk(st->own ? s : p, E, k, tk, val);
    if (!st->noisy)
        return;
    /* V-MoE's q[e] = 1 - Phi((thr - L[e]) / sd) with thr the k-th largest noisy logit;
     * Shazeer's ProbInTopK l[e] (only when k < E) */
    const double sd = st->plan->noise_std, *h = st->plan->noisy_logits + (size_t)t * E;
    moe_claims_topk(h, E, k < E ? k + 1 : k, ix, val); /* the k+1 largest, descending */
    const double thr = val[k - 1];
    for (int e = 0; e < E; e++)
        q[e] = gsl_cdf_ugaussian_Q((thr - lt[e]) / sd);
    if (k >= E)
        return;
    const double in = val[k], out = thr; /* (k+1)-th and k-th largest noisy logits */
    for (int e = 0; e < E; e++)
        l[e] = gsl_cdf_ugaussian_P((lt[e] - (h[e] > in ? in : out)) / sd);
}

/* acc[e] += x[e] for e < E, in blocks of 8 the compiler turns into vector adds (each element
 * is still one addition). */
static void add_to(double *restrict acc, const double *restrict x, int E)
{
    int e = 0;
    for (; e + 8 <= E; e += 8)
        for (int j = 0; j < 8; j++)
            acc[e + j] += x[e + j];
    for (; e < E; e++)
        acc[e] += x[e];
}

static void row_close(anc_state *st, int t);

/* A token's routing map tk (k) into the sequence's counts. */
static inline void add_counts(anc_state *st, const int32_t *tk)
{
    if (st->k >= st->E) /* the routing map holds every expert (each count the same +1 as by tk) */
        for (int e = 0; e < st->E; e++)
            st->seq_cnt[e] += 1.0;
    else
        for (int j = 0; j < st->k; j++)
            st->seq_cnt[tk[j]] += 1.0;
}

/* The routing maps of len rows, tk (len, k; NULL when k >= E), into the sequence's counts: what
 * add_counts adds row by row, counted per expert as integers first. The counts are integers
 * below 2^53, so adding a segment's count once gives the double that its additions of 1.0 give.
 * Four interleaved tallies keep an expert met in consecutive rows from waiting on its last
 * increment. */
static void add_counts_rows(anc_state *st, const int32_t *tk, int len)
{
    enum { TALLY_E = 256 };
    const int E = st->E, k = st->k;
    if (k >= E || E > TALLY_E) {
        for (int r = 0; r < len; r++)
            add_counts(st, tk ? tk + (size_t)r * k : NULL);
        return;
    }
    long c[4][TALLY_E];
    for (int w = 0; w < 4; w++)
        memset(c[w], 0, (size_t)E * sizeof c[w][0]);
    const size_t m = (size_t)len * k;
    size_t q = 0;
    for (; q + 4 <= m; q += 4) {
        c[0][tk[q]]++;
        c[1][tk[q + 1]]++;
        c[2][tk[q + 2]]++;
        c[3][tk[q + 3]]++;
    }
    for (; q < m; q++)
        c[0][tk[q]]++;
    for (int e = 0; e < E; e++)
        st->seq_cnt[e] += (double)(c[0][e] + c[1][e] + c[2][e] + c[3][e]);
}

/* Adds token t's terms to the running sums; a sequence and a routing group end where the serial
 * loop over tokens ends them. */
static void add_row(anc_state *st, int t, const double *p, const double *s, const int32_t *tk,
                    const double *q, const double *l)
{
    const int E = st->E, k = st->k;
    add_counts(st, tk);
    add_to(st->seq_p, st->own ? s : p, E);
    if (!st->shared)
        add_to(st->imp, p, E);
    if (st->noisy)
        add_to(st->pv, q, E);
    if (st->noisy && k < E)
        add_to(st->load, l, E);
    row_close(st, t);
}

/* Token t's row ends: closes the sequence and the routing group that end there, as the serial
 * loop over tokens closes them. */
static void row_close(anc_state *st, int t)
{
    const int E = st->E, k = st->k, S = st->S;
    const int seq_end = ++st->in_seq == S;
    const int group_end = ++st->in_group == st->gs || t == st->n - 1;
    if (seq_end) { /* a sequence ends: sum_e cost_coeff[e] * mean_s s[s,e] */
        double sum = 0.0;
        for (int e = 0; e < E; e++)
            sum += st->seq_cnt[e] / ((double)S * k / E) * (st->seq_p[e] / S);
        st->seq_sum += sum;
    }
    if (group_end) { /* a routing group ends */
        st->imp_sum += vmoe_cv2(st->imp, E);
        for (int e = 0; st->noisy && e < E; e++)
            st->pv[e] /= st->in_group;
        if (st->noisy)
            st->pv_sum += vmoe_cv2(st->pv, E);
    }
    if (seq_end) { /* then reset (the importance may be the sequence's sums) */
        memset(st->seq_cnt, 0, (size_t)E * sizeof *st->seq_cnt);
        memset(st->seq_p, 0, (size_t)E * sizeof *st->seq_p);
        st->in_seq = 0;
    }
    if (group_end) {
        memset(st->imp, 0, (size_t)E * sizeof *st->imp);
        memset(st->pv, 0, (size_t)E * sizeof *st->pv);
        st->ngroups++;
        st->in_group = 0;
    }
}

/* Rows t0..t1-1 without gate noise or Megatron's own scores: p (rows, E), tk (rows, k; NULL when
 * k >= E), psum (E) the sums of rows [0, t1) of p or NULL (moe_plan's rows_add). The sums of
 * add_row row by row, taken in segments of rows that end no sequence and no routing group
 * before their last row: each segment's p goes into the sums kept in registers
 * (moe_claims_add_rows: every sum takes the same additions in the same order), then its last
 * row closes what it ends. A sum that started at token 0 and ends its segment at t1 is psum
 * itself: the same additions in the same order, so it is copied instead. */
static void add_rows(anc_state *st, int t0, int t1, const double *p, const int32_t *tk,
                     const double *psum)
{
    const int E = st->E, k = st->k;
    for (int t = t0; t < t1;) {
        int len = t1 - t;
        len = st->S - st->in_seq < len ? st->S - st->in_seq : len;
        len = st->gs - st->in_group < len ? st->gs - st->in_group : len;
        len = st->n - t < len ? st->n - t : len;
        const double *pa = p + (size_t)(t - t0) * E;
        add_counts_rows(st, tk ? tk + (size_t)(t - t0) * k : NULL, len);
        const int whole = psum && t + len == t1; /* psum: the sums of rows [0, t + len) */
        if (whole && st->in_seq == t)
            memcpy(st->seq_p, psum, (size_t)E * sizeof *psum);
        else
            moe_claims_add_rows(st->seq_p, pa, len, E);
        if (!st->shared && whole && st->in_group == t)
            memcpy(st->imp, psum, (size_t)E * sizeof *psum);
        else if (!st->shared)
            moe_claims_add_rows(st->imp, pa, len, E);
        st->in_seq += len - 1; /* no row before the last ends anything */
        st->in_group += len - 1;
        row_close(st, t + len - 1);
        t += len;
    }
}

/* ---- the terms on the threads ---- */

enum { ANC_VALUES = 8192 }; /* values of one (rows, E) term block of a chunk */
enum { ANC_AHEAD = 8 };      /* rows between the one read and the one asked for */

typedef struct {
    anc_state *st;
    int R;            /* rows per chunk */
    size_t per, iper; /* doubles and int32 of one part's scratch */
    double *buf;      /* (nparts, per): p, s, q, l (R,E) each, val (E + 1) */
    int32_t *ibuf;    /* (nparts, iper): tk (R,k), ix (E + 1) */
    atomic_long next; /* the next chunk to take */
    atomic_long done; /* chunks [0, done) are in the sums */
} anc_job;

/* Chunks of R tokens go, in increasing order, to whichever thread is free; it computes their
 * terms into its own scratch, waits until every earlier chunk is in the sums and adds its own.
 * A thread only waits for chunks that running threads took, so a part that moe_par_run runs
 * later on the caller cannot stall the others. */
static void anc_part(void *ctx, int i, int np)
{
    (void)np;
    anc_job *j = ctx;
    anc_state *st = j->st;
    const int E = st->E, R = j->R;
    const size_t RE = (size_t)R * E;
    double *p = j->buf + (size_t)i * j->per, *s = p + RE, *q = s + RE, *l = q + RE; /* (R,E) */
    double *val = l + RE;
    int32_t *tk = j->ibuf + (size_t)i * j->iper, *ix = tk + (size_t)R * st->k;
    const long nch = (st->n + R - 1) / R;
    for (long ch; (ch = atomic_fetch_add(&j->next, 1)) < nch;) {
        const int t0 = (int)(ch * R), t1 = t0 + R < st->n ? t0 + R : st->n;
        for (int t = t0; t < t1; t++) {
            const size_t o = (size_t)(t - t0) * E;
            if (t + ANC_AHEAD < st->n) /* a later row on its way from memory */
                for (size_t b = 0; b < (size_t)E; b += 8)
                    __builtin_prefetch(st->L + (size_t)(t + ANC_AHEAD) * E + b);
            row_terms(st, t, 1, p + o, s + o, tk + (size_t)(t - t0) * st->k, q + o, l + o, ix,
                      val);
        }
        for (int spin = 0; atomic_load_explicit(&j->done, memory_order_acquire) != ch; spin++)
            if (spin >= 64)
                sched_yield();
        if (!st->noisy && !st->own)
            add_rows(st, t0, t1, p, st->k < E ? tk : NULL, NULL);
        for (int t = t0; (st->noisy || st->own) && t < t1; t++) {
            const size_t o = (size_t)(t - t0) * E;
            add_row(st, t, p + o, s + o, tk + (size_t)(t - t0) * st->k, q + o, l + o);
        }
        atomic_store_explicit(&j->done, ch + 1, memory_order_release);
    }
}

/* The sums of every token: on the threads (fast) or by the reference's serial loop. */
static int anc_sums(anc_state *st, int fast)
{
    const int E = st->E;
    const int np = fast ? moe_par_parts((long)st->n * E, 16384) : 1;
    const int R = !fast ? 1 : E >= ANC_VALUES ? 1 : ANC_VALUES / E;
    anc_job j = {.st = st, .R = R};
    j.per = (size_t)R * E * 4 + (size_t)E + 1;
    j.iper = (size_t)R * st->k + (size_t)E + 1;
    j.buf = malloc((size_t)np * j.per * sizeof *j.buf);
    j.ibuf = malloc((size_t)np * j.iper * sizeof *j.ibuf);
    if (!j.buf || !j.ibuf) {
        free(j.buf);
        free(j.ibuf);
        return moe_fail(MOE_ENOMEM, NULL, "out of memory (metrics of %d experts)", E);
    }
    atomic_init(&j.next, 0);
    atomic_init(&j.done, 0);
    if (fast) {
        moe_par_run(anc_part, &j, np);
    } else {
        double *p = j.buf, *s = p + E, *q = s + E, *l = q + E, *val = l + E;
        int32_t *ix = j.ibuf + st->k;
        for (int t = 0; t < st->n; t++) {
            row_terms(st, t, 0, p, s, j.ibuf, q, l, ix, val);
            add_row(st, t, p, s, j.ibuf, q, l);
        }
    }
    free(j.buf);
    free(j.ibuf);
    return MOE_OK;
}

/* ---- the terms of the router's own softmax rows (moe_metrics_attach) ---- */

enum { ROWS_KMAX = 64 }; /* k up to which each row's top-k is chosen on the pass's threads */

/* The sums of the rows a router's rows pass gave the plan's observer, in token order. */
struct moe_metrics_rows {
    const moe_metrics *mt;
    const moe_plan *plan;
    int n_max, k_max; /* tk holds n_max rows of k_max <= ROWS_KMAX */
    anc_state st;     /* no noise, the softmax scores; st.L unused */
    int valid;        /* the sums cover rows [0, done) of one pass */
    long done;
    double *d;        /* (4E): seq_cnt, seq_p, imp, pv (cleared where a group ends, unused) */
    int32_t *tk;      /* (n_max, k_max): each row's top-k, chosen by rows_each */
};

/* Experts per token of plan's pass when its rows' top-k fit tk or are every expert (else -1). */
static int rows_k(const moe_metrics_rows *r)
{
    const moe_plan *plan = r->plan;
    const int k = plan->k < plan->E ? plan->k : plan->E;
    return plan->E == r->mt->E && plan->n <= r->n_max && k >= 0 &&
                   (k <= r->k_max || k == plan->E) ? k : -1;
}

/* rows_each: rows t0..t1-1 of the router's softmax p (rows, E): each row's Megatron routing map,
 * the set moe_claims_topk of p chooses, into tk (on the pass's threads). At k = 1 that is the
 * first index of the row's largest p, which the pass may have taken with the softmax (pmax).
 * The router's own top-k of the logits (plan->rows_topk) is that set whenever no other
 * probability of the row reaches its smallest one (moe_select_is_top, or the pass's own
 * answer in rows_topk_sure; add_row reads tk as a set); a row where one does (two logits a
 * rounding apart share a probability) takes the selection on p. */
static void rows_each(void *ctx, long t0, long t1, const double *p, const int32_t *pmax)
{
    const moe_metrics_rows *r = ctx;
    const moe_plan *plan = r->plan;
    const int k = rows_k(r), E = plan->E;
    const int32_t *own = plan->rows_topk && plan->rows_topk_k == k ? plan->rows_topk : NULL;
    const uint8_t *sure = own ? plan->rows_topk_sure : NULL; /* (the pass's is_top) */
    double val[ROWS_KMAX];
    if (k == 1 && E > 1 && pmax) { /* the routing maps are the pass's */
        memcpy(r->tk + t0, pmax, (size_t)(t1 - t0) * sizeof *pmax);
        return;
    }
    if (sure && k >= 1 && k < E) { /* the router's choices in one copy, then the rows not sure */
        memcpy(r->tk + (size_t)t0 * k, own + (size_t)t0 * k, (size_t)(t1 - t0) * k * sizeof *own);
        for (long t = t0; t < t1; t++)
            if (!sure[t])
                moe_claims_topk(p + (size_t)(t - t0) * E, E, k, r->tk + (size_t)t * k, val);
        return;
    }
    if (!own && k >= 1 && k < E) { /* ROWS_SEL rows at a time (moe_select_topk_rows) */
        enum { ROWS_SEL = 32 };
        double vals[ROWS_SEL * ROWS_KMAX];
        for (long a = t0; a < t1; a += ROWS_SEL) {
            const long b = t1 - a < ROWS_SEL ? t1 : a + ROWS_SEL;
            moe_select_topk_rows(p + (size_t)(a - t0) * E, b - a, E, k, r->tk + (size_t)a * k,
                                 vals);
            for (long t = a; t < b; t++) /* the rows it declined */
                if (r->tk[(size_t)t * k] < 0)
                    moe_claims_topk(p + (size_t)(t - t0) * E, E, k, r->tk + (size_t)t * k, val);
        }
        return;
    }
    for (long t = t0; k >= 1 && k < E && t < t1; t++) { /* (own is set here) */
        const double *pt = p + (size_t)(t - t0) * E;
        int32_t *tk = r->tk + (size_t)t * k;
        if (E == 8 ? moe_select_is_top8(pt, own + (size_t)t * k, k)
                   : moe_select_is_top(pt, E, own + (size_t)t * k, k))
            for (int j = 0; j < k; j++) /* (k small: no library call per row) */
                tk[j] = own[(size_t)t * k + j];
        else
            moe_claims_topk(pt, E, k, tk, val);
    }
}

/* A pass over n = plan->n rows starts: the state of anchor_losses for its plan and options. */
static void rows_start(moe_metrics_rows *r)
{
    const moe_plan *plan = r->plan;
    const int n = plan->n, E = r->mt->E;
    anc_state *st = &r->st;
    *st = (anc_state){.plan = plan, .n = n, .E = E, .k = rows_k(r),
                      .S = moe_metrics_span(r->mt->sequence_length, n),
                      .gs = moe_metrics_span(r->mt->group_size, n), .score = r->mt->score};
    st->own = st->score == MOE_SCORE_SIGMOID || st->score == MOE_SCORE_SQRTSOFTPLUS;
    r->valid = st->k >= 0 && n % st->S == 0 && !st->own;
    r->done = 0;
    memset(r->d, 0, 4 * (size_t)E * sizeof *r->d);
    st->seq_cnt = r->d, st->seq_p = r->d + E, st->imp = r->d + 2 * E, st->pv = r->d + 3 * E;
    st->shared = st->S == st->gs; /* the same sums of p, ended together */
    if (st->shared)
        st->imp = st->seq_p;
}

/* rows_add: the rows t0..t1-1 (after rows_each), in token order: their routing maps and p into
 * the sums exactly as the separate pass adds them (add_row). */
static void rows_add(void *ctx, long t0, long t1, const double *p, const double *psum)
{
    moe_metrics_rows *r = ctx;
    if (t0 == 0)
        rows_start(r);
    if (!r->valid || t0 != r->done) {
        r->valid = 0;
        return;
    }
    const int E = r->st.E, k = r->st.k;
    add_rows(&r->st, (int)t0, (int)t1, p, k < E ? r->tk + (size_t)t0 * k : NULL, psum);
    r->done = t1;
}

int moe_metrics_attach(moe_metrics *mt, moe_plan *plan, int n_max, int k)
{
    const int E = mt->E;
    k = k < E ? k : 0; /* k = E: every expert, no top-k to keep */
    k = k < 0 ? 0 : k > ROWS_KMAX ? ROWS_KMAX + 1 : k; /* above ROWS_KMAX: never taken */
    moe_metrics_rows *r = mt->rows;
    if (r && (r->n_max < n_max || r->k_max < k)) {
        moe_metrics_rows_free(r);
        r = mt->rows = NULL;
    }
    if (!r) {
        r = calloc(1, sizeof *r);
        if (r) {
            r->d = malloc(4 * (size_t)E * sizeof *r->d);
            r->tk = malloc(((size_t)n_max * (size_t)(k <= ROWS_KMAX ? k : 0) + 1) *
                           sizeof *r->tk);
        }
        if (!r || !r->d || !r->tk) {
            moe_metrics_rows_free(r);
            return moe_fail(MOE_ENOMEM, NULL, "out of memory (metrics of %d tokens)", n_max);
        }
        r->n_max = n_max;
        r->k_max = k <= ROWS_KMAX ? k : -1;
        mt->rows = r;
    }
    r->mt = mt;
    r->plan = plan;
    r->valid = 0;
    plan->rows_each = rows_each;
    plan->rows_add = rows_add;
    plan->rows_ctx = r;
    plan->rows_pmax = k == 1; /* each row's routing map is its first largest p */
    plan->rows_of = NULL;
    return moe_metrics_ents_attach(mt, plan);
}

void moe_metrics_rows_free(moe_metrics_rows *r)
{
    if (!r)
        return;
    free(r->d);
    free(r->tk);
    free(r);
}

size_t moe_metrics_rows_state_size(void) { return sizeof(moe_metrics_rows); }

int moe_metrics_rows_save(const moe_plan *plan, void *state)
{
    if (plan->rows_add != rows_add || !plan->rows_ctx)
        return 0;
    memcpy(state, plan->rows_ctx, sizeof(moe_metrics_rows));
    return 1;
}

int moe_metrics_rows_restore(moe_plan *plan, const void *state)
{
    if (plan->rows_add != rows_add || !plan->rows_ctx)
        return 0;
    moe_metrics_rows *r = plan->rows_ctx;
    const moe_metrics_rows *s = state;
    r->valid = s->valid;
    r->done = s->done;
    r->st = s->st; /* the sums and the state they were taken in; its pointers are r's */
    r->st.plan = plan;
    r->st.seq_cnt = r->d, r->st.seq_p = r->d + r->st.E, r->st.imp = r->d + 2 * r->st.E;
    r->st.pv = r->d + 3 * r->st.E;
    if (r->st.shared)
        r->st.imp = r->st.seq_p;
    return 1;
}

/* The sums of the router's rows when they are those of plan's logits and of anchor_losses'
 * state st (same tokens, k, sequences, groups; no noise, softmax scores); else NULL. */
static const anc_state *rows_sums(const moe_metrics *mt, const moe_plan *plan,
                                  const double *logits, const anc_state *st)
{
    const moe_metrics_rows *r = mt->rows;
    if (!r || r->plan != plan || plan->rows_of != logits || !r->valid || r->done != plan->n)
        return NULL;
    const anc_state *q = &r->st;
    if (st->noisy || st->own || q->n != st->n || q->E != st->E || q->k != st->k ||
        q->S != st->S || q->gs != st->gs || q->score != st->score)
        return NULL;
    return q;
}

/* The key of the pass over every row of st (anchor_memo.h) for logits of batch number batch. */
static moe_anchor_key memo_key(const anc_state *st, unsigned long batch)
{
    return (moe_anchor_key){.logits = st->L, .batch = batch, .n = st->n, .E = st->E, .k = st->k,
                         .seq = st->S, .group = st->gs, .score = st->score, .own = st->own,
                         .use_lse = st->use_lse, .shared = st->shared,
                         .lse = st->use_lse ? st->plan->lse : NULL};
}

/* seq_aux_loss, importance_loss_vmoe, load_loss_vmoe and load_loss_shazeer (docs/metrics.md)
 * from the logits (T,E) routed; the pass over the rows from memo when it has the sums of its key
 * (noise-free passes on the threads, anchor_memo.h), else computed and kept there. */
static int anchor_losses(const moe_plan *plan, const double *logits, moe_metrics *mt, int fast,
                         moe_anchor_memo *memo, unsigned long batch)
{
    const int n = plan->n, E = plan->E, k = plan->k < E ? plan->k : E; /* experts per token */
    anc_state st = {.plan = plan, .L = logits, .n = n, .E = E, .k = k,
                    .S = moe_metrics_span(mt->sequence_length, n),
                    .gs = moe_metrics_span(mt->group_size, n)};
    if (n % st.S != 0)
        return moe_fail(MOE_EINVAL, "sequence_length must divide the tokens of a batch",
                        "sequence_length %d does not divide the batch's %d tokens "
                        "(sequence_length)", st.S, n);
    st.noisy = plan->noisy_logits && plan->noise_std > 0.0 && k >= 1;
    st.own = mt->score == MOE_SCORE_SIGMOID || mt->score == MOE_SCORE_SQRTSOFTPLUS;
    st.score = mt->score;
    st.use_lse = plan->lse_of == logits;
    double *d = calloc((size_t)E * 5, sizeof *d);
    if (!d)
        return moe_fail(MOE_ENOMEM, NULL, "out of memory (metrics of %d experts)", E);
    st.seq_cnt = d, st.seq_p = d + E, st.imp = d + 2 * E, st.pv = d + 3 * E, st.load = d + 4 * E;
    st.shared = fast && !st.own && st.S == st.gs; /* the same sums of p, ended together */
    if (st.shared)
        st.imp = st.seq_p;
    const anc_state *rs = fast ? rows_sums(mt, plan, logits, &st) : NULL;
    const moe_anchor_key key = memo_key(&st, fast && !st.noisy ? batch : 0);
    moe_anchor_sums ms;
    int rc = MOE_OK;
    if (rs) { /* the router's rows: their sums (load: no noise, set below) */
        st.seq_sum = rs->seq_sum;
        st.imp_sum = rs->imp_sum;
        st.ngroups = rs->ngroups;
    } else if (moe_anchor_memo_find(memo, &key, &ms)) { /* no noise: load set below */
        st.seq_sum = ms.seq_sum;
        st.imp_sum = ms.imp_sum;
        st.ngroups = ms.ngroups;
    } else if (!(rc = anc_sums(&st, fast))) {
        ms = (moe_anchor_sums){st.seq_sum, st.imp_sum, st.ngroups};
        moe_anchor_memo_put(memo, &key, &ms);
    }
    if (!rc) {
        mt->seq_aux_loss = k >= 1 ? st.seq_sum / (n / st.S) : NAN;
        mt->importance_loss_vmoe = st.imp_sum / st.ngroups;
        mt->load_loss_vmoe = st.noisy ? st.pv_sum / st.ngroups : NAN;
        if (!st.noisy || k >= E) /* t2t without noise: the load is the count of non-zero gates */
            for (int e = 0; e < E; e++)
                st.load[e] = (double)plan->assigned_load[e];
        mt->load_loss_shazeer = t2t_cv_squared(st.load, E);
    }
    free(d);
    return rc;
}

/* The anchor libraries' metrics of a plan (docs/metrics.md). */
static int anchor_metrics(const moe_plan *plan, const double *logits, moe_metrics *mt, int fast,
                          moe_anchor_memo *memo, unsigned long batch)
{
    const int E = plan->E;
    for (int j = 0; j < 2; j++) {
        long c = plan->rank_claims[j];
        double v = c > 0 ? 100.0 * (double)(c - plan->rank_kept[j]) / (double)c : NAN;
        *(j ? &mt->overflow_expert2 : &mt->overflow_expert1) = v;
    }
    long kmax = gsl_stats_long_max(mt->kept_load, 1, (size_t)E);
    mt->balancedness = kmax > 0 ? gsl_stats_long_mean(mt->kept_load, 1, (size_t)E) / kmax : 0.0;
    mt->seq_aux_loss = mt->importance_loss_vmoe = mt->load_loss_vmoe = NAN;
    mt->load_loss_shazeer = NAN;
    if (!logits || plan->dense || plan->m != E)
        return MOE_OK;
    return anchor_losses(plan, logits, mt, fast, memo, batch);
}

int moe_metrics_anchor(const moe_plan *plan, const double *logits, moe_metrics *mt)
{
    return anchor_metrics(plan, logits, mt, 1, NULL, 0);
}

int moe_metrics_anchor_memo(const moe_plan *plan, const double *logits, moe_metrics *mt,
                            moe_anchor_memo *memo, unsigned long batch)
{
    return anchor_metrics(plan, logits, mt, 1, memo, batch);
}

int moe_metrics_anchor_reference(const moe_plan *plan, const double *logits, moe_metrics *mt)
{
    return anchor_metrics(plan, logits, mt, 0, NULL, 0);
}
