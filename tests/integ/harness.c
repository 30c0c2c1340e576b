/* harness — see harness.h. */
#include "harness.h"

#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <libpq-fe.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pwd.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

/* Startup budget: the ASan build of the server starts in ~50 ms; 5 s leaves room for a loaded
   2-core machine running two test binaries. */
#define START_TIMEOUT_MS 5000
/* SPEC §5: drain within 10 s; 2 s of slack for process teardown under ASan. */
#define STOP_TIMEOUT_MS 12000
#define MAX_ARGS 64

struct it_server {
    pid_t pid;
    uint16_t port;
    bool exited;
    int status;              /* it_signal_wait result once exited */
    int rfd;                 /* read end of the child's stdout+stderr */
    pthread_t reader;
    bool reader_started;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    char *log;               /* everything the child wrote, NUL-terminated */
    size_t log_len, log_cap;
    bool eof;
};

uint64_t it_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void sleep_ms(unsigned ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

/* ------------------------------------------------------------------ spawning */

/* The server binary: see harness.h. */
static const char *bin_path(char *buf, size_t cap)
{
    const char *e = getenv("RINGCOUNT_BIN");
    if (e && *e)
        return e;
    ssize_t n = readlink("/proc/self/exe", buf, cap - 1);
    if (n > 0) {
        buf[n] = '\0';
        /* <build>/tests/integ/test_x -> <build>/ringcount */
        for (int up = 0; up < 3; up++) {
            char *sl = strrchr(buf, '/');
            if (!sl)
                goto fallback;
            *sl = '\0';
        }
        size_t l = strlen(buf);
        if (l + sizeof("/ringcount") <= cap) {
            memcpy(buf + l, "/ringcount", sizeof("/ringcount"));
            if (access(buf, X_OK) == 0)
                return buf;
        }
    }
fallback:
    return "build/ringcount";
}

struct spawn_spec {
    const char *argv[MAX_ARGS + 4];
    char **envp;
    unsigned long nofile; /* RLIMIT_NOFILE for the child; 0 = inherit (it_opts) */
};

/* Build argv and envp before fork: the test may have threads, so the child must not malloc. */
static int spawn_prepare(struct spawn_spec *sp, char *binbuf, size_t bincap,
                         const char *const *args, const char *const *env, bool add_listen)
{
    size_t na = 0, ne = 0, nx = 0;
    sp->argv[na++] = bin_path(binbuf, bincap);
    bool has_listen = false;
    for (size_t i = 0; args && args[i]; i++)
        if (strncmp(args[i], "--listen", 8) == 0)
            has_listen = true;
    if (add_listen && !has_listen) {
        sp->argv[na++] = "--listen";
        sp->argv[na++] = "127.0.0.1:0";
    }
    for (size_t i = 0; args && args[i]; i++) {
        if (na >= MAX_ARGS + 3)
            return -E2BIG;
        sp->argv[na++] = args[i];
    }
    sp->argv[na] = NULL;
    for (char **e = environ; *e; e++)
        ne++;
    for (size_t i = 0; env && env[i]; i++)
        nx++;
    sp->envp = calloc(ne + nx + 2, sizeof(char *));
    if (!sp->envp)
        return -ENOMEM;
    size_t k = 0;
    for (char **e = environ; *e; e++)
        if (strncmp(*e, "RINGCOUNT_", 10) != 0 && strncmp(*e, "DATABASE_URL=", 13) != 0)
            sp->envp[k++] = *e;
    for (size_t i = 0; i < nx; i++)
        sp->envp[k++] = (char *)env[i];
    /* A spill dir of this test process's own (after the test's entries: getenv takes the
       first): servers of parallel tests all default to --node-id 1, and one test's spill file
       must never be replayed into another test's database. */
    static char spill_env[64];
    snprintf(spill_env, sizeof(spill_env), "RINGCOUNT_SPILL_DIR=/tmp/rc-it-spill-%d",
             (int)getpid());
    sp->envp[k++] = spill_env;
    sp->envp[k] = NULL;
    return 0;
}

/* fork+exec with stdout and stderr into a pipe. Returns the pid and the read end, or -errno. */
static int spawn(struct spawn_spec *sp, pid_t *pid, int *rfd)
{
    int p[2];
    if (pipe2(p, O_CLOEXEC) < 0)
        return -errno;
    int devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
    pid_t parent = getpid();
    pid_t c = fork();
    if (c < 0) {
        int e = -errno;
        close(p[0]);
        close(p[1]);
        if (devnull >= 0)
            close(devnull);
        return e;
    }
    if (c == 0) {
        /* Die with the test process: a failed assertion ends it without it_free. */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(127);
        if (devnull >= 0)
            dup2(devnull, 0);
        dup2(p[1], 1);
        dup2(p[1], 2);
        if (sp->nofile) {
            struct rlimit rl = {.rlim_cur = sp->nofile, .rlim_max = sp->nofile};
            if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
                _exit(126);
        }
        execve(sp->argv[0], (char *const *)sp->argv, sp->envp);
        static const char msg[] = "harness: execve of the server failed (set RINGCOUNT_BIN or "
                                  "run `make build/ringcount` from the repository root)\n";
        ssize_t w = write(2, msg, sizeof(msg) - 1);
        (void)w;
        _exit(127);
    }
    close(p[1]);
    if (devnull >= 0)
        close(devnull);
    *pid = c;
    *rfd = p[0];
    return 0;
}

/* Append n bytes to the log, keeping it NUL-terminated. Caller holds mu. */
static void log_append(struct it_server *s, const char *b, size_t n)
{
    if (s->log_len + n + 1 > s->log_cap) {
        size_t cap = s->log_cap ? s->log_cap : 8192;
        while (cap < s->log_len + n + 1)
            cap *= 2;
        char *nl = realloc(s->log, cap);
        if (!nl)
            return; /* keep what we have: logs are diagnostics */
        s->log = nl;
        s->log_cap = cap;
    }
    memcpy(s->log + s->log_len, b, n);
    s->log_len += n;
    s->log[s->log_len] = '\0';
}

/* Drains the child's output so it never blocks on a full pipe. */
static void *reader_main(void *arg)
{
    struct it_server *s = arg;
    char b[4096];
    for (;;) {
        ssize_t n = read(s->rfd, b, sizeof(b));
        if (n < 0 && errno == EINTR)
            continue;
        pthread_mutex_lock(&s->mu);
        if (n > 0)
            log_append(s, b, (size_t)n);
        else
            s->eof = true;
        pthread_cond_broadcast(&s->cv);
        pthread_mutex_unlock(&s->mu);
        if (n <= 0)
            return NULL;
    }
}

static void abs_deadline(struct timespec *ts, int timeout_ms)
{
    clock_gettime(CLOCK_MONOTONIC, ts);
    ts->tv_sec += timeout_ms / 1000;
    ts->tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (ts->tv_nsec >= 1000000000L) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000L;
    }
}

/* Port from the "listening" log line, 0 if that line has not arrived (caller holds mu). */
static uint16_t find_port(const struct it_server *s)
{
    if (!s->log)
        return 0;
    const char *l = strstr(s->log, "\"msg\":\"listening\"");
    if (!l)
        return 0;
    const char *eol = strchr(l, '\n');
    if (!eol)
        return 0; /* line not complete yet */
    while (l > s->log && l[-1] != '\n')
        l--;
    const char *p = strstr(l, "\"port\":");
    if (!p || p > eol)
        return 0;
    unsigned long v = strtoul(p + 7, NULL, 10);
    return v > 0 && v < 65536 ? (uint16_t)v : 0;
}

struct it_server *it_start(const char *const *args, const char *const *env)
{
    return it_start_ex(args, env, NULL);
}

struct it_server *it_start_ex(const char *const *args, const char *const *env,
                              const struct it_opts *opts)
{
    struct it_server *s = calloc(1, sizeof(*s));
    cr_assert_not_null(s);
    s->rfd = -1;
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&s->cv, &ca);
    pthread_condattr_destroy(&ca);
    pthread_mutex_init(&s->mu, NULL);

    struct spawn_spec sp;
    char bin[PATH_MAX];
    int rc = spawn_prepare(&sp, bin, sizeof(bin), args, env, true);
    cr_assert_eq(rc, 0, "spawn_prepare: %s", strerror(-rc));
    sp.nofile = opts ? opts->nofile : 0;
    rc = spawn(&sp, &s->pid, &s->rfd);
    free(sp.envp);
    cr_assert_eq(rc, 0, "cannot start %s: %s", sp.argv[0], strerror(-rc));
    rc = pthread_create(&s->reader, NULL, reader_main, s);
    cr_assert_eq(rc, 0, "pthread_create: %s", strerror(rc));
    s->reader_started = true;

    struct timespec dl;
    abs_deadline(&dl, START_TIMEOUT_MS);
    pthread_mutex_lock(&s->mu);
    while (!(s->port = find_port(s)) && !s->eof)
        if (pthread_cond_timedwait(&s->cv, &s->mu, &dl) == ETIMEDOUT)
            break;
    uint16_t port = s->port;
    pthread_mutex_unlock(&s->mu);
    if (!port) {
        static char out[8192];
        it_log_copy(s, out, sizeof(out));
        it_free(s);
        cr_assert_fail("server %s did not log \"listening\" with a port within %d ms; output:\n%s",
                       sp.argv[0], START_TIMEOUT_MS, out);
    }
    return s;
}

uint16_t it_port(const struct it_server *srv)
{
    return srv->port;
}

pid_t it_pid(const struct it_server *srv)
{
    return srv->pid;
}

static int decode_status(int st)
{
    if (WIFEXITED(st))
        return WEXITSTATUS(st);
    if (WIFSIGNALED(st))
        return 128 + WTERMSIG(st);
    return -EPROTO;
}

/* Wait for the child to exit within timeout_ms. Exit status, or -ETIMEDOUT. */
static int reap(pid_t pid, int timeout_ms)
{
    uint64_t end = it_now_ms() + (uint64_t)timeout_ms;
    for (;;) {
        int st;
        pid_t r = waitpid(pid, &st, WNOHANG);
        if (r == pid)
            return decode_status(st);
        if (r < 0 && errno != EINTR)
            return -errno;
        if (it_now_ms() >= end)
            return -ETIMEDOUT;
        sleep_ms(5);
    }
}

static void join_reader(struct it_server *s)
{
    if (s->reader_started) {
        pthread_join(s->reader, NULL);
        s->reader_started = false;
    }
    if (s->rfd >= 0) {
        close(s->rfd);
        s->rfd = -1;
    }
}

int it_signal_wait(struct it_server *srv, int sig, int timeout_ms)
{
    if (srv->exited)
        return srv->status;
    kill(srv->pid, sig);
    int rc = reap(srv->pid, timeout_ms);
    if (rc == -ETIMEDOUT)
        return rc;
    srv->exited = true;
    srv->status = rc;
    join_reader(srv); /* the pipe reaches EOF once the child is gone: all output is in */
    return rc;
}

int it_stop(struct it_server *srv)
{
    int rc = it_signal_wait(srv, SIGTERM, STOP_TIMEOUT_MS);
    if (rc == -ETIMEDOUT) {
        static char out[8192];
        it_signal_wait(srv, SIGKILL, STOP_TIMEOUT_MS);
        it_log_copy(srv, out, sizeof(out));
        cr_assert_fail("server did not exit within %d ms of SIGTERM; output:\n%s",
                       STOP_TIMEOUT_MS, out);
    }
    return rc;
}

void it_free(struct it_server *srv)
{
    if (!srv)
        return;
    if (!srv->exited)
        it_signal_wait(srv, SIGKILL, STOP_TIMEOUT_MS);
    join_reader(srv);
    pthread_mutex_destroy(&srv->mu);
    pthread_cond_destroy(&srv->cv);
    free(srv->log);
    free(srv);
}

bool it_log_wait(struct it_server *srv, const char *needle, int timeout_ms)
{
    struct timespec dl;
    abs_deadline(&dl, timeout_ms);
    pthread_mutex_lock(&srv->mu);
    bool found;
    while (!(found = srv->log && strstr(srv->log, needle)) && !srv->eof)
        if (pthread_cond_timedwait(&srv->cv, &srv->mu, &dl) == ETIMEDOUT)
            break;
    pthread_mutex_unlock(&srv->mu);
    return found;
}

size_t it_log_copy(struct it_server *srv, char *out, size_t cap)
{
    if (!cap)
        return 0;
    pthread_mutex_lock(&srv->mu);
    size_t n = srv->log_len, from = 0;
    if (n > cap - 1) {
        from = n - (cap - 1);
        n = cap - 1;
    }
    if (n)
        memcpy(out, srv->log + from, n);
    out[n] = '\0';
    pthread_mutex_unlock(&srv->mu);
    return n;
}

int it_run(const char *const *args, const char *const *env, int timeout_ms, char *out, size_t cap)
{
    struct spawn_spec sp;
    char bin[PATH_MAX];
    int rc = spawn_prepare(&sp, bin, sizeof(bin), args, env, false);
    sp.nofile = 0;
    cr_assert_eq(rc, 0, "spawn_prepare: %s", strerror(-rc));
    pid_t pid;
    int rfd;
    rc = spawn(&sp, &pid, &rfd);
    free(sp.envp);
    cr_assert_eq(rc, 0, "cannot start %s: %s", sp.argv[0], strerror(-rc));

    size_t len = 0;
    uint64_t end = it_now_ms() + (uint64_t)timeout_ms;
    bool timed_out = false;
    for (;;) {
        uint64_t now = it_now_ms();
        if (now >= end) {
            timed_out = true;
            break;
        }
        struct pollfd pfd = {.fd = rfd, .events = POLLIN};
        int pr = poll(&pfd, 1, (int)(end - now));
        if (pr < 0 && errno == EINTR)
            continue;
        if (pr <= 0)
            continue;
        char b[4096];
        ssize_t n = read(rfd, b, sizeof(b));
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        size_t take = (size_t)n, room = cap ? cap - 1 - len : 0;
        if (take > room)
            take = room; /* keep draining so the child never blocks on a full pipe */
        if (take)
            memcpy(out + len, b, take);
        len += take;
    }
    if (cap)
        out[len] = '\0';
    close(rfd);
    if (timed_out) {
        kill(pid, SIGKILL);
        reap(pid, STOP_TIMEOUT_MS);
        return -ETIMEDOUT;
    }
    rc = reap(pid, timeout_ms);
    if (rc == -ETIMEDOUT) {
        kill(pid, SIGKILL);
        reap(pid, STOP_TIMEOUT_MS);
    }
    return rc;
}

/* ------------------------------------------------------------------ connections */

int it_connect_from(uint32_t src, uint16_t port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    struct sockaddr_in from = {.sin_family = AF_INET};
    from.sin_addr.s_addr = htonl(src);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (src && bind(fd, (struct sockaddr *)&from, sizeof(from)) < 0) {
        int e = -errno;
        close(fd);
        return e;
    }
    while (connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0) {
        if (errno == EINTR)
            continue;
        int e = -errno;
        close(fd);
        return e;
    }
    return fd;
}

int it_connect(uint16_t port)
{
    return it_connect_from(0, port);
}

int it_conn_open_from(struct it_conn *c, uint32_t src, uint16_t port)
{
    c->len = 0;
    c->fd = it_connect_from(src, port);
    if (c->fd < 0) {
        int e = c->fd;
        c->fd = -1;
        return e;
    }
    return 0;
}

int it_conn_open(struct it_conn *c, uint16_t port)
{
    return it_conn_open_from(c, 0, port);
}

void it_conn_close(struct it_conn *c)
{
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    c->len = 0;
}

int it_send_all(int fd, const void *buf, size_t n)
{
    const char *p = buf;
    while (n) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Case-insensitive "does the field line at l (length n) have name `name`?"; sets *v and *vn to
   its OWS-trimmed value. */
static bool field_is(const char *l, size_t n, const char *name, const char **v, size_t *vn)
{
    size_t nl = strlen(name);
    if (n <= nl || l[nl] != ':' || strncasecmp(l, name, nl) != 0)
        return false;
    const char *b = l + nl + 1, *e = l + n;
    while (b < e && (*b == ' ' || *b == '\t'))
        b++;
    while (e > b && (e[-1] == ' ' || e[-1] == '\t'))
        e--;
    *v = b;
    *vn = (size_t)(e - b);
    return true;
}

ssize_t it_parse_response(const char *buf, size_t len, struct it_resp *r)
{
    const char *end = memmem(buf, len, "\r\n\r\n", 4);
    if (!end)
        return len > IT_HEAD_MAX ? -EMSGSIZE : 0;
    size_t hl = (size_t)(end - buf) + 4;
    if (hl > IT_HEAD_MAX)
        return -EMSGSIZE;
    /* "HTTP/1.x NNN reason\r\n" */
    if (hl < 14 || memcmp(buf, "HTTP/1.", 7) != 0 || !isdigit((unsigned char)buf[7]) ||
        buf[8] != ' ' || !isdigit((unsigned char)buf[9]) || !isdigit((unsigned char)buf[10]) ||
        !isdigit((unsigned char)buf[11]) || (buf[12] != ' ' && buf[12] != '\r'))
        return -EPROTO;
    r->minor = buf[7] - '0';
    r->status = (buf[9] - '0') * 100 + (buf[10] - '0') * 10 + (buf[11] - '0');
    r->close = false;
    bool has_cl = false;
    uint64_t cl = 0;
    const char *l = memchr(buf, '\n', hl) + 1;
    while (l < buf + hl - 2) {
        const char *eol = memchr(l, '\n', (size_t)(buf + hl - l));
        if (!eol || eol == l || eol[-1] != '\r')
            return -EPROTO;
        size_t n = (size_t)(eol - 1 - l);
        const char *v;
        size_t vn;
        if (field_is(l, n, "content-length", &v, &vn)) {
            if (has_cl || vn == 0 || vn > 18)
                return -EPROTO;
            for (size_t i = 0; i < vn; i++) {
                if (!isdigit((unsigned char)v[i]))
                    return -EPROTO;
                cl = cl * 10 + (uint64_t)(v[i] - '0');
            }
            has_cl = true;
        } else if (field_is(l, n, "connection", &v, &vn)) {
            if (memmem(v, vn, "close", 5))
                r->close = true;
        }
        l = eol + 1;
    }
    bool no_body = r->status < 200 || r->status == 204 || r->status == 304;
    if (no_body) {
        if (has_cl && cl != 0 && r->status != 204)
            return -EPROTO;
        cl = 0;
    } else if (!has_cl) {
        return -EPROTO;
    }
    if (cl > IT_BODY_MAX)
        return -EMSGSIZE;
    if (len < hl + cl)
        return 0;
    memcpy(r->head, buf, hl);
    r->head[hl] = '\0';
    r->head_len = hl;
    memcpy(r->body, buf + hl, cl);
    r->body[cl] = '\0';
    r->body_len = cl;
    return (ssize_t)(hl + cl);
}

int it_readable(struct it_conn *c, int timeout_ms)
{
    if (c->len)
        return 1;
    struct pollfd pfd = {.fd = c->fd, .events = POLLIN};
    uint64_t end = it_now_ms() + (uint64_t)(timeout_ms > 0 ? timeout_ms : 0);
    for (;;) {
        uint64_t now = it_now_ms();
        int left = now >= end ? 0 : (int)(end - now);
        int pr = poll(&pfd, 1, left);
        if (pr < 0 && errno == EINTR)
            continue;
        if (pr < 0)
            return -errno;
        return pr > 0;
    }
}

int it_read_response(struct it_conn *c, struct it_resp *r, int timeout_ms)
{
    uint64_t end = it_now_ms() + (uint64_t)timeout_ms;
    for (;;) {
        ssize_t n = it_parse_response(c->buf, c->len, r);
        if (n > 0) {
            memmove(c->buf, c->buf + n, c->len - (size_t)n);
            c->len -= (size_t)n;
            return 0;
        }
        if (n < 0)
            return (int)n;
        if (c->len == sizeof(c->buf))
            return -EMSGSIZE;
        uint64_t now = it_now_ms();
        if (now >= end)
            return -ETIMEDOUT;
        struct pollfd pfd = {.fd = c->fd, .events = POLLIN};
        int pr = poll(&pfd, 1, (int)(end - now));
        if (pr < 0 && errno != EINTR)
            return -errno;
        if (pr <= 0)
            continue;
        ssize_t k = recv(c->fd, c->buf + c->len, sizeof(c->buf) - c->len, 0);
        if (k == 0)
            return -ENOTCONN;
        if (k < 0) {
            if (errno == EINTR || errno == EAGAIN)
                continue;
            return -errno;
        }
        c->len += (size_t)k;
    }
}

int it_request(struct it_conn *c, const char *raw, struct it_resp *r)
{
    int rc = it_send_all(c->fd, raw, strlen(raw));
    if (rc < 0)
        return rc;
    return it_read_response(c, r, 5000);
}

int it_expect_closed(struct it_conn *c, int timeout_ms)
{
    if (c->len)
        return -EPROTO;
    uint64_t end = it_now_ms() + (uint64_t)timeout_ms;
    for (;;) {
        uint64_t now = it_now_ms();
        if (now >= end)
            return -ETIMEDOUT;
        struct pollfd pfd = {.fd = c->fd, .events = POLLIN};
        int pr = poll(&pfd, 1, (int)(end - now));
        if (pr < 0 && errno != EINTR)
            return -errno;
        if (pr <= 0)
            continue;
        ssize_t k = recv(c->fd, c->buf, sizeof(c->buf), 0);
        if (k == 0 || (k < 0 && (errno == ECONNRESET || errno == EPIPE)))
            return 0;
        if (k < 0) {
            if (errno == EINTR || errno == EAGAIN)
                continue;
            return -errno;
        }
        c->len = (size_t)k;
        return -EPROTO;
    }
}

int it_header(const struct it_resp *r, const char *name, char *out, size_t cap)
{
    const char *l = strchr(r->head, '\n');
    while (l && *++l && *l != '\r') {
        const char *eol = strchr(l, '\r');
        if (!eol)
            break;
        const char *v;
        size_t vn;
        if (field_is(l, (size_t)(eol - l), name, &v, &vn)) {
            if (vn + 1 > cap)
                return -ENOSPC;
            memcpy(out, v, vn);
            out[vn] = '\0';
            return (int)vn;
        }
        l = strchr(eol, '\n');
    }
    return -ENOENT;
}

/* ------------------------------------------------------------------ JSON and decimals */

int it_json_num(const char *body, const char *key, char *out, size_t cap)
{
    size_t kl = strlen(key);
    for (const char *p = strchr(body, '"'); p; p = strchr(p + 1, '"')) {
        if (strncmp(p + 1, key, kl) != 0 || p[1 + kl] != '"')
            continue;
        const char *q = p + 2 + kl;
        while (*q == ' ' || *q == '\t' || *q == '\r' || *q == '\n')
            q++;
        if (*q != ':')
            continue; /* the key text appeared as a value */
        q++;
        while (*q == ' ' || *q == '\t' || *q == '\r' || *q == '\n')
            q++;
        const char *b = q, *e;
        if (*q == '"') {
            b = ++q;
            while (*q && *q != '"')
                q += (*q == '\\' && q[1]) ? 2 : 1;
            if (*q != '"')
                return -ENOENT;
            e = q;
        } else {
            while (*q && !strchr(",}] \t\r\n", *q))
                q++;
            e = q;
        }
        size_t n = (size_t)(e - b);
        if (n + 1 > cap)
            return -ENOSPC;
        memcpy(out, b, n);
        out[n] = '\0';
        return (int)n;
    }
    return -ENOENT;
}

long long it_flushes(uint16_t port)
{
    struct it_conn *c = malloc(sizeof(*c));
    struct it_resp *r = malloc(sizeof(*r));
    long long n = -ENOMEM;
    if (c && r && (n = it_conn_open(c, port)) >= 0) {
        n = it_request(c, "GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n", r);
        if (n == 0)
            n = r->status != 200 ? -EPROTO
                                 : it_metric_sample(r->body, "ringcount_flush_duration_seconds_count");
        if (n == -1)
            n = -ENOENT;
        it_conn_close(c);
    }
    free(c);
    free(r);
    return n;
}

long long it_wait_flushed(uint16_t port, int timeout_ms)
{
    uint64_t t0 = it_now_ms();
    long long n0 = it_flushes(port), n = n0;
    while (n >= 0 && n < n0 + 2) {
        if (it_now_ms() - t0 >= (uint64_t)timeout_ms)
            return -ETIMEDOUT;
        sleep_ms(1);
        n = it_flushes(port);
    }
    return n < 0 ? n : (long long)(it_now_ms() - t0);
}

void it_set_clock(const char *file, long long t)
{
    FILE *f = fopen(file, "w");
    cr_assert_not_null(f, "%s: %s", file, strerror(errno));
    fprintf(f, "%lld\n", t);
    cr_assert_eq(fclose(f), 0);
}

long long it_metric_sample(const char *body, const char *series)
{
    size_t sl = strlen(series);
    for (const char *p = body; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL)
        if (strncmp(p, series, sl) == 0 && p[sl] == ' ')
            return strtoll(p + sl + 1, NULL, 10);
    return -1;
}

int it_json_u64(const char *body, const char *key, uint64_t *out)
{
    char t[32];
    int n = it_json_num(body, key, t, sizeof(t));
    if (n < 0)
        return n;
    if (n == 0 || (n > 1 && t[0] == '0'))
        return -EINVAL;
    uint64_t v = 0;
    for (int i = 0; i < n; i++) {
        if (!isdigit((unsigned char)t[i]) || v > (UINT64_MAX - 9) / 10)
            return -EINVAL;
        v = v * 10 + (uint64_t)(t[i] - '0');
    }
    *out = v;
    return 0;
}

int it_dec_parse(const char *s, it_dec *out)
{
    bool neg = *s == '-';
    if (neg)
        s++;
    it_dec ip = 0, fp = 0;
    int nd = 0;
    for (; isdigit((unsigned char)*s); s++) {
        if (++nd > 30) /* 1e30 micro-units * 1e6 < 2^127 */
            return -EINVAL;
        ip = ip * 10 + (*s - '0');
    }
    if (!nd)
        return -EINVAL;
    int nf = 0;
    if (*s == '.') {
        for (s++; isdigit((unsigned char)*s); s++) {
            if (++nf > 6)
                return -EINVAL;
            fp = fp * 10 + (*s - '0');
        }
        if (!nf)
            return -EINVAL;
    }
    if (*s)
        return -EINVAL;
    for (; nf < 6; nf++)
        fp *= 10;
    it_dec v = ip * 1000000 + fp;
    *out = neg ? -v : v;
    return 0;
}

size_t it_dec_format(it_dec v, char *out)
{
    char tmp[48];
    size_t n = 0;
    unsigned __int128 u = v < 0 ? (unsigned __int128)(-(v + 1)) + 1 : (unsigned __int128)v;
    unsigned __int128 ip = u / 1000000;
    unsigned frac = (unsigned)(u % 1000000);
    if (v < 0)
        out[n++] = '-';
    size_t t = 0;
    do {
        tmp[t++] = (char)('0' + (int)(ip % 10));
        ip /= 10;
    } while (ip);
    while (t)
        out[n++] = tmp[--t];
    if (frac) {
        char f[7];
        snprintf(f, sizeof(f), "%06u", frac);
        int k = 6;
        while (f[k - 1] == '0')
            k--;
        out[n++] = '.';
        memcpy(out + n, f, (size_t)k);
        n += (size_t)k;
    }
    out[n] = '\0';
    return n;
}

it_dec it_dec_div_round(it_dec num, uint64_t den)
{
    bool neg = num < 0;
    unsigned __int128 u = neg ? (unsigned __int128)(-(num + 1)) + 1 : (unsigned __int128)num;
    unsigned __int128 q = u / den, r = u % den;
    if (r * 2 > den || (r * 2 == den && (q & 1)))
        q++;
    return neg ? -(it_dec)q : (it_dec)q;
}

/* ------------------------------------------------------------------ PostgreSQL clusters */

static const char *pg_bin(void)
{
    const char *s = getenv("RINGCOUNT_PG_BIN");
    return s && *s ? s : "/usr/lib/postgresql/15/bin";
}

static const char *as_pg(void)
{
    return geteuid() == 0 ? "runuser -u postgres -- " : "";
}

uint16_t it_pg_port(const char *dir)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/port", dir);
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    unsigned v = 0;
    int n = fscanf(f, "%u", &v);
    fclose(f);
    return n == 1 && v > 0 && v < 65536 ? (uint16_t)v : 0;
}

int it_pg_ctl_mode(const char *dir, const char *what, const char *mode)
{
    /* dir/port (it_pg_start_tcp) adds the TCP listener; without it, the unix socket only */
    char listen[96];
    uint16_t port = it_pg_port(dir);
    if (port)
        snprintf(listen, sizeof(listen), "-c listen_addresses=127.0.0.1 -c port=%u", port);
    else
        snprintf(listen, sizeof(listen), "-c listen_addresses=''");
    char cmd[4096]; /* dir is a short mkdtemp path */
    snprintf(cmd, sizeof(cmd),
             "%s%s/pg_ctl -D %s/data -l %s/log -m %s -w -o \"-k %s %s -c fsync=off\""
             " %s >>%s/start.err 2>&1",
             as_pg(), pg_bin(), dir, dir, mode, dir, listen, what, dir);
    return system(cmd);
}

int it_pg_ctl(const char *dir, const char *what)
{
    return it_pg_ctl_mode(dir, what, "fast");
}

uint16_t it_free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return 0;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t al = sizeof(a);
    uint16_t port = 0;
    if (bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0 &&
        getsockname(fd, (struct sockaddr *)&a, &al) == 0)
        port = ntohs(a.sin_port);
    close(fd);
    return port;
}

/* it_pg_start, and with tcp the TCP listener of it_pg_start_tcp (port in dir/port). */
static int pg_start(char *dir, size_t cap, const char *prefix, bool tcp, uint16_t *port_out,
                    char *err, size_t errcap)
{
    snprintf(dir, cap, "/tmp/%s-XXXXXX", prefix);
    if (!mkdtemp(dir)) {
        snprintf(err, errcap, "mkdtemp: %s", strerror(errno));
        dir[0] = 0;
        return -1;
    }
    chmod(dir, 0755);
    struct passwd *pw = geteuid() == 0 ? getpwnam("postgres") : NULL;
    if (geteuid() == 0 && (!pw || chown(dir, pw->pw_uid, pw->pw_gid) < 0)) {
        snprintf(err, errcap, "no postgres user to run PostgreSQL as (we are root)");
        return -1;
    }
    char cmd[4096];
    snprintf(cmd, sizeof(cmd),
             "%s%s/initdb -D %s/data -U postgres -A trust -E UTF8 --no-sync >%s/start.err 2>&1",
             as_pg(), pg_bin(), dir, dir);
    if (system(cmd) != 0) {
        snprintf(err, errcap, "initdb failed: see %.100s/start.err", dir);
        return -1;
    }
    uint16_t port = 0;
    /* The free port may be taken between our close and PostgreSQL's bind: try a few. */
    for (int attempt = 0;; attempt++) {
        if (tcp) {
            char path[4096];
            snprintf(path, sizeof(path), "%s/port", dir);
            FILE *f = fopen(path, "w");
            port = it_free_port();
            if (!f || !port || fprintf(f, "%u\n", port) < 0) {
                if (f)
                    fclose(f);
                snprintf(err, errcap, "cannot pick a TCP port / write %.100s/port", dir);
                return -1;
            }
            fclose(f);
        }
        if (it_pg_ctl(dir, "start") == 0)
            break;
        if (!tcp || attempt == 2) {
            snprintf(err, errcap, "starting PostgreSQL failed: see %.100s/start.err and %.100s/log",
                     dir, dir);
            return -1;
        }
    }
    char pflag[32] = "";
    if (tcp)
        snprintf(pflag, sizeof(pflag), "-p %u ", port);
    snprintf(cmd, sizeof(cmd),
             "%s%s/psql -h %s %s-U postgres -d postgres -qc 'CREATE DATABASE ringcount' >>%s/start.err 2>&1",
             as_pg(), pg_bin(), dir, pflag, dir);
    if (system(cmd) != 0) {
        snprintf(err, errcap, "CREATE DATABASE failed: see %.100s/start.err", dir);
        return -1;
    }
    if (port_out)
        *port_out = port;
    return 0;
}

int it_pg_start(char *dir, size_t cap, const char *prefix, char *err, size_t errcap)
{
    return pg_start(dir, cap, prefix, false, NULL, err, errcap);
}

int it_pg_start_tcp(char *dir, size_t cap, const char *prefix, uint16_t *port, char *err,
                    size_t errcap)
{
    return pg_start(dir, cap, prefix, true, port, err, errcap);
}

static void pg_quiet(void *arg, const char *msg)
{
    (void)arg;
    (void)msg;
}

int it_pg_sql(const char *dir, const char *sql, char *out, size_t cap)
{
    return it_pg_sql_db(dir, "ringcount", sql, out, cap);
}

int it_pg_sql_db(const char *dir, const char *db, const char *sql, char *out, size_t cap)
{
    char ci[4200];
    uint16_t port = it_pg_port(dir);
    if (port)
        snprintf(ci, sizeof(ci), "host=%s port=%u dbname=%s user=postgres connect_timeout=5", dir,
                 port, db);
    else
        snprintf(ci, sizeof(ci), "host=%s dbname=%s user=postgres connect_timeout=5", dir, db);
    if (cap)
        out[0] = '\0';
    PGconn *c = PQconnectdb(ci);
    if (!c || PQstatus(c) != CONNECTION_OK) {
        if (cap)
            snprintf(out, cap, "connect %s: %s", ci, c ? PQerrorMessage(c) : "out of memory");
        PQfinish(c);
        return -1;
    }
    PQsetNoticeProcessor(c, pg_quiet, NULL);
    PGresult *r = PQexec(c, sql);
    int rc = 0;
    ExecStatusType st = PQresultStatus(r);
    if (st == PGRES_TUPLES_OK) {
        if (cap && PQntuples(r) > 0 && PQnfields(r) > 0 && !PQgetisnull(r, 0, 0))
            snprintf(out, cap, "%s", PQgetvalue(r, 0, 0));
    } else if (st != PGRES_COMMAND_OK) {
        if (cap)
            snprintf(out, cap, "%s", r ? PQresultErrorMessage(r) : PQerrorMessage(c));
        rc = -1;
    }
    PQclear(r);
    PQfinish(c);
    return rc;
}

long long it_pg_i64(const char *dir, const char *sql)
{
    char out[512];
    if (it_pg_sql(dir, sql, out, sizeof(out)) < 0)
        return IT_PG_ERR;
    return out[0] ? strtoll(out, NULL, 10) : 0;
}

long long it_pg_wait_i64(const char *dir, const char *sql, long long want, int ms)
{
    long long v = it_pg_i64(dir, sql);
    for (uint64_t end = it_now_ms() + (uint64_t)ms; v != want && it_now_ms() < end;) {
        sleep_ms(20);
        v = it_pg_i64(dir, sql);
    }
    return v;
}

void it_pg_destroy(const char *dir)
{
    if (!dir || !dir[0])
        return;
    char cmd[4096];
    snprintf(cmd, sizeof(cmd), "%s%s/pg_ctl -D %s/data -m immediate -w stop >/dev/null 2>&1; rm -rf %s",
             as_pg(), pg_bin(), dir, dir);
    if (system(cmd) != 0)
        fprintf(stderr, "cleanup of %s failed\n", dir);
}

void it_pg_shared_start(char *dir, size_t cap, const char *prefix)
{
    char err[512];
    if (it_pg_start(dir, cap, prefix, err, sizeof(err)) == 0)
        setenv("RC_TEST_PGDIR", dir, 1);
    else
        setenv("RC_TEST_PGERR", err, 1);
}

const char *it_pg_shared_dir(void)
{
    const char *d = getenv("RC_TEST_PGDIR");
    if (!d) {
        const char *e = getenv("RC_TEST_PGERR");
        cr_assert_fail("no PostgreSQL test cluster: %s", e ? e : "PRE_ALL hook did not run");
    }
    return d;
}

int it_rq(struct it_conn *c, const char *meth, const char *path, const char *hdrs,
          const char *body, struct it_resp *r)
{
    char raw[8192];
    size_t bl = body ? strlen(body) : 0;
    snprintf(raw, sizeof(raw), "%s %s HTTP/1.1\r\nHost: t\r\n%s%s%zu\r\n\r\n%s", meth, path,
             hdrs ? hdrs : "", "Content-Length: ", bl, body ? body : "");
    int rc = it_request(c, raw, r);
    cr_assert_eq(rc, 0, "%s %s: %s", meth, path, strerror(-rc));
    return r->status;
}

const char *it_err_code(const struct it_resp *r)
{
    static char code[64];
    if (it_json_num(r->body, "code", code, sizeof(code)) < 0)
        return "(none)";
    return code;
}

struct it_conn *it_conn_new(uint16_t port)
{
    struct it_conn *c = malloc(sizeof(*c));
    cr_assert_not_null(c);
    int rc = it_conn_open(c, port);
    cr_assert_eq(rc, 0, "connect: %s", strerror(-rc));
    return c;
}

void it_conn_free(struct it_conn *c)
{
    it_conn_close(c);
    free(c);
}
