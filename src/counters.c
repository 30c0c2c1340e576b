/* counters — see counters.h. */
#include "counters.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

static struct cnt_slot *slots;
static unsigned nslots;

int cnt_init(unsigned n)
{
    if (n == 0 || n > CNT_MAX_WORKERS)
        return -EINVAL;
    slots = aligned_alloc(CK_MD_CACHELINE, sizeof(*slots) * n);
    if (!slots)
        return -ENOMEM;
    memset(slots, 0, sizeof(*slots) * n);
    for (unsigned i = 0; i < n; i++)
        ck_sequence_init(&slots[i].seq);
    nslots = n;
    return 0;
}

void cnt_fini(void)
{
    free(slots);
    slots = NULL;
    nslots = 0;
}

struct cnt_slot *cnt_slot(unsigned w)
{
    return &slots[w];
}

unsigned cnt_count(void)
{
    return nslots;
}

void cnt_reset_events_to(struct cnt_slot *s, uint64_t gen)
{
    ck_sequence_write_begin(&s->seq);
    ck_pr_store_64(&s->events, 0);
    ck_pr_store_64(&s->sum_lo, 0);
    ck_pr_store_64(&s->sum_hi, 0);
    ck_pr_store_64(&s->ev_epoch, s->ev_epoch + 1);
    /* the zeroes first: /reset waiters read reset_gen outside the seq and must see them done */
    ck_pr_fence_store();
    ck_pr_store_64(&s->reset_gen, gen);
    ck_sequence_write_end(&s->seq);
    ck_pr_store_64(&s->users, 0);
    ck_pr_store_64(&s->users_overflow, 0);
}

void cnt_read_events(struct cnt_slot *s, uint64_t *events, dec_t *sum, uint64_t *reset_gen,
                     uint64_t *epoch)
{
    uint64_t ev, lo, hi, rg, ep;
    unsigned v;
    do {
        v = ck_sequence_read_begin(&s->seq);
        ev = ck_pr_load_64(&s->events);
        lo = ck_pr_load_64(&s->sum_lo);
        hi = ck_pr_load_64(&s->sum_hi);
        rg = ck_pr_load_64(&s->reset_gen);
        ep = ck_pr_load_64(&s->ev_epoch);
    } while (ck_sequence_read_retry(&s->seq, v));
    *events = ev;
    *sum = (dec_t)(((unsigned __int128)hi << 64) | lo);
    *reset_gen = rg;
    *epoch = ep;
}

void cnt_snapshot(struct cnt_snapshot *out)
{
    memset(out, 0, sizeof(*out));
    for (unsigned i = 0; i < nslots; i++) {
        struct cnt_slot *s = &slots[i];
        uint64_t ev, rg, ep;
        dec_t sum;
        cnt_read_events(s, &ev, &sum, &rg, &ep);
        out->events += ev;
        out->sum += sum;
        out->users += ck_pr_load_64(&s->users);
        out->users_overflow += ck_pr_load_64(&s->users_overflow);
        out->requests += ck_pr_load_64(&s->requests);
        out->conns_open += ck_pr_load_64(&s->conns_open);
        out->rps += ck_pr_load_64(&s->rps);
    }
}
