/* Unit tests for src/config: defaults, environment, flags, every bound of every numeric setting
   (driven by the table), value syntaxes, the admin key file, --help and cfg_dump masking, the
   --config-file that SIGHUP re-reads and the per-setting helpers the reload uses. */
#include <criterion/criterion.h>
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "conninfo.h"

static char OUT[32768], ERR[4096];
static struct config C;

/* Run cfg_load on argv = { "ringcount", args... } (args NULL-terminated, may be NULL). */
static int load(char **envp, char **args)
{
    char *argv[64] = { "ringcount" };
    int argc = 1;

    for (size_t i = 0; args && args[i]; i++)
        argv[argc++] = args[i];
    memset(OUT, 0, sizeof(OUT));
    memset(ERR, 0, sizeof(ERR));
    FILE *o = fmemopen(OUT, sizeof(OUT) - 1, "w");
    FILE *e = fmemopen(ERR, sizeof(ERR) - 1, "w");
    cr_assert(o && e);
    int rc = cfg_load(&C, argc, argv, envp, o, e);
    fclose(o);
    fclose(e);
    return rc;
}

#define V(...) ((char *[]){ __VA_ARGS__, NULL })

/* An error is exactly one line on err, and nothing on out. */
static void expect_one_error_line(int rc)
{
    cr_expect_eq(rc, -EINVAL);
    size_t n = strlen(ERR);
    cr_expect(n > 0 && ERR[n - 1] == '\n' && memchr(ERR, '\n', n - 1) == NULL,
              "not one line: [%s]", ERR);
    cr_expect_eq(OUT[0], '\0');
}

Test(config, defaults_match_the_spec)
{
    cr_assert_eq(load(NULL, NULL), 0, "%s", ERR);
    cr_expect_str_eq(C.listen_host, "0.0.0.0");
    cr_expect_eq(C.listen_port, 8080);
    cr_expect_eq(C.workers, 0);
    cr_expect_str_eq(C.db, "");
    cr_expect_eq(C.flush_ms, 10);
    cr_expect_eq(C.node_id, 1);
    cr_expect_str_eq(C.admin_key, "");
    cr_expect_eq(C.max_connections, 100000);
    cr_expect_eq(C.max_inflight, 10000);
    cr_expect_eq(C.max_users, 10000000);
    cr_expect_eq(C.tenant_cache, 65536);
    cr_expect_eq(C.counter_cache, 1000000);
    cr_expect_eq(C.rate_limit.rate, 20);
    cr_expect_eq(C.rate_limit.burst, 100);
    cr_expect_str_eq(C.cors_origins, "");
    cr_expect_eq(C.durable_timeout_ms, 2000);
    cr_expect_eq(C.header_timeout_ms, 10000);
    cr_expect_eq(C.body_timeout_ms, 30000);
    cr_expect_eq(C.idle_timeout_ms, 60000);
    cr_expect_eq(C.max_line, 8192);
    cr_expect_eq(C.max_head, 16384);
    cr_expect_eq(C.max_fields, 100);
    cr_expect_eq(C.max_body, 65536);
    cr_expect_eq(C.shutdown_timeout_ms, 10000);
    cr_expect_eq(C.ring_entries, 4096);
    cr_expect_eq(C.buf_count, 2048); /* 2048 x 4 KiB = 8 MiB of receive buffers per worker */
    cr_expect_eq(C.buf_size, 4096);
    cr_expect_eq(C.log_level, LOG_INFO);
    cr_expect_eq(ERR[0], '\0');
}

Test(config, table_is_consistent)
{
    for (size_t i = 0; i < cfg_nopts; i++) {
        const struct cfg_opt *o = &cfg_opts[i];
        cr_assert(o->env && o->help && o->def && o->meta, "entry %zu incomplete", i);
        if (o->name) {
            /* env == RINGCOUNT_<NAME upper, '-' → '_'> */
            char want[128] = "RINGCOUNT_";
            size_t k = strlen(want);
            for (const char *p = o->name; *p; p++)
                want[k++] = *p == '-' ? '_' : (char)toupper((unsigned char)*p);
            want[k] = '\0';
            cr_expect_str_eq(o->env, want);
        }
        if (o->type == CFG_UINT32) {
            cr_expect_eq(o->cap, sizeof(uint32_t), "%s", o->env);
            cr_expect(o->max <= UINT32_MAX, "%s", o->env);
        }
        if (o->type == CFG_UINT64)
            cr_expect_eq(o->cap, sizeof(uint64_t), "%s", o->env);
        if (o->type == CFG_UINT32 || o->type == CFG_UINT64)
            cr_expect(o->min <= o->max, "%s", o->env);
        cr_expect(o->off + o->cap <= sizeof(struct config), "%s", o->env);
        for (size_t j = 0; j < i; j++) {
            cr_expect(strcmp(o->env, cfg_opts[j].env) != 0, "duplicate %s", o->env);
            cr_expect(!o->name || !cfg_opts[j].name || strcmp(o->name, cfg_opts[j].name) != 0,
                      "duplicate --%s", o->name);
        }
    }
}

static uint64_t field_u64(const struct cfg_opt *o)
{
    if (o->type == CFG_UINT32) {
        uint32_t v;
        memcpy(&v, (char *)&C + o->off, sizeof(v));
        return v;
    }
    uint64_t v;
    memcpy(&v, (char *)&C + o->off, sizeof(v));
    return v;
}

/* Every numeric setting: min-1, min, max, max+1, both as a flag and from the environment. */
Test(config, every_numeric_bound)
{
    size_t checked = 0;

    for (size_t i = 0; i < cfg_nopts; i++) {
        const struct cfg_opt *o = &cfg_opts[i];
        if (o->type != CFG_UINT32 && o->type != CFG_UINT64)
            continue;
        struct { uint64_t v; bool ok; } cases[4];
        size_t nc = 0;
        if (o->min > 0)
            cases[nc].v = o->min - 1, cases[nc++].ok = false;
        cases[nc].v = o->min, cases[nc++].ok = true;
        cases[nc].v = o->max, cases[nc++].ok = true;
        cases[nc].v = o->max + 1, cases[nc++].ok = false;

        for (size_t k = 0; k < nc; k++) {
            char arg[128], env[128];
            int rc;
            snprintf(arg, sizeof(arg), "--%s=%llu", o->name ? o->name : "",
                     (unsigned long long)cases[k].v);
            if (!o->name) { /* environment only (a hidden test hook): the env case below */
            } else if (cases[k].ok) {
                rc = load(NULL, V(arg));
                cr_expect_eq(rc, 0, "%s: %s", arg, ERR);
                cr_expect_eq(field_u64(o), cases[k].v, "%s", arg);
            } else {
                rc = load(NULL, V(arg));
                expect_one_error_line(rc);
                char range[64];
                snprintf(range, sizeof(range), "%llu..%llu", (unsigned long long)o->min,
                         (unsigned long long)o->max);
                char flag[64];
                snprintf(flag, sizeof(flag), "--%s", o->name);
                cr_expect(strstr(ERR, flag) && strstr(ERR, range), "%s → [%s]", arg, ERR);
            }
            snprintf(env, sizeof(env), "%s=%llu", o->env, (unsigned long long)cases[k].v);
            rc = load(V(env), NULL);
            cr_expect_eq(rc, cases[k].ok ? 0 : -EINVAL, "%s: %s", env, ERR);
            if (cases[k].ok)
                cr_expect_eq(field_u64(o), cases[k].v, "%s", env);
            else
                cr_expect(strstr(ERR, o->env), "%s → [%s]", env, ERR);
            checked++;
        }
    }
    cr_expect(checked >= 70, "only %zu bound cases", checked);
}

Test(config, power_of_two_settings_refuse_other_values)
{
    cr_expect_eq(load(NULL, V("--ring-entries=96")), -EINVAL);
    cr_expect(strstr(ERR, "power of two"), "%s", ERR);
    cr_expect_eq(load(NULL, V("--ring-entries=128", "--buf-count=1")), 0, "%s", ERR);
    cr_expect_eq(C.ring_entries, 128);
    cr_expect_eq(C.buf_count, 1);
    cr_expect_eq(load(NULL, V("--buf-count=3")), -EINVAL);
    cr_expect_eq(load(NULL, V("--buf-size=1000")), 0, "buf-size needs no power of two");
}

Test(config, number_syntax_is_strict)
{
    static const char *bad[] = { "", "+5", "-1", " 5", "5 ", "0x10", "5k", "1e3", "4.0",
                                 "99999999999999999999999", "18446744073709551616" };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char arg[64];
        snprintf(arg, sizeof(arg), "--workers=%s", bad[i]);
        expect_one_error_line(load(NULL, V(arg)));
        cr_expect(strstr(ERR, "--workers") && strstr(ERR, "0..1024"), "[%s] → %s", bad[i], ERR);
    }
    cr_expect_eq(load(NULL, V("--workers=007")), 0);
    cr_expect_eq(C.workers, 7);
}

Test(config, environment_and_flag_precedence)
{
    char *env[] = { "PATH=/bin", "RINGCOUNT_WORKERS=4", "RINGCOUNT_FLUSH_MS=50",
                    "RINGCOUNT_LISTEN=127.0.0.1:9000", "RINGCOUNT_LOG_LEVEL=debug",
                    "RINGCOUNT_MAX_USERS=123", "RINGCOUNT_CORS_ORIGINS=*",
                    "RINGCOUNT_WORKERSX=9", NULL };
    cr_assert_eq(load(env, NULL), 0, "%s", ERR);
    cr_expect_eq(C.workers, 4);
    cr_expect_eq(C.flush_ms, 50);
    cr_expect_str_eq(C.listen_host, "127.0.0.1");
    cr_expect_eq(C.listen_port, 9000);
    cr_expect_eq(C.log_level, LOG_DEBUG);
    cr_expect_eq(C.max_users, 123);
    cr_expect_str_eq(C.cors_origins, "*");

    /* Flags win, in both forms; the last of a repeated flag wins. */
    cr_assert_eq(load(env, V("--workers", "2", "--flush-ms=20", "--log-level", "error",
                             "--node-id=5", "--node-id=6")), 0, "%s", ERR);
    cr_expect_eq(C.workers, 2);
    cr_expect_eq(C.flush_ms, 20);
    cr_expect_eq(C.log_level, LOG_ERROR);
    cr_expect_eq(C.node_id, 6);
    cr_expect_eq(C.max_users, 123, "untouched env setting kept");

    /* An empty environment variable counts as unset. */
    cr_assert_eq(load(V("RINGCOUNT_WORKERS=", "RINGCOUNT_LISTEN="), NULL), 0, "%s", ERR);
    cr_expect_eq(C.workers, 0);
    cr_expect_eq(C.listen_port, 8080);

    /* "--x=" passes an empty value (here: invalid for a number). */
    cr_expect_eq(load(NULL, V("--workers=")), -EINVAL);
}

Test(config, database_url_is_a_fallback)
{
    cr_assert_eq(load(V("DATABASE_URL=postgresql://u@h/d"), NULL), 0, "%s", ERR);
    cr_expect_str_eq(C.db, "postgresql://u@h/d");
    cr_assert_eq(load(V("DATABASE_URL=postgresql://u@h/d", "RINGCOUNT_DB=host=x"), NULL), 0);
    cr_expect_str_eq(C.db, "host=x");
    cr_assert_eq(load(V("DATABASE_URL=postgresql://u@h/d", "RINGCOUNT_DB="), NULL), 0);
    cr_expect_str_eq(C.db, "postgresql://u@h/d");
    cr_assert_eq(load(V("DATABASE_URL=postgresql://u@h/d"), V("--db", "dbname=z")), 0);
    cr_expect_str_eq(C.db, "dbname=z");
    cr_assert_eq(load(V("RINGCOUNT_DB=host=x"), V("--db=")), 0, "--db= means memory-only");
    cr_expect_str_eq(C.db, "");
}

Test(config, db_is_checked_and_its_password_never_printed)
{
    expect_one_error_line(load(NULL, V("--db", "host=x password=hunter2 bogus=1")));
    cr_expect(strstr(ERR, "--db") && strstr(ERR, "bogus"), "%s", ERR);
    cr_expect(strstr(ERR, "hunter2") == NULL, "leaked: %s", ERR);
    expect_one_error_line(load(V("DATABASE_URL=postgresql://u:hunter2@h/d?bogus=1"), NULL));
    cr_expect(strstr(ERR, "DATABASE_URL"), "%s", ERR);
    cr_expect(strstr(ERR, "hunter2") == NULL, "leaked: %s", ERR);
}

struct str_case {
    const char *in;
    int rc;
    const char *host; /* expected */
    unsigned a, b;    /* port, or rate/burst */
};

Test(config, listen_forms)
{
    static const struct str_case cases[] = {
        { "127.0.0.1:0", 0, "127.0.0.1", 0, 0 },
        { "0.0.0.0:65535", 0, "0.0.0.0", 65535, 0 },
        { "[::1]:8080", 0, "::1", 8080, 0 },
        { "[::]:1", 0, "::", 1, 0 },
        { ":8080", 0, "0.0.0.0", 8080, 0 }, /* documented: empty host = all IPv4 interfaces */
        { "1.2.3.4:70000", -EINVAL, NULL, 0, 0 },
        { "1.2.3.4:65536", -EINVAL, NULL, 0, 0 },
        { "1.2.3.4", -EINVAL, NULL, 0, 0 },
        { "1.2.3.4:", -EINVAL, NULL, 0, 0 },
        { "1.2.3.4:-1", -EINVAL, NULL, 0, 0 },
        { "1.2.3.4:80x", -EINVAL, NULL, 0, 0 },
        { "::1:8080", -EINVAL, NULL, 0, 0 },
        { "[::1]8080", -EINVAL, NULL, 0, 0 },
        { "[::1:8080", -EINVAL, NULL, 0, 0 },
        { "[]:8080", -EINVAL, NULL, 0, 0 },
        { "[1.2.3.4]:80", -EINVAL, NULL, 0, 0 },
        { "localhost:80", -EINVAL, NULL, 0, 0 },
        { "256.1.1.1:80", -EINVAL, NULL, 0, 0 },
        { "", -EINVAL, NULL, 0, 0 },
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char arg[128];
        snprintf(arg, sizeof(arg), "--listen=%s", cases[i].in);
        int rc = load(NULL, V(arg));
        cr_expect_eq(rc, cases[i].rc, "%s: %s", arg, ERR);
        if (cases[i].rc == 0 && rc == 0) {
            cr_expect_str_eq(C.listen_host, cases[i].host, "%s", arg);
            cr_expect_eq(C.listen_port, cases[i].a, "%s", arg);
        } else if (rc != 0) {
            cr_expect(strstr(ERR, "--listen") && strstr(ERR, "ADDR:PORT"), "%s", ERR);
        }
    }
    char buf[80];
    cr_assert_eq(load(NULL, V("--listen=[::1]:8080")), 0);
    cr_expect_eq(cfg_listen_str(&C, buf, sizeof(buf)), 10);
    cr_expect_str_eq(buf, "[::1]:8080");
    cr_expect_eq(cfg_listen_str(&C, buf, 10), -ENOSPC);
}

Test(config, rate_limit_forms)
{
    static const struct str_case cases[] = {
        { "0", 0, NULL, 0, 0 },          { "20", 0, NULL, 20, 100 },
        { "20/100", 0, NULL, 20, 100 },  { "5/1", 0, NULL, 5, 1 },
        { "0/50", 0, NULL, 0, 0 },       { "1000000", 0, NULL, 1000000, 5000000 },
        { "1/5000000", 0, NULL, 1, 5000000 },
        { "5/0", -EINVAL, NULL, 0, 0 },  { "x", -EINVAL, NULL, 0, 0 },
        { "", -EINVAL, NULL, 0, 0 },     { "20/", -EINVAL, NULL, 0, 0 },
        { "/20", -EINVAL, NULL, 0, 0 },  { "-1", -EINVAL, NULL, 0, 0 },
        { "20/100/5", -EINVAL, NULL, 0, 0 }, { "1000001", -EINVAL, NULL, 0, 0 },
        { "1/5000001", -EINVAL, NULL, 0, 0 }, { "99999999999999999999999", -EINVAL, NULL, 0, 0 },
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char arg[128];
        snprintf(arg, sizeof(arg), "--rate-limit=%s", cases[i].in);
        int rc = load(NULL, V(arg));
        cr_expect_eq(rc, cases[i].rc, "%s: %s", arg, ERR);
        if (cases[i].rc == 0 && rc == 0) {
            cr_expect_eq(C.rate_limit.rate, cases[i].a, "%s", arg);
            cr_expect_eq(C.rate_limit.burst, cases[i].b, "%s", arg);
        } else if (rc != 0) {
            cr_expect(strstr(ERR, "--rate-limit") && strstr(ERR, "R[/BURST]"), "%s", ERR);
        }
    }
}

Test(config, cors_origins_forms)
{
    static const struct { const char *in; int rc; } cases[] = {
        { "", 0 }, { "*", 0 }, { "https://a.example", 0 },
        { "https://a.example,http://b.example:8080,http://[::1]:3000", 0 },
        { "https://a.example/", -EINVAL }, { "a.example", -EINVAL },
        { "https://a.example, https://b.example", -EINVAL }, { "https://a,,https://b", -EINVAL },
        { "*,https://a", -EINVAL }, { "https://", -EINVAL }, { "https://a\"b", -EINVAL },
        { "ftp://a", -EINVAL }, { "https://a,", -EINVAL },
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int rc = load(V("RINGCOUNT_CORS_ORIGINS=https://env.example"),
                      V("--cors-origins", (char *)cases[i].in));
        /* the flag overrides the environment; "" in the two-word form is an empty value */
        cr_expect_eq(rc, cases[i].rc, "[%s]: %s", cases[i].in, ERR);
        if (rc == 0)
            cr_expect_str_eq(C.cors_origins, cases[i].in);
        else
            cr_expect(strstr(ERR, "--cors-origins"), "%s", ERR);
    }
}

Test(config, log_level_forms)
{
    static const char *names[] = { "debug", "info", "warn", "error" };
    for (int i = 0; i < 4; i++) {
        char arg[64];
        snprintf(arg, sizeof(arg), "--log-level=%s", names[i]);
        cr_expect_eq(load(NULL, V(arg)), 0);
        cr_expect_eq(C.log_level, i);
    }
    expect_one_error_line(load(NULL, V("--log-level=verbose")));
    cr_expect(strstr(ERR, "debug|info|warn|error"), "%s", ERR);
}

static char *write_tmp(const char *content, size_t n)
{
    static char path[64];
    strcpy(path, "/tmp/rc-test-key-XXXXXX");
    int fd = mkstemp(path);
    cr_assert(fd >= 0);
    cr_assert_eq(write(fd, content, n), (ssize_t)n);
    close(fd);
    return path;
}

Test(config, admin_key_file)
{
    char arg[128];
    char *p = write_tmp("s3cret-Key_1\n", 13);

    snprintf(arg, sizeof(arg), "--admin-key-file=%s", p);
    cr_assert_eq(load(NULL, V(arg)), 0, "%s", ERR);
    cr_expect_str_eq(C.admin_key, "s3cret-Key_1");
    unlink(p);

    p = write_tmp("k\r\n\n", 4);
    cr_assert_eq(load(NULL, V("--admin-key-file", p)), 0, "%s", ERR);
    cr_expect_str_eq(C.admin_key, "k");
    unlink(p);

    /* No trailing newline; a 255-byte key fits; 256 does not. */
    char key[300];
    memset(key, 'K', sizeof(key));
    p = write_tmp(key, 255);
    cr_assert_eq(load(NULL, V("--admin-key-file", p)), 0, "%s", ERR);
    cr_expect_eq(strlen(C.admin_key), 255);
    unlink(p);
    p = write_tmp(key, 256);
    expect_one_error_line(load(NULL, V("--admin-key-file", p)));
    cr_expect(strstr(ERR, "KKKK") == NULL, "key printed: %s", ERR);
    unlink(p);

    /* Empty, newline only, spaces inside: refused, and the path is named. */
    static const struct { const char *c; const char *why; } bad[] = {
        { "", "empty" }, { "\n", "empty" }, { "two words\n", "visible ASCII" },
        { "tab\there", "visible ASCII" }, { "\xc3\xa9t\xc3\xa9", "visible ASCII" },
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        p = write_tmp(bad[i].c, strlen(bad[i].c));
        expect_one_error_line(load(NULL, V("--admin-key-file", p)));
        cr_expect(strstr(ERR, "--admin-key-file") && strstr(ERR, p) && strstr(ERR, bad[i].why),
                  "case %zu: %s", i, ERR);
        unlink(p);
    }

    /* Unreadable: names the path and the errno text. */
    expect_one_error_line(load(NULL, V("--admin-key-file=/nonexistent/rc-key")));
    cr_expect(strstr(ERR, "/nonexistent/rc-key") && strstr(ERR, strerror(ENOENT)), "%s", ERR);
    expect_one_error_line(load(NULL, V("--admin-key-file=/tmp")));
    cr_expect(strstr(ERR, strerror(EISDIR)), "%s", ERR);
}

Test(config, admin_key_from_environment)
{
    cr_assert_eq(load(V("RINGCOUNT_ADMIN_KEY=envkey"), NULL), 0, "%s", ERR);
    cr_expect_str_eq(C.admin_key, "envkey");

    /* The file wins over the plain variable, from the environment and from the flag. */
    char *p = write_tmp("filekey\n", 8);
    char envf[128];
    snprintf(envf, sizeof(envf), "RINGCOUNT_ADMIN_KEY_FILE=%s", p);
    cr_assert_eq(load(V("RINGCOUNT_ADMIN_KEY=envkey", envf), NULL), 0, "%s", ERR);
    cr_expect_str_eq(C.admin_key, "filekey");
    cr_assert_eq(load(V("RINGCOUNT_ADMIN_KEY=envkey"), V("--admin-key-file", p)), 0);
    cr_expect_str_eq(C.admin_key, "filekey");
    unlink(p);

    /* A bad key from the environment is refused without printing it. */
    expect_one_error_line(load(V("RINGCOUNT_ADMIN_KEY=bad key hunter2"), NULL));
    cr_expect(strstr(ERR, "RINGCOUNT_ADMIN_KEY") && strstr(ERR, "(hidden)"), "%s", ERR);
    cr_expect(strstr(ERR, "hunter2") == NULL, "leaked: %s", ERR);

    /* There is deliberately no --admin-key flag (it would show in ps). */
    expect_one_error_line(load(NULL, V("--admin-key=x")));
}

Test(config, bad_arguments)
{
    expect_one_error_line(load(NULL, V("--bogus=1")));
    cr_expect(strstr(ERR, "--bogus") && strstr(ERR, "see --help"), "%s", ERR);
    expect_one_error_line(load(NULL, V("--bogus")));
    cr_expect(strstr(ERR, "--bogus"), "%s", ERR);
    expect_one_error_line(load(NULL, V("extra")));
    cr_expect(strstr(ERR, "extra") && strstr(ERR, "see --help"), "%s", ERR);
    expect_one_error_line(load(NULL, V("-w", "4")));
    expect_one_error_line(load(NULL, V("--")));
    /* Missing value: at the end, or followed by another flag. */
    expect_one_error_line(load(NULL, V("--workers")));
    cr_expect(strstr(ERR, "--workers") && strstr(ERR, "needs a value"), "%s", ERR);
    expect_one_error_line(load(NULL, V("--db", "--workers", "4")));
    cr_expect(strstr(ERR, "--db") && strstr(ERR, "needs a value"), "%s", ERR);
    /* The error names the bad value. */
    expect_one_error_line(load(NULL, V("--flush-ms", "abc")));
    cr_expect(strstr(ERR, "--flush-ms") && strstr(ERR, "\"abc\"") && strstr(ERR, "1..60000"),
              "%s", ERR);
    /* Non-printable bytes in a bad value are shown escaped, never raw. */
    expect_one_error_line(load(NULL, V("--flush-ms", "1\n2")));
    cr_expect(strstr(ERR, "\\x0a"), "%s", ERR);
    /* A bad environment value names the variable. */
    expect_one_error_line(load(V("RINGCOUNT_NODE_ID=0"), NULL));
    cr_expect(strstr(ERR, "RINGCOUNT_NODE_ID") && strstr(ERR, "1..65535"), "%s", ERR);
}

Test(config, help_lists_every_setting)
{
    cr_assert_eq(load(NULL, V("--help")), 1);
    cr_expect_eq(ERR[0], '\0');
    cr_expect(strncmp(OUT, "Usage: ringcount", 16) == 0, "%s", OUT);
    for (size_t i = 0; i < cfg_nopts; i++) {
        const struct cfg_opt *o = &cfg_opts[i];
        char flag[80];
        if (o->flags & CFG_F_HIDDEN) { /* a test hook: validated, never advertised */
            cr_expect(!o->name && !strstr(OUT, o->env), "%s is listed", o->env);
            continue;
        }
        if (o->name) {
            snprintf(flag, sizeof(flag), "--%s ", o->name);
            cr_expect(strstr(OUT, flag), "missing %s", flag);
        }
        /* the env var and the default are on the setting's own line */
        const char *line = strstr(OUT, o->env);
        cr_assert(line, "missing %s", o->env);
        const char *eol = strchr(line, '\n');
        const char *def = o->def[0] ? o->def : "(none)";
        const char *d = strstr(line, def);
        cr_expect(d && d < eol, "default of %s not on its line", o->env);
        cr_expect(strstr(line, o->help) && strstr(line, o->help) < eol, "%s help", o->env);
        if (o->env_alt)
            cr_expect(strstr(OUT, o->env_alt), "missing %s", o->env_alt);
    }
    cr_expect(strstr(OUT, "1..65535"), "bounds are shown");

    /* -h, and help wins over a broken environment and over bad flags. */
    cr_expect_eq(load(V("RINGCOUNT_WORKERS=lots"), V("--workers=x", "-h")), 1);
    cr_expect(strstr(OUT, "--listen"));
    cr_expect_eq(ERR[0], '\0');

    cr_expect_eq(load(NULL, V("--version")), 1);
    cr_expect(strncmp(OUT, "ringcount ", 10) == 0, "%s", OUT);
}

Test(config, dump_is_json_with_secrets_masked)
{
    char buf[CFG_DUMP_MAX];
    char *p = write_tmp("topsecretkey\n", 13);
    char envf[128];
    snprintf(envf, sizeof(envf), "RINGCOUNT_ADMIN_KEY_FILE=%s", p);

    cr_assert_eq(load(V(envf, "RINGCOUNT_DB=host=h password=hunter2 dbname=d"),
                      V("--listen=[::1]:8080", "--cors-origins=https://a.example")), 0, "%s", ERR);
    unlink(p);
    int n = cfg_dump(&C, buf, sizeof(buf));
    cr_assert(n > 0);
    cr_expect_eq((size_t)n, strlen(buf));
    cr_expect(buf[0] == '{' && buf[n - 1] == '}', "%s", buf);
    cr_expect(strstr(buf, "topsecretkey") == NULL, "key leaked: %s", buf);
    cr_expect(strstr(buf, "hunter2") == NULL, "password leaked: %s", buf);
    cr_expect(strstr(buf, "\"admin_key\":\"(set)\""), "%s", buf);
    cr_expect(strstr(buf, "\"db\":\"host=h password=*** dbname=d\""), "%s", buf);
    cr_expect(strstr(buf, "\"listen\":\"[::1]:8080\""), "%s", buf);
    cr_expect(strstr(buf, "{\"listen\":\"[::1]:8080\",\"workers\":0,"), "%s", buf);
    cr_expect(strstr(buf, "\"rate_limit\":\"20/100\""), "%s", buf);
    cr_expect(strstr(buf, "\"max_users\":10000000,"), "%s", buf);
    cr_expect(strstr(buf, "\"cors_origins\":\"https://a.example\""), "%s", buf);
    cr_expect(strstr(buf, "\"log_level\":\"info\",\"config_file\":\"\"}"), "%s", buf);
    /* every flag appears as a key */
    for (size_t i = 0; i < cfg_nopts; i++) {
        const struct cfg_opt *o = &cfg_opts[i];
        if (!o->name || o->type == CFG_FILE)
            continue;
        char key[80];
        size_t k = 1;
        key[0] = '"';
        for (const char *q = o->name; *q; q++)
            key[k++] = *q == '-' ? '_' : *q;
        strcpy(key + k, "\":");
        cr_expect(strstr(buf, key), "missing %s in %s", key, buf);
    }

    cr_expect_eq(cfg_dump(&C, buf, (size_t)n), -ENOSPC);
    cr_expect_eq(cfg_dump(&C, buf, (size_t)n + 1), n);

    cr_assert_eq(load(V("RINGCOUNT_RATE_LIMIT=0"), NULL), 0);
    cr_expect_eq(cfg_dump(&C, buf, sizeof(buf)) > 0, 1);
    cr_expect(strstr(buf, "\"admin_key\":\"(unset)\""), "%s", buf);
    cr_expect(strstr(buf, "\"rate_limit\":\"0\""), "%s", buf);
    cr_expect(strstr(buf, "\"db\":\"\""), "%s", buf);
}

Test(config, mask_conninfo)
{
    static const struct { const char *in, *want; } cases[] = {
        { "", "" },
        { "host=db user=app password=s3cret dbname=x", "host=db user=app password=*** dbname=x" },
        { "password = 's3 cr\\'et' host=h", "password = *** host=h" },
        { "sslpassword=s3cret", "sslpassword=***" },
        { "passfile=/p host=h", "passfile=/p host=h" },
        { "password=s3\\ cret host=h", "password=*** host=h" },
        { "host=h password", "host=h ***" },                 /* garbled: hide the rest */
        { "host=h password='s3cret", "host=h ***" },         /* unterminated quote */
        { "postgresql://app:s3cret@db:5432/x?sslmode=require",
          "postgresql://app:***@db:5432/x?sslmode=require" },
        { "postgres://app@db/x", "postgres://app@db/x" },
        { "postgresql://db/x?user=a&password=s3cret&sslmode=disable",
          "postgresql://db/x?user=a&password=***&sslmode=disable" },
        { "postgresql://a:s3cret@h/d?sslpassword=s3cret", "postgresql://a:***@h/d?sslpassword=***" },
        { "postgresql://h/d?password=s3cret", "postgresql://h/d?password=***" },
        { "postgresql:///d", "postgresql:///d" },
    };
    char out[256];
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int n = conninfo_mask(cases[i].in, out, sizeof(out));
        cr_expect_eq(n, (int)strlen(cases[i].want), "case %zu", i);
        cr_expect_str_eq(out, cases[i].want, "case %zu", i);
        cr_expect(strstr(out, "s3") == NULL);
    }
    cr_expect_eq(conninfo_mask("host=abc", out, 8), -ENOSPC);
    cr_expect_eq(conninfo_mask("host=abc", out, 9), 8);
}

/* ---------------------------------------------------------------- --config-file (SPEC §5) */

Test(config, config_file_between_environment_and_flags)
{
    static const char body[] =
        "# live settings\n"
        "\n"
        "   RINGCOUNT_RATE_LIMIT = 7/9  \n"
        "RINGCOUNT_CORS_ORIGINS=https://a.example,https://b.example\n"
        "RINGCOUNT_LOG_LEVEL=warn\n"
        "\t# indented comment\n"
        "RINGCOUNT_FLUSH_MS=\n" /* empty: unset, the environment's value stays */
        "RINGCOUNT_WORKERS=3";   /* no final newline */
    char *p = write_tmp(body, sizeof(body) - 1);
    char path[64], env_cf[128];
    strcpy(path, p);
    snprintf(env_cf, sizeof(env_cf), "RINGCOUNT_CONFIG_FILE=%s", path);

    /* the file's values win over the environment ... */
    cr_assert_eq(load(V(env_cf, "RINGCOUNT_RATE_LIMIT=1/1", "RINGCOUNT_FLUSH_MS=50",
                        "RINGCOUNT_WORKERS=8"), NULL), 0, "%s", ERR);
    cr_expect_eq(C.rate_limit.rate, 7);
    cr_expect_eq(C.rate_limit.burst, 9);
    cr_expect_str_eq(C.cors_origins, "https://a.example,https://b.example");
    cr_expect_eq(C.log_level, LOG_WARN);
    cr_expect_eq(C.flush_ms, 50);
    cr_expect_eq(C.workers, 3);
    cr_expect_str_eq(C.config_file, path);
    /* ... and flags win over the file, in either order on the command line */
    cr_assert_eq(load(NULL, V("--rate-limit=2/4", "--config-file", path, "--workers=1")), 0, "%s",
                 ERR);
    cr_expect_eq(C.rate_limit.rate, 2);
    cr_expect_eq(C.workers, 1);
    cr_expect_eq(C.log_level, LOG_WARN, "from the file");
    unlink(path);
}

Test(config, config_file_errors_name_the_line)
{
    struct { const char *body; const char *want; } cases[] = {
        {"RINGCOUNT_LOG_LEVEL=info\nRINGCOUNT_RATE_LIMIT=fast\n", ":2)"},
        {"RINGCOUNT_RATE_LIMT=1/1\n", "unknown setting \"RINGCOUNT_RATE_LIMT\""},
        {"rate-limit 1/1\n", ":1: expected RINGCOUNT_NAME=VALUE"},
        {"RINGCOUNT_CONFIG_FILE=/etc/other\n", "cannot name another one"},
        {"RINGCOUNT_MAX_USERS=0\n", "RINGCOUNT_MAX_USERS"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *p = write_tmp(cases[i].body, strlen(cases[i].body));
        char path[64], flag[128];
        strcpy(path, p);
        snprintf(flag, sizeof(flag), "--config-file=%s", path);
        expect_one_error_line(load(NULL, V(flag)));
        cr_expect(strstr(ERR, cases[i].want), "case %zu: %s", i, ERR);
        unlink(path);
    }
    expect_one_error_line(load(NULL, V("--config-file=/nonexistent/ringcount.conf")));
    cr_expect(strstr(ERR, "cannot read --config-file \"/nonexistent/ringcount.conf\""), "%s", ERR);
    /* a secret in the file is never echoed */
    char *p = write_tmp("RINGCOUNT_ADMIN_KEY=bad key with spaces\n", 40);
    char path[64], flag[128];
    strcpy(path, p);
    snprintf(flag, sizeof(flag), "--config-file=%s", path);
    expect_one_error_line(load(NULL, V(flag)));
    cr_expect_null(strstr(ERR, "bad key"), "%s", ERR);
    unlink(path);
}

Test(config, same_copy_and_value_text)
{
    static struct config a, b;
    cr_assert_eq(load(NULL, V("--rate-limit=5/10", "--cors-origins=*", "--listen=[::1]:81")), 0);
    a = C;
    cr_assert_eq(load(V("RINGCOUNT_ADMIN_KEY=k3y"),
                      V("--rate-limit=5/11", "--cors-origins=*", "--listen=[::1]:82",
                        "--db=host=h password=pw")), 0, "%s", ERR);
    b = C;
    char v[256], lb[64];
    for (size_t i = 0; i < cfg_nopts; i++) {
        const struct cfg_opt *o = &cfg_opts[i];
        bool differ = o->off == offsetof(struct config, rate_limit) ||
                      o->off == offsetof(struct config, listen_host) ||
                      o->off == offsetof(struct config, admin_key) ||
                      o->off == offsetof(struct config, db);
        cr_expect_eq(cfg_same(o, &a, &b), !differ, "%s", cfg_opt_label(o, lb, sizeof(lb)));
        cr_expect(cfg_same(o, &a, &a));
    }
    const struct cfg_opt *rate = NULL, *listen = NULL, *key = NULL, *db = NULL, *ll = NULL;
    for (size_t i = 0; i < cfg_nopts; i++) {
        const struct cfg_opt *o = &cfg_opts[i];
        if (o->off == offsetof(struct config, rate_limit)) rate = o;
        if (o->off == offsetof(struct config, listen_host)) listen = o;
        if (o->off == offsetof(struct config, admin_key) && !o->name) key = o;
        if (o->off == offsetof(struct config, db)) db = o;
        if (o->off == offsetof(struct config, log_level)) ll = o;
    }
    cr_assert(rate && listen && key && db && ll);
    cr_expect_gt(cfg_value_str(rate, &b, v, sizeof(v)), 0);
    cr_expect_str_eq(v, "5/11");
    cr_expect_gt(cfg_value_str(listen, &b, v, sizeof(v)), 0);
    cr_expect_str_eq(v, "[::1]:82");
    cr_expect_gt(cfg_value_str(key, &b, v, sizeof(v)), 0);
    cr_expect_str_eq(v, "(set)", "the key itself is never shown");
    cr_expect_gt(cfg_value_str(key, &a, v, sizeof(v)), 0);
    cr_expect_str_eq(v, "(unset)");
    cr_expect_gt(cfg_value_str(db, &b, v, sizeof(v)), 0);
    cr_expect_null(strstr(v, "pw"), "%s", v);
    cr_expect_gt(cfg_value_str(ll, &b, v, sizeof(v)), 0);
    cr_expect_str_eq(v, "info");
    cr_expect_eq(cfg_value_str(rate, &b, v, 3), -ENOSPC);
    cr_expect_str_eq(cfg_opt_label(rate, lb, sizeof(lb)), "--rate-limit");
    cr_expect_str_eq(cfg_opt_label(key, lb, sizeof(lb)), "RINGCOUNT_ADMIN_KEY");
    /* copy: only that field moves (the listen address: host and port) */
    cfg_copy(rate, &a, &b);
    cfg_copy(listen, &a, &b);
    cr_expect(cfg_same(rate, &a, &b));
    cr_expect(cfg_same(listen, &a, &b));
    cr_expect_eq(a.listen_port, 82);
    cr_expect(!cfg_same(key, &a, &b));
    cfg_copy(key, &a, &b);
    cr_expect_str_eq(a.admin_key, "k3y");
    cr_expect(!cfg_same(db, &a, &b));
}

/* The test hooks are settings like the others: parsed from the environment and validated. */
Test(config, hidden_test_hooks_are_validated)
{
    cr_assert_eq(load(V("RINGCOUNT_DEBUG_RL_CAPACITY=16"), NULL), 0, "%s", ERR);
    cr_expect_eq(C.debug_rl_capacity, 16);
    cr_expect_eq(C.debug_lose_commit_ms, 0);
    cr_expect_neq(load(V("RINGCOUNT_DEBUG_RL_CAPACITY=lots"), NULL), 0);
    cr_expect(strstr(ERR, "RINGCOUNT_DEBUG_RL_CAPACITY"), "%s", ERR);
    cr_expect_neq(load(V("RINGCOUNT_DEBUG_LOSE_COMMIT_MS=600001"), NULL), 0);
}

/* SPEC §2.3 store bounds: flag and environment, bounds 1..2^24 and 1..2^26 (tn_new's). */
Test(config, tenant_and_counter_cache_bounds)
{
    cr_assert_eq(load(V("RINGCOUNT_TENANT_CACHE=7"), V("--counter-cache", "3")), 0, "%s", ERR);
    cr_expect_eq(C.tenant_cache, 7);
    cr_expect_eq(C.counter_cache, 3);
    cr_assert_eq(load(NULL, V("--tenant-cache=16777216", "--counter-cache=67108864")), 0, "%s",
                 ERR);
    cr_expect_eq(C.tenant_cache, 16777216);
    cr_expect_eq(C.counter_cache, 67108864);
    static const char *const bad[][2] = {
        {"--tenant-cache=0", "--tenant-cache"},
        {"--tenant-cache=16777217", "16777216"},
        {"--counter-cache=0", "--counter-cache"},
        {"--counter-cache=67108865", "67108864"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        expect_one_error_line(load(NULL, V((char *)bad[i][0])));
        cr_expect(strstr(ERR, bad[i][1]), "%s: %s", bad[i][0], ERR);
    }
}
