/* cors — see cors.h. */
#include "cors.h"

#include <errno.h>
#include <string.h>
#include <strings.h>

int cors_init(struct cors_conf *c, const char *spec)
{
    memset(c, 0, sizeof(*c));
    size_t len = strlen(spec);
    if (len >= sizeof(c->buf))
        return -EINVAL;
    memcpy(c->buf, spec, len);
    size_t i = 0;
    while (i < len) {
        size_t j = i;
        while (j < len && c->buf[j] != ',')
            j++;
        size_t a = i, b = j;
        while (a < b && (c->buf[a] == ' ' || c->buf[a] == '\t'))
            a++;
        while (b > a && (c->buf[b - 1] == ' ' || c->buf[b - 1] == '\t'))
            b--;
        if (b > a) {
            if (b - a == 1 && c->buf[a] == '*') {
                c->any = true;
            } else {
                if (c->n == CORS_MAX_ORIGINS)
                    return -EINVAL;
                c->o[c->n].off = (unsigned)a;
                c->o[c->n].len = (unsigned)(b - a);
                c->n++;
            }
        }
        i = j + 1;
    }
    c->enabled = c->any || c->n > 0;
    return 0;
}

bool cors_allowed(const struct cors_conf *c, const char *origin, size_t n)
{
    if (!c->enabled || !origin || n == 0 || n > CORS_ORIGIN_MAX)
        return false;
    if (c->any)
        return true;
    for (size_t i = 0; i < c->n; i++)
        if (c->o[i].len == n && strncasecmp(c->buf + c->o[i].off, origin, n) == 0)
            return true;
    return false;
}

static char *put(char *p, const char *s)
{
    size_t n = strlen(s);
    memcpy(p, s, n);
    return p + n;
}

static char *allow_origin(const struct cors_conf *c, const char *origin, size_t n, char *p)
{
    if (c->any)
        return put(p, "Access-Control-Allow-Origin: *\r\n");
    p = put(p, "Access-Control-Allow-Origin: ");
    memcpy(p, origin, n);
    p += n;
    /* the answer depends on Origin: a shared cache must not serve it to another origin */
    return put(p, "\r\nVary: Origin\r\n");
}

size_t cors_actual(const struct cors_conf *c, const char *origin, size_t n, char *out, size_t cap)
{
    if (cap < CORS_ACTUAL_MAX || !cors_allowed(c, origin, n))
        return 0;
    char *p = allow_origin(c, origin, n, out);
    p = put(p, "Access-Control-Expose-Headers: RateLimit, RateLimit-Policy, Retry-After\r\n");
    _Static_assert(29 + CORS_ORIGIN_MAX + 16 + 74 <= CORS_ACTUAL_MAX, "CORS_ACTUAL_MAX");
    return (size_t)(p - out);
}

size_t cors_preflight(const struct cors_conf *c, const char *origin, size_t n, const char *methods,
                      char *out, size_t cap)
{
    if (cap < CORS_HDR_MAX || !cors_allowed(c, origin, n) || strlen(methods) > 64)
        return 0;
    char *p = allow_origin(c, origin, n, out);
    p = put(p, "Access-Control-Allow-Methods: ");
    p = put(p, methods);
    p = put(p, "\r\nAccess-Control-Allow-Headers: Content-Type, Idempotency-Key\r\n"
               "Access-Control-Max-Age: 600\r\n");
    return (size_t)(p - out);
}
