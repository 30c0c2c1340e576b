/* Integration tests of SIGHUP (SPEC §5), as nginx users expect of `systemctl reload`: the
   server re-reads --config-file and --admin-key-file and applies what can change live (rate
   limit, CORS origins, admin key, log level) on the connections it already has, logs each
   change, refuses what cannot change live with a line naming it, refuses a bad file as a whole,
   reopens a log file that was rotated, and tells systemd RELOADING=1 ... READY=1. Before this,
   SIGHUP's default action ended the server without a log line. */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"

TestSuite(reload, .timeout = 60);

#define KEY "reload-test-admin-key"

/* ------------------------------------------------------------------ helpers */

static void write_file(const char *path, const char *content)
{
    /* write a new file and rename it over the old one, as an editor or config manager does */
    char tmp[300];
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    cr_assert_not_null(f, "%s: %s", tmp, strerror(errno));
    cr_assert_eq(fputs(content, f) >= 0, 1);
    cr_assert_eq(fclose(f), 0);
    cr_assert_eq(rename(tmp, path), 0, "rename %s: %s", path, strerror(errno));
}

static char logbuf[1 << 20];

/* Occurrences of needle in the server's output so far. */
static int log_count(struct it_server *srv, const char *needle)
{
    it_log_copy(srv, logbuf, sizeof(logbuf));
    int n = 0;
    for (const char *p = logbuf; (p = strstr(p, needle)); p += strlen(needle))
        n++;
    return n;
}

/* Wait until needle has appeared at least n times. */
static bool log_wait_count(struct it_server *srv, const char *needle, int n, int timeout_ms)
{
    for (uint64_t end = it_now_ms() + (uint64_t)timeout_ms;; usleep(10000)) {
        if (log_count(srv, needle) >= n)
            return true;
        if (it_now_ms() > end)
            return false;
    }
}

/* SIGHUP and wait for the reload's closing line (the n-th "reloaded" or "reload refused"). */
static void hup_and_wait(struct it_server *srv, int nth)
{
    cr_assert_eq(kill(it_pid(srv), SIGHUP), 0);
    for (uint64_t end = it_now_ms() + 5000;; usleep(10000)) {
        int done = log_count(srv, "\"msg\":\"reloaded\"") + log_count(srv, "\"msg\":\"reload refused");
        if (done >= nth)
            return;
        cr_assert(it_now_ms() < end, "reload %d not finished in 5 s; log:\n%s", nth, logbuf);
    }
}

static void request(struct it_conn *c, const char *raw, struct it_resp *r, int want_status)
{
    int rc = it_request(c, raw, r);
    cr_assert_eq(rc, 0, "request failed: %s\n%s", strerror(-rc), raw);
    if (want_status)
        cr_assert_eq(r->status, want_status, "%d %s\nfor %s", r->status, r->body, raw);
}

/* Value of "key":"..." in a JSON body. */
static void json_str(const char *body, const char *key, char *out, size_t cap)
{
    cr_assert_gt(it_json_num(body, key, out, cap), 0, "no %s in %s", key, body);
}

static long long metric(struct it_conn *c, const char *series)
{
    static struct it_resp r;
    request(c, "GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n", &r, 200);
    return it_metric_sample(r.body, series);
}

static char *tmp_path(const char *name)
{
    static char paths[4][128];
    static int k;
    char *p = paths[k++ % 4];
    snprintf(p, 128, "/tmp/rc-reload-%d-%s", (int)getpid(), name);
    return p;
}

/* ------------------------------------------------------------------ rate limit */

#define NCONN 8

Test(reload, sighup_changes_the_rate_limit_and_keeps_every_connection)
{
    char *conf = tmp_path("rate.conf");
    write_file(conf, "# live settings\nRINGCOUNT_RATE_LIMIT=1/3\n");
    const char *const args[] = {"--workers", "2", "--config-file", conf, NULL};
    const char *const env[] = {"RINGCOUNT_ADMIN_KEY=" KEY, NULL};
    struct it_server *srv = it_start(args, env);
    uint16_t port = it_port(srv);
    static struct it_resp r;

    /* a tenant counter to increment (its inc route is public, so rate-limited) */
    struct it_conn *adm = it_conn_new(port);
    request(adm, "POST /tenants HTTP/1.1\r\nHost: t\r\nX-API-Key: " KEY "\r\n"
                 "Content-Length: 13\r\n\r\n{\"label\":\"r\"}", &r, 201);
    char tid[64], cid[64], req[512];
    json_str(r.body, "tenant_id", tid, sizeof(tid));
    snprintf(req, sizeof(req), "POST /tenants/%s/counters HTTP/1.1\r\nHost: t\r\nX-API-Key: " KEY
             "\r\nContent-Length: 0\r\n\r\n", tid);
    request(adm, req, &r, 201);
    json_str(r.body, "counter_id", cid, sizeof(cid));
    snprintf(req, sizeof(req),
             "POST /tenants/%s/counters/%s/inc HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n",
             tid, cid);

    /* 8 keep-alive connections (spread over both workers by SO_REUSEPORT): 4 increments each
       against a burst of 3 per worker refill 1/s, so most of the 32 are refused */
    struct it_conn *c[NCONN];
    for (int i = 0; i < NCONN; i++)
        c[i] = it_conn_new(port);
    int refused = 0;
    char v[128];
    for (int k = 0; k < 4; k++) {
        for (int i = 0; i < NCONN; i++) {
            request(c[i], req, &r, 0);
            cr_assert(r.status == 200 || r.status == 429, "%d %s", r.status, r.body);
            refused += r.status == 429;
            cr_assert_gt(it_header(&r, "RateLimit-Policy", v, sizeof(v)), 0);
            cr_expect_str_eq(v, "\"default\";q=3;w=3");
        }
    }
    cr_expect_geq(refused, 32 - 2 * 3 - 2 * 3, "only %d of 32 refused at 1/s burst 3", refused);
    struct it_conn *scrape = it_conn_new(port);
    long long accepted = metric(scrape, "ringcount_connections_accepted_total");
    cr_assert_geq(accepted, NCONN + 2);

    /* the operator raises the limit and reloads */
    write_file(conf, "# live settings\nRINGCOUNT_RATE_LIMIT=1000/5000\n");
    hup_and_wait(srv, 1);
    cr_expect(log_count(srv, "\"msg\":\"setting changed\",\"setting\":\"--rate-limit\","
                             "\"env\":\"RINGCOUNT_RATE_LIMIT\",\"from\":\"1/3\",\"to\":\"1000/5000\"") == 1,
              "no change line; log:\n%s", logbuf);
    cr_expect(log_wait_count(srv, "\"msg\":\"reloaded\",\"changed\":1,\"generation\":2", 1, 100));

    /* every connection is still the same one and now gets the new policy: no 429 */
    for (int k = 0; k < 5; k++) {
        for (int i = 0; i < NCONN; i++) {
            request(c[i], req, &r, 200);
            cr_assert_gt(it_header(&r, "RateLimit-Policy", v, sizeof(v)), 0);
            cr_expect_str_eq(v, "\"default\";q=5000;w=5", "connection %d", i);
        }
    }
    cr_expect_eq(metric(scrape, "ringcount_connections_accepted_total"), accepted,
                 "a connection was re-established");
    cr_expect_eq(metric(scrape, "ringcount_connections_open"), NCONN + 2);
    /* the server is the same process and still serves */
    cr_expect_eq(kill(it_pid(srv), 0), 0);

    /* turning it off: no RateLimit fields any more, on the same connections */
    write_file(conf, "RINGCOUNT_RATE_LIMIT=0\n");
    hup_and_wait(srv, 2);
    for (int i = 0; i < NCONN; i++) {
        request(c[i], req, &r, 200);
        cr_expect_eq(it_header(&r, "RateLimit-Policy", v, sizeof(v)), -ENOENT);
    }
    /* and on again with a small burst: the kept tables start limiting again */
    write_file(conf, "RINGCOUNT_RATE_LIMIT=1/1\n");
    hup_and_wait(srv, 3);
    refused = 0;
    for (int k = 0; k < 3; k++)
        for (int i = 0; i < NCONN; i++) {
            request(c[i], req, &r, 0);
            refused += r.status == 429;
        }
    cr_expect_geq(refused, 24 - 2 * 1 - 2 * 2, "only %d of 24 refused at 1/1", refused);

    for (int i = 0; i < NCONN; i++)
        it_conn_free(c[i]);
    it_conn_free(scrape);
    it_conn_free(adm);
    cr_assert_eq(it_stop(srv), 0);
    it_free(srv);
    unlink(conf);
}

/* ------------------------------------------------------------------ refusals */

Test(reload, what_cannot_change_live_is_refused_by_name_and_a_bad_file_changes_nothing)
{
    char *conf = tmp_path("refuse.conf");
    write_file(conf, "RINGCOUNT_MAX_CONNECTIONS=1000\nRINGCOUNT_RATE_LIMIT=10/20\n");
    const char *const args[] = {"--config-file", conf, NULL};
    struct it_server *srv = it_start(args, NULL);
    struct it_conn *c = it_conn_new(it_port(srv));
    static struct it_resp r;

    /* one start-up-only and one live change in the same reload: the live one applies */
    write_file(conf, "RINGCOUNT_MAX_CONNECTIONS=2000\nRINGCOUNT_RATE_LIMIT=10/30\n");
    hup_and_wait(srv, 1);
    cr_expect_eq(log_count(srv, "\"msg\":\"setting cannot change while running: restart to "
                                "apply it\",\"setting\":\"--max-connections\",\"env\":"
                                "\"RINGCOUNT_MAX_CONNECTIONS\",\"running\":\"1000\","
                                "\"wanted\":\"2000\""), 1, "log:\n%s", logbuf);
    cr_expect_eq(log_count(srv, "\"setting\":\"--rate-limit\""), 1, "log:\n%s", logbuf);
    cr_expect_eq(log_count(srv, "\"level\":\"warn\",\"msg\":\"setting cannot change"), 1);

    /* a bad value refuses the whole file: nothing changes, the server keeps running */
    write_file(conf, "RINGCOUNT_RATE_LIMIT=5/5\nRINGCOUNT_LOG_LEVEL=loud\n");
    hup_and_wait(srv, 2);
    cr_expect_eq(log_count(srv, "\"level\":\"error\",\"msg\":\"reload refused: the new "
                                "configuration is invalid; nothing changed\""), 1, "%s", logbuf);
    cr_expect_eq(log_count(srv, "RINGCOUNT_LOG_LEVEL"), 1, "the line names the setting: %s", logbuf);
    cr_expect_eq(log_count(srv, "\"to\":\"5/5\""), 0, "applied from a refused file");
    /* a file that is gone: refused the same way */
    unlink(conf);
    hup_and_wait(srv, 3);
    cr_expect_eq(log_count(srv, "reload refused"), 2);
    cr_expect_eq(log_count(srv, "cannot read --config-file"), 1, "%s", logbuf);
    /* so an unknown name (a typo) */
    write_file(conf, "RINGCOUNT_RATE_LIMT=1/1\n");
    hup_and_wait(srv, 4);
    cr_expect_eq(log_count(srv, "unknown setting \\\"RINGCOUNT_RATE_LIMT\\\""), 1, "%s", logbuf);

    /* what runs is still 10/30 */
    request(c, "OPTIONS /tenants/00000000-0000-4000-8000-000000000000/counters/"
               "00000000-0000-4000-8000-000000000000/inc HTTP/1.1\r\nHost: t\r\n\r\n", &r, 204);
    char v[128];
    cr_assert_gt(it_header(&r, "RateLimit-Policy", v, sizeof(v)), 0);
    cr_expect_str_eq(v, "\"default\";q=30;w=3");
    it_conn_free(c);
    cr_assert_eq(it_stop(srv), 0);
    it_free(srv);
    unlink(conf);
}

/* ------------------------------------------------------------------ admin key, CORS, log level */

Test(reload, sighup_rereads_the_admin_key_file_cors_origins_and_log_level)
{
    char *conf = tmp_path("live.conf"), *keyf = tmp_path("admin-key");
    write_file(keyf, "first-key\n");
    write_file(conf, "RINGCOUNT_CORS_ORIGINS=http://a.example\n");
    const char *const args[] = {"--config-file", conf, "--admin-key-file", keyf, NULL};
    struct it_server *srv = it_start(args, NULL);
    struct it_conn *c = it_conn_new(it_port(srv));
    static struct it_resp r;
    char v[256];
#define RESET(k) "POST /reset HTTP/1.1\r\nHost: t\r\nX-API-Key: " k "\r\nContent-Length: 0\r\n\r\n"
#define PREFLIGHT(o) "OPTIONS /event HTTP/1.1\r\nHost: t\r\nOrigin: " o "\r\n" \
                     "Access-Control-Request-Method: POST\r\n\r\n"
    request(c, RESET("first-key"), &r, 200);
    request(c, RESET("second-key"), &r, 403);
    request(c, PREFLIGHT("http://a.example"), &r, 204);
    cr_expect_gt(it_header(&r, "Access-Control-Allow-Origin", v, sizeof(v)), 0);
    request(c, PREFLIGHT("http://b.example"), &r, 204);
    cr_expect_eq(it_header(&r, "Access-Control-Allow-Origin", v, sizeof(v)), -ENOENT);

    /* key rotated, origin list changed, logs turned down to errors only */
    write_file(keyf, "second-key\n");
    write_file(conf, "RINGCOUNT_CORS_ORIGINS=http://b.example\nRINGCOUNT_LOG_LEVEL=error\n");
    hup_and_wait(srv, 1);
    /* each change is logged (before the quieter level applies), the key never shown */
    cr_expect_eq(log_count(srv, "\"setting\":\"--admin-key-file\",\"env\":"
                                "\"RINGCOUNT_ADMIN_KEY_FILE\",\"from\":\"(set)\",\"to\":\"(changed)\""),
                 1, "%s", logbuf);
    cr_expect_eq(log_count(srv, "\"from\":\"http://a.example\",\"to\":\"http://b.example\""), 1);
    cr_expect_eq(log_count(srv, "\"from\":\"info\",\"to\":\"error\""), 1);
    cr_expect_eq(log_count(srv, "first-key") + log_count(srv, "second-key"), 0, "key leaked");
    request(c, RESET("first-key"), &r, 403);
    request(c, RESET("second-key"), &r, 200);
    request(c, PREFLIGHT("http://b.example"), &r, 204);
    cr_expect_gt(it_header(&r, "Access-Control-Allow-Origin", v, sizeof(v)), 0);
    cr_expect_str_eq(v, "http://b.example");
    request(c, PREFLIGHT("http://a.example"), &r, 204);
    cr_expect_eq(it_header(&r, "Access-Control-Allow-Origin", v, sizeof(v)), -ENOENT);

    /* at level error a refused (warn) change is silent, a refused file (error) is not */
    int warns = log_count(srv, "\"level\":\"warn\"");
    write_file(conf, "RINGCOUNT_CORS_ORIGINS=http://b.example\nRINGCOUNT_LOG_LEVEL=error\n"
                     "RINGCOUNT_IDLE_TIMEOUT_MS=1234\n");
    cr_assert_eq(kill(it_pid(srv), SIGHUP), 0);
    write_file(keyf, "\n"); /* an empty key file is invalid */
    usleep(300000);
    cr_assert_eq(kill(it_pid(srv), SIGHUP), 0);
    cr_assert(log_wait_count(srv, "reload refused", 1, 5000), "%s", logbuf);
    cr_expect_eq(log_count(srv, "\"level\":\"warn\""), warns, "warn lines at level error");
    cr_expect_eq(log_count(srv, "\"level\":\"info\",\"msg\":\"reloaded\""), 1);
    request(c, RESET("second-key"), &r, 200); /* the refused reload kept the key */

    /* back to info: the change line is written (the more verbose level applies first) */
    write_file(keyf, "second-key\n");
    write_file(conf, "RINGCOUNT_CORS_ORIGINS=*\n");
    cr_assert_eq(kill(it_pid(srv), SIGHUP), 0);
    cr_assert(log_wait_count(srv, "\"from\":\"error\",\"to\":\"info\"", 1, 5000), "%s", logbuf);
    cr_assert(log_wait_count(srv, "\"msg\":\"reloaded\"", 2, 5000), "%s", logbuf);
    request(c, PREFLIGHT("http://c.example"), &r, 204);
    cr_expect_gt(it_header(&r, "Access-Control-Allow-Origin", v, sizeof(v)), 0);
    cr_expect_str_eq(v, "*");
    it_conn_free(c);
    cr_assert_eq(it_stop(srv), 0);
    it_free(srv);
    unlink(conf);
    unlink(keyf);
}

/* ------------------------------------------------------------------ log file, systemd */

static bool file_has(const char *path, const char *needle, int timeout_ms)
{
    static char buf[65536];
    for (uint64_t end = it_now_ms() + (uint64_t)timeout_ms;; usleep(10000)) {
        FILE *f = fopen(path, "r");
        if (f) {
            size_t n = fread(buf, 1, sizeof(buf) - 1, f);
            buf[n] = 0;
            fclose(f);
            if (strstr(buf, needle))
                return true;
        }
        if (it_now_ms() > end)
            return false;
    }
}

/* `ringcount 2>>file` under logrotate (create mode): the file is renamed, SIGHUP, and the
   server writes to a new file at the same path. */
Test(reload, sighup_reopens_a_rotated_log_file)
{
    char *logf = tmp_path("server.log"), old[160];
    snprintf(old, sizeof(old), "%s.1", logf);
    unlink(logf);
    unlink(old);
    const char *bin = getenv("RINGCOUNT_BIN");
    bin = bin && bin[0] ? bin : "build/ringcount";
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        int fd = open(logf, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
        int nul = open("/dev/null", O_WRONLY | O_CLOEXEC);
        if (fd < 0 || nul < 0 || dup2(fd, 2) < 0 || dup2(nul, 1) < 0)
            _exit(126);
        execl(bin, bin, "--listen", "127.0.0.1:0", "--workers", "1", (char *)NULL);
        _exit(127);
    }
    bool up = file_has(logf, "\"msg\":\"listening\"", 5000);
    if (!up)
        kill(pid, SIGKILL);
    cr_assert(up, "server did not start (log %s)", logf);
    cr_assert_eq(rename(logf, old), 0);
    cr_assert_eq(kill(pid, SIGHUP), 0);
    cr_expect(file_has(logf, "\"msg\":\"log file reopened\"", 5000), "no new %s", logf);
    cr_expect(file_has(logf, "\"msg\":\"reloaded\"", 5000));
    cr_expect(file_has(old, "\"msg\":\"SIGHUP: reloading\"", 100), "the old file got the first line");
    cr_assert_eq(kill(pid, SIGTERM), 0);
    int st = 0;
    cr_assert_eq(waitpid(pid, &st, 0), pid);
    cr_expect(WIFEXITED(st) && WEXITSTATUS(st) == 0, "exit status %d", st);
    cr_expect(file_has(logf, "\"msg\":\"stopped\"", 100), "later lines go to the new file");
    unlink(logf);
    unlink(old);
}

Test(reload, systemd_hears_reloading_then_ready)
{
    char path[108];
    snprintf(path, sizeof(path), "/tmp/rc-reload-notify-%d.sock", (int)getpid());
    unlink(path);
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    cr_assert_geq(fd, 0);
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    strcpy(a.sun_path, path);
    cr_assert_eq(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    char env_sock[160];
    snprintf(env_sock, sizeof(env_sock), "NOTIFY_SOCKET=%s", path);
    const char *const env[] = {env_sock, NULL};
    struct it_server *srv = it_start(NULL, env);
    static char all[8192];
    size_t used = 0;
    bool sent = false;
    for (uint64_t end = it_now_ms() + 5000; it_now_ms() < end;) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, 100) == 1) {
            ssize_t n = recv(fd, all + used, sizeof(all) - used - 2, 0);
            if (n > 0) {
                used += (size_t)n;
                all[used++] = '|';
                all[used] = 0;
            }
        }
        if (!sent && strstr(all, "READY=1")) {
            cr_assert_eq(kill(it_pid(srv), SIGHUP), 0);
            sent = true;
        }
        const char *rl = strstr(all, "RELOADING=1\nMONOTONIC_USEC=");
        if (rl && strstr(rl, "READY=1"))
            break;
    }
    const char *rl = strstr(all, "RELOADING=1\nMONOTONIC_USEC=");
    cr_expect_not_null(rl, "no RELOADING=1; got: %s", all);
    cr_expect(rl && strstr(rl, "READY=1"), "no READY=1 after RELOADING=1; got: %s", all);
    cr_assert_eq(it_stop(srv), 0);
    it_free(srv);
    close(fd);
    unlink(path);
}
