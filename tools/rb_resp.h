/*
 * rb_resp — ringbench's incremental HTTP/1.1 response parser (one per connection).
 *
 * Owns: the per-connection parse state and a small carry buffer that holds a response head
 * split across receive buffers (bodies are skipped by counting, never copied). Thread: the
 * worker that owns the connection. Allocates only when a head straddles two receives.
 * Understands: status line, Content-Length, Connection: close (and HTTP/1.0 without
 * keep-alive), 1xx interim responses (skipped), bodiless statuses (1xx, 204, 304) and responses
 * to HEAD. Not supported (reported as -EPROTO): Transfer-Encoding, a body delimited by close.
 */
#ifndef RB_RESP_H
#define RB_RESP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* A response head larger than this is refused: 64 KiB is 4x the 16 KiB header block ringcount
   and nginx (large_client_header_buffers 4 8k) accept, so only a broken peer hits it. */
#define RB_RESP_MAX_HEAD 65536

struct rb_resp {
    char *carry;        /* partial head (malloc'd on first use) */
    uint32_t carry_len; /* bytes in carry */
    uint32_t carry_cap; /* allocated bytes */
    uint64_t body_left; /* body bytes still to skip for the current response */
    bool in_body;       /* head done, skipping body_left bytes */
    bool head_method;   /* requests are HEAD: responses carry no body */
    uint16_t status;    /* status of the response being parsed */
    bool close;         /* the response being parsed ends the connection */
};

struct rb_resp_info {
    uint16_t status; /* 100..599 */
    bool close;      /* the server closes the connection after this response */
};

/* Initialise r (no allocation); head_method: the requests sent are HEAD. */
void rb_resp_init(struct rb_resp *r, bool head_method);

/* Forget any partial response (after a reconnect); keeps the carry allocation. */
void rb_resp_reset(struct rb_resp *r);

/* Free the carry buffer. */
void rb_resp_free(struct rb_resp *r);

/* Consume bytes from *p, *n (advanced past what was used). Returns 1 when a final (non-1xx)
   response completed (out filled, bytes after it stay in *p, *n), 0 when all input was used
   and more is needed, -EPROTO on a malformed or unsupported response, -ENOMEM. */
int rb_resp_next(struct rb_resp *r, const char **p, size_t *n, struct rb_resp_info *out);

/* The head parser alone (exposed for tests): parse the complete head h[0..len) (ending in
   "\r\n\r\n" or "\n\n"); 0 and *status, *content_length (-1 if absent), *close; or -EPROTO. */
int rb_resp_parse_head(const char *h, size_t len, uint16_t *status, int64_t *content_length,
                       bool *close);

#endif
