/*
 * live — the settings that change while the server runs (SIGHUP; SPEC §5 operations): the admin key
 * (re-read from --admin-key-file), the CORS origins, the rate limit and the log level. Every
 * other setting is fixed at start-up: a reload that asks to change one is refused with a log
 * line naming it, and the running value stays.
 *
 * Owns: the published settings — an immutable struct live behind one pointer — the retired
 * ones not yet freed (at most LIVE_RETIRED_MAX), and the
 * effective configuration the reload compares against.
 *
 * Publication without locks: main fills a new struct, then stores the pointer (after a store
 * fence). A worker reads the pointer once at the start of each event-loop batch (live_enter)
 * and uses that struct until its next batch, so one request never mixes two versions and the
 * hot path costs one load and a compare. Nothing a worker keeps past its batch points into a
 * struct live (a request's CORS fields are copied into its session, rate-limit parameters into
 * the worker's table), so a retired struct is free to go once every worker has entered a batch
 * after it was replaced (src/qsbr's grace period); an idle worker enters one at least once a
 * second (its 1 s tick). Retired
 * structs are freed by the next reload (or live_fini), so at most LIVE_RETIRED_MAX of ~3 KiB
 * each stay allocated.
 *
 * Threads: live_init, live_reload, live_fini from main (live_init before any worker, live_fini
 * after they are joined); live_enter from worker idx only; live_current and live_get from any
 * thread.
 */
#ifndef RC_LIVE_H
#define RC_LIVE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cors.h"

struct config;

/* Eight reloads within the ~1 s it takes every worker to move on; a ninth waits for them. */
#define LIVE_RETIRED_MAX 8

struct live {
    uint64_t gen;              /* 1 at start-up, +1 per reload that changed something */
    struct cors_conf cors;     /* --cors-origins */
    uint32_t rate, burst;      /* --rate-limit; rate 0 = off */
    int log_level;             /* enum log_level */
    size_t admin_key_len;      /* 0 = admin routes disabled */
    char admin_key[256];       /* never logged */
};

/* Build the first settings from cfg (the struct is copied: the reload compares against it).
   nworkers: how many workers will call live_enter (qsbr_init for them). 0, -EINVAL (bad
   --cors-origins, or nworkers not 1..CNT_MAX_WORKERS), -ENOMEM.
   May be called again (unit tests): the previous settings are freed. */
int live_init(const struct config *cfg, unsigned nworkers);
/* Free everything (after the workers are joined). Safe without live_init. */
void live_fini(void);
/* The current settings; NULL before live_init. */
const struct live *live_current(void);
/* Worker idx at the start of a batch: the settings to use until its next batch. It is also
   the batch start of src/qsbr (qsbr_enter: a fence only when the epoch moved), which is what
   lets a retired version, and an evicted tenant counter, be freed. */
const struct live *live_enter(unsigned idx);
/* Worker idx at the end of a batch, before it may block: it uses none of the settings (nor any
   record src/qsbr protects) until its next live_enter. */
void live_leave(unsigned idx);
/* The settings a request runs with: those its worker entered the batch with (env_live, from
   struct sess_env), else the current ones (unit tests and fuzzers run without an io layer). */
static inline const struct live *live_get(const struct live *env_live)
{
    return env_live ? env_live : live_current();
}

/* SIGHUP: re-run the configuration with the same argv and environment, re-reading the files
   (--config-file, --admin-key-file). A bad value refuses the whole reload (one error line with
   the reason, nothing changes). Otherwise each changed setting is logged: live ones are
   applied ("setting changed", old and new value, secrets hidden), others refused ("setting
   cannot change while running", named, with the value that stays). Publishes new settings if
   a live one changed. Returns the number of live settings changed (>= 0), -EINVAL if the
   configuration was refused, -EBUSY if retired settings could not be freed within 3 s (a
   worker loop is stuck; nothing changed), -ENOMEM. */
int live_reload(int argc, char **argv, char **envp);

#endif
