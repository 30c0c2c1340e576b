/*
 * notify — the systemd notification protocol (sd_notify(3)) spoken directly on $NOTIFY_SOCKET,
 * without libsystemd: READY=1, STOPPING=1, WATCHDOG=1, STATUS=... (SPEC §5, Type=notify).
 *
 * Owns: the caller's struct notify (one datagram socket, the destination address, the watchdog
 * schedule). No global state. $NOTIFY_SOCKET is a filesystem path ("/run/systemd/notify") or
 * an abstract socket ("@name"); without it every call is a no-op returning 0, so the server
 * runs the same outside systemd.
 *
 * Threads: the owner of the struct (main). notify_open reads the environment: call it before
 * other threads start.
 */
#ifndef RC_NOTIFY_H
#define RC_NOTIFY_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/un.h>

struct notify {
    int fd;                      /* -1 = not under systemd (no $NOTIFY_SOCKET) */
    struct sockaddr_un addr;
    socklen_t addr_len;
    uint64_t watchdog_ms;        /* ping period: half of $WATCHDOG_USEC; 0 = no watchdog */
    uint64_t watchdog_next_ms;   /* when the next ping is due (caller's monotonic ms) */
};

/* Read $NOTIFY_SOCKET, $WATCHDOG_USEC and $WATCHDOG_PID (a watchdog meant for another pid is
   ignored) and open the socket. 0 (also when $NOTIFY_SOCKET is unset: n->fd = -1), or -EINVAL
   (bad socket name: too long, not absolute nor "@"), or -errno of socket(2); n is then inert. */
int notify_open(struct notify *n);
/* Close the socket. Safe on an inert or zeroed-and-closed struct. */
void notify_close(struct notify *n);
/* Is a notification socket configured? */
bool notify_enabled(const struct notify *n);
/* Send one raw message ("KEY=VALUE" lines joined by '\n'). 0, or -errno of sendto (no-op 0 if
   not enabled). Never blocks (MSG_DONTWAIT). */
int notify_send(struct notify *n, const char *msg);
/* "READY=1\nSTATUS=<status>" (status may be NULL). 0 / -errno. */
int notify_ready(struct notify *n, const char *status);
/* "STOPPING=1\nSTATUS=<status>" (status may be NULL). 0 / -errno. */
int notify_stopping(struct notify *n, const char *status);
/* "STATUS=<status>". 0 / -errno. */
int notify_status(struct notify *n, const char *status);
/* Send WATCHDOG=1 now and schedule the next ping at now_ms + watchdog_ms. 0 / -errno. */
int notify_watchdog(struct notify *n, uint64_t now_ms);
/* Is a watchdog ping due at now_ms? (false without a watchdog.) The first one is due at once. */
bool notify_watchdog_due(const struct notify *n, uint64_t now_ms);
/* Milliseconds until the next watchdog ping (0 if due), or UINT64_MAX without a watchdog. */
uint64_t notify_watchdog_wait_ms(const struct notify *n, uint64_t now_ms);

#endif
