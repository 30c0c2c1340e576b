/* Integration tests of what a durable answer promises (SPEC §2.2, §4) against a real
   PostgreSQL 15 — each one fails on the code before the persistence-faults work:
   - Idempotency-Key on POST /api/v1/increment is arbitrated by the database: a replay on the
     same node or another node returns the first count and counts nothing;
   - a durable 503 says whether its increment may still be committed ("outcome":"unknown") or
     certainly was not ("not_committed");
   - a flush left open by a killed process (its backend blocked on a lock) can never be taken
     for a flush of the next process (the ledger key carries a per-start incarnation, and the
     orphan is ended at start-up): every count the new process acknowledges is in the database;
   - a keyed tenant increment and its idempotency record commit in the same transaction, even
     with more than 4,096 records waiting for one flush;
   - a shutdown that can neither flush nor write its spill file exits non-zero.
   One private cluster per test (Criterion forks a process per test), unix socket only. */
#include <criterion/criterion.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"
#include "load.h"

/* kill -9 + restart, lock waits of a few seconds, 10,000 tenant increments: ~20 s each. */
TestSuite(durable, .timeout = 90);

#define ADMIN_KEY "durable-test-admin-key"

static char pg_dir[128];
static char spill_dir[160];

static void setup(void)
{
    char err[512];
    cr_assert_eq(it_pg_start(pg_dir, sizeof(pg_dir), "rc-durable", err, sizeof(err)), 0, "%s",
                 err);
    snprintf(spill_dir, sizeof(spill_dir), "%s/spill", pg_dir);
}

static void teardown(void)
{
    it_pg_destroy(pg_dir);
    pg_dir[0] = 0;
}

/* One more NAME=value for the servers start_rc starts ("" = none). */
static char env_extra[300];

/* ringcount on the test cluster with extra args (NULL-terminated, may be NULL). */
static struct it_server *start_rc(const char *node_id, const char *const *extra)
{
    static char ci[256];
    snprintf(ci, sizeof(ci), "host=%s dbname=ringcount user=postgres", pg_dir);
    const char *args[32] = {"--workers", "2", "--db", ci, "--node-id", node_id, "--spill-dir",
                            spill_dir, "--rate-limit", "0"};
    int k = 10;
    for (int i = 0; extra && extra[i] && k < 31; i++)
        args[k++] = extra[i];
    args[k] = NULL;
    const char *const env[] = {"RINGCOUNT_ADMIN_KEY=" ADMIN_KEY, env_extra[0] ? env_extra : NULL,
                               NULL};
    return it_start(args, env);
}

static long long db(const char *sql)
{
    long long v = it_pg_i64(pg_dir, sql);
    cr_assert_neq(v, IT_PG_ERR, "%s failed", sql);
    return v;
}

static void req(struct it_server *srv, struct it_conn *c, const char *method, const char *path,
                const char *hdrs, const char *body, struct it_resp *r)
{
    int rc = it_load_call(c, method, path, hdrs, body, r, 15000);
    if (rc != 0) {
        static char log[8192];
        it_log_copy(srv, log, sizeof(log));
        cr_assert_fail("%s %s: %s; server output:\n%s", method, path, strerror(-rc), log);
    }
}

static long long count_of(const struct it_resp *r)
{
    char v[32];
    cr_assert_eq(r->status, 200, "%d %s", r->status, r->body);
    cr_assert_gt(it_json_num(r->body, "count", v, sizeof(v)), 0, "%s", r->body);
    return strtoll(v, NULL, 10);
}

#define SQL_COUNTER "SELECT v FROM rc_counters WHERE k = 'increment'"

/* ------------------------------------------------------------------ Idempotency-Key */

Test(durable, idempotency_key_on_any_node, .init = setup, .fini = teardown)
{
    struct it_server *a = start_rc("1", NULL), *b = start_rc("2", NULL);
    struct it_conn *ca = it_conn_new(it_port(a)), *cb = it_conn_new(it_port(b));
    struct it_resp *r = malloc(sizeof(*r));
    cr_assert_not_null(r);

    req(a, ca, "POST", "/api/v1/increment", NULL, NULL, r);
    long long first = count_of(r);
    req(a, ca, "POST", "/api/v1/increment", "Idempotency-Key: order-42\r\n", NULL, r);
    long long keyed = count_of(r);
    cr_assert_eq(keyed, first + 1);
    /* replays: same node, then the other node — the first result, nothing counted */
    req(a, ca, "POST", "/api/v1/increment", "Idempotency-Key: order-42\r\n", NULL, r);
    cr_assert_eq(count_of(r), keyed, "replay on the same node");
    req(b, cb, "POST", "/api/v1/increment", "Idempotency-Key: order-42\r\n", NULL, r);
    cr_assert_eq(count_of(r), keyed, "replay on another node");
    cr_assert_eq(db(SQL_COUNTER), keyed, "the replays counted nothing");
    cr_assert_eq(db("SELECT v FROM rc_incr_keys WHERE k = 'order-42'"), keyed);

    /* another key counts, on node b, after what node a committed */
    req(b, cb, "POST", "/api/v1/increment", "Idempotency-Key: order-43\r\n", NULL, r);
    cr_assert_eq(count_of(r), keyed + 1);
    /* malformed keys are refused before anything is counted */
    req(a, ca, "POST", "/api/v1/increment", "Idempotency-Key: caf\xc3\xa9\r\n", NULL, r);
    cr_assert_eq(r->status, 400, "%d %s", r->status, r->body);
    cr_assert(strstr(r->body, "INVALID_IDEMPOTENCY_KEY"), "%s", r->body);
    char k65[100] = "Idempotency-Key: ";
    memset(k65 + strlen(k65), 'k', 65);
    strcat(k65, "\r\n");
    req(a, ca, "POST", "/api/v1/increment", k65, NULL, r);
    cr_assert_eq(r->status, 400, "65-byte key: %d %s", r->status, r->body);
    cr_assert_eq(db(SQL_COUNTER), keyed + 1);

    /* the key survives a restart of both nodes */
    it_conn_free(ca);
    it_conn_free(cb);
    cr_assert_eq(it_stop(a), 0);
    cr_assert_eq(it_stop(b), 0);
    it_free(a);
    it_free(b);
    a = start_rc("1", NULL);
    ca = it_conn_new(it_port(a));
    req(a, ca, "POST", "/api/v1/increment", "Idempotency-Key: order-42\r\n", NULL, r);
    cr_assert_eq(count_of(r), keyed, "replay after a restart");
    cr_assert_eq(db(SQL_COUNTER), keyed + 1);
    it_conn_free(ca);
    cr_assert_eq(it_stop(a), 0);
    it_free(a);
    free(r);
}

/* ------------------------------------------------------------------ 503 outcomes */

Test(durable, unavailable_says_the_outcome, .fini = teardown)
{
    /* memory-only: nothing is ever counted by a durable request */
    const char *const args[] = {"--workers", "1", NULL};
    struct it_server *m = it_start(args, NULL);
    struct it_conn *c = it_conn_new(it_port(m));
    struct it_resp *r = malloc(sizeof(*r));
    cr_assert_not_null(r);
    req(m, c, "POST", "/api/v1/increment", NULL, NULL, r);
    cr_assert_eq(r->status, 503, "%d %s", r->status, r->body);
    cr_assert(strstr(r->body, "\"code\":\"PERSISTENCE_UNAVAILABLE\""), "%s", r->body);
    cr_assert(strstr(r->body, "\"outcome\":\"not_committed\""), "%s", r->body);
    it_conn_free(c);
    cr_assert_eq(it_stop(m), 0);
    it_free(m);

    /* database gone: the increment was taken and may commit later: "unknown", in time */
    setup();
    const char *const extra[] = {"--durable-timeout-ms", "800", NULL};
    struct it_server *s = start_rc("1", extra);
    c = it_conn_new(it_port(s));
    req(s, c, "POST", "/api/v1/increment", NULL, NULL, r);
    cr_assert_eq(r->status, 200, "%d %s", r->status, r->body);
    cr_assert_eq(it_pg_ctl_mode(pg_dir, "stop", "immediate"), 0);
    const char *hdrs[2] = {NULL, "Idempotency-Key: k-503\r\n"};
    for (int i = 0; i < 2; i++) {
        uint64_t t0 = it_now_ms();
        req(s, c, "POST", "/api/v1/increment", hdrs[i], NULL, r);
        uint64_t took = it_now_ms() - t0;
        cr_assert_eq(r->status, 503, "%d %s", r->status, r->body);
        cr_assert(strstr(r->body, "\"outcome\":\"unknown\""), "%s", r->body);
        cr_assert_leq(took, 800 + 1000, "503 after %llu ms (--durable-timeout-ms 800)",
                      (unsigned long long)took);
        char ra[16];
        cr_assert_gt(it_header(r, "Retry-After", ra, sizeof(ra)), 0);
    }
    /* back: the keyed retry returns the increment the 503 left unknown, counted once */
    cr_assert_eq(it_pg_ctl(pg_dir, "start"), 0);
    long long got = -1;
    for (uint64_t end = it_now_ms() + 20000; it_now_ms() < end; usleep(100000)) {
        req(s, c, "POST", "/api/v1/increment", hdrs[1], NULL, r);
        if (r->status == 200) {
            got = count_of(r);
            break;
        }
    }
    cr_assert_geq(got, 2, "keyed retry after the outage: %d %s", r->status, r->body);
    req(s, c, "POST", "/api/v1/increment", hdrs[1], NULL, r);
    cr_assert_eq(count_of(r), got, "a second retry returns the same count");
    cr_assert_eq(db("SELECT count(*) FROM rc_incr_keys WHERE k = 'k-503'"), 1);
    it_conn_free(c);
    cr_assert_eq(it_stop(s), 0);
    it_free(s);
    teardown();
    free(r);
}

/* ------------------------------------------------------------------ orphaned flush */

/* Send n raw durable increments on fresh connections and never read the answers. */
static void send_unread(uint16_t port, int n, int *fds)
{
    static const char rq[] = "POST /api/v1/increment HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n";
    for (int i = 0; i < n; i++) {
        fds[i] = it_connect(port);
        cr_assert_geq(fds[i], 0);
        cr_assert_eq(it_send_all(fds[i], rq, sizeof(rq) - 1), 0);
    }
}

Test(durable, orphaned_flush_of_a_killed_process, .init = setup, .fini = teardown)
{
    struct it_server *s = start_rc("1", NULL);
    struct it_conn *c = it_conn_new(it_port(s));
    struct it_resp *r = malloc(sizeof(*r));
    cr_assert_not_null(r);
    /* this node's rc_events row exists (an event flushed) */
    req(s, c, "POST", "/event", NULL, "{\"userId\":\"u0\",\"value\":1}", r);
    cr_assert_eq(r->status, 200);
    req(s, c, "POST", "/api/v1/increment", NULL, NULL, r);
    long long base = count_of(r);
    cr_assert_eq(db("SELECT count(*) FROM rc_events WHERE node_id = 1"), 1);

    /* A row lock on rc_events: the next flush updates rc_counters and writes its ledger row,
       then waits on rc_events — with its COMMIT already sent. */
    char ci[256];
    snprintf(ci, sizeof(ci), "host=%s dbname=ringcount user=postgres", pg_dir);
    static char holder_cmd[1024];
    snprintf(holder_cmd, sizeof(holder_cmd),
             "runuser -u postgres -- /usr/lib/postgresql/15/bin/psql '%s' -qc 'BEGIN' -c 'SELECT 1 FROM rc_events WHERE "
             "node_id = 1 FOR UPDATE' -c 'SELECT pg_sleep(6)' -c 'COMMIT' >/dev/null 2>&1 &",
             ci);
    cr_assert_eq(system(geteuid() == 0 ? holder_cmd : holder_cmd + 23), 0);
    for (uint64_t end = it_now_ms() + 3000; it_now_ms() < end; usleep(20000))
        if (db("SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation WHERE "
               "c.relname = 'rc_events' AND l.mode = 'RowShareLock' AND l.granted") > 0)
            break;
    int fds[8];
    send_unread(it_port(s), 8, fds);
    req(s, c, "POST", "/event", NULL, "{\"userId\":\"u1\",\"value\":1}", r);
    /* the flush is now blocked on the row lock (its backend waits on a transactionid lock) */
    bool blocked = false;
    for (uint64_t end = it_now_ms() + 3000; it_now_ms() < end && !blocked; usleep(20000))
        blocked = db("SELECT count(*) FROM pg_stat_activity WHERE application_name = "
                     "'ringcount-node-1' AND wait_event_type = 'Lock'") > 0;
    cr_assert(blocked, "the flush never blocked on the row lock");
    cr_assert_eq(it_signal_wait(s, SIGKILL, 5000), 128 + SIGKILL);
    it_free(s);
    it_conn_free(c);
    for (int i = 0; i < 8; i++)
        close(fds[i]);

    /* The next process starts while the orphan still waits, and acknowledges increments. */
    s = start_rc("1", NULL);
    c = it_conn_new(it_port(s));
    long long last = 0;
    int acked = 0;
    for (uint64_t end = it_now_ms() + 9000; it_now_ms() < end && acked < 50;) {
        req(s, c, "POST", "/api/v1/increment", NULL, NULL, r);
        if (r->status == 200) {
            long long v = count_of(r);
            cr_assert_gt(v, last, "counts grow");
            last = v;
            acked++;
        }
    }
    cr_assert_eq(acked, 50, "durable increments after the restart: %d %s", r->status, r->body);
    usleep(6500 * 1000); /* the lock holder is gone by now */
    long long in_db = db(SQL_COUNTER);
    /* every count acknowledged is committed: the orphan's 8 unacknowledged increments may or
       may not be there (they were attempted), nothing acknowledged is missing */
    cr_assert_geq(in_db, last, "acknowledged %lld, database %lld", last, in_db);
    cr_assert_geq(in_db, base + 50);
    cr_assert_leq(in_db, base + 50 + 8);
    cr_assert_eq(db("SELECT count(DISTINCT incarnation) FROM rc_flush_ledger WHERE node_id = 1"),
                 2, "each process start has its own incarnation");
    cr_assert_leq(db("SELECT count(*) FROM pg_stat_activity WHERE application_name = "
                     "'ringcount-node-1'"), 1, "no orphaned backend left");
    it_conn_free(c);
    cr_assert_eq(it_stop(s), 0);
    it_free(s);
    free(r);
}

/* ------------------------------------------------------------------ idempotency records */

struct burst {
    uint16_t port;
    const char *path;
    int from, n, ok;
};

static void *burst_main(void *arg)
{
    struct burst *b = arg;
    struct it_conn *c = malloc(sizeof(*c));
    struct it_resp *r = malloc(sizeof(*r));
    if (!c || !r || it_conn_open(c, b->port) != 0)
        goto out;
    for (int i = b->from; i < b->from + b->n; i++) {
        char h[64];
        snprintf(h, sizeof(h), "Idempotency-Key: key-%d\r\n", i);
        if (it_load_call(c, "POST", b->path, h, NULL, r, 10000) == 0 && r->status == 200)
            b->ok++;
    }
    it_conn_close(c);
out:
    free(c);
    free(r);
    return NULL;
}

Test(durable, idempotency_records_commit_with_their_increments, .init = setup, .fini = teardown)
{
    /* 5 s between flushes: the 10,000 keyed increments below all wait for one or two flushes,
       so at least one carries more than 4,096 records (the old per-flush cap). */
    const char *const extra[] = {"--flush-ms", "5000", NULL};
    struct it_server *s = start_rc("1", extra);
    char tid[64], cid[64], err[256];
    cr_assert_eq(it_load_make_tenant(it_port(s), ADMIN_KEY, "idem", tid, cid, err, sizeof(err)),
                 0, "%s", err);
    char path[200];
    snprintf(path, sizeof(path), "/tenants/%s/counters/%s/inc", tid, cid);
    struct burst b[4];
    pthread_t th[4];
    for (int i = 0; i < 4; i++) {
        b[i] = (struct burst){.port = it_port(s), .path = path, .from = i * 2500, .n = 2500};
        cr_assert_eq(pthread_create(&th[i], NULL, burst_main, &b[i]), 0);
    }
    for (int i = 0; i < 4; i++)
        pthread_join(th[i], NULL);
    int ok = b[0].ok + b[1].ok + b[2].ok + b[3].ok;
    cr_assert_eq(ok, 10000);
    /* Every committed state: the counter's value equals its idempotency records (each keyed
       increment adds 1 and writes one record). Watched until everything is committed. */
    char q[400];
    snprintf(q, sizeof(q),
             "SELECT (SELECT value FROM rc_tenant_counters WHERE id = '%s') -"
             " (SELECT count(*) FROM rc_idempotency WHERE counter_id = '%s')", cid, cid);
    char qv[200];
    snprintf(qv, sizeof(qv), "SELECT value FROM rc_tenant_counters WHERE id = '%s'", cid);
    long long v = 0;
    for (uint64_t end = it_now_ms() + 20000; it_now_ms() < end && v < 10000; usleep(5000)) {
        long long gap = db(q);
        cr_assert_eq(gap, 0, "value and records differ by %lld (value %lld)", gap, db(qv));
        v = db(qv);
    }
    cr_assert_eq(v, 10000);
    cr_assert_eq(db(q), 0);
    cr_assert_eq(it_stop(s), 0);
    it_free(s);
}

/* ------------------------------------------------------------------ loss at shutdown */

Test(durable, shutdown_that_loses_data_exits_non_zero, .init = setup, .fini = teardown)
{
    const char *const extra[] = {"--shutdown-timeout-ms", "1500", NULL};
    struct it_server *s = start_rc("1", extra);
    struct it_conn *c = it_conn_new(it_port(s));
    struct it_resp *r = malloc(sizeof(*r));
    cr_assert_not_null(r);
    cr_assert_eq(it_pg_ctl_mode(pg_dir, "stop", "immediate"), 0);
    req(s, c, "POST", "/event", NULL, "{\"userId\":\"lost\",\"value\":1}", r);
    cr_assert_eq(r->status, 200);
    it_conn_free(c);
    /* An unreplayed spill file of this node is in the way: the shutdown must not overwrite it
       (that would lose its data), so this shutdown's pending event has nowhere to go. */
    char cmd[400];
    snprintf(cmd, sizeof(cmd), "mkdir -p %s && echo older > %s/ringcount-node-1.spill", spill_dir,
             spill_dir);
    cr_assert_eq(system(cmd), 0);
    int st = it_signal_wait(s, SIGTERM, 8000);
    static char log[16384];
    it_log_copy(s, log, sizeof(log));
    cr_assert_eq(st, 1, "exit %d; output:\n%s", st, log);
    cr_assert(strstr(log, "pending data is lost"), "%s", log);
    it_free(s);
    /* the file in the way is untouched */
    snprintf(cmd, sizeof(cmd), "grep -qx older %s/ringcount-node-1.spill", spill_dir);
    cr_assert_eq(system(cmd), 0);
    free(r);
}

/* ------------------------------------------------------------------ a key that fails alone */

Test(durable, a_key_that_fails_alone_goes_to_rc_rejected, .init = setup, .fini = teardown)
{
    struct it_server *s = start_rc("1", NULL);
    struct it_conn *c = it_conn_new(it_port(s));
    struct it_resp *r = malloc(sizeof(*r));
    cr_assert_not_null(r);
    /* one user id the database refuses, among 200 it takes */
    char out[256];
    cr_assert_eq(it_pg_sql(pg_dir, "ALTER TABLE rc_users ADD CONSTRAINT no_bad CHECK "
                                   "(id <> convert_to('bad-user', 'UTF8'))", out, sizeof(out)),
                 0, "%s", out);
    char body[96];
    for (int i = 0; i < 200; i++) {
        snprintf(body, sizeof(body), "{\"userId\":\"%s\",\"value\":1}", i == 77 ? "bad-user" : "");
        if (i != 77)
            snprintf(body, sizeof(body), "{\"userId\":\"good-%d\",\"value\":1}", i);
        req(s, c, "POST", "/event", NULL, body, r);
        cr_assert_eq(r->status, 200);
        req(s, c, "POST", "/api/v2/increment", NULL, NULL, r);
        cr_assert_eq(r->status, 204);
    }
    /* isolated within seconds: 5 failures, the ledger probe, then halvings of the users */
    long long rej = 0;
    for (uint64_t end = it_now_ms() + 15000; it_now_ms() < end && rej == 0; usleep(50000))
        rej = db("SELECT count(*) FROM rc_rejected");
    cr_assert_eq(rej, 1, "the bad key was not isolated");
    cr_assert_eq(it_pg_sql(pg_dir, "SELECT kind || ' ' || convert_from(key, 'UTF8') || ' ' || "
                                   "sqlstate FROM rc_rejected", out, sizeof(out)), 0, "%s", out);
    cr_assert_str_eq(out, "user bad-user 23514");
    /* everything else committed: 199 users, every event and increment */
    cr_assert_eq(it_pg_wait_i64(pg_dir, "SELECT count(*) FROM rc_users", 199, 5000), 199);
    cr_assert_eq(db("SELECT coalesce(sum(total), 0) FROM rc_events"), 200);
    cr_assert_eq(db(SQL_COUNTER), 200);
    /* counted in /metrics, and flushing normally again */
    req(s, c, "GET", "/metrics", NULL, NULL, r);
    cr_assert(strstr(r->body, "\nringcount_flush_rejected_keys_total 1\n"), "%s", r->body);
    req(s, c, "POST", "/api/v1/increment", NULL, NULL, r);
    cr_assert_eq(count_of(r), 201);
    req(s, c, "GET", "/readyz", NULL, NULL, r);
    cr_assert_eq(r->status, 200, "%s", r->body);
    it_conn_free(c);
    cr_assert_eq(it_stop(s), 0);
    it_free(s);
    free(r);
}

/* A keyed durable increment that the database refuses alone is isolated to rc_rejected and
   answered 503 "not_committed" — never a 2xx (it once got 200 {"count":0}) — while other keys
   keep committing. */
Test(durable, rejected_keyed_increment_is_not_acknowledged, .init = setup, .fini = teardown)
{
    const char *const extra[] = {"--durable-timeout-ms", "10000", NULL};
    struct it_server *s = start_rc("1", extra);
    struct it_conn *c = it_conn_new(it_port(s)), *c2 = it_conn_new(it_port(s));
    struct it_resp *r = malloc(sizeof(*r));
    cr_assert_not_null(r);
    char out[256];
    cr_assert_eq(it_pg_sql(pg_dir, "ALTER TABLE rc_incr_keys ADD CONSTRAINT no_bad CHECK (k <> 'bad')",
                           out, sizeof(out)), 0, "%s", out);
    req(s, c, "POST", "/api/v1/increment", "Idempotency-Key: bad\r\n", NULL, r);
    cr_assert_eq(r->status, 503, "%d %s", r->status, r->body);
    cr_assert(strstr(r->body, "\"outcome\":\"not_committed\""), "%s", r->body);
    long long rej = 0; /* written by the next flush */
    for (uint64_t end = it_now_ms() + 5000; it_now_ms() < end && !rej; usleep(20000))
        rej = db("SELECT count(*) FROM rc_rejected WHERE kind = 'keyed_increment'");
    cr_assert_eq(rej, 1);
    cr_assert_eq(db("SELECT count(*) FROM rc_incr_keys WHERE k = 'bad'"), 0);
    req(s, c2, "POST", "/api/v1/increment", "Idempotency-Key: good\r\n", NULL, r);
    long long v = count_of(r);
    cr_assert_eq(db(SQL_COUNTER), v, "the good key counted, the bad one did not");
    it_conn_free(c);
    it_conn_free(c2);
    cr_assert_eq(it_stop(s), 0);
    it_free(s);
    free(r);
}

/* ------------------------------------------------------------------ tenant counters (SPEC §2.3) */

#define ADM "X-API-Key: " ADMIN_KEY "\r\n"

/* req() that must answer want; the JSON string field key (if any) into out. */
static void must(struct it_server *srv, struct it_conn *c, const char *method, const char *path,
                 const char *hdrs, const char *body, int want, const char *key, char *out,
                 size_t cap, struct it_resp *r)
{
    req(srv, c, method, path, hdrs, body, r);
    cr_assert_eq(r->status, want, "%s %s -> %d %s", method, path, r->status, r->body);
    if (key)
        cr_assert_gt(it_json_num(r->body, key, out, cap), 0, "no %s in %s", key, r->body);
}

/* A new tenant labelled label and one counter of it, through srv: their ids into tid, cid
   (64 bytes each). */
static void tenant_and_counter(struct it_server *srv, struct it_conn *c, const char *label,
                               char *tid, char *cid, struct it_resp *r)
{
    char p[200], body[300];
    snprintf(body, sizeof(body), "{\"label\":\"%s\"}", label);
    must(srv, c, "POST", "/tenants", ADM, body, 201, "tenant_id", tid, 64, r);
    snprintf(p, sizeof(p), "/tenants/%s/counters", tid);
    must(srv, c, "POST", p, ADM, "{}", 201, "counter_id", cid, 64, r);
}

/* An Idempotency-Key on a tenant increment is decided by PostgreSQL: a replay on another node
   returns the first result and counts nothing, and the key with another delta is refused
   there too (before, each node kept its own records and the replay counted again). */
Test(durable, tenant_idempotency_key_on_any_node, .init = setup, .fini = teardown)
{
    const char *const extra[] = {"--sync-ms", "100", NULL};
    struct it_server *a = start_rc("1", extra), *b = start_rc("2", extra);
    struct it_conn *ca = it_conn_new(it_port(a)), *cb = it_conn_new(it_port(b));
    struct it_resp *r = malloc(sizeof(*r));
    cr_assert_not_null(r);
    char tid[64], cid[64], p[200], v[32];
    tenant_and_counter(a, ca, "shop", tid, cid, r);
    snprintf(p, sizeof(p), "/tenants/%s/counters/%s/inc?delta=3", tid, cid);
    must(a, ca, "POST", p, NULL, NULL, 200, NULL, NULL, 0, r); /* 3, unkeyed */
    must(a, ca, "POST", p, "Idempotency-Key: pay-1\r\n", NULL, 200, "value", v, sizeof(v), r);
    cr_assert_eq(strtoll(v, NULL, 10), 6, "the keyed answer includes the earlier increment");
    must(b, cb, "POST", p, "Idempotency-Key: pay-1\r\n", NULL, 200, "value", v, sizeof(v), r);
    cr_assert_eq(strtoll(v, NULL, 10), 6, "a replay on another node: the first result");
    must(a, ca, "POST", p, "Idempotency-Key: pay-1\r\n", NULL, 200, "value", v, sizeof(v), r);
    cr_assert_eq(strtoll(v, NULL, 10), 6, "a replay on the same node");
    snprintf(p, sizeof(p), "/tenants/%s/counters/%s/inc?delta=2", tid, cid);
    must(b, cb, "POST", p, "Idempotency-Key: pay-1\r\n", NULL, 409, NULL, NULL, 0, r);
    cr_assert(strstr(r->body, "IDEMPOTENCY_KEY_REUSED"), "%s", r->body);
    char sql[200];
    snprintf(sql, sizeof(sql), "SELECT value FROM rc_tenant_counters WHERE id = '%s'", cid);
    cr_assert_eq(db(sql), 6, "the replays counted nothing");
    cr_assert_eq(db("SELECT count(*) FROM rc_idempotency WHERE key = 'pay-1'"), 1);
    it_conn_free(ca);
    it_conn_free(cb);
    cr_assert_eq(it_stop(a), 0);
    cr_assert_eq(it_stop(b), 0);
    it_free(a);
    it_free(b);
    free(r);
}

/* A tenant write answered 503 during an outage is never made later: the persister drops what
   waited past --durable-timeout-ms instead of sending it once the database is back (before, a
   create the client saw fail appeared after the outage). */
Test(durable, tenant_write_refused_in_an_outage_never_appears, .init = setup, .fini = teardown)
{
    const char *const extra[] = {"--durable-timeout-ms", "800", NULL};
    struct it_server *s = start_rc("1", extra);
    struct it_conn *c = it_conn_new(it_port(s));
    struct it_resp *r = malloc(sizeof(*r));
    cr_assert_not_null(r);
    char tid[64], p[200];
    must(s, c, "POST", "/tenants", ADM, "{\"label\":\"before\"}", 201, "tenant_id", tid,
         sizeof(tid), r);
    cr_assert_eq(it_pg_ctl_mode(pg_dir, "stop", "immediate"), 0);
    uint64_t t0 = it_now_ms();
    must(s, c, "POST", "/tenants", ADM, "{\"label\":\"late\"}", 503, NULL, NULL, 0, r);
    cr_assert_leq(it_now_ms() - t0, 800 + 1000, "503 within --durable-timeout-ms");
    cr_assert(strstr(r->body, "PERSISTENCE_UNAVAILABLE"), "%s", r->body);
    snprintf(p, sizeof(p), "/tenants/%s/counters", tid);
    must(s, c, "POST", p, ADM, "{\"label\":\"late\"}", 503, NULL, NULL, 0, r);
    /* a listing is read from the database: 503 too, saying nothing may have been changed */
    must(s, c, "GET", p, ADM, NULL, 503, NULL, NULL, 0, r);
    cr_assert(strstr(r->body, "did not answer the read in time"), "%s", r->body);
    cr_assert_eq(it_pg_ctl(pg_dir, "start"), 0);
    bool back = false;
    for (uint64_t end = it_now_ms() + 20000; !back && it_now_ms() < end; usleep(100000)) {
        req(s, c, "POST", "/tenants", ADM, "{\"label\":\"after\"}", r);
        back = r->status == 201;
    }
    cr_assert(back, "no create after the outage: %d %s", r->status, r->body);
    usleep(300 * 1000); /* anything still queued would have been sent by now */
    cr_assert_eq(db("SELECT count(*) FROM rc_tenants WHERE label = 'late'"), 0);
    cr_assert_eq(db("SELECT count(*) FROM rc_tenant_counters WHERE label = 'late'"), 0);
    cr_assert_eq(db("SELECT count(*) FROM rc_tenants"), 2);
    it_conn_free(c);
    cr_assert_eq(it_stop(s), 0);
    it_free(s);
    free(r);
}

/* Σ "delta" of a history answer, and how many points it has. */
static long long history_sum(const char *body, int *npoints)
{
    long long sum = 0;
    *npoints = 0;
    for (const char *p = strstr(body, "\"delta\":"); p; p = strstr(p + 1, "\"delta\":")) {
        sum += strtoll(p + 8, NULL, 10);
        (*npoints)++;
    }
    return sum;
}

/* Issue 12: each bucket kind's deltas add up to the increments made (flushed, keyed, and across
   minute, hour and day boundaries of a settable clock, not sleeps), per bucket as expected,
   and they are still there after a restart. */
Test(durable, tenant_history_across_buckets_and_a_restart, .init = setup, .fini = teardown)
{
    char clk[200];
    snprintf(clk, sizeof(clk), "%s/clock", pg_dir);
    const long long t0 = 1800000000000LL; /* 2027-01-15T08:00:00Z */
    it_set_clock(clk, t0);
    snprintf(env_extra, sizeof(env_extra), "RINGCOUNT_DEBUG_CLOCK_FILE=%s", clk);
    struct it_server *s = start_rc("1", NULL);
    struct it_conn *c = it_conn_new(it_port(s));
    struct it_resp *r = malloc(sizeof(*r));
    cr_assert_not_null(r);
    char tid[64], cid[64], p[512], inc[256];
    tenant_and_counter(s, c, "hist", tid, cid, r);
    snprintf(inc, sizeof(inc), "/tenants/%s/counters/%s/inc?delta=", tid, cid);
    /* minute 08:00: 3 x 2; 08:01: 5 and a keyed 7 (made in the database); the next day
       09:00: 1 */
    for (int i = 0; i < 3; i++) {
        snprintf(p, sizeof(p), "%s2", inc);
        must(s, c, "POST", p, NULL, NULL, 200, NULL, NULL, 0, r);
    }
    /* flushed under the first minute (polled: after a fixed sleep on a loaded machine they
       could still be pending, and would go with the next minute's keyed 7) */
    char q[200];
    snprintf(q, sizeof(q), "SELECT value FROM rc_tenant_counters WHERE id = '%s'", cid);
    cr_assert_eq(it_pg_wait_i64(pg_dir, q, 6, 10000), 6, "3 x 2 not flushed within 10 s");
    it_set_clock(clk, t0 + 65000);
    snprintf(p, sizeof(p), "%s5", inc);
    must(s, c, "POST", p, NULL, NULL, 200, NULL, NULL, 0, r);
    snprintf(p, sizeof(p), "%s7", inc);
    must(s, c, "POST", p, "Idempotency-Key: h-7\r\n", NULL, 200, NULL, NULL, 0, r);
    must(s, c, "POST", p, "Idempotency-Key: h-7\r\n", NULL, 200, NULL, NULL, 0, r); /* replay */
    usleep(100 * 1000);
    it_set_clock(clk, t0 + 90000000LL); /* 2027-01-16T09:00:00Z */
    snprintf(p, sizeof(p), "%s1", inc);
    must(s, c, "POST", p, NULL, NULL, 200, NULL, NULL, 0, r);
    static const struct {
        const char *bucket;
        int points;
    } want[] = {{"minute", 3}, {"hour", 2}, {"day", 2}};
    for (int round = 0; round < 2; round++) {
        for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
            snprintf(p, sizeof(p),
                     "/tenants/%s/counters/%s/history?bucket=%s&from=2027-01-15T00:00:00Z"
                     "&to=2027-01-16T12:00:00Z",
                     tid, cid, want[i].bucket);
            if (strcmp(want[i].bucket, "minute") == 0) /* at most 1440 minutes: two windows */
                snprintf(p, sizeof(p),
                         "/tenants/%s/counters/%s/history?bucket=minute&from=2027-01-15T08:00:00Z"
                         "&to=2027-01-15T09:00:00Z",
                         tid, cid);
            must(s, c, "GET", p, ADM, NULL, 200, NULL, NULL, 0, r);
            int np;
            long long sum = history_sum(r->body, &np);
            long long expect = strcmp(want[i].bucket, "minute") == 0 ? 18 : 19;
            cr_assert_eq(sum, expect, "%s: %s", want[i].bucket, r->body);
            cr_assert_eq(np, want[i].points - (strcmp(want[i].bucket, "minute") == 0),
                         "%s: %s", want[i].bucket, r->body);
        }
        snprintf(p, sizeof(p), "/tenants/%s/counters/%s/history?bucket=minute"
                 "&from=2027-01-15T08:00:00Z&to=2027-01-15T08:02:00Z", tid, cid);
        must(s, c, "GET", p, ADM, NULL, 200, NULL, NULL, 0, r);
        cr_assert(strstr(r->body, "{\"t\":\"2027-01-15T08:00:00.000Z\",\"delta\":6}") &&
                  strstr(r->body, "{\"t\":\"2027-01-15T08:01:00.000Z\",\"delta\":12}"), "%s",
                  r->body);
        if (round == 0) { /* the same after a restart */
            it_conn_free(c);
            cr_assert_eq(it_stop(s), 0);
            it_free(s);
            s = start_rc("1", NULL);
            c = it_conn_new(it_port(s));
        }
    }
    /* errors: no such counter, bad bucket, bad time, too many buckets, admin only */
    snprintf(p, sizeof(p), "/tenants/%s/counters/%s/history?bucket=week", tid, cid);
    must(s, c, "GET", p, ADM, NULL, 400, NULL, NULL, 0, r);
    cr_assert(strstr(r->body, "INVALID_BUCKET"), "%s", r->body);
    snprintf(p, sizeof(p), "/tenants/%s/counters/%s/history?from=yesterday", tid, cid);
    must(s, c, "GET", p, ADM, NULL, 400, NULL, NULL, 0, r);
    snprintf(p, sizeof(p), "/tenants/%s/counters/%s/history?bucket=minute"
             "&from=2027-01-01T00:00:00Z&to=2027-01-16T00:00:00Z", tid, cid);
    must(s, c, "GET", p, ADM, NULL, 400, NULL, NULL, 0, r);
    cr_assert(strstr(r->body, "INVALID_RANGE"), "%s", r->body);
    snprintf(p, sizeof(p), "/tenants/%s/counters/%s/history", tid, "00000000-0000-4000-8000-000000000000");
    must(s, c, "GET", p, ADM, NULL, 404, NULL, NULL, 0, r);
    snprintf(p, sizeof(p), "/tenants/%s/counters/%s/history", tid, cid);
    must(s, c, "GET", p, NULL, NULL, 401, NULL, NULL, 0, r);
    env_extra[0] = 0;
    it_conn_free(c);
    cr_assert_eq(it_stop(s), 0);
    it_free(s);
    free(r);
}

/* A counter id asked for under another tenant's path is 404, also through a cache-miss lookup
   (which once answered 200 with the other tenant's counter). */
Test(durable, tenant_counter_of_another_tenant_is_404, .init = setup, .fini = teardown)
{
    struct it_server *s = start_rc("1", NULL);
    struct it_conn *c = it_conn_new(it_port(s));
    struct it_resp *r = malloc(sizeof(*r));
    cr_assert_not_null(r);
    char ta[64], tb[64], cb[64], p[300];
    must(s, c, "POST", "/tenants", ADM, "{\"label\":\"a\"}", 201, "tenant_id", ta, sizeof(ta), r);
    must(s, c, "POST", "/tenants", ADM, "{\"label\":\"b\"}", 201, "tenant_id", tb, sizeof(tb), r);
    snprintf(p, sizeof(p), "/tenants/%s/counters", tb);
    must(s, c, "POST", p, ADM, "{\"label\":\"secret\"}", 201, "counter_id", cb, sizeof(cb), r);
    for (int i = 0; i < 2; i++) { /* the second time from the 1 s lookup cache */
        snprintf(p, sizeof(p), "/tenants/%s/counters/%s", ta, cb);
        must(s, c, "GET", p, NULL, NULL, 404, NULL, NULL, 0, r);
        cr_assert(!strstr(r->body, "secret"), "%s", r->body);
        snprintf(p, sizeof(p), "/tenants/%s/counters/%s/inc", ta, cb);
        must(s, c, "POST", p, NULL, NULL, 404, NULL, NULL, 0, r);
    }
    snprintf(p, sizeof(p), "/tenants/%s/counters/%s", tb, cb);
    must(s, c, "GET", p, NULL, NULL, 200, NULL, NULL, 0, r);
    it_conn_free(c);
    cr_assert_eq(it_stop(s), 0);
    it_free(s);
    free(r);
}
