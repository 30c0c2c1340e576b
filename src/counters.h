/*
 * counters — per-worker (per-CPU) counter slots, summed on read.
 *
 * Owns: one cache-line-aligned slot per worker. Each slot has exactly one writer, its worker
 * (so increments are plain ck_pr stores, no atomic RMW, no lock); any thread may read.
 * The event aggregate (count, 128-bit sum) sits under a per-slot ck_sequence so a reader never
 * sees an event's count without its value: GET /stats is never torn.
 */
#ifndef RC_COUNTERS_H
#define RC_COUNTERS_H

#include <ck_pr.h>
#include <ck_sequence.h>
#include <stdint.h>

#include "decimal.h"

#define CNT_MAX_WORKERS 1024

struct cnt_slot {
    ck_sequence_t seq;        /* guards events + sum_lo/sum_hi */
    uint64_t events;
    uint64_t sum_lo, sum_hi;  /* dec_t, split so each half is a ck_pr 64-bit store */
    uint64_t users;           /* distinct users inserted into this worker's shard */
    uint64_t users_overflow;  /* new users refused because --max-users was reached */
    uint64_t requests;        /* HTTP requests answered */
    uint64_t rps;             /* requests in the last full second */
    uint64_t conns_open, conns_accepted, conns_rejected;
    uint64_t cq_overflows, enobufs;
    uint64_t reset_gen;       /* last /reset generation applied by this worker (written inside
                                 seq by cnt_reset_events_to, so the persister reads it with the
                                 events it belongs to) */
    uint64_t ev_epoch;        /* resets applied by this worker (inside seq) */
    uint64_t incr;            /* the single counter: increments taken by this worker (v1+v2) */
    uint64_t barrier_gen;     /* last /stats barrier generation served by this worker */
} __attribute__((aligned(CK_MD_CACHELINE)));

struct cnt_snapshot {
    uint64_t events;
    dec_t sum;
    uint64_t users, users_overflow, requests, conns_open, rps;
};

/* Allocate n slots (1..CNT_MAX_WORKERS), zeroed. Main thread, before workers start. 0 / -EINVAL / -ENOMEM. */
int cnt_init(unsigned n);
/* Free the slots. Main thread, after workers joined. */
void cnt_fini(void);
/* The slot of worker w (w < n). */
struct cnt_slot *cnt_slot(unsigned w);
/* Number of slots. */
unsigned cnt_count(void);

/* Owner only: add one event of value v (seqlocked with its count). */
static inline void cnt_event_add(struct cnt_slot *s, dec_t v)
{
    unsigned __int128 sum = ((unsigned __int128)s->sum_hi << 64) | s->sum_lo;
    sum += (unsigned __int128)v;
    ck_sequence_write_begin(&s->seq);
    ck_pr_store_64(&s->events, s->events + 1);
    ck_pr_store_64(&s->sum_lo, (uint64_t)sum);
    ck_pr_store_64(&s->sum_hi, (uint64_t)(sum >> 64));
    ck_sequence_write_end(&s->seq);
}

/* Owner only: add d to a plain per-worker counter field. */
static inline void cnt_add(uint64_t *field, uint64_t d)
{
    ck_pr_store_64(field, *field + d);
}

/* Owner only: zero this slot's event aggregate and user count (POST /reset), and inside the
   same seq write section record reset generation gen and bump ev_epoch, so a reader never sees
   zeroed events with the old generation. */
void cnt_reset_events_to(struct cnt_slot *s, uint64_t gen);
/* Any thread: slot s's events, sum, reset generation and epoch, read consistently. */
void cnt_read_events(struct cnt_slot *s, uint64_t *events, dec_t *sum, uint64_t *reset_gen,
                     uint64_t *epoch);
/* Any thread: sum every slot; each slot's events/sum pair is read consistently. */
void cnt_snapshot(struct cnt_snapshot *out);

#endif
