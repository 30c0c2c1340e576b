/* spill — see spill.h. Write: .tmp, fsync, no-replace rename, fsync dir. Read: header first,
   so a bad or huge length is refused before anything is allocated. */
#include "spill.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"

static const uint8_t magic_head[8] = { 'R', 'C', 'S', 'P', 'I', 'L', 'L', 0 };
static const uint8_t magic_tail[8] = { 'R', 'C', 'S', 'P', 'E', 'N', 'D', 0 };

/* Header field offsets (spill.h). */
#define OFF_VERSION 8
#define OFF_NODE 12
#define OFF_LEN 16
#define OFF_TIME 24
#define OFF_HCRC 32
/* "ringcount-node-" (15) + 10 digits + ".spill.tmp" (10) + NUL = 36. */
#define NAME_CAP 48

/* ---- CRC32C ---- */

static uint32_t crc_table[256];
static pthread_once_t crc_once = PTHREAD_ONCE_INIT;

static void crc_init(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++)
            c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
        crc_table[i] = c;
    }
}

uint32_t spill_crc32c(uint32_t crc, const void *p, size_t n)
{
    const uint8_t *s = p;

    pthread_once(&crc_once, crc_init);
    crc = ~crc;
    for (size_t i = 0; i < n; i++)
        crc = crc_table[(crc ^ s[i]) & 0xff] ^ (crc >> 8);
    return ~crc;
}

/* ---- little-endian helpers ---- */

static void le_put(uint8_t *p, uint64_t v, unsigned nbytes)
{
    for (unsigned i = 0; i < nbytes; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t le_get(const uint8_t *p, unsigned nbytes)
{
    uint64_t v = 0;
    for (unsigned i = 0; i < nbytes; i++)
        v |= (uint64_t)p[i] << (8 * i);
    return v;
}

/* ---- file helpers ---- */

static int spill_name(char name[NAME_CAP], uint32_t node_id, bool tmp)
{
    int n = snprintf(name, NAME_CAP, "ringcount-node-%u.spill%s", node_id, tmp ? ".tmp" : "");
    return n < 0 || n >= NAME_CAP ? -ENAMETOOLONG : 0;
}

/* dir/name into path (cap == 0 or path == NULL: not wanted). */
static int spill_fill_path(char *path, size_t cap, const char *dir, const char *name)
{
    if (!path || cap == 0)
        return 0;
    int n = snprintf(path, cap, "%s/%s", dir, name);
    if (n < 0 || (size_t)n >= cap) {
        path[0] = '\0';
        return -ENAMETOOLONG;
    }
    return 0;
}

static int dir_open(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    return fd < 0 ? -errno : fd;
}

static int dir_fsync(const char *dir)
{
    int fd = dir_open(dir);
    if (fd < 0)
        return fd;
    int rc = fsync(fd) != 0 ? -errno : 0;
    close(fd);
    return rc;
}

/* fsync the directory holding p (p is a path with at least one component). */
static int parent_fsync(const char *p)
{
    char buf[PATH_MAX];
    size_t n = strlen(p);

    if (n >= sizeof(buf))
        return -ENAMETOOLONG;
    memcpy(buf, p, n + 1);
    while (n > 1 && buf[n - 1] == '/') /* "a/b/" names b */
        buf[--n] = '\0';
    char *slash = strrchr(buf, '/');
    if (!slash)
        return dir_fsync(".");
    if (slash == buf)
        return dir_fsync("/");
    *slash = '\0';
    return dir_fsync(buf);
}

/* mkdir -p with mode 0700; each directory created is made durable in its parent, or the spill
   file inside it could vanish with it in a crash. */
static int mkdir_parents(const char *dir)
{
    char buf[PATH_MAX];
    size_t n = strlen(dir);

    if (n == 0)
        return -EINVAL;
    if (n >= sizeof(buf))
        return -ENAMETOOLONG;
    memcpy(buf, dir, n + 1);
    for (size_t i = 1; i <= n; i++) {
        if (buf[i] != '/' && buf[i] != '\0')
            continue;
        if (buf[i - 1] == '/') /* "a//b": the prefix "a/" was done */
            continue;
        char save = buf[i];
        buf[i] = '\0';
        if (mkdir(buf, 0700) == 0) {
            int rc = parent_fsync(buf);
            if (rc < 0)
                return rc;
        } else if (errno != EEXIST) {
            return -errno;
        }
        buf[i] = save;
    }
    return 0;
}

static int write_all(int fd, const void *p, size_t n)
{
    const uint8_t *s = p;

    while (n > 0) {
        ssize_t r = write(fd, s, n);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (r == 0)
            return -EIO; /* no progress on a regular file: never loop forever */
        s += r;
        n -= (size_t)r;
    }
    return 0;
}

/* Read up to n bytes; *got < n only at end of file. */
static int read_full(int fd, void *p, size_t n, size_t *got)
{
    uint8_t *d = p;

    *got = 0;
    while (*got < n) {
        ssize_t r = read(fd, d + *got, n - *got);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (r == 0)
            break;
        *got += (size_t)r;
    }
    return 0;
}

/* Move tmp to name only if name does not exist. renameat2(RENAME_NOREPLACE) where the file
   system has it; otherwise link(2), which never replaces either, then unlink the tmp. */
static int rename_noreplace(int dfd, const char *tmp, const char *name)
{
    if (renameat2(dfd, tmp, dfd, name, RENAME_NOREPLACE) == 0)
        return 0;
    if (errno != EINVAL && errno != ENOSYS && errno != ENOTSUP)
        return -errno;
    if (linkat(dfd, tmp, dfd, name, 0) != 0)
        return -errno;
    (void)unlinkat(dfd, tmp, 0); /* a stale .tmp is harmless: ignored, replaced next time */
    return 0;
}

/* ---- the file ---- */

int spill_write(const char *dir, uint32_t node_id, const void *payload, size_t len, char *path,
                size_t cap)
{
    char name[NAME_CAP], tmp[NAME_CAP];
    uint8_t hdr[SPILL_HEADER_LEN], trl[SPILL_TRAILER_LEN];
    struct stat st;
    int dfd = -1, fd = -1, rc;
    bool tmp_made = false;

    if ((uint64_t)len > SPILL_PAYLOAD_MAX)
        return -EFBIG;
    if (len > 0 && !payload)
        return -EINVAL;
    if ((rc = spill_name(name, node_id, false)) < 0 || (rc = spill_name(tmp, node_id, true)) < 0)
        return rc;
    if ((rc = spill_fill_path(path, cap, dir, name)) < 0)
        return rc;

    dfd = dir_open(dir);
    if (dfd == -ENOENT) {
        if ((rc = mkdir_parents(dir)) < 0)
            return rc;
        dfd = dir_open(dir);
    }
    if (dfd < 0)
        return dfd;

    /* Fail before writing megabytes; the rename below re-checks atomically. */
    if (fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0) {
        rc = -EEXIST;
        goto cleanup;
    }
    if (errno != ENOENT) {
        rc = -errno;
        goto cleanup;
    }
    if (unlinkat(dfd, tmp, 0) != 0 && errno != ENOENT) { /* a previous incomplete write */
        rc = -errno;
        goto cleanup;
    }
    fd = openat(dfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) {
        rc = -errno;
        goto cleanup;
    }
    tmp_made = true;

    memcpy(hdr, magic_head, 8);
    le_put(hdr + OFF_VERSION, SPILL_VERSION, 4);
    le_put(hdr + OFF_NODE, node_id, 4);
    le_put(hdr + OFF_LEN, (uint64_t)len, 8);
    le_put(hdr + OFF_TIME, clock_ms(CLOCK_REALTIME), 8);
    le_put(hdr + OFF_HCRC, spill_crc32c(0, hdr, OFF_HCRC), 4);
    le_put(trl, spill_crc32c(0, payload, len), 4);
    memcpy(trl + 4, magic_tail, 8);

    if ((rc = write_all(fd, hdr, sizeof(hdr))) < 0 || (rc = write_all(fd, payload, len)) < 0 ||
        (rc = write_all(fd, trl, sizeof(trl))) < 0)
        goto cleanup;
    if (fsync(fd) != 0) {
        rc = -errno;
        goto cleanup;
    }
    rc = close(fd) != 0 ? -errno : 0; /* NFS may report a write error only here */
    fd = -1;
    if (rc < 0)
        goto cleanup;

    if ((rc = rename_noreplace(dfd, tmp, name)) < 0)
        goto cleanup;
    tmp_made = false;
    /* From here the file is in place: on error it stays (it is complete; only its survival of
       a crash is in doubt) and a later start replays it, idempotently. */
    if (fsync(dfd) != 0)
        rc = -errno;

cleanup:
    if (fd >= 0)
        close(fd);
    if (tmp_made)
        (void)unlinkat(dfd, tmp, 0);
    close(dfd);
    return rc;
}

int spill_read(const char *dir, uint32_t node_id, void **payload, size_t *len, char *path,
               size_t cap)
{
    char name[NAME_CAP];
    uint8_t hdr[SPILL_HEADER_LEN], trl[SPILL_TRAILER_LEN], extra;
    uint8_t *buf = NULL;
    struct stat st;
    size_t got;
    uint64_t plen;
    int dfd = -1, fd = -1, rc;

    *payload = NULL;
    *len = 0;
    if ((rc = spill_name(name, node_id, false)) < 0)
        return rc;
    if ((rc = spill_fill_path(path, cap, dir, name)) < 0)
        return rc;
    if ((dfd = dir_open(dir)) < 0)
        return dfd;
    /* O_NONBLOCK: a FIFO by that name must not hang start-up (it is refused below). */
    fd = openat(dfd, name, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    if (fd < 0) {
        rc = -errno;
        goto cleanup;
    }
    if (fstat(fd, &st) != 0) {
        rc = -errno;
        goto cleanup;
    }
    rc = -EBADMSG; /* every early exit below is a corrupt file */
    if (!S_ISREG(st.st_mode) || st.st_size < (off_t)(SPILL_HEADER_LEN + SPILL_TRAILER_LEN))
        goto cleanup;

    if ((rc = read_full(fd, hdr, sizeof(hdr), &got)) < 0)
        goto cleanup;
    rc = -EBADMSG;
    if (got != sizeof(hdr) || memcmp(hdr, magic_head, 8) != 0 ||
        le_get(hdr + OFF_HCRC, 4) != spill_crc32c(0, hdr, OFF_HCRC) ||
        le_get(hdr + OFF_VERSION, 4) != SPILL_VERSION || le_get(hdr + OFF_NODE, 4) != node_id)
        goto cleanup;
    plen = le_get(hdr + OFF_LEN, 8);
    if (plen > SPILL_PAYLOAD_MAX || plen >= SIZE_MAX) {
        rc = -EFBIG;
        goto cleanup;
    }
    if ((uint64_t)st.st_size != SPILL_HEADER_LEN + plen + SPILL_TRAILER_LEN)
        goto cleanup; /* truncated or trailing bytes */

    buf = malloc(plen ? (size_t)plen : 1);
    if (!buf) {
        rc = -ENOMEM;
        goto cleanup;
    }
    if ((rc = read_full(fd, buf, (size_t)plen, &got)) < 0)
        goto cleanup;
    rc = -EBADMSG;
    if (got != plen)
        goto cleanup; /* shrank since fstat */
    if ((rc = read_full(fd, trl, sizeof(trl), &got)) < 0)
        goto cleanup;
    rc = -EBADMSG;
    if (got != sizeof(trl))
        goto cleanup;
    /* Grew since fstat: not the file that was written. */
    if ((rc = read_full(fd, &extra, 1, &got)) < 0)
        goto cleanup;
    rc = -EBADMSG;
    if (got != 0 || le_get(trl, 4) != spill_crc32c(0, buf, (size_t)plen) ||
        memcmp(trl + 4, magic_tail, 8) != 0)
        goto cleanup;

    *payload = buf;
    *len = (size_t)plen;
    buf = NULL;
    rc = 0;

cleanup:
    free(buf);
    if (fd >= 0)
        close(fd);
    close(dfd);
    return rc;
}

bool spill_tmp_exists(const char *dir, uint32_t node_id)
{
    char tmp[NAME_CAP];
    struct stat st;
    int dfd;
    bool found;

    if (spill_name(tmp, node_id, true) < 0 || (dfd = dir_open(dir)) < 0)
        return false;
    found = fstatat(dfd, tmp, &st, AT_SYMLINK_NOFOLLOW) == 0;
    close(dfd);
    return found;
}

int spill_remove(const char *path)
{
    if (unlink(path) != 0)
        return -errno;
    /* Otherwise a crash could bring the file back and it would be replayed again: harmless
       (the ledger key makes replay idempotent) but a needless start-up delay. */
    return parent_fsync(path);
}

/* ---- payload encoder ---- */

/* Room for n more bytes, or false (err set now or before). */
static bool buf_reserve(struct spill_buf *b, uint64_t n)
{
    if (b->err)
        return false;
    if (n > SPILL_PAYLOAD_MAX - b->len) {
        b->err = -EFBIG;
        return false;
    }
    uint64_t need = b->len + n;
    if (need <= b->cap)
        return true;
    uint64_t ncap = b->cap ? b->cap : 256;
    while (ncap < need)
        ncap *= 2; /* need <= 4 GiB: no overflow */
    if (ncap > SPILL_PAYLOAD_MAX)
        ncap = need;
    if (ncap > SIZE_MAX) {
        b->err = -ENOMEM;
        return false;
    }
    uint8_t *p = realloc(b->p, (size_t)ncap);
    if (!p) {
        b->err = -ENOMEM;
        return false;
    }
    b->p = p;
    b->cap = (size_t)ncap;
    return true;
}

static void buf_put_le(struct spill_buf *b, uint64_t v, unsigned nbytes)
{
    if (!buf_reserve(b, nbytes))
        return;
    le_put(b->p + b->len, v, nbytes);
    b->len += nbytes;
}

void spill_put_u8(struct spill_buf *b, uint8_t v)
{
    buf_put_le(b, v, 1);
}

void spill_put_u32(struct spill_buf *b, uint32_t v)
{
    buf_put_le(b, v, 4);
}

void spill_put_u64(struct spill_buf *b, uint64_t v)
{
    buf_put_le(b, v, 8);
}

void spill_put_i64(struct spill_buf *b, int64_t v)
{
    buf_put_le(b, (uint64_t)v, 8);
}

void spill_put_i128(struct spill_buf *b, __int128 v)
{
    unsigned __int128 u = (unsigned __int128)v;

    if (!buf_reserve(b, 16)) /* both halves or neither */
        return;
    le_put(b->p + b->len, (uint64_t)u, 8);
    le_put(b->p + b->len + 8, (uint64_t)(u >> 64), 8);
    b->len += 16;
}

void spill_put_bytes(struct spill_buf *b, const void *s, size_t n)
{
    if (b->err)
        return;
    if ((uint64_t)n > UINT32_MAX) {
        b->err = -EOVERFLOW;
        return;
    }
    if (!buf_reserve(b, 4 + (uint64_t)n))
        return;
    le_put(b->p + b->len, (uint64_t)n, 4);
    if (n > 0)
        memcpy(b->p + b->len + 4, s, n);
    b->len += 4 + n;
}

void spill_buf_free(struct spill_buf *b)
{
    free(b->p);
    memset(b, 0, sizeof(*b));
}

/* ---- payload decoder ---- */

struct spill_cur spill_cur_init(const void *p, size_t len)
{
    return (struct spill_cur){ .p = p, .len = p ? len : 0, .off = 0, .bad = false };
}

/* The next n bytes, or NULL (bad set). */
static const uint8_t *cur_take(struct spill_cur *c, size_t n)
{
    if (c->bad)
        return NULL;
    if (c->off > c->len || n > c->len - c->off) {
        c->bad = true;
        return NULL;
    }
    const uint8_t *p = c->p + c->off;
    c->off += n;
    return p;
}

uint8_t spill_get_u8(struct spill_cur *c)
{
    const uint8_t *p = cur_take(c, 1);
    return p ? p[0] : 0;
}

uint32_t spill_get_u32(struct spill_cur *c)
{
    const uint8_t *p = cur_take(c, 4);
    return p ? (uint32_t)le_get(p, 4) : 0;
}

uint64_t spill_get_u64(struct spill_cur *c)
{
    const uint8_t *p = cur_take(c, 8);
    return p ? le_get(p, 8) : 0;
}

int64_t spill_get_i64(struct spill_cur *c)
{
    return (int64_t)spill_get_u64(c);
}

__int128 spill_get_i128(struct spill_cur *c)
{
    const uint8_t *p = cur_take(c, 16);
    if (!p)
        return 0;
    unsigned __int128 u = (unsigned __int128)le_get(p + 8, 8) << 64 | le_get(p, 8);
    return (__int128)u;
}

const uint8_t *spill_get_bytes(struct spill_cur *c, size_t *n)
{
    *n = 0;
    uint32_t len = spill_get_u32(c);
    const uint8_t *p = c->bad ? NULL : cur_take(c, len);
    if (p)
        *n = len;
    return p;
}

bool spill_cur_done(const struct spill_cur *c)
{
    return !c->bad && c->off == c->len;
}
