/* persist_queue — see persist_int.h: the worker side (increments, durable slots, the journal
   and request rings) and the persister's draining of them and its replies. */

#include <errno.h>
#include <stdlib.h>

#include "counters.h"
#include "metrics.h"
#include "persist_int.h"
#include "users.h"

/* ------------------------------------------------------------------ worker side */

int persist_w_incr(unsigned w, uint64_t *ticket)
{
    /* Exact for one client; concurrent increments on different workers at the very edge of
       INT64_MAX may each pass this check (per-CPU counters have no shared point to refuse at). */
    if (persist_live() == INT64_MAX)
        return -EOVERFLOW;
    struct cnt_slot *s = cnt_slot(w);
    uint64_t t = s->incr + 1;
    ck_pr_store_64(&s->incr, t);
    *ticket = t;
    return 0;
}

int64_t persist_live(void)
{
    __int128 v = pst_read_base(NULL);
    for (unsigned i = 0; i < cnt_count(); i++)
        v += ck_pr_load_64(&cnt_slot(i)->incr);
    if (v > INT64_MAX)
        return INT64_MAX;
    if (v < INT64_MIN)
        return INT64_MIN;
    return (int64_t)v;
}

int persist_committed(int64_t *v)
{
    if (!pst.enabled)
        return -ENODEV;
    pst_read_base(v);
    return 0;
}

int persist_w_durable_enter(unsigned w)
{
    if (!pst.enabled)
        return -ENODEV;
    if (ck_pr_faa_64(&pst.inflight, 1) >= pst.max_inflight) {
        ck_pr_dec_64(&pst.inflight);
        return -EBUSY;
    }
    struct pworker *p = &pst.pw[w];
    ck_pr_store_64(&p->dur_waiting, p->dur_waiting + 1);
    /* before the ticket is taken: a flush that sees the ticket also sees the waiter, and wakes
       this worker with the reply */
    ck_pr_fence_store();
    p->want_wake = true;
    metrics_durable_inflight_add(1);
    return 0;
}

void persist_w_durable_leave(unsigned w)
{
    struct pworker *p = &pst.pw[w];
    ck_pr_store_64(&p->dur_waiting, p->dur_waiting - 1);
    ck_pr_dec_64(&pst.inflight);
    metrics_durable_inflight_add(-1);
}

int persist_w_request(unsigned w, enum persist_req kind, uint64_t token)
{
    if (!pst.enabled)
        return -ENODEV;
    struct pworker *p = &pst.pw[w];
    uintptr_t e = ((uintptr_t)kind << 56) | (token & ((1ull << 56) - 1));
    if (!ck_ring_enqueue_spsc(&p->req, p->reqbuf, (void *)e))
        return -EAGAIN;
    p->want_wake = true;
    return 0;
}

int persist_w_tnop(unsigned w, struct persist_tnop *op)
{
    if (!pst.enabled)
        return -ENODEV;
    uintptr_t a = (uintptr_t)op;
    if (a >> 56) /* x86-64 and arm64 user addresses have 47-52 bits: never seen */
        return -EINVAL;
    struct pworker *p = &pst.pw[w];
    if (!ck_ring_enqueue_spsc(&p->req, p->reqbuf, (void *)(((uintptr_t)PERSIST_REQ_TNOP << 56) | a)))
        return -EAGAIN;
    p->want_wake = true;
    return 0;
}

bool persist_w_reply_pop(unsigned w, struct persist_reply *r)
{
    if (!pst.enabled)
        return false;
    struct pworker *p = &pst.pw[w];
    uint32_t h = p->rep_head;
    if (h == ck_pr_load_32(&p->rep_tail))
        return false;
    ck_pr_fence_load();
    *r = p->rep[h & (REP_RING - 1)];
    ck_pr_fence_load_store();
    ck_pr_store_32(&p->rep_head, h + 1);
    return true;
}

/* Payload bytes of a record with header len: a marker has none, a keyed record its flagged
   length, a user id its length. */
static size_t jr_payload(uint16_t len)
{
    return len == JR_MARKER ? 0 : (len & JR_KEYED) ? (size_t)(len & ~JR_KEYED) : len;
}

static bool jring_push(struct jring *j, const char *s, size_t n, uint16_t len)
{
    uint32_t need = (uint32_t)((2 + n + 1) & ~(size_t)1);
    uint32_t tail = j->tail;
    if ((j->mask + 1) - (tail - ck_pr_load_32(&j->head)) < need)
        return false;
    char hdr[2];
    memcpy(hdr, &len, 2);
    j->buf[tail & j->mask] = hdr[0];
    j->buf[(tail + 1) & j->mask] = hdr[1];
    uint32_t off = (tail + 2) & j->mask, first = j->mask + 1 - off;
    if (n == 0) {
        /* a reset marker: header only (s may be NULL) */
    } else if (first >= n) {
        memcpy(j->buf + off, s, n);
    } else {
        memcpy(j->buf + off, s, first);
        memcpy(j->buf, s + first, n - first);
    }
    ck_pr_fence_store();
    ck_pr_store_32(&j->tail, tail + need);
    return true;
}

/* Pop one record into out (>= USERS_ID_MAX): its header (length, JR_MARKER, or JR_KEYED |
   length), or -1 if empty. */
static int jring_pop(struct jring *j, char *out)
{
    uint32_t head = j->head;
    if (head == ck_pr_load_32(&j->tail))
        return -1;
    ck_pr_fence_load();
    char hdr[2] = {j->buf[head & j->mask], j->buf[(head + 1) & j->mask]};
    uint16_t len;
    memcpy(&len, hdr, 2);
    size_t n = jr_payload(len);
    uint32_t off = (head + 2) & j->mask, first = j->mask + 1 - off;
    if (first >= n) {
        memcpy(out, j->buf + off, n);
    } else {
        memcpy(out, j->buf + off, first);
        memcpy(out + first, j->buf, n - first);
    }
    ck_pr_fence_load_store();
    ck_pr_store_32(&j->head, head + (uint32_t)((2 + n + 1) & ~(size_t)1));
    return len;
}

/* Move spilled records into the ring while they fit (spill records: u16 len + bytes). */
static void overflow_move(struct pworker *p)
{
    size_t off = 0;
    while (off < p->over.len) {
        uint16_t len;
        memcpy(&len, p->over.buf + off, 2);
        size_t n = jr_payload(len);
        if (!jring_push(&p->j, p->over.buf + off + 2, n, len))
            break;
        off += 2 + n;
    }
    if (off) {
        memmove(p->over.buf, p->over.buf + off, p->over.len - off);
        p->over.len -= off;
    }
}

/* Queue one journal record of worker w, in order: into the ring, or behind what spilled. */
static int journal_put(struct pworker *p, const char *s, size_t n, uint16_t len)
{
    if (p->over.len == 0 && jring_push(&p->j, s, n, len))
        return 0;
    /* Ring full (the persister is behind by 256 KiB): keep the record, in order. Memory only
       grows with distinct new users, which is the bound SPEC §4 allows. */
    if (pst_bytes_reserve(&p->over, 2 + n) < 0)
        return -ENOMEM;
    memcpy(p->over.buf + p->over.len, &len, 2);
    if (n)
        memcpy(p->over.buf + p->over.len + 2, s, n);
    p->over.len += 2 + n;
    return 0;
}

int persist_w_keyed(unsigned w, const char *key, size_t klen, uint64_t token)
{
    if (!pst.enabled)
        return -ENODEV;
    if (klen < 1 || klen > PERSIST_KEY_MAX)
        return -EINVAL;
    char rec[8 + PERSIST_KEY_MAX];
    memcpy(rec, &token, 8);
    memcpy(rec + 8, key, klen);
    struct pworker *p = &pst.pw[w];
    if (journal_put(p, rec, 8 + klen, (uint16_t)(JR_KEYED | (8 + klen))) < 0)
        return -EAGAIN;
    p->want_wake = true;
    return 0;
}

void persist_journal(unsigned w, const char *s, size_t n, void *ctx)
{
    (void)ctx;
    if (!pst.enabled)
        return;
    struct pworker *p = &pst.pw[w];
    uint16_t len = s ? (uint16_t)n : (uint16_t)JR_MARKER;
    if (!s)
        n = 0;
    if (journal_put(p, s, n, len) == 0)
        return;
    log_error("out of memory: a new user id will not be persisted");
}

bool persist_w_batch_end(unsigned w, bool active)
{
    if (!pst.enabled)
        return false;
    struct pworker *p = &pst.pw[w];
    if (p->over.len)
        overflow_move(p);
    bool wake = p->want_wake;
    p->want_wake = false;
    if (!wake && !active)
        return false;
    /* Full fence: what we queued and this batch's changes before the looks at the flags the
       persister raises or clears before it reads them: wake_pending (cleared before it
       drains, as users.c's want_wake) and dozing (raised before the flush build that lets it
       doze, persist_conn's doze(): either that build sees the changes, or this sees the
       flag). One worker ends the doze (the CAS). */
    ck_pr_fence_memory();
    if (active && ck_pr_load_32(&pst.dozing) && ck_pr_cas_32(&pst.dozing, 1, 0))
        wake = true;
    if (!wake)
        return false;
    return ck_pr_load_32(&pst.wake_pending) == 0 && ck_pr_cas_32(&pst.wake_pending, 0, 1);
}

/* ------------------------------------------------------------------ persister: queues */

void persist_p_attach(void (*wake)(void *ctx, unsigned w), void *ctx)
{
    pst.wake = wake;
    pst.wake_ctx = ctx;
}

void pst_reply(unsigned w, const struct persist_reply *r)
{
    struct pworker *p = &pst.pw[w];
    /* A durable reply is pushed for every flush with this slot's increments (the worker needs
       each one to number its tickets) but only worth a wake-up when someone waits on it; the
       worker drains the rest at the end of its next batch. */
    if (r->kind != PERSIST_R_DURABLE || ck_pr_load_64(&p->dur_waiting) > 0)
        p->wake = true;
    uint32_t t = p->rep_tail;
    if (p->nback == 0 && t - ck_pr_load_32(&p->rep_head) < REP_RING) {
        p->rep[t & (REP_RING - 1)] = *r;
        ck_pr_fence_store();
        ck_pr_store_32(&p->rep_tail, t + 1);
        return;
    }
    if (p->nback == p->capback) {
        size_t nc = p->capback ? p->capback * 2 : 64;
        struct persist_reply *nb = realloc(p->back, nc * sizeof(*nb));
        if (!nb) {
            log_error("out of memory: a persistence reply is lost (its requests will time out)");
            return;
        }
        p->back = nb;
        p->capback = nc;
    }
    p->back[p->nback++] = *r;
}

void pst_backlog_move(struct pworker *p)
{
    size_t k = 0;
    uint32_t t = p->rep_tail;
    while (k < p->nback && t - ck_pr_load_32(&p->rep_head) < REP_RING) {
        p->rep[t & (REP_RING - 1)] = p->back[k++];
        t++;
    }
    if (!k)
        return;
    ck_pr_fence_store();
    ck_pr_store_32(&p->rep_tail, t);
    memmove(p->back, p->back + k, (p->nback - k) * sizeof(*p->back));
    p->nback -= k;
    p->wake = true;
}

static int preq_add(struct preq **v, size_t *n, size_t *cap, struct preq e)
{
    if (*n == *cap) {
        size_t nc = *cap ? *cap * 2 : 16;
        struct preq *nv = realloc(*v, nc * sizeof(*nv));
        if (!nv)
            return -ENOMEM;
        *v = nv;
        *cap = nc;
    }
    (*v)[(*n)++] = e;
    return 0;
}

static uint64_t max_reset_gen(void)
{
    uint64_t m = 0;
    for (unsigned i = 0; i < pst.n; i++) {
        uint64_t g = ck_pr_load_64(&cnt_slot(i)->reset_gen);
        if (g > m)
            m = g;
    }
    return m;
}

void pst_drain_requests(uint64_t now)
{
    for (unsigned w = 0; w < pst.n; w++) {
        struct pworker *p = &pst.pw[w];
        void *e;
        while (ck_ring_dequeue_spsc(&p->req, p->reqbuf, &e)) {
            uintptr_t v = (uintptr_t)e;
            struct preq q = {.w = w, .token = v & ((1ull << 56) - 1), .at_ms = now};
            if ((v >> 56) == PERSIST_REQ_TNOP) {
                pst_tn_add(w, (struct persist_tnop *)(uintptr_t)q.token, now);
            } else if ((v >> 56) == PERSIST_REQ_CLUSTER) {
                preq_add(&pst.cl, &pst.ncl, &pst.capcl, q);
            } else {
                /* The worker asks after its /reset barrier: every slot has applied it. */
                q.target = max_reset_gen();
                if (q.target <= pst.reset_applied)
                    pst_reply(w, &(struct persist_reply){.kind = PERSIST_R_RESET, .token = q.token});
                else
                    preq_add(&pst.rs, &pst.nrs, &pst.caprs, q);
            }
        }
    }
    /* Requests whose worker already answered 503 (timed out) are dropped, so a long outage
       cannot grow these lists without bound. */
    uint64_t ttl = (uint64_t)pst.durable_timeout_ms + 1000;
    size_t j = 0;
    for (size_t i = 0; i < pst.ncl; i++)
        if (pst.cl[i].attached || now - pst.cl[i].at_ms < ttl)
            pst.cl[j++] = pst.cl[i];
    pst.ncl = j;
    j = 0;
    for (size_t i = 0; i < pst.nrs; i++)
        if (now - pst.rs[i].at_ms < ttl)
            pst.rs[j++] = pst.rs[i];
    pst.nrs = j;
    /* Keyed increments long answered 503 ("outcome unknown") and not in the flush in flight:
       dropped, so an outage holds them for --durable-timeout-ms + 1 s, not for ever (the
       client retries with the same key, which is what the key is for). */
    j = pst.f.st != F_NONE ? pst.f.nk : 0;
    for (size_t i = j; i < pst.nkq; i++)
        if (now - pst.kq[i].at_ms < ttl)
            pst.kq[j++] = pst.kq[i];
    pst.nkq = j;
}

static void users_add(struct pworker *p, const char *s, size_t n)
{
    uint16_t len = (uint16_t)n;
    if (pst_bytes_reserve(&p->u.b, 2 + n) < 0) {
        log_error("out of memory: a new user id will not be persisted");
        return;
    }
    memcpy(p->u.b.buf + p->u.b.len, &len, 2);
    memcpy(p->u.b.buf + p->u.b.len + 2, s, n);
    p->u.b.len += 2 + n;
    p->u.n++;
}

static void keyed_add(unsigned w, const char *rec, size_t n)
{
    if (pst.nkq == pst.capkq) {
        size_t nc = pst.capkq ? pst.capkq * 2 : 64;
        struct kreq *nv = realloc(pst.kq, nc * sizeof(*nv));
        if (!nv) {
            log_error("out of memory: a keyed durable increment is dropped (it times out)");
            return;
        }
        pst.kq = nv;
        pst.capkq = nc;
    }
    struct kreq *k = &pst.kq[pst.nkq++];
    k->w = w;
    memcpy(&k->token, rec, 8);
    k->klen = (uint8_t)(n - 8);
    memcpy(k->key, rec + 8, n - 8);
    k->at_ms = pst.now_ms;
}

void pst_drain_journals(void)
{
    char buf[USERS_ID_MAX + 2];
    bool gone = ck_pr_load_8((uint8_t *)&pst.workers_gone);
    for (unsigned w = 0; w < pst.n; w++) {
        struct pworker *p = &pst.pw[w];
        if (gone && p->over.len) /* the workers are joined: their spills are ours to read */
            overflow_move(p);
        for (;;) {
            int len = jring_pop(&p->j, buf);
            if (len < 0 && gone && p->over.len) {
                overflow_move(p); /* more spilled records fit now that the ring is drained */
                len = jring_pop(&p->j, buf);
            }
            if (len < 0)
                break;
            if (len != (int)JR_MARKER && (len & (int)JR_KEYED)) {
                keyed_add(w, buf, jr_payload((uint16_t)len));
                continue;
            }
            if (len == (int)JR_MARKER) {
                /* Shard w was reset: its pending users (even those in the flush in flight,
                   which the reset flush deletes anyway) are forgotten. */
                p->u.b.len = p->u.head = p->u.take = 0;
                p->u.n = p->u.ntake = 0;
                p->markers++;
                continue;
            }
            users_add(p, buf, (size_t)len);
        }
    }
}
