/* rb_args — see rb_args.h. */
#include "rb_args.h"

#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

const char *const rb_args_scenarios[4] = {"event", "increment", "counter", "raw"};

const char rb_args_usage[] =
    "usage: ringbench {event|increment|counter|raw} URL [-c CONNS] [-d SECONDS | -n REQUESTS] "
    "[-p DEPTH] [-R RATE] [-t THREADS] [-m METHOD] [-b BODY] [-H 'Name: value']... [--half] "
    "[--no-verify] [--timeout SECONDS] [--json] [--out PREFIX] [--rate-sweep R1,R2,...] "
    "[--server-pid PID] [--spread N [--spread-seq]]\n";

static const char HELP[] =
    "  event URL      POST the 1MRC pattern to URL (e.g. http://127.0.0.1:8080/event), then\n"
    "                 check GET /stats exactly against what was acknowledged (--half: values\n"
    "                 <i%1000>.5)\n"
    "  increment URL  POST URL (/api/v1/increment or /api/v2/increment); checks GET URL's count\n"
    "                 (a URL without a path: /event for event, /api/v2/increment for increment)\n"
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
    "  --out PREFIX   write PREFIX.csv and PREFIX.svg (per-second throughput and p99)\n"
    "  --rate-sweep R1,R2,...  one open-loop run of -d seconds per offered rate, then a table\n"
    "                 of offered and achieved req/s, p50/p99 and (--server-pid) server CPU per\n"
    "                 request; with --out also PREFIX-sweep.svg\n"
    "  --server-pid PID  the server's process: its CPU time (all threads, user + system) is\n"
    "                 read from its CPU-time clock (clock_getcpuclockid), else /proc\n"
    "  --spread N     raw: {n} in the URL (once) becomes a number in [0, N) per request, as 12\n"
    "                 hex digits (zero-padded), spread by a hash of the request's number\n"
    "  --spread-seq   with --spread: request i takes i mod N instead (distinct up to N)\n";

static void usage_exit(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void usage_exit(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "ringbench: ");
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n%s", rb_args_usage);
    exit(2);
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

static void add_header(struct rb_opts *o, const char *h)
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

/* Options that constrain others, checked once all are read. */
struct seen {
    bool d, m, b;
};

/* Apply option ch (getopt_long's value) with optarg; exits on a bad value. */
static void set_option(struct rb_opts *o, int ch, char **argv, struct seen *seen)
{
    uint64_t v;
    switch (ch) {
    case 'c':
        if (!parse_u64(optarg, 1, 1000000, &v))
            usage_exit("-c wants 1..1000000 connections, got '%s'", optarg);
        o->conns = (uint32_t)v;
        break;
    case 'd':
        if (!parse_pos_double(optarg, &o->duration_s) || o->duration_s > 1e7)
            usage_exit("-d wants a positive number of seconds, got '%s'", optarg);
        seen->d = true;
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
        seen->m = true;
        if (!*optarg || strpbrk(optarg, " \t\r\n"))
            usage_exit("-m wants a method token, got '%s'", optarg);
        break;
    case 'b':
        o->body = optarg;
        seen->b = true;
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
    case 'S': {
        char *save = NULL, *list = strdup(optarg), *tok;
        if (!list) usage_exit("out of memory");
        o->nsweep = 0;
        for (tok = strtok_r(list, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
            double r;
            if (o->nsweep == RB_SWEEP_MAX || !parse_pos_double(tok, &r) || r > 1e9)
                usage_exit("--rate-sweep wants up to %d positive rates R1,R2,..., got '%s'",
                           RB_SWEEP_MAX, optarg);
            o->sweep[o->nsweep++] = r;
        }
        free(list);
        if (!o->nsweep) usage_exit("--rate-sweep wants at least one rate");
        break;
    }
    case 'P':
        if (!parse_u64(optarg, 1, 4194304, &v))
            usage_exit("--server-pid wants a process id, got '%s'", optarg);
        o->server_pid = (int)v;
        break;
    case 'N':
        /* 12 hex digits hold numbers below 2^48 */
        if (!parse_u64(optarg, 1, 1ull << 48, &o->spread))
            usage_exit("--spread wants 1..2^48 numbers, got '%s'", optarg);
        break;
    case 'Q':
        o->spread_seq = true;
        break;
    case 'T':
        if (!parse_pos_double(optarg, &o->timeout_s) || o->timeout_s > 3600)
            usage_exit("--timeout wants 0 < seconds <= 3600, got '%s'", optarg);
        break;
    case 'h':
        printf("%s%s", rb_args_usage, HELP);
        exit(0);
    case ':':
        usage_exit("option %s needs a value", argv[optind - 1]);
        break;
    default:
        usage_exit("unknown option '%s'", argv[optind - 1]);
    }
}

/* The scenario and URL after the options, and the rules between options; exits on a
   violation. */
static void check_args(int argc, char **argv, struct rb_opts *o, const struct seen *seen)
{
    if (argc - optind < 2)
        usage_exit("%s", argc - optind == 0 ? "missing SCENARIO and URL" : "missing URL");
    if (argc - optind > 2) usage_exit("unexpected argument '%s'", argv[optind + 2]);
    const char *sc = argv[optind];
    size_t k;
    for (k = 0; k < 4 && strcmp(sc, rb_args_scenarios[k]) != 0; k++)
        ;
    if (k == 4) usage_exit("unknown scenario '%s' (event, increment, counter, raw)", sc);
    o->scen = (enum rb_scenario)k;
    if (seen->d && o->nreq) usage_exit("-d and -n are exclusive");
    if (o->nreq) o->duration_s = 0;
    if (o->threads > o->conns) usage_exit("-t must not exceed -c (each thread needs a connection)");
    if ((o->conns + o->threads - 1) / o->threads > 65535)
        usage_exit("at most 65535 connections per thread; add threads");
    if ((seen->m || seen->b) && o->scen != RB_RAW)
        usage_exit("-m and -b apply to the raw scenario only");
    if (o->half && o->scen != RB_EVENT) usage_exit("--half applies to the event scenario only");
    if ((o->spread || o->spread_seq) && o->scen != RB_RAW)
        usage_exit("--spread applies to the raw scenario only");
    if (o->spread_seq && !o->spread) usage_exit("--spread-seq needs --spread N");
    if (o->no_verify && o->scen == RB_RAW) usage_exit("--no-verify: raw never verifies");
    if (o->nsweep && (o->rate || o->nreq))
        usage_exit("--rate-sweep sets the rate of each run: no -R, and runs are timed (-d)");
    o->url_s = argv[optind + 1];
    char err[256];
    if (rb_client_parse_url(o->url_s, &o->url, err, sizeof(err)) < 0) usage_exit("%s", err);
    /* one placeholder: the request is built once and its digits patched at one offset */
    const char *ph = strstr(o->url.path, "{n}");
    if (o->spread && (!ph || strstr(ph + 3, "{n}")))
        usage_exit("--spread wants {n} once in the URL's path, got '%s'", o->url_s);
    /* A bare http://host:port means the scenario's own route: nothing these scenarios send is
       served at / (it was 200,000 errors of 405 in a row). */
    if (strcmp(o->url.path, "/") == 0 && (o->scen == RB_EVENT || o->scen == RB_INCREMENT))
        snprintf(o->url.path, sizeof(o->url.path), "%s",
                 o->scen == RB_EVENT ? "/event" : "/api/v2/increment");
    if (!o->method) o->method = o->body ? "POST" : "GET";
}

void rb_args_parse(int argc, char **argv, struct rb_opts *o)
{
    static const struct option lo[] = {
        {"json", no_argument, NULL, 'J'},
        {"out", required_argument, NULL, 'O'},
        {"half", no_argument, NULL, 'F'},
        {"timeout", required_argument, NULL, 'T'},
        {"help", no_argument, NULL, 'h'},
        {"no-verify", no_argument, NULL, 'V'},
        {"rate-sweep", required_argument, NULL, 'S'},
        {"server-pid", required_argument, NULL, 'P'},
        {"spread", required_argument, NULL, 'N'},
        {"spread-seq", no_argument, NULL, 'Q'},
        {NULL, 0, NULL, 0},
    };
    struct seen seen = {0};
    memset(o, 0, sizeof(*o));
    o->conns = 64;
    o->depth = 1;
    o->threads = 1;
    o->duration_s = 10;
    o->timeout_s = 5;
    opterr = 0;
    int ch;
    while ((ch = getopt_long(argc, argv, ":c:d:n:p:R:t:m:b:H:h", lo, NULL)) != -1)
        set_option(o, ch, argv, &seen);
    check_args(argc, argv, o, &seen);
}

void rb_args_free(struct rb_opts *o)
{
    free(o->headers);
    o->headers = NULL;
    o->headers_len = 0;
}
