/* Unit tests for src/counters: init bounds, exact 128-bit event sums (past 2^64, negative,
   across slots), the plain per-worker fields, cnt_reset_events_to, and that a snapshot taken while
   two writers add events never sees an event's count without its value (GET /stats is never
   torn, SPEC §2.1). */
#include <criterion/criterion.h>
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>

#include "counters.h"

#define P64 ((dec_t)1 << 64)

static void fini(void)
{
    cnt_fini();
}

Test(counters, init_bounds, .fini = fini)
{
    cr_assert_eq(cnt_init(0), -EINVAL);
    cr_assert_eq(cnt_init(CNT_MAX_WORKERS + 1), -EINVAL);
    cr_assert_eq(cnt_init(CNT_MAX_WORKERS), 0);
    cr_assert_eq(cnt_count(), CNT_MAX_WORKERS);
    /* zeroed, and each slot on its own cache line (no false sharing between workers) */
    for (unsigned i = 0; i < CNT_MAX_WORKERS; i++) {
        struct cnt_slot *s = cnt_slot(i);
        cr_assert_eq((uintptr_t)s % CK_MD_CACHELINE, 0);
        cr_assert_eq(s->events | s->sum_lo | s->sum_hi | s->users | s->requests, 0);
    }
    cnt_fini();
    cr_assert_eq(cnt_count(), 0);
    cr_assert_eq(cnt_init(1), 0);
}

struct sum_case {
    const char *what;
    dec_t adds[4];
    size_t n;
    dec_t want;
};

static const struct sum_case sum_cases[] = {
    {"zero", {0}, 1, 0},
    {"one micro-unit", {1}, 1, 1},
    {"1.5 + 2.25", {1500000, 2250000}, 2, 3750000},
    {"negative", {-5}, 1, -5},
    {"back to zero", {7, -7}, 2, 0},
    {"carry into the high half", {(dec_t)UINT64_MAX, 2}, 2, P64 + 1},
    {"borrow from the high half", {P64, -1}, 2, P64 - 1},
    {"negative past -2^64", {-P64, -P64, 3}, 3, -2 * P64 + 3},
    {"1e15 * 4 (max |value|, micro-units)",
     {(dec_t)1000000000000000LL * 1000000, (dec_t)1000000000000000LL * 1000000,
      (dec_t)1000000000000000LL * 1000000, (dec_t)1000000000000000LL * 1000000},
     4,
     (dec_t)4000000000000000LL * 1000000},
};

Test(counters, event_sum_exact, .fini = fini)
{
    for (size_t i = 0; i < sizeof(sum_cases) / sizeof(sum_cases[0]); i++) {
        const struct sum_case *c = &sum_cases[i];
        cr_assert_eq(cnt_init(1), 0);
        for (size_t j = 0; j < c->n; j++)
            cnt_event_add(cnt_slot(0), c->adds[j]);
        struct cnt_snapshot snap;
        cnt_snapshot(&snap);
        cr_assert_eq(snap.events, c->n, "%s", c->what);
        cr_assert(snap.sum == c->want, "%s: sum hi=%lld lo=%llu", c->what,
                  (long long)(snap.sum >> 64), (unsigned long long)snap.sum);
        cnt_fini();
    }
}

/* Slots are summed: positives and negatives on different workers, past 2^64 each. */
Test(counters, snapshot_sums_slots, .fini = fini)
{
    cr_assert_eq(cnt_init(3), 0);
    cnt_event_add(cnt_slot(0), P64 * 1000);
    cnt_event_add(cnt_slot(0), 1);
    cnt_event_add(cnt_slot(1), -(P64 * 1000) - 4);
    cnt_event_add(cnt_slot(2), 5);
    cnt_add(&cnt_slot(0)->users, 3);
    cnt_add(&cnt_slot(2)->users, 4);
    cnt_add(&cnt_slot(1)->users_overflow, 2);
    cnt_add(&cnt_slot(1)->requests, 10);
    cnt_add(&cnt_slot(2)->requests, UINT32_MAX);
    cnt_add(&cnt_slot(0)->conns_open, 7);
    cnt_add(&cnt_slot(1)->rps, 11);
    struct cnt_snapshot snap;
    cnt_snapshot(&snap);
    cr_assert_eq(snap.events, 4);
    cr_assert(snap.sum == 2, "sum lo=%lld", (long long)snap.sum);
    cr_assert_eq(snap.users, 7);
    cr_assert_eq(snap.users_overflow, 2);
    cr_assert_eq(snap.requests, 10ull + UINT32_MAX);
    cr_assert_eq(snap.conns_open, 7);
    cr_assert_eq(snap.rps, 11);
}

/* POST /reset zeroes the event aggregate and user figures of a slot, nothing else; the slot
   keeps working afterwards. */
Test(counters, reset_events, .fini = fini)
{
    cr_assert_eq(cnt_init(2), 0);
    for (int w = 0; w < 2; w++) {
        struct cnt_slot *s = cnt_slot((unsigned)w);
        cnt_event_add(s, P64 + 9);
        cnt_event_add(s, -3);
        cnt_add(&s->users, 5);
        cnt_add(&s->users_overflow, 6);
        cnt_add(&s->requests, 7);
        cnt_add(&s->conns_open, 1);
    }
    cnt_reset_events_to(cnt_slot(0), 0);
    struct cnt_snapshot snap;
    cnt_snapshot(&snap);
    cr_assert_eq(snap.events, 2);
    cr_assert(snap.sum == P64 + 6);
    cr_assert_eq(snap.users, 5);
    cr_assert_eq(snap.users_overflow, 6);
    cr_assert_eq(snap.requests, 14, "requests are not event aggregates");
    cr_assert_eq(snap.conns_open, 2);

    cnt_reset_events_to(cnt_slot(1), 0);
    cnt_event_add(cnt_slot(0), 42);
    cnt_snapshot(&snap);
    cr_assert_eq(snap.events, 1);
    cr_assert(snap.sum == 42);
    cr_assert_eq(snap.users, 0);
    cr_assert_eq(snap.users_overflow, 0);
}

/* ---- torn-read check: two writers, one reader ---- */

/* Every event adds 2^64 + 1.000000: both 64-bit halves of the sum change on every event, so a
   reader that paired a count with a half-updated sum (or an old sum) would see
   sum != events * V in that very snapshot. */
#define V (P64 + 1000000)
#define MIN_EVENTS 100000   /* per writer */
#define MIN_SNAPS 2000      /* snapshots taken while the writers are still writing */
#define MAX_EVENTS 50000000 /* per writer: a bound in case the reader is starved */

static int reader_started, writers_done;
static uint64_t snaps_shared; /* the reader's snapshot count, read by the writers */
static uint64_t written[2];

/* Keeps writing until the reader has taken MIN_SNAPS snapshots, so reads and writes overlap
   even when the scheduler runs the threads one after the other at first (2 shared cores). */
static void *writer(void *arg)
{
    unsigned w = (unsigned)(uintptr_t)arg;
    struct cnt_slot *s = cnt_slot(w);
    while (!ck_pr_load_int(&reader_started))
        ck_pr_stall();
    uint64_t i = 0;
    while (i < MAX_EVENTS && (i < MIN_EVENTS || ck_pr_load_64(&snaps_shared) < MIN_SNAPS)) {
        cnt_event_add(s, V);
        i++;
    }
    written[w] = i;
    ck_pr_inc_int(&writers_done);
    return NULL;
}

struct reader_res {
    uint64_t snaps, torn, backwards, last;
};

static void *reader(void *arg)
{
    struct reader_res *r = arg;
    uint64_t prev = 0;
    ck_pr_store_int(&reader_started, 1);
    for (;;) {
        int done = ck_pr_load_int(&writers_done);
        struct cnt_snapshot snap;
        cnt_snapshot(&snap);
        if (done < 2)
            ck_pr_store_64(&snaps_shared, ++r->snaps);
        if (snap.sum != (dec_t)snap.events * V)
            r->torn++;
        if (snap.events < prev)
            r->backwards++;
        prev = snap.events;
        r->last = snap.events;
        if (done == 2)
            break;
    }
    return NULL;
}

Test(counters, snapshot_never_torn, .fini = fini, .timeout = 20)
{
    cr_assert_eq(cnt_init(2), 0);
    struct reader_res res = {0};
    pthread_t w0, w1, rd;
    cr_assert_eq(pthread_create(&w0, NULL, writer, (void *)(uintptr_t)0), 0);
    cr_assert_eq(pthread_create(&w1, NULL, writer, (void *)(uintptr_t)1), 0);
    cr_assert_eq(pthread_create(&rd, NULL, reader, &res), 0);
    pthread_join(w0, NULL);
    pthread_join(w1, NULL);
    pthread_join(rd, NULL);
    cr_assert_geq(res.snaps, MIN_SNAPS, "only %llu snapshots overlapped the writers",
                  (unsigned long long)res.snaps);
    cr_assert_eq(res.torn, 0, "%llu of %llu snapshots were torn", (unsigned long long)res.torn,
                 (unsigned long long)res.snaps);
    cr_assert_eq(res.backwards, 0, "event count went backwards");
    cr_assert_eq(res.last, written[0] + written[1], "the snapshot after both writers finished");
    struct cnt_snapshot snap;
    cnt_snapshot(&snap);
    cr_assert(snap.sum == (dec_t)(written[0] + written[1]) * V);
}
