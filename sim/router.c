/* router.c: the router instance around a router type (GSL's gsl_rng / gsl_rng_type pattern):
 * option validation, input validation, registry look-up. */
#include "moe.h"
#include "vexp.h"
#include "../routers/par.h"

#if defined(__AVX2__)
#include <immintrin.h>
#endif
#include <math.h>
#include <stdlib.h>
#include <string.h>

const moe_router_type *moe_router_find(const char *name)
{
    for (int i = 0; moe_router_types[i]; i++)
        if (strcmp(moe_router_types[i]->name, name) == 0)
            return moe_router_types[i];
    return NULL;
}

uint64_t moe_router_stream(const moe_router_type *t)
{
    return (t->flags & MOE_RF_STREAM_GSHARD) ? MOE_STREAM_GSHARD : MOE_STREAM_NOISE;
}

int moe_router_needs_rng(const moe_router_type *t, const moe_route_opts *o)
{
    moe_route_opts e;
    moe_route_opts_effective(o, &e);
    return (t->flags & MOE_RF_USES_RNG) || e.noise_std > 0.0 || e.select == MOE_SELECT_RSAMPLE ||
           e.order == MOE_ORDER_RTS || e.jitter > 0.0;
}

/* Options checked whatever the router: noise, jitter and groups. */
static int check_common(const moe_router_type *t, const moe_route_opts *o, int n_max)
{
    if (!(o->noise_std >= 0.0) || !isfinite(o->noise_std))
        return moe_fail(MOE_EINVAL, NULL, "noise_std must be finite and >= 0 (got %g)",
                        o->noise_std);
    if (!(o->jitter >= 0.0 && o->jitter < 1.0))
        return moe_fail(MOE_EINVAL, "jitter multiplies x by U(1-eps, 1+eps)",
                        "jitter %g is outside [0, 1) (jitter)", o->jitter);
    if (o->group_size < 0)
        return moe_fail(MOE_EINVAL, NULL, "group_size must be >= 0 (got %d)", o->group_size);
    if (o->group_size > 0 && n_max % o->group_size != 0)
        return moe_fail(MOE_EINPUT, "the groups are n/G groups of G contiguous tokens",
                        "group_size %d does not divide the %d tokens (router %s)", o->group_size,
                        n_max, t->name);
    return MOE_OK;
}

/* The checks of moe_router_alloc that need no instance; *E and *k: the experts and the
 * effective k. */
static int check_opts(const moe_router_type *t, const moe_route_opts *o, int n_max, int m, int *pE,
                      int *pk)
{
    if (n_max <= 0)
        return moe_fail(MOE_EINPUT, NULL, "router %s needs at least one token (n = %d)", t->name,
                        n_max);
    if (m <= 0)
        return moe_fail(MOE_EINPUT, NULL, "router %s needs at least one logit column (M = %d)",
                        t->name, m);
    int E = m;
    if (t->flags & MOE_RF_DENSE) {
        /* P unset (0): M / num_experts when num_experts is given, else 1 */
        int P = o->slots_per_expert;
        if (P < 0)
            return moe_fail(MOE_EINVAL, NULL, "slots_per_expert must be >= 1 (got %d)", P);
        if (o->num_experts > 0) {
            if (P == 0) {
                if (m % o->num_experts != 0)
                    return moe_fail(MOE_EINPUT, "soft_moe needs M = num_experts * slots_per_expert",
                                    "logits have %d columns, not a multiple of num_experts %d", m,
                                    o->num_experts);
                P = m / o->num_experts;
            }
            if ((long)o->num_experts * P != m)
                return moe_fail(MOE_EINPUT, "soft_moe needs M = num_experts * slots_per_expert",
                                "logits have %d columns, not num_experts %d x slots_per_expert %d",
                                m, o->num_experts, P);
            E = o->num_experts;
        } else {
            if (P == 0)
                P = 1;
            if (m % P != 0)
                return moe_fail(MOE_EINPUT, NULL,
                                "logits have %d columns, not a multiple of slots_per_expert %d",
                                m, P);
            E = m / P;
        }
    } else if (o->num_experts > 0 && o->num_experts != m) {
        return moe_fail(MOE_EINPUT, NULL, "logits have %d columns but num_experts is %d", m,
                        o->num_experts);
    }
    int k = o->k > 0 ? o->k : t->default_k;
    if (o->k < 0 || k < 1 || k > E)
        return moe_fail(MOE_EINPUT, "k must be between 1 and the number of experts",
                        "k = %d is outside 1..E = 1..%d (router %s)", o->k ? o->k : k, E, t->name);
    if (o->capacity < -1 || o->min_capacity < 0)
        return moe_fail(MOE_EINVAL, NULL, "capacity and min_capacity must be >= 0");
    *pE = E;
    *pk = k;
    return check_common(t, o, n_max);
}

int moe_router_check(const moe_router_type *t, const moe_route_opts *o, int n_max, int m)
{
    int E, k, rc = check_opts(t, o, n_max, m, &E, &k);
    if (rc)
        return rc;
    /* the type's own checks (k, score path, policies, tolerances) do not depend on the tokens:
     * they run on an instance for one token, whose workspace is O(E) */
    moe_route_opts one = *o;
    one.group_size = 0;
    moe_router *r = NULL;
    rc = moe_router_alloc(t, &one, 1, m, &r);
    moe_router_free(r);
    return rc;
}

int moe_router_alloc(const moe_router_type *t, const moe_route_opts *o, int n_max, int m,
                     moe_router **out)
{
    *out = NULL;
    int E, k, rc = check_opts(t, o, n_max, m, &E, &k);
    if (rc)
        return rc;
    moe_router *r = calloc(1, sizeof *r);
    if (!r)
        return moe_fail(MOE_ENOMEM, NULL, "out of memory (router %s)", t->name);
    r->type = t;
    moe_route_opts_effective(o, &r->opts);
    r->n_max = n_max;
    r->m = m;
    r->E = E;
    r->k = k;
    if (r->opts.order == MOE_ORDER_RTS &&
        !(r->rts_buf = malloc((size_t)n_max * (size_t)m * sizeof *r->rts_buf))) {
        free(r);
        return moe_fail(MOE_ENOMEM, NULL, "out of memory (rts keys of router %s)", t->name);
    }
    if (t->alloc && (rc = t->alloc(r))) {
        free(r->rts_buf);
        free(r);
        return rc;
    }
    *out = r;
    return MOE_OK;
}

void moe_router_free(moe_router *r)
{
    if (!r)
        return;
    if (r->type->free)
        r->type->free(r);
    moe_plan_free(r->gplan);
    free(r->rts_buf);
    free(r);
}

typedef struct {
    const double *x;
    size_t len;
    int ok[MOE_PAR_MAX];
} finite_job;

static void finite_part(void *ctx, int i, int np)
{
    finite_job *j = ctx;
    long lo, hi;
    moe_par_range((long)j->len, i, np, &lo, &hi);
    j->ok[i] = moe_all_finite(j->x + lo, (size_t)(hi - lo));
}

/* Every logit looked at by vector lanes on the routers' threads; only when one is not finite,
 * the scalar scan for the first (one thread, one element at a time, had taken 5% of sinkhorn's
 * route at 65536 x 64). */
int moe_logits_check_finite(const double *x, int n, int m)
{
    const size_t nm = (size_t)n * (size_t)m;
    finite_job j = {x, nm, {0}};
    const int np = moe_par_parts((long)nm, 1 << 16);
    moe_par_run(finite_part, &j, np);
    int ok = 1;
    for (int i = 0; i < np; i++)
        ok &= j.ok[i];
    for (size_t i = 0; !ok && i < nm; i++)
        if (!isfinite(x[i]))
            return moe_fail(MOE_EINPUT, "logits must be finite: check the gate or the file",
                            "non-finite logit %g at token %zu, column %zu", x[i], i / (size_t)m,
                            i % (size_t)m);
    return MOE_OK;
}

/* Whether every draw of u (n) lies in [0, 1) (a NaN fails both tests), four at a time in
 * vector lanes with AVX2 (one scan a draw with a branch had taken 2% of switch's route at
 * 65536 x 8 when the draws came with the logits). */
static int uniforms_in_unit(const double *u, int n)
{
    int i = 0, ok = 1;
#if defined(__AVX2__)
    const __m256d zero = _mm256_setzero_pd(), one = _mm256_set1_pd(1.0);
    __m256d all = _mm256_cmp_pd(zero, zero, _CMP_EQ_OQ);
    for (; i + 4 <= n; i += 4) {
        const __m256d x = _mm256_loadu_pd(u + i);
        all = _mm256_and_pd(all, _mm256_and_pd(_mm256_cmp_pd(x, zero, _CMP_GE_OQ),
                                               _mm256_cmp_pd(x, one, _CMP_LT_OQ)));
    }
    ok = _mm256_movemask_pd(all) == 15;
#endif
    for (; i < n; i++)
        ok &= (u[i] >= 0.0) & (u[i] < 1.0);
    return ok;
}

int moe_router_route(moe_router *r, const moe_route_in *in, moe_plan *plan)
{
    const moe_router_type *t = r->type;
    if (in->n <= 0)
        return moe_fail(MOE_EINPUT, NULL, "no tokens to route (n = %d)", in->n);
    if (in->n > r->n_max)
        return moe_fail(MOE_EINPUT, NULL, "%d tokens exceed the router's workspace of %d", in->n,
                        r->n_max);
    if (in->m != r->m)
        return moe_fail(MOE_EINPUT, NULL, "logits have %d columns, router was set up for %d",
                        in->m, r->m);
    const int G = r->opts.group_size;
    int rc;
    /* routers flagged MOE_RF_CHECKS_FINITE check while they read the logits (not by groups) */
    if ((!(t->flags & MOE_RF_CHECKS_FINITE) || (G > 0 && G < in->n)) &&
        in->logits != r->finite_logits &&
        (rc = moe_logits_check_finite(in->logits, in->n, in->m)))
        return rc;
    if (t->flags & MOE_RF_NEEDS_IDS) {
        if (!in->ids)
            return moe_fail(MOE_EINPUT, "give token ids (--tokens IDS.npy)",
                            "router %s needs token ids", t->name);
        for (int i = 0; i < in->n; i++)
            if (in->ids[i] < 0)
                return moe_fail(MOE_EINPUT, NULL, "negative token id %lld at token %d",
                                (long long)in->ids[i], i);
    }
    if (in->uniforms && !uniforms_in_unit(in->uniforms, in->n))
        for (int i = 0; i < in->n; i++)
            if (!(in->uniforms[i] >= 0.0 && in->uniforms[i] < 1.0))
                return moe_fail(MOE_EINPUT, "uniform draws must lie in [0, 1)",
                                "uniform draw %g at token %d is outside [0, 1)", in->uniforms[i],
                                i);
    if (G > 0 && in->n % G != 0)
        return moe_fail(MOE_EINPUT, "the groups are n/G groups of G contiguous tokens",
                        "group_size %d does not divide the %d tokens (router %s)", G, in->n,
                        t->name);
    moe_route_in in2 = *in;
    if (r->opts.order == MOE_ORDER_RTS && !in->rts_u) { /* the keys from the stream */
        if (!in->rng)
            return moe_fail(MOE_EINVAL, "give a seed or the keys (--rts-uniforms U.npy of shape "
                            "(n,E))", "claim order rts needs its draws (order)");
        for (size_t i = 0; i < (size_t)in->n * (size_t)in->m; i++)
            r->rts_buf[i] = gsl_rng_uniform_pos(in->rng);
        in2.rts_u = r->rts_buf;
    }
    if (G > 0 && G < in->n)
        return moe_route_groups(r, &in2, plan);
    if ((rc = moe_plan_reset(plan, in->n, r->E, in->m)))
        return rc;
    plan->k = r->k;
    return t->route(r, &in2, plan);
}
