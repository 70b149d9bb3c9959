/* test_traces.c: the recorded-trace sources and readers (sim/traces.c, sim/sources/trace_*.c),
 * the replay router (routers/replay.c) and `moesim trace info`:
 *   - hand-made fixtures in tests/fixtures/traces/ (written by make.py there) in the four
 *     formats: the rows, choices, weights, affinities and ids each source yields, worked by hand
 *     below; malformed files (truncated, wrong columns, ids out of range, empty, ...) give a
 *     clear error naming the file, never a crash;
 *   - replay reproduces the recorded per-expert counts exactly when dropless, and drops in
 *     choice-major order with a capacity (worked by hand);
 *   - the real traces under moe_trace_root() ($MOESIM_TRACES), when present: token counts
 *     from the provenance notes published with each trace and per-expert counts from
 *     tests/fixtures/traces/real_counts.py (an independent Python reader). Absent: "skipped:
 *     ... absent", no failure.
 * Run from the repository root. */
#include "check.h"
#include "moe.h"
#include "source.h"
#include "trace.h"

#include <gsl/gsl_randist.h>
#include <string.h>
#include <sys/stat.h>

#define FX "tests/fixtures/traces"

/* ---- helpers ----------------------------------------------------------------------------- */

static moe_source *open_src(const char *kind, const moe_kv *kv, int nkv, int n, int m)
{
    moe_source *s = NULL;
    if (moe_source_open(kind, kv, nkv, n, 8, m, 5, &s)) {
        CHECK(0, "open %s: %s", kind, moe_errmsg());
        moe_clear_error();
        return NULL;
    }
    return s;
}

/* Route a batch with the replay router; cf NULL = dropless. Returns the plan or NULL. */
static moe_plan *replay(const moe_batch *bt, const char *cf, int renormalize)
{
    moe_route_opts o;
    moe_route_opts_default(&o);
    if (cf) {
        moe_decimal_parse(cf, &o.cf_num, &o.cf_den);
        o.cf_set = 1;
    } else {
        o.dropless = 1;
    }
    o.renormalize = renormalize;
    moe_router *r = NULL;
    if (moe_router_alloc(moe_router_find("replay"), &o, bt->n, bt->m, &r)) {
        CHECK(0, "replay alloc: %s", moe_errmsg());
        moe_clear_error();
        return NULL;
    }
    moe_plan *p = moe_plan_alloc(bt->n, bt->m, 16);
    moe_route_in in = {bt->n, bt->m,       bt->logits,   bt->ids,  NULL,
                       NULL,  bt->choices, bt->choice_w, bt->k_rec, NULL, NULL};
    int rc = moe_router_route(r, &in, p);
    moe_router_free(r);
    if (rc) {
        CHECK(0, "replay route: %s", moe_errmsg());
        moe_clear_error();
        moe_plan_free(p);
        return NULL;
    }
    return p;
}

/* kept entries per expert equal want (E) */
static int kept_equal(const moe_plan *p, const long *want, int E)
{
    long kept[64] = {0};
    for (size_t i = 0; i < p->n_entries; i++)
        kept[p->entries[i].expert]++;
    int ok = 1;
    for (int e = 0; e < E; e++)
        if (kept[e] != want[e]) {
            fprintf(stderr, "  expert %d: kept %ld, recorded %ld\n", e, kept[e], want[e]);
            ok = 0;
        }
    return ok;
}

static uint64_t fnv1a_ref(const char *s) /* FNV-1a 64, offset basis and prime of the spec */
{
    uint64_t h = 0xcbf29ce484222325ULL;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 0x100000001b3ULL;
    return h;
}

/* moe_trace_info into a string (caller frees) */
static char *info_text(const char *path, int *rc)
{
    FILE *f = tmpfile();
    if (!f) {
        *rc = -1;
        return NULL;
    }
    *rc = moe_trace_info(path, f);
    long len = ftell(f);
    char *buf = calloc((size_t)len + 1, 1);
    rewind(f);
    size_t got = fread(buf, 1, (size_t)len, f);
    buf[got] = '\0';
    fclose(f);
    return buf;
}

static int has_dir(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

/* ---- DeepSeek ---------------------------------------------------------------------------- */

static void test_deepseek(void)
{
    /* sample_1 (3 tokens), sample_2 (2), sample_10 (1), read in natural order 1, 2, 10 */
    static const int32_t want[6][6] = {{8, 26, 56, 57, 60, 43}, {0, 1, 2, 3, 4, 5},
                                       {0, 1, 2, 3, 4, 63},     {0, 1, 2, 3, 4, 5},
                                       {0, 7, 2, 3, 4, 5},      {5, 6, 7, 8, 9, 10}};
    moe_kv kv[] = {{"path", FX "/deepseek", "t.ini", 1, NULL}, {"layer", "1", "t.ini", 2, NULL}};
    moe_source *s = open_src("trace_deepseek", kv, 2, 6, 0);
    if (!s)
        return;
    moe_batch bt;
    moe_source_batch(s, 0, &bt);
    CHECK(moe_source_required_m(s) == 64 && bt.m == 64 && bt.k_rec == 6 && !bt.choice_w,
          "deepseek: M %d, Krec %d", bt.m, bt.k_rec);
    CHECK(memcmp(bt.choices, want, sizeof want) == 0, "deepseek layer 1 choices in file order");
    /* affinities: log(1/6) on the 6 chosen, log(1e-4) elsewhere */
    int bad = 0;
    for (int t = 0; t < 6; t++)
        for (int e = 0; e < 64; e++) {
            int chosen = 0;
            for (int j = 0; j < 6; j++)
                chosen |= want[t][j] == e;
            bad += fabs(bt.logits[t * 64 + e] - (chosen ? log(1.0 / 6) : log(1e-4))) > 1e-12;
        }
    CHECK_INT(bad, 0);
    /* ids: FNV-1a 64 of the token text mod 102400; the CSV-quoted 'Ġsay "hi"' unescaped */
    CHECK(bt.ids[1] == bt.ids[4] && bt.ids[1] == (int64_t)(fnv1a_ref("Hello") % 102400),
          "repeated token Hello: ids %lld, %lld", (long long)bt.ids[1], (long long)bt.ids[4]);
    CHECK(bt.ids[3] == (int64_t)(fnv1a_ref("\xc4\xa0say \"hi\"") % 102400) &&
              bt.ids[2] == (int64_t)(fnv1a_ref(",") % 102400),
          "quoted tokens hashed as their text");

    /* replay, dropless: the recorded layer-1 counts (hand count over the 6 rows above):
     * e0..e5: 4 3 4 4 4 4, e6 1, e7 2, e8 2, e9 1, e10 1, e26 e43 e56 e57 e60 e63: 1 */
    long cnt[64] = {4, 3, 4, 4, 4, 4, 1, 2, 2, 1, 1};
    cnt[26] = cnt[43] = cnt[56] = cnt[57] = cnt[60] = cnt[63] = 1;
    moe_plan *p = replay(&bt, NULL, 0);
    if (p) {
        CHECK(kept_equal(p, cnt, 64) && p->n_entries == 36, "deepseek replay dropless counts");
        moe_plan_free(p);
    }
    /* replay with cf = 1: C = ceil(6*6*1/64) = 1; choice-major claims (round r = every token's
     * r-th choice in token order) keep: t0 all 6 (8 26 56 57 60 43 are first claims), t1 0 1 2 3
     * 4 (its 6th, e5, was taken by t5's 1st choice in round 1), t2 only 63, t3 nothing, t4 only
     * 7 (round 2, before t5's 7 in round 3), t5 5 6 9 10 (7 and 8 taken): 17 entries, weight
     * 1/6 (ids-only trace, no renormalisation). */
    p = replay(&bt, "1", 0);
    if (p) {
        int per[6] = {0}, wbad = 0;
        for (size_t i = 0; i < p->n_entries; i++) {
            per[p->entries[i].token]++;
            wbad += fabs(p->entries[i].combine_w - 1.0 / 6) > 1e-15;
        }
        CHECK(p->capacity == 1 && p->n_entries == 17 && per[0] == 6 && per[1] == 5 && per[2] == 1 &&
                  per[3] == 0 && per[4] == 1 && per[5] == 4 && wbad == 0,
              "deepseek replay cf 1: C %ld, %zu entries, per token %d %d %d %d %d %d", p->capacity,
              p->n_entries, per[0], per[1], per[2], per[3], per[4], per[5]);
        moe_plan_free(p);
    }
    moe_source_close(s);

    /* layer 2, batches cycle: n = 4 over 6 rows -> batch 1 is rows 4, 5, 0, 1 */
    moe_kv k2[] = {{"path", FX "/deepseek", "t.ini", 1, NULL}, {"layer", "2", "t.ini", 2, NULL}};
    s = open_src("trace_deepseek", k2, 2, 4, 64);
    if (s) {
        moe_source_batch(s, 1, &bt);
        CHECK(bt.choices[0] == 20 && bt.choices[6] == 30 && bt.choices[12] == 10 &&
                  bt.choices[18] == 10 && bt.choices[23] == 16,
              "deepseek layer 2, batch 1 cycles through the rows");
        moe_source_close(s);
    }
    /* a layer the trace lacks, a wrong M */
    moe_kv k3[] = {{"path", FX "/deepseek", "t.ini", 1, NULL}, {"layer", "7", "t.ini", 2, NULL}};
    moe_source *e = NULL;
    int rc = moe_source_open("trace_deepseek", k3, 2, 4, 8, 64, 1, &e);
    CHECK(rc == MOE_EINVAL && strstr(moe_errmsg(), "layer 7 is not in the trace, which holds "
                                                   "layers 1..2"),
          "absent layer: %s", moe_errmsg());
    moe_clear_error();
    /* asked for M = 8, the trace fixes M = 64: batches say so, the caller compares */
    rc = moe_source_open("trace_deepseek", kv, 2, 4, 8, 8, 1, &e);
    if (rc == 0) {
        moe_source_batch(e, 0, &bt);
        CHECK(moe_source_required_m(e) == 64 && bt.m == 64, "trace fixes M = 64 (M %d)", bt.m);
    } else {
        CHECK(0, "open with M = 8: %s", moe_errmsg());
    }
    moe_source_close(e);
    moe_clear_error();
}

/* ---- Mixtral JSONL ----------------------------------------------------------------------- */

static void test_mixtral(void)
{
    moe_kv kv[] = {{"path", FX "/mixtral", "t.ini", 1, NULL}};
    moe_source *s = open_src("trace_mixtral", kv, 1, 5, 8);
    if (!s)
        return;
    moe_batch bt;
    moe_source_batch(s, 0, &bt);
    /* layer 0: problem 0 tokens 0..2, problem 1 tokens 0..1 (a_outputs.jsonl is not read) */
    static const int32_t want[10] = {6, 5, 5, 3, 7, 5, 1, 0, 2, 5};
    static const double wantw[10] = {0.7, 0.3, 0.8, 0.2, 0.6, 0.4, 0.5, 0.5, 0.9, 0.1};
    CHECK(bt.m == 8 && bt.k_rec == 2 && bt.choice_w && memcmp(bt.choices, want, sizeof want) == 0,
          "mixtral layer 0 choices");
    check_close_arrays("mixtral layer 0 gates", bt.choice_w, wantw, 10, 0, 0);
    /* affinities log(g) on the chosen, log(1e-4) elsewhere: token 0 */
    double row0[8];
    for (int e = 0; e < 8; e++)
        row0[e] = log(1e-4);
    row0[6] = log(0.7);
    row0[5] = log(0.3);
    check_close_arrays("mixtral token 0 affinities", bt.logits, row0, 8, 1e-12, 0);

    /* topk with k = 2 on the affinities reproduces the recorded experts and gates */
    moe_route_opts o;
    moe_route_opts_default(&o);
    o.k = 2;
    o.dropless = 1;
    moe_router *r = NULL;
    moe_plan *p = moe_plan_alloc(5, 8, 16);
    moe_route_in in = {5, 8, bt.logits, bt.ids, NULL, NULL, NULL, NULL, 0, NULL, NULL};
    if (!moe_router_alloc(moe_router_find("topk"), &o, 5, 8, &r) && !moe_router_route(r, &in, p)) {
        int bad = p->n_entries != 10;
        for (size_t i = 0; i < p->n_entries && !bad; i++) {
            const moe_entry *en = &p->entries[i];
            int j = en->expert == want[2 * en->token]       ? 0
                    : en->expert == want[2 * en->token + 1] ? 1
                                                            : -1;
            bad += j < 0 || fabs(en->combine_w - wantw[2 * en->token + j]) > 1e-12;
        }
        CHECK(bad == 0, "topk k=2 on the affinities gives back the recorded choices and gates");
    } else {
        CHECK(0, "topk: %s", moe_errmsg());
        moe_clear_error();
    }
    moe_router_free(r);
    moe_plan_free(p);

    /* replay dropless: counts of layer 0 by hand: e0 1, e1 1, e2 1, e3 1, e4 0, e5 4, e6 1, e7 1 */
    long cnt[8] = {1, 1, 1, 1, 0, 4, 1, 1};
    p = replay(&bt, NULL, 0);
    if (p) {
        CHECK(kept_equal(p, cnt, 8), "mixtral replay dropless counts");
        moe_plan_free(p);
    }
    /* cf 1: C = ceil(2*5/8) = 2. Round 1: 6 5 7 1 2 all kept; round 2: t0 e5 (2nd on e5) kept,
     * t1 e3 kept, t2 e5 dropped (full), t3 e0 kept, t4 e5 dropped: 8 entries, combine = the
     * recorded gate; with renormalize t2 keeps 0.6 / 0.6 = 1 and t4 0.9 / 0.9 = 1. */
    for (int renorm = 0; renorm < 2; renorm++) {
        p = replay(&bt, "1", renorm);
        if (!p)
            continue;
        int bad = p->capacity != 2 || p->n_entries != 8;
        for (size_t i = 0; i < p->n_entries; i++) {
            const moe_entry *en = &p->entries[i];
            int t = en->token, j = en->expert == want[2 * t] ? 0 : 1;
            double g = wantw[2 * t + j];
            if (renorm && (t == 2 || t == 4))
                g = 1.0;
            bad += (t == 2 || t == 4) && en->expert == 5;
            bad += fabs(en->combine_w - g) > 1e-12;
        }
        CHECK(bad == 0, "mixtral replay cf 1 (renormalize %d): C %ld, %zu entries", renorm,
              p->capacity, p->n_entries);
        moe_plan_free(p);
    }
    moe_source_close(s);

    /* layer 1: problem 1 token 1 has no record there: 4 rows, counts 4 1 1 1 1 0 0 0 */
    moe_kv k1[] = {{"path", FX "/mixtral", "t.ini", 1, NULL}, {"layer", "1", "t.ini", 2, NULL}};
    s = open_src("trace_mixtral", k1, 2, 4, 8);
    if (s) {
        moe_source_batch(s, 0, &bt);
        long c1[8] = {4, 1, 1, 1, 1, 0, 0, 0};
        p = replay(&bt, NULL, 0);
        CHECK(p && kept_equal(p, c1, 8), "mixtral layer 1 replay counts");
        moe_plan_free(p);
        moe_source_close(s);
    }

    /* raw prefill + decode log: prefill positions 0..2, decode steps at 3 (layers 0, 1) and 4
     * (layer 1 only): layer 0 has 4 rows, layer 1 has 5, the last being step 1's [0, 7] */
    moe_kv kr[] = {{"path", FX "/mixtral_raw/raw.jsonl", "t.ini", 1, NULL}, {"layer", "1", "t.ini", 2, NULL}};
    moe_rec rec;
    int rc = moe_trace_load(MOE_TRACE_MIXTRAL, FX "/mixtral_raw/raw.jsonl", 0, 100, 32000, &rec);
    CHECK(rc == 0 && rec.n == 4 && rec.choices[6] == 5 && rec.choices[7] == 6,
          "raw log layer 0: %ld rows", rec.n);
    moe_rec_clear(&rec);
    moe_clear_error();
    s = open_src("trace_mixtral", kr, 2, 5, 8);
    if (s) {
        moe_source_batch(s, 0, &bt);
        CHECK(bt.choices[8] == 0 && bt.choices[9] == 7 && bt.choices[6] == 7,
              "raw log layer 1: decode steps at positions 3 and 4");
        moe_source_close(s);
    }
}

/* ---- FLAME ------------------------------------------------------------------------------- */

static void test_flame(void)
{
    moe_kv kv[] = {{"path", FX "/flame", "t.ini", 1, NULL}, {"layer", "2", "t.ini", 2, NULL}};
    moe_source *s = open_src("trace_flame", kv, 2, 3, 0);
    if (!s)
        return;
    moe_batch bt;
    moe_source_batch(s, 0, &bt);
    /* t_layer2_enc.csv.gz rows: p = (0 .5 0 .25 0 0 0 0), (.1 0 0 0 0 0 0 .1), (0 0 .3 0 0 .6 0 0):
     * choices by descending p, ties to the lower expert; weights = p */
    static const int32_t want[6] = {1, 3, 0, 7, 5, 2};
    static const double wantw[6] = {0.5, 0.25, 0.1, 0.1, 0.6, 0.3};
    CHECK(moe_source_required_m(s) == 8 && bt.m == 8 && bt.k_rec == 2 &&
              memcmp(bt.choices, want, sizeof want) == 0,
          "flame layer 2 choices (M %d)", bt.m);
    check_close_arrays("flame layer 2 weights", bt.choice_w, wantw, 6, 0, 0);
    /* affinities: row 0 spreads the missing 0.25 evenly over 6 experts (0.0417 < 0.25), so
     * softmax gives back p exactly; row 1 would spread 0.8/6 > 0.1: capped at 0.1, all equal */
    double p0[8] = {0.25 / 6, 0.5, 0.25 / 6, 0.25, 0.25 / 6, 0.25 / 6, 0.25 / 6, 0.25 / 6};
    double sm[8], u[8];
    moe_softmax(bt.logits, 8, sm);
    check_close_arrays("flame row 0: softmax(affinities) = recorded p", sm, p0, 8, 1e-12, 0);
    moe_softmax(bt.logits + 8, 8, sm);
    for (int e = 0; e < 8; e++)
        u[e] = 0.125;
    check_close_arrays("flame row 1: capped spread", sm, u, 8, 1e-12, 0);
    long cnt[8] = {1, 1, 1, 1, 0, 1, 0, 1};
    moe_plan *p = replay(&bt, NULL, 0);
    CHECK(p && kept_equal(p, cnt, 8), "flame replay dropless counts");
    moe_plan_free(p);
    moe_source_close(s);

    /* layer 3 from the plain .csv; a single file is read whatever its layer */
    moe_kv k3[] = {{"path", FX "/flame", "t.ini", 1, NULL}, {"layer", "3", "t.ini", 2, NULL}};
    moe_kv kf[] = {{"path", FX "/flame/t_layer3_enc.csv", "t.ini", 1, NULL}, {"layer", "2", "t.ini", 2, NULL}};
    for (int i = 0; i < 2; i++) {
        s = open_src("trace_flame", i ? kf : k3, 2, 2, 8);
        if (!s)
            continue;
        moe_source_batch(s, 0, &bt);
        CHECK(bt.choices[0] == 4 && bt.choices[1] == 5 && bt.choices[2] == 6 && bt.choices[3] == 0,
              "flame layer 3 (%s)", i ? "single file" : "folder");
        moe_source_close(s);
    }
    moe_kv k5[] = {{"path", FX "/flame", "t.ini", 1, NULL}, {"layer", "5", "t.ini", 2, NULL}};
    moe_source *e = NULL;
    int rc = moe_source_open("trace_flame", k5, 2, 2, 8, 0, 1, &e);
    CHECK(rc == MOE_EINVAL &&
              strstr(moe_errmsg(), "layer 5 is not in the trace, which holds layers 2..3"),
          "flame absent layer: %s", moe_errmsg());
    moe_clear_error();
}

/* ---- popularity -------------------------------------------------------------------------- */

static void test_popularity(void)
{
    /* small.json: layer 0 counts (3, 2, 2, 1), layer 1 (2, 0, 3, 3); each row sums to 2 x 4
     * tokens, so a token chooses expert e with probability 2 c_e / sum c:
     *   layer 0: (.75, .5, .5, .25), layer 1: (.5, 0, .75, .75).
     * The calibrated successive sampling reproduces these: the number of tokens choosing e
     * is Binomial(N, pi_e), checked at 5 sigma (sample doubled at most twice); e1 != e2. */
    static const double pi[2][4] = {{0.75, 0.5, 0.5, 0.25}, {0.5, 0.0, 0.75, 0.75}};
    for (int layer = 0; layer < 2; layer++) {
        char lay[16];
        snprintf(lay, sizeof lay, "%d", layer);
        moe_kv kv[] = {{"path", FX "/popularity/small.json", "t.ini", 1, NULL},
                       {"layer", lay, "t.ini", 2, NULL}};
        int ok = 0, other = 0;
        long N = 20000;
        for (int attempt = 0; attempt < 3 && !ok; attempt++, N *= 2) {
            moe_source *s = open_src("trace_mixtral_popularity", kv, 2, (int)N, 4);
            if (!s)
                return;
            moe_batch bt;
            moe_source_batch(s, attempt, &bt);
            long c[4] = {0};
            for (int t = 0; t < bt.n; t++) {
                const int32_t *ch = bt.choices + 2 * t;
                c[ch[0]]++;
                c[ch[1]]++;
                other += ch[0] == ch[1];
                /* affinities by draw order: log 2/3, log 1/3, log 1e-4 elsewhere */
                for (int e = 0; e < 4; e++) {
                    double want = e == ch[0] ? log(2.0 / 3) : e == ch[1] ? log(1.0 / 3) : log(1e-4);
                    other += fabs(bt.logits[4 * t + e] - want) > 1e-12;
                }
            }
            other += bt.choice_w != NULL || bt.k_rec != 2 || moe_source_required_m(s) != 4;
            ok = 1;
            for (int e = 0; e < 4; e++) {
                double p = pi[layer][e], sd = sqrt(N * p * (1 - p));
                ok &= sd > 0 ? fabs(c[e] - N * p) <= 5 * sd : c[e] == 0;
            }
            if (!ok)
                fprintf(stderr,
                        "popularity layer %d: counts %ld %ld %ld %ld at N = %ld: doubling\n", layer,
                        c[0], c[1], c[2], c[3], N);
            moe_source_close(s);
        }
        CHECK(ok, "popularity layer %d: experts chosen with their recorded shares", layer);
        CHECK_INT(other, 0);
    }

    moe_kv kl[] = {{"path", FX "/popularity/small.json", "t.ini", 1, NULL}, {"layer", "2", "t.ini", 7, NULL}};
    moe_source *e = NULL;
    int rc = moe_source_open("trace_mixtral_popularity", kl, 2, 4, 8, 0, 1, &e);
    CHECK(rc == MOE_EINVAL && strstr(moe_errmsg(), "(t.ini:7, key layer)"), "popularity layer: %s",
          moe_errmsg());
    moe_clear_error();

    /* the copy in experiments/data when the trace root lacks the file */
    const char *old = getenv("MOESIM_TRACES");
    char *saved = old ? strdup(old) : NULL;
    setenv("MOESIM_TRACES", "/nonexistent/moesim/traces", 1);
    if (has_dir("experiments/data/mixtral-8x7b-popularity")) {
        moe_source *s = open_src("trace_mixtral_popularity", NULL, 0, 16, 8);
        CHECK(s && moe_source_required_m(s) == 8, "popularity falls back to experiments/data");
        moe_source_close(s);
    } else {
        printf(
            "skipped: experiments/data/mixtral-8x7b-popularity absent (run from the repo root)\n");
    }
    if (saved) {
        setenv("MOESIM_TRACES", saved, 1);
        free(saved);
    } else {
        unsetenv("MOESIM_TRACES");
    }
}

/* ---- malformed files --------------------------------------------------------------------- */

static void test_malformed(void)
{
    struct {
        const char *kind, *file, *want;
    } cases[] = {
        {"trace_deepseek", "deepseek_bad/truncated.csv",
         "unterminated quoted field (" FX "/deepseek_bad/truncated.csv:3)"},
        {"trace_deepseek", "deepseek_bad/columns.csv",
         "expected 4 columns, found 3 (" FX "/deepseek_bad/columns.csv:3)"},
        {"trace_deepseek", "deepseek_bad/range.csv", "expert id 64 out of range 0..63"},
        {"trace_deepseek", "deepseek_bad/empty.csv", "empty file: no header"},
        {"trace_deepseek", "deepseek_bad/header_only.csv", "no records after the header"},
        {"trace_deepseek", "deepseek_bad/header.csv", "not a DeepSeek trace"},
        {"trace_deepseek", "deepseek_bad/layers.csv", "layer 2 has 1 tokens, layer 1 has 2"},
        {"trace_deepseek", "deepseek_bad/dup.csv", "expert id 4 listed twice"},
        {"trace_deepseek", "deepseek_bad/k.csv", "record lists 6 experts, earlier records 5"},
        {"trace_deepseek", "deepseek_bad/ids.csv", "bad expert id list"},
        {"trace_deepseek", "deepseek_bad/none.csv", "trace not found"},
        {"trace_mixtral", "mixtral_bad/truncated.jsonl", "not a JSON record"},
        {"trace_mixtral", "mixtral_bad/range.jsonl",
         "expert id 8 out of range 0..7 (" FX "/mixtral_bad/range.jsonl:2)"},
        {"trace_mixtral", "mixtral_bad/experts.jsonl", "missing or bad \"experts\""},
        {"trace_mixtral", "mixtral_bad/empty.jsonl", "no records"},
        {"trace_mixtral", "mixtral_bad/dup.jsonl", "duplicate or out-of-order record"},
        {"trace_mixtral", "mixtral_bad/probs.jsonl", "not a probability"},
        {"trace_mixtral", "mixtral_bad/notoken.jsonl",
         "needs an integer \"token_idx\" or \"token_pos\""},
        {"trace_mixtral", "mixtral_bad/k.jsonl", "record lists 3 experts, earlier records 2"},
        {"trace_mixtral", "mixtral_bad", "no trace files (*_routing.jsonl) in folder"},
        {"trace_flame", "flame_bad/columns.csv", "expected 10 columns, found 9"},
        {"trace_flame", "flame_bad/range.csv", "bad score '1.5' for expert 0"},
        {"trace_flame", "flame_bad/trunc.csv.gz", "corrupt or truncated gzip data"},
        {"trace_flame", "flame_bad/empty.csv.gz", "empty file: no header"},
        {"trace_flame", "flame_bad/k.csv", "record lists 3 experts, earlier records 2"},
        {"trace_flame", "flame_bad/zero.csv", "row has no non-zero score"},
        {"trace_flame", "flame_bad/header.csv", "not a FLAME trace"},
        {"trace_mixtral_popularity", "popularity_bad/trunc.json", "not JSON"},
        {"trace_mixtral_popularity", "popularity_bad/ragged.json",
         "layer 1 of expert_popularity does not have 4 counts"},
        {"trace_mixtral_popularity", "popularity_bad/negative.json", "not a non-negative integer"},
        {"trace_mixtral_popularity", "popularity_bad/missing.json", "no \"expert_popularity\""},
        {"trace_mixtral_popularity", "popularity_bad/one_expert.json", "top-2 sampling needs 2"},
        {"trace_mixtral_popularity", "popularity_bad", "is a folder"},
    };
    int bad = 0;
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char path[512];
        snprintf(path, sizeof path, FX "/%s", cases[i].file);
        moe_kv kv = {"path", path, "t.ini", 1, NULL};
        moe_source *s = NULL;
        int rc = moe_source_open(cases[i].kind, &kv, 1, 4, 8, 0, 1, &s);
        if (rc == 0 || s || !strstr(moe_errmsg(), cases[i].want)) {
            bad++;
            fprintf(stderr, "malformed %s: rc %d, '%s' lacks '%s'\n", cases[i].file, rc,
                    moe_errmsg(), cases[i].want);
        }
        moe_source_close(s);
        moe_clear_error();
    }
    CHECK(bad == 0, "%d of %zu malformed traces not reported as expected", bad,
          sizeof cases / sizeof *cases);
    /* the replay router without recorded choices */
    moe_route_opts o;
    moe_route_opts_default(&o);
    moe_router *r = NULL;
    double L[8] = {0};
    moe_plan *p = moe_plan_alloc(2, 4, 8);
    moe_route_in in = {2, 4, L, NULL, NULL, NULL, NULL, NULL, 0, NULL, NULL};
    int32_t ch[4] = {0, 4, 1, 2};
    int rc = moe_router_alloc(moe_router_find("replay"), &o, 2, 4, &r);
    CHECK(rc == 0 && moe_router_route(r, &in, p) == MOE_EINPUT &&
              strstr(moe_errmsg(), "needs recorded expert choices"),
          "replay without choices: %s", moe_errmsg());
    moe_clear_error();
    in.choices = ch;
    in.k_rec = 2;
    CHECK(moe_router_route(r, &in, p) == MOE_EINPUT && strstr(moe_errmsg(), "outside 0..3"),
          "replay with an expert out of range: %s", moe_errmsg());
    moe_clear_error();
    moe_router_free(r);
    moe_plan_free(p);
}

/* ---- trace info -------------------------------------------------------------------------- */

static void test_info(void)
{
    struct {
        const char *path;
        const char *want[4];
    } cases[] = {
        /* layer 1 counts: max 4, mean 36/64 = 0.5625: imbalance 7.1111; min 0 */
        {FX "/deepseek",
         {"files    3\n", "layers   2 (1..2)\n",
          "tokens   6 (records 12, missing (token, layer) records 0)",
          "    1        6     7.1111        0        4\n"}},
        /* layer 0 counts 1 1 1 1 0 4 1 1: max 4 / mean 10/8 = 3.2 */
        {FX "/mixtral",
         {"files    1\n", "k        2 recorded",
          "tokens   5 (records 9, missing (token, layer) records 1)",
          "    0        5     3.2000        0        4\n"}},
        /* layer 3 counts 1 0 0 0 1 1 1 0: max 1 / mean 4/8 = 2 */
        {FX "/flame",
         {"layers   2 (2..3)\n", "experts  8\n",
          "tokens   3 (records 5, missing (token, layer) records 1)",
          "    3        2     2.0000        0        1\n"}},
        /* layer 0 counts 3 2 2 1, layer 1 2 0 3 3: tokens 8/2 = 4, max 3 / mean 2 = 1.5 */
        {FX "/popularity/small.json",
         {"layers   2 (0..1)\n", "tokens   4 (largest layer)",
          "    0        4     1.5000        1        3\n",
          "    1        4     1.5000        0        3\n"}},
        {FX "/mixtral_raw/raw.jsonl",
         {"tokens   5 (records 9, missing (token, layer) records 1)", "    1        5 ",
          "    0        4 ", "layers   2 (0..1)\n"}},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        int rc;
        char *txt = info_text(cases[i].path, &rc);
        int missing = rc != 0;
        for (int j = 0; j < 4 && txt; j++)
            if (!strstr(txt, cases[i].want[j])) {
                missing++;
                fprintf(stderr, "trace info %s lacks '%s':\n%s\n", cases[i].path, cases[i].want[j],
                        txt);
            }
        CHECK(missing == 0, "trace info %s (rc %d %s)", cases[i].path, rc, moe_errmsg());
        moe_clear_error();
        free(txt);
    }
    int rc;
    char *txt = info_text(FX "/make.py", &rc);
    CHECK(rc == MOE_EFORMAT && strstr(moe_errmsg(), "unknown trace format"), "info on a script: %s",
          moe_errmsg());
    moe_clear_error();
    free(txt);
    txt = info_text(FX "/nonexistent", &rc);
    CHECK(rc == MOE_EIO && strstr(moe_errmsg(), "trace not found"), "info on nothing: %s",
          moe_errmsg());
    moe_clear_error();
    free(txt);
    txt = info_text(FX "/deepseek_bad/range.csv", &rc);
    CHECK(rc == MOE_EFORMAT && strstr(moe_errmsg(), "out of range"), "info on a bad file: %s",
          moe_errmsg());
    moe_clear_error();
    free(txt);
}

/* ---- byte order marks, corrupt gzip, popularity folders ------------------------------------ */

/* path with the bytes of src, after a UTF-8 byte order mark */
static int write_with_bom(const char *src, const char *path)
{
    FILE *in = fopen(src, "rb"), *out = fopen(path, "wb");
    int ok = in && out && fwrite("\xEF\xBB\xBF", 1, 3, out) == 3;
    char buf[4096];
    size_t n;
    while (ok && (n = fread(buf, 1, sizeof buf, in)) > 0)
        ok = fwrite(buf, 1, n, out) == n;
    if (in)
        fclose(in);
    if (out && fclose(out))
        ok = 0;
    return ok;
}

/* A file that starts with a UTF-8 byte order mark reads exactly as the same file without it,
 * in all three per-token formats (the mark is not part of the header or of the first record). */
static void test_bom(void)
{
    static const struct {
        int format, layer;
        const char *src, *copy;
    } cases[] = {
        {MOE_TRACE_DEEPSEEK, 1, FX "/deepseek/sample_1.csv", "/tmp/moesim_test_traces_bom_data.csv"},
        {MOE_TRACE_MIXTRAL, 0, FX "/mixtral/a_routing.jsonl", "/tmp/moesim_test_traces_bom_routing.jsonl"},
        {MOE_TRACE_FLAME, 3, FX "/flame/t_layer3_enc.csv", "/tmp/moesim_test_traces_bom_layer3.csv"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        if (!write_with_bom(cases[i].src, cases[i].copy)) {
            CHECK(0, "cannot write %s", cases[i].copy);
            continue;
        }
        moe_rec a, b;
        int ra = moe_trace_load(cases[i].format, cases[i].src, cases[i].layer, 0, 1000, &a);
        int rb = moe_trace_load(cases[i].format, cases[i].copy, cases[i].layer, 0, 1000, &b);
        CHECK(ra == MOE_OK && rb == MOE_OK, "load %s with a byte order mark: %s", cases[i].copy,
              moe_errmsg());
        moe_clear_error();
        if (!ra && !rb) {
            int same = a.n == b.n && a.E == b.E && a.K == b.K && a.n > 0 &&
                       !memcmp(a.choices, b.choices, (size_t)a.n * a.K * sizeof *a.choices) &&
                       !memcmp(a.logits, b.logits, (size_t)a.n * a.E * sizeof *a.logits);
            CHECK(same, "%s: the rows differ from those of the file without the mark",
                  cases[i].copy);
        }
        moe_rec_clear(&a);
        moe_rec_clear(&b);
        int rc;
        char *txt = info_text(cases[i].copy, &rc);
        CHECK(rc == MOE_OK && txt && !strncmp(txt, "trace ", 6), "trace info %s: %s",
              cases[i].copy, moe_errmsg());
        moe_clear_error();
        free(txt);
        remove(cases[i].copy);
    }
}

/* Bytes that start like gzip but do not hold a deflate stream are reported as corrupt gzip
 * data (not as an empty file), by `trace info` and by the FLAME loader. The bytes, by hand
 * (RFC 1952 and 1951): magic 1f 8b, method 08 (deflate), flags 00, mtime 0, xfl 00, OS 03,
 * then 0x07: BFINAL = 1 and BTYPE = 11, a block type deflate reserves (zlib: "invalid block
 * type"), then filler. */
static void test_corrupt_gzip(void)
{
    static const unsigned char bytes[] = {0x1f, 0x8b, 0x08, 0x00, 0, 0, 0, 0, 0x00, 0x03,
                                          0x07, 0x55, 0xaa, 0x01, 0x02, 0x03};
    const char *path = "/tmp/moesim_test_traces_layer0_corrupt.csv.gz";
    FILE *f = fopen(path, "wb");
    int ok = f && fwrite(bytes, 1, sizeof bytes, f) == sizeof bytes;
    if (f && fclose(f))
        ok = 0;
    CHECK(ok, "cannot write %s", path);
    int rc;
    char *txt = info_text(path, &rc);
    CHECK(rc == MOE_EFORMAT && strstr(moe_errmsg(), "corrupt or truncated gzip data") &&
              strstr(moe_errmsg(), path) && !strstr(moe_errmsg(), "empty file"),
          "trace info on corrupt gzip: rc %d, '%s'", rc, moe_errmsg());
    moe_clear_error();
    free(txt);
    moe_rec r;
    rc = moe_trace_load(MOE_TRACE_FLAME, path, 0, 0, 1000, &r);
    CHECK(rc == MOE_EFORMAT && strstr(moe_errmsg(), "corrupt or truncated gzip data") &&
              strstr(moe_errmsg(), path),
          "FLAME load of corrupt gzip: rc %d, '%s'", rc, moe_errmsg());
    moe_clear_error();
    remove(path);
}

/* `trace info` on a folder of popularity counts: one line per file. */
static void test_info_popularity_folder(void)
{
    /* tests/fixtures/traces/popularity holds small.json: layers [3 2 2 1] and [2 0 3 3]; each
     * 8 counts = 4 tokens, max 3 / mean 2 = 1.5 in both layers (mean and max 1.5) */
    int rc;
    char *txt = info_text(FX "/popularity", &rc);
    CHECK(rc == MOE_OK && txt && strstr(txt, "files    1\n") &&
              strstr(txt, "small.json      2       4        4    1.5000    1.5000\n"),
          "trace info on the popularity fixture folder: rc %d %s\n%s", rc, moe_errmsg(),
          txt ? txt : "");
    moe_clear_error();
    free(txt);
    /* the shipped counts: 7 subjects x 2 models; the international_law line computed from its
     * JSON with Python's json module: tokens max over layers of sum/2 = 1920, max/mean per
     * layer averaged over the 32 layers 1.42324, largest 1.89583 */
    const char *shipped = "experiments/data/mixtral-8x7b-popularity";
    txt = info_text(shipped, &rc);
    CHECK(rc == MOE_OK && txt && strstr(txt, "files    14\n") &&
              strstr(txt, "mixtral_8x7b_instruct/expert_popularity_international_law.json") &&
              strstr(txt, "     32       8     1920    1.4232    1.8958\n"),
          "trace info on %s: rc %d %s\n%s", shipped, rc, moe_errmsg(), txt ? txt : "");
    moe_clear_error();
    free(txt);
}

/* ---- the real traces --------------------------------------------------------------------- */

static void test_real(void)
{
    const char *root = moe_trace_root();
    if (!has_dir(root)) {
        printf("skipped: %s absent (real traces)\n", root);
        return;
    }
    char path[1024];
    moe_batch bt;
    moe_plan *p;

    /* DeepSeek Puffin subset, layer 1: 14,911 tokens (the trace's provenance notes); counts
     * from real_counts.py */
    static const long ds_cnt[64] = {
        1327, 1100, 1926, 1357, 1231, 1521, 1871, 1233, 3619, 1344, 1284, 1520, 1022,
        1377, 1173, 1199, 840,  1160, 1582, 1173, 1187, 1390, 1255, 1113, 1981, 1040,
        1862, 1292, 1335, 1404, 1346, 1170, 1707, 1798, 1320, 1100, 1001, 1433, 1228,
        1666, 1142, 1338, 1344, 2184, 1414, 1041, 1188, 1385, 1444, 1393, 1351, 1287,
        1274, 1340, 1514, 1339, 1799, 1600, 803,  1691, 1061, 1258, 1412, 1377};
    snprintf(path, sizeof path, "%s/deepseek-v2-lite-moebeyond/puffin_prompts_0001-0200", root);
    moe_kv kd[] = {{"path", path, "t.ini", 1, NULL}};
    moe_source *s = open_src("trace_deepseek", kd, 1, 14911, 64);
    if (s) {
        moe_source_batch(s, 0, &bt);
        static const int32_t first[6] = {8, 26, 56, 57, 60, 43};
        CHECK(memcmp(bt.choices, first, sizeof first) == 0, "deepseek real: first row");
        p = replay(&bt, NULL, 0);
        CHECK(p && p->n_entries == 14911 * 6 && kept_equal(p, ds_cnt, 64),
              "deepseek real layer 1: replay reproduces the recorded counts");
        moe_plan_free(p);
        moe_source_close(s);
    }
    /* the default path (both subsets), capped: max_tokens = 1000 rows, so batch 1 of 1000
     * cycles back to row 0 */
    moe_kv km[] = {{"max_tokens", "1000", "t.ini", 1, NULL}};
    s = open_src("trace_deepseek", km, 1, 1000, 64);
    if (s) {
        int32_t c0[6];
        moe_source_batch(s, 0, &bt);
        memcpy(c0, bt.choices, sizeof c0);
        moe_source_batch(s, 1, &bt);
        CHECK(memcmp(c0, bt.choices, sizeof c0) == 0 && c0[0] == 8, "max_tokens caps the rows");
        moe_source_close(s);
    }

    /* Mixtral: the folder's *_routing.jsonl (gsm8k_2, humaneval_2), layer 0: 583 tokens */
    static const long mx_cnt[8] = {115, 112, 167, 149, 144, 204, 146, 129};
    s = open_src("trace_mixtral", NULL, 0, 583, 8);
    if (s) {
        moe_source_batch(s, 0, &bt);
        p = replay(&bt, NULL, 0);
        CHECK(p && kept_equal(p, mx_cnt, 8), "mixtral real layer 0: replay reproduces the counts");
        moe_plan_free(p);
        /* topk k = 2 on the affinities: the recorded experts and gates, token by token */
        moe_route_opts o;
        moe_route_opts_default(&o);
        o.k = 2;
        o.dropless = 1;
        moe_router *r = NULL;
        p = moe_plan_alloc(583, 8, 1200);
        moe_route_in in = {583, 8, bt.logits, bt.ids, NULL, NULL, NULL, NULL, 0, NULL, NULL};
        int bad = -1;
        if (!moe_router_alloc(moe_router_find("topk"), &o, 583, 8, &r) &&
            !moe_router_route(r, &in, p)) {
            bad = p->n_entries != 583 * 2;
            for (size_t i = 0; i < p->n_entries; i++) {
                const moe_entry *en = &p->entries[i];
                const int32_t *ch = bt.choices + 2 * en->token;
                const double *w = bt.choice_w + 2 * en->token;
                int j = en->expert == ch[0] ? 0 : en->expert == ch[1] ? 1 : -1;
                /* the recorded float32 gates sum to 1 within 1e-7: topk renormalises them */
                bad += j < 0 || fabs(en->combine_w - w[j] / (w[0] + w[1])) > 1e-12;
            }
        }
        CHECK(bad == 0, "mixtral real: topk on the affinities = recorded choices (%d bad; %s)", bad,
              moe_errmsg());
        moe_clear_error();
        moe_router_free(r);
        moe_plan_free(p);
        moe_source_close(s);
    }
    static const long raw_cnt[8] = {35, 37, 43, 54, 72, 80, 56, 59};
    snprintf(path, sizeof path,
             "%s/mixtral-8x7b-instruct-fp8-specmoe/"
             "humaneval_p0_prefill_decode_raw.jsonl",
             root);
    moe_kv kr[] = {{"path", path, "t.ini", 1, NULL}};
    s = open_src("trace_mixtral", kr, 1, 218, 8);
    if (s) {
        moe_source_batch(s, 0, &bt);
        p = replay(&bt, NULL, 0);
        CHECK(p && kept_equal(p, raw_cnt, 8), "mixtral raw log layer 0: 135 + 83 tokens, counts");
        moe_plan_free(p);
        moe_source_close(s);
    }

    /* FLAME layer 2: 2048 tokens, top-6 */
    static const long fl_cnt[64] = {166, 299, 150, 262, 254, 222, 169, 186, 202, 212, 156, 157, 166,
                                    144, 195, 221, 216, 217, 166, 169, 197, 303, 166, 115, 123, 195,
                                    114, 126, 315, 211, 186, 214, 115, 274, 297, 225, 182, 243, 358,
                                    101, 136, 180, 200, 147, 119, 210, 184, 234, 223, 192, 200, 191,
                                    124, 209, 123, 202, 187, 131, 163, 207, 184, 161, 129, 263};
    s = open_src("trace_flame", NULL, 0, 2048, 64);
    if (s) {
        moe_source_batch(s, 0, &bt);
        p = replay(&bt, NULL, 0);
        CHECK(p && bt.k_rec == 6 && kept_equal(p, fl_cnt, 64),
              "flame real layer 2: replay reproduces the counts");
        moe_plan_free(p);
        /* softmax of the affinities gives back the recorded probabilities of the chosen */
        double sm[64], worst = 0.0;
        for (int t = 0; t < 2048; t++) {
            moe_softmax(bt.logits + (size_t)t * 64, 64, sm);
            for (int j = 0; j < 6; j++) {
                int e = bt.choices[t * 6 + j];
                worst = fmax(worst, fabs(sm[e] - bt.choice_w[t * 6 + j]));
            }
        }
        CHECK(worst < 1e-12, "flame real: softmax(affinities) = p (worst %g)", worst);
        moe_source_close(s);
    }

    /* popularity, international_law (instruct) layer 11, the most imbalanced (max/mean 1.708):
     * every expert is chosen with its recorded share 2 c_e / sum c (Binomial, 5 sigma) */
    snprintf(path, sizeof path,
             "%s/mixtral-8x7b-fiddler-popularity/mixtral_8x7b_instruct/"
             "expert_popularity_international_law.json",
             root);
    int L = 0, E = 0;
    long *counts = NULL;
    moe_kv kp[] = {{"path", path, "t.ini", 1, NULL}, {"layer", "11", "t.ini", 2, NULL}};
    s = moe_trace_popularity_read(path, &L, &E, &counts)
            ? NULL
            : open_src("trace_mixtral_popularity", kp, 2, 50000, 8);
    if (s && L == 32 && E == 8) {
        moe_source_batch(s, 0, &bt);
        long c[8] = {0}, sum = 0;
        for (int t = 0; t < 2 * bt.n; t++)
            c[bt.choices[t]]++;
        for (int e = 0; e < 8; e++)
            sum += counts[11 * 8 + e];
        int bad = 0;
        for (int e = 0; e < 8; e++) {
            double pe = 2.0 * counts[11 * 8 + e] / sum;
            bad += fabs(c[e] - 50000 * pe) > 5 * sqrt(50000 * pe * (1 - pe));
        }
        CHECK(bad == 0, "popularity real layer 11: %d experts off their recorded share", bad);
    } else {
        CHECK(0, "popularity real: %s", moe_errmsg());
        moe_clear_error();
    }
    moe_source_close(s);
    free(counts);

    int rc;
    snprintf(path, sizeof path, "%s/deepseek-v2-lite-moebeyond", root);
    char *txt = info_text(path, &rc);
    CHECK(rc == 0 && txt &&
              strstr(txt, "tokens   16454 (records 427804, missing (token, layer) "
                          "records 0)"),
          "trace info on the real DeepSeek folder");
    free(txt);
    snprintf(path, sizeof path,
             "%s/mixtral-8x7b-fiddler-popularity/mixtral_8x7b_instruct/"
             "expert_popularity_international_law.json",
             root);
    txt = info_text(path, &rc);
    CHECK(rc == 0 && txt && strstr(txt, "tokens   1920"), "trace info on popularity counts");
    free(txt);
}

int main(void)
{
    moe_install_gsl_handler();
    test_deepseek();
    test_mixtral();
    test_flame();
    test_popularity();
    test_malformed();
    test_info();
    test_bom();
    test_corrupt_gzip();
    test_info_popularity_folder();
    test_real();
    return check_report("test_traces");
}
