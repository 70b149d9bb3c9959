/* fuzz.h: what the libFuzzer targets in tests/fuzz/ share. The parsers under test take paths,
 * so every input is written to a file (or a folder of files) in a private scratch folder under
 * /dev/shm (else $TMPDIR or /tmp), created once per process and removed at exit.
 *
 * Contracts the targets enforce with FUZZ_REQUIRE (a violation prints what broke and aborts, so
 * libFuzzer keeps the input as a crash; tests/test_fuzz_regress.c replays the kept inputs):
 *   - an error comes back as a status code MOE_EINVAL..MOE_EINPUT with a one-line message that
 *     names the input (the path of the file or folder at fault), and leaves nothing allocated
 *     for the caller (ASan's leak check covers the rest);
 *   - a success gives a result whose invariants hold (each target states its own).
 *
 * tests/test_fuzz_regress.c includes the targets' .c files with LLVMFuzzerTestOneInput renamed,
 * so this header is included once per binary and its helpers are static.
 */
#ifndef MOE_FUZZ_H
#define MOE_FUZZ_H

#include "moe.h"

#include <dirent.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define FUZZ_UNUSED __attribute__((unused))

/* The input being replayed (set by the regression test; names the file in a violation). */
static const char *fuzz_current FUZZ_UNUSED;

#define FUZZ_REQUIRE(cond, what)                                                              \
    do {                                                                                      \
        if (!(cond))                                                                          \
            fuzz_violation(what, #cond, __FILE__, __LINE__);                                  \
    } while (0)

static void fuzz_violation(const char *what, const char *cond, const char *file, int line)
    __attribute__((noreturn, unused));
static void fuzz_violation(const char *what, const char *cond, const char *file, int line)
{
    fprintf(stderr, "fuzz contract broken: %s [%s] (%s:%d)%s%s\n  last error: %s\n", what, cond,
            file, line, fuzz_current ? " replaying " : "", fuzz_current ? fuzz_current : "",
            moe_errmsg());
    abort();
}

/* ---- the scratch folder ---- */

static char fuzz_dir_path[256];

/* Remove path and what it holds (the folders made here: files and subfolders). */
static void fuzz_rm_rf(const char *path)
{
    if (!fuzz_dir_path[0] || strncmp(path, fuzz_dir_path, strlen(fuzz_dir_path)) != 0)
        return;
    DIR *d = opendir(path);
    if (d) {
        struct dirent *de;
        char sub[1024];
        while ((de = readdir(d)))
            if (strcmp(de->d_name, ".") && strcmp(de->d_name, "..")) {
                snprintf(sub, sizeof sub, "%s/%s", path, de->d_name);
                fuzz_rm_rf(sub);
            }
        closedir(d);
        rmdir(path);
    } else {
        unlink(path);
    }
}

static void fuzz_cleanup(void) { fuzz_rm_rf(fuzz_dir_path); }

/* The private scratch folder (created on first use). */
static const char *fuzz_dir(void) FUZZ_UNUSED;
static const char *fuzz_dir(void)
{
    if (fuzz_dir_path[0])
        return fuzz_dir_path;
    struct stat st;
    const char *base = stat("/dev/shm", &st) == 0 && S_ISDIR(st.st_mode) ? "/dev/shm" : NULL;
    if (!base)
        base = getenv("TMPDIR") && *getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    snprintf(fuzz_dir_path, sizeof fuzz_dir_path, "%s/moesim_fuzz.XXXXXX", base);
    if (!mkdtemp(fuzz_dir_path)) {
        fprintf(stderr, "fuzz: cannot create a scratch folder in %s: %s\n", base,
                strerror(errno));
        abort();
    }
    atexit(fuzz_cleanup);
    /* recorded traces given without a path must not reach the real ones */
    char none[300];
    snprintf(none, sizeof none, "%s/no_traces", fuzz_dir_path);
    setenv("MOESIM_TRACES", none, 1);
    return fuzz_dir_path;
}

/* Write len bytes to `path` (truncating); aborts on failure (the harness, not the parser). */
static void fuzz_write(const char *path, const uint8_t *data, size_t len) FUZZ_UNUSED;
static void fuzz_write(const char *path, const uint8_t *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    if (!f || (len && fwrite(data, 1, len, f) != len) || fclose(f) != 0) {
        fprintf(stderr, "fuzz: cannot write %s: %s\n", path, strerror(errno));
        abort();
    }
}

/* A fresh subfolder of the scratch folder, `name`, emptied first. Returns its path. */
static const char *fuzz_subdir(const char *name) FUZZ_UNUSED;
static const char *fuzz_subdir(const char *name)
{
    static char path[400];
    snprintf(path, sizeof path, "%s/%s", fuzz_dir(), name);
    fuzz_rm_rf(path);
    if (mkdir(path, 0700) != 0) {
        fprintf(stderr, "fuzz: cannot create %s: %s\n", path, strerror(errno));
        abort();
    }
    return path;
}

/* Split an input at lines reading exactly SEP ("\n#--file--\n" between parts) into at most
 * maxp parts; returns the count (1 when there is no separator). */
#define FUZZ_SEP "\n#--file--\n"
static int fuzz_split(const uint8_t *data, size_t size, const uint8_t **part, size_t *len,
                      int maxp) FUZZ_UNUSED;
static int fuzz_split(const uint8_t *data, size_t size, const uint8_t **part, size_t *len,
                      int maxp)
{
    const size_t sl = sizeof FUZZ_SEP - 1;
    int np = 0;
    size_t start = 0;
    for (size_t i = 0; i + sl <= size && np < maxp - 1; i++)
        if (memcmp(data + i, FUZZ_SEP, sl) == 0) {
            part[np] = data + start;
            len[np++] = i + 1 - start; /* keep the part's own final newline */
            start = i + sl;
            i = start - 1;
        }
    part[np] = data + start;
    len[np++] = size - start;
    return np;
}

/* The error contract: a MOE status code, a message naming `where` (a path or its prefix). */
static void fuzz_check_error(int rc, const char *where) FUZZ_UNUSED;
static void fuzz_check_error(int rc, const char *where)
{
    FUZZ_REQUIRE(rc >= MOE_EINVAL && rc <= MOE_EINPUT, "error code out of range");
    const char *msg = moe_errmsg();
    FUZZ_REQUIRE(msg[0] != '\0', "an error without a message");
    FUZZ_REQUIRE(strchr(msg, '\n') == NULL, "a message of more than one line");
    FUZZ_REQUIRE(strstr(msg, where) != NULL, "a message that does not name the input");
}

#endif
