/* trace_popularity.c: the Mixtral-8x7B expert popularity counts (Fiddler): the JSON reader
 * and the `trace_mixtral_popularity` token source, which turns per-layer counts into tokens.
 *
 * Format: {"expert_popularity": [[E counts] per layer]}, counts only (no per-token records).
 * A copy of the counts (Apache-2.0) ships in experiments/data/mixtral-8x7b-popularity.
 */
#include "trace.h"

#include <errno.h>
#include <gsl/gsl_randist.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* ---- the reader ---------------------------------------------------------------------------- */

static int stat_mode(const char *p, mode_t kind)
{
    struct stat st;
    return stat(p, &st) == 0 && (st.st_mode & S_IFMT) == kind;
}

int moe_trace_popularity_read(const char *path, int *L, int *E, long **counts)
{
    *counts = NULL;
    if (!stat_mode(path, S_IFREG))
        return moe_fail(MOE_EIO, moe_trace_hint(), "cannot open trace: %s (%s)",
                        stat_mode(path, S_IFDIR) ? "is a folder, give one expert_popularity_*.json"
                                     : strerror(ENOENT),
                        path);
    json_error_t jerr;
    json_t *root = json_load_file(path, 0, &jerr);
    if (!root)
        return moe_fail(MOE_EFORMAT, "is the file truncated?", "not JSON: %s (%s:%d)", jerr.text,
                        path, jerr.line);
    json_t *pop = json_object_get(root, "expert_popularity");
    size_t nl = json_is_array(pop) ? json_array_size(pop) : 0;
    json_t *row0 = nl ? json_array_get(pop, 0) : NULL;
    size_t ne = json_is_array(row0) ? json_array_size(row0) : 0;
    int rc = MOE_OK;
    if (nl == 0 || nl > MOE_TRACE_MAX_LAYERS || ne == 0 || ne > MOE_TRACE_MAX_E) {
        rc = moe_fail(MOE_EFORMAT, "expected {\"expert_popularity\": [[8 counts] per layer]}",
                      "no \"expert_popularity\" layers x experts array (%s)", path);
        goto done;
    }
    long *c = malloc(nl * ne * sizeof *c);
    if (!c) {
        rc = moe_fail(MOE_ENOMEM, NULL, "out of memory (%s)", path);
        goto done;
    }
    for (size_t l = 0; l < nl; l++) {
        json_t *row = json_array_get(pop, l);
        if (!json_is_array(row) || json_array_size(row) != ne) {
            free(c);
            rc = moe_fail(MOE_EFORMAT, "every layer lists one count per expert",
                          "layer %zu of expert_popularity does not have %zu counts (%s)", l, ne,
                          path);
            goto done;
        }
        for (size_t e = 0; e < ne; e++) {
            json_t *v = json_array_get(row, e);
            if (!json_is_integer(v) || json_integer_value(v) < 0 ||
                json_integer_value(v) > LONG_MAX / 4) {
                free(c);
                rc = moe_fail(MOE_EFORMAT, NULL,
                              "count of layer %zu, expert %zu is not a non-negative integer (%s)",
                              l, e, path);
                goto done;
            }
            c[l * ne + e] = (long)json_integer_value(v);
        }
    }
    *counts = c;
    *L = (int)nl;
    *E = (int)ne;
done:
    json_decref(root);
    return rc;
}

/* ---- the source ---------------------------------------------------------------------------- */

/* Inclusion probabilities of successive sampling of 2 without replacement with weights w
 * (sum 1): pi_e = w_e + sum_{i != e} w_i w_e / (1 - w_i). */
static void successive_pi(const double *w, int E, double *pi)
{
    for (int e = 0; e < E; e++) {
        pi[e] = w[e];
        for (int i = 0; i < E; i++)
            if (i != e && w[i] < 1.0)
                pi[e] += w[i] * w[e] / (1.0 - w[i]);
    }
}

/* Weights w whose successive-sampling inclusion probabilities equal target (sum 2): the
 * fixed point of w_e <- w_e target_e / pi_e (renormalised), from w = target / 2. It converges
 * within a few dozen steps on the Fiddler counts (to 1e-13); an expert chosen by every token
 * (target 1) is only reached in the limit, so at most 1000 steps are taken. */
static void calibrate_successive(double *w, const double *target, int E)
{
    double pi[MOE_TRACE_MAX_LAYERS];
    for (int it = 0; it < 1000 && E <= MOE_TRACE_MAX_LAYERS; it++) {
        successive_pi(w, E, pi);
        double err = 0.0, sum = 0.0;
        for (int e = 0; e < E; e++)
            err = fmax(err, fabs(pi[e] - target[e]));
        if (err < 1e-13)
            break;
        for (int e = 0; e < E; e++) {
            w[e] = pi[e] > 0.0 ? w[e] * target[e] / pi[e] : 0.0;
            sum += w[e];
        }
        for (int e = 0; e < E; e++)
            w[e] /= sum;
    }
}

typedef struct {
    int E;
    double *w;                /* (E) calibrated weights of the layer */
    gsl_ran_discrete_t **tab; /* (E+1): [0] all experts, [1+e] all but e (NULL if unused) */
} pop_ws;

static const moe_source_param popularity_params[] = {
    {"path", MOE_SP_STR, "from model and subject", 0, 0, 0, 0, NULL,
     "an expert_popularity_*.json file; default $MOESIM_TRACES/mixtral-8x7b-fiddler-popularity/"
     "mixtral_8x7b_<model>/expert_popularity_<subject>.json, else the same file under "
     "experiments/data/mixtral-8x7b-popularity"},
    {"model", MOE_SP_ENUM, "instruct", 0, 0, 0, 0, "instruct|original",
     "mixtral_8x7b_instruct or mixtral_8x7b_original"},
    {"subject", MOE_SP_ENUM, "high_school_us_history", 0, 0, 0, 0,
     "college_computer_science|college_medicine|high_school_biology|high_school_mathematics|"
     "high_school_us_history|international_law|machine_learning",
     "MMLU subject of the counts"},
    {"layer", MOE_SP_INT, "0", 0, 0, MOE_TRACE_MAX_LAYERS - 1, 0, NULL, "model layer 0..31"},
    MOE_SP_VOCAB("32000", 32000, 2147483647.0),
    MOE_SP_END,
};

/* The counts file: `path`, else the file under $MOESIM_TRACES, else the copy in
 * experiments/data. */
static const char *popularity_path(const moe_source *s, char *buf, size_t len)
{
    if (moe_source_given(s, "path"))
        return moe_source_str(s, "path");
    char tail[512];
    snprintf(tail, sizeof tail, "/mixtral_8x7b_%s/expert_popularity_%s.json",
             moe_source_str(s, "model"), moe_source_str(s, "subject"));
    snprintf(buf, len, "%s/%s%s", moe_trace_root(), moe_trace_folder(MOE_TRACE_POPULARITY), tail);
    FILE *f = fopen(buf, "r");
    if (f)
        fclose(f);
    else {
        /* the shipped copy, wherever moesim's data folder is; when it is missing, buf names
         * the first place looked in and opening it reports that */
        char rel[600];
        snprintf(rel, sizeof rel, "experiments/data/mixtral-8x7b-popularity%s", tail);
        if (moe_data_path(rel, buf, len))
            moe_clear_error();
    }
    return buf;
}

/* Sampling tables of the calibrated weights: all experts, and all but each expert. */
static int popularity_tables(pop_ws *p, const char *path)
{
    const int E = p->E;
    p->tab[0] = gsl_ran_discrete_preproc((size_t)E, p->w);
    int rc = p->tab[0] ? MOE_OK : MOE_ENOMEM;
    for (int e = 0; e < E && !rc; e++) {
        if (p->w[e] <= 0)
            continue;
        double keep = p->w[e];
        p->w[e] = 0.0;
        p->tab[1 + e] = gsl_ran_discrete_preproc((size_t)E, p->w);
        p->w[e] = keep;
        if (!p->tab[1 + e])
            rc = MOE_ENOMEM;
    }
    if (rc)
        return moe_fail(MOE_ENOMEM, NULL, "cannot tabulate the popularity counts (%s)", path);
    return MOE_OK;
}

static int popularity_open(moe_source *s)
{
    char buf[4096];
    const char *path = popularity_path(s, buf, sizeof buf);
    int L, E;
    long *counts;
    int rc = moe_trace_popularity_read(path, &L, &E, &counts);
    if (rc)
        return rc;
    int layer = (int)moe_source_num(s, "layer"), nz = 0;
    if (layer >= L) {
        free(counts);
        return moe_source_fail(s, "layer", NULL,
                               "layer %d is not in the trace, which holds layers 0..%d", layer,
                               L - 1);
    }
    pop_ws *p = calloc(1, sizeof *p);
    if (p) {
        s->ws = p;
        p->E = E;
        p->w = malloc((size_t)E * sizeof *p->w);
        p->tab = calloc((size_t)E + 1, sizeof *p->tab);
    }
    if (!p || !p->w || !p->tab) {
        free(counts);
        return moe_fail(MOE_ENOMEM, NULL, "out of memory (%s)", path);
    }
    s->required_m = E;
    double sum = 0.0;
    for (int e = 0; e < E; e++) {
        p->w[e] = (double)counts[(size_t)layer * E + e];
        sum += p->w[e];
        nz += p->w[e] > 0;
    }
    free(counts);
    if (nz < 2)
        return moe_source_fail(
            s, "layer", NULL,
            "layer %d has %d experts with non-zero counts; top-2 sampling needs 2 (%s)", layer, nz,
            path);
    double *target = malloc((size_t)E * sizeof *target);
    if (!target)
        return moe_fail(MOE_ENOMEM, NULL, "out of memory (%s)", path);
    for (int e = 0; e < E; e++) {
        target[e] = 2.0 * p->w[e] / sum; /* recorded P(token chooses e) */
        p->w[e] /= sum;
    }
    calibrate_successive(p->w, target, E);
    free(target);
    if ((rc = popularity_tables(p, path)))
        return rc;
    s->k_rec = 2;
    s->has_logits = 1;
    return MOE_OK;
}

/* Two experts per token without replacement (successive draws: the first from all experts,
 * the second from the rest, each proportional to the calibrated weights, which make every
 * expert's chance of being chosen equal its recorded share 2 c_e / sum c, so the recorded
 * per-expert counts are reproduced in expectation); affinities by draw order. */
static int popularity_batch(moe_source *s, int b)
{
    (void)b;
    const pop_ws *p = s->ws;
    const int E = p->E;
    for (int t = 0; t < s->n; t++) {
        int32_t *ch = s->choices + (size_t)t * 2;
        ch[0] = (int32_t)gsl_ran_discrete(s->rng, p->tab[0]);
        ch[1] = (int32_t)gsl_ran_discrete(s->rng, p->tab[1 + ch[0]]);
        moe_trace_affinity(E, 2, ch, NULL, NULL, 1, s->logits + (size_t)t * E);
    }
    moe_source_fill_x_gaussian(s, 1.0);
    moe_source_fill_ids_uniform(s);
    return MOE_OK;
}

static void popularity_close(moe_source *s)
{
    pop_ws *p = s->ws;
    if (!p)
        return;
    free(p->w);
    if (p->tab)
        for (int e = 0; e <= p->E; e++)
            if (p->tab[e])
                gsl_ran_discrete_free(p->tab[e]);
    free(p->tab);
    free(p);
    s->ws = NULL;
}

const moe_source_type moe_source_trace_popularity = {
    .name = "trace_mixtral_popularity",
    .summary = "Mixtral-8x7B per-layer expert counts (M = 8): per token 2 experts sampled without "
               "replacement (seeded; successive draws with weights calibrated so that each "
               "expert is chosen with its recorded probability 2 c_e / sum c); replay combine "
               "1/2; affinities log(2/3), log(1/3) by draw order, log(1e-4) elsewhere; falls "
               "back to experiments/data/mixtral-8x7b-popularity (Apache-2.0); ids uniform, x "
               "Gaussian",
    .flags = MOE_SOURCE_RECORDED,
    .params = popularity_params,
    .open = popularity_open,
    .batch = popularity_batch,
    .close = popularity_close,
};
