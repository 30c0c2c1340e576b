/* Unit tests for src/metrics: what a Prometheus scrape of GET /metrics shows an operator —
   requests by route and status summed over worker slots, a cumulative latency histogram per
   route whose _count equals its +Inf bucket, persister figures, connection and io_uring counters from the
   counter slots, process_* figures that match the process, a truncated render that reports the
   length it needs, the watchdog's stalled-worker check, and (when promtool is installed) that
   the text passes `promtool check metrics`. */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "counters.h"
#include "metrics.h"
#include "router.h"

#define RENDER_CAP (256 * 1024)

static char *text;

static void setup2(void)
{
    cr_assert_eq(cnt_init(2), 0);
    cr_assert_eq(metrics_init(2), 0);
    text = malloc(RENDER_CAP);
    cr_assert_not_null(text);
}

static void teardown(void)
{
    metrics_fini();
    cnt_fini();
    free(text);
    text = NULL;
}

static void render(void)
{
    size_t n = metrics_render(text, RENDER_CAP);
    cr_assert_lt(n, RENDER_CAP);
    cr_assert_eq(strlen(text), n);
}

/* The sample value of the series written exactly as `series` ("name" or "name{labels}"), as
   text, or NULL if the series is absent. Copies into a static buffer. */
static const char *value_of(const char *series)
{
    static char val[64];
    size_t sl = strlen(series);
    for (const char *p = text; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL) {
        if (strncmp(p, series, sl) != 0 || p[sl] != ' ')
            continue;
        const char *v = p + sl + 1, *e = strchr(v, '\n');
        size_t n = e ? (size_t)(e - v) : strlen(v);
        cr_assert_lt(n, sizeof(val));
        memcpy(val, v, n);
        val[n] = 0;
        return val;
    }
    return NULL;
}

static unsigned long long u64_of(const char *series)
{
    const char *v = value_of(series);
    cr_assert_not_null(v, "series %s missing from:\n%s", series, text);
    char *end;
    unsigned long long x = strtoull(v, &end, 10);
    cr_assert_eq(*end, 0, "%s = %s is not an integer", series, v);
    return x;
}

static double f64_of(const char *series)
{
    const char *v = value_of(series);
    cr_assert_not_null(v, "series %s missing", series);
    return strtod(v, NULL);
}

Test(metrics, init_bounds, .fini = teardown)
{
    cr_assert_eq(metrics_init(0), -EINVAL);
    cr_assert_eq(metrics_init(CNT_MAX_WORKERS + 1), -EINVAL);
    cr_assert_null(metrics_slot(0), "no slots before metrics_init");
    cr_assert_eq(metrics_init(3), 0);
    cr_assert_not_null(metrics_slot(2));
    cr_assert_null(metrics_slot(3));
    cr_assert_neq(metrics_slot(0), metrics_slot(1));
    cr_assert_eq((uintptr_t)metrics_slot(1) % CK_MD_CACHELINE, 0, "one cache line per worker");
    /* NULL slot: every hot-path call is a no-op */
    metrics_slot_request(NULL, ROUTE_EVENT, 200, true, 1);
    metrics_slot_tick(NULL, 1);
}

struct req_case {
    unsigned worker;
    unsigned route;
    int status;
    unsigned times;
};

static const struct req_case reqs[] = {
    {0, ROUTE_EVENT, 200, 5},   {1, ROUTE_EVENT, 200, 7},  {1, ROUTE_EVENT, 400, 2},
    {0, ROUTE_STATS, 200, 1},   {0, ROUTE_NONE, 404, 3},   {1, ROUTE_NONE, 404, 1},
    {0, ROUTE_RESET, 403, 1},   {1, ROUTE_EVENT, 299, 2},  /* unknown status: "other" */
    {0, ROUTE_EVENT, 999, 1},   {1, ROUTE_EVENT, -5, 1},   /* out of range: "other" */
    {0, ROUTE__COUNT + 7, 200, 4},                         /* bad route id: "unknown" */
};

struct want_series {
    const char *series;
    unsigned long long v;
};

static const struct want_series want_reqs[] = {
    {"ringcount_http_requests_total{route=\"event\",code=\"200\"}", 12},
    {"ringcount_http_requests_total{route=\"event\",code=\"400\"}", 2},
    {"ringcount_http_requests_total{route=\"event\",code=\"other\"}", 4},
    {"ringcount_http_requests_total{route=\"stats\",code=\"200\"}", 1},
    {"ringcount_http_requests_total{route=\"unknown\",code=\"404\"}", 4},
    {"ringcount_http_requests_total{route=\"unknown\",code=\"200\"}", 4},
    {"ringcount_http_requests_total{route=\"reset\",code=\"403\"}", 1},
};

Test(metrics, requests_by_route_and_status_summed_over_workers, .init = setup2, .fini = teardown)
{
    for (size_t i = 0; i < sizeof(reqs) / sizeof(reqs[0]); i++)
        for (unsigned k = 0; k < reqs[i].times; k++)
            metrics_slot_request(metrics_slot(reqs[i].worker), reqs[i].route, reqs[i].status,
                                 false, 0);
    render();
    for (size_t i = 0; i < sizeof(want_reqs) / sizeof(want_reqs[0]); i++)
        cr_expect_eq(u64_of(want_reqs[i].series), want_reqs[i].v, "%s", want_reqs[i].series);
    /* a combination never seen is not rendered; none was observed into the histogram */
    cr_expect_null(value_of("ringcount_http_requests_total{route=\"stats\",code=\"404\"}"));
    cr_expect_null(value_of("ringcount_http_request_duration_seconds_count{route=\"event\"}"));
    cr_expect_null(strstr(text, "ringcount_http_request_duration_seconds_count"));
    cr_expect(strstr(text, "# TYPE ringcount_http_requests_total counter\n"));
}

struct lat_case {
    uint64_t ns;
    const char *first_le; /* the smallest bucket that must count it */
};

/* Bounds are inclusive (le = "less or equal"). */
static const struct lat_case lats[] = {
    {0, "0.0001"},           {100000, "0.0001"},    {100001, "0.00025"},
    {999999, "0.001"},       {1000000, "0.001"},    {7000000, "0.01"},
    {2500000000u, "2.5"},    {10000000000u, "10"},  {10000000001u, "+Inf"},
};
static const char *const les[] = {"0.0001", "0.00025", "0.0005", "0.001", "0.0025", "0.005",
                                  "0.01",   "0.025",   "0.05",   "0.1",   "0.25",   "0.5",
                                  "1",      "2.5",     "5",      "10",    "+Inf"};
#define NLES (sizeof(les) / sizeof(les[0]))

static unsigned le_index(const char *le)
{
    for (unsigned i = 0; i < NLES; i++)
        if (strcmp(les[i], le) == 0)
            return i;
    cr_assert_fail("bad le %s", le);
    return 0;
}

Test(metrics, latency_histogram_is_cumulative_and_exact, .init = setup2, .fini = teardown)
{
    uint64_t want[NLES] = {0}, sum_ns = 0;
    for (size_t i = 0; i < sizeof(lats) / sizeof(lats[0]); i++) {
        /* alternate workers: the scrape sums them */
        metrics_slot_request(metrics_slot((unsigned)i % 2), ROUTE_EVENT, 200, true, lats[i].ns);
        for (unsigned b = le_index(lats[i].first_le); b < NLES; b++)
            want[b]++;
        sum_ns += lats[i].ns;
    }
    render();
    char series[128];
    for (unsigned b = 0; b < NLES; b++) {
        snprintf(series, sizeof(series),
                 "ringcount_http_request_duration_seconds_bucket{route=\"event\",le=\"%s\"}", les[b]);
        cr_expect_eq(u64_of(series), want[b], "bucket le=%s", les[b]);
    }
    cr_expect_eq(u64_of("ringcount_http_request_duration_seconds_count{route=\"event\"}"),
                 want[NLES - 1]);
    cr_expect_eq(u64_of("ringcount_http_requests_total{route=\"event\",code=\"200\"}"),
                 sizeof(lats) / sizeof(lats[0]));
    /* sum in seconds, µs resolution */
    double got = f64_of("ringcount_http_request_duration_seconds_sum{route=\"event\"}");
    cr_expect(got > (double)sum_ns / 1e9 - 1e-5 && got < (double)sum_ns / 1e9 + 1e-5,
              "sum %f want %f", got, (double)sum_ns / 1e9);
    cr_expect(strstr(text, "# TYPE ringcount_http_request_duration_seconds histogram\n"));
}

/* SPEC §2.4: one histogram per route, so a slow parked /stats does not hide in /event's figures
   and an operator can read each route's latency; routes never observed have no series. */
Test(metrics, latency_histogram_per_route, .init = setup2, .fini = teardown)
{
    for (int i = 0; i < 3; i++)
        metrics_slot_request(metrics_slot(0), ROUTE_EVENT, 200, true, 50000);      /* 50 µs */
    metrics_slot_request(metrics_slot(1), ROUTE_STATS, 200, true, 7000000);        /* 7 ms */
    metrics_slot_request(metrics_slot(1), ROUTE_INCR_V1, 200, true, 12000000);     /* 12 ms */
    metrics_slot_request(metrics_slot(0), ROUTE_METRICS, 200, false, 0);           /* not observed */
    render();
    cr_expect_eq(u64_of("ringcount_http_request_duration_seconds_count{route=\"event\"}"), 3);
    cr_expect_eq(u64_of("ringcount_http_request_duration_seconds_bucket{route=\"event\",le=\"0.0001\"}"), 3);
    cr_expect_eq(u64_of("ringcount_http_request_duration_seconds_count{route=\"stats\"}"), 1);
    cr_expect_eq(u64_of("ringcount_http_request_duration_seconds_bucket{route=\"stats\",le=\"0.005\"}"), 0);
    cr_expect_eq(u64_of("ringcount_http_request_duration_seconds_bucket{route=\"stats\",le=\"0.01\"}"), 1);
    cr_expect_eq(u64_of("ringcount_http_request_duration_seconds_bucket{route=\"increment_v1\",le=\"+Inf\"}"), 1);
    double ev = f64_of("ringcount_http_request_duration_seconds_sum{route=\"event\"}");
    cr_expect(ev > 0.000149 && ev < 0.000151, "event sum %f", ev);
    cr_expect_null(value_of("ringcount_http_request_duration_seconds_count{route=\"metrics\"}"));
    cr_expect_null(value_of("ringcount_http_request_duration_seconds_count"), "no unlabelled series");
    /* one family header for all routes */
    const char *h = strstr(text, "# TYPE ringcount_http_request_duration_seconds histogram\n");
    cr_assert_not_null(h);
    cr_expect_null(strstr(h + 1, "# TYPE ringcount_http_request_duration_seconds histogram\n"));
}

Test(metrics, persister_figures, .init = setup2, .fini = teardown)
{
    render();
    cr_expect_eq(u64_of("ringcount_pg_up"), 0);
    cr_expect_eq(u64_of("ringcount_persistence_enabled"), 0);
    cr_expect_eq(u64_of("ringcount_flush_duration_seconds_count"), 0);
    cr_expect_null(value_of("ringcount_last_flush_timestamp_seconds"), "absent before a flush");

    metrics_set_persistence(true);
    metrics_set_pg_up(true);
    metrics_set_pending_keys(1234);
    metrics_flush_observe(0.004);  /* -> le 0.005 */
    metrics_flush_observe(0.0005); /* -> le 0.001 */
    metrics_flush_observe(30);     /* -> +Inf only */
    metrics_flush_observe(-1);     /* clock went backwards: counts as 0 */
    metrics_flush_failed();
    metrics_flush_failed();
    metrics_durable_inflight_add(5);
    metrics_durable_inflight_add(-2);
    render();
    cr_expect_eq(u64_of("ringcount_pg_up"), 1);
    cr_expect_eq(u64_of("ringcount_persistence_enabled"), 1);
    cr_expect_eq(u64_of("ringcount_pending_keys"), 1234);
    cr_expect_eq(u64_of("ringcount_flush_failures_total"), 2);
    cr_expect_eq(u64_of("ringcount_durable_requests_inflight"), 3);
    cr_expect_eq(u64_of("ringcount_flush_duration_seconds_bucket{le=\"0.001\"}"), 2);
    cr_expect_eq(u64_of("ringcount_flush_duration_seconds_bucket{le=\"0.005\"}"), 3);
    cr_expect_eq(u64_of("ringcount_flush_duration_seconds_bucket{le=\"10\"}"), 3);
    cr_expect_eq(u64_of("ringcount_flush_duration_seconds_bucket{le=\"+Inf\"}"), 4);
    cr_expect_eq(u64_of("ringcount_flush_duration_seconds_count"), 4);
    double sum = f64_of("ringcount_flush_duration_seconds_sum");
    cr_expect(sum > 30.0045 - 1e-6 && sum < 30.0045 + 1e-6, "sum %f", sum);
    double last = f64_of("ringcount_last_flush_timestamp_seconds");
    cr_expect(last > (double)time(NULL) - 5 && last < (double)time(NULL) + 1, "last %f", last);

    metrics_set_pg_up(false);
    metrics_durable_inflight_add(-10); /* a transient negative sum never renders below 0 */
    render();
    cr_expect_eq(u64_of("ringcount_pg_up"), 0);
    cr_expect_eq(u64_of("ringcount_durable_requests_inflight"), 0);
}

Test(metrics, connection_and_io_uring_counters_from_counter_slots, .init = setup2,
     .fini = teardown)
{
    struct cnt_slot *a = cnt_slot(0), *b = cnt_slot(1);
    cnt_add(&a->conns_open, 3);
    cnt_add(&b->conns_open, 4);
    cnt_add(&a->conns_accepted, 10);
    cnt_add(&b->conns_accepted, 20);
    cnt_add(&b->conns_rejected, 6);
    cnt_add(&a->cq_overflows, 1);
    cnt_add(&b->enobufs, 9);
    cnt_event_add(a, 1500000);
    cnt_event_add(b, 1);
    render();
    cr_expect_eq(u64_of("ringcount_connections_open"), 7);
    cr_expect_eq(u64_of("ringcount_connections_accepted_total"), 30);
    cr_expect_eq(u64_of("ringcount_connections_rejected_total{reason=\"max_connections\"}"), 6);
    cr_expect_eq(u64_of("ringcount_io_uring_cq_overflows_total"), 1);
    cr_expect_eq(u64_of("ringcount_io_uring_recv_enobufs_total"), 9);
    cr_expect_eq(u64_of("ringcount_events_total"), 2);
    cr_expect_eq(u64_of("ringcount_workers"), 2);
}

Test(metrics, process_figures_match_the_process, .init = setup2, .fini = teardown)
{
    cr_assert_eq(metrics_process_refresh(), 0);
    render();
    struct rlimit rl;
    cr_assert_eq(getrlimit(RLIMIT_NOFILE, &rl), 0);
    cr_expect_eq(u64_of("process_max_fds"), (unsigned long long)rl.rlim_cur);
    unsigned long long fds = u64_of("process_open_fds");
    cr_expect_gt(u64_of("process_resident_memory_bytes"), 0);
    cr_expect_geq(u64_of("process_virtual_memory_bytes"),
                  u64_of("process_resident_memory_bytes"));
    double start = f64_of("process_start_time_seconds"), now = (double)time(NULL);
    cr_expect(start > now - 600 && start < now + 1, "start %f now %f", start, now);
    cr_expect_geq(f64_of("process_cpu_seconds_total"), 0);
    cr_expect_not_null(value_of("process_virtual_memory_max_bytes"));

    /* open ten more descriptors: the next sample sees exactly ten more */
    int extra[10];
    for (int i = 0; i < 10; i++)
        cr_assert_geq(extra[i] = open("/dev/null", O_RDONLY | O_CLOEXEC), 0);
    cr_assert_eq(metrics_process_refresh(), 0);
    render();
    cr_expect_eq(u64_of("process_open_fds"), fds + 10);
    for (int i = 0; i < 10; i++)
        close(extra[i]);

    /* CPU time grows with work (10 ms of spinning, well above getrusage's resolution) */
    double c0 = f64_of("process_cpu_seconds_total");
    struct timespec t0, t1;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t0);
    volatile unsigned long spin = 0;
    do {
        for (int i = 0; i < 100000; i++)
            spin += (unsigned long)i;
        clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t1);
    } while ((t1.tv_sec - t0.tv_sec) * 1000000000L + (t1.tv_nsec - t0.tv_nsec) < 10000000L);
    cr_assert_neq(spin, 1); /* keep the loop (and clang) honest */
    metrics_process_refresh();
    render();
    cr_expect_gt(f64_of("process_cpu_seconds_total"), c0);
}

Test(metrics, truncated_render_reports_needed_length, .init = setup2, .fini = teardown)
{
    metrics_slot_request(metrics_slot(0), ROUTE_EVENT, 200, true, 5);
    size_t full = metrics_render(text, RENDER_CAP);
    char *copy = strdup(text);
    cr_assert_not_null(copy);
    static const size_t caps[] = {1, 2, 100, 1000};
    char small[1000];
    for (size_t i = 0; i < sizeof(caps) / sizeof(caps[0]); i++) {
        memset(small, 'X', sizeof(small));
        size_t n = metrics_render(small, caps[i]);
        cr_expect_eq(n, full, "cap %zu", caps[i]);
        cr_expect_eq(strlen(small), caps[i] - 1, "NUL-terminated within cap %zu", caps[i]);
        cr_expect_eq(memcmp(small, copy, caps[i] - 1), 0, "a prefix of the full text");
    }
    cr_expect_eq(metrics_render(NULL, 0), full, "cap 0 only measures");
    free(copy);
}

Test(metrics, workers_stale_detects_a_stuck_loop, .init = setup2, .fini = teardown)
{
    /* both ticked at 10,000 ms; watching since 9,000 */
    metrics_slot_tick(metrics_slot(0), 10000);
    metrics_slot_tick(metrics_slot(1), 10000);
    cr_expect_eq(metrics_workers_stale(12000, 9000, 5000), 0);
    cr_expect_eq(metrics_workers_stale(15000, 9000, 5000), 0, "exactly max_age is not stale");
    cr_expect_eq(metrics_workers_stale(15001, 9000, 5000), 2);
    metrics_slot_tick(metrics_slot(1), 15000);
    cr_expect_eq(metrics_workers_stale(15001, 9000, 5000), 1, "only the stuck one");
    /* a worker that never ticked counts from since_ms (start-up is not a stall) */
    teardown();
    setup2();
    cr_expect_eq(metrics_workers_stale(20000, 18000, 5000), 0);
    cr_expect_eq(metrics_workers_stale(24000, 18000, 5000), 2);
}

Test(metrics, promtool_accepts_the_text, .init = setup2, .fini = teardown)
{
    if (system("command -v promtool >/dev/null 2>&1") != 0)
        cr_skip_test("promtool not installed (Debian package prometheus)");
    for (size_t i = 0; i < sizeof(reqs) / sizeof(reqs[0]); i++)
        metrics_slot_request(metrics_slot(reqs[i].worker), reqs[i].route, reqs[i].status, true,
                             1000u * reqs[i].times);
    metrics_set_persistence(true);
    metrics_flush_observe(0.003);
    metrics_flush_failed();
    metrics_durable_inflight_add(2);
    render();
    char path[] = "/tmp/rc-metrics-XXXXXX";
    int fd = mkstemp(path);
    cr_assert_geq(fd, 0);
    size_t n = strlen(text);
    cr_assert_eq(write(fd, text, n), (ssize_t)n);
    close(fd);
    char cmd[256];
    snprintf(cmd, sizeof(cmd), "promtool check metrics < %s > %s.out 2>&1", path, path);
    int rc = system(cmd);
    char out[4096] = "";
    snprintf(cmd, sizeof(cmd), "%s.out", path);
    FILE *f = fopen(cmd, "r");
    if (f) {
        size_t k = fread(out, 1, sizeof(out) - 1, f);
        out[k] = 0;
        fclose(f);
    }
    unlink(cmd);
    unlink(path);
    cr_expect_eq(rc, 0, "promtool check metrics failed:\n%s", out);
    cr_expect_eq(out[0], 0, "promtool lint findings:\n%s", out);
}
