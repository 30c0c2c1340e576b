/*
 * users — the exact set of distinct userIds, sharded by owner worker.
 *
 * Owns: one shard per worker (a ck_hs of records in a per-shard arena) and an SPSC mailbox for
 * every (producer, owner) pair. A userId's owner is picked from its hash. A worker that sees a
 * user it does not own copies the bytes into the owner's mailbox (no lock, no malloc) and later
 * wakes the owner; only the owner ever writes its shard. GET /stats first runs a barrier
 * (users_barrier_*) so every mailbox filled before it is drained before the count is read.
 *
 * Threads: users_init/users_fini from main; everything else from the worker named in the call.
 */
#ifndef RC_USERS_H
#define RC_USERS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define USERS_ID_MAX 256

/* Create n shards and n*(n-1) mailboxes of mbox_bytes each (power of two >= 4096), bound the
   set at max_users. Main thread. 0 / -EINVAL / -ENOMEM. */
int users_init(unsigned n, uint64_t max_users, size_t mbox_bytes);
/* Free everything. Main thread, after the workers are joined. */
void users_fini(void);

/* Worker w saw user (s, n): insert it if w owns it, else queue it for its owner.
   Returns 1 if it is a new user counted now, 0 if known or queued, -ENOSPC never (spills). */
int users_observe(unsigned w, const char *s, size_t n);
/* Worker w: drain every mailbox addressed to w into its shard. Returns the number of records. */
size_t users_drain(unsigned w);
/* Worker w: retry spilled records, and return a bitmask-like list of owners to wake:
   writes up to cap worker ids into out, returns how many. */
size_t users_pending_wakes(unsigned w, unsigned *out, size_t cap);
/* Worker w (owner): about to drain because of a wake; re-enables wakes for w. */
void users_wake_ack(unsigned w);
/* Worker w (owner): forget every user of its shard (POST /reset). Drains its mailboxes first. */
void users_reset_shard(unsigned w);
/* Journal hook for the persister: called by owner w on its own thread for every user newly
   inserted into its shard (s, n), and with s == NULL, n == 0 when its shard is reset (a marker:
   records before it belong to the forgotten set). */
typedef void (*users_journal_fn)(unsigned w, const char *s, size_t n, void *ctx);
/* Install the hook (NULL removes it). Main thread, before the workers start. */
void users_set_journal(users_journal_fn fn, void *ctx);
/* Start-up load: insert (s, n) into its owner's shard without journaling it (call before
   users_set_journal). Main thread, before the workers start. 1 new, 0 known, -ENOSPC past
   --max-users (counted in usersOverflow), -EINVAL bad length. */
int users_preload(const char *s, size_t n);
/* 64-bit keyed hash of n bytes (seeded at init from getrandom against hash flooding). Pure. */
uint64_t users_hash(const void *s, size_t n);

#endif
