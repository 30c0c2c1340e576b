/*
 * test_ringbench — build/ringbench (env RINGBENCH_BIN) against a fake 1MRC server run inside
 * this test (a poll(2) thread on 127.0.0.1:0) and against the real ringcount (harness), plus
 * table tests of ringbench's response parser, histogram and JSON lookup (their .c files are
 * compiled in below: they live in tools/, which is not part of libapp.a).
 *
 * The fake implements POST /event and GET /stats with exact fixed-point arithmetic of its own
 * (independent of src/decimal), and can be told to leave one event out of its totals, to
 * answer one event with 500, or to start non-empty.
 */
#include <criterion/criterion.h>

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"

#include "../../tools/rb_client.c"
#include "../../tools/rb_hist.c"
#include "../../tools/rb_resp.c"

/* ---- the fake server -------------------------------------------------------------------- */

#define FAKE_CONNS 64
#define FAKE_BUF 65536
#define FAKE_USERS 1000000 /* user_<n> ids the fake tracks exactly (ringbench uses < 75000) */
#define FAKE_SPREAD 4096

struct fconn {
    int fd;
    char in[FAKE_BUF];
    size_t in_len;
    char out[FAKE_BUF];
    size_t out_len;
    bool close_after;
};

struct fake {
    int lfd, wake[2];
    uint16_t port;
    pthread_t th;
    /* behaviour */
    uint64_t drop_nth; /* 1-based event left out of the totals (still answered 200); 0 none */
    uint64_t fail_nth; /* 1-based event answered 500 and not counted; 0 none */
    /* totals (micro-units); extra_users: users that are not user_<n> (prefill) */
    int64_t total, sum_micro, extra_users;
    uint64_t events_seen;
    uint8_t *users;
    int64_t nusers;
    /* GET /s/<12 hex digits> (ringbench raw --spread): hits per number below FAKE_SPREAD, and
       requests whose digits were not 12 lowercase hex of a number below it */
    uint32_t spread_hits[FAKE_SPREAD];
    uint64_t spread_bad;
    struct fconn *c[FAKE_CONNS];
};

/* "123", "123.5", "-7.25" -> micro-units; false if not that shape */
static bool fake_parse_value(const char *s, size_t n, int64_t *out)
{
    size_t i = 0;
    bool neg = false;
    int64_t ip = 0, fp = 0;
    if (i < n && s[i] == '-') neg = true, i++;
    if (i == n || s[i] < '0' || s[i] > '9') return false;
    while (i < n && s[i] >= '0' && s[i] <= '9')
        ip = ip * 10 + (s[i++] - '0');
    if (i < n && s[i] == '.') {
        int digits = 0;
        i++;
        while (i < n && s[i] >= '0' && s[i] <= '9' && digits < 6)
            fp = fp * 10 + (s[i++] - '0'), digits++;
        while (digits++ < 6)
            fp *= 10;
    }
    if (i != n) return false;
    *out = (ip * 1000000 + fp) * (neg ? -1 : 1);
    return true;
}

/* micro-units -> shortest exact decimal */
static void fake_fmt(int64_t v, char *b)
{
    const char *sign = v < 0 ? "-" : "";
    uint64_t u = v < 0 ? (uint64_t)-v : (uint64_t)v;
    uint64_t ip = u / 1000000, fp = u % 1000000;
    if (!fp) {
        sprintf(b, "%s%llu", sign, (unsigned long long)ip);
        return;
    }
    char f[8];
    sprintf(f, "%06llu", (unsigned long long)fp);
    for (int k = 5; k > 0 && f[k] == '0'; k--)
        f[k] = '\0';
    sprintf(b, "%s%llu.%s", sign, (unsigned long long)ip, f);
}

/* sum/total in micro-units, rounded half to even (SPEC §2.1) */
static int64_t fake_avg(int64_t sum, int64_t total)
{
    if (total == 0) return 0;
    int64_t q = sum / total, r = sum % total;
    if (r < 0) r = -r;
    if (2 * r > total || (2 * r == total && (q & 1))) q += sum < 0 ? -1 : 1;
    return q;
}

static void fake_reply(struct fconn *c, const char *status, const char *body)
{
    size_t bl = strlen(body);
    c->out_len += (size_t)snprintf(c->out + c->out_len, FAKE_BUF - c->out_len,
                                   "HTTP/1.1 %s\r\nContent-Type: application/json\r\n"
                                   "Content-Length: %zu\r\n%s\r\n%s",
                                   status, bl, c->close_after ? "Connection: close\r\n" : "", body);
}

/* GET /s/<digits> at h: counted in spread_hits (or spread_bad), answered 200 {}. */
static void fake_spread(struct fake *f, struct fconn *c, const char *h)
{
    uint64_t v = 0;
    int i = 0;
    for (; i < 12; i++) {
        char d = h[7 + i];
        int x = d >= '0' && d <= '9' ? d - '0' : d >= 'a' && d <= 'f' ? d - 'a' + 10 : -1;
        if (x < 0)
            break;
        v = v << 4 | (uint64_t)x;
    }
    if (i == 12 && h[19] == ' ' && v < FAKE_SPREAD)
        f->spread_hits[v]++;
    else
        f->spread_bad++;
    fake_reply(c, "200 OK", "{}");
}

static void fake_event(struct fake *f, struct fconn *c, const char *body, size_t bl)
{
    const char *u = memmem(body, bl, "\"userId\":\"user_", 15);
    const char *v = memmem(body, bl, "\"value\":", 8);
    int64_t val, uid = 0;
    if (!u || !v) {
        fake_reply(c, "400 Bad Request", "{\"error\":{\"code\":\"INVALID_JSON\"}}");
        return;
    }
    for (u += 15; *u >= '0' && *u <= '9'; u++)
        uid = uid * 10 + (*u - '0');
    v += 8;
    size_t vl = strcspn(v, "},");
    if (!fake_parse_value(v, vl, &val) || uid >= FAKE_USERS) {
        fake_reply(c, "400 Bad Request", "{\"error\":{\"code\":\"INVALID_VALUE\"}}");
        return;
    }
    f->events_seen++;
    if (f->events_seen == f->fail_nth) {
        fake_reply(c, "500 Internal Server Error", "{\"error\":{\"code\":\"INTERNAL\"}}");
        return;
    }
    if (f->events_seen != f->drop_nth) {
        f->total++;
        f->sum_micro += val;
        if (!(f->users[uid >> 3] & (1u << (uid & 7)))) {
            f->users[uid >> 3] |= (uint8_t)(1u << (uid & 7));
            f->nusers++;
        }
    }
    c->out_len += (size_t)snprintf(c->out + c->out_len, FAKE_BUF - c->out_len,
                                   "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n%s\r\n",
                                   c->close_after ? "Connection: close\r\n" : "");
}

static void fake_stats(struct fake *f, struct fconn *c)
{
    char body[512], s[48], a[48];
    fake_fmt(f->sum_micro, s);
    fake_fmt(fake_avg(f->sum_micro, f->total), a);
    /* the "server" object repeats key names nested: ringbench must read top-level ones */
    snprintf(body, sizeof(body),
             "{\"totalRequests\":%lld,\"uniqueUsers\":%lld,\"sum\":%s,\"avg\":%s,"
             "\"server\":{\"persistence\":{\"totalRequests\":1,\"sum\":2}}}",
             (long long)f->total, (long long)(f->nusers + f->extra_users), s, a);
    fake_reply(c, "200 OK", body);
}

/* Handle every complete request in c->in. */
static void fake_parse(struct fake *f, struct fconn *c)
{
    size_t off = 0;
    while (off < c->in_len && c->out_len < FAKE_BUF - 1024) {
        char *h = c->in + off;
        size_t avail = c->in_len - off;
        char *he = memmem(h, avail, "\r\n\r\n", 4);
        if (!he) break;
        size_t hl = (size_t)(he + 4 - h), cl = 0;
        for (char *l = memchr(h, '\n', hl); l && l < he;
             l = memchr(l + 1, '\n', (size_t)(he - l))) {
            if (strncasecmp(l + 1, "Content-Length:", 15) == 0) cl = strtoul(l + 16, NULL, 10);
            if (strncasecmp(l + 1, "Connection: close", 17) == 0) c->close_after = true;
        }
        if (avail < hl + cl) break;
        if (strncmp(h, "POST /event ", 12) == 0)
            fake_event(f, c, h + hl, cl);
        else if (strncmp(h, "GET /stats ", 11) == 0)
            fake_stats(f, c);
        else if (strncmp(h, "GET /s/", 7) == 0 && hl > 20)
            fake_spread(f, c, h);
        else
            fake_reply(c, "404 Not Found", "{\"error\":{\"code\":\"NOT_FOUND\"}}");
        off += hl + cl;
        if (c->close_after) break;
    }
    memmove(c->in, c->in + off, c->in_len - off);
    c->in_len -= off;
}

static void fake_drop(struct fake *f, int k)
{
    close(f->c[k]->fd);
    free(f->c[k]);
    f->c[k] = NULL;
}

static void *fake_main(void *arg)
{
    struct fake *f = arg;
    for (;;) {
        struct pollfd p[FAKE_CONNS + 2];
        int map[FAKE_CONNS + 2], n = 0;
        p[n] = (struct pollfd){.fd = f->wake[0], .events = POLLIN};
        map[n++] = -2;
        p[n] = (struct pollfd){.fd = f->lfd, .events = POLLIN};
        map[n++] = -1;
        for (int k = 0; k < FAKE_CONNS; k++)
            if (f->c[k]) {
                p[n] = (struct pollfd){.fd = f->c[k]->fd,
                                       .events = (short)(f->c[k]->out_len ? POLLOUT : POLLIN)};
                map[n++] = k;
            }
        if (poll(p, (nfds_t)n, 1000) < 0 && errno != EINTR) return NULL;
        for (int i = 0; i < n; i++) {
            if (!p[i].revents) continue;
            if (map[i] == -2) return NULL;
            if (map[i] == -1) {
                int fd = accept4(f->lfd, NULL, NULL, SOCK_CLOEXEC);
                int k;
                for (k = 0; fd >= 0 && k < FAKE_CONNS && f->c[k]; k++)
                    ;
                if (fd >= 0 && k < FAKE_CONNS) {
                    f->c[k] = calloc(1, sizeof(struct fconn));
                    f->c[k]->fd = fd;
                } else if (fd >= 0) {
                    close(fd);
                }
                continue;
            }
            struct fconn *c = f->c[map[i]];
            if (c->out_len) {
                ssize_t w = send(c->fd, c->out, c->out_len, MSG_NOSIGNAL);
                if (w < 0) {
                    fake_drop(f, map[i]);
                    continue;
                }
                memmove(c->out, c->out + w, c->out_len - (size_t)w);
                c->out_len -= (size_t)w;
                if (c->out_len == 0 && c->close_after) {
                    fake_drop(f, map[i]);
                    continue;
                }
                fake_parse(f, c); /* requests that waited for room in out */
                continue;
            }
            ssize_t r = recv(c->fd, c->in + c->in_len, FAKE_BUF - c->in_len, 0);
            if (r <= 0) {
                fake_drop(f, map[i]);
                continue;
            }
            c->in_len += (size_t)r;
            fake_parse(f, c);
        }
    }
}

/* Start a fake: drop_nth / fail_nth as in struct fake; pre_*: state before the run. */
static struct fake *fake_start(uint64_t drop_nth, uint64_t fail_nth, int64_t pre_total,
                               int64_t pre_users, int64_t pre_sum_micro)
{
    struct fake *f = calloc(1, sizeof(*f));
    cr_assert(f);
    f->drop_nth = drop_nth;
    f->fail_nth = fail_nth;
    f->total = pre_total;
    f->extra_users = pre_users;
    f->sum_micro = pre_sum_micro;
    f->users = calloc(FAKE_USERS / 8, 1);
    f->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    cr_assert(f->lfd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof(a);
    cr_assert(bind(f->lfd, (struct sockaddr *)&a, sizeof(a)) == 0);
    cr_assert(listen(f->lfd, 128) == 0);
    cr_assert(getsockname(f->lfd, (struct sockaddr *)&a, &al) == 0);
    f->port = ntohs(a.sin_port);
    cr_assert(pipe(f->wake) == 0);
    cr_assert(pthread_create(&f->th, NULL, fake_main, f) == 0);
    return f;
}

/* Stop the thread and close everything; f's totals stay readable until free(f). */
static void fake_stop(struct fake *f)
{
    cr_assert(write(f->wake[1], "x", 1) == 1);
    pthread_join(f->th, NULL);
    for (int k = 0; k < FAKE_CONNS; k++)
        if (f->c[k]) fake_drop(f, k);
    close(f->lfd);
    close(f->wake[0]);
    close(f->wake[1]);
    free(f->users);
    f->users = NULL;
}

/* ---- running ringbench ------------------------------------------------------------------ */

struct result {
    int code;
    char out[65536]; /* stdout */
    char err[65536]; /* stderr */
};

static void slurp(int fd, char *buf, size_t cap)
{
    size_t n = 0;
    ssize_t r;
    lseek(fd, 0, SEEK_SET);
    while (n < cap - 1 && (r = read(fd, buf + n, cap - 1 - n)) > 0)
        n += (size_t)r;
    buf[n] = '\0';
    close(fd);
}

/* Run ringbench with args (NULL-terminated), capture its output and exit code. */
static void run_rb(struct result *res, const char *const *args)
{
    const char *bin = getenv("RINGBENCH_BIN");
    const char *argv[64];
    int n = 0;
    char o[] = "/tmp/rbtest-out-XXXXXX", e[] = "/tmp/rbtest-err-XXXXXX";
    int fo = mkstemp(o), fe = mkstemp(e);
    cr_assert(fo >= 0 && fe >= 0);
    unlink(o);
    unlink(e);
    argv[n++] = bin ? bin : "build/ringbench";
    for (; *args && n < 63; args++)
        argv[n++] = *args;
    argv[n] = NULL;
    fflush(NULL);
    pid_t pid = fork();
    cr_assert(pid >= 0);
    if (pid == 0) {
        dup2(fo, 1);
        dup2(fe, 2);
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    int st;
    cr_assert(waitpid(pid, &st, 0) == pid);
    res->code = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    slurp(fo, res->out, sizeof(res->out));
    slurp(fe, res->err, sizeof(res->err));
    cr_assert(res->code != 127, "cannot run %s (set RINGBENCH_BIN)", argv[0]);
}

/* The last line of s. */
static const char *last_line(const char *s)
{
    size_t n = strlen(s);
    while (n && s[n - 1] == '\n')
        n--;
    while (n && s[n - 1] != '\n')
        n--;
    return s + n;
}

/* Numeric member of the JSON object on the last stdout line (-1 if absent). */
static double json_num(const char *out, const char *key)
{
    const char *j = last_line(out), *v;
    size_t vl;
    if (rb_client_json_get(j, strlen(j), key, &v, &vl) < 0) return -1;
    return strtod(v, NULL);
}

/* Numeric member key of the "errors" object on the last stdout line (-1 if absent). */
static double json_err(const char *out, const char *key)
{
    const char *j = last_line(out), *e, *v;
    size_t el, vl;
    if (rb_client_json_get(j, strlen(j), "errors", &e, &el) < 0 ||
        rb_client_json_get(e, el, key, &v, &vl) < 0)
        return -1;
    return strtod(v, NULL);
}

static char *url_of(const struct fake *f, const char *path)
{
    static char u[64];
    snprintf(u, sizeof(u), "http://127.0.0.1:%u%s", f->port, path);
    return u;
}

/* ---- ringbench against the fake --------------------------------------------------------- */

Test(ringbench, usage_errors_exit_2)
{
    static const char *const cases[][8] = {
        {NULL},
        {"event", NULL},
        {"bogus", "http://127.0.0.1:1/", NULL},
        {"event", "ftp://127.0.0.1/", NULL},
        {"event", "http://[::1/", NULL},
        {"event", "http://127.0.0.1:99999/", NULL},
        {"event", "http://127.0.0.1:1/event", "-c", "0", NULL},
        {"event", "http://127.0.0.1:1/event", "-d", "1", "-n", "5", NULL},
        {"event", "http://127.0.0.1:1/event", "--nope", NULL},
        {"raw", "http://127.0.0.1:1/", "-p", "x", NULL},
        {"raw", "http://127.0.0.1:1/", "-p", "0", NULL},
        {"raw", "http://127.0.0.1:1/", "-R", "-5", NULL},
        {"raw", "http://127.0.0.1:1/", "-c", NULL},
        {"raw", "http://127.0.0.1:1/", "-H", "novalue", NULL},
        {"raw", "http://127.0.0.1:1/", "extra", NULL},
        {"raw", "http://127.0.0.1:1/", "-t", "5", "-c", "2", NULL},
        {"event", "http://127.0.0.1:1/event", "-m", "GET", NULL},
        {"raw", "http://127.0.0.1:1/", "--half", NULL},
        {"event", "http://127.0.0.1:1/", "--rate-sweep", "100,x", NULL},
        {"event", "http://127.0.0.1:1/", "--rate-sweep", "100", "-R", "5", NULL},
        {"event", "http://127.0.0.1:1/", "--server-pid", "0", NULL},
        {"event", "http://127.0.0.1:1/{n}", "--spread", "10", NULL},
        {"raw", "http://127.0.0.1:1/s/", "--spread", "10", NULL},
        {"raw", "http://127.0.0.1:1/s/{n}/{n}", "--spread", "10", NULL},
        {"raw", "http://127.0.0.1:1/s/{n}", "--spread", "0", NULL},
        {"raw", "http://127.0.0.1:1/s/{n}", "--spread-seq", NULL},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct result *r = malloc(sizeof(*r));
        run_rb(r, cases[i]);
        cr_expect_eq(r->code, 2, "case %zu (%s %s): exit %d, stderr: %s", i,
                     cases[i][0] ? cases[i][0] : "", cases[i][0] && cases[i][1] ? cases[i][1] : "",
                     r->code, r->err);
        cr_expect(strstr(r->err, "usage: ringbench"), "case %zu: no usage line in: %s", i, r->err);
        free(r);
    }
}

Test(ringbench, event_against_exact_server_exits_0)
{
    struct fake *f = fake_start(0, 0, 0, 0, 0);
    struct result *r = malloc(sizeof(*r));
    run_rb(r, (const char *const[]){"event", url_of(f, "/event"), "-c", "8", "-p", "4", "-n",
                                    "5000", "--json", NULL});
    cr_expect_eq(r->code, 0, "exit %d\n%s\n%s", r->code, r->out, r->err);
    cr_expect(strstr(r->out, "totalRequests 0 -> 5000"), "%s", r->out);
    cr_expect_eq(json_num(r->out, "requests"), 5000);
    cr_expect(strstr(last_line(r->out), "\"verify\":\"ok\""), "%s", last_line(r->out));
    fake_stop(f);
    /* the server saw the 1MRC pattern: 5000 users, sum of i % 1000 */
    cr_expect_eq(f->total, 5000);
    cr_expect_eq(f->nusers, 5000);
    cr_expect_eq(f->sum_micro, 5 * 499500LL * 1000000);
    free(f);
    free(r);
}

/* raw --spread N --spread-seq: {n} becomes request i's number mod N as 12 hex digits, across
   threads: 3,000 requests over 1,000 numbers hit each exactly 3 times. */
Test(ringbench, spread_seq_hits_each_number_in_turn)
{
    struct fake *f = fake_start(0, 0, 0, 0, 0);
    struct result *r = malloc(sizeof(*r));
    run_rb(r, (const char *const[]){"raw", url_of(f, "/s/{n}"), "-t", "2", "-c", "8", "-p", "4",
                                    "-n", "3000", "--spread", "1000", "--spread-seq", NULL});
    cr_expect_eq(r->code, 0, "exit %d\n%s\n%s", r->code, r->out, r->err);
    fake_stop(f);
    cr_expect_eq(f->spread_bad, 0);
    for (int i = 0; i < FAKE_SPREAD; i++)
        cr_expect_eq(f->spread_hits[i], i < 1000 ? 3u : 0u, "number %d: %u hits", i,
                     f->spread_hits[i]);
    free(f);
    free(r);
}

/* raw --spread N: a hash of the request picks its number, below N: 20,000 requests over 1,000
   numbers reach all of them (expected unseen: 1,000 e^-20), none above 60 (mean 20). */
Test(ringbench, spread_covers_the_range)
{
    struct fake *f = fake_start(0, 0, 0, 0, 0);
    struct result *r = malloc(sizeof(*r));
    run_rb(r, (const char *const[]){"raw", url_of(f, "/s/{n}"), "-t", "2", "-c", "8", "-p", "4",
                                    "-n", "20000", "--spread", "1000", NULL});
    cr_expect_eq(r->code, 0, "exit %d\n%s\n%s", r->code, r->out, r->err);
    fake_stop(f);
    cr_expect_eq(f->spread_bad, 0);
    unsigned seen = 0, most = 0, total = 0;
    for (int i = 0; i < FAKE_SPREAD; i++) {
        cr_expect(i < 1000 || f->spread_hits[i] == 0, "number %d is past N", i);
        seen += f->spread_hits[i] != 0;
        most = f->spread_hits[i] > most ? f->spread_hits[i] : most;
        total += f->spread_hits[i];
    }
    cr_expect_eq(total, 20000);
    cr_expect_eq(seen, 1000);
    cr_expect_lt(most, 60);
    free(f);
    free(r);
}

Test(ringbench, event_half_threads_nonempty_server_exits_0)
{
    struct fake *f = fake_start(0, 0, 10, 3, 12500000); /* someone else was here first */
    struct result *r = malloc(sizeof(*r));
    run_rb(r, (const char *const[]){"event", url_of(f, "/event"), "-t", "2", "-c", "6", "-n",
                                    "3001", "--half", NULL});
    cr_expect_eq(r->code, 0, "exit %d\n%s\n%s", r->code, r->out, r->err);
    fake_stop(f);
    cr_expect_eq(f->total, 3011);
    /* 3 x 499500 + sum(0..0) + 3001 halves */
    cr_expect_eq(f->sum_micro, 12500000 + 3 * 499500LL * 1000000 + 3001 * 500000LL);
    free(f);
    free(r);
}

Test(ringbench, event_against_server_dropping_one_event_exits_1)
{
    struct fake *f = fake_start(100, 0, 0, 0, 0); /* event #100 answered 200 but not counted */
    struct result *r = malloc(sizeof(*r));
    run_rb(r, (const char *const[]){"event", url_of(f, "/event"), "-c", "4", "-n", "2000", "--json",
                                    NULL});
    cr_expect_eq(r->code, 1, "exit %d\n%s\n%s", r->code, r->out, r->err);
    cr_expect(strstr(r->out, "MISMATCH totalRequests: expected 2000"), "%s", r->out);
    cr_expect(strstr(r->out, "got 1999"), "%s", r->out);
    cr_expect(strstr(r->out, "MISMATCH sum"), "%s", r->out);
    cr_expect(strstr(last_line(r->out), "\"verify\":\"failed\""), "%s", last_line(r->out));
    cr_expect(strstr(r->err, "FAILED"), "%s", r->err);
    fake_stop(f);
    free(f);
    free(r);
}

Test(ringbench, event_with_a_500_exits_1_and_counts_it)
{
    struct fake *f = fake_start(0, 50, 0, 0, 0); /* event #50 answered 500, not counted */
    struct result *r = malloc(sizeof(*r));
    run_rb(r, (const char *const[]){"event", url_of(f, "/event"), "-c", "2", "-n", "500", "--json",
                                    NULL});
    cr_expect_eq(r->code, 1, "exit %d\n%s\n%s", r->code, r->out, r->err);
    /* the totals still agree with what was acknowledged; the 500 alone fails the run */
    cr_expect(strstr(r->out, "totalRequests 0 -> 499"), "%s", r->out);
    cr_expect(strstr(r->out, "HTTP 500: 1"), "%s", r->out);
    cr_expect_eq(json_num(r->out, "requests"), 500);
    cr_expect_eq(json_err(r->out, "http_500"), 1, "%s", last_line(r->out));
    cr_expect_eq(json_err(r->out, "total"), 1, "%s", last_line(r->out));
    fake_stop(f);
    free(f);
    free(r);
}

Test(ringbench, open_loop_holds_the_rate_and_writes_out_files)
{
    struct fake *f = fake_start(0, 0, 0, 0, 0);
    struct result *r = malloc(sizeof(*r));
    char prefix[] = "/tmp/rbtest-plot-XXXXXX", path[64], buf[4096];
    int tfd = mkstemp(prefix);
    cr_assert(tfd >= 0);
    close(tfd);
    unlink(prefix);
    run_rb(r, (const char *const[]){"event", url_of(f, "/event"), "-c", "4", "-R", "2000", "-d",
                                    "2", "--json", "--out", prefix, NULL});
    cr_expect_eq(r->code, 0, "exit %d\n%s\n%s", r->code, r->out, r->err);
    double rps = json_num(r->out, "rps");
    cr_expect(rps >= 1900 && rps <= 2100, "rps %.1f not within 5%% of 2000", rps);
    double req = json_num(r->out, "requests");
    cr_expect(req >= 3800 && req <= 4200, "requests %.0f", req);
    cr_expect(strstr(r->err, "req/s"), "no progress line: %s", r->err);

    snprintf(path, sizeof(path), "%s.csv", prefix);
    FILE *csv = fopen(path, "r");
    cr_assert(csv, "%s missing", path);
    size_t n = fread(buf, 1, sizeof(buf) - 1, csv);
    buf[n] = '\0';
    fclose(csv);
    unlink(path);
    cr_expect(strncmp(buf, "second,rps,p99_us,errors\n0,", 27) == 0, "%s", buf);
    double row_rps = strtod(buf + 27, NULL); /* second 0's rate */
    /* per second, responses may slip across a boundary when the host is busy: wider bounds */
    cr_expect(row_rps >= 1000 && row_rps <= 3000, "second 0: %.1f req/s\n%s", row_rps, buf);

    snprintf(path, sizeof(path), "%s.svg", prefix);
    FILE *svg = fopen(path, "r");
    cr_assert(svg, "%s missing", path);
    n = fread(buf, 1, sizeof(buf) - 1, svg);
    buf[n] = '\0';
    fclose(svg);
    unlink(path);
    cr_expect(strncmp(buf, "<svg ", 5) == 0 && strstr(buf, "<polyline"), "%.200s", buf);
    fake_stop(f);
    free(f);
    free(r);
}

Test(ringbench, event_against_ringcount_exits_0)
{
    struct it_server *srv = it_start((const char *const[]){"--workers", "1", NULL}, NULL);
    char url[64];
    snprintf(url, sizeof(url), "http://127.0.0.1:%u/event", it_port(srv));
    struct result *r = malloc(sizeof(*r));
    /* from an empty server: exact uniqueUsers */
    run_rb(r, (const char *const[]){"event", url, "-c", "16", "-p", "4", "-n", "20000", "--json",
                                    NULL});
    cr_expect_eq(r->code, 0, "exit %d\n%s\n%s", r->code, r->out, r->err);
    cr_expect(strstr(r->out, "totalRequests 0 -> 20000"), "%s", r->out);
    cr_expect(strstr(r->out, "uniqueUsers 0 -> 20000"), "%s", r->out);
    /* again on the now non-empty server, with .5 values and two threads */
    run_rb(r, (const char *const[]){"event", url, "-t", "2", "-c", "8", "-n", "10001", "--half",
                                    "--json", NULL});
    cr_expect_eq(r->code, 0, "exit %d\n%s\n%s", r->code, r->out, r->err);
    cr_expect(strstr(r->out, "totalRequests 20000 -> 30001"), "%s", r->out);
    cr_expect(strstr(last_line(r->out), "\"verify\":\"ok\""), "%s", last_line(r->out));
    cr_expect_eq(it_stop(srv), 0);
    it_free(srv);
    free(r);
}

/* A URL without a path is the scenario's route: /event, /api/v2/increment. */
Test(ringbench, bare_url_means_the_scenario_route)
{
    struct it_server *srv = it_start((const char *const[]){"--workers", "1", NULL}, NULL);
    char url[64];
    snprintf(url, sizeof(url), "http://127.0.0.1:%u", it_port(srv));
    struct result *r = malloc(sizeof(*r));
    run_rb(r, (const char *const[]){"event", url, "-c", "4", "-n", "2000", "--json", NULL});
    cr_expect_eq(r->code, 0, "exit %d\n%s\n%s", r->code, r->out, r->err);
    cr_expect(strstr(r->out, "totalRequests 0 -> 2000"), "%s", r->out);
    snprintf(url, sizeof(url), "http://127.0.0.1:%u/", it_port(srv));
    run_rb(r, (const char *const[]){"increment", url, "-c", "4", "-n", "1000", "--json", NULL});
    cr_expect_eq(r->code, 0, "exit %d\n%s\n%s", r->code, r->out, r->err);
    cr_expect(strstr(last_line(r->out), "\"verify\":\"ok\""), "%s", last_line(r->out));
    cr_expect(strstr(last_line(r->out), "\"204\":1000"), "%s", last_line(r->out));
    cr_expect_eq(it_stop(srv), 0);
    it_free(srv);
    free(r);
}

/* --rate-sweep: one verified open-loop run per rate, a table with the server's CPU per
   request (--server-pid), and the plot. */
Test(ringbench, rate_sweep_reports_cpu_per_request)
{
    struct it_server *srv = it_start((const char *const[]){"--workers", "1", NULL}, NULL);
    char url[64], pid[16], out[] = "/tmp/rbtest-sweep-XXXXXX";
    snprintf(url, sizeof(url), "http://127.0.0.1:%u", it_port(srv));
    snprintf(pid, sizeof(pid), "%d", (int)it_pid(srv));
    cr_assert_not_null(mkdtemp(out));
    char prefix[64], svg[80];
    snprintf(prefix, sizeof(prefix), "%s/s", out);
    snprintf(svg, sizeof(svg), "%s-sweep.svg", prefix);
    struct result *r = malloc(sizeof(*r));
    run_rb(r, (const char *const[]){"event", url, "-c", "8", "-d", "1", "--rate-sweep", "500,1000",
                                    "--server-pid", pid, "--out", prefix, NULL});
    cr_expect_eq(r->code, 0, "exit %d\n%s\n%s", r->code, r->out, r->err);
    const char *t = strstr(r->out, "sweep         offered/s");
    cr_assert_not_null(t, "%s", r->out);
    double off[2], cpu[2];
    int rows = 0;
    for (const char *p = strchr(t, '\n'); p && rows < 2; p = strchr(p + 1, '\n')) {
        double ach, p50, p99;
        if (sscanf(p + 1, "sweep %lf %lf %lf %lf %lf", &off[rows], &ach, &p50, &p99, &cpu[rows]) == 5)
            rows++;
    }
    cr_assert_eq(rows, 2, "%s", t);
    cr_expect(off[0] == 500 && off[1] == 1000, "%s", t);
    cr_expect(cpu[0] > 0 && cpu[1] > 0, "CPU per request is measured: %s", t);
    cr_expect(strstr(r->out, "totalRequests 0 -> "), "each run verifies: %s", r->out);
    cr_expect_eq(access(svg, R_OK), 0, "no %s", svg);
    unlink(svg);
    rmdir(out);
    cr_expect_eq(it_stop(srv), 0);
    it_free(srv);
    free(r);
}

Test(ringbench, refused_connections_are_counted_and_fail_the_run)
{
    /* a port nobody listens on: bind, read the port, close */
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof(a);
    cr_assert(bind(s, (struct sockaddr *)&a, sizeof(a)) == 0);
    cr_assert(getsockname(s, (struct sockaddr *)&a, &al) == 0);
    close(s);
    char url[64];
    snprintf(url, sizeof(url), "http://127.0.0.1:%u/", ntohs(a.sin_port));
    struct result *r = malloc(sizeof(*r));
    run_rb(r, (const char *const[]){"raw", url, "-c", "2", "-d", "0.5", "--json", NULL});
    cr_expect_eq(r->code, 1, "exit %d\n%s\n%s", r->code, r->out, r->err);
    cr_expect(json_err(r->out, "connect_refused") >= 2, "%s", last_line(r->out));
    cr_expect_eq(json_num(r->out, "requests"), 0);
    free(r);
}

/* ---- the response parser ---------------------------------------------------------------- */

struct resp_case {
    const char *stream; /* responses back to back */
    bool head;          /* requests were HEAD */
    int n;              /* final responses expected before the end or the error */
    uint16_t status[4]; /* their statuses */
    bool close_last;    /* the last one carries Connection: close */
    bool error;         /* the stream ends in -EPROTO */
};

static const struct resp_case RESP_CASES[] = {
    {"HTTP/1.1 204 No Content\r\nServer: nginx\r\n\r\n", false, 1, {204}, false, false},
    {"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 404 Not Found\r\ncontent-length:"
     " 0\r\n\r\n",
     false,
     2,
     {200, 404},
     false,
     false},
    {"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 3\r\n\r\nabc",
     false,
     1,
     {201},
     false,
     false},
    {"HTTP/1.1 200 OK\r\nConnection: keep-alive, Close\r\nContent-Length: 0\r\n\r\n",
     false,
     1,
     {200},
     true,
     false},
    {"HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\nx", false, 1, {200}, true, false},
    {"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 1\r\n\r\nx",
     false,
     1,
     {200},
     false,
     false},
    {"HTTP/1.1 200 OK\nContent-Length: 1\n\nx", false, 1, {200}, false, false},
    {"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
     true,
     2,
     {200, 200},
     false,
     false},
    {"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nxHTTX/1.1 200 OK\r\n\r\n",
     false,
     1,
     {200},
     false,
     true},
    {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", false, 0, {0}, false, true},
    {"HTTP/1.1 200 OK\r\n\r\n", false, 0, {0}, false, true},
    {"HTTP/1.1 200 OK\r\nContent-Length: 1x\r\n\r\n", false, 0, {0}, false, true},
    {"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
     false,
     0,
     {0},
     false,
     true},
    {"HTTP/1.1 2000 OK\r\n\r\n", false, 0, {0}, false, true},
    {"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n", false, 0, {0}, false, true},
};

/* Feed c->stream split at every position (and byte by byte) and check the responses. */
Test(rb_resp, table_at_every_split)
{
    for (size_t i = 0; i < sizeof(RESP_CASES) / sizeof(RESP_CASES[0]); i++) {
        const struct resp_case *c = &RESP_CASES[i];
        size_t len = strlen(c->stream);
        for (size_t chunk = 1; chunk <= len; chunk++) {
            struct rb_resp r;
            rb_resp_init(&r, c->head);
            int got = 0, rc = 0;
            bool last_close = false;
            for (size_t off = 0; off < len && rc >= 0;) {
                size_t n = len - off < chunk ? len - off : chunk;
                const char *p = c->stream + off;
                size_t left = n;
                struct rb_resp_info info;
                while ((rc = rb_resp_next(&r, &p, &left, &info)) == 1) {
                    cr_assert(got < 4);
                    cr_expect_eq(info.status, c->status[got], "case %zu chunk %zu: status %u", i,
                                 chunk, info.status);
                    last_close = info.close;
                    got++;
                }
                off += n;
            }
            cr_expect_eq(got, c->n, "case %zu chunk %zu: %d responses", i, chunk, got);
            cr_expect_eq(rc < 0, c->error, "case %zu chunk %zu: rc %d", i, chunk, rc);
            if (c->n)
                cr_expect_eq(last_close, c->close_last, "case %zu chunk %zu: close", i, chunk);
            rb_resp_free(&r);
        }
    }
}

Test(rb_resp, overlong_head_is_refused)
{
    struct rb_resp r;
    rb_resp_init(&r, false);
    char *big = malloc(RB_RESP_MAX_HEAD + 100);
    memset(big, 'a', RB_RESP_MAX_HEAD + 100);
    memcpy(big, "HTTP/1.1 200 OK\r\nX: ", 20);
    const char *p = big;
    size_t n = 4096;
    struct rb_resp_info info;
    int rc = 0;
    for (size_t off = 0; off < RB_RESP_MAX_HEAD + 100 && rc == 0; off += 4096) {
        p = big + off;
        n = RB_RESP_MAX_HEAD + 100 - off < 4096 ? RB_RESP_MAX_HEAD + 100 - off : 4096;
        rc = rb_resp_next(&r, &p, &n, &info);
    }
    cr_expect_eq(rc, -EPROTO);
    rb_resp_free(&r);
    free(big);
}

/* ---- the histogram ---------------------------------------------------------------------- */

Test(rb_hist, bucket_bounds_within_one_percent)
{
    /* every value's bucket upper bound is >= the value and at most 1 % above it */
    for (uint64_t v = 1; v <= RB_HIST_MAX_NS; v = v + v / 333 + 1) { /* ~0.3 % steps, integer math */
        unsigned i = rb_hist_index(v);
        uint64_t hi = rb_hist_bucket_high(i);
        cr_assert(i < RB_HIST_BUCKETS);
        cr_assert(hi >= v, "v %llu hi %llu", (unsigned long long)v, (unsigned long long)hi);
        cr_assert((double)(hi - v) <= 0.01 * (double)v, "v %llu hi %llu", (unsigned long long)v,
                  (unsigned long long)hi);
        if (i > 0)
            cr_assert(rb_hist_bucket_high(i - 1) < v, "v %llu below its bucket",
                      (unsigned long long)v);
    }
    cr_expect_lt(rb_hist_index(UINT64_MAX), RB_HIST_BUCKETS);
}

Test(rb_hist, percentiles_of_a_known_distribution)
{
    struct rb_hist *h = malloc(sizeof(*h)), *g = malloc(sizeof(*g));
    rb_hist_reset(h);
    rb_hist_reset(g);
    cr_expect_eq(rb_hist_percentile(h, 99), 0);
    /* 1..100000 us, split over two histograms and merged */
    for (uint64_t us = 1; us <= 100000; us++)
        rb_hist_record(us % 2 ? h : g, us * 1000);
    rb_hist_merge(h, g);
    static const struct {
        double p;
        double want_us;
    } cases[] = {{50, 50000}, {90, 90000}, {99, 99000}, {99.9, 99900}, {100, 100000}};
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        double got = (double)rb_hist_percentile(h, cases[i].p) / 1000.0;
        cr_expect(got >= cases[i].want_us && got <= cases[i].want_us * 1.01, "p%g = %.1f us",
                  cases[i].p, got);
    }
    cr_expect_eq(h->count, 100000);
    cr_expect_eq(h->max, 100000000);
    cr_expect_eq(h->min, 1000);
    free(h);
    free(g);
}

/* ---- the JSON lookup -------------------------------------------------------------------- */

Test(rb_client, json_get_reads_top_level_members_only)
{
    static const char j[] = " {\"server\":{\"sum\":1,\"a\":[1,{\"avg\":2}]},\"s\":\"x\\\"}\","
                            "\"sum\":499.5, \"avg\" : -0.25e1 ,\"n\":null}";
    static const struct {
        const char *key, *want;
        int rc;
    } cases[] = {{"sum", "499.5", 0},
                 {"avg", "-0.25e1", 0},
                 {"s", "x\\\"}", 0},
                 {"n", "null", 0},
                 {"a", NULL, -ENOENT},
                 {"totalRequests", NULL, -ENOENT},
                 {"server", "{\"sum\":1,\"a\":[1,{\"avg\":2}]}", 0}};
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const char *v = NULL;
        size_t vl = 0;
        int rc = rb_client_json_get(j, strlen(j), cases[i].key, &v, &vl);
        cr_expect_eq(rc, cases[i].rc, "%s: rc %d", cases[i].key, rc);
        if (cases[i].want)
            cr_expect(vl == strlen(cases[i].want) && memcmp(v, cases[i].want, vl) == 0,
                      "%s: got %.*s", cases[i].key, (int)vl, v);
    }
    const char *v;
    size_t vl;
    cr_expect_eq(rb_client_json_get("[1]", 3, "x", &v, &vl), -EINVAL);
    cr_expect_eq(rb_client_json_get("{\"x\"1}", 6, "x", &v, &vl), -EINVAL);
}

Test(rb_client, url_parsing)
{
    static const struct {
        const char *url, *auth, *host, *path;
        unsigned port;
        int rc;
    } cases[] = {
        {"http://127.0.0.1:8080/event", "127.0.0.1:8080", "127.0.0.1", "/event", 8080, 0},
        {"http://127.0.0.1", "127.0.0.1", "127.0.0.1", "/", 80, 0},
        {"HTTP://127.0.0.1:81?x=1", "127.0.0.1:81", "127.0.0.1", "/?x=1", 81, 0},
        {"http://[::1]:9/a/b", "[::1]:9", "::1", "/a/b", 9, 0},
        {"http://[::1]/", "[::1]", "::1", "/", 80, 0},
        {"http://127.0.0.1:0/", NULL, NULL, NULL, 0, -EINVAL},
        {"http://127.0.0.1:/", NULL, NULL, NULL, 0, -EINVAL},
        {"http://:80/", NULL, NULL, NULL, 0, -EINVAL},
        {"https://127.0.0.1/", NULL, NULL, NULL, 0, -EINVAL},
        {"http://[::1/", NULL, NULL, NULL, 0, -EINVAL},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct rb_url u;
        char err[128];
        int rc = rb_client_parse_url(cases[i].url, &u, err, sizeof(err));
        cr_expect_eq(rc, cases[i].rc, "%s: rc %d (%s)", cases[i].url, rc, err);
        if (rc == 0) {
            cr_expect_str_eq(u.authority, cases[i].auth);
            cr_expect_str_eq(u.host, cases[i].host);
            cr_expect_str_eq(u.path, cases[i].path);
            cr_expect_eq(u.port, cases[i].port);
        }
    }
}
