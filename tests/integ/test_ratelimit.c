/* Integration tests of the public rate limit (SPEC §2.3 "rate-limited per client IP") against
   the real server: one bucket per client per node whatever worker its connections land on
   (8 connections, 2 workers), and per-client buckets behind a real nginx (nginx-light) with
   upstream keep-alive and X-Forwarded-For, while a spoofed X-Forwarded-For from an untrusted
   peer is ignored. */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"
#include "load.h"

TestSuite(ratelimit, .timeout = 60);

#define KEY "rl-test-admin-key"
static const char *const env_key[] = {"RINGCOUNT_ADMIN_KEY=" KEY, NULL};
#define LOOP(h) (0x7f000000u | (h)) /* 127.0.0.h */

/* POST path (extra header lines hdrs, or NULL) on c, answer into r: the status, or -1 if the
   exchange failed. */
static int inc_on(struct it_conn *c, const char *path, const char *hdrs, struct it_resp *r)
{
    int rc = it_load_call(c, "POST", path, hdrs, NULL, r, 5000);
    return rc == 0 ? r->status : -1;
}

/* Requests from source 127.0.0.<host> to port (one keep-alive connection) until the first
   429, at most max: the number of 200s before it (max if there was no 429, -1 on any other
   answer). xff: an X-Forwarded-For value to send (each request appends its index, "%s%d"),
   or NULL. */
static int allowed_until_refused(uint16_t port, uint32_t host, const char *path, const char *xff,
                                 int max)
{
    struct it_conn *c = malloc(sizeof(*c));
    struct it_resp *r = malloc(sizeof(*r));
    cr_assert(c && r);
    cr_assert_eq(it_conn_open_from(c, LOOP(host), port), 0, "connect from 127.0.0.%u", host);
    int n = 0, st = 0;
    for (; n < max; n++) {
        char h[128];
        if (xff)
            snprintf(h, sizeof(h), "X-Forwarded-For: %s%d\r\n", xff, n);
        st = inc_on(c, path, xff ? h : NULL, r);
        if (st != 200)
            break;
    }
    it_conn_close(c);
    free(c);
    free(r);
    return st == 429 || n == max ? n : -1;
}

static void make_counter(uint16_t port, char *path, size_t cap)
{
    char tid[64], cid[64], err[256];
    cr_assert_eq(it_load_make_tenant(port, KEY, "rl", tid, cid, err, sizeof(err)), 0, "%s", err);
    snprintf(path, cap, "/tenants/%s/counters/%s/inc", tid, cid);
}

/* 8 keep-alive connections of one client; SO_REUSEPORT hashes each to one of the 2 workers
   (all 8 on one worker: 1 in 128, when this test cannot tell the designs apart). Each round
   sends one request on every connection before reading the 8 answers, so both workers
   decide at the same time. One bucket (burst 20, 1/s) allows 20 plus one per second elapsed;
   per-worker buckets allowed one burst per worker reached (up to 40). */
Test(ratelimit, eight_connections_two_workers_one_burst)
{
    const char *args[] = {"--workers", "2", "--rate-limit", "1/20", NULL};
    struct it_server *srv = it_start(args, env_key);
    uint16_t port = it_port(srv);
    char path[256];
    make_counter(port, path, sizeof(path));
    enum { NC = 8, ROUNDS = 8 };
    struct it_conn *c[NC];
    for (int i = 0; i < NC; i++)
        c[i] = it_conn_new(port);
    struct it_resp *r = malloc(sizeof(*r));
    cr_assert_not_null(r);
    char raw[512], h[128];
    snprintf(raw, sizeof(raw), "POST %s HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n", path);
    int ok = 0, refused = 0;
    uint64_t t0 = it_now_ms();
    for (int round = 0; round < ROUNDS; round++) {
        for (int i = 0; i < NC; i++)
            cr_assert_eq(it_send_all(c[i]->fd, raw, strlen(raw)), 0);
        for (int i = 0; i < NC; i++) {
            cr_assert_eq(it_read_response(c[i], r, 5000), 0);
            if (r->status == 200) {
                ok++;
            } else {
                cr_assert_eq(r->status, 429, "%d %s", r->status, r->body);
                refused++;
                cr_assert_gt(it_header(r, "RateLimit", h, sizeof(h)), 0);
                cr_assert_eq(strncmp(h, "\"default\";r=0;t=", 16), 0, "%s", h);
            }
        }
    }
    uint64_t secs = (it_now_ms() - t0) / 1000 + 1;
    cr_assert_geq(ok, 20, "the burst of 20 is allowed (%d)", ok);
    cr_assert_leq((uint64_t)ok, 20 + secs, "%d allowed in %llu s: more than one burst", ok,
                  (unsigned long long)secs);
    cr_assert_eq(ok + refused, NC * ROUNDS);
    for (int i = 0; i < NC; i++)
        it_conn_free(c[i]);
    free(r);
    cr_assert_eq(it_stop(srv), 0);
    it_free(srv);
}

/* ---- behind nginx ---- */

struct nginx {
    pid_t pid;
    uint16_t port;
    char dir[64];
};

static int write_conf(const char *dir, uint16_t port, uint16_t upstream)
{
    char p[128];
    snprintf(p, sizeof(p), "%s/nginx.conf", dir);
    FILE *f = fopen(p, "w");
    if (!f)
        return -errno;
    /* master_process off: one process, no privileged master to drop to "nobody" from; the
       temp paths are set so nothing is written outside dir */
    fprintf(f,
            "daemon off;\nmaster_process off;\nworker_processes 1;\npid %1$s/nginx.pid;\n"
            "error_log %1$s/error.log info;\nevents { worker_connections 64; }\n"
            "http {\n  access_log off;\n  client_body_temp_path %1$s/body;\n"
            "  proxy_temp_path %1$s/proxy;\n  fastcgi_temp_path %1$s/fastcgi;\n"
            "  uwsgi_temp_path %1$s/uwsgi;\n  scgi_temp_path %1$s/scgi;\n"
            "  upstream rc { server 127.0.0.1:%3$u; keepalive 4; }\n"
            "  server {\n    listen 127.0.0.1:%2$u;\n    location / {\n"
            "      proxy_pass http://rc;\n      proxy_http_version 1.1;\n"
            "      proxy_set_header Connection \"\";\n"
            "      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;\n"
            "    }\n  }\n}\n",
            dir, (unsigned)port, (unsigned)upstream);
    return fclose(f) == 0 ? 0 : -EIO;
}

/* Start nginx (a child, not a daemon, killed if this test process dies) in a new temp dir,
   proxying 127.0.0.1:<its port> to upstream. 0 once it accepts connections, or -1 with the
   reason in err. A port taken between it_free_port and nginx's bind is retried. */
static int nginx_start(struct nginx *n, uint16_t upstream, char *err, size_t cap)
{
    snprintf(n->dir, sizeof(n->dir), "/tmp/rc-it-nginx-XXXXXX");
    if (!mkdtemp(n->dir)) {
        snprintf(err, cap, "mkdtemp: %s", strerror(errno));
        return -1;
    }
    for (int attempt = 0; attempt < 5; attempt++) {
        n->port = it_free_port();
        char conf[128], log[128];
        snprintf(conf, sizeof(conf), "%s/nginx.conf", n->dir);
        snprintf(log, sizeof(log), "%s/error.log", n->dir);
        if (!n->port || write_conf(n->dir, n->port, upstream) < 0) {
            snprintf(err, cap, "no port or cannot write %s", conf);
            return -1;
        }
        n->pid = fork();
        if (n->pid == 0) {
            prctl(PR_SET_PDEATHSIG, SIGKILL);
            int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0644);
            if (fd >= 0) {
                dup2(fd, 1);
                dup2(fd, 2);
            }
            execlp("nginx", "nginx", "-p", n->dir, "-c", conf, "-e", log, (char *)NULL);
            _exit(127);
        }
        for (int i = 0; i < 500; i++) { /* up to 5 s */
            int fd = it_connect(n->port);
            if (fd >= 0) {
                close(fd);
                return 0;
            }
            if (waitpid(n->pid, NULL, WNOHANG) == n->pid)
                break; /* exited: the port was taken, or a bad configuration */
            usleep(10000);
        }
        kill(n->pid, SIGKILL);
        waitpid(n->pid, NULL, 0);
        n->pid = 0;
    }
    snprintf(err, cap, "nginx did not start: see %s/error.log", n->dir);
    return -1;
}

static void nginx_stop(struct nginx *n)
{
    if (n->pid > 0) {
        kill(n->pid, SIGTERM);
        waitpid(n->pid, NULL, 0);
    }
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", n->dir);
    if (n->dir[0] && system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", n->dir);
}

static bool have_nginx(void)
{
    return system("command -v nginx >/dev/null 2>&1") == 0;
}

/* Behind nginx (trusted: 127.0.0.1/32, upstream keep-alive, so the clients' requests share
   nginx's connections to ringcount): the clients 127.0.0.2 and 127.0.0.3 each get their own
   burst of 3, read from X-Forwarded-For per request, and what a client writes into that header
   itself is ignored (nginx appends the real peer; the rightmost untrusted address counts).
   Each count allows one refill per second elapsed (1/s) on a busy machine. */
Test(ratelimit, behind_nginx_each_client_its_bucket)
{
    if (!have_nginx())
        cr_skip_test("nginx not installed (Debian: nginx-light; tools/deps.sh installs it)");
    const char *args[] = {"--workers", "2", "--rate-limit", "1/3", "--trusted-proxies",
                          "127.0.0.1/32", NULL};
    struct it_server *srv = it_start(args, env_key);
    char path[256], err[256];
    make_counter(it_port(srv), path, sizeof(path));
    struct nginx n = {0};
    int rc = nginx_start(&n, it_port(srv), err, sizeof(err));
    cr_assert_eq(rc, 0, "%s", err);
    uint64_t t0 = it_now_ms();
    int a = allowed_until_refused(n.port, 2, path, NULL, 10);
    int b = allowed_until_refused(n.port, 3, path, NULL, 10);
    /* A again, claiming to be someone else: nginx appends 127.0.0.2, which is what counts */
    int a2 = allowed_until_refused(n.port, 2, path, "198.51.100.", 10);
    int secs = (int)((it_now_ms() - t0) / 1000) + 1;
    nginx_stop(&n);
    cr_assert(a >= 3 && a <= 3 + secs, "127.0.0.2 through nginx: %d allowed (burst 3)", a);
    cr_assert(b >= 3 && b <= 3 + secs, "127.0.0.3 through nginx: %d allowed: not its own bucket",
              b);
    cr_assert(a2 >= 0 && a2 <= secs, "127.0.0.2 with a forged X-Forwarded-For: %d allowed", a2);
    cr_assert_eq(it_stop(srv), 0);
    it_free(srv);
}

/* Straight to ringcount from 127.0.0.4, which is not a trusted proxy (only 127.0.0.1/32 is):
   its X-Forwarded-For, a new address on every request, is never read, so it is one client
   with one burst. */
Test(ratelimit, spoofed_forwarded_for_from_untrusted_peer_is_ignored)
{
    const char *args[] = {"--workers", "2", "--rate-limit", "1/3", "--trusted-proxies",
                          "127.0.0.1/32", NULL};
    struct it_server *srv = it_start(args, env_key);
    char path[256];
    make_counter(it_port(srv), path, sizeof(path));
    uint64_t t0 = it_now_ms();
    int n = allowed_until_refused(it_port(srv), 4, path, "203.0.113.", 10);
    int secs = (int)((it_now_ms() - t0) / 1000) + 1;
    cr_assert(n >= 3 && n <= 3 + secs, "%d allowed: the forged header made new clients", n);
    /* the trusted proxy's header is read: a forwarded client has a fresh bucket */
    n = allowed_until_refused(it_port(srv), 1, path, "203.0.113.", 1);
    cr_assert_eq(n, 1, "from 127.0.0.1 (trusted), 203.0.113.0 is a new client");
    cr_assert_eq(it_stop(srv), 0);
    it_free(srv);
}
