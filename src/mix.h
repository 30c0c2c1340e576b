/*
 * mix — the splitmix64 finaliser: a full-avalanche 64-bit mix, so a random seed changes every
 * bucket/chain assignment (hash-flooding resistance for the rate-limit and tenant tables).
 * Pure, header-only; any thread.
 */
#ifndef RC_MIX_H
#define RC_MIX_H

#include <stdint.h>

/* Mixed x; a bijection on 64-bit values. */
static inline uint64_t mix64(uint64_t x)
{
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

#endif
