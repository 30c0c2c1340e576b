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

#endif
