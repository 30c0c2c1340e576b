/*
 * server — the thread-per-core io_uring HTTP server: listeners, worker threads and their event
 * loops (multishot accept, multishot recv into a provided buffer ring, one coalesced send per
 * connection per batch, timers, cross-worker wake-ups with IORING_OP_MSG_RING, drain).
 *
 * Threads: srv_start/srv_stop/srv_join/srv_free from main; srv_drain from any thread.
 */
#ifndef RC_SERVER_H
#define RC_SERVER_H

#include <stddef.h>
#include <stdint.h>

struct config;
struct srv;

/* Bind the listeners and start n workers pinned to cpus[0..n) (cpus may be NULL: unpinned).
   Returns once every worker is serving. 0 / -errno (the cause was logged). */
int srv_start(const struct config *cfg, unsigned n, const int *cpus, struct srv **out);
/* The bound port (useful with --listen ...:0). */
uint16_t srv_port(const struct srv *s);
/* Worker w's ring fd, target of IORING_OP_MSG_RING wake-ups carrying srv_wake_data(); -1 if
   w is out of range. Any thread, after srv_start. */
int srv_worker_ring_fd(const struct srv *s, unsigned w);
/* The user_data a wake-up posted to a worker ring must carry (the worker runs app_on_wake). */
uint64_t srv_wake_data(void);
/* Where app_io.wake(ctx, n) — target one past the last worker — posts: the persister's ring.
   Until set (or fd < 0) such wake-ups are dropped. Any thread. */
void srv_set_aux_wake_fd(struct srv *s, int fd);
/* Begin a graceful stop: stop accepting, answer what is in flight, close. Any thread. */
void srv_drain(struct srv *s);
/* Wait for every worker to finish. 0. */
int srv_join(struct srv *s);
/* Free everything (after srv_join). */
void srv_free(struct srv *s);

#endif
