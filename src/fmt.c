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

static char *put2(char *p, unsigned v)
{
    *p++ = (char)('0' + v / 10 % 10);
    *p++ = (char)('0' + v % 10);
    return p;
}

size_t fmt_time_ms(char *out, int64_t unix_ms)
{
    int64_t ms = unix_ms % 1000, secs = unix_ms / 1000;
    if (ms < 0) {
        ms += 1000;
        secs--;
    }
    int64_t days = secs / 86400, sod = secs % 86400;
    if (sod < 0) {
        sod += 86400;
        days--;
    }
    /* civil_from_days (H. Hinnant): proleptic Gregorian, valid far beyond any clock value */
    int64_t z = days + 719468, era = (z >= 0 ? z : z - 146096) / 146097;
    int64_t doe = z - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t y = yoe + era * 400, doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t mp = (5 * doy + 2) / 153, d = doy - (153 * mp + 2) / 5 + 1;
    int64_t m = mp < 10 ? mp + 3 : mp - 9;
    y += m <= 2;
    y = y < 0 ? 0 : y > 9999 ? 9999 : y; /* four digits, as RFC 3339 has */
    char *p = out;
    p = put2(p, (unsigned)(y / 100 % 100));
    p = put2(p, (unsigned)(y % 100));
    *p++ = '-';
    p = put2(p, (unsigned)m);
    *p++ = '-';
    p = put2(p, (unsigned)d);
    *p++ = 'T';
    p = put2(p, (unsigned)(sod / 3600));
    *p++ = ':';
    p = put2(p, (unsigned)(sod / 60 % 60));
    *p++ = ':';
    p = put2(p, (unsigned)(sod % 60));
    *p++ = '.';
    *p++ = (char)('0' + ms / 100);
    p = put2(p, (unsigned)(ms % 100));
    *p++ = 'Z';
    return (size_t)(p - out);
}
