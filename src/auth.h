/*
 * auth — the admin key of admin routes (SPEC §2.3): X-API-Key or Authorization: Bearer, equal
 * to the configured key compared in constant time; missing → 401, wrong → 403, no key
 * configured → 403 ADMIN_DISABLED. The key is the batch's reloadable setting (src/live: SIGHUP
 * re-reads --admin-key-file). Used by app (/reset) and tnapi (the admin tenant routes).
 * On the admin tenant routes a tenant key (src/tnkeys, "rck_..." in the same fields) may stand
 * in for the admin key, for its own tenant and the route's scope only: an invalid key (unknown,
 * wrong secret, expired, revoked) → 401, a valid one out of its tenant or scope → 403; each
 * refusal counts in ringcount_tenant_key_failures_total. A key is never logged.
 *
 * Threads: the worker owning the session.
 */
#ifndef RC_AUTH_H
#define RC_AUTH_H

#include <stdint.h>

#include "http.h"
#include "session.h"

/* 0 when req carries the admin key; otherwise answers 401/403 on s and returns -EACCES. */
int auth_admin(struct sess *s, const struct http_req *req);

struct tnk_store;
/* 0 when req carries the admin key, or a key of keys for tenant tid (NULL: a route of no tenant,
   which only the admin key may use) holding scope (a TNK_* bit; 0 none); otherwise answers
   401/403 on s and returns -EACCES. */
int auth_tenant(struct sess *s, const struct http_req *req, const struct tnk_store *keys,
                const uint8_t *tid, unsigned scope);

#endif
