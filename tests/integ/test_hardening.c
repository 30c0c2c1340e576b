/* Checks that the binaries carry the hardening the Makefile asks for (SPEC §5, OpenSSF compiler
   options), the way checksec does, from readelf/objdump output: PIE, full RELRO (GNU_RELRO +
   BIND_NOW), a non-executable stack, the stack protector, CET instrumentation (endbr64 at the
   entry of main) and, outside the ASan build, fortified libc calls (__*_chk imports).
   Binaries: $RINGCOUNT_BIN / $RINGBENCH_BIN, else ringcount / ringbench of this test's build. */
#include <criterion/criterion.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

TestSuite(hardening, .timeout = 30);

/* Path of binary `name` (env var first, else <build>/name for <build>/tests/integ/test_x). */
static const char *bin_path(const char *env, const char *name, char *buf, size_t cap)
{
    const char *e = getenv(env);
    if (e && *e)
        return e;
    ssize_t n = readlink("/proc/self/exe", buf, cap - 1);
    cr_assert_gt(n, 0);
    buf[n] = '\0';
    for (int up = 0; up < 3; up++) {
        char *sl = strrchr(buf, '/');
        cr_assert_not_null(sl);
        *sl = '\0';
    }
    size_t l = strlen(buf);
    cr_assert_lt(l + strlen(name) + 2, cap);
    snprintf(buf + l, cap - l, "/%s", name);
    return buf;
}

/* Output of the shell command cmd (NUL-terminated, malloc'd). Asserts it ran and exited 0. */
static char *run(const char *cmd)
{
    FILE *f = popen(cmd, "r");
    cr_assert_not_null(f, "popen %s", cmd);
    size_t len = 0, cap = 65536;
    char *out = malloc(cap);
    cr_assert_not_null(out);
    size_t k;
    while ((k = fread(out + len, 1, cap - len - 1, f)) > 0) {
        len += k;
        if (cap - len < 4096) {
            cap *= 2;
            out = realloc(out, cap);
            cr_assert_not_null(out);
        }
    }
    out[len] = '\0';
    int st = pclose(f);
    cr_assert_eq(st, 0, "`%s` failed (status %d): is binutils installed?", cmd, st);
    return out;
}

/* The GNU_STACK program header line of readelf -lW output. */
static const char *stack_flags(const char *l, char *out, size_t cap)
{
    const char *p = strstr(l, "GNU_STACK");
    cr_assert_not_null(p, "no GNU_STACK header (executable stack by default)");
    const char *eol = strchr(p, '\n');
    size_t n = eol ? (size_t)(eol - p) : strlen(p);
    if (n >= cap)
        n = cap - 1;
    memcpy(out, p, n);
    out[n] = '\0';
    return out;
}

static void check_binary(const char *env, const char *name)
{
    char path[PATH_MAX], cmd[PATH_MAX + 128], line[256];
    const char *bin = bin_path(env, name, path, sizeof(path));
    cr_assert_eq(access(bin, X_OK), 0, "%s not built (%s)", name, bin);

    snprintf(cmd, sizeof(cmd), "readelf -W -h -l -d --dyn-syms '%s' 2>&1", bin);
    char *r = run(cmd);
    /* PIE: an ET_DYN executable flagged PIE (randomised base, so ROP gadgets move). */
    cr_expect(strstr(r, "DYN (Position-Independent Executable file)") != NULL, "%s: not PIE", name);
    const char *f1 = strstr(r, "(FLAGS_1)");
    const char *f1e = f1 ? strchr(f1, '\n') : NULL;
    cr_expect(f1 && memmem(f1, f1e ? (size_t)(f1e - f1) : strlen(f1), " PIE", 4) != NULL,
              "%s: DT_FLAGS_1 without PIE", name);
    /* Full RELRO: relocations read-only after start-up, and all of them resolved at start-up. */
    cr_expect(strstr(r, "GNU_RELRO") != NULL, "%s: no GNU_RELRO segment", name);
    cr_expect(strstr(r, "BIND_NOW") != NULL, "%s: no BIND_NOW (partial RELRO only)", name);
    /* Non-executable stack: GNU_STACK is RW, not RWE. */
    stack_flags(r, line, sizeof(line));
    cr_expect(strstr(line, "RWE") == NULL && strstr(line, "RW") != NULL,
              "%s: executable stack: %s", name, line);
    /* Stack protector: canary checks call __stack_chk_fail. */
    cr_expect(strstr(r, "__stack_chk_fail") != NULL, "%s: no stack protector", name);
    /* _FORTIFY_SOURCE: bounded libc calls are imported as __*_chk (left out under ASan). */
    bool asan = strstr(r, "__asan_init") != NULL;
    if (!asan) {
        int nchk = 0;
        for (const char *p = r; (p = strstr(p, "_chk@")) != NULL; p++)
            nchk++;
        cr_expect_geq(nchk, 3, "%s: %d __*_chk imports: _FORTIFY_SOURCE not in effect", name,
                      nchk);
        cr_expect(strstr(r, "__memcpy_chk") != NULL || strstr(r, "__snprintf_chk") != NULL,
                  "%s: neither __memcpy_chk nor __snprintf_chk imported", name);
    }
    free(r);

    /* CET (-fcf-protection=full): indirect-branch targets start with endbr64. */
    snprintf(cmd, sizeof(cmd), "objdump -d --disassemble=main '%s' 2>&1", bin);
    r = run(cmd);
    const char *m = strstr(r, "<main>:");
    cr_assert_not_null(m, "%s: no main in the disassembly", name);
    const char *nl = strchr(m, '\n');
    cr_assert_not_null(nl);
    const char *nl2 = strchr(nl + 1, '\n');
    size_t n = nl2 ? (size_t)(nl2 - nl) : strlen(nl);
    cr_expect(memmem(nl, n, "endbr64", 7) != NULL, "%s: main does not start with endbr64", name);
    free(r);
}

Test(hardening, ringcount_is_hardened)
{
    check_binary("RINGCOUNT_BIN", "ringcount");
}

Test(hardening, ringbench_is_hardened)
{
    check_binary("RINGBENCH_BIN", "ringbench");
}
