/* dsv3_bias.c: the `dsv3_bias` router (DeepSeek-V3, auxiliary-loss-free load balancing; Wang et
 * al. 2024 and the DeepSeek-V3 report), docs/routing.md section 3. Fills moe_router_dsv3_bias and
 * owns moe_dsv3_bias_state (dsv3_bias.h). Stateful (MOE_RF_STATEFUL): the bias lives in r->ws.
 *
 *   scores     s[t,e] = sigmoid(L[t,e]) (V3 uses sigmoid affinities)
 *   selection  top-k of s[t,e] + b[e] per token, compared in double, ties to the lower expert
 *              (stable sort); b (E) is the per-expert bias state, 0 when the router is allocated
 *   gates      the unbiased scores of the selected experts normalised over the k selected:
 *              g = s[t,e] / sum_{selected j} s[t,j] (V3 normalises the selected sigmoid scores;
 *              its routed scaling factor 2.5 is a model constant and is left out)
 *   capacity   dropless unless a capacity factor or an explicit capacity is given (then C from
 *              the formula with this k and claims in opts.order through claims.c, renormalize as
 *              given); opts.dropless forces dropless
 *   observe    after each batch: b[e] += rate * sign(mean load - load[e]), rate =
 *              opts.bias_rate (default 0.001, V3's gamma), load = the batch's assigned_load
 *              (claims before capacity), mean load = sum_e load[e] / E; sign(0) = 0
 *   statistics assigned_load and importance from the claims; aux_loss = 0 (V3's small
 *              sequence-wise balance loss is not modelled)
 * Default k = 2 (V3 routes each token to 8 of 256 experts, with node-limited routing to at
 * most 4 nodes; moesim's default shapes have few experts, and node limits are not modelled).
 * `moesim route` routes one batch with the bias at 0; sweeps carry it across batches.
 */
#include "moe.h"
#include "claims.h"
#include "dsv3_bias.h"
#include "score.h"
#include "select.h"
#include "vexp.h"

#include <math.h>
#include <stdlib.h>
#if defined(__AVX512F__) || defined(__AVX2__)
#include <immintrin.h>
#endif

extern const moe_router_type moe_router_dsv3_bias;

/* ---- workspace and state ---- */

typedef struct {
    moe_claims *cl;
    double *bias;   /* (E) the state b */
    double *s;      /* (E) sigmoid scores of one token */
    double *key;    /* (E) s + b */
    moe_score_cfg sc;    /* the score path (score.h); sc.is_default: the code below */
    moe_score_tmp *tmp;  /* its scratch, when not the default */
    double bmin, bmax, margin; /* of the bias, for the batch being routed (dsv3_cands) */
} dsv3_ws;

static void dsv3_free(moe_router *r)
{
    dsv3_ws *w = r->ws;
    if (!w)
        return;
    moe_claims_free(w->cl);
    moe_score_tmp_free(w->tmp);
    free(w->bias);
    free(w->s);
    free(w->key);
    free(w);
    r->ws = NULL;
}

static int dsv3_alloc(moe_router *r)
{
    if (!(r->opts.bias_rate >= 0.0) || !isfinite(r->opts.bias_rate))
        return moe_fail(MOE_EINVAL, NULL, "bias_rate must be finite and >= 0 (got %g)",
                        r->opts.bias_rate);
    dsv3_ws *w = calloc(1, sizeof *w);
    if (!w)
        return moe_fail(MOE_ENOMEM, NULL, "out of memory (router dsv3_bias)");
    r->ws = w;
    int rc = moe_score_setup(&w->sc, &r->opts, r->k, r->E, MOE_SCORE_SIGMOID, 1, "dsv3_bias");
    if (rc) {
        dsv3_free(r);
        return rc;
    }
    if (!w->sc.is_default && !(w->tmp = moe_score_tmp_alloc(&w->sc, r->n_max))) {
        dsv3_free(r);
        return MOE_ENOMEM;
    }
    const size_t E = (size_t)r->E;
    w->cl = moe_claims_alloc(r->n_max, r->k, r->E, 1);
    w->bias = calloc(E, sizeof *w->bias);
    w->s = malloc(E * sizeof *w->s);
    w->key = malloc(E * sizeof *w->key);
    if (!w->cl || !w->bias || !w->s || !w->key) {
        dsv3_free(r);
        return moe_fail(MOE_ENOMEM, NULL, "out of memory (router dsv3_bias, %d tokens)",
                        r->n_max);
    }
    return MOE_OK;
}

const double *moe_dsv3_bias_state(const moe_router *r)
{
    if (!r || r->type != &moe_router_dsv3_bias || !r->ws)
        return NULL;
    return ((const dsv3_ws *)r->ws)->bias;
}

/* ---- routing ---- */

/* s (E) = sigmoid(lt) = 1 / (1 + exp(-lt)) and key (E) = s + b, eight experts at a time where
 * the CPU has AVX-512, four with AVX2 (the same operations on each element as the scalar loop,
 * so the same bits). exp(-L) by moe_vexp_shift, the C library's exp bit for bit. */
static void dsv3_scores(const double *lt, const double *b, int E, double *s, double *key)
{
    int e = 0;
#if defined(__AVX512F__)
    const __m512i sign = _mm512_set1_epi64((long long)0x8000000000000000ull);
    for (; e + 8 <= E; e += 8) /* -lt: the sign bit flipped */
        _mm512_storeu_si512((void *)(s + e),
                            _mm512_xor_si512(_mm512_loadu_si512((const void *)(lt + e)), sign));
#elif defined(__AVX2__)
    for (; e + 4 <= E; e += 4)
        _mm256_storeu_pd(s + e, _mm256_xor_pd(_mm256_loadu_pd(lt + e), _mm256_set1_pd(-0.0)));
#endif
    for (; e < E; e++)
        s[e] = -lt[e];
    moe_vexp_shift(s, E, 0.0, s);
    e = 0;
#if defined(__AVX512F__)
    const __m512d one = _mm512_set1_pd(1.0);
    for (; e + 8 <= E; e += 8) {
        const __m512d v = _mm512_div_pd(one, _mm512_add_pd(one, _mm512_loadu_pd(s + e)));
        _mm512_storeu_pd(s + e, v);
        _mm512_storeu_pd(key + e, _mm512_add_pd(v, _mm512_loadu_pd(b + e)));
    }
#elif defined(__AVX2__)
    const __m256d one = _mm256_set1_pd(1.0);
    for (; e + 4 <= E; e += 4) {
        const __m256d v = _mm256_div_pd(one, _mm256_add_pd(one, _mm256_loadu_pd(s + e)));
        _mm256_storeu_pd(s + e, v);
        _mm256_storeu_pd(key + e, _mm256_add_pd(v, _mm256_loadu_pd(b + e)));
    }
#endif
    for (; e < E; e++) {
        s[e] = 1.0 / (1.0 + s[e]);
        key[e] = s[e] + b[e];
    }
}

/* Token t's experts ex (k) and gates from the scores s and keys key of its n candidates, whose
 * experts are ci (n; NULL: the candidates are experts 0..n-1), in expert order. */
static void dsv3_choose(moe_claims *cl, int t, const double *s, const double *key,
                        const int32_t *ci, int n)
{
    const int k = cl->K;
    int32_t *ex = cl->expert + (size_t)t * k;
    double *g = cl->gate + (size_t)t * k;
    moe_claims_topk(key, n, k, ex, g); /* ties: lower candidate, so lower expert */
    double sum = 0.0;
    for (int j = 0; j < k; j++)
        sum += s[ex[j]];
    for (int j = 0; j < k; j++) {
        g[j] = s[ex[j]] / sum;
        cl->claim[(size_t)t * k + j] = 1;
    }
    for (int j = 0; ci && j < k; j++)
        ex[j] = ci[ex[j]];
}

/* Token t of logits lt (E): its scores into the scratch s and key (E), then its k experts and
 * gates. */
static void dsv3_token(dsv3_ws *w, int t, const double *lt, double *s, double *key)
{
    dsv3_scores(lt, w->bias, w->cl->E, s, key);
    dsv3_choose(w->cl, t, s, key, NULL, w->cl->E);
}

/* ---- candidates from the logits ----
 * The k experts of a token can be found without every expert's exponential. The largest logit
 * of each of eight lanes (experts e = i mod 8) belongs to eight distinct experts; for k <= 8
 * the smallest of them, lk, has at least k experts with L >= lk, whose keys are >=
 * sigmoid(lk) + bmin, so the k-th largest key is at least that. An expert with sigmoid(L) +
 * bmax below it cannot be chosen: every expert with L below logit(sigmoid(lk) + bmin - bmax -
 * margin) is left out, margin = 1e-9 (1 + max |b|), far above the rounding of the computed
 * scores, keys and logit (about 1e-15 (1 + max |b|) with the scores bounded away from 0 and 1
 * as below). The candidates (usually 10-30 of 256) get their scores and keys exactly as
 * dsv3_scores computes them for every expert, so the selection and gates are the same bits. */

enum { DSV3_CAND_MAX = 512 };      /* experts handled this way; more: every expert scored */
/* and from how many: with AVX2 alone, from 65 (65536 tokens, two threads, best of 30, with the
 * metrics, k = 2 / 8: at E = 64 13.1-13.6 / 16.5-16.6 ms against 12.2-12.4 / 17.1-17.3 ms
 * scoring every expert, at 128 21.0-21.2 / 24.4-24.9 against 23.5-23.7 / 28.4-29.4, at 256
 * 34.9-35.5 / 38.3-39.6 against 45.6-46.6 / 51.7-53.4; at 8-32 up to 1.6x slower: three calls
 * of the C library a row, and few experts left out) */
#if defined(__AVX512F__)
enum { DSV3_CAND_MIN = 8 };
#else
enum { DSV3_CAND_MIN = 65 };
#endif
#define DSV3_SAFE 1e-6             /* sigmoid(lk) + bmin - bmax - margin in (SAFE, 1 - SAFE) */

#if defined(__AVX512F__) || defined(__AVX2__)
/* The smallest of the eight lane maxima of lt (E >= 8): lane l the largest logit of the experts
 * e = l mod 8 (eight distinct experts), the last block padded with -inf. */
static double dsv3_lane_min(const double *lt, int E)
{
#if defined(__AVX512F__)
    const __m512d ninf = _mm512_set1_pd(-INFINITY);
    __m512d m0 = ninf, m1 = ninf;
    int e = 0;
    for (; e + 16 <= E; e += 16) {
        m0 = _mm512_max_pd(m0, _mm512_loadu_pd(lt + e));
        m1 = _mm512_max_pd(m1, _mm512_loadu_pd(lt + e + 8));
    }
    for (; e < E; e += 8) {
        const __mmask8 ld = E - e >= 8 ? 0xff : (__mmask8)((1u << (E - e)) - 1u);
        m0 = _mm512_max_pd(m0, _mm512_mask_loadu_pd(ninf, ld, lt + e));
    }
    return _mm512_reduce_min_pd(_mm512_max_pd(m0, m1));
#else /* lanes 0..3 in a, 4..7 in b */
    __m256d a = _mm256_set1_pd(-INFINITY), b = a;
    int e = 0;
    for (; e + 8 <= E; e += 8) {
        a = _mm256_max_pd(a, _mm256_loadu_pd(lt + e));
        b = _mm256_max_pd(b, _mm256_loadu_pd(lt + e + 4));
    }
    double mx[8];
    _mm256_storeu_pd(mx, a);
    _mm256_storeu_pd(mx + 4, b);
    for (; e < E; e++)
        mx[e % 8] = lt[e] > mx[e % 8] ? lt[e] : mx[e % 8];
    double lk = mx[0];
    for (int l = 1; l < 8; l++)
        lk = mx[l] < lk ? mx[l] : lk;
    return lk;
#endif
}

/* The logits of lt (E) at or above lthr into cv and their experts into ci, in expert order;
 * returns their number (cv, ci: E + 8 places). */
static int dsv3_pack(const double *lt, int E, double lthr, double *cv, int32_t *ci)
{
#if defined(__AVX512F__)
    const __m512d ninf = _mm512_set1_pd(-INFINITY), thr = _mm512_set1_pd(lthr);
    __m512i iv = _mm512_set_epi64(7, 6, 5, 4, 3, 2, 1, 0);
    int n = 0;
    for (int e = 0; e < E; e += 8, iv = _mm512_add_epi64(iv, _mm512_set1_epi64(8))) {
        const __mmask8 ld = E - e >= 8 ? 0xff : (__mmask8)((1u << (E - e)) - 1u);
        const __m512d x = _mm512_mask_loadu_pd(ninf, ld, lt + e);
        const __mmask8 c = _mm512_mask_cmp_pd_mask(ld, x, thr, _CMP_GE_OQ);
        _mm512_storeu_pd(cv + n, _mm512_maskz_compress_pd(c, x));
        _mm256_storeu_si256((__m256i *)(ci + n),
                            _mm512_cvtepi64_epi32(_mm512_maskz_compress_epi64(c, iv)));
        n += __builtin_popcount(c);
    }
    return n;
#else
    return moe_select_pack(lt, E, lthr, 0, cv, ci);
#endif
}
#endif

/* 1 when token t was routed from its candidates, 0 when the caller must score every expert
 * (neither AVX-512 nor AVX2, k > 8, E outside DSV3_CAND_MIN..512, scores near 0 or 1, a wide
 * bias, non-finite logits). */
static int dsv3_cands(dsv3_ws *w, int t, const double *lt)
{
#if defined(__AVX512F__) || defined(__AVX2__)
    moe_claims *cl = w->cl;
    const int E = cl->E, k = cl->K;
    if (k > 8 || E < DSV3_CAND_MIN || E > DSV3_CAND_MAX)
        return 0;
    /* the smallest lane maximum: for k <= 8, k of the lane maxima are >= it */
    const double lk = dsv3_lane_min(lt, E);
    const double y = 1.0 / (1.0 + exp(-lk)) + w->bmin - w->bmax - w->margin;
    if (!(y > DSV3_SAFE && y < 1.0 - DSV3_SAFE))
        return 0;
    double cv[DSV3_CAND_MAX + 8], cb[DSV3_CAND_MAX], cs[DSV3_CAND_MAX], ck[DSV3_CAND_MAX];
    int32_t ci[DSV3_CAND_MAX + 8];
    const int n = dsv3_pack(lt, E, log(y) - log1p(-y), cv, ci); /* at or above logit(y) */
    if (n < k)
        return 0; /* not with finite logits: the lane maxima are candidates */
    for (int i = 0; i < n; i++)
        cb[i] = w->bias[ci[i]];
    dsv3_scores(cv, cb, n, cs, ck);
    dsv3_choose(cl, t, cs, ck, ci, n);
    return 1;
#else
    (void)w, (void)t, (void)lt;
    return 0;
#endif
}

enum { DSV3_ROW_MAX = 2048 }; /* experts whose scratch rows fit on a thread's stack */

/* The rows pass's per-token work (E <= DSV3_ROW_MAX): scratch on the calling thread's stack. */
static void dsv3_row(void *ctx, int t, const double *lt, const double *pt)
{
    (void)pt;
    if (dsv3_cands(ctx, t, lt))
        return;
    double s[DSV3_ROW_MAX], key[DSV3_ROW_MAX];
    dsv3_token(ctx, t, lt, s, key);
}

/* The rows pass's per-token work on the score path (score.h): scores from the logits lt and
 * the softmax pt into row t of the path's scratch, then the token's experts and weights. */
static void dsv3_score_row(void *ctx, int t, const double *lt, const double *pt)
{
    dsv3_ws *w = ctx;
    moe_claims *cl = w->cl;
    const int E = cl->E, k = cl->K;
    const size_t i0 = (size_t)t * k;
    double *st = w->tmp->s + (size_t)t * E;
    moe_score_apply(w->sc.score, lt, pt, E, st);
    moe_score_token(&w->sc, w->tmp, t, st, w->bias, cl->expert + i0, cl->gate + i0);
    for (int j = 0; j < k; j++)
        cl->claim[i0 + j] = 1;
}

static int dsv3_route(moe_router *r, const moe_route_in *in, moe_plan *plan)
{
    dsv3_ws *w = r->ws;
    moe_claims *cl = w->cl;
    const moe_route_opts *o = &r->opts;
    const int n = in->n, E = r->E, k = r->k;
    const int on_rows = !w->sc.is_default || E <= DSV3_ROW_MAX;
    w->bmin = w->bmax = w->bias[0];
    double babs = 0.0;
    for (int e = 0; e < E; e++) {
        w->bmin = w->bias[e] < w->bmin ? w->bias[e] : w->bmin;
        w->bmax = w->bias[e] > w->bmax ? w->bias[e] : w->bmax;
        babs = fabs(w->bias[e]) > babs ? fabs(w->bias[e]) : babs;
    }
    w->margin = 1e-9 * (1.0 + babs);
    moe_claims_scratch_p(cl, o->order); /* p is kept only for order probs */
    cl->stats_in_rows = on_rows;        /* the rows leave their claims final */
    int rc = moe_claims_rows(cl, in->logits, n,
                             !on_rows ? NULL : w->sc.is_default ? dsv3_row : dsv3_score_row, w,
                             plan);
    if (rc)
        return rc;
    for (int t = 0; !on_rows && t < n; t++)
        dsv3_token(w, t, in->logits + (size_t)t * E, w->s, w->key);
    const int limited = !o->dropless && (o->cf_set || o->capacity >= 0);
    long C = 0;
    if (limited && (rc = moe_capacity(o, k, n, E, &C)))
        return rc;
    cl->rts_u = in->rts_u; /* order rts */
    if ((rc = moe_claims_resolve(cl, n, o->order, C, !limited, o->renormalize, plan)))
        return rc;
    plan->aux_loss = 0.0;
    return MOE_OK;
}

/* b[e] += rate * sign(mean load - load[e]) from the batch just routed. */
static void dsv3_observe(moe_router *r, const moe_route_in *in, const moe_plan *plan)
{
    (void)in;
    dsv3_ws *w = r->ws;
    const int E = r->E;
    long total = 0;
    for (int e = 0; e < E; e++)
        total += plan->assigned_load[e];
    const double mean = (double)total / E, rate = r->opts.bias_rate;
    for (int e = 0; e < E; e++) {
        const double load = (double)plan->assigned_load[e];
        w->bias[e] += mean > load ? rate : mean < load ? -rate : 0.0;
    }
}

const moe_router_type moe_router_dsv3_bias = {
    "dsv3_bias",
    "DeepSeek-V3 aux-loss-free balancing: top-k of sigmoid + bias, bias updated per batch",
    MOE_RF_STATEFUL | MOE_RF_HAS_DROPLESS | MOE_RF_CHECKS_FINITE,
    2,
    dsv3_alloc,
    dsv3_free,
    dsv3_route,
    dsv3_observe,
};
