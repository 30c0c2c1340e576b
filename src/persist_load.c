/* persist_load — see persist_int.h: start-up on main (connect, migrate, end orphaned backends,
   replay a spill file, load the state). */

#include <errno.h>
#include <stdlib.h>
#include <unistd.h>

#include "clock.h"
#include "counters.h"
#include "fmt.h"
#include "json.h"
#include "metrics.h"
#include "persist_int.h"
#include "spill.h"
#include "tnkeys.h"
#include "users.h"

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
    /* v4 (SPEC §2.3 with --db: PostgreSQL is the source of truth of tenant counters). Deletes
       are soft (the change feed must see them) and labels unique among live rows: a tenant's
       label on any node, a counter's within its tenant (older duplicate counter labels get
       their id's first 8 characters appended). txid: the transaction that last wrote the row,
       which the change feed reads by (rc_tn_feed). */
    "ALTER TABLE rc_tenants ADD COLUMN deleted boolean NOT NULL DEFAULT false,"
    "  ADD COLUMN txid xid8 NOT NULL DEFAULT pg_current_xact_id();"
    "ALTER TABLE rc_tenants DROP CONSTRAINT rc_tenants_label_key;"
    "CREATE UNIQUE INDEX rc_tenants_label ON rc_tenants (label) WHERE NOT deleted;"
    "CREATE INDEX rc_tenants_txid ON rc_tenants (txid);"
    "ALTER TABLE rc_tenant_counters ADD COLUMN deleted boolean NOT NULL DEFAULT false,"
    "  ADD COLUMN txid xid8 NOT NULL DEFAULT pg_current_xact_id();"
    "UPDATE rc_tenant_counters c SET label = left(c.label, 246) || '-' || left(c.id::text, 8)"
    "  WHERE c.label IS NOT NULL AND EXISTS (SELECT 1 FROM rc_tenant_counters o"
    "  WHERE o.tenant_id = c.tenant_id AND o.label = c.label"
    "  AND (o.created_at, o.id) < (c.created_at, c.id));"
    "CREATE UNIQUE INDEX rc_tenant_counters_label ON rc_tenant_counters (tenant_id, label)"
    "  WHERE NOT deleted;"
    "CREATE INDEX rc_tenant_counters_txid ON rc_tenant_counters (txid);"
    /* POST /reset clears the cluster: every reset flush bumps this epoch, and every node that
       sees it move (the change feed, --sync-ms) clears its own aggregates too */
    "INSERT INTO rc_meta VALUES ('reset_epoch', 0);"
    "ALTER TABLE rc_flush_ledger ADD COLUMN epoch bigint;",
    /* v5: the history of tenant counters (issue 12): every increment's delta also lands in a
       minute, an hour and a day bucket (t: the bucket's start). One partition per UTC day
       holds all three bucket rows of that day, so retention (--history-days) drops whole
       partitions instead of DELETEing rows. */
    "CREATE TABLE rc_tn_history (counter_id uuid NOT NULL, bucket text NOT NULL,"
    "  t timestamptz NOT NULL, delta bigint NOT NULL, PRIMARY KEY (counter_id, bucket, t))"
    "  PARTITION BY RANGE (t);"
    "CREATE FUNCTION rc_tn_history_part(day_ms bigint) RETURNS void LANGUAGE plpgsql AS $f$"
    " DECLARE d timestamptz := to_timestamp(day_ms / 1000.0);"
    " n text := 'rc_tn_history_' || to_char(d AT TIME ZONE 'UTC', 'YYYYMMDD');"
    " BEGIN IF to_regclass(n) IS NULL THEN"
    "  EXECUTE format('CREATE TABLE %I PARTITION OF rc_tn_history FOR VALUES FROM (%L) TO (%L)',"
    "   n, d, d + interval '1 day');"
    " END IF; END $f$;"
    "CREATE FUNCTION rc_tn_history_prune(before_ms bigint) RETURNS integer LANGUAGE plpgsql AS $f$"
    " DECLARE r record; k integer := 0;"
    " lim text := 'rc_tn_history_' || to_char(to_timestamp(before_ms / 1000.0) AT TIME ZONE 'UTC',"
    "  'YYYYMMDD');"
    " BEGIN FOR r IN SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
    "  WHERE i.inhparent = 'rc_tn_history'::regclass AND c.relname < lim LOOP"
    "  EXECUTE format('DROP TABLE %I', r.relname); k := k + 1;"
    " END LOOP; RETURN k; END $f$;",
    /* v6 (SPEC §2.3, tenant keys): only the SHA-256 verifier of a key's secret is stored;
       revocation is a soft delete the change feed reads by txid */
    "CREATE TABLE rc_tenant_keys (id uuid PRIMARY KEY,"
    "  tenant_id uuid NOT NULL REFERENCES rc_tenants, verifier bytea NOT NULL,"
    "  scopes integer NOT NULL, expires_at timestamptz, created_at timestamptz NOT NULL,"
    "  deleted boolean NOT NULL DEFAULT false,"
    "  txid xid8 NOT NULL DEFAULT pg_current_xact_id());"
    "CREATE INDEX rc_tenant_keys_txid ON rc_tenant_keys (txid);",
    /* v7: listings are read from PostgreSQL (a node caches only some counters), a page at a
       time by (created_at, id) after the cursor's: an index range scan, not a sort of every
       row of the tenant */
    "CREATE INDEX rc_tenants_created ON rc_tenants (created_at, id) WHERE NOT deleted;"
    "CREATE INDEX rc_tenant_counters_created ON rc_tenant_counters (tenant_id, created_at, id)"
    "  WHERE NOT deleted;",
    /* v8: history keeps minute rows only (hours and days are summed from them when read, and
       every increment always wrote its minute row too): the hour and day rows go */
    "DELETE FROM rc_tn_history WHERE bucket <> 'm';",
};
#define NMIGRATIONS (sizeof(MIGRATIONS) / sizeof(MIGRATIONS[0]))

/* Run sql; true if it returned want. Logs the error otherwise. */
bool pst_ok_exec(PGconn *c, const char *sql, ExecStatusType want, PGresult **out)
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

void pst_quiet_notice(void *arg, const char *msg);


void pst_conn_kw_fill(struct conn_kw *k)
{
    uint32_t idle = pst.db_timeout_ms / 2000u;
    snprintf(k->idle, sizeof(k->idle), "%u", idle ? idle : 1u);
    snprintf(k->tut, sizeof(k->tut), "%u", pst.db_timeout_ms);
    const char *kw[] = {"keepalives", "keepalives_idle", "keepalives_interval", "keepalives_count",
                        "tcp_user_timeout", "dbname", "fallback_application_name", NULL};
    const char *vals[] = {"1", k->idle, "1", "3", k->tut, pst.conninfo, pst.appname, NULL};
    memcpy(k->kw, kw, sizeof(kw));
    memcpy(k->vals, vals, sizeof(vals));
}

static PGconn *connect_blocking(void)
{
    struct conn_kw k;
    pst_conn_kw_fill(&k);
    const char *const *kw = k.kw, *const *vals = k.vals;
    uint64_t until = clock_ms(CLOCK_MONOTONIC) + LOAD_RETRY_MS;
    for (;;) {
        PGconn *c = PQconnectdbParams(kw, vals, 1);
        if (c && PQstatus(c) == CONNECTION_OK) {
            PQsetNoticeProcessor(c, pst_quiet_notice, NULL);
            return c;
        }
        char err[256];
        snprintf(err, sizeof(err), "%s", c ? PQerrorMessage(c) : "out of memory");
        err[strcspn(err, "\n")] = 0;
        PQfinish(c);
        if (clock_ms(CLOCK_MONOTONIC) >= until) {
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
    if (!pst_ok_exec(c, "SELECT pg_advisory_lock(" ADVISORY_KEY ")", PGRES_TUPLES_OK, NULL))
        return -EIO;
    int rc = -EIO;
    if (!pst_ok_exec(c, "CREATE TABLE IF NOT EXISTS rc_schema (version integer NOT NULL)",
                 PGRES_COMMAND_OK, NULL) ||
        !pst_ok_exec(c, "SELECT coalesce(max(version), 0) FROM rc_schema", PGRES_TUPLES_OK, &r))
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
        if (!pst_ok_exec(c, "BEGIN", PGRES_COMMAND_OK, NULL))
            goto out;
        if (!pst_ok_exec(c, MIGRATIONS[v - 1], PGRES_COMMAND_OK, NULL) ||
            !pst_ok_exec(c, ins, PGRES_COMMAND_OK, NULL) ||
            !pst_ok_exec(c, "COMMIT", PGRES_COMMAND_OK, NULL)) {
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
    snprintf(node, sizeof(node), "%u", pst.node_id);
    const char *pv[1] = {node};
    PGresult *r;

    /* Resets up to this epoch are in what is loaded below; later ones are adopted. Read first:
       a reset committed between it and the loads is then adopted, not lost. */
    if (!pst_ok_exec(c, "SELECT v FROM rc_meta WHERE k = 'reset_epoch'", PGRES_TUPLES_OK, &r))
        return -EIO;
    pst.reset_epoch = PQntuples(r) ? strtoull(PQgetvalue(r, 0, 0), NULL, 10) : 0;
    PQclear(r);
    if (!pst_ok_exec(c, "SELECT v FROM rc_counters WHERE k = '" COUNTER_KEY "'", PGRES_TUPLES_OK, &r))
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
        if (fmt_parse_i128(PQgetvalue(r, 0, 1), &sum) < 0)
            goto bad;
    }
    PQclear(r);

    /* A new incarnation: flush_seq restarts at 1 under a ledger key no earlier process used
       (its last flush may still commit from an orphaned backend after this load). */
    if (!pst_ok_exec(c, "SELECT nextval('rc_incarnation')", PGRES_TUPLES_OK, &r))
        return -EIO;
    pst.incarnation = strtoull(PQgetvalue(r, 0, 0), NULL, 10);
    PQclear(r);
    pst.next_seq = 1;

    /* The user set, 100,000 rows per round trip through a binary cursor (raw bytea bytes). */
    if (!pst_ok_exec(c, "BEGIN", PGRES_COMMAND_OK, NULL) ||
        !pst_ok_exec(c, "DECLARE rc_u BINARY NO SCROLL CURSOR FOR SELECT id FROM rc_users",
                 PGRES_COMMAND_OK, NULL))
        return -EIO;
    for (;;) {
        if (!pst_ok_exec(c, "FETCH FORWARD 100000 FROM rc_u", PGRES_TUPLES_OK, &r))
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
    if (!pst_ok_exec(c, "COMMIT", PGRES_COMMAND_OK, NULL))
        return -EIO;

    /* This node's totals continue in slot 0; the watermark says they are already committed. */
    struct cnt_slot *s0 = cnt_slot(0);
    s0->events = total;
    s0->sum_lo = (uint64_t)sum;
    s0->sum_hi = (uint64_t)((unsigned __int128)sum >> 64);
    pst.pw[0].wm_ev = total;
    pst.pw[0].wm_sum = sum;
    pst.persisted_total = total;
    pst_publish(counter, counter);
    log_info("loaded from PostgreSQL", LOG_I("counter", counter), LOG_U("events", total),
             LOG_U("incarnation", pst.incarnation));
    return 0;
bad:
    log_error("PostgreSQL load failed", LOG_S("error", PQresultErrorMessage(r)));
    PQclear(r);
    return -EIO;
}

/* Make pst.tn_wm hold n counters (new ones 0: a new row is inserted with value 0). */
int pst_wm_reserve(size_t n)
{
    if (n <= pst.tn_capwm)
        return 0;
    size_t nc = pst.tn_capwm ? pst.tn_capwm : 1024;
    while (nc < n)
        nc *= 2;
    uint64_t *nw = realloc(pst.tn_wm, nc * sizeof(*nw));
    if (!nw)
        return -ENOMEM;
    memset(nw + pst.tn_capwm, 0, (nc - pst.tn_capwm) * sizeof(*nw));
    pst.tn_wm = nw;
    pst.tn_capwm = nc;
    return 0;
}

static bool parse_id(PGresult *r, int row, int col, uint8_t id[16])
{
    return !PQgetisnull(r, row, col) &&
           uuid_parse(PQgetvalue(r, row, col), (size_t)PQgetlength(r, row, col), id) == 0;
}

/* The live keys of live tenants (rc_tenant_keys, schema v5), in creation order, into pst.tnk:
   rows of the change feed's shape (pst_tn_key_row). */
static int load_keys(PGconn *c)
{
    PGresult *r = NULL;
    uint32_t nk = 0, skipped = 0;
    if (!pst_ok_exec(c, "SELECT 'k', k.id::text, k.tenant_id::text, encode(k.verifier, 'hex'),"
                    " k.scopes::text, coalesce((extract(epoch FROM k.expires_at) * 1000)::bigint,"
                    " 0)::text, (extract(epoch FROM k.created_at) * 1000)::bigint::text, false"
                    " FROM rc_tenant_keys k JOIN rc_tenants t ON t.id = k.tenant_id"
                    " WHERE NOT k.deleted AND NOT t.deleted ORDER BY k.created_at, k.id",
                    PGRES_TUPLES_OK, &r))
        return -EIO;
    for (int i = 0; i < PQntuples(r); i++) {
        if (pst_tn_key_row(r, i) < 0)
            skipped++;
        else
            nk++;
    }
    PQclear(r);
    log_info("tenant keys loaded", LOG_U("keys", nk), LOG_U("skipped", skipped));
    return 0;
}

/* Live tenants and their counters, up to the cache bounds. Creation order is kept (ORDER BY
   created_at, id), so list pages read the same after a restart. (A keyed replay after a
   restart still returns the first result: PostgreSQL answers it, SPEC §2.3.) */
static int load_tenants(PGconn *c)
{
    PGresult *r = NULL;
    uint32_t nt = 0, nc = 0, skipped = 0;
    if (!pst_ok_exec(c, "SELECT id::text, label, (extract(epoch FROM created_at) * 1000)::bigint"
                    " FROM rc_tenants WHERE NOT deleted ORDER BY created_at, id", PGRES_TUPLES_OK, &r))
        return -EIO;
    for (int i = 0; i < PQntuples(r); i++) {
        uint8_t id[16];
        const struct tn_tenant *t;
        if (!parse_id(r, i, 0, id) ||
            tn_tenant_restore(pst.tn, id, PQgetvalue(r, i, 1), (size_t)PQgetlength(r, i, 1),
                              strtoll(PQgetvalue(r, i, 2), NULL, 10), &t) < 0)
            skipped++;
        else
            nt++;
    }
    PQclear(r);
    if (!pst_ok_exec(c, "SELECT id::text, tenant_id::text, label, value, max_delta,"
                    " (extract(epoch FROM created_at) * 1000)::bigint FROM rc_tenant_counters"
                    " WHERE NOT deleted ORDER BY created_at, id", PGRES_TUPLES_OK, &r))
        return -EIO;
    for (int i = 0; i < PQntuples(r); i++) {
        uint8_t id[16], tid[16];
        const struct tn_tenant *t;
        const struct tn_counter *k;
        bool nolabel = PQgetisnull(r, i, 2);
        if (!parse_id(r, i, 0, id) || !parse_id(r, i, 1, tid) || !(t = tn_tenant_find(pst.tn, tid)) ||
            tn_counter_restore(pst.tn, t, id, nolabel ? NULL : PQgetvalue(r, i, 2),
                               nolabel ? 0 : (size_t)PQgetlength(r, i, 2),
                               strtoll(PQgetvalue(r, i, 3), NULL, 10),
                               strtoll(PQgetvalue(r, i, 4), NULL, 10),
                               strtoll(PQgetvalue(r, i, 5), NULL, 10), &k) < 0) {
            skipped++;
            continue;
        }
        if (pst_wm_reserve(k->idx + 1u) < 0) {
            PQclear(r);
            return -ENOMEM;
        }
        pst.tn_wm[k->idx] = (uint64_t)tn_counter_value(pst.tn, k);
        nc++;
    }
    PQclear(r);
    /* Idempotency records are not loaded: with --db a keyed increment is decided in
       PostgreSQL (rc_tn_key reads rc_idempotency there), never from the node's store. */
    uint32_t idem;
    tn_sizes(pst.tn, &pst.tn_nt, &pst.tn_nc, &idem);
    tn_idem_cursor(pst.tn, pst.tn_icur); /* what was loaded is in the database already */
    if (skipped)
        log_warn("tenant rows not loaded (malformed, orphaned or over the store's bounds)",
                 LOG_U("rows", skipped));
    log_info("tenant counters loaded from PostgreSQL", LOG_U("tenants", nt), LOG_U("counters", nc));
    return 0;
}

/* Backends left by an earlier process of this node (killed while a flush was open, or a
   stalled exchange it dropped) would commit after this load, so the values loaded would miss
   them: terminate them and wait (up to 5 s each) until they are gone before reading anything.
   Matched by application_name, which is this node's (ringcount-node-N) unless --db sets one,
   in this database only (other deployments sharing the cluster have their own node 1). */
static int end_orphans(PGconn *c)
{
    /* the name the server has for us: ours (ringcount-node-N) unless the conninfo sets one */
    const char *app = PQparameterStatus(c, "application_name");
    const char *pv[1] = {app && *app ? app : pst.appname};
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
                 LOG_S("backends", PQgetvalue(r, 0, 0)), LOG_S("application_name", pv[0]));
    }
    PQclear(r);
    return 0;
}

static int replay_spill(PGconn *c);

int persist_load(void)
{
    if (!pst.enabled)
        return 0;
    uint64_t t0 = clock_ms(CLOCK_MONOTONIC);
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
    if (rc == 0 && pst.tn)
        rc = pst_tn_feed_init(c); /* before the load: what commits during it is fed later */
    if (rc == 0 && pst.tn)
        rc = load_tenants(c);
    if (rc == 0 && pst.tnk)
        rc = load_keys(c);
    PQfinish(c);
    if (rc == 0) {
        log_info("start-up load done", LOG_U("users", nusers), LOG_U("users_overflow", nover),
                 LOG_U("load_ms", clock_ms(CLOCK_MONOTONIC) - t0));
        pst.last_flush_ms = 0;
    }
    return rc;
}

/* ------------------------------------------------------------------ start-up: spill replay */

/* One spill record (a flush), its text parameters NUL-terminated (copies). */
struct srec {
    bool reset;
    char *seq, *cd, *ev, *sum, *users, *jt, *jc, *jd, *ji, *keys;
    char *hm; /* its history minute, unix ms ("": none, or a version 1 record) */
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

/* A record's history minute: empty, or unix ms as digits (at most 18: year 33658). */
static bool srec_ms_ok(const char *s)
{
    size_t n = strspn(s, "0123456789");
    return s[n] == 0 && n <= 18;
}

static void srec_free(struct srec *r)
{
    char **f[] = {&r->seq, &r->cd, &r->ev, &r->sum, &r->users, &r->jt, &r->jc, &r->jd, &r->ji,
                  &r->keys, &r->hm};
    for (size_t i = 0; i < sizeof(f) / sizeof(f[0]); i++)
        free(*f[i]);
}

/* Run one named statement with text parameters; true if it succeeded. *dup: it failed with
   a unique violation (23505). Logs other failures. */
/* The last replay failure: its SQLSTATE and message (for rc_rejected). */
static char replay_state[6], replay_msg[160];

static bool replay_exec(PGconn *c, const char *name, int n, const char *const *v, bool *dup)
{
    PGresult *r = PQexecParams(c, pst_stmt_sql(name), n, NULL, v, NULL, NULL, 0);
    ExecStatusType st = PQresultStatus(r);
    bool ok = st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK;
    if (!ok) {
        const char *ss = PQresultErrorField(r, PG_DIAG_SQLSTATE);
        snprintf(replay_state, sizeof(replay_state), "%s", ss ? ss : "");
        pst_copy_msg(replay_msg, sizeof(replay_msg), PQresultErrorMessage(r));
        if (dup && ss && strcmp(ss, "23505") == 0)
            *dup = true;
        else
            log_error("spill replay statement failed", LOG_S("statement", name),
                      LOG_S("sqlstate", replay_state), LOG_S("error", replay_msg));
    }
    PQclear(r);
    return ok;
}

/* A JSON string of s (escaped) appended to b; false when out of memory. */
static bool json_str_put(struct bytes *b, const char *s)
{
    size_t n = strlen(s);
    if (pst_bytes_reserve(b, 6 * n + 3) < 0)
        return false;
    b->buf[b->len++] = '"';
    ssize_t k = json_escape(b->buf + b->len, b->cap - b->len, s, n);
    if (k < 0)
        return false;
    b->len += (size_t)k;
    b->buf[b->len++] = '"';
    b->buf[b->len] = 0;
    return true;
}

/* A record that fails deterministically on replay (a constraint, a bad value: it would fail
   at every start) is not left to block the node for ever: the whole record goes to
   rc_rejected with its error, in one transaction with its ledger row (so a restart skips it
   like an applied one). 0, or -EIO (the database could not take even that). */
static int replay_reject(PGconn *c, const char *node, const char *inc, const struct srec *r)
{
    static const char *const names[] = {"seq", "cd", "ev", "sum", "users", "tenants",
                                        "counters", "deltas", "idempotency", "keys",
                                        "history_minute_ms"};
    const char *vals[] = {r->seq, r->cd, r->ev, r->sum, r->users, r->jt, r->jc, r->jd, r->ji,
                          r->keys, r->hm};
    struct bytes p = {0};
    bool ok = pst_bytes_reserve(&p, 64) == 0;
    if (ok)
        p.len = (size_t)snprintf(p.buf, p.cap, "{\"reset\":%s", r->reset ? "true" : "false");
    for (size_t i = 0; ok && i < sizeof(names) / sizeof(names[0]); i++) {
        ok = pst_bytes_reserve(&p, strlen(names[i]) + 4) == 0;
        if (ok)
            p.len += (size_t)snprintf(p.buf + p.len, p.cap - p.len, ",\"%s\":", names[i]);
        ok = ok && json_str_put(&p, vals[i]);
    }
    ok = ok && pst_bytes_reserve(&p, 2) == 0;
    if (ok) {
        p.buf[p.len++] = '}';
        p.buf[p.len] = 0;
    }
    char st[6], msg[160];
    memcpy(st, replay_state, sizeof(st));
    memcpy(msg, replay_msg, sizeof(msg));
    const char *lv[4] = {node, r->seq, "0", inc};
    const char *rv[6] = {node, "spill_record", NULL, p.buf, st, msg};
    int rc = -EIO;
    if (ok && pst_ok_exec(c, "BEGIN", PGRES_COMMAND_OK, NULL) &&
        replay_exec(c, "rc_ledger", 4, lv, NULL) && replay_exec(c, "rc_reject", 6, rv, NULL) &&
        pst_ok_exec(c, "COMMIT", PGRES_COMMAND_OK, NULL)) {
        log_error("spill record rejected by the database: written whole to rc_rejected",
                  LOG_S("flush_seq", r->seq), LOG_S("sqlstate", st), LOG_S("error", msg));
        metrics_flush_rejected(1);
        rc = 0;
    } else {
        PQclear(PQexec(c, "ROLLBACK"));
    }
    free(p.buf);
    return rc;
}

/* Apply one record in its own transaction, keyed in the ledger under the spilling process's
   incarnation: a record already committed (by this replay before a crash, or because its flush
   committed after all) is skipped. 1 applied, 0 already there, -EIO. */
static int replay_record(PGconn *c, const char *node, const char *inc, const struct srec *r)
{
    bool dup = false;
    const char *lv[4] = {node, r->seq, r->cd, inc};
    char hm[24], hd[24];
    pst_hist_buckets(*r->hm ? strtoll(r->hm, NULL, 10) : persist_history_now_ms(), hm, hd);
    /* the history partition of the record's day first, on its own: another node making it at
       the same moment fails this (42P07), not the record, and the record's insert then finds it */
    if (*r->jd)
        (void)replay_exec(c, "rc_hist_part", 1, (const char *const[]){hd}, NULL);
    if (!pst_ok_exec(c, "BEGIN", PGRES_COMMAND_OK, NULL))
        return -EIO;
    bool ok = replay_exec(c, "rc_ledger", 4, lv, &dup);
    if (ok && r->reset)
        ok = replay_exec(c, "rc_trunc", 0, NULL, NULL) && replay_exec(c, "rc_meta0", 0, NULL, NULL) &&
             replay_exec(c, "rc_epoch", 3, (const char *const[]){node, r->seq, inc}, NULL);
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
    /* the deltas' history too, in the minute the flush was built (a version 1 record has none:
       the replay's minute; either way the minutes add up to every increment) */
    if (ok && *r->jd)
        ok = replay_exec(c, "rc_tn_hist", 2, (const char *const[]){r->jd, hm}, NULL);
    const char *kn[2] = {node, r->keys}, *kv[1] = {r->keys};
    if (ok && *r->keys)
        ok = replay_exec(c, "rc_key_ins", 2, kn, NULL) && replay_exec(c, "rc_key_val", 1, kv, NULL) &&
             replay_exec(c, "rc_key_get", 1, kv, NULL);
    if (!ok) {
        PQclear(PQexec(c, "ROLLBACK"));
        if (dup)
            return 0;
        /* deterministic (not a lost connection, a timeout, ...): it would fail at every start */
        return replay_state[0] && !pst_transient_state(replay_state) ? replay_reject(c, node, inc, r)
                                                                     : -EIO;
    }
    return pst_ok_exec(c, "COMMIT", PGRES_COMMAND_OK, NULL) ? 1 : -EIO;
}

/* The spill file of an earlier shutdown (SPEC §4), replayed before anything is loaded: decoded
   whole first (a file that does not decode is refused, never half-applied), then record by
   record, then removed. 0 (also: no file) / -EBADMSG (refused: kept, logged) / -EIO. */
static int replay_spill(PGconn *c)
{
    char path[600] = "";
    void *pl = NULL;
    size_t len = 0;
    if (spill_tmp_exists(pst.spill_dir, pst.node_id))
        log_warn("an incomplete spill file (.tmp) is left in --spill-dir: a crash interrupted "
                 "writing it; ignored", LOG_S("spill_dir", pst.spill_dir));
    int rc = spill_read(pst.spill_dir, pst.node_id, &pl, &len, path, sizeof(path));
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
    if (cur.bad || ver < 1 || ver > SPILL_PAYLOAD_VERSION || node != pst.node_id || n > len)
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
        r->hm = ver >= 2 ? srec_str(&cur) : strdup("");
        if (cur.bad || !r->seq || !r->cd || !r->ev || !r->sum || !r->users || !r->jt || !r->jc ||
            !r->jd || !r->ji || !r->keys || !r->hm || !srec_ms_ok(r->hm)) {
            got++;
            goto refuse;
        }
    }
    if (!spill_cur_done(&cur))
        goto refuse;
    char snode[16], sinc[24];
    snprintf(snode, sizeof(snode), "%u", node);
    snprintf(sinc, sizeof(sinc), "%llu", (unsigned long long)inc);
    uint64_t t0 = clock_ms(CLOCK_MONOTONIC);
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
             LOG_U("applied", applied), LOG_U("replay_ms", clock_ms(CLOCK_MONOTONIC) - t0));
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
