/* config — see config.h. The table below is the single source of truth for every setting. */
#include "config.h"

#include "clientaddr.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <string.h>
#include <unistd.h>

#include "clientaddr.h"
#include "conninfo.h"
#include "json.h"
#include "lit.h"

#define OFF(f) offsetof(struct config, f)
#define CAP(f) sizeof(((struct config *)0)->f)
#define OPT(nm, ev, ty, fl, f, d, lo, hi, mt, h)                                               \
    { .name = (nm), .env = (ev), .type = (ty), .flags = (fl), .off = OFF(f), .cap = CAP(f),  \
      .def = (d), .min = (lo), .max = (hi), .meta = (mt), .help = (h) }
#define U32(nm, ev, f, d, lo, hi, fl, h) OPT(nm, ev, CFG_UINT32, fl, f, d, lo, hi, "N", h)

/* Burst may be up to 5x the rate bound so that the default burst (5*R) always fits. */
#define RATE_MAX 1000000u
#define BURST_MAX (5u * RATE_MAX)

const struct cfg_opt cfg_opts[] = {
    OPT("listen", "RINGCOUNT_LISTEN", CFG_LISTEN, 0, listen_host, "0.0.0.0:8080", 0, 65535,
        "ADDR:PORT",
        "listen address: numeric IPv4 or [IPv6]; \":PORT\" means 0.0.0.0; port 0 = ephemeral"),
    U32("workers", "RINGCOUNT_WORKERS", workers, "0", 0, 1024, 0,
        "worker threads, each pinned to a CPU; 0 = one per CPU of the affinity mask"),
    { .name = "db", .env = "RINGCOUNT_DB", .env_alt = "DATABASE_URL", .type = CFG_STRING,
      .flags = CFG_F_CONNINFO, .off = OFF(db), .cap = CAP(db), .def = "", .meta = "CONNINFO",
      .help = "PostgreSQL conninfo or URI (DATABASE_URL if RINGCOUNT_DB is unset); "
              "empty = memory-only" },
    U32("flush-ms", "RINGCOUNT_FLUSH_MS", flush_ms, "10", 1, 60000, 0,
        "interval between flushes of deltas to PostgreSQL"),
    U32("node-id", "RINGCOUNT_NODE_ID", node_id, "1", 1, 65535, 0,
        "this node's id in a cluster sharing one database (ledger rows are keyed by it)"),
    /* Environment only: a secret on the command line is visible to every user in ps(1). */
    OPT(NULL, "RINGCOUNT_ADMIN_KEY", CFG_STRING, CFG_F_SECRET | CFG_F_ADMINKEY, admin_key, "",
        0, 0, "KEY", "admin key itself (--admin-key-file wins); empty = admin routes disabled"),
    OPT("admin-key-file", "RINGCOUNT_ADMIN_KEY_FILE", CFG_FILE, CFG_F_ADMINKEY, admin_key, "",
        0, 0, "PATH", "file holding the admin key (trailing newlines stripped)"),
    U32("max-connections", "RINGCOUNT_MAX_CONNECTIONS", max_connections, "100000", 1,
        10000000, 0, "open connections; past it new ones get 503 and are closed"),
    U32("max-inflight", "RINGCOUNT_MAX_INFLIGHT", max_inflight, "10000", 1, 10000000, 0,
        "durable requests waiting on a commit; past it 429 OVERLOADED"),
    /* 1e6 keys = 16 flushes of 65,536 users (persist_int.h USERS_PER_FLUSH) and up to 256 MB of
       256-byte user ids held in memory: past that, shed new traffic to other nodes. */
    U32("readyz-max-pending", "RINGCOUNT_READYZ_MAX_PENDING", readyz_max_pending, "1000000", 1,
        1000000000, 0, "keys waiting for a flush to PostgreSQL; past it /readyz answers 503"),
    OPT("max-users", "RINGCOUNT_MAX_USERS", CFG_UINT64, 0, max_users, "10000000", 1,
        1000000000, "N", "distinct userIds kept for uniqueUsers; past it counted as overflow"),
    /* SPEC §2.3 store bounds; their upper bounds are tn_new's (2^24 tenants, 2^26 counters).
       Allocated at start: the id and label index tables, 4 bytes x the power of two >= 2N
       each (1 MiB for 65,536 tenants, 16 MiB for 1,000,000 counters); records in chunks as
       they are created. Deleted records still count. */
    U32("tenant-cache", "RINGCOUNT_TENANT_CACHE", tenant_cache, "65536", 1, 16777216, 0,
        "at most N tenants in memory on this node (reserved at start: 8 bytes x the power of "
        "two >= 2N, 1 MiB for 65536)"),
    U32("counter-cache", "RINGCOUNT_COUNTER_CACHE", counter_cache, "1000000", 1, 67108864, 0,
        "at most N tenant counters in memory on this node (reserved at start: 8 bytes x the "
        "power of two >= 2N, 16 MiB for 1000000)"),
    OPT("rate-limit", "RINGCOUNT_RATE_LIMIT", CFG_RATE, 0, rate_limit, "20/100", 0, RATE_MAX,
        "R[/BURST]", "per-client-IP token bucket for public routes: R/s, BURST (default 5*R); 0 = off"),
    OPT("cors-origins", "RINGCOUNT_CORS_ORIGINS", CFG_STRING, CFG_F_ORIGINS, cors_origins, "",
        0, 0, "LIST", "CORS for public routes: empty = none, \"*\", or origin,origin,..."),
    /* SPEC §2.3 rate limits per client: behind nginx or a balancer every visitor would share
       the proxy's one bucket. */
    OPT("trusted-proxies", "RINGCOUNT_TRUSTED_PROXIES", CFG_STRING, CFG_F_CIDRS, trusted_proxies,
        "", 0, 0, "LIST",
        "peers (CIDR,...) whose X-Forwarded-For / Forwarded for= names the client; empty = none"),
    U32("durable-timeout-ms", "RINGCOUNT_DURABLE_TIMEOUT_MS", durable_timeout_ms, "2000", 1,
        600000, 0, "durable request waiting for a commit longer than this → 503"),
    /* 5 s: a healthy flush of 100,000 keys takes ~0.3 s here; past 5 s the backend is stopped,
       the path black-holed or a lock is held, and a new connection is the way out. */
    U32("db-timeout-ms", "RINGCOUNT_DB_TIMEOUT_MS", db_timeout_ms, "5000", 100, 600000, 0,
        "one PostgreSQL exchange (connect, flush, check) longer than this: cancel, drop, reconnect"),
    /* 1 s: what a browser refreshing a counter notices; one indexed query a second per node
       costs PostgreSQL nothing (and an idle node one wake-up a second). */
    U32("sync-ms", "RINGCOUNT_SYNC_MS", sync_ms, "1000", 10, 60000, 0,
        "tenant counters other nodes changed (values, new, deleted) show here within this"),
    /* 90 days: a quarter of minute rows is 129,600 per busy counter at most; one partition a
       day, dropped whole (no bulk DELETE) */
    U32("history-days", "RINGCOUNT_HISTORY_DAYS", history_days, "90", 1, 3650, 0,
        "tenant counter history (minute, hour, day buckets) kept this many days in PostgreSQL"),
    U32("ready-max-lag-ms", "RINGCOUNT_READY_MAX_LAG_MS", ready_max_lag_ms, "5000", 1, 3600000,
        0, "oldest unflushed data older than this: /readyz 503, dbUp false"),
    OPT("spill-dir", "RINGCOUNT_SPILL_DIR", CFG_STRING, 0, spill_dir, "/var/lib/ringcount", 0, 0,
        "PATH", "where pending data goes when the final flush cannot finish at shutdown; replayed at start"),
    U32("header-timeout-ms", "RINGCOUNT_HEADER_TIMEOUT_MS", header_timeout_ms, "10000", 1,
        600000, 0, "whole request head must arrive within this → 408 and close"),
    U32("body-timeout-ms", "RINGCOUNT_BODY_TIMEOUT_MS", body_timeout_ms, "30000", 1, 600000, 0,
        "whole request body must arrive within this → 408 and close"),
    U32("idle-timeout-ms", "RINGCOUNT_IDLE_TIMEOUT_MS", idle_timeout_ms, "60000", 1, 3600000,
        0, "idle keep-alive connections are closed after this"),
    U32("max-line", "RINGCOUNT_MAX_LINE", max_line, "8192", 64, 1048576, 0,
        "longest request line in bytes → 414"),
    U32("max-head", "RINGCOUNT_MAX_HEAD", max_head, "16384", 256, 1048576, 0,
        "longest header block in bytes → 431"),
    U32("max-fields", "RINGCOUNT_MAX_FIELDS", max_fields, "100", 1, 128, 0,
        "most header fields per request → 431"),
    U32("max-body", "RINGCOUNT_MAX_BODY", max_body, "65536", 1, 67108864, 0,
        "largest request body in bytes → 413 (decided from the headers)"),
    U32("shutdown-timeout-ms", "RINGCOUNT_SHUTDOWN_TIMEOUT_MS", shutdown_timeout_ms, "10000", 1,
        600000, 0, "SIGTERM: drain and final flush must finish within this"),
    /* Kernel min-wait (6.12+): a worker woken by one completion waits up to this long for
       more before handling them, so a partly loaded server pays one wake-up for several
       requests (README "Batching at partial load" has the measurements). */
    U32("batch-wait-us", "RINGCOUNT_BATCH_WAIT_US", batch_wait_us, "0", 0, 10000, 0,
        "an event loop woken by one completion waits up to this for more (0 = off; kernel 6.12+)"),
    /* 32768 = IORING_MAX_ENTRIES; io_uring rounds sizes up to a power of two anyway. */
    U32("ring-entries", "RINGCOUNT_RING_ENTRIES", ring_entries, "4096", 64, 32768, CFG_F_POW2,
        "submission queue entries per worker ring"),
    /* Buffer rings must be a power of two of at most 32768 entries (io_uring_register_buf_ring). */
    U32("buf-count", "RINGCOUNT_BUF_COUNT", buf_count, "2048", 1, 32768, CFG_F_POW2,
        "provided receive buffers per worker (2048 x 4 KiB = 8 MiB: one per busy connection per batch; tiny values force -ENOBUFS, for tests)"),
    U32("buf-size", "RINGCOUNT_BUF_SIZE", buf_size, "4096", 512, 1048576, 0,
        "bytes per provided receive buffer"),
    OPT("log-level", "RINGCOUNT_LOG_LEVEL", CFG_LOGLEVEL, 0, log_level, "info", 0, 0, "LEVEL",
        "lowest level logged"),
    /* SPEC §5: the file SIGHUP re-reads (config.h); deploy/ringcount.conf is the example. */
    OPT("config-file", "RINGCOUNT_CONFIG_FILE", CFG_STRING, 0, config_file, "", 0, 0, "PATH",
        "RINGCOUNT_*=VALUE lines read at start and on SIGHUP (over the environment, under flags)"),
    /* Test hooks: hidden (no flag, not in --help), validated like every setting. */
    U32(NULL, "RINGCOUNT_DEBUG_RL_CAPACITY", debug_rl_capacity, "0", 0, 1048576, CFG_F_HIDDEN,
        "tests: rate-limit table entries per worker, so LRU eviction shows with a few dozen "
        "addresses (0 = 65536)"),
    U32(NULL, "RINGCOUNT_DEBUG_LOSE_COMMIT_MS", debug_lose_commit_ms, "0", 0, 600000,
        CFG_F_HIDDEN, "tests: hold the first counter flush's results this long, then drop the "
        "connection (src/persist.h; 0 = off)"),
    OPT(NULL, "RINGCOUNT_DEBUG_CLOCK_FILE", CFG_STRING, CFG_F_HIDDEN, debug_clock_file, "", 0, 0,
        "PATH", "tests: the history clock is the unix ms this file holds (re-read every flush)"),
};
const size_t cfg_nopts = sizeof(cfg_opts) / sizeof(cfg_opts[0]);

/* Decimal digits only: no sign, no space, no empty string; -ERANGE past UINT64_MAX. */
static int parse_u64(const char *s, uint64_t *out)
{
    uint64_t v = 0;

    if (*s == '\0')
        return -EINVAL;
    for (; *s; s++) {
        if (*s < '0' || *s > '9')
            return -EINVAL;
        unsigned d = (unsigned)(*s - '0');
        if (v > (UINT64_MAX - d) / 10)
            return -ERANGE;
        v = v * 10 + d;
    }
    *out = v;
    return 0;
}

static void *field(struct config *c, const struct cfg_opt *o)
{
    return (char *)c + o->off;
}

static const void *cfield(const struct config *c, const struct cfg_opt *o)
{
    return (const char *)c + o->off;
}

static int set_number(const struct cfg_opt *o, struct config *c, const char *v, char *why,
                      size_t wcap)
{
    uint64_t n;
    bool pow2 = o->flags & CFG_F_POW2;

    if (parse_u64(v, &n) != 0 || n < o->min || n > o->max || (pow2 && (n & (n - 1)) != 0)) {
        snprintf(why, wcap, "expected %s in %llu..%llu",
                 pow2 ? "a power of two" : "a decimal integer", (unsigned long long)o->min,
                 (unsigned long long)o->max);
        return -EINVAL;
    }
    if (o->type == CFG_UINT32) {
        uint32_t n32 = (uint32_t)n; /* max <= UINT32_MAX for every UINT32 entry (tested) */
        memcpy(field(c, o), &n32, sizeof(n32));
    } else {
        memcpy(field(c, o), &n, sizeof(n));
    }
    return 0;
}

static int parse_listen(const char *v, char host[64], uint16_t *port)
{
    const char *hs, *he, *ps;
    unsigned char addr[16];
    uint64_t p;
    int family;

    if (v[0] == '[') {
        hs = v + 1;
        he = strchr(hs, ']');
        if (!he || he[1] != ':')
            return -EINVAL;
        ps = he + 2;
        family = AF_INET6;
    } else {
        he = strrchr(v, ':');
        if (!he || memchr(v, ':', (size_t)(he - v)))
            return -EINVAL; /* no port, or an unbracketed IPv6 address */
        hs = v;
        ps = he + 1;
        family = AF_INET;
    }
    size_t hl = (size_t)(he - hs);
    if (hl >= 64)
        return -EINVAL;
    if (hl == 0) {
        if (family == AF_INET6)
            return -EINVAL; /* "[]:80" */
        strcpy(host, "0.0.0.0"); /* ":8080", like Go's net.Listen */
    } else {
        memcpy(host, hs, hl);
        host[hl] = '\0';
        if (inet_pton(family, host, addr) != 1)
            return -EINVAL;
    }
    if (parse_u64(ps, &p) != 0 || p > 65535)
        return -EINVAL;
    *port = (uint16_t)p;
    return 0;
}

static int parse_rate(const char *v, uint64_t rmax, struct cfg_rate *out)
{
    char rbuf[24];
    const char *slash = strchr(v, '/');
    size_t rl = slash ? (size_t)(slash - v) : strlen(v);
    uint64_t r, b;

    if (rl >= sizeof(rbuf))
        return -EINVAL;
    memcpy(rbuf, v, rl);
    rbuf[rl] = '\0';
    if (parse_u64(rbuf, &r) != 0 || r > rmax)
        return -EINVAL;
    if (slash) {
        if (parse_u64(slash + 1, &b) != 0 || b > 5 * rmax)
            return -EINVAL;
        if (r > 0 && b == 0)
            return -EINVAL; /* an empty bucket would refuse every request */
    } else {
        b = 5 * r;
    }
    if (r == 0)
        b = 0; /* "0" and "0/N" both mean disabled */
    out->rate = (uint32_t)r;
    out->burst = (uint32_t)b;
    return 0;
}

/* One origin as browsers send it: http(s)://host[:port], no path, no spaces, no quotes. */
static bool origin_ok(const char *s, size_t n)
{
    size_t skip;

    if (n > 7 && memcmp(s, LIT("http://")) == 0)
        skip = 7;
    else if (n > 8 && memcmp(s, LIT("https://")) == 0)
        skip = 8;
    else
        return false;
    for (size_t i = skip; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (!isalnum(ch) && !strchr("-._:[]", ch))
            return false;
    }
    return true;
}

static int check_origins(const char *v, char *why, size_t wcap)
{
    if (v[0] == '\0' || strcmp(v, "*") == 0)
        return 0;
    for (const char *p = v;;) {
        const char *comma = strchr(p, ',');
        size_t n = comma ? (size_t)(comma - p) : strlen(p);
        if (!origin_ok(p, n)) {
            snprintf(why, wcap,
                     "origin \"%.*s\" is not http(s)://host[:port]; expected empty, \"*\" or "
                     "a comma-separated list of origins (no spaces, no path)",
                     (int)(n > 200 ? 200 : n), p);
            return -EINVAL;
        }
        if (!comma)
            return 0;
        p = comma + 1;
    }
}

static int check_admin_key(const char *v, size_t n, char *why, size_t wcap)
{
    bool ok = n >= 1 && n <= 255;

    for (size_t i = 0; ok && i < n; i++)
        ok = v[i] >= 0x21 && v[i] <= 0x7e;
    if (!ok) {
        snprintf(why, wcap, "the admin key must be 1-255 visible ASCII characters "
                            "(no spaces or control characters)");
        return -EINVAL;
    }
    return 0;
}

static int set_string(const struct cfg_opt *o, struct config *c, const char *v, char *why,
                      size_t wcap)
{
    size_t n = strlen(v);
    int rc;

    if (n >= o->cap) {
        snprintf(why, wcap, "longer than %zu bytes", o->cap - 1);
        return -EINVAL;
    }
    if (n > 0) {
        if ((o->flags & CFG_F_ADMINKEY) && (rc = check_admin_key(v, n, why, wcap)) != 0)
            return rc;
        if ((o->flags & CFG_F_ORIGINS) && (rc = check_origins(v, why, wcap)) != 0)
            return rc;
        if ((o->flags & CFG_F_CONNINFO) && (rc = conninfo_check(v, why, wcap)) != 0)
            return rc;
        if (o->flags & CFG_F_CIDRS) {
            struct ca_net nets[CA_MAX_NETS];
            size_t nn;
            if ((rc = ca_parse_nets(v, nets, CA_MAX_NETS, &nn, why, wcap)) != 0)
                return -EINVAL;
        }
    }
    memcpy(field(c, o), v, n + 1);
    return 0;
}

/* Read the whole file at path into the string field, trailing CR/LF stripped. */
static int set_file(const struct cfg_opt *o, struct config *c, const char *path, char *why,
                    size_t wcap)
{
    char buf[1024]; /* > any field cap (256) plus slack for trailing newlines */
    size_t n = 0;
    int fd, rc = -EINVAL;

    if (path[0] == '\0')
        return 0; /* no file */
    fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) {
        snprintf(why, wcap, "cannot open it: %s", strerror(errno));
        return -EINVAL;
    }
    for (;;) {
        ssize_t r = read(fd, buf + n, sizeof(buf) - n);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            snprintf(why, wcap, "cannot read it: %s", strerror(errno));
            goto out;
        }
        if (r == 0)
            break;
        n += (size_t)r;
        if (n == sizeof(buf)) {
            snprintf(why, wcap, "file is longer than %zu bytes", o->cap - 1);
            goto out;
        }
    }
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
        n--;
    if (n == 0) {
        snprintf(why, wcap, "file is empty");
        goto out;
    }
    if (n >= o->cap) {
        snprintf(why, wcap, "file content is longer than %zu bytes", o->cap - 1);
        goto out;
    }
    if ((o->flags & CFG_F_ADMINKEY) && check_admin_key(buf, n, why, wcap) != 0)
        goto out;
    memcpy(field(c, o), buf, n);
    ((char *)field(c, o))[n] = '\0';
    rc = 0;
out:
    explicit_bzero(buf, sizeof(buf)); /* it held a secret */
    close(fd);
    return rc;
}

/* Parse v for o and store it in c. 0, or -EINVAL with a reason in why. */
static int cfg_set(const struct cfg_opt *o, struct config *c, const char *v, char *why,
                   size_t wcap)
{
    enum log_level lvl;

    switch (o->type) {
    case CFG_UINT32:
    case CFG_UINT64:
        return set_number(o, c, v, why, wcap);
    case CFG_STRING:
        return set_string(o, c, v, why, wcap);
    case CFG_FILE:
        return set_file(o, c, v, why, wcap);
    case CFG_LISTEN:
        if (parse_listen(v, c->listen_host, &c->listen_port) != 0) {
            snprintf(why, wcap, "expected ADDR:PORT with a numeric IPv4 address (or empty "
                                "for 0.0.0.0) or an IPv6 address in brackets, port 0..65535");
            return -EINVAL;
        }
        return 0;
    case CFG_RATE:
        if (parse_rate(v, o->max, field(c, o)) != 0) {
            snprintf(why, wcap, "expected R[/BURST]: R 0..%llu requests/s per client IP "
                                "(0 disables), BURST 1..%llu (default 5*R)",
                     (unsigned long long)o->max, 5ULL * o->max);
            return -EINVAL;
        }
        return 0;
    case CFG_LOGLEVEL:
        if (log_level_parse(v, &lvl) != 0) {
            snprintf(why, wcap, "expected one of debug|info|warn|error");
            return -EINVAL;
        }
        *(int *)field(c, o) = (int)lvl;
        return 0;
    }
    snprintf(why, wcap, "internal error: unknown setting type");
    return -EINVAL;
}

/* Print v for an error message: quoted, non-printable bytes as \xNN, at most 200 bytes;
   secrets hidden and db passwords masked. */
static void print_value(FILE *f, const struct cfg_opt *o, const char *v)
{
    char masked[2048];
    size_t n;

    if (o->flags & CFG_F_SECRET) {
        fputs("(hidden)", f);
        return;
    }
    if (o->flags & CFG_F_CONNINFO) {
        if (conninfo_mask(v, masked, sizeof(masked)) < 0) {
            fputs("(masked)", f);
            return;
        }
        v = masked;
    }
    n = strlen(v);
    fputc('"', f);
    for (size_t i = 0; i < n && i < 200; i++) {
        unsigned char ch = (unsigned char)v[i];
        if (ch < 0x20 || ch >= 0x7f || ch == '"' || ch == '\\')
            fprintf(f, "\\x%02x", ch);
        else
            fputc(ch, f);
    }
    fputs(n > 200 ? "\"..." : "\"", f);
}

static int apply(const struct cfg_opt *o, struct config *c, const char *v, const char *src_pre,
                 const char *src, FILE *err)
{
    char why[512];

    if (cfg_set(o, c, v, why, sizeof(why)) == 0)
        return 0;
    fprintf(err, "ringcount: invalid %s%s ", src_pre, src);
    print_value(err, o, v);
    fprintf(err, ": %s\n", why);
    return -EINVAL;
}

/* Value of name in envp, or NULL if unset or empty. */
static const char *env_get(char **envp, const char *name)
{
    size_t nl = strlen(name);

    for (char **e = envp; e && *e; e++) {
        if (strncmp(*e, name, nl) == 0 && (*e)[nl] == '=')
            return (*e)[nl + 1] ? *e + nl + 1 : NULL;
    }
    return NULL;
}

static const struct cfg_opt *find_flag(const char *name, size_t n)
{
    for (size_t i = 0; i < cfg_nopts; i++) {
        const char *fl = cfg_opts[i].name;
        if (fl && strlen(fl) == n && memcmp(fl, name, n) == 0)
            return &cfg_opts[i];
    }
    return NULL;
}

/* The command-line flags over c. 0 or -EINVAL after printing why. */
static int apply_flags(struct config *c, int argc, char **argv, FILE *err)
{
    char flag[80];

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v;
        if (strncmp(a, LIT("--")) != 0 || a[2] == '\0') {
            fprintf(err, "ringcount: unexpected argument \"%.80s\" (see --help)\n", a);
            return -EINVAL;
        }
        const char *eq = strchr(a + 2, '=');
        size_t nl = eq ? (size_t)(eq - (a + 2)) : strlen(a + 2);
        const struct cfg_opt *o = find_flag(a + 2, nl);
        if (!o) {
            fprintf(err, "ringcount: unknown option --%.*s (see --help)\n",
                     (int)(nl > 80 ? 80 : nl), a + 2);
            return -EINVAL;
        }
        if (eq) {
            v = eq + 1;
        } else if (i + 1 < argc && strncmp(argv[i + 1], LIT("--")) != 0) {
            v = argv[++i];
        } else {
            fprintf(err, "ringcount: option --%s needs a value: --%s %s (see --help)\n",
                    o->name, o->name, o->meta);
            return -EINVAL;
        }
        snprintf(flag, sizeof(flag), "--%s", o->name);
        if (apply(o, c, v, "", flag, err) != 0)
            return -EINVAL;
    }
    return 0;
}

/* --config-file (config.h): apply its lines over c. 0 or -EINVAL after printing why. Main
   thread only (stdio); the file is bounded by its lines (4 KiB each, more than the longest
   value: --cors-origins, 2 KiB). */
static int load_config_file(struct config *c, const char *path, FILE *err)
{
    FILE *f = fopen(path, "re");
    if (!f) {
        fprintf(err, "ringcount: cannot read --config-file \"%.200s\": %s\n", path,
                strerror(errno));
        return -EINVAL;
    }
    char line[4096], src[600];
    unsigned ln = 0;
    int rc = 0;
    while (rc == 0 && fgets(line, sizeof(line), f)) {
        ln++;
        size_t n = strlen(line);
        if (n == sizeof(line) - 1 && line[n - 1] != '\n' && !feof(f)) {
            fprintf(err, "ringcount: %.200s:%u: line longer than %zu bytes\n", path, ln,
                    sizeof(line) - 2);
            rc = -EINVAL;
            break;
        }
        while (n > 0 && isspace((unsigned char)line[n - 1]))
            line[--n] = '\0';
        char *k = line;
        while (isspace((unsigned char)*k))
            k++;
        if (*k == '\0' || *k == '#')
            continue;
        char *eq = strchr(k, '=');
        if (!eq) {
            fprintf(err, "ringcount: %.200s:%u: expected RINGCOUNT_NAME=VALUE\n", path, ln);
            rc = -EINVAL;
            break;
        }
        char *ke = eq, *v = eq + 1;
        while (ke > k && isspace((unsigned char)ke[-1]))
            ke--;
        *ke = '\0';
        while (isspace((unsigned char)*v))
            v++;
        const struct cfg_opt *o = NULL;
        for (size_t i = 0; i < cfg_nopts && !o; i++)
            if (strcmp(cfg_opts[i].env, k) == 0)
                o = &cfg_opts[i];
        if (!o || o->off == OFF(config_file)) {
            fprintf(err, "ringcount: %.200s:%u: %s \"%.80s\" (see --help for the names)\n", path,
                    ln, o ? "a config file cannot name another one:" : "unknown setting", k);
            rc = -EINVAL;
            break;
        }
        if (*v == '\0')
            continue; /* empty = unset, as in the environment */
        snprintf(src, sizeof(src), "%s (%.200s:%u)", o->env, path, ln);
        if (apply(o, c, v, "", src, err) != 0)
            rc = -EINVAL;
    }
    if (rc == 0 && ferror(f)) {
        fprintf(err, "ringcount: cannot read --config-file \"%.200s\": %s\n", path,
                strerror(errno));
        rc = -EINVAL;
    }
    explicit_bzero(line, sizeof(line)); /* it may have held the admin key */
    fclose(f);
    return rc;
}

int cfg_load(struct config *c, int argc, char **argv, char **envp, FILE *out, FILE *err)
{
    /* --help and --version first, so that they work whatever else is broken. */
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            cfg_usage(out);
            return 1;
        }
        if (strcmp(argv[i], "--version") == 0) {
            fprintf(out, "ringcount %s\n", RINGCOUNT_VERSION);
            return 1;
        }
    }

    memset(c, 0, sizeof(*c));
    for (size_t i = 0; i < cfg_nopts; i++) {
        const struct cfg_opt *o = &cfg_opts[i];
        if (apply(o, c, o->def, "default of ", o->name ? o->name : o->env, err) != 0)
            return -EINVAL;
    }

    for (size_t i = 0; i < cfg_nopts; i++) {
        const struct cfg_opt *o = &cfg_opts[i];
        const char *src = o->env, *v = env_get(envp, o->env);
        if (!v && o->env_alt) {
            src = o->env_alt;
            v = env_get(envp, o->env_alt);
        }
        if (v && apply(o, c, v, "", src, err) != 0)
            return -EINVAL;
    }

    if (apply_flags(c, argc, argv, err) != 0)
        return -EINVAL;
    if (c->config_file[0]) {
        /* over the environment, under the flags: apply them again once the file is in */
        if (load_config_file(c, c->config_file, err) != 0 || apply_flags(c, argc, argv, err) != 0)
            return -EINVAL;
    }
    return 0;
}

/* The ACCEPTED column of --help. */
static void accepted(const struct cfg_opt *o, char *buf, size_t cap)
{
    switch (o->type) {
    case CFG_UINT32:
    case CFG_UINT64:
        snprintf(buf, cap, "%s%llu..%llu", o->flags & CFG_F_POW2 ? "pow2 " : "",
                 (unsigned long long)o->min, (unsigned long long)o->max);
        return;
    case CFG_LISTEN:
        snprintf(buf, cap, "ADDR:PORT, [IPv6]:PORT");
        return;
    case CFG_RATE:
        snprintf(buf, cap, "0..%llu[/1..%llu]", (unsigned long long)o->max,
                 5ULL * o->max);
        return;
    case CFG_LOGLEVEL:
        snprintf(buf, cap, "debug|info|warn|error");
        return;
    case CFG_FILE:
        snprintf(buf, cap, "readable file");
        return;
    case CFG_STRING:
        if (o->flags & CFG_F_ADMINKEY)
            snprintf(buf, cap, "1-255 visible ASCII");
        else if (o->flags & CFG_F_CONNINFO)
            snprintf(buf, cap, "conninfo or URI");
        else if (o->flags & CFG_F_ORIGINS)
            snprintf(buf, cap, "\"*\" or origin list");
        else if (o->flags & CFG_F_CIDRS)
            snprintf(buf, cap, "CIDR list");
        else
            snprintf(buf, cap, "up to %zu bytes", o->cap - 1);
        return;
    }
    buf[0] = '\0';
}

void cfg_usage(FILE *out)
{
    char flag[64], acc[64];

    fprintf(out,
            "Usage: ringcount [--SETTING VALUE | --SETTING=VALUE]...\n"
            "       ringcount -h | --help | --version\n"
            "ringcount %s: io_uring HTTP/1.1 counters server.\n"
            "Each setting can also come from its environment variable (empty = unset);\n"
            "flags override the environment, which overrides the defaults.\n\n"
            "  %-25s %-30s %-13s %-24s %s\n",
            RINGCOUNT_VERSION, "FLAG", "ENVIRONMENT", "DEFAULT", "ACCEPTED", "MEANING");
    for (size_t i = 0; i < cfg_nopts; i++) {
        const struct cfg_opt *o = &cfg_opts[i];
        if (o->flags & CFG_F_HIDDEN)
            continue;
        if (o->name)
            snprintf(flag, sizeof(flag), "--%s %s", o->name, o->meta);
        else
            snprintf(flag, sizeof(flag), "(environment only)");
        accepted(o, acc, sizeof(acc));
        fprintf(out, "  %-25s %-30s %-13s %-24s %s\n", flag, o->env,
                o->def[0] ? o->def : "(none)", acc, o->help);
    }
}

int cfg_listen_str(const struct config *c, char *out, size_t cap)
{
    bool v6 = strchr(c->listen_host, ':') != NULL;
    int n = snprintf(out, cap, v6 ? "[%s]:%u" : "%s:%u", c->listen_host,
                     (unsigned)c->listen_port);
    return n < 0 || (size_t)n >= cap ? -ENOSPC : n;
}

/* A NUL-terminated string as a JSON string. */
static void dw_str(struct json_w *w, const char *s)
{
    json_w_str(w, s, strlen(s));
}

int cfg_dump(const struct config *c, char *buf, size_t cap)
{
    struct json_w w;
    char tmp[2048], key[64];
    bool first = true;

    json_w_init(&w, buf, cap);
    json_w_lit(&w, "{");
    for (size_t i = 0; i < cfg_nopts; i++) {
        const struct cfg_opt *o = &cfg_opts[i];
        const void *f = cfield(c, o);
        uint32_t u32;
        uint64_t u64;

        if (!o->name)
            continue; /* environment-only alias of a field that has a flag */
        if (o->flags & CFG_F_ADMINKEY) {
            snprintf(key, sizeof(key), "admin_key");
        } else {
            size_t k;
            for (k = 0; o->name[k] && k + 1 < sizeof(key); k++)
                key[k] = o->name[k] == '-' ? '_' : o->name[k];
            key[k] = '\0';
        }
        if (!first)
            json_w_lit(&w, ",");
        first = false;
        dw_str(&w, key);
        json_w_lit(&w, ":");
        switch (o->type) {
        case CFG_UINT32:
            memcpy(&u32, f, sizeof(u32));
            json_w_u64(&w, u32);
            break;
        case CFG_UINT64:
            memcpy(&u64, f, sizeof(u64));
            json_w_u64(&w, u64);
            break;
        case CFG_LISTEN:
            if (cfg_listen_str(c, tmp, sizeof(tmp)) < 0)
                w.full = true;
            else
                dw_str(&w, tmp);
            break;
        case CFG_RATE:
            if (c->rate_limit.rate == 0) {
                dw_str(&w, "0");
                break;
            }
            json_w_lit(&w, "\"");
            json_w_u64(&w, c->rate_limit.rate);
            json_w_lit(&w, "/");
            json_w_u64(&w, c->rate_limit.burst);
            json_w_lit(&w, "\"");
            break;
        case CFG_LOGLEVEL:
            dw_str(&w, log_level_name((enum log_level)c->log_level));
            break;
        case CFG_FILE:
        case CFG_STRING:
            if (o->flags & (CFG_F_ADMINKEY | CFG_F_SECRET)) {
                dw_str(&w, ((const char *)f)[0] ? "(set)" : "(unset)");
            } else if (o->flags & CFG_F_CONNINFO) {
                if (conninfo_mask(f, tmp, sizeof(tmp)) < 0)
                    dw_str(&w, "(masked)");
                else
                    dw_str(&w, tmp);
            } else {
                dw_str(&w, f);
            }
            break;
        }
    }
    json_w_lit(&w, "}");
    ssize_t n = json_w_end(&w);
    return n < 0 ? -ENOSPC : (int)n;
}

/* ---------------------------------------------------------------- reload (SIGHUP) */

bool cfg_same(const struct cfg_opt *o, const struct config *a, const struct config *b)
{
    const void *fa = cfield(a, o), *fb = cfield(b, o);
    switch (o->type) {
    case CFG_UINT32:
        return memcmp(fa, fb, sizeof(uint32_t)) == 0;
    case CFG_UINT64:
        return memcmp(fa, fb, sizeof(uint64_t)) == 0;
    case CFG_LISTEN:
        return strcmp(a->listen_host, b->listen_host) == 0 && a->listen_port == b->listen_port;
    case CFG_RATE:
        return a->rate_limit.rate == b->rate_limit.rate &&
               a->rate_limit.burst == b->rate_limit.burst;
    case CFG_LOGLEVEL:
        return memcmp(fa, fb, sizeof(int)) == 0;
    case CFG_STRING:
    case CFG_FILE:
        return strncmp(fa, fb, o->cap) == 0;
    }
    return false;
}

void cfg_copy(const struct cfg_opt *o, struct config *dst, const struct config *src)
{
    if (o->type == CFG_LISTEN) {
        memcpy(dst->listen_host, src->listen_host, sizeof(dst->listen_host));
        dst->listen_port = src->listen_port;
        return;
    }
    size_t n = o->type == CFG_UINT32 ? sizeof(uint32_t)
             : o->type == CFG_UINT64 ? sizeof(uint64_t)
             : o->type == CFG_RATE ? sizeof(struct cfg_rate)
             : o->type == CFG_LOGLEVEL ? sizeof(int)
                                       : o->cap;
    memcpy(field(dst, o), cfield(src, o), n);
}

int cfg_value_str(const struct cfg_opt *o, const struct config *c, char *out, size_t cap)
{
    const void *f = cfield(c, o);
    uint32_t u32;
    uint64_t u64;
    int n;

    switch (o->type) {
    case CFG_UINT32:
        memcpy(&u32, f, sizeof(u32));
        n = snprintf(out, cap, "%u", (unsigned)u32);
        break;
    case CFG_UINT64:
        memcpy(&u64, f, sizeof(u64));
        n = snprintf(out, cap, "%llu", (unsigned long long)u64);
        break;
    case CFG_LISTEN:
        return cfg_listen_str(c, out, cap);
    case CFG_RATE:
        n = c->rate_limit.rate ? snprintf(out, cap, "%u/%u", (unsigned)c->rate_limit.rate,
                                          (unsigned)c->rate_limit.burst)
                               : snprintf(out, cap, "0");
        break;
    case CFG_LOGLEVEL:
        n = snprintf(out, cap, "%s", log_level_name((enum log_level)c->log_level));
        break;
    default: /* CFG_STRING, CFG_FILE */
        if (o->flags & (CFG_F_ADMINKEY | CFG_F_SECRET))
            n = snprintf(out, cap, "%s", ((const char *)f)[0] ? "(set)" : "(unset)");
        else if (o->flags & CFG_F_CONNINFO)
            return conninfo_mask(f, out, cap);
        else
            n = snprintf(out, cap, "%s", (const char *)f);
        break;
    }
    return n < 0 || (size_t)n >= cap ? -ENOSPC : n;
}

const char *cfg_opt_label(const struct cfg_opt *o, char *buf, size_t cap)
{
    if (!o->name)
        return o->env;
    snprintf(buf, cap, "--%s", o->name);
    return buf;
}
