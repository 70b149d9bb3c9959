/* error.c: the one place library errors are recorded (STYLE.md: a single breakpoint).
 * Messages read "<what> (<where>)"; main.c prints them with a hint and exits non-zero. */
#include "moe.h"

#include <gsl/gsl_errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static _Thread_local char err_msg[1024];
static _Thread_local char err_hint[512];
static _Thread_local int err_code;

/* Messages are one line: control characters that a file name, key or argument put into
 * msg[from..] (a newline, CR, tab, escape, ...) are written as \n, \r, \t, \e or \xHH, in
 * place (cut at the buffer's end). */
static void one_line(char *msg, size_t cap, size_t from)
{
    size_t n = strlen(msg), bad = 0;
    for (size_t i = from; i < n; i++)
        bad += (unsigned char)msg[i] < 0x20 || msg[i] == 0x7f;
    if (!bad)
        return;
    char tmp[sizeof err_msg];
    size_t o = 0;
    for (size_t i = from; i < n && o + 5 < sizeof tmp; i++) {
        unsigned char c = (unsigned char)msg[i];
        if (c >= 0x20 && c != 0x7f) {
            tmp[o++] = (char)c;
            continue;
        }
        const char *e = c == '\n'   ? "\\n"
                        : c == '\r' ? "\\r"
                        : c == '\t' ? "\\t"
                        : c == 27   ? "\\e"
                                    : NULL;
        o += e ? (size_t)snprintf(tmp + o, sizeof tmp - o, "%s", e)
               : (size_t)snprintf(tmp + o, sizeof tmp - o, "\\x%02X", c);
    }
    tmp[o] = '\0';
    snprintf(msg + from, cap - from, "%s", tmp);
}

int moe_fail(int code, const char *hint, const char *fmt, ...)
{
    /* Keep the first error of a chain: callers that fail because a callee failed re-report,
     * and the innermost message is the most precise one. */
    if (err_code != 0)
        return code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err_msg, sizeof err_msg, fmt, ap);
    va_end(ap);
    one_line(err_msg, sizeof err_msg, 0);
    snprintf(err_hint, sizeof err_hint, "%s", hint ? hint : "");
    err_code = code;
    return code;
}

void moe_error_where(const char *fmt, ...)
{
    if (err_code == 0)
        return;
    size_t len = strlen(err_msg);
    if (len + 2 >= sizeof err_msg)
        return;
    err_msg[len++] = ' ';
    err_msg[len++] = '(';
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err_msg + len, sizeof err_msg - len, fmt, ap);
    va_end(ap);
    one_line(err_msg, sizeof err_msg, len);
    len = strlen(err_msg);
    if (len + 1 < sizeof err_msg) {
        err_msg[len] = ')';
        err_msg[len + 1] = '\0';
    }
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
