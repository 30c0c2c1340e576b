/*
 * tenants — the in-memory store of the multi-tenant counters (SPEC §2.3): tenants, their
 * counters, and the Idempotency-Key records of increments.
 *
 * Owns: one struct tn_store (created by main, shared by every worker). Records live in chunks
 * that never move once published, so readers hold plain pointers without a lock:
 *  - lookups by id (tenant, counter) probe open-addressed index tables whose slots are written
 *    once (release store after the record is complete);
 *  - a counter's value is base + Σ per-worker deltas. The public increment adds to the calling
 *    worker's own slot (one plain ck_pr store, single writer per slot, no lock); GET sums the
 *    slots. Creation and `set` are admin paths and take the store's mutex (rare, microseconds).
 *  - Idempotency records are sharded over TN_IDEM_STRIPES stripes, each with its own spinlock,
 *    FIFO ring and hash chains: only an increment carrying an Idempotency-Key takes one stripe
 *    lock (for a probe and an insert); plain increments take none.
 *
 * Bounds (all fixed at tn_new; memory is reserved lazily in chunks except where stated):
 *  - tenants: max_tenants (chunks of 1,024 records of 312 bytes);
 *  - counters: max_counters (chunks of 4,096 records of 328 bytes = 1.28 MiB, plus 32 KiB of
 *    delta slots per worker per chunk); index tables, allocated at tn_new: id and label, each
 *    4 bytes × the power of two >= 2 × max (65,536 tenants: 2 × 512 KiB; 1,000,000 counters:
 *    2 × 8 MiB);
 *  - idempotency: idem_capacity records of 104 bytes + a 4-byte chain head, allocated at
 *    tn_new (131,072 records = 13.5 MiB). Records expire after 24 h; when a stripe's ring is
 *    full its oldest record is overwritten (a replay of that key then counts again).
 *
 * Deletion (tn_*_delete) marks a record deleted (a release store of its flag) and frees its
 * label (the label slot becomes a tombstone a later insertion may reuse): finds, find-by-label
 * and listings skip it from then on. Without --db its memory is never reclaimed and it still
 * counts against max_tenants / max_counters: readers hold plain pointers without a lock.
 *
 * Eviction (--db, where the store is a cache of PostgreSQL; the persister drives it): a clean
 * counter record, least recently used first (tn_counter_touch, sampled), is taken out of the
 * indexes and its tenant's list (tombstones), and reused for another counter only once every
 * worker has started a new event-loop batch (src/qsbr) and nothing of it is unflushed: a worker
 * holds no record pointer past its batch, so no reader can see a record change under it.
 * A tenant leaves the same way once none of its counters is cached (an unused tenant's clean
 * counters are evicted first: a request for a counter also finds, and touches, its tenant).
 * Tombstones pile up in the index tables; past an eighth of a table they are rebuilt fresh and
 * swapped in (the old ones freed after a grace period too).
 * An increment that found the counter just before the delete may still land on the deleted
 * record: it is lost, and that is accepted (the counter is gone either way).
 *
 * Known race (documented, not prevented): two workers incrementing the same counter within the
 * last max_delta of INT64_MAX may together pass it (each checks its own view); far from that
 * bound the value is exact. A `set` concurrent with increments linearises each increment either
 * before the set (overwritten) or after it (kept).
 *
 * Persistence (src/persist) reads records by index (tn_*_at: creation order, never moved), values
 * with tn_counter_value_stable (a seqlock around `set`), and new idempotency records through a
 * per-stripe sequence cursor (tn_idem_collect); the load at start-up uses tn_*_restore.
 *
 * Threads: tn_new/tn_free main; tn_*_create, tn_counter_set under the internal mutex from any
 * thread; tn_counter_inc/tn_idem_inc from worker w only for slot w; everything else any thread.
 */
#ifndef RC_TENANTS_H
#define RC_TENANTS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "uuid.h"

#define TN_LABEL_MAX 255
#define TN_IDEM_KEY_MAX 64
#define TN_IDEM_TTL_MS (24ull * 3600 * 1000)
#define TN_IDEM_STRIPES 64
#define TN_MAX_DELTA_DEFAULT 50
#define TN_LIST_MAX 100
/* Records sampled per eviction: Redis samples 5 for its approximated LRU; 16 keeps a counter
   used in the last second from going while most of the cache is older (16 loads each). */
/* The clock of `used`: CLOCK_MONOTONIC_COARSE ms / 16 (the coarse clock ticks every 4 ms). In
   whole seconds, a small cache churned by a burst held only records of the current second and
   evicted one just restored, before the request that restored it ran again (seen: a 64-tenant
   cache, 200 tenants). A hot record is stored at most 62 times a second per worker; ages are
   taken modulo 2^32 (wrap-safe for records touched within 2 years). */
#define TN_USED_MS 16
#define TN_EVICT_SAMPLES 16
/* Counters of one unused tenant looked at (evicted if clean) per tn_tenant_evict round: 4,096,
   the most a cache keeps free (src/persist_tn), so one round holds the store's mutex for a
   bounded walk whatever the tenant holds. */
#define TN_EVICT_BATCH 4096
/* Largest tn_tenant_json / tn_counter_json output (label 255 + ids + numbers + keys): 512. */
#define TN_JSON_MAX 640

struct tn_store;

struct tn_tenant {
    uint8_t id[16];
    uint32_t idx;
    uint32_t first, last;  /* counters of this tenant in creation order (index+1; 0 = none) */
    uint32_t ncounters;    /* created, deleted ones included */
    uint32_t deleted;      /* 0 live, 1 deleted (tn_tenant_deleted: an acquire load) */
    uint32_t used;         /* when a request last found it (tn_tenant_touch), TN_USED_MS units */
    int64_t created_ms;    /* unix ms */
    uint8_t state;         /* TN_REC_*: under mu */
    uint8_t label_len;
    char label[TN_LABEL_MAX];
};

struct tn_counter {
    uint8_t id[16];
    uint32_t idx;
    uint32_t tenant;       /* tenant idx */
    uint32_t tnext;        /* next counter of the tenant (index+1; 0 = end), published last */
    uint32_t deleted;      /* 0 live, 1 deleted (tn_counter_deleted: an acquire load) */
    int64_t max_delta;
    int64_t created_ms;
    uint64_t base;         /* value = base + Σ deltas, modulo 2^64, read as int64 */
    uint32_t tprev;        /* previous counter of the tenant (index+1; 0 = first); under mu */
    uint32_t used;         /* when a request last found it (tn_counter_touch), TN_USED_MS units */
    uint8_t state;         /* TN_REC_*: under mu */
    uint8_t label_len;     /* 0 = no label (JSON null) */
    char label[TN_LABEL_MAX];
};
/* A record's life with eviction (--db): indexed → evicted (out of the indexes; a counter is
   still flushed; waiting out a grace period: src/qsbr) → free (reused by the next restore). */
enum { TN_REC_INDEXED = 0, TN_REC_EVICTED = 1, TN_REC_FREE = 2 };

/* A store for nworkers delta slots. 0-capacity arguments are refused. NULL on ENOMEM/EINVAL. */
struct tn_store *tn_new(unsigned nworkers, uint32_t max_tenants, uint32_t max_counters,
                        uint32_t idem_capacity, uint64_t seed);
/* Free it (no other thread may use it any more). NULL is a no-op. */
void tn_free(struct tn_store *st);

/* Labels: 1..255 bytes of [A-Za-z0-9 _.-]. */
bool tn_label_valid(const char *s, size_t n);
/* Idempotency keys: 1..64 printable ASCII bytes (0x20..0x7e; HTTP trims spaces at the ends). */
bool tn_idem_key_valid(const char *s, size_t n);

/* New tenant with label (validated here) at wall time now_ms, id from g (the caller's pool).
   0 and *out; -EINVAL bad label; -EEXIST label taken; -ENOSPC max_tenants reached; -ENOMEM;
   -errno of getrandom. */
int tn_tenant_create(struct tn_store *st, struct uuid_gen *g, const char *label, size_t n,
                     int64_t now_ms, const struct tn_tenant **out);
/* The tenant with this id, or NULL. Lock-free. */
const struct tn_tenant *tn_tenant_find(const struct tn_store *st, const uint8_t id[16]);
/* New counter of t: label may be NULL (no label; else validated, unique among t's live
   counters), max_delta >= 1. 0 and *out; -EINVAL (label or max_delta); -EEXIST label taken in
   t; -ENOENT t deleted; -ENOSPC; -ENOMEM; -errno of getrandom. */
int tn_counter_create(struct tn_store *st, struct uuid_gen *g, const struct tn_tenant *t,
                      const char *label, size_t n, int64_t initial, int64_t max_delta,
                      int64_t now_ms, const struct tn_counter **out);
/* Counter cid of tenant t, or NULL (unknown, deleted, or it belongs to another tenant).
   Lock-free. */
const struct tn_counter *tn_counter_find(const struct tn_store *st, const struct tn_tenant *t,
                                         const uint8_t cid[16]);
/* The live counter of t labelled label (labels are unique per tenant), or NULL. Lock-free. */
const struct tn_counter *tn_counter_find_label(const struct tn_store *st,
                                               const struct tn_tenant *t, const char *label,
                                               size_t n);
/* As tn_tenant_find / tn_counter_find, deleted records included (a listing cursor may name a
   record deleted since the page was served). Lock-free. */
const struct tn_tenant *tn_tenant_find_any(const struct tn_store *st, const uint8_t id[16]);
const struct tn_counter *tn_counter_find_any(const struct tn_store *st, const struct tn_tenant *t,
                                             const uint8_t cid[16]);
/* Delete c (under the mutex): 0, or -ENOENT (already deleted). Its label is free again. */
int tn_counter_delete(struct tn_store *st, const struct tn_counter *c);
/* Delete t and every counter of it (under the mutex): 0, or -ENOENT (already deleted). */
int tn_tenant_delete(struct tn_store *st, const struct tn_tenant *t);
/* Has the record been deleted? Lock-free (acquire load). */
bool tn_tenant_deleted(const struct tn_tenant *t);
bool tn_counter_deleted(const struct tn_counter *c);
/* Live value: base + Σ deltas. Lock-free. */
int64_t tn_counter_value(const struct tn_store *st, const struct tn_counter *c);
/* Worker w adds delta (>= 1) to c: 0 and *value (the value right after), or -EOVERFLOW (it
   would pass INT64_MAX; nothing added). No lock. */
int tn_counter_inc(struct tn_store *st, unsigned w, const struct tn_counter *c, int64_t delta,
                   int64_t *value);
/* Admin: set c's value to v (under the mutex). 0. */
int tn_counter_set(struct tn_store *st, const struct tn_counter *c, int64_t v);
/* Increment with an Idempotency-Key (checked by the caller with tn_idem_key_valid), scoped to the
   tenant of c, at wall time now_ms: 0 counted now (*value as tn_counter_inc); 1 a replay of the
   same request within 24 h (*value = the first result, nothing counted); -EEXIST the key was used
   for another request (another counter or delta); -EOVERFLOW. */
int tn_idem_inc(struct tn_store *st, unsigned w, const struct tn_counter *c, const char *key,
                size_t klen, int64_t delta, int64_t now_ms, int64_t *value);
/* Page of t's live counters in creation order after counter `after` (NULL: from the first;
   it may be deleted); at most limit (1..TN_LIST_MAX) go to out. Returns the count and *more (a
   next page exists), or -EINVAL when after is not a counter of t. Lock-free; deleted counters
   are skipped (walked over: a page costs the deleted ones on its way too). */
int tn_counter_list(const struct tn_store *st, const struct tn_tenant *t,
                    const struct tn_counter *after, unsigned limit, const struct tn_counter **out,
                    bool *more);
/* Page of live tenants in creation order after `after` (NULL: from the first; it may be
   deleted), at most limit (1..TN_LIST_MAX) into out: the count and *more. Lock-free. */
int tn_tenant_list(const struct tn_store *st, const struct tn_tenant *after, unsigned limit,
                   const struct tn_tenant **out, bool *more);
/* Records: counts of tenants, counters (deleted ones included), live idempotency records. */
void tn_sizes(const struct tn_store *st, uint32_t *tenants, uint32_t *counters, uint32_t *idem);
/* The bounds tn_new was given (--tenant-cache, --counter-cache). */
void tn_bounds(const struct tn_store *st, uint32_t *max_tenants, uint32_t *max_counters);

/* ---- persistence support (src/persist) ----
   Restores run on main at start-up, before any worker; the rest on the persister thread. */
/* A tenant loaded from the database with its id: 0 and *out; -EINVAL bad label; -EEXIST id or
   label already present; -ENOSPC; -ENOMEM. */
int tn_tenant_restore(struct tn_store *st, const uint8_t id[16], const char *label, size_t n,
                      int64_t created_ms, const struct tn_tenant **out);
/* A counter of t loaded with its id and value (label NULL: none): 0 and *out; -EINVAL; -EEXIST
   (id present); -ENOENT; -ENOSPC; -ENOMEM. A label already taken in t (rows from before labels
   were unique) is kept on the record but not indexed: find-by-label finds the first one. */
int tn_counter_restore(struct tn_store *st, const struct tn_tenant *t, const uint8_t id[16],
                       const char *label, size_t n, int64_t value, int64_t max_delta,
                       int64_t created_ms, const struct tn_counter **out);
/* An idempotency record of c (its first result value) created at created_ms: 0, -EINVAL (key). */
int tn_idem_restore(struct tn_store *st, const struct tn_counter *c, const char *key, size_t klen,
                    int64_t delta, int64_t value, int64_t created_ms);
/* Record idx (< the count of tn_sizes, read before). */
const struct tn_tenant *tn_tenant_at(const struct tn_store *st, uint32_t idx);
const struct tn_counter *tn_counter_at(const struct tn_store *st, uint32_t idx);
/* The counters moved since the last call (indexes, possibly repeated) into out: the count,
   and *full set when that is not the whole story (a worker's ring overflowed, out was too
   small, or a `set` happened): the caller then reads every counter. Persister only. */
size_t tn_dirty_take(struct tn_store *st, uint32_t *out, size_t cap, bool *full);
/* Add adj (modulo 2^64) to c's base: the value the database settled it to moved by adj while
   what this node counted stays on top. Persister only (inside the same seqlock as `set`). */
void tn_counter_adjust(struct tn_store *st, const struct tn_counter *c, int64_t adj);
/* Live value, never torn by a concurrent tn_counter_set (old base with new deltas). */
int64_t tn_counter_value_stable(const struct tn_store *st, const struct tn_counter *c);

/* ---- eviction (--db: the store is a cache of PostgreSQL; persister only unless stated) ---- */
/* Worker: a request found c at now_ms (CLOCK_MONOTONIC_COARSE; the least recently used go
   first). At most one store per TN_USED_MS per counter and worker. */
void tn_counter_touch(const struct tn_counter *c, uint64_t now_ms);
/* May c leave the cache now? The persister decides: its value is committed (nothing this node
   counted is unflushed), or it is deleted. */
typedef bool tn_evictable_fn(const struct tn_counter *c, void *arg);
/* Take up to n counters out of the indexes, least recently used first (per eviction
   TN_EVICT_SAMPLES random records, the evictable one used longest ago wins; deleted ones
   first). They are found no more, an increment from a request that found one before still lands
   and is flushed, and they become free once every worker has moved on (src/qsbr) and ok() holds.
   Returns the number taken out. */
unsigned tn_counter_evict(struct tn_store *st, unsigned n, tn_evictable_fn *ok, void *arg);
/* Worker: a request found t at now_ms (as tn_counter_touch). */
void tn_tenant_touch(const struct tn_tenant *t, uint64_t now_ms);
/* Take up to n tenants out of the indexes, least recently used first (sampled as counters are,
   deleted ones first), each once none of its counters is cached: a sampled tenant that still
   has some has up to TN_EVICT_BATCH of those for which ok() holds evicted instead, and goes in a
   later call. Returns the number of tenants taken out. */
unsigned tn_tenant_evict(struct tn_store *st, unsigned n, tn_evictable_fn *ok, void *arg);
/* Free the evicted counters past their grace period for which ok() holds, the evicted tenants
   past theirs, and index tables a rebuild retired: the number of records freed. */
unsigned tn_reclaim(struct tn_store *st, tn_evictable_fn *ok, void *arg);
struct tn_cache_sizes {
    uint32_t cached;   /* counters in the indexes (deleted ones included) */
    uint32_t room;     /* counters that can be restored now: never used + free */
    uint32_t evicting; /* taken out, waiting for their grace period */
    uint32_t tombs;    /* tombstones in the counter index tables (a rebuild clears them) */
    uint64_t evicted;  /* taken out since tn_new */
    /* the same for tenants */
    uint32_t t_cached, t_room, t_evicting, t_tombs;
    uint64_t t_evicted;
};
/* Any thread (a snapshot of counts kept under the mutex; exact for the persister). */
void tn_cache_sizes(struct tn_store *st, struct tn_cache_sizes *out);

/* An idempotency record as tn_idem_collect copies it out. */
struct tn_idem_out {
    uint32_t tenant, counter;  /* idx */
    int64_t delta, value, created_ms;
    uint8_t klen;
    char key[TN_IDEM_KEY_MAX];
};
/* The current end of every stripe's record sequence (records before it are not collected). */
void tn_idem_cursor(const struct tn_store *st, uint64_t cur[TN_IDEM_STRIPES]);
/* Copy up to cap records inserted after cur (advanced past what was copied) into out, taking
   each stripe's lock briefly. Records overwritten before being copied are added to *lost.
   Returns the count copied. */
size_t tn_idem_collect(struct tn_store *st, uint64_t cur[TN_IDEM_STRIPES],
                       struct tn_idem_out *out, size_t cap, uint64_t *lost);
/* Hold every stripe's lock (keyed increments wait, unkeyed ones do not) so that the records
   collected and the counter values read until tn_idem_thaw agree: a keyed increment is either
   in both or in neither. tn_idem_collect then takes no lock itself. Persister only. */
void tn_idem_freeze(struct tn_store *st);
void tn_idem_thaw(struct tn_store *st);

/* JSON objects (NUL-terminated, < TN_JSON_MAX bytes; out must hold TN_JSON_MAX). Length.
   Tenant: {"tenant_id","label","created_at"}; counter: {"counter_id","tenant_id","label",
   "value","max_delta","created_at"} with the live value. created_at: RFC 3339 UTC with ms. */
size_t tn_tenant_json(const struct tn_tenant *t, char *out);
/* A tenant or counter row outside the store (PostgreSQL returned it, the full cache could not
   take it): answered from these fields alone. */
struct tn_row {
    bool counter;          /* a counter row (else a tenant's: id, label, created_ms) */
    bool has_label;
    uint8_t label_len;
    uint8_t id[16], tid[16];
    int64_t value, max_delta, created_ms;
    char label[TN_LABEL_MAX];
};
/* The JSON object of r, like tn_counter_json / tn_tenant_json. Length. */
size_t tn_row_json(const struct tn_row *r, char *out);
/* {"counter_id","value"} of counter id with value v (the answer of inc and set; < TN_JSON_MAX). */
size_t tn_value_json(const uint8_t id[16], int64_t v, char *out);
size_t tn_counter_json(const struct tn_store *st, const struct tn_counter *c, char *out);
/* The one page shape of every listing (SPEC §2.3): {"<key>":[obj(items, 0..cnt-1)],
   "next_cursor":"<next>"|null} (next: the id of the last item when another page follows)
   into out, which holds TN_PAGE_CAP(cnt) bytes. Length. */
#define TN_PAGE_CAP(cnt) ((size_t)(cnt) * TN_JSON_MAX + 256)
size_t tn_page_json(char *out, const char *key, const void *items, int cnt,
                    size_t (*obj)(const void *items, int i, char *out), const uint8_t *next);

#endif
