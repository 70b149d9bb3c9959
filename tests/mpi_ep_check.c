/* mpi_ep_check.c: the expert-parallel layer of sim/mpi_ep.c under `mpirun -np P` (tests/t_mpi.sh
 * runs it with P = 1, 2 and 4; it also runs as one process without mpirun). For every case all
 * ranks build the same inputs from fixed seeds and route them (routing is replicated), then:
 *   - moe_ep_forward equals the single-process moe_layer_forward on the same plan: bit for bit
 *     for sparse plans (one entry per slot: the same rows reach the same FFN calls and are
 *     combined in plan order), within abs 1e-5 + rel 1e-4 for dense plans (soft_moe: the
 *     partial sums of a slot are added per source rank, so in another order);
 *   - with gather = 0 only this rank's token rows of y are written;
 *   - each rank's counts equal an independent recount from the plan (placement by ceil(qT/P) and
 *     ceil(qE/P), computed here as "smallest t with t*P >= q*T"; rows = distinct (expert, slot)
 *     pairs per source and destination rank, counted with a plain mark array), and over all
 *     ranks: entries on the experts sum to the plan's entries, rows sent = rows received,
 *     bytes_sent = bytes_recv = (rows_out + rows_in) * D * 4 on every rank;
 *   - the per-rank-capacity plan (DeepSpeed): its capacity is the sum over ranks of
 *     moe_capacity(k, n_q) computed here, rank q's entries use slots [off_q, off_q + C_q) and
 *     its tokens only, no expert takes more than C_q of them, dropped = claims - kept; with one
 *     rank it equals the global plan entry for entry; its expert-parallel output equals
 *     moe_layer_forward of the same plan bit for bit;
 *   - errors: E < P and T < P are refused by moe_ep_alloc, a plan of the wrong shape fails on
 *     every rank (no rank hangs in a collective);
 *   - moe_ep_local_work (the calibration benchmark's call) on a hand-worked plan (local_work);
 *   - padding to capacity (pad_checks, pad_empty_ranks): y bit for bit, rows run and rows sent
 *     (the function comments say what is expected and why).
 * Rank 0 prints "mpi_ep_check: N passed, N failed" with the counts summed over the ranks; every
 * rank exits non-zero on any failure.
 */
#include "check.h"
#include "layer.h"
#include "moe.h"
#include "moe_mpi.h"

#include <gsl/gsl_randist.h>
#include <string.h>

typedef struct {
    const char *name, *router;
    int T, E, d, f, act, k, m_per_e; /* m_per_e: soft_moe slots per expert (M = E * m_per_e) */
    const char *cf;                  /* NULL: router default */
    int dropless;
} ep_case;

static int P, me;

static float *normal_f(uint64_t seed, uint64_t stream, size_t n, double sigma)
{
    gsl_rng *r = moe_rng_alloc(seed, stream);
    float *v = malloc(n * sizeof *v);
    for (size_t i = 0; v && i < n; i++)
        v[i] = (float)gsl_ran_gaussian(r, sigma);
    gsl_rng_free(r);
    return v;
}

/* smallest t with t*P >= q*T, i.e. ceil(q*T/P), written independently of sim/mpi_proc.c */
static int start_of(int n, int q)
{
    int t = 0;
    while ((long long)t * P < (long long)q * n)
        t++;
    return t;
}

/* Independent recount of this rank's rows from the plan: distinct (expert, slot) pairs of its
 * tokens on other ranks' experts (out), of other ranks' tokens on its experts (in, counted per
 * source rank), and of its tokens on its experts (local). */
static void recount(const moe_plan *p, int T, int E, long *tokens, long *out, long *in,
                    long *local)
{
    const int t0 = start_of(T, me), t1 = start_of(T, me + 1);
    const int e0 = start_of(E, me), e1 = start_of(E, me + 1);
    const size_t C = (size_t)(p->capacity > 0 ? p->capacity : 1);
    unsigned char *mo = calloc((size_t)E * C, 1), *ml = calloc((size_t)E * C, 1);
    unsigned char *mi = calloc((size_t)P * E * C, 1);
    *tokens = *out = *in = *local = 0;
    for (size_t i = 0; i < p->n_entries; i++) {
        const moe_entry *en = &p->entries[i];
        int mine_t = en->token >= t0 && en->token < t1;
        int mine_e = en->expert >= e0 && en->expert < e1;
        size_t key = (size_t)en->expert * C + (size_t)en->slot;
        if (mine_e)
            (*tokens)++;
        if (mine_t && !mine_e && !mo[key]) {
            mo[key] = 1;
            (*out)++;
        }
        if (mine_t && mine_e && !ml[key]) {
            ml[key] = 1;
            (*local)++;
        }
        if (!mine_t && mine_e) {
            int src = 0;
            while (start_of(T, src + 1) <= en->token)
                src++;
            size_t k2 = (size_t)src * E * C + key;
            if (!mi[k2]) {
                mi[k2] = 1;
                (*in)++;
            }
        }
    }
    free(mo);
    free(ml);
    free(mi);
}

/* Count of floats that differ bit for bit (both NaN counts as equal) over rows [r0, r1). */
static long bit_diffs(const float *a, const float *b, int r0, int r1, int D)
{
    long n = 0;
    for (size_t i = (size_t)r0 * D; i < (size_t)r1 * D; i++)
        if (memcmp(&a[i], &b[i], sizeof a[i]) != 0)
            n++;
    return n;
}

/* Padding to capacity (moe_ep_set_pad_to_capacity) on the global plan and on the per-rank
 * plan up (built last on ep by moe_ep_plan_per_rank): y bit for bit the single-process unpadded
 * layer's; every local expert runs C rows (unpadded: up to its last filled slot, recounted here
 * from the plan); the global plan sends the same rows as unpadded (its empty slots are zero rows
 * on the expert's rank); the per-rank plan sends DeepSpeed's whole (E, C_q, D) buffer of rank q
 * (sharded_moe.py MOELayer: einsum "sec,sm->ecm", then _AllToAll over the ranks): rows_out =
 * (E - El) C_me, rows_local = El C_me, rows_in = El (sum of C_q - C_me), C_q = moe_capacity of
 * rank q's tokens as the per-rank checks above compute it. */
static void pad_checks(const ep_case *c, moe_ep *ep, moe_layer *L, const moe_experts *w,
                       const moe_plan *plan, const moe_plan *up, const float *x,
                       const moe_route_opts *o)
{
    const int T = plan->n, E = w->E, D = w->d;
    const int e0 = start_of(E, me), el = start_of(E, me + 1) - e0;
    float *y = malloc((size_t)T * D * sizeof *y), *yref = malloc((size_t)T * D * sizeof *yref);
    moe_ep_stats s0, s1;
    int rc = moe_layer_forward(L, w, plan, x, yref, NULL);
    moe_ep_set_pad_to_capacity(ep, 0);
    rc = rc ? rc : moe_ep_forward(ep, w, plan, x, y, 1, &s0);
    moe_ep_set_pad_to_capacity(ep, 1);
    rc = rc ? rc : moe_ep_forward(ep, w, plan, x, y, 1, &s1);
    CHECK(rc == 0, "%s: padded forward: %s", c->name, moe_errmsg());
    long used = 0;
    for (int e = e0; e < e0 + el; e++) {
        long hi = 0;
        for (size_t i = 0; i < plan->n_entries; i++)
            if (plan->entries[i].expert == e && plan->entries[i].slot + 1 > hi)
                hi = plan->entries[i].slot + 1;
        used += hi;
    }
    CHECK(bit_diffs(y, yref, 0, T, D) == 0, "%s: padded output differs from unpadded", c->name);
    CHECK(s0.rows_run == used && s1.rows_run == (long)el * plan->capacity,
          "%s: rank %d rows run %ld unpadded (want %ld), %ld padded (want %d x %ld)", c->name,
          me, s0.rows_run, used, s1.rows_run, el, plan->capacity);
    CHECK(s1.rows_out == s0.rows_out && s1.rows_in == s0.rows_in &&
          s1.rows_local == s0.rows_local && s1.bytes_sent == s0.bytes_sent,
          "%s: global plan padded sends %ld/%ld rows, unpadded %ld/%ld", c->name, s1.rows_out,
          s1.rows_in, s0.rows_out, s0.rows_in);

    /* the per-rank plan: padded rows sent as DeepSpeed sends them */
    rc = moe_layer_forward(L, w, up, x, yref, NULL);
    rc = rc ? rc : moe_ep_forward(ep, w, up, x, y, 1, &s1);
    CHECK(rc == 0, "%s: padded per-rank forward: %s", c->name, moe_errmsg());
    CHECK(bit_diffs(y, yref, 0, T, D) == 0, "%s: padded per-rank output differs", c->name);
    CHECK(s1.rows_run == (long)el * up->capacity, "%s: rank %d per-rank rows run %ld, want %d x "
          "%ld", c->name, me, s1.rows_run, el, up->capacity);
    CHECK(s1.bytes_sent == (double)(s1.rows_out + s1.rows_in) * D * sizeof(float),
          "%s: padded bytes %g for rows %ld + %ld", c->name, s1.bytes_sent, s1.rows_out,
          s1.rows_in);
    if (c->cf && !c->dropless && strcmp(c->router, "expert_choice") != 0) {
        long Cme = 0, sum = 0;
        for (int q = 0; q < P; q++) {
            long Cq;
            moe_capacity(o, plan->k > 0 ? plan->k : 1, start_of(T, q + 1) - start_of(T, q), E,
                         &Cq);
            sum += Cq;
            if (q == me)
                Cme = Cq;
        }
        CHECK(s1.rows_out == (E - el) * Cme && s1.rows_local == el * Cme &&
              s1.rows_in == el * (sum - Cme),
              "%s: rank %d padded per-rank rows out %ld local %ld in %ld, want %ld %ld %ld",
              c->name, me, s1.rows_out, s1.rows_local, s1.rows_in, (E - el) * Cme, el * Cme,
              el * (sum - Cme));
    }
    double sums[2] = {(double)s1.rows_out, (double)s1.rows_in};
    moe_mpi_sum(sums, 2);
    CHECK(sums[0] == sums[1], "%s: padded rows out %g, in %g over ranks", c->name, sums[0],
          sums[1]);
    moe_ep_set_pad_to_capacity(ep, 0);
    free(y);
    free(yref);
}

static void run_case(const ep_case *c)
{
    const int T = c->T, E = c->E, D = c->d, F = c->f;
    const int M = c->m_per_e ? E * c->m_per_e : E;
    const int FW = c->act == MOE_ACT_SWIGLU ? 2 * F : F;
    const uint64_t seed = 1234;
    float *x = normal_f(seed, 1, (size_t)T * D, 1.0);
    float *w1 = normal_f(seed, 2, (size_t)E * D * FW, 1.0 / sqrt((double)D));
    float *b1 = normal_f(seed, 3, (size_t)E * FW, 0.01);
    float *w2 = normal_f(seed, 4, (size_t)E * F * D, 1.0 / sqrt((double)F));
    float *b2 = normal_f(seed, 5, (size_t)E * D, 0.01);
    float *lf = normal_f(seed, 6, (size_t)T * M, 1.5);
    double *logits = malloc((size_t)T * M * sizeof *logits);
    int64_t *ids = malloc((size_t)T * sizeof *ids);
    for (size_t i = 0; i < (size_t)T * M; i++)
        logits[i] = lf[i];
    for (int t = 0; t < T; t++)
        ids[t] = (int64_t)((t * 7919) % 1000);
    const moe_experts w = {E, D, F, c->act, w1, b1, w2, b2, NULL};

    moe_route_opts o;
    moe_route_opts_default(&o);
    o.k = c->k;
    o.dropless = c->dropless;
    if (c->cf) {
        o.cf_set = 1;
        moe_decimal_parse(c->cf, &o.cf_num, &o.cf_den);
    }
    if (c->m_per_e)
        o.num_experts = E;
    moe_router *r = NULL;
    int rc = moe_router_alloc(moe_router_find(c->router), &o, T, M, &r);
    CHECK(rc == 0, "%s: router: %s", c->name, moe_errmsg());
    if (rc)
        return;
    gsl_rng *rng = moe_rng_alloc(seed, MOE_STREAM_GSHARD);
    moe_route_in in = {T, M, logits, ids, NULL, rng, NULL, NULL, 0, NULL, NULL};
    const size_t cap = (size_t)T * M + (size_t)T * E;
    moe_plan *plan = moe_plan_alloc(T, E, cap), *up = moe_plan_alloc(T, E, cap * P);
    rc = moe_router_route(r, &in, plan);
    CHECK(rc == 0, "%s: route: %s", c->name, moe_errmsg());

    /* single-process reference */
    long C = plan->capacity;
    moe_layer *L = moe_layer_alloc(T, E, C * P, D, F, c->act);
    float *yref = malloc((size_t)T * D * sizeof *yref), *y = malloc((size_t)T * D * sizeof *y);
    rc = moe_layer_forward(L, &w, plan, x, yref, NULL);
    CHECK(rc == 0, "%s: reference forward: %s", c->name, moe_errmsg());

    /* expert-parallel, gathered */
    moe_ep *ep = moe_ep_alloc(T, E, C, D, F, c->act, cap, 1);
    CHECK(ep != NULL, "%s: moe_ep_alloc: %s", c->name, moe_errmsg());
    if (!ep)
        return;
    moe_ep_stats st;
    for (size_t i = 0; i < (size_t)T * D; i++)
        y[i] = NAN;
    rc = moe_ep_forward(ep, &w, plan, x, y, 1, &st);
    CHECK(rc == 0, "%s: moe_ep_forward: %s", c->name, moe_errmsg());
    if (plan->dense) {
        double *a = malloc((size_t)T * D * sizeof *a), *b = malloc((size_t)T * D * sizeof *b);
        for (size_t i = 0; i < (size_t)T * D; i++) {
            a[i] = y[i];
            b[i] = yref[i];
        }
        check_close_arrays(c->name, a, b, (size_t)T * D, 1e-5, 1e-4);
        free(a);
        free(b);
    } else {
        long nd = bit_diffs(y, yref, 0, T, D);
        CHECK(nd == 0, "%s: %ld of %d output floats differ from the single-process layer",
              c->name, nd, T * D);
    }

    /* only this rank's rows without gather */
    const int t0 = start_of(T, me), t1 = start_of(T, me + 1);
    for (size_t i = 0; i < (size_t)T * D; i++)
        y[i] = NAN;
    rc = moe_ep_forward(ep, &w, plan, x, y, 0, NULL);
    long untouched = 0;
    for (size_t i = 0; i < (size_t)T * D; i++)
        untouched += isnan(y[i]) && (i < (size_t)t0 * D || i >= (size_t)t1 * D);
    CHECK(rc == 0 && untouched == (long)(T - (t1 - t0)) * D,
          "%s: gather = 0 wrote outside rows [%d,%d) (%ld of %ld left)", c->name, t0, t1,
          untouched, (long)(T - (t1 - t0)) * D);
    if (!plan->dense)
        CHECK(bit_diffs(y, yref, t0, t1, D) == 0, "%s: local rows differ without gather",
              c->name);

    /* counts against an independent recount */
    long tokens, out, inr, local;
    recount(plan, T, E, &tokens, &out, &inr, &local);
    CHECK(st.t0 == t0 && st.held == t1 - t0 && st.e0 == start_of(E, me) &&
          st.experts == start_of(E, me + 1) - start_of(E, me),
          "%s: placement t0=%d held=%d e0=%d experts=%d", c->name, st.t0, st.held, st.e0,
          st.experts);
    CHECK(st.tokens == tokens && st.rows_out == out && st.rows_in == inr &&
          st.rows_local == local,
          "%s: rank %d counts tokens %ld/%ld out %ld/%ld in %ld/%ld local %ld/%ld (got/want)",
          c->name, me, st.tokens, tokens, st.rows_out, out, st.rows_in, inr, st.rows_local,
          local);
    CHECK(st.bytes_sent == st.bytes_recv &&
          st.bytes_sent == (double)(st.rows_out + st.rows_in) * D * sizeof(float),
          "%s: bytes sent %g recv %g rows %ld+%ld", c->name, st.bytes_sent, st.bytes_recv,
          st.rows_out, st.rows_in);
    double sums[3] = {(double)st.tokens, (double)st.rows_out, (double)st.rows_in};
    moe_mpi_sum(sums, 3);
    CHECK(sums[0] == (double)plan->n_entries && sums[1] == sums[2],
          "%s: over ranks tokens %g of %zu entries, rows out %g in %g", c->name, sums[0],
          plan->n_entries, sums[1], sums[2]);

    /* DeepSpeed's per-rank capacity */
    gsl_rng **rngs = calloc((size_t)P, sizeof *rngs);
    for (int q = 0; q < P; q++)
        rngs[q] = moe_rng_alloc(seed, 100 + (uint64_t)q);
    long *claims = calloc((size_t)P, sizeof *claims), *dropped = calloc((size_t)P, sizeof *dropped);
    rc = moe_ep_plan_per_rank(ep, r, &in, rngs, up, claims, dropped);
    CHECK(rc == 0, "%s: per-rank plan: %s", c->name, moe_errmsg());
    if (c->cf && !c->dropless && !plan->dense && strcmp(c->router, "expert_choice") != 0) {
        long off = 0, bad = 0, over = 0, sumC = 0;
        for (int q = 0; q < P; q++) {
            long Cq;
            int kq = plan->k > 0 ? plan->k : 1;
            moe_capacity(&o, kq, start_of(T, q + 1) - start_of(T, q), E, &Cq);
            sumC += Cq;
            long *cnt = calloc((size_t)E, sizeof *cnt);
            size_t kept = 0;
            for (size_t i = 0; i < up->n_entries; i++) {
                const moe_entry *en = &up->entries[i];
                if (en->token < start_of(T, q) || en->token >= start_of(T, q + 1))
                    continue;
                kept++;
                bad += en->slot < off || en->slot >= off + Cq;
                if (++cnt[en->expert] > Cq)
                    over++;
            }
            /* every token claims k experts, except gshard's undrawn second choices */
            const long want_claims = (long)kq * (start_of(T, q + 1) - start_of(T, q));
            CHECK((claims[q] == want_claims || strcmp(c->router, "gshard") == 0) &&
                  dropped[q] == claims[q] - (long)kept,
                  "%s: rank %d claims %ld dropped %ld kept %zu", c->name, q, claims[q],
                  dropped[q], kept);
            free(cnt);
            off += Cq;
        }
        CHECK(up->capacity == sumC && bad == 0 && over == 0,
              "%s: per-rank plan capacity %ld (want %ld), %ld slots outside their rank's range, "
              "%ld over capacity", c->name, up->capacity, sumC, bad, over);
    }
    if (P == 1 && !(moe_router_find(c->router)->flags & MOE_RF_USES_RNG)) {
        int same = up->n_entries == plan->n_entries && up->capacity == plan->capacity;
        for (size_t i = 0; same && i < plan->n_entries; i++) {
            const moe_entry *u = &up->entries[i], *v = &plan->entries[i];
            same = u->token == v->token && u->expert == v->expert && u->slot == v->slot &&
                   u->dispatch_w == v->dispatch_w && u->combine_w == v->combine_w;
        }
        CHECK(same, "%s: with one rank the per-rank plan differs from the global plan",
              c->name);
    }
    rc = moe_ep_forward(ep, &w, up, x, y, 1, NULL);
    CHECK(rc == 0, "%s: forward of the per-rank plan: %s", c->name, moe_errmsg());
    rc = moe_layer_forward(L, &w, up, x, yref, NULL);
    CHECK(rc == 0, "%s: reference forward of the per-rank plan: %s", c->name, moe_errmsg());
    if (!up->dense)
        CHECK(bit_diffs(y, yref, 0, T, D) == 0, "%s: per-rank plan output differs", c->name);
    if (!plan->dense)
        pad_checks(c, ep, L, &w, plan, up, x, &o);

    for (int q = 0; q < P; q++)
        gsl_rng_free(rngs[q]);
    free(rngs);
    free(claims);
    free(dropped);
    moe_ep_free(ep);
    moe_layer_free(L);
    moe_plan_free(plan);
    moe_plan_free(up);
    moe_router_free(r);
    gsl_rng_free(rng);
    free(x), free(w1), free(b1), free(w2), free(b2), free(lf), free(logits), free(ids);
    free(y), free(yref);
}

static void error_paths(void)
{
    if (P > 1) {
        moe_clear_error();
        moe_ep *ep = moe_ep_alloc(64, P - 1, 16, 8, 8, MOE_ACT_RELU, 128, 0);
        CHECK(ep == NULL && strstr(moe_errmsg(), "E >= "), "E < P accepted: %s", moe_errmsg());
        moe_ep_free(ep);
        moe_clear_error();
        ep = moe_ep_alloc(P - 1, 8, 16, 8, 8, MOE_ACT_RELU, 128, 0);
        CHECK(ep == NULL && strstr(moe_errmsg(), "T >= "), "T < P accepted: %s", moe_errmsg());
        moe_ep_free(ep);
    }
    /* a plan of the wrong shape: refused on every rank, nobody waits */
    moe_clear_error();
    moe_ep *ep = moe_ep_alloc(32, 8, 8, 4, 4, MOE_ACT_RELU, 64, 0);
    moe_plan *p = moe_plan_alloc(16, 8, 16);
    moe_plan_reset(p, 16, 8, 8);
    p->capacity = 1;
    float buf[32 * 4] = {0};
    const moe_experts w = {8, 4, 4, MOE_ACT_RELU, buf, buf, buf, buf, NULL};
    int rc = moe_ep_forward(ep, &w, p, buf, buf, 1, NULL);
    CHECK(rc != 0 && strstr(moe_errmsg(), "16 tokens"), "wrong plan shape accepted: %s",
          moe_errmsg());
    /* an entry outside the capacity on one rank's plan only: every rank fails together */
    moe_clear_error();
    moe_plan_reset(p, 32, 8, 8);
    p->capacity = 1;
    moe_plan_push(p, 0, 0, me == 0 ? 5 : 0, 1.0, 1.0);
    rc = moe_ep_forward(ep, &w, p, buf, buf, 1, NULL);
    CHECK(rc != 0, "a bad plan on rank 0 did not fail rank %d", me);
    moe_clear_error();
    moe_plan_free(p);
    moe_ep_free(ep);
}

/* moe_ep_local_work, the calibration's benchmark: T = 16 P tokens, each with two claims
 * (experts 3t mod 8 and (3t + 4) mod 8, slots numbered per expert), dispatch and combine
 * weights 0.5. Each slot holds one token, so (hand-worked) a token's two send rows are 0.5 x[t]
 * and its output 0.5 (0.5 x[t]) + 0.5 (0.5 x[t]) = 0.5 x[t], exactly in binary floating point;
 * the rows of other ranks' tokens stay untouched. moe_ep_flush changes nothing. */
/* Padded, a rank whose experts receive no row still runs them at C rows: T = 2P tokens all on
 * expert 0 (slots 0..T-1, C = T + 2), E = P experts, relu with w1 = 1, b1 = 0, w2 = 1, b2 = 0
 * and D = F = 1: y[t] = combine 0.5 x relu(x[t]) by hand, x[t] = t - P. Every rank runs
 * 1 x C rows padded; unpadded rank 0 runs T, the others none. */
static void pad_empty_ranks(void)
{
    const int T = 2 * P, E = P;
    const long C = T + 2;
    moe_plan *p = moe_plan_alloc(T, E, (size_t)T);
    moe_plan_reset(p, T, E, E);
    for (int t = 0; t < T; t++)
        moe_plan_push(p, t, 0, t, 1.0, 0.5);
    p->capacity = C;
    const size_t nt = 2 * (size_t)P, ne = (size_t)P;
    float *x = malloc(nt * sizeof *x), *y = malloc(nt * sizeof *y);
    float *w1 = malloc(ne * sizeof *w1), *b1 = calloc(ne, sizeof *b1);
    float *w2 = malloc(ne * sizeof *w2), *b2 = calloc(ne, sizeof *b2);
    for (int t = 0; t < T; t++)
        x[t] = (float)(t - P);
    for (int e = 0; e < E; e++)
        w1[e] = w2[e] = 1.0f;
    const moe_experts w = {E, 1, 1, MOE_ACT_RELU, w1, b1, w2, b2, NULL};
    moe_ep *ep = moe_ep_alloc(T, E, C, 1, 1, MOE_ACT_RELU, (size_t)T, 0);
    CHECK(ep != NULL, "empty ranks: moe_ep_alloc: %s", moe_errmsg());
    for (int pad = 0; ep && pad < 2; pad++) {
        moe_ep_stats st;
        moe_ep_set_pad_to_capacity(ep, pad);
        int rc = moe_ep_forward(ep, &w, p, x, y, 1, &st);
        long bad = 0;
        for (int t = 0; t < T; t++)
            bad += y[t] != 0.5f * (x[t] > 0 ? x[t] : 0.0f);
        const long want = pad ? C : me == 0 ? T : 0;
        CHECK(rc == 0 && bad == 0 && st.rows_run == want,
              "empty ranks pad=%d: rc %d, %ld outputs wrong, rank %d ran %ld rows (want %ld)", pad,
              rc, bad, me, st.rows_run, want);
    }
    moe_ep_free(ep);
    moe_plan_free(p);
    free(x), free(y), free(w1), free(b1), free(w2), free(b2);
}

static void local_work(void)
{
    const int T = 16 * P, E = 8, D = 4;
    moe_plan *p = moe_plan_alloc(T, E, 2 * (size_t)T);
    long cnt[8] = {0}, C = 0;
    moe_plan_reset(p, T, E, E);
    for (int t = 0; t < T; t++)
        for (int j = 0; j < 2; j++) {
            const int e = (3 * t + 4 * j) % E;
            moe_plan_push(p, t, e, (int32_t)cnt[e]++, 0.5, 0.5);
        }
    for (int e = 0; e < E; e++)
        C = cnt[e] > C ? cnt[e] : C;
    p->capacity = C;
    float *x = malloc((size_t)T * D * sizeof *x), *y = malloc((size_t)T * D * sizeof *y);
    for (int i = 0; i < T * D; i++) {
        x[i] = (float)(i % 13) * 0.125f - 0.75f;
        y[i] = -99.0f;
    }
    moe_ep *ep = moe_ep_alloc(T, E, C, D, 1, MOE_ACT_RELU, p->n_entries, 0);
    CHECK(ep != NULL, "local work: moe_ep_alloc: %s", moe_errmsg());
    if (!ep)
        goto out;
    const int t0 = start_of(T, me), t1 = start_of(T, me + 1);
    for (int pass = 0; pass < 2; pass++) {
        double td = -1, tc = -1;
        int rc = moe_ep_local_work(ep, p, x, y, &td, &tc);
        long bad = 0, touched = 0;
        for (int t = 0; t < T; t++)
            for (int c = 0; c < D; c++) {
                const float v = y[(size_t)t * D + c];
                if (t >= t0 && t < t1)
                    bad += v != 0.5f * x[(size_t)t * D + c];
                else
                    touched += v != -99.0f;
            }
        CHECK(rc == 0 && bad == 0 && touched == 0 && td >= 0 && tc >= 0,
              "local work (pass %d): rc %d, %ld own rows differ from 0.5 x, %ld other rows "
              "written, times %g %g", pass, rc, bad, touched, td, tc);
        moe_ep_flush(ep, p, x, y);
    }
    moe_ep_free(ep);
out:
    moe_plan_free(p);
    free(x);
    free(y);
}

int main(void)
{
    moe_install_gsl_handler();
    if (moe_mpi_init()) {
        fprintf(stderr, "mpi_ep_check: %s\n", moe_errmsg());
        return 1;
    }
    P = moe_mpi_size();
    me = moe_mpi_rank();
    static const ep_case cases[] = {
        {"topk k=2 cf=1.0", "topk", 64, 8, 16, 24, MOE_ACT_GELU_TANH, 2, 0, "1.0", 0},
        {"topk k=2 cf=1.25 T=37", "topk", 37, 8, 8, 16, MOE_ACT_RELU, 2, 0, "1.25", 0},
        {"switch cf=1.25 E=6", "switch", 48, 6, 8, 16, MOE_ACT_GELU_ERF, 1, 0, "1.25", 0},
        {"topk dropless swiglu", "topk", 40, 8, 8, 8, MOE_ACT_SWIGLU, 2, 0, NULL, 1},
        {"gshard cf=1.0", "gshard", 64, 8, 8, 16, MOE_ACT_GELU_TANH, 0, 0, "1.0", 0},
        {"expert_choice cf=1.5", "expert_choice", 64, 8, 8, 16, MOE_ACT_RELU, 0, 0, "1.5", 0},
        {"hash cf=1.0", "hash", 64, 8, 8, 16, MOE_ACT_RELU, 0, 0, "1.0", 0},
        {"soft_moe 2 slots", "soft_moe", 32, 8, 8, 16, MOE_ACT_GELU_TANH, 0, 2, NULL, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        run_case(&cases[i]);
    error_paths();
    local_work();
    pad_empty_ranks();
    double counts[2] = {check_pass, check_fail};
    moe_mpi_sum(counts, 2);
    if (me == 0)
        printf("mpi_ep_check: %.0f passed, %.0f failed (%d rank%s)\n", counts[0], counts[1], P,
               P > 1 ? "s" : "");
    moe_mpi_finalize(0);
    return counts[1] > 0;
}
