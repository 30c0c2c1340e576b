/* keyapi — see keyapi.h. */
#include "keyapi.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "auth.h"
#include "clock.h"
#include "json.h"
#include "tenants.h"
#include "tndb.h"
#include "tnkeys.h"
#include "uuid.h"

static struct {
    struct tnk_store *st;
    uint64_t seed;
} K;

int keyapi_init(uint64_t seed)
{
    tnk_free(K.st); /* unit tests call app_init more than once */
    K.seed = seed;
    K.st = tnk_new(TNK_CAPACITY, seed);
    return K.st ? 0 : -ENOMEM;
}

struct tnk_store *keyapi_store(void)
{
    return K.st;
}

void keyapi_fini(void)
{
    tnk_free(K.st);
    K.st = NULL;
}

int keyapi_reset(void)
{
    if (!K.st || !tnk_count(K.st))
        return 0;
    return keyapi_init(K.seed);
}

void keyapi_tenant_deleted(const uint8_t tid[16])
{
    if (K.st)
        tnk_delete_tenant(K.st, tid);
}

/* The scope a tenant key needs on an admin route; false: the admin key only. */
static bool route_scope(enum route_id id, enum http_method meth, unsigned *scope)
{
    switch (id) {
    case ROUTE_TENANT: /* POST: the create-counter alias; DELETE: the tenant itself */
        *scope = TNK_COUNTER_CREATE;
        return meth == HTTP_M_POST;
    case ROUTE_TN_COUNTERS:
        *scope = meth == HTTP_M_POST ? TNK_COUNTER_CREATE : TNK_COUNTER_READ;
        return true;
    case ROUTE_TN_COUNTER:
        *scope = TNK_COUNTER_DELETE;
        return true;
    case ROUTE_TN_SET:
        *scope = TNK_COUNTER_SET;
        return true;
    case ROUTE_TN_HISTORY:
        *scope = TNK_COUNTER_HISTORY;
        return true;
    case ROUTE_TN_KEYS:
    case ROUTE_TN_KEY:
        *scope = TNK_KEYS_MANAGE;
        return true;
    default:
        return false;
    }
}

int keyapi_auth(struct sess *s, const struct http_req *req, const struct route_match *m)
{
    unsigned scope = 0;
    uint8_t tid[16];
    /* a malformed tenant id is no tenant of any key (the admin key gets its 400) */
    bool tenant = route_scope(m->id, req->method, &scope) && m->tid &&
                  uuid_parse(m->tid, m->tid_len, tid) == 0;
    return auth_tenant(s, req, K.st, tenant ? tid : NULL, scope);
}

static enum sess_handled fail(struct sess *s, enum http_err e, const char *msg)
{
    sess_error(s, e, msg, NULL, 0);
    return SESS_H_DONE;
}

static const char *skip_ws(const char *p, const char *end)
{
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
        p++;
    return p;
}

/* The scope bits of a JSON array of scope names (already valid JSON): 0 and *bits, or -EINVAL
   (not an array of known names, or empty). Names with escapes are no scope name. */
static int parse_scopes(const char *p, size_t n, unsigned *bits)
{
    const char *end = p + n;
    *bits = 0;
    p = skip_ws(p, end);
    if (p == end || *p++ != '[')
        return -EINVAL;
    for (;;) {
        p = skip_ws(p, end);
        if (p == end || *p != '"')
            return -EINVAL; /* "]" of [] too: a key of no scope is refused */
        const char *q = ++p;
        while (p < end && *p != '"' && *p != '\\')
            p++;
        unsigned b = p < end && *p == '"' ? tnk_scope_bit(q, (size_t)(p - q)) : 0;
        if (!b)
            return -EINVAL;
        *bits |= b;
        p = skip_ws(p + 1, end);
        if (p < end && *p == ']')
            return 0;
        if (p == end || *p++ != ',')
            return -EINVAL;
    }
}

/* The RFC 3339 time of a JSON string value (raw text, no escapes): 0 and *ms, or -EINVAL. */
static int parse_expiry(const char *p, size_t n, int64_t *ms)
{
    if (n < 2 || p[0] != '"' || p[n - 1] != '"' || memchr(p, '\\', n))
        return -EINVAL;
    if (tnk_parse_time(p + 1, n - 2, ms) < 0)
        return -EINVAL;
    if (*ms <= 0)
        *ms = 1; /* 0 means "never": a date before 1970 has expired already */
    return 0;
}

static bool is_null(const char *p, size_t n)
{
    return n == 4 && memcmp(p, "null", 4) == 0;
}

/* The body of POST /tenants/{tid}/keys ({"scopes"?, "expires_at"?}; empty = {}): false after
   answering 400. */
static bool create_args(struct sess *s, const struct http_req *req, unsigned *scopes,
                        int64_t *expires_ms)
{
    const char *sc = NULL, *ex = NULL;
    size_t sn = 0, en = 0;
    struct json_field f[] = {
        {.key = "scopes", .type = JSON_T_RAW, .out = &sc, .len = &sn},
        {.key = "expires_at", .type = JSON_T_RAW, .out = &ex, .len = &en},
    };
    *scopes = TNK_SCOPES_DEFAULT;
    *expires_ms = 0;
    if (req->body_len && json_parse_object(req->body, req->body_len, f, 2) != JSON_OK) {
        fail(s, HTTP_E_INVALID_JSON, "body must be one JSON object");
        return false;
    }
    if (f[0].present && !is_null(sc, sn) && parse_scopes(sc, sn, scopes) < 0) {
        fail(s, HTTP_E_INVALID_SCOPE,
             "scopes must be a non-empty array of counter:read, counter:create, counter:set, "
             "counter:delete, counter:history, keys:manage");
        return false;
    }
    if (f[1].present && !is_null(ex, en) && parse_expiry(ex, en, expires_ms) < 0) {
        fail(s, HTTP_E_INVALID_EXPIRES_AT, "expires_at must be an RFC 3339 date-time or null");
        return false;
    }
    return true;
}

/* The ids of the path (kid NULL: the tenant's only): false after answering 400 INVALID_ID. */
static bool path_ids(struct sess *s, const struct route_match *m, uint8_t tid[16], uint8_t *kid)
{
    if (uuid_parse(m->tid, m->tid_len, tid) < 0 ||
        (kid && uuid_parse(m->cid, m->cid_len, kid) < 0)) {
        fail(s, HTTP_E_INVALID_ID, kid ? "tenant and key ids must be UUIDs"
                                       : "tenant id must be a UUID");
        return false;
    }
    return true;
}

/* 201 with the one answer that shows the key's text. */
static enum sess_handled answer_created(struct sess *s, const struct tnk_key *k, const char *text)
{
    char body[TNK_JSON_MAX];
    sess_respond(s, 201, SESS_JSON, NULL, 0, body, tnk_json(k, true, text, body));
    return SESS_H_DONE;
}

/* POST /tenants/{tid}/keys */
static enum sess_handled create_key(struct sess *s, const struct http_req *req,
                                    const struct route_match *m, const struct tn_store *st,
                                    struct tndb *db)
{
    uint8_t tid[16];
    unsigned scopes;
    int64_t exp;
    if (!path_ids(s, m, tid, NULL) || !create_args(s, req, &scopes, &exp))
        return SESS_H_DONE;
    const struct tn_tenant *t = tn_tenant_find(st, tid);
    if (!t && !db) /* with --db the database says whether the tenant lives */
        return fail(s, HTTP_E_NOT_FOUND, "no such tenant");
    const struct tnk_key *live[TNK_PER_TENANT];
    if (tnk_list(K.st, tid, live, TNK_PER_TENANT) == TNK_PER_TENANT)
        return fail(s, HTTP_E_TOO_MANY_KEYS, "a tenant has at most 100 live keys");
    uint8_t id[16], ver[SHA256_LEN];
    char text[TNK_TEXT_LEN + 1];
    const struct tnk_key *k;
    int64_t now = (int64_t)clock_ms(CLOCK_REALTIME_COARSE);
    int rc = tnk_mint(id, text, ver);
    if (rc == 0 && db) { /* stored in PostgreSQL first, answered after its commit */
        enum sess_handled h = tndb_key_create(db, s, K.st, tid, id, ver, scopes, exp, now, text);
        memset(text, 0, sizeof(text));
        return h;
    }
    if (rc == 0)
        rc = tnk_insert(K.st, id, tid, ver, scopes, exp, now, false, &k);
    if (rc == -ENOSPC)
        return fail(s, HTTP_E_TOO_MANY_KEYS, "this node's key store is full (65,536 keys)");
    if (rc < 0) {
        sess_error(s, HTTP_E_OVERLOADED, "out of memory", SESS_HDRS(SESS_RETRY_AFTER_1));
        return SESS_H_DONE;
    }
    answer_created(s, k, text);
    memset(text, 0, sizeof(text));
    return SESS_H_DONE;
}

/* GET /tenants/{tid}/keys: the live keys, never a secret or a verifier. */
static enum sess_handled list_keys(struct sess *s, const struct route_match *m,
                                   const struct tn_store *st, bool db)
{
    uint8_t tid[16];
    if (!path_ids(s, m, tid, NULL))
        return SESS_H_DONE;
    if (!db && !tn_tenant_find(st, tid)) /* with --db src/tnapi found it first */
        return fail(s, HTTP_E_NOT_FOUND, "no such tenant");
    const struct tnk_key *page[TNK_PER_TENANT];
    unsigned n = tnk_list(K.st, tid, page, TNK_PER_TENANT);
    /* admin path: one malloc of at most 100 x 512 bytes */
    size_t cap = (size_t)n * TNK_JSON_MAX + 32;
    char *body = malloc(cap);
    if (!body) {
        sess_error(s, HTTP_E_OVERLOADED, "out of memory", SESS_HDRS(SESS_RETRY_AFTER_1));
        return SESS_H_DONE;
    }
    struct json_w w;
    json_w_init(&w, body, cap);
    json_w_lit(&w, "{\"keys\":[");
    for (unsigned i = 0; i < n; i++) {
        char o[TNK_JSON_MAX];
        if (i)
            json_w_lit(&w, ",");
        json_w_raw(&w, o, tnk_json(page[i], false, NULL, o));
    }
    json_w_lit(&w, "]}");
    ssize_t len = json_w_end(&w);
    sess_respond(s, 200, SESS_JSON, NULL, 0, body, len < 0 ? 0 : (size_t)len);
    free(body);
    return SESS_H_DONE;
}

/* DELETE /tenants/{tid}/keys/{kid} → 204; then 404. */
static enum sess_handled delete_key(struct sess *s, const struct route_match *m, struct tndb *db)
{
    uint8_t tid[16], kid[16];
    if (!path_ids(s, m, tid, kid))
        return SESS_H_DONE;
    if (db) /* revoked in PostgreSQL; this node's cache is flagged from the returned row */
        return tndb_key_delete(db, s, tid, kid);
    const struct tnk_key *k = tnk_find(K.st, kid);
    if (!k || tnk_deleted(k) || memcmp(k->tenant, tid, 16) != 0 || tnk_delete(K.st, k) < 0)
        return fail(s, HTTP_E_NOT_FOUND, "no such key in this tenant");
    sess_respond(s, 204, NULL, NULL, 0, NULL, 0);
    return SESS_H_DONE;
}

enum sess_handled keyapi_handle(struct sess *s, const struct http_req *req,
                                const struct route_match *m, const struct tn_store *st,
                                struct tndb *db)
{
    if (m->id == ROUTE_TN_KEY)
        return delete_key(s, m, db);
    if (m->id != ROUTE_TN_KEYS)
        return fail(s, HTTP_E_NOT_FOUND, "no such route");
    return req->method == HTTP_M_POST ? create_key(s, req, m, st, db)
                                      : list_keys(s, m, st, db != NULL);
}
