/* fuzz_route.c: libFuzzer target for the `moesim route` command line, run through the very
 * function main.c calls (moe_cmd_route): option parsing (the fixed flags and every routing
 * option of the table), the .npy inputs, the memory check, the pipeline and the outputs.
 *
 * An input is an argv after the command word: arguments separated by NUL bytes or newlines (at
 * most 48). The command runs in a scratch folder (the working directory during the call) that
 * holds small real inputs, rewritten before each run:
 *   L.npy (6,4) float32 logits, L8.npy (8,8), Lnan.npy (6,4) with a NaN, x.npy (6,3),
 *   w1.npy (4,3,5), b1.npy (4,5), w2.npy (4,5,3), b2.npy (4,3), w1s.npy (4,3,10) and
 *   b1s.npy (4,10) (SwiGLU), ids.npy (6,) int64 token ids, u.npy (6,) uniforms, g.npy (6,4)
 *   draws in (0,1).
 * Inputs with an argument that starts with '/' or contains ".." are skipped, so nothing is
 * written outside the scratch folder, and so are inputs with a number of 7 or more digits
 * (route_big). Seed corpus: tests/fuzz/corpus_route/.
 *
 * Contracts (fuzz.h, fuzz_cli.h): the status is 0 or an error code with a one-line message; after
 * an error every input file holds its bytes as before and no other file exists (nothing
 * half-written, no earlier file lost); after a success the plan exists (unless --help asked for
 * the usage alone) and every file is an input or named by an argument (no temporary left
 * behind).
 */
#include "fuzz_cli.h"
#include "npy.h"

#include <math.h>

#define FUZZ_MAX_ARGS 48

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

typedef struct {
    const char *name;
    int dtype, ndim;
    size_t shape[3];
} route_input;

static const route_input route_inputs[] = {
    {"L.npy", MOE_F32, 2, {6, 4, 0}},     {"L8.npy", MOE_F32, 2, {8, 8, 0}},
    {"Lnan.npy", MOE_F32, 2, {6, 4, 0}},  {"x.npy", MOE_F32, 2, {6, 3, 0}},
    {"w1.npy", MOE_F32, 3, {4, 3, 5}},    {"b1.npy", MOE_F32, 2, {4, 5, 0}},
    {"w2.npy", MOE_F32, 3, {4, 5, 3}},    {"b2.npy", MOE_F32, 2, {4, 3, 0}},
    {"w1s.npy", MOE_F32, 3, {4, 3, 10}},  {"b1s.npy", MOE_F32, 2, {4, 10, 0}},
    {"ids.npy", MOE_I64, 1, {6, 0, 0}},   {"u.npy", MOE_F32, 1, {6, 0, 0}},
    {"g.npy", MOE_F32, 2, {6, 4, 0}},
};
enum { NINPUTS = sizeof route_inputs / sizeof route_inputs[0] };

static char *route_bytes[NINPUTS]; /* each input's bytes as first written */
static size_t route_len[NINPUTS];

/* Write the inputs into dir (values: a fixed pattern in [-1, 1]; uniforms and draws in (0,1);
 * ids 0..5; Lnan's [2,1] NaN). */
static void route_write_inputs(const char *dir)
{
    float v[120];
    int64_t ids[6] = {0, 1, 2, 3, 4, 5};
    char path[600];
    for (int i = 0; i < NINPUTS; i++) {
        const route_input *in = &route_inputs[i];
        size_t n = 1;
        for (int d = 0; d < in->ndim; d++)
            n *= in->shape[d];
        int unit = !strcmp(in->name, "u.npy") || !strcmp(in->name, "g.npy");
        for (size_t j = 0; j < n; j++)
            v[j] = unit ? (float)((j * 7 % 11) + 1) / 13.0f : (float)((int)(j * 5 % 13) - 6) / 6.0f;
        if (!strcmp(in->name, "Lnan.npy"))
            v[2 * 4 + 1] = NAN;
        snprintf(path, sizeof path, "%s/%s", dir, in->name);
        FUZZ_REQUIRE(moe_npy_write(path, in->dtype, in->dtype == MOE_I64 ? (const void *)ids
                                                                         : (const void *)v,
                                   in->ndim, in->shape) == MOE_OK,
                     "the harness cannot write its inputs");
        if (!route_bytes[i])
            route_bytes[i] = fuzz_slurp(path, &route_len[i]);
    }
}

static int route_is_input(const char *name)
{
    for (int i = 0; i < NINPUTS; i++)
        if (!strcmp(name, route_inputs[i].name))
            return 1;
    return 0;
}

/* path without its leading "./" (any number of them): the name the folder lists for it. */
static const char *route_plain(const char *path)
{
    while (path[0] == '.' && path[1] == '/')
        for (path += 2; *path == '/'; path++)
            ;
    return path;
}

/* 1 when name is an argument, or the value of an "--option=value" argument (an output the
 * command may have written), either one read without its leading "./". */
static int route_is_arg(const char *name, int argc, const char *const *argv)
{
    for (int i = 1; i < argc; i++) {
        const char *eq = strchr(argv[i], '=');
        if (!strcmp(name, route_plain(argv[i])) || (eq && !strcmp(name, route_plain(eq + 1))))
            return 1;
    }
    return 0;
}

/* After an error (ok = 0): the inputs as written and nothing else. After a success: the inputs
 * may be replaced by outputs, but no file exists that neither is an input nor is named by an
 * argument (a temporary left behind). */
static void route_check_folder(const char *dir, int ok, int argc, const char *const *argv)
{
    char path[600];
    for (int i = 0; i < NINPUTS && !ok; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, route_inputs[i].name);
        size_t len = 0;
        char *b = fuzz_slurp(path, &len);
        int same = b && len == route_len[i] && memcmp(b, route_bytes[i], len) == 0;
        free(b);
        FUZZ_REQUIRE(same, "a failed route changed or removed a file it did not own");
    }
    DIR *d = opendir(dir);
    FUZZ_REQUIRE(d != NULL, "the scratch folder vanished");
    struct dirent *de;
    int extra = 0;
    while ((de = readdir(d)))
        extra |= strcmp(de->d_name, ".") && strcmp(de->d_name, "..") &&
                 !route_is_input(de->d_name) && !(ok && route_is_arg(de->d_name, argc, argv));
    closedir(d);
    FUZZ_REQUIRE(!extra, ok ? "a temporary file left behind" : "a failed route left a file behind");
}

/* 1 when arg holds 7 or more digits in a row: a capacity of 10^8 slots passes the memory check
 * (17.6 GB of layer workspaces for these shapes, below this machine's memory) and runs in 0.06 s
 * in the normal build, whose untouched pages cost nothing, but ASan maps and clears them: a
 * 10 s timeout of the harness, not of moesim. */
static int route_big(const char *arg)
{
    int run = 0;
    for (; *arg; arg++)
        if ((run = *arg >= '0' && *arg <= '9' ? run + 1 : 0) >= 7)
            return 1;
    return 0;
}

/* The plan's path as getopt_long reads argv (every flag but --help takes a value, the next
 * argument or the text after '='; a flag may be shortened to any prefix that names one flag,
 * "--pl" for --plan; "--" ends the flags): the value of the last flag that names --plan, or
 * NULL. An ambiguous or unknown prefix makes the command fail, which the caller does not
 * check for a plan. */
static const char *route_plan(int argc, const char *const *argv)
{
    const char *plan = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--"))
            break;
        if (strncmp(a, "--", 2) != 0)
            continue;
        const char *eq = strchr(a, '='), *name = a + 2;
        const size_t len = eq ? (size_t)(eq - name) : strlen(name);
        if (len > 0 && !strncmp(name, "help", len) && !eq)
            continue; /* (no value) */
        const char *value = eq ? eq + 1 : i + 1 < argc ? argv[++i] : NULL;
        if (len >= 2 && len <= 4 && !strncmp(name, "plan", len))
            plan = value;
    }
    return plan;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *argv[FUZZ_MAX_ARGS + 1];
    char *copy = malloc(size + 1);
    FUZZ_REQUIRE(copy != NULL, "out of memory in the harness");
    memcpy(copy, data, size);
    copy[size] = '\0';
    int argc = 0;
    argv[argc++] = "route";
    int skip = 0, help = 0;
    for (size_t i = 0, start = 0; i <= size && !skip; i++) {
        if (i < size && copy[i] != '\n' && copy[i] != '\0')
            continue;
        copy[i] = '\0';
        const char *arg = copy + start;
        start = i + 1;
        if (i == size && !*arg)
            break;
        if (argc == FUZZ_MAX_ARGS || arg[0] == '/' || strstr(arg, "..") || route_big(arg)) {
            skip = 1;
            break;
        }
        help |= !strncmp(arg, "--he", 4); /* --help, or a prefix getopt takes for it */
        argv[argc++] = arg;
    }
    if (!skip) {
        const char *dir = fuzz_subdir("route");
        route_write_inputs(dir);
        int here = open(".", O_RDONLY | O_DIRECTORY);
        FUZZ_REQUIRE(here >= 0 && chdir(dir) == 0, "the harness cannot enter its folder");
        int rc = fuzz_cli_run(moe_cmd_route, argc, argv);
        FUZZ_REQUIRE(fchdir(here) == 0, "the harness cannot leave its folder");
        close(here);
        route_check_folder(dir, rc == MOE_OK, argc, argv);
        const char *plan = route_plan(argc, argv);
        if (!rc && plan && !help) {
            char path[4600];
            snprintf(path, sizeof path, "%s/%s", dir, plan);
            struct stat st;
            FUZZ_REQUIRE(stat(path, &st) == 0, "a route that succeeded wrote no plan");
        }
    }
    free(copy);
    return 0;
}
