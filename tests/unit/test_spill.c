/* Unit tests for src/spill: the file format byte by byte, round trips, atomicity (a leftover
   .tmp), the refusal to overwrite, every corruption refused with the file left byte-identical,
   and the payload encoder/decoder (every type, exact little-endian bytes, bounds). Each test
   works in its own mkdtemp directory, removed afterwards. */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "spill.h"

#define OVERHEAD (SPILL_HEADER_LEN + SPILL_TRAILER_LEN)

static char g_dir[64];

static void setup(void)
{
    strcpy(g_dir, "/tmp/rc-spill-XXXXXX");
    cr_assert_not_null(mkdtemp(g_dir));
}

static int rm_one(const char *p, const struct stat *st, int flag, struct FTW *f)
{
    (void)st, (void)flag, (void)f;
    return remove(p);
}

static void teardown(void)
{
    nftw(g_dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

/* ---- helpers ---- */

static void *slurp(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f, "open %s: %s", path, strerror(errno));
    cr_assert_eq(fseek(f, 0, SEEK_END), 0);
    long sz = ftell(f);
    cr_assert_geq(sz, 0);
    rewind(f);
    uint8_t *b = malloc((size_t)sz + 1);
    cr_assert_not_null(b);
    cr_assert_eq(fread(b, 1, (size_t)sz, f), (size_t)sz);
    fclose(f);
    *n = (size_t)sz;
    return b;
}

static void spew(const char *path, const void *p, size_t n)
{
    FILE *f = fopen(path, "wb");
    cr_assert_not_null(f, "open %s: %s", path, strerror(errno));
    cr_assert_eq(fwrite(p, 1, n, f), n);
    cr_assert_eq(fclose(f), 0);
}

static uint8_t *pattern(size_t n, uint32_t seed)
{
    uint8_t *p = malloc(n ? n : 1);
    cr_assert_not_null(p);
    uint32_t x = seed * 2654435761u + 1;
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13, x ^= x >> 17, x ^= x << 5;
        p[i] = (uint8_t)x;
    }
    return p;
}

static void spill_file(char *out, size_t cap, uint32_t node, bool tmp)
{
    snprintf(out, cap, "%s/ringcount-node-%u.spill%s", g_dir, node, tmp ? ".tmp" : "");
}

static void le(uint8_t *p, uint64_t v, unsigned n)
{
    for (unsigned i = 0; i < n; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t get_le(const uint8_t *p, unsigned n)
{
    uint64_t v = 0;
    for (unsigned i = 0; i < n; i++)
        v |= (uint64_t)p[i] << (8 * i);
    return v;
}

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* Write img as node's spill file, expect spill_read to refuse it with want (0: accept it), and
   the file to be exactly img afterwards. */
static void expect_refused(uint32_t node, const uint8_t *img, size_t n, int want, const char *what)
{
    char path[256], got_path[256];
    void *payload = (void *)1;
    size_t len = 7;

    spill_file(path, sizeof(path), node, false);
    spew(path, img, n);
    int rc = spill_read(g_dir, node, &payload, &len, got_path, sizeof(got_path));
    cr_assert_eq(rc, want, "%s: rc %d (%s), want %d", what, rc, strerror(-rc), want);
    if (want == 0) {
        cr_assert_not_null(payload, "%s", what);
        cr_assert_eq(len + OVERHEAD, n, "%s", what);
        free(payload);
    } else {
        cr_assert_null(payload, "%s: payload set on failure", what);
        cr_assert_eq(len, 0, "%s", what);
    }
    cr_assert_str_eq(got_path, path, "%s", what);

    size_t after_n;
    uint8_t *after = slurp(path, &after_n);
    cr_assert(after_n == n && memcmp(after, img, n) == 0, "%s: file modified", what);
    free(after);
}

/* A valid spill image of payload p[0..n), written by spill_write, read back into memory. */
static uint8_t *valid_image(uint32_t node, const uint8_t *p, size_t n, size_t *img_n)
{
    char path[256];
    cr_assert_eq(spill_write(g_dir, node, p, n, path, sizeof(path)), 0);
    uint8_t *img = slurp(path, img_n);
    cr_assert_eq(*img_n, n + OVERHEAD);
    cr_assert_eq(unlink(path), 0);
    return img;
}

/* ---- CRC32C ---- */

Test(spill, crc32c_check_values)
{
    static const uint8_t zeros[32] = { 0 };
    uint8_t ones[32];
    memset(ones, 0xff, sizeof(ones));

    cr_assert_eq(spill_crc32c(0, "123456789", 9), 0xE3069283u); /* the CRC-32C check value */
    cr_assert_eq(spill_crc32c(0, zeros, 32), 0x8A9136AAu);      /* RFC 3720 B.4 */
    cr_assert_eq(spill_crc32c(0, ones, 32), 0x62A8AB43u);       /* RFC 3720 B.4 */
    cr_assert_eq(spill_crc32c(0, NULL, 0), 0);
    cr_assert_eq(spill_crc32c(spill_crc32c(0, "1234", 4), "56789", 5), 0xE3069283u);
}

/* ---- the file ---- */

static void roundtrip(size_t n)
{
    char path[256], want[256], rpath[256];
    uint8_t *p = pattern(n, (uint32_t)n);
    void *got;
    size_t got_n;
    struct stat st;

    spill_file(want, sizeof(want), 42, false);
    cr_assert_eq(spill_write(g_dir, 42, p, n, path, sizeof(path)), 0, "size %zu", n);
    cr_assert_str_eq(path, want);
    cr_assert_eq(stat(path, &st), 0);
    cr_assert_eq((size_t)st.st_size, n + OVERHEAD, "size %zu", n);
    cr_assert_eq(st.st_mode & 0777, 0600);
    cr_assert(!spill_tmp_exists(g_dir, 42));

    cr_assert_eq(spill_read(g_dir, 42, &got, &got_n, rpath, sizeof(rpath)), 0, "size %zu", n);
    cr_assert_not_null(got);
    cr_assert_eq(got_n, n);
    cr_assert(memcmp(got, p, n) == 0, "payload of %zu bytes differs", n);
    cr_assert_str_eq(rpath, want);
    free(got);
    free(p);
    cr_assert_eq(spill_remove(path), 0);
}

Test(spill, roundtrip_sizes, .init = setup, .fini = teardown)
{
    roundtrip(0);
    roundtrip(1);
    roundtrip(1u << 20);
}

/* The layout of spill.h, decoded by hand (not through spill.c). */
Test(spill, format_layout, .init = setup, .fini = teardown)
{
    char path[256];
    uint64_t t0 = now_ms();
    cr_assert_eq(spill_write(g_dir, 0x01020304u, "abc", 3, path, sizeof(path)), 0);
    uint64_t t1 = now_ms();
    size_t n;
    uint8_t *f = slurp(path, &n);

    cr_assert_eq(n, 36 + 3 + 12);
    cr_assert(memcmp(f, "RCSPILL\0", 8) == 0);
    cr_assert(memcmp(f + 8, "\x01\x00\x00\x00", 4) == 0, "version 1, little-endian");
    cr_assert(memcmp(f + 12, "\x04\x03\x02\x01", 4) == 0, "node id, little-endian");
    cr_assert(memcmp(f + 16, "\x03\0\0\0\0\0\0\0", 8) == 0, "payload length");
    uint64_t t = get_le(f + 24, 8);
    cr_assert(t >= t0 && t <= t1, "creation time %lu not in [%lu, %lu]", (unsigned long)t,
              (unsigned long)t0, (unsigned long)t1);
    cr_assert_eq(get_le(f + 32, 4), spill_crc32c(0, f, 32), "header CRC");
    cr_assert(memcmp(f + 36, "abc", 3) == 0);
    cr_assert_eq(get_le(f + 39, 4), spill_crc32c(0, "abc", 3), "payload CRC");
    cr_assert(memcmp(f + 43, "RCSPEND\0", 8) == 0);
    free(f);
}

Test(spill, creates_missing_parents_0700, .init = setup, .fini = teardown)
{
    char dir[256], path[256];
    struct stat st;
    void *got;
    size_t n;

    umask(022);
    snprintf(dir, sizeof(dir), "%s/a/b/c", g_dir);
    cr_assert_eq(spill_write(dir, 1, "x", 1, path, sizeof(path)), 0);
    cr_assert_eq(stat(dir, &st), 0);
    cr_assert(S_ISDIR(st.st_mode));
    cr_assert_eq(st.st_mode & 0777, 0700);
    snprintf(dir, sizeof(dir), "%s/a", g_dir);
    cr_assert_eq(stat(dir, &st), 0);
    cr_assert_eq(st.st_mode & 0777, 0700);

    snprintf(dir, sizeof(dir), "%s/a/b/c/", g_dir); /* trailing slash: same directory */
    cr_assert_eq(spill_read(dir, 1, &got, &n, NULL, 0), 0);
    cr_assert(n == 1 && memcmp(got, "x", 1) == 0);
    free(got);
}

Test(spill, dir_is_a_file, .init = setup, .fini = teardown)
{
    char dir[256];
    snprintf(dir, sizeof(dir), "%s/plain", g_dir);
    spew(dir, "z", 1);
    cr_assert_eq(spill_write(dir, 1, "x", 1, NULL, 0), -ENOTDIR);
}

/* A crash before the rename leaves only the .tmp: not a spill, and no obstacle to the next. */
Test(spill, leftover_tmp_ignored, .init = setup, .fini = teardown)
{
    char tmp[256], path[256];
    void *got = (void *)1;
    size_t n;

    spill_file(tmp, sizeof(tmp), 5, true);
    spew(tmp, "RCSPILL\0garbage", 15);
    cr_assert(spill_tmp_exists(g_dir, 5));
    cr_assert(!spill_tmp_exists(g_dir, 6));
    cr_assert_eq(spill_read(g_dir, 5, &got, &n, NULL, 0), -ENOENT);
    cr_assert_null(got);

    cr_assert_eq(spill_write(g_dir, 5, "hello", 5, path, sizeof(path)), 0);
    cr_assert(!spill_tmp_exists(g_dir, 5), "stale .tmp replaced and renamed away");
    cr_assert_eq(spill_read(g_dir, 5, &got, &n, NULL, 0), 0);
    cr_assert(n == 5 && memcmp(got, "hello", 5) == 0);
    free(got);

    /* A .tmp next to a complete file: the complete file is what is read. */
    spew(tmp, "junk", 4);
    cr_assert_eq(spill_read(g_dir, 5, &got, &n, NULL, 0), 0);
    cr_assert(n == 5 && memcmp(got, "hello", 5) == 0);
    free(got);
}

Test(spill, refuses_overwrite, .init = setup, .fini = teardown)
{
    char path[256], path2[256];
    void *got;
    size_t n, before_n, after_n;

    cr_assert_eq(spill_write(g_dir, 9, "first", 5, path, sizeof(path)), 0);
    uint8_t *before = slurp(path, &before_n);

    cr_assert_eq(spill_write(g_dir, 9, "second!", 7, path2, sizeof(path2)), -EEXIST);
    cr_assert_str_eq(path2, path, "path names the unreplayed file");
    cr_assert(!spill_tmp_exists(g_dir, 9));
    uint8_t *after = slurp(path, &after_n);
    cr_assert(after_n == before_n && memcmp(after, before, before_n) == 0);
    cr_assert_eq(spill_read(g_dir, 9, &got, &n, NULL, 0), 0);
    cr_assert(n == 5 && memcmp(got, "first", 5) == 0);
    free(got);
    free(before);
    free(after);

    /* Another node's file is no obstacle. */
    cr_assert_eq(spill_write(g_dir, 10, "other", 5, NULL, 0), 0);
}

Test(spill, absent_is_enoent, .init = setup, .fini = teardown)
{
    char dir[256], path[256], want[256];
    void *got = (void *)1;
    size_t n = 3;

    spill_file(want, sizeof(want), 3, false);
    cr_assert_eq(spill_read(g_dir, 3, &got, &n, path, sizeof(path)), -ENOENT);
    cr_assert_null(got);
    cr_assert_eq(n, 0);
    cr_assert_str_eq(path, want);
    cr_assert(!spill_tmp_exists(g_dir, 3));

    snprintf(dir, sizeof(dir), "%s/never-created", g_dir);
    cr_assert_eq(spill_read(dir, 3, &got, &n, NULL, 0), -ENOENT);
    cr_assert(!spill_tmp_exists(dir, 3));
}

Test(spill, remove_then_write_again, .init = setup, .fini = teardown)
{
    char path[256];
    void *got;
    size_t n;

    cr_assert_eq(spill_write(g_dir, 4, "abc", 3, path, sizeof(path)), 0);
    cr_assert_eq(spill_remove(path), 0);
    cr_assert_eq(access(path, F_OK), -1);
    cr_assert_eq(errno, ENOENT);
    cr_assert_eq(spill_read(g_dir, 4, &got, &n, NULL, 0), -ENOENT);
    cr_assert_eq(spill_remove(path), -ENOENT);
    cr_assert_eq(spill_write(g_dir, 4, "def", 3, path, sizeof(path)), 0, "replayed: writable");
}

Test(spill, path_too_small_writes_nothing, .init = setup, .fini = teardown)
{
    char dir[256], small[16];
    struct stat st;

    snprintf(dir, sizeof(dir), "%s/sub", g_dir);
    cr_assert_eq(spill_write(dir, 1, "x", 1, small, sizeof(small)), -ENAMETOOLONG);
    cr_assert_eq(stat(dir, &st), -1, "not even the directory");
    void *got;
    size_t n;
    cr_assert_eq(spill_read(g_dir, 1, &got, &n, small, sizeof(small)), -ENAMETOOLONG);
}

Test(spill, write_too_large_is_efbig, .init = setup, .fini = teardown)
{
    /* The length is checked before the payload is touched. */
    cr_assert_eq(spill_write(g_dir, 1, "x", (size_t)SPILL_PAYLOAD_MAX + 1, NULL, 0), -EFBIG);
    cr_assert(!spill_tmp_exists(g_dir, 1));
    void *got;
    size_t n;
    cr_assert_eq(spill_read(g_dir, 1, &got, &n, NULL, 0), -ENOENT);
}

/* ---- corruption: always -EBADMSG, file untouched ---- */

/* Every bit of a small file: all single-bit errors in header, payload and trailer. */
Test(spill, every_bit_flip_small, .init = setup, .fini = teardown)
{
    uint8_t *p = pattern(100, 1);
    size_t n;
    uint8_t *img = valid_image(11, p, 100, &n);

    for (size_t off = 0; off < n; off++) {
        for (unsigned bit = 0; bit < 8; bit++) {
            char what[64];
            snprintf(what, sizeof(what), "flip byte %zu bit %u", off, bit);
            img[off] ^= (uint8_t)(1u << bit);
            expect_refused(11, img, n, -EBADMSG, what);
            img[off] ^= (uint8_t)(1u << bit);
        }
    }
    expect_refused(11, img, n, 0, "restored image"); /* the harness itself accepts a good one */
    free(img);
    free(p);
}

/* A sample across a 1 MiB file: header fields, payload start/middle/end, trailer. */
Test(spill, bit_flip_sample_large, .init = setup, .fini = teardown)
{
    const size_t pn = 1u << 20;
    uint8_t *p = pattern(pn, 2);
    size_t n;
    uint8_t *img = valid_image(12, p, pn, &n);
    const size_t offs[] = {
        0, 7, 8, 12, 16, 23, 24, 31, 32, 35,     /* magic, version, node, length, time, CRC */
        36, 37, 36 + pn / 2, 36 + pn - 1,        /* payload */
        36 + pn, 36 + pn + 3, 36 + pn + 4, n - 1 /* trailer CRC, end magic */
    };

    for (size_t i = 0; i < sizeof(offs) / sizeof(offs[0]); i++) {
        char what[64];
        snprintf(what, sizeof(what), "flip byte %zu of %zu", offs[i], n);
        img[offs[i]] ^= 0x10;
        expect_refused(12, img, n, -EBADMSG, what);
        img[offs[i]] ^= 0x10;
    }
    free(img);
    free(p);
}

Test(spill, truncations, .init = setup, .fini = teardown)
{
    uint8_t *p = pattern(100, 3);
    size_t n;
    uint8_t *img = valid_image(13, p, 100, &n);
    /* 148 bytes: header [0, 36), payload [36, 136), trailer CRC [136, 140), magic [140, 148). */
    const size_t lens[] = { 0,   1,   8,   20,  35,  36, /* empty, mid-header, header only */
                            37,  86,  135, 136,          /* mid-payload, no trailer at all */
                            139, 140, 146, n - 1 };      /* part of the CRC, of the magic */

    for (size_t i = 0; i < sizeof(lens) / sizeof(lens[0]); i++) {
        char what[64];
        snprintf(what, sizeof(what), "truncated to %zu of %zu", lens[i], n);
        expect_refused(13, img, lens[i], -EBADMSG, what);
    }
    free(img);
    free(p);
}

Test(spill, trailing_bytes, .init = setup, .fini = teardown)
{
    size_t n;
    uint8_t *img = valid_image(14, (const uint8_t *)"payload", 7, &n);
    uint8_t *big = malloc(2 * n);
    cr_assert_not_null(big);
    memcpy(big, img, n);
    memset(big + n, 0, n);

    expect_refused(14, big, n + 1, -EBADMSG, "one byte appended");
    memcpy(big + n, img + n - SPILL_TRAILER_LEN, SPILL_TRAILER_LEN);
    expect_refused(14, big, n + SPILL_TRAILER_LEN, -EBADMSG, "trailer repeated");
    memcpy(big + n, img, n);
    expect_refused(14, big, 2 * n, -EBADMSG, "two spills concatenated");
    free(big);
    free(img);
}

/* A file renamed onto another node's name must not be replayed as that node's. */
Test(spill, other_node_id, .init = setup, .fini = teardown)
{
    char from[256], to[256], rpath[256];
    void *got;
    size_t n, before_n;

    cr_assert_eq(spill_write(g_dir, 7, "seven", 5, from, sizeof(from)), 0);
    spill_file(to, sizeof(to), 8, false);
    cr_assert_eq(rename(from, to), 0);
    uint8_t *before = slurp(to, &before_n);

    cr_assert_eq(spill_read(g_dir, 8, &got, &n, rpath, sizeof(rpath)), -EBADMSG);
    cr_assert_str_eq(rpath, to);
    cr_assert_eq(spill_read(g_dir, 7, &got, &n, NULL, 0), -ENOENT);
    expect_refused(8, before, before_n, -EBADMSG, "node 7's file under node 8's name");
    free(before);
}

/* Header fields changed with the header CRC recomputed: each field check on its own. */
Test(spill, bad_fields_with_valid_header_crc, .init = setup, .fini = teardown)
{
    size_t n;
    uint8_t *img = valid_image(15, (const uint8_t *)"abcdef", 6, &n);
    uint8_t *m = malloc(n);
    cr_assert_not_null(m);
    struct { size_t off; unsigned width; uint64_t v; const char *what; } cases[] = {
        { 8, 4, 2, "version 2" },
        { 8, 4, 0, "version 0" },
        { 12, 4, 16, "node id 16" },
        { 0, 1, 'X', "magic" },
        { 7, 1, '!', "magic NUL" },
        { 16, 8, 5, "length one short" },
        { 16, 8, 7, "length one long" },
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        memcpy(m, img, n);
        le(m + cases[i].off, cases[i].v, cases[i].width);
        le(m + 32, spill_crc32c(0, m, 32), 4);
        expect_refused(15, m, n, -EBADMSG, cases[i].what);
    }
    /* Sanity: recomputing the CRC of an unchanged header keeps it valid. */
    memcpy(m, img, n);
    le(m + 32, spill_crc32c(0, m, 32), 4);
    expect_refused(15, m, n, 0, "unchanged");
    free(m);
    free(img);
}

/* A CRC-valid header announcing more than SPILL_PAYLOAD_MAX: refused before any allocation. */
Test(spill, huge_length_is_efbig, .init = setup, .fini = teardown)
{
    size_t n;
    uint8_t *img = valid_image(16, (const uint8_t *)"", 0, &n);

    le(img + 16, SPILL_PAYLOAD_MAX + 1, 8);
    le(img + 32, spill_crc32c(0, img, 32), 4);
    expect_refused(16, img, n, -EFBIG, "length 4 GiB + 1");
    le(img + 16, UINT64_MAX, 8);
    le(img + 32, spill_crc32c(0, img, 32), 4);
    expect_refused(16, img, n, -EFBIG, "length 2^64 - 1");
    /* Without a valid header CRC the length is not believed: corrupt, not too big. */
    img[32] ^= 1;
    expect_refused(16, img, n, -EBADMSG, "huge length, bad CRC");
    free(img);
}

Test(spill, not_a_regular_file, .init = setup, .fini = teardown, .timeout = 10)
{
    char path[256];
    void *got;
    size_t n;

    spill_file(path, sizeof(path), 17, false);
    cr_assert_eq(mkdir(path, 0700), 0);
    cr_assert_eq(spill_read(g_dir, 17, &got, &n, NULL, 0), -EBADMSG, "a directory");
    cr_assert_eq(rmdir(path), 0);
    cr_assert_eq(mkfifo(path, 0600), 0);
    cr_assert_eq(spill_read(g_dir, 17, &got, &n, NULL, 0), -EBADMSG, "a FIFO, without blocking");
    cr_assert_eq(spill_write(g_dir, 17, "x", 1, NULL, 0), -EEXIST, "never replaced either");
}

/* ---- payload encoder / decoder ---- */

static const __int128 I128_MAX = (__int128)(((unsigned __int128)1 << 127) - 1);
static const __int128 I128_MIN = -(__int128)(((unsigned __int128)1 << 127) - 1) - 1;

Test(spill, codec_roundtrip_every_type)
{
    struct spill_buf b = { 0 };
    uint8_t blob[300];
    for (size_t i = 0; i < sizeof(blob); i++)
        blob[i] = (uint8_t)(i * 7);
    const uint32_t u32s[] = { 0, 1, 0xdeadbeefu, UINT32_MAX };
    const uint64_t u64s[] = { 0, 1, 0x0102030405060708u, UINT64_MAX };
    const int64_t i64s[] = { INT64_MIN, INT64_MIN + 1, -1, 0, 1, INT64_MAX };
    const __int128 i128s[] = { I128_MIN, I128_MIN + 1, -((__int128)1 << 64), -1, 0, 1,
                               (__int128)1 << 64, ((__int128)1 << 64) - 1, I128_MAX };

    spill_put_u8(&b, 0);
    spill_put_u8(&b, 0xff);
    for (size_t i = 0; i < 4; i++)
        spill_put_u32(&b, u32s[i]);
    for (size_t i = 0; i < 4; i++)
        spill_put_u64(&b, u64s[i]);
    for (size_t i = 0; i < 6; i++)
        spill_put_i64(&b, i64s[i]);
    for (size_t i = 0; i < 9; i++)
        spill_put_i128(&b, i128s[i]);
    spill_put_bytes(&b, NULL, 0);
    spill_put_bytes(&b, "hello", 5);
    spill_put_bytes(&b, blob, sizeof(blob));
    cr_assert_eq(b.err, 0);
    cr_assert_eq(b.len, 2 + 4 * 4 + 4 * 8 + 6 * 8 + 9 * 16 + 4 + 9 + 304);

    struct spill_cur c = spill_cur_init(b.p, b.len);
    cr_assert_eq(spill_get_u8(&c), 0);
    cr_assert_eq(spill_get_u8(&c), 0xff);
    for (size_t i = 0; i < 4; i++)
        cr_assert_eq(spill_get_u32(&c), u32s[i]);
    for (size_t i = 0; i < 4; i++)
        cr_assert_eq(spill_get_u64(&c), u64s[i]);
    for (size_t i = 0; i < 6; i++)
        cr_assert_eq(spill_get_i64(&c), i64s[i], "i64 #%zu", i);
    for (size_t i = 0; i < 9; i++)
        cr_assert(spill_get_i128(&c) == i128s[i], "i128 #%zu", i);
    size_t n = 99;
    const uint8_t *s = spill_get_bytes(&c, &n);
    cr_assert_not_null(s, "an empty field is not an error");
    cr_assert_eq(n, 0);
    s = spill_get_bytes(&c, &n);
    cr_assert(s && n == 5 && memcmp(s, "hello", 5) == 0);
    cr_assert(s >= b.p && s < b.p + b.len, "a pointer into the buffer");
    s = spill_get_bytes(&c, &n);
    cr_assert(s && n == sizeof(blob) && memcmp(s, blob, n) == 0);
    cr_assert(!c.bad);
    cr_assert(spill_cur_done(&c));
    spill_buf_free(&b);
    cr_assert(b.p == NULL && b.len == 0 && b.cap == 0 && b.err == 0);
}

/* The exact bytes: little-endian, two's complement, i128 low half first, u32 length prefix. */
Test(spill, codec_exact_bytes)
{
    struct spill_buf b = { 0 };
    spill_put_u32(&b, 0x01020304u);
    spill_put_u64(&b, 0x0102030405060708u);
    spill_put_i64(&b, -2);
    spill_put_i128(&b, -1);
    spill_put_i128(&b, (__int128)1 << 64);
    spill_put_bytes(&b, "ab", 2);
    const uint8_t want[] = {
        4, 3, 2, 1,
        8, 7, 6, 5, 4, 3, 2, 1,
        0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0,
        2, 0, 0, 0, 'a', 'b',
    };
    cr_assert_eq(b.err, 0);
    cr_assert_eq(b.len, sizeof(want));
    cr_assert(memcmp(b.p, want, sizeof(want)) == 0);
    spill_buf_free(&b);
}

/* Growth through many reallocs keeps every byte. */
Test(spill, codec_growth)
{
    struct spill_buf b = { 0 };
    for (uint64_t i = 0; i < 100000; i++)
        spill_put_u64(&b, i * 0x9E3779B97F4A7C15u);
    cr_assert_eq(b.err, 0);
    cr_assert_eq(b.len, 800000);
    cr_assert_geq(b.cap, b.len);
    struct spill_cur c = spill_cur_init(b.p, b.len);
    for (uint64_t i = 0; i < 100000; i++)
        cr_assert_eq(spill_get_u64(&c), i * 0x9E3779B97F4A7C15u);
    cr_assert(spill_cur_done(&c));
    spill_buf_free(&b);
}

/* Once err is set, every put is ignored: one check at the end is enough. */
Test(spill, codec_error_is_sticky)
{
    struct spill_buf b = { 0 };
    spill_put_u32(&b, 1);
    /* A length that does not fit the u32 prefix: refused before s is read. */
    spill_put_bytes(&b, "x", (size_t)UINT32_MAX + 1);
    cr_assert_eq(b.err, -EOVERFLOW);
    cr_assert_eq(b.len, 4);
    spill_put_u8(&b, 1);
    spill_put_u32(&b, 1);
    spill_put_u64(&b, 1);
    spill_put_i64(&b, 1);
    spill_put_i128(&b, 1);
    spill_put_bytes(&b, "abc", 3);
    cr_assert_eq(b.len, 4);
    cr_assert_eq(b.err, -EOVERFLOW);
    spill_buf_free(&b);

    b.err = -ENOMEM; /* as after a failed realloc */
    spill_put_u64(&b, 1);
    cr_assert_eq(b.len, 0);
    cr_assert_null(b.p);
    spill_buf_free(&b);
}

/* Each read one byte short, on an exactly-sized heap buffer (ASan catches any overread). */
Test(spill, decoder_bounds)
{
    const size_t widths[] = { 1, 4, 8, 8, 16, 4 };
    for (size_t t = 0; t < 6; t++) {
        size_t w = widths[t];
        uint8_t *p = malloc(w - 1); /* glibc: malloc(0) is a unique pointer, 0 bytes to ASan */
        cr_assert_not_null(p);
        memset(p, 0xff, w - 1);
        struct spill_cur c = spill_cur_init(p, w - 1);
        size_t n = 5;
        uint64_t v;
        switch (t) {
        case 0: v = spill_get_u8(&c); break;
        case 1: v = spill_get_u32(&c); break;
        case 2: v = spill_get_u64(&c); break;
        case 3: v = (uint64_t)spill_get_i64(&c); break;
        case 4: v = spill_get_i128(&c) != 0; break;
        default: v = spill_get_bytes(&c, &n) != NULL; cr_assert_eq(n, 0); break;
        }
        cr_assert_eq(v, 0, "type %zu returned data", t);
        cr_assert(c.bad, "type %zu", t);
        cr_assert(!spill_cur_done(&c));
        free(p);
    }

    /* Sticky: after a failed read, even a read that would fit returns 0. */
    uint8_t *p = malloc(3);
    cr_assert_not_null(p);
    memcpy(p, "\x07\x08\x09", 3);
    struct spill_cur c = spill_cur_init(p, 3);
    cr_assert_eq(spill_get_u32(&c), 0);
    cr_assert(c.bad);
    cr_assert_eq(spill_get_u8(&c), 0);
    free(p);

    /* A length prefix larger than what is left: bytes never handed out. */
    const uint32_t prefixes[] = { 5, UINT32_MAX };
    for (size_t i = 0; i < 2; i++) {
        p = malloc(8);
        cr_assert_not_null(p);
        le(p, prefixes[i], 4);
        memcpy(p + 4, "abcd", 4);
        c = spill_cur_init(p, 8);
        size_t n = 9;
        cr_assert_null(spill_get_bytes(&c, &n), "prefix %u", prefixes[i]);
        cr_assert_eq(n, 0);
        cr_assert(c.bad);
        free(p);
    }

    /* Done: only when everything was consumed and nothing was bad. */
    p = malloc(2);
    cr_assert_not_null(p);
    c = spill_cur_init(p, 2);
    spill_get_u8(&c);
    cr_assert(!spill_cur_done(&c), "one byte left");
    spill_get_u8(&c);
    cr_assert(spill_cur_done(&c));
    spill_get_u8(&c);
    cr_assert(!spill_cur_done(&c), "read past the end");
    free(p);

    c = spill_cur_init(NULL, 10); /* no buffer: nothing to read */
    cr_assert_eq(spill_get_u8(&c), 0);
    cr_assert(c.bad);
    c = spill_cur_init(NULL, 0);
    cr_assert(spill_cur_done(&c));
}

/* What the persister does: encode, spill, read back at start-up, decode. */
Test(spill, encoded_payload_through_the_file, .init = setup, .fini = teardown)
{
    struct spill_buf b = { 0 };
    spill_put_u64(&b, 12345);              /* e.g. the ledger key */
    spill_put_i128(&b, I128_MIN);
    spill_put_bytes(&b, "user-1", 6);
    cr_assert_eq(b.err, 0);
    cr_assert_eq(spill_write(g_dir, 2, b.p, b.len, NULL, 0), 0);
    spill_buf_free(&b);

    void *got;
    size_t n, sn;
    cr_assert_eq(spill_read(g_dir, 2, &got, &n, NULL, 0), 0);
    struct spill_cur c = spill_cur_init(got, n);
    cr_assert_eq(spill_get_u64(&c), 12345);
    cr_assert(spill_get_i128(&c) == I128_MIN);
    const uint8_t *s = spill_get_bytes(&c, &sn);
    cr_assert(s && sn == 6 && memcmp(s, "user-1", 6) == 0);
    cr_assert(spill_cur_done(&c));
    free(got);
}
