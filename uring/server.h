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
/* Begin a graceful stop: stop accepting, answer what is in flight, close. Any thread. */
void srv_drain(struct srv *s);
/* Wait for every worker to finish. 0. */
int srv_join(struct srv *s);
/* Free everything (after srv_join). */
void srv_free(struct srv *s);

#endif
