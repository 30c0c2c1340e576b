/* Unit tests for src/http: RFC 9112 request parsing, framing/smuggling rejections, limits at
   their exact boundaries, incremental parsing at every byte boundary, and pipelining. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http.h"

#define S(x) x, sizeof(x) - 1

static const struct http_limits deflim = HTTP_LIMITS_DEFAULT;
static struct http_req req; /* ~3 KiB: static, not on the stack */

/* Parse a private, exactly-sized copy of in[0..n) (so ASan catches any read past len).
   Unless the parse completed, the copy must be byte-identical afterwards. The copy lives until
   the next call, so req's pointers can be checked. */
static ssize_t parse_lim(const char *in, size_t n, const struct http_limits *l)
{
    static char *last;
    free(last);
    char *b = last = malloc(n ? n : 1);
    cr_assert(b);
    memcpy(b, in, n);
    ssize_t rc = http_parse(b, n, l, &req);
    if (rc <= 0)
        cr_expect(memcmp(b, in, n) == 0, "buffer modified by a parse that returned %zd", rc);
    return rc;
}

static ssize_t parse(const char *in, size_t n)
{
    return parse_lim(in, n, &deflim);
}

/* ------------------------------------------------------------------ errors, table-driven */

struct bad {
    const char *in;
    size_t n;
    int status;
    const char *what;
};

#define H11 " HTTP/1.1\r\nHost: h\r\n"

static const struct bad bad_cases[] = {
    /* request line */
    {S("BREW /" H11 "\r\n"), -501, "unknown method token"},
    {S("M-SEARCH /" H11 "\r\n"), -501, "unknown method with '-'"},
    {S("get /" H11 "\r\n"), -400, "lowercase method"},
    {S("Get /" H11 "\r\n"), -400, "mixed-case method"},
    {S("G@T /" H11 "\r\n"), -400, "non-token char in method"},
    {S(" GET /" H11 "\r\n"), -400, "empty method"},
    {S("GET  /" H11 "\r\n"), -400, "two spaces after method"},
    {S("GET /  HTTP/1.1\r\nHost: h\r\n\r\n"), -400, "two spaces after target"},
    {S("GET / HTTP/1.1 \r\nHost: h\r\n\r\n"), -400, "space after version"},
    {S("GET\tHTTP/1.1\r\nHost: h\r\n\r\n"), -400, "tab separator"},
    {S("GET\r\n\r\n"), -400, "method only"},
    {S("GET /\r\n\r\n"), -400, "HTTP/0.9 simple request"},
    {S("GET / \r\n\r\n"), -400, "missing version"},
    {S("GET / HTTP/1.1\rHost: h\r\n\r\n"), -400, "bare CR ending request line"},
    {S("GET / HTTP/2.0\r\nHost: h\r\n\r\n"), -505, "HTTP/2.0"},
    {S("GET / HTTP/1.2\r\nHost: h\r\n\r\n"), -505, "HTTP/1.2"},
    {S("GET / HTTP/0.9\r\nHost: h\r\n\r\n"), -505, "HTTP/0.9"},
    {S("GET / HTTP/3.0\r\nHost: h\r\n\r\n"), -505, "HTTP/3.0"},
    {S("BREW / HTTP/2.0\r\nHost: h\r\n\r\n"), -505, "version is decided before method"},
    {S("GET / HTTX/1.1\r\nHost: h\r\n\r\n"), -400, "HTTX"},
    {S("GET / http/1.1\r\nHost: h\r\n\r\n"), -400, "lowercase http"},
    {S("GET / HTTP/1\r\nHost: h\r\n\r\n"), -400, "HTTP/1"},
    {S("GET / HTTP/1.10\r\nHost: h\r\n\r\n"), -400, "HTTP/1.10"},
    {S("GET / HTTP/11.1\r\nHost: h\r\n\r\n"), -400, "HTTP/11.1"},
    {S("GET / HTTP/1.x\r\nHost: h\r\n\r\n"), -400, "HTTP/1.x"},
    /* request-target */
    {S("GET a" H11 "\r\n"), -400, "origin-form without '/'"},
    {S("GET *" H11 "\r\n"), -400, "asterisk-form outside OPTIONS"},
    {S("OPTIONS *x" H11 "\r\n"), -400, "asterisk followed by more"},
    {S("GET /a\x01z" H11 "\r\n"), -400, "control char in target"},
    {S("GET /a\x7fz" H11 "\r\n"), -400, "DEL in target"},
    {S("GET /a\tz" H11 "\r\n"), -400, "HTAB in target"},
    {S("GET /a\0z" H11 "\r\n"), -400, "NUL in target"},
    {S("GET /a#frag" H11 "\r\n"), -400, "fragment in target"},
    {S("GET ftp://h/p" H11 "\r\n"), -400, "non-http scheme"},
    {S("GET http:///p" H11 "\r\n"), -400, "empty authority"},
    {S("GET http://u@h/p" H11 "\r\n"), -400, "userinfo in authority"},
    {S("CONNECT h:443" H11 "\r\n"), -400, "authority-form"},
    /* empty lines before the request line: one is ignored, two are not */
    {S("\r\n\r\nGET /" H11 "\r\n"), -400, "two leading CRLF"},
    {S("\rGET /" H11 "\r\n"), -400, "leading bare CR"},
    /* field syntax */
    {S("GET / HTTP/1.1\r\nHost : h\r\n\r\n"), -400, "space before colon"},
    {S("GET / HTTP/1.1\r\nHost\t: h\r\n\r\n"), -400, "tab before colon"},
    {S("GET / HTTP/1.1\r\nHost: h\r\nX: a\r\n b\r\n\r\n"), -400, "obs-fold SP"},
    {S("GET / HTTP/1.1\r\nHost: h\r\nX: a\r\n\tb\r\n\r\n"), -400, "obs-fold HTAB"},
    {S("GET / HTTP/1.1\r\n Host: h\r\n\r\n"), -400, "whitespace before first field"},
    {S("GET / HTTP/1.1\r\nHost: h\r\nX: a\0b\r\n\r\n"), -400, "NUL in value"},
    {S("GET / HTTP/1.1\r\nHost: h\r\nX\0: a\r\n\r\n"), -400, "NUL in name"},
    {S("GET / HTTP/1.1\r\nHost: h\r\nX: a\rb\r\n\r\n"), -400, "bare CR in value"},
    {S("GET / HTTP/1.1\r\nHost: h\r\nX: a\r\r\n\r\n"), -400, "CR CR LF"},
    {S("GET / HTTP/1.1\r\nHost: h\r\n\r\r\n"), -400, "bare CR in final line"},
    {S("GET / HTTP/1.1\r\nHost: h\r\nX: a\x01\r\n\r\n"), -400, "control char in value"},
    {S("GET / HTTP/1.1\r\nHost: h\r\nX: a\x7f\r\n\r\n"), -400, "DEL in value"},
    {S("GET / HTTP/1.1\r\nHost: h\r\n: v\r\n\r\n"), -400, "empty field name"},
    {S("GET / HTTP/1.1\r\nHost: h\r\nX(y): v\r\n\r\n"), -400, "non-token field name"},
    {S("GET / HTTP/1.1\r\nHost: h\r\nNoColon\r\n\r\n"), -400, "field without colon"},
    /* Host */
    {S("GET / HTTP/1.1\r\n\r\n"), -400, "HTTP/1.1 without Host"},
    {S("GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n"), -400, "two Host"},
    {S("GET / HTTP/1.1\r\nHost: a\r\nhOST: b\r\n\r\n"), -400, "two Host, other case"},
    {S("GET / HTTP/1.1\r\nHost: a b\r\n\r\n"), -400, "space inside Host"},
    {S("GET / HTTP/1.1\r\nHost: a/b\r\n\r\n"), -400, "slash in Host"},
    /* Content-Length */
    {S("POST /" H11 "Content-Length: +5\r\n\r\nhello"), -400, "CL with sign"},
    {S("POST /" H11 "Content-Length: -5\r\n\r\nhello"), -400, "negative CL"},
    {S("POST /" H11 "Content-Length: 5 5\r\n\r\nhello"), -400, "CL with inner space"},
    {S("POST /" H11 "Content-Length: 5,5\r\n\r\nhello"), -400, "CL list"},
    {S("POST /" H11 "Content-Length: 5, 5\r\n\r\nhello"), -400, "CL list with OWS"},
    {S("POST /" H11 "Content-Length: 0x5\r\n\r\nhello"), -400, "hex CL"},
    {S("POST /" H11 "Content-Length: 5.0\r\n\r\nhello"), -400, "decimal CL"},
    {S("POST /" H11 "Content-Length:\r\n\r\nhello"), -400, "empty CL"},
    {S("POST /" H11 "Content-Length: 18446744073709551616\r\n\r\n"), -400, "CL overflow"},
    {S("POST /" H11 "Content-Length: 99999999999999999999999\r\n\r\n"), -400, "CL overflow 2"},
    {S("POST /" H11 "Content-Length: 18446744073709551615\r\n\r\n"), -413, "CL max u64"},
    {S("POST /" H11 "Content-Length: 5\r\nContent-Length: 5\r\n\r\nhello"), -400, "dup CL equal"},
    {S("POST /" H11 "Content-Length: 5\r\ncontent-length: 6\r\n\r\nhello!"), -400, "dup CL"},
    {S("POST /" H11 "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"), -400,
     "CL then TE"},
    {S("POST /" H11 "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n"), -400,
     "TE then CL"},
    /* Transfer-Encoding */
    {S("POST /" H11 "Transfer-Encoding:\x0b chunked\r\n\r\n0\r\n\r\n"), -400, "VT before TE value"},
    {S("POST /" H11 "Transfer-Encoding: xchunked\r\n\r\n0\r\n\r\n"), -400, "xchunked"},
    {S("POST /" H11 "Transfer-Encoding : chunked\r\n\r\n0\r\n\r\n"), -400, "TE space colon"},
    {S("POST /" H11 "Transfer-Encoding: chunked\r\nTransfer-encoding: identity\r\n\r\n"), -400,
     "second TE line"},
    {S("POST /" H11 "Content-Length: 5\x0b\r\n\r\nhello"), -400, "VT after CL"},
    {S("POST /" H11 "Transfer-Encoding: gzip\r\n\r\n"), -400, "TE gzip only: chunked not last"},
    {S("POST /" H11 "Transfer-Encoding: chunked, gzip\r\n\r\n"), -400, "chunked not last"},
    {S("POST /" H11 "Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n"), -501, "gzip, chunked"},
    {S("POST /" H11 "Transfer-Encoding: x-custom;q=1, chunked\r\n\r\n"), -501, "unknown coding"},
    {S("POST /" H11 "Transfer-Encoding: identity\r\n\r\n"), -400, "identity"},
    {S("POST /" H11 "Transfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n"), -400, "chunked x2"},
    {S("POST /" H11 "Transfer-Encoding: chunked;x=1\r\n\r\n0\r\n\r\n"), -400, "chunked params"},
    {S("POST /" H11 "Transfer-Encoding: chunked,\r\n\r\n0\r\n\r\n"), -400, "trailing comma"},
    {S("POST /" H11 "Transfer-Encoding: , chunked\r\n\r\n0\r\n\r\n"), -400, "leading comma"},
    {S("POST /" H11 "Transfer-Encoding:\r\n\r\n0\r\n\r\n"), -400, "empty TE"},
    {S("POST /" H11 "Transfer-Encoding: \"chunked\"\r\n\r\n0\r\n\r\n"), -400, "quoted chunked"},
    {S("POST /" H11 "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
     -400, "dup TE"},
    {S("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"), -400, "TE in 1.0"},
    /* chunked framing */
    {S("POST /" H11 "Transfer-Encoding: chunked\r\n\r\ng\r\n"), -400, "non-hex size"},
    {S("POST /" H11 "Transfer-Encoding: chunked\r\n\r\n\r\nx\r\n0\r\n\r\n"), -400, "empty size"},
    {S("POST /" H11 "Transfer-Encoding: chunked\r\n\r\n-1\r\n"), -400, "negative size"},
    {S("POST /" H11 "Transfer-Encoding: chunked\r\n\r\n+1\r\n"), -400, "signed size"},
    {S("POST /" H11 "Transfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n0\r\n\r\n"), -400,
     "0x prefix"},
    {S("POST /" H11 "Transfer-Encoding: chunked\r\n\r\n 5\r\nhello\r\n0\r\n\r\n"), -400,
     "leading space in size"},
    {S("POST /" H11 "Transfer-Encoding: chunked\r\n\r\n5 5\r\nhello\r\n0\r\n\r\n"), -400,
     "space inside size"},
    {S("POST /" H11 "Transfer-Encoding: chunked\r\n\r\n10000000000000000\r\n"), -400,
     "17 significant hex digits"},
    {S("POST /" H11 "Transfer-Encoding: chunked\r\n\r\n1000000000000000000000\r\n"), -400,
     "22 hex digits"},
    {S("POST /" H11 "Transfer-Encoding: chunked\r\n\r\nffffffffffffffff\r\n"), -413,
     "16 hex digits: fits but too large"},
    {S("POST /" H11 "Transfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n"), -400,
     "bare LF after size"},
    {S("POST /" H11 "Transfer-Encoding: chunked\r\n\r\n5\rhello\r\n0\r\n\r\n"), -400,
     "bare CR after size"},
    {S("POST /" H11 "Transfer-Encoding: chunked\r\n\r\n5\r\nhelloX\r\n0\r\n\r\n"), -400,
     "data longer than size"},
    {S("POST /" H11 "Transfer-Encoding: chunked\r\n\r\n5\r\nhell\r\n0\r\n\r\n"), -400,
     "data shorter than size"},
    {S("POST /" H11 "Transfer-Encoding: chunked\r\n\r\n5\r\nhello\n0\r\n\r\n"), -400,
     "data ended by bare LF"},
    {S("POST /" H11 "Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r0\r\n\r\n"), -400,
     "data ended by bare CR"},
    {S("POST /" H11 "Transfer-Encoding: chunked\r\n\r\n5;\r\nhello\r\n0\r\n\r\n"), -400,
     "empty extension"},
    {S("POST /" H11 "Transfer-Encoding: chunked\r\n\r\n5;=v\r\nhello\r\n0\r\n\r\n"), -400,
     "extension without name"},
    {S("POST /" H11 "Transfer-Encoding: chunked\r\n\r\n5;a=\r\nhello\r\n0\r\n\r\n"), -400,
     "extension with empty value"},
    {S("POST /" H11 "Transfer-Encoding: chunked\r\n\r\n5;a=\"x\r\nhello\r\n0\r\n\r\n"), -400,
     "unterminated quoted extension"},
    {S("POST /" H11 "Transfer-Encoding: chunked\r\n\r\n5;a\nb\r\nhello\r\n0\r\n\r\n"), -400,
     "LF inside extension"},
    {S("POST /" H11 "Transfer-Encoding: chunked\r\n\r\n5;a\x01\r\nhello\r\n0\r\n\r\n"), -400,
     "control char in extension"},
    {S("POST /" H11 "Transfer-Encoding: chunked\r\n\r\n0\r\nX: a\r\n b\r\n\r\n"), -400,
     "obs-fold in trailer"},
    {S("POST /" H11 "Transfer-Encoding: chunked\r\n\r\n0\r\nX : a\r\n\r\n"), -400,
     "space before colon in trailer"},
    {S("POST /" H11 "Transfer-Encoding: chunked\r\n\r\n0\r\nX: a\0\r\n\r\n"), -400,
     "NUL in trailer"},
    {S("POST /" H11 "Transfer-Encoding: chunked\r\n\r\n0\r\nX: a\n\r\n"), -400,
     "bare LF in trailer"},
    {S("POST /" H11 "Transfer-Encoding: chunked\r\n\r\n0\r\n\n"), -400,
     "bare LF ending the chunked message"},
    {S("POST /" H11 "Transfer-Encoding: chunked\r\n\r\n0\r\nbad trailer\r\n\r\n"), -400,
     "malformed trailer"},
    {S("POST /" H11 "Transfer-Encoding: chunked\r\n\r\n0\n\r\n"), -400, "last-chunk bare LF"},
};

Test(http_errors, table)
{
    for (size_t i = 0; i < sizeof bad_cases / sizeof bad_cases[0]; i++) {
        const struct bad *b = &bad_cases[i];
        ssize_t rc = parse(b->in, b->n);
        cr_expect_eq(rc, b->status, "[%zu] %s: got %zd, want %d", i, b->what, rc, b->status);
        if (rc < 0) cr_expect(req.error && req.error[0], "[%zu] %s: no error text", i, b->what);
    }
}

/* Errors found in a complete line are reported before the request is complete (no waiting
   for bytes that cannot make it valid). */
Test(http_errors, early_on_incomplete_request)
{
    cr_expect_eq(parse(S("POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n")), -400);
    cr_expect_eq(parse(S("POST / HTTP/2.0\r\n")), -505);
    cr_expect_eq(parse(S("BREW / HTTP/1.1\r\n")), -501);
    cr_expect_eq(parse(S("GET / HTTP/1.1\r\nHost: h\r\nX: \0")), -400);
}

/* ------------------------------------------------------------------ valid requests */

struct good {
    const char *in;
    size_t n;
    enum http_method method;
    const char *path, *query; /* query NULL: no '?' */
    uint8_t minor;
    bool keep_alive, chunked, expect_continue, has_host;
    uint64_t content_length;
    uint32_t head_len;
    const char *body;
    size_t body_len;
    uint16_t nhdr;
};

#define GET_Q                                                                                      \
    "GET /search?q=a+b&x=1 HTTP/1.1\r\nHost: example.com\r\nUser-Agent: t/1\r\nAccept: "           \
    "*/*\r\n\r\n"
#define POST_CL_HEAD                                                                               \
    "POST /v1/events HTTP/1.1\r\nHost: api.local:8080\r\nContent-Type: application/json\r\n"       \
    "Content-Length: 13\r\nExpect: 100-Continue\r\n\r\n"
#define CHUNKED_HEAD                                                                               \
    "POST /c?x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: Chunked\r\nConnection: close\r\n\r\n"
#define CHUNKED_BODY                                                                               \
    "5;name=val\r\nhello\r\n006 ; a ; b = \"q\\\"x;\" \r\n world\r\n0;last\r\nX-Trailer: t\r\n"    \
    "X-Other:  2 \r\n\r\n"
#define HTTP10 "\r\nGET /old HTTP/1.0\nConnection: Keep-Alive\nX-Pad:   v  \n\n"

static const struct good good_cases[] = {
    {S(GET_Q), HTTP_M_GET, "/search", "q=a+b&x=1", 1, true, false, false, true, 0, sizeof GET_Q - 1,
     "", 0, 3},
    {S(POST_CL_HEAD "{\"value\":1.5}"), HTTP_M_POST, "/v1/events", NULL, 1, true, false, true, true,
     13, sizeof POST_CL_HEAD - 1, "{\"value\":1.5}", 13, 4},
    {S(CHUNKED_HEAD CHUNKED_BODY), HTTP_M_POST, "/c", "x", 1, false, true, false, true, 0,
     sizeof CHUNKED_HEAD - 1, "hello world", 11, 3},
    {S(HTTP10), HTTP_M_GET, "/old", NULL, 0, true, false, false, false, 0, sizeof HTTP10 - 1, "", 0,
     2},
    {S("GET http://h:8080/p/q?z=1 HTTP/1.1\r\nHost: h:8080\r\n\r\n"), HTTP_M_GET, "/p/q", "z=1", 1,
     true, false, false, true, 0, 52, "", 0, 1},
    {S("GET HTTPS://h?z HTTP/1.1\r\nHost: h\r\n\r\n"), HTTP_M_GET, "/", "z", 1, true, false, false,
     true, 0, 37, "", 0, 1},
    {S("OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n"), HTTP_M_OPTIONS, "*", NULL, 1, true, false, false,
     true, 0, 31, "", 0, 1},
    {S("DELETE /x/%C3%A9\xc3\xa9? HTTP/1.1\r\nHost: [::1]:80\r\nConnection: keep-alive, "
       "Upgrade\r\n\r\n"),
     HTTP_M_DELETE, "/x/%C3%A9\xc3\xa9", "", 1, true, false, false, true, 0, 81, "", 0, 2},
    {S("PUT /z HTTP/1.0\r\nContent-Length: 0005\r\nExpect: 100-continue\r\n\r\nabcde"), HTTP_M_PUT,
     "/z", NULL, 0, false, false, false, false, 5, 63, "abcde", 5, 2},
};

static void check_fields(const struct good *g, size_t i)
{
    cr_expect_eq(req.method, g->method, "[%zu] method", i);
    cr_expect_eq(req.path_len, strlen(g->path), "[%zu] path_len %u", i, req.path_len);
    cr_expect(memcmp(req.path, g->path, strlen(g->path)) == 0, "[%zu] path", i);
    if (g->query) {
        cr_expect_eq(req.query_len, strlen(g->query), "[%zu] query_len", i);
        cr_expect(req.query && memcmp(req.query, g->query, strlen(g->query)) == 0, "[%zu] query",
                  i);
    } else {
        cr_expect_null(req.query, "[%zu] query", i);
        cr_expect_eq(req.query_len, 0);
    }
    cr_expect_eq(req.minor, g->minor, "[%zu] minor", i);
    cr_expect_eq(req.keep_alive, g->keep_alive, "[%zu] keep_alive", i);
    cr_expect_eq(req.chunked, g->chunked, "[%zu] chunked", i);
    cr_expect_eq(req.expect_continue, g->expect_continue, "[%zu] expect_continue", i);
    cr_expect_eq(req.has_host, g->has_host, "[%zu] has_host", i);
    cr_expect_eq(req.content_length, g->content_length, "[%zu] content_length", i);
    cr_expect_eq(req.head_len, g->head_len, "[%zu] head_len %u", i, req.head_len);
    cr_expect_eq(req.nhdr, g->nhdr, "[%zu] nhdr %u", i, req.nhdr);
    cr_expect_null(req.error, "[%zu] error", i);
}

Test(http_valid, fields_and_every_split_point)
{
    for (size_t i = 0; i < sizeof good_cases / sizeof good_cases[0]; i++) {
        const struct good *g = &good_cases[i];
        /* Every proper prefix: need more, buffer untouched, head_len only once the head is. */
        for (size_t k = 0; k < g->n; k++) {
            ssize_t rc = parse(g->in, k);
            cr_assert_eq(rc, HTTP_NEED_MORE, "[%zu] prefix %zu/%zu: rc %zd (%s)", i, k, g->n, rc,
                         req.error ? req.error : "");
            cr_assert_eq(req.head_len, k >= g->head_len ? g->head_len : 0,
                         "[%zu] prefix %zu: head_len %u", i, k, req.head_len);
            if (req.head_len) {
                cr_expect_eq(req.content_length, g->content_length, "[%zu] early CL", i);
                cr_expect_eq(req.expect_continue, g->expect_continue, "[%zu] early expect", i);
                cr_expect_null(req.body, "[%zu] body set while incomplete", i);
            }
        }
        /* Whole request, followed by bytes of a next request that must not be consumed. */
        char *b = malloc(g->n + 4);
        memcpy(b, g->in, g->n);
        memcpy(b + g->n, "GET ", 4);
        ssize_t rc = http_parse(b, g->n + 4, &deflim, &req);
        cr_assert_eq(rc, (ssize_t)g->n, "[%zu] full: rc %zd (%s)", i, rc, req.error);
        check_fields(g, i);
        cr_expect_eq(req.body_len, g->body_len, "[%zu] body_len %zu", i, req.body_len);
        cr_expect(req.body && memcmp(req.body, g->body, g->body_len) == 0, "[%zu] body", i);
        cr_expect(req.body == b + g->head_len, "[%zu] body is in place", i);
        free(b);
    }
}

Test(http_valid, header_values_and_lookup)
{
    static char in[] = HTTP10;
    cr_assert_eq(http_parse(in, sizeof in - 1, &deflim, &req), (ssize_t)(sizeof in - 1));
    const struct http_hdr *h = http_header(&req, S("x-pad"));
    cr_assert_not_null(h);
    cr_expect_eq(h->value_len, 1); /* OWS trimmed on both sides */
    cr_expect_eq(h->value[0], 'v');
    cr_expect_eq(h->name_len, 5);
    cr_expect(memcmp(h->name, "X-Pad", 5) == 0);
    cr_expect_null(http_header(&req, S("x-pa")));
    cr_expect_null(http_header(&req, S("host")));

    static char dup[] = "GET / HTTP/1.1\r\nHost: h\r\nX-A: 1\r\nx-a: 2\r\nX-Empty:\r\n\r\n";
    cr_assert_gt(http_parse(dup, sizeof dup - 1, &deflim, &req), 0);
    h = http_header(&req, S("X-A"));
    cr_assert_not_null(h);
    cr_expect_eq(h->value[0], '1', "first match wins");
    h = http_header(&req, S("x-empty"));
    cr_assert_not_null(h);
    cr_expect_eq(h->value_len, 0);
}

Test(http_valid, leading_empty_line_and_bare_lf)
{
    /* One CRLF (or LF) before the request line is ignored; head_len still counts it. */
    cr_expect_eq(parse(S("\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n")), 29);
    cr_expect_eq(req.head_len, 29);
    cr_expect_eq(parse(S("\nGET / HTTP/1.1\nHost: h\n\n")), 25);
    cr_expect_eq(parse(S("GET / HTTP/1.1\nHost: h\r\n\n")), 25);
    cr_expect_eq(parse(S("\r")), HTTP_NEED_MORE);
}

struct conn_case {
    const char *in;
    size_t n;
    bool keep_alive, expect;
};

Test(http_valid, connection_and_expect)
{
    static const struct conn_case cases[] = {
        {S("GET / HTTP/1.1\r\nHost: h\r\n\r\n"), true, false},
        {S("GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"), false, false},
        {S("GET / HTTP/1.1\r\nHost: h\r\nConnection: CLOSE\r\n\r\n"), false, false},
        {S("GET / HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, close\r\n\r\n"), false, false},
        {S("GET / HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nConnection: close\r\n\r\n"), false,
         false},
        {S("GET / HTTP/1.1\r\nHost: h\r\nConnection: closed\r\n\r\n"), true, false},
        {S("GET / HTTP/1.0\r\n\r\n"), false, false},
        {S("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"), true, false},
        {S("GET / HTTP/1.0\r\nConnection: te, Keep-Alive \r\n\r\n"), true, false},
        {S("GET / HTTP/1.0\r\nConnection: keep-alive\r\nConnection: close\r\n\r\n"), false, false},
        {S("GET / HTTP/1.0\r\nConnection: keep-alived\r\n\r\n"), false, false},
        {S("GET / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\n\r\n"), true, true},
        {S("GET / HTTP/1.1\r\nHost: h\r\nExpect:  100-CONTINUE \r\n\r\n"), true, true},
        {S("GET / HTTP/1.1\r\nHost: h\r\nExpect: 100-continued\r\n\r\n"), true, false},
        {S("GET / HTTP/1.0\r\nExpect: 100-continue\r\n\r\n"), false, false},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        cr_assert_eq(parse(cases[i].in, cases[i].n), (ssize_t)cases[i].n, "[%zu] %s", i, req.error);
        cr_expect_eq(req.keep_alive, cases[i].keep_alive, "[%zu] keep_alive", i);
        cr_expect_eq(req.expect_continue, cases[i].expect, "[%zu] expect", i);
    }
}

Test(http_valid, all_methods)
{
    char in[64];
    for (int m = 0; m < HTTP_M__COUNT; m++) {
        const char *name = http_method_name((enum http_method)m);
        cr_assert_not_null(name);
        int n = snprintf(in, sizeof in, "%s / HTTP/1.1\r\nHost: h\r\n\r\n", name);
        cr_assert_eq(parse(in, (size_t)n), n, "%s", name);
        cr_expect_eq(req.method, (enum http_method)m, "%s", name);
    }
    cr_expect_str_eq(http_method_name(HTTP_M_POST), "POST");
    cr_expect_null(http_method_name(HTTP_M__COUNT));
}

Test(http_valid, has_token)
{
    cr_expect(http_has_token(S("keep-alive, Upgrade"), S("upgrade")));
    cr_expect(http_has_token(S(" close "), S("close")));
    cr_expect(http_has_token(S(",,close,,"), S("close")));
    cr_expect(http_has_token(S("a,\tCLOSE"), S("close")));
    cr_expect_not(http_has_token(S("closed"), S("close")));
    cr_expect_not(http_has_token(S("cl ose"), S("close")));
    cr_expect_not(http_has_token(S(""), S("close")));
    cr_expect_not(http_has_token(S("keep-alive"), S("keep")));
}

/* ------------------------------------------------------------------ pipelining */

Test(http_pipeline, thousand_in_one_buffer)
{
    enum { N = 1000 };
    size_t cap = N * 160, len = 0;
    char *buf = malloc(cap);
    cr_assert(buf);
    for (int i = 0; i < N; i++) {
        int n;
        switch (i % 3) {
        case 0:
            n = snprintf(buf + len, cap - len, "GET /r/%d?i=%d HTTP/1.1\r\nHost: h\r\n\r\n", i, i);
            break;
        case 1:
            n = snprintf(buf + len, cap - len,
                         "POST /r/%d HTTP/1.1\r\nHost: h\r\nContent-Length: %d\r\n\r\nb%04d", i, 5,
                         i);
            break;
        default:
            n = snprintf(buf + len, cap - len,
                         "POST /r/%d HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
                         "2\r\nc%d\r\n3\r\n%03d\r\n0\r\n\r\n",
                         i, i % 10, i % 1000);
            break;
        }
        len += (size_t)n;
    }
    size_t off = 0;
    char want[32];
    for (int i = 0; i < N; i++) {
        ssize_t rc = http_parse(buf + off, len - off, &deflim, &req);
        cr_assert_gt(rc, 0, "request %d: rc %zd (%s)", i, rc, req.error);
        int n = snprintf(want, sizeof want, "/r/%d", i);
        cr_assert_eq(req.path_len, (uint32_t)n, "request %d", i);
        cr_assert(memcmp(req.path, want, (size_t)n) == 0, "request %d out of order", i);
        if (i % 3 == 1) {
            snprintf(want, sizeof want, "b%04d", i);
            cr_assert_eq(req.body_len, 5);
            cr_assert(memcmp(req.body, want, 5) == 0, "request %d body", i);
        } else if (i % 3 == 2) {
            snprintf(want, sizeof want, "c%d%03d", i % 10, i % 1000);
            cr_assert_eq(req.body_len, 5);
            cr_assert(memcmp(req.body, want, 5) == 0, "request %d chunked body", i);
        }
        off += (size_t)rc;
    }
    cr_expect_eq(off, len);
    cr_expect_eq(http_parse(buf + off, 0, &deflim, &req), HTTP_NEED_MORE);
    free(buf);
}

/* ------------------------------------------------------------------ limits at the boundary */

/* A request whose request line (incl CRLF) is exactly `line` bytes. */
static size_t long_line(char *out, size_t line)
{
    const size_t fixed = strlen("GET /") + strlen(" HTTP/1.1\r\n");
    memcpy(out, "GET /", 5);
    memset(out + 5, 'a', line - fixed);
    size_t n = 5 + line - fixed;
    n += (size_t)sprintf(out + n, " HTTP/1.1\r\nHost: h\r\n\r\n");
    return n;
}

Test(http_limits, request_line)
{
    static char in[9000];
    size_t n = long_line(in, 8192);
    cr_expect_eq(parse(in, n), (ssize_t)n);
    cr_expect_eq(req.target_len, 8192 - 15);
    cr_expect_eq(parse(in, 8191), HTTP_NEED_MORE, "8191 bytes without LF: still waiting");
    n = long_line(in, 8193);
    cr_expect_eq(parse(in, n), -414);
    cr_expect_eq(parse(in, 8192), -414, "8192 bytes without LF: decided before the rest arrives");
    cr_expect_eq(parse(in, 8191), HTTP_NEED_MORE);
    /* The ignored leading CRLF is not part of the request line. */
    in[0] = '\r';
    in[1] = '\n';
    n = long_line(in + 2, 8192) + 2;
    cr_expect_eq(parse(in, n), (ssize_t)n);
}

static size_t with_fields(char *out, int nfields)
{
    size_t n = (size_t)sprintf(out, "GET / HTTP/1.1\r\nHost: h\r\n");
    for (int i = 1; i < nfields; i++)
        n += (size_t)sprintf(out + n, "X-F%d: %d\r\n", i, i);
    n += (size_t)sprintf(out + n, "\r\n");
    return n;
}

Test(http_limits, field_count)
{
    static char in[8192];
    size_t n = with_fields(in, 100);
    cr_expect_eq(parse(in, n), (ssize_t)n);
    cr_expect_eq(req.nhdr, 100);
    cr_expect_eq(req.hdr[99].value_len, 2);
    cr_expect(memcmp(req.hdr[99].value, "99", 2) == 0);
    n = with_fields(in, 101);
    cr_expect_eq(parse(in, n), -431);
    /* max_fields above the hard array size is clamped: never writes past hdr[127]. */
    struct http_limits big = deflim;
    big.max_fields = 1000;
    n = with_fields(in, 128);
    cr_expect_eq(parse_lim(in, n, &big), (ssize_t)n);
    n = with_fields(in, 129);
    cr_expect_eq(parse_lim(in, n, &big), -431);
}

/* A head of exactly `total` bytes: request line, Host, one padding field, empty line. */
static size_t head_of(char *out, size_t total)
{
    size_t n = (size_t)sprintf(out, "GET / HTTP/1.1\r\nHost: h\r\nX-Pad: ");
    size_t pad = total - n - 4;
    memset(out + n, 'p', pad);
    n += pad;
    memcpy(out + n, "\r\n\r\n", 4);
    return n + 4;
}

Test(http_limits, head_size)
{
    static char in[16400];
    size_t n = head_of(in, 16384);
    cr_expect_eq(parse(in, n), 16384);
    cr_expect_eq(parse(in, 16383), HTTP_NEED_MORE);
    n = head_of(in, 16385);
    cr_expect_eq(parse(in, n), -431);
    cr_expect_eq(parse(in, 16384), -431, "decided once max_head bytes arrived without the end");
    cr_expect_eq(parse(in, 16383), HTTP_NEED_MORE);
}

Test(http_limits, content_length_body)
{
    static char in[70000];
    const char *h0 = "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 65536\r\n\r\n";
    size_t hl = strlen(h0);
    memcpy(in, h0, hl);
    memset(in + hl, 'x', 65536);
    cr_expect_eq(parse(in, hl + 65536), (ssize_t)(hl + 65536));
    cr_expect_eq(req.body_len, 65536);
    /* Head only: need more, with the head exposed (the caller sends 100 Continue). */
    cr_expect_eq(parse(in, hl), HTTP_NEED_MORE);
    cr_expect_eq(req.head_len, hl);
    cr_expect_eq(req.content_length, 65536);
    cr_expect_eq(parse(in, hl + 65535), HTTP_NEED_MORE);

    const char *h1 = "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 65537\r\n\r\n";
    cr_expect_eq(parse(h1, strlen(h1)), -413, "decided from the head, before the body");
}

Test(http_limits, chunked_body)
{
    static char in[70000];
    const char *h = "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n";
    size_t hl = strlen(h), n;
    memcpy(in, h, hl);

    /* One chunk of 65536 bytes: ok, and de-chunked in place. */
    n = hl + (size_t)sprintf(in + hl, "10000\r\n");
    memset(in + n, 'x', 65536);
    n += 65536;
    n += (size_t)sprintf(in + n, "\r\n0\r\n\r\n");
    cr_expect_eq(parse(in, n), (ssize_t)n);
    cr_expect_eq(req.body_len, 65536);

    /* 65537 in one chunk: 413 from the size line alone. */
    n = hl + (size_t)sprintf(in + hl, "10001\r\n");
    cr_expect_eq(parse(in, n), -413);

    /* 0x8000 + 0x8001: 413 at the second size line. */
    n = hl + (size_t)sprintf(in + hl, "8000\r\n");
    memset(in + n, 'y', 0x8000);
    n += 0x8000;
    n += (size_t)sprintf(in + n, "\r\n8001\r\n");
    cr_expect_eq(parse(in, n), -413);
    /* ...while 0x8000 + 0x8000 is exactly the limit. */
    n -= 3;
    n += (size_t)sprintf(in + n, "0\r\n");
    memset(in + n, 'z', 0x8000);
    n += 0x8000;
    n += (size_t)sprintf(in + n, "\r\n0\r\n\r\n");
    cr_expect_eq(parse(in, n), (ssize_t)n);
    cr_expect_eq(req.body_len, 65536);
}

Test(http_limits, chunked_wire_and_trailer_budget)
{
    /* Small limits: 1-byte chunks with long extensions exceed max_body + max_head on the wire
       long before max_body decoded bytes, so the caller's buffer stays bounded. */
    const struct http_limits l = {
        .max_line = 100, .max_head = 200, .max_fields = 10, .max_body = 100};
    static char in[2048];
    const char *h = "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n";
    size_t hl = strlen(h), n = hl;
    memcpy(in, h, hl);
    while (n - hl < 300)
        n += (size_t)sprintf(in + n, "1;ext=aaaaaaaaaaaaaaaaaaaa\r\nx\r\n");
    cr_expect_eq(parse_lim(in, hl + 299, &l), HTTP_NEED_MORE);
    cr_expect_eq(parse_lim(in, hl + 300, &l), -413);
    cr_expect_eq(parse_lim(in, n, &l), -413);

    /* Trailers share max_head with the head: a trailer section of exactly max_head - head_len
       bytes fits, one byte more does not. */
    const size_t tmax = l.max_head - hl;
    n = hl + (size_t)sprintf(in + hl, "1\r\nx\r\n0\r\n");
    const size_t ts = n;
    n += (size_t)sprintf(in + n, "T: ");
    memset(in + n, 't', tmax - 3 - 4);
    n += tmax - 3 - 4;
    n += (size_t)sprintf(in + n, "\r\n\r\n");
    cr_assert_eq(n - ts, tmax);
    cr_expect_eq(parse_lim(in, n, &l), (ssize_t)n);
    cr_expect_eq(req.body_len, 1);
    in[n - 4] = 't'; /* one byte longer */
    memcpy(in + n - 3, "\r\n\r\n", 4);
    cr_expect_eq(parse_lim(in, n + 1, &l), -431);
    cr_expect_eq(parse_lim(in, n, &l), -431, "decided once the budget is used up");
    cr_expect_eq(parse_lim(in, n - 1, &l), HTTP_NEED_MORE);
}

/* Only a complete request is de-chunked: every prefix of a chunked request leaves the buffer
   alone (checked by parse_lim), and the complete one rewrites only the body region. */
Test(http_valid, dechunk_touches_only_the_message)
{
    static const char in[] = CHUNKED_HEAD CHUNKED_BODY "NEXT";
    char b[sizeof in];
    memcpy(b, in, sizeof in);
    ssize_t rc = http_parse(b, sizeof in - 1, &deflim, &req);
    cr_assert_eq(rc, (ssize_t)(sizeof in - 1 - 4));
    cr_expect(memcmp(b, in, sizeof CHUNKED_HEAD - 1) == 0, "head untouched");
    cr_expect(memcmp(b + rc, "NEXT", 4) == 0, "next request untouched");
    cr_expect(memcmp(req.body, "hello world", 11) == 0);
    /* Pointers into the head stay valid after de-chunking. */
    cr_expect(memcmp(req.path, "/c", 2) == 0);
    cr_expect(memcmp(http_header(&req, S("connection"))->value, "close", 5) == 0);
}

/* The error table: every name has a 4xx/5xx status and a code; the parser's statuses map to
   their protocol errors (a code that pairs with the wrong status cannot be written). */
Test(http, error_table)
{
    for (int e = 0; e < HTTP_E__COUNT; e++) {
        int st = http_err_status((enum http_err)e);
        cr_expect(st >= 400 && st <= 505, "%d: status %d", e, st);
        cr_expect(strlen(http_err_code((enum http_err)e)) > 0);
        cr_expect_str_neq(http_status_reason(st), "Unknown", "%d: status %d has no reason", e, st);
    }
    cr_expect_eq(http_err_status(HTTP_E_OVERLOADED), 503);
    cr_expect_eq(http_err_status(HTTP_E_OVERLOADED_429), 429);
    cr_expect_str_eq(http_err_code(HTTP_E_OVERLOADED_429), "OVERLOADED");
    cr_expect_eq(http_err_of_status(431), HTTP_E_HEADERS_TOO_LARGE);
    cr_expect_eq(http_err_of_status(413), HTTP_E_PAYLOAD_TOO_LARGE);
    cr_expect_eq(http_err_of_status(400), HTTP_E_BAD_REQUEST);
    cr_expect_eq(http_err_of_status(999), HTTP_E_BAD_REQUEST);
}
