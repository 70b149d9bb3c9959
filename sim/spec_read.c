/* spec_read.c: reading an experiment spec into raw sections and keys (spec_internal.h): the
 * INI file through libinih with a reader that counts lines, refuses over-long lines and NUL
 * bytes, accepts LF, CRLF and CR line ends and a UTF-8 byte order mark, and refuses a section
 * given twice; then the `--set section.key=value` overrides. Errors carry file, line and key. */
#include "spec_internal.h"

#include <ctype.h>
#include <errno.h>
#include <ini.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- errors with a location ---- */

int moe_spec_fail_at(int code, const char *file, int line, const char *section, const char *key,
                    const char *hint, const char *fmt, ...)
{
    char what[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    char where[512];
    if (line > 0)
        snprintf(where, sizeof where, "%s:%d", file, line);
    else
        snprintf(where, sizeof where, "%s", file);
    const int slen = (int)strcspn(section, "["); /* a variant "router.topk[k=1]": its key */
    if (!*key) /* the section as a whole */
        return moe_fail(code, hint, "%s (%s, section [%.*s])", what, where, slen, section);
    return moe_fail(code, hint, "%s (%s, key %.*s.%s)", what, where, slen, section, key);
}

static int from_set(const spec_kv *kv) { return kv && !strncmp(kv->file, "--set", 5); }

const spec_kv *moe_spec_blame(const spec_kv *a, const spec_kv *b)
{
    return b && from_set(b) && !from_set(a) ? b : a ? a : b;
}

/* Re-report the error a callee recorded, with the location of kv appended. */
int moe_spec_relocate(int rc, const spec_section *sec, const spec_kv *kv)
{
    char what[1024], hint[512];
    snprintf(what, sizeof what, "%s", *moe_errmsg() ? moe_errmsg() : "failed");
    snprintf(hint, sizeof hint, "%s", moe_errhint());
    moe_clear_error();
    return KV_FAIL(rc ? rc : MOE_EINVAL, sec, kv, hint[0] ? hint : NULL, "%s", what);
}

/* ---- building the raw sections ---- */

char *moe_spec_strdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *c = malloc(n);
    if (c)
        memcpy(c, s, n);
    return c;
}

spec_section *moe_spec_section_find(moe_spec *s, const char *name)
{
    for (int i = 0; i < s->nsecs; i++)
        if (strcmp(s->secs[i].name, name) == 0)
            return &s->secs[i];
    return NULL;
}

spec_section *moe_spec_section_get(moe_spec *s, const char *name)
{
    spec_section *sec = moe_spec_section_find(s, name);
    return sec ? sec : moe_spec_section_new(s, name);
}

/* The array p of n items of size bytes with room for one more: p itself when it has it
 * (capacity *cap), else p reallocated to twice that (first when empty); NULL when out of
 * memory (p unchanged). */
static void *grow(void *p, int *cap, int n, size_t size, int first)
{
    if (n < *cap)
        return p;
    const int nc = *cap ? 2 * *cap : first;
    void *np = realloc(p, (size_t)nc * size);
    if (np)
        *cap = nc;
    return np;
}

spec_section *moe_spec_section_new(moe_spec *s, const char *name)
{
    /* (doubling: a section of 100000 variants adds as many) */
    spec_section *ns = grow(s->secs, &s->capsecs, s->nsecs, sizeof *ns, 16);
    if (!ns)
        return NULL;
    s->secs = ns;
    spec_section *sec = &s->secs[s->nsecs];
    memset(sec, 0, sizeof *sec);
    sec->name = moe_spec_strdup(name);
    if (!sec->name)
        return NULL;
    sec->head.key = sec->head.value = (char *)"";
    sec->head.file = s->path;
    s->nsecs++;
    return sec;
}

spec_kv *moe_spec_kv_find(const spec_section *sec, const char *key)
{
    if (!sec)
        return NULL;
    for (int i = 0; i < sec->nkv; i++)
        if (strcmp(sec->kv[i].key, key) == 0)
            return &sec->kv[i];
    return NULL;
}

static spec_kv *kv_add(spec_section *sec, const char *key, const char *value, const char *file,
                       int line)
{
    spec_kv *nk = grow(sec->kv, &sec->cap, sec->nkv, sizeof *nk, 8);
    if (!nk)
        return NULL;
    sec->kv = nk;
    spec_kv *kv = &sec->kv[sec->nkv];
    kv->key = moe_spec_strdup(key);
    kv->value = moe_spec_strdup(value);
    if (!kv->key || !kv->value) {
        free(kv->key);
        free(kv->value);
        return NULL;
    }
    kv->file = file;
    kv->line = line;
    sec->nkv++;
    return kv;
}

/* ---- libinih callbacks ---- */

typedef struct {
    moe_spec *s;
    FILE *f;
    int line;     /* lines handed to inih so far = the line being parsed */
    int indented; /* the current line starts with white space (an inih continuation) */
    int failed, code; /* the first error recorded (message in moe_errmsg) */
    int bom_seen; /* the first line began with a UTF-8 byte order mark (skipped) */
    spec_kv *last; /* the key of the previous handler call, for continuations */
    const spec_section *last_sec;
} parse_ctx;

/* Stop the parse with an error at the current line: inih sees the end of the file. */
static char *reader_fail(parse_ctx *c, int code, const char *hint, const char *what)
{
    c->code = moe_fail(code, hint, "%s (%s:%d)", what, c->s->path, c->line);
    c->failed = 1;
    return NULL;
}

/* Read one line into str without its end (LF, CRLF or CR); at most num - 3 characters, the
 * limit the spec format documents. A UTF-8 byte order mark before the first line is skipped. */
static char *read_line(parse_ctx *c, char *str, int num)
{
    int ch = getc(c->f);
    if (ch == EOF)
        return NULL;
    c->line++;
    size_t n = 0, max = (size_t)num - 3;
    for (; ch != EOF && ch != '\n' && ch != '\r'; ch = getc(c->f)) {
        if (ch == '\0')
            return reader_fail(c, MOE_EFORMAT, "a spec is a text file", "NUL byte in the spec");
        if (n == max) {
            char what[64];
            snprintf(what, sizeof what, "line longer than %d characters", num - 3);
            return reader_fail(c, MOE_EFORMAT, "continue a long list on indented lines", what);
        }
        str[n++] = (char)ch;
        if (c->line == 1 && !c->bom_seen && n == 3 && memcmp(str, "\xEF\xBB\xBF", 3) == 0) {
            c->bom_seen = 1;
            n = 0;
        }
    }
    if (ch == '\r') { /* CRLF or a lone CR */
        int next = getc(c->f);
        if (next != '\n' && next != EOF)
            ungetc(next, c->f);
    }
    str[n] = '\0';
    return str;
}

/* inih's reader: one line (read_line) per call, counting lines (the Debian libinih is built
 * without line numbers in the handler); makes the section of a header; NULL ends the parse. */
static char *reader(char *str, int num, void *stream)
{
    parse_ctx *c = stream;
    if (c->failed || !read_line(c, str, num))
        return NULL;
    c->indented = str[0] == ' ' || str[0] == '\t';
    /* A section header makes its section even when no key follows (libinih reports keys only):
     * `[router.soft_moe]` alone is a router of type soft_moe. Named as inih names it: the text
     * between '[' and the first ']' after leading white space. */
    const char *b = str;
    while (isspace((unsigned char)*b))
        b++;
    const char *e = *b == '[' ? strchr(b, ']') : NULL;
    if (!e || (c->indented && c->last)) /* (indented after a key: a value) */
        return str;
    char name[256];
    size_t n = (size_t)(e - b - 1);
    c->last = NULL; /* a header ends any continuation; section_get may move the sections */
    c->last_sec = NULL;
    if (n >= sizeof name)
        return str;
    memcpy(name, b + 1, n);
    name[n] = '\0';
    spec_section *sec = moe_spec_section_find(c->s, name);
    if (sec) {
        c->code = moe_spec_fail_at(MOE_EINVAL, c->s->path, c->line, name, "",
                                   "give each section once, with all its keys",
                                   "repeated section (first given at line %d)", sec->head.line);
        c->failed = 1;
        return NULL;
    }
    if ((sec = moe_spec_section_get(c->s, name)) == NULL)
        return reader_fail(c, MOE_ENOMEM, NULL, "out of memory");
    sec->head.line = c->line;
    return str;
}

static int handler(void *user, const char *section, const char *name, const char *value)
{
    parse_ctx *c = user;
    moe_spec *s = c->s;
    if (c->failed)
        return 0;
    if (c->indented && c->last && c->last_sec && strcmp(c->last_sec->name, section) == 0 &&
        strcmp(c->last->key, name) == 0) { /* continuation line of the previous key */
        size_t a = strlen(c->last->value), b = strlen(value);
        char *v = realloc(c->last->value, a + b + 2);
        if (!v)
            goto nomem;
        v[a] = ' ';
        memcpy(v + a + 1, value, b + 1);
        c->last->value = v;
        return 1;
    }
    if (!*section) {
        c->failed = 1;
        c->code = moe_fail(MOE_EINVAL, "put keys under a section such as [experiment]",
                           "key outside a section (%s:%d, key %s)", s->path, c->line, name);
        return 0;
    }
    spec_section *sec = moe_spec_section_get(s, section);
    if (!sec)
        goto nomem;
    const spec_kv *dup = moe_spec_kv_find(sec, name);
    if (dup) {
        c->failed = 1;
        c->code = moe_spec_fail_at(MOE_EINVAL, s->path, c->line, section, name,
                                   "give each key once per section",
                                   "duplicate key (first given at line %d)", dup->line);
        return 0;
    }
    c->last = kv_add(sec, name, value, s->path, c->line);
    if (!c->last)
        goto nomem;
    c->last_sec = sec;
    return 1;
nomem:
    c->failed = 1;
    c->code = moe_fail(MOE_ENOMEM, NULL, "out of memory (%s:%d)", s->path, c->line);
    return 0;
}

int moe_spec_read_ini(moe_spec *s)
{
    FILE *f = fopen(s->path, "r");
    if (!f)
        return moe_fail(MOE_EIO, "give the path of a spec such as experiments/default.ini",
                        "cannot open spec: %s (%s)", strerror(errno), s->path);
    parse_ctx c = {.s = s, .f = f};
    int rc = ini_parse_stream(reader, &c, handler, &c);
    int rerr = ferror(f);
    fclose(f);
    if (c.failed)
        return c.code;
    if (rerr)
        return moe_fail(MOE_EIO, NULL, "read error (%s)", s->path);
    if (rc > 0)
        return moe_fail(MOE_EFORMAT,
                        "lines are `key = value`, `[section]`, or comments starting with ; or #",
                        "syntax error (%s:%d)", s->path, rc);
    if (rc < 0)
        return moe_fail(MOE_ENOMEM, NULL, "cannot parse spec (%s)", s->path);
    return MOE_OK;
}

/* "section.key=value": the key is the part after the last dot before '='. */
int moe_spec_apply_set(moe_spec *s, const char *set, int i)
{
    char label[32];
    snprintf(label, sizeof label, "--set:%d", i);
    const char *eq = strchr(set, '=');
    const char *dot = NULL;
    for (const char *p = set; eq && p < eq; p++)
        if (*p == '.')
            dot = p;
    if (!eq || !dot || dot == set || dot + 1 == eq)
        return moe_fail(MOE_EINVAL,
                        "write --set section.key=value, e.g. --set experiment.tokens=512",
                        "bad override '%s' (%s)", set, label);
    char **nl = realloc(s->labels, (size_t)(s->nlabels + 1) * sizeof *nl);
    if (!nl)
        return moe_fail(MOE_ENOMEM, NULL, "out of memory (%s)", label);
    s->labels = nl;
    char *lab = moe_spec_strdup(label);
    if (!lab)
        return moe_fail(MOE_ENOMEM, NULL, "out of memory (%s)", label);
    s->labels[s->nlabels++] = lab;
    char secname[256], key[256];
    if ((size_t)(dot - set) >= sizeof secname || (size_t)(eq - dot - 1) >= sizeof key)
        return moe_fail(MOE_EINVAL, NULL, "override name too long (%s)", label);
    memcpy(secname, set, (size_t)(dot - set));
    secname[dot - set] = '\0';
    memcpy(key, dot + 1, (size_t)(eq - dot - 1));
    key[eq - dot - 1] = '\0';
    const char *value = eq + 1;
    spec_section *sec = moe_spec_section_get(s, secname);
    if (!sec)
        return moe_fail(MOE_ENOMEM, NULL, "out of memory (%s)", label);
    spec_kv *kv = moe_spec_kv_find(sec, key);
    if (kv) {
        char *v = moe_spec_strdup(value);
        if (!v)
            return moe_fail(MOE_ENOMEM, NULL, "out of memory (%s)", label);
        free(kv->value);
        kv->value = v;
        kv->file = lab;
        kv->line = 0;
    } else if (!kv_add(sec, key, value, lab, 0)) {
        return moe_fail(MOE_ENOMEM, NULL, "out of memory (%s)", label);
    }
    return MOE_OK;
}

