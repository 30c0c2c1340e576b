/* server — see server.h. The only place (with ring.c) that drives io_uring for the server. */
#include "server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "app.h"
#include "clock.h"
#include "config.h"
#include "counters.h"
#include "live.h"
#include "log.h"
#include "ring.h"
#include "session.h"

enum op {
    OP_ACCEPT = 1,
    OP_RECV,
    OP_SEND,
    OP_CANCEL,
    OP_CLOSE,
    OP_TICK,
    OP_WAKE,
    OP_SIGNAL,
    OP_BACKOFF,
    OP_DRAIN_DEADLINE,
    OP_IGNORE,
};

/* user_data: op in the top byte, a 24-bit generation, the connection index in the low 32. */
#define UD(op, gen, idx) (((uint64_t)(op) << 56) | ((uint64_t)((gen)&0xffffffu) << 32) | (uint32_t)(idx))
#define UD_OP(u) ((unsigned)((u) >> 56))
#define UD_GEN(u) ((uint32_t)(((u) >> 32) & 0xffffffu))
#define UD_IDX(u) ((uint32_t)(u))

/* 503 for connections over --max-connections: written and closed without a session. */
#define REJECT_BODY "{\"error\":{\"code\":\"TOO_MANY_CONNECTIONS\",\"message\":\"connection limit reached\"}}"
#define REJECT_BODY_LEN 78
#define STR_(x) #x
#define STR(x) STR_(x)
static const char REJECT_503[] =
    "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json; charset=utf-8\r\n"
    "Content-Length: " STR(REJECT_BODY_LEN) "\r\nConnection: close\r\nRetry-After: 1\r\n\r\n" REJECT_BODY;

struct conn {
    struct sess s;
    int fd;
    uint32_t gen;
    uint16_t ops;        /* SQEs in flight that name this connection */
    uint8_t in_use, recv_armed, sending, closing, dirty, want_recv, eof;
    uint32_t next_free;  /* index + 1 */
    struct conn *next_dirty;
};

struct worker {
    struct srv *srv;
    unsigned idx;
    int cpu;
    pthread_t thread;
    struct io_uring ring;
    bool ring_ok;
    const char *ring_mode;
    struct ring_bufs bufs;
    int lfd;
    bool accept_armed, backoff_armed;
    struct conn *conns;
    uint32_t cap, used_hi, free_head, nopen;
    struct conn *dirty;
    struct sess_env env;
    struct app_worker *app;
    struct cnt_slot *slot;
    uint64_t now_ms;
    struct __kernel_timespec tick_ts, backoff_ts, drain_ts;
    bool draining;
    uint64_t drain_deadline;
    int start_rc;
    struct log_rl rl_accept;
};

struct srv {
    const struct config *cfg;
    unsigned n;
    struct worker *w;
    int evfd;
    uint16_t port;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    unsigned started;
    bool go;
    int aux_fd; /* the persister's ring fd (-1 until srv_set_aux_wake_fd): app_io.wake target n */
};

/* now_ms is CLOCK_MONOTONIC_COARSE (timeouts); env.now_ns is CLOCK_MONOTONIC, precise: request
   latency is measured with it (struct sess_env now_ns); one vDSO read per batch, ~20 ns, no
   system call. The coarse clock lags it by up to a tick. */
#define mono_ms() clock_ms(CLOCK_MONOTONIC_COARSE)
#define mono_ns() clock_ns(CLOCK_MONOTONIC)

static inline uint32_t conn_idx(const struct worker *w, const struct conn *c)
{
    return (uint32_t)(c - w->conns);
}

static struct conn *conn_of(struct worker *w, uint64_t ud)
{
    uint32_t i = UD_IDX(ud);
    if (i >= w->used_hi)
        return NULL;
    struct conn *c = &w->conns[i];
    if (!c->in_use || (c->gen & 0xffffffu) != UD_GEN(ud))
        return NULL;
    return c;
}

static void kick(struct sess *s)
{
    struct conn *c = (struct conn *)s; /* s is the first member */
    if (c->dirty)
        return;
    c->dirty = 1;
    /* the worker is reachable through the env: env is embedded in the worker */
    struct worker *wk = (struct worker *)((char *)s->env - offsetof(struct worker, env));
    c->next_dirty = wk->dirty;
    wk->dirty = c;
}

static void wake(void *ctx, unsigned target)
{
    struct worker *w = ctx;
    /* target n (one past the workers) is the persister's ring (srv_set_aux_wake_fd) */
    int fd = target < w->srv->n ? w->srv->w[target].ring.ring_fd : ck_pr_load_int(&w->srv->aux_fd);
    if (fd < 0)
        return;
    struct io_uring_sqe *sqe = ring_sqe(&w->ring);
    io_uring_prep_msg_ring(sqe, fd, 0, UD(OP_WAKE, 0, 0), 0);
    io_uring_sqe_set_data64(sqe, UD(OP_IGNORE, 0, 0));
    sqe->flags |= IOSQE_CQE_SKIP_SUCCESS;
}

static void arm_accept(struct worker *w)
{
    struct io_uring_sqe *sqe = ring_sqe(&w->ring);
    io_uring_prep_multishot_accept(sqe, w->lfd, NULL, NULL, SOCK_CLOEXEC);
    io_uring_sqe_set_data64(sqe, UD(OP_ACCEPT, 0, 0));
    w->accept_armed = true;
}

static void arm_tick(struct worker *w)
{
    struct io_uring_sqe *sqe = ring_sqe(&w->ring);
    io_uring_prep_timeout(sqe, &w->tick_ts, 0, 0);
    io_uring_sqe_set_data64(sqe, UD(OP_TICK, 0, 0));
}

static void arm_signal(struct worker *w)
{
    struct io_uring_sqe *sqe = ring_sqe(&w->ring);
    io_uring_prep_poll_add(sqe, w->srv->evfd, POLLIN);
    io_uring_sqe_set_data64(sqe, UD(OP_SIGNAL, 0, 0));
}

static void arm_recv(struct worker *w, struct conn *c)
{
    struct io_uring_sqe *sqe = ring_sqe(&w->ring);
    io_uring_prep_recv_multishot(sqe, c->fd, NULL, 0, 0);
    sqe->flags |= IOSQE_BUFFER_SELECT;
    sqe->buf_group = w->bufs.bgid;
    io_uring_sqe_set_data64(sqe, UD(OP_RECV, c->gen, conn_idx(w, c)));
    c->recv_armed = 1;
    c->want_recv = 0;
    c->ops++;
}

static void submit_send(struct worker *w, struct conn *c, uint32_t len)
{
    struct io_uring_sqe *sqe = ring_sqe(&w->ring);
    io_uring_prep_send(sqe, c->fd, c->s.out, len, MSG_NOSIGNAL);
    io_uring_sqe_set_data64(sqe, UD(OP_SEND, c->gen, conn_idx(w, c)));
    c->sending = 1;
    c->ops++;
}

static struct conn *conn_alloc(struct worker *w)
{
    uint32_t i;
    if (w->free_head) {
        i = w->free_head - 1;
        w->free_head = w->conns[i].next_free;
    } else if (w->used_hi < w->cap) {
        i = w->used_hi++;
    } else {
        return NULL;
    }
    struct conn *c = &w->conns[i];
    uint32_t gen = c->gen + 1;
    sess_init(&c->s, &w->env, w->now_ms);
    c->fd = -1;
    c->gen = gen;
    c->ops = 0;
    c->in_use = 1;
    c->recv_armed = c->sending = c->closing = c->dirty = c->want_recv = c->eof = 0;
    c->next_dirty = NULL;
    return c;
}

static void conn_maybe_free(struct worker *w, struct conn *c)
{
    if (!c->closing || c->ops || c->fd >= 0)
        return;
    if (c->s.flags & SESS_PENDING)
        app_forget(w->app, &c->s);
    /* Give back buffers a burst made large; keep the common small ones for the next client. */
    if (c->s.out_cap > SESS_OUT_INIT || c->s.in_cap > 4096)
        sess_free(&c->s);
    c->in_use = 0;
    c->next_free = w->free_head;
    w->free_head = conn_idx(w, c) + 1;
    w->nopen--;
    cnt_add(&w->slot->conns_open, (uint64_t)-1);
}

/* Cancel before close: the multishot recv (and a send) must not outlive the descriptor. */
static void conn_close(struct worker *w, struct conn *c)
{
    if (c->closing)
        return;
    c->closing = 1;
    if (c->s.flags & SESS_PENDING) {
        app_forget(w->app, &c->s);
        c->s.flags &= ~(uint32_t)SESS_PENDING;
    }
    c->s.flags |= SESS_DEAD;
    uint32_t idx = conn_idx(w, c);
    struct io_uring_sqe *sqe;
    if (c->ops) {
        sqe = ring_sqe(&w->ring);
        io_uring_prep_cancel_fd(sqe, c->fd, IORING_ASYNC_CANCEL_ALL);
        io_uring_sqe_set_data64(sqe, UD(OP_CANCEL, c->gen, idx));
        sqe->flags |= IOSQE_IO_HARDLINK;
        c->ops++;
    }
    sqe = ring_sqe(&w->ring);
    io_uring_prep_close(sqe, c->fd);
    io_uring_sqe_set_data64(sqe, UD(OP_CLOSE, c->gen, idx));
    c->ops++;
}

static void reject(struct worker *w, int fd)
{
    cnt_add(&w->slot->conns_rejected, 1);
    struct io_uring_sqe *sqe = ring_sqe(&w->ring);
    io_uring_prep_send(sqe, fd, REJECT_503, sizeof(REJECT_503) - 1, MSG_NOSIGNAL);
    io_uring_sqe_set_data64(sqe, UD(OP_IGNORE, 0, 0));
    sqe->flags |= IOSQE_IO_HARDLINK;
    sqe = ring_sqe(&w->ring);
    io_uring_prep_close(sqe, fd);
    io_uring_sqe_set_data64(sqe, UD(OP_IGNORE, 0, 0));
}

static uint64_t total_open(void)
{
    uint64_t t = 0;
    for (unsigned i = 0; i < cnt_count(); i++)
        t += ck_pr_load_64(&cnt_slot(i)->conns_open);
    return t;
}

/* The client address for per-IP rate limiting (SPEC §2.3): one getpeername per connection,
   never per request (a multishot accept cannot return addresses). IPv4-mapped IPv6 counts as
   IPv4. On failure the family stays 0: such clients share one bucket. */
static void peer_addr(int fd, struct sess *s)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    if (getpeername(fd, (struct sockaddr *)&ss, &sl) < 0)
        return;
    if (ss.ss_family == AF_INET) {
        s->peer_family = AF_INET;
        memcpy(s->peer, &((struct sockaddr_in *)&ss)->sin_addr, 4);
    } else if (ss.ss_family == AF_INET6) {
        const struct in6_addr *a = &((struct sockaddr_in6 *)&ss)->sin6_addr;
        bool mapped = IN6_IS_ADDR_V4MAPPED(a);
        s->peer_family = mapped ? AF_INET : AF_INET6;
        memcpy(s->peer, mapped ? a->s6_addr + 12 : a->s6_addr, mapped ? 4 : 16);
    }
}

static void on_accept(struct worker *w, struct io_uring_cqe *cqe)
{
    if (!(cqe->flags & IORING_CQE_F_MORE))
        w->accept_armed = false;
    int fd = cqe->res;
    if (fd < 0) {
        if (fd == -ECANCELED || w->draining)
            return;
        /* EMFILE/ENFILE/ENOBUFS/ENOMEM: retrying at once would spin on the same error; back
           off 50 ms (new clients wait in the backlog meanwhile). */
        if (log_rl_allow(&w->rl_accept, w->now_ms, 5, 10000))
            log_warn("accept failed, backing off", LOG_S("error", strerror(-fd)),
                     LOG_U("worker", w->idx));
        if (!w->accept_armed && !w->backoff_armed) {
            struct io_uring_sqe *sqe = ring_sqe(&w->ring);
            io_uring_prep_timeout(sqe, &w->backoff_ts, 0, 0);
            io_uring_sqe_set_data64(sqe, UD(OP_BACKOFF, 0, 0));
            w->backoff_armed = true;
        }
        return;
    }
    if (w->draining) {
        close(fd);
        return;
    }
    struct conn *c = total_open() < w->srv->cfg->max_connections ? conn_alloc(w) : NULL;
    if (!c) {
        reject(w, fd);
        return;
    }
    c->fd = fd;
    peer_addr(fd, &c->s);
    w->nopen++;
    cnt_add(&w->slot->conns_open, 1);
    cnt_add(&w->slot->conns_accepted, 1);
    arm_recv(w, c);
}

static void on_recv(struct worker *w, struct conn *c, struct io_uring_cqe *cqe)
{
    bool more = cqe->flags & IORING_CQE_F_MORE;
    if (!more) {
        c->recv_armed = 0;
        c->ops--;
    }
    int res = cqe->res;
    if (res > 0) {
        uint16_t bid = (uint16_t)(cqe->flags >> IORING_CQE_BUFFER_SHIFT);
        if (!c->closing && sess_feed(&c->s, ring_bufs_data(&w->bufs, bid), (size_t)res,
                                     w->now_ms) < 0)
            c->s.flags |= SESS_DEAD;
        ring_bufs_put(&w->bufs, bid);
        if (!more)
            c->want_recv = 1;
    } else if (res == -ENOBUFS) {
        /* Every provided buffer is in use: they come back at the end of this batch; re-arm then
           rather than closing a healthy connection. */
        cnt_add(&w->slot->enobufs, 1);
        c->want_recv = 1;
    } else if (res == 0) {
        c->eof = 1;
    } else if (!c->closing) {
        c->s.flags |= SESS_DEAD;
    }
    if (c->closing)
        conn_maybe_free(w, c);
    else
        kick(&c->s);
}

static void on_send(struct worker *w, struct conn *c, int res)
{
    c->sending = 0;
    c->ops--;
    if (c->closing) {
        conn_maybe_free(w, c);
        return;
    }
    if (res < 0) {
        c->s.flags |= SESS_DEAD;
    } else {
        uint32_t left = sess_sent(&c->s, (uint32_t)res);
        if (left) { /* short send: the socket buffer filled; send the rest */
            submit_send(w, c, left);
            return;
        }
    }
    kick(&c->s);
}

/* End of batch: one send per connection with everything its requests produced. */
static void flush_dirty(struct worker *w)
{
    struct conn *c;
    while ((c = w->dirty)) {
        w->dirty = c->next_dirty;
        if (c->closing) {
            c->dirty = 0;
            continue;
        }
        struct sess *s = &c->s;
        /* still marked dirty while we work on it, so kicks from here do not re-queue it */
        if (s->in_len && !(s->flags & SESS_PENDING) && !c->sending)
            sess_resume(s, w->now_ms);
        if (c->eof && !(s->flags & (SESS_PENDING | SESS_OUTFULL)))
            s->flags |= SESS_CLOSE;
        c->dirty = 0;
        if (s->flags & SESS_DEAD) {
            conn_close(w, c);
            continue;
        }
        if (!c->sending && s->out_len) {
            submit_send(w, c, sess_send_begin(s));
        } else if (!c->sending && sess_done(s)) {
            conn_close(w, c);
            continue;
        }
        if (c->want_recv && !c->recv_armed && !c->eof && !(s->flags & SESS_CLOSE))
            arm_recv(w, c);
    }
}

static void on_tick(struct worker *w)
{
    sess_env_set_date(&w->env, (int64_t)time(NULL));
    app_tick(w->app, w->now_ms);
    for (uint32_t i = 0; i < w->used_hi; i++) {
        struct conn *c = &w->conns[i];
        if (c->in_use && !c->closing)
            sess_tick(&c->s, w->now_ms);
    }
    arm_tick(w);
}

static void on_signal(struct worker *w)
{
    if (w->draining)
        return;
    w->draining = true;
    w->env.draining = true;
    w->drain_deadline = w->now_ms + w->srv->cfg->shutdown_timeout_ms;
    /* Its own timer: the 1 s tick alone could overshoot the deadline by up to a second. */
    uint32_t ms = w->srv->cfg->shutdown_timeout_ms;
    w->drain_ts.tv_sec = ms / 1000;
    w->drain_ts.tv_nsec = (long long)(ms % 1000) * 1000000;
    struct io_uring_sqe *tsqe = ring_sqe(&w->ring);
    io_uring_prep_timeout(tsqe, &w->drain_ts, 0, 0);
    io_uring_sqe_set_data64(tsqe, UD(OP_DRAIN_DEADLINE, 0, 0));
    if (w->accept_armed) {
        struct io_uring_sqe *sqe = ring_sqe(&w->ring);
        io_uring_prep_cancel64(sqe, UD(OP_ACCEPT, 0, 0), 0);
        io_uring_sqe_set_data64(sqe, UD(OP_IGNORE, 0, 0));
    }
    for (uint32_t i = 0; i < w->used_hi; i++) {
        struct conn *c = &w->conns[i];
        if (c->in_use && !c->closing)
            sess_tick(&c->s, w->now_ms);
    }
}

static void handle_cqe(struct worker *w, struct io_uring_cqe *cqe)
{
    uint64_t ud = cqe->user_data;
    struct conn *c;
    switch (UD_OP(ud)) {
    case OP_ACCEPT:
        on_accept(w, cqe);
        break;
    case OP_RECV:
        if ((c = conn_of(w, ud)))
            on_recv(w, c, cqe);
        else if (cqe->flags & IORING_CQE_F_BUFFER)
            ring_bufs_put(&w->bufs, (uint16_t)(cqe->flags >> IORING_CQE_BUFFER_SHIFT));
        break;
    case OP_SEND:
        if ((c = conn_of(w, ud)))
            on_send(w, c, cqe->res);
        break;
    case OP_CANCEL:
        if ((c = conn_of(w, ud))) {
            c->ops--;
            conn_maybe_free(w, c);
        }
        break;
    case OP_CLOSE:
        if ((c = conn_of(w, ud))) {
            c->ops--;
            c->fd = -1;
            conn_maybe_free(w, c);
        }
        break;
    case OP_TICK:
        on_tick(w);
        break;
    case OP_WAKE:
        app_on_wake(w->app, w->now_ms);
        break;
    case OP_SIGNAL:
        on_signal(w);
        break;
    case OP_BACKOFF:
        w->backoff_armed = false;
        break;
    case OP_DRAIN_DEADLINE:
        w->drain_deadline = 0;
        break;
    default:
        break;
    }
}

/* With --batch-wait-us: return at once when this many completions are there (a saturated
   loop never waits), else after the min wait with whatever came. */
#define BATCH_WANT 32u

static void loop(struct worker *w)
{
    for (;;) {
        flush_dirty(w);
        app_flush(w->app);
        ring_bufs_commit(&w->bufs);
        if (!w->accept_armed && !w->backoff_armed && !w->draining)
            arm_accept(w);
        if (w->draining && (w->nopen == 0 || w->now_ms >= w->drain_deadline))
            break;
        live_leave(w->idx); /* an idle worker holds up no grace period (src/qsbr) */
        int rc = ring_submit_and_wait_min(&w->ring, BATCH_WANT, w->srv->cfg->batch_wait_us);
        if (rc < 0 && rc != -EINTR && rc != -EAGAIN && rc != -EBUSY) {
            log_error("io_uring_submit_and_wait failed", LOG_S("error", strerror(-rc)));
            break;
        }
        if (io_uring_cq_has_overflow(&w->ring))
            cnt_add(&w->slot->cq_overflows, 1);
        w->now_ms = mono_ms();
        w->env.now_ns = mono_ns();
        /* the reloadable settings for this batch (SIGHUP publishes new ones; src/live), and
           nothing of the previous batches is held any more (src/qsbr) */
        w->env.live = live_enter(w->idx);
        unsigned head, seen = 0;
        struct io_uring_cqe *cqe;
        io_uring_for_each_cqe(&w->ring, head, cqe)
        {
            handle_cqe(w, cqe);
            seen++;
        }
        io_uring_cq_advance(&w->ring, seen);
    }
}

static int worker_setup(struct worker *w)
{
    const struct config *cfg = w->srv->cfg;
    if (w->cpu >= 0) {
        cpu_set_t set;
        CPU_ZERO(&set);
        CPU_SET((size_t)w->cpu, &set);
        pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
    }
    int rc = ring_create(&w->ring, cfg->ring_entries, &w->ring_mode);
    if (rc < 0) {
        log_error("io_uring setup failed", LOG_S("error", strerror(-rc)), LOG_U("worker", w->idx));
        return rc;
    }
    w->ring_ok = true;
    rc = ring_bufs_create(&w->ring, &w->bufs, cfg->buf_count, cfg->buf_size, 0);
    if (rc < 0) {
        log_error("provided buffer ring registration failed", LOG_S("error", strerror(-rc)));
        return rc;
    }
    struct app_io io = {.ctx = w, .wake = wake};
    w->app = app_worker_new(w->idx, &io);
    /* One slot per allowed connection: calloc'd pages are only touched when used. */
    w->cap = cfg->max_connections;
    w->conns = calloc(w->cap, sizeof(struct conn));
    if (!w->app || !w->conns)
        return -ENOMEM;
    w->slot = cnt_slot(w->idx);
    w->env.ops = &app_sess_ops;
    w->env.lim.max_line = cfg->max_line;
    w->env.lim.max_head = cfg->max_head;
    w->env.lim.max_fields = cfg->max_fields;
    w->env.lim.max_body = cfg->max_body;
    w->env.in_max = sess_env_in_max(&w->env.lim);
    w->env.header_timeout_ms = cfg->header_timeout_ms;
    w->env.body_timeout_ms = cfg->body_timeout_ms;
    w->env.idle_timeout_ms = cfg->idle_timeout_ms;
    w->env.app = w->app;
    w->env.kick = kick;
    sess_env_set_date(&w->env, (int64_t)time(NULL));
    w->env.now_ns = mono_ns();
    w->env.live = live_enter(w->idx);
    w->tick_ts.tv_sec = 1;
    w->backoff_ts.tv_nsec = 50 * 1000 * 1000;
    w->now_ms = mono_ms();
    return 0;
}

static void worker_cleanup(struct worker *w)
{
    for (uint32_t i = 0; i < w->used_hi; i++) {
        struct conn *c = &w->conns[i];
        if (c->in_use && c->fd >= 0)
            close(c->fd);
        sess_free(&c->s);
    }
    free(w->conns);
    w->conns = NULL;
    app_worker_free(w->app);
    w->app = NULL;
    if (w->ring_ok) {
        ring_bufs_destroy(&w->ring, &w->bufs);
        io_uring_queue_exit(&w->ring);
        w->ring_ok = false;
    }
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    struct srv *s = w->srv;
    w->start_rc = worker_setup(w);
    pthread_mutex_lock(&s->mu);
    s->started++;
    pthread_cond_broadcast(&s->cv);
    while (!s->go)
        pthread_cond_wait(&s->cv, &s->mu);
    pthread_mutex_unlock(&s->mu);
    if (w->start_rc == 0 && !w->draining) {
        arm_tick(w);
        arm_signal(w);
        loop(w);
    }
    live_leave(w->idx); /* gone: it holds up no grace period for the rest of the shutdown */
    worker_cleanup(w);
    return NULL;
}

static int make_listener(const struct config *cfg, uint16_t port, uint16_t *bound, bool reuseport)
{
    struct sockaddr_storage ss;
    socklen_t sl;
    memset(&ss, 0, sizeof(ss));
    struct sockaddr_in *a4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&ss;
    if (inet_pton(AF_INET, cfg->listen_host, &a4->sin_addr) == 1) {
        a4->sin_family = AF_INET;
        a4->sin_port = htons(port);
        sl = sizeof(*a4);
    } else if (inet_pton(AF_INET6, cfg->listen_host, &a6->sin6_addr) == 1) {
        a6->sin6_family = AF_INET6;
        a6->sin6_port = htons(port);
        sl = sizeof(*a6);
    } else {
        return -EINVAL;
    }
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (reuseport)
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
    /* Inherited by accepted sockets: no per-connection setsockopt. Responses are already
       coalesced into one send per batch, so Nagle would only add delayed-ACK stalls. */
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (bind(fd, (struct sockaddr *)&ss, sl) < 0 || (reuseport && listen(fd, 4096) < 0)) {
        int e = -errno;
        close(fd);
        return e;
    }
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) == 0)
        *bound = ntohs(ss.ss_family == AF_INET ? a4->sin_port : a6->sin6_port);
    return fd;
}

/* SO_REUSEPORT would let a second ringcount (same user) share the port silently, splitting
   the totals between two processes: bind once without it first to find an owner. */
static int port_free(const struct config *cfg)
{
    uint16_t ignored;
    int fd = make_listener(cfg, cfg->listen_port, &ignored, false);
    if (fd < 0)
        return fd;
    close(fd);
    return 0;
}

int srv_start(const struct config *cfg, unsigned n, const int *cpus, struct srv **out)
{
    struct srv *s = calloc(1, sizeof(*s));
    if (!s)
        return -ENOMEM;
    _Static_assert(sizeof(REJECT_BODY) - 1 == REJECT_BODY_LEN, "REJECT_BODY_LEN");
    s->cfg = cfg;
    s->n = n;
    s->aux_fd = -1;
    s->w = calloc(n, sizeof(struct worker));
    s->evfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    int rc = 0;
    if (!s->w || s->evfd < 0) {
        rc = -ENOMEM;
        goto fail;
    }
    uint16_t port = cfg->listen_port;
    if (port && (rc = port_free(cfg)) < 0) {
        char addr[80];
        cfg_listen_str(cfg, addr, sizeof(addr));
        log_error("cannot listen", LOG_S("listen", addr), LOG_S("error", strerror(-rc)),
                  LOG_S("fix", "another process holds this port: stop it or choose another "
                               "--listen"));
        goto fail;
    }
    for (unsigned i = 0; i < n; i++) {
        struct worker *w = &s->w[i];
        w->srv = s;
        w->idx = i;
        w->cpu = cpus ? cpus[i] : -1;
        w->lfd = make_listener(cfg, port, &port, true);
        if (w->lfd < 0) {
            rc = w->lfd;
            char addr[80];
            cfg_listen_str(cfg, addr, sizeof(addr));
            log_error("cannot listen", LOG_S("listen", addr), LOG_S("error", strerror(-rc)),
                      LOG_S("fix", rc == -EADDRINUSE ? "another process holds this port: stop "
                                                       "it or choose another --listen"
                                                     : "check --listen"));
            goto fail;
        }
    }
    s->port = port;
    unsigned spawned = 0;
    for (unsigned i = 0; i < n; i++) {
        if (pthread_create(&s->w[i].thread, NULL, worker_main, &s->w[i]) != 0) {
            rc = -EAGAIN;
            break;
        }
        spawned++;
    }
    pthread_mutex_lock(&s->mu);
    while (s->started < spawned)
        pthread_cond_wait(&s->cv, &s->mu);
    for (unsigned i = 0; i < spawned && rc == 0; i++)
        if (s->w[i].start_rc < 0)
            rc = s->w[i].start_rc;
    if (rc < 0)
        for (unsigned i = 0; i < spawned; i++)
            s->w[i].draining = true; /* workers exit without serving */
    s->go = true;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    if (rc < 0) {
        for (unsigned i = 0; i < spawned; i++)
            pthread_join(s->w[i].thread, NULL);
        goto fail;
    }
    log_info("io_uring ready", LOG_S("mode", s->w[0].ring_mode), LOG_U("workers", n),
             LOG_U("buffers", cfg->buf_count), LOG_U("buffer_size", cfg->buf_size));
    *out = s;
    return 0;
fail:
    for (unsigned i = 0; s->w && i < n; i++)
        if (s->w[i].lfd > 0)
            close(s->w[i].lfd);
    if (s->evfd >= 0)
        close(s->evfd);
    free(s->w);
    free(s);
    return rc;
}

uint16_t srv_port(const struct srv *s)
{
    return s->port;
}

int srv_worker_ring_fd(const struct srv *s, unsigned w)
{
    return w < s->n ? s->w[w].ring.ring_fd : -1;
}

uint64_t srv_wake_data(void)
{
    return UD(OP_WAKE, 0, 0);
}

void srv_set_aux_wake_fd(struct srv *s, int fd)
{
    ck_pr_store_int(&s->aux_fd, fd);
}

void srv_drain(struct srv *s)
{
    uint64_t one = 1;
    ssize_t r = write(s->evfd, &one, sizeof(one));
    (void)r;
}

int srv_join(struct srv *s)
{
    for (unsigned i = 0; i < s->n; i++)
        pthread_join(s->w[i].thread, NULL);
    return 0;
}

void srv_free(struct srv *s)
{
    if (!s)
        return;
    for (unsigned i = 0; i < s->n; i++)
        if (s->w[i].lfd > 0)
            close(s->w[i].lfd);
    close(s->evfd);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cv);
    free(s->w);
    free(s);
}
