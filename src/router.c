/* router — see router.h. */
#include "router.h"

#include <stdbool.h>
#include <string.h>

#include "lit.h"

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
    R("/", ROUTE_INDEX, M(HTTP_M_GET), "GET, HEAD, OPTIONS", "index"),
    R("/api/v1/increment", ROUTE_INCR_V1, M(HTTP_M_GET) | M(HTTP_M_POST), "GET, HEAD, POST, OPTIONS",
      "increment_v1"),
    R("/api/v2/increment", ROUTE_INCR_V2, M(HTTP_M_GET) | M(HTTP_M_POST), "GET, HEAD, POST, OPTIONS",
      "increment_v2"),
    R("/api/v1/counter", ROUTE_COUNTER_V1, M(HTTP_M_GET) | M(HTTP_M_POST),
      "GET, HEAD, POST, OPTIONS", "counter_v1"),
};

/* SPEC §2.3: the tenant routes are patterns, matched by segments after "/tenants". */
static const struct route tenant_routes[] = {
    {LIT("/tenants"), ROUTE_TENANTS, M(HTTP_M_GET) | M(HTTP_M_POST), "GET, HEAD, POST, OPTIONS",
     "tenants"},
    {NULL, 0, ROUTE_TENANT, M(HTTP_M_GET) | M(HTTP_M_POST) | M(HTTP_M_DELETE),
     "GET, HEAD, POST, DELETE, OPTIONS", "tenant"},
    {NULL, 0, ROUTE_TN_COUNTERS, M(HTTP_M_GET) | M(HTTP_M_POST), "GET, HEAD, POST, OPTIONS",
     "tenant_counters"},
    {NULL, 0, ROUTE_TN_COUNTER, M(HTTP_M_GET) | M(HTTP_M_DELETE), "GET, HEAD, DELETE, OPTIONS",
     "tenant_counter"},
    {NULL, 0, ROUTE_TN_INC, M(HTTP_M_POST), "POST, OPTIONS", "tenant_counter_inc"},
    {NULL, 0, ROUTE_TN_SET, M(HTTP_M_POST), "POST, OPTIONS", "tenant_counter_set"},
    {NULL, 0, ROUTE_TN_HISTORY, M(HTTP_M_GET), "GET, HEAD, OPTIONS", "tenant_counter_history"},
    {NULL, 0, ROUTE_TN_KEYS, M(HTTP_M_GET) | M(HTTP_M_POST), "GET, HEAD, POST, OPTIONS",
     "tenant_keys"},
    {NULL, 0, ROUTE_TN_KEY, M(HTTP_M_DELETE), "DELETE, OPTIONS", "tenant_key"},
};

static bool seg_is(const char *s, size_t n, const char *lit)
{
    return n == strlen(lit) && memcmp(s, lit, n) == 0;
}

/* The tenant route of path (which starts with "/tenants"), with its {tid}/{cid}; NULL = 404. */
static const struct route *tenant_match(const char *path, size_t n, struct route_match *m)
{
    const char *seg[5];
    size_t len[5], k = 0;
    size_t i = 8; /* after "/tenants" */
    if (i < n && path[i] != '/')
        return NULL; /* "/tenantsX" */
    while (i < n) {
        size_t j = ++i;
        while (j < n && path[j] != '/')
            j++;
        if (j == i || k == 5)
            return NULL;
        seg[k] = path + i;
        len[k++] = j - i;
        i = j;
    }
    enum route_id id;
    int cid = -1;
    if (k == 0) {
        id = ROUTE_TENANTS;
    } else if (k == 1) {
        id = ROUTE_TENANT;
    } else if (k == 2 && seg_is(seg[1], len[1], "keys")) {
        id = ROUTE_TN_KEYS;
    } else if (k == 2) {
        id = seg_is(seg[1], len[1], "counters") ? ROUTE_TN_COUNTERS : ROUTE_TN_COUNTER;
        cid = id == ROUTE_TN_COUNTER ? 1 : -1;
    } else if (k == 3 && seg_is(seg[1], len[1], "keys")) {
        id = ROUTE_TN_KEY;
        cid = 2;
    } else if (k == 3 && seg_is(seg[1], len[1], "counters")) {
        id = ROUTE_TN_COUNTER;
        cid = 2;
    } else if (k == 3 && seg_is(seg[2], len[2], "inc")) {
        id = ROUTE_TN_INC; /* the alias /tenants/{tid}/{cid}/inc */
        cid = 1;
    } else if (k == 4 && seg_is(seg[1], len[1], "counters") &&
               (seg_is(seg[3], len[3], "inc") || seg_is(seg[3], len[3], "set") ||
                seg_is(seg[3], len[3], "history"))) {
        id = seg_is(seg[3], len[3], "inc")   ? ROUTE_TN_INC
             : seg_is(seg[3], len[3], "set") ? ROUTE_TN_SET
                                             : ROUTE_TN_HISTORY;
        cid = 2;
    } else {
        return NULL;
    }
    if (k >= 1) {
        m->tid = seg[0];
        m->tid_len = (uint32_t)len[0];
    }
    if (cid >= 0) {
        m->cid = seg[cid];
        m->cid_len = (uint32_t)len[cid];
    }
    return &tenant_routes[id - ROUTE_TENANTS];
}

int route_match(enum http_method meth, const char *path, size_t n, struct route_match *m)
{
    m->id = ROUTE_NONE;
    m->allow = NULL;
    m->status = 404;
    m->tid = m->cid = NULL;
    m->tid_len = m->cid_len = 0;
    for (size_t i = 0; i <= sizeof(routes) / sizeof(routes[0]); i++) {
        const struct route *r = i < sizeof(routes) / sizeof(routes[0]) ? &routes[i] : NULL;
        if (!r) { /* last: the tenant patterns */
            if (n < 8 || memcmp(path, LIT("/tenants")) != 0 || !(r = tenant_match(path, n, m)))
                break;
        } else if (r->len != n || memcmp(r->path, path, n) != 0) {
            continue;
        }
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
    if (id >= ROUTE_TENANTS && id <= ROUTE_TN_KEY)
        return tenant_routes[id - ROUTE_TENANTS].name;
    return "unknown";
}
