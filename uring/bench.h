/*
 * bench — ringbench's io_uring engine: client connections driven by one ring per thread.
 *
 * Owns: for the duration of one bench_run() call, its ring (SINGLE_ISSUER|DEFER_TASKRUN when
 * the kernel has them), the sockets (registered as fixed files), a provided buffer ring for
 * multishot receives, and a send buffer per connection. Thread: bench_run() runs its loop on
 * the calling thread and calls the bench_ops callbacks there; several threads may each run
 * their own bench_run() at once (nothing is shared but the cfg->stop flag).
 * It knows nothing about HTTP: the caller writes requests (fill) and parses responses (recv).
 * The only ringbench file that includes liburing.h.
 *
 * Sending: closed loop sends cfg->depth requests per connection in one send, and the next
 * batch once all of them are answered (as wrk's pipeline.lua does); open loop
 * (cfg->rate > 0) gives request k of connection c the intended time
 * t0 + (k * conns + c) / rate and sends it once it is due and fewer than depth are outstanding.
 * Either way a connection gets at most one send per loop turn, holding every request it may
 * send then, and at most one send in flight.
 */
#ifndef RB_BENCH_H
#define RB_BENCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

/* Why a connection ended (bench_ops.closed). */
enum bench_end {
    BENCH_END_OK = 0,          /* clean: Connection: close or idle EOF, nothing was lost */
    BENCH_END_CONNECT_REFUSED, /* connect: ECONNREFUSED */
    BENCH_END_CONNECT,         /* connect: any other error (timeout, unreachable, ...) */
    BENCH_END_RESET,           /* recv/send: ECONNRESET, EPIPE or another socket error */
    BENCH_END_CLOSED,          /* the server closed with requests outstanding */
    BENCH_END_TIMEOUT,         /* no response for cfg->timeout_ns, or unanswered at the end */
    BENCH_END_PROTOCOL,        /* recv() said the byte stream is not valid HTTP */
    BENCH__END_COUNT
};

/* recv() result flags */
#define BENCH_RECV_CLOSE 1u /* the last counted response ends the connection: close it */
#define BENCH_RECV_PROTO 2u /* malformed input: drop the connection */

struct bench_ops {
    /* Write n requests for connection conn into buf (room for n * cfg->max_req_bytes); request
       k's intended send time is t0_ns + k * step_ns (closed loop: step 0, t0 = now). Returns
       the bytes written (> 0). */
    size_t (*fill)(void *arg, uint32_t conn, char *buf, uint32_t n, uint64_t t0_ns,
                   uint64_t step_ns);
    /* Bytes received on conn at now_ns (p is only valid during the call). Returns how many
       responses completed (<= outstanding) and may set BENCH_RECV_* in *flags. */
    uint32_t (*recv)(void *arg, uint32_t conn, const char *p, size_t n, uint64_t now_ns,
                     unsigned *flags);
    /* conn's connection ended (or failed to connect); `lost` requests were outstanding and will
       never be answered. The caller forgets its per-connection parse state. */
    void (*closed)(void *arg, uint32_t conn, enum bench_end why, uint32_t lost, uint64_t now_ns);
    /* Called at least every 50 ms while running (for per-second accounting). May be NULL. */
    void (*tick)(void *arg, uint64_t now_ns);
};

struct bench_cfg {
    const struct sockaddr *addr; /* server address; must outlive the run */
    socklen_t addrlen;
    uint32_t conns;         /* connections of this thread, 1..65535 */
    uint32_t depth;         /* outstanding requests per connection, 1..4096 */
    uint32_t max_req_bytes; /* upper bound of one request written by fill() */
    double rate;            /* open loop: requests/s of this thread; 0 = closed loop */
    uint64_t start_ns;      /* CLOCK_MONOTONIC start of the run (shared by all threads) */
    uint64_t end_ns;        /* stop sending at this time; UINT64_MAX = no deadline */
    uint64_t quota;         /* stop sending after this many requests; UINT64_MAX = none */
    uint64_t drain_ns;      /* then wait up to this long for outstanding responses */
    uint64_t timeout_ns;    /* a connection with requests outstanding and no response for
                               this long is dropped (BENCH_END_TIMEOUT) */
    const int *stop;        /* non-zero (read atomically): stop sending now; may be NULL */
};

struct bench_result {
    uint64_t sent;         /* requests handed to fill() */
    uint64_t answered;     /* responses counted by recv() */
    uint64_t last_resp_ns; /* time of the last response (0 if none) */
    uint64_t stop_ns;      /* time sending stopped */
    unsigned setup_flags;  /* IORING_SETUP_* flags the ring got (for the report) */
};

/* CLOCK_MONOTONIC in ns. */
uint64_t bench_now_ns(void);

/* Run the load on the calling thread until sending stops and the drain ends. 0 and *res, or
   -errno when the ring, buffers or sockets cannot be set up (nothing was sent then). */
int bench_run(const struct bench_cfg *cfg, const struct bench_ops *ops, void *arg,
              struct bench_result *res);

/* Human-readable name of why ("reset", "timeout", ...); also the --json error key. */
const char *bench_end_name(enum bench_end why);

#endif
