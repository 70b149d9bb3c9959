/* anchor_memo.c: the anchor pass's sums kept per key (anchor_memo.h). Owns the keys, a copy of
 * each key's logsumexps, and the sums; the pass itself is metrics_anchor.c's.
 */
#include "anchor_memo.h"

#include <stdlib.h>
#include <string.h>

typedef struct {
    moe_anchor_key key; /* key.lse points at lse below (NULL without use_lse) */
    double *lse;        /* (key.n) the logsumexps, or NULL */
    moe_anchor_sums sums;
    unsigned long used; /* last use, for least-recently-used replacement; 0: empty */
} am_slot;

typedef struct {
    const double *logits;
    unsigned long batch; /* 0: empty */
    int n, M;
    double z;
    unsigned long used;
} am_zslot;

struct moe_anchor_memo {
    am_slot s[MOE_ANCHOR_MEMO_KEYS];
    am_zslot z[MOE_ANCHOR_MEMO_KEYS];
    unsigned long clock;
    moe_anchor_memo_stats st;
};

moe_anchor_memo *moe_anchor_memo_alloc(void)
{
    moe_anchor_memo *m = calloc(1, sizeof *m);
    if (!m)
        moe_fail(MOE_ENOMEM, NULL, "out of memory (anchor metrics memo)");
    return m;
}

static void slot_clear(am_slot *s)
{
    free(s->lse);
    memset(s, 0, sizeof *s);
}

void moe_anchor_memo_free(moe_anchor_memo *m)
{
    if (!m)
        return;
    for (int i = 0; i < MOE_ANCHOR_MEMO_KEYS; i++)
        slot_clear(&m->s[i]);
    free(m);
}

moe_anchor_memo_stats moe_anchor_memo_get_stats(const moe_anchor_memo *m) { return m->st; }

/* a and b are the same key: every field, and the logsumexps by value when used. */
static int same_key(const moe_anchor_key *a, const moe_anchor_key *b)
{
    if (a->logits != b->logits || a->batch != b->batch || a->n != b->n || a->E != b->E ||
        a->k != b->k || a->seq != b->seq || a->group != b->group || a->score != b->score ||
        a->own != b->own || a->use_lse != b->use_lse || a->shared != b->shared)
        return 0;
    return !a->use_lse || memcmp(a->lse, b->lse, (size_t)a->n * sizeof *a->lse) == 0;
}

int moe_anchor_memo_find(moe_anchor_memo *m, const moe_anchor_key *k, moe_anchor_sums *out)
{
    if (!m || k->batch == 0)
        return 0;
    for (int i = 0; i < MOE_ANCHOR_MEMO_KEYS; i++)
        if (m->s[i].used && same_key(&m->s[i].key, k)) {
            m->s[i].used = ++m->clock;
            *out = m->s[i].sums;
            m->st.hits++;
            return 1;
        }
    return 0;
}

void moe_anchor_memo_put(moe_anchor_memo *m, const moe_anchor_key *k, const moe_anchor_sums *s)
{
    if (!m || k->batch == 0 || k->n < 1)
        return;
    int v = 0; /* an empty slot, else the least recently used */
    for (int i = 1; i < MOE_ANCHOR_MEMO_KEYS && m->s[v].used; i++)
        if (!m->s[i].used || m->s[i].used < m->s[v].used)
            v = i;
    am_slot *slot = &m->s[v];
    double *lse = NULL;
    if (k->use_lse) { /* the previous copy is reused when it has the size */
        lse = slot->lse && slot->key.n == k->n ? slot->lse : malloc((size_t)k->n * sizeof *lse);
        if (!lse) { /* nothing kept: the next pass computes its sums again */
            slot_clear(slot);
            return;
        }
        memcpy(lse, k->lse, (size_t)k->n * sizeof *lse);
    }
    if (slot->lse != lse)
        free(slot->lse);
    slot->lse = lse;
    slot->key = *k;
    slot->key.lse = lse;
    slot->sums = *s;
    slot->used = ++m->clock;
    m->st.records++;
}

void moe_anchor_memo_drop(moe_anchor_memo *m, unsigned long batch)
{
    for (int i = 0; m && i < MOE_ANCHOR_MEMO_KEYS; i++) {
        if (m->s[i].used && m->s[i].key.batch == batch)
            slot_clear(&m->s[i]);
        if (m->z[i].batch == batch)
            memset(&m->z[i], 0, sizeof m->z[i]);
    }
}

int moe_anchor_memo_find_z(moe_anchor_memo *m, const double *logits, unsigned long batch, int n,
                           int M, double *z)
{
    for (int i = 0; m && batch && i < MOE_ANCHOR_MEMO_KEYS; i++) {
        am_zslot *s = &m->z[i];
        if (s->batch == batch && s->logits == logits && s->n == n && s->M == M) {
            s->used = ++m->clock;
            *z = s->z;
            m->st.z_hits++;
            return 1;
        }
    }
    return 0;
}

void moe_anchor_memo_put_z(moe_anchor_memo *m, const double *logits, unsigned long batch, int n,
                           int M, double z)
{
    if (!m || batch == 0)
        return;
    int v = 0; /* an empty slot, else the least recently used */
    for (int i = 1; i < MOE_ANCHOR_MEMO_KEYS && m->z[v].batch; i++)
        if (!m->z[i].batch || m->z[i].used < m->z[v].used)
            v = i;
    m->z[v] = (am_zslot){logits, batch, n, M, z, ++m->clock};
    m->st.z_records++;
}
