/* barrier — see barrier.h. */
#include "barrier.h"

#include <ck_pr.h>
#include <stdbool.h>
#include <stdlib.h>

#include "counters.h"
#include "users.h"

struct waiter {
    struct sess *s;
    uint64_t gen;
    enum bar_kind kind;
};

struct barrier {
    unsigned idx;
    struct cnt_slot *slot;
    struct bar_ops ops;
    struct waiter *wait;
    size_t nwait, capwait;
};

/* Written by main before the workers, then only by ck_pr_faa_64. */
static unsigned nworkers;
static uint64_t barrier_gen_global;
static uint64_t reset_gen_global;

void bar_init(unsigned n)
{
    nworkers = n;
    barrier_gen_global = reset_gen_global = 0;
}

struct barrier *bar_new(unsigned idx, const struct bar_ops *ops)
{
    struct barrier *b = calloc(1, sizeof(*b));
    if (!b)
        return NULL;
    b->idx = idx;
    b->slot = cnt_slot(idx);
    b->ops = *ops;
    return b;
}

void bar_free(struct barrier *b)
{
    if (!b)
        return;
    free(b->wait);
    free(b);
}

static void wake_others(struct barrier *b)
{
    for (unsigned i = 0; i < nworkers; i++)
        if (i != b->idx)
            b->ops.wake(b->ops.ctx, i);
}

/* Serve pending barrier/reset generations on this worker. The generations are read before the
   mailboxes are drained, so every user queued before a /stats began is counted by its end. */
static void serve(struct barrier *b)
{
    uint64_t bg = ck_pr_load_64(&barrier_gen_global);
    uint64_t rg = ck_pr_load_64(&reset_gen_global);
    ck_pr_fence_memory();
    users_wake_ack(b->idx);
    users_drain(b->idx);
    bool served = false;
    if (rg > b->slot->reset_gen) {
        users_reset_shard(b->idx);
        /* the generation is stored inside the events seqlock: the persister reads both at once */
        cnt_reset_events_to(b->slot, rg);
        served = true;
    }
    if (bg > b->slot->barrier_gen) {
        ck_pr_fence_store();
        ck_pr_store_64(&b->slot->barrier_gen, bg);
        served = true;
    }
    if (served)
        wake_others(b);
}

/* The generation of kind k every worker has served. */
static uint64_t min_gen(enum bar_kind k)
{
    uint64_t m = UINT64_MAX;
    for (unsigned i = 0; i < nworkers; i++) {
        struct cnt_slot *s = cnt_slot(i);
        uint64_t g = ck_pr_load_64(k == BAR_RESET ? &s->reset_gen : &s->barrier_gen);
        if (g < m)
            m = g;
    }
    return m;
}

enum sess_handled bar_start(struct barrier *b, struct sess *s, enum bar_kind k)
{
    uint64_t g = ck_pr_faa_64(k == BAR_RESET ? &reset_gen_global : &barrier_gen_global, 1) + 1;
    serve(b);
    if (min_gen(k) >= g)
        return b->ops.done(b->ops.ctx, s, k);
    if (b->nwait == b->capwait) { /* amortised doubling: never per request once warm */
        size_t nc = b->capwait ? b->capwait * 2 : 16;
        struct waiter *nw = realloc(b->wait, nc * sizeof(*nw));
        if (!nw) {
            sess_error(s, HTTP_E_OVERLOADED, "out of memory", SESS_HDRS(SESS_RETRY_AFTER_1));
            return SESS_H_DONE;
        }
        b->wait = nw;
        b->capwait = nc;
    }
    b->wait[b->nwait++] = (struct waiter){.s = s, .gen = g, .kind = k};
    sess_park(s, b);
    return SESS_H_PARKED;
}

uint64_t bar_reset_all(void)
{
    return ck_pr_faa_64(&reset_gen_global, 1) + 1;
}

void bar_poll(struct barrier *b)
{
    serve(b);
    if (!b->nwait)
        return;
    uint64_t mb = min_gen(BAR_STATS), mr = min_gen(BAR_RESET);
    size_t j = 0;
    for (size_t i = 0; i < b->nwait; i++) {
        struct waiter *w = &b->wait[i];
        if (w->gen <= (w->kind == BAR_RESET ? mr : mb))
            b->ops.done(b->ops.ctx, w->s, w->kind);
        else
            b->wait[j++] = *w;
    }
    b->nwait = j;
}

void bar_forget(struct barrier *b, struct sess *s)
{
    size_t j = 0;
    for (size_t i = 0; i < b->nwait; i++)
        if (b->wait[i].s != s)
            b->wait[j++] = b->wait[i];
    b->nwait = j;
}
