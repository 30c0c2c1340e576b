/*
 * tnapi — the HTTP side of the multi-tenant counters (SPEC §2.3): request parsing, validation,
 * status and error codes, admin/public split, rate limiting (public routes only, with the
 * RateLimit fields on every public answer) and CORS (public routes only; admin routes never
 * get a CORS field). The data lives in src/tenants; app.c routes the /tenants... paths here.
 *
 * Owns (stated global state, read-only after tnapi_init): the struct tn_store. The CORS
 * origins and the rate-limit policy are the request's reloadable settings (src/live); a worker
 * follows a new rate limit at its first tenant request after a reload. The rate-limit table
 * is one per node, shared by the workers (src/ratelimit: lock-free), created the first time
 * the limit is on. Per worker: its UUID pool (struct tnapi_worker).
 *
 * Persistence: with --db, src/persist loads the store at start-up and flushes tenants,
 * counters and idempotency records with its other deltas (main wires it: tnapi_store). Without
 * a database they are memory-only (tnapi_init logs it). `?sync=1` holds the answer until the
 * flush carrying the increment commits (src/pwait); without a database it answers 503
 * PERSISTENCE_UNAVAILABLE without counting.
 *
 * Threads: tnapi_init/tnapi_fini main (before/after the workers); tnapi_worker_* and
 * tnapi_handle on the owning worker.
 */
#ifndef RC_TNAPI_H
#define RC_TNAPI_H

#include <stdbool.h>
#include <stdint.h>

#include "http.h"
#include "router.h"
#include "session.h"

struct config;
struct tn_store;
struct tnapi_worker;
struct pwait;

/* Bounds of the store (SPEC: "bounded memory; say the bound"): see tenants.h for bytes. The
   tenant and counter bounds are settings (--tenant-cache, --counter-cache). */
#define TNAPI_IDEM_CAPACITY 131072u

/* Global state from cfg for n workers. 0, -EINVAL (bad --trusted-proxies, or a tenant/counter
   cache of 0: cfg not from cfg_load), -ENOMEM. */
int tnapi_init(const struct config *cfg, unsigned nworkers);
/* The store (for persistence: main hands it to persist_set_tenants). NULL before tnapi_init. */
struct tn_store *tnapi_store(void);
/* Free it (after the workers are joined). */
void tnapi_fini(void);
/* Worker idx's state (UUID pool, the shared rate-limit table); ?sync=1 answers park on pw (the worker's
   src/pwait). NULL on ENOMEM. */
struct tnapi_worker *tnapi_worker_new(unsigned idx, struct pwait *pw);
void tnapi_worker_free(struct tnapi_worker *w);
/* Tests and fuzzers only (no request running): forget every tenant, counter and idempotency
   record, so replaying the same bytes gives the same answers (fuzz/fuzz_session plays each input
   twice). Cheap when nothing was created. 0 / -ENOMEM. */
int tnapi_reset(void);
/* Is id one of the tenant routes this module answers? */
bool tnapi_route(enum route_id id);
/* Answer one request that matched a tenant route (m->status 0, m->id/tid/cid set; a 405 is
   answered by app.c like any other route): OPTIONS (preflight, CORS for public methods only),
   then for public routes the rate limit (its fields and CORS on every answer), for admin ones
   the admin key (src/auth: 401/403), then the handler. now_ms: the worker's monotonic ms.
   Returns SESS_H_DONE or SESS_H_PARKED (?sync=1). */
enum sess_handled tnapi_handle(struct tnapi_worker *w, struct sess *s, const struct http_req *req,
                               const struct route_match *m, uint64_t now_ms);

#endif
