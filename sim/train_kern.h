/* train_kern.h: the body of the training kernels, written once over a real type R and
 * included by train_kern.c for float (sgemm) and double (dgemm). Each inclusion defines
 * R, FN(name) (name suffixed by the type), GEMM (cblas_sgemm / cblas_dgemm), GATE
 * (moe_gate_logits / moe_gate_logits_d), EXP, TANH, ERF, and FAST_GELU: 1 (float) takes GELU
 * from the layer's vectorised moe_activate (layer.h) and its derivative from the forward's
 * output, 0 (double, the gradient checks) uses libm's tanh/erf throughout.
 * Not a header of its own: no include guard on purpose. */

/* c (m,n) = op(a) op(b) + beta c, row-major, leading dimensions as stored. */
static void FN(gemm)(int ta, int tb, size_t m, size_t n, size_t k, const R *a, size_t lda,
                     const R *b, size_t ldb, R beta, R *c, size_t ldc)
{
    GEMM(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, (int)m,
         (int)n, (int)k, (R)1, a, (int)lda, b, (int)ldb, beta, c, (int)ldc);
}

static void FN(load_x)(void *xr, const float *x, size_t len)
{
    R *o = xr;
    for (size_t i = 0; i < len; i++)
        o[i] = (R)x[i];
}

/* The gate logits by the layer's fixed-order routine (gate.h): the same bits as moesim route
 * for the same x and wg, whatever the BLAS kernel or thread count. */
static void FN(gate)(moe_trainer *tr, const void *xr, const void *w, int m, double *out)
{
    GATE(xr, (size_t)tr->c.n, (size_t)tr->c.d, w, (size_t)m, out, tr->threads);
}

/* ---- activations: a = act(h) over rows of hid (nr,FW) into act (nr,F) ---- */

static void FN(act_forward)(int act, const R *hid, R *a, size_t nr, size_t f)
{
    const R c = (R)0.7978845608028654; /* sqrt(2/pi) */
    if (act == MOE_ACT_SWIGLU) {
        for (size_t r = 0; r < nr; r++) {
            const R *g = hid + r * 2 * f, *u = g + f;
            for (size_t j = 0; j < f; j++)
                a[r * f + j] = g[j] / ((R)1 + EXP(-g[j])) * u[j];
        }
        return;
    }
    const size_t len = nr * f;
    if (act == MOE_ACT_RELU) { /* a loop of its own, so that it vectorises */
        for (size_t i = 0; i < len; i++)
            a[i] = hid[i] > (R)0 ? hid[i] : (R)0;
        return;
    }
#if FAST_GELU
    memcpy(a, hid, len * sizeof(R));
    moe_activate(act, a, len);
    return;
#endif
    for (size_t i = 0; i < len; i++) {
        R h = hid[i];
        switch (act) {
        case MOE_ACT_GELU_ERF: a[i] = (R)0.5 * h * ((R)1 + ERF(h * (R)0.7071067811865476)); break;
        default: a[i] = (R)0.5 * h * ((R)1 + TANH(c * (h + (R)0.044715 * h * h * h))); break;
        }
    }
}

/* dh (nr,FW) = da (nr,F) * act'(hid); da may alias dh's first F columns only for non-SwiGLU
 * (it is dh itself there: the row widths agree). a (nr,F): act(hid) from the forward.
 * FAST_GELU: GELU is h g(h) with g = sigmoid(2z), z = sqrt(2/pi) (h + 0.044715 h^3) for the
 * tanh form and g = Phi(h) for the erf form, so g = a / h (g(0) = 1/2, taken for |h| below
 * 1e-30 where the quotient loses precision), and
 *   tanh form: act' = g + 2 h g (1 - g) sqrt(2/pi) (1 + 0.134145 h^2)
 *   erf form:  act' = g + h e^(-h^2/2) / sqrt(2 pi). */
static void FN(act_backward)(int act, const R *hid, const R *a, R *dh, size_t nr, size_t f)
{
    const R c = (R)0.7978845608028654;
    if (act == MOE_ACT_SWIGLU) {
        /* dh holds da in the first F columns of each 2F row on entry */
        for (size_t r = 0; r < nr; r++) {
            const R *g = hid + r * 2 * f, *u = g + f;
            R *dg = dh + r * 2 * f, *du = dg + f;
            for (size_t j = 0; j < f; j++) {
                R da = dg[j], s = (R)1 / ((R)1 + EXP(-g[j]));
                du[j] = da * g[j] * s;
                dg[j] = da * u[j] * s * ((R)1 + g[j] * ((R)1 - s));
            }
        }
        return;
    }
    const size_t len = nr * f;
    if (act == MOE_ACT_RELU) {
        for (size_t i = 0; i < len; i++)
            dh[i] = hid[i] > (R)0 ? dh[i] : (R)0;
        return;
    }
#if FAST_GELU
    if (act == MOE_ACT_GELU_TANH) {
        for (size_t i = 0; i < len; i++) {
            R h = hid[i], g = (h > (R)1e-30 || h < (R)-1e-30) ? a[i] / h : (R)0.5;
            dh[i] *= g + (R)2 * h * g * ((R)1 - g) * c * ((R)1 + (R)0.134145 * h * h);
        }
        return;
    }
    for (size_t i = 0; i < len; i++) { /* erf form */
        R h = hid[i], g = (h > (R)1e-30 || h < (R)-1e-30) ? a[i] / h : (R)0.5;
        dh[i] *= g + h * (R)0.3989422804014327 * EXP((R)-0.5 * h * h);
    }
    return;
#else
    (void)a;
#endif
    for (size_t i = 0; i < len; i++) {
        R h = hid[i], dv;
        switch (act) {
        case MOE_ACT_GELU_ERF:
            dv = (R)0.5 * ((R)1 + ERF(h * (R)0.7071067811865476)) +
                 h * (R)0.3989422804014327 * EXP((R)-0.5 * h * h);
            break;
        default: {
            R th = TANH(c * (h + (R)0.044715 * h * h * h));
            dv = (R)0.5 * ((R)1 + th) +
                 (R)0.5 * h * ((R)1 - th * th) * c * ((R)1 + (R)0.134145 * h * h);
        }
        }
        dh[i] *= dv;
    }
}

/* ---- expert FFNs ---- */

/* Rows and inputs: sparse plans gather dw * x[t] into rows grouped by expert (tr->off), dense
 * plans compute the slot inputs xin (M,D) = Dm^T x. Returns the row count. */
static size_t FN(rows_in)(moe_trainer *tr, const tr_ffn *w, const moe_plan *p, const R *x)
{
    const size_t n = (size_t)p->n, d = (size_t)w->d;
    R *xin = tr->xin;
    if (p->dense) {
        const size_t M = (size_t)p->m, P = (size_t)p->capacity;
        R *dm = tr->dm, *wc = tr->wc;
        memset(dm, 0, n * M * sizeof(R));
        memset(wc, 0, n * M * sizeof(R));
        for (size_t i = 0; i < p->n_entries; i++) {
            const moe_entry *en = &p->entries[i];
            size_t j = (size_t)en->expert * P + (size_t)en->slot;
            dm[(size_t)en->token * M + j] = (R)en->dispatch_w;
            wc[(size_t)en->token * M + j] = (R)en->combine_w;
        }
        for (int e = 0; e <= w->E; e++)
            tr->off[e] = (long)((size_t)e * P);
        FN(gemm)(1, 0, M, d, n, dm, M, x, d, (R)0, xin, d);
        return M;
    }
    for (size_t r = 0; r < p->n_entries; r++) {
        const moe_entry *en = &p->entries[tr->row_entry[r]];
        const R *xt = x + (size_t)en->token * d;
        R *o = xin + r * d, dw = (R)en->dispatch_w;
        for (size_t j = 0; j < d; j++)
            o[j] = dw * xt[j];
    }
    return p->n_entries;
}

/* One expert's rows: hid = xin W1_e + b1_e, act, out = act W2_e + b2_e. */
static void FN(expert_forward)(void *ctx, int e)
{
    const tr_job *j = ctx;
    moe_trainer *tr = j->tr;
    const tr_ffn *w = j->w;
    const size_t d = (size_t)w->d, f = (size_t)w->f, fw = (size_t)w->fw;
    size_t r0 = (size_t)tr->off[e], nr = (size_t)tr->off[e + 1] - r0;
    R *xin = tr->xin, *hid = tr->hid, *a = tr->act, *out = tr->out;
    const R *w1 = w->w1, *b1 = w->b1, *w2 = w->w2, *b2 = w->b2;
    if (nr == 0)
        return;
    for (size_t r = 0; r < nr; r++)
        memcpy(hid + (r0 + r) * fw, b1 + (size_t)e * fw, fw * sizeof(R));
    FN(gemm)(0, 0, nr, fw, d, xin + r0 * d, d, w1 + (size_t)e * d * fw, fw, (R)1, hid + r0 * fw,
             fw);
    FN(act_forward)(w->act, hid + r0 * fw, a + r0 * f, nr, f);
    for (size_t r = 0; r < nr; r++)
        memcpy(out + (r0 + r) * d, b2 + (size_t)e * d, d * sizeof(R));
    FN(gemm)(0, 0, nr, d, f, a + r0 * f, f, w2 + (size_t)e * f * d, d, (R)1, out + r0 * d, d);
}

static int FN(ffn_forward)(moe_trainer *tr, const tr_ffn *w, const moe_plan *p, const void *xv,
                           void *yv)
{
    const R *x = xv;
    R *y = yv;
    const size_t n = (size_t)p->n, d = (size_t)w->d;
    int rc = moe_train_rows(tr, w, p);
    if (rc)
        return rc;
    FN(rows_in)(tr, w, p, x);
    tr_job job = {tr, w, NULL, p->dense};
    if ((rc = moe_train_experts_run(tr, w->E, FN(expert_forward), &job)))
        return rc;
    const R *out = tr->out;
    if (p->dense) {
        FN(gemm)(0, 0, n, d, (size_t)p->m, tr->wc, (size_t)p->m, out, d, (R)0, y, d);
        return MOE_OK;
    }
    memset(y, 0, n * d * sizeof(R));
    for (size_t r = 0; r < p->n_entries; r++) {
        const moe_entry *en = &p->entries[tr->row_entry[r]];
        R *yt = y + (size_t)en->token * d, cw = (R)en->combine_w;
        const R *o = out + r * d;
        for (size_t j = 0; j < d; j++)
            yt[j] += cw * o[j];
    }
    return MOE_OK;
}

/* d(rows out) from dy: sparse dout[r] = cw dy[t], dcw = <dy[t], out[r]>; dense dout = Wc^T dy,
 * dWc = dy out^T. */
static void FN(combine_backward)(moe_trainer *tr, const moe_plan *p, const R *dy, double *dcw,
                                 double *dwc)
{
    const size_t n = (size_t)p->n, d = (size_t)tr->c.d;
    R *out = tr->out, *dout = tr->dout;
    if (p->dense) {
        const size_t M = (size_t)p->m;
        R *g = tr->gm;
        FN(gemm)(1, 0, M, d, n, tr->wc, M, dy, d, (R)0, dout, d);
        FN(gemm)(0, 1, n, M, d, dy, d, out, d, (R)0, g, M);
        for (size_t i = 0; i < n * M; i++)
            dwc[i] = (double)g[i];
        return;
    }
    for (size_t r = 0; r < p->n_entries; r++) {
        size_t i = tr->row_entry[r];
        const moe_entry *en = &p->entries[i];
        const R *dyt = dy + (size_t)en->token * d, *o = out + r * d;
        R *g = dout + r * d, cw = (R)en->combine_w, s = 0;
        for (size_t j = 0; j < d; j++) {
            g[j] = cw * dyt[j];
            s += dyt[j] * o[j];
        }
        dcw[i] = (double)s;
    }
}

/* One expert's backward from dout: dW2, db2, dh = dout W2_e^T * act'(hid), dW1, db1 (when
 * gw), dxin = dh W1_e^T over dout (dense plans). */
static void FN(expert_backward)(void *ctx, int e)
{
    const tr_job *j = ctx;
    moe_trainer *tr = j->tr;
    const tr_ffn *w = j->w;
    tr_ffn *gw = j->gw;
    const size_t d = (size_t)w->d, f = (size_t)w->f, fw = (size_t)w->fw;
    size_t r0 = (size_t)tr->off[e], nr = (size_t)tr->off[e + 1] - r0;
    R *xin = tr->xin, *hid = tr->hid, *a = tr->act, *dout = tr->dout, *dh = tr->dhid;
    const R *w1 = w->w1, *w2 = w->w2;
    if (nr == 0)
        return;
    const R *go = dout + r0 * d;
    if (gw) {
        R *gb2 = (R *)gw->b2 + (size_t)e * d;
        FN(gemm)(1, 0, f, d, nr, a + r0 * f, f, go, d, (R)0, (R *)gw->w2 + (size_t)e * f * d, d);
        memset(gb2, 0, d * sizeof(R));
        for (size_t r = 0; r < nr; r++)
            for (size_t c = 0; c < d; c++)
                gb2[c] += go[r * d + c];
    }
    if (!gw && !j->dense)
        return;
    /* da (nr,F) = dout W2_e^T, written with row stride FW, then times act'(hid) */
    FN(gemm)(0, 1, nr, f, d, go, d, w2 + (size_t)e * f * d, d, (R)0, dh + r0 * fw, fw);
    FN(act_backward)(w->act, hid + r0 * fw, a + r0 * f, dh + r0 * fw, nr, f);
    if (gw) {
        R *gb1 = (R *)gw->b1 + (size_t)e * fw;
        FN(gemm)(1, 0, d, fw, nr, xin + r0 * d, d, dh + r0 * fw, fw, (R)0,
                 (R *)gw->w1 + (size_t)e * d * fw, fw);
        memset(gb1, 0, fw * sizeof(R));
        for (size_t r = 0; r < nr; r++)
            for (size_t c = 0; c < fw; c++)
                gb1[c] += dh[(r0 + r) * fw + c];
    }
    if (j->dense) /* dxin (nr,D) = dh W1_e^T, over dout (no longer needed) */
        FN(gemm)(0, 1, nr, d, fw, dh + r0 * fw, fw, w1 + (size_t)e * d * fw, fw, (R)0,
                 dout + r0 * d, d);
}

static int FN(ffn_backward)(moe_trainer *tr, const tr_ffn *w, tr_ffn *gw, const moe_plan *p,
                            const void *xv, const void *dyv, double *dcw, double *dwc, double *dd)
{
    const R *x = xv;
    const size_t n = (size_t)p->n, d = (size_t)w->d, f = (size_t)w->f, fw = (size_t)w->fw;
    FN(combine_backward)(tr, p, dyv, dcw, dwc);
    tr_job job = {tr, w, gw, p->dense};
    int rc = moe_train_experts_run(tr, w->E, FN(expert_backward), &job);
    if (rc)
        return rc;
    if (gw) /* experts without rows get zero gradients */
        for (int e = 0; e < w->E; e++)
            if (tr->off[e + 1] == tr->off[e]) {
                memset((R *)gw->w1 + (size_t)e * d * fw, 0, d * fw * sizeof(R));
                memset((R *)gw->b1 + (size_t)e * fw, 0, fw * sizeof(R));
                memset((R *)gw->w2 + (size_t)e * f * d, 0, f * d * sizeof(R));
                memset((R *)gw->b2 + (size_t)e * d, 0, d * sizeof(R));
            }
    if (p->dense) { /* dD (T,M) = x dxin^T */
        const size_t M = (size_t)p->m;
        R *g = tr->gm;
        FN(gemm)(0, 1, n, M, d, x, d, (const R *)tr->dout, d, (R)0, g, M);
        for (size_t i = 0; i < n * M; i++)
            dd[i] = (double)g[i];
    }
    return MOE_OK;
}

static double FN(mse)(const void *yv, const void *tv, size_t len, void *dyv)
{
    const R *y = yv, *t = tv;
    R *dy = dyv;
    double s = 0.0;
    for (size_t i = 0; i < len; i++) {
        double df = (double)y[i] - (double)t[i];
        s += df * df;
        if (dy)
            dy[i] = (R)(2.0 * df / (double)len);
    }
    return s / (double)len;
}

static void FN(gate_backward)(moe_trainer *tr, const void *xr, const double *dl, void *g)
{
    const size_t n = (size_t)tr->c.n, d = (size_t)tr->c.d, M = (size_t)tr->M;
    R *t = tr->gm;
    for (size_t i = 0; i < n * M; i++)
        t[i] = (R)dl[i];
    FN(gemm)(1, 0, d, M, n, xr, d, t, M, (R)0, g, M);
}

static void FN(add)(void *yv, const double *noise, size_t len)
{
    R *y = yv;
    for (size_t i = 0; i < len; i++)
        y[i] += (R)noise[i];
}

static double FN(get)(const void *v, size_t i) { return (double)((const R *)v)[i]; }
static void FN(set)(void *v, size_t i, double x) { ((R *)v)[i] = (R)x; }

static void FN(update)(moe_trainer *tr, size_t len, double lr, double bc1, double bc2)
{
    R *th = tr->theta, *g = tr->grad, *m = tr->adam_m, *v = tr->adam_v;
    if (tr->c.optimizer == MOE_OPT_SGD) {
        for (size_t i = 0; i < len; i++)
            th[i] -= (R)lr * g[i];
        return;
    }
    /* torch.optim.Adam: m/bc1 / (sqrt(v/bc2) + eps) */
    const R b1 = (R)0.9, b2 = (R)0.999, eps = (R)1e-8, step = (R)(lr / bc1);
    const R isb2 = (R)(1.0 / sqrt(bc2));
    for (size_t i = 0; i < len; i++) {
        m[i] = b1 * m[i] + ((R)1 - b1) * g[i];
        v[i] = b2 * v[i] + ((R)1 - b2) * g[i] * g[i];
        th[i] -= step * m[i] / (SQRT(v[i]) * isb2 + eps);
    }
}

const tr_kern KERN = {
    sizeof(R),      FN(load_x), FN(gate), FN(ffn_forward), FN(ffn_backward), FN(mse),
    FN(gate_backward), FN(add), FN(get),  FN(set),         FN(update),
};
