/*
 * ring_probe — the part of uring/ring that main needs without liburing.h (src/ never includes
 * it, CONTRIBUTING): the start-up probe that explains why io_uring is unavailable.
 *
 * Threads: main, before any ring exists.
 */
#ifndef RC_RING_PROBE_H
#define RC_RING_PROBE_H

#include <stddef.h>

/* Check that this kernel lets us use io_uring with provided buffer rings. 0, or -errno with a
   one-line cause and fix written to why (e.g. kernel.io_uring_disabled=2). */
int ring_probe(char *why, size_t cap);

#endif
