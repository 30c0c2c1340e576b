/*
 * keyapi — tenant-scoped API keys over HTTP (SPEC §2.3, "Tenant keys"): the routes
 * POST/GET /tenants/{tid}/keys and DELETE /tenants/{tid}/keys/{kid}, and which scope each admin
 * tenant route needs when a tenant key stands in for the admin key (src/auth checks it). The
 * keys live in src/tnkeys; tnapi routes the key paths here and calls keyapi_auth on every admin
 * tenant route.
 *
 * Owns (stated global state, created by keyapi_init before the workers): the node's struct
 * tnk_store. Without --db keys are memory-only; with --db PostgreSQL is their source of truth
 * (rc_tenant_keys, written through src/tndb, loaded at start-up and followed by the change feed
 * in src/persist_tn).
 *
 * Threads: keyapi_init/keyapi_fini main (before/after the workers); the rest any worker.
 */
#ifndef RC_KEYAPI_H
#define RC_KEYAPI_H

#include <stdint.h>

#include "http.h"
#include "router.h"
#include "session.h"

struct tn_store;
struct tnk_store;
struct tndb;

/* The store, for seed's hashing. 0 / -ENOMEM. */
int keyapi_init(uint64_t seed);
/* The store (persistence loads and feeds it). NULL before keyapi_init. */
struct tnk_store *keyapi_store(void);
/* Free it (after the workers are joined). */
void keyapi_fini(void);
/* Tests and fuzzers only (no request running): forget every key. 0 / -ENOMEM. */
int keyapi_reset(void);
/* Revoke every key of tenant tid (its tenant was deleted on this node or by the feed). */
void keyapi_tenant_deleted(const uint8_t tid[16]);
/* Authorise an admin tenant route (m matched, an admin method): the admin key anywhere, or a
   tenant key of the path's tenant with the route's scope (POST /tenants, GET /tenants and
   DELETE /tenants/{tid}: the admin key only). 0, or -EACCES after answering 401/403. */
int keyapi_auth(struct sess *s, const struct http_req *req, const struct route_match *m);
/* Answer a key route (ROUTE_TN_KEYS, ROUTE_TN_KEY; authorised by keyapi_auth): st the tenants
   (does the tenant exist), db the worker's database writer (NULL: memory-only). SESS_H_DONE,
   or SESS_H_PARKED (answered after the database commit). */
enum sess_handled keyapi_handle(struct sess *s, const struct http_req *req,
                                const struct route_match *m, const struct tn_store *st,
                                struct tndb *db);

#endif
