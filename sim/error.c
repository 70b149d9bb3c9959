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

enum { TAIL_KEEP = 400 }; /* bytes kept at the end of a message too long for its buffer */

/* The width of byte c in a message: control characters (a newline, CR, tab, escape, ...) that
 * a file name, key or argument put there are written as \n, \r, \t, \e or \xHH, so that
 * every message is one line. */
static size_t esc_width(unsigned char c)
{
    return c >= 0x20 && c != 0x7f                        ? 1
           : c == '\n' || c == '\r' || c == '\t' || c == 27 ? 2
                                                         : 4;
}

/* s[from, to) escaped at out (room for it: the sum of esc_width); returns the end. */
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

/* s escaped into out (cap bytes). When that does not fit, the beginning and the last
 * TAIL_KEEP bytes with " ... " between, each cut at a character's start: a message reads
 * "<what> (<where>)", and a long value quoted in the what (an argument, a key) is elided
 * rather than the where. */
static void put_line(char *out, size_t cap, const char *s)
{
    const size_t n = strlen(s);
    size_t total = 0;
    for (size_t i = 0; i < n; i++)
        total += esc_width((unsigned char)s[i]);
    if (total < cap) {
        *esc_put(out, s, 0, n) = '\0';
        return;
    }
    size_t pos = n, tw = 0; /* the tail s[pos, n), at most TAIL_KEEP wide */
    while (pos > 0 && tw + esc_width((unsigned char)s[pos - 1]) <= TAIL_KEEP)
        tw += esc_width((unsigned char)s[--pos]);
    while (pos < n && ((unsigned char)s[pos] & 0xC0) == 0x80) /* a UTF-8 continuation */
        tw -= esc_width((unsigned char)s[pos++]);
    const size_t room = cap - 1 - tw - 5; /* the head's width, beside " ... " */
    size_t end = 0, hw = 0;
    while (end < pos && hw + esc_width((unsigned char)s[end]) <= room)
        hw += esc_width((unsigned char)s[end++]);
    while (end > 0 && end < n && ((unsigned char)s[end] & 0xC0) == 0x80)
        end--; /* (the character that byte belongs to left out whole) */
    char *o = esc_put(out, s, 0, end);
    o += sprintf(o, " ... ");
    *esc_put(o, s, pos, n) = '\0';
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
    char buf[4096];
    va_list ap;
    va_start(ap, fmt);
    char *s = format_all(buf, sizeof buf, fmt, ap);
    va_end(ap);
    put_line(err_msg, sizeof err_msg, s);
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
    char *m = format_str(mb, sizeof mb, "%s (%s)", err_msg, w); /* (err_msg: one line already) */
    put_line(err_msg, sizeof err_msg, m);
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
