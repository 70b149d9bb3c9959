/* claims_par.c: moe_claims_resolve on the routers' threads (claims_par.h), with the plan and
 * statistics of the serial definitions bit for bit, whatever the number of threads.
 *
 * Orders choice_major, token_major and bpr. A claim's slot is the number of claims on its
 * expert before it in the claim order, kept when below the capacity C. The claim order visits
 * the tokens by position r (token r, or for bpr the token at position r of the descending
 * stable order of the tokens' largest probability), and the positions are split into
 * contiguous parts, one per thread:
 *   1. each part counts its claims per (rank, expert) (choice_major and bpr: the order is rank,
 *      then position) or per expert (token_major: position, then rank); unless the rows pass
 *      has added the claim statistics already, each thread also adds the gates of one range
 *      of experts to importance, visiting every claim in token order (the order of the serial
 *      sum, so the sums are the same doubles);
 *   2. serially: the loads, the capacity (dropless: the largest load), each part's first slot
 *      per (rank, expert) as the prefix of the counts in claim order;
 *   3. each part numbers its claims from those first slots; in token order (choice_major,
 *      token_major) it writes its entries at once, else the entries follow from the slots.
 * bpr's order is a stable sort of the tokens by key, in parallel: the tokens are split by key
 * range at splitters taken from a sample of the keys (equal keys fall in one range, each range
 * keeps token order), and each range is sorted by the stable argsort (moe_argsort_desc).
 *
 * Orders probs, rts and gate: each expert keeps the C claims with the largest key, ties to the
 * lower claim index (the first C of a stable descending sort of its claims by key), and the
 * kept claims take slots in claim index order. No sort: the claims are grouped by expert in
 * claim index order (a counting pass and a scatter over token parts), then for each expert with
 * more than C claims (the others keep them all) their keys are gathered, the C-th largest key
 * thr is found by selection (three-way quickselect on a copy), and the claims with key > thr,
 * then the first ones with key == thr in claim index order up to C, are kept (one range of
 * experts per thread).
 *
 * Entries: each token part counts the claims it keeps, their prefix places the part's entries,
 * and each part writes them token-major (by token, then rank), renormalised per token as the
 * serial loop does.
 */
#include "claims_par.h"

#if defined(__AVX512F__) || defined(__AVX2__)
#include <immintrin.h>
#endif

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    moe_claims *c;
    moe_plan *plan;
    int n, KR;            /* KR: ranks counted apart (K for choice_major and bpr, else 1) */
    int renormalize, np;  /* np: parts (the same as pt.np) */
    int stats;            /* 0: assigned_load, importance and n_claims are already in the plan */
    long C;
    const int *perm;      /* (T) bpr: the token at each position of the claim order, or NULL */
    const double *key;    /* keyed orders: (T,E) by token and expert, or (T,K) by claim */
    int per_claim;
    long *cnt;            /* (np, KR, E) claims of each part, then the part's first slots */
    double *acc;          /* (np, E+1) each thread's importance sums */
    double *scratch;      /* (np, maxload) keyed orders: each part's copy of one expert's keys */
    long maxload;
    const long *t0;       /* (np + 1) the parts' first tokens, or NULL for moe_par_range's */
    moe_claims_parts pt;           /* each part's entries */
    long claims[MOE_PAR_MAX];      /* claims of each part */
} rp_job;

/* ---- counts and statistics ---- */

/* Tokens [lo, hi) of part i of np. */
static void rp_range(const rp_job *j, int i, int np, long *lo, long *hi)
{
    if (j->t0) {
        *lo = j->t0[i];
        *hi = j->t0[i + 1];
    } else {
        moe_par_range(j->n, i, np, lo, hi);
    }
}

/* Step 1 from the counts the rows pass left (claims.h part_cnt), for the same parts: 1 if it
 * took them. */
static int rp_count_from_rows(rp_job *j)
{
    moe_claims *c = j->c;
    const int K = c->K, E = c->E, ready = c->part_ready;
    c->part_ready = 0;
    if (!ready || j->stats || j->perm || c->part_np != j->np || c->part_t0[j->np] != j->n)
        return 0;
    for (int i = 0; i < j->np; i++) {
        long claims = 0;
        for (int k = 0; k < K; k++)
            for (int e = 0; e < E; e++) {
                const long m = c->part_cnt[((size_t)i * K + k) * E + e];
                j->cnt[((size_t)i * j->KR + (j->KR > 1 ? k : 0)) * E + e] += m;
                claims += m;
            }
        j->claims[i] = claims;
    }
    j->t0 = c->part_t0;
    return 1;
}

#if defined(__AVX512F__)
/* Counts of up to eight experts in one vector register, lane e (rp_count's claims, rp_assign's
 * next free slots): 64-bit lanes. */
typedef __m512i rp_cnt;

static inline rp_cnt rp_cnt_load(const long *next, int E)
{
    return _mm512_maskz_loadu_epi64((__mmask8)((1u << E) - 1u), next);
}

static inline void rp_cnt_store(long *next, int E, rp_cnt x)
{
    _mm512_mask_storeu_epi64(next, (__mmask8)((1u << E) - 1u), x);
}

/* Lane e of x. */
static inline long rp_lane(rp_cnt x, int e)
{
    return (long)_mm_cvtsi128_si64(
        _mm512_castsi512_si128(_mm512_permutexvar_epi64(_mm512_set1_epi64(e), x)));
}

/* x with lane e plus claim (0 or 1). */
static inline rp_cnt rp_cnt_bump(rp_cnt x, int e, int claim)
{
    return _mm512_mask_add_epi64(x, (__mmask8)((unsigned)claim << e), x, _mm512_set1_epi64(1));
}
#define RP_CNT_LANES 1
/* Whether every count of j fits a lane: always, in 64 bits. */
static inline int rp_cnt_fits(const rp_job *j)
{
    (void)j;
    return 1;
}
#elif defined(__AVX2__)
/* Without AVX-512: 32-bit lanes of one AVX2 register, taken only while every count stays below
 * 2^31 (rp_cnt_fits). */
typedef __m256i rp_cnt;

static inline rp_cnt rp_cnt_load(const long *next, int E)
{
    int32_t b[8] = {0};
    for (int e = 0; e < E; e++)
        b[e] = (int32_t)next[e];
    return _mm256_loadu_si256((const __m256i *)b);
}

static inline void rp_cnt_store(long *next, int E, rp_cnt x)
{
    int32_t b[8];
    _mm256_storeu_si256((__m256i *)b, x);
    for (int e = 0; e < E; e++)
        next[e] = b[e];
}

static inline long rp_lane(rp_cnt x, int e)
{
    return _mm_cvtsi128_si32(
        _mm256_castsi256_si128(_mm256_permutevar8x32_epi32(x, _mm256_set1_epi32(e))));
}

static inline rp_cnt rp_cnt_bump(rp_cnt x, int e, int claim)
{
    const __m256i at = _mm256_cmpeq_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
                                          _mm256_set1_epi32(e));
    return _mm256_add_epi32(x, _mm256_and_si256(at, _mm256_set1_epi32(claim)));
}
#define RP_CNT_LANES 1
/* A count or a next free slot is at most the claims of all n tokens. */
static inline int rp_cnt_fits(const rp_job *j)
{
    return (long)j->n * j->c->K <= INT32_MAX;
}
#endif

#if defined(RP_CNT_LANES)
/* The counts of rp_count for E <= 8 and K <= 8: each counted rank's counts in one vector
 * register (lane e), bumped without a branch on the claim; returns the claims. */
static inline __attribute__((always_inline)) long rp_count_k8(const rp_job *j, long lo, long hi,
                                                             long *cnt, const int K,
                                                             const int by_rank)
{
    const moe_claims *c = j->c;
    const int E = c->E, sets = by_rank ? K : 1;
    rp_cnt cv[8];
    long claims = 0;
#pragma GCC unroll 8
    for (int r = 0; r < sets; r++)
        cv[r] = rp_cnt_load(cnt + (size_t)r * E, E);
    for (long pos = lo; pos < hi; pos++) {
        const size_t q0 = (size_t)(j->perm ? j->perm[pos] : pos) * K;
#pragma GCC unroll 8
        for (int k = 0; k < K; k++) {
            const int claim = c->claim[q0 + k] != 0, r = by_rank ? k : 0;
            cv[r] = rp_cnt_bump(cv[r], c->expert[q0 + k], claim);
            claims += claim;
        }
    }
#pragma GCC unroll 8
    for (int r = 0; r < sets; r++)
        rp_cnt_store(cnt + (size_t)r * E, E, cv[r]);
    return claims;
}
#endif

/* Step 1 for part i: counts of its positions; importance of its experts over all tokens. */
static void rp_count(void *ctx, int i, int np)
{
    rp_job *j = ctx;
    const moe_claims *c = j->c;
    const int K = c->K, E = c->E, KR = j->KR;
    long lo, hi, e0, e1;
    moe_par_range(j->n, i, np, &lo, &hi);
    long *cnt = j->cnt + (size_t)i * KR * E, claims = 0;
#if defined(RP_CNT_LANES)
    if (E <= 8 && K <= 8 && rp_cnt_fits(j)) {
        claims = K == 1              ? rp_count_k8(j, lo, hi, cnt, 1, 0)
                 : K == 2 && KR > 1 ? rp_count_k8(j, lo, hi, cnt, 2, 1)
                 : K == 2           ? rp_count_k8(j, lo, hi, cnt, 2, 0)
                                    : rp_count_k8(j, lo, hi, cnt, K, KR > 1);
        lo = hi; /* counted */
    }
#endif
    for (long r = lo; r < hi; r++) {
        const size_t q0 = (size_t)(j->perm ? j->perm[r] : r) * K;
        for (int k = 0; k < K; k++)
            if (c->claim[q0 + k]) {
                cnt[(size_t)(KR > 1 ? k : 0) * E + c->expert[q0 + k]]++;
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

/* Step 2: loads, capacity, and each part's first slots (in place of the counts) in claim
 * order (rank, part, expert); c->fill and maxload: the claims per expert and their maximum
 * (then, when c->first_ready is set, c->fill the first choices per expert instead).
 * kept_by_part: also each part's kept claims (j->pt.kept), for a claim order that is token
 * order. */
static int rp_prefix(rp_job *j, int dropless, int kept_by_part)
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
    /* run: claims on e so far in claim order; rank0: the claims of rank 0 on e */
    long *run = calloc(2 * (size_t)E, sizeof *run), *rank0 = run + E;
    if (!run)
        return moe_fail(MOE_ENOMEM, NULL, "out of memory (claims of %d experts)", E);
    size_t kept[MOE_PAR_MAX] = {0};
    long firsts = 0; /* claims of rank 0 (KR > 1) */
    for (int r = 0; r < KR; r++) {
        for (int i = 0; i < np; i++)
            for (int e = 0; e < E; e++) {
                long *q = &j->cnt[((size_t)i * KR + r) * E + e];
                const long first = run[e], n = *q;
                run[e] += n;
                *q = first;
                if (first < C)
                    kept[i] += (size_t)((first + n < C ? first + n : C) - first);
            }
        for (int e = 0; r == 0 && KR > 1 && e < E; e++)
            firsts += rank0[e] = run[e];
    }
    j->maxload = 0;
    for (int e = 0; e < E; e++) { /* this call's claims per expert, for the keyed orders */
        j->c->fill[e] = run[e];
        j->maxload = run[e] > j->maxload ? run[e] : j->maxload;
    }
    for (int i = 0; i < np && kept_by_part; i++)
        j->pt.kept[i] = kept[i];
    long claims = 0; /* this call's */
    for (int i = 0; i < np; i++)
        claims += j->claims[i];
    /* one choice a token, each claiming: fill holds every token's first choice per expert;
     * likewise, ranks counted apart, when every token's first choice claims (gshard's) */
    j->c->first_ready = kept_by_part && ((j->c->K == 1 && claims == j->n) ||
                                         (KR > 1 && firsts == j->n));
    for (int e = 0; KR > 1 && j->c->first_ready && e < E; e++)
        j->c->fill[e] = rank0[e];
    free(run);
    return MOE_OK;
}

/* ---- entries ---- */

/* Token t's entries from its claims' slots s (K), at *en: token-major by rank, weights
 * renormalised as the serial loop does; rank_claims / rank_kept of ranks 0 and 1 into rc, rk. */
static inline __attribute__((always_inline)) void
rp_token_entries_k(const rp_job *j, long t, const long *s, moe_entry **en, long rc[2], long rk[2],
                   const int K)
{
    const moe_claims *c = j->c;
    const size_t q0 = (size_t)t * K;
    double sum = 0.0;
#pragma GCC unroll 8
    for (int r = 0; r < K; r++)
        if (s[r] >= 0)
            sum += c->gate[q0 + r];
#pragma GCC unroll 8
    for (int r = 0; r < K; r++) {
        const size_t q = q0 + r;
        if (r < 2) {
            rc[r] += c->claim[q];
            rk[r] += s[r] >= 0;
        }
        if (s[r] < 0)
            continue;
        const double g = c->gate[q];
        *(*en)++ = (moe_entry){(int32_t)t, c->expert[q], (int32_t)s[r], 1.0,
                               (j->renormalize && sum > 0.0) ? g / sum : g};
    }
}

static void rp_token_entries(const rp_job *j, long t, const long *s, moe_entry **en, long rc[2],
                             long rk[2])
{
    rp_token_entries_k(j, t, s, en, rc, rk, j->c->K);
}

void moe_claims_parts_ranks(moe_claims_parts *p, int i, const long rc[2], const long rk[2])
{
    for (int r = 0; r < 2; r++) {
        p->rank_claims[i][r] = rc[r];
        p->rank_kept[i][r] = rk[r];
    }
}

int moe_claims_parts_write(moe_claims_parts *p, moe_plan *plan, void (*write)(void *, int, int),
                           void *ctx, int observe)
{
    size_t at = 0;
    for (int i = 0; i < p->np; i++) {
        p->ent0[i] = plan->n_entries + at;
        at += p->kept[i];
    }
    int rc = moe_plan_reserve(plan, at);
    if (rc)
        return rc;
    p->obs = observe && plan->ents_begin && plan->n_entries == 0 &&
             plan->ents_begin(plan->ents_ctx, plan, p->np);
    moe_par_run(write, ctx, p->np);
    plan->n_entries += at;
    plan->ents_seen = p->obs;
    p->obs = 0;
    for (int i = 0; i < p->np; i++)
        for (int r = 0; r < 2; r++) {
            plan->rank_claims[r] += p->rank_claims[i][r];
            plan->rank_kept[r] += p->rank_kept[i][r];
        }
    return MOE_OK;
}

/* Entries of token part i from c->slot: counting pass (kept[i]) or writing pass (at ent0[i]). */
static void rp_emit_count(void *ctx, int i, int np)
{
    rp_job *j = ctx;
    long lo, hi;
    moe_par_range(j->n, i, np, &lo, &hi);
    size_t kept = 0;
    for (size_t q = (size_t)lo * j->c->K; q < (size_t)hi * j->c->K; q++)
        kept += j->c->slot[q] >= 0;
    j->pt.kept[i] = kept;
}

/* Writes the entries of tokens [t0, t1) at en from their claims' next free slots next (or,
 * next NULL, from c->slot); returns where they end. */
typedef moe_entry *rp_tokens_fn(const rp_job *j, long t0, long t1, long *next, moe_entry *en,
                                long rc[2], long rk[2]);

/* Part i's entries (tokens [lo, hi)) at ent0[i] by write, in blocks shown to the plan's entries
 * observer when it looks (else one block), then the part's rank counts. */
static void rp_write_part(rp_job *j, int i, long lo, long hi, long *next, rp_tokens_fn *write)
{
    long rc[2] = {0, 0}, rk[2] = {0, 0};
    moe_entry *en = j->plan->entries + j->pt.ent0[i];
    const long B = j->pt.obs ? moe_claims_parts_block(j->c->K) : hi - lo;
    for (long t0 = lo, t1;; t0 = t1) { /* (one block with t0 = t1 = lo for an empty part) */
        t1 = hi - t0 > B ? t0 + B : hi;
        moe_entry *const a = en;
        en = write(j, t0, t1, next, en, rc, rk);
        moe_claims_parts_seen(&j->pt, j->plan, i, lo, hi, t0, t1, a, en);
        if (t1 == hi)
            break;
    }
    moe_claims_parts_ranks(&j->pt, i, rc, rk);
}

static moe_entry *rp_emit_tokens(const rp_job *j, long t0, long t1, long *next, moe_entry *en,
                                 long rc[2], long rk[2])
{
    (void)next;
    for (long t = t0; t < t1; t++)
        rp_token_entries(j, t, j->c->slot + (size_t)t * j->c->K, &en, rc, rk);
    return en;
}

static void rp_emit(void *ctx, int i, int np)
{
    long lo, hi;
    moe_par_range(((rp_job *)ctx)->n, i, np, &lo, &hi);
    rp_write_part(ctx, i, lo, hi, NULL, rp_emit_tokens);
}

/* ---- choice_major, token_major, bpr ---- */

/* The slots s (K) of the claims q0.. of one token, from the next free slots next (KR, E): -1
 * for no claim or a claim beyond the capacity. */
static inline __attribute__((always_inline)) void rp_take(const rp_job *j, size_t q0, long *next,
                                                          long *s, const int K)
{
    const moe_claims *c = j->c;
    const int E = c->E, KR = j->KR;
#pragma GCC unroll 8
    for (int k = 0; k < K; k++) {
        const size_t q = q0 + k;
        long v = -1;
        if (c->claim[q]) {
            v = next[(size_t)(KR > 1 ? k : 0) * E + c->expert[q]]++;
            v = v < j->C ? v : -1;
        }
        s[k] = v;
    }
}

#if defined(__AVX512F__) || defined(__AVX2__)
/* rp_token_entries_k for K = 8 without renormalising, when every claim of token t is kept: its
 * eight entries built in vector registers (the token and the expert as one 64-bit lane, the
 * slot with its padding zero, the dispatch weight 1, the gate), eight or four stores instead
 * of forty. Returns 0 (nothing written) when a claim is not kept. */
_Static_assert(sizeof(moe_entry) == 32 && offsetof(moe_entry, slot) == 8 &&
                   offsetof(moe_entry, dispatch_w) == 16 && offsetof(moe_entry, combine_w) == 24,
               "rp_entries8 builds entries of this layout");
static inline int rp_entries8(const moe_claims *c, long t, const long *s, moe_entry **en,
                              long rc[2], long rk[2])
{
    const size_t q0 = (size_t)t * 8;
    if ((s[0] | s[1] | s[2] | s[3] | s[4] | s[5] | s[6] | s[7]) < 0) /* a slot of -1 */
        return 0;
    double *out = (double *)*en;
#if defined(__AVX512F__)
    /* (from the scalars: a vector load of the eight just stored would wait for them) */
    const __m512i sv = _mm512_set_epi64(s[7], s[6], s[5], s[4], s[3], s[2], s[1], s[0]);
    const __m512i te = _mm512_or_si512(
        _mm512_set1_epi64((int64_t)(uint32_t)t),
        _mm512_slli_epi64(_mm512_cvtepu32_epi64(
                              _mm256_loadu_si256((const __m256i *)(c->expert + q0))), 32));
    const __m512d g = _mm512_loadu_pd(c->gate + q0), one = _mm512_set1_pd(1.0);
#pragma GCC unroll 4
    for (int h = 0; h < 4; h++) { /* entries 2h and 2h + 1 */
        const int a = 2 * h, b = 2 * h + 1;
        const __m512i ts = _mm512_permutex2var_epi64(
            te, _mm512_set_epi64(0, 0, 8 + b, b, 0, 0, 8 + a, a), sv);
        const __m512d x = _mm512_permutex2var_pd(_mm512_castsi512_pd(ts),
                                                 _mm512_set_epi64(8 + b, 0, 5, 4, 8 + a, 0, 1, 0),
                                                 g);
        _mm512_storeu_pd(out + 8 * h, _mm512_mask_blend_pd(0x44, x, one));
    }
#else
    /* four entries at a time: the four registers (token and expert, slot, 1, gate) transposed */
    const __m256d one = _mm256_set1_pd(1.0);
    const __m256i tt = _mm256_set1_epi64x((int64_t)(uint32_t)t);
#pragma GCC unroll 2
    for (int h = 0; h < 2; h++) { /* entries 4h .. 4h + 3 */
        const __m256d te = _mm256_castsi256_pd(_mm256_or_si256(
            tt, _mm256_slli_epi64(_mm256_cvtepu32_epi64(_mm_loadu_si128(
                                      (const __m128i *)(c->expert + q0 + 4 * h))),
                                  32)));
        const __m256d sv = _mm256_castsi256_pd(
            _mm256_set_epi64x(s[4 * h + 3], s[4 * h + 2], s[4 * h + 1], s[4 * h]));
        const __m256d g = _mm256_loadu_pd(c->gate + q0 + 4 * h);
        const __m256d a = _mm256_unpacklo_pd(te, sv), b = _mm256_unpackhi_pd(te, sv);
        const __m256d x = _mm256_unpacklo_pd(one, g), y = _mm256_unpackhi_pd(one, g);
        _mm256_storeu_pd(out + 16 * h, _mm256_permute2f128_pd(a, x, 0x20));
        _mm256_storeu_pd(out + 16 * h + 4, _mm256_permute2f128_pd(b, y, 0x20));
        _mm256_storeu_pd(out + 16 * h + 8, _mm256_permute2f128_pd(a, x, 0x31));
        _mm256_storeu_pd(out + 16 * h + 12, _mm256_permute2f128_pd(b, y, 0x31));
    }
#endif
    *en += 8;
    rc[0] += c->claim[q0]; /* (all eight kept, so all eight claimed) */
    rc[1] += c->claim[q0 + 1];
    rk[0]++;
    rk[1]++;
    return 1;
}
#define RP_ENTRIES8 1
#endif

/* Step 3 for tokens [lo, hi) in token order with K choices each: their slots, then their
 * entries at en (the compiler unrolls the ranks for a constant K). */
static inline __attribute__((always_inline)) moe_entry *
rp_assign_k(const rp_job *j, long lo, long hi, long *next, moe_entry *en, long rc[2], long rk[2],
            const int K)
{
    long slot[MOE_CLAIMS_PAR_MAX_K] = {0};
    for (long r = lo; r < hi; r++) {
        const size_t q0 = (size_t)r * K;
        rp_take(j, q0, next, slot, K);
#if defined(RP_ENTRIES8)
        if (K == 8 && !j->renormalize && rp_entries8(j->c, r, slot, &en, rc, rk))
            continue;
#endif
        rp_token_entries_k(j, r, slot, &en, rc, rk, K);
    }
    return en;
}

#if defined(RP_CNT_LANES)
/* rp_assign_k for E <= 8 and K <= 8: each counted rank's next free slots in one vector register
 * (lane e), read and bumped there, without a branch on the claim, instead of through memory,
 * where an increment waits on the last store to the same count (or replays after a load that
 * ran ahead of it). */
static inline __attribute__((always_inline)) moe_entry *
rp_assign_k8(const rp_job *j, long lo, long hi, long *next, moe_entry *en, long rc[2], long rk[2],
             const int K, const int by_rank)
{
    const moe_claims *c = j->c;
    const int E = c->E, sets = by_rank ? K : 1;
    rp_cnt nv[8];
#pragma GCC unroll 8
    for (int r = 0; r < 8; r++) /* (all eight set: the compiler cannot tell sets <= 8) */
        nv[r] = r < sets ? rp_cnt_load(next + (size_t)r * E, E) : rp_cnt_load(next, 0);
    long slot[8] = {0};
    for (long t = lo; t < hi; t++) {
        const size_t q0 = (size_t)t * K;
#pragma GCC unroll 8
        for (int k = 0; k < K; k++) {
            const int e = c->expert[q0 + k], r = by_rank ? k : 0, claim = c->claim[q0 + k] != 0;
            const long v = rp_lane(nv[r], e);
            nv[r] = rp_cnt_bump(nv[r], e, claim);
            slot[k] = claim && v < j->C ? v : -1;
        }
#if defined(RP_ENTRIES8)
        if (K == 8 && !j->renormalize && rp_entries8(c, t, slot, &en, rc, rk))
            continue;
#endif
        rp_token_entries_k(j, t, slot, &en, rc, rk, K);
    }
#pragma GCC unroll 8
    for (int r = 0; r < sets; r++)
        rp_cnt_store(next + (size_t)r * E, E, nv[r]);
    return en;
}
#endif

/* Step 3 for tokens [lo, hi) of a part in token order: their slots from the next free slots,
 * and their entries at en; returns where they end. */
static moe_entry *rp_assign_tokens(const rp_job *j, long lo, long hi, long *next, moe_entry *en,
                                   long rc[2], long rk[2])
{
    const int K = j->c->K, E = j->c->E, KR = j->KR;
#if defined(RP_CNT_LANES)
    if (E <= 8 && K <= 8 && rp_cnt_fits(j)) {
        /* K and the counted ranks constants: the counters' registers known at each claim */
        if (K == 1)
            return rp_assign_k8(j, lo, hi, next, en, rc, rk, 1, 0);
        if (K == 2 && KR > 1)
            return rp_assign_k8(j, lo, hi, next, en, rc, rk, 2, 1);
        if (K == 2)
            return rp_assign_k8(j, lo, hi, next, en, rc, rk, 2, 0);
        if (K == 8 && KR > 1)
            return rp_assign_k8(j, lo, hi, next, en, rc, rk, 8, 1);
        return rp_assign_k8(j, lo, hi, next, en, rc, rk, K, KR > 1);
    }
#else
    (void)E;
    (void)KR;
#endif
    if (K == 1) /* K a constant: the ranks unrolled (switch, topk k = 1; gshard, topk k = 2) */
        return rp_assign_k(j, lo, hi, next, en, rc, rk, 1);
    if (K == 2)
        return rp_assign_k(j, lo, hi, next, en, rc, rk, 2);
    if (K == 8)
        return rp_assign_k(j, lo, hi, next, en, rc, rk, 8);
    return rp_assign_k(j, lo, hi, next, en, rc, rk, K);
}

/* Step 3 for part i: slots from the part's first slots; in token order also its entries at
 * ent0[i] (shown to the plan's entries observer block by block), else (bpr) the slots into
 * c->slot. */
static void rp_assign(void *ctx, int i, int np)
{
    rp_job *j = ctx;
    moe_claims *c = j->c;
    const int K = c->K, E = c->E, KR = j->KR;
    long lo, hi;
    rp_range(j, i, np, &lo, &hi);
    long *next = j->cnt + (size_t)i * KR * E;
    if (j->perm) { /* bpr: the slots only, visiting the tokens in its order */
        for (long r = lo; r < hi; r++)
            rp_take(j, (size_t)j->perm[r] * K, next, c->slot + (size_t)j->perm[r] * K, K);
        return;
    }
    rp_write_part(j, i, lo, hi, next, rp_assign_tokens);
}

/* bpr keys: c->val[t] = max_e p[t,e], as the serial loop takes it. */
static void rp_bpr_keys(void *ctx, int i, int np)
{
    rp_job *j = ctx;
    const moe_claims *c = j->c;
    long lo, hi;
    moe_par_range(j->n, i, np, &lo, &hi);
    for (long t = lo; t < hi; t++) {
        const double *pt = c->p + (size_t)t * c->E;
        c->val[t] = pt[moe_claims_argmax(pt, c->E, -1)];
    }
}

/* The stable descending argsort of v (T) in parallel, into order (T): ranges of keys split at
 * splitters sp[1..np-1] (descending), range b = the number of splitters above the key. */
typedef struct {
    const double *v;
    int n, np;
    double sp[MOE_PAR_MAX];
    long cnt[MOE_PAR_MAX][MOE_PAR_MAX]; /* [part][range]: counts, then first positions */
    long start[MOE_PAR_MAX + 1];        /* each range's first position */
    int *tok, *order, *idx, *tmp;       /* (T) each */
    double *kv;                         /* (T) the keys in range order */
} psort_job;

static int psort_range(const psort_job *s, double x)
{
    int b = 0;
    while (b + 1 < s->np && x < s->sp[b + 1])
        b++;
    return b;
}

static void psort_count(void *ctx, int i, int np)
{
    psort_job *s = ctx;
    long lo, hi;
    moe_par_range(s->n, i, np, &lo, &hi);
    for (long t = lo; t < hi; t++)
        s->cnt[i][psort_range(s, s->v[t])]++;
}

static void psort_scatter(void *ctx, int i, int np)
{
    psort_job *s = ctx;
    long lo, hi;
    moe_par_range(s->n, i, np, &lo, &hi);
    for (long t = lo; t < hi; t++) {
        const long at = s->cnt[i][psort_range(s, s->v[t])]++;
        s->tok[at] = (int)t;
        s->kv[at] = s->v[t];
    }
}

static void psort_sort(void *ctx, int b, int np)
{
    (void)np;
    psort_job *s = ctx;
    const long lo = s->start[b], len = s->start[b + 1] - lo;
    moe_argsort_desc(s->kv + lo, (int)len, s->idx + lo, s->tmp + lo);
    for (long r = 0; r < len; r++)
        s->order[lo + r] = s->tok[lo + s->idx[lo + r]];
}

static int cmp_desc(const void *a, const void *b)
{
    const double x = *(const double *)a, y = *(const double *)b;
    return (x < y) - (x > y);
}

static int rp_bpr_order(rp_job *j)
{
    moe_claims *c = j->c;
    const int n = j->n, np = j->np;
    enum { SAMPLE = 1024 };
    psort_job s = {.v = c->val, .n = n, .np = np, .order = c->order, .tok = c->list};
    s.idx = c->tmp;
    s.tmp = malloc((size_t)n * sizeof *s.tmp);
    s.kv = malloc((size_t)n * sizeof *s.kv);
    if (!s.tmp || !s.kv) {
        free(s.tmp);
        free(s.kv);
        return moe_fail(MOE_ENOMEM, NULL, "out of memory (claim order of %d tokens)", n);
    }
    /* splitters: quantiles of an evenly spaced sample of the keys (any splitters give the same
     * order; these balance the ranges) */
    double smp[SAMPLE];
    const int ns = n < SAMPLE ? n : SAMPLE;
    for (int q = 0; q < ns; q++)
        smp[q] = c->val[(long)q * n / ns];
    qsort(smp, (size_t)ns, sizeof *smp, cmp_desc);
    for (int b = 1; b < np; b++)
        s.sp[b] = smp[(long)b * ns / np];
    moe_par_run(psort_count, &s, np);
    long at = 0;
    for (int b = 0; b < np; b++) {
        s.start[b] = at;
        for (int i = 0; i < np; i++) {
            const long m = s.cnt[i][b];
            s.cnt[i][b] = at;
            at += m;
        }
    }
    s.start[np] = at;
    moe_par_run(psort_scatter, &s, np);
    moe_par_run(psort_sort, &s, np);
    free(s.tmp);
    free(s.kv);
    return MOE_OK;
}

/* ---- probs, rts, gate ---- */

static void swap_d(double *a, double *b)
{
    const double t = *a;
    *a = *b;
    *b = t;
}

/* The k-th largest (1 <= k <= len) of a[0..len), which it permutes: three-way quickselect
 * (-0.0 and +0.0 count as equal, as the comparisons of the sort do), the rest of a long
 * search by qsort. */
double moe_claims_kth_largest(double *a, long len, long k)
{
    long lo = 0, hi = len;
    k--;
    for (int it = 0; hi - lo > 16 && it < 64; it++) {
        double x = a[lo], y = a[lo + (hi - lo) / 2], z = a[hi - 1], p;
        p = x < y ? (y < z ? y : x < z ? z : x) : (x < z ? x : y < z ? z : y); /* median */
        long gt = lo, i = lo, lt = hi; /* [lo,gt) > p, [gt,i) == p, [lt,hi) < p */
        while (i < lt) {
            if (a[i] > p)
                swap_d(&a[gt++], &a[i++]);
            else if (a[i] < p)
                swap_d(&a[i], &a[--lt]);
            else
                i++;
        }
        if (k < gt)
            hi = gt;
        else if (k < lt)
            return p;
        else
            lo = lt;
    }
    qsort(a + lo, (size_t)(hi - lo), sizeof *a, cmp_desc);
    return a[k];
}

/* Token part i: its claims into c->list at its first positions per expert (claim index order
 * within an expert); slot -1 on the choices that claim nothing. */
static void rp_key_scatter(void *ctx, int i, int np)
{
    rp_job *j = ctx;
    moe_claims *c = j->c;
    const int K = c->K;
    long lo, hi;
    moe_par_range(j->n, i, np, &lo, &hi);
    long *next = j->cnt + (size_t)i * c->E;
    for (size_t q = (size_t)lo * K; q < (size_t)hi * K; q++) {
        c->slot[q] = -1;
        if (c->claim[q])
            c->list[next[c->expert[q]]++] = (int)q;
    }
}

/* Experts [e0, e1) on part i: the kept claims and their slots. */
static void rp_key_select(void *ctx, int i, int np)
{
    rp_job *j = ctx;
    moe_claims *c = j->c;
    const int E = c->E;
    const long C = j->C, total = c->off[E];
    int e0 = 0, e1 = 0; /* the experts whose claims start in part i's share of the claims */
    while (e0 < E && c->off[e0] * np < total * i)
        e0++;
    e1 = e0;
    while (e1 < E && (i + 1 == np || c->off[e1] * np < total * (i + 1)))
        e1++;
    double *sc = j->scratch + (size_t)i * (size_t)j->maxload;
    for (int e = e0; e < e1; e++) {
        const long a = c->off[e], cnt = c->off[e + 1] - a;
        const int *li = c->list + a;
        double *kv = c->val + a; /* the keys in claim index order (only where some drop) */
        if (cnt <= C) {
            for (long q = 0; q < cnt; q++)
                c->slot[li[q]] = q;
            continue;
        }
        if (C <= 0)
            continue; /* slots already -1 */
        for (long q = 0; q < cnt; q++)
            kv[q] = j->per_claim ? j->key[li[q]]
                                 : j->key[(size_t)li[q] / c->K * (size_t)E + (size_t)e];
        memcpy(sc, kv, (size_t)cnt * sizeof *sc);
        const double thr = moe_claims_kth_largest(sc, cnt, C);
        long above = 0, s = 0;
        for (long q = 0; q < cnt; q++)
            above += kv[q] > thr;
        long eq_left = C - above; /* claims equal to thr kept, the first in claim order */
        for (long q = 0; q < cnt; q++) {
            const int keep = kv[q] > thr || (kv[q] == thr && eq_left-- > 0);
            c->slot[li[q]] = keep && s < C ? s++ : -1;
        }
    }
}

/* Orders probs, rts, gate after rp_count and rp_prefix (KR = 1): expert offsets, the claims
 * grouped by expert with their keys, the kept claims and their slots. */
static int rp_keyed(rp_job *j)
{
    moe_claims *c = j->c;
    const int E = c->E, np = j->np;
    c->off[0] = 0;
    for (int e = 0; e < E; e++) { /* c->fill: this call's claims per expert (rp_prefix) */
        c->off[e + 1] = c->off[e] + c->fill[e];
        for (int i = 0; i < np; i++)
            j->cnt[(size_t)i * E + e] += c->off[e];
    }
    moe_par_run(rp_key_scatter, j, np);
    j->scratch = malloc((size_t)np * (size_t)(j->maxload > 0 ? j->maxload : 1) *
                        sizeof *j->scratch);
    if (!j->scratch)
        return moe_fail(MOE_ENOMEM, NULL, "out of memory (claims of %ld on one expert)",
                        j->maxload);
    moe_par_run(rp_key_select, j, np);
    free(j->scratch);
    j->scratch = NULL;
    return MOE_OK;
}

/* ---- entries ---- */

int moe_claims_order_bpr(moe_claims *c, int n)
{
    rp_job j = {.c = c, .n = n};
    j.np = moe_par_parts(n, 16384);
    if (!c->bpr_ready) /* else the rows pass has left the keys in c->val */
        moe_par_run(rp_bpr_keys, &j, j.np);
    c->bpr_ready = 0;
    return rp_bpr_order(&j);
}

int moe_claims_resolve_par(moe_claims *c, int n, int order, long C, int dropless,
                           int renormalize, int stats, moe_plan *plan)
{
    const int K = c->K, E = c->E;
    const int token_order = order == MOE_ORDER_CHOICE_MAJOR || order == MOE_ORDER_TOKEN_MAJOR;
    rp_job j = {.c = c, .plan = plan, .n = n, .renormalize = renormalize, .stats = stats,
                .C = C};
    j.KR = order == MOE_ORDER_CHOICE_MAJOR || order == MOE_ORDER_BPR ? K : 1;
    j.np = j.pt.np = moe_claims_rows_parts(c, n); /* (the parts the rows pass counts for) */
    if (order == MOE_ORDER_PROBS || order == MOE_ORDER_RTS || order == MOE_ORDER_GATE) {
        j.key = order == MOE_ORDER_PROBS ? c->p : order == MOE_ORDER_RTS ? c->rts_u : c->gate;
        j.per_claim = order == MOE_ORDER_GATE;
    }
    j.cnt = calloc((size_t)j.np * j.KR * E, sizeof *j.cnt);
    j.acc = malloc((size_t)j.np * (E + 1) * sizeof *j.acc);
    if (!j.cnt || !j.acc) {
        free(j.cnt);
        free(j.acc);
        return moe_fail(MOE_ENOMEM, NULL, "out of memory (claims of %d tokens)", n);
    }
    int rc = MOE_OK;
    if (order == MOE_ORDER_BPR) { /* the visiting order of the tokens */
        if (!c->bpr_ready) /* else the rows pass has left the keys in c->val */
            moe_par_run(rp_bpr_keys, &j, j.np);
        c->bpr_ready = 0;
        rc = rp_bpr_order(&j);
        j.perm = c->order;
    }
    if (!rc && !(token_order && rp_count_from_rows(&j)))
        moe_par_run(rp_count, &j, j.np);
    c->part_ready = 0; /* (the counts of one rows pass serve one resolution) */
    if (!rc)
        rc = rp_prefix(&j, dropless, token_order);
    if (!rc && token_order) {
        rc = moe_claims_parts_write(&j.pt, plan, rp_assign, &j, 1);
    } else if (!rc) {
        if (order == MOE_ORDER_BPR)
            moe_par_run(rp_assign, &j, j.np);
        else
            rc = rp_keyed(&j);
        if (!rc) {
            moe_par_run(rp_emit_count, &j, j.np);
            rc = moe_claims_parts_write(&j.pt, plan, rp_emit, &j, 1);
        }
    }
    free(j.cnt);
    free(j.acc);
    return rc;
}
