/* log — see log.h. One JSON line per call, built on the stack, one write(2). */
#include "log.h"

#include "clock.h"
#include "fmt.h"
#include "lit.h"
#include "utf8.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* Written once by log_init() before other threads exist (log.h); g_min may change later
   (log_set_level), so it is read with a relaxed atomic load: a plain load on x86-64. */
static int g_fd = 2;
static enum log_level g_min = LOG_INFO;
static char g_path[PATH_MAX]; /* the file behind g_fd at log_init, "" if not a named file */

/* Always kept free at the end of the line: ,"truncated":true (17) + }\n (2). */
#define TAIL_RESERVE 19
/* UTF-8 "…" (U+2026) ends a cut string. */
#define ELLIPSIS "\xe2\x80\xa6"

static const char *const level_names[] = { "debug", "info", "warn", "error" };

/* The path of the regular file open as fd, or "" (a pipe, socket, tty, or a deleted file). */
static void remember_path(int fd)
{
    struct stat st;
    char link[64];
    g_path[0] = '\0';
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode))
        return;
    snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, g_path, sizeof(g_path) - 1);
    if (n <= 0 || g_path[0] != '/') {
        g_path[0] = '\0';
        return;
    }
    g_path[n] = '\0';
    static const char del[] = " (deleted)"; /* also memfds: "/memfd:x (deleted)" */
    if ((size_t)n >= sizeof(del) - 1 && strcmp(g_path + n - (sizeof(del) - 1), del) == 0)
        g_path[0] = '\0';
}

void log_init(enum log_level min, int fd)
{
    g_min = (unsigned)min > LOG_ERROR ? LOG_ERROR : min;
    g_fd = fd < 0 ? 2 : fd;
    remember_path(g_fd);
}

void log_set_level(enum log_level min)
{
    __atomic_store_n(&g_min, (unsigned)min > LOG_ERROR ? LOG_ERROR : min, __ATOMIC_RELAXED);
}

enum log_level log_level_get(void)
{
    return __atomic_load_n(&g_min, __ATOMIC_RELAXED);
}

int log_reopen(void)
{
    if (!g_path[0])
        return 0;
    int fd = open(g_path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOCTTY, 0640);
    if (fd < 0)
        return -errno;
    int rc = dup2(fd, g_fd) < 0 ? -errno : 1; /* atomic: a concurrent line goes to one file */
    close(fd);
    return rc;
}

bool log_enabled(enum log_level lvl)
{
    return (unsigned)lvl >= (unsigned)__atomic_load_n(&g_min, __ATOMIC_RELAXED);
}

const char *log_level_name(enum log_level lvl)
{
    return (unsigned)lvl > LOG_ERROR ? "error" : level_names[lvl];
}

int log_level_parse(const char *s, enum log_level *out)
{
    for (unsigned i = 0; i <= LOG_ERROR; i++) {
        if (strcmp(s, level_names[i]) == 0) {
            *out = (enum log_level)i;
            return 0;
        }
    }
    return -EINVAL;
}

/* Escape the character at s into out (<= 6 bytes); returns input bytes consumed, sets *outn. */
static size_t esc_unit(const unsigned char *s, size_t n, char out[6], size_t *outn)
{
    static const char hex[] = "0123456789abcdef";
    unsigned char c = s[0];

    if (c == '"' || c == '\\') {
        out[0] = '\\';
        out[1] = (char)c;
        *outn = 2;
        return 1;
    }
    if (c < 0x20 || c == 0x7f) {
        memcpy(out, LIT("\\u00"));
        out[4] = hex[c >> 4];
        out[5] = hex[c & 15];
        *outn = 6;
        return 1;
    }
    if (c < 0x80) {
        out[0] = (char)c;
        *outn = 1;
        return 1;
    }
    size_t len = utf8_seq(s, n);
    if (len == 0) {
        memcpy(out, LIT("\\ufffd"));
        *outn = 6;
        return 1;
    }
    memcpy(out, s, len);
    *outn = len;
    return len;
}

/* A bounded line under construction; lim is where content must stop. */
struct lw {
    char *p;
    size_t len, lim;
};

static bool lw_put(struct lw *w, const char *s, size_t n)
{
    if (n > w->lim - w->len)
        return false;
    memcpy(w->p + w->len, s, n);
    w->len += n;
    return true;
}

/* Append s as a JSON string. may_cut: if it does not fit, cut it at a character boundary and
   end it with "…". Returns false (and appends nothing) if even that does not fit. */
static bool lw_str(struct lw *w, const char *s, size_t n, bool may_cut)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t start = w->len;
    size_t reserve = may_cut ? 1 + sizeof(ELLIPSIS) - 1 : 1; /* closing quote (+ marker) */

    if (w->lim - w->len < 1 + reserve)
        return false;
    w->p[w->len++] = '"';
    for (size_t i = 0; i < n;) {
        char out[6];
        size_t outn;
        size_t used = esc_unit(u + i, n - i, out, &outn);

        if (outn + reserve > w->lim - w->len) {
            if (!may_cut) {
                w->len = start;
                return false;
            }
            lw_put(w, LIT(ELLIPSIS "\"")); /* fits: reserved */
            return true;
        }
        memcpy(w->p + w->len, out, outn);
        w->len += outn;
        i += used;
    }
    w->p[w->len++] = '"'; /* fits: reserved */
    return true;
}

/* Append one ,"key":value field; false (nothing appended) if it does not fit. */
static bool lw_field(struct lw *w, const struct log_kv *f)
{
    size_t mark = w->len;
    char num[24];
    size_t nn;

    if (!lw_put(w, LIT(",")) || !lw_str(w, f->k ? f->k : "", f->k ? strlen(f->k) : 0, false) ||
        !lw_put(w, LIT(":")))
        goto undo;
    switch (f->t) {
    case 's':
        if (!f->v.s) {
            if (!lw_put(w, LIT("null")))
                goto undo;
        } else if (!lw_str(w, f->v.s, f->n == (size_t)-1 ? strlen(f->v.s) : f->n, true)) {
            goto undo;
        }
        break;
    case 'i':
        nn = fmt_i64(num, f->v.i);
        if (!lw_put(w, num, nn))
            goto undo;
        break;
    case 'u':
        nn = fmt_u64(num, f->v.u);
        if (!lw_put(w, num, nn))
            goto undo;
        break;
    case 'b':
        if (!lw_put(w, f->v.b ? "true" : "false", f->v.b ? 4 : 5))
            goto undo;
        break;
    case 'j':
        if (!f->v.s || f->n == 0) {
            if (!lw_put(w, LIT("null")))
                goto undo;
        } else if (!lw_put(w, f->v.s, f->n)) {
            goto undo;
        }
        break;
    default: /* unknown type: keep the key, say so */
        if (!lw_put(w, LIT("null")))
            goto undo;
        break;
    }
    return true;
undo:
    w->len = mark;
    return false;
}

static void write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t r = write(fd, p, n);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return; /* nowhere left to report a logging failure */
        }
        p += r;
        n -= (size_t)r;
    }
}

void log_write(enum log_level lvl, const char *msg, const struct log_kv *kv, size_t n)
{
    if (!log_enabled(lvl))
        return;

    int saved_errno = errno;
    char buf[LOG_LINE_MAX];
    struct lw w = { .p = buf, .len = 0, .lim = sizeof(buf) - TAIL_RESERVE };
    bool dropped = false;
    const char *lname = log_level_name(lvl);

    /* The fixed head always fits: 7 + 24 + 11 + 5 + 8 = 55 bytes of 4077. */
    lw_put(&w, LIT("{\"ts\":\""));
    fmt_time_ms(buf + w.len, (int64_t)clock_ms(CLOCK_REALTIME));
    w.len += 24;
    lw_put(&w, LIT("\",\"level\":\""));
    lw_put(&w, lname, strlen(lname));
    lw_put(&w, LIT("\",\"msg\":"));
    lw_str(&w, msg ? msg : "", msg ? strlen(msg) : 0, true);

    for (size_t i = 0; i < n; i++)
        if (!lw_field(&w, &kv[i]))
            dropped = true; /* keep going: a later, smaller field may still fit */

    w.lim = sizeof(buf); /* release the reserve */
    if (dropped)
        lw_put(&w, LIT(",\"truncated\":true"));
    lw_put(&w, LIT("}\n"));
    write_all(g_fd, buf, w.len);
    errno = saved_errno;
}

bool log_rl_allow_at(struct log_rl *rl, uint64_t now_ms, uint32_t burst, uint32_t per_ms,
                     enum log_level lvl, const char *msg)
{
    /* now < start: a clock that went back (or a caller mixing clocks) opens a new window
       rather than silencing the call site until the clock catches up. */
    if (now_ms < rl->window_start_ms || now_ms - rl->window_start_ms >= per_ms) {
        if (rl->suppressed) {
            const struct log_kv f[] = { LOG_U("suppressed", rl->suppressed),
                                        LOG_U("window_ms", per_ms) };
            log_write(lvl, msg, f, 2);
        }
        rl->window_start_ms = now_ms;
        rl->count = 0;
        rl->suppressed = 0;
    }
    if (rl->count < burst) {
        rl->count++;
        return true;
    }
    if (rl->suppressed < UINT32_MAX)
        rl->suppressed++;
    return false;
}

bool log_rl_allow(struct log_rl *rl, uint64_t now_ms, uint32_t burst, uint32_t per_ms)
{
    return log_rl_allow_at(rl, now_ms, burst, per_ms, LOG_WARN, "log lines suppressed");
}
