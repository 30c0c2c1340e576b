/*
 * utf8 — the one UTF-8 validator (RFC 3629): the JSON parser's strings (SPEC §2.1: userId is
 * UTF-8) and the log's escaping use it. Pure, header-only (inline: the parser calls it per
 * non-ASCII byte).
 */
#ifndef RC_UTF8_H
#define RC_UTF8_H

#include <stddef.h>

/* Length of the valid UTF-8 sequence at p (avail >= 1 bytes there): 1 for ASCII, 2..4, or 0
   if invalid: rejects overlongs (C0, C1, E0 80-9F, F0 80-8F), surrogates (ED A0-BF),
   > U+10FFFF (F4 90+, F5-FF), stray continuation bytes and sequences cut short by avail or by
   a non-continuation byte (RFC 3629 table 3-7). */
static inline size_t utf8_seq(const unsigned char *p, size_t avail)
{
    unsigned c = p[0], lo = 0x80, hi = 0xBF;

    if (c < 0x80)
        return 1;
    if (c < 0xC2)
        return 0;
    if (c < 0xE0)
        return avail >= 2 && (p[1] & 0xC0) == 0x80 ? 2 : 0;
    if (c < 0xF0) {
        if (c == 0xE0)
            lo = 0xA0;
        else if (c == 0xED)
            hi = 0x9F;
        return avail >= 3 && p[1] >= lo && p[1] <= hi && (p[2] & 0xC0) == 0x80 ? 3 : 0;
    }
    if (c < 0xF5) {
        if (c == 0xF0)
            lo = 0x90;
        else if (c == 0xF4)
            hi = 0x8F;
        return avail >= 4 && p[1] >= lo && p[1] <= hi && (p[2] & 0xC0) == 0x80 &&
                       (p[3] & 0xC0) == 0x80
                   ? 4
                   : 0;
    }
    return 0;
}

#endif
