/* test_metrics.c: the routing metrics (sim/metrics.c) on hand-built plans, each value
 * worked by hand in the comment above its check (NumPy confirmations quoted where stated), and
 * the JSON writer: keys, values, null for NaN, atomic write, errors on unwritable paths. */
#include "check.h"
#include "metric_table.h"
#include "moe.h"

#include <dirent.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- helpers ---- */

static int n_files(const char *dir) /* entries of dir other than . and .. */
{
    DIR *d = opendir(dir);
    if (!d)
        return -1;
    int cnt = 0;
    struct dirent *de;
    while ((de = readdir(d)))
        if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
            cnt++;
    closedir(d);
    return cnt;
}

static void check_longs(const char *what, const long *got, const long *want, int len)
{
    int bad = 0;
    for (int i = 0; i < len; i++)
        if (got[i] != want[i]) {
            fprintf(stderr, "%s[%d] = %ld, expected %ld\n", what, i, got[i], want[i]);
            bad++;
        }
    CHECK(bad == 0, "%s: %d values differ", what, bad);
}

/* ---- a sparse plan with drops ---- */

/* n = 4, E = 3, C = 2, k = 2: 8 claims, assigned_load (4, 2, 2), 5 kept entries
 *   (t0,e0,s0) (t1,e0,s1) (t0,e1,s0) (t2,e1,s1) (t1,e2,s0); token 3 has no entry.
 * importance (1.5, 0.5, 1.0) and aux_loss 1.25 as a router would have reported them.
 * logits rows [0,0,0], [ln2,0,0], [ln6,0,0], [1,1,1]: logsumexp = ln3, ln4, ln8, 1 + ln3. */
static moe_plan *sparse_plan(double *logits)
{
    moe_plan *p = moe_plan_alloc(4, 3, 16);
    if (!p || moe_plan_reset(p, 4, 3, 3))
        return p;
    p->k = 2;
    p->capacity = 2;
    const int ent[5][3] = {{0, 0, 0}, {1, 0, 1}, {0, 1, 0}, {2, 1, 1}, {1, 2, 0}};
    for (int i = 0; i < 5; i++)
        moe_plan_push(p, ent[i][0], ent[i][1], ent[i][2], 1.0, 0.5);
    p->assigned_load[0] = 4;
    p->assigned_load[1] = 2;
    p->assigned_load[2] = 2;
    p->importance[0] = 1.5;
    p->importance[1] = 0.5;
    p->importance[2] = 1.0;
    p->n_claims = 8;
    p->aux_loss = 1.25;
    const double L[12] = {0, 0, 0, log(2.0), 0, 0, log(6.0), 0, 0, 1, 1, 1};
    memcpy(logits, L, sizeof L);
    return p;
}

static void test_sparse(void)
{
    double L[12];
    moe_plan *p = sparse_plan(L);
    moe_metrics *mt = moe_metrics_alloc(3);
    CHECK(p && mt, "alloc");
    if (!p || !mt)
        goto out;

    /* d = 8, f = 16, GELU, gate computed */
    CHECK_INT(moe_metrics_compute(p, L, 8, 16, MOE_ACT_GELU_TANH, 1, mt), MOE_OK);
    const long assigned[3] = {4, 2, 2}, kept[3] = {2, 2, 1};
    check_longs("assigned_load", mt->assigned_load, assigned, 3);
    check_longs("kept_load", mt->kept_load, kept, 3);
    /* experts per token: t3 -> 0, t2 -> 1 (e1), t0 -> 2 (e0,e1), t1 -> 2 (e0,e2) */
    const long hist[4] = {1, 1, 2, 0};
    check_longs("experts_per_token", mt->experts_per_token, hist, 4);
    CHECK_INT(mt->n_tokens, 4);
    CHECK_INT(mt->capacity, 2);
    CHECK_INT(mt->num_entries, 5);
    /* load_imbalance: max 4 / mean 8/3 = 1.5; kept: max 2 / mean 5/3 = 1.2 */
    CHECK_NEAR(mt->load_imbalance, 1.5, 1e-15);
    CHECK_NEAR(mt->kept_load_imbalance, 1.2, 1e-15);
    /* load_cv: deviations from 8/3 are (4/3, -2/3, -2/3), population variance
     * (16 + 4 + 4)/9/3 = 8/9, std 2 sqrt2/3, cv = (2 sqrt2/3)/(8/3) = sqrt2/4
     * (NumPy a.std()/a.mean() = 0.3535533905932738) */
    CHECK_NEAR(mt->load_cv, sqrt(2.0) / 4, 1e-15);
    /* drops: (8 - 5)/8 claims; 1 of 4 tokens without an entry */
    CHECK_NEAR(mt->assignment_drop_rate, 0.375, 1e-15);
    CHECK_NEAR(mt->token_drop_rate, 0.25, 1e-15);
    /* importance (1.5, 0.5, 1): mean 1, population variance (0.25 + 0.25 + 0)/3 = 1/6 */
    CHECK_NEAR(mt->importance[0], 1.5, 0);
    CHECK_NEAR(mt->importance_cv2, 1.0 / 6, 1e-15);
    CHECK_NEAR(mt->aux_loss, 1.25, 0);
    /* z_loss = (ln3^2 + ln4^2 + ln8^2 + (1 + ln3)^2)/4 (NumPy: 2.9642529199745002) */
    double l3 = log(3.0), l4 = log(4.0), l8 = log(8.0);
    CHECK_NEAR(mt->z_loss, (l3 * l3 + l4 * l4 + l8 * l8 + (1 + l3) * (1 + l3)) / 4, 1e-14);
    CHECK_NEAR(mt->z_loss, 2.9642529199745002, 1e-14);
    /* FLOPs: gate 2*n*d*M = 2*4*8*3 = 192; per token-expert 4*d*f = 512, useful 5 entries
     * = 2560; padded E*C*512 = 3072; no soft dispatch/combine for a sparse plan */
    CHECK_NEAR(mt->flops_gate, 192, 0);
    CHECK_NEAR(mt->flops_expert_useful, 2560, 0);
    CHECK_NEAR(mt->flops_expert_padded, 3072, 0);
    CHECK(mt->flops_soft_dispatch == 0 && mt->flops_soft_combine == 0, "soft flops not 0");
    /* executed: without pad_to_capacity the 5 kept entries, 2560; with it E*C = 3 * 2 rows,
     * 3072 (moe_metrics_set_opts reads the option) */
    CHECK_NEAR(mt->flops_expert_executed, 2560, 0);
    moe_route_opts po;
    moe_route_opts_default(&po);
    po.pad_to_capacity = 1;
    CHECK_INT(moe_metrics_set_opts(mt, &po), MOE_OK);
    CHECK_INT(moe_metrics_compute(p, L, 8, 16, MOE_ACT_GELU_TANH, 1, mt), MOE_OK);
    CHECK_NEAR(mt->flops_expert_executed, 3072, 0);
    CHECK_NEAR(mt->flops_expert_useful, 2560, 0); /* the others do not move */
    CHECK_NEAR(mt->flops_expert_padded, 3072, 0);
    po.pad_to_capacity = 0;
    CHECK_INT(moe_metrics_set_opts(mt, &po), MOE_OK);
    CHECK(isnan(mt->output_error_dense) && isnan(mt->output_error_dropless),
          "output errors are left NaN by compute");

    /* SwiGLU, gate not computed: per token-expert 6*d*f = 768; useful 5*768 = 3840,
     * padded 3*2*768 = 4608, gate 0 */
    CHECK_INT(moe_metrics_compute(p, L, 8, 16, MOE_ACT_SWIGLU, 0, mt), MOE_OK);
    CHECK_NEAR(mt->flops_gate, 0, 0);
    CHECK_NEAR(mt->flops_expert_useful, 3840, 0);
    CHECK_NEAR(mt->flops_expert_padded, 4608, 0);
    CHECK_NEAR(mt->flops_expert_executed, 3840, 0);

    /* d = 0: no FLOPs at all */
    CHECK_INT(moe_metrics_compute(p, L, 0, 16, MOE_ACT_GELU_TANH, 1, mt), MOE_OK);
    CHECK(mt->flops_gate == 0 && mt->flops_expert_useful == 0 && mt->flops_expert_padded == 0,
          "FLOPs with d = 0");

    /* no logits: z_loss NaN */
    CHECK_INT(moe_metrics_compute(p, NULL, 0, 0, MOE_ACT_GELU_TANH, 0, mt), MOE_OK);
    CHECK(isnan(mt->z_loss), "z_loss without logits = %g", mt->z_loss);

out:
    moe_metrics_free(mt);
    moe_plan_free(p);
}

/* ---- empty plan: all zero loads ---- */

static void test_empty(void)
{
    /* n = 3, E = 2, C = 0, no claims and no entries (expert choice with cf = 0):
     * mean loads 0 -> imbalance, cv, cv2 all 0; no claims -> assignment drop 0;
     * every token without an entry -> token drop 1, histogram (3, 0, 0). */
    moe_plan *p = moe_plan_alloc(3, 2, 4);
    moe_metrics *mt = moe_metrics_alloc(2);
    CHECK(p && mt && moe_plan_reset(p, 3, 2, 2) == MOE_OK, "alloc");
    if (p && mt) {
        const double L[6] = {0};
        CHECK_INT(moe_metrics_compute(p, L, 4, 4, MOE_ACT_RELU, 1, mt), MOE_OK);
        CHECK(mt->load_imbalance == 0 && mt->kept_load_imbalance == 0 && mt->load_cv == 0 &&
                  mt->importance_cv2 == 0,
              "zero-mean statistics not 0");
        CHECK_NEAR(mt->assignment_drop_rate, 0, 0);
        CHECK_NEAR(mt->token_drop_rate, 1, 0);
        const long hist[3] = {3, 0, 0};
        check_longs("empty experts_per_token", mt->experts_per_token, hist, 3);
        /* padded FLOPs E*C*... = 0 with C = 0; gate 2*3*4*2 = 48; z_loss = ln2^2 */
        CHECK_NEAR(mt->flops_expert_padded, 0, 0);
        CHECK_NEAR(mt->flops_gate, 48, 0);
        CHECK_NEAR(mt->z_loss, log(2.0) * log(2.0), 1e-15);
    }
    moe_metrics_free(mt);
    moe_plan_free(p);
}

/* ---- dense plans ---- */

static void test_dense(void)
{
    /* A hand-built dense plan: n = 2, E = 2, P = C = 2, M = 4; entries for both tokens on
     * (e0,s0), (e0,s1), (e1,s0) only (6 entries; slot (e1,s1) empty). assigned_load (2, 2).
     * kept_load = distinct slots = (2, 1): kept imbalance 2/1.5 = 4/3. Both tokens reach both
     * experts: histogram (0, 0, 2). Dense: no drops (n_claims 8 is not used).
     * FLOPs d = 4, f = 8, GELU: gate 2*2*4*4 = 64; per slot 4*4*8 = 128, useful 3 filled slots
     * = 384; padded E*C*128 = 512; dispatch = combine = 2*n*M*d = 64. */
    moe_plan *p = moe_plan_alloc(2, 2, 16);
    moe_metrics *mt = moe_metrics_alloc(2);
    CHECK(p && mt && moe_plan_reset(p, 2, 2, 4) == MOE_OK, "alloc");
    if (!p || !mt)
        goto out;
    p->dense = 1;
    p->capacity = 2;
    for (int t = 0; t < 2; t++) {
        moe_plan_push(p, t, 0, 0, 0.5, 0.25);
        moe_plan_push(p, t, 0, 1, 0.5, 0.25);
        moe_plan_push(p, t, 1, 0, 0.5, 0.5);
    }
    p->assigned_load[0] = p->assigned_load[1] = 2;
    p->importance[0] = 1.0;
    p->importance[1] = 1.0;
    p->n_claims = 8;
    const double L[8] = {0};
    CHECK_INT(moe_metrics_compute(p, L, 4, 8, MOE_ACT_GELU_TANH, 1, mt), MOE_OK);
    const long kept[2] = {2, 1}, hist[3] = {0, 0, 2};
    check_longs("dense kept_load", mt->kept_load, kept, 2);
    check_longs("dense experts_per_token", mt->experts_per_token, hist, 3);
    CHECK_NEAR(mt->load_imbalance, 1.0, 0);
    CHECK_NEAR(mt->kept_load_imbalance, 4.0 / 3, 1e-15);
    CHECK_NEAR(mt->assignment_drop_rate, 0, 0);
    CHECK_NEAR(mt->token_drop_rate, 0, 0);
    CHECK_NEAR(mt->flops_gate, 64, 0);
    CHECK_NEAR(mt->flops_expert_useful, 384, 0);
    CHECK_NEAR(mt->flops_expert_padded, 512, 0);
    CHECK_NEAR(mt->flops_soft_dispatch, 64, 0);
    CHECK_NEAR(mt->flops_soft_combine, 64, 0);
    /* z_loss: every row logsumexp(0,0,0,0) = ln4 */
    CHECK_NEAR(mt->z_loss, log(4.0) * log(4.0), 1e-15);

    /* SwiGLU on the same plan: per slot 6*4*8 = 192; useful 3*192 = 576, padded 4*192 = 768 */
    CHECK_INT(moe_metrics_compute(p, L, 4, 8, MOE_ACT_SWIGLU, 1, mt), MOE_OK);
    CHECK_NEAR(mt->flops_expert_useful, 576, 0);
    CHECK_NEAR(mt->flops_expert_padded, 768, 0);

    /* an entry outside (T, E, C) of the dense plan, each field in turn: refused, the entry
     * named (a dense plan's entries are checked by the same pass that marks them) */
    for (int f = 0; f < 3; f++) {
        moe_entry *en = &p->entries[4], keep = *en;
        if (f == 0)
            en->slot = 2; /* C */
        else if (f == 1)
            en->expert = 2; /* E */
        else
            en->token = 2; /* T */
        moe_clear_error();
        CHECK_INT(moe_metrics_compute(p, L, 4, 8, MOE_ACT_GELU_TANH, 1, mt), MOE_EINVAL);
        CHECK(strstr(moe_errmsg(), "entry 4") != NULL, "dense, field %d: message: %s", f,
              moe_errmsg());
        *en = keep;
    }
    moe_clear_error();
    CHECK_INT(moe_metrics_compute(p, L, 4, 8, MOE_ACT_GELU_TANH, 1, mt), MOE_OK);
out:
    moe_metrics_free(mt);
    moe_plan_free(p);
}

/* ---- plans from the routers ---- */

static int route(const char *name, const moe_route_opts *o, const double *L, int n, int m,
                 moe_plan *plan)
{
    moe_router *r = NULL;
    int rc = moe_router_alloc(moe_router_find(name), o, n, m, &r);
    if (rc)
        return rc;
    moe_route_in in;
    memset(&in, 0, sizeof in);
    in.n = n;
    in.m = m;
    in.logits = L;
    rc = moe_router_route(r, &in, plan);
    moe_router_free(r);
    return rc;
}

static void test_from_routers(void)
{
    moe_plan *p = moe_plan_alloc(8, 4, 32);
    moe_metrics *mt2 = moe_metrics_alloc(2);
    CHECK(p && mt2, "alloc");
    if (!p || !mt2)
        goto out;
    moe_route_opts o;

    /* expert_choice, n = 4, E = 2, cf = 1 (C = 2) on rows [0,0], [ln3,0], [0,0], [0,ln3]:
     * expert 0 takes t1, t0; expert 1 takes t3, t0 (test_routers_ec_soft.c works this out).
     * assigned = kept = (2, 2); no dropped claims; t2 untaken -> token drop 1/4;
     * histogram (t2: 0; t1, t3: 1; t0: 2) = (1, 2, 1); importance (5/4, 5/4) -> cv2 0. */
    const double l3 = log(3.0);
    const double ec[8] = {0, 0, l3, 0, 0, 0, 0, l3};
    moe_route_opts_default(&o);
    CHECK_INT(route("expert_choice", &o, ec, 4, 2, p), MOE_OK);
    CHECK_INT(moe_metrics_compute(p, ec, 0, 0, MOE_ACT_GELU_TANH, 0, mt2), MOE_OK);
    const long two[2] = {2, 2}, hist[3] = {1, 2, 1};
    check_longs("ec assigned", mt2->assigned_load, two, 2);
    check_longs("ec kept", mt2->kept_load, two, 2);
    check_longs("ec experts_per_token", mt2->experts_per_token, hist, 3);
    CHECK_NEAR(mt2->assignment_drop_rate, 0, 0);
    CHECK_NEAR(mt2->token_drop_rate, 0.25, 0);
    CHECK_NEAR(mt2->importance_cv2, 0, 1e-15);
    CHECK_NEAR(mt2->aux_loss, 0, 0);

    /* soft_moe, n = 3, E = 2, P = 2, M = 4: assigned = kept = P = 2 per expert; every token
     * reaches both experts (histogram (0, 0, 3)); 12 entries; FLOPs d = 2, f = 3:
     * useful = padded = E*P*4*2*3 = 96; dispatch = combine = 2*3*4*2 = 48. */
    const double L[12] = {0.5, -1, 2, 0, 1, 1, -2, 0.25, 3, 0, 0, 1};
    moe_route_opts_default(&o);
    o.slots_per_expert = 2;
    CHECK_INT(route("soft_moe", &o, L, 3, 4, p), MOE_OK);
    CHECK_INT(moe_metrics_compute(p, L, 2, 3, MOE_ACT_GELU_TANH, 0, mt2), MOE_OK);
    const long hist3[3] = {0, 0, 3};
    check_longs("soft assigned", mt2->assigned_load, two, 2);
    check_longs("soft kept", mt2->kept_load, two, 2);
    check_longs("soft experts_per_token", mt2->experts_per_token, hist3, 3);
    CHECK_INT(mt2->num_entries, 12);
    CHECK_INT(mt2->capacity, 2);
    CHECK_NEAR(mt2->assignment_drop_rate, 0, 0);
    CHECK_NEAR(mt2->token_drop_rate, 0, 0);
    CHECK_NEAR(mt2->flops_expert_useful, 96, 0);
    CHECK_NEAR(mt2->flops_expert_padded, 96, 0);
    CHECK_NEAR(mt2->flops_soft_dispatch, 48, 0);
    CHECK_NEAR(mt2->flops_soft_combine, 48, 0);
    CHECK_NEAR(mt2->importance[0] + mt2->importance[1], 3.0, 1e-14);
out:
    moe_metrics_free(mt2);
    moe_plan_free(p);
}

/* ---- errors ---- */

static void test_errors(void)
{
    double L[12];
    moe_plan *p = sparse_plan(L);
    moe_metrics *mt = moe_metrics_alloc(3), *mt4 = moe_metrics_alloc(4);
    CHECK(p && mt && mt4, "alloc");
    if (!p || !mt || !mt4)
        goto out;

    moe_clear_error();
    CHECK(moe_metrics_alloc(0) == NULL, "metrics for E = 0");
    moe_clear_error();
    CHECK_INT(moe_metrics_compute(p, L, 0, 0, 0, 0, mt4), MOE_EINVAL); /* E differs */
    moe_clear_error();
    CHECK_INT(moe_metrics_compute(p, L, -1, 0, 0, 0, mt), MOE_EINVAL); /* d < 0 */

    /* more entries than claims */
    p->n_claims = 4;
    moe_clear_error();
    CHECK_INT(moe_metrics_compute(p, L, 0, 0, 0, 0, mt), MOE_EINVAL);
    CHECK(strstr(moe_errmsg(), "claims") != NULL, "message: %s", moe_errmsg());
    p->n_claims = 8;

    /* an entry with slot >= C */
    p->entries[4].slot = 2;
    moe_clear_error();
    CHECK_INT(moe_metrics_compute(p, L, 0, 0, 0, 0, mt), MOE_EINVAL);
    CHECK(strstr(moe_errmsg(), "entry 4") != NULL, "message: %s", moe_errmsg());
    p->entries[4].slot = 0;
    moe_clear_error();
    CHECK_INT(moe_metrics_compute(p, L, 0, 0, 0, 0, mt), MOE_OK);
out:
    moe_metrics_free(mt);
    moe_metrics_free(mt4);
    moe_plan_free(p);
    moe_metrics_free(NULL); /* no-op */
}

/* ---- JSON ---- */

static const char *const json_keys[] = {
    "router", "n_tokens", "num_experts", "capacity", "num_entries", "assigned_load", "kept_load",
    "importance", "load_imbalance", "kept_load_imbalance", "load_cv", "assignment_drop_rate",
    "token_drop_rate", "importance_cv2", "aux_loss", "z_loss", "experts_per_token", "flops_gate",
    "flops_expert_useful", "flops_expert_padded", "flops_soft_dispatch", "flops_soft_combine",
    "output_error_dense", "output_error_dropless", "groups_touched_mean", "groups_touched",
    "token_drop_rate_group_min", "token_drop_rate_group_mean", "token_drop_rate_group_max",
    "seq_aux_loss", "load_loss_shazeer", "overflow_expert1", "overflow_expert2",
    "importance_loss_vmoe", "load_loss_vmoe", "balancedness", "flops_expert_executed"};

static void test_json(void)
{
    char dir[] = "/tmp/moesim_test_metrics_XXXXXX";
    CHECK(mkdtemp(dir) != NULL, "mkdtemp");
    double L[12];
    moe_plan *p = sparse_plan(L);
    moe_metrics *mt = moe_metrics_alloc(3);
    char path[512] = "", bad[512];
    CHECK(p && mt, "alloc");
    if (!p || !mt)
        goto out;
    CHECK_INT(moe_metrics_compute(p, L, 8, 16, MOE_ACT_GELU_TANH, 1, mt), MOE_OK);
    mt->output_error_dropless = 0.1; /* filled by the caller; output_error_dense stays NaN */

    snprintf(path, sizeof path, "%s/m.json", dir);
    CHECK_INT(moe_metrics_write_json(mt, "topk", path), MOE_OK);
    CHECK_INT(n_files(dir), 1); /* no temporary left behind */

    json_error_t jerr;
    json_t *o = json_load_file(path, 0, &jerr);
    CHECK(o && json_is_object(o), "read back %s: %s", path, o ? "" : jerr.text);
    if (o) {
        /* exactly the keys of the metrics JSON, in the documented order */
        size_t nk = sizeof json_keys / sizeof json_keys[0], i = 0;
        int order_bad = 0;
        const char *key;
        json_t *v;
        json_object_foreach(o, key, v)
        {
            if (i >= nk || strcmp(key, json_keys[i]) != 0)
                order_bad++;
            i++;
        }
        CHECK(i == nk && order_bad == 0, "%zu keys (%d out of place), expected %zu", i,
              order_bad, nk);
        CHECK(json_object_get(o, "k") == NULL, "key k present");

        const char *router = json_string_value(json_object_get(o, "router"));
        CHECK(router && !strcmp(router, "topk"), "router %s", router ? router : "(not a string)");
        CHECK_INT(json_integer_value(json_object_get(o, "n_tokens")), 4);
        CHECK_INT(json_integer_value(json_object_get(o, "num_experts")), 3);
        CHECK_INT(json_integer_value(json_object_get(o, "capacity")), 2);
        CHECK_INT(json_integer_value(json_object_get(o, "num_entries")), 5);
        json_t *al = json_object_get(o, "assigned_load"), *kl = json_object_get(o, "kept_load");
        json_t *ept = json_object_get(o, "experts_per_token"), *im = json_object_get(o, "importance");
        CHECK(json_array_size(al) == 3 && json_array_size(kl) == 3 && json_array_size(ept) == 4 &&
                  json_array_size(im) == 3,
              "array lengths");
        CHECK_INT(json_integer_value(json_array_get(al, 0)), 4);
        CHECK_INT(json_integer_value(json_array_get(kl, 2)), 1);
        CHECK_INT(json_integer_value(json_array_get(ept, 2)), 2);
        CHECK(json_real_value(json_array_get(im, 1)) == 0.5, "importance[1]");
        /* 17 significant digits: doubles round-trip exactly */
        CHECK(json_real_value(json_object_get(o, "load_cv")) == mt->load_cv, "load_cv exact");
        CHECK(json_real_value(json_object_get(o, "z_loss")) == mt->z_loss, "z_loss exact");
        CHECK(json_real_value(json_object_get(o, "importance_cv2")) == mt->importance_cv2,
              "importance_cv2 exact");
        CHECK(json_real_value(json_object_get(o, "assignment_drop_rate")) == 0.375, "drop");
        CHECK(json_real_value(json_object_get(o, "flops_expert_padded")) == 3072, "padded");
        CHECK(json_real_value(json_object_get(o, "flops_soft_dispatch")) == 0 &&
                  json_is_real(json_object_get(o, "flops_soft_dispatch")),
              "soft dispatch 0.0");
        CHECK(json_is_null(json_object_get(o, "output_error_dense")), "NaN is written as null");
        CHECK(json_real_value(json_object_get(o, "output_error_dropless")) == 0.1,
              "output_error_dropless");
        json_decref(o);
    }

    /* overwrite in place; a NULL router name becomes null */
    CHECK_INT(moe_metrics_write_json(mt, NULL, path), MOE_OK);
    o = json_load_file(path, 0, &jerr);
    CHECK(o && json_is_null(json_object_get(o, "router")), "router null");
    json_decref(o);
    CHECK_INT(n_files(dir), 1);

    /* a folder that does not exist: error naming the path, no file */
    snprintf(bad, sizeof bad, "%s/missing/m.json", dir);
    moe_clear_error();
    CHECK_INT(moe_metrics_write_json(mt, "topk", bad), MOE_EIO);
    CHECK(strstr(moe_errmsg(), bad) != NULL, "message names the path: %s", moe_errmsg());
    CHECK(access(bad, F_OK) != 0, "%s exists", bad);

    /* the target is a directory: refused before a temporary is made */
    snprintf(bad, sizeof bad, "%s/adir", dir);
    CHECK(mkdir(bad, 0700) == 0, "mkdir %s", bad);
    moe_clear_error();
    CHECK_INT(moe_metrics_write_json(mt, "topk", bad), MOE_EIO);
    CHECK(strstr(moe_errmsg(), bad) != NULL, "message names the path: %s", moe_errmsg());
    CHECK_INT(n_files(dir), 2); /* m.json and adir only */
    CHECK_INT(n_files(bad), 0);
    rmdir(bad);
    moe_clear_error();
out:
    if (path[0])
        unlink(path);
    rmdir(dir);
    moe_metrics_free(mt);
    moe_plan_free(p);
}

/* The metric table: each JSON position 1..rows once (the JSON test above checks the order they
 * give); the scalar rows are the stored columns, their kind agrees with is_long; array rows are
 * found by their store column; values read through the table equal the fields; the compare
 * classes of the rows are those documented by `moesim compare --help` (counts exact, output
 * errors their own class, everything else routing). */
static void test_table(void)
{
    int seen[MOE_METRIC_NROWS + 1] = {0};
    for (int i = 0; i < MOE_METRIC_NROWS; i++) {
        const moe_point_metric *m = moe_metric_row(i);
        CHECK(m && m->name && m->help, "row %d", i);
        if (!m)
            continue;
        CHECK(m->json_pos >= 1 && m->json_pos <= MOE_METRIC_NROWS, "%s json_pos", m->name);
        if (m->json_pos >= 1 && m->json_pos <= MOE_METRIC_NROWS)
            seen[m->json_pos]++;
        int scalar = m->kind == MOE_METRIC_DOUBLE || m->kind == MOE_METRIC_LONG;
        CHECK(scalar == (i < MOE_POINT_NMETRICS), "%s: scalar rows first", m->name);
        if (scalar)
            CHECK(m->is_long == (m->kind == MOE_METRIC_LONG), "%s is_long", m->name);
        else
            CHECK(m->kind == MOE_METRIC_INT || m->column, "%s has a store column", m->name);
    }
    for (int p = 1; p <= MOE_METRIC_NROWS; p++)
        CHECK(seen[p] == 1, "JSON position %d used %d times", p, seen[p]);
    CHECK(moe_metric_row(MOE_METRIC_NROWS) == NULL && moe_metric_row(-1) == NULL, "bounds");
    CHECK(moe_point_metrics[MOE_POINT_NMETRICS].name == NULL, "scalar table terminated");

    const moe_point_metric *a = moe_metric_find("assigned");
    const moe_point_metric *h = moe_metric_find("experts_per_token");
    CHECK(a && !strcmp(a->name, "assigned_load") && a->kind == MOE_METRIC_EXPERT_LONG, "assigned");
    CHECK(h && h->kind == MOE_METRIC_HISTOGRAM, "histogram");
    const moe_point_metric *g = moe_metric_find("groups_touched");
    CHECK(g && g->kind == MOE_METRIC_GROUP_HISTOGRAM, "groups histogram");
    moe_metrics *m8 = moe_metrics_alloc(8);
    moe_route_opts o8;
    moe_route_opts_default(&o8);
    o8.groups = 4;
    if (h && g && m8) {
        CHECK_INT(moe_metric_len(h, m8), 9);
        CHECK_INT(moe_metric_len(g, m8), 2); /* one group without groups */
        CHECK_INT(moe_metrics_set_opts(m8, &o8), MOE_OK);
        CHECK_INT(moe_metric_len(g, m8), 5);
        o8.groups = 3; /* does not divide 8 */
        CHECK_INT(moe_metrics_set_opts(m8, &o8), MOE_EINVAL);
        CHECK(strstr(moe_errmsg(), "groups") != NULL, "names groups: %s", moe_errmsg());
        moe_clear_error();
    }
    moe_metrics_free(m8);
    CHECK(moe_metric_find("nope") == NULL, "unknown metric");

    static const struct { const char *name; int tol; } tols[] = {
        {"capacity", MOE_TOL_EXACT},          {"n_tokens", MOE_TOL_EXACT},
        {"flops_gate", MOE_TOL_EXACT},        {"kept", MOE_TOL_EXACT},
        {"experts_per_token", MOE_TOL_EXACT}, {"importance", MOE_TOL_ROUTING},
        {"groups_touched", MOE_TOL_EXACT},    {"seq_aux_loss", MOE_TOL_ROUTING},
        {"token_drop_rate_group_max", MOE_TOL_ROUTING}, {"balancedness", MOE_TOL_ROUTING},
        {"load_cv", MOE_TOL_ROUTING},         {"z_loss", MOE_TOL_ROUTING},
        {"output_error_dense", MOE_TOL_OUTPUT}, {"output_error_dropless", MOE_TOL_OUTPUT},
    };
    for (size_t i = 0; i < sizeof tols / sizeof tols[0]; i++) {
        const moe_point_metric *m = moe_metric_find(tols[i].name);
        CHECK(m && m->tol == tols[i].tol, "tolerance class of %s", tols[i].name);
    }

    moe_metrics *mt = moe_metrics_alloc(4);
    CHECK(mt != NULL, "alloc");
    if (mt) {
        mt->capacity = 7;
        mt->load_cv = 0.25;
        CHECK(moe_metric_value(mt, moe_metric_find("capacity")) == 7.0, "long value");
        CHECK(moe_metric_value(mt, moe_metric_find("load_cv")) == 0.25, "double value");
        CHECK(moe_metric_value(mt, moe_metric_find("num_experts")) == 4.0, "int value (E)");
        CHECK_INT(moe_point_metric_index("load_cv"),
                  moe_metric_find("load_cv") - moe_point_metrics);
        moe_metrics_free(mt);
    }
}

int main(void)
{
    test_sparse();
    test_empty();
    test_dense();
    test_from_routers();
    test_errors();
    test_json();
    test_table();
    return check_report("test_metrics");
}
