/*
 * sha256 — SHA-256 (FIPS 180-4 §6.2), for the verifiers of tenant keys (src/tnkeys: only the
 * hash of a key's secret is stored). Pure functions, no globals, no allocation; any thread.
 * Not a hot path: one hash per request that carries a tenant key (about 1 µs for 43 bytes).
 */
#ifndef RC_SHA256_H
#define RC_SHA256_H

#include <stddef.h>
#include <stdint.h>

#define SHA256_LEN 32

struct sha256 {
    uint32_t h[8];
    uint64_t nbytes;   /* message bytes so far (the length field is bits: nbytes * 8) */
    uint8_t buf[64];   /* the partial block */
    size_t nbuf;
};

/* Start a hash. */
void sha256_init(struct sha256 *c);
/* Add n bytes. */
void sha256_update(struct sha256 *c, const void *data, size_t n);
/* Pad, write the 32-byte digest to out; c must be re-initialised before reuse. */
void sha256_final(struct sha256 *c, uint8_t out[SHA256_LEN]);
/* One-shot: the digest of n bytes of data. */
void sha256(const void *data, size_t n, uint8_t out[SHA256_LEN]);

#endif
