/* ring — see ring.h. */
#include "ring.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

static int read_sysctl_int(const char *path)
{
    FILE *f = fopen(path, "r");
    int v = -1;
    if (f) {
        if (fscanf(f, "%d", &v) != 1)
            v = -1;
        fclose(f);
    }
    return v;
}

int ring_probe(char *why, size_t cap)
{
    struct io_uring r;
    int rc = io_uring_queue_init(8, &r, 0);
    if (rc < 0) {
        int dis = read_sysctl_int("/proc/sys/kernel/io_uring_disabled");
        if (rc == -ENOSYS)
            snprintf(why, cap, "io_uring is not available in this kernel (ENOSYS); ringcount "
                               "needs Linux >= 6.1 built with CONFIG_IO_URING");
        else if (rc == -EPERM && dis > 0)
            snprintf(why, cap, "io_uring is disabled by kernel.io_uring_disabled=%d; fix: sysctl "
                               "-w kernel.io_uring_disabled=0 (or add this user to "
                               "kernel.io_uring_group when it is 1)", dis);
        else if (rc == -EPERM)
            snprintf(why, cap, "io_uring_setup was refused (EPERM): a seccomp filter or container "
                               "policy blocks it; allow io_uring_setup/enter/register");
        else if (rc == -ENOMEM)
            snprintf(why, cap, "io_uring_setup failed with ENOMEM: raise RLIMIT_MEMLOCK "
                               "(ulimit -l unlimited, LimitMEMLOCK=infinity)");
        else
            snprintf(why, cap, "io_uring_setup failed: %s", strerror(-rc));
        return rc;
    }
    /* Provided buffer rings (5.19) and multishot recv (6.0) are required. */
    struct ring_bufs b;
    rc = ring_bufs_create(&r, &b, 2, 64, 0);
    if (rc < 0)
        snprintf(why, cap, "this kernel lacks io_uring provided buffer rings (%s); ringcount "
                           "needs Linux >= 6.1", strerror(-rc));
    else
        ring_bufs_destroy(&r, &b);
    io_uring_queue_exit(&r);
    return rc;
}

int ring_create(struct io_uring *r, unsigned entries, const char **mode)
{
    static const struct {
        unsigned flags;
        const char *name;
    } tries[] = {
        {IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN, "single_issuer+defer_taskrun"},
        {IORING_SETUP_COOP_TASKRUN, "coop_taskrun"},
        {0, "plain"},
    };
    int rc = -EINVAL;
    for (size_t i = 0; i < sizeof(tries) / sizeof(tries[0]); i++) {
        struct io_uring_params p;
        memset(&p, 0, sizeof(p));
        p.flags = tries[i].flags | IORING_SETUP_CQSIZE | IORING_SETUP_SUBMIT_ALL;
        p.cq_entries = entries * 4;
        rc = io_uring_queue_init_params(entries, r, &p);
        if (rc == 0) {
            *mode = tries[i].name;
            return 0;
        }
        if (rc != -EINVAL)
            return rc;
    }
    return rc;
}

int ring_bufs_create(struct io_uring *r, struct ring_bufs *b, uint32_t count, uint32_t size,
                     uint16_t bgid)
{
    memset(b, 0, sizeof(*b));
    if (!count || (count & (count - 1)) || count > 32768)
        return -EINVAL;
    size_t ring_bytes = (size_t)count * sizeof(struct io_uring_buf);
    void *ring_mem = mmap(NULL, ring_bytes, PROT_READ | PROT_WRITE, MAP_ANONYMOUS | MAP_PRIVATE,
                          -1, 0);
    if (ring_mem == MAP_FAILED)
        return -errno;
    b->br = ring_mem;
    b->mem = malloc((size_t)count * size);
    if (!b->mem) {
        munmap(ring_mem, ring_bytes);
        return -ENOMEM;
    }
    /* The kernel fills buffers in ring order, so their pages would fault in one by one until
       the ring has gone round once: fault them in now, so RSS is a fixed cost from the start
       rather than creeping under the first bursts (2048 x 4 KiB = 8 MiB by default). */
    memset(b->mem, 0, (size_t)count * size);
    struct io_uring_buf_reg reg;
    memset(&reg, 0, sizeof(reg));
    reg.ring_addr = (uint64_t)(uintptr_t)ring_mem;
    reg.ring_entries = count;
    reg.bgid = bgid;
    int rc = io_uring_register_buf_ring(r, &reg, 0);
    if (rc < 0) {
        free(b->mem);
        munmap(ring_mem, ring_bytes);
        memset(b, 0, sizeof(*b));
        return rc;
    }
    io_uring_buf_ring_init(b->br);
    b->count = count;
    b->size = size;
    b->mask = (uint32_t)io_uring_buf_ring_mask(count);
    b->bgid = bgid;
    for (uint32_t i = 0; i < count; i++)
        ring_bufs_put(b, (uint16_t)i);
    ring_bufs_commit(b);
    return 0;
}

void ring_bufs_destroy(struct io_uring *r, struct ring_bufs *b)
{
    if (!b->br)
        return;
    io_uring_unregister_buf_ring(r, b->bgid);
    munmap(b->br, (size_t)b->count * sizeof(struct io_uring_buf));
    free(b->mem);
    memset(b, 0, sizeof(*b));
}

struct io_uring_sqe *ring_sqe(struct io_uring *r)
{
    struct io_uring_sqe *sqe = io_uring_get_sqe(r);
    while (!sqe) {
        io_uring_submit(r);
        sqe = io_uring_get_sqe(r);
    }
    return sqe;
}

/* The kernel's name for the min-wait feature and field (6.12); liburing 2.3 predates them. */
#ifndef IORING_FEAT_MIN_TIMEOUT
#define IORING_FEAT_MIN_TIMEOUT (1U << 15)
#endif

bool ring_has_min_wait(const struct io_uring *r)
{
    return (r->features & IORING_FEAT_MIN_TIMEOUT) != 0;
}

int ring_submit_and_wait_min(struct io_uring *r, unsigned want, uint32_t min_wait_us)
{
    if (!min_wait_us || want <= 1 || !ring_has_min_wait(r))
        return io_uring_submit_and_wait(r, 1);
    int sub = io_uring_submit(r);
    if (sub < 0)
        return sub;
    if (io_uring_cq_ready(r))
        return sub; /* completions are there already: no wait at all */
    /* A regular timeout too: with a min wait alone the kernel answers -ETIME at once when it
       passes with nothing there (measured: 8,500 empty enters a second on an idle worker);
       with one, it goes on sleeping until the first completion or 1 s (the loop's own timer
       ticks every second anyway). */
    struct __kernel_timespec ts = {.tv_sec = 1};
    struct io_uring_getevents_arg arg = {.pad = min_wait_us, /* min_wait_usec since 6.12 */
                                         .ts = (uint64_t)(uintptr_t)&ts};
    int rc = io_uring_enter2((unsigned)r->ring_fd, 0, want,
                             IORING_ENTER_GETEVENTS | IORING_ENTER_EXT_ARG, (sigset_t *)&arg,
                             sizeof(arg));
    /* -ETIME: the min wait ended with fewer than want (and at least one) completions */
    return rc < 0 && rc != -ETIME ? rc : sub;
}
