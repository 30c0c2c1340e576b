/* Integration test of CORS on the 1MRC and Increment routes (SPEC §2.3) in a real browser: a page
   served from another origin (a tiny HTTP server in this test, http://127.0.0.1:PAGE) runs in
   headless Chromium and, with --cors-origins naming that origin, POSTs /event (a JSON body: the
   browser sends a preflight first), reads /stats, POSTs and reads /api/v2/increment; the admin
   route /reset stays out of reach (no CORS field ever). With an origin list that does not name
   the page, every read fails and the event is never sent. Before, only the tenant
   routes had CORS, so the first run failed too.

   Chromium is optional (~300 MB): without /usr/bin/chromium the test is skipped, as in
   test_statuspage.c (tools/deps.sh installs it when CI or RINGCOUNT_DEPS_EXTRA is set). */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"

/* Two Chromium runs of at most CHROME_MS each plus two servers. */
TestSuite(cors, .timeout = 60);

#define CHROMIUM "/usr/bin/chromium"
#define CHROME_MS 15000
#define KEY "cors-test-admin-key"

/* ------------------------------------------------------------------ the page's origin */

static char page[8192];
static int page_lfd = -1;
static uint16_t page_port;
static volatile int page_stop;

/* Answers every request on page_lfd with `page` (text/html) and closes. */
static void *page_server(void *arg)
{
    (void)arg;
    while (!page_stop) {
        struct pollfd p = {.fd = page_lfd, .events = POLLIN};
        if (poll(&p, 1, 100) != 1)
            continue;
        int fd = accept4(page_lfd, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0)
            continue;
        char req[4096];
        size_t n = 0;
        while (n < sizeof(req) - 1) {
            struct pollfd q = {.fd = fd, .events = POLLIN};
            if (poll(&q, 1, 2000) != 1)
                break;
            ssize_t r = recv(fd, req + n, sizeof(req) - 1 - n, 0);
            if (r <= 0)
                break;
            n += (size_t)r;
            req[n] = 0;
            if (strstr(req, "\r\n\r\n"))
                break;
        }
        char head[256];
        bool fav = strncmp(req, "GET /favicon", 12) == 0;
        int hl = snprintf(head, sizeof(head),
                          "HTTP/1.1 %s\r\nContent-Type: text/html; charset=utf-8\r\n"
                          "Content-Length: %zu\r\nConnection: close\r\n\r\n",
                          fav ? "404 Not Found" : "200 OK", fav ? 0 : strlen(page));
        it_send_all(fd, head, (size_t)hl);
        if (!fav)
            it_send_all(fd, page, strlen(page));
        close(fd);
    }
    return NULL;
}

static pthread_t page_thread;

static void page_start(void)
{
    page_lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    cr_assert_geq(page_lfd, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof(a);
    cr_assert_eq(bind(page_lfd, (struct sockaddr *)&a, sizeof(a)), 0);
    cr_assert_eq(listen(page_lfd, 16), 0);
    cr_assert_eq(getsockname(page_lfd, (struct sockaddr *)&a, &al), 0);
    page_port = ntohs(a.sin_port);
    page_stop = 0;
    cr_assert_eq(pthread_create(&page_thread, NULL, page_server, NULL), 0);
}

static void page_end(void)
{
    page_stop = 1;
    pthread_join(page_thread, NULL);
    close(page_lfd);
}

/* The page: each step's outcome (status, or ERR when the browser refused the answer) into
   #out, space-separated. */
static void make_page(uint16_t rc_port)
{
    int n = snprintf(page, sizeof(page),
        "<!doctype html><html><head><meta charset=utf-8><title>cors</title></head><body>"
        "<pre id=\"out\">pending</pre><script>\n"
        "const base = 'http://127.0.0.1:%u';\n"
        "async function step(name, f) {\n"
        "  try { return name + '=' + await f(); } catch (e) { return name + '=ERR'; }\n"
        "}\n"
        "(async () => {\n"
        "  const r = [];\n"
        "  r.push(await step('event', async () => (await fetch(base + '/event', {method: 'POST',\n"
        "    headers: {'Content-Type': 'application/json'},\n"
        "    body: JSON.stringify({userId: 'browser', value: 2.5})})).status));\n"
        "  r.push(await step('stats', async () => { const x = await fetch(base + '/stats');\n"
        "    const j = await x.json(); return x.status + ':' + j.totalRequests + ':' + j.sum; }));\n"
        "  r.push(await step('incr', async () =>\n"
        "    (await fetch(base + '/api/v2/increment', {method: 'POST'})).status));\n"
        "  r.push(await step('count', async () => { const x = await fetch(base + '/api/v2/increment');\n"
        "    return x.status + ':' + (await x.json()).count; }));\n"
        "  r.push(await step('reset', async () => (await fetch(base + '/reset', {method: 'POST',\n"
        "    headers: {'X-API-Key': '" KEY "'}})).status));\n"
        "  document.getElementById('out').textContent = r.join(' ');\n"
        "})();\n"
        "</script></body></html>\n",
        (unsigned)rc_port);
    cr_assert(n > 0 && (size_t)n < sizeof(page));
}

/* ------------------------------------------------------------------ the browser */

/* Headless Chromium on url with --dump-dom; the DOM into out. Returns its exit status. */
static int chromium_dom(const char *url, char *out, size_t cap)
{
    char profile[] = "/tmp/rc-cors-chromium-XXXXXX", dom[] = "/tmp/rc-cors-dom-XXXXXX";
    cr_assert_not_null(mkdtemp(profile));
    int ofd = mkstemp(dom);
    cr_assert_geq(ofd, 0);
    char udd[64];
    snprintf(udd, sizeof(udd), "--user-data-dir=%s", profile);
    const char *argv[] = {CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
                          "--disable-quic", "--no-first-run", "--disable-background-networking",
                          "--disable-component-update", "--disable-sync", udd,
                          "--virtual-time-budget=5000", "--dump-dom", url, NULL};
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        int nul = open("/dev/null", O_WRONLY | O_CLOEXEC);
        if (nul < 0 || dup2(ofd, 1) < 0 || dup2(nul, 2) < 0)
            _exit(126);
        setpgid(0, 0);
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    setpgid(pid, pid);
    int st = 0, rc = -ETIMEDOUT;
    for (uint64_t end = it_now_ms() + CHROME_MS; it_now_ms() < end; usleep(20000)) {
        if (waitpid(pid, &st, WNOHANG) == pid) {
            rc = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
            break;
        }
    }
    if (rc == -ETIMEDOUT) {
        kill(-pid, SIGKILL);
        waitpid(pid, &st, 0);
    }
    ssize_t n = pread(ofd, out, cap - 1, 0);
    out[n > 0 ? n : 0] = 0;
    close(ofd);
    unlink(dom);
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", profile);
    if (system(cmd) != 0)
        fprintf(stderr, "cleanup of %s failed\n", profile);
    return rc;
}

/* Text of <pre id="out">. */
static void page_result(const char *dom, char *out, size_t cap)
{
    const char *p = strstr(dom, "<pre id=\"out\">");
    cr_assert_not_null(p, "no #out in: %.2000s", dom);
    p += 14;
    const char *e = strchr(p, '<');
    cr_assert(e && (size_t)(e - p) < cap);
    memcpy(out, p, (size_t)(e - p));
    out[e - p] = 0;
}

static uint64_t total_requests(uint16_t port)
{
    struct it_conn *c = it_conn_new(port);
    static struct it_resp r;
    cr_assert_eq(it_request(c, "GET /stats HTTP/1.1\r\nHost: t\r\n\r\n", &r), 0);
    uint64_t t = 0;
    cr_assert_eq(it_json_u64(r.body, "totalRequests", &t), 0, "%s", r.body);
    it_conn_free(c);
    return t;
}

Test(cors, cross_origin_page_posts_event_and_reads_stats_in_chromium)
{
    if (access(CHROMIUM, X_OK) != 0)
        cr_skip_test("no " CHROMIUM ": apt-get install chromium (or RINGCOUNT_DEPS_EXTRA=1 "
                     "tools/deps.sh) to run the cross-origin page in a real browser");
    page_start();
    char origin[64], url[64];
    snprintf(origin, sizeof(origin), "--cors-origins=http://127.0.0.1:%u", (unsigned)page_port);
    snprintf(url, sizeof(url), "http://127.0.0.1:%u/", (unsigned)page_port);
    static char dom[256 * 1024];
    char got[512];

    /* --cors-origins names the page's origin: everything public works, /reset does not */
    const char *const args[] = {"--workers", "2", origin, NULL};
    const char *const env[] = {"RINGCOUNT_ADMIN_KEY=" KEY, NULL};
    struct it_server *srv = it_start(args, env);
    make_page(it_port(srv));
    int rc = chromium_dom(url, dom, sizeof(dom));
    cr_assert_eq(rc, 0, "chromium exited %d: %.300s", rc, dom);
    page_result(dom, got, sizeof(got));
    cr_expect_str_eq(got, "event=200 stats=200:1:2.5 incr=204 count=200:1 reset=ERR",
                     "page saw: %s", got);
    cr_expect_eq(total_requests(it_port(srv)), 1, "the event counted once, /reset never ran");
    cr_assert_eq(it_stop(srv), 0);
    it_free(srv);

    /* an origin list without the page: no read succeeds; the JSON POST's preflight fails, so
       the event is never even sent */
    const char *const other[] = {"--workers", "2", "--cors-origins", "http://other.example", NULL};
    srv = it_start(other, env);
    make_page(it_port(srv));
    rc = chromium_dom(url, dom, sizeof(dom));
    cr_assert_eq(rc, 0, "chromium exited %d", rc);
    page_result(dom, got, sizeof(got));
    cr_expect_str_eq(got, "event=ERR stats=ERR incr=ERR count=ERR reset=ERR", "page saw: %s", got);
    cr_expect_eq(total_requests(it_port(srv)), 0);
    cr_assert_eq(it_stop(srv), 0);
    it_free(srv);
    page_end();
}
