/* test_spec.c: experiment specs (sim/spec.c). A valid spec expands to the sweep counted by hand;
 * every error names file, line and key: unknown key, unknown section, bad number, empty list,
 * repeated list item, k > E (router and shape), a missing file (spec, hash table, trace), bad
 * --set; --set overrides replace and add keys; routers without use for the capacity factor run
 * once, recorded as "none"; CR and CRLF line ends and a byte order mark are read, NUL bytes
 * (/dev/zero included) and a repeated section are errors naming the line. Specs are written to
 * temporary files; the expected line numbers are those of the text below (line 1 = the first
 * line of the string). A [train] section: each list is an axis (the last key varies fastest),
 * the defaults resolved per point (teacher_experts = E, probe_tokens = min(256, tokens)), the
 * training configuration in the config key, and the section's own errors. */
#include "check.h"
#include "spec.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char spec_path[64];

static void write_bytes(const char *text, size_t len);

static void write_spec(const char *text) { write_bytes(text, strlen(text)); }

static void write_bytes(const char *text, size_t len)
{
    snprintf(spec_path, sizeof spec_path, "/tmp/moesim_test_spec_XXXXXX");
    int fd = mkstemp(spec_path);
    if (fd < 0) {
        perror("mkstemp");
        exit(2);
    }
    if (write(fd, text, len) != (ssize_t)len) {
        perror("write");
        exit(2);
    }
    close(fd);
}

/* Load text with overrides; returns rc, the spec (or NULL) in *out. */
static int load(const char *text, const char *const *sets, int nsets, moe_spec **out)
{
    if (!text) /* a spec that does not exist */
        snprintf(spec_path, sizeof spec_path, "/nonexistent/spec.ini");
    else
        write_spec(text);
    int rc = moe_spec_load(spec_path, sets, nsets, out);
    if (!rc) {
        rc = moe_spec_check(*out);
        if (rc) {
            moe_spec_free(*out);
            *out = NULL;
        }
    }
    if (text)
        unlink(spec_path);
    return rc;
}

/* The load failed (rc, s) and the message contains each of the fragments (the spec path is
 * substituted for %s in the first one). */
static void check_error(const char *what, int rc, moe_spec *s, const char *where_fmt,
                        const char *frag)
{
    char where[256];
    snprintf(where, sizeof where, where_fmt, spec_path);
    const char *msg = moe_errmsg();
    CHECK(rc != 0 && s == NULL, "%s: expected an error, got rc %d", what, rc);
    CHECK(strstr(msg, where) != NULL, "%s: message '%s' lacks '%s'", what, msg, where);
    CHECK(strstr(msg, frag) != NULL, "%s: message '%s' lacks '%s'", what, msg, frag);
    moe_spec_free(s);
    moe_clear_error();
}

static void expect_error(const char *what, const char *text, const char *const *sets, int nsets,
                         const char *where_fmt, const char *frag)
{
    moe_spec *s = NULL;
    int rc = load(text, sets, nsets, &s);
    check_error(what, rc, s, where_fmt, frag);
}

/* lines:                        1 */
static const char *const base =
    "[experiment]\n"                                    /* 1 */
    "routers = topk soft\n"                             /* 2 */
    "capacity_factors = 1.0, 1.25\n"                    /* 3 */
    "   2\n"                                            /* 4: continuation of line 3 */
    "distributions = g\n"                               /* 5 */
    "tokens = 64 32\n"                                  /* 6 */
    "batches = 1\n"                                     /* 7 */
    "seeds = 3\n"                                       /* 8 */
    "\n"                                                /* 9 */
    "[router.topk]\n"                                   /* 10 */
    "type = topk\n"                                     /* 11 */
    "k = 2 ; inline comment\n"                          /* 12 */
    "\n"                                                /* 13 */
    "[router.soft]\n"                                   /* 14 */
    "type = soft_moe\n"                                 /* 15 */
    "# a comment\n"                                     /* 16 */
    "[distribution.g]\n"                                /* 17 */
    "source = gaussian\n"                               /* 18 */
    "sigma = 1.0\n"                                     /* 19 */
    "\n"                                                /* 20 */
    "[shape.s]\n"                                       /* 21 */
    "d = 16\n"                                          /* 22 */
    "f = 32\n"                                          /* 23 */
    "E = 8\n";                                          /* 24 */

/* text with line `line` (1-based) replaced by repl (which may hold several lines); the result
 * lives in one of four rotating buffers. */
static char *edit(const char *text, int line, const char *repl)
{
    static char bufs[4][4096];
    static int next;
    char *buf = bufs[next++ % 4];
    const char *p = text;
    size_t n = 0;
    for (int l = 1; *p; l++) {
        const char *e = strchr(p, '\n');
        size_t len = e ? (size_t)(e - p + 1) : strlen(p);
        if (l == line)
            n += (size_t)snprintf(buf + n, sizeof bufs[0] - n, "%s\n", repl);
        else
            n += (size_t)snprintf(buf + n, sizeof bufs[0] - n, "%.*s", (int)len, p);
        p += len;
    }
    return buf;
}

static char *with_line(int line, const char *repl) { return edit(base, line, repl); }

static void test_valid(void)
{
    moe_spec *s = NULL;
    int rc = load(base, NULL, 0, &s);
    CHECK(rc == 0, "base spec: %s", moe_errmsg());
    if (rc)
        return;
    /* topk: 3 cfs (1.0 1.25 2 on a continuation line) x 2 token counts = 6 points;
     * soft_moe (dense, no capacity): 1 x 2 token counts = 2 points; total 8 */
    CHECK_INT(moe_spec_npoints(s), 8);
    CHECK(strcmp(moe_spec_name(s), strrchr(spec_path, '/') + 1) == 0, "name = file stem");
    /* order: tokens 64 first, then routers in list order, then cfs in list order */
    const moe_point *p0 = moe_spec_point(s, 0), *p2 = moe_spec_point(s, 2),
                    *p3 = moe_spec_point(s, 3), *p4 = moe_spec_point(s, 4);
    CHECK(strcmp(p0->router, "topk") == 0 && strcmp(p0->cf_text, "1.0") == 0,
          "point 0 is topk cf 1.0 (%s %s)", p0->router, p0->cf_text);
    CHECK(strcmp(p2->cf_text, "2.0") == 0 && p2->cf == 2.0, "cf '2' reads as 2.0 (%s)",
          p2->cf_text);
    CHECK(p2->opts.cf_set && p2->opts.cf_num == 2 && p2->opts.cf_den == 1, "cf 2 exactly");
    CHECK(p0->opts.cf_num == 1 && p0->opts.cf_den == 1, "cf 1.0 exactly");
    /* the decimal as written: 1.25 = 125/100 (moe_decimal_parse reduces powers of ten only) */
    CHECK(moe_spec_point(s, 1)->opts.cf_num == 125 && moe_spec_point(s, 1)->opts.cf_den == 100,
          "cf 1.25 = 125/100");
    CHECK(strcmp(p3->router, "soft") == 0 && strcmp(p3->cf_text, "none") == 0 &&
              p3->cf_note != NULL && p3->cf != p3->cf,
          "soft_moe runs once with cf none (%s)", p3->cf_text);
    CHECK_INT(p0->tokens, 64);
    CHECK_INT(p4->tokens, 32);
    CHECK_INT(p0->k, 2);
    CHECK_INT(p0->m, 8);
    CHECK_INT(p3->m, 8); /* soft_moe, one slot per expert: M = E */
    CHECK_INT(p0->seed, 3);
    CHECK_INT(p0->error_tokens, 512);
    CHECK(strcmp(p0->params_text, "sigma=1.0") == 0, "params text '%s'", p0->params_text);
    int dup = 0;
    for (size_t i = 0; i < moe_spec_npoints(s); i++)
        for (size_t j = 0; j < i; j++)
            dup += strcmp(moe_spec_point(s, i)->config_key, moe_spec_point(s, j)->config_key) == 0;
    CHECK(dup == 0, "%d repeated config keys", dup);
    moe_spec_free(s);
}

static void test_overrides(void)
{
    const char *sets[] = {"experiment.tokens=128", "router.topk.k=1", "router.topk.order=bpr",
                          "experiment.capacity_factors=1.5"};
    moe_spec *s = NULL;
    int rc = load(base, sets, 4, &s);
    CHECK(rc == 0, "overrides: %s", moe_errmsg());
    if (rc)
        return;
    /* topk at one cf + soft_moe, one token count: 2 points */
    CHECK_INT(moe_spec_npoints(s), 2);
    const moe_point *p = moe_spec_point(s, 0);
    CHECK_INT(p->tokens, 128);
    CHECK_INT(p->k, 1);
    CHECK_INT(p->opts.order, MOE_ORDER_BPR);
    CHECK(strcmp(p->cf_text, "1.5") == 0, "cf '%s'", p->cf_text);
    moe_spec_free(s);

    /* a --set may add a section: a second topk router */
    const char *add[] = {"router.top1.type=topk", "router.top1.k=1",
                         "experiment.routers=topk top1", "experiment.tokens=16"};
    rc = load(base, add, 4, &s);
    CHECK(rc == 0, "added router: %s", moe_errmsg());
    if (!rc) {
        CHECK_INT(moe_spec_npoints(s), 6); /* 2 routers x 3 cfs */
        CHECK_INT(moe_spec_point(s, 3)->k, 1);
        moe_spec_free(s);
    }
    moe_clear_error();
}

static void test_errors(void)
{
    expect_error("unknown key", with_line(7, "batchez = 1"), NULL, 0,
                 "%s:7, key experiment.batchez", "unknown key");
    expect_error("unknown routing option", with_line(12, "kk = 2"), NULL, 0,
                 "%s:12, key router.topk.kk", "unknown routing option");
    expect_error("bad routing value", with_line(12, "k = two"), NULL, 0,
                 "%s:12, key router.topk.k", "bad value 'two'");
    expect_error("bad number", with_line(6, "tokens = 64 3x2"), NULL, 0,
                 "%s:6, key experiment.tokens", "bad number '3x2'");
    expect_error("zero tokens", with_line(6, "tokens = 0"), NULL, 0,
                 "%s:6, key experiment.tokens", "bad number '0'");
    expect_error("bad shape number", with_line(22, "d = -4"), NULL, 0, "%s:22, key shape.s.d",
                 "bad number '-4'");
    expect_error("bad capacity factor", with_line(3, "capacity_factors = 1.0 -1"), NULL, 0,
                 "%s:3, key experiment.capacity_factors", "capacity factor '-1'");
    expect_error("empty list", with_line(8, "seeds ="), NULL, 0, "%s:8, key experiment.seeds",
                 "empty list");
    expect_error("empty list of commas", with_line(2, "routers = , ,"), NULL, 0,
                 "%s:2, key experiment.routers", "empty list");
    expect_error("repeated cf", with_line(3, "capacity_factors = 1 1.0"), NULL, 0,
                 "%s:3, key experiment.capacity_factors", "listed twice");
    expect_error("router without section", with_line(2, "routers = topk nope"), NULL, 0,
                 "%s:2, key experiment.routers", "no section [router.nope]");
    expect_error("unknown router type", with_line(15, "type = soft_mo"), NULL, 0,
                 "%s:15, key router.soft.type", "unknown router type 'soft_mo'");
    expect_error("k > E in router", with_line(12, "k = 9"), NULL, 0, "%s:12, key router.topk.k",
                 "k = 9 exceeds E = 8");
    expect_error("k > E in shape", with_line(24, "E = 8\nk = 12"), NULL, 0, "%s:25, key shape.s.k",
                 "k = 12 exceeds E = 8");
    expect_error("shape missing E", with_line(24, "activation = relu"), NULL, 0,
                 "key shape.s.E", "missing key");
    expect_error("bad activation", with_line(24, "E = 8\nactivation = tanh"), NULL, 0,
                 "%s:25, key shape.s.activation", "tanh");
    expect_error("unknown section", with_line(21, "[shap.s]"), NULL, 0, "%s:22, key shap.s.d",
                 "unknown section [shap.s]");
    expect_error("duplicate key", with_line(23, "d = 32"), NULL, 0, "%s:23, key shape.s.d",
                 "duplicate key (first given at line 22)");
    expect_error("syntax error", with_line(20, "this line has no equals sign"), NULL, 0,
                 "%s:20", "syntax error");
    expect_error("key outside a section", edit(base, 1, "tokens = 3\n[experiment]"), NULL, 0,
                 "%s:1, key tokens", "key outside a section");
    char longline[320];
    memset(longline, 'x', sizeof longline - 1);
    longline[0] = ';';
    longline[sizeof longline - 1] = '\0';
    expect_error("line too long", with_line(20, longline), NULL, 0, "%s:20",
                 "line longer than 197 characters");
    expect_error("unknown source", with_line(18, "source = gausian"), NULL, 0,
                 "%s:18, key distribution.g.source", "gausian");
    expect_error("unknown source parameter", with_line(19, "sigmaa = 1"), NULL, 0, "%s:19",
                 "sigmaa");
    expect_error("missing hash table file", with_line(12, "k = 2\nhash_table = /nonexistent/t.npy"),
                 NULL, 0, "%s:13, key router.topk.hash_table", "/nonexistent/t.npy");
    expect_error("missing trace file",
                 edit(with_line(18, "source = trace_mixtral"), 19,
                      "path = /nonexistent/trace.jsonl"),
                 NULL, 0, "%s:19", "/nonexistent/trace.jsonl");
    expect_error("missing spec", NULL, NULL, 0, "/nonexistent/spec.ini", "cannot open spec");

    const char *bad_k[] = {"router.topk.k=30"};
    expect_error("--set k > E", base, bad_k, 1, "--set:1, key router.topk.k",
                 "k = 30 exceeds E = 8");
    const char *bad_val[] = {"experiment.tokens=8", "experiment.batches=many"};
    expect_error("--set bad number", base, bad_val, 2, "--set:2, key experiment.batches",
                 "bad number 'many'");
    const char *malformed[] = {"tokens=8"};
    expect_error("--set without section", base, malformed, 1, "--set:1", "bad override 'tokens=8'");
}

/* A router that cannot use the sweep's capacity factor runs once per other axis. */
static void test_cf_ignored(void)
{
    const char *sets[] = {"router.topk.dropless=true"};
    moe_spec *s = NULL;
    int rc = load(base, sets, 1, &s);
    CHECK(rc == 0, "dropless: %s", moe_errmsg());
    if (rc)
        return;
    /* topk dropless 1 + soft_moe 1, x 2 token counts */
    CHECK_INT(moe_spec_npoints(s), 4);
    const moe_point *p = moe_spec_point(s, 0);
    CHECK(strcmp(p->cf_text, "none") == 0 && p->cf_note && strstr(p->cf_note, "dropless"),
          "dropless topk: cf %s note %s", p->cf_text, p->cf_note ? p->cf_note : "(null)");
    CHECK(!p->opts.cf_set, "dropless topk gets no cf");
    moe_spec_free(s);

    const char *own[] = {"router.topk.capacity_factor=1.10"};
    rc = load(base, own, 1, &s);
    CHECK(rc == 0, "own cf: %s", moe_errmsg());
    if (!rc) {
        CHECK_INT(moe_spec_npoints(s), 4);
        p = moe_spec_point(s, 0);
        CHECK(p->opts.cf_num == 11 && p->opts.cf_den == 10, "router cf 1.10 = 11/10 (%lld/%lld)",
              p->opts.cf_num, p->opts.cf_den);
        CHECK(p->cf_note != NULL, "router's own cf is noted");
        CHECK(strcmp(p->cf_text, "1.1") == 0, "router's own cf recorded as 1.1 ('%s')", p->cf_text);
        moe_spec_free(s);
    }
    moe_clear_error();
}

/* A recorded trace fixed to 8 experts cannot pair with a 16-expert shape; `shapes` in the
 * distribution section restricts the pairing. (The popularity counts fall back to
 * experiments/data when the trace folder is absent; the test runs from the repository root.) */
static void test_required_m(void)
{
    /* distribution g becomes the popularity trace (line 19 becomes a comment); shape s gets
     * E = 16 and a second shape e8 follows it */
    const char *text = edit(edit(with_line(24, "E = 16\n[shape.e8]\nd = 16\nf = 32\nE = 8"), 18,
                                 "source = trace_mixtral_popularity"),
                            19, "; no sigma");
    const char *all_shapes[] = {"experiment.tokens=16"};
    expect_error("trace with E = 16", text, all_shapes, 1, "%s:18, key distribution.g.source",
                 "8 experts");
    const char *paired[] = {"experiment.tokens=16", "distribution.g.shapes=e8"};
    moe_spec *s = NULL;
    int rc = load(text, paired, 2, &s);
    CHECK(rc == 0, "trace paired with e8: %s", moe_errmsg());
    if (!rc) {
        CHECK_INT(moe_spec_npoints(s), 4); /* topk x 3 cfs + soft_moe, shape e8 only */
        CHECK_INT(moe_spec_point(s, 0)->E, 8);
        moe_spec_free(s);
    }
    moe_clear_error();
}

/* A spec of len bytes (NUL bytes included) fails with a message holding where and frag. */
static void expect_bytes_error(const char *what, const char *bytes, size_t len,
                               const char *where_fmt, const char *frag)
{
    write_bytes(bytes, len);
    moe_spec *s = NULL;
    int rc = moe_spec_load(spec_path, NULL, 0, &s);
    unlink(spec_path);
    check_error(what, rc, s, where_fmt, frag);
}

/* The base spec with every "\n" replaced by eol; expands to the 8 points of test_valid. */
static void expect_line_ends(const char *eol)
{
    static char buf[4096];
    size_t n = 0;
    for (const char *p = base; *p && n + 3 < sizeof buf; p++) {
        if (*p == '\n') {
            memcpy(buf + n, eol, strlen(eol));
            n += strlen(eol);
        } else {
            buf[n++] = *p;
        }
    }
    buf[n] = '\0';
    moe_spec *s = NULL;
    int rc = load(buf, NULL, 0, &s);
    CHECK(rc == 0, "line ends %s: %s", eol[0] == '\r' && !eol[1] ? "CR" : "CRLF", moe_errmsg());
    if (!rc) {
        CHECK_INT(moe_spec_npoints(s), 8);
        CHECK_INT(moe_spec_point(s, 2)->opts.cf_num, 2); /* the continuation line (line 4) */
        CHECK_INT(moe_spec_point(s, 0)->k, 2);           /* k = 2 ; inline comment */
        moe_spec_free(s);
    }
    moe_clear_error();
}

/* Bytes a text editor or a wrong path can put in a spec: line ends of other systems, a byte
 * order mark, NUL bytes, a section given twice, an endless file. */
static void test_robustness(void)
{
    expect_line_ends("\r");
    expect_line_ends("\r\n");

    /* a UTF-8 byte order mark before a section without keys: the section still exists
     * (soft_moe with the defaults: one point per token count, 2 more than test_valid's 8) */
    char bom[4096];
    snprintf(bom, sizeof bom, "\xEF\xBB\xBF[router.sm]\ntype = soft_moe\n%s",
             with_line(2, "routers = topk soft sm"));
    moe_spec *s = NULL;
    int rc = load(bom, NULL, 0, &s);
    CHECK(rc == 0, "byte order mark: %s", moe_errmsg());
    if (!rc) {
        CHECK_INT(moe_spec_npoints(s), 10);
        moe_spec_free(s);
    }
    char bom_bare[4096];
    snprintf(bom_bare, sizeof bom_bare, "\xEF\xBB\xBF[router.soft_moe]\n%s",
             with_line(2, "routers = topk soft soft_moe"));
    rc = load(bom_bare, NULL, 0, &s);
    CHECK(rc == 0, "byte order mark before a section without keys: %s", moe_errmsg());
    if (!rc) {
        CHECK_INT(moe_spec_npoints(s), 10);
        moe_spec_free(s);
    }
    moe_clear_error();

    /* a section given twice: both lines named (the second [router.topk] is line 25) */
    char twice[4096];
    snprintf(twice, sizeof twice, "%s[router.topk]\nk = 1\n", base);
    expect_error("repeated section", twice, NULL, 0, "%s:25, section [router.topk]",
                 "repeated section (first given at line 10)");

    /* a NUL byte inside a value of line 6 ("tokens = 64 32" would read as "tokens = 64") */
    char nul[4096];
    size_t len = strlen(base);
    memcpy(nul, base, len + 1);
    char *at = strstr(nul, "64 32");
    CHECK(at != NULL, "line 6 of the base spec");
    if (at)
        at[2] = '\0';
    expect_bytes_error("NUL byte", nul, len, "%s:6", "NUL byte in the spec");

    /* an endless stream of NUL bytes (this looped forever once) */
    rc = moe_spec_load("/dev/zero", NULL, 0, &s);
    CHECK(rc == MOE_EFORMAT && s == NULL, "/dev/zero: rc %d", rc);
    CHECK(strstr(moe_errmsg(), "NUL byte in the spec (/dev/zero:1)") != NULL, "/dev/zero: %s",
          moe_errmsg());
    moe_clear_error();

    /* an over-long line in a file with CR line ends is reported as such, on its own line */
    char longline[320];
    memset(longline, 'x', sizeof longline - 1);
    longline[0] = ';';
    longline[sizeof longline - 1] = '\0';
    char crlong[4096];
    snprintf(crlong, sizeof crlong, "[experiment]\rtokens = 16\r%s\r", longline);
    expect_error("long line, CR line ends", crlong, NULL, 0, "%s:3",
                 "line longer than 197 characters");
}

static void test_train(void)
{
    /* 2 routers x lr (2) x aux_weight (3) = 12 points, hand-counted */
    static const char *const text = "[experiment]\n"          /* 1 */
                                    "routers = topk switch\n"  /* 2 */
                                    "tokens = 64\n"            /* 3 */
                                    "[router.topk]\n"          /* 4 */
                                    "k = 2\n"                  /* 5 */
                                    "[router.switch]\n"        /* 6 */
                                    "[distribution.g]\n"       /* 7 */
                                    "source = gaussian\n"      /* 8 */
                                    "[shape.s]\n"              /* 9 */
                                    "d = 8\nf = 16\nE = 4\n" /* 10-12 */
                                    "[train]\n"                /* 13 */
                                    "steps = 7\n"              /* 14 */
                                    "lr = 1e-2 0.5\n"          /* 15 */
                                    "aux_weight = 0 1e-3 0.25\n" /* 16 */
                                    "optimizer = sgd\n";       /* 17 */
    moe_spec *s = NULL;
    int rc = load(text, NULL, 0, &s);
    CHECK(rc == 0, "train spec loads: %s", moe_errmsg());
    if (rc)
        return;
    CHECK(moe_spec_npoints(s) == 12, "12 training points, got %zu", moe_spec_npoints(s));
    const double aw[3] = {0, 1e-3, 0.25};
    for (size_t i = 0; i < moe_spec_npoints(s) && i < 12; i++) {
        const moe_point *p = moe_spec_point(s, i);
        CHECK(p->train == 1 && p->batches == 1, "point %zu: training, one batch", i);
        /* router slowest, then lr, then aux_weight fastest */
        CHECK(strcmp(p->router, i < 6 ? "topk" : "switch") == 0, "point %zu router %s", i,
              p->router);
        CHECK(p->tc.lr == ((i / 3) % 2 ? 0.5 : 1e-2), "point %zu lr %g", i, p->tc.lr);
        CHECK(p->tc.aux_weight == aw[i % 3], "point %zu aux_weight %g", i, p->tc.aux_weight);
        CHECK(p->tc.steps == 7 && p->tc.optimizer == MOE_OPT_SGD, "point %zu steps, optimizer",
              i);
        /* defaults: teacher_experts = E = 4, probe_tokens = min(256, 64), eval_every 10 */
        CHECK(p->tc.teacher_experts == 4 && p->tc.probe_tokens == 64 && p->tc.eval_every == 10,
              "point %zu defaults: teacher_experts %d probe %d eval_every %d", i,
              p->tc.teacher_experts, p->tc.probe_tokens, p->tc.eval_every);
        /* 7 steps, eval_every 10: rows at steps 0 and 6 */
        CHECK(moe_point_train_rows(p) == 2, "point %zu: 2 eval rows, got %d", i,
              moe_point_train_rows(p));
    }
    const char *key = moe_spec_point(s, 1)->config_key;
    CHECK(strstr(key, " train={steps=7 optimizer=sgd lr=0.01 lr_schedule=constant warmup=0 "
                      "aux=router aux_weight=0.001 z_weight=0 trainable=all eval_every=10 "
                      "probe_tokens=64 teacher=moe teacher_experts=4 teacher_k=1 "
                      "target_noise=0}") != NULL, "config key: %s", key);
    moe_spec_free(s);
    /* eval rows: steps 0, e, 2e, ... and the last (hand-counted) */
    moe_point pt;
    memset(&pt, 0, sizeof pt);
    pt.train = 1;
    const int cases[][3] = {{25, 10, 4}, {30, 10, 4}, {21, 10, 3}, {1, 10, 1}, {10, 1, 10},
                            {11, 5, 3}, {12, 5, 4}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        pt.tc.steps = cases[i][0];
        pt.tc.eval_every = cases[i][1];
        CHECK(moe_point_train_rows(&pt) == cases[i][2], "steps %d eval_every %d: %d rows, got %d",
              cases[i][0], cases[i][1], cases[i][2], moe_point_train_rows(&pt));
    }
    expect_error("train: unknown key", edit(text, 17, "optimiser = sgd"), NULL, 0,
                 "%s:17, key train.optimiser", "unknown key");
    expect_error("train: bad schedule", edit(text, 17, "lr_schedule = linear"), NULL, 0,
                 "%s:17, key train.lr_schedule", "bad value 'linear': want constant or cosine");
    expect_error("train: nan lr", edit(text, 15, "lr = nan"), NULL, 0,
                 "%s:15, key train.lr", "bad number 'nan'");
    expect_error("train: empty list", edit(text, 16, "aux_weight ="), NULL, 0,
                 "%s:16, key train.aux_weight", "empty list");
    expect_error("train: teacher_k", edit(text, 17, "teacher_k = 5"), NULL, 0,
                 "%s:17, key train.teacher_k", "teacher_k = 5 exceeds teacher_experts = 4");
    static const char *const set_gate[] = {"train.trainable=gate", "experiment.routers=hash",
                                           "router.hash.type=hash"};
    expect_error("train: gate with hash", text, set_gate, 3, "--set:1, key train.trainable",
                 "trainable = gate: router hash (hash) has no trainable gate");
}

int main(void)
{
    moe_install_gsl_handler();
    test_valid();
    test_overrides();
    test_errors();
    test_cf_ignored();
    test_required_m();
    test_robustness();
    test_train();
    return check_report("test_spec");
}
