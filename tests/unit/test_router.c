/* Unit tests for src/router: every route with every method (allowed, HEAD where GET, OPTIONS,
   405 + Allow otherwise), 404 for unknown paths and near-misses, route names. */
#include <criterion/criterion.h>
#include <string.h>

#include "http.h"
#include "router.h"

struct route_def {
    const char *path;
    enum route_id id;
    const char *name;
    unsigned allowed; /* bit per enum http_method, OPTIONS and the implied HEAD included */
    const char *allow;
};

#define B(m) (1u << (m))
#define GETLIKE (B(HTTP_M_GET) | B(HTTP_M_HEAD) | B(HTTP_M_OPTIONS))
#define POSTLIKE (B(HTTP_M_POST) | B(HTTP_M_OPTIONS))

/* SPEC §2.1 / §2.4 and the status page: the routes this build serves. */
static const struct route_def defs[] = {
    {"/event", ROUTE_EVENT, "event", POSTLIKE, "POST, OPTIONS"},
    {"/stats", ROUTE_STATS, "stats", GETLIKE, "GET, HEAD, OPTIONS"},
    {"/reset", ROUTE_RESET, "reset", POSTLIKE, "POST, OPTIONS"},
    {"/health", ROUTE_HEALTH, "health", GETLIKE, "GET, HEAD, OPTIONS"},
    {"/livez", ROUTE_LIVEZ, "livez", GETLIKE, "GET, HEAD, OPTIONS"},
    {"/readyz", ROUTE_READYZ, "readyz", GETLIKE, "GET, HEAD, OPTIONS"},
    {"/metrics", ROUTE_METRICS, "metrics", GETLIKE, "GET, HEAD, OPTIONS"},
    {"/", ROUTE_INDEX, "index", GETLIKE, "GET, HEAD, OPTIONS"},
    /* SPEC §2.2: the single counter */
    {"/api/v1/increment", ROUTE_INCR_V1, "increment_v1", GETLIKE | POSTLIKE, "GET, HEAD, POST, OPTIONS"},
    {"/api/v2/increment", ROUTE_INCR_V2, "increment_v2", GETLIKE | POSTLIKE, "GET, HEAD, POST, OPTIONS"},
    {"/api/v1/counter", ROUTE_COUNTER_V1, "counter_v1", GETLIKE | POSTLIKE, "GET, HEAD, POST, OPTIONS"},
};
#define NDEFS (sizeof(defs) / sizeof(defs[0]))

Test(router, every_route_every_method)
{
    for (size_t i = 0; i < NDEFS; i++) {
        const struct route_def *d = &defs[i];
        for (int m = 0; m < HTTP_M__COUNT; m++) {
            struct route_match rm;
            memset(&rm, 0x5a, sizeof(rm)); /* route_match must set every field */
            int st = route_match((enum http_method)m, d->path, strlen(d->path), &rm);
            cr_assert_eq(st, rm.status);
            cr_assert_not_null(rm.allow, "%s %s: Allow must be set on a known path",
                               http_method_name((enum http_method)m), d->path);
            cr_assert_str_eq(rm.allow, d->allow, "%s", d->path);
            if (d->allowed & B(m)) {
                cr_assert_eq(st, 0, "%s %s", http_method_name((enum http_method)m), d->path);
                cr_assert_eq(rm.id, d->id, "%s %s", http_method_name((enum http_method)m),
                             d->path);
            } else {
                cr_assert_eq(st, 405, "%s %s -> %d", http_method_name((enum http_method)m),
                             d->path, st);
                cr_assert_eq(rm.id, ROUTE_NONE);
            }
        }
    }
}

/* Every method the Allow value lists is accepted, and every accepted method is listed
   (OPTIONS included): the 405 answer must not advertise a method that would be refused. */
Test(router, allow_lists_exactly_the_accepted_methods)
{
    for (size_t i = 0; i < NDEFS; i++) {
        for (int m = 0; m < HTTP_M__COUNT; m++) {
            struct route_match rm;
            route_match((enum http_method)m, defs[i].path, strlen(defs[i].path), &rm);
            const char *name = http_method_name((enum http_method)m);
            size_t nl = strlen(name);
            bool listed = false;
            for (const char *p = rm.allow; (p = strstr(p, name)); p += nl)
                if ((p == rm.allow || p[-1] == ' ') && (p[nl] == ',' || p[nl] == '\0'))
                    listed = true;
            cr_assert_eq(listed, rm.status == 0, "%s on %s: listed=%d status=%d", name,
                         defs[i].path, listed, rm.status);
        }
    }
}

static const char *const unknown_paths[] = {
    "//",       "",        "*",        "/event/",  "/events", "/Event",  "/EVENT",
    "/even",    "event",   "//event",  "/event/x", "/stats/", "/Stats",  "/stat",
    "/statss",  "/reset/", "/healthz", "/health/", "/livez/", "/readyz/", "/metrics/",
    "/metric",  "/api",    "/x/event", " /event",  "/event ",  "/index",  "/index.html",
    "/?",       "/ ",
};

Test(router, unknown_paths_are_404)
{
    static const enum http_method ms[] = {HTTP_M_GET, HTTP_M_POST, HTTP_M_HEAD, HTTP_M_OPTIONS,
                                          HTTP_M_DELETE};
    for (size_t i = 0; i < sizeof(unknown_paths) / sizeof(unknown_paths[0]); i++) {
        for (size_t j = 0; j < sizeof(ms) / sizeof(ms[0]); j++) {
            struct route_match rm;
            memset(&rm, 0x5a, sizeof(rm));
            const char *p = unknown_paths[i];
            cr_assert_eq(route_match(ms[j], p, strlen(p), &rm), 404, "'%s'", p);
            cr_assert_eq(rm.status, 404);
            cr_assert_eq(rm.id, ROUTE_NONE);
            cr_assert_null(rm.allow, "'%s'", p);
        }
    }
}

/* The path is (pointer, length): bytes past n are not part of it, and an embedded NUL or a
   longer length is not a match. */
Test(router, uses_length_not_nul)
{
    struct route_match rm;
    cr_assert_eq(route_match(HTTP_M_POST, "/eventXYZ", 6, &rm), 0);
    cr_assert_eq(rm.id, ROUTE_EVENT);
    cr_assert_eq(route_match(HTTP_M_POST, "/event\0", 7, &rm), 404);
    cr_assert_eq(route_match(HTTP_M_GET, "/health", 6, &rm), 404); /* "/healt" */
    cr_assert_eq(route_match(HTTP_M_GET, "/health?x=1", 11, &rm), 404);
}

Test(router, names)
{
    for (size_t i = 0; i < NDEFS; i++)
        cr_assert_str_eq(route_name(defs[i].id), defs[i].name);
    cr_assert_str_eq(route_name(ROUTE_NONE), "unknown");
    cr_assert_str_eq(route_name(ROUTE__COUNT), "unknown");
    /* every id has a route (so every id is reachable and named) */
    for (int id = ROUTE_NONE + 1; id < ROUTE__COUNT; id++)
        cr_assert_str_neq(route_name((enum route_id)id), "unknown", "route id %d", id);
    /* + the 9 tenant pattern routes (history and keys included), tested in test_router_tenants.c */
    cr_assert_eq(NDEFS + 9, (size_t)ROUTE__COUNT - 1, "a route was added without a test row");
}
