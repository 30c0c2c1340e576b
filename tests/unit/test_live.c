/* Unit tests for src/live: the settings a SIGHUP may change. A reload re-runs the configuration
   and publishes new settings only when a live one changed; start-up-only settings are refused
   by name; a bad configuration changes nothing; workers pick the new settings up at their next
   batch and an old version stays allocated until every worker has moved past it (bounded:
   LIVE_RETIRED_MAX). Log lines are captured through a pipe. */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "live.h"
#include "log.h"

static int rfd = -1;
static char logs[1 << 16];

static void setup(void)
{
    int fds[2];
    cr_assert_eq(pipe2(fds, O_CLOEXEC), 0);
    fcntl(fds[0], F_SETFL, O_NONBLOCK);
    fcntl(fds[1], F_SETPIPE_SZ, 1 << 20);
    rfd = fds[0];
    log_init(LOG_INFO, fds[1]);
}

static void teardown(void)
{
    live_fini();
    log_init(LOG_INFO, 2);
}

TestSuite(live, .init = setup, .fini = teardown, .timeout = 30);

/* What was logged since the last call. */
static const char *drain(void)
{
    size_t n = 0;
    ssize_t r;
    while ((r = read(rfd, logs + n, sizeof(logs) - 1 - n)) > 0)
        n += (size_t)r;
    logs[n] = 0;
    return logs;
}

static char conf[64];

static void write_conf(const char *body)
{
    if (!conf[0]) {
        strcpy(conf, "/tmp/rc-test-live-XXXXXX");
        int fd = mkstemp(conf);
        cr_assert_geq(fd, 0);
        close(fd);
    }
    FILE *f = fopen(conf, "w");
    cr_assert_not_null(f);
    fputs(body, f);
    fclose(f);
}

#define ARGV(...) ((char *[]){"ringcount", __VA_ARGS__, NULL})

/* Start as main does: cfg_load, then live_init for n workers. */
static void start(int argc, char **argv, unsigned n)
{
    static struct config c;
    FILE *null = fopen("/dev/null", "w");
    cr_assert_eq(cfg_load(&c, argc, argv, NULL, null, null), 0);
    fclose(null);
    cr_assert_eq(live_init(&c, n), 0);
}

Test(live, start_up_settings)
{
    write_conf("RINGCOUNT_RATE_LIMIT=7/8\nRINGCOUNT_CORS_ORIGINS=http://a.example\n");
    char **argv = ARGV("--config-file", conf, "--log-level", "warn");
    start(5, argv, 2);
    const struct live *l = live_current();
    cr_assert_not_null(l);
    cr_expect_eq(l->gen, 1);
    cr_expect_eq(l->rate, 7);
    cr_expect_eq(l->burst, 8);
    cr_expect_eq(l->log_level, LOG_WARN);
    cr_expect_eq(l->admin_key_len, 0);
    cr_expect(cors_allowed(&l->cors, "http://a.example", 16));
    cr_expect_eq(live_get(NULL), l, "no io layer: the current ones");
    cr_expect_eq(live_enter(0), l);
    unlink(conf);

    /* 65 origins: refused like tnapi did before */
    static struct config bad;
    memset(&bad, 0, sizeof(bad));
    char *p = bad.cors_origins;
    for (int i = 0; i <= CORS_MAX_ORIGINS; i++)
        p += sprintf(p, "%shttp://h%d.example", i ? "," : "", i);
    cr_expect_eq(live_init(&bad, 1), -EINVAL);
}

Test(live, reload_applies_live_settings_and_refuses_the_others_by_name)
{
    write_conf("RINGCOUNT_RATE_LIMIT=1/3\nRINGCOUNT_WORKERS=2\n");
    char **argv = ARGV("--config-file", conf);
    start(3, argv, 1);
    const struct live *w0 = live_enter(0);
    drain();

    /* nothing changed: no new version */
    cr_expect_eq(live_reload(3, argv, NULL), 0);
    cr_expect_eq(live_current(), w0);
    cr_expect(strstr(drain(), "\"msg\":\"reloaded\",\"changed\":0,\"generation\":1"), "%s", logs);

    write_conf("RINGCOUNT_RATE_LIMIT=100/200\nRINGCOUNT_WORKERS=4\nRINGCOUNT_CORS_ORIGINS=*\n");
    cr_expect_eq(live_reload(3, argv, NULL), 2);
    const char *out = drain();
    cr_expect(strstr(out, "\"msg\":\"setting changed\",\"setting\":\"--rate-limit\",\"env\":"
                          "\"RINGCOUNT_RATE_LIMIT\",\"from\":\"1/3\",\"to\":\"100/200\""), "%s", out);
    cr_expect(strstr(out, "\"setting\":\"--cors-origins\",\"env\":\"RINGCOUNT_CORS_ORIGINS\","
                          "\"from\":\"\",\"to\":\"*\""), "%s", out);
    cr_expect(strstr(out, "\"level\":\"warn\",\"msg\":\"setting cannot change while running: "
                          "restart to apply it\",\"setting\":\"--workers\",\"env\":"
                          "\"RINGCOUNT_WORKERS\",\"running\":\"2\",\"wanted\":\"4\""), "%s", out);
    const struct live *l = live_current();
    cr_assert_neq(l, w0);
    cr_expect_eq(l->gen, 2);
    cr_expect_eq(l->rate, 100);
    cr_expect(l->cors.any);
    /* the worker still holds gen 1 until its next batch: it is not freed (ASan would tell) */
    cr_expect_eq(w0->gen, 1);
    cr_expect_eq(w0->rate, 1);
    cr_expect_eq(live_enter(0), l);

    /* the refused setting stays refused on the next reload too (it still differs) */
    cr_expect_eq(live_reload(3, argv, NULL), 0);
    cr_expect(strstr(drain(), "\"setting\":\"--workers\""));
    unlink(conf);
}

Test(live, a_bad_configuration_changes_nothing)
{
    write_conf("RINGCOUNT_RATE_LIMIT=1/3\n");
    char **argv = ARGV("--config-file", conf);
    start(3, argv, 1);
    const struct live *l = live_current();
    drain();
    write_conf("RINGCOUNT_RATE_LIMIT=9/9\nRINGCOUNT_MAX_BODY=lots\n");
    cr_expect_eq(live_reload(3, argv, NULL), -EINVAL);
    const char *out = drain();
    cr_expect(strstr(out, "\"level\":\"error\",\"msg\":\"reload refused: the new configuration is "
                          "invalid; nothing changed\",\"error\":\"ringcount: invalid "
                          "RINGCOUNT_MAX_BODY"), "%s", out);
    cr_expect_null(strstr(out, "setting changed"));
    cr_expect_eq(live_current(), l);
    cr_expect_eq(l->rate, 1);
    unlink(conf);
    cr_expect_eq(live_reload(3, argv, NULL), -EINVAL, "file gone");
    cr_expect(strstr(drain(), "cannot read --config-file"), "%s", logs);
}

Test(live, log_level_is_applied_and_its_change_is_always_seen)
{
    write_conf("RINGCOUNT_LOG_LEVEL=info\n");
    char **argv = ARGV("--config-file", conf);
    start(3, argv, 1);
    write_conf("RINGCOUNT_LOG_LEVEL=error\n");
    cr_expect_eq(live_reload(3, argv, NULL), 1);
    cr_expect_eq(log_level_get(), LOG_ERROR);
    const char *out = drain();
    cr_expect(strstr(out, "\"from\":\"info\",\"to\":\"error\""), "%s", out);
    cr_expect(strstr(out, "\"msg\":\"reloaded\""), "the closing line before going quiet: %s", out);
    write_conf("RINGCOUNT_LOG_LEVEL=debug\n");
    cr_expect_eq(live_reload(3, argv, NULL), 1);
    cr_expect_eq(log_level_get(), LOG_DEBUG);
    cr_expect(strstr(drain(), "\"from\":\"error\",\"to\":\"debug\""), "%s", logs);
    unlink(conf);
}

Test(live, admin_key_file_is_reread_and_never_logged)
{
    char key[] = "/tmp/rc-test-live-key-XXXXXX";
    int fd = mkstemp(key);
    cr_assert_geq(fd, 0);
    cr_assert_eq(write(fd, "old-secret\n", 11), 11);
    close(fd);
    char **argv = ARGV("--admin-key-file", key);
    start(3, argv, 1);
    cr_expect_eq(live_current()->admin_key_len, 10);
    drain();
    FILE *f = fopen(key, "w");
    fputs("new-secret-2\n", f);
    fclose(f);
    cr_expect_eq(live_reload(3, argv, NULL), 1);
    const struct live *l = live_current();
    cr_expect_eq(l->admin_key_len, 12);
    cr_expect_eq(memcmp(l->admin_key, "new-secret-2", 12), 0);
    const char *out = drain();
    cr_expect(strstr(out, "\"setting\":\"--admin-key-file\",\"env\":\"RINGCOUNT_ADMIN_KEY_FILE\","
                          "\"from\":\"(set)\",\"to\":\"(changed)\""), "%s", out);
    cr_expect_null(strstr(out, "secret"), "%s", out);
    unlink(key);
}

/* A worker that never enters a new batch (stuck) holds its version: after LIVE_RETIRED_MAX
   retired versions the next reload waits for it, then gives up with -EBUSY and changes nothing;
   once it moves on, reloads work again. */
Test(live, retired_versions_are_bounded_and_wait_for_every_worker)
{
    write_conf("RINGCOUNT_RATE_LIMIT=1\n");
    char **argv = ARGV("--config-file", conf);
    start(3, argv, 2);
    const struct live *w1 = live_enter(1);
    char body[64];
    for (int i = 0; i < LIVE_RETIRED_MAX; i++) {
        snprintf(body, sizeof(body), "RINGCOUNT_RATE_LIMIT=%d\n", i + 2);
        write_conf(body);
        cr_assert_eq(live_reload(3, argv, NULL), 1, "reload %d", i);
        cr_assert_eq(live_enter(0)->rate, (uint32_t)(i + 2)); /* worker 0 keeps up */
    }
    cr_expect_eq(w1->rate, 1, "worker 1's version is still there");
    write_conf("RINGCOUNT_RATE_LIMIT=99\n");
    uint64_t gen = live_current()->gen;
    cr_expect_eq(live_reload(3, argv, NULL), -EBUSY);
    cr_expect_eq(live_current()->gen, gen, "nothing published");
    cr_expect(strstr(drain(), "a worker loop has not moved on for 3 s"), "%s", logs);
    w1 = live_enter(1);
    cr_expect_eq(live_reload(3, argv, NULL), 1, "room again");
    cr_expect_eq(live_current()->rate, 99);
    cr_expect_eq(live_current()->gen, gen + 1);
    unlink(conf);
}

/* A worker waiting between batches (live_leave, as before io_uring_enter) holds nothing: reloads
   go on past LIVE_RETIRED_MAX while it waits, each retired version freed at once, and its next
   batch gets the newest settings. */
Test(live, a_waiting_worker_holds_no_version)
{
    write_conf("RINGCOUNT_RATE_LIMIT=1\n");
    char **argv = ARGV("--config-file", conf);
    start(3, argv, 2);
    (void)live_enter(1);
    live_leave(1);
    char body[64];
    for (int i = 0; i < 3 * LIVE_RETIRED_MAX; i++) {
        snprintf(body, sizeof(body), "RINGCOUNT_RATE_LIMIT=%d\n", i + 2);
        write_conf(body);
        cr_assert_eq(live_reload(3, argv, NULL), 1, "reload %d", i);
        cr_assert_eq(live_enter(0)->rate, (uint32_t)(i + 2)); /* worker 0 keeps up */
    }
    cr_assert_eq(live_enter(1)->rate, 3 * LIVE_RETIRED_MAX + 1);
    unlink(conf);
}
