/* qsbr — see qsbr.h. */
#include "qsbr.h"

#include <ck_md.h>
#include <ck_pr.h>
#include <errno.h>

#include "counters.h"

static uint64_t epoch = 1; /* ck_pr; acks start at 0: nothing is safe before a worker's first batch */
static unsigned nworkers;
static struct {
    uint64_t e;
} __attribute__((aligned(CK_MD_CACHELINE))) acks[CNT_MAX_WORKERS];

int qsbr_init(unsigned n)
{
    if (n < 1 || n > CNT_MAX_WORKERS)
        return -EINVAL;
    for (unsigned i = 0; i < CNT_MAX_WORKERS; i++)
        ck_pr_store_64(&acks[i].e, 0);
    ck_pr_store_64(&epoch, 1);
    ck_pr_store_uint(&nworkers, n);
    return 0;
}

/* The ack of a worker between batches: every epoch is safe as far as it is concerned. */
#define OFFLINE UINT64_MAX

void qsbr_enter(unsigned idx)
{
    uint64_t e = ck_pr_load_64(&epoch);
    if (idx >= CNT_MAX_WORKERS)
        return;
    uint64_t ack = ck_pr_load_64(&acks[idx].e);
    if (ack == OFFLINE) {
        /* online again: the ack before any load of this batch (a full fence, store → load),
           so a reclaimer either sees the ack or this batch sees what it took out */
        ck_pr_store_64(&acks[idx].e, e);
        ck_pr_fence_memory();
        return;
    }
    if (ack == e)
        return;
    /* every access of the previous batches is done before the ack can be seen; the loads of
       this batch come after the epoch load (so they see what was taken out before it) */
    ck_pr_fence_memory();
    ck_pr_store_64(&acks[idx].e, e);
}

uint64_t qsbr_defer(void)
{
    ck_pr_fence_memory(); /* the caller's unlinking stores before the new epoch */
    return ck_pr_faa_64(&epoch, 1) + 1;
}

void qsbr_offline(unsigned idx)
{
    if (idx >= CNT_MAX_WORKERS)
        return;
    /* every access of this batch is done before the ack can be seen: a release (free on x86;
       only going online again needs the full fence) */
    ck_pr_fence_release();
    ck_pr_store_64(&acks[idx].e, OFFLINE);
}

bool qsbr_safe(uint64_t e)
{
    ck_pr_fence_memory(); /* the caller's unlinking stores before the acks are read */
    unsigned n = ck_pr_load_uint(&nworkers);
    for (unsigned i = 0; i < n; i++)
        if (ck_pr_load_64(&acks[i].e) < e)
            return false;
    ck_pr_fence_load(); /* the acks are read before anything is reused */
    return n > 0;
}
