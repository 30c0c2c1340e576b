/*
 * config — every setting of the server (SPEC §5 "Configuration").
 *
 * Owns: one static, read-only table (cfg_opts) that drives the command-line flags, the
 * RINGCOUNT_* environment variables, --help, validation and cfg_dump. Main thread only (it
 * prints with stdio and reads the admin key file); the filled struct config is then read-only
 * and may be shared with every thread.
 *
 * Precedence: built-in defaults < environment < flags. Defaults are strings parsed by the same
 * code as user input, so they are validated too. An empty environment variable counts as unset
 * (systemd environment files often carry "RINGCOUNT_DB=" to mean "none").
 * Flags: --name VALUE or --name=VALUE; in the two-word form a VALUE starting with "--" is taken
 * as a missing value (use --name=VALUE for such values). A repeated flag: the last one wins.
 */
#ifndef RC_CONFIG_H
#define RC_CONFIG_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "log.h"

#ifndef RINGCOUNT_VERSION
#define RINGCOUNT_VERSION "0.1.0"
#endif

struct cfg_rate {
    uint32_t rate;  /* tokens per second; 0 = rate limiting disabled (burst is then 0) */
    uint32_t burst; /* bucket size, >= 1 when rate > 0 */
};

struct config {
    char listen_host[64];          /* numeric IPv4 or IPv6 without brackets ("::1") */
    uint16_t listen_port;          /* 0 = ephemeral */
    uint32_t workers;              /* 0 = one per CPU of the affinity mask */
    char db[1024];                 /* libpq conninfo or URI; "" = memory-only */
    uint32_t flush_ms;
    uint32_t node_id;
    char admin_key[256];           /* "" = admin routes disabled; never print it */
    uint32_t max_connections;
    uint32_t max_inflight;
    uint32_t readyz_max_pending;   /* /readyz 503 past this many keys waiting for a flush */
    uint64_t max_users;
    uint32_t tenant_cache;         /* SPEC §2.3 store bounds: tenants, counters in memory */
    uint32_t counter_cache;
    struct cfg_rate rate_limit;
    char cors_origins[2048];       /* "", "*" or comma list of origins */
    char trusted_proxies[1024];    /* "" or CIDR,CIDR,...: peers whose X-Forwarded-For counts */
    uint32_t durable_timeout_ms;
    uint32_t history_days;         /* tenant counter history retention (SPEC §2.3 issue 12) */
    uint32_t sync_ms;              /* the change feed of tenant counters (SPEC §2.3, --db) */
    uint32_t db_timeout_ms;        /* one exchange with PostgreSQL past this: drop, reconnect */
    uint32_t ready_max_lag_ms;     /* /readyz 503 when the oldest unflushed data is older */
    char debug_clock_file[256];    /* RINGCOUNT_DEBUG_CLOCK_FILE: tests' settable history clock */
    char spill_dir[512];           /* final flush impossible at shutdown: pending state goes here */
    uint32_t header_timeout_ms;
    uint32_t body_timeout_ms;
    uint32_t idle_timeout_ms;
    uint32_t max_line;
    uint32_t max_head;
    uint32_t max_fields;
    uint32_t max_body;
    uint32_t shutdown_timeout_ms;
    uint32_t batch_wait_us;        /* min wait for more completions per event-loop wake-up */
    uint32_t ring_entries;
    uint32_t buf_count;
    uint32_t buf_size;
    int log_level;                 /* enum log_level */
    char config_file[512];         /* --config-file: read at start-up and on SIGHUP; "" = none */
    /* Test hooks (hidden settings: environment only, not in --help, validated): */
    uint32_t debug_rl_capacity;    /* RINGCOUNT_DEBUG_RL_CAPACITY: rate-limit table entries;
                                      0 = RL_DEFAULT_CAPACITY */
    uint32_t debug_lose_commit_ms; /* RINGCOUNT_DEBUG_LOSE_COMMIT_MS (src/persist.h); 0 = off */
};

enum cfg_type {
    CFG_UINT32,   /* decimal digits only, bounds [min, max] */
    CFG_UINT64,
    CFG_STRING,   /* copied into a char[cap] field */
    CFG_LISTEN,   /* ADDR:PORT → listen_host + listen_port */
    CFG_RATE,     /* R[/BURST] → struct cfg_rate */
    CFG_LOGLEVEL, /* debug|info|warn|error → int */
    CFG_FILE,     /* value is a path; the file's content goes into a char[cap] field */
};

enum cfg_flag {
    CFG_F_POW2 = 1,      /* number must be a power of two */
    CFG_F_SECRET = 2,    /* value never printed (errors say "(hidden)") */
    CFG_F_CONNINFO = 4,  /* libpq conninfo/URI: checked by src/conninfo, password masked */
    CFG_F_ORIGINS = 8,   /* "", "*" or comma list of http(s)://host[:port] */
    CFG_F_ADMINKEY = 16, /* 1..255 visible ASCII bytes (it must fit an HTTP header and a Bearer token) */
    CFG_F_HIDDEN = 32,   /* a test hook: environment only, left out of --help, still validated */
    CFG_F_CIDRS = 64,    /* comma list of IPv4/IPv6 addresses or CIDR networks (src/clientaddr) */
};

struct cfg_opt {
    const char *name;    /* flag without "--"; NULL = environment only */
    const char *env;     /* RINGCOUNT_<NAME upper, '-' → '_'> */
    const char *env_alt; /* read when env is unset (DATABASE_URL), or NULL */
    enum cfg_type type;
    unsigned flags;      /* enum cfg_flag */
    size_t off, cap;     /* field offset in struct config; byte capacity of string fields */
    const char *def;     /* default, parsed like user input */
    uint64_t min, max;   /* numbers: bounds; RATE: bounds of R and BURST */
    const char *meta;    /* value placeholder in --help */
    const char *help;
};

/* The table, in --help order. Read-only. */
extern const struct cfg_opt cfg_opts[];
extern const size_t cfg_nopts;

/* Fill c with defaults, then env (envp: "K=V" strings, NULL-terminated, may be NULL), then
   argv[1..argc). Returns 0; 1 if --help/-h or --version was printed to out (caller exits 0;
   these win over any other argument and over bad environment values); -EINVAL after printing
   one line to err naming the setting, the bad value and the accepted form (caller exits 2). */
int cfg_load(struct config *c, int argc, char **argv, char **envp, FILE *out, FILE *err);

/* Print --help: a usage line, then one line per setting (flag, env var, default, bounds, help). */
void cfg_usage(FILE *out);

/* Write the effective config as one JSON object (NUL-terminated) for the startup log line:
   keys are flag names with '-' → '_', admin_key is "(set)"/"(unset)", passwords in db are
   "***". Returns the length without the NUL, or -ENOSPC (CFG_DUMP_MAX always suffices). */
#define CFG_DUMP_MAX 16384
int cfg_dump(const struct config *c, char *buf, size_t cap);

/* "ADDR:PORT" as accepted by --listen, IPv6 in brackets. Length or -ENOSPC. */
int cfg_listen_str(const struct config *c, char *out, size_t cap);

/* ---- reload (SIGHUP, src/live) ----
   --config-file PATH: lines "RINGCOUNT_NAME=value" with the environment variables' names, in
   the format of an environment file (blank lines and '#' comments ignored, blanks around name
   and value trimmed, the value literal: no quotes, no expansion; empty = unset). Its values
   override the environment and are overridden by flags. An unknown name is refused (a typo
   must not silently leave the default), as is RINGCOUNT_CONFIG_FILE itself. */

/* Do a and b hold the same value of o's field? */
bool cfg_same(const struct cfg_opt *o, const struct config *a, const struct config *b);
/* Copy o's field (for CFG_LISTEN: host and port) from src to dst. */
void cfg_copy(const struct cfg_opt *o, struct config *dst, const struct config *src);
/* o's value in c as text for a log line (NUL-terminated): secrets "(set)"/"(unset)", passwords
   in conninfo masked, a disabled rate limit "0". Length or -ENOSPC. */
int cfg_value_str(const struct cfg_opt *o, const struct config *c, char *out, size_t cap);
/* "--name" of o, or its environment variable when it has no flag. */
const char *cfg_opt_label(const struct cfg_opt *o, char *buf, size_t cap);

#endif
