/* Unit tests for src/decimal: parsing (grammar, rounding, exponents, bounds), formatting,
   round trips, half-even division, int64 parsing. */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "decimal.h"

#define E15 ((dec_t)1000000000000000LL * DEC_SCALE) /* 1e15 in micro-units: the /event bound */
#define E18 ((dec_t)1000000000000000000LL)

/* Decimal text of a dec_t computed independently of dec_format (plain digit loop). */
static const char *i128_str(dec_t v, char *buf)
{
    unsigned __int128 u = v < 0 ? -(unsigned __int128)v : (unsigned __int128)v;
    char tmp[48];
    int k = 0, n = 0;
    do {
        tmp[k++] = (char)('0' + (int)(u % 10));
        u /= 10;
    } while (u);
    if (v < 0)
        buf[n++] = '-';
    while (k)
        buf[n++] = tmp[--k];
    buf[n] = '\0';
    return buf;
}

struct parse_case {
    const char *in;
    dec_t max_abs; /* 0: use E15 */
    int rc;
    dec_t want; /* micro-units */
};

static const struct parse_case parse_cases[] = {
    /* plain values */
    {"0", 0, 0, 0},
    {"-0", 0, 0, 0},
    {"-0.0e5", 0, 0, 0},
    {"1", 0, 0, 1000000},
    {"-1", 0, 0, -1000000},
    {"0.5", 0, 0, 500000},
    {"499.5", 0, 0, 499500000},
    {"123.456789", 0, 0, 123456789},
    {"-123.456789", 0, 0, -123456789},
    {"500000000", 0, 0, (dec_t)500000000 * DEC_SCALE},
    {"0.000001", 0, 0, 1},
    {"-0.000001", 0, 0, -1},
    /* exponents */
    {"1e6", 0, 0, (dec_t)1000000 * DEC_SCALE},
    {"1E6", 0, 0, (dec_t)1000000 * DEC_SCALE},
    {"1e+6", 0, 0, (dec_t)1000000 * DEC_SCALE},
    {"1e-6", 0, 0, 1},
    {"1E-00001", 0, 0, 100000},
    {"25e-1", 0, 0, 2500000},
    {"0.025e2", 0, 0, 2500000},
    {"123456789e-9", 0, 0, 123457},   /* 0.123456|789 rounds up */
    {"123456789e-12", 0, 0, 123},     /* 0.000123|456789 */
    {"123456789e-15", 0, 0, 0},       /* 0.000000|123456789 */
    {"1e-7", 0, 0, 0},
    {"-1e-7", 0, 0, 0},
    {"0e999999999", 0, 0, 0},
    {"0.000e-99999999999999999999999", 0, 0, 0},
    {"1e-999999999", 0, 0, 0},
    {"1e-99999999999999999999999999999999", 0, 0, 0},
    {"1e999999999", 0, -ERANGE, 0},
    {"1e99999999999999999999999999999999", 0, -ERANGE, 0},
    {"-1e999999999", 0, -ERANGE, 0},
    /* half-to-even on the 7th digit, every further digit counts */
    {"0.0000005", 0, 0, 0},
    {"0.0000015", 0, 0, 2},
    {"0.0000025", 0, 0, 2},
    {"0.0000035", 0, 0, 4},
    {"-0.0000015", 0, 0, -2},
    {"-0.0000025", 0, 0, -2},
    {"0.0000005000001", 0, 0, 1},
    {"0.00000050000000000000000000000000000000000000001", 0, 0, 1},
    {"0.0000004999999999999999999999", 0, 0, 0},
    {"0.0000014999999", 0, 0, 1},
    {"5e-7", 0, 0, 0},
    {"15e-7", 0, 0, 2},
    {"25e-7", 0, 0, 2},
    {"5.000001e-7", 0, 0, 1},
    {"0.1234565", 0, 0, 123456},
    {"0.1234575", 0, 0, 123458},
    {"0.12345650000000000001", 0, 0, 123457},
    {"-0.1234565", 0, 0, -123456},
    {"0.9999995", 0, 0, 1000000}, /* carry into the integer part */
    {"999999.9999999", 0, 0, (dec_t)1000000 * DEC_SCALE},
    /* the 1e15 bound is on the exact value */
    {"1e15", 0, 0, E15},
    {"-1e15", 0, 0, -E15},
    {"1000000000000000", 0, 0, E15},
    {"1000000000000000.000000", 0, 0, E15},
    {"1000000000000000.0000000000", 0, 0, E15},
    {"1000000000000000.0000001", 0, -ERANGE, 0},
    {"1000000000000000.0000004", 0, -ERANGE, 0},
    {"-1000000000000000.0000001", 0, -ERANGE, 0},
    {"1.0000001e15", 0, -ERANGE, 0},
    {"1000000000000001", 0, -ERANGE, 0},
    {"999999999999999.9999994", 0, 0, E15 - 1},
    {"999999999999999.9999995", 0, 0, E15}, /* rounds up onto the bound: allowed */
    {"1e16", 0, -ERANGE, 0},
    {"0.1e16", 0, 0, E15},
    {"0.1e17", 0, -ERANGE, 0},
    /* bounds other than 1e15 */
    {"0", 1, 0, 0},
    {"0.000001", 1, 0, 1},
    {"0.0000011", 1, -ERANGE, 0},
    {"0.000002", 1, -ERANGE, 0},
    {"170141183460469231731687303715884.105727", DEC_MAX, 0, DEC_MAX},
    {"-170141183460469231731687303715884.105727", DEC_MAX, 0, -DEC_MAX},
    {"170141183460469231731687303715884.1057270000001", DEC_MAX, -ERANGE, 0},
    {"170141183460469231731687303715884.105728", DEC_MAX, -ERANGE, 0},
    {"-170141183460469231731687303715884.105728", DEC_MAX, -ERANGE, 0},
    {"1e32", DEC_MAX, 0, E18 * E18 * 100},
    {"1e33", DEC_MAX, -ERANGE, 0},
    {"1e40", DEC_MAX, -ERANGE, 0},
    {"340282366920938463463374607431768211456", DEC_MAX, -ERANGE, 0},
    {"99999999999999999999999999999999999999999999999999", DEC_MAX, -ERANGE, 0},
    /* not JSON numbers */
    {"", 0, -EINVAL, 0},
    {"-", 0, -EINVAL, 0},
    {"+1", 0, -EINVAL, 0},
    {".5", 0, -EINVAL, 0},
    {"-.5", 0, -EINVAL, 0},
    {"1.", 0, -EINVAL, 0},
    {"1.e5", 0, -EINVAL, 0},
    {"1e", 0, -EINVAL, 0},
    {"1e+", 0, -EINVAL, 0},
    {"1e-", 0, -EINVAL, 0},
    {"01", 0, -EINVAL, 0},
    {"-01", 0, -EINVAL, 0},
    {"00", 0, -EINVAL, 0},
    {"00.5", 0, -EINVAL, 0},
    {"1.5.2", 0, -EINVAL, 0},
    {"1e5e5", 0, -EINVAL, 0},
    {" 1", 0, -EINVAL, 0},
    {"1 ", 0, -EINVAL, 0},
    {"0x10", 0, -EINVAL, 0},
    {"--1", 0, -EINVAL, 0},
    {"1_000", 0, -EINVAL, 0},
    {"NaN", 0, -EINVAL, 0},
    {"Infinity", 0, -EINVAL, 0},
    {"-Infinity", 0, -EINVAL, 0},
    {"1e999999999x", 0, -EINVAL, 0}, /* grammar is checked before range */
};

Test(dec_parse, table)
{
    char a[DEC_FMT_MAX], b[DEC_FMT_MAX];
    for (size_t i = 0; i < sizeof parse_cases / sizeof parse_cases[0]; i++) {
        const struct parse_case *c = &parse_cases[i];
        dec_t got = 12345; /* sentinel: must not be touched on error */
        int rc = dec_parse(c->in, strlen(c->in), c->max_abs ? c->max_abs : E15, &got);
        cr_expect_eq(rc, c->rc, "dec_parse(\"%s\") rc=%d want %d", c->in, rc, c->rc);
        if (rc == 0 && c->rc == 0)
            cr_expect(got == c->want, "dec_parse(\"%s\") = %s want %s", c->in, i128_str(got, a),
                      i128_str(c->want, b));
        if (rc != 0)
            cr_expect(got == 12345, "dec_parse(\"%s\") wrote *out on error", c->in);
    }
}

/* Exactly n bytes are parsed: the byte after the number must not be read as part of it. */
Test(dec_parse, uses_exactly_n_bytes)
{
    dec_t v;
    cr_assert_eq(dec_parse("12345", 2, E15, &v), 0);
    cr_assert(v == 12 * DEC_SCALE);
    cr_assert_eq(dec_parse("1.5e3", 3, E15, &v), 0);
    cr_assert(v == 1500000);
    cr_assert_eq(dec_parse("1.", 2, E15, &v), -EINVAL);
}

/* A huge number of digits is bounded by the input length, not by the exponent. */
Test(dec_parse, long_inputs)
{
    static char buf[70000];
    dec_t v;
    size_t n;

    /* 0.000...0001 with 65000 zeros: rounds to 0 */
    n = 0;
    buf[n++] = '0';
    buf[n++] = '.';
    memset(buf + n, '0', 65000);
    n += 65000;
    buf[n++] = '1';
    cr_assert_eq(dec_parse(buf, n, E15, &v), 0);
    cr_assert(v == 0);

    /* 0.0000005 followed by 65000 zeros then 1: above the half, rounds up */
    memcpy(buf, "0.0000005", 9);
    memset(buf + 9, '0', 65000);
    buf[9 + 65000] = '1';
    cr_assert_eq(dec_parse(buf, 9 + 65001, E15, &v), 0);
    cr_assert(v == 1);
    /* ... and exactly the half with all those zeros: even, rounds down */
    cr_assert_eq(dec_parse(buf, 9 + 65000, E15, &v), 0);
    cr_assert(v == 0);

    /* 1 followed by 65000 zeros, with e-65000: exactly 1 */
    buf[0] = '1';
    memset(buf + 1, '0', 65000);
    memcpy(buf + 65001, "e-65000", 7);
    cr_assert_eq(dec_parse(buf, 65008, E15, &v), 0);
    cr_assert(v == DEC_SCALE);
    /* without the exponent: far too large */
    cr_assert_eq(dec_parse(buf, 65001, DEC_MAX, &v), -ERANGE);
}

struct fmt_case {
    dec_t v;
    const char *want;
};

Test(dec_format, table)
{
    const struct fmt_case cases[] = {
        {0, "0"},
        {1, "0.000001"},
        {-1, "-0.000001"},
        {10, "0.00001"},
        {100000, "0.1"},
        {-1500000, "-1.5"},
        {1000000, "1"},
        {-1000000, "-1"},
        {1000001, "1.000001"},
        {1234567, "1.234567"},
        {499500000, "499.5"},
        {(dec_t)500000000 * DEC_SCALE, "500000000"},
        {E15, "1000000000000000"},
        {-E15 - 1, "-1000000000000000.000001"},
        {E18 * 10 * DEC_SCALE, "10000000000000000000"},             /* 1e19: crosses a chunk */
        {E18 * 10 * DEC_SCALE + DEC_SCALE, "10000000000000000001"}, /* zero padding inside */
        {E18 * E18, "1000000000000000000000000000000"},
        {DEC_MAX, "170141183460469231731687303715884.105727"},
        {-DEC_MAX, "-170141183460469231731687303715884.105727"},
        {DEC_MIN, "-170141183460469231731687303715884.105728"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char buf[DEC_FMT_MAX];
        memset(buf, 'x', sizeof buf);
        size_t n = dec_format(cases[i].v, buf);
        cr_expect_str_eq(buf, cases[i].want);
        cr_expect_eq(n, strlen(cases[i].want), "length of %s", cases[i].want);
    }
}

static uint64_t xorshift(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *s = x;
}

/* dec_parse(dec_format(v)) == v, over magnitudes from 1 micro to 2^127-1. */
Test(dec_format, roundtrip)
{
    uint64_t seed = 0x9E3779B97F4A7C15ULL;
    const dec_t fixed[] = {0, 1, -1, DEC_MAX, -DEC_MAX, E15, -E15, 999999, 1000000};
    for (size_t i = 0; i < 20000 + sizeof fixed / sizeof fixed[0]; i++) {
        dec_t v;
        if (i < sizeof fixed / sizeof fixed[0]) {
            v = fixed[i];
        } else {
            unsigned __int128 u = (unsigned __int128)xorshift(&seed) << 64 | xorshift(&seed);
            u >>= 1 + xorshift(&seed) % 127; /* spread over all magnitudes */
            v = (xorshift(&seed) & 1) ? -(dec_t)u : (dec_t)u;
        }
        char buf[DEC_FMT_MAX], a[48], b[48];
        size_t n = dec_format(v, buf);
        cr_assert_lt(n, DEC_FMT_MAX);
        dec_t back;
        int rc = dec_parse(buf, n, DEC_MAX, &back);
        cr_assert_eq(rc, 0, "parse(\"%s\") rc=%d", buf, rc);
        cr_assert(back == v, "roundtrip %s -> %s -> %s", i128_str(v, a), buf, i128_str(back, b));
        /* shortest: no trailing zero after a point, no point without fraction */
        if (memchr(buf, '.', n))
            cr_assert(buf[n - 1] != '0' && buf[n - 1] != '.', "not shortest: %s", buf);
    }
}

struct div_case {
    dec_t num;
    uint64_t den;
    dec_t want;
};

Test(dec_div_round, table)
{
    const struct div_case cases[] = {
        {0, 5, 0},
        {10, 4, 2}, /* 2.5 -> 2 */
        {14, 4, 4}, /* 3.5 -> 4 */
        {-10, 4, -2},
        {-14, 4, -4},
        {5, 2, 2},
        {7, 2, 4},
        {1, 3, 0},
        {2, 3, 1},
        {-2, 3, -1},
        {11, 4, 3}, /* 2.75 */
        {9, 4, 2},  /* 2.25 */
        {999000000, 2, 499500000},
        {DEC_MAX, 1, DEC_MAX},
        {DEC_MIN, 1, DEC_MIN},
        {DEC_MIN, 2, DEC_MIN / 2},
        {DEC_MAX, 2, DEC_MAX / 2 + 1}, /* ...5 with odd quotient: up to even */
        /* den near 2^64: 2*remainder must not overflow */
        {(dec_t)UINT64_MAX * 3 + UINT64_MAX / 2, UINT64_MAX, 3},
        {(dec_t)UINT64_MAX * 3 + UINT64_MAX / 2 + 1, UINT64_MAX, 4},
        {-((dec_t)UINT64_MAX * 3 + UINT64_MAX / 2 + 1), UINT64_MAX, -4},
        {(dec_t)1 << 100, UINT64_MAX, ((dec_t)1 << 36) + 0}, /* 2^100/(2^64-1) = 2^36 + tiny */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char a[48], b[48];
        dec_t got = dec_div_round(cases[i].num, cases[i].den);
        cr_expect(got == cases[i].want, "case %zu: got %s want %s", i, i128_str(got, a),
                  i128_str(cases[i].want, b));
    }
}

struct i64_case {
    const char *in;
    int rc;
    int64_t want;
};

Test(dec_parse_i64, table)
{
    const struct i64_case cases[] = {
        {"0", 0, 0},
        {"-0", 0, 0},
        {"7", 0, 7},
        {"-7", 0, -7},
        {"50", 0, 50},
        {"9223372036854775807", 0, INT64_MAX},
        {"-9223372036854775808", 0, INT64_MIN},
        {"9223372036854775808", -ERANGE, 0},
        {"-9223372036854775809", -ERANGE, 0},
        {"18446744073709551616", -ERANGE, 0},
        {"99999999999999999999999999", -ERANGE, 0},
        {"99999999999999999999999999x", -EINVAL, 0},
        {"", -EINVAL, 0},
        {"-", -EINVAL, 0},
        {"+1", -EINVAL, 0},
        {"01", -EINVAL, 0},
        {"-01", -EINVAL, 0},
        {"00", -EINVAL, 0},
        {"1.0", -EINVAL, 0},
        {"1e3", -EINVAL, 0},
        {" 1", -EINVAL, 0},
        {"1 ", -EINVAL, 0},
        {"0x1", -EINVAL, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int64_t got = 424242;
        int rc = dec_parse_i64(cases[i].in, strlen(cases[i].in), &got);
        cr_expect_eq(rc, cases[i].rc, "\"%s\": rc=%d want %d", cases[i].in, rc, cases[i].rc);
        if (cases[i].rc == 0)
            cr_expect_eq(got, cases[i].want, "\"%s\"", cases[i].in);
        else
            cr_expect_eq(got, 424242, "\"%s\" wrote *out on error", cases[i].in);
    }
}
