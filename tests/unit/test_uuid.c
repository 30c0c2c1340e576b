/* Unit tests for src/uuid: version/variant bits, uniqueness across pool refills, text round
   trip, strict parsing. */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "uuid.h"

Test(uuid, v4_bits_and_uniqueness)
{
    static struct uuid_gen g;
    uuid_gen_init(&g);
    enum { N = 1000 }; /* ~4 pool refills */
    static uint8_t ids[N][16];
    for (int i = 0; i < N; i++) {
        cr_assert_eq(uuid_v4(&g, ids[i]), 0);
        cr_assert_eq(ids[i][6] >> 4, 4, "version");
        cr_assert_eq(ids[i][8] >> 6, 2, "variant");
        for (int j = 0; j < i; j++)
            cr_assert_neq(memcmp(ids[i], ids[j], 16), 0, "duplicate %d %d", i, j);
    }
}

Test(uuid, format_parse_round_trip)
{
    const uint8_t u[16] = {0x12, 0x3e, 0x45, 0x67, 0xe8, 0x9b, 0x42, 0xd3,
                           0xa4, 0x56, 0x42, 0x66, 0x14, 0x17, 0x40, 0x00};
    char txt[UUID_TEXT_LEN + 1] = {0};
    uuid_format(u, txt);
    cr_assert_str_eq(txt, "123e4567-e89b-42d3-a456-426614174000");
    uint8_t back[16];
    cr_assert_eq(uuid_parse(txt, UUID_TEXT_LEN, back), 0);
    cr_assert_arr_eq(back, u, 16);
    cr_assert_eq(uuid_parse("123E4567-E89B-42D3-A456-426614174000", 36, back), 0);
    cr_assert_arr_eq(back, u, 16);
}

Test(uuid, parse_rejects)
{
    static const char *bad[] = {
        "",
        "123e4567e89b42d3a456426614174000",        /* no dashes */
        "123e4567-e89b-42d3-a456-42661417400",     /* short */
        "123e4567-e89b-42d3-a456-4266141740000",   /* long */
        "123e4567-e89b-42d3-a456_426614174000",    /* wrong separator */
        "123e456-7e89b-42d3-a456-426614174000",    /* dash misplaced */
        "123e4567-e89b-42d3-a456-42661417400g",    /* not hex */
        "{23e4567-e89b-42d3-a456-426614174000",
        "123e4567-e89b-42d3-a456-4266141740 0",
        "123e4567--89b-42d3-a456-426614174000",
    };
    uint8_t out[16];
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        cr_assert_eq(uuid_parse(bad[i], strlen(bad[i]), out), -EINVAL, "%s", bad[i]);
}
