/*
 * qsbr — quiescent-state-based reclamation for what lock-free readers on the workers may still
 * hold: a record taken out of an index (src/tenants' evicted counters), or settings replaced
 * by a reload (src/live), can be reused or freed once every worker has started an event-loop
 * batch after that (a worker keeps no such pointer past its batch).
 *
 * Owns: one global epoch and one acknowledgement per worker (a cache line each).
 *
 * Cost on the hot path: a fence and a store before a worker waits for completions
 * (qsbr_offline), and another at the start of the batch after it (qsbr_enter). A worker blocked
 * in io_uring_enter holds nothing, so it never holds up a grace period: one lasts as long as
 * the longest batch in progress (microseconds), not until an idle worker's 1 s tick (a cache of
 * 64 tenants churned by a burst ran out of free records while evicted ones waited that second).
 *
 * Threads: qsbr_init from main before any worker (live_init calls it); qsbr_enter and
 * qsbr_offline from worker idx only (live_enter / live_leave at the start and end of every
 * batch); qsbr_defer and qsbr_safe from any thread.
 */
#ifndef RC_QSBR_H
#define RC_QSBR_H

#include <stdbool.h>
#include <stdint.h>

/* Reset for n workers (1..CNT_MAX_WORKERS; unit tests may call it again). 0 / -EINVAL. */
int qsbr_init(unsigned n);
/* Worker idx starts a batch: it holds nothing from its previous batches any more. */
void qsbr_enter(unsigned idx);
/* Worker idx ends a batch and may block: it holds nothing until its next qsbr_enter. */
void qsbr_offline(unsigned idx);
/* What was taken out of every index before this call is free to reuse once qsbr_safe(the
   returned epoch) is true. */
uint64_t qsbr_defer(void);
/* Has every worker entered a batch at or after epoch e? */
bool qsbr_safe(uint64_t e);

#endif
