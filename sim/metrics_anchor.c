/* metrics_anchor.c: the anchor libraries' losses and balance statistics of a plan
 * (metrics_anchor.h; formulas in docs/metrics.md, each read from the library's own function).
 *
 * Owns moe_metrics_anchor and its algorithmic reference moe_metrics_anchor_reference. Both take
 * the same per-token terms: the softmax row p (E) of the logits (exp(L[t,e] - lse[t]) with the
 * router's logsumexps, else moe_softmax), Megatron's scores s (E) and their top-k, and with gate
 * noise each expert's ProbInTopK and V-MoE load terms (Normal CDFs, GSL), and add them to the
 * per-expert sums in token order (add_row), closing a sequence or a routing group where the
 * serial loop over tokens closes it. The reference computes the terms one token at a time with
 * the C library's exp and moe_claims_topk; moe_metrics_anchor computes them on the threads
 * (routers/par.h) in chunks of rows, with the vector exp of vexp.h (the same doubles as the C
 * library's exp) and a top-k that skips blocks of 8 below the k-th value (the same choice as
 * moe_claims_topk), and each chunk's terms are added by whichever thread computed them once
 * every earlier chunk has been added. Every sum is therefore taken in token order, the values
 * are the reference's bit for bit and do not depend on the number of threads.
 */
#include "metrics_anchor.h"
#include "../routers/claims.h" /* moe_claims_topk */
#include "../routers/par.h"
#include "vexp.h"

#include <gsl/gsl_cdf.h>
#include <gsl/gsl_statistics_double.h>
#include <gsl/gsl_statistics_long.h>
#include <math.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#if defined(__AVX512F__)
#include <immintrin.h>
#endif

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

/* ---- top-k ---- */

/* Inserts (x, e) into the descending list val, idx of *cnt entries (k at most), as
 * moe_claims_topk does: once k are held, a value not above the k-th is not taken (the lower
 * index stays on a tie). */
static inline void topk_insert(double x, int e, int k, int *cnt, int32_t *idx, double *val)
{
    if (*cnt == k && !(x > val[k - 1]))
        return;
    int j = *cnt < k ? (*cnt)++ : k - 1;
    for (; j > 0 && val[j - 1] < x; j--) {
        val[j] = val[j - 1];
        idx[j] = idx[j - 1];
    }
    val[j] = x;
    idx[j] = e;
}

#if defined(__AVX512F__) && defined(__AVX512VL__)
/* A lower bound *thr of the k-th largest of v (len >= 16, no NaN): the k-th largest of its 8
 * lane maxima (k distinct elements of v) or, for k > 8, of its first k values; 0 (no bound)
 * when v holds a NaN. Only the values at or above the bound can be among the
 * k largest, and moe_claims_topk chooses among them, in index order, what it chooses among the
 * whole row. */
static int topk_bound(const double *v, int len, int k, double *thr)
{
    const int nb = len / 8;
    __m512d mx = _mm512_loadu_pd(v);
    __mmask8 nan = _mm512_cmp_pd_mask(mx, mx, _CMP_UNORD_Q);
    for (int b = 1; b < nb; b++) {
        const __m512d x = _mm512_loadu_pd(v + 8 * b);
        nan |= _mm512_cmp_pd_mask(x, x, _CMP_UNORD_Q);
        mx = _mm512_max_pd(mx, x);
    }
    for (int i = 8 * nb; i < len; i++)
        nan |= isnan(v[i]);
    if (nan)
        return 0;
    if (k > 8) {
        double lo = v[0];
        for (int i = 1; i < k; i++)
            lo = v[i] < lo ? v[i] : lo;
        *thr = lo;
        return 1;
    }
    if (k == 1) {
        *thr = _mm512_reduce_max_pd(mx);
        return 1;
    }
    /* the k-th largest lane maximum: the smallest of those ranked below k (values greater,
     * plus equal values in lower lanes) */
    double lane[8], lo = INFINITY;
    _mm512_storeu_pd(lane, mx);
    for (int i = 0; i < 8; i++) {
        const __m512d b = _mm512_set1_pd(lane[i]);
        const int rank = __builtin_popcount(_mm512_cmp_pd_mask(mx, b, _CMP_GT_OQ)) +
                         __builtin_popcount(_mm512_cmp_pd_mask(mx, b, _CMP_EQ_OQ) &
                                            ((1u << i) - 1));
        lo = rank < k && lane[i] < lo ? lane[i] : lo;
    }
    *thr = lo;
    return 1;
}

/* The values of v at or above thr and their indices, in index order, into cv, ci (len + 8
 * each); returns their number. */
static int topk_candidates(const double *v, int len, double thr, double *cv, int32_t *ci)
{
    const __m512d lo = _mm512_set1_pd(thr);
    const __m256i iota = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    int m = 0, e = 0;
    for (; e + 8 <= len; e += 8) {
        const __m512d x = _mm512_loadu_pd(v + e);
        const __mmask8 ge = _mm512_cmp_pd_mask(x, lo, _CMP_GE_OQ);
        if (!ge)
            continue;
        /* compressed in registers, stored whole (8 values, m + 8 <= len + 8) */
        _mm512_storeu_pd(cv + m, _mm512_maskz_compress_pd(ge, x));
        const __m256i ie = _mm256_add_epi32(iota, _mm256_set1_epi32(e));
        _mm256_storeu_si256((__m256i *)(ci + m), _mm256_maskz_compress_epi32(ge, ie));
        m += __builtin_popcount(ge);
    }
    for (; e < len; e++)
        if (v[e] >= thr)
            cv[m] = v[e], ci[m++] = e;
    return m;
}
#endif

/* moe_claims_topk's k >= 1 largest of v (len), the same indices and values in the same order;
 * with AVX-512, only the values at or above topk_bound are inserted. cv (len), ci (len) and
 * val (k, at least 8) scratch. */
static void topk_fast(const double *v, int len, int k, int32_t *idx, double *val, double *cv,
                      int32_t *ci)
{
    int cnt = 0;
#if defined(__AVX512F__) && defined(__AVX512VL__)
    double thr;
    if (len >= 16 && topk_bound(v, len, k, &thr)) {
        const int m = topk_candidates(v, len, thr, cv, ci);
        for (int i = 0; i < m; i++)
            topk_insert(cv[i], ci[i], k, &cnt, idx, val);
        return;
    }
#else
    (void)cv, (void)ci;
#endif
    for (int e = 0; e < len; e++)
        topk_insert(v[e], e, k, &cnt, idx, val);
}

enum { TOPK_RANKED = 32 }; /* candidates ranked by topk_set; more go through topk_insert */

/* The indices of moe_claims_topk's k >= 1 largest of v (len), in some order (Megatron's routing
 * map: only the set counts). With AVX-512: for k = 1 the first index of the maximum; else, with
 * at most TOPK_RANKED values at or above topk_bound, each of those is taken when its rank in
 * moe_claims_topk's order (the values greater, plus the equal values at lower indices) is below
 * k; else as topk_fast. cv, ci (len + TOPK_RANKED), val (k, at least 8) scratch. */
static void topk_set(const double *v, int len, int k, int32_t *idx, double *val, double *cv,
                     int32_t *ci)
{
#if defined(__AVX512F__) && defined(__AVX512VL__)
    double thr;
    if (len >= 16 && topk_bound(v, len, k, &thr)) {
        if (k == 1) { /* the maximum (the lanes' or a later value): its first index */
            int e = 0;
            for (int i = len / 8 * 8; i < len; i++)
                thr = v[i] > thr ? v[i] : thr;
            for (; e + 8 <= len; e += 8) {
                const unsigned eq =
                    _mm512_cmp_pd_mask(_mm512_loadu_pd(v + e), _mm512_set1_pd(thr), _CMP_EQ_OQ);
                if (eq) {
                    idx[0] = e + __builtin_ctz(eq);
                    return;
                }
            }
            for (; v[e] != thr; e++)
                ;
            idx[0] = e;
            return;
        }
        const int m = topk_candidates(v, len, thr, cv, ci);
        if (m <= TOPK_RANKED) {
            const int nb = (m + 7) / 8;
            for (int i = m; i < 8 * nb; i++)
                cv[i] = NAN; /* compares false: never counted */
            int cnt = 0;
            for (int i = 0; i < m; i++) {
                const __m512d b = _mm512_set1_pd(cv[i]);
                int rank = 0;
                for (int j = 0; j < nb; j++) {
                    const __m512d x = _mm512_loadu_pd(cv + 8 * j);
                    const unsigned before = j < i / 8 ? 0xffu : j > i / 8 ? 0u : (1u << i % 8) - 1;
                    rank += __builtin_popcount(_mm512_cmp_pd_mask(x, b, _CMP_GT_OQ)) +
                            __builtin_popcount(_mm512_cmp_pd_mask(x, b, _CMP_EQ_OQ) & before);
                }
                ci[len + cnt] = ci[i];
                cnt += rank < k;
            }
            memcpy(idx, ci + len, (size_t)k * sizeof *idx);
            return;
        }
        int cnt = 0;
        for (int i = 0; i < m; i++)
            topk_insert(cv[i], ci[i], k, &cnt, idx, val);
        return;
    }
#endif
    topk_fast(v, len, k, idx, val, cv, ci);
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

/* One token's terms (E each, s only with own scores, q and l only with noise; tk (k)); fast:
 * by vexp, topk_set and topk_fast, else by exp and moe_claims_topk (the same doubles and the
 * same choices). Scratch: ix (E + 1), val (E + 8), cv and ci (E + TOPK_RANKED). */
static void row_terms(const anc_state *st, int t, int fast, double *p, double *s, int32_t *tk,
                      double *q, double *l, int32_t *ix, double *val, double *cv, int32_t *ci)
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
    if (k >= 1 && fast) /* Megatron's top-k routing map */
        topk_set(st->own ? s : p, E, k, tk, val, cv, ci);
    else if (k >= 1)
        moe_claims_topk(st->own ? s : p, E, k, tk, val);
    if (!st->noisy)
        return;
    /* V-MoE's q[e] = 1 - Phi((thr - L[e]) / sd) with thr the k-th largest noisy logit;
     * Shazeer's ProbInTopK l[e] (only when k < E) */
    const double sd = st->plan->noise_std, *h = st->plan->noisy_logits + (size_t)t * E;
    if (fast) /* the k+1 largest, descending */
        topk_fast(h, E, k < E ? k + 1 : k, ix, val, cv, ci);
    else
        moe_claims_topk(h, E, k < E ? k + 1 : k, ix, val);
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

/* Adds token t's terms to the running sums; a sequence and a routing group end where the serial
 * loop over tokens ends them. */
static void add_row(anc_state *st, int t, const double *p, const double *s, const int32_t *tk,
                    const double *q, const double *l)
{
    const int E = st->E, k = st->k, S = st->S;
    for (int j = 0; j < k; j++)
        st->seq_cnt[tk[j]] += 1.0;
    add_to(st->seq_p, st->own ? s : p, E);
    if (!st->shared)
        add_to(st->imp, p, E);
    if (st->noisy)
        add_to(st->pv, q, E);
    if (st->noisy && k < E)
        add_to(st->load, l, E);
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

/* ---- the terms on the threads ---- */

enum { ANC_VALUES = 8192 }; /* values of one (rows, E) term block of a chunk */

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
    double *val = l + RE, *cv = val + E + 8;
    int32_t *tk = j->ibuf + (size_t)i * j->iper, *ix = tk + (size_t)R * st->k, *ci = ix + E + 1;
    const long nch = (st->n + R - 1) / R;
    for (long ch; (ch = atomic_fetch_add(&j->next, 1)) < nch;) {
        const int t0 = (int)(ch * R), t1 = t0 + R < st->n ? t0 + R : st->n;
        for (int t = t0; t < t1; t++) {
            const size_t o = (size_t)(t - t0) * E;
            row_terms(st, t, 1, p + o, s + o, tk + (size_t)(t - t0) * st->k, q + o, l + o, ix,
                      val, cv, ci);
        }
        for (int spin = 0; atomic_load_explicit(&j->done, memory_order_acquire) != ch; spin++)
            if (spin >= 64)
                sched_yield();
        for (int t = t0; t < t1; t++) {
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
    j.per = (size_t)R * E * 4 + 2 * (size_t)E + 8 + TOPK_RANKED;
    j.iper = (size_t)R * st->k + 2 * (size_t)E + 1 + TOPK_RANKED;
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
        double *p = j.buf, *s = p + E, *q = s + E, *l = q + E, *val = l + E, *cv = val + E + 8;
        int32_t *ix = j.ibuf + st->k, *ci = ix + E + 1;
        for (int t = 0; t < st->n; t++) {
            row_terms(st, t, 0, p, s, j.ibuf, q, l, ix, val, cv, ci);
            add_row(st, t, p, s, j.ibuf, q, l);
        }
    }
    free(j.buf);
    free(j.ibuf);
    return MOE_OK;
}

/* seq_aux_loss, importance_loss_vmoe, load_loss_vmoe and load_loss_shazeer (docs/metrics.md)
 * from the logits (T,E) routed. */
static int anchor_losses(const moe_plan *plan, const double *logits, moe_metrics *mt, int fast)
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
    int rc = anc_sums(&st, fast);
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
static int anchor_metrics(const moe_plan *plan, const double *logits, moe_metrics *mt, int fast)
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
    return anchor_losses(plan, logits, mt, fast);
}

int moe_metrics_anchor(const moe_plan *plan, const double *logits, moe_metrics *mt)
{
    return anchor_metrics(plan, logits, mt, 1);
}

int moe_metrics_anchor_reference(const moe_plan *plan, const double *logits, moe_metrics *mt)
{
    return anchor_metrics(plan, logits, mt, 0);
}
