/* gshard.c: the `gshard` router (Lepikhin et al. 2020, Algorithm 1), docs/routing.md section 3.
 * Fills moe_router_gshard: e1 = argmax logit, e2 = argmax of the rest (ties to the lower
 * expert); g1, g2 = p1, p2 / (p1 + p2); the second expert is dispatched iff 2*g2 > u (strict),
 * or 2*p2 > u with threshold_on = raw. u comes from in->uniforms[t], else one
 * gsl_rng_uniform(in->rng) per token in token order (drawn for every token, needed or not, so
 * a replay with the recorded draws gives the same plan). A second choice that is not dispatched
 * claims no slot and is not counted in assigned_load or importance. Capacity with k = 2;
 * combine weights g1, g2 unless renormalize; aux_loss = E * sum_e c_e * P_e, c_e fraction of
 * tokens whose first choice is e.
 * opts.second_policy (the libraries' second_expert_policy):
 *   random     the rule above (fairseq and lingvo 'random', GShard Algorithm 1)
 *   all        the second choice is always dispatched (fairseq, lingvo 'all'; DeepSpeed top2gating)
 *   sampling   e2 = argmax over e != e1 of L[t,e] + G[t,e], G = -log(-log u[t,e]), and always
 *              dispatched (fairseq 'sampling', DeepSpeed top2gating top2_2nd_expert_sampling);
 *              u (T,E) from in->gumbel_u, else gsl_rng_uniform_pos(in->rng) row-major for every
 *              (t,e); g1, g2 from the clean p of e1 and e2
 *   threshold  dispatched iff g2 > opts.second_threshold, strictly (lingvo 'threshold', on the
 *              normalised g2)
 * Only random draws the (T) uniforms. */
#include "moe.h"
#include "claims.h"
#include "score.h"
#include "select.h"

#if defined(__AVX512F__) || defined(__AVX2__)
#include <immintrin.h>
#endif
#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    moe_claims *cl;
    double *u;   /* (T) the draws drawn here, when the group brings none */
    const double *ud; /* (T) the draws of the group: its own (moe_route_in uniforms) or u */
    int raw;     /* threshold_on = raw */
    moe_score_cfg sc;    /* the score path (score.h); sc.is_default: g = p / (p1 + p2) */
    moe_score_tmp *tmp;  /* its scratch, when not the default */
    int policy;  /* enum moe_second_policy */
    double thr;  /* second_threshold */
    double *gb;  /* (T,E) drawn Gumbel uniforms (policy sampling without a file), or NULL */
    const double *gu; /* (T,E) the Gumbel uniforms of the group */
    const double *logits; /* (T,E) the group's, while its rows pass runs */
} gshard_ws;

/* ---- workspace ---- */

static void gshard_free(moe_router *r)
{
    gshard_ws *w = r->ws;
    if (!w)
        return;
    moe_claims_free(w->cl);
    moe_score_tmp_free(w->tmp);
    free(w->u);
    free(w->gb);
    free(w);
    r->ws = NULL;
}

static int gshard_alloc(moe_router *r)
{
    if (r->k != 2)
        return moe_fail(MOE_EINPUT, "gshard routes every token to two experts; use topk or switch",
                        "gshard needs k = 2, got k = %d (k)", r->k);
    gshard_ws *w = calloc(1, sizeof *w);
    if (!w)
        return moe_fail(MOE_ENOMEM, NULL, "out of memory (router gshard)");
    r->ws = w;
    int rc = moe_score_setup(&w->sc, &r->opts, 2, r->E, MOE_SCORE_SOFTMAX, 1, "gshard");
    if (rc) {
        gshard_free(r);
        return rc;
    }
    w->cl = moe_claims_alloc(r->n_max, 2, r->E, 1);
    w->u = malloc((size_t)r->n_max * sizeof *w->u);
    if (!w->sc.is_default && r->opts.second_policy != MOE_SECOND_RANDOM) {
        gshard_free(r);
        return moe_fail(MOE_EINVAL, "use second_policy = random with a score option",
                        "gshard: second_policy other than random is not combined with a "
                        "non-default score path (score, normalize_topk, route_scale, groups)");
    }
    if (!w->sc.is_default && !(w->tmp = moe_score_tmp_alloc(&w->sc, r->n_max))) {
        gshard_free(r);
        return MOE_ENOMEM;
    }
    if (r->opts.second_policy == MOE_SECOND_SAMPLING)
        w->gb = malloc((size_t)r->n_max * (size_t)r->E * sizeof *w->gb);
    if (!w->cl || !w->u || (r->opts.second_policy == MOE_SECOND_SAMPLING && !w->gb)) {
        gshard_free(r);
        return moe_fail(MOE_ENOMEM, NULL, "out of memory (router gshard, %d tokens)", r->n_max);
    }
    return MOE_OK;
}

/* ---- routing ---- */


/* Token t's two choices and the draw test (runs on the routers' threads, see claims.h). */
static void gshard_row(void *ctx, int t, const double *lt, const double *pt)
{
    gshard_ws *w = ctx;
    moe_claims *cl = w->cl;
    const int E = cl->E;
    int32_t e1, e2; /* the first index of the maximum, then of the others' maximum */
    if ((cl->top2_rows || cl->rows_select) && cl->expert[(size_t)t * 2] >= 0) {
        /* the softmax's (claims.h top2_rows), or gshard_select_chunk's */
        e1 = cl->expert[(size_t)t * 2];
        e2 = cl->expert[(size_t)t * 2 + 1];
    } else if (!moe_claims_top2_row(cl, t, lt, &e1, &e2)) {
        e1 = moe_claims_argmax_row(cl, t, lt);
        e2 = moe_claims_argmax(lt, E, e1);
    }
    if (w->policy == MOE_SECOND_SAMPLING) { /* argmax of L + G over e != e1, ties to lower e */
        const double *u = w->gu + (size_t)t * E;
        double best = 0.0;
        e2 = -1;
        for (int e = 0; e < E; e++) {
            if (e == e1)
                continue;
            double v = lt[e] - log(-log(u[e]));
            if (e2 < 0 || v > best) {
                best = v;
                e2 = e;
            }
        }
    }
    double p1 = pt[e1], p2 = pt[e2];
    double g1 = p1 / (p1 + p2), g2 = p2 / (p1 + p2);
    double test = w->raw ? p2 : g2;
    size_t i = (size_t)t * 2;
    cl->expert[i] = e1;
    cl->gate[i] = g1;
    cl->claim[i] = 1;
    cl->expert[i + 1] = e2;
    cl->gate[i + 1] = g2;
    switch (w->policy) {
    case MOE_SECOND_RANDOM: cl->claim[i + 1] = 2.0 * test > w->ud[t]; break;
    case MOE_SECOND_THRESHOLD: cl->claim[i + 1] = g2 > w->thr; break;
    default: cl->claim[i + 1] = 1; break; /* all, sampling */
    }
}

#if defined(__AVX512F__) || !defined(__AVX2__)
/* The gates g1 = p1 / (p1 + p2), g2 = p2 / (p1 + p2) of eight tokens, and the bits of those
 * whose second choice claims: gshard_row's divisions and tests (2 test > u for random, g2 > thr
 * for threshold, every one for all) in vector lanes with AVX-512 (with AVX2 gshard_block8),
 * the same doubles. */
static unsigned gshard_gates8(const gshard_ws *w, const double *p1, const double *p2,
                              const double *u, double *g1, double *g2)
{
#if defined(__AVX512F__)
    const __m512d a = _mm512_loadu_pd(p1), b = _mm512_loadu_pd(p2), s = _mm512_add_pd(a, b);
    const __m512d ga = _mm512_div_pd(a, s), gb = _mm512_div_pd(b, s);
    const __m512d test = w->raw ? b : gb;
    __mmask8 keep = 0xff; /* all */
    if (w->policy == MOE_SECOND_RANDOM)
        keep = _mm512_cmp_pd_mask(_mm512_mul_pd(_mm512_set1_pd(2.0), test), _mm512_loadu_pd(u),
                                  _CMP_GT_OQ);
    else if (w->policy == MOE_SECOND_THRESHOLD)
        keep = _mm512_cmp_pd_mask(gb, _mm512_set1_pd(w->thr), _CMP_GT_OQ);
    _mm512_storeu_pd(g1, ga);
    _mm512_storeu_pd(g2, gb);
    return keep;
#else
    unsigned keep = 0;
    for (int i = 0; i < 8; i++) {
        g1[i] = p1[i] / (p1[i] + p2[i]);
        g2[i] = p2[i] / (p1[i] + p2[i]);
        const double test = w->raw ? p2[i] : g2[i];
        keep |= (unsigned)(w->policy == MOE_SECOND_RANDOM      ? 2.0 * test > u[i]
                           : w->policy == MOE_SECOND_THRESHOLD ? g2[i] > w->thr
                                                               : 1) << i;
    }
    return keep;
#endif
}
#endif

#if !defined(__AVX512F__) && defined(__AVX2__)
/* gshard_chunk8's eight tokens t.. (p their rows of p) with AVX2, when the softmax took every
 * one's two choices: four tokens at a time, p1 and p2 put in lanes from the rows (not through
 * memory, where four scalar stores then a vector load of them wait for the stores), the gates
 * interleaved by rank into cl->gate and the claims as bytes from a table, the same doubles as
 * gshard_gates8. */
static void gshard_block8(const gshard_ws *w, moe_claims *cl, long t, const double *p)
{
    /* the claims of four tokens, first choice then second: 1, keep bit i, for i = 0..3 (as
     * bytes of a little-endian word) */
    static const uint64_t claims4[16] = {
        0x0001000100010001, 0x0001000100010101, 0x0001000101010001, 0x0001000101010101,
        0x0001010100010001, 0x0001010100010101, 0x0001010101010001, 0x0001010101010101,
        0x0101000100010001, 0x0101000100010101, 0x0101000101010001, 0x0101000101010101,
        0x0101010100010001, 0x0101010100010101, 0x0101010101010001, 0x0101010101010101};
    for (int h = 0; h < 8; h += 4) {
        const int32_t *ex = cl->expert + (size_t)(t + h) * 2;
        const double *pt = p + (size_t)h * 8;
        const __m256d a = _mm256_set_pd(pt[24 + (ex[6] & 7)], pt[16 + (ex[4] & 7)],
                                        pt[8 + (ex[2] & 7)], pt[ex[0] & 7]);
        const __m256d b = _mm256_set_pd(pt[24 + (ex[7] & 7)], pt[16 + (ex[5] & 7)],
                                        pt[8 + (ex[3] & 7)], pt[ex[1] & 7]);
        const __m256d s = _mm256_add_pd(a, b);
        const __m256d ga = _mm256_div_pd(a, s), gb = _mm256_div_pd(b, s);
        const __m256d test = w->raw ? b : gb;
        int k = 0xf; /* all */
        if (w->policy == MOE_SECOND_RANDOM)
            k = _mm256_movemask_pd(_mm256_cmp_pd(_mm256_mul_pd(_mm256_set1_pd(2.0), test),
                                                 _mm256_loadu_pd(w->ud + t + h), _CMP_GT_OQ));
        else if (w->policy == MOE_SECOND_THRESHOLD)
            k = _mm256_movemask_pd(_mm256_cmp_pd(gb, _mm256_set1_pd(w->thr), _CMP_GT_OQ));
        const __m256d lo = _mm256_unpacklo_pd(ga, gb), hi = _mm256_unpackhi_pd(ga, gb);
        double *g = cl->gate + (size_t)(t + h) * 2;
        _mm256_storeu_pd(g, _mm256_permute2f128_pd(lo, hi, 0x20));
        _mm256_storeu_pd(g + 4, _mm256_permute2f128_pd(lo, hi, 0x31));
        memcpy(cl->claim + (size_t)(t + h) * 2, &claims4[k], sizeof claims4[k]);
    }
}
#endif

/* rows_chunk at E = 8 for the default score and the policies random, threshold and all:
 * gshard_row's work on tokens [t0, t1) whose two choices the softmax took (claims.h top2_rows),
 * eight tokens at a time (gshard_gates8); a group of eight holding a row it declined (a NaN),
 * and the last tokens, through gshard_row. */
static void gshard_chunk8(void *ctx, long t0, long t1, const double *p, int part)
{
    (void)part;
    gshard_ws *w = ctx;
    moe_claims *cl = w->cl;
    long t = t0;
    for (; t + 8 <= t1; t += 8) {
        int ok = 1;
        for (int i = 0; i < 8; i++)
            ok &= cl->expert[(size_t)(t + i) * 2] >= 0;
        if (!ok) {
            for (long q = t; q < t + 8; q++)
                gshard_row(w, (int)q, w->logits + (size_t)q * 8, p + (size_t)(q - t0) * 8);
            continue;
        }
#if !defined(__AVX512F__) && defined(__AVX2__)
        gshard_block8(w, cl, t, p + (size_t)(t - t0) * 8);
#else
        double p1[8], p2[8], g1[8], g2[8];
        for (int i = 0; i < 8; i++) {
            const int32_t *ex = cl->expert + (size_t)(t + i) * 2;
            const double *pt = p + (size_t)(t + i - t0) * 8;
            p1[i] = pt[ex[0] & 7];
            p2[i] = pt[ex[1] & 7];
        }
        const unsigned keep = gshard_gates8(w, p1, p2, w->ud + t, g1, g2);
        for (int i = 0; i < 8; i++) {
            const size_t q = (size_t)(t + i) * 2;
            cl->gate[q] = g1[i];
            cl->gate[q + 1] = g2[i];
            cl->claim[q] = 1;
            cl->claim[q + 1] = keep >> i & 1;
        }
#endif
    }
    for (; t < t1; t++)
        gshard_row(w, (int)t, w->logits + (size_t)t * 8, p + (size_t)(t - t0) * 8);
}

/* Token t through the score path (score.h): the two largest scores s1, s2 (group-limited when
 * asked), combine weights from score.h; the draw test on s2 / (s1 + s2), or s2 with
 * threshold_on = raw. */
static void gshard_score_row(void *ctx, int t, const double *lt, const double *pt)
{
    gshard_ws *w = ctx;
    moe_claims *cl = w->cl;
    const size_t i = (size_t)t * 2;
    double *st = w->tmp->s + (size_t)t * cl->E;
    moe_score_apply(w->sc.score, lt, pt, cl->E, st);
    moe_score_token(&w->sc, w->tmp, t, st, NULL, cl->expert + i, cl->gate + i);
    double s1 = st[cl->expert[i]], s2 = st[cl->expert[i + 1]];
    double test = w->raw ? s2 : s2 / (s1 + s2);
    cl->claim[i] = 1;
    cl->claim[i + 1] = 2.0 * test > w->ud[t];
}

/* rows_select of the rows pass at 64 experts (default score): the two choices of each
 * token of [t0, t1) by the selection before the softmax, four rows at a time in registers
 * (moe_claims_topk_rows: the first index of the largest, then of the largest of the others, as
 * gshard_row's scans take them), which spares the softmax each row's maximum and gshard_row its
 * scans; the softmax turns the values left in gate into exponentials, which gshard_row then
 * replaces by the gates. Measured against those scans, two threads: 4-8% faster at 64 experts,
 * no faster at 48 and 56, 1% slower at 40. */
static void gshard_select_chunk(void *ctx, long t0, long t1)
{
    const gshard_ws *w = ctx;
    moe_claims *cl = w->cl;
    moe_claims_topk_rows(w->logits + (size_t)t0 * cl->E, t1 - t0, cl->E, 2,
                         cl->expert + (size_t)t0 * 2, cl->gate + (size_t)t0 * 2);
}

static int gshard_route(moe_router *r, const moe_route_in *in, moe_plan *plan)
{
    gshard_ws *w = r->ws;
    const int n = in->n;
    w->cl->rts_u = in->rts_u;
    w->policy = r->opts.second_policy;
    w->thr = r->opts.second_threshold;
    if (w->policy == MOE_SECOND_RANDOM) {
        if (!in->uniforms && !in->rng)
            return moe_fail(MOE_EINVAL, "give a seed or a file of draws (--uniforms U.npy)",
                            "gshard needs uniform draws or a random generator (uniforms)");
        w->ud = in->uniforms; /* one draw per token in token order, needed or not */
        if (!w->ud) {
            moe_rng_uniform_fill(in->rng, w->u, n);
            w->ud = w->u;
        }
    } else if (w->policy == MOE_SECOND_SAMPLING) {
        if (!in->gumbel_u && !in->rng)
            return moe_fail(MOE_EINVAL, "give a seed or a file of draws (--gumbel-uniforms U.npy)",
                            "gshard sampling needs Gumbel draws or a random generator (uniforms)");
        w->gu = in->gumbel_u;
        if (!w->gu) {
            for (size_t i = 0; i < (size_t)n * r->E; i++)
                w->gb[i] = gsl_rng_uniform_pos(in->rng);
            w->gu = w->gb;
        }
    }
    w->raw = r->opts.threshold_on == MOE_THRESH_RAW;
    moe_claims_scratch_p(w->cl, r->opts.order); /* p only for orders bpr, probs */
    w->cl->stats_in_rows = 1; /* every row leaves its two claims final */
    if (w->sc.is_default && w->policy != MOE_SECOND_SAMPLING) { /* the two largest logits */
        plan->rows_topk = w->cl->expert;
        plan->rows_topk_k = 2;
    }
    w->cl->top2_rows = w->sc.is_default && r->E == 8;
    const int chunk8 = w->cl->top2_rows && w->policy != MOE_SECOND_SAMPLING;
    w->cl->rows_chunk = chunk8 ? gshard_chunk8 : NULL;
    w->cl->rows_select =
        w->sc.is_default && r->E == 64 ? gshard_select_chunk : NULL;
    w->logits = in->logits;
    int rc = moe_claims_rows(w->cl, in->logits, n,
                             chunk8               ? moe_claims_row_chunk
                             : w->sc.is_default ? gshard_row
                                                : gshard_score_row,
                             w, plan);
    w->cl->top2_rows = 0;
    w->cl->rows_chunk = NULL;
    w->cl->rows_select = NULL;
    w->logits = NULL;
    plan->rows_topk = NULL;
    if (rc)
        return rc;
    return moe_claims_finish(w->cl, &r->opts, n, MOE_CLAIMS_AUX_FIRST, plan);
}

const moe_router_type moe_router_gshard = {
    "gshard",
    "GShard top-2 (Lepikhin 2020): second expert kept iff 2*g2 > u",
    MOE_RF_USES_RNG | MOE_RF_HAS_DROPLESS | MOE_RF_STREAM_GSHARD |
        MOE_RF_CHECKS_FINITE,
    2,
    gshard_alloc,
    gshard_free,
    gshard_route,
    NULL,
};
