/* tenants — see tenants.h. */
#include "tenants.h"
#include "mix.h"

#include <ck_pr.h>
#include <ck_sequence.h>
#include <ck_spinlock.h>
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "fmt.h"
#include "qsbr.h"
#include "json.h"

#define TCHUNK 1024u /* tenants per chunk */
_Static_assert(sizeof(struct tn_tenant) == 312 && sizeof(struct tn_counter) == 328,
               "README.md and tenants.h give the records' sizes");
#define CCHUNK 4096u /* counters per chunk: 4096 × 8-byte delta = 32 KiB per worker */
/* Dirty ring per worker: 65,536 counter indexes (256 KiB) between two flushes 10 ms apart is
   6.5M distinct counters a second per worker; past it the worker raises `overflow` and the next
   flush scans everything. The 256-entry cache keeps a hot counter from filling the ring: it is
   pushed again only once the persister has taken its last entry. */
#define DIRTY_RING 65536u
#define DIRTY_CACHE 256u
/* An index slot whose record was deleted (label) or evicted (id and label): probes go on past
   it, an insertion may reuse it. Records are reused after eviction, so each kind's tables count
   their tombstones and are rebuilt (a fresh table, published, the old one freed after a grace
   period) once they pass an eighth of the table: a probe always meets an empty slot within a
   short run. */
#define TOMB UINT32_MAX
/* Index tables a rebuild replaced, waiting for their grace period (two per rebuild; a rebuild
   happens at most every table/8 evictions, seconds apart at least). */
#define RETIRED_MAX 8
/* Evicted counters waiting for their grace period: at most this many at a time. */
#define LIMBO_MAX 65536u

/* 104 bytes. */
struct idem_rec {
    char key[TN_IDEM_KEY_MAX];
    int64_t delta, value, created_ms;
    uint32_t counter;  /* counter idx */
    uint32_t tenant;   /* tenant idx */
    uint32_t hnext;    /* chain: record index + 1, 0 = end */
    uint8_t klen;      /* 0 = free slot */
};

struct idem_stripe {
    ck_spinlock_t lock;
    uint32_t cap, live;      /* ring of cap records */
    uint64_t seq;            /* records ever inserted; seq % cap = the next (oldest) to overwrite */
    uint32_t *heads;         /* cap chains, record index + 1 */
    struct idem_rec *r;
} __attribute__((aligned(64)));

struct tn_dirty { /* one per worker: the counters it moved since the persister last looked */
    uint32_t *ring;
    uint32_t tail __attribute__((aligned(64)));  /* worker */
    uint32_t overflow;                            /* worker sets, persister clears */
    uint32_t head __attribute__((aligned(64)));  /* persister */
    struct {
        uint32_t idx, pos; /* idx + 1 (0 = empty) and the ring position it was pushed at */
    } cache[DIRTY_CACHE] __attribute__((aligned(64))); /* worker-private */
} __attribute__((aligned(64)));

/* The records of one kind that leave the cache (--db; under mu): evicted ones wait in eviction
   order for their grace period (src/qsbr), then go on the free stack for reuse. */
struct pool {
    uint32_t *freel, nfree;
    struct {
        uint32_t idx;
        uint64_t epoch;         /* qsbr epoch after which no worker holds it */
    } *limbo;
    uint32_t nlimbo, limbo_cap;
    uint32_t tombs;             /* tombstones in this kind's id + label index tables */
    uint64_t evicted;           /* taken out since tn_new */
};

struct tn_store {
    pthread_mutex_t mu;
    struct tn_dirty *dirty;   /* nworkers */
    uint32_t set_gen;         /* tn_counter_set calls: the persister scans everything */
    uint32_t set_seen;        /* set_gen as the persister last saw it (persister-private) */
    bool frozen;              /* tn_idem_freeze holds every stripe lock (the persister's flag) */
    ck_sequence_t setseq;     /* around tn_counter_set's base store: tn_counter_value_stable */
    unsigned nworkers;
    uint32_t max_t, max_c;
    uint32_t nt, nc;          /* published counts (ck_pr) */
    uint64_t seed;
    struct tn_tenant **tch;   /* max_t / TCHUNK chunk pointers */
    struct tn_counter **cch;
    uint64_t **dch;           /* [chunk * nworkers + w] → CCHUNK deltas */
    uint32_t tmask, cmask;    /* index tables: slot = idx + 1, 0 empty */
    uint32_t *tidx, *cidx, *tlabel, *clabel; /* cidx, clabel, tlabel also take TOMB */
    uint32_t idem_per;        /* records per stripe (power of two) */
    struct idem_stripe *idem;
    struct pool cp, tp;         /* eviction (under mu): counters, tenants */
    uint64_t rng;
    struct {
        uint32_t *tab;
        uint64_t epoch;
    } retired[RETIRED_MAX];
    unsigned nretired;
};


static uint64_t hash_bytes(uint64_t seed, const void *p, size_t n)
{
    const unsigned char *s = p;
    uint64_t h = seed ^ (n * 0x9e3779b97f4a7c15ull);
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, s, 8);
        h = mix64(h ^ w);
        s += 8;
        n -= 8;
    }
    uint64_t w = 0;
    memcpy(&w, s, n);
    return mix64(h ^ w ^ 0xff);
}

static uint32_t pow2_at_least(uint64_t n)
{
    uint32_t c = 16;
    while (c < n)
        c <<= 1;
    return c;
}

struct tn_store *tn_new(unsigned nworkers, uint32_t max_tenants, uint32_t max_counters,
                        uint32_t idem_capacity, uint64_t seed)
{
    if (!nworkers || !max_tenants || !max_counters || !idem_capacity ||
        max_tenants > (1u << 24) || max_counters > (1u << 26) || idem_capacity > (1u << 26))
        return NULL;
    struct tn_store *st = calloc(1, sizeof(*st));
    if (!st)
        return NULL;
    pthread_mutex_init(&st->mu, NULL);
    ck_sequence_init(&st->setseq);
    st->nworkers = nworkers;
    st->max_t = max_tenants;
    st->max_c = max_counters;
    st->seed = mix64(seed ^ 0x5bd1e995u);
    uint32_t ntch = (max_tenants + TCHUNK - 1) / TCHUNK, ncch = (max_counters + CCHUNK - 1) / CCHUNK;
    st->tch = calloc(ntch, sizeof(*st->tch));
    st->cch = calloc(ncch, sizeof(*st->cch));
    st->dch = calloc((size_t)ncch * nworkers, sizeof(*st->dch));
    st->dirty = aligned_alloc(64, sizeof(*st->dirty) * nworkers);
    if (!st->dirty)
        goto fail;
    memset(st->dirty, 0, sizeof(*st->dirty) * nworkers);
    for (unsigned w = 0; w < nworkers; w++)
        if (!(st->dirty[w].ring = malloc(DIRTY_RING * sizeof(uint32_t))))
            goto fail;
    /* load factor <= 1/2: probes stay short */
    uint32_t ts = pow2_at_least(2ull * max_tenants), cs = pow2_at_least(2ull * max_counters);
    st->tmask = ts - 1;
    st->cmask = cs - 1;
    st->tidx = calloc(ts, sizeof(uint32_t));
    st->tlabel = calloc(ts, sizeof(uint32_t));
    st->cidx = calloc(cs, sizeof(uint32_t));
    st->clabel = calloc(cs, sizeof(uint32_t));
    st->idem_per = pow2_at_least((idem_capacity + TN_IDEM_STRIPES - 1) / TN_IDEM_STRIPES);
    st->idem = aligned_alloc(64, sizeof(*st->idem) * TN_IDEM_STRIPES);
    st->cp.limbo_cap = max_counters < LIMBO_MAX ? max_counters : LIMBO_MAX;
    st->cp.freel = calloc(max_counters, sizeof(uint32_t)); /* 4 MiB at 1M, touched as used */
    st->cp.limbo = calloc(st->cp.limbo_cap, sizeof(*st->cp.limbo));
    st->tp.limbo_cap = max_tenants < LIMBO_MAX ? max_tenants : LIMBO_MAX;
    st->tp.freel = calloc(max_tenants, sizeof(uint32_t));
    st->tp.limbo = calloc(st->tp.limbo_cap, sizeof(*st->tp.limbo));
    st->rng = st->seed | 1;
    if (!st->tch || !st->cch || !st->dch || !st->tidx || !st->tlabel || !st->cidx || !st->clabel ||
        !st->idem || !st->cp.freel || !st->cp.limbo || !st->tp.freel || !st->tp.limbo)
        goto fail;
    memset(st->idem, 0, sizeof(*st->idem) * TN_IDEM_STRIPES);
    for (unsigned i = 0; i < TN_IDEM_STRIPES; i++) {
        struct idem_stripe *s = &st->idem[i];
        ck_spinlock_init(&s->lock);
        s->cap = st->idem_per;
        s->heads = calloc(s->cap, sizeof(uint32_t));
        s->r = calloc(s->cap, sizeof(struct idem_rec));
        if (!s->heads || !s->r)
            goto fail;
    }
    return st;
fail:
    tn_free(st);
    return NULL;
}

void tn_free(struct tn_store *st)
{
    if (!st)
        return;
    uint32_t ntch = (st->max_t + TCHUNK - 1) / TCHUNK, ncch = (st->max_c + CCHUNK - 1) / CCHUNK;
    if (st->tch)
        for (uint32_t i = 0; i < ntch; i++)
            free(st->tch[i]);
    if (st->cch)
        for (uint32_t i = 0; i < ncch; i++)
            free(st->cch[i]);
    if (st->dch)
        for (size_t i = 0; i < (size_t)ncch * st->nworkers; i++)
            free(st->dch[i]);
    if (st->idem)
        for (unsigned i = 0; i < TN_IDEM_STRIPES; i++) {
            free(st->idem[i].heads);
            free(st->idem[i].r);
        }
    for (unsigned w = 0; st->dirty && w < st->nworkers; w++)
        free(st->dirty[w].ring);
    free(st->dirty);
    free(st->idem);
    free(st->tch);
    free(st->cch);
    free(st->dch);
    free(st->tidx);
    free(st->tlabel);
    free(st->cidx);
    free(st->clabel);
    for (unsigned i = 0; i < st->nretired; i++)
        free(st->retired[i].tab);
    free(st->cp.freel);
    free(st->cp.limbo);
    free(st->tp.freel);
    free(st->tp.limbo);
    pthread_mutex_destroy(&st->mu);
    free(st);
}

bool tn_label_valid(const char *s, size_t n)
{
    if (n < 1 || n > TN_LABEL_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == ' ' || c == '_' || c == '.' || c == '-'))
            return false;
    }
    return true;
}

bool tn_idem_key_valid(const char *s, size_t n)
{
    if (n < 1 || n > TN_IDEM_KEY_MAX)
        return false;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x20 || (unsigned char)s[i] > 0x7e)
            return false;
    return true;
}

static struct tn_tenant *tenant_at(const struct tn_store *st, uint32_t idx)
{
    return &st->tch[idx / TCHUNK][idx % TCHUNK];
}

static struct tn_counter *counter_at(const struct tn_store *st, uint32_t idx)
{
    return &st->cch[idx / CCHUNK][idx % CCHUNK];
}

static uint64_t *delta_at(const struct tn_store *st, unsigned w, uint32_t idx)
{
    return &st->dch[(size_t)(idx / CCHUNK) * st->nworkers + w][idx % CCHUNK];
}

/* The index tables as published (a rebuild replaces them). */
static uint32_t *cidx_tab(const struct tn_store *st)
{
    return ck_pr_load_ptr((uint32_t **)&st->cidx);
}

static uint32_t *clabel_tab(const struct tn_store *st)
{
    return ck_pr_load_ptr((uint32_t **)&st->clabel);
}

static uint32_t *tidx_tab(const struct tn_store *st)
{
    return ck_pr_load_ptr((uint32_t **)&st->tidx);
}

static uint32_t *tlabel_tab(const struct tn_store *st)
{
    return ck_pr_load_ptr((uint32_t **)&st->tlabel);
}

/* Probe an id index table: the slot holding the record with this id, or the empty slot that
   ends the run; with ins, *ins is where an insertion goes (the first tombstone or that empty
   slot). Readers run concurrently with one writer (under mu): a slot goes 0 → idx+1 → TOMB
   → idx'+1 ..., each store a release after the record is complete. */
static uint32_t *id_probe(uint32_t *tab, uint32_t mask, uint64_t seed, const uint8_t id[16],
                          const struct tn_store *st, bool counters, uint32_t **ins)
{
    uint32_t i = (uint32_t)hash_bytes(seed, id, 16) & mask;
    if (ins)
        *ins = NULL;
    for (;; i = (i + 1) & mask) {
        uint32_t v = ck_pr_load_32(&tab[i]);
        if (v == 0 || v == TOMB) {
            if (ins && !*ins)
                *ins = &tab[i];
            if (v == 0)
                return &tab[i];
            continue;
        }
        ck_pr_fence_load(); /* the slot before the record it publishes */
        const uint8_t *rid = counters ? counter_at(st, v - 1)->id : tenant_at(st, v - 1)->id;
        if (memcmp(rid, id, 16) == 0)
            return &tab[i];
    }
}

const struct tn_tenant *tn_tenant_find_any(const struct tn_store *st, const uint8_t id[16])
{
    for (;;) {
        uint32_t v = ck_pr_load_32(id_probe(tidx_tab(st), st->tmask, st->seed, id, st, false, NULL));
        if (!v)
            return NULL;
        ck_pr_fence_load();
        const struct tn_tenant *t = v == TOMB ? NULL : tenant_at(st, v - 1);
        /* evicted and its slot taken by another since the probe matched: ask again */
        if (t && memcmp(t->id, id, 16) == 0)
            return t;
    }
}

const struct tn_tenant *tn_tenant_find(const struct tn_store *st, const uint8_t id[16])
{
    const struct tn_tenant *t = tn_tenant_find_any(st, id);
    return t && !tn_tenant_deleted(t) ? t : NULL;
}

bool tn_tenant_deleted(const struct tn_tenant *t)
{
    return ck_pr_load_32((uint32_t *)&t->deleted) != 0;
}

bool tn_counter_deleted(const struct tn_counter *c)
{
    return ck_pr_load_32((uint32_t *)&c->deleted) != 0;
}

const struct tn_counter *tn_counter_find_any(const struct tn_store *st, const struct tn_tenant *t,
                                             const uint8_t cid[16])
{
    for (;;) {
        uint32_t v = ck_pr_load_32(id_probe(cidx_tab(st), st->cmask, st->seed + 1, cid, st, true, NULL));
        if (!v)
            return NULL;
        ck_pr_fence_load();
        const struct tn_counter *c = v == TOMB ? NULL : counter_at(st, v - 1);
        /* the slot matched, then its counter was evicted and the slot taken by another: ask
           again (the id may have been restored further on) */
        if (c && memcmp(c->id, cid, 16) == 0)
            return c->tenant == t->idx ? c : NULL;
    }
}

const struct tn_counter *tn_counter_find(const struct tn_store *st, const struct tn_tenant *t,
                                         const uint8_t cid[16])
{
    const struct tn_counter *c = tn_counter_find_any(st, t, cid);
    return c && !tn_counter_deleted(c) ? c : NULL;
}

/* Probe a label index (counters: of tenant ten) for a live record with this label. Returns its
   slot or NULL; with ins, *ins is where an insertion goes (the first tombstone or the empty
   slot met). Lock-free for readers (ins NULL): slots go 0 → idx+1 → TOMB → idx+1...,
   each store a release after the record is complete; writers hold mu. tab: the table to
   probe (NULL: the published one). */
static uint32_t *label_probe_in(const struct tn_store *st, uint32_t *tab, bool counters,
                                uint32_t ten, const char *label, size_t n, uint32_t **ins)
{
    if (!tab)
        tab = counters ? clabel_tab(st) : tlabel_tab(st);
    uint32_t mask = counters ? st->cmask : st->tmask;
    uint32_t i = (uint32_t)hash_bytes(st->seed + 2 + (counters ? 2 + (uint64_t)ten : 0), label,
                                      n) & mask;
    if (ins)
        *ins = NULL;
    for (;; i = (i + 1) & mask) {
        uint32_t v = ck_pr_load_32(&tab[i]);
        if (v == 0 || v == TOMB) {
            if (ins && !*ins)
                *ins = &tab[i];
            if (v == 0)
                return NULL;
            continue;
        }
        ck_pr_fence_load(); /* the slot before the record it publishes */
        const char *rl;
        size_t rn;
        bool del, same = true;
        if (counters) {
            const struct tn_counter *c = counter_at(st, v - 1);
            rl = c->label, rn = c->label_len, del = tn_counter_deleted(c), same = c->tenant == ten;
        } else {
            const struct tn_tenant *t = tenant_at(st, v - 1);
            rl = t->label, rn = t->label_len, del = tn_tenant_deleted(t);
        }
        if (same && !del && rn == n && memcmp(rl, label, n) == 0)
            return &tab[i];
    }
}

static uint32_t *label_probe(const struct tn_store *st, bool counters, uint32_t ten,
                             const char *label, size_t n, uint32_t **ins)
{
    return label_probe_in(st, NULL, counters, ten, label, n, ins);
}

const struct tn_counter *tn_counter_find_label(const struct tn_store *st,
                                               const struct tn_tenant *t, const char *label,
                                               size_t n)
{
    uint32_t *slot = label_probe(st, true, t->idx, label, n, NULL);
    uint32_t v = slot ? ck_pr_load_32(slot) : 0;
    if (!v || v == TOMB)
        return NULL; /* deleted since the probe */
    ck_pr_fence_load();
    const struct tn_counter *c = counter_at(st, v - 1);
    /* the slot may have been taken by another counter since it matched (eviction) */
    bool same = c->tenant == t->idx && c->label_len == n && memcmp(c->label, label, n) == 0;
    return !same || tn_counter_deleted(c) ? NULL : c;
}

/* A fresh id not yet in tab (a collision of 122 random bits is astronomically unlikely, but
   checking costs one probe) and *slot where it goes. Under mu. */
static int fresh_id(struct tn_store *st, struct uuid_gen *g, uint32_t *tab, uint32_t mask,
                    uint64_t seed, bool counters, uint8_t id[16], uint32_t **slot)
{
    for (;;) {
        int rc = uuid_v4(g, id);
        if (rc < 0)
            return rc;
        if (*id_probe(tab, mask, seed, id, st, counters, slot) == 0)
            return 0;
    }
}

/* Id slot for a record with this id (restore) into *slot: 0, or -EEXIST. Under mu. */
static int known_id(struct tn_store *st, uint32_t *tab, uint32_t mask, uint64_t seed,
                    bool counters, const uint8_t id[16], uint32_t **slot)
{
    return *id_probe(tab, mask, seed, id, st, counters, slot) ? -EEXIST : 0;
}

/* Store idx+1 into an insertion slot of one of p's tables (a tombstone it takes is one less). */
static void slot_store(struct pool *p, uint32_t *slot, uint32_t idx)
{
    if (ck_pr_load_32(slot) == TOMB)
        p->tombs--;
    ck_pr_store_32(slot, idx + 1);
}

static int record_room(struct tn_store *st, bool counters, uint32_t *idx);

/* The time of `used` now (TN_USED_MS units). */
static uint32_t used_now(void)
{
    return (uint32_t)(clock_ms(CLOCK_MONOTONIC_COARSE) / TN_USED_MS);
}
static void record_taken(struct tn_store *st, bool counters, uint32_t idx);

/* Create (g: a fresh id) or restore (id) a tenant. */
static int tenant_add(struct tn_store *st, struct uuid_gen *g, const uint8_t *id, const char *label,
                      size_t n, int64_t now_ms, const struct tn_tenant **out)
{
    if (!tn_label_valid(label, n))
        return -EINVAL;
    int rc = 0;
    pthread_mutex_lock(&st->mu);
    uint32_t *li, idx;
    if (label_probe(st, false, 0, label, n, NULL)) {
        rc = -EEXIST;
        goto out;
    }
    if ((rc = record_room(st, false, &idx)) < 0)
        goto out;
    label_probe(st, false, 0, label, n, &li); /* after record_room: it may rebuild the tables */
    if (!st->tch[idx / TCHUNK] && !(st->tch[idx / TCHUNK] = calloc(TCHUNK, sizeof(struct tn_tenant)))) {
        rc = -ENOMEM;
        goto out;
    }
    struct tn_tenant *t = tenant_at(st, idx);
    uint32_t *slot;
    if (id) {
        if ((rc = known_id(st, st->tidx, st->tmask, st->seed, false, id, &slot)) < 0)
            goto out;
        memcpy(t->id, id, 16);
    } else if ((rc = fresh_id(st, g, st->tidx, st->tmask, st->seed, false, t->id, &slot)) < 0) {
        goto out;
    }
    t->idx = idx;
    t->first = t->last = 0;
    t->ncounters = 0;
    t->deleted = 0;
    t->state = TN_REC_INDEXED;
    t->used = used_now();
    t->created_ms = now_ms;
    t->label_len = (uint8_t)n;
    memcpy(t->label, label, n);
    ck_pr_fence_store(); /* the record before its index slots */
    slot_store(&st->tp, li, idx);
    slot_store(&st->tp, slot, idx);
    record_taken(st, false, idx);
    *out = t;
out:
    pthread_mutex_unlock(&st->mu);
    return rc;
}

int tn_tenant_create(struct tn_store *st, struct uuid_gen *g, const char *label, size_t n,
                     int64_t now_ms, const struct tn_tenant **out)
{
    return tenant_add(st, g, NULL, label, n, now_ms, out);
}

int tn_tenant_restore(struct tn_store *st, const uint8_t id[16], const char *label, size_t n,
                      int64_t created_ms, const struct tn_tenant **out)
{
    return tenant_add(st, NULL, id, label, n, created_ms, out);
}

static int index_rebuild(struct tn_store *st, bool counters);
static void retired_collect(struct tn_store *st);

/* The index record for a new tenant or counter (under mu): a never used one, or once those are
   gone a free one (evicted, past its grace period), popped by record_taken. 0 and *idx, or
   -ENOSPC. */
static int record_room(struct tn_store *st, bool counters, uint32_t *idx)
{
    struct pool *p = counters ? &st->cp : &st->tp;
    uint32_t size = (counters ? st->cmask : st->tmask) + 1, n = counters ? st->nc : st->nt;
    /* used + tombstoned slots stay <= max + table/4 <= 3/4 of a table: probes end */
    if (p->tombs > size / 4 && (index_rebuild(st, counters) < 0 || p->tombs > size / 4))
        return -ENOSPC;
    if (n < (counters ? st->max_c : st->max_t)) {
        *idx = n;
        return 0;
    }
    if (!p->nfree)
        return -ENOSPC;
    *idx = p->freel[p->nfree - 1];
    return 0;
}

/* Record idx (from record_room) is in: count it, or take it off the free stack. Under mu. */
static void record_taken(struct tn_store *st, bool counters, uint32_t idx)
{
    uint32_t *n = counters ? &st->nc : &st->nt;
    if (idx == *n)
        ck_pr_store_32(n, idx + 1);
    else
        (counters ? &st->cp : &st->tp)->nfree--;
}

/* A record for a new counter (under mu): record_room's, its chunk allocated on first use.
   0 and *idx; -ENOSPC; -ENOMEM. */
static int counter_record(struct tn_store *st, uint32_t *idx)
{
    int rc = record_room(st, true, idx);
    if (rc < 0 || *idx < st->nc)
        return rc;
    uint32_t ch = st->nc / CCHUNK;
    if (!st->cch[ch]) {
        /* the delta slots of every worker first: a reader finding the counter finds them */
        for (unsigned w = 0; w < st->nworkers; w++) {
            uint64_t **d = &st->dch[(size_t)ch * st->nworkers + w];
            if (!*d && !(*d = aligned_alloc(64, CCHUNK * sizeof(uint64_t))))
                return -ENOMEM;
            memset(*d, 0, CCHUNK * sizeof(uint64_t));
        }
        if (!(st->cch[ch] = calloc(CCHUNK, sizeof(struct tn_counter))))
            return -ENOMEM;
    }
    *idx = st->nc;
    return 0;
}

/* Σ of the workers' delta slots of record idx (they only grow: a reused record keeps them and
   its base absorbs them). */
static uint64_t delta_sum(const struct tn_store *st, uint32_t idx)
{
    uint64_t sum = 0;
    for (unsigned w = 0; w < st->nworkers; w++)
        sum += ck_pr_load_64(delta_at(st, w, idx));
    return sum;
}

/* Create (g: a fresh id) or restore (id) a counter. */
static int counter_add(struct tn_store *st, struct uuid_gen *g, const uint8_t *id,
                       const struct tn_tenant *tc, const char *label, size_t n, int64_t initial,
                       int64_t max_delta, int64_t now_ms, const struct tn_counter **out)
{
    if ((label && !tn_label_valid(label, n)) || max_delta < 1)
        return -EINVAL;
    int rc = 0;
    pthread_mutex_lock(&st->mu);
    uint32_t idx, *li = NULL, *slot, *ctab;
    if (tc->deleted) { /* deleted since the caller found it */
        rc = -ENOENT;
        goto out;
    }
    /* Labels are unique per tenant. A restore keeps a counter whose label is taken (rows from
       before the rule): it is stored, not indexed by label. */
    bool taken = label && label_probe(st, true, tc->idx, label, n, NULL);
    if (taken && !id) {
        rc = -EEXIST;
        goto out;
    }
    if ((rc = counter_record(st, &idx)) < 0)
        goto out;
    ctab = st->cidx; /* probed after counter_record: it may have rebuilt the tables */
    if (label && !taken)
        label_probe(st, true, tc->idx, label, n, &li);
    struct tn_counter *c = counter_at(st, idx);
    if (id)
        rc = known_id(st, ctab, st->cmask, st->seed + 1, true, id, &slot);
    else
        rc = fresh_id(st, g, ctab, st->cmask, st->seed + 1, true, c->id, &slot);
    if (rc < 0)
        goto out;
    if (id)
        memcpy(c->id, id, 16);
    c->idx = idx;
    c->tenant = tc->idx;
    c->tnext = 0;
    c->deleted = 0;
    c->state = TN_REC_INDEXED;
    c->used = used_now();
    c->max_delta = max_delta;
    c->created_ms = now_ms;
    c->base = (uint64_t)initial - delta_sum(st, idx); /* a reused record keeps its deltas */
    c->label_len = label ? (uint8_t)n : 0;
    if (label)
        memcpy(c->label, label, n);
    ck_pr_fence_store();
    if (li)
        slot_store(&st->cp, li, idx);
    slot_store(&st->cp, slot, idx);
    record_taken(st, true, idx);
    /* append to the tenant's list (readers follow tnext / first with acquire loads) */
    struct tn_tenant *t = tenant_at(st, tc->idx);
    c->tprev = t->last;
    if (t->last)
        ck_pr_store_32(&counter_at(st, t->last - 1)->tnext, idx + 1);
    else
        ck_pr_store_32(&t->first, idx + 1);
    t->last = idx + 1;
    ck_pr_store_32(&t->ncounters, t->ncounters + 1);
    *out = c;
out:
    pthread_mutex_unlock(&st->mu);
    return rc;
}

int tn_counter_create(struct tn_store *st, struct uuid_gen *g, const struct tn_tenant *tc,
                      const char *label, size_t n, int64_t initial, int64_t max_delta,
                      int64_t now_ms, const struct tn_counter **out)
{
    return counter_add(st, g, NULL, tc, label, n, initial, max_delta, now_ms, out);
}

int tn_counter_restore(struct tn_store *st, const struct tn_tenant *t, const uint8_t id[16],
                       const char *label, size_t n, int64_t value, int64_t max_delta,
                       int64_t created_ms, const struct tn_counter **out)
{
    return counter_add(st, NULL, id, t, label, n, value, max_delta, created_ms, out);
}

/* Mark c deleted and free its label (under mu). */
static void counter_drop(struct tn_store *st, struct tn_counter *c)
{
    if (c->label_len) {
        uint32_t *slot = label_probe(st, true, c->tenant, c->label, c->label_len, NULL);
        if (slot && *slot == c->idx + 1) { /* a restored duplicate is not indexed */
            ck_pr_store_32(slot, TOMB);
            st->cp.tombs++;
        }
    }
    ck_pr_fence_store();
    ck_pr_store_32(&c->deleted, 1);
}

int tn_counter_delete(struct tn_store *st, const struct tn_counter *cc)
{
    int rc = 0;
    pthread_mutex_lock(&st->mu);
    struct tn_counter *c = counter_at(st, cc->idx);
    if (c->deleted)
        rc = -ENOENT;
    else
        counter_drop(st, c);
    pthread_mutex_unlock(&st->mu);
    return rc;
}

int tn_tenant_delete(struct tn_store *st, const struct tn_tenant *tc)
{
    int rc = 0;
    pthread_mutex_lock(&st->mu);
    struct tn_tenant *t = tenant_at(st, tc->idx);
    if (t->deleted) {
        rc = -ENOENT;
        goto out;
    }
    for (uint32_t next = t->first; next; next = counter_at(st, next - 1)->tnext)
        if (!counter_at(st, next - 1)->deleted)
            counter_drop(st, counter_at(st, next - 1));
    uint32_t *slot = label_probe(st, false, 0, t->label, t->label_len, NULL);
    if (slot && *slot == t->idx + 1) {
        ck_pr_store_32(slot, TOMB);
        st->tp.tombs++;
    }
    ck_pr_fence_store();
    ck_pr_store_32(&t->deleted, 1);
out:
    pthread_mutex_unlock(&st->mu);
    return rc;
}

/* ---------------------------------------------------------------- eviction */

/* Once a TN_USED_MS: the record's line stays shared otherwise. */
static void touch(uint32_t *used, uint64_t now_ms)
{
    uint32_t u = (uint32_t)(now_ms / TN_USED_MS);
    if (ck_pr_load_32(used) != u)
        ck_pr_store_32(used, u);
}

void tn_counter_touch(const struct tn_counter *c, uint64_t now_ms)
{
    touch((uint32_t *)&c->used, now_ms);
}

void tn_tenant_touch(const struct tn_tenant *t, uint64_t now_ms)
{
    touch((uint32_t *)&t->used, now_ms);
}

/* How long ago a record was last found, in TN_USED_MS units (a deleted one: the oldest). A
   worker's touch may land on the step after the caller read now: that is 0, not 2^32 - 1. */
static uint32_t age(uint32_t now, const uint32_t *used, bool deleted)
{
    int32_t a = (int32_t)(now - ck_pr_load_32(used));
    return deleted ? UINT32_MAX : a < 0 ? 0 : (uint32_t)a;
}

/* Tombstone the slot of tab that holds idx+1 (probed at slot), counted in p. */
static void slot_tomb(struct pool *p, uint32_t *slot, uint32_t idx)
{
    if (slot && *slot == idx + 1) {
        ck_pr_store_32(slot, TOMB);
        p->tombs++;
    }
}

/* Take c out of both index tables and its tenant's list (under mu). A reader standing on it
   keeps valid fields and tnext until the grace period ends. */
static void counter_unlink(struct tn_store *st, struct tn_counter *c)
{
    slot_tomb(&st->cp, id_probe(st->cidx, st->cmask, st->seed + 1, c->id, st, true, NULL), c->idx);
    if (c->label_len && !c->deleted)
        slot_tomb(&st->cp, label_probe(st, true, c->tenant, c->label, c->label_len, NULL), c->idx);
    struct tn_tenant *t = tenant_at(st, c->tenant);
    uint32_t next = c->tnext, prev = c->tprev;
    if (prev)
        ck_pr_store_32(&counter_at(st, prev - 1)->tnext, next);
    else
        ck_pr_store_32(&t->first, next);
    if (next)
        counter_at(st, next - 1)->tprev = prev;
    else
        t->last = prev;
    ck_pr_store_32(&t->ncounters, t->ncounters - 1);
    c->state = TN_REC_EVICTED;
}

/* Take t (none of its counters cached) out of both index tables (under mu). */
static void tenant_unlink(struct tn_store *st, struct tn_tenant *t)
{
    slot_tomb(&st->tp, id_probe(st->tidx, st->tmask, st->seed, t->id, st, false, NULL), t->idx);
    if (!t->deleted) /* a deleted one's label slot is a tombstone already */
        slot_tomb(&st->tp, label_probe(st, false, 0, t->label, t->label_len, NULL), t->idx);
    t->state = TN_REC_EVICTED;
}

/* Fresh index tables of one kind holding every indexed record (under mu), published whole; the
   old ones wait for their grace period in st->retired. 0, or -ENOMEM / -EBUSY (nothing
   changed: the tombstones stay, probes just run longer). */
static int index_rebuild(struct tn_store *st, bool counters)
{
    retired_collect(st);
    if (st->nretired + 2 > RETIRED_MAX)
        return -EBUSY;
    uint32_t mask = counters ? st->cmask : st->tmask;
    uint32_t *nid = calloc((size_t)mask + 1, sizeof(uint32_t));
    uint32_t *nlab = calloc((size_t)mask + 1, sizeof(uint32_t));
    if (!nid || !nlab) {
        free(nid);
        free(nlab);
        return -ENOMEM;
    }
    uint32_t **id_tab = counters ? &st->cidx : &st->tidx;
    uint32_t **lab_tab = counters ? &st->clabel : &st->tlabel;
    uint32_t *oid = *id_tab, *olab = *lab_tab, n = counters ? st->nc : st->nt;
    for (uint32_t i = 0; i < n; i++) {
        const uint8_t *id;
        const char *label;
        uint32_t ten = 0, *slot, *ls;
        uint8_t llen;
        if (counters) {
            struct tn_counter *c = counter_at(st, i);
            if (c->state != TN_REC_INDEXED)
                continue;
            id = c->id, label = c->label, ten = c->tenant;
            llen = c->deleted ? 0 : c->label_len;
        } else {
            struct tn_tenant *t = tenant_at(st, i);
            if (t->state != TN_REC_INDEXED)
                continue;
            id = t->id, label = t->label, llen = t->deleted ? 0 : t->label_len;
        }
        id_probe(nid, mask, st->seed + counters, id, st, counters, &slot);
        *slot = i + 1;
        if (llen && !label_probe_in(st, nlab, counters, ten, label, llen, &ls))
            *ls = i + 1; /* a restored duplicate label: the first one stays indexed, as before */
    }
    ck_pr_fence_store(); /* the tables are complete before readers can load them */
    ck_pr_store_ptr(id_tab, nid);
    ck_pr_store_ptr(lab_tab, nlab);
    uint64_t e = qsbr_defer();
    st->retired[st->nretired++] = (typeof(st->retired[0])){.tab = oid, .epoch = e};
    st->retired[st->nretired++] = (typeof(st->retired[0])){.tab = olab, .epoch = e};
    (counters ? &st->cp : &st->tp)->tombs = 0;
    return 0;
}

/* 64-bit xorshift* (Vigna): the persister's sampling, no quality beyond spreading needed. */
static uint32_t rng_below(uint64_t *s, uint32_t n)
{
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return (uint32_t)(((*s * 0x2545f4914f6cdd1dull) >> 32) * n >> 32);
}

/* The least recently used evictable indexed counter of TN_EVICT_SAMPLES random ones (deleted
   first), or NULL. Under mu. */
static struct tn_counter *evict_pick(struct tn_store *st, tn_evictable_fn *ok, void *arg)
{
    struct tn_counter *best = NULL;
    uint32_t best_age = 0, now = used_now();
    for (unsigned k = 0; k < TN_EVICT_SAMPLES; k++) {
        struct tn_counter *c = counter_at(st, rng_below(&st->rng, st->nc));
        if (c->state != TN_REC_INDEXED)
            continue;
        uint32_t a = age(now, &c->used, c->deleted);
        if ((best && a <= best_age) || !ok(c, arg))
            continue;
        best = c;
        best_age = a;
    }
    return best;
}

/* The least recently used indexed tenant of TN_EVICT_SAMPLES random ones (deleted first), or
   NULL. Under mu. */
static struct tn_tenant *tenant_pick(struct tn_store *st)
{
    struct tn_tenant *best = NULL;
    uint32_t best_age = 0, now = used_now();
    for (unsigned k = 0; k < TN_EVICT_SAMPLES; k++) {
        struct tn_tenant *t = tenant_at(st, rng_below(&st->rng, st->nt));
        uint32_t a = age(now, &t->used, t->deleted);
        if (t->state != TN_REC_INDEXED || (best && a <= best_age))
            continue;
        best = t;
        best_age = a;
    }
    return best;
}

/* Records [first, p->nlimbo) just went into limbo: after the unlinking stores, stamp them with
   the epoch past which no worker holds them. */
static void limbo_stamp(struct pool *p, uint32_t first)
{
    if (first == p->nlimbo)
        return;
    uint64_t e = qsbr_defer();
    for (uint32_t i = first; i < p->nlimbo; i++)
        p->limbo[i].epoch = e;
    p->evicted += p->nlimbo - first;
}

unsigned tn_counter_evict(struct tn_store *st, unsigned n, tn_evictable_fn *ok, void *arg)
{
    pthread_mutex_lock(&st->mu);
    uint32_t first = st->cp.nlimbo;
    for (unsigned k = 0; k < n && st->nc && st->cp.nlimbo < st->cp.limbo_cap; k++) {
        struct tn_counter *c = evict_pick(st, ok, arg);
        if (!c)
            continue;
        counter_unlink(st, c);
        st->cp.limbo[st->cp.nlimbo++].idx = c->idx;
    }
    unsigned done = st->cp.nlimbo - first;
    limbo_stamp(&st->cp, first);
    if (st->cp.tombs > (st->cmask + 1) / 8)
        (void)index_rebuild(st, true);
    pthread_mutex_unlock(&st->mu);
    return done;
}

unsigned tn_tenant_evict(struct tn_store *st, unsigned n, tn_evictable_fn *ok, void *arg)
{
    pthread_mutex_lock(&st->mu);
    uint32_t tfirst = st->tp.nlimbo, cfirst = st->cp.nlimbo;
    for (unsigned k = 0; k < n && st->nt && st->tp.nlimbo < st->tp.limbo_cap; k++) {
        struct tn_tenant *t = tenant_pick(st);
        if (!t)
            continue;
        if (!t->first) {
            tenant_unlink(st, t);
            st->tp.limbo[st->tp.nlimbo++].idx = t->idx;
            continue;
        }
        /* its counters first (it was used no later than they were); it goes next time. At
           most TN_EVICT_BATCH of them looked at, evicted or not: a tenant with a million
           unflushed counters must not hold the mutex for a walk of them all */
        unsigned budget = TN_EVICT_BATCH;
        for (uint32_t next = t->first; next && budget && st->cp.nlimbo < st->cp.limbo_cap;
             budget--) {
            struct tn_counter *c = counter_at(st, next - 1);
            next = c->tnext;
            if (ok(c, arg)) {
                counter_unlink(st, c);
                st->cp.limbo[st->cp.nlimbo++].idx = c->idx;
            }
        }
    }
    unsigned done = st->tp.nlimbo - tfirst;
    limbo_stamp(&st->cp, cfirst);
    limbo_stamp(&st->tp, tfirst);
    if (st->cp.tombs > (st->cmask + 1) / 8)
        (void)index_rebuild(st, true);
    if (st->tp.tombs > (st->tmask + 1) / 8)
        (void)index_rebuild(st, false);
    pthread_mutex_unlock(&st->mu);
    return done;
}

/* Free the records of p past their grace period for which ok(idx) holds (under mu): the number
   freed. */
static unsigned pool_reclaim(struct tn_store *st, struct pool *p,
                             bool (*ok)(struct tn_store *st, uint32_t idx, void *arg), void *arg)
{
    unsigned freed = 0, j = 0;
    uint64_t known_safe = 0; /* epochs only grow along the list: ask qsbr once per epoch */
    for (uint32_t i = 0; i < p->nlimbo; i++) {
        uint64_t e = p->limbo[i].epoch;
        bool safe = e <= known_safe || (qsbr_safe(e) && (known_safe = e));
        if (safe && ok(st, p->limbo[i].idx, arg)) {
            p->freel[p->nfree++] = p->limbo[i].idx;
            freed++;
        } else {
            p->limbo[j++] = p->limbo[i];
        }
    }
    p->nlimbo = j;
    return freed;
}

struct ok_arg {
    tn_evictable_fn *ok;
    void *arg;
};

/* pool_reclaim's test for a counter: nothing of it is unflushed (the caller's ok). */
static bool counter_free_ok(struct tn_store *st, uint32_t idx, void *arg)
{
    struct ok_arg *a = arg;
    struct tn_counter *c = counter_at(st, idx);
    if (!a->ok(c, a->arg))
        return false;
    c->state = TN_REC_FREE;
    return true;
}

/* A tenant holds no unflushed data: past its grace period it is free. */
static bool tenant_free_ok(struct tn_store *st, uint32_t idx, void *arg)
{
    (void)arg;
    tenant_at(st, idx)->state = TN_REC_FREE;
    return true;
}

unsigned tn_reclaim(struct tn_store *st, tn_evictable_fn *ok, void *arg)
{
    pthread_mutex_lock(&st->mu);
    unsigned freed = pool_reclaim(st, &st->cp, counter_free_ok, &(struct ok_arg){ok, arg}) +
                     pool_reclaim(st, &st->tp, tenant_free_ok, NULL);
    retired_collect(st);
    pthread_mutex_unlock(&st->mu);
    return freed;
}

/* Free the index tables no worker can still be reading (under mu). */
static void retired_collect(struct tn_store *st)
{
    unsigned j = 0;
    for (unsigned i = 0; i < st->nretired; i++) {
        if (qsbr_safe(st->retired[i].epoch))
            free(st->retired[i].tab);
        else
            st->retired[j++] = st->retired[i];
    }
    st->nretired = j;
}

void tn_cache_sizes(struct tn_store *st, struct tn_cache_sizes *out)
{
    pthread_mutex_lock(&st->mu);
    out->room = st->max_c - st->nc + st->cp.nfree;
    out->evicting = st->cp.nlimbo;
    out->cached = st->nc - st->cp.nfree - st->cp.nlimbo;
    out->tombs = st->cp.tombs;
    out->evicted = st->cp.evicted;
    out->t_room = st->max_t - st->nt + st->tp.nfree;
    out->t_evicting = st->tp.nlimbo;
    out->t_cached = st->nt - st->tp.nfree - st->tp.nlimbo;
    out->t_tombs = st->tp.tombs;
    out->t_evicted = st->tp.evicted;
    pthread_mutex_unlock(&st->mu);
}

const struct tn_tenant *tn_tenant_at(const struct tn_store *st, uint32_t idx)
{
    return tenant_at(st, idx);
}

const struct tn_counter *tn_counter_at(const struct tn_store *st, uint32_t idx)
{
    return counter_at(st, idx);
}

int64_t tn_counter_value_stable(const struct tn_store *st, const struct tn_counter *c)
{
    int64_t v;
    unsigned g;
    do {
        g = ck_sequence_read_begin(&st->setseq);
        v = tn_counter_value(st, c);
    } while (ck_sequence_read_retry(&st->setseq, g));
    return v;
}

int64_t tn_counter_value(const struct tn_store *st, const struct tn_counter *c)
{
    uint64_t v = ck_pr_load_64((uint64_t *)&c->base);
    for (unsigned w = 0; w < st->nworkers; w++)
        v += ck_pr_load_64(delta_at(st, w, c->idx));
    return (int64_t)v;
}

/* Worker w moved counter idx: queue it for the persister unless it is queued and not yet
   taken. A mark skipped because the entry looked untaken just as the persister took it is
   caught by the persister's re-read of what it took in the next flush (tn_dirty_take). */
static void dirty_mark(struct tn_store *st, unsigned w, uint32_t idx)
{
    struct tn_dirty *d = &st->dirty[w];
    uint32_t slot = idx & (DIRTY_CACHE - 1), tail = d->tail;
    uint32_t head = ck_pr_load_32(&d->head);
    /* queued and not taken yet: its position is in [head, tail) (unsigned distances: a stale
       entry 2^31 pushes old must not look queued) */
    if (d->cache[slot].idx == idx + 1 && d->cache[slot].pos - head < tail - head)
        return;
    if (tail - head >= DIRTY_RING) {
        if (!ck_pr_load_32(&d->overflow))
            ck_pr_store_32(&d->overflow, 1);
        return;
    }
    d->ring[tail & (DIRTY_RING - 1)] = idx;
    ck_pr_fence_store();
    ck_pr_store_32(&d->tail, tail + 1);
    d->cache[slot].idx = idx + 1;
    d->cache[slot].pos = tail;
}

int tn_counter_inc(struct tn_store *st, unsigned w, const struct tn_counter *c, int64_t delta,
                   int64_t *value)
{
    int64_t v = tn_counter_value(st, c);
    if (v > INT64_MAX - delta)
        return -EOVERFLOW;
    uint64_t *d = delta_at(st, w, c->idx);
    ck_pr_store_64(d, *d + (uint64_t)delta); /* single writer: this worker */
    dirty_mark(st, w, c->idx);
    *value = v + delta;
    return 0;
}

size_t tn_dirty_take(struct tn_store *st, uint32_t *out, size_t cap, bool *full)
{
    size_t n = 0;
    for (unsigned w = 0; w < st->nworkers; w++) {
        struct tn_dirty *d = &st->dirty[w];
        if (ck_pr_load_32(&d->overflow)) {
            ck_pr_store_32(&d->overflow, 0);
            *full = true;
        }
        uint32_t head = d->head, tail = ck_pr_load_32(&d->tail);
        ck_pr_fence_load();
        for (; head != tail; head++) {
            if (n == cap) {
                *full = true; /* the caller's buffer is full: everything is read anyway */
                continue;
            }
            out[n++] = d->ring[head & (DIRTY_RING - 1)];
        }
        ck_pr_fence_load_store();
        ck_pr_store_32(&d->head, head);
    }
    uint32_t g = ck_pr_load_32(&st->set_gen);
    if (g != st->set_seen) {
        st->set_seen = g;
        *full = true;
    }
    return n;
}

void tn_counter_adjust(struct tn_store *st, const struct tn_counter *c, int64_t adj)
{
    pthread_mutex_lock(&st->mu);
    ck_sequence_write_begin(&st->setseq);
    ck_pr_store_64((uint64_t *)&c->base, c->base + (uint64_t)adj);
    ck_sequence_write_end(&st->setseq);
    pthread_mutex_unlock(&st->mu);
}

int tn_counter_set(struct tn_store *st, const struct tn_counter *c, int64_t v)
{
    pthread_mutex_lock(&st->mu);
    uint64_t sum = delta_sum(st, c->idx);
    ck_sequence_write_begin(&st->setseq);
    ck_pr_store_64((uint64_t *)&c->base, (uint64_t)v - sum);
    ck_sequence_write_end(&st->setseq);
    ck_pr_store_32(&st->set_gen, st->set_gen + 1); /* rare (admin): the next flush scans all */
    pthread_mutex_unlock(&st->mu);
    return 0;
}

/* ---------------------------------------------------------------- idempotency */

static void idem_insert(struct tn_store *st, struct idem_stripe *s, uint32_t bucket,
                        const struct tn_counter *c, const char *key, size_t klen, int64_t delta,
                        int64_t value, int64_t now_ms);

static void idem_chain_remove(struct idem_stripe *s, uint32_t bucket, uint32_t ri)
{
    uint32_t *p = &s->heads[bucket];
    while (*p && *p != ri + 1)
        p = &s->r[*p - 1].hnext;
    if (*p)
        *p = s->r[ri].hnext;
}

int tn_idem_inc(struct tn_store *st, unsigned w, const struct tn_counter *c, const char *key,
                size_t klen, int64_t delta, int64_t now_ms, int64_t *value)
{
    uint64_t h = hash_bytes(st->seed + 3 + c->tenant, key, klen);
    struct idem_stripe *s = &st->idem[h % TN_IDEM_STRIPES];
    uint32_t bucket = (uint32_t)(h / TN_IDEM_STRIPES) & (s->cap - 1);
    int rc;
    ck_spinlock_lock(&s->lock);
    for (uint32_t i = s->heads[bucket]; i;) {
        struct idem_rec *r = &s->r[i - 1];
        uint32_t next = r->hnext;
        if (r->tenant == c->tenant && r->klen == klen && memcmp(r->key, key, klen) == 0) {
            if (now_ms - r->created_ms >= (int64_t)TN_IDEM_TTL_MS) { /* expired: forget it */
                idem_chain_remove(s, bucket, i - 1);
                r->klen = 0;
                s->live--;
                break;
            }
            if (r->counter == c->idx && r->delta == delta) {
                *value = r->value;
                rc = 1;
            } else {
                rc = -EEXIST;
            }
            goto out;
        }
        i = next;
    }
    if ((rc = tn_counter_inc(st, w, c, delta, value)) < 0)
        goto out;
    idem_insert(st, s, bucket, c, key, klen, delta, *value, now_ms);
    rc = 0;
out:
    ck_spinlock_unlock(&s->lock);
    return rc;
}

/* Insert a record into stripe s (locked): the ring slot at seq is the oldest record of this
   stripe (or free): reuse it. */
static void idem_insert(struct tn_store *st, struct idem_stripe *s, uint32_t bucket,
                        const struct tn_counter *c, const char *key, size_t klen, int64_t delta,
                        int64_t value, int64_t now_ms)
{
    uint32_t ri = (uint32_t)s->seq & (s->cap - 1);
    struct idem_rec *r = &s->r[ri];
    if (r->klen) {
        uint64_t oh = hash_bytes(st->seed + 3 + r->tenant, r->key, r->klen);
        idem_chain_remove(s, (uint32_t)(oh / TN_IDEM_STRIPES) & (s->cap - 1), ri);
        s->live--;
    }
    memcpy(r->key, key, klen);
    r->klen = (uint8_t)klen;
    r->tenant = c->tenant;
    r->counter = c->idx;
    r->delta = delta;
    r->value = value;
    r->created_ms = now_ms;
    r->hnext = s->heads[bucket];
    s->heads[bucket] = ri + 1;
    s->live++;
    ck_pr_store_64(&s->seq, s->seq + 1); /* read without the lock by tn_idem_collect */
}

int tn_idem_restore(struct tn_store *st, const struct tn_counter *c, const char *key, size_t klen,
                    int64_t delta, int64_t value, int64_t created_ms)
{
    if (!tn_idem_key_valid(key, klen))
        return -EINVAL;
    uint64_t h = hash_bytes(st->seed + 3 + c->tenant, key, klen);
    struct idem_stripe *s = &st->idem[h % TN_IDEM_STRIPES];
    uint32_t bucket = (uint32_t)(h / TN_IDEM_STRIPES) & (s->cap - 1);
    ck_spinlock_lock(&s->lock);
    idem_insert(st, s, bucket, c, key, klen, delta, value, created_ms);
    ck_spinlock_unlock(&s->lock);
    return 0;
}

void tn_idem_cursor(const struct tn_store *st, uint64_t cur[TN_IDEM_STRIPES])
{
    for (unsigned i = 0; i < TN_IDEM_STRIPES; i++)
        cur[i] = ck_pr_load_64((uint64_t *)&st->idem[i].seq);
}

size_t tn_idem_collect(struct tn_store *st, uint64_t cur[TN_IDEM_STRIPES],
                       struct tn_idem_out *out, size_t cap, uint64_t *lost)
{
    size_t n = 0;
    for (unsigned i = 0; i < TN_IDEM_STRIPES && n < cap; i++) {
        struct idem_stripe *s = &st->idem[i];
        if (cur[i] == ck_pr_load_64(&s->seq))
            continue;
        if (!st->frozen)
            ck_spinlock_lock(&s->lock);
        if (s->seq - cur[i] > s->cap) { /* lapped: the oldest of those were overwritten */
            *lost += s->seq - cur[i] - s->cap;
            cur[i] = s->seq - s->cap;
        }
        for (; cur[i] < s->seq && n < cap; cur[i]++) {
            const struct idem_rec *r = &s->r[cur[i] & (s->cap - 1)];
            if (!r->klen) /* expired and forgotten since */
                continue;
            struct tn_idem_out *o = &out[n++];
            o->tenant = r->tenant;
            o->counter = r->counter;
            o->delta = r->delta;
            o->value = r->value;
            o->created_ms = r->created_ms;
            o->klen = r->klen;
            memcpy(o->key, r->key, r->klen);
        }
        if (!st->frozen)
            ck_spinlock_unlock(&s->lock);
    }
    return n;
}

void tn_idem_freeze(struct tn_store *st)
{
    for (unsigned i = 0; i < TN_IDEM_STRIPES; i++)
        ck_spinlock_lock(&st->idem[i].lock);
    st->frozen = true;
}

void tn_idem_thaw(struct tn_store *st)
{
    st->frozen = false;
    for (unsigned i = 0; i < TN_IDEM_STRIPES; i++)
        ck_spinlock_unlock(&st->idem[i].lock);
}

/* ---------------------------------------------------------------- listing, sizes, JSON */

int tn_counter_list(const struct tn_store *st, const struct tn_tenant *t,
                    const struct tn_counter *after, unsigned limit, const struct tn_counter **out,
                    bool *more)
{
    uint32_t next;
    if (after) {
        if (after->tenant != t->idx)
            return -EINVAL;
        next = ck_pr_load_32((uint32_t *)&after->tnext);
    } else {
        next = ck_pr_load_32((uint32_t *)&t->first);
    }
    unsigned n = 0;
    *more = false;
    while (next) {
        ck_pr_fence_load();
        const struct tn_counter *c = counter_at(st, next - 1);
        next = ck_pr_load_32((uint32_t *)&c->tnext);
        if (tn_counter_deleted(c))
            continue;
        if (n == limit) {
            *more = true;
            break;
        }
        out[n++] = c;
    }
    return (int)n;
}

int tn_tenant_list(const struct tn_store *st, const struct tn_tenant *after, unsigned limit,
                   const struct tn_tenant **out, bool *more)
{
    uint32_t nt = ck_pr_load_32((uint32_t *)&st->nt);
    ck_pr_fence_load(); /* the count before the records it covers */
    unsigned n = 0;
    *more = false;
    for (uint32_t i = after ? after->idx + 1 : 0; i < nt; i++) {
        const struct tn_tenant *t = tenant_at(st, i);
        if (tn_tenant_deleted(t))
            continue;
        if (n == limit) {
            *more = true;
            break;
        }
        out[n++] = t;
    }
    return (int)n;
}

void tn_bounds(const struct tn_store *st, uint32_t *max_tenants, uint32_t *max_counters)
{
    *max_tenants = st->max_t;
    *max_counters = st->max_c;
}

void tn_sizes(const struct tn_store *st, uint32_t *tenants, uint32_t *counters, uint32_t *idem)
{
    *tenants = ck_pr_load_32((uint32_t *)&st->nt);
    *counters = ck_pr_load_32((uint32_t *)&st->nc);
    uint32_t live = 0;
    for (unsigned i = 0; i < TN_IDEM_STRIPES; i++)
        live += ck_pr_load_32((uint32_t *)&st->idem[i].live);
    *idem = live;
}

/* A label (validated: [A-Za-z0-9 _.-], nothing to escape) or null when it has none. */
static void put_label(struct json_w *w, const char *label, size_t n)
{
    if (n)
        json_w_str(w, label, n);
    else
        json_w_lit(w, "null");
}

static void put_id(struct json_w *w, const uint8_t id[16])
{
    char t[UUID_TEXT_LEN];
    uuid_format(id, t);
    json_w_str(w, t, UUID_TEXT_LEN);
}

static void put_time(struct json_w *w, int64_t unix_ms)
{
    char t[FMT_TIME_LEN];
    json_w_str(w, t, fmt_time_ms(t, unix_ms));
}

size_t tn_value_json(const uint8_t id[16], int64_t v, char *out)
{
    struct json_w w;
    json_w_init(&w, out, TN_JSON_MAX);
    json_w_lit(&w, "{\"counter_id\":");
    put_id(&w, id);
    json_w_lit(&w, ",\"value\":");
    json_w_i64(&w, v);
    json_w_lit(&w, "}");
    ssize_t n = json_w_end(&w);
    return n < 0 ? 0 : (size_t)n;
}

size_t tn_tenant_json(const struct tn_tenant *t, char *out)
{
    struct json_w w;
    json_w_init(&w, out, TN_JSON_MAX);
    json_w_lit(&w, "{\"tenant_id\":");
    put_id(&w, t->id);
    json_w_lit(&w, ",\"label\":");
    put_label(&w, t->label, t->label_len);
    json_w_lit(&w, ",\"created_at\":");
    put_time(&w, t->created_ms);
    json_w_lit(&w, "}");
    ssize_t n = json_w_end(&w);
    return n < 0 ? 0 : (size_t)n; /* never: TN_JSON_MAX bounds the longest object */
}

static size_t counter_json(const uint8_t id[16], const uint8_t tid[16], const char *label,
                           size_t n, int64_t value, int64_t max_delta, int64_t created_ms,
                           char *out)
{
    struct json_w w;
    json_w_init(&w, out, TN_JSON_MAX);
    json_w_lit(&w, "{\"counter_id\":");
    put_id(&w, id);
    json_w_lit(&w, ",\"tenant_id\":");
    put_id(&w, tid);
    json_w_lit(&w, ",\"label\":");
    put_label(&w, label, n);
    json_w_lit(&w, ",\"value\":");
    json_w_i64(&w, value);
    json_w_lit(&w, ",\"max_delta\":");
    json_w_i64(&w, max_delta);
    json_w_lit(&w, ",\"created_at\":");
    put_time(&w, created_ms);
    json_w_lit(&w, "}");
    ssize_t len = json_w_end(&w);
    return len < 0 ? 0 : (size_t)len; /* never: TN_JSON_MAX bounds the longest object */
}

size_t tn_counter_json(const struct tn_store *st, const struct tn_counter *c, char *out)
{
    return counter_json(c->id, tenant_at(st, c->tenant)->id, c->label, c->label_len,
                        tn_counter_value(st, c), c->max_delta, c->created_ms, out);
}

size_t tn_row_json(const struct tn_row *r, char *out)
{
    if (r->counter)
        return counter_json(r->id, r->tid, r->label, r->has_label ? r->label_len : 0, r->value,
                            r->max_delta, r->created_ms, out);
    struct tn_tenant t = {.created_ms = r->created_ms, .label_len = r->label_len};
    memcpy(t.id, r->id, 16);
    memcpy(t.label, r->label, r->label_len);
    return tn_tenant_json(&t, out);
}

size_t tn_page_json(char *out, const char *key, const void *items, int cnt,
                    size_t (*obj)(const void *items, int i, char *out), const uint8_t *next)
{
    struct json_w w;
    json_w_init(&w, out, TN_PAGE_CAP(cnt));
    json_w_lit(&w, "{\"");
    json_w_raw(&w, key, strlen(key));
    json_w_lit(&w, "\":[");
    for (int i = 0; i < cnt; i++) {
        char o[TN_JSON_MAX];
        if (i)
            json_w_lit(&w, ",");
        json_w_raw(&w, o, obj(items, i, o));
    }
    json_w_lit(&w, "],\"next_cursor\":");
    if (next) {
        char id[UUID_TEXT_LEN];
        uuid_format(next, id);
        json_w_str(&w, id, sizeof(id));
    } else {
        json_w_lit(&w, "null");
    }
    json_w_lit(&w, "}");
    ssize_t len = json_w_end(&w); /* never < 0: the cap holds cnt objects and 256 bytes more */
    return len < 0 ? 0 : (size_t)len;
}
