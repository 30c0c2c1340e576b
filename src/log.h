/*
 * log — structured logs: one JSON object per line, journald-friendly (SPEC §2.4 "Logs").
 *
 * Owns: the process-wide sink (fd + minimum level). log_init() sets it once from main before any
 * other thread starts; after that only log_set_level (an atomic store, read relaxed by every
 * line) and log_reopen (dup2 over the same fd number) change it, so any thread may call every
 * function here.
 * A line is built in a stack buffer of LOG_LINE_MAX bytes and written with one write(2), so
 * lines from several threads never interleave. Never mallocs; never blocks except in write(2).
 * errno is preserved across every call. Rate limiters (struct log_rl) are caller-owned, so each
 * worker keeps its own and needs no lock.
 *
 * Line: {"ts":"2026-11-24T10:59:43.123Z","level":"info","msg":"...","k":v,...}\n
 * Strings are escaped (", \, control bytes and DEL as \u00XX, invalid UTF-8 bytes as \ufffd);
 * a string that does not fit is cut at a character boundary and ends with "…"; a field that
 * does not fit at all is dropped and the line gets "truncated":true. The line stays valid JSON.
 */
#ifndef RC_LOG_H
#define RC_LOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* = PIPE_BUF (4096): a write(2) of up to this many bytes to a pipe is atomic (pipe(7)). */
#define LOG_LINE_MAX 4096

enum log_level { LOG_DEBUG, LOG_INFO, LOG_WARN, LOG_ERROR };

/* One typed field. t: 's' string (n = length, or (size_t)-1 for strlen; NULL prints null),
   'i' int64, 'u' uint64, 'b' bool, 'j' raw JSON text of n bytes inserted verbatim (caller
   guarantees validity; dropped, never cut, if it does not fit). */
struct log_kv {
    const char *k;
    char t;
    union { const char *s; int64_t i; uint64_t u; bool b; } v;
    size_t n;
};

#define LOG_S(key, str)       ((struct log_kv){ .k = (key), .t = 's', .v.s = (str), .n = (size_t)-1 })
#define LOG_SN(key, str, len) ((struct log_kv){ .k = (key), .t = 's', .v.s = (str), .n = (len) })
#define LOG_I(key, val)       ((struct log_kv){ .k = (key), .t = 'i', .v.i = (int64_t)(val) })
#define LOG_U(key, val)       ((struct log_kv){ .k = (key), .t = 'u', .v.u = (uint64_t)(val) })
#define LOG_B(key, val)       ((struct log_kv){ .k = (key), .t = 'b', .v.b = (val) })
#define LOG_J(key, json, len) ((struct log_kv){ .k = (key), .t = 'j', .v.s = (json), .n = (len) })

/* Set the minimum level and the fd (fd < 0 means 2). Main thread, before other threads start.
   Until called: LOG_INFO to fd 2. */
void log_init(enum log_level min, int fd);

/* Change the minimum level (SIGHUP reload). Any thread; lines already being written finish. */
void log_set_level(enum log_level min);
/* The current minimum level. */
enum log_level log_level_get(void);
/* SIGHUP: if the fd given to log_init was a regular file (e.g. `ringcount 2>>/var/log/rc.log`),
   open its path again (O_APPEND|O_CREAT, 0640) and dup2 it over the fd, so a file that
   logrotate renamed or deleted is replaced by a new one. 1 reopened, 0 nothing to reopen (a
   pipe, a socket or journald: nothing changes), -errno if the open failed (the old file is
   kept). Main thread. */
int log_reopen(void);

/* true if a line at lvl would be written. */
bool log_enabled(enum log_level lvl);

/* Write one line if lvl >= the minimum level. kv may be NULL when n == 0. */
void log_write(enum log_level lvl, const char *msg, const struct log_kv *kv, size_t n);

/* "debug", "info", "warn", "error" ("error" for out-of-range values). */
const char *log_level_name(enum log_level lvl);

/* Parse a level name (exactly one of the four above, lower case). 0 or -EINVAL. */
int log_level_parse(const char *s, enum log_level *out);

/*
 * Call-site rate limiting for per-request logs: at most `burst` lines per window of `per_ms`.
 * Zero-initialise the state. When the first call of a new window finds lines suppressed in the
 * previous one, it first writes one line saying how many (so the count is reported on the next
 * call after the window ends, not by a timer). burst == 0 suppresses everything; per_ms == 0
 * never limits.
 */
struct log_rl { uint64_t window_start_ms; uint32_t count, suppressed; };

/* true if this call site may log now. The suppression report is a warn line
   {"msg":"log lines suppressed","suppressed":N,"window_ms":per_ms}. */
bool log_rl_allow(struct log_rl *rl, uint64_t now_ms, uint32_t burst, uint32_t per_ms);

/* Same, but the suppression report is written at lvl and repeats the call site's msg:
   {"level":lvl,"msg":msg,"suppressed":N,"window_ms":per_ms}. */
bool log_rl_allow_at(struct log_rl *rl, uint64_t now_ms, uint32_t burst, uint32_t per_ms,
                     enum log_level lvl, const char *msg);

/*
 * Call forms, zero or more fields:  log_info("listening", LOG_S("addr", a), LOG_U("port", p));
 *                                   log_warn("db down");
 * Field arguments are not evaluated when the level is disabled.
 * The leading dummy element keeps the array non-empty and the trailing empty macro argument
 * makes the zero-field form valid C11 (no GNU ", ##__VA_ARGS__").
 */
#define LOG__KV(...) ((const struct log_kv[]){ { .k = NULL }, __VA_ARGS__ })
#define LOG__W(lvl, msg, ...)                                                              \
    do {                                                                                   \
        if (log_enabled(lvl))                                                              \
            log_write((lvl), (msg), LOG__KV(__VA_ARGS__) + 1,                              \
                      sizeof(LOG__KV(__VA_ARGS__)) / sizeof(struct log_kv) - 1);           \
    } while (0)
#define log_debug(...) LOG__W(LOG_DEBUG, __VA_ARGS__, )
#define log_info(...)  LOG__W(LOG_INFO, __VA_ARGS__, )
#define log_warn(...)  LOG__W(LOG_WARN, __VA_ARGS__, )
#define log_error(...) LOG__W(LOG_ERROR, __VA_ARGS__, )

/* Rate-limited form: log_rl(&w->rl_parse, now_ms, 10, 1000, LOG_WARN, "bad request",
   LOG_I("fd", fd)); — at most 10 lines a second from this call site, then one report line. */
#define LOG__RL(rl, now_ms, burst, per_ms, lvl, msg, ...)                                  \
    do {                                                                                   \
        if (log_enabled(lvl) && log_rl_allow_at((rl), (now_ms), (burst), (per_ms), (lvl),  \
                                                (msg)))                                    \
            log_write((lvl), (msg), LOG__KV(__VA_ARGS__) + 1,                              \
                      sizeof(LOG__KV(__VA_ARGS__)) / sizeof(struct log_kv) - 1);           \
    } while (0)
#define log_rl(...) LOG__RL(__VA_ARGS__, )

#endif
