/* notify — see notify.h. The wire format is sd_notify(3): one datagram of newline-separated
   KEY=VALUE assignments to the AF_UNIX socket named by $NOTIFY_SOCKET. */
#include "notify.h"

#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int notify_open(struct notify *n)
{
    memset(n, 0, sizeof(*n));
    n->fd = -1;
    const char *path = getenv("NOTIFY_SOCKET");
    if (!path || !path[0])
        return 0;
    size_t len = strlen(path);
    if ((path[0] != '/' && path[0] != '@') || len >= sizeof(n->addr.sun_path))
        return -EINVAL;
    n->addr.sun_family = AF_UNIX;
    memcpy(n->addr.sun_path, path, len);
    if (path[0] == '@') /* abstract namespace: leading NUL, the length counts every byte */
        n->addr.sun_path[0] = 0;
    n->addr_len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len + (path[0] == '/'));

    const char *usec = getenv("WATCHDOG_USEC"), *pid = getenv("WATCHDOG_PID");
    if (usec && usec[0] && (!pid || !pid[0] || strtol(pid, NULL, 10) == (long)getpid())) {
        char *end;
        errno = 0;
        unsigned long long us = strtoull(usec, &end, 10);
        /* sd_watchdog_enabled(3): ping at half the interval so one late ping is not fatal */
        if (!errno && *end == 0 && us > 0)
            n->watchdog_ms = us / 2000u ? us / 2000u : 1;
    }
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        int e = -errno;
        memset(n, 0, sizeof(*n));
        n->fd = -1;
        return e;
    }
    n->fd = fd;
    return 0;
}

void notify_close(struct notify *n)
{
    if (n->fd >= 0)
        close(n->fd);
    n->fd = -1;
}

bool notify_enabled(const struct notify *n)
{
    return n->fd >= 0;
}

int notify_send(struct notify *n, const char *msg)
{
    if (n->fd < 0)
        return 0;
    ssize_t r = sendto(n->fd, msg, strlen(msg), MSG_NOSIGNAL | MSG_DONTWAIT,
                       (const struct sockaddr *)&n->addr, n->addr_len);
    return r < 0 ? -errno : 0;
}

/* "<head>\nSTATUS=<status>", or just head when status is NULL. STATUS is one line: newlines in
   it become spaces (a newline would start a new assignment). Longer statuses are cut. */
static int send_with_status(struct notify *n, const char *head, const char *status)
{
    if (n->fd < 0)
        return 0;
    char msg[512];
    size_t len = strlen(head);
    if (len >= sizeof(msg))
        return -EINVAL;
    memcpy(msg, head, len);
    if (status) {
        int k = snprintf(msg + len, sizeof(msg) - len, "%sSTATUS=", len ? "\n" : "");
        if (k < 0 || (size_t)k >= sizeof(msg) - len)
            return -EINVAL;
        len += (size_t)k;
        for (const char *p = status; *p && len < sizeof(msg) - 1; p++)
            msg[len++] = *p == '\n' || *p == '\r' ? ' ' : *p;
    }
    msg[len] = 0;
    return notify_send(n, msg);
}

int notify_ready(struct notify *n, const char *status)
{
    return send_with_status(n, "READY=1", status);
}

int notify_stopping(struct notify *n, const char *status)
{
    return send_with_status(n, "STOPPING=1", status);
}

int notify_status(struct notify *n, const char *status)
{
    return send_with_status(n, "", status ? status : "");
}

int notify_watchdog(struct notify *n, uint64_t now_ms)
{
    if (n->watchdog_ms)
        n->watchdog_next_ms = now_ms + n->watchdog_ms;
    return notify_send(n, "WATCHDOG=1");
}

bool notify_watchdog_due(const struct notify *n, uint64_t now_ms)
{
    return n->fd >= 0 && n->watchdog_ms && now_ms >= n->watchdog_next_ms;
}

uint64_t notify_watchdog_wait_ms(const struct notify *n, uint64_t now_ms)
{
    if (n->fd < 0 || !n->watchdog_ms)
        return UINT64_MAX;
    return now_ms >= n->watchdog_next_ms ? 0 : n->watchdog_next_ms - now_ms;
}
