/* app — see app.h. */
#include "app.h"

#include <ck_pr.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "clock.h"
#include "config.h"
#include "cors.h"
#include "auth.h"
#include "barrier.h"
#include "counters.h"
#include "decimal.h"
#include "fmt.h"
#include "json.h"
#include "lit.h"
#include "live.h"
#include "metrics.h"
#include "persist.h"
#include "pwait.h"
#include "router.h"
#include "status_page.h"
#include "tenants.h"
#include "tnapi.h"
#include "users.h"

struct app_worker {
    unsigned idx;
    struct cnt_slot *slot;
    struct app_io io;
    struct barrier *bar;      /* /stats and /reset across the workers */
    uint64_t req_at_last_tick;
    uint64_t req_at_last_flush; /* with woke: did this batch serve anything (persist_w_batch_end) */
    bool woke;
    unsigned *wake_buf;
    struct metrics_slot *ms;  /* NULL when metrics_init was not called (unit tests) */
    struct tnapi_worker *tn;  /* multi-tenant counters: rate-limit table, UUID pool */
    char *metrics_buf;        /* GET /metrics scratch: grown on the first scrapes, then reused */
    size_t metrics_cap;
    struct pwait *pw;         /* requests parked on the persister */
};

/* Read-only after app_init. */
static struct {
    unsigned nworkers;
    uint64_t start_ms;
    uint64_t readyz_max_pending; /* --readyz-max-pending */
} G;

static int ready_flag;

int app_init(const struct config *cfg, unsigned nworkers)
{
    memset(&G, 0, sizeof(G));
    G.nworkers = nworkers;
    G.start_ms = clock_ms(CLOCK_MONOTONIC_COARSE);
    G.readyz_max_pending = cfg->readyz_max_pending;
    bar_init(nworkers);
    ready_flag = 0;
    /* the admin key, CORS origins and rate limit: reloadable on SIGHUP (src/live) */
    int rc = live_init(cfg, nworkers); /* and src/qsbr's grace periods, for the same workers */
    return rc < 0 ? rc : tnapi_init(cfg, nworkers);
}

void app_fini(void)
{
    tnapi_fini();
    live_fini();
    memset(&G, 0, sizeof(G));
}

void app_set_ready(bool ready)
{
    ck_pr_store_int(&ready_flag, ready ? 1 : 0);
}

static void on_barrier_wake(void *ctx, unsigned target);
static enum sess_handled on_barrier_done(void *ctx, struct sess *s, enum bar_kind k);

struct app_worker *app_worker_new(unsigned idx, const struct app_io *io)
{
    struct app_worker *a = calloc(1, sizeof(*a));
    if (!a)
        return NULL;
    a->idx = idx;
    a->slot = cnt_slot(idx);
    a->ms = metrics_slot(idx);
    a->io = *io;
    a->wake_buf = calloc(G.nworkers, sizeof(unsigned));
    const struct bar_ops bops = {.ctx = a, .wake = on_barrier_wake, .done = on_barrier_done};
    a->bar = bar_new(idx, &bops);
    a->pw = pwait_new(idx);
    a->tn = a->pw ? tnapi_worker_new(idx, a->pw) : NULL;
    if (!a->wake_buf || !a->bar || !a->tn) {
        app_worker_free(a);
        return NULL;
    }
    return a;
}

void app_worker_free(struct app_worker *a)
{
    if (!a)
        return;
    bar_free(a->bar);
    free(a->wake_buf);
    free(a->metrics_buf);
    tnapi_worker_free(a->tn);
    pwait_free(a->pw);
    free(a);
}

/* ---------------------------------------------------------------- answers */

/* Each is SESS_H_DONE: an append that failed (-ENOMEM) is the session's to answer (it sees
   that nothing was written and sends 503). */
static enum sess_handled fail(struct sess *s, enum http_err e, const char *msg)
{
    sess_error(s, e, msg, NULL, 0);
    return SESS_H_DONE;
}

static enum sess_handled respond(struct sess *s, int status, const char *body, size_t n)
{
    sess_respond(s, status, body ? SESS_JSON : NULL, NULL, 0, body, n);
    return SESS_H_DONE;
}

/* ---------------------------------------------------------------- coordination */

static void answer_stats(struct sess *s);

static void on_barrier_wake(void *ctx, unsigned target)
{
    struct app_worker *a = ctx;
    a->io.wake(a->io.ctx, target);
}

/* The barrier of s is complete: answer it (SESS_H_DONE), or hand it to the persister
   (SESS_H_PARKED): a cluster /stats, and a /reset that must also be committed to PostgreSQL. */
static enum sess_handled on_barrier_done(void *ctx, struct sess *s, enum bar_kind k)
{
    struct app_worker *a = ctx;
    if (k != BAR_STATS && persist_enabled())
        return pwait_request(a->pw, s, k == BAR_RESET ? PWAIT_RESET : PWAIT_CLUSTER);
    if (k == BAR_STATS)
        answer_stats(s);
    else
        sess_respond(s, 200, SESS_JSON, NULL, 0, SESS_LIT(PWAIT_BODY_RESET));
    sess_unpark(s);
    return SESS_H_DONE;
}

void app_forget(struct app_worker *a, struct sess *s)
{
    bar_forget(a->bar, s);
    pwait_forget(a->pw, s);
}

static void poll_waiters(struct app_worker *a, uint64_t now_ms)
{
    bar_poll(a->bar);
    pwait_poll(a->pw, now_ms);
}

void app_on_wake(struct app_worker *a, uint64_t now_ms)
{
    a->woke = true; /* another worker's or the persister's news: users to drain, replies */
    poll_waiters(a, now_ms);
}

void app_flush(struct app_worker *a)
{
    size_t n = users_pending_wakes(a->idx, a->wake_buf, G.nworkers);
    for (size_t i = 0; i < n; i++)
        a->io.wake(a->io.ctx, a->wake_buf[i]);
    uint64_t r = a->slot->requests;
    bool active = a->woke || r != a->req_at_last_flush;
    a->req_at_last_flush = r;
    a->woke = false;
    /* target nworkers: the persister (srv_set_aux_wake_fd) */
    if (persist_w_batch_end(a->idx, active))
        a->io.wake(a->io.ctx, G.nworkers);
}

void app_tick(struct app_worker *a, uint64_t now_ms)
{
    uint64_t r = a->slot->requests;
    ck_pr_store_64(&a->slot->rps, r - a->req_at_last_tick);
    a->req_at_last_tick = r;
    metrics_slot_tick(a->ms, now_ms);
    poll_waiters(a, now_ms); /* the 1 s tick is no news: it must not end the persister's doze */
}

/* ---------------------------------------------------------------- handlers */

static struct app_worker *worker_of(struct sess *s)
{
    return s->env->app;
}

/* Append s to p; returns the new end. */
static char *put(char *p, const char *s)
{
    size_t n = strlen(s);
    memcpy(p, s, n);
    return p + n;
}

/* The longest /stats body: its names and punctuation (154 bytes), 7 integers of at most 20
   digits, 2 decimals of at most DEC_FMT_MAX (48) bytes and the persistence object
   (PERSIST_STATS_MAX, 320): 154 + 140 + 96 + 320 = 710 bytes. */
#define STATS_BODY_MAX                                                                          \
    (LIT_LEN("{\"totalRequests\":,\"uniqueUsers\":,\"sum\":,\"avg\":,\"server\":{"             \
             "\"uptimeSeconds\":,\"workers\":,\"connections\":,\"requestsPerSecond\":,"         \
             "\"usersOverflow\":,\"persistence\":}}") +                                        \
     7 * 20 + 2 * DEC_FMT_MAX + PERSIST_STATS_MAX)
#define STATS_BODY_CAP 1024
_Static_assert(STATS_BODY_MAX <= STATS_BODY_CAP, "the /stats body fits its buffer");

static void answer_stats(struct sess *s)
{
    struct cnt_snapshot snap;
    cnt_snapshot(&snap);
    char body[STATS_BODY_CAP], pers[PERSIST_STATS_MAX];
    size_t plen = persist_stats_json(pers, sizeof(pers));
    struct json_w w;
    json_w_init(&w, body, sizeof(body));
    json_w_lit(&w, "{\"totalRequests\":");
    json_w_u64(&w, snap.events);
    json_w_lit(&w, ",\"uniqueUsers\":");
    json_w_u64(&w, snap.users);
    json_w_lit(&w, ",\"sum\":");
    json_w_dec(&w, snap.sum);
    json_w_lit(&w, ",\"avg\":");
    json_w_dec(&w, snap.events ? dec_div_round(snap.sum, snap.events) : 0);
    json_w_lit(&w, ",\"server\":{\"uptimeSeconds\":");
    json_w_u64(&w, (clock_ms(CLOCK_MONOTONIC_COARSE) - G.start_ms) / 1000);
    json_w_lit(&w, ",\"workers\":");
    json_w_u64(&w, G.nworkers);
    json_w_lit(&w, ",\"connections\":");
    json_w_u64(&w, snap.conns_open);
    json_w_lit(&w, ",\"requestsPerSecond\":");
    json_w_u64(&w, snap.rps);
    json_w_lit(&w, ",\"usersOverflow\":");
    json_w_u64(&w, snap.users_overflow);
    json_w_lit(&w, ",\"persistence\":");
    json_w_raw(&w, pers, plen);
    json_w_lit(&w, "}}");
    ssize_t n = json_w_end(&w); /* never < 0: STATS_BODY_MAX <= STATS_BODY_CAP */
    sess_respond(s, 200, SESS_JSON, NULL, 0, body, n < 0 ? 0 : (size_t)n);
}

static enum sess_handled handle_event(struct app_worker *a, struct sess *s, struct http_req *req)
{
    struct json_event ev;
    switch (json_parse_event(req->body, req->body_len, &ev)) {
    case JSON_EV_OK:
        break;
    case JSON_EV_INVALID_USER_ID:
        return fail(s, HTTP_E_INVALID_USER_ID,
                    "userId must be a non-empty string of at most 256 bytes of UTF-8");
    case JSON_EV_INVALID_VALUE:
        return fail(s, HTTP_E_INVALID_VALUE, "value must be a finite number with |value| <= 1e15");
    default:
        return fail(s, HTTP_E_INVALID_JSON, "body must be one JSON object");
    }
    cnt_event_add(a->slot, ev.value);
    users_observe(a->idx, ev.user, ev.user_len);
    return respond(s, 200, NULL, 0);
}

/* Scrapes come every 15 s or so: the text (a few KiB) is rendered into a per-worker buffer that
   grows to fit on the first scrapes (+4 KiB slack, so one new series does not reallocate). */
static int handle_metrics(struct app_worker *a, struct sess *s)
{
    for (int tries = 0; tries < 3; tries++) {
        size_t need = metrics_render(a->metrics_buf, a->metrics_cap);
        if (need < a->metrics_cap)
            return sess_respond(s, 200, METRICS_CONTENT_TYPE, NULL, 0, a->metrics_buf, need);
        char *nb = realloc(a->metrics_buf, need + 4096);
        if (!nb)
            break;
        a->metrics_buf = nb;
        a->metrics_cap = need + 4096;
    }
    return sess_error(s, HTTP_E_OVERLOADED, "out of memory", SESS_HDRS(SESS_RETRY_AFTER_1));
}

static int handle_index(struct sess *s)
{
    size_t len;
    const char *html = status_page_html(&len);
    return sess_respond(s, 200, STATUS_PAGE_CONTENT_TYPE, SESS_HDRS(STATUS_PAGE_HEADERS), html,
                        len);
}

/* ---------------------------------------------------------------- persistence (SPEC §2.2, §4) */

/* POST /api/v1/increment: take the increment, park until the flush that carries it commits;
   with an Idempotency-Key the database decides (on any node) whether it is new. */
static enum sess_handled handle_incr_durable(struct app_worker *a, struct sess *s,
                                             const struct http_req *req)
{
    int rc = persist_w_durable_enter(a->idx);
    if (rc == -ENODEV) {
        pwait_answer_not_committed(s, "no database is configured (--db): durable increments are "
                                      "off");
        return SESS_H_DONE;
    }
    if (rc == -EBUSY) {
        sess_error(s, HTTP_E_OVERLOADED_429, "too many durable increments waiting for a commit",
                   SESS_HDRS(SESS_RETRY_AFTER_1));
        return SESS_H_DONE;
    }
    const struct http_hdr *ik = http_header(req, LIT("idempotency-key"));
    if (!ik)
        return pwait_durable(a->pw, s);
    if (!tn_idem_key_valid(ik->value, ik->value_len) || ik->value_len > PERSIST_KEY_MAX) {
        persist_w_durable_leave(a->idx);
        return fail(s, HTTP_E_INVALID_IDEMPOTENCY_KEY,
                    "Idempotency-Key must be 1-64 printable ASCII bytes");
    }
    return pwait_keyed(a->pw, s, ik->value, ik->value_len);
}

/* The single counter's routes: v1 POST durable, v1 GET committed; v2 (and /api/v1/counter)
   POST fast 204, GET live. Returns as app_handle. */
static enum sess_handled handle_counter(struct app_worker *a, struct sess *s,
                                        const struct http_req *req, enum route_id id)
{
    bool post = req->method == HTTP_M_POST;
    uint64_t ticket;
    int64_t v;
    if (id == ROUTE_INCR_V1 && post)
        return handle_incr_durable(a, s, req);
    if (id == ROUTE_INCR_V1 && persist_committed(&v) < 0)
        pwait_answer_unavailable(s, "no database is configured (--db): nothing is committed");
    else if (id == ROUTE_INCR_V1)
        pwait_answer_count(s, v);
    else if (!post)
        pwait_answer_count(s, persist_live());
    else if (persist_w_incr(a->idx, &ticket) < 0)
        pwait_answer_overflow(s);
    else
        respond(s, 204, NULL, 0);
    return SESS_H_DONE;
}

/* ?scope= of GET /stats: 0 this node (absent or "node"), 1 "cluster", -1 anything else. */
static int stats_scope(const struct http_req *req)
{
    const char *q = req->query, *end = q ? q + req->query_len : NULL;
    while (q && q < end) {
        const char *amp = memchr(q, '&', (size_t)(end - q));
        const char *e = amp ? amp : end;
        if ((size_t)(e - q) >= 6 && memcmp(q, LIT("scope=")) == 0) {
            size_t n = (size_t)(e - q) - 6;
            if (n == 7 && memcmp(q + 6, LIT("cluster")) == 0)
                return 1;
            return n == 4 && memcmp(q + 6, LIT("node")) == 0 ? 0 : -1;
        }
        q = amp ? amp + 1 : end;
    }
    return 0;
}

/* ---------------------------------------------------------------- CORS (SPEC §2.3) */

/* The 1MRC and Increment routes are public: a browser page may POST /event, read /stats and
   use the counter from another origin when --cors-origins allows it. Every method of these
   routes is public, so the preflight offers the route's Allow value. Admin routes (/reset) and
   the operations routes never get a CORS field; the tenant routes do their own (tnapi). */
static bool cors_route(enum route_id id)
{
    return id == ROUTE_EVENT || id == ROUTE_STATS || id == ROUTE_INCR_V1 ||
           id == ROUTE_INCR_V2 || id == ROUTE_COUNTER_V1;
}

/* Preflight fields for an OPTIONS from an allowed origin asking for one of methods. */
static size_t cors_preflight_for(struct sess *s, const struct http_req *req, const char *methods,
                                 char *out, size_t cap)
{
    const struct http_hdr *origin = http_header(req, LIT("origin"));
    const struct http_hdr *rm = http_header(req, LIT("access-control-request-method"));
    const struct live *L = live_get(s->env->live);
    if (!origin || !L || (rm && !http_has_token(methods, strlen(methods), rm->value, rm->value_len)))
        return 0;
    return cors_preflight(&L->cors, origin->value, origin->value_len, methods, out, cap);
}

/* The fields of an actual answer, attached to the session: a parked answer (/stats, a durable
   increment) is written after the request's bytes are gone. */
_Static_assert(CORS_ACTUAL_MAX <= SESS_REQ_HDRS_MAX, "CORS fields fit the session");
static void cors_attach(struct sess *s, const struct http_req *req)
{
    const struct http_hdr *origin = http_header(req, LIT("origin"));
    const struct live *L = live_get(s->env->live);
    if (origin && L)
        s->req_hdrs_len = (uint16_t)cors_actual(&L->cors, origin->value, origin->value_len,
                                                s->req_hdrs, sizeof(s->req_hdrs));
}

void app_note_response(struct sess *s, int status)
{
    struct app_worker *a = s->env->app;
    uint64_t t0 = s->req_t0_ns;
    s->req_t0_ns = 0;
    if (a && a->ms) {
        uint64_t now = s->env->now_ns; /* the batch that queues the answer */
        metrics_slot_request(a->ms, s->req_route, status, t0 != 0, now > t0 ? now - t0 : 0);
    }
    s->req_route = ROUTE_NONE;
}

enum sess_handled app_handle(struct sess *s, struct http_req *req)
{
    struct app_worker *a = worker_of(s);
    struct route_match m;
    cnt_add(&a->slot->requests, 1);
    route_match(req->method, req->path, req->path_len, &m);
    /* metrics: from the batch that brought the request's first byte (session.c) */
    s->req_route = (uint8_t)m.id;
    s->req_t0_ns = m.id == ROUTE_NONE ? 0 : s->req_first_ns;
    if (m.status == 404)
        return fail(s, HTTP_E_NOT_FOUND, "no such route");
    /* SPEC §2.3: tenant routes do their own OPTIONS (CORS), rate limiting and admin split */
    if (m.status == 0 && tnapi_route(m.id))
        return tnapi_handle(a->tn, s, req, &m, clock_ms(CLOCK_MONOTONIC_COARSE));
    bool cors = m.status == 0 && cors_route(m.id);
    if (m.status == 405 || req->method == HTTP_M_OPTIONS) {
        char hdr[128 + CORS_HDR_MAX], *p = hdr;
        p = put(p, "Allow: ");
        p = put(p, m.allow);
        p = put(p, "\r\n");
        if (cors)
            p += cors_preflight_for(s, req, m.allow, p, sizeof(hdr) - (size_t)(p - hdr));
        if (m.status == 405)
            sess_error(s, HTTP_E_METHOD_NOT_ALLOWED, "method not allowed on this route", hdr,
                       (size_t)(p - hdr));
        else
            sess_respond(s, 204, NULL, hdr, (size_t)(p - hdr), NULL, 0);
        return SESS_H_DONE;
    }
    if (cors)
        cors_attach(s, req);
    switch (m.id) {
    case ROUTE_EVENT:
        return handle_event(a, s, req);
    case ROUTE_STATS:
        switch (stats_scope(req)) {
        case 0:
            return bar_start(a->bar, s, BAR_STATS);
        case 1:
            if (persist_enabled())
                return bar_start(a->bar, s, BAR_CLUSTER);
            pwait_answer_unavailable(s, "no database is configured (--db): no cluster totals");
            return SESS_H_DONE;
        default:
            return fail(s, HTTP_E_INVALID_SCOPE, "scope must be node or cluster");
        }
    case ROUTE_RESET:
        if (auth_admin(s, req) < 0)
            return SESS_H_DONE; /* answered 401/403 */
        return bar_start(a->bar, s, BAR_RESET);
    case ROUTE_HEALTH:
        return respond(s, 200, LIT("{\"status\":\"healthy\"}"));
    case ROUTE_LIVEZ:
        return respond(s, 200, LIT("{\"status\":\"ok\"}"));
    case ROUTE_READYZ:
        /* Backlog over --readyz-max-pending: memory grows with every new key, so a balancer
           should send new traffic elsewhere. Not healthy (SPEC §4: disconnected, or data older
           than --ready-max-lag-ms not committed): what this node acknowledges now is at risk,
           so a balancer should prefer a node that can persist; fast paths still answer. */
        if (!ck_pr_load_int(&ready_flag) || s->env->draining)
            sess_error(s, HTTP_E_NOT_READY, s->env->draining ? "draining" : "starting", NULL, 0);
        else if (persist_pending_keys() > G.readyz_max_pending)
            sess_error(s, HTTP_E_NOT_READY, "persistence backlog over cap", NULL, 0);
        else if (!persist_healthy())
            sess_error(s, HTTP_E_NOT_READY,
                       "PostgreSQL unreachable or behind (--ready-max-lag-ms)", NULL, 0);
        else
            sess_respond(s, 200, SESS_JSON, NULL, 0, LIT("{\"status\":\"ready\"}"));
        return SESS_H_DONE;
    case ROUTE_METRICS:
    case ROUTE_INDEX: {
        /* Large answers (~6 KiB): no room now (a send in flight, or the 256 KiB output bound
           under pipelining) -> run again once the socket drained (SESS_H_RETRY, session.h), never
           a 503. Found by fuzz/fuzz_session and tests/integ/test_faults.c. */
        int rc = m.id == ROUTE_METRICS ? handle_metrics(a, s) : handle_index(s);
        return rc == -EAGAIN || (rc == -ENOBUFS && s->out_len) ? SESS_H_RETRY : SESS_H_DONE;
    }
    case ROUTE_INCR_V1:
    case ROUTE_INCR_V2:
    case ROUTE_COUNTER_V1:
        return handle_counter(a, s, req, m.id);
    default:
        return fail(s, HTTP_E_NOT_FOUND, "no such route");
    }
}

const struct sess_ops app_sess_ops = {.handle = app_handle, .note_response = app_note_response};
