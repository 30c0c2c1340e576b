/* Integration tests of HTTP/1.1 behaviour and limits (SPEC §3, §2 errors) over real sockets:
   every limit with its status and the close that follows, limits checked before the body,
   chunked bodies, 100-continue, 1000 pipelined requests in order, HTTP/1.0 and Connection
   handling, 1-byte writes, 404/405/OPTIONS, header and idle timeouts, isolation of a bad
   connection from the others, --max-connections. */
#include <criterion/criterion.h>
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"

TestSuite(http, .timeout = 30);

/* ------------------------------------------------------------------ helpers (main thread) */

static void stop_ok(struct it_server *s)
{
    int rc = it_stop(s);
    char out[4096];
    it_log_copy(s, out, sizeof(out));
    cr_expect_eq(rc, 0, "server exit status %d after SIGTERM; output tail:\n%s", rc, out);
    it_free(s);
}

static void send_ok(struct it_conn *c, const void *p, size_t n)
{
    int rc = it_send_all(c->fd, p, n);
    cr_assert_eq(rc, 0, "send: %s", strerror(-rc));
}

static void read_ok(struct it_conn *c, struct it_resp *r, int timeout_ms, const char *what)
{
    int rc = it_read_response(c, r, timeout_ms);
    cr_assert_eq(rc, 0, "%s: no response (%s)", what, strerror(-rc));
}

/* A POST /event request for (user, value) into buf. Returns its length. */
static size_t event_req(char *buf, size_t cap, const char *user, const char *value)
{
    char body[256];
    int bl = snprintf(body, sizeof(body), "{\"userId\":\"%s\",\"value\":%s}", user, value);
    return (size_t)snprintf(buf, cap,
                            "POST /event HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n%s", bl,
                            body);
}

static void post_ok(struct it_conn *c, const char *user, const char *value)
{
    static struct it_resp r;
    char req[512];
    event_req(req, sizeof(req), user, value);
    int rc = it_request(c, req, &r);
    cr_assert_eq(rc, 0, "POST /event: %s", strerror(-rc));
    cr_assert_eq(r.status, 200, "POST /event %s: %d %s", user, r.status, r.body);
}

/* /stats totalRequests, uniqueUsers and sum must be exactly these. */
static void expect_totals(struct it_conn *c, const char *total, const char *users, const char *sum)
{
    static struct it_resp r;
    int rc = it_request(c, "GET /stats HTTP/1.1\r\nHost: t\r\n\r\n", &r);
    cr_assert_eq(rc, 0, "GET /stats: %s", strerror(-rc));
    cr_assert_eq(r.status, 200);
    char t[64] = "", u[64] = "", s[64] = "";
    it_json_num(r.body, "totalRequests", t, sizeof(t));
    it_json_num(r.body, "uniqueUsers", u, sizeof(u));
    it_json_num(r.body, "sum", s, sizeof(s));
    cr_expect_str_eq(t, total, "totalRequests in %s", r.body);
    cr_expect_str_eq(u, users, "uniqueUsers in %s", r.body);
    cr_expect_str_eq(s, sum, "sum in %s", r.body);
}

/* The response is a JSON error with this status, says Connection: close, and the server then
   closes the connection. */
static void expect_error_close(struct it_conn *c, const struct it_resp *r, int status,
                               const char *what)
{
    cr_expect_eq(r->status, status, "%s: got %d %s", what, r->status, r->body);
    char code[64];
    cr_expect_gt(it_json_num(r->body, "code", code, sizeof(code)), 0, "%s: error body %s", what,
                 r->body);
    cr_expect(r->close, "%s: no Connection: close in\n%s", what, r->head);
    int rc = it_expect_closed(c, 3000);
    if (rc == -EPROTO)
        cr_expect_fail("%s: %zu unexpected bytes after the response (wrong Content-Length?): "
                       "%.*s", what, c->len, (int)(c->len < 200 ? c->len : 200), c->buf);
    else
        cr_expect_eq(rc, 0, "%s: connection not closed after the error (%s)", what,
                     strerror(-rc));
}

/* Growable string for building big requests. */
struct sb {
    char *p;
    size_t n, cap;
};

static void sb_add(struct sb *b, const char *s, size_t n)
{
    if (b->n + n + 1 > b->cap) {
        b->cap = (b->n + n + 1) * 2;
        b->p = realloc(b->p, b->cap);
        cr_assert_not_null(b->p);
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = '\0';
}

static void sb_str(struct sb *b, const char *s)
{
    sb_add(b, s, strlen(s));
}

static void sb_rep(struct sb *b, char ch, size_t n)
{
    for (size_t i = 0; i < n; i++)
        sb_add(b, &ch, 1);
}

static void sb_fmt(struct sb *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_fmt(struct sb *b, const char *fmt, ...)
{
    char tmp[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
    va_end(ap);
    sb_add(b, tmp, (size_t)n);
}

/* GET <path of length so the request line incl. CRLF is line_len bytes> */
static void build_line(struct sb *b, size_t line_len)
{
    sb_str(b, "GET /");
    sb_rep(b, 'a', line_len - strlen("GET / HTTP/1.1\r\n"));
    sb_str(b, " HTTP/1.1\r\nHost: t\r\n\r\n");
}

/* GET /health whose head (through the empty line) is head_len bytes. */
static void build_head(struct sb *b, size_t head_len)
{
    static const char pre[] = "GET /health HTTP/1.1\r\nHost: t\r\nX-Pad: ";
    sb_str(b, pre);
    sb_rep(b, 'p', head_len - (sizeof(pre) - 1) - 4);
    sb_str(b, "\r\n\r\n");
}

/* GET /health with nfields header field lines in all (Host included). */
static void build_fields(struct sb *b, int nfields)
{
    sb_str(b, "GET /health HTTP/1.1\r\nHost: t\r\n");
    for (int i = 1; i < nfields; i++)
        sb_fmt(b, "X-F%d: v\r\n", i);
    sb_str(b, "\r\n");
}

/* ------------------------------------------------------------------ limits and framing */

/* Raw requests answered with an error status, then closed (SPEC §3 defaults). */
struct err_case {
    const char *name;
    const char *raw;
    int status;
};

static const struct err_case err_cases[] = {
    {"CL and TE", "POST /event HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n"
                  "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400},
    {"TE and CL", "POST /event HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n"
                  "Content-Length: 5\r\n\r\n0\r\n\r\n", 400},
    {"duplicate CL", "POST /event HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n"
                     "Content-Length: 2\r\n\r\n{}", 400},
    {"CL list", "POST /event HTTP/1.1\r\nHost: t\r\nContent-Length: 2, 2\r\n\r\n{}", 400},
    {"invalid CL", "POST /event HTTP/1.1\r\nHost: t\r\nContent-Length: 1x\r\n\r\n{}", 400},
    {"negative CL", "POST /event HTTP/1.1\r\nHost: t\r\nContent-Length: -1\r\n\r\n", 400},
    {"bad chunk size", "POST /event HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                       "zz\r\nhello\r\n0\r\n\r\n", 400},
    {"chunk size overflow", "POST /event HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n"
                            "\r\nffffffffffffffffff\r\n", 400},
    {"chunk data without CRLF", "POST /event HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked"
                                "\r\n\r\n2\r\n{}XX0\r\n\r\n", 400},
    {"chunk size is a 413", "POST /event HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n"
                            "\r\n10001\r\n", 413},
    /* RFC 9112 §6.3: chunked not last → 400; §6.1: a coding we do not know → 501 */
    {"chunked not last", "POST /event HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip\r\n\r\n",
     400},
    {"unknown coding", "POST /event HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip, chunked"
                       "\r\n\r\n", 501},
    {"unknown method", "BREW /event HTTP/1.1\r\nHost: t\r\n\r\n", 501},
    {"HTTP/2.0", "GET /health HTTP/2.0\r\nHost: t\r\n\r\n", 505},
    {"HTTP/1.2", "GET /health HTTP/1.2\r\nHost: t\r\n\r\n", 505},
    {"HTTP/0.9 style", "GET /health HTTP/0.9\r\n\r\n", 505},
    {"missing Host", "GET /health HTTP/1.1\r\n\r\n", 400},
    {"obs-fold", "GET /health HTTP/1.1\r\nHost: t\r\nX-A: a\r\n b\r\n\r\n", 400},
    {"space before colon", "GET /health HTTP/1.1\r\nHost : t\r\n\r\n", 400},
    {"TLS hello", "\x16\x03\x01\x02\xa5\x01\x02\x03\xa1\x03\x03\r\n\r\n", 400},
};

Test(http, framing_errors_answer_and_close)
{
    struct it_server *s = it_start(NULL, NULL);
    static struct it_resp r;
    for (size_t i = 0; i < sizeof(err_cases) / sizeof(err_cases[0]); i++) {
        struct it_conn *c = it_conn_new(it_port(s));
        int rc = it_request(c, err_cases[i].raw, &r);
        cr_expect_eq(rc, 0, "%s: no response (%s)", err_cases[i].name, strerror(-rc));
        if (rc == 0)
            expect_error_close(c, &r, err_cases[i].status, err_cases[i].name);
        it_conn_free(c);
    }
    /* and a NUL byte in a field value (not expressible in the table's C strings) */
    struct it_conn *c = it_conn_new(it_port(s));
    static const char nul[] = "GET /health HTTP/1.1\r\nHost: t\r\nX-A: a\0b\r\n\r\n";
    send_ok(c, nul, sizeof(nul) - 1);
    read_ok(c, &r, 5000, "NUL in a value");
    expect_error_close(c, &r, 400, "NUL in a value");
    it_conn_free(c);
    /* none of it was counted */
    c = it_conn_new(it_port(s));
    expect_totals(c, "0", "0", "0");
    it_conn_free(c);
    stop_ok(s);
}

/* Each limit at its number (served, connection kept) and one past it (status, closed). */
Test(http, limits_at_and_past_their_number)
{
    struct it_server *s = it_start(NULL, NULL);
    static struct it_resp r;
    struct {
        const char *name;
        void (*build)(struct sb *, size_t);
        size_t at;
        int ok_status, over_status;
    } lim[] = {
        {"request line 8 KiB", build_line, 8192, 404, 414},
        {"header block 16 KiB", build_head, 16384, 200, 431},
    };
    for (size_t i = 0; i < sizeof(lim) / sizeof(lim[0]); i++)
        for (int over = 0; over < 2; over++) {
            struct sb b = {0};
            lim[i].build(&b, lim[i].at + (size_t)over);
            struct it_conn *c = it_conn_new(it_port(s));
            send_ok(c, b.p, b.n);
            read_ok(c, &r, 5000, lim[i].name);
            if (over) {
                expect_error_close(c, &r, lim[i].over_status, lim[i].name);
            } else {
                cr_expect_eq(r.status, lim[i].ok_status, "%s at the limit: %d %s", lim[i].name,
                             r.status, r.body);
                cr_expect(!r.close, "%s at the limit closed", lim[i].name);
            }
            it_conn_free(c);
            free(b.p);
        }
    /* field count: 100 served, 101 → 431 */
    for (int over = 0; over < 2; over++) {
        struct sb b = {0};
        build_fields(&b, 100 + over);
        struct it_conn *c = it_conn_new(it_port(s));
        send_ok(c, b.p, b.n);
        read_ok(c, &r, 5000, "fields");
        if (over) {
            expect_error_close(c, &r, 431, "101 header fields");
        } else {
            cr_expect_eq(r.status, 200, "100 header fields: %d %s", r.status, r.body);
            cr_expect(!r.close);
        }
        it_conn_free(c);
        free(b.p);
    }
    /* body: exactly 64 KiB is served (a whitespace-padded event), 64 KiB + 1 is refused */
    struct sb b = {0};
    static const char ev[] = "{\"userId\":\"big\",\"value\":1.5}";
    sb_str(&b, "POST /event HTTP/1.1\r\nHost: t\r\nContent-Length: 65536\r\n\r\n");
    sb_str(&b, ev);
    sb_rep(&b, ' ', 65536 - (sizeof(ev) - 1));
    struct it_conn *c = it_conn_new(it_port(s));
    send_ok(c, b.p, b.n);
    read_ok(c, &r, 5000, "64 KiB body");
    cr_expect_eq(r.status, 200, "64 KiB body: %d %s", r.status, r.body);
    expect_totals(c, "1", "1", "1.5");
    it_conn_free(c);
    free(b.p);
    stop_ok(s);
}

/* 413 is decided from Content-Length before any body byte is sent; 100-continue is refused the
   same way (no "100 Continue" for a body that will be refused). */
Test(http, body_too_large_refused_before_the_body)
{
    struct it_server *s = it_start(NULL, NULL);
    static struct it_resp r;
    static const char *const heads[] = {
        "POST /event HTTP/1.1\r\nHost: t\r\nContent-Length: 65537\r\n\r\n",
        "POST /event HTTP/1.1\r\nHost: t\r\nContent-Length: 99999999999\r\n\r\n",
        "POST /event HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 70000\r\n\r\n",
    };
    for (size_t i = 0; i < sizeof(heads) / sizeof(heads[0]); i++) {
        struct it_conn *c = it_conn_new(it_port(s));
        send_ok(c, heads[i], strlen(heads[i]));
        /* no body is ever sent: the answer must come from the head alone */
        read_ok(c, &r, 3000, heads[i]);
        expect_error_close(c, &r, 413, heads[i]);
        it_conn_free(c);
    }
    stop_ok(s);
}

/* Chunked encoding of the pieces (one chunk each), then the last chunk and a trailer. */
static void build_chunked(struct sb *b, const char *const *pieces, size_t n)
{
    sb_str(b, "POST /event HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n");
    for (size_t i = 0; i < n; i++) {
        sb_fmt(b, "%zx\r\n", strlen(pieces[i]));
        sb_str(b, pieces[i]);
        sb_str(b, "\r\n");
    }
    sb_str(b, "0\r\nX-Trailer: t\r\n\r\n");
}

Test(http, chunked_event_is_counted)
{
    struct it_server *s = it_start(NULL, NULL);
    struct it_conn *c = it_conn_new(it_port(s));
    static struct it_resp r;
    static const char *const p1[] = {"{\"userId\":", "\"chunky\",\"value\":2.25}"};
    struct sb b = {0};
    build_chunked(&b, p1, 2);
    send_ok(c, b.p, b.n);
    read_ok(c, &r, 5000, "chunked event");
    cr_expect_eq(r.status, 200, "%d %s", r.status, r.body);
    /* again with many small chunks, sent 5 bytes at a time: the framing is cut everywhere */
    static const char *const p2[] = {"{\"u", "serId\"", ":\"chu", "nky2\",\"value\":", "1}"};
    free(b.p);
    b = (struct sb){0};
    build_chunked(&b, p2, 5);
    for (size_t off = 0; off < b.n; off += 5) {
        send_ok(c, b.p + off, b.n - off < 5 ? b.n - off : 5);
        usleep(2000);
    }
    read_ok(c, &r, 5000, "chunked in pieces");
    cr_expect_eq(r.status, 200, "%d %s", r.status, r.body);
    expect_totals(c, "2", "2", "3.25");
    free(b.p);
    it_conn_free(c);
    stop_ok(s);
}

Test(http, expect_100_continue)
{
    struct it_server *s = it_start(NULL, NULL);
    struct it_conn *c = it_conn_new(it_port(s));
    static struct it_resp r;
    static const char head[] = "POST /event HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\n"
                               "Content-Length: 28\r\n\r\n";
    static const char body[] = "{\"userId\":\"cont\",\"value\":7}";
    cr_assert_eq(sizeof(body) - 1, 27);
    for (int round = 0; round < 2; round++) { /* twice: the 100 is per request */
        send_ok(c, head, sizeof(head) - 1);
        read_ok(c, &r, 3000, "interim response");
        cr_assert_eq(r.status, 100, "expected 100 Continue before the body, got %d", r.status);
        cr_expect_eq(strncmp(r.head, "HTTP/1.1 100 Continue\r\n", 23), 0, "%s", r.head);
        send_ok(c, body, sizeof(body) - 1);
        send_ok(c, " ", 1);
        read_ok(c, &r, 3000, "final response");
        cr_expect_eq(r.status, 200, "%d %s", r.status, r.body);
    }
    expect_totals(c, "2", "1", "14");
    it_conn_free(c);
    stop_ok(s);
}

/* ------------------------------------------------------------------ pipelining */

struct writer {
    int fd;
    const char *p;
    size_t n;
    int rc;
};

static void *writer_main(void *arg)
{
    struct writer *w = arg;
    w->rc = it_send_all(w->fd, w->p, w->n);
    return NULL;
}

/* 1000 requests in one write (a thread writes while this one reads, so neither side's socket
   buffers can deadlock the exchange): answered in order. */
Test(http, thousand_pipelined_requests_in_order)
{
    struct it_server *s = it_start(NULL, NULL);
    struct it_conn *c = it_conn_new(it_port(s));
    struct sb b = {0};
    int events = 0;
    for (int i = 0; i < 1000; i++) {
        char req[256];
        switch (i % 3) {
        case 0:
            sb_str(&b, "GET /health HTTP/1.1\r\nHost: t\r\n\r\n");
            break;
        case 1: {
            char user[32];
            snprintf(user, sizeof(user), "p%d", i);
            size_t n = event_req(req, sizeof(req), user, "1");
            sb_add(&b, req, n);
            events++;
            break;
        }
        default:
            sb_fmt(&b, "GET /nope-%d HTTP/1.1\r\nHost: t\r\n\r\n", i);
        }
    }
    struct writer w = {.fd = c->fd, .p = b.p, .n = b.n};
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, writer_main, &w), 0);
    static struct it_resp r;
    int bad = -1;
    for (int i = 0; i < 1000; i++) {
        int rc = it_read_response(c, &r, 5000);
        if (rc < 0) {
            pthread_join(t, NULL);
            cr_assert_fail("response %d: %s", i, strerror(-rc));
        }
        int want = i % 3 == 2 ? 404 : 200;
        bool ok = r.status == want;
        if (i % 3 == 0)
            ok = ok && strcmp(r.body, "{\"status\":\"healthy\"}") == 0;
        else if (i % 3 == 1)
            ok = ok && r.body_len == 0;
        if (!ok && bad < 0) {
            bad = i;
            cr_log_error("response %d out of order: %d %s", i, r.status, r.body);
        }
    }
    pthread_join(t, NULL);
    cr_assert_eq(w.rc, 0, "writer: %s", strerror(-w.rc));
    cr_assert_eq(bad, -1, "first wrong response at %d", bad);
    char ev[16];
    snprintf(ev, sizeof(ev), "%d", events);
    expect_totals(c, ev, ev, ev);
    free(b.p);
    it_conn_free(c);
    stop_ok(s);
}

/* ------------------------------------------------------------------ connection handling */

Test(http, http10_closes_unless_keep_alive)
{
    struct it_server *s = it_start(NULL, NULL);
    static struct it_resp r;
    struct it_conn *c = it_conn_new(it_port(s));
    int rc = it_request(c, "GET /health HTTP/1.0\r\n\r\n", &r);
    cr_assert_eq(rc, 0, "%s", strerror(-rc));
    cr_expect_eq(r.status, 200);
    cr_expect_eq(it_expect_closed(c, 3000), 0, "HTTP/1.0 without keep-alive stayed open");
    it_conn_free(c);

    c = it_conn_new(it_port(s));
    for (int i = 0; i < 3; i++) {
        rc = it_request(c, "GET /health HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", &r);
        cr_assert_eq(rc, 0, "request %d on a 1.0 keep-alive connection: %s", i, strerror(-rc));
        cr_expect_eq(r.status, 200);
        char v[64] = "";
        it_header(&r, "Connection", v, sizeof(v));
        cr_expect_str_eq(v, "keep-alive", "a 1.0 keep-alive answer says so");
    }
    cr_expect_eq(it_readable(c, 300), 0, "1.0 keep-alive connection closed or sent extra bytes");
    it_conn_free(c);

    c = it_conn_new(it_port(s));
    rc = it_request(c, "GET /health HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n", &r);
    cr_assert_eq(rc, 0, "%s", strerror(-rc));
    cr_expect_eq(r.status, 200);
    cr_expect(r.close, "Connection: close not echoed");
    cr_expect_eq(it_expect_closed(c, 3000), 0, "Connection: close on 1.1 stayed open");
    it_conn_free(c);

    /* plain 1.1 stays open */
    c = it_conn_new(it_port(s));
    rc = it_request(c, "GET /health HTTP/1.1\r\nHost: t\r\n\r\n", &r);
    cr_assert_eq(rc, 0);
    cr_expect(!r.close);
    cr_expect_eq(it_readable(c, 300), 0, "HTTP/1.1 connection closed after one request");
    it_conn_free(c);
    stop_ok(s);
}

Test(http, request_in_one_byte_writes)
{
    struct it_server *s = it_start(NULL, NULL);
    struct it_conn *c = it_conn_new(it_port(s));
    char req[256];
    size_t n = event_req(req, sizeof(req), "bytewise", "3.5");
    for (int round = 0; round < 2; round++) {
        for (size_t i = 0; i < n; i++) {
            send_ok(c, req + i, 1);
            usleep(300); /* separate segments, separate receives */
        }
        static struct it_resp r;
        read_ok(c, &r, 5000, "1-byte writes");
        cr_expect_eq(r.status, 200, "%d %s", r.status, r.body);
    }
    expect_totals(c, "2", "1", "7");
    it_conn_free(c);
    stop_ok(s);
}

Test(http, not_found_and_method_not_allowed)
{
    struct it_server *s = it_start(NULL, NULL);
    struct it_conn *c = it_conn_new(it_port(s));
    static struct it_resp r;
    struct {
        const char *req;
        int status;
        const char *code;  /* NULL: no body check */
        const char *allow; /* must appear in Allow, NULL: no Allow required */
    } cases[] = {
        {"GET /nope HTTP/1.1\r\nHost: t\r\n\r\n", 404, "NOT_FOUND", NULL},
        {"POST /nope HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n", 404, "NOT_FOUND", NULL},
        {"GET /event HTTP/1.1\r\nHost: t\r\n\r\n", 405, "METHOD_NOT_ALLOWED", "POST"},
        {"DELETE /stats HTTP/1.1\r\nHost: t\r\n\r\n", 405, "METHOD_NOT_ALLOWED", "GET"},
        {"POST /health HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n", 405,
         "METHOD_NOT_ALLOWED", "GET"},
        {"GET /reset HTTP/1.1\r\nHost: t\r\n\r\n", 405, "METHOD_NOT_ALLOWED", "POST"},
        {"OPTIONS /event HTTP/1.1\r\nHost: t\r\n\r\n", 204, NULL, "POST"},
        {"OPTIONS /stats HTTP/1.1\r\nHost: t\r\n\r\n", 204, NULL, "GET"},
        {"GET /stats/ HTTP/1.1\r\nHost: t\r\n\r\n", 404, "NOT_FOUND", NULL},
        {"GET /health?x=1 HTTP/1.1\r\nHost: t\r\n\r\n", 200, NULL, NULL},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int rc = it_request(c, cases[i].req, &r);
        cr_assert_eq(rc, 0, "%s: %s", cases[i].req, strerror(-rc));
        cr_expect_eq(r.status, cases[i].status, "%s-> %d", cases[i].req, r.status);
        if (cases[i].code) {
            char code[64] = "", ct[128] = "";
            it_json_num(r.body, "code", code, sizeof(code));
            cr_expect_str_eq(code, cases[i].code, "%s-> %s", cases[i].req, r.body);
            cr_expect_eq(strncmp(r.body, "{\"error\":{\"code\":", 17), 0, "%s", r.body);
            it_header(&r, "Content-Type", ct, sizeof(ct));
            cr_expect_eq(strncmp(ct, "application/json", 16), 0, "Content-Type: %s", ct);
        }
        if (cases[i].allow) {
            char allow[128] = "";
            cr_expect_gt(it_header(&r, "Allow", allow, sizeof(allow)), 0, "%s: no Allow",
                         cases[i].req);
            cr_expect_not_null(strstr(allow, cases[i].allow), "%s: Allow: %s", cases[i].req,
                               allow);
        }
        cr_expect(!r.close, "%s closed the connection", cases[i].req);
    }
    it_conn_free(c);
    stop_ok(s);
}

/* ------------------------------------------------------------------ timeouts */

Test(http, header_timeout_is_408_and_close)
{
    const char *args[] = {"--header-timeout-ms", "1000", NULL};
    struct it_server *s = it_start(args, NULL);
    struct it_conn *c = it_conn_new(it_port(s));
    static struct it_resp r;
    uint64_t t0 = it_now_ms();
    send_ok(c, "GET /health HTTP/1.1\r\nHost: t\r\n", 31);
    read_ok(c, &r, 4000, "header timeout");
    uint64_t ms = it_now_ms() - t0;
    expect_error_close(c, &r, 408, "header timeout");
    cr_expect_geq(ms, 900, "408 after only %llu ms (deadline 1000 ms)", (unsigned long long)ms);
    it_conn_free(c);
    /* a slow but complete head within the deadline is served */
    c = it_conn_new(it_port(s));
    send_ok(c, "GET /health HTTP/1.1\r\n", 22);
    usleep(300000);
    send_ok(c, "Host: t\r\n\r\n", 11);
    read_ok(c, &r, 3000, "slow head");
    cr_expect_eq(r.status, 200);
    it_conn_free(c);
    stop_ok(s);
}

Test(http, idle_keep_alive_is_closed)
{
    const char *args[] = {"--idle-timeout-ms", "1000", NULL};
    struct it_server *s = it_start(args, NULL);
    struct it_conn *c = it_conn_new(it_port(s));
    static struct it_resp r;
    int rc = it_request(c, "GET /health HTTP/1.1\r\nHost: t\r\n\r\n", &r);
    cr_assert_eq(rc, 0);
    uint64_t t0 = it_now_ms();
    rc = it_expect_closed(c, 4000);
    uint64_t ms = it_now_ms() - t0;
    cr_expect_eq(rc, 0, "idle connection still open after 4 s (%s)", strerror(-rc));
    cr_expect_geq(ms, 900, "idle connection closed after only %llu ms", (unsigned long long)ms);
    it_conn_free(c);
    stop_ok(s);
}

/* ------------------------------------------------------------------ isolation and overload */

Test(http, garbage_on_one_connection_touches_no_other)
{
    const char *args[] = {"--workers", "2", NULL};
    struct it_server *s = it_start(args, NULL);
    static struct it_resp r;
    struct it_conn *a = it_conn_new(it_port(s));
    post_ok(a, "iso-a", "1");

    /* a half-sent event that never completes */
    struct it_conn *half = it_conn_new(it_port(s));
    static const char part[] = "POST /event HTTP/1.1\r\nHost: t\r\nContent-Length: 40\r\n\r\n"
                               "{\"userId\":\"evil-half\",";
    send_ok(half, part, sizeof(part) - 1);

    /* garbage, a smuggling attempt carrying a valid event, a broken chunked event */
    static const char *const evil[] = {
        "\x16\x03\x01\x02\x01\x01\x02\x01\xfc\x03\x03garbage\r\n\r\n",
        "POST /event HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\nContent-Length: 38\r\n\r\n"
        "{\"userId\":\"evil-smuggle\",\"value\":100}",
        "POST /event HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
        "1a\r\n{\"userId\":\"evil-chunk\",\"v\r\nzz\r\n",
    };
    for (size_t i = 0; i < sizeof(evil) / sizeof(evil[0]); i++) {
        struct it_conn *e = it_conn_new(it_port(s));
        int rc = it_request(e, evil[i], &r);
        cr_expect_eq(rc, 0, "evil %zu: %s", i, strerror(-rc));
        if (rc == 0)
            expect_error_close(e, &r, 400, "evil request");
        it_conn_free(e);
    }
    /* an application-level error does not close or poison its own connection either */
    struct it_conn *b = it_conn_new(it_port(s));
    static const char badjson[] = "POST /event HTTP/1.1\r\nHost: t\r\nContent-Length: 13\r\n\r\n"
                                  "{\"userId\":\"x\"";
    int rc = it_request(b, badjson, &r);
    cr_assert_eq(rc, 0);
    cr_expect_eq(r.status, 400);
    post_ok(b, "iso-b", "2");

    post_ok(a, "iso-a2", "0.5");
    expect_totals(a, "3", "3", "3.5");
    it_conn_free(half);
    expect_totals(b, "3", "3", "3.5");
    it_conn_free(a);
    it_conn_free(b);
    stop_ok(s);
}

Test(http, max_connections_rejects_the_sixth)
{
    const char *args[] = {"--workers", "2", "--max-connections", "5", NULL};
    struct it_server *s = it_start(args, NULL);
    static struct it_resp r;
    struct it_conn *c[5];
    for (int i = 0; i < 5; i++) {
        c[i] = it_conn_new(it_port(s));
        int rc = it_request(c[i], "GET /health HTTP/1.1\r\nHost: t\r\n\r\n", &r);
        cr_assert_eq(rc, 0, "connection %d: %s", i, strerror(-rc));
        cr_assert_eq(r.status, 200);
    }
    struct it_conn *six = it_conn_new(it_port(s)); /* the kernel accepts it; the server must refuse */
    read_ok(six, &r, 3000, "6th connection");
    expect_error_close(six, &r, 503, "6th connection");
    char ra[16] = "";
    cr_expect_gt(it_header(&r, "Retry-After", ra, sizeof(ra)), 0, "503 without Retry-After");
    it_conn_free(six);
    for (int i = 0; i < 5; i++) {
        char user[16];
        snprintf(user, sizeof(user), "mc%d", i);
        post_ok(c[i], user, "1");
    }
    expect_totals(c[0], "5", "5", "5");
    /* a freed slot is usable again */
    it_conn_free(c[4]);
    bool served = false;
    for (int tries = 0; tries < 40 && !served; tries++) {
        usleep(50000);
        struct it_conn *n = it_conn_new(it_port(s));
        int rc = it_request(n, "GET /health HTTP/1.1\r\nHost: t\r\n\r\n", &r);
        served = rc == 0 && r.status == 200;
        it_conn_free(n);
    }
    cr_expect(served, "no new connection served after one of the five closed");
    for (int i = 0; i < 4; i++)
        it_conn_free(c[i]);
    stop_ok(s);
}

/* One 512-byte provided buffer per worker: receives keep failing with -ENOBUFS and must be
   re-armed, never dropping a connection or a byte (SPEC §3: ENOBUFS never spins). */
Test(http, tiny_buffer_ring_loses_nothing)
{
    const char *args[] = {"--workers", "1", "--buf-count", "1", "--buf-size", "512", NULL};
    struct it_server *s = it_start(args, NULL);
    enum { NCONN = 16, PER = 20 };
    struct it_conn *c[NCONN];
    static struct it_resp r;
    for (int i = 0; i < NCONN; i++) {
        c[i] = it_conn_new(it_port(s));
        struct sb b = {0};
        for (int k = 0; k < PER; k++) {
            char req[256], user[32];
            snprintf(user, sizeof(user), "nb-%d-%d", i, k);
            size_t n = event_req(req, sizeof(req), user, "0.5");
            sb_add(&b, req, n);
        }
        send_ok(c[i], b.p, b.n); /* ~2.4 KiB each: several receives per connection */
        free(b.p);
    }
    for (int i = 0; i < NCONN; i++)
        for (int k = 0; k < PER; k++) {
            read_ok(c[i], &r, 5000, "tiny buffer ring");
            cr_assert_eq(r.status, 200, "connection %d request %d: %d %s", i, k, r.status,
                         r.body);
        }
    expect_totals(c[0], "320", "320", "160");
    for (int i = 0; i < NCONN; i++)
        it_conn_free(c[i]);
    stop_ok(s);
}
