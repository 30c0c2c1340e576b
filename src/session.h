/*
 * session — one HTTP/1.1 connection's application state: input reassembly, the parse loop,
 * response writing and the output buffer that coalesces pipelined responses into one send.
 *
 * Owns: the session's in/out buffers. The io layer (uring/server) owns the socket; it feeds
 * received bytes with sess_feed(), sends out[0..out_len) and reports progress with
 * sess_sent(). Requests whose answer must wait (a /stats barrier, a durable commit) park the
 * session (SESS_PENDING): later requests stay buffered so responses keep their order.
 *
 * Threads: only the worker owning the connection.
 */
#ifndef RC_SESSION_H
#define RC_SESSION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "http.h"

struct sess;
struct app_worker;
struct live;

/* What a handler did with a request (struct sess_ops handle). */
enum sess_handled {
    SESS_H_DONE = 0,   /* answered: the response is appended to s->out */
    SESS_H_PARKED = 1, /* answered later (sess_unpark); parsing pauses until then */
    SESS_H_RETRY = 2,  /* nothing done, not enough output room: call again with the same
                          request once the socket drained (read-only routes only) */
    SESS_H_AGAIN = 3,  /* nothing answered yet: the handler parked s (sess_park) and the same
                          request runs again once it is unparked (a tenant-cache miss looked
                          up in PostgreSQL); never for a chunked request, whose body was
                          decoded in place */
};

/* The layer above the session (the handlers, src/app), injected so the session depends on
   nothing above it; called on the owning worker. */
struct sess_ops {
    /* One complete request on s (its body decoded in place). */
    enum sess_handled (*handle)(struct sess *s, struct http_req *req);
    /* A final response with this status was appended to s (called by sess_respond). */
    void (*note_response)(struct sess *s, int status);
};

/* Per-worker environment shared by the worker's sessions. */
struct sess_env {
    struct http_limits lim;
    uint32_t in_max;            /* buffered input bound; 0 = SESS_IN_MAX (see sess_env_in_max) */
    uint32_t header_timeout_ms, body_timeout_ms, idle_timeout_ms;
    bool draining;              /* SIGTERM: answer with Connection: close */
    char date[64];              /* "Date: ...\r\n", refreshed every second by the io layer */
    size_t date_len;
    const struct sess_ops *ops; /* the handlers (required) */
    struct app_worker *app;     /* the handlers' per-worker state, opaque to the session */
    void (*kick)(struct sess *s); /* io layer: flush/close this session at the end of the batch */
    /* Set by the io layer at the start of every event-loop batch: */
    uint64_t now_ns;            /* CLOCK_MONOTONIC ns (precise, one vDSO read per batch): when
                                   this batch's bytes arrived, and when its answers were queued
                                   (request latency); 0 without an io layer (unit tests) */
    const struct live *live;    /* the reloadable settings for this batch (src/live); NULL: use
                                   live_current() */
};

enum {
    SESS_CLOSE = 1 << 0,     /* close once out is flushed; stop parsing */
    SESS_PENDING = 1 << 1,   /* a handler owes the response; parsing is paused */
    SESS_SENT100 = 1 << 2,   /* "100 Continue" already sent for the current request */
    SESS_DEAD = 1 << 3,      /* the socket is gone; finish pending work, send nothing */
    SESS_OUTFULL = 1 << 4,   /* paused because out is full while a send is in flight */
    SESS_RERUN = 1 << 5,     /* the current request runs again after SESS_H_AGAIN (what it
                                paid for on its first run, such as a rate-limit token, is paid) */
};

/* Output buffer: grows from 4 KiB up to 256 KiB; beyond that the session pauses parsing until
   the socket drains (back-pressure). While a send is in flight the kernel may still read the
   old buffer, so growing then copies into a new one and retires the old one until the send
   completes. Before a request runs, SESS_RESP_RESERVE bytes must be available: every response
   of the hot routes fits (the largest, /stats, is < 1 KiB); larger ones (/metrics, the status
   page) reserve their own size and ask for a retry (SESS_H_RETRY) when they cannot. */
#define SESS_OUT_INIT 4096u
#define SESS_OUT_MAX (256u * 1024u)
#define SESS_RESP_RESERVE 4096u
/* Buffered input bound: a client that keeps pipelining while we cannot answer is cut off here
   (1 MiB >> the largest legal request, ~80 KiB plus chunk framing). */
#define SESS_IN_MAX (1024u * 1024u)
/* Header lines attached to the request being answered (struct sess req_hdrs): the CORS fields of
   a public route (cors.h CORS_ACTUAL_MAX, 640), kept in the session because a parked answer
   (/stats barrier, durable increment) is written after the request's bytes are gone. */
#define SESS_REQ_HDRS_MAX 640u

struct sess {
    struct sess_env *env;
    char *in;
    uint32_t in_len, in_cap;
    char *out;
    uint32_t out_len, out_cap;
    uint32_t out_locked;        /* out[0..out_locked) belongs to an in-flight send */
    char *out_old;              /* retired buffer an in-flight send still reads, or NULL */
    uint32_t flags;
    uint64_t req_start_ms;      /* first byte of the current partial request, 0 if none */
    uint64_t head_done_ms;      /* head complete, body still arriving */
    uint64_t last_ms;           /* last activity */
    /* context of the request being answered (kept for a pending response) */
    bool req_keepalive, req_head;
    uint8_t req_minor;
    uint8_t peer_family;        /* AF_INET / AF_INET6, for rate limiting */
    uint8_t peer[16];
    void *pending_ctx;          /* owned by the handler that parked the session */
    /* metrics (sess_ops note_response): the route of the request being answered and when it arrived */
    uint8_t req_route;          /* enum route_id, ROUTE_NONE until a handler routed it */
    uint64_t req_first_ns;      /* env->now_ns of the batch that brought the request's first
                                   byte (0 without an io layer) */
    uint64_t req_t0_ns;         /* set by the handler when it routed the request; 0 = not */
    /* Arrival of the buffered input (in[]), for req_first_ns of requests parsed from it: bytes
       in[in_new_off..) came in the batch at in_new_ns, older ones at in_old_ns or later (exact
       for input that arrived in at most two batches; older bytes are dated by the oldest, so a
       request's latency is never under-stated). */
    uint64_t in_old_ns, in_new_ns;
    uint32_t in_new_off;
    /* Header lines (each ending CRLF) a handler attached to the final answer of the current
       request, whoever writes it and whenever (a parked answer too): sess_respond appends them
       after its caller's and clears them; a new request starts with none. */
    uint16_t req_hdrs_len;
    char req_hdrs[SESS_REQ_HDRS_MAX];
};

/* Reset s for a new connection (buffers are kept). */
void sess_init(struct sess *s, struct sess_env *env, uint64_t now_ms);
/* Free the buffers. */
void sess_free(struct sess *s);
/* Feed n received bytes (data is writable scratch: chunked bodies are decoded in place).
   Returns 0, or -ENOMEM (caller closes). Responses are appended to out; env->kick is called
   when there is something to send or the session wants to close. */
int sess_feed(struct sess *s, char *data, size_t n, uint64_t now_ms);
/* The io layer is about to send out[0..out_len): locks it. Returns the length to send. */
uint32_t sess_send_begin(struct sess *s);
/* n bytes of the locked region were sent (n <= locked). Returns bytes still locked (short send). */
uint32_t sess_sent(struct sess *s, uint32_t n);
/* Continue parsing buffered input after a pause (pending completed or output drained). */
int sess_resume(struct sess *s, uint64_t now_ms);
/* Does the session want the socket closed now (close requested and nothing left to send)? */
bool sess_done(const struct sess *s);
/* 1 s tick: 408 + close for requests over the header/body deadline, close idle keep-alive
   connections and, while draining, idle ones at once. Returns true if it asked for a close. */
bool sess_tick(struct sess *s, uint64_t now_ms);

/* ---- response writing (handlers) ---- */
/* Append a full response for the current request. ctype may be NULL (no Content-Type);
   hdrs are extra header lines, each ending in CRLF. Returns 0 or -ENOMEM. */
int sess_respond(struct sess *s, int status, const char *ctype, const char *hdrs, size_t hdrs_len,
                 const char *body, size_t body_len);
/* Make room for n more output bytes: 0, -EAGAIN (not now: retry after the in-flight send),
   -ENOBUFS (over SESS_OUT_MAX), -ENOMEM. */
int sess_reserve(struct sess *s, size_t n);
/* Append the JSON error answer e: http_err_status(e) with {"error":{"code":http_err_code(e),
   "message":msg}} (msg is JSON-safe text). 0 or -ENOMEM. */
int sess_error(struct sess *s, enum http_err e, const char *msg, const char *hdrs,
               size_t hdrs_len);
/* Mark the session pending (called by a handler that answers later). */
void sess_park(struct sess *s, void *ctx);
/* A parked response was appended: unpark and let the io layer send and resume parsing. */
void sess_unpark(struct sess *s);
/* The buffered-input bound for these limits: SESS_IN_MAX, or more when --max-body asks for it
   (the largest legal request plus chunk framing must always fit). */
uint32_t sess_env_in_max(const struct http_limits *lim);
/* Write "Date: <IMF-fixdate>\r\n" for unix time t into env. */
void sess_env_set_date(struct sess_env *env, int64_t unix_s);

#define SESS_JSON "application/json; charset=utf-8"
/* A literal header block and its length, for the hdrs/hdrs_len arguments: the length is
   computed, never counted by hand (a miscount once broke the framing of every later answer). */
#define SESS_HDRS(lit) SESS_LIT(lit)
/* Any literal (a body) and its length, the same way. */
#define SESS_LIT(lit) (lit), (sizeof(lit) - 1)
#define SESS_RETRY_AFTER_1 "Retry-After: 1\r\n"

#endif
