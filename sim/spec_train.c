/* spec_train.c: the [train] section of a spec (spec_internal.h). With it, every sweep point is
 * a training run of the layer (point.h, train.h) instead of measured batches. Every key but
 * eval_every and probe_tokens takes a list of values and is a sweep axis (innermost, in the
 * order of the table below); the training configuration is part of the point's config key.
 *
 *   [train]
 *   steps = 200              ; training steps, 1..10^7 (default 200)
 *   optimizer = adam         ; sgd | adam (default adam; betas 0.9, 0.999, eps 1e-8)
 *   lr = 1e-3                ; learning rate > 0 (default 1e-3)
 *   lr_schedule = constant   ; constant | cosine (default constant)
 *   warmup = 0               ; steps of linear warmup (default 0)
 *   aux = router             ; router: its own balance loss | importance: Shazeer CV^2
 *   aux_weight = 0           ; weight of the aux loss, >= 0 (default 0)
 *   z_weight = 0             ; weight of the router z-loss, >= 0 (default 0)
 *   trainable = all          ; gate | all (default all)
 *   eval_every = 10          ; eval rows at steps 0, eval_every, ... and the last (one value)
 *   probe_tokens = 256       ; probe tokens, 1..tokens (one value; default min(256, tokens))
 *   teacher = moe            ; moe | dense (default moe)
 *   teacher_experts = 8      ; experts of the teacher MoE (default: the shape's E)
 *   teacher_k = 1            ; top-k of the teacher, 1..teacher_experts (default 1)
 *   target_noise = 0         ; std of the Gaussian noise on training targets (default 0)
 *
 * Each step draws batch s + 1 of `tokens` tokens from the point's distribution (batch 0 is the
 * held-out batch); experiment.batches has no meaning and is an error.
 */
#include "spec_internal.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

enum { TK_INT, TK_REAL, TK_ENUM };

/* One key: its kind, range, default and the field of moe_train_config it sets. */
typedef struct {
    const char *key;
    int kind, list;
    double lo, hi;
    const char *dflt; /* NULL: resolved per point (teacher_experts, probe_tokens) */
} train_key;

static const train_key keys[] = {
    {"steps", TK_INT, 1, 1, 1e7, "200"},
    {"optimizer", TK_ENUM, 1, 0, 0, "adam"},
    {"lr", TK_REAL, 1, 0, INFINITY, "1e-3"},
    {"lr_schedule", TK_ENUM, 1, 0, 0, "constant"},
    {"warmup", TK_INT, 1, 0, 1e7, "0"},
    {"aux", TK_ENUM, 1, 0, 0, "router"},
    {"aux_weight", TK_REAL, 1, 0, INFINITY, "0"},
    {"z_weight", TK_REAL, 1, 0, INFINITY, "0"},
    {"trainable", TK_ENUM, 1, 0, 0, "all"},
    {"eval_every", TK_INT, 0, 1, 1e7, "10"},
    {"probe_tokens", TK_INT, 0, 1, 1 << 22, NULL},
    {"teacher", TK_ENUM, 1, 0, 0, "moe"},
    {"teacher_experts", TK_INT, 1, 1, 4096, NULL},
    {"teacher_k", TK_INT, 1, 1, 4096, "1"},
    {"target_noise", TK_REAL, 1, 0, INFINITY, "0"},
};
enum { NKEYS = sizeof keys / sizeof keys[0] };

struct spec_train {
    const spec_section *sec;
    const spec_kv *kv[NKEYS]; /* the key as given, or NULL */
    double *v[NKEYS];         /* values (enums: their index) */
    int n[NKEYS];             /* 0: not given and no default (resolved per point) */
};

static int key_index(const char *key)
{
    for (int i = 0; i < NKEYS; i++)
        if (strcmp(keys[i].key, key) == 0)
            return i;
    return -1;
}

/* One value of key k from text. lr must be > 0; the others >= lo. */
static int parse_value(const spec_section *sec, const spec_kv *kv, int k, const char *text,
                       double *out)
{
    const train_key *tk = &keys[k];
    if (tk->kind == TK_ENUM) {
        int v;
        if (moe_train_enum_value(tk->key, text, &v)) {
            *out = v;
            return MOE_OK;
        }
        return KV_FAIL(MOE_EINVAL, sec, kv, NULL, "bad value '%s': want %s or %s", text,
                       moe_train_enum_name(tk->key, 0), moe_train_enum_name(tk->key, 1));
    }
    char *end;
    errno = 0;
    if (tk->kind == TK_INT) {
        long x = strtol(text, &end, 10);
        if (errno || end == text || *end || x < (long)tk->lo || x > (long)tk->hi)
            return KV_FAIL(MOE_EINVAL, sec, kv, NULL,
                           "bad number '%s': want an integer in %ld..%ld", text, (long)tk->lo,
                           (long)tk->hi);
        *out = (double)x;
        return MOE_OK;
    }
    double x = strtod(text, &end);
    const int lr = strcmp(tk->key, "lr") == 0;
    if (errno || end == text || *end || !isfinite(x) || x < 0.0 || (lr && !(x > 0.0)))
        return KV_FAIL(MOE_EINVAL, sec, kv, NULL, "bad number '%s': want a finite number %s",
                       text, lr ? "> 0" : ">= 0");
    *out = x;
    return MOE_OK;
}

/* The values of key k: its list, or its default (located at the section). */
static int load_key(struct spec_train *t, int k)
{
    const spec_kv *kv = t->kv[k];
    if (!kv && !keys[k].dflt)
        return MOE_OK;
    spec_kv tmp = {(char *)keys[k].key, (char *)keys[k].dflt, t->sec->head.file,
                   t->sec->head.line};
    char **w;
    int nw, rc;
    if ((rc = moe_spec_split_list(t->sec, kv ? kv : &tmp, &w, &nw)))
        return rc;
    if (nw > 1 && !keys[k].list) {
        moe_spec_free_words(w, nw);
        return KV_FAIL(MOE_EINVAL, t->sec, kv, "give one value: it is not a sweep axis",
                       "%s takes one value, not a list", keys[k].key);
    }
    t->v[k] = malloc((size_t)nw * sizeof *t->v[k]);
    if (!t->v[k]) {
        moe_spec_free_words(w, nw);
        return moe_fail(MOE_ENOMEM, NULL, "out of memory");
    }
    for (int i = 0; i < nw && !rc; i++) {
        rc = parse_value(t->sec, kv ? kv : &tmp, k, w[i], &t->v[k][i]);
        for (int j = 0; j < i && !rc; j++) /* "0.1" and "1e-1" are one value: one point */
            if (t->v[k][j] == t->v[k][i])
                rc = KV_FAIL(MOE_EINVAL, t->sec, kv, "give each value once",
                             "'%s' and '%s' are the same value", w[j], w[i]);
    }
    t->n[k] = nw;
    moe_spec_free_words(w, nw);
    return rc;
}

void moe_spec_train_free(struct spec_train *t)
{
    if (!t)
        return;
    for (int k = 0; k < NKEYS; k++)
        free(t->v[k]);
    free(t);
}

int moe_spec_train_load(moe_spec *s)
{
    const spec_section *sec = moe_spec_section_find(s, "train");
    if (!sec)
        return MOE_OK;
    struct spec_train *t = calloc(1, sizeof *t);
    if (!t)
        return moe_fail(MOE_ENOMEM, NULL, "out of memory");
    s->train = t;
    t->sec = sec;
    for (int i = 0; i < sec->nkv; i++) {
        int k = key_index(sec->kv[i].key);
        if (k < 0)
            return KV_FAIL(MOE_EINVAL, sec, &sec->kv[i],
                           "train keys: steps optimizer lr lr_schedule warmup aux aux_weight "
                           "z_weight trainable eval_every probe_tokens teacher teacher_experts "
                           "teacher_k target_noise",
                           "unknown key");
        t->kv[k] = &sec->kv[i];
    }
    const spec_section *exp = moe_spec_section_find(s, "experiment");
    const spec_kv *bkv = exp ? moe_spec_kv_find(exp, "batches") : NULL;
    if (bkv)
        return KV_FAIL(MOE_EINVAL, exp, bkv,
                       "leave batches out: each training step draws a fresh batch",
                       "batches has no meaning with a [train] section");
    int rc = MOE_OK;
    for (int k = 0; k < NKEYS && !rc; k++)
        rc = load_key(t, k);
    return rc;
}

/* ---- expansion ---- */

/* Set field k of c to value v. */
static void set_field(moe_train_config *c, int k, double v)
{
    const char *key = keys[k].key;
    const int iv = (int)v;
    if (strcmp(key, "steps") == 0) c->steps = iv;
    else if (strcmp(key, "optimizer") == 0) c->optimizer = iv;
    else if (strcmp(key, "lr") == 0) c->lr = v;
    else if (strcmp(key, "lr_schedule") == 0) c->lr_schedule = iv;
    else if (strcmp(key, "warmup") == 0) c->warmup = iv;
    else if (strcmp(key, "aux") == 0) c->aux_kind = iv;
    else if (strcmp(key, "aux_weight") == 0) c->aux_weight = v;
    else if (strcmp(key, "z_weight") == 0) c->z_weight = v;
    else if (strcmp(key, "trainable") == 0) c->trainable = iv;
    else if (strcmp(key, "eval_every") == 0) c->eval_every = iv;
    else if (strcmp(key, "probe_tokens") == 0) c->probe_tokens = iv;
    else if (strcmp(key, "teacher") == 0) c->teacher = iv;
    else if (strcmp(key, "teacher_experts") == 0) c->teacher_experts = iv;
    else if (strcmp(key, "teacher_k") == 0) c->teacher_k = iv;
    else if (strcmp(key, "target_noise") == 0) c->target_noise = v;
}

/* Values resolved per point, and the checks against its shape and tokens. */
static int resolve(const struct spec_train *t, moe_point *p)
{
    const int ip = key_index("probe_tokens"), ie = key_index("teacher_experts"),
              ik = key_index("teacher_k");
    if (!t->n[ip])
        p->tc.probe_tokens = p->tokens < 256 ? p->tokens : 256;
    else if (p->tc.probe_tokens > p->tokens)
        return KV_FAIL(MOE_EINVAL, t->sec, t->kv[ip], "probe tokens come from the held-out batch",
                       "probe_tokens = %d exceeds tokens = %d", p->tc.probe_tokens, p->tokens);
    if (!t->n[ie])
        p->tc.teacher_experts = p->E;
    if (p->tc.teacher == MOE_TEACHER_MOE && p->tc.teacher_k > p->tc.teacher_experts)
        return KV_FAIL(MOE_EINVAL, t->sec, t->kv[ik] ? t->kv[ik] : t->kv[ie],
                       "teacher_k must be between 1 and teacher_experts",
                       "teacher_k = %d exceeds teacher_experts = %d", p->tc.teacher_k,
                       p->tc.teacher_experts);
    return MOE_OK;
}

int moe_spec_train_expand(moe_spec *s, moe_point *p, const spec_router *r,
                          int (*add)(moe_spec *, moe_point *, const spec_router *))
{
    const struct spec_train *t = s->train;
    int idx[NKEYS] = {0};
    for (;;) {
        moe_point q = *p;
        q.train = 1;
        q.batches = 1;
        moe_train_config_default(&q.tc);
        for (int k = 0; k < NKEYS; k++)
            if (t->n[k])
                set_field(&q.tc, k, t->v[k][idx[k]]);
        q.tc.n = q.tokens;
        q.tc.d = q.d;
        q.tc.f = q.f;
        q.tc.m = q.m;
        q.tc.act = q.act;
        q.tc.seed = q.seed;
        int rc = resolve(t, &q);
        if (rc || (rc = add(s, &q, r)))
            return rc;
        int k = NKEYS - 1; /* the last key varies fastest */
        for (; k >= 0; k--) {
            if (t->n[k] && ++idx[k] < t->n[k])
                break;
            idx[k] = 0;
        }
        if (k < 0)
            return MOE_OK;
    }
}

/* Shortest text that reads back as v. */
static void real_text(double v, char *buf, size_t len)
{
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(buf, len, "%.*g", prec, v);
        if (strtod(buf, NULL) == v)
            return;
    }
}

void moe_spec_train_key(const moe_point *p, FILE *m)
{
    if (!p->train)
        return;
    const moe_train_config *c = &p->tc;
    char lr[32], aw[32], zw[32], tn[32];
    real_text(c->lr, lr, sizeof lr);
    real_text(c->aux_weight, aw, sizeof aw);
    real_text(c->z_weight, zw, sizeof zw);
    real_text(c->target_noise, tn, sizeof tn);
    fprintf(m,
            " train={steps=%d optimizer=%s lr=%s lr_schedule=%s warmup=%d aux=%s aux_weight=%s "
            "z_weight=%s trainable=%s eval_every=%d probe_tokens=%d teacher=%s "
            "teacher_experts=%d teacher_k=%d target_noise=%s}",
            c->steps, moe_train_enum_name("optimizer", c->optimizer), lr,
            moe_train_enum_name("lr_schedule", c->lr_schedule), c->warmup,
            moe_train_enum_name("aux", c->aux_kind), aw, zw,
            moe_train_enum_name("trainable", c->trainable), c->eval_every, c->probe_tokens,
            moe_train_enum_name("teacher", c->teacher), c->teacher_experts, c->teacher_k, tn);
}

int moe_spec_train_check(const moe_spec *s, const moe_point *p)
{
    const struct spec_train *t = s->train;
    if (!t || !p->train)
        return MOE_OK;
    int gate_trains = 0;
    moe_router *rinst = NULL;
    moe_clear_error();
    int rc = moe_router_alloc(p->rtype, &p->opts, p->tokens, p->m, &rinst);
    if (!rc) /* (an allocation error is the router check's, reported before this one) */
        rc = moe_train_router_check(rinst, &gate_trains);
    moe_router_free(rinst);
    const int it = key_index("trainable");
    if (rc)
        return moe_spec_relocate(rc, t->sec, moe_spec_first_kv(t->sec));
    if (!gate_trains && p->tc.trainable == MOE_TRAIN_GATE)
        return KV_FAIL(MOE_EINVAL, t->sec, t->kv[it] ? t->kv[it] : moe_spec_first_kv(t->sec),
                       "use trainable = all: its experts still train",
                       "trainable = gate: router %s (%s) has no trainable gate", p->router,
                       p->rtype->name);
    return MOE_OK;
}
