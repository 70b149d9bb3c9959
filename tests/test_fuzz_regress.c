/* test_fuzz_regress.c: replays every input kept for the fuzz targets, in the normal build (and
 * under ASan/UBSan in `make test-asan`): the seed corpora tests/fuzz/corpus_NAME/ and the
 * inputs that once crashed a target, tests/fuzz/crashes/fuzz_NAME-*. Each input goes through
 * the very entry point libFuzzer calls: the targets' .c files are included here with
 * LLVMFuzzerTestOneInput renamed. Their contracts (tests/fuzz/fuzz.h: errors are status codes
 * with a one-line message naming the input, results keep their invariants) abort on a
 * violation, naming the input; reaching the end of a folder is the check that nothing crashed.
 * Then the inputs kept for fixed bugs are checked for the exact message they now get.
 * Run from the repository root (tests/run.sh does).
 */
#include "check.h"

#define LLVMFuzzerTestOneInput fuzz_one_npy
#include "fuzz/fuzz_npy.c"
#undef LLVMFuzzerTestOneInput
#define LLVMFuzzerTestOneInput fuzz_one_spec
#include "fuzz/fuzz_spec.c"
#undef LLVMFuzzerTestOneInput
#define LLVMFuzzerTestOneInput fuzz_one_deepseek
#include "fuzz/fuzz_trace_deepseek.c"
#undef LLVMFuzzerTestOneInput
#define LLVMFuzzerTestOneInput fuzz_one_mixtral
#include "fuzz/fuzz_trace_mixtral.c"
#undef LLVMFuzzerTestOneInput
#define LLVMFuzzerTestOneInput fuzz_one_flame
#include "fuzz/fuzz_trace_flame.c"
#undef LLVMFuzzerTestOneInput
#define LLVMFuzzerTestOneInput fuzz_one_popularity
#include "fuzz/fuzz_trace_popularity.c"
#undef LLVMFuzzerTestOneInput
#define LLVMFuzzerTestOneInput fuzz_one_route
#include "fuzz/fuzz_route.c"
#undef LLVMFuzzerTestOneInput
#define LLVMFuzzerTestOneInput fuzz_one_recorded
#include "fuzz/fuzz_recorded.c"
#undef LLVMFuzzerTestOneInput
#define LLVMFuzzerTestOneInput fuzz_one_db
#include "fuzz/fuzz_db.c"
#undef LLVMFuzzerTestOneInput

#include <dirent.h>
#include <signal.h>

#define FUZZ_ROOT "tests/fuzz"

typedef struct {
    const char *name; /* fuzz_NAME.c, corpus_NAME/, crashes/fuzz_NAME-* */
    int (*one)(const uint8_t *, size_t);
} target;

static const target targets[] = {
    {"npy", fuzz_one_npy},
    {"spec", fuzz_one_spec},
    {"trace_deepseek", fuzz_one_deepseek},
    {"trace_mixtral", fuzz_one_mixtral},
    {"trace_flame", fuzz_one_flame},
    {"trace_popularity", fuzz_one_popularity},
    {"route", fuzz_one_route},
    {"recorded", fuzz_one_recorded},
    {"db", fuzz_one_db},
    {NULL, NULL},
};

/* ---- naming the input at fault when a replay aborts or ASan reports ---- */

static void on_abort(int sig)
{
    static const char msg[] = "test_fuzz_regress: aborted while replaying ";
    if (fuzz_current) {
        ssize_t w = write(2, msg, sizeof msg - 1);
        w = write(2, fuzz_current, strlen(fuzz_current));
        w = write(2, "\n", 1);
        (void)w;
    }
    signal(sig, SIG_DFL);
    raise(sig);
}

#if defined(__SANITIZE_ADDRESS__)
void __asan_on_error(void);
void __asan_on_error(void)
{
    if (fuzz_current)
        fprintf(stderr, "test_fuzz_regress: sanitizer report while replaying %s\n",
                fuzz_current);
}
#endif

/* ---- replaying ---- */

static uint8_t *read_all(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    size_t cap = 4096, n = 0;
    uint8_t *buf = malloc(cap);
    while (buf) {
        n += fread(buf + n, 1, cap - n, f);
        if (n < cap)
            break;
        uint8_t *nb = realloc(buf, cap * 2);
        if (!nb) {
            free(buf);
            buf = NULL;
            break;
        }
        buf = nb;
        cap *= 2;
    }
    int err = ferror(f);
    fclose(f);
    if (err) {
        free(buf);
        return NULL;
    }
    *len = n;
    return buf;
}

/* Replay the files of dir whose names start with prefix ("" = all); returns how many, or -1
 * if a file could not be read. */
static int replay_dir(const char *dir, const char *prefix, const target *t)
{
    DIR *d = opendir(dir);
    if (!d)
        return 0;
    int n = 0;
    struct dirent *de;
    char path[1024];
    while ((de = readdir(d))) {
        if (de->d_name[0] == '.' || strncmp(de->d_name, prefix, strlen(prefix)) != 0)
            continue;
        snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
        size_t len = 0;
        uint8_t *data = read_all(path, &len);
        if (!data) {
            fprintf(stderr, "cannot read %s\n", path);
            n = -1;
            break;
        }
        fuzz_current = path;
        t->one(data, len);
        fuzz_current = NULL;
        free(data);
        n++;
    }
    closedir(d);
    return n;
}

/* Every corpus folder belongs to a target (a new target must be listed above). */
static void check_corpus_folders(void)
{
    DIR *d = opendir(FUZZ_ROOT);
    CHECK(d != NULL, "cannot open %s: run from the repository root", FUZZ_ROOT);
    if (!d)
        return;
    struct dirent *de;
    int unknown = 0;
    while ((de = readdir(d))) {
        if (strncmp(de->d_name, "corpus_", 7) != 0)
            continue;
        int found = 0;
        for (const target *t = targets; t->name; t++)
            found |= strcmp(de->d_name + 7, t->name) == 0;
        if (!found) {
            fprintf(stderr, "FAIL: %s/%s has no entry point in test_fuzz_regress.c\n", FUZZ_ROOT,
                    de->d_name);
            unknown++;
        }
    }
    closedir(d);
    CHECK(unknown == 0, "%d corpus folders without a target", unknown);
}

/* ---- inputs kept for fixed bugs: the message they get now ---- */

/* Load a spec given as text; returns the error message ("" if it loaded) and the points. */
static const char *spec_message(const char *text, size_t *npoints, const char **router_type)
{
    char path[400];
    snprintf(path, sizeof path, "%s/spec.ini", fuzz_dir());
    fuzz_write(path, (const uint8_t *)text, strlen(text));
    moe_spec *s = NULL;
    int rc = moe_spec_load(path, NULL, 0, &s);
    *npoints = rc ? 0 : moe_spec_npoints(s);
    *router_type = rc ? "" : moe_spec_point(s, 0)->rtype->name;
    moe_spec_free(s);
    return rc ? moe_errmsg() : "";
}

/* Bugs found by fuzz_spec and fixed in sim/spec.c, and what the inputs get now. */
static void check_fixed_bugs(void)
{
    char want[1100];
    size_t np;
    const char *type;
    const char *msg;
    /* "1" and "01" made two points with one configuration key (the store then refused the
     * second point in the middle of the sweep): now one value listed twice, located */
    msg = spec_message("[experiment]\nseeds = 1 01\n[router.topk]\nk = 1\n"
                       "[distribution.g]\nsource = gaussian\n[shape.s]\nd = 2\nf = 2\nE = 2\n",
                       &np, &type);
    snprintf(want, sizeof want,
             "seed 1 is listed twice ('1' and '01') (%s/spec.ini:2, key experiment.seeds)",
             fuzz_dir());
    CHECK(strcmp(msg, want) == 0, "seeds 1 01: '%s', expected '%s'", msg, want);
    msg = spec_message("[experiment]\ntokens = 8 008\n[router.topk]\nk = 1\n"
                       "[distribution.g]\nsource = gaussian\n[shape.s]\nd = 2\nf = 2\nE = 2\n",
                       &np, &type);
    snprintf(want, sizeof want,
             "8 is listed twice ('8' and '008') (%s/spec.ini:2, key experiment.tokens)",
             fuzz_dir());
    CHECK(strcmp(msg, want) == 0, "tokens 8 008: '%s', expected '%s'", msg, want);
    /* a section without keys did not exist (libinih reports keys only), so the documented
     * `[router.soft_moe]` alone (type defaults to the name) was "no [router.NAME] sections" */
    msg = spec_message("[router.soft_moe]\n[distribution.g]\nsource = gaussian\n"
                       "[shape.s]\nd = 2\nf = 2\nE = 2\n",
                       &np, &type);
    CHECK(msg[0] == '\0' && np == 1 && strcmp(type, "soft_moe") == 0,
          "[router.soft_moe] alone: '%s', %zu points of type %s", msg, np, type);
    msg = spec_message("[router.topk]\nk = 1\n[distribution.g]\n[shape.s]\nd = 2\nf = 2\nE = 2\n",
                       &np, &type);
    snprintf(want, sizeof want, "missing key (%s/spec.ini:3, key distribution.g.source)",
             fuzz_dir());
    CHECK(strcmp(msg, want) == 0, "empty distribution: '%s', expected '%s'", msg, want);
    /* an indented [x] after a key continues its value (as libinih reads it): no section x */
    msg = spec_message("[experiment]\nrouters = topk\n  [x]\n[router.topk]\n"
                       "[distribution.g]\nsource = gaussian\n[shape.s]\nd = 2\nf = 2\nE = 2\n",
                       &np, &type);
    snprintf(want, sizeof want,
             "no section [router.[x]] for '[x]' (%s/spec.ini:2, key experiment.routers)",
             fuzz_dir());
    CHECK(strcmp(msg, want) == 0, "indented [x]: '%s', expected '%s'", msg, want);
    /* an override of 300 control characters: written as \xHH, its message outgrew the buffer
     * and was cut before its where (--set:1); now the middle is elided and the where kept */
    char set[400] = "act";
    memset(set + 3, 0x1A, 300);
    set[303] = '\0';
    const char *sets[1] = {set};
    char path[400];
    snprintf(path, sizeof path, "%s/spec.ini", fuzz_dir());
    fuzz_write(path, (const uint8_t *)"[router.topk]\n", 14);
    moe_spec *s = NULL;
    int rc = moe_spec_load(path, sets, 1, &s);
    msg = moe_errmsg();
    const char *tail = "\\x1A\\x1A\\x1A' (--set:1)", *dots = strstr(msg, " ... ");
    size_t ml = strlen(msg), tl = strlen(tail), hexes = 0;
    for (const char *p = strstr(msg, "\\x"); p; p = strstr(p + 1, "\\x"))
        hexes += p[2] == '1' && p[3] == 'A';
    /* Worked by hand from sim/error.c's rule (1023 bytes at most; the what elided so that
     * the where stays whole, keeping the what's last 16 bytes at most): escaped, the what
     * "bad override 'act" + 300 \x1A's + "'" is 14 + 3 + 1200 + 1 = 1218 bytes and the where
     * " (--set:1)" 10 (the label counting from 1): 1228 in all. The what gets 1023 - 10 =
     * 1013: its tail "'" and 3 \x1A's (13 bytes), " ... ", and a head of at most 995 bytes:
     * "bad override 'act" (17) and 244 \x1A's (976). 993 + 5 + 13 + 10 = 1021. */
    CHECK(rc == MOE_EINVAL && s == NULL && strncmp(msg, "bad override 'act\\x1A", 21) == 0 &&
              ml == 1021 && strcmp(msg + ml - tl, tail) == 0 && dots && dots - msg == 993 &&
              !strstr(dots + 1, " ... ") && hexes == 247,
          "override of 300 control characters: %d '%s'", rc, msg);
    moe_spec_free(s);
    /* the same rule cuts at characters: 600 two-byte characters (U+00E9), 1225 bytes with the
     * rest. The what's tail of 16 bytes would start inside a character ("'" and 15 bytes), so
     * it keeps 7 of them (15 bytes); its head of 1013 - 15 - 5 = 993 bytes would end inside one
     * (14 + 979), so it keeps 489 (992 bytes). 992 + 5 + 15 + 10 = 1022 bytes. */
    char wide[1300] = "";
    for (int i = 0; i < 600; i++)
        strcat(wide, "\xc3\xa9");
    sets[0] = wide;
    s = NULL;
    rc = moe_spec_load(path, sets, 1, &s);
    msg = moe_errmsg();
    char head[1100] = "bad override '", back[500] = "";
    for (int i = 0; i < 489; i++)
        strcat(head, "\xc3\xa9");
    for (int i = 0; i < 7; i++)
        strcat(back, "\xc3\xa9");
    snprintf(want, sizeof want, "%s ... %s' (--set:1)", head, back);
    CHECK(rc == MOE_EINVAL && s == NULL && strcmp(msg, want) == 0 && strlen(msg) == 1022,
          "override of 600 two-byte characters: %d '%s' (%zu bytes)", rc, msg, strlen(msg));
    moe_spec_free(s);
    /* a section name of 180 control characters, in a file whose name is 100 bytes long: its
     * message names it twice, in the what and in the where "(FILE:1, section [...])", which
     * alone outgrows what the rule keeps whole (1023 - 205 bytes): the what keeps its first
     * bytes, the where its beginning (the file and line) and its end, each with " ... ": the
     * where's last 100 bytes at most, "])" and 24 whole \x13's (98 bytes, by hand) */
    char spec[300] = "[router.a", where[600];
    memset(spec + 9, 0x13, 180);
    strcpy(spec + 189, "]\nk = 1\n");
    snprintf(path, sizeof path, "%s/%0100d.ini", fuzz_dir(), 0);
    fuzz_write(path, (const uint8_t *)spec, strlen(spec));
    s = NULL;
    rc = moe_spec_load(path, NULL, 0, &s);
    msg = moe_errmsg();
    snprintf(where, sizeof where, " (%s:1, section [router.a\\x13", path);
    const char *w = strstr(msg, where), *d1 = strstr(msg, " ... ");
    const char *d2 = d1 ? strstr(d1 + 1, " ... ") : NULL;
    ml = strlen(msg);
    CHECK(rc == MOE_EINVAL && s == NULL && !strncmp(msg, "bad section name [router.a\\x13", 30) &&
              ml <= 1023 && ml > 900 && w && d1 && d1 < w && d2 > w && !strstr(d2 + 1, " ... ") &&
              !strcmp(msg + ml - 6, "\\x13])") && strlen(d2 + 5) == 98,
          "section name of 180 control characters: %d '%s' (%zu bytes)", rc, msg, ml);
    moe_spec_free(s);
}

/* Bugs found by the command-line targets (fuzz_route, fuzz_recorded, fuzz_db) and fixed; the
 * inputs are kept in crashes/ and replayed above. Here, the exact message one of them gets. */
static void check_fixed_cli_bugs(void)
{
    /* a CR in an unknown flag ended up raw in the message (two lines on a terminal): control
     * characters in any message are now escaped (sim/error.c) */
    const char *argv[] = {"route", "--\r"};
    int rc = fuzz_cli_run(moe_cmd_route, 2, argv);
    const char *want = "unknown or incomplete flag '--\\r' (command line)";
    CHECK(rc == MOE_EINVAL && strcmp(moe_errmsg(), want) == 0,
          "route --<CR>: %d '%s', expected '%s'", rc, moe_errmsg(), want);

    /* --plan and --metrics on one path: the metrics silently replaced the plan; now refused
     * before anything is written */
    const char *dir = fuzz_subdir("route");
    route_write_inputs(dir);
    char logits[600], plan[600], msg[1400];
    snprintf(logits, sizeof logits, "%s/L.npy", dir);
    snprintf(plan, sizeof plan, "%s/p.csv", dir);
    const char *same[] = {"route", "--router", "topk", "--logits", logits, "--plan", plan,
                          "--metrics", plan};
    rc = fuzz_cli_run(moe_cmd_route, 9, same);
    snprintf(msg, sizeof msg, "cannot write metrics over the plan of this command (%s)", plan);
    CHECK(rc == MOE_EINVAL && strcmp(moe_errmsg(), msg) == 0,
          "route --plan P --metrics P: %d '%s', expected '%s'", rc, moe_errmsg(), msg);
    CHECK(access(plan, F_OK) != 0, "route --plan P --metrics P wrote %s", plan);

    /* a configuration key holding a newline: --record wrote it on two lines (no read back);
     * now refused, the key shown escaped */
    const char *db_dir = fuzz_subdir("db");
    char db[600], out[600];
    snprintf(db, sizeof db, "%s/nl.db", db_dir);
    snprintf(out, sizeof out, "%s/nl.tsv", db_dir);
    size_t len = 0;
    char *bytes = fuzz_slurp(fuzz_db_make_template(), &len);
    fuzz_write(db, (const uint8_t *)bytes, len);
    free(bytes);
    /* the UPDATE itself must run: below the schema's longest entry, the harness's length limit
     * made every statement fail to prepare and this check record an unchanged database */
    int failed =
        fuzz_db_apply(db, "UPDATE points SET config_key = 'a' || char(10) || 'b' WHERE id = 1;");
    CHECK(failed == 0, "the UPDATE setting a key with a newline failed (%d statements)", failed);
    const char *rec[] = {"compare", "--record", db, out};
    rc = fuzz_cli_run(moe_cmd_compare, 4, rec);
    snprintf(msg, sizeof msg, "cannot record: configuration key 'a\\nb' holds a line break (%s)",
             db);
    CHECK(rc == MOE_EFORMAT && strcmp(moe_errmsg(), msg) == 0,
          "record of a key with a newline: %d '%s', expected '%s'", rc, moe_errmsg(), msg);
    CHECK(access(out, F_OK) != 0, "a refused --record wrote %s", out);
}

int main(void)
{
    signal(SIGABRT, on_abort);
    moe_install_gsl_handler();
    check_corpus_folders();
    for (const target *t = targets; t->name; t++) {
        char dir[256], prefix[64];
        snprintf(dir, sizeof dir, "%s/corpus_%s", FUZZ_ROOT, t->name);
        int n = replay_dir(dir, "", t);
        CHECK(n > 0, "%s: %d seed inputs replayed (want at least one)", dir, n);
        snprintf(prefix, sizeof prefix, "fuzz_%s-", t->name);
        n = replay_dir(FUZZ_ROOT "/crashes", prefix, t);
        CHECK(n >= 0, "crashes/%s*: an input could not be read", prefix);
    }
    check_fixed_bugs();
    check_fixed_cli_bugs();
    return check_report("test_fuzz_regress");
}
