/* Unit tests for src/persist without a database server: memory-only mode (503 paths, the /stats
   object, the live counter summed across slots), the --max-inflight bound on durable waiters,
   the request ring's bound, the persister wake-up handshake, and the user journal — records
   are neither lost nor duplicated through ring wrap-around and the worker-side spill, and a
   shard reset marker forgets exactly that shard's pending users; the reconnect back-off's
   schedule (pst_reconnect_at). The persister side runs with
   an unreachable conninfo: it drains the queues and counts pending keys, it never blocks. */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "counters.h"
#include "log.h"
#include "persist.h"
#include "persist_int.h"

static struct config cfg;

static void fini(void)
{
    persist_fini();
    cnt_fini();
}

static void start(unsigned n, const char *db, uint32_t max_inflight)
{
    log_init(LOG_ERROR, 2);
    memset(&cfg, 0, sizeof(cfg));
    snprintf(cfg.db, sizeof(cfg.db), "%s", db);
    cfg.flush_ms = 10;
    cfg.node_id = 1;
    cfg.max_inflight = max_inflight;
    cfg.durable_timeout_ms = 2000;
    cr_assert_eq(cnt_init(n), 0);
    cr_assert_eq(persist_init(&cfg, n), 0);
}

/* A socket directory that does not exist: connecting fails at once, never blocks. */
#define NODB "host=/nonexistent-ringcount-test dbname=x connect_timeout=1"

static unsigned long long pending_keys(void)
{
    char js[512];
    persist_stats_json(js, sizeof(js));
    const char *p = strstr(js, "\"pendingKeys\":");
    cr_assert_not_null(p, "%s", js);
    return strtoull(p + 14, NULL, 10);
}

Test(persist, memory_only_mode, .fini = fini)
{
    start(3, "", 10);
    cr_assert_not(persist_enabled());
    cr_assert_eq(persist_w_durable_enter(0), -ENODEV);
    cr_assert_eq(persist_w_request(1, PERSIST_REQ_CLUSTER, 7), -ENODEV);
    int64_t v = 42;
    cr_assert_eq(persist_committed(&v), -ENODEV);
    char js[512];
    persist_stats_json(js, sizeof(js));
    cr_assert_str_eq(js, "{\"mode\":\"none\",\"dbUp\":false,\"lastFlushAgeMs\":null,\"lagMs\":0,"
                         "\"pendingKeys\":0,\"flushes\":0,\"flushErrors\":0,"
                         "\"persistedTotalRequests\":0}");
    cr_assert(persist_healthy(), "memory-only is never unready for persistence reasons");
    cr_assert_eq(persist_stats_json(js, 40), 0, "a body that does not fit is refused, not cut");
    /* the live value is the sum of every slot; tickets count per slot */
    uint64_t t;
    static const unsigned on[] = {0, 1, 1, 2, 2, 2};
    uint64_t want_ticket[3] = {0};
    for (size_t i = 0; i < sizeof(on) / sizeof(on[0]); i++) {
        cr_assert_eq(persist_w_incr(on[i], &t), 0);
        cr_assert_eq(t, ++want_ticket[on[i]]);
    }
    cr_assert_eq(persist_live(), 6);
    cr_assert_not(persist_w_batch_end(0, false), "nothing to wake without a database");
}

/* More than --max-inflight waiting durable requests are refused (429), and a released slot
   is reusable. */
Test(persist, max_inflight_bound, .fini = fini)
{
    start(2, NODB, 3);
    cr_assert(persist_enabled());
    cr_assert_eq(persist_w_durable_enter(0), 0);
    cr_assert_eq(persist_w_durable_enter(1), 0);
    cr_assert_eq(persist_w_durable_enter(0), 0);
    cr_assert_eq(persist_w_durable_enter(1), -EBUSY);
    cr_assert_eq(persist_w_durable_enter(0), -EBUSY);
    persist_w_durable_leave(1);
    cr_assert_eq(persist_w_durable_enter(0), 0);
    cr_assert_eq(persist_w_durable_enter(1), -EBUSY);
}

/* The request ring holds 255 requests; the 256th is refused, never overwritten. */
Test(persist, request_ring_bound, .fini = fini)
{
    start(1, NODB, 10);
    for (int i = 0; i < 255; i++)
        cr_assert_eq(persist_w_request(0, PERSIST_REQ_CLUSTER, (uint64_t)i), 0, "request %d", i);
    cr_assert_eq(persist_w_request(0, PERSIST_REQ_CLUSTER, 999), -EAGAIN);
}

/* One wake-up is outstanding at a time: the first worker with news posts it, later ones do not
   until the persister has run (it clears the flag before draining, so nothing is stranded). */
Test(persist, wake_handshake, .fini = fini)
{
    start(2, NODB, 10);
    cr_assert_not(persist_w_batch_end(0, false), "no news, no wake-up");
    cr_assert_eq(persist_w_durable_enter(0), 0);
    cr_assert(persist_w_batch_end(0, false));
    cr_assert_not(persist_w_batch_end(0, false), "news already reported");
    cr_assert_eq(persist_w_request(1, PERSIST_REQ_CLUSTER, 1), 0);
    cr_assert_not(persist_w_batch_end(1, false), "a wake-up is already outstanding");
    persist_p_run(1000, 0);
    cr_assert_eq(persist_w_request(1, PERSIST_REQ_CLUSTER, 2), 0);
    cr_assert(persist_w_batch_end(1, false), "the persister ran: the next news wakes it again");
}

/* A dozing persister (idle: one build a second) is woken by the first batch that served
   anything, once, and then builds at once; a batch that served nothing (the 1 s tick) leaves
   it asleep. Without the wake, increments after an idle spell waited up to a second. */
Test(persist, an_active_batch_ends_the_doze, .fini = fini)
{
    start(2, NODB, 10);
    persist_p_run(1000, 0);
    pst.doze = true;
    pst.next_due = 5000;
    ck_pr_store_32(&pst.dozing, 1);
    cr_assert_not(persist_w_batch_end(0, false), "no news: still dozing");
    cr_assert_eq(ck_pr_load_32(&pst.dozing), 1);
    cr_assert(persist_w_batch_end(1, true), "news: wake it");
    cr_assert_eq(ck_pr_load_32(&pst.dozing), 0, "the waking worker lowers the flag");
    cr_assert_not(persist_w_batch_end(0, true), "one wake-up for the doze");
    persist_p_run(1200, 0);
    cr_assert_not(pst.doze, "awake again");
    cr_assert_leq(pst.next_due, 1200, "the next flush is built at once, not at the heartbeat");
}

static void journal_id(unsigned w, unsigned i)
{
    char id[32];
    int n = snprintf(id, sizeof(id), "user-%012u-x", i); /* 19 bytes: records wrap unaligned */
    persist_journal(w, id, (size_t)n, NULL);
}

/* Worker 0 journals 40,000 new users (~880 KB) before the persister runs: the 256 KiB ring
   fills, the rest spills on the worker and moves over at each batch end. Every id arrives
   once: pendingKeys counts them exactly. */
Test(persist, journal_spill_and_wrap, .fini = fini)
{
    start(2, NODB, 10);
    for (unsigned i = 0; i < 40000; i++)
        journal_id(0, i);
    for (unsigned i = 0; i < 5; i++)
        journal_id(1, 100000 + i);
    uint64_t now = 1000;
    for (int round = 0; round < 20; round++) {
        persist_w_batch_end(0, false);
        persist_w_batch_end(1, false);
        persist_p_run(now++, 0);
    }
    cr_assert_eq(pending_keys(), 40005);
}

/* A reset marker from shard 1 forgets shard 1's pending users, and only those; users
   journaled after it count again. */
Test(persist, reset_marker_forgets_one_shard, .fini = fini)
{
    start(2, NODB, 10);
    for (unsigned i = 0; i < 7; i++)
        journal_id(0, i);
    for (unsigned i = 0; i < 4; i++)
        journal_id(1, 100 + i);
    persist_p_run(1000, 0);
    cr_assert_eq(pending_keys(), 11);
    persist_journal(1, NULL, 0, NULL);
    journal_id(1, 200);
    persist_p_run(1001, 0);
    cr_assert_eq(pending_keys(), 8);
}

/* The reconnect back-off counts from the failed attempt's start: an attempt that waited out a
   5 s connect timeout (a black-holed path) retries at once once the path is back, not a
   back-off later (counted from its end, a 30 s black hole's recovery came up to 2 s late);
   one that failed at once waits the back-off; a lost ready connection waits it from the loss.
   100 ms doubling to at most 1 s. */
Test(persist, reconnect_backoff_counts_from_the_attempt)
{
    uint64_t b = 0;
    cr_assert_eq(pst_reconnect_at(true, 1000, 1010, &b), 1100); /* refused at once */
    cr_assert_eq(b, BACKOFF_MIN_MS);
    cr_assert_eq(pst_reconnect_at(true, 1100, 1105, &b), 1300);
    cr_assert_eq(b, 200);
    b = 800;
    cr_assert_eq(pst_reconnect_at(true, 1000, 6000, &b), 6000, "a 5 s attempt retries at once");
    cr_assert_eq(b, BACKOFF_MAX_MS);
    cr_assert_eq(pst_reconnect_at(true, 6000, 6900, &b), 7000, "capped at 1 s from the start");
    cr_assert_eq(b, BACKOFF_MAX_MS);
    b = 0;
    cr_assert_eq(pst_reconnect_at(false, 1000, 5000, &b), 5100, "a lost connection: from now");
}
