/* Unit tests for src/tnkeys: key text format, create/find/verify/revoke, expiry, scopes, tenant
   scoping, capacity, RFC 3339 parsing and the JSON shape (never the verifier). */
#include <criterion/criterion.h>
#include <errno.h>
#include <string.h>

#include "tnkeys.h"

static const uint8_t T1[16] = {1, 2, 3, 4, 5, 6, 0x40, 8, 0x80, 10, 11, 12, 13, 14, 15, 16};
static const uint8_t T2[16] = {9, 9, 9, 9, 9, 9, 0x49, 9, 0x89, 9, 9, 9, 9, 9, 9, 9};

static const struct tnk_key *make(struct tnk_store *st, const uint8_t *tid, uint32_t scopes,
                                  int64_t exp, char text[TNK_TEXT_LEN + 1])
{
    uint8_t id[16], ver[SHA256_LEN];
    const struct tnk_key *k = NULL;
    cr_assert_eq(tnk_mint(id, text, ver), 0);
    cr_assert_eq(tnk_insert(st, id, tid, ver, scopes, exp, 1000, false, &k), 0);
    return k;
}

Test(tnkeys, text_format)
{
    uint8_t id[16], ver[SHA256_LEN];
    char text[TNK_TEXT_LEN + 1];
    cr_assert_eq(tnk_mint(id, text, ver), 0);
    cr_assert_eq(strlen(text), 80);
    cr_assert_eq(memcmp(text, "rck_", 4), 0);
    cr_assert_eq(text[36], '.');
    for (int i = 4; i < 36; i++)
        cr_assert(strchr("0123456789abcdef", text[i]), "hex at %d", i);
    for (int i = 37; i < 80; i++)
        cr_assert(strchr("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_",
                         text[i]), "base64url at %d", i);
    uint8_t d[SHA256_LEN];
    sha256(text + 37, 43, d);
    cr_assert_eq(memcmp(d, ver, SHA256_LEN), 0, "the verifier is SHA-256 of the secret");
    uint8_t id2[16], ver2[SHA256_LEN];
    char text2[TNK_TEXT_LEN + 1];
    cr_assert_eq(tnk_mint(id2, text2, ver2), 0);
    cr_assert_neq(memcmp(id, id2, 16), 0);
    cr_assert_neq(strcmp(text + 37, text2 + 37), 0);
}

Test(tnkeys, check_verify_scope_tenant)
{
    struct tnk_store *st = tnk_new(16, 42);
    char text[TNK_TEXT_LEN + 1];
    const struct tnk_key *k = make(st, T1, TNK_SCOPES_DEFAULT, 0, text), *got = NULL;
    cr_assert_eq(tnk_find(st, k->id), k);
    cr_assert_eq(tnk_check(st, text, 80, T1, TNK_COUNTER_READ, 5000, &got), TNK_OK);
    cr_assert_eq(got, k);
    cr_assert_eq(tnk_check(st, text, 80, T1, 0, 5000, NULL), TNK_OK);
    cr_assert_eq(tnk_check(st, text, 80, T1, TNK_KEYS_MANAGE, 5000, NULL), TNK_SCOPE);
    cr_assert_eq(tnk_check(st, text, 80, T2, TNK_COUNTER_READ, 5000, NULL), TNK_WRONG_TENANT);
    cr_assert_eq(tnk_check(st, text, 80, NULL, 0, 5000, NULL), TNK_WRONG_TENANT);
    char bad[TNK_TEXT_LEN + 1];
    memcpy(bad, text, sizeof(bad));
    bad[50] = bad[50] == 'A' ? 'B' : 'A';
    cr_assert_eq(tnk_check(st, bad, 80, T1, 0, 5000, NULL), TNK_BAD_SECRET);
    memcpy(bad, text, sizeof(bad));
    bad[10] = bad[10] == '0' ? '1' : '0';
    cr_assert_eq(tnk_check(st, bad, 80, T1, 0, 5000, NULL), TNK_UNKNOWN);
    cr_assert_eq(tnk_check(st, text, 79, T1, 0, 5000, NULL), TNK_UNKNOWN);
    cr_assert_eq(tnk_check(st, "secret", 6, T1, 0, 5000, NULL), TNK_UNKNOWN);
    cr_assert_eq(tnk_check(NULL, text, 80, T1, 0, 5000, NULL), TNK_UNKNOWN);
    tnk_free(st);
}

Test(tnkeys, expiry_and_revocation)
{
    struct tnk_store *st = tnk_new(16, 1);
    char text[TNK_TEXT_LEN + 1], text2[TNK_TEXT_LEN + 1];
    const struct tnk_key *k = make(st, T1, TNK_SCOPES_ALL, 10000, text);
    cr_assert_eq(tnk_check(st, text, 80, T1, TNK_KEYS_MANAGE, 9999, NULL), TNK_OK);
    cr_assert_eq(tnk_check(st, text, 80, T1, TNK_KEYS_MANAGE, 10000, NULL), TNK_EXPIRED);
    cr_assert_eq(tnk_delete(st, k), 0);
    cr_assert_eq(tnk_delete(st, k), -ENOENT);
    cr_assert(tnk_deleted(k));
    cr_assert_eq(tnk_check(st, text, 80, T1, 0, 5000, NULL), TNK_REVOKED);
    cr_assert_eq(tnk_list(st, T1, (const struct tnk_key *[4]){0}, 4), 0);
    /* a tenant's delete revokes its keys and no other tenant's */
    const struct tnk_key *a = make(st, T1, TNK_SCOPES_DEFAULT, 0, text);
    const struct tnk_key *b = make(st, T2, TNK_SCOPES_DEFAULT, 0, text2);
    cr_assert_eq(tnk_delete_tenant(st, T1), 1);
    cr_assert(tnk_deleted(a));
    cr_assert_not(tnk_deleted(b));
    cr_assert_eq(tnk_check(st, text2, 80, T2, 0, 5000, NULL), TNK_OK);
    tnk_free(st);
}

Test(tnkeys, insert_list_capacity)
{
    struct tnk_store *st = tnk_new(3, 7);
    char text[TNK_TEXT_LEN + 1];
    const struct tnk_key *a = make(st, T1, TNK_COUNTER_READ, 0, text);
    make(st, T2, TNK_COUNTER_READ, 0, text);
    const struct tnk_key *c = make(st, T1, TNK_COUNTER_SET, 0, text);
    const struct tnk_key *out[4];
    cr_assert_eq(tnk_list(st, T1, out, 4), 2);
    cr_assert_eq(out[0], a);
    cr_assert_eq(out[1], c);
    cr_assert_eq(tnk_list(st, T1, out, 1), 1);
    uint8_t id[16], ver[SHA256_LEN];
    cr_assert_eq(tnk_mint(id, text, ver), 0);
    cr_assert_eq(tnk_insert(st, id, T1, ver, 1, 0, 0, false, NULL), -ENOSPC);
    const struct tnk_key *dup = NULL;
    cr_assert_eq(tnk_insert(st, a->id, T1, ver, 1, 0, 0, false, &dup), -EEXIST);
    cr_assert_eq(dup, a);
    cr_assert_eq(tnk_insert(st, id, T1, ver, 1u << 6, 0, 0, false, NULL), -EINVAL);
    cr_assert_eq(tnk_count(st), 3);
    tnk_free(st);
    /* more than one chunk (1,024 records): every id is found */
    st = tnk_new(3000, 9);
    static const struct tnk_key *all[3000];
    for (int i = 0; i < 3000; i++)
        all[i] = make(st, T1, 1, 0, text);
    for (int i = 0; i < 3000; i++)
        cr_assert_eq(tnk_find(st, all[i]->id), all[i], "record %d", i);
    cr_assert_eq(tnk_check(st, text, 80, T1, TNK_COUNTER_READ, 0, NULL), TNK_OK);
    tnk_free(st);
}

Test(tnkeys, scopes_and_names)
{
    cr_assert_eq(tnk_scope_bit("counter:read", 12), TNK_COUNTER_READ);
    cr_assert_eq(tnk_scope_bit("keys:manage", 11), TNK_KEYS_MANAGE);
    cr_assert_eq(tnk_scope_bit("counter:history", 15), TNK_COUNTER_HISTORY);
    cr_assert_eq(tnk_scope_bit("counter:reads", 13), 0);
    cr_assert_eq(tnk_scope_bit("admin", 5), 0);
    cr_assert_str_eq(tnk_scope_name(TNK_COUNTER_DELETE), "counter:delete");
    cr_assert_str_eq(tnk_result_name(TNK_WRONG_TENANT), "wrong_tenant");
    cr_assert_str_eq(tnk_result_name(TNK_BAD_SECRET), "bad_secret");
    cr_assert_eq(TNK_SCOPES_DEFAULT & TNK_KEYS_MANAGE, 0);
}

Test(tnkeys, parse_time)
{
    int64_t ms;
    cr_assert_eq(tnk_parse_time("1970-01-01T00:00:01Z", 20, &ms), 0);
    cr_assert_eq(ms, 1000);
    cr_assert_eq(tnk_parse_time("2026-12-02T17:00:00.250Z", 24, &ms), 0);
    cr_assert_eq(ms, 1796230800250ll);
    cr_assert_eq(tnk_parse_time("2026-12-02T18:00:00+01:00", 25, &ms), 0);
    cr_assert_eq(ms, 1796230800000ll);
    cr_assert_eq(tnk_parse_time("2024-02-29T00:00:00Z", 20, &ms), 0);
    cr_assert_eq(tnk_parse_time("2023-02-29T00:00:00Z", 20, &ms), -EINVAL);
    cr_assert_eq(tnk_parse_time("2026-13-01T00:00:00Z", 20, &ms), -EINVAL);
    cr_assert_eq(tnk_parse_time("2026-12-02 17:00:00Z", 20, &ms), -EINVAL);
    cr_assert_eq(tnk_parse_time("2026-12-02T17:00:00", 19, &ms), -EINVAL);
    cr_assert_eq(tnk_parse_time("2026-12-02T17:00:00.Z", 21, &ms), -EINVAL);
    cr_assert_eq(tnk_parse_time("tomorrow", 8, &ms), -EINVAL);
}

Test(tnkeys, json_never_shows_the_verifier)
{
    struct tnk_store *st = tnk_new(4, 3);
    char text[TNK_TEXT_LEN + 1], out[TNK_JSON_MAX];
    const struct tnk_key *k = make(st, T1, TNK_COUNTER_READ | TNK_KEYS_MANAGE, 1000, text);
    size_t n = tnk_json(k, false, NULL, out);
    cr_assert_eq(n, strlen(out));
    cr_assert(strstr(out, "\"scopes\":[\"counter:read\",\"keys:manage\"]"), "%s", out);
    cr_assert(strstr(out, "\"expires_at\":\"1970-01-01T00:00:01.000Z\""), "%s", out);
    cr_assert_null(strstr(out, "tenant_id"));
    cr_assert_null(strstr(out, "\"key\""));
    cr_assert_null(strstr(out, text + 37));
    tnk_json(k, true, text, out);
    cr_assert(strstr(out, "\"tenant_id\":\"01020304-0506-4008-800a-0b0c0d0e0f10\""), "%s", out);
    cr_assert(strstr(out, text), "%s", out);
    tnk_free(st);
}
