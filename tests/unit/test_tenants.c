/* Unit tests for src/tenants: labels, creation and lookup, per-worker deltas summed, overflow
   refused, set, idempotent replay / reuse / expiry / eviction, pagination, JSON, time format,
   and concurrent increments from several threads being exact. */
#include <criterion/criterion.h>
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "clock.h"
#include "qsbr.h"
#include "tenants.h"

#define S(x) x, strlen(x)
#define NOW 1795000000000ll /* 2026-11-18T11:06:40Z */

static struct uuid_gen g;

static struct tn_store *mk(unsigned nw, uint32_t idem)
{
    uuid_gen_init(&g);
    struct tn_store *st = tn_new(nw, 64, 10000, idem, 42);
    cr_assert_not_null(st);
    return st;
}

Test(tenants, labels)
{
    static const struct { const char *s; bool ok; } cases[] = {
        {"a", true}, {"Acme Corp_1.2-3", true}, {"", false}, {"a/b", false},
        {"é", false}, {"a\"b", false}, {"tab\t", false}, {"x:y", false},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        cr_assert_eq(tn_label_valid(S(cases[i].s)), cases[i].ok, "%s", cases[i].s);
    char l[257];
    memset(l, 'x', sizeof(l));
    cr_assert(tn_label_valid(l, 255));
    cr_assert_not(tn_label_valid(l, 256));
    cr_assert(tn_idem_key_valid(S("k-1:~!")));
    cr_assert(tn_idem_key_valid(S("has space")));
    cr_assert_not(tn_idem_key_valid(S("tab\there")));
    cr_assert_not(tn_idem_key_valid(S("del\x7f")));
    cr_assert_not(tn_idem_key_valid(S("")));
    cr_assert(tn_idem_key_valid(l, 64));
    cr_assert_not(tn_idem_key_valid(l, 65));
    cr_assert_not(tn_idem_key_valid(S("caf\xc3\xa9")));
}

Test(tenants, create_find_duplicate)
{
    struct tn_store *st = mk(2, 1024);
    const struct tn_tenant *a, *b, *x;
    cr_assert_eq(tn_tenant_create(st, &g, S("acme"), NOW, &a), 0);
    cr_assert_eq(tn_tenant_create(st, &g, S("beta"), NOW, &b), 0);
    cr_assert_eq(tn_tenant_create(st, &g, S("acme"), NOW, &x), -EEXIST);
    cr_assert_eq(tn_tenant_create(st, &g, S("bad/label"), NOW, &x), -EINVAL);
    cr_assert_eq(tn_tenant_find(st, a->id), a);
    cr_assert_eq(tn_tenant_find(st, b->id), b);
    uint8_t unk[16] = {1};
    cr_assert_null(tn_tenant_find(st, unk));

    const struct tn_counter *c, *d;
    cr_assert_eq(tn_counter_create(st, &g, a, S("hits"), 10, 50, NOW, &c), 0);
    cr_assert_eq(tn_counter_create(st, &g, b, NULL, 0, 0, 5, NOW, &d), 0);
    cr_assert_eq(tn_counter_create(st, &g, b, S("x"), 0, 0, NOW, &d), -EINVAL); /* max_delta */
    cr_assert_eq(tn_counter_create(st, &g, b, S(""), 0, 5, NOW, &d), -EINVAL);  /* label */
    cr_assert_eq(tn_counter_find(st, a, c->id), c);
    cr_assert_null(tn_counter_find(st, b, c->id), "a counter is only found under its tenant");
    cr_assert_eq(tn_counter_value(st, c), 10);
    uint32_t nt, nc, ni;
    tn_sizes(st, &nt, &nc, &ni);
    cr_assert_eq(nt, 2);
    cr_assert_eq(nc, 2);
    cr_assert_eq(ni, 0);
    tn_free(st);
}

Test(tenants, capacity)
{
    uuid_gen_init(&g);
    struct tn_store *st = tn_new(1, 2, 3, 16, 1);
    const struct tn_tenant *t, *u;
    cr_assert_eq(tn_tenant_create(st, &g, S("a"), NOW, &t), 0);
    cr_assert_eq(tn_tenant_create(st, &g, S("b"), NOW, &u), 0);
    cr_assert_eq(tn_tenant_create(st, &g, S("c"), NOW, &u), -ENOSPC);
    const struct tn_counter *c;
    for (int i = 0; i < 3; i++)
        cr_assert_eq(tn_counter_create(st, &g, t, NULL, 0, 0, 1, NOW, &c), 0);
    cr_assert_eq(tn_counter_create(st, &g, t, NULL, 0, 0, 1, NOW, &c), -ENOSPC);
    tn_free(st);
    cr_assert_null(tn_new(0, 1, 1, 1, 0));
}

Test(tenants, inc_sums_workers_overflow_set)
{
    struct tn_store *st = mk(4, 1024);
    const struct tn_tenant *t;
    const struct tn_counter *c;
    tn_tenant_create(st, &g, S("t"), NOW, &t);
    tn_counter_create(st, &g, t, NULL, 0, -5, 50, NOW, &c);
    int64_t v;
    cr_assert_eq(tn_counter_inc(st, 0, c, 3, &v), 0);
    cr_assert_eq(v, -2);
    cr_assert_eq(tn_counter_inc(st, 3, c, 7, &v), 0);
    cr_assert_eq(v, 5);
    cr_assert_eq(tn_counter_value(st, c), 5);
    cr_assert_eq(tn_counter_set(st, c, INT64_MAX - 1), 0);
    cr_assert_eq(tn_counter_value(st, c), INT64_MAX - 1);
    cr_assert_eq(tn_counter_inc(st, 1, c, 2, &v), -EOVERFLOW);
    cr_assert_eq(tn_counter_value(st, c), INT64_MAX - 1, "a refused increment adds nothing");
    cr_assert_eq(tn_counter_inc(st, 1, c, 1, &v), 0);
    cr_assert_eq(v, INT64_MAX);
    cr_assert_eq(tn_counter_set(st, c, INT64_MIN), 0);
    cr_assert_eq(tn_counter_value(st, c), INT64_MIN);
    tn_free(st);
}

/* The dirty rings the persister reads instead of every counter: each moved counter is taken,
   a hot counter is queued once until taken, it is queued again after, and a `set` (or a
   buffer too small for what was marked) asks for a full read. */
Test(tenants, dirty_marks_what_moved)
{
    struct tn_store *st = mk(2, 1024);
    const struct tn_tenant *t;
    const struct tn_counter *c[3];
    tn_tenant_create(st, &g, S("t"), NOW, &t);
    for (int i = 0; i < 3; i++)
        tn_counter_create(st, &g, t, NULL, 0, 0, 50, NOW, &c[i]);
    uint32_t out[16];
    bool full = false;
    cr_assert_eq(tn_dirty_take(st, out, 16, &full), 0, "nothing moved yet");
    cr_assert_not(full);
    int64_t v;
    for (int k = 0; k < 100; k++) /* a hot counter on worker 0 */
        tn_counter_inc(st, 0, c[2], 1, &v);
    tn_counter_inc(st, 1, c[0], 1, &v);
    size_t n = tn_dirty_take(st, out, 16, &full);
    cr_assert_not(full);
    cr_assert_eq(n, 2, "100 increments of one counter are one mark");
    cr_assert((out[0] == c[2]->idx && out[1] == c[0]->idx) ||
              (out[0] == c[0]->idx && out[1] == c[2]->idx));
    cr_assert_eq(tn_dirty_take(st, out, 16, &full), 0, "taken once");
    tn_counter_inc(st, 0, c[2], 1, &v);
    cr_assert_eq(tn_dirty_take(st, out, 16, &full), 1, "marked again once taken");
    cr_assert_eq(out[0], c[2]->idx);
    /* a buffer too small: what does not fit is not lost, the caller is told to read all */
    tn_counter_inc(st, 0, c[0], 1, &v);
    tn_counter_inc(st, 0, c[1], 1, &v);
    n = tn_dirty_take(st, out, 1, &full);
    cr_assert_eq(n, 1);
    cr_assert(full);
    full = false;
    cr_assert_eq(tn_counter_set(st, c[1], 7), 0);
    cr_assert_eq(tn_dirty_take(st, out, 16, &full), 0);
    cr_assert(full, "a set asks for a full read");
    full = false;
    tn_dirty_take(st, out, 16, &full);
    cr_assert_not(full, "once");
    tn_free(st);
}

Test(tenants, idempotency)
{
    struct tn_store *st = mk(2, 1024);
    const struct tn_tenant *t, *u;
    const struct tn_counter *c, *d, *e;
    tn_tenant_create(st, &g, S("t"), NOW, &t);
    tn_tenant_create(st, &g, S("u"), NOW, &u);
    tn_counter_create(st, &g, t, NULL, 0, 0, 50, NOW, &c);
    tn_counter_create(st, &g, t, NULL, 0, 0, 50, NOW, &d);
    tn_counter_create(st, &g, u, NULL, 0, 0, 50, NOW, &e);
    int64_t v;
    cr_assert_eq(tn_idem_inc(st, 0, c, S("key1"), 5, NOW, &v), 0);
    cr_assert_eq(v, 5);
    cr_assert_eq(tn_counter_inc(st, 1, c, 1, &v), 0); /* someone else counts: 6 */
    cr_assert_eq(tn_idem_inc(st, 1, c, S("key1"), 5, NOW + 1000, &v), 1, "replay");
    cr_assert_eq(v, 5, "the first result");
    cr_assert_eq(tn_counter_value(st, c), 6, "a replay does not count");
    cr_assert_eq(tn_idem_inc(st, 0, c, S("key1"), 4, NOW, &v), -EEXIST, "other delta");
    cr_assert_eq(tn_idem_inc(st, 0, d, S("key1"), 5, NOW, &v), -EEXIST, "other counter");
    cr_assert_eq(tn_idem_inc(st, 0, e, S("key1"), 5, NOW, &v), 0, "keys are per tenant");
    cr_assert_eq(tn_counter_value(st, c), 6);
    /* 24 h later the key is forgotten: it counts again */
    cr_assert_eq(tn_idem_inc(st, 0, c, S("key1"), 5, NOW + (int64_t)TN_IDEM_TTL_MS, &v), 0);
    cr_assert_eq(v, 11);
    uint32_t nt, nc, ni;
    tn_sizes(st, &nt, &nc, &ni);
    cr_assert_eq(ni, 2);
    tn_free(st);
}

Test(tenants, idempotency_bounded_evicts_oldest)
{
    uuid_gen_init(&g);
    /* 64 stripes of 16 records (the minimum) = 1024 records */
    struct tn_store *st = tn_new(1, 4, 4, 1, 5);
    const struct tn_tenant *t;
    const struct tn_counter *c;
    tn_tenant_create(st, &g, S("t"), NOW, &t);
    tn_counter_create(st, &g, t, NULL, 0, 0, 50, NOW, &c);
    char key[32];
    int64_t v;
    for (int i = 0; i < 5000; i++) {
        int n = snprintf(key, sizeof(key), "k%d", i);
        cr_assert_eq(tn_idem_inc(st, 0, c, key, (size_t)n, 1, NOW, &v), 0);
    }
    uint32_t nt, nc, ni;
    tn_sizes(st, &nt, &nc, &ni);
    cr_assert_leq(ni, 1024);
    cr_assert_geq(ni, 900);
    /* the most recent key of each stripe is certainly kept */
    int n = snprintf(key, sizeof(key), "k%d", 4999);
    cr_assert_eq(tn_idem_inc(st, 0, c, key, (size_t)n, 1, NOW, &v), 1);
    cr_assert_eq(v, 5000);
    /* k0 was evicted (its stripe got ~78 newer keys for 16 slots): it counts again */
    cr_assert_eq(tn_idem_inc(st, 0, c, "k0", 2, 1, NOW, &v), 0);
    cr_assert_eq(v, 5001);
    tn_free(st);
}

Test(tenants, pagination)
{
    struct tn_store *st = mk(1, 16);
    const struct tn_tenant *t, *u;
    tn_tenant_create(st, &g, S("t"), NOW, &t);
    tn_tenant_create(st, &g, S("u"), NOW, &u);
    const struct tn_counter *mine[25], *other;
    for (int i = 0; i < 25; i++) {
        cr_assert_eq(tn_counter_create(st, &g, t, NULL, 0, i, 50, NOW, &mine[i]), 0);
        tn_counter_create(st, &g, u, NULL, 0, 0, 50, NOW, &other); /* interleaved */
    }
    const struct tn_counter *page[TN_LIST_MAX];
    bool more;
    const struct tn_counter *after = NULL;
    int seen = 0;
    for (int round = 0; round < 3; round++) {
        int n = tn_counter_list(st, t, after, 10, page, &more);
        cr_assert_eq(n, round < 2 ? 10 : 5);
        for (int i = 0; i < n; i++)
            cr_assert_eq(page[i], mine[seen++]);
        cr_assert_eq(more, round < 2);
        after = page[n - 1];
    }
    cr_assert_eq(tn_counter_list(st, t, other, 10, page, &more), -EINVAL);
    cr_assert_eq(tn_counter_list(st, t, mine[24], 10, page, &more), 0);
    cr_assert_not(more);
    tn_free(st);
}

Test(tenants, counter_labels_unique_per_tenant)
{
    struct tn_store *st = mk(1, 16);
    const struct tn_tenant *t, *u;
    tn_tenant_create(st, &g, S("t"), NOW, &t);
    tn_tenant_create(st, &g, S("u"), NOW, &u);
    const struct tn_counter *a, *b, *x, *n1, *n2;
    cr_assert_eq(tn_counter_create(st, &g, t, S("hits"), 0, 50, NOW, &a), 0);
    cr_assert_eq(tn_counter_create(st, &g, t, S("hits"), 0, 50, NOW, &x), -EEXIST);
    cr_assert_eq(tn_counter_create(st, &g, u, S("hits"), 0, 50, NOW, &b), 0,
                 "the same label in another tenant is fine");
    cr_assert_eq(tn_counter_create(st, &g, t, S("hits2"), 0, 50, NOW, &x), 0);
    cr_assert_eq(tn_counter_create(st, &g, t, NULL, 0, 0, 50, NOW, &n1), 0);
    cr_assert_eq(tn_counter_create(st, &g, t, NULL, 0, 0, 50, NOW, &n2), 0,
                 "unlabelled counters are not constrained");
    cr_assert_eq(tn_counter_find_label(st, t, S("hits")), a);
    cr_assert_eq(tn_counter_find_label(st, u, S("hits")), b);
    cr_assert_eq(tn_counter_find_label(st, t, S("hits2")), x);
    cr_assert_null(tn_counter_find_label(st, t, S("hit")));
    cr_assert_null(tn_counter_find_label(st, u, S("hits2")));
    tn_free(st);
}

Test(tenants, delete_skips_and_frees_the_label)
{
    struct tn_store *st = mk(1, 16);
    const struct tn_tenant *t;
    tn_tenant_create(st, &g, S("t"), NOW, &t);
    const struct tn_counter *c[5], *again;
    for (int i = 0; i < 5; i++) {
        char l[8] = {'c', (char)('0' + i)};
        cr_assert_eq(tn_counter_create(st, &g, t, l, 2, i, 50, NOW, &c[i]), 0);
    }
    cr_assert_not(tn_counter_deleted(c[1]));
    cr_assert_eq(tn_counter_delete(st, c[1]), 0);
    cr_assert_eq(tn_counter_delete(st, c[1]), -ENOENT);
    cr_assert_eq(tn_counter_delete(st, c[4]), 0);
    cr_assert(tn_counter_deleted(c[1]));
    cr_assert_null(tn_counter_find(st, t, c[1]->id));
    cr_assert_eq(tn_counter_find_any(st, t, c[1]->id), c[1]);
    cr_assert_null(tn_counter_find_label(st, t, S("c1")));
    cr_assert_eq(tn_counter_find(st, t, c[2]->id), c[2]);
    const struct tn_counter *page[TN_LIST_MAX];
    bool more;
    cr_assert_eq(tn_counter_list(st, t, NULL, 2, page, &more), 2);
    cr_assert_eq(page[0], c[0]);
    cr_assert_eq(page[1], c[2], "the deleted one is skipped");
    cr_assert(more);
    cr_assert_eq(tn_counter_list(st, t, page[1], 2, page, &more), 1);
    cr_assert_eq(page[0], c[3]);
    cr_assert_not(more, "only a deleted counter is left after it");
    cr_assert_eq(tn_counter_list(st, t, c[1], 10, page, &more), 2, "a deleted cursor works");
    cr_assert_eq(page[0], c[2]);
    /* the label is free again; the new counter is a new record */
    cr_assert_eq(tn_counter_create(st, &g, t, S("c1"), 7, 50, NOW, &again), 0);
    cr_assert_neq(again, c[1]);
    cr_assert_eq(tn_counter_find_label(st, t, S("c1")), again);
    cr_assert_eq(tn_counter_create(st, &g, t, S("c1"), 7, 50, NOW, &page[0]), -EEXIST);
    tn_free(st);
}

Test(tenants, tenant_delete_takes_its_counters)
{
    struct tn_store *st = mk(1, 16);
    const struct tn_tenant *t, *u, *t2, *x;
    tn_tenant_create(st, &g, S("t"), NOW, &t);
    tn_tenant_create(st, &g, S("u"), NOW, &u);
    const struct tn_counter *a, *b, *k;
    tn_counter_create(st, &g, t, S("a"), 0, 50, NOW, &a);
    tn_counter_create(st, &g, t, NULL, 0, 0, 50, NOW, &b);
    tn_counter_create(st, &g, u, S("a"), 0, 50, NOW, &k);
    cr_assert_eq(tn_tenant_delete(st, t), 0);
    cr_assert_eq(tn_tenant_delete(st, t), -ENOENT);
    cr_assert(tn_tenant_deleted(t));
    cr_assert_not(tn_tenant_deleted(u));
    cr_assert(tn_counter_deleted(a));
    cr_assert(tn_counter_deleted(b));
    cr_assert_not(tn_counter_deleted(k));
    cr_assert_null(tn_tenant_find(st, t->id));
    cr_assert_eq(tn_tenant_find_any(st, t->id), t);
    cr_assert_eq(tn_counter_find_label(st, u, S("a")), k);
    cr_assert_eq(tn_counter_create(st, &g, t, NULL, 0, 0, 50, NOW, &b), -ENOENT);
    const struct tn_tenant *page[TN_LIST_MAX];
    bool more;
    cr_assert_eq(tn_tenant_list(st, NULL, 10, page, &more), 1);
    cr_assert_eq(page[0], u);
    /* the tenant label is free again */
    cr_assert_eq(tn_tenant_create(st, &g, S("t"), NOW, &t2), 0);
    cr_assert_neq(t2, t);
    cr_assert_eq(tn_tenant_create(st, &g, S("t"), NOW, &x), -EEXIST);
    cr_assert_eq(tn_tenant_list(st, NULL, 10, page, &more), 2);
    cr_assert_eq(page[1], t2);
    tn_free(st);
}

Test(tenants, tenant_list_pages)
{
    struct tn_store *st = mk(1, 16); /* 64 tenants at most */
    const struct tn_tenant *all[25];
    for (int i = 0; i < 25; i++) {
        char l[8] = {'t', (char)('a' + i)};
        cr_assert_eq(tn_tenant_create(st, &g, l, 2, NOW, &all[i]), 0);
    }
    const struct tn_tenant *page[TN_LIST_MAX], *after = NULL;
    bool more;
    int seen = 0;
    for (int round = 0; round < 3; round++) {
        int n = tn_tenant_list(st, after, 10, page, &more);
        cr_assert_eq(n, round < 2 ? 10 : 5);
        for (int i = 0; i < n; i++)
            cr_assert_eq(page[i], all[seen++]);
        cr_assert_eq(more, round < 2);
        after = page[n - 1];
    }
    cr_assert_eq(tn_tenant_list(st, all[24], 10, page, &more), 0);
    cr_assert_not(more);
    tn_free(st);
}

Test(tenants, json)
{
    char buf[TN_JSON_MAX];
    struct tn_store *st = mk(2, 16);
    const struct tn_tenant *t;
    const struct tn_counter *c;
    tn_tenant_create(st, &g, S("Acme 1"), 0, &t);
    size_t n = tn_tenant_json(t, buf);
    char id[37] = {0};
    uuid_format(t->id, id);
    char want[TN_JSON_MAX];
    snprintf(want, sizeof(want),
             "{\"tenant_id\":\"%s\",\"label\":\"Acme 1\",\"created_at\":\"1970-01-01T00:00:00.000Z\"}", id);
    cr_assert_str_eq(buf, want);
    cr_assert_eq(n, strlen(want));
    tn_counter_create(st, &g, t, NULL, 0, -7, 9, 0, &c);
    n = tn_counter_json(st, c, buf);
    char cid[37] = {0};
    uuid_format(c->id, cid);
    snprintf(want, sizeof(want),
             "{\"counter_id\":\"%s\",\"tenant_id\":\"%s\",\"label\":null,\"value\":-7,\"max_delta\":9,"
             "\"created_at\":\"1970-01-01T00:00:00.000Z\"}", cid, id);
    cr_assert_str_eq(buf, want);
    /* the longest object fits */
    char l[TN_LABEL_MAX];
    memset(l, 'x', sizeof(l));
    tn_counter_create(st, &g, t, l, sizeof(l), INT64_MIN, INT64_MAX, 0, &c);
    cr_assert_lt(tn_counter_json(st, c, buf), TN_JSON_MAX);
    tn_free(st);
}

/* 4 threads × 20,000 increments on one counter (each its own slot) + readers: exact. */
struct thr {
    struct tn_store *st;
    const struct tn_counter *c;
    unsigned w;
};

static void *incr(void *p)
{
    struct thr *a = p;
    int64_t v;
    for (int i = 0; i < 20000; i++)
        tn_counter_inc(a->st, a->w, a->c, 1, &v);
    return NULL;
}

Test(tenants, concurrent_increments_exact)
{
    struct tn_store *st = mk(4, 16);
    const struct tn_tenant *t;
    const struct tn_counter *c;
    tn_tenant_create(st, &g, S("t"), NOW, &t);
    tn_counter_create(st, &g, t, NULL, 0, 0, 50, NOW, &c);
    pthread_t th[4];
    struct thr a[4];
    for (unsigned i = 0; i < 4; i++) {
        a[i] = (struct thr){st, c, i};
        pthread_create(&th[i], NULL, incr, &a[i]);
    }
    int64_t prev = 0;
    for (int i = 0; i < 1000; i++) { /* a reader never sees the value go backwards */
        int64_t v = tn_counter_value(st, c);
        cr_assert_geq(v, prev);
        prev = v;
    }
    for (int i = 0; i < 4; i++)
        pthread_join(th[i], NULL);
    cr_assert_eq(tn_counter_value(st, c), 80000);
    tn_free(st);
}

/* One writer creating and deleting counters labelled "x" (3,000 times) while 3 readers look
   the label up and list the tenant: a reader only ever sees a complete record labelled "x" of
   that tenant (a listing may show an "x" deleted while it walked past it), and the label index
   never fills up with tombstones (max 4,000 counters). */
struct churn {
    struct tn_store *st;
    const struct tn_tenant *t;
    volatile int stop;
    int seen;
};

static void *churn_reader(void *p)
{
    struct churn *a = p;
    const struct tn_counter *page[TN_LIST_MAX];
    bool more;
    while (!a->stop) {
        const struct tn_counter *c = tn_counter_find_label(a->st, a->t, S("x"));
        if (c) {
            if (c->label_len != 1 || c->label[0] != 'x' || c->tenant != a->t->idx)
                return (void *)1;
            a->seen++;
        }
        int n = tn_counter_list(a->st, a->t, NULL, TN_LIST_MAX, page, &more);
        if (n < 1 || page[0]->label_len != 5) /* "fixed" first, then a few "x" seen live */
            return (void *)2;
        for (int i = 1; i < n; i++)
            if (page[i]->label_len != 1 || page[i]->label[0] != 'x')
                return (void *)3;
    }
    return NULL;
}

Test(tenants, label_churn_with_lock_free_readers)
{
    uuid_gen_init(&g);
    struct tn_store *st = tn_new(1, 4, 4000, 16, 7);
    cr_assert_not_null(st);
    const struct tn_tenant *t;
    const struct tn_counter *c, *fixed;
    tn_tenant_create(st, &g, S("t"), NOW, &t);
    cr_assert_eq(tn_counter_create(st, &g, t, S("fixed"), 0, 50, NOW, &fixed), 0);
    struct churn a[3];
    pthread_t th[3];
    for (int i = 0; i < 3; i++) {
        a[i] = (struct churn){.st = st, .t = t};
        pthread_create(&th[i], NULL, churn_reader, &a[i]);
    }
    for (int i = 0; i < 3000; i++) {
        cr_assert_eq(tn_counter_create(st, &g, t, S("x"), i, 50, NOW, &c), 0, "round %d", i);
        cr_assert_eq(tn_counter_create(st, &g, t, S("x"), i, 50, NOW, &c), -EEXIST);
        c = tn_counter_find_label(st, t, S("x"));
        cr_assert_not_null(c);
        cr_assert_eq(tn_counter_delete(st, c), 0);
    }
    for (int i = 0; i < 3; i++) {
        a[i].stop = 1;
        void *rc;
        pthread_join(th[i], &rc);
        cr_assert_null(rc, "reader %d saw a bad record (%p)", i, rc);
    }
    cr_assert_eq(tn_counter_find_label(st, t, S("fixed")), fixed);
    cr_assert_null(tn_counter_find_label(st, t, S("x")));
    tn_free(st);
}

/* Counters restored with a label already taken in their tenant (rows from before labels were
   unique) are kept, not dropped; the first one is the one found by label. */
Test(tenants, restore_keeps_a_duplicate_label)
{
    struct tn_store *st = mk(1, 16);
    const struct tn_tenant *t;
    const struct tn_counter *a, *b;
    uint8_t ia[16] = {1, 2, 3}, ib[16] = {4, 5, 6};
    tn_tenant_create(st, &g, S("t"), NOW, &t);
    cr_assert_eq(tn_counter_restore(st, t, ia, S("dup"), 1, 50, NOW, &a), 0);
    cr_assert_eq(tn_counter_restore(st, t, ib, S("dup"), 2, 50, NOW, &b), 0);
    cr_assert_eq(tn_counter_find(st, t, ib), b);
    cr_assert_eq(tn_counter_find_label(st, t, S("dup")), a);
    cr_assert_eq(tn_counter_delete(st, b), 0, "deleting the unindexed one");
    cr_assert_eq(tn_counter_find_label(st, t, S("dup")), a, "leaves the indexed one alone");
    tn_free(st);
}

/* Persistence support: records restored with their ids are found by them (and a second copy of
   an id or label is refused); a restored idempotency record answers a replay without counting;
   tn_idem_collect returns exactly the records inserted after the cursor, once. */
Test(tenants, restore_and_collect)
{
    struct tn_store *st = mk(2, 1024);
    uint8_t tid[16], cid[16], other[16];
    uuid_v4(&g, tid);
    uuid_v4(&g, cid);
    uuid_v4(&g, other);
    const struct tn_tenant *t, *t2;
    const struct tn_counter *c, *c2;
    cr_assert_eq(tn_tenant_restore(st, tid, S("acme"), NOW - 5, &t), 0);
    cr_assert_eq(tn_tenant_restore(st, tid, S("other"), NOW, &t2), -EEXIST);
    cr_assert_eq(tn_tenant_restore(st, other, S("acme"), NOW, &t2), -EEXIST);
    cr_assert_eq(tn_tenant_find(st, tid), t);
    cr_assert_eq(t->created_ms, NOW - 5);
    cr_assert_eq(tn_counter_restore(st, t, cid, NULL, 0, -41, 7, NOW - 4, &c), 0);
    cr_assert_eq(tn_counter_restore(st, t, cid, NULL, 0, 1, 7, NOW, &c2), -EEXIST);
    cr_assert_eq(tn_counter_find(st, t, cid), c);
    cr_assert_eq(tn_counter_value(st, c), -41);
    cr_assert_eq(c->max_delta, 7);
    cr_assert_eq(tn_counter_at(st, c->idx), c);
    cr_assert_eq(tn_tenant_at(st, t->idx), t);

    cr_assert_eq(tn_idem_restore(st, c, S("k1"), 2, -39, NOW - 3), 0);
    uint64_t cur[TN_IDEM_STRIPES];
    tn_idem_cursor(st, cur);
    int64_t v;
    cr_assert_eq(tn_idem_inc(st, 0, c, S("k1"), 2, NOW, &v), 1);
    cr_assert_eq(v, -39);
    cr_assert_eq(tn_counter_value(st, c), -41, "a restored record's replay does not count");
    cr_assert_eq(tn_idem_inc(st, 1, c, S("k2"), 3, NOW, &v), 0);
    cr_assert_eq(tn_idem_inc(st, 0, c, S("k3\"\\"), 1, NOW + 1, &v), 0);
    struct tn_idem_out out[8];
    uint64_t lost = 0;
    size_t n = tn_idem_collect(st, cur, out, 8, &lost);
    cr_assert_eq(n, 2, "only the two new records");
    cr_assert_eq(lost, 0);
    bool seen2 = false, seen3 = false;
    for (size_t i = 0; i < n; i++) {
        cr_assert_eq(out[i].counter, c->idx);
        cr_assert_eq(out[i].tenant, t->idx);
        if (out[i].klen == 2 && memcmp(out[i].key, "k2", 2) == 0)
            seen2 = out[i].delta == 3 && out[i].value == -38 && out[i].created_ms == NOW;
        if (out[i].klen == 4 && memcmp(out[i].key, "k3\"\\", 4) == 0)
            seen3 = out[i].delta == 1 && out[i].value == -37;
    }
    cr_assert(seen2 && seen3);
    cr_assert_eq(tn_idem_collect(st, cur, out, 8, &lost), 0, "collected once");
    cr_assert_eq(tn_counter_set(st, c, 100), 0);
    cr_assert_eq(tn_counter_value_stable(st, c), 100);
    tn_free(st);
}

/* ---------------------------------------------------------------- eviction (--db cache) */

static bool always(const struct tn_counter *c, void *arg)
{
    (void)c;
    (void)arg;
    return true;
}

static bool never(const struct tn_counter *c, void *arg)
{
    (void)c;
    (void)arg;
    return false;
}

static void id_of(uint8_t id[16], uint32_t i)
{
    memset(id, 0, 16);
    memcpy(id, &i, sizeof(i));
    id[6] = 0x40; /* any bytes do for the store */
}

/* A store of max counters for nw workers (each a qsbr reader) with one tenant "t" in *t. */
static struct tn_store *mk_cache(unsigned nw, uint32_t max, const struct tn_tenant **t)
{
    cr_assert_eq(qsbr_init(nw), 0);
    uuid_gen_init(&g);
    struct tn_store *st = tn_new(nw, 4, max, 16, 9);
    cr_assert_not_null(st);
    cr_assert_eq(tn_tenant_create(st, &g, S("t"), NOW, t), 0);
    return st;
}

/* 100 counters, 90 last used long ago and 10 just now: 10 evictions take only old ones; the
   evicted are found no more and out of the listing; a restore waits for room until every
   worker has moved on (qsbr) and then reuses a record: its value is the restored one, though
   the old record carried deltas. */
Test(tenants, evicts_least_recently_used_and_reuses_after_grace)
{
    const struct tn_tenant *t;
    struct tn_store *st = mk_cache(1, 100, &t);
    const struct tn_counter *c[100], *x;
    uint8_t id[16];
    for (uint32_t i = 0; i < 100; i++) {
        id_of(id, i);
        cr_assert_eq(tn_counter_restore(st, t, id, NULL, 0, 5, 50, NOW, &c[i]), 0);
        tn_counter_touch(c[i], i < 90 ? 0 : clock_ms(CLOCK_MONOTONIC_COARSE)); /* long ago, now */
        int64_t v;
        cr_assert_eq(tn_counter_inc(st, 0, c[i], 3, &v), 0);
    }
    id_of(id, 500);
    cr_assert_eq(tn_counter_restore(st, t, id, NULL, 0, 7, 50, NOW, &x), -ENOSPC);
    qsbr_enter(0);
    cr_assert_eq(tn_counter_evict(st, 10, always, NULL), 10);
    unsigned found = 0, listed = 0;
    for (uint32_t i = 0; i < 100; i++) {
        id_of(id, i);
        found += tn_counter_find(st, t, id) != NULL;
        if (i >= 90)
            cr_assert_not_null(tn_counter_find(st, t, id), "recently used %u evicted", i);
    }
    cr_assert_eq(found, 90);
    const struct tn_counter *page[TN_LIST_MAX];
    bool more;
    for (const struct tn_counter *after = NULL;; after = page[TN_LIST_MAX - 1]) {
        int n = tn_counter_list(st, t, after, TN_LIST_MAX, page, &more);
        listed += (unsigned)n;
        if (!more)
            break;
    }
    cr_assert_eq(listed, 90);
    struct tn_cache_sizes z;
    tn_cache_sizes(st, &z);
    cr_assert_eq(z.cached, 90);
    cr_assert_eq(z.evicting, 10);
    cr_assert_eq(z.room, 0);
    /* the worker has not entered a new batch: nothing is free yet */
    cr_assert_eq(tn_reclaim(st, always, NULL), 0);
    id_of(id, 500);
    cr_assert_eq(tn_counter_restore(st, t, id, NULL, 0, 7, 50, NOW, &x), -ENOSPC);
    qsbr_enter(0);
    cr_assert_eq(tn_reclaim(st, never, NULL), 0, "unflushed ones stay");
    cr_assert_eq(tn_reclaim(st, always, NULL), 10);
    cr_assert_eq(tn_counter_restore(st, t, id, NULL, 0, 7, 50, NOW, &x), 0);
    cr_assert_lt(x->idx, 100);
    cr_assert_eq(tn_counter_value(st, x), 7);
    cr_assert_eq(tn_counter_find(st, t, id), x);
    tn_cache_sizes(st, &z);
    cr_assert_eq(z.cached, 91);
    cr_assert_eq(z.room, 9);
    cr_assert_eq(z.evicted, 10);
    tn_free(st);
}

/* Tenant i's id: id_of's with another byte, so it never equals a counter's. */
static void tid_of(uint8_t id[16], uint32_t i)
{
    id_of(id, i);
    id[15] = 0x7e;
}

/* A store of max tenants (one worker, a qsbr reader) holding tenants 0..max-1, labelled "t<i>",
   touched at used(i) (ms). */
static struct tn_store *mk_tenants(uint32_t max, const struct tn_tenant **t, uint64_t (*used)(uint32_t))
{
    cr_assert_eq(qsbr_init(1), 0);
    struct tn_store *st = tn_new(1, max, 64, 16, 9);
    cr_assert_not_null(st);
    for (uint32_t i = 0; i < max; i++) {
        uint8_t id[16];
        char label[16];
        tid_of(id, i);
        int n = snprintf(label, sizeof(label), "t%u", i);
        cr_assert_eq(tn_tenant_restore(st, id, label, (size_t)n, NOW, &t[i]), 0);
        tn_tenant_touch(t[i], used(i));
    }
    return st;
}

/* 64 tenants: 0 unused longest (3 counters), 1..30 unused (none), 31..59 used a while ago (one
   counter each), 60..63 just used (none). In ms of the coarse monotonic clock. */
static uint64_t layout_used(uint32_t i)
{
    uint64_t now = clock_ms(CLOCK_MONOTONIC_COARSE);
    return i == 0 ? 0 : i <= 30 ? TN_USED_MS : i < 60 ? now / 2 : now;
}

/* tn_evictable_fn: the counters of tenant *arg are clean, all others are not. */
static bool only_of(const struct tn_counter *c, void *arg)
{
    return c->tenant == ((const struct tn_tenant *)arg)->idx;
}

/* A full store of 64 tenants (layout_used): evictions take least recently used tenants without
   cached counters; one whose counters are unflushed stays with them; once they are clean they
   go first and the tenant after them; the evicted are found no more and their labels are free;
   a restore waits for room until every worker has moved on (qsbr), then reuses a record. */
Test(tenants, evicts_unused_tenants_after_their_counters)
{
    const struct tn_tenant *t[64], *x;
    struct tn_store *st = mk_tenants(64, t, layout_used);
    const struct tn_counter *c;
    uint8_t id[16];
    for (uint32_t i = 0; i < 64; i++)
        for (uint32_t k = 0; k < (i == 0 ? 3u : i >= 31 && i < 60); k++) {
            id_of(id, i * 4 + k);
            cr_assert_eq(tn_counter_restore(st, t[i], id, NULL, 0, 5, 50, NOW, &c), 0);
        }
    tid_of(id, 100);
    cr_assert_eq(tn_tenant_restore(st, id, S("new"), NOW, &x), -ENOSPC);
    qsbr_enter(0);
    unsigned out = 0;
    for (int k = 0; k < 10000 && out < 30; k++)
        out += tn_tenant_evict(st, 1, never, NULL); /* every counter is unflushed */
    cr_assert_eq(out, 30);
    for (int k = 0; k < 100; k++)
        out += tn_tenant_evict(st, 1, never, NULL);
    cr_assert_eq(out, 30, "a recently used tenant or one with unflushed counters went");
    for (uint32_t i = 0; i < 64; i++)
        cr_assert_eq(tn_tenant_find(st, t[i]->id) != NULL, i == 0 || i > 30, "tenant %u", i);
    id_of(id, 2);
    cr_assert_not_null(tn_counter_find(st, t[0], id), "an unflushed counter went");
    for (int k = 0; k < 1000 && tn_tenant_find(st, t[0]->id); k++)
        out += tn_tenant_evict(st, 1, only_of, (void *)t[0]);
    cr_assert_eq(out, 31, "tenant 0 went once its counters were clean");
    struct tn_cache_sizes z;
    tn_cache_sizes(st, &z);
    cr_assert_eq(z.t_cached, 33);
    cr_assert_eq(z.t_evicting, 31);
    cr_assert_eq(z.t_evicted, 31);
    cr_assert_eq(z.evicting, 3, "tenant 0's counters went first");
    /* no worker has entered a new batch: nothing is free yet */
    cr_assert_eq(tn_reclaim(st, always, NULL), 0);
    tid_of(id, 100);
    cr_assert_eq(tn_tenant_restore(st, id, S("new"), NOW, &x), -ENOSPC);
    qsbr_enter(0);
    cr_assert_eq(tn_reclaim(st, always, NULL), 34);
    cr_assert_eq(tn_tenant_restore(st, id, S("t1"), NOW, &x), 0, "an evicted tenant's label is free");
    cr_assert_lt(x->idx, 64);
    cr_assert_eq(tn_tenant_find(st, id), x);
    tid_of(id, 101);
    cr_assert_eq(tn_tenant_restore(st, id, S("t40"), NOW, &x), -EEXIST, "a cached one's is not");
    tid_of(id, 0);
    cr_assert_eq(tn_tenant_restore(st, id, S("t0"), NOW, &x), 0, "an evicted one comes back");
    tn_cache_sizes(st, &z);
    cr_assert_eq(z.t_cached, 35);
    cr_assert_eq(z.t_room, 29);
    tn_free(st);
}

static uint64_t used_by_index(uint32_t i)
{
    return i;
}

/* 20,000 restore/evict/reclaim rounds over a 1,000-tenant store: the tenant index tables are
   rebuilt as tombstones pile up (a probe would otherwise never meet an empty slot and spin),
   and every cached tenant stays findable by id and its label taken. */
Test(tenants, tenant_churn_rebuilds_the_index)
{
    static const struct tn_tenant *t[1000];
    struct tn_store *st = mk_tenants(1000, t, used_by_index);
    uint8_t id[16];
    char label[16];
    uint32_t next = 1000;
    for (int round = 0; round < 200; round++) {
        qsbr_enter(0);
        unsigned out = 0;
        for (int k = 0; k < 100 && out < 100; k++)
            out += tn_tenant_evict(st, 100 - out, always, NULL);
        cr_assert_eq(out, 100);
        struct tn_cache_sizes z;
        tn_cache_sizes(st, &z);
        cr_assert_leq(z.t_tombs, 2048 / 8, "round %d: %u tombstones", round, z.t_tombs);
        qsbr_enter(0);
        cr_assert_eq(tn_reclaim(st, always, NULL), 100);
        for (;;) {
            const struct tn_tenant *x;
            tid_of(id, next);
            int n = snprintf(label, sizeof(label), "t%u", next);
            int rc = tn_tenant_restore(st, id, label, (size_t)n, NOW, &x);
            if (rc == -ENOSPC)
                break;
            cr_assert_eq(rc, 0);
            tn_tenant_touch(x, next);
            next++;
        }
    }
    unsigned cached = 0;
    for (uint32_t i = 0; i < next; i++) {
        tid_of(id, i);
        const struct tn_tenant *x = tn_tenant_find(st, id), *y;
        if (!x)
            continue;
        cached++;
        int n = snprintf(label, sizeof(label), "t%u", i);
        cr_assert_eq(x->label_len, n);
        tid_of(id, 5000000);
        cr_assert_eq(tn_tenant_restore(st, id, label, (size_t)n, NOW, &y), -EEXIST);
    }
    cr_assert_eq(cached, 1000);
    cr_assert_eq(next, 1000 + 200 * 100);
    tn_free(st);
}

/* 20,000 restore/evict/reclaim rounds over a 1,000-counter store with labels: the index
   tables are rebuilt as tombstones pile up (a probe would otherwise never meet an empty slot
   and spin), every cached counter stays findable by id and label, and retired tables are
   freed (ASan's leak check). */
Test(tenants, churn_rebuilds_the_index)
{
    const struct tn_tenant *t;
    struct tn_store *st = mk_cache(1, 1000, &t);
    uint8_t id[16];
    char label[16];
    uint32_t next = 0;
    for (int round = 0; round < 200; round++) {
        for (;;) {
            const struct tn_counter *c;
            id_of(id, next);
            int n = snprintf(label, sizeof(label), "l%u", next);
            int rc = tn_counter_restore(st, t, id, label, (size_t)n, next, 50, NOW, &c);
            if (rc == -ENOSPC)
                break;
            cr_assert_eq(rc, 0);
            tn_counter_touch(c, next);
            next++;
        }
        qsbr_enter(0);
        cr_assert_eq(tn_counter_evict(st, 100, always, NULL), 100);
        struct tn_cache_sizes z;
        tn_cache_sizes(st, &z);
        cr_assert_leq(z.tombs, 2048 / 8, "round %d: %u tombstones", round, z.tombs);
        qsbr_enter(0);
        cr_assert_eq(tn_reclaim(st, always, NULL), 100);
    }
    unsigned cached = 0;
    for (uint32_t i = 0; i < next; i++) {
        id_of(id, i);
        const struct tn_counter *c = tn_counter_find(st, t, id);
        if (!c)
            continue;
        cached++;
        int n = snprintf(label, sizeof(label), "l%u", i);
        cr_assert_eq(tn_counter_find_label(st, t, label, (size_t)n), c);
        cr_assert_eq(tn_counter_value(st, c), (int64_t)i);
    }
    cr_assert_eq(cached, 900); /* full, less the last round's evictions */
    tn_free(st);
}

/* Three reader threads (workers 0-2: a batch of 64 lookups between qsbr_enter calls; worker 2
   goes offline after each, qsbr_offline) against
   a writer evicting and reusing records of a 500-counter store 30,000 times: a record a reader
   found keeps the id and value it was found with until the reader's batch ends. Reusing a
   record before every reader moved on fails this at once. The writer goes on past 30,000 until
   every reader has run 200 batches beside it. */
struct evr {
    struct tn_store *st;
    const struct tn_tenant *t;
    unsigned w;
    volatile uint32_t *next;
    volatile int stop;
    volatile unsigned batches;
    unsigned found, bad;
};

static unsigned fewest_batches(const struct evr *a, unsigned n)
{
    unsigned m = a[0].batches;
    for (unsigned i = 1; i < n; i++)
        m = a[i].batches < m ? a[i].batches : m;
    return m;
}

static void *evict_reader(void *p)
{
    struct evr *a = p;
    uint64_t r = 0x9e3779b97f4a7c15ull * (a->w + 1);
    while (!a->stop) {
        qsbr_enter(a->w);
        const struct tn_counter *held[64];
        uint32_t ids[64];
        unsigned n = 0;
        for (int k = 0; k < 64; k++) {
            r ^= r << 13, r ^= r >> 7, r ^= r << 17;
            uint32_t hi = *a->next, i = hi > 2000 ? hi - 2000 + (uint32_t)(r % 2000) : (uint32_t)(r % (hi + 1));
            uint8_t id[16];
            id_of(id, i);
            const struct tn_counter *c = tn_counter_find(a->st, a->t, id);
            if (c) {
                held[n] = c;
                ids[n++] = i;
            }
        }
        for (unsigned k = 0; k < n; k++) { /* still the same records at the end of the batch */
            uint8_t id[16];
            id_of(id, ids[k]);
            if (memcmp(held[k]->id, id, 16) != 0 || tn_counter_value(a->st, held[k]) != ids[k])
                a->bad++; /* go on entering batches: the writer must not wait forever */
        }
        a->found += n;
        a->batches = a->batches + 1;
        if (a->w == 2) /* this one waits between batches, as a worker does before io_uring_enter */
            qsbr_offline(a->w);
    }
    return NULL;
}

Test(tenants, eviction_waits_for_lock_free_readers)
{
    const struct tn_tenant *t;
    struct tn_store *st = mk_cache(3, 500, &t);
    volatile uint32_t next = 0;
    int wrc = -ENOSPC;
    struct evr a[3];
    pthread_t th[3];
    for (unsigned i = 0; i < 3; i++) {
        a[i] = (struct evr){.st = st, .t = t, .w = i, .next = &next};
        pthread_create(&th[i], NULL, evict_reader, &a[i]);
    }
    for (uint32_t done = 0; done < 30000 || fewest_batches(a, 3) < 200;) {
        const struct tn_counter *c;
        uint8_t id[16];
        id_of(id, next);
        int rc = tn_counter_restore(st, t, id, NULL, 0, next, 50, NOW, &c);
        if (rc == 0) {
            tn_counter_touch(c, next);
            next = next + 1;
            done++;
            continue;
        }
        if (rc != -ENOSPC) {
            wrc = rc;
            break;
        }
        /* evict only when the last eviction has been reclaimed, as the persister does (it
           keeps 1/64 free): evicting 50 more on every -ENOSPC while the readers finish their
           batches emptied the cache, and a reader on 2 cores then found nothing in 100,000
           batches */
        struct tn_cache_sizes z;
        tn_cache_sizes(st, &z);
        if (!z.evicting)
            tn_counter_evict(st, 50, always, NULL);
        if (!tn_reclaim(st, always, NULL))
            sched_yield();
    }
    for (int i = 0; i < 3; i++) /* every reader joined before an assertion can leave this frame */
        a[i].stop = 1;
    for (int i = 0; i < 3; i++)
        pthread_join(th[i], NULL);
    cr_assert_eq(wrc, -ENOSPC, "restore failed with %d, not for want of space", wrc);
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(a[i].bad, 0, "reader %d held a record reused under it (%u times)", i, a[i].bad);
        cr_assert_gt(a[i].found, 0, "reader %d: %u batches, next %u", i, a[i].batches, next);
    }
    tn_free(st);
}
