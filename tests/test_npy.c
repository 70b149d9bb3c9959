/* test_npy.c: the .npy reader and writer (sim/npy.c).
 *
 * - Files written by NumPy 1.24 (tests/fixtures/npy/, made by make.py there) read with the
 *   exact values make.py stored: version 1.0, 2.0 and 3.0 headers, each dtype, 0-d, empty,
 *   keys in another order, '|' and '=' byte-order marks.
 * - Every refused fixture (Fortran order, big-endian, bool, complex, 5 dims, extra bytes,
 *   truncated, header only, bad magic, bad version, unterminated header, 10^15 elements in
 *   128 bytes, shape overflow) fails with the right code and a message naming the file, both
 *   through moe_npy_read and through the in-memory moe_npy_parse.
 * - Hand-written headers provoke each parser error (unknown, repeated and missing keys, ...).
 * - The writer's output equals NumPy's byte for byte (f32 2x3, i32 1-d, i64 4-d, f64 0-d,
 *   empty), every dtype round-trips in 1..4 dimensions, and a failed write leaves nothing.
 * - Conversions: the allowed ones are exact, the refused ones name the dtype and the input.
 * Run from the repository root (make test does). */
#include "check.h"
#include "moe.h"
#include "npy.h"

#include <dirent.h>
#include <stdint.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define FIX "tests/fixtures/npy/"

static char tmpdir[64];

/* ---- helpers ------------------------------------------------------------------------------ */

static size_t slurp(const char *path, unsigned char *buf, size_t cap)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return 0;
    size_t n = fread(buf, 1, cap, f);
    fclose(f);
    return n;
}

static int exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

/* 1 when a temporary of path ("<path>.tmp.XXXXXX", sim/outfile.c) is left in its folder. */
static int temp_left(const char *path)
{
    char dir[256];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    const char *base = slash ? slash + 1 : path;
    if (slash)
        *slash = '\0';
    char prefix[300];
    snprintf(prefix, sizeof prefix, "%s.tmp.", base);
    DIR *d = opendir(slash ? dir : ".");
    int left = 0;
    struct dirent *e;
    while (d && (e = readdir(d)))
        left |= strncmp(e->d_name, prefix, strlen(prefix)) == 0;
    if (d)
        closedir(d);
    return left;
}

static void tmp_path(char *out, size_t cap, const char *name)
{
    snprintf(out, cap, "%s/%s", tmpdir, name);
}

/* Read fixture `file` with moe_npy_read; the caller checks and frees. */
static int read_fixture(const char *file, moe_npy *a)
{
    char path[256];
    snprintf(path, sizeof path, FIX "%s", file);
    moe_clear_error();
    return moe_npy_read(path, a);
}

static int msg_has(const char *needle)
{
    return strstr(moe_errmsg(), needle) != NULL;
}

/* Fixture `file` must be refused with `code` and a message holding `needle` and the file name,
 * by moe_npy_read and by moe_npy_parse on the same bytes. */
static void expect_refused(const char *file, int code, const char *needle)
{
    char path[256];
    snprintf(path, sizeof path, FIX "%s", file);
    moe_npy a;
    moe_clear_error();
    int rc = moe_npy_read(path, &a);
    CHECK(rc == code && a.data == NULL && msg_has(needle) && msg_has(path),
          "read %s: rc %d (want %d), message \"%s\" (want \"%s\" and the path)", file, rc, code,
          moe_errmsg(), needle);
    moe_npy_free(&a);

    static unsigned char buf[4096];
    size_t len = slurp(path, buf, sizeof buf);
    moe_clear_error();
    rc = moe_npy_parse(buf, len, file, &a);
    CHECK(rc == code && a.data == NULL && msg_has(needle) && msg_has(file),
          "parse %s: rc %d (want %d), message \"%s\" (want \"%s\")", file, rc, code, moe_errmsg(),
          needle);
    moe_npy_free(&a);
}

static int shape_is(const moe_npy *a, int dtype, int ndim, size_t s0, size_t s1, size_t s2,
                    size_t s3)
{
    size_t s[4] = {s0, s1, s2, s3}, count = 1;
    if (a->dtype != dtype || a->ndim != ndim)
        return 0;
    for (int i = 0; i < ndim; i++) {
        if (a->shape[i] != s[i])
            return 0;
        count *= s[i];
    }
    return a->count == count;
}

/* ---- files written by NumPy ---------------------------------------------------------------- */

/* Values from make.py. The float32 ones are NumPy's conversions of Python doubles to float32,
 * which is what the C casts (float)0.1 etc. compute; memcmp also tells -0.0 from 0.0. */
static const float want_f32[6] = {(float)0.1, -2.5f, 3.0f, (float)1e-30, 65504.0f, -0.0f};
static const double want_f64[6] = {3.141592653589793, 2.718281828459045, -1e300, 5e-324, 0.1,
                                   1.0 / 3.0};
static const int32_t want_i32[4] = {INT32_MIN, -1, 0, INT32_MAX};
static const int64_t want_i64[8] = {INT64_MIN, -1, 0, 1, (int64_t)1 << 40, INT64_MAX, 7, 8};

static void test_numpy_files(void)
{
    moe_npy a;
    int rc = read_fixture("f32_2x3.npy", &a);
    CHECK(rc == MOE_OK, "f32_2x3.npy: %s (run from the repository root)", moe_errmsg());
    CHECK(rc == MOE_OK && shape_is(&a, MOE_F32, 2, 2, 3, 0, 0) &&
              memcmp(a.data, want_f32, sizeof want_f32) == 0,
          "f32_2x3.npy: float32 (2,3) with make.py's values");
    moe_npy_free(&a);

    rc = read_fixture("f32_v3.npy", &a);
    CHECK(rc == MOE_OK && shape_is(&a, MOE_F32, 2, 2, 3, 0, 0) &&
              memcmp(a.data, want_f32, sizeof want_f32) == 0,
          "f32_v3.npy (version 3.0): %s", moe_errmsg());
    moe_npy_free(&a);

    rc = read_fixture("reordered.npy", &a);
    CHECK(rc == MOE_OK && shape_is(&a, MOE_F32, 2, 2, 3, 0, 0) &&
              memcmp(a.data, want_f32, sizeof want_f32) == 0,
          "reordered.npy (keys reordered, double quotes): %s", moe_errmsg());
    moe_npy_free(&a);

    rc = read_fixture("f64_v2.npy", &a);
    CHECK(rc == MOE_OK && shape_is(&a, MOE_F64, 2, 3, 2, 0, 0) &&
              memcmp(a.data, want_f64, sizeof want_f64) == 0,
          "f64_v2.npy (version 2.0): %s", moe_errmsg());
    moe_npy_free(&a);

    rc = read_fixture("i32.npy", &a);
    CHECK(rc == MOE_OK && shape_is(&a, MOE_I32, 1, 4, 0, 0, 0) &&
              memcmp(a.data, want_i32, sizeof want_i32) == 0,
          "i32.npy: %s", moe_errmsg());
    moe_npy_free(&a);

    rc = read_fixture("i64_4d.npy", &a);
    CHECK(rc == MOE_OK && shape_is(&a, MOE_I64, 4, 2, 1, 2, 2) &&
              memcmp(a.data, want_i64, sizeof want_i64) == 0,
          "i64_4d.npy: %s", moe_errmsg());
    moe_npy_free(&a);

    rc = read_fixture("f64_0d.npy", &a);
    CHECK(rc == MOE_OK && shape_is(&a, MOE_F64, 0, 0, 0, 0, 0) && a.count == 1 &&
              ((double *)a.data)[0] == 2.5,
          "f64_0d.npy: 0-d float64 2.5: %s", moe_errmsg());
    moe_npy_free(&a);

    rc = read_fixture("empty.npy", &a);
    CHECK(rc == MOE_OK && shape_is(&a, MOE_F32, 2, 0, 3, 0, 0) && a.count == 0,
          "empty.npy: float32 (0,3): %s", moe_errmsg());
    moe_npy_free(&a);

    rc = read_fixture("pipe_i4.npy", &a);
    CHECK(rc == MOE_OK && shape_is(&a, MOE_I32, 1, 2, 0, 0, 0) &&
              ((int32_t *)a.data)[0] == 5 && ((int32_t *)a.data)[1] == -6,
          "pipe_i4.npy ('|i4'): %s", moe_errmsg());
    moe_npy_free(&a);

    rc = read_fixture("eq_f8.npy", &a);
    CHECK(rc == MOE_OK && shape_is(&a, MOE_F64, 1, 2, 0, 0, 0) &&
              ((double *)a.data)[0] == 0.5 && ((double *)a.data)[1] == -8.0,
          "eq_f8.npy ('=f8'): %s", moe_errmsg());
    moe_npy_free(&a);

    /* the in-memory parser agrees with the file reader on a valid file */
    unsigned char buf[512];
    size_t len = slurp(FIX "f64_v2.npy", buf, sizeof buf);
    moe_clear_error();
    rc = moe_npy_parse(buf, len, "f64_v2.npy", &a);
    CHECK(rc == MOE_OK && shape_is(&a, MOE_F64, 2, 3, 2, 0, 0) &&
              memcmp(a.data, want_f64, sizeof want_f64) == 0,
          "moe_npy_parse f64_v2.npy: %s", moe_errmsg());
    moe_npy_free(&a);
}

static void test_refused_files(void)
{
    expect_refused("fortran.npy", MOE_EFORMAT, "Fortran-order");
    expect_refused("big_endian.npy", MOE_EFORMAT, "big-endian dtype '>f4'");
    expect_refused("bool.npy", MOE_EFORMAT, "unsupported dtype '|b1' (bool)");
    expect_refused("complex.npy", MOE_EFORMAT, "unsupported dtype '<c8' (complex64)");
    expect_refused("five_d.npy", MOE_EFORMAT, "5 dimensions");
    expect_refused("extra_bytes.npy", MOE_EFORMAT, "3 extra bytes");
    /* 24 data bytes promised, 20 present (make.py cut 4) */
    expect_refused("truncated.npy", MOE_EFORMAT, "promises 24 bytes (6 float32), the file holds 20");
    expect_refused("header_only.npy", MOE_EFORMAT, "the file holds 0");
    expect_refused("bad_magic.npy", MOE_EFORMAT, "bad magic");
    expect_refused("bad_version.npy", MOE_EFORMAT, "version 4.0");
    expect_refused("unterminated.npy", MOE_EFORMAT, "unterminated .npy header");
    /* 10^15 float32 = 4e15 bytes promised by a 128-byte file: refused before any allocation */
    expect_refused("huge.npy", MOE_EFORMAT, "promises 4000000000000000 bytes");
    expect_refused("overflow.npy", MOE_EFORMAT, "shape overflows");

    moe_npy a;
    moe_clear_error();
    int rc = moe_npy_read(FIX "no_such_file.npy", &a);
    CHECK(rc == MOE_EIO && a.data == NULL && msg_has(FIX "no_such_file.npy"),
          "missing file: rc %d, \"%s\"", rc, moe_errmsg());
    moe_clear_error();
    rc = moe_npy_read("tests/fixtures/npy", &a);
    CHECK(rc == MOE_EIO && msg_has("directory") && msg_has("tests/fixtures/npy"),
          "directory: rc %d, \"%s\"", rc, moe_errmsg());
}

/* ---- hand-written headers through the in-memory parser -------------------------------------- */

/* A version 1.0 file: prefix, header text padded with spaces and '\n' to 64 bytes, then
 * ndata zero bytes (make.py's raw_header in C). Returns the length. */
static size_t make_v1(unsigned char *buf, const char *text, size_t ndata)
{
    size_t tl = strlen(text), pad = 64 - (10 + tl + 1) % 64, hl = tl + pad + 1;
    memcpy(buf, "\x93NUMPY\x01\x00", 8);
    buf[8] = (unsigned char)(hl & 0xff);
    buf[9] = (unsigned char)(hl >> 8);
    memcpy(buf + 10, text, tl);
    memset(buf + 10 + tl, ' ', pad);
    buf[10 + hl - 1] = '\n';
    memset(buf + 10 + hl, 0, ndata);
    return 10 + hl + ndata;
}

static void test_headers(void)
{
    static const struct {
        const char *text;
        size_t ndata;
        int code;
        const char *needle; /* in the message; NULL for success */
    } cases[] = {
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3L), }", 24, MOE_OK, NULL},
        {"{'shape':(2,),'descr':'<i8','fortran_order':False}", 16, MOE_OK, NULL},
        {"{'descr': 'f8', 'fortran_order': False, 'shape': (1,)}", 8, MOE_OK, NULL},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (2)}", 8, MOE_OK, NULL},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (2,), 'extra': 1}", 8, MOE_EFORMAT,
         "unexpected key 'extra'"},
        {"{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (2,)}", 8,
         MOE_EFORMAT, "key 'descr' repeated"},
        {"{'descr': '<f4', 'shape': (2,)}", 8, MOE_EFORMAT, "missing key 'fortran_order'"},
        {"{'descr': '<u2', 'fortran_order': False, 'shape': (2,)}", 4, MOE_EFORMAT,
         "unsupported dtype '<u2' (uint16)"},
        {"{'descr': '<U3', 'fortran_order': False, 'shape': (1,)}", 12, MOE_EFORMAT,
         "unsupported dtype '<U3' (str)"},
        {"{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (1,)}", 4, MOE_EFORMAT,
         "structured"},
        {"{'descr': '>i8', 'fortran_order': False, 'shape': (1,)}", 8, MOE_EFORMAT,
         "big-endian dtype '>i8' (int64)"},
        {"{'descr': '<f4', 'fortran_order': false, 'shape': (2,)}", 8, MOE_EFORMAT,
         "True or False"},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (-2,)}", 8, MOE_EFORMAT,
         "non-negative integer"},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999999,)}", 8,
         MOE_EFORMAT, "shape dimension overflows"},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (2,)} x", 8, MOE_EFORMAT,
         "only padding"},
        {"{'descr' '<f4', 'fortran_order': False, 'shape': (2,)}", 8, MOE_EFORMAT,
         "expected ':' after a key at byte 9"},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (2,)", 8, MOE_EFORMAT,
         "unterminated"},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (2, 1, 1, 1, 1, 1)}", 8,
         MOE_EFORMAT, "6 dimensions"},
        {"['descr', '<f4']", 8, MOE_EFORMAT, "expected '{'"},
        {"", 8, MOE_EFORMAT, "empty .npy header"},
    };
    unsigned char buf[512];
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        size_t len = make_v1(buf, cases[i].text, cases[i].ndata);
        moe_npy a;
        moe_clear_error();
        int rc = moe_npy_parse(buf, len, "hdr.npy", &a);
        int ok = rc == cases[i].code &&
                 (cases[i].needle ? a.data == NULL && msg_has(cases[i].needle) &&
                                        msg_has("(hdr.npy)")
                                  : a.data != NULL);
        CHECK(ok, "header %s: rc %d (want %d), \"%s\"", cases[i].text, rc, cases[i].code,
              moe_errmsg());
        moe_npy_free(&a);
    }

    /* prefixes: empty input, a cut magic, header lengths beyond the input (2 and 4 bytes) */
    moe_npy a;
    moe_clear_error();
    int rc = moe_npy_parse(NULL, 0, "nothing", &a);
    CHECK(rc == MOE_EFORMAT && msg_has("bad magic") && msg_has("(nothing)"), "empty input: \"%s\"",
          moe_errmsg());
    moe_clear_error();
    rc = moe_npy_parse("\x93NUM", 4, "cut", &a);
    CHECK(rc == MOE_EFORMAT && msg_has("only 4 bytes"), "cut magic: \"%s\"", moe_errmsg());
    moe_clear_error();
    rc = moe_npy_parse("\x93NUMPY\x01\x00\xff\xff{}", 12, "v1", &a);
    CHECK(rc == MOE_EFORMAT && msg_has("65535 bytes promised, 2 present"), "v1 hlen: \"%s\"",
          moe_errmsg());
    moe_clear_error();
    rc = moe_npy_parse("\x93NUMPY\x02\x00\xff\xff\xff\xff{}", 14, "v2", &a);
    CHECK(rc == MOE_EFORMAT && msg_has("4294967295 bytes promised, 2 present"),
          "v2 hlen: \"%s\"", moe_errmsg());
}

/* ---- writing ------------------------------------------------------------------------------- */

/* The writer's bytes equal those of a NumPy fixture holding the same array. */
static void expect_same_bytes(const char *fixture, int dtype, const void *data, int ndim,
                              const size_t *shape)
{
    char path[256], ref[256];
    tmp_path(path, sizeof path, fixture);
    snprintf(ref, sizeof ref, FIX "%s", fixture);
    moe_clear_error();
    int rc = moe_npy_write(path, dtype, data, ndim, shape);
    unsigned char a[1024], b[1024];
    size_t na = slurp(path, a, sizeof a), nb = slurp(ref, b, sizeof b);
    CHECK(rc == MOE_OK && na == nb && nb > 0 && memcmp(a, b, na) == 0,
          "write %s: rc %d \"%s\", %zu bytes vs NumPy's %zu", fixture, rc, moe_errmsg(), na, nb);
    unlink(path);
}

static void test_write_like_numpy(void)
{
    const size_t s23[2] = {2, 3}, s4[1] = {4}, s2122[4] = {2, 1, 2, 2}, s03[2] = {0, 3};
    const double half = 2.5;
    expect_same_bytes("f32_2x3.npy", MOE_F32, want_f32, 2, s23);
    expect_same_bytes("i32.npy", MOE_I32, want_i32, 1, s4);
    expect_same_bytes("i64_4d.npy", MOE_I64, want_i64, 4, s2122);
    expect_same_bytes("f64_0d.npy", MOE_F64, &half, 0, NULL);
    expect_same_bytes("empty.npy", MOE_F32, NULL, 2, s03);
}

static void test_round_trips(void)
{
    /* every dtype in 1..4 dimensions; values distinct per element so a permutation shows */
    static const size_t shapes[4][4] = {{7, 0, 0, 0}, {3, 5, 0, 0}, {2, 3, 4, 0}, {2, 1, 3, 2}};
    static unsigned char src[8 * 120];
    int bad = 0, cases = 0;
    for (int dt = 0; dt < 4; dt++)
        for (int nd = 1; nd <= 4; nd++) {
            size_t count = 1;
            for (int i = 0; i < nd; i++)
                count *= shapes[nd - 1][i];
            for (size_t i = 0; i < count; i++) {
                double v = (double)i * 1.25 - 3.0;
                int64_t iv = (int64_t)i * 1000003 - 77;
                if (dt == MOE_F32) ((float *)src)[i] = (float)v;
                if (dt == MOE_F64) ((double *)src)[i] = v / 3.0;
                if (dt == MOE_I32) ((int32_t *)src)[i] = (int32_t)iv;
                if (dt == MOE_I64) ((int64_t *)src)[i] = iv * 1000003;
            }
            char path[256];
            tmp_path(path, sizeof path, "rt.npy");
            moe_npy a;
            moe_clear_error();
            int rc = moe_npy_write(path, dt, src, nd, shapes[nd - 1]);
            if (rc == MOE_OK)
                rc = moe_npy_read(path, &a);
            else
                memset(&a, 0, sizeof a);
            size_t es = dt == MOE_F32 || dt == MOE_I32 ? 4 : 8;
            const size_t *s = shapes[nd - 1];
            int ok = rc == MOE_OK && shape_is(&a, dt, nd, s[0], s[1], s[2], s[3]) &&
                     memcmp(a.data, src, count * es) == 0 && !temp_left(path);
            if (!ok) {
                bad++;
                fprintf(stderr, "round trip dtype %d ndim %d: rc %d \"%s\"\n", dt, nd, rc,
                        moe_errmsg());
            }
            cases++;
            moe_npy_free(&a);
            unlink(path);
        }
    CHECK(bad == 0 && cases == 16, "%d of %d round trips failed", bad, cases);

    /* writing over an existing file replaces it */
    char path[256];
    tmp_path(path, sizeof path, "over.npy");
    const size_t s3[1] = {3}, s2[1] = {2};
    const int64_t first[3] = {1, 2, 3}, second[2] = {-9, 9};
    moe_npy a;
    moe_clear_error();
    int rc = moe_npy_write(path, MOE_I64, first, 1, s3);
    if (rc == MOE_OK)
        rc = moe_npy_write(path, MOE_I64, second, 1, s2);
    if (rc == MOE_OK)
        rc = moe_npy_read(path, &a);
    CHECK(rc == MOE_OK && shape_is(&a, MOE_I64, 1, 2, 0, 0, 0) &&
              memcmp(a.data, second, sizeof second) == 0,
          "overwrite: rc %d \"%s\"", rc, moe_errmsg());
    if (rc == MOE_OK)
        moe_npy_free(&a);
    unlink(path);
}

static void test_write_failures(void)
{
    const size_t s2[1] = {2};
    const float v[2] = {1.0f, 2.0f};
    char path[256];

    /* a folder that does not exist: nothing is created */
    tmp_path(path, sizeof path, "no/such/dir/out.npy");
    moe_clear_error();
    int rc = moe_npy_write(path, MOE_F32, v, 1, s2);
    CHECK(rc == MOE_EIO && msg_has(path) && !exists(path), "missing folder: rc %d \"%s\"", rc,
          moe_errmsg());

    /* the path is a directory: refused before a temporary is made; the directory is
     * untouched */
    tmp_path(path, sizeof path, "a_directory");
    mkdir(path, 0700);
    moe_clear_error();
    rc = moe_npy_write(path, MOE_F32, v, 1, s2);
    struct stat st;
    CHECK(rc == MOE_EIO && msg_has(path) && !temp_left(path) && stat(path, &st) == 0 &&
              S_ISDIR(st.st_mode),
          "onto a directory: rc %d \"%s\", temp left: %d", rc, moe_errmsg(), temp_left(path));
    rmdir(path);

    /* bad arguments */
    tmp_path(path, sizeof path, "bad.npy");
    const size_t s5[5] = {1, 1, 1, 1, 2};
    moe_clear_error();
    rc = moe_npy_write(path, MOE_F32, v, 5, s5);
    CHECK(rc == MOE_EINVAL && msg_has("5 dimensions") && !exists(path), "5 dims: \"%s\"",
          moe_errmsg());
    moe_clear_error();
    rc = moe_npy_write(path, 9, v, 1, s2);
    CHECK(rc == MOE_EINVAL && msg_has("dtype 9") && !exists(path), "dtype 9: \"%s\"",
          moe_errmsg());
    moe_clear_error();
    rc = moe_npy_write(path, MOE_F32, NULL, 1, s2);
    CHECK(rc == MOE_EINVAL && !exists(path), "NULL data: \"%s\"", moe_errmsg());
}

/* ---- conversions ---------------------------------------------------------------------------- */

static void test_conversions(void)
{
    moe_npy i32, f32, f64;
    int ok = read_fixture("i32.npy", &i32) == MOE_OK && read_fixture("f32_2x3.npy", &f32) == MOE_OK &&
             read_fixture("f64_v2.npy", &f64) == MOE_OK;
    CHECK(ok, "conversion fixtures: %s", moe_errmsg());
    if (!ok)
        return;

    int64_t *iv = NULL;
    int rc = moe_npy_as_int64(&i32, "ids", &iv);
    int64_t want_iv[4] = {INT32_MIN, -1, 0, INT32_MAX};
    CHECK(rc == MOE_OK && memcmp(iv, want_iv, sizeof want_iv) == 0, "int32 -> int64");
    free(iv);

    double *dv = NULL;
    rc = moe_npy_as_double(&f32, "logits", &dv);
    int same = rc == MOE_OK;
    for (int i = 0; same && i < 6; i++)
        same = dv[i] == (double)want_f32[i];
    CHECK(same, "float32 -> double is exact");
    free(dv);

    rc = moe_npy_as_double(&f64, "logits", &dv);
    CHECK(rc == MOE_OK && memcmp(dv, want_f64, sizeof want_f64) == 0, "float64 -> double copy");
    free(dv);

    float *fv = NULL;
    rc = moe_npy_as_float(&f32, "x", &fv);
    CHECK(rc == MOE_OK && memcmp(fv, want_f32, sizeof want_f32) == 0, "float32 -> float copy");
    free(fv);

    /* float64 -> float32 rounds to nearest; f64_v2 holds -1e300 at index 2, beyond float32 */
    moe_clear_error();
    rc = moe_npy_as_float(&f64, "--x x.npy", &fv);
    CHECK(rc == MOE_EINPUT && fv == NULL && msg_has("index 2") && msg_has("(--x x.npy)"),
          "float64 out of float32 range: rc %d \"%s\"", rc, moe_errmsg());
    double small[4] = {0.1, -1.0 / 3.0, INFINITY, NAN};
    moe_npy s = {MOE_F64, 1, {4, 0, 0, 0}, 4, small};
    rc = moe_npy_as_float(&s, "x", &fv);
    CHECK(rc == MOE_OK && fv[0] == (float)0.1 && fv[1] == (float)(-1.0 / 3.0) && isinf(fv[2]) &&
              isnan(fv[3]),
          "float64 -> float32 rounds, inf and NaN carry over");
    free(fv);

    /* refused conversions name the dtype and the input */
    moe_clear_error();
    rc = moe_npy_as_double(&i32, "--logits L.npy", &dv);
    CHECK(rc == MOE_EFORMAT && dv == NULL &&
              msg_has("must be float32 or float64, got int32 (--logits L.npy)"),
          "int32 -> double refused: \"%s\"", moe_errmsg());
    moe_clear_error();
    rc = moe_npy_as_float(&i32, "--x X.npy", &fv);
    CHECK(rc == MOE_EFORMAT && fv == NULL && msg_has("got int32 (--x X.npy)"),
          "int32 -> float refused: \"%s\"", moe_errmsg());
    moe_clear_error();
    rc = moe_npy_as_int64(&f64, "--tokens T.npy", &iv);
    CHECK(rc == MOE_EFORMAT && iv == NULL &&
              msg_has("must be int32 or int64, got float64 (--tokens T.npy)"),
          "float64 -> int64 refused: \"%s\"", moe_errmsg());

    moe_npy_free(&i32);
    moe_npy_free(&f32);
    moe_npy_free(&f64);
    moe_npy_free(&f64); /* twice: data was reset to NULL */
    moe_npy_free(NULL);
}

int main(void)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/test_npy.XXXXXX");
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    test_numpy_files();
    test_refused_files();
    test_headers();
    test_write_like_numpy();
    test_round_trips();
    test_write_failures();
    test_conversions();
    rmdir(tmpdir);
    return check_report("test_npy");
}
