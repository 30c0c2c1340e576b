/* ratelimit — see ratelimit.h. */
#include "ratelimit.h"
#include "mix.h"

#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "fmt.h"

#define NIL UINT32_MAX
#define MICRO 1000000ull

/* 48 bytes: the LRU prev/next and the hash chain link are indexes, not pointers. */
struct rl_entry {
    uint8_t key[16];
    uint64_t tokens;  /* micro-tokens */
    uint64_t last_ms; /* last refill */
    uint32_t hnext;   /* hash chain */
    uint32_t prev, next; /* LRU list: head = most recent */
    uint8_t family;
};

struct rl_table {
    uint32_t cap, mask, used;
    uint32_t lru_head, lru_tail;
    uint64_t seed;
    uint64_t rate_mt_ms; /* refill in micro-tokens per millisecond: rate * 1000 */
    uint64_t full_mt;    /* burst in micro-tokens */
    uint32_t rate, burst;
    uint32_t window_s;   /* w= of the policy: seconds for an empty bucket to refill */
    uint32_t *heads;
    struct rl_entry *e;
};


static uint32_t hash_key(const struct rl_table *t, uint8_t fam, const uint8_t k[16])
{
    uint64_t a, b;
    memcpy(&a, k, 8);
    memcpy(&b, k + 8, 8);
    return (uint32_t)mix64(mix64(a ^ t->seed ^ fam) ^ b) & t->mask;
}

struct rl_table *rl_new(uint32_t capacity, uint32_t rate, uint32_t burst, uint64_t seed)
{
    if (rate == 0 || burst == 0 || capacity > (1u << 24))
        return NULL;
    uint32_t cap = 16;
    while (cap < capacity)
        cap <<= 1;
    struct rl_table *t = calloc(1, sizeof(*t));
    if (!t)
        return NULL;
    t->heads = malloc((size_t)cap * sizeof(*t->heads));
    t->e = calloc(cap, sizeof(*t->e));
    if (!t->heads || !t->e)
        goto fail;
    memset(t->heads, 0xff, (size_t)cap * sizeof(*t->heads));
    t->cap = cap;
    t->mask = cap - 1;
    t->lru_head = t->lru_tail = NIL;
    t->seed = mix64(seed + 0x9e3779b97f4a7c15ull);
    rl_set_policy(t, rate, burst);
    return t;
fail:
    rl_free(t);
    return NULL;
}

void rl_set_policy(struct rl_table *t, uint32_t rate, uint32_t burst)
{
    if (rate == 0 || burst == 0)
        return;
    uint64_t full = (uint64_t)burst * MICRO;
    for (uint32_t i = 0; i < t->used; i++) {
        struct rl_entry *x = &t->e[i];
        uint64_t spent = x->tokens < t->full_mt ? t->full_mt - x->tokens : 0;
        x->tokens = full > spent ? full - spent : 0;
    }
    t->rate = rate;
    t->burst = burst;
    t->rate_mt_ms = (uint64_t)rate * 1000u;
    t->full_mt = (uint64_t)burst * MICRO;
    t->window_s = (uint32_t)(((uint64_t)burst + rate - 1) / rate);
}

void rl_free(struct rl_table *t)
{
    if (!t)
        return;
    free(t->heads);
    free(t->e);
    free(t);
}

static void lru_unlink(struct rl_table *t, uint32_t i)
{
    struct rl_entry *x = &t->e[i];
    if (x->prev != NIL)
        t->e[x->prev].next = x->next;
    else
        t->lru_head = x->next;
    if (x->next != NIL)
        t->e[x->next].prev = x->prev;
    else
        t->lru_tail = x->prev;
}

static void lru_push_front(struct rl_table *t, uint32_t i)
{
    struct rl_entry *x = &t->e[i];
    x->prev = NIL;
    x->next = t->lru_head;
    if (t->lru_head != NIL)
        t->e[t->lru_head].prev = i;
    t->lru_head = i;
    if (t->lru_tail == NIL)
        t->lru_tail = i;
}

/* Remove entry i from its hash chain (chains average < 1 entry: heads == capacity). */
static void chain_remove(struct rl_table *t, uint32_t i)
{
    uint32_t *p = &t->heads[hash_key(t, t->e[i].family, t->e[i].key)];
    while (*p != i)
        p = &t->e[*p].hnext;
    *p = t->e[i].hnext;
}

/* Seconds (rounded up) until `need` more micro-tokens have been refilled. */
static uint32_t secs_for(const struct rl_table *t, uint64_t need)
{
    uint64_t ms = (need + t->rate_mt_ms - 1) / t->rate_mt_ms;
    uint64_t s = (ms + 999) / 1000;
    return s > UINT32_MAX ? UINT32_MAX : (uint32_t)s;
}

static int look(struct rl_table *t, int family, const uint8_t addr[16], uint64_t now_ms,
                struct rl_result *r, bool consume)
{
    uint8_t key[16] = {0};
    uint8_t fam = 0;
    if (family == AF_INET) {
        memcpy(key, addr, 4);
        fam = 4;
    } else if (family == AF_INET6) {
        memcpy(key, addr, 16);
        fam = 6;
    }
    uint32_t h = hash_key(t, fam, key);
    uint32_t i = t->heads[h];
    while (i != NIL && (t->e[i].family != fam || memcmp(t->e[i].key, key, 16) != 0))
        i = t->e[i].hnext;
    struct rl_entry *x;
    if (i != NIL) {
        x = &t->e[i];
        lru_unlink(t, i);
        if (x->tokens > t->full_mt)
            x->tokens = t->full_mt; /* the burst shrank (rl_set_policy) */
        uint64_t el = now_ms > x->last_ms ? now_ms - x->last_ms : 0;
        /* el * rate_mt_ms cannot overflow: it is only computed when it stays below full_mt */
        uint64_t need = t->full_mt - x->tokens;
        if (el >= (need + t->rate_mt_ms - 1) / t->rate_mt_ms)
            x->tokens = t->full_mt;
        else
            x->tokens += el * t->rate_mt_ms;
        x->last_ms = now_ms;
    } else {
        if (t->used < t->cap) {
            i = t->used++;
        } else { /* full: the least recently used client makes room */
            i = t->lru_tail;
            lru_unlink(t, i);
            chain_remove(t, i);
        }
        x = &t->e[i];
        memcpy(x->key, key, 16);
        x->family = fam;
        x->tokens = t->full_mt; /* a new client starts with a full burst */
        x->last_ms = now_ms;
        x->hnext = t->heads[h];
        t->heads[h] = i;
    }
    lru_push_front(t, i);
    r->allowed = x->tokens >= MICRO;
    if (r->allowed && consume)
        x->tokens -= MICRO;
    r->remaining = (uint32_t)(x->tokens / MICRO);
    r->reset_s = secs_for(t, t->full_mt - x->tokens);
    r->retry_s = r->allowed ? 0 : secs_for(t, MICRO - x->tokens);
    if (!r->allowed && r->retry_s == 0)
        r->retry_s = 1;
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
    if (cap < RL_HDR_MAX)
        return 0;
    char *p = out;
    p = put(p, "RateLimit-Policy: \"default\";q=");
    p += fmt_u64(p, t->burst);
    p = put(p, ";w=");
    p += fmt_u64(p, t->window_s);
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
