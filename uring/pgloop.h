/*
 * pgloop — the persistence thread and its own io_uring. It drives src/persist's libpq state
 * machine: IORING_OP_POLL_ADD on the connection's socket, one IORING_OP_TIMEOUT for the flush
 * timer and the reconnect back-off (persist_p_run says when it wants to run next), and
 * IORING_OP_MSG_RING to wake workers. Workers wake it the same way: any CQE that is not one of
 * its own operations (a worker's MSG_RING) is a wake-up.
 *
 * Owns: the thread, its ring and an eventfd main uses to ask for the final flush.
 * Threads: every function from main; the thread itself only calls persist_p_*.
 */
#ifndef RC_PGLOOP_H
#define RC_PGLOOP_H

#include <stdint.h>

struct config;
struct pgl;

/* Start the persistence thread (persist_init/persist_load done). Returns once its ring exists.
   0 / -errno (logged). */
int pgl_start(const struct config *cfg, struct pgl **out);
/* The thread's ring fd: target of the workers' MSG_RING wake-ups. */
int pgl_ring_fd(const struct pgl *p);
/* Tell the thread how to wake the n workers: MSG_RING to ring_fds[i] carrying wake_data.
   Once, after the workers exist; before it, replies wait for the workers' 1 s tick. A second
   call (or n == 0) stops the wake-ups for good: call it once the workers are joined. */
void pgl_set_workers(struct pgl *p, const int *ring_fds, unsigned n, uint64_t wake_data);
/* Final flush (the workers are joined), then stop and join the thread, waiting at most
   timeout_ms for the flush (what could not be flushed by then is logged as lost). 0. */
int pgl_stop(struct pgl *p, uint32_t timeout_ms);
/* Free p (after pgl_stop, or if the thread never started). */
void pgl_free(struct pgl *p);

#endif
