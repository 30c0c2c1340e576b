/* fmt — see fmt.h. */
#include <errno.h>
#include <stdbool.h>
#include "fmt.h"

#include <string.h>

size_t fmt_u64(char *p, uint64_t v)
{
    char tmp[20];
    size_t n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    for (size_t i = 0; i < n; i++)
        p[i] = tmp[n - 1 - i];
    return n;
}

size_t fmt_i64(char *p, int64_t v)
{
    if (v >= 0)
        return fmt_u64(p, (uint64_t)v);
    *p = '-';
    return 1 + fmt_u64(p + 1, (uint64_t)0 - (uint64_t)v);
}

/* Signed 128-bit integer in decimal (no NUL); out >= 41 bytes. Returns the length. */
size_t fmt_i128(char *out, __int128 v)
{
    char tmp[48];
    size_t k = 0;
    unsigned __int128 u = v < 0 ? -(unsigned __int128)v : (unsigned __int128)v;
    do {
        tmp[k++] = (char)('0' + (int)(u % 10));
        u /= 10;
    } while (u);
    size_t o = 0;
    if (v < 0)
        out[o++] = '-';
    while (k)
        out[o++] = tmp[--k];
    return o;
}

/* Parse an optionally signed decimal integer (PostgreSQL numeric/bigint text). 0 / -EINVAL. */
int fmt_parse_i128(const char *s, __int128 *out)
{
    bool neg = *s == '-';
    if (neg || *s == '+')
        s++;
    if (!*s)
        return -EINVAL;
    unsigned __int128 u = 0;
    for (; *s; s++) {
        if (*s < '0' || *s > '9')
            return -EINVAL;
        u = u * 10 + (unsigned)(*s - '0');
    }
    /* negate unsigned: -(__int128)u overflows for the minimum (UBSan) */
    *out = (__int128)(neg ? 0 - u : u);
    return 0;
}
