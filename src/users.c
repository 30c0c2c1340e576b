/* users — see users.h. */
#include "users.h"

#include <ck_hs.h>
#include <ck_pr.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "counters.h"

/* A stored user: records live in the shard arena; ck_hs holds pointers to them. */
struct urec {
    uint64_t hash;
    uint16_t len;
    char s[];
};

/* Arena chunks of 1 MiB: 75,000 ids of ~10 bytes fit in two chunks (README's 32 MB RSS
   budget for 1M events / 75k users, the 1MRC pattern of SPEC §2.1), and a chunk is malloc'd
   at most once per ~40k users. */
#define ARENA_CHUNK (1u << 20)

struct chunk {
    struct chunk *next;
    size_t used;
    char data[];
};

/* SPSC byte ring. Positions are free-running; record = u16 length + bytes, 2-byte aligned. */
struct mbox {
    char *buf;
    uint32_t mask;
    uint32_t tail __attribute__((aligned(CK_MD_CACHELINE))); /* producer writes */
    uint32_t head __attribute__((aligned(CK_MD_CACHELINE))); /* consumer writes */
};

/* Records that did not fit in a full mailbox; kept by the producer, retried every batch. */
struct spill {
    char *buf;
    size_t len, cap;
};

struct shard {
    ck_hs_t hs;
    struct chunk *arena;
    uint32_t wake_pending __attribute__((aligned(CK_MD_CACHELINE)));
    /* producer-side state of this worker (as a sender) */
    unsigned *wake_list;
    uint8_t *wake_queued; /* per owner: already in wake_list (an owner may ack twice per batch) */
    size_t nwake;
    struct spill *spills; /* indexed by owner */
} __attribute__((aligned(CK_MD_CACHELINE)));

static unsigned nshards;
static uint64_t max_users;
static uint64_t users_reserved; /* global reservation so --max-users is exact */
static uint64_t hash_seed;
static struct shard *shards;
static struct mbox *mboxes; /* [producer * n + owner] */
/* Set once by main before the workers start (users_set_journal); read-only afterwards. */
static users_journal_fn journal_fn;
static void *journal_ctx;

static void *hs_malloc(size_t r)
{
    return malloc(r);
}
static void hs_free(void *p, size_t b, bool r)
{
    (void)b;
    (void)r;
    free(p);
}
static struct ck_malloc hs_allocator = {.malloc = hs_malloc, .free = hs_free};

static unsigned long hs_hash(const void *k, unsigned long seed)
{
    (void)seed;
    return (unsigned long)((const struct urec *)k)->hash;
}

static bool hs_cmp(const void *a, const void *b)
{
    const struct urec *x = a, *y = b;
    return x->len == y->len && memcmp(x->s, y->s, x->len) == 0;
}

static inline uint64_t mix(uint64_t a, uint64_t b)
{
    unsigned __int128 r = (unsigned __int128)a * b;
    return (uint64_t)r ^ (uint64_t)(r >> 64);
}

uint64_t users_hash(const void *p, size_t n)
{
    const unsigned char *s = p;
    uint64_t h = hash_seed ^ ((uint64_t)n * 0x9E3779B97F4A7C15ull);
    while (n >= 8) {
        uint64_t v;
        memcpy(&v, s, 8);
        h = mix(h ^ v, 0xa0761d6478bd642full);
        s += 8;
        n -= 8;
    }
    uint64_t v = 0;
    memcpy(&v, s, n);
    h = mix(h ^ v ^ ((uint64_t)n << 59), 0xe7037ed1a0b428dbull);
    return mix(h, 0x8ebc6af09c88c6e3ull);
}

static inline unsigned owner_of(uint64_t h)
{
    return (unsigned)(((h >> 32) * nshards) >> 32);
}

static struct urec *arena_alloc(struct shard *sh, size_t n)
{
    size_t need = (sizeof(struct urec) + n + 7) & ~(size_t)7;
    struct chunk *c = sh->arena;
    if (!c || c->used + need > ARENA_CHUNK) {
        c = malloc(sizeof(*c) + ARENA_CHUNK);
        if (!c)
            return NULL;
        c->next = sh->arena;
        c->used = 0;
        sh->arena = c;
    }
    struct urec *r = (struct urec *)(c->data + c->used);
    c->used += need;
    return r;
}

static void arena_free(struct shard *sh)
{
    struct chunk *c = sh->arena;
    while (c) {
        struct chunk *nx = c->next;
        free(c);
        c = nx;
    }
    sh->arena = NULL;
}

/* Owner inserts; returns 1 if new, 0 if known. */
static int insert_local(unsigned w, uint64_t h, const char *s, size_t n)
{
    struct shard *sh = &shards[w];
    struct {
        struct urec r;
        char s[USERS_ID_MAX];
    } key;
    key.r.hash = h;
    key.r.len = (uint16_t)n;
    memcpy(key.r.s, s, n);
    if (ck_hs_get(&sh->hs, h, &key.r))
        return 0;
    struct cnt_slot *slot = cnt_slot(w);
    if (ck_pr_faa_64(&users_reserved, 1) >= max_users) {
        ck_pr_dec_64(&users_reserved);
        cnt_add(&slot->users_overflow, 1);
        return 0;
    }
    struct urec *r = arena_alloc(sh, n);
    if (!r || (memcpy(r, &key.r, sizeof(struct urec) + n), !ck_hs_put(&sh->hs, h, r))) {
        /* Out of memory: account it as overflow rather than crash (never silent). */
        ck_pr_dec_64(&users_reserved);
        cnt_add(&slot->users_overflow, 1);
        return 0;
    }
    cnt_add(&slot->users, 1);
    if (journal_fn)
        journal_fn(w, s, n, journal_ctx);
    return 1;
}

static bool mbox_push(struct mbox *m, const char *s, size_t n)
{
    uint32_t need = (uint32_t)((2 + n + 1) & ~(size_t)1);
    uint32_t tail = m->tail;
    uint32_t head = ck_pr_load_32(&m->head);
    if ((m->mask + 1) - (tail - head) < need)
        return false;
    uint16_t len = (uint16_t)n;
    char hdr[2];
    memcpy(hdr, &len, 2);
    for (uint32_t i = 0; i < 2; i++)
        m->buf[(tail + i) & m->mask] = hdr[i];
    uint32_t off = (tail + 2) & m->mask;
    uint32_t first = m->mask + 1 - off;
    if (first >= n) {
        memcpy(m->buf + off, s, n);
    } else {
        memcpy(m->buf + off, s, first);
        memcpy(m->buf, s + first, n - first);
    }
    ck_pr_fence_store();
    ck_pr_store_32(&m->tail, tail + need);
    return true;
}

/* Pop one record into out (cap USERS_ID_MAX); returns length or -1 if empty. */
static int mbox_pop(struct mbox *m, char *out)
{
    uint32_t head = m->head;
    uint32_t tail = ck_pr_load_32(&m->tail);
    if (head == tail)
        return -1;
    ck_pr_fence_load();
    char hdr[2];
    for (uint32_t i = 0; i < 2; i++)
        hdr[i] = m->buf[(head + i) & m->mask];
    uint16_t len;
    memcpy(&len, hdr, 2);
    uint32_t off = (head + 2) & m->mask;
    uint32_t first = m->mask + 1 - off;
    if (first >= len) {
        memcpy(out, m->buf + off, len);
    } else {
        memcpy(out, m->buf + off, first);
        memcpy(out + first, m->buf, len - first);
    }
    ck_pr_fence_load_store();
    ck_pr_store_32(&m->head, head + (((uint32_t)len + 3u) & ~1u));
    return len;
}

static void want_wake(unsigned w, unsigned owner)
{
    struct shard *o = &shards[owner];
    /* Full fence: our tail store must be visible before we read the owner's flag, and the owner
       clears the flag before it reads our tail (users_wake_ack), so no record is stranded. */
    ck_pr_fence_memory();
    if (ck_pr_load_32(&o->wake_pending) == 0 && ck_pr_cas_32(&o->wake_pending, 0, 1) &&
        !shards[w].wake_queued[owner]) {
        shards[w].wake_queued[owner] = 1;
        shards[w].wake_list[shards[w].nwake++] = owner;
    }
}

static int spill_add(struct spill *sp, const char *s, size_t n)
{
    if (sp->len + 2 + n > sp->cap) {
        size_t nc = sp->cap ? sp->cap * 2 : 65536;
        while (nc < sp->len + 2 + n)
            nc *= 2;
        char *nb = realloc(sp->buf, nc);
        if (!nb)
            return -ENOMEM;
        sp->buf = nb;
        sp->cap = nc;
    }
    uint16_t len = (uint16_t)n;
    memcpy(sp->buf + sp->len, &len, 2);
    memcpy(sp->buf + sp->len + 2, s, n);
    sp->len += 2 + n;
    return 0;
}

/* Move spilled records into the mailbox while they fit; returns true if any moved. */
static bool spill_flush(struct spill *sp, struct mbox *m)
{
    size_t off = 0;
    while (off < sp->len) {
        uint16_t len;
        memcpy(&len, sp->buf + off, 2);
        if (!mbox_push(m, sp->buf + off + 2, len))
            break;
        off += 2 + (size_t)len;
    }
    if (off == 0)
        return false;
    memmove(sp->buf, sp->buf + off, sp->len - off);
    sp->len -= off;
    if (sp->len == 0) {
        /* A spill only exists while an owner lags behind a burst: give it back once drained. */
        free(sp->buf);
        sp->buf = NULL;
        sp->cap = 0;
    }
    return true;
}

int users_observe(unsigned w, const char *s, size_t n)
{
    uint64_t h = users_hash(s, n);
    unsigned o = owner_of(h);
    if (o == w)
        return insert_local(w, h, s, n);
    struct spill *sp = &shards[w].spills[o];
    struct mbox *m = &mboxes[(size_t)w * nshards + o];
    if (sp->len == 0 && mbox_push(m, s, n)) {
        want_wake(w, o);
        return 0;
    }
    /* Mailbox full (owner lagging by more than mbox_bytes): keep it, in order, until it fits. */
    if (spill_add(sp, s, n) < 0)
        cnt_add(&cnt_slot(w)->users_overflow, 1);
    return 0;
}

size_t users_drain(unsigned w)
{
    char buf[USERS_ID_MAX];
    size_t count = 0;
    for (unsigned p = 0; p < nshards; p++) {
        if (p == w)
            continue;
        struct mbox *m = &mboxes[(size_t)p * nshards + w];
        int len;
        while ((len = mbox_pop(m, buf)) >= 0) {
            insert_local(w, users_hash(buf, (size_t)len), buf, (size_t)len);
            count++;
        }
    }
    return count;
}

size_t users_pending_wakes(unsigned w, unsigned *out, size_t cap)
{
    struct shard *sh = &shards[w];
    for (unsigned o = 0; o < nshards; o++) {
        struct spill *sp = &sh->spills[o];
        if (o != w && sp->len && spill_flush(sp, &mboxes[(size_t)w * nshards + o]))
            want_wake(w, o);
    }
    size_t k = 0;
    for (size_t i = 0; i < sh->nwake && k < cap; i++) {
        sh->wake_queued[sh->wake_list[i]] = 0;
        out[k++] = sh->wake_list[i];
    }
    sh->nwake = 0;
    return k;
}

void users_wake_ack(unsigned w)
{
    ck_pr_store_32(&shards[w].wake_pending, 0);
    ck_pr_fence_memory();
}

void users_reset_shard(unsigned w)
{
    struct shard *sh = &shards[w];
    users_drain(w);
    struct cnt_slot *slot = cnt_slot(w);
    ck_pr_sub_64(&users_reserved, ck_pr_load_64(&slot->users));
    ck_pr_store_64(&slot->users, 0);
    ck_pr_store_64(&slot->users_overflow, 0);
    ck_hs_reset(&sh->hs);
    arena_free(sh);
    if (journal_fn)
        journal_fn(w, NULL, 0, journal_ctx);
}

void users_set_journal(users_journal_fn fn, void *ctx)
{
    journal_fn = fn;
    journal_ctx = ctx;
}

int users_preload(const char *s, size_t n)
{
    if (n == 0 || n > USERS_ID_MAX)
        return -EINVAL;
    uint64_t h = users_hash(s, n);
    unsigned o = owner_of(h);
    uint64_t ov = cnt_slot(o)->users_overflow;
    if (insert_local(o, h, s, n) == 1)
        return 1;
    return cnt_slot(o)->users_overflow != ov ? -ENOSPC : 0;
}

int users_init(unsigned n, uint64_t max, size_t mbox_bytes)
{
    if (n == 0 || max == 0 || mbox_bytes < 4096 || (mbox_bytes & (mbox_bytes - 1)))
        return -EINVAL;
    if (getrandom(&hash_seed, sizeof(hash_seed), 0) != sizeof(hash_seed))
        hash_seed = 0x243F6A8885A308D3ull;
    nshards = n;
    max_users = max;
    users_reserved = 0;
    shards = aligned_alloc(CK_MD_CACHELINE, sizeof(*shards) * n);
    mboxes = aligned_alloc(CK_MD_CACHELINE, sizeof(*mboxes) * n * n);
    if (!shards || !mboxes)
        goto fail;
    memset(shards, 0, sizeof(*shards) * n);
    memset(mboxes, 0, sizeof(*mboxes) * n * n);
    for (unsigned i = 0; i < n; i++) {
        /* 1024 initial slots: ck_hs doubles as needed (amortised, never per request). */
        if (!ck_hs_init(&shards[i].hs, CK_HS_MODE_OBJECT | CK_HS_MODE_SPMC, hs_hash, hs_cmp,
                        &hs_allocator, 1024, hash_seed))
            goto fail;
        shards[i].wake_list = calloc(n, sizeof(unsigned));
        shards[i].wake_queued = calloc(n, 1);
        shards[i].spills = calloc(n, sizeof(struct spill));
        if (!shards[i].wake_list || !shards[i].wake_queued || !shards[i].spills)
            goto fail;
        for (unsigned j = 0; j < n; j++) {
            if (i == j)
                continue;
            struct mbox *m = &mboxes[(size_t)i * n + j];
            m->buf = malloc(mbox_bytes);
            if (!m->buf)
                goto fail;
            /* Fault the ring in now: its pages would otherwise be touched one by one as the
               write position first goes round, so RSS would creep for a while under load
               instead of being a fixed n*(n-1)*mbox_bytes from the start. */
            memset(m->buf, 0, mbox_bytes);
            m->mask = (uint32_t)mbox_bytes - 1;
        }
    }
    return 0;
fail:
    users_fini();
    return -ENOMEM;
}

void users_fini(void)
{
    if (shards) {
        for (unsigned i = 0; i < nshards; i++) {
            if (shards[i].hs.map)
                ck_hs_destroy(&shards[i].hs);
            arena_free(&shards[i]);
            free(shards[i].wake_list);
            free(shards[i].wake_queued);
            if (shards[i].spills)
                for (unsigned j = 0; j < nshards; j++)
                    free(shards[i].spills[j].buf);
            free(shards[i].spills);
        }
    }
    if (mboxes)
        for (size_t i = 0; i < (size_t)nshards * nshards; i++)
            free(mboxes[i].buf);
    free(shards);
    free(mboxes);
    shards = NULL;
    mboxes = NULL;
    nshards = 0;
}
