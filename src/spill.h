/*
 * spill — the shutdown spill file (SPEC §4 "SIGTERM ... final flush"): when the final flush
 * cannot reach PostgreSQL before the shutdown deadline, the persister hands everything pending
 * to spill_write as an opaque payload; at the next start main reads it back (spill_read),
 * replays it (idempotently: the payload carries its own ledger key) and removes it
 * (spill_remove). This module does not know what the payload means: it owns the file format,
 * its integrity and the atomicity of writing it, plus a small bounds-checked encoder/decoder
 * (spill_buf / spill_cur) the persister uses to build and parse payloads.
 *
 * Callers: the persister thread at shutdown (spill_write), main at start-up (spill_read,
 * spill_remove, spill_tmp_exists). No global state except the CRC32C table, built once under
 * pthread_once, so any thread may in fact call any function; spill_buf / spill_cur are
 * caller-owned and not shared.
 *
 * File <dir>/ringcount-node-<node_id>.spill, every integer little-endian, encoded byte by byte:
 *   header  (36 bytes)  "RCSPILL\0" | u32 version (1) | u32 node_id | u64 payload length |
 *                       u64 creation time (unix ms) | u32 CRC32C of the 32 bytes before it
 *   payload (length bytes)
 *   trailer (12 bytes)  u32 CRC32C of the payload | "RCSPEND\0"
 * The file size must be exactly 48 + length: a missing trailer (truncation) or trailing bytes
 * is corrupt, never "the part we could read".
 *
 * Atomicity and durability: the file is written as <name>.tmp, fsynced, renamed to <name>, and
 * then the directory is fsynced. fsync of the file before the rename: otherwise a crash right
 * after the rename can leave <name> pointing at an empty or partial inode (ext4/xfs may commit
 * the rename before the data) — which spill_read would then have to refuse, losing the data.
 * fsync of the directory after: the rename itself is only durable once the directory is, and
 * spill_write returns 0 only then. A crash before the rename leaves only the .tmp, which
 * spill_read ignores (an incomplete write) and spill_write replaces.
 *
 * Never overwrite: an existing <name> holds state not replayed yet (the previous start could
 * not reach the database either, or failed before spill_remove). Replacing it would silently
 * lose those deltas, so spill_write refuses with -EEXIST (checked up front and again atomically
 * by the rename, renameat2(RENAME_NOREPLACE) or link(2)); the caller decides what to do.
 */
#ifndef RC_SPILL_H
#define RC_SPILL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SPILL_VERSION 1u
#define SPILL_HEADER_LEN 36u  /* 8 magic + 4 version + 4 node + 8 length + 8 time + 4 CRC */
#define SPILL_TRAILER_LEN 12u /* 4 CRC + 8 magic */
/* 4 GiB: pending state is bounded by distinct keys (SPEC §4), far below this; a larger length
   is a bug or a crafted header, and loading it would be a multi-GiB malloc at start-up. */
#define SPILL_PAYLOAD_MAX ((uint64_t)1 << 32)

/* ---- the file ---- */

/* Write <dir>/ringcount-node-<node_id>.spill atomically and durably (see above), creating dir
   and its missing parents (mode 0700). path (may be NULL when cap == 0) receives the final
   path. 0; -EEXIST (an unreplayed spill file is there: left untouched, path names it);
   -EFBIG (len > SPILL_PAYLOAD_MAX); -ENAMETOOLONG (path does not fit in cap; nothing written);
   other -errno (nothing left behind, except after a failed directory fsync: the file is then
   in place but may not survive a crash). */
int spill_write(const char *dir, uint32_t node_id, const void *payload, size_t len, char *path,
                size_t cap);

/* Read and validate this node's spill file. 0, *payload (malloc'd, the caller frees; non-NULL
   even when *len == 0) and *len; -ENOENT (no spill file, or no dir); -EBADMSG (present but
   truncated, trailing bytes, wrong magic/version/CRC, another node's id, not a regular file);
   -EFBIG (CRC-valid header with length > SPILL_PAYLOAD_MAX); -ENAMETOOLONG (path does not fit
   in cap); -ENOMEM; other -errno for I/O. The file is never modified. path (may be NULL when
   cap == 0) receives the file's path whether or not it exists. A .tmp is ignored. */
int spill_read(const char *dir, uint32_t node_id, void **payload, size_t *len, char *path,
               size_t cap);

/* true if an incomplete write (<name>.tmp) is left in dir, for the caller to log. */
bool spill_tmp_exists(const char *dir, uint32_t node_id);

/* Unlink a replayed spill file and fsync its directory. 0 / -errno (-ENOENT if absent). */
int spill_remove(const char *path);

/* CRC32C (Castagnoli, reflected polynomial 0x82F63B78): spill_crc32c(0, "123456789", 9) ==
   0xE3069283; chain by passing the previous result as crc. */
uint32_t spill_crc32c(uint32_t crc, const void *p, size_t n);

/* ---- payload encoder ---- */

/* Zero-initialise. Grows with realloc; the first failure sets err (-ENOMEM; -EFBIG past
   SPILL_PAYLOAD_MAX bytes; -EOVERFLOW for bytes longer than a u32 prefix) and every later put
   is ignored, so the caller checks err once at the end. */
struct spill_buf {
    uint8_t *p;
    size_t len, cap;
    int err;
};

/* Each appends its value little-endian (nothing if err is set). */
void spill_put_u8(struct spill_buf *b, uint8_t v);
void spill_put_u32(struct spill_buf *b, uint32_t v);
void spill_put_u64(struct spill_buf *b, uint64_t v);
/* Two's complement as a u64. */
void spill_put_i64(struct spill_buf *b, int64_t v);
/* Low u64 half, then high u64 half (two's complement). */
void spill_put_i128(struct spill_buf *b, __int128 v);
/* A u32 length prefix, then n bytes of s (s may be NULL when n == 0). */
void spill_put_bytes(struct spill_buf *b, const void *s, size_t n);
/* Free the buffer and zero the struct (reusable). */
void spill_buf_free(struct spill_buf *b);

/* ---- payload decoder ---- */

/* A read position in [p, p + len). Reading past the end sets bad (sticky): that get and every
   later one return 0 / NULL and never read outside the buffer. */
struct spill_cur {
    const uint8_t *p;
    size_t len, off;
    bool bad;
};

/* A cursor at the start of p[0..len). */
struct spill_cur spill_cur_init(const void *p, size_t len);
/* The next value, or 0 (and bad set) if it does not fit. */
uint8_t spill_get_u8(struct spill_cur *c);
uint32_t spill_get_u32(struct spill_cur *c);
uint64_t spill_get_u64(struct spill_cur *c);
int64_t spill_get_i64(struct spill_cur *c);
__int128 spill_get_i128(struct spill_cur *c);
/* A spill_put_bytes field: a pointer into the buffer and *n, or NULL and *n = 0 (bad set) if
   the prefix or the bytes do not fit. */
const uint8_t *spill_get_bytes(struct spill_cur *c, size_t *n);
/* true when every byte was consumed and nothing was bad. */
bool spill_cur_done(const struct spill_cur *c);

#endif
