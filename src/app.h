/*
 * app — the HTTP handlers and the cross-worker coordination they need (the /stats barrier that
 * makes uniqueUsers exact, /reset). Owns the per-worker application state.
 *
 * Threads: app_init/app_fini from main before/after the workers; app_worker_* and app_handle
 * from the owning worker only. Readiness flags (app_set_*) from any thread.
 */
#ifndef RC_APP_H
#define RC_APP_H

#include <stdbool.h>
#include <stdint.h>

#include "http.h"
#include "session.h"

struct config;
struct app_worker;

/* The io layer's services an app worker uses (all called on the worker's own thread). */
struct app_io {
    void *ctx;
    void (*wake)(void *ctx, unsigned target); /* post a wake-up to worker `target` */
};

/* Global application state from the config, for n workers. Main thread. 0 / -errno. */
int app_init(const struct config *cfg, unsigned nworkers);
/* Release global state. Main thread, after the workers are joined. */
void app_fini(void);
/* Create worker idx's state. On that worker's thread. NULL on ENOMEM. */
struct app_worker *app_worker_new(unsigned idx, const struct app_io *io);
/* Free it. */
void app_worker_free(struct app_worker *a);
/* Handle one complete request on s (struct sess_ops handle): SESS_H_DONE, SESS_H_PARKED or
   SESS_H_RETRY (session.h). */
enum sess_handled app_handle(struct sess *s, struct http_req *req);
/* A wake-up arrived: drain user mailboxes, serve barriers, answer parked requests. */
void app_on_wake(struct app_worker *a, uint64_t now_ms);
/* End of an event-loop batch: post the wake-ups this batch made necessary. */
void app_flush(struct app_worker *a);
/* Once a second: rates, and the same work as a wake-up (safety net for lost wake-ups). */
void app_tick(struct app_worker *a, uint64_t now_ms);
/* The session s died while parked: forget it (the io layer frees it after this returns). */
void app_forget(struct app_worker *a, struct sess *s);
/* A final response with this status was appended to s (struct sess_ops note_response): counts
   it in the worker's metrics by route and status, with its latency when a handler routed it. */
void app_note_response(struct sess *s, int status);
/* The handlers as the session calls them (sess_env.ops): app_handle, app_note_response. */
extern const struct sess_ops app_sess_ops;
/* Server lifecycle for /readyz: ready after start-up, not ready while draining. */
void app_set_ready(bool ready);

#endif
