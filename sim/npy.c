/* npy.c: NumPy .npy files (sim/npy.h): the header parser shared by the file reader and the
 * in-memory parser (moe_npy_parse, the fuzz target's entry point), the dtype conversions, and
 * the writer (a version 1.0 header laid out byte for byte as NumPy 1.24 writes it).
 *
 * The format (numpy/lib/format.py): the magic "\x93NUMPY", major and minor version bytes, the
 * header length (uint16 little-endian for 1.0, uint32 for 2.0 and 3.0), the header: a Python
 * dict literal {'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), } padded with spaces
 * and a final '\n', then count * itemsize bytes of data in C order.
 *
 * Every size is checked against the bytes actually present before anything is allocated, so a
 * header claiming 10^15 elements in a 100-byte file is an error, not a huge malloc. Every error
 * reads "<what> (<file>)" through moe_fail; nothing is left allocated on failure. */
#include "npy.h"
#include "moe.h"

#include <errno.h>
#include <float.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define NPY_MAGIC "\x93NUMPY"
#define NPY_MAGIC_LEN 6
#define NPY_ALIGN 64           /* NumPy's ARRAY_ALIGN: data starts at a multiple of 64 */
#define NPY_GROWTH_DIGITS 21   /* NumPy's GROWTH_AXIS_MAX_DIGITS: spare header spaces */

static const size_t dtype_size[4] = {4, 8, 4, 8};
static const char *const dtype_name[4] = {"float32", "float64", "int32", "int64"};
static const char *const dtype_descr[4] = {"<f4", "<f8", "<i4", "<i8"};

static const char *const hint_convert =
    "moesim reads C-order little-endian float32, float64, int32 and int64 arrays of up to 4 "
    "dimensions; in NumPy: np.save(path, np.ascontiguousarray(a, dtype='<f4'))";

/* ---- errors and byte order ------------------------------------------------------------- */

/* moe_fail with " (<name>)" appended to the formatted message. */
static int npy_err(int code, const char *hint, const char *name, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int npy_err(int code, const char *hint, const char *name, const char *fmt, ...)
{
    char what[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    return moe_fail(code, hint, "%s (%s)", what, name ? name : "?");
}

static int host_is_little_endian(void)
{
    const uint16_t one = 1;
    unsigned char b;
    memcpy(&b, &one, 1);
    return b == 1;
}

/* Reverse the bytes of each of count elements of elsize bytes, in place (big-endian hosts). */
static void bswap_elements(void *buf, size_t count, size_t elsize)
{
    unsigned char *p = buf;
    for (size_t i = 0; i < count; i++, p += elsize)
        for (size_t a = 0, b = elsize - 1; a < b; a++, b--) {
            unsigned char t = p[a];
            p[a] = p[b];
            p[b] = t;
        }
}

static uint32_t read_le(const unsigned char *b, int nbytes)
{
    uint32_t v = 0;
    for (int i = nbytes - 1; i >= 0; i--)
        v = (v << 8) | b[i];
    return v;
}

/* ---- header parsing -------------------------------------------------------------------- */

typedef struct {
    int dtype, ndim;
    size_t shape[4];
    size_t count, nbytes;
} npy_hdr;

typedef struct {
    const unsigned char *p, *begin, *end;
    const char *name;
} npy_lex;

static void lex_ws(npy_lex *L)
{
    while (L->p < L->end && (*L->p == ' ' || *L->p == '\t' || *L->p == '\n' || *L->p == '\r'))
        L->p++;
}

static int lex_unterminated(const npy_lex *L)
{
    return npy_err(MOE_EFORMAT, "the header dict must close with '}' within the header length",
                   L->name, "unterminated .npy header: ends inside the dict at byte %zu",
                   (size_t)(L->end - L->begin));
}

static int lex_expected(const npy_lex *L, const char *what)
{
    if (L->p >= L->end)
        return lex_unterminated(L);
    unsigned char c = *L->p;
    return npy_err(MOE_EFORMAT, NULL, L->name,
                   "malformed .npy header: expected %s at byte %zu, found '%c'", what,
                   (size_t)(L->p - L->begin), (c >= 32 && c < 127) ? c : '?');
}

/* A Python string literal ('...' or "..."): its bytes go to buf (printable, at most cap - 1,
 * NUL-terminated; longer contents end in "..."); *len receives the full length. */
static int lex_string(npy_lex *L, char *buf, size_t cap, size_t *len)
{
    if (L->p >= L->end || (*L->p != '\'' && *L->p != '"'))
        return lex_expected(L, "a quoted string");
    unsigned char q = *L->p++;
    size_t n = 0;
    for (;;) {
        if (L->p >= L->end)
            return lex_unterminated(L);
        unsigned char c = *L->p++;
        if (c == q)
            break;
        if (c == '\\') {
            if (L->p >= L->end)
                return lex_unterminated(L);
            c = *L->p++;
        }
        if (n + 1 < cap)
            buf[n] = (c >= 32 && c < 127) ? (char)c : '?';
        n++;
    }
    if (n + 1 < cap) {
        buf[n] = '\0';
    } else {
        buf[cap - 1] = '\0';
        if (cap > 4)
            memcpy(buf + cap - 4, "...", 3);
    }
    *len = n;
    return MOE_OK;
}

/* A non-negative decimal integer (Python 2 files may add an 'L'), at most SIZE_MAX. */
static int lex_size(npy_lex *L, size_t *v)
{
    if (L->p >= L->end || *L->p < '0' || *L->p > '9')
        return lex_expected(L, "a non-negative integer in 'shape'");
    size_t x = 0;
    while (L->p < L->end && *L->p >= '0' && *L->p <= '9') {
        size_t d = (size_t)(*L->p++ - '0');
        if (x > (SIZE_MAX - d) / 10)
            return npy_err(MOE_EFORMAT, NULL, L->name,
                           "shape dimension overflows (more than %zu) in .npy header",
                           (size_t)SIZE_MAX);
        x = x * 10 + d;
    }
    if (L->p < L->end && (*L->p == 'L' || *L->p == 'l'))
        L->p++;
    *v = x;
    return MOE_OK;
}

/* The name NumPy gives a dtype string, for messages; NULL if unknown. */
static const char *descr_numpy_name(const char *t)
{
    static const char *const exact[][2] = {
        {"b1", "bool"},        {"i1", "int8"},        {"u1", "uint8"},
        {"i2", "int16"},       {"u2", "uint16"},      {"u4", "uint32"},
        {"u8", "uint64"},      {"f2", "float16"},     {"f12", "float96"},
        {"f16", "float128"},   {"c8", "complex64"},   {"c16", "complex128"},
        {"c24", "complex192"}, {"c32", "complex256"}, {"O", "object"},
    };
    static const char *const prefix[][2] = {
        {"U", "str"}, {"S", "bytes"}, {"a", "bytes"}, {"V", "void"},
        {"M8", "datetime64"}, {"m8", "timedelta64"}, {"O", "object"},
    };
    for (size_t i = 0; i < sizeof exact / sizeof exact[0]; i++)
        if (strcmp(t, exact[i][0]) == 0)
            return exact[i][1];
    for (size_t i = 0; i < sizeof prefix / sizeof prefix[0]; i++)
        if (strncmp(t, prefix[i][0], strlen(prefix[i][0])) == 0)
            return prefix[i][1];
    return NULL;
}

static int parse_descr(npy_lex *L, int *dtype)
{
    if (L->p < L->end && *L->p == '[')
        return npy_err(MOE_EFORMAT, hint_convert, L->name,
                       "unsupported dtype: structured (record) arrays are not supported");
    char d[48];
    size_t n;
    int rc = lex_string(L, d, sizeof d, &n);
    if (rc)
        return rc;
    /* '<' little-endian; '=' native and '|' not-applicable both mean native (little-endian:
     * moesim's data are little-endian); '>' big-endian; no mark is native too. */
    char order = (d[0] == '<' || d[0] == '>' || d[0] == '=' || d[0] == '|') ? d[0] : 0;
    const char *t = order ? d + 1 : d;
    int dt = -1;
    if (n == (order ? 3u : 2u))
        for (int i = 0; i < 4; i++)
            if (strcmp(t, dtype_descr[i] + 1) == 0)
                dt = i;
    if (dt < 0) {
        const char *nm = n < sizeof d - 1 ? descr_numpy_name(t) : NULL;
        return npy_err(MOE_EFORMAT, hint_convert, L->name, "unsupported dtype '%s'%s%s%s", d,
                       nm ? " (" : "", nm ? nm : "", nm ? ")" : "");
    }
    if (order == '>')
        return npy_err(MOE_EFORMAT, "in NumPy: np.save(path, a.astype(a.dtype.newbyteorder('<')))",
                       L->name, "big-endian dtype '%s' (%s) is not supported", d,
                       dtype_name[dt]);
    *dtype = dt;
    return MOE_OK;
}

static int parse_fortran(npy_lex *L, int *fortran)
{
    size_t left = (size_t)(L->end - L->p);
    if (left >= 4 && memcmp(L->p, "True", 4) == 0) {
        *fortran = 1;
        L->p += 4;
    } else if (left >= 5 && memcmp(L->p, "False", 5) == 0) {
        *fortran = 0;
        L->p += 5;
    } else {
        return lex_expected(L, "True or False for 'fortran_order'");
    }
    return MOE_OK;
}

/* A tuple of sizes: "()", "(n,)", "(n, m)", "(n, m, )"; "(n)" is taken as "(n,)". */
static int parse_shape(npy_lex *L, npy_hdr *h)
{
    if (L->p >= L->end || *L->p != '(')
        return lex_expected(L, "'(' to open 'shape'");
    L->p++;
    int nd = 0;
    for (;;) {
        lex_ws(L);
        if (L->p < L->end && *L->p == ')')
            break;
        size_t v = 0;
        int rc = lex_size(L, &v);
        if (rc)
            return rc;
        if (nd < 4)
            h->shape[nd] = v;
        nd++;
        lex_ws(L);
        if (L->p < L->end && *L->p == ',') {
            L->p++;
            continue;
        }
        if (L->p < L->end && *L->p == ')')
            break;
        return lex_expected(L, "',' or ')' in 'shape'");
    }
    L->p++;
    if (nd > 4)
        return npy_err(MOE_EFORMAT, "reshape the array to at most 4 dimensions", L->name,
                       "array has %d dimensions, at most 4 are supported", nd);
    h->ndim = nd;
    return MOE_OK;
}

/* The header dict, hlen bytes at hb: the three keys in any order, with any whitespace,
 * an optional trailing comma, then only whitespace up to the end of the header. */
static int parse_header(const unsigned char *hb, size_t hlen, const char *name, npy_hdr *h)
{
    npy_lex L = {hb, hb, hb + hlen, name};
    int seen[3] = {0, 0, 0}, fortran = 0, rc;
    memset(h, 0, sizeof *h);
    lex_ws(&L);
    if (L.p >= L.end)
        return npy_err(MOE_EFORMAT, NULL, name, "empty .npy header (%zu bytes of padding)", hlen);
    if (*L.p != '{')
        return lex_expected(&L, "'{' opening the header dict");
    L.p++;
    for (;;) {
        lex_ws(&L);
        if (L.p < L.end && *L.p == '}')
            break;
        char key[32];
        size_t klen;
        if ((rc = lex_string(&L, key, sizeof key, &klen)))
            return rc;
        int k = strcmp(key, "descr") == 0           ? 0
                : strcmp(key, "fortran_order") == 0 ? 1
                : strcmp(key, "shape") == 0         ? 2
                                                    : -1;
        if (k < 0 || klen >= sizeof key)
            return npy_err(MOE_EFORMAT, NULL, name, "unexpected key '%s' in .npy header", key);
        if (seen[k]++)
            return npy_err(MOE_EFORMAT, NULL, name, "key '%s' repeated in .npy header", key);
        lex_ws(&L);
        if (L.p >= L.end || *L.p != ':')
            return lex_expected(&L, "':' after a key");
        L.p++;
        lex_ws(&L);
        rc = k == 0 ? parse_descr(&L, &h->dtype)
             : k == 1 ? parse_fortran(&L, &fortran)
                      : parse_shape(&L, h);
        if (rc)
            return rc;
        lex_ws(&L);
        if (L.p < L.end && *L.p == ',') {
            L.p++;
            continue;
        }
        if (L.p < L.end && *L.p == '}')
            break;
        return lex_expected(&L, "',' or '}' after a value");
    }
    L.p++;
    lex_ws(&L);
    if (L.p < L.end)
        return lex_expected(&L, "only padding after the header dict");
    static const char *const keys[3] = {"descr", "fortran_order", "shape"};
    for (int k = 0; k < 3; k++)
        if (!seen[k])
            return npy_err(MOE_EFORMAT, NULL, name, "missing key '%s' in .npy header", keys[k]);
    if (fortran)
        return npy_err(MOE_EFORMAT, "in NumPy: np.save(path, np.ascontiguousarray(a))", name,
                       "Fortran-order arrays are not supported");
    size_t count = 1, es = dtype_size[h->dtype];
    for (int i = 0; i < h->ndim; i++) {
        if (h->shape[i] != 0 && count > SIZE_MAX / es / h->shape[i])
            return npy_err(MOE_EFORMAT, NULL, name, "shape overflows: more than %zu bytes",
                           (size_t)SIZE_MAX);
        count *= h->shape[i];
    }
    h->count = count;
    h->nbytes = count * es;
    return MOE_OK;
}

/* The fixed prefix: magic, version, header length. Needs the first min(len, 12) bytes.
 * On success *pre is 10 (version 1.0) or 12 (2.0, 3.0) and *hlen the header length. */
static int parse_prefix(const unsigned char *b, size_t len, const char *name, size_t *pre,
                        size_t *hlen)
{
    size_t m = len < NPY_MAGIC_LEN ? len : NPY_MAGIC_LEN;
    if (len == 0 || memcmp(b, NPY_MAGIC, m) != 0)
        return npy_err(MOE_EFORMAT, "this is not a NumPy .npy file (np.save writes them)", name,
                       "not a .npy file: bad magic, the file must start with \"\\x93NUMPY\"");
    if (len < 8)
        return npy_err(MOE_EFORMAT, NULL, name, "truncated .npy file: only %zu bytes", len);
    int major = b[6], minor = b[7];
    if ((major != 1 && major != 2 && major != 3) || minor != 0)
        return npy_err(MOE_EFORMAT, "moesim reads .npy format versions 1.0, 2.0 and 3.0", name,
                       "unsupported .npy format version %d.%d", major, minor);
    *pre = major == 1 ? 10 : 12;
    if (len < *pre)
        return npy_err(MOE_EFORMAT, NULL, name, "truncated .npy file: only %zu bytes", len);
    *hlen = read_le(b + 8, major == 1 ? 2 : 4);
    return MOE_OK;
}

/* Refuse a data section that is shorter or longer than the header promises. */
static int check_data_size(const npy_hdr *h, size_t avail, const char *name)
{
    if (avail < h->nbytes)
        return npy_err(MOE_EFORMAT, "the file was cut short; write it again", name,
                       "truncated .npy data: the header promises %zu bytes (%zu %s), "
                       "the file holds %zu", h->nbytes, h->count, dtype_name[h->dtype], avail);
    if (avail > h->nbytes)
        return npy_err(MOE_EFORMAT, "the file holds more than one array or was appended to",
                       name, "%zu extra bytes after the .npy data", avail - h->nbytes);
    return MOE_OK;
}

static void fill_out(const npy_hdr *h, void *data, moe_npy *out)
{
    out->dtype = h->dtype;
    out->ndim = h->ndim;
    memcpy(out->shape, h->shape, sizeof out->shape);
    out->count = h->count;
    out->data = data;
    if (!host_is_little_endian())
        bswap_elements(data, h->count, dtype_size[h->dtype]);
}

/* ---- reading --------------------------------------------------------------------------- */

int moe_npy_parse(const void *buf, size_t len, const char *name, moe_npy *out)
{
    const unsigned char *b = buf;
    size_t pre, hlen;
    npy_hdr h;
    memset(out, 0, sizeof *out);
    if (!b)
        len = 0;
    int rc = parse_prefix(b, len, name, &pre, &hlen);
    if (rc)
        return rc;
    if (hlen > len - pre)
        return npy_err(MOE_EFORMAT, NULL, name,
                       "truncated .npy header: %zu bytes promised, %zu present", hlen,
                       len - pre);
    if ((rc = parse_header(b + pre, hlen, name, &h)) ||
        (rc = check_data_size(&h, len - pre - hlen, name)))
        return rc;
    void *data = malloc(h.nbytes ? h.nbytes : 1);
    if (!data)
        return npy_err(MOE_ENOMEM, NULL, name, "out of memory for %zu bytes of .npy data",
                       h.nbytes);
    memcpy(data, b + pre + hlen, h.nbytes);
    fill_out(&h, data, out);
    return MOE_OK;
}

static int read_fail(FILE *f, const char *path, const char *what)
{
    int err = errno;
    return npy_err(MOE_EIO, NULL, path, "cannot read .npy %s: %s", what,
                   ferror(f) ? strerror(err) : "the file shrank while being read");
}

int moe_npy_read(const char *path, moe_npy *out)
{
    memset(out, 0, sizeof *out);
    if (moe_outfile_note_input(path))
        return MOE_ENOMEM;
    FILE *f = fopen(path, "rb");
    if (!f)
        return npy_err(MOE_EIO, "check the path and its permissions", path,
                       "cannot open .npy file: %s", strerror(errno));
    unsigned char *hb = NULL, *data = NULL;
    size_t fsize, pre, hlen;
    npy_hdr h;
    struct stat st;
    int rc;
    if (fstat(fileno(f), &st) != 0) {
        rc = npy_err(MOE_EIO, NULL, path, "cannot stat .npy file: %s", strerror(errno));
        goto done;
    }
    if (!S_ISREG(st.st_mode)) {
        rc = npy_err(MOE_EIO, NULL, path, "not a regular file%s",
                     S_ISDIR(st.st_mode) ? ": a directory" : "");
        goto done;
    }
    if (st.st_size < 0 || (uintmax_t)st.st_size > SIZE_MAX) {
        rc = npy_err(MOE_EIO, NULL, path, "file too large for this machine");
        goto done;
    }
    fsize = (size_t)st.st_size;
    unsigned char prefix[12];
    size_t want = fsize < sizeof prefix ? fsize : sizeof prefix;
    if (fread(prefix, 1, want, f) != want) {
        rc = read_fail(f, path, "header");
        goto done;
    }
    if ((rc = parse_prefix(prefix, want, path, &pre, &hlen)))
        goto done;
    if (hlen > fsize - pre) {
        rc = npy_err(MOE_EFORMAT, NULL, path,
                     "truncated .npy header: %zu bytes promised, %zu present", hlen,
                     fsize - pre);
        goto done;
    }
    if (!(hb = malloc(hlen ? hlen : 1))) {
        rc = npy_err(MOE_ENOMEM, NULL, path, "out of memory for a %zu-byte .npy header", hlen);
        goto done;
    }
    if (fseek(f, (long)pre, SEEK_SET) != 0 || fread(hb, 1, hlen, f) != hlen) {
        rc = read_fail(f, path, "header");
        goto done;
    }
    if ((rc = parse_header(hb, hlen, path, &h)) ||
        (rc = check_data_size(&h, fsize - pre - hlen, path)))
        goto done;
    if (!(data = malloc(h.nbytes ? h.nbytes : 1))) {
        rc = npy_err(MOE_ENOMEM, NULL, path, "out of memory for %zu bytes of .npy data",
                     h.nbytes);
        goto done;
    }
    if (fread(data, 1, h.nbytes, f) != h.nbytes) {
        rc = read_fail(f, path, "data");
        goto done;
    }
    fill_out(&h, data, out);
    data = NULL;
    rc = MOE_OK;
done:
    free(hb);
    free(data);
    fclose(f);
    return rc;
}

void moe_npy_free(moe_npy *a)
{
    if (!a)
        return;
    free(a->data);
    a->data = NULL;
    a->count = 0;
}

/* ---- conversions ----------------------------------------------------------------------- */

/* Checks a and allocates count elements of elsize bytes (at least one byte). */
static int conv_alloc(const moe_npy *a, const char *what, size_t elsize, void **out)
{
    *out = NULL;
    if (!a || a->dtype < 0 || a->dtype > 3 || (!a->data && a->count))
        return moe_fail(MOE_EINVAL, NULL, "invalid array (%s)", what);
    if (a->count > SIZE_MAX / elsize)
        return moe_fail(MOE_ENOMEM, NULL, "array too large (%s)", what);
    *out = malloc(a->count ? a->count * elsize : 1);
    if (!*out)
        return moe_fail(MOE_ENOMEM, NULL, "out of memory for %zu values (%s)", a->count, what);
    return MOE_OK;
}

int moe_npy_as_double(const moe_npy *a, const char *what, double **out)
{
    what = what ? what : "array";
    *out = NULL;
    if (a && (a->dtype == MOE_I32 || a->dtype == MOE_I64))
        return moe_fail(MOE_EFORMAT, "save the array as float: a.astype(np.float32)",
                        "array must be float32 or float64, got %s (%s)", dtype_name[a->dtype],
                        what);
    void *p;
    int rc = conv_alloc(a, what, sizeof(double), &p);
    if (rc)
        return rc;
    double *d = p;
    if (a->dtype == MOE_F64) {
        if (a->count)
            memcpy(d, a->data, a->count * sizeof *d);
    } else {
        const float *s = a->data;
        for (size_t i = 0; i < a->count; i++)
            d[i] = s[i];
    }
    *out = d;
    return MOE_OK;
}

int moe_npy_as_float(const moe_npy *a, const char *what, float **out)
{
    what = what ? what : "array";
    *out = NULL;
    if (a && (a->dtype == MOE_I32 || a->dtype == MOE_I64))
        return moe_fail(MOE_EFORMAT, "save the array as float: a.astype(np.float32)",
                        "array must be float32 or float64, got %s (%s)", dtype_name[a->dtype],
                        what);
    void *p;
    int rc = conv_alloc(a, what, sizeof(float), &p);
    if (rc)
        return rc;
    float *d = p;
    if (a->dtype == MOE_F32) {
        if (a->count)
            memcpy(d, a->data, a->count * sizeof *d);
    } else {
        /* A finite double beyond the float range has no float32 value (the C conversion is
         * undefined): refuse it rather than turn it into an infinity. NaN and inf carry over. */
        const double *s = a->data;
        for (size_t i = 0; i < a->count; i++) {
            if (s[i] > FLT_MAX || s[i] < -FLT_MAX) {
                if (s[i] == s[i] && s[i] - s[i] == 0.0) {
                    free(d);
                    return moe_fail(MOE_EINPUT, "rescale the values to the float32 range",
                                    "value %g at index %zu is outside the float32 range (%s)",
                                    s[i], i, what);
                }
            }
            d[i] = (float)s[i];
        }
    }
    *out = d;
    return MOE_OK;
}

int moe_npy_as_int64(const moe_npy *a, const char *what, int64_t **out)
{
    what = what ? what : "array";
    *out = NULL;
    if (a && (a->dtype == MOE_F32 || a->dtype == MOE_F64))
        return moe_fail(MOE_EFORMAT, "save the array as integers: a.astype(np.int64)",
                        "array must be int32 or int64, got %s (%s)", dtype_name[a->dtype],
                        what);
    void *p;
    int rc = conv_alloc(a, what, sizeof(int64_t), &p);
    if (rc)
        return rc;
    int64_t *d = p;
    if (a->dtype == MOE_I64) {
        if (a->count)
            memcpy(d, a->data, a->count * sizeof *d);
    } else {
        const int32_t *s = a->data;
        for (size_t i = 0; i < a->count; i++)
            d[i] = s[i];
    }
    *out = d;
    return MOE_OK;
}

/* ---- writing --------------------------------------------------------------------------- */

/* The header as NumPy 1.24 writes it for version 1.0 (format.py _write_array_header):
 * "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", then 21 - len(str(shape[0]))
 * spare spaces (none for 0-d), then spaces and '\n' so that the data starts at a multiple of
 * 64 bytes (always at least one space). Returns the full prefix length written to buf. */
static size_t format_header(char *buf, size_t cap, int dtype, int ndim, const size_t *shape)
{
    char dict[256];
    int n = snprintf(dict, sizeof dict, "{'descr': '%s', 'fortran_order': False, 'shape': (",
                     dtype_descr[dtype]);
    for (int i = 0; i < ndim; i++)
        n += snprintf(dict + n, sizeof dict - (size_t)n, i ? ", %zu" : "%zu", shape[i]);
    n += snprintf(dict + n, sizeof dict - (size_t)n, "%s), }", ndim == 1 ? "," : "");
    if (ndim > 0) {
        char first[24];
        int digits = snprintf(first, sizeof first, "%zu", shape[0]);
        for (int i = digits; i < NPY_GROWTH_DIGITS; i++)
            dict[n++] = ' ';
    }
    size_t hlen = (size_t)n + 1; /* with the final '\n' */
    size_t pad = NPY_ALIGN - (10 + hlen) % NPY_ALIGN;
    size_t total = 10 + hlen + pad;
    if (total > cap)
        return 0;
    memcpy(buf, NPY_MAGIC, NPY_MAGIC_LEN);
    buf[6] = 1;
    buf[7] = 0;
    buf[8] = (char)((hlen + pad) & 0xff);
    buf[9] = (char)((hlen + pad) >> 8);
    memcpy(buf + 10, dict, (size_t)n);
    memset(buf + 10 + n, ' ', pad);
    buf[total - 1] = '\n';
    return total;
}

/* fwrite count elements as little-endian (swapping through a small buffer on big-endian). */
static int write_le(FILE *f, const void *data, size_t count, size_t elsize)
{
    if (count == 0) /* data may be NULL */
        return 0;
    if (host_is_little_endian())
        return fwrite(data, elsize, count, f) == count ? 0 : -1;
    unsigned char tmp[4096];
    const unsigned char *p = data;
    size_t per = sizeof tmp / elsize;
    while (count) {
        size_t k = count < per ? count : per;
        memcpy(tmp, p, k * elsize);
        bswap_elements(tmp, k, elsize);
        if (fwrite(tmp, elsize, k, f) != k)
            return -1;
        p += k * elsize;
        count -= k;
    }
    return 0;
}

int moe_npy_write(const char *path, int dtype, const void *data, int ndim, const size_t *shape)
{
    if (dtype < 0 || dtype > 3)
        return moe_fail(MOE_EINVAL, NULL, "unknown dtype %d for .npy output (%s)", dtype, path);
    if (ndim < 0 || ndim > 4 || (ndim > 0 && !shape))
        return moe_fail(MOE_EINVAL, NULL, "%d dimensions for .npy output, 0..4 allowed (%s)",
                        ndim, path);
    size_t count = 1, es = dtype_size[dtype];
    for (int i = 0; i < ndim; i++) {
        if (shape[i] != 0 && count > SIZE_MAX / es / shape[i])
            return moe_fail(MOE_EINVAL, NULL, "shape overflows for .npy output (%s)", path);
        count *= shape[i];
    }
    if (count && !data)
        return moe_fail(MOE_EINVAL, NULL, "no data for .npy output (%s)", path);
    char head[512];
    size_t hsize = format_header(head, sizeof head, dtype, ndim, shape);
    if (hsize == 0) /* cannot happen for 4 dimensions of 20 digits: kept as a guard */
        return moe_fail(MOE_EINVAL, NULL, ".npy header too long (%s)", path);
    moe_outfile o;
    int rc = moe_outfile_open(&o, path, ".npy file", "wb");
    if (rc)
        return rc;
    int bad = fwrite(head, 1, hsize, o.f) != hsize || write_le(o.f, data, count, es) != 0;
    return moe_outfile_commit(&o, bad);
}
