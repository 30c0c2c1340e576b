/* Unit tests for src/cors: list parsing, matching, preflight and actual-answer fields. */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "cors.h"

#define S(x) x, strlen(x)

Test(cors, off_by_default)
{
    struct cors_conf c;
    cr_assert_eq(cors_init(&c, ""), 0);
    cr_assert_not(c.enabled);
    cr_assert_not(cors_allowed(&c, S("https://a.example")));
    char buf[CORS_HDR_MAX];
    cr_assert_eq(cors_actual(&c, S("https://a.example"), buf, sizeof(buf)), 0);
    cr_assert_eq(cors_preflight(&c, S("https://a.example"), "GET", buf, sizeof(buf)), 0);
}

Test(cors, list_matching)
{
    struct cors_conf c;
    cr_assert_eq(cors_init(&c, "https://a.example,http://b.example:8080, https://c.example "), 0);
    static const struct { const char *o; bool ok; } cases[] = {
        {"https://a.example", true},
        {"HTTPS://A.EXAMPLE", true},
        {"http://b.example:8080", true},
        {"https://c.example", true},
        {"http://a.example", false},
        {"https://a.example.evil", false},
        {"https://a.exampl", false},
        {"http://b.example", false},
        {"null", false},
        {"", false},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        cr_assert_eq(cors_allowed(&c, S(cases[i].o)), cases[i].ok, "%s", cases[i].o);
    cr_assert_not(cors_allowed(&c, NULL, 0));
}

Test(cors, echo_with_vary)
{
    struct cors_conf c;
    cors_init(&c, "https://a.example");
    char buf[CORS_HDR_MAX];
    size_t n = cors_actual(&c, S("https://a.example"), buf, sizeof(buf));
    const char *want = "Access-Control-Allow-Origin: https://a.example\r\nVary: Origin\r\n"
                       "Access-Control-Expose-Headers: RateLimit, RateLimit-Policy, Retry-After\r\n";
    cr_assert_eq(n, strlen(want));
    cr_assert_arr_eq(buf, want, n);
    n = cors_preflight(&c, S("https://a.example"), "GET, POST, OPTIONS", buf, sizeof(buf));
    want = "Access-Control-Allow-Origin: https://a.example\r\nVary: Origin\r\n"
           "Access-Control-Allow-Methods: GET, POST, OPTIONS\r\n"
           "Access-Control-Allow-Headers: Content-Type, Idempotency-Key\r\n"
           "Access-Control-Max-Age: 600\r\n";
    cr_assert_eq(n, strlen(want));
    cr_assert_arr_eq(buf, want, n);
    cr_assert_eq(cors_preflight(&c, S("https://b.example"), "GET", buf, sizeof(buf)), 0);
}

Test(cors, star)
{
    struct cors_conf c;
    cors_init(&c, "*");
    cr_assert(c.any);
    char buf[CORS_HDR_MAX];
    size_t n = cors_actual(&c, S("https://anything.example"), buf, sizeof(buf));
    cr_assert_eq(strncmp(buf, "Access-Control-Allow-Origin: *\r\nAccess-Control-Expose", 53), 0);
    cr_assert_null(memmem(buf, n, "Vary", 4));
    /* a request without Origin is not a CORS request: nothing to add */
    cr_assert_eq(cors_actual(&c, NULL, 0, buf, sizeof(buf)), 0);
}

Test(cors, too_many_origins)
{
    char spec[CORS_SPEC_MAX] = "", *p = spec;
    for (int i = 0; i <= CORS_MAX_ORIGINS; i++)
        p += sprintf(p, "%shttp://h%d.example", i ? "," : "", i);
    struct cors_conf c;
    cr_assert_eq(cors_init(&c, spec), -EINVAL);
    char big[CORS_SPEC_MAX + 8];
    memset(big, 'a', sizeof(big) - 1);
    big[sizeof(big) - 1] = 0;
    cr_assert_eq(cors_init(&c, big), -EINVAL);
}

/* The fields of an actual answer fit CORS_ACTUAL_MAX for the longest accepted origin (a session
   keeps them for a parked answer), and a smaller buffer gets nothing rather than a cut line. */
Test(cors, actual_fields_fit_their_bound)
{
    struct cors_conf c;
    cr_assert_eq(cors_init(&c, "*"), 0);
    char origin[CORS_ORIGIN_MAX + 1];
    memset(origin, 'a', CORS_ORIGIN_MAX);
    memcpy(origin, "https://", 8);
    origin[CORS_ORIGIN_MAX] = 0;
    struct cors_conf l;
    cr_assert_eq(cors_init(&l, origin), 0);
    char buf[CORS_ACTUAL_MAX];
    size_t n = cors_actual(&l, origin, CORS_ORIGIN_MAX, buf, sizeof(buf));
    cr_assert_gt(n, CORS_ORIGIN_MAX);
    cr_assert_leq(n, CORS_ACTUAL_MAX);
    cr_assert_eq(cors_actual(&l, origin, CORS_ORIGIN_MAX, buf, sizeof(buf) - 1), 0);
    cr_assert_eq(cors_actual(&l, origin, CORS_ORIGIN_MAX + 1, buf, sizeof(buf)), 0, "too long");
    cr_assert_gt(cors_actual(&c, S("https://x.example"), buf, sizeof(buf)), 0);
}
