/* train_eval.c: the eval metrics of a training run (train.h's moe_train_row): held-out loss,
 * student top-1 per probe token, routing fluctuation, specialisation as normalised mutual
 * information with the teacher's top-1 (MI / arithmetic mean of the entropies, as sklearn's
 * normalized_mutual_info_score default), gate entropy, per-expert window loads and dead experts.
 * Owns moe_train_top1, moe_train_nmi and moe_train_eval_heldout (train_impl.h). */
#include "train_impl.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

void moe_train_top1(const moe_plan *p, int n, double *w, unsigned char *mark, int *top1)
{
    const int E = p->E;
    memset(w, 0, (size_t)n * E * sizeof *w);
    memset(mark, 0, (size_t)n * E);
    for (size_t j = 0; j < p->n_entries; j++) {
        const moe_entry *en = &p->entries[j];
        if (en->token >= n)
            continue;
        w[(size_t)en->token * E + en->expert] += en->combine_w;
        mark[(size_t)en->token * E + en->expert] = 1;
    }
    for (int t = 0; t < n; t++) {
        const double *wt = w + (size_t)t * E;
        const unsigned char *mt = mark + (size_t)t * E;
        int b = -1;
        for (int e = 0; e < E; e++)
            if (mt[e] && (b < 0 || wt[e] > wt[b]))
                b = e;
        top1[t] = b;
    }
}

double moe_train_nmi(const int *a, const int *b, int n, int ka, int kb)
{
    /* labels shifted by one: -1 ("no expert") is class 0 */
    const int A = ka + 1, B = kb + 1;
    double *joint = calloc((size_t)A * B + A + B, sizeof *joint);
    if (!joint)
        return NAN;
    double *pa = joint + (size_t)A * B, *pb = pa + A;
    for (int t = 0; t < n; t++) {
        joint[(size_t)(a[t] + 1) * B + (b[t] + 1)] += 1.0 / n;
        pa[a[t] + 1] += 1.0 / n;
        pb[b[t] + 1] += 1.0 / n;
    }
    double ha = 0.0, hb = 0.0, mi = 0.0;
    for (int i = 0; i < A; i++)
        ha -= pa[i] > 0.0 ? pa[i] * log(pa[i]) : 0.0;
    for (int j = 0; j < B; j++)
        hb -= pb[j] > 0.0 ? pb[j] * log(pb[j]) : 0.0;
    for (int i = 0; i < A; i++)
        for (int j = 0; j < B; j++) {
            double pij = joint[(size_t)i * B + j];
            if (pij > 0.0)
                mi += pij * log(pij / (pa[i] * pb[j]));
        }
    free(joint);
    if (ha == 0.0 && hb == 0.0) /* both labelings constant: identical partitions (sklearn) */
        return 1.0;
    double nmi = mi / (0.5 * (ha + hb));
    return nmi < 0.0 ? 0.0 : nmi;
}

/* Mean entropy (nats) over the first np tokens of the routing distribution: softmax(L_t)
 * summed over each expert's P columns (tr->p), or for routers without trainable routing the
 * normalised combine weights per expert (w from moe_train_top1). */
static double gate_entropy(const moe_trainer *tr, const double *w, int np)
{
    const int E = tr->E, M = tr->M, P = tr->P;
    double h = 0.0;
    for (int t = 0; t < np; t++) {
        double s = 0.0, ht = 0.0;
        for (int e = 0; e < E; e++) {
            double q = 0.0;
            if (tr->gate_kind == TR_GATE_CONST)
                q = w[(size_t)t * E + e];
            else
                for (int j = 0; j < P; j++)
                    q += tr->p[(size_t)t * M + (size_t)e * P + j];
            tr->srow[e] = q;
            s += q;
        }
        for (int e = 0; e < E && s > 0.0; e++) {
            double q = tr->srow[e] / s;
            ht -= q > 0.0 ? q * log(q) : 0.0;
        }
        h += ht;
    }
    return h / np;
}

int moe_train_eval_heldout(moe_trainer *tr, moe_train_row *row)
{
    const int np = tr->c.probe_tokens, E = tr->E;
    double parts[3];
    int rc = moe_train_forward(tr, &tr->held, tr->eplan, 0, 0, parts);
    if (rc)
        return rc;
    row->heldout_loss = parts[0];
    moe_train_top1(tr->eplan, np, tr->dd, tr->kept, tr->s_top1);
    row->gate_entropy = gate_entropy(tr, tr->dd, np);
    int changed = 0;
    for (int t = 0; t < np; t++)
        changed += tr->rows_done > 0 && tr->s_top1[t] != tr->prev_top1[t];
    row->fluctuation = (double)changed / np;
    memcpy(tr->prev_top1, tr->s_top1, (size_t)np * sizeof *tr->prev_top1);
    row->specialisation = tr->c.teacher == MOE_TEACHER_DENSE
                              ? NAN
                              : moe_train_nmi(tr->t_top1, tr->s_top1, np, tr->Et, E);
    row->dead_experts = 0;
    for (int e = 0; e < E; e++)
        row->dead_experts += tr->window[e] == 0;
    row->loads = tr->window;
    row->E = E;
    tr->rows_done++;
    return MOE_OK;
}
