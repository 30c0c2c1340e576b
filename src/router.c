/* router — see router.h. */
#include "router.h"

#include <string.h>

#define M(x) (1u << (x))

struct route {
    const char *path;
    size_t len;
    enum route_id id;
    unsigned methods;
    const char *allow;
    const char *name;
};

#define R(p, id, m, allow, name) {p, sizeof(p) - 1, id, m, allow, name}
static const struct route routes[] = {
    R("/event", ROUTE_EVENT, M(HTTP_M_POST), "POST, OPTIONS", "event"),
    R("/stats", ROUTE_STATS, M(HTTP_M_GET), "GET, HEAD, OPTIONS", "stats"),
    R("/reset", ROUTE_RESET, M(HTTP_M_POST), "POST, OPTIONS", "reset"),
    R("/health", ROUTE_HEALTH, M(HTTP_M_GET), "GET, HEAD, OPTIONS", "health"),
    R("/livez", ROUTE_LIVEZ, M(HTTP_M_GET), "GET, HEAD, OPTIONS", "livez"),
    R("/readyz", ROUTE_READYZ, M(HTTP_M_GET), "GET, HEAD, OPTIONS", "readyz"),
    R("/metrics", ROUTE_METRICS, M(HTTP_M_GET), "GET, HEAD, OPTIONS", "metrics"),
};

int route_match(enum http_method meth, const char *path, size_t n, struct route_match *m)
{
    m->id = ROUTE_NONE;
    m->allow = NULL;
    m->status = 404;
    for (size_t i = 0; i < sizeof(routes) / sizeof(routes[0]); i++) {
        const struct route *r = &routes[i];
        if (r->len != n || memcmp(r->path, path, n) != 0)
            continue;
        m->allow = r->allow;
        unsigned mm = r->methods;
        if (mm & M(HTTP_M_GET))
            mm |= M(HTTP_M_HEAD);
        mm |= M(HTTP_M_OPTIONS);
        if (mm & M(meth)) {
            m->id = r->id;
            m->status = 0;
        } else {
            m->status = 405;
        }
        return m->status;
    }
    return m->status;
}

const char *route_name(enum route_id id)
{
    for (size_t i = 0; i < sizeof(routes) / sizeof(routes[0]); i++)
        if (routes[i].id == id)
            return routes[i].name;
    return "unknown";
}
