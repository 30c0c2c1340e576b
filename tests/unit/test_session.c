/* Unit tests for src/session, driven without sockets: the test plays the io layer (feeds bytes
   from a scratch buffer it poisons and frees afterwards, "sends" by copying out[] and reporting
   it with sess_sent) and checks what a client would receive: exact responses, order, one
   response per request, Connection handling, 100 Continue, timeouts, output locking during a
   send, and back-pressure. Handlers are the real ones (src/app.c) on worker 0 of 1 (or of 2,
   to park a GET /stats on the cross-worker barrier). */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app.h"
#include "config.h"
#include "counters.h"
#include "metrics.h"
#include "router.h"
#include "session.h"
#include "users.h"

#define T0 1000000u      /* a monotonic "now" in ms (never 0: 0 means "no deadline") */
#define DATE_T 784111777 /* RFC 9110 §5.6.7 example: Sun, 06 Nov 1994 08:49:37 GMT */
#define DATE_HDR "Date: Sun, 06 Nov 1994 08:49:37 GMT\r\n"
#define ADMIN_KEY "s3cret-key"

static struct config cfg;
static struct sess_env env;
static struct app_io io;
static struct app_worker *aw, *aw1;
static struct sess S;
static unsigned kicks, wakes;

static void on_kick(struct sess *s)
{
    cr_assert_eq(s->env, &env);
    kicks++;
}

static void on_wake(void *ctx, unsigned target)
{
    (void)ctx;
    (void)target;
    wakes++;
}

static const char *setup_cors; /* --cors-origins of the next setup_n */
static bool setup_metrics;     /* metrics slots for the next setup_n (latency tests) */

static void setup_n(unsigned n)
{
    cr_assert_eq(cnt_init(n), 0);
    cr_assert_eq(users_init(n, 1000000, 4096), 0);
    if (setup_metrics)
        cr_assert_eq(metrics_init(n), 0);
    memset(&cfg, 0, sizeof(cfg));
    strcpy(cfg.admin_key, ADMIN_KEY);
    cfg.tenant_cache = 1024; /* --tenant-cache, --counter-cache (0 is refused) */
    cfg.counter_cache = 16384;
    if (setup_cors)
        strcpy(cfg.cors_origins, setup_cors);
    cr_assert_eq(app_init(&cfg, n), 0);
    io = (struct app_io){.ctx = NULL, .wake = on_wake};
    aw = app_worker_new(0, &io);
    cr_assert_not_null(aw);
    aw1 = n > 1 ? app_worker_new(1, &io) : NULL;
    env = (struct sess_env){
        .lim = HTTP_LIMITS_DEFAULT,
        .header_timeout_ms = 10000,
        .body_timeout_ms = 30000,
        .idle_timeout_ms = 60000,
        .ops = &app_sess_ops,
        .app = aw,
        .kick = on_kick,
    };
    sess_env_set_date(&env, DATE_T);
    memset(&S, 0, sizeof(S));
    sess_init(&S, &env, T0);
    kicks = wakes = 0;
}

static void setup1(void)
{
    setup_n(1);
}

static void setup2(void)
{
    setup_n(2);
}

static void teardown(void)
{
    sess_free(&S);
    app_worker_free(aw);
    app_worker_free(aw1);
    app_fini();
    users_fini();
    metrics_fini();
    cnt_fini();
}

TestSuite(session, .init = setup1, .fini = teardown, .timeout = 20);
TestSuite(session2, .init = setup2, .fini = teardown, .timeout = 20);

/* ---- helpers: the io layer ---- */

/* Feed like a recv completion: from a scratch buffer that is poisoned and freed afterwards
   (the provided buffer goes back to the kernel), so a session that kept a pointer into it
   would answer garbage or trip ASan. */
static int feed_n_at(struct sess *s, const char *data, size_t n, uint64_t now)
{
    char *scratch = malloc(n ? n : 1);
    cr_assert_not_null(scratch);
    memcpy(scratch, data, n);
    int rc = sess_feed(s, scratch, n, now);
    memset(scratch, 0xA5, n);
    free(scratch);
    return rc;
}

static int feed(struct sess *s, const char *str)
{
    return feed_n_at(s, str, strlen(str), T0);
}

struct buf {
    char *p;
    size_t len, cap;
};

static void buf_add(struct buf *b, const void *p, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        size_t nc = b->cap ? b->cap : 4096;
        while (nc < b->len + n + 1)
            nc *= 2;
        b->p = realloc(b->p, nc);
        cr_assert_not_null(b->p);
        b->cap = nc;
    }
    memcpy(b->p + b->len, p, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void buf_free(struct buf *b)
{
    free(b->p);
    memset(b, 0, sizeof(*b));
}

/* Send everything (full sends), resume parsing, repeat until no output is produced; what was
   "sent" is appended to wire. Returns the number of sends. */
static unsigned pump(struct sess *s, struct buf *wire)
{
    unsigned sends = 0;
    for (int guard = 0; guard < 1000000; guard++) {
        if (s->in_len && !(s->flags & SESS_PENDING))
            cr_assert_eq(sess_resume(s, T0), 0);
        if (!s->out_len)
            return sends;
        uint32_t n = sess_send_begin(s);
        cr_assert_eq(n, s->out_len);
        cr_assert_eq(s->out_locked, n);
        cr_assert_leq(s->out_len, SESS_OUT_MAX);
        buf_add(wire, s->out, n);
        cr_assert_eq(sess_sent(s, n), 0);
        cr_assert_eq(s->out_locked, 0);
        sends++;
    }
    cr_assert_fail("pump never finished");
    return sends;
}

/* ---- helpers: the client side ---- */

struct resp {
    int status;
    const char *head; /* status line .. empty line */
    size_t head_len;
    const char *body;
    size_t body_len;
};

/* Value of header `name` in r (the first), or NULL; its length in *vl. */
static const char *resp_hdr(const struct resp *r, const char *name, size_t *vl)
{
    size_t nl = strlen(name);
    const char *p = r->head, *e = r->head + r->head_len;
    while (p < e) {
        const char *eol = memmem(p, (size_t)(e - p), "\r\n", 2);
        if (!eol || eol == p)
            break;
        if ((size_t)(eol - p) > nl + 1 && strncasecmp(p, name, nl) == 0 && p[nl] == ':') {
            const char *v = p + nl + 1;
            while (*v == ' ')
                v++;
            *vl = (size_t)(eol - v);
            return v;
        }
        p = eol + 2;
    }
    return NULL;
}

static bool resp_has(const struct resp *r, const char *name, const char *value)
{
    size_t vl;
    const char *v = resp_hdr(r, name, &vl);
    return v && vl == strlen(value) && memcmp(v, value, vl) == 0;
}

/* Parse one response at p[0..n); head_req: the request was HEAD (no body follows).
   Returns the bytes it takes, 0 if p does not start with a whole well-formed response. */
static size_t resp_parse(const char *p, size_t n, bool head_req, struct resp *r)
{
    memset(r, 0, sizeof(*r));
    if (n < 16 || memcmp(p, "HTTP/1.1 ", 9) != 0)
        return 0;
    const char *end = memmem(p, n, "\r\n\r\n", 4);
    if (!end)
        return 0;
    r->status = (p[9] - '0') * 100 + (p[10] - '0') * 10 + (p[11] - '0');
    r->head = p;
    r->head_len = (size_t)(end + 4 - p);
    size_t vl;
    const char *cl = resp_hdr(r, "Content-Length", &vl);
    size_t blen = 0;
    if (cl)
        blen = strtoul(cl, NULL, 10);
    else if (r->status != 100 && r->status != 204 && r->status != 304)
        return 0; /* every other response of ours carries Content-Length */
    if (head_req || r->status == 100 || r->status == 204 || r->status == 304)
        blen = 0;
    if (r->head_len + blen > n)
        return 0;
    r->body = p + r->head_len;
    r->body_len = blen;
    return r->head_len + blen;
}

/* Split wire into responses (none of them to HEAD). Returns the count; every byte must belong
   to a response. */
static size_t resp_split(const char *p, size_t n, struct resp *out, size_t cap)
{
    size_t k = 0, off = 0;
    while (off < n) {
        cr_assert_lt(k, cap, "more responses than expected");
        size_t used = resp_parse(p + off, n - off, false, &out[k]);
        cr_assert_gt(used, 0, "garbage at byte %zu of %zu: %.40s", off, n, p + off);
        off += used;
        k++;
    }
    return k;
}

static bool body_is(const struct resp *r, const char *want)
{
    return r->body_len == strlen(want) && memcmp(r->body, want, r->body_len) == 0;
}

/* Value of "key":<digits> in r's body, or -1. */
static long long json_int(const struct resp *r, const char *key)
{
    char pat[64];
    snprintf(pat, sizeof(pat), "\"%s\":", key);
    const char *p = memmem(r->body, r->body_len, pat, strlen(pat));
    if (!p)
        return -1;
    return strtoll(p + strlen(pat), NULL, 10);
}

/* A request with an optional body (Content-Length set from it) into dst. */
static size_t mkreq(char *dst, size_t cap, const char *method, const char *path,
                    const char *hdrs, const char *body)
{
    int n;
    if (body)
        n = snprintf(dst, cap, "%s %s HTTP/1.1\r\nHost: t\r\n%sContent-Length: %zu\r\n\r\n%s",
                     method, path, hdrs ? hdrs : "", strlen(body), body);
    else
        n = snprintf(dst, cap, "%s %s HTTP/1.1\r\nHost: t\r\n%s\r\n", method, path,
                     hdrs ? hdrs : "");
    cr_assert(n > 0 && (size_t)n < cap);
    return (size_t)n;
}

static const char EV_BODY[] = "{\"userId\":\"u1\",\"value\":1.5}";
static const char HEALTH[] = "GET /health HTTP/1.1\r\nHost: t\r\n\r\n";
static const char STATS[] = "GET /stats HTTP/1.1\r\nHost: t\r\n\r\n";
static const char HEALTH_RESP[] = "HTTP/1.1 200 OK\r\n" DATE_HDR
                                  "Content-Type: application/json; charset=utf-8\r\n"
                                  "Content-Length: 20\r\n"
                                  "\r\n"
                                  "{\"status\":\"healthy\"}";

/* ---- basic request/response ---- */

Test(session, whole_request_one_exact_response)
{
    cr_assert_eq(feed(&S, HEALTH), 0);
    cr_assert_eq(kicks, 1, "one kick for the batch");
    cr_assert_eq(S.out_len, strlen(HEALTH_RESP));
    cr_assert(memcmp(S.out, HEALTH_RESP, S.out_len) == 0, "got:\n%.*s", (int)S.out_len, S.out);
    cr_assert_eq(S.in_len, 0, "nothing buffered");
    cr_assert_eq(S.flags, 0);
    cr_assert_not(sess_done(&S));
    cr_assert_eq(S.req_start_ms, 0, "no partial request, no header deadline");
}

struct date_case {
    int64_t t;
    const char *want;
};

Test(session, date_header_format)
{
    static const struct date_case cases[] = {
        {0, "Date: Thu, 01 Jan 1970 00:00:00 GMT\r\n"},
        {DATE_T, DATE_HDR},
        {951782400, "Date: Tue, 29 Feb 2000 00:00:00 GMT\r\n"},
        {1735689599, "Date: Tue, 31 Dec 2024 23:59:59 GMT\r\n"},
        {4102444800, "Date: Fri, 01 Jan 2100 00:00:00 GMT\r\n"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct sess_env e;
        memset(&e, 0, sizeof(e));
        sess_env_set_date(&e, cases[i].t);
        cr_assert_eq(e.date_len, strlen(cases[i].want));
        cr_assert_str_eq(e.date, cases[i].want);
    }
}

Test(session, every_response_has_date)
{
    char req[512];
    feed(&S, HEALTH);
    feed(&S, "GET /nope HTTP/1.1\r\nHost: t\r\n\r\n");
    mkreq(req, sizeof(req), "POST", "/event", NULL, EV_BODY);
    feed(&S, req);
    feed(&S, "OPTIONS /event HTTP/1.1\r\nHost: t\r\n\r\n");
    struct resp r[8];
    size_t n = resp_split(S.out, S.out_len, r, 8);
    cr_assert_eq(n, 4);
    for (size_t i = 0; i < n; i++)
        cr_assert(resp_has(&r[i], "Date", "Sun, 06 Nov 1994 08:49:37 GMT"), "response %zu", i);
}

Test(session, head_has_length_but_no_body)
{
    feed(&S, "HEAD /health HTTP/1.1\r\nHost: t\r\n\r\n" "GET /livez HTTP/1.1\r\nHost: t\r\n\r\n");
    static const char want[] = "HTTP/1.1 200 OK\r\n" DATE_HDR
                               "Content-Type: application/json; charset=utf-8\r\n"
                               "Content-Length: 20\r\n"
                               "\r\n"
                               "HTTP/1.1 200 OK\r\n" DATE_HDR
                               "Content-Type: application/json; charset=utf-8\r\n"
                               "Content-Length: 15\r\n"
                               "\r\n"
                               "{\"status\":\"ok\"}";
    cr_assert_eq(S.out_len, strlen(want), "got:\n%.*s", (int)S.out_len, S.out);
    cr_assert(memcmp(S.out, want, S.out_len) == 0, "got:\n%.*s", (int)S.out_len, S.out);
}

/* ---- pipelining and reassembly ---- */

/* A mix of requests covering the handlers and the framing paths (Content-Length, chunked,
   HEAD, errors that keep the connection). */
static size_t build_mix(char *dst, size_t cap)
{
    size_t n = 0;
    n += mkreq(dst + n, cap - n, "POST", "/event", NULL, EV_BODY);
    n += mkreq(dst + n, cap - n, "GET", "/health", NULL, NULL);
    n += mkreq(dst + n, cap - n, "HEAD", "/livez", NULL, NULL);
    n += mkreq(dst + n, cap - n, "POST", "/event", NULL, "{\"userId\":");
    n += mkreq(dst + n, cap - n, "GET", "/nope", NULL, NULL);
    n += mkreq(dst + n, cap - n, "PUT", "/stats", NULL, NULL);
    n += mkreq(dst + n, cap - n, "OPTIONS", "/event", NULL, NULL);
    n += (size_t)snprintf(dst + n, cap - n,
                          "POST /event HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                          "a\r\n{\"userId\":\r\n13\r\n\"u2\",\"value\":-2.25}\r\n0\r\n\r\n");
    n += mkreq(dst + n, cap - n, "GET", "/readyz", NULL, NULL);
    n += mkreq(dst + n, cap - n, "GET", "/health?x=1", NULL, NULL);
    return n;
}

Test(session, byte_at_a_time_same_output)
{
    char reqs[4096];
    size_t n = build_mix(reqs, sizeof(reqs));

    cr_assert_eq(feed_n_at(&S, reqs, 0, T0), 0); /* an empty feed is a no-op */
    cr_assert_eq(S.out_len + S.in_len + kicks, 0);
    struct buf whole = {0};
    {
        char *tmp = malloc(n);
        memcpy(tmp, reqs, n);
        cr_assert_eq(sess_feed(&S, tmp, n, T0), 0);
        free(tmp);
    }
    cr_assert_eq(kicks, 1);
    buf_add(&whole, S.out, S.out_len);

    struct sess b;
    memset(&b, 0, sizeof(b));
    sess_init(&b, &env, T0);
    for (size_t i = 0; i < n; i++)
        cr_assert_eq(feed_n_at(&b, reqs + i, 1, T0), 0);
    cr_assert_eq(b.in_len, 0);
    cr_assert_eq(b.flags, 0);
    cr_assert_eq(b.out_len, whole.len, "byte-at-a-time: %u bytes, whole: %zu", b.out_len,
                 whole.len);
    cr_assert(memcmp(b.out, whole.p, whole.len) == 0, "outputs differ:\n%.*s\n----\n%s",
              (int)b.out_len, b.out, whole.p);

    /* and it is the right output: 10 responses with these statuses */
    static const int want[] = {200, 200, 200, 400, 404, 405, 204, 200, 503, 200};
    struct resp r[16];
    size_t off = 0;
    for (size_t i = 0; i < 10; i++) {
        size_t used = resp_parse(whole.p + off, whole.len - off, i == 2, &r[i]);
        cr_assert_gt(used, 0, "response %zu", i);
        cr_assert_eq(r[i].status, want[i], "response %zu: %d", i, r[i].status);
        off += used;
    }
    cr_assert_eq(off, whole.len);
    cr_assert(resp_has(&r[2], "Content-Length", "15"), "HEAD: the GET's length");
    cr_assert(memmem(r[3].body, r[3].body_len, "\"INVALID_JSON\"", 14));
    cr_assert_not(resp_has(&r[3], "Connection", "close"), "a handler's 400 keeps the connection");
    cr_assert(resp_has(&r[5], "Allow", "GET, HEAD, OPTIONS"));
    cr_assert(resp_has(&r[6], "Allow", "POST, OPTIONS"));
    struct cnt_snapshot snap;
    cnt_snapshot(&snap);
    cr_assert_eq(snap.events, 4, "2 events per session");
    cr_assert(snap.sum == 2 * (1500000 - 2250000));
    sess_free(&b);
    buf_free(&whole);
}

/* 50 pipelined requests in one feed: 50 responses, in order, all in out before the first send
   (one kick for the batch), so they leave in one send. The /stats responses carry the number
   of events before them: any reordering shows. */
Test(session, pipeline_50_in_order_one_batch)
{
    enum { N = 50 };
    static char reqs[N * 256];
    int kind[N];
    size_t n = 0;
    for (int i = 0; i < N; i++) {
        kind[i] = i % 5;
        switch (kind[i]) {
        case 0: n += mkreq(reqs + n, sizeof(reqs) - n, "POST", "/event", NULL, EV_BODY); break;
        case 1: n += mkreq(reqs + n, sizeof(reqs) - n, "GET", "/stats", NULL, NULL); break;
        case 2: n += mkreq(reqs + n, sizeof(reqs) - n, "GET", "/health", NULL, NULL); break;
        case 3: n += mkreq(reqs + n, sizeof(reqs) - n, "GET", "/missing", NULL, NULL); break;
        default: n += mkreq(reqs + n, sizeof(reqs) - n, "DELETE", "/event", NULL, NULL); break;
        }
    }
    cr_assert_eq(feed_n_at(&S, reqs, n, T0), 0);
    cr_assert_geq(kicks, 1); /* a kick only marks the session dirty: more than one is harmless */
    cr_assert_eq(S.in_len, 0);
    struct buf wire = {0};
    cr_assert_eq(pump(&S, &wire), 1, "all 50 responses in one send");
    struct resp r[N];
    cr_assert_eq(resp_split(wire.p, wire.len, r, N), N);
    int events = 0;
    for (int i = 0; i < N; i++) {
        switch (kind[i]) {
        case 0:
            cr_assert_eq(r[i].status, 200, "#%d", i);
            cr_assert_eq(r[i].body_len, 0);
            events++;
            break;
        case 1:
            cr_assert_eq(r[i].status, 200, "#%d", i);
            cr_assert_eq(json_int(&r[i], "totalRequests"), events, "#%d out of order", i);
            cr_assert_eq(json_int(&r[i], "uniqueUsers"), 1);
            break;
        case 2:
            cr_assert_eq(r[i].status, 200, "#%d", i);
            cr_assert(body_is(&r[i], "{\"status\":\"healthy\"}"));
            break;
        case 3:
            cr_assert_eq(r[i].status, 404, "#%d", i);
            cr_assert(body_is(&r[i], "{\"error\":{\"code\":\"NOT_FOUND\",\"message\":\"no such "
                                     "route\"}}"));
            break;
        default:
            cr_assert_eq(r[i].status, 405, "#%d", i);
            cr_assert(resp_has(&r[i], "Allow", "POST, OPTIONS"));
            break;
        }
        cr_assert_not(resp_has(&r[i], "Connection", "close"), "#%d", i);
    }
    buf_free(&wire);
}

/* The first request is parsed straight from the feed; only the partial tail is kept. */
Test(session, split_request_tail_kept)
{
    static const char part1[] = "GET /health HTTP/1.1\r\nHost: t\r\n\r\nGET /liv";
    feed(&S, part1);
    cr_assert_eq(S.out_len, strlen(HEALTH_RESP), "the complete request is answered at once");
    cr_assert_eq(S.in_len, 8);
    cr_assert(memcmp(S.in, "GET /liv", 8) == 0);
    cr_assert_eq(S.req_start_ms, T0, "header deadline started by the partial request");
    feed(&S, "ez HTTP/1.1\r\nHost: t\r\n");
    cr_assert_eq(S.in_len, 8 + 22, "still partial");
    feed(&S, "\r\n" "GET /he");
    cr_assert_eq(S.in_len, 7);
    cr_assert(memcmp(S.in, "GET /he", 7) == 0);
    feed(&S, "alth HTTP/1.1\r\nHost: t\r\n\r\n");
    cr_assert_eq(S.in_len, 0);
    cr_assert_eq(S.req_start_ms, 0);
    struct resp r[4];
    cr_assert_eq(resp_split(S.out, S.out_len, r, 4), 3);
    cr_assert(body_is(&r[1], "{\"status\":\"ok\"}"));
    cr_assert(body_is(&r[2], "{\"status\":\"healthy\"}"));
}

Test(session, split_body)
{
    char req[512];
    size_t n = mkreq(req, sizeof(req), "POST", "/event", NULL, EV_BODY);
    size_t cut = n - 10;
    feed_n_at(&S, req, cut, T0);
    cr_assert_eq(S.out_len, 0);
    cr_assert_eq(S.in_len, cut);
    cr_assert_eq(S.head_done_ms, T0, "head complete, body deadline running");
    feed_n_at(&S, req + cut, n - cut, T0 + 5);
    cr_assert_eq(S.in_len, 0);
    struct resp r[2];
    cr_assert_eq(resp_split(S.out, S.out_len, r, 2), 1);
    cr_assert_eq(r[0].status, 200);
    struct cnt_snapshot snap;
    cnt_snapshot(&snap);
    cr_assert_eq(snap.events, 1);
    cr_assert(snap.sum == 1500000);
}

/* ---- protocol errors and Connection ---- */

struct bad_case {
    const char *req;
    int status;
};

Test(session, malformed_400_close_rest_ignored)
{
    static const struct bad_case cases[] = {
        {"GET  /health HTTP/1.1\r\nHost: t\r\n\r\n", 400},
        {"GET /health HTTP/1.1\r\nHost: t\r\nX-A : x\r\n\r\n", 400},
        {"GET /health HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nxx", 400},
        {"BREW /health HTTP/1.1\r\nHost: t\r\n\r\n", 501},
        {"GET /health HTTP/2.0\r\n\r\n", 505},
        {"POST /event HTTP/1.1\r\nHost: t\r\nContent-Length: 70000\r\n\r\n", 413},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        sess_init(&S, &env, T0);
        kicks = 0;
        /* a good request first: answered normally, then the bad one in the same feed */
        char buf[512];
        int n = snprintf(buf, sizeof(buf), "%s%s", HEALTH, cases[i].req);
        feed_n_at(&S, buf, (size_t)n, T0);
        cr_assert(S.flags & SESS_CLOSE, "case %zu", i);
        cr_assert_eq(S.in_len, 0);
        cr_assert_geq(kicks, 1);
        uint32_t len = S.out_len;
        struct resp r[4];
        cr_assert_eq(resp_split(S.out, S.out_len, r, 4), 2, "case %zu", i);
        cr_assert_eq(r[0].status, 200);
        cr_assert_not(resp_has(&r[0], "Connection", "close"));
        cr_assert_eq(r[1].status, cases[i].status, "case %zu: %d", i, r[1].status);
        cr_assert(resp_has(&r[1], "Connection", "close"), "case %zu", i);
        cr_assert(resp_has(&r[1], "Content-Type", SESS_JSON));
        cr_assert(memmem(r[1].body, r[1].body_len, "{\"error\":{\"code\":\"", 18) == r[1].body);
        /* later input is ignored */
        feed(&S, HEALTH);
        cr_assert_eq(S.out_len, len, "case %zu: input after the close was answered", i);
        cr_assert_eq(S.in_len, 0);
        cr_assert_not(sess_done(&S), "the error response is not sent yet");
        struct buf wire = {0};
        pump(&S, &wire);
        cr_assert(sess_done(&S), "closed once the error is sent");
        buf_free(&wire);
    }
}

Test(session, malformed_in_tail_of_partial)
{
    feed(&S, "GET /health HTTP/1.1\r\nX-A: 1\r\n");
    cr_assert_eq(S.out_len, 0);
    feed(&S, "Bad\x01Header: x\r\n\r\n");
    cr_assert(S.flags & SESS_CLOSE);
    struct resp r[2];
    cr_assert_eq(resp_split(S.out, S.out_len, r, 2), 1);
    cr_assert_eq(r[0].status, 400);
    cr_assert_eq(S.in_len, 0);
}

struct conn_case {
    const char *req;
    const char *conn; /* expected Connection value, NULL: no such header */
    bool closes;
};

Test(session, connection_handling)
{
    static const struct conn_case cases[] = {
        {"GET /health HTTP/1.0\r\n\r\n", "close", true},
        {"GET /health HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", "keep-alive", false},
        {"GET /health HTTP/1.0\r\nConnection: Keep-Alive, close\r\n\r\n", "close", true},
        {"GET /health HTTP/1.1\r\nHost: t\r\n\r\n", NULL, false},
        {"GET /health HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n", "close", true},
        {"GET /health HTTP/1.1\r\nHost: t\r\nConnection: keep-alive\r\n\r\n", NULL, false},
        {"GET /nope HTTP/1.0\r\n\r\n", "close", true},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        sess_init(&S, &env, T0);
        char buf[256];
        int n = snprintf(buf, sizeof(buf), "%s%s", cases[i].req, HEALTH);
        feed_n_at(&S, buf, (size_t)n, T0);
        struct resp r[2];
        size_t k = resp_split(S.out, S.out_len, r, 2);
        cr_assert_eq(k, cases[i].closes ? 1 : 2, "case %zu: %zu responses", i, k);
        size_t vl;
        const char *v = resp_hdr(&r[0], "Connection", &vl);
        if (cases[i].conn)
            cr_assert(v && vl == strlen(cases[i].conn) && memcmp(v, cases[i].conn, vl) == 0,
                      "case %zu", i);
        else
            cr_assert_null(v, "case %zu", i);
        cr_assert_eq(!!(S.flags & SESS_CLOSE), cases[i].closes, "case %zu", i);
        struct buf wire = {0};
        pump(&S, &wire);
        cr_assert_eq(sess_done(&S), cases[i].closes, "case %zu", i);
        buf_free(&wire);
    }
}

/* SIGTERM drain: responses say Connection: close and the session closes after them. */
Test(session, draining_closes_after_response)
{
    env.draining = true;
    feed(&S, HEALTH);
    struct resp r[2];
    cr_assert_eq(resp_split(S.out, S.out_len, r, 2), 1);
    cr_assert(resp_has(&r[0], "Connection", "close"));
    cr_assert(S.flags & SESS_CLOSE);
}

/* ---- Expect: 100-continue ---- */

static const char CONT[] = "HTTP/1.1 100 Continue\r\n\r\n";

Test(session, expect_100_once_before_body)
{
    char req[512];
    size_t n = mkreq(req, sizeof(req), "POST", "/event", "Expect: 100-continue\r\n", EV_BODY);
    size_t head = n - strlen(EV_BODY);
    feed_n_at(&S, req, head, T0);
    cr_assert_eq(S.out_len, strlen(CONT));
    cr_assert(memcmp(S.out, CONT, S.out_len) == 0);
    cr_assert_eq(kicks, 1, "the 100 is sent now, not with the response");
    feed_n_at(&S, req + head, 5, T0); /* part of the body */
    cr_assert_eq(S.out_len, strlen(CONT), "no second 100");
    feed_n_at(&S, req + head + 5, n - head - 5, T0);
    struct resp r[3];
    cr_assert_eq(resp_split(S.out, S.out_len, r, 3), 2);
    cr_assert_eq(r[0].status, 100);
    cr_assert_eq(r[1].status, 200);
    /* the next request gets its own 100 */
    uint32_t before = S.out_len;
    feed_n_at(&S, req, head, T0);
    cr_assert_eq(S.out_len, before + strlen(CONT));
    cr_assert(memcmp(S.out + before, CONT, strlen(CONT)) == 0);
}

/* Behind an earlier response in the same batch, the 100 follows it (responses stay in order). */
Test(session, expect_100_after_pipelined_response)
{
    char req[512];
    size_t n = mkreq(req, sizeof(req), "POST", "/event", "Expect: 100-continue\r\n", EV_BODY);
    struct buf in = {0};
    buf_add(&in, HEALTH, strlen(HEALTH));
    buf_add(&in, req, n - strlen(EV_BODY));
    feed_n_at(&S, in.p, in.len, T0);
    cr_assert_eq(S.out_len, strlen(HEALTH_RESP) + strlen(CONT));
    cr_assert(memcmp(S.out, HEALTH_RESP, strlen(HEALTH_RESP)) == 0);
    cr_assert(memcmp(S.out + strlen(HEALTH_RESP), CONT, strlen(CONT)) == 0);
    buf_free(&in);
}

Test(session, expect_100_not_sent_when_body_came_along)
{
    char req[512];
    size_t n = mkreq(req, sizeof(req), "POST", "/event", "Expect: 100-continue\r\n", EV_BODY);
    feed_n_at(&S, req, n, T0);
    struct resp r[2];
    cr_assert_eq(resp_split(S.out, S.out_len, r, 2), 1);
    cr_assert_eq(r[0].status, 200);
}

Test(session, expect_100_not_sent_over_limit)
{
    feed(&S, "POST /event HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 65537\r\n\r\n");
    struct resp r[2];
    cr_assert_eq(resp_split(S.out, S.out_len, r, 2), 1);
    cr_assert_eq(r[0].status, 413);
    cr_assert(S.flags & SESS_CLOSE);
}

/* ---- output locking during a send ---- */

/* What the io layer handed to the kernel: the pointer and bytes at sess_send_begin. The kernel
   may read them until sess_sent, so they must stay allocated and unchanged even when out has to
   grow meanwhile (out is then a copy and the old buffer is retired until the send completes). */
struct inflight {
    const char *p;
    uint32_t len;
    char *copy;
};

static void inflight_begin(struct sess *s, struct inflight *f)
{
    f->len = sess_send_begin(s);
    cr_assert_eq(f->len, s->out_len);
    cr_assert_eq(s->out_locked, f->len);
    f->p = s->out;
    f->copy = malloc(f->len ? f->len : 1);
    memcpy(f->copy, s->out, f->len);
}

static void inflight_check(const struct sess *s, const struct inflight *f)
{
    cr_assert(s->out == f->p || s->out_old == f->p, "the in-flight buffer was released");
    cr_assert(memcmp(f->p, f->copy, f->len) == 0, "in-flight bytes changed during the send");
    cr_assert_geq(s->out_locked, f->len);
    cr_assert(memcmp(s->out, f->copy, f->len) == 0, "out no longer starts with the sent bytes");
}

static void inflight_end(struct inflight *f)
{
    free(f->copy);
    f->copy = NULL;
}

Test(session, locked_region_stays_put)
{
    feed(&S, HEALTH);
    struct inflight f;
    inflight_begin(&S, &f);
    cr_assert_eq(f.len, strlen(HEALTH_RESP));
    feed(&S, "GET /livez HTTP/1.1\r\nHost: t\r\n\r\n" "GET /health HTTP/1.1\r\nHost: t\r\n\r\n");
    inflight_check(&S, &f);
    cr_assert_gt(S.out_len, f.len);
    uint32_t len2 = S.out_len - f.len;
    cr_assert_eq(sess_sent(&S, f.len), 0);
    cr_assert_eq(S.out_locked, 0);
    cr_assert_eq(S.out_len, len2);
    struct resp r[3];
    cr_assert_eq(resp_split(S.out, S.out_len, r, 3), 2);
    cr_assert(body_is(&r[0], "{\"status\":\"ok\"}"));
    cr_assert(body_is(&r[1], "{\"status\":\"healthy\"}"));
    inflight_end(&f);
}

/* Enough responses behind a send that out must grow while it is in flight. */
Test(session, locked_region_survives_growth)
{
    feed(&S, HEALTH);
    struct inflight f;
    inflight_begin(&S, &f);
    struct buf reqs = {0};
    for (int i = 0; i < 60; i++)
        buf_add(&reqs, HEALTH, strlen(HEALTH));
    uint32_t cap0 = S.out_cap;
    feed_n_at(&S, reqs.p, reqs.len, T0);
    cr_assert_gt(S.out_cap, cap0, "out did not grow: the test missed the growth path");
    inflight_check(&S, &f);
    struct buf wire = {0};
    buf_add(&wire, f.p, f.len);
    cr_assert_eq(sess_sent(&S, f.len), 0);
    pump(&S, &wire);
    struct resp r[62];
    cr_assert_eq(resp_split(wire.p, wire.len, r, 62), 61);
    for (int i = 0; i < 61; i++)
        cr_assert(body_is(&r[i], "{\"status\":\"healthy\"}"), "#%d", i);
    inflight_end(&f);
    buf_free(&wire);
    buf_free(&reqs);
}

Test(session, short_send_keeps_rest_locked)
{
    feed(&S, HEALTH);
    uint32_t l1 = sess_send_begin(&S);
    cr_assert_eq(sess_sent(&S, 10), l1 - 10);
    cr_assert_eq(S.out_locked, l1 - 10);
    cr_assert_eq(S.out_len, l1 - 10);
    cr_assert(memcmp(S.out, HEALTH_RESP + 10, l1 - 10) == 0);
    /* the io layer resubmits out[0..left); a response made meanwhile goes behind it */
    struct inflight f = {.p = S.out, .len = l1 - 10, .copy = malloc(l1)};
    memcpy(f.copy, S.out, f.len);
    feed(&S, HEALTH);
    inflight_check(&S, &f);
    cr_assert_eq(S.out_locked, l1 - 10);
    cr_assert_eq(S.out_len, 2 * l1 - 10);
    cr_assert_eq(sess_sent(&S, 5), l1 - 15);
    /* more than locked is clamped to the locked part */
    cr_assert_eq(sess_sent(&S, 100000), 0);
    cr_assert_eq(S.out_len, l1);
    cr_assert(memcmp(S.out, HEALTH_RESP, l1) == 0);
    cr_assert_eq(sess_send_begin(&S), l1);
    inflight_end(&f);
}

/* ---- back-pressure ---- */

/* A client pipelines `pairs` of (POST /event, GET /stats) in 4 KiB receives (the default
   --buf-size) while the send of the earlier responses is in flight; then the test completes
   sends and resumes like the io layer until all is answered. Checks: the in-flight bytes stay
   intact, out never exceeds SESS_OUT_MAX (parsing pauses instead), and every request is
   answered exactly once, in order. */
static void pipeline_under_send(unsigned pre_stats, unsigned pairs)
{
    struct buf reqs = {0};
    char one[512];
    for (unsigned i = 0; i < pre_stats; i++)
        buf_add(&reqs, STATS, strlen(STATS));
    feed_n_at(&S, reqs.p, reqs.len, T0);
    cr_assert_eq(S.in_len, 0);
    reqs.len = 0;
    for (unsigned i = 0; i < pairs; i++) {
        size_t n = mkreq(one, sizeof(one), "POST", "/event", NULL, EV_BODY);
        buf_add(&reqs, one, n);
        buf_add(&reqs, STATS, strlen(STATS));
    }
    struct buf wire = {0};
    struct inflight f;
    inflight_begin(&S, &f);
    cr_assert_gt(f.len, 0);
    bool paused = false;
    for (size_t off = 0; off < reqs.len; off += 4096) {
        size_t n = reqs.len - off < 4096 ? reqs.len - off : 4096;
        cr_assert_eq(feed_n_at(&S, reqs.p + off, n, T0), 0);
        inflight_check(&S, &f);
        cr_assert_leq(S.out_len, SESS_OUT_MAX);
        cr_assert_leq(S.out_cap, SESS_OUT_MAX);
        cr_assert_leq(S.in_len, SESS_IN_MAX);
        cr_assert_not(S.flags & (SESS_CLOSE | SESS_DEAD));
        if (S.flags & SESS_OUTFULL)
            paused = true;
    }
    cr_assert(paused, "never paused: the test did not reach the back-pressure path");
    cr_assert_gt(S.in_len, 0, "paused requests stay buffered");
    /* the send completes; from here on the io layer sends and resumes */
    buf_add(&wire, f.p, f.len);
    cr_assert_eq(sess_sent(&S, f.len), 0);
    pump(&S, &wire);
    cr_assert_eq(S.in_len, 0);
    cr_assert_not(S.flags & SESS_OUTFULL);

    size_t total = pre_stats + 2 * (size_t)pairs;
    struct resp *r = calloc(total + 1, sizeof(*r));
    size_t k = resp_split(wire.p, wire.len, r, total + 1);
    cr_assert_eq(k, total, "%zu responses for %zu requests", k, total);
    for (size_t i = 0; i < pre_stats; i++)
        cr_assert_eq(json_int(&r[i], "totalRequests"), 0);
    for (size_t j = 0; j < pairs; j++) {
        struct resp *ev = &r[pre_stats + 2 * j], *st = ev + 1;
        cr_assert_eq(ev->status, 200, "pair %zu", j);
        cr_assert_eq(ev->body_len, 0, "pair %zu: event response expected", j);
        cr_assert_eq(json_int(st, "totalRequests"), (long long)j + 1, "pair %zu out of order",
                     j);
    }
    free(r);
    inflight_end(&f);
    buf_free(&wire);
    buf_free(&reqs);
}

/* ~140 KiB already in flight, ~840 KiB of answers pipelined behind it. */
Test(session, backpressure_large_buffer)
{
    pipeline_under_send(300, 1500);
}

/* The common case: one small response in flight from the initial 4 KiB buffer. (Regression:
   before e33a1b0 these responses were silently dropped: -EAGAIN from the locked buffer.) */
Test(session, backpressure_small_buffer)
{
    pipeline_under_send(1, 1500);
}

/* No send in flight, but more answers than SESS_OUT_MAX in one go: a GET /stats parked on the
   barrier with ~2,500 requests buffered behind it, all run by one sess_resume on unpark.
   (Regression: before e33a1b0 responses past 256 KiB were dropped: -ENOBUFS.) */
Test(session2, resume_after_park_bounded_output)
{
    struct buf reqs = {0};
    buf_add(&reqs, STATS, strlen(STATS));
    enum { N = 2500 };
    static const char LIVEZ[] = "GET /livez HTTP/1.1\r\nHost: t\r\n\r\n";
    for (int i = 0; i < N; i++)
        buf_add(&reqs, LIVEZ, strlen(LIVEZ));
    for (size_t off = 0; off < reqs.len; off += 4096) {
        size_t n = reqs.len - off < 4096 ? reqs.len - off : 4096;
        feed_n_at(&S, reqs.p + off, n, T0);
    }
    cr_assert(S.flags & SESS_PENDING);
    cr_assert_eq(S.out_len, 0);
    app_on_wake(aw1, T0);
    app_on_wake(aw, T0);
    cr_assert_not(S.flags & SESS_PENDING);
    /* the io layer resumes once, then sends */
    sess_resume(&S, T0);
    cr_assert_leq(S.out_len, SESS_OUT_MAX);
    cr_assert(S.flags & SESS_OUTFULL, "%u bytes of output and not paused", S.out_len);
    struct buf wire = {0};
    pump(&S, &wire);
    struct resp *r = calloc(N + 2, sizeof(*r));
    cr_assert_eq(resp_split(wire.p, wire.len, r, N + 2), N + 1);
    cr_assert_eq(json_int(&r[0], "totalRequests"), 0);
    for (int i = 1; i <= N; i++)
        cr_assert(body_is(&r[i], "{\"status\":\"ok\"}"), "#%d", i);
    free(r);
    buf_free(&wire);
    buf_free(&reqs);
}

/* ---- parked requests (the /stats barrier across 2 workers) ---- */

Test(session2, parked_stats_keeps_order)
{
    char req[512];
    size_t n = mkreq(req, sizeof(req), "POST", "/event", NULL, EV_BODY);
    struct buf in = {0};
    buf_add(&in, req, n);
    buf_add(&in, STATS, strlen(STATS));
    buf_add(&in, HEALTH, strlen(HEALTH));
    feed_n_at(&S, in.p, in.len, T0);
    cr_assert(S.flags & SESS_PENDING, "/stats waits for worker 1");
    cr_assert_eq(S.in_len, strlen(HEALTH), "the request behind it is buffered, not answered");
    struct resp r[4];
    cr_assert_eq(resp_split(S.out, S.out_len, r, 4), 1);
    cr_assert_gt(wakes, 0, "worker 1 was asked to serve the barrier");
    cr_assert_eq(sess_tick(&S, T0 + 3600000), false, "no timeout while the server owes");
    cr_assert_not(sess_done(&S));
    /* more input while parked is buffered too */
    feed(&S, HEALTH);
    cr_assert_eq(S.in_len, 2 * strlen(HEALTH));

    app_on_wake(aw1, T0); /* worker 1 serves the barrier */
    unsigned k0 = kicks;
    app_on_wake(aw, T0);  /* worker 0 sees it and answers */
    cr_assert_not(S.flags & SESS_PENDING);
    cr_assert_gt(kicks, k0, "unpark kicks the io layer");
    struct buf wire = {0};
    pump(&S, &wire);
    struct resp w[5];
    cr_assert_eq(resp_split(wire.p, wire.len, w, 5), 4);
    cr_assert_eq(w[0].body_len, 0);
    cr_assert_eq(json_int(&w[1], "totalRequests"), 1);
    cr_assert_eq(json_int(&w[1], "uniqueUsers"), 1);
    cr_assert(body_is(&w[2], "{\"status\":\"healthy\"}"));
    cr_assert(body_is(&w[3], "{\"status\":\"healthy\"}"));
    buf_free(&wire);
    buf_free(&in);
}

/* A client that keeps sending while we cannot answer is cut off at SESS_IN_MAX. */
Test(session2, input_bound_closes)
{
    feed(&S, STATS);
    cr_assert(S.flags & SESS_PENDING);
    static char chunk[65536];
    for (size_t i = 0; i + strlen(HEALTH) <= sizeof(chunk); i += strlen(HEALTH))
        memcpy(chunk + i, HEALTH, strlen(HEALTH));
    size_t fed = 0;
    for (int i = 0; i < 40 && !(S.flags & SESS_DEAD); i++) {
        unsigned k0 = kicks;
        cr_assert_eq(feed_n_at(&S, chunk, sizeof(chunk), T0), 0);
        fed += sizeof(chunk);
        cr_assert_leq(S.in_len, SESS_IN_MAX);
        if (S.flags & SESS_DEAD)
            cr_assert_gt(kicks, k0, "the close is kicked to the io layer");
    }
    cr_assert(S.flags & SESS_DEAD, "never cut off");
    cr_assert(S.flags & SESS_CLOSE);
    cr_assert_gt(fed, SESS_IN_MAX);
    cr_assert_leq(fed, SESS_IN_MAX + sizeof(chunk));
    cr_assert(sess_done(&S));
    app_forget(aw, &S);
}

Test(session, input_bound_follows_env)
{
    struct http_limits lim = HTTP_LIMITS_DEFAULT;
    cr_assert_eq(sess_env_in_max(&lim), SESS_IN_MAX);
    lim.max_body = 8u << 20; /* --max-body 8 MiB: one legal request must still fit */
    cr_assert_geq(sess_env_in_max(&lim), lim.max_body + 2 * lim.max_head);

    env.in_max = 20000;
    /* a partial body is buffered up to the bound, one byte more is a close */
    static char big[30000];
    int h = snprintf(big, sizeof(big),
                     "POST /event HTTP/1.1\r\nHost: t\r\nContent-Length: 60000\r\n\r\n");
    memset(big + h, 'x', sizeof(big) - (size_t)h);
    feed_n_at(&S, big, 20000, T0);
    cr_assert_eq(S.in_len, 20000);
    cr_assert_not(S.flags & SESS_DEAD);
    feed_n_at(&S, big + 20000, 1, T0);
    cr_assert(S.flags & SESS_DEAD);
    cr_assert(sess_done(&S));
}

/* ---- timers ---- */

Test(session, header_timeout_408)
{
    feed_n_at(&S, "GET /health HTTP/1.1\r\nHo", 24, T0);
    cr_assert_eq(S.req_start_ms, T0);
    cr_assert_eq(sess_tick(&S, T0 + 9999), false);
    feed_n_at(&S, "st: x\r\n", 7, T0 + 9000); /* a slow trickle does not extend the deadline */
    cr_assert_eq(sess_tick(&S, T0 + 9999), false);
    cr_assert_eq(S.out_len, 0);
    unsigned k0 = kicks;
    cr_assert_eq(sess_tick(&S, T0 + 10000), true);
    cr_assert_gt(kicks, k0);
    cr_assert(S.flags & SESS_CLOSE);
    cr_assert_eq(S.in_len, 0);
    struct resp r[2];
    cr_assert_eq(resp_split(S.out, S.out_len, r, 2), 1);
    cr_assert_eq(r[0].status, 408);
    cr_assert(resp_has(&r[0], "Connection", "close"));
    cr_assert(memmem(r[0].body, r[0].body_len, "\"REQUEST_TIMEOUT\"", 17));
    /* once closing, ticks do nothing more */
    uint32_t len = S.out_len;
    cr_assert_eq(sess_tick(&S, T0 + 20000), false);
    cr_assert_eq(S.out_len, len);
}

Test(session, body_timeout_408)
{
    env.body_timeout_ms = 5000;
    feed(&S, "POST /event HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\n{\"us");
    cr_assert_eq(S.head_done_ms, T0);
    cr_assert_eq(sess_tick(&S, T0 + 4999), false);
    cr_assert_eq(sess_tick(&S, T0 + 5000), true);
    struct resp r[2];
    cr_assert_eq(resp_split(S.out, S.out_len, r, 2), 1);
    cr_assert_eq(r[0].status, 408);
    cr_assert(S.flags & SESS_CLOSE);
}

/* The deadline belongs to the request: the next one starts its own. */
Test(session, header_deadline_per_request)
{
    feed_n_at(&S, "GET /health HTTP/1.1\r\nHost: t\r\n", 31, T0);
    feed_n_at(&S, "\r\nGET /livez", 12, T0 + 8000);
    cr_assert_eq(S.req_start_ms, T0 + 8000);
    cr_assert_eq(sess_tick(&S, T0 + 17999), false);
    cr_assert_eq(sess_tick(&S, T0 + 18000), true);
}

Test(session, idle_timeout_close)
{
    cr_assert_eq(sess_tick(&S, T0 + 59999), false);
    cr_assert_not(S.flags & SESS_CLOSE);
    unsigned k0 = kicks;
    cr_assert_eq(sess_tick(&S, T0 + 60000), true);
    cr_assert_gt(kicks, k0);
    cr_assert(S.flags & SESS_CLOSE);
    cr_assert_eq(S.out_len, 0, "an idle close sends nothing");
    cr_assert(sess_done(&S));
}

Test(session, idle_counts_from_last_activity)
{
    feed_n_at(&S, HEALTH, strlen(HEALTH), T0 + 30000);
    struct buf wire = {0};
    pump(&S, &wire);
    cr_assert_eq(sess_tick(&S, T0 + 60000), false);
    cr_assert_eq(sess_tick(&S, T0 + 89999), false);
    cr_assert_eq(sess_tick(&S, T0 + 90000), true);
    buf_free(&wire);
}

Test(session, idle_not_while_output_unsent)
{
    feed(&S, HEALTH);
    cr_assert_eq(sess_tick(&S, T0 + 120000), false);
    cr_assert_not(S.flags & SESS_CLOSE);
}

Test(session, draining_closes_idle_at_once)
{
    env.draining = true;
    cr_assert_eq(sess_tick(&S, T0 + 1), true);
    cr_assert(S.flags & SESS_CLOSE);
    cr_assert(sess_done(&S));
}

Test(session, draining_keeps_partial_until_deadline)
{
    feed(&S, "GET /health HTTP/1.1\r\nHost: t\r\n");
    env.draining = true;
    cr_assert_eq(sess_tick(&S, T0 + 1), false, "a request is arriving: let it finish");
    feed(&S, "\r\n");
    struct resp r[2];
    cr_assert_eq(resp_split(S.out, S.out_len, r, 2), 1);
    cr_assert(resp_has(&r[0], "Connection", "close"));
}

/* ---- admin (POST /reset) through the session ---- */

struct auth_case {
    const char *hdrs;
    int status;
    const char *code;
};

Test(session, reset_admin_key)
{
    static const struct auth_case cases[] = {
        {"", 401, "UNAUTHORIZED"},
        {"X-API-Key: wrong\r\n", 403, "FORBIDDEN"},
        {"X-API-Key: s3cret-ke\r\n", 403, "FORBIDDEN"},
        {"X-API-Key: s3cret-keyy\r\n", 403, "FORBIDDEN"},
        {"X-API-Key: S3CRET-KEY\r\n", 403, "FORBIDDEN"},
        {"Authorization: Basic czNjcmV0LWtleQ==\r\n", 401, "UNAUTHORIZED"},
        {"Authorization: Bearer wrong\r\n", 403, "FORBIDDEN"},
        {"Authorization: Bearer s3cret-key\r\n", 200, NULL},
        {"X-API-Key: s3cret-key\r\n", 200, NULL},
    };
    char req[512];
    long long events = 0; /* since the last successful reset */
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        sess_init(&S, &env, T0);
        events++;
        size_t n = mkreq(req, sizeof(req), "POST", "/event", NULL, EV_BODY);
        n += mkreq(req + n, sizeof(req) - n, "POST", "/reset", cases[i].hdrs, NULL);
        n += mkreq(req + n, sizeof(req) - n, "GET", "/stats", NULL, NULL);
        feed_n_at(&S, req, n, T0);
        struct resp r[4];
        cr_assert_eq(resp_split(S.out, S.out_len, r, 4), 3, "case %zu", i);
        cr_assert_eq(r[1].status, cases[i].status, "case %zu: %d", i, r[1].status);
        if (cases[i].code) {
            char want[64];
            snprintf(want, sizeof(want), "\"code\":\"%s\"", cases[i].code);
            cr_assert(memmem(r[1].body, r[1].body_len, want, strlen(want)), "case %zu", i);
            cr_assert_eq(json_int(&r[2], "totalRequests"), events, "case %zu: refused, kept", i);
            if (cases[i].status == 401)
                cr_assert(resp_has(&r[1], "WWW-Authenticate", "Bearer"));
        } else {
            cr_assert(body_is(&r[1], "{\"status\":\"reset\"}"));
            cr_assert_eq(json_int(&r[2], "totalRequests"), 0, "case %zu", i);
            events = 0;
            cr_assert_eq(json_int(&r[2], "uniqueUsers"), 0, "case %zu", i);
            cr_assert(memmem(r[2].body, r[2].body_len, "\"sum\":0,\"avg\":0,", 16));
            /* the cleared users are new again */
            cr_assert_eq(users_observe(0, "u1", 2), 1, "case %zu", i);
        }
        cr_assert_not(S.flags & SESS_CLOSE);
    }
}

Test(session, reset_disabled_without_key)
{
    struct config nokey;
    memset(&nokey, 0, sizeof(nokey));
    nokey.tenant_cache = nokey.counter_cache = 64;
    cr_assert_eq(app_init(&nokey, 1), 0);
    feed(&S, "POST /reset HTTP/1.1\r\nHost: t\r\nX-API-Key: \r\nContent-Length: 0\r\n\r\n"
             "POST /reset HTTP/1.1\r\nHost: t\r\nX-API-Key: s3cret-key\r\nContent-Length: 0\r\n\r\n");
    struct resp r[3];
    cr_assert_eq(resp_split(S.out, S.out_len, r, 3), 2);
    for (int i = 0; i < 2; i++) {
        cr_assert_eq(r[i].status, 403);
        cr_assert(memmem(r[i].body, r[i].body_len, "\"ADMIN_DISABLED\"", 16));
    }
}

/* ---- CORS on the 1MRC and Increment routes (SPEC §2.3) ---- */

static void setup_cors2(void)
{
    setup_cors = "http://a.example";
    setup_n(2);
    setup_cors = NULL;
}

TestSuite(session_cors, .init = setup_cors2, .fini = teardown, .timeout = 20);

#define ORIGIN_A "Origin: http://a.example\r\n"

/* A parked /stats is answered after the request's bytes are gone: its CORS fields were kept
   in the session, and the next request (not a CORS route) gets none. */
Test(session_cors, parked_stats_answer_carries_its_cors_fields)
{
    char req[512];
    size_t n = mkreq(req, sizeof(req), "GET", "/stats", ORIGIN_A, NULL);
    n += mkreq(req + n, sizeof(req) - n, "GET", "/health", ORIGIN_A, NULL);
    feed_n_at(&S, req, n, T0);
    cr_assert(S.flags & SESS_PENDING, "/stats waits for worker 1");
    app_on_wake(aw1, T0);
    app_on_wake(aw, T0);
    struct buf wire = {0};
    pump(&S, &wire);
    struct resp r[3];
    cr_assert_eq(resp_split(wire.p, wire.len, r, 3), 2);
    cr_expect_eq(r[0].status, 200);
    cr_expect(resp_has(&r[0], "Access-Control-Allow-Origin", "http://a.example"), "%.*s",
              (int)r[0].head_len, r[0].head);
    cr_expect(resp_has(&r[0], "Vary", "Origin"));
    size_t vl;
    cr_expect_null(resp_hdr(&r[1], "Access-Control-Allow-Origin", &vl), "/health is not a CORS route");
    buf_free(&wire);
}

Test(session_cors, public_routes_get_cors_admin_routes_never)
{
    struct { const char *method, *path, *hdrs, *body; int status; bool cors; } cases[] = {
        {"OPTIONS", "/event", ORIGIN_A "Access-Control-Request-Method: POST\r\n", NULL, 204, true},
        {"OPTIONS", "/event", ORIGIN_A "Access-Control-Request-Method: DELETE\r\n", NULL, 204, false},
        {"POST", "/event", ORIGIN_A, EV_BODY, 200, true},
        {"POST", "/event", ORIGIN_A, "{", 400, true},      /* a script can read the error too */
        {"POST", "/event", "Origin: http://b.example\r\n", EV_BODY, 200, false},
        {"POST", "/event", NULL, EV_BODY, 200, false},
        {"POST", "/api/v2/increment", ORIGIN_A, "", 204, true},
        {"GET", "/api/v2/increment", ORIGIN_A, NULL, 200, true},
        {"GET", "/api/v1/counter", ORIGIN_A, NULL, 200, true},
        {"POST", "/api/v1/increment", ORIGIN_A, "", 503, true}, /* no database */
        {"OPTIONS", "/api/v1/increment", ORIGIN_A, NULL, 204, true},
        {"POST", "/reset", ORIGIN_A "X-API-Key: " ADMIN_KEY "\r\n", "", 200, false},
        {"OPTIONS", "/reset", ORIGIN_A "Access-Control-Request-Method: POST\r\n", NULL, 204, false},
        {"GET", "/health", ORIGIN_A, NULL, 200, false},
        {"GET", "/metrics", ORIGIN_A, NULL, 200, false},
        {"DELETE", "/event", ORIGIN_A, NULL, 405, false},
    };
    char req[1024];
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        sess_init(&S, &env, T0);
        size_t n = mkreq(req, sizeof(req), cases[i].method, cases[i].path, cases[i].hdrs,
                         cases[i].body);
        feed_n_at(&S, req, n, T0);
        if (S.flags & SESS_PENDING) { /* /reset: a barrier over both workers */
            app_on_wake(aw1, T0);
            app_on_wake(aw, T0);
        }
        struct buf wire = {0};
        pump(&S, &wire);
        struct resp r[2];
        cr_assert_eq(resp_split(wire.p, wire.len, r, 2), 1, "case %zu", i);
        cr_expect_eq(r[0].status, cases[i].status, "case %zu: %d", i, r[0].status);
        size_t vl;
        const char *acao = resp_hdr(&r[0], "Access-Control-Allow-Origin", &vl);
        cr_expect_eq(acao != NULL, cases[i].cors, "case %zu %s %s: %.*s", i, cases[i].method,
                     cases[i].path, (int)r[0].head_len, r[0].head);
        if (acao && strcmp(cases[i].method, "OPTIONS") == 0) {
            const char *m = resp_hdr(&r[0], "Access-Control-Allow-Methods", &vl);
            cr_expect(m && strncmp(m, strcmp(cases[i].path, "/event") == 0
                                          ? "POST, OPTIONS" : "GET, HEAD, POST, OPTIONS", vl) == 0,
                      "case %zu", i);
        }
        if (acao && strcmp(cases[i].method, "OPTIONS") != 0)
            cr_expect(resp_has(&r[0], "Access-Control-Expose-Headers",
                               "RateLimit, RateLimit-Policy, Retry-After"), "case %zu", i);
        buf_free(&wire);
    }
}

/* ---- request latency (SPEC §2.4): from the batch of the first byte, precise clock ---- */

static void setup_lat(void)
{
    setup_metrics = true;
    setup_n(1);
    setup_metrics = false;
}

TestSuite(session_lat, .init = setup_lat, .fini = teardown, .timeout = 20);

static char mtext[256 * 1024];

/* The cumulative bucket le of route event's latency histogram (0 when absent). */
static unsigned long long ev_bucket(const char *le)
{
    cr_assert_lt(metrics_render(mtext, sizeof(mtext)), sizeof(mtext));
    char series[160];
    snprintf(series, sizeof(series),
             "ringcount_http_request_duration_seconds_bucket{route=\"event\",le=\"%s\"} ", le);
    const char *p = strstr(mtext, series);
    return p ? strtoull(p + strlen(series), NULL, 10) : 0;
}

/* Feed at batch time t_ns (the io layer sets env.now_ns once per batch). */
static void feed_at_ns(const char *data, size_t n, uint64_t t_ns)
{
    env.now_ns = t_ns;
    cr_assert_eq(feed_n_at(&S, data, n, T0), 0);
    struct buf wire = {0};
    pump(&S, &wire);
    buf_free(&wire);
}

#define SEC 1000000000ull
#define MS 1000000ull

Test(session_lat, head_and_body_in_two_batches_count_from_the_first)
{
    char req[512];
    size_t n = mkreq(req, sizeof(req), "POST", "/event", NULL, EV_BODY);
    size_t head = (size_t)(strstr(req, "\r\n\r\n") + 4 - req);
    /* one write: 0 in-server time */
    feed_at_ns(req, n, 100 * SEC);
    cr_expect_eq(ev_bucket("0.0001"), 1);
    /* head, then the body 3 ms later (Python's http.client writes them separately) */
    feed_at_ns(req, head, 200 * SEC);
    feed_at_ns(req + head, n - head, 200 * SEC + 3 * MS);
    cr_expect_eq(ev_bucket("0.0001"), 1);
    cr_expect_eq(ev_bucket("0.0025"), 1, "3 ms is not <= 2.5 ms");
    cr_expect_eq(ev_bucket("0.005"), 2, "3 ms from the head's batch");
    /* three batches: from the first one (12 ms) */
    feed_at_ns(req, 10, 300 * SEC);
    feed_at_ns(req + 10, head - 10, 300 * SEC + 5 * MS);
    feed_at_ns(req + head, n - head, 300 * SEC + 12 * MS);
    cr_expect_eq(ev_bucket("0.01"), 2);
    cr_expect_eq(ev_bucket("0.025"), 3);
    cr_expect_eq(ev_bucket("+Inf"), 3);
}

Test(session_lat, pipelined_requests_are_dated_by_their_own_bytes)
{
    char reqs[1024];
    size_t n1 = mkreq(reqs, sizeof(reqs), "POST", "/event", NULL, EV_BODY);
    size_t n2 = mkreq(reqs + n1, sizeof(reqs) - n1, "POST", "/event", NULL, EV_BODY);
    size_t n3 = mkreq(reqs + n1 + n2, sizeof(reqs) - n1 - n2, "POST", "/event", NULL, EV_BODY);
    /* batch 1: request 1 whole and the start of request 2; batch 2, 7 ms later: the rest of
       request 2 and all of request 3 */
    feed_at_ns(reqs, n1 + 20, 50 * SEC);
    feed_at_ns(reqs + n1 + 20, n2 - 20 + n3, 50 * SEC + 7 * MS);
    cr_expect_eq(ev_bucket("0.0001"), 2, "requests 1 and 3 waited for nothing");
    cr_expect_eq(ev_bucket("0.005"), 2);
    cr_expect_eq(ev_bucket("0.01"), 3, "request 2: 7 ms");
}
