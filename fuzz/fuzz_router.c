/*
 * fuzz_router — libFuzzer target for src/router.c, alone and behind the HTTP parser.
 *
 * Input: byte 0 picks the method; the rest is a request path (raw bytes).
 *
 * Invariants:
 *  - route_match returns its m->status, one of 0 / 404 / 405, and agrees with the route table of
 *    SPEC §2 written out again here (path -> methods; HEAD wherever GET; OPTIONS on every known
 *    path), the §2.3 tenant patterns included (tenant_spec);
 *  - the Allow value of a known path names exactly the methods that match there;
 *  - route_name is never NULL, and distinct paths never share a route id;
 *  - through the parser: "<METHOD> <bytes> HTTP/1.1" that parses is routed on req.path, so an
 *    origin-form "/event?x" or absolute-form "http://h/event" reaches the same route as "/event".
 */
#include "fz.h"
#include "http.h"
#include "router.h"

#define BIT(m) (1u << (m))
#define GETS (BIT(HTTP_M_GET) | BIT(HTTP_M_HEAD) | BIT(HTTP_M_OPTIONS))
#define POSTS (BIT(HTTP_M_POST) | BIT(HTTP_M_OPTIONS))
#define DELS (BIT(HTTP_M_DELETE) | BIT(HTTP_M_OPTIONS))

static const struct {
    const char *path;
    unsigned methods;
} spec[] = {
    {"/event", POSTS},
    {"/stats", GETS},
    {"/reset", POSTS},
    {"/health", GETS},
    {"/livez", GETS},
    {"/readyz", GETS},
    {"/metrics", GETS},
    {"/", GETS},
    {"/api/v1/increment", GETS | POSTS},
    {"/api/v2/increment", GETS | POSTS},
    {"/api/v1/counter", GETS | POSTS},
};
#define NSPEC (sizeof spec / sizeof spec[0])

/* SPEC §2.3 tenant patterns written out again: the methods of a path under "/tenants", or 0 if
   it is not one of them. Segments are the non-empty pieces between '/'; literals win over ids. */
static unsigned tenant_spec(const char *p, size_t n)
{
    if (n < 8 || memcmp(p, "/tenants", 8) != 0)
        return 0;
    const char *seg[6];
    size_t len[6], k = 0;
    for (size_t i = 8; i < n;) {
        if (p[i] != '/' || k == 6)
            return 0;
        size_t j = i + 1;
        while (j < n && p[j] != '/')
            j++;
        if (j == i + 1)
            return 0;
        seg[k] = p + i + 1;
        len[k++] = j - i - 1;
        i = j;
    }
#define IS(x, lit) (len[x] == sizeof(lit) - 1 && memcmp(seg[x], lit, sizeof(lit) - 1) == 0)
    switch (k) {
    case 0: return GETS | POSTS;
    case 1: return GETS | POSTS | DELS;
    case 2: return IS(1, "counters") || IS(1, "keys") ? GETS | POSTS : GETS | DELS;
    case 3:
        return IS(1, "keys") ? DELS : IS(1, "counters") ? GETS | DELS : IS(2, "inc") ? POSTS : 0;
    case 4: return IS(1, "counters") && (IS(3, "inc") || IS(3, "set")) ? POSTS : 0;
    default: return 0;
    }
#undef IS
}

static struct http_req req;

/* Index of path in spec[], or -1. */
static int spec_find(const char *p, size_t n)
{
    for (size_t i = 0; i < NSPEC; i++)
        if (strlen(spec[i].path) == n && memcmp(spec[i].path, p, n) == 0)
            return (int)i;
    return -1;
}

/* Does the Allow list a contain method name t? */
static bool allow_has(const char *a, const char *t)
{
    size_t tn = strlen(t);
    for (const char *p = a; *p;) {
        const char *e = strchr(p, ',');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        if (n == tn && memcmp(p, t, n) == 0)
            return true;
        if (!e)
            break;
        p = e + 1;
        while (*p == ' ')
            p++;
    }
    return false;
}

static void check_route(enum http_method meth, const char *p, size_t n)
{
    struct route_match m;
    int rc = route_match(meth, p, n, &m);
    FZ_CHECK(rc == m.status, "return %d, status %d", rc, m.status);
    FZ_CHECK(route_name(m.id) != NULL, "route_name NULL");
    int k = spec_find(p, n);
    unsigned tm = tenant_spec(p, n);
    if (tm) { /* a tenant pattern: the same status and Allow invariants, ids may repeat */
        FZ_CHECK(m.allow != NULL, "known tenant path without Allow");
        FZ_CHECK(m.status == ((tm & BIT(meth)) ? 0 : 405), "%s tenant path: status %d",
                 http_method_name(meth), m.status);
        for (int x = 0; x < HTTP_M__COUNT; x++)
            FZ_CHECK(allow_has(m.allow, http_method_name((enum http_method)x)) ==
                         ((tm & BIT(x)) != 0),
                     "Allow \"%s\" vs %s on a tenant path", m.allow,
                     http_method_name((enum http_method)x));
        return;
    }
    if (k < 0) {
        FZ_CHECK(m.status == 404 && m.id == ROUTE_NONE, "unknown path matched (%d)", m.status);
        return;
    }
    FZ_CHECK(m.allow != NULL, "known path without Allow");
    bool want = spec[k].methods & BIT(meth);
    FZ_CHECK(m.status == (want ? 0 : 405), "%s %s: status %d", http_method_name(meth),
             spec[k].path, m.status);
    FZ_CHECK(want == (m.id != ROUTE_NONE), "route id vs status");
    /* Allow names exactly the methods that match on this path. */
    for (int x = 0; x < HTTP_M__COUNT; x++) {
        struct route_match mx;
        route_match((enum http_method)x, p, n, &mx);
        FZ_CHECK(allow_has(m.allow, http_method_name((enum http_method)x)) == (mx.status == 0),
                 "Allow \"%s\" vs %s on %s", m.allow, http_method_name((enum http_method)x),
                 spec[k].path);
    }
    /* no other path routes to the same id */
    for (size_t i = 0; i < NSPEC; i++) {
        struct route_match mi;
        route_match(HTTP_M_OPTIONS, spec[i].path, strlen(spec[i].path), &mi);
        if ((int)i != k && m.id != ROUTE_NONE)
            FZ_CHECK(mi.id != m.id, "%s and %s share a route id", spec[i].path, spec[k].path);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > 4096)
        return 0;
    enum http_method meth = (enum http_method)(data[0] % HTTP_M__COUNT);
    const char *p = (const char *)data + 1;
    size_t n = size - 1;
    char *b = fz_dup(p, n);
    check_route(meth, b, n);
    free(b);

    /* The same bytes as a request-target. */
    const char *mn = http_method_name(meth);
    static const char tail[] = " HTTP/1.1\r\nHost: h\r\n\r\n";
    size_t ml = strlen(mn), len = ml + 1 + n + sizeof tail - 1;
    char *r = malloc(len);
    FZ_CHECK(r != NULL, "malloc");
    memcpy(r, mn, ml);
    r[ml] = ' ';
    memcpy(r + ml + 1, p, n);
    memcpy(r + ml + 1 + n, tail, sizeof tail - 1);
    ssize_t rc = http_parse(r, len, &(struct http_limits)HTTP_LIMITS_DEFAULT, &req);
    if (rc > 0) {
        FZ_CHECK(req.method == meth, "method changed by the parser");
        check_route(req.method, req.path, req.path_len);
    }
    free(r);
    return 0;
}
