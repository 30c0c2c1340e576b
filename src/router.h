/*
 * router — maps (method, path) to a route; decides 404 and 405 (with the Allow value).
 * Pure and table-driven; any thread.
 */
#ifndef RC_ROUTER_H
#define RC_ROUTER_H

#include <stddef.h>
#include <stdint.h>

#include "http.h"

enum route_id {
    ROUTE_NONE = 0,
    ROUTE_EVENT,
    ROUTE_STATS,
    ROUTE_RESET,
    ROUTE_HEALTH,
    ROUTE_LIVEZ,
    ROUTE_READYZ,
    ROUTE_METRICS,
    ROUTE_INDEX, /* GET /: the HTML status page */
    ROUTE_INCR_V1,    /* /api/v1/increment: POST durable, GET committed value */
    ROUTE_INCR_V2,    /* /api/v2/increment: POST fast (204), GET live value */
    ROUTE_COUNTER_V1, /* /api/v1/counter: alias of the v2 pair */
    /* SPEC §2.3, pattern routes ({tid}/{cid} in struct route_match) */
    ROUTE_TENANTS,     /* /tenants: GET list, POST create tenant (admin) */
    ROUTE_TENANT,      /* /tenants/{tid}: GET tenant; POST create counter (admin alias);
                          DELETE (admin) */
    ROUTE_TN_COUNTERS, /* /tenants/{tid}/counters: GET list, POST create (admin) */
    ROUTE_TN_COUNTER,  /* /tenants/{tid}/counters/{cid}, alias /tenants/{tid}/{cid}: GET;
                          DELETE (admin) */
    ROUTE_TN_INC,      /* .../counters/{cid}/inc, alias /tenants/{tid}/{cid}/inc: POST */
    ROUTE_TN_SET,      /* .../counters/{cid}/set: POST (admin) */
    ROUTE_TN_HISTORY,  /* .../counters/{cid}/history: GET (admin) */
    ROUTE_TN_KEYS,     /* /tenants/{tid}/keys: GET list, POST create (admin or keys:manage) */
    ROUTE_TN_KEY,      /* /tenants/{tid}/keys/{kid} ({kid} in cid): DELETE (same) */
    ROUTE__COUNT
};

struct route_match {
    enum route_id id;
    int status;        /* 0 matched; 404 unknown path; 405 known path, method not allowed */
    const char *allow; /* the route's Allow value (always set when the path is known) */
    const char *tid, *cid; /* tenant routes: the {tid} / {cid} path segments (raw), else NULL */
    uint32_t tid_len, cid_len;
};

/* Match; fills m and returns m->status. HEAD is allowed wherever GET is; OPTIONS on a known
   path matches (status 0) so the caller can answer it with Allow / CORS. Under /tenants a
   literal segment wins over an id ("/tenants/{tid}/counters" is the listing, not counter
   "counters"; "/tenants/{tid}/keys" the keys); an empty segment (a trailing or double slash) is a 404. */
int route_match(enum http_method meth, const char *path, size_t n, struct route_match *m);
/* Stable route name for metrics and logs ("event", "stats", ...; "unknown" for ROUTE_NONE). */
const char *route_name(enum route_id id);

#endif
