/*
 * persist — PostgreSQL persistence (SPEC §4): the schema and its migrations, the start-up load,
 * the flush state machine (one non-blocking libpq connection in pipeline mode), the single
 * counter's durable/fast paths, and the lock-free queues between the workers and the persister.
 *
 * Owns (process-wide, one instance, stated global state): the connection, the per-slot
 * watermarks of what is committed, the pending new users, and per worker: a journal byte ring
 * (new users, owner → persister), a request ring (ck_ring, worker → persister) and a reply ring
 * (persister → worker). It never includes liburing.h: uring/pgloop drives it — polls
 * persist_p_pollfd() through its ring, calls persist_p_run() on readiness, wake-ups and timers,
 * and posts the worker wake-ups persist asks for (persist_p_attach).
 *
 * What a flush carries (one transaction, flush_seq recorded in rc_flush_ledger so a flush whose
 * COMMIT outcome is unknown is looked up, not applied twice): the counter delta Σ(slot.incr −
 * watermark), the event delta read from the seqlocked slots (or, after POST /reset, DELETE and
 * absolute values), the new users (bytea, sorted, ON CONFLICT DO NOTHING), and the tenant
 * counters (schema v2): new tenants and counters (read from the store by index past what is
 * committed), every counter's live value minus its committed value (`value = value + delta`,
 * sorted by id), and the idempotency records inserted since the last committed cursor; every
 * ~10 s (with the ledger prune) idempotency rows older than 24 h are deleted.
 *
 * Threads: persist_init/persist_load/persist_workers_stopped/persist_fini: main, with no worker
 * or persister running (except persist_workers_stopped: after srv_join, persister running).
 * persist_w_* and persist_journal: worker w only. persist_p_*: the persister thread only.
 * persist_live/persist_committed/persist_stats_json/persist_enabled/persist_pending_keys: any
 * thread.
 *
 * Debug hook (tests only): RINGCOUNT_DEBUG_LOSE_COMMIT_MS=N — the first flush that carries a
 * counter delta is sent, then its results are not read for N ms (the log line "debug: holding
 * flush result" names the backend pid, so a test can pg_terminate_backend it), then the
 * connection is dropped as if it died before the COMMIT result arrived: the outcome is unknown
 * and must be resolved through the ledger.
 */
#ifndef RC_PERSIST_H
#define RC_PERSIST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "decimal.h"
#include "tenants.h"

struct config;
struct tn_store;

/* Requests a worker sends to the persister (persist_w_request). */
enum persist_req {
    PERSIST_REQ_CLUSTER = 1, /* GET /stats?scope=cluster: flush, then read cluster totals */
    PERSIST_REQ_RESET = 2,   /* POST /reset: answer once the reset is committed */
    PERSIST_REQ_TNOP = 3,    /* a tenant write or lookup (struct persist_tnop) */
};

enum persist_reply_kind {
    PERSIST_R_DURABLE = 1, /* counter tickets (prev, upto] of this worker are committed */
    PERSIST_R_CLUSTER = 2,
    PERSIST_R_RESET = 3,
    PERSIST_R_KEYED = 4,   /* a durable increment with an Idempotency-Key is committed */
    PERSIST_R_TNOP = 5,    /* a struct persist_tnop is done: token is its address */
};

struct persist_reply {
    uint8_t kind;       /* enum persist_reply_kind */
    uint64_t upto;      /* DURABLE: every ticket <= upto is committed ... */
    uint64_t offset;    /* ... and ticket t's post-increment value is (int64_t)(t + offset) */
    uint64_t token;     /* CLUSTER/RESET: the token given to persist_w_request */
    uint64_t events, users, nodes; /* CLUSTER */
    dec_t sum;          /* CLUSTER, micro-units */
    int64_t value;      /* KEYED: the count right after it (or after its first request) */
    int status;         /* KEYED: 0, or -EOVERFLOW (the counter would pass INT64_MAX);
                           KEYED/DURABLE: -EIO, rejected by the database (in rc_rejected) */
};

/* ---- main thread ---- */
/* Set up for n workers; persistence is on when cfg->db is non-empty. 0 / -ENOMEM. */
int persist_init(const struct config *cfg, unsigned nworkers);
/* With a database: connect (retrying for up to 10 s), create/migrate the schema under an
   advisory lock, load the counter, this node's event totals (into slot 0), the flush sequence
   and the user set (users_preload); logs what was loaded and how long it took. Requires
   cnt_init and users_init. 0 (also without a database) / -EIO (logged). */
int persist_load(void);
/* The workers are joined: the persister may now read their journal spills itself. */
void persist_workers_stopped(void);
/* Free everything (after the persister thread is gone). */
void persist_fini(void);
/* The tenant-counter store to persist (SPEC §2.3): after persist_init, before persist_load
   (which then loads it). NULL: tenant counters are not persisted. */
void persist_set_tenants(struct tn_store *st);
/* The wall clock of the history buckets, unix ms: CLOCK_REALTIME, or in tests the number in
   RINGCOUNT_DEBUG_CLOCK_FILE. Persister (and main). */
int64_t persist_history_now_ms(void);
struct tnk_store;
/* The tenant keys to persist (rc_tenant_keys): as persist_set_tenants; persist_load loads them
   after the tenants and the change feed follows them. NULL: keys are not persisted. */
void persist_set_keys(struct tnk_store *ks);
/* Is a database configured? Any thread. */
bool persist_enabled(void);

/* A tenant write or lookup that PostgreSQL decides (SPEC §2.3 with --db: the database is the
   source of truth). The worker fills the inputs, hands it over with persist_w_tnop and gets it
   back in a PERSIST_R_TNOP reply (token = its address) once the statement committed or failed;
   until then the persister owns it. After the reply the records are in the node's store (the
   cache) unless status says otherwise. */
enum persist_tnop_kind {
    PTN_TENANT_CREATE = 1, /* tid, label, created_ms */
    PTN_COUNTER_CREATE,    /* tid, cid, label (has_label), value (initial), max_delta, created_ms */
    PTN_SET,               /* tid, cid, value: absolute */
    PTN_COUNTER_DELETE,    /* tid, cid */
    PTN_TENANT_DELETE,     /* tid (and its counters) */
    PTN_LOOKUP,            /* tid, and cid unless has_cid is false: bring them into the cache */
    PTN_KEYED_INC,         /* tid, cid, delta, label = the Idempotency-Key: the database
                              decides whether the key is new (on any node); out: value */
    PTN_DB_INC,            /* tid, cid, delta: a counter the full cache does not hold is
                              incremented in the database itself; out: value */
    PTN_HISTORY,           /* tid, cid, label[0] = bucket 'm'/'h'/'d', [from_ms, to_ms): out:
                              npoints of points (at most cap_points; -ENOENT: no counter) */
    PTN_KEY_CREATE,        /* a tenant key (src/tnkeys): tid, cid = key id, label = its SHA-256
                              verifier (32 bytes), value = scopes, max_delta = expires (unix ms,
                              0 never), created_ms; -ENOENT no such live tenant */
    PTN_KEY_DELETE,        /* tid, cid = key id: revoked; -ENOENT no such live key of tid */
    PTN_LIST_COUNTERS,     /* tid's live counters in creation order after cursor cid (has_cid),
                              or the one labelled label (has_label): out rows (at most
                              cap_rows) and more; -ENOENT no such live tenant, -EINVAL the
                              cursor is no counter of tid */
    PTN_LIST_TENANTS,      /* live tenants in creation order after cursor cid (has_cid): as
                              PTN_LIST_COUNTERS */
};
struct persist_tnop {
    /* in (the worker) */
    uint8_t kind;          /* enum persist_tnop_kind */
    bool has_label, has_cid;
    uint8_t label_len;
    uint8_t tid[16], cid[16];
    char label[255];
    int64_t value, max_delta, created_ms, delta;
    /* out (the persister): 0 done; -EEXIST the label is taken (on any node); -ENOENT no such
       tenant / counter (or deleted); -ENOSPC done in the database, but the node's cache is
       full (--tenant-cache / --counter-cache); -ETIMEDOUT not sent (it waited past
       --durable-timeout-ms: nothing was done); -EIO the database failed it or the connection
       dropped (outcome unknown for a write) */
    int status;
    char sqlstate[6];
    struct tn_row row;     /* PTN_LOOKUP -ENOSPC: the row found, to answer without the cache */
    int64_t from_ms, to_ms;
    uint32_t npoints, cap_points;
    int64_t (*points)[2];  /* the worker's buffer: {bucket start unix ms, delta} */
    uint32_t nrows, cap_rows;
    bool more;             /* PTN_LIST_*: rows past the cap_rows returned */
    struct tn_row *rows;   /* PTN_LIST_*: the worker's buffer */
    /* PTN_KEYED_INC out: status 0 and value = the counter right after it (or after the key's
       first request); -EEXIST the key was used for another counter or delta; -EOVERFLOW */
};

/* ---- worker w ---- */
/* Hand op to the persister: 0 (it comes back in a PERSIST_R_TNOP reply), -ENODEV (no
   database), -EAGAIN (request queue full: op is still the caller's). */
int persist_w_tnop(unsigned w, struct persist_tnop *op);
/* Take one increment of the single counter on worker w: 0 and *ticket (this slot's increment
   number, for a durable wait), or -EOVERFLOW (the value would pass INT64_MAX; nothing taken). */
int persist_w_incr(unsigned w, uint64_t *ticket);
/* Reserve a durable wait slot: 0, -ENODEV (no database), -EBUSY (--max-inflight waiting). */
int persist_w_durable_enter(unsigned w);
/* Release one (answered, timed out or its connection died). */
void persist_w_durable_leave(unsigned w);
/* A durable increment with an Idempotency-Key (1..PERSIST_KEY_MAX printable bytes, checked by
   the caller), inside a durable_enter slot: the database arbitrates the key in the flush that
   counts it (a repeat on any node gets the first result, counting nothing) and the reply
   PERSIST_R_KEYED carries token. 0 / -ENODEV / -EAGAIN (journal full: try again). */
#define PERSIST_KEY_MAX 64
int persist_w_keyed(unsigned w, const char *key, size_t klen, uint64_t token);
/* Queue a request (enum persist_req) with the caller's token: 0, -ENODEV (no database),
   -EAGAIN (queue full: 256 requests not yet seen by the persister). */
int persist_w_request(unsigned w, enum persist_req kind, uint64_t token);
/* Pop one reply for worker w: true if *r was filled. */
bool persist_w_reply_pop(unsigned w, struct persist_reply *r);
/* End of an event-loop batch (active: it served a request or a wake-up, so it may have changed
   what is flushed): move spilled journal records into the ring. True if the persister must be
   woken (the caller posts the wake-up; at most one is outstanding): it has a request of w's,
   or it dozes (idle, flushing once a second) and an active batch ends the doze. */
bool persist_w_batch_end(unsigned w, bool active);
/* users journal hook (users_journal_fn): owner w inserted user (s, n); s == NULL: shard reset. */
void persist_journal(unsigned w, const char *s, size_t n, void *ctx);
/* --durable-timeout-ms. */
uint32_t persist_durable_timeout_ms(void);

/* ---- any thread ---- */
/* The single counter's live value (committed + this node's increments not yet committed). */
int64_t persist_live(void);
/* The committed value: 0 and *v, or -ENODEV without a database. */
int persist_committed(int64_t *v);
/* Keys waiting for a flush (users + counter + events), as last published by the persister
   (every persist_p_run, <= 100 ms old); 0 without a database. Any thread: one atomic load. */
uint64_t persist_pending_keys(void);
/* Write the /stats server.persistence object ({"mode":...}) into out. Length (< cap), or 0 if
   it does not fit: PERSIST_STATS_MAX always does. */
#define PERSIST_STATS_MAX 320
size_t persist_stats_json(char *out, size_t cap);
/* Healthy: connected and no unflushed data older than --ready-max-lag-ms (true without a
   database). /readyz, dbUp and ringcount_pg_up follow it. Any thread: one atomic load. */
bool persist_healthy(void);

/* ---- persister thread (uring/pgloop) ---- */
/* Register how to wake worker w (posting a MSG_RING); called before the first persist_p_run. */
void persist_p_attach(void (*wake)(void *ctx, unsigned w), void *ctx);
/* The socket to poll and the poll events wanted (POLLIN/POLLOUT), or -1. *gen changes whenever
   the connection (hence the file behind the descriptor number) changes. */
int persist_p_pollfd(unsigned *events, uint64_t *gen);
/* Do everything due at now_ms: revents is what the socket reported (0 if nothing). Returns the
   milliseconds until it wants to be called again (1..100). */
uint32_t persist_p_run(uint64_t now_ms, unsigned revents);
/* Shutdown: make a final flush of everything pending, giving up at deadline_ms. */
void persist_p_stop(uint64_t deadline_ms);
/* True once the final flush is done, or (SPILL_RESERVE_MS before the deadline) what it could
   not commit was written to the spill file in --spill-dir. */
bool persist_p_finished(void);
/* After persist_p_finished: true if pending data could be neither committed nor spilled (it
   was logged as lost; the process should exit non-zero). Any thread. */
bool persist_lost(void);

#endif
