/* textsafe.h: text from files and databases made safe to print (sim/textsafe.c). A crafted
 * results database or path must not send terminal escape sequences or break a line-based file:
 * control characters (C0, DEL and the C1 range U+0080..U+009F) are written as visible escapes
 * (\n, \r, \t, \e, else \xHH), a backslash as \\, and bytes that are not valid UTF-8 as \xHH;
 * everything else, valid UTF-8 text included, is copied unchanged. */
#ifndef MOE_TEXTSAFE_H
#define MOE_TEXTSAFE_H

#include <stddef.h>
#include <stdio.h>

/* Escape s into buf (len >= 1 bytes, always NUL-terminated; cut before an escape or character
 * that does not fit). Returns buf. */
char *moe_text_escape(const char *s, char *buf, size_t len);

/* Write s escaped to f. */
void moe_text_fput(const char *s, FILE *f);

#endif
