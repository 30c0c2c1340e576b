/* tndb — see tndb.h. */
#include "tndb.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fmt.h"
#include "http.h"
#include "json.h"
#include "persist.h"
#include "pwait.h"
#include "tenants.h"
#include "tnkeys.h"

struct absent {       /* a recent lookup outcome (status 0: empty slot) */
    uint8_t id[16];
    uint64_t until_ms;
    int status;       /* 200: found, but the full cache could not take it: row */
    struct tn_row row;
};

/* The outcome of a lookup for the second run of the request that asked (its session): kept
   per request, so outcomes of one batch that share an absent[] slot cannot overwrite each
   other (the request would look up again, and be charged again). */
struct rerun {
    struct sess *s;
    struct absent a;
};

struct tndb {
    struct tn_store *st;
    struct pwait *pw;
    struct absent absent[TNDB_ABSENT_SLOTS];
    struct rerun rerun[TNDB_RERUNS];
    unsigned nrerun;
    struct absent scratch; /* the outcome tndb_lookup answered with (its row stays valid) */
};

/* An op with the worker state its answer needs (op first: pwait frees it as the op). */
struct tnop_ctx {
    struct persist_tnop op;
    struct tndb *d;
    uint64_t now_ms;  /* lookups: when asked (the worker's monotonic clock) */
    uint16_t hlen;    /* keyed increments: the header lines of the answer (rate limit, CORS) */
    char hdr[TNDB_HDR_MAX]; /* key creation: the key's text */
    const struct tnk_store *ks; /* key creation: where the committed key is read back */
};

struct tndb *tndb_new(struct tn_store *st, struct pwait *pw)
{
    struct tndb *d = calloc(1, sizeof(*d));
    if (d) {
        d->st = st;
        d->pw = pw;
    }
    return d;
}

void tndb_free(struct tndb *d)
{
    free(d);
}

static struct absent *absent_slot(struct tndb *d, const uint8_t id[16])
{
    uint32_t h;
    memcpy(&h, id + 12, 4); /* random bits of a v4/v7 UUID */
    return &d->absent[h & (TNDB_ABSENT_SLOTS - 1)];
}

/* ---------------------------------------------------------------- answers */

static void unavailable(struct sess *s, struct persist_tnop *op, bool answered)
{
    bool write = op->kind != PTN_LOOKUP && op->kind != PTN_HISTORY &&
                 op->kind != PTN_LIST_COUNTERS && op->kind != PTN_LIST_TENANTS;
    if (answered && op->status == -ETIMEDOUT)
        sess_error(s, HTTP_E_PERSISTENCE_UNAVAILABLE,
                   "PostgreSQL was not reachable within --durable-timeout-ms; nothing was done",
                   SESS_HDRS(SESS_RETRY_AFTER_1));
    else if (write)
        sess_error(s, HTTP_E_PERSISTENCE_UNAVAILABLE,
                   "PostgreSQL did not confirm the change in time; it may still be committed: "
                   "read it back before retrying", SESS_HDRS(SESS_RETRY_AFTER_1));
    else
        sess_error(s, HTTP_E_PERSISTENCE_UNAVAILABLE, "PostgreSQL did not answer the read in time",
                   SESS_HDRS(SESS_RETRY_AFTER_1));
}

static void cache_full(struct sess *s, const struct tn_store *st, const struct persist_tnop *op)
{
    uint32_t mt, mc;
    tn_bounds(st, &mt, &mc);
    bool t = op->kind == PTN_TENANT_CREATE || (op->kind == PTN_LOOKUP && !op->has_cid);
    char msg[128]; /* a rare answer: the cache is full of records with unflushed increments */
    snprintf(msg, sizeof(msg), "done in PostgreSQL, but this node's %s cache is full (%u %ss, "
             "--%s-cache)", t ? "tenant" : "counter", t ? mt : mc, t ? "tenant" : "counter",
             t ? "tenant" : "counter");
    sess_error(s, t ? HTTP_E_TOO_MANY_TENANTS : HTTP_E_TOO_MANY_COUNTERS, msg, NULL, 0);
}

/* A write committed and this node's cache does not hold what it wrote (full, or evicted since
   the commit): answered from the row the write returned, like the cache would. */
static void row_answer(struct sess *s, const struct persist_tnop *op)
{
    const struct tn_store *st = ((const struct tnop_ctx *)op)->d->st;
    char body[TN_JSON_MAX];
    if (op->kind == PTN_SET)
        sess_respond(s, 200, SESS_JSON, NULL, 0, body, tn_value_json(op->cid, op->value, body));
    else if (op->row.created_ms) /* creates: served from the database from now on */
        sess_respond(s, 201, SESS_JSON, NULL, 0, body, tn_row_json(&op->row, body));
    else
        cache_full(s, st, op);
}

/* A write came back (or timed out): answer it from the cache, which holds its rows now. */
static void write_done(struct sess *s, struct persist_tnop *op, bool answered)
{
    struct tnop_ctx *x = (struct tnop_ctx *)op;
    struct tn_store *st = x->d->st;
    bool counter = op->kind != PTN_TENANT_CREATE && op->kind != PTN_TENANT_DELETE;
    if (!answered || op->status == -EIO || op->status == -ETIMEDOUT) {
        unavailable(s, op, answered);
        return;
    }
    if (op->status == -EEXIST) {
        sess_error(s, HTTP_E_DUPLICATE_LABEL,
                   counter ? "a counter with this label exists in this tenant"
                           : "a tenant with this label exists", NULL, 0);
        return;
    }
    if (op->status == -ENOENT) {
        const struct tn_tenant *t = tn_tenant_find(st, op->tid);
        sess_error(s, HTTP_E_NOT_FOUND,
                   t && counter && op->kind != PTN_COUNTER_CREATE ? "no such counter in this tenant"
                                                                  : "no such tenant", NULL, 0);
        return;
    }
    char body[TN_JSON_MAX];
    if (op->status == -ENOSPC) {
        row_answer(s, op);
        return;
    }
    const struct tn_tenant *t = tn_tenant_find(st, op->tid);
    const struct tn_counter *c = t && counter ? tn_counter_find(st, t, op->cid) : NULL;
    switch (op->kind) {
    case PTN_TENANT_CREATE:
        if (t) {
            sess_respond(s, 201, SESS_JSON, NULL, 0, body, tn_tenant_json(t, body));
            return;
        }
        break;
    case PTN_COUNTER_CREATE:
        if (c) {
            sess_respond(s, 201, SESS_JSON, NULL, 0, body, tn_counter_json(st, c, body));
            return;
        }
        break;
    case PTN_SET:
        if (c) {
            sess_respond(s, 200, SESS_JSON, NULL, 0, body, tn_value_json(c->id, op->value, body));
            return;
        }
        break;
    default: /* deletes */
        sess_respond(s, 204, NULL, NULL, 0, NULL, 0);
        return;
    }
    row_answer(s, op); /* done, and evicted since */
}

/* A lookup came back (or timed out): remember what it found for the request's second run. */
static void lookup_done(struct sess *s, struct persist_tnop *op, bool answered)
{
    (void)s;
    struct tnop_ctx *x = (struct tnop_ctx *)op;
    int status = 0;
    if (!answered || op->status == -EIO || op->status == -ETIMEDOUT)
        status = 503;
    else if (op->status == -ENOENT)
        status = 404;
    else if (op->status == -ENOSPC)
        status = op->row.created_ms ? 200 : 409; /* the row, for the second run to answer */
    if (!status)
        return; /* cached: the second run finds it */
    const uint8_t *id = op->has_cid ? op->cid : op->tid;
    struct tndb *d = x->d;
    struct absent *a = absent_slot(d, id);
    if (status == 404) { /* the flood cache: any request for this id in the next second */
        memcpy(a->id, id, 16);
        a->status = status;
        a->until_ms = x->now_ms + TNDB_ABSENT_MS;
    }
    if (d->nrerun < TNDB_RERUNS) /* else the second run looks it up again */
        a = &d->rerun[d->nrerun++].a, d->rerun[d->nrerun - 1].s = s;
    else if (status == 404)
        return;
    memcpy(a->id, id, 16);
    a->status = status;
    a->until_ms = x->now_ms + TNDB_ABSENT_MS;
    if (status == 200)
        a->row = op->row;
}

/* A keyed increment came back: the database's answer, with the request's header lines. */
static void keyed_done(struct sess *s, struct persist_tnop *op, bool answered)
{
    struct tnop_ctx *x = (struct tnop_ctx *)op;
    char body[TN_JSON_MAX];
    if (!answered || op->status == -EIO || op->status == -ETIMEDOUT)
        sess_error(s, HTTP_E_PERSISTENCE_UNAVAILABLE,
                   answered ? "PostgreSQL is not reachable; nothing was counted"
                   : op->kind == PTN_KEYED_INC
                       ? "PostgreSQL did not confirm the increment in time; it may still be "
                         "committed: retry with the same Idempotency-Key"
                       : "PostgreSQL did not confirm the increment in time; it may still be "
                         "committed",
                   x->hdr, x->hlen);
    else if (op->status == -EEXIST)
        sess_error(s, HTTP_E_IDEMPOTENCY_KEY_REUSED,
                   "this Idempotency-Key was used for a different request", x->hdr, x->hlen);
    else if (op->status == -EOVERFLOW)
        sess_error(s, HTTP_E_COUNTER_OVERFLOW,
                   "the counter would pass 9223372036854775807 and is never wrapped", x->hdr,
                   x->hlen);
    else if (op->status == -ENOENT)
        sess_error(s, HTTP_E_NOT_FOUND, "no such counter in this tenant", x->hdr, x->hlen);
    else
        sess_respond(s, 200, SESS_JSON, x->hdr, x->hlen, body,
                     tn_value_json(op->cid, op->value, body));
}

static enum sess_handled no_memory(struct sess *s);

/* A read (history, listing) that failed, or found nothing (-ENOENT: 404 not_found): true
   once s is answered so. */
static bool read_failed(struct sess *s, struct persist_tnop *op, bool answered,
                        const char *not_found)
{
    if (!answered || op->status == -EIO || op->status == -ETIMEDOUT)
        unavailable(s, op, answered);
    else if (op->status == -ENOENT)
        sess_error(s, HTTP_E_NOT_FOUND, not_found, NULL, 0);
    else
        return false;
    return true;
}

/* The history came back: {"bucket","points":[{"t","delta"}, ...]}. */
static void history_done(struct sess *s, struct persist_tnop *op, bool answered)
{
    if (read_failed(s, op, answered, "no such counter in this tenant"))
        return;
    static const char *const names[] = {"minute", "hour", "day"};
    const char *name = names[op->label[0] == 'm' ? 0 : op->label[0] == 'h' ? 1 : 2];
    size_t cap = 64 + (size_t)op->npoints * (FMT_TIME_LEN + 48); /* admin-rate: one malloc */
    char *body = malloc(cap);
    if (!body) {
        no_memory(s);
        return;
    }
    struct json_w w;
    json_w_init(&w, body, cap);
    json_w_lit(&w, "{\"bucket\":");
    json_w_str(&w, name, strlen(name));
    json_w_lit(&w, ",\"points\":[");
    for (uint32_t i = 0; i < op->npoints; i++) {
        char t[FMT_TIME_LEN];
        if (i)
            json_w_lit(&w, ",");
        json_w_lit(&w, "{\"t\":");
        json_w_str(&w, t, fmt_time_ms(t, op->points[i][0]));
        json_w_lit(&w, ",\"delta\":");
        json_w_i64(&w, op->points[i][1]);
        json_w_lit(&w, "}");
    }
    json_w_lit(&w, "]}");
    ssize_t n = json_w_end(&w); /* never < 0: cap holds every point */
    sess_respond(s, 200, SESS_JSON, NULL, 0, body, n < 0 ? 0 : (size_t)n);
    free(body);
}

static size_t row_obj(const void *items, int i, char *out)
{
    return tn_row_json(&((const struct tn_row *)items)[i], out);
}

/* A listing came back: a page (tn_page_json), 404 or 400 INVALID_CURSOR. */
static void list_done(struct sess *s, struct persist_tnop *op, bool answered)
{
    if (read_failed(s, op, answered, "no such tenant"))
        return;
    if (op->status == -EINVAL) {
        sess_error(s, HTTP_E_INVALID_CURSOR, TNDB_MSG_BAD_CURSOR, NULL, 0);
        return;
    }
    char *body = malloc(TN_PAGE_CAP(op->nrows)); /* admin-rate: one malloc */
    if (!body) {
        no_memory(s);
        return;
    }
    size_t n = tn_page_json(body, op->kind == PTN_LIST_TENANTS ? "tenants" : "counters",
                            op->rows, (int)op->nrows, row_obj,
                            op->more ? op->rows[op->nrows - 1].id : NULL);
    sess_respond(s, 200, SESS_JSON, NULL, 0, body, n);
    free(body);
}

/* ---------------------------------------------------------------- requests */

/* An op of kind k on tid (NULL: none) and cid (NULL: none), with extra bytes after it for its
   output (in the same allocation: pwait frees both at once). */
static struct tnop_ctx *op_new_buf(struct tndb *d, enum persist_tnop_kind k, const uint8_t *tid,
                                   const uint8_t *cid, size_t extra)
{
    struct tnop_ctx *x = calloc(1, sizeof(*x) + extra); /* admin-rate, or one per cache miss */
    if (!x)
        return NULL;
    x->d = d;
    x->op.kind = (uint8_t)k;
    if (tid)
        memcpy(x->op.tid, tid, 16);
    if (cid) {
        memcpy(x->op.cid, cid, 16);
        x->op.has_cid = true;
    }
    return x;
}

static struct tnop_ctx *op_new(struct tndb *d, enum persist_tnop_kind k, const uint8_t tid[16],
                               const uint8_t *cid)
{
    return op_new_buf(d, k, tid, cid, 0);
}

static enum sess_handled no_memory(struct sess *s)
{
    sess_error(s, HTTP_E_OVERLOADED, "out of memory", SESS_HDRS(SESS_RETRY_AFTER_1));
    return SESS_H_DONE;
}

static void set_label(struct persist_tnop *op, const char *label, size_t n)
{
    if (!label || n > sizeof(op->label))
        return;
    op->has_label = true;
    op->label_len = (uint8_t)n;
    memcpy(op->label, label, n);
}

enum sess_handled tndb_create_tenant(struct tndb *d, struct sess *s, const uint8_t tid[16],
                                     const char *label, size_t n, int64_t now_ms)
{
    struct tnop_ctx *x = op_new(d, PTN_TENANT_CREATE, tid, NULL);
    if (!x)
        return no_memory(s);
    set_label(&x->op, label, n);
    x->op.created_ms = now_ms;
    return pwait_tnop(d->pw, s, &x->op, write_done);
}

enum sess_handled tndb_create_counter(struct tndb *d, struct sess *s, const uint8_t tid[16],
                                      const uint8_t cid[16], const char *label, size_t n,
                                      int64_t initial, int64_t max_delta, int64_t now_ms)
{
    struct tnop_ctx *x = op_new(d, PTN_COUNTER_CREATE, tid, cid);
    if (!x)
        return no_memory(s);
    set_label(&x->op, label, n);
    x->op.value = initial;
    x->op.max_delta = max_delta;
    x->op.created_ms = now_ms;
    return pwait_tnop(d->pw, s, &x->op, write_done);
}

enum sess_handled tndb_set(struct tndb *d, struct sess *s, const uint8_t tid[16],
                           const uint8_t cid[16], int64_t value)
{
    struct tnop_ctx *x = op_new(d, PTN_SET, tid, cid);
    if (!x)
        return no_memory(s);
    x->op.value = value;
    return pwait_tnop(d->pw, s, &x->op, write_done);
}

enum sess_handled tndb_delete(struct tndb *d, struct sess *s, const uint8_t tid[16],
                              const uint8_t *cid)
{
    struct tnop_ctx *x = op_new(d, cid ? PTN_COUNTER_DELETE : PTN_TENANT_DELETE, tid, cid);
    if (!x)
        return no_memory(s);
    return pwait_tnop(d->pw, s, &x->op, write_done);
}

enum sess_handled tndb_keyed_inc(struct tndb *d, struct sess *s, const uint8_t tid[16],
                                 const uint8_t cid[16], const char *key, size_t klen,
                                 int64_t delta, const char *hdr, size_t hlen)
{
    struct tnop_ctx *x = op_new(d, PTN_KEYED_INC, tid, cid);
    if (!x)
        return no_memory(s);
    set_label(&x->op, key, klen);
    x->op.delta = delta;
    x->hlen = (uint16_t)(hlen < sizeof(x->hdr) ? hlen : 0);
    memcpy(x->hdr, hdr, x->hlen);
    return pwait_tnop(d->pw, s, &x->op, keyed_done);
}

enum sess_handled tndb_history(struct tndb *d, struct sess *s, const uint8_t tid[16],
                               const uint8_t cid[16], char b, int64_t from_ms, int64_t to_ms)
{
    struct tnop_ctx *x = op_new_buf(d, PTN_HISTORY, tid, cid, TNDB_HISTORY_MAX * sizeof(int64_t[2]));
    if (!x)
        return no_memory(s);
    x->op.label[0] = b;
    x->op.label_len = 1;
    x->op.from_ms = from_ms;
    x->op.to_ms = to_ms;
    x->op.cap_points = TNDB_HISTORY_MAX;
    x->op.points = (int64_t(*)[2])(x + 1);
    return pwait_tnop(d->pw, s, &x->op, history_done);
}

enum sess_handled tndb_list(struct tndb *d, struct sess *s, const uint8_t *tid,
                            const uint8_t *cursor, const char *label, size_t n, unsigned limit)
{
    struct tnop_ctx *x = op_new_buf(d, tid ? PTN_LIST_COUNTERS : PTN_LIST_TENANTS, tid, cursor,
                                    limit * sizeof(struct tn_row));
    if (!x)
        return no_memory(s);
    set_label(&x->op, label, n);
    x->op.cap_rows = limit;
    x->op.rows = (struct tn_row *)(x + 1);
    return pwait_tnop(d->pw, s, &x->op, list_done);
}

enum sess_handled tndb_db_inc(struct tndb *d, struct sess *s, const uint8_t tid[16],
                              const uint8_t cid[16], int64_t delta, const char *hdr, size_t hlen)
{
    struct tnop_ctx *x = op_new(d, PTN_DB_INC, tid, cid);
    if (!x)
        return no_memory(s);
    x->op.delta = delta;
    x->hlen = (uint16_t)(hlen < sizeof(x->hdr) ? hlen : 0);
    memcpy(x->hdr, hdr, x->hlen);
    return pwait_tnop(d->pw, s, &x->op, keyed_done);
}

enum sess_handled tndb_lookup(struct tndb *d, struct sess *s, const uint8_t tid[16],
                              const uint8_t *cid, bool can_wait, uint64_t now_ms, int *status,
                              const struct tn_row **row)
{
    const uint8_t *id = cid ? cid : tid;
    *status = 0;
    *row = NULL;
    for (unsigned i = 0; i < d->nrerun; i++) { /* this request's own outcome, once */
        struct rerun *r = &d->rerun[i];
        if (r->s == s && memcmp(r->a.id, id, 16) == 0 && now_ms < r->a.until_ms) {
            d->scratch = r->a;
            *status = d->scratch.status;
            if (*status == 200)
                *row = &d->scratch.row;
            *r = d->rerun[--d->nrerun];
            return SESS_H_DONE;
        }
        if (now_ms >= r->a.until_ms) /* its session died, or ran without it: expired */
            *r = d->rerun[--d->nrerun], i--;
    }
    struct absent *a = absent_slot(d, id);
    if (a->status && memcmp(a->id, id, 16) == 0 && now_ms < a->until_ms) {
        *status = a->status;
        if (a->status == 200)
            *row = &a->row;
        /* a failure, or a row (its value moves), is answered once: the next request asks
           again */
        if (a->status == 503 || a->status == 200)
            a->status = 0;
        return SESS_H_DONE;
    }
    if (!can_wait) {
        *status = 404;
        return SESS_H_DONE;
    }
    struct tnop_ctx *x = op_new(d, PTN_LOOKUP, tid, cid);
    if (!x)
        return no_memory(s);
    x->now_ms = now_ms;
    enum sess_handled h = pwait_tnop(d->pw, s, &x->op, lookup_done);
    return h == SESS_H_PARKED ? SESS_H_AGAIN : h;
}

/* ---------------------------------------------------------------- tenant keys */

/* A key write came back: 201 with the key (read back from the cache the persister filled),
   204, or the error. The text is wiped once answered. */
static void key_done(struct sess *s, struct persist_tnop *op, bool answered)
{
    struct tnop_ctx *x = (struct tnop_ctx *)op;
    const struct tnk_key *k;
    char body[TNK_JSON_MAX];
    if (!answered || op->status == -EIO || op->status == -ETIMEDOUT)
        unavailable(s, op, answered);
    else if (op->status == -ENOENT)
        sess_error(s, HTTP_E_NOT_FOUND, op->kind == PTN_KEY_CREATE ? "no such tenant"
                                                                   : "no such key in this tenant",
                   NULL, 0);
    else if (op->kind == PTN_KEY_DELETE)
        sess_respond(s, 204, NULL, NULL, 0, NULL, 0);
    else if (op->status == 0 && (k = tnk_find(x->ks, op->cid)))
        sess_respond(s, 201, SESS_JSON, NULL, 0, body, tnk_json(k, true, x->hdr, body));
    else
        sess_error(s, HTTP_E_TOO_MANY_KEYS,
                   "stored in PostgreSQL, but this node's key store is full (65,536 keys)", NULL,
                   0);
    memset(x->hdr, 0, sizeof(x->hdr));
}

enum sess_handled tndb_key_create(struct tndb *d, struct sess *s, const struct tnk_store *ks,
                                  const uint8_t tid[16], const uint8_t id[16],
                                  const uint8_t verifier[32], uint32_t scopes, int64_t expires_ms,
                                  int64_t now_ms, const char *text)
{
    struct tnop_ctx *x = op_new(d, PTN_KEY_CREATE, tid, id);
    if (!x)
        return no_memory(s);
    x->ks = ks;
    memcpy(x->op.label, verifier, SHA256_LEN);
    x->op.label_len = SHA256_LEN;
    x->op.value = scopes;
    x->op.max_delta = expires_ms;
    x->op.created_ms = now_ms;
    memcpy(x->hdr, text, TNK_TEXT_LEN + 1);
    return pwait_tnop(d->pw, s, &x->op, key_done);
}

enum sess_handled tndb_key_delete(struct tndb *d, struct sess *s, const uint8_t tid[16],
                                  const uint8_t kid[16])
{
    struct tnop_ctx *x = op_new(d, PTN_KEY_DELETE, tid, kid);
    return x ? pwait_tnop(d->pw, s, &x->op, key_done) : no_memory(s);
}
