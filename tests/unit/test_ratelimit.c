/* Unit tests for src/ratelimit: burst then refusal, integer refill, headers in draft-10 syntax,
   IPv4/IPv6 separation, LRU eviction that never refuses a new client, a new policy (SIGHUP)
   that keeps what each client spent. */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <string.h>
#include <sys/socket.h>

#include "ratelimit.h"

static void v4(uint8_t a[16], uint32_t ip)
{
    memset(a, 0, 16);
    ip = htonl(ip);
    memcpy(a, &ip, 4);
}

Test(ratelimit, burst_then_refused_then_refill)
{
    struct rl_table *t = rl_new(64, 20, 100, 1);
    cr_assert_not_null(t);
    uint8_t a[16];
    v4(a, 0x7f000001);
    struct rl_result r;
    for (int i = 0; i < 100; i++) {
        cr_assert_eq(rl_take(t, AF_INET, a, 1000, &r), 1, "request %d", i);
        cr_assert_eq(r.remaining, 99u - (unsigned)i);
    }
    cr_assert_eq(rl_take(t, AF_INET, a, 1000, &r), 0);
    cr_assert_not(r.allowed);
    cr_assert_eq(r.retry_s, 1);  /* one token every 50 ms: rounded up to 1 s */
    cr_assert_eq(r.reset_s, 5);  /* 100 tokens at 20/s */
    /* 49 ms: still nothing; 50 ms: exactly one token */
    cr_assert_eq(rl_take(t, AF_INET, a, 1049, &r), 0);
    cr_assert_eq(rl_take(t, AF_INET, a, 1050, &r), 1);
    cr_assert_eq(rl_take(t, AF_INET, a, 1050, &r), 0);
    /* a long pause refills to the burst, never beyond */
    cr_assert_eq(rl_take(t, AF_INET, a, 1000000, &r), 1);
    cr_assert_eq(r.remaining, 99);
    /* a clock going backwards refills nothing */
    cr_assert_eq(rl_take(t, AF_INET, a, 10, &r), 1);
    cr_assert_eq(r.remaining, 98);
    rl_free(t);
}

Test(ratelimit, slow_rate_retry_after_seconds)
{
    struct rl_table *t = rl_new(16, 1, 2, 7);
    uint8_t a[16];
    v4(a, 1);
    struct rl_result r;
    cr_assert_eq(rl_take(t, AF_INET, a, 0, &r), 1);
    cr_assert_eq(rl_take(t, AF_INET, a, 0, &r), 1);
    cr_assert_eq(rl_take(t, AF_INET, a, 0, &r), 0);
    cr_assert_eq(r.retry_s, 1);
    cr_assert_eq(r.reset_s, 2);
    cr_assert_eq(rl_take(t, AF_INET, a, 999, &r), 0);
    cr_assert_eq(rl_take(t, AF_INET, a, 1000, &r), 1);
    rl_free(t);
}

Test(ratelimit, headers_draft10_syntax)
{
    struct rl_table *t = rl_new(16, 20, 100, 3);
    uint8_t a[16];
    v4(a, 2);
    struct rl_result r;
    char buf[RL_HDR_MAX];
    rl_take(t, AF_INET, a, 0, &r);
    size_t n = rl_headers(t, &r, buf, sizeof(buf));
    cr_assert_eq(n, strlen("RateLimit-Policy: \"default\";q=100;w=5\r\n"
                           "RateLimit: \"default\";r=99;t=1\r\n"));
    cr_assert_arr_eq(buf, "RateLimit-Policy: \"default\";q=100;w=5\r\nRateLimit: \"default\";r=99;t=1\r\n", n);
    for (int i = 0; i < 99; i++)
        rl_take(t, AF_INET, a, 0, &r);
    cr_assert_eq(rl_take(t, AF_INET, a, 0, &r), 0);
    n = rl_headers(t, &r, buf, sizeof(buf));
    const char *want = "RateLimit-Policy: \"default\";q=100;w=5\r\nRateLimit: \"default\";r=0;t=5\r\n"
                       "Retry-After: 1\r\n";
    cr_assert_eq(n, strlen(want));
    cr_assert_arr_eq(buf, want, n);
    cr_assert_eq(rl_headers(t, &r, buf, 10), 0);
    rl_free(t);
}

Test(ratelimit, families_and_addresses_are_separate)
{
    struct rl_table *t = rl_new(16, 1, 1, 9);
    uint8_t a[16] = {0}, b[16];
    v4(a, 0x0a000001);
    memcpy(b, a, 16); /* same bytes as IPv6 (::a00:1 prefix): a different client */
    struct rl_result r;
    cr_assert_eq(rl_take(t, AF_INET, a, 0, &r), 1);
    cr_assert_eq(rl_take(t, AF_INET, a, 0, &r), 0);
    cr_assert_eq(rl_take(t, AF_INET6, b, 0, &r), 1);
    uint8_t c[16];
    inet_pton(AF_INET6, "2001:db8::1", c);
    cr_assert_eq(rl_take(t, AF_INET6, c, 0, &r), 1);
    c[15] = 2;
    cr_assert_eq(rl_take(t, AF_INET6, c, 0, &r), 1);
    c[15] = 1;
    cr_assert_eq(rl_take(t, AF_INET6, c, 0, &r), 0);
    rl_free(t);
}

Test(ratelimit, lru_eviction_never_refuses_new_clients)
{
    struct rl_table *t = rl_new(16, 1, 1, 11);
    uint8_t a[16];
    struct rl_result r;
    /* 16 clients drain their bucket; client 0 stays recently used */
    for (uint32_t i = 0; i < 16; i++) {
        v4(a, 100 + i);
        cr_assert_eq(rl_take(t, AF_INET, a, 0, &r), 1);
    }
    v4(a, 100);
    cr_assert_eq(rl_take(t, AF_INET, a, 0, &r), 0); /* touched: most recent */
    /* 1000 more clients: every one is admitted although the table holds 16 */
    for (uint32_t i = 0; i < 1000; i++) {
        v4(a, 5000 + i);
        cr_assert_eq(rl_take(t, AF_INET, a, 0, &r), 1, "new client %u refused", i);
    }
    /* the most recent 16 are still remembered (and still empty) */
    for (uint32_t i = 1000 - 16; i < 1000; i++) {
        v4(a, 5000 + i);
        cr_assert_eq(rl_take(t, AF_INET, a, 0, &r), 0, "client %u forgotten", i);
    }
    /* client 100 was evicted long ago: it comes back with a fresh bucket */
    v4(a, 100);
    cr_assert_eq(rl_take(t, AF_INET, a, 0, &r), 1);
    rl_free(t);
}

Test(ratelimit, lru_keeps_the_recently_used)
{
    struct rl_table *t = rl_new(16, 1, 1, 13);
    uint8_t a[16];
    struct rl_result r;
    for (uint32_t i = 0; i < 16; i++) {
        v4(a, i);
        rl_take(t, AF_INET, a, 0, &r);
    }
    v4(a, 0);
    rl_take(t, AF_INET, a, 0, &r); /* 0 is now the most recent; 1 the least */
    v4(a, 999);
    rl_take(t, AF_INET, a, 0, &r); /* evicts 1 */
    v4(a, 0);
    cr_assert_eq(rl_take(t, AF_INET, a, 0, &r), 0, "0 was evicted instead of 1");
    v4(a, 1);
    cr_assert_eq(rl_take(t, AF_INET, a, 0, &r), 1, "1 was not evicted");
    rl_free(t);
}

Test(ratelimit, peek_takes_nothing)
{
    struct rl_table *t = rl_new(16, 1, 2, 17);
    uint8_t a[16];
    v4(a, 77);
    struct rl_result r;
    for (int i = 0; i < 5; i++) {
        cr_assert_eq(rl_peek(t, AF_INET, a, 0, &r), 1);
        cr_assert_eq(r.remaining, 2);
    }
    cr_assert_eq(rl_take(t, AF_INET, a, 0, &r), 1);
    cr_assert_eq(rl_take(t, AF_INET, a, 0, &r), 1);
    cr_assert_eq(rl_peek(t, AF_INET, a, 0, &r), 0);
    cr_assert_eq(r.remaining, 0);
    cr_assert_eq(r.retry_s, 1);
    rl_free(t);
}

Test(ratelimit, bad_arguments)
{
    cr_assert_null(rl_new(16, 0, 1, 0));
    cr_assert_null(rl_new(16, 1, 0, 0));
    cr_assert_null(rl_new((1u << 24) + 1, 1, 1, 0));
}

/* SPEC §2.3, on SIGHUP: a reload changes rate and burst; clients keep what they spent of the
   old burst. */
Test(ratelimit, new_policy_keeps_what_each_client_spent)
{
    struct rl_table *t = rl_new(64, 1, 3, 5);
    cr_assert_not_null(t);
    uint8_t a[16], b[16];
    v4(a, 10);
    v4(b, 11);
    struct rl_result r;
    for (int i = 0; i < 3; i++)
        cr_assert_eq(rl_take(t, AF_INET, a, 1000, &r), 1);
    cr_assert_eq(rl_take(t, AF_INET, a, 1000, &r), 0, "a spent its burst of 3");
    cr_assert_eq(rl_take(t, AF_INET, b, 1000, &r), 1, "b spent 1");

    rl_set_policy(t, 1000, 5000);
    cr_assert_eq(rl_take(t, AF_INET, a, 1000, &r), 1, "raised: a may go on");
    cr_assert_eq(r.remaining, 4996u, "5000 - the 3 spent - this one");
    cr_assert_eq(rl_take(t, AF_INET, b, 1000, &r), 1);
    cr_assert_eq(r.remaining, 4998u);
    char hdr[RL_HDR_MAX];
    size_t n = rl_headers(t, &r, hdr, sizeof(hdr));
    cr_assert(n > 0 && strstr(hdr, "RateLimit-Policy: \"default\";q=5000;w=5\r\n"), "%s", hdr);

    for (int i = 0; i < 10; i++)
        cr_assert_eq(rl_take(t, AF_INET, b, 1000, &r), 1);
    /* lowered below what b spent (12): b has nothing left, refills at the new rate */
    rl_set_policy(t, 1, 2);
    cr_assert_eq(rl_take(t, AF_INET, b, 1000, &r), 0);
    cr_assert_eq(r.reset_s, 2);
    cr_assert_eq(rl_take(t, AF_INET, b, 2000, &r), 1, "one token a second");
    cr_assert_eq(rl_take(t, AF_INET, a, 1000, &r), 0, "a spent 4 > 2");
    /* a new client starts with the new burst */
    uint8_t c[16];
    v4(c, 12);
    cr_assert_eq(rl_take(t, AF_INET, c, 1000, &r), 1);
    cr_assert_eq(r.remaining, 1u);
    /* invalid policies change nothing */
    rl_set_policy(t, 0, 5);
    rl_set_policy(t, 5, 0);
    n = rl_headers(t, &r, hdr, sizeof(hdr));
    cr_assert(strstr(hdr, "q=2;w=2"), "%s", hdr);
    rl_free(t);
}
