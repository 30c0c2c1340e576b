/*
 * rb_client — ringbench's control-plane HTTP: URL parsing, one blocking request/response
 * (GET /stats, tenant set-up), and reading one top-level member of a JSON object.
 *
 * Owns: nothing beyond the caller's structs (no globals); the socket of a request lives only
 * inside rb_client_request. Thread: any (the main thread uses it before and after a run).
 */
#ifndef RB_CLIENT_H
#define RB_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

struct rb_url {
    char authority[300];          /* "host:port" as written in the URL: the Host header */
    char host[256];               /* without brackets */
    char path[2048];              /* "/..." (default "/"), query included */
    uint16_t port;                /* default 80 */
    struct sockaddr_storage addr; /* resolved (first getaddrinfo result) */
    socklen_t addrlen;
};

/* Parse and resolve "http://HOST[:PORT][/path]" (HOST may be "[v6]"). 0, or -EINVAL (with a
   message in err) for a malformed URL, or -EHOSTUNREACH when HOST does not resolve. */
int rb_client_parse_url(const char *url, struct rb_url *u, char *err, size_t errlen);

struct rb_client_resp {
    int status;      /* HTTP status */
    char *body;      /* caller's buffer; NUL-terminated */
    size_t body_cap; /* its size */
    size_t body_len; /* bytes of body (truncated to body_cap - 1) */
};

/* Send one request on a fresh connection ("Connection: close"), read the whole response.
   extra_headers: "Name: value\r\n"... or NULL; body may be NULL. Waits at most timeout_ms
   per step. 0 (out filled), or -errno (-ETIMEDOUT, -ECONNREFUSED, -EPROTO ...). */
int rb_client_request(const struct rb_url *u, const char *method, const char *path,
                      const char *extra_headers, const char *body, int timeout_ms,
                      struct rb_client_resp *out);

/* Find member `key` of the top-level JSON object in json[0..n). Returns 0 and the member's
   raw value token in *val, *vlen (strings without their quotes, escapes left as they are),
   -ENOENT when absent, -EINVAL when json is not an object. */
int rb_client_json_get(const char *json, size_t n, const char *key, const char **val, size_t *vlen);

#endif
