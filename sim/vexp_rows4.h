/* vexp_rows4.h: the softmax of rows of eight four rows at a time, for CPUs with AVX2 and FMA
 * but not AVX-512 (vexp.c takes eight rows a vector where it has AVX-512): the drivers of
 * vexp_avx2.h's vx4_cols kernels. Included by vexp.c only, after sm_rows_gen and a declaration
 * of sm_rows, which these call for the rows they decline. */
#ifndef MOE_VEXP_ROWS4_H
#define MOE_VEXP_ROWS4_H

/* The rows of moe_softmax_rows8_top2 that sm_rows4c declines: each row's two by
 * moe_select_top2_rows8 (four rows at a time, ties to the lower index: the two
 * moe_select_top2_8 takes from the row's maximum), then the rows' softmax with those as its
 * selected columns, which keeps their numerators (e2) and tells istop; a row holding a NaN
 * (declined) has its columns 0 and 1 stand in, then idx2 = -1 and istop 0. Every row; returns
 * nrows. */
static int sm_rows8_top2_lanes(const double *x, int nrows, double *p, double *lse, double *mx,
                               int32_t *idx2, double *e2, uint8_t *istop, int *slow)
{
    enum { B = 64 };
    for (int r0 = 0; r0 < nrows; r0 += B) {
        const int nb = nrows - r0 < B ? nrows - r0 : B;
        uint8_t ok[B];
        moe_select_top2_rows8(x + (size_t)r0 * 8, nb, idx2 + 2 * (size_t)r0, ok);
        for (int j = 0; j < nb; j++)
            if (!ok[j])
                idx2[2 * (size_t)(r0 + j)] = 0, idx2[2 * (size_t)(r0 + j) + 1] = 1;
        sm_rows(x + (size_t)r0 * 8, nb, 8, p + (size_t)r0 * 8, lse ? lse + r0 : NULL, mx + r0,
                idx2 + 2 * (size_t)r0, 2, e2 + 2 * (size_t)r0, 0, istop ? istop + r0 : NULL,
                NULL, NULL, NULL, slow, NULL);
        for (int j = 0; j < nb; j++)
            if (!ok[j]) {
                idx2[2 * (size_t)(r0 + j)] = -1;
                if (istop)
                    istop[r0 + j] = 0;
            }
    }
    return nrows;
}

/* Rows of eight four rows at a time as columns (vexp_avx2.h's vx4_cols), in blocks of G groups
 * of four rows: step one of every group, then step two of every group, then the logarithms of
 * the block's sums together (vx4_logs). Taken group by group, each group's divisions and
 * logarithm (long chains of dependent operations) held up the next group's exponentials (in
 * cache, one thread, p, lse and the maxima: 23.5 -> 21.9 ns a row). Without a
 * selection (idx2 NULL), four rows with a lane outside the exponential's fast path go through
 * sm_rows_gen; with each row's two largest as its selection (moe_softmax_rows8_top2's idx2,
 * e2, istop), such rows go through sm_rows8_top2_lanes. Returns the rows taken: nrows rounded
 * down to a multiple of four. */
static inline __attribute__((always_inline)) int
sm_rows4c(const double *x, int nrows, double *p, double *lse, double *mx, int32_t *pmax,
          int32_t *xfirst, double *pfirst, int32_t *idx2, double *e2, uint8_t *istop, int *slow)
{
    enum { G = 8 };
    const int full = nrows / 4 * 4;
    vx4_cols g[G];
    for (int b0 = 0; b0 < full; b0 += 4 * G) {
        const int ng = (full - b0) / 4 < G ? (full - b0) / 4 : G;
        for (int h = 0; h < ng; h++) {
            const int r0 = b0 + 4 * h;
            for (int j = 0; r0 + 12 <= nrows && j < 4; j++) /* two steps ahead */
                __builtin_prefetch(x + (size_t)(r0 + 8 + j) * 8);
            vx4_cols_exp(x + (size_t)r0 * 8, &g[h], idx2 != NULL);
            if (g[h].done && idx2)
                sm_rows8_top2_lanes(x + (size_t)r0 * 8, 4, p + (size_t)r0 * 8,
                                    lse ? lse + r0 : NULL, mx + r0, idx2 + 2 * (size_t)r0,
                                    e2 + 2 * (size_t)r0, istop ? istop + r0 : NULL, slow);
            else if (g[h].done)
                sm_rows_gen(x + (size_t)r0 * 8, 4, 8, p + (size_t)r0 * 8, lse ? lse + r0 : NULL,
                            mx ? mx + r0 : NULL, NULL, 0, NULL, 0, NULL,
                            pmax ? pmax + r0 : NULL, xfirst ? xfirst + r0 : NULL,
                            pfirst ? pfirst + r0 : NULL, slow, NULL, 0);
        }
        for (int h = 0; h < ng; h++)
            if (!g[h].done)
                vx4_cols_div(b0 + 4 * h, p, mx, pmax, xfirst, pfirst, idx2, e2, istop, &g[h]);
        if (lse) { /* (a block's groups past ng, and those done by rows, take log 1) */
            __m256d s[G], y[G];
            for (int h = 0; h < G; h++)
                s[h] = h < ng && !g[h].done ? g[h].s : _mm256_set1_pd(1.0);
            vx4_logs(s, y, G);
            for (int h = 0; h < ng; h++)
                if (!g[h].done)
                    _mm256_storeu_pd(lse + b0 + 4 * h, _mm256_add_pd(g[h].m, y[h]));
        }
    }
    return full;
}

/* moe_softmax_rows8_top2 without AVX-512: sm_rows4c with the two largest, then the last rows,
 * fewer than four, through sm_rows8_top2_lanes. Every row; returns nrows. */
static int sm_rows8_top2_cols(const double *x, int nrows, double *p, double *lse, double *mx,
                              int32_t *idx2, double *e2, uint8_t *istop, int *slow)
{
    const int full = sm_rows4c(x, nrows, p, lse, mx, NULL, NULL, NULL, idx2, e2, istop, slow);
    if (full < nrows)
        sm_rows8_top2_lanes(x + (size_t)full * 8, nrows - full, p + (size_t)full * 8,
                            lse ? lse + full : NULL, mx + full, idx2 + 2 * (size_t)full,
                            e2 + 2 * (size_t)full, istop ? istop + full : NULL, slow);
    return nrows;
}

#endif
