/* Integration tests of the multi-tenant counters (SPEC §2.3) against the real server:
   success and every error code of each route and alias, admin auth (401/403/ADMIN_DISABLED),
   idempotent replay and key reuse, 16 connections × 400 increments exact, rate-limit refusal
   with its draft-10 fields, LRU eviction under many client addresses (127.0.0.x sources), CORS
   preflight allowed and denied, and admin routes without CORS fields. */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "harness.h"
#include "load.h"

TestSuite(tenants, .timeout = 60);

#define KEY "s3cret-admin-key"
#define ADM "X-API-Key: " KEY "\r\n"

static const char *const env_key[] = {"RINGCOUNT_ADMIN_KEY=" KEY, NULL};

static void field(const struct it_resp *r, const char *key, char *out, size_t cap)
{
    cr_assert_geq(it_json_num(r->body, key, out, cap), 0, "no %s in %s", key, r->body);
}

static void mk_tenant(struct it_conn *c, const char *label, char tid[64])
{
    char body[300];
    snprintf(body, sizeof(body), "{\"label\":\"%s\"}", label);
    struct it_resp r;
    cr_assert_eq(it_rq(c, "POST", "/tenants", ADM, body, &r), 201, "%s", r.body);
    field(&r, "tenant_id", tid, 64);
}

static void mk_counter(struct it_conn *c, const char *tid, const char *body, char cid[64])
{
    char path[256];
    snprintf(path, sizeof(path), "/tenants/%s/counters", tid);
    struct it_resp r;
    cr_assert_eq(it_rq(c, "POST", path, ADM, body, &r), 201, "%s", r.body);
    field(&r, "counter_id", cid, 64);
}

static int64_t value_of(const struct it_resp *r)
{
    char v[32];
    field(r, "value", v, sizeof(v));
    return strtoll(v, NULL, 10);
}

#define NOID "00000000-0000-4000-8000-000000000000"

Test(tenants, routes_and_errors)
{
    const char *args[] = {"--rate-limit", "0", NULL};
    struct it_server *srv = it_start(args, env_key);
    struct it_conn c;
    cr_assert_eq(it_conn_open(&c, it_port(srv)), 0);
    struct it_resp r;
    char p[512], tid[64], tid2[64], cid[64], cid2[64];

    /* POST /tenants */
    IT_EXPECT(&c, "POST", "/tenants", NULL, "{\"label\":\"acme\"}", 401, "UNAUTHORIZED");
    IT_EXPECT(&c, "POST", "/tenants", "X-API-Key: wrong\r\n", "{\"label\":\"acme\"}", 403, "FORBIDDEN");
    cr_assert_eq(it_rq(&c, "POST", "/tenants", "Authorization: Bearer " KEY "\r\n",
                    "{\"label\":\"acme\"}", &r), 201, "%s", r.body);
    field(&r, "tenant_id", tid, sizeof(tid));
    cr_assert_eq(strlen(tid), 36);
    cr_assert_eq(tid[14], '4', "UUID version 4");
    char v[300];
    field(&r, "label", v, sizeof(v));
    cr_assert_str_eq(v, "acme");
    field(&r, "created_at", v, sizeof(v));
    cr_assert_eq(strlen(v), 24);
    cr_assert_eq(v[23], 'Z');
    IT_EXPECT(&c, "POST", "/tenants", ADM, "{\"label\":\"acme\"}", 409, "DUPLICATE_LABEL");
    IT_EXPECT(&c, "POST", "/tenants", ADM, "{\"label\":\"a/b\"}", 400, "INVALID_LABEL");
    IT_EXPECT(&c, "POST", "/tenants", ADM, "{\"label\":\"\"}", 400, "INVALID_LABEL");
    IT_EXPECT(&c, "POST", "/tenants", ADM, "{}", 400, "INVALID_LABEL");
    IT_EXPECT(&c, "POST", "/tenants", ADM, "{\"label\":", 400, "INVALID_JSON");
    IT_EXPECT(&c, "DELETE", "/tenants", ADM, NULL, 405, "METHOD_NOT_ALLOWED");
    mk_tenant(&c, "beta", tid2);

    /* GET /tenants/{tid} (public) */
    snprintf(p, sizeof(p), "/tenants/%s", tid);
    cr_assert_eq(it_rq(&c, "GET", p, NULL, NULL, &r), 200);
    field(&r, "tenant_id", v, sizeof(v));
    cr_assert_str_eq(v, tid);
    IT_EXPECT(&c, "GET", "/tenants/not-a-uuid", NULL, NULL, 400, "INVALID_ID");
    IT_EXPECT(&c, "GET", "/tenants/" NOID, NULL, NULL, 404, "NOT_FOUND");

    /* POST /tenants/{tid}/counters and the alias POST /tenants/{tid} */
    snprintf(p, sizeof(p), "/tenants/%s/counters", tid);
    IT_EXPECT(&c, "POST", p, NULL, "{}", 401, "UNAUTHORIZED");
    cr_assert_eq(it_rq(&c, "POST", p, ADM, "{\"label\":\"hits\",\"initial_value\":7}", &r), 201);
    field(&r, "counter_id", cid, sizeof(cid));
    cr_assert_eq(value_of(&r), 7);
    field(&r, "max_delta", v, sizeof(v));
    cr_assert_str_eq(v, "50");
    field(&r, "tenant_id", v, sizeof(v));
    cr_assert_str_eq(v, tid);
    IT_EXPECT(&c, "POST", p, ADM, "{\"label\":\"no:colon\"}", 400, "INVALID_LABEL");
    IT_EXPECT(&c, "POST", p, ADM, "{\"initial_value\":1.5}", 400, "INVALID_VALUE");
    IT_EXPECT(&c, "POST", p, ADM, "{\"initial_value\":99999999999999999999}", 400, "INVALID_VALUE");
    IT_EXPECT(&c, "POST", p, ADM, "{\"max_delta\":0}", 400, "INVALID_MAX_DELTA");
    IT_EXPECT(&c, "POST", p, ADM, "{\"max_delta\":\"5\"}", 400, "INVALID_MAX_DELTA");
    IT_EXPECT(&c, "POST", p, ADM, "[1]", 400, "INVALID_JSON");
    IT_EXPECT(&c, "POST", "/tenants/" NOID "/counters", ADM, "{}", 404, "NOT_FOUND");
    IT_EXPECT(&c, "POST", "/tenants/xyz/counters", ADM, "{}", 400, "INVALID_ID");
    snprintf(p, sizeof(p), "/tenants/%s", tid);
    cr_assert_eq(it_rq(&c, "POST", p, ADM, "{\"max_delta\":3}", &r), 201, "alias: %s", r.body);
    field(&r, "counter_id", cid2, sizeof(cid2));
    field(&r, "label", v, sizeof(v));
    cr_assert_str_eq(v, "null");
    cr_assert_eq(value_of(&r), 0);
    IT_EXPECT(&c, "POST", p, NULL, "{}", 401, "UNAUTHORIZED");

    /* GET counter (public) and its alias */
    snprintf(p, sizeof(p), "/tenants/%s/counters/%s", tid, cid);
    cr_assert_eq(it_rq(&c, "GET", p, NULL, NULL, &r), 200);
    cr_assert_eq(value_of(&r), 7);
    snprintf(p, sizeof(p), "/tenants/%s/%s", tid, cid);
    cr_assert_eq(it_rq(&c, "GET", p, NULL, NULL, &r), 200, "alias");
    field(&r, "counter_id", v, sizeof(v));
    cr_assert_str_eq(v, cid);
    snprintf(p, sizeof(p), "/tenants/%s/counters/%s", tid2, cid);
    IT_EXPECT(&c, "GET", p, NULL, NULL, 404, "NOT_FOUND"); /* another tenant's counter */
    snprintf(p, sizeof(p), "/tenants/%s/counters/" NOID, tid);
    IT_EXPECT(&c, "GET", p, NULL, NULL, 404, "NOT_FOUND");
    snprintf(p, sizeof(p), "/tenants/%s/counters/1234", tid);
    IT_EXPECT(&c, "GET", p, NULL, NULL, 400, "INVALID_ID");

    /* POST inc (public) and its alias */
    snprintf(p, sizeof(p), "/tenants/%s/counters/%s/inc", tid, cid);
    cr_assert_eq(it_rq(&c, "POST", p, NULL, NULL, &r), 200, "%s", r.body);
    cr_assert_eq(value_of(&r), 8);
    field(&r, "counter_id", v, sizeof(v));
    cr_assert_str_eq(v, cid);
    snprintf(p, sizeof(p), "/tenants/%s/counters/%s/inc?delta=50", tid, cid);
    cr_assert_eq(it_rq(&c, "POST", p, NULL, NULL, &r), 200);
    cr_assert_eq(value_of(&r), 58);
    snprintf(p, sizeof(p), "/tenants/%s/%s/inc?delta=2", tid, cid);
    cr_assert_eq(it_rq(&c, "POST", p, NULL, NULL, &r), 200, "alias");
    cr_assert_eq(value_of(&r), 60);
    static const char *bad_delta[] = {"0", "51", "-1", "1.5", "x", ""};
    for (size_t i = 0; i < sizeof(bad_delta) / sizeof(bad_delta[0]); i++) {
        snprintf(p, sizeof(p), "/tenants/%s/counters/%s/inc?delta=%s", tid, cid, bad_delta[i]);
        IT_EXPECT(&c, "POST", p, NULL, NULL, 400, "INVALID_DELTA");
    }
    snprintf(p, sizeof(p), "/tenants/%s/counters/%s/inc?delta=4", tid, cid2); /* max_delta 3 */
    IT_EXPECT(&c, "POST", p, NULL, NULL, 400, "INVALID_DELTA");
    snprintf(p, sizeof(p), "/tenants/%s/counters/" NOID "/inc", tid);
    IT_EXPECT(&c, "POST", p, NULL, NULL, 404, "NOT_FOUND");
    snprintf(p, sizeof(p), "/tenants/%s/counters/zz/inc", tid);
    IT_EXPECT(&c, "POST", p, NULL, NULL, 400, "INVALID_ID");
    snprintf(p, sizeof(p), "/tenants/%s/counters/%s/inc?sync=1", tid, cid);
    IT_EXPECT(&c, "POST", p, NULL, NULL, 503, "PERSISTENCE_UNAVAILABLE");
    snprintf(p, sizeof(p), "/tenants/%s/counters/%s/inc", tid, cid);
    IT_EXPECT(&c, "GET", p, NULL, NULL, 405, "METHOD_NOT_ALLOWED");
    snprintf(p, sizeof(p), "/tenants/%s/counters/%s", tid, cid);
    cr_assert_eq(it_rq(&c, "GET", p, NULL, NULL, &r), 200);
    cr_assert_eq(value_of(&r), 60, "refused increments did not count");

    /* POST set (admin), overflow refused */
    snprintf(p, sizeof(p), "/tenants/%s/counters/%s/set", tid, cid);
    IT_EXPECT(&c, "POST", p, NULL, "{\"value\":1}", 401, "UNAUTHORIZED");
    IT_EXPECT(&c, "POST", p, "X-API-Key: nope\r\n", "{\"value\":1}", 403, "FORBIDDEN");
    IT_EXPECT(&c, "POST", p, ADM, "{\"value\":\"1\"}", 400, "INVALID_VALUE");
    IT_EXPECT(&c, "POST", p, ADM, "{}", 400, "INVALID_VALUE");
    IT_EXPECT(&c, "POST", p, ADM, "{\"value\"", 400, "INVALID_JSON");
    cr_assert_eq(it_rq(&c, "POST", p, ADM, "{\"value\":9223372036854775806}", &r), 200, "%s", r.body);
    cr_assert_eq(value_of(&r), INT64_MAX - 1);
    snprintf(p, sizeof(p), "/tenants/%s/counters/%s/inc?delta=2", tid, cid);
    IT_EXPECT(&c, "POST", p, NULL, NULL, 409, "COUNTER_OVERFLOW");
    snprintf(p, sizeof(p), "/tenants/%s/counters/%s/inc", tid, cid);
    cr_assert_eq(it_rq(&c, "POST", p, NULL, NULL, &r), 200);
    cr_assert_eq(value_of(&r), INT64_MAX);
    snprintf(p, sizeof(p), "/tenants/%s/counters/" NOID "/set", tid);
    IT_EXPECT(&c, "POST", p, ADM, "{\"value\":1}", 404, "NOT_FOUND");

    it_conn_close(&c);
    it_free(srv);
}

/* Occurrences of needle in s. */
static int count_of(const char *s, const char *needle)
{
    int n = 0;
    for (const char *p = s; (p = strstr(p, needle)); p += strlen(needle))
        n++;
    return n;
}

/* GET base?limit=2[&cursor=...] page by page: each page starts with head and holds exactly the
   next ids (n of them in all, in creation order, counted by their key idkey), its next_cursor
   is its last id, and null on the last page. */
static void expect_pages(struct it_conn *c, const char *base, const char *head, const char *idkey,
                         char ids[][64], int n)
{
    char p[512], cursor[64] = "";
    struct it_resp r;
    int seen = 0, pages = (n + 1) / 2;
    for (int page = 0; page < pages; page++) {
        snprintf(p, sizeof(p), "%s?limit=2%s%s", base, *cursor ? "&cursor=" : "", cursor);
        cr_assert_eq(it_rq(c, "GET", p, ADM, NULL, &r), 200, "%s", r.body);
        cr_assert_eq(strncmp(r.body, head, strlen(head)), 0, "%s", r.body);
        int k = count_of(r.body, idkey);
        cr_assert_eq(k, page < pages - 1 ? 2 : n - 2 * page, "page %d: %s", page, r.body);
        for (int i = 0; i < k; i++, seen++) {
            char *at = strstr(r.body, ids[seen]);
            cr_assert_not_null(at, "page %d lacks %s: %s", page, ids[seen], r.body);
            cr_assert(i == 0 || at > strstr(r.body, ids[seen - 1]), "creation order");
        }
        char nc[64];
        field(&r, "next_cursor", nc, sizeof(nc));
        if (page < pages - 1) {
            cr_assert_str_eq(nc, ids[seen - 1]);
            strcpy(cursor, nc);
        } else {
            cr_assert_str_eq(nc, "null");
        }
    }
    cr_assert_eq(seen, n);
}

Test(tenants, listing_pagination)
{
    const char *args[] = {"--rate-limit", "0", NULL};
    struct it_server *srv = it_start(args, env_key);
    struct it_conn c;
    cr_assert_eq(it_conn_open(&c, it_port(srv)), 0);
    char tid[64], other[64], ids[5][64], oc[64], p[512];
    mk_tenant(&c, "lister", tid);
    mk_tenant(&c, "other", other);
    for (int i = 0; i < 5; i++) {
        mk_counter(&c, tid, "{}", ids[i]);
        mk_counter(&c, other, "{}", oc);
    }
    struct it_resp r;
    snprintf(p, sizeof(p), "/tenants/%s/counters", tid);
    expect_pages(&c, p, "{\"counters\":[", "\"counter_id\"", ids, 5); /* not another's */
    cr_assert_eq(it_rq(&c, "GET", p, ADM, NULL, &r), 200);
    for (int i = 0; i < 5; i++)
        cr_assert_not_null(strstr(r.body, ids[i]));
    IT_EXPECT(&c, "GET", p, NULL, NULL, 401, "UNAUTHORIZED");
    static const char *bad_limit[] = {"0", "101", "-1", "abc"};
    for (size_t i = 0; i < 4; i++) {
        snprintf(p, sizeof(p), "/tenants/%s/counters?limit=%s", tid, bad_limit[i]);
        IT_EXPECT(&c, "GET", p, ADM, NULL, 400, "INVALID_LIMIT");
    }
    snprintf(p, sizeof(p), "/tenants/%s/counters?cursor=%s", tid, oc);
    IT_EXPECT(&c, "GET", p, ADM, NULL, 400, "INVALID_CURSOR");
    snprintf(p, sizeof(p), "/tenants/%s/counters?cursor=garbage", tid);
    IT_EXPECT(&c, "GET", p, ADM, NULL, 400, "INVALID_CURSOR");
    IT_EXPECT(&c, "GET", "/tenants/" NOID "/counters", ADM, NULL, 404, "NOT_FOUND");
    it_conn_close(&c);
    it_free(srv);
}

Test(tenants, admin_disabled_without_key)
{
    struct it_server *srv = it_start(NULL, NULL);
    struct it_conn c;
    cr_assert_eq(it_conn_open(&c, it_port(srv)), 0);
    IT_EXPECT(&c, "POST", "/tenants", ADM, "{\"label\":\"x\"}", 403, "ADMIN_DISABLED");
    IT_EXPECT(&c, "GET", "/tenants/" NOID "/counters", NULL, NULL, 403, "ADMIN_DISABLED");
    IT_EXPECT(&c, "GET", "/tenants/" NOID, NULL, NULL, 404, "NOT_FOUND"); /* public */
    it_conn_close(&c);
    it_free(srv);
}

Test(tenants, idempotent_replay)
{
    const char *args[] = {"--rate-limit", "0", NULL};
    struct it_server *srv = it_start(args, env_key);
    struct it_conn c;
    cr_assert_eq(it_conn_open(&c, it_port(srv)), 0);
    char tid[64], cid[64], cid2[64], p[512];
    mk_tenant(&c, "idem", tid);
    mk_counter(&c, tid, "{}", cid);
    mk_counter(&c, tid, "{}", cid2);
    struct it_resp r;
    snprintf(p, sizeof(p), "/tenants/%s/counters/%s/inc?delta=3", tid, cid);
    cr_assert_eq(it_rq(&c, "POST", p, "Idempotency-Key: order-17\r\n", NULL, &r), 200);
    cr_assert_eq(value_of(&r), 3);
    cr_assert_eq(it_rq(&c, "POST", p, NULL, NULL, &r), 200); /* an unkeyed one: 6 */
    /* replay from another connection: the first result, not counted again */
    struct it_conn c2;
    cr_assert_eq(it_conn_open(&c2, it_port(srv)), 0);
    cr_assert_eq(it_rq(&c2, "POST", p, "Idempotency-Key: order-17\r\n", NULL, &r), 200);
    cr_assert_eq(value_of(&r), 3);
    snprintf(p, sizeof(p), "/tenants/%s/%s/inc?delta=3", tid, cid); /* the alias: same request */
    cr_assert_eq(it_rq(&c2, "POST", p, "Idempotency-Key: order-17\r\n", NULL, &r), 200);
    cr_assert_eq(value_of(&r), 3);
    snprintf(p, sizeof(p), "/tenants/%s/counters/%s", tid, cid);
    cr_assert_eq(it_rq(&c, "GET", p, NULL, NULL, &r), 200);
    cr_assert_eq(value_of(&r), 6);
    /* same key, different request */
    snprintf(p, sizeof(p), "/tenants/%s/counters/%s/inc?delta=4", tid, cid);
    IT_EXPECT(&c, "POST", p, "Idempotency-Key: order-17\r\n", NULL, 409, "IDEMPOTENCY_KEY_REUSED");
    snprintf(p, sizeof(p), "/tenants/%s/counters/%s/inc?delta=3", tid, cid2);
    IT_EXPECT(&c, "POST", p, "Idempotency-Key: order-17\r\n", NULL, 409, "IDEMPOTENCY_KEY_REUSED");
    char longkey[100];
    memset(longkey, 'k', 65);
    snprintf(longkey + 65, sizeof(longkey) - 65, "\r\n");
    char h[200];
    snprintf(h, sizeof(h), "Idempotency-Key: %s", longkey);
    IT_EXPECT(&c, "POST", p, h, NULL, 400, "INVALID_IDEMPOTENCY_KEY");
    IT_EXPECT(&c, "POST", p, "Idempotency-Key: \x01\r\n", NULL, 400, NULL); /* CTL: parser 400 */
    snprintf(p, sizeof(p), "/tenants/%s/counters/%s", tid, cid);
    cr_assert_eq(it_rq(&c2, "GET", p, NULL, NULL, &r), 200);
    cr_assert_eq(value_of(&r), 6, "refused requests did not count");
    it_conn_close(&c);
    it_conn_close(&c2);
    it_free(srv);
}

/* 16 connections × 400 increments, each on its own thread: exactly 6,400. */
struct incr_arg {
    uint16_t port;
    const char *path;
    int ok;
};

static void *incr_thread(void *p)
{
    struct incr_arg *a = p;
    struct it_conn *c = malloc(sizeof(*c));
    struct it_resp *r = malloc(sizeof(*r));
    char raw[512];
    snprintf(raw, sizeof(raw), "POST %s HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n", a->path);
    if (c && r && it_conn_open(c, a->port) == 0) {
        for (int i = 0; i < 400; i++)
            if (it_request(c, raw, r) == 0 && r->status == 200)
                a->ok++;
        it_conn_close(c);
    }
    free(c);
    free(r);
    return NULL;
}

Test(tenants, sixteen_connections_exact)
{
    const char *args[] = {"--rate-limit", "0", NULL};
    struct it_server *srv = it_start(args, env_key);
    struct it_conn c;
    cr_assert_eq(it_conn_open(&c, it_port(srv)), 0);
    char tid[64], cid[64], p[512];
    mk_tenant(&c, "load", tid);
    mk_counter(&c, tid, "{}", cid);
    snprintf(p, sizeof(p), "/tenants/%s/counters/%s/inc", tid, cid);
    pthread_t th[16];
    struct incr_arg a[16];
    for (int i = 0; i < 16; i++) {
        a[i] = (struct incr_arg){.port = it_port(srv), .path = p};
        cr_assert_eq(pthread_create(&th[i], NULL, incr_thread, &a[i]), 0);
    }
    int ok = 0;
    for (int i = 0; i < 16; i++) {
        pthread_join(th[i], NULL);
        ok += a[i].ok;
    }
    cr_assert_eq(ok, 6400);
    struct it_resp r;
    snprintf(p, sizeof(p), "/tenants/%s/counters/%s", tid, cid);
    cr_assert_eq(it_rq(&c, "GET", p, NULL, NULL, &r), 200);
    cr_assert_eq(value_of(&r), 6400);
    it_conn_close(&c);
    it_free(srv);
}

Test(tenants, rate_limit_refusal_and_fields)
{
    const char *args[] = {"--rate-limit", "1/5", "--workers", "1", NULL};
    struct it_server *srv = it_start(args, env_key);
    struct it_conn c;
    cr_assert_eq(it_conn_open(&c, it_port(srv)), 0);
    char tid[64], cid[64], p[512], h[128];
    mk_tenant(&c, "limited", tid);
    mk_counter(&c, tid, "{}", cid);
    struct it_resp r;
    /* admin answers carry no rate-limit field */
    snprintf(p, sizeof(p), "/tenants/%s/counters", tid);
    cr_assert_eq(it_rq(&c, "GET", p, ADM, NULL, &r), 200);
    cr_assert_eq(it_header(&r, "RateLimit-Policy", h, sizeof(h)), -ENOENT);
    snprintf(p, sizeof(p), "/tenants/%s/counters/%s/inc", tid, cid);
    for (int i = 0; i < 5; i++) {
        cr_assert_eq(it_rq(&c, "POST", p, NULL, NULL, &r), 200, "request %d", i);
        cr_assert_gt(it_header(&r, "RateLimit-Policy", h, sizeof(h)), 0);
        cr_assert_str_eq(h, "\"default\";q=5;w=5");
        cr_assert_gt(it_header(&r, "RateLimit", h, sizeof(h)), 0);
        char want[64];
        snprintf(want, sizeof(want), "\"default\";r=%d;t=", 4 - i);
        cr_assert_eq(strncmp(h, want, strlen(want)), 0, "%s vs %s", h, want);
    }
    cr_assert_eq(it_rq(&c, "POST", p, NULL, NULL, &r), 429);
    cr_assert_str_eq(it_err_code(&r), "RATE_LIMITED");
    cr_assert_gt(it_header(&r, "Retry-After", h, sizeof(h)), 0);
    cr_assert_str_eq(h, "1");
    cr_assert_gt(it_header(&r, "RateLimit", h, sizeof(h)), 0);
    cr_assert_eq(strncmp(h, "\"default\";r=0;t=", 16), 0, "%s", h);
    /* a preflight is never refused and spends nothing, but carries the fields */
    cr_assert_eq(it_rq(&c, "OPTIONS", p, NULL, NULL, &r), 204);
    cr_assert_gt(it_header(&r, "RateLimit", h, sizeof(h)), 0);
    cr_assert_eq(strncmp(h, "\"default\";r=0;t=", 16), 0, "%s", h);
    cr_assert_eq(it_header(&r, "Retry-After", h, sizeof(h)), -ENOENT);
    /* GET of a counter is public too: refused as well */
    snprintf(p, sizeof(p), "/tenants/%s/counters/%s", tid, cid);
    IT_EXPECT(&c, "GET", p, NULL, NULL, 429, "RATE_LIMITED");
    /* exempt routes */
    static const char *exempt[] = {"/health", "/livez", "/readyz", "/metrics", "/stats"};
    for (size_t i = 0; i < 5; i++) {
        cr_assert_eq(it_rq(&c, "GET", exempt[i], NULL, NULL, &r), 200, "%s", exempt[i]);
        cr_assert_eq(it_header(&r, "RateLimit", h, sizeof(h)), -ENOENT, "%s", exempt[i]);
    }
    /* admin routes are not limited */
    cr_assert_eq(it_rq(&c, "POST", "/tenants", ADM, "{\"label\":\"another\"}", &r), 201);
    /* a second later one token is back */
    usleep(1100 * 1000);
    snprintf(p, sizeof(p), "/tenants/%s/counters/%s/inc", tid, cid);
    cr_assert_eq(it_rq(&c, "POST", p, NULL, NULL, &r), 200);
    cr_assert_eq(value_of(&r), 6);
    it_conn_close(&c);
    it_free(srv);
}

/* Connect from source address 127.0.0.<host>. */
static int conn_from(struct it_conn *c, uint16_t port, int host)
{
    return it_conn_open_from(c, 0x7f000000u | (uint32_t)host, port);
}

static int inc_from(uint16_t port, int host, const char *path)
{
    struct it_conn *c = malloc(sizeof(*c));
    struct it_resp *r = malloc(sizeof(*r));
    cr_assert(c && r);
    cr_assert_eq(conn_from(c, port, host), 0, "connect from 127.0.0.%d", host);
    int st = it_rq(c, "POST", path, NULL, NULL, r);
    it_conn_close(c);
    free(c);
    free(r);
    return st;
}

Test(tenants, lru_eviction_many_addresses)
{
    /* one worker, a 16-entry table (test hook), one token per client and second */
    const char *args[] = {"--rate-limit", "1/1", "--workers", "1", NULL};
    const char *env[] = {"RINGCOUNT_ADMIN_KEY=" KEY, "RINGCOUNT_DEBUG_RL_CAPACITY=16", NULL};
    struct it_server *srv = it_start(args, env);
    uint16_t port = it_port(srv);
    struct it_conn c;
    cr_assert_eq(it_conn_open(&c, port), 0);
    char tid[64], cid[64], p[512];
    mk_tenant(&c, "lru", tid);
    mk_counter(&c, tid, "{}", cid);
    it_conn_close(&c);
    snprintf(p, sizeof(p), "/tenants/%s/counters/%s/inc", tid, cid);
    cr_assert_eq(inc_from(port, 2, p), 200);
    cr_assert_eq(inc_from(port, 2, p), 429, "127.0.0.2 has used its token");
    /* the table's LRU is as fine as its clock (src/ratelimit.h), CLOCK_MONOTONIC_COARSE in
       src/app.c: 4 ms ticks here, and ties go by slot order. 10 ms make 127.0.0.2 the one
       oldest entry (without them, the 40 connections within few ticks of a fast machine left
       it in the table in 12 runs of 100; with 2 ms, in 1 of 200) */
    usleep(10 * 1000);
    cr_assert_eq(inc_from(port, 3, p), 200, "addresses are separate buckets");
    /* 40 new clients: none is locked out although the table holds 16 */
    for (int h = 10; h < 50; h++)
        cr_assert_eq(inc_from(port, h, p), 200, "new client 127.0.0.%d refused", h);
    /* the most recent client is remembered (still empty) ... */
    cr_assert_eq(inc_from(port, 49, p), 429);
    /* ... 127.0.0.2 was the least recently used: evicted, it starts again with a full bucket */
    int st = inc_from(port, 2, p);
    cr_assert_eq(st, 200, "127.0.0.2 was not evicted: %d", st);
    it_free(srv);
}

static void get_with_origin(struct it_conn *c, const char *meth, const char *path,
                            const char *extra, struct it_resp *r)
{
    char h[512];
    snprintf(h, sizeof(h), "%s%s", extra ? extra : "", "");
    it_rq(c, meth, path, h, NULL, r);
}

Test(tenants, cors)
{
    const char *args[] = {"--rate-limit", "0", "--cors-origins",
                          "https://app.example,https://b.example", NULL};
    struct it_server *srv = it_start(args, env_key);
    struct it_conn c;
    cr_assert_eq(it_conn_open(&c, it_port(srv)), 0);
    char tid[64], cid[64], p[512], h[256];
    mk_tenant(&c, "cors", tid);
    mk_counter(&c, tid, "{}", cid);
    struct it_resp r;

    /* preflight of the public increment from an allowed origin */
    snprintf(p, sizeof(p), "/tenants/%s/counters/%s/inc", tid, cid);
    get_with_origin(&c, "OPTIONS", p,
                    "Origin: https://app.example\r\nAccess-Control-Request-Method: POST\r\n"
                    "Access-Control-Request-Headers: idempotency-key\r\n", &r);
    cr_assert_eq(r.status, 204);
    cr_assert_gt(it_header(&r, "Access-Control-Allow-Origin", h, sizeof(h)), 0);
    cr_assert_str_eq(h, "https://app.example");
    cr_assert_gt(it_header(&r, "Vary", h, sizeof(h)), 0);
    cr_assert_str_eq(h, "Origin");
    cr_assert_gt(it_header(&r, "Access-Control-Allow-Methods", h, sizeof(h)), 0);
    cr_assert_not_null(strstr(h, "POST"));
    cr_assert_gt(it_header(&r, "Access-Control-Allow-Headers", h, sizeof(h)), 0);
    cr_assert_not_null(strstr(h, "Idempotency-Key"));
    cr_assert_gt(it_header(&r, "Access-Control-Max-Age", h, sizeof(h)), 0);
    /* denied origin: a plain 204, no CORS field */
    get_with_origin(&c, "OPTIONS", p,
                    "Origin: https://evil.example\r\nAccess-Control-Request-Method: POST\r\n", &r);
    cr_assert_eq(r.status, 204);
    cr_assert_eq(it_header(&r, "Access-Control-Allow-Origin", h, sizeof(h)), -ENOENT);
    /* actual answers */
    get_with_origin(&c, "POST", p, "Origin: https://b.example\r\n", &r);
    cr_assert_eq(r.status, 200);
    cr_assert_gt(it_header(&r, "Access-Control-Allow-Origin", h, sizeof(h)), 0);
    cr_assert_str_eq(h, "https://b.example");
    get_with_origin(&c, "POST", p, "Origin: https://evil.example\r\n", &r);
    cr_assert_eq(r.status, 200);
    cr_assert_eq(it_header(&r, "Access-Control-Allow-Origin", h, sizeof(h)), -ENOENT);
    snprintf(p, sizeof(p), "/tenants/%s", tid);
    get_with_origin(&c, "GET", p, "Origin: https://app.example\r\n", &r);
    cr_assert_eq(r.status, 200);
    cr_assert_gt(it_header(&r, "Access-Control-Allow-Origin", h, sizeof(h)), 0);
    /* admin routes never: preflight or actual, even from an allowed origin */
    get_with_origin(&c, "OPTIONS", "/tenants",
                    "Origin: https://app.example\r\nAccess-Control-Request-Method: POST\r\n", &r);
    cr_assert_eq(r.status, 204);
    cr_assert_eq(it_header(&r, "Access-Control-Allow-Origin", h, sizeof(h)), -ENOENT);
    snprintf(p, sizeof(p), "/tenants/%s", tid); /* POST here is the admin alias */
    get_with_origin(&c, "OPTIONS", p,
                    "Origin: https://app.example\r\nAccess-Control-Request-Method: POST\r\n", &r);
    cr_assert_eq(it_header(&r, "Access-Control-Allow-Origin", h, sizeof(h)), -ENOENT);
    it_rq(&c, "POST", "/tenants", "Origin: https://app.example\r\n" ADM, "{\"label\":\"c2\"}", &r);
    cr_assert_eq(r.status, 201);
    cr_assert_eq(it_header(&r, "Access-Control-Allow-Origin", h, sizeof(h)), -ENOENT);
    snprintf(p, sizeof(p), "/tenants/%s/counters", tid);
    it_rq(&c, "GET", p, "Origin: https://app.example\r\n" ADM, NULL, &r);
    cr_assert_eq(r.status, 200);
    cr_assert_eq(it_header(&r, "Access-Control-Allow-Origin", h, sizeof(h)), -ENOENT);
    it_conn_close(&c);
    it_free(srv);
}

/* --trusted-proxies (SPEC §2.3 rate limits per client): behind a trusted proxy each forwarded
   client has its own bucket; from an untrusted peer the header is ignored (one bucket). */
static int inc_as(uint16_t port, const char *path, const char *xff)
{
    struct it_conn *c = it_conn_new(port);
    struct it_resp *r = malloc(sizeof(*r));
    char h[96];
    snprintf(h, sizeof(h), "X-Forwarded-For: %s\r\n", xff);
    int rc = it_load_call(c, "POST", path, h, NULL, r, 5000);
    int st = rc == 0 ? r->status : -1;
    free(r);
    it_conn_free(c);
    return st;
}

Test(tenants, trusted_proxies_give_each_client_a_bucket)
{
    const char *const env[] = {"RINGCOUNT_ADMIN_KEY=proxy-test-key", NULL};
    for (int trusted = 0; trusted < 2; trusted++) {
        const char *args[] = {"--workers", "1", "--rate-limit", "1/3",
                              trusted ? "--trusted-proxies" : NULL, "127.0.0.0/8", NULL};
        struct it_server *srv = it_start(args, env);
        char tid[64], cid[64], err[256], path[200];
        cr_assert_eq(it_load_make_tenant(it_port(srv), "proxy-test-key", "p", tid, cid, err,
                                         sizeof(err)), 0, "%s", err);
        snprintf(path, sizeof(path), "/tenants/%s/counters/%s/inc", tid, cid);
        for (int k = 0; k < 3; k++) /* client A spends its burst of 3 */
            cr_assert_eq(inc_as(it_port(srv), path, "198.51.100.1"), 200);
        cr_assert_eq(inc_as(it_port(srv), path, "198.51.100.1"), 429, "A is over its burst");
        /* client B (another forwarded address): its own bucket only behind a trusted proxy;
           a spoofed left part of the list does not make A a new client */
        cr_assert_eq(inc_as(it_port(srv), path, "198.51.100.2"), trusted ? 200 : 429,
                     "trusted=%d", trusted);
        cr_assert_eq(inc_as(it_port(srv), path, "203.0.113.66, 198.51.100.1"), 429,
                     "trusted=%d: the rightmost untrusted address is the client", trusted);
        cr_assert_eq(it_stop(srv), 0);
        it_free(srv);
    }
}

/* --counter-cache / --tenant-cache bound the store; the refusal names the configured number. */
Test(tenants, cache_flags_bound_the_store)
{
    const char *args[] = {"--rate-limit", "0", "--counter-cache", "3", "--tenant-cache", "2",
                          NULL};
    struct it_server *srv = it_start(args, env_key);
    struct it_conn c;
    cr_assert_eq(it_conn_open(&c, it_port(srv)), 0);
    char tid[64], tid2[64], cid[64], p[256];
    mk_tenant(&c, "one", tid);
    mk_tenant(&c, "two", tid2);
    struct it_resp r;
    cr_assert_eq(it_rq(&c, "POST", "/tenants", ADM, "{\"label\":\"three\"}", &r), 409, "%s", r.body);
    cr_assert_str_eq(it_err_code(&r), "TOO_MANY_TENANTS");
    cr_assert_not_null(strstr(r.body, "(2, --tenant-cache)"), "%s", r.body);
    for (int i = 0; i < 3; i++)
        mk_counter(&c, i == 2 ? tid2 : tid, "{}", cid);
    snprintf(p, sizeof(p), "/tenants/%s/counters", tid2);
    cr_assert_eq(it_rq(&c, "POST", p, ADM, "{}", &r), 409, "%s", r.body);
    cr_assert_str_eq(it_err_code(&r), "TOO_MANY_COUNTERS");
    cr_assert_not_null(strstr(r.body, "(3, --counter-cache)"), "%s", r.body);
    it_conn_close(&c);
    it_free(srv);
}

/* GET /tenants: admin only, 3 pages of 2, 2, 1 in creation order, cursor errors. */
Test(tenants, tenant_listing_pages)
{
    const char *args[] = {"--rate-limit", "0", NULL};
    struct it_server *srv = it_start(args, env_key);
    struct it_conn c;
    cr_assert_eq(it_conn_open(&c, it_port(srv)), 0);
    char ids[5][64];
    for (int i = 0; i < 5; i++) {
        char l[8] = {'t', (char)('0' + i)};
        mk_tenant(&c, l, ids[i]);
    }
    IT_EXPECT(&c, "GET", "/tenants", NULL, NULL, 401, "UNAUTHORIZED");
    IT_EXPECT(&c, "GET", "/tenants", "X-API-Key: nope\r\n", NULL, 403, "FORBIDDEN");
    expect_pages(&c, "/tenants", "{\"tenants\":[", "\"tenant_id\"", ids, 5);
    struct it_resp r;
    cr_assert_eq(it_rq(&c, "GET", "/tenants", ADM, NULL, &r), 200);
    cr_assert_eq(count_of(r.body, "\"tenant_id\""), 5, "default limit 20: %s", r.body);
    IT_EXPECT(&c, "GET", "/tenants?limit=0", ADM, NULL, 400, "INVALID_LIMIT");
    IT_EXPECT(&c, "GET", "/tenants?limit=101", ADM, NULL, 400, "INVALID_LIMIT");
    IT_EXPECT(&c, "GET", "/tenants?cursor=garbage", ADM, NULL, 400, "INVALID_CURSOR");
    IT_EXPECT(&c, "GET", "/tenants?cursor=" NOID, ADM, NULL, 400, "INVALID_CURSOR");
    IT_EXPECT(&c, "PUT", "/tenants", ADM, NULL, 405, "METHOD_NOT_ALLOWED");
    it_conn_close(&c);
    it_free(srv);
}

/* Counter labels are unique per tenant; ?label= finds the one counter (form-decoded). */
Test(tenants, counter_labels_unique_and_found)
{
    const char *args[] = {"--rate-limit", "0", NULL};
    struct it_server *srv = it_start(args, env_key);
    struct it_conn c;
    cr_assert_eq(it_conn_open(&c, it_port(srv)), 0);
    char tid[64], tid2[64], hits[64], pv[64], x[64], p[512];
    mk_tenant(&c, "lab", tid);
    mk_tenant(&c, "lab2", tid2);
    mk_counter(&c, tid, "{\"label\":\"hits\"}", hits);
    mk_counter(&c, tid, "{\"label\":\"page views\"}", pv);
    mk_counter(&c, tid2, "{\"label\":\"hits\"}", x); /* another tenant: fine */
    mk_counter(&c, tid, "{}", x);
    mk_counter(&c, tid, "{}", x); /* unlabelled ones are not constrained */
    snprintf(p, sizeof(p), "/tenants/%s/counters", tid);
    IT_EXPECT(&c, "POST", p, ADM, "{\"label\":\"hits\"}", 409, "DUPLICATE_LABEL");
    snprintf(p, sizeof(p), "/tenants/%s", tid);
    IT_EXPECT(&c, "POST", p, ADM, "{\"label\":\"page views\"}", 409, "DUPLICATE_LABEL"); /* alias */
    struct it_resp r;
    static const char *const forms[] = {"page%20views", "page+views", "%70age%20view%73"};
    for (size_t i = 0; i < 3; i++) {
        snprintf(p, sizeof(p), "/tenants/%s/counters?label=%s", tid, forms[i]);
        cr_assert_eq(it_rq(&c, "GET", p, ADM, NULL, &r), 200, "%s", r.body);
        cr_assert_eq(count_of(r.body, "\"counter_id\""), 1, "%s: %s", forms[i], r.body);
        cr_assert_not_null(strstr(r.body, pv), "%s: %s", forms[i], r.body);
        cr_assert_not_null(strstr(r.body, "\"next_cursor\":null"), "%s", r.body);
    }
    snprintf(p, sizeof(p), "/tenants/%s/counters?label=hits", tid);
    cr_assert_eq(it_rq(&c, "GET", p, ADM, NULL, &r), 200);
    cr_assert_eq(count_of(r.body, "\"counter_id\""), 1, "%s", r.body);
    cr_assert_not_null(strstr(r.body, hits), "this tenant's hits, not the other's: %s", r.body);
    snprintf(p, sizeof(p), "/tenants/%s/counters?label=nope", tid);
    cr_assert_eq(it_rq(&c, "GET", p, ADM, NULL, &r), 200);
    cr_assert_str_eq(r.body, "{\"counters\":[],\"next_cursor\":null}");
    static const char *const bad[] = {"", "a%2Fb", "%zz", "a%2", "a:b"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        snprintf(p, sizeof(p), "/tenants/%s/counters?label=%s", tid, bad[i]);
        IT_EXPECT(&c, "GET", p, ADM, NULL, 400, "INVALID_LABEL");
    }
    snprintf(p, sizeof(p), "/tenants/%s/counters?label=hits", tid);
    IT_EXPECT(&c, "GET", p, NULL, NULL, 401, "UNAUTHORIZED");
    it_conn_close(&c);
    it_free(srv);
}

/* DELETE a counter, then a tenant: 204, then 404 for GET, inc and DELETE; listings skip them;
   labels are free again; admin only. */
Test(tenants, delete_counter_and_tenant)
{
    const char *args[] = {"--rate-limit", "0", NULL};
    struct it_server *srv = it_start(args, env_key);
    struct it_conn c;
    cr_assert_eq(it_conn_open(&c, it_port(srv)), 0);
    char tid[64], keep[64], cid[64], cid2[64], again[64], p[256], q[512];
    mk_tenant(&c, "doomed", tid);
    mk_tenant(&c, "kept", keep);
    mk_counter(&c, tid, "{\"label\":\"hits\"}", cid);
    mk_counter(&c, tid, "{}", cid2);
    struct it_resp r;
    snprintf(p, sizeof(p), "/tenants/%s/counters/%s", tid, cid);
    IT_EXPECT(&c, "DELETE", p, NULL, NULL, 401, "UNAUTHORIZED");
    IT_EXPECT(&c, "DELETE", p, "X-API-Key: nope\r\n", NULL, 403, "FORBIDDEN");
    cr_assert_eq(it_rq(&c, "OPTIONS", p, NULL, NULL, &r), 204);
    char allow[128];
    cr_assert_gt(it_header(&r, "Allow", allow, sizeof(allow)), 0);
    cr_assert_str_eq(allow, "GET, HEAD, DELETE, OPTIONS");
    cr_assert_eq(it_rq(&c, "DELETE", p, ADM, NULL, &r), 204, "%s", r.body);
    cr_assert_eq(r.body_len, 0);
    IT_EXPECT(&c, "GET", p, NULL, NULL, 404, "NOT_FOUND");
    IT_EXPECT(&c, "DELETE", p, ADM, NULL, 404, "NOT_FOUND");
    snprintf(q, sizeof(q), "%s/inc", p);
    IT_EXPECT(&c, "POST", q, NULL, NULL, 404, "NOT_FOUND");
    snprintf(q, sizeof(q), "%s/set", p);
    IT_EXPECT(&c, "POST", q, ADM, "{\"value\":1}", 404, "NOT_FOUND");
    snprintf(q, sizeof(q), "/tenants/%s/counters", tid);
    cr_assert_eq(it_rq(&c, "GET", q, ADM, NULL, &r), 200);
    cr_assert_null(strstr(r.body, cid), "listed after delete: %s", r.body);
    cr_assert_not_null(strstr(r.body, cid2), "%s", r.body);
    snprintf(q, sizeof(q), "/tenants/%s/counters?label=hits", tid);
    cr_assert_eq(it_rq(&c, "GET", q, ADM, NULL, &r), 200);
    cr_assert_null(strstr(r.body, cid), "found by label after delete: %s", r.body);
    mk_counter(&c, tid, "{\"label\":\"hits\"}", again); /* the label is free again */
    cr_assert_str_neq(again, cid);
    IT_EXPECT(&c, "DELETE", "/tenants/" NOID "/counters/" NOID, ADM, NULL, 404, "NOT_FOUND");
    IT_EXPECT(&c, "DELETE", "/tenants/x/counters/y", ADM, NULL, 400, "INVALID_ID");

    /* the tenant, with its counters */
    snprintf(p, sizeof(p), "/tenants/%s", tid);
    IT_EXPECT(&c, "DELETE", p, NULL, NULL, 401, "UNAUTHORIZED");
    cr_assert_eq(it_rq(&c, "DELETE", p, ADM, NULL, &r), 204, "%s", r.body);
    IT_EXPECT(&c, "GET", p, NULL, NULL, 404, "NOT_FOUND");
    IT_EXPECT(&c, "DELETE", p, ADM, NULL, 404, "NOT_FOUND");
    snprintf(q, sizeof(q), "/tenants/%s/counters/%s", tid, again);
    IT_EXPECT(&c, "GET", q, NULL, NULL, 404, "NOT_FOUND");
    snprintf(q, sizeof(q), "/tenants/%s/%s/inc", tid, cid2);
    IT_EXPECT(&c, "POST", q, NULL, NULL, 404, "NOT_FOUND");
    snprintf(q, sizeof(q), "/tenants/%s/counters", tid);
    IT_EXPECT(&c, "GET", q, ADM, NULL, 404, "NOT_FOUND");
    IT_EXPECT(&c, "POST", q, ADM, "{}", 404, "NOT_FOUND");
    cr_assert_eq(it_rq(&c, "GET", "/tenants", ADM, NULL, &r), 200);
    cr_assert_null(strstr(r.body, tid), "listed after delete: %s", r.body);
    cr_assert_not_null(strstr(r.body, keep), "%s", r.body);
    char tid3[64];
    mk_tenant(&c, "doomed", tid3); /* the tenant label is free again */
    cr_assert_str_neq(tid3, tid);
    snprintf(q, sizeof(q), "/tenants/%s", keep);
    cr_assert_eq(it_rq(&c, "GET", q, NULL, NULL, &r), 200, "the other tenant is untouched");
    it_conn_close(&c);
    it_free(srv);
}
