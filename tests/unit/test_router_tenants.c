/* Unit tests for the tenant pattern routes of src/router (SPEC §2.3): every route and alias
   with its {tid}/{cid}, literal segments winning over ids, methods (405 + Allow), 404 for
   malformed shapes, route names. */
#include <criterion/criterion.h>
#include <string.h>

#include "http.h"
#include "router.h"

struct tcase {
    enum http_method meth;
    const char *path;
    int status;
    enum route_id id;
    const char *tid, *cid; /* expected segments, NULL = none */
};

static const struct tcase cases[] = {
    {HTTP_M_POST, "/tenants", 0, ROUTE_TENANTS, NULL, NULL},
    {HTTP_M_GET, "/tenants", 0, ROUTE_TENANTS, NULL, NULL}, /* the tenant listing */
    {HTTP_M_HEAD, "/tenants", 0, ROUTE_TENANTS, NULL, NULL},
    {HTTP_M_DELETE, "/tenants", 405, ROUTE_NONE, NULL, NULL},
    {HTTP_M_PUT, "/tenants", 405, ROUTE_NONE, NULL, NULL},
    {HTTP_M_GET, "/tenants/T1", 0, ROUTE_TENANT, "T1", NULL},
    {HTTP_M_HEAD, "/tenants/T1", 0, ROUTE_TENANT, "T1", NULL},
    {HTTP_M_POST, "/tenants/T1", 0, ROUTE_TENANT, "T1", NULL}, /* create-counter alias */
    {HTTP_M_DELETE, "/tenants/T1", 0, ROUTE_TENANT, "T1", NULL},
    {HTTP_M_PUT, "/tenants/T1", 405, ROUTE_NONE, "T1", NULL},
    {HTTP_M_DELETE, "/tenants/T1/counters", 405, ROUTE_NONE, "T1", NULL},
    {HTTP_M_DELETE, "/tenants/T1/counters/C2", 0, ROUTE_TN_COUNTER, "T1", "C2"},
    {HTTP_M_DELETE, "/tenants/T1/C2", 0, ROUTE_TN_COUNTER, "T1", "C2"}, /* alias */
    {HTTP_M_OPTIONS, "/tenants/T1/counters/C2", 0, ROUTE_TN_COUNTER, "T1", "C2"},
    {HTTP_M_DELETE, "/tenants/T1/counters/C2/inc", 405, ROUTE_NONE, "T1", "C2"},
    {HTTP_M_DELETE, "/tenants/T1/counters/C2/set", 405, ROUTE_NONE, "T1", "C2"},
    {HTTP_M_GET, "/tenants/T1/counters", 0, ROUTE_TN_COUNTERS, "T1", NULL},
    {HTTP_M_POST, "/tenants/T1/counters", 0, ROUTE_TN_COUNTERS, "T1", NULL},
    {HTTP_M_GET, "/tenants/T1/counters/C2", 0, ROUTE_TN_COUNTER, "T1", "C2"},
    {HTTP_M_POST, "/tenants/T1/counters/C2", 405, ROUTE_NONE, "T1", "C2"},
    {HTTP_M_GET, "/tenants/T1/C2", 0, ROUTE_TN_COUNTER, "T1", "C2"}, /* alias */
    {HTTP_M_POST, "/tenants/T1/counters/C2/inc", 0, ROUTE_TN_INC, "T1", "C2"},
    {HTTP_M_POST, "/tenants/T1/C2/inc", 0, ROUTE_TN_INC, "T1", "C2"}, /* alias */
    {HTTP_M_GET, "/tenants/T1/C2/inc", 405, ROUTE_NONE, "T1", "C2"},
    {HTTP_M_POST, "/tenants/T1/counters/C2/set", 0, ROUTE_TN_SET, "T1", "C2"},
    {HTTP_M_OPTIONS, "/tenants/T1/counters/C2/set", 0, ROUTE_TN_SET, "T1", "C2"},
    {HTTP_M_GET, "/tenants/T1/counters/C2/history", 0, ROUTE_TN_HISTORY, "T1", "C2"},
    {HTTP_M_POST, "/tenants/T1/counters/C2/history", 405, ROUTE_NONE, "T1", "C2"},
    {HTTP_M_GET, "/tenants/T1/C2/history", 404, ROUTE_NONE, NULL, NULL}, /* no alias */
    {HTTP_M_GET, "/tenants/T1/counters/inc", 0, ROUTE_TN_COUNTER, "T1", "inc"}, /* literal wins */
    {HTTP_M_GET, "/tenants/T1/keys", 0, ROUTE_TN_KEYS, "T1", NULL}, /* literal wins */
    {HTTP_M_POST, "/tenants/T1/keys", 0, ROUTE_TN_KEYS, "T1", NULL},
    {HTTP_M_DELETE, "/tenants/T1/keys", 405, ROUTE_NONE, "T1", NULL},
    {HTTP_M_DELETE, "/tenants/T1/keys/K3", 0, ROUTE_TN_KEY, "T1", "K3"},
    {HTTP_M_GET, "/tenants/T1/keys/K3", 405, ROUTE_NONE, "T1", "K3"},
    {HTTP_M_POST, "/tenants/T1/keys/K3/inc", 404, ROUTE_NONE, NULL, NULL},
    {HTTP_M_POST, "/tenants/", 404, ROUTE_NONE, NULL, NULL},
    {HTTP_M_GET, "/tenants/T1/", 404, ROUTE_NONE, NULL, NULL},
    {HTTP_M_GET, "/tenants//counters", 404, ROUTE_NONE, NULL, NULL},
    {HTTP_M_POST, "/tenantsX", 404, ROUTE_NONE, NULL, NULL},
    {HTTP_M_POST, "/tenants/T1/C2/set", 404, ROUTE_NONE, NULL, NULL}, /* no alias for set */
    {HTTP_M_POST, "/tenants/T1/counters/C2/dec", 404, ROUTE_NONE, NULL, NULL},
    {HTTP_M_POST, "/tenants/T1/counters/C2/inc/x", 404, ROUTE_NONE, NULL, NULL},
    {HTTP_M_POST, "/tenants/T1/x/C2/inc", 404, ROUTE_NONE, NULL, NULL},
};

static void seg_eq(const char *got, size_t n, const char *want, const char *path)
{
    if (!want) {
        cr_assert_null(got, "%s", path);
        return;
    }
    cr_assert_not_null(got, "%s", path);
    cr_assert_eq(n, strlen(want), "%s", path);
    cr_assert_eq(memcmp(got, want, n), 0, "%s", path);
}

Test(router_tenants, table)
{
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const struct tcase *c = &cases[i];
        struct route_match m;
        int st = route_match(c->meth, c->path, strlen(c->path), &m);
        cr_assert_eq(st, c->status, "%s %s: %d", http_method_name(c->meth), c->path, st);
        cr_assert_eq(m.status, st);
        cr_assert_eq(m.id, c->id, "%s", c->path);
        if (st != 404) {
            cr_assert_not_null(m.allow);
            seg_eq(m.tid, m.tid_len, c->tid, c->path);
            seg_eq(m.cid, m.cid_len, c->cid, c->path);
        }
    }
}

Test(router_tenants, allow_and_names)
{
    struct route_match m;
    route_match(HTTP_M_PUT, "/tenants/a/counters", 19, &m);
    cr_assert_str_eq(m.allow, "GET, HEAD, POST, OPTIONS");
    route_match(HTTP_M_GET, "/tenants/a/counters/b/inc", 25, &m);
    cr_assert_str_eq(m.allow, "POST, OPTIONS");
    route_match(HTTP_M_PUT, "/tenants", 8, &m);
    cr_assert_str_eq(m.allow, "GET, HEAD, POST, OPTIONS");
    route_match(HTTP_M_PUT, "/tenants/a", 10, &m);
    cr_assert_str_eq(m.allow, "GET, HEAD, POST, DELETE, OPTIONS");
    route_match(HTTP_M_PUT, "/tenants/a/counters/b", 21, &m);
    cr_assert_str_eq(m.allow, "GET, HEAD, DELETE, OPTIONS");
    route_match(HTTP_M_PUT, "/tenants/a/b", 12, &m);
    cr_assert_str_eq(m.allow, "GET, HEAD, DELETE, OPTIONS");
    cr_assert_str_eq(route_name(ROUTE_TENANTS), "tenants");
    cr_assert_str_eq(route_name(ROUTE_TN_INC), "tenant_counter_inc");
    cr_assert_str_eq(route_name(ROUTE_TN_SET), "tenant_counter_set");
    cr_assert_str_eq(route_name(ROUTE_TN_HISTORY), "tenant_counter_history");
    cr_assert_str_eq(route_name(ROUTE_TN_KEYS), "tenant_keys");
    cr_assert_str_eq(route_name(ROUTE_TN_KEY), "tenant_key");
    /* the static routes are untouched and carry no segments */
    cr_assert_eq(route_match(HTTP_M_POST, "/event", 6, &m), 0);
    cr_assert_eq(m.id, ROUTE_EVENT);
    cr_assert_null(m.tid);
    cr_assert_null(m.cid);
}
