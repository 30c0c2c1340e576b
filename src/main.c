/*
 * main — start-up and shutdown: configuration, the io_uring probe, workers, signals.
 * Main thread only. Exit codes: 0 clean stop, 1 runtime failure, 2 bad configuration or an
 * environment that cannot run ringcount (the message names the cause and the fix).
 */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "app.h"
#include "clock.h"
#include "config.h"
#include "counters.h"
#include "live.h"
#include "log.h"
#include "metrics.h"
#include "notify.h"
#include "persist.h"
#include "pgloop.h"
#include "ring_probe.h"
#include "server.h"
#include "keyapi.h"
#include "tnapi.h"
#include "users.h"

extern char **environ;

/* CPUs of our affinity mask, in order: one worker each unless --workers says otherwise. */
static unsigned pick_cpus(unsigned want, int *cpus, unsigned cap)
{
    cpu_set_t set;
    unsigned n = 0;
    if (sched_getaffinity(0, sizeof(set), &set) == 0)
        for (int c = 0; c < CPU_SETSIZE && n < cap; c++)
            if (CPU_ISSET((size_t)c, &set))
                cpus[n++] = c;
    if (n == 0)
        cpus[n++] = 0;
    if (want == 0)
        return n;
    /* More workers than CPUs: wrap around the mask. */
    for (unsigned i = n; i < want && i < cap; i++)
        cpus[i] = cpus[i % n];
    return want < cap ? want : cap;
}

/* A worker whose 1 s tick is this late is stuck: withhold WATCHDOG=1 so systemd restarts us
   (5 s = five missed ticks; WatchdogSec in deploy/ringcount.service is 20 s, pings every 10 s). */
#define WORKER_STALL_MS 5000

/* Until SIGTERM/SIGINT: once a second sample process_* metrics and refresh the systemd STATUS;
   at half of WatchdogSec send WATCHDOG=1 while every worker loop is turning. Returns the signal. */
static int wait_signal(const sigset_t *sigs, struct notify *nt)
{
    uint64_t since = clock_ms(CLOCK_MONOTONIC);
    struct log_rl rl = {0};
    char last_status[160] = "";
    for (;;) {
        uint64_t now = clock_ms(CLOCK_MONOTONIC), wait = notify_watchdog_wait_ms(nt, now);
        if (wait > 1000)
            wait = 1000;
        struct timespec ts = {.tv_sec = (time_t)(wait / 1000), .tv_nsec = (long)(wait % 1000) * 1000000L};
        int sig = sigtimedwait(sigs, NULL, &ts);
        if (sig > 0)
            return sig;
        now = clock_ms(CLOCK_MONOTONIC);
        metrics_process_refresh();
        if (notify_watchdog_due(nt, now)) {
            unsigned stale = metrics_workers_stale(now, since, WORKER_STALL_MS);
            if (!stale)
                notify_watchdog(nt, now);
            else if (log_rl_allow(&rl, now, 1, 10000))
                log_error("worker loop stalled: withholding the systemd watchdog ping",
                          LOG_U("stalled_workers", stale), LOG_U("stall_ms", WORKER_STALL_MS));
        }
        if (notify_enabled(nt)) {
            struct cnt_snapshot snap;
            cnt_snapshot(&snap);
            char st[160];
            snprintf(st, sizeof(st), "serving: %llu connections, %llu req/s",
                     (unsigned long long)snap.conns_open, (unsigned long long)snap.rps);
            if (strcmp(st, last_status) != 0) {
                notify_status(nt, st);
                memcpy(last_status, st, sizeof(st));
            }
        }
    }
}

/* What main starts and stops, in start-up order. Static in main: ~70 KiB with the config. */
struct run {
    struct config cfg;
    struct notify nt;
    sigset_t sigs;
    unsigned n;
    int cpus[CNT_MAX_WORKERS];
    struct srv *srv;
    struct pgl *pgl;
    char status[160];
};
/* prepare/start: keep going (any other value is the exit code). */
#define RUN_ON (-1)

/* The configuration, the log, sd_notify, the io_uring probe, the CPUs and the signals. RUN_ON
   or the exit code (0 after --help, 2 for a bad configuration or no io_uring). */
static int prepare(struct run *r, int argc, char **argv)
{
    int rc = cfg_load(&r->cfg, argc, argv, environ, stdout, stderr);
    if (rc == 1)
        return 0;
    if (rc < 0)
        return 2;
    log_init((enum log_level)r->cfg.log_level, 2);

    /* Before any thread: notify_open reads the environment. */
    if ((rc = notify_open(&r->nt)) < 0)
        log_warn("NOTIFY_SOCKET unusable: systemd will not hear from us",
                 LOG_S("error", strerror(-rc)));

    char why[256];
    if (ring_probe(why, sizeof(why)) < 0) {
        log_error("io_uring unavailable", LOG_S("cause", why));
        return 2;
    }
    r->n = pick_cpus(r->cfg.workers, r->cpus, CNT_MAX_WORKERS);

    /* Signals go to the main thread only: block them before any worker exists. */
    sigemptyset(&r->sigs);
    sigaddset(&r->sigs, SIGTERM);
    sigaddset(&r->sigs, SIGINT);
    sigaddset(&r->sigs, SIGHUP); /* reload (src/live), never the default "terminate" */
    pthread_sigmask(SIG_BLOCK, &r->sigs, NULL);
    signal(SIGPIPE, SIG_IGN);

    char dump[CFG_DUMP_MAX];
    if (cfg_dump(&r->cfg, dump, sizeof(dump)) > 0)
        log_info("starting", LOG_S("version", RINGCOUNT_VERSION), LOG_J("config", dump, strlen(dump)));
    if (!r->cfg.db[0])
        log_warn("no --db given: running memory-only, nothing is persisted",
                 LOG_S("persistence", "none"));
    return RUN_ON;
}

/* The stores, the persister (SPEC §4: counters, totals and the user set come back from
   PostgreSQL before we listen) and the workers. RUN_ON, or the exit code: 1, or 2 when the
   listener cannot be had (address in use, not allowed, not local, invalid). */
static int start(struct run *r)
{
    const struct config *cfg = &r->cfg;
    unsigned n = r->n;
    int rc;
    if ((rc = cnt_init(n)) < 0 || (rc = metrics_init(n)) < 0 || (rc = users_init(n, cfg->max_users, n > 1 ? (1u << 20) : 4096)) < 0 ||
        (rc = app_init(cfg, n)) < 0 || (rc = persist_init(cfg, n)) < 0) {
        log_error("start-up failed", LOG_S("error", strerror(-rc)));
        return 1;
    }
    metrics_set_persistence(cfg->db[0] != '\0');
    if (persist_enabled()) {
        persist_set_tenants(tnapi_store()); /* loaded by persist_load, then flushed */
        persist_set_keys(keyapi_store());
        if (persist_load() < 0 || pgl_start(cfg, &r->pgl) < 0)
            return 1;
        users_set_journal(persist_journal, NULL);
    }
    bool pin = !cfg->workers || cfg->workers <= (unsigned)sysconf(_SC_NPROCESSORS_ONLN);
    if ((rc = srv_start(cfg, n, pin ? r->cpus : NULL, &r->srv)) < 0)
        return rc == -EADDRINUSE || rc == -EACCES || rc == -EADDRNOTAVAIL || rc == -EINVAL ? 2 : 1;
    if (r->pgl) {
        int fds[CNT_MAX_WORKERS];
        for (unsigned i = 0; i < n; i++)
            fds[i] = srv_worker_ring_fd(r->srv, i);
        pgl_set_workers(r->pgl, fds, n, srv_wake_data());
        srv_set_aux_wake_fd(r->srv, pgl_ring_fd(r->pgl));
    }

    char addr[80];
    cfg_listen_str(cfg, addr, sizeof(addr));
    app_set_ready(true);
    log_info("listening", LOG_S("listen", addr), LOG_U("port", srv_port(r->srv)), LOG_U("workers", n));
    bool v6 = strchr(cfg->listen_host, ':') != NULL;
    snprintf(r->status, sizeof(r->status), "listening on %s%s%s:%u, %u workers", v6 ? "[" : "",
             cfg->listen_host, v6 ? "]" : "", (unsigned)srv_port(r->srv), n);
    notify_ready(&r->nt, r->status);
    return RUN_ON;
}

/* Until SIGTERM/SIGINT; SIGHUP reloads the live settings. Returns the signal. */
static int serve(struct run *r, int argc, char **argv)
{
    int sig;
    while ((sig = wait_signal(&r->sigs, &r->nt)) == SIGHUP) {
        /* systemd: RELOADING=1 until READY=1 (MONOTONIC_USEC ties them to this reload) */
        char msg[64];
        snprintf(msg, sizeof(msg), "RELOADING=1\nMONOTONIC_USEC=%llu",
                 (unsigned long long)(clock_ns(CLOCK_MONOTONIC) / 1000u));
        notify_send(&r->nt, msg);
        log_info("SIGHUP: reloading");
        live_reload(argc, argv, environ);
        notify_ready(&r->nt, r->status);
    }
    return sig;
}

/* The workers are gone: stop waking their (closed) rings, move the user ids still in their
   mailboxes into the shards (journaling them; 64 passes, each drains what the last moved),
   then the final flush within what is left of --shutdown-timeout-ms (at least 1 s). Returns
   persist_lost(): data neither flushed nor spilled. */
static bool final_flush(struct run *r, uint64_t t0)
{
    pgl_set_workers(r->pgl, NULL, 0, 0);
    unsigned wk[CNT_MAX_WORKERS];
    for (int pass = 0; pass < 64; pass++) {
        size_t moved = 0;
        for (unsigned i = 0; i < r->n; i++)
            users_pending_wakes(i, wk, CNT_MAX_WORKERS);
        for (unsigned i = 0; i < r->n; i++)
            moved += users_drain(i);
        if (!moved)
            break;
    }
    persist_workers_stopped();
    uint64_t spent = clock_ms(CLOCK_MONOTONIC) - t0;
    uint64_t left = spent < r->cfg.shutdown_timeout_ms ? r->cfg.shutdown_timeout_ms - spent : 0;
    uint64_t tf = clock_ms(CLOCK_MONOTONIC);
    pgl_stop(r->pgl, left < 1000 ? 1000 : (uint32_t)left);
    bool lost = persist_lost();
    log_info("final flush done", LOG_U("flush_ms", clock_ms(CLOCK_MONOTONIC) - tf));
    pgl_free(r->pgl);
    return lost;
}

/* SIGTERM/SIGINT (sig): drain, final flush, release. The exit code. */
static int stop(struct run *r, int sig)
{
    uint64_t t0 = clock_ms(CLOCK_MONOTONIC);
    log_info("draining", LOG_S("signal", sig == SIGTERM ? "SIGTERM" : "SIGINT"));
    notify_stopping(&r->nt, "draining");
    app_set_ready(false);
    srv_drain(r->srv);
    srv_join(r->srv);
    bool lost = r->pgl && final_flush(r, t0);
    srv_free(r->srv);
    struct cnt_snapshot snap;
    cnt_snapshot(&snap);
    log_info("stopped", LOG_U("drain_ms", clock_ms(CLOCK_MONOTONIC) - t0), LOG_U("events", snap.events));
    app_fini();
    persist_fini();
    users_fini();
    metrics_fini();
    cnt_fini();
    notify_close(&r->nt);
    /* SPEC §4 "nothing acknowledged is lost": a shutdown that lost data (no flush, no spill)
       must not look clean to systemd or a supervisor. */
    return lost ? 1 : 0;
}

int main(int argc, char **argv)
{
    static struct run r;
    int rc = prepare(&r, argc, argv);
    if (rc == RUN_ON)
        rc = start(&r);
    if (rc != RUN_ON)
        return rc;
    return stop(&r, serve(&r, argc, argv));
}
