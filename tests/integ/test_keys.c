/* Integration tests of tenant-scoped keys (SPEC §2.3) against the real server: the key shown
   once in its format and never listed; each admin tenant route allowed with its scope and
   refused without it, on another tenant and on admin-only routes; revoked, expired, unknown
   and wrong-secret keys refused with 401; a tenant delete revoking its keys; every refusal
   counted in ringcount_tenant_key_failures_total. */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"

TestSuite(keys, .timeout = 120);

#define KEY "s3cret-admin-key"
#define ADM "X-API-Key: " KEY "\r\n"

static const char *const env_key[] = {"RINGCOUNT_ADMIN_KEY=" KEY, NULL};

static void field(const struct it_resp *r, const char *key, char *out, size_t cap)
{
    cr_assert_geq(it_json_num(r->body, key, out, cap), 0, "no %s in %s", key, r->body);
}

static void mk_tenant(struct it_conn *c, const char *label, char tid[64])
{
    static struct it_resp r;
    char body[300];
    snprintf(body, sizeof(body), "{\"label\":\"%s\"}", label);
    cr_assert_eq(it_rq(c, "POST", "/tenants", ADM, body, &r), 201, "%s", r.body);
    field(&r, "tenant_id", tid, 64);
}

/* A key of tid made with auth header line hdrs and body: its text into key (128), its id into
   kid (64). */
static void mk_key(struct it_conn *c, const char *tid, const char *hdrs, const char *body,
                   char *key, char *kid)
{
    static struct it_resp r;
    char p[256];
    snprintf(p, sizeof(p), "/tenants/%s/keys", tid);
    cr_assert_eq(it_rq(c, "POST", p, hdrs, body, &r), 201, "%s", r.body);
    field(&r, "key", key, 128);
    field(&r, "key_id", kid, 64);
}

/* "X-API-Key: <key>\r\n" (or the Bearer form) in a static buffer of its own per slot. */
static const char *with(int slot, const char *key, bool bearer)
{
    static char h[6][200];
    snprintf(h[slot], sizeof(h[slot]),
             bearer ? "Authorization: Bearer %s\r\n" : "X-API-Key: %s\r\n", key);
    return h[slot];
}

/* The sample of `series` in a GET /metrics, read to EOF (the scrape is larger than it_resp). */
static long long metric(uint16_t port, const char *series)
{
    int fd = it_connect(port);
    cr_assert_geq(fd, 0);
    const char *q = "GET /metrics HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";
    cr_assert_eq(write(fd, q, strlen(q)), (ssize_t)strlen(q));
    size_t cap = 1 << 20, n = 0;
    char *buf = malloc(cap + 1);
    cr_assert(buf);
    ssize_t k;
    while (n < cap && (k = read(fd, buf + n, cap - n)) > 0)
        n += (size_t)k;
    close(fd);
    buf[n] = 0;
    long long v = it_metric_sample(buf, series);
    free(buf);
    return v;
}

#define FAIL(reason) "ringcount_tenant_key_failures_total{reason=\"" reason "\"}"

Test(keys, create_show_once_and_list)
{
    const char *args[] = {"--rate-limit", "0", NULL};
    struct it_server *srv = it_start(args, env_key);
    struct it_conn c;
    cr_assert_eq(it_conn_open(&c, it_port(srv)), 0);
    static struct it_resp r;
    char tid[64], key[128], kid[64], p[256], v[512];
    mk_tenant(&c, "acme", tid);
    snprintf(p, sizeof(p), "/tenants/%s/keys", tid);
    cr_assert_eq(it_rq(&c, "POST", p, ADM, NULL, &r), 201, "%s", r.body);
    field(&r, "key", key, sizeof(key));
    field(&r, "key_id", kid, sizeof(kid));
    cr_assert_eq(strlen(key), 80, "%s", key);
    cr_assert_eq(strncmp(key, "rck_", 4), 0);
    cr_assert_eq(key[36], '.');
    char hex[33];
    size_t h = 0;
    for (size_t i = 0; i < 36 && h < 32; i++) /* the key id's hex digits, dashes left out */
        if (kid[i] != '-')
            hex[h++] = kid[i];
    hex[32] = 0;
    cr_assert_eq(strncmp(key + 4, hex, 32), 0, "%s / %s", key, kid);
    field(&r, "tenant_id", v, sizeof(v));
    cr_assert_str_eq(v, tid);
    cr_assert(strstr(r.body, "\"scopes\":[\"counter:read\",\"counter:create\",\"counter:set\","
                             "\"counter:delete\",\"counter:history\"]"), "%s", r.body);
    cr_assert(strstr(r.body, "\"expires_at\":null"), "%s", r.body);
    field(&r, "created_at", v, sizeof(v));
    cr_assert_eq(strlen(v), 24);
    /* a second key with scopes and an expiry */
    cr_assert_eq(it_rq(&c, "POST", p, ADM,
                    "{\"scopes\":[\"keys:manage\"],\"expires_at\":\"2999-01-01T00:00:00Z\"}", &r),
                 201, "%s", r.body);
    cr_assert(strstr(r.body, "\"scopes\":[\"keys:manage\"]"), "%s", r.body);
    cr_assert(strstr(r.body, "\"expires_at\":\"2999-01-01T00:00:00.000Z\""), "%s", r.body);
    /* the listing shows both, never a secret */
    cr_assert_eq(it_rq(&c, "GET", p, ADM, NULL, &r), 200, "%s", r.body);
    cr_assert(strstr(r.body, kid), "%s", r.body);
    cr_assert_null(strstr(r.body, key + 37), "the secret is shown once: %s", r.body);
    cr_assert_null(strstr(r.body, "\"key\":"), "%s", r.body);
    cr_assert_null(strstr(r.body, "rck_"), "%s", r.body);
    cr_assert_eq(strncmp(r.body, "{\"keys\":[{\"key_id\":", 19), 0, "%s", r.body);
    /* errors */
    IT_EXPECT(&c, "POST", p, ADM, "{\"scopes\":[\"admin\"]}", 400, "INVALID_SCOPE");
    IT_EXPECT(&c, "POST", p, ADM, "{\"scopes\":[]}", 400, "INVALID_SCOPE");
    IT_EXPECT(&c, "POST", p, ADM, "{\"scopes\":\"counter:read\"}", 400, "INVALID_SCOPE");
    IT_EXPECT(&c, "POST", p, ADM, "{\"expires_at\":\"tomorrow\"}", 400, "INVALID_EXPIRES_AT");
    IT_EXPECT(&c, "POST", p, ADM, "{\"expires_at\":5}", 400, "INVALID_EXPIRES_AT");
    IT_EXPECT(&c, "POST", p, ADM, "{\"scopes\":", 400, "INVALID_JSON");
    IT_EXPECT(&c, "POST", "/tenants/00000000-0000-4000-8000-000000000000/keys", ADM, NULL, 404,
           "NOT_FOUND");
    IT_EXPECT(&c, "POST", "/tenants/nope/keys", ADM, NULL, 400, "INVALID_ID");
    IT_EXPECT(&c, "POST", p, NULL, NULL, 401, "UNAUTHORIZED");
    IT_EXPECT(&c, "GET", p, "X-API-Key: wrong\r\n", NULL, 403, "FORBIDDEN");
    /* DELETE → 204, then 404; the listing no longer shows it */
    snprintf(p, sizeof(p), "/tenants/%s/keys/%s", tid, kid);
    IT_EXPECT(&c, "DELETE", p, ADM, NULL, 204, NULL);
    IT_EXPECT(&c, "DELETE", p, ADM, NULL, 404, "NOT_FOUND");
    snprintf(p, sizeof(p), "/tenants/%s/keys", tid);
    cr_assert_eq(it_rq(&c, "GET", p, ADM, NULL, &r), 200);
    cr_assert_null(strstr(r.body, kid), "%s", r.body);
    it_conn_close(&c);
    it_free(srv);
}

Test(keys, scopes_per_route_and_tenant)
{
    const char *args[] = {"--rate-limit", "0", NULL};
    struct it_server *srv = it_start(args, env_key);
    uint16_t port = it_port(srv);
    struct it_conn c;
    cr_assert_eq(it_conn_open(&c, port), 0);
    static struct it_resp r;
    char t1[64], t2[64], all[128], ro[128], mg[128], other[128], kid[64], cid[64], p[256];
    mk_tenant(&c, "one", t1);
    mk_tenant(&c, "two", t2);
    mk_key(&c, t1, ADM, NULL, all, kid);                                 /* default scopes */
    mk_key(&c, t1, ADM, "{\"scopes\":[\"counter:read\"]}", ro, kid);
    mk_key(&c, t1, ADM, "{\"scopes\":[\"keys:manage\"]}", mg, kid);
    mk_key(&c, t2, ADM, NULL, other, kid);
    const char *ALL = with(0, all, false), *RO = with(1, ro, true), *MG = with(2, mg, false),
               *OT = with(3, other, false);

    /* create counter (both forms): counter:create */
    snprintf(p, sizeof(p), "/tenants/%s/counters", t1);
    cr_assert_eq(it_rq(&c, "POST", p, ALL, "{\"label\":\"hits\"}", &r), 201, "%s", r.body);
    field(&r, "counter_id", cid, sizeof(cid));
    IT_EXPECT(&c, "POST", p, RO, "{}", 403, "FORBIDDEN");
    IT_EXPECT(&c, "POST", p, OT, "{}", 403, "FORBIDDEN");
    snprintf(p, sizeof(p), "/tenants/%s", t1);
    IT_EXPECT(&c, "POST", p, ALL, "{}", 201, NULL);
    IT_EXPECT(&c, "POST", p, MG, "{}", 403, "FORBIDDEN");
    /* listing and ?label=: counter:read */
    snprintf(p, sizeof(p), "/tenants/%s/counters", t1);
    IT_EXPECT(&c, "GET", p, RO, NULL, 200, NULL);
    IT_EXPECT(&c, "GET", p, MG, NULL, 403, "FORBIDDEN");
    IT_EXPECT(&c, "GET", p, OT, NULL, 403, "FORBIDDEN");
    snprintf(p, sizeof(p), "/tenants/%s/counters?label=hits", t1);
    cr_assert_eq(it_rq(&c, "GET", p, RO, NULL, &r), 200, "%s", r.body);
    cr_assert(strstr(r.body, cid), "%s", r.body);
    /* set: counter:set */
    snprintf(p, sizeof(p), "/tenants/%s/counters/%s/set", t1, cid);
    IT_EXPECT(&c, "POST", p, ALL, "{\"value\":41}", 200, NULL);
    IT_EXPECT(&c, "POST", p, RO, "{\"value\":1}", 403, "FORBIDDEN");
    snprintf(p, sizeof(p), "/tenants/%s/counters/%s/set", t2, cid);
    IT_EXPECT(&c, "POST", p, ALL, "{\"value\":1}", 403, "FORBIDDEN"); /* t1's key, t2's path */
    /* public routes stay public */
    snprintf(p, sizeof(p), "/tenants/%s/counters/%s/inc", t1, cid);
    cr_assert_eq(it_rq(&c, "POST", p, NULL, NULL, &r), 200, "%s", r.body);
    cr_assert(strstr(r.body, "\"value\":42"), "%s", r.body);
    /* keys routes: keys:manage (a default key has it not) */
    snprintf(p, sizeof(p), "/tenants/%s/keys", t1);
    IT_EXPECT(&c, "GET", p, MG, NULL, 200, NULL);
    IT_EXPECT(&c, "GET", p, ALL, NULL, 403, "FORBIDDEN");
    char made[128], made_id[64];
    mk_key(&c, t1, MG, "{\"scopes\":[\"counter:read\"]}", made, made_id);
    snprintf(p, sizeof(p), "/tenants/%s/keys", t2);
    IT_EXPECT(&c, "GET", p, MG, NULL, 403, "FORBIDDEN");
    IT_EXPECT(&c, "POST", p, MG, NULL, 403, "FORBIDDEN");
    /* admin-only: the tenant listing and creation, a tenant's delete */
    IT_EXPECT(&c, "GET", "/tenants", ALL, NULL, 403, "FORBIDDEN");
    IT_EXPECT(&c, "POST", "/tenants", MG, "{\"label\":\"x\"}", 403, "FORBIDDEN");
    snprintf(p, sizeof(p), "/tenants/%s", t1);
    IT_EXPECT(&c, "DELETE", p, ALL, NULL, 403, "FORBIDDEN");
    /* history: counter:history (past the key check a memory-only server answers 503) */
    snprintf(p, sizeof(p), "/tenants/%s/counters/%s/history", t1, cid);
    IT_EXPECT(&c, "GET", p, RO, NULL, 403, "FORBIDDEN");
    IT_EXPECT(&c, "GET", p, ALL, NULL, 503, "PERSISTENCE_UNAVAILABLE");
    /* delete counter: counter:delete */
    snprintf(p, sizeof(p), "/tenants/%s/counters/%s", t1, cid);
    IT_EXPECT(&c, "DELETE", p, RO, NULL, 403, "FORBIDDEN");
    IT_EXPECT(&c, "DELETE", p, ALL, NULL, 204, NULL);
    /* rotate: the key made by the keys:manage key works, then is revoked → 401 */
    snprintf(p, sizeof(p), "/tenants/%s/counters", t1);
    IT_EXPECT(&c, "GET", p, with(4, made, false), NULL, 200, NULL);
    char kp[256];
    snprintf(kp, sizeof(kp), "/tenants/%s/keys/%s", t1, made_id);
    IT_EXPECT(&c, "DELETE", kp, OT, NULL, 403, "FORBIDDEN"); /* another tenant's key */
    IT_EXPECT(&c, "DELETE", kp, MG, NULL, 204, NULL);
    IT_EXPECT(&c, "GET", p, with(4, made, false), NULL, 401, "UNAUTHORIZED");
    /* unknown key id, wrong secret */
    char bad[128];
    snprintf(bad, sizeof(bad), "%s", all);
    bad[50] = bad[50] == 'A' ? 'B' : 'A';
    IT_EXPECT(&c, "GET", p, with(4, bad, false), NULL, 401, "UNAUTHORIZED");
    snprintf(bad, sizeof(bad), "%s", all);
    bad[5] = bad[5] == '0' ? '1' : '0';
    IT_EXPECT(&c, "GET", p, with(5, bad, true), NULL, 401, "UNAUTHORIZED");
    /* the admin key still works everywhere */
    IT_EXPECT(&c, "GET", p, ADM, NULL, 200, NULL);
    /* the refusals were counted, each under its reason */
    cr_assert_eq(metric(port, FAIL("scope")), 7);
    long long wt = metric(port, FAIL("wrong_tenant"));
    cr_assert_eq(wt, 9, "%lld", wt);
    cr_assert_eq(metric(port, FAIL("revoked")), 1);
    cr_assert_eq(metric(port, FAIL("bad_secret")), 1);
    cr_assert_eq(metric(port, FAIL("unknown")), 1);
    cr_assert_eq(metric(port, FAIL("expired")), 0);
    /* the log never shows a key */
    char log[65536];
    size_t ln = it_log_copy(srv, log, sizeof(log));
    cr_assert_null(memmem(log, ln, all + 37, 43), "a secret in the log");
    cr_assert_null(memmem(log, ln, "rck_", 4), "a key in the log");
    it_conn_close(&c);
    it_free(srv);
}

Test(keys, expiry_and_tenant_delete)
{
    const char *args[] = {"--rate-limit", "0", NULL};
    struct it_server *srv = it_start(args, env_key);
    uint16_t port = it_port(srv);
    struct it_conn c;
    cr_assert_eq(it_conn_open(&c, port), 0);
    char tid[64], gone[128], soon[128], kid[64], p[256], body[128];
    mk_tenant(&c, "exp", tid);
    mk_key(&c, tid, ADM, NULL, gone, kid);
    /* whole seconds: it expires 3-4 s from now, room for the GET before it on a loaded machine */
    time_t t = time(NULL) + 4;
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(body, sizeof(body), "{\"expires_at\":\"%Y-%m-%dT%H:%M:%SZ\"}", &tm);
    mk_key(&c, tid, ADM, body, soon, kid);
    snprintf(p, sizeof(p), "/tenants/%s/counters", tid);
    IT_EXPECT(&c, "GET", p, with(0, soon, false), NULL, 200, NULL);
    sleep(5);
    IT_EXPECT(&c, "GET", p, with(0, soon, false), NULL, 401, "UNAUTHORIZED");
    cr_assert_eq(metric(port, FAIL("expired")), 1);
    /* a past expiry is accepted and refused at once */
    mk_key(&c, tid, ADM, "{\"expires_at\":\"2001-01-01T00:00:00+02:00\"}", soon, kid);
    IT_EXPECT(&c, "GET", p, with(0, soon, false), NULL, 401, "UNAUTHORIZED");
    IT_EXPECT(&c, "GET", p, with(1, gone, false), NULL, 200, NULL);
    snprintf(p, sizeof(p), "/tenants/%s", tid);
    IT_EXPECT(&c, "DELETE", p, ADM, NULL, 204, NULL);
    snprintf(p, sizeof(p), "/tenants/%s/counters", tid);
    IT_EXPECT(&c, "GET", p, with(1, gone, false), NULL, 401, "UNAUTHORIZED");
    cr_assert_eq(metric(port, FAIL("revoked")), 1, "a tenant's delete revokes its keys");
    it_conn_close(&c);
    it_free(srv);
}

/* ------------------------------------------------------------------ with --db */

static char pg_dir[128];

static void pg_fini(void)
{
    if (pg_dir[0])
        it_pg_destroy(pg_dir);
    pg_dir[0] = 0;
}

static struct it_server *db_node(const char *node_id)
{
    static char ci[256];
    snprintf(ci, sizeof(ci), "host=%s dbname=ringcount user=postgres", pg_dir);
    const char *args[] = {"--rate-limit", "0", "--db", ci, "--node-id", node_id, "--sync-ms",
                          "200", "--workers", "2", NULL};
    return it_start(args, env_key);
}

/* The status of GET /tenants/{tid}/counters with key on port, polled until it is want or
   deadline_ms passed: the last status. */
static int poll_status(uint16_t port, const char *tid, const char *key, int want, int deadline_ms)
{
    static struct it_resp r;
    char p[256];
    snprintf(p, sizeof(p), "/tenants/%s/counters", tid);
    int st = 0;
    for (int waited = 0;; waited += 50) {
        struct it_conn c;
        cr_assert_eq(it_conn_open(&c, port), 0);
        st = it_rq(&c, "GET", p, with(5, key, false), NULL, &r);
        it_conn_close(&c);
        if (st == want || waited >= deadline_ms)
            return st;
        usleep(50 * 1000);
    }
}

Test(keys, db_two_nodes_revocation_and_restart, .fini = pg_fini)
{
    char err[512];
    cr_assert_eq(it_pg_start(pg_dir, sizeof(pg_dir), "rc-keys", err, sizeof(err)), 0, "%s", err);
    struct it_server *a = db_node("1"), *b = db_node("2");
    struct it_conn ca;
    cr_assert_eq(it_conn_open(&ca, it_port(a)), 0);
    char tid[64], key[128], kid[64], key2[128], kid2[64], p[256];
    mk_tenant(&ca, "dbkeys", tid);
    mk_key(&ca, tid, ADM, "{\"scopes\":[\"counter:read\"]}", key, kid);
    mk_key(&ca, tid, ADM, NULL, key2, kid2);
    /* only the verifier is stored */
    char out[256];
    cr_assert_eq(it_pg_sql(pg_dir, "SELECT count(*) FROM rc_tenant_keys", out, sizeof(out)), 0,
                 "%s", out);
    cr_assert_str_eq(out, "2");
    snprintf(p, sizeof(p), "SELECT encode(verifier, 'hex') FROM rc_tenant_keys WHERE id = '%s'",
             kid);
    cr_assert_eq(it_pg_sql(pg_dir, p, out, sizeof(out)), 0, "%s", out);
    cr_assert_eq(strlen(out), 64, "%s", out);
    cr_assert_null(strstr(out, key + 37));
    /* node b learns the key from the feed, and refuses it once node a revoked it */
    cr_assert_eq(poll_status(it_port(b), tid, key, 200, 5000), 200, "the key never reached b");
    snprintf(p, sizeof(p), "/tenants/%s/keys/%s", tid, kid);
    IT_EXPECT(&ca, "DELETE", p, ADM, NULL, 204, NULL);
    IT_EXPECT(&ca, "DELETE", p, ADM, NULL, 404, "NOT_FOUND");
    IT_EXPECT(&ca, "GET", "/tenants/x/keys", with(4, key, false), NULL, 401, "UNAUTHORIZED");
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    int st = poll_status(it_port(b), tid, key, 401, 5000);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    long ms = (t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000;
    cr_assert_eq(st, 401, "node b still accepts the revoked key");
    cr_assert_leq(ms, 200 + 1000, "revocation took %ld ms to reach node b (--sync-ms 200)", ms);
    cr_assert_geq(metric(it_port(b), FAIL("revoked")), 1);
    cr_assert_eq(poll_status(it_port(a), tid, key, 401, 0), 401, "node a at once");
    it_conn_close(&ca);
    it_free(a);
    it_free(b);
    /* a restart loads the keys: the live one works, the revoked one is still refused, and the
       listing shows the live one only */
    a = db_node("1");
    b = db_node("2");
    cr_assert_eq(poll_status(it_port(a), tid, key2, 200, 0), 200, "the key did not survive");
    cr_assert_eq(poll_status(it_port(b), tid, key2, 200, 0), 200, "not loaded on node b");
    cr_assert_eq(poll_status(it_port(a), tid, key, 401, 0), 401);
    cr_assert_eq(it_conn_open(&ca, it_port(a)), 0);
    static struct it_resp r;
    snprintf(p, sizeof(p), "/tenants/%s/keys", tid);
    cr_assert_eq(it_rq(&ca, "GET", p, ADM, NULL, &r), 200, "%s", r.body);
    cr_assert(strstr(r.body, kid2), "%s", r.body);
    cr_assert_null(strstr(r.body, kid), "%s", r.body);
    /* deleting the tenant revokes its keys */
    snprintf(p, sizeof(p), "/tenants/%s", tid);
    IT_EXPECT(&ca, "DELETE", p, ADM, NULL, 204, NULL);
    cr_assert_eq(poll_status(it_port(a), tid, key2, 401, 0), 401);
    cr_assert_eq(poll_status(it_port(b), tid, key2, 401, 1200), 401,
                 "node b still accepts a key of the deleted tenant");
    snprintf(p, sizeof(p), "/tenants/%s/keys", tid);
    IT_EXPECT(&ca, "POST", p, ADM, NULL, 404, "NOT_FOUND");
    it_conn_close(&ca);
    it_free(a);
    it_free(b);
}
