/* persist_conn — see persist_int.h: the connection state machine (connect, setup, exchanges,
   results) and persist_p_run, the persister's one entry point. */

#include <poll.h>
#include <stdlib.h>

#include "clock.h"
#include "fmt.h"
#include "metrics.h"
#include "persist_int.h"

void pst_quiet_notice(void *arg, const char *msg)
{
    (void)arg;
    log_debug("PostgreSQL notice", LOG_S("notice", msg));
}

void pst_set_fd(int fd)
{
    if (fd != pst.fd) {
        pst.fd = fd;
        pst.gen++;
    }
}

static void conn_drop(uint64_t now, const char *why)
{
    if (pst.x == X_FLUSH && pst.f.st == F_SENT) {
        pst.f.st = F_UNKNOWN; /* the COMMIT may or may not have happened: ask the ledger */
        ck_pr_store_64(&pst.flush_errors, pst.flush_errors + 1);
        metrics_flush_failed();
    }
    char err[200] = "";
    if (pst.conn)
        snprintf(err, sizeof(err), "%s", PQerrorMessage(pst.conn));
    err[strcspn(err, "\n")] = 0;
    bool was_up = pst.cst == C_READY;
    /* A backend whose connection we drop may still be running what we sent (stopped, behind a
       lock, or on a dead path we gave up on): the next connection terminates it, instead of
       letting it pile up or commit much later. (PQcancel would block this thread on a dead
       path: it opens a new connection synchronously.) */
    if (pst.conn && PQbackendPID(pst.conn) > 0) {
        int pid = PQbackendPID(pst.conn);
        if (pst.nold == OLD_PIDS) { /* forget the oldest, never the flush's own */
            unsigned k = pst.old_pids[0] == pst.f_pid ? 1 : 0;
            memmove(pst.old_pids + k, pst.old_pids + k + 1,
                    (OLD_PIDS - 1 - k) * sizeof(pst.old_pids[0]));
            pst.nold--;
        }
        pst.old_pids[pst.nold++] = pid;
        if (pst.f.st == F_UNKNOWN && !pst.f_pid)
            pst.f_pid = pid;
    }
    if (pst.x == X_TNOP)
        pst_tn_done(now, true);
    /* The back-off spaces connection attempts from their starts: one that failed after
       waiting (a black hole's connect timeout, or its reset when the path came back) has
       waited already. Counting from its end made a reconnect up to 2 s late after a 30 s
       black hole cleared (1 s in the held attempt + the 1 s back-off), leaving under 1 s of
       integ/test_pgfaults c's 3 s recovery bound for 30 s of backlog. */
    bool attempt = pst.cst == C_CONNECTING || pst.cst == C_SETUP;
    pst.need_rollback = false; /* a new connection starts outside any transaction */
    if (pst.conn)
        PQfinish(pst.conn);
    pst.conn = NULL;
    pst_set_fd(-1);
    pst.gen++;
    pst.cst = C_DOWN;
    pst.x = X_NONE;
    pst.nq = pst.qi = 0;
    pst.out_pending = false;
    pst.hold_until = 0;
    pst_mark_down();
    pst.next_connect = pst_reconnect_at(attempt, pst.cst_since, now, &pst.backoff);
    if (was_up)
        log_warn("PostgreSQL connection lost", LOG_S("why", why), LOG_S("error", err),
                 LOG_B("flush_outcome_unknown", pst.f.st == F_UNKNOWN));
    else
        log_rl(&pst.rl_err, now, 3, 10000, LOG_WARN, "PostgreSQL unavailable", LOG_S("why", why),
               LOG_S("error", err), LOG_U("retry_ms", pst.next_connect - now));
}

uint64_t pst_reconnect_at(bool attempt, uint64_t since, uint64_t now, uint64_t *backoff)
{
    *backoff = *backoff ? *backoff * 2 : BACKOFF_MIN_MS;
    if (*backoff > BACKOFF_MAX_MS)
        *backoff = BACKOFF_MAX_MS;
    uint64_t at = (attempt ? since : now) + *backoff;
    return at < now ? now : at;
}

static void conn_start(uint64_t now)
{
    struct conn_kw k;
    pst_conn_kw_fill(&k);
    pst.conn = PQconnectStartParams(k.kw, k.vals, 1);
    pst.cst_since = now;
    if (!pst.conn || PQstatus(pst.conn) == CONNECTION_BAD) {
        conn_drop(now, "connect");
        return;
    }
    pst.cst = C_CONNECTING;
    pst.cpoll = PGRES_POLLING_WRITING;
    pst.gen++;
    pst_set_fd(PQsocket(pst.conn));
}

/* Send what libpq buffered; false if the connection broke. */
static bool out_flush(uint64_t now)
{
    int r = PQflush(pst.conn);
    if (r < 0) {
        conn_drop(now, "send");
        return false;
    }
    pst.out_pending = r == 1;
    return true;
}

void pst_begin_exchange(enum xch x, uint64_t now)
{
    pst.nq = 0;
    pst.x = x;
    pst.x_since = now;
    pst.qi = 0;
    memset(&pst.r, 0, sizeof(pst.r));
}

static bool q_push(enum qk k)
{
    if (pst.nq >= sizeof(pst.q) / sizeof(pst.q[0]))
        return false;
    pst.q[pst.nq++] = k;
    return true;
}

bool pst_send_prepared(enum qk k, const char *name, int n, const char *const *vals)
{
    return PQsendQueryPrepared(pst.conn, name, n, vals, NULL, NULL, 0) && q_push(k);
}

bool pst_send_sync(void)
{
    return PQpipelineSync(pst.conn) && q_push(Q_SYNC);
}

/* Close an exchange whose statements were queued (ok): sync and send; false (the connection
   dropped, logged as why) if anything failed. */
bool pst_end_exchange(bool ok, uint64_t now, const char *why)
{
    if (!ok || !pst_send_sync()) {
        conn_drop(now, why);
        return false;
    }
    return out_flush(now);
}

static void send_setup(uint64_t now)
{
    pst_begin_exchange(X_SETUP, now);
    uint32_t lk = pst.db_timeout_ms < pst.durable_timeout_ms ? pst.db_timeout_ms : pst.durable_timeout_ms;
    lk = lk / LOCK_TIMEOUT_DEN * LOCK_TIMEOUT_NUM;
    uint32_t sto = pst.db_timeout_ms / STMT_TIMEOUT_DEN * STMT_TIMEOUT_NUM;
    bool ok = PQsendQueryParams(pst.conn, "SET synchronous_commit = on", 0, NULL, NULL, NULL, NULL,
                                0) &&
              q_push(Q_SET);
    char st[64], lt[64];
    snprintf(st, sizeof(st), "SET statement_timeout = %u", sto > 50 ? sto : 50);
    snprintf(lt, sizeof(lt), "SET lock_timeout = %u", lk > 50 ? lk : 50);
    ok = ok && PQsendQueryParams(pst.conn, st, 0, NULL, NULL, NULL, NULL, 0) && q_push(Q_SET);
    ok = ok && PQsendQueryParams(pst.conn, lt, 0, NULL, NULL, NULL, NULL, 0) && q_push(Q_SET);
    for (size_t i = 0; ok && i < PST_NSTMTS; i++)
        ok = PQsendPrepare(pst.conn, PST_STMTS[i].name, PST_STMTS[i].sql, PST_STMTS[i].nparams, NULL) &&
             q_push(Q_PREP);
    pst_end_exchange(ok, now, "setup");
}

static void send_rollback(uint64_t now)
{
    pst_begin_exchange(X_ROLLBACK, now);
    pst_end_exchange(PQsendQueryParams(pst.conn, "ROLLBACK", 0, NULL, NULL, NULL, NULL, 0) &&
                     q_push(Q_ROLLBACK),
                 now, "rollback");
}

static void send_kill(uint64_t now)
{
    pst_begin_exchange(X_KILL, now);
    char arr[OLD_PIDS * 12 + 3], *o = arr;
    *o++ = '{';
    for (unsigned i = 0; i < pst.nold; i++)
        o += snprintf(o, 13, i ? ",%d" : "%d", pst.old_pids[i]);
    *o++ = '}';
    *o = 0;
    const char *v[2] = {arr, pst.conn_app};
    pst_end_exchange(pst_send_prepared(Q_KILL, "rc_kill", 2, v), now, "kill");
}

static void send_check(uint64_t now)
{
    pst_begin_exchange(X_CHECK, now);
    const char *v[3] = {pst.f.p_node, pst.f.p_seq, pst.f.p_inc};
    const char *kv[1] = {pst.f.keys.buf};
    pst_end_exchange(pst_send_prepared(Q_CHECK, "rc_check", 3, v) &&
                     (!pst.f.nk || pst_send_prepared(Q_KEYGET, "rc_key_get", 1, kv)),
                 now, "check");
}

static void send_flush(uint64_t now)
{
    struct flush *f = &pst.f;
    pst_begin_exchange(X_FLUSH, now);
    if (f->st == F_NONE)
        pst.flush_t0_ns = clock_ns(CLOCK_MONOTONIC);
    for (size_t i = 0; i < f->ntnd; i++) /* values come with this attempt's results only */
        f->tnd[i].has_db = false;
    const char *lv[4] = {f->p_node, f->p_seq, f->p_cd, f->p_inc};
    const char *ev[3] = {f->p_node, f->p_ev, f->p_sum};
    const char *uv[1] = {f->users.buf};
    const char *pv[3] = {f->p_node, f->p_prune, f->p_inc};
    const char *kn[2] = {f->p_node, f->keys.buf}, *kv[1] = {f->keys.buf};
    bool ok = PQsendQueryParams(pst.conn, "BEGIN", 0, NULL, NULL, NULL, NULL, 0) && q_push(Q_BEGIN);
    ok = ok && pst_send_prepared(Q_LEDGER, "rc_ledger", 4, lv);
    if (f->reset && !f->adopt)
        ok = ok && pst_send_prepared(Q_TRUNC, "rc_trunc", 0, NULL) &&
             pst_send_prepared(Q_META0, "rc_meta0", 0, NULL) &&
             pst_send_prepared(Q_EPOCH, "rc_epoch", 3, (const char *const[]){f->p_node, f->p_seq,
                                                                            f->p_inc});
    if (f->events)
        ok = ok && pst_send_prepared(Q_EVENTS, "rc_events", 3, ev);
    if (f->nusers)
        ok = ok && pst_send_prepared(Q_USERS, "rc_users", 1, uv);
    if (f->tn) {
        const char *jt[1] = {f->j_t.buf}, *jc[1] = {f->j_c.buf}, *jd[1] = {f->j_d.buf},
                   *ji[1] = {f->j_i.buf};
        if (f->j_t.len > 2)
            ok = ok && pst_send_prepared(Q_TN, "rc_tn_t", 1, jt);
        if (f->j_c.len > 2)
            ok = ok && pst_send_prepared(Q_TN, "rc_tn_c", 1, jc);
        const char *hv[2] = {f->j_d.buf, f->p_hm}, *hp[1] = {f->p_hd};
        if (f->j_d.len > 2 && f->hist_part)
            ok = ok && pst_send_prepared(Q_HIST, "rc_hist_part", 1, hp);
        if (f->j_d.len > 2)
            ok = ok && pst_send_prepared(Q_TND, "rc_tn_d", 1, jd) &&
                 pst_send_prepared(Q_HIST, "rc_tn_hist", 2, hv);
        if (f->j_i.len > 2)
            ok = ok && pst_send_prepared(Q_TN, "rc_tn_i", 1, ji);
    }
    if (f->nk)
        ok = ok && pst_send_prepared(Q_TN, "rc_key_ins", 2, kn) &&
             pst_send_prepared(Q_TN, "rc_key_val", 1, kv) &&
             pst_send_prepared(Q_KEYGET, "rc_key_get", 1, kv);
    if (f->prune)
        ok = ok && pst_send_prepared(Q_PRUNE, "rc_prune", 3, pv) &&
             pst_send_prepared(Q_PRUNE, "rc_key_exp", 0, NULL);
    const char *hc[1] = {f->p_hcut};
    if (f->prune && pst.tn) /* history past --history-days: whole day partitions dropped */
        ok = ok && pst_send_prepared(Q_PRUNE, "rc_tn_exp", 0, NULL) &&
             pst_send_prepared(Q_PRUNE, "rc_hist_prune", 1, hc);
    pst.rej_sent = pst.nrej;
    for (size_t i = 0; ok && i < pst.nrej; i++) {
        const struct reject *j = &pst.rej[i];
        const char *rv[6] = {f->p_node, j->kind, j->key, j->payload, j->sqlstate, j->error};
        ok = pst_send_prepared(Q_TN, "rc_reject", 6, rv);
    }
    ok = ok && PQsendQueryParams(pst.conn, "COMMIT", 0, NULL, NULL, NULL, NULL, 0) &&
         q_push(Q_COMMIT);
    if (f->ncl)
        ok = ok && pst_send_prepared(Q_CLUSTER, "rc_cluster", 0, NULL);
    if (!ok || !pst_send_sync()) {
        f->st = F_SENT;
        conn_drop(now, "send flush");
        return;
    }
    f->st = F_SENT;
    if (!out_flush(now))
        return;
    if (pst.debug_lose_ms && !pst.debug_used && f->cdelta) {
        pst.debug_used = true;
        pst.hold_until = now + pst.debug_lose_ms;
        log_warn("debug: holding flush result", LOG_I("backend_pid", PQbackendPID(pst.conn)),
                 LOG_U("flush_seq", pst.next_seq), LOG_U("hold_ms", pst.debug_lose_ms));
    }
}

/* A whole exchange (up to its sync) has been read. */
static void exchange_done(uint64_t now)
{
    enum xch x = pst.x;
    pst.x = X_NONE;
    pst.nq = pst.qi = 0;
    switch (x) {
    case X_SETUP:
        if (pst.r.failed) {
            log_error("PostgreSQL session setup failed", LOG_S("error", pst.r.msg));
            conn_drop(now, "setup");
            return;
        }
        pst.cst = C_READY;
        pst.backoff = 0;
        pst_flush_slow_start();
        {
            const char *app = PQparameterStatus(pst.conn, "application_name");
            snprintf(pst.conn_app, sizeof(pst.conn_app), "%s", app ? app : pst.appname);
        }
        log_info("PostgreSQL connected", LOG_I("backend_pid", PQbackendPID(pst.conn)),
                 LOG_B("resolving_flush", pst.f.st == F_UNKNOWN), LOG_U("old_backends", pst.nold));
        return;
    case X_ROLLBACK:
        if (pst.r.failed || PQtransactionStatus(pst.conn) != PQTRANS_IDLE) {
            conn_drop(now, "rollback");
            return;
        }
        pst.need_rollback = false;
        return;
    case X_KILL:
        if (pst.r.failed) {
            log_rl(&pst.rl_err, now, 3, 10000, LOG_ERROR,
                   "cannot end the backends of dropped connections (a flush outcome stays "
                   "unresolved until they are gone)", LOG_S("error", pst.r.msg));
            pst.kill_at = now + 1000;
            return;
        }
        pst.nold = pst.r.nalive;
        memcpy(pst.old_pids, pst.r.alive, pst.nold * sizeof(pst.old_pids[0]));
        {
            bool alive = false;
            for (unsigned i = 0; i < pst.nold; i++)
                alive |= pst.old_pids[i] == pst.f_pid;
            if (!alive)
                pst.f_pid = 0;
        }
        if (pst.nold) /* signalled, not gone yet (stopped, or still unwinding): look again */
            pst.kill_at = now + 100;
        return;
    case X_CHECK:
        if (pst.r.failed) {
            conn_drop(now, "ledger check");
            return;
        }
        if (pst.r.check_found) {
            log_info("flush outcome resolved from the ledger: it was committed, not re-applied",
                     LOG_S("flush_seq", pst.f.p_seq));
            pst.r.have_events = false;
            pst_flush_applied(now, true, pst.r.counter_null, pst.r.counter_after);
        } else {
            /* Its backend is gone (checked before asking), so it never will commit: rebuild
               it, smaller if it timed out, instead of sending the same content again (a flush
               too big for the deadline would time out for ever). */
            log_info("flush outcome resolved from the ledger: not committed, flushing again",
                     LOG_S("flush_seq", pst.f.p_seq));
            pst_flush_abandon();
        }
        return;
    case X_TNOP:
        pst_tn_done(now, false);
        return;
    case X_FLUSH:
        /* COMMIT answered OK: applied, whatever came after it (a cluster read failing, or the
           connection dying before the sync). */
        if (pst.r.commit_ok || !pst.r.failed) {
            pst_flush_applied(now, pst.r.have_counter, pst.r.counter_null, pst.r.counter_after);
            if (pst.r.have_cluster)
                pst_cluster_answer();
        } else if (pst.r.dup) {
            /* Our (node_id, incarnation, flush_seq) is already in the ledger: an earlier attempt
               of this very flush committed after all. Read its result (after the ROLLBACK of
               this attempt) instead of applying it again. */
            pst.f.st = F_UNKNOWN;
            pst.need_rollback = PQtransactionStatus(pst.conn) != PQTRANS_IDLE;
        } else {
            pst_flush_failed(now);
        }
        return;
    default:
        return;
    }
}

/* The ledger row's counter_after (NULL: the counter delta was refused at INT64_MAX) into
   pst.r: true if the result had the row. */
static bool read_counter_after(PGresult *res, ExecStatusType st)
{
    if (st != PGRES_TUPLES_OK || PQntuples(res) != 1)
        return false;
    pst.r.counter_null = PQgetisnull(res, 0, 0);
    pst.r.counter_after = pst.r.counter_null ? 0 : strtoll(PQgetvalue(res, 0, 0), NULL, 10);
    return true;
}

static void on_result(enum qk k, PGresult *res)
{
    ExecStatusType st = PQresultStatus(res);
    if (k == Q_TNOP) /* kept by persist_tn, an error too, until its exchange is done */
        pst_tn_result(res);
    if (st == PGRES_FATAL_ERROR || st == PGRES_NONFATAL_ERROR || st == PGRES_BAD_RESPONSE) {
        if (!pst.r.failed) {
            const char *ss = PQresultErrorField(res, PG_DIAG_SQLSTATE);
            snprintf(pst.r.sqlstate, sizeof(pst.r.sqlstate), "%s", ss ? ss : "");
            pst_copy_msg(pst.r.msg, sizeof(pst.r.msg), PQresultErrorMessage(res));
            pst.r.msg[strcspn(pst.r.msg, "\n")] = 0;
            pst.r.dup = k == Q_LEDGER && ss && strcmp(ss, "23505") == 0;
        }
        pst.r.failed = true;
        return;
    }
    if (st == PGRES_PIPELINE_ABORTED) {
        pst.r.failed = true;
        return;
    }
    switch (k) {
    case Q_COMMIT:
        /* an aborted transaction's COMMIT answers "ROLLBACK" */
        pst.r.commit_ok = st == PGRES_COMMAND_OK && !pst.r.failed &&
                        strcmp(PQcmdStatus(res), "COMMIT") == 0;
        break;
    case Q_LEDGER:
        pst.r.have_counter = read_counter_after(res, st);
        break;
    case Q_EVENTS:
        if (st == PGRES_TUPLES_OK && PQntuples(res) == 1) {
            pst.r.have_events = true;
            pst.r.events_total = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
        }
        break;
    case Q_CLUSTER:
        if (st == PGRES_TUPLES_OK && PQntuples(res) == 1) {
            __int128 ev = 0, sum = 0;
            if (fmt_parse_i128(PQgetvalue(res, 0, 0), &ev) == 0 &&
                fmt_parse_i128(PQgetvalue(res, 0, 1), &sum) == 0) {
                pst.r.have_cluster = true;
                pst.r.cl_events = (uint64_t)ev;
                pst.r.cl_sum = sum;
                pst.r.cl_nodes = strtoull(PQgetvalue(res, 0, 2), NULL, 10);
                pst.r.cl_users = strtoull(PQgetvalue(res, 0, 3), NULL, 10);
            }
        }
        break;
    case Q_KILL:
        for (int i = 0; st == PGRES_TUPLES_OK && i < PQntuples(res) && pst.r.nalive < OLD_PIDS; i++)
            pst.r.alive[pst.r.nalive++] = (int)strtol(PQgetvalue(res, i, 0), NULL, 10);
        break;
    case Q_KEYGET:
        for (int i = 0; st == PGRES_TUPLES_OK && i < PQntuples(res); i++) {
            if (pst.r.nkres >= KEYS_PER_FLUSH || PQgetlength(res, i, 0) > PERSIST_KEY_MAX)
                break;
            struct kres *kr = &pst.kres[pst.r.nkres++];
            kr->klen = (uint8_t)PQgetlength(res, i, 0);
            memcpy(kr->key, PQgetvalue(res, i, 0), kr->klen);
            kr->v = strtoll(PQgetvalue(res, i, 1), NULL, 10);
            if (!PQgetisnull(res, i, 2)) {
                pst.r.have_final = true;
                pst.r.counter_final = strtoll(PQgetvalue(res, i, 2), NULL, 10);
            }
        }
        break;
    case Q_CHECK:
        pst.r.check_found = read_counter_after(res, st);
        if (pst.r.check_found && !PQgetisnull(res, 0, 1)) { /* a reset flush: its epoch */
            pst.r.have_epoch = true;
            pst.r.epoch = strtoull(PQgetvalue(res, 0, 1), NULL, 10);
        }
        break;
    case Q_EPOCH:
        if (st == PGRES_TUPLES_OK && PQntuples(res) == 1) {
            pst.r.have_epoch = true;
            pst.r.epoch = strtoull(PQgetvalue(res, 0, 0), NULL, 10);
        }
        break;
    case Q_TND:
        pst_tn_flush_values(res);
        break;
    default:
        break;
    }
}

/* Read every result that has fully arrived. */
static void read_results(uint64_t now)
{
    while (pst.x != X_NONE && pst.qi < pst.nq) {
        if (PQisBusy(pst.conn))
            return;
        PGresult *res = PQgetResult(pst.conn);
        enum qk k = pst.q[pst.qi];
        if (k == Q_SYNC) {
            if (!res) /* nothing there yet */
                return;
            if (PQresultStatus(res) != PGRES_PIPELINE_SYNC) {
                on_result(k, res); /* e.g. the server's FATAL on shutdown; recorded */
                pst.r.failed = true;
            }
            PQclear(res);
            pst.qi++;
            if (pst.x == X_TNOP && pst.qi < pst.nq) { /* one write of several is done */
                pst_tn_sync(now);
                continue;
            }
            exchange_done(now);
            continue;
        }
        if (!res) { /* end of this query's results */
            pst.qi++;
            continue;
        }
        on_result(k, res);
        if (k != Q_TNOP) /* kept by persist_tn until its exchange is done */
            PQclear(res);
    }
}

static void conn_io(uint64_t now, unsigned revents)
{
    if (pst.cst == C_CONNECTING) {
        if (!revents)
            return;
        pst.cpoll = PQconnectPoll(pst.conn);
        if (pst.cpoll == PGRES_POLLING_FAILED) {
            conn_drop(now, "connect");
            return;
        }
        pst_set_fd(PQsocket(pst.conn));
        if (pst.cpoll != PGRES_POLLING_OK)
            return;
        if (PQsetnonblocking(pst.conn, 1) != 0 || PQenterPipelineMode(pst.conn) != 1) {
            conn_drop(now, "pipeline mode");
            return;
        }
        PQsetNoticeProcessor(pst.conn, pst_quiet_notice, NULL);
        pst.cst = C_SETUP;
        send_setup(now);
        return;
    }
    if (!pst.conn || pst.hold_until)
        return;
    if (revents & (POLLIN | POLLERR | POLLHUP)) {
        if (!PQconsumeInput(pst.conn)) {
            conn_drop(now, "receive");
            return;
        }
    }
    if (pst.out_pending && !out_flush(now))
        return;
    read_results(now);
    if (pst.conn && PQstatus(pst.conn) == CONNECTION_BAD)
        conn_drop(now, "connection bad");
}

int persist_p_pollfd(unsigned *events, uint64_t *gen)
{
    *gen = pst.gen;
    if (!pst.conn || pst.fd < 0 || pst.hold_until) {
        *events = 0;
        return -1;
    }
    if (pst.cst == C_CONNECTING)
        *events = pst.cpoll == PGRES_POLLING_READING ? POLLIN : POLLOUT;
    else
        *events = POLLIN | (pst.out_pending ? POLLOUT : 0);
    return pst.fd;
}

void persist_p_stop(uint64_t deadline_ms)
{
    pst.stopping = true;
    pst.deadline = deadline_ms;
}

bool persist_p_finished(void)
{
    return pst.finished;
}

static bool urgent(void)
{
    return ck_pr_load_64(&pst.inflight) > 0 || pst.ncl > 0 || pst.nrs > 0 || pst.stopping;
}

/* Flush builds in a row with nothing to write before the persister dozes: 10 (100 ms at the
   default --flush-ms). Dozing, it builds once a second (the heartbeat) instead of every
   --flush-ms: an idle node woke 100 times a second for nothing (0.8 % of a core). */
#define DOZE_AFTER 10u

/* Nothing waits on the persister: no tenant op, cluster read, reset, durable answer or stop. */
static bool nobody_waits(void)
{
    if (pst.ntq || urgent())
        return false;
    for (unsigned w = 0; w < pst.n; w++)
        if (ck_pr_load_64(&pst.pw[w].dur_waiting))
            return false;
    return true;
}

static void doze_end(void)
{
    pst.doze = false;
    pst.idle_builds = 0;
    ck_pr_store_32(&pst.dozing, 0);
}

/* After a flush build (sent: it has something to send): doze once DOZE_AFTER builds found
   nothing, or stop dozing when one found something. The flag goes up before one more build:
   a worker whose changes that build cannot see yet sees the flag at the end of its batch and
   wakes the persister (persist_w_batch_end). Whether a flush is to be sent now. */
static bool doze(uint64_t now, bool sent)
{
    if (sent && !pst.f.idle) {
        if (pst.doze || pst.idle_builds)
            doze_end();
        return true;
    }
    if (sent || pst.doze || ++pst.idle_builds < DOZE_AFTER || !nobody_waits())
        return sent;
    ck_pr_store_32(&pst.dozing, 1);
    ck_pr_fence_memory();
    sent = pst_build_flush(now);
    if (sent && !pst.f.idle)
        doze_end();
    else
        pst.doze = true;
    return sent;
}

/* The connection is idle: start the exchange due now, if any (cleanup first, then flushes and
   tenant exchanges in turn). */
static void next_exchange(uint64_t now)
{
    if (pst.nold && now >= pst.kill_at) {
        send_kill(now);
    } else if (pst.need_rollback) {
        send_rollback(now);
    } else if (pst.f.st == F_UNKNOWN) {
        if (!pst.f_pid) /* the backend that ran it is gone: the ledger is the truth */
            send_check(now);
    } else {
        /* Tenant writes, lookups and the change feed take turns with flushes; a `set`
           goes out after a flush, so increments counted before it are not added on top. */
        bool ff = false, tn = pst_tn_due(now, &ff);
        if (tn && !ff) {
            pst_tn_send(now);
        } else if (now >= pst.retry_at && (now >= pst.next_due || urgent() || tn)) {
            bool sent = doze(now, pst_build_flush(now));
            if (sent)
                send_flush(now);
            pst.next_due = now + (pst.doze ? HEARTBEAT_MS : pst.flush_ms);
            if (!sent && tn) { /* nothing to flush: whatever waited for a flush may go */
                pst.applied_gen = ++pst.build_gen;
                pst_tn_send(now);
            } else if (!sent && pst.stopping) {
                pst.finished = true;
            }
        }
    }
}

uint32_t persist_p_run(uint64_t now, unsigned revents)
{
    pst.now_ms = now;
    ck_pr_store_32(&pst.wake_pending, 0);
    ck_pr_fence_memory();
    pst_drain_requests(now);
    pst_drain_journals();
    if (pst.doze && !ck_pr_load_32(&pst.dozing)) { /* a worker's batch ended the doze */
        doze_end();
        pst.next_due = now;
    }
    for (unsigned w = 0; w < pst.n; w++)
        if (pst.pw[w].nback)
            pst_backlog_move(&pst.pw[w]);

    if (pst.hold_until && now >= pst.hold_until) {
        log_warn("debug: dropping the connection with the flush result unread");
        conn_drop(now, "debug hold");
    }
    if (pst.conn && !pst.hold_until)
        conn_io(now, revents);
    if (pst.cst == C_DOWN && now >= pst.next_connect)
        conn_start(now);
    /* --db-timeout-ms: no answer to a connect or an exchange (a stopped backend, a black-holed
       path, a lock wait past statement_timeout's reach): drop it; its backend is terminated
       from the next connection, and a flush in flight is resolved through the ledger. */
    if ((pst.cst == C_CONNECTING || pst.cst == C_SETUP) && now - pst.cst_since > pst.db_timeout_ms)
        conn_drop(now, "connect timeout (--db-timeout-ms)");
    if (pst.x != X_NONE && !pst.hold_until && now - pst.x_since > pst.db_timeout_ms) {
        if (pst.x == X_FLUSH)
            pst_flush_timed_out();
        conn_drop(now, "no answer within --db-timeout-ms");
    }

    /* tn_wm and a flush's rows name counters by record: reuse none while a flush is out */
    if (pst.x == X_NONE && pst.f.st == F_NONE)
        pst_tn_evict();
    if (pst.cst == C_READY && pst.x == X_NONE)
        next_exchange(now);
    if (pst.stopping && !pst.finished && now + SPILL_RESERVE_MS >= pst.deadline) {
        pst_spill_pending(now);
        pst.finished = true;
    }

    /* Wake workers with replies, and those with waiters while no reply comes (timeouts). */
    bool periodic = now - pst.last_waiter_wake >= WAITER_WAKE_MS;
    if (periodic)
        pst.last_waiter_wake = now;
    for (unsigned w = 0; w < pst.n; w++) {
        struct pworker *p = &pst.pw[w];
        bool waiting = ck_pr_load_64(&p->dur_waiting) > 0;
        if (periodic && !p->wake) {
            for (size_t i = 0; i < pst.ncl && !waiting; i++)
                waiting = pst.cl[i].w == w;
            for (size_t i = 0; i < pst.nrs && !waiting; i++)
                waiting = pst.rs[i].w == w;
            p->wake = waiting;
        }
        if (p->wake && pst.wake)
            pst.wake(pst.wake_ctx, w);
        p->wake = false;
    }
    pst_publish_pending();

    pst_publish_health(now);

    uint64_t d = 100;
    if (pst.cst == C_READY && pst.x == X_NONE) {
        uint64_t due = pst.next_due > pst.retry_at ? pst.next_due : pst.retry_at;
        if (pst.nold)
            due = pst.kill_at;
        d = due > now ? due - now : 1;
        uint64_t tw = pst_tn_wait(now);
        if (tw < d)
            d = tw ? tw : 1;
    }
    else if (pst.cst == C_DOWN)
        d = pst.next_connect > now ? pst.next_connect - now : 1;
    if (pst.hold_until)
        d = pst.hold_until > now ? pst.hold_until - now : 1;
    /* awake, at most 100 ms between runs (waiters' timeouts); dozing, nobody waits and a
       worker's news wakes the persister, so the next build (≤ 1 s) or feed read is the next run */
    uint64_t cap = pst.doze ? HEARTBEAT_MS : 100;
    if (d > cap)
        d = cap;
    return d ? (uint32_t)d : 1;
}
