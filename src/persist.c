/* persist — see persist.h. */
#include "persist.h"

#include <ck_pr.h>
#include <ck_ring.h>
#include <ck_sequence.h>
#include <errno.h>
#include <libpq-fe.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "counters.h"
#include "fmt.h"
#include "log.h"
#include "metrics.h"
#include "spill.h"
#include "tenants.h"
#include "users.h"
#include "uuid.h"

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
#define BACKOFF_MAX_MS 5000u /* SPEC §4: reconnect back-off capped at 5 s */
/* A flush that failed (rolled back) is retried after 20 ms, doubling to 1 s: a transient
   error (a constraint added and dropped, a serialization failure) recovers within ~1 s of its
   end, and a permanent one costs 1 failed flush a second instead of one per --flush-ms (the
   measured 2,400 failures/s with no back-off). */
#define RETRY_MIN_MS 20u
#define RETRY_MAX_MS 1000u
/* statement_timeout / lock_timeout: 1/2 of min(--db-timeout-ms, --durable-timeout-ms), so a
   statement stuck behind a lock fails (and is retried on the same connection) well before the
   exchange deadline drops the connection — at 3/4 a loaded 2-core machine was seen to hit the
   deadline first, turning a lock wait into a reconnect — and before the durable request
   waiting on it times out. */
#define STMT_TIMEOUT_NUM 1u
#define STMT_TIMEOUT_DEN 2u
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
/* The final flush gets the shutdown budget less this; then what is pending goes to the spill
   file (write + 2 fsyncs: ~10 ms on this VM's disk for 1M keys' 30 MB, 500 ms is ample). */
#define SPILL_RESERVE_MS 500u
#define SPILL_PAYLOAD_VERSION 1u
/* Isolation: a flush failing 5 times in a row with the same deterministic error (not a
   timeout, deadlock, serialization or connection class: those pass by themselves) is split:
   first a probe with nothing but its ledger row (if that fails too, no key is to blame: keep
   retrying), then one part at a time; users and keyed increments are halved from the front
   until one fails alone 3 times, and that one goes to rc_rejected. 65,536 users = 16 halvings
   × 20 ms: a bad key is isolated in about a second, and every other key commits. */
#define ISOLATE_AFTER 5u
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
          Q_COMMIT, Q_CLUSTER, Q_CHECK, Q_SYNC, Q_TN, Q_ROLLBACK, Q_KILL, Q_KEYGET };
enum cst { C_DOWN, C_CONNECTING, C_SETUP, C_READY };
enum xch { X_NONE, X_SETUP, X_FLUSH, X_CHECK, X_ROLLBACK, X_KILL };
enum fst { F_NONE, F_SENT, F_UNKNOWN };
/* The parts of a flush, probed one by one in isolation (ISOLATE_AFTER). */
enum part { P_PROBE, P_COUNTER, P_EVENTS, P_USERS, P_TN, P_KEYS, P_NPARTS };
static const char *const PART_NAME[P_NPARTS] = {"ledger", "counter", "events", "user",
                                                "tenants", "keyed_increment"};

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
    uint64_t *incr, *ev, *rg, *ep; /* per-slot snapshot */
    dec_t *sum;
    int64_t cdelta;
    uint64_t ev_param;
    dec_t sum_param;
    size_t nusers;
    struct bytes users;    /* the bytea[] literal */
    size_t ncl;            /* cluster requests attached (the first ncl of S.cl) */
    size_t nk;             /* keyed increments carried (the first nk of S.kq) */
    struct bytes keys;     /* their text[] literal */
    char p_node[16], p_inc[24], p_seq[24], p_cd[24], p_ev[24], p_sum[48], p_prune[24];
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
    size_t nkres;          /* rows of rc_key_get in S.kres */
};

static struct {
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
    uint64_t flush_t0_ns;       /* when the flush in S.f was first sent (metrics) */
    uint64_t last_success_ms;   /* persister clock of the last committed flush */
    uint64_t now_ms;            /* persister clock of the current persist_p_run */
    uint64_t pending_since;     /* persister clock since which unflushed data waits (0: none) */
    uint64_t flush_snap_ms;     /* when the flush in S.f was built (its data is older) */
    uint64_t retry_backoff;     /* after a failed flush; 0 after a success */
    uint64_t retry_at;          /* no flush before this (back-off after a failure) */
    bool need_rollback;         /* an exchange failed inside a transaction: ROLLBACK first */
    /* isolation of a failing key (ISOLATE_AFTER) */
    unsigned fail_streak;       /* consecutive flushes failed with the same SQL error */
    char fail_state[6];
    bool iso;
    enum part iso_part;         /* the part the flush in isolation carries alone */
    unsigned iso_fails;         /* consecutive failures of iso_part alone */
    bool iso_clean;             /* every part of this round committed at its first try */
    size_t ulimit, klimit;      /* users / keyed increments per flush while isolating */
    struct reject *rej;         /* dead letters waiting for a commit */
    size_t nrej, caprej, rej_sent;
    bool connected;             /* C_READY (published through set_up with the lag) */
    int old_pids[OLD_PIDS];     /* backends of dropped connections, terminated on reconnect */
    unsigned nold;
    uint64_t kill_at;           /* next look at them */
    bool debug_used;
    enum qk q[24];
    unsigned nq, qi;
    struct xres r;
    struct flush f;
    uint64_t next_seq, reset_applied;
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
    uint32_t tn_nt, tn_nc;      /* tenants / counters [0, n) are rows */
    uint64_t *tn_wm;            /* per counter idx: its committed value */
    size_t tn_capwm;
    uint64_t tn_icur[TN_IDEM_STRIPES];
    struct tn_idem_out *tn_ibuf;
    size_t tn_capibuf;
    uint64_t tn_ilost;
} S;

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* ------------------------------------------------------------------ small helpers */

static int bytes_reserve(struct bytes *b, size_t more)
{
    if (b->len + more <= b->cap)
        return 0;
    size_t nc = b->cap ? b->cap : 4096;
    while (nc < b->len + more)
        nc *= 2;
    char *nb = realloc(b->buf, nc);
    if (!nb)
        return -ENOMEM;
    b->buf = nb;
    b->cap = nc;
    return 0;
}

/* Signed 128-bit integer in decimal (no NUL); out >= 41 bytes. Returns the length. */
static size_t fmt_i128(char *out, __int128 v)
{
    char tmp[48];
    size_t k = 0;
    unsigned __int128 u = v < 0 ? -(unsigned __int128)v : (unsigned __int128)v;
    do {
        tmp[k++] = (char)('0' + (int)(u % 10));
        u /= 10;
    } while (u);
    size_t o = 0;
    if (v < 0)
        out[o++] = '-';
    while (k)
        out[o++] = tmp[--k];
    return o;
}

/* Parse an optionally signed decimal integer (PostgreSQL numeric/bigint text). 0 / -EINVAL. */
static int parse_i128(const char *s, __int128 *out)
{
    bool neg = *s == '-';
    if (neg || *s == '+')
        s++;
    if (!*s)
        return -EINVAL;
    unsigned __int128 u = 0;
    for (; *s; s++) {
        if (*s < '0' || *s > '9')
            return -EINVAL;
        u = u * 10 + (unsigned)(*s - '0');
    }
    *out = neg ? -(__int128)u : (__int128)u;
    return 0;
}

static uint64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* dbUp / ringcount_pg_up / /readyz: connected and nothing older than --ready-max-lag-ms
   waiting (SPEC §4: a node that acknowledges writes it cannot persist is not ready). */
static void publish_health(uint64_t now)
{
    uint64_t lag = S.pending_since && now > S.pending_since ? now - S.pending_since : 0;
    bool up = S.connected && lag <= S.ready_lag_ms;
    ck_pr_store_64(&S.lag_ms, lag);
    if (ck_pr_load_int(&S.db_up) != (int)up) {
        ck_pr_store_int(&S.db_up, up);
        metrics_set_pg_up(up);
    }
    metrics_set_persist_lag_ms(lag);
}

/* Connected or not; turning healthy again waits for publish_health (lag checked). */
static void set_up(bool up)
{
    S.connected = up;
    if (!up && ck_pr_load_int(&S.db_up)) {
        ck_pr_store_int(&S.db_up, 0);
        metrics_set_pg_up(false);
    }
}

static void publish(int64_t committed, __int128 base)
{
    ck_sequence_write_begin(&S.pub_seq);
    ck_pr_store_64((uint64_t *)&S.committed, (uint64_t)committed);
    ck_pr_store_64(&S.base_lo, (uint64_t)base);
    ck_pr_store_64(&S.base_hi, (uint64_t)((unsigned __int128)base >> 64));
    ck_sequence_write_end(&S.pub_seq);
}

static __int128 read_base(int64_t *committed)
{
    uint64_t lo, hi, c;
    unsigned v;
    do {
        v = ck_sequence_read_begin(&S.pub_seq);
        c = ck_pr_load_64((uint64_t *)&S.committed);
        lo = ck_pr_load_64(&S.base_lo);
        hi = ck_pr_load_64(&S.base_hi);
    } while (ck_sequence_read_retry(&S.pub_seq, v));
    if (committed)
        *committed = (int64_t)c;
    return (__int128)(((unsigned __int128)hi << 64) | lo);
}

/* ------------------------------------------------------------------ init / fini */

int persist_init(const struct config *cfg, unsigned nworkers)
{
    memset(&S, 0, sizeof(S));
    ck_sequence_init(&S.pub_seq);
    S.enabled = cfg->db[0] != '\0';
    S.n = nworkers;
    S.flush_ms = cfg->flush_ms ? cfg->flush_ms : 10;
    S.node_id = cfg->node_id;
    S.max_inflight = cfg->max_inflight;
    S.durable_timeout_ms = cfg->durable_timeout_ms;
    S.db_timeout_ms = cfg->db_timeout_ms ? cfg->db_timeout_ms : 5000;
    S.ready_lag_ms = cfg->ready_max_lag_ms ? cfg->ready_max_lag_ms : 5000;
    S.conninfo = cfg->db;
    S.spill_dir = cfg->spill_dir;
    S.fd = -1;
    S.next_seq = 1;
    snprintf(S.appname, sizeof(S.appname), "ringcount-node-%u", cfg->node_id);
    const char *dbg = getenv("RINGCOUNT_DEBUG_LOSE_COMMIT_MS");
    if (dbg && *dbg)
        S.debug_lose_ms = (uint32_t)strtoul(dbg, NULL, 10);
    S.pw = aligned_alloc(CK_MD_CACHELINE, sizeof(*S.pw) * nworkers);
    if (!S.pw)
        return -ENOMEM;
    memset(S.pw, 0, sizeof(*S.pw) * nworkers);
    size_t ns = nworkers;
    S.f.incr = calloc(ns, sizeof(uint64_t));
    S.f.ev = calloc(ns, sizeof(uint64_t));
    S.f.rg = calloc(ns, sizeof(uint64_t));
    S.f.ep = calloc(ns, sizeof(uint64_t));
    S.f.sum = calloc(ns, sizeof(dec_t));
    if (!S.f.incr || !S.f.ev || !S.f.rg || !S.f.ep || !S.f.sum)
        goto fail;
    if (S.enabled && !(S.kres = calloc(KEYS_PER_FLUSH, sizeof(*S.kres))))
        goto fail;
    for (unsigned i = 0; i < nworkers && S.enabled; i++) {
        struct pworker *p = &S.pw[i];
        p->j.buf = malloc(JRING_BYTES);
        p->j.mask = JRING_BYTES - 1;
        p->rep = calloc(REP_RING, sizeof(struct persist_reply));
        if (!p->j.buf || !p->rep)
            goto fail;
        ck_ring_init(&p->req, REQ_RING);
    }
    return 0;
fail:
    persist_fini();
    return -ENOMEM;
}

void persist_fini(void)
{
    if (S.conn)
        PQfinish(S.conn);
    for (unsigned i = 0; S.pw && i < S.n; i++) {
        struct pworker *p = &S.pw[i];
        free(p->j.buf);
        free(p->over.buf);
        free(p->rep);
        free(p->u.b.buf);
        free(p->back);
    }
    free(S.pw);
    free(S.f.incr);
    free(S.f.ev);
    free(S.f.rg);
    free(S.f.ep);
    free(S.f.sum);
    free(S.f.users.buf);
    free(S.cl);
    free(S.rs);
    free(S.kq);
    free(S.kres);
    for (size_t i = 0; i < S.nrej; i++) {
        free(S.rej[i].key);
        free(S.rej[i].payload);
    }
    free(S.rej);
    free(S.f.keys.buf);
    free(S.urefs);
    free(S.f.tnd);
    free(S.f.j_t.buf);
    free(S.f.j_c.buf);
    free(S.f.j_d.buf);
    free(S.f.j_i.buf);
    free(S.tn_wm);
    free(S.tn_ibuf);
    memset(&S, 0, sizeof(S));
}

void persist_set_tenants(struct tn_store *st)
{
    S.tn = st;
}

bool persist_enabled(void)
{
    return S.enabled;
}

uint32_t persist_durable_timeout_ms(void)
{
    return S.durable_timeout_ms;
}

void persist_workers_stopped(void)
{
    ck_pr_fence_memory();
    ck_pr_store_8((uint8_t *)&S.workers_gone, 1);
}

/* ------------------------------------------------------------------ start-up: schema + load */

static const char *const MIGRATIONS[] = {
    /* v1 */
    "CREATE TABLE rc_counters (k text PRIMARY KEY, v bigint NOT NULL);"
    /* one row per node: its event count and exact sum in micro-units (value * 10^6) */
    "CREATE TABLE rc_events (node_id integer PRIMARY KEY, total bigint NOT NULL,"
    "  sum_u numeric NOT NULL);"
    /* bytea, not text: a userId may hold U+0000 (\\u0000 in JSON), which text cannot store;
       bytea also orders by bytes, like the flush's sort */
    "CREATE TABLE rc_users (id bytea PRIMARY KEY);"
    "CREATE TABLE rc_meta (k text PRIMARY KEY, v bigint NOT NULL);"
    "INSERT INTO rc_meta VALUES ('users', 0);"
    "CREATE TABLE rc_flush_ledger (node_id integer NOT NULL, flush_seq bigint NOT NULL,"
    "  counter_after bigint, committed_at timestamptz NOT NULL DEFAULT now(),"
    "  PRIMARY KEY (node_id, flush_seq));",
    /* v2: the multi-tenant counters (SPEC §2.3) */
    "CREATE TABLE rc_tenants (id uuid PRIMARY KEY, label text UNIQUE NOT NULL,"
    "  created_at timestamptz NOT NULL);"
    "CREATE TABLE rc_tenant_counters (id uuid PRIMARY KEY,"
    "  tenant_id uuid NOT NULL REFERENCES rc_tenants, label text, value bigint NOT NULL,"
    "  max_delta bigint NOT NULL, created_at timestamptz NOT NULL);"
    "CREATE TABLE rc_idempotency (tenant_id uuid NOT NULL, key text NOT NULL,"
    "  counter_id uuid NOT NULL, delta bigint NOT NULL, value bigint NOT NULL,"
    "  created_at timestamptz NOT NULL, PRIMARY KEY (tenant_id, key));"
    /* the 24 h expiry DELETE and the start-up load filter on it */
    "CREATE INDEX rc_idempotency_created ON rc_idempotency (created_at);",
    /* v3 (SPEC §4, persistence faults): every process start takes a new incarnation, part of
       the ledger key, so a flush of a killed process still running in an orphaned backend can
       never collide with (and be mistaken for) a flush of its successor. rc_incr_keys holds the
       Idempotency-Keys of durable /api/v1/increment, written in the transaction that counts
       them. rc_rejected is the dead-letter table of keys that failed alone. */
    "CREATE SEQUENCE rc_incarnation;"
    "ALTER TABLE rc_flush_ledger ADD COLUMN incarnation bigint NOT NULL DEFAULT 0;"
    "ALTER TABLE rc_flush_ledger DROP CONSTRAINT rc_flush_ledger_pkey,"
    "  ADD PRIMARY KEY (node_id, incarnation, flush_seq);"
    "CREATE TABLE rc_incr_keys (k text PRIMARY KEY, v bigint, node_id integer NOT NULL,"
    "  ord integer NOT NULL, created_at timestamptz NOT NULL DEFAULT now());"
    "CREATE INDEX rc_incr_keys_created ON rc_incr_keys (created_at);"
    "CREATE TABLE rc_rejected (id bigserial PRIMARY KEY, node_id integer NOT NULL,"
    "  kind text NOT NULL, key bytea, payload text NOT NULL, sqlstate text NOT NULL,"
    "  error text NOT NULL, rejected_at timestamptz NOT NULL DEFAULT now());",
};
#define NMIGRATIONS (sizeof(MIGRATIONS) / sizeof(MIGRATIONS[0]))

/* Run sql; true if it returned want. Logs the error otherwise. */
static bool ok_exec(PGconn *c, const char *sql, ExecStatusType want, PGresult **out)
{
    PGresult *r = PQexec(c, sql);
    if (PQresultStatus(r) != want) {
        log_error("PostgreSQL start-up statement failed", LOG_S("error", PQresultErrorMessage(r)),
                  LOG_S("sql", sql));
        PQclear(r);
        return false;
    }
    if (out)
        *out = r;
    else
        PQclear(r);
    return true;
}

static void quiet_notice(void *arg, const char *msg);

/* Connection keywords: TCP keepalives and tcp_user_timeout so a dead or black-holed path is
   noticed by the kernel within --db-timeout-ms even between exchanges (keepalive probes from
   half of it, 1 s apart, 3 lost = dead), then the user's conninfo (expanded from "dbname";
   later keywords win in libpq, so what the user wrote overrides these), then our name. */
struct conn_kw {
    const char *kw[9], *vals[9];
    char idle[16], tut[16];
};

static void conn_kw_fill(struct conn_kw *k)
{
    uint32_t idle = S.db_timeout_ms / 2000u;
    snprintf(k->idle, sizeof(k->idle), "%u", idle ? idle : 1u);
    snprintf(k->tut, sizeof(k->tut), "%u", S.db_timeout_ms);
    const char *kw[] = {"keepalives", "keepalives_idle", "keepalives_interval", "keepalives_count",
                        "tcp_user_timeout", "dbname", "fallback_application_name", NULL};
    const char *vals[] = {"1", k->idle, "1", "3", k->tut, S.conninfo, S.appname, NULL};
    memcpy(k->kw, kw, sizeof(kw));
    memcpy(k->vals, vals, sizeof(vals));
}

static PGconn *connect_blocking(void)
{
    struct conn_kw k;
    conn_kw_fill(&k);
    const char *const *kw = k.kw, *const *vals = k.vals;
    uint64_t until = mono_ms() + LOAD_RETRY_MS;
    for (;;) {
        PGconn *c = PQconnectdbParams(kw, vals, 1);
        if (c && PQstatus(c) == CONNECTION_OK) {
            PQsetNoticeProcessor(c, quiet_notice, NULL);
            return c;
        }
        char err[256];
        snprintf(err, sizeof(err), "%s", c ? PQerrorMessage(c) : "out of memory");
        err[strcspn(err, "\n")] = 0;
        PQfinish(c);
        if (mono_ms() >= until) {
            log_error("cannot connect to PostgreSQL at start-up", LOG_S("error", err),
                      LOG_S("fix", "check --db / DATABASE_URL and that the server is up"));
            return NULL;
        }
        log_warn("PostgreSQL not reachable yet, retrying", LOG_S("error", err));
        usleep(250 * 1000);
    }
}

static int migrate(PGconn *c)
{
    PGresult *r;
    if (!ok_exec(c, "SELECT pg_advisory_lock(" ADVISORY_KEY ")", PGRES_TUPLES_OK, NULL))
        return -EIO;
    int rc = -EIO;
    if (!ok_exec(c, "CREATE TABLE IF NOT EXISTS rc_schema (version integer NOT NULL)",
                 PGRES_COMMAND_OK, NULL) ||
        !ok_exec(c, "SELECT coalesce(max(version), 0) FROM rc_schema", PGRES_TUPLES_OK, &r))
        goto out;
    long have = strtol(PQgetvalue(r, 0, 0), NULL, 10);
    PQclear(r);
    if (have > (long)NMIGRATIONS) {
        log_error("the database schema is newer than this binary", LOG_I("schema", have),
                  LOG_U("supported", NMIGRATIONS), LOG_S("fix", "run a newer ringcount"));
        goto out;
    }
    for (long v = have + 1; v <= (long)NMIGRATIONS; v++) {
        char ins[96];
        snprintf(ins, sizeof(ins), "INSERT INTO rc_schema VALUES (%ld)", v);
        if (!ok_exec(c, "BEGIN", PGRES_COMMAND_OK, NULL))
            goto out;
        if (!ok_exec(c, MIGRATIONS[v - 1], PGRES_COMMAND_OK, NULL) ||
            !ok_exec(c, ins, PGRES_COMMAND_OK, NULL) ||
            !ok_exec(c, "COMMIT", PGRES_COMMAND_OK, NULL)) {
            PQclear(PQexec(c, "ROLLBACK"));
            goto out;
        }
        log_info("database schema migrated", LOG_I("version", v));
    }
    rc = 0;
out:
    PQclear(PQexec(c, "SELECT pg_advisory_unlock(" ADVISORY_KEY ")"));
    return rc;
}

static int load(PGconn *c, uint64_t *nusers, uint64_t *noverflow)
{
    char node[16];
    snprintf(node, sizeof(node), "%u", S.node_id);
    const char *pv[1] = {node};
    PGresult *r;

    if (!ok_exec(c, "SELECT v FROM rc_counters WHERE k = '" COUNTER_KEY "'", PGRES_TUPLES_OK, &r))
        return -EIO;
    int64_t counter = PQntuples(r) ? strtoll(PQgetvalue(r, 0, 0), NULL, 10) : 0;
    PQclear(r);

    r = PQexecParams(c, "SELECT total, sum_u::text FROM rc_events WHERE node_id = $1", 1, NULL,
                     pv, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK)
        goto bad;
    uint64_t total = 0;
    __int128 sum = 0;
    if (PQntuples(r)) {
        total = strtoull(PQgetvalue(r, 0, 0), NULL, 10);
        if (parse_i128(PQgetvalue(r, 0, 1), &sum) < 0)
            goto bad;
    }
    PQclear(r);

    /* A new incarnation: flush_seq restarts at 1 under a ledger key no earlier process used
       (its last flush may still commit from an orphaned backend after this load). */
    if (!ok_exec(c, "SELECT nextval('rc_incarnation')", PGRES_TUPLES_OK, &r))
        return -EIO;
    S.incarnation = strtoull(PQgetvalue(r, 0, 0), NULL, 10);
    PQclear(r);
    S.next_seq = 1;

    /* The user set, 100,000 rows per round trip through a binary cursor (raw bytea bytes). */
    if (!ok_exec(c, "BEGIN", PGRES_COMMAND_OK, NULL) ||
        !ok_exec(c, "DECLARE rc_u BINARY NO SCROLL CURSOR FOR SELECT id FROM rc_users",
                 PGRES_COMMAND_OK, NULL))
        return -EIO;
    for (;;) {
        if (!ok_exec(c, "FETCH FORWARD 100000 FROM rc_u", PGRES_TUPLES_OK, &r))
            return -EIO;
        int nt = PQntuples(r);
        for (int i = 0; i < nt; i++) {
            int rc = users_preload(PQgetvalue(r, i, 0), (size_t)PQgetlength(r, i, 0));
            if (rc == 1)
                (*nusers)++;
            else if (rc == -ENOSPC)
                (*noverflow)++;
        }
        PQclear(r);
        if (nt == 0)
            break;
    }
    if (!ok_exec(c, "COMMIT", PGRES_COMMAND_OK, NULL))
        return -EIO;

    /* This node's totals continue in slot 0; the watermark says they are already committed. */
    struct cnt_slot *s0 = cnt_slot(0);
    s0->events = total;
    s0->sum_lo = (uint64_t)sum;
    s0->sum_hi = (uint64_t)((unsigned __int128)sum >> 64);
    S.pw[0].wm_ev = total;
    S.pw[0].wm_sum = sum;
    S.persisted_total = total;
    publish(counter, counter);
    log_info("loaded from PostgreSQL", LOG_I("counter", counter), LOG_U("events", total),
             LOG_U("incarnation", S.incarnation));
    return 0;
bad:
    log_error("PostgreSQL load failed", LOG_S("error", PQresultErrorMessage(r)));
    PQclear(r);
    return -EIO;
}

/* Make S.tn_wm hold n counters (new ones 0: a new row is inserted with value 0). */
static int wm_reserve(size_t n)
{
    if (n <= S.tn_capwm)
        return 0;
    size_t nc = S.tn_capwm ? S.tn_capwm : 1024;
    while (nc < n)
        nc *= 2;
    uint64_t *nw = realloc(S.tn_wm, nc * sizeof(*nw));
    if (!nw)
        return -ENOMEM;
    memset(nw + S.tn_capwm, 0, (nc - S.tn_capwm) * sizeof(*nw));
    S.tn_wm = nw;
    S.tn_capwm = nc;
    return 0;
}

static bool parse_id(PGresult *r, int row, int col, uint8_t id[16])
{
    return !PQgetisnull(r, row, col) &&
           uuid_parse(PQgetvalue(r, row, col), (size_t)PQgetlength(r, row, col), id) == 0;
}

/* Tenants, their counters and the idempotency records younger than 24 h (SPEC §2.3: a replay
   after a restart still returns the first result). Creation order is kept (ORDER BY
   created_at, id), so list pages read the same after a restart. */
static int load_tenants(PGconn *c)
{
    PGresult *r = NULL;
    uint32_t nt = 0, nc = 0, ni = 0, skipped = 0;
    if (!ok_exec(c, "SELECT id::text, label, (extract(epoch FROM created_at) * 1000)::bigint"
                    " FROM rc_tenants ORDER BY created_at, id", PGRES_TUPLES_OK, &r))
        return -EIO;
    for (int i = 0; i < PQntuples(r); i++) {
        uint8_t id[16];
        const struct tn_tenant *t;
        if (!parse_id(r, i, 0, id) ||
            tn_tenant_restore(S.tn, id, PQgetvalue(r, i, 1), (size_t)PQgetlength(r, i, 1),
                              strtoll(PQgetvalue(r, i, 2), NULL, 10), &t) < 0)
            skipped++;
        else
            nt++;
    }
    PQclear(r);
    if (!ok_exec(c, "SELECT id::text, tenant_id::text, label, value, max_delta,"
                    " (extract(epoch FROM created_at) * 1000)::bigint FROM rc_tenant_counters"
                    " ORDER BY created_at, id", PGRES_TUPLES_OK, &r))
        return -EIO;
    for (int i = 0; i < PQntuples(r); i++) {
        uint8_t id[16], tid[16];
        const struct tn_tenant *t;
        const struct tn_counter *k;
        bool nolabel = PQgetisnull(r, i, 2);
        if (!parse_id(r, i, 0, id) || !parse_id(r, i, 1, tid) || !(t = tn_tenant_find(S.tn, tid)) ||
            tn_counter_restore(S.tn, t, id, nolabel ? NULL : PQgetvalue(r, i, 2),
                               nolabel ? 0 : (size_t)PQgetlength(r, i, 2),
                               strtoll(PQgetvalue(r, i, 3), NULL, 10),
                               strtoll(PQgetvalue(r, i, 4), NULL, 10),
                               strtoll(PQgetvalue(r, i, 5), NULL, 10), &k) < 0) {
            skipped++;
            continue;
        }
        if (wm_reserve(k->idx + 1u) < 0) {
            PQclear(r);
            return -ENOMEM;
        }
        S.tn_wm[k->idx] = (uint64_t)tn_counter_value(S.tn, k);
        nc++;
    }
    PQclear(r);
    if (!ok_exec(c, "SELECT tenant_id::text, key, counter_id::text, delta, value,"
                    " (extract(epoch FROM created_at) * 1000)::bigint FROM rc_idempotency"
                    " WHERE created_at > now() - interval '24 hours' ORDER BY created_at",
                 PGRES_TUPLES_OK, &r))
        return -EIO;
    for (int i = 0; i < PQntuples(r); i++) {
        uint8_t tid[16], cid[16];
        const struct tn_tenant *t;
        const struct tn_counter *k;
        if (!parse_id(r, i, 0, tid) || !parse_id(r, i, 2, cid) || !(t = tn_tenant_find(S.tn, tid)) ||
            !(k = tn_counter_find(S.tn, t, cid)) ||
            tn_idem_restore(S.tn, k, PQgetvalue(r, i, 1), (size_t)PQgetlength(r, i, 1),
                            strtoll(PQgetvalue(r, i, 3), NULL, 10),
                            strtoll(PQgetvalue(r, i, 4), NULL, 10),
                            strtoll(PQgetvalue(r, i, 5), NULL, 10)) < 0)
            skipped++;
        else
            ni++;
    }
    PQclear(r);
    uint32_t idem;
    tn_sizes(S.tn, &S.tn_nt, &S.tn_nc, &idem);
    tn_idem_cursor(S.tn, S.tn_icur); /* what was loaded is in the database already */
    if (skipped)
        log_warn("tenant rows not loaded (malformed, orphaned or over the store's bounds)",
                 LOG_U("rows", skipped));
    log_info("tenant counters loaded from PostgreSQL", LOG_U("tenants", nt), LOG_U("counters", nc),
             LOG_U("idempotency_records", ni));
    return 0;
}

/* Backends left by an earlier process of this node (killed while a flush was open, or a
   stalled exchange it dropped) would commit after this load, so the values loaded would miss
   them: terminate them and wait (up to 5 s each) until they are gone before reading anything.
   Matched by application_name, which is this node's (ringcount-node-N) unless --db sets one,
   in this database only (other deployments sharing the cluster have their own node 1). */
static int end_orphans(PGconn *c)
{
    const char *pv[1] = {S.appname};
    PGresult *r = PQexecParams(c,
                               "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid, 5000))"
                               " FROM pg_stat_activity WHERE application_name = $1"
                               " AND datname = current_database() AND pid <> pg_backend_pid()",
                               1, NULL, pv, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        /* not fatal: without the privilege (another role's backends) the incarnation in the
           ledger key still keeps a late commit from being mistaken for ours */
        log_warn("could not end earlier backends of this node", LOG_S("error",
                 PQresultErrorMessage(r)));
    } else if (strcmp(PQgetvalue(r, 0, 0), "0") != 0) {
        log_warn("ended backends left by an earlier process of this node",
                 LOG_S("backends", PQgetvalue(r, 0, 0)), LOG_S("application_name", S.appname));
    }
    PQclear(r);
    return 0;
}

static int replay_spill(PGconn *c);

int persist_load(void)
{
    if (!S.enabled)
        return 0;
    uint64_t t0 = mono_ms();
    PGconn *c = connect_blocking();
    if (!c)
        return -EIO;
    uint64_t nusers = 0, nover = 0;
    int rc = migrate(c);
    if (rc == 0)
        rc = end_orphans(c);
    if (rc == 0)
        rc = replay_spill(c);
    if (rc == 0)
        rc = load(c, &nusers, &nover);
    if (rc == 0 && S.tn)
        rc = load_tenants(c);
    PQfinish(c);
    if (rc == 0) {
        log_info("start-up load done", LOG_U("users", nusers), LOG_U("users_overflow", nover),
                 LOG_U("load_ms", mono_ms() - t0));
        S.last_flush_ms = 0;
    }
    return rc;
}

/* ------------------------------------------------------------------ worker side */

int persist_w_incr(unsigned w, uint64_t *ticket)
{
    /* Exact for one client; concurrent increments on different workers at the very edge of
       INT64_MAX may each pass this check (per-CPU counters have no shared point to refuse at). */
    if (persist_live() == INT64_MAX)
        return -EOVERFLOW;
    struct cnt_slot *s = cnt_slot(w);
    uint64_t t = s->incr + 1;
    ck_pr_store_64(&s->incr, t);
    *ticket = t;
    return 0;
}

int64_t persist_live(void)
{
    __int128 v = read_base(NULL);
    for (unsigned i = 0; i < cnt_count(); i++)
        v += ck_pr_load_64(&cnt_slot(i)->incr);
    if (v > INT64_MAX)
        return INT64_MAX;
    if (v < INT64_MIN)
        return INT64_MIN;
    return (int64_t)v;
}

int persist_committed(int64_t *v)
{
    if (!S.enabled)
        return -ENODEV;
    read_base(v);
    return 0;
}

int persist_w_durable_enter(unsigned w)
{
    if (!S.enabled)
        return -ENODEV;
    if (ck_pr_faa_64(&S.inflight, 1) >= S.max_inflight) {
        ck_pr_dec_64(&S.inflight);
        return -EBUSY;
    }
    struct pworker *p = &S.pw[w];
    ck_pr_store_64(&p->dur_waiting, p->dur_waiting + 1);
    /* before the ticket is taken: a flush that sees the ticket also sees the waiter, and wakes
       this worker with the reply */
    ck_pr_fence_store();
    p->want_wake = true;
    metrics_durable_inflight_add(1);
    return 0;
}

void persist_w_durable_leave(unsigned w)
{
    struct pworker *p = &S.pw[w];
    ck_pr_store_64(&p->dur_waiting, p->dur_waiting - 1);
    ck_pr_dec_64(&S.inflight);
    metrics_durable_inflight_add(-1);
}

int persist_w_request(unsigned w, enum persist_req kind, uint64_t token)
{
    if (!S.enabled)
        return -ENODEV;
    struct pworker *p = &S.pw[w];
    uintptr_t e = ((uintptr_t)kind << 56) | (token & ((1ull << 56) - 1));
    if (!ck_ring_enqueue_spsc(&p->req, p->reqbuf, (void *)e))
        return -EAGAIN;
    p->want_wake = true;
    return 0;
}

bool persist_w_reply_pop(unsigned w, struct persist_reply *r)
{
    if (!S.enabled)
        return false;
    struct pworker *p = &S.pw[w];
    uint32_t h = p->rep_head;
    if (h == ck_pr_load_32(&p->rep_tail))
        return false;
    ck_pr_fence_load();
    *r = p->rep[h & (REP_RING - 1)];
    ck_pr_fence_load_store();
    ck_pr_store_32(&p->rep_head, h + 1);
    return true;
}

/* Payload bytes of a record with header len: a marker has none, a keyed record its flagged
   length, a user id its length. */
static size_t jr_payload(uint16_t len)
{
    return len == JR_MARKER ? 0 : (len & JR_KEYED) ? (size_t)(len & ~JR_KEYED) : len;
}

static bool jring_push(struct jring *j, const char *s, size_t n, uint16_t len)
{
    uint32_t need = (uint32_t)((2 + n + 1) & ~(size_t)1);
    uint32_t tail = j->tail;
    if ((j->mask + 1) - (tail - ck_pr_load_32(&j->head)) < need)
        return false;
    char hdr[2];
    memcpy(hdr, &len, 2);
    j->buf[tail & j->mask] = hdr[0];
    j->buf[(tail + 1) & j->mask] = hdr[1];
    uint32_t off = (tail + 2) & j->mask, first = j->mask + 1 - off;
    if (n == 0) {
        /* a reset marker: header only (s may be NULL) */
    } else if (first >= n) {
        memcpy(j->buf + off, s, n);
    } else {
        memcpy(j->buf + off, s, first);
        memcpy(j->buf, s + first, n - first);
    }
    ck_pr_fence_store();
    ck_pr_store_32(&j->tail, tail + need);
    return true;
}

/* Pop one record into out (>= USERS_ID_MAX): its header (length, JR_MARKER, or JR_KEYED |
   length), or -1 if empty. */
static int jring_pop(struct jring *j, char *out)
{
    uint32_t head = j->head;
    if (head == ck_pr_load_32(&j->tail))
        return -1;
    ck_pr_fence_load();
    char hdr[2] = {j->buf[head & j->mask], j->buf[(head + 1) & j->mask]};
    uint16_t len;
    memcpy(&len, hdr, 2);
    size_t n = jr_payload(len);
    uint32_t off = (head + 2) & j->mask, first = j->mask + 1 - off;
    if (first >= n) {
        memcpy(out, j->buf + off, n);
    } else {
        memcpy(out, j->buf + off, first);
        memcpy(out + first, j->buf, n - first);
    }
    ck_pr_fence_load_store();
    ck_pr_store_32(&j->head, head + (uint32_t)((2 + n + 1) & ~(size_t)1));
    return len;
}

/* Move spilled records into the ring while they fit (spill records: u16 len + bytes). */
static void overflow_move(struct pworker *p)
{
    size_t off = 0;
    while (off < p->over.len) {
        uint16_t len;
        memcpy(&len, p->over.buf + off, 2);
        size_t n = jr_payload(len);
        if (!jring_push(&p->j, p->over.buf + off + 2, n, len))
            break;
        off += 2 + n;
    }
    if (off) {
        memmove(p->over.buf, p->over.buf + off, p->over.len - off);
        p->over.len -= off;
    }
}

/* Queue one journal record of worker w, in order: into the ring, or behind what spilled. */
static int journal_put(struct pworker *p, const char *s, size_t n, uint16_t len)
{
    if (p->over.len == 0 && jring_push(&p->j, s, n, len))
        return 0;
    /* Ring full (the persister is behind by 256 KiB): keep the record, in order. Memory only
       grows with distinct new users, which is the bound SPEC §4 allows. */
    if (bytes_reserve(&p->over, 2 + n) < 0)
        return -ENOMEM;
    memcpy(p->over.buf + p->over.len, &len, 2);
    if (n)
        memcpy(p->over.buf + p->over.len + 2, s, n);
    p->over.len += 2 + n;
    return 0;
}

int persist_w_keyed(unsigned w, const char *key, size_t klen, uint64_t token)
{
    if (!S.enabled)
        return -ENODEV;
    if (klen < 1 || klen > PERSIST_KEY_MAX)
        return -EINVAL;
    char rec[8 + PERSIST_KEY_MAX];
    memcpy(rec, &token, 8);
    memcpy(rec + 8, key, klen);
    struct pworker *p = &S.pw[w];
    if (journal_put(p, rec, 8 + klen, (uint16_t)(JR_KEYED | (8 + klen))) < 0)
        return -EAGAIN;
    p->want_wake = true;
    return 0;
}

void persist_journal(unsigned w, const char *s, size_t n, void *ctx)
{
    (void)ctx;
    if (!S.enabled)
        return;
    struct pworker *p = &S.pw[w];
    uint16_t len = s ? (uint16_t)n : (uint16_t)JR_MARKER;
    if (!s)
        n = 0;
    if (journal_put(p, s, n, len) == 0)
        return;
    log_error("out of memory: a new user id will not be persisted");
}

bool persist_w_batch_end(unsigned w)
{
    if (!S.enabled)
        return false;
    struct pworker *p = &S.pw[w];
    if (p->over.len)
        overflow_move(p);
    if (!p->want_wake)
        return false;
    p->want_wake = false;
    /* Full fence: what we queued must be visible before we test the flag the persister clears
       before it drains (as users.c's want_wake). */
    ck_pr_fence_memory();
    return ck_pr_load_32(&S.wake_pending) == 0 && ck_pr_cas_32(&S.wake_pending, 0, 1);
}

/* ------------------------------------------------------------------ stats */

bool persist_healthy(void)
{
    return !S.enabled || ck_pr_load_int(&S.db_up);
}

uint64_t persist_pending_keys(void)
{
    return ck_pr_load_64(&S.pending_keys);
}

size_t persist_stats_json(char *out, size_t cap)
{
    if (!S.enabled) {
        int n = snprintf(out, cap,
                         "{\"mode\":\"none\",\"dbUp\":false,\"lastFlushAgeMs\":null,"
                         "\"lagMs\":0,\"pendingKeys\":0,\"flushes\":0,\"flushErrors\":0,"
                         "\"persistedTotalRequests\":0}");
        return n < 0 || (size_t)n >= cap ? 0 : (size_t)n;
    }
    uint64_t last = ck_pr_load_64(&S.last_flush_ms), now = mono_ms();
    char age[24];
    if (last)
        snprintf(age, sizeof(age), "%llu", (unsigned long long)(now > last ? now - last : 0));
    else
        snprintf(age, sizeof(age), "null");
    int n = snprintf(out, cap,
                     "{\"mode\":\"postgresql\",\"dbUp\":%s,\"lastFlushAgeMs\":%s,\"lagMs\":%llu,"
                     "\"pendingKeys\":%llu,\"flushes\":%llu,\"flushErrors\":%llu,"
                     "\"persistedTotalRequests\":%llu}",
                     ck_pr_load_int(&S.db_up) ? "true" : "false", age,
                     (unsigned long long)ck_pr_load_64(&S.lag_ms),
                     (unsigned long long)ck_pr_load_64(&S.pending_keys),
                     (unsigned long long)ck_pr_load_64(&S.flushes),
                     (unsigned long long)ck_pr_load_64(&S.flush_errors),
                     (unsigned long long)ck_pr_load_64(&S.persisted_total));
    return n < 0 || (size_t)n >= cap ? 0 : (size_t)n;
}

/* ------------------------------------------------------------------ persister: queues */

void persist_p_attach(void (*wake)(void *ctx, unsigned w), void *ctx)
{
    S.wake = wake;
    S.wake_ctx = ctx;
}

static void reply(unsigned w, const struct persist_reply *r)
{
    struct pworker *p = &S.pw[w];
    /* A durable reply is pushed for every flush with this slot's increments (the worker needs
       each one to number its tickets) but only worth a wake-up when someone waits on it; the
       worker drains the rest at the end of its next batch. */
    if (r->kind != PERSIST_R_DURABLE || ck_pr_load_64(&p->dur_waiting) > 0)
        p->wake = true;
    uint32_t t = p->rep_tail;
    if (p->nback == 0 && t - ck_pr_load_32(&p->rep_head) < REP_RING) {
        p->rep[t & (REP_RING - 1)] = *r;
        ck_pr_fence_store();
        ck_pr_store_32(&p->rep_tail, t + 1);
        return;
    }
    if (p->nback == p->capback) {
        size_t nc = p->capback ? p->capback * 2 : 64;
        struct persist_reply *nb = realloc(p->back, nc * sizeof(*nb));
        if (!nb) {
            log_error("out of memory: a persistence reply is lost (its requests will time out)");
            return;
        }
        p->back = nb;
        p->capback = nc;
    }
    p->back[p->nback++] = *r;
}

static void backlog_move(struct pworker *p)
{
    size_t k = 0;
    uint32_t t = p->rep_tail;
    while (k < p->nback && t - ck_pr_load_32(&p->rep_head) < REP_RING) {
        p->rep[t & (REP_RING - 1)] = p->back[k++];
        t++;
    }
    if (!k)
        return;
    ck_pr_fence_store();
    ck_pr_store_32(&p->rep_tail, t);
    memmove(p->back, p->back + k, (p->nback - k) * sizeof(*p->back));
    p->nback -= k;
    p->wake = true;
}

static int preq_add(struct preq **v, size_t *n, size_t *cap, struct preq e)
{
    if (*n == *cap) {
        size_t nc = *cap ? *cap * 2 : 16;
        struct preq *nv = realloc(*v, nc * sizeof(*nv));
        if (!nv)
            return -ENOMEM;
        *v = nv;
        *cap = nc;
    }
    (*v)[(*n)++] = e;
    return 0;
}

static uint64_t max_reset_gen(void)
{
    uint64_t m = 0;
    for (unsigned i = 0; i < S.n; i++) {
        uint64_t g = ck_pr_load_64(&cnt_slot(i)->reset_gen);
        if (g > m)
            m = g;
    }
    return m;
}

static void drain_requests(uint64_t now)
{
    for (unsigned w = 0; w < S.n; w++) {
        struct pworker *p = &S.pw[w];
        void *e;
        while (ck_ring_dequeue_spsc(&p->req, p->reqbuf, &e)) {
            uintptr_t v = (uintptr_t)e;
            struct preq q = {.w = w, .token = v & ((1ull << 56) - 1), .at_ms = now};
            if ((v >> 56) == PERSIST_REQ_CLUSTER) {
                preq_add(&S.cl, &S.ncl, &S.capcl, q);
            } else {
                /* The worker asks after its /reset barrier: every slot has applied it. */
                q.target = max_reset_gen();
                if (q.target <= S.reset_applied)
                    reply(w, &(struct persist_reply){.kind = PERSIST_R_RESET, .token = q.token});
                else
                    preq_add(&S.rs, &S.nrs, &S.caprs, q);
            }
        }
    }
    /* Requests whose worker already answered 503 (timed out) are dropped, so a long outage
       cannot grow these lists without bound. */
    uint64_t ttl = (uint64_t)S.durable_timeout_ms + 1000;
    size_t j = 0;
    for (size_t i = 0; i < S.ncl; i++)
        if (S.cl[i].attached || now - S.cl[i].at_ms < ttl)
            S.cl[j++] = S.cl[i];
    S.ncl = j;
    j = 0;
    for (size_t i = 0; i < S.nrs; i++)
        if (now - S.rs[i].at_ms < ttl)
            S.rs[j++] = S.rs[i];
    S.nrs = j;
    /* Keyed increments long answered 503 ("outcome unknown") and not in the flush in flight:
       dropped, so an outage holds them for --durable-timeout-ms + 1 s, not for ever (the
       client retries with the same key, which is what the key is for). */
    j = S.f.st != F_NONE ? S.f.nk : 0;
    for (size_t i = j; i < S.nkq; i++)
        if (now - S.kq[i].at_ms < ttl)
            S.kq[j++] = S.kq[i];
    S.nkq = j;
}

static void users_add(struct pworker *p, const char *s, size_t n)
{
    uint16_t len = (uint16_t)n;
    if (bytes_reserve(&p->u.b, 2 + n) < 0) {
        log_error("out of memory: a new user id will not be persisted");
        return;
    }
    memcpy(p->u.b.buf + p->u.b.len, &len, 2);
    memcpy(p->u.b.buf + p->u.b.len + 2, s, n);
    p->u.b.len += 2 + n;
    p->u.n++;
}

static void keyed_add(unsigned w, const char *rec, size_t n)
{
    if (S.nkq == S.capkq) {
        size_t nc = S.capkq ? S.capkq * 2 : 64;
        struct kreq *nv = realloc(S.kq, nc * sizeof(*nv));
        if (!nv) {
            log_error("out of memory: a keyed durable increment is dropped (it times out)");
            return;
        }
        S.kq = nv;
        S.capkq = nc;
    }
    struct kreq *k = &S.kq[S.nkq++];
    k->w = w;
    memcpy(&k->token, rec, 8);
    k->klen = (uint8_t)(n - 8);
    memcpy(k->key, rec + 8, n - 8);
    k->at_ms = S.now_ms;
}

static void drain_journals(void)
{
    char buf[USERS_ID_MAX + 2];
    bool gone = ck_pr_load_8((uint8_t *)&S.workers_gone);
    for (unsigned w = 0; w < S.n; w++) {
        struct pworker *p = &S.pw[w];
        if (gone && p->over.len) /* the workers are joined: their spills are ours to read */
            overflow_move(p);
        for (;;) {
            int len = jring_pop(&p->j, buf);
            if (len < 0 && gone && p->over.len) {
                overflow_move(p); /* more spilled records fit now that the ring is drained */
                len = jring_pop(&p->j, buf);
            }
            if (len < 0)
                break;
            if (len != (int)JR_MARKER && (len & (int)JR_KEYED)) {
                keyed_add(w, buf, jr_payload((uint16_t)len));
                continue;
            }
            if (len == (int)JR_MARKER) {
                /* Shard w was reset: its pending users (even those in the flush in flight,
                   which the reset flush deletes anyway) are forgotten. */
                p->u.b.len = p->u.head = p->u.take = 0;
                p->u.n = p->u.ntake = 0;
                p->markers++;
                continue;
            }
            users_add(p, buf, (size_t)len);
        }
    }
}

/* ------------------------------------------------------------------ persister: connection */

static const struct {
    const char *name, *sql;
    int nparams;
} STMTS[] = {
    {"rc_ledger",
     "WITH c AS (INSERT INTO rc_counters AS t (k, v) VALUES ('" COUNTER_KEY "', $3::bigint)"
     " ON CONFLICT (k) DO UPDATE SET v = t.v + EXCLUDED.v"
     " WHERE t.v <= 9223372036854775807 - EXCLUDED.v RETURNING t.v)"
     " INSERT INTO rc_flush_ledger (node_id, incarnation, flush_seq, counter_after)"
     " VALUES ($1::integer, $4::bigint, $2::bigint, (SELECT v FROM c)) RETURNING counter_after",
     4},
    /* DELETE, not TRUNCATE: TRUNCATE rebuilds the primary keys, and a B-tree build fsyncs its
       files before COMMIT — measured at over 2 s on a busy disk, stalling every flush behind it;
       DELETE costs only WAL (proportional to the rows, and resets are rare). */
    {"rc_trunc", "DELETE FROM rc_users", 0},
    {"rc_meta0",
     "WITH e AS (DELETE FROM rc_events RETURNING 1) UPDATE rc_meta SET v = 0 WHERE k = 'users'", 0},
    {"rc_events",
     "INSERT INTO rc_events AS t (node_id, total, sum_u) VALUES ($1::integer, $2::bigint,"
     " $3::numeric) ON CONFLICT (node_id) DO UPDATE SET total = t.total + EXCLUDED.total,"
     " sum_u = t.sum_u + EXCLUDED.sum_u RETURNING t.total",
     3},
    {"rc_users",
     "WITH ins AS (INSERT INTO rc_users (id) SELECT unnest($1::bytea[]) ON CONFLICT DO NOTHING"
     " RETURNING 1) UPDATE rc_meta SET v = v + (SELECT count(*) FROM ins) WHERE k = 'users'",
     1},
    /* Earlier incarnations' rows are kept a day: a spill file of theirs replays against them. */
    {"rc_prune",
     "DELETE FROM rc_flush_ledger WHERE node_id = $1::integer AND (incarnation = $3::bigint AND"
     " flush_seq < $2::bigint OR incarnation < $3::bigint AND committed_at < now() - interval '1 day')",
     3},
    /* Durable keyed increments (SPEC §2.2 + Idempotency-Key): insert the keys (a key another
       transaction holds waits for it, then is skipped: the database arbitrates between nodes),
       count the ones this transaction inserted, in request order, after the unkeyed delta,
       then read every key's value, new or first result. */
    {"rc_key_ins",
     "INSERT INTO rc_incr_keys (k, node_id, ord) SELECT k, $1::integer, o"
     " FROM unnest($2::text[]) WITH ORDINALITY AS x(k, o) ON CONFLICT (k) DO NOTHING",
     2},
    {"rc_key_val",
     "WITH n AS (SELECT k, row_number() OVER (ORDER BY ord) AS r, count(*) OVER () AS c"
     "  FROM rc_incr_keys WHERE k = ANY($1::text[]) AND v IS NULL),"
     " u AS (UPDATE rc_counters SET v = v + (SELECT count(*) FROM n) WHERE k = '" COUNTER_KEY "'"
     "  AND EXISTS (SELECT 1 FROM n) AND v <= 9223372036854775807 - (SELECT count(*) FROM n)"
     "  RETURNING v)"
     " UPDATE rc_incr_keys i SET v = u.v - n.c + n.r FROM n, u WHERE i.k = n.k",
     1},
    /* keys the counter could not take (INT64_MAX) are not kept: a retry is refused again */
    {"rc_key_get",
     "WITH d AS (DELETE FROM rc_incr_keys WHERE k = ANY($1::text[]) AND v IS NULL RETURNING k)"
     " SELECT k, v, (SELECT v FROM rc_counters WHERE k = '" COUNTER_KEY "')"
     " FROM rc_incr_keys WHERE k = ANY($1::text[]) AND v IS NOT NULL",
     1},
    {"rc_key_exp", "DELETE FROM rc_incr_keys WHERE created_at < now() - interval '24 hours'", 0},
    {"rc_cluster",
     "SELECT coalesce(sum(total), 0)::text, coalesce(sum(sum_u), 0)::text, count(*),"
     " coalesce((SELECT v FROM rc_meta WHERE k = 'users'), 0) FROM rc_events",
     0},
    /* Tenant counters (SPEC §2.3): one JSON array per statement, rows sorted by id. */
    {"rc_tn_t",
     "INSERT INTO rc_tenants (id, label, created_at) SELECT id, label, to_timestamp(ms / 1000.0)"
     " FROM json_to_recordset($1::json) AS x(id uuid, label text, ms bigint) ON CONFLICT DO NOTHING",
     1},
    {"rc_tn_c",
     "INSERT INTO rc_tenant_counters (id, tenant_id, label, value, max_delta, created_at)"
     " SELECT id, tid, label, 0, md, to_timestamp(ms / 1000.0) FROM json_to_recordset($1::json)"
     " AS x(id uuid, tid uuid, label text, md bigint, ms bigint) ON CONFLICT DO NOTHING",
     1},
    /* numeric delta: a `set` may move a value by more than an int64 can hold */
    {"rc_tn_d",
     "UPDATE rc_tenant_counters t SET value = (t.value + x.d)::bigint"
     " FROM json_to_recordset($1::json) AS x(id uuid, d numeric) WHERE t.id = x.id",
     1},
    {"rc_tn_i",
     "INSERT INTO rc_idempotency (tenant_id, key, counter_id, delta, value, created_at)"
     " SELECT tid, k, cid, d, v, to_timestamp(ms / 1000.0) FROM json_to_recordset($1::json)"
     " AS x(tid uuid, k text, cid uuid, d bigint, v bigint, ms bigint) ON CONFLICT DO NOTHING",
     1},
    {"rc_tn_exp", "DELETE FROM rc_idempotency WHERE created_at < now() - interval '24 hours'", 0},
    {"rc_check",
     "SELECT counter_after FROM rc_flush_ledger WHERE node_id = $1::integer AND"
     " incarnation = $3::bigint AND flush_seq = $2::bigint",
     3},
    /* Signal the old backends still there and list them: a flush whose outcome is unknown is
       looked up in the ledger only once its backend is gone (until then it could still commit).
       Matched by name too, so a pid the OS reused for someone else's backend is left alone. */
    {"rc_kill",
     "SELECT pid FROM pg_stat_activity WHERE pid = ANY($1::int[]) AND pid <> pg_backend_pid()"
     " AND application_name = $2 AND pg_terminate_backend(pid)",
     2},
    {"rc_reject",
     "INSERT INTO rc_rejected (node_id, kind, key, payload, sqlstate, error)"
     " VALUES ($1::integer, $2, $3::bytea, $4, $5, $6)",
     6},
};
#define NSTMTS (sizeof(STMTS) / sizeof(STMTS[0]))

static const char *stmt_sql(const char *name)
{
    for (size_t i = 0; i < NSTMTS; i++)
        if (strcmp(STMTS[i].name, name) == 0)
            return STMTS[i].sql;
    return NULL;
}

/* ------------------------------------------------------------------ start-up: spill replay */

/* One spill record (a flush), its text parameters NUL-terminated (copies). */
struct srec {
    bool reset;
    char *seq, *cd, *ev, *sum, *users, *jt, *jc, *jd, *ji, *keys;
};

static char *srec_str(struct spill_cur *c)
{
    size_t n;
    const uint8_t *p = spill_get_bytes(c, &n);
    if (c->bad)
        return NULL;
    char *o = malloc(n + 1);
    if (o) {
        if (n)
            memcpy(o, p, n);
        o[n] = 0;
    }
    return o;
}

static void srec_free(struct srec *r)
{
    char **f[] = {&r->seq, &r->cd, &r->ev, &r->sum, &r->users, &r->jt, &r->jc, &r->jd, &r->ji,
                  &r->keys};
    for (size_t i = 0; i < sizeof(f) / sizeof(f[0]); i++)
        free(*f[i]);
}

/* Run one named statement with text parameters; true if it succeeded. *dup: it failed with
   a unique violation (23505). Logs other failures. */
static bool replay_exec(PGconn *c, const char *name, int n, const char *const *v, bool *dup)
{
    PGresult *r = PQexecParams(c, stmt_sql(name), n, NULL, v, NULL, NULL, 0);
    ExecStatusType st = PQresultStatus(r);
    bool ok = st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK;
    if (!ok) {
        const char *ss = PQresultErrorField(r, PG_DIAG_SQLSTATE);
        if (dup && ss && strcmp(ss, "23505") == 0)
            *dup = true;
        else
            log_error("spill replay statement failed", LOG_S("statement", name),
                      LOG_S("error", PQresultErrorMessage(r)));
    }
    PQclear(r);
    return ok;
}

/* Apply one record in its own transaction, keyed in the ledger under the spilling process's
   incarnation: a record already committed (by this replay before a crash, or because its flush
   committed after all) is skipped. 1 applied, 0 already there, -EIO. */
static int replay_record(PGconn *c, const char *node, const char *inc, const struct srec *r)
{
    bool dup = false;
    const char *lv[4] = {node, r->seq, r->cd, inc};
    if (!ok_exec(c, "BEGIN", PGRES_COMMAND_OK, NULL))
        return -EIO;
    bool ok = replay_exec(c, "rc_ledger", 4, lv, &dup);
    if (ok && r->reset)
        ok = replay_exec(c, "rc_trunc", 0, NULL, NULL) && replay_exec(c, "rc_meta0", 0, NULL, NULL);
    const char *ev[3] = {node, r->ev, r->sum};
    if (ok && *r->ev)
        ok = replay_exec(c, "rc_events", 3, ev, NULL);
    const char *uv[1] = {r->users};
    if (ok && *r->users)
        ok = replay_exec(c, "rc_users", 1, uv, NULL);
    const char *names[4] = {"rc_tn_t", "rc_tn_c", "rc_tn_d", "rc_tn_i"};
    const char *js[4] = {r->jt, r->jc, r->jd, r->ji};
    for (int i = 0; ok && i < 4; i++)
        if (*js[i])
            ok = replay_exec(c, names[i], 1, &js[i], NULL);
    const char *kn[2] = {node, r->keys}, *kv[1] = {r->keys};
    if (ok && *r->keys)
        ok = replay_exec(c, "rc_key_ins", 2, kn, NULL) && replay_exec(c, "rc_key_val", 1, kv, NULL) &&
             replay_exec(c, "rc_key_get", 1, kv, NULL);
    if (!ok) {
        PQclear(PQexec(c, "ROLLBACK"));
        return dup ? 0 : -EIO;
    }
    return ok_exec(c, "COMMIT", PGRES_COMMAND_OK, NULL) ? 1 : -EIO;
}

/* The spill file of an earlier shutdown (SPEC §4), replayed before anything is loaded: decoded
   whole first (a file that does not decode is refused, never half-applied), then record by
   record, then removed. 0 (also: no file) / -EBADMSG (refused: kept, logged) / -EIO. */
static int replay_spill(PGconn *c)
{
    char path[600] = "";
    void *pl = NULL;
    size_t len = 0;
    if (spill_tmp_exists(S.spill_dir, S.node_id))
        log_warn("an incomplete spill file (.tmp) is left in --spill-dir: a crash interrupted "
                 "writing it; ignored", LOG_S("spill_dir", S.spill_dir));
    int rc = spill_read(S.spill_dir, S.node_id, &pl, &len, path, sizeof(path));
    if (rc == -ENOENT)
        return 0;
    if (rc == -EBADMSG || rc == -EFBIG) {
        log_error("the spill file is corrupt or truncated: refusing to start (it is kept)",
                  LOG_S("file", path), LOG_S("error", strerror(-rc)),
                  LOG_S("fix", "inspect it; move it out of --spill-dir to start without its data"));
        return -EBADMSG;
    }
    if (rc < 0) { /* fail at start, not at the shutdown that would need it */
        log_error("--spill-dir cannot be read: refusing to start", LOG_S("file", path),
                  LOG_S("error", strerror(-rc)),
                  LOG_S("fix", "make --spill-dir a directory ringcount can write (or create)"));
        return rc;
    }
    struct spill_cur cur = spill_cur_init(pl, len);
    uint32_t ver = spill_get_u32(&cur), node = spill_get_u32(&cur);
    uint64_t inc = spill_get_u64(&cur);
    uint32_t n = spill_get_u32(&cur);
    struct srec *recs = NULL;
    uint32_t got = 0;
    rc = -EBADMSG;
    if (cur.bad || ver != SPILL_PAYLOAD_VERSION || node != S.node_id || n > len)
        goto refuse;
    if (n && !(recs = calloc(n, sizeof(*recs)))) {
        rc = -ENOMEM;
        goto out;
    }
    for (; got < n; got++) {
        struct srec *r = &recs[got];
        r->seq = srec_str(&cur);
        r->reset = spill_get_u8(&cur) != 0;
        r->cd = srec_str(&cur);
        r->ev = srec_str(&cur);
        r->sum = srec_str(&cur);
        r->users = srec_str(&cur);
        r->jt = srec_str(&cur);
        r->jc = srec_str(&cur);
        r->jd = srec_str(&cur);
        r->ji = srec_str(&cur);
        r->keys = srec_str(&cur);
        if (cur.bad || !r->seq || !r->cd || !r->ev || !r->sum || !r->users || !r->jt || !r->jc ||
            !r->jd || !r->ji || !r->keys) {
            got++;
            goto refuse;
        }
    }
    if (!spill_cur_done(&cur))
        goto refuse;
    char snode[16], sinc[24];
    snprintf(snode, sizeof(snode), "%u", node);
    snprintf(sinc, sizeof(sinc), "%llu", (unsigned long long)inc);
    uint64_t t0 = mono_ms();
    unsigned applied = 0;
    for (uint32_t i = 0; i < n; i++) {
        int r = replay_record(c, snode, sinc, &recs[i]);
        if (r < 0) {
            log_error("spill replay failed: refusing to start (the file is kept; records already "
                      "applied are skipped next time)", LOG_S("file", path), LOG_U("record", i),
                      LOG_S("fix", "see the statement error above"));
            rc = -EIO;
            goto out;
        }
        applied += (unsigned)r;
    }
    rc = spill_remove(path);
    if (rc < 0)
        log_warn("spill file replayed but not removed (a restart skips its records)",
                 LOG_S("file", path), LOG_S("error", strerror(-rc)));
    log_info("spill file replayed", LOG_S("file", path), LOG_U("flushes", n),
             LOG_U("applied", applied), LOG_U("replay_ms", mono_ms() - t0));
    rc = 0;
    goto out;
refuse:
    log_error("the spill file does not decode: refusing to start (it is kept)", LOG_S("file", path),
              LOG_S("fix", "inspect it; move it out of --spill-dir to start without its data"));
out:
    for (uint32_t i = 0; i < got && recs; i++)
        srec_free(&recs[i]);
    free(recs);
    free(pl);
    return rc;
}

static void quiet_notice(void *arg, const char *msg)
{
    (void)arg;
    log_debug("PostgreSQL notice", LOG_S("notice", msg));
}

static void set_fd(int fd)
{
    if (fd != S.fd) {
        S.fd = fd;
        S.gen++;
    }
}

static void conn_drop(uint64_t now, const char *why)
{
    if (S.x == X_FLUSH && S.f.st == F_SENT) {
        S.f.st = F_UNKNOWN; /* the COMMIT may or may not have happened: ask the ledger */
        ck_pr_store_64(&S.flush_errors, S.flush_errors + 1);
        metrics_flush_failed();
    }
    char err[200] = "";
    if (S.conn)
        snprintf(err, sizeof(err), "%s", PQerrorMessage(S.conn));
    err[strcspn(err, "\n")] = 0;
    bool was_up = S.connected;
    /* A backend whose connection we drop may still be running what we sent (stopped, behind a
       lock, or on a dead path we gave up on): the next connection terminates it, instead of
       letting it pile up or commit much later. (PQcancel would block this thread on a dead
       path: it opens a new connection synchronously.) */
    if (S.conn && PQbackendPID(S.conn) > 0) {
        if (S.nold == OLD_PIDS)
            memmove(S.old_pids, S.old_pids + 1, (OLD_PIDS - 1) * sizeof(S.old_pids[0]));
        else
            S.nold++;
        S.old_pids[S.nold - 1] = PQbackendPID(S.conn);
    }
    S.need_rollback = false; /* a new connection starts outside any transaction */
    if (S.conn)
        PQfinish(S.conn);
    S.conn = NULL;
    set_fd(-1);
    S.gen++;
    S.cst = C_DOWN;
    S.x = X_NONE;
    S.nq = S.qi = 0;
    S.out_pending = false;
    S.hold_until = 0;
    set_up(false);
    S.backoff = S.backoff ? S.backoff * 2 : BACKOFF_MIN_MS;
    if (S.backoff > BACKOFF_MAX_MS)
        S.backoff = BACKOFF_MAX_MS;
    S.next_connect = now + S.backoff;
    if (was_up)
        log_warn("PostgreSQL connection lost", LOG_S("why", why), LOG_S("error", err),
                 LOG_B("flush_outcome_unknown", S.f.st == F_UNKNOWN));
    else
        log_rl(&S.rl_err, now, 3, 10000, LOG_WARN, "PostgreSQL unavailable", LOG_S("why", why),
               LOG_S("error", err), LOG_U("retry_ms", S.backoff));
}

static void conn_start(uint64_t now)
{
    struct conn_kw k;
    conn_kw_fill(&k);
    S.conn = PQconnectStartParams(k.kw, k.vals, 1);
    S.cst_since = now;
    if (!S.conn || PQstatus(S.conn) == CONNECTION_BAD) {
        conn_drop(now, "connect");
        return;
    }
    S.cst = C_CONNECTING;
    S.cpoll = PGRES_POLLING_WRITING;
    S.gen++;
    set_fd(PQsocket(S.conn));
}

/* Send what libpq buffered; false if the connection broke. */
static bool out_flush(uint64_t now)
{
    int r = PQflush(S.conn);
    if (r < 0) {
        conn_drop(now, "send");
        return false;
    }
    S.out_pending = r == 1;
    return true;
}

static void begin_exchange(enum xch x, uint64_t now)
{
    S.x = x;
    S.x_since = now;
    S.qi = 0;
    memset(&S.r, 0, sizeof(S.r));
}

static bool q_push(enum qk k)
{
    if (S.nq >= sizeof(S.q) / sizeof(S.q[0]))
        return false;
    S.q[S.nq++] = k;
    return true;
}

static bool send_prepared(enum qk k, const char *name, int n, const char *const *vals)
{
    return PQsendQueryPrepared(S.conn, name, n, vals, NULL, NULL, 0) && q_push(k);
}

static bool send_sync(void)
{
    return PQpipelineSync(S.conn) && q_push(Q_SYNC);
}

static void send_setup(uint64_t now)
{
    S.nq = 0;
    begin_exchange(X_SETUP, now);
    uint32_t lim = S.db_timeout_ms < S.durable_timeout_ms ? S.db_timeout_ms : S.durable_timeout_ms;
    lim = lim / STMT_TIMEOUT_DEN * STMT_TIMEOUT_NUM;
    if (lim < 50)
        lim = 50;
    bool ok = PQsendQueryParams(S.conn, "SET synchronous_commit = on", 0, NULL, NULL, NULL, NULL,
                                0) &&
              q_push(Q_SET);
    char st[64], lt[64];
    snprintf(st, sizeof(st), "SET statement_timeout = %u", lim);
    snprintf(lt, sizeof(lt), "SET lock_timeout = %u", lim);
    ok = ok && PQsendQueryParams(S.conn, st, 0, NULL, NULL, NULL, NULL, 0) && q_push(Q_SET);
    ok = ok && PQsendQueryParams(S.conn, lt, 0, NULL, NULL, NULL, NULL, 0) && q_push(Q_SET);
    for (size_t i = 0; ok && i < NSTMTS; i++)
        ok = PQsendPrepare(S.conn, STMTS[i].name, STMTS[i].sql, STMTS[i].nparams, NULL) &&
             q_push(Q_PREP);
    if (!ok || !send_sync()) {
        conn_drop(now, "setup");
        return;
    }
    out_flush(now);
}

static void send_rollback(uint64_t now)
{
    S.nq = 0;
    begin_exchange(X_ROLLBACK, now);
    if (!PQsendQueryParams(S.conn, "ROLLBACK", 0, NULL, NULL, NULL, NULL, 0) ||
        !q_push(Q_ROLLBACK) || !send_sync()) {
        conn_drop(now, "rollback");
        return;
    }
    out_flush(now);
}

static void send_kill(uint64_t now)
{
    S.nq = 0;
    begin_exchange(X_KILL, now);
    char arr[OLD_PIDS * 12 + 3], *o = arr;
    *o++ = '{';
    for (unsigned i = 0; i < S.nold; i++)
        o += snprintf(o, 13, i ? ",%d" : "%d", S.old_pids[i]);
    *o++ = '}';
    *o = 0;
    const char *v[2] = {arr, S.appname};
    if (!send_prepared(Q_KILL, "rc_kill", 2, v) || !send_sync()) {
        conn_drop(now, "kill");
        return;
    }
    out_flush(now);
}

static void send_check(uint64_t now)
{
    S.nq = 0;
    begin_exchange(X_CHECK, now);
    const char *v[3] = {S.f.p_node, S.f.p_seq, S.f.p_inc};
    const char *kv[1] = {S.f.keys.buf};
    if (!send_prepared(Q_CHECK, "rc_check", 3, v) ||
        (S.f.nk && !send_prepared(Q_KEYGET, "rc_key_get", 1, kv)) || !send_sync()) {
        conn_drop(now, "check");
        return;
    }
    out_flush(now);
}

static void send_flush(uint64_t now)
{
    struct flush *f = &S.f;
    S.nq = 0;
    begin_exchange(X_FLUSH, now);
    if (f->st == F_NONE)
        S.flush_t0_ns = mono_ns();
    const char *lv[4] = {f->p_node, f->p_seq, f->p_cd, f->p_inc};
    const char *ev[3] = {f->p_node, f->p_ev, f->p_sum};
    const char *uv[1] = {f->users.buf};
    const char *pv[3] = {f->p_node, f->p_prune, f->p_inc};
    const char *kn[2] = {f->p_node, f->keys.buf}, *kv[1] = {f->keys.buf};
    bool ok = PQsendQueryParams(S.conn, "BEGIN", 0, NULL, NULL, NULL, NULL, 0) && q_push(Q_BEGIN);
    ok = ok && send_prepared(Q_LEDGER, "rc_ledger", 4, lv);
    if (f->reset)
        ok = ok && send_prepared(Q_TRUNC, "rc_trunc", 0, NULL) &&
             send_prepared(Q_META0, "rc_meta0", 0, NULL);
    if (f->events)
        ok = ok && send_prepared(Q_EVENTS, "rc_events", 3, ev);
    if (f->nusers)
        ok = ok && send_prepared(Q_USERS, "rc_users", 1, uv);
    if (f->tn) {
        const char *jt[1] = {f->j_t.buf}, *jc[1] = {f->j_c.buf}, *jd[1] = {f->j_d.buf},
                   *ji[1] = {f->j_i.buf};
        if (f->j_t.len > 2)
            ok = ok && send_prepared(Q_TN, "rc_tn_t", 1, jt);
        if (f->j_c.len > 2)
            ok = ok && send_prepared(Q_TN, "rc_tn_c", 1, jc);
        if (f->j_d.len > 2)
            ok = ok && send_prepared(Q_TN, "rc_tn_d", 1, jd);
        if (f->j_i.len > 2)
            ok = ok && send_prepared(Q_TN, "rc_tn_i", 1, ji);
    }
    if (f->nk)
        ok = ok && send_prepared(Q_TN, "rc_key_ins", 2, kn) &&
             send_prepared(Q_TN, "rc_key_val", 1, kv) &&
             send_prepared(Q_KEYGET, "rc_key_get", 1, kv);
    if (f->prune)
        ok = ok && send_prepared(Q_PRUNE, "rc_prune", 3, pv) &&
             send_prepared(Q_PRUNE, "rc_key_exp", 0, NULL);
    if (f->prune && S.tn)
        ok = ok && send_prepared(Q_PRUNE, "rc_tn_exp", 0, NULL);
    S.rej_sent = S.nrej;
    for (size_t i = 0; ok && i < S.nrej; i++) {
        const struct reject *j = &S.rej[i];
        const char *rv[6] = {f->p_node, j->kind, j->key, j->payload, j->sqlstate, j->error};
        ok = send_prepared(Q_TN, "rc_reject", 6, rv);
    }
    ok = ok && PQsendQueryParams(S.conn, "COMMIT", 0, NULL, NULL, NULL, NULL, 0) &&
         q_push(Q_COMMIT);
    if (f->ncl)
        ok = ok && send_prepared(Q_CLUSTER, "rc_cluster", 0, NULL);
    if (!ok || !send_sync()) {
        f->st = F_SENT;
        conn_drop(now, "send flush");
        return;
    }
    f->st = F_SENT;
    if (!out_flush(now))
        return;
    if (S.debug_lose_ms && !S.debug_used && f->cdelta) {
        S.debug_used = true;
        S.hold_until = now + S.debug_lose_ms;
        log_warn("debug: holding flush result", LOG_I("backend_pid", PQbackendPID(S.conn)),
                 LOG_U("flush_seq", S.next_seq), LOG_U("hold_ms", S.debug_lose_ms));
    }
}

/* ------------------------------------------------------------------ persister: flushes */

static int uref_cmp(const void *a, const void *b)
{
    const struct uref *x = a, *y = b;
    int c = memcmp(x->s, y->s, x->n < y->n ? x->n : y->n);
    return c ? c : (int)x->n - (int)y->n;
}

/* Build the bytea[] literal of up to USERS_PER_FLUSH pending users, sorted by bytes (the order
   PostgreSQL compares bytea in, so concurrent nodes lock keys in one order). */
static int take_users(struct flush *f)
{
    size_t total = 0;
    for (unsigned w = 0; w < S.n; w++) {
        struct upend *u = &S.pw[w].u;
        if (u->head) { /* compact: nothing is in flight while a flush is being built */
            memmove(u->b.buf, u->b.buf + u->head, u->b.len - u->head);
            u->b.len -= u->head;
            u->head = u->take = 0;
        }
        u->ntake = 0;
        total += u->n;
    }
    f->nusers = 0;
    f->users.len = 0;
    if (!total)
        return 0;
    if (total > USERS_PER_FLUSH)
        total = USERS_PER_FLUSH;
    if (S.iso && total > S.ulimit) /* isolating: the first ulimit users, in worker order */
        total = S.ulimit;
    if (S.capurefs < total) {
        struct uref *nr = realloc(S.urefs, total * sizeof(*nr));
        if (!nr)
            return -ENOMEM;
        S.urefs = nr;
        S.capurefs = total;
    }
    size_t k = 0;
    for (unsigned w = 0; w < S.n && k < total; w++) {
        struct upend *u = &S.pw[w].u;
        size_t off = u->head;
        while (off < u->b.len && k < total) {
            uint16_t len;
            memcpy(&len, u->b.buf + off, 2);
            S.urefs[k++] = (struct uref){.s = u->b.buf + off + 2, .n = len};
            off += 2 + (size_t)len;
            u->ntake++;
        }
        u->take = off;
    }
    if (k)
        qsort(S.urefs, k, sizeof(*S.urefs), uref_cmp);
    static const char hex[] = "0123456789abcdef";
    if (bytes_reserve(&f->users, 3 + k * 6 + (size_t)USERS_ID_MAX * 2 * k) < 0)
        goto nomem;
    char *o = f->users.buf;
    *o++ = '{';
    for (size_t i = 0; i < k; i++) {
        if (i)
            *o++ = ',';
        memcpy(o, "\"\\\\x", 4); /* "\\x  → element text \x (bytea hex input) */
        o += 4;
        for (uint16_t j = 0; j < S.urefs[i].n; j++) {
            unsigned char c = (unsigned char)S.urefs[i].s[j];
            *o++ = hex[c >> 4];
            *o++ = hex[c & 15];
        }
        *o++ = '"';
    }
    *o++ = '}';
    *o = 0;
    f->users.len = (size_t)(o - f->users.buf);
    f->nusers = k;
    return 0;
nomem:
    for (unsigned w = 0; w < S.n; w++) {
        S.pw[w].u.take = S.pw[w].u.head;
        S.pw[w].u.ntake = 0;
    }
    return -ENOMEM;
}

static int jput(struct bytes *b, const char *s, size_t n)
{
    if (bytes_reserve(b, n + 1) < 0)
        return -ENOMEM;
    memcpy(b->buf + b->len, s, n);
    b->len += n;
    b->buf[b->len] = 0;
    return 0;
}

static int jstr(struct bytes *b, const char *s)
{
    return jput(b, s, strlen(s));
}

static int jid(struct bytes *b, const uint8_t id[16])
{
    char t[UUID_TEXT_LEN + 2];
    t[0] = '"';
    uuid_format(id, t + 1);
    t[UUID_TEXT_LEN + 1] = '"';
    return jput(b, t, sizeof(t));
}

static int jint(struct bytes *b, __int128 v)
{
    char t[48];
    return jput(b, t, fmt_i128(t, v));
}

/* A JSON string of printable ASCII (labels, Idempotency-Keys: 0x20..0x7e), or null if n == 0. */
static int jtext(struct bytes *b, const char *s, size_t n)
{
    if (!n)
        return jstr(b, "null");
    if (bytes_reserve(b, 2 * n + 3) < 0)
        return -ENOMEM;
    char *o = b->buf + b->len;
    *o++ = '"';
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '"' || s[i] == '\\')
            *o++ = '\\';
        *o++ = s[i];
    }
    *o++ = '"';
    *o = 0;
    b->len = (size_t)(o - b->buf);
    return 0;
}

static int tnd_cmp(const void *a, const void *b)
{
    return memcmp(((const struct tnd *)a)->id, ((const struct tnd *)b)->id, 16);
}

/* Inside tn_idem_freeze: the counts of tenants and counters (every record collected is of a
   counter already there: keyed increments wait while frozen), and every counter whose live
   value moved from what is committed. */
static int tn_values_snapshot(struct flush *f)
{
    uint32_t nidem;
    ck_pr_fence_load();
    tn_sizes(S.tn, &f->tn_nt, &f->tn_nc, &nidem);
    uint32_t nc = f->tn_nc;
    int rc = wm_reserve(nc);
    if (rc < 0)
        return rc;
    if (f->captnd < nc) {
        struct tnd *nd = realloc(f->tnd, nc * sizeof(*nd));
        if (!nd)
            return -ENOMEM;
        f->tnd = nd;
        f->captnd = nc;
    }
    for (uint32_t i = 0; i < nc; i++) {
        const struct tn_counter *c = tn_counter_at(S.tn, i);
        uint64_t live = (uint64_t)tn_counter_value_stable(S.tn, c);
        if (live != S.tn_wm[i])
            f->tnd[f->ntnd++] = (struct tnd){.idx = i, .live = live, .id = c->id};
    }
    return 0;
}

/* The tenant part of a flush, from what the database holds (S.tn_*): new idempotency records
   and the values of every counter that moved (Σ per-worker deltas and base, minus the
   committed value, sorted by id), both read while keyed increments are held off
   (tn_idem_freeze), then new tenants and new counters. Scans every counter: 1M counters × 4
   workers ≈ 4M loads, a few ms per flush at the store's bound (keyed increments wait that
   long); a few thousand counters cost microseconds. */
static int build_tenants(struct flush *f)
{
    f->tn = false;
    f->ntnd = 0;
    f->j_t.len = f->j_c.len = f->j_d.len = f->j_i.len = 0;
    if (!S.tn)
        return 0;
    if (!S.tn_ibuf && !(S.tn_ibuf = malloc(IDEM_PER_FLUSH * sizeof(*S.tn_ibuf))))
        return -ENOMEM;
    if (!S.tn_capibuf)
        S.tn_capibuf = IDEM_PER_FLUSH;
    memcpy(f->tn_icur, S.tn_icur, sizeof(f->tn_icur));
    uint64_t lost = 0;
    size_t ni = 0;
    /* Records and values from one frozen instant (tn_idem_freeze): collected first and values
       read after, a keyed increment landing in between was committed without its record — a
       kill -9 then, and its replay counts again (seen: 3 of 522). */
    tn_idem_freeze(S.tn);
    int rc = 0;
    for (;;) {
        ni += tn_idem_collect(S.tn, f->tn_icur, S.tn_ibuf + ni, S.tn_capibuf - ni, &lost);
        if (ni < S.tn_capibuf)
            break;
        struct tn_idem_out *nb = realloc(S.tn_ibuf, 2 * S.tn_capibuf * sizeof(*nb));
        if (!nb) {
            rc = -ENOMEM; /* nothing of the tenants in this flush; the cursor is unchanged */
            break;
        }
        S.tn_ibuf = nb;
        S.tn_capibuf *= 2;
    }
    if (rc == 0)
        rc = tn_values_snapshot(f);
    tn_idem_thaw(S.tn);
    if (rc < 0)
        return rc;
    if (lost) {
        S.tn_ilost += lost;
        log_warn("idempotency records overwritten before being persisted (ring full)",
                 LOG_U("records", lost), LOG_U("total", S.tn_ilost));
    }
    uint32_t nt = f->tn_nt, nc = f->tn_nc;
    rc = jstr(&f->j_t, "[") || jstr(&f->j_c, "[") || jstr(&f->j_d, "[") || jstr(&f->j_i, "[");
    for (uint32_t i = S.tn_nt; i < nt && !rc; i++) {
        const struct tn_tenant *t = tn_tenant_at(S.tn, i);
        rc = jstr(&f->j_t, i > S.tn_nt ? ",{\"id\":" : "{\"id\":") || jid(&f->j_t, t->id) ||
             jstr(&f->j_t, ",\"label\":") || jtext(&f->j_t, t->label, t->label_len) ||
             jstr(&f->j_t, ",\"ms\":") || jint(&f->j_t, t->created_ms) || jstr(&f->j_t, "}");
    }
    for (uint32_t i = S.tn_nc; i < nc && !rc; i++) {
        const struct tn_counter *c = tn_counter_at(S.tn, i);
        rc = jstr(&f->j_c, i > S.tn_nc ? ",{\"id\":" : "{\"id\":") || jid(&f->j_c, c->id) ||
             jstr(&f->j_c, ",\"tid\":") || jid(&f->j_c, tn_tenant_at(S.tn, c->tenant)->id) ||
             jstr(&f->j_c, ",\"label\":") || jtext(&f->j_c, c->label, c->label_len) ||
             jstr(&f->j_c, ",\"md\":") || jint(&f->j_c, c->max_delta) ||
             jstr(&f->j_c, ",\"ms\":") || jint(&f->j_c, c->created_ms) || jstr(&f->j_c, "}");
    }
    if (f->ntnd) /* qsort(NULL, 0, ...) is undefined behaviour (UBSan aborts on it) */
        qsort(f->tnd, f->ntnd, sizeof(*f->tnd), tnd_cmp);
    for (size_t i = 0; i < f->ntnd && !rc; i++) {
        __int128 d = (__int128)(int64_t)f->tnd[i].live - (__int128)(int64_t)S.tn_wm[f->tnd[i].idx];
        rc = jstr(&f->j_d, i ? ",{\"id\":" : "{\"id\":") || jid(&f->j_d, f->tnd[i].id) ||
             jstr(&f->j_d, ",\"d\":") || jint(&f->j_d, d) || jstr(&f->j_d, "}");
    }
    for (size_t i = 0; i < ni && !rc; i++) {
        const struct tn_idem_out *o = &S.tn_ibuf[i];
        rc = jstr(&f->j_i, i ? ",{\"tid\":" : "{\"tid\":") ||
             jid(&f->j_i, tn_tenant_at(S.tn, o->tenant)->id) || jstr(&f->j_i, ",\"k\":") ||
             jtext(&f->j_i, o->key, o->klen) || jstr(&f->j_i, ",\"cid\":") ||
             jid(&f->j_i, tn_counter_at(S.tn, o->counter)->id) || jstr(&f->j_i, ",\"d\":") ||
             jint(&f->j_i, o->delta) || jstr(&f->j_i, ",\"v\":") || jint(&f->j_i, o->value) ||
             jstr(&f->j_i, ",\"ms\":") || jint(&f->j_i, o->created_ms) || jstr(&f->j_i, "}");
    }
    rc = rc || jstr(&f->j_t, "]") || jstr(&f->j_c, "]") || jstr(&f->j_d, "]") || jstr(&f->j_i, "]");
    if (rc)
        return -ENOMEM;
    f->tn = nt != S.tn_nt || nc != S.tn_nc || f->ntnd || ni;
    return 0;
}

/* The text[] literal of the first KEYS_PER_FLUSH keyed increments (printable ASCII: only '"'
   and '\\' need a backslash inside the double quotes). */
static int take_keys(struct flush *f)
{
    size_t lim = S.iso ? S.klimit : KEYS_PER_FLUSH;
    f->nk = S.nkq < lim ? S.nkq : lim;
    f->keys.len = 0;
    if (!f->nk)
        return 0;
    if (bytes_reserve(&f->keys, 3 + f->nk * (3 + 2 * PERSIST_KEY_MAX)) < 0) {
        f->nk = 0;
        return -ENOMEM;
    }
    char *o = f->keys.buf;
    *o++ = '{';
    for (size_t i = 0; i < f->nk; i++) {
        if (i)
            *o++ = ',';
        *o++ = '"';
        for (size_t j = 0; j < S.kq[i].klen; j++) {
            char c = S.kq[i].key[j];
            if (c == '"' || c == '\\')
                *o++ = '\\';
            *o++ = c;
        }
        *o++ = '"';
    }
    *o++ = '}';
    *o = 0;
    f->keys.len = (size_t)(o - f->keys.buf);
    return 0;
}

/* Isolating: keep only S.iso_part of what build_flush took (the others stay at their
   watermarks, so flush_applied leaves them pending). */
static void iso_restrict(struct flush *f)
{
    enum part p = S.iso_part;
    if (p != P_COUNTER) {
        for (unsigned w = 0; w < S.n; w++)
            f->incr[w] = S.pw[w].wm_incr;
        f->cdelta = 0;
        f->counter = false;
    }
    if (p != P_EVENTS)
        f->events = f->reset = false;
    if (p != P_USERS) {
        f->nusers = 0;
        for (unsigned w = 0; w < S.n; w++)
            S.pw[w].u.take = S.pw[w].u.head, S.pw[w].u.ntake = 0;
    }
    if (p != P_TN)
        f->tn = false;
    if (p != P_KEYS)
        f->nk = 0;
    f->prune = false;
}

/* Snapshot the slots into S.f. Returns true if there is anything to send. */
static bool build_flush(uint64_t now)
{
    struct flush *f = &S.f;
    S.flush_snap_ms = now;
    if (take_keys(f) < 0)
        log_error("out of memory building a flush: keyed increments wait for the next one");
    if (build_tenants(f) < 0) {
        f->tn = false;
        log_error("out of memory building a flush: tenant counters wait for the next one");
    }
    f->cdelta = 0;
    for (unsigned w = 0; w < S.n; w++) {
        f->incr[w] = ck_pr_load_64(&cnt_slot(w)->incr);
        f->cdelta += (int64_t)(f->incr[w] - S.pw[w].wm_incr);
    }
    ck_pr_fence_load(); /* pairs with persist_w_durable_enter: dur_waiting is read later */
    f->counter = f->cdelta != 0;
    /* Events and users only when no POST /reset is half-applied: every slot has the same reset
       generation and every shard's reset marker has been consumed (one per applied reset). */
    bool settled = true;
    for (unsigned w = 0; w < S.n; w++) {
        cnt_read_events(cnt_slot(w), &f->ev[w], &f->sum[w], &f->rg[w], &f->ep[w]);
        if (f->rg[w] != f->rg[0] || S.pw[w].markers != f->ep[w])
            settled = false;
    }
    f->reset = settled && f->rg[0] > S.reset_applied;
    if (settled && !f->reset)
        for (unsigned w = 0; w < S.n; w++)
            if (f->ep[w] != S.pw[w].wm_ep)
                settled = false;
    f->events = false;
    f->nusers = 0;
    for (unsigned w = 0; w < S.n; w++)
        S.pw[w].u.take = S.pw[w].u.head, S.pw[w].u.ntake = 0;
    if (settled) {
        uint64_t dt = 0;
        dec_t ds = 0;
        for (unsigned w = 0; w < S.n; w++) {
            /* after a reset the database row is rebuilt from absolute values */
            dt += f->ev[w] - (f->reset ? 0 : S.pw[w].wm_ev);
            ds += f->sum[w] - (f->reset ? 0 : S.pw[w].wm_sum);
        }
        f->ev_param = dt;
        f->sum_param = ds;
        f->events = f->reset || dt != 0 || ds != 0;
        if (take_users(f) < 0)
            log_error("out of memory building a flush: users wait for the next one");
    }
    f->ncl = 0;
    for (size_t i = 0; i < S.ncl; i++)
        S.cl[i].attached = true;
    f->ncl = S.ncl;
    f->prune = S.next_seq % PRUNE_EVERY == 0;
    if (S.iso)
        iso_restrict(f);
    /* Idle: one empty flush a second anyway (HEARTBEAT_MS) keeps lastFlushAgeMs meaningful,
       notices a dead connection, and refreshes the committed value other nodes move. While
       isolating, every flush is sent (an empty one is the ledger probe). */
    bool heartbeat = now - S.last_success_ms >= HEARTBEAT_MS || S.iso || S.nrej;
    if (!f->counter && !f->events && !f->reset && !f->nusers && !f->ncl && !f->tn && !f->nk &&
        !heartbeat)
        return false;
    snprintf(f->p_node, sizeof(f->p_node), "%u", S.node_id);
    snprintf(f->p_inc, sizeof(f->p_inc), "%llu", (unsigned long long)S.incarnation);
    snprintf(f->p_seq, sizeof(f->p_seq), "%llu", (unsigned long long)S.next_seq);
    snprintf(f->p_cd, sizeof(f->p_cd), "%lld", (long long)f->cdelta);
    snprintf(f->p_ev, sizeof(f->p_ev), "%llu", (unsigned long long)f->ev_param);
    f->p_sum[fmt_i128(f->p_sum, f->sum_param)] = 0;
    snprintf(f->p_prune, sizeof(f->p_prune), "%llu",
             (unsigned long long)(S.next_seq > PRUNE_EVERY ? S.next_seq - PRUNE_EVERY : 0));
    return true;
}

static void publish_pending(void)
{
    uint64_t keys = 0, incr = 0;
    for (unsigned w = 0; w < S.n; w++) {
        keys += S.pw[w].u.n;
        incr |= ck_pr_load_64(&cnt_slot(w)->incr) - S.pw[w].wm_incr;
    }
    uint64_t ev, rg, ep;
    dec_t sum;
    bool evd = false;
    for (unsigned w = 0; w < S.n && !evd; w++) {
        cnt_read_events(cnt_slot(w), &ev, &sum, &rg, &ep);
        evd = ev != S.pw[w].wm_ev || sum != S.pw[w].wm_sum || rg != S.pw[w].wm_rg;
    }
    ck_pr_store_64(&S.pending_keys, keys + (incr != 0) + evd);
    metrics_set_pending_keys(S.pending_keys);
    bool pending = S.pending_keys || S.nkq || S.f.st != F_NONE;
    if (!pending)
        S.pending_since = 0;
    else if (!S.pending_since)
        S.pending_since = S.now_ms ? S.now_ms : 1;
}

/* The keyed increments of a committed flush: answer each from rc_key_get's rows (its own
   new value, or the first result of its key), and publish the counter after them. */
static void keyed_applied(struct flush *f)
{
    for (size_t i = 0; i < f->nk; i++) {
        const struct kreq *k = &S.kq[i];
        struct persist_reply r = {.kind = PERSIST_R_KEYED, .token = k->token,
                                  .status = -EOVERFLOW};
        for (size_t j = 0; j < S.r.nkres; j++)
            if (S.kres[j].klen == k->klen && memcmp(S.kres[j].key, k->key, k->klen) == 0) {
                r.value = S.kres[j].v;
                r.status = 0;
                break;
            }
        reply(k->w, &r);
    }
    memmove(S.kq, S.kq + f->nk, (S.nkq - f->nk) * sizeof(*S.kq));
    S.nkq -= f->nk;
    f->nk = 0;
    if (S.r.have_final) {
        __int128 wmsum = 0;
        for (unsigned w = 0; w < S.n; w++)
            wmsum += S.pw[w].wm_incr;
        publish(S.r.counter_final, (__int128)S.r.counter_final - wmsum);
    }
}

static void rejects_committed(void)
{
    if (!S.rej_sent)
        return;
    for (size_t i = 0; i < S.rej_sent; i++) {
        log_error("key rejected: it failed alone in repeated flushes; written to rc_rejected",
                  LOG_S("kind", S.rej[i].kind), LOG_S("sqlstate", S.rej[i].sqlstate),
                  LOG_S("error", S.rej[i].error));
        free(S.rej[i].key);
        free(S.rej[i].payload);
    }
    metrics_flush_rejected(S.rej_sent);
    memmove(S.rej, S.rej + S.rej_sent, (S.nrej - S.rej_sent) * sizeof(*S.rej));
    S.nrej -= S.rej_sent;
    S.rej_sent = 0;
}

/* Isolating, and the flush carrying iso_part alone committed: widen its batch again and go on
   to the next part; a whole round of parts committing at their first try ends isolation. */
static void iso_committed(void)
{
    S.fail_streak = 0;
    if (!S.iso)
        return;
    if (S.iso_fails)
        S.iso_clean = false;
    S.iso_fails = 0;
    if (S.iso_part == P_USERS && S.ulimit < USERS_PER_FLUSH) {
        S.ulimit *= 2;
        return; /* more of the users, until the batch is whole again */
    }
    if (S.iso_part == P_KEYS && S.klimit < KEYS_PER_FLUSH) {
        S.klimit *= 2;
        return;
    }
    if (S.iso_part + 1 < P_NPARTS) {
        if (S.iso_part == P_PROBE)
            S.iso_clean = true;
        S.iso_part = (enum part)(S.iso_part + 1);
        return;
    }
    if (S.iso_clean) {
        S.iso = false;
        log_info("flush isolation over: every part commits again");
    } else {
        S.iso_part = P_COUNTER; /* another round */
        S.iso_clean = true;
    }
}

/* The flush in S.f is committed (directly, or found in the ledger). */
static void flush_applied(uint64_t now, bool have_counter, bool counter_null, int64_t after)
{
    struct flush *f = &S.f;
    if (have_counter && !counter_null) {
        /* Number the increments of this flush: slot by slot, ticket t of slot w (t in
           (wm, incr]) gets base_w + (t − wm); the last one ends at `after`. */
        __int128 acc = (__int128)after - f->cdelta;
        __int128 wmsum = 0;
        for (unsigned w = 0; w < S.n; w++) {
            struct pworker *p = &S.pw[w];
            uint64_t d = f->incr[w] - p->wm_incr;
            if (d) {
                struct persist_reply r = {.kind = PERSIST_R_DURABLE, .upto = f->incr[w],
                                          .offset = (uint64_t)(acc - (__int128)p->wm_incr)};
                reply(w, &r);
                acc += d;
            }
            p->wm_incr = f->incr[w];
            wmsum += p->wm_incr;
        }
        publish(after, (__int128)after - wmsum);
    } else if (have_counter && f->counter) {
        log_rl(&S.rl_err, now, 3, 10000, LOG_ERROR,
               "counter delta refused: it would pass INT64_MAX in the database (other nodes?)",
               LOG_I("delta", f->cdelta));
    }
    if (f->nk)
        keyed_applied(f);
    if (f->events || f->reset) {
        for (unsigned w = 0; w < S.n; w++) {
            struct pworker *p = &S.pw[w];
            p->wm_ev = f->ev[w];
            p->wm_sum = f->sum[w];
            p->wm_rg = f->rg[w];
            p->wm_ep = f->ep[w];
        }
        if (f->reset) {
            S.reset_applied = f->rg[0];
            ck_pr_store_64(&S.persisted_total, f->ev_param);
        } else {
            ck_pr_store_64(&S.persisted_total, S.persisted_total + f->ev_param);
        }
        if (S.r.have_events)
            ck_pr_store_64(&S.persisted_total, (uint64_t)S.r.events_total);
    }
    if (f->tn) {
        for (size_t i = 0; i < f->ntnd; i++)
            S.tn_wm[f->tnd[i].idx] = f->tnd[i].live;
        S.tn_nt = f->tn_nt;
        S.tn_nc = f->tn_nc;
        memcpy(S.tn_icur, f->tn_icur, sizeof(S.tn_icur));
    }
    for (unsigned w = 0; w < S.n; w++) {
        struct upend *u = &S.pw[w].u;
        u->head = u->take;
        u->n -= u->ntake;
        u->ntake = 0;
    }
    /* reset waiters whose reset is now in the database */
    size_t j = 0;
    for (size_t i = 0; i < S.nrs; i++) {
        if (S.rs[i].target <= S.reset_applied)
            reply(S.rs[i].w, &(struct persist_reply){.kind = PERSIST_R_RESET,
                                                      .token = S.rs[i].token});
        else
            S.rs[j++] = S.rs[i];
    }
    S.nrs = j;
    f->st = F_NONE;
    S.next_seq++;
    ck_pr_store_64(&S.flushes, S.flushes + 1);
    ck_pr_store_64(&S.last_flush_ms, now ? now : 1);
    S.last_success_ms = now;
    S.retry_backoff = 0;
    S.retry_at = 0;
    rejects_committed();
    iso_committed();
    if (S.pending_since) /* what still waits arrived after this flush's snapshot */
        S.pending_since = S.flush_snap_ms ? S.flush_snap_ms : now;
    metrics_flush_observe((double)(mono_ns() - S.flush_t0_ns) / 1e9);
}

static void cluster_answer(void)
{
    size_t k = S.f.ncl < S.ncl ? S.f.ncl : S.ncl;
    for (size_t i = 0; i < k; i++)
        reply(S.cl[i].w, &(struct persist_reply){.kind = PERSIST_R_CLUSTER, .token = S.cl[i].token,
                                                  .events = S.r.cl_events, .users = S.r.cl_users,
                                                  .nodes = S.r.cl_nodes, .sum = S.r.cl_sum});
    memmove(S.cl, S.cl + k, (S.ncl - k) * sizeof(*S.cl));
    S.ncl -= k;
}

/* Errors that pass by themselves: a retry, not isolation. SQLSTATE classes 08 connection,
   40 rollback (serialization, deadlock), 53 resources, 55 lock not available, 57 operator
   intervention (statement_timeout's 57014, shutdown), 58 system, XX internal. */
static bool transient_state(const char *ss)
{
    static const char *const cls[] = {"08", "40", "53", "55", "57", "58", "XX"};
    if (strlen(ss) != 5)
        return true;
    for (size_t i = 0; i < sizeof(cls) / sizeof(cls[0]); i++)
        if (memcmp(ss, cls[i], 2) == 0)
            return true;
    return false;
}

static struct reject *reject_new(const char *kind)
{
    if (S.nrej == S.caprej) {
        size_t nc = S.caprej ? S.caprej * 2 : 8;
        struct reject *nv = realloc(S.rej, nc * sizeof(*nv));
        if (!nv)
            return NULL;
        S.rej = nv;
        S.caprej = nc;
    }
    struct reject *j = &S.rej[S.nrej++];
    memset(j, 0, sizeof(*j));
    snprintf(j->kind, sizeof(j->kind), "%s", kind);
    snprintf(j->sqlstate, sizeof(j->sqlstate), "%s", S.r.sqlstate);
    snprintf(j->error, sizeof(j->error), "%s", S.r.msg);
    return j;
}

static char *fmt_dup(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *fmt_dup(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *o = NULL;
    if (vasprintf(&o, fmt, ap) < 0)
        o = NULL;
    va_end(ap);
    return o;
}

/* iso_part failed alone ALONE_FAILS times with a single item: it leaves the pending state for
   rc_rejected (written by the next flush, which then commits without it). */
static void dead_letter(void)
{
    struct reject *j;
    switch (S.iso_part) {
    case P_COUNTER: {
        int64_t d = 0;
        for (unsigned w = 0; w < S.n; w++) { /* what the failed flush carried */
            d += (int64_t)(S.f.incr[w] - S.pw[w].wm_incr);
            S.pw[w].wm_incr = S.f.incr[w]; /* its durable waiters time out: 503 "unknown" */
        }
        if ((j = reject_new(PART_NAME[S.iso_part])))
            j->payload = fmt_dup("{\"key\":\"" COUNTER_KEY "\",\"delta\":%lld}", (long long)d);
        break;
    }
    case P_EVENTS: {
        uint64_t dt = 0;
        dec_t ds = 0;
        for (unsigned w = 0; w < S.n; w++) { /* what the failed flush carried */
            struct pworker *pw = &S.pw[w];
            dt += S.f.ev[w] - pw->wm_ev;
            ds += S.f.sum[w] - pw->wm_sum;
            pw->wm_ev = S.f.ev[w], pw->wm_sum = S.f.sum[w];
            pw->wm_rg = S.f.rg[w], pw->wm_ep = S.f.ep[w];
        }
        char sb[48];
        sb[fmt_i128(sb, ds)] = 0;
        if ((j = reject_new(PART_NAME[S.iso_part])))
            j->payload = fmt_dup("{\"total\":%llu,\"sum_u\":%s}", (unsigned long long)dt, sb);
        break;
    }
    case P_USERS:
        for (unsigned w = 0; w < S.n; w++) {
            struct upend *u = &S.pw[w].u;
            if (!u->n)
                continue;
            uint16_t len;
            memcpy(&len, u->b.buf + u->head, 2);
            if ((j = reject_new(PART_NAME[S.iso_part]))) {
                j->key = malloc(3 + 2 * (size_t)len);
                if (j->key) {
                    static const char hex[] = "0123456789abcdef";
                    char *o = j->key;
                    *o++ = '\\', *o++ = 'x';
                    for (uint16_t i = 0; i < len; i++) {
                        unsigned char c = (unsigned char)u->b.buf[u->head + 2 + i];
                        *o++ = hex[c >> 4], *o++ = hex[c & 15];
                    }
                    *o = 0;
                }
                j->payload = fmt_dup("{}");
            }
            u->head += 2 + (size_t)len;
            u->take = u->head;
            u->n--;
            break;
        }
        break;
    case P_KEYS:
        if (S.nkq) {
            if ((j = reject_new(PART_NAME[S.iso_part])))
                j->payload = fmt_dup("{\"key\":\"%.*s\"}", (int)S.kq[0].klen, S.kq[0].key);
            /* the database refused it: not committed, and it never will be */
            reply(S.kq[0].w, &(struct persist_reply){.kind = PERSIST_R_KEYED,
                                                      .token = S.kq[0].token, .status = -EIO});
            memmove(S.kq, S.kq + 1, (S.nkq - 1) * sizeof(*S.kq));
            S.nkq--;
        }
        break;
    default:
        return;
    }
    if (S.nrej && !S.rej[S.nrej - 1].payload) { /* out of memory: it can only be logged */
        log_error("key rejected (out of memory: not written to rc_rejected)",
                  LOG_S("kind", PART_NAME[S.iso_part]), LOG_S("error", S.r.msg));
        free(S.rej[--S.nrej].key);
    }
}

/* A flush failed with an SQL error: count the streak, and in isolation narrow the part. */
static void iso_failed(uint64_t now)
{
    if (transient_state(S.r.sqlstate))
        return;
    if (strcmp(S.r.sqlstate, S.fail_state) != 0) {
        memcpy(S.fail_state, S.r.sqlstate, sizeof(S.fail_state));
        S.fail_streak = 0;
    }
    S.fail_streak++;
    if (!S.iso) {
        if (S.fail_streak < ISOLATE_AFTER)
            return;
        S.iso = true;
        S.iso_part = P_PROBE;
        S.iso_fails = 0;
        S.ulimit = USERS_PER_FLUSH;
        S.klimit = KEYS_PER_FLUSH;
        log_warn("flush keeps failing the same way: isolating the failing part",
                 LOG_S("sqlstate", S.r.sqlstate), LOG_U("failures", S.fail_streak));
        return;
    }
    S.iso_fails++;
    switch (S.iso_part) {
    case P_PROBE: /* nothing but the ledger fails: no key to blame, keep probing */
        return;
    case P_USERS:
        if (S.ulimit > 1) {
            S.ulimit /= 2;
            S.iso_fails = 0;
            return;
        }
        break;
    case P_KEYS:
        if (S.klimit > 1) {
            S.klimit /= 2;
            S.iso_fails = 0;
            return;
        }
        break;
    default:
        break;
    }
    if (S.iso_fails < ALONE_FAILS)
        return;
    S.iso_clean = false;
    if (S.iso_part == P_TN) {
        /* one part for now: it waits (retried every round) while the others commit */
        log_rl(&S.rl_err, now, 3, 10000, LOG_ERROR,
               "tenant counters fail alone: they wait while everything else commits",
               LOG_S("sqlstate", S.r.sqlstate), LOG_S("error", S.r.msg));
    } else {
        dead_letter();
        S.iso_fails = 0;
        return; /* the same part again, without that item */
    }
    S.iso_fails = 0;
    S.iso_part = (enum part)(S.iso_part + 1);
}

static void flush_failed(uint64_t now)
{
    struct flush *f = &S.f;
    f->st = F_NONE; /* rolled back: the next flush is rebuilt from the same watermarks */
    /* ... under a new flush_seq: a sequence number is only ever sent with one content, so a
       ledger hit always means "this very content was committed". */
    S.next_seq++;
    for (unsigned w = 0; w < S.n; w++) {
        S.pw[w].u.take = S.pw[w].u.head;
        S.pw[w].u.ntake = 0;
    }
    for (size_t i = 0; i < S.ncl; i++)
        S.cl[i].attached = false;
    f->nk = 0; /* the keyed increments stay first in S.kq */
    S.rej_sent = 0;
    iso_failed(now);
    ck_pr_store_64(&S.flush_errors, S.flush_errors + 1);
    metrics_flush_failed();
    /* In pipeline mode an error skips the rest up to the sync, COMMIT included: the session is
       left inside the aborted transaction ("idle in transaction (aborted)") and every later
       statement would fail until a ROLLBACK. */
    S.need_rollback = S.conn && PQtransactionStatus(S.conn) != PQTRANS_IDLE;
    /* No escalation while bisecting a part (16 halvings must not take minutes), nor after a
       lock or statement timeout (55P03, 57014): the failed statement already waited its
       timeout, and the lock may be gone by now. */
    bool bisecting = S.iso && S.iso_part != P_PROBE;
    bool waited = strcmp(S.r.sqlstate, "55P03") == 0 || strcmp(S.r.sqlstate, "57014") == 0;
    S.retry_backoff = bisecting || waited ? RETRY_MIN_MS
                      : S.retry_backoff   ? S.retry_backoff * 2
                                          : RETRY_MIN_MS;
    if (S.retry_backoff > RETRY_MAX_MS)
        S.retry_backoff = RETRY_MAX_MS;
    S.retry_at = now + S.retry_backoff;
    log_rl(&S.rl_err, now, 3, 10000, LOG_ERROR, "flush failed (rolled back, will retry)",
           LOG_S("sqlstate", S.r.sqlstate), LOG_S("error", S.r.msg),
           LOG_U("retry_ms", S.retry_backoff));
}

/* A whole exchange (up to its sync) has been read. */
static void exchange_done(uint64_t now)
{
    enum xch x = S.x;
    S.x = X_NONE;
    S.nq = S.qi = 0;
    switch (x) {
    case X_SETUP:
        if (S.r.failed) {
            log_error("PostgreSQL session setup failed", LOG_S("error", S.r.msg));
            conn_drop(now, "setup");
            return;
        }
        S.cst = C_READY;
        S.backoff = 0;
        set_up(true);
        log_info("PostgreSQL connected", LOG_I("backend_pid", PQbackendPID(S.conn)),
                 LOG_B("resolving_flush", S.f.st == F_UNKNOWN), LOG_U("old_backends", S.nold));
        return;
    case X_ROLLBACK:
        if (S.r.failed || PQtransactionStatus(S.conn) != PQTRANS_IDLE) {
            conn_drop(now, "rollback");
            return;
        }
        S.need_rollback = false;
        return;
    case X_KILL:
        if (S.r.failed) {
            log_rl(&S.rl_err, now, 3, 10000, LOG_ERROR,
                   "cannot end the backends of dropped connections (a flush outcome stays "
                   "unresolved until they are gone)", LOG_S("error", S.r.msg));
            S.kill_at = now + 1000;
            return;
        }
        S.nold = S.r.nalive;
        memcpy(S.old_pids, S.r.alive, S.nold * sizeof(S.old_pids[0]));
        if (S.nold) /* signalled, not gone yet (stopped, or still unwinding): look again */
            S.kill_at = now + 100;
        return;
    case X_CHECK:
        if (S.r.failed) {
            conn_drop(now, "ledger check");
            return;
        }
        if (S.r.check_found) {
            log_info("flush outcome resolved from the ledger: it was committed, not re-applied",
                     LOG_S("flush_seq", S.f.p_seq));
            S.r.have_events = false;
            flush_applied(now, true, S.r.counter_null, S.r.counter_after);
        } else {
            log_info("flush outcome resolved from the ledger: not committed, sending it again",
                     LOG_S("flush_seq", S.f.p_seq));
            send_flush(now);
        }
        return;
    case X_FLUSH:
        /* COMMIT answered OK: applied, whatever came after it (a cluster read failing, or the
           connection dying before the sync). */
        if (S.r.commit_ok || !S.r.failed) {
            flush_applied(now, S.r.have_counter, S.r.counter_null, S.r.counter_after);
            if (S.r.have_cluster)
                cluster_answer();
        } else if (S.r.dup) {
            /* Our (node_id, incarnation, flush_seq) is already in the ledger: an earlier attempt
               of this very flush committed after all. Read its result (after the ROLLBACK of
               this attempt) instead of applying it again. */
            S.f.st = F_UNKNOWN;
            S.need_rollback = PQtransactionStatus(S.conn) != PQTRANS_IDLE;
        } else {
            flush_failed(now);
        }
        return;
    default:
        return;
    }
}

static void on_result(enum qk k, PGresult *res)
{
    ExecStatusType st = PQresultStatus(res);
    if (st == PGRES_FATAL_ERROR || st == PGRES_NONFATAL_ERROR || st == PGRES_BAD_RESPONSE) {
        if (!S.r.failed) {
            const char *ss = PQresultErrorField(res, PG_DIAG_SQLSTATE);
            snprintf(S.r.sqlstate, sizeof(S.r.sqlstate), "%s", ss ? ss : "");
            snprintf(S.r.msg, sizeof(S.r.msg), "%s", PQresultErrorMessage(res));
            S.r.msg[strcspn(S.r.msg, "\n")] = 0;
            S.r.dup = k == Q_LEDGER && ss && strcmp(ss, "23505") == 0;
        }
        S.r.failed = true;
        return;
    }
    if (st == PGRES_PIPELINE_ABORTED) {
        S.r.failed = true;
        return;
    }
    switch (k) {
    case Q_COMMIT:
        /* an aborted transaction's COMMIT answers "ROLLBACK" */
        S.r.commit_ok = st == PGRES_COMMAND_OK && !S.r.failed &&
                        strcmp(PQcmdStatus(res), "COMMIT") == 0;
        break;
    case Q_LEDGER:
        if (st == PGRES_TUPLES_OK && PQntuples(res) == 1) {
            S.r.have_counter = true;
            S.r.counter_null = PQgetisnull(res, 0, 0);
            S.r.counter_after = S.r.counter_null ? 0 : strtoll(PQgetvalue(res, 0, 0), NULL, 10);
        }
        break;
    case Q_EVENTS:
        if (st == PGRES_TUPLES_OK && PQntuples(res) == 1) {
            S.r.have_events = true;
            S.r.events_total = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
        }
        break;
    case Q_CLUSTER:
        if (st == PGRES_TUPLES_OK && PQntuples(res) == 1) {
            __int128 ev = 0, sum = 0;
            if (parse_i128(PQgetvalue(res, 0, 0), &ev) == 0 &&
                parse_i128(PQgetvalue(res, 0, 1), &sum) == 0) {
                S.r.have_cluster = true;
                S.r.cl_events = (uint64_t)ev;
                S.r.cl_sum = sum;
                S.r.cl_nodes = strtoull(PQgetvalue(res, 0, 2), NULL, 10);
                S.r.cl_users = strtoull(PQgetvalue(res, 0, 3), NULL, 10);
            }
        }
        break;
    case Q_KILL:
        for (int i = 0; st == PGRES_TUPLES_OK && i < PQntuples(res) && S.r.nalive < OLD_PIDS; i++)
            S.r.alive[S.r.nalive++] = (int)strtol(PQgetvalue(res, i, 0), NULL, 10);
        break;
    case Q_KEYGET:
        for (int i = 0; st == PGRES_TUPLES_OK && i < PQntuples(res); i++) {
            if (S.r.nkres >= KEYS_PER_FLUSH || PQgetlength(res, i, 0) > PERSIST_KEY_MAX)
                break;
            struct kres *kr = &S.kres[S.r.nkres++];
            kr->klen = (uint8_t)PQgetlength(res, i, 0);
            memcpy(kr->key, PQgetvalue(res, i, 0), kr->klen);
            kr->v = strtoll(PQgetvalue(res, i, 1), NULL, 10);
            if (!PQgetisnull(res, i, 2)) {
                S.r.have_final = true;
                S.r.counter_final = strtoll(PQgetvalue(res, i, 2), NULL, 10);
            }
        }
        break;
    case Q_CHECK:
        if (st == PGRES_TUPLES_OK && PQntuples(res) == 1) {
            S.r.check_found = true;
            S.r.counter_null = PQgetisnull(res, 0, 0);
            S.r.counter_after = S.r.counter_null ? 0 : strtoll(PQgetvalue(res, 0, 0), NULL, 10);
        }
        break;
    default:
        break;
    }
}

/* Read every result that has fully arrived. */
static void read_results(uint64_t now)
{
    while (S.x != X_NONE && S.qi < S.nq) {
        if (PQisBusy(S.conn))
            return;
        PGresult *res = PQgetResult(S.conn);
        enum qk k = S.q[S.qi];
        if (k == Q_SYNC) {
            if (!res) /* nothing there yet */
                return;
            if (PQresultStatus(res) != PGRES_PIPELINE_SYNC) {
                on_result(k, res); /* e.g. the server's FATAL on shutdown; recorded */
                S.r.failed = true;
            }
            PQclear(res);
            S.qi++;
            exchange_done(now);
            continue;
        }
        if (!res) { /* end of this query's results */
            S.qi++;
            continue;
        }
        on_result(k, res);
        PQclear(res);
    }
}

static void conn_io(uint64_t now, unsigned revents)
{
    if (S.cst == C_CONNECTING) {
        if (!revents)
            return;
        S.cpoll = PQconnectPoll(S.conn);
        if (S.cpoll == PGRES_POLLING_FAILED) {
            conn_drop(now, "connect");
            return;
        }
        set_fd(PQsocket(S.conn));
        if (S.cpoll != PGRES_POLLING_OK)
            return;
        if (PQsetnonblocking(S.conn, 1) != 0 || PQenterPipelineMode(S.conn) != 1) {
            conn_drop(now, "pipeline mode");
            return;
        }
        PQsetNoticeProcessor(S.conn, quiet_notice, NULL);
        S.cst = C_SETUP;
        send_setup(now);
        return;
    }
    if (!S.conn || S.hold_until)
        return;
    if (revents & (POLLIN | POLLERR | POLLHUP)) {
        if (!PQconsumeInput(S.conn)) {
            conn_drop(now, "receive");
            return;
        }
    }
    if (S.out_pending && !out_flush(now))
        return;
    read_results(now);
    if (S.conn && PQstatus(S.conn) == CONNECTION_BAD)
        conn_drop(now, "connection bad");
}

int persist_p_pollfd(unsigned *events, uint64_t *gen)
{
    *gen = S.gen;
    if (!S.conn || S.fd < 0 || S.hold_until) {
        *events = 0;
        return -1;
    }
    if (S.cst == C_CONNECTING)
        *events = S.cpoll == PGRES_POLLING_READING ? POLLIN : POLLOUT;
    else
        *events = POLLIN | (S.out_pending ? POLLOUT : 0);
    return S.fd;
}

void persist_p_stop(uint64_t deadline_ms)
{
    S.stopping = true;
    S.deadline = deadline_ms;
}

bool persist_p_finished(void)
{
    return S.finished;
}

/* ------------------------------------------------------------------ persister: spill file */

static bool flush_has_content(const struct flush *f)
{
    return f->counter || f->events || f->reset || f->nusers || f->tn || f->nk;
}

/* One flush as a spill record: its ledger seq and every statement parameter, as text. */
static void spill_put_flush(struct spill_buf *b, const struct flush *f)
{
    const char *none = "";
    spill_put_bytes(b, f->p_seq, strlen(f->p_seq));
    spill_put_u8(b, f->reset);
    spill_put_bytes(b, f->p_cd, strlen(f->p_cd));
    spill_put_bytes(b, f->events ? f->p_ev : none, f->events ? strlen(f->p_ev) : 0);
    spill_put_bytes(b, f->events ? f->p_sum : none, f->events ? strlen(f->p_sum) : 0);
    spill_put_bytes(b, f->users.buf, f->nusers ? f->users.len : 0);
    const struct bytes *j[4] = {&f->j_t, &f->j_c, &f->j_d, &f->j_i};
    for (int i = 0; i < 4; i++)
        spill_put_bytes(b, j[i]->buf, f->tn && j[i]->len > 2 ? j[i]->len : 0);
    spill_put_bytes(b, f->keys.buf, f->nk ? f->keys.len : 0);
}

/* The final flush cannot finish (database down, hung or rejecting): write everything pending
   to the spill file (SPEC §4: nothing acknowledged is lost), replayed at the next start. A flush
   in flight goes first under its own seq (its outcome is unknown: the replay asks the ledger),
   then the rest as further flushes built as if it had committed. Workers are joined, so the
   replies flush_applied posts are never read. */
static void spill_pending(uint64_t now)
{
    uint64_t t0 = mono_ms();
    struct spill_buf b = {0};
    uint32_t nrec = 0;
    spill_put_u32(&b, SPILL_PAYLOAD_VERSION);
    spill_put_u32(&b, S.node_id);
    spill_put_u64(&b, S.incarnation);
    size_t nrec_at = b.len;
    spill_put_u32(&b, 0); /* record count, patched below */
    if (S.f.st != F_NONE) {
        spill_put_flush(&b, &S.f);
        nrec++;
        memset(&S.r, 0, sizeof(S.r));
        flush_applied(now, true, false, 0);
    }
    drain_journals();
    for (;;) {
        memset(&S.r, 0, sizeof(S.r));
        S.ncl = S.nrs = 0;
        if (!build_flush(now) || !flush_has_content(&S.f))
            break;
        spill_put_flush(&b, &S.f);
        nrec++;
        flush_applied(now, true, false, 0);
    }
    if (!b.err && b.len >= nrec_at + 4)
        for (int i = 0; i < 4; i++)
            b.p[nrec_at + (size_t)i] = (uint8_t)(nrec >> (8 * i));
    char path[600] = "";
    int rc = b.err ? b.err : nrec ? spill_write(S.spill_dir, S.node_id, b.p, b.len, path,
                                                sizeof(path))
                                  : 0;
    if (rc < 0) {
        S.lost = true;
        log_error("final flush incomplete and the spill file could not be written: pending data "
                  "is lost", LOG_S("spill_dir", S.spill_dir), LOG_S("error", strerror(-rc)),
                  LOG_S("file", path),
                  LOG_S("fix", rc == -EEXIST ? "an earlier spill file was never replayed: start "
                                               "with the database reachable to replay it"
                                             : "make --spill-dir writable"));
    } else if (nrec) {
        log_warn("final flush incomplete: pending data written to the spill file, replayed at "
                 "the next start", LOG_S("file", path), LOG_U("flushes", nrec),
                 LOG_U("bytes", b.len), LOG_U("write_ms", mono_ms() - t0),
                 LOG_B("db_up", S.cst == C_READY));
    }
    spill_buf_free(&b);
}

bool persist_lost(void)
{
    return S.lost;
}

static bool urgent(void)
{
    return ck_pr_load_64(&S.inflight) > 0 || S.ncl > 0 || S.nrs > 0 || S.stopping;
}

uint32_t persist_p_run(uint64_t now, unsigned revents)
{
    S.now_ms = now;
    ck_pr_store_32(&S.wake_pending, 0);
    ck_pr_fence_memory();
    drain_requests(now);
    drain_journals();
    for (unsigned w = 0; w < S.n; w++)
        if (S.pw[w].nback)
            backlog_move(&S.pw[w]);

    if (S.hold_until && now >= S.hold_until) {
        log_warn("debug: dropping the connection with the flush result unread");
        conn_drop(now, "debug hold");
    }
    if (S.conn && !S.hold_until)
        conn_io(now, revents);
    if (S.cst == C_DOWN && now >= S.next_connect)
        conn_start(now);
    /* --db-timeout-ms: no answer to a connect or an exchange (a stopped backend, a black-holed
       path, a lock wait past statement_timeout's reach): drop it; its backend is terminated
       from the next connection, and a flush in flight is resolved through the ledger. */
    if ((S.cst == C_CONNECTING || S.cst == C_SETUP) && now - S.cst_since > S.db_timeout_ms)
        conn_drop(now, "connect timeout (--db-timeout-ms)");
    if (S.x != X_NONE && !S.hold_until && now - S.x_since > S.db_timeout_ms)
        conn_drop(now, "no answer within --db-timeout-ms");

    if (S.cst == C_READY && S.x == X_NONE) {
        if (S.nold && now >= S.kill_at) {
            send_kill(now);
        } else if (S.need_rollback) {
            send_rollback(now);
        } else if (S.f.st == F_UNKNOWN) {
            if (!S.nold)
                send_check(now);
        } else if (now >= S.retry_at && (now >= S.next_due || urgent())) {
            if (build_flush(now)) {
                send_flush(now);
                S.next_due = now + S.flush_ms;
            } else {
                S.next_due = now + S.flush_ms;
                if (S.stopping)
                    S.finished = true;
            }
        }
    }
    if (S.stopping && !S.finished && now + SPILL_RESERVE_MS >= S.deadline) {
        spill_pending(now);
        S.finished = true;
    }

    /* Wake workers with replies, and those with waiters while no reply comes (timeouts). */
    bool periodic = now - S.last_waiter_wake >= WAITER_WAKE_MS;
    if (periodic)
        S.last_waiter_wake = now;
    for (unsigned w = 0; w < S.n; w++) {
        struct pworker *p = &S.pw[w];
        bool waiting = ck_pr_load_64(&p->dur_waiting) > 0;
        if (periodic && !p->wake) {
            for (size_t i = 0; i < S.ncl && !waiting; i++)
                waiting = S.cl[i].w == w;
            for (size_t i = 0; i < S.nrs && !waiting; i++)
                waiting = S.rs[i].w == w;
            p->wake = waiting;
        }
        if (p->wake && S.wake)
            S.wake(S.wake_ctx, w);
        p->wake = false;
    }
    publish_pending();

    publish_health(now);

    uint64_t d = 100;
    if (S.cst == C_READY && S.x == X_NONE) {
        uint64_t due = S.next_due > S.retry_at ? S.next_due : S.retry_at;
        if (S.nold)
            due = S.kill_at;
        d = due > now ? due - now : 1;
    }
    else if (S.cst == C_DOWN)
        d = S.next_connect > now ? S.next_connect - now : 1;
    if (S.hold_until)
        d = S.hold_until > now ? S.hold_until - now : 1;
    if (d > 100)
        d = 100;
    return d ? (uint32_t)d : 1;
}
