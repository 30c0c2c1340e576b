/* app — see app.h. */
#include "app.h"

#include <ck_pr.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "config.h"
#include "counters.h"
#include "decimal.h"
#include "fmt.h"
#include "json.h"
#include "router.h"
#include "users.h"

enum wait_kind { WAIT_STATS, WAIT_RESET };

struct waiter {
    struct sess *s;
    uint64_t gen;
    enum wait_kind kind;
};

struct app_worker {
    unsigned idx;
    struct cnt_slot *slot;
    struct app_io io;
    struct waiter *wait;
    size_t nwait, capwait;
    uint64_t req_at_last_tick;
    unsigned *wake_buf;
};

/* Read-only after app_init. */
static struct {
    unsigned nworkers;
    char admin_key[256];
    size_t admin_key_len;
    uint64_t start_ms;
} G;

/* Generations of cross-worker operations; each worker records the last one it served in its
   counter slot (barrier_gen, reset_gen), so a waiter is done when every slot has caught up. */
static uint64_t barrier_gen_global;
static uint64_t reset_gen_global;
static int ready_flag;

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

int app_init(const struct config *cfg, unsigned nworkers)
{
    memset(&G, 0, sizeof(G));
    G.nworkers = nworkers;
    G.admin_key_len = strnlen(cfg->admin_key, sizeof(cfg->admin_key) - 1);
    memcpy(G.admin_key, cfg->admin_key, G.admin_key_len);
    G.start_ms = mono_ms();
    barrier_gen_global = reset_gen_global = 0;
    ready_flag = 0;
    return 0;
}

void app_fini(void)
{
    memset(&G, 0, sizeof(G));
}

void app_set_ready(bool ready)
{
    ck_pr_store_int(&ready_flag, ready ? 1 : 0);
}

struct app_worker *app_worker_new(unsigned idx, const struct app_io *io)
{
    struct app_worker *a = calloc(1, sizeof(*a));
    if (!a)
        return NULL;
    a->idx = idx;
    a->slot = cnt_slot(idx);
    a->io = *io;
    a->wake_buf = calloc(G.nworkers, sizeof(unsigned));
    if (!a->wake_buf) {
        free(a);
        return NULL;
    }
    return a;
}

void app_worker_free(struct app_worker *a)
{
    if (!a)
        return;
    free(a->wait);
    free(a->wake_buf);
    free(a);
}

/* ---------------------------------------------------------------- coordination */

static void wake_others(struct app_worker *a)
{
    for (unsigned i = 0; i < G.nworkers; i++)
        if (i != a->idx)
            a->io.wake(a->io.ctx, i);
}

/* Serve pending barrier/reset generations on this worker. The generations are read before the
   mailboxes are drained, so every user queued before a /stats began is counted by its end. */
static void serve_control(struct app_worker *a)
{
    uint64_t bg = ck_pr_load_64(&barrier_gen_global);
    uint64_t rg = ck_pr_load_64(&reset_gen_global);
    ck_pr_fence_memory();
    users_wake_ack(a->idx);
    users_drain(a->idx);
    bool served = false;
    if (rg > a->slot->reset_gen) {
        users_reset_shard(a->idx);
        cnt_reset_events(a->slot);
        ck_pr_fence_store();
        ck_pr_store_64(&a->slot->reset_gen, rg);
        served = true;
    }
    if (bg > a->slot->barrier_gen) {
        ck_pr_fence_store();
        ck_pr_store_64(&a->slot->barrier_gen, bg);
        served = true;
    }
    if (served)
        wake_others(a);
}

static uint64_t min_gen(enum wait_kind k)
{
    uint64_t m = UINT64_MAX;
    for (unsigned i = 0; i < G.nworkers; i++) {
        struct cnt_slot *s = cnt_slot(i);
        uint64_t g = ck_pr_load_64(k == WAIT_STATS ? &s->barrier_gen : &s->reset_gen);
        if (g < m)
            m = g;
    }
    return m;
}

static void answer_stats(struct sess *s);

static void answer_waiter(struct waiter *w)
{
    if (w->kind == WAIT_STATS)
        answer_stats(w->s);
    else
        sess_respond(w->s, 200, SESS_JSON, NULL, 0, "{\"status\":\"reset\"}", 18);
    sess_unpark(w->s);
}

static void check_waiters(struct app_worker *a)
{
    if (!a->nwait)
        return;
    uint64_t mb = min_gen(WAIT_STATS), mr = min_gen(WAIT_RESET);
    size_t j = 0;
    for (size_t i = 0; i < a->nwait; i++) {
        struct waiter *w = &a->wait[i];
        if (w->gen <= (w->kind == WAIT_STATS ? mb : mr))
            answer_waiter(w);
        else
            a->wait[j++] = *w;
    }
    a->nwait = j;
}

/* Start a cross-worker operation for s. Returns 0 if answered now, 1 if parked. */
static int start_wait(struct app_worker *a, struct sess *s, enum wait_kind k)
{
    uint64_t g = ck_pr_faa_64(k == WAIT_STATS ? &barrier_gen_global : &reset_gen_global, 1) + 1;
    serve_control(a);
    struct waiter w = {.s = s, .gen = g, .kind = k};
    if (min_gen(k) >= g) {
        answer_waiter(&w);
        return 0;
    }
    if (a->nwait == a->capwait) {
        size_t nc = a->capwait ? a->capwait * 2 : 16;
        struct waiter *nw = realloc(a->wait, nc * sizeof(*nw));
        if (!nw) {
            sess_error(s, 503, "OVERLOADED", "out of memory", "Retry-After: 1\r\n", 16);
            return 0;
        }
        a->wait = nw;
        a->capwait = nc;
    }
    a->wait[a->nwait++] = w;
    sess_park(s, a);
    return 1;
}

void app_forget(struct app_worker *a, struct sess *s)
{
    size_t j = 0;
    for (size_t i = 0; i < a->nwait; i++)
        if (a->wait[i].s != s)
            a->wait[j++] = a->wait[i];
    a->nwait = j;
}

void app_on_wake(struct app_worker *a, uint64_t now_ms)
{
    (void)now_ms;
    serve_control(a);
    check_waiters(a);
}

void app_flush(struct app_worker *a)
{
    size_t n = users_pending_wakes(a->idx, a->wake_buf, G.nworkers);
    for (size_t i = 0; i < n; i++)
        a->io.wake(a->io.ctx, a->wake_buf[i]);
}

void app_tick(struct app_worker *a, uint64_t now_ms)
{
    uint64_t r = a->slot->requests;
    ck_pr_store_64(&a->slot->rps, r - a->req_at_last_tick);
    a->req_at_last_tick = r;
    app_on_wake(a, now_ms);
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

static void answer_stats(struct sess *s)
{
    struct cnt_snapshot snap;
    cnt_snapshot(&snap);
    char body[1024], *p = body;
    p = put(p, "{\"totalRequests\":");
    p += fmt_u64(p, snap.events);
    p = put(p, ",\"uniqueUsers\":");
    p += fmt_u64(p, snap.users);
    p = put(p, ",\"sum\":");
    p += dec_format(snap.sum, p);
    p = put(p, ",\"avg\":");
    p += dec_format(snap.events ? dec_div_round(snap.sum, snap.events) : 0, p);
    p = put(p, ",\"server\":{\"uptimeSeconds\":");
    p += fmt_u64(p, (mono_ms() - G.start_ms) / 1000);
    p = put(p, ",\"workers\":");
    p += fmt_u64(p, G.nworkers);
    p = put(p, ",\"connections\":");
    p += fmt_u64(p, snap.conns_open);
    p = put(p, ",\"requestsPerSecond\":");
    p += fmt_u64(p, snap.rps);
    p = put(p, ",\"usersOverflow\":");
    p += fmt_u64(p, snap.users_overflow);
    p = put(p, ",\"persistence\":{\"mode\":\"none\",\"dbUp\":false,\"lastFlushAgeMs\":null,"
               "\"pendingKeys\":0,\"flushes\":0,\"flushErrors\":0,\"persistedTotalRequests\":0}}}");
    sess_respond(s, 200, SESS_JSON, NULL, 0, body, (size_t)(p - body));
}

static int handle_event(struct app_worker *a, struct sess *s, struct http_req *req)
{
    struct json_event ev;
    switch (json_parse_event(req->body, req->body_len, &ev)) {
    case JSON_EV_OK:
        break;
    case JSON_EV_INVALID_USER_ID:
        return sess_error(s, 400, "INVALID_USER_ID",
                          "userId must be a non-empty string of at most 256 bytes of UTF-8", NULL, 0);
    case JSON_EV_INVALID_VALUE:
        return sess_error(s, 400, "INVALID_VALUE",
                          "value must be a finite number with |value| <= 1e15", NULL, 0);
    default:
        return sess_error(s, 400, "INVALID_JSON", "body must be one JSON object", NULL, 0);
    }
    cnt_event_add(a->slot, ev.value);
    users_observe(a->idx, ev.user, ev.user_len);
    return sess_respond(s, 200, NULL, NULL, 0, NULL, 0);
}

/* Constant-time comparison: the time depends on the configured key's length only. */
static bool key_equal(const char *given, size_t n)
{
    unsigned char diff = (unsigned char)(n != G.admin_key_len);
    for (size_t i = 0; i < G.admin_key_len; i++)
        diff |= (unsigned char)(G.admin_key[i] ^ (i < n ? given[i] : 0));
    return diff == 0;
}

/* 0 when the request carries the admin key; otherwise answers 401/403 and returns -1. */
static int admin_check(struct sess *s, const struct http_req *req)
{
    if (!G.admin_key_len) {
        sess_error(s, 403, "ADMIN_DISABLED", "no admin key is configured on this server", NULL, 0);
        return -1;
    }
    const struct http_hdr *h = http_header(req, "x-api-key", 9);
    const char *key = NULL;
    size_t klen = 0;
    if (h) {
        key = h->value;
        klen = h->value_len;
    } else if ((h = http_header(req, "authorization", 13)) && h->value_len > 7 &&
               strncasecmp(h->value, "Bearer ", 7) == 0) {
        key = h->value + 7;
        klen = h->value_len - 7;
    }
    if (!key) {
        sess_error(s, 401, "UNAUTHORIZED", "admin key required (X-API-Key or Bearer)",
                   "WWW-Authenticate: Bearer\r\n", 26);
        return -1;
    }
    if (!key_equal(key, klen)) {
        sess_error(s, 403, "FORBIDDEN", "wrong admin key", NULL, 0);
        return -1;
    }
    return 0;
}

static int handle_metrics(struct sess *s)
{
    struct cnt_snapshot snap;
    cnt_snapshot(&snap);
    char body[2048], *p = body;
    p = put(p, "# HELP ringcount_events_total Events accepted by POST /event.\n"
               "# TYPE ringcount_events_total counter\nringcount_events_total ");
    p += fmt_u64(p, snap.events);
    p = put(p, "\n# HELP ringcount_unique_users Distinct userIds seen.\n"
               "# TYPE ringcount_unique_users gauge\nringcount_unique_users ");
    p += fmt_u64(p, snap.users);
    p = put(p, "\n# HELP ringcount_http_requests_total HTTP requests answered.\n"
               "# TYPE ringcount_http_requests_total counter\nringcount_http_requests_total ");
    p += fmt_u64(p, snap.requests);
    p = put(p, "\n# HELP ringcount_connections Open client connections.\n"
               "# TYPE ringcount_connections gauge\nringcount_connections ");
    p += fmt_u64(p, snap.conns_open);
    p = put(p, "\n");
    return sess_respond(s, 200, "text/plain; version=0.0.4; charset=utf-8", NULL, 0, body,
                        (size_t)(p - body));
}

int app_handle(struct sess *s, struct http_req *req)
{
    struct app_worker *a = worker_of(s);
    struct route_match m;
    cnt_add(&a->slot->requests, 1);
    route_match(req->method, req->path, req->path_len, &m);
    if (m.status == 404)
        return sess_error(s, 404, "NOT_FOUND", "no such route", NULL, 0), 0;
    if (m.status == 405 || req->method == HTTP_M_OPTIONS) {
        char hdr[128], *p = hdr;
        p = put(p, "Allow: ");
        p = put(p, m.allow);
        p = put(p, "\r\n");
        if (m.status == 405)
            sess_error(s, 405, "METHOD_NOT_ALLOWED", "method not allowed on this route", hdr,
                       (size_t)(p - hdr));
        else
            sess_respond(s, 204, NULL, hdr, (size_t)(p - hdr), NULL, 0);
        return 0;
    }
    switch (m.id) {
    case ROUTE_EVENT:
        handle_event(a, s, req);
        return 0;
    case ROUTE_STATS:
        return start_wait(a, s, WAIT_STATS);
    case ROUTE_RESET:
        if (admin_check(s, req) < 0)
            return 0;
        return start_wait(a, s, WAIT_RESET);
    case ROUTE_HEALTH:
        sess_respond(s, 200, SESS_JSON, NULL, 0, "{\"status\":\"healthy\"}", 20);
        return 0;
    case ROUTE_LIVEZ:
        sess_respond(s, 200, SESS_JSON, NULL, 0, "{\"status\":\"ok\"}", 15);
        return 0;
    case ROUTE_READYZ:
        if (ck_pr_load_int(&ready_flag) && !s->env->draining)
            sess_respond(s, 200, SESS_JSON, NULL, 0, "{\"status\":\"ready\"}", 18);
        else
            sess_error(s, 503, "NOT_READY", s->env->draining ? "draining" : "starting", NULL, 0);
        return 0;
    case ROUTE_METRICS:
        handle_metrics(s);
        return 0;
    default:
        sess_error(s, 404, "NOT_FOUND", "no such route", NULL, 0);
        return 0;
    }
}
