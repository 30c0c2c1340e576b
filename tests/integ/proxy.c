/* proxy — see proxy.h. One thread polls the listener, a wake pipe and every live pair; each
   direction of a pair has one fixed buffer (read while it has room, written while it holds
   bytes), EOF is passed on as shutdown(SHUT_WR) once the buffer is drained, and any error
   resets both sockets. */
#include "proxy.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* Bytes one direction holds; data flows src -> dst. */
struct half {
    char *buf;               /* IT_PROXY_BUF bytes */
    size_t len;
    bool eof;                /* src sent FIN */
    bool shut;               /* FIN passed on to dst */
};

struct pair {
    int cfd;                 /* accepted client socket */
    int ufd;                 /* upstream socket, -1 for a connection held by a black hole */
    bool connecting;         /* upstream connect in progress */
    bool dead;               /* black-holed: never polled, never read or written again */
    struct half c2u, u2c;
};

struct it_proxy {
    pthread_t th;
    int lfd;
    int wake[2];
    uint16_t port, upstream;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    /* requests, under mu */
    enum it_proxy_mode mode_req;
    bool reset_req, stop_req;
    unsigned long cmd_seq, done_seq;
    bool exited;
    /* the thread's own */
    enum it_proxy_mode mode;
    struct pair *pairs[IT_PROXY_MAX_PAIRS];
    /* read by any thread */
    unsigned long accepted;
    unsigned open;
};

/* Close with RST instead of FIN. */
static void close_rst(int fd)
{
    if (fd < 0)
        return;
    struct linger lg = {.l_onoff = 1, .l_linger = 0};
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    close(fd);
}

static void pair_free(struct it_proxy *p, int i, bool rst)
{
    struct pair *q = p->pairs[i];
    if (!q)
        return;
    if (rst) {
        close_rst(q->cfd);
        close_rst(q->ufd);
    } else {
        close(q->cfd);
        if (q->ufd >= 0)
            close(q->ufd);
    }
    free(q->c2u.buf);
    free(q->u2c.buf);
    free(q);
    p->pairs[i] = NULL;
    __atomic_sub_fetch(&p->open, 1, __ATOMIC_RELAXED);
}

static int free_slot(const struct it_proxy *p)
{
    for (int i = 0; i < IT_PROXY_MAX_PAIRS; i++)
        if (!p->pairs[i])
            return i;
    return -1;
}

/* Accept one connection and treat it as the mode says. */
static void do_accept(struct it_proxy *p)
{
    int slot = free_slot(p);
    if (slot < 0)
        return;
    int cfd = accept4(p->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (cfd < 0)
        return;
    __atomic_add_fetch(&p->accepted, 1, __ATOMIC_RELAXED);
    if (p->mode == IT_PROXY_REFUSE) {
        close_rst(cfd);
        return;
    }
    struct pair *q = calloc(1, sizeof(*q));
    if (!q) {
        close_rst(cfd);
        return;
    }
    q->cfd = cfd;
    q->ufd = -1;
    if (p->mode == IT_PROXY_BLACKHOLE) {
        q->dead = true; /* held open, never read: the client's bytes go nowhere */
    } else {
        int one = 1;
        setsockopt(cfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        q->c2u.buf = malloc(IT_PROXY_BUF);
        q->u2c.buf = malloc(IT_PROXY_BUF);
        int ufd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        q->ufd = ufd;
        if (!q->c2u.buf || !q->u2c.buf || ufd < 0)
            goto fail;
        setsockopt(ufd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(p->upstream)};
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        if (connect(ufd, (struct sockaddr *)&a, sizeof(a)) < 0) {
            if (errno != EINPROGRESS)
                goto fail;
            q->connecting = true;
        }
    }
    p->pairs[slot] = q;
    __atomic_add_fetch(&p->open, 1, __ATOMIC_RELAXED);
    return;
fail: /* no buffers or no upstream socket: refuse this client with a reset */
    if (q->ufd >= 0)
        close(q->ufd);
    free(q->c2u.buf);
    free(q->u2c.buf);
    free(q);
    close_rst(cfd);
}

/* Read from src into h. false: the pair must be reset. */
static bool pump_in(int src, struct half *h)
{
    if (h->eof || h->len == IT_PROXY_BUF)
        return true;
    ssize_t n = recv(src, h->buf + h->len, IT_PROXY_BUF - h->len, 0);
    if (n > 0)
        h->len += (size_t)n;
    else if (n == 0)
        h->eof = true;
    else if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
        return false;
    return true;
}

/* Write h to dst; pass EOF on once drained. false: the pair must be reset. */
static bool pump_out(int dst, struct half *h)
{
    if (h->len) {
        ssize_t n = send(dst, h->buf, h->len, MSG_NOSIGNAL);
        if (n > 0) {
            memmove(h->buf, h->buf + n, h->len - (size_t)n);
            h->len -= (size_t)n;
        } else if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
            return false;
        }
    }
    if (h->eof && !h->len && !h->shut) {
        shutdown(dst, SHUT_WR);
        h->shut = true;
    }
    return true;
}

/* Apply the requests of the other threads. */
static bool apply_commands(struct it_proxy *p)
{
    char b[64];
    while (read(p->wake[0], b, sizeof(b)) > 0)
        ;
    pthread_mutex_lock(&p->mu);
    enum it_proxy_mode want = p->mode_req;
    bool reset = p->reset_req, stop = p->stop_req;
    unsigned long seq = p->cmd_seq;
    p->reset_req = false;
    pthread_mutex_unlock(&p->mu);

    if (want != p->mode) {
        if (want == IT_PROXY_BLACKHOLE) {
            for (int i = 0; i < IT_PROXY_MAX_PAIRS; i++)
                if (p->pairs[i])
                    p->pairs[i]->dead = true;
        } else if (p->mode == IT_PROXY_BLACKHOLE) {
            for (int i = 0; i < IT_PROXY_MAX_PAIRS; i++)
                if (p->pairs[i] && p->pairs[i]->dead)
                    pair_free(p, i, true);
        }
        p->mode = want;
    }
    if (reset || stop)
        for (int i = 0; i < IT_PROXY_MAX_PAIRS; i++)
            pair_free(p, i, true);

    pthread_mutex_lock(&p->mu);
    p->done_seq = seq;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    return !stop;
}

static void *proxy_main(void *arg)
{
    struct it_proxy *p = arg;
    struct pollfd pf[2 + 2 * IT_PROXY_MAX_PAIRS];
    int who[2 + 2 * IT_PROXY_MAX_PAIRS]; /* pair index of pf[k] (k >= 2) */
    for (;;) {
        int n = 0;
        pf[n++] = (struct pollfd){.fd = p->wake[0], .events = POLLIN};
        pf[n++] = (struct pollfd){.fd = p->lfd, .events = free_slot(p) >= 0 ? POLLIN : 0};
        for (int i = 0; i < IT_PROXY_MAX_PAIRS; i++) {
            struct pair *q = p->pairs[i];
            if (!q || q->dead)
                continue;
            short ce = 0, ue = 0;
            if (q->connecting) {
                ue = POLLOUT;
            } else {
                if (!q->c2u.eof && q->c2u.len < IT_PROXY_BUF)
                    ce |= POLLIN;
                if (q->u2c.len)
                    ce |= POLLOUT;
                if (!q->u2c.eof && q->u2c.len < IT_PROXY_BUF)
                    ue |= POLLIN;
                if (q->c2u.len)
                    ue |= POLLOUT;
            }
            who[n] = i;
            pf[n++] = (struct pollfd){.fd = q->cfd, .events = ce};
            who[n] = i;
            pf[n++] = (struct pollfd){.fd = q->ufd, .events = ue};
        }
        int pr = poll(pf, (nfds_t)n, 1000);
        if (pr < 0 && errno != EINTR)
            break;
        if (pr <= 0)
            continue;
        if (pf[0].revents) {
            if (!apply_commands(p))
                break;
            continue; /* pairs were closed: pf[] is stale, and their fds may be reused */
        }
        if (pf[1].revents & POLLIN)
            do_accept(p);
        for (int k = 2; k < n; k += 2) {
            int i = who[k];
            struct pair *q = p->pairs[i];
            if (!q || q->dead || q->cfd != pf[k].fd)
                continue; /* closed or black-holed by a command above */
            short cr = pf[k].revents, ur = pf[k + 1].revents;
            if (!cr && !ur)
                continue;
            bool ok = true;
            if (q->connecting) {
                if (ur) {
                    int e = 0;
                    socklen_t el = sizeof(e);
                    getsockopt(q->ufd, SOL_SOCKET, SO_ERROR, &e, &el);
                    if (e)
                        ok = false;
                    else
                        q->connecting = false;
                }
                if (ok && (cr & POLLERR))
                    ok = false;
            } else {
                if ((cr | ur) & POLLERR)
                    ok = false;
                if (ok && (cr & (POLLIN | POLLHUP)))
                    ok = pump_in(q->cfd, &q->c2u);
                if (ok && (ur & (POLLIN | POLLHUP)))
                    ok = pump_in(q->ufd, &q->u2c);
                if (ok)
                    ok = pump_out(q->ufd, &q->c2u) && pump_out(q->cfd, &q->u2c);
                /* a hang-up from a side whose EOF we already have: that socket is gone */
                if (ok && (((cr & POLLHUP) && q->c2u.eof) || ((ur & POLLHUP) && q->u2c.eof)) &&
                    !(q->c2u.shut && q->u2c.shut))
                    ok = false;
            }
            if (!ok)
                pair_free(p, i, true);
            else if (q->c2u.shut && q->u2c.shut)
                pair_free(p, i, false);
        }
    }
    for (int i = 0; i < IT_PROXY_MAX_PAIRS; i++)
        pair_free(p, i, true);
    pthread_mutex_lock(&p->mu);
    p->exited = true;
    p->done_seq = p->cmd_seq;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

int it_proxy_start(uint16_t upstream_port, struct it_proxy **out)
{
    struct it_proxy *p = calloc(1, sizeof(*p));
    if (!p)
        return -ENOMEM;
    p->upstream = upstream_port;
    p->mode = p->mode_req = IT_PROXY_PASS;
    p->wake[0] = p->wake[1] = -1;
    p->lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int e = 0;
    if (p->lfd < 0)
        goto fail_errno;
    int one = 1;
    setsockopt(p->lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t al = sizeof(a);
    if (bind(p->lfd, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(p->lfd, 128) < 0 ||
        getsockname(p->lfd, (struct sockaddr *)&a, &al) < 0)
        goto fail_errno;
    p->port = ntohs(a.sin_port);
    if (pipe2(p->wake, O_NONBLOCK | O_CLOEXEC) < 0)
        goto fail_errno;
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&p->cv, &ca);
    pthread_condattr_destroy(&ca);
    pthread_mutex_init(&p->mu, NULL);
    if ((e = pthread_create(&p->th, NULL, proxy_main, p)) != 0) {
        pthread_mutex_destroy(&p->mu);
        pthread_cond_destroy(&p->cv);
        e = -e;
        goto fail;
    }
    *out = p;
    return 0;
fail_errno:
    e = -errno;
fail:
    if (p->lfd >= 0)
        close(p->lfd);
    if (p->wake[0] >= 0)
        close(p->wake[0]);
    if (p->wake[1] >= 0)
        close(p->wake[1]);
    free(p);
    return e;
}

uint16_t it_proxy_port(const struct it_proxy *p)
{
    return p->port;
}

unsigned long it_proxy_accepted(const struct it_proxy *p)
{
    return __atomic_load_n(&p->accepted, __ATOMIC_RELAXED);
}

unsigned it_proxy_open_pairs(const struct it_proxy *p)
{
    return __atomic_load_n(&p->open, __ATOMIC_RELAXED);
}

/* Post the request made under mu (caller holds it, has set the fields), wake the thread and wait
   up to 5 s for it to be applied. Releases mu. */
static void post_and_wait(struct it_proxy *p)
{
    unsigned long seq = ++p->cmd_seq;
    pthread_mutex_unlock(&p->mu);
    char c = 1;
    ssize_t w = write(p->wake[1], &c, 1);
    (void)w; /* a full pipe already wakes the thread */
    struct timespec dl;
    clock_gettime(CLOCK_MONOTONIC, &dl);
    dl.tv_sec += 5;
    pthread_mutex_lock(&p->mu);
    while (p->done_seq < seq && !p->exited)
        if (pthread_cond_timedwait(&p->cv, &p->mu, &dl) == ETIMEDOUT)
            break;
    pthread_mutex_unlock(&p->mu);
}

void it_proxy_set_mode(struct it_proxy *p, enum it_proxy_mode mode)
{
    pthread_mutex_lock(&p->mu);
    p->mode_req = mode;
    post_and_wait(p);
}

void it_proxy_reset_all(struct it_proxy *p)
{
    pthread_mutex_lock(&p->mu);
    p->reset_req = true;
    post_and_wait(p);
}

void it_proxy_stop(struct it_proxy *p)
{
    if (!p)
        return;
    pthread_mutex_lock(&p->mu);
    p->stop_req = true;
    post_and_wait(p);
    pthread_join(p->th, NULL);
    close(p->lfd);
    close(p->wake[0]);
    close(p->wake[1]);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cv);
    free(p);
}
