/* rb_hist — log-linear latency histogram. See rb_hist.h. */
#include "rb_hist.h"

#include <math.h>
#include <string.h>

void rb_hist_reset(struct rb_hist *h)
{
    memset(h, 0, sizeof(*h));
    h->min = UINT64_MAX;
}

void rb_hist_merge(struct rb_hist *dst, const struct rb_hist *src)
{
    if (src->count == 0) return;
    for (unsigned i = 0; i < RB_HIST_BUCKETS; i++)
        dst->b[i] += src->b[i];
    dst->count += src->count;
    if (src->max > dst->max) dst->max = src->max;
    if (src->min < dst->min) dst->min = src->min;
}

uint64_t rb_hist_bucket_high(unsigned idx)
{
    if (idx < (1u << (RB_HIST_SUB_BITS + 1))) return idx;
    unsigned shift = (idx >> RB_HIST_SUB_BITS) - 1;
    uint64_t m = idx - (shift << RB_HIST_SUB_BITS); /* 128..255 */
    return ((m + 1) << shift) - 1;
}

uint64_t rb_hist_percentile(const struct rb_hist *h, double p)
{
    if (h->count == 0) return 0;
    if (p >= 100.0) return h->max;
    double want = ceil(p / 100.0 * (double)h->count);
    uint64_t rank = want < 1.0 ? 1 : (uint64_t)want, seen = 0;
    for (unsigned i = 0; i < RB_HIST_BUCKETS; i++) {
        seen += h->b[i];
        if (seen >= rank) {
            uint64_t v = rb_hist_bucket_high(i);
            if (v > h->max) v = h->max;
            if (v < h->min) v = h->min;
            return v;
        }
    }
    return h->max;
}
