/*
 * rb_hist — ringbench's latency histogram: HDR-style log-linear buckets over nanoseconds.
 *
 * Owns: nothing but the struct the caller passes (no globals, no malloc). Any thread may call;
 * one histogram must not be written by two threads at once (ringbench keeps one per worker and
 * merges them under its own lock).
 * Precision: every power of two is split into 128 linear sub-buckets, so a bucket is at most
 * 1/128 = 0.78 % of its values wide (the brief asks <= 1 %); values below 256 ns are exact.
 * Range: 0 .. 60 s (RB_HIST_MAX_NS); larger values land in the top bucket, `max` stays exact.
 * 3840 buckets x 8 bytes = 30 KiB per histogram.
 */
#ifndef RB_HIST_H
#define RB_HIST_H

#include <stdint.h>

#define RB_HIST_SUB_BITS 7               /* 128 sub-buckets: <= 0.78 % error */
#define RB_HIST_MAX_NS 60000000000ULL    /* 60 s: 2^35.8, shift <= 28 */
#define RB_HIST_BUCKETS (29 * 128 + 256) /* index of 60 s is 3807 < 3840 */

struct rb_hist {
    uint64_t count; /* values recorded */
    uint64_t max;   /* exact largest value (ns) */
    uint64_t min;   /* exact smallest value (ns); UINT64_MAX when empty */
    uint64_t b[RB_HIST_BUCKETS];
};

/* Bucket index of v (ns). Always < RB_HIST_BUCKETS. */
static inline unsigned rb_hist_index(uint64_t v)
{
    if (v > RB_HIST_MAX_NS) v = RB_HIST_MAX_NS;
    if (v < (1u << (RB_HIST_SUB_BITS + 1))) return (unsigned)v;
    unsigned shift = (unsigned)(63 - __builtin_clzll(v)) - RB_HIST_SUB_BITS;
    return (shift << RB_HIST_SUB_BITS) + (unsigned)(v >> shift);
}

/* Record one value (ns). Never fails. */
static inline void rb_hist_record(struct rb_hist *h, uint64_t v)
{
    h->b[rb_hist_index(v)]++;
    h->count++;
    if (v > h->max) h->max = v;
    if (v < h->min) h->min = v;
}

/* Empty h. */
void rb_hist_reset(struct rb_hist *h);

/* dst += src (counts, max, min). */
void rb_hist_merge(struct rb_hist *dst, const struct rb_hist *src);

/* Largest value (ns) that falls in bucket idx (the bucket's inclusive upper bound). */
uint64_t rb_hist_bucket_high(unsigned idx);

/* Value at percentile p (0 < p <= 100): the upper bound of the bucket holding the
   ceil(p% * count)-th smallest value, capped at max. 0 when empty. */
uint64_t rb_hist_percentile(const struct rb_hist *h, double p);

#endif
