/*
 * metrics — the figures behind GET /metrics (SPEC §2.4) and their Prometheus text rendering
 * (exposition format 0.0.4, names prefixed ringcount_, base units: seconds, bytes).
 *
 * Owns (process-wide, stated global state, set up by metrics_init before any worker runs):
 *  - one cache-line-aligned slot per worker: requests by route x status, the request-latency
 *    histogram by route, the loop-liveness stamp. Exactly one writer per slot, its worker (plain ck_pr
 *    stores, no atomic RMW, no lock); any thread reads. Summed over workers at scrape time.
 *  - persistence figures, written by the persister thread only (flush histogram, failures,
 *    pending keys, pg_up, last flush time); read by any thread.
 *  - the durable in-flight gauge: any thread adds (one atomic add).
 *  - process_* figures sampled by metrics_process_refresh (main thread, once a second), so a
 *    scrape on a worker makes no system call and never walks /proc/self/fd itself.
 * It also reads the counter slots (counters.h): connections, io_uring overflows, events.
 *
 * Threads: metrics_init/metrics_fini from main; metrics_slot_* from the slot's worker only;
 * metrics_flush_* / metrics_set_pg_up / metrics_set_pending_keys / metrics_set_persistence
 * from the persister (or main before it starts); metrics_render and metrics_workers_stale from
 * any thread.
 */
#ifndef RC_METRICS_H
#define RC_METRICS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* What client_golang sends; Prometheus accepts the charset parameter (format 0.0.4). */
#define METRICS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

struct metrics_slot;

/* Allocate n worker slots (1..CNT_MAX_WORKERS) and take a first process sample. Main thread,
   before workers start. 0 / -EINVAL / -ENOMEM. */
int metrics_init(unsigned n);
/* Free the slots. Main thread, after workers are joined. Safe without metrics_init. */
void metrics_fini(void);
/* Worker w's slot (w < n), or NULL if metrics_init was not called or w is out of range. */
struct metrics_slot *metrics_slot(unsigned w);

/* ---- worker hot path (slot owner only; NULL slot = no-op) ---- */

/* One final response: route id (enum route_id; out of range counts as ROUTE_NONE), HTTP status
   (codes http_status_reason does not know count as code="other"). observe: also add latency_ns to the
   route's latency histogram (requests that reached a handler; protocol errors and 408s do not).
   The caller measures latency with its batch clock (struct sess_env now_ns). */
void metrics_slot_request(struct metrics_slot *m, unsigned route, int status, bool observe,
                          uint64_t latency_ns);
/* Once-a-second tick of the worker's loop (watchdog liveness); now_ms is CLOCK_MONOTONIC ms. */
void metrics_slot_tick(struct metrics_slot *m, uint64_t now_ms);

/* ---- any thread ---- */

/* Durable requests waiting on a commit: add d (may be negative). One atomic add. */
void metrics_durable_inflight_add(int64_t d);
/* One refused tenant key (SPEC §2.3): reason is an enum tnk_result failure (src/tnkeys; others
   are ignored). One atomic add: a refusal is not the hot path. */
void metrics_tenant_key_failure(unsigned reason);

/* ---- persister (single writer) ---- */

/* Persistence configured (--db given)? Renders ringcount_persistence_enabled. */
void metrics_set_persistence(bool enabled);
/* One committed flush that took `seconds`; also stamps the last successful flush time. */
void metrics_flush_observe(double seconds);
/* One failed flush (error or unknown COMMIT outcome). */
void metrics_flush_failed(void);
/* Is the PostgreSQL connection up? */
void metrics_set_pg_up(bool up);
/* Distinct keys waiting for the next flush. */
void metrics_set_pending_keys(uint64_t n);
/* Age of the oldest data not yet committed, in ms (0: nothing waiting). */
void metrics_set_persist_lag_ms(uint64_t ms);
/* n keys written to the dead-letter table rc_rejected (they failed alone, N times). */
void metrics_flush_rejected(uint64_t n);

/* One lookup query that carried n tenant-cache misses. */
void metrics_tn_lookups(uint64_t n);
/* Persister: the tenant cache's counter evictions so far and the counters it holds, and the
   same for tenants. */
void metrics_tn_cache(uint64_t evictions, uint64_t cached, uint64_t t_evictions, uint64_t t_cached);
/* The change feed applied this many rows. */
void metrics_tn_feed(uint64_t rows);

/* ---- main thread ---- */

/* Sample process_* figures (getrusage, /proc/self/statm, /proc/self/fd, RLIMIT_NOFILE,
   RLIMIT_AS). 0, or -errno of the first source that failed (the others are still updated). */
int metrics_process_refresh(void);
/* Number of workers whose last sign of life (their latest tick, or since_ms if later: when the
   caller started watching) is more than max_age_ms before now_ms (CLOCK_MONOTONIC ms).
   0 = every loop is turning. */
unsigned metrics_workers_stale(uint64_t now_ms, uint64_t since_ms, uint64_t max_age_ms);

/* ---- rendering (any thread) ---- */

/* Render every metric into buf (NUL-terminated when cap > 0). Returns the length the full text
   needs without the NUL (like snprintf): a result >= cap means it was cut; call again with a
   bigger buffer. Figures are read without locks, so two calls may differ by a few bytes. */
size_t metrics_render(char *buf, size_t cap);

#endif
