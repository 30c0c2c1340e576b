/* persist — see persist.h. */
#include "persist.h"

#include <ck_pr.h>
#include <ck_ring.h>
#include <ck_sequence.h>
#include <errno.h>
#include <libpq-fe.h>
#include <poll.h>
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
#include "tenants.h"
#include "users.h"
#include "uuid.h"

/* ------------------------------------------------------------------ sizes and limits */

/* Journal ring per worker: 256 KiB holds ~20,000 new ids of ~10 bytes, i.e. 2 s of the 1MRC's
   first-second burst (75,000 users / 4 workers) between two persister runs 10 ms apart. A full
   ring spills on the worker (kept in order, retried every batch), never blocks it. */
#define JRING_BYTES (256u * 1024u)
#define JR_MARKER 0xffffu
/* Requests in flight per worker: /stats?scope=cluster and durable /reset are admin-rate. */
#define REQ_RING 256u
/* Replies per worker: one per flush with this worker's increments; 1024 = 10 s of flushes. */
#define REP_RING 1024u
/* New users per flush: 65,536 ids ≈ 2 MB of hex parameter; inserting them takes ~0.3 s on a
   laptop-class PostgreSQL 15, well inside the 1 s budget for a 100,000-key flush. */
#define USERS_PER_FLUSH 65536u
#define BACKOFF_MIN_MS 100u
#define BACKOFF_MAX_MS 5000u /* issue 3: reconnect back-off capped at 5 s */
/* No progress on a connect or an exchange for this long: the server is unreachable (a dead
   peer without RST); drop the connection and resolve any flush through the ledger. */
#define CONNECT_TIMEOUT_MS 5000u
#define STALL_MS 10000u
/* While durable requests wait without replies (database down), wake their workers this often
   so --durable-timeout-ms is enforced to ~100 ms instead of the 1 s worker tick. */
#define WAITER_WAKE_MS 100u
#define HEARTBEAT_MS 1000u
#define PRUNE_EVERY 1024u /* ledger rows kept per node: the last 1024 flushes (~10 s) */
#define LOAD_RETRY_MS 10000u
#define ADVISORY_KEY "7526089482530071310" /* "ringcoun" as a bigint: the migration lock */
#define COUNTER_KEY "increment"
/* Idempotency records per flush: 4,096 × ~150 bytes of JSON = 0.6 MB; the rest waits for the
   next flush (10 ms later), so 400,000 keyed increments/s still drain. */
#define IDEM_PER_FLUSH 4096u

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
    struct bytes spill;
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
          Q_COMMIT, Q_CLUSTER, Q_CHECK, Q_SYNC, Q_TN };
enum cst { C_DOWN, C_CONNECTING, C_SETUP, C_READY };
enum xch { X_NONE, X_SETUP, X_FLUSH, X_CHECK };
enum fst { F_NONE, F_SENT, F_UNKNOWN };

struct uref { /* a pending user, pointing into its owner's buffer, for sorting */
    const char *s;
    uint16_t n;
};

struct preq { /* a drained request */
    unsigned w;
    uint64_t token, target, at_ms;
    bool attached;
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
    char p_node[16], p_seq[24], p_cd[24], p_ev[24], p_sum[48], p_prune[24];
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
};

static struct {
    bool enabled;
    unsigned n;
    uint32_t flush_ms, node_id, max_inflight, durable_timeout_ms;
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
    int db_up;
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
    bool debug_used;
    enum qk q[24];
    unsigned nq, qi;
    struct xres r;
    struct flush f;
    uint64_t next_seq, reset_applied;
    struct preq *cl, *rs;       /* pending cluster / reset requests */
    struct uref *urefs;         /* sort scratch of take_users */
    size_t capurefs;
    size_t ncl, capcl, nrs, caprs;
    bool stopping, finished, workers_gone;
    uint64_t deadline;
    struct log_rl rl_err;

    /* tenant counters (persister-private after persist_load): what the database holds */
    struct tn_store *tn;
    uint32_t tn_nt, tn_nc;      /* tenants / counters [0, n) are rows */
    uint64_t *tn_wm;            /* per counter idx: its committed value */
    size_t tn_capwm;
    uint64_t tn_icur[TN_IDEM_STRIPES];
    struct tn_idem_out *tn_ibuf;
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

static void set_up(bool up)
{
    ck_pr_store_int(&S.db_up, up);
    metrics_set_pg_up(up);
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
    S.conninfo = cfg->db;
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
        free(p->spill.buf);
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

static PGconn *connect_blocking(void)
{
    const char *kw[] = {"dbname", "fallback_application_name", NULL};
    const char *vals[] = {S.conninfo, S.appname, NULL};
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

    r = PQexecParams(c, "SELECT coalesce(max(flush_seq), 0) FROM rc_flush_ledger WHERE node_id = $1",
                     1, NULL, pv, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK)
        goto bad;
    S.next_seq = strtoull(PQgetvalue(r, 0, 0), NULL, 10) + 1;
    PQclear(r);

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
             LOG_U("next_flush_seq", S.next_seq));
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

/* Pop one record into out (>= USERS_ID_MAX): its length, JR_MARKER, or -1 if empty. */
static int jring_pop(struct jring *j, char *out)
{
    uint32_t head = j->head;
    if (head == ck_pr_load_32(&j->tail))
        return -1;
    ck_pr_fence_load();
    char hdr[2] = {j->buf[head & j->mask], j->buf[(head + 1) & j->mask]};
    uint16_t len;
    memcpy(&len, hdr, 2);
    size_t n = len == JR_MARKER ? 0 : len;
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
static void spill_move(struct pworker *p)
{
    size_t off = 0;
    while (off < p->spill.len) {
        uint16_t len;
        memcpy(&len, p->spill.buf + off, 2);
        size_t n = len == JR_MARKER ? 0 : len;
        if (!jring_push(&p->j, p->spill.buf + off + 2, n, len))
            break;
        off += 2 + n;
    }
    if (off) {
        memmove(p->spill.buf, p->spill.buf + off, p->spill.len - off);
        p->spill.len -= off;
    }
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
    if (p->spill.len == 0 && jring_push(&p->j, s, n, len))
        return;
    /* Ring full (the persister is behind by 256 KiB): keep the record, in order. Memory only
       grows with distinct new users, which is the bound SPEC §4 allows. */
    if (bytes_reserve(&p->spill, 2 + n) == 0) {
        memcpy(p->spill.buf + p->spill.len, &len, 2);
        if (n)
            memcpy(p->spill.buf + p->spill.len + 2, s, n);
        p->spill.len += 2 + n;
    } else {
        log_error("out of memory: a new user id will not be persisted");
    }
}

bool persist_w_batch_end(unsigned w)
{
    if (!S.enabled)
        return false;
    struct pworker *p = &S.pw[w];
    if (p->spill.len)
        spill_move(p);
    if (!p->want_wake)
        return false;
    p->want_wake = false;
    /* Full fence: what we queued must be visible before we test the flag the persister clears
       before it drains (as users.c's want_wake). */
    ck_pr_fence_memory();
    return ck_pr_load_32(&S.wake_pending) == 0 && ck_pr_cas_32(&S.wake_pending, 0, 1);
}

/* ------------------------------------------------------------------ stats */

uint64_t persist_pending_keys(void)
{
    return ck_pr_load_64(&S.pending_keys);
}

size_t persist_stats_json(char *out, size_t cap)
{
    if (!S.enabled)
        return (size_t)snprintf(out, cap,
                                "{\"mode\":\"none\",\"dbUp\":false,\"lastFlushAgeMs\":null,"
                                "\"pendingKeys\":0,\"flushes\":0,\"flushErrors\":0,"
                                "\"persistedTotalRequests\":0}");
    uint64_t last = ck_pr_load_64(&S.last_flush_ms), now = mono_ms();
    char age[24];
    if (last)
        snprintf(age, sizeof(age), "%llu", (unsigned long long)(now > last ? now - last : 0));
    else
        snprintf(age, sizeof(age), "null");
    int n = snprintf(out, cap,
                     "{\"mode\":\"postgresql\",\"dbUp\":%s,\"lastFlushAgeMs\":%s,\"pendingKeys\":%llu,"
                     "\"flushes\":%llu,\"flushErrors\":%llu,\"persistedTotalRequests\":%llu}",
                     ck_pr_load_int(&S.db_up) ? "true" : "false", age,
                     (unsigned long long)ck_pr_load_64(&S.pending_keys),
                     (unsigned long long)ck_pr_load_64(&S.flushes),
                     (unsigned long long)ck_pr_load_64(&S.flush_errors),
                     (unsigned long long)ck_pr_load_64(&S.persisted_total));
    return n < 0 ? 0 : (size_t)n < cap ? (size_t)n : cap - 1;
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

static void drain_journals(void)
{
    char buf[USERS_ID_MAX + 2];
    bool gone = ck_pr_load_8((uint8_t *)&S.workers_gone);
    for (unsigned w = 0; w < S.n; w++) {
        struct pworker *p = &S.pw[w];
        if (gone && p->spill.len) /* the workers are joined: their spills are ours to read */
            spill_move(p);
        for (;;) {
            int len = jring_pop(&p->j, buf);
            if (len < 0 && gone && p->spill.len) {
                spill_move(p); /* more spilled records fit now that the ring is drained */
                len = jring_pop(&p->j, buf);
            }
            if (len < 0)
                break;
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
     " INSERT INTO rc_flush_ledger (node_id, flush_seq, counter_after)"
     " VALUES ($1::integer, $2::bigint, (SELECT v FROM c)) RETURNING counter_after",
     3},
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
    {"rc_prune", "DELETE FROM rc_flush_ledger WHERE node_id = $1::integer AND flush_seq < $2::bigint",
     2},
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
     "SELECT counter_after FROM rc_flush_ledger WHERE node_id = $1::integer AND flush_seq = $2::bigint",
     2},
};
#define NSTMTS (sizeof(STMTS) / sizeof(STMTS[0]))

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
    bool was_up = ck_pr_load_int(&S.db_up);
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
    const char *kw[] = {"dbname", "fallback_application_name", NULL};
    const char *vals[] = {S.conninfo, S.appname, NULL};
    S.conn = PQconnectStartParams(kw, vals, 1);
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
    bool ok = PQsendQueryParams(S.conn, "SET synchronous_commit = on", 0, NULL, NULL, NULL, NULL,
                                0) &&
              q_push(Q_SET);
    for (size_t i = 0; ok && i < NSTMTS; i++)
        ok = PQsendPrepare(S.conn, STMTS[i].name, STMTS[i].sql, STMTS[i].nparams, NULL) &&
             q_push(Q_PREP);
    if (!ok || !send_sync()) {
        conn_drop(now, "setup");
        return;
    }
    out_flush(now);
}

static void send_check(uint64_t now)
{
    S.nq = 0;
    begin_exchange(X_CHECK, now);
    const char *v[2] = {S.f.p_node, S.f.p_seq};
    if (!send_prepared(Q_CHECK, "rc_check", 2, v) || !send_sync()) {
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
    const char *lv[3] = {f->p_node, f->p_seq, f->p_cd};
    const char *ev[3] = {f->p_node, f->p_ev, f->p_sum};
    const char *uv[1] = {f->users.buf};
    const char *pv[2] = {f->p_node, f->p_prune};
    bool ok = PQsendQueryParams(S.conn, "BEGIN", 0, NULL, NULL, NULL, NULL, 0) && q_push(Q_BEGIN);
    ok = ok && send_prepared(Q_LEDGER, "rc_ledger", 3, lv);
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
    if (f->prune)
        ok = ok && send_prepared(Q_PRUNE, "rc_prune", 2, pv);
    if (f->prune && S.tn)
        ok = ok && send_prepared(Q_PRUNE, "rc_tn_exp", 0, NULL);
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

/* The tenant part of a flush, from what the database holds (S.tn_*): new idempotency records
   (collected first: their increments are then in the value snapshot taken after), new tenants,
   new counters, and every counter whose live value moved (Σ per-worker deltas and base, minus
   the committed value), sorted by id. Scans every counter: 1M counters × 4 workers ≈ 4M loads,
   a few ms per flush at the store's bound; a few thousand counters cost microseconds. */
static int build_tenants(struct flush *f)
{
    f->tn = false;
    f->ntnd = 0;
    f->j_t.len = f->j_c.len = f->j_d.len = f->j_i.len = 0;
    if (!S.tn)
        return 0;
    if (!S.tn_ibuf && !(S.tn_ibuf = malloc(IDEM_PER_FLUSH * sizeof(*S.tn_ibuf))))
        return -ENOMEM;
    memcpy(f->tn_icur, S.tn_icur, sizeof(f->tn_icur));
    uint64_t lost = 0;
    size_t ni = tn_idem_collect(S.tn, f->tn_icur, S.tn_ibuf, IDEM_PER_FLUSH, &lost);
    if (lost) {
        S.tn_ilost += lost;
        log_warn("idempotency records overwritten before being persisted (ring full)",
                 LOG_U("records", lost), LOG_U("total", S.tn_ilost));
    }
    ck_pr_fence_load();
    uint32_t nt, nc, nidem;
    tn_sizes(S.tn, &nt, &nc, &nidem);
    f->tn_nt = nt;
    f->tn_nc = nc;
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
    for (uint32_t i = 0; i < nc; i++) {
        const struct tn_counter *c = tn_counter_at(S.tn, i);
        uint64_t live = (uint64_t)tn_counter_value_stable(S.tn, c);
        if (live != S.tn_wm[i])
            f->tnd[f->ntnd++] = (struct tnd){.idx = i, .live = live, .id = c->id};
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

/* Snapshot the slots into S.f. Returns true if there is anything to send. */
static bool build_flush(uint64_t now)
{
    struct flush *f = &S.f;
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
    /* Idle: one empty flush a second anyway (HEARTBEAT_MS) keeps lastFlushAgeMs meaningful,
       notices a dead connection, and refreshes the committed value other nodes move. */
    bool heartbeat = now - S.last_success_ms >= HEARTBEAT_MS;
    if (!f->counter && !f->events && !f->reset && !f->nusers && !f->ncl && !f->tn && !heartbeat)
        return false;
    snprintf(f->p_node, sizeof(f->p_node), "%u", S.node_id);
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
    ck_pr_store_64(&S.flush_errors, S.flush_errors + 1);
    metrics_flush_failed();
    log_rl(&S.rl_err, now, 3, 10000, LOG_ERROR, "flush failed (rolled back, will retry)",
           LOG_S("sqlstate", S.r.sqlstate), LOG_S("error", S.r.msg));
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
                 LOG_B("resolving_flush", S.f.st == F_UNKNOWN));
        if (S.f.st == F_UNKNOWN)
            send_check(now);
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
            /* Our (node_id, flush_seq) is already in the ledger: an earlier attempt of this very
               flush committed after all. Read its result instead of applying it again. */
            S.f.st = F_UNKNOWN;
            send_check(now);
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

static bool urgent(void)
{
    return ck_pr_load_64(&S.inflight) > 0 || S.ncl > 0 || S.nrs > 0 || S.stopping;
}

uint32_t persist_p_run(uint64_t now, unsigned revents)
{
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
    if (S.cst == C_CONNECTING && now - S.cst_since > CONNECT_TIMEOUT_MS)
        conn_drop(now, "connect timeout");
    if (S.x != X_NONE && !S.hold_until && now - S.x_since > STALL_MS)
        conn_drop(now, "no answer");

    if (S.cst == C_READY && S.x == X_NONE) {
        if (S.f.st == F_UNKNOWN) {
            send_check(now);
        } else if (now >= S.next_due || urgent()) {
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
    if (S.stopping && !S.finished && now >= S.deadline) {
        publish_pending();
        log_error("final flush incomplete at the shutdown deadline: pending data is lost",
                  LOG_U("pending_keys", S.pending_keys), LOG_B("db_up", S.cst == C_READY));
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

    uint64_t d = 100;
    if (S.cst == C_READY && S.x == X_NONE)
        d = S.next_due > now ? S.next_due - now : 1;
    else if (S.cst == C_DOWN)
        d = S.next_connect > now ? S.next_connect - now : 1;
    if (S.hold_until)
        d = S.hold_until > now ? S.hold_until - now : 1;
    if (d > 100)
        d = 100;
    return d ? (uint32_t)d : 1;
}
