/* rb_client — control-plane HTTP client, URL parsing, top-level JSON lookup. See rb_client.h. */
#include "rb_client.h"
#include "rb_resp.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

int rb_client_parse_url(const char *url, struct rb_url *u, char *err, size_t errlen)
{
    memset(u, 0, sizeof(*u));
    if (strncasecmp(url, "http://", 7) != 0) {
        snprintf(err, errlen, "URL must start with http:// (https is not supported)");
        return -EINVAL;
    }
    const char *a = url + 7, *ae = a + strcspn(a, "/?#");
    if (ae == a || (size_t)(ae - a) >= sizeof(u->authority)) {
        snprintf(err, errlen, "URL has no or an overlong host");
        return -EINVAL;
    }
    memcpy(u->authority, a, (size_t)(ae - a));
    const char *h = a, *he, *port = NULL;
    if (*a == '[') {
        h = a + 1;
        he = memchr(h, ']', (size_t)(ae - h));
        if (!he || he == h) {
            snprintf(err, errlen, "URL has a malformed [IPv6] host");
            return -EINVAL;
        }
        if (he + 1 < ae) {
            if (he[1] != ':') {
                snprintf(err, errlen, "URL: junk after ]");
                return -EINVAL;
            }
            port = he + 2;
        }
    } else {
        he = memchr(a, ':', (size_t)(ae - a));
        if (he)
            port = he + 1;
        else
            he = ae;
    }
    if (he == h || (size_t)(he - h) >= sizeof(u->host)) {
        snprintf(err, errlen, "URL has an empty host");
        return -EINVAL;
    }
    memcpy(u->host, h, (size_t)(he - h));
    u->port = 80;
    if (port) {
        unsigned long p = 0;
        if (port == ae || ae - port > 5) {
            snprintf(err, errlen, "URL has a bad port");
            return -EINVAL;
        }
        for (const char *q = port; q < ae; q++) {
            if (*q < '0' || *q > '9') {
                snprintf(err, errlen, "URL has a bad port");
                return -EINVAL;
            }
            p = p * 10 + (unsigned long)(*q - '0');
        }
        if (p == 0 || p > 65535) {
            snprintf(err, errlen, "URL port must be 1..65535");
            return -EINVAL;
        }
        u->port = (uint16_t)p;
    }
    const char *path = ae;
    if (*path == '#') path = "";
    size_t plen = strcspn(path, "#");
    if (plen + 2 > sizeof(u->path)) {
        snprintf(err, errlen, "URL path too long");
        return -EINVAL;
    }
    if (plen == 0 || path[0] != '/') u->path[0] = '/';
    memcpy(u->path + strlen(u->path), path, plen);

    char ps[8];
    snprintf(ps, sizeof(ps), "%u", u->port);
    struct addrinfo hints = {0}, *res = NULL;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICSERV;
    int rc = getaddrinfo(u->host, ps, &hints, &res);
    if (rc != 0 || !res) {
        snprintf(err, errlen, "cannot resolve %s: %s", u->host, gai_strerror(rc));
        return -EHOSTUNREACH;
    }
    memcpy(&u->addr, res->ai_addr, res->ai_addrlen);
    u->addrlen = res->ai_addrlen;
    freeaddrinfo(res);
    return 0;
}

static int wait_fd(int fd, short ev, int timeout_ms)
{
    struct pollfd p = {.fd = fd, .events = ev};
    int rc;
    do
        rc = poll(&p, 1, timeout_ms);
    while (rc < 0 && errno == EINTR);
    if (rc < 0) return -errno;
    return rc == 0 ? -ETIMEDOUT : 0;
}

static int connect_to(const struct rb_url *u, int timeout_ms)
{
    int fd = socket(u->addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) return -errno;
    int rc = 0;
    if (connect(fd, (const struct sockaddr *)&u->addr, u->addrlen) < 0) {
        if (errno != EINPROGRESS) {
            rc = -errno;
            goto fail;
        }
        rc = wait_fd(fd, POLLOUT, timeout_ms);
        if (rc < 0) goto fail;
        int soerr = 0;
        socklen_t sl = sizeof(soerr);
        getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl);
        if (soerr) {
            rc = -soerr;
            goto fail;
        }
    }
    return fd;
fail:
    close(fd);
    return rc;
}

/* Send p[0..len) on the non-blocking fd, waiting up to timeout_ms each time it is full.
   0 / -errno (-ETIMEDOUT). */
static int send_all(int fd, const char *p, int len, int timeout_ms)
{
    for (int off = 0; off < len;) {
        ssize_t w = send(fd, p + off, (size_t)(len - off), MSG_NOSIGNAL);
        if (w < 0 && errno == EAGAIN) {
            int rc = wait_fd(fd, POLLOUT, timeout_ms);
            if (rc < 0)
                return rc;
            continue;
        }
        if (w < 0)
            return -errno;
        off += (int)w;
    }
    return 0;
}

int rb_client_request(const struct rb_url *u, const char *method, const char *path,
                      const char *extra_headers, const char *body, int timeout_ms,
                      struct rb_client_resp *out)
{
    size_t blen = body ? strlen(body) : 0;
    size_t cap = strlen(method) + strlen(path) + strlen(u->authority) +
                 (extra_headers ? strlen(extra_headers) : 0) + blen + 200;
    char *req = malloc(cap), *in = NULL;
    int fd = -1, rc = -ENOMEM;
    if (!req) goto out;
    int len = snprintf(req, cap, "%s %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n%s", method,
                       path, u->authority, extra_headers ? extra_headers : "");
    if (body)
        len +=
            snprintf(req + len, cap - (size_t)len,
                     "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n%s", blen, body);
    else if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0)
        len += snprintf(req + len, cap - (size_t)len, "Content-Length: 0\r\n\r\n");
    else
        len += snprintf(req + len, cap - (size_t)len, "\r\n");

    fd = connect_to(u, timeout_ms);
    if (fd < 0) {
        rc = fd;
        goto out;
    }
    if ((rc = send_all(fd, req, len, timeout_ms)) < 0)
        goto out;
    /* Read to EOF (we asked for Connection: close); control responses are small, 1 MiB is
       far above any /stats or tenant answer. */
    size_t icap = 16384, ilen = 0, hl = 0;
    int64_t clen = -1;
    in = malloc(icap);
    rc = -ENOMEM;
    if (!in) goto out;
    uint16_t st = 0;
    bool cl_close;
    for (;;) {
        if (ilen == icap) {
            rc = -EMSGSIZE;
            if (icap >= (1u << 20)) goto out;
            char *n2 = realloc(in, icap * 2);
            rc = -ENOMEM;
            if (!n2) goto out;
            in = n2;
            icap *= 2;
        }
        ssize_t r = recv(fd, in + ilen, icap - ilen, 0);
        if (r < 0 && errno == EAGAIN) {
            rc = wait_fd(fd, POLLIN, timeout_ms);
            if (rc < 0) goto out;
            continue;
        }
        if (r < 0) {
            rc = -errno;
            goto out;
        }
        ilen += (size_t)r;
        if (hl == 0) {
            char *e = NULL;
            for (size_t i = 3; i < ilen && !e; i++)
                if (memcmp(in + i - 3, "\r\n\r\n", 4) == 0) e = in + i + 1;
            if (e) {
                hl = (size_t)(e - in);
                rc = rb_resp_parse_head(in, hl, &st, &clen, &cl_close);
                if (rc < 0) goto out;
            }
        }
        if (hl && clen >= 0 && ilen - hl >= (size_t)clen) break;
        if (r == 0) {
            rc = -EPROTO;
            if (hl == 0 || clen >= 0)
                goto out; /* EOF before the head or the announced body was complete */
            break;
        }
    }
    size_t bl = ilen - hl;
    if (clen >= 0 && (size_t)clen < bl) bl = (size_t)clen;
    if (st == 204 || st == 304 || strcmp(method, "HEAD") == 0) bl = 0;
    out->status = st;
    out->body_len = bl < out->body_cap ? bl : out->body_cap - 1;
    memcpy(out->body, in + hl, out->body_len);
    out->body[out->body_len] = '\0';
    rc = 0;
out:
    if (fd >= 0) close(fd);
    free(req);
    free(in);
    return rc;
}

static const char *skip_ws(const char *p, const char *e)
{
    while (p < e && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
        p++;
    return p;
}

/* p at '"': returns the position after the closing quote, or NULL. */
static const char *skip_string(const char *p, const char *e)
{
    for (p++; p < e; p++) {
        if (*p == '\\')
            p++;
        else if (*p == '"')
            return p + 1;
    }
    return NULL;
}

/* p at the start of a value: returns the position after it, or NULL. */
static const char *skip_value(const char *p, const char *e)
{
    if (p >= e) return NULL;
    if (*p == '"') return skip_string(p, e);
    if (*p == '{' || *p == '[') {
        int depth = 0;
        while (p < e) {
            if (*p == '"') {
                p = skip_string(p, e);
                if (!p) return NULL;
                continue;
            }
            if (*p == '{' || *p == '[')
                depth++;
            else if (*p == '}' || *p == ']')
                if (--depth == 0) return p + 1;
            p++;
        }
        return NULL;
    }
    const char *s = p;
    while (p < e && *p != ',' && *p != '}' && *p != ']' && *p != ' ' && *p != '\t' && *p != '\n' &&
           *p != '\r')
        p++;
    return p == s ? NULL : p;
}

int rb_client_json_get(const char *json, size_t n, const char *key, const char **val, size_t *vlen)
{
    const char *p = json, *e = json + n;
    size_t kl = strlen(key);
    p = skip_ws(p, e);
    if (p >= e || *p != '{') return -EINVAL;
    p = skip_ws(p + 1, e);
    if (p < e && *p == '}') return -ENOENT;
    while (p < e) {
        if (*p != '"') return -EINVAL;
        const char *ks = p + 1, *ke = skip_string(p, e);
        if (!ke) return -EINVAL;
        p = skip_ws(ke, e);
        if (p >= e || *p != ':') return -EINVAL;
        p = skip_ws(p + 1, e);
        const char *vs = p, *ve = skip_value(p, e);
        if (!ve) return -EINVAL;
        if ((size_t)(ke - 1 - ks) == kl && memcmp(ks, key, kl) == 0) {
            if (*vs == '"') {
                vs++;
                ve--;
            }
            *val = vs;
            *vlen = (size_t)(ve - vs);
            return 0;
        }
        p = skip_ws(ve, e);
        if (p < e && *p == ',') {
            p = skip_ws(p + 1, e);
            continue;
        }
        if (p < e && *p == '}') return -ENOENT;
        return -EINVAL;
    }
    return -EINVAL;
}
