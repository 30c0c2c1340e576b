/*
 * fz — shared helpers of the libFuzzer targets in fuzz/ (never linked into the server).
 *
 * Owns: nothing. Header-only: an invariant check that aborts (libFuzzer then saves the input
 * as a crash artifact), exact-size copies (so ASan flags any read one byte past the input), and
 * a tiny deterministic PRNG for split points derived from the input itself (a replayed crash
 * file must take the same path). Any thread; no global state.
 */
#ifndef FZ_H
#define FZ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Abort with a message when an invariant does not hold: libFuzzer reports it as a crash. */
#define FZ_CHECK(cond, ...)                                                                        \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: invariant failed: %s: ", __FILE__, __LINE__, #cond);           \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fputc('\n', stderr);                                                                   \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

/* A malloc'd copy of exactly n bytes (at least 1 allocated so n == 0 is a valid pointer). */
static inline char *fz_dup(const void *p, size_t n)
{
    char *b = malloc(n ? n : 1);
    if (!b)
        abort();
    if (n)
        memcpy(b, p, n);
    return b;
}

/* splitmix64: a deterministic PRNG; state seeded from input bytes. Returns the next value. */
static inline uint64_t fz_next(uint64_t *state)
{
    uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* FNV-1a of n bytes: a seed that depends on the whole input. */
static inline uint64_t fz_hash(const void *p, size_t n)
{
    const unsigned char *s = p;
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++)
        h = (h ^ s[i]) * 0x100000001b3ull;
    return h;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

#endif
