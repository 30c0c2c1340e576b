/*
 * fuzz_json — libFuzzer target for the request-body JSON parser and the string escaper
 * (src/json.c): json_parse_event, json_parse_object with every field type, json_escape.
 *
 * Input: a request body, parsed from an exact-size copy.
 *
 * Invariants:
 *  - json_parse_event returns one of JSON_EV_*; on success the userId is 1..256 bytes of valid
 *    UTF-8 (checked by an independent decoder) and |value| <= 1e15;
 *  - json_parse_object with the same two keys agrees with json_parse_event (syntax, userId,
 *    value);
 *  - round trip: an accepted event, rebuilt as {"userId":json_escape(id),"value":dec_format(v)},
 *    parses back to the very same bytes and value;
 *  - every field result is within its declared bounds (string <= cap, number <= max_abs);
 *  - json_escape of any bytes fits in 6 bytes per input byte, writes nothing past a tight cap
 *    (-ENOSPC instead), and yields a JSON string that parses back to the input with every byte
 *    that is not part of a valid UTF-8 sequence replaced by U+FFFD.
 */
#include <errno.h>

#include "decimal.h"
#include "fz.h"
#include "json.h"

/* Independent strict UTF-8 decoder (RFC 3629): length of the valid sequence at s[0..n), or 0. */
static size_t ref_utf8(const unsigned char *s, size_t n)
{
    unsigned c = s[0], cp, len;
    if (c < 0x80)
        return 1;
    if ((c & 0xE0) == 0xC0)
        len = 2, cp = c & 0x1F;
    else if ((c & 0xF0) == 0xE0)
        len = 3, cp = c & 0x0F;
    else if ((c & 0xF8) == 0xF0)
        len = 4, cp = c & 0x07;
    else
        return 0;
    if (n < len)
        return 0;
    for (unsigned i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80)
            return 0;
        cp = cp << 6 | (s[i] & 0x3F);
    }
    static const unsigned min[5] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < min[len] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
        return 0;
    return len;
}

static bool ref_utf8_valid(const char *p, size_t n)
{
    const unsigned char *s = (const unsigned char *)p;
    for (size_t i = 0; i < n;) {
        size_t k = ref_utf8(s + i, n - i);
        if (!k)
            return false;
        i += k;
    }
    return true;
}

/* What json_escape + parse must give back: input with each invalid byte as U+FFFD. */
static size_t ref_replace(const char *p, size_t n, char *out)
{
    const unsigned char *s = (const unsigned char *)p;
    size_t o = 0;
    for (size_t i = 0; i < n;) {
        size_t k = ref_utf8(s + i, n - i);
        if (!k) {
            memcpy(out + o, "\xEF\xBF\xBD", 3);
            o += 3;
            i++;
        } else {
            memcpy(out + o, s + i, k);
            o += k;
            i += k;
        }
    }
    return o;
}

static dec_t dabs(dec_t v)
{
    return v < 0 ? -v : v;
}

/* Wrap the escaped text in {"s":"..."} and parse it back; returns the unescaped length. */
static size_t parse_back(const char *esc, size_t n, char *out, size_t cap)
{
    size_t blen = n + 8, len = 0;
    char *body = malloc(blen);
    FZ_CHECK(body != NULL, "malloc");
    memcpy(body, "{\"s\":\"", 6);
    memcpy(body + 6, esc, n);
    memcpy(body + 6 + n, "\"}", 2);
    struct json_field f = {.key = "s", .type = JSON_T_STRING, .out = out, .cap = cap, .len = &len};
    int rc = json_parse_object(body, blen, &f, 1);
    FZ_CHECK(rc == JSON_OK && f.present && f.err == JSON_OK, "escaped string did not parse back "
             "(rc %d err %d): %.*s", rc, (int)f.err, (int)blen, body);
    free(body);
    return len;
}

static void check_escape(const char *in, size_t n)
{
    size_t cap = 6 * n;
    char *esc = malloc(cap ? cap : 1);
    FZ_CHECK(esc != NULL, "malloc");
    ssize_t e = json_escape(esc, cap, in, n);
    FZ_CHECK(e >= 0 && (size_t)e <= cap, "json_escape returned %zd for %zu bytes", e, n);
    for (ssize_t i = 0; i < e; i++)
        FZ_CHECK((unsigned char)esc[i] >= 0x20, "raw control byte in escaped output");
    FZ_CHECK(ref_utf8_valid(esc, (size_t)e), "escaped output is not UTF-8");
    if (e > 0) {
        /* One byte short: must refuse, and ASan checks nothing was written past the cap. */
        char *tight = malloc((size_t)e - 1 ? (size_t)e - 1 : 1);
        FZ_CHECK(tight != NULL, "malloc");
        FZ_CHECK(json_escape(tight, (size_t)e - 1, in, n) == -ENOSPC, "no -ENOSPC at cap-1");
        free(tight);
    }
    char *want = malloc(3 * n + 1), *got = malloc(3 * n + 1);
    FZ_CHECK(want && got, "malloc");
    size_t wl = ref_replace(in, n, want);
    size_t gl = parse_back(esc, (size_t)e, got, 3 * n + 1);
    FZ_CHECK(gl == wl && memcmp(got, want, wl) == 0, "escape round trip differs");
    free(want);
    free(got);
    free(esc);
}

/* The accepted event, printed back as JSON, must parse to the same id and value. */
static void check_event_round_trip(const struct json_event *ev)
{
    char body[6 * JSON_USER_MAX + 2 * DEC_FMT_MAX];
    size_t n = 0;
    memcpy(body, "{\"userId\":\"", 11);
    n = 11;
    ssize_t e = json_escape(body + n, 6 * JSON_USER_MAX, ev->user, ev->user_len);
    FZ_CHECK(e > 0, "escape of an accepted userId: %zd", e);
    n += (size_t)e;
    memcpy(body + n, "\",\"value\":", 10);
    n += 10;
    n += dec_format(ev->value, body + n);
    body[n++] = '}';
    struct json_event ev2;
    int rc = json_parse_event(body, n, &ev2);
    FZ_CHECK(rc == JSON_EV_OK, "rebuilt event refused (%d): %.*s", rc, (int)n, body);
    FZ_CHECK(ev2.user_len == ev->user_len && memcmp(ev2.user, ev->user, ev->user_len) == 0,
             "userId changed in the round trip");
    FZ_CHECK(ev2.value == ev->value, "value changed in the round trip");
}

/* json_parse_object with the /event table must agree with json_parse_event. (Only these two
   keys: which keys are wanted changes the verdict on raw invalid UTF-8 — a field error in a
   wanted string, a syntax error in a skipped one — as json.h documents.) */
static void check_event_fields(const char *b, size_t n, int ev_rc, const struct json_event *ev)
{
    char u[JSON_USER_MAX];
    size_t ulen = 99;
    dec_t val = 0;
    struct json_field f[] = {
        {.key = "userId", .type = JSON_T_STRING, .out = u, .cap = sizeof u, .len = &ulen},
        {.key = "value", .type = JSON_T_NUMBER, .out = &val, .max_abs = JSON_EVENT_VALUE_MAX},
    };
    int rc = json_parse_object(b, n, f, 2);
    FZ_CHECK(rc == JSON_OK || rc == JSON_E_SYNTAX, "json_parse_object returned %d", rc);
    FZ_CHECK((rc == JSON_OK) == (ev_rc != JSON_EV_INVALID_JSON), "object rc %d, event rc %d", rc,
             ev_rc);
    if (rc != JSON_OK)
        return;
    bool user_ok = f[0].present && f[0].err == JSON_OK && ulen > 0;
    FZ_CHECK(user_ok == (ev_rc != JSON_EV_INVALID_USER_ID), "userId verdicts differ (%d)", ev_rc);
    if (ev_rc == JSON_EV_OK) {
        FZ_CHECK(ulen == ev->user_len && memcmp(u, ev->user, ulen) == 0, "userId bytes differ");
        FZ_CHECK(ev->value == (f[1].present ? val : 0), "value differs");
    }
    if (user_ok)
        FZ_CHECK((ev_rc == JSON_EV_INVALID_VALUE) == (f[1].present && f[1].err != JSON_OK),
                 "value verdicts differ (%d)", ev_rc);
}

/* Every field type at once: results stay within their declared bounds. */
static void check_object(const char *b, size_t n)
{
    char s[4], e0[1];
    size_t slen = 99, e0len = 99;
    dec_t num = 0;
    int64_t i64 = 0;
    bool bo = false;
    struct json_field f[] = {
        {.key = "s", .type = JSON_T_STRING, .out = s, .cap = sizeof s, .len = &slen},
        {.key = "n", .type = JSON_T_NUMBER, .out = &num, .max_abs = DEC_MAX},
        {.key = "i", .type = JSON_T_INT, .out = &i64},
        {.key = "b", .type = JSON_T_BOOL, .out = &bo},
        {.key = "", .type = JSON_T_STRING, .out = e0, .cap = 0, .len = &e0len},
    };
    const size_t nf = sizeof f / sizeof f[0];
    int rc = json_parse_object(b, n, f, nf);
    FZ_CHECK(rc == JSON_OK || rc == JSON_E_SYNTAX, "json_parse_object returned %d", rc);
    if (rc != JSON_OK)
        return;
    for (size_t i = 0; i < nf; i++) {
        FZ_CHECK(f[i].err <= 0 && f[i].err >= JSON_E_NONFINITE, "field %zu err %d", i, f[i].err);
        FZ_CHECK(f[i].present || f[i].err == JSON_OK, "absent field %zu with an error", i);
    }
    if (f[0].present && f[0].err == JSON_OK)
        FZ_CHECK(slen <= sizeof s, "string longer than its cap: %zu", slen);
    if (f[4].present && f[4].err == JSON_OK)
        FZ_CHECK(e0len == 0, "cap 0 string of length %zu", e0len);
    if (f[1].present && f[1].err == JSON_OK)
        FZ_CHECK(num != DEC_MIN, "number at DEC_MIN");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *b = fz_dup(data, size);
    struct json_event ev;
    int rc = json_parse_event(b, size, &ev);
    FZ_CHECK(rc >= JSON_EV_OK && rc <= JSON_EV_INVALID_VALUE, "json_parse_event returned %d", rc);
    if (rc == JSON_EV_OK) {
        FZ_CHECK(ev.user_len >= 1 && ev.user_len <= JSON_USER_MAX, "user_len %zu", ev.user_len);
        FZ_CHECK(ref_utf8_valid(ev.user, ev.user_len), "accepted userId is not valid UTF-8");
        FZ_CHECK(dabs(ev.value) <= JSON_EVENT_VALUE_MAX, "value beyond 1e15");
        check_event_round_trip(&ev);
    }
    check_event_fields(b, size, rc, &ev);
    check_object(b, size);
    FZ_CHECK(memcmp(b, data, size) == 0, "the parser wrote into the body");
    check_escape(b, size);
    free(b);
    return 0;
}
