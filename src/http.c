/*
 * http — incremental HTTP/1.1 request parser. See http.h for the contract and grammar decisions.
 *
 * Speed: the parser is re-run from the start of the buffer on every arrival and must sustain
 * > 1M requests/s per core, so a typical 150-byte POST has to parse in well under 300 ns. Every
 * byte is classified through one 256-entry table (no per-byte calls, no branches per class), the
 * scans are unrolled by 4, and header names are only compared when their length matches one of
 * the five fields the parser interprets.
 */
#include "http.h"

#include <string.h>

#include "lit.h"

/* Character classes (bit flags in cls[]). */
enum {
    C_TCHAR = 1,  /* token (RFC 9110 §5.6.2) */
    C_FVAL = 2,   /* field value byte: HTAB SP VCHAR obs-text (RFC 9110 §5.5) */
    C_TARGET = 4, /* request-target byte: VCHAR except '#', obs-text */
    C_HEX = 8,    /* HEXDIG */
    C_HOST = 16,  /* uri-host / port / IP-literal: unreserved pct-encoded sub-delims ':' '[' ']' */
    C_QDTEXT = 32 /* quoted-string: qdtext = HTAB SP 0x21 0x23-0x5B 0x5D-0x7E obs-text */
};

/* Generated from the definitions above (python: one loop over 0..255 OR-ing the bits). */
static const uint8_t cls[256] = {
    0,  0,  0,  0,  0,  0,  0,  0,  0,  34, 0,  0,  0,  0,  0,  0,  /* 0x00 */
    0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  /* 0x10 */
    34, 55, 6,  35, 55, 55, 55, 55, 54, 54, 55, 55, 54, 55, 55, 38, /* 0x20 */
    63, 63, 63, 63, 63, 63, 63, 63, 63, 63, 54, 54, 38, 54, 38, 38, /* 0x30 */
    38, 63, 63, 63, 63, 63, 63, 55, 55, 55, 55, 55, 55, 55, 55, 55, /* 0x40 */
    55, 55, 55, 55, 55, 55, 55, 55, 55, 55, 55, 54, 6,  54, 39, 55, /* 0x50 */
    39, 63, 63, 63, 63, 63, 63, 55, 55, 55, 55, 55, 55, 55, 55, 55, /* 0x60 */
    55, 55, 55, 55, 55, 55, 55, 55, 55, 55, 55, 38, 39, 38, 55, 0,  /* 0x70 */
    38, 38, 38, 38, 38, 38, 38, 38, 38, 38, 38, 38, 38, 38, 38, 38, /* 0x80 */
    38, 38, 38, 38, 38, 38, 38, 38, 38, 38, 38, 38, 38, 38, 38, 38, /* 0x90 */
    38, 38, 38, 38, 38, 38, 38, 38, 38, 38, 38, 38, 38, 38, 38, 38, /* 0xA0 */
    38, 38, 38, 38, 38, 38, 38, 38, 38, 38, 38, 38, 38, 38, 38, 38, /* 0xB0 */
    38, 38, 38, 38, 38, 38, 38, 38, 38, 38, 38, 38, 38, 38, 38, 38, /* 0xC0 */
    38, 38, 38, 38, 38, 38, 38, 38, 38, 38, 38, 38, 38, 38, 38, 38, /* 0xD0 */
    38, 38, 38, 38, 38, 38, 38, 38, 38, 38, 38, 38, 38, 38, 38, 38, /* 0xE0 */
    38, 38, 38, 38, 38, 38, 38, 38, 38, 38, 38, 38, 38, 38, 38, 38, /* 0xF0 */
};

#define IS(c, k) (cls[(uint8_t)(c)] & (k))
#define IS_WS(c) ((c) == ' ' || (c) == '\t')

/* Internal "need more bytes" result of the helpers (errors are -status, success 0). */
#define MORE 1

static const char *const method_names[HTTP_M__COUNT] = {
    [HTTP_M_GET] = "GET",     [HTTP_M_HEAD] = "HEAD",     [HTTP_M_POST] = "POST",
    [HTTP_M_PUT] = "PUT",     [HTTP_M_DELETE] = "DELETE", [HTTP_M_OPTIONS] = "OPTIONS",
    [HTTP_M_PATCH] = "PATCH", [HTTP_M_TRACE] = "TRACE",   [HTTP_M_CONNECT] = "CONNECT",
};

/* First byte in [p, end) outside class k, or end. Unrolled by 4: most spans (names, values,
   targets) are 4-60 bytes, and one bounds check per 4 bytes halves the loop overhead. */
static inline const char *skip_class(const char *p, const char *end, uint8_t k)
{
    while (end - p >= 4) {
        if (!IS(p[0], k)) return p;
        if (!IS(p[1], k)) return p + 1;
        if (!IS(p[2], k)) return p + 2;
        if (!IS(p[3], k)) return p + 3;
        p += 4;
    }
    while (p < end && IS(*p, k))
        p++;
    return p;
}

static inline int lower(int c)
{
    return (c >= 'A' && c <= 'Z') ? c | 0x20 : c;
}

/* Case-insensitive equality of n bytes for arbitrary bytes. */
static bool ci_eq(const char *a, const char *b, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (lower((uint8_t)a[i]) != lower((uint8_t)b[i])) return false;
    return true;
}

/* Is the token `name` (already validated as tchars) equal to `lit` (lowercase letters and '-')?
   OR-ing 0x20 is exact here: only 'X'/'x' map to a letter, and only CR (not a tchar) maps to
   '-'. */
static inline bool name_is(const char *name, const char *lit, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if ((name[i] | 0x20) != lit[i]) return false;
    return true;
}

static inline unsigned hexval(char c)
{
    return c <= '9' ? (unsigned)(c - '0') : (unsigned)((c | 0x20) - 'a' + 10);
}

static int method_lookup(const char *m, size_t n)
{
    switch (n) {
    case 3:
        if (!memcmp(m, LIT("GET"))) return HTTP_M_GET;
        if (!memcmp(m, LIT("PUT"))) return HTTP_M_PUT;
        break;
    case 4:
        if (!memcmp(m, LIT("POST"))) return HTTP_M_POST;
        if (!memcmp(m, LIT("HEAD"))) return HTTP_M_HEAD;
        break;
    case 5:
        if (!memcmp(m, LIT("PATCH"))) return HTTP_M_PATCH;
        if (!memcmp(m, LIT("TRACE"))) return HTTP_M_TRACE;
        break;
    case 6:
        if (!memcmp(m, LIT("DELETE"))) return HTTP_M_DELETE;
        break;
    case 7:
        if (!memcmp(m, LIT("OPTIONS"))) return HTTP_M_OPTIONS;
        if (!memcmp(m, LIT("CONNECT"))) return HTTP_M_CONNECT;
        break;
    }
    return -1;
}

/* Split the request-target t[0..n) (n >= 1, bytes already C_TARGET) into path and query.
   0 or -400. */
static int parse_target(struct http_req *req, const char *t, size_t n)
{
    static const char slash[] = "/";
    const char *e = t + n, *p;

    req->target = t;
    req->target_len = (uint32_t)n;
    req->query = NULL;
    req->query_len = 0;
    if (t[0] == '/') {
        p = t;
    } else if (t[0] == '*') {
        /* RFC 9112 §3.2.4: asterisk-form is only for a server-wide OPTIONS. */
        if (n != 1 || req->method != HTTP_M_OPTIONS) {
            req->error = "asterisk-form target outside OPTIONS";
            return -400;
        }
        req->path = t;
        req->path_len = 1;
        return 0;
    } else {
        size_t s;
        if (n >= 7 && ci_eq(t, LIT("http://")))
            s = 7;
        else if (n >= 8 && ci_eq(t, LIT("https://")))
            s = 8;
        else {
            req->error = "invalid request-target";
            return -400;
        }
        const char *a = t + s;
        p = skip_class(a, e, C_HOST);
        /* '@' (userinfo) and any other non-host byte stop before '/', '?' or the end. */
        if (p == a || (p < e && *p != '/' && *p != '?')) {
            req->error = "invalid authority in absolute-form target";
            return -400;
        }
        if (p == e || *p == '?') {
            req->path = slash;
            req->path_len = 1;
            if (p < e) {
                req->query = p + 1;
                req->query_len = (uint32_t)(e - p - 1);
            }
            return 0;
        }
    }
    const char *q = memchr(p, '?', (size_t)(e - p));
    req->path = p;
    if (q) {
        req->path_len = (uint32_t)(q - p);
        req->query = q + 1;
        req->query_len = (uint32_t)(e - q - 1);
    } else {
        req->path_len = (uint32_t)(e - p);
    }
    return 0;
}

/* One field line starting at p, which is neither an empty line nor starts with SP/HTAB (the
   caller checks both). On 0, *h is filled and *next points past the line terminator. MORE if
   [p, lim) ends inside the line; -400 (or -431 for a name over 64 KiB) with *err. */
static int field_line(const char *p, const char *lim, bool strict_crlf, struct http_hdr *h,
                      const char **next, const char **err)
{
    const char *n = p;

    p = skip_class(p, lim, C_TCHAR);
    if (p == lim) return MORE;
    if (*p != ':' || p == n) {
        *err = IS_WS(*p) ? "whitespace before ':' in field line" : "invalid field name";
        return -400;
    }
    if (p - n > UINT16_MAX) {
        *err = "field name too long";
        return -431;
    }
    h->name = n;
    h->name_len = (uint16_t)(p - n);
    p++;
    while (p < lim && IS_WS(*p))
        p++;
    const char *v = p;
    p = skip_class(p, lim, C_FVAL);
    if (p == lim) return MORE;
    const char *ve = p;
    if (*p == '\r') {
        if (++p == lim) return MORE;
        if (*p != '\n') {
            *err = "bare CR in field line";
            return -400;
        }
    } else if (*p != '\n' || strict_crlf) {
        *err = *p == '\0'   ? "NUL in field line"
               : *p == '\n' ? "bare LF in chunked trailer"
                            : "control character in field value";
        return -400;
    }
    while (ve > v && IS_WS(ve[-1]))
        ve--;
    h->value = v;
    h->value_len = (uint32_t)(ve - v);
    *next = p + 1;
    return 0;
}

/* Transfer-Encoding value: a list of transfer-codings, each token [OWS ";" params]. 0 if the
   last coding is "chunked" and it is the only one; -400 if chunked is missing, not last,
   repeated, or has parameters (RFC 9112 §6.3: length cannot be determined); -501 if chunked is
   last but other codings precede it (RFC 9112 §6.1: coding not understood). */
static int te_parse(const char *v, size_t n, const char **err)
{
    const char *p = v, *e = v + n;
    bool seen_chunked = false, last_chunked = false, other = false;

    for (;;) {
        while (p < e && IS_WS(*p))
            p++;
        const char *t = p;
        p = skip_class(p, e, C_TCHAR);
        if (p == t) {
            *err = "empty or invalid transfer-coding";
            return -400;
        }
        bool is_chunked = p - t == 7 && ci_eq(t, LIT("chunked"));
        while (p < e && IS_WS(*p))
            p++;
        if (p < e && *p == ';') {
            if (is_chunked) {
                *err = "parameters on chunked";
                return -400;
            }
            while (p < e && *p != ',')
                p++;
        }
        if (is_chunked) {
            if (seen_chunked) {
                *err = "chunked applied more than once";
                return -400;
            }
            seen_chunked = true;
        } else {
            other = true;
        }
        last_chunked = is_chunked;
        if (p == e) break;
        if (*p != ',') {
            *err = "invalid transfer-coding list";
            return -400;
        }
        p++;
    }
    if (!last_chunked) {
        *err = "chunked is not the final transfer coding";
        return -400;
    }
    if (other) {
        *err = "unsupported transfer coding";
        return -501;
    }
    return 0;
}

struct hstate {
    bool have_cl, have_te, conn_close, conn_keep;
};

/* Interpret the few fields that decide framing, Host and connection handling. 0 or -status. */
static int on_header(struct http_req *req, struct hstate *st, const struct http_hdr *h)
{
    const char *n = h->name, *v = h->value;
    size_t vn = h->value_len;

    switch (h->name_len) {
    case 4:
        if (!name_is(n, LIT("host"))) break;
        /* RFC 9112 §3.2: more than one Host, or an invalid one, is a 400. */
        if (req->has_host) {
            req->error = "duplicate Host";
            return -400;
        }
        if (skip_class(v, v + vn, C_HOST) != v + vn) {
            req->error = "invalid Host";
            return -400;
        }
        req->has_host = true;
        break;
    case 6:
        if (name_is(n, LIT("expect")) && vn == 12 && ci_eq(v, LIT("100-continue")))
            req->expect_continue = req->minor == 1;
        break;
    case 10:
        if (!name_is(n, LIT("connection"))) break;
        st->conn_close |= http_has_token(v, vn, LIT("close"));
        st->conn_keep |= http_has_token(v, vn, LIT("keep-alive"));
        break;
    case 14: {
        if (!name_is(n, LIT("content-length"))) break;
        /* Any second Content-Length, even an equal one, is a 400: a proxy that keeps the other
           one would frame the message differently (RFC 9112 §6.3 allows us to reject). */
        if (st->have_cl) {
            req->error = "duplicate Content-Length";
            return -400;
        }
        if (st->have_te) {
            req->error = "Content-Length with Transfer-Encoding";
            return -400;
        }
        if (vn == 0) {
            req->error = "empty Content-Length";
            return -400;
        }
        uint64_t x = 0;
        for (size_t i = 0; i < vn; i++) {
            unsigned d = (unsigned)(uint8_t)v[i] - '0';
            if (d > 9) {
                req->error = "invalid Content-Length";
                return -400;
            }
            if (x > (UINT64_MAX - d) / 10) {
                req->error = "Content-Length overflows";
                return -400;
            }
            x = x * 10 + d;
        }
        st->have_cl = true;
        req->content_length = x;
        break;
    }
    case 17: {
        if (!name_is(n, LIT("transfer-encoding"))) break;
        /* RFC 9112 §6.1: a server MUST NOT treat 1.0 bodies as chunked; rejecting is safer. */
        if (req->minor == 0) {
            req->error = "Transfer-Encoding in HTTP/1.0";
            return -400;
        }
        if (st->have_te) {
            req->error = "duplicate Transfer-Encoding";
            return -400;
        }
        if (st->have_cl) {
            req->error = "Content-Length with Transfer-Encoding";
            return -400;
        }
        int rc = te_parse(v, vn, &req->error);
        if (rc < 0) return rc;
        st->have_te = true;
        req->chunked = true;
        break;
    }
    }
    return 0;
}

/* Chunk extensions after a chunk size: *( BWS ";" BWS token [ BWS "=" BWS ( token /
   quoted-string ) ] ) BWS. Advances *qp to the first byte after them (the caller wants CR).
   0, MORE or -400. */
static int chunk_ext(const char **qp, const char *lim)
{
    const char *q = *qp, *t;

    for (;;) {
        while (q < lim && IS_WS(*q))
            q++;
        if (q == lim) return MORE;
        if (*q != ';') break;
        q++;
        while (q < lim && IS_WS(*q))
            q++;
        t = q;
        q = skip_class(q, lim, C_TCHAR);
        if (q == lim) return MORE;
        if (q == t) return -400;
        while (q < lim && IS_WS(*q))
            q++;
        if (q == lim) return MORE;
        if (*q != '=') continue;
        q++;
        while (q < lim && IS_WS(*q))
            q++;
        if (q == lim) return MORE;
        if (*q == '"') {
            q++;
            for (;;) {
                q = skip_class(q, lim, C_QDTEXT);
                if (q == lim) return MORE;
                if (*q == '"') break;
                if (*q != '\\') return -400;
                if (++q == lim) return MORE;
                if (!IS(*q, C_FVAL)) /* quoted-pair: HTAB SP VCHAR obs-text */
                    return -400;
                q++;
            }
            q++;
        } else {
            t = q;
            q = skip_class(q, lim, C_TCHAR);
            if (q == lim) return MORE;
            if (q == t) return -400;
        }
    }
    *qp = q;
    return 0;
}

/* The chunked body starting at buf + req->head_len: validate without writing; when the whole
   message is present, de-chunk in place. Returns the message length, HTTP_NEED_MORE or -status. */
static ssize_t parse_chunked(char *buf, size_t len, const struct http_limits *lim,
                             struct http_req *req)
{
    char *const body = buf + req->head_len;
    const char *const end = buf + len, *q = body;
    const size_t avail = (size_t)(end - body);
    /* Wire budget of the chunked body (see http.h): bounds what the caller must buffer. */
    uint64_t wire_max = lim->max_body + lim->max_head;
    if (wire_max < lim->max_body) wire_max = UINT64_MAX;
    const char *const wlim = avail > wire_max ? body + wire_max : end;
    uint64_t total = 0;
    int rc;

    for (;;) {
        const char *d = q;
        uint64_t v = 0;
        unsigned sig = 0;
        while (q < wlim && IS(*q, C_HEX)) {
            if (sig || *q != '0') {
                /* 16 significant hex digits fill a uint64_t; a 17th is an overflow, not a
                   large size, so it is a 400 whatever max_body says. */
                if (++sig > 16) {
                    req->error = "chunk size overflows";
                    return -400;
                }
                v = v << 4 | hexval(*q);
            }
            q++;
        }
        if (q == wlim) goto more;
        if (q == d) {
            req->error = "invalid chunk size";
            return -400;
        }
        if (v > lim->max_body - total) {
            req->error = "chunked body too large";
            return -413;
        }
        rc = chunk_ext(&q, wlim);
        if (rc == MORE) goto more;
        if (rc < 0) {
            req->error = "invalid chunk extension";
            return rc;
        }
        if (*q != '\r') {
            req->error = "invalid chunk size line";
            return -400;
        }
        if (q + 1 == wlim) goto more;
        if (q[1] != '\n') {
            req->error = "bare CR in chunk size line";
            return -400;
        }
        q += 2;
        if (v == 0) break;
        if ((uint64_t)(wlim - q) < v) goto more;
        q += v;
        if (q == wlim) goto more;
        if (*q != '\r' || (q + 1 < wlim && q[1] != '\n')) {
            req->error = "chunk data not followed by CRLF";
            return -400;
        }
        if (q + 1 == wlim) goto more;
        q += 2;
        total += v;
    }

    /* Trailer section: counts toward max_head together with the head. */
    const char *const ts = q;
    const size_t tmax = lim->max_head - req->head_len;
    const char *const tlim = (size_t)(end - ts) > tmax ? ts + tmax : end;
    for (;;) {
        if (q >= tlim) goto tmore;
        if (*q == '\r') {
            if (q + 1 >= tlim) goto tmore;
            if (q[1] != '\n') {
                req->error = "bare CR in chunked trailer";
                return -400;
            }
            q += 2;
            break;
        }
        if (*q == '\n' || IS_WS(*q)) {
            req->error = *q == '\n' ? "bare LF in chunked trailer" : "obs-fold in trailer";
            return -400;
        }
        struct http_hdr tmp;
        rc = field_line(q, tlim, true, &tmp, &q, &req->error);
        if (rc == MORE) goto tmore;
        if (rc < 0) return rc;
    }

    /* Complete: de-chunk in place. Structure is validated, so the walk needs no checks. */
    char *dst = body;
    const char *s = body;
    for (;;) {
        uint64_t v = 0;
        while (IS(*s, C_HEX))
            v = v << 4 | hexval(*s++);
        s = (const char *)memchr(s, '\n', (size_t)(q - s)) + 1;
        if (v == 0) break;
        memmove(dst, s, v);
        dst += v;
        s += v + 2;
    }
    req->body = body;
    req->body_len = total;
    return q - buf;

more:
    if (avail >= wire_max) {
        req->error = "chunked framing too large";
        return -413;
    }
    return HTTP_NEED_MORE;
tmore:
    if ((size_t)(end - ts) >= tmax) {
        req->error = "trailer section too large";
        return -431;
    }
    return HTTP_NEED_MORE;
}

ssize_t http_parse(char *buf, size_t len, const struct http_limits *lim, struct http_req *req)
{
    const char *const end = buf + len;
    const char *p = buf, *line, *llim, *hlim;
    struct hstate st = {0};
    int mi, rc;

    req->head_len = 0;
    req->nhdr = 0;
    req->error = NULL;
    req->body = NULL;
    req->body_len = 0;
    req->content_length = 0;
    req->keep_alive = req->chunked = req->expect_continue = req->has_host = false;

    if (len == 0) return HTTP_NEED_MORE;
    /* RFC 9112 §2.2: ignore at least one empty line before the request line (clients send a
       stray CRLF after a POST body). Exactly one: more is not a request. */
    if (p[0] == '\r') {
        if (len < 2) return HTTP_NEED_MORE;
        if (p[1] != '\n') {
            req->error = "bare CR";
            return -400;
        }
        p += 2;
    } else if (p[0] == '\n') {
        p++;
    }

    /* Request line, bounded by max_line so a client cannot make us wait forever. */
    line = p;
    llim = (size_t)(end - p) > lim->max_line ? p + lim->max_line : end;
    const char *m = p;
    p = skip_class(p, llim, C_TCHAR);
    if (p == llim) goto line_more;
    if (*p != ' ' || p == m) {
        req->error = "invalid method";
        return -400;
    }
    for (const char *c = m; c < p; c++) {
        if (*c >= 'a' && *c <= 'z') {
            req->error = "invalid method";
            return -400;
        }
    }
    mi = method_lookup(m, (size_t)(p - m));
    const char *t = ++p;
    p = skip_class(p, llim, C_TARGET);
    if (p == llim) goto line_more;
    if (*p != ' ' || p == t) {
        req->error = "invalid request-target";
        return -400;
    }
    const char *te = p++, *vs = p;
    static const char ver[] = "HTTP/d.d";
    for (int i = 0; i < 8; i++, p++) {
        if (p == llim) goto line_more;
        if (ver[i] == 'd' ? (unsigned)(*p - '0') > 9 : *p != ver[i]) {
            req->error = "invalid HTTP version";
            return -400;
        }
    }
    if (p == llim) goto line_more;
    if (*p == '\r') {
        if (++p == llim) goto line_more;
        if (*p != '\n') {
            req->error = "bare CR in request line";
            return -400;
        }
    } else if (*p != '\n') {
        req->error = "invalid request line";
        return -400;
    }
    p++;
    if (vs[5] != '1' || vs[7] > '1') {
        req->error = "HTTP version not supported";
        return -505;
    }
    req->minor = (uint8_t)(vs[7] - '0');
    if (mi < 0) {
        req->error = "unknown method (this server knows the RFC 9110 methods only)";
        return -501;
    }
    req->method = (enum http_method)mi;
    rc = parse_target(req, t, (size_t)(te - t));
    if (rc < 0) return rc;

    /* Header fields. */
    hlim = len > lim->max_head ? buf + lim->max_head : end;
    const uint32_t max_fields =
        lim->max_fields < HTTP_MAX_FIELDS ? lim->max_fields : HTTP_MAX_FIELDS;
    for (;;) {
        if (p >= hlim) goto head_more;
        if (*p == '\r') {
            if (p + 1 >= hlim) goto head_more;
            if (p[1] != '\n') {
                req->error = "bare CR in header";
                return -400;
            }
            p += 2;
            break;
        }
        if (*p == '\n') {
            p++;
            break;
        }
        /* RFC 9112 §5.2: obs-fold is rejected, never unfolded. */
        if (IS_WS(*p)) {
            req->error = "obs-fold or whitespace before field line";
            return -400;
        }
        if (req->nhdr >= max_fields) {
            req->error = "too many header fields";
            return -431;
        }
        struct http_hdr *h = &req->hdr[req->nhdr];
        rc = field_line(p, hlim, false, h, &p, &req->error);
        if (rc == MORE) goto head_more;
        if (rc < 0) return rc;
        req->nhdr++;
        rc = on_header(req, &st, h);
        if (rc < 0) return rc;
    }

    /* Head complete. */
    if (req->minor == 1 && !req->has_host) {
        req->error = "missing Host";
        return -400;
    }
    req->keep_alive = req->minor == 1 ? !st.conn_close : st.conn_keep && !st.conn_close;
    req->head_len = (uint32_t)(p - buf);
    if (req->chunked) return parse_chunked(buf, len, lim, req);
    if (req->content_length > lim->max_body) {
        req->error = "Content-Length too large";
        return -413;
    }
    if ((uint64_t)(end - p) < req->content_length) return HTTP_NEED_MORE;
    req->body = p;
    req->body_len = (size_t)req->content_length;
    return (ssize_t)(req->head_len + req->content_length);

line_more:
    if ((size_t)(end - line) >= lim->max_line) {
        req->error = "request line too long";
        return -414;
    }
    return HTTP_NEED_MORE;
head_more:
    if (len >= lim->max_head) {
        req->error = "header section too large";
        return -431;
    }
    return HTTP_NEED_MORE;
}

const struct http_hdr *http_header(const struct http_req *req, const char *name, size_t name_len)
{
    for (uint16_t i = 0; i < req->nhdr; i++) {
        const struct http_hdr *h = &req->hdr[i];
        if (h->name_len == name_len && ci_eq(h->name, name, name_len)) return h;
    }
    return NULL;
}

bool http_has_token(const char *v, size_t n, const char *t, size_t tn)
{
    const char *e = v + n;

    while (v < e) {
        while (v < e && (IS_WS(*v) || *v == ','))
            v++;
        const char *s = v;
        while (v < e && *v != ',')
            v++;
        const char *x = v;
        while (x > s && IS_WS(x[-1]))
            x--;
        if ((size_t)(x - s) == tn && tn > 0 && ci_eq(s, t, tn)) return true;
    }
    return false;
}

const char *http_method_name(enum http_method m)
{
    return (unsigned)m < HTTP_M__COUNT ? method_names[m] : NULL;
}

const char *http_status_reason(int status)
{
    switch (status) {
    case 100: return "Continue";
    case 200: return "OK";
    case 201: return "Created";
    case 204: return "No Content";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 411: return "Length Required";
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 415: return "Unsupported Media Type";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 503: return "Service Unavailable";
    case 505: return "HTTP Version Not Supported";
    default: return "Unknown";
    }
}

static const struct {
    int status;
    const char *code;
} http_errs[HTTP_E__COUNT] = {
#define HTTP_ERR_ROW(name, st, c) [HTTP_E_##name] = {st, c},
    HTTP_ERRORS(HTTP_ERR_ROW)
#undef HTTP_ERR_ROW
};

int http_err_status(enum http_err e)
{
    return (unsigned)e < HTTP_E__COUNT ? http_errs[e].status : 500;
}

const char *http_err_code(enum http_err e)
{
    return (unsigned)e < HTTP_E__COUNT ? http_errs[e].code : "INTERNAL";
}

enum http_err http_err_of_status(int status)
{
    switch (status) {
    case 408: return HTTP_E_REQUEST_TIMEOUT;
    case 413: return HTTP_E_PAYLOAD_TOO_LARGE;
    case 414: return HTTP_E_URI_TOO_LONG;
    case 431: return HTTP_E_HEADERS_TOO_LARGE;
    case 501: return HTTP_E_NOT_IMPLEMENTED;
    case 505: return HTTP_E_HTTP_VERSION_NOT_SUPPORTED;
    default: return HTTP_E_BAD_REQUEST;
    }
}
