/*
 * ring — io_uring setup shared by the server and ringbench: the start-up probe that explains
 * why io_uring is unavailable, ring creation with the best flags the kernel accepts, and
 * provided-buffer rings registered by hand (liburing 2.3 has no io_uring_setup_buf_ring).
 *
 * Threads: ring_probe from main; the rest from the thread that will own the ring (with
 * IORING_SETUP_SINGLE_ISSUER the creating task is the only one allowed to submit).
 */
#ifndef RC_RING_H
#define RC_RING_H

#include <liburing.h>
#include <stddef.h>
#include <stdbool.h>
#include <stdint.h>

#include "ring_probe.h"

/* Create r with sq entries and a CQ of 4x (a CQ overflow is survivable but slow). Tries
   SINGLE_ISSUER|DEFER_TASKRUN, then COOP_TASKRUN, then plain; *mode names what was used.
   0 / -errno. */
int ring_create(struct io_uring *r, unsigned entries, const char **mode);

struct ring_bufs {
    struct io_uring_buf_ring *br;
    char *mem;
    uint32_t count, size, mask;
    uint16_t bgid;
    uint32_t pending; /* buffers re-added since the last advance */
};

/* Register count (power of two) buffers of size bytes as buffer group bgid. 0 / -errno. */
int ring_bufs_create(struct io_uring *r, struct ring_bufs *b, uint32_t count, uint32_t size,
                     uint16_t bgid);
/* Unregister and free. */
void ring_bufs_destroy(struct io_uring *r, struct ring_bufs *b);

/* Give buffer bid back to the kernel (visible after ring_bufs_commit). */
static inline void ring_bufs_put(struct ring_bufs *b, uint16_t bid)
{
    io_uring_buf_ring_add(b->br, b->mem + (size_t)bid * b->size, b->size, bid, (int)b->mask,
                          (int)b->pending++);
}

/* Publish the buffers given back since the last commit. */
static inline void ring_bufs_commit(struct ring_bufs *b)
{
    if (b->pending) {
        io_uring_buf_ring_advance(b->br, (int)b->pending);
        b->pending = 0;
    }
}

/* Data pointer of buffer bid. */
static inline char *ring_bufs_data(const struct ring_bufs *b, uint16_t bid)
{
    return b->mem + (size_t)bid * b->size;
}

/* An SQE, submitting what is queued first if the SQ is full. Never NULL for a sane ring. */
struct io_uring_sqe *ring_sqe(struct io_uring *r);

/* Does the kernel take a minimum wait in io_uring_enter (IORING_FEAT_MIN_TIMEOUT, 6.12+)? */
bool ring_has_min_wait(const struct io_uring *r);
/* Submit what is queued and wait for completions: return once want are there, or once
   min_wait_us has passed since the wait began with at least one there (else on the first).
   Fewer wake-ups per request at partial load, for at most min_wait_us more latency; liburing
   2.3 does not name the field (its `pad`), so the enter is made here. Without the feature or
   with min_wait_us == 0 it is io_uring_submit_and_wait(r, 1). >= 0 / -errno. */
int ring_submit_and_wait_min(struct io_uring *r, unsigned want, uint32_t min_wait_us);

#endif
