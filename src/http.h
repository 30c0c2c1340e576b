/*
 * http — incremental, zero-copy HTTP/1.1 request parser (RFC 9112), strict where lenience
 * enables request smuggling.
 *
 * Owns: nothing. Pure functions over caller memory: no globals, no malloc; any thread may call.
 * The caller keeps a partial request in its buffer and re-runs http_parse() from the start of
 * the buffer whenever bytes arrive; the buffer is left untouched unless a complete request is
 * returned (then a chunked body is de-chunked in place). Pointers in struct http_req point into
 * the caller's buffer (except `path` for an absolute-form target without a path: a static "/").
 *
 * Grammar decisions (each a smuggling or DoS choice, see tests/unit/test_http.c):
 * - One empty line (CRLF or LF) before the request line is ignored (RFC 9112 §2.2); a second is
 *   a 400. The ignored bytes are counted in head_len and in max_head, not in max_line.
 * - Request line: METHOD SP request-target SP HTTP/d.d CRLF, single spaces only. The method is
 *   case-sensitive: a token containing a lowercase letter is 400 (nginx does the same), another
 *   token that is not a known method is 501. Syntax (400) is checked before the version (505),
 *   the version before the method (501).
 * - request-target: origin-form "/...", asterisk-form "*" (OPTIONS only), absolute-form
 *   "http[s]://authority[/path][?query]" (userinfo '@' is a 400, RFC 9110 §4.2.4). Bytes
 *   0x80-0xFF are accepted (nginx does); CTLs, SP, DEL and '#' are a 400. Authority-form (CONNECT
 *   host:port) is a 400: this server is not a proxy.
 * - Bare LF ends a line in the head (request line and header fields) as nginx accepts; a bare CR
 *   anywhere, NUL, other CTLs in values, whitespace before ':' and obs-fold are a 400.
 *   The chunked body (size lines, data terminators, trailers) is CRLF-strict: lenient chunk
 *   framing is the classic place where a proxy and a server disagree on message boundaries.
 * - Content-Length: 1*DIGIT, one field line only (duplicates are a 400 even when equal), no
 *   overflow. Transfer-Encoding: one field line, HTTP/1.1 only, never with Content-Length;
 *   "chunked" must be the last coding and appear once (else 400); any other coding is a 501.
 * - Limits: max_line bounds the request line incl. its CRLF (414, decided as soon as max_line
 *   bytes have arrived without a line end); max_head bounds buf[0] through the empty line that
 *   ends the head, and the head plus the trailer section (431); max_fields bounds header field
 *   lines (431; clamped to HTTP_MAX_FIELDS); max_body bounds the declared Content-Length and the
 *   decoded chunked size (413, decided from the head / each chunk-size line, before the data).
 *   The chunked body on the wire (size lines, extensions, data, CRLFs; trailers excluded) may
 *   take at most max_body + max_head bytes (413): so a caller never needs to buffer more than
 *   max_body + 2 * max_head bytes for one request (96 KiB at the defaults).
 * - Trailer fields are validated and discarded (never added to hdr[]: a trailer must not be able
 *   to change framing or routing decisions taken from the head).
 */
#ifndef RC_HTTP_H
#define RC_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

enum http_method {
    HTTP_M_GET,
    HTTP_M_HEAD,
    HTTP_M_POST,
    HTTP_M_PUT,
    HTTP_M_DELETE,
    HTTP_M_OPTIONS,
    HTTP_M_PATCH,
    HTTP_M_TRACE,
    HTTP_M_CONNECT,
    HTTP_M__COUNT
};

struct http_limits {
    uint32_t max_line;   /* 8192: request line incl CRLF -> 414 */
    uint32_t max_head;   /* 16384: whole header block -> 431 */
    uint32_t max_fields; /* 100 -> 431 */
    uint64_t max_body;   /* 65536 -> 413 */
};

/* SPEC §3 defaults. */
#define HTTP_LIMITS_DEFAULT                                                                        \
    {                                                                                              \
        .max_line = 8192, .max_head = 16384, .max_fields = 100, .max_body = 65536                  \
    }

#define HTTP_MAX_FIELDS 128 /* hard array size; limits->max_fields <= this */

struct http_hdr {
    const char *name;
    const char *value; /* trimmed of OWS */
    uint16_t name_len;
    uint32_t value_len;
};

struct http_req {
    enum http_method method;
    const char *target; /* raw request-target */
    uint32_t target_len;
    const char *path; /* target up to '?' (absolute-form "http://h/p?q" -> "/p", "/" if none) */
    uint32_t path_len;
    const char *query; /* after '?', without it; NULL and len 0 if there is no '?' */
    uint32_t query_len;
    uint8_t minor;   /* 0 or 1 (HTTP/1.x) */
    bool keep_alive; /* 1.1: unless Connection has "close"; 1.0: only if Connection has
                        "keep-alive" (and not "close") */
    bool chunked;
    bool expect_continue; /* "Expect: 100-continue" in HTTP/1.1 (ignored in 1.0, RFC 9110) */
    bool has_host;
    uint64_t content_length; /* declared (0 if none / chunked) */
    uint32_t head_len; /* offset of the body in buf: request line + headers incl. the empty line
                          (and an ignored leading CRLF); 0 until the head is complete */
    const char *body; /* valid when complete (NULL otherwise); chunked bodies de-chunked in place */
    size_t body_len;
    uint16_t nhdr;
    struct http_hdr hdr[HTTP_MAX_FIELDS];
    const char *error; /* static reason text when the parser returns an error */
};

#define HTTP_NEED_MORE 0

/* Parse one request at buf[0..len). Returns > 0: a complete request of that many bytes (head +
   framed body; body de-chunked in place); HTTP_NEED_MORE: incomplete (if req->head_len != 0 the
   head is complete and valid, req fields are set, and the body is still arriving — the caller
   uses this to send "100 Continue" and to apply limits); < 0: -status (-400, -413, -414, -431,
   -501, -505), req->error set; the caller answers with that status and closes the connection. */
ssize_t http_parse(char *buf, size_t len, const struct http_limits *lim, struct http_req *req);

/* Case-insensitive header lookup; the first match or NULL. */
const struct http_hdr *http_header(const struct http_req *req, const char *name, size_t name_len);

/* Does the comma-separated token list in (v, n) contain token t (case-insensitive, OWS around
   elements ignored)? */
bool http_has_token(const char *v, size_t n, const char *t, size_t tn);

/* Method name, e.g. "POST"; NULL if m is not a valid enum http_method. */
const char *http_method_name(enum http_method m);
/* Reason phrase of a status code ("OK", "Not Found", ...); "Unknown" for a code it does not
   name (src/metrics indexes exactly the named ones). */
const char *http_status_reason(int status);

/* The error answers (SPEC §2, §3): {"error":{"code":CODE,...}} with its status. One name per
   (status, code) pair, so a handler cannot pair a code with the wrong status. */
#define HTTP_ERRORS(X) \
    X(BAD_REQUEST, 400, "BAD_REQUEST") \
    X(REQUEST_TIMEOUT, 408, "REQUEST_TIMEOUT") \
    X(PAYLOAD_TOO_LARGE, 413, "PAYLOAD_TOO_LARGE") \
    X(URI_TOO_LONG, 414, "URI_TOO_LONG") \
    X(HEADERS_TOO_LARGE, 431, "HEADERS_TOO_LARGE") \
    X(NOT_IMPLEMENTED, 501, "NOT_IMPLEMENTED") \
    X(HTTP_VERSION_NOT_SUPPORTED, 505, "HTTP_VERSION_NOT_SUPPORTED") \
    X(INVALID_CURSOR, 400, "INVALID_CURSOR") \
    X(INVALID_BUCKET, 400, "INVALID_BUCKET") \
    X(INVALID_DELTA, 400, "INVALID_DELTA") \
    X(INVALID_EXPIRES_AT, 400, "INVALID_EXPIRES_AT") \
    X(INVALID_ID, 400, "INVALID_ID") \
    X(INVALID_IDEMPOTENCY_KEY, 400, "INVALID_IDEMPOTENCY_KEY") \
    X(INVALID_JSON, 400, "INVALID_JSON") \
    X(INVALID_LABEL, 400, "INVALID_LABEL") \
    X(INVALID_LIMIT, 400, "INVALID_LIMIT") \
    X(INVALID_MAX_DELTA, 400, "INVALID_MAX_DELTA") \
    X(INVALID_RANGE, 400, "INVALID_RANGE") \
    X(INVALID_SCOPE, 400, "INVALID_SCOPE") \
    X(INVALID_USER_ID, 400, "INVALID_USER_ID") \
    X(INVALID_VALUE, 400, "INVALID_VALUE") \
    X(UNAUTHORIZED, 401, "UNAUTHORIZED") \
    X(ADMIN_DISABLED, 403, "ADMIN_DISABLED") \
    X(FORBIDDEN, 403, "FORBIDDEN") \
    X(NOT_FOUND, 404, "NOT_FOUND") \
    X(METHOD_NOT_ALLOWED, 405, "METHOD_NOT_ALLOWED") \
    X(COUNTER_OVERFLOW, 409, "COUNTER_OVERFLOW") \
    X(DUPLICATE_LABEL, 409, "DUPLICATE_LABEL") \
    X(IDEMPOTENCY_KEY_REUSED, 409, "IDEMPOTENCY_KEY_REUSED") \
    X(TOO_MANY_COUNTERS, 409, "TOO_MANY_COUNTERS") \
    X(TOO_MANY_KEYS, 409, "TOO_MANY_KEYS") \
    X(TOO_MANY_TENANTS, 409, "TOO_MANY_TENANTS") \
    X(OVERLOADED_429, 429, "OVERLOADED") \
    X(RATE_LIMITED, 429, "RATE_LIMITED") \
    X(NOT_READY, 503, "NOT_READY") \
    X(OVERLOADED, 503, "OVERLOADED") \
    X(PERSISTENCE_UNAVAILABLE, 503, "PERSISTENCE_UNAVAILABLE") \

enum http_err {
#define HTTP_ERR_ENUM(name, status, code) HTTP_E_##name,
    HTTP_ERRORS(HTTP_ERR_ENUM)
#undef HTTP_ERR_ENUM
    HTTP_E__COUNT
};
/* Status of e (400..505). */
int http_err_status(enum http_err e);
/* Its code, e.g. "INVALID_JSON". */
const char *http_err_code(enum http_err e);
/* The protocol error a parser status (-r of http_parse: 400, 408, 413, 414, 431, 501, 505)
   is answered with; HTTP_E_BAD_REQUEST for any other. */
enum http_err http_err_of_status(int status);

#endif
