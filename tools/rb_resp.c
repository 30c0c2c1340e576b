/* rb_resp — incremental HTTP/1.1 response parser. See rb_resp.h. */
#include "rb_resp.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

void rb_resp_init(struct rb_resp *r, bool head_method)
{
    memset(r, 0, sizeof(*r));
    r->head_method = head_method;
}

void rb_resp_reset(struct rb_resp *r)
{
    r->carry_len = 0;
    r->body_left = 0;
    r->in_body = false;
    r->status = 0;
    r->close = false;
}

void rb_resp_free(struct rb_resp *r)
{
    free(r->carry);
    r->carry = NULL;
    r->carry_cap = r->carry_len = 0;
}

/* Does the comma-separated token list v[0..n) contain tok (case-insensitive)? */
static bool has_token(const char *v, size_t n, const char *tok)
{
    size_t tl = strlen(tok), i = 0;
    while (i < n) {
        while (i < n && (v[i] == ' ' || v[i] == '\t' || v[i] == ','))
            i++;
        size_t s = i;
        while (i < n && v[i] != ',')
            i++;
        size_t e = i;
        while (e > s && (v[e - 1] == ' ' || v[e - 1] == '\t'))
            e--;
        if (e - s == tl && strncasecmp(v + s, tok, tl) == 0) return true;
    }
    return false;
}

int rb_resp_parse_head(const char *h, size_t len, uint16_t *status, int64_t *content_length,
                       bool *close)
{
    const char *end = h + len;
    if (len < 13 || memcmp(h, "HTTP/1.", 7) != 0 || (h[7] != '0' && h[7] != '1') || h[8] != ' ')
        return -EPROTO;
    for (int i = 9; i < 12; i++)
        if (h[i] < '0' || h[i] > '9') return -EPROTO;
    if (h[12] != ' ' && h[12] != '\r' && h[12] != '\n') return -EPROTO;
    unsigned st =
        (unsigned)(h[9] - '0') * 100 + (unsigned)(h[10] - '0') * 10 + (unsigned)(h[11] - '0');
    if (st < 100 || st > 599) return -EPROTO;
    bool http10 = h[7] == '0', conn_close = false, keep_alive = false;
    int64_t cl = -1;

    const char *line = memchr(h, '\n', len);
    if (!line) return -EPROTO;
    line++;
    while (line < end) {
        const char *nl = memchr(line, '\n', (size_t)(end - line));
        if (!nl) return -EPROTO; /* the caller hands over whole heads only */
        const char *le = nl;
        if (le > line && le[-1] == '\r') le--;
        if (le == line) break; /* the empty line */
        const char *colon = memchr(line, ':', (size_t)(le - line));
        if (!colon || colon == line) return -EPROTO;
        size_t nlen = (size_t)(colon - line);
        const char *v = colon + 1, *ve = le;
        while (v < ve && (*v == ' ' || *v == '\t'))
            v++;
        while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t'))
            ve--;
        if (nlen == 14 && strncasecmp(line, "content-length", 14) == 0) {
            int64_t x = 0;
            if (v == ve) return -EPROTO;
            for (const char *q = v; q < ve; q++) {
                if (*q < '0' || *q > '9' || x > (INT64_MAX - 9) / 10) return -EPROTO;
                x = x * 10 + (*q - '0');
            }
            if (cl >= 0 && cl != x)
                return -EPROTO; /* conflicting lengths: RFC 9112 §6.3 says unrecoverable */
            cl = x;
        } else if (nlen == 10 && strncasecmp(line, "connection", 10) == 0) {
            conn_close |= has_token(v, (size_t)(ve - v), "close");
            keep_alive |= has_token(v, (size_t)(ve - v), "keep-alive");
        } else if (nlen == 17 && strncasecmp(line, "transfer-encoding", 17) == 0) {
            return -EPROTO; /* chunked responses are not needed by any scenario */
        }
        line = nl + 1;
    }
    *status = (uint16_t)st;
    *content_length = cl;
    *close = conn_close || (http10 && !keep_alive);
    return 0;
}

/* End of the head in s[0..n): offset just past the empty line, or 0 if not there yet. */
static size_t head_end(const char *s, size_t n)
{
    const char *q = s, *e = s + n;
    for (;;) {
        const char *nl = memchr(q, '\n', (size_t)(e - q));
        if (!nl) return 0;
        q = nl + 1;
        if (q < e && *q == '\n') return (size_t)(q + 1 - s);
        if (q + 1 < e && q[0] == '\r' && q[1] == '\n') return (size_t)(q + 2 - s);
        if (q >= e) return 0;
    }
}

/* Head h[0..len) is complete: set up the body phase. 1 = a final response started,
   0 = an interim 1xx was skipped, -EPROTO. */
static int start_response(struct rb_resp *r, const char *h, size_t len)
{
    uint16_t st;
    int64_t cl;
    bool close;
    int rc = rb_resp_parse_head(h, len, &st, &cl, &close);
    if (rc < 0) return rc;
    if (st < 200) {
        if (st == 101) return -EPROTO; /* a protocol switch ends HTTP on this connection */
        return 0;
    }
    r->status = st;
    r->close = close;
    if (st == 204 || st == 304 || r->head_method) {
        r->body_left = 0;
    } else if (cl >= 0) {
        r->body_left = (uint64_t)cl;
    } else {
        return -EPROTO; /* body delimited by close: not supported */
    }
    r->in_body = true;
    return 1;
}

int rb_resp_next(struct rb_resp *r, const char **p, size_t *n, struct rb_resp_info *out)
{
    for (;;) {
        if (r->in_body) {
            size_t take = r->body_left < *n ? (size_t)r->body_left : *n;
            r->body_left -= take;
            *p += take;
            *n -= take;
            if (r->body_left > 0) return 0;
            r->in_body = false;
            out->status = r->status;
            out->close = r->close;
            return 1;
        }
        if (*n == 0) return 0;
        int rc;
        if (r->carry_len == 0) {
            size_t he = head_end(*p, *n);
            if (he == 0) {
                if (*n > RB_RESP_MAX_HEAD) return -EPROTO;
                if (r->carry_cap < *n) {
                    /* 1 KiB covers typical heads (nginx 204: ~150 bytes); grow by doubling */
                    uint32_t cap = r->carry_cap ? r->carry_cap : 1024;
                    while (cap < *n)
                        cap *= 2;
                    char *c = realloc(r->carry, cap);
                    if (!c) return -ENOMEM;
                    r->carry = c;
                    r->carry_cap = cap;
                }
                memcpy(r->carry, *p, *n);
                r->carry_len = (uint32_t)*n;
                *p += *n;
                *n = 0;
                return 0;
            }
            rc = start_response(r, *p, he);
            *p += he;
            *n -= he;
        } else {
            /* Append what may still belong to the head (rare path: the head straddled two
               receive buffers), then look for its end again from the start. */
            size_t room = RB_RESP_MAX_HEAD - r->carry_len;
            size_t add = *n < room ? *n : room;
            size_t need = r->carry_len + add;
            if (r->carry_cap < need) {
                uint32_t cap = r->carry_cap;
                while (cap < need)
                    cap *= 2;
                char *c = realloc(r->carry, cap);
                if (!c) return -ENOMEM;
                r->carry = c;
                r->carry_cap = cap;
            }
            memcpy(r->carry + r->carry_len, *p, add);
            size_t old = r->carry_len;
            size_t he = head_end(r->carry, old + add);
            if (he == 0) {
                if (add < *n || old + add >= RB_RESP_MAX_HEAD) return -EPROTO;
                r->carry_len = (uint32_t)(old + add);
                *p += add;
                *n -= add;
                return 0;
            }
            rc = start_response(r, r->carry, he);
            r->carry_len = 0;
            *p += he - old;
            *n -= he - old;
        }
        if (rc < 0) return rc;
    }
}
