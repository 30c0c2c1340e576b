/*
 * proxy — an in-process TCP proxy on loopback for fault injection between ringcount and
 * PostgreSQL: listens on 127.0.0.1:<ephemeral>, forwards each accepted connection to
 * 127.0.0.1:<upstream>, and on command turns into a dead link, a refusing port, or resets
 * every connection.
 *
 * Owns: one thread (poll loop), its listening socket, every proxied pair (client socket and its
 * upstream socket), a wake pipe. Memory is bounded: at most IT_PROXY_MAX_PAIRS pairs (past it
 * new connections wait in the listen backlog, unanswered) with two IT_PROXY_BUF buffers each.
 *
 * Threads: every function may be called from any thread; set_mode and reset_all return once
 * the proxy thread has applied them (or after 5 s if it is wedged). Never asserts.
 */
#ifndef IT_PROXY_H
#define IT_PROXY_H

#include <stdint.h>

#define IT_PROXY_MAX_PAIRS 64
#define IT_PROXY_BUF 65536

enum it_proxy_mode {
    /* forward both ways; new connections are connected upstream */
    IT_PROXY_PASS,
    /* a dropped link: every socket stays open, new connections are accepted (and held, with no
       upstream), nothing is forwarded or read in either direction, no FIN, no RST. Leaving it
       closes (RST) every connection it held: a black-holed stream never resumes half-sent. */
    IT_PROXY_BLACKHOLE,
    /* new connections are accepted and closed at once with RST (as a port nobody listens on);
       pairs already established keep passing */
    IT_PROXY_REFUSE,
};

struct it_proxy;

/* Start a proxy to 127.0.0.1:upstream_port in IT_PROXY_PASS. 0 or -errno. */
int it_proxy_start(uint16_t upstream_port, struct it_proxy **out);
/* The port it listens on (127.0.0.1). */
uint16_t it_proxy_port(const struct it_proxy *p);
/* Switch mode (see enum it_proxy_mode). */
void it_proxy_set_mode(struct it_proxy *p, enum it_proxy_mode mode);
/* Close every proxied pair, both sockets, with RST (SO_LINGER 0). */
void it_proxy_reset_all(struct it_proxy *p);
/* Connections accepted since start (all modes), and pairs open now. */
unsigned long it_proxy_accepted(const struct it_proxy *p);
unsigned it_proxy_open_pairs(const struct it_proxy *p);
/* Stop the thread, close everything (RST), free p. NULL is a no-op. */
void it_proxy_stop(struct it_proxy *p);

#endif
