/* bench — ringbench's io_uring client engine. See bench.h. */
#include "bench.h"

#include <errno.h>
#include <liburing.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"

/* Receive buffers: 4 KiB holds a 16-deep batch of nginx 204 responses (16 x ~150 B = 2.4 KB)
   in one completion; a response that straddles buffers is stitched by the caller. Two buffers
   per connection (at most one filled and one in flight per turn), 64..8192 of them: 256
   connections use 2 MiB, which stays in L2/L3 as the ring cycles through them. */
#define BUF_SIZE 4096
#define BUF_MIN 64
#define BUF_MAX 8192
#define BGID 7

#define TICK_NS 10000000ull     /* ops->tick every 10 ms (the contract promises <= 50 ms) */
#define SCAN_NS 100000000ull    /* timeout / reconnect scan every 100 ms */
#define WAIT_MAX_NS 50000000ull /* never sleep longer than 50 ms */
#define RETRY_NS 100000000ull   /* reconnect 100 ms after a failed connect */
#define SPIN_NS 2000ull         /* a due time closer than 2 us: poll instead of sleeping */

enum op { OP_CONNECT = 1, OP_RECV, OP_SEND, OP_CANCEL };
enum cstate { C_IDLE, C_CONNECTING, C_UP, C_CLOSING };

struct conn {
    int fd;          /* -1 when there is no socket */
    uint8_t state;   /* enum cstate */
    bool recv_armed; /* a multishot recv is pending */
    bool sending;    /* a send is pending */
    bool connecting; /* a connect is pending */
    bool dirty;      /* on the dirty list (closed loop: may need a send) */
    bool initial;    /* first connect not finished yet (open-loop start) */
    uint32_t outstanding;
    uint32_t send_len, send_off;
    char *sbuf;
    uint64_t progress_ns; /* last response, or when the oldest outstanding request was sent */
    uint64_t since_ns;    /* connect started / retry due */
    uint64_t k;           /* open loop: index of this connection's next request */
};

struct eng {
    struct io_uring ring;
    bool ring_ok;
    const struct bench_cfg *cfg;
    const struct bench_ops *ops;
    void *arg;
    struct conn *c;
    uint32_t n;
    uint32_t *dirty;
    uint32_t ndirty;
    struct io_uring_buf_ring *br;
    size_t br_bytes;
    char *bufs;
    uint32_t nbufs;
    int buf_mask;
    int buf_returned; /* buffers added since the last advance */
    bool br_ok, files_ok;
    uint64_t now;
    bool stopped;
    uint64_t drain_end;
    uint64_t sent, answered, outstanding, last_resp;
    uint32_t n_up, initial_left;
    uint64_t last_up_ns;
    bool sched_on;
    uint64_t sched0;
    uint64_t g_next; /* open loop: next schedule number not yet due */
    uint64_t slack;  /* open loop: how late the timer may fire */
    double req_ns;   /* open loop: ns between two requests of this thread */
    unsigned setup_flags;
};

uint64_t bench_now_ns(void)
{
    return clock_ns(CLOCK_MONOTONIC);
}

const char *bench_end_name(enum bench_end why)
{
    static const char *const names[BENCH__END_COUNT] = {
        [BENCH_END_OK] = "ok",
        [BENCH_END_CONNECT_REFUSED] = "connect_refused",
        [BENCH_END_CONNECT] = "connect",
        [BENCH_END_RESET] = "reset",
        [BENCH_END_CLOSED] = "closed",
        [BENCH_END_TIMEOUT] = "timeout",
        [BENCH_END_PROTOCOL] = "protocol",
    };
    return (unsigned)why < BENCH__END_COUNT ? names[why] : "unknown";
}

static inline uint64_t udata(uint32_t i, enum op op)
{
    return ((uint64_t)i << 8) | (uint64_t)op;
}

/* An SQE, submitting what is queued if the SQ is full (the SQ holds 2 per connection, so
   this only happens with more than one send and one re-arm per connection and turn). */
static struct io_uring_sqe *get_sqe(struct eng *e)
{
    struct io_uring_sqe *sqe = io_uring_get_sqe(&e->ring);
    while (!sqe) {
        io_uring_submit(&e->ring);
        sqe = io_uring_get_sqe(&e->ring);
    }
    return sqe;
}

static void mark_dirty(struct eng *e, uint32_t i)
{
    if (!e->c[i].dirty) {
        e->c[i].dirty = true;
        e->dirty[e->ndirty++] = i;
    }
}

static void arm_recv(struct eng *e, uint32_t i)
{
    struct io_uring_sqe *sqe = get_sqe(e);
    io_uring_prep_recv_multishot(sqe, (int)i, NULL, 0, 0);
    sqe->flags |= IOSQE_FIXED_FILE | IOSQE_BUFFER_SELECT;
    sqe->buf_group = BGID;
    io_uring_sqe_set_data64(sqe, udata(i, OP_RECV));
    e->c[i].recv_armed = true;
}

static void post_send(struct eng *e, uint32_t i)
{
    struct conn *c = &e->c[i];
    struct io_uring_sqe *sqe = get_sqe(e);
    io_uring_prep_send(sqe, (int)i, c->sbuf + c->send_off, c->send_len - c->send_off, MSG_NOSIGNAL);
    sqe->flags |= IOSQE_FIXED_FILE;
    io_uring_sqe_set_data64(sqe, udata(i, OP_SEND));
    c->sending = true;
}

/* Start connecting connection i (state IDLE). Failures to get a socket count as connect
   errors and are retried like refused connects. */
static void conn_connect(struct eng *e, uint32_t i)
{
    struct conn *c = &e->c[i];
    int fd = socket(e->cfg->addr->sa_family, SOCK_STREAM | SOCK_CLOEXEC, IPPROTO_TCP);
    if (fd < 0) goto fail;
    int one = 1;
    /* Batches are written whole; Nagle would hold back a batch while a previous one is
       unacknowledged and add a delayed-ACK wait (40 ms) to the measured latency. */
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (io_uring_register_files_update(&e->ring, i, &fd, 1) != 1) {
        close(fd);
        goto fail;
    }
    c->fd = fd;
    c->state = C_CONNECTING;
    c->connecting = true;
    c->since_ns = e->now;
    struct io_uring_sqe *sqe = get_sqe(e);
    io_uring_prep_connect(sqe, (int)i, e->cfg->addr, e->cfg->addrlen);
    sqe->flags |= IOSQE_FIXED_FILE;
    io_uring_sqe_set_data64(sqe, udata(i, OP_CONNECT));
    return;
fail:
    e->ops->closed(e->arg, i, BENCH_END_CONNECT, 0, e->now);
    c->state = C_IDLE;
    c->since_ns = e->now + RETRY_NS;
    if (c->initial) {
        c->initial = false;
        e->initial_left--;
    }
}

/* All operations of a closing connection have completed: release the socket, reconnect. */
static void maybe_finish_close(struct eng *e, uint32_t i, uint64_t retry_delay)
{
    struct conn *c = &e->c[i];
    if (c->state != C_CLOSING || c->recv_armed || c->sending || c->connecting) return;
    int none = -1;
    io_uring_register_files_update(&e->ring, i, &none, 1);
    if (c->fd >= 0) close(c->fd);
    c->fd = -1;
    c->state = C_IDLE;
    c->since_ns = e->now + retry_delay;
    if (!e->stopped && retry_delay == 0) conn_connect(e, i);
}

/* End connection i (UP or CONNECTING): report it, then shut the socket so the pending
   multishot recv ends; the socket is released when its last operation completes. */
static void conn_close(struct eng *e, uint32_t i, enum bench_end why)
{
    struct conn *c = &e->c[i];
    if (c->state != C_UP && c->state != C_CONNECTING) return;
    if (c->state == C_UP) e->n_up--;
    uint32_t lost = c->outstanding;
    e->ops->closed(e->arg, i, why, lost, e->now);
    e->outstanding -= lost;
    c->outstanding = 0;
    c->state = C_CLOSING;
    if (c->connecting) {
        struct io_uring_sqe *sqe = get_sqe(e);
        io_uring_prep_cancel64(sqe, udata(i, OP_CONNECT), 0);
        io_uring_sqe_set_data64(sqe, udata(i, OP_CANCEL));
    }
    if (c->fd >= 0) shutdown(c->fd, SHUT_RDWR);
    maybe_finish_close(e, i, 0);
}

static void issue_send(struct eng *e, uint32_t i, uint32_t n, uint64_t t0, uint64_t step)
{
    struct conn *c = &e->c[i];
    size_t len = e->ops->fill(e->arg, i, c->sbuf, n, t0, step);
    if (c->outstanding == 0) c->progress_ns = e->now;
    c->outstanding += n;
    e->outstanding += n;
    e->sent += n;
    c->send_len = (uint32_t)len;
    c->send_off = 0;
    post_send(e, i);
}

static void on_connect(struct eng *e, uint32_t i, int res)
{
    struct conn *c = &e->c[i];
    c->connecting = false;
    if (c->initial) {
        c->initial = false;
        e->initial_left--;
    }
    if (c->state == C_CLOSING) {
        maybe_finish_close(e, i, RETRY_NS);
        return;
    }
    if (res < 0) {
        e->ops->closed(e->arg, i,
                       res == -ECONNREFUSED ? BENCH_END_CONNECT_REFUSED : BENCH_END_CONNECT, 0,
                       e->now);
        c->state = C_CLOSING;
        maybe_finish_close(e, i, RETRY_NS);
        return;
    }
    c->state = C_UP;
    e->n_up++;
    c->progress_ns = e->now;
    arm_recv(e, i);
    mark_dirty(e, i);
}

static void return_buf(struct eng *e, unsigned bid)
{
    io_uring_buf_ring_add(e->br, e->bufs + (size_t)bid * BUF_SIZE, BUF_SIZE, (unsigned short)bid,
                          e->buf_mask, e->buf_returned);
    e->buf_returned++;
}

static void on_recv(struct eng *e, uint32_t i, int res, unsigned flags)
{
    struct conn *c = &e->c[i];
    bool more = flags & IORING_CQE_F_MORE;
    if (!more) c->recv_armed = false;
    if (flags & IORING_CQE_F_BUFFER) {
        unsigned bid = flags >> IORING_CQE_BUFFER_SHIFT;
        if (res > 0 && c->state == C_UP) {
            unsigned rflags = 0;
            uint32_t done = e->ops->recv(e->arg, i, e->bufs + (size_t)bid * BUF_SIZE, (size_t)res,
                                         e->now, &rflags);
            if (done > c->outstanding)
                done = c->outstanding; /* the contract says it cannot; stay consistent */
            if (done) {
                c->outstanding -= done;
                e->outstanding -= done;
                e->answered += done;
                c->progress_ns = e->now;
                e->last_resp = e->now;
                mark_dirty(e, i);
            }
            if (rflags & BENCH_RECV_PROTO)
                conn_close(e, i, BENCH_END_PROTOCOL);
            else if (rflags & BENCH_RECV_CLOSE)
                conn_close(e, i, c->outstanding ? BENCH_END_CLOSED : BENCH_END_OK);
        }
        return_buf(e, bid);
    }
    if (c->state == C_UP) {
        if (res == 0)
            conn_close(e, i, c->outstanding ? BENCH_END_CLOSED : BENCH_END_OK);
        else if (res < 0 && res != -ENOBUFS)
            conn_close(e, i, BENCH_END_RESET);
        else if (!more)
            arm_recv(e, i); /* ENOBUFS or a multishot that ended on its own: re-arm */
    }
    if (c->state == C_CLOSING) maybe_finish_close(e, i, 0);
}

static void on_send(struct eng *e, uint32_t i, int res)
{
    struct conn *c = &e->c[i];
    c->sending = false;
    if (c->state == C_UP) {
        if (res < 0) {
            conn_close(e, i, BENCH_END_RESET);
        } else if ((uint32_t)res < c->send_len - c->send_off) {
            c->send_off += (uint32_t)res; /* short send (socket buffer full): send the rest */
            post_send(e, i);
        } else {
            mark_dirty(e, i);
        }
    }
    if (c->state == C_CLOSING) maybe_finish_close(e, i, 0);
}

static void reap(struct eng *e)
{
    struct io_uring_cqe *cqe;
    unsigned head, seen = 0;
    io_uring_for_each_cqe(&e->ring, head, cqe)
    {
        uint64_t ud = io_uring_cqe_get_data64(cqe);
        uint32_t i = (uint32_t)(ud >> 8);
        switch ((enum op)(ud & 0xff)) {
        case OP_CONNECT:
            on_connect(e, i, cqe->res);
            break;
        case OP_RECV:
            on_recv(e, i, cqe->res, cqe->flags);
            break;
        case OP_SEND:
            on_send(e, i, cqe->res);
            break;
        case OP_CANCEL:
            break;
        }
        seen++;
    }
    io_uring_cq_advance(&e->ring, seen);
    if (e->buf_returned) {
        io_uring_buf_ring_advance(e->br, e->buf_returned);
        e->buf_returned = 0;
    }
}

static uint32_t quota_cap(const struct eng *e, uint32_t n)
{
    uint64_t left = e->cfg->quota > e->sent ? e->cfg->quota - e->sent : 0;
    return left < n ? (uint32_t)left : n;
}

/* Closed loop: a connection whose batch is fully answered (or that just connected) sends
   the next batch of depth requests in one send. Topping up after every response instead
   sends 1-3 requests at a time under -p 16: measured against nginx on one core, that took
   0.65-0.90 load cores for the same ~150k req/s that whole batches get with 0.26-0.40, and
   it is what wrk's pipeline.lua does too (so -p 16 compares with it directly). */
static void send_closed(struct eng *e)
{
    for (uint32_t d = 0; d < e->ndirty; d++) {
        uint32_t i = e->dirty[d];
        struct conn *c = &e->c[i];
        c->dirty = false;
        if (e->stopped || c->state != C_UP || c->sending || c->outstanding > 0) continue;
        uint32_t n = quota_cap(e, e->cfg->depth);
        if (n) issue_send(e, i, n, e->now, 0);
    }
    e->ndirty = 0;
}

/* Open loop: request k of connection i is number g = k * n + i of this thread's schedule,
   intended at sched0 + g * req_ns, so connections fall due round-robin. */
static inline uint64_t due_of(const struct eng *e, uint64_t g)
{
    return e->sched0 + (uint64_t)((double)g * e->req_ns);
}

/* Send what connection i owes, if it can send now. */
static void open_try(struct eng *e, uint32_t i)
{
    struct conn *c = &e->c[i];
    if (c->state != C_UP || c->sending || c->outstanding >= e->cfg->depth) return;
    uint64_t g = c->k * e->n + i, due = due_of(e, g);
    if (due > e->now) return;
    /* its requests due by now: floor((now - due) / step) + 1, at most the free depth */
    double step = e->req_ns * e->n;
    uint64_t behind = (uint64_t)((double)(e->now - due) / step) + 1;
    uint32_t room = e->cfg->depth - c->outstanding;
    uint32_t n = quota_cap(e, behind < room ? (uint32_t)behind : room);
    if (!n) return;
    issue_send(e, i, n, due, (uint64_t)step);
    c->k += n;
}

/* Open loop: send every request that is due: first on connections that became free this
   turn (they may be behind), then the schedule's newly due numbers (O(due + freed), not
   O(connections), per turn). Returns the next due time (UINT64_MAX if none). */
static uint64_t send_open(struct eng *e)
{
    bool live = e->sched_on && !e->stopped;
    for (uint32_t d = 0; d < e->ndirty; d++) {
        e->c[e->dirty[d]].dirty = false;
        if (live) open_try(e, e->dirty[d]);
    }
    e->ndirty = 0;
    if (!live) return UINT64_MAX;
    for (;;) {
        uint64_t due = due_of(e, e->g_next);
        if (due > e->now) return due;
        uint32_t i = (uint32_t)(e->g_next % e->n);
        if (e->c[i].k * e->n + i <= e->g_next)
            open_try(e, i); /* a busy connection is retried when it frees up (dirty) */
        e->g_next++;
    }
}

/* Every SCAN_NS: drop stalled connections, retry failed connects. */
static void scan(struct eng *e)
{
    for (uint32_t i = 0; i < e->n; i++) {
        struct conn *c = &e->c[i];
        if (c->state == C_UP && c->outstanding && e->now - c->progress_ns > e->cfg->timeout_ns)
            conn_close(e, i, BENCH_END_TIMEOUT);
        else if (c->state == C_CONNECTING && e->now - c->since_ns > e->cfg->timeout_ns)
            conn_close(e, i, BENCH_END_CONNECT);
        else if (c->state == C_IDLE && !e->stopped && e->now >= c->since_ns)
            conn_connect(e, i);
    }
}

static int setup_ring(struct eng *e)
{
    uint32_t sq = 64;
    while (sq < 2 * e->n && sq < 4096)
        sq *= 2;
    /* DEFER_TASKRUN runs completions only when this thread enters the kernel, in batches:
       no task-work interrupts of the send path (liburing's own numbers: +10-20 % on
       network echo). SINGLE_ISSUER is its prerequisite. Older kernels: fall back. */
    static const unsigned tries[] = {
        IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_SUBMIT_ALL,
        IORING_SETUP_COOP_TASKRUN | IORING_SETUP_SUBMIT_ALL,
        0,
    };
    int rc = -EINVAL;
    for (size_t t = 0; t < sizeof(tries) / sizeof(tries[0]); t++) {
        struct io_uring_params p = {0};
        p.flags = tries[t] | IORING_SETUP_CQSIZE;
        p.cq_entries = sq * 4; /* multishot recv can post several CQEs per connection */
        rc = io_uring_queue_init_params(sq, &e->ring, &p);
        if (rc == 0) {
            e->setup_flags = p.flags;
            break;
        }
    }
    if (rc < 0) return rc;
    e->ring_ok = true;
    /* The process has several threads, so every io_uring_enter would take a reference on
       the ring file; a registered ring fd skips that. Optional. */
    io_uring_register_ring_fd(&e->ring);

    rc = io_uring_register_files_sparse(&e->ring, e->n);
    if (rc < 0) return rc;
    e->files_ok = true;

    e->nbufs = BUF_MIN;
    while (e->nbufs < 2 * e->n && e->nbufs < BUF_MAX)
        e->nbufs *= 2;
    e->br_bytes = e->nbufs * sizeof(struct io_uring_buf);
    void *br = mmap(NULL, e->br_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (br == MAP_FAILED) return -errno;
    e->br = br;
    e->bufs = aligned_alloc(4096, (size_t)e->nbufs * BUF_SIZE);
    if (!e->bufs) return -ENOMEM;
    struct io_uring_buf_reg reg = {0};
    reg.ring_addr = (unsigned long)(uintptr_t)e->br;
    reg.ring_entries = e->nbufs;
    reg.bgid = BGID;
    rc = io_uring_register_buf_ring(&e->ring, &reg, 0);
    if (rc < 0) return rc;
    e->br_ok = true;
    io_uring_buf_ring_init(e->br);
    e->buf_mask = io_uring_buf_ring_mask(e->nbufs);
    for (uint32_t b = 0; b < e->nbufs; b++)
        return_buf(e, b);
    io_uring_buf_ring_advance(e->br, e->buf_returned);
    e->buf_returned = 0;
    return 0;
}

/* Wait for completions until `until` (absolute ns) at the latest. */
static void wait_events(struct eng *e, uint64_t until)
{
    uint64_t now = bench_now_ns();
    if (until <= now + SPIN_NS) {
        io_uring_submit_and_get_events(&e->ring);
        return;
    }
    uint64_t d = until - now;
    struct __kernel_timespec ts = {.tv_sec = (long long)(d / 1000000000ull),
                                   .tv_nsec = (long long)(d % 1000000000ull)};
    struct io_uring_cqe *cqe;
    io_uring_submit_and_wait_timeout(&e->ring, &cqe, 1, &ts, NULL);
}

/* Tear down: shut every socket and let its operations finish (at most 1 s), so the kernel no
   longer touches the buffers when they are freed. */
static void quiesce(struct eng *e)
{
    uint64_t deadline = bench_now_ns() + 1000000000ull;
    for (uint32_t i = 0; i < e->n; i++) {
        struct conn *c = &e->c[i];
        if (c->state == C_UP || c->state == C_CONNECTING)
            conn_close(e, i, c->outstanding ? BENCH_END_TIMEOUT : BENCH_END_OK);
    }
    for (;;) {
        bool busy = false;
        for (uint32_t i = 0; i < e->n && !busy; i++)
            busy = e->c[i].recv_armed || e->c[i].sending || e->c[i].connecting;
        if (!busy || bench_now_ns() >= deadline) break;
        wait_events(e, bench_now_ns() + 10000000ull);
        e->now = bench_now_ns();
        reap(e);
    }
}

static void teardown(struct eng *e)
{
    if (e->c) {
        for (uint32_t i = 0; i < e->n; i++) {
            if (e->c[i].fd >= 0) close(e->c[i].fd);
            free(e->c[i].sbuf);
        }
    }
    if (e->br_ok) io_uring_unregister_buf_ring(&e->ring, BGID);
    if (e->ring_ok) io_uring_queue_exit(&e->ring);
    if (e->br) munmap(e->br, e->br_bytes);
    free(e->bufs);
    free(e->c);
    free(e->dirty);
}

int bench_run(const struct bench_cfg *cfg, const struct bench_ops *ops, void *arg,
              struct bench_result *res)
{
    struct eng e = {0};
    int rc = -EINVAL;
    memset(res, 0, sizeof(*res));
    if (cfg->conns == 0 || cfg->conns > 65535 || cfg->depth == 0 || cfg->depth > 4096 ||
        cfg->max_req_bytes == 0)
        return -EINVAL;
    e.cfg = cfg;
    e.ops = ops;
    e.arg = arg;
    e.n = cfg->conns;
    e.c = calloc(e.n, sizeof(*e.c));
    e.dirty = calloc(e.n, sizeof(*e.dirty));
    rc = -ENOMEM;
    if (!e.c || !e.dirty) goto out;
    for (uint32_t i = 0; i < e.n; i++) {
        e.c[i].fd = -1;
        e.c[i].sbuf = malloc((size_t)cfg->depth * cfg->max_req_bytes);
        if (!e.c[i].sbuf) goto out;
    }
    rc = setup_ring(&e);
    if (rc < 0) goto out;
    if (cfg->rate > 0) {
        e.req_ns = 1e9 / cfg->rate;
        /* A wake-up costs ~4 us of CPU: at 100k req/s per thread, waking for every due time
           would take 40 % of the core. Above 20k req/s (20k x 4 us = 8 %) the timer may fire
           up to 4 intervals (at most 50 us) late, batching ~4 requests per turn; below, it is
           exact. The lateness is part of the measured latency (counted from the intended
           time); wrk2's timers are up to 1 ms late. */
        if (e.req_ns < 50000.0) {
            e.slack = (uint64_t)(4 * e.req_ns);
            if (e.slack > 50000) e.slack = 50000;
        }
    }

    e.now = bench_now_ns();
    e.last_up_ns = e.now;
    e.initial_left = e.n;
    for (uint32_t i = 0; i < e.n; i++) {
        e.c[i].initial = true;
        conn_connect(&e, i);
    }
    uint64_t next_tick = e.now, next_scan = e.now + SCAN_NS;
    for (;;) {
        e.now = bench_now_ns();
        reap(&e);
        if (!e.stopped && (e.now >= cfg->end_ns || e.sent >= cfg->quota ||
                           (cfg->stop && __atomic_load_n(cfg->stop, __ATOMIC_RELAXED)) ||
                           (e.n_up == 0 && e.now - e.last_up_ns > cfg->timeout_ns))) {
            /* the last clause: nothing could connect for timeout_ns, give up early */
            e.stopped = true;
            res->stop_ns = e.now;
            e.drain_end = e.now + cfg->drain_ns;
        }
        if (e.n_up) e.last_up_ns = e.now;
        if (e.stopped && (e.outstanding == 0 || e.now >= e.drain_end)) break;
        if (!e.sched_on && cfg->rate > 0 &&
            (e.initial_left == 0 || e.now - cfg->start_ns > 1000000000ull)) {
            /* the schedule starts once the first connects are done (at most 1 s) so that
               connection set-up is not charged to the first requests' latency */
            e.sched_on = true;
            e.sched0 = e.now;
        }
        if (e.now >= next_tick) {
            if (ops->tick) ops->tick(arg, e.now);
            next_tick = e.now + TICK_NS;
        }
        if (e.now >= next_scan) {
            scan(&e);
            next_scan = e.now + SCAN_NS;
        }
        uint64_t until = e.now + WAIT_MAX_NS;
        if (cfg->rate > 0) {
            uint64_t due = send_open(&e);
            if (due < UINT64_MAX && due + e.slack < until) until = due + e.slack;
        } else {
            send_closed(&e);
        }
        if (until > next_tick) until = next_tick;
        if (!e.stopped && cfg->end_ns < until) until = cfg->end_ns;
        if (e.stopped && e.drain_end < until) until = e.drain_end;
        wait_events(&e, until);
    }
    if (!e.stopped) res->stop_ns = e.now;
    quiesce(&e);
    res->sent = e.sent;
    res->answered = e.answered;
    res->last_resp_ns = e.last_resp;
    res->setup_flags = e.setup_flags;
    rc = 0;
out:
    teardown(&e);
    return rc;
}
