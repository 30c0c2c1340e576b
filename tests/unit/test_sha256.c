/* Unit tests for src/sha256: the FIPS 180-4 examples (NIST CSRC "SHA256.pdf": "abc", the
   448-bit two-block message), the empty message, a million 'a' (NIST's long-message vector),
   and every split of a message into two updates giving the same digest. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "sha256.h"

static void hex(const uint8_t d[SHA256_LEN], char out[2 * SHA256_LEN + 1])
{
    for (int i = 0; i < SHA256_LEN; i++)
        snprintf(out + 2 * i, 3, "%02x", d[i]);
}

static void check(const char *msg, size_t n, const char *want)
{
    uint8_t d[SHA256_LEN];
    char h[2 * SHA256_LEN + 1];
    sha256(msg, n, d);
    hex(d, h);
    cr_assert_str_eq(h, want, "message of %zu bytes", n);
}

Test(sha256, fips_180_4_vectors)
{
    check("abc", 3, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    check("", 0, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    const char *m448 = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    check(m448, strlen(m448), "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
    const char *m896 = "abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnop"
                       "jklmnopqklmnopqrlmnopqrsmnopqrstnopqrstu";
    check(m896, strlen(m896), "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1");
}

Test(sha256, million_a)
{
    static char a[1000];
    memset(a, 'a', sizeof(a));
    struct sha256 c;
    sha256_init(&c);
    for (int i = 0; i < 1000; i++)
        sha256_update(&c, a, sizeof(a));
    uint8_t d[SHA256_LEN];
    char h[2 * SHA256_LEN + 1];
    sha256_final(&c, d);
    hex(d, h);
    cr_assert_str_eq(h, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

Test(sha256, split_updates_agree)
{
    char msg[200];
    for (size_t i = 0; i < sizeof(msg); i++)
        msg[i] = (char)(i * 7 + 3);
    /* 55, 56, 63, 64, 65: the padding boundaries */
    for (size_t n = 0; n <= sizeof(msg); n++) {
        uint8_t one[SHA256_LEN];
        sha256(msg, n, one);
        for (size_t k = 0; k <= n; k++) {
            struct sha256 c;
            uint8_t two[SHA256_LEN];
            sha256_init(&c);
            sha256_update(&c, msg, k);
            sha256_update(&c, msg + k, n - k);
            sha256_final(&c, two);
            cr_assert_eq(memcmp(one, two, SHA256_LEN), 0, "n %zu split %zu", n, k);
        }
    }
}
