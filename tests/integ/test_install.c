/* Integration test of `make install` (SPEC §5): into a DESTDIR with PREFIX=/usr, the way a
   package build does it. The installed unit runs the installed binary (ExecStart follows
   PREFIX; before, it always said /usr/local/bin and `systemd-analyze verify` found it not
   executable), passes `systemd-analyze verify`, reloads with SIGHUP and has a state directory
   for the spill files; the environment file is 0600 and lists every setting of --help; the
   live-settings file, the Prometheus config, alert rules, Grafana dashboard and bootstrap SQL
   are installed; the installed configuration starts a server that reloads cleanly; a second
   install keeps the operator's edited files.

   The test runs `make install-files` (what `make install` runs after building) on the build
   under test, so it never rebuilds it. Steps needing systemd-analyze or promtool skip those
   checks with a "[SKIP]" line when the tool is absent, counted by tools/run-tests.sh like a
   skipped test (tools/deps.sh installs both). */
#include <criterion/criterion.h>
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"

TestSuite(install, .timeout = 60);

static int sh(const char *cmd, char *out, size_t cap)
{
    char full[8192];
    snprintf(full, sizeof(full), "( %s ) 2>&1", cmd);
    FILE *f = popen(full, "r");
    if (!f)
        return -1;
    size_t n = fread(out, 1, cap - 1, f);
    out[n] = 0;
    int st = pclose(f);
    return st < 0 ? -1 : WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

static bool have(const char *tool)
{
    char cmd[256], out[256];
    snprintf(cmd, sizeof(cmd), "command -v %s", tool);
    return sh(cmd, out, sizeof(out)) == 0;
}

static void read_all(const char *path, char *out, size_t cap)
{
    FILE *f = fopen(path, "r");
    cr_assert_not_null(f, "%s: %s", path, strerror(errno));
    size_t n = fread(out, 1, cap - 1, f);
    out[n] = 0;
    fclose(f);
}

static unsigned mode_of(const char *path)
{
    struct stat st;
    cr_assert_eq(stat(path, &st), 0, "%s missing: %s", path, strerror(errno));
    return st.st_mode & 07777;
}

/* The value of the first "Key=" line of a unit, into out ("" if absent). */
static void unit_value(const char *unit, const char *key, char *out, size_t cap)
{
    char pat[64];
    snprintf(pat, sizeof(pat), "\n%s=", key);
    const char *p = strstr(unit, pat);
    out[0] = 0;
    if (!p)
        return;
    p += strlen(pat);
    size_t n = strcspn(p, "\n");
    snprintf(out, cap, "%.*s", (int)n, p);
}

static char dest[64];
static char build_dir[PATH_MAX];

/* `make install-files` of the build under test into a fresh DESTDIR, PREFIX=/usr. */
static void install_into_destdir(void)
{
    const char *bin = getenv("RINGCOUNT_BIN");
    snprintf(build_dir, sizeof(build_dir), "%s", bin && bin[0] ? bin : "build/ringcount");
    char *sl = strrchr(build_dir, '/');
    cr_assert_not_null(sl, "RINGCOUNT_BIN %s has no directory", build_dir);
    *sl = 0;
    strcpy(dest, "/tmp/rc-install-XXXXXX");
    cr_assert_not_null(mkdtemp(dest));
    static char cmd[PATH_MAX + 256], out[16384];
    snprintf(cmd, sizeof(cmd), "make --no-print-directory install-files BUILD=%s PREFIX=/usr "
             "DESTDIR=%s", build_dir, dest);
    int rc = sh(cmd, out, sizeof(out));
    cr_assert_eq(rc, 0, "%s failed:\n%s", cmd, out);
}

static void cleanup(void)
{
    char cmd[128], out[256];
    if (dest[0]) {
        snprintf(cmd, sizeof(cmd), "rm -rf %s", dest);
        sh(cmd, out, sizeof(out));
    }
}

static void path_in(char *out, size_t cap, const char *rel)
{
    snprintf(out, cap, "%s%s", dest, rel);
}

Test(install, prefix_usr_into_destdir, .fini = cleanup)
{
    install_into_destdir();
    char p[PATH_MAX], q[PATH_MAX];
    static char unit[32768], envf[32768], help[32768], out[16384], cmd[3 * PATH_MAX];

    /* binaries under PREFIX, and they run */
    static const char *const bins[] = {"/usr/bin/ringcount", "/usr/bin/ringbench",
                                       "/usr/bin/ringcount-tune"};
    for (size_t i = 0; i < 3; i++) {
        path_in(p, sizeof(p), bins[i]);
        cr_expect_eq(mode_of(p), 0755, "%s", p);
    }
    path_in(p, sizeof(p), "/usr/bin/ringcount");
    snprintf(cmd, sizeof(cmd), "%s --version", p);
    cr_expect_eq(sh(cmd, out, sizeof(out)), 0, "%s", out);
    snprintf(cmd, sizeof(cmd), "%s --help", p);
    cr_assert_eq(sh(cmd, help, sizeof(help)), 0, "%s", help);

    /* the unit runs the installed binary and can reload */
    path_in(p, sizeof(p), "/etc/systemd/system/ringcount.service");
    cr_expect_eq(mode_of(p), 0644);
    read_all(p, unit, sizeof(unit));
    char v[512];
    unit_value(unit, "ExecStart", v, sizeof(v));
    cr_expect_str_eq(v, "/usr/bin/ringcount", "ExecStart must follow PREFIX");
    path_in(q, sizeof(q), v);
    cr_expect_eq(access(q, X_OK), 0, "ExecStart %s is not executable in DESTDIR", v);
    cr_expect_null(strstr(unit, "/usr/local"), "PREFIX not substituted everywhere");
    unit_value(unit, "ExecReload", v, sizeof(v));
    cr_expect_str_eq(v, "/bin/kill -HUP $MAINPID");
    /* the spill directory: --spill-dir's default is the unit's state directory, which
       systemd keeps writable under ProtectSystem=strict; nothing may hide it again */
    unit_value(unit, "StateDirectory", v, sizeof(v));
    cr_expect_str_eq(v, "ringcount");
    unit_value(unit, "ProtectSystem", v, sizeof(v));
    cr_expect_str_eq(v, "strict");
    cr_expect_not_null(strstr(help, "RINGCOUNT_SPILL_DIR            /var/lib/ringcount "),
                       "spill-dir default is not /var/lib/ringcount:\n%s", help);
    static const char *const hiding[] = {"\nReadOnlyPaths=", "\nInaccessiblePaths=",
                                         "\nTemporaryFileSystem=", "\nProtectSystem=full",
                                         "\nPrivateMounts=no"};
    for (size_t i = 0; i < sizeof(hiding) / sizeof(hiding[0]); i++)
        cr_expect_null(strstr(unit, hiding[i]), "unit has %s", hiding[i] + 1);
    unit_value(unit, "EnvironmentFile", v, sizeof(v));
    cr_expect_str_eq(v, "-/etc/default/ringcount");

    if (have("systemd-analyze")) {
        /* verify resolves ExecStart on this host: point it into DESTDIR (the path itself was
           checked above) */
        snprintf(cmd, sizeof(cmd),
                 "sed 's|^ExecStart=/usr/bin/|ExecStart=%s/usr/bin/|' %s > %s/verify.service && "
                 "systemd-analyze verify %s/verify.service", dest, p, dest, dest);
        int rc = sh(cmd, out, sizeof(out));
        cr_expect_eq(rc, 0, "systemd-analyze verify failed:\n%s", out);
        cr_expect_str_eq(out, "", "systemd-analyze verify warnings");
    } else {
        /* the line Criterion prints for a skip: tools/run-tests.sh counts it (CI fails on it) */
        fprintf(stderr, "[SKIP] install::prefix_usr_into_destdir: systemd-analyze not "
                        "installed (Debian package systemd): unit not verified\n");
    }

    /* the environment file: 0600 (it may hold the database password) and every setting */
    path_in(p, sizeof(p), "/etc/default/ringcount");
    cr_expect_eq(mode_of(p), 0600, "%s is %o", p, mode_of(p));
    read_all(p, envf, sizeof(envf));
    int listed = 0;
    for (const char *h = strstr(help, "RINGCOUNT_"); h; h = strstr(h + 1, "RINGCOUNT_")) {
        char name[64];
        size_t n = strspn(h, "ABCDEFGHIJKLMNOPQRSTUVWXYZ_0123456789");
        if (n >= sizeof(name) || (h > help && h[-1] != ' '))
            continue;
        if (h[n] == '*')
            continue; /* "RINGCOUNT_*=VALUE" in a help text */
        memcpy(name, h, n);
        name[n] = '=';
        name[n + 1] = 0;
        char line[80], commented[80];
        snprintf(line, sizeof(line), "\n%s", name);
        snprintf(commented, sizeof(commented), "\n#%s", name);
        cr_expect(strstr(envf, line) || strstr(envf, commented),
                  "%s of --help is not in /etc/default/ringcount", name);
        listed++;
    }
    cr_expect_geq(listed, 30, "only %d settings found in --help", listed);
    path_in(p, sizeof(p), "/usr/share/ringcount/ringcount.env");
    cr_expect_eq(mode_of(p), 0600);

    /* the live settings and the operations files under share/ */
    path_in(p, sizeof(p), "/etc/ringcount/ringcount.conf");
    cr_expect_eq(mode_of(p), 0644);
    static const char *const shared[] = {"prometheus.yml", "ringcount-alerts.yml",
                                         "grafana-dashboard.json", "postgres-bootstrap.sql",
                                         "ringcount.conf"};
    for (size_t i = 0; i < sizeof(shared) / sizeof(shared[0]); i++) {
        snprintf(q, sizeof(q), "%s/usr/share/ringcount/%s", dest, shared[i]);
        cr_expect_eq(mode_of(q), 0644, "%s", q);
    }
    path_in(p, sizeof(p), "/etc/sysctl.d/90-ringcount.conf");
    cr_expect_eq(mode_of(p), 0644);
    if (have("promtool")) {
        /* rule_files names the alert rules next to prometheus.yml: both landed together */
        snprintf(cmd, sizeof(cmd), "promtool check config %s/usr/share/ringcount/prometheus.yml",
                 dest);
        cr_expect_eq(sh(cmd, out, sizeof(out)), 0, "%s", out);
    } else {
        fprintf(stderr, "[SKIP] install::prefix_usr_into_destdir: promtool not installed "
                        "(Debian package prometheus): prometheus.yml not checked\n");
    }
}

/* The installed environment file and live settings start a server (with the paths moved into
   DESTDIR and a test port), and a reload of the untouched files changes nothing. */
Test(install, installed_configuration_starts_and_reloads, .fini = cleanup)
{
    install_into_destdir();
    char p[PATH_MAX];
    static char envf[32768];
    path_in(p, sizeof(p), "/etc/default/ringcount");
    read_all(p, envf, sizeof(envf));
    static char entries[64][1200];
    const char *env[66];
    int n = 0;
    for (char *line = strtok(envf, "\n"); line && n < 62; line = strtok(NULL, "\n")) {
        if (line[0] == '#' || !strchr(line, '='))
            continue;
        if (strncmp(line, "RINGCOUNT_CONFIG_FILE=", 22) == 0)
            snprintf(entries[n], sizeof(entries[n]), "RINGCOUNT_CONFIG_FILE=%s%s", dest, line + 22);
        else if (strncmp(line, "RINGCOUNT_SPILL_DIR=", 20) == 0)
            snprintf(entries[n], sizeof(entries[n]), "RINGCOUNT_SPILL_DIR=%s/var/lib/ringcount",
                     dest);
        else
            snprintf(entries[n], sizeof(entries[n]), "%s", line);
        env[n] = entries[n];
        n++;
    }
    env[n] = NULL;
    cr_assert_gt(n, 20, "too few settings in the environment file");
    const char *const args[] = {"--workers", "1", NULL}; /* --listen 127.0.0.1:0 is added */
    struct it_server *srv = it_start(args, env);
    char logs[16384];
    it_log_copy(srv, logs, sizeof(logs));
    char want[300];
    snprintf(want, sizeof(want), "\"config_file\":\"%s/etc/ringcount/ringcount.conf\"", dest);
    cr_expect_not_null(strstr(logs, want), "the conf file is used: %s", logs);
    cr_expect_not_null(strstr(logs, "\"rate_limit\":\"20/100\""), "%s", logs);
    cr_assert_eq(kill(it_pid(srv), SIGHUP), 0);
    cr_expect(it_log_wait(srv, "\"msg\":\"reloaded\",\"changed\":0", 5000));
    it_log_copy(srv, logs, sizeof(logs));
    cr_expect_null(strstr(logs, "cannot change while running"), "%s", logs);
    cr_assert_eq(it_stop(srv), 0);
    it_free(srv);
}

/* Installing again keeps what the operator edited (like nginx.conf) and fixes the mode of an
   environment file an older install left 0644. */
Test(install, reinstall_keeps_edited_configuration, .fini = cleanup)
{
    install_into_destdir();
    char envp[PATH_MAX], confp[PATH_MAX];
    path_in(envp, sizeof(envp), "/etc/default/ringcount");
    path_in(confp, sizeof(confp), "/etc/ringcount/ringcount.conf");
    FILE *f = fopen(envp, "a");
    fputs("RINGCOUNT_NODE_ID=7\n", f);
    fclose(f);
    chmod(envp, 0644);
    f = fopen(confp, "a");
    fputs("RINGCOUNT_RATE_LIMIT=5/5\n", f);
    fclose(f);
    static char cmd[PATH_MAX + 256], out[16384], buf[32768];
    snprintf(cmd, sizeof(cmd), "make --no-print-directory install-files BUILD=%s PREFIX=/usr "
             "DESTDIR=%s", build_dir, dest);
    cr_assert_eq(sh(cmd, out, sizeof(out)), 0, "%s", out);
    cr_expect_not_null(strstr(out, "kept "), "%s", out);
    read_all(envp, buf, sizeof(buf));
    cr_expect_not_null(strstr(buf, "\nRINGCOUNT_NODE_ID=7\n"), "edited environment file replaced");
    cr_expect_eq(mode_of(envp), 0600);
    read_all(confp, buf, sizeof(buf));
    cr_expect_not_null(strstr(buf, "\nRINGCOUNT_RATE_LIMIT=5/5\n"), "edited ringcount.conf replaced");
}
