/* bench.h: the types `moesim bench` shares between its files: cmd_bench.c (the command, the
 * reference GEMMs, the naive check, the tables and the store rows), bench_layer.c (the timed
 * layer points) and bench_torch.c (the PyTorch reference, sim/bench_torch_moe.py, on the same
 * inputs). Private to those files.
 */
#ifndef MOE_BENCH_H
#define MOE_BENCH_H

#include "blas_info.h"
#include "layer.h"
#include "pipeline.h"
#include "store.h"

/* ---- configuration ---- */

typedef struct {
    const char *name;   /* config column in the database */
    const char *router; /* topk for k >= 2, switch for k = 1 */
    int E, k;
} bench_cfg;


enum { BENCH_NSCALE = 4 }; /* the most n-scaling points */

/* Layer shapes: full and --quick. cf = 1.25 in both. */
typedef struct {
    int n, d, f;
    int scale_n[BENCH_NSCALE]; /* the n-scaling points of the first configuration */
    int nscale;
    int check_tokens; /* tokens checked against the naive reference; 0 = all */
} bench_shape;


#define BENCH_CF "1.25"
#define BENCH_PEAK_GFLOPS 467.0 /* fp32 FMA peak measured on the reference machine (2 cores) */
#define TORCH_TOL 1e-4          /* relative L2 for moesim vs PyTorch outputs */
#define NAIVE_TOL 1e-5          /* relative L2 for moesim vs its naive double reference */

typedef struct {
    int quick, repeats, threads, no_torch;
    const char *db, *python, *script;
    const char *configs; /* comma-separated names to run, NULL = all */
    double peak;
    unsigned long long seed;
} bench_args;

typedef struct {
    double median, q1, q3, min, max;
} bench_stat;

/* A single value: median v, no spread. */
bench_stat bench_stat_one(double v);

typedef struct {
    bench_args a;
    const bench_shape *sh;
    moe_blas_info bi;
    char run_id[64];
    char torch_version[64];
    moe_store *db; /* --db, one transaction for the whole run */
    int failures; /* correctness checks that failed (outputs disagree) */
    void *json;   /* json_t array: every row stored, written as JSON beside the database */
    int routing;  /* a `moesim bench --routing` run (its configs start with "routing_") */
} bench_ctx;

/* Start a run on c->a.db (results/ created for the default): its id (UTC start and pid), the
 * JSON rows, the database and its transaction (bench_json.c). */
int bench_open(bench_ctx *c);
/* End the run: with rc == MOE_OK commit, say where the rows are and write the JSON; otherwise
 * roll back. Closes the database either way; returns rc or the first error of the ending. */
int bench_close(bench_ctx *c, int rc);

/* Store one row in the run's transaction and append it to c->json (bench_json.c). */
int bench_put_row(bench_ctx *c, const moe_bench_row *r);
/* The rows of the run as JSON, {"run": ..., "rows": [...]}, beside the database: its path with
 * .db replaced by .json (results/bench.json by default), through outfile. The rows of the other
 * benchmark already in that file (the layer's for a routing run, the routing rows for a layer
 * run) are kept after this run's, each naming its run: `make bench` leaves both in it. */
int bench_write_json(const bench_ctx *c);

typedef struct {
    int E, d, f;
    float *wg;              /* (D,E) gate */
    float *w1, *b1, *w2, *b2; /* (E,D,F) (E,F) (E,F,D) (E,D) */
    moe_experts ex;
} bench_weights;

typedef struct {
    int n;
    long C;
    moe_route_opts o;
    moe_pipeline *pipe;
    const moe_plan *plan; /* the pipeline's, after a forward */
    const float *y;       /* (T,D) the pipeline's output */
} layer_point;

/* ---- timed layer points (bench_layer.c) ---- */

/* Median, quartiles, min and max of v (len >= 1, sorted in place). */
bench_stat bench_stat_of(double *v, int len);
/* The pipeline of configuration cfg on n tokens (k, cf = BENCH_CF; pad: the routing option
 * pad_to_capacity = true, every expert run at C rows). */
int bench_point_alloc(const bench_cfg *cfg, const bench_weights *w, int n, int pad,
                      layer_point *p);
void bench_point_free(layer_point *p);
/* One forward of point p through its pipeline: t[MOE_NPHASES] gets the phase times. */
int bench_point_forward(layer_point *p, const bench_weights *w, const float *x, double *t);
/* The reference GEMMs of a layer point, on the same useful FLOPs as its expert phase: its kept
 * rows grouped per expert through expert e's (D,F) and (F,D) weights (OpenBLAS sgemm, one
 * (rows,F) hidden buffer reused, the best case for the caches), and, with dense, one (N,D)(D,F)
 * then (N,F)(F,D) pair on all N kept rows with expert 0's weights and the activation alone on
 * its (N,F). Seconds. */
typedef struct {
    bench_stat dense, grouped, act; /* dense and act NaN without dense */
} gemm_ref;

/* Times the points p[0..np) and their reference GEMMs in rounds: one warm-up round, then
 * `repeats` timed ones, each running one forward of every point, each followed by its GEMMs.
 * Timed point after point, a slow stretch of the host lands on whichever point or GEMM is
 * being measured (on the 2-core development VM the same layer's expert phase at n = 1k read
 * 49.5-105 us a token over twelve forwards of one process): in rounds each point's samples
 * spread over the whole measurement, so the ratios between points and against the GEMMs
 * compare like with like.
 * st[i * MOE_NPHASES + ph] gets point i's statistics, g[i] its GEMMs' (dense: also the dense
 * pair and the activation; g NULL: the forwards alone, no GEMMs), paired[i] (NULL, or with g
 * NULL, none) the statistics of its rounds' own ratios: the
 * reference pair's time (dense: the dense pair's, else the grouped one's) over the expert
 * phase's of the forward before it; layer (or NULL; np x repeats) each forward's layer time,
 * layer[i * repeats + r]. */
int bench_points_measure(layer_point *p, int np, const bench_weights *w, const float *x,
                         int repeats, int dense, bench_stat *st, gemm_ref *g, bench_stat *paired,
                         double *layer);
/* Point p again with pad_to_capacity = true: padded[MOE_NPHASES] gets its timings, printed
 * against unpadded[MOE_NPHASES]; its output must equal p's bit for bit (layer.h), else
 * c->failures counts it. */
int bench_padded_measure(bench_ctx *c, const bench_cfg *cfg, const bench_weights *w,
                         const float *x, const layer_point *p, const bench_stat *unpadded,
                         bench_stat *padded);

/* Whether --config selects the configuration called name (all when --config is not given);
 * cmd_bench.c. */
int bench_selected(const bench_args *a, const char *name);

/* ---- the PyTorch reference (bench_torch.c) ---- */

enum { TORCH_STYLES = 2, TORCH_MAXTH = 4 };
extern const char *const torch_styles[TORCH_STYLES]; /* "loop", "einsum" */

typedef struct {
    int available;          /* 0: torch missing or --no-torch; why in note */
    char note[160];
    int nth;
    int threads[TORCH_MAXTH];
    bench_stat t[TORCH_STYLES][TORCH_MAXTH]; /* s per layer; median NaN if not measured */
    int best_style, best_th;
    double rel_l2[TORCH_STYLES];
    long routing_mismatch;
    int blas_threads_set; /* the script set OpenBLAS's threads along with torch's */
    /* in rounds after the table above: two forwards of moesim's layer, then two of the
     * fastest PyTorch configuration, `rounds` times, the second forward of each side timed (s
     * per forward), and each round's ratio PyTorch / moesim */
    int rounds;
    bench_stat mine_rounds, theirs_rounds, ratio_rounds;
} torch_result;

/* Runs the PyTorch reference (c->a.script with c->a.python, --serve) on the inputs of layer
 * point p of configuration cfg, compares its outputs with p's, then times p's forwards and the
 * fastest PyTorch configuration's in c->a.repeats rounds (tr->rounds); tr->available = 0 with a
 * note when it is skipped (--no-torch, no script, no torch). */
int bench_torch_measure(bench_ctx *c, const bench_cfg *cfg, const bench_weights *w,
                        const float *x, layer_point *p, torch_result *tr);

/* ---- the training-step benchmark (bench_train.c) ---- */

/* moe_train_bench (train.h: topk k=2, E=16, n=4096, d=256, f=1024, Adam, relu and gelu_tanh)
 * against sim/bench_torch_train.py (the PyTorch CPU loop of the same model, autograd, with
 * c->a.python, c->a.threads threads) in this run: prints the times and their ratio, stores them
 * as rows of config "train". Skipped (with a line saying so) by --quick; the PyTorch side by
 * --no-torch or when torch cannot be imported. */
int bench_train(bench_ctx *c);

#endif
