/*
 * rb_report — ringbench's output: the human summary, the --json line, and the --out
 * PREFIX.csv / PREFIX.svg per-second series (a self-drawn SVG line plot, no dependency).
 *
 * Owns: nothing (pure formatting of the caller's data; no globals). Thread: any; ringbench
 * calls it from the main thread after the run.
 */
#ifndef RB_REPORT_H
#define RB_REPORT_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "bench.h"
#include "rb_hist.h"

#define RB_STATUS_MAX 600 /* status codes 0..599 are counted; the parser accepts 100..599 */

/* One second of the run. */
struct rb_row {
    uint32_t sec;    /* 0-based second since the start */
    double rps;      /* responses in that second / its length */
    double p99_us;   /* p99 latency of the responses of that second */
    uint64_t errors; /* HTTP error statuses + socket errors in that second */
};

struct rb_summary {
    const char *scenario;
    const char *url;
    uint32_t threads, conns, depth;
    double rate;                /* open loop req/s; 0 = closed loop */
    double duration_s;          /* start to the later of stop and the last response */
    uint64_t requests;          /* responses received */
    uint64_t sent;              /* requests written */
    uint64_t unanswered;        /* sent but never answered (reset, closed, timeout) */
    const struct rb_hist *hist; /* latency of every response */
    const uint64_t *status;     /* [RB_STATUS_MAX] responses by status */
    uint16_t ok_lo, ok_hi;      /* statuses in [ok_lo, ok_hi] are not errors */
    const uint64_t *ends;       /* [BENCH__END_COUNT] socket errors by kind (see below) */
    const char *verify;         /* "ok", "failed", "skipped", or NULL: not applicable */
};
/* ends[k] counts events (a refused connect, a reset, a close with requests outstanding, a
   protocol error), except ends[BENCH_END_TIMEOUT], which counts requests that timed out. */

/* One run of a --rate-sweep. */
struct rb_sweep_row {
    double offered, rps;     /* req/s offered (-R) and achieved */
    double p50_ms, p99_ms;   /* latency from intended send times */
    double cpu_us_per_req;   /* server CPU per response (--server-pid), -1 when unknown */
    uint64_t requests, errors;
};
/* The sweep table: a header and one line per row. */
void rb_report_sweep(FILE *f, const struct rb_sweep_row *rows, size_t n);
/* An SVG plot of the sweep: server CPU per request (left axis) and p99 (right axis) against
   the offered rate. 0 / -errno. */
int rb_report_sweep_svg(const char *path, const char *title, const struct rb_sweep_row *rows,
                        size_t n);

/* Total errors: error statuses + socket errors. */
uint64_t rb_report_errors(const struct rb_summary *s);

/* The human summary (several lines). */
void rb_report_text(FILE *f, const struct rb_summary *s);

/* One JSON object on one line: {"scenario","requests","duration_s","rps","errors":{"total",
   "http_NNN"...,"reset"...},"latency_us":{"p50","p90","p99","p999","max"}, ...}. */
void rb_report_json(FILE *f, const struct rb_summary *s);

/* PREFIX.csv: "second,rps,p99_us,errors" + one row per second. 0 or -errno. */
int rb_report_csv(const char *path, const struct rb_row *rows, size_t n);

/* PREFIX.svg: throughput (left axis) and p99 (right axis) over time. 0 or -errno. */
int rb_report_svg(const char *path, const char *title, const struct rb_row *rows, size_t n);

#endif
