/* train_grad.c: the gradients of the training engine that live on the logits, in double:
 * each router's combine (and Soft MoE's dispatch) weights as functions of the logits and their
 * backward pass, the routers' load-balancing losses, Shazeer's importance CV^2 and the ST-MoE
 * z-loss (formulas in train.h). Owns moe_train_gate_kind, moe_train_aux_z,
 * moe_train_importance and moe_train_router_backward (train_impl.h). */
#include "train_impl.h"

#include "../routers/dsv3_bias.h"

#include <math.h>
#include <string.h>

/* ---- gate formulas per router ---- */

int moe_train_gate_kind(const moe_router *r, int *gate_kind, int *aux_router, int *renorm)
{
    static const struct {
        const char *name;
        int gate, aux, renorm;
    } tab[] = {
        {"topk", TR_GATE_SOFTMAX_SEL, TR_AUX_TOPK, 1},
        {"switch", TR_GATE_FULL_P, TR_AUX_SWITCH, 1},
        {"gshard", TR_GATE_GSHARD, TR_AUX_GSHARD, 1},
        {"expert_choice", TR_GATE_FULL_P, TR_AUX_NONE, 0},
        {"dense", TR_GATE_FULL_P, TR_AUX_NONE, 0},
        {"soft_moe", TR_GATE_SOFT, TR_AUX_NONE, 0},
        {"base", TR_GATE_SIGMOID, TR_AUX_NONE, 0},
        {"sinkhorn", TR_GATE_SIGMOID, TR_AUX_NONE, 1}, /* FULL_P for k > 1, below */
        {"dsv3_bias", TR_GATE_SIG_NORM, TR_AUX_NONE, 1},
        {"hash", TR_GATE_CONST, TR_AUX_NONE, 0},
        {"replay", TR_GATE_CONST, TR_AUX_NONE, 0},
        {"topp", TR_GATE_FULL_P, TR_AUX_NONE, 1}, /* the raw p of the taken experts */
        {"relu", TR_GATE_RELU, TR_AUX_NONE, 1},
    };
    const moe_route_opts *o = &r->opts;
    if (o->score || o->normalize_topk || o->route_scale != 1.0 || o->groups)
        return moe_fail(MOE_EINVAL, "train with the router's own score options",
                        "router %s with score, normalize_topk, route_scale or groups has no "
                        "training gradient (train)",
                        r->type->name);
    if (o->group_size || o->jitter > 0.0) /* the engine's gate and aux gradients: one group */
        return moe_fail(MOE_EINVAL, "train without routing groups and jitter",
                        "router %s with group_size or jitter has no training gradient (train)",
                        r->type->name);
    for (size_t i = 0; i < sizeof tab / sizeof tab[0]; i++)
        if (strcmp(tab[i].name, r->type->name) == 0) {
            *gate_kind = tab[i].gate;
            if (tab[i].gate == TR_GATE_SIGMOID && strcmp(tab[i].name, "sinkhorn") == 0 &&
                r->k > 1)
                *gate_kind = TR_GATE_FULL_P;
            *aux_router = tab[i].aux;
            *renorm = tab[i].renorm && r->opts.renormalize;
            return MOE_OK;
        }
    return moe_fail(MOE_EINVAL, NULL, "router %s has no training gradient (train)",
                    r->type->name);
}

int moe_train_router_check(const moe_router *r, int *gate_trains)
{
    int g = TR_GATE_CONST, a = 0, rn = 0;
    int rc = moe_train_gate_kind(r, &g, &a, &rn);
    *gate_trains = !rc && g != TR_GATE_CONST;
    return rc;
}

/* ---- aux and z ---- */

void moe_train_aux_z(moe_trainer *tr, const moe_plan *p, int grad, double *aux, double *z)
{
    const int n = tr->c.n, M = tr->M, E = tr->E;
    double *pm = tr->grow, *coef = tr->drow;
    /* p (T,M) = softmax of the clean logits; z-loss */
    double zs = 0.0;
    for (int t = 0; t < n; t++) {
        const double *lt = tr->L + (size_t)t * M;
        double lse = moe_logsumexp(lt, M);
        moe_softmax(lt, M, tr->p + (size_t)t * M);
        zs += lse * lse;
        if (grad && tr->c.z_weight != 0.0)
            for (int j = 0; j < M; j++)
                tr->dL[(size_t)t * M + j] +=
                    tr->c.z_weight * 2.0 * lse * tr->p[(size_t)t * M + j] / n;
    }
    *z = zs / n;
    *aux = 0.0;
    if (tr->c.aux_kind != MOE_AUX_ROUTER || tr->aux_router == TR_AUX_NONE)
        return;
    /* coef_e: aux = sum_e coef_e P_e with the counts as constants */
    for (int e = 0; e < E; e++) {
        pm[e] = 0.0;
        coef[e] = 0.0;
    }
    for (int t = 0; t < n; t++)
        for (int e = 0; e < E; e++)
            pm[e] += tr->p[(size_t)t * M + e] / n;
    if (tr->aux_router == TR_AUX_GSHARD) {
        for (int t = 0; t < n; t++) {
            const double *lt = tr->L + (size_t)t * M;
            int b = 0;
            for (int e = 1; e < E; e++)
                if (lt[e] > lt[b])
                    b = e;
            coef[b] += (double)E / n;
        }
    } else {
        double s = tr->aux_router == TR_AUX_TOPK ? (double)E / ((double)tr->K * n)
                                                 : (double)E / n;
        for (int e = 0; e < E; e++)
            coef[e] = s * (double)p->assigned_load[e];
    }
    for (int e = 0; e < E; e++)
        *aux += coef[e] * pm[e];
    if (!grad || tr->c.aux_weight == 0.0)
        return;
    for (int t = 0; t < n; t++) { /* dp[t,e] = w coef_e / n, through the softmax */
        const double *pt = tr->p + (size_t)t * M;
        double dot = 0.0;
        for (int e = 0; e < E; e++)
            dot += pt[e] * coef[e];
        for (int e = 0; e < E; e++)
            tr->dL[(size_t)t * M + e] += tr->c.aux_weight / n * pt[e] * (coef[e] - dot);
    }
}

double moe_train_importance(moe_trainer *tr, const moe_plan *p, int grad)
{
    const int E = tr->E;
    double *imp = tr->grow, *dI = tr->drow;
    for (int e = 0; e < E; e++)
        imp[e] = 0.0;
    for (size_t i = 0; i < p->n_entries; i++)
        imp[p->entries[i].expert] += p->entries[i].combine_w;
    double mean = 0.0, sq = 0.0;
    for (int e = 0; e < E; e++) {
        mean += imp[e] / E;
        sq += imp[e] * imp[e] / E;
    }
    if (mean == 0.0)
        return 0.0;
    /* CV^2 = sq / mean^2 - 1; d/dI_e = 2 I_e / (E mean^2) - 2 sq / (E mean^3) */
    double cv2 = sq / (mean * mean) - 1.0;
    if (!grad || tr->c.aux_weight == 0.0)
        return cv2;
    for (int e = 0; e < E; e++)
        dI[e] = tr->c.aux_weight *
                (2.0 * imp[e] / (E * mean * mean) - 2.0 * sq / (E * mean * mean * mean));
    if (p->dense) {
        const int M = tr->M, P = tr->P;
        for (size_t i = 0; i < (size_t)p->n * M; i++)
            tr->dwc[i] += dI[(i % M) / P];
    } else {
        for (size_t i = 0; i < p->n_entries; i++)
            tr->dcw[i] += dI[p->entries[i].expert];
    }
    return cv2;
}

/* ---- router backward ---- */

/* Softmax backward: dl += p * (dp - <p, dp>) over len values. */
static void softmax_back(const double *pv, const double *dp, int len, double *dl)
{
    double dot = 0.0;
    for (int j = 0; j < len; j++)
        dot += pv[j] * dp[j];
    for (int j = 0; j < len; j++)
        dl[j] += pv[j] * (dp[j] - dot);
}

/* One token: kept (E) marks the experts with an entry, dg (E) holds the gradients w.r.t. their
 * combine weights. Recomputes the gates g from the routed logits (the selected set by the
 * router's own stable argsort where the formula needs it), undoes renormalisation, and adds the
 * gate formula's backward to dL[t,:]. */
static void token_backward(moe_trainer *tr, int t, const unsigned char *kept, double *dg)
{
    const int E = tr->E, k = tr->K;
    const double *lt = tr->Ln + (size_t)t * E;
    double *dl = tr->dL + (size_t)t * E, *g = tr->srow, *sig = tr->sig, *key = tr->key;
    const int *sel = tr->idx; /* the first ns after the argsort */
    int ns = 0;
    double Q = 0.0;
    for (int e = 0; e < E; e++)
        g[e] = 0.0;
    switch (tr->gate_kind) {
    case TR_GATE_SOFTMAX_SEL: /* softmax over the k selected (max-subtracted) */
        moe_argsort_desc(lt, E, tr->idx, tr->itmp);
        ns = k;
        for (int j = 0; j < ns; j++)
            Q += (g[sel[j]] = exp(lt[sel[j]] - lt[sel[0]]));
        for (int j = 0; j < ns; j++)
            g[sel[j]] /= Q;
        break;
    case TR_GATE_GSHARD: /* p1, p2 / (p1 + p2) */
        moe_softmax(lt, E, sig);
        moe_argsort_desc(lt, E, tr->idx, tr->itmp);
        ns = 2;
        Q = sig[sel[0]] + sig[sel[1]];
        for (int j = 0; j < ns; j++)
            g[sel[j]] = sig[sel[j]] / Q;
        break;
    case TR_GATE_FULL_P:
        moe_softmax(lt, E, g);
        break;
    case TR_GATE_SIGMOID:
        for (int e = 0; e < E; e++)
            g[e] = 1.0 / (1.0 + exp(-lt[e]));
        break;
    case TR_GATE_RELU:
        for (int e = 0; e < E; e++)
            g[e] = lt[e] > 0.0 ? lt[e] : 0.0;
        break;
    case TR_GATE_SIG_NORM: { /* selection by s + bias, gates s / sum of selected s */
        const double *b = moe_dsv3_bias_state(tr->r);
        for (int e = 0; e < E; e++)
            key[e] = (sig[e] = 1.0 / (1.0 + exp(-lt[e]))) + (b ? b[e] : 0.0);
        moe_argsort_desc(key, E, tr->idx, tr->itmp);
        ns = k;
        for (int j = 0; j < ns; j++)
            Q += sig[sel[j]];
        for (int j = 0; j < ns; j++)
            g[sel[j]] = sig[sel[j]] / Q;
        break;
    }
    default:
        return;
    }
    for (int e = 0; e < E; e++)
        if (!kept[e])
            dg[e] = 0.0;
    if (tr->renorm) { /* cw = g / G over the kept: dg <- (dcw - <dcw, cw>) / G */
        double G = 0.0, dot = 0.0;
        for (int e = 0; e < E; e++)
            G += kept[e] ? g[e] : 0.0;
        for (int e = 0; e < E; e++)
            dot += kept[e] ? dg[e] * g[e] / G : 0.0;
        for (int e = 0; e < E; e++)
            dg[e] = kept[e] ? (dg[e] - dot) / G : 0.0;
    }
    double dot = 0.0;
    for (int j = 0; j < ns; j++)
        dot += g[sel[j]] * dg[sel[j]];
    switch (tr->gate_kind) {
    case TR_GATE_SOFTMAX_SEL:
        for (int j = 0; j < ns; j++)
            dl[sel[j]] += g[sel[j]] * (dg[sel[j]] - dot);
        break;
    case TR_GATE_GSHARD: { /* dp_i = (dg_i - <g, dg>) / Q on the two, then the full softmax */
        double *dp = tr->grow;
        for (int e = 0; e < E; e++)
            dp[e] = 0.0;
        for (int j = 0; j < ns; j++)
            dp[sel[j]] = (dg[sel[j]] - dot) / Q;
        softmax_back(sig, dp, E, dl);
        break;
    }
    case TR_GATE_FULL_P:
        softmax_back(g, dg, E, dl);
        break;
    case TR_GATE_SIGMOID:
        for (int e = 0; e < E; e++)
            dl[e] += dg[e] * g[e] * (1.0 - g[e]);
        break;
    case TR_GATE_RELU: /* kept experts have L > 0: slope 1 */
        for (int e = 0; e < E; e++)
            dl[e] += lt[e] > 0.0 ? dg[e] : 0.0;
        break;
    case TR_GATE_SIG_NORM: /* ds_i = (dg_i - <g, dg>) / S on the selected, sigmoid' */
        for (int j = 0; j < ns; j++) {
            int e = sel[j];
            dl[e] += (dg[e] - dot) / Q * sig[e] * (1.0 - sig[e]);
        }
        break;
    default:
        break;
    }
}

/* Soft MoE: D = softmax over tokens per column, W = softmax over columns per token. */
static void soft_backward(moe_trainer *tr)
{
    const int n = tr->c.n, M = tr->M;
    double *col = tr->dcw, *pc = col + n, *dc = pc + n, *dlc = dc + n; /* 4n scratch */
    for (int j = 0; j < M; j++) {
        for (int t = 0; t < n; t++) {
            col[t] = tr->Ln[(size_t)t * M + j];
            dc[t] = tr->dd[(size_t)t * M + j];
            dlc[t] = 0.0;
        }
        moe_softmax(col, n, pc);
        softmax_back(pc, dc, n, dlc);
        for (int t = 0; t < n; t++)
            tr->dL[(size_t)t * M + j] += dlc[t];
    }
    for (int t = 0; t < n; t++) {
        moe_softmax(tr->Ln + (size_t)t * M, M, tr->srow);
        softmax_back(tr->srow, tr->dwc + (size_t)t * M, M, tr->dL + (size_t)t * M);
    }
}

int moe_train_router_backward(moe_trainer *tr, const moe_plan *p)
{
    const int n = p->n, E = tr->E;
    if (tr->gate_kind == TR_GATE_CONST)
        return MOE_OK;
    if (tr->gate_kind == TR_GATE_SOFT) {
        soft_backward(tr);
        return MOE_OK;
    }
    /* (T,E) maps of the entries: every router here emits at most one entry per (t, e) */
    double *dg = tr->dd; /* (T,M) scratch: dd is only used by dense plans */
    memset(dg, 0, (size_t)n * E * sizeof *dg);
    memset(tr->kept, 0, (size_t)n * E);
    for (size_t i = 0; i < p->n_entries; i++) {
        const moe_entry *en = &p->entries[i];
        size_t j = (size_t)en->token * E + en->expert;
        dg[j] += tr->dcw[i];
        tr->kept[j] = 1;
    }
    for (int t = 0; t < n; t++)
        token_backward(tr, t, tr->kept + (size_t)t * E, dg + (size_t)t * E);
    return MOE_OK;
}
