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
#include "config.h"
#include "counters.h"
#include "log.h"
#include "server.h"
#include "users.h"

extern char **environ;

/* Probe lives in uring/ring.c; declared here to keep liburing.h out of src/. */
int ring_probe(char *why, size_t cap);

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* CPUs of our affinity mask, in order: one worker each unless --workers says otherwise. */
static unsigned pick_cpus(unsigned want, int *cpus, unsigned cap)
{
    cpu_set_t set;
    unsigned n = 0;
    if (sched_getaffinity(0, sizeof(set), &set) == 0)
        for (int c = 0; c < CPU_SETSIZE && n < cap; c++)
            if (CPU_ISSET(c, &set))
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

int main(int argc, char **argv)
{
    static struct config cfg;
    int rc = cfg_load(&cfg, argc, argv, environ, stdout, stderr);
    if (rc == 1)
        return 0;
    if (rc < 0)
        return 2;
    log_init((enum log_level)cfg.log_level, 2);

    char why[256];
    if (ring_probe(why, sizeof(why)) < 0) {
        log_error("io_uring unavailable", LOG_S("cause", why));
        return 2;
    }

    static int cpus[CNT_MAX_WORKERS];
    unsigned n = pick_cpus(cfg.workers, cpus, CNT_MAX_WORKERS);

    /* Signals go to the main thread only: block them before any worker exists. */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);

    char dump[CFG_DUMP_MAX];
    if (cfg_dump(&cfg, dump, sizeof(dump)) > 0)
        log_info("starting", LOG_S("version", RINGCOUNT_VERSION), LOG_J("config", dump, strlen(dump)));
    if (!cfg.db[0])
        log_warn("no --db given: running memory-only, nothing is persisted",
                 LOG_S("persistence", "none"));

    struct srv *srv = NULL;
    if ((rc = cnt_init(n)) < 0 || (rc = users_init(n, cfg.max_users, n > 1 ? (1u << 20) : 4096)) < 0 ||
        (rc = app_init(&cfg, n)) < 0) {
        log_error("start-up failed", LOG_S("error", strerror(-rc)));
        return 1;
    }
    if ((rc = srv_start(&cfg, n, cfg.workers && cfg.workers > (unsigned)sysconf(_SC_NPROCESSORS_ONLN) ? NULL : cpus, &srv)) < 0)
        return rc == -EADDRINUSE || rc == -EACCES || rc == -EADDRNOTAVAIL || rc == -EINVAL ? 2 : 1;

    char addr[80];
    cfg_listen_str(&cfg, addr, sizeof(addr));
    app_set_ready(true);
    log_info("listening", LOG_S("listen", addr), LOG_U("port", srv_port(srv)), LOG_U("workers", n));

    int sig = 0;
    while (sigwait(&sigs, &sig) != 0)
        ;
    uint64_t t0 = mono_ms();
    log_info("draining", LOG_S("signal", sig == SIGTERM ? "SIGTERM" : "SIGINT"));
    app_set_ready(false);
    srv_drain(srv);
    srv_join(srv);
    srv_free(srv);
    struct cnt_snapshot snap;
    cnt_snapshot(&snap);
    log_info("stopped", LOG_U("drain_ms", mono_ms() - t0), LOG_U("events", snap.events));
    app_fini();
    users_fini();
    cnt_fini();
    return 0;
}
