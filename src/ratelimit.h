/*
 * ratelimit — per-worker token buckets keyed by client IP (SPEC §2.3 "rate-limited per client
 * IP"), and the RateLimit-Policy / RateLimit / Retry-After fields of the answers (IETF
 * draft-ietf-httpapi-ratelimit-headers-10: `RateLimit-Policy: "default";q=100;w=5`,
 * `RateLimit: "default";r=42;t=3`).
 *
 * Owns: one fixed-size table per worker (no lock: only its worker touches it). Entries are
 * found through a seeded hash with chaining (O(1)) and kept on an intrusive LRU list; when the
 * table is full the least-recently-used client is evicted, so a new client is never refused
 * (its bucket starts full). Bound: `capacity` entries of 48 bytes plus 4 bytes per hash head;
 * the default RL_DEFAULT_CAPACITY (65,536) is 3.25 MiB per worker. Evicting a client that was
 * throttled forgets its debt: an attacker needs > 65,536 distinct addresses on one worker to
 * exploit that, and then each of them still gets at most one burst.
 *
 * Arithmetic is integer only: tokens are micro-tokens (1e-6), refilled from the caller's
 * millisecond clock (no syscall here). Per-worker tables mean a client whose connections are
 * spread by SO_REUSEPORT over N workers can get up to N times the rate; one connection always
 * stays on one worker.
 *
 * Threads: rl_new/rl_free anywhere; rl_take on the owning worker only; rl_headers is pure.
 */
#ifndef RC_RATELIMIT_H
#define RC_RATELIMIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define RL_DEFAULT_CAPACITY 65536u
/* Longest output of rl_headers (policy + state + Retry-After with 10-digit numbers): 128. */
#define RL_HDR_MAX 160

struct rl_table;

struct rl_result {
    bool allowed;
    uint32_t remaining;   /* whole tokens left after this request */
    uint32_t reset_s;     /* seconds until the bucket is full again (RateLimit t=) */
    uint32_t retry_s;     /* denied: seconds until one token is back (Retry-After, >= 1) */
};

/* A table of `capacity` entries (rounded up to a power of two, 16..2^24) for rate tokens/s and
   burst tokens (both >= 1); seed keys the hash (from getrandom, so clients cannot aim at one
   chain). NULL on ENOMEM or bad arguments. */
struct rl_table *rl_new(uint32_t capacity, uint32_t rate, uint32_t burst, uint64_t seed);
/* Free t (NULL is a no-op). */
void rl_free(struct rl_table *t);
/* A new policy (SIGHUP): rate and burst >= 1 (else nothing changes). Clients keep their
   entries and what they used of the old burst: a client that spent 3 of 3 has 4997 left of a
   new burst of 5000, one that spent 10 of 5000 has none of a new burst of 3. Walks the table
   once (65,536 entries: ~0.1 ms), so once per reload, never per request. Owner only. */
void rl_set_policy(struct rl_table *t, uint32_t rate, uint32_t burst);
/* Take one token for the client (family AF_INET: addr[0..4), AF_INET6: addr[0..16); any other
   family is one shared bucket) at now_ms; fills r. Returns 1 allowed, 0 denied. */
int rl_take(struct rl_table *t, int family, const uint8_t addr[16], uint64_t now_ms,
            struct rl_result *r);
/* rl_take without taking the token (a CORS preflight: its answer carries the fields, but a
   browser's automatic preflight must not spend the budget of the request it precedes). The
   client is still inserted / refreshed in the LRU. Returns 1 if a request would be allowed. */
int rl_peek(struct rl_table *t, int family, const uint8_t addr[16], uint64_t now_ms,
            struct rl_result *r);
/* Write the header lines for r (each ending CRLF): RateLimit-Policy, RateLimit and, when denied,
   Retry-After. Returns the length, or 0 if cap < RL_HDR_MAX. */
size_t rl_headers(const struct rl_table *t, const struct rl_result *r, char *out, size_t cap);

#endif
