/*
 * fmt — allocation-free number formatting for response bodies and headers.
 * Pure; any thread.
 */
#ifndef RC_FMT_H
#define RC_FMT_H

#include <stddef.h>
#include <stdint.h>

/* Write v in decimal at p (no NUL); returns the number of bytes (1..20). */
size_t fmt_u64(char *p, uint64_t v);
/* Write v in decimal at p (no NUL); returns the number of bytes (1..20). */
size_t fmt_i64(char *p, int64_t v);
/* Write v in decimal at p (no NUL); returns the number of bytes (1..40). */
size_t fmt_i128(char *p, __int128 v);
/* Parse an optionally signed decimal integer ("-12", "+3", "45": PostgreSQL numeric/bigint text)
   into *out: 0 / -EINVAL (empty, or a non-digit). No overflow check past 39 digits. */
int fmt_parse_i128(const char *s, __int128 *out);

/* RFC 3339 "YYYY-MM-DDTHH:MM:SS.mmmZ" (UTC, ms) of unix ms at p, no NUL: the log's "ts" and
   the tenants' created_at. Days to civil date by hand (H. Hinnant's algorithm, proleptic
   Gregorian) rather than gmtime_r, which takes glibc's tz lock on every call; years clamp to
   0000..9999. Returns 24. */
#define FMT_TIME_LEN 24
size_t fmt_time_ms(char *p, int64_t unix_ms);
/* Parse RFC 3339 "YYYY-MM-DDTHH:MM:SS[.fraction](Z|+HH:MM|-HH:MM)" (exactly n bytes; 't', 'z'
   and a space for 'T' accepted, fraction cut to ms) into unix ms: 0 / -EINVAL. */
int fmt_parse_time_ms(const char *s, size_t n, int64_t *unix_ms);

#endif
