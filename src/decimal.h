/*
 * decimal — exact fixed-point decimals for event values, sums and averages (SPEC §2.1).
 *
 * Owns: nothing (pure functions, no globals, no malloc, no floating point); any thread may call.
 * A dec_t holds value * 10^6 ("micro-units") in a signed 128-bit integer: |value| up to ~1.7e32,
 * so 10^11 events of |value| <= 1e15 still sum exactly (1e26 < 1.7e32).
 */
#ifndef RC_DECIMAL_H
#define RC_DECIMAL_H

#include <stddef.h>
#include <stdint.h>

typedef __int128 dec_t; /* micro-units: value * 1e6 */

#define DEC_SCALE 1000000
#define DEC_FMT_MAX 48 /* "-" + 33 integer digits + "." + 6 digits + NUL = 42, rounded up */
#define DEC_MAX ((dec_t)(((unsigned __int128)1 << 127) - 1))
#define DEC_MIN (-DEC_MAX - 1)

/* Parse a JSON number literal (RFC 8259: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?) of
   exactly n bytes into micro-units; digits past the 6th fractional one are rounded half-to-even
   (every remaining digit counts). 0, -EINVAL (not a JSON number), -ERANGE (exact |value| > max_abs). */
int dec_parse(const char *s, size_t n, dec_t max_abs, dec_t *out);

/* Write v as the shortest exact decimal, no exponent ("500000000", "499.5", "-0.000001", "0"),
   NUL-terminated into buf (>= DEC_FMT_MAX bytes). Returns the length without the NUL. */
size_t dec_format(dec_t v, char *buf);

/* num/den rounded half-to-even; den must be > 0 (den == 0 returns 0). Never overflows. */
dec_t dec_div_round(dec_t num, uint64_t den);

/* Parse a base-10 int64 of exactly n bytes (JSON integer grammar: optional '-', no '+', no
   leading zeros, "-0" is 0). 0, -EINVAL, -ERANGE. */
int dec_parse_i64(const char *s, size_t n, int64_t *out);

#endif
