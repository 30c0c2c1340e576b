/* persist — see persist.h: set-up, the values published to every thread, /stats. */
#include "persist.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

#include "clock.h"
#include "config.h"
#include "metrics.h"
#include "persist_int.h"

struct pstate pst;

/* ------------------------------------------------------------------ small helpers */

int pst_bytes_reserve(struct bytes *b, size_t more)
{
    if (b->len + more <= b->cap)
        return 0;
    size_t nc = b->cap ? b->cap : 4096;
    while (nc < b->len + more)
        nc *= 2;
    char *nb = realloc(b->buf, nc);
    if (!nb)
        return -ENOMEM;
    b->buf = nb;
    b->cap = nc;
    return 0;
}

/* dbUp / ringcount_pg_up / /readyz: connected and nothing older than --ready-max-lag-ms
   waiting (SPEC §4: a node that acknowledges writes it cannot persist is not ready). */
void pst_publish_health(uint64_t now)
{
    uint64_t lag = pst.pending_since && now > pst.pending_since ? now - pst.pending_since : 0;
    bool up = pst.cst == C_READY && lag <= pst.ready_lag_ms;
    ck_pr_store_64(&pst.lag_ms, lag);
    if (ck_pr_load_int(&pst.db_up) != (int)up) {
        ck_pr_store_int(&pst.db_up, up);
        metrics_set_pg_up(up);
    }
    metrics_set_persist_lag_ms(lag);
}

void pst_mark_down(void)
{
    if (ck_pr_load_int(&pst.db_up)) {
        ck_pr_store_int(&pst.db_up, 0);
        metrics_set_pg_up(false);
    }
}

void pst_publish(int64_t committed, __int128 base)
{
    ck_sequence_write_begin(&pst.pub_seq);
    ck_pr_store_64((uint64_t *)&pst.committed, (uint64_t)committed);
    ck_pr_store_64(&pst.base_lo, (uint64_t)base);
    ck_pr_store_64(&pst.base_hi, (uint64_t)((unsigned __int128)base >> 64));
    ck_sequence_write_end(&pst.pub_seq);
}

__int128 pst_read_base(int64_t *committed)
{
    uint64_t lo, hi, c;
    unsigned v;
    do {
        v = ck_sequence_read_begin(&pst.pub_seq);
        c = ck_pr_load_64((uint64_t *)&pst.committed);
        lo = ck_pr_load_64(&pst.base_lo);
        hi = ck_pr_load_64(&pst.base_hi);
    } while (ck_sequence_read_retry(&pst.pub_seq, v));
    if (committed)
        *committed = (int64_t)c;
    return (__int128)(((unsigned __int128)hi << 64) | lo);
}

/* ------------------------------------------------------------------ init / fini */

int persist_init(const struct config *cfg, unsigned nworkers)
{
    memset(&pst, 0, sizeof(pst));
    ck_sequence_init(&pst.pub_seq);
    pst.enabled = cfg->db[0] != '\0';
    pst.n = nworkers;
    pst.flush_ms = cfg->flush_ms ? cfg->flush_ms : 10;
    pst.node_id = cfg->node_id;
    pst.max_inflight = cfg->max_inflight;
    pst.durable_timeout_ms = cfg->durable_timeout_ms;
    pst.db_timeout_ms = cfg->db_timeout_ms ? cfg->db_timeout_ms : 5000;
    pst.sync_ms = cfg->sync_ms ? cfg->sync_ms : 1000;
    pst.history_days = cfg->history_days ? cfg->history_days : 90;
    pst.clock_file = cfg->debug_clock_file[0] ? cfg->debug_clock_file : NULL;
    pst.ready_lag_ms = cfg->ready_max_lag_ms ? cfg->ready_max_lag_ms : 5000;
    pst.conninfo = cfg->db;
    pst.spill_dir = cfg->spill_dir;
    pst.fd = -1;
    pst.next_seq = 1;
    snprintf(pst.appname, sizeof(pst.appname), "ringcount-node-%u", cfg->node_id);
    pst.debug_lose_ms = cfg->debug_lose_commit_ms; /* hidden setting: tests only */
    pst.pw = aligned_alloc(CK_MD_CACHELINE, sizeof(*pst.pw) * nworkers);
    if (!pst.pw)
        return -ENOMEM;
    memset(pst.pw, 0, sizeof(*pst.pw) * nworkers);
    size_t ns = nworkers;
    pst.f.incr = calloc(ns, sizeof(uint64_t));
    pst.f.ev = calloc(ns, sizeof(uint64_t));
    pst.f.rg = calloc(ns, sizeof(uint64_t));
    pst.f.ep = calloc(ns, sizeof(uint64_t));
    pst.f.sum = calloc(ns, sizeof(dec_t));
    if (!pst.f.incr || !pst.f.ev || !pst.f.rg || !pst.f.ep || !pst.f.sum)
        goto fail;
    if (pst.enabled && !(pst.kres = calloc(KEYS_PER_FLUSH, sizeof(*pst.kres))))
        goto fail;
    for (unsigned i = 0; i < nworkers && pst.enabled; i++) {
        struct pworker *p = &pst.pw[i];
        p->j.buf = malloc(JRING_BYTES);
        p->j.mask = JRING_BYTES - 1;
        p->rep = calloc(REP_RING, sizeof(struct persist_reply));
        if (!p->j.buf || !p->rep)
            goto fail;
        ck_ring_init(&p->req, REQ_RING);
    }
    return 0;
fail:
    persist_fini();
    return -ENOMEM;
}

void persist_fini(void)
{
    if (pst.conn)
        PQfinish(pst.conn);
    struct persist_reply r; /* tenant ops answered after their workers stopped reading */
    for (unsigned w = 0; pst.enabled && pst.pw && w < pst.n; w++) {
        do {
            pst_backlog_move(&pst.pw[w]);
            while (persist_w_reply_pop(w, &r))
                if (r.kind == PERSIST_R_TNOP)
                    free((void *)(uintptr_t)r.token);
        } while (pst.pw[w].nback);
    }
    for (unsigned i = 0; pst.pw && i < pst.n; i++) {
        struct pworker *p = &pst.pw[i];
        free(p->j.buf);
        free(p->over.buf);
        free(p->rep);
        free(p->u.b.buf);
        free(p->back);
    }
    free(pst.pw);
    free(pst.f.incr);
    free(pst.f.ev);
    free(pst.f.rg);
    free(pst.f.ep);
    free(pst.f.sum);
    free(pst.f.users.buf);
    free(pst.cl);
    free(pst.rs);
    free(pst.kq);
    free(pst.kres);
    for (size_t i = 0; i < pst.nrej; i++) {
        free(pst.rej[i].key);
        free(pst.rej[i].payload);
    }
    free(pst.rej);
    free(pst.f.keys.buf);
    free(pst.urefs);
    free(pst.f.tnd);
    for (size_t i = 0; i < pst.ntq; i++) /* ops whose workers are gone: nobody waits for them */
        free(pst.tq[i].op);
    for (size_t i = 0; i < pst.ntq_fly; i++)
        free(pst.tq_fly[i].op);
    free(pst.tq);
    free(pst.tq_fly);
    free(pst.f.j_t.buf);
    free(pst.f.j_c.buf);
    free(pst.f.j_d.buf);
    free(pst.f.j_i.buf);
    free(pst.tn_wm);
    free(pst.tn_take);
    free(pst.tn_cand);
    free(pst.tn_pend);
    free(pst.tn_stamp);
    free(pst.tn_ibuf);
    memset(&pst, 0, sizeof(pst));
}

int64_t persist_history_now_ms(void)
{
    if (pst.clock_file) { /* tests only: a settable clock instead of sleeps across buckets */
        char b[32] = "";
        FILE *f = fopen(pst.clock_file, "r");
        if (f) {
            size_t n = fread(b, 1, sizeof(b) - 1, f);
            b[n] = 0;
            fclose(f);
            if (n)
                return strtoll(b, NULL, 10);
        }
    }
    return (int64_t)clock_ms(CLOCK_REALTIME);
}

void persist_set_tenants(struct tn_store *st)
{
    pst.tn = st;
}

void persist_set_keys(struct tnk_store *ks)
{
    pst.tnk = ks;
}

bool persist_enabled(void)
{
    return pst.enabled;
}

uint32_t persist_durable_timeout_ms(void)
{
    return pst.durable_timeout_ms;
}

void persist_workers_stopped(void)
{
    ck_pr_fence_memory();
    ck_pr_store_8((uint8_t *)&pst.workers_gone, 1);
}

/* ------------------------------------------------------------------ stats */

bool persist_healthy(void)
{
    return !pst.enabled || ck_pr_load_int(&pst.db_up);
}

uint64_t persist_pending_keys(void)
{
    return ck_pr_load_64(&pst.pending_keys);
}

size_t persist_stats_json(char *out, size_t cap)
{
    if (!pst.enabled) {
        int n = snprintf(out, cap,
                         "{\"mode\":\"none\",\"dbUp\":false,\"lastFlushAgeMs\":null,"
                         "\"lagMs\":0,\"pendingKeys\":0,\"flushes\":0,\"flushErrors\":0,"
                         "\"persistedTotalRequests\":0}");
        return n < 0 || (size_t)n >= cap ? 0 : (size_t)n;
    }
    uint64_t last = ck_pr_load_64(&pst.last_flush_ms), now = clock_ms(CLOCK_MONOTONIC);
    char age[24];
    if (last)
        snprintf(age, sizeof(age), "%llu", (unsigned long long)(now > last ? now - last : 0));
    else
        snprintf(age, sizeof(age), "null");
    int n = snprintf(out, cap,
                     "{\"mode\":\"postgresql\",\"dbUp\":%s,\"lastFlushAgeMs\":%s,\"lagMs\":%llu,"
                     "\"pendingKeys\":%llu,\"flushes\":%llu,\"flushErrors\":%llu,"
                     "\"persistedTotalRequests\":%llu}",
                     ck_pr_load_int(&pst.db_up) ? "true" : "false", age,
                     (unsigned long long)ck_pr_load_64(&pst.lag_ms),
                     (unsigned long long)ck_pr_load_64(&pst.pending_keys),
                     (unsigned long long)ck_pr_load_64(&pst.flushes),
                     (unsigned long long)ck_pr_load_64(&pst.flush_errors),
                     (unsigned long long)ck_pr_load_64(&pst.persisted_total));
    return n < 0 || (size_t)n >= cap ? 0 : (size_t)n;
}
