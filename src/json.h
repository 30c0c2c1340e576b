/*
 * json — strict RFC 8259 parsing of small request bodies, and JSON string escaping.
 *
 * Owns: nothing (pure functions, no globals, no malloc, no floating point); any thread may call.
 * The parser reads one flat object in a single pass and fills a caller-given table of typed
 * fields; everything else is validated and skipped. It runs once per POST /event (200k+/s), so
 * strings without escapes are copied with one memcpy after an 8-bytes-at-a-time scan.
 *
 * Strictness decisions (all RFC 8259 unless marked):
 *  - The body must be exactly one object; whitespace is space, \t, \n, \r only.
 *  - Nesting depth <= JSON_MAX_DEPTH, counting the top-level object as 1; deeper is a syntax error.
 *  - Raw invalid UTF-8 (overlong, surrogate, > U+10FFFF, truncated, stray continuation) is a
 *    field error (JSON_E_STRING) in a wanted string field, and a syntax error anywhere else
 *    (keys, skipped values). \u escapes of lone surrogates are grammatical, so they are accepted
 *    in skipped values; in a wanted string field they are JSON_E_STRING; a key holding one
 *    matches no field.
 *  - NaN, Infinity, -Infinity are accepted only as the value of a wanted JSON_T_NUMBER field
 *    (-> JSON_E_NONFINITE); anywhere else they are syntax errors (not JSON).
 */
#ifndef RC_JSON_H
#define RC_JSON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "decimal.h"
#include "lit.h"

#define JSON_MAX_DEPTH 32
#define JSON_KEY_MAX 64 /* keys are unescaped into a stack buffer; longer keys match no field */

enum json_type {
    JSON_T_STRING,
    JSON_T_NUMBER, /* any JSON number -> dec_t (rounded half-to-even to 6 fraction digits) */
    JSON_T_INT,    /* JSON integer (no fraction, no exponent) -> int64_t; 1.0 / 1e3 are JSON_E_TYPE */
    JSON_T_BOOL,
    JSON_T_RAW,    /* any JSON value (null, array, object ...), validated -> its text: out is a
                      const char **, *len its length (an array the caller reads itself) */
};

enum json_err {
    JSON_OK = 0,
    JSON_E_SYNTAX = -1,
    JSON_E_TYPE = -2,      /* wrong JSON type, null included */
    JSON_E_RANGE = -3,     /* NUMBER: |v| > max_abs; INT: outside int64 */
    JSON_E_STRING = -4,    /* invalid UTF-8, lone surrogate, or longer than cap */
    JSON_E_NONFINITE = -5, /* NaN / Infinity / -Infinity for a NUMBER field */
};

struct json_field {
    const char *key;     /* in: NUL-terminated, compared with the unescaped key */
    enum json_type type; /* in */
    void *out;           /* in: STRING: char[cap] (unescaped UTF-8, not NUL-terminated);
                            NUMBER: dec_t *; INT: int64_t *; BOOL: bool * */
    size_t cap;          /* in: STRING buffer size */
    size_t *len;         /* in: STRING: where the unescaped length goes (may be NULL) */
    dec_t max_abs;       /* in: NUMBER: bound passed to dec_parse */
    bool present;        /* out: the key appeared, whatever its value (null too) */
    enum json_err err;   /* out: JSON_OK or the error of the last occurrence of the key */
};

/* Parse body as one JSON object and fill the fields whose key appears (the last duplicate wins;
   *out / *len are valid only when present && err == JSON_OK). Field problems do not fail the
   parse, they land in field->err. Returns JSON_OK or JSON_E_SYNTAX (then fields are garbage). */
int json_parse_object(const char *body, size_t len, struct json_field *fields, size_t nfields);

/* POST /event body: {"userId": string of 1..256 bytes after unescaping, valid UTF-8;
   "value": number, |v| <= 1e15, missing -> 0}; other keys are ignored. */
enum json_event_err {
    JSON_EV_OK = 0,
    JSON_EV_INVALID_JSON,
    JSON_EV_INVALID_USER_ID,
    JSON_EV_INVALID_VALUE,
};
#define JSON_USER_MAX 256
#define JSON_EVENT_VALUE_MAX ((dec_t)1000000000000000LL * DEC_SCALE) /* 1e15, in micro-units */
struct json_event {
    char user[JSON_USER_MAX]; /* unescaped bytes, not NUL-terminated */
    size_t user_len;
    dec_t value;
};

/* Returns JSON_EV_*, checked in this order: syntax (also: not an object), then userId (missing,
   not a string, empty, > 256 bytes, invalid UTF-8 or lone surrogate), then value (not a number,
   null included; NaN/Infinity/-Infinity; |v| > 1e15). ev is meaningful only on JSON_EV_OK. */
int json_parse_event(const char *body, size_t len, struct json_event *ev);

/* Write n bytes of src as the inside of a JSON string into dst (at most cap bytes, no NUL):
   '"' and '\\' backslashed, bytes < 0x20 as \u00XX, each byte not part of a valid UTF-8
   sequence as \ufffd, everything else copied. Returns bytes written, or -ENOSPC if it does not
   all fit (dst contents are then unspecified). */
ssize_t json_escape(char *dst, size_t cap, const char *src, size_t n);

/* ---- the one bounded JSON writer (response bodies, the tenants' objects, cfg_dump) ----
   Appends into a caller's buffer; once something does not fit it stops writing and remembers,
   so a sequence of calls needs one check at the end (json_w_end). No allocation; any thread. */
struct json_w {
    char *p;
    size_t len, cap;
    bool full;
};
/* Start writing into buf[0..cap) (one byte is kept for the NUL json_w_end writes). */
void json_w_init(struct json_w *w, char *buf, size_t cap);
/* n bytes as they are (JSON text the caller vouches for: punctuation, names, numbers). */
void json_w_raw(struct json_w *w, const char *s, size_t n);
/* A JSON string: the quotes and n bytes of s escaped as json_escape does. */
void json_w_str(struct json_w *w, const char *s, size_t n);
/* Numbers: decimal integers, and a dec_t with up to 6 decimals (dec_format). */
void json_w_u64(struct json_w *w, uint64_t v);
void json_w_i64(struct json_w *w, int64_t v);
void json_w_i128(struct json_w *w, __int128 v);
void json_w_dec(struct json_w *w, dec_t v);
/* NUL-terminate: the length written (without the NUL), or -ENOSPC if anything did not fit. */
ssize_t json_w_end(struct json_w *w);
/* A literal as raw JSON text, its length by sizeof. */
#define json_w_lit(w, lit) json_w_raw((w), LIT(lit))

#endif
