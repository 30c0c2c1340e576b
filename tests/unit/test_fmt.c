/* Unit tests for src/fmt: decimal formatting of u64/i64 at every digit-count edge, the exact
   return length, and that nothing is written past it (callers append in place). */
#include <criterion/criterion.h>
#include <errno.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "fmt.h"

struct u64_case {
    uint64_t v;
    const char *want;
};

static const struct u64_case u64_cases[] = {
    {0, "0"},
    {1, "1"},
    {9, "9"},
    {10, "10"},
    {99, "99"},
    {100, "100"},
    {4294967295u, "4294967295"},
    {4294967296u, "4294967296"},
    {999999999999999999u, "999999999999999999"},
    {1000000000000000000u, "1000000000000000000"},
    {9999999999999999999u, "9999999999999999999"},
    {10000000000000000000u, "10000000000000000000"},
    {UINT64_MAX - 1, "18446744073709551614"},
    {UINT64_MAX, "18446744073709551615"},
};

struct i64_case {
    int64_t v;
    const char *want;
};

static const struct i64_case i64_cases[] = {
    {0, "0"},
    {1, "1"},
    {-1, "-1"},
    {9, "9"},
    {-9, "-9"},
    {10, "10"},
    {-10, "-10"},
    {INT32_MIN, "-2147483648"},
    {INT64_MAX, "9223372036854775807"},
    {INT64_MIN + 1, "-9223372036854775807"},
    {INT64_MIN, "-9223372036854775808"},
};

/* The output area is pre-filled with a sentinel: fmt must write exactly the returned bytes. */
static void check(size_t n, const char *buf, const char *want)
{
    size_t wl = strlen(want);
    cr_assert_eq(n, wl, "length %zu, want %zu for %s", n, wl, want);
    cr_assert(memcmp(buf, want, wl) == 0, "got %.*s, want %s", (int)n, buf, want);
    for (size_t i = wl; i < 32; i++)
        cr_assert_eq(buf[i], '#', "byte %zu past the number was written (%s)", i, want);
}

Test(fmt, u64_edges)
{
    for (size_t i = 0; i < sizeof(u64_cases) / sizeof(u64_cases[0]); i++) {
        char buf[32];
        memset(buf, '#', sizeof(buf));
        check(fmt_u64(buf, u64_cases[i].v), buf, u64_cases[i].want);
    }
}

Test(fmt, i64_edges)
{
    for (size_t i = 0; i < sizeof(i64_cases) / sizeof(i64_cases[0]); i++) {
        char buf[32];
        memset(buf, '#', sizeof(buf));
        check(fmt_i64(buf, i64_cases[i].v), buf, i64_cases[i].want);
    }
}

/* Every power of ten and its predecessor, against printf (an independent formatter). */
Test(fmt, powers_of_ten_match_printf)
{
    uint64_t p = 1;
    for (int k = 0; k < 20; k++, p *= 10) {
        uint64_t vals[2] = {p, p - 1};
        for (int j = 0; j < 2; j++) {
            char want[32], buf[32];
            snprintf(want, sizeof(want), "%" PRIu64, vals[j]);
            memset(buf, '#', sizeof(buf));
            check(fmt_u64(buf, vals[j]), buf, want);
            if (vals[j] <= (uint64_t)INT64_MAX) {
                int64_t neg = -(int64_t)vals[j];
                snprintf(want, sizeof(want), "%" PRId64, neg);
                memset(buf, '#', sizeof(buf));
                check(fmt_i64(buf, neg), buf, want);
            }
        }
    }
}

/* 128-bit: the extremes, zero, and a round trip through fmt_parse_i128 (the persister reads
   PostgreSQL's numeric sums back with it). */
Test(fmt, i128_round_trip)
{
    const __int128 max = (__int128)(((unsigned __int128)1 << 127) - 1), min = -max - 1;
    static const char *const want[] = {"170141183460469231731687303715884105727",
                                       "-170141183460469231731687303715884105728", "0", "-1",
                                       "1000000000000000000000000"};
    __int128 vals[] = {max, min, 0, -1, (__int128)1000000000000 * 1000000000000};
    for (size_t i = 0; i < sizeof(vals) / sizeof(vals[0]); i++) {
        char buf[48];
        memset(buf, '#', sizeof(buf));
        check(fmt_i128(buf, vals[i]), buf, want[i]);
        __int128 back = 42;
        cr_assert_eq(fmt_parse_i128(want[i], &back), 0, "%s", want[i]);
        cr_assert(back == vals[i], "%s did not round-trip", want[i]);
    }
    __int128 v = 7;
    cr_assert_eq(fmt_parse_i128("+12", &v), 0);
    cr_assert(v == 12);
    static const char *const bad[] = {"", "-", "+", "1.5", "12a", " 1", "--1"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        v = 7;
        cr_assert_eq(fmt_parse_i128(bad[i], &v), -EINVAL, "\"%s\"", bad[i]);
        cr_assert(v == 7, "\"%s\" left *out alone", bad[i]);
    }
}

/* The log's "ts" and the tenants' created_at (RFC 3339, UTC, ms). */
Test(fmt, time_ms)
{
    char buf[32];
    cr_assert_eq(fmt_time_ms(buf, 0), FMT_TIME_LEN);
    cr_assert_arr_eq(buf, "1970-01-01T00:00:00.000Z", 24);
    fmt_time_ms(buf, 951782400123ll); /* leap day 2000 */
    cr_assert_arr_eq(buf, "2000-02-29T00:00:00.123Z", 24);
    fmt_time_ms(buf, 1795000000999ll);
    cr_assert_arr_eq(buf, "2026-11-18T11:06:40.999Z", 24);
    fmt_time_ms(buf, -1); /* before the epoch: the last ms of 1969 */
    cr_assert_arr_eq(buf, "1969-12-31T23:59:59.999Z", 24);
}
