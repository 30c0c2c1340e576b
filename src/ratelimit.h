/*
 * ratelimit — token buckets keyed by client IP, one table per node shared by every worker
 * (SPEC §2.3 "rate-limited per client IP"), and the RateLimit-Policy / RateLimit / Retry-After
 * fields of the answers (IETF draft-ietf-httpapi-ratelimit-headers-10:
 * `RateLimit-Policy: "default";q=100;w=5`, `RateLimit: "default";r=42;t=3`).
 *
 * Owns: one fixed-size open-addressing table of 16-byte slots (a 64-bit key, a 64-bit bucket
 * word) and the policy word. A client has one bucket whatever worker its connections land on
 * (SO_REUSEPORT), so it gets one burst per node; a client spread over N nodes gets N.
 *
 * No lock: a slot's key is claimed with one CAS (0 -> key) and never goes back to 0; its bucket
 * (deficit in milli-tokens, 33 bits, and last refill ms modulo 2^31, 31 bits) is updated by a
 * CAS loop; the policy (rate, burst) is one word. The key is a seeded 64-bit hash of (family,
 * address): exact for IPv4 (injective there), for IPv6 two clients share a bucket with
 * probability ~n^2/2^65 (1e-10 at 65,536 clients) and the seed (getrandom) keeps anyone from
 * aiming at that. A key lives within RL_PROBE slots of its hash; when that window is full the
 * entry touched longest ago is evicted (approximate LRU, as fine as the caller's clock: src/app.c
 * passes CLOCK_MONOTONIC_COARSE, 4 ms ticks at HZ=250; ties go by slot order), so a new
 * client is never refused (its bucket starts full). Evicting a throttled client forgets its
 * debt: an attacker needs enough addresses to fill the table (tens of thousands: windows fill
 * before every slot is used) for that, and each of them still gets at most one burst. Two rare
 * races are tolerated, each worth at most one token per racing worker, once: the first request
 * of a new client arriving on two workers at the same instant into a full window (two entries;
 * later requests find the first), and a request of a client racing the eviction of its own
 * entry.
 *
 * Bound: capacity x 16 bytes, per node: RL_DEFAULT_CAPACITY (65,536) is 1 MiB whatever the
 * number of workers (the per-worker tables were 3.25 MiB each). A window is 32 slots, 512
 * bytes: evictions may start before every slot is used.
 *
 * Arithmetic is integer only: a token is 1000 milli-tokens and a rate of R/s refills exactly R
 * milli-tokens per ms of the caller's millisecond clock (no syscall here). A clock that goes
 * back (workers read their own) refills nothing. The refill time is kept modulo 2^31 ms: a
 * policy whose window (burst/rate) exceeds 24.8 days can give a client idle that long less
 * than it earned.
 *
 * Threads: rl_new/rl_free from one thread with no other call running; rl_take, rl_peek and
 * rl_set_policy from any thread at once; rl_headers is pure.
 */
#ifndef RC_RATELIMIT_H
#define RC_RATELIMIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define RL_DEFAULT_CAPACITY 65536u
/* Slots a key may be found in from its hash: 32 x 16 bytes = 8 cache lines, read in full only
   for a client the table does not know. */
#define RL_PROBE 32u
/* Longest output of rl_headers (policy + state + Retry-After with 10-digit numbers): 128. */
#define RL_HDR_MAX 160

struct rl_table;

struct rl_result {
    bool allowed;
    uint32_t remaining;   /* whole tokens left after this request */
    uint32_t reset_s;     /* seconds until the bucket is full again (RateLimit t=) */
    uint32_t retry_s;     /* denied: seconds until one token is back (Retry-After, >= 1) */
    uint32_t burst;       /* the policy it was decided under (RateLimit-Policy q=) ... */
    uint32_t window_s;    /* ... and w=: seconds for an empty bucket to refill */
};

/* Policy bounds: a deficit of 8e9 milli-tokens fits its 33 bits (--rate-limit allows at most
   1,000,000/5,000,000). */
#define RL_RATE_MAX (1u << 20)
#define RL_BURST_MAX 8000000u

/* A table of `capacity` entries (rounded up to a power of two, 16..2^24) for rate tokens/s
   (1..RL_RATE_MAX) and burst tokens (1..RL_BURST_MAX); seed keys the hash (from getrandom, so
   clients cannot aim at one window). NULL on ENOMEM or bad arguments. */
struct rl_table *rl_new(uint32_t capacity, uint32_t rate, uint32_t burst, uint64_t seed);
/* Free t (NULL is a no-op). */
void rl_free(struct rl_table *t);
/* A new policy (SIGHUP), bounded as for rl_new (else nothing changes). Clients
   keep their entries and what they used of the old burst: a client that spent 3 of 3 has 4997
   left of a new burst of 5000, one that spent 10 of 5000 has none of a new burst of 3. The
   same policy again is a no-op (every worker calls it once per reload); a new one walks the
   table once (65,536 slots: ~0.2 ms), so once per reload, never per request. Any thread. */
void rl_set_policy(struct rl_table *t, uint32_t rate, uint32_t burst);
/* Take one token for the client (family AF_INET: addr[0..4), AF_INET6: addr[0..16); any other
   family is one shared bucket) at now_ms; fills r. Returns 1 allowed, 0 denied. */
int rl_take(struct rl_table *t, int family, const uint8_t addr[16], uint64_t now_ms,
            struct rl_result *r);
/* rl_take without taking the token (a CORS preflight: its answer carries the fields, but a
   browser's automatic preflight must not spend the budget of the request it precedes). The
   client is still inserted / refreshed. Returns 1 if a request would be allowed. */
int rl_peek(struct rl_table *t, int family, const uint8_t addr[16], uint64_t now_ms,
            struct rl_result *r);
/* Write the header lines for r (each ending CRLF): RateLimit-Policy (r's policy), RateLimit
   and, when denied, Retry-After. Returns the length, or 0 if cap < RL_HDR_MAX. */
size_t rl_headers(const struct rl_table *t, const struct rl_result *r, char *out, size_t cap);

#endif
