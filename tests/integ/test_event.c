/* Integration tests of the events API (SPEC §2.1) against the real server over sockets: the
   1MRC run (exact totals over 256 keep-alive connections, 1 and 2 workers), /stats never torn
   under load, read-your-writes across connections and workers, every 400 code with nothing
   counted, userIds compared after unescaping, POST /reset and its admin key, --max-users. */
#include <criterion/criterion.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "harness.h"

/* Under ASan the 100,000-event run takes a few seconds; 60 s only catches a hang. */
TestSuite(event, .timeout = 60);

#define MRC_EVENTS 100000u
#define MRC_USERS 75000u
#define MRC_CONNS 256
/* Requests written per connection before reading their responses: a little pipelining keeps
   the client (one thread, 2 shared cores) from being the bottleneck. */
#define MRC_DEPTH 4

/* ------------------------------------------------------------------ load generator */

/* Value of event i, written into out (as sent), and its exact micro-units. */
typedef it_dec (*value_fn)(uint64_t i, char *out, size_t cap);

/* The 1MRC pattern: value = i % 1000 + 0.5. */
static it_dec mrc_value(uint64_t i, char *out, size_t cap)
{
    snprintf(out, cap, "%llu.5", (unsigned long long)(i % 1000));
    return (it_dec)(i % 1000) * 1000000 + 500000;
}

/* Varied signs and six fractional digits, so sum/total of a partial snapshot rarely divides
   evenly and half-to-even rounding of avg is exercised. */
static it_dec mixed_value(uint64_t i, char *out, size_t cap)
{
    unsigned long long ip = i % 1000, fp = (i * 7919u) % 1000000u;
    bool neg = i % 3 == 0;
    snprintf(out, cap, "%s%llu.%06llu", neg ? "-" : "", ip, fp);
    it_dec v = (it_dec)ip * 1000000 + (it_dec)fp;
    return neg ? -v : v;
}

struct load {
    uint16_t port;
    int nconn;
    uint64_t count;     /* events i = 0..count-1, connection j sends i = j, j+nconn, ... */
    unsigned users;     /* userId = user_<i % users> */
    value_fn value;
    /* results */
    uint64_t ok;
    char err[256];      /* first failure, empty if none */
};

struct lconn {
    struct it_conn c;
    uint64_t next;      /* next event index to send */
    int outstanding;
};

/* Write up to MRC_DEPTH requests on one connection. Returns how many, or -errno. */
static int send_batch(struct load *L, struct lconn *lc)
{
    char buf[MRC_DEPTH * 192];
    size_t n = 0;
    int k = 0;
    for (; k < MRC_DEPTH && lc->next < L->count; k++, lc->next += (uint64_t)L->nconn) {
        char v[32], body[96];
        L->value(lc->next, v, sizeof(v));
        int bl = snprintf(body, sizeof(body), "{\"userId\":\"user_%llu\",\"value\":%s}",
                          (unsigned long long)(lc->next % L->users), v);
        n += (size_t)snprintf(buf + n, sizeof(buf) - n,
                              "POST /event HTTP/1.1\r\nHost: t\r\nContent-Type: application/json"
                              "\r\nContent-Length: %d\r\n\r\n%s",
                              bl, body);
    }
    if (!k)
        return 0;
    int rc = it_send_all(lc->c.fd, buf, n);
    if (rc < 0)
        return rc;
    lc->outstanding = k;
    return k;
}

/* One thread, poll over every connection. Never asserts (may run beside a /stats poller). */
static void *load_main(void *arg)
{
    struct load *L = arg;
    struct lconn *lc = calloc((size_t)L->nconn, sizeof(*lc));
    struct pollfd *pf = calloc((size_t)L->nconn, sizeof(*pf));
    static struct it_resp r; /* the head/body copies are not needed; one scratch per run */
    int active = 0;
    if (!lc || !pf) {
        snprintf(L->err, sizeof(L->err), "out of memory");
        goto out;
    }
    for (int j = 0; j < L->nconn; j++) {
        lc[j].next = (uint64_t)j;
        int rc = it_conn_open(&lc[j].c, L->port);
        if (rc < 0) {
            snprintf(L->err, sizeof(L->err), "connect %d: %s", j, strerror(-rc));
            goto out;
        }
        pf[j].fd = lc[j].c.fd;
        pf[j].events = POLLIN;
    }
    for (int j = 0; j < L->nconn; j++) {
        int rc = send_batch(L, &lc[j]);
        if (rc < 0) {
            snprintf(L->err, sizeof(L->err), "send: %s", strerror(-rc));
            goto out;
        }
        if (rc == 0)
            pf[j].fd = -1;
        else
            active++;
    }
    while (active > 0) {
        int pr = poll(pf, (nfds_t)L->nconn, 10000);
        if (pr < 0 && errno == EINTR)
            continue;
        if (pr <= 0) {
            snprintf(L->err, sizeof(L->err), "no response for 10 s (%d connections waiting)",
                     active);
            goto out;
        }
        for (int j = 0; j < L->nconn; j++) {
            if (pf[j].fd < 0 || !pf[j].revents)
                continue;
            struct it_conn *c = &lc[j].c;
            ssize_t k = recv(c->fd, c->buf + c->len, sizeof(c->buf) - c->len, 0);
            if (k <= 0) {
                if (k < 0 && (errno == EINTR || errno == EAGAIN))
                    continue;
                snprintf(L->err, sizeof(L->err), "connection %d: %s after %llu ok", j,
                         k == 0 ? "closed by the server" : strerror(errno),
                         (unsigned long long)L->ok);
                goto out;
            }
            c->len += (size_t)k;
            size_t off = 0;
            ssize_t n;
            while ((n = it_parse_response(c->buf + off, c->len - off, &r)) > 0) {
                off += (size_t)n;
                if (r.status != 200) {
                    snprintf(L->err, sizeof(L->err), "POST /event answered %d: %.200s", r.status,
                             r.body);
                    goto out;
                }
                L->ok++;
                lc[j].outstanding--;
            }
            if (n < 0) {
                snprintf(L->err, sizeof(L->err), "malformed response (%s)", strerror((int)-n));
                goto out;
            }
            memmove(c->buf, c->buf + off, c->len - off);
            c->len -= off;
            if (lc[j].outstanding == 0) {
                int rc = send_batch(L, &lc[j]);
                if (rc < 0) {
                    snprintf(L->err, sizeof(L->err), "send: %s", strerror(-rc));
                    goto out;
                }
                if (rc == 0) {
                    pf[j].fd = -1;
                    active--;
                }
            }
        }
    }
out:
    for (int j = 0; lc && j < L->nconn; j++)
        if (lc[j].c.fd > 0)
            it_conn_close(&lc[j].c);
    free(lc);
    free(pf);
    return NULL;
}

/* Exact expected sum of events 0..n-1. */
static it_dec expected_sum(uint64_t n, value_fn f)
{
    it_dec s = 0;
    char tmp[32];
    for (uint64_t i = 0; i < n; i++)
        s += f(i, tmp, sizeof(tmp));
    return s;
}

/* ------------------------------------------------------------------ /stats helpers */

struct stats {
    char total[32], users[32], sum[64], avg[64], overflow[32];
    uint64_t total_n, users_n;
    it_dec sum_d, avg_d;
};

/* GET /stats on c; 0 or a negative errno / -EPROTO with why filled. Never asserts. */
static int get_stats(struct it_conn *c, struct stats *st, char *why, size_t wcap)
{
    static __thread struct it_resp r;
    int rc = it_request(c, "GET /stats HTTP/1.1\r\nHost: t\r\n\r\n", &r);
    if (rc < 0) {
        snprintf(why, wcap, "GET /stats: %s", strerror(-rc));
        return rc;
    }
    if (r.status != 200 || strncmp(r.body, "{\"totalRequests\":", 17) != 0) {
        snprintf(why, wcap, "GET /stats answered %d: %.200s", r.status, r.body);
        return -EPROTO;
    }
    /* SPEC: the first four fields come first, in that order. */
    const char *pu = strstr(r.body, ",\"uniqueUsers\":"), *ps = strstr(r.body, ",\"sum\":"),
               *pa = strstr(r.body, ",\"avg\":"), *pv = strstr(r.body, ",\"server\":");
    if (!pu || !ps || !pa || !pv || !(pu < ps && ps < pa && pa < pv)) {
        snprintf(why, wcap, "/stats fields out of order: %.200s", r.body);
        return -EPROTO;
    }
    if (it_json_num(r.body, "totalRequests", st->total, sizeof(st->total)) < 0 ||
        it_json_num(r.body, "uniqueUsers", st->users, sizeof(st->users)) < 0 ||
        it_json_num(r.body, "sum", st->sum, sizeof(st->sum)) < 0 ||
        it_json_num(r.body, "avg", st->avg, sizeof(st->avg)) < 0 ||
        it_json_num(r.body, "usersOverflow", st->overflow, sizeof(st->overflow)) < 0 ||
        it_json_u64(r.body, "totalRequests", &st->total_n) < 0 ||
        it_json_u64(r.body, "uniqueUsers", &st->users_n) < 0 ||
        it_dec_parse(st->sum, &st->sum_d) < 0 || it_dec_parse(st->avg, &st->avg_d) < 0) {
        snprintf(why, wcap, "/stats fields unreadable: %.300s", r.body);
        return -EPROTO;
    }
    return 0;
}

/* Main-thread wrapper that asserts. */
static void stats_ok(struct it_conn *c, struct stats *st)
{
    char why[512];
    int rc = get_stats(c, st, why, sizeof(why));
    cr_assert_eq(rc, 0, "%s", why);
}

static void expect_stats(struct it_conn *c, const char *total, const char *users, const char *sum,
                         const char *avg)
{
    struct stats st;
    stats_ok(c, &st);
    cr_expect_str_eq(st.total, total, "totalRequests");
    cr_expect_str_eq(st.users, users, "uniqueUsers");
    cr_expect_str_eq(st.sum, sum, "sum");
    cr_expect_str_eq(st.avg, avg, "avg");
}

/* POST /event with the given raw JSON body; returns the status (asserts the exchange worked). */
static int post_event(struct it_conn *c, const char *body, struct it_resp *r)
{
    char req[2048];
    snprintf(req, sizeof(req),
             "POST /event HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
             "Content-Length: %zu\r\n\r\n%s",
             strlen(body), body);
    int rc = it_request(c, req, r);
    cr_assert_eq(rc, 0, "POST /event %s: %s", body, strerror(-rc));
    return r->status;
}

static void open_ok(struct it_conn *c, struct it_server *s)
{
    int rc = it_conn_open(c, it_port(s));
    cr_assert_eq(rc, 0, "connect: %s", strerror(-rc));
}

static void stop_ok(struct it_server *s)
{
    int rc = it_stop(s);
    char out[4096];
    it_log_copy(s, out, sizeof(out));
    cr_expect_eq(rc, 0, "server exit status %d after SIGTERM; output tail:\n%s", rc, out);
    it_free(s);
}

/* ------------------------------------------------------------------ 1MRC */

static void mrc_run(const char *workers)
{
    const char *args[] = {"--workers", workers, NULL};
    struct it_server *s = it_start(args, NULL);
    struct load L = {.port = it_port(s), .nconn = MRC_CONNS, .count = MRC_EVENTS,
                     .users = MRC_USERS, .value = mrc_value};
    uint64_t t0 = it_now_ms();
    load_main(&L);
    uint64_t ms = it_now_ms() - t0;
    if (L.err[0]) {
        static char out[8192];
        it_log_copy(s, out, sizeof(out));
        cr_assert_fail("load: %s; server output tail:\n%s", L.err, out);
    }
    cr_assert_eq(L.ok, MRC_EVENTS);
    cr_log_info("1MRC, %s worker(s): %u events in %llu ms", workers, MRC_EVENTS,
                (unsigned long long)ms);

    it_dec sum = expected_sum(MRC_EVENTS, mrc_value);
    char esum[48], eavg[48], etot[32], eusers[32];
    it_dec_format(sum, esum);
    it_dec_format(it_dec_div_round(sum, MRC_EVENTS), eavg);
    snprintf(etot, sizeof(etot), "%u", MRC_EVENTS);
    snprintf(eusers, sizeof(eusers), "%u", MRC_USERS);
    cr_assert_str_eq(esum, "50000000"); /* self-check of the test's own arithmetic */

    struct it_conn *c = malloc(sizeof(*c));
    cr_assert_not_null(c);
    open_ok(c, s);
    expect_stats(c, etot, eusers, esum, eavg);
    it_conn_close(c);
    free(c);
    stop_ok(s);
}

Test(event, mrc_two_workers_exact)
{
    mrc_run("2");
}

Test(event, mrc_one_worker_exact)
{
    mrc_run("1");
}

/* ------------------------------------------------------------------ /stats never torn */

struct poller {
    uint16_t port;
    volatile int stop;
    uint64_t snapshots, mid;  /* all / strictly between empty and final */
    uint64_t final_total;
    char err[512];
};

static void *poller_main(void *arg)
{
    struct poller *P = arg;
    struct it_conn *c = malloc(sizeof(*c));
    uint64_t last = 0;
    if (!c || it_conn_open(c, P->port) < 0) {
        snprintf(P->err, sizeof(P->err), "poller: cannot connect");
        free(c);
        return NULL;
    }
    while (!__atomic_load_n(&P->stop, __ATOMIC_ACQUIRE)) {
        struct stats st;
        if (get_stats(c, &st, P->err, sizeof(P->err)) < 0)
            break;
        P->snapshots++;
        char want[48];
        it_dec_format(st.total_n ? it_dec_div_round(st.sum_d, st.total_n) : 0, want);
        if (strcmp(want, st.avg) != 0) {
            snprintf(P->err, sizeof(P->err),
                     "torn snapshot: totalRequests=%s sum=%s avg=%s, but sum/total "
                     "rounded half-to-even is %s",
                     st.total, st.sum, st.avg, want);
            break;
        }
        if (st.total_n < last) {
            snprintf(P->err, sizeof(P->err), "totalRequests went back from %llu to %llu",
                     (unsigned long long)last, (unsigned long long)st.total_n);
            break;
        }
        if (st.total_n > 0 && st.total_n < P->final_total)
            P->mid++;
        last = st.total_n;
        usleep(200); /* a few thousand snapshots/s without starving the load on 2 cores */
    }
    it_conn_close(c);
    free(c);
    return NULL;
}

Test(event, stats_never_torn_under_load)
{
    const char *args[] = {"--workers", "2", NULL};
    struct it_server *s = it_start(args, NULL);
    const uint64_t n = 40000;
    struct load L = {.port = it_port(s), .nconn = 64, .count = n, .users = 30000,
                     .value = mixed_value};
    struct poller P = {.port = it_port(s), .final_total = n};
    pthread_t pt;
    cr_assert_eq(pthread_create(&pt, NULL, poller_main, &P), 0);
    load_main(&L);
    __atomic_store_n(&P.stop, 1, __ATOMIC_RELEASE);
    pthread_join(pt, NULL);
    if (L.err[0]) {
        static char out[8192];
        it_log_copy(s, out, sizeof(out));
        cr_assert_fail("load: %s; server output tail:\n%s", L.err, out);
    }
    cr_assert_str_empty(P.err, "%s", P.err);
    cr_log_info("%llu /stats snapshots, %llu taken mid-load", (unsigned long long)P.snapshots,
                (unsigned long long)P.mid);
    /* A poller that never saw a partial state would prove nothing. */
    cr_assert_geq(P.mid, 3, "only %llu snapshots were taken during the load",
                  (unsigned long long)P.mid);

    it_dec sum = expected_sum(n, mixed_value);
    char esum[48], eavg[48];
    it_dec_format(sum, esum);
    it_dec_format(it_dec_div_round(sum, n), eavg);
    struct it_conn *c = malloc(sizeof(*c));
    cr_assert_not_null(c);
    open_ok(c, s);
    expect_stats(c, "40000", "30000", esum, eavg);
    it_conn_close(c);
    free(c);
    stop_ok(s);
}

/* ------------------------------------------------------------------ read-your-writes */

/* SPEC §2.1: a GET /stats sent after the response to a POST /event reflects that event — on
   another connection, whichever worker owns the user. Four /stats connections so that, with
   SO_REUSEPORT spreading them, some land on the other worker (all four on the poster's worker:
   1 chance in 8); the users' owners are spread by hash either way. */
Test(event, stats_after_event_response_reflects_it)
{
    const char *args[] = {"--workers", "2", NULL};
    struct it_server *s = it_start(args, NULL);
    struct it_conn *pc = malloc(sizeof(*pc)), *sc = malloc(4 * sizeof(*sc));
    cr_assert(pc && sc);
    open_ok(pc, s);
    for (int k = 0; k < 4; k++)
        open_ok(&sc[k], s);
    static struct it_resp r;
    for (unsigned i = 0; i < 300; i++) {
        char body[96];
        snprintf(body, sizeof(body), "{\"userId\":\"ryw-%u\",\"value\":1}", i);
        cr_assert_eq(post_event(pc, body, &r), 200, "%s", r.body);
        struct stats st;
        stats_ok(&sc[i % 4], &st);
        cr_assert_eq(st.total_n, i + 1, "after event %u: totalRequests=%s", i, st.total);
        cr_assert_eq(st.users_n, i + 1, "after event %u (new user ryw-%u): uniqueUsers=%s", i, i,
                     st.users);
    }
    it_conn_close(pc);
    for (int k = 0; k < 4; k++)
        it_conn_close(&sc[k]);
    free(pc);
    free(sc);
    stop_ok(s);
}

/* ------------------------------------------------------------------ bad events */

struct bad_case {
    const char *body;
    const char *code;
};

static const struct bad_case bad_cases[] = {
    /* INVALID_JSON: malformed, trailing garbage, not an object */
    {"", "INVALID_JSON"},
    {"{", "INVALID_JSON"},
    {"not json", "INVALID_JSON"},
    {"{\"userId\":\"a\",\"value\":1} x", "INVALID_JSON"},
    {"{\"userId\":\"a\",\"value\":1}{}", "INVALID_JSON"},
    {"{\"userId\":\"a\",\"value\":1,}", "INVALID_JSON"},
    {"{'userId':'a','value':1}", "INVALID_JSON"},
    {"[\"userId\",\"a\"]", "INVALID_JSON"},
    {"\"userId\"", "INVALID_JSON"},
    {"{\"userId\":\"a\",\"value\":01}", "INVALID_JSON"},
    {"{\"userId\":\"a\\x\",\"value\":1}", "INVALID_JSON"},
    /* INVALID_USER_ID: missing, empty, > 256 bytes, invalid UTF-8, lone surrogate, wrong type */
    {"{\"value\":1}", "INVALID_USER_ID"},
    {"{\"userId\":\"\",\"value\":1}", "INVALID_USER_ID"},
    {"{\"userId\":\"\xff\xfe\",\"value\":1}", "INVALID_USER_ID"},
    {"{\"userId\":\"\xc3\",\"value\":1}", "INVALID_USER_ID"},
    {"{\"userId\":\"\\ud800\",\"value\":1}", "INVALID_USER_ID"},
    {"{\"userId\":42,\"value\":1}", "INVALID_USER_ID"},
    {"{\"userId\":null,\"value\":1}", "INVALID_USER_ID"},
    {NULL, "INVALID_USER_ID"}, /* 257 bytes: built at run time */
    /* INVALID_VALUE: not a number, over 1e15, null */
    {"{\"userId\":\"a\",\"value\":\"1\"}", "INVALID_VALUE"},
    {"{\"userId\":\"a\",\"value\":null}", "INVALID_VALUE"},
    {"{\"userId\":\"a\",\"value\":true}", "INVALID_VALUE"},
    {"{\"userId\":\"a\",\"value\":[1]}", "INVALID_VALUE"},
    {"{\"userId\":\"a\",\"value\":1000000000000000.000001}", "INVALID_VALUE"},
    {"{\"userId\":\"a\",\"value\":-1e16}", "INVALID_VALUE"},
    {"{\"userId\":\"a\",\"value\":1e400}", "INVALID_VALUE"},
};

Test(event, rejected_events_have_codes_and_change_nothing)
{
    struct it_server *s = it_start(NULL, NULL);
    struct it_conn *c = malloc(sizeof(*c));
    cr_assert_not_null(c);
    open_ok(c, s);
    static struct it_resp r;
    cr_assert_eq(post_event(c, "{\"userId\":\"base\",\"value\":2.5}", &r), 200);

    char long_id[400];
    snprintf(long_id, sizeof(long_id), "{\"userId\":\"%0257d\",\"value\":1}", 0);
    for (size_t i = 0; i < sizeof(bad_cases) / sizeof(bad_cases[0]); i++) {
        const char *body = bad_cases[i].body ? bad_cases[i].body : long_id;
        int st = post_event(c, body, &r);
        cr_expect_eq(st, 400, "body %s: status %d", body, st);
        char code[64], ctype[128];
        cr_expect_gt(it_json_num(r.body, "code", code, sizeof(code)), 0, "body %s: %s", body,
                     r.body);
        cr_expect_str_eq(code, bad_cases[i].code, "body %s", body);
        cr_expect_eq(strncmp(r.body, "{\"error\":{\"code\":\"", 18), 0, "%s", r.body);
        cr_expect_gt(it_json_num(r.body, "message", code, sizeof(code)), 0, "%s", r.body);
        cr_expect_gt(it_header(&r, "Content-Type", ctype, sizeof(ctype)), 0);
        cr_expect_eq(strncmp(ctype, "application/json", 16), 0, "Content-Type %s", ctype);
        /* An application error keeps the connection: the loop goes on using it. */
        cr_expect(!r.close, "body %s closed the connection", body);
    }
    /* The limits themselves are accepted: 256-byte userId, |value| = 1e15, missing value = 0. */
    char id256[400];
    snprintf(id256, sizeof(id256), "{\"userId\":\"%0256d\",\"value\":1000000000000000}", 0);
    cr_expect_eq(post_event(c, id256, &r), 200, "%s", r.body);
    cr_expect_eq(post_event(c, "{\"userId\":\"neg\",\"value\":-1e15}", &r), 200, "%s", r.body);
    cr_expect_eq(post_event(c, "{\"userId\":\"novalue\",\"other\":[1,{\"x\":2}]}", &r), 200, "%s",
                 r.body);
    expect_stats(c, "4", "4", "2.5", "0.625");
    it_conn_close(c);
    free(c);
    stop_ok(s);
}

/* "caf\u00e9" and "café" are one user; so are the escaped and raw forms of a surrogate pair
   and of "/". Two workers: the raw and escaped posts go through different connections. */
Test(event, user_ids_compared_after_unescaping)
{
    const char *args[] = {"--workers", "2", NULL};
    struct it_server *s = it_start(args, NULL);
    struct it_conn *c = malloc(2 * sizeof(*c));
    cr_assert_not_null(c);
    open_ok(&c[0], s);
    open_ok(&c[1], s);
    static struct it_resp r;
    static const char *const pairs[][2] = {
        {"caf\\u00e9", "caf\xc3\xa9"},
        {"caf\\u00E9", "\\u0063af\xc3\xa9"},
        {"smile\\ud83d\\ude00", "smile\xf0\x9f\x98\x80"},
        {"a\\/b", "a/b"},
        {"tab\\t", "tab\\u0009"},
    };
    for (size_t i = 0; i < sizeof(pairs) / sizeof(pairs[0]); i++)
        for (int k = 0; k < 2; k++) {
            char body[128];
            snprintf(body, sizeof(body), "{\"userId\":\"%s\",\"value\":1}", pairs[i][k]);
            cr_assert_eq(post_event(&c[k], body, &r), 200, "%s: %s", body, r.body);
        }
    /* and a different user that only differs after unescaping */
    cr_assert_eq(post_event(&c[0], "{\"userId\":\"cafe\",\"value\":1}", &r), 200);
    /* caf\u00e9 twice, caf\u00E9 and \u0063afé are the same user again: 4 distinct users
       (café, smile😀, a/b, tab<TAB>) plus "cafe" */
    expect_stats(&c[1], "11", "5", "11", "1");
    it_conn_close(&c[0]);
    it_conn_close(&c[1]);
    free(c);
    stop_ok(s);
}

/* ------------------------------------------------------------------ POST /reset */

static int reset_with(struct it_conn *c, const char *auth_line, struct it_resp *r)
{
    char req[512];
    snprintf(req, sizeof(req), "POST /reset HTTP/1.1\r\nHost: t\r\n%sContent-Length: 0\r\n\r\n",
             auth_line);
    int rc = it_request(c, req, r);
    cr_assert_eq(rc, 0, "POST /reset: %s", strerror(-rc));
    return r->status;
}

static void expect_code(const struct it_resp *r, const char *code)
{
    char got[64] = "";
    it_json_num(r->body, "code", got, sizeof(got));
    cr_expect_str_eq(got, code, "body: %s", r->body);
}

Test(event, reset_needs_the_admin_key_and_clears_everything)
{
    const char *args[] = {"--workers", "2", NULL};
    const char *env[] = {"RINGCOUNT_ADMIN_KEY=s3cret-key", NULL};
    struct it_server *s = it_start(args, env);
    struct it_conn *c = malloc(sizeof(*c));
    cr_assert_not_null(c);
    open_ok(c, s);
    static struct it_resp r;
    for (int i = 0; i < 20; i++) {
        char body[64];
        snprintf(body, sizeof(body), "{\"userId\":\"r%d\",\"value\":%d.25}", i, i);
        cr_assert_eq(post_event(c, body, &r), 200);
    }
    expect_stats(c, "20", "20", "195", "9.75");

    cr_expect_eq(reset_with(c, "", &r), 401);
    expect_code(&r, "UNAUTHORIZED");
    cr_expect_eq(reset_with(c, "X-API-Key: wrong\r\n", &r), 403);
    expect_code(&r, "FORBIDDEN");
    cr_expect_eq(reset_with(c, "X-API-Key: s3cret-ke\r\n", &r), 403, "a prefix of the key");
    cr_expect_eq(reset_with(c, "X-API-Key: s3cret-keyy\r\n", &r), 403, "the key plus a byte");
    cr_expect_eq(reset_with(c, "Authorization: Bearer nope\r\n", &r), 403);
    expect_stats(c, "20", "20", "195", "9.75"); /* refused resets changed nothing */

    cr_assert_eq(reset_with(c, "X-API-Key: s3cret-key\r\n", &r), 200, "%s", r.body);
    cr_expect_str_eq(r.body, "{\"status\":\"reset\"}");
    expect_stats(c, "0", "0", "0", "0");

    /* the users are gone too: r0 is new again */
    cr_assert_eq(post_event(c, "{\"userId\":\"r0\",\"value\":3}", &r), 200);
    expect_stats(c, "1", "1", "3", "3");
    cr_assert_eq(reset_with(c, "Authorization: Bearer s3cret-key\r\n", &r), 200, "%s", r.body);
    expect_stats(c, "0", "0", "0", "0");
    it_conn_close(c);
    free(c);
    stop_ok(s);
}

Test(event, reset_without_configured_key_is_disabled)
{
    struct it_server *s = it_start(NULL, NULL);
    struct it_conn *c = malloc(sizeof(*c));
    cr_assert_not_null(c);
    open_ok(c, s);
    static struct it_resp r;
    cr_assert_eq(post_event(c, "{\"userId\":\"x\",\"value\":1}", &r), 200);
    cr_expect_eq(reset_with(c, "", &r), 403);
    expect_code(&r, "ADMIN_DISABLED");
    /* even a key that would be "right" for an empty configuration */
    cr_expect_eq(reset_with(c, "X-API-Key: \r\n", &r), 403);
    expect_code(&r, "ADMIN_DISABLED");
    cr_expect_eq(reset_with(c, "X-API-Key: anything\r\n", &r), 403);
    expect_code(&r, "ADMIN_DISABLED");
    expect_stats(c, "1", "1", "1", "1");
    it_conn_close(c);
    free(c);
    stop_ok(s);
}

/* ------------------------------------------------------------------ --max-users */

Test(event, max_users_overflow_still_counts_events)
{
    const char *args[] = {"--workers", "2", "--max-users", "10", NULL};
    const char *env[] = {"RINGCOUNT_ADMIN_KEY=k", NULL};
    struct it_server *s = it_start(args, env);
    struct it_conn *c = malloc(sizeof(*c));
    cr_assert_not_null(c);
    open_ok(c, s);
    static struct it_resp r;
    for (int i = 1; i <= 11; i++) {
        char body[64];
        snprintf(body, sizeof(body), "{\"userId\":\"mu-%d\",\"value\":%d}", i, i);
        cr_assert_eq(post_event(c, body, &r), 200, "user %d: %s", i, r.body);
    }
    struct stats st;
    stats_ok(c, &st);
    cr_expect_str_eq(st.total, "11");
    cr_expect_str_eq(st.users, "10");
    cr_expect_str_eq(st.sum, "66");
    cr_expect_str_eq(st.avg, "6");
    cr_expect_str_eq(st.overflow, "1");
    /* a known user is not an overflow */
    cr_assert_eq(post_event(c, "{\"userId\":\"mu-1\",\"value\":1}", &r), 200);
    stats_ok(c, &st);
    cr_expect_str_eq(st.total, "12");
    cr_expect_str_eq(st.users, "10");
    cr_expect_str_eq(st.overflow, "1");
    /* after a reset the bound applies afresh */
    cr_assert_eq(reset_with(c, "X-API-Key: k\r\n", &r), 200);
    for (int i = 100; i < 110; i++) {
        char body[64];
        snprintf(body, sizeof(body), "{\"userId\":\"mu-%d\"}", i);
        cr_assert_eq(post_event(c, body, &r), 200);
    }
    stats_ok(c, &st);
    cr_expect_str_eq(st.total, "10");
    cr_expect_str_eq(st.users, "10");
    it_conn_close(c);
    free(c);
    stop_ok(s);
}
