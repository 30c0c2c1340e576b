/*
 * rb_args — ringbench's command line (SPEC §5): the options with their defaults and bounds,
 * the -H headers, the scenario and URL, --help. A usage error prints one line naming it and
 * the usage line on stderr and exits 2 (ringbench's exit contract, see ringbench.c).
 *
 * Owns: the parsed options (the -H header block is malloc'd). Thread: main only, before the
 * workers start; the options are read-only from then on.
 */
#ifndef RB_ARGS_H
#define RB_ARGS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "rb_client.h"

enum rb_scenario { RB_EVENT, RB_INCREMENT, RB_COUNTER, RB_RAW };
/* Rates of one --rate-sweep. */
#define RB_SWEEP_MAX 32
/* "event", "increment", "counter", "raw", indexed by enum rb_scenario. */
extern const char *const rb_args_scenarios[4];
/* The one-line usage (ends in a newline). */
extern const char rb_args_usage[];

struct rb_opts {
    enum rb_scenario scen;
    const char *url_s; /* the URL as given */
    struct rb_url url;
    uint32_t conns, depth, threads;
    double duration_s; /* 0 when -n */
    uint64_t nreq;     /* 0 when -d */
    double rate;       /* -R: open loop req/s in total; 0 = closed loop */
    double timeout_s;
    const char *method, *body; /* raw only; method defaults to GET, POST with -b */
    char *headers;             /* "Name: value\r\n"... from -H */
    size_t headers_len;
    bool has_host, has_ctype; /* -H gave Host / Content-Type */
    bool json, half, no_verify;
    const char *out; /* --out PREFIX, or NULL */
    /* --rate-sweep R1,R2,...: one open-loop run per rate, in order (-d each) */
    double sweep[RB_SWEEP_MAX];
    unsigned nsweep;
    int server_pid; /* --server-pid: CPU per request of that process, from /proc; 0 = none */
    /* raw --spread N: {n} in the URL's path becomes a number in [0, N) per request; 0 = off */
    uint64_t spread;
    bool spread_seq; /* --spread-seq: request i (counted across threads) takes i mod N */
};

/* Fill o from argv (o is cleared first). Returns only when the arguments are valid: usage
   errors exit 2, --help prints the help and exits 0, out of memory exits 1. */
void rb_args_parse(int argc, char **argv, struct rb_opts *o);
/* Free what rb_args_parse allocated (the -H block). */
void rb_args_free(struct rb_opts *o);

#endif
