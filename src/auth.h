/*
 * auth — the admin key of admin routes (SPEC §2.3): X-API-Key or Authorization: Bearer, equal
 * to the configured key compared in constant time; missing → 401, wrong → 403, no key
 * configured → 403 ADMIN_DISABLED. The key is the batch's reloadable setting (src/live: SIGHUP
 * re-reads --admin-key-file). Used by app (/reset) and tnapi (the admin tenant routes).
 *
 * Threads: the worker owning the session.
 */
#ifndef RC_AUTH_H
#define RC_AUTH_H

#include "http.h"
#include "session.h"

/* 0 when req carries the admin key; otherwise answers 401/403 on s and returns -EACCES. */
int auth_admin(struct sess *s, const struct http_req *req);

#endif
