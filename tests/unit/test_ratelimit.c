/* Unit tests for src/ratelimit: burst then refusal, integer refill, headers in draft-10 syntax,
   IPv4/IPv6 separation, LRU eviction that never refuses a new client, a new policy (SIGHUP)
   that keeps what each client spent, and one table shared by threads (the workers): one
   client hammering it from every thread gets exactly one burst plus the refill. */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <pthread.h>
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

/* Recency has millisecond resolution (the bucket's last refill): these tests move the clock
   by 1 ms per client. One token a second: nobody refills within the 232 ms they cover. */
Test(ratelimit, lru_eviction_never_refuses_new_clients)
{
    struct rl_table *t = rl_new(16, 1, 1, 11);
    uint8_t a[16];
    struct rl_result r;
    uint64_t now = 0;
    /* 16 clients drain their bucket; client 100 is then touched again: the most recent */
    for (uint32_t i = 0; i < 16; i++) {
        v4(a, 100 + i);
        cr_assert_eq(rl_take(t, AF_INET, a, now++, &r), 1);
    }
    v4(a, 100);
    cr_assert_eq(rl_take(t, AF_INET, a, now++, &r), 0);
    /* 200 more clients: every one is admitted although the table holds 16 */
    for (uint32_t i = 0; i < 200; i++) {
        v4(a, 5000 + i);
        cr_assert_eq(rl_take(t, AF_INET, a, now++, &r), 1, "new client %u refused", i);
    }
    /* the most recent 16 are still remembered (and still empty) */
    for (uint32_t i = 200 - 16; i < 200; i++) {
        v4(a, 5000 + i);
        cr_assert_eq(rl_take(t, AF_INET, a, now, &r), 0, "client %u forgotten", i);
    }
    /* client 100 was evicted long ago (216 ms: not refilled): it comes back with a full bucket */
    v4(a, 100);
    cr_assert_eq(rl_take(t, AF_INET, a, now, &r), 1);
    rl_free(t);
}

Test(ratelimit, lru_keeps_the_recently_used)
{
    struct rl_table *t = rl_new(16, 1, 1, 13);
    uint8_t a[16];
    struct rl_result r;
    for (uint32_t i = 0; i < 16; i++) {
        v4(a, i);
        rl_take(t, AF_INET, a, i, &r);
    }
    v4(a, 0);
    rl_take(t, AF_INET, a, 16, &r); /* 0 is now the most recent; 1 the least */
    v4(a, 999);
    rl_take(t, AF_INET, a, 17, &r); /* evicts 1 */
    v4(a, 0);
    cr_assert_eq(rl_take(t, AF_INET, a, 18, &r), 0, "0 was evicted instead of 1");
    v4(a, 1);
    cr_assert_eq(rl_take(t, AF_INET, a, 18, &r), 1, "1 was not evicted");
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

/* ---- one table, several workers (SO_REUSEPORT spreads one client's connections) ---- */

#define MT_THREADS 4
#define MT_TRIES 20000

struct mt_arg {
    struct rl_table *t;
    pthread_barrier_t *go;
    uint64_t now;      /* the fixed clock of this phase */
    uint32_t first_ip; /* clients first_ip .. first_ip + nclients - 1, round robin */
    uint32_t nclients;
    unsigned allowed;
};

static void *mt_hammer(void *p)
{
    struct mt_arg *a = p;
    uint8_t addr[16];
    struct rl_result r;
    pthread_barrier_wait(a->go);
    for (uint32_t i = 0; i < MT_TRIES; i++) {
        v4(addr, a->first_ip + i % a->nclients);
        a->allowed += (unsigned)rl_take(a->t, AF_INET, addr, a->now, &r);
    }
    return NULL;
}

/* MT_THREADS threads, each running mt_hammer with args[i]; returns the sum of allowed. */
static unsigned mt_run(struct mt_arg *args)
{
    pthread_t th[MT_THREADS];
    pthread_barrier_t go;
    pthread_barrier_init(&go, NULL, MT_THREADS);
    unsigned sum = 0;
    for (int i = 0; i < MT_THREADS; i++) {
        args[i].go = &go;
        args[i].allowed = 0;
        cr_assert_eq(pthread_create(&th[i], NULL, mt_hammer, &args[i]), 0);
    }
    for (int i = 0; i < MT_THREADS; i++) {
        pthread_join(th[i], NULL);
        sum += args[i].allowed;
    }
    pthread_barrier_destroy(&go);
    return sum;
}

/* One bucket per client whatever thread asks: with a fixed clock, 4 threads x 20,000 takes of
   one client allow exactly the burst (per-worker tables allowed 4 bursts; an unsynchronised
   shared one loses updates), then 250 ms later exactly the refill (1000/s: 250 tokens). */
Test(ratelimit, threads_share_one_bucket_exactly)
{
    struct rl_table *t = rl_new(64, 1000, 1000, 21);
    cr_assert_not_null(t);
    struct mt_arg args[MT_THREADS];
    for (int i = 0; i < MT_THREADS; i++)
        args[i] = (struct mt_arg){.t = t, .now = 5000, .first_ip = 0x0a000001, .nclients = 1};
    cr_assert_eq(mt_run(args), 1000u, "one burst");
    for (int i = 0; i < MT_THREADS; i++)
        args[i].now = 5250;
    cr_assert_eq(mt_run(args), 250u, "the refill of 250 ms, once");
    rl_free(t);
}

/* Several clients at once from every thread: each gets exactly its burst. */
Test(ratelimit, threads_many_clients_each_one_burst)
{
    struct rl_table *t = rl_new(1024, 1, 100, 23);
    struct mt_arg args[MT_THREADS];
    for (int i = 0; i < MT_THREADS; i++)
        args[i] = (struct mt_arg){.t = t, .now = 777, .first_ip = 0xc0a80001, .nclients = 50};
    cr_assert_eq(mt_run(args), 50u * 100u);
    rl_free(t);
}

/* A table far too small, every thread bringing new clients: the first request of each is
   always allowed (eviction never refuses), nothing crashes or loops. */
Test(ratelimit, threads_evicting_never_refuse_a_new_client)
{
    struct rl_table *t = rl_new(16, 1, 1, 25);
    struct mt_arg args[MT_THREADS];
    for (int i = 0; i < MT_THREADS; i++)
        args[i] = (struct mt_arg){.t = t, .now = 1,
                                  .first_ip = 0x01000000u * (uint32_t)(i + 1),
                                  .nclients = MT_TRIES};
    cr_assert_eq(mt_run(args), (unsigned)(MT_THREADS * MT_TRIES));
    rl_free(t);
}

/* Every worker applies a reload: the same policy again changes nothing, and an answer prints
   the policy it was decided under even if a reload came in between. */
Test(ratelimit, same_policy_twice_and_headers_of_the_decision)
{
    struct rl_table *t = rl_new(16, 1, 10, 27);
    uint8_t a[16];
    v4(a, 42);
    struct rl_result r;
    for (int i = 0; i < 4; i++)
        rl_take(t, AF_INET, a, 0, &r);
    rl_set_policy(t, 2, 20);
    rl_set_policy(t, 2, 20); /* the second worker: a no-op */
    cr_assert_eq(rl_take(t, AF_INET, a, 0, &r), 1);
    cr_assert_eq(r.remaining, 15u, "20 - the 4 spent - this one, once");
    rl_set_policy(t, 1, 5);
    char hdr[RL_HDR_MAX];
    size_t n = rl_headers(t, &r, hdr, sizeof(hdr));
    cr_assert(n > 0 && strstr(hdr, "RateLimit-Policy: \"default\";q=20;w=10\r\n"), "%s", hdr);
    rl_free(t);
}
