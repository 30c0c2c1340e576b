/*
 * cors — Cross-Origin Resource Sharing for the public routes (SPEC §2.3): the --cors-origins
 * list parsed once, Origin matching, the preflight answer and the fields of actual answers.
 * Admin routes never call it (they never get CORS fields).
 *
 * Owns: nothing global. A struct cors_conf is filled by cors_init (main thread) and is then
 * read-only: any thread may call the other functions. The live one is in struct live
 * (src/live): SIGHUP publishes a new one. No malloc: up to CORS_MAX_ORIGINS
 * origins are kept in the struct (the config field is 2 KiB, so 64 origins of ~30 bytes).
 *
 * Matching is exact on the serialized origin, ASCII case-insensitive (browsers send scheme and
 * host lower-case; an operator may type them otherwise). An Origin that does not match gets no
 * CORS field at all (the browser then blocks the read), and a preflight for it is a plain 204.
 */
#ifndef RC_CORS_H
#define RC_CORS_H

#include <stdbool.h>
#include <stddef.h>

#define CORS_MAX_ORIGINS 64
#define CORS_SPEC_MAX 2048
/* Longest output of cors_preflight / cors_actual for an origin of up to CORS_ORIGIN_MAX bytes. */
#define CORS_ORIGIN_MAX 512
#define CORS_HDR_MAX 1024
/* cors_actual alone: "Access-Control-Allow-Origin: " (29) + origin + "\r\nVary: Origin\r\n" (16) +
   the Expose-Headers line (74) = 631 for a 512-byte origin. A session keeps this block for a
   parked answer (session.h SESS_REQ_HDRS_MAX), so it is bounded apart from the preflight's. */
#define CORS_ACTUAL_MAX 640
/* Preflight cache lifetime: 600 s (Chromium caps Access-Control-Max-Age at 7200, older ones at
   600; 10 min keeps a configuration change effective quickly). */
#define CORS_MAX_AGE_S 600

struct cors_conf {
    bool enabled;   /* a non-empty --cors-origins */
    bool any;       /* "*" */
    size_t n;
    char buf[CORS_SPEC_MAX];
    struct { unsigned off, len; } o[CORS_MAX_ORIGINS];
};

/* Parse spec ("" = CORS off, "*" = any origin, else a comma list; empty elements and surrounding
   blanks are ignored). 0, -EINVAL (more than CORS_MAX_ORIGINS, or too long). */
int cors_init(struct cors_conf *c, const char *spec);
/* Is this Origin value allowed? */
bool cors_allowed(const struct cors_conf *c, const char *origin, size_t n);
/* Fields for an actual answer to a request with this Origin (origin may be NULL: none):
   Access-Control-Allow-Origin (the origin + Vary: Origin, or *) and Access-Control-Expose-Headers
   (the rate-limit fields and Retry-After, so scripts can read them). Returns the length
   (<= CORS_ACTUAL_MAX); 0 when the origin is absent/not allowed or cap < CORS_ACTUAL_MAX. */
size_t cors_actual(const struct cors_conf *c, const char *origin, size_t n, char *out, size_t cap);
/* Fields for a preflight answer (204): cors_actual's Allow-Origin/Vary plus -Allow-Methods
   (methods, e.g. "GET, POST, OPTIONS"), -Allow-Headers (Content-Type, Idempotency-Key) and
   -Max-Age. Returns the length; 0 as cors_actual. */
size_t cors_preflight(const struct cors_conf *c, const char *origin, size_t n, const char *methods,
                      char *out, size_t cap);

#endif
