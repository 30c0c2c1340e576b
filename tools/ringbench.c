/*
 * ringbench — the io_uring HTTP load generator that verifies what it measures (SPEC §5).
 *
 * This file: the CLI, the scenarios (request bytes, what counts as success, the /stats and
 * counter verification), the worker threads (one bench_run() each, pinned), per-second
 * accounting and the progress line. The io_uring engine is uring/bench.c; parsing, histogram
 * and output are the rb_* modules next to this file.
 *
 * Threads: main (arguments, set-up requests, progress, verification, report) and one worker
 * per -t. A worker owns everything in its struct worker; the only shared state is struct run:
 * the event sequence and stop flag (atomics) and the per-second series (mutex, taken once
 * per second per worker, never per request).
 *
 * Exit: 0 ok; 1 failed run (event/increment/counter: any error status, socket error,
 * unanswered request or verification mismatch; raw: no response at all); 2 usage error.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"
#include "decimal.h"
#include "rb_client.h"
#include "rb_hist.h"
#include "rb_report.h"
#include "rb_resp.h"

/* The 1MRC pattern (shared/bench/event.lua): request i posts
   {"userId":"user_<i % 75000>","value":<i % 1000>}; 1000 divides 75000, so (user, value)
   repeats with period 75000. */
#define EV_USERS 75000
#define EV_VALUES 1000
#define EV_BITMAP ((EV_USERS + 7) / 8)

#define STATS_BODY_MAX 65536 /* /stats is ~400 bytes; room for a verbose "server" object */
#define CTL_TIMEOUT_MS 5000  /* set-up and verification requests */
#define NSEC 1000000000ull
/* A second's progress line is printed this long after the second ended, so that every
   worker (they tick every 10 ms) has published it. */
#define PUBLISH_GRACE_NS 150000000ull

static const char USAGE[] =
    "usage: ringbench {event|increment|counter|raw} URL [-c CONNS] [-d SECONDS | -n REQUESTS] "
    "[-p DEPTH] [-R RATE] [-t THREADS] [-m METHOD] [-b BODY] [-H 'Name: value']... [--half] "
    "[--no-verify] [--timeout SECONDS] [--json] [--out PREFIX]\n";

static const char HELP[] =
    "  event URL      POST the 1MRC pattern to URL (e.g. http://127.0.0.1:8080/event), then\n"
    "                 check GET /stats exactly against what was acknowledged (--half: values\n"
    "                 <i%1000>.5)\n"
    "  increment URL  POST URL (/api/v1/increment or /api/v2/increment); checks GET URL's count\n"
    "  counter URL    create a tenant and a counter (admin key from RINGCOUNT_ADMIN_KEY) under\n"
    "                 URL's path, POST .../counters/{cid}/inc, check the counter's value\n"
    "  raw URL        any request: -m METHOD (GET; POST with -b), -b BODY, -H 'Name: value'\n"
    "  -c CONNS       connections in total (64)       -t THREADS  threads, pinned (1)\n"
    "  -d SECONDS     duration (10)                   -n REQUESTS total requests instead\n"
    "  -p DEPTH       pipelining: each connection sends DEPTH requests in one write and the\n"
    "                 next DEPTH once all are answered (open loop: at most DEPTH outstanding)\n"
    "  -R RATE        open loop: RATE req/s in total, latency from intended send times\n"
    "  --no-verify    event/increment/counter: send the scenario's requests, accept any 2xx and\n"
    "                 skip the checks (to load a server without the API, e.g. nginx)\n"
    "  --timeout S    a connection without a response for S seconds is dropped; also the\n"
    "                 wait for outstanding responses after the end (5)\n"
    "  --json         last stdout line: one JSON object with the results\n"
    "  --out PREFIX   write PREFIX.csv and PREFIX.svg (per-second throughput and p99)\n";

enum scen { SC_EVENT, SC_INCREMENT, SC_COUNTER, SC_RAW };
static const char *const SCEN_NAMES[] = {"event", "increment", "counter", "raw"};

struct opts {
    enum scen scen;
    const char *url_s;
    struct rb_url url;
    uint32_t conns, depth, threads;
    double duration_s; /* 0 when -n */
    uint64_t nreq;     /* 0 when -d */
    double rate;
    double timeout_s;
    const char *method, *body;
    char *headers; /* "Name: value\r\n"... from -H */
    size_t headers_len;
    bool has_host, has_ctype;
    bool json, half, no_verify;
    const char *out;
};

/* One second of the run being collected from the workers. */
struct slot {
    uint64_t sec, resp, err;
    struct rb_hist h;
};

/* Seconds [next_final, next_final + SLOTS) are open; a worker that publishes an already
   finalized second (it was stalled longer than PUBLISH_GRACE_NS) adds to the oldest open one. */
#define SLOTS 4
struct series {
    pthread_mutex_t mu;
    uint64_t next_final;
    struct slot slot[SLOTS];
    struct rb_row *rows;
    size_t nrows, cap;
};

struct run {
    const struct opts *o;
    char *req; /* raw/increment/counter: the request; event: the head up to the
                  Content-Length value */
    size_t req_len;
    uint32_t max_req; /* bytes of the largest request */
    uint16_t ok_lo, ok_hi;
    bool head_method;
    uint64_t start_ns;
    uint64_t seq;  /* event: next global request number (atomic) */
    int stop;      /* atomic: SIGINT/SIGTERM asked to stop sending */
    unsigned done; /* atomic: workers finished */
    struct series ser;
};

struct pend {
    uint64_t t;   /* intended send time (ns) */
    uint64_t seq; /* request number */
};

struct wconn {
    struct rb_resp rp;
    struct pend *q; /* FIFO of outstanding requests: HTTP/1.1 answers in order */
    uint32_t head, tail;
};

struct worker {
    struct run *run;
    int cpu;
    pthread_t th;
    int rc;
    struct bench_cfg cfg;
    struct bench_result res;
    struct wconn *wc;
    uint32_t qmask;
    uint64_t local_seq;
    uint64_t cur_sec, sec_end, sec_resp, sec_err;
    uint64_t responses, unanswered;
    uint64_t status[RB_STATUS_MAX];
    uint64_t ends[BENCH__END_COUNT];
    uint64_t acked;  /* event: 200 responses */
    dec_t acked_sum; /* event: exact sum of their values */
    uint8_t users_acked[EV_BITMAP], users_sent[EV_BITMAP];
    struct rb_hist ih;   /* the current second */
    struct rb_hist hist; /* everything published so far */
};

/* ---- small helpers ---------------------------------------------------------------------- */

static void usage_exit(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void usage_exit(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "ringbench: ");
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n%s", USAGE);
    exit(2);
}

/* Decimal digits of v into p (no NUL); returns the count. */
static inline size_t put_u32(char *p, uint32_t v)
{
    char t[10];
    size_t n = 0;
    do {
        t[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    for (size_t i = 0; i < n; i++)
        p[i] = t[n - 1 - i];
    return n;
}

static inline void bit_set(uint8_t *b, uint32_t i)
{
    b[i >> 3] |= (uint8_t)(1u << (i & 7));
}

static uint64_t popcount_bits(const uint8_t *b, size_t n)
{
    uint64_t c = 0;
    for (size_t i = 0; i < n; i++)
        c += (uint64_t)__builtin_popcount(b[i]);
    return c;
}

static bool parse_u64(const char *s, uint64_t lo, uint64_t hi, uint64_t *out)
{
    char *end;
    if (!*s || *s == '-' || *s == '+') return false;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end || v < lo || v > hi) return false;
    *out = v;
    return true;
}

static bool parse_pos_double(const char *s, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !isfinite(v) || v <= 0) return false;
    *out = v;
    return true;
}

/* ---- per-second series ------------------------------------------------------------------ */

static void series_init(struct series *s)
{
    pthread_mutex_init(&s->mu, NULL);
    for (uint64_t i = 0; i < SLOTS; i++) {
        s->slot[i].sec = i;
        rb_hist_reset(&s->slot[i].h);
    }
}

static void series_add(struct series *s, uint64_t sec, uint64_t resp, uint64_t err,
                       const struct rb_hist *h)
{
    pthread_mutex_lock(&s->mu);
    if (sec < s->next_final) sec = s->next_final;
    if (sec >= s->next_final + SLOTS)
        sec = s->next_final + SLOTS - 1; /* main is more than 3 s behind: cannot happen */
    struct slot *sl = &s->slot[sec % SLOTS];
    sl->resp += resp;
    sl->err += err;
    rb_hist_merge(&sl->h, h);
    pthread_mutex_unlock(&s->mu);
}

/* Close second next_final (window_s long); keep a row unless the window is a sliver. Returns
   the row added, or NULL. */
static const struct rb_row *series_final(struct series *s, double window_s)
{
    const struct rb_row *row = NULL;
    pthread_mutex_lock(&s->mu);
    uint64_t sec = s->next_final;
    struct slot *sl = &s->slot[sec % SLOTS];
    /* The drain after -d usually leaves a few ms in the last second: 0.1 s is the shortest
       window whose rate is still a meaningful per-second figure. */
    if (window_s >= 0.1) {
        if (s->nrows == s->cap) {
            size_t cap = s->cap ? s->cap * 2 : 64;
            struct rb_row *r = realloc(s->rows, cap * sizeof(*r));
            if (r) {
                s->rows = r;
                s->cap = cap;
            }
        }
        if (s->nrows < s->cap) {
            struct rb_row *r = &s->rows[s->nrows++];
            r->sec = (uint32_t)sec;
            r->rps = (double)sl->resp / window_s;
            r->p99_us = (double)rb_hist_percentile(&sl->h, 99) / 1000.0;
            r->errors = sl->err;
            row = r;
        }
    }
    sl->resp = sl->err = 0;
    rb_hist_reset(&sl->h);
    sl->sec = sec + SLOTS;
    s->next_final = sec + 1;
    pthread_mutex_unlock(&s->mu);
    return row;
}

static void print_progress(const struct rb_row *r)
{
    fprintf(stderr, "ringbench: [%4us] %10.0f req/s  errors %-6" PRIu64 " p99 %.3f ms\n",
            r->sec + 1, r->rps, r->errors, r->p99_us / 1000.0);
}

/* ---- worker callbacks (worker thread) --------------------------------------------------- */

static void publish(struct worker *w, uint64_t now)
{
    struct run *r = w->run;
    rb_hist_merge(&w->hist, &w->ih);
    series_add(&r->ser, w->cur_sec, w->sec_resp, w->sec_err, &w->ih);
    if (w->ih.count) rb_hist_reset(&w->ih);
    w->sec_resp = w->sec_err = 0;
    w->cur_sec = now > r->start_ns ? (now - r->start_ns) / NSEC : 0;
    w->sec_end = r->start_ns + (w->cur_sec + 1) * NSEC;
}

/* Event request seq: the head (method .. "Content-Length: "), the length, the body. */
static char *put_event(const struct run *r, char *p, uint64_t seq)
{
    char ub[10], vb[10];
    size_t ul = put_u32(ub, (uint32_t)(seq % EV_USERS)),
           vl = put_u32(vb, (uint32_t)(seq % EV_VALUES));
    bool half = r->o->half;
    uint32_t blen = (uint32_t)(27 + ul + vl + (half ? 2 : 0));
    memcpy(p, r->req, r->req_len);
    p += r->req_len;
    p += put_u32(p, blen);
    memcpy(p, "\r\n\r\n{\"userId\":\"user_", 20);
    p += 20;
    memcpy(p, ub, ul);
    p += ul;
    memcpy(p, "\",\"value\":", 10);
    p += 10;
    memcpy(p, vb, vl);
    p += vl;
    if (half) {
        memcpy(p, ".5", 2);
        p += 2;
    }
    *p++ = '}';
    return p;
}

static size_t w_fill(void *arg, uint32_t conn, char *buf, uint32_t n, uint64_t t0, uint64_t step)
{
    struct worker *w = arg;
    struct run *r = w->run;
    struct wconn *c = &w->wc[conn];
    bool ev = r->o->scen == SC_EVENT;
    uint64_t seq;
    if (ev)
        seq = __atomic_fetch_add(&r->seq, n, __ATOMIC_RELAXED);
    else
        seq = w->local_seq, w->local_seq += n;
    char *p = buf;
    for (uint32_t k = 0; k < n; k++, seq++) {
        struct pend *e = &c->q[c->tail++ & w->qmask];
        e->t = t0 + k * step;
        e->seq = seq;
        if (ev) {
            p = put_event(r, p, seq);
            bit_set(w->users_sent, (uint32_t)(seq % EV_USERS));
        } else {
            memcpy(p, r->req, r->req_len);
            p += r->req_len;
        }
    }
    return (size_t)(p - buf);
}

static uint32_t w_recv(void *arg, uint32_t conn, const char *p, size_t n, uint64_t now,
                       unsigned *flags)
{
    struct worker *w = arg;
    struct run *r = w->run;
    struct wconn *c = &w->wc[conn];
    uint32_t done = 0;
    if (now >= w->sec_end) publish(w, now);
    while (n) {
        struct rb_resp_info info;
        int rc = rb_resp_next(&c->rp, &p, &n, &info);
        if (rc == 0) break;
        if (rc < 0 || c->head == c->tail) {
            *flags |= BENCH_RECV_PROTO; /* garbage, or a response nobody asked for */
            break;
        }
        const struct pend *e = &c->q[c->head++ & w->qmask];
        rb_hist_record(&w->ih, now > e->t ? now - e->t : 0);
        w->status[info.status]++;
        w->responses++;
        w->sec_resp++;
        if (info.status < r->ok_lo || info.status > r->ok_hi)
            w->sec_err++;
        else if (r->o->scen == SC_EVENT) {
            uint64_t v = e->seq % EV_VALUES;
            w->acked++;
            w->acked_sum += (dec_t)v * DEC_SCALE + (r->o->half ? DEC_SCALE / 2 : 0);
            bit_set(w->users_acked, (uint32_t)(e->seq % EV_USERS));
        }
        done++;
        if (info.close) {
            *flags |= BENCH_RECV_CLOSE;
            break;
        }
    }
    return done;
}

static void w_closed(void *arg, uint32_t conn, enum bench_end why, uint32_t lost, uint64_t now)
{
    struct worker *w = arg;
    struct wconn *c = &w->wc[conn];
    if (now >= w->sec_end) publish(w, now);
    w->unanswered += lost;
    if (why != BENCH_END_OK) {
        uint64_t k = why == BENCH_END_TIMEOUT ? lost : 1;
        w->ends[why] += k;
        w->sec_err += k;
    }
    c->head = c->tail = 0;
    rb_resp_reset(&c->rp);
}

static void w_tick(void *arg, uint64_t now)
{
    struct worker *w = arg;
    if (now >= w->sec_end) publish(w, now);
}

static const struct bench_ops OPS = {
    .fill = w_fill, .recv = w_recv, .closed = w_closed, .tick = w_tick};

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    if (w->cpu >= 0) {
        cpu_set_t set;
        CPU_ZERO(&set);
        CPU_SET((size_t)w->cpu, &set);
        pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
    }
    w->rc = bench_run(&w->cfg, &OPS, w, &w->res);
    publish(w, bench_now_ns());
    __atomic_add_fetch(&w->run->done, 1, __ATOMIC_RELEASE);
    return NULL;
}

/* ---- arguments -------------------------------------------------------------------------- */

static void add_header(struct opts *o, const char *h)
{
    const char *colon = strchr(h, ':');
    if (!colon || colon == h || strpbrk(h, "\r\n"))
        usage_exit("-H wants 'Name: value', got '%s'", h);
    for (const char *q = h; q < colon; q++)
        if (*q <= ' ' || *q >= 127) usage_exit("-H: bad header name in '%s'", h);
    size_t nl = (size_t)(colon - h);
    if (nl == 14 && strncasecmp(h, "content-length", 14) == 0)
        usage_exit("-H: %s is computed by ringbench", "Content-Length");
    if (nl == 17 && strncasecmp(h, "transfer-encoding", 17) == 0)
        usage_exit("-H: %s is not supported", "Transfer-Encoding");
    if (nl == 4 && strncasecmp(h, "host", 4) == 0) o->has_host = true;
    if (nl == 12 && strncasecmp(h, "content-type", 12) == 0) o->has_ctype = true;
    size_t len = strlen(h);
    char *n = realloc(o->headers, o->headers_len + len + 3);
    if (!n) {
        perror("ringbench");
        exit(1);
    }
    o->headers = n;
    memcpy(o->headers + o->headers_len, h, len);
    memcpy(o->headers + o->headers_len + len, "\r\n", 3);
    o->headers_len += len + 2;
}

static void parse_args(int argc, char **argv, struct opts *o)
{
    static const struct option lo[] = {
        {"json", no_argument, NULL, 'J'},
        {"out", required_argument, NULL, 'O'},
        {"half", no_argument, NULL, 'F'},
        {"timeout", required_argument, NULL, 'T'},
        {"help", no_argument, NULL, 'h'},
        {"no-verify", no_argument, NULL, 'V'},
        {NULL, 0, NULL, 0},
    };
    uint64_t v;
    bool have_d = false, have_m = false, have_b = false;
    memset(o, 0, sizeof(*o));
    o->conns = 64;
    o->depth = 1;
    o->threads = 1;
    o->duration_s = 10;
    o->timeout_s = 5;
    opterr = 0;
    int ch;
    while ((ch = getopt_long(argc, argv, ":c:d:n:p:R:t:m:b:H:h", lo, NULL)) != -1) {
        switch (ch) {
        case 'c':
            if (!parse_u64(optarg, 1, 1000000, &v))
                usage_exit("-c wants 1..1000000 connections, got '%s'", optarg);
            o->conns = (uint32_t)v;
            break;
        case 'd':
            if (!parse_pos_double(optarg, &o->duration_s) || o->duration_s > 1e7)
                usage_exit("-d wants a positive number of seconds, got '%s'", optarg);
            have_d = true;
            break;
        case 'n':
            if (!parse_u64(optarg, 1, UINT64_MAX / 2, &o->nreq))
                usage_exit("-n wants a positive request count, got '%s'", optarg);
            break;
        case 'p':
            if (!parse_u64(optarg, 1, 4096, &v))
                usage_exit("-p wants a depth of 1..4096, got '%s'", optarg);
            o->depth = (uint32_t)v;
            break;
        case 'R':
            if (!parse_pos_double(optarg, &o->rate) || o->rate > 1e9)
                usage_exit("-R wants a positive rate (req/s), got '%s'", optarg);
            break;
        case 't':
            if (!parse_u64(optarg, 1, 1024, &v))
                usage_exit("-t wants 1..1024 threads, got '%s'", optarg);
            o->threads = (uint32_t)v;
            break;
        case 'm':
            o->method = optarg;
            have_m = true;
            if (!*optarg || strpbrk(optarg, " \t\r\n"))
                usage_exit("-m wants a method token, got '%s'", optarg);
            break;
        case 'b':
            o->body = optarg;
            have_b = true;
            break;
        case 'H':
            add_header(o, optarg);
            break;
        case 'J':
            o->json = true;
            break;
        case 'O':
            if (!*optarg) usage_exit("--out wants a file prefix");
            o->out = optarg;
            break;
        case 'F':
            o->half = true;
            break;
        case 'V':
            o->no_verify = true;
            break;
        case 'T':
            if (!parse_pos_double(optarg, &o->timeout_s) || o->timeout_s > 3600)
                usage_exit("--timeout wants 0 < seconds <= 3600, got '%s'", optarg);
            break;
        case 'h':
            printf("%s%s", USAGE, HELP);
            exit(0);
        case ':':
            usage_exit("option %s needs a value", argv[optind - 1]);
            break;
        default:
            usage_exit("unknown option '%s'", argv[optind - 1]);
        }
    }
    if (argc - optind < 2)
        usage_exit("%s", argc - optind == 0 ? "missing SCENARIO and URL" : "missing URL");
    if (argc - optind > 2) usage_exit("unexpected argument '%s'", argv[optind + 2]);
    const char *sc = argv[optind];
    size_t k;
    for (k = 0; k < 4 && strcmp(sc, SCEN_NAMES[k]) != 0; k++)
        ;
    if (k == 4) usage_exit("unknown scenario '%s' (event, increment, counter, raw)", sc);
    o->scen = (enum scen)k;
    if (have_d && o->nreq) usage_exit("-d and -n are exclusive");
    if (o->nreq) o->duration_s = 0;
    if (o->threads > o->conns) usage_exit("-t must not exceed -c (each thread needs a connection)");
    if ((o->conns + o->threads - 1) / o->threads > 65535)
        usage_exit("at most 65535 connections per thread; add threads");
    if ((have_m || have_b) && o->scen != SC_RAW)
        usage_exit("-m and -b apply to the raw scenario only");
    if (o->half && o->scen != SC_EVENT) usage_exit("--half applies to the event scenario only");
    if (o->no_verify && o->scen == SC_RAW) usage_exit("--no-verify: raw never verifies");
    o->url_s = argv[optind + 1];
    char err[256];
    if (rb_client_parse_url(o->url_s, &o->url, err, sizeof(err)) < 0) usage_exit("%s", err);
    if (!o->method) o->method = o->body ? "POST" : "GET";
}

/* ---- requests ---------------------------------------------------------------------------- */

/* "METHOD path HTTP/1.1\r\nHost: ..\r\n" + -H headers + extra; returns a malloc'd string. */
static char *build_head(const struct opts *o, const char *method, const char *path,
                        const char *extra)
{
    size_t cap = strlen(method) + strlen(path) + strlen(o->url.authority) + o->headers_len +
                 strlen(extra) + 64;
    char *s = malloc(cap);
    if (!s) return NULL;
    int n = snprintf(s, cap, "%s %s HTTP/1.1\r\n", method, path);
    if (!o->has_host) n += snprintf(s + n, cap - (size_t)n, "Host: %s\r\n", o->url.authority);
    if (o->headers_len) n += snprintf(s + n, cap - (size_t)n, "%s", o->headers);
    snprintf(s + n, cap - (size_t)n, "%s", extra);
    return s;
}

static int make_requests(struct run *r, const char *path)
{
    const struct opts *o = r->o;
    char extra[128];
    if (o->scen == SC_EVENT) {
        r->req = build_head(o, "POST", path,
                            o->has_ctype ? "Content-Length: "
                                         : "Content-Type: application/json\r\nContent-Length: ");
        if (!r->req) return -ENOMEM;
        r->req_len = strlen(r->req);
        /* + length (<= 2 digits) + CRLFCRLF + body (27 + 5 + 3 + 2 bytes) */
        r->max_req = (uint32_t)r->req_len + 2 + 4 + 37;
        return 0;
    }
    const char *method = o->scen == SC_RAW ? o->method : "POST";
    const char *body = o->scen == SC_RAW ? o->body : NULL;
    size_t blen = body ? strlen(body) : 0;
    bool want_len = body || strcmp(method, "POST") == 0 || strcmp(method, "PUT") == 0 ||
                    strcmp(method, "PATCH") == 0;
    /* a JSON-looking body gets the JSON content type, as event.lua sends */
    bool json = body && (body[0] == '{' || body[0] == '[') && !o->has_ctype;
    int n = 0;
    extra[0] = '\0';
    if (json)
        n += snprintf(extra + n, sizeof(extra) - (size_t)n, "Content-Type: application/json\r\n");
    if (want_len)
        n += snprintf(extra + n, sizeof(extra) - (size_t)n, "Content-Length: %zu\r\n", blen);
    snprintf(extra + n, sizeof(extra) - (size_t)n, "\r\n");
    char *head = build_head(o, method, path, extra);
    if (!head) return -ENOMEM;
    size_t hl = strlen(head);
    r->req = malloc(hl + blen + 1);
    if (!r->req) {
        free(head);
        return -ENOMEM;
    }
    memcpy(r->req, head, hl);
    if (blen) memcpy(r->req + hl, body, blen);
    r->req_len = hl + blen;
    r->req[r->req_len] = '\0';
    r->max_req = (uint32_t)r->req_len;
    r->head_method = strcmp(method, "HEAD") == 0;
    free(head);
    if (r->req_len > (1u << 20)) return -E2BIG;
    return 0;
}

/* ---- control requests (main thread) ----------------------------------------------------- */

struct stats {
    int64_t total, users;
    dec_t sum, avg;
    char sum_s[64], avg_s[64];
};

static int ctl(const struct opts *o, const char *method, const char *path, const char *headers,
               const char *body, char *buf, size_t cap, int *status, char *err, size_t errlen)
{
    struct rb_client_resp resp = {.body = buf, .body_cap = cap};
    int rc = rb_client_request(&o->url, method, path, headers, body, CTL_TIMEOUT_MS, &resp);
    if (rc < 0) {
        snprintf(err, errlen, "%s %s: %s", method, path, strerror(-rc));
        return rc;
    }
    *status = resp.status;
    return 0;
}

/* A JSON integer member into *out. */
static int json_i64(const char *b, size_t n, const char *key, int64_t *out)
{
    const char *v;
    size_t vl;
    int rc = rb_client_json_get(b, n, key, &v, &vl);
    return rc < 0 ? rc : dec_parse_i64(v, vl, out);
}

/* A JSON number member as an exact decimal, and its text. */
static int json_dec(const char *b, size_t n, const char *key, dec_t *out, char *txt, size_t cap)
{
    const char *v;
    size_t vl;
    int rc = rb_client_json_get(b, n, key, &v, &vl);
    if (rc < 0) return rc;
    snprintf(txt, cap, "%.*s", (int)vl, v);
    return dec_parse(v, vl, DEC_MAX, out);
}

static int get_stats(const struct opts *o, struct stats *s, char *err, size_t errlen)
{
    char *buf = malloc(STATS_BODY_MAX);
    int status = 0, rc = -ENOMEM;
    if (!buf) goto out;
    rc = ctl(o, "GET", "/stats", NULL, NULL, buf, STATS_BODY_MAX, &status, err, errlen);
    if (rc < 0) goto out;
    rc = -EPROTO;
    if (status != 200) {
        snprintf(err, errlen, "GET /stats answered %d", status);
        goto out;
    }
    size_t n = strlen(buf);
    const char *bad = NULL;
    if (json_i64(buf, n, "totalRequests", &s->total) < 0)
        bad = "totalRequests";
    else if (json_i64(buf, n, "uniqueUsers", &s->users) < 0)
        bad = "uniqueUsers";
    else if (json_dec(buf, n, "sum", &s->sum, s->sum_s, sizeof(s->sum_s)) < 0)
        bad = "sum";
    else if (json_dec(buf, n, "avg", &s->avg, s->avg_s, sizeof(s->avg_s)) < 0)
        bad = "avg";
    if (bad) {
        snprintf(err, errlen, "GET /stats: missing or malformed \"%s\" in %.200s", bad, buf);
        goto out;
    }
    rc = 0;
out:
    free(buf);
    return rc;
}

/* GET path and read integer member key. */
static int get_int(const struct opts *o, const char *path, const char *key, int64_t *out, char *err,
                   size_t errlen)
{
    char buf[4096];
    int status = 0;
    int rc = ctl(o, "GET", path, NULL, NULL, buf, sizeof(buf), &status, err, errlen);
    if (rc < 0) return rc;
    if (status != 200) {
        snprintf(err, errlen, "GET %s answered %d", path, status);
        return -EPROTO;
    }
    if (json_i64(buf, strlen(buf), key, out) < 0) {
        snprintf(err, errlen, "GET %s: no integer \"%s\" in %.200s", path, key, buf);
        return -EPROTO;
    }
    return 0;
}

/* POST (admin) and read string member key of a 201 answer into out. */
static int admin_create(const struct opts *o, const char *path, const char *body, const char *key,
                        char *out, size_t cap, char *err, size_t errlen)
{
    char buf[4096], hdr[600];
    const char *k = getenv("RINGCOUNT_ADMIN_KEY");
    int status = 0;
    snprintf(hdr, sizeof(hdr), "X-API-Key: %s\r\n", k ? k : "");
    int rc = ctl(o, "POST", path, hdr, body, buf, sizeof(buf), &status, err, errlen);
    if (rc < 0) return rc;
    if (status != 201) {
        snprintf(err, errlen, "POST %s answered %d: %.200s", path, status, buf);
        return -EPROTO;
    }
    const char *v;
    size_t vl;
    if (rb_client_json_get(buf, strlen(buf), key, &v, &vl) < 0 || vl == 0 || vl >= cap ||
        memchr(v, '\\', vl)) {
        snprintf(err, errlen, "POST %s: no \"%s\" in %.200s", path, key, buf);
        return -EPROTO;
    }
    memcpy(out, v, vl);
    out[vl] = '\0';
    return 0;
}

/* ---- verification (main thread) --------------------------------------------------------- */

struct totals {
    uint64_t responses, unanswered, acked, ok;
    dec_t acked_sum;
    uint64_t distinct_acked, distinct_sent;
};

/* Compare /stats before and after with what this run sent and got acknowledged. Prints one
   line per field; returns the number of mismatches. */
static int verify_event(const struct stats *b, const struct stats *a, const struct totals *t)
{
    int bad = 0;
    char x[DEC_FMT_MAX], y[DEC_FMT_MAX], z[DEC_FMT_MAX];
    int64_t exp_total = b->total + (int64_t)t->acked;
    if (a->total == exp_total) {
        printf("verify     totalRequests %" PRId64 " -> %" PRId64 " (+%" PRIu64
               " acknowledged): ok\n",
               b->total, a->total, t->acked);
    } else {
        printf("verify     MISMATCH totalRequests: expected %" PRId64 " (before %" PRId64
               " + %" PRIu64 " acknowledged), got %" PRId64 " (%+" PRId64 ")\n",
               exp_total, b->total, t->acked, a->total, a->total - exp_total);
        bad++;
    }
    dec_t exp_sum = b->sum + t->acked_sum;
    dec_format(exp_sum, x);
    dec_format(t->acked_sum, z);
    if (a->sum == exp_sum) {
        printf("verify     sum %s -> %s (+%s): ok\n", b->sum_s, a->sum_s, z);
    } else {
        dec_format(a->sum - exp_sum, y);
        printf("verify     MISMATCH sum: expected %s (before %s + %s acknowledged), got %s "
               "(difference %s)\n",
               x, b->sum_s, z, a->sum_s, y);
        bad++;
    }
    /* uniqueUsers: the run's users can only add to the server's set. From an empty server the
       set is exactly the distinct users acknowledged (75000-periodic, so min(acked, 75000)
       when every request was answered); otherwise before <= after <= before + distinct sent,
       and after >= the distinct users acknowledged. */
    if (b->users == 0 && t->unanswered == 0) {
        if (a->users == (int64_t)t->distinct_acked) {
            printf("verify     uniqueUsers 0 -> %" PRId64 " (exactly the distinct users "
                   "acknowledged): ok\n",
                   a->users);
        } else {
            printf("verify     MISMATCH uniqueUsers: expected %" PRIu64 ", got %" PRId64 "\n",
                   t->distinct_acked, a->users);
            bad++;
        }
    } else {
        int64_t lo = b->users > (int64_t)t->distinct_acked ? b->users : (int64_t)t->distinct_acked;
        int64_t hi = b->users + (int64_t)t->distinct_sent;
        if (a->users >= lo && a->users <= hi) {
            printf("verify     uniqueUsers %" PRId64 " -> %" PRId64 " (within %" PRId64 "..%" PRId64
                   "): ok\n",
                   b->users, a->users, lo, hi);
        } else {
            printf("verify     MISMATCH uniqueUsers: expected %" PRId64 "..%" PRId64
                   " (before %" PRId64 ", %" PRIu64 " distinct sent), got %" PRId64 "\n",
                   lo, hi, b->users, t->distinct_sent, a->users);
            bad++;
        }
    }
    dec_t exp_avg = a->total > 0 ? dec_div_round(a->sum, (uint64_t)a->total) : 0;
    dec_format(exp_avg, x);
    if (a->avg == exp_avg) {
        printf("verify     avg %s (= sum/totalRequests, half-even to 6 digits): ok\n", a->avg_s);
    } else {
        printf("verify     MISMATCH avg: expected %s (%s / %" PRId64 "), got %s\n", x, a->sum_s,
               a->total, a->avg_s);
        bad++;
    }
    return bad;
}

/* ---- main ------------------------------------------------------------------------------- */

/* What main keeps between the phases. */
struct ctx {
    struct opts o;
    struct run run;
    struct worker **ws;
    uint32_t started;
    struct stats before;
    char path[2400];  /* the load path (counter: .../inc) */
    char check[2300]; /* increment/counter: the path whose count/value is verified */
    int64_t count_before;
    bool can_verify;
};

/* Scenario set-up before the clock starts. 0, or an exit code. */
static int setup_scenario(struct ctx *x)
{
    const struct opts *o = &x->o;
    char err[512];
    snprintf(x->path, sizeof(x->path), "%s", o->url.path);
    if (o->scen == SC_EVENT && !o->no_verify) {
        if (get_stats(o, &x->before, err, sizeof(err)) < 0) {
            fprintf(stderr, "ringbench: cannot read /stats before the run: %s\n", err);
            return 1;
        }
        x->can_verify = true;
    } else if (o->scen == SC_INCREMENT && !o->no_verify) {
        /* GET /api/v1/increment is the committed count, which lags fast increments not yet
           flushed; v1 and v2 move one counter, so verify against the live count (v2). */
        static const char v1[] = "/api/v1/increment";
        size_t pl = strlen(o->url.path), vl = sizeof(v1) - 1;
        if (pl >= vl && strcmp(o->url.path + pl - vl, v1) == 0)
            snprintf(x->check, sizeof(x->check), "%.*s/api/v2/increment", (int)(pl - vl),
                     o->url.path);
        else
            snprintf(x->check, sizeof(x->check), "%s", o->url.path);
        if (get_int(o, x->check, "count", &x->count_before, err, sizeof(err)) == 0)
            x->can_verify = true;
        else
            fprintf(stderr, "ringbench: not verifying (%s)\n", err);
    } else if (o->scen == SC_COUNTER) {
        char base[2048], label[96], tp[2200], tid[128], cid[128];
        if (!getenv("RINGCOUNT_ADMIN_KEY")) {
            fprintf(stderr, "ringbench: counter needs the admin key in RINGCOUNT_ADMIN_KEY\n%s",
                    USAGE);
            return 2;
        }
        /* URL's path is a prefix for the counter API ("/" for a server at the root) */
        snprintf(base, sizeof(base), "%s", o->url.path);
        base[strcspn(base, "?")] = '\0';
        size_t bl = strlen(base);
        while (bl && base[bl - 1] == '/')
            base[--bl] = '\0';
        snprintf(label, sizeof(label), "{\"label\":\"ringbench-%d-%" PRIu64 "\"}", (int)getpid(),
                 bench_now_ns());
        snprintf(tp, sizeof(tp), "%s/tenants", base);
        if (admin_create(o, tp, label, "tenant_id", tid, sizeof(tid), err, sizeof(err)) < 0) {
            fprintf(stderr, "ringbench: creating the tenant failed: %s\n", err);
            return 1;
        }
        snprintf(tp, sizeof(tp), "%s/tenants/%s/counters", base, tid);
        if (admin_create(o, tp, "{\"label\":\"ringbench\"}", "counter_id", cid, sizeof(cid), err,
                         sizeof(err)) < 0) {
            fprintf(stderr, "ringbench: creating the counter failed: %s\n", err);
            return 1;
        }
        snprintf(x->check, sizeof(x->check), "%s/tenants/%s/counters/%s", base, tid, cid);
        if (o->no_verify)
            ; /* the counter is still created: the load needs its path */
        else if (get_int(o, x->check, "value", &x->count_before, err, sizeof(err)) == 0)
            x->can_verify = true;
        else
            fprintf(stderr, "ringbench: not verifying (%s)\n", err);
        snprintf(x->path, sizeof(x->path), "%s/inc", x->check);
        printf("counter    tenant %s counter %s\n", tid, cid);
    }
    int rc = make_requests(&x->run, x->path);
    if (rc < 0) {
        fprintf(stderr, "ringbench: building the request: %s\n", strerror(-rc));
        return 1;
    }
    return 0;
}

static int pick_cpus(int *cpus, int max)
{
    cpu_set_t set;
    int n = 0;
    if (sched_getaffinity(0, sizeof(set), &set) < 0) return 0;
    for (int c = 0; c < CPU_SETSIZE && n < max; c++)
        if (CPU_ISSET((size_t)c, &set)) cpus[n++] = c;
    return n;
}

static uint32_t conns_of(const struct opts *o, uint32_t i)
{
    return o->conns / o->threads + (i < o->conns % o->threads ? 1 : 0);
}

/* Allocate and configure the workers (does not start them). 0 or -ENOMEM. */
static int make_workers(struct ctx *x)
{
    const struct opts *o = &x->o;
    struct run *run = &x->run;
    int cpus[1024], ncpu = pick_cpus(cpus, 1024);
    uint32_t qcap = 1;
    while (qcap < o->depth)
        qcap *= 2;
    x->ws = calloc(o->threads, sizeof(*x->ws));
    if (!x->ws) return -ENOMEM;
    uint64_t q_left = o->nreq;
    for (uint32_t i = 0; i < o->threads; i++) {
        struct worker *w = calloc(1, sizeof(*w));
        if (!w) return -ENOMEM;
        x->ws[i] = w;
        uint32_t nc = conns_of(o, i);
        w->run = run;
        w->cpu = ncpu ? cpus[i % (uint32_t)ncpu] : -1;
        w->qmask = qcap - 1;
        w->wc = calloc(nc, sizeof(*w->wc));
        if (!w->wc) return -ENOMEM;
        for (uint32_t c = 0; c < nc; c++) {
            rb_resp_init(&w->wc[c].rp, run->head_method);
            w->wc[c].q = malloc(qcap * sizeof(struct pend));
            if (!w->wc[c].q) return -ENOMEM;
        }
        rb_hist_reset(&w->ih);
        rb_hist_reset(&w->hist);
        struct bench_cfg *cfg = &w->cfg;
        cfg->addr = (const struct sockaddr *)&o->url.addr;
        cfg->addrlen = o->url.addrlen;
        cfg->conns = nc;
        cfg->depth = o->depth;
        cfg->max_req_bytes = run->max_req;
        cfg->rate = o->rate * nc / o->conns; /* every connection gets the same share */
        if (o->nreq) {
            /* quotas proportional to connections; the last thread takes the remainder */
            uint64_t q = i == o->threads - 1 ? q_left : o->nreq / o->conns * nc;
            cfg->quota = q;
            q_left -= q;
        } else {
            cfg->quota = UINT64_MAX;
        }
        cfg->drain_ns = (uint64_t)(o->timeout_s * 1e9);
        cfg->timeout_ns = cfg->drain_ns;
        cfg->stop = &run->stop;
    }
    return 0;
}

/* Start the workers, print a progress line per second until all are done, join them. */
static void run_workers(struct ctx *x, const sigset_t *sigs)
{
    const struct opts *o = &x->o;
    struct run *run = &x->run;
    run->start_ns = bench_now_ns();
    for (uint32_t i = 0; i < o->threads; i++) {
        struct worker *w = x->ws[i];
        w->sec_end = run->start_ns + NSEC;
        w->cfg.start_ns = run->start_ns;
        w->cfg.end_ns = o->nreq ? UINT64_MAX : run->start_ns + (uint64_t)(o->duration_s * 1e9);
    }
    for (; x->started < o->threads; x->started++) {
        int rc = pthread_create(&x->ws[x->started]->th, NULL, worker_main, x->ws[x->started]);
        if (rc) {
            fprintf(stderr, "ringbench: pthread_create: %s\n", strerror(rc));
            __atomic_store_n(&run->stop, 1, __ATOMIC_RELAXED);
            break;
        }
    }
    int nsig = 0;
    while (__atomic_load_n(&run->done, __ATOMIC_ACQUIRE) < x->started) {
        struct timespec ts = {0, 50000000}; /* 50 ms: progress lines are at most this late */
        if (sigtimedwait(sigs, NULL, &ts) > 0) {
            if (++nsig >= 2) {
                fprintf(stderr, "ringbench: interrupted twice, exiting\n");
                _exit(130);
            }
            fprintf(stderr, "ringbench: stopping (waiting for outstanding responses)\n");
            __atomic_store_n(&run->stop, 1, __ATOMIC_RELAXED);
        }
        uint64_t now = bench_now_ns();
        while (now >= run->start_ns + (run->ser.next_final + 1) * NSEC + PUBLISH_GRACE_NS) {
            const struct rb_row *row = series_final(&run->ser, 1.0);
            if (row) print_progress(row);
        }
    }
    for (uint32_t i = 0; i < x->started; i++)
        pthread_join(x->ws[i]->th, NULL);
}

/* Verify increment/counter: the count grew by exactly the successes. false on mismatch. */
static bool verify_count(const struct ctx *x, uint64_t ok)
{
    const struct opts *o = &x->o;
    const char *key = o->scen == SC_COUNTER ? "value" : "count";
    char err[512];
    int64_t after = 0;
    if (get_int(o, x->check, key, &after, err, sizeof(err)) < 0) {
        printf("verify     FAILED: cannot read the %s after the run: %s\n", key, err);
        return false;
    }
    if (after - x->count_before == (int64_t)ok) {
        printf("verify     %s %" PRId64 " -> %" PRId64 " (+%" PRIu64 " acknowledged): ok\n", key,
               x->count_before, after, ok);
        return true;
    }
    printf("verify     MISMATCH %s: expected %" PRId64 " (before %" PRId64 " + %" PRIu64
           " acknowledged), got %" PRId64 "\n",
           key, x->count_before + (int64_t)ok, x->count_before, ok, after);
    return false;
}

static void write_out(const struct ctx *x)
{
    const struct opts *o = &x->o;
    size_t pl = strlen(o->out) + 5;
    char *p = malloc(pl), title[600];
    int rc;
    if (!p) return;
    snprintf(title, sizeof(title), "ringbench %s %s (c=%u p=%u%s)", SCEN_NAMES[o->scen], o->url_s,
             o->conns, o->depth, o->rate > 0 ? ", open loop" : "");
    snprintf(p, pl, "%s.csv", o->out);
    if ((rc = rb_report_csv(p, x->run.ser.rows, x->run.ser.nrows)) < 0)
        fprintf(stderr, "ringbench: %s: %s\n", p, strerror(-rc));
    snprintf(p, pl, "%s.svg", o->out);
    if ((rc = rb_report_svg(p, title, x->run.ser.rows, x->run.ser.nrows)) < 0)
        fprintf(stderr, "ringbench: %s: %s\n", p, strerror(-rc));
    free(p);
}

/* Sum the workers, print the report and the verification. Returns the exit code. */
static int report(struct ctx *x)
{
    const struct opts *o = &x->o;
    struct run *run = &x->run;
    struct rb_hist *hist = malloc(sizeof(*hist));
    uint64_t *status = calloc(RB_STATUS_MAX, sizeof(uint64_t));
    uint64_t ends[BENCH__END_COUNT] = {0}, sent = 0, end_ns = run->start_ns;
    uint8_t ua[EV_BITMAP] = {0}, usent[EV_BITMAP] = {0};
    struct totals t = {0};
    int code = 1;
    if (!hist || !status) {
        fprintf(stderr, "ringbench: out of memory\n");
        goto out;
    }
    rb_hist_reset(hist);
    for (uint32_t i = 0; i < x->started; i++) {
        struct worker *w = x->ws[i];
        if (w->rc < 0) {
            fprintf(stderr, "ringbench: thread %u could not set up io_uring: %s\n", i,
                    strerror(-w->rc));
            goto out;
        }
        rb_hist_merge(hist, &w->hist);
        for (unsigned s = 0; s < RB_STATUS_MAX; s++)
            status[s] += w->status[s];
        for (unsigned k = 0; k < BENCH__END_COUNT; k++)
            ends[k] += w->ends[k];
        sent += w->res.sent;
        t.responses += w->responses;
        t.unanswered += w->unanswered;
        t.acked += w->acked;
        t.acked_sum += w->acked_sum;
        for (size_t b = 0; b < EV_BITMAP; b++) {
            ua[b] |= w->users_acked[b];
            usent[b] |= w->users_sent[b];
        }
        uint64_t e = w->res.last_resp_ns > w->res.stop_ns ? w->res.last_resp_ns : w->res.stop_ns;
        if (e > end_ns) end_ns = e;
    }
    if (x->started < o->threads) goto out;
    t.distinct_acked = popcount_bits(ua, EV_BITMAP);
    t.distinct_sent = popcount_bits(usent, EV_BITMAP);
    double duration = (double)(end_ns - run->start_ns) / 1e9;
    while ((double)run->ser.next_final < duration) { /* the rest, the last one partial */
        const struct rb_row *row =
            series_final(&run->ser, fmin(1.0, duration - (double)run->ser.next_final));
        if (row) print_progress(row);
    }

    struct rb_summary sum = {
        .scenario = SCEN_NAMES[o->scen],
        .url = o->url_s,
        .threads = o->threads,
        .conns = o->conns,
        .depth = o->depth,
        .rate = o->rate,
        .duration_s = duration,
        .requests = t.responses,
        .sent = sent,
        .unanswered = t.unanswered,
        .hist = hist,
        .status = status,
        .ok_lo = run->ok_lo,
        .ok_hi = run->ok_hi,
        .ends = ends,
    };
    for (unsigned s = run->ok_lo; s <= run->ok_hi; s++)
        t.ok += status[s];
    uint64_t errors = rb_report_errors(&sum);
    rb_report_text(stdout, &sum);

    bool ok = true;
    if (o->scen == SC_EVENT && x->can_verify) {
        char err[512];
        struct stats after;
        if (get_stats(o, &after, err, sizeof(err)) < 0) {
            printf("verify     FAILED: cannot read /stats after the run: %s\n", err);
            ok = false;
        } else if (verify_event(&x->before, &after, &t) > 0) {
            ok = false;
        }
    } else if (o->scen != SC_RAW && x->can_verify) {
        ok = verify_count(x, t.ok);
    }
    if (o->scen != SC_RAW && (errors || t.unanswered)) {
        printf("verify     FAILED: %" PRIu64 " errors, %" PRIu64
               " requests unanswered (a run that verifies has neither)\n",
               errors, t.unanswered);
        ok = false;
    }
    if (o->scen != SC_RAW && t.responses == 0) {
        printf("verify     FAILED: no responses\n");
        ok = false;
    }
    if (o->scen != SC_RAW) sum.verify = !x->can_verify ? "skipped" : ok ? "ok" : "failed";
    if (o->out) write_out(x);
    if (o->json) rb_report_json(stdout, &sum);
    fflush(stdout);
    if (o->scen == SC_RAW) {
        code = t.responses > 0 ? 0 : 1;
        if (code) fprintf(stderr, "ringbench: no responses\n");
    } else {
        code = ok ? 0 : 1;
        if (code)
            fprintf(stderr, "ringbench: %s run FAILED (see the verify lines)\n",
                    SCEN_NAMES[o->scen]);
    }
out:
    free(hist);
    free(status);
    return code;
}

static void free_ctx(struct ctx *x)
{
    if (x->ws) {
        for (uint32_t i = 0; i < x->o.threads; i++) {
            struct worker *w = x->ws[i];
            if (!w) continue;
            for (uint32_t c = 0; w->wc && c < conns_of(&x->o, i); c++) {
                rb_resp_free(&w->wc[c].rp);
                free(w->wc[c].q);
            }
            free(w->wc);
            free(w);
        }
        free(x->ws);
    }
    free(x->run.req);
    free(x->run.ser.rows);
    pthread_mutex_destroy(&x->run.ser.mu);
    free(x->o.headers);
}

int main(int argc, char **argv)
{
    static struct ctx x; /* ~10 KB of paths: keep it off the stack */
    int code;
    parse_args(argc, argv, &x.o);
    x.run.o = &x.o;
    x.run.ok_lo = 200;
    /* 1MRC acknowledges with 200 only; unverified runs accept any 2xx (nginx: 204) */
    x.run.ok_hi = x.o.no_verify ? 299 : x.o.scen == SC_EVENT ? 200 : 399;
    series_init(&x.run.ser);
    signal(SIGPIPE, SIG_IGN);

    code = setup_scenario(&x);
    if (code) goto out;
    /* SIGINT/SIGTERM go to the main thread only (sigtimedwait in run_workers); the workers
       inherit the blocked mask. */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    if (make_workers(&x) < 0) {
        fprintf(stderr, "ringbench: out of memory\n");
        code = 1;
        goto out;
    }
    run_workers(&x, &sigs);
    code = report(&x);
out:
    free_ctx(&x);
    return code;
}
