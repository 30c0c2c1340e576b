/* live — see live.h. */
#include "live.h"

#include <ck_pr.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "config.h"
#include "log.h"
#include "qsbr.h"

/* What a reload may change (live.h); every other setting is start-up only. */
static bool is_live(const struct cfg_opt *o)
{
    return o->off == offsetof(struct config, admin_key) ||
           o->off == offsetof(struct config, cors_origins) ||
           o->off == offsetof(struct config, rate_limit) ||
           o->off == offsetof(struct config, log_level);
}

static struct live *cur;                       /* published: ck_pr_store_ptr / ck_pr_load_ptr */
static struct {
    struct live *l;
    uint64_t epoch; /* src/qsbr: free once every worker entered a batch at or after it */
} retired[LIVE_RETIRED_MAX];                   /* main only */
static unsigned nretired;
static struct config running; /* main only: what the server runs with (live ones updated) */

static int build(struct live *l, const struct config *c, uint64_t gen)
{
    memset(l, 0, sizeof(*l));
    l->gen = gen;
    if (cors_init(&l->cors, c->cors_origins) < 0)
        return -EINVAL;
    l->rate = c->rate_limit.rate;
    l->burst = c->rate_limit.burst;
    l->log_level = c->log_level;
    l->admin_key_len = strnlen(c->admin_key, sizeof(c->admin_key) - 1);
    memcpy(l->admin_key, c->admin_key, l->admin_key_len);
    return 0;
}

static void free_live(struct live *l)
{
    if (!l)
        return;
    explicit_bzero(l->admin_key, sizeof(l->admin_key));
    free(l);
}

int live_init(const struct config *cfg, unsigned n)
{
    live_fini();
    struct live *l = malloc(sizeof(*l));
    if (!l)
        return -ENOMEM;
    if (build(l, cfg, 1) < 0) {
        free_live(l);
        return -EINVAL;
    }
    if (qsbr_init(n) < 0) {
        free_live(l);
        return -EINVAL;
    }
    running = *cfg;
    ck_pr_fence_store();
    ck_pr_store_ptr(&cur, l);
    return 0;
}

void live_fini(void)
{
    for (unsigned i = 0; i < nretired; i++)
        free_live(retired[i].l);
    nretired = 0;
    free_live(ck_pr_load_ptr(&cur));
    ck_pr_store_ptr(&cur, NULL);
    explicit_bzero(running.admin_key, sizeof(running.admin_key));
}

const struct live *live_current(void)
{
    return ck_pr_load_ptr(&cur);
}

const struct live *live_enter(unsigned idx)
{
    qsbr_enter(idx); /* first: a worker past a reload's epoch loads the settings it published */
    return ck_pr_load_ptr(&cur);
}

void live_leave(unsigned idx)
{
    qsbr_offline(idx);
}

/* Free the retired settings no worker can still be using; returns how many remain. */
static unsigned collect(void)
{
    unsigned j = 0;
    for (unsigned i = 0; i < nretired; i++) {
        if (qsbr_safe(retired[i].epoch))
            free_live(retired[i].l);
        else
            retired[j++] = retired[i];
    }
    nretired = j;
    return j;
}

/* Room for one more retired struct: the workers tick every second, so 3 s means one is stuck
   (the watchdog, 5 s, reports that on its own). */
static int make_room(void)
{
    for (int waited = 0; collect() == LIVE_RETIRED_MAX; waited += 10) {
        if (waited >= 3000)
            return -EBUSY;
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    return 0;
}

/* Re-run the configuration into next, its errors into one log line. 0, -ENOMEM, or -EINVAL
   (invalid: logged, next wiped). */
static int load_next(struct config *next, int argc, char **argv, char **envp)
{
    char *errbuf = NULL;
    size_t errlen = 0;
    FILE *err = open_memstream(&errbuf, &errlen);
    if (!err)
        return -ENOMEM;
    int rc = cfg_load(next, argc, argv, envp, err, err);
    fclose(err);
    if (rc != 0) {
        while (errlen && errbuf[errlen - 1] == '\n')
            errbuf[--errlen] = 0;
        log_error("reload refused: the new configuration is invalid; nothing changed",
                  LOG_S("error", errlen ? errbuf : "(no reason given)"));
        explicit_bzero(next, sizeof(*next));
    }
    free(errbuf);
    return rc != 0 ? -EINVAL : 0;
}

/* Log each setting of next that differs from running and copy the live ones into running
   (the rest are refused by name: a restart applies them). Returns how many were copied. */
static int apply_changes(const struct config *next)
{
    int changed = 0;
    char label[96], from[256], to[256];
    for (size_t i = 0; i < cfg_nopts; i++) {
        const struct cfg_opt *o = &cfg_opts[i];
        bool seen = false; /* several entries may share a field (the admin key): report once */
        for (size_t k = 0; k < i && !seen; k++)
            seen = cfg_opts[k].off == o->off;
        if (seen || cfg_same(o, &running, next))
            continue;
        /* the entry with a flag names the setting (--admin-key-file, not RINGCOUNT_ADMIN_KEY) */
        const struct cfg_opt *named = o;
        for (size_t k = i; k < cfg_nopts && !named->name; k++)
            if (cfg_opts[k].off == o->off && cfg_opts[k].name)
                named = &cfg_opts[k];
        const char *lb = cfg_opt_label(named, label, sizeof(label));
        if (cfg_value_str(o, &running, from, sizeof(from)) < 0)
            strcpy(from, "(too long)");
        if (cfg_value_str(o, next, to, sizeof(to)) < 0)
            strcpy(to, "(too long)");
        if (o->flags & (CFG_F_SECRET | CFG_F_ADMINKEY))
            strcpy(to, next->admin_key[0] ? (running.admin_key[0] ? "(changed)" : "(set)")
                                         : "(unset)");
        if (is_live(o)) {
            log_info("setting changed", LOG_S("setting", lb), LOG_S("env", named->env),
                     LOG_S("from", from), LOG_S("to", to));
            cfg_copy(o, &running, next);
            changed++;
        } else {
            log_warn("setting cannot change while running: restart to apply it",
                     LOG_S("setting", lb), LOG_S("env", named->env), LOG_S("running", from),
                     LOG_S("wanted", to));
        }
    }
    return changed;
}

int live_reload(int argc, char **argv, char **envp)
{
    /* nginx and logrotate: a renamed or deleted log file is reopened first, so the lines of
       this reload already go to the new one */
    int lr = log_reopen();
    if (lr < 0)
        log_error("cannot reopen the log file", LOG_S("error", strerror(-lr)));
    else if (lr > 0)
        log_info("log file reopened");

    static struct config next, before; /* main only; ~6 KiB each, kept off the stack */
    int rc = load_next(&next, argc, argv, envp);
    if (rc < 0)
        return rc;
    struct live *cl = ck_pr_load_ptr(&cur);
    if (!cl) {
        explicit_bzero(&next, sizeof(next));
        return -EINVAL;
    }
    /* A more verbose new level takes effect before the change lines are written, a less
       verbose one after the closing "reloaded" line: either way the operator sees what the
       reload did. */
    if (next.log_level < running.log_level)
        log_set_level((enum log_level)next.log_level);
    before = running;
    int changed = apply_changes(&next);
    explicit_bzero(&next, sizeof(next));

    if (changed) {
        struct live *nl = NULL;
        if ((rc = make_room()) < 0 || !(nl = malloc(sizeof(*nl))) ||
            build(nl, &running, cl->gen + 1) < 0) {
            free_live(nl);
            if (rc == 0)
                rc = -ENOMEM;
            log_error("reload failed: the live settings stay as they were",
                      LOG_S("error", rc == -EBUSY ? "a worker loop has not moved on for 3 s"
                                                  : strerror(-rc)));
            running = before; /* what runs is still what cl says */
            explicit_bzero(&before, sizeof(before));
            log_set_level((enum log_level)running.log_level);
            return rc;
        }
        explicit_bzero(&before, sizeof(before));
        ck_pr_fence_store(); /* the new struct is complete before workers can see it */
        ck_pr_store_ptr(&cur, nl);
        retired[nretired].l = cl;
        retired[nretired++].epoch = qsbr_defer(); /* after the store: see live_enter */
        cl = nl;
    }
    log_info("reloaded", LOG_U("changed", changed), LOG_U("generation", cl->gen));
    log_set_level((enum log_level)running.log_level);
    return changed;
}
