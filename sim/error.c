/* error.c: the one place library errors are recorded (a single place to break on).
 * Messages read "<what> (<where>)"; main.c prints them with a hint and exits non-zero. */
#include "moe.h"

#include <gsl/gsl_errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static _Thread_local char err_msg[1024];
static _Thread_local char err_hint[512];
static _Thread_local int err_code;

/* A message too long for its buffer is cut (put_msg): what it quotes (an argument, a key, a
 * file's bytes) is elided before its where, which keeps its first bytes. */
enum {
    WHAT_MIN = 200, /* bytes of the what kept at least */
    WHAT_TAIL = 16, /* of those, its last ones (a closing quote) */
    TAIL_KEEP = 100, /* the last bytes kept of a where (or of a message without one) too long */
};

/* The width of byte c in a message: control characters (a newline, CR, tab, escape, ...) that
 * a file name, key or argument put there are written as \n, \r, \t, \e or \xHH, so that
 * every message is one line. */
static size_t esc_width(unsigned char c)
{
    return c >= 0x20 && c != 0x7f                              ? 1
           : c == '\n' || c == '\r' || c == '\t' || c == 27 ? 2
                                                              : 4;
}

static size_t esc_span(const char *s, size_t from, size_t to)
{
    size_t w = 0;
    for (size_t i = from; i < to; i++)
        w += esc_width((unsigned char)s[i]);
    return w;
}

static int utf8_cont(char c) { return ((unsigned char)c & 0xC0) == 0x80; }

/* s[from, to) escaped at out (room for it: esc_span); returns the end. */
static char *esc_put(char *out, const char *s, size_t from, size_t to)
{
    for (size_t i = from; i < to; i++) {
        const unsigned char c = (unsigned char)s[i];
        const char *e = c == '\n' ? "\\n" : c == '\r' ? "\\r" : c == '\t' ? "\\t" : "\\e";
        if (esc_width(c) == 1)
            *out++ = (char)c;
        else if (esc_width(c) == 2)
            out += sprintf(out, "%s", e);
        else
            out += sprintf(out, "\\x%02X", c);
    }
    return out;
}

/* s[from, to) escaped at out in at most room bytes (tail + 5 <= room): whole when it fits,
 * else its beginning and its last tail bytes at most, with " ... " between, each cut at a
 * character's start. Returns the end. */
static char *esc_fit(char *out, size_t room, const char *s, size_t from, size_t to, size_t tail)
{
    if (esc_span(s, from, to) <= room)
        return esc_put(out, s, from, to);
    size_t pos = to, tw = 0; /* the tail s[pos, to) */
    while (pos > from && tw + esc_width((unsigned char)s[pos - 1]) <= tail)
        tw += esc_width((unsigned char)s[--pos]);
    while (pos < to && utf8_cont(s[pos]))
        tw -= esc_width((unsigned char)s[pos++]);
    const size_t hroom = room - tw - 5; /* the head s[from, end) */
    size_t end = from, hw = 0;
    while (end < pos && hw + esc_width((unsigned char)s[end]) <= hroom)
        hw += esc_width((unsigned char)s[end++]);
    while (end > from && end < to && utf8_cont(s[end]))
        end--; /* (the character that byte belongs to left out whole) */
    char *o = esc_put(out, s, from, end);
    memcpy(o, " ... ", 5);
    return esc_put(o + 5, s, pos, to);
}

/* The message s escaped into out (cap bytes), s[0, w) its what and s[w, ...) its where (w at
 * the end: none). When too long: the what elided so that the where stays whole; a where too
 * long for that keeps WHAT_MIN bytes of the what and is itself elided after its beginning
 * (where the file, line or flag are); a message without a where keeps its beginning and end. */
static void put_msg(char *out, size_t cap, const char *s, size_t w)
{
    const size_t n = strlen(s), room = cap - 1;
    char *o;
    if (w >= n || esc_span(s, 0, n) <= room) {
        o = esc_fit(out, room, s, 0, n, TAIL_KEEP);
    } else {
        const size_t ww = esc_span(s, w, n);
        const size_t what = ww + 5 + WHAT_MIN <= room ? room - ww : WHAT_MIN + 5;
        o = esc_fit(out, what, s, 0, w, WHAT_TAIL);
        o = esc_fit(o, room - (size_t)(o - out), s, w, n, TAIL_KEEP);
    }
    *o = '\0';
}

/* The offset in fmt of the " (" that opens the where of "<what> (<where>)": the last one
 * outside a conversion; -1 for none. */
static long where_in(const char *fmt)
{
    long at = -1;
    for (const char *p = fmt; *p; p++) {
        if (*p == '%') { /* a conversion: flags, width, precision, length, then its letter */
            p++;
            p += strspn(p, "-+ #0'");
            p += strspn(p, "0123456789*");
            if (*p == '.')
                p += 1 + strspn(p + 1, "0123456789*");
            p += strspn(p, "hljztL");
            if (!*p)
                break;
            continue;
        }
        if (p[0] == ' ' && p[1] == '(')
            at = (long)(p - fmt);
    }
    return at;
}

/* vsnprintf of fmt into a buffer of its full length: buf when it fits, else an allocated one
 * (free it), else (out of memory) buf, holding the message cut at cap. */
static char *format_all(char *buf, size_t cap, const char *fmt, va_list ap)
{
    va_list cp;
    va_copy(cp, ap);
    const int len = vsnprintf(buf, cap, fmt, ap);
    char *s = buf;
    if (len >= 0 && (size_t)len >= cap && (s = malloc((size_t)len + 1)))
        vsnprintf(s, (size_t)len + 1, fmt, cp);
    va_end(cp);
    return s ? s : buf;
}

int moe_fail(int code, const char *hint, const char *fmt, ...)
{
    /* Keep the first error of a chain: callers that fail because a callee failed re-report,
     * and the innermost message is the most precise one. */
    if (err_code != 0)
        return code;
    char buf[4096], pre[256];
    va_list ap, cp;
    va_start(ap, fmt);
    va_copy(cp, ap);
    char *s = format_all(buf, sizeof buf, fmt, ap);
    /* the where starts where fmt's text before its " (" ends, formatted with the same values */
    size_t w = strlen(s);
    const long at = where_in(fmt);
    if (at >= 0 && (size_t)at < sizeof pre) {
        memcpy(pre, fmt, (size_t)at);
        pre[at] = '\0';
        const int len = vsnprintf(NULL, 0, pre, cp);
        if (len >= 0 && (size_t)len < w && !strncmp(s + len, " (", 2))
            w = (size_t)len;
    }
    va_end(cp);
    va_end(ap);
    put_msg(err_msg, sizeof err_msg, s, w);
    if (s != buf)
        free(s);
    snprintf(err_hint, sizeof err_hint, "%s", hint ? hint : "");
    err_code = code;
    return code;
}

/* format_all of a variadic fmt. */
static char *format_str(char *buf, size_t cap, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *s = format_all(buf, cap, fmt, ap);
    va_end(ap);
    return s;
}

void moe_error_where(const char *fmt, ...)
{
    if (err_code == 0)
        return;
    char wb[4096], mb[8192];
    va_list ap;
    va_start(ap, fmt);
    char *w = format_all(wb, sizeof wb, fmt, ap);
    va_end(ap);
    const size_t at = strlen(err_msg); /* (one line already: escaping it again changes nothing) */
    char *m = format_str(mb, sizeof mb, "%s (%s)", err_msg, w);
    put_msg(err_msg, sizeof err_msg, m, at);
    if (m != mb)
        free(m);
    if (w != wb)
        free(w);
}

const char *moe_errmsg(void) { return err_code ? err_msg : ""; }
const char *moe_errhint(void) { return err_code ? err_hint : ""; }

void moe_clear_error(void)
{
    err_code = 0;
    err_msg[0] = err_hint[0] = '\0';
}

static void gsl_handler(const char *reason, const char *file, int line, int gsl_errno)
{
    moe_fail(MOE_EINVAL, NULL, "GSL: %s (%s:%d, gsl_errno %d)", reason, file, line, gsl_errno);
}

void moe_install_gsl_handler(void) { gsl_set_error_handler(gsl_handler); }
