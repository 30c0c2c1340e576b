/* pwait — see pwait.h. */
#include "pwait.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "decimal.h"
#include "json.h"
#include "persist.h"

enum tok_kind {
    TOK_CLUSTER, /* a /stats barrier, then the persister's cluster totals */
    TOK_RESET,   /* a /reset, answered once it is committed */
    TOK_COMMIT,  /* an answer held until the next PostgreSQL commit (tenant inc ?sync=1) */
    TOK_KEYED,   /* a durable increment with an Idempotency-Key (holds a durable_enter slot) */
    TOK_TNOP,    /* a tenant write or lookup (struct persist_tnop; key = its address) */
};

/* A session waiting on the persister: a durable increment (key = its ticket, FIFO) or a token
   request (key = the token of its request). */
struct waiter {
    struct sess *s; /* NULL: the connection died (tombstone, keeps the FIFO in ticket order) */
    uint64_t key;
    uint64_t deadline_ms;
    enum tok_kind kind;
    char *resp;     /* TOK_COMMIT: headers then body of the held answer (malloc'd) */
    uint16_t hlen, blen;
    pwait_tnop_fn done; /* TOK_TNOP */
};

struct pwait {
    unsigned idx;
    struct waiter *dur;       /* durable increments waiting for their commit: ring, FIFO */
    size_t dur_head, dur_len, dur_cap;
    struct waiter *tok;       /* token requests waiting for a reply */
    size_t ntok, captok;
    uint64_t next_token;
};
/* Deadlines are CLOCK_MONOTONIC_COARSE ms, the clock of the worker's now_ms (pwait_poll). */

struct pwait *pwait_new(unsigned idx)
{
    struct pwait *pw = calloc(1, sizeof(*pw));
    if (pw)
        pw->idx = idx;
    return pw;
}

void pwait_free(struct pwait *pw)
{
    if (!pw)
        return;
    for (size_t i = 0; i < pw->ntok; i++)
        free(pw->tok[i].resp);
    free(pw->dur);
    free(pw->tok);
    free(pw);
}

/* ---------------------------------------------------------------- answers */

int pwait_answer_count(struct sess *s, int64_t v)
{
    char body[48]; /* {"count":} + 20 digits */
    struct json_w w;
    json_w_init(&w, body, sizeof(body));
    json_w_lit(&w, "{\"count\":");
    json_w_i64(&w, v);
    json_w_lit(&w, "}");
    ssize_t n = json_w_end(&w);
    return sess_respond(s, 200, SESS_JSON, NULL, 0, body, n < 0 ? 0 : (size_t)n);
}

int pwait_answer_unavailable(struct sess *s, const char *why)
{
    return sess_error(s, HTTP_E_PERSISTENCE_UNAVAILABLE, why, SESS_HDRS(SESS_RETRY_AFTER_1));
}

/* A durable request not confirmed in time (SPEC §2.2, §4): its increment was taken and may
   still be committed later, so the body says "outcome":"unknown" — a client retries it with
   the same Idempotency-Key, never blindly. (A 503 that counted nothing is not_committed.) */
#define UNKNOWN_BODY                                                                            \
    "{\"error\":{\"code\":\"PERSISTENCE_UNAVAILABLE\",\"message\":\"PostgreSQL did not "         \
    "commit in time (--durable-timeout-ms); the increment may still be committed: retry "       \
    "with the same Idempotency-Key\",\"outcome\":\"unknown\"}}"
static int answer_unknown(struct sess *s)
{
    return sess_respond(s, 503, SESS_JSON, SESS_HDRS(SESS_RETRY_AFTER_1), SESS_LIT(UNKNOWN_BODY));
}

int pwait_answer_not_committed(struct sess *s, const char *why)
{
    char body[320];
    int n = snprintf(body, sizeof(body),
                     "{\"error\":{\"code\":\"PERSISTENCE_UNAVAILABLE\",\"message\":\"%s\","
                     "\"outcome\":\"not_committed\"}}", why);
    return sess_respond(s, 503, SESS_JSON, SESS_HDRS(SESS_RETRY_AFTER_1), body,
                        n > 0 && (size_t)n < sizeof(body) ? (size_t)n : 0);
}

int pwait_answer_overflow(struct sess *s)
{
    return sess_error(s, HTTP_E_COUNTER_OVERFLOW,
                      "the counter is at its maximum (9223372036854775807) and is never wrapped",
                      NULL, 0);
}

/* The cluster totals of a /stats?scope=cluster (SPEC §2.2). */
static void answer_cluster(struct sess *s, const struct persist_reply *r)
{
    char body[256]; /* 74 bytes of names, 3 integers of <= 20 digits, 2 decimals of <= 42: 218 */
    struct json_w w;
    json_w_init(&w, body, sizeof(body));
    json_w_lit(&w, "{\"totalRequests\":");
    json_w_u64(&w, r->events);
    json_w_lit(&w, ",\"uniqueUsers\":");
    json_w_u64(&w, r->users);
    json_w_lit(&w, ",\"sum\":");
    json_w_dec(&w, r->sum);
    json_w_lit(&w, ",\"avg\":");
    json_w_dec(&w, r->events ? dec_div_round(r->sum, r->events) : 0);
    json_w_lit(&w, ",\"scope\":\"cluster\",\"nodes\":");
    json_w_u64(&w, r->nodes);
    json_w_lit(&w, "}");
    ssize_t n = json_w_end(&w);
    sess_respond(s, 200, SESS_JSON, NULL, 0, body, n < 0 ? 0 : (size_t)n);
}

/* Answer token waiter w with the persister's reply r, or NULL: its deadline passed. */
static void answer_token(struct pwait *pw, struct waiter *w, const struct persist_reply *r)
{
    switch (w->kind) {
    case TOK_KEYED:
        if (!r)
            answer_unknown(w->s);
        else if (r->status == -EOVERFLOW)
            pwait_answer_overflow(w->s);
        else if (r->status < 0) /* isolated and written to rc_rejected: certainly not counted */
            pwait_answer_not_committed(w->s, "PostgreSQL rejected this increment (see rc_rejected)");
        else
            pwait_answer_count(w->s, r->value);
        persist_w_durable_leave(pw->idx);
        break;
    case TOK_COMMIT:
        if (r)
            sess_respond(w->s, 200, SESS_JSON, w->resp, w->hlen, w->resp + w->hlen, w->blen);
        else /* applied in memory, not confirmed: never a false 2xx; it is flushed later */
            sess_respond(w->s, 503, SESS_JSON, w->resp, w->hlen, SESS_LIT(UNKNOWN_BODY));
        free(w->resp);
        w->resp = NULL;
        break;
    case TOK_RESET:
        if (r)
            sess_respond(w->s, 200, SESS_JSON, NULL, 0, SESS_LIT(PWAIT_BODY_RESET));
        else
            pwait_answer_unavailable(w->s, "reset done in memory; PostgreSQL did not confirm it "
                                           "in time (it is applied when the database is "
                                           "reachable)");
        break;
    case TOK_CLUSTER:
        if (r)
            answer_cluster(w->s, r);
        else
            pwait_answer_unavailable(w->s, "PostgreSQL did not answer in time");
        break;
    case TOK_TNOP: {
        struct persist_tnop *op = (struct persist_tnop *)(uintptr_t)w->key;
        w->done(w->s, op, r != NULL);
        if (r) /* else the persister still holds it: freed when its reply comes */
            free(op);
        break;
    }
    }
    sess_unpark(w->s);
}

/* ---------------------------------------------------------------- waiting */

/* Grow-on-demand storage for token waiters: amortised doubling, never per request once warm. */
static int tok_reserve(struct pwait *pw)
{
    if (pw->ntok < pw->captok)
        return 0;
    size_t nc = pw->captok ? pw->captok * 2 : 64;
    struct waiter *nv = realloc(pw->tok, nc * sizeof(*nv));
    if (!nv)
        return -ENOMEM;
    pw->tok = nv;
    pw->captok = nc;
    return 0;
}

static struct waiter *tok_push(struct pwait *pw, struct sess *s, uint64_t tok, enum tok_kind k)
{
    struct waiter *w = &pw->tok[pw->ntok++];
    *w = (struct waiter){.s = s, .key = tok, .kind = k,
                         .deadline_ms = clock_ms(CLOCK_MONOTONIC_COARSE) + persist_durable_timeout_ms()};
    sess_park(s, pw);
    return w;
}

enum sess_handled pwait_request(struct pwait *pw, struct sess *s, enum pwait_req k)
{
    uint64_t tok = ++pw->next_token;
    if (tok_reserve(pw) < 0 ||
        persist_w_request(pw->idx, k == PWAIT_RESET ? PERSIST_REQ_RESET : PERSIST_REQ_CLUSTER,
                          tok) < 0) {
        sess_error(s, HTTP_E_OVERLOADED, "too many requests waiting for the persister",
                   SESS_HDRS(SESS_RETRY_AFTER_1));
        sess_unpark(s); /* a /stats barrier may have parked it */
        return SESS_H_DONE;
    }
    tok_push(pw, s, tok, k == PWAIT_RESET ? TOK_RESET : TOK_CLUSTER);
    return SESS_H_PARKED;
}

int pwait_commit(struct pwait *pw, struct sess *s, const char *hdrs, size_t hlen,
                 const char *body, size_t blen)
{
    if (!persist_enabled())
        return -ENODEV;
    if (hlen > UINT16_MAX || blen > UINT16_MAX)
        return -EINVAL;
    /* Only ?sync=1 requests take this path, and they wait for a commit anyway. */
    char *resp = malloc(hlen + blen + 1);
    if (!resp)
        return -ENOMEM;
    memcpy(resp, hdrs, hlen);
    memcpy(resp + hlen, body, blen);
    /* A cluster request is answered after the flush it rides on commits, so it also serves as
       "wait for the next commit". */
    uint64_t tok = ++pw->next_token;
    if (tok_reserve(pw) < 0 || persist_w_request(pw->idx, PERSIST_REQ_CLUSTER, tok) < 0) {
        free(resp);
        sess_error(s, HTTP_E_OVERLOADED, "too many requests waiting for the persister",
                   SESS_HDRS(SESS_RETRY_AFTER_1));
        return SESS_H_DONE;
    }
    struct waiter *w = tok_push(pw, s, tok, TOK_COMMIT);
    w->resp = resp;
    w->hlen = (uint16_t)hlen;
    w->blen = (uint16_t)blen;
    return SESS_H_PARKED;
}

enum sess_handled pwait_keyed(struct pwait *pw, struct sess *s, const char *key, size_t klen)
{
    uint64_t tok = ++pw->next_token;
    if (tok_reserve(pw) < 0 || persist_w_keyed(pw->idx, key, klen, tok) < 0) {
        persist_w_durable_leave(pw->idx);
        pwait_answer_not_committed(s, "too many requests waiting for the persister");
        return SESS_H_DONE;
    }
    tok_push(pw, s, tok, TOK_KEYED);
    return SESS_H_PARKED;
}

enum sess_handled pwait_tnop(struct pwait *pw, struct sess *s, struct persist_tnop *op,
                             pwait_tnop_fn done)
{
    if (tok_reserve(pw) < 0 || persist_w_tnop(pw->idx, op) < 0) {
        free(op);
        sess_error(s, HTTP_E_OVERLOADED, "too many requests waiting for the persister",
                   SESS_HDRS(SESS_RETRY_AFTER_1));
        return SESS_H_DONE;
    }
    tok_push(pw, s, (uint64_t)(uintptr_t)op, TOK_TNOP)->done = done;
    return SESS_H_PARKED;
}

static struct waiter *dur_at(struct pwait *pw, size_t i)
{
    return &pw->dur[(pw->dur_head + i) % pw->dur_cap];
}

/* Room for one more durable waiter: the ring doubles, unrolled to start at 0. 0 / -ENOMEM. */
static int dur_reserve(struct pwait *pw)
{
    if (pw->dur_len < pw->dur_cap)
        return 0;
    size_t nc = pw->dur_cap ? pw->dur_cap * 2 : 64;
    struct waiter *nv = malloc(nc * sizeof(*nv));
    if (!nv)
        return -ENOMEM;
    for (size_t i = 0; i < pw->dur_len; i++)
        nv[i] = *dur_at(pw, i);
    free(pw->dur);
    pw->dur = nv;
    pw->dur_cap = nc;
    pw->dur_head = 0;
    return 0;
}

enum sess_handled pwait_durable(struct pwait *pw, struct sess *s)
{
    uint64_t ticket;
    if (dur_reserve(pw) < 0) {
        persist_w_durable_leave(pw->idx);
        sess_error(s, HTTP_E_OVERLOADED, "out of memory", SESS_HDRS(SESS_RETRY_AFTER_1));
        return SESS_H_DONE;
    }
    if (persist_w_incr(pw->idx, &ticket) < 0) {
        persist_w_durable_leave(pw->idx);
        pwait_answer_overflow(s);
        return SESS_H_DONE;
    }
    pw->dur[(pw->dur_head + pw->dur_len++) % pw->dur_cap] = (struct waiter){
        .s = s, .key = ticket, .deadline_ms = clock_ms(CLOCK_MONOTONIC_COARSE) + persist_durable_timeout_ms()};
    sess_park(s, pw);
    return SESS_H_PARKED;
}

/* Pop the oldest durable waiter, answering it with its count (r) or 503 unknown (NULL). */
static void dur_pop(struct pwait *pw, const struct persist_reply *r)
{
    struct waiter *w = dur_at(pw, 0);
    if (w->s) {
        if (r && r->status < 0) /* the database refused it alone: rc_rejected, never counted */
            pwait_answer_not_committed(w->s, "PostgreSQL rejected this increment (see rc_rejected)");
        else if (r)
            pwait_answer_count(w->s, (int64_t)(w->key + r->offset));
        else /* not acknowledged: the increment may still be committed later (no false 2xx) */
            answer_unknown(w->s);
        sess_unpark(w->s);
        persist_w_durable_leave(pw->idx);
    }
    pw->dur_head = (pw->dur_head + 1) % pw->dur_cap;
    pw->dur_len--;
}

void pwait_poll(struct pwait *pw, uint64_t now_ms)
{
    struct persist_reply r;
    while (persist_w_reply_pop(pw->idx, &r)) {
        if (r.kind == PERSIST_R_DURABLE) {
            while (pw->dur_len && dur_at(pw, 0)->key <= r.upto)
                dur_pop(pw, &r);
            continue;
        }
        bool found = false;
        for (size_t i = 0; i < pw->ntok && !found; i++) {
            if (pw->tok[i].key != r.token)
                continue;
            found = true;
            answer_token(pw, &pw->tok[i], &r);
            pw->tok[i] = pw->tok[--pw->ntok];
        }
        if (!found && r.kind == PERSIST_R_TNOP) /* its waiter timed out or died: ours to free */
            free((void *)(uintptr_t)r.token);
    }
    while (pw->dur_len && dur_at(pw, 0)->deadline_ms <= now_ms)
        dur_pop(pw, NULL);
    for (size_t i = 0; i < pw->ntok;) {
        if (pw->tok[i].deadline_ms <= now_ms) {
            answer_token(pw, &pw->tok[i], NULL);
            pw->tok[i] = pw->tok[--pw->ntok];
        } else {
            i++;
        }
    }
}

void pwait_forget(struct pwait *pw, struct sess *s)
{
    for (size_t i = 0; i < pw->dur_len; i++) {
        struct waiter *w = dur_at(pw, i);
        if (w->s == s) {
            w->s = NULL;
            persist_w_durable_leave(pw->idx);
        }
    }
    for (size_t i = 0; i < pw->ntok;) {
        if (pw->tok[i].s == s) {
            if (pw->tok[i].kind == TOK_KEYED)
                persist_w_durable_leave(pw->idx);
            free(pw->tok[i].resp);
            pw->tok[i] = pw->tok[--pw->ntok];
        } else {
            i++;
        }
    }
}
