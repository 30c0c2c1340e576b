/*
 * tndb — tenant requests PostgreSQL decides (SPEC §2.3 with --db): the database is the source
 * of truth and the node's tn_store a cache of it. Creating a tenant or counter, `set` and
 * delete are answered after their commit, from what the database returned (a label taken on
 * any node is a 409 here); an id the cache does not hold is looked up in the database through
 * the persister (the request waits, bounded by --durable-timeout-ms, and then runs again with
 * the record cached), and an id found nowhere is remembered for TNDB_ABSENT_MS so a flood of
 * the same unknown id costs no query each (distinct unknown ids share one query per batch:
 * persist_tn).
 *
 * Owns: per worker, a small table of recent lookup outcomes (TNDB_ABSENT_SLOTS, direct-mapped
 * by id). The persister owns every op between its hand-over and its reply (src/pwait).
 *
 * Threads: a struct tndb is one worker's, used by that worker only.
 */
#ifndef RC_TNDB_H
#define RC_TNDB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "session.h"

struct pwait;
struct tn_row;
struct tn_store;

/* Outcomes kept: 1,024 × 336 bytes (a row each) per worker; 1 s, short enough that an id created on another
   node a moment after it was asked for here is found within a second. */
#define TNDB_ABSENT_SLOTS 1024u
#define TNDB_ABSENT_MS 1000u
/* Lookup outcomes kept for the request that asked (one per parked request: 256 × 344 bytes per
   worker; more parked at once fall back to looking up again). */
#define TNDB_RERUNS 256u

struct tndb;

/* Worker state over store st, parking requests on pw. NULL on ENOMEM. */
struct tndb *tndb_new(struct tn_store *st, struct pwait *pw);
void tndb_free(struct tndb *d);

/* The writes, each answered once PostgreSQL committed it (SESS_H_PARKED), or at once
   (SESS_H_DONE: 503 when the persister cannot take it). Labels are validated by the caller;
   label NULL = none. */
enum sess_handled tndb_create_tenant(struct tndb *d, struct sess *s, const uint8_t tid[16],
                                     const char *label, size_t n, int64_t now_ms);
enum sess_handled tndb_create_counter(struct tndb *d, struct sess *s, const uint8_t tid[16],
                                      const uint8_t cid[16], const char *label, size_t n,
                                      int64_t initial, int64_t max_delta, int64_t now_ms);
enum sess_handled tndb_set(struct tndb *d, struct sess *s, const uint8_t tid[16],
                           const uint8_t cid[16], int64_t value);
/* POST .../inc with an Idempotency-Key (validated by the caller): the database decides whether
   the key is new for this tenant, on any node (a replay anywhere returns the first result and
   counts nothing), once this node's increments before it are flushed. Answered 200
   {"counter_id","value"} / 409 IDEMPOTENCY_KEY_REUSED / 409 COUNTER_OVERFLOW / 404 / 503 with
   the header lines hdr (copied; at most TNDB_HDR_MAX bytes). */
#define TNDB_HDR_MAX 1312 /* tnapi's rate-limit + CORS lines: RL_HDR_MAX + CORS_HDR_MAX + 128 */
enum sess_handled tndb_keyed_inc(struct tndb *d, struct sess *s, const uint8_t tid[16],
                                 const uint8_t cid[16], const char *key, size_t klen,
                                 int64_t delta, const char *hdr, size_t hlen);
/* GET .../history: the points of bucket b ('m', 'h', 'd') in [from_ms, to_ms), at most
   TNDB_HISTORY_MAX of them (the caller bounds the range), after a flush of this node's
   increments: 200 {"bucket","points":[{"t","delta"}]} (buckets without increments are left
   out), 404, 503. */
#define TNDB_HISTORY_MAX 1440 /* a day of minutes */
enum sess_handled tndb_history(struct tndb *d, struct sess *s, const uint8_t tid[16],
                               const uint8_t cid[16], char b, int64_t from_ms, int64_t to_ms);
/* GET /tenants (tid NULL) or GET /tenants/{tid}/counters, read from PostgreSQL (the cache holds
   only some counters): up to limit (1..TN_LIST_MAX) live rows in creation order after cursor
   (NULL: from the start), or with label (NULL: any) the one counter labelled so; counter
   values after a flush of this node's increments. 200 page (tn_page_json), 404 no such
   tenant, 400 INVALID_CURSOR (the cursor is no row of this listing), 503. */
#define TNDB_MSG_BAD_CURSOR "cursor must be a next_cursor of this listing"
enum sess_handled tndb_list(struct tndb *d, struct sess *s, const uint8_t *tid,
                            const uint8_t *cursor, const char *label, size_t n, unsigned limit);
/* cid NULL: delete the tenant and its counters. 204 when done. */
enum sess_handled tndb_delete(struct tndb *d, struct sess *s, const uint8_t tid[16],
                              const uint8_t *cid);

struct tnk_store;
/* A tenant key (SPEC §2.3) written to rc_tenant_keys and answered after the commit from ks (the
   persister has stored it there): 201 with text (the one answer showing it, TNK_TEXT_LEN
   bytes), 404 no such live tenant. id, verifier, scopes, expires_ms (0 never) as tnk_mint /
   tnk_insert. */
enum sess_handled tndb_key_create(struct tndb *d, struct sess *s, const struct tnk_store *ks,
                                  const uint8_t tid[16], const uint8_t id[16],
                                  const uint8_t verifier[32], uint32_t scopes, int64_t expires_ms,
                                  int64_t now_ms, const char *text);
/* Revoke key kid of tid (soft delete; every node refuses it within --sync-ms): 204, 404. */
enum sess_handled tndb_key_delete(struct tndb *d, struct sess *s, const uint8_t tid[16],
                                  const uint8_t kid[16]);

/* A cache miss on tenant tid (cid NULL) or counter cid of tid, now_ms the worker's monotonic
   clock: SESS_H_AGAIN (looked up; the request runs again once the answer is in: the record is
   then cached, or its outcome remembered), or SESS_H_DONE with *status set to what the request
   is to answer instead, without a lookup: 404 (recently found nowhere), 409 (found, but the
   cache is full), 200 with *row (found, but the full cache could not take it: answer from the
   row, once), 503 (the lookup failed or timed out; remembered once); 404 too when the
   request cannot wait (!can_wait: a chunked body, decoded in place, cannot run twice).
   *status 0 with SESS_H_DONE: s was answered (503 OVERLOADED). */
enum sess_handled tndb_lookup(struct tndb *d, struct sess *s, const uint8_t tid[16],
                              const uint8_t *cid, bool can_wait, uint64_t now_ms, int *status,
                              const struct tn_row **row);
/* POST .../inc of a counter the full cache does not hold (its row came from tndb_lookup):
   made in the database, answered after its commit like tndb_keyed_inc. */
enum sess_handled tndb_db_inc(struct tndb *d, struct sess *s, const uint8_t tid[16],
                              const uint8_t cid[16], int64_t delta, const char *hdr, size_t hlen);

#endif
