/* load — see load.h. */
#include "load.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <libpq-fe.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MAX_CLIENTS 16

static void sleep_ms(unsigned ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

static void add(long long *p, long long v)
{
    __atomic_add_fetch(p, v, __ATOMIC_RELAXED);
}

static long long ld(const long long *p)
{
    return __atomic_load_n(p, __ATOMIC_ACQUIRE);
}

static void max_store(long long *p, long long v)
{
    long long cur = __atomic_load_n(p, __ATOMIC_RELAXED);
    while (v > cur && !__atomic_compare_exchange_n(p, &cur, v, false, __ATOMIC_RELAXED,
                                                   __ATOMIC_RELAXED))
        ;
}

int it_load_call(struct it_conn *c, const char *method, const char *path, const char *hdrs,
                 const char *body, struct it_resp *r, int timeout_ms)
{
    char raw[1024];
    int n = snprintf(raw, sizeof(raw),
                     "%s %s HTTP/1.1\r\nHost: t\r\n%sContent-Length: %zu\r\n\r\n%s", method, path,
                     hdrs ? hdrs : "", body ? strlen(body) : 0, body ? body : "");
    if (n < 0 || (size_t)n >= sizeof(raw))
        return -E2BIG;
    int rc = it_send_all(c->fd, raw, (size_t)n);
    return rc < 0 ? rc : it_read_response(c, r, timeout_ms);
}

/* ------------------------------------------------------------------ the driver */

struct client {
    pthread_t th;
    struct it_load *L;
    enum it_load_kind kind;
    bool started;
};

struct it_load {
    struct it_load_cfg cfg;
    char path_tenant[200];
    int nclients;
    struct client cl[MAX_CLIENTS];
    int stop;
    struct it_load_count cnt[IT_LOAD_NKINDS];
    long long max_count, max_tenant;
    uint64_t users_acked[IT_LOAD_USER_WORDS], users_attempted[IT_LOAD_USER_WORDS];
    unsigned next_user;
    uint64_t lat_from, lat_to;
    long long lat_max[IT_LOAD_NKINDS];
    pthread_mutex_t mu;
    char first_other[240];
};

static const char *const KIND_NAME[IT_LOAD_NKINDS] = {"durable", "fast", "event", "tenant"};

/* Keep the first unexpected answer: "<path> -> <status> <body>" (truncated). */
static void note(struct it_load *L, const char *path, int status, const char *body)
{
    char line[sizeof(L->first_other)];
    size_t n = (size_t)snprintf(line, sizeof(line), "%.100s -> %d ", path, status);
    if (n < sizeof(line) - 1) {
        size_t room = sizeof(line) - 1 - n, bl = strlen(body);
        memcpy(line + n, body, bl < room ? bl : room);
        line[n + (bl < room ? bl : room)] = '\0';
    }
    pthread_mutex_lock(&L->mu);
    if (!L->first_other[0])
        memcpy(L->first_other, line, sizeof(line));
    pthread_mutex_unlock(&L->mu);
}

static void set_bit(uint64_t *bits, unsigned n)
{
    __atomic_fetch_or(&bits[(n % IT_LOAD_USERS) / 64], 1ull << (n % 64), __ATOMIC_RELAXED);
}

static void *client_main(void *arg)
{
    struct client *C = arg;
    struct it_load *L = C->L;
    struct it_load_count *k = &L->cnt[C->kind];
    struct it_conn *c = malloc(sizeof(*c));
    struct it_resp *r = malloc(sizeof(*r));
    if (!c || !r) {
        note(L, KIND_NAME[C->kind], 0, "out of memory");
        goto out;
    }
    c->fd = -1;
    c->len = 0;
    for (long long i = 0; !__atomic_load_n(&L->stop, __ATOMIC_ACQUIRE) &&
                          (L->cfg.budget == 0 || i < L->cfg.budget);) {
        if (c->fd < 0 && it_conn_open(c, L->cfg.port) < 0) {
            add(&k->connect_errors, 1);
            sleep_ms(20);
            continue;
        }
        if (L->cfg.pace_every > 0 && i % L->cfg.pace_every == L->cfg.pace_every - 1)
            usleep((useconds_t)L->cfg.pace_us);
        const char *path, *body = NULL;
        char ev[96];
        unsigned user = 0;
        switch (C->kind) {
        case IT_LOAD_DURABLE:
            path = "/api/v1/increment";
            break;
        case IT_LOAD_FAST:
            path = "/api/v2/increment";
            break;
        case IT_LOAD_EVENT:
            user = __atomic_fetch_add(&L->next_user, 1, __ATOMIC_RELAXED) % IT_LOAD_USERS;
            snprintf(ev, sizeof(ev), "{\"userId\":\"u%u\",\"value\":1}", user);
            body = ev;
            path = "/event";
            set_bit(L->users_attempted, user);
            break;
        default:
            path = L->path_tenant;
            break;
        }
        add(&k->attempted, 1);
        uint64_t t0 = it_now_ms();
        int rc = it_load_call(c, "POST", path, NULL, body, r, IT_LOAD_READ_TIMEOUT_MS);
        uint64_t t1 = it_now_ms();
        i++;
        if (t0 <= __atomic_load_n(&L->lat_to, __ATOMIC_RELAXED) &&
            t1 >= __atomic_load_n(&L->lat_from, __ATOMIC_RELAXED))
            max_store(&L->lat_max[C->kind], (long long)(t1 - t0));
        if (rc < 0) {
            add(&k->conn_errors, 1);
            it_conn_close(c);
            continue;
        }
        int want = C->kind == IT_LOAD_FAST ? 204 : 200;
        if (r->status == want) {
            char num[32];
            if (C->kind == IT_LOAD_DURABLE && it_json_num(r->body, "count", num, sizeof(num)) > 0)
                max_store(&L->max_count, strtoll(num, NULL, 10));
            if (C->kind == IT_LOAD_TENANT && it_json_num(r->body, "value", num, sizeof(num)) > 0)
                max_store(&L->max_tenant, strtoll(num, NULL, 10));
            if (C->kind == IT_LOAD_EVENT)
                set_bit(L->users_acked, user);
            add(&k->acked, 1); /* after the maxima: a snapshot's acked never runs ahead */
        } else if (r->status == 503 && strstr(r->body, "PERSISTENCE_UNAVAILABLE")) {
            add(&k->unavailable, 1);
        } else if (r->status == 429 && strstr(r->body, "OVERLOADED")) {
            add(&k->overloaded, 1);
        } else if (r->status == 503 && strstr(r->body, "NOT_READY")) {
            add(&k->not_ready, 1);
        } else {
            add(&k->other, 1);
            note(L, path, r->status, r->body);
        }
        if (r->close)
            it_conn_close(c);
    }
out:
    if (c)
        it_conn_close(c);
    free(c);
    free(r);
    return NULL;
}

void it_load_cfg_default(struct it_load_cfg *cfg, uint16_t port, const char *tenant_id,
                         const char *counter_id)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->port = port;
    cfg->threads[IT_LOAD_DURABLE] = 2;
    cfg->threads[IT_LOAD_FAST] = 1;
    cfg->threads[IT_LOAD_EVENT] = 1;
    cfg->threads[IT_LOAD_TENANT] = tenant_id && counter_id ? 1 : 0;
    cfg->tenant_id = tenant_id;
    cfg->counter_id = counter_id;
    cfg->pace_every = 10;
    cfg->pace_us = 2000;
}

int it_load_start(const struct it_load_cfg *cfg, struct it_load **out)
{
    int n = 0;
    for (int k = 0; k < IT_LOAD_NKINDS; k++)
        n += cfg->threads[k] > 0 ? cfg->threads[k] : 0;
    if (n > MAX_CLIENTS)
        return -E2BIG;
    if (cfg->threads[IT_LOAD_TENANT] > 0 && (!cfg->tenant_id || !cfg->counter_id))
        return -EINVAL;
    struct it_load *L = calloc(1, sizeof(*L));
    if (!L)
        return -ENOMEM;
    L->cfg = *cfg;
    L->cfg.tenant_id = L->cfg.counter_id = NULL; /* the caller's strings may go away */
    if (cfg->threads[IT_LOAD_TENANT] > 0)
        snprintf(L->path_tenant, sizeof(L->path_tenant), "/tenants/%s/counters/%s/inc",
                 cfg->tenant_id, cfg->counter_id);
    L->next_user = cfg->user_base;
    L->lat_to = UINT64_MAX;
    pthread_mutex_init(&L->mu, NULL);
    for (int k = 0; k < IT_LOAD_NKINDS; k++)
        for (int t = 0; t < cfg->threads[k]; t++) {
            struct client *C = &L->cl[L->nclients++];
            C->L = L;
            C->kind = (enum it_load_kind)k;
        }
    for (int i = 0; i < L->nclients; i++) {
        int rc = pthread_create(&L->cl[i].th, NULL, client_main, &L->cl[i]);
        if (rc != 0) {
            it_load_stop(L, NULL);
            return -rc;
        }
        L->cl[i].started = true;
    }
    *out = L;
    return 0;
}

long long it_load_acked(struct it_load *L, enum it_load_kind k)
{
    return ld(&L->cnt[k].acked);
}

void it_load_snapshot(struct it_load *L, struct it_load_totals *t)
{
    memset(t, 0, sizeof(*t));
    /* acknowledged counts first: an ack read here was attempted before any attempt read below */
    for (int k = 0; k < IT_LOAD_NKINDS; k++)
        t->k[k].acked = ld(&L->cnt[k].acked);
    for (int w = 0; w < IT_LOAD_USER_WORDS; w++)
        t->users_acked[w] = __atomic_load_n(&L->users_acked[w], __ATOMIC_ACQUIRE);
    t->max_count = ld(&L->max_count);
    t->max_tenant = ld(&L->max_tenant);
    for (int k = 0; k < IT_LOAD_NKINDS; k++)
        t->lat_max[k] = ld(&L->lat_max[k]);
    for (int k = 0; k < IT_LOAD_NKINDS; k++) {
        struct it_load_count *c = &L->cnt[k];
        t->k[k].attempted = ld(&c->attempted);
        t->k[k].unavailable = ld(&c->unavailable);
        t->k[k].overloaded = ld(&c->overloaded);
        t->k[k].not_ready = ld(&c->not_ready);
        t->k[k].conn_errors = ld(&c->conn_errors);
        t->k[k].connect_errors = ld(&c->connect_errors);
        t->k[k].other = ld(&c->other);
    }
    for (int w = 0; w < IT_LOAD_USER_WORDS; w++)
        t->users_attempted[w] = __atomic_load_n(&L->users_attempted[w], __ATOMIC_ACQUIRE);
    pthread_mutex_lock(&L->mu);
    memcpy(t->first_other, L->first_other, sizeof(t->first_other));
    pthread_mutex_unlock(&L->mu);
}

void it_load_stop(struct it_load *L, struct it_load_totals *t)
{
    if (!L)
        return;
    __atomic_store_n(&L->stop, 1, __ATOMIC_RELEASE);
    for (int i = 0; i < L->nclients; i++)
        if (L->cl[i].started)
            pthread_join(L->cl[i].th, NULL);
    if (t)
        it_load_snapshot(L, t);
    pthread_mutex_destroy(&L->mu);
    free(L);
}

void it_load_lat_window(struct it_load *L, uint64_t from_ms, uint64_t to_ms)
{
    __atomic_store_n(&L->lat_from, from_ms, __ATOMIC_RELAXED);
    __atomic_store_n(&L->lat_to, to_ms, __ATOMIC_RELAXED);
    for (int k = 0; k < IT_LOAD_NKINDS; k++)
        __atomic_store_n(&L->lat_max[k], 0, __ATOMIC_RELAXED);
}

void it_load_lat_close(struct it_load *L, uint64_t to_ms)
{
    __atomic_store_n(&L->lat_to, to_ms, __ATOMIC_RELAXED);
}

long long it_load_lat_max(struct it_load *L, enum it_load_kind k)
{
    return ld(&L->lat_max[k]);
}

void it_load_totals_add(struct it_load_totals *acc, const struct it_load_totals *t)
{
    for (int k = 0; k < IT_LOAD_NKINDS; k++) {
        struct it_load_count *a = &acc->k[k];
        const struct it_load_count *b = &t->k[k];
        a->attempted += b->attempted;
        a->acked += b->acked;
        a->unavailable += b->unavailable;
        a->overloaded += b->overloaded;
        a->not_ready += b->not_ready;
        a->conn_errors += b->conn_errors;
        a->connect_errors += b->connect_errors;
        a->other += b->other;
        if (t->lat_max[k] > acc->lat_max[k])
            acc->lat_max[k] = t->lat_max[k];
    }
    if (t->max_count > acc->max_count)
        acc->max_count = t->max_count;
    if (t->max_tenant > acc->max_tenant)
        acc->max_tenant = t->max_tenant;
    for (int w = 0; w < IT_LOAD_USER_WORDS; w++) {
        acc->users_acked[w] |= t->users_acked[w];
        acc->users_attempted[w] |= t->users_attempted[w];
    }
    if (!acc->first_other[0])
        memcpy(acc->first_other, t->first_other, sizeof(acc->first_other));
}

long long it_load_users(const uint64_t *bits)
{
    long long n = 0;
    for (int w = 0; w < IT_LOAD_USER_WORDS; w++)
        n += __builtin_popcountll(bits[w]);
    return n;
}

void it_load_describe(const struct it_load_totals *t, char *out, size_t cap)
{
    size_t o = 0;
    for (int k = 0; k < IT_LOAD_NKINDS && o < cap; k++) {
        const struct it_load_count *c = &t->k[k];
        int n = snprintf(out + o, cap - o,
                         "%s%s: attempted %lld acked %lld 503pu %lld 429 %lld notready %lld "
                         "connerr %lld connectfail %lld other %lld",
                         k ? "; " : "", KIND_NAME[k], c->attempted, c->acked, c->unavailable,
                         c->overloaded, c->not_ready, c->conn_errors, c->connect_errors, c->other);
        if (n < 0)
            break;
        o += (size_t)n;
    }
    if (o < cap)
        snprintf(out + o, cap - o, "; max count %lld, max tenant value %lld, users acked %lld%s%s",
                 t->max_count, t->max_tenant, it_load_users(t->users_acked),
                 t->first_other[0] ? "; first unexpected: " : "", t->first_other);
}

/* ------------------------------------------------------------------ the oracle */

static void pq_quiet(void *arg, const char *msg)
{
    (void)arg;
    (void)msg;
}

struct dbnow {
    struct it_oracle_base v;
    bool sum_ok;             /* sum(sum_u) == 10^6 * sum(total) */
};

static bool db_read(const char *pg_dir, const char *counter_id, struct dbnow *d, char *err,
                    size_t errcap)
{
    char ci[512], sql[768];
    uint16_t port = it_pg_port(pg_dir);
    snprintf(ci, sizeof(ci), "host=%s port=%u dbname=ringcount user=postgres connect_timeout=5",
             pg_dir, port ? port : 5432);
    /* counter_id comes from the server (a UUID); checked so it cannot break the quoting */
    bool have_cid = counter_id && counter_id[0] && strspn(counter_id, "0123456789abcdefABCDEF-") ==
                                                      strlen(counter_id);
    snprintf(sql, sizeof(sql),
             "SELECT (SELECT coalesce(max(v), 0) FROM rc_counters WHERE k = 'increment'),"
             " (SELECT coalesce(sum(total), 0) FROM rc_events),"
             " (SELECT coalesce(sum(sum_u), 0) = 1000000 * coalesce(sum(total), 0) FROM rc_events),"
             " %s%s%s,"
             " (SELECT count(*) FROM rc_users)",
             have_cid ? "(SELECT coalesce(max(value), 0) FROM rc_tenant_counters WHERE id = '" : "0",
             have_cid ? counter_id : "", have_cid ? "')" : "");
    PGconn *c = PQconnectdb(ci);
    if (!c || PQstatus(c) != CONNECTION_OK) {
        snprintf(err, errcap, "connect %s: %s", ci, c ? PQerrorMessage(c) : "out of memory");
        PQfinish(c);
        return false;
    }
    PQsetNoticeProcessor(c, pq_quiet, NULL);
    PGresult *r = PQexec(c, sql);
    bool ok = PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1 && PQnfields(r) == 5;
    if (ok) {
        d->v.counter = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
        d->v.events = strtoll(PQgetvalue(r, 0, 1), NULL, 10);
        d->sum_ok = PQgetvalue(r, 0, 2)[0] == 't';
        d->v.tenant = strtoll(PQgetvalue(r, 0, 3), NULL, 10);
        d->v.users = strtoll(PQgetvalue(r, 0, 4), NULL, 10);
    } else {
        snprintf(err, errcap, "%s: %s", sql, PQresultErrorMessage(r));
    }
    PQclear(r);
    PQfinish(c);
    return ok;
}

bool it_oracle_read(const char *pg_dir, const char *counter_id, struct it_oracle_base *now,
                    char *err, size_t errcap)
{
    struct dbnow d;
    if (!db_read(pg_dir, counter_id, &d, err, errcap))
        return false;
    *now = d.v;
    return true;
}

/* The lower bounds hold. */
static bool lower_ok(const struct dbnow *d, const struct it_oracle_base *b,
                     const struct it_load_totals *lo, bool tenant)
{
    return d->v.counter >= b->counter + lo->k[IT_LOAD_DURABLE].acked + lo->k[IT_LOAD_FAST].acked &&
           d->v.counter >= lo->max_count && d->v.events >= b->events + lo->k[IT_LOAD_EVENT].acked &&
           (!tenant || (d->v.tenant >= b->tenant + lo->k[IT_LOAD_TENANT].acked &&
                        d->v.tenant >= lo->max_tenant)) &&
           d->v.users >= it_load_users(lo->users_acked);
}

bool it_oracle_check(const char *pg_dir, const char *counter_id, const struct it_oracle_base *base,
                     const struct it_load_totals *lo, const struct it_load_totals *hi, int wait_ms,
                     char *msg, size_t cap)
{
    struct dbnow d;
    char err[1024] = "";
    bool tenant = counter_id && counter_id[0];
    uint64_t end = it_now_ms() + (uint64_t)(wait_ms > 0 ? wait_ms : 0);
    bool have = false;
    for (;;) {
        have = db_read(pg_dir, counter_id, &d, err, sizeof(err));
        if (have && lower_ok(&d, base, lo, tenant))
            break;
        if (it_now_ms() >= end)
            break;
        sleep_ms(100);
    }
    if (!have) {
        snprintf(msg, cap, "oracle: cannot read the database: %s", err);
        return false;
    }
    const struct it_load_count *ld_ = &lo->k[IT_LOAD_DURABLE], *lf = &lo->k[IT_LOAD_FAST],
                               *le = &lo->k[IT_LOAD_EVENT], *lt = &lo->k[IT_LOAD_TENANT];
    const struct it_load_count *hd = &hi->k[IT_LOAD_DURABLE], *hf = &hi->k[IT_LOAD_FAST],
                               *he = &hi->k[IT_LOAD_EVENT], *ht = &hi->k[IT_LOAD_TENANT];
    long long users_lo = it_load_users(lo->users_acked), users_hi = it_load_users(hi->users_attempted);
    const char *why = NULL;
    char w[512];
    if (d.v.counter < base->counter + ld_->acked + lf->acked) {
        snprintf(w, sizeof(w), "increment counter %lld < %lld before + %lld durable + %lld fast "
                 "acknowledged (lost %lld)", d.v.counter, base->counter, ld_->acked, lf->acked,
                 base->counter + ld_->acked + lf->acked - d.v.counter);
        why = w;
    } else if (d.v.counter < lo->max_count) {
        snprintf(w, sizeof(w), "increment counter %lld < %lld, a count answered with 200",
                 d.v.counter, lo->max_count);
        why = w;
    } else if (d.v.counter > base->counter + hd->attempted + hf->attempted) {
        snprintf(w, sizeof(w), "increment counter %lld > %lld before + %lld durable + %lld fast "
                 "attempted (counted twice?)", d.v.counter, base->counter, hd->attempted,
                 hf->attempted);
        why = w;
    } else if (d.v.events < base->events + le->acked) {
        snprintf(w, sizeof(w), "events %lld < %lld before + %lld acknowledged (lost %lld)",
                 d.v.events, base->events, le->acked, base->events + le->acked - d.v.events);
        why = w;
    } else if (d.v.events > base->events + he->attempted) {
        snprintf(w, sizeof(w), "events %lld > %lld before + %lld attempted", d.v.events,
                 base->events, he->attempted);
        why = w;
    } else if (!d.sum_ok) {
        snprintf(w, sizeof(w), "rc_events: sum(sum_u) != 10^6 * sum(total) = %lld (every event "
                 "has value 1): a total and its sum were committed apart", d.v.events);
        why = w;
    } else if (tenant && d.v.tenant < base->tenant + lt->acked) {
        snprintf(w, sizeof(w), "tenant counter %lld < %lld before + %lld acknowledged (lost %lld)",
                 d.v.tenant, base->tenant, lt->acked, base->tenant + lt->acked - d.v.tenant);
        why = w;
    } else if (tenant && d.v.tenant < lo->max_tenant) {
        snprintf(w, sizeof(w), "tenant counter %lld < %lld, a value answered with 200", d.v.tenant,
                 lo->max_tenant);
        why = w;
    } else if (tenant && d.v.tenant > base->tenant + ht->attempted) {
        snprintf(w, sizeof(w), "tenant counter %lld > %lld before + %lld attempted", d.v.tenant,
                 base->tenant, ht->attempted);
        why = w;
    } else if (d.v.users < users_lo) {
        snprintf(w, sizeof(w), "rc_users %lld < %lld distinct acknowledged userIds", d.v.users,
                 users_lo);
        why = w;
    } else if (d.v.users > base->users + users_hi) {
        snprintf(w, sizeof(w), "rc_users %lld > %lld before + %lld distinct attempted userIds",
                 d.v.users, base->users, users_hi);
        why = w;
    }
    if (!why) {
        snprintf(msg, cap, "ok: counter %lld, events %lld, tenant %lld, users %lld", d.v.counter,
                 d.v.events, d.v.tenant, d.v.users);
        return true;
    }
    char dl[1024], dh[1024];
    it_load_describe(lo, dl, sizeof(dl));
    it_load_describe(hi, dh, sizeof(dh));
    snprintf(msg, cap, "oracle (after waiting up to %d ms): %s\n  lower-bound totals: %s\n"
             "  upper-bound totals: %s", wait_ms, why, dl, dh);
    return false;
}

void it_load_oracle(const char *pg_dir, const char *counter_id, const struct it_oracle_base *base,
                    const struct it_load_totals *lo, const struct it_load_totals *hi, int wait_ms,
                    struct it_server *srv, const char *what)
{
    static char msg[4096], log[8192];
    if (it_oracle_check(pg_dir, counter_id, base, lo, hi, wait_ms, msg, sizeof(msg)))
        return;
    log[0] = 0;
    if (srv)
        it_log_copy(srv, log, sizeof(log));
    cr_assert_fail("%s: %s\nserver log tail:\n%s", what, msg, log);
}

/* ------------------------------------------------------------------ single requests */

int it_load_make_tenant(uint16_t port, const char *admin_key, const char *label, char *tid,
                        char *cid, char *err, size_t errcap)
{
    struct it_conn *c = malloc(sizeof(*c));
    struct it_resp *r = malloc(sizeof(*r));
    int ret = -1;
    char hdr[320], body[320], path[200];
    if (!c || !r) {
        snprintf(err, errcap, "out of memory");
        goto out;
    }
    c->fd = -1;
    if (it_conn_open(c, port) < 0) {
        snprintf(err, errcap, "connect to %u failed", port);
        goto out;
    }
    snprintf(hdr, sizeof(hdr), "X-API-Key: %s\r\n", admin_key);
    snprintf(body, sizeof(body), "{\"label\":\"%s\"}", label);
    int rc = it_load_call(c, "POST", "/tenants", hdr, body, r, 5000);
    if (rc < 0 || r->status != 201 || it_json_num(r->body, "tenant_id", tid, 64) <= 0) {
        snprintf(err, errcap, "POST /tenants: rc %d status %d %.200s", rc, rc < 0 ? 0 : r->status,
                 rc < 0 ? "" : r->body);
        goto out;
    }
    snprintf(path, sizeof(path), "/tenants/%s/counters", tid);
    rc = it_load_call(c, "POST", path, hdr, "{\"label\":\"hits\"}", r, 5000);
    if (rc < 0 || r->status != 201 || it_json_num(r->body, "counter_id", cid, 64) <= 0) {
        snprintf(err, errcap, "POST %s: rc %d status %d %.200s", path, rc, rc < 0 ? 0 : r->status,
                 rc < 0 ? "" : r->body);
        goto out;
    }
    ret = 0;
out:
    if (c)
        it_conn_close(c);
    free(c);
    free(r);
    return ret;
}

/* Repeat GET/POST path on fresh connections until it answers want or within_ms passes. */
static long long until_status(uint16_t port, const char *method, const char *path, int want,
                              int within_ms, struct it_load_totals *acc, char *why, size_t cap)
{
    struct it_conn *c = malloc(sizeof(*c));
    struct it_resp *r = malloc(sizeof(*r));
    long long ret = -1;
    if (cap)
        why[0] = 0;
    if (!c || !r) {
        snprintf(why, cap, "out of memory");
        goto out;
    }
    c->fd = -1;
    uint64_t t0 = it_now_ms(), end = t0 + (uint64_t)within_ms;
    for (;;) {
        uint64_t now = it_now_ms();
        if (now >= end)
            break;
        if (c->fd < 0 && it_conn_open(c, port) < 0) {
            snprintf(why, cap, "connect to %u failed", port);
            sleep_ms(50);
            continue;
        }
        if (acc)
            acc->k[IT_LOAD_DURABLE].attempted++;
        int rc = it_load_call(c, method, path, NULL, NULL, r, (int)(end - now));
        if (rc == 0 && r->status == want) {
            if (acc) {
                char num[32];
                acc->k[IT_LOAD_DURABLE].acked++;
                if (it_json_num(r->body, "count", num, sizeof(num)) > 0) {
                    long long v = strtoll(num, NULL, 10);
                    if (v > acc->max_count)
                        acc->max_count = v;
                }
            }
            ret = (long long)(it_now_ms() - t0);
            break;
        }
        if (rc < 0) {
            snprintf(why, cap, "%s %s: %s after %llu ms", method, path, strerror(-rc),
                     (unsigned long long)(it_now_ms() - t0));
            it_conn_close(c);
        } else {
            snprintf(why, cap, "%s %s -> %d %.160s after %llu ms", method, path, r->status,
                     r->body, (unsigned long long)(it_now_ms() - t0));
            if (r->close)
                it_conn_close(c);
        }
        sleep_ms(50);
    }
out:
    if (c)
        it_conn_close(c);
    free(c);
    free(r);
    return ret;
}

long long it_load_durable_ok(uint16_t port, int within_ms, struct it_load_totals *acc, char *why,
                             size_t cap)
{
    return until_status(port, "POST", "/api/v1/increment", 200, within_ms, acc, why, cap);
}

long long it_load_ready_ok(uint16_t port, int within_ms, char *why, size_t cap)
{
    return until_status(port, "GET", "/readyz", 200, within_ms, NULL, why, cap);
}

/* ------------------------------------------------------------------ /readyz poller */

struct it_ready_poll {
    pthread_t th;
    uint16_t port;
    int interval_ms;
    int stop;
    pthread_mutex_t mu;
    struct it_ready_stats s;
};

static void *poll_main(void *arg)
{
    struct it_ready_poll *p = arg;
    struct it_conn *c = malloc(sizeof(*c));
    struct it_resp *r = malloc(sizeof(*r));
    if (!c || !r)
        goto out;
    c->fd = -1;
    while (!__atomic_load_n(&p->stop, __ATOMIC_ACQUIRE)) {
        uint64_t t0 = it_now_ms();
        if (c->fd < 0 && it_conn_open(c, p->port) < 0) {
            pthread_mutex_lock(&p->mu);
            p->s.nerr++;
            pthread_mutex_unlock(&p->mu);
        } else {
            int rc = it_load_call(c, "GET", "/readyz", NULL, NULL, r, 2000);
            pthread_mutex_lock(&p->mu);
            if (rc < 0)
                p->s.nerr++;
            else if (r->status == 200) {
                p->s.n200++;
                if (!p->s.first200_ms)
                    p->s.first200_ms = it_now_ms();
            }
            else if (r->status == 503) {
                p->s.n503++;
                if (!p->s.first503_ms)
                    p->s.first503_ms = it_now_ms();
            } else
                p->s.nother++;
            pthread_mutex_unlock(&p->mu);
            if (rc < 0 || r->close)
                it_conn_close(c);
            if (c->fd >= 0) {
                rc = it_load_call(c, "GET", "/stats", NULL, NULL, r, 2000);
                if (rc == 0 && r->status == 200) {
                    char num[32];
                    const char *pers = strstr(r->body, "\"persistence\"");
                    pthread_mutex_lock(&p->mu);
                    if (pers && it_json_num(pers, "lastFlushAgeMs", num, sizeof(num)) > 0 &&
                        num[0] >= '0' && num[0] <= '9') {
                        long long v = strtoll(num, NULL, 10);
                        if (v > p->s.max_flush_age_ms)
                            p->s.max_flush_age_ms = v;
                    }
                    if (pers && it_json_num(pers, "flushes", num, sizeof(num)) > 0)
                        p->s.flushes = strtoll(num, NULL, 10);
                    pthread_mutex_unlock(&p->mu);
                }
                if (rc < 0 || r->close)
                    it_conn_close(c);
            }
        }
        uint64_t spent = it_now_ms() - t0;
        if (spent < (uint64_t)p->interval_ms)
            sleep_ms((unsigned)((uint64_t)p->interval_ms - spent));
    }
out:
    if (c)
        it_conn_close(c);
    free(c);
    free(r);
    return NULL;
}

static void stats_zero(struct it_ready_stats *s)
{
    memset(s, 0, sizeof(*s));
    s->max_flush_age_ms = -1;
    s->flushes = -1;
}

int it_ready_poll_start(uint16_t port, int interval_ms, struct it_ready_poll **out)
{
    struct it_ready_poll *p = calloc(1, sizeof(*p));
    if (!p)
        return -ENOMEM;
    p->port = port;
    p->interval_ms = interval_ms;
    stats_zero(&p->s);
    pthread_mutex_init(&p->mu, NULL);
    int rc = pthread_create(&p->th, NULL, poll_main, p);
    if (rc != 0) {
        pthread_mutex_destroy(&p->mu);
        free(p);
        return -rc;
    }
    *out = p;
    return 0;
}

void it_ready_poll_reset(struct it_ready_poll *p)
{
    pthread_mutex_lock(&p->mu);
    long long flushes = p->s.flushes;
    stats_zero(&p->s);
    p->s.flushes = flushes;
    pthread_mutex_unlock(&p->mu);
}

void it_ready_poll_get(struct it_ready_poll *p, struct it_ready_stats *s)
{
    pthread_mutex_lock(&p->mu);
    *s = p->s;
    pthread_mutex_unlock(&p->mu);
}

void it_ready_poll_stop(struct it_ready_poll *p)
{
    if (!p)
        return;
    __atomic_store_n(&p->stop, 1, __ATOMIC_RELEASE);
    pthread_join(p->th, NULL);
    pthread_mutex_destroy(&p->mu);
    free(p);
}
