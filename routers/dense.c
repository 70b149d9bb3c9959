/* dense.c: the `dense` router (classic dense MoE, Jacobs et al. 1991 / Shazeer et al. 2017
 * without sparsity), docs/routing.md section 3. Fills moe_router_dense: every token goes to every
 * expert with combine weight p[t,e] = softmax(L[t,:])[e], dispatch 1, slot = the token index
 * (capacity n), k = E, nothing dropped. Entries are token-major (token, then expert).
 * Statistics: assigned_load[e] = kept_load[e] = n, importance[e] = sum_t p[t,e],
 * n_claims = n*E, aux_loss = 0. The plan is sparse-shaped (plan->dense = 0): the layer gathers
 * E*n rows by index, and its output is the dense mixture sum_e p[t,e] FFN_e(x_t) itself.
 * Capacity options do not apply and are ignored; k must be E or left unset.
 *
 * One pass over the logits on the routers' threads (rowpass.h): each chunk of rows takes its
 * softmax rows and logsumexps (moe_softmax_rows: one exponential per logit, the values of
 * moe_softmax), checks its logits are finite, writes its entries straight into the plan and
 * hands its rows to the plan's rows observer (the metrics); the importance sums and the
 * observer's sums are taken chunk after chunk in token order, as the serial loop takes them.
 * The logsumexps stay in the plan (lse_of) for the z-loss when the observer takes the rows. */
#include "moe.h"
#include "par.h"
#include "rowpass.h"
#include "vexp.h"

#include <stdatomic.h>
#include <stdlib.h>

/* ---- workspace ---- */

enum { DENSE_CHUNK_VALUES = 4096 }; /* logits of one chunk of rows */

typedef struct {
    int rows;  /* rows per chunk */
    double *p; /* (MOE_ROWPASS_SLOTS, rows, E) softmax rows of the chunks in flight */
} dense_ws;

static void dense_free(moe_router *r)
{
    dense_ws *w = r->ws;
    if (w)
        free(w->p);
    free(w);
    r->ws = NULL;
}

static int dense_alloc(moe_router *r)
{
    if (r->opts.k != 0 && r->opts.k != r->E)
        return moe_fail(MOE_EINPUT, "dense uses every expert: leave k unset or set k = E",
                        "dense needs k = E = %d, got k = %d (k)", r->E, r->opts.k);
    r->k = r->E;
    dense_ws *w = calloc(1, sizeof *w);
    r->ws = w;
    if (w) {
        w->rows = r->E >= DENSE_CHUNK_VALUES ? 1 : DENSE_CHUNK_VALUES / r->E;
        w->p = malloc((size_t)MOE_ROWPASS_SLOTS * (size_t)w->rows * (size_t)r->E * sizeof *w->p);
    }
    if (!w || !w->p) {
        dense_free(r);
        return moe_fail(MOE_ENOMEM, NULL, "out of memory (router dense)");
    }
    return MOE_OK;
}

/* ---- routing ---- */

typedef struct {
    const dense_ws *w;
    const double *L; /* (T,E) */
    moe_plan *plan;
    int n, E;
    atomic_int nonfinite; /* a chunk has a non-finite logit */
} dense_job;

static double *dense_rows(const dense_job *j, int slot) /* (rows, E) scratch of a chunk slot */
{
    return j->w->p + (size_t)slot * (size_t)j->w->rows * (size_t)j->E;
}

/* Chunk ch: softmax rows, logsumexps and entries of its tokens; the observer's per-row work. */
static void dense_work(void *ctx, int slot, long ch)
{
    dense_job *j = ctx;
    const int E = j->E;
    const long t0 = ch * j->w->rows, t1 = t0 + j->w->rows < j->n ? t0 + j->w->rows : j->n;
    const double *lt = j->L + (size_t)t0 * E;
    double *p = dense_rows(j, slot);
    int slow = 0;
    moe_softmax_rows_more(lt, (int)(t1 - t0), E, p,
                          &(moe_softmax_more){.lse = j->plan->lse + t0, .slow = &slow});
    if (!moe_softmax_finite(lt, (size_t)(t1 - t0) * E, slow))
        atomic_store(&j->nonfinite, 1);
    for (long t = t0; t < t1; t++) {
        moe_entry *restrict en = j->plan->entries + (size_t)t * E;
        const double *restrict pt = p + (size_t)(t - t0) * E;
        for (int e = 0; e < E; e++) {
            en[e].token = (int32_t)t;
            en[e].expert = e;
            en[e].slot = (int32_t)t;
            en[e].dispatch_w = 1.0;
            en[e].combine_w = pt[e];
        }
    }
    if (j->plan->rows_each)
        j->plan->rows_each(j->plan->rows_ctx, t0, t1, p, NULL);
}

/* Chunk ch, after every earlier one: importance[e] += p[t,e] in token order; the observer's
 * sums. */
static void dense_add(void *ctx, int slot, long ch)
{
    dense_job *j = ctx;
    const int E = j->E;
    const long t0 = ch * j->w->rows, t1 = t0 + j->w->rows < j->n ? t0 + j->w->rows : j->n;
    const double *p = dense_rows(j, slot);
    double *restrict imp = j->plan->importance;
    for (long t = t0; t < t1; t++) {
        const double *restrict pt = p + (size_t)(t - t0) * E;
        for (int e = 0; e < E; e++)
            imp[e] += pt[e];
    }
    if (j->plan->rows_add)
        j->plan->rows_add(j->plan->rows_ctx, t0, t1, p, NULL);
}

/* logits (T,E) -> plan with T*E entries, token-major. */
static int dense_route(moe_router *r, const moe_route_in *in, moe_plan *plan)
{
    const int n = in->n, E = r->E;
    const dense_ws *w = r->ws;
    int rc;
    plan->k = E;
    plan->capacity = n;
    plan->aux_loss = 0.0;
    if ((rc = moe_plan_reserve(plan, (size_t)n * (size_t)E)) || !moe_plan_lse_buffer(plan))
        return rc ? rc : MOE_ENOMEM;
    dense_job j = {.w = w, .L = in->logits, .plan = plan, .n = n, .E = E};
    atomic_init(&j.nonfinite, 0);
    const long nch = (n + w->rows - 1) / w->rows;
    if ((rc = moe_rowpass_run(nch, moe_par_parts((long)n * E, 16384), dense_work, dense_add,
                              &j)))
        return rc;
    if (atomic_load(&j.nonfinite)) /* the first non-finite logit, named as moe_router_route does */
        return moe_logits_check_finite(in->logits, n, E);
    plan->n_entries = (size_t)n * (size_t)E;
    for (int e = 0; e < E; e++)
        plan->assigned_load[e] = n;
    plan->n_claims = (long)n * E;
    /* The logsumexps for the z-loss, and the rows for the anchor metrics, when the metrics
     * observe this pass: they then sum these rows (moe_softmax's values, as their own pass
     * would take them). Without the observer (routing groups, training), or with Megatron's own
     * scores, where the metrics' own pass would take p = exp(L - lse) from kept logsumexps,
     * they are not kept and the metrics take moe_softmax themselves, as before. */
    if (plan->rows_add && r->opts.score != MOE_SCORE_SIGMOID &&
        r->opts.score != MOE_SCORE_SQRTSOFTPLUS) {
        plan->lse_of = in->logits;
        plan->rows_of = in->logits;
    }
    return MOE_OK;
}

const moe_router_type moe_router_dense = {
    "dense",
    "dense MoE: every token to every expert, combine weight p = softmax(L)",
    MOE_RF_NO_CAPACITY | MOE_RF_ALL_EXPERTS | MOE_RF_CHECKS_FINITE,
    1, /* placeholder: the effective k is E (set in dense_alloc) */
    dense_alloc,
    dense_free,
    dense_route,
    NULL,
};
