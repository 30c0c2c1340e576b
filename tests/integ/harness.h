/*
 * harness — integration-test support: start the real ringcount binary, talk HTTP/1.1 to it over
 * real sockets, read its JSON answers and its logs.
 *
 * Owns: the server child processes it starts (each killed with SIGKILL if the test process dies,
 * so a failed assertion never leaks a server) and their captured stdout+stderr.
 *
 * Threads: it_start, it_stop, it_signal_wait, it_free and it_run may use Criterion assertions,
 * so call them from the test's main thread only. Everything else never asserts, returns 0 /
 * -errno (or a documented non-negative result) and may be called from any thread (one thread per
 * struct it_conn at a time).
 *
 * Binary: $RINGCOUNT_BIN if set; else "ringcount" next to the test's build dir (the test binary
 * is <build>/tests/integ/test_x, so an ASan test runs the ASan server); else build/ringcount
 * relative to the cwd (make runs from the repository root).
 * Environment of the child: the test's own, minus every RINGCOUNT_* variable and DATABASE_URL
 * (a developer's shell must not change what a test sees: no admin key, memory-only), plus the
 * entries the test passes, plus RINGCOUNT_SPILL_DIR=/tmp/rc-it-spill-<test pid> unless the test
 * passes its own (a restarted server of the same test replays what the last one spilled).
 */
#ifndef IT_HARNESS_H
#define IT_HARNESS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct it_server;

/* Start ringcount with args (NULL-terminated, after argv[0]; "--listen 127.0.0.1:0" is added
   unless args has --listen) and extra "NAME=value" env entries (NULL-terminated, may be NULL).
   Waits up to 5 s for the "listening" log line. Asserts on failure (the server's output is in
   the message). Returns the running server. Main thread only. */
struct it_server *it_start(const char *const *args, const char *const *env);
/* Options of it_start_ex; a zeroed struct (or NULL) starts the server exactly as it_start. */
struct it_opts {
    unsigned long nofile; /* RLIMIT_NOFILE (soft and hard) set in the child before exec; 0 =
                             inherit the test's (fd exhaustion, 10,000-connection tests) */
};
/* it_start with options. Main thread only. */
struct it_server *it_start_ex(const char *const *args, const char *const *env,
                              const struct it_opts *opts);
/* The TCP port the server bound. */
uint16_t it_port(const struct it_server *srv);
/* The server's process id (for signals other than SIGTERM). */
pid_t it_pid(const struct it_server *srv);
/* Send sig, wait up to timeout_ms for the exit. Returns the exit code (0..255), 128+N if killed
   by signal N, or -ETIMEDOUT (the process is left running). Main thread only. */
int it_signal_wait(struct it_server *srv, int sig, int timeout_ms);
/* SIGTERM and wait up to 12 s (SPEC: drain within 10 s). Returns the exit status as above; on
   timeout SIGKILLs the server and fails the test. Logs stay readable until it_free. */
int it_stop(struct it_server *srv);
/* Release srv (SIGKILL first if it still runs). NULL is a no-op. Main thread only. */
void it_free(struct it_server *srv);

/* Wait up to timeout_ms for needle to appear in the server's output. true if it did. */
bool it_log_wait(struct it_server *srv, const char *needle, int timeout_ms);
/* Copy the server's output so far into out (NUL-terminated, truncated to cap-1 bytes keeping
   the tail). Returns the number of bytes copied. */
size_t it_log_copy(struct it_server *srv, char *out, size_t cap);

/* Run ringcount to completion (args/env as for it_start, but no --listen is added), stdout and
   stderr merged into out (NUL-terminated, truncated to cap-1). Returns the exit code (0..255),
   128+signal, or -ETIMEDOUT (then it was SIGKILLed: out has what it wrote). Asserts only if it
   cannot be started. Main thread only. */
int it_run(const char *const *args, const char *const *env, int timeout_ms, char *out, size_t cap);

/* ---- private PostgreSQL 15 clusters (tests with --db) ----
   A cluster in a new temp dir /tmp/<prefix>-XXXXXX (written to dir), listening only on a unix
   socket there, with a "ringcount" database; its tools run as the postgres user when we are
   root (PostgreSQL refuses root). Like tools/pg-local.sh but fsync=off: these tests kill
   ringcount, never PostgreSQL's host, and on a shared CI disk WAL fsyncs were seen to stall for
   over 10 s, turning correct 200s into correct-but-unexpected 503s. Binaries from
   $RINGCOUNT_PG_BIN or /usr/lib/postgresql/15/bin. Tool output goes to dir/start.err. */
/* Create and start. 0, or -1 with err saying why (dir[0] is 0 when nothing was created). */
int it_pg_start(char *dir, size_t cap, const char *prefix, char *err, size_t errcap);
/* pg_ctl start|stop|restart (-m fast) of the cluster in dir. 0 or the shell's status. A cluster
   of it_pg_start_tcp (dir/port exists) keeps its TCP port. */
int it_pg_ctl(const char *dir, const char *what);
/* it_pg_ctl with pg_ctl's shutdown mode: "smart", "fast" or "immediate" (restart -m immediate
   is a crash: the next start runs recovery). */
int it_pg_ctl_mode(const char *dir, const char *what, const char *mode);
/* it_pg_start, and the cluster also listens on 127.0.0.1:*port (a port that was free, written
   to dir/port and reused by every it_pg_ctl). The unix socket in dir keeps working but carries
   the port in its name (.s.PGSQL.<port>): clients must pass it (host=dir port=N), as
   it_pg_sql does. */
int it_pg_start_tcp(char *dir, size_t cap, const char *prefix, uint16_t *port, char *err,
                    size_t errcap);
/* The TCP port of an it_pg_start_tcp cluster (dir/port), 0 for a unix-socket-only one. */
uint16_t it_pg_port(const char *dir);
/* Run sql (one statement, or several separated by ';': the last one's result) as postgres on
   the "ringcount" database over the unix socket in dir (connect_timeout 5 s). 0 with the first
   column of the first row in out ("" for no row, NULL, or a command), or -1 with the error in
   out. Never asserts; any thread. */
int it_pg_sql(const char *dir, const char *sql, char *out, size_t cap);
/* it_pg_sql on database db of that cluster (a test's own, so tests can run in parallel). */
int it_pg_sql_db(const char *dir, const char *db, const char *sql, char *out, size_t cap);
/* it_pg_sql's answer as an integer (0 for no row / NULL), IT_PG_ERR on error. */
#define IT_PG_ERR (-0x7fffffffffffffffLL - 1)
long long it_pg_i64(const char *dir, const char *sql);
/* it_pg_i64 every 20 ms until it answers want or ms have passed; the last answer. */
long long it_pg_wait_i64(const char *dir, const char *sql, long long want, int ms);
/* Stop it at once and remove dir (no-op for ""). */
void it_pg_destroy(const char *dir);
/* One cluster for a whole test binary: it_pg_shared_start from a ReportHook(PRE_ALL) makes it
   in dir (cap bytes, kept by the caller for it_pg_destroy in POST_ALL) and names it in
   $RC_TEST_PGDIR, which the tests' processes (one per test, forked after the hook) inherit;
   a failure is kept in $RC_TEST_PGERR. it_pg_shared_dir, in a test: its directory, or the
   test fails with that error. Main thread only. */
void it_pg_shared_start(char *dir, size_t cap, const char *prefix);
const char *it_pg_shared_dir(void);

/* ------------------------------------------------------------------ connections */

/* Unconsumed received bytes per connection: 64 KiB holds well over one response of this server
   (the largest, /metrics, is ~32 KiB) and keeps 256 connections at 16 MiB. */
#define IT_CONN_BUF 65536
/* Largest response head / body a struct it_resp keeps (bigger responses are -EMSGSIZE). 48 KiB:
   /metrics with the latency histogram of every route is ~32 KiB; head + body still fit
   IT_CONN_BUF. */
#define IT_HEAD_MAX 8192
#define IT_BODY_MAX 49152

struct it_conn {
    int fd;
    size_t len;              /* bytes in buf not yet returned as a response */
    char buf[IT_CONN_BUF];
};

struct it_resp {
    int status;              /* e.g. 200; 100 for an interim "100 Continue" */
    int minor;               /* HTTP/1.minor of the status line */
    bool close;              /* "Connection: close" was sent */
    size_t head_len;         /* status line + fields + empty line */
    char head[IT_HEAD_MAX + 1]; /* NUL-terminated */
    size_t body_len;
    char body[IT_BODY_MAX + 1]; /* NUL-terminated */
};

/* Connect to 127.0.0.1:port (blocking socket, TCP_NODELAY). Returns the fd or -errno. */
int it_connect(uint16_t port);
/* it_connect from source address src (host order, e.g. 0x7f000002 for 127.0.0.2; 0 = any):
   a loopback client of another address. The fd or -errno. */
int it_connect_from(uint32_t src, uint16_t port);
/* it_connect into c (c->len = 0). 0 or -errno (then c->fd = -1). */
int it_conn_open(struct it_conn *c, uint16_t port);
/* it_conn_open from source address src (as it_connect_from). 0 or -errno (c->fd = -1). */
int it_conn_open_from(struct it_conn *c, uint32_t src, uint16_t port);
/* A TCP port on 127.0.0.1 that was free a moment ago (bind port 0, read it, close). 0 on
   error. For a child process (nginx) that cannot be told to pick one itself. */
uint16_t it_free_port(void);
/* Close c->fd if open. */
void it_conn_close(struct it_conn *c);
/* Allocate and connect one (asserts on failure; main thread, like it_start). */
struct it_conn *it_conn_new(uint16_t port);
/* Close and free what it_conn_new returned. */
void it_conn_free(struct it_conn *c);
/* Write all n bytes (MSG_NOSIGNAL). 0 or -errno (-EPIPE/-ECONNRESET once the peer closed). */
int it_send_all(int fd, const void *buf, size_t n);

/* Parse one complete HTTP/1.x response at buf[0..len) into r. Returns its length (> 0), 0 if
   more bytes are needed, -EPROTO if malformed (every non-1xx/204/304 answer of this server
   must carry Content-Length), -EMSGSIZE if head or body exceed r's buffers. Pure. */
ssize_t it_parse_response(const char *buf, size_t len, struct it_resp *r);
/* Read exactly one response from c within timeout_ms (bytes after it stay in c->buf).
   0; -ETIMEDOUT; -ENOTCONN if the peer closed first (EOF); -ECONNRESET etc. from recv;
   -EPROTO / -EMSGSIZE as it_parse_response. */
int it_read_response(struct it_conn *c, struct it_resp *r, int timeout_ms);
/* Send the NUL-terminated raw request, then read one response (5 s). As it_read_response, or
   the -errno of the send. */
int it_request(struct it_conn *c, const char *raw, struct it_resp *r);
/* Wait up to timeout_ms for the peer to close c (EOF or reset). 0 if it closed with no unread
   bytes left; -EPROTO if bytes arrived (or were pending) instead; -ETIMEDOUT if still open. */
int it_expect_closed(struct it_conn *c, int timeout_ms);
/* Wait up to timeout_ms for c to become readable (data or close). 1 readable, 0 not, -errno.
   Bytes already in c->buf count as readable. */
int it_readable(struct it_conn *c, int timeout_ms);

/* Send one request (extra header lines hdrs, each ending CRLF; body may be NULL) and read the
   answer into r; asserts the exchange worked. Returns r->status. Main thread only. */
int it_rq(struct it_conn *c, const char *meth, const char *path, const char *hdrs,
          const char *body, struct it_resp *r);
/* The "code" of a JSON error body ("(none)" if it has none), in a static buffer. */
const char *it_err_code(const struct it_resp *r);
/* it_rq that must answer status st_ and, if code_ is not NULL, that error code. */
#define IT_EXPECT(c_, m_, p_, h_, b_, st_, code_)                                                 \
    do {                                                                                           \
        static struct it_resp r_; /* 56 KiB: not on the stack */                                   \
        int s_ = it_rq(c_, m_, p_, h_, b_, &r_);                                                   \
        cr_assert_eq(s_, st_, "%s %s: %d %s", m_, p_, s_, r_.body);                                \
        if (code_)                                                                                 \
            cr_assert_str_eq(it_err_code(&r_), (const char *)(code_), "%s %s: %s", m_, p_,        \
                             r_.body);                                                             \
    } while (0)
/* Value of the first header field called name (case-insensitive) in r, copied NUL-terminated
   into out. Returns its length, -ENOENT if absent, -ENOSPC if it does not fit. */
int it_header(const struct it_resp *r, const char *name, char *out, size_t cap);

/* ------------------------------------------------------------------ JSON and decimals */

/* Raw text of the first value of "key" (at any depth: keys of this server's bodies are unique)
   in the NUL-terminated JSON text body: a number or literal token as written ("499.5", "null"),
   or a string's contents without quotes and without unescaping. Copied NUL-terminated into out.
   Returns its length, -ENOENT, or -ENOSPC. Comparing these tokens as strings checks the server's
   exact printing. */
int it_json_num(const char *body, const char *key, char *out, size_t cap);
/* it_json_num parsed as an unsigned decimal integer. 0, -ENOENT, -EINVAL. */
int it_json_u64(const char *body, const char *key, uint64_t *out);
/* The value (integer part) of the Prometheus sample `series` (name and labels exactly as
   printed, e.g. "ringcount_flush_duration_seconds_count") at the start of a line of the
   /metrics text body, or -1 if there is none. */
long long it_metric_sample(const char *body, const char *series);
/* Write unix ms t into file: the server's history clock with RINGCOUNT_DEBUG_CLOCK_FILE=file
   (buckets crossed without sleeping). Asserts. */
void it_set_clock(const char *file, long long t);
/* Flushes the server on port has committed (ringcount_flush_duration_seconds_count of its
   /metrics), or -errno. */
long long it_flushes(uint16_t port);
/* Wait until two flushes have committed after the call: one flush is in flight at a time, so
   the second was built after it, and everything acknowledged before the call is in the
   database. Under load only: a flush with nothing to write commits nothing (an idle server
   times out here; poll the database instead). The ms it took, or -ETIMEDOUT after timeout_ms
   (or -errno of /metrics). */
long long it_wait_flushed(uint16_t port, int timeout_ms);

/* Exact decimal in micro-units (value * 10^6), independent of the server's src/decimal. */
typedef __int128 it_dec;
/* Parse a plain decimal "-?D+(.D{1,6})?" (no exponent: what the server prints). 0 / -EINVAL. */
int it_dec_parse(const char *s, it_dec *out);
/* Shortest exact decimal of v ("500000000", "499.5", "-0.000001"), NUL-terminated into out
   (>= 48 bytes). Returns the length. */
size_t it_dec_format(it_dec v, char *out);
/* num / den rounded half-to-even (den > 0). */
it_dec it_dec_div_round(it_dec num, uint64_t den);

/* Milliseconds of CLOCK_MONOTONIC. */
uint64_t it_now_ms(void);

#endif
