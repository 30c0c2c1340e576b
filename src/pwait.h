/*
 * pwait — sessions parked on the persister (SPEC §2.2, §4). Owns, per worker, the durable
 * increments waiting for the commit of their ticket (a FIFO ring: tickets commit in order) and
 * the requests waiting for the persister's reply to a token: a cluster /stats, a durable
 * /reset, a keyed durable increment, and an answer held until the next commit (tenant inc
 * ?sync=1). It writes their answers when the reply comes, or a 503 once --durable-timeout-ms
 * passed, and the persistence answers the counter routes share (count, 409, 503).
 *
 * Threads: one struct pwait per worker, used by that worker only (src/app and src/tnapi).
 */
#ifndef RC_PWAIT_H
#define RC_PWAIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "session.h"

struct pwait;

/* Which cross-node answer a request waits for (pwait_request). */
enum pwait_req {
    PWAIT_CLUSTER, /* GET /stats?scope=cluster: the cluster totals after a flush */
    PWAIT_RESET,   /* POST /reset: the reset committed */
};

/* What a tenant operation's waiter runs on its worker when the persister gave op back
   (answered) or --durable-timeout-ms passed first (!answered: op is not to be touched, the
   persister still owns it). It answers s or leaves it to run again (SESS_H_AGAIN). */
struct persist_tnop;
typedef void (*pwait_tnop_fn)(struct sess *s, struct persist_tnop *op, bool answered);

/* Worker idx's waiters. NULL on ENOMEM. */
struct pwait *pwait_new(unsigned idx);
/* Free them (sessions still parked are the io layer's to close). */
void pwait_free(struct pwait *pw);
/* Ask the persister for k on behalf of s and park s until it replies: SESS_H_PARKED, or
   SESS_H_DONE (answered 503 OVERLOADED: no room to wait). */
enum sess_handled pwait_request(struct pwait *pw, struct sess *s, enum pwait_req k);
/* Hold the answer of s until PostgreSQL commits a flush that starts after this call, then send
   200 with hdrs (CRLF-terminated lines) and the JSON body (both copied); 503
   PERSISTENCE_UNAVAILABLE after --durable-timeout-ms. Returns SESS_H_PARKED, SESS_H_DONE
   (already answered 503 OVERLOADED), or -ENODEV without a database / -EINVAL (over 64 KiB) /
   -ENOMEM (nothing sent). */
int pwait_commit(struct pwait *pw, struct sess *s, const char *hdrs, size_t hlen,
                 const char *body, size_t blen);
/* Hand op (malloc'd; freed here once it is back, or at once on failure) to the persister and
   park s until done runs. SESS_H_PARKED, or SESS_H_DONE (answered 503 OVERLOADED). */
enum sess_handled pwait_tnop(struct pwait *pw, struct sess *s, struct persist_tnop *op,
                             pwait_tnop_fn done);
/* POST /api/v1/increment with a valid Idempotency-Key (the caller holds a
   persist_w_durable_enter slot, which this takes over): the persister inserts the key in the
   flush that counts it, so the database decides whether it is new. SESS_H_PARKED, or
   SESS_H_DONE (answered 503 not_committed). */
enum sess_handled pwait_keyed(struct pwait *pw, struct sess *s, const char *key, size_t klen);
/* POST /api/v1/increment (the caller holds a durable_enter slot, taken over): take the
   increment and park until the flush carrying it commits. SESS_H_PARKED, or SESS_H_DONE
   (answered 503 OVERLOADED or 409 COUNTER_OVERFLOW, nothing counted). */
enum sess_handled pwait_durable(struct pwait *pw, struct sess *s);
/* Drain the persister's replies, answer what they cover, 503 what waited past its deadline
   (now_ms: CLOCK_MONOTONIC_COARSE ms). */
void pwait_poll(struct pwait *pw, uint64_t now_ms);
/* The session s died while parked: drop its waiters (a durable one stays as a tombstone, so
   the FIFO keeps ticket order). */
void pwait_forget(struct pwait *pw, struct sess *s);

/* ---- the persistence answers (SPEC §2.2, §4) ---- */
/* The body of a done /reset (the node's, and the committed one). */
#define PWAIT_BODY_RESET "{\"status\":\"reset\"}"
/* 200 {"count":v}. 0 / -ENOMEM (sess_respond). */
int pwait_answer_count(struct sess *s, int64_t v);
/* 503 PERSISTENCE_UNAVAILABLE with why, nothing was done. 0 / -ENOMEM. */
int pwait_answer_unavailable(struct sess *s, const char *why);
/* 503 PERSISTENCE_UNAVAILABLE, "outcome":"not_committed" (nothing was counted). 0 / -ENOMEM. */
int pwait_answer_not_committed(struct sess *s, const char *why);
/* 409 COUNTER_OVERFLOW (the counter is at INT64_MAX and never wraps). 0 / -ENOMEM. */
int pwait_answer_overflow(struct sess *s);

#endif
