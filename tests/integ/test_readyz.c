/* Integration test of /readyz and the persistence backlog (SPEC §2.4): with
   --readyz-max-pending 10, PostgreSQL stopped and more than 10 distinct users posted, /readyz
   answers 503 NOT_READY "persistence backlog over cap" while the fast path keeps answering;
   PostgreSQL started again, the backlog is flushed and /readyz is 200 again.

   The test has a private PostgreSQL 15 cluster (as tests/integ/test_persist.c: run as the
   postgres user when we are root, unix socket only), since it takes the server down. */
#include <criterion/criterion.h>
#include <errno.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "harness.h"

/* Stop + start of PostgreSQL (~1 s each) and a reconnect back-off of up to 1 s (persist_int.h
   BACKOFF_MAX_MS) fit well inside 60 s. */
TestSuite(readyz, .timeout = 60);

#define CAP 10     /* --readyz-max-pending */
#define STR_(x) #x
#define STR(x) STR_(x)
#define USERS 25   /* distinct users posted while the database is down: > CAP */

/* ------------------------------------------------------------------ PostgreSQL cluster */

static char pg_dir[128];

static int cluster_start(char *err, size_t errcap)
{
    return it_pg_start(pg_dir, sizeof(pg_dir), "rc-readyz", err, errcap);
}

static int cluster_ctl(const char *what)
{
    return it_pg_ctl(pg_dir, what);
}

/* .fini: runs even when an assertion ended the test early. */
static void cluster_fini(void)
{
    it_pg_destroy(pg_dir);
    pg_dir[0] = 0;
}

/* ------------------------------------------------------------------ requests */

static struct it_server *srv; /* the server under test: its log explains a dropped connection */

/* One request on c (5 s); asserts the transport worked. */
static void call(struct it_conn *c, const char *method, const char *path, const char *body,
                 struct it_resp *r)
{
    char raw[512];
    snprintf(raw, sizeof(raw), "%s %s HTTP/1.1\r\nHost: t\r\nContent-Length: %zu\r\n\r\n%s",
             method, path, body ? strlen(body) : 0, body ? body : "");
    int rc = it_request(c, raw, r);
    if (rc != 0) {
        static char log[8192];
        it_log_copy(srv, log, sizeof(log));
        cr_assert_fail("%s %s: %s; server output:\n%s", method, path, strerror(-rc), log);
    }
}

/* /stats server.persistence.pendingKeys. */
static uint64_t pending_keys(struct it_conn *c, struct it_resp *r)
{
    uint64_t v = 0;
    call(c, "GET", "/stats", NULL, r);
    cr_assert_eq(r->status, 200, "%d %s", r->status, r->body);
    cr_assert_eq(it_json_u64(r->body, "pendingKeys", &v), 0, "%s", r->body);
    return v;
}

/* Poll /readyz every 20 ms for up to ms until it answers want (and, if body is not NULL, that
   body); the last answer stays in r. */
static bool readyz_is(struct it_conn *c, struct it_resp *r, int want, const char *body, int ms)
{
    for (uint64_t end = it_now_ms() + (uint64_t)ms;; usleep(20000)) {
        call(c, "GET", "/readyz", NULL, r);
        if (r->status == want && (!body || strcmp(r->body, body) == 0))
            return true;
        if (it_now_ms() >= end)
            return false;
    }
}

/* ------------------------------------------------------------------ test */

Test(readyz, backlog_over_cap_then_flushed, .fini = cluster_fini)
{
    char err[512];
    cr_assert_eq(cluster_start(err, sizeof(err)), 0, "%s", err);
    char ci[256];
    snprintf(ci, sizeof(ci), "host=%s dbname=ringcount user=postgres", pg_dir);
    const char *const args[] = {"--workers", "2", "--db", ci, "--readyz-max-pending", STR(CAP),
                                NULL};
    srv = it_start(args, NULL);
    struct it_conn *c = malloc(sizeof(*c));
    struct it_resp *r = malloc(sizeof(*r));
    cr_assert(c && r);
    cr_assert_eq(it_conn_open(c, it_port(srv)), 0);

    cr_assert(readyz_is(c, r, 200, NULL, 5000), "ready after start-up: %d %s", r->status, r->body);
    cr_assert_str_eq(r->body, "{\"status\":\"ready\"}");

    /* Database up: flushes every 10 ms keep the backlog below the cap. */
    char body[96];
    for (int i = 0; i < CAP - 2; i++) {
        snprintf(body, sizeof(body), "{\"userId\":\"below-%d\",\"value\":1}", i);
        call(c, "POST", "/event", body, r);
        cr_assert_eq(r->status, 200, "%d %s", r->status, r->body);
    }
    call(c, "GET", "/readyz", NULL, r);
    cr_assert_eq(r->status, 200, "%u keys pending (cap %d): %s",
                 (unsigned)pending_keys(c, r), CAP, r->body);

    cr_assert_eq(cluster_ctl("stop"), 0, "pg_ctl stop: see %s/start.err", pg_dir);
    for (int i = 0; i < USERS; i++) {
        snprintf(body, sizeof(body), "{\"userId\":\"down-%d\",\"value\":2}", i);
        call(c, "POST", "/event", body, r);
        cr_assert_eq(r->status, 200, "fast path keeps answering: %d %s", r->status, r->body);
    }
    /* Disconnected: 503 at once (SPEC §4: not healthy), whatever the backlog. */
    cr_assert(readyz_is(c, r, 503, NULL, 3000), "database down: /readyz %d %s", r->status,
              r->body);
    /* The persister publishes its backlog at least every 100 ms (persist_p_run); over the cap
       that is the reason given (it is checked first: it is the one a balancer must act on
       even while the database is reachable). */
    cr_assert(readyz_is(c, r, 503,
                        "{\"error\":{\"code\":\"NOT_READY\","
                        "\"message\":\"persistence backlog over cap\"}}", 3000),
              "backlog of %u keys, cap %d: /readyz %d %s", (unsigned)pending_keys(c, r), CAP,
              r->status, r->body);
    uint64_t backlog = pending_keys(c, r);
    cr_assert_gt(backlog, CAP, "%s", r->body);
    cr_assert(strstr(r->body, "\"dbUp\":false"), "%s", r->body);

    /* Back: reconnect (back-off <= 5 s), one flush takes all 25 users, ready again. */
    cr_assert_eq(cluster_ctl("start"), 0, "pg_ctl start: see %s/start.err", pg_dir);
    cr_assert(readyz_is(c, r, 200, NULL, 15000), "still %d %s after PostgreSQL came back",
              r->status, r->body);
    cr_assert_str_eq(r->body, "{\"status\":\"ready\"}");
    cr_assert_leq(pending_keys(c, r), CAP, "%s", r->body);
    cr_assert(strstr(r->body, "\"dbUp\":true"), "%s", r->body);
    uint64_t users = 0;
    cr_assert_eq(it_json_u64(r->body, "uniqueUsers", &users), 0);
    cr_assert_eq(users, CAP - 2 + USERS);

    it_conn_close(c);
    free(c);
    free(r);
    cr_assert_eq(it_stop(srv), 0);
    it_free(srv);
}
