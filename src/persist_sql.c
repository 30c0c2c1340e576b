/* persist_sql — see persist_int.h: every statement the persister prepares, by name. */
#include "persist.h"


#include "persist_int.h"

/* ------------------------------------------------------------------ persister: connection */

/* History (schema v5): a delta into its minute, hour and day rows; m, h, d are the parameters
   holding the three buckets' starts (unix ms, computed by the persister's history clock). */
/* An increment's history is its minute's row: hours and days are summed from minutes when
   read (rc_tn_hist_get). Writing all three rows a flush cost 3 upserts per changed counter,
   about 60 % of a flush's time (65,536 counters: 2.8-4.1 s of history, 1.9 s of UPDATE). */
#define HIST_INTO "INSERT INTO rc_tn_history AS h (counter_id, bucket, t, delta) "
#define HIST_MINUTE(m) "'m', to_timestamp(" m "::bigint / 1000.0)"
#define HIST_ADD " ON CONFLICT (counter_id, bucket, t) DO UPDATE SET delta = h.delta + EXCLUDED.delta"

#define TN_MS(a) "(extract(epoch FROM " a ".created_at) * 1000)::bigint::text"
#define TN_T_ROW(a)                                                                             \
    "'t', " a ".id::text, NULL::text, " a ".label, NULL::text, NULL::text, " TN_MS(a) ", " a     \
    ".deleted"
#define TN_C_ROW(a)                                                                             \
    "'c', " a ".id::text, " a ".tenant_id::text, " a ".label, " a ".value::text, " a            \
    ".max_delta::text, " TN_MS(a) ", " a ".deleted"
/* A marker row in the same 8 columns: kind k alone */
#define TN_MARK(k) "'" k "', NULL::text, NULL::text, NULL::text, NULL::text, NULL::text, NULL::text, false"
/* The (created_at, id) a listing of table tab resumes after: the cursor row's (parameter p),
   or before every row when there is no cursor (a cursor of no row: none, so no rows) */
#define TN_AFTER(tab, p)                                                                        \
    "(SELECT a.created_at, a.id FROM " tab " a WHERE a.id = " p "::uuid UNION ALL SELECT"     \
    " '-infinity'::timestamptz, '00000000-0000-0000-0000-000000000000'::uuid WHERE " p        \
    "::uuid IS NULL)"
/* A tenant key in the same 8 columns: verifier (hex) as the label, scopes as the value, expiry
   (unix ms, 0 never) as max_delta; deleted also when its tenant is (del: that flag's SQL). */
#define TN_K_ROW(a, del)                                                                        \
    "'k', " a ".id::text, " a ".tenant_id::text, encode(" a ".verifier, 'hex'), " a             \
    ".scopes::text, coalesce((extract(epoch FROM " a ".expires_at) * 1000)::bigint, 0)::text, " \
    TN_MS(a) ", " del

const struct pst_stmt PST_STMTS[] = {
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
    /* the new epoch is kept in this flush's ledger row too: a flush whose outcome is looked up
       there (rc_check) still tells this node which epoch is its own, not to be adopted */
    {"rc_epoch",
     "WITH e AS (UPDATE rc_meta SET v = v + 1 WHERE k = 'reset_epoch' RETURNING v)"
     " UPDATE rc_flush_ledger l SET epoch = e.v FROM e WHERE l.node_id = $1::integer"
     " AND l.incarnation = $3::bigint AND l.flush_seq = $2::bigint RETURNING l.epoch",
     3},
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
    /* numeric delta: a `set` may move a value by more than an int64 can hold; txid: the
       change feed of the other nodes reads the rows this transaction wrote (rc_tn_feed).
       Summed per id: an evicted counter's record still flushing late increments and the same
       counter cached again can both be in one flush, and UPDATE ... FROM applies one row of
       several that match (the other one's increments would be lost). */
    {"rc_tn_d",
     "UPDATE rc_tenant_counters t SET value = (t.value + x.d)::bigint, txid = pg_current_xact_id()"
     " FROM (SELECT id, sum(d) AS d FROM json_to_recordset($1::json) AS r(id uuid, d numeric)"
     "  GROUP BY id) x WHERE t.id = x.id"
     " RETURNING t.id::text, t.value::text",
     1},
    /* Tenant writes and lookups the database decides (persist_tn.c). Every one answers rows of
       one shape, TN_T_ROW / TN_C_ROW: kind, id, tenant id, label, value, max_delta, created
       (unix ms), deleted. Labels are unique among live rows (partial unique indexes, schema
       v4), so a duplicate on any node fails with 23505. */
    {"rc_tn_mk_t",
     "INSERT INTO rc_tenants AS t (id, label, created_at) VALUES ($1::uuid, $2,"
     " to_timestamp($3::bigint / 1000.0)) RETURNING " TN_T_ROW("t"),
     3},
    {"rc_tn_mk_c",
     "WITH t AS (SELECT * FROM rc_tenants WHERE id = $1::uuid AND NOT deleted FOR SHARE),"
     " c AS (INSERT INTO rc_tenant_counters (id, tenant_id, label, value, max_delta, created_at)"
     "  SELECT $2::uuid, t.id, $3, $4::bigint, $5::bigint, to_timestamp($6::bigint / 1000.0)"
     "  FROM t RETURNING *)"
     " SELECT " TN_T_ROW("t") " FROM t UNION ALL SELECT " TN_C_ROW("c") " FROM c",
     6},
    {"rc_tn_setv",
     "WITH lk AS (SELECT 1 FROM rc_tenants WHERE id = $1::uuid AND NOT deleted FOR SHARE),"
     " c AS (UPDATE rc_tenant_counters c SET value = $3::bigint, txid = pg_current_xact_id()"
     "  FROM rc_tenants t WHERE c.id = $2::uuid AND c.tenant_id = $1::uuid AND NOT c.deleted"
     "  AND t.id = c.tenant_id AND NOT t.deleted AND EXISTS (SELECT 1 FROM lk) RETURNING c.*),"
     " t AS (SELECT * FROM rc_tenants WHERE id = $1::uuid AND EXISTS (SELECT 1 FROM c))"
     " SELECT " TN_T_ROW("t") " FROM t UNION ALL SELECT " TN_C_ROW("c") " FROM c",
     3},
    {"rc_tn_del_c",
     "UPDATE rc_tenant_counters c SET deleted = true, txid = pg_current_xact_id()"
     " WHERE id = $2::uuid AND tenant_id = $1::uuid AND NOT deleted RETURNING " TN_C_ROW("c"),
     2},
    {"rc_tn_del_t",
     "WITH t AS (UPDATE rc_tenants SET deleted = true, txid = pg_current_xact_id()"
     "  WHERE id = $1::uuid AND NOT deleted RETURNING *),"
     " c AS (UPDATE rc_tenant_counters SET deleted = true, txid = pg_current_xact_id()"
     "  WHERE tenant_id IN (SELECT id FROM t) AND NOT deleted RETURNING *)"
     " SELECT " TN_T_ROW("t") " FROM t UNION ALL SELECT " TN_C_ROW("c") " FROM c",
     1},
    /* An Idempotency-Key increment (SPEC §2.3), decided here for every node: the counter row is
       locked (FOR UPDATE: keyed increments of one counter queue up), a new key is inserted
       with the value it makes and the counter moved to it; a key already there is answered
       with its first result ('o' row). 'c' is the counter as locked (none: no such counter). */
    {"rc_tn_key",
     "WITH cur AS (SELECT c.value FROM rc_tenant_counters c JOIN rc_tenants t ON t.id = c.tenant_id"
     "  AND NOT t.deleted WHERE c.id = $2::uuid AND c.tenant_id = $1::uuid AND NOT c.deleted"
     "  FOR UPDATE OF c FOR SHARE OF t),"
     " ins AS (INSERT INTO rc_idempotency (tenant_id, key, counter_id, delta, value, created_at)"
     "  SELECT $1::uuid, $3, $2::uuid, $4::bigint, cur.value + $4::bigint, now() FROM cur"
     "  WHERE cur.value <= 9223372036854775807 - $4::bigint ON CONFLICT DO NOTHING RETURNING value),"
     " hist AS (" HIST_INTO "SELECT $2::uuid, " HIST_MINUTE("$5") ", $4::bigint FROM ins"
     HIST_ADD "),"
     " upd AS (UPDATE rc_tenant_counters c SET value = ins.value, txid = pg_current_xact_id()"
     "  FROM ins WHERE c.id = $2::uuid RETURNING c.value)"
     " SELECT 'n', value::text, NULL, NULL FROM upd"
     " UNION ALL SELECT 'o', i.value::text, i.counter_id::text, i.delta::text FROM rc_idempotency i"
     "  WHERE i.tenant_id = $1::uuid AND i.key = $3 AND NOT EXISTS (SELECT 1 FROM ins)"
     " UNION ALL SELECT 'c', value::text, NULL, NULL FROM cur",
     5},
    /* An increment of a counter the full cache does not hold, made in the database ('c' the
       counter as locked, 'n' its value after; no 'n': past INT64_MAX). */
    {"rc_tn_dbinc",
     "WITH cur AS (SELECT c.value FROM rc_tenant_counters c JOIN rc_tenants t ON t.id = c.tenant_id"
     "  AND NOT t.deleted WHERE c.id = $2::uuid AND c.tenant_id = $1::uuid AND NOT c.deleted"
     "  FOR UPDATE OF c FOR SHARE OF t),"
     " upd AS (UPDATE rc_tenant_counters c SET value = c.value + $3::bigint,"
     "  txid = pg_current_xact_id() FROM cur WHERE c.id = $2::uuid"
     "  AND cur.value <= 9223372036854775807 - $3::bigint RETURNING c.value),"
     " hist AS (" HIST_INTO "SELECT $2::uuid, " HIST_MINUTE("$4") ", $3::bigint FROM upd" HIST_ADD ")"
     " SELECT 'n', value::text, NULL, NULL FROM upd UNION ALL SELECT 'c', value::text, NULL, NULL"
     " FROM cur",
     4},
    /* The flush's increments into the history ($1: its delta rows, as rc_tn_d) */
    {"rc_tn_hist",
     HIST_INTO "SELECT x.id, " HIST_MINUTE("$2") ", sum(x.d)::bigint"
     " FROM json_to_recordset($1::json) AS x(id uuid, d numeric) WHERE x.d > 0 GROUP BY 1" HIST_ADD,
     2},
    {"rc_hist_part", "SELECT rc_tn_history_part($1::bigint)", 1},
    {"rc_hist_prune", "SELECT rc_tn_history_prune($1::bigint)", 1},
    /* GET .../history: 'c' if the counter is live, then its points of buckets $3 ms wide
       starting in [$4, $5) ms (both multiples of $3), at most $6: the sums of its minute rows
       (a day: at most 1,440 rows of one partition, an index range scan) */
    {"rc_tn_hist_get",
     "SELECT 'c', NULL::bigint, NULL::bigint FROM rc_tenant_counters c JOIN rc_tenants t"
     "  ON t.id = c.tenant_id AND NOT t.deleted"
     "  WHERE c.id = $2::uuid AND c.tenant_id = $1::uuid AND NOT c.deleted"
     " UNION ALL (SELECT 'p', (extract(epoch FROM h.t) * 1000)::bigint / $3::bigint * $3::bigint,"
     "  sum(h.delta)::bigint FROM rc_tn_history h WHERE h.counter_id = $2::uuid AND h.bucket = 'm'"
     "  AND h.t >= to_timestamp($4::bigint / 1000.0) AND h.t < to_timestamp($5::bigint / 1000.0)"
     "  GROUP BY 2 ORDER BY 2 LIMIT $6::integer)",
     6},
    /* Listings in creation order, keyset-paginated on (created_at, id) (indexes of schema v7):
       'a' when the cursor $2 names a row of the listing (a deleted one is still a place in
       it), then up to $3 rows after it (the caller asks for one more than a page, to know
       whether another follows); counters come after their tenant's row ('t' only if live). */
    {"rc_tn_list_c",
     "SELECT " TN_T_ROW("t") " FROM rc_tenants t WHERE t.id = $1::uuid AND NOT t.deleted"
     " UNION ALL SELECT " TN_MARK("a") " FROM rc_tenant_counters a"
     "  WHERE a.id = $2::uuid AND a.tenant_id = $1::uuid"
     " UNION ALL (SELECT " TN_C_ROW("c") " FROM rc_tenant_counters c"
     "  WHERE c.tenant_id = $1::uuid AND NOT c.deleted AND (c.created_at, c.id) > " TN_AFTER(
         "rc_tenant_counters", "$2") " ORDER BY c.created_at, c.id LIMIT $3::integer)",
     3},
    {"rc_tn_list_l",
     "SELECT " TN_T_ROW("t") " FROM rc_tenants t WHERE t.id = $1::uuid AND NOT t.deleted"
     " UNION ALL SELECT " TN_C_ROW("c") " FROM rc_tenant_counters c"
     "  WHERE c.tenant_id = $1::uuid AND c.label = $2 AND NOT c.deleted",
     2},
    {"rc_tn_list_t",
     "SELECT " TN_MARK("a") " FROM rc_tenants a WHERE a.id = $1::uuid"
     " UNION ALL (SELECT " TN_T_ROW("t") " FROM rc_tenants t WHERE NOT t.deleted"
     "  AND (t.created_at, t.id) > " TN_AFTER("rc_tenants", "$1")
     " ORDER BY t.created_at, t.id LIMIT $2::integer)",
     2},
    /* $1 every tenant asked for (with those of the counters asked for), $2 the counters asked
       for, $3 the tenants asked for alone (they come with all their live counters) */
    {"rc_tn_look",
     "SELECT " TN_T_ROW("t") " FROM rc_tenants t WHERE t.id = ANY($1::uuid[]) AND NOT t.deleted"
     " UNION ALL SELECT " TN_C_ROW("c") " FROM rc_tenant_counters c JOIN rc_tenants t"
     "  ON t.id = c.tenant_id AND NOT t.deleted"
     " WHERE (c.id = ANY($2::uuid[]) OR c.tenant_id = ANY($3::uuid[])) AND NOT c.deleted",
     3},
    /* The change feed: rows written by transactions >= $1, and the xmin of this statement's
       snapshot: every transaction below it has ended (its rows, if committed, are seen here),
       so the next read starts there and misses nothing, whatever order commits came in. */
    {"rc_tn_feed",
     "SELECT 'x', pg_snapshot_xmin(pg_current_snapshot())::text, NULL, NULL, NULL, NULL, NULL,"
     " false"
     " UNION ALL SELECT " TN_T_ROW("t") " FROM rc_tenants t WHERE t.txid >= $1::xid8"
     " UNION ALL SELECT " TN_C_ROW("c") " FROM rc_tenant_counters c WHERE c.txid >= $1::xid8"
     " UNION ALL SELECT " TN_K_ROW("k", "(k.deleted OR t.deleted)") " FROM rc_tenant_keys k"
     "  JOIN rc_tenants t ON t.id = k.tenant_id WHERE k.txid >= $1::xid8"
     " UNION ALL SELECT 'r', v::text, NULL, NULL, NULL, NULL, NULL, false FROM rc_meta"
     "  WHERE k = 'reset_epoch'",
     1},
    {"rc_tn_i",
     "INSERT INTO rc_idempotency (tenant_id, key, counter_id, delta, value, created_at)"
     " SELECT tid, k, cid, d, v, to_timestamp(ms / 1000.0) FROM json_to_recordset($1::json)"
     " AS x(tid uuid, k text, cid uuid, d bigint, v bigint, ms bigint) ON CONFLICT DO NOTHING",
     1},
    {"rc_tn_exp", "DELETE FROM rc_idempotency WHERE created_at < now() - interval '24 hours'", 0},
    {"rc_check",
     "SELECT counter_after, epoch FROM rc_flush_ledger WHERE node_id = $1::integer AND"
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
    /* Tenant keys (SPEC §2.3): created for a live tenant only, revoked by a soft delete (the
       change feed carries both to every node) */
    {"rc_tn_mk_k",
     "INSERT INTO rc_tenant_keys AS k (id, tenant_id, verifier, scopes, expires_at, created_at)"
     " SELECT $2::uuid, t.id, decode($3, 'hex'), $4::integer,"
     " CASE WHEN $5::bigint = 0 THEN NULL ELSE to_timestamp($5::bigint / 1000.0) END,"
     " to_timestamp($6::bigint / 1000.0) FROM rc_tenants t WHERE t.id = $1::uuid AND NOT t.deleted"
     " RETURNING " TN_K_ROW("k", "k.deleted"),
     6},
    {"rc_tn_del_k",
     "UPDATE rc_tenant_keys k SET deleted = true, txid = pg_current_xact_id()"
     " WHERE id = $2::uuid AND tenant_id = $1::uuid AND NOT deleted RETURNING "
     TN_K_ROW("k", "k.deleted"),
     2},
};
const size_t PST_NSTMTS = sizeof(PST_STMTS) / sizeof(PST_STMTS[0]);

const char *pst_stmt_sql(const char *name)
{
    for (size_t i = 0; i < PST_NSTMTS; i++)
        if (strcmp(PST_STMTS[i].name, name) == 0)
            return PST_STMTS[i].sql;
    return NULL;
}
