/* Unit tests for src/json: the /event body contract (error classes and their order, escapes,
   UTF-8, bounds, duplicates, unknown fields, depth), the generic field extractor, json_escape. */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"

#define E15 JSON_EVENT_VALUE_MAX
#define B(s) s, sizeof(s) - 1 /* literal with its exact length (bodies may hold NUL bytes) */

/* ---------- POST /event bodies ---------- */

struct ev_case {
    const char *body;
    size_t len;
    int rc;
    const char *user; /* expected bytes when rc == OK */
    size_t user_len;
    dec_t value;
};

#define OK(body, user, value) {B(body), JSON_EV_OK, B(user), value}
#define BAD(body, rc) {B(body), rc, NULL, 0, 0}
#define JSN JSON_EV_INVALID_JSON
#define UID JSON_EV_INVALID_USER_ID
#define VAL JSON_EV_INVALID_VALUE

static const struct ev_case ev_cases[] = {
    /* accepted */
    OK("{\"userId\":\"u1\",\"value\":1}", "u1", 1000000),
    OK("{\"value\":1.5,\"userId\":\"u1\"}", "u1", 1500000),
    OK("{\"userId\":\"u1\"}", "u1", 0), /* missing value counts as 0 */
    OK(" \t\r\n{ \"userId\" : \"u1\" ,\n\"value\"\t:\r-2.5 } \n\t\r", "u1", -2500000),
    OK("{\"userId\":\"u1\",\"value\":0}", "u1", 0),
    OK("{\"userId\":\"u1\",\"value\":-0}", "u1", 0),
    OK("{\"userId\":\"u1\",\"value\":0.0000025}", "u1", 2),
    OK("{\"userId\":\"u1\",\"value\":0.0000015}", "u1", 2),
    OK("{\"userId\":\"u1\",\"value\":1E+2}", "u1", 100000000),
    OK("{\"userId\":\"u1\",\"value\":1e-7}", "u1", 0),
    OK("{\"userId\":\"u1\",\"value\":1e15}", "u1", E15),
    OK("{\"userId\":\"u1\",\"value\":-1e15}", "u1", -E15),
    OK("{\"userId\":\"u1\",\"value\":1000000000000000.000000}", "u1", E15),
    OK("{\"userId\":\"u1\",\"value\":0e999999999}", "u1", 0),
    /* unescaping: every RFC escape, \u forms, surrogate pairs */
    OK("{\"userId\":\"caf\\u00e9\"}", "caf\xc3\xa9", 0),
    OK("{\"userId\":\"caf\xc3\xa9\"}", "caf\xc3\xa9", 0),
    OK("{\"userId\":\"a\\\"b\\\\c\\/d\\be\\ff\\ng\\rh\\ti\"}", "a\"b\\c/d\be\ff\ng\rh\ti", 0),
    OK("{\"userId\":\"\\u0041\\u00e9\\u20AC\\uD83D\\uDE00\\ud83d\\ude00\"}",
       "A\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\xf0\x9f\x98\x80", 0),
    OK("{\"userId\":\"\\u0000\"}", "\0", 0),
    OK("{\"userId\":\"\\u007f\\u0080\\u07ff\\u0800\\uffff\"}",
       "\x7f\xc2\x80\xdf\xbf\xe0\xa0\x80\xef\xbf\xbf", 0),
    OK("{\"userId\":\"\\ud800\\udc00\\udbff\\udfff\"}", "\xf0\x90\x80\x80\xf4\x8f\xbf\xbf", 0),
    /* raw UTF-8 at every boundary, and DEL */
    OK("{\"userId\":\"\xc2\x80\xdf\xbf\xe0\xa0\x80\xed\x9f\xbf\xee\x80\x80\xef\xbf\xbf"
       "\xf0\x90\x80\x80\xf4\x8f\xbf\xbf\x7f\"}",
       "\xc2\x80\xdf\xbf\xe0\xa0\x80\xed\x9f\xbf\xee\x80\x80\xef\xbf\xbf"
       "\xf0\x90\x80\x80\xf4\x8f\xbf\xbf\x7f",
       0),
    /* a long plain userId (word-at-a-time scan) with an escape near the end */
    OK("{\"userId\":\"abcdefghijklmnopqrstuvwxyz0123456789ABCDEF\\n\"}",
       "abcdefghijklmnopqrstuvwxyz0123456789ABCDEF\n", 0),
    /* unknown fields of every type are skipped */
    OK("{\"a\":\"x\",\"b\":1,\"c\":-1.5e-3,\"d\":true,\"e\":false,\"f\":null,\"g\":{},\"h\":[],"
       "\"i\":{\"x\":[1,{\"y\":null}],\"z\":\"\\u00e9\\ud800\"},\"j\":[true,false,null,\"s\",0,{}],"
       "\"userId\":\"u\",\"k\":\"\\\"\\\\\\/\\b\\f\\n\\r\\t\\u1234\",\"l\":[ 1 , [ ] , { \"a\" : 2 } ],"
       "\"m\":1e999999999,\"n\":-0.0E-0}",
       "u", 0),
    OK("{\"\\u0061\":1,\"userId\":\"u\"}", "u", 0),
    OK("{\"userid\":\"x\",\"userId\":\"u\",\"userIdx\":\"y\",\"value \":\"z\",\"Value\":[]}", "u", 0),
    OK("{\"user\\u0000Id\":1,\"userId\\u0000\":2,\"userId\":\"u\"}", "u", 0),
    OK("{\"userId\\ud800\":1,\"userId\":\"u\"}", "u", 0),
    OK("{\"userId\":\"u\",\"userId\\ud800\":1,\"\\udc00userId\":2}", "u", 0),
    /* keys are compared after unescaping */
    OK("{\"\\u0075serId\":\"u\",\"v\\u0061lue\":3}", "u", 3000000),
    /* duplicates: the last one wins, its errors too */
    OK("{\"userId\":\"a\",\"userId\":\"b\"}", "b", 0),
    OK("{\"userId\":\"u\",\"value\":1,\"value\":2}", "u", 2000000),
    OK("{\"userId\":1,\"userId\":\"a\"}", "a", 0),
    OK("{\"userId\":\"\\ud800\",\"userId\":\"a\"}", "a", 0),
    OK("{\"userId\":\"u\",\"value\":\"x\",\"value\":1}", "u", 1000000),
    OK("{\"userId\":\"u\",\"value\":NaN,\"value\":7}", "u", 7000000),
    OK("{\"userId\":\"u\",\"value\":1e16,\"value\":7}", "u", 7000000),
    BAD("{\"userId\":\"a\",\"userId\":\"\"}", UID),
    BAD("{\"userId\":\"a\",\"userId\":null}", UID),
    BAD("{\"userId\":\"u\",\"value\":1,\"value\":null}", VAL),

    /* not one well-formed object */
    BAD("", JSN),
    BAD(" \r\n\t", JSN),
    BAD("{", JSN),
    BAD("}", JSN),
    BAD("[]", JSN),
    BAD("[{\"userId\":\"u\"}]", JSN),
    BAD("\"u\"", JSN),
    BAD("1", JSN),
    BAD("null", JSN),
    BAD("{\"userId\":\"u\"}x", JSN),
    BAD("{\"userId\":\"u\"}{}", JSN),
    BAD("{\"userId\":\"u\"},", JSN),
    BAD("{\"userId\":\"u\"}\0", JSN),
    BAD("\0{\"userId\":\"u\"}", JSN),
    BAD("{\"userId\":\"u\"} \x0b", JSN), /* VT is not JSON whitespace */
    BAD("\xef\xbb\xbf{\"userId\":\"u\"}", JSN), /* no BOM */
    BAD("{\"userId\":\"u\",}", JSN),
    BAD("{,\"userId\":\"u\"}", JSN),
    BAD("{\"userId\" \"u\"}", JSN),
    BAD("{\"userId\"::\"u\"}", JSN),
    BAD("{\"userId\":\"u\" \"value\":1}", JSN),
    BAD("{\"userId\":\"u\";\"value\":1}", JSN),
    BAD("{'userId':'u'}", JSN),
    BAD("{userId:\"u\"}", JSN),
    BAD("{\"userId\":\"u\"", JSN),
    BAD("{\"userId\":\"u}", JSN),
    BAD("{\"userId\":\"u\\", JSN),
    BAD("{\"userId\":\"u\",\"value\":}", JSN),
    BAD("{\"userId\":\"u\",\"value\"}", JSN),
    BAD("{\"userId\":\"u\",\"value\":1 2}", JSN),
    BAD("{\"userId\":\"u\",\"x\":[1,]}", JSN),
    BAD("{\"userId\":\"u\",\"x\":[,1]}", JSN),
    BAD("{\"userId\":\"u\",\"x\":[1}", JSN),
    BAD("{\"userId\":\"u\",\"x\":{\"a\"}}", JSN),
    BAD("{\"userId\":\"u\",\"x\":{1:2}}", JSN),
    BAD("{\"userId\":\"u\",\"x\":tru}", JSN),
    BAD("{\"userId\":\"u\",\"x\":True}", JSN),
    BAD("{\"userId\":\"u\",\"x\":NULL}", JSN),
    BAD("{\"userId\":\"u\",\"x\":nul}", JSN),
    BAD("{\"userId\":\"u\",\"value\":truex}", JSN),
    BAD("{\"userId\":\"u\",\"value\":nullnull}", JSN),
    /* number grammar, in a wanted and in an unknown field */
    BAD("{\"userId\":\"u\",\"value\":01}", JSN),
    BAD("{\"userId\":\"u\",\"value\":-01}", JSN),
    BAD("{\"userId\":\"u\",\"value\":+1}", JSN),
    BAD("{\"userId\":\"u\",\"value\":.5}", JSN),
    BAD("{\"userId\":\"u\",\"value\":1.}", JSN),
    BAD("{\"userId\":\"u\",\"value\":1.e3}", JSN),
    BAD("{\"userId\":\"u\",\"value\":1e}", JSN),
    BAD("{\"userId\":\"u\",\"value\":1e+}", JSN),
    BAD("{\"userId\":\"u\",\"value\":-}", JSN),
    BAD("{\"userId\":\"u\",\"value\":--1}", JSN),
    BAD("{\"userId\":\"u\",\"value\":0x10}", JSN),
    BAD("{\"userId\":\"u\",\"value\":1.5.2}", JSN),
    BAD("{\"userId\":\"u\",\"x\":01}", JSN),
    BAD("{\"userId\":\"u\",\"x\":+1}", JSN),
    BAD("{\"userId\":\"u\",\"x\":.5}", JSN),
    BAD("{\"userId\":\"u\",\"x\":1.}", JSN),
    BAD("{\"userId\":\"u\",\"x\":1e}", JSN),
    BAD("{\"userId\":\"u\",\"x\":-}", JSN),
    /* non-finite literals are only recognised as the value of "value" */
    BAD("{\"userId\":\"u\",\"value\":-NaN}", JSN),
    BAD("{\"userId\":\"u\",\"value\":nan}", JSN),
    BAD("{\"userId\":\"u\",\"value\":inf}", JSN),
    BAD("{\"userId\":\"u\",\"value\":Inf}", JSN),
    BAD("{\"userId\":\"u\",\"value\":infinity}", JSN),
    BAD("{\"userId\":\"u\",\"value\":+Infinity}", JSN),
    BAD("{\"userId\":\"u\",\"value\":NaNx}", JSN),
    BAD("{\"userId\":\"u\",\"value\":Infinityy}", JSN),
    BAD("{\"userId\":\"u\",\"value\":[NaN]}", JSN),
    BAD("{\"userId\":NaN}", JSN),
    BAD("{\"userId\":\"u\",\"x\":NaN}", JSN),
    BAD("{\"userId\":\"u\",\"x\":Infinity}", JSN),
    BAD("{\"userId\":\"u\",\"x\":-Infinity}", JSN),
    /* strings: raw control characters and bad escapes, wanted or not */
    BAD("{\"userId\":\"a\x01\"}", JSN),
    BAD("{\"userId\":\"a\nb\"}", JSN),
    BAD("{\"userId\":\"a\tb\"}", JSN),
    BAD("{\"userId\":\"a\x1f\"}", JSN),
    BAD("{\"userId\":\"a\0\"}", JSN),
    BAD("{\"userId\":\"u\",\"x\":\"a\x01\"}", JSN),
    BAD("{\"us\x01erId\":\"u\"}", JSN),
    BAD("{\"userId\":\"\\x41\"}", JSN),
    BAD("{\"userId\":\"\\'\"}", JSN),
    BAD("{\"userId\":\"\\U0041\"}", JSN),
    BAD("{\"userId\":\"\\u12\"}", JSN),
    BAD("{\"userId\":\"\\u12g4\"}", JSN),
    BAD("{\"userId\":\"\\u\"}", JSN),
    BAD("{\"userId\":\"\\ud800\\u12\"}", JSN),
    BAD("{\"userId\":\"u\",\"x\":\"\\a\"}", JSN),
    BAD("{\"userId\":\"u\",\"x\":\"\\u00G0\"}", JSN),
    /* raw invalid UTF-8 outside a wanted string: syntax error (documented choice) */
    BAD("{\"userId\":\"u\",\"x\":\"\xff\"}", JSN),
    BAD("{\"userId\":\"u\",\"x\":[\"\xc0\xaf\"]}", JSN),
    BAD("{\"userId\":\"u\",\"\xff\":1}", JSN),
    BAD("{\"user\xc0\xafId\":\"u\"}", JSN),
    /* syntax beats a bad userId seen earlier */
    BAD("{\"userId\":1,\"value\":01}", JSN),
    BAD("{\"userId\":\"\xff\",}", JSN),

    /* userId */
    BAD("{}", UID),
    BAD("{\"value\":1}", UID),
    BAD("{\"userId\":\"\"}", UID),
    BAD("{\"userId\":1}", UID),
    BAD("{\"userId\":-1.5}", UID),
    BAD("{\"userId\":true}", UID),
    BAD("{\"userId\":false}", UID),
    BAD("{\"userId\":null}", UID),
    BAD("{\"userId\":{}}", UID),
    BAD("{\"userId\":[]}", UID),
    BAD("{\"userId\":[\"u\"]}", UID),
    BAD("{\"userId\":{\"userId\":\"u\"}}", UID),
    BAD("{\"UserId\":\"u\"}", UID),
    /* lone surrogates */
    BAD("{\"userId\":\"\\ud800\"}", UID),
    BAD("{\"userId\":\"\\udbff\"}", UID),
    BAD("{\"userId\":\"\\udc00\"}", UID),
    BAD("{\"userId\":\"\\udfff\"}", UID),
    BAD("{\"userId\":\"a\\ud83d\"}", UID),
    BAD("{\"userId\":\"\\ud800\\u0041\"}", UID),
    BAD("{\"userId\":\"\\ud800x\"}", UID),
    BAD("{\"userId\":\"\\ud800\\ud800\"}", UID),
    BAD("{\"userId\":\"\\udc00\\ud800\"}", UID),
    BAD("{\"userId\":\"\\ud800\\n\"}", UID),
    /* raw invalid UTF-8: overlong, surrogates, > U+10FFFF, stray/truncated sequences */
    BAD("{\"userId\":\"\xc0\xaf\"}", UID),
    BAD("{\"userId\":\"\xc1\xbf\"}", UID),
    BAD("{\"userId\":\"\xe0\x80\xaf\"}", UID),
    BAD("{\"userId\":\"\xe0\x9f\xbf\"}", UID),
    BAD("{\"userId\":\"\xf0\x80\x80\xaf\"}", UID),
    BAD("{\"userId\":\"\xf0\x8f\xbf\xbf\"}", UID),
    BAD("{\"userId\":\"\xed\xa0\x80\"}", UID),
    BAD("{\"userId\":\"\xed\xbf\xbf\"}", UID),
    BAD("{\"userId\":\"\xf4\x90\x80\x80\"}", UID),
    BAD("{\"userId\":\"\xf5\x80\x80\x80\"}", UID),
    BAD("{\"userId\":\"\xf8\x88\x80\x80\x80\"}", UID),
    BAD("{\"userId\":\"\xff\"}", UID),
    BAD("{\"userId\":\"\xfe\"}", UID),
    BAD("{\"userId\":\"\x80\"}", UID),
    BAD("{\"userId\":\"a\xbf\"}", UID),
    BAD("{\"userId\":\"a\xe2\x82\"}", UID),
    BAD("{\"userId\":\"\xf0\x9f\x98\"}", UID),
    BAD("{\"userId\":\"\xe2\x82z\"}", UID),
    BAD("{\"userId\":\"\xc3\"}", UID),
    BAD("{\"userId\":\"abcdefghijklmnopqrstuvw\xff\"}", UID),
    /* userId is checked before value */
    BAD("{\"userId\":\"\",\"value\":\"x\"}", UID),
    BAD("{\"userId\":1,\"value\":NaN}", UID),
    BAD("{\"value\":1e99}", UID),

    /* value */
    BAD("{\"userId\":\"u\",\"value\":\"1\"}", VAL),
    BAD("{\"userId\":\"u\",\"value\":\"\"}", VAL),
    BAD("{\"userId\":\"u\",\"value\":\"\xff\"}", VAL),
    BAD("{\"userId\":\"u\",\"value\":true}", VAL),
    BAD("{\"userId\":\"u\",\"value\":false}", VAL),
    BAD("{\"userId\":\"u\",\"value\":null}", VAL),
    BAD("{\"userId\":\"u\",\"value\":{}}", VAL),
    BAD("{\"userId\":\"u\",\"value\":{\"value\":1}}", VAL),
    BAD("{\"userId\":\"u\",\"value\":[]}", VAL),
    BAD("{\"userId\":\"u\",\"value\":[1]}", VAL),
    BAD("{\"userId\":\"u\",\"value\":NaN}", VAL),
    BAD("{\"userId\":\"u\",\"value\":Infinity}", VAL),
    BAD("{\"userId\":\"u\",\"value\":-Infinity}", VAL),
    BAD("{\"userId\":\"u\",\"value\" : NaN }", VAL),
    BAD("{\"userId\":\"u\",\"value\":1.0000001e15}", VAL),
    BAD("{\"userId\":\"u\",\"value\":1000000000000000.0000001}", VAL),
    BAD("{\"userId\":\"u\",\"value\":-1000000000000000.0000001}", VAL),
    BAD("{\"userId\":\"u\",\"value\":1000000000000001}", VAL),
    BAD("{\"userId\":\"u\",\"value\":1e16}", VAL),
    BAD("{\"userId\":\"u\",\"value\":-1e16}", VAL),
    BAD("{\"userId\":\"u\",\"value\":1e999999999}", VAL),
    BAD("{\"userId\":\"u\",\"value\":123456789012345678901234567890123456789012345}", VAL),
};

static void check_event(const char *body, size_t len, int want_rc, const char *user,
                        size_t user_len, dec_t value, const char *what)
{
    struct json_event ev;
    memset(&ev, 0xA5, sizeof ev);
    int rc = json_parse_event(body, len, &ev);
    cr_expect_eq(rc, want_rc, "%s: rc=%d want %d, body=%.*s", what, rc, want_rc, (int)len, body);
    if (rc != JSON_EV_OK || want_rc != JSON_EV_OK)
        return;
    cr_expect_eq(ev.user_len, user_len, "%s: user_len=%zu want %zu", what, ev.user_len, user_len);
    if (ev.user_len == user_len)
        cr_expect(memcmp(ev.user, user, user_len) == 0, "%s: user bytes differ", what);
    cr_expect(ev.value == value, "%s: value=%lld micro want %lld", what, (long long)ev.value,
              (long long)value);
}

Test(json_event, table)
{
    for (size_t i = 0; i < sizeof ev_cases / sizeof ev_cases[0]; i++) {
        const struct ev_case *c = &ev_cases[i];
        char what[32];
        snprintf(what, sizeof what, "case %zu", i);
        check_event(c->body, c->len, c->rc, c->user, c->user_len, c->value, what);
    }
}

/* "caf\u00e9" and "café" are the same user. */
Test(json_event, escaped_and_raw_userids_identical)
{
    struct json_event a, b;
    cr_assert_eq(json_parse_event(B("{\"userId\":\"caf\\u00e9\"}"), &a), JSON_EV_OK);
    cr_assert_eq(json_parse_event(B("{\"userId\":\"caf\xc3\xa9\"}"), &b), JSON_EV_OK);
    cr_assert_eq(a.user_len, b.user_len);
    cr_assert(memcmp(a.user, b.user, a.user_len) == 0);
    cr_assert_eq(json_parse_event(B("{\"userId\":\"\\ud83d\\ude00\"}"), &a), JSON_EV_OK);
    cr_assert_eq(json_parse_event(B("{\"userId\":\"\xf0\x9f\x98\x80\"}"), &b), JSON_EV_OK);
    cr_assert_eq(a.user_len, b.user_len);
    cr_assert(memcmp(a.user, b.user, a.user_len) == 0);
}

/* Builds {"userId":"<n copies of piece>"}; returns the body length. */
static size_t make_user_body(char *buf, size_t cap, const char *piece, size_t n)
{
    size_t pl = strlen(piece), o = 0;
    cr_assert_lt(n * pl + 16, cap);
    memcpy(buf, "{\"userId\":\"", 11);
    o = 11;
    for (size_t i = 0; i < n; i++, o += pl)
        memcpy(buf + o, piece, pl);
    memcpy(buf + o, "\"}", 2);
    return o + 2;
}

struct len_case {
    const char *piece;
    size_t count;
    size_t bytes; /* unescaped length */
};

/* The 256-byte limit is on unescaped bytes, whatever the escaping. */
Test(json_event, userid_length_limit)
{
    static char body[70000];
    const struct len_case cases[] = {
        {"a", 1, 1},
        {"a", 255, 255},
        {"a", 256, 256},
        {"a", 257, 257},
        {"a", 10000, 10000},
        {"\\u00e9", 128, 256}, /* 2 bytes each */
        {"\\u00e9", 129, 258},
        {"\xc3\xa9", 128, 256},
        {"\xc3\xa9", 129, 258},
        {"\\u20ac", 85, 255}, /* 3 bytes each */
        {"\\u20ac", 86, 258},
        {"\\ud83d\\ude00", 64, 256}, /* 4 bytes each */
        {"\\ud83d\\ude00", 65, 260},
        {"\xf0\x9f\x98\x80", 64, 256},
        {"\xf0\x9f\x98\x80", 65, 260},
        {"\\n", 256, 256},
        {"\\n", 257, 257},
    };
    char want[300];
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        size_t n = make_user_body(body, sizeof body, cases[i].piece, cases[i].count);
        char what[48];
        snprintf(what, sizeof what, "%zu x \"%s\"", cases[i].count, cases[i].piece);
        if (cases[i].bytes <= JSON_USER_MAX) {
            /* the expected bytes: the raw form of the piece, repeated */
            struct json_event one;
            char pb[32];
            size_t pn = make_user_body(pb, sizeof pb, cases[i].piece, 1);
            cr_assert_eq(json_parse_event(pb, pn, &one), JSON_EV_OK);
            for (size_t k = 0; k < cases[i].count; k++)
                memcpy(want + k * one.user_len, one.user, one.user_len);
            check_event(body, n, JSON_EV_OK, want, cases[i].bytes, 0, what);
        } else {
            check_event(body, n, JSON_EV_INVALID_USER_ID, NULL, 0, 0, what);
        }
    }
}

/* A too-long userId still has its syntax checked: syntax errors come first. */
Test(json_event, too_long_then_syntax_error)
{
    static char body[1024];
    size_t n = make_user_body(body, sizeof body, "a", 300);
    body[n - 3] = '\x01'; /* raw control char before the closing quote */
    check_event(body, n, JSON_EV_INVALID_JSON, NULL, 0, 0, "long + control char");
    n = make_user_body(body, sizeof body, "a", 300);
    cr_assert_lt(n + 1, sizeof body);
    body[n++] = 'x';
    check_event(body, n, JSON_EV_INVALID_JSON, NULL, 0, 0, "long + trailing garbage");
}

/* Builds {"<key>": open*k close*k, "userId":"u"} (or the nest as the value of "value"). */
static size_t make_nested(char *buf, size_t cap, const char *key, unsigned k, bool objects)
{
    size_t o = (size_t)snprintf(buf, cap, "{\"userId\":\"u\",\"%s\":", key);
    for (unsigned i = 0; i < k; i++) {
        const char *open = objects ? "{\"a\":" : "[";
        cr_assert_lt(o + 8, cap);
        memcpy(buf + o, open, strlen(open));
        o += strlen(open);
    }
    if (objects) {
        buf[o++] = '1';
    }
    for (unsigned i = 0; i < k; i++)
        buf[o++] = objects ? '}' : ']';
    buf[o++] = '}';
    return o;
}

/* Depth counts the top-level object as 1: 32 levels are accepted, 33 are a syntax error. */
Test(json_event, nesting_depth)
{
    static char buf[1 << 20];
    size_t n;

    for (int objects = 0; objects <= 1; objects++) {
        n = make_nested(buf, sizeof buf, "x", JSON_MAX_DEPTH - 1, objects);
        check_event(buf, n, JSON_EV_OK, "u", 1, 0, "unknown, depth 32");
        n = make_nested(buf, sizeof buf, "x", JSON_MAX_DEPTH, objects);
        check_event(buf, n, JSON_EV_INVALID_JSON, NULL, 0, 0, "unknown, depth 33");
        n = make_nested(buf, sizeof buf, "value", JSON_MAX_DEPTH - 1, objects);
        check_event(buf, n, JSON_EV_INVALID_VALUE, NULL, 0, 0, "value, depth 32");
        n = make_nested(buf, sizeof buf, "value", JSON_MAX_DEPTH, objects);
        check_event(buf, n, JSON_EV_INVALID_JSON, NULL, 0, 0, "value, depth 33");
    }
    /* very deep input must fail cleanly (no unbounded recursion) */
    n = make_nested(buf, sizeof buf, "x", 200000, false);
    check_event(buf, n, JSON_EV_INVALID_JSON, NULL, 0, 0, "depth 200001");
}

/* The parser honours len: bytes past it are never read (ASan build checks the read side). */
Test(json_event, honours_length)
{
    const char body[] = "{\"userId\":\"u\"}";
    for (size_t n = 0; n < sizeof body - 1; n++) {
        char *copy = malloc(n ? n : 1);
        memcpy(copy, body, n);
        struct json_event ev;
        cr_expect_eq(json_parse_event(copy, n, &ev), JSON_EV_INVALID_JSON, "prefix of %zu", n);
        free(copy);
    }
}

/* ---------- the generic field extractor ---------- */

struct int_case {
    const char *val;
    int err;
    int64_t want;
};

Test(json_object, int_fields)
{
    const struct int_case cases[] = {
        {"5", JSON_OK, 5},
        {"-5", JSON_OK, -5},
        {"0", JSON_OK, 0},
        {"-0", JSON_OK, 0},
        {"9223372036854775807", JSON_OK, INT64_MAX},
        {"-9223372036854775808", JSON_OK, INT64_MIN},
        {"9223372036854775808", JSON_E_RANGE, 0},
        {"-9223372036854775809", JSON_E_RANGE, 0},
        {"1.0", JSON_E_TYPE, 0},
        {"1e3", JSON_E_TYPE, 0},
        {"\"5\"", JSON_E_TYPE, 0},
        {"true", JSON_E_TYPE, 0},
        {"null", JSON_E_TYPE, 0},
        {"[5]", JSON_E_TYPE, 0},
        {"NaN", JSON_E_SYNTAX, 0}, /* not a NUMBER field: NaN is just invalid JSON */
        {"01", JSON_E_SYNTAX, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char body[128];
        int64_t v = 77;
        struct json_field f = {.key = "delta", .type = JSON_T_INT, .out = &v};
        int n = snprintf(body, sizeof body, "{\"delta\":%s}", cases[i].val);
        int rc = json_parse_object(body, (size_t)n, &f, 1);
        if (cases[i].err == JSON_E_SYNTAX) {
            cr_expect_eq(rc, JSON_E_SYNTAX, "%s", body);
            continue;
        }
        cr_expect_eq(rc, JSON_OK, "%s", body);
        cr_expect(f.present, "%s", body);
        cr_expect_eq(f.err, cases[i].err, "%s: err=%d", body, f.err);
        cr_expect_eq(v, cases[i].err == JSON_OK ? cases[i].want : 77, "%s", body);
    }
}

Test(json_object, bool_fields)
{
    const struct {
        const char *body;
        int err;
        bool want;
    } cases[] = {
        {"{\"b\":true}", JSON_OK, true},
        {"{\"b\":false}", JSON_OK, false},
        {"{\"b\":1}", JSON_E_TYPE, false},
        {"{\"b\":\"true\"}", JSON_E_TYPE, false},
        {"{\"b\":null}", JSON_E_TYPE, false},
        {"{\"b\":{}}", JSON_E_TYPE, false},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        bool v = !cases[i].want;
        struct json_field f = {.key = "b", .type = JSON_T_BOOL, .out = &v};
        cr_expect_eq(json_parse_object(cases[i].body, strlen(cases[i].body), &f, 1), JSON_OK);
        cr_expect(f.present);
        cr_expect_eq(f.err, cases[i].err, "%s", cases[i].body);
        if (cases[i].err == JSON_OK)
            cr_expect_eq(v, cases[i].want, "%s", cases[i].body);
    }
}

/* STRING fields never write past cap; the limit is on unescaped bytes. */
Test(json_object, string_cap)
{
    const struct {
        const char *body;
        int err;
        const char *want;
    } cases[] = {
        {"{\"s\":\"abcd\"}", JSON_OK, "abcd"},
        {"{\"s\":\"abcde\"}", JSON_E_STRING, NULL},
        {"{\"s\":\"\\u00e9\\u00e9\"}", JSON_OK, "\xc3\xa9\xc3\xa9"},
        {"{\"s\":\"a\\u20ac\"}", JSON_OK, "a\xe2\x82\xac"},
        {"{\"s\":\"ab\\u20ac\"}", JSON_E_STRING, NULL},
        {"{\"s\":\"abc\\ud83d\\ude00\"}", JSON_E_STRING, NULL},
        {"{\"s\":\"\\ud83d\\ude00\"}", JSON_OK, "\xf0\x9f\x98\x80"},
        {"{\"s\":\"\"}", JSON_OK, ""},
        {"{\"s\":\"abcdefghijklmnopqrstuvwxyz\"}", JSON_E_STRING, NULL},
        {"{\"s\":5}", JSON_E_TYPE, NULL},
        {"{\"s\":null}", JSON_E_TYPE, NULL},
        {"{\"s\":[\"a\"]}", JSON_E_TYPE, NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char buf[8];
        size_t len = 999;
        memset(buf, '#', sizeof buf);
        struct json_field f = {.key = "s", .type = JSON_T_STRING, .out = buf, .cap = 4, .len = &len};
        cr_expect_eq(json_parse_object(cases[i].body, strlen(cases[i].body), &f, 1), JSON_OK);
        cr_expect(f.present);
        cr_expect_eq(f.err, cases[i].err, "%s: err=%d", cases[i].body, f.err);
        cr_expect(memcmp(buf + 4, "####", 4) == 0, "%s: wrote past cap", cases[i].body);
        if (cases[i].err == JSON_OK) {
            cr_expect_eq(len, strlen(cases[i].want), "%s", cases[i].body);
            cr_expect(memcmp(buf, cases[i].want, strlen(cases[i].want)) == 0, "%s", cases[i].body);
        }
    }
}

Test(json_object, number_fields_and_presence)
{
    dec_t v = 0, w = 42;
    int64_t k = 0;
    struct json_field f[3] = {
        {.key = "initial_value", .type = JSON_T_NUMBER, .out = &v, .max_abs = 10 * DEC_SCALE},
        {.key = "unused", .type = JSON_T_NUMBER, .out = &w, .max_abs = DEC_MAX},
        {.key = "max_delta", .type = JSON_T_INT, .out = &k},
    };
    const char *b1 = "{\"initial_value\":9.9999999,\"max_delta\":50}";
    cr_assert_eq(json_parse_object(b1, strlen(b1), f, 3), JSON_OK);
    cr_expect(f[0].present && f[0].err == JSON_OK && v == 10 * DEC_SCALE);
    cr_expect(!f[1].present && f[1].err == JSON_OK && w == 42, "missing field untouched");
    cr_expect(f[2].present && f[2].err == JSON_OK && k == 50);

    /* outputs are reset on every call; a bound other than 1e15 applies */
    const char *b2 = "{\"initial_value\":10.0000001,\"unused\":null}";
    cr_assert_eq(json_parse_object(b2, strlen(b2), f, 3), JSON_OK);
    cr_expect(f[0].present && f[0].err == JSON_E_RANGE);
    cr_expect(f[1].present && f[1].err == JSON_E_TYPE, "null is present, with a type error");
    cr_expect(!f[2].present && f[2].err == JSON_OK);

    const char *b3 = "{\"initial_value\":-Infinity}";
    cr_assert_eq(json_parse_object(b3, strlen(b3), f, 3), JSON_OK);
    cr_expect(f[0].present && f[0].err == JSON_E_NONFINITE);

    /* no fields: pure validation */
    cr_expect_eq(json_parse_object(b1, strlen(b1), NULL, 0), JSON_OK);
    cr_expect_eq(json_parse_object("{\"a\":}", 6, NULL, 0), JSON_E_SYNTAX);
}

/* Keys longer than the key buffer are validated and skipped, never matched by a prefix. */
Test(json_object, long_keys)
{
    char body[512], key[200];
    dec_t v = 0;
    memset(key, 'k', sizeof key - 1);
    key[sizeof key - 1] = '\0';
    struct json_field f = {.key = "kk", .type = JSON_T_NUMBER, .out = &v, .max_abs = DEC_MAX};
    int n = snprintf(body, sizeof body, "{\"%s\":1,\"kk\":2}", key);
    cr_assert_eq(json_parse_object(body, (size_t)n, &f, 1), JSON_OK);
    cr_expect(f.present && v == 2 * DEC_SCALE);
    n = snprintf(body, sizeof body, "{\"%s\":\"\xff\"}", key);
    cr_expect_eq(json_parse_object(body, (size_t)n, &f, 1), JSON_E_SYNTAX);
}

/* ---------- json_escape ---------- */

struct esc_case {
    const char *in;
    size_t in_len;
    const char *want;
};

#define ESC(in, want) {B(in), want}

Test(json_escape, table)
{
    const struct esc_case cases[] = {
        ESC("", ""),
        ESC("abc", "abc"),
        ESC("\"", "\\\""),
        ESC("\\", "\\\\"),
        ESC("/", "/"),
        ESC("\n", "\\u000a"),
        ESC("\r\t\b\f", "\\u000d\\u0009\\u0008\\u000c"),
        ESC("\x01\x1f", "\\u0001\\u001f"),
        ESC("\0", "\\u0000"),
        ESC(" \x7f", " \x7f"),
        ESC("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80", "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80"),
        ESC("\xf4\x8f\xbf\xbf", "\xf4\x8f\xbf\xbf"),
        ESC("\xff", "\\ufffd"),
        ESC("\x80", "\\ufffd"),
        ESC("\xc3", "\\ufffd"),
        ESC("a\xe2\x82", "a\\ufffd\\ufffd"),
        ESC("\xe2\x82z", "\\ufffd\\ufffdz"),
        ESC("\xc0\xaf", "\\ufffd\\ufffd"),
        ESC("\xed\xa0\x80", "\\ufffd\\ufffd\\ufffd"),
        ESC("\xf4\x90\x80\x80", "\\ufffd\\ufffd\\ufffd\\ufffd"),
        ESC("abcdefghijklmnopqrst\"uvwxyz0123456789\\ABCDEFGH\nIJ",
            "abcdefghijklmnopqrst\\\"uvwxyz0123456789\\\\ABCDEFGH\\u000aIJ"),
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char out[256];
        ssize_t n = json_escape(out, sizeof out, cases[i].in, cases[i].in_len);
        cr_expect_eq(n, (ssize_t)strlen(cases[i].want), "case %zu: n=%zd", i, n);
        if (n >= 0)
            cr_expect(memcmp(out, cases[i].want, (size_t)n) == 0, "case %zu: got %.*s", i,
                      (int)n, out);
    }
}

/* Too little room is -ENOSPC, never a truncated result, and nothing past cap is written. */
Test(json_escape, enospc)
{
    const char *ins[] = {"a\"b", "abcdefghijklmnop", "\x01", "\xff", "\xc3\xa9\xc3\xa9", "x\\"};
    for (size_t i = 0; i < sizeof ins / sizeof ins[0]; i++) {
        char out[64];
        ssize_t need = json_escape(out, sizeof out, ins[i], strlen(ins[i]));
        cr_assert_gt(need, 0);
        for (size_t cap = 0; cap <= (size_t)need; cap++) {
            memset(out, '#', sizeof out);
            ssize_t n = json_escape(out, cap, ins[i], strlen(ins[i]));
            cr_expect_eq(n, cap < (size_t)need ? -ENOSPC : need, "input %zu cap %zu", i, cap);
            for (size_t k = cap; k < sizeof out; k++)
                cr_expect_eq(out[k], '#', "input %zu cap %zu: wrote byte %zu", i, cap, k);
        }
    }
    cr_expect_eq(json_escape(NULL, 0, "", 0), 0);
}

static uint64_t xorshift(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *s = x;
}

/* Escaping valid UTF-8 and parsing it back as a JSON string gives the original bytes. */
Test(json_escape, roundtrip_through_parser)
{
    const char *pieces[] = {"a", "Z", " ", "\"", "\\", "/", "\n", "\x01", "\x1f", "\x7f",
                            "\xc3\xa9", "\xe2\x82\xac", "\xf0\x9f\x98\x80", "\0", "abcdefgh"};
    const size_t plen[] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 3, 4, 1, 8};
    uint64_t seed = 0x243F6A8885A308D3ULL;
    for (int iter = 0; iter < 2000; iter++) {
        char src[200], esc[1300], body[1400], back[256];
        size_t sn = 0, blen = 0;
        size_t count = xorshift(&seed) % 24;
        for (size_t i = 0; i < count; i++) {
            size_t p = xorshift(&seed) % (sizeof pieces / sizeof pieces[0]);
            memcpy(src + sn, pieces[p], plen[p]);
            sn += plen[p];
        }
        ssize_t en = json_escape(esc, sizeof esc, src, sn);
        cr_assert_geq(en, 0);
        for (ssize_t i = 0; i < en; i++)
            cr_assert((unsigned char)esc[i] >= 0x20, "control byte left in output");
        int bn = snprintf(body, sizeof body, "{\"s\":\"%.*s\"}", (int)en, esc);
        struct json_field f = {.key = "s", .type = JSON_T_STRING, .out = back, .cap = sizeof back,
                               .len = &blen};
        cr_assert_eq(json_parse_object(body, (size_t)bn, &f, 1), JSON_OK, "%s", body);
        cr_assert_eq(f.err, JSON_OK);
        cr_assert_eq(blen, sn);
        cr_assert(memcmp(back, src, sn) == 0);
    }
}

/* ---------- json_w (the bounded writer) ---------- */

Test(json_w, writes_and_stops_at_the_bound)
{
    char buf[64];
    struct json_w w;
    json_w_init(&w, buf, sizeof buf);
    json_w_lit(&w, "{\"a\":");
    json_w_str(&w, "x\"\n", 3);
    json_w_lit(&w, ",\"n\":");
    json_w_i64(&w, -42);
    json_w_lit(&w, ",\"d\":");
    json_w_dec(&w, 1500000); /* 1.5 */
    json_w_lit(&w, "}");
    ssize_t n = json_w_end(&w);
    cr_assert_str_eq(buf, "{\"a\":\"x\\\"\\u000a\",\"n\":-42,\"d\":1.5}");
    cr_assert_eq(n, (ssize_t)strlen(buf));

    /* exactly full (the NUL included) fits; one byte less is -ENOSPC, never an overrun */
    for (size_t cap = 0; cap <= (size_t)n + 1; cap++) {
        char small[64];
        memset(small, 'Z', sizeof small);
        json_w_init(&w, small, cap);
        json_w_lit(&w, "{\"a\":");
        json_w_str(&w, "x\"\n", 3);
        json_w_lit(&w, ",\"n\":");
        json_w_i64(&w, -42);
        json_w_lit(&w, ",\"d\":");
        json_w_dec(&w, 1500000);
        json_w_lit(&w, "}");
        ssize_t m = json_w_end(&w);
        cr_assert_eq(m, cap == (size_t)n + 1 ? n : -ENOSPC, "cap %zu: %zd", cap, m);
        for (size_t i = cap; i < sizeof small; i++)
            cr_assert_eq(small[i], 'Z', "cap %zu: byte %zu written", cap, i);
    }
}

Test(json_object, raw_field_is_the_value_text)
{
    const char *raw = NULL;
    size_t n = 0;
    struct json_field f[] = {{.key = "scopes", .type = JSON_T_RAW, .out = &raw, .len = &n}};
    const char *body = "{\"a\":1, \"scopes\" : [\"x\", {\"y\":[1]}] ,\"b\":null}";
    cr_assert_eq(json_parse_object(body, strlen(body), f, 1), JSON_OK);
    cr_assert(f[0].present);
    cr_assert_eq(f[0].err, JSON_OK);
    cr_assert_eq(n, strlen("[\"x\", {\"y\":[1]}]"));
    cr_assert_eq(memcmp(raw, "[\"x\", {\"y\":[1]}]", n), 0);
    body = "{\"scopes\":null}";
    cr_assert_eq(json_parse_object(body, strlen(body), f, 1), JSON_OK);
    cr_assert_eq(n, 4);
    body = "{\"scopes\":[\"x\",]}";
    cr_assert_eq(json_parse_object(body, strlen(body), f, 1), JSON_E_SYNTAX);
}
