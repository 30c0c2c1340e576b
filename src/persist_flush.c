/* persist_flush — see persist_int.h: building a flush from the slots and queues, applying a
   committed one, failures and isolation (rc_rejected), and the spill file at shutdown. */

#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>

#include "clock.h"
#include "counters.h"
#include "fmt.h"
#include "metrics.h"
#include "persist_int.h"
#include "spill.h"
#include "users.h"
#include "utf8.h"

/* ------------------------------------------------------------------ persister: flushes */

/* Names of the parts in rc_rejected.kind and the logs. */
static const char *const PART_NAME[P_NPARTS] = {"ledger", "counter", "events", "user",
                                                "tenants", "keyed_increment"};

static int uref_cmp(const void *a, const void *b)
{
    const struct uref *x = a, *y = b;
    int c = memcmp(x->s, y->s, x->n < y->n ? x->n : y->n);
    return c ? c : (int)x->n - (int)y->n;
}

/* Build the bytea[] literal of up to USERS_PER_FLUSH pending users, sorted by bytes (the order
   PostgreSQL compares bytea in, so concurrent nodes lock keys in one order). */
static int take_users(struct flush *f)
{
    size_t total = 0;
    for (unsigned w = 0; w < pst.n; w++) {
        struct upend *u = &pst.pw[w].u;
        if (u->head) { /* compact: nothing is in flight while a flush is being built */
            memmove(u->b.buf, u->b.buf + u->head, u->b.len - u->head);
            u->b.len -= u->head;
            u->head = u->take = 0;
        }
        u->ntake = 0;
        total += u->n;
    }
    f->nusers = 0;
    f->users.len = 0;
    if (!total)
        return 0;
    if (total > USERS_PER_FLUSH)
        total = USERS_PER_FLUSH;
    if (total > pst.users_cap) {
        total = pst.users_cap;
        f->partial = true;
    }
    if (pst.iso && total > pst.ulimit) { /* isolating: the first ulimit users, in worker order */
        total = pst.ulimit;
        f->partial = true;
    }
    if (pst.capurefs < total) {
        struct uref *nr = realloc(pst.urefs, total * sizeof(*nr));
        if (!nr)
            return -ENOMEM;
        pst.urefs = nr;
        pst.capurefs = total;
    }
    size_t k = 0;
    for (unsigned w = 0; w < pst.n && k < total; w++) {
        struct upend *u = &pst.pw[w].u;
        size_t off = u->head;
        while (off < u->b.len && k < total) {
            uint16_t len;
            memcpy(&len, u->b.buf + off, 2);
            pst.urefs[k++] = (struct uref){.s = u->b.buf + off + 2, .n = len};
            off += 2 + (size_t)len;
            u->ntake++;
        }
        u->take = off;
    }
    if (k)
        qsort(pst.urefs, k, sizeof(*pst.urefs), uref_cmp);
    static const char hex[] = "0123456789abcdef";
    if (pst_bytes_reserve(&f->users, 3 + k * 6 + (size_t)USERS_ID_MAX * 2 * k) < 0)
        goto nomem;
    char *o = f->users.buf;
    *o++ = '{';
    for (size_t i = 0; i < k; i++) {
        if (i)
            *o++ = ',';
        memcpy(o, "\"\\\\x", 4); /* "\\x  → element text \x (bytea hex input) */
        o += 4;
        for (uint16_t j = 0; j < pst.urefs[i].n; j++) {
            unsigned char c = (unsigned char)pst.urefs[i].s[j];
            *o++ = hex[c >> 4];
            *o++ = hex[c & 15];
        }
        *o++ = '"';
    }
    *o++ = '}';
    *o = 0;
    f->users.len = (size_t)(o - f->users.buf);
    f->nusers = k;
    return 0;
nomem:
    for (unsigned w = 0; w < pst.n; w++) {
        pst.pw[w].u.take = pst.pw[w].u.head;
        pst.pw[w].u.ntake = 0;
    }
    return -ENOMEM;
}

static int jput(struct bytes *b, const char *s, size_t n)
{
    if (pst_bytes_reserve(b, n + 1) < 0)
        return -ENOMEM;
    memcpy(b->buf + b->len, s, n);
    b->len += n;
    b->buf[b->len] = 0;
    return 0;
}

static int jstr(struct bytes *b, const char *s)
{
    return jput(b, s, strlen(s));
}

static int jid(struct bytes *b, const uint8_t id[16])
{
    char t[UUID_TEXT_LEN + 2];
    t[0] = '"';
    uuid_format(id, t + 1);
    t[UUID_TEXT_LEN + 1] = '"';
    return jput(b, t, sizeof(t));
}

static int jint(struct bytes *b, __int128 v)
{
    char t[48];
    return jput(b, t, fmt_i128(t, v));
}

/* A JSON string of printable ASCII (labels, Idempotency-Keys: 0x20..0x7e), or null if n == 0. */
static int jtext(struct bytes *b, const char *s, size_t n)
{
    if (!n)
        return jstr(b, "null");
    if (pst_bytes_reserve(b, 2 * n + 3) < 0)
        return -ENOMEM;
    char *o = b->buf + b->len;
    *o++ = '"';
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '"' || s[i] == '\\')
            *o++ = '\\';
        *o++ = s[i];
    }
    *o++ = '"';
    *o = 0;
    b->len = (size_t)(o - b->buf);
    return 0;
}

static int tnd_cmp(const void *a, const void *b)
{
    return memcmp(((const struct tnd *)a)->id, ((const struct tnd *)b)->id, 16);
}

/* Counter idx into the candidates of this snapshot, once (stamped). */
static void cand_add(uint32_t idx, uint32_t nc)
{
    if (idx >= nc || pst.tn_stamp[idx] == pst.tn_gen)
        return;
    pst.tn_stamp[idx] = pst.tn_gen;
    pst.tn_cand[pst.tn_ncand++] = idx;
}

/* Grow the persister's per-counter arrays to nc counters (and the take buffer). */
static int tn_arrays_reserve(struct flush *f, uint32_t nc)
{
    int rc = pst_wm_reserve(nc);
    if (rc < 0)
        return rc;
    if (pst.tn_capstamp < nc) {
        size_t cap = pst.tn_capstamp ? pst.tn_capstamp : 1024;
        while (cap < nc)
            cap *= 2;
        uint32_t *st = realloc(pst.tn_stamp, cap * sizeof(*st));
        uint32_t *cd = st ? realloc(pst.tn_cand, cap * sizeof(*cd)) : NULL;
        uint32_t *pd = cd ? realloc(pst.tn_pend, cap * sizeof(*pd)) : NULL;
        if (st)
            pst.tn_stamp = st;
        if (cd)
            pst.tn_cand = cd;
        if (!pd)
            return -ENOMEM;
        pst.tn_pend = pd;
        memset(pst.tn_stamp + pst.tn_capstamp, 0, (cap - pst.tn_capstamp) * sizeof(*st));
        pst.tn_capstamp = cap;
    }
    if (!pst.tn_take && !(pst.tn_take = malloc(TN_TAKE_MAX * sizeof(*pst.tn_take))))
        return -ENOMEM;
    if (f->captnd < nc) {
        struct tnd *nd = realloc(f->tnd, nc * sizeof(*nd));
        if (!nd)
            return -ENOMEM;
        f->tnd = nd;
        f->captnd = nc;
    }
    return 0;
}

/* Inside tn_idem_freeze: the counts of tenants and counters (every record collected is of a
   counter already there: keyed increments wait while frozen), and every counter whose live
   value differs from what is committed. Only candidates are read (SPEC §4 flush cost follows
   change): what the workers marked since the last snapshot (tn_dirty_take), what is still
   pending (moved, not committed yet: a failed flush keeps it), what was taken last time (read
   once more: a mark can be skipped while the persister takes its entry), and new counters.
   Everything is read every TN_FULL_SCAN_MS, and when a mark may be missing (overflow, set). */
static int tn_values_snapshot(struct flush *f, uint64_t now, size_t ni)
{
    uint32_t nidem;
    ck_pr_fence_load();
    tn_sizes(pst.tn, &f->tn_nt, &f->tn_nc, &nidem);
    int rc = tn_arrays_reserve(f, f->tn_nc);
    if (rc < 0)
        return rc;
    /* At most tn_cap new counters and changed values a flush (a flush of 1M rows outlasts
       statement_timeout and would be retried whole for ever), but every counter with a record
       in this flush goes, with its value: a record never commits without its increment. */
    uint32_t must = 0; /* counters [0, must) include every one with a record */
    for (size_t i = 0; i < ni; i++)
        if (pst.tn_ibuf[i].counter + 1 > must)
            must = pst.tn_ibuf[i].counter + 1;
    uint64_t lim = (uint64_t)pst.tn_nc + pst.tn_cap;
    if (lim < must)
        lim = must;
    if (f->tn_nc > lim) {
        f->tn_nc = (uint32_t)lim;
        f->tn_partial = true;
    }
    uint32_t nc = f->tn_nc;
    bool full = !pst.tn_full_at || now - pst.tn_full_at >= TN_FULL_SCAN_MS;
    size_t ntake = tn_dirty_take(pst.tn, pst.tn_take, TN_TAKE_MAX, &full);
    if (++pst.tn_gen == 0) { /* stamps wrapped: start them over */
        memset(pst.tn_stamp, 0, pst.tn_capstamp * sizeof(*pst.tn_stamp));
        pst.tn_gen = 1;
    }
    pst.tn_ncand = 0;
    if (full) {
        for (uint32_t i = 0; i < nc; i++)
            cand_add(i, nc);
        pst.tn_full_at = now ? now : 1;
    } else {
        for (size_t i = 0; i < pst.tn_npend; i++)
            cand_add(pst.tn_pend[i], nc);
        for (size_t i = 0; i < ntake; i++)
            cand_add(pst.tn_take[i], nc);
        for (uint32_t i = pst.tn_nc; i < nc; i++)
            cand_add(i, nc);
        for (size_t i = 0; i < ni; i++) /* a record's counter is read with it, always */
            cand_add(pst.tn_ibuf[i].counter, nc);
    }
    /* next time: what is still moved, and what was taken now (stamped again, deduplicated) */
    pst.tn_npend = 0;
    uint32_t gen = pst.tn_gen;
    for (size_t i = 0; i < ni; i++) /* stamp the counters that have records: gen + 1 */
        pst.tn_stamp[pst.tn_ibuf[i].counter] = gen + 1;
    for (size_t i = 0; i < pst.tn_ncand; i++) {
        uint32_t idx = pst.tn_cand[i];
        const struct tn_counter *c = tn_counter_at(pst.tn, idx);
        uint64_t live = (uint64_t)tn_counter_value_stable(pst.tn, c);
        if (live == pst.tn_wm[idx])
            continue;
        pst.tn_pend[pst.tn_npend++] = idx; /* pending until a flush with it commits */
        if (f->ntnd < pst.tn_cap || pst.tn_stamp[idx] == gen + 1)
            f->tnd[f->ntnd++] = (struct tnd){.idx = idx, .live = live, .id = c->id};
        else
            f->tn_partial = true;
    }
    pst.tn_gen = gen + 1; /* the record stamps are spent: the next stamp is fresh */
    if (++pst.tn_gen == 0) {
        memset(pst.tn_stamp, 0, pst.tn_capstamp * sizeof(*pst.tn_stamp));
        pst.tn_gen = 1;
    }
    for (size_t i = 0; i < pst.tn_npend; i++)
        pst.tn_stamp[pst.tn_pend[i]] = pst.tn_gen;
    for (size_t i = 0; i < ntake && pst.tn_npend < nc; i++)
        if (pst.tn_take[i] < nc && pst.tn_stamp[pst.tn_take[i]] != pst.tn_gen) {
            pst.tn_stamp[pst.tn_take[i]] = pst.tn_gen;
            pst.tn_pend[pst.tn_npend++] = pst.tn_take[i];
        }
    return 0;
}

/* The tenant part of a flush, from what the database holds (pst.tn_*): new idempotency records
   and the values of every counter that moved (Σ per-worker deltas and base, minus the
   committed value, sorted by id), both read while keyed increments are held off
   (tn_idem_freeze), then new tenants and new counters. Scans every counter: 1M counters × 4
   workers ≈ 4M loads, a few ms per flush at the store's bound (keyed increments wait that
   long); a few thousand counters cost microseconds. */
static int build_tenants(struct flush *f)
{
    f->tn = false;
    f->ntnd = 0;
    f->j_t.len = f->j_c.len = f->j_d.len = f->j_i.len = 0;
    if (!pst.tn)
        return 0;
    if (!pst.tn_ibuf && !(pst.tn_ibuf = malloc(IDEM_PER_FLUSH * sizeof(*pst.tn_ibuf))))
        return -ENOMEM;
    if (!pst.tn_capibuf)
        pst.tn_capibuf = IDEM_PER_FLUSH;
    memcpy(f->tn_icur, pst.tn_icur, sizeof(f->tn_icur));
    uint64_t lost = 0;
    size_t ni = 0;
    /* Records and values from one frozen instant (tn_idem_freeze): collected first and values
       read after, a keyed increment landing in between was committed without its record — a
       kill -9 then, and its replay counts again (seen: 3 of 522). */
    tn_idem_freeze(pst.tn);
    int rc = 0;
    for (;;) {
        ni += tn_idem_collect(pst.tn, f->tn_icur, pst.tn_ibuf + ni, pst.tn_capibuf - ni, &lost);
        if (ni < pst.tn_capibuf)
            break;
        struct tn_idem_out *nb = realloc(pst.tn_ibuf, 2 * pst.tn_capibuf * sizeof(*nb));
        if (!nb) {
            rc = -ENOMEM; /* nothing of the tenants in this flush; the cursor is unchanged */
            break;
        }
        pst.tn_ibuf = nb;
        pst.tn_capibuf *= 2;
    }
    if (rc == 0)
        rc = tn_values_snapshot(f, pst.now_ms, ni);
    tn_idem_thaw(pst.tn);
    if (rc < 0)
        return rc;
    if (lost) {
        pst.tn_ilost += lost;
        log_warn("idempotency records overwritten before being persisted (ring full)",
                 LOG_U("records", lost), LOG_U("total", pst.tn_ilost));
    }
    uint32_t nt = f->tn_nt, nc = f->tn_nc;
    rc = jstr(&f->j_t, "[") || jstr(&f->j_c, "[") || jstr(&f->j_d, "[") || jstr(&f->j_i, "[");
    for (uint32_t i = pst.tn_nt; i < nt && !rc; i++) {
        const struct tn_tenant *t = tn_tenant_at(pst.tn, i);
        rc = jstr(&f->j_t, i > pst.tn_nt ? ",{\"id\":" : "{\"id\":") || jid(&f->j_t, t->id) ||
             jstr(&f->j_t, ",\"label\":") || jtext(&f->j_t, t->label, t->label_len) ||
             jstr(&f->j_t, ",\"ms\":") || jint(&f->j_t, t->created_ms) || jstr(&f->j_t, "}");
    }
    for (uint32_t i = pst.tn_nc; i < nc && !rc; i++) {
        const struct tn_counter *c = tn_counter_at(pst.tn, i);
        rc = jstr(&f->j_c, i > pst.tn_nc ? ",{\"id\":" : "{\"id\":") || jid(&f->j_c, c->id) ||
             jstr(&f->j_c, ",\"tid\":") || jid(&f->j_c, tn_tenant_at(pst.tn, c->tenant)->id) ||
             jstr(&f->j_c, ",\"label\":") || jtext(&f->j_c, c->label, c->label_len) ||
             jstr(&f->j_c, ",\"md\":") || jint(&f->j_c, c->max_delta) ||
             jstr(&f->j_c, ",\"ms\":") || jint(&f->j_c, c->created_ms) || jstr(&f->j_c, "}");
    }
    if (f->ntnd) /* qsort(NULL, 0, ...) is undefined behaviour (UBSan aborts on it) */
        qsort(f->tnd, f->ntnd, sizeof(*f->tnd), tnd_cmp);
    for (size_t i = 0; i < f->ntnd && !rc; i++) {
        __int128 d = (__int128)(int64_t)f->tnd[i].live - (__int128)(int64_t)pst.tn_wm[f->tnd[i].idx];
        rc = jstr(&f->j_d, i ? ",{\"id\":" : "{\"id\":") || jid(&f->j_d, f->tnd[i].id) ||
             jstr(&f->j_d, ",\"d\":") || jint(&f->j_d, d) || jstr(&f->j_d, "}");
    }
    for (size_t i = 0; i < ni && !rc; i++) {
        const struct tn_idem_out *o = &pst.tn_ibuf[i];
        rc = jstr(&f->j_i, i ? ",{\"tid\":" : "{\"tid\":") ||
             jid(&f->j_i, tn_tenant_at(pst.tn, o->tenant)->id) || jstr(&f->j_i, ",\"k\":") ||
             jtext(&f->j_i, o->key, o->klen) || jstr(&f->j_i, ",\"cid\":") ||
             jid(&f->j_i, tn_counter_at(pst.tn, o->counter)->id) || jstr(&f->j_i, ",\"d\":") ||
             jint(&f->j_i, o->delta) || jstr(&f->j_i, ",\"v\":") || jint(&f->j_i, o->value) ||
             jstr(&f->j_i, ",\"ms\":") || jint(&f->j_i, o->created_ms) || jstr(&f->j_i, "}");
    }
    rc = rc || jstr(&f->j_t, "]") || jstr(&f->j_c, "]") || jstr(&f->j_d, "]") || jstr(&f->j_i, "]");
    if (rc)
        return -ENOMEM;
    f->tn = nt != pst.tn_nt || nc != pst.tn_nc || f->ntnd || ni;
    return 0;
}

/* The text[] literal of the first KEYS_PER_FLUSH keyed increments (printable ASCII: only '"'
   and '\\' need a backslash inside the double quotes). */
static int take_keys(struct flush *f)
{
    size_t lim = pst.iso ? pst.klimit : KEYS_PER_FLUSH;
    f->nk = pst.nkq < lim ? pst.nkq : lim;
    f->keys.len = 0;
    if (!f->nk)
        return 0;
    if (pst_bytes_reserve(&f->keys, 3 + f->nk * (3 + 2 * PERSIST_KEY_MAX)) < 0) {
        f->nk = 0;
        return -ENOMEM;
    }
    char *o = f->keys.buf;
    *o++ = '{';
    for (size_t i = 0; i < f->nk; i++) {
        if (i)
            *o++ = ',';
        *o++ = '"';
        for (size_t j = 0; j < pst.kq[i].klen; j++) {
            char c = pst.kq[i].key[j];
            if (c == '"' || c == '\\')
                *o++ = '\\';
            *o++ = c;
        }
        *o++ = '"';
    }
    *o++ = '}';
    *o = 0;
    f->keys.len = (size_t)(o - f->keys.buf);
    return 0;
}

/* Isolating: keep only pst.iso_part of what build_flush took (the others stay at their
   watermarks, so flush_applied leaves them pending). */
static void iso_restrict(struct flush *f)
{
    enum part p = pst.iso_part;
    f->partial = true;
    if (p != P_TN && f->tn)
        f->tn_partial = true;
    if (p != P_COUNTER) {
        for (unsigned w = 0; w < pst.n; w++)
            f->incr[w] = pst.pw[w].wm_incr;
        f->cdelta = 0;
        f->counter = false;
    }
    if (p != P_EVENTS)
        f->events = f->reset = false;
    if (p != P_USERS) {
        f->nusers = 0;
        for (unsigned w = 0; w < pst.n; w++)
            pst.pw[w].u.take = pst.pw[w].u.head, pst.pw[w].u.ntake = 0;
    }
    if (p != P_TN)
        f->tn = false;
    if (p != P_KEYS)
        f->nk = 0;
    f->prune = false;
}

/* Snapshot the slots into pst.f. Returns true if there is anything to send. */
bool pst_build_flush(uint64_t now)
{
    struct flush *f = &pst.f;
    f->gen = ++pst.build_gen;
    pst.flush_snap_ms = now;
    f->partial = f->tn_partial = false;
    if (take_keys(f) < 0)
        log_error("out of memory building a flush: keyed increments wait for the next one");
    if (pst.nkq > f->nk)
        f->partial = true;
    if (build_tenants(f) < 0) {
        f->tn = false;
        f->tn_partial = true;
        log_error("out of memory building a flush: tenant counters wait for the next one");
    }
    f->cdelta = 0;
    for (unsigned w = 0; w < pst.n; w++) {
        f->incr[w] = ck_pr_load_64(&cnt_slot(w)->incr);
        f->cdelta += (int64_t)(f->incr[w] - pst.pw[w].wm_incr);
    }
    ck_pr_fence_load(); /* pairs with persist_w_durable_enter: dur_waiting is read later */
    f->counter = f->cdelta != 0;
    /* Events and users only when no POST /reset is half-applied: every slot has the same reset
       generation and every shard's reset marker has been consumed (one per applied reset). */
    bool settled = true;
    for (unsigned w = 0; w < pst.n; w++) {
        cnt_read_events(cnt_slot(w), &f->ev[w], &f->sum[w], &f->rg[w], &f->ep[w]);
        if (f->rg[w] != f->rg[0] || pst.pw[w].markers != f->ep[w])
            settled = false;
    }
    f->reset = settled && f->rg[0] > pst.reset_applied;
    /* every generation since the last applied reset is an adopted one (local POST /resets take
       theirs from the same counter: then the range holds more than were adopted) */
    f->adopt = f->reset && pst_tn_adopted(pst.reset_applied, f->rg[0]);
    if (settled && !f->reset)
        for (unsigned w = 0; w < pst.n; w++)
            if (f->ep[w] != pst.pw[w].wm_ep)
                settled = false;
    f->events = false;
    f->nusers = 0;
    for (unsigned w = 0; w < pst.n; w++)
        pst.pw[w].u.take = pst.pw[w].u.head, pst.pw[w].u.ntake = 0;
    if (settled) {
        uint64_t dt = 0;
        dec_t ds = 0;
        for (unsigned w = 0; w < pst.n; w++) {
            /* after a reset the database row is rebuilt from absolute values */
            dt += f->ev[w] - (f->reset ? 0 : pst.pw[w].wm_ev);
            ds += f->sum[w] - (f->reset ? 0 : pst.pw[w].wm_sum);
        }
        f->ev_param = dt;
        f->sum_param = ds;
        f->events = f->reset || dt != 0 || ds != 0;
        if (take_users(f) < 0)
            log_error("out of memory building a flush: users wait for the next one");
    }
    f->ncl = 0;
    f->prune = pst.next_seq % PRUNE_EVERY == 0;
    if (pst.iso)
        iso_restrict(f);
    /* Cluster reads and ?sync=1 answers (pwait_commit) ride on a flush: only on one that
       carries every tenant change of its snapshot, so "committed" is true of theirs. */
    if (!f->tn_partial) {
        for (size_t i = 0; i < pst.ncl; i++)
            pst.cl[i].attached = true;
        f->ncl = pst.ncl;
    }
    /* Idle: one empty flush a second anyway (HEARTBEAT_MS) keeps lastFlushAgeMs meaningful,
       notices a dead connection, and refreshes the committed value other nodes move. While
       isolating, every flush is sent (an empty one is the ledger probe). */
    bool heartbeat = now - pst.last_success_ms >= HEARTBEAT_MS ||
                     ((pst.iso || pst.nrej) && !pst.stopping);
    f->idle = !f->counter && !f->events && !f->reset && !f->nusers && !f->ncl && !f->tn && !f->nk;
    if (f->idle && !heartbeat)
        return false;
    snprintf(f->p_node, sizeof(f->p_node), "%u", pst.node_id);
    snprintf(f->p_inc, sizeof(f->p_inc), "%llu", (unsigned long long)pst.incarnation);
    snprintf(f->p_seq, sizeof(f->p_seq), "%llu", (unsigned long long)pst.next_seq);
    snprintf(f->p_cd, sizeof(f->p_cd), "%lld", (long long)f->cdelta);
    snprintf(f->p_ev, sizeof(f->p_ev), "%llu", (unsigned long long)f->ev_param);
    f->p_sum[fmt_i128(f->p_sum, f->sum_param)] = 0;
    snprintf(f->p_prune, sizeof(f->p_prune), "%llu",
             (unsigned long long)(pst.next_seq > PRUNE_EVERY ? pst.next_seq - PRUNE_EVERY : 0));
    if (pst.tn) {
        int64_t t = persist_history_now_ms();
        f->hist_part = pst_hist_buckets(t, f->p_hm, f->p_hd) != pst.hist_day;
        snprintf(f->p_hcut, sizeof(f->p_hcut), "%lld",
                 (long long)(t - (int64_t)pst.history_days * 86400000));
    }
    return true;
}

void pst_publish_pending(void)
{
    uint64_t keys = 0, incr = 0;
    for (unsigned w = 0; w < pst.n; w++) {
        keys += pst.pw[w].u.n;
        incr |= ck_pr_load_64(&cnt_slot(w)->incr) - pst.pw[w].wm_incr;
    }
    uint64_t ev, rg, ep;
    dec_t sum;
    bool evd = false;
    for (unsigned w = 0; w < pst.n && !evd; w++) {
        cnt_read_events(cnt_slot(w), &ev, &sum, &rg, &ep);
        evd = ev != pst.pw[w].wm_ev || sum != pst.pw[w].wm_sum || rg != pst.pw[w].wm_rg;
    }
    ck_pr_store_64(&pst.pending_keys, keys + (incr != 0) + evd);
    metrics_set_pending_keys(pst.pending_keys);
    bool pending = pst.pending_keys || pst.nkq || pst.f.st != F_NONE || pst.tn_npend || pst.nrej;
    if (!pending)
        pst.pending_since = 0;
    else if (!pst.pending_since)
        pst.pending_since = pst.now_ms ? pst.now_ms : 1;
}

/* The keyed increments of a committed flush: answer each from rc_key_get's rows (its own
   new value, or the first result of its key), and publish the counter after them. */
static void keyed_applied(struct flush *f)
{
    for (size_t i = 0; i < f->nk; i++) {
        const struct kreq *k = &pst.kq[i];
        struct persist_reply r = {.kind = PERSIST_R_KEYED, .token = k->token,
                                  .status = -EOVERFLOW};
        for (size_t j = 0; j < pst.r.nkres; j++)
            if (pst.kres[j].klen == k->klen && memcmp(pst.kres[j].key, k->key, k->klen) == 0) {
                r.value = pst.kres[j].v;
                r.status = 0;
                break;
            }
        pst_reply(k->w, &r);
    }
    memmove(pst.kq, pst.kq + f->nk, (pst.nkq - f->nk) * sizeof(*pst.kq));
    pst.nkq -= f->nk;
    f->nk = 0;
    if (pst.r.have_final) {
        __int128 wmsum = 0;
        for (unsigned w = 0; w < pst.n; w++)
            wmsum += pst.pw[w].wm_incr;
        pst_publish(pst.r.counter_final, (__int128)pst.r.counter_final - wmsum);
    }
}

static void rejects_committed(void)
{
    if (!pst.rej_sent)
        return;
    for (size_t i = 0; i < pst.rej_sent; i++) {
        log_error("key rejected: it failed alone in repeated flushes; written to rc_rejected",
                  LOG_S("kind", pst.rej[i].kind), LOG_S("sqlstate", pst.rej[i].sqlstate),
                  LOG_S("error", pst.rej[i].error));
        free(pst.rej[i].key);
        free(pst.rej[i].payload);
    }
    metrics_flush_rejected(pst.rej_sent);
    memmove(pst.rej, pst.rej + pst.rej_sent, (pst.nrej - pst.rej_sent) * sizeof(*pst.rej));
    pst.nrej -= pst.rej_sent;
    pst.rej_sent = 0;
}

/* Isolating, and the flush carrying iso_part alone committed: widen its batch again and go on
   to the next part; a whole round of parts committing at their first try ends isolation. */
static void iso_committed(void)
{
    pst.fail_streak = 0;
    if (!pst.iso)
        return;
    if (pst.iso_fails)
        pst.iso_clean = false;
    pst.iso_fails = 0;
    if (pst.iso_part == P_USERS && pst.ulimit < USERS_PER_FLUSH) {
        pst.ulimit *= 2;
        return; /* more of the users, until the batch is whole again */
    }
    if (pst.iso_part == P_KEYS && pst.klimit < KEYS_PER_FLUSH) {
        pst.klimit *= 2;
        return;
    }
    if (pst.iso_part + 1 < P_NPARTS) {
        if (pst.iso_part == P_PROBE)
            pst.iso_clean = true;
        pst.iso_part = (enum part)(pst.iso_part + 1);
        return;
    }
    if (pst.iso_clean) {
        pst.iso = false;
        log_info("flush isolation over: every part commits again");
    } else {
        pst.iso_part = P_COUNTER; /* another round */
        pst.iso_clean = true;
    }
}

/* The flush in pst.f is committed (directly, or found in the ledger). */
void pst_flush_applied(uint64_t now, bool have_counter, bool counter_null, int64_t after)
{
    struct flush *f = &pst.f;
    if (have_counter && !counter_null) {
        /* Number the increments of this flush: slot by slot, ticket t of slot w (t in
           (wm, incr]) gets base_w + (t − wm); the last one ends at `after`. */
        __int128 acc = (__int128)after - f->cdelta;
        __int128 wmsum = 0;
        for (unsigned w = 0; w < pst.n; w++) {
            struct pworker *p = &pst.pw[w];
            uint64_t d = f->incr[w] - p->wm_incr;
            if (d) {
                struct persist_reply r = {.kind = PERSIST_R_DURABLE, .upto = f->incr[w],
                                          .offset = (uint64_t)(acc - (__int128)p->wm_incr)};
                pst_reply(w, &r);
                acc += d;
            }
            p->wm_incr = f->incr[w];
            wmsum += p->wm_incr;
        }
        pst_publish(after, (__int128)after - wmsum);
    } else if (have_counter && f->counter) {
        log_rl(&pst.rl_err, now, 3, 10000, LOG_ERROR,
               "counter delta refused: it would pass INT64_MAX in the database (other nodes?)",
               LOG_I("delta", f->cdelta));
    }
    if (f->nk)
        keyed_applied(f);
    if (f->events || f->reset) {
        for (unsigned w = 0; w < pst.n; w++) {
            struct pworker *p = &pst.pw[w];
            p->wm_ev = f->ev[w];
            p->wm_sum = f->sum[w];
            p->wm_rg = f->rg[w];
            p->wm_ep = f->ep[w];
        }
        if (f->reset) {
            pst.reset_applied = f->rg[0];
            pst_tn_adopted_applied(f->rg[0]);
            if (pst.r.have_epoch) /* our own: not to be adopted again */
                pst.reset_epoch = pst.r.epoch;
            ck_pr_store_64(&pst.persisted_total, f->ev_param);
        } else {
            ck_pr_store_64(&pst.persisted_total, pst.persisted_total + f->ev_param);
        }
        if (pst.r.have_events)
            ck_pr_store_64(&pst.persisted_total, (uint64_t)pst.r.events_total);
    }
    if (f->tn && f->hist_part && f->j_d.len > 2)
        pst.hist_day = strtoll(f->p_hd, NULL, 10); /* its partition is made */
    if (f->tn) {
        for (size_t i = 0; i < f->ntnd; i++) {
            pst.tn_wm[f->tnd[i].idx] = f->tnd[i].live;
            /* what other nodes added shows here at once, not only at the next change feed */
            if (f->tnd[i].has_db)
                pst_tn_settle(f->tnd[i].idx, f->tnd[i].db);
        }
        pst.tn_nt = f->tn_nt;
        pst.tn_nc = f->tn_nc;
        memcpy(pst.tn_icur, f->tn_icur, sizeof(pst.tn_icur));
    }
    for (unsigned w = 0; w < pst.n; w++) {
        struct upend *u = &pst.pw[w].u;
        u->head = u->take;
        u->n -= u->ntake;
        u->ntake = 0;
    }
    /* reset waiters whose reset is now in the database */
    size_t j = 0;
    for (size_t i = 0; i < pst.nrs; i++) {
        if (pst.rs[i].target <= pst.reset_applied)
            pst_reply(pst.rs[i].w, &(struct persist_reply){.kind = PERSIST_R_RESET,
                                                      .token = pst.rs[i].token});
        else
            pst.rs[j++] = pst.rs[i];
    }
    pst.nrs = j;
    f->st = F_NONE;
    if (!f->partial && !f->tn_partial) /* ops waiting for "a flush after me" may go */
        pst.applied_gen = f->gen;
    pst.next_seq++;
    ck_pr_store_64(&pst.flushes, pst.flushes + 1);
    ck_pr_store_64(&pst.last_flush_ms, now ? now : 1);
    pst.last_success_ms = now;
    pst.retry_backoff = 0;
    pst.retry_at = 0;
    if (pst.users_cap < USERS_PER_FLUSH)
        pst.users_cap *= 2;
    if (pst.tn_cap < TN_ROWS_PER_FLUSH)
        pst.tn_cap *= 2;
    rejects_committed();
    iso_committed();
    /* what still waits arrived after this flush's snapshot — unless it left some of its
       snapshot behind (caps, isolation): then the oldest waiting data is as old as before */
    if (pst.pending_since && !f->partial)
        pst.pending_since = pst.flush_snap_ms ? pst.flush_snap_ms : now;
    metrics_flush_observe((double)(clock_ns(CLOCK_MONOTONIC) - pst.flush_t0_ns) / 1e9);
}

void pst_cluster_answer(void)
{
    size_t k = pst.f.ncl < pst.ncl ? pst.f.ncl : pst.ncl;
    for (size_t i = 0; i < k; i++)
        pst_reply(pst.cl[i].w, &(struct persist_reply){.kind = PERSIST_R_CLUSTER, .token = pst.cl[i].token,
                                                  .events = pst.r.cl_events, .users = pst.r.cl_users,
                                                  .nodes = pst.r.cl_nodes, .sum = pst.r.cl_sum});
    memmove(pst.cl, pst.cl + k, (pst.ncl - k) * sizeof(*pst.cl));
    pst.ncl -= k;
}

/* Errors that pass by themselves: a retry, not isolation. SQLSTATE classes 08 connection,
   40 rollback (serialization, deadlock), 53 resources, 55 lock not available, 57 operator
   intervention (statement_timeout's 57014, shutdown), 58 system, XX internal. */
void pst_copy_msg(char *dst, size_t cap, const char *src)
{
    size_t n = 0;
    while (src[n] && src[n] != '\n' && n + 1 < cap) {
        size_t k = utf8_seq((const unsigned char *)src + n, strlen(src + n));
        if (k == 0) { /* not UTF-8 (a server encoding we did not ask for): stop here */
            break;
        }
        if (n + k + 1 > cap)
            break;
        n += k;
    }
    memcpy(dst, src, n);
    dst[n] = 0;
}

bool pst_transient_state(const char *ss)
{
    static const char *const cls[] = {"08", "40", "53", "55", "57", "58", "XX"};
    if (strlen(ss) != 5)
        return true;
    for (size_t i = 0; i < sizeof(cls) / sizeof(cls[0]); i++)
        if (memcmp(ss, cls[i], 2) == 0)
            return true;
    return false;
}

static struct reject *reject_new(const char *kind)
{
    if (pst.nrej == pst.caprej) {
        size_t nc = pst.caprej ? pst.caprej * 2 : 8;
        struct reject *nv = realloc(pst.rej, nc * sizeof(*nv));
        if (!nv)
            return NULL;
        pst.rej = nv;
        pst.caprej = nc;
    }
    struct reject *j = &pst.rej[pst.nrej++];
    memset(j, 0, sizeof(*j));
    snprintf(j->kind, sizeof(j->kind), "%s", kind);
    snprintf(j->sqlstate, sizeof(j->sqlstate), "%s", pst.r.sqlstate);
    pst_copy_msg(j->error, sizeof(j->error), pst.r.msg);
    return j;
}

static char *fmt_dup(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *fmt_dup(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *o = NULL;
    if (vasprintf(&o, fmt, ap) < 0)
        o = NULL;
    va_end(ap);
    return o;
}

/* iso_part failed alone ALONE_FAILS times with a single item: it leaves the pending state for
   rc_rejected (written by the next flush, which then commits without it). */
static void dead_letter(void)
{
    struct reject *j;
    switch (pst.iso_part) {
    case P_COUNTER: {
        int64_t d = 0;
        for (unsigned w = 0; w < pst.n; w++) { /* what the failed flush carried */
            d += (int64_t)(pst.f.incr[w] - pst.pw[w].wm_incr);
            /* its durable waiters learn it now, before a later reply could number them */
            if (pst.f.incr[w] != pst.pw[w].wm_incr)
                pst_reply(w, &(struct persist_reply){.kind = PERSIST_R_DURABLE,
                                                     .upto = pst.f.incr[w], .status = -EIO});
            pst.pw[w].wm_incr = pst.f.incr[w];
        }
        int64_t committed;
        __int128 wmsum = 0;
        pst_read_base(&committed);
        for (unsigned w = 0; w < pst.n; w++)
            wmsum += pst.pw[w].wm_incr;
        pst_publish(committed, (__int128)committed - wmsum); /* live no longer counts them */
        if ((j = reject_new(PART_NAME[pst.iso_part])))
            j->payload = fmt_dup("{\"key\":\"" COUNTER_KEY "\",\"delta\":%lld}", (long long)d);
        break;
    }
    case P_EVENTS: {
        uint64_t dt = 0;
        dec_t ds = 0;
        for (unsigned w = 0; w < pst.n; w++) { /* what the failed flush carried */
            struct pworker *pw = &pst.pw[w];
            dt += pst.f.ev[w] - pw->wm_ev;
            ds += pst.f.sum[w] - pw->wm_sum;
            pw->wm_ev = pst.f.ev[w], pw->wm_sum = pst.f.sum[w];
            pw->wm_rg = pst.f.rg[w], pw->wm_ep = pst.f.ep[w];
        }
        char sb[48];
        sb[fmt_i128(sb, ds)] = 0;
        if ((j = reject_new(PART_NAME[pst.iso_part])))
            j->payload = fmt_dup("{\"total\":%llu,\"sum_u\":%s}", (unsigned long long)dt, sb);
        break;
    }
    case P_USERS:
        for (unsigned w = 0; w < pst.n; w++) {
            struct upend *u = &pst.pw[w].u;
            if (!u->n)
                continue;
            uint16_t len;
            memcpy(&len, u->b.buf + u->head, 2);
            if ((j = reject_new(PART_NAME[pst.iso_part]))) {
                j->key = malloc(3 + 2 * (size_t)len);
                if (j->key) {
                    static const char hex[] = "0123456789abcdef";
                    char *o = j->key;
                    *o++ = '\\', *o++ = 'x';
                    for (uint16_t i = 0; i < len; i++) {
                        unsigned char c = (unsigned char)u->b.buf[u->head + 2 + i];
                        *o++ = hex[c >> 4], *o++ = hex[c & 15];
                    }
                    *o = 0;
                }
                j->payload = fmt_dup("{}");
            }
            u->head += 2 + (size_t)len;
            u->take = u->head;
            u->n--;
            break;
        }
        break;
    case P_KEYS:
        if (pst.nkq) {
            if ((j = reject_new(PART_NAME[pst.iso_part])))
                j->payload = fmt_dup("{\"key\":\"%.*s\"}", (int)pst.kq[0].klen, pst.kq[0].key);
            /* the database refused it: not committed, and it never will be */
            pst_reply(pst.kq[0].w, &(struct persist_reply){.kind = PERSIST_R_KEYED,
                                                      .token = pst.kq[0].token, .status = -EIO});
            memmove(pst.kq, pst.kq + 1, (pst.nkq - 1) * sizeof(*pst.kq));
            pst.nkq--;
        }
        break;
    default:
        return;
    }
    if (pst.nrej && !pst.rej[pst.nrej - 1].payload) { /* out of memory: it can only be logged */
        log_error("key rejected (out of memory: not written to rc_rejected)",
                  LOG_S("kind", PART_NAME[pst.iso_part]), LOG_S("error", pst.r.msg));
        free(pst.rej[--pst.nrej].key);
    }
}

/* Which item a flush isolating one item of iso_part carries: the first user's bytes, the
   first keyed request's token (0 for the single-item parts). */
static uint64_t iso_head_ident(void)
{
    if (pst.iso_part == P_KEYS)
        return pst.nkq ? pst.kq[0].token + 1 : 0;
    if (pst.iso_part != P_USERS)
        return 0;
    for (unsigned w = 0; w < pst.n; w++) {
        const struct upend *u = &pst.pw[w].u;
        if (!u->n)
            continue;
        uint16_t len;
        memcpy(&len, u->b.buf + u->head, 2);
        uint64_t h = 1469598103934665603ull ^ w; /* FNV-1a of the id */
        for (uint16_t i = 0; i < len; i++)
            h = (h ^ (unsigned char)u->b.buf[u->head + 2 + i]) * 1099511628211ull;
        return h;
    }
    return 0;
}

/* A flush failed with an SQL error: count the streak, and in isolation narrow the part. */
static void iso_failed(uint64_t now)
{
    if (pst_transient_state(pst.r.sqlstate))
        return;
    if (strcmp(pst.r.sqlstate, pst.fail_state) != 0) {
        memcpy(pst.fail_state, pst.r.sqlstate, sizeof(pst.fail_state));
        pst.fail_streak = 0;
    }
    pst.fail_streak++;
    if (!pst.iso) {
        if (pst.fail_streak < ISOLATE_AFTER)
            return;
        pst.iso = true;
        pst.iso_part = P_PROBE;
        pst.iso_fails = 0;
        pst.ulimit = USERS_PER_FLUSH;
        pst.klimit = KEYS_PER_FLUSH;
        log_warn("flush keeps failing the same way: isolating the failing part",
                 LOG_S("sqlstate", pst.r.sqlstate), LOG_U("failures", pst.fail_streak));
        return;
    }
    pst.iso_fails++;
    switch (pst.iso_part) {
    case P_PROBE: /* nothing but the ledger fails: no key to blame, keep probing */
        return;
    case P_USERS:
        if (pst.ulimit > 1) {
            pst.ulimit /= 2;
            pst.iso_fails = 0;
            return;
        }
        break;
    case P_KEYS:
        if (pst.klimit > 1) {
            pst.klimit /= 2;
            pst.iso_fails = 0;
            return;
        }
        break;
    default:
        break;
    }
    /* The failures must all be of the same item: the head of the queue can change between
       retries (a keyed request dropped after its timeout, a shard reset). */
    uint64_t ident = iso_head_ident();
    if (ident != pst.iso_ident) {
        pst.iso_ident = ident;
        pst.iso_fails = 1;
    }
    if (pst.iso_fails < ALONE_FAILS)
        return;
    pst.iso_clean = false;
    /* Tenant counters are one part for now, and a reset is never dead-lettered (the next
       flush would record its events again, absolutely): they wait, retried every round,
       while the others commit. */
    if (pst.iso_part == P_TN || (pst.iso_part == P_EVENTS && pst.f.reset)) {
        log_rl(&pst.rl_err, now, 3, 10000, LOG_ERROR,
               "a part fails alone and cannot be dead-lettered: it waits while everything "
               "else commits", LOG_S("part", PART_NAME[pst.iso_part]),
               LOG_S("sqlstate", pst.r.sqlstate), LOG_S("error", pst.r.msg));
    } else {
        dead_letter();
        pst.iso_fails = 0;
        return; /* the same part again, without that item */
    }
    pst.iso_fails = 0;
    pst.iso_part = (enum part)(pst.iso_part + 1);
}

void pst_flush_timed_out(void)
{
    pst.users_cap = pst.users_cap / 2 > USERS_MIN_BATCH ? pst.users_cap / 2 : USERS_MIN_BATCH;
    pst.tn_cap = pst.tn_cap / 2 > USERS_MIN_BATCH ? pst.tn_cap / 2 : USERS_MIN_BATCH;
}

void pst_flush_slow_start(void)
{
    pst.users_cap = USERS_MIN_BATCH;
    pst.tn_cap = USERS_MIN_BATCH;
}

void pst_flush_abandon(void)
{
    struct flush *f = &pst.f;
    f->st = F_NONE; /* not committed: the next flush is rebuilt from the same watermarks */
    /* ... under a new flush_seq: a sequence number is only ever sent with one content, so a
       ledger hit always means "this very content was committed". */
    pst.next_seq++;
    for (unsigned w = 0; w < pst.n; w++) {
        pst.pw[w].u.take = pst.pw[w].u.head;
        pst.pw[w].u.ntake = 0;
    }
    for (size_t i = 0; i < pst.ncl; i++)
        pst.cl[i].attached = false;
    f->nk = 0; /* the keyed increments stay first in pst.kq */
    pst.rej_sent = 0;
}

void pst_flush_failed(uint64_t now)
{
    if (strcmp(pst.r.sqlstate, "57014") == 0)
        pst_flush_timed_out();
    pst_flush_abandon();
    iso_failed(now);
    ck_pr_store_64(&pst.flush_errors, pst.flush_errors + 1);
    metrics_flush_failed();
    /* In pipeline mode an error skips the rest up to the sync, COMMIT included: the session is
       left inside the aborted transaction ("idle in transaction (aborted)") and every later
       statement would fail until a ROLLBACK. */
    pst.need_rollback = pst.conn && PQtransactionStatus(pst.conn) != PQTRANS_IDLE;
    /* No escalation while bisecting a part (16 halvings must not take minutes), nor after a
       lock or statement timeout (55P03, 57014): the failed statement already waited its
       timeout, and the lock may be gone by now. */
    bool bisecting = pst.iso && pst.iso_part != P_PROBE;
    bool waited = strcmp(pst.r.sqlstate, "55P03") == 0 || strcmp(pst.r.sqlstate, "57014") == 0;
    pst.retry_backoff = bisecting || waited ? RETRY_MIN_MS
                      : pst.retry_backoff   ? pst.retry_backoff * 2
                                          : RETRY_MIN_MS;
    if (pst.retry_backoff > RETRY_MAX_MS)
        pst.retry_backoff = RETRY_MAX_MS;
    pst.retry_at = now + pst.retry_backoff;
    log_rl(&pst.rl_err, now, 3, 10000, LOG_ERROR, "flush failed (rolled back, will retry)",
           LOG_S("sqlstate", pst.r.sqlstate), LOG_S("error", pst.r.msg),
           LOG_U("retry_ms", pst.retry_backoff));
}

/* ------------------------------------------------------------------ persister: spill file */

static bool flush_has_content(const struct flush *f)
{
    return f->counter || f->events || f->reset || f->nusers || f->tn || f->nk;
}

/* One flush as a spill record (SPILL_PAYLOAD_VERSION 2): its ledger seq, every statement
   parameter as text, and its history minute. */
static void spill_put_flush(struct spill_buf *b, const struct flush *f)
{
    const char *none = "";
    spill_put_bytes(b, f->p_seq, strlen(f->p_seq));
    spill_put_u8(b, f->reset && !f->adopt); /* an adopted one deletes nothing on replay */
    spill_put_bytes(b, f->p_cd, strlen(f->p_cd));
    spill_put_bytes(b, f->events ? f->p_ev : none, f->events ? strlen(f->p_ev) : 0);
    spill_put_bytes(b, f->events ? f->p_sum : none, f->events ? strlen(f->p_sum) : 0);
    spill_put_bytes(b, f->users.buf, f->nusers ? f->users.len : 0);
    const struct bytes *j[4] = {&f->j_t, &f->j_c, &f->j_d, &f->j_i};
    for (int i = 0; i < 4; i++)
        spill_put_bytes(b, j[i]->buf, f->tn && j[i]->len > 2 ? j[i]->len : 0);
    spill_put_bytes(b, f->keys.buf, f->nk ? f->keys.len : 0);
    bool hist = f->tn && f->j_d.len > 2;
    spill_put_bytes(b, f->p_hm, hist ? strlen(f->p_hm) : 0);
}

/* The final flush cannot finish (database down, hung or rejecting): write everything pending
   to the spill file (SPEC §4: nothing acknowledged is lost), replayed at the next start. A flush
   in flight goes first under its own seq (its outcome is unknown: the replay asks the ledger),
   then the rest as further flushes built as if it had committed. Workers are joined, so the
   replies flush_applied posts are never read. */
void pst_spill_pending(uint64_t now)
{
    uint64_t t0 = clock_ms(CLOCK_MONOTONIC);
    struct spill_buf b = {0};
    uint32_t nrec = 0;
    spill_put_u32(&b, SPILL_PAYLOAD_VERSION);
    spill_put_u32(&b, pst.node_id);
    spill_put_u64(&b, pst.incarnation);
    size_t nrec_at = b.len;
    spill_put_u32(&b, 0); /* record count, patched below */
    if (pst.f.st != F_NONE) {
        spill_put_flush(&b, &pst.f);
        nrec++;
        memset(&pst.r, 0, sizeof(pst.r));
        pst_flush_applied(now, true, false, 0);
    }
    /* everything goes, whole: no part held back for isolation, no batch shrunk */
    pst.iso = false;
    pst.users_cap = USERS_PER_FLUSH;
    pst.tn_cap = TN_ROWS_PER_FLUSH;
    pst_drain_journals();
    for (;;) {
        memset(&pst.r, 0, sizeof(pst.r));
        pst.ncl = pst.nrs = 0;
        if (!pst_build_flush(now) || !flush_has_content(&pst.f))
            break;
        spill_put_flush(&b, &pst.f);
        nrec++;
        pst_flush_applied(now, true, false, 0);
    }
    if (!b.err && b.len >= nrec_at + 4)
        for (int i = 0; i < 4; i++)
            b.p[nrec_at + (size_t)i] = (uint8_t)(nrec >> (8 * i));
    char path[600] = "";
    int rc = b.err ? b.err : nrec ? spill_write(pst.spill_dir, pst.node_id, b.p, b.len, path,
                                                sizeof(path))
                                  : 0;
    if (rc < 0) {
        pst.lost = true;
        log_error("final flush incomplete and the spill file could not be written: pending data "
                  "is lost", LOG_S("spill_dir", pst.spill_dir), LOG_S("error", strerror(-rc)),
                  LOG_S("file", path),
                  LOG_S("fix", rc == -EEXIST ? "an earlier spill file was never replayed: start "
                                               "with the database reachable to replay it"
                                             : "make --spill-dir writable"));
    } else if (nrec) {
        log_warn("final flush incomplete: pending data written to the spill file, replayed at "
                 "the next start", LOG_S("file", path), LOG_U("flushes", nrec),
                 LOG_U("bytes", b.len), LOG_U("write_ms", clock_ms(CLOCK_MONOTONIC) - t0),
                 LOG_B("db_up", pst.cst == C_READY));
    }
    spill_buf_free(&b);
}

bool persist_lost(void)
{
    return pst.lost;
}
