/*
 * barrier — the cross-worker operations behind GET /stats and POST /reset (SPEC §2.1: the
 * totals and uniqueUsers of a /stats include every event acknowledged before it; a /reset
 * clears every worker). Each kind has a global generation; a request takes the next one, and
 * each worker records the last generation it served in its counter slot (barrier_gen,
 * reset_gen) after draining its user mailboxes (and, for a reset, clearing its shard and
 * events), so a request is done when every slot has caught up. Owns the per-worker list of
 * sessions waiting for that.
 *
 * Threads: bar_init main (before the workers); a struct barrier and its bar_* calls on the
 * owning worker only.
 */
#ifndef RC_BARRIER_H
#define RC_BARRIER_H

#include <stdint.h>

#include "session.h"

struct barrier;

enum bar_kind {
    BAR_STATS,   /* GET /stats: this node's totals */
    BAR_RESET,   /* POST /reset */
    BAR_CLUSTER, /* GET /stats?scope=cluster: this node's barrier, then the persister */
};

/* What a worker's barrier calls (on the worker's thread). */
struct bar_ops {
    void *ctx;
    void (*wake)(void *ctx, unsigned target); /* post a wake-up to worker `target` */
    /* The barrier of s is complete: answer it (SESS_H_DONE, s unparked) or park it elsewhere
       (SESS_H_PARKED). */
    enum sess_handled (*done)(void *ctx, struct sess *s, enum bar_kind k);
};

/* Generations back to 0 for n workers. Main thread, no worker running. */
void bar_init(unsigned nworkers);
/* Worker idx's barrier. NULL on ENOMEM. */
struct barrier *bar_new(unsigned idx, const struct bar_ops *ops);
void bar_free(struct barrier *b);
/* Start operation k for s: SESS_H_DONE or ops->done's verdict if every worker is already
   there, SESS_H_PARKED while it waits, SESS_H_DONE after answering 503 (out of memory). */
enum sess_handled bar_start(struct barrier *b, struct sess *s, enum bar_kind k);
/* A wake-up or a tick: serve the pending generations on this worker (users drained first),
   then complete the waiters every worker has caught up with. */
void bar_poll(struct barrier *b);
/* Any thread (the persister, adopting a reset made on another node): start a reset of every
   worker's user shard and events as POST /reset does, with nobody waiting for it; the caller
   wakes the workers (each serves it in bar_poll). Returns its generation. */
uint64_t bar_reset_all(void);
/* The session s died while waiting: drop it. */
void bar_forget(struct barrier *b, struct sess *s);

#endif
