/* Fault-injection tests (SPEC §3), loopback only and bounded in time: slowloris heads and slow
   bodies cut at their deadlines while another client keeps normal latency; fd exhaustion (low
   RLIMIT_NOFILE, 1000 connection attempts) without spinning, and recovery; provided-buffer
   exhaustion and CQ overflow with tiny rings, counts exact; 10,000 pipelined requests from a
   client that does not read (bounded memory, others served, every answer in order afterwards);
   RSS with 10,000 idle connections and under a flood of distinct userIds past --max-users.
   The RSS bounds are the ones README "Limits and guarantees" states; they are asserted on the
   plain build (under ASan, shadow memory and the 256 MiB free quarantine make RSS meaningless:
   the same scenarios run and every functional check still applies). */
#include <criterion/criterion.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "harness.h"

TestSuite(faults, .timeout = 120);

/* ------------------------------------------------------------------ process figures */

/* VmRSS of pid in KiB, or -1. */
static long rss_kib(pid_t pid)
{
    char path[64], line[256];
    snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    long v = -1;
    while (fgets(line, sizeof(line), f))
        if (sscanf(line, "VmRSS: %ld kB", &v) == 1)
            break;
    fclose(f);
    return v;
}

/* utime + stime of pid in clock ticks, or -1. */
static long cpu_ticks(pid_t pid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    const char *p = strrchr(buf, ')'); /* comm may hold spaces */
    unsigned long ut, st;
    if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) != 2)
        return -1;
    return (long)(ut + st);
}

/* Is pid an ASan build (RSS bounds do not apply)? */
static bool is_asan(pid_t pid)
{
    char path[64], line[512];
    snprintf(path, sizeof(path), "/proc/%d/maps", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return false;
    bool yes = false;
    while (!yes && fgets(line, sizeof(line), f))
        yes = strstr(line, "libasan") != NULL;
    fclose(f);
    return yes;
}

/* Raise this process's soft RLIMIT_NOFILE to want (up to the hard limit). Returns the result. */
static unsigned long raise_nofile(unsigned long want)
{
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    if (rl.rlim_cur < want) {
        /* Raising the hard limit needs CAP_SYS_RESOURCE (CI runs as root, where a skip fails
           the run); without it, go as far as the hard limit. */
        struct rlimit up = {want, rl.rlim_max > want ? rl.rlim_max : want};
        if (setrlimit(RLIMIT_NOFILE, &up) < 0) {
            rl.rlim_cur = want < rl.rlim_max ? want : rl.rlim_max;
            setrlimit(RLIMIT_NOFILE, &rl);
        }
        getrlimit(RLIMIT_NOFILE, &rl);
    }
    return rl.rlim_cur;
}

static void sleep_ms(unsigned ms)
{
    usleep(ms * 1000u);
}

/* ------------------------------------------------------------------ helpers (main thread) */

static void stop_ok(struct it_server *s)
{
    int rc = it_stop(s);
    char out[4096];
    it_log_copy(s, out, sizeof(out));
    cr_expect_eq(rc, 0, "server exit status %d after SIGTERM; output tail:\n%s", rc, out);
    it_free(s);
}

static void send_ok(int fd, const void *p, size_t n)
{
    int rc = it_send_all(fd, p, n);
    cr_assert_eq(rc, 0, "send: %s", strerror(-rc));
}

/* A POST /event for (user, value) into buf. Returns its length. */
static size_t event_req(char *buf, size_t cap, const char *user, const char *value)
{
    char body[128];
    int bl = snprintf(body, sizeof(body), "{\"userId\":\"%s\",\"value\":%s}", user, value);
    return (size_t)snprintf(buf, cap,
                            "POST /event HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n%s", bl,
                            body);
}

static const char HEALTH[] = "GET /health HTTP/1.1\r\nHost: t\r\n\r\n";

/* GET /stats on c: totalRequests, uniqueUsers and usersOverflow (any may be NULL), sum text. */
static void get_stats(struct it_conn *c, uint64_t *total, uint64_t *users, uint64_t *overflow,
                      char *sum, size_t sumcap)
{
    static struct it_resp r;
    int rc = it_request(c, "GET /stats HTTP/1.1\r\nHost: t\r\n\r\n", &r);
    cr_assert_eq(rc, 0, "GET /stats: %s", strerror(-rc));
    cr_assert_eq(r.status, 200, "GET /stats: %d %s", r.status, r.body);
    if (total)
        cr_assert_eq(it_json_u64(r.body, "totalRequests", total), 0, "%s", r.body);
    if (users)
        cr_assert_eq(it_json_u64(r.body, "uniqueUsers", users), 0, "%s", r.body);
    if (overflow)
        cr_assert_eq(it_json_u64(r.body, "usersOverflow", overflow), 0, "%s", r.body);
    if (sum)
        cr_assert_gt(it_json_num(r.body, "sum", sum, sumcap), 0, "%s", r.body);
}

/* ------------------------------------------------------------------ the well-behaved client */

/* Keeps sending GET /health on one keep-alive connection (every 20 ms) and records latencies,
   while a fault is going on elsewhere. Runs in its own thread: no assertions there. */
struct prober {
    uint16_t port;
    volatile int stop;
    unsigned n, failures;
    unsigned lat_ms[4096];
};

static void *prober_main(void *arg)
{
    struct prober *p = arg;
    struct it_conn *c = malloc(sizeof(*c));
    struct it_resp *r = malloc(sizeof(*r));
    if (!c || !r || it_conn_open(c, p->port) < 0) {
        p->failures++;
        goto out;
    }
    while (!p->stop) {
        uint64_t t0 = it_now_ms();
        int rc = it_request(c, HEALTH, r);
        uint64_t ms = it_now_ms() - t0;
        if (rc != 0 || r->status != 200) {
            p->failures++;
            it_conn_close(c);
            if (it_conn_open(c, p->port) < 0)
                break;
        } else if (p->n < sizeof(p->lat_ms) / sizeof(p->lat_ms[0])) {
            p->lat_ms[p->n++] = (unsigned)ms;
        }
        usleep(20000);
    }
    it_conn_close(c);
out:
    free(c);
    free(r);
    return NULL;
}

static int cmp_u(const void *a, const void *b)
{
    unsigned x = *(const unsigned *)a, y = *(const unsigned *)b;
    return x < y ? -1 : x > y;
}

/* Stop the prober and check it was served all along with normal latency. A loopback /health
   takes < 1 ms; a server held up by the slow clients would make most answers wait for their
   2 s deadline. Bounds: median 50 ms, 90th percentile 250 ms; the worst case (3 s) only
   catches a lost request, because on a 2-core machine the test running in parallel (10,000
   connects, a user flood) can stall one answer for over a second. */
static void prober_check(pthread_t th, struct prober *p, unsigned min_requests, const char *what)
{
    p->stop = 1;
    pthread_join(th, NULL);
    cr_expect_eq(p->failures, 0, "%s: the other client saw %u failures", what, p->failures);
    cr_expect_geq(p->n, min_requests, "%s: the other client got only %u answers", what, p->n);
    if (p->n == 0)
        return;
    qsort(p->lat_ms, p->n, sizeof(p->lat_ms[0]), cmp_u);
    unsigned p50 = p->lat_ms[p->n / 2], p90 = p->lat_ms[p->n * 9 / 10], max = p->lat_ms[p->n - 1];
    cr_log_info("%s: other client %u requests, p50 %u ms, p90 %u ms, max %u ms", what, p->n, p50,
                p90, max);
    cr_expect_leq(p50, 50, "%s: median latency %u ms for the other client", what, p50);
    cr_expect_leq(p90, 250, "%s: p90 latency %u ms for the other client", what, p90);
    cr_expect_leq(max, 3000, "%s: worst latency %u ms for the other client", what, max);
}

/* ------------------------------------------------------------------ slowloris */

enum { SLOW_N = 200, SLOW_DEADLINE_MS = 2000 };

/* Dribble `line` every 250 ms on every connection of c[0..n) until it is answered; each answer
   must be a 408 with Connection: close, then EOF, between the deadline and deadline + one
   1 s tick + slack after t0[i] (the first byte the deadline counts from). */
static void dribble_until_cut(struct it_conn **c, const uint64_t *t0, int n, const char *line,
                              const char *what)
{
    static struct it_resp r;
    bool *done = calloc((size_t)n, sizeof(bool));
    struct pollfd *pf = calloc((size_t)n, sizeof(*pf));
    cr_assert(done && pf);
    int left = n;
    uint64_t start = it_now_ms(), next_drip = start + 250;
    while (left > 0 && it_now_ms() - start < SLOW_DEADLINE_MS + 4000) {
        for (int i = 0; i < n; i++)
            pf[i] = (struct pollfd){.fd = done[i] ? -1 : c[i]->fd, .events = POLLIN};
        int pr = poll(pf, (nfds_t)n, 50);
        cr_assert_geq(pr, 0, "poll: %s", strerror(errno));
        uint64_t now = it_now_ms();
        for (int i = 0; i < n && pr > 0; i++) {
            if (done[i] || !(pf[i].revents & (POLLIN | POLLHUP | POLLERR)))
                continue;
            int rc = it_read_response(c[i], &r, 2000);
            cr_assert_eq(rc, 0, "%s: connection %d: no answer (%s)", what, i, strerror(-rc));
            uint64_t ms = now - t0[i];
            cr_expect_eq(r.status, 408, "%s: connection %d got %d", what, i, r.status);
            cr_expect(r.close, "%s: 408 without Connection: close", what);
            cr_expect_geq(ms, SLOW_DEADLINE_MS - 100, "%s: cut after %llu ms", what,
                          (unsigned long long)ms);
            cr_expect_leq(ms, SLOW_DEADLINE_MS + 1000 + 1500, "%s: cut after %llu ms", what,
                          (unsigned long long)ms);
            cr_expect_eq(it_expect_closed(c[i], 2000), 0, "%s: not closed after 408", what);
            done[i] = true;
            left--;
        }
        if (now >= next_drip) {
            next_drip += 250;
            for (int i = 0; i < n; i++)
                if (!done[i]) /* a send racing the server's close may fail: the read tells */
                    (void)it_send_all(c[i]->fd, line, strlen(line));
        }
    }
    cr_expect_eq(left, 0, "%s: %d of %d connections never cut", what, left, n);
    free(done);
    free(pf);
}

Test(faults, slowloris_heads_cut_at_deadline_while_others_served)
{
    char ms[16];
    snprintf(ms, sizeof(ms), "%d", SLOW_DEADLINE_MS);
    const char *args[] = {"--workers", "2", "--header-timeout-ms", ms, NULL};
    raise_nofile(SLOW_N + 64);
    struct it_server *s = it_start(args, NULL);
    struct prober *pb = calloc(1, sizeof(*pb));
    cr_assert_not_null(pb);
    pb->port = it_port(s);
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, prober_main, pb), 0);

    struct it_conn **c = calloc(SLOW_N, sizeof(*c));
    uint64_t *t0 = calloc(SLOW_N, sizeof(*t0));
    cr_assert(c && t0);
    for (int i = 0; i < SLOW_N; i++) {
        c[i] = it_conn_new(it_port(s));
        t0[i] = it_now_ms();
        send_ok(c[i]->fd, "GET /health HTTP/1.1\r\n", 22);
    }
    /* ~14 bytes per 250 ms: the head stays far below the 16 KiB limit, so only the deadline
       can end it */
    dribble_until_cut(c, t0, SLOW_N, "X-Drip: a\r\n", "slow head");
    prober_check(th, pb, 40, "slow heads");
    for (int i = 0; i < SLOW_N; i++)
        it_conn_free(c[i]);
    free(c);
    free(t0);
    free(pb);
    stop_ok(s);
}

Test(faults, slow_bodies_cut_at_deadline_and_never_counted)
{
    enum { N = 50 };
    char ms[16];
    snprintf(ms, sizeof(ms), "%d", SLOW_DEADLINE_MS);
    const char *args[] = {"--workers", "2", "--body-timeout-ms", ms, NULL};
    struct it_server *s = it_start(args, NULL);
    struct prober *pb = calloc(1, sizeof(*pb));
    cr_assert_not_null(pb);
    pb->port = it_port(s);
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, prober_main, pb), 0);

    static const char head[] = "POST /event HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n"
                               "{\"userId\":\"slow\",";
    struct it_conn *c[N];
    uint64_t t0[N];
    for (int i = 0; i < N; i++) {
        c[i] = it_conn_new(it_port(s));
        send_ok(c[i]->fd, head, sizeof(head) - 1);
        t0[i] = it_now_ms(); /* the body deadline counts from the complete head */
    }
    dribble_until_cut(c, t0, N, " ", "slow body");
    prober_check(th, pb, 40, "slow bodies");

    /* a normal event meanwhile counts; none of the cut ones did */
    struct it_conn *k = it_conn_new(it_port(s));
    static struct it_resp r;
    char req[256];
    event_req(req, sizeof(req), "fast", "2");
    cr_assert_eq(it_request(k, req, &r), 0);
    cr_assert_eq(r.status, 200);
    uint64_t total, users;
    get_stats(k, &total, &users, NULL, NULL, 0);
    cr_expect_eq(total, 1, "totalRequests %llu: a cut body was counted", (unsigned long long)total);
    cr_expect_eq(users, 1);
    it_conn_free(k);
    for (int i = 0; i < N; i++)
        it_conn_free(c[i]);
    free(pb);
    stop_ok(s);
}

/* ------------------------------------------------------------------ fd exhaustion */

Test(faults, fd_exhaustion_serves_held_connections_without_spinning_and_recovers)
{
    enum { ATTEMPTS = 1000, SERVER_NOFILE = 512 };
    cr_assert_geq(raise_nofile(ATTEMPTS + 100), ATTEMPTS + 100, "the test needs %d fds",
                  ATTEMPTS + 100);
    const char *args[] = {"--workers", "2", NULL};
    struct it_opts o = {.nofile = SERVER_NOFILE};
    struct it_server *s = it_start_ex(args, NULL, &o);
    pid_t pid = it_pid(s);
    static struct it_conn one; /* reused: every connection gets exactly one answer here */
    static struct it_resp r;

    /* The kernel completes every handshake (the accept queue holds 4096): the server accepts
       until EMFILE and must leave the rest in the queue. */
    int *fd = malloc(ATTEMPTS * sizeof(int));
    bool *answered = calloc(ATTEMPTS, sizeof(bool));
    struct pollfd *pf = calloc(ATTEMPTS, sizeof(*pf));
    cr_assert(fd && answered && pf);
    for (int i = 0; i < ATTEMPTS; i++) {
        fd[i] = it_connect(it_port(s));
        cr_assert_geq(fd[i], 0, "connect %d: %s", i, strerror(-fd[i]));
        send_ok(fd[i], HEALTH, sizeof(HEALTH) - 1);
    }
    /* Collect answers until none came for 1 s. */
    int held = 0;
    uint64_t quiet_since = it_now_ms();
    while (it_now_ms() - quiet_since < 1000) {
        for (int i = 0; i < ATTEMPTS; i++)
            pf[i] = (struct pollfd){.fd = answered[i] ? -1 : fd[i], .events = POLLIN};
        if (poll(pf, ATTEMPTS, 100) <= 0)
            continue;
        for (int i = 0; i < ATTEMPTS; i++) {
            if (answered[i] || !(pf[i].revents & POLLIN))
                continue;
            one.fd = fd[i];
            one.len = 0;
            int rc = it_read_response(&one, &r, 2000);
            cr_assert_eq(rc, 0, "held connection %d: %s", i, strerror(-rc));
            cr_assert_eq(r.status, 200);
            answered[i] = true;
            held++;
            quiet_since = it_now_ms();
        }
    }
    cr_log_info("fd exhaustion: %d of %d connections held at RLIMIT_NOFILE %d", held, ATTEMPTS,
                SERVER_NOFILE);
    /* 512 descriptors minus the rings, listeners, eventfd, stdio and PostgreSQL-less extras */
    cr_expect_geq(held, SERVER_NOFILE - 64, "only %d connections held", held);
    cr_assert_lt(held, ATTEMPTS, "every connection accepted: the limit was not reached");
    cr_expect(it_log_wait(s, "accept failed, backing off", 2000), "no EMFILE back-off logged");

    /* Saturated: no spinning. EMFILE retries every 50 ms cost microseconds; 25% of a core over
       2 s is far above that and far below a busy loop (100% of one core per worker). */
    long ticks_per_s = sysconf(_SC_CLK_TCK);
    long c0 = cpu_ticks(pid);
    sleep_ms(2000);
    long c1 = cpu_ticks(pid);
    cr_assert(c0 >= 0 && c1 >= 0);
    double core = (double)(c1 - c0) / (double)ticks_per_s / 2.0;
    cr_log_info("fd exhaustion: server CPU %.1f%% of a core while saturated", core * 100);
    cr_expect_lt(core, 0.25, "server used %.0f%% of a core while saturated", core * 100);

    /* The held connections are still served. */
    int first = -1;
    for (int i = 0; i < ATTEMPTS && first < 0; i++)
        if (answered[i])
            first = i;
    one.fd = fd[first];
    one.len = 0;
    cr_assert_eq(it_request(&one, HEALTH, &r), 0, "held connection not served while saturated");
    cr_assert_eq(r.status, 200);

    /* Recovery: close what is held; the queued connections are accepted and answered (their
       requests were sent long ago), and a brand-new connection is served. */
    for (int i = 0; i < ATTEMPTS; i++)
        if (answered[i]) {
            close(fd[i]);
            fd[i] = -1;
        }
    int late = 0;
    uint64_t until = it_now_ms() + 10000;
    while (held + late < ATTEMPTS && it_now_ms() < until) {
        for (int i = 0; i < ATTEMPTS; i++)
            pf[i] = (struct pollfd){.fd = answered[i] ? -1 : fd[i], .events = POLLIN};
        if (poll(pf, ATTEMPTS, 100) <= 0)
            continue;
        for (int i = 0; i < ATTEMPTS; i++) {
            if (answered[i] || !(pf[i].revents & POLLIN))
                continue;
            one.fd = fd[i];
            one.len = 0;
            int rc = it_read_response(&one, &r, 2000);
            cr_assert_eq(rc, 0, "queued connection %d: %s", i, strerror(-rc));
            cr_assert_eq(r.status, 200);
            answered[i] = true;
            late++;
        }
    }
    cr_expect_eq(held + late, ATTEMPTS, "%d connections never answered after recovery",
                 ATTEMPTS - held - late);
    for (int i = 0; i < ATTEMPTS; i++)
        if (fd[i] >= 0)
            close(fd[i]);
    struct it_conn *n = it_conn_new(it_port(s));
    cr_assert_eq(it_request(n, HEALTH, &r), 0, "new connection after recovery");
    cr_expect_eq(r.status, 200);
    it_conn_free(n);
    free(fd);
    free(answered);
    free(pf);
    stop_ok(s);
}

/* ------------------------------------------------------------------ tiny rings */

Test(faults, tiny_rings_cq_overflow_and_enobufs_keep_counts_exact)
{
    enum { NCONN = 300, PER = 10, ROUNDS = 3 };
    raise_nofile(NCONN + 64);
    /* 64 SQEs (256 CQEs) and two 512-byte receive buffers for 300 connections that all send
       at once: completions outnumber the CQ and receives outnumber the buffers. */
    const char *args[] = {"--workers", "1", "--ring-entries", "64", "--buf-count", "2",
                          "--buf-size", "512", NULL};
    struct it_server *s = it_start(args, NULL);
    struct it_conn **c = calloc(NCONN, sizeof(*c));
    cr_assert_not_null(c);
    for (int i = 0; i < NCONN; i++)
        c[i] = it_conn_new(it_port(s));
    static struct it_resp r;
    char *burst = malloc(PER * 160);
    cr_assert_not_null(burst);
    for (int round = 0; round < ROUNDS; round++) {
        for (int i = 0; i < NCONN; i++) {
            size_t n = 0;
            for (int k = 0; k < PER; k++) {
                char user[32];
                snprintf(user, sizeof(user), "r%d-c%d-%d", round, i, k);
                n += event_req(burst + n, 160, user, "0.25");
            }
            send_ok(c[i]->fd, burst, n);
        }
        for (int i = 0; i < NCONN; i++)
            for (int k = 0; k < PER; k++) {
                int rc = it_read_response(c[i], &r, 10000);
                cr_assert_eq(rc, 0, "round %d connection %d request %d: %s", round, i, k,
                             strerror(-rc));
                cr_assert_eq(r.status, 200, "connection %d: %d %s", i, r.status, r.body);
            }
    }
    free(burst);
    uint64_t total, users;
    char sum[64];
    get_stats(c[0], &total, &users, NULL, sum, sizeof(sum));
    cr_expect_eq(total, NCONN * PER * ROUNDS);
    cr_expect_eq(users, NCONN * PER * ROUNDS);
    cr_expect_str_eq(sum, "2250", "sum %s, want 0.25 x 9000", sum);
    int rc = it_request(c[1], "GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n", &r);
    cr_assert_eq(rc, 0);
    long long enobufs = it_metric_sample(r.body, "ringcount_io_uring_recv_enobufs_total");
    long long overflows = it_metric_sample(r.body, "ringcount_io_uring_cq_overflows_total");
    cr_log_info("tiny rings: %lld ENOBUFS receives, %lld CQ overflows", enobufs, overflows);
    cr_expect_gt(enobufs, 0, "the buffer ring was never exhausted: the test proves nothing");
    /* 40-110 per run here: every receive of a connection whose data found no buffer
       completes with -ENOBUFS, ~100,000 of them against a 256-entry CQ */
    cr_expect_gt(overflows, 0, "the CQ never overflowed: the test proves nothing");
    for (int i = 0; i < NCONN; i++)
        it_conn_free(c[i]);
    free(c);
    stop_ok(s);
}

/* ------------------------------------------------------------------ pipelining, never reading */

enum kind { K_HEALTH, K_EVENT, K_404, K_METRICS };

/* The kind of request i: a fixed pseudo-random sequence, so a reordered, lost or duplicated
   answer shows up as a mismatch. ~15% /metrics (6 KiB answers) make the answers (~10 MB)
   outgrow every socket buffer: the server has to stop producing them. */
static enum kind kind_of(uint32_t i)
{
    uint32_t h = i * 2654435761u;
    h ^= h >> 15;
    unsigned v = h % 100;
    return v < 15 ? K_METRICS : v < 50 ? K_EVENT : v < 80 ? K_HEALTH : K_404;
}

struct sender {
    int fd;
    const char *p;
    size_t n;
    int rc;
};

static void *sender_main(void *arg)
{
    struct sender *s = arg;
    s->rc = it_send_all(s->fd, s->p, s->n);
    return NULL;
}

Test(faults, ten_thousand_pipelined_unread_memory_bounded_then_all_in_order)
{
    enum { N = 10000 };
    const char *args[] = {"--workers", "2", NULL};
    struct it_server *s = it_start(args, NULL);
    pid_t pid = it_pid(s);
    bool asan = is_asan(pid);
    static struct it_resp r;
    struct it_conn *other = it_conn_new(it_port(s));
    cr_assert_eq(it_request(other, HEALTH, &r), 0);
    long rss0 = rss_kib(pid);

    char *reqs = malloc((size_t)N * 160);
    cr_assert_not_null(reqs);
    size_t len = 0;
    unsigned events = 0;
    for (uint32_t i = 0; i < N; i++) {
        switch (kind_of(i)) {
        case K_HEALTH:
            len += (size_t)sprintf(reqs + len, "%s", HEALTH);
            break;
        case K_EVENT: {
            char user[16];
            snprintf(user, sizeof(user), "p%u", i % 97);
            len += event_req(reqs + len, 160, user, "1");
            events++;
            break;
        }
        case K_404:
            len += (size_t)sprintf(reqs + len, "GET /nope/%u HTTP/1.1\r\nHost: t\r\n\r\n", i);
            break;
        case K_METRICS:
            len += (size_t)sprintf(reqs + len, "GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n");
            break;
        }
    }
    /* One write of everything (in a thread: if the server stops reading, the write blocks). */
    struct it_conn *pc = it_conn_new(it_port(s));
    struct sender snd = {.fd = pc->fd, .p = reqs, .n = len};
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, sender_main, &snd), 0);
    sleep_ms(1500);

    /* Stuck: the pipelining client reads nothing. Others are served, memory is bounded. */
    uint64_t t0 = it_now_ms();
    int orc = it_request(other, HEALTH, &r);
    cr_assert_eq(orc, 0, "other client not served: %s", strerror(-orc));
    cr_expect_eq(r.status, 200);
    cr_expect_leq(it_now_ms() - t0, 1000, "other client waited %llu ms",
                  (unsigned long long)(it_now_ms() - t0));
    long rss1 = rss_kib(pid);
    cr_log_info("pipeline: %zu bytes of requests, server RSS %ld -> %ld KiB", len, rss0, rss1);
    /* README: a connection buffers at most 1 MiB of input and 256 KiB of output. */
    if (!asan)
        cr_expect_leq(rss1 - rss0, 8 * 1024, "RSS grew by %ld KiB", rss1 - rss0);

    /* Now read everything: every answer, in order. */
    unsigned got = 0;
    for (uint32_t i = 0; i < N; i++) {
        int rc = it_read_response(pc, &r, 10000);
        cr_assert_eq(rc, 0, "answer %u of %d: %s; received: %.300s", i, N, strerror(-rc),
                     pc->buf);
        enum kind k = kind_of(i);
        switch (k) {
        case K_HEALTH:
            cr_assert(r.status == 200 && strcmp(r.body, "{\"status\":\"healthy\"}") == 0,
                      "answer %u: want /health, got %d %s", i, r.status, r.body);
            break;
        case K_EVENT:
            cr_assert(r.status == 200 && r.body_len == 0, "answer %u: want event, got %d %s", i,
                      r.status, r.body);
            break;
        case K_404:
            cr_assert_eq(r.status, 404, "answer %u: want 404, got %d", i, r.status);
            break;
        case K_METRICS:
            cr_assert(r.status == 200 && strncmp(r.body, "# HELP", 6) == 0,
                      "answer %u: want /metrics, got %d %.40s", i, r.status, r.body);
            break;
        }
        got++;
    }
    pthread_join(th, NULL);
    cr_expect_eq(snd.rc, 0, "the pipelined write failed: %s", strerror(-snd.rc));
    cr_expect_eq(got, N);
    uint64_t total;
    get_stats(other, &total, NULL, NULL, NULL, 0);
    cr_expect_eq(total, events);
    it_conn_free(pc);
    it_conn_free(other);
    free(reqs);
    stop_ok(s);
}

/* ------------------------------------------------------------------ memory bounds */

Test(faults, ten_thousand_idle_connections_rss_bounded)
{
    enum { N = 10000 };
    unsigned long lim = raise_nofile(N + 500);
    if (lim < N + 500)
        cr_skip_test("RLIMIT_NOFILE hard limit %lu < %d: cannot hold %d connections", lim,
                     N + 500, N);
    const char *args[] = {"--workers", "2", "--max-connections", "20000", NULL};
    struct it_opts o = {.nofile = N + 500};
    struct it_server *s = it_start_ex(args, NULL, &o);
    pid_t pid = it_pid(s);
    static struct it_conn one;
    static struct it_resp r;
    int *fd = malloc(N * sizeof(int));
    cr_assert_not_null(fd);
    one.fd = it_connect(it_port(s));
    cr_assert_eq(it_request(&one, HEALTH, &r), 0);
    long rss0 = rss_kib(pid);
    /* Each connection asks once (so it has its buffers), then stays idle. */
    for (int i = 0; i < N; i++) {
        fd[i] = it_connect(it_port(s));
        cr_assert_geq(fd[i], 0, "connect %d: %s", i, strerror(-fd[i]));
        send_ok(fd[i], HEALTH, sizeof(HEALTH) - 1);
    }
    for (int i = 0; i < N; i++) {
        struct it_conn *c = &one;
        int keep = c->fd;
        c->fd = fd[i];
        c->len = 0;
        int rc = it_read_response(c, &r, 10000);
        c->fd = keep;
        c->len = 0;
        cr_assert_eq(rc, 0, "connection %d: %s", i, strerror(-rc));
        cr_assert_eq(r.status, 200);
    }
    sleep_ms(300);
    long rss1 = rss_kib(pid);
    long per = (rss1 - rss0) * 1024 / N;
    cr_log_info("10,000 idle connections: RSS %ld -> %ld KiB (%ld bytes each)", rss0, rss1, per);
    /* README: <= 8 KiB per idle connection (4 KiB output buffer kept, the connection slot,
       allocator overhead) -> 10,000 idle connections stay under 80 MiB. */
    if (!is_asan(pid))
        cr_expect_leq(per, 8192, "%ld bytes of RSS per idle connection", per);
    /* still serving */
    cr_assert_eq(it_request(&one, HEALTH, &r), 0);
    cr_expect_eq(r.status, 200);
    for (int i = 0; i < N; i++)
        close(fd[i]);
    free(fd);
    it_conn_close(&one);
    stop_ok(s);
}

/* Distinct userIds past --max-users, from CLIENTS threads, each pipelining BATCH events. */
enum { FLOOD_USERS = 300000, FLOOD_MAX = 100000, CLIENTS = 4, BATCH = 500 };

struct flooder {
    uint16_t port;
    unsigned idx, from, to; /* users from + idx, from + idx + CLIENTS, ... below to */
    int err;
};

static void *flooder_main(void *arg)
{
    struct flooder *f = arg;
    struct it_conn *c = malloc(sizeof(*c));
    struct it_resp *r = malloc(sizeof(*r));
    char *buf = malloc(BATCH * 128);
    if (!c || !r || !buf || it_conn_open(c, f->port) < 0) {
        f->err = -ENOMEM;
        goto out;
    }
    for (unsigned u = f->from + f->idx; u < f->to && !f->err;) {
        size_t n = 0;
        unsigned k = 0;
        for (; k < BATCH && u < f->to; k++, u += CLIENTS) {
            char user[16];
            snprintf(user, sizeof(user), "fl%07u", u);
            n += event_req(buf + n, 128, user, "1");
        }
        if ((f->err = it_send_all(c->fd, buf, n)) < 0)
            break;
        for (unsigned j = 0; j < k; j++) {
            if ((f->err = it_read_response(c, r, 20000)) < 0)
                break;
            if (r->status != 200) {
                f->err = -EPROTO;
                break;
            }
        }
    }
    it_conn_close(c);
out:
    free(c);
    free(r);
    free(buf);
    return NULL;
}

/* Users [from, to) from CLIENTS connections at once. */
static void flood(uint16_t port, unsigned from, unsigned to)
{
    struct flooder f[CLIENTS];
    pthread_t th[CLIENTS];
    for (unsigned i = 0; i < CLIENTS; i++) {
        f[i] = (struct flooder){.port = port, .idx = i, .from = from, .to = to};
        cr_assert_eq(pthread_create(&th[i], NULL, flooder_main, &f[i]), 0);
    }
    for (unsigned i = 0; i < CLIENTS; i++) {
        pthread_join(th[i], NULL);
        cr_assert_eq(f[i].err, 0, "flooder %u: %s", i, strerror(-f[i].err));
    }
}

Test(faults, user_flood_past_max_users_rss_bounded_overflow_exact)
{
    char max[16];
    snprintf(max, sizeof(max), "%d", FLOOD_MAX);
    const char *args[] = {"--workers", "2", "--max-users", max, NULL};
    struct it_server *s = it_start(args, NULL);
    pid_t pid = it_pid(s);
    bool asan = is_asan(pid);
    struct it_conn *c = it_conn_new(it_port(s));
    uint64_t total, users, overflow;
    get_stats(c, &total, &users, &overflow, NULL, 0);
    long rss0 = rss_kib(pid);
    /* up to the bound: every user is stored */
    flood(it_port(s), 0, FLOOD_MAX);
    get_stats(c, &total, &users, &overflow, NULL, 0);
    cr_expect_eq(users, FLOOD_MAX);
    cr_expect_eq(overflow, 0);
    long rss1 = rss_kib(pid);
    /* past it: counted, not stored (twice: the second refused flood must add nothing) */
    flood(it_port(s), FLOOD_MAX, 2 * FLOOD_MAX);
    long rss2 = rss_kib(pid);
    flood(it_port(s), 2 * FLOOD_MAX, FLOOD_USERS);
    char sum[64];
    get_stats(c, &total, &users, &overflow, sum, sizeof(sum));
    long rss3 = rss_kib(pid);
    cr_expect_eq(total, FLOOD_USERS);
    cr_expect_eq(users, FLOOD_MAX, "uniqueUsers %llu, want the bound %d",
                 (unsigned long long)users, FLOOD_MAX);
    cr_expect_eq(overflow, FLOOD_USERS - FLOOD_MAX, "usersOverflow %llu",
                 (unsigned long long)overflow);
    cr_expect_str_eq(sum, "300000");
    cr_log_info("RSS KiB: %ld at start, %ld with %d users stored, %ld and %ld after two floods "
                "of %d refused ones", rss0, rss1, FLOOD_MAX, rss2, rss3, FLOOD_MAX);
    /* README: RSS grows by at most 16 MiB + 160 bytes per stored user, whatever is offered
       past --max-users. Per stored user: the record (16 + id bytes, 8-aligned) in 1 MiB arena
       chunks and its hash-set slot (<= 50% load, doubling). The fixed part is one-time: the
       cross-worker mailboxes (1 MiB each), spill buffers and connection buffers; the first
       refused flood still adds ~7-8 MiB of it, the second 0.3-2.2 MiB (allocator settling),
       later ones nothing (a refused user that were kept would cost ~10 MiB per 100,000).
       Measured with 2 workers: 95-140 bytes per user at the margin, ~24 MiB in all here. */
    if (!asan) {
        cr_expect_leq(rss3 - rss0, 16 * 1024 + 160L * FLOOD_MAX / 1024,
                      "RSS grew by %ld KiB for %d stored users", rss3 - rss0, FLOOD_MAX);
        cr_expect_leq(rss3 - rss2, 4 * 1024, "a flood of refused users grew RSS by %ld KiB",
                      rss3 - rss2);
    }
    it_conn_free(c);
    stop_ok(s);
}
