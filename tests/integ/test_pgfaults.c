/* PostgreSQL fault tests (SPEC §4): ringcount talks to a private PostgreSQL 15 cluster through an
   in-process TCP proxy (tests/integ/proxy.c), under the mixed load of tests/integ/load.c
   (durable and fast increments, events with new userIds, tenant increments), while one fault is
   injected and then cleared:
     a  a transient SQL error on every flush (a NOT VALID CHECK on the ledger, 1.5 s)
     b  ringcount's backend stopped with SIGSTOP for 20 s
     c  the proxy black-holed for 30 s (a dead link: no data, no FIN, no RST)
     d  an ACCESS EXCLUSIVE lock on rc_counters held 15 s
     e  ringcount's backends terminated every 200 ms for 10 s
     f  pg_ctl restart -m immediate twice, 3 s apart
     g  kill -9 of ringcount x5 under load, restarted on the same database
     h  SIGTERM with the database unreachable: a spill file, replayed by the next start
     i  a corrupt spill file: the server refuses to start and leaves the file alone
   After each fault (a-f): a durable increment answers 200 within 3 s of clearing (no stall),
   /readyz answered 503 at least once during the fault (where the flush lag went over
   --ready-max-lag-ms) and 200 within 3 s after it, every client connection survived with no
   unexpected answer, and the oracle holds: every acknowledged increment, event, user and
   tenant increment is in the database, and nothing beyond what was attempted.

   Server flags of every test: --workers 2 --flush-ms 10 --durable-timeout-ms 2000
   --db-timeout-ms 1000 --ready-max-lag-ms 1000, a private --spill-dir, --rate-limit 0 and an
   admin key (tenant creation). Each test (Criterion forks one process per test) has its own
   cluster (it_pg_start_tcp: fsync=off, see harness.h), proxy and spill dir, removed in .fini
   even after a failed assertion. */
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"
#include "load.h"
#include "proxy.h"
#include "spill.h" /* j and k write spill files of their own (write_spill) */

/* The longest test (c) is ~45 s; the bound leaves room for a failing one's 15 s waits so its
   message is printed instead of a timeout. */
TestSuite(pgfaults, .timeout = 90);

#define KEY "pgfaults-admin-key"
#define DURABLE_TIMEOUT_MS 2000
#define READY_MAX_LAG_MS 1000
/* SPEC: a durable request gets its 503 after --durable-timeout-ms; 1.5 s of scheduling slack */
#define DURABLE_MAX_MS 3500
/* After clearing a fault: a durable 200 and a ready /readyz within this. */
#define RECOVER_MS 3000
/* The fast paths persist asynchronously: the oracle polls its lower bounds this long. */
#define ORACLE_WAIT_MS 15000
/* The lag a fault must have shown (largest lastFlushAgeMs seen by the poller) before a missing
   /readyz 503 is a failure where the 503 is conditional (a, e, f): --ready-max-lag-ms plus 3 poll
   intervals, so the 503 was due for several polls. */
#define LAG_REQUIRES_503_MS (READY_MAX_LAG_MS + 300)
/* kill -9 (g): what was acknowledged before a snapshot is in the database once two flushes
   committed after it (it_wait_flushed; test_durability.c checks the --flush-ms cadence). A
   flush not committed by then is a failure. */
#define FLUSHED_WAIT_MS 10000
#define KILL_ROUNDS 5
/* The spill file of node 1 (src/spill.h). */
#define SPILL_NAME "ringcount-node-1.spill"

/* ------------------------------------------------------------------ per-test fixture */

static char pg_dir[128];
static uint16_t pg_port;
static struct it_proxy *proxy;
static char spill_dir[128];
static char spill_dir2[128];
static pid_t stopped[16];   /* backends under SIGSTOP: continued by .fini whatever happens */
static char clock_env[300]; /* RINGCOUNT_DEBUG_CLOCK_FILE=... for a test that sets the clock */
static int nstopped;

static void rm_rf(const char *dir)
{
    if (!dir[0])
        return;
    char cmd[300];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "cannot remove %s\n", dir);
}

static void teardown(void)
{
    for (int i = 0; i < nstopped; i++)
        kill(stopped[i], SIGCONT);
    nstopped = 0;
    it_proxy_stop(proxy);
    proxy = NULL;
    it_pg_destroy(pg_dir);
    pg_dir[0] = 0;
    rm_rf(spill_dir);
    rm_rf(spill_dir2);
    spill_dir[0] = spill_dir2[0] = clock_env[0] = 0;
}

static void make_spill_dir(char *dir, size_t cap)
{
    snprintf(dir, cap, "/tmp/rc-spill-XXXXXX");
    cr_assert_not_null(mkdtemp(dir), "mkdtemp: %s", strerror(errno));
}

static void setup(void)
{
    char err[512];
    cr_assert_eq(it_pg_start_tcp(pg_dir, sizeof(pg_dir), "rc-pgf", &pg_port, err, sizeof(err)), 0,
                 "%s", err);
    int rc = it_proxy_start(pg_port, &proxy);
    cr_assert_eq(rc, 0, "proxy: %s", strerror(-rc));
    make_spill_dir(spill_dir, sizeof(spill_dir));
}

/* ------------------------------------------------------------------ helpers */

/* Fail with a formatted message and the server's log tail (srv may be NULL). */
__attribute__((format(printf, 2, 3), noreturn)) static void failf(struct it_server *srv,
                                                                  const char *fmt, ...)
{
    static char msg[4096], log[8192];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    log[0] = 0;
    if (srv)
        it_log_copy(srv, log, sizeof(log));
    cr_assert_fail("%s\nserver log tail:\n%s", msg, log);
    abort(); /* not reached */
}

static void sleep_ms(unsigned ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

/* Run sql on the cluster (not through the proxy); asserts it worked; the answer in out. */
static void sql_ok(struct it_server *srv, const char *sql, char *out, size_t cap)
{
    char buf[1024];
    if (!out) {
        out = buf;
        cap = sizeof(buf);
    }
    if (it_pg_sql(pg_dir, sql, out, cap) < 0)
        failf(srv, "%s: %s", sql, out);
}

static long long sql_i64(struct it_server *srv, const char *sql)
{
    char out[1024];
    sql_ok(srv, sql, out, sizeof(out));
    return out[0] ? strtoll(out, NULL, 10) : 0;
}

#define SQL_RC_BACKENDS "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'ringcount%'"

/* ringcount with the flags of every test (extra: more flag pairs, NULL-terminated). */
static struct it_server *start_server_in(const char *spill, const char *const *extra)
{
    static char ci[200];
    snprintf(ci, sizeof(ci), "host=127.0.0.1 port=%u dbname=ringcount user=postgres",
             it_proxy_port(proxy));
    const char *args[40] = {"--db", ci, "--workers", "2", "--flush-ms", "10",
                            "--durable-timeout-ms", "2000", "--db-timeout-ms", "1000",
                            "--ready-max-lag-ms", "1000", "--spill-dir", spill,
                            "--rate-limit", "0"};
    size_t n = 16;
    for (size_t i = 0; extra && extra[i] && n < 38; i++)
        args[n++] = extra[i];
    args[n] = NULL;
    const char *const env[] = {"RINGCOUNT_ADMIN_KEY=" KEY, clock_env[0] ? clock_env : NULL, NULL};
    return it_start(args, env);
}

static struct it_server *start_server(const char *const *extra)
{
    return start_server_in(spill_dir, extra);
}

/* The names in dir, space-separated, into out (for messages). Returns out. */
static const char *list_dir(const char *dir, char *out, size_t cap)
{
    size_t o = 0;
    out[0] = 0;
    DIR *d = opendir(dir);
    if (!d) {
        snprintf(out, cap, "(cannot open: %s)", strerror(errno));
        return out;
    }
    struct dirent *e;
    while ((e = readdir(d)) && o + 2 < cap) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        int n = snprintf(out + o, cap - o, "%s%s", o ? " " : "", e->d_name);
        if (n < 0)
            break;
        o += (size_t)n;
    }
    closedir(d);
    if (!out[0])
        snprintf(out, cap, "(empty)");
    return out;
}

/* ------------------------------------------------------------------ one run under load */

struct run {
    struct it_server *srv;
    struct it_load *load;
    struct it_ready_poll *poll;
    struct it_oracle_base base;
    struct it_load_totals probes;  /* the no-stall probes' durable increments */
    char tid[64], cid[64];
    uint64_t t_fault, t_clear;
    struct it_ready_stats during;  /* the poller over the fault */
    long long durable_ms, ready_ms; /* after clearing: first durable 200, first ready /readyz */
};

/* Create the tenant counter the load increments, and wait (5 s) for PostgreSQL to have it. */
static void make_tenant(struct run *R)
{
    char err[512], label[64], sql[256];
    snprintf(label, sizeof(label), "pgf-%d", (int)getpid());
    if (it_load_make_tenant(it_port(R->srv), KEY, label, R->tid, R->cid, err, sizeof(err)) < 0)
        failf(R->srv, "creating the tenant counter: %s", err);
    snprintf(sql, sizeof(sql), "SELECT count(*) FROM rc_tenant_counters WHERE id = '%s'", R->cid);
    uint64_t end = it_now_ms() + 5000;
    while (sql_i64(R->srv, sql) != 1)
        if (it_now_ms() > end)
            failf(R->srv, "tenant counter %s not in PostgreSQL after 5 s", R->cid);
        else
            sleep_ms(50);
}

static void load_start(struct run *R, unsigned user_base)
{
    struct it_load_cfg cfg;
    it_load_cfg_default(&cfg, it_port(R->srv), R->tid, R->cid);
    cfg.user_base = user_base;
    int rc = it_load_start(&cfg, &R->load);
    cr_assert_eq(rc, 0, "load: %s", strerror(-rc));
}

/* Every kind was acknowledged at least once: the system works before the fault. */
static void assert_all_kinds_acked(struct run *R, const char *when)
{
    static const char *const name[IT_LOAD_NKINDS] = {"durable", "fast", "event", "tenant"};
    for (int k = 0; k < IT_LOAD_NKINDS; k++)
        if (it_load_acked(R->load, (enum it_load_kind)k) == 0) {
            struct it_load_totals t;
            char d[1500];
            it_load_snapshot(R->load, &t);
            it_load_describe(&t, d, sizeof(d));
            failf(R->srv, "%s: no %s request acknowledged: %s", when, name[k], d);
        }
}

/* Server, tenant, load, poller; 1 s of load before the fault. */
static void run_begin(struct run *R, const char *const *extra)
{
    memset(R, 0, sizeof(*R));
    R->srv = start_server(extra);
    make_tenant(R);
    char err[512];
    if (!it_oracle_read(pg_dir, R->cid, &R->base, err, sizeof(err)))
        failf(R->srv, "%s", err);
    load_start(R, 0);
    int rc = it_ready_poll_start(it_port(R->srv), 100, &R->poll);
    cr_assert_eq(rc, 0, "poller: %s", strerror(-rc));
    sleep_ms(1000);
    assert_all_kinds_acked(R, "before the fault");
}

static void fault_begin(struct run *R)
{
    R->t_fault = it_now_ms();
    it_ready_poll_reset(R->poll);
    it_load_lat_window(R->load, R->t_fault, UINT64_MAX);
}

/* The fault is cleared: close the latency window, keep the poller's fault-phase figures, then
   require a durable 200 and a ready /readyz within RECOVER_MS. need503: /readyz must have
   answered 503 during the fault; else only if the lag seen went over LAG_REQUIRES_503_MS. */
static void fault_cleared(struct run *R, bool need503, const char *what)
{
    R->t_clear = it_now_ms();
    it_load_lat_close(R->load, R->t_clear);
    it_ready_poll_get(R->poll, &R->during);
    it_ready_poll_reset(R->poll);

    char why[512];
    long long ms = it_load_durable_ok(it_port(R->srv), RECOVER_MS, &R->probes, why, sizeof(why));
    if (ms < 0)
        failf(R->srv, "%s: stall: no durable increment answered 200 within %d ms of clearing the "
              "fault; last: %s", what, RECOVER_MS, why);

    const struct it_ready_stats *s = &R->during;
    if (s->n503 == 0 && (need503 || s->max_flush_age_ms > LAG_REQUIRES_503_MS))
        failf(R->srv, "%s: /readyz never answered 503 during the %llu ms fault (200: %ld, other: "
              "%ld, failed: %ld; largest lastFlushAgeMs seen: %lld, --ready-max-lag-ms %d)",
              what, (unsigned long long)(R->t_clear - R->t_fault), s->n200, s->nother, s->nerr,
              s->max_flush_age_ms, READY_MAX_LAG_MS);

    struct it_ready_stats now;
    it_ready_poll_get(R->poll, &now);
    uint64_t ready_at = now.first200_ms;
    if (!ready_at) {
        uint64_t left_end = R->t_clear + RECOVER_MS, t = it_now_ms();
        if (t < left_end && it_load_ready_ok(it_port(R->srv), (int)(left_end - t), why,
                                             sizeof(why)) >= 0)
            ready_at = it_now_ms();
        else if (!why[0])
            snprintf(why, sizeof(why), "(no time left)");
    }
    if (!ready_at || ready_at > R->t_clear + RECOVER_MS)
        failf(R->srv, "%s: /readyz not 200 within %d ms of clearing the fault (%s)", what,
              RECOVER_MS, ready_at ? "later" : why);
    R->durable_ms = ms;
    R->ready_ms = ready_at > R->t_clear ? (long long)(ready_at - R->t_clear) : 0;
}

/* No client lost its connection or got an answer outside the contract. */
static void assert_clean(struct run *R, const struct it_load_totals *t, const char *what)
{
    for (int k = 0; k < IT_LOAD_NKINDS; k++)
        if (t->k[k].other || t->k[k].conn_errors || t->k[k].connect_errors ||
            t->k[k].not_ready) {
            char d[1500];
            it_load_describe(t, d, sizeof(d));
            failf(R->srv, "%s: a client saw an unexpected answer or lost its connection: %s", what,
                  d);
        }
}

/* Stop the load and the poller, check the clients and the oracle, SIGTERM the server (exit 0).
   max_durable_ms >= 0: also assert the longest durable request over the fault. */
static void run_end(struct run *R, const char *what, long long max_durable_ms)
{
    static struct it_load_totals t;
    it_load_stop(R->load, &t); /* requests in flight end here: their latency counts too */
    R->load = NULL;
    it_ready_poll_stop(R->poll);
    R->poll = NULL;
    long long lat = t.lat_max[IT_LOAD_DURABLE];
    assert_clean(R, &t, what);
    it_load_totals_add(&t, &R->probes);
    it_load_oracle(pg_dir, R->cid, &R->base, &t, &t, ORACLE_WAIT_MS, R->srv, what);
    int st = it_stop(R->srv);
    if (st != 0)
        failf(R->srv, "%s: SIGTERM after the fault: exit status %d", what, st);
    char d[1500];
    it_load_describe(&t, d, sizeof(d));
    cr_log_info("%s: fault %llu ms; /readyz during it: 200 x%ld, 503 x%ld, failed x%ld; largest "
                "lastFlushAgeMs %lld; after clearing: durable 200 in %lld ms, /readyz 200 in "
                "%lld ms; longest durable request %lld ms; %s",
                what, (unsigned long long)(R->t_clear - R->t_fault), R->during.n200,
                R->during.n503, R->during.nerr, R->during.max_flush_age_ms, R->durable_ms,
                R->ready_ms, lat, d);
    if (max_durable_ms >= 0 && lat > max_durable_ms)
        failf(R->srv, "%s: a durable request took %lld ms during the fault (> %lld: "
              "--durable-timeout-ms %d plus slack)", what, lat, max_durable_ms,
              DURABLE_TIMEOUT_MS);
    it_free(R->srv);
    R->srv = NULL;
}

/* persistence.flushes / flushErrors of GET /stats. */
static long long stats_num(struct it_server *srv, const char *key)
{
    struct it_conn *c = it_conn_new(it_port(srv));
    struct it_resp *r = malloc(sizeof(*r));
    cr_assert_not_null(r);
    int rc = it_load_call(c, "GET", "/stats", NULL, NULL, r, 5000);
    if (rc < 0 || r->status != 200)
        failf(srv, "GET /stats: %s %d", strerror(-rc), rc < 0 ? 0 : r->status);
    const char *pers = strstr(r->body, "\"persistence\"");
    char num[32];
    if (!pers || it_json_num(pers, key, num, sizeof(num)) <= 0)
        failf(srv, "GET /stats: no persistence.%s in %s", key, r->body);
    long long v = strtoll(num, NULL, 10);
    free(r);
    it_conn_free(c);
    return v;
}

/* ------------------------------------------------------------------ a-f: faults under load */

/* a: every flush fails for 1.5 s (a CHECK no ledger row can pass), then the constraint is
   dropped. The flushes must resume (persistence.flushes grows after the drop) and nothing
   acknowledged may be lost; /readyz must have gone 503 only if the lag went over 1 s. */
Test(pgfaults, a_transient_sql_error, .init = setup, .fini = teardown)
{
    struct run R;
    run_begin(&R, NULL);
    long long errs0 = stats_num(R.srv, "flushErrors");
    fault_begin(&R);
    sql_ok(R.srv, "ALTER TABLE rc_flush_ledger ADD CONSTRAINT tmp CHECK (flush_seq < 0) NOT VALID",
           NULL, 0);
    sleep_ms(1500);
    sql_ok(R.srv, "ALTER TABLE rc_flush_ledger DROP CONSTRAINT tmp", NULL, 0);
    long long errs1 = stats_num(R.srv, "flushErrors");
    if (errs1 <= errs0)
        failf(R.srv, "the fault did not take: flushErrors %lld before, %lld after 1.5 s of a "
              "CHECK every ledger row fails", errs0, errs1);
    fault_cleared(&R, false, "a: transient SQL error");
    long long f1 = stats_num(R.srv, "flushes");
    sleep_ms(1000);
    long long f2 = stats_num(R.srv, "flushes");
    if (f2 <= f1)
        failf(R.srv, "a: flushing did not resume after the constraint was dropped: flushes %lld "
              "then %lld 1 s later", f1, f2);
    run_end(&R, "a: transient SQL error", DURABLE_MAX_MS);
}

/* b: ringcount's PostgreSQL backend(s) stopped with SIGSTOP for 20 s (a hung server: the socket
   stays open, nothing answers): durable requests get their 503 within --durable-timeout-ms
   (+1.5 s), /readyz goes 503, and after SIGCONT everything recovers. */
Test(pgfaults, b_backend_sigstop, .init = setup, .fini = teardown)
{
    struct run R;
    run_begin(&R, NULL);
    char pids[256];
    sql_ok(R.srv, "SELECT string_agg(pid::text, ' ') FROM pg_stat_activity "
                  "WHERE application_name LIKE 'ringcount%'", pids, sizeof(pids));
    if (!pids[0])
        failf(R.srv, "b: no ringcount backend in pg_stat_activity");
    fault_begin(&R);
    for (char *p = pids, *e; *p && nstopped < 16; p = e) {
        long v = strtol(p, &e, 10);
        if (e == p)
            break;
        if (v > 0 && kill((pid_t)v, SIGSTOP) == 0)
            stopped[nstopped++] = (pid_t)v;
    }
    if (nstopped == 0)
        failf(R.srv, "b: could not SIGSTOP any of %s", pids);
    sleep_ms(20000);
    for (int i = 0; i < nstopped; i++)
        kill(stopped[i], SIGCONT);
    nstopped = 0;
    fault_cleared(&R, true, "b: backend SIGSTOP 20 s");
    run_end(&R, "b: backend SIGSTOP 20 s", DURABLE_MAX_MS);
}

/* c: the link to PostgreSQL black-holed for 30 s (every packet dropped, connections accepted
   and never answered), then restored (the held connections are reset). */
Test(pgfaults, c_blackhole, .init = setup, .fini = teardown)
{
    struct run R;
    run_begin(&R, NULL);
    fault_begin(&R);
    it_proxy_set_mode(proxy, IT_PROXY_BLACKHOLE);
    sleep_ms(30000);
    it_proxy_set_mode(proxy, IT_PROXY_PASS);
    fault_cleared(&R, true, "c: black hole 30 s");
    run_end(&R, "c: black hole 30 s", DURABLE_MAX_MS);
}

struct locker {
    pthread_t th;
    int rc;
    char out[512];
};

static void *lock_main(void *arg)
{
    struct locker *lk = arg;
    lk->rc = it_pg_sql(pg_dir, "BEGIN; LOCK TABLE rc_counters IN ACCESS EXCLUSIVE MODE; "
                               "SELECT pg_sleep(15); COMMIT",
                       lk->out, sizeof(lk->out));
    return NULL;
}

/* d: an ACCESS EXCLUSIVE lock on rc_counters held 15 s by another session: every flush blocks.
   The server must give up on blocked exchanges (--db-timeout-ms) without leaving its backends
   queued on the lock: at most 3 ringcount backends, during the fault and after. */
Test(pgfaults, d_exclusive_lock, .init = setup, .fini = teardown)
{
    struct run R;
    run_begin(&R, NULL);
    struct locker lk = {.rc = 0};
    fault_begin(&R);
    cr_assert_eq(pthread_create(&lk.th, NULL, lock_main, &lk), 0);
    long long max_backends = 0, granted = 0;
    uint64_t end = R.t_fault + 15000;
    while (it_now_ms() < end) {
        sleep_ms(500);
        long long n = sql_i64(R.srv, SQL_RC_BACKENDS);
        if (n > max_backends)
            max_backends = n;
        if (!granted)
            granted = sql_i64(R.srv, "SELECT count(*) FROM pg_locks WHERE relation = "
                                     "'rc_counters'::regclass AND mode = 'AccessExclusiveLock' "
                                     "AND granted");
    }
    pthread_join(lk.th, NULL);
    if (lk.rc != 0)
        failf(R.srv, "d: the locking session failed: %s", lk.out);
    if (!granted)
        failf(R.srv, "d: the fault did not take: the ACCESS EXCLUSIVE lock was never granted");
    fault_cleared(&R, true, "d: ACCESS EXCLUSIVE lock 15 s");
    long long after = sql_i64(R.srv, SQL_RC_BACKENDS);
    if (after > 3 || max_backends > 3)
        failf(R.srv, "d: orphaned backends: %lld ringcount backends after the lock (at most %lld "
              "while it was held); at most 3 expected", after, max_backends);
    run_end(&R, "d: ACCESS EXCLUSIVE lock 15 s", DURABLE_MAX_MS);
}

/* e: every ringcount backend terminated (pg_terminate_backend) every 200 ms for 10 s. */
Test(pgfaults, e_terminate_backends, .init = setup, .fini = teardown)
{
    struct run R;
    run_begin(&R, NULL);
    fault_begin(&R);
    long long killed = 0;
    for (int i = 0; i < 50; i++) {
        uint64_t tick = R.t_fault + (uint64_t)i * 200;
        uint64_t now = it_now_ms();
        if (now < tick)
            sleep_ms((unsigned)(tick - now));
        killed += sql_i64(R.srv, "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                                 "WHERE application_name LIKE 'ringcount%'");
    }
    uint64_t now = it_now_ms();
    if (now < R.t_fault + 10000)
        sleep_ms((unsigned)(R.t_fault + 10000 - now));
    if (killed == 0)
        failf(R.srv, "e: the fault did not take: no ringcount backend was ever terminated");
    fault_cleared(&R, false, "e: backends terminated every 200 ms");
    cr_log_info("e: %lld backends terminated", killed);
    run_end(&R, "e: backends terminated every 200 ms", DURABLE_MAX_MS);
}

/* f: PostgreSQL crashed and restarted (pg_ctl restart -m immediate) twice, 3 s apart. */
Test(pgfaults, f_restart_immediate_twice, .init = setup, .fini = teardown)
{
    struct run R;
    run_begin(&R, NULL);
    fault_begin(&R);
    if (it_pg_ctl_mode(pg_dir, "restart", "immediate") != 0)
        failf(R.srv, "f: first pg_ctl restart -m immediate failed: see %s/start.err", pg_dir);
    sleep_ms(3000);
    if (it_pg_ctl_mode(pg_dir, "restart", "immediate") != 0)
        failf(R.srv, "f: second pg_ctl restart -m immediate failed: see %s/start.err", pg_dir);
    fault_cleared(&R, false, "f: restart -m immediate x2");
    run_end(&R, "f: restart -m immediate x2", DURABLE_MAX_MS);
}

/* ------------------------------------------------------------------ g: kill -9 loop */

/* KILL_ROUNDS x (load 300-700 ms, snapshot, two flushes committed, kill -9, restart on the same
   database). With the totals of every round so far (lower bounds: durable from the final
   counts, the fast kinds from the snapshots; upper bounds: everything attempted), the oracle
   holds after each restart: no acknowledged durable increment is ever lost, nor any fast
   increment, event, user or tenant increment acknowledged before the snapshot. */
Test(pgfaults, g_kill9_loop, .init = setup, .fini = teardown)
{
    unsigned seed = (unsigned)time(NULL) ^ (unsigned)getpid();
    struct run R;
    memset(&R, 0, sizeof(R));
    R.srv = start_server(NULL);
    make_tenant(&R);
    char err[512];
    if (!it_oracle_read(pg_dir, R.cid, &R.base, err, sizeof(err)))
        failf(R.srv, "%s", err);
    static struct it_load_totals lo, hi;
    memset(&lo, 0, sizeof(lo));
    memset(&hi, 0, sizeof(hi));
    for (int round = 0; round < KILL_ROUNDS; round++) {
        load_start(&R, (unsigned)round * 10000u);
        sleep_ms(300 + (unsigned)rand_r(&seed) % 400);
        static struct it_load_totals snap, fin;
        it_load_snapshot(R.load, &snap);
        long long waited = it_wait_flushed(it_port(R.srv), FLUSHED_WAIT_MS);
        int st = it_signal_wait(R.srv, SIGKILL, 2000);
        it_load_stop(R.load, &fin);
        R.load = NULL;
        if (waited < 0)
            failf(R.srv, "g: round %d: no two flushes committed within %d ms of the snapshot: %s",
                  round, FLUSHED_WAIT_MS, strerror((int)-waited));
        if (st != 128 + SIGKILL)
            failf(R.srv, "g: round %d: kill -9 gave status %d", round, st);
        for (int k = 0; k < IT_LOAD_NKINDS; k++)
            if (fin.k[k].other || fin.k[k].not_ready) {
                char d[1500];
                it_load_describe(&fin, d, sizeof(d));
                failf(R.srv, "g: round %d (seed %u): unexpected answer: %s", round, seed, d);
            }
        if (fin.k[IT_LOAD_DURABLE].acked == 0 || snap.k[IT_LOAD_FAST].acked == 0)
            failf(R.srv, "g: round %d: the load was not acknowledged before the kill", round);
        /* lower bounds: every durable 200, the rest as of the snapshot */
        snap.k[IT_LOAD_DURABLE] = fin.k[IT_LOAD_DURABLE];
        snap.max_count = fin.max_count;
        it_load_totals_add(&lo, &snap);
        it_load_totals_add(&hi, &fin);
        it_free(R.srv);

        R.srv = start_server(NULL);
        memset(&R.probes, 0, sizeof(R.probes));
        char why[512];
        if (it_load_durable_ok(it_port(R.srv), RECOVER_MS, &R.probes, why, sizeof(why)) < 0)
            failf(R.srv, "g: round %d: no durable 200 within %d ms of the restart: %s", round,
                  RECOVER_MS, why);
        it_load_totals_add(&lo, &R.probes);
        it_load_totals_add(&hi, &R.probes);
        if (it_load_ready_ok(it_port(R.srv), RECOVER_MS, why, sizeof(why)) < 0)
            failf(R.srv, "g: round %d: /readyz not 200 within %d ms of the restart: %s", round,
                  RECOVER_MS, why);
        char what[64];
        snprintf(what, sizeof(what), "g: after kill -9 round %d (seed %u)", round, seed);
        it_load_oracle(pg_dir, R.cid, &R.base, &lo, &hi, 5000, R.srv, what);
    }
    int st = it_stop(R.srv);
    if (st != 0)
        failf(R.srv, "g: SIGTERM at the end: exit status %d", st);
    it_free(R.srv);
    char d[1500];
    it_load_describe(&hi, d, sizeof(d));
    cr_log_info("g: %d kill -9 rounds: %s", KILL_ROUNDS, d);
}

/* ------------------------------------------------------------------ h, i: spill files */

#define SHUTDOWN_TIMEOUT_MS 3000
static const char *const SHUTDOWN_FLAGS[] = {"--shutdown-timeout-ms", "3000", NULL};

/* Make the database unreachable (new connections refused, established ones reset), SIGTERM the
   server and require an exit (status 0 or 1) within --shutdown-timeout-ms + 2 s. */
static void sigterm_db_down(struct it_server *srv, const char *what)
{
    it_proxy_set_mode(proxy, IT_PROXY_REFUSE);
    it_proxy_reset_all(proxy);
    sleep_ms(1500); /* deltas pile up; durable requests get 503 */
    uint64_t t0 = it_now_ms();
    int st = it_signal_wait(srv, SIGTERM, SHUTDOWN_TIMEOUT_MS + 2000);
    uint64_t took = it_now_ms() - t0;
    if (st == -ETIMEDOUT)
        failf(srv, "%s: still running %llu ms after SIGTERM with the database down "
              "(--shutdown-timeout-ms %d)", what, (unsigned long long)took, SHUTDOWN_TIMEOUT_MS);
    if (st < 0 || st > 1)
        failf(srv, "%s: SIGTERM with the database down: exit status %d after %llu ms", what, st,
              (unsigned long long)took);
    cr_log_info("%s: exit %d %llu ms after SIGTERM", what, st, (unsigned long long)took);
}

/* h: SIGTERM while PostgreSQL is unreachable: the server exits within --shutdown-timeout-ms +
   2 s leaving a spill file; once the database is back, a restart with the same --spill-dir puts
   every acknowledged increment, event, user and tenant increment in the database (strict: none
   lost) and removes the spill file. The history clock stands at H_MINUTE until the restart,
   two days later: the replayed tenant increments are in the minute they were counted in. */
#define H_MINUTE 1800000000000LL /* 2027-01-15T08:00:00Z */
Test(pgfaults, h_sigterm_db_down_spill, .init = setup, .fini = teardown)
{
    char clk[200];
    snprintf(clk, sizeof(clk), "%s/clock", spill_dir);
    it_set_clock(clk, H_MINUTE + 30000);
    snprintf(clock_env, sizeof(clock_env), "RINGCOUNT_DEBUG_CLOCK_FILE=%s", clk);
    struct run R;
    run_begin(&R, SHUTDOWN_FLAGS);
    sigterm_db_down(R.srv, "h");
    static struct it_load_totals t;
    it_load_stop(R.load, &t);
    R.load = NULL;
    it_ready_poll_stop(R.poll);
    R.poll = NULL;
    for (int k = 0; k < IT_LOAD_NKINDS; k++)
        if (t.k[k].other) {
            char d[1500];
            it_load_describe(&t, d, sizeof(d));
            failf(R.srv, "h: unexpected answer: %s", d);
        }
    char spill[300], ls[600];
    snprintf(spill, sizeof(spill), "%s/" SPILL_NAME, spill_dir);
    struct stat sst;
    if (stat(spill, &sst) < 0 || !S_ISREG(sst.st_mode))
        failf(R.srv, "h: no spill file %s after SIGTERM with the database down (%s in the dir: %s)",
              spill, strerror(errno), list_dir(spill_dir, ls, sizeof(ls)));
    cr_log_info("h: spill file %s, %lld bytes", spill, (long long)sst.st_size);
    it_free(R.srv);

    it_proxy_set_mode(proxy, IT_PROXY_PASS);
    it_set_clock(clk, H_MINUTE + 2 * 86400000LL);
    R.srv = start_server(NULL);
    /* strict: everything acknowledged before the SIGTERM */
    it_load_oracle(pg_dir, R.cid, &R.base, &t, &t, ORACLE_WAIT_MS, R.srv,
                   "h: after the restart with the spill file");
    uint64_t end = it_now_ms() + RECOVER_MS;
    while (access(spill, F_OK) == 0 && it_now_ms() < end)
        sleep_ms(50);
    if (access(spill, F_OK) == 0)
        failf(R.srv, "h: the spill file %s is still there after its replay (dir: %s)", spill,
              list_dir(spill_dir, ls, sizeof(ls)));
    /* the replayed tenant increments are in the counter's history too: its minutes add up to
       its value (it was created at 0 and only incremented) */
    char q[400];
    snprintf(q, sizeof(q), "SELECT (SELECT value FROM rc_tenant_counters WHERE id = '%s') -"
             " (SELECT coalesce(sum(delta), 0) FROM rc_tn_history WHERE counter_id = '%s')",
             R.cid, R.cid);
    long long gap = sql_i64(R.srv, q);
    if (gap != 0)
        failf(R.srv, "h: the counter's value is %lld more than its history after the replay", gap);
    snprintf(q, sizeof(q), "SELECT count(*) FILTER (WHERE t <> to_timestamp(%lld)) || ' of ' ||"
             " count(*) FROM rc_tn_history WHERE counter_id = '%s'", H_MINUTE / 1000, R.cid);
    char rows[64];
    sql_ok(R.srv, q, rows, sizeof(rows));
    if (strncmp(rows, "0 of ", 5) != 0 || strcmp(rows, "0 of 0") == 0)
        failf(R.srv, "h: %s history rows of the counter are outside the minute its increments "
              "were counted in (the replay's minute instead?)", rows);
    int st = it_stop(R.srv);
    if (st != 0)
        failf(R.srv, "h: SIGTERM after the replay: exit status %d", st);
    it_free(R.srv);
}

/* ringcount with the spill file in spill_dir2 must refuse to start: a non-zero exit within
   10 s and a log line naming the file. Its exit status; its output into out. */
static int refused_start(const char *what, char *out, size_t cap)
{
    char ci[200];
    snprintf(ci, sizeof(ci), "host=127.0.0.1 port=%u dbname=ringcount user=postgres",
             it_proxy_port(proxy));
    const char *args[] = {"--listen", "127.0.0.1:0", "--db", ci, "--workers", "2",
                          "--flush-ms", "10", "--durable-timeout-ms", "2000",
                          "--db-timeout-ms", "1000", "--ready-max-lag-ms", "1000",
                          "--spill-dir", spill_dir2, "--rate-limit", "0", NULL};
    int st = it_run(args, NULL, 10000, out, cap);
    cr_assert_neq(st, -ETIMEDOUT, "%s: ringcount started (ran 10 s) with the spill file in %s:\n%s",
                  what, spill_dir2, out);
    cr_assert_neq(st, 0, "%s: ringcount exited 0 with the spill file in %s:\n%s", what,
                  spill_dir2, out);
    cr_assert(strstr(out, SPILL_NAME), "%s: no log line names the spill file in %s:\n%s", what,
              spill_dir2, out);
    return st;
}

/* i: a spill file of garbage under the name the server writes (spill.h: <dir>/ringcount-node-
   <node_id>.spill; node 1): ringcount refuses to start (non-zero exit, a log line naming the
   file) and leaves the file exactly as it was. */
Test(pgfaults, i_corrupt_spill_refused, .init = setup, .fini = teardown)
{
    make_spill_dir(spill_dir2, sizeof(spill_dir2));
    char path[512];
    snprintf(path, sizeof(path), "%s/" SPILL_NAME, spill_dir2);
    static char junk[4096];
    unsigned s = 12345;
    for (size_t k = 0; k < sizeof(junk); k++)
        junk[k] = (char)(rand_r(&s) & 0xff);
    memcpy(junk, "this is not a spill file\n", 25);
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0600);
    cr_assert_geq(fd, 0, "create %s: %s", path, strerror(errno));
    cr_assert_eq(write(fd, junk, sizeof(junk)), (ssize_t)sizeof(junk));
    close(fd);

    static char out[16384];
    int st = refused_start("i", out, sizeof(out));
    static char back[sizeof(junk) + 1];
    fd = open(path, O_RDONLY);
    cr_assert_geq(fd, 0, "i: the corrupt spill file %s is gone: %s\n%s", path, strerror(errno),
                  out);
    ssize_t n = read(fd, back, sizeof(back));
    close(fd);
    cr_assert(n == (ssize_t)sizeof(junk) && memcmp(back, junk, sizeof(junk)) == 0,
              "i: the corrupt spill file %s was changed (%zd bytes now)\n%s", path, n, out);
    cr_log_info("i: refused with status %d", st);
}

/* A spill file of one record in spill_dir2 (made here), payload version ver: the global
   counter delta "5", the tenant deltas jd, and (version 2) the history minute hm. Its path
   into path. */
static void write_spill(int ver, const char *jd, const char *hm, char *path, size_t cap)
{
    /* version, node, incarnation, records; a record: seq, reset, the global delta, events,
       sum, users, tenants, counters, tenant deltas, idempotency records, keys (, minute) */
    const char *fields[] = {"", "", "", "", "", jd, "", "", hm};
    size_t nf = ver >= 2 ? 9 : 8;
    struct spill_buf b = {0};
    spill_put_u32(&b, (uint32_t)ver);
    spill_put_u32(&b, 1);
    spill_put_u64(&b, 77);
    spill_put_u32(&b, 1);
    spill_put_bytes(&b, "1", 1);
    spill_put_u8(&b, 0);
    spill_put_bytes(&b, "5", 1);
    for (size_t i = 0; i < nf; i++)
        spill_put_bytes(&b, fields[i], strlen(fields[i]));
    cr_assert_eq(b.err, 0);
    make_spill_dir(spill_dir2, sizeof(spill_dir2));
    int rc = spill_write(spill_dir2, 1, b.p, b.len, path, cap);
    spill_buf_free(&b);
    cr_assert_eq(rc, 0, "spill_write: %s", strerror(-rc));
}

/* j: a spill file of payload version 1 (written before records kept their history minute)
   still replays: its global counter delta and tenant delta land once, the tenant delta's
   history (in the replay's minute) adds up to it, and the file is removed. */
Test(pgfaults, j_version_1_spill_replays, .init = setup, .fini = teardown)
{
    struct run R;
    memset(&R, 0, sizeof(R));
    R.srv = start_server(NULL);
    make_tenant(&R);
    long long c0 = sql_i64(R.srv, "SELECT v FROM rc_counters WHERE k = 'increment'");
    int st = it_stop(R.srv);
    if (st != 0)
        failf(R.srv, "j: SIGTERM: exit status %d", st);
    it_free(R.srv);
    R.srv = NULL;

    char jd[160], path[512];
    snprintf(jd, sizeof(jd), "[{\"id\":\"%s\",\"d\":3}]", R.cid);
    write_spill(1, jd, "", path, sizeof(path));

    R.srv = start_server_in(spill_dir2, NULL);
    if (access(path, F_OK) == 0)
        failf(R.srv, "j: the version 1 spill file %s is still there after the start", path);
    long long c1 = sql_i64(R.srv, "SELECT v FROM rc_counters WHERE k = 'increment'");
    char q[400];
    snprintf(q, sizeof(q), "SELECT (SELECT value FROM rc_tenant_counters WHERE id = '%s') * 1000 +"
             " (SELECT coalesce(sum(delta), 0) FROM rc_tn_history WHERE counter_id = '%s')",
             R.cid, R.cid);
    long long tv = sql_i64(R.srv, q);
    if (c1 != c0 + 5 || tv != 3003)
        failf(R.srv, "j: after the replay the counter is %lld (want %lld + 5) and tenant value "
              "* 1000 + history %lld (want 3003)", c1, c0, tv);
    st = it_stop(R.srv);
    if (st != 0)
        failf(R.srv, "j: SIGTERM after the replay: exit status %d", st);
    it_free(R.srv);
}

/* k: a version 2 record whose history minute is not a number (a crafted or damaged file that
   still passes the CRC) refuses the start like any malformed record, and the file is kept. */
Test(pgfaults, k_malformed_history_minute_refused, .init = setup, .fini = teardown)
{
    char path[512];
    write_spill(2, "", "12x", path, sizeof(path));
    static char out[16384];
    refused_start("k", out, sizeof(out));
    cr_assert_eq(access(path, F_OK), 0, "k: the spill file %s is gone:\n%s", path, out);
}
