/*
 * persist_int — what the persist_* files share (private to src/persist*.c; the rest of the
 * program includes persist.h only): the limits with the numbers behind them, the types of the
 * per-worker queues, of a flush and of an exchange's results, and the one persister state
 * `pst`.
 *
 * Files and threads (the thread rules of persist.h apply to what each file implements):
 *   persist.c        set-up and tear-down (main), the values published to every thread
 *                    (committed count, health, /stats JSON), small shared helpers.
 *   persist_queue.c  the worker side (persist_w_*, persist_journal: worker w only) and the
 *                    persister's side of the same queues (draining, replies).
 *   persist_load.c   start-up on main: connect, migrate, end orphaned backends, replay a spill
 *                    file, load the state (persist_load).
 *   persist_sql.c    the prepared statements, by name (read-only table).
 *   persist_flush.c  persister: build a flush, apply a committed one, failures, isolation of a
 *                    failing key (rc_rejected), the spill file at shutdown.
 *   persist_conn.c   persister: the libpq connection state machine, exchanges and results,
 *                    and persist_p_run.
 *   persist_tn.c     persister: the tenant writes and lookups PostgreSQL decides (struct
 *                    persist_tnop), and the change feed that keeps the node's cache of tenant
 *                    counters in step with the other nodes (--sync-ms).
 * Cross-file functions are prefixed pst_ and declared at the end, grouped by the file that
 * defines them.
 */
#ifndef RC_PERSIST_INT_H
#define RC_PERSIST_INT_H

#include <ck_md.h>
#include <ck_ring.h>
#include <ck_sequence.h>
#include <libpq-fe.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "decimal.h"
#include "log.h"
#include "persist.h"
#include "tenants.h"

/* ------------------------------------------------------------------ sizes and limits */

/* Journal ring per worker: 256 KiB holds ~20,000 new ids of ~10 bytes, i.e. 2 s of the 1MRC's
   first-second burst (75,000 users / 4 workers) between two persister runs 10 ms apart. A full
   ring spills on the worker (kept in order, retried every batch), never blocks it. */
#define JRING_BYTES (256u * 1024u)
#define JR_MARKER 0xffffu
/* A keyed durable increment's record: header 0x8000 | (8 + key length), token then key (a
   user id is at most USERS_ID_MAX = 256 bytes, far below the flag bit). */
#define JR_KEYED 0x8000u
/* Keyed durable increments per flush: 512 × ≤ 64-byte keys ≈ 40 KB of text[] parameter and a
   512 × 512 match of results to requests; 51,200 keyed increments/s at the 10 ms default. */
#define KEYS_PER_FLUSH 512u
/* Requests in flight per worker: /stats?scope=cluster and durable /reset are admin-rate. */
#define REQ_RING 256u
/* Replies per worker: one per flush with this worker's increments; 1024 = 10 s of flushes. */
#define REP_RING 1024u
/* New users per flush: 65,536 ids ≈ 2 MB of hex parameter; inserting them takes ~0.3 s on a
   laptop-class PostgreSQL 15, well inside the 1 s budget for a 100,000-key flush. */
#define USERS_PER_FLUSH 65536u
#define BACKOFF_MIN_MS 100u
/* Reconnect back-off: 100 ms doubling to 1 s. A longer cap only delays recovery after a long
   fault (seen: 5 s of it after a 30 s black hole, when the path was back), and one connection
   attempt a second per node costs PostgreSQL nothing. */
#define BACKOFF_MAX_MS 1000u
/* A flush that failed (rolled back) is retried after 20 ms, doubling to 1 s: a transient
   error (a constraint added and dropped, a serialization failure) recovers within ~1 s of its
   end, and a permanent one costs 1 failed flush a second instead of one per --flush-ms (the
   measured 2,400 failures/s with no back-off). */
#define RETRY_MIN_MS 20u
#define RETRY_MAX_MS 1000u
/* lock_timeout: 1/2 of min(--db-timeout-ms, --durable-timeout-ms), so a statement stuck behind
   a lock fails (and is retried on the same connection) well before the exchange deadline drops
   the connection — at 3/4 a loaded 2-core machine was seen to hit the deadline first, turning
   a lock wait into a reconnect — and before the durable request waiting on it times out.
   statement_timeout: 3/4 of --db-timeout-ms, for statements slow for any other reason; a big
   flush that hits it is retried smaller (USERS_MIN_BATCH). */
#define LOCK_TIMEOUT_NUM 1u
#define LOCK_TIMEOUT_DEN 2u
#define STMT_TIMEOUT_NUM 3u
#define STMT_TIMEOUT_DEN 4u
/* A flush that timed out (statement_timeout, or no answer within --db-timeout-ms) is rebuilt
   with half the users, down to 1,024; each commit doubles it back to USERS_PER_FLUSH. Without
   it, the backlog of a 30 s outage (65,536 users a flush, over 500 ms each on a loaded
   machine) was seen failing the same way again and again.
   A new connection starts there too (slow start): after a 30 s black hole the first flush
   held ~80,000 backlogged users, and the durable increments riding on it waited for all of
   them (over 1 s with ASan on a loaded 2-core machine, or a statement timeout and a retry),
   past the 3 s recovery bound of integ/test_pgfaults c; 1,024 commit in ~30 ms, and the
   doubling reaches 65,536 in 7 flushes. */
#define USERS_MIN_BATCH 1024u
/* Backends of dropped connections to terminate from the next connection (a stalled exchange
   leaves its backend running: behind a lock it would commit later, or pile up). */
#define OLD_PIDS 16u
/* While durable requests wait without replies (database down), wake their workers this often
   so --durable-timeout-ms is enforced to ~100 ms instead of the 1 s worker tick. */
#define WAITER_WAKE_MS 100u
#define HEARTBEAT_MS 1000u
#define PRUNE_EVERY 1024u /* ledger rows kept per node: the last 1024 flushes (~10 s) */
#define LOAD_RETRY_MS 10000u
#define ADVISORY_KEY "7526089482530071310" /* "ringcoun" as a bigint: the migration lock */
#define COUNTER_KEY "increment"
/* Idempotency records: a flush carries every record collected (never a cap: the counter deltas
   it carries include their increments, so a record left for a later flush could be lost to a
   kill -9 while its increment was committed, and count again on replay). The buffer starts at
   4,096 records and doubles as needed (at most the store's ring, 131,072 × 104 bytes). */
#define IDEM_PER_FLUSH 4096u
/* Dirty counter indexes taken per flush: 262,144 × 4 bytes = 1 MiB; past it (or on a worker's
   ring overflow) the flush reads every counter. */
#define TN_TAKE_MAX 262144u
/* Every counter is read once in 10 s anyway, whatever the marks say: a safety net that costs
   1M counters × 2 workers of loads every 10 s (≈ 0.1% of what reading them every 10 ms cost). */
#define TN_FULL_SCAN_MS 10000u
/* New counters and changed values per flush (each): 4,096. A flush costs ~60 µs of PostgreSQL
   time per changed counter with 1M counters in the table (its UPDATE, and its history minute's
   upsert; tools/spreadbench.sh): 65,536 took 5-7 s, past the default --db-timeout-ms (such a
   flush timed out, was halved, committed, doubled and timed out again), and a cache miss's
   lookup waits for the flush in flight: 16,384 a flush (1 s) held misses' p99 at 1.2 s. 4,096
   take ~0.25 s, and a commit's fixed cost (~40 ms for 1,000) stays small beside them. Halved
   with the users after a timeout. */
#define TN_ROWS_PER_FLUSH 4096u
/* The final flush gets the shutdown budget less this; then what is pending goes to the spill
   file (write + 2 fsyncs: ~10 ms on this VM's disk for 1M keys' 30 MB, 500 ms is ample). */
#define SPILL_RESERVE_MS 500u
/* Spill payload (persist_flush.c writes, persist_load.c replays). 2: a record ends with its
   flush's history minute (unix ms), so replayed increments land in the minute they were
   counted, not the restart's, which may be days later. 1: without it (still replayed, in the
   replay's minute). */
#define SPILL_PAYLOAD_VERSION 2u
/* Isolation: a flush failing 5 times in a row with the same deterministic error (not a
   timeout, deadlock, serialization or connection class: those pass by themselves) is split:
   first a probe with nothing but its ledger row (if that fails too, no key is to blame: keep
   retrying), then one part at a time; users and keyed increments are halved from the front
   until one fails alone 3 times, and that one goes to rc_rejected. 65,536 users = 16 halvings
   × 20 ms: a bad key is isolated in about a second, and every other key commits. */
#define ISOLATE_AFTER 5u
/* Lookups per query (one uuid[] parameter of up to 512 × 37 bytes): a flood of unknown ids
   costs one query per 512 of them, or per exchange round trip when they come slower. */
#define TN_LOOKUPS_PER_QUERY 512u
/* Tenant writes per exchange, each between its own syncs: 64 × (≤ 2 statements + a sync) fits
   the 256 queue slots; 64 creates cost one round trip instead of 64. */
#define TN_WRITES_PER_EXCHANGE 64u
#define ALONE_FAILS 3u

/* ------------------------------------------------------------------ per-worker queues */

/* SPSC byte ring: u16 length + bytes, 2-byte aligned records, free-running positions. */
struct jring {
    char *buf;
    uint32_t mask;
    uint32_t tail __attribute__((aligned(CK_MD_CACHELINE))); /* worker */
    uint32_t head __attribute__((aligned(CK_MD_CACHELINE))); /* persister */
};

struct bytes {
    char *buf;
    size_t len, cap;
};

/* Pending new users of one owner, persister-side: records [head, take) are in the flush in
   flight, [take, len) wait for the next one. */
struct upend {
    struct bytes b;
    size_t head, take;
    size_t n, ntake;
};

struct pworker {
    /* worker-owned */
    struct jring j;
    struct bytes over;     /* journal records that did not fit the ring, in order */
    bool want_wake;
    uint64_t dur_waiting __attribute__((aligned(CK_MD_CACHELINE))); /* worker writes */
    ck_ring_t req __attribute__((aligned(CK_MD_CACHELINE)));
    ck_ring_buffer_t reqbuf[REQ_RING];
    struct persist_reply *rep;
    uint32_t rep_tail __attribute__((aligned(CK_MD_CACHELINE))); /* persister */
    uint32_t rep_head __attribute__((aligned(CK_MD_CACHELINE))); /* worker */
    /* persister-private */
    uint64_t wm_incr;               /* counter increments of this slot already committed */
    uint64_t wm_ev, wm_rg, wm_ep;   /* event aggregate already committed (and its reset gen) */
    dec_t wm_sum;
    uint64_t markers;               /* journal reset markers consumed */
    struct upend u;
    struct persist_reply *back;     /* replies that did not fit the ring */
    size_t nback, capback;
    bool wake;
    uint64_t last_wake_ms;
} __attribute__((aligned(CK_MD_CACHELINE)));

/* ------------------------------------------------------------------ persister state */

enum qk { Q_SET = 1, Q_PREP, Q_BEGIN, Q_LEDGER, Q_TRUNC, Q_META0, Q_EVENTS, Q_USERS, Q_PRUNE,
          Q_COMMIT, Q_CLUSTER, Q_CHECK, Q_SYNC, Q_TN, Q_ROLLBACK, Q_KILL, Q_KEYGET, Q_TNOP,
          Q_EPOCH, Q_TND, Q_HIST };
enum cst { C_DOWN, C_CONNECTING, C_SETUP, C_READY };
enum xch { X_NONE, X_SETUP, X_FLUSH, X_CHECK, X_ROLLBACK, X_KILL, X_TNOP };
enum fst { F_NONE, F_SENT, F_UNKNOWN };
/* The parts of a flush, probed one by one in isolation (ISOLATE_AFTER). */
enum part { P_PROBE, P_COUNTER, P_EVENTS, P_USERS, P_TN, P_KEYS, P_NPARTS };
struct reject { /* an item that failed alone: written to rc_rejected by the next flush */
    char kind[16];
    char *key;      /* bytea hex literal (\x...) or NULL */
    char *payload;
    char sqlstate[6];
    char error[160];
};

struct uref { /* a pending user, pointing into its owner's buffer, for sorting */
    const char *s;
    uint16_t n;
};

struct preq { /* a drained request */
    unsigned w;
    uint64_t token, target, at_ms;
    bool attached;
};

struct kreq { /* a durable increment with an Idempotency-Key, waiting for its flush */
    unsigned w;
    uint64_t token, at_ms;
    uint8_t klen;
    char key[PERSIST_KEY_MAX];
};

struct kres { /* one row of rc_key_get: a key's value */
    uint8_t klen;
    char key[PERSIST_KEY_MAX];
    int64_t v;
};

struct tnd { /* a tenant counter whose live value differs from what is committed */
    uint32_t idx;
    uint64_t live;
    const uint8_t *id;
    bool has_db;           /* rc_tn_d returned its value in the database after this flush */
    int64_t db;
};

struct flush {
    enum fst st;
    /* tenant counters: snapshot counts, idempotency cursor, changed counters, JSON params */
    bool tn;
    uint32_t tn_nt, tn_nc;
    uint64_t tn_icur[TN_IDEM_STRIPES];
    struct tnd *tnd;
    size_t ntnd, captnd;
    struct bytes j_t, j_c, j_d, j_i; /* new tenants, new counters, deltas, idempotency */
    bool reset, events, counter, prune;
    bool idle;             /* built with nothing to write: the once-a-second heartbeat */
    bool adopt;            /* the reset is another node's, adopted: this node's aggregates
                              restart from zero, nothing is deleted (no rc_trunc/rc_meta0) */
    uint64_t *incr, *ev, *rg, *ep; /* per-slot snapshot */
    dec_t *sum;
    int64_t cdelta;
    uint64_t ev_param;
    dec_t sum_param;
    size_t nusers;
    struct bytes users;    /* the bytea[] literal */
    size_t ncl;            /* cluster requests attached (the first ncl of pst.cl) */
    size_t nk;             /* keyed increments carried (the first nk of pst.kq) */
    bool partial;          /* it leaves data of its snapshot behind (caps, isolation): the
                              lag clock does not move, waits for "the next commit" stay */
    bool tn_partial;       /* of which tenant data: a ?sync=1 answer must not ride on it */
    struct bytes keys;     /* their text[] literal */
    char p_node[16], p_inc[24], p_seq[24], p_cd[24], p_ev[24], p_sum[48], p_prune[24];
    /* history buckets of its increments (the history clock at build time: a retry of the same
       flush lands in the same rows), and whether it creates that day's partition */
    char p_hm[24], p_hd[24], p_hcut[24];
    bool hist_part;
    uint64_t gen;          /* pst.build_gen of its snapshot */
};

struct xres {
    bool failed, dup, commit_ok;
    char sqlstate[6];
    char msg[160];
    bool have_counter, counter_null;
    int64_t counter_after;
    bool have_events;
    int64_t events_total;
    bool have_cluster;
    uint64_t cl_events, cl_users, cl_nodes;
    dec_t cl_sum;
    bool check_found;
    unsigned nalive;       /* rc_kill: old backends still there */
    int alive[OLD_PIDS];
    bool have_final;       /* rc_key_get: the counter after the keyed increments */
    int64_t counter_final;
    size_t nkres;          /* rows of rc_key_get in pst.kres */
    bool have_epoch;       /* rc_epoch: the reset epoch this flush's reset made */
    uint64_t epoch;
};

struct pstate {
    bool enabled;
    unsigned n;
    uint32_t flush_ms, node_id, max_inflight, durable_timeout_ms, db_timeout_ms, ready_lag_ms;
    uint64_t incarnation;       /* this process start's ledger key part (schema v3) */
    const char *conninfo;
    char appname[64];
    uint32_t debug_lose_ms;
    struct pworker *pw;

    /* published to any thread */
    ck_sequence_t pub_seq;
    int64_t committed;
    uint64_t base_lo, base_hi;  /* dec-like int128: committed − Σ wm_incr */
    uint64_t inflight;          /* durable requests waiting (all workers) */
    uint32_t wake_pending;      /* a worker has posted a wake-up not yet seen */
    uint32_t dozing;            /* 1: idle, flushing once a second; a worker's active batch
                                   clears it and wakes the persister (persist_conn's doze()) */
    int db_up;                  /* connected, and no data older than --ready-max-lag-ms waiting */
    uint64_t lag_ms;            /* age of the oldest unflushed data (0: none waiting) */
    uint64_t flushes, flush_errors, pending_keys, persisted_total, last_flush_ms;

    /* persister-private */
    void (*wake)(void *ctx, unsigned w);
    void *wake_ctx;
    PGconn *conn;
    enum cst cst;
    enum xch x;
    int fd;
    uint64_t gen;
    bool out_pending;
    PostgresPollingStatusType cpoll;
    uint64_t cst_since, x_since, next_connect, backoff, next_due, last_waiter_wake;
    uint64_t hold_until;
    uint64_t flush_t0_ns;       /* when the flush in pst.f was first sent (metrics) */
    uint64_t last_success_ms;   /* persister clock of the last committed flush */
    uint64_t now_ms;            /* persister clock of the current persist_p_run */
    uint64_t pending_since;     /* persister clock since which unflushed data waits (0: none) */
    uint64_t flush_snap_ms;     /* when the flush in pst.f was built (its data is older) */
    uint64_t retry_backoff;     /* after a failed flush; 0 after a success */
    uint64_t retry_at;          /* no flush before this (back-off after a failure) */
    bool need_rollback;         /* an exchange failed inside a transaction: ROLLBACK first */
    bool doze;                  /* idle: one build a second (dozing set for the workers) */
    unsigned idle_builds;       /* flush builds in a row that found nothing to write */
    /* isolation of a failing key (ISOLATE_AFTER) */
    unsigned fail_streak;       /* consecutive flushes failed with the same SQL error */
    char fail_state[6];
    bool iso;
    enum part iso_part;         /* the part the flush in isolation carries alone */
    unsigned iso_fails;         /* consecutive failures of iso_part alone */
    uint64_t iso_ident;         /* which item those failures were of (it may change) */
    bool iso_clean;             /* every part of this round committed at its first try */
    size_t ulimit, klimit;      /* users / keyed increments per flush while isolating */
    size_t users_cap;           /* users per flush now (USERS_MIN_BATCH..USERS_PER_FLUSH) */
    struct reject *rej;         /* dead letters waiting for a commit */
    size_t nrej, caprej, rej_sent;
    int old_pids[OLD_PIDS];     /* backends of dropped connections, terminated on reconnect */
    int f_pid;                  /* of them, the one that ran the flush of unknown outcome */
    char conn_app[64];          /* application_name the server reports for our connections */
    unsigned nold;
    uint64_t kill_at;           /* next look at them */
    bool debug_used;
    enum qk q[256];             /* one exchange's statements and syncs: setup prepares
                                   PST_NSTMTS (35), tenant writes take up to 3 each */
    unsigned nq, qi;
    struct xres r;
    struct flush f;
    uint64_t next_seq, reset_applied;
    uint64_t reset_epoch;       /* the cluster's reset epoch this node has applied (rc_meta) */
    int64_t hist_day;           /* the UTC day (unix ms) whose history partition is known made */
    uint32_t history_days;
    const char *clock_file;     /* RINGCOUNT_DEBUG_CLOCK_FILE or NULL */
    uint64_t adopted[16];       /* generations of adopted resets not applied yet (bar_reset_all) */
    unsigned nadopted;
    struct preq *cl, *rs;       /* pending cluster / reset requests */
    struct kreq *kq;            /* keyed durable increments, in arrival order */
    size_t nkq, capkq;
    struct kres *kres;          /* KEYS_PER_FLUSH rows of the last rc_key_get */
    struct uref *urefs;         /* sort scratch of take_users */
    size_t capurefs;
    size_t ncl, capcl, nrs, caprs;
    bool stopping, finished, workers_gone;
    bool lost;                  /* shutdown could neither flush nor spill: data was lost */
    const char *spill_dir;
    uint64_t deadline;
    struct log_rl rl_err;

    /* tenant counters (persister-private after persist_load): what the database holds */
    struct tn_store *tn;
    struct tnk_store *tnk;      /* tenant keys (src/tnkeys), or NULL */
    uint32_t tn_nt, tn_nc;      /* tenants / counters [0, n) are rows */
    uint64_t *tn_wm;            /* per counter idx: its committed value */
    size_t tn_capwm;
    uint64_t tn_icur[TN_IDEM_STRIPES];
    struct tn_idem_out *tn_ibuf;
    size_t tn_capibuf;
    uint64_t tn_ilost;
    /* which counters a flush reads (tn_values_snapshot) */
    uint32_t *tn_take;          /* TN_TAKE_MAX indexes from the workers' dirty rings */
    uint32_t *tn_cand, *tn_pend, *tn_stamp; /* per counter: candidates, pending, dedup stamps */
    size_t tn_ncand, tn_npend, tn_capstamp;
    uint32_t tn_gen;            /* the current stamp */
    uint64_t tn_full_at;        /* last full scan (0: never) */
    uint32_t tn_cap;            /* new counters / changed values per flush now */
    /* tenant writes and lookups decided by PostgreSQL, and the change feed (persist_tn.c) */
    struct tnq { /* a tenant op waiting, and the first flush seq that started after it came */
        struct persist_tnop *op;
        unsigned w;
        uint64_t at_ms, seq;
    } *tq;
    size_t ntq, captq;
    struct tnq *tq_fly;         /* the ones the exchange in flight carries (first ntq_fly) */
    size_t ntq_fly, captq_fly;
    size_t tq_cur;              /* of those, the first whose results are not read yet */
    bool tq_lookups;            /* they are lookups (else writes; none: the change feed) */
    uint64_t build_gen;         /* flush snapshots taken (built, or found empty) */
    uint64_t applied_gen;       /* the latest of them applied whole: an op that needs "a flush
                                   after me" (struct tnq seq: the first snapshot after it came)
                                   waits until applied_gen >= seq */
    uint32_t sync_ms;
    uint64_t feed_at;           /* next change-feed query (persister clock) */
    char feed_xmin[24];         /* the feed reads rows written by transactions >= this xid */
    uint64_t feed_rows, lookups, lookup_queries;
};

/* The one persister state (persist.c defines it); see each field for who writes it. */
extern struct pstate pst;

/* Connection keywords: TCP keepalives and tcp_user_timeout so a dead or black-holed path is
   noticed by the kernel within --db-timeout-ms even between exchanges (keepalive probes from
   half of it, 1 s apart, 3 lost = dead), then the user's conninfo (expanded from "dbname";
   later keywords win in libpq, so what the user wrote overrides these), then our name. */
struct conn_kw {
    const char *kw[9], *vals[9];
    char idle[16], tut[16];
};

/* A prepared statement: its name, its SQL, how many parameters. */
struct pst_stmt {
    const char *name, *sql;
    int nparams;
};

/* ---- persist.c ---- */
/* Grow b to hold more bytes past its length: 0 / -ENOMEM. */
int pst_bytes_reserve(struct bytes *b, size_t more);
/* Publish dbUp / ringcount_pg_up / the lag from pst.connected and pst.pending_since. */
void pst_publish_health(uint64_t now);
/* The connection is gone: unready at once (turning ready again is pst_publish_health's,
   with the lag checked, once the state is C_READY). */
void pst_mark_down(void);
/* Publish the committed count and the base of the live one (committed − Σ watermarks). */
void pst_publish(int64_t committed, __int128 base);
/* The published base (and committed count, if not NULL), never torn. */
__int128 pst_read_base(int64_t *committed);
/* Make pst.tn_wm hold n counters (new ones 0). 0 / -ENOMEM. */
int pst_wm_reserve(size_t n);

/* ---- persist_queue.c (persister side) ---- */
/* Queue a reply for worker w (wakes it when someone waits on it). */
void pst_reply(unsigned w, const struct persist_reply *r);
/* Move replies that did not fit p's ring into it. */
void pst_backlog_move(struct pworker *p);
/* Take the workers' requests (cluster reads, resets); drop those answered 503 long ago. */
void pst_drain_requests(uint64_t now);
/* Take the workers' journals: new users, reset markers, keyed increments. */
void pst_drain_journals(void);

/* ---- persist_sql.c ---- */
extern const struct pst_stmt PST_STMTS[];
extern const size_t PST_NSTMTS;
/* The SQL of the statement called name, or NULL. */
const char *pst_stmt_sql(const char *name);

/* ---- persist_load.c ---- */
/* Run sql; true if it returned want (the result in *out if not NULL). Logs failures. */
bool pst_ok_exec(PGconn *c, const char *sql, ExecStatusType want, PGresult **out);
/* The connection keywords (keepalives, tcp_user_timeout, the user's conninfo, our name). */
void pst_conn_kw_fill(struct conn_kw *k);

/* ---- persist_flush.c ---- */
/* Snapshot the slots and queues into pst.f: true if there is anything to send. */
bool pst_build_flush(uint64_t now);
/* Publish the pending-keys figure and track since when data waits. */
void pst_publish_pending(void);
/* The flush in pst.f committed (directly, or found in the ledger). */
void pst_flush_applied(uint64_t now, bool have_counter, bool counter_null, int64_t after);
/* Answer the cluster reads that rode on the committed flush. */
void pst_cluster_answer(void);
/* The flush in flight timed out (statement_timeout or --db-timeout-ms): the next is smaller. */
void pst_flush_timed_out(void);
/* A connection became ready: the next flushes start at USERS_MIN_BATCH and double per commit.
   It sets users_cap and tn_cap first: every flush but the spill's (which takes everything) is
   built on a ready connection. */
void pst_flush_slow_start(void);
/* The flush in pst.f certainly did not commit: forget it (the data stays pending) and build
   the next one afresh under a new seq. */
void pst_flush_abandon(void);
/* The flush in pst.f failed with an SQL error (rolled back): retry, maybe isolate. */
void pst_flush_failed(uint64_t now);
/* Shutdown deadline: write what is pending to the spill file. */
void pst_spill_pending(uint64_t now);

/* Errors that pass by themselves (connection, rollback, resources, lock, operator, system
   classes): retried, never isolated or dead-lettered. */
bool pst_transient_state(const char *sqlstate);
/* Copy the NUL-terminated message src into dst[cap], cut at a UTF-8 boundary and at the first
   newline (PostgreSQL errors go into log lines and text columns). */
void pst_copy_msg(char *dst, size_t cap, const char *src);

/* ---- persist_tn.c ---- */
/* The minute and day bucket starts of unix ms t, as text, into m, d (24 bytes each); returns
   the day. */
int64_t pst_hist_buckets(int64_t t, char *m, char *d);
/* A worker handed op over (pst_drain_requests). */
void pst_tn_add(unsigned w, struct persist_tnop *op, uint64_t now);
/* Is a tenant exchange wanted now (ops waiting, the feed due)? Sets *flush_first when a flush
   should go out before it (a `set` must not be overtaken by increments counted before it). */
bool pst_tn_due(uint64_t now, bool *flush_first);
/* Send the tenant exchange that is due (X_TNOP). */
void pst_tn_send(uint64_t now);
/* One result of it. */
void pst_tn_result(PGresult *res);
/* Are all reset generations in (from, to] adopted ones (none of this node's POST /reset)? */
bool pst_tn_adopted(uint64_t from, uint64_t to);
/* The resets up to generation g are applied: forget their adoptions. */
void pst_tn_adopted_applied(uint64_t g);
/* A sync inside it arrived (one write of several is done; more follow). */
void pst_tn_sync(uint64_t now);
/* It completed (failed: pst.r says why), or the connection dropped under it (dropped). */
void pst_tn_done(uint64_t now, bool dropped);
/* A flush committed with counter idx at v in the database: settle the cached one to it. */
void pst_tn_settle(uint32_t idx, int64_t v);
/* Between exchanges, no flush outcome pending: free evicted counters past their grace period
   and evict the least recently used clean ones while the counter cache has too little room. */
void pst_tn_evict(void);
/* One result of rc_tn_d (the values the flush's deltas made), kept in pst.f.tnd. */
void pst_tn_flush_values(PGresult *res);
/* Milliseconds until the feed is due (for persist_p_run's sleep). */
uint64_t pst_tn_wait(uint64_t now);
/* Start-up (persist_load): where the feed starts; read before the tenants are loaded. */
int pst_tn_feed_init(PGconn *c);
/* A tenant-key row (kind 'k': id, tenant, verifier hex, scopes, expires ms, created ms,
   deleted) into pst.tnk: stored, or revoked when flagged. 0, -EINVAL (malformed), -ENOSPC. */
int pst_tn_key_row(PGresult *r, int i);

/* ---- persist_conn.c ---- */
/* After a connection failed: doubles *backoff (0 → BACKOFF_MIN_MS, at most BACKOFF_MAX_MS) and
   returns when to connect again, never before now. An attempt (connecting or its setup) that
   started at since retries since + *backoff, so one that waited out a connect timeout longer
   than that retries at once; a ready connection lost at now retries now + *backoff. Pure. */
uint64_t pst_reconnect_at(bool attempt, uint64_t since, uint64_t now, uint64_t *backoff);
/* Exchange helpers for the other persister files: start an exchange, queue a prepared
   statement (its results go to on_result as kind k), and close it (sync + send; false if the
   connection dropped). */
void pst_begin_exchange(enum xch x, uint64_t now);
bool pst_send_prepared(enum qk k, const char *name, int n, const char *const *vals);
bool pst_end_exchange(bool ok, uint64_t now, const char *why);
/* Queue a sync inside an exchange (its end is pst_end_exchange's). */
bool pst_send_sync(void);
/* libpq notice processor: notices go to the debug log. */
void pst_quiet_notice(void *arg, const char *msg);
/* The connection's socket changed (the poll must be re-armed). */
void pst_set_fd(int fd);

#endif
