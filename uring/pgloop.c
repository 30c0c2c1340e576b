/* pgloop — see pgloop.h. */
#include "pgloop.h"

#include <ck_pr.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "config.h"
#include "log.h"
#include "persist.h"
#include "ring.h"

/* Our own user_data values carry this tag in the top byte; a worker's MSG_RING never does. */
#define TAG (0xF1ull << 56)
#define UD_POLL(id) (TAG | 0x10000000000ull | ((id)&0xffffffffull))
#define UD_TIMER (TAG | 1)
#define UD_STOP (TAG | 2)
#define UD_IGNORE (TAG | 3)
#define IS_POLL(u) (((u) & ~0xffffffffull) == (TAG | 0x10000000000ull))

struct pgl {
    pthread_t thread;
    bool started;
    struct io_uring ring;
    int ring_fd;
    int evfd;
    int start_rc;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool ready;
    /* set once by main (pgl_set_workers), read by the thread */
    int *wfds;
    unsigned nw;
    uint64_t wake_data;
    int wired;
    /* stop request: deadline written before the eventfd write */
    uint64_t deadline_ms;
    /* thread-private */
    bool poll_armed, timer_armed;
    int poll_fd;
    unsigned poll_ev;
    uint64_t poll_gen;
    uint32_t poll_id;
    uint64_t timer_at;
    struct __kernel_timespec ts, ts_upd;
};

static void wake_worker(void *ctx, unsigned w)
{
    struct pgl *p = ctx;
    if (!ck_pr_load_int(&p->wired) || w >= p->nw)
        return;
    struct io_uring_sqe *sqe = ring_sqe(&p->ring);
    io_uring_prep_msg_ring(sqe, p->wfds[w], 0, p->wake_data, 0);
    io_uring_sqe_set_data64(sqe, UD_IGNORE);
    sqe->flags |= IOSQE_CQE_SKIP_SUCCESS;
}

static void arm_stop(struct pgl *p)
{
    struct io_uring_sqe *sqe = ring_sqe(&p->ring);
    io_uring_prep_poll_add(sqe, p->evfd, POLLIN);
    io_uring_sqe_set_data64(sqe, UD_STOP);
}

/* Keep exactly the poll persist wants armed: a new connection (gen) or new events replace it. */
static void sync_poll(struct pgl *p)
{
    unsigned ev;
    uint64_t gen;
    int fd = persist_p_pollfd(&ev, &gen);
    if (p->poll_armed && (fd != p->poll_fd || gen != p->poll_gen || ev != p->poll_ev)) {
        struct io_uring_sqe *sqe = ring_sqe(&p->ring);
        io_uring_prep_poll_remove(sqe, UD_POLL(p->poll_id));
        io_uring_sqe_set_data64(sqe, UD_IGNORE);
        p->poll_armed = false;
    }
    if (!p->poll_armed && fd >= 0) {
        p->poll_id++;
        struct io_uring_sqe *sqe = ring_sqe(&p->ring);
        io_uring_prep_poll_add(sqe, fd, ev);
        io_uring_sqe_set_data64(sqe, UD_POLL(p->poll_id));
        p->poll_armed = true;
        p->poll_fd = fd;
        p->poll_ev = ev;
        p->poll_gen = gen;
    }
}

/* One timeout armed at a time; moved earlier with a timeout update when persist asks sooner. */
static void sync_timer(struct pgl *p, uint64_t now, uint32_t delay_ms)
{
    uint64_t at = now + delay_ms;
    if (p->timer_armed && at + 1 >= p->timer_at)
        return;
    struct io_uring_sqe *sqe = ring_sqe(&p->ring);
    if (!p->timer_armed) {
        p->ts.tv_sec = delay_ms / 1000;
        p->ts.tv_nsec = (long long)(delay_ms % 1000) * 1000000;
        io_uring_prep_timeout(sqe, &p->ts, 0, 0);
        io_uring_sqe_set_data64(sqe, UD_TIMER);
    } else {
        p->ts_upd.tv_sec = delay_ms / 1000;
        p->ts_upd.tv_nsec = (long long)(delay_ms % 1000) * 1000000;
        io_uring_prep_timeout_update(sqe, &p->ts_upd, UD_TIMER, 0);
        io_uring_sqe_set_data64(sqe, UD_IGNORE);
    }
    p->timer_armed = true;
    p->timer_at = at;
}

static void loop(struct pgl *p)
{
    arm_stop(p);
    uint64_t now = clock_ms(CLOCK_MONOTONIC);
    uint32_t delay = persist_p_run(now, 0);
    for (;;) {
        if (persist_p_finished())
            break;
        sync_poll(p);
        sync_timer(p, now, delay);
        int rc = io_uring_submit_and_wait(&p->ring, 1);
        if (rc < 0 && rc != -EINTR && rc != -EAGAIN && rc != -EBUSY) {
            log_error("persister io_uring_submit_and_wait failed", LOG_S("error", strerror(-rc)));
            break;
        }
        unsigned head, seen = 0, revents = 0;
        struct io_uring_cqe *cqe;
        io_uring_for_each_cqe(&p->ring, head, cqe)
        {
            uint64_t ud = cqe->user_data;
            seen++;
            if (IS_POLL(ud)) {
                if ((uint32_t)ud == p->poll_id) {
                    p->poll_armed = false;
                    if (cqe->res > 0)
                        revents |= (unsigned)cqe->res;
                    else if (cqe->res < 0 && cqe->res != -ECANCELED)
                        revents |= POLLERR;
                }
            } else if (ud == UD_TIMER) {
                p->timer_armed = false;
            } else if (ud == UD_STOP) {
                uint64_t v;
                ssize_t r = read(p->evfd, &v, sizeof(v));
                (void)r;
                persist_p_stop(ck_pr_load_64(&p->deadline_ms));
            } /* UD_IGNORE, and anything else: a worker's wake-up (handled by the run below) */
        }
        io_uring_cq_advance(&p->ring, seen);
        now = clock_ms(CLOCK_MONOTONIC);
        delay = persist_p_run(now, revents);
    }
}

static void *thread_main(void *arg)
{
    struct pgl *p = arg;
    const char *mode;
    /* 64 SQEs: one poll, one timer, its update, and a wake-up per worker per run. */
    int rc = ring_create(&p->ring, 64, &mode);
    pthread_mutex_lock(&p->mu);
    p->start_rc = rc;
    p->ring_fd = rc == 0 ? p->ring.ring_fd : -1;
    p->ready = true;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    if (rc < 0)
        return NULL;
    persist_p_attach(wake_worker, p);
    loop(p);
    /* Flush the last wake-ups, then leave. */
    io_uring_submit(&p->ring);
    io_uring_queue_exit(&p->ring);
    return NULL;
}

int pgl_start(const struct config *cfg, struct pgl **out)
{
    (void)cfg;
    struct pgl *p = calloc(1, sizeof(*p));
    if (!p)
        return -ENOMEM;
    p->ring_fd = -1;
    p->evfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    int rc = 0;
    if (p->evfd < 0) {
        rc = -errno;
        goto fail;
    }
    if (pthread_create(&p->thread, NULL, thread_main, p) != 0) {
        rc = -EAGAIN;
        goto fail;
    }
    p->started = true;
    pthread_mutex_lock(&p->mu);
    while (!p->ready)
        pthread_cond_wait(&p->cv, &p->mu);
    rc = p->start_rc;
    pthread_mutex_unlock(&p->mu);
    if (rc < 0) {
        pthread_join(p->thread, NULL);
        p->started = false;
        log_error("persister io_uring setup failed", LOG_S("error", strerror(-rc)));
        goto fail;
    }
    *out = p;
    return 0;
fail:
    pgl_free(p);
    return rc;
}

int pgl_ring_fd(const struct pgl *p)
{
    return p->ring_fd;
}

void pgl_set_workers(struct pgl *p, const int *ring_fds, unsigned n, uint64_t wake_data)
{
    if (n == 0 || p->wfds) { /* unwire (the workers are gone); the array lives until pgl_free */
        ck_pr_store_int(&p->wired, 0);
        return;
    }
    int *fds = malloc(n * sizeof(int));
    if (!fds)
        return; /* replies then wait for the workers' 1 s tick */
    memcpy(fds, ring_fds, n * sizeof(int));
    p->wfds = fds;
    p->nw = n;
    p->wake_data = wake_data;
    ck_pr_fence_store();
    ck_pr_store_int(&p->wired, 1);
}

int pgl_stop(struct pgl *p, uint32_t timeout_ms)
{
    if (!p || !p->started)
        return 0;
    ck_pr_store_64(&p->deadline_ms, clock_ms(CLOCK_MONOTONIC) + timeout_ms);
    ck_pr_fence_store();
    uint64_t one = 1;
    ssize_t r = write(p->evfd, &one, sizeof(one));
    (void)r;
    pthread_join(p->thread, NULL);
    p->started = false;
    return 0;
}

void pgl_free(struct pgl *p)
{
    if (!p)
        return;
    if (p->started)
        pgl_stop(p, 0);
    if (p->evfd >= 0)
        close(p->evfd);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cv);
    free(p->wfds);
    free(p);
}
