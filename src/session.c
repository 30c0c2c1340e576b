/* session — see session.h. */
#include "session.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "fmt.h"
#include "lit.h"

static const char CONTINUE_100[] = "HTTP/1.1 100 Continue\r\n\r\n";

void sess_env_set_date(struct sess_env *env, int64_t unix_s)
{
    static const char *const wd[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
    static const char *const mo[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                     "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    time_t t = (time_t)unix_s;
    struct tm tm;
    gmtime_r(&t, &tm);
    int n = snprintf(env->date, sizeof(env->date), "Date: %s, %02d %s %04d %02d:%02d:%02d GMT\r\n",
                     wd[tm.tm_wday], tm.tm_mday, mo[tm.tm_mon], tm.tm_year + 1900, tm.tm_hour,
                     tm.tm_min, tm.tm_sec);
    env->date_len = n > 0 && (size_t)n < sizeof(env->date) ? (size_t)n : 0;
}

void sess_init(struct sess *s, struct sess_env *env, uint64_t now_ms)
{
    char *in = s->in, *out = s->out;
    uint32_t in_cap = s->in_cap, out_cap = s->out_cap;
    free(s->out_old); /* a send that failed never released it */
    memset(s, 0, sizeof(*s));
    s->env = env;
    s->in = in;
    s->in_cap = in_cap;
    s->out = out;
    s->out_cap = out_cap;
    s->last_ms = now_ms;
}

void sess_free(struct sess *s)
{
    free(s->in);
    free(s->out);
    free(s->out_old);
    s->out_old = NULL;
    s->in = s->out = NULL;
    s->in_cap = s->out_cap = s->in_len = s->out_len = 0;
}

static void kick(struct sess *s)
{
    if (s->env->kick)
        s->env->kick(s);
}

int sess_reserve(struct sess *s, size_t n)
{
    if (s->out_len + n <= s->out_cap)
        return 0;
    if (s->out_len + n > SESS_OUT_MAX)
        return -ENOBUFS;
    uint32_t cap = s->out_cap ? s->out_cap : SESS_OUT_INIT;
    while (cap < s->out_len + n)
        cap *= 2;
    if (!s->out_locked) {
        char *nb = realloc(s->out, cap);
        if (!nb)
            return -ENOMEM;
        s->out = nb;
    } else {
        /* The kernel may still read out[0..out_locked): copy, and keep the old buffer alive
           until the send completes (one retired buffer at a time). */
        if (s->out_old)
            return -EAGAIN;
        char *nb = malloc(cap);
        if (!nb)
            return -ENOMEM;
        memcpy(nb, s->out, s->out_len);
        s->out_old = s->out;
        s->out = nb;
    }
    s->out_cap = cap;
    return 0;
}

static int out_append(struct sess *s, const void *p, size_t n)
{
    int rc = sess_reserve(s, n);
    if (rc < 0)
        return rc;
    memcpy(s->out + s->out_len, p, n);
    s->out_len += (uint32_t)n;
    return 0;
}

/* Largest response head we write: status line, Date, Content-Type, Content-Length,
   Connection, plus the caller's extra headers. */
#define HEAD_FIXED_MAX 256

int sess_respond(struct sess *s, int status, const char *ctype, const char *hdrs, size_t hdrs_len,
                 const char *body, size_t body_len)
{
    bool close = !s->req_keepalive || s->env->draining || (s->flags & SESS_CLOSE);
    bool no_body = s->req_head || status == 204 || status == 304;
    size_t need = HEAD_FIXED_MAX + hdrs_len + s->req_hdrs_len + (no_body ? 0 : body_len);
    int rc = sess_reserve(s, need);
    if (rc < 0)
        return rc;
    char *p = s->out + s->out_len;
    memcpy(p, LIT("HTTP/1.1 "));
    p += 9;
    p += fmt_u64(p, (uint64_t)status);
    *p++ = ' ';
    const char *r = http_status_reason(status);
    size_t rl = strlen(r);
    memcpy(p, r, rl);
    p += rl;
    *p++ = '\r';
    *p++ = '\n';
    memcpy(p, s->env->date, s->env->date_len);
    p += s->env->date_len;
    if (ctype) {
        memcpy(p, LIT("Content-Type: "));
        p += 14;
        size_t cl = strlen(ctype);
        memcpy(p, ctype, cl);
        p += cl;
        *p++ = '\r';
        *p++ = '\n';
    }
    if (status != 204 && status != 304) {
        memcpy(p, LIT("Content-Length: "));
        p += 16;
        p += fmt_u64(p, body_len);
        *p++ = '\r';
        *p++ = '\n';
    }
    if (close) {
        memcpy(p, LIT("Connection: close\r\n"));
        p += 19;
        s->flags |= SESS_CLOSE;
    } else if (s->req_minor == 0) {
        memcpy(p, LIT("Connection: keep-alive\r\n"));
        p += 24;
    }
    if (hdrs_len) {
        memcpy(p, hdrs, hdrs_len);
        p += hdrs_len;
    }
    if (s->req_hdrs_len) {
        memcpy(p, s->req_hdrs, s->req_hdrs_len);
        p += s->req_hdrs_len;
        s->req_hdrs_len = 0; /* one final answer per request */
    }
    *p++ = '\r';
    *p++ = '\n';
    if (!no_body && body_len) {
        memcpy(p, body, body_len);
        p += body_len;
    }
    s->out_len = (uint32_t)(p - s->out);
    s->env->ops->note_response(s, status);
    return 0;
}

int sess_error(struct sess *s, enum http_err e, const char *msg, const char *hdrs,
               size_t hdrs_len)
{
    char body[512];
    int n = snprintf(body, sizeof(body), "{\"error\":{\"code\":\"%s\",\"message\":\"%s\"}}",
                     http_err_code(e), msg);
    if (n < 0 || (size_t)n >= sizeof(body))
        n = 0;
    return sess_respond(s, http_err_status(e), SESS_JSON, hdrs, hdrs_len, body, (size_t)n);
}

/* A protocol error ends the connection: we cannot know where the next request starts. */
static void fail(struct sess *s, int status, const char *why)
{
    s->req_keepalive = false;
    s->req_head = false;
    s->flags |= SESS_CLOSE;
    sess_error(s, http_err_of_status(status), why ? why : http_status_reason(status), NULL, 0);
    kick(s);
}

void sess_park(struct sess *s, void *ctx)
{
    s->flags |= SESS_PENDING;
    s->pending_ctx = ctx;
}

void sess_unpark(struct sess *s)
{
    s->flags &= ~(uint32_t)SESS_PENDING;
    s->pending_ctx = NULL;
    kick(s);
}

/* When the byte at buf[off] arrived: this batch for bytes parsed straight from the receive
   buffer, else the marks kept for in[] (session.h). */
static uint64_t arrived_ns(const struct sess *s, const char *buf, size_t off)
{
    if (buf != s->in)
        return s->env->now_ns;
    return off >= s->in_new_off ? s->in_new_ns : s->in_old_ns;
}

/* Parse and answer complete requests in buf[0..len). Returns bytes consumed. */
static size_t run(struct sess *s, char *buf, size_t len, uint64_t now_ms)
{
    size_t off = 0;
    struct http_req req;
    bool answered = false;
    while (off < len && !(s->flags & (SESS_CLOSE | SESS_PENDING | SESS_OUTFULL | SESS_DEAD))) {
        /* No room for a response now: stop here and resume once the socket drained, so no
           request runs whose answer could not be written. */
        if (sess_reserve(s, SESS_RESP_RESERVE) < 0) {
            s->flags |= SESS_OUTFULL;
            break;
        }
        ssize_t r = http_parse(buf + off, len - off, &s->env->lim, &req);
        if (r < 0) {
            fail(s, (int)-r, req.error);
            return len;
        }
        if (r == HTTP_NEED_MORE) {
            if (!s->req_start_ms)
                s->req_start_ms = now_ms;
            if (req.head_len) {
                if (!s->head_done_ms)
                    s->head_done_ms = now_ms;
                if (req.expect_continue && !(s->flags & SESS_SENT100)) {
                    s->flags |= SESS_SENT100;
                    if (out_append(s, CONTINUE_100, sizeof(CONTINUE_100) - 1) == 0)
                        answered = true;
                }
            }
            break;
        }
        s->req_keepalive = req.keep_alive;
        s->req_minor = req.minor;
        s->req_head = req.method == HTTP_M_HEAD;
        s->req_first_ns = arrived_ns(s, buf, off); /* latency counts from the first byte */
        s->req_hdrs_len = 0;
        s->req_start_ms = 0;
        s->head_done_ms = 0;
        s->flags &= ~(uint32_t)SESS_SENT100;
        uint32_t before = s->out_len;
        enum sess_handled hr = s->env->ops->handle(s, &req);
        if (hr == SESS_H_AGAIN && !req.chunked) {
            s->flags |= SESS_RERUN;
            break; /* parked; the request's bytes stay buffered and run again on unpark */
        }
        s->flags &= ~(uint32_t)SESS_RERUN;
        if (hr == SESS_H_RETRY && !req.chunked) {
            /* A read-only handler needs more room than is free now: run it again later (the
               request bytes are untouched; a de-chunked body could not be parsed twice). */
            s->flags |= SESS_OUTFULL;
            break;
        }
        if (hr != SESS_H_PARKED && s->out_len == before)
            sess_error(s, HTTP_E_OVERLOADED, "response too large for the output buffer now",
                       SESS_HDRS(SESS_RETRY_AFTER_1));
        answered = true;
        off += (size_t)r;
    }
    if (answered)
        kick(s);
    return off;
}

uint32_t sess_env_in_max(const struct http_limits *lim)
{
    /* The parser bounds a chunked body's wire size at max_body + max_head (http.c). */
    uint64_t need = lim->max_body + 2ull * lim->max_head + 65536;
    if (need < SESS_IN_MAX)
        return SESS_IN_MAX;
    return need > UINT32_MAX / 2 ? UINT32_MAX / 2 : (uint32_t)need;
}

static int in_append(struct sess *s, const char *data, size_t n)
{
    if (s->in_len + n > (s->env->in_max ? s->env->in_max : SESS_IN_MAX))
        return -ENOBUFS;
    uint64_t now = s->env->now_ns;
    if (s->in_len == 0) {
        s->in_old_ns = s->in_new_ns = now;
        s->in_new_off = 0;
    } else if (now != s->in_new_ns) {
        /* a later batch: what is buffered so far keeps the older marks */
        if (s->in_new_off == 0)
            s->in_old_ns = s->in_new_ns;
        s->in_new_ns = now;
        s->in_new_off = s->in_len;
    }
    if (s->in_len + n > s->in_cap) {
        uint32_t cap = s->in_cap ? s->in_cap : 4096;
        while (cap < s->in_len + n)
            cap *= 2;
        char *nb = realloc(s->in, cap);
        if (!nb)
            return -ENOMEM;
        s->in = nb;
        s->in_cap = cap;
    }
    memcpy(s->in + s->in_len, data, n);
    s->in_len += (uint32_t)n;
    return 0;
}

static void in_consume(struct sess *s, size_t n)
{
    if (n >= s->in_len) {
        s->in_len = 0;
        /* Give back a large buffer (a 64 KiB body, a long pipeline burst) once drained. */
        if (s->in_cap > 16384) {
            free(s->in);
            s->in = NULL;
            s->in_cap = 0;
        }
        return;
    }
    memmove(s->in, s->in + n, s->in_len - n);
    s->in_len -= (uint32_t)n;
    if (n >= s->in_new_off) { /* what is left all came in the newest batch */
        s->in_new_off = 0;
        s->in_old_ns = s->in_new_ns;
    } else {
        s->in_new_off -= (uint32_t)n;
    }
}

int sess_feed(struct sess *s, char *data, size_t n, uint64_t now_ms)
{
    s->last_ms = now_ms;
    if (s->flags & (SESS_CLOSE | SESS_DEAD))
        return 0; /* after a close decision input is discarded */
    if (s->in_len == 0 && !(s->flags & (SESS_PENDING | SESS_OUTFULL))) {
        /* Fast path: parse straight out of the receive buffer, keep only a partial tail. */
        size_t used = run(s, data, n, now_ms);
        if (used < n && !(s->flags & SESS_CLOSE)) {
            int rc = in_append(s, data + used, n - used);
            if (rc < 0)
                goto overflow;
        }
        return 0;
    }
    int rc = in_append(s, data, n);
    if (rc < 0)
        goto overflow;
    return sess_resume(s, now_ms);
overflow:
    s->flags |= SESS_CLOSE | SESS_DEAD;
    kick(s);
    return 0;
}

int sess_resume(struct sess *s, uint64_t now_ms)
{
    if (s->in_len == 0 || (s->flags & (SESS_PENDING | SESS_CLOSE | SESS_DEAD)))
        return 0;
    s->flags &= ~(uint32_t)SESS_OUTFULL;
    size_t used = run(s, s->in, s->in_len, now_ms);
    if (s->flags & SESS_CLOSE)
        s->in_len = 0;
    else
        in_consume(s, used);
    return 0;
}

uint32_t sess_send_begin(struct sess *s)
{
    s->out_locked = s->out_len;
    return s->out_locked;
}

uint32_t sess_sent(struct sess *s, uint32_t n)
{
    if (n > s->out_locked)
        n = s->out_locked;
    memmove(s->out, s->out + n, s->out_len - n);
    s->out_len -= n;
    s->out_locked -= n;
    /* The rest of a short send is resubmitted from out (same bytes), so the retired buffer is
       unused from here on. */
    free(s->out_old);
    s->out_old = NULL;
    return s->out_locked;
}

bool sess_done(const struct sess *s)
{
    return (s->flags & SESS_DEAD) ||
           ((s->flags & SESS_CLOSE) && s->out_len == 0 && !(s->flags & SESS_PENDING));
}

bool sess_tick(struct sess *s, uint64_t now_ms)
{
    const struct sess_env *e = s->env;
    if (s->flags & (SESS_PENDING | SESS_CLOSE | SESS_DEAD))
        return false;
    if (s->req_start_ms) {
        bool late = s->head_done_ms ? now_ms - s->head_done_ms >= e->body_timeout_ms
                                    : now_ms - s->req_start_ms >= e->header_timeout_ms;
        if (late) {
            s->in_len = 0;
            fail(s, 408, "request not received in time");
            return true;
        }
        return false;
    }
    if (s->out_len == 0 && (e->draining || now_ms - s->last_ms >= e->idle_timeout_ms)) {
        s->flags |= SESS_CLOSE;
        kick(s);
        return true;
    }
    return false;
}
