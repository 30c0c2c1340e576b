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

/* n decimal digits at s into *v: false if any is not a digit. */
static bool digits(const char *s, size_t n, int *v)
{
    *v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        *v = *v * 10 + (s[i] - '0');
    }
    return true;
}

int fmt_parse_time_ms(const char *s, size_t n, int64_t *unix_ms)
{
    int y, mo, d, h, mi, se, ms = 0;
    if (n < 20 || !digits(s, 4, &y) || s[4] != '-' || !digits(s + 5, 2, &mo) || s[7] != '-' ||
        !digits(s + 8, 2, &d) || (s[10] != 'T' && s[10] != 't' && s[10] != ' ') ||
        !digits(s + 11, 2, &h) || s[13] != ':' || !digits(s + 14, 2, &mi) || s[16] != ':' ||
        !digits(s + 17, 2, &se))
        return -EINVAL;
    size_t i = 19;
    if (s[i] == '.') {
        size_t k = 0;
        for (i++; i < n && s[i] >= '0' && s[i] <= '9'; i++, k++)
            if (k < 3)
                ms = ms * 10 + (s[i] - '0');
        if (k == 0)
            return -EINVAL;
        for (; k < 3; k++)
            ms *= 10;
    }
    int64_t off = 0;
    if (i + 1 == n && (s[i] == 'Z' || s[i] == 'z')) {
        off = 0;
    } else if (i + 6 == n && (s[i] == '+' || s[i] == '-') && s[i + 3] == ':') {
        int oh, om;
        if (!digits(s + i + 1, 2, &oh) || !digits(s + i + 4, 2, &om) || oh > 23 || om > 59)
            return -EINVAL;
        off = (s[i] == '+' ? 1 : -1) * ((int64_t)oh * 3600 + om * 60);
    } else {
        return -EINVAL;
    }
    static const int mdays[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (mo < 1 || mo > 12 || d < 1 || d > mdays[mo - 1] || h > 23 || mi > 59 || se > 60)
        return -EINVAL;
    if (mo == 2 && d == 29 && !(y % 4 == 0 && (y % 100 != 0 || y % 400 == 0)))
        return -EINVAL;
    /* days_from_civil (H. Hinnant), the inverse of fmt_time_ms's */
    int64_t yy = mo <= 2 ? y - 1 : y;
    int64_t era = (yy >= 0 ? yy : yy - 399) / 400, yoe = yy - era * 400;
    int64_t doy = (153 * (mo > 2 ? mo - 3 : mo + 9) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    int64_t days = era * 146097 + doe - 719468;
    *unix_ms = ((days * 86400 + h * 3600 + mi * 60 + (se > 59 ? 59 : se)) - off) * 1000 + ms;
    return 0;
}
