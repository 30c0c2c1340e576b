/* Integration tests of the process lifecycle (SPEC §2.4, §4, §5): bad configuration
   exits 2 naming the culprit, --help, SIGTERM drains (idle keep-alive, a half-sent request, a
   request finished during the drain), a port already in use, /health /livez /readyz /metrics. */
#include <criterion/criterion.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"

TestSuite(lifecycle, .timeout = 30);

static void send_ok(struct it_conn *c, const char *s)
{
    int rc = it_send_all(c->fd, s, strlen(s));
    cr_assert_eq(rc, 0, "send: %s", strerror(-rc));
}

/* ------------------------------------------------------------------ configuration */

struct bad_cfg {
    const char *args[4];
    const char *env;    /* NAME=value or NULL */
    const char *needle; /* the message must name this */
};

static const struct bad_cfg bad_cfgs[] = {
    {{"--workers", "abc"}, NULL, "--workers"},
    {{"--workers", "-1"}, NULL, "--workers"},
    {{"--listen", "1.2.3.4:99999"}, NULL, "--listen"},
    {{"--listen", "not-an-address"}, NULL, "--listen"},
    {{"--no-such-flag", "1"}, NULL, "--no-such-flag"},
    {{"--max-body", "0"}, NULL, "--max-body"},
    {{"--buf-count", "3"}, NULL, "--buf-count"},
    {{"--header-timeout-ms", "10s"}, NULL, "--header-timeout-ms"},
    {{"--max-connections"}, NULL, "--max-connections"}, /* missing value */
    {{NULL}, "RINGCOUNT_WORKERS=many", "RINGCOUNT_WORKERS"},
    {{NULL}, "RINGCOUNT_MAX_LINE=10", "RINGCOUNT_MAX_LINE"},
};

Test(lifecycle, bad_configuration_exits_2_naming_it)
{
    static char out[16384];
    for (size_t i = 0; i < sizeof(bad_cfgs) / sizeof(bad_cfgs[0]); i++) {
        const char *env[] = {bad_cfgs[i].env, NULL};
        int rc = it_run(bad_cfgs[i].args, env, 5000, out, sizeof(out));
        cr_expect_eq(rc, 2, "%s %s: exit %d, output:\n%s",
                     bad_cfgs[i].args[0] ? bad_cfgs[i].args[0] : "",
                     bad_cfgs[i].env ? bad_cfgs[i].env : "", rc, out);
        cr_expect_not_null(strstr(out, bad_cfgs[i].needle), "message does not name %s:\n%s",
                           bad_cfgs[i].needle, out);
        cr_expect_null(strstr(out, "\"msg\":\"listening\""), "%s: it started anyway",
                       bad_cfgs[i].needle);
    }
}

Test(lifecycle, help_exits_0_and_lists_flags)
{
    static char out[32768];
    const char *args[] = {"--help", NULL};
    int rc = it_run(args, NULL, 5000, out, sizeof(out));
    cr_expect_eq(rc, 0, "--help exit %d", rc);
    static const char *const flags[] = {"--listen", "--workers", "--max-users",
                                        "--max-connections", "--max-body",
                                        "--header-timeout-ms", "--idle-timeout-ms",
                                        "RINGCOUNT_ADMIN_KEY"};
    for (size_t i = 0; i < sizeof(flags) / sizeof(flags[0]); i++)
        cr_expect_not_null(strstr(out, flags[i]), "--help does not list %s:\n%s", flags[i], out);
    const char *v[] = {"--version", NULL};
    rc = it_run(v, NULL, 5000, out, sizeof(out));
    cr_expect_eq(rc, 0, "--version exit %d", rc);
    cr_expect_not_null(strstr(out, "ringcount"), "--version: %s", out);
}

/* ------------------------------------------------------------------ SIGTERM */

Test(lifecycle, sigterm_with_idle_keepalive_exits_promptly)
{
    const char *args[] = {"--workers", "2", NULL};
    struct it_server *s = it_start(args, NULL);
    struct it_conn *c = it_conn_new(it_port(s));
    static struct it_resp r;
    int rc = it_request(c, "GET /health HTTP/1.1\r\nHost: t\r\n\r\n", &r);
    cr_assert_eq(rc, 0);
    uint64_t t0 = it_now_ms();
    rc = it_signal_wait(s, SIGTERM, 3000);
    uint64_t ms = it_now_ms() - t0;
    cr_expect_eq(rc, 0, "exit status %d (-ETIMEDOUT = %d) after %llu ms", rc, -ETIMEDOUT,
                 (unsigned long long)ms);
    cr_expect_lt(ms, 3000, "drain with one idle keep-alive connection took %llu ms",
                 (unsigned long long)ms);
    cr_expect(it_log_wait(s, "\"msg\":\"stopped\"", 0), "no \"stopped\" log line");
    cr_expect_eq(it_expect_closed(c, 1000), 0, "client connection not closed");
    it_conn_free(c);
    it_free(s);
}

Test(lifecycle, sigterm_with_half_sent_request_exits_within_shutdown_timeout)
{
    const char *args[] = {"--shutdown-timeout-ms", "1000", NULL};
    struct it_server *s = it_start(args, NULL);
    struct it_conn *c = it_conn_new(it_port(s));
    send_ok(c, "POST /event HTTP/1.1\r\nHost: t\r\nContent-Length: 30\r\n\r\n{\"userId\":");
    usleep(50000);
    uint64_t t0 = it_now_ms();
    int rc = it_signal_wait(s, SIGTERM, 4000);
    uint64_t ms = it_now_ms() - t0;
    cr_expect_neq(rc, -ETIMEDOUT, "still running %llu ms after SIGTERM with a 1000 ms shutdown "
                                  "timeout", (unsigned long long)ms);
    cr_expect_eq(rc, 0, "exit status %d", rc);
    /* --shutdown-timeout-ms is what an operator sets to fit systemd's TimeoutStopSec: the
       drain must end by then, by the server's own clock ("stopped" drain_ms: 100 ms for the
       last loop turn and the joins). The exit seen from here adds ASan's leak check and the
       scheduler of a loaded machine, so it only has to happen (3 s). */
    static char log[16384];
    it_log_copy(s, log, sizeof(log));
    const char *st = strstr(log, "\"msg\":\"stopped\"");
    uint64_t drain = 0;
    cr_assert(st && it_json_u64(st, "drain_ms", &drain) == 0, "no \"stopped\" line with drain_ms:\n%s",
              log);
    cr_expect_leq(drain, 1100, "drain took %llu ms with --shutdown-timeout-ms 1000",
                  (unsigned long long)drain);
    cr_expect_lt(ms, 3000, "exit took %llu ms with --shutdown-timeout-ms 1000",
                 (unsigned long long)ms);
    it_conn_free(c);
    it_free(s);
}

/* In-flight requests are finished: a request whose last bytes arrive during the drain is
   answered (with Connection: close), /readyz says 503 meanwhile, and the event is counted. */
Test(lifecycle, sigterm_finishes_in_flight_requests)
{
    struct it_server *s = it_start(NULL, NULL);
    struct it_conn *ev = it_conn_new(it_port(s)), *rd = it_conn_new(it_port(s));
    static struct it_resp r;
    static const char body[] = "{\"userId\":\"late\",\"value\":4}";
    char head[128];
    snprintf(head, sizeof(head), "POST /event HTTP/1.1\r\nHost: t\r\nContent-Length: %zu\r\n\r\n",
             sizeof(body) - 1);
    send_ok(ev, head);
    send_ok(ev, "{\"userId\":");
    send_ok(rd, "GET /readyz HTTP/1.1\r\n");
    usleep(50000);
    kill(it_pid(s), SIGTERM);
    cr_assert(it_log_wait(s, "\"msg\":\"draining\"", 3000), "no \"draining\" log line");
    usleep(50000);
    send_ok(rd, "Host: t\r\n\r\n");
    int rc = it_read_response(rd, &r, 3000);
    cr_expect_eq(rc, 0, "/readyz during the drain: %s", strerror(-rc));
    if (rc == 0) {
        cr_expect_eq(r.status, 503, "/readyz while draining: %d %s", r.status, r.body);
        cr_expect(r.close, "a response during the drain must close the connection");
    }
    send_ok(ev, body + 10);
    rc = it_read_response(ev, &r, 3000);
    cr_expect_eq(rc, 0, "in-flight event not answered during the drain: %s", strerror(-rc));
    if (rc == 0) {
        cr_expect_eq(r.status, 200, "%d %s", r.status, r.body);
        cr_expect(r.close, "a response during the drain must close the connection");
    }
    rc = it_stop(s);
    cr_expect_eq(rc, 0, "exit status %d", rc);
    cr_expect(it_log_wait(s, "\"events\":1", 0), "the stop line does not count the event");
    it_conn_free(ev);
    it_conn_free(rd);
    it_free(s);
}

/* ------------------------------------------------------------------ port in use */

Test(lifecycle, second_server_on_same_port_exits_2)
{
    struct it_server *s = it_start(NULL, NULL);
    char listen[32], port[8];
    snprintf(port, sizeof(port), "%u", it_port(s));
    snprintf(listen, sizeof(listen), "127.0.0.1:%u", it_port(s));
    const char *args[] = {"--listen", listen, NULL};
    static char out[16384];
    /* A second instance must not silently share the port: with SO_REUSEPORT on both, the
       kernel would split the clients between two processes with separate totals. */
    int rc = it_run(args, NULL, 3000, out, sizeof(out));
    cr_expect_eq(rc, 2, "second server on port %s: %s %d, output:\n%s", port,
                 rc == -ETIMEDOUT ? "still running after 3 s (it shares the port), status"
                                  : "exit",
                 rc, out);
    /* the error line itself (not the config dump) names the port and the cause */
    const char *err = strcasestr(out, "in use");
    cr_expect_not_null(err, "no message says the port is in use:\n%s", out);
    if (err) {
        const char *b = err, *e = strchr(err, '\n');
        while (b > out && b[-1] != '\n')
            b--;
        char line[1024];
        snprintf(line, sizeof(line), "%.*s", (int)(e ? e - b : (long)strlen(b)), b);
        cr_expect_not_null(strstr(line, port), "the error line does not name port %s: %s", port,
                           line);
    }
    /* the first one is unharmed */
    struct it_conn *c = it_conn_new(it_port(s));
    static struct it_resp r;
    cr_expect_eq(it_request(c, "GET /health HTTP/1.1\r\nHost: t\r\n\r\n", &r), 0);
    cr_expect_eq(r.status, 200);
    it_conn_free(c);
    cr_expect_eq(it_stop(s), 0);
    it_free(s);
}

/* ------------------------------------------------------------------ probes */

Test(lifecycle, health_livez_readyz_metrics)
{
    const char *args[] = {"--workers", "2", NULL};
    struct it_server *s = it_start(args, NULL);
    struct it_conn *c = it_conn_new(it_port(s));
    static struct it_resp r;
    struct {
        const char *path, *body;
    } probes[] = {
        {"/health", "{\"status\":\"healthy\"}"},
        {"/livez", NULL},
        {"/readyz", NULL},
    };
    for (size_t i = 0; i < sizeof(probes) / sizeof(probes[0]); i++) {
        char req[128], ct[128] = "";
        snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: t\r\n\r\n", probes[i].path);
        int rc = it_request(c, req, &r);
        cr_assert_eq(rc, 0, "%s: %s", probes[i].path, strerror(-rc));
        cr_expect_eq(r.status, 200, "%s: %d %s", probes[i].path, r.status, r.body);
        it_header(&r, "Content-Type", ct, sizeof(ct));
        cr_expect_eq(strncmp(ct, "application/json", 16), 0, "%s Content-Type: %s",
                     probes[i].path, ct);
        char st[32] = "";
        cr_expect_gt(it_json_num(r.body, "status", st, sizeof(st)), 0, "%s: %s", probes[i].path,
                     r.body);
        if (probes[i].body)
            cr_expect_str_eq(r.body, probes[i].body);
    }
    int rc = it_request(c, "GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n", &r);
    cr_assert_eq(rc, 0);
    cr_expect_eq(r.status, 200);
    char ct[128] = "";
    it_header(&r, "Content-Type", ct, sizeof(ct));
    cr_expect_eq(strncmp(ct, "text/plain; version=0.0.4", 25), 0, "/metrics Content-Type: %s", ct);
    cr_expect_not_null(strstr(r.body, "# TYPE "), "/metrics body:\n%s", r.body);
    it_conn_free(c);
    cr_expect_eq(it_stop(s), 0);
    it_free(s);
}

/* --batch-wait-us (kernel min-wait): a lone request is still answered (the wait ends after the
   min wait with what came), pipelined bursts on several connections are all answered in
   order, and the loop keeps serving after the clients went idle (it once spun on -ETIME). */
Test(lifecycle, batch_wait_answers_lone_and_burst_requests)
{
    const char *const args[] = {"--workers", "1", "--batch-wait-us", "500", NULL};
    struct it_server *srv = it_start(args, NULL);
    struct it_conn *c[4];
    struct it_resp r;
    for (int i = 0; i < 4; i++)
        c[i] = it_conn_new(it_port(srv));
    for (int k = 0; k < 20; k++) { /* one at a time: each waits at most the min wait */
        cr_assert_eq(it_request(c[0], "GET /health HTTP/1.1\r\nHost: t\r\n\r\n", &r), 0);
        cr_assert_eq(r.status, 200);
    }
    static const char ev[] = "POST /event HTTP/1.1\r\nHost: t\r\nContent-Length: 26\r\n\r\n"
                             "{\"userId\":\"b\",\"value\":1.5}";
    char burst[64 * sizeof(ev)];
    size_t n = 0;
    for (int k = 0; k < 64; k++, n += sizeof(ev) - 1)
        memcpy(burst + n, ev, sizeof(ev) - 1);
    for (int i = 0; i < 4; i++)
        cr_assert_eq(it_send_all(c[i]->fd, burst, n), 0);
    for (int i = 0; i < 4; i++)
        for (int k = 0; k < 64; k++) {
            cr_assert_eq(it_read_response(c[i], &r, 5000), 0, "connection %d, answer %d", i, k);
            cr_assert_eq(r.status, 200);
        }
    usleep(300 * 1000); /* idle, then served again */
    cr_assert_eq(it_request(c[1], "GET /stats HTTP/1.1\r\nHost: t\r\n\r\n", &r), 0);
    cr_assert(strstr(r.body, "\"totalRequests\":256,"), "%s", r.body);
    cr_assert(strstr(r.body, "\"sum\":384,"), "%s", r.body);
    for (int i = 0; i < 4; i++)
        it_conn_free(c[i]);
    cr_assert_eq(it_stop(srv), 0);
    it_free(srv);
}
