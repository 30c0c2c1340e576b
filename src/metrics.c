/* metrics — see metrics.h. */
#include "metrics.h"

#include <ck_pr.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "config.h"
#include "counters.h"
#include "router.h"
#include "http.h"
#include "tnkeys.h"

/* Status codes get a compact index: the ones http_status_reason names (about 25), plus "other".
   48 leaves room for codes added later without touching this file. */
#define MAX_STATUS 48
#define STATUS_OTHER MAX_STATUS

_Static_assert(ROUTE__COUNT <= 256, "struct sess keeps the route id in a uint8_t");

struct bucket {
    uint64_t le_ns; /* upper bound, inclusive (Prometheus "le") */
    const char *le; /* the same bound as printed */
};

/* Request latency, by route: from the batch that brought a request's first byte to the batch
   that queued its answer, both read from CLOCK_MONOTONIC once per event-loop batch (struct
   sess_env now_ns). A request answered in the batch that completed it lands in the first
   bucket; the upper buckets are parked answers (/stats barrier, durable commits at --flush-ms
   10), requests whose bytes came in several batches (head and body in two segments, as Python's
   http.client sends them) and slow clients. */
static const struct bucket lat_buckets[] = {
    {100000, "0.0001"},     {250000, "0.00025"},     {500000, "0.0005"},
    {1000000, "0.001"},     {2500000, "0.0025"},     {5000000, "0.005"},
    {10000000, "0.01"},     {25000000, "0.025"},     {50000000, "0.05"},
    {100000000, "0.1"},     {250000000, "0.25"},     {500000000, "0.5"},
    {1000000000, "1"},      {2500000000u, "2.5"},    {5000000000u, "5"},
    {10000000000u, "10"},
};
#define NLAT (sizeof(lat_buckets) / sizeof(lat_buckets[0]))

/* Flush duration: one transaction every --flush-ms (10 ms); a healthy local flush takes 1-5 ms,
   a stalled database seconds. */
static const struct bucket flush_buckets[] = {
    {1000000, "0.001"},   {2500000, "0.0025"},  {5000000, "0.005"},     {10000000, "0.01"},
    {25000000, "0.025"},  {50000000, "0.05"},   {100000000, "0.1"},     {250000000, "0.25"},
    {500000000, "0.5"},   {1000000000, "1"},    {2500000000u, "2.5"},   {5000000000u, "5"},
    {10000000000u, "10"},
};
#define NFLUSH (sizeof(flush_buckets) / sizeof(flush_buckets[0]))

struct metrics_slot {
    uint64_t req[ROUTE__COUNT][MAX_STATUS + 1]; /* final responses by route x status index */
    uint64_t lat[ROUTE__COUNT][NLAT + 1];       /* by route, non-cumulative; [NLAT] is +Inf */
    uint64_t lat_sum_us[ROUTE__COUNT];          /* µs: 2^64 µs is 584,000 years of latency */
    uint64_t tick_ms;                           /* last loop tick (watchdog liveness) */
} __attribute__((aligned(CK_MD_CACHELINE)));

/* Set up by metrics_init before any worker exists; the slots are then written by their owners
   only, the rest by the writers named in metrics.h. */
static struct metrics_slot *slots;
static unsigned nslots;
static uint8_t status_idx[600];    /* HTTP status -> compact index (STATUS_OTHER if unknown) */
static uint16_t status_code[MAX_STATUS];
static unsigned nstatus;

/* Persister figures (single writer) and the durable gauge (any thread, atomic add). */
static struct {
    uint64_t flush[NFLUSH + 1];
    uint64_t flush_sum_us;
    uint64_t flush_failures;
    uint64_t pending_keys;
    uint64_t pg_up;
    uint64_t lag_ms;
    uint64_t rejected;
    uint64_t tn_lookups, tn_lookup_queries, tn_feed_rows, tn_evictions, tn_cached;
    uint64_t tn_t_evictions, tn_t_cached;
    uint64_t enabled;
    uint64_t last_flush_unix_ms;
    uint64_t durable_inflight; /* two's complement int64 */
} P;

/* Refused tenant keys by enum tnk_result (any worker, atomic add). */
static uint64_t key_failures[TNK__COUNT];

/* Process figures, written by metrics_process_refresh (main), read by any thread. */
static struct {
    uint64_t cpu_us;
    uint64_t rss_bytes, vsize_bytes;
    uint64_t open_fds, max_fds;
    uint64_t max_vsize; /* UINT64_MAX = unlimited (rendered as -1, as client_golang does) */
    uint64_t start_unix_ms;
} PR;

static void build_status_map(void)
{
    nstatus = 0;
    memset(status_idx, STATUS_OTHER, sizeof(status_idx));
    for (int code = 200; code < 600; code++) { /* 1xx are interim, never a final response */
        if (strcmp(http_status_reason(code), "Unknown") == 0 || nstatus == MAX_STATUS)
            continue;
        status_idx[code] = (uint8_t)nstatus;
        status_code[nstatus++] = (uint16_t)code;
    }
}

/* Unix time of the process start: CLOCK_BOOTTIME is the base of /proc/self/stat's starttime
   (field 22, in clock ticks), so no /proc/stat (hidden by systemd's ProcSubset=pid) is needed.
   Falls back to "now" (metrics_init runs within milliseconds of exec). */
static uint64_t process_start_unix_ms(void)
{
    uint64_t now_real = clock_ms(CLOCK_REALTIME);
    char buf[1024];
    int fd = open("/proc/self/stat", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return now_real;
    ssize_t n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    if (n <= 0)
        return now_real;
    buf[n] = 0;
    char *p = strrchr(buf, ')'); /* comm may contain spaces and parentheses */
    if (!p)
        return now_real;
    /* after ")": field 3 (state) ... field 22 (starttime) is the 20th token */
    unsigned long long start_ticks = 0;
    char *save = NULL, *tok = strtok_r(p + 1, " ", &save);
    for (int field = 3; tok && field < 22; field++)
        tok = strtok_r(NULL, " ", &save);
    if (!tok)
        return now_real;
    start_ticks = strtoull(tok, NULL, 10);
    long hz = sysconf(_SC_CLK_TCK);
    if (hz <= 0)
        return now_real;
    uint64_t boot_real = now_real - clock_ms(CLOCK_BOOTTIME);
    return boot_real + (uint64_t)(start_ticks * 1000ull / (unsigned long long)hz);
}

int metrics_init(unsigned n)
{
    if (n == 0 || n > CNT_MAX_WORKERS)
        return -EINVAL;
    struct metrics_slot *s = aligned_alloc(CK_MD_CACHELINE, sizeof(*s) * n);
    if (!s)
        return -ENOMEM;
    memset(s, 0, sizeof(*s) * n);
    slots = s;
    nslots = n;
    memset(&P, 0, sizeof(P));
    memset(&PR, 0, sizeof(PR));
    build_status_map();
    PR.start_unix_ms = process_start_unix_ms();
    metrics_process_refresh();
    return 0;
}

void metrics_fini(void)
{
    free(slots);
    slots = NULL;
    nslots = 0;
}

struct metrics_slot *metrics_slot(unsigned w)
{
    return w < nslots ? &slots[w] : NULL;
}

/* ---------------------------------------------------------------- worker hot path */

static unsigned bucket_of(const struct bucket *b, unsigned nb, uint64_t ns)
{
    unsigned i = 0;
    while (i < nb && ns > b[i].le_ns)
        i++;
    return i;
}

void metrics_slot_request(struct metrics_slot *m, unsigned route, int status, bool observe,
                          uint64_t latency_ns)
{
    if (!m)
        return;
    if (route >= ROUTE__COUNT)
        route = ROUTE_NONE;
    unsigned si = status >= 0 && status < 600 ? status_idx[status] : STATUS_OTHER;
    uint64_t *c = &m->req[route][si];
    ck_pr_store_64(c, *c + 1);
    if (!observe)
        return;
    unsigned b = bucket_of(lat_buckets, NLAT, latency_ns);
    ck_pr_store_64(&m->lat[route][b], m->lat[route][b] + 1);
    ck_pr_store_64(&m->lat_sum_us[route], m->lat_sum_us[route] + latency_ns / 1000u);
}

void metrics_slot_tick(struct metrics_slot *m, uint64_t now_ms)
{
    if (m)
        ck_pr_store_64(&m->tick_ms, now_ms);
}

unsigned metrics_workers_stale(uint64_t now_ms, uint64_t since_ms, uint64_t max_age_ms)
{
    unsigned stale = 0;
    for (unsigned i = 0; i < nslots; i++) {
        uint64_t t = ck_pr_load_64(&slots[i].tick_ms);
        if (t < since_ms)
            t = since_ms;
        if (now_ms > t && now_ms - t > max_age_ms)
            stale++;
    }
    return stale;
}

/* ---------------------------------------------------------------- other writers */

void metrics_durable_inflight_add(int64_t d)
{
    ck_pr_add_64(&P.durable_inflight, (uint64_t)d);
}

void metrics_set_persistence(bool enabled)
{
    ck_pr_store_64(&P.enabled, enabled);
}

void metrics_flush_observe(double seconds)
{
    uint64_t ns = seconds > 0 ? (uint64_t)(seconds * 1e9 + 0.5) : 0;
    unsigned b = bucket_of(flush_buckets, NFLUSH, ns);
    ck_pr_store_64(&P.flush[b], P.flush[b] + 1);
    ck_pr_store_64(&P.flush_sum_us, P.flush_sum_us + ns / 1000u);
    ck_pr_store_64(&P.last_flush_unix_ms, clock_ms(CLOCK_REALTIME));
}

void metrics_flush_failed(void)
{
    ck_pr_store_64(&P.flush_failures, P.flush_failures + 1);
}

void metrics_set_pg_up(bool up)
{
    ck_pr_store_64(&P.pg_up, up);
}

void metrics_set_pending_keys(uint64_t n)
{
    ck_pr_store_64(&P.pending_keys, n);
}

void metrics_set_persist_lag_ms(uint64_t ms)
{
    ck_pr_store_64(&P.lag_ms, ms);
}

void metrics_flush_rejected(uint64_t n)
{
    ck_pr_store_64(&P.rejected, P.rejected + n);
}

void metrics_tenant_key_failure(unsigned reason)
{
    if (reason > TNK_OK && reason < TNK__COUNT)
        ck_pr_add_64(&key_failures[reason], 1);
}

void metrics_tn_lookups(uint64_t n)
{
    ck_pr_store_64(&P.tn_lookups, P.tn_lookups + n);
    ck_pr_store_64(&P.tn_lookup_queries, P.tn_lookup_queries + 1);
}

void metrics_tn_cache(uint64_t evictions, uint64_t cached, uint64_t t_evictions, uint64_t t_cached)
{
    ck_pr_store_64(&P.tn_evictions, evictions);
    ck_pr_store_64(&P.tn_cached, cached);
    ck_pr_store_64(&P.tn_t_evictions, t_evictions);
    ck_pr_store_64(&P.tn_t_cached, t_cached);
}

void metrics_tn_feed(uint64_t rows)
{
    ck_pr_store_64(&P.tn_feed_rows, P.tn_feed_rows + rows);
}

/* Open descriptors = entries of /proc/self/fd minus ".", ".." and the one opendir holds. */
static int count_fds(uint64_t *out)
{
    DIR *d = opendir("/proc/self/fd");
    if (!d)
        return -errno;
    uint64_t n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    *out = n ? n - 1 : 0;
    return 0;
}

int metrics_process_refresh(void)
{
    int rc = 0;
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) == 0) {
        uint64_t us = (uint64_t)ru.ru_utime.tv_sec * 1000000u + (uint64_t)ru.ru_utime.tv_usec +
                      (uint64_t)ru.ru_stime.tv_sec * 1000000u + (uint64_t)ru.ru_stime.tv_usec;
        ck_pr_store_64(&PR.cpu_us, us);
    } else {
        rc = -errno;
    }
    /* statm: "size resident shared text lib data dt", in pages */
    char buf[256];
    int fd = open("/proc/self/statm", O_RDONLY | O_CLOEXEC);
    ssize_t n = fd >= 0 ? read(fd, buf, sizeof(buf) - 1) : -1;
    if (n > 0) {
        buf[n] = 0;
        unsigned long long size = 0, res = 0;
        uint64_t page = (uint64_t)sysconf(_SC_PAGESIZE);
        if (sscanf(buf, "%llu %llu", &size, &res) == 2) {
            ck_pr_store_64(&PR.vsize_bytes, size * page);
            ck_pr_store_64(&PR.rss_bytes, res * page);
        }
    } else if (!rc) {
        rc = fd < 0 || n < 0 ? -errno : -EIO;
    }
    if (fd >= 0)
        close(fd);
    uint64_t nfd;
    int r = count_fds(&nfd);
    if (r == 0)
        ck_pr_store_64(&PR.open_fds, nfd);
    else if (!rc)
        rc = r;
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0)
        ck_pr_store_64(&PR.max_fds, rl.rlim_cur);
    if (getrlimit(RLIMIT_AS, &rl) == 0)
        ck_pr_store_64(&PR.max_vsize, rl.rlim_cur == RLIM_INFINITY ? UINT64_MAX : rl.rlim_cur);
    return rc;
}

/* ---------------------------------------------------------------- rendering */

struct out {
    char *buf;
    size_t cap, len; /* len may pass cap: it is then the length needed */
};

__attribute__((format(printf, 2, 3))) static void outf(struct out *o, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    size_t room = o->len < o->cap ? o->cap - o->len : 0;
    int n = vsnprintf(room ? o->buf + o->len : NULL, room, fmt, ap);
    va_end(ap);
    if (n > 0)
        o->len += (size_t)n;
}

static void family(struct out *o, const char *name, const char *type, const char *help)
{
    outf(o, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void u64_metric(struct out *o, const char *name, const char *type, const char *help,
                       uint64_t v)
{
    family(o, name, type, help);
    outf(o, "%s %llu\n", name, (unsigned long long)v);
}

/* The series of one histogram from non-cumulative counts; _count is the +Inf bucket so the two
   always agree even while writers run. labels: "" or `route="event",` (with the comma). */
static void histogram_series(struct out *o, const char *name, const char *labels,
                             const struct bucket *b, unsigned nb, const uint64_t *counts,
                             uint64_t sum_us)
{
    uint64_t cum = 0;
    for (unsigned i = 0; i < nb; i++) {
        cum += counts[i];
        outf(o, "%s_bucket{%sle=\"%s\"} %llu\n", name, labels, b[i].le, (unsigned long long)cum);
    }
    cum += counts[nb];
    size_t ll = strlen(labels);
    outf(o, "%s_bucket{%sle=\"+Inf\"} %llu\n", name, labels, (unsigned long long)cum);
    /* _sum and _count carry the labels without the trailing comma */
    outf(o, "%s_sum%s%.*s%s %llu.%06llu\n", name, ll ? "{" : "", (int)(ll ? ll - 1 : 0), labels,
         ll ? "}" : "", (unsigned long long)(sum_us / 1000000u),
         (unsigned long long)(sum_us % 1000000u));
    outf(o, "%s_count%s%.*s%s %llu\n", name, ll ? "{" : "", (int)(ll ? ll - 1 : 0), labels,
         ll ? "}" : "", (unsigned long long)cum);
}

static void histogram(struct out *o, const char *name, const char *help, const struct bucket *b,
                      unsigned nb, const uint64_t *counts, uint64_t sum_us)
{
    family(o, name, "histogram", help);
    histogram_series(o, name, "", b, nb, counts, sum_us);
}

static uint64_t sum_slots(size_t off)
{
    uint64_t t = 0;
    for (unsigned i = 0; i < cnt_count(); i++)
        t += ck_pr_load_64((uint64_t *)((char *)cnt_slot(i) + off));
    return t;
}
#define CNT_SUM(field) sum_slots(offsetof(struct cnt_slot, field))

static void render_requests(struct out *o)
{
    family(o, "ringcount_http_requests_total", "counter",
           "HTTP responses sent, by route and status code (route \"unknown\": no route matched "
           "or the request was refused before routing).");
    for (unsigned r = 0; r < ROUTE__COUNT; r++) {
        for (unsigned k = 0; k <= MAX_STATUS; k++) {
            if (k >= nstatus && k != STATUS_OTHER)
                continue;
            uint64_t t = 0;
            for (unsigned w = 0; w < nslots; w++)
                t += ck_pr_load_64(&slots[w].req[r][k]);
            if (!t)
                continue;
            char code[8];
            if (k == STATUS_OTHER)
                memcpy(code, "other", 6);
            else
                snprintf(code, sizeof(code), "%u", status_code[k]);
            outf(o, "ringcount_http_requests_total{route=\"%s\",code=\"%s\"} %llu\n",
                 route_name((enum route_id)r), code, (unsigned long long)t);
        }
    }
    family(o, "ringcount_http_request_duration_seconds", "histogram",
           "Time from a routed request's first byte to its response being queued, by route; "
           "both ends read from CLOCK_MONOTONIC once per event-loop batch.");
    for (unsigned r = 0; r < ROUTE__COUNT; r++) {
        uint64_t lat[NLAT + 1] = {0}, sum_us = 0, n = 0;
        for (unsigned w = 0; w < nslots; w++) {
            for (unsigned b = 0; b <= NLAT; b++)
                lat[b] += ck_pr_load_64(&slots[w].lat[r][b]);
            sum_us += ck_pr_load_64(&slots[w].lat_sum_us[r]);
        }
        for (unsigned b = 0; b <= NLAT; b++)
            n += lat[b];
        if (!n)
            continue; /* a route never observed has no series (like the request counters) */
        char labels[64];
        snprintf(labels, sizeof(labels), "route=\"%s\",", route_name((enum route_id)r));
        histogram_series(o, "ringcount_http_request_duration_seconds", labels, lat_buckets, NLAT,
                         lat, sum_us);
    }
}

static void render_server(struct out *o)
{
    family(o, "ringcount_build_info", "gauge", "Version of the running ringcount binary.");
    outf(o, "ringcount_build_info{version=\"%s\"} 1\n", RINGCOUNT_VERSION);
    u64_metric(o, "ringcount_workers", "gauge", "Worker threads (one io_uring each).", nslots);
    struct cnt_snapshot snap;
    cnt_snapshot(&snap);
    u64_metric(o, "ringcount_events_total", "counter",
               "Events accepted by POST /event (back to 0 after POST /reset).", snap.events);
    u64_metric(o, "ringcount_unique_users", "gauge", "Distinct userIds stored.", snap.users);
    u64_metric(o, "ringcount_users_overflow_total", "counter",
               "New userIds not stored because --max-users was reached.", snap.users_overflow);
    u64_metric(o, "ringcount_connections_open", "gauge", "Open client connections.",
               CNT_SUM(conns_open));
    u64_metric(o, "ringcount_connections_accepted_total", "counter",
               "Client connections accepted.", CNT_SUM(conns_accepted));
    family(o, "ringcount_connections_rejected_total", "counter",
           "Client connections refused at accept, by reason (max_connections: 503 and close).");
    outf(o, "ringcount_connections_rejected_total{reason=\"max_connections\"} %llu\n",
         (unsigned long long)CNT_SUM(conns_rejected));
    u64_metric(o, "ringcount_io_uring_cq_overflows_total", "counter",
               "Event-loop batches that found the io_uring completion queue overflowed.",
               CNT_SUM(cq_overflows));
    u64_metric(o, "ringcount_io_uring_recv_enobufs_total", "counter",
               "Receives re-armed because every provided buffer was in use (ENOBUFS).",
               CNT_SUM(enobufs));
    family(o, "ringcount_tenant_key_failures_total", "counter",
           "Requests refused for their tenant key, by reason (unknown, bad_secret, expired, "
           "revoked, wrong_tenant, scope).");
    for (unsigned r = TNK_OK + 1; r < TNK__COUNT; r++)
        outf(o, "ringcount_tenant_key_failures_total{reason=\"%s\"} %llu\n",
             tnk_result_name((enum tnk_result)r),
             (unsigned long long)ck_pr_load_64(&key_failures[r]));
}

static void render_persistence(struct out *o)
{
    family(o, "ringcount_durable_requests_inflight", "gauge",
           "Durable requests waiting for their PostgreSQL commit.");
    int64_t inflight = (int64_t)ck_pr_load_64(&P.durable_inflight);
    outf(o, "ringcount_durable_requests_inflight %lld\n", (long long)(inflight < 0 ? 0 : inflight));
    u64_metric(o, "ringcount_persistence_enabled", "gauge",
               "1 if a database is configured (--db), 0 when running memory-only.",
               ck_pr_load_64(&P.enabled));
    u64_metric(o, "ringcount_pg_up", "gauge",
               "1 while PostgreSQL is connected and no unflushed data is older than "
               "--ready-max-lag-ms.",
               ck_pr_load_64(&P.pg_up));
    family(o, "ringcount_persist_lag_seconds", "gauge",
           "Age of the oldest data not yet committed to PostgreSQL (0: nothing waiting).");
    uint64_t lag = ck_pr_load_64(&P.lag_ms);
    outf(o, "ringcount_persist_lag_seconds %llu.%03llu\n", (unsigned long long)(lag / 1000),
         (unsigned long long)(lag % 1000));
    u64_metric(o, "ringcount_flush_rejected_keys_total", "counter",
               "Keys that failed alone in repeated flushes and went to the rc_rejected table.",
               ck_pr_load_64(&P.rejected));
    u64_metric(o, "ringcount_tenant_lookups_total", "counter",
               "Tenant-cache misses looked up in PostgreSQL.", ck_pr_load_64(&P.tn_lookups));
    u64_metric(o, "ringcount_tenant_lookup_queries_total", "counter",
               "Queries those lookups took (many misses share one).",
               ck_pr_load_64(&P.tn_lookup_queries));
    u64_metric(o, "ringcount_tenant_cache_counters", "gauge",
               "Counters in this node's cache (--counter-cache; with --db).",
               ck_pr_load_64(&P.tn_cached));
    u64_metric(o, "ringcount_tenant_cache_evictions_total", "counter",
               "Counters evicted from the full cache, least recently used first (with --db).",
               ck_pr_load_64(&P.tn_evictions));
    u64_metric(o, "ringcount_tenant_cache_tenants", "gauge",
               "Tenants in this node's cache (--tenant-cache; with --db).",
               ck_pr_load_64(&P.tn_t_cached));
    u64_metric(o, "ringcount_tenant_cache_tenant_evictions_total", "counter",
               "Tenants evicted from the full cache, least recently used first (with --db).",
               ck_pr_load_64(&P.tn_t_evictions));
    u64_metric(o, "ringcount_tenant_feed_rows_total", "counter",
               "Change-feed rows that moved a cached tenant, counter or key (written here or elsewhere).",
               ck_pr_load_64(&P.tn_feed_rows));
    u64_metric(o, "ringcount_pending_keys", "gauge",
               "Distinct keys holding deltas not yet flushed to PostgreSQL.",
               ck_pr_load_64(&P.pending_keys));
    u64_metric(o, "ringcount_flush_failures_total", "counter",
               "Flush transactions that failed or whose COMMIT outcome was unknown.",
               ck_pr_load_64(&P.flush_failures));
    uint64_t fl[NFLUSH + 1];
    for (unsigned b = 0; b <= NFLUSH; b++)
        fl[b] = ck_pr_load_64(&P.flush[b]);
    histogram(o, "ringcount_flush_duration_seconds",
              "Duration of committed flush transactions.", flush_buckets, NFLUSH, fl,
              ck_pr_load_64(&P.flush_sum_us));
    family(o, "ringcount_last_flush_timestamp_seconds", "gauge",
           "Unix time of the last committed flush (absent before the first).");
    uint64_t last = ck_pr_load_64(&P.last_flush_unix_ms);
    if (last)
        outf(o, "ringcount_last_flush_timestamp_seconds %llu.%03llu\n",
             (unsigned long long)(last / 1000u), (unsigned long long)(last % 1000u));
}

static void render_process(struct out *o)
{
    uint64_t cpu = ck_pr_load_64(&PR.cpu_us);
    family(o, "process_cpu_seconds_total", "counter", "Total user and system CPU time spent in seconds.");
    outf(o, "process_cpu_seconds_total %llu.%06llu\n", (unsigned long long)(cpu / 1000000u),
         (unsigned long long)(cpu % 1000000u));
    u64_metric(o, "process_open_fds", "gauge", "Number of open file descriptors.",
               ck_pr_load_64(&PR.open_fds));
    u64_metric(o, "process_max_fds", "gauge", "Maximum number of open file descriptors.",
               ck_pr_load_64(&PR.max_fds));
    u64_metric(o, "process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes.",
               ck_pr_load_64(&PR.vsize_bytes));
    family(o, "process_virtual_memory_max_bytes", "gauge",
           "Maximum amount of virtual memory available in bytes.");
    uint64_t vmax = ck_pr_load_64(&PR.max_vsize);
    if (vmax == UINT64_MAX)
        outf(o, "process_virtual_memory_max_bytes -1\n");
    else
        outf(o, "process_virtual_memory_max_bytes %llu\n", (unsigned long long)vmax);
    u64_metric(o, "process_resident_memory_bytes", "gauge", "Resident memory size in bytes.",
               ck_pr_load_64(&PR.rss_bytes));
    family(o, "process_start_time_seconds", "gauge",
           "Start time of the process since unix epoch in seconds.");
    outf(o, "process_start_time_seconds %llu.%03llu\n",
         (unsigned long long)(PR.start_unix_ms / 1000u), (unsigned long long)(PR.start_unix_ms % 1000u));
}

size_t metrics_render(char *buf, size_t cap)
{
    struct out o = {.buf = buf, .cap = cap, .len = 0};
    render_requests(&o);
    render_server(&o);
    render_persistence(&o);
    render_process(&o);
    if (cap)
        buf[o.len < cap ? o.len : cap - 1] = 0;
    return o.len;
}
