/*
 * tnkeys — the per-node cache of tenant-scoped API keys (SPEC §2.3, "Tenant keys"): which key
 * ids exist, the SHA-256 verifier of each one's secret, its tenant, scopes, expiry and whether
 * it was revoked. Checking a key costs no database round trip and takes no lock.
 *
 * A key as shown once at its creation: "rck_" + the key id as 32 lowercase hex digits + "." +
 * the secret (32 bytes of getrandom, base64url without padding: 43 characters), 80 bytes in
 * all. Only SHA-256(the 43 secret characters) is kept; a presented secret is hashed and the two
 * digests compared in constant time.
 *
 * Owns: one struct tnk_store (created by src/keyapi, shared by every worker). Modelled on
 * src/tenants: records live in chunks of 1,024 that never move once published; lookups by id
 * probe an open-addressed index of write-once slots (release store after the record is
 * complete); creation and deletion take the store's mutex. A deletion flags the record (release
 * store); its memory is never reused, so a reader's plain pointer stays valid.
 *
 * Bounds: capacity records (chunks of 1,024 × 96 bytes = 96 KiB, reserved lazily), deleted ones
 * included; the index, allocated at tnk_new, is 4 bytes × the power of two >= 2 × capacity
 * (65,536 keys: 512 KiB).
 *
 * Threads: tnk_new/tnk_free main; tnk_insert/tnk_delete* under the internal mutex from any
 * thread; everything else any thread, lock-free.
 */
#ifndef RC_TNKEYS_H
#define RC_TNKEYS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sha256.h"

#define TNK_CAPACITY 65536u
#define TNK_SECRET_TEXT_LEN 43 /* base64url of 32 bytes, no padding */
#define TNK_TEXT_LEN (4 + 32 + 1 + TNK_SECRET_TEXT_LEN) /* "rck_" hex "." secret: 80 */
#define TNK_PER_TENANT 100 /* live keys of one tenant (so a listing is one bounded page) */
/* Largest tnk_json output: ids 2 × 38, 6 scopes of at most 17, two timestamps, keys: < 400. */
#define TNK_JSON_MAX 512

/* Scopes (bits of struct tnk_key scopes). */
enum {
    TNK_COUNTER_READ = 1u << 0,
    TNK_COUNTER_CREATE = 1u << 1,
    TNK_COUNTER_SET = 1u << 2,
    TNK_COUNTER_DELETE = 1u << 3,
    TNK_COUNTER_HISTORY = 1u << 4,
    TNK_KEYS_MANAGE = 1u << 5,
};
#define TNK_SCOPES_ALL 0x3fu
#define TNK_SCOPES_DEFAULT (TNK_SCOPES_ALL & ~(unsigned)TNK_KEYS_MANAGE)

/* The outcome of a check, in the order they are decided; the failures are the reason label of
   ringcount_tenant_key_failures_total. */
enum tnk_result {
    TNK_OK = 0,
    TNK_UNKNOWN,      /* malformed, or no such key id on this node */
    TNK_BAD_SECRET,
    TNK_EXPIRED,
    TNK_REVOKED,
    TNK_WRONG_TENANT, /* a valid key of another tenant (or a route of no tenant) */
    TNK_SCOPE,        /* a valid key of this tenant without the route's scope */
    TNK__COUNT
};

struct tnk_key {
    uint8_t id[16];
    uint8_t tenant[16];
    uint8_t verifier[SHA256_LEN];
    uint32_t scopes;
    uint32_t deleted;   /* 0 live, 1 revoked (tnk_deleted: an acquire load) */
    int64_t expires_ms; /* unix ms; 0 = never */
    int64_t created_ms; /* unix ms */
};

struct tnk_store;

/* A store of capacity (>= 1) keys. NULL on ENOMEM/EINVAL. */
struct tnk_store *tnk_new(uint32_t capacity, uint64_t seed);
/* Free it (no other thread may use it any more). NULL is a no-op. */
void tnk_free(struct tnk_store *st);

/* The bit of scope name (n bytes), or 0 when it is not one. */
unsigned tnk_scope_bit(const char *name, size_t n);
/* The name of scope bit b (one bit), or NULL. */
const char *tnk_scope_name(unsigned b);
/* The reason label of a failure ("unknown", "bad_secret", ...; "ok" for TNK_OK). */
const char *tnk_result_name(enum tnk_result r);

/* A new key: a random id (UUID v4 bits), a secret, its text into text (TNK_TEXT_LEN + 1 bytes,
   NUL-terminated) and its verifier. Nothing is stored. 0 or -errno of getrandom. */
int tnk_mint(uint8_t id[16], char text[TNK_TEXT_LEN + 1], uint8_t verifier[SHA256_LEN]);
/* Store a key (a new one, one loaded from the database, or one the change feed brought; deleted:
   stored revoked). 0 and *out (may be NULL); -EEXIST id present (*out: that record); -ENOSPC;
   -ENOMEM; -EINVAL (scopes outside TNK_SCOPES_ALL). */
int tnk_insert(struct tnk_store *st, const uint8_t id[16], const uint8_t tenant[16],
               const uint8_t verifier[SHA256_LEN], uint32_t scopes, int64_t expires_ms,
               int64_t created_ms, bool deleted, const struct tnk_key **out);
/* The key with this id (revoked ones included), or NULL. Lock-free. */
const struct tnk_key *tnk_find(const struct tnk_store *st, const uint8_t id[16]);
/* Revoke k: 0, or -ENOENT (already revoked). */
int tnk_delete(struct tnk_store *st, const struct tnk_key *k);
/* Revoke every live key of tenant: the count revoked. */
unsigned tnk_delete_tenant(struct tnk_store *st, const uint8_t tenant[16]);
/* Has k been revoked? Lock-free (acquire load). */
bool tnk_deleted(const struct tnk_key *k);

/* Does the text look like a tenant key ("rck_" prefix)? (The admin key is anything else.) */
bool tnk_is_key(const char *text, size_t n);
/* Check a presented key for tenant (NULL: a route of no tenant, which no key may use) and scope
   (one bit, or 0 for none needed) at wall time now_ms. TNK_OK and *out (may be NULL), or the
   first failure in enum order. Lock-free; never logs anything of the key. */
enum tnk_result tnk_check(const struct tnk_store *st, const char *text, size_t n,
                          const uint8_t *tenant, unsigned scope, int64_t now_ms,
                          const struct tnk_key **out);

/* Up to cap live (not revoked) keys of tenant in creation order into out: the count. Walks
   every record (an admin path: at most capacity). */
unsigned tnk_list(const struct tnk_store *st, const uint8_t tenant[16], const struct tnk_key **out,
                  unsigned cap);
/* Records stored, revoked ones included. */
uint32_t tnk_count(const struct tnk_store *st);

/* RFC 3339 date-time ("2026-12-02T17:00:00Z", fraction and ±HH:MM offset allowed) as unix ms:
   0 and *ms, or -EINVAL. */
int tnk_parse_time(const char *s, size_t n, int64_t *ms);
/* {"key_id","tenant_id"?,"scopes":[...],"expires_at":...|null,"created_at"} (NUL-terminated,
   < TNK_JSON_MAX; with_tenant adds "tenant_id"); text non-NULL adds "key" (the one answer that
   shows it). Length. */
size_t tnk_json(const struct tnk_key *k, bool with_tenant, const char *text, char *out);

#endif
