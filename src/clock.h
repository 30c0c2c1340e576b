/*
 * clock — the monotonic clocks every module reads (one helper, not a copy per file).
 * Pure; any thread. CLOCK_MONOTONIC_COARSE costs ~2 ns (no syscall, vDSO) but moves in jiffies
 * (4 ms at HZ=250): fine for timeouts and ticks, never for latencies.
 */
#ifndef RC_CLOCK_H
#define RC_CLOCK_H

#include <stdint.h>
#include <time.h>

/* Milliseconds of clock id (CLOCK_MONOTONIC, CLOCK_MONOTONIC_COARSE, CLOCK_REALTIME). */
static inline uint64_t clock_ms(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* Nanoseconds of clock id. */
static inline uint64_t clock_ns(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

#endif
