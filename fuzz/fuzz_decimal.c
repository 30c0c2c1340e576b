/*
 * fuzz_decimal — libFuzzer target for the fixed-point decimals (src/decimal.c), checked against
 * an independent reference written for this target (digit strings, no __int128 tricks shared
 * with the code under test).
 *
 * Input: byte 0 picks the bound max_abs; the rest is a number literal. When the input is at
 * least 24 bytes, its first 16 bytes are also read as a raw dec_t and the next 8 as a divisor.
 *
 * Invariants:
 *  - dec_parse(s) == ref_parse(s): same verdict (0 / -EINVAL / -ERANGE) and the same value,
 *    rounded half-to-even at the 6th fraction digit, exponents of any size;
 *  - dec_parse_i64(s) == ref_parse_i64(s);
 *  - round trip for every dec_t v except DEC_MIN (whose magnitude, 2^127, is above DEC_MAX by
 *    design): dec_parse(dec_format(v)) == v, and dec_format prints the shortest form (no
 *    exponent, no trailing fraction zero, no leading zero, "-" only for v < 0);
 *  - dec_div_round(v, d) is the nearest integer to v/d, ties to even.
 */
#include <errno.h>

#include "decimal.h"
#include "fz.h"

typedef unsigned __int128 u128;

/* The reference: a JSON number is sign, digit string D and decimal exponent E, value D * 10^E.
   Returns 0 / -EINVAL / -ERANGE as dec_parse. */
static int ref_parse(const char *s, size_t n, dec_t max_abs, dec_t *out)
{
    size_t i = 0;
    bool neg = false;
    char dig[4096];
    size_t nd = 0;
    long long frac = 0, exp = 0;

    if (i < n && s[i] == '-')
        neg = true, i++;
    if (i >= n || s[i] < '0' || s[i] > '9')
        return -EINVAL;
    if (s[i] == '0') {
        i++;
    } else {
        while (i < n && s[i] >= '0' && s[i] <= '9') {
            if (nd == sizeof dig)
                return 1; /* too long for the reference: skip */
            dig[nd++] = s[i++];
        }
    }
    if (i < n && s[i] == '.') {
        i++;
        size_t f0 = i;
        while (i < n && s[i] >= '0' && s[i] <= '9') {
            if (nd == sizeof dig)
                return 1;
            dig[nd++] = s[i++];
            frac++;
        }
        if (i == f0)
            return -EINVAL;
    }
    if (i < n && (s[i] == 'e' || s[i] == 'E')) {
        i++;
        bool eneg = false;
        if (i < n && (s[i] == '+' || s[i] == '-'))
            eneg = s[i++] == '-';
        size_t e0 = i;
        while (i < n && s[i] >= '0' && s[i] <= '9') {
            if (exp < 1000000000LL)
                exp = exp * 10 + (s[i] - '0');
            i++;
        }
        if (i == e0)
            return -EINVAL;
        if (eneg)
            exp = -exp;
    }
    if (i != n)
        return -EINVAL;
    /* strip leading zeros of D */
    size_t lz = 0;
    while (lz < nd && dig[lz] == '0')
        lz++;
    const char *d = dig + lz;
    nd -= lz;
    if (nd == 0) {
        *out = 0;
        return 0;
    }
    /* micro-units = D * 10^(E - frac + 6): `keep` digits of D are integer micro-units */
    long long sh = exp - frac + 6;
    long long keep = (long long)nd + sh;
    if (keep > 60)
        return -ERANGE; /* >= 10^59 micro-units */
    char ip[64];
    size_t ipn = 0;
    unsigned first = 0; /* first dropped digit */
    bool sticky = false;
    if (keep <= 0) {
        first = keep == 0 ? (unsigned)(d[0] - '0') : 0;
        for (size_t k = keep == 0 ? 1 : 0; k < nd; k++)
            sticky |= d[k] != '0';
    } else {
        for (long long k = 0; k < keep; k++)
            ip[ipn++] = k < (long long)nd ? d[k] : '0';
        if (keep < (long long)nd) {
            first = (unsigned)(d[keep] - '0');
            for (size_t k = (size_t)keep + 1; k < nd; k++)
                sticky |= d[k] != '0';
        }
    }
    /* integer part as u128, saturating past 2^128 - 1 */
    u128 acc = 0, sat = ~(u128)0;
    for (size_t k = 0; k < ipn; k++) {
        unsigned dg = (unsigned)(ip[k] - '0');
        if (acc > (sat - dg) / 10) {
            acc = sat;
            break;
        }
        acc = acc * 10 + dg;
    }
    u128 lim = max_abs > 0 ? (u128)max_abs : 0;
    if (acc > lim || (acc == lim && (first || sticky)))
        return -ERANGE;
    if (first > 5 || (first == 5 && (sticky || (acc & 1))))
        acc++;
    *out = neg ? -(dec_t)acc : (dec_t)acc;
    return 0;
}

static int ref_parse_i64(const char *s, size_t n, int64_t *out)
{
    size_t i = 0;
    bool neg = false;
    if (i < n && s[i] == '-')
        neg = true, i++;
    if (i >= n)
        return -EINVAL;
    if (s[i] == '0' && n - i > 1)
        return -EINVAL;
    u128 acc = 0;
    bool big = false;
    for (size_t k = i; k < n; k++) {
        if (s[k] < '0' || s[k] > '9')
            return -EINVAL;
        if (!big)
            acc = acc * 10 + (unsigned)(s[k] - '0');
        if (acc > (u128)1 << 64)
            big = true;
    }
    if (big || acc > (neg ? (u128)INT64_MAX + 1 : (u128)INT64_MAX))
        return -ERANGE;
    *out = neg ? (int64_t)(0 - (uint64_t)acc) : (int64_t)acc;
    return 0;
}

/* dec_format's shape: -?(0|[1-9][0-9]*)(\.[0-9]{0,5}[1-9])? */
static void check_shape(const char *b, size_t n, dec_t v)
{
    size_t i = 0;
    FZ_CHECK(n > 0 && n < DEC_FMT_MAX && strlen(b) == n, "length %zu", n);
    if (b[0] == '-') {
        FZ_CHECK(v < 0, "minus sign on a non-negative value");
        i++;
    } else {
        FZ_CHECK(v >= 0, "no minus sign on a negative value");
    }
    FZ_CHECK(i < n && b[i] >= '0' && b[i] <= '9', "no integer digit");
    FZ_CHECK(b[i] != '0' || i + 1 == n || b[i + 1] == '.', "leading zero: %s", b);
    while (i < n && b[i] >= '0' && b[i] <= '9')
        i++;
    if (i < n) {
        FZ_CHECK(b[i] == '.', "unexpected byte in %s", b);
        size_t f0 = ++i;
        while (i < n && b[i] >= '0' && b[i] <= '9')
            i++;
        FZ_CHECK(i == n && i - f0 >= 1 && i - f0 <= 6 && b[n - 1] != '0', "fraction of %s", b);
    }
}

static void check_format_round_trip(dec_t v)
{
    char buf[DEC_FMT_MAX];
    size_t n = dec_format(v, buf);
    check_shape(buf, n, v);
    if (v == DEC_MIN)
        return; /* 2^127 micro-units is above DEC_MAX, the widest bound dec_parse accepts */
    dec_t w = 1;
    int rc = dec_parse(buf, n, DEC_MAX, &w);
    FZ_CHECK(rc == 0 && w == v, "dec_parse(dec_format(v)) rc %d: %s", rc, buf);
}

static u128 mag(dec_t v)
{
    return v < 0 ? -(u128)v : (u128)v;
}

static void check_div_round(dec_t num, uint64_t den)
{
    if (den == 0) {
        FZ_CHECK(dec_div_round(num, 0) == 0, "den 0");
        return;
    }
    dec_t q = dec_div_round(num, den);
    /* |num| = qm*den + r exactly with the truncated quotient; the rounded one is qm or qm+1 */
    u128 m = mag(num), qm = m / den, r = m % den;
    FZ_CHECK(q == 0 || (q < 0) == (num < 0), "sign of the quotient");
    u128 got = mag(q);
    FZ_CHECK(got == qm || got == qm + 1, "quotient off by more than one");
    u128 twice = 2 * r; /* r < 2^64: no overflow */
    if (twice < den)
        FZ_CHECK(got == qm, "rounded up below half");
    else if (twice > den)
        FZ_CHECK(got == qm + 1, "rounded down above half");
    else
        FZ_CHECK((got & 1) == 0, "tie not rounded to even");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const dec_t bounds[8] = {
        DEC_MAX, (dec_t)1000000000000000LL * DEC_SCALE, 0, 1, 999999, 1000000, 1500000,
        (dec_t)INT64_MAX};
    if (size < 1)
        return 0;
    dec_t max_abs = bounds[data[0] & 7];
    if (size >= 24) {
        dec_t raw;
        uint64_t den;
        memcpy(&raw, data, sizeof raw);
        memcpy(&den, data + 16, sizeof den);
        check_format_round_trip(raw);
        if (raw != DEC_MIN)
            check_format_round_trip(-raw);
        check_div_round(raw, den);
        check_div_round(raw, den & 0xffff);
    }
    const char *s = (const char *)data + 1;
    size_t n = size - 1;
    char *b = fz_dup(s, n);
    dec_t v = 7, rv = 7;
    int rc = dec_parse(b, n, max_abs, &v);
    int rr = ref_parse(s, n, max_abs, &rv);
    if (rr != 1) {
        FZ_CHECK(rc == rr, "dec_parse %d, reference %d: %.*s", rc, rr, (int)n, s);
        FZ_CHECK(rc != 0 || v == rv, "values differ: %.*s", (int)n, s);
    }
    if (rc == 0) {
        FZ_CHECK(mag(v) <= (u128)max_abs, "result above max_abs");
        check_format_round_trip(v);
    }
    int64_t i = 5, ri = 5;
    rc = dec_parse_i64(b, n, &i);
    rr = ref_parse_i64(s, n, &ri);
    FZ_CHECK(rc == rr && (rc != 0 || i == ri), "dec_parse_i64 %d, reference %d: %.*s", rc, rr,
             (int)n, s);
    free(b);
    return 0;
}
