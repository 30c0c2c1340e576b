/* persist_tn — see persist_int.h: tenant writes and lookups PostgreSQL decides, and the change
   feed. Persister thread only.

   The node's tn_store is a cache of the database: a record is put in it only from a row the
   database returned (a committed write, a lookup, the feed, the start-up load), and a cached
   counter's value is settled to the database's: base += row value − committed value (pst.tn_wm),
   so what this node counted and has not flushed yet stays on top of it. Exchanges never overlap
   a flush (one connection, one exchange at a time), so the committed value read from a row and
   pst.tn_wm always describe the same set of this node's increments. */

#include <errno.h>
#include <stdlib.h>

#include "barrier.h"
#include "metrics.h"
#include "persist_int.h"
#include "tnkeys.h"
#include "uuid.h"

/* ------------------------------------------------------------------ queue */

static int tq_push(struct tnq **v, size_t *n, size_t *cap, struct tnq e)
{
    if (*n == *cap) {
        size_t nc = *cap ? *cap * 2 : 64;
        struct tnq *nv = realloc(*v, nc * sizeof(*nv));
        if (!nv)
            return -ENOMEM;
        *v = nv;
        *cap = nc;
    }
    (*v)[(*n)++] = e;
    return 0;
}

static void tn_reply(unsigned w, struct persist_tnop *op, int status)
{
    op->status = status;
    pst_reply(w, &(struct persist_reply){.kind = PERSIST_R_TNOP, .token = (uintptr_t)op});
}

void pst_tn_add(unsigned w, struct persist_tnop *op, uint64_t now)
{
    if (!pst.tn) {
        tn_reply(w, op, -EIO);
        return;
    }
    /* the first flush snapshot taken from now on (one in flight was taken before op came) */
    uint64_t seq = pst.build_gen + 1;
    if (tq_push(&pst.tq, &pst.ntq, &pst.captq,
                (struct tnq){.op = op, .w = w, .at_ms = now, .seq = seq}) < 0) {
        log_error("out of memory: a tenant operation is refused");
        tn_reply(w, op, -EIO);
    }
}

bool pst_tn_due(uint64_t now, bool *flush_first)
{
    *flush_first = false;
    if (!pst.tn)
        return false;
    if (ck_pr_load_8((uint8_t *)&pst.workers_gone)) {
        /* shutting down: nobody waits for these any more; the final flush goes first */
        for (size_t i = 0; i < pst.ntq; i++)
            free(pst.tq[i].op);
        pst.ntq = 0;
        return false;
    }
    /* An op older than --durable-timeout-ms was answered 503 by its worker: never run it
       later (a create the client saw fail must not appear after an outage). */
    size_t j = 0;
    for (size_t i = 0; i < pst.ntq; i++) {
        if (now - pst.tq[i].at_ms >= pst.durable_timeout_ms)
            tn_reply(pst.tq[i].w, pst.tq[i].op, -ETIMEDOUT);
        else
            pst.tq[j++] = pst.tq[i];
    }
    pst.ntq = j;
    *flush_first = false;
    /* after a flush built after they came, applied whole: a `set` must not be overtaken by
       increments counted before it, a keyed increment's answer, a history read and a
       listing's values must include them */
    for (size_t i = 0; i < pst.ntq; i++) {
        uint8_t k = pst.tq[i].op->kind;
        *flush_first |= (k == PTN_SET || k == PTN_KEYED_INC || k == PTN_HISTORY ||
                         k == PTN_LIST_COUNTERS) &&
                        pst.tq[i].seq > pst.applied_gen;
    }
    return pst.ntq || (!pst.stopping && now >= pst.feed_at);
}

uint64_t pst_tn_wait(uint64_t now)
{
    if (!pst.tn)
        return UINT64_MAX;
    if (pst.ntq)
        return 0;
    return pst.feed_at > now ? pst.feed_at - now : 0;
}

/* ------------------------------------------------------------------ eviction */

/* tn_evictable_fn: nothing this node counted on c is unflushed (its live value is the
   committed one, pst.tn_wm); a deleted counter's late increments are flushed like any. */
static bool evictable(const struct tn_counter *c, void *arg)
{
    (void)arg;
    return (uint64_t)tn_counter_value_stable(pst.tn, c) == pst.tn_wm[c->idx];
}

/* How many more records to take out of a cache of cached + room + evicting: keep 1/64 of it
   (16..4,096 records, at most half) free or on its way, so a miss is restored at once instead
   of being served by the database until a grace period (<= ~1 s) ends. */
static uint32_t evict_wanted(uint32_t cached, uint32_t room, uint32_t evicting)
{
    uint32_t cap = cached + room + evicting, want = cap / 64;
    want = want < 16 ? 16 : want > TN_EVICT_BATCH ? TN_EVICT_BATCH : want;
    if (want > cap / 2)
        want = cap / 2;
    return room + evicting < want ? want - room - evicting : 0;
}

void pst_tn_evict(void)
{
    if (!pst.tn)
        return;
    (void)tn_reclaim(pst.tn, evictable, NULL);
    struct tn_cache_sizes z;
    tn_cache_sizes(pst.tn, &z);
    uint32_t n = evict_wanted(z.cached, z.room, z.evicting);
    if (n)
        z.evicted += tn_counter_evict(pst.tn, n, evictable, NULL);
    /* a tenant goes once its counters have: those it still has go first (tn_tenant_evict) */
    if ((n = evict_wanted(z.t_cached, z.t_room, z.t_evicting)))
        z.t_evicted += tn_tenant_evict(pst.tn, n, evictable, NULL);
    metrics_tn_cache(z.evicted, z.cached, z.t_evicted, z.t_cached);
}

/* ------------------------------------------------------------------ sending */

int64_t pst_hist_buckets(int64_t t, char *m, char *d)
{
    int64_t day = t - t % 86400000;
    snprintf(m, 24, "%lld", (long long)(t - t % 60000));
    snprintf(d, 24, "%lld", (long long)day);
    return day;
}

/* uuid[] literal of n ids into out (n * 37 + 3 bytes). */
static void id_array(char *out, const uint8_t (*ids)[16], size_t n)
{
    char *o = out;
    *o++ = '{';
    for (size_t i = 0; i < n; i++) {
        if (i)
            *o++ = ',';
        uuid_format(ids[i], o);
        o += UUID_TEXT_LEN;
    }
    *o++ = '}';
    *o = 0;
}

static bool id_in(const uint8_t (*ids)[16], size_t n, const uint8_t id[16])
{
    for (size_t i = 0; i < n; i++)
        if (memcmp(ids[i], id, 16) == 0)
            return true;
    return false;
}

/* The lookups at the front of the queue (up to TN_LOOKUPS_PER_QUERY), in one query. */
static bool send_lookups(void)
{
    static uint8_t all[TN_LOOKUPS_PER_QUERY][16], cids[TN_LOOKUPS_PER_QUERY][16],
        alone[TN_LOOKUPS_PER_QUERY][16];
    static char a1[TN_LOOKUPS_PER_QUERY * 37 + 3], a2[sizeof(a1)], a3[sizeof(a1)];
    size_t na = 0, nc = 0, nt = 0, i = 0, j = 0;
    for (; i < pst.ntq && pst.ntq_fly < TN_LOOKUPS_PER_QUERY; i++) {
        struct persist_tnop *op = pst.tq[i].op;
        if (op->kind != PTN_LOOKUP) {
            pst.tq[j++] = pst.tq[i];
            continue;
        }
        if (tq_push(&pst.tq_fly, &pst.ntq_fly, &pst.captq_fly, pst.tq[i]) < 0) {
            pst.tq[j++] = pst.tq[i];
            break;
        }
        if (!id_in(all, na, op->tid))
            memcpy(all[na++], op->tid, 16);
        if (op->has_cid && !id_in(cids, nc, op->cid))
            memcpy(cids[nc++], op->cid, 16);
        if (!op->has_cid && !id_in(alone, nt, op->tid))
            memcpy(alone[nt++], op->tid, 16);
    }
    for (; i < pst.ntq; i++)
        pst.tq[j++] = pst.tq[i];
    pst.ntq = j;
    id_array(a1, (const uint8_t(*)[16])all, na);
    id_array(a2, (const uint8_t(*)[16])cids, nc);
    id_array(a3, (const uint8_t(*)[16])alone, nt);
    pst.lookups += pst.ntq_fly;
    pst.lookup_queries++;
    const char *v[3] = {a1, a2, a3};
    return pst_send_prepared(Q_TNOP, "rc_tn_look", 3, v);
}

/* A tenant-key write (rc_tn_mk_k / rc_tn_del_k) of op, its ids as text. */
static bool send_key(const struct persist_tnop *op, const char *tid, const char *kid)
{
    if (op->kind == PTN_KEY_DELETE)
        return pst_send_prepared(Q_TNOP, "rc_tn_del_k", 2, (const char *const[]){tid, kid});
    static const char hx[] = "0123456789abcdef";
    char ver[2 * SHA256_LEN + 1], sc[24], ex[24], ms[24];
    for (int i = 0; i < SHA256_LEN; i++) {
        ver[2 * i] = hx[(uint8_t)op->label[i] >> 4];
        ver[2 * i + 1] = hx[(uint8_t)op->label[i] & 15];
    }
    ver[2 * SHA256_LEN] = 0;
    snprintf(sc, sizeof(sc), "%lld", (long long)op->value);
    snprintf(ex, sizeof(ex), "%lld", (long long)op->max_delta);
    snprintf(ms, sizeof(ms), "%lld", (long long)op->created_ms);
    return pst_send_prepared(Q_TNOP, "rc_tn_mk_k", 6,
                             (const char *const[]){tid, kid, ver, sc, ex, ms});
}

/* A listing: one row more than a page, to know whether another page follows. */
static bool send_list(const struct persist_tnop *op, const char *tid, const char *cursor,
                      const char *label)
{
    char lim[16];
    snprintf(lim, sizeof(lim), "%u", op->cap_rows + 1);
    if (op->kind == PTN_LIST_TENANTS)
        return pst_send_prepared(Q_TNOP, "rc_tn_list_t", 2, (const char *const[]){cursor, lim});
    if (op->has_label)
        return pst_send_prepared(Q_TNOP, "rc_tn_list_l", 2, (const char *const[]){tid, label});
    return pst_send_prepared(Q_TNOP, "rc_tn_list_c", 3, (const char *const[]){tid, cursor, lim});
}

/* The statements of write op (its results: Q_TNOP). */
static bool send_one(struct persist_tnop *op)
{
    char tid[UUID_TEXT_LEN + 1], cid[UUID_TEXT_LEN + 1], label[TN_LABEL_MAX + 1], v[24], md[24],
        ms[24], d[24], hm[24], hd[24], from[24], to[24], cap[24], step[24];
    uuid_format(op->tid, tid);
    uuid_format(op->cid, cid);
    tid[UUID_TEXT_LEN] = cid[UUID_TEXT_LEN] = 0;
    memcpy(label, op->label, op->label_len);
    label[op->label_len] = 0;
    snprintf(v, sizeof(v), "%lld", (long long)op->value);
    snprintf(md, sizeof(md), "%lld", (long long)op->max_delta);
    snprintf(ms, sizeof(ms), "%lld", (long long)op->created_ms);
    snprintf(d, sizeof(d), "%lld", (long long)op->delta);
    snprintf(from, sizeof(from), "%lld", (long long)op->from_ms);
    /* history: buckets op->label[0] ('m', 'h', 'd') wide, from (a multiple of it) up to the
       bucket holding to_ms */
    int64_t w = op->label[0] == 'm' ? 60000 : op->label[0] == 'h' ? 3600000 : 86400000;
    snprintf(step, sizeof(step), "%lld", (long long)w);
    snprintf(to, sizeof(to), "%lld", (long long)((op->to_ms + w - 1) / w * w));
    snprintf(cap, sizeof(cap), "%u", op->cap_points);
    pst_hist_buckets(persist_history_now_ms(), hm, hd);
    /* an increment made here lands in the history too: its day's partition first (a no-op
       once it exists: one catalog lookup) */
    if ((op->kind == PTN_KEYED_INC || op->kind == PTN_DB_INC) &&
        !pst_send_prepared(Q_HIST, "rc_hist_part", 1, (const char *const[]){hd}))
        return false;
    const char *lb = op->has_label ? label : NULL;
    switch (op->kind) {
    case PTN_TENANT_CREATE:
        return pst_send_prepared(Q_TNOP, "rc_tn_mk_t", 3, (const char *const[]){tid, label, ms});
    case PTN_COUNTER_CREATE:
        return pst_send_prepared(Q_TNOP, "rc_tn_mk_c", 6,
                                 (const char *const[]){tid, cid, lb, v, md, ms});
    case PTN_SET:
        return pst_send_prepared(Q_TNOP, "rc_tn_setv", 3, (const char *const[]){tid, cid, v});
    case PTN_COUNTER_DELETE:
        return pst_send_prepared(Q_TNOP, "rc_tn_del_c", 2, (const char *const[]){tid, cid});
    case PTN_KEYED_INC:
        return pst_send_prepared(Q_TNOP, "rc_tn_key", 5,
                                 (const char *const[]){tid, cid, label, d, hm});
    case PTN_DB_INC:
        return pst_send_prepared(Q_TNOP, "rc_tn_dbinc", 4,
                                 (const char *const[]){tid, cid, d, hm});
    case PTN_HISTORY:
        return pst_send_prepared(Q_TNOP, "rc_tn_hist_get", 6,
                                 (const char *const[]){tid, cid, step, from, to, cap});
    case PTN_LIST_COUNTERS:
    case PTN_LIST_TENANTS:
        return send_list(op, tid, op->has_cid ? cid : NULL, label);
    case PTN_KEY_CREATE:
    case PTN_KEY_DELETE:
        return send_key(op, tid, cid);
    default:
        return pst_send_prepared(Q_TNOP, "rc_tn_del_t", 1, (const char *const[]){tid});
    }
}

/* The writes at the front of the queue (up to TN_WRITES_PER_EXCHANGE, up to the first
   lookup), each its own implicit transaction between two syncs: a failure is its own (409
   for a duplicate), and a thousand creates cost a few round trips, not a thousand. */
static bool send_writes(void)
{
    size_t n = 0;
    while (n < pst.ntq && n < TN_WRITES_PER_EXCHANGE && n < pst.captq_fly &&
           pst.tq[n].op->kind != PTN_LOOKUP)
        n++;
    bool ok = true;
    for (size_t i = 0; i < n && ok; i++) {
        pst.tq_fly[pst.ntq_fly++] = pst.tq[i];
        ok = send_one(pst.tq[i].op) && (i + 1 == n || pst_send_sync());
    }
    memmove(pst.tq, pst.tq + n, (pst.ntq - n) * sizeof(*pst.tq));
    pst.ntq -= n;
    return ok;
}

void pst_tn_send(uint64_t now)
{
    pst.ntq_fly = pst.tq_cur = 0;
    bool ok;
    if (pst.ntq && !pst.captq_fly) {
        if (!(pst.tq_fly = malloc(64 * sizeof(*pst.tq_fly)))) {
            log_error("out of memory: tenant operations wait");
            return;
        }
        pst.captq_fly = 64;
    }
    pst_begin_exchange(X_TNOP, now);
    /* what the exchange carries, kept aside: a replied op is its worker's (freed at once) */
    pst.tq_lookups = pst.ntq && pst.tq[0].op->kind == PTN_LOOKUP;
    if (pst.tq_lookups) {
        ok = send_lookups();
    } else if (pst.ntq) {
        ok = send_writes();
    } else {
        pst.feed_at = now + pst.sync_ms;
        const char *v[1] = {pst.feed_xmin};
        ok = pst_send_prepared(Q_TNOP, "rc_tn_feed", 1, v);
    }
    pst_end_exchange(ok, now, "tenant exchange");
}

/* ------------------------------------------------------------------ results */

static PGresult *tn_res; /* the statement's rows, kept until the exchange is done */

void pst_tn_result(PGresult *res)
{
    PQclear(tn_res);
    tn_res = res;
}

static bool row_id(PGresult *r, int row, int col, uint8_t id[16])
{
    return !PQgetisnull(r, row, col) &&
           uuid_parse(PQgetvalue(r, row, col), (size_t)PQgetlength(r, row, col), id) == 0;
}

static int64_t row_i64(PGresult *r, int row, int col)
{
    return strtoll(PQgetvalue(r, row, col), NULL, 10);
}

/* Settle cached counter c to the committed value v (see the top of this file). */
static void settle(const struct tn_counter *c, int64_t v)
{
    int64_t adj = (int64_t)((uint64_t)v - pst.tn_wm[c->idx]);
    if (adj) {
        tn_counter_adjust(pst.tn, c, adj);
        pst.tn_wm[c->idx] = (uint64_t)v;
    }
}

void pst_tn_settle(uint32_t idx, int64_t v)
{
    settle(tn_counter_at(pst.tn, idx), v);
}

static int tnd_key(const void *key, const void *e)
{
    return memcmp(key, ((const struct tnd *)e)->id, 16);
}

void pst_tn_flush_values(PGresult *res)
{
    struct flush *f = &pst.f;
    for (int i = 0; PQresultStatus(res) == PGRES_TUPLES_OK && i < PQntuples(res); i++) {
        uint8_t id[16];
        struct tnd *d;
        if (f->ntnd && row_id(res, i, 0, id) &&
            (d = bsearch(id, f->tnd, f->ntnd, sizeof(*f->tnd), tnd_key))) { /* sorted by id */
            d->has_db = true;
            d->db = row_i64(res, i, 1);
        }
    }
}

/* The rows are in the store now: what is in the database, all of it (pst.tn_nt/tn_nc). */
static void rows_synced(void)
{
    uint32_t idem;
    tn_sizes(pst.tn, &pst.tn_nt, &pst.tn_nc, &idem);
}

/* A live tenant row: cached (restored if new and restore). -ENOSPC when the cache is full;
   -ENOENT: not cached, and not to be. */
static int apply_tenant(PGresult *r, int i, bool restore)
{
    uint8_t id[16];
    if (!row_id(r, i, 1, id))
        return -EINVAL;
    if (tn_tenant_find(pst.tn, id))
        return 0;
    if (!restore)
        return -ENOENT;
    const struct tn_tenant *t;
    int rc = tn_tenant_restore(pst.tn, id, PQgetvalue(r, i, 3), (size_t)PQgetlength(r, i, 3),
                               row_i64(r, i, 6), &t);
    if (rc == 0)
        rows_synced();
    return rc;
}

/* A live counter row: settled if cached, else cached if restore (its tenant must be). */
static int apply_counter(PGresult *r, int i, bool restore)
{
    uint8_t id[16], tid[16];
    if (!row_id(r, i, 1, id) || !row_id(r, i, 2, tid))
        return -EINVAL;
    const struct tn_tenant *t = tn_tenant_find(pst.tn, tid);
    if (!t)
        return -ENOENT; /* not cached: a lookup of it brings both */
    int64_t v = row_i64(r, i, 4);
    const struct tn_counter *c = tn_counter_find(pst.tn, t, id);
    if (c) {
        settle(c, v);
        return 0;
    }
    if (!restore)
        return -ENOENT;
    uint32_t nt, nc, ni;
    tn_sizes(pst.tn, &nt, &nc, &ni);
    if (pst_wm_reserve((size_t)nc + 1) < 0) /* first: a restored counter always has its mark */
        return -ENOMEM;
    bool nolabel = PQgetisnull(r, i, 3);
    int rc = tn_counter_restore(pst.tn, t, id, nolabel ? NULL : PQgetvalue(r, i, 3),
                                nolabel ? 0 : (size_t)PQgetlength(r, i, 3), v, row_i64(r, i, 5),
                                row_i64(r, i, 6), &c);
    if (rc < 0)
        return rc;
    pst.tn_wm[c->idx] = (uint64_t)v;
    rows_synced();
    return 0;
}

/* A deleted row: out of the cache. */
static void apply_deleted(PGresult *r, int i)
{
    uint8_t id[16], tid[16];
    if (!row_id(r, i, 1, id))
        return;
    if (PQgetvalue(r, i, 0)[0] == 't') {
        const struct tn_tenant *t = tn_tenant_find(pst.tn, id);
        if (t)
            (void)tn_tenant_delete(pst.tn, t);
        if (pst.tnk)
            tnk_delete_tenant(pst.tnk, id); /* its keys go with it */
        return;
    }
    const struct tn_tenant *t = row_id(r, i, 2, tid) ? tn_tenant_find(pst.tn, tid) : NULL;
    const struct tn_counter *c = t ? tn_counter_find(pst.tn, t, id) : NULL;
    if (c)
        (void)tn_counter_delete(pst.tn, c);
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

int pst_tn_key_row(PGresult *r, int i)
{
    uint8_t id[16], tid[16], ver[SHA256_LEN];
    if (!pst.tnk || !row_id(r, i, 1, id) || !row_id(r, i, 2, tid) ||
        PQgetlength(r, i, 3) != 2 * SHA256_LEN)
        return -EINVAL;
    const char *h = PQgetvalue(r, i, 3);
    for (int k = 0; k < SHA256_LEN; k++) {
        int hi = hexval(h[2 * k]), lo = hexval(h[2 * k + 1]);
        if (hi < 0 || lo < 0)
            return -EINVAL;
        ver[k] = (uint8_t)(hi << 4 | lo);
    }
    bool del = PQgetvalue(r, i, 7)[0] == 't';
    const struct tnk_key *k = tnk_find(pst.tnk, id);
    if (k) {
        if (del && !tnk_deleted(k))
            (void)tnk_delete(pst.tnk, k);
        return 0;
    }
    int rc = tnk_insert(pst.tnk, id, tid, ver, (uint32_t)row_i64(r, i, 4), row_i64(r, i, 5),
                        row_i64(r, i, 6), del, NULL);
    return rc == -EEXIST ? 0 : rc;
}

/* The key rows of r ('k') into pst.tnk: the count applied; *full counts those it had no room
   for. */
static int apply_keys(PGresult *r, unsigned *full)
{
    int applied = 0;
    for (int i = 0; i < PQntuples(r); i++) {
        if (PQgetvalue(r, i, 0)[0] != 'k')
            continue;
        int rc = pst_tn_key_row(r, i);
        if (rc == -ENOSPC)
            (*full)++;
        else if (rc == 0)
            applied++;
    }
    return applied;
}

/* Every row of r into the cache: deletions first (a label freed and taken again in the same
   batch), then tenants, then counters; restore: also those not cached (a lookup's, a write's
   answer), else only the cached ones move (the change feed: restoring every tenant another
   node, or this one, had written filled a 64-tenant cache with 131 rows nobody asked for, and
   the tenants requests were looked up for found no room, so each next request was looked up
   again: integ/test_cluster small_tenant_cache_evicts_tenants). Returns the rows applied;
   *full counts those the full cache could not take. */
static int apply_rows(PGresult *r, bool restore, unsigned *full)
{
    int n = PQntuples(r), applied = 0;
    for (int pass = 0; pass < 3; pass++) {
        for (int i = 0; i < n; i++) {
            char kind = PQgetvalue(r, i, 0)[0];
            bool del = PQgetvalue(r, i, 7)[0] == 't';
            int rc = 0;
            if (kind == 'x' || kind == 'k' || (pass == 0) != del)
                continue;
            if (pass == 0)
                apply_deleted(r, i);
            else if (pass == 1 && kind == 't')
                rc = apply_tenant(r, i, restore);
            else if (pass == 2 && kind == 'c')
                rc = apply_counter(r, i, restore);
            else
                continue;
            if (rc == -ENOSPC)
                (*full)++;
            else if (rc == 0)
                applied++;
        }
    }
    return applied + apply_keys(r, full);
}

/* The row of id in r (a counter's: of tenant tid, not one of another tenant with that id in
   its path), or -1. */
static int row_of(PGresult *r, const uint8_t id[16], const uint8_t tid[16])
{
    uint8_t x[16], t[16];
    for (int i = 0; i < PQntuples(r); i++)
        if (row_id(r, i, 1, x) && memcmp(x, id, 16) == 0 &&
            (PQgetvalue(r, i, 0)[0] != 'c' || (row_id(r, i, 2, t) && memcmp(t, tid, 16) == 0)))
            return i;
    return -1;
}

static bool row_has(PGresult *r, const uint8_t id[16], const uint8_t tid[16])
{
    return row_of(r, id, tid) >= 0;
}

/* Row i of r (TN_T_ROW / TN_C_ROW) into o. */
static void row_parse(PGresult *r, int i, struct tn_row *o)
{
    o->counter = PQgetvalue(r, i, 0)[0] == 'c';
    if (!row_id(r, i, 1, o->id) || (o->counter && !row_id(r, i, 2, o->tid)))
        memset(o->id, 0, 16);
    if (!o->counter)
        memcpy(o->tid, o->id, 16);
    o->has_label = !PQgetisnull(r, i, 3);
    int n = PQgetlength(r, i, 3);
    o->label_len = (uint8_t)(o->has_label && n <= TN_LABEL_MAX ? n : 0);
    memcpy(o->label, PQgetvalue(r, i, 3), o->label_len);
    o->value = o->counter ? row_i64(r, i, 4) : 0;
    o->max_delta = o->counter ? row_i64(r, i, 5) : 0;
    o->created_ms = row_i64(r, i, 6);
}

/* A lookup found what the full cache cannot take: the row into op->row, to answer from it. */
static void row_out(struct persist_tnop *op, PGresult *r)
{
    int i = row_of(r, op->has_cid ? op->cid : op->tid, op->tid);
    if (i >= 0)
        row_parse(r, i, &op->row);
}

/* The status of op once the rows r are applied: is what it names in the cache (or gone)? */
static int op_status(const struct persist_tnop *op, PGresult *r)
{
    const struct tn_tenant *t = tn_tenant_find(pst.tn, op->tid);
    switch (op->kind) {
    case PTN_TENANT_DELETE:
        return t ? -EIO : 0;
    case PTN_COUNTER_DELETE:
        return t && tn_counter_find(pst.tn, t, op->cid) ? -EIO : 0;
    case PTN_TENANT_CREATE:
        return t ? 0 : -ENOSPC;
    case PTN_KEY_CREATE:
        return pst.tnk && tnk_find(pst.tnk, op->cid) ? 0 : -ENOSPC;
    case PTN_KEY_DELETE:
        return 0;
    case PTN_LOOKUP:
        if (!op->has_cid)
            return t ? 0 : row_has(r, op->tid, op->tid) ? -ENOSPC : -ENOENT;
        if (t && tn_counter_find(pst.tn, t, op->cid))
            return 0;
        return row_has(r, op->cid, op->tid) ? -ENOSPC : -ENOENT;
    default:
        return t && tn_counter_find(pst.tn, t, op->cid) ? 0 : -ENOSPC;
    }
}

/* POST /reset on another node moved the cluster's reset epoch to e: clear this node's events and
   users as a reset of its own would, but delete nothing in the database (that reset did): the
   next flush sends this node's aggregates from zero (f->adopt). What this node acknowledged
   within --sync-ms after the other node's reset may be cleared with it. */
static void adopt_reset(uint64_t e)
{
    if (e <= pst.reset_epoch)
        return;
    pst.reset_epoch = e;
    uint64_t g = bar_reset_all();
    if (pst.nadopted < sizeof(pst.adopted) / sizeof(pst.adopted[0]))
        pst.adopted[pst.nadopted++] = g; /* else the next reset flush is a full one: safe */
    for (unsigned w = 0; w < pst.n; w++)
        pst.pw[w].wake = true; /* persist_p_run posts the wake-ups: each serves the reset */
    log_info("reset adopted from another node", LOG_U("reset_epoch", e));
}

bool pst_tn_adopted(uint64_t from, uint64_t to)
{
    for (uint64_t g = from + 1; g <= to; g++) {
        bool found = false;
        for (unsigned i = 0; i < pst.nadopted && !found; i++)
            found = pst.adopted[i] == g;
        if (!found)
            return false;
    }
    return to > from;
}

void pst_tn_adopted_applied(uint64_t g)
{
    unsigned j = 0;
    for (unsigned i = 0; i < pst.nadopted; i++)
        if (pst.adopted[i] > g)
            pst.adopted[j++] = pst.adopted[i];
    pst.nadopted = j;
}

static void feed_done(PGresult *res, uint64_t now)
{
    if (!res || PQresultStatus(res) != PGRES_TUPLES_OK) {
        log_rl(&pst.rl_err, now, 3, 10000, LOG_ERROR, "tenant change feed failed (retried)",
               LOG_S("error", pst.r.msg));
        return;
    }
    unsigned full = 0;
    int n = apply_rows(res, false, &full);
    for (int i = 0; i < PQntuples(res); i++) {
        char k = PQgetvalue(res, i, 0)[0];
        if (k == 'x' && PQgetlength(res, i, 1) < (int)sizeof(pst.feed_xmin))
            snprintf(pst.feed_xmin, sizeof(pst.feed_xmin), "%s", PQgetvalue(res, i, 1));
        if (k == 'r')
            adopt_reset(strtoull(PQgetvalue(res, i, 1), NULL, 10));
    }
    pst.feed_rows += (uint64_t)n;
    metrics_tn_feed((uint64_t)n);
    if (full)
        log_rl(&pst.rl_err, now, 3, 10000, LOG_WARN,
               "tenant key cache full: keys other nodes wrote are not cached here (they are "
               "looked up when asked for)", LOG_U("rows", full));
}

/* The rows of rc_tn_key (committed): op's status and value; the cached counter settled. */
static int keyed_done(struct persist_tnop *op, PGresult *r)
{
    bool cur = false, n = false, o = false;
    int64_t curv = 0;
    for (int i = 0; i < PQntuples(r); i++) {
        char k = PQgetvalue(r, i, 0)[0];
        int64_t v = row_i64(r, i, 1);
        if (k == 'c') {
            cur = true;
            curv = v;
        } else if (k == 'n') {
            n = true;
            op->value = v;
        } else if (k == 'o') {
            uint8_t cid[16];
            o = true;
            if (!row_id(r, i, 2, cid) || memcmp(cid, op->cid, 16) != 0 ||
                row_i64(r, i, 3) != op->delta)
                return -EEXIST; /* the key names another request */
            op->value = v;
        }
    }
    if (!cur)
        return -ENOENT;
    if (n) { /* the counter moved to op->value: settle the cached one at once */
        const struct tn_tenant *t = tn_tenant_find(pst.tn, op->tid);
        const struct tn_counter *c = t ? tn_counter_find(pst.tn, t, op->cid) : NULL;
        if (c)
            settle(c, op->value);
        return 0;
    }
    if (o)
        return 0;
    /* neither: past INT64_MAX, or another node inserted the key while this waited for the
       row lock (its row is not in this statement's snapshot): asked again */
    return curv > INT64_MAX - op->delta ? -EOVERFLOW : -EAGAIN;
}

/* The rows of rc_tn_hist_get into op's points: 0, or -ENOENT (no such live counter). */
static int history_done(struct persist_tnop *op, PGresult *r)
{
    bool live = false;
    op->npoints = 0;
    for (int i = 0; i < PQntuples(r); i++) {
        if (PQgetvalue(r, i, 0)[0] == 'c') {
            live = true;
        } else if (op->npoints < op->cap_points) {
            op->points[op->npoints][0] = row_i64(r, i, 1);
            op->points[op->npoints][1] = row_i64(r, i, 2);
            op->npoints++;
        }
    }
    return live ? 0 : -ENOENT;
}

/* The rows of rc_tn_list_* into op's rows: 0, -ENOENT (a counter listing of no live tenant),
   -EINVAL (the cursor names no row of the listing). */
static int list_done(struct persist_tnop *op, PGresult *r)
{
    bool tenants = op->kind == PTN_LIST_TENANTS, live = tenants, cursor = !op->has_cid;
    op->nrows = 0;
    op->more = false;
    for (int i = 0; i < PQntuples(r); i++) {
        char k = PQgetvalue(r, i, 0)[0];
        if (k == 'a') {
            cursor = true;
        } else if (k == 't' && !tenants) {
            live = true;
        } else if (op->nrows == op->cap_rows) {
            op->more = true;
        } else {
            row_parse(r, i, &op->rows[op->nrows++]);
        }
    }
    return !live ? -ENOENT : !cursor ? -EINVAL : 0;
}

/* Write q's statement is done (ok: committed with rows res): reply, or queue it again. */
static void write_done(struct tnq q, PGresult *res, bool ok, bool dropped, uint64_t now)
{
    struct persist_tnop *op = q.op;
    int st;
    snprintf(op->sqlstate, sizeof(op->sqlstate), "%s", pst.r.sqlstate);
    if (op->kind == PTN_HISTORY) {
        tn_reply(q.w, op, ok ? history_done(op, res) : -EIO);
        return;
    }
    if (op->kind == PTN_LIST_COUNTERS || op->kind == PTN_LIST_TENANTS) {
        tn_reply(q.w, op, ok ? list_done(op, res) : -EIO);
        return;
    }
    if (op->kind == PTN_KEYED_INC || op->kind == PTN_DB_INC) {
        st = ok ? keyed_done(op, res) : -EIO;
        if (st == -EAGAIN && tq_push(&pst.tq, &pst.ntq, &pst.captq, q) == 0)
            return; /* once more, behind what else waits */
        tn_reply(q.w, op, st == -EAGAIN ? -EIO : st);
        return;
    }
    unsigned full = 0;
    if (ok)
        apply_rows(res, true, &full);
    if (ok && !PQntuples(res))
        st = -ENOENT; /* nothing matched: no such (live) tenant or counter */
    else if (ok)
        st = op_status(op, res);
    else if (!dropped && strcmp(pst.r.sqlstate, "23505") == 0)
        st = -EEXIST; /* a live row has this label (rc_tenants_label, *_counters_label) */
    else
        st = -EIO;
    /* done: answered from the row without the cache (-ENOSPC), or if what it wrote is evicted
       before the worker answers (0) */
    if (st == -ENOSPC || st == 0)
        row_out(op, res);
    if (st == -EIO && !dropped)
        log_rl(&pst.rl_err, now, 3, 10000, LOG_ERROR, "tenant operation failed",
               LOG_S("error", pst.r.msg), LOG_S("sqlstate", pst.r.sqlstate));
    tn_reply(q.w, op, st);
}

/* The lookups in flight are answered from rows res (ok) or failed. */
static void lookups_done(PGresult *res, bool ok)
{
    unsigned full = 0;
    if (ok)
        apply_rows(res, true, &full);
    metrics_tn_lookups(pst.ntq_fly);
    for (size_t i = 0; i < pst.ntq_fly; i++) {
        struct persist_tnop *op = pst.tq_fly[i].op;
        int st = ok ? op_status(op, res) : -EIO;
        if (st == -ENOSPC) /* found: answered from the row without the cache */
            row_out(op, res);
        tn_reply(pst.tq_fly[i].w, op, st); /* op is the worker's from here */
    }
}

/* The statement result of the part of the exchange just synced, and whether it committed. */
static PGresult *part_result(bool dropped, bool *ok)
{
    PGresult *res = tn_res;
    tn_res = NULL;
    *ok = !dropped && !pst.r.failed && res && PQresultStatus(res) == PGRES_TUPLES_OK;
    return res;
}

void pst_tn_sync(uint64_t now)
{
    bool ok;
    PGresult *res = part_result(false, &ok);
    if (pst.tq_cur < pst.ntq_fly)
        write_done(pst.tq_fly[pst.tq_cur++], res, ok, false, now);
    PQclear(res);
    /* the next write is its own transaction: its failure, if any, is its own */
    pst.r.failed = false;
    pst.r.sqlstate[0] = pst.r.msg[0] = 0;
}

void pst_tn_done(uint64_t now, bool dropped)
{
    bool ok;
    PGresult *res = part_result(dropped, &ok);
    if (!pst.ntq_fly) {
        if (!dropped)
            feed_done(ok ? res : NULL, now);
    } else if (pst.tq_lookups) {
        lookups_done(res, ok);
    } else {
        /* the last write, or (dropped) every one not answered yet: outcome unknown */
        while (pst.tq_cur < pst.ntq_fly) {
            struct tnq q = pst.tq_fly[pst.tq_cur++];
            write_done(q, res, ok && pst.tq_cur == pst.ntq_fly, dropped, now);
        }
    }
    pst.ntq_fly = pst.tq_cur = 0;
    PQclear(res);
}

/* ------------------------------------------------------------------ start-up */

int pst_tn_feed_init(PGconn *c)
{
    PGresult *r;
    if (!pst_ok_exec(c, "SELECT pg_snapshot_xmin(pg_current_snapshot())::text", PGRES_TUPLES_OK,
                     &r))
        return -EIO;
    snprintf(pst.feed_xmin, sizeof(pst.feed_xmin), "%s", PQgetvalue(r, 0, 0));
    PQclear(r);
    pst.feed_at = 0;
    return 0;
}
