/* fuzz_cli.h: what the command-line fuzz targets (fuzz_route.c, fuzz_recorded.c, fuzz_db.c)
 * share: running a moesim command through the very function main.c calls (cli.h) with an argv
 * of fresh, writable strings, its standard output sent to /dev/null (standard error stays: the
 * sanitizers report there), and checking the command's status against the error contract of
 * fuzz.h: 0, or a code MOE_EINVAL..MOE_EINPUT with a one-line message. */
#ifndef MOE_FUZZ_CLI_H
#define MOE_FUZZ_CLI_H

#include "cli.h"
#include "fuzz.h"

#include <fcntl.h>

/* Run cmd(argc, argv) with stdout on /dev/null; argv is copied (getopt permutes it). */
static int fuzz_cli_run(int (*cmd)(int, char **), int argc, const char *const *argv)
    FUZZ_UNUSED;
static int fuzz_cli_run(int (*cmd)(int, char **), int argc, const char *const *argv)
{
    char **av = calloc((size_t)argc + 1, sizeof *av);
    FUZZ_REQUIRE(av != NULL, "out of memory in the harness");
    for (int i = 0; i < argc; i++) {
        av[i] = strdup(argv[i]);
        FUZZ_REQUIRE(av[i] != NULL, "out of memory in the harness");
    }
    fflush(stdout);
    int saved = dup(1), null = open("/dev/null", O_WRONLY);
    FUZZ_REQUIRE(saved >= 0 && null >= 0, "cannot redirect stdout in the harness");
    dup2(null, 1);
    close(null);
    moe_clear_error();
    int rc = cmd(argc, av);
    fflush(stdout);
    dup2(saved, 1);
    close(saved);
    for (int i = 0; i < argc; i++)
        free(av[i]);
    free(av);
    FUZZ_REQUIRE(rc == MOE_OK || (rc >= MOE_EINVAL && rc <= MOE_EINPUT),
                 "a status code out of range");
    if (rc) {
        const char *msg = moe_errmsg();
        FUZZ_REQUIRE(msg[0] != '\0', "an error without a message");
        FUZZ_REQUIRE(strchr(msg, '\n') == NULL && strchr(msg, '\r') == NULL,
                     "a message of more than one line");
    }
    return rc;
}

/* Read a whole file (malloc'd, *len bytes) or NULL when it cannot be read. */
static char *fuzz_slurp(const char *path, size_t *len) FUZZ_UNUSED;
static char *fuzz_slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    char *buf = NULL;
    size_t cap = 0, n = 0;
    for (;;) {
        if (n == cap) {
            char *nb = realloc(buf, cap ? 2 * cap : 4096);
            FUZZ_REQUIRE(nb != NULL, "out of memory in the harness");
            buf = nb;
            cap = cap ? 2 * cap : 4096;
        }
        size_t got = fread(buf + n, 1, cap - n, f);
        n += got;
        if (got == 0)
            break;
    }
    fclose(f);
    *len = n;
    return buf;
}

/* 1 when the files a and b hold the same bytes (both readable). */
static int fuzz_same_file(const char *a, const char *b) FUZZ_UNUSED;
static int fuzz_same_file(const char *a, const char *b)
{
    size_t la = 0, lb = 0;
    char *x = fuzz_slurp(a, &la), *y = fuzz_slurp(b, &lb);
    int same = x && y && la == lb && memcmp(x, y, la) == 0;
    free(x);
    free(y);
    return same;
}

/* 1 when folder dir holds a name containing ".tmp." (a temporary left behind). */
static int fuzz_has_temp(const char *dir) FUZZ_UNUSED;
static int fuzz_has_temp(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return 0;
    struct dirent *de;
    int found = 0;
    while ((de = readdir(d)))
        found |= strstr(de->d_name, ".tmp.") != NULL;
    closedir(d);
    return found;
}

/* The --record round trip of src (a database or a recorded file), after `compare --record src
 * out1` succeeded: out1 reads back (`--record out1 out2`), out2 = out1 byte for byte, and src
 * and out1 compare equal at zero tolerance both ways. */
static void fuzz_record_round_trip(const char *src, const char *out1, const char *out2)
    FUZZ_UNUSED;
static void fuzz_record_round_trip(const char *src, const char *out1, const char *out2)
{
    const char *rec2[] = {"compare", "--record", out1, out2};
    FUZZ_REQUIRE(fuzz_cli_run(moe_cmd_compare, 4, rec2) == MOE_OK,
                 "what --record wrote does not read back");
    FUZZ_REQUIRE(fuzz_same_file(out1, out2), "recording the recorded file changed it");
    const char *cmp1[] = {"compare", src, out1, "--rtol", "0", "--atol", "0"};
    FUZZ_REQUIRE(fuzz_cli_run(moe_cmd_compare, 7, cmp1) == MOE_OK,
                 "the recorded file differs from its source at zero tolerance");
    const char *cmp2[] = {"compare", out1, src, "--rtol", "0", "--atol", "0"};
    FUZZ_REQUIRE(fuzz_cli_run(moe_cmd_compare, 7, cmp2) == MOE_OK,
                 "the source differs from its recorded file at zero tolerance");
}

#endif
