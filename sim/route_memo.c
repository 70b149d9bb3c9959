/* route_memo.c: one router workspace with the plan's results of its capacity-free work, reused
 * by the next route of the same key (route_memo.h). Owns the key, the workspace while no router
 * borrows it (freed through its router type), and the saved plan results.
 */
#include "route_memo.h"
#include "metrics_anchor.h"

#include <stdlib.h>
#include <string.h>

enum { MEMO_NONE = 0, MEMO_RECORD = 1, MEMO_REUSE = 2 };

typedef struct {
    const moe_router_type *type;
    moe_route_opts opts;  /* the router's, capacity options cleared (memo_key) */
    int n, m, n_max, E, observed;
    const double *logits;
    unsigned long batch;
} memo_key;

struct moe_route_memo {
    memo_key key;          /* valid when batch > 0 */
    void *ws;              /* the workspace holding the work, or NULL (still the router's) */
    const moe_router *rec; /* the router that recorded it and keeps the workspace until freed */
    int recorded;          /* the recording route succeeded: rec's workspace holds the work */
    /* the plan's results of the capacity-free part */
    int saved;             /* moe_route_memo_record ran for this key */
    long *load;            /* (E) assigned_load */
    double *imp;           /* (E) importance */
    long n_claims;
    double *lse;           /* (n) each row's logsumexp, when the plan kept them */
    int has_lse, has_rows, has_obs;
    void *obs;             /* the metrics observer's state (moe_metrics_rows_save) */
    moe_entry *spare;      /* the entries of the last plan routed with the memo, for the next */
    size_t spare_cap;
    moe_route_memo_stats st;
};

moe_route_memo *moe_route_memo_alloc(void)
{
    moe_route_memo *m = calloc(1, sizeof *m);
    if (!m)
        moe_fail(MOE_ENOMEM, NULL, "out of memory (route memo)");
    return m;
}

/* Frees a workspace of router type t through the type's own free. */
static void free_ws(const memo_key *k, void *ws)
{
    if (!ws || !k->type->free)
        return;
    moe_router shell = {.type = k->type, .opts = k->opts, .n_max = k->n_max, .m = k->m,
                        .E = k->E, .ws = ws};
    k->type->free(&shell);
}

void moe_route_memo_clear(moe_route_memo *m)
{
    free_ws(&m->key, m->ws);
    free(m->load);
    free(m->imp);
    free(m->lse);
    free(m->obs);
    free(m->spare);
    const moe_route_memo_stats st = m->st;
    memset(m, 0, sizeof *m);
    m->st = st;
}

void moe_route_memo_free(moe_route_memo *m)
{
    if (!m)
        return;
    moe_route_memo_clear(m);
    free(m);
}

unsigned long moe_route_memo_batch(const moe_route_memo *m) { return m->key.batch; }

moe_route_memo_stats moe_route_memo_get_stats(const moe_route_memo *m) { return m->st; }

/* The key of r routing in into plan for batch; 0 when r or the input has no memo. */
static int memo_key_of(const moe_router *r, const moe_route_in *in, const moe_plan *plan,
                       unsigned long batch, memo_key *k)
{
    const moe_route_opts *o = &r->opts;
    if (!(r->type->flags & MOE_RF_MEMO) || batch == 0 || moe_router_needs_rng(r->type, o) ||
        (o->group_size > 0 && o->group_size < in->n) || o->order == MOE_ORDER_BPR ||
        o->order == MOE_ORDER_RTS || in->rts_u || in->uniforms || in->choices)
        return 0;
    memset(k, 0, sizeof *k); /* padding too: keys compare with memcmp */
    k->type = r->type;
    memcpy(&k->opts, o, sizeof k->opts);
    moe_route_opts *c = &k->opts; /* the capacity part's options */
    c->cf_set = c->cf_eval_set = 0;
    c->cf_num = c->cf_den = c->cf_eval_num = c->cf_eval_den = 0;
    c->capacity = c->min_capacity = c->capacity_multiple = 0;
    c->rounding = c->dropless = c->renormalize = c->pad_to_capacity = 0;
    k->n = in->n, k->m = in->m, k->n_max = r->n_max, k->E = r->E;
    k->observed = plan->rows_add != NULL;
    k->logits = in->logits;
    k->batch = batch;
    return 1;
}

void moe_route_memo_begin(moe_route_memo *m, moe_router *r, const moe_route_in *in,
                          moe_plan *plan, unsigned long batch)
{
    r->memo = NULL;
    r->memo_mode = MEMO_NONE;
    memo_key k;
    if (!m)
        return;
    if (m->spare && m->spare_cap > plan->cap_entries && plan->n_entries == 0) {
        free(plan->entries); /* the pages the previous point's plan wrote, for this plan */
        plan->entries = m->spare;
        plan->cap_entries = m->spare_cap;
        m->spare = NULL;
        m->spare_cap = 0;
    }
    if (!memo_key_of(r, in, plan, batch, &k)) {
        moe_route_memo_clear(m); /* another route: what the memo holds is of no further use */
        return;
    }
    r->memo = m;
    if (m->ws && m->saved && memcmp(&k, &m->key, sizeof k) == 0) {
        void *own = r->ws; /* lend the memo's workspace; keep r's own meanwhile */
        r->ws = m->ws;
        m->ws = own;
        r->memo_mode = MEMO_REUSE;
        return;
    }
    moe_route_memo_clear(m); /* one memo at a time: the previous goes before this route */
    m->key = k;
    m->rec = r;
    r->memo_mode = MEMO_RECORD;
}

void moe_route_memo_end(moe_route_memo *m, moe_router *r, int rc)
{
    if (!m || r->memo != m)
        return;
    if (r->memo_mode == MEMO_REUSE) {
        void *own = m->ws;
        m->ws = r->ws;
        r->ws = own;
        m->st.hits++;
        if (rc != MOE_OK) /* the capacity part failed: keep nothing that it may have left */
            moe_route_memo_clear(m);
    } else if (r->memo_mode == MEMO_RECORD) {
        m->recorded = rc == MOE_OK && m->saved && m->rec == r;
        if (m->recorded)
            m->st.records++;
    }
    r->memo = NULL;
    r->memo_mode = MEMO_NONE;
}

void moe_route_memo_keep(moe_route_memo *m, moe_router *r, moe_plan *plan)
{
    if (!m || !r)
        return;
    if (m->rec == r) {
        m->rec = NULL;
        if (!m->recorded || m->ws) {
            moe_route_memo_clear(m);
            return;
        }
        m->ws = r->ws;
        r->ws = NULL;
    }
    if (m->ws && plan && plan->cap_entries > m->spare_cap) { /* for the next point's plan */
        free(m->spare);
        m->spare = plan->entries;
        m->spare_cap = plan->cap_entries;
        plan->entries = NULL;
        plan->cap_entries = plan->n_entries = 0;
    }
}

int moe_route_memo_reuse(moe_router *r, moe_plan *plan)
{
    const moe_route_memo *m = r->memo;
    if (!m || r->memo_mode != MEMO_REUSE)
        return 0;
    const int E = m->key.E, n = m->key.n;
    /* room for every claim: the buffer fits the plan of any capacity, written again by the
     * next point (moe_route_memo_keep) instead of growing into fresh pages */
    double *lse = m->has_lse ? moe_plan_lse_buffer(plan) : NULL;
    if (moe_plan_reserve(plan, (size_t)m->n_claims) != MOE_OK || (m->has_lse && !lse))
        return 0; /* out of memory: the route runs in full (and reports it) */
    memcpy(plan->assigned_load, m->load, (size_t)E * sizeof *m->load);
    memcpy(plan->importance, m->imp, (size_t)E * sizeof *m->imp);
    plan->n_claims = m->n_claims;
    if (m->has_lse) {
        memcpy(lse, m->lse, (size_t)n * sizeof *lse);
        plan->lse_of = m->key.logits;
    }
    if (m->has_rows)
        plan->rows_of = m->key.logits;
    if (m->has_obs)
        moe_metrics_rows_restore(plan, m->obs);
    return 1;
}

int moe_route_memo_recording(const moe_router *r)
{
    const moe_route_memo *m = r->memo;
    return m && r->memo_mode == MEMO_RECORD && m->rec == r;
}

void moe_route_memo_record(moe_router *r, moe_plan *plan)
{
    moe_route_memo *m = r->memo;
    if (!m || r->memo_mode != MEMO_RECORD || m->rec != r)
        return;
    const int E = m->key.E, n = m->key.n;
    m->saved = 0;
    if (!m->load)
        m->load = malloc((size_t)E * sizeof *m->load);
    if (!m->imp)
        m->imp = malloc((size_t)E * sizeof *m->imp);
    m->has_lse = plan->lse_of == m->key.logits;
    if (m->has_lse && !m->lse)
        m->lse = malloc((size_t)n * sizeof *m->lse);
    if (!m->obs)
        m->obs = malloc(moe_metrics_rows_state_size());
    if (!m->load || !m->imp || (m->has_lse && !m->lse) || !m->obs) {
        moe_route_memo_clear(m); /* no memo: the route goes on in full */
        r->memo = NULL;
        r->memo_mode = MEMO_NONE;
        return;
    }
    memcpy(m->load, plan->assigned_load, (size_t)E * sizeof *m->load);
    memcpy(m->imp, plan->importance, (size_t)E * sizeof *m->imp);
    m->n_claims = plan->n_claims;
    if (m->has_lse)
        memcpy(m->lse, plan->lse, (size_t)n * sizeof *m->lse);
    m->has_rows = plan->rows_of == m->key.logits;
    m->has_obs = moe_metrics_rows_save(plan, m->obs);
    m->saved = moe_plan_reserve(plan, (size_t)m->n_claims) == MOE_OK; /* as a reuse does */
}
