/* Unit tests for src/notify: a test NOTIFY_SOCKET (a datagram socket the test binds, at a
   filesystem path and in the abstract namespace) receives exactly the datagrams systemd expects
   (READY=1, STOPPING=1, WATCHDOG=1, STATUS=...), the watchdog schedule follows $WATCHDOG_USEC
   and $WATCHDOG_PID, and without $NOTIFY_SOCKET (or with a bad one) nothing is sent and
   nothing fails. */
#include <criterion/criterion.h>
#include <errno.h>
#include <poll.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "notify.h"

static int rx = -1;
static char rx_path[108];

static void clear_env(void)
{
    unsetenv("NOTIFY_SOCKET");
    unsetenv("WATCHDOG_USEC");
    unsetenv("WATCHDOG_PID");
}

/* Bind the receiving socket: a path under /tmp, or an abstract name when abstract is true.
   Sets NOTIFY_SOCKET the way systemd does ("@name" for abstract). */
static void bind_rx(bool abstract)
{
    clear_env();
    rx = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    cr_assert_geq(rx, 0);
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    socklen_t len;
    if (abstract) {
        snprintf(rx_path, sizeof(rx_path), "@ringcount-test-notify-%d", (int)getpid());
        memcpy(a.sun_path, rx_path, strlen(rx_path));
        a.sun_path[0] = 0;
        len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + strlen(rx_path));
    } else {
        snprintf(rx_path, sizeof(rx_path), "/tmp/rc-notify-%d.sock", (int)getpid());
        unlink(rx_path);
        strcpy(a.sun_path, rx_path);
        len = (socklen_t)sizeof(a);
    }
    cr_assert_eq(bind(rx, (struct sockaddr *)&a, len), 0, "bind: %s", strerror(errno));
    cr_assert_eq(setenv("NOTIFY_SOCKET", rx_path, 1), 0);
}

static void teardown(void)
{
    if (rx >= 0)
        close(rx);
    rx = -1;
    if (rx_path[0] == '/')
        unlink(rx_path);
    rx_path[0] = 0;
    clear_env();
}

/* One datagram within 1 s, NUL-terminated; asserts one arrived. */
static const char *recv_one(void)
{
    static char buf[1024];
    struct pollfd p = {.fd = rx, .events = POLLIN};
    cr_assert_eq(poll(&p, 1, 1000), 1, "no datagram arrived");
    ssize_t n = recv(rx, buf, sizeof(buf) - 1, 0);
    cr_assert_gt(n, 0);
    buf[n] = 0;
    return buf;
}

static bool nothing_pending(void)
{
    struct pollfd p = {.fd = rx, .events = POLLIN};
    return poll(&p, 1, 50) == 0;
}

/* Every message kind, in the order the server sends them, and its exact datagram. */
static void lifecycle(void)
{
    struct notify n;
    cr_assert_eq(notify_open(&n), 0);
    cr_assert(notify_enabled(&n));
    cr_assert_eq(notify_ready(&n, "listening on 127.0.0.1:8080"), 0);
    cr_expect_str_eq(recv_one(), "READY=1\nSTATUS=listening on 127.0.0.1:8080");
    cr_assert_eq(notify_ready(&n, NULL), 0);
    cr_expect_str_eq(recv_one(), "READY=1");
    cr_assert_eq(notify_status(&n, "serving: 3 connections\nREADY=1"), 0);
    cr_expect_str_eq(recv_one(), "STATUS=serving: 3 connections READY=1",
                     "a newline in a status must not start a new assignment");
    cr_assert_eq(notify_watchdog(&n, 1000), 0);
    cr_expect_str_eq(recv_one(), "WATCHDOG=1");
    cr_assert_eq(notify_stopping(&n, "draining"), 0);
    cr_expect_str_eq(recv_one(), "STOPPING=1\nSTATUS=draining");
    cr_assert_eq(notify_send(&n, "RELOADING=1"), 0);
    cr_expect_str_eq(recv_one(), "RELOADING=1");
    cr_expect(nothing_pending(), "one datagram per call");
    notify_close(&n);
    cr_expect(!notify_enabled(&n));
    notify_close(&n); /* twice is harmless */
}

Test(notify, path_socket_receives_every_message, .fini = teardown)
{
    bind_rx(false);
    lifecycle();
}

Test(notify, abstract_socket_receives_every_message, .fini = teardown)
{
    bind_rx(true);
    lifecycle();
}

Test(notify, long_status_is_cut_not_refused, .fini = teardown)
{
    bind_rx(false);
    struct notify n;
    cr_assert_eq(notify_open(&n), 0);
    char big[2000];
    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = 0;
    cr_assert_eq(notify_status(&n, big), 0);
    const char *got = recv_one();
    cr_expect_eq(strncmp(got, "STATUS=xxx", 10), 0);
    cr_expect_lt(strlen(got), sizeof(big));
    notify_close(&n);
}

Test(notify, without_notify_socket_everything_is_a_noop, .fini = teardown)
{
    clear_env();
    setenv("WATCHDOG_USEC", "1000000", 1);
    struct notify n;
    cr_assert_eq(notify_open(&n), 0);
    cr_expect(!notify_enabled(&n));
    cr_expect_eq(notify_ready(&n, "x"), 0);
    cr_expect_eq(notify_stopping(&n, NULL), 0);
    cr_expect_eq(notify_watchdog(&n, 5), 0);
    cr_expect(!notify_watchdog_due(&n, 1000000), "no socket: no watchdog");
    cr_expect_eq(notify_watchdog_wait_ms(&n, 0), UINT64_MAX);
    notify_close(&n);
}

Test(notify, bad_socket_names_are_refused, .fini = teardown)
{
    static const char *const bad[] = {"relative/path", "x", NULL};
    char too_long[200];
    memset(too_long, 'a', sizeof(too_long) - 1);
    too_long[0] = '/';
    too_long[sizeof(too_long) - 1] = 0;
    for (size_t i = 0; i < 3; i++) {
        clear_env();
        setenv("NOTIFY_SOCKET", bad[i] ? bad[i] : too_long, 1);
        struct notify n;
        cr_expect_eq(notify_open(&n), -EINVAL, "NOTIFY_SOCKET=%.20s", bad[i] ? bad[i] : too_long);
        cr_expect(!notify_enabled(&n), "inert after a refusal");
        cr_expect_eq(notify_ready(&n, NULL), 0);
        notify_close(&n);
    }
}

Test(notify, nobody_listening_is_an_error_not_a_crash, .fini = teardown)
{
    clear_env();
    setenv("NOTIFY_SOCKET", "/tmp/rc-notify-nobody-here.sock", 1);
    unlink("/tmp/rc-notify-nobody-here.sock");
    struct notify n;
    cr_assert_eq(notify_open(&n), 0);
    int rc = notify_ready(&n, NULL);
    cr_expect(rc == -ENOENT || rc == -ECONNREFUSED, "rc %d", rc);
    notify_close(&n);
}

struct wd_case {
    const char *usec, *pid; /* NULL = unset; pid "self" = our pid */
    uint64_t want_ms;       /* ping period; 0 = no watchdog */
};

static const struct wd_case wd_cases[] = {
    {NULL, NULL, 0},
    {"20000000", NULL, 10000}, /* WatchdogSec=20 -> ping every 10 s */
    {"3000000", "self", 1500},
    {"3000000", "1", 0},       /* the watchdog is another process's */
    {"1000", NULL, 1},         /* 1 ms: half rounds down to 0, kept at 1 */
    {"0", NULL, 0},
    {"abc", NULL, 0},
    {"123x", NULL, 0},
    {"", NULL, 0},
};

Test(notify, watchdog_period_is_half_of_watchdog_usec, .fini = teardown)
{
    for (size_t i = 0; i < sizeof(wd_cases) / sizeof(wd_cases[0]); i++) {
        const struct wd_case *c = &wd_cases[i];
        bind_rx(false);
        if (c->usec)
            setenv("WATCHDOG_USEC", c->usec, 1);
        if (c->pid) {
            char pid[32];
            snprintf(pid, sizeof(pid), "%d", (int)getpid());
            setenv("WATCHDOG_PID", strcmp(c->pid, "self") == 0 ? pid : c->pid, 1);
        }
        struct notify n;
        cr_assert_eq(notify_open(&n), 0);
        cr_expect_eq(n.watchdog_ms, c->want_ms, "WATCHDOG_USEC=%s WATCHDOG_PID=%s",
                     c->usec ? c->usec : "(unset)", c->pid ? c->pid : "(unset)");
        cr_expect_eq(notify_watchdog_due(&n, 0), c->want_ms != 0, "first ping due at once");
        notify_close(&n);
        teardown();
    }
}

Test(notify, watchdog_schedule, .fini = teardown)
{
    bind_rx(false);
    setenv("WATCHDOG_USEC", "3000000", 1);
    struct notify n;
    cr_assert_eq(notify_open(&n), 0);
    cr_assert(notify_watchdog_due(&n, 50000));
    cr_expect_eq(notify_watchdog_wait_ms(&n, 50000), 0);
    cr_assert_eq(notify_watchdog(&n, 50000), 0);
    cr_expect_str_eq(recv_one(), "WATCHDOG=1");
    cr_expect(!notify_watchdog_due(&n, 50000));
    cr_expect_eq(notify_watchdog_wait_ms(&n, 50000), 1500);
    cr_expect_eq(notify_watchdog_wait_ms(&n, 51000), 500);
    cr_expect(!notify_watchdog_due(&n, 51499));
    cr_expect(notify_watchdog_due(&n, 51500));
    cr_expect_eq(notify_watchdog_wait_ms(&n, 60000), 0);
    notify_close(&n);
}
