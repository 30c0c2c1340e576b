/*
 * rb_scen — ringbench's scenarios (SPEC §5): event (the 1MRC pattern), increment, counter and
 * raw. What each sends (the request bytes, built once; raw --spread patches 12 hex digits
 * of it per request), what it sets up before the clock starts (the /stats or count
 * baseline, counter: a tenant and a counter), and how the run is verified afterwards
 * (/stats exactly against what was acknowledged, or the count).
 *
 * Owns: struct rb_scen and its request. Threads: rb_scen_setup, rb_scen_verify and
 * rb_scen_free on main (blocking control requests, before and after the run); the inline
 * request writers on any worker (they only read the request).
 */
#ifndef RB_SCEN_H
#define RB_SCEN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "decimal.h"
#include "mix.h"
#include "rb_args.h"

/* The 1MRC pattern (shared/bench/event.lua): request i posts
   {"userId":"user_<i % 75000>","value":<i % 1000>}; 1000 divides 75000, so (user, value)
   repeats with period 75000. */
#define RB_EV_USERS 75000
#define RB_EV_VALUES 1000
#define RB_EV_BITMAP ((RB_EV_USERS + 7) / 8) /* one bit per user: the distinct users */

/* The load request. */
struct rb_req {
    char *bytes;      /* raw/increment/counter: the request; event: the head up to the
                         Content-Length value */
    size_t len;       /* bytes of it */
    uint32_t max;     /* bytes of the largest request */
    bool head_method; /* raw -m HEAD: responses have no body */
    size_t spread_at; /* raw --spread: offset of the 12 digits {n} became (0: no --spread;
                         the method comes first) */
};

/* The four figures of GET /stats, exact, with their text as the server wrote it. */
struct rb_stats {
    int64_t total, users;
    dec_t sum, avg;
    char sum_s[64], avg_s[64];
};

/* What the workers counted, summed. */
struct rb_totals {
    uint64_t responses, unanswered, acked, ok;
    dec_t acked_sum; /* event: exact sum of the acknowledged values */
    uint64_t distinct_acked, distinct_sent; /* event: users */
};

/* A scenario between its phases. */
struct rb_scen {
    const struct rb_opts *o;
    struct rb_req req;
    struct rb_stats before; /* event: /stats before the run */
    char path[2400];        /* the load path (counter: .../inc) */
    char check[2300];       /* increment/counter: the path whose count/value is verified */
    int64_t count_before;
    bool can_verify;
};

/* Set-up before the clock starts (prints the counter's ids), then build the request.
   0, or an exit code: 1 (a set-up request failed), 2 (usage: counter without
   RINGCOUNT_ADMIN_KEY). */
int rb_scen_setup(struct rb_scen *s, const struct rb_opts *o);

/* After the run (not raw): the scenario's check and that no request failed (errors: error
   statuses and socket errors). Prints one "verify" line per check; true when all hold. */
bool rb_scen_verify(const struct rb_scen *s, const struct rb_totals *t, uint64_t errors);

/* Free the request. */
void rb_scen_free(struct rb_scen *s);

/* Decimal digits of v into p (no NUL); returns the count. Not fmt_u64: that one is out of
   line and 64-bit, and this runs three times per event request on the load threads. */
static inline size_t rb_scen_put_u32(char *p, uint32_t v)
{
    char t[10];
    size_t n = 0;
    do {
        t[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    for (size_t i = 0; i < n; i++)
        p[i] = t[n - 1 - i];
    return n;
}

/* Event request seq at p: the head (method .. "Content-Length: "), the length, the body.
   Returns the end. Inline: the workers write one per request. */
static inline char *rb_scen_put_event(const struct rb_req *q, bool half, char *p, uint64_t seq)
{
    char ub[10], vb[10];
    size_t ul = rb_scen_put_u32(ub, (uint32_t)(seq % RB_EV_USERS)),
           vl = rb_scen_put_u32(vb, (uint32_t)(seq % RB_EV_VALUES));
    uint32_t blen = (uint32_t)(27 + ul + vl + (half ? 2 : 0));
    memcpy(p, q->bytes, q->len);
    p += q->len;
    p += rb_scen_put_u32(p, blen);
    memcpy(p, "\r\n\r\n{\"userId\":\"user_", 20);
    p += 20;
    memcpy(p, ub, ul);
    p += ul;
    memcpy(p, "\",\"value\":", 10);
    p += 10;
    memcpy(p, vb, vl);
    p += vl;
    if (half) {
        memcpy(p, ".5", 2);
        p += 2;
    }
    *p++ = '}';
    return p;
}

/* The --spread number of request seq: seq mod N for --spread-seq (seq counted across the
   threads), else a hash of seq and the thread's salt scaled into [0, N) by a multiply-high
   (no division on the load path). */
static inline uint64_t rb_scen_spread_num(const struct rb_opts *o, uint64_t seq, uint64_t salt)
{
    if (o->spread_seq) return seq % o->spread;
    return (uint64_t)(((unsigned __int128)mix64(seq ^ salt) * o->spread) >> 64);
}

/* Raw --spread request at p with number v (< 2^48) as its 12 lowercase hex digits. Returns
   the end. Inline: the workers write one per request. */
static inline char *rb_scen_put_spread(const struct rb_req *q, char *p, uint64_t v)
{
    memcpy(p, q->bytes, q->len);
    char *d = p + q->spread_at + 12;
    for (int i = 0; i < 12; i++, v >>= 4)
        *--d = "0123456789abcdef"[v & 15];
    return p + q->len;
}

/* The exact value event request seq posts. */
static inline dec_t rb_scen_event_value(uint64_t seq, bool half)
{
    return (dec_t)(seq % RB_EV_VALUES) * DEC_SCALE + (half ? DEC_SCALE / 2 : 0);
}

#endif
