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
