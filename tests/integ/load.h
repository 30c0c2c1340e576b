/*
 * load — a mixed-load driver for one ringcount port, a /readyz poller, and the database oracle
 * the persistence fault tests check after each fault.
 *
 * The driver runs closed-loop client threads, each on one keep-alive connection (reconnecting
 * after any failure) and each sending one kind of request:
 *   IT_LOAD_DURABLE  POST /api/v1/increment   acknowledged: 200 {"count":N}
 *                                             not: 503 PERSISTENCE_UNAVAILABLE, 429 OVERLOADED
 *   IT_LOAD_FAST     POST /api/v2/increment   acknowledged: 204
 *   IT_LOAD_EVENT    POST /event {"userId":"uN","value":1}   acknowledged: 200
 *   IT_LOAD_TENANT   POST /tenants/{tid}/counters/{cid}/inc  acknowledged: 200 {"counter_id","value"}
 * Every request has a 15 s read timeout; a connect, send or read failure or a timeout is a
 * request attempted and not acknowledged.
 *
 * Owns: its threads, their connections and buffers (struct it_load). The poller likewise.
 * Threads: start/stop, snapshot and the poller's functions may be called from any thread but
 * never concurrently on the same object with stop. it_load_oracle asserts (Criterion): call it
 * from the test's main thread. Nothing else asserts.
 */
#ifndef IT_LOAD_H
#define IT_LOAD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "harness.h"

enum it_load_kind { IT_LOAD_DURABLE, IT_LOAD_FAST, IT_LOAD_EVENT, IT_LOAD_TENANT, IT_LOAD_NKINDS };

/* Event userIds are "u<n>" with n = user_base, user_base + 1, ... modulo IT_LOAD_USERS: each
   event a new user until the pool wraps. */
#define IT_LOAD_USERS 262144
#define IT_LOAD_USER_WORDS (IT_LOAD_USERS / 64)
/* Read timeout of every request. */
#define IT_LOAD_READ_TIMEOUT_MS 15000

struct it_load_count {
    long long attempted;     /* counted just before the request is written, so even a live
                                snapshot is an upper bound of what the server can have taken */
    long long acked;         /* the 2xx of its kind was read */
    long long unavailable;   /* 503 PERSISTENCE_UNAVAILABLE */
    long long overloaded;    /* 429 OVERLOADED */
    long long not_ready;     /* 503 NOT_READY (draining or starting) */
    long long conn_errors;   /* a request lost to a send/read failure, EOF or timeout */
    long long connect_errors;/* connect() failures (nothing attempted) */
    long long other;         /* any other answer */
};

struct it_load_totals {
    struct it_load_count k[IT_LOAD_NKINDS];
    long long max_count;         /* largest "count" of a durable 200 */
    long long max_tenant;        /* largest "value" of a tenant 200 */
    uint64_t users_acked[IT_LOAD_USER_WORDS];     /* userIds of acknowledged events (bit n) */
    uint64_t users_attempted[IT_LOAD_USER_WORDS]; /* userIds of attempted events */
    long long lat_max[IT_LOAD_NKINDS]; /* it_load_lat_max of each kind when taken */
    char first_other[240];       /* the first unexpected answer or failure, for messages */
};

struct it_load_cfg {
    uint16_t port;
    int threads[IT_LOAD_NKINDS]; /* client threads per kind; at most 16 in all */
    const char *tenant_id;       /* IT_LOAD_TENANT: the tenant and counter to increment */
    const char *counter_id;
    long long budget;            /* requests per thread, then it ends; 0 = until stopped */
    int pace_every, pace_us;     /* sleep pace_us after every pace_every requests (0: never) */
    unsigned user_base;          /* first event userId number */
};

struct it_load;

/* The mix of the fault tests: 2 durable, 1 fast, 1 event, 1 tenant client, each pausing 2 ms
   every 10 requests (2 cores: unpaced clients starve PostgreSQL). Fills *cfg. */
void it_load_cfg_default(struct it_load_cfg *cfg, uint16_t port, const char *tenant_id,
                         const char *counter_id);
/* Start the clients. 0 or -errno (nothing left running). */
int it_load_start(const struct it_load_cfg *cfg, struct it_load **out);
/* Live counters (each read atomically; acknowledged counts only grow). */
void it_load_snapshot(struct it_load *L, struct it_load_totals *t);
/* Acknowledged so far of one kind (live). */
long long it_load_acked(struct it_load *L, enum it_load_kind k);
/* Stop the clients (each ends after its request in flight: at most the 15 s read timeout),
   join them, write the final totals to t (may be NULL) and free L. NULL L is a no-op. */
void it_load_stop(struct it_load *L, struct it_load_totals *t);
/* Latency window [from_ms, to_ms] (it_now_ms clock): it_load_lat_max then reports the longest
   request, answered or failed, of kind k whose time in flight overlapped the window. Requests
   still in flight are not counted until they end. Setting a window clears the maximum. */
void it_load_lat_window(struct it_load *L, uint64_t from_ms, uint64_t to_ms);
/* Move the end of the window (the maximum so far is kept). */
void it_load_lat_close(struct it_load *L, uint64_t to_ms);
long long it_load_lat_max(struct it_load *L, enum it_load_kind k);

/* acc += t (counts added, maxima (latency too) kept, user sets united; first_other kept if set). */
void it_load_totals_add(struct it_load_totals *acc, const struct it_load_totals *t);
/* Distinct userIds in a bitmap of struct it_load_totals. */
long long it_load_users(const uint64_t *bits);
/* One line of a totals' counts, for messages. */
void it_load_describe(const struct it_load_totals *t, char *out, size_t cap);

/* ---- the oracle ----
   Database values are read over the unix socket of the cluster in pg_dir (it_pg_sql). base:
   what the database held before the load (zeroed struct for a fresh database). lo: the totals
   whose acknowledgements must be committed; hi: the totals whose attempts bound what may be
   committed (usually the same final totals; for a kill -9, lo has fast kinds from a snapshot
   taken before the loss window). Checked:
     base.counter + lo durable.acked + lo fast.acked <= rc_counters 'increment'
                                        <= base.counter + hi durable+fast attempted,
     lo.max_count <= rc_counters 'increment',
     base.events + lo event.acked <= sum(rc_events.total) <= base.events + hi event.attempted,
     sum(rc_events.sum_u) == 10^6 * sum(total) (every event has value 1, from base 0),
     base.tenant + lo tenant.acked <= rc_tenant_counters.value (of counter_id)
                                   <= base.tenant + hi tenant.attempted, lo.max_tenant <= it,
     distinct acknowledged userIds of lo <= count(rc_users) <= base.users + distinct attempted.
   The lower bounds are polled up to wait_ms (fast paths persist asynchronously), then all are
   asserted; the message carries srv's log tail when srv is not NULL. */
struct it_oracle_base {
    long long counter, events, tenant, users;
};
/* What the database holds now (zeros for missing rows); false if a query failed. */
bool it_oracle_read(const char *pg_dir, const char *counter_id, struct it_oracle_base *now,
                    char *err, size_t errcap);
/* Check without asserting: true if every bound holds (after waiting up to wait_ms for the lower
   bounds); else false with the reason in msg. */
bool it_oracle_check(const char *pg_dir, const char *counter_id, const struct it_oracle_base *base,
                     const struct it_load_totals *lo, const struct it_load_totals *hi, int wait_ms,
                     char *msg, size_t cap);
/* it_oracle_check, asserted (what: names the check in the message). Main thread only. */
void it_load_oracle(const char *pg_dir, const char *counter_id, const struct it_oracle_base *base,
                    const struct it_load_totals *lo, const struct it_load_totals *hi, int wait_ms,
                    struct it_server *srv, const char *what);

/* ---- /readyz poller ----
   One thread, its own connection: GET /readyz and GET /stats every interval_ms (2 s read
   timeout each, reconnecting on failure), counting /readyz answers and keeping the largest
   server.persistence.lastFlushAgeMs seen. */
struct it_ready_poll;
struct it_ready_stats {
    long n200, n503, nother, nerr;  /* /readyz answers; nerr: failures and timeouts */
    long long max_flush_age_ms;     /* largest lastFlushAgeMs (-1: none seen) */
    long long flushes;              /* persistence.flushes of the last /stats (-1: none) */
    uint64_t first503_ms;           /* it_now_ms of the first 503 since the reset (0: none) */
    uint64_t first200_ms;           /* it_now_ms of the first 200 since the reset (0: none) */
};
int it_ready_poll_start(uint16_t port, int interval_ms, struct it_ready_poll **out);
/* Zero the counters (start of a phase). */
void it_ready_poll_reset(struct it_ready_poll *p);
void it_ready_poll_get(struct it_ready_poll *p, struct it_ready_stats *s);
/* Stop and free (NULL: no-op). */
void it_ready_poll_stop(struct it_ready_poll *p);

/* ---- single requests (any thread, never assert) ---- */
/* Send method path (body may be NULL; extra header lines hdrs, each ending CRLF, may be NULL) on
   c, read the answer into r within timeout_ms. 0 or -errno. */
int it_load_call(struct it_conn *c, const char *method, const char *path, const char *hdrs,
                 const char *body, struct it_resp *r, int timeout_ms);
/* Create tenant label and one counter in it with the admin key, on a fresh connection to port.
   0 with the ids in tid/cid (>= 64 bytes each), or -1 with the reason in err. */
int it_load_make_tenant(uint16_t port, const char *admin_key, const char *label, char *tid,
                        char *cid, char *err, size_t errcap);
/* Keep sending POST /api/v1/increment until one answers 200 or within_ms passes (each attempt
   waits at most what is left). ms from the call to the 200, or -1 (the last answer or failure
   in why). Each attempt and the 200 are added to acc's durable counts (and max_count) when acc
   is not NULL: they are increments the oracle must account for. */
long long it_load_durable_ok(uint16_t port, int within_ms, struct it_load_totals *acc, char *why,
                             size_t cap);
/* Poll GET /readyz until it answers 200 or within_ms passes. ms taken, or -1 (last in why). */
long long it_load_ready_ok(uint16_t port, int within_ms, char *why, size_t cap);

#endif
