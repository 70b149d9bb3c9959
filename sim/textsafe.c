/* textsafe.c: escaping of untrusted text for printing (textsafe.h). */
#include "textsafe.h"

#include <string.h>

/* The length of the valid UTF-8 sequence at s (2..4), or 0 when s does not start one. Rejects
 * overlong forms, surrogates and code points above U+10FFFF. */
static size_t utf8_len(const unsigned char *s)
{
    unsigned c = s[0];
    size_t n = c >= 0xC2 && c <= 0xDF ? 2 : c >= 0xE0 && c <= 0xEF ? 3 : c >= 0xF0 && c <= 0xF4 ? 4 : 0;
    for (size_t i = 1; i < n; i++)
        if ((s[i] & 0xC0) != 0x80)
            return 0;
    if ((c == 0xE0 && s[1] < 0xA0) || (c == 0xED && s[1] > 0x9F) || (c == 0xF0 && s[1] < 0x90) ||
        (c == 0xF4 && s[1] > 0x8F))
        return 0;
    return n;
}

/* The escaped form of the character at s into out (at most 8 bytes + NUL); *used: bytes of s
 * consumed. */
static void escape_one(const unsigned char *s, char out[16], size_t *used)
{
    static const char hex[] = "0123456789abcdef";
    unsigned c = s[0];
    *used = 1;
    if (c == '\\') {
        strcpy(out, "\\\\");
        return;
    }
    if (c >= 0x20 && c < 0x7F) {
        out[0] = (char)c;
        out[1] = '\0';
        return;
    }
    const char *named = c == '\n' ? "\\n" : c == '\r' ? "\\r" : c == '\t' ? "\\t"
                        : c == 0x1B ? "\\e" : NULL;
    if (named) {
        strcpy(out, named);
        return;
    }
    size_t n = c >= 0x80 ? utf8_len(s) : 0;
    if (n && !(c == 0xC2 && s[1] < 0xA0)) { /* valid UTF-8 and not a C1 control */
        memcpy(out, s, n);
        out[n] = '\0';
        *used = n;
        return;
    }
    if (n == 2) { /* a C1 control U+0080..U+009F: its code point */
        c = s[1];
        *used = 2;
    }
    out[0] = '\\';
    out[1] = 'x';
    out[2] = hex[c >> 4];
    out[3] = hex[c & 15];
    out[4] = '\0';
}

char *moe_text_escape(const char *s, char *buf, size_t len)
{
    size_t at = 0;
    const unsigned char *p = (const unsigned char *)s;
    while (*p) {
        char e[16];
        size_t used, n;
        escape_one(p, e, &used);
        n = strlen(e);
        if (at + n + 1 > len)
            break;
        memcpy(buf + at, e, n);
        at += n;
        p += used;
    }
    buf[at] = '\0';
    return buf;
}

void moe_text_fput(const char *s, FILE *f)
{
    const unsigned char *p = (const unsigned char *)s;
    while (*p) {
        char e[16];
        size_t used;
        escape_one(p, e, &used);
        fputs(e, f);
        p += used;
    }
}
