/* tnapi — see tnapi.h. */
#include "tnapi.h"

#include <ck_pr.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "auth.h"
#include "clientaddr.h"
#include "clock.h"
#include "config.h"
#include "cors.h"
#include "decimal.h"
#include "fmt.h"
#include "json.h"
#include "keyapi.h"
#include "lit.h"
#include "live.h"
#include "log.h"
#include "persist.h"
#include "pwait.h"
#include "ratelimit.h"
#include "tenants.h"
#include "tndb.h"
#include "uuid.h"

/* Read-only after tnapi_init but for rl and rl_gen (CAS, see shared_rl). The CORS origins and
   the rate limit are reloadable: they come from the request's struct live (src/live). */
static struct {
    struct tn_store *st;
    uint64_t seed;
    uint32_t rl_cap;
    uint32_t max_t, max_c; /* --tenant-cache, --counter-cache */
    struct rl_table *rl; /* shared by the workers (one bucket per client per node); set once
                            (CAS) the first time the limit is on, freed by tnapi_fini */
    uint64_t rl_gen;     /* the settings generation whose policy rl has (CAS: newer only) */
    unsigned nworkers;
    struct ca_net proxies[CA_MAX_NETS]; /* --trusted-proxies (validated by config) */
    size_t nproxies;
} T;

/* The client a public request is rate-limited as (SPEC §2.3): the peer, or behind a trusted
   proxy the address it forwarded for (src/clientaddr). */
static void client_of(const struct sess *s, const struct http_req *req, uint8_t *family,
                      uint8_t addr[16])
{
    const struct http_hdr *xff = T.nproxies ? http_header(req, LIT("x-forwarded-for")) : NULL;
    const struct http_hdr *fwd = T.nproxies ? http_header(req, LIT("forwarded")) : NULL;
    ca_client(T.proxies, T.nproxies, s->peer_family, s->peer, xff ? xff->value : NULL,
              xff ? xff->value_len : 0, fwd ? fwd->value : NULL, fwd ? fwd->value_len : 0,
              family, addr);
}

struct tnapi_worker {
    unsigned idx;
    struct rl_table *rl;  /* T.rl once the rate limit was on (not owned) */
    bool rl_on;           /* the rate limit of live_gen is on (rl is then non-NULL) */
    uint64_t live_gen;    /* generation of the settings rl was last set from; 0 = never */
    struct uuid_gen gen;
    struct pwait *pw;     /* ?sync=1 answers wait here for their commit */
    struct tndb *db;      /* with --db: the writes and cache misses PostgreSQL decides */
};

/* Context of one request: the extra header lines every answer of it carries. */
struct rq {
    struct sess *s;
    const struct http_req *req;
    uint64_t now_ms;
    bool again;           /* parked on a cache-miss lookup: run again (SESS_H_AGAIN) */
    const struct tn_row *row; /* a miss found in PostgreSQL that the full cache cannot take */
    char hdr[RL_HDR_MAX + CORS_HDR_MAX + 128]; /* + "Allow: ..." of a preflight */
    size_t hlen;
};
_Static_assert(sizeof(((struct rq *)0)->hdr) <= TNDB_HDR_MAX, "a keyed answer keeps these lines");

int tnapi_init(const struct config *cfg, unsigned nworkers)
{
    tn_free(T.st); /* unit tests call app_init more than once */
    rl_free(T.rl);
    memset(&T, 0, sizeof(T));
    T.nworkers = nworkers;
    if (getrandom(&T.seed, sizeof(T.seed), 0) != sizeof(T.seed))
        T.seed = (uint64_t)(int64_t)clock_ms(CLOCK_REALTIME_COARSE);
    /* test hook (tests/integ/test_tenants.c): a tiny table, so LRU eviction shows with a few
       dozen client addresses instead of 65,537 */
    T.rl_cap = cfg->debug_rl_capacity ? cfg->debug_rl_capacity : RL_DEFAULT_CAPACITY;
    char err[128];
    if (ca_parse_nets(cfg->trusted_proxies, T.proxies, CA_MAX_NETS, &T.nproxies, err,
                      sizeof(err)) < 0)
        return -EINVAL; /* config refused it already */
    T.max_t = cfg->tenant_cache;
    T.max_c = cfg->counter_cache;
    if (!T.max_t || !T.max_c)
        return -EINVAL; /* config refuses 0: a struct config not filled by cfg_load */
    T.st = tn_new(nworkers, T.max_t, T.max_c, TNAPI_IDEM_CAPACITY, T.seed);
    if (!T.st || keyapi_init(T.seed) < 0)
        return -ENOMEM;
    if (!cfg->db[0])
        log_info("tenant counters are memory-only: not persisted, lost on restart",
                 LOG_U("max_tenants", T.max_t), LOG_U("max_counters", T.max_c),
                 LOG_U("idempotency_records", TNAPI_IDEM_CAPACITY));
    return 0;
}

struct tn_store *tnapi_store(void)
{
    return T.st;
}

int tnapi_reset(void)
{
    if (!T.st || keyapi_reset() < 0)
        return T.st ? -ENOMEM : 0;
    uint32_t nt, nc, ni;
    tn_sizes(T.st, &nt, &nc, &ni);
    if (!nt && !nc && !ni)
        return 0;
    unsigned nw = T.nworkers;
    tn_free(T.st);
    T.st = tn_new(nw, T.max_t, T.max_c, TNAPI_IDEM_CAPACITY, T.seed);
    return T.st ? 0 : -ENOMEM;
}

void tnapi_fini(void)
{
    keyapi_fini();
    tn_free(T.st);
    rl_free(T.rl);
    memset(&T, 0, sizeof(T));
}

/* The shared table with L's policy: created by the first worker that needs it (CAS; a loser
   frees its copy), the policy set by the first worker that sees a newer generation, so a
   worker still on an older one does not undo it (unless it stalls between its CAS and its
   rl_set_policy while the next reload is applied: reloads are seconds apart). NULL on ENOMEM. */
static struct rl_table *shared_rl(const struct live *L)
{
    struct rl_table *rl = ck_pr_load_ptr(&T.rl);
    if (!rl) {
        struct rl_table *n = rl_new(T.rl_cap, L->rate, L->burst, T.seed);
        if (!n)
            return NULL;
        if (ck_pr_cas_ptr_value(&T.rl, NULL, n, &rl))
            rl = n;
        else
            rl_free(n);
    }
    uint64_t g = ck_pr_load_64(&T.rl_gen);
    while (g < L->gen) {
        if (ck_pr_cas_64_value(&T.rl_gen, g, L->gen, &g)) {
            rl_set_policy(rl, L->rate, L->burst);
            break;
        }
    }
    return rl;
}

struct tnapi_worker *tnapi_worker_new(unsigned idx, struct pwait *pw)
{
    struct tnapi_worker *w = calloc(1, sizeof(*w));
    if (!w)
        return NULL;
    w->idx = idx;
    w->pw = pw;
    uuid_gen_init(&w->gen);
    if (persist_enabled() && !(w->db = tndb_new(T.st, pw))) {
        free(w);
        return NULL;
    }
    const struct live *L = live_current();
    /* the table for the start-up settings: allocation failure is fatal */
    if (L && L->rate && !(w->rl = shared_rl(L))) {
        free(w);
        return NULL;
    }
    w->rl_on = w->rl != NULL;
    w->live_gen = L ? L->gen : 0;
    return w;
}

/* The settings changed (SIGHUP): follow their rate limit. Once per reload per worker, never per
   request; the first time the limit is turned on the shared 1 MiB table is allocated, and it
   is kept when it is turned off again (a client's bucket then starts full when it comes back). */
static void follow_settings(struct tnapi_worker *w, const struct live *L)
{
    w->live_gen = L->gen;
    if (!L->rate) {
        w->rl_on = false;
        return;
    }
    if (!(w->rl = shared_rl(L))) {
        log_error("rate limit not applied on this worker: out of memory", LOG_U("worker", w->idx));
        w->rl_on = false;
        return;
    }
    w->rl_on = true;
}

void tnapi_worker_free(struct tnapi_worker *w)
{
    if (!w)
        return;
    tndb_free(w->db);
    free(w); /* w->rl is T.rl: tnapi_fini frees it */
}

bool tnapi_route(enum route_id id)
{
    switch (id) {
    case ROUTE_TENANTS:
    case ROUTE_TENANT:
    case ROUTE_TN_COUNTERS:
    case ROUTE_TN_COUNTER:
    case ROUTE_TN_INC:
    case ROUTE_TN_SET:
    case ROUTE_TN_HISTORY:
    case ROUTE_TN_KEYS:
    case ROUTE_TN_KEY:
        return true;
    default:
        return false;
    }
}

/* The public methods of a route (CORS preflight), or NULL when all of its methods are admin. */
static const char *public_methods(enum route_id id)
{
    switch (id) {
    case ROUTE_TENANT:
    case ROUTE_TN_COUNTER:
        return "GET, HEAD, OPTIONS";
    case ROUTE_TN_INC:
        return "POST, OPTIONS";
    default:
        return NULL;
    }
}

static bool is_admin(enum route_id id, enum http_method meth)
{
    if (id == ROUTE_TENANT || id == ROUTE_TN_COUNTER) /* POST /tenants/{tid}: the create-counter
                                                          alias; DELETE */
        return meth == HTTP_M_POST || meth == HTTP_M_DELETE;
    return id != ROUTE_TN_INC;
}

static char *put(char *p, const char *s)
{
    size_t n = strlen(s);
    memcpy(p, s, n);
    return p + n;
}

/* The answers of a request, with its header lines. Both are SESS_H_DONE: an append that failed
   (-ENOMEM) is the session's to answer (it sees nothing was written and sends 503). */
static enum sess_handled reply(struct rq *q, int status, const char *body, size_t n)
{
    sess_respond(q->s, status, SESS_JSON, q->hdr, q->hlen, body, n);
    return SESS_H_DONE;
}

static enum sess_handled fail(struct rq *q, enum http_err e, const char *msg)
{
    sess_error(q->s, e, msg, q->hdr, q->hlen);
    return SESS_H_DONE;
}

/* 503 OVERLOADED with Retry-After instead of the request's fields: memory ran out. */
static enum sess_handled out_of_memory(struct rq *q)
{
    sess_error(q->s, HTTP_E_OVERLOADED, "out of memory", SESS_HDRS(SESS_RETRY_AFTER_1));
    return SESS_H_DONE;
}

/* Value of query parameter name (raw, not percent-decoded: every parameter but ?label= is a
   number or a UUID; form_decode decodes that one). true and (v, n) if present. */
static bool query_get(const struct http_req *req, const char *name, const char **v, size_t *n)
{
    size_t nl = strlen(name);
    const char *q = req->query, *end = q ? q + req->query_len : NULL;
    while (q && q < end) {
        const char *amp = memchr(q, '&', (size_t)(end - q));
        const char *e = amp ? amp : end;
        if ((size_t)(e - q) > nl && memcmp(q, name, nl) == 0 && q[nl] == '=') {
            *v = q + nl + 1;
            *n = (size_t)(e - q) - nl - 1;
            return true;
        }
        if ((size_t)(e - q) == nl && memcmp(q, name, nl) == 0) {
            *v = e;
            *n = 0;
            return true;
        }
        q = amp ? amp + 1 : end;
    }
    return false;
}

/* 409 TOO_MANY_*: it exists in PostgreSQL, but this node's full cache (N as configured, full of
   records with unflushed increments) cannot take it now. */
static void cache_full(struct rq *q, bool counter)
{
    char msg[128], *p = msg;
    p = put(p, "it exists in PostgreSQL, but this node's cache is full (");
    p += fmt_u64(p, counter ? T.max_c : T.max_t);
    p = put(p, counter ? " counters, --counter-cache)" : " tenants, --tenant-cache)");
    *p = 0;
    fail(q, counter ? HTTP_E_TOO_MANY_COUNTERS : HTTP_E_TOO_MANY_TENANTS, msg);
}

/* A cache miss (with --db): looked up in PostgreSQL (q->again: the request runs again once the
   answer is in), or answered with what was found before (404, cache full, 503), or (q->row) a
   row found that the full cache could not take, for the caller to answer from. */
static void miss(struct tnapi_worker *w, struct rq *q, const uint8_t tid[16], const uint8_t *cid,
                 const char *not_found)
{
    int st;
    if (!w->db) {
        fail(q, HTTP_E_NOT_FOUND, not_found);
        return;
    }
    if (tndb_lookup(w->db, q->s, tid, cid, !q->req->chunked, q->now_ms, &st, &q->row) ==
        SESS_H_AGAIN) {
        q->again = true;
        return;
    }
    if (st == 200)
        return; /* q->row: the caller answers from it */
    if (st == 404)
        fail(q, HTTP_E_NOT_FOUND, not_found);
    else if (st == 409)
        cache_full(q, cid != NULL);
    else if (st == 503)
        fail(q, HTTP_E_PERSISTENCE_UNAVAILABLE, "PostgreSQL did not answer the lookup in time");
}

/* The ids of the path (cid NULL: the tenant's only): false after answering 400 INVALID_ID.
   Both are checked for syntax before either is looked up, so a malformed id is always a 400. */
static bool path_ids(struct rq *q, const struct route_match *m, uint8_t tid[16], uint8_t *cid)
{
    if (uuid_parse(m->tid, m->tid_len, tid) < 0) {
        fail(q, HTTP_E_INVALID_ID, cid ? "tenant and counter ids must be UUIDs"
                                       : "tenant id must be a UUID");
        return false;
    }
    if (cid && uuid_parse(m->cid, m->cid_len, cid) < 0) {
        fail(q, HTTP_E_INVALID_ID, "tenant and counter ids must be UUIDs");
        return false;
    }
    return true;
}

/* The tenant of the path, or NULL after answering 400 INVALID_ID / 404 (or parking a lookup). */
static const struct tn_tenant *path_tenant(struct tnapi_worker *w, struct rq *q,
                                           const struct route_match *m)
{
    uint8_t id[16];
    if (!path_ids(q, m, id, NULL))
        return NULL;
    const struct tn_tenant *t = tn_tenant_find(T.st, id);
    if (!t)
        miss(w, q, id, NULL, "no such tenant");
    else
        tn_tenant_touch(t, q->now_ms); /* eviction: least recently used */
    return t;
}

/* The counter of the path, or NULL after answering 400 INVALID_ID / 404 (or parking a lookup). */
static const struct tn_counter *path_counter(struct tnapi_worker *w, struct rq *q,
                                             const struct route_match *m)
{
    uint8_t tid[16], cid[16];
    if (!path_ids(q, m, tid, cid))
        return NULL;
    const struct tn_tenant *t = tn_tenant_find(T.st, tid);
    const struct tn_counter *c = t ? tn_counter_find(T.st, t, cid) : NULL;
    if (!c) {
        miss(w, q, tid, cid, t ? "no such counter in this tenant" : "no such tenant");
        return NULL;
    }
    tn_counter_touch(c, q->now_ms); /* eviction: least recently used */
    tn_tenant_touch(t, q->now_ms);
    return c;
}

/* 409 TOO_MANY_*: "the <what> limit (N, --<what>-cache) is reached", N as configured. */
static enum sess_handled limit_reached(struct rq *q, enum http_err e, const char *what,
                                       uint32_t n)
{
    char msg[96], *p = msg;
    p = put(p, "the ");
    p = put(p, what);
    p = put(p, " limit (");
    p += fmt_u64(p, n);
    p = put(p, ", --");
    p = put(p, what);
    p = put(p, "-cache) is reached");
    *p = 0;
    return fail(q, e, msg);
}

static enum sess_handled json_error(struct rq *q)
{
    return fail(q, HTTP_E_INVALID_JSON, "body must be one JSON object");
}

/* POST /tenants {"label"} */
static enum sess_handled create_tenant(struct tnapi_worker *w, struct rq *q,
                                       const struct http_req *req)
{
    char label[TN_LABEL_MAX + 1];
    size_t ll = 0;
    struct json_field f[] = {{.key = "label", .type = JSON_T_STRING, .out = label,
                              .cap = sizeof(label), .len = &ll}};
    if (json_parse_object(req->body, req->body_len, f, 1) != JSON_OK)
        return json_error(q);
    if (!f[0].present || f[0].err != JSON_OK || !tn_label_valid(label, ll))
        return fail(q, HTTP_E_INVALID_LABEL, "label must be 1-255 bytes of [A-Za-z0-9 _.-]");
    int64_t now = (int64_t)clock_ms(CLOCK_REALTIME_COARSE);
    if (w->db) { /* answered once PostgreSQL committed it: it decides whether the label is free */
        uint8_t id[16];
        return uuid_v4(&w->gen, id) < 0 ? out_of_memory(q)
                                         : tndb_create_tenant(w->db, q->s, id, label, ll, now);
    }
    const struct tn_tenant *t;
    int rc = tn_tenant_create(T.st, &w->gen, label, ll, now, &t);
    if (rc == -EEXIST)
        return fail(q, HTTP_E_DUPLICATE_LABEL, "a tenant with this label exists");
    if (rc == -ENOSPC)
        return limit_reached(q, HTTP_E_TOO_MANY_TENANTS, "tenant", T.max_t);
    if (rc < 0)
        return out_of_memory(q);
    char body[TN_JSON_MAX];
    return reply(q, 201, body, tn_tenant_json(t, body));
}

/* POST /tenants/{tid}/counters (and POST /tenants/{tid}) {"label"?, "initial_value"?,
   "max_delta"?}; an empty body is {}. */
static enum sess_handled create_counter(struct tnapi_worker *w, struct rq *q,
                                        const struct http_req *req, const struct route_match *m)
{
    uint8_t tid[16];
    const struct tn_tenant *t = NULL;
    if (w->db ? !path_ids(q, m, tid, NULL) : !(t = path_tenant(w, q, m)))
        return SESS_H_DONE; /* answered 400/404 (with --db the database says 404) */
    char label[TN_LABEL_MAX + 1];
    size_t ll = 0;
    int64_t initial = 0, max_delta = TN_MAX_DELTA_DEFAULT;
    struct json_field f[] = {
        {.key = "label", .type = JSON_T_STRING, .out = label, .cap = sizeof(label), .len = &ll},
        {.key = "initial_value", .type = JSON_T_INT, .out = &initial},
        {.key = "max_delta", .type = JSON_T_INT, .out = &max_delta},
    };
    if (req->body_len && json_parse_object(req->body, req->body_len, f, 3) != JSON_OK)
        return json_error(q);
    bool has_label = f[0].present;
    if (has_label && (f[0].err != JSON_OK || !tn_label_valid(label, ll)))
        return fail(q, HTTP_E_INVALID_LABEL, "label must be 1-255 bytes of [A-Za-z0-9 _.-]");
    if (f[1].present && f[1].err != JSON_OK)
        return fail(q, HTTP_E_INVALID_VALUE, "initial_value must be a 64-bit signed integer");
    if (f[2].present && (f[2].err != JSON_OK || max_delta < 1))
        return fail(q, HTTP_E_INVALID_MAX_DELTA, "max_delta must be an integer >= 1");
    int64_t now = (int64_t)clock_ms(CLOCK_REALTIME_COARSE);
    if (w->db) {
        uint8_t cid[16];
        return uuid_v4(&w->gen, cid) < 0
                   ? out_of_memory(q)
                   : tndb_create_counter(w->db, q->s, tid, cid, has_label ? label : NULL, ll,
                                         initial, max_delta, now);
    }
    const struct tn_counter *c;
    int rc = tn_counter_create(T.st, &w->gen, t, has_label ? label : NULL, ll, initial, max_delta,
                               now, &c);
    if (rc == -EEXIST)
        return fail(q, HTTP_E_DUPLICATE_LABEL, "a counter with this label exists in this tenant");
    if (rc == -ENOENT)
        return fail(q, HTTP_E_NOT_FOUND, "no such tenant"); /* deleted meanwhile */
    if (rc == -ENOSPC)
        return limit_reached(q, HTTP_E_TOO_MANY_COUNTERS, "counter", T.max_c);
    if (rc < 0)
        return out_of_memory(q);
    char body[TN_JSON_MAX];
    return reply(q, 201, body, tn_counter_json(T.st, c, body));
}

/* ?limit= (1..TN_LIST_MAX, default 20) and ?cursor= (raw; *cn 0 = none) of a listing (SPEC
   §2.3). false after answering 400 INVALID_LIMIT. */
static bool page_args(struct rq *q, const struct http_req *req, unsigned *limit, const char **cv,
                      size_t *cn)
{
    const char *v;
    size_t n;
    int64_t l = 20;
    if (query_get(req, "limit", &v, &n) &&
        (dec_parse_i64(v, n, &l) < 0 || l < 1 || l > TN_LIST_MAX)) {
        fail(q, HTTP_E_INVALID_LIMIT, "limit must be an integer 1..100");
        return false;
    }
    *limit = (unsigned)l;
    if (!query_get(req, "cursor", cv, cn))
        *cn = 0;
    return true;
}

static enum sess_handled bad_cursor(struct rq *q)
{
    return fail(q, HTTP_E_INVALID_CURSOR, TNDB_MSG_BAD_CURSOR);
}

/* 200 with a page of a listing (tn_page_json). */
static enum sess_handled answer_page(struct rq *q, const char *key, const void *items, int cnt,
                                     size_t (*obj)(const void *items, int i, char *out),
                                     const uint8_t *next)
{
    /* admin path, not per public request: one malloc of at most 100 × TN_JSON_MAX = 64 KiB */
    char *body = malloc(TN_PAGE_CAP(cnt));
    if (!body)
        return out_of_memory(q);
    reply(q, 200, body, tn_page_json(body, key, items, cnt, obj, next));
    free(body);
    return SESS_H_DONE;
}

static size_t counter_obj(const void *items, int i, char *out)
{
    return tn_counter_json(T.st, ((const struct tn_counter *const *)items)[i], out);
}

static size_t tenant_obj(const void *items, int i, char *out)
{
    return tn_tenant_json(((const struct tn_tenant *const *)items)[i], out);
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = (char)(c | 0x20);
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* A query value form-decoded (%XX, '+' = space) into out (cap bytes): its length, or -1 when
   malformed or longer than cap. */
static ssize_t form_decode(const char *v, size_t n, char *out, size_t cap)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++, o++) {
        if (o == cap)
            return -1;
        if (v[i] == '%') {
            int hi = i + 2 < n ? hexval(v[i + 1]) : -1, lo = i + 2 < n ? hexval(v[i + 2]) : -1;
            if (hi < 0 || lo < 0)
                return -1;
            out[o] = (char)(hi << 4 | lo);
            i += 2;
        } else {
            out[o] = v[i] == '+' ? ' ' : v[i];
        }
    }
    return (ssize_t)o;
}

/* ?cursor= parsed into cur: false after answering 400 INVALID_CURSOR. */
static bool cursor_arg(struct rq *q, const char *v, size_t n, uint8_t cur[16])
{
    if (n && uuid_parse(v, n, cur) < 0) {
        bad_cursor(q);
        return false;
    }
    return true;
}

/* GET /tenants/{tid}/counters?limit=&cursor= and ?label=L (the one counter labelled L, SPEC
   §2.3 labels being unique per tenant: a page of 0 or 1). With --db from PostgreSQL (this node
   caches only some of them), else from the store. */
static enum sess_handled list_counters(struct tnapi_worker *w, struct rq *q,
                                       const struct http_req *req, const struct route_match *m)
{
    const char *v;
    size_t n;
    unsigned limit;
    uint8_t tid[16], cur[16];
    if (!path_ids(q, m, tid, NULL) || !page_args(q, req, &limit, &v, &n) ||
        !cursor_arg(q, v, n, cur))
        return SESS_H_DONE;
    bool has_cur = n != 0;
    char label[TN_LABEL_MAX];
    ssize_t ll = -1;
    if (query_get(req, "label", &v, &n)) {
        ll = form_decode(v, n, label, sizeof(label));
        if (ll < 0 || !tn_label_valid(label, (size_t)ll))
            return fail(q, HTTP_E_INVALID_LABEL, "label must be 1-255 bytes of [A-Za-z0-9 _.-]");
    }
    if (w->db)
        return tndb_list(w->db, q->s, tid, has_cur ? cur : NULL, ll < 0 ? NULL : label,
                         ll < 0 ? 0 : (size_t)ll, limit);
    const struct tn_tenant *t = tn_tenant_find(T.st, tid);
    if (!t)
        return fail(q, HTTP_E_NOT_FOUND, "no such tenant");
    const struct tn_counter *page[TN_LIST_MAX], *after = NULL;
    /* a cursor deleted since its page is still a place in the list */
    if (has_cur && !(after = tn_counter_find_any(T.st, t, cur)))
        return bad_cursor(q);
    bool more = false;
    int cnt;
    if (ll >= 0) {
        page[0] = tn_counter_find_label(T.st, t, label, (size_t)ll);
        cnt = page[0] != NULL;
    } else if ((cnt = tn_counter_list(T.st, t, after, limit, page, &more)) < 0) {
        return bad_cursor(q);
    }
    return answer_page(q, "counters", page, cnt, counter_obj, more ? page[cnt - 1]->id : NULL);
}

/* GET /tenants?limit=&cursor= (admin): live tenants in creation order (with --db from
   PostgreSQL, which holds every tenant). */
static enum sess_handled list_tenants(struct tnapi_worker *w, struct rq *q,
                                      const struct http_req *req)
{
    const char *v;
    size_t n;
    unsigned limit;
    uint8_t cur[16];
    if (!page_args(q, req, &limit, &v, &n) || !cursor_arg(q, v, n, cur))
        return SESS_H_DONE;
    if (w->db)
        return tndb_list(w->db, q->s, NULL, n ? cur : NULL, NULL, 0, limit);
    const struct tn_tenant *page[TN_LIST_MAX], *after = NULL;
    if (n && !(after = tn_tenant_find_any(T.st, cur)))
        return bad_cursor(q);
    bool more;
    int cnt = tn_tenant_list(T.st, after, limit, page, &more);
    return answer_page(q, "tenants", page, cnt, tenant_obj, more ? page[cnt - 1]->id : NULL);
}

/* DELETE /tenants/{tid} (admin): the tenant and its counters → 204; then 404 (SPEC §2.3). */
static enum sess_handled delete_tenant(struct tnapi_worker *w, struct rq *q,
                                       const struct route_match *m)
{
    uint8_t tid[16];
    if (w->db) /* answered after the commit; every node drops it within --sync-ms */
        return path_ids(q, m, tid, NULL) ? tndb_delete(w->db, q->s, tid, NULL) : SESS_H_DONE;
    const struct tn_tenant *t = path_tenant(w, q, m);
    if (!t)
        return SESS_H_DONE; /* answered 400/404 */
    if (tn_tenant_delete(T.st, t) < 0) /* a concurrent DELETE won */
        return fail(q, HTTP_E_NOT_FOUND, "no such tenant");
    keyapi_tenant_deleted(t->id);
    sess_respond(q->s, 204, NULL, q->hdr, q->hlen, NULL, 0);
    return SESS_H_DONE;
}

/* DELETE /tenants/{tid}/counters/{cid} (admin) → 204; then 404. */
static enum sess_handled delete_counter(struct tnapi_worker *w, struct rq *q,
                                        const struct route_match *m)
{
    uint8_t tid[16], cid[16];
    if (w->db)
        return path_ids(q, m, tid, cid) ? tndb_delete(w->db, q->s, tid, cid) : SESS_H_DONE;
    const struct tn_counter *c = path_counter(w, q, m);
    if (!c)
        return SESS_H_DONE; /* answered 400/404 */
    if (tn_counter_delete(T.st, c) < 0)
        return fail(q, HTTP_E_NOT_FOUND, "no such counter in this tenant");
    sess_respond(q->s, 204, NULL, q->hdr, q->hlen, NULL, 0);
    return SESS_H_DONE;
}

/* GET /tenants/{tid}/counters/{cid} (public): the counter with its live value. */
static enum sess_handled get_counter(struct tnapi_worker *w, struct rq *q,
                                     const struct route_match *m)
{
    const struct tn_counter *c = path_counter(w, q, m);
    char body[TN_JSON_MAX];
    if (!c && q->row) /* outside the full cache: the database's row */
        return reply(q, 200, body, tn_row_json(q->row, body));
    return c ? reply(q, 200, body, tn_counter_json(T.st, c, body)) : SESS_H_DONE;
}

/* ?name= as RFC 3339 into *ms (unchanged when absent): false after answering 400. */
static bool time_arg(struct rq *q, const struct http_req *req, const char *name, int64_t *ms)
{
    const char *v;
    size_t n;
    if (!query_get(req, name, &v, &n))
        return true;
    char t[64]; /* form-decoded: "+01:00" may come as %2B01:00 */
    ssize_t tl = form_decode(v, n, t, sizeof(t));
    if (tl < 0 || fmt_parse_time_ms(t, (size_t)tl, ms) < 0) {
        fail(q, HTTP_E_INVALID_RANGE, "from and to must be RFC 3339 times (2026-12-02T16:00:00Z)");
        return false;
    }
    return true;
}

/* GET /tenants/{tid}/counters/{cid}/history?bucket=minute|hour|day&from=&to= (admin, --db):
   the increments of the counter per bucket. Defaults: hour, to = now, from = 48 buckets
   before to; at most TNDB_HISTORY_MAX buckets a request. */
static enum sess_handled history(struct tnapi_worker *w, struct rq *q, const struct http_req *req,
                                 const struct route_match *m)
{
    uint8_t tid[16], cid[16];
    if (!path_ids(q, m, tid, cid))
        return SESS_H_DONE;
    if (!w->db)
        return fail(q, HTTP_E_PERSISTENCE_UNAVAILABLE,
                    "counter history is kept in PostgreSQL (--db); this server is memory-only");
    const char *v;
    size_t n;
    char b = 'h';
    if (query_get(req, "bucket", &v, &n)) {
        if (n == 6 && memcmp(v, "minute", 6) == 0)
            b = 'm';
        else if (n == 3 && memcmp(v, "day", 3) == 0)
            b = 'd';
        else if (!(n == 4 && memcmp(v, "hour", 4) == 0))
            return fail(q, HTTP_E_INVALID_BUCKET, "bucket must be minute, hour or day");
    }
    int64_t step = b == 'm' ? 60000 : b == 'h' ? 3600000 : 86400000;
    int64_t to = persist_history_now_ms() + 1, from = INT64_MIN;
    if (!time_arg(q, req, "to", &to) || !time_arg(q, req, "from", &from))
        return SESS_H_DONE;
    if (from == INT64_MIN)
        from = to - 48 * step;
    if (from >= to || (to - from) / step >= TNDB_HISTORY_MAX)
        return fail(q, HTTP_E_INVALID_RANGE,
                    "from must be before to, and at most 1440 buckets apart");
    return tndb_history(w->db, q->s, tid, cid, b, from - from % step, to);
}

static enum sess_handled answer_value(struct rq *q, const struct tn_counter *c, int64_t v)
{
    char body[TN_JSON_MAX];
    return reply(q, 200, body, tn_value_json(c->id, v, body));
}

/* POST /tenants/{tid}/counters/{cid}/inc?delta=N[&sync=1], Idempotency-Key optional. */
/* ?delta= (default 1) of an increment into *delta: true, or false after answering 400. */
static bool inc_delta(struct rq *q, const struct http_req *req, int64_t max_delta, int64_t *delta)
{
    const char *v;
    size_t n;
    *delta = 1;
    if (query_get(req, "delta", &v, &n) &&
        (dec_parse_i64(v, n, delta) < 0 || *delta < 1 || *delta > max_delta)) {
        char msg[96], *p = msg;
        p = put(p, "delta must be an integer 1..");
        p += fmt_i64(p, max_delta);
        *p = 0;
        fail(q, HTTP_E_INVALID_DELTA, msg);
        return false;
    }
    return true;
}

static const struct http_hdr *idem_key(struct rq *q, const struct http_req *req, bool *bad)
{
    const struct http_hdr *ik = http_header(req, LIT("idempotency-key"));
    *bad = ik && !tn_idem_key_valid(ik->value, ik->value_len);
    if (*bad)
        fail(q, HTTP_E_INVALID_IDEMPOTENCY_KEY,
             "Idempotency-Key must be 1-64 printable ASCII characters");
    return ik;
}

/* The increment of a counter the full cache does not hold (--db; its row r came from the
   lookup): made in the database, answered after its commit (so ?sync=1 holds as well). */
static enum sess_handled inc_uncached(struct tnapi_worker *w, struct rq *q,
                                      const struct http_req *req, const struct tn_row *r)
{
    int64_t delta;
    bool bad;
    if (!inc_delta(q, req, r->max_delta, &delta))
        return SESS_H_DONE;
    const struct http_hdr *ik = idem_key(q, req, &bad);
    if (bad)
        return SESS_H_DONE;
    if (ik)
        return tndb_keyed_inc(w->db, q->s, r->tid, r->id, ik->value, ik->value_len, delta, q->hdr,
                              q->hlen);
    return tndb_db_inc(w->db, q->s, r->tid, r->id, delta, q->hdr, q->hlen);
}

static enum sess_handled inc_counter(struct tnapi_worker *w, struct rq *q,
                                     const struct http_req *req, const struct route_match *m)
{
    const struct tn_counter *c = path_counter(w, q, m);
    if (!c) /* answered 400/404, or a row outside the full cache */
        return q->row ? inc_uncached(w, q, req, q->row) : SESS_H_DONE;
    const char *v;
    size_t n;
    int64_t delta;
    bool bad;
    if (!inc_delta(q, req, c->max_delta, &delta))
        return SESS_H_DONE;
    bool sync = query_get(req, "sync", &v, &n) && !(n == 1 && v[0] == '0');
    if (sync && !persist_enabled())
        return fail(q, HTTP_E_PERSISTENCE_UNAVAILABLE,
                    "?sync=1 needs PostgreSQL (--db); this server is memory-only");
    const struct http_hdr *ik = idem_key(q, req, &bad);
    int64_t value;
    int rc;
    if (bad)
        return SESS_H_DONE;
    if (ik) {
        if (w->db) /* the database decides, for every node; answered after its commit */
            return tndb_keyed_inc(w->db, q->s, tn_tenant_at(T.st, c->tenant)->id, c->id,
                                  ik->value, ik->value_len, delta, q->hdr, q->hlen);
        rc = tn_idem_inc(T.st, w->idx, c, ik->value, ik->value_len, delta, (int64_t)clock_ms(CLOCK_REALTIME_COARSE), &value);
        if (rc == -EEXIST)
            return fail(q, HTTP_E_IDEMPOTENCY_KEY_REUSED,
                        "this Idempotency-Key was used for a different request");
    } else {
        rc = tn_counter_inc(T.st, w->idx, c, delta, &value);
    }
    if (rc == -EOVERFLOW)
        return fail(q, HTTP_E_COUNTER_OVERFLOW,
                    "the counter would pass 9223372036854775807 and is never wrapped");
    if (sync) {
        /* Answered once the flush carrying this increment (or its idempotent replay's
           original) has committed, like POST /api/v1/increment. */
        char body[TN_JSON_MAX];
        int pr = pwait_commit(w->pw, q->s, q->hdr, q->hlen, body, tn_value_json(c->id, value, body));
        if (pr >= 0)
            return (enum sess_handled)pr;
        return fail(q, HTTP_E_PERSISTENCE_UNAVAILABLE, "cannot wait for the commit now");
    }
    return answer_value(q, c, value);
}

/* POST /tenants/{tid}/counters/{cid}/set {"value"} */
static enum sess_handled set_counter(struct tnapi_worker *w, struct rq *q,
                                     const struct http_req *req, const struct route_match *m)
{
    uint8_t tid[16], cid[16];
    const struct tn_counter *c = NULL;
    if (w->db ? !path_ids(q, m, tid, cid) : !(c = path_counter(w, q, m)))
        return SESS_H_DONE; /* answered 400/404 (with --db the database says 404) */
    int64_t value = 0;
    struct json_field f[] = {{.key = "value", .type = JSON_T_INT, .out = &value}};
    if (json_parse_object(req->body, req->body_len, f, 1) != JSON_OK)
        return json_error(q);
    if (!f[0].present || f[0].err != JSON_OK)
        return fail(q, HTTP_E_INVALID_VALUE, "value must be a 64-bit signed integer");
    if (w->db) /* absolute in the database, answered after its commit */
        return tndb_set(w->db, q->s, tid, cid, value);
    tn_counter_set(T.st, c, value);
    return answer_value(q, c, value);
}

/* The route's handler (admin checks done): SESS_H_PARKED when answered after a commit (--db
   writes, ?sync=1). */
static enum sess_handled route(struct tnapi_worker *w, struct rq *q, const struct http_req *req,
                               const struct route_match *m)
{
    enum sess_handled h = SESS_H_DONE;
    switch (m->id) {
    case ROUTE_TENANTS:
        if (req->method == HTTP_M_POST)
            h = create_tenant(w, q, req);
        else
            h = list_tenants(w, q, req);
        break;
    case ROUTE_TENANT:
        if (req->method == HTTP_M_POST) {
            h = create_counter(w, q, req, m);
        } else if (req->method == HTTP_M_DELETE) {
            h = delete_tenant(w, q, m);
        } else {
            const struct tn_tenant *t = path_tenant(w, q, m);
            char body[TN_JSON_MAX];
            if (t)
                reply(q, 200, body, tn_tenant_json(t, body));
            else if (q->row)
                reply(q, 200, body, tn_row_json(q->row, body));
        }
        break;
    case ROUTE_TN_COUNTERS:
        if (req->method == HTTP_M_POST)
            h = create_counter(w, q, req, m);
        else
            h = list_counters(w, q, req, m);
        break;
    case ROUTE_TN_COUNTER:
        if (req->method == HTTP_M_DELETE)
            h = delete_counter(w, q, m);
        else
            get_counter(w, q, m);
        break;
    case ROUTE_TN_INC:
        h = inc_counter(w, q, req, m);
        break;
    case ROUTE_TN_SET:
        h = set_counter(w, q, req, m);
        break;
    case ROUTE_TN_HISTORY:
        h = history(w, q, req, m);
        break;
    default: /* the key routes; keyapi answers 404 to any other */
        /* with --db a tenant this node does not cache is looked up first (evicted, or never
           cached here): its keys are listed all the same */
        if (w->db && m->id == ROUTE_TN_KEYS && req->method != HTTP_M_POST && /* GET, HEAD */
            !path_tenant(w, q, m) && !q->row)
            break; /* answered 400/404/503, or parked on the lookup */
        h = keyapi_handle(q->s, req, m, T.st, w->db);
        break;
    }
    return h;
}

enum sess_handled tnapi_handle(struct tnapi_worker *w, struct sess *s, const struct http_req *req,
                               const struct route_match *m, uint64_t now_ms)
{
    struct rq q = {.s = s, .req = req, .now_ms = now_ms};
    const struct http_hdr *origin = http_header(req, LIT("origin"));
    const char *pub = public_methods(m->id);
    const struct live *L = live_get(s->env->live);
    static const struct cors_conf no_cors; /* without settings (tests): CORS off */
    const struct cors_conf *cors = L ? &L->cors : &no_cors;
    if (L && L->gen != w->live_gen)
        follow_settings(w, L);
    struct rl_table *rl = w->rl_on ? w->rl : NULL;
    if (req->method == HTTP_M_OPTIONS) {
        /* preflight: CORS only for a public route and a public method */
        char *p = q.hdr;
        p = put(p, "Allow: ");
        p = put(p, m->allow);
        p = put(p, "\r\n");
        q.hlen = (size_t)(p - q.hdr);
        const struct http_hdr *rm = http_header(req, LIT("access-control-request-method"));
        if (pub && origin && (!rm || http_has_token(pub, strlen(pub), rm->value, rm->value_len)))
            q.hlen += cors_preflight(cors, origin->value, origin->value_len, pub, p,
                                     sizeof(q.hdr) - q.hlen);
        if (pub && rl) { /* the fields, without spending a token (rl_peek) */
            struct rl_result r;
            uint8_t cf, ca[16];
            client_of(s, req, &cf, ca);
            rl_peek(rl, cf, ca, now_ms, &r);
            r.allowed = true; /* a preflight is never refused: no Retry-After */
            q.hlen += rl_headers(rl, &r, q.hdr + q.hlen, sizeof(q.hdr) - q.hlen);
        }
        sess_respond(s, 204, NULL, q.hdr, q.hlen, NULL, 0);
        return SESS_H_DONE;
    }
    bool adm = is_admin(m->id, req->method);
    if (!adm) {
        if (rl) {
            struct rl_result r;
            uint8_t cf, ca[16];
            client_of(s, req, &cf, ca);
            /* the second run of a cache miss: its token was taken on the first, which the
               limit allowed (a request is charged once, however many times it runs) */
            if (s->flags & SESS_RERUN) {
                rl_peek(rl, cf, ca, now_ms, &r);
                r.allowed = true;
            } else {
                rl_take(rl, cf, ca, now_ms, &r);
            }
            q.hlen = rl_headers(rl, &r, q.hdr, sizeof(q.hdr));
            if (origin)
                q.hlen += cors_actual(cors, origin->value, origin->value_len, q.hdr + q.hlen,
                                      sizeof(q.hdr) - q.hlen);
            if (!r.allowed)
                return fail(&q, HTTP_E_RATE_LIMITED, "too many requests from this address");
        } else if (origin) {
            q.hlen = cors_actual(cors, origin->value, origin->value_len, q.hdr, sizeof(q.hdr));
        }
    }
    if (adm && keyapi_auth(s, req, m) < 0)
        return SESS_H_DONE; /* admin key or tenant key: answered 401/403 */
    enum sess_handled h = route(w, &q, req, m);
    /* a cache miss looked up in PostgreSQL: the request runs again once the answer is in */
    return q.again ? SESS_H_AGAIN : h;
}
