/*
 * fuzz_http — libFuzzer target for the HTTP/1.1 request parser (src/http.c).
 *
 * Input: byte 0 selects the limits (even: the SPEC defaults; odd: small limits built from byte 0
 * and byte 1, so the 414/431/413 edges are reachable with short inputs); the rest is what a
 * client sent on one connection: parsed as a pipelined sequence, one request after another, the
 * way src/session does.
 *
 * Invariants checked on every request of the sequence (each parse runs on an exact-size copy):
 *  - the result is a complete length, HTTP_NEED_MORE, or one of -400 -413 -414 -431 -501 -505
 *    (with an error text); nothing else;
 *  - a parse that does not complete leaves the buffer byte-identical, and parsing it again gives
 *    the same answer (the caller re-parses from the start on every arrival);
 *  - a complete parse writes only inside the message (de-chunking), never past its length;
 *    every pointer of struct http_req lies inside the message; lengths and limits agree
 *    (body <= max_body, Content-Length framing exact, nhdr <= max_fields, Host iff has_host);
 *  - prefix property (the answer does not depend on how TCP split the bytes): for a prefix of
 *    the same bytes, the parse gives HTTP_NEED_MORE, or the very same error as the whole.
 */
#include "fz.h"
#include "http.h"

static struct http_req req; /* ~3 KiB: static, not on the stack */

/* At most this many prefixes are re-parsed per request (all of them for short requests). */
#define PREFIX_SAMPLES 24
#define MAX_PIPELINE 64

static void limits_from(uint8_t mode, uint8_t b, struct http_limits *lim)
{
    static const uint64_t bodies[8] = {1, 2, 5, 16, 100, 1000, 4096, 65536};
    /* Within the --max-line / --max-head / --max-fields / --max-body ranges of src/config.c. */
    lim->max_line = 64 + (uint32_t)(b & 15) * 32;          /* 64..544 */
    lim->max_head = 256 + (uint32_t)(b >> 4) * 64;         /* 256..1216 */
    lim->max_fields = 1 + (uint32_t)((mode >> 1) & 15) * 8; /* 1..121 */
    lim->max_body = bodies[mode >> 5];
}

static bool in(const void *p, size_t n, const char *lo, const char *hi)
{
    const char *c = p;
    return c >= lo && c <= hi && n <= (size_t)(hi - c);
}

/* A complete request of r bytes parsed from b (orig: the bytes before the parse, len total). */
static void check_complete(const char *b, const char *orig, size_t len, ssize_t r,
                           const struct http_limits *lim)
{
    const char *end = b + r;
    FZ_CHECK((size_t)r <= len, "r=%zd len=%zu", r, len);
    FZ_CHECK(req.error == NULL, "error text on success: %s", req.error);
    FZ_CHECK(req.head_len > 0 && req.head_len <= (size_t)r, "head_len=%u r=%zd", req.head_len, r);
    FZ_CHECK((unsigned)req.method < HTTP_M__COUNT, "method %d", (int)req.method);
    FZ_CHECK(req.minor <= 1, "minor %u", req.minor);
    uint32_t maxf = lim->max_fields < HTTP_MAX_FIELDS ? lim->max_fields : HTTP_MAX_FIELDS;
    FZ_CHECK(req.nhdr <= maxf, "nhdr %u > %u", req.nhdr, maxf);
    const char *head_end = b + req.head_len;
    FZ_CHECK(req.target_len > 0 && in(req.target, req.target_len, b, head_end), "target");
    bool static_slash = req.path_len == 1 && req.path[0] == '/' &&
                        !in(req.path, 1, req.target, req.target + req.target_len);
    FZ_CHECK(req.path_len > 0 &&
                 (static_slash || in(req.path, req.path_len, req.target,
                                     req.target + req.target_len)),
             "path outside the target");
    if (req.query)
        FZ_CHECK(in(req.query, req.query_len, req.target, req.target + req.target_len), "query");
    else
        FZ_CHECK(req.query_len == 0, "query_len without query");
    for (uint16_t i = 0; i < req.nhdr; i++) {
        const struct http_hdr *h = &req.hdr[i];
        FZ_CHECK(h->name_len > 0 && in(h->name, h->name_len, b, head_end), "header %u name", i);
        FZ_CHECK(in(h->value, h->value_len, b, head_end), "header %u value", i);
        FZ_CHECK(http_header(&req, h->name, h->name_len) != NULL, "lookup of header %u", i);
        (void)http_has_token(h->value, h->value_len, "close", 5);
    }
    FZ_CHECK(req.has_host == (http_header(&req, "host", 4) != NULL), "has_host vs lookup");
    FZ_CHECK(req.minor == 0 || req.has_host, "HTTP/1.1 request without Host accepted");
    FZ_CHECK(req.body != NULL && in(req.body, req.body_len, head_end, end), "body outside");
    FZ_CHECK(req.body_len <= lim->max_body, "body_len %zu > max_body", req.body_len);
    if (req.chunked) {
        FZ_CHECK(req.content_length == 0, "chunked with content_length");
        FZ_CHECK(req.minor == 1, "chunked in HTTP/1.0");
        FZ_CHECK(req.body == head_end, "de-chunked body not at head_len");
    } else {
        FZ_CHECK(req.body_len == req.content_length, "CL %llu, body %zu",
                 (unsigned long long)req.content_length, req.body_len);
        FZ_CHECK((size_t)r == req.head_len + req.content_length, "CL framing");
        FZ_CHECK(memcmp(b, orig, (size_t)r) == 0, "non-chunked request modified its buffer");
    }
    FZ_CHECK(memcmp(end, orig + r, len - (size_t)r) == 0, "bytes after the message modified");
    FZ_CHECK(http_method_name(req.method) != NULL, "method name");
}

static void check_error(ssize_t r)
{
    FZ_CHECK(r == -400 || r == -413 || r == -414 || r == -431 || r == -501 || r == -505,
             "unexpected status %zd", r);
    FZ_CHECK(req.error != NULL && req.error[0], "error without text");
}

/* Parse an exact-size copy of orig[0..k): a prefix of a buffer whose full parse gave `full`. */
static void check_prefix(const char *orig, size_t k, ssize_t full, const struct http_limits *lim)
{
    char *b = fz_dup(orig, k);
    ssize_t r = http_parse(b, k, lim, &req);
    FZ_CHECK(memcmp(b, orig, k) == 0, "prefix parse modified the buffer (r=%zd)", r);
    if (full >= 0)
        FZ_CHECK(r == HTTP_NEED_MORE, "prefix %zu of a request of %zd bytes gave %zd", k, full, r);
    else
        FZ_CHECK(r == HTTP_NEED_MORE || r == full, "prefix %zu gave %zd, the whole %zd", k, r,
                 full);
    free(b);
}

/* One request at orig[0..len): parse, check, and return its length (<= 0: stop). */
static ssize_t one(const char *orig, size_t len, const struct http_limits *lim, uint64_t *rng)
{
    char *b = fz_dup(orig, len);
    ssize_t r = http_parse(b, len, lim, &req);
    if (r > 0) {
        check_complete(b, orig, len, r, lim);
    } else {
        FZ_CHECK(memcmp(b, orig, len) == 0, "parse returning %zd modified the buffer", r);
        if (r < 0)
            check_error(r);
        else
            FZ_CHECK(req.error == NULL && req.head_len <= len, "need-more state");
        uint32_t head_len = req.head_len;
        ssize_t again = http_parse(b, len, lim, &req);
        FZ_CHECK(again == r && req.head_len == head_len, "re-parse gave %zd, first %zd", again,
                 r);
    }
    free(b);

    /* The prefixes of what was parsed: the complete message, or the whole buffer. */
    size_t upto = r > 0 ? (size_t)r : len;
    if (upto <= PREFIX_SAMPLES) {
        for (size_t k = 0; k < upto; k++)
            check_prefix(orig, k, r, lim);
    } else {
        size_t ks[PREFIX_SAMPLES] = {0, 1, upto - 1, upto - 2, req.head_len, req.head_len + 1};
        for (size_t i = 6; i < PREFIX_SAMPLES; i++)
            ks[i] = (size_t)(fz_next(rng) % upto);
        for (size_t i = 0; i < PREFIX_SAMPLES; i++)
            if (ks[i] < upto)
                check_prefix(orig, ks[i], r, lim);
    }
    return r;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct http_limits lim = HTTP_LIMITS_DEFAULT;
    if (size < 1)
        return 0;
    uint8_t mode = data[0];
    data++, size--;
    if (mode & 1) {
        if (size < 1)
            return 0;
        limits_from(mode, data[0], &lim);
        data++, size--;
    }
    uint64_t rng = fz_hash(data, size);
    size_t off = 0;
    for (int n = 0; n < MAX_PIPELINE && off < size; n++) {
        ssize_t r = one((const char *)data + off, size - off, &lim, &rng);
        if (r <= 0)
            break;
        off += (size_t)r;
    }
    return 0;
}
