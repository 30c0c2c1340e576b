/* ratelimit — see ratelimit.h. */
#include "ratelimit.h"
#include "mix.h"

#include <ck_pr.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "fmt.h"

#define TOKEN 1000u /* milli-tokens: R tokens/s refill exactly R per ms */
/* The bucket word: deficit (milli-tokens spent and not yet refilled; 0 = full) in the low 33
   bits, the last refill in ms modulo 2^31 above it. */
#define D_BITS 33
#define D_MASK ((1ull << D_BITS) - 1)
#define T_MASK ((1ull << 31) - 1)
/* A deficit of all ones never occurs (> RL_BURST_MAX x 1000): it marks a slot just taken
   from an evicted client for a new one, whose bucket is full. */
#define FRESH D_MASK
/* A clock up to ~17 min behind the one that last refilled a bucket is a clock going back
   (workers' clocks differ by a few ms), not one 24.8 days ahead. */
#define BACK_MS (1ull << 20)

/* 16 bytes, 4 per cache line. key 0 = never used (a claimed slot never goes back to 0). */
struct rl_slot {
    uint64_t key;
    uint64_t state;
};

struct rl_table {
    uint32_t mask, probe;
    uint64_t seed;
    uint64_t policy; /* burst << 32 | rate: read once per call, so a call sees one policy */
    struct rl_slot *s;
};

static uint64_t pack_policy(uint32_t rate, uint32_t burst)
{
    return (uint64_t)burst << 32 | rate;
}

static bool policy_ok(uint32_t rate, uint32_t burst)
{
    return rate >= 1 && rate <= RL_RATE_MAX && burst >= 1 && burst <= RL_BURST_MAX;
}

struct rl_table *rl_new(uint32_t capacity, uint32_t rate, uint32_t burst, uint64_t seed)
{
    if (!policy_ok(rate, burst) || capacity > (1u << 24))
        return NULL;
    uint32_t cap = 16;
    while (cap < capacity)
        cap <<= 1;
    struct rl_table *t = calloc(1, sizeof(*t));
    if (!t)
        return NULL;
    /* 64-byte aligned: a window of 32 slots is exactly 8 cache lines */
    t->s = aligned_alloc(64, (size_t)cap * sizeof(*t->s));
    if (!t->s) {
        free(t);
        return NULL;
    }
    memset(t->s, 0, (size_t)cap * sizeof(*t->s));
    t->mask = cap - 1;
    t->probe = cap < RL_PROBE ? cap : RL_PROBE;
    t->seed = mix64(seed + 0x9e3779b97f4a7c15ull);
    t->policy = pack_policy(rate, burst);
    return t;
}

void rl_free(struct rl_table *t)
{
    if (!t)
        return;
    free(t->s);
    free(t);
}

void rl_set_policy(struct rl_table *t, uint32_t rate, uint32_t burst)
{
    if (!policy_ok(rate, burst))
        return;
    uint64_t p = pack_policy(rate, burst);
    if (ck_pr_load_64(&t->policy) == p)
        return; /* another worker applied this reload already */
    ck_pr_store_64(&t->policy, p);
    /* what a client spent stays spent, up to the new burst (a call that read the old policy
       may still write a larger deficit: every call clamps it too) */
    uint64_t full = (uint64_t)burst * TOKEN;
    for (uint32_t i = 0; i <= t->mask; i++) {
        struct rl_slot *x = &t->s[i];
        if (!ck_pr_load_64(&x->key))
            continue;
        uint64_t s = ck_pr_load_64(&x->state);
        while ((s & D_MASK) != FRESH && (s & D_MASK) > full &&
               !ck_pr_cas_64_value(&x->state, s, (s & ~D_MASK) | full, &s))
            ;
    }
}

/* Nonzero: a bijection of (family, address) for IPv4 (zero high bytes), a 64-bit hash of it
   for IPv6. The one input that would map to 0 shares the bucket of the one mapping to 1. */
static uint64_t key_of(const struct rl_table *t, int family, const uint8_t addr[16])
{
    uint64_t a = 0, b = 0, fam = 0;
    if (family == AF_INET) {
        uint32_t v4;
        memcpy(&v4, addr, 4);
        a = v4;
        fam = 4;
    } else if (family == AF_INET6) {
        memcpy(&a, addr, 8);
        memcpy(&b, addr + 8, 8);
        fam = 6;
    }
    uint64_t k = mix64(mix64(a ^ t->seed ^ (fam << 32) ^ (fam << 60)) ^ b);
    return k ? k : 1;
}

/* Milliseconds since the refill time tm (31 bits) at now31; 0 if the clock went back. */
static uint64_t age_ms(uint64_t tm, uint64_t now31)
{
    uint64_t d = (now31 - tm) & T_MASK;
    return d > T_MASK - BACK_MS ? 0 : d;
}

/* The slot of the window with the oldest refill, not one between its claim and its first update
   (a peek at exactly now_ms % 2^31 == 0 also leaves 0: that slot then waits for its next
   request to become evictable again); NULL if none. */
static struct rl_slot *oldest(struct rl_table *t, uint32_t h, uint64_t now31, uint64_t *state)
{
    struct rl_slot *v = NULL;
    uint64_t best = 0;
    for (uint32_t i = 0; i < t->probe; i++) {
        struct rl_slot *x = &t->s[(h + i) & t->mask];
        uint64_t s = ck_pr_load_64(&x->state);
        if ((s & D_MASK) == FRESH || s == 0)
            continue; /* being handed over, or claimed and not yet updated */
        uint64_t a = age_ms(s >> D_BITS, now31);
        if (!v || a > best) {
            v = x;
            best = a;
            *state = s;
        }
    }
    return v;
}

/* The slot of key k: found in its window, else an empty slot claimed (CAS 0 -> k), else the
   oldest one taken over (CAS of its state to FRESH, then the key). NULL only if 64 rounds of
   takeovers all lost to other workers. */
static struct rl_slot *slot_of(struct rl_table *t, uint64_t k, uint64_t now31)
{
    uint32_t h = (uint32_t)(k >> 32) & t->mask;
    for (int round = 0; round < 64; round++) {
        for (uint32_t i = 0; i < t->probe; i++) {
            struct rl_slot *x = &t->s[(h + i) & t->mask];
            uint64_t key = ck_pr_load_64(&x->key);
            if (key == 0 && ck_pr_cas_64_value(&x->key, 0, k, &key))
                return x; /* a never-used slot: state 0 is a full bucket */
            if (key == k) {
                ck_pr_fence_load(); /* the state after the key (see the takeover below) */
                return x;
            }
        }
        uint64_t s = 0;
        struct rl_slot *v = oldest(t, h, now31, &s);
        if (v && ck_pr_cas_64(&v->state, s, FRESH)) {
            ck_pr_fence_store(); /* FRESH before the key: whoever sees k sees a full bucket */
            ck_pr_store_64(&v->key, k);
            return v;
        }
    }
    return NULL;
}

/* Seconds (rounded up) until `need` more milli-tokens have been refilled at rate/s. */
static uint32_t secs_for(uint64_t rate, uint64_t need)
{
    uint64_t ms = (need + rate - 1) / rate;
    uint64_t s = (ms + 999) / 1000;
    return s > UINT32_MAX ? UINT32_MAX : (uint32_t)s;
}

/* The bucket word after one request (consume) or peek at now31, the answer into r. */
static uint64_t step(uint64_t s, uint64_t now31, uint64_t rate, uint64_t full, bool consume,
                     struct rl_result *r)
{
    uint64_t d = s & D_MASK, tm = s >> D_BITS;
    if (d == FRESH) {
        d = 0;
        tm = now31;
    } else {
        uint64_t el = age_ms(tm, now31);
        if (el)
            tm = now31;
        if (d > full)
            d = full; /* the burst shrank (rl_set_policy) */
        /* el < 2^31 and rate <= 2^20: el * rate cannot overflow */
        d = el * rate >= d ? 0 : d - el * rate;
    }
    r->allowed = d + TOKEN <= full;
    if (r->allowed && consume)
        d += TOKEN;
    r->remaining = (uint32_t)((full - d) / TOKEN);
    r->reset_s = secs_for(rate, d);
    r->retry_s = r->allowed ? 0 : secs_for(rate, d + TOKEN - full);
    if (!r->allowed && r->retry_s == 0)
        r->retry_s = 1;
    return tm << D_BITS | d;
}

static int look(struct rl_table *t, int family, const uint8_t addr[16], uint64_t now_ms,
                struct rl_result *r, bool consume)
{
    uint64_t p = ck_pr_load_64(&t->policy);
    uint64_t rate = (uint32_t)p, full = (p >> 32) * TOKEN;
    uint64_t now31 = now_ms & T_MASK;
    r->burst = (uint32_t)(p >> 32);
    r->window_s = (uint32_t)(((p >> 32) + rate - 1) / rate);
    struct rl_slot *x = slot_of(t, key_of(t, family, addr), now31);
    if (!x) { /* the window is being fought over: answer as a new client, never refuse */
        step(FRESH, now31, rate, full, consume, r);
        return r->allowed ? 1 : 0;
    }
    uint64_t s = ck_pr_load_64(&x->state);
    for (;;) {
        uint64_t n = step(s, now31, rate, full, consume, r);
        if (n == s || ck_pr_cas_64_value(&x->state, s, n, &s))
            break; /* else s is what another worker wrote: decide again from it */
    }
    return r->allowed ? 1 : 0;
}

int rl_take(struct rl_table *t, int family, const uint8_t addr[16], uint64_t now_ms,
            struct rl_result *r)
{
    return look(t, family, addr, now_ms, r, true);
}

int rl_peek(struct rl_table *t, int family, const uint8_t addr[16], uint64_t now_ms,
            struct rl_result *r)
{
    return look(t, family, addr, now_ms, r, false);
}

static char *put(char *p, const char *s)
{
    size_t n = strlen(s);
    memcpy(p, s, n);
    return p + n;
}

size_t rl_headers(const struct rl_table *t, const struct rl_result *r, char *out, size_t cap)
{
    (void)t; /* r carries the policy it was decided under (a reload may have come since) */
    if (cap < RL_HDR_MAX)
        return 0;
    char *p = out;
    p = put(p, "RateLimit-Policy: \"default\";q=");
    p += fmt_u64(p, r->burst);
    p = put(p, ";w=");
    p += fmt_u64(p, r->window_s);
    p = put(p, "\r\nRateLimit: \"default\";r=");
    p += fmt_u64(p, r->remaining);
    p = put(p, ";t=");
    p += fmt_u64(p, r->reset_s);
    p = put(p, "\r\n");
    if (!r->allowed) {
        p = put(p, "Retry-After: ");
        p += fmt_u64(p, r->retry_s);
        p = put(p, "\r\n");
    }
    return (size_t)(p - out);
}
