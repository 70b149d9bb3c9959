/* gate.c: the fixed-order gate logits of gate.h.
 *
 * Blocking (for speed only; it never changes the order of the additions of one logit): rows
 * in blocks of GR = 4 tokens, columns in chunks of GC = 16 experts; for each (block, chunk) the
 * GR x GC accumulators start at +0.0 and take k = 0..D-1 in order, so each weight chunk loaded
 * once serves four tokens and the inner loops of constant trip count vectorise at -O2. Tails
 * (fewer rows or columns) run the same loops with shorter bounds. Threads take contiguous row
 * ranges; each logit is computed by exactly one of them, in the same way.
 *
 * Built with -ffp-contract=off (Makefile): no a*b+c is fused; see gate.h for why it would not
 * matter for float inputs. */
#include "gate.h"

#include <pthread.h>

enum { GR = 4, GC = 16, GATE_MAX_THREADS = 8 };

/* One (rows r0..r0+nr, columns c0..c0+nc) tile, nr <= GR, nc <= GC. TYPE is float or double. */
#define GATE_TILE(NAME, TYPE)                                                                 \
    static void NAME(const TYPE *x, size_t d, const TYPE *wg, size_t m, double *out,          \
                     size_t r0, size_t nr, size_t c0, size_t nc)                              \
    {                                                                                         \
        double acc[GR][GC] = {{0.0}};                                                         \
        if (nr == GR && nc == GC) {                                                           \
            for (size_t k = 0; k < d; k++) {                                                  \
                const TYPE *w = wg + k * m + c0;                                              \
                double wv[GC];                                                                \
                for (size_t j = 0; j < GC; j++)                                               \
                    wv[j] = (double)w[j];                                                     \
                for (size_t r = 0; r < GR; r++) {                                             \
                    double xv = (double)x[(r0 + r) * d + k];                                  \
                    for (size_t j = 0; j < GC; j++)                                           \
                        acc[r][j] += xv * wv[j];                                              \
                }                                                                             \
            }                                                                                 \
        } else {                                                                              \
            for (size_t k = 0; k < d; k++) {                                                  \
                const TYPE *w = wg + k * m + c0;                                              \
                for (size_t r = 0; r < nr; r++) {                                             \
                    double xv = (double)x[(r0 + r) * d + k];                                  \
                    for (size_t j = 0; j < nc; j++)                                           \
                        acc[r][j] += xv * (double)w[j];                                       \
                }                                                                             \
            }                                                                                 \
        }                                                                                     \
        for (size_t r = 0; r < nr; r++)                                                       \
            for (size_t j = 0; j < nc; j++)                                                   \
                out[(r0 + r) * m + c0 + j] = acc[r][j];                                       \
    }

GATE_TILE(tile_f, float)
GATE_TILE(tile_d, double)

typedef struct {
    const void *x, *wg;
    double *out;
    size_t d, m, r0, r1;
    int dbl;
} gate_job;

static void *gate_run(void *arg)
{
    const gate_job *j = arg;
    for (size_t r = j->r0; r < j->r1; r += GR) {
        size_t nr = j->r1 - r < GR ? j->r1 - r : GR;
        for (size_t c = 0; c < j->m; c += GC) {
            size_t nc = j->m - c < GC ? j->m - c : GC;
            if (j->dbl)
                tile_d(j->x, j->d, j->wg, j->m, j->out, r, nr, c, nc);
            else
                tile_f(j->x, j->d, j->wg, j->m, j->out, r, nr, c, nc);
        }
    }
    return NULL;
}

/* Rows split into nt contiguous ranges (multiples of GR except the last); job 0 runs on the
 * caller, a thread that cannot be created runs its range on the caller too. */
static void gate_split(const void *x, size_t n, size_t d, const void *wg, size_t m,
                       double *out, int threads, int dbl)
{
    if (n == 0 || m == 0)
        return;
    size_t blocks = (n + GR - 1) / GR;
    size_t nt = threads < 1 ? 1 : (size_t)threads;
    if (nt > GATE_MAX_THREADS)
        nt = GATE_MAX_THREADS;
    if (nt > blocks)
        nt = blocks;
    /* below about a million multiply-adds a thread costs more than it saves */
    if (n * d * m < ((size_t)1 << 20))
        nt = 1;
    gate_job jobs[GATE_MAX_THREADS];
    pthread_t th[GATE_MAX_THREADS];
    int started[GATE_MAX_THREADS] = {0};
    for (size_t i = 0; i < nt; i++) {
        size_t b0 = blocks * i / nt, b1 = blocks * (i + 1) / nt;
        size_t r1 = b1 * GR < n ? b1 * GR : n;
        jobs[i] = (gate_job){x, wg, out, d, m, b0 * GR, r1, dbl};
    }
    for (size_t i = 1; i < nt; i++)
        started[i] = pthread_create(&th[i], NULL, gate_run, &jobs[i]) == 0;
    gate_run(&jobs[0]);
    for (size_t i = 1; i < nt; i++) {
        if (started[i])
            pthread_join(th[i], NULL);
        else
            gate_run(&jobs[i]);
    }
}

void moe_gate_logits(const float *x, size_t n, size_t d, const float *wg, size_t m,
                     double *logits, int threads)
{
    gate_split(x, n, d, wg, m, logits, threads, 0);
}

void moe_gate_logits_d(const double *x, size_t n, size_t d, const double *wg, size_t m,
                       double *logits, int threads)
{
    gate_split(x, n, d, wg, m, logits, threads, 1);
}
