/*
 * router — maps (method, path) to a route; decides 404 and 405 (with the Allow value).
 * Pure and table-driven; any thread.
 */
#ifndef RC_ROUTER_H
#define RC_ROUTER_H

#include <stddef.h>

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
    ROUTE__COUNT
};

struct route_match {
    enum route_id id;
    int status;        /* 0 matched; 404 unknown path; 405 known path, method not allowed */
    const char *allow; /* the route's Allow value (always set when the path is known) */
};

/* Match; fills m and returns m->status. HEAD is allowed wherever GET is; OPTIONS on a known
   path matches (status 0) so the caller can answer it with Allow / CORS. */
int route_match(enum http_method meth, const char *path, size_t n, struct route_match *m);
/* Stable route name for metrics and logs ("event", "stats", ...; "unknown" for ROUTE_NONE). */
const char *route_name(enum route_id id);

#endif
