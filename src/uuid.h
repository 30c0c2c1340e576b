/*
 * uuid — random (version 4) UUIDs for tenant and counter ids, and strict parsing of their text
 * form (SPEC §2.3: "IDs are UUIDs (text form); a malformed one → 400 INVALID_ID").
 *
 * Owns: nothing global. A struct uuid_gen is a pool of getrandom(2) bytes owned by one thread
 * (each worker / the admin path has its own): 4096 bytes = 256 ids per syscall. uuid_parse and
 * uuid_format are pure; any thread.
 */
#ifndef RC_UUID_H
#define RC_UUID_H

#include <stddef.h>
#include <stdint.h>

#define UUID_TEXT_LEN 36 /* 8-4-4-4-12 hex digits and dashes */
#define UUID_POOL 4096

struct uuid_gen {
    size_t pos; /* next unused byte of pool; UUID_POOL = empty (a zeroed struct is ready to use) */
    uint8_t pool[UUID_POOL];
};

/* Initialise g as empty (the first uuid_v4 fills it). */
void uuid_gen_init(struct uuid_gen *g);
/* A new random version-4 (RFC 9562 variant 10xx) UUID into out. 0, or -errno of getrandom. */
int uuid_v4(struct uuid_gen *g, uint8_t out[16]);
/* Lower-case 8-4-4-4-12 text of u into out (UUID_TEXT_LEN bytes, no NUL). */
void uuid_format(const uint8_t u[16], char *out);
/* Parse exactly n bytes of 8-4-4-4-12 hex (either case) into out. 0 or -EINVAL. */
int uuid_parse(const char *s, size_t n, uint8_t out[16]);

#endif
