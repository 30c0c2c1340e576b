/* decimal — exact fixed-point parsing, formatting and rounding. See decimal.h. */
#include "decimal.h"

#include <errno.h>
#include <stdbool.h>
#include <string.h>

typedef unsigned __int128 u128;

/* An exponent is clamped here while it is read: any |exponent| above this already puts the
   value far outside dec_t (39 digits) or far below 1e-6, and the clamp keeps the arithmetic
   on exponent, digit counts (< 2^47 for any body that fits in memory) inside int64. */
#define EXP_CLAMP 1000000000000000LL /* 1e15 */

/* Digits of a 128-bit unsigned magnitude: 2^128 - 1 has 39. */
#define U128_DIGITS 39

static inline bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

/* The number's significant digits are the integer digits followed by the fraction digits,
   with the '.' skipped; index i of that virtual string. */
struct digits {
    const char *ip, *fp;
    size_t ilen, flen;
};

static inline unsigned digit_at(const struct digits *d, size_t i)
{
    return (unsigned)((i < d->ilen ? d->ip[i] : d->fp[i - d->ilen]) - '0');
}

int dec_parse(const char *s, size_t n, dec_t max_abs, dec_t *out)
{
    const char *p = s, *end = s + n;
    struct digits d = {0};
    bool neg = false;
    int64_t exp = 0;

    if (p < end && *p == '-') {
        neg = true;
        p++;
    }
    if (p == end || !is_digit(*p))
        return -EINVAL;
    d.ip = p;
    if (*p == '0')
        p++; /* a leading 0 is the whole integer part */
    else
        while (p < end && is_digit(*p))
            p++;
    d.ilen = (size_t)(p - d.ip);
    d.fp = p;
    if (p < end && *p == '.') {
        d.fp = ++p;
        while (p < end && is_digit(*p))
            p++;
        d.flen = (size_t)(p - d.fp);
        if (d.flen == 0)
            return -EINVAL;
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
        bool eneg = false;
        const char *eb;
        p++;
        if (p < end && (*p == '+' || *p == '-'))
            eneg = *p++ == '-';
        eb = p;
        while (p < end && is_digit(*p)) {
            if (exp < EXP_CLAMP)
                exp = exp * 10 + (*p - '0');
            p++;
        }
        if (p == eb)
            return -EINVAL;
        if (eneg)
            exp = -exp;
    }
    if (p != end)
        return -EINVAL;

    /* Strip leading zeros (only "0" and zeros right after the point can lead). */
    size_t total = d.ilen + d.flen, lz = 0;
    while (lz < total && digit_at(&d, lz) == 0)
        lz++;
    size_t m = total - lz; /* significant digits */
    u128 lim = max_abs > 0 ? (u128)max_abs : 0;
    if (m == 0) {
        *out = 0; /* any exponent of zero is zero, and -0 is 0 */
        return 0;
    }

    /* Value in micro-units = 0.D * 10^P where D is the m significant digits: P digits sit left
       of the micro-unit point. P >= 40 means >= 1e39 > 2^127. */
    int64_t P = (int64_t)m + exp - (int64_t)d.flen + 6;
    if (P > U128_DIGITS)
        return -ERANGE;

    u128 acc = 0;
    for (int64_t i = 0; i < P; i++) {
        unsigned dg = (uint64_t)i < m ? digit_at(&d, lz + (size_t)i) : 0;
        /* acc*10 + dg > lim, written so that nothing overflows: once over, more digits only grow it */
        if (lim < dg || acc > (lim - dg) / 10)
            return -ERANGE;
        acc = acc * 10 + dg;
    }

    /* Rounding: r is the first dropped digit, sticky says whether any later one is non-zero. */
    unsigned r = 0;
    bool sticky = false;
    if (P < 0) {
        sticky = true; /* 0.00..0D: the first dropped digit is an implied 0, D is non-zero */
    } else if ((uint64_t)P < m) {
        r = digit_at(&d, lz + (size_t)P);
        for (size_t i = lz + (size_t)P + 1; i < total && !sticky; i++)
            sticky = digit_at(&d, i) != 0;
    }
    if (acc == lim && (r != 0 || sticky))
        return -ERANGE; /* exact value is above the bound even if it would round down to it */
    if (r > 5 || (r == 5 && (sticky || (acc & 1))))
        acc++; /* acc < lim here, so this stays within the bound */

    *out = neg ? (dec_t)-acc : (dec_t)acc;
    return 0;
}

size_t dec_format(dec_t v, char *buf)
{
    /* Magnitude in unsigned arithmetic so DEC_MIN (-2^127) has one too. */
    u128 u = v < 0 ? -(u128)v : (u128)v;
    uint64_t frac = (uint64_t)(u % DEC_SCALE);
    u128 ip = u / DEC_SCALE;
    char tmp[U128_DIGITS];
    size_t n = 0, k = 0;

    if (v < 0)
        buf[n++] = '-';
    /* Integer part: split off 19-digit chunks so most divisions are 64-bit (<= 33 digits). */
    do {
        uint64_t chunk = (uint64_t)(ip % 10000000000000000000ULL);
        ip /= 10000000000000000000ULL;
        for (int i = 0; i < 19 && (chunk || ip); i++) {
            tmp[k++] = (char)('0' + chunk % 10);
            chunk /= 10;
        }
    } while (ip);
    if (k == 0)
        tmp[k++] = '0';
    while (k)
        buf[n++] = tmp[--k];
    if (frac) {
        int digits = 6;
        while (frac % 10 == 0) {
            frac /= 10;
            digits--;
        }
        buf[n++] = '.';
        for (int i = digits - 1; i >= 0; i--) {
            buf[n + (size_t)i] = (char)('0' + frac % 10);
            frac /= 10;
        }
        n += (size_t)digits;
    }
    buf[n] = '\0';
    return n;
}

dec_t dec_div_round(dec_t num, uint64_t den)
{
    if (den == 0)
        return 0;
    u128 u = num < 0 ? -(u128)num : (u128)num;
    u128 q = u / den, r = u % den;
    /* r < den <= 2^64 - 1, so 2r fits easily in 128 bits. */
    if (2 * r > den || (2 * r == den && (q & 1)))
        q++;
    return num < 0 ? (dec_t)-q : (dec_t)q;
}

int dec_parse_i64(const char *s, size_t n, int64_t *out)
{
    const char *p = s, *end = s + n;
    bool neg = false;
    uint64_t acc = 0, lim;

    if (p < end && *p == '-') {
        neg = true;
        p++;
    }
    if (p == end || !is_digit(*p))
        return -EINVAL;
    if (*p == '0' && end - p > 1)
        return -EINVAL; /* leading zero, or "0" followed by anything */
    lim = neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX;
    for (; p < end; p++) {
        if (!is_digit(*p))
            return -EINVAL;
        unsigned dg = (unsigned)(*p - '0');
        if (acc > (lim - dg) / 10) {
            /* Keep checking the grammar so "99999999999999999999x" is -EINVAL, not -ERANGE. */
            while (++p < end)
                if (!is_digit(*p))
                    return -EINVAL;
            return -ERANGE;
        }
        acc = acc * 10 + dg;
    }
    *out = neg ? (int64_t)(0 - acc) : (int64_t)acc;
    return 0;
}
