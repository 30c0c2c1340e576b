/* Unit tests for src/users: exact distinct counting (one shard, several shards fed from several
   threads), the --max-users bound, mailbox wrap-around and the spill path, reset, and id edge
   cases (1 and 256 bytes, ids differing only in the last byte, prefixes, NUL bytes).
   "Nothing lost / nothing corrupted" is checked by re-observing every id after the drains: a
   record mangled in a mailbox would have been stored as some other id, so the correct id would
   then be new and users_total() would grow. */
#include <criterion/criterion.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "counters.h"
#include "users.h"

/* Distinct users: the shards' counts, as GET /stats sums them. */
static uint64_t users_total(void)
{
    struct cnt_snapshot snap;
    cnt_snapshot(&snap);
    return snap.users;
}

static void fini(void)
{
    users_fini();
    cnt_fini();
}

static void start(unsigned n, uint64_t max, size_t mbox)
{
    cr_assert_eq(cnt_init(n), 0);
    cr_assert_eq(users_init(n, max, mbox), 0);
}

/* Sequential model of the workers' wake-up loop: retry spills, drain, until nothing moves. */
static void settle(unsigned n)
{
    unsigned wk[64];
    for (int round = 0; round < 100000; round++) {
        size_t moved = 0;
        for (unsigned w = 0; w < n; w++)
            users_pending_wakes(w, wk, n);
        for (unsigned w = 0; w < n; w++) {
            users_wake_ack(w);
            moved += users_drain(w);
        }
        if (!moved)
            return;
    }
    cr_assert_fail("mailboxes never settled");
}

static uint64_t overflow_total(unsigned n)
{
    uint64_t t = 0;
    for (unsigned i = 0; i < n; i++)
        t += cnt_slot(i)->users_overflow;
    return t;
}

/* Observe every id from every worker again; the set must not grow. */
static void recheck(unsigned n, const char *ids, size_t stride, const size_t *lens, size_t nids)
{
    uint64_t before = users_total();
    for (size_t i = 0; i < nids; i++)
        for (unsigned w = 0; w < n; w++)
            cr_assert_eq(users_observe(w, ids + i * stride, lens[i]), 0, "id %zu is new again",
                         i);
    settle(n);
    cr_assert_eq(users_total(), before, "a re-observed id was missing (lost or corrupted)");
}

Test(users, init_rejects_bad_arguments, .fini = fini)
{
    cr_assert_eq(cnt_init(2), 0);
    cr_assert_eq(users_init(0, 10, 4096), -EINVAL);
    cr_assert_eq(users_init(2, 0, 4096), -EINVAL);
    cr_assert_eq(users_init(2, 10, 2048), -EINVAL);
    cr_assert_eq(users_init(2, 10, 6000), -EINVAL);
    cr_assert_eq(users_init(2, 10, 8192), 0);
}

Test(users, single_shard_exact, .fini = fini)
{
    start(1, 1000, 4096);
    cr_assert_eq(users_observe(0, "alice", 5), 1);
    cr_assert_eq(users_observe(0, "bob", 3), 1);
    cr_assert_eq(users_observe(0, "alice", 5), 0);
    cr_assert_eq(users_observe(0, "Alice", 5), 1, "ids are case-sensitive bytes");
    cr_assert_eq(users_observe(0, "alic", 4), 1, "a prefix is another id");
    cr_assert_eq(users_observe(0, "alicee", 6), 1);
    cr_assert_eq(users_observe(0, "bob", 3), 0);
    cr_assert_eq(users_total(), 5);
    cr_assert_eq(cnt_slot(0)->users, 5);
    cr_assert_eq(users_drain(0), 0, "one shard has no mailboxes");
    unsigned wk[4];
    cr_assert_eq(users_pending_wakes(0, wk, 4), 0);
}

/* Lengths 1 and 256 (USERS_ID_MAX), every byte value, ids equal but for the last byte, and runs
   of NUL bytes of different lengths, on one shard and on three. */
static void edge_ids(unsigned nsh)
{
    static char ids[1024][USERS_ID_MAX];
    static size_t lens[1024];
    size_t k = 0;
    for (int b = 0; b < 256; b++) { /* 256 one-byte ids, NUL included */
        ids[k][0] = (char)b;
        lens[k++] = 1;
    }
    for (int b = 0; b < 256; b++) { /* 256-byte ids differing only in the last byte */
        memset(ids[k], 'x', USERS_ID_MAX);
        ids[k][USERS_ID_MAX - 1] = (char)b;
        lens[k++] = USERS_ID_MAX;
    }
    for (size_t len = 2; len <= USERS_ID_MAX; len++) { /* NUL runs 2..256 bytes */
        memset(ids[k], 0, len);
        lens[k++] = len;
    }
    for (size_t len = 7; len <= 17; len++) { /* around the 8-byte hashing stride */
        memset(ids[k], 'x', len);
        lens[k++] = len;
    }
    uint64_t want = k;
    /* each id observed twice, from every worker */
    for (int rep = 0; rep < 2; rep++)
        for (size_t i = 0; i < k; i++)
            for (unsigned w = 0; w < nsh; w++)
                users_observe(w, ids[i], lens[i]);
    settle(nsh);
    cr_assert_eq(users_total(), want, "%u shards: %llu distinct, want %llu", nsh,
                 (unsigned long long)users_total(), (unsigned long long)want);
    cr_assert_eq(overflow_total(nsh), 0);
    recheck(nsh, &ids[0][0], sizeof(ids[0]), lens, k);
}

Test(users, edge_ids_one_shard, .fini = fini)
{
    start(1, 100000, 4096);
    edge_ids(1);
}

Test(users, edge_ids_three_shards, .fini = fini)
{
    start(3, 100000, 4096);
    edge_ids(3);
}

/* --max-users: past the bound new users are refused and counted as overflow; known users are
   not overflow; the bound is global across shards. */
Test(users, max_users_bound_one_shard, .fini = fini)
{
    start(1, 10, 4096);
    char id[16];
    for (int i = 0; i < 15; i++) {
        int n = snprintf(id, sizeof(id), "u%d", i);
        cr_assert_eq(users_observe(0, id, (size_t)n), i < 10 ? 1 : 0, "u%d", i);
    }
    cr_assert_eq(users_total(), 10);
    cr_assert_eq(cnt_slot(0)->users_overflow, 5);
    for (int i = 0; i < 10; i++) {
        int n = snprintf(id, sizeof(id), "u%d", i);
        cr_assert_eq(users_observe(0, id, (size_t)n), 0);
    }
    cr_assert_eq(users_total(), 10);
    cr_assert_eq(cnt_slot(0)->users_overflow, 5, "a known user is not an overflow");
}

Test(users, max_users_bound_three_shards, .fini = fini)
{
    start(3, 50, 4096);
    char id[16];
    for (int i = 0; i < 120; i++) {
        int n = snprintf(id, sizeof(id), "user-%d", i);
        users_observe((unsigned)i % 3, id, (size_t)n);
    }
    settle(3);
    cr_assert_eq(users_total(), 50);
    cr_assert_eq(overflow_total(3), 70);
}

/* Two shards; worker 0 observes 150..256-byte ids (odd and even lengths, so records straddle
   the ring's end) faster than worker 1 drains its 4 KiB mailbox: the mailbox fills, records
   spill and are retried, and nothing is lost or changed. */
Test(users, mailbox_wrap_and_spill, .fini = fini)
{
    start(2, 1000000, 4096);
    enum { N = 3000 };
    static char ids[N][USERS_ID_MAX];
    static size_t lens[N];
    unsigned wk[2];
    size_t queued = 0, drained = 0, woke1 = 0;
    bool spilled = false;
    for (size_t i = 0; i < N; i++) {
        lens[i] = 150 + i % 107;
        memset(ids[i], 'a' + (int)(i % 26), lens[i]);
        int h = snprintf(ids[i], 16, "%zu:", i);
        ids[i][h] = ':'; /* overwrite snprintf's NUL */
        if (users_observe(0, ids[i], lens[i]) == 0)
            queued++; /* owned by worker 1 */
        if (i % 97 == 96) { /* the producer retries spills, the owner drains */
            size_t nw = users_pending_wakes(0, wk, 2);
            for (size_t j = 0; j < nw; j++)
                cr_assert_eq(wk[j], 1, "only worker 1 is owed a wake-up");
            woke1 += nw;
            users_wake_ack(1);
            size_t d = users_drain(1);
            if (d < queued - drained)
                spilled = true; /* more was queued than the mailbox could hold */
            drained += d;
        }
    }
    cr_assert_gt(woke1, 0, "the owner was never asked to wake");
    cr_assert(spilled, "the mailbox never filled: spill path not exercised");
    settle(2);
    cr_assert_eq(users_total(), N);
    cr_assert_eq(overflow_total(2), 0);
    recheck(2, &ids[0][0], sizeof(ids[0]), lens, N);
}

/* Two shards: worker 0 observes new ids "w<*i>", "w<*i+1>", ... until cnt of them were queued
   for owner 1 (the others are worker 0's own). */
static void queue_for_1(int *i, int cnt)
{
    char id[16];
    for (int q = 0; q < cnt; (*i)++) {
        int n = snprintf(id, sizeof(id), "w%d", *i);
        if (users_observe(0, id, (size_t)n) == 0)
            q++;
    }
}

/* A wake-up is requested once per owner until the owner acknowledges it. */
Test(users, wake_once_until_ack, .fini = fini)
{
    start(2, 1000, 4096);
    unsigned wk[2];
    int i = 0;
    queue_for_1(&i, 5);
    cr_assert_eq(users_pending_wakes(0, wk, 2), 1);
    cr_assert_eq(wk[0], 1);
    cr_assert_eq(users_pending_wakes(0, wk, 2), 0, "nothing new: no second wake");
    queue_for_1(&i, 1);
    cr_assert_eq(users_pending_wakes(0, wk, 2), 0, "owner has not acknowledged the first wake");
    users_wake_ack(1);
    cr_assert_eq(users_drain(1), 6);
    queue_for_1(&i, 1);
    cr_assert_eq(users_pending_wakes(0, wk, 2), 1, "after the ack a new record wakes again");
    cr_assert_eq(wk[0], 1);
}

/* Regression: an owner that acknowledges twice before the producer's next users_pending_wakes()
   must appear once in the producer's wake list (it used to be appended again and again, past
   the end of the nshards-entry list). */
Test(users, wake_list_no_duplicates, .fini = fini)
{
    start(2, 1000, 4096);
    unsigned wk[8] = {0};
    int i = 0;
    for (int round = 0; round < 4; round++) {
        queue_for_1(&i, 1);
        users_wake_ack(1); /* owner woken by someone else (or its tick) in between */
        users_drain(1);
    }
    size_t n = users_pending_wakes(0, wk, 8);
    cr_assert_eq(n, 1, "owner 1 listed %zu times", n);
    cr_assert_eq(wk[0], 1);
}

/* ---- three workers on three threads ---- */

#define NT 3
#define NIDS 6000

static char mt_ids[NIDS][32];
static size_t mt_lens[NIDS];
static int mt_go;

struct mt_arg {
    unsigned w;
    size_t wakes;
};

/* Worker w observes every id (in its own order; each is seen by all three workers, some
   twice); like the event loop it asks for wake-ups (retrying spills) at the end of each batch,
   and acknowledges and drains its own mailboxes now and then (threads share 2 cores, so owners
   lag for whole time slices and mailboxes fill and spill). */
static void *mt_worker(void *p)
{
    struct mt_arg *a = p;
    unsigned wk[NT];
    while (!ck_pr_load_int(&mt_go))
        ck_pr_stall();
    for (size_t i = 0; i < NIDS + NIDS / 4; i++) {
        size_t j = (i * (2 * a->w + 1) + a->w * 977) % NIDS;
        users_observe(a->w, mt_ids[j], mt_lens[j]);
        if (i % 5 == 0) {
            users_wake_ack(a->w);
            users_drain(a->w);
        }
        /* End of "batch" after every observation: with a longer batch the producer can hit the
           wake_list overflow of wake_list_no_duplicates above. */
        a->wakes += users_pending_wakes(a->w, wk, NT);
    }
    a->wakes += users_pending_wakes(a->w, wk, NT);
    return NULL;
}

Test(users, three_workers_three_threads_exact, .fini = fini, .timeout = 30)
{
    start(NT, 10000000, 4096);
    for (size_t i = 0; i < NIDS; i++)
        mt_lens[i] = (size_t)snprintf(mt_ids[i], sizeof(mt_ids[i]), "user-%zu-%s", i,
                                      i % 3 ? "abcdefghijklmnop" : "q");
    pthread_t th[NT];
    struct mt_arg args[NT];
    for (unsigned t = 0; t < NT; t++) {
        args[t] = (struct mt_arg){.w = t};
        cr_assert_eq(pthread_create(&th[t], NULL, mt_worker, &args[t]), 0);
    }
    ck_pr_store_int(&mt_go, 1);
    for (unsigned t = 0; t < NT; t++)
        pthread_join(th[t], NULL);
    for (unsigned t = 0; t < NT; t++)
        cr_assert_gt(args[t].wakes, 0, "worker %u never asked for a wake-up", t);
    settle(NT);
    cr_assert_eq(users_total(), NIDS, "%llu distinct, want %d",
                 (unsigned long long)users_total(), NIDS);
    cr_assert_eq(overflow_total(NT), 0);
    recheck(NT, &mt_ids[0][0], sizeof(mt_ids[0]), mt_lens, NIDS);
}

/* POST /reset on a shard: its users are forgotten (they are new again), the reservation under
   --max-users is given back, and records queued for it before the reset are dropped with it. */
Test(users, reset_shard, .fini = fini)
{
    start(1, 10, 4096);
    char id[16];
    for (int i = 0; i < 10; i++) {
        int n = snprintf(id, sizeof(id), "r%d", i);
        cr_assert_eq(users_observe(0, id, (size_t)n), 1);
    }
    cr_assert_eq(users_observe(0, "extra", 5), 0);
    cr_assert_eq(cnt_slot(0)->users_overflow, 1);
    users_reset_shard(0);
    cnt_reset_events_to(cnt_slot(0), cnt_slot(0)->reset_gen); /* what POST /reset does next (app.c serve_control) */
    cr_assert_eq(users_total(), 0);
    for (int i = 0; i < 10; i++) {
        int n = snprintf(id, sizeof(id), "r%d", i);
        cr_assert_eq(users_observe(0, id, (size_t)n), 1, "r%d is new after the reset", i);
    }
    cr_assert_eq(users_total(), 10);
    cr_assert_eq(users_observe(0, "extra", 5), 0, "the bound still holds after a reset");
}

Test(users, reset_shard_drains_queued_first, .fini = fini)
{
    start(2, 40, 4096); /* exactly the 40 ids below: a leaked reservation shows as overflow */
    char id[16];
    int owned1 = 0, owned0 = 0;
    for (int i = 0; i < 40; i++) {
        int n = snprintf(id, sizeof(id), "q%d", i);
        if (users_observe(0, id, (size_t)n) == 1)
            owned0++;
        else
            owned1++; /* queued for 1 */
    }
    cr_assert_gt(owned0, 0);
    cr_assert_gt(owned1, 0);
    users_reset_shard(1);
    cnt_reset_events_to(cnt_slot(1), cnt_slot(1)->reset_gen);
    cr_assert_eq(users_drain(1), 0, "the reset drained the mailbox");
    cr_assert_eq(users_total(), (uint64_t)owned0);
    /* the reservation of the drained-then-reset users was returned */
    for (int i = 0; i < 40; i++) {
        int n = snprintf(id, sizeof(id), "q%d", i);
        users_observe(1, id, (size_t)n);
    }
    settle(2);
    cr_assert_eq(users_total(), 40);
    cr_assert_eq(overflow_total(2), 0);
}

/* Regression: users_reset_shard() alone must bring users_total() down (the shard's counter
   slot is zeroed with the shard). */
Test(users, reset_shard_alone_updates_count, .fini = fini)
{
    start(1, 10, 4096);
    cr_assert_eq(users_observe(0, "a", 1), 1);
    cr_assert_eq(users_observe(0, "b", 1), 1);
    users_reset_shard(0);
    cr_assert_eq(users_total(), 0, "users_total() = %llu after users_reset_shard",
                 (unsigned long long)users_total());
}

Test(users, hash_depends_on_every_byte_and_length)
{
    char a[USERS_ID_MAX], b[USERS_ID_MAX];
    memset(a, 'k', sizeof(a));
    memcpy(b, a, sizeof(b));
    cr_assert_eq(users_hash(a, sizeof(a)), users_hash(b, sizeof(b)));
    for (size_t i = 0; i < sizeof(a); i++) {
        b[i] ^= 1;
        cr_assert_neq(users_hash(a, sizeof(a)), users_hash(b, sizeof(b)), "byte %zu", i);
        b[i] ^= 1;
    }
    char z[16] = {0};
    for (size_t n = 1; n < 16; n++)
        cr_assert_neq(users_hash(z, n), users_hash(z, n + 1), "NUL runs %zu / %zu", n, n + 1);
}
